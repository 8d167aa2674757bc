/* syscall_fuzz: random system calls with random and adversarial arguments, run as a guest under
 * kvmserver (tests/fuzz/guest_fuzz.sh) to find what crashes, hangs or confuses the host process.
 *
 *   syscall_fuzz SEED [CALLS]        (CALLS defaults to 100000)
 *
 * Deterministic for a seed (xorshift64*). Every system call number is tried: the ones kvmserver
 * implements from a table with an argument signature each (and special rules where a call could end
 * the fuzzer itself), the others with generic arguments, plus numbers no kernel has. Arguments come
 * from pools: pointers into its own memory (a guarded read-write buffer, a read-only one, a
 * PROT_NONE one, a buffer on its stack, its code, the vDSO pages), the guest kernel area, the hole
 * above user memory, non-canonical, unmapped, NULL and unaligned addresses; small, huge and negative
 * lengths and counts; every flag bit; fds it opened and random ones; paths from a dictionary (its
 * scratch directory, ../ escapes, /proc/self, /dev, /etc/passwd...); well-formed and broken structs
 * (iovecs, msghdrs with SCM_RIGHTS, sockaddrs, timespecs, pollfds, fd_sets, sigactions).
 *
 * It must not simply kill itself, so some calls are confined:
 *   - exit/exit_group/rt_sigreturn are never called with fuzzed arguments, except to end one run in
 *     16 deliberately (announced on stdout: "ending with ..., expect status N");
 *   - munmap/mprotect/mremap/madvise/mmap(MAP_FIXED)/brk only touch a scratch region, mappings the
 *     fuzzer made, the vDSO pages (never used by it), or addresses that cannot be mapped;
 *   - signal handlers are SIG_IGN, SIG_DFL or a real handler; dispositions that would end the
 *     program (SIG_DFL of a terminating signal, SA_RESETHAND) are put back after each call; no
 *     SIGKILL/SIGSTOP to itself; the alternate stack is always valid or disabled afterwards;
 *   - fork/vfork/clone/clone3 children exit at once (in assembly, without touching memory);
 *   - an ITIMER_REAL armed by setitimer or alarm is disarmed right after the call;
 *   - sleeps and waits get short timeouts; a watchdog thread interrupts any call blocked for more
 *     than 100 ms with a signal whose handler does not restart it;
 *   - fds 0-2 are /dev/null, stdout is kept at fd 999, which no call may close or replace;
 *   - files it writes stay small, and its scratch directory (the cwd) is emptied regularly.
 * It refuses to run outside kvmserver (uname's release), where these calls would hit the real
 * kernel.
 *
 * Output: at the end, one line on stdout:
 *   syscall_fuzz: seed=S calls=N ok=.. errors=.. enosys=.. numbers=.. signals=.. children=..
 *   threads=.. watchdog=.. top: name=count ...
 * exit status 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE 4096ul

/* ---- raw system calls (libc would touch the pointers or keep state of its own) ---- */

static long raw6(long nr, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#define raw0(n) raw6(n, 0, 0, 0, 0, 0, 0)
#define raw1(n, a) raw6(n, (long)(a), 0, 0, 0, 0, 0)
#define raw2(n, a, b) raw6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define raw3(n, a, b, c) raw6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define raw4(n, a, b, c, d) raw6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

/* A call that may create a process or thread: the child (rax == 0) ends at once with child_nr
 * (exit for a thread, exit_group for a process) and status `code`, touching no memory: its stack
 * may be anything. */
static long raw_spawn(long nr, long a, long b, long c, long d, long e, long child_nr, long code) {
  register long r10 __asm__("r10") = d, r8 __asm__("r8") = e;
  long ret;
  __asm__ volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "mov %[cnr], %%rax\n\t"
      "mov %[code], %%rdi\n\t"
      "syscall\n\t"
      "ud2\n"
      "1:"
      : "=a"(ret)
      : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), [cnr] "r"(child_nr), [code] "r"(code)
      : "rcx", "r11", "memory");
  return ret;
}

/* ---- output (fd 999, without stdio: printf would allocate and the fuzzer closes fds) ---- */

enum { REPORT_FD = 999 };

static void out(const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    long r = raw3(SYS_write, REPORT_FD, s, n);
    if (r <= 0) return;
    s += r;
    n -= (size_t)r;
  }
}

/* ---- random numbers ---- */

static uint64_t rng_state;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }
static int percent(int p) { return (int)below(100) < p; }
static uint64_t pick(const uint64_t* v, size_t n) { return v[below(n)]; }
#define PICK(arr) pick(arr, ARRAY_SIZE(arr))

/* ---- memory the arguments point into ---- */

enum { SAC_SIZE = 256 * 1024, RO_SIZE = 16 * 1024, NONE_SIZE = 16 * 1024, BUILD_SIZE = 64 * 1024 };
enum { SCRATCH_SIZE = 4 << 20, STACKBUF = 8192, STACK_SLACK = 1024, ALTSTACK = 64 * 1024 };

static uint8_t* sac;      /* read-write, guarded by PROT_NONE pages on both sides; kernel writes welcome */
static uint8_t* ro;       /* read-only, random bytes */
static uint8_t* none;     /* PROT_NONE */
static uint8_t* build;    /* where structs are built for one call (read-write, guarded) */
static size_t build_used;
static uint8_t* path_end; /* the last byte before a guard page: strings running into it */
static uint8_t* scratch;  /* the region memory calls may remap */
static uint8_t* altstack;
static uint8_t* thread_stack;
static uint8_t* stackbuf; /* a buffer in main's frame: only given with lengths that fit */
static uint64_t vvar, vdso;
static uint64_t initial_brk;

struct owned {
  uint64_t addr, len;
};
static struct owned owned[16];

static uint8_t* guarded(size_t size, int prot) {
  uint8_t* m = mmap(NULL, size + 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;
  if (mprotect(m + PAGE, size, prot) != 0) return NULL;
  return m + PAGE;
}

static void randomize(uint8_t* p, size_t n) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rnd();
    memcpy(p + i, &v, 8);
  }
}

static void* build_alloc(size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (build_used + n > BUILD_SIZE) build_used = 0;
  void* p = build + build_used;
  build_used += n;
  memset(p, 0, n);
  return p;
}

/* Addresses nothing valid can be at, or where only kvmserver's own pages are. */
static const uint64_t kBadAddrs[] = {
    0,                        /* NULL */
    1,                        /* unaligned NULL page */
    0x1000,                   /* below mmap_min_addr */
    0xffff,                   /* just below mmap_min_addr */
    0x1000000000ull,          /* 64 GiB: above kvmserver's default user memory */
    0x7ffffffff000ull,        /* last user page */
    0x7ffffffffff8ull,        /* crossing into non-canonical */
    0x800000000000ull,        /* first non-canonical */
    0x8000000000000000ull,    /* non-canonical */
    0xffff800000000000ull,    /* first canonical kernel address */
    0xffffff8000000000ull,    /* kvmserver's kernel area: GDT */
    0xffffff8000001000ull,    /* IDT */
    0xffffff8000002000ull,    /* entry code */
    0xffffff8000004000ull,    /* exception stacks */
    0xffffff800000c000ull,    /* TSS */
    0xffffff8000010000ull,    /* page tables */
    0xffffff8000010ff8ull,    /* page tables, unaligned end */
    0xfffffffffffff000ull,    /* last page */
    0xffffffffffffffffull,    /* wraps */
    0x00007f0000000000ull,    /* unmapped, plausible */
};

static uint64_t bad_addr(void) {
  uint64_t a = PICK(kBadAddrs);
  if (percent(30)) a += below(PAGE);
  return a;
}

/* Pointer kinds: how far past the pointer the kernel may write. */
enum ptr_kind {
  PTR_ANY,   /* unknown extent: never into the stack buffer */
  PTR_SMALL, /* a fixed struct of at most STACK_SLACK bytes */
};

static uint64_t any_pointer(enum ptr_kind kind) {
  switch (below(14)) {
    case 0: case 1: case 2: case 3: return (uint64_t)(sac + below(SAC_SIZE));
    case 4: return (uint64_t)(sac + (below(SAC_SIZE / 8) * 8));                /* aligned */
    case 5: return (uint64_t)(sac + SAC_SIZE - 1 - below(64));                 /* running into the guard */
    case 6: return (uint64_t)(ro + below(RO_SIZE));
    case 7: return (uint64_t)(none + below(NONE_SIZE));
    case 8: return kind == PTR_SMALL ? (uint64_t)(stackbuf + below(STACKBUF - STACK_SLACK)) : (uint64_t)(sac + below(SAC_SIZE));
    case 9: return (uint64_t)&raw6 + below(256);                                /* code */
    case 10: return percent(50) ? vvar + below(PAGE) : vdso + below(PAGE);
    case 11: return (uint64_t)(scratch + below(SCRATCH_SIZE));
    default: return bad_addr();
  }
}

/* ---- numbers ---- */

static const uint64_t kSpecial[] = {
    0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 63, 64, 255, 256, 4095, 4096, 4097, 65535, 65536,
    0x7ffff000, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 0x100000001ull,
    0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull, 0xfffffffffffffffeull,
    0xfffffffffffff000ull, 0x00000000ffff0000ull, 1ull << 40, 1ull << 47, (uint64_t)-100 /* AT_FDCWD */,
    (uint64_t)-4096, (uint64_t)-4095, 1024, 1023, 1025, 999, 1u << 20,
};

static uint64_t number(void) {
  switch (below(6)) {
    case 0: return below(16);
    case 1: return PICK(kSpecial);
    case 2: return below(4096);
    case 3: return (uint64_t)(int64_t)(int32_t)rnd();
    case 4: return PICK(kSpecial) + below(3) - 1;
    default: return rnd();
  }
}

static uint64_t flags(void) {
  switch (below(6)) {
    case 0: return 0;
    case 1: return 1ull << below(64);
    case 2: return (1ull << below(32)) | (1ull << below(32));
    case 3: return (uint32_t)rnd();
    case 4: return rnd();
    default: return below(256);
  }
}

/* A length for a buffer at p: huge ones too, but one that fits when p is the stack buffer. */
static uint64_t length_for(uint64_t p) {
  uint64_t n;
  switch (below(6)) {
    case 0: n = below(64); break;
    case 1: n = below(4096); break;
    case 2: n = below(SAC_SIZE + PAGE); break;
    case 3: n = PICK(kSpecial); break;
    default: n = below(512); break;
  }
  if (p >= (uint64_t)stackbuf && p < (uint64_t)stackbuf + STACKBUF) {
    uint64_t room = (uint64_t)stackbuf + STACKBUF - p;
    if (n > room) n = below(room + 1);
  }
  return n;
}

static uint64_t offset(void) {
  switch (below(5)) {
    case 0: return 0;
    case 1: return below(8192);
    case 2: return PICK(kSpecial);
    case 3: return (uint64_t)-(int64_t)below(4096);
    default: return below(1 << 22);
  }
}

static uint64_t mode_arg(void) { return percent(70) ? below(010000) : rnd(); }

/* ---- fds ---- */

static int pool[96];
static int pool_n;
static int base_fds[40];
static int base_n;

static struct stat report_st;

/* Whether fd is (a copy of) the report fd, which no fuzzed call may get hold of. */
static int is_report(long fd) {
  struct stat st;
  return fd == REPORT_FD || (raw2(SYS_fstat, fd, &st) == 0 && st.st_dev == report_st.st_dev && st.st_ino == report_st.st_ino);
}

static void pool_add(long fd) {
  if (fd < 0 || is_report(fd)) return;
  if (pool_n < (int)ARRAY_SIZE(pool)) {
    pool[pool_n++] = (int)fd;
  } else {
    pool[below(ARRAY_SIZE(pool))] = (int)fd;
  }
}

static uint64_t fd_arg(void) {
  if (pool_n && percent(80)) return (uint64_t)(int64_t)pool[below(pool_n)];
  static const int64_t kFds[] = {0, 1, 2, 3, -1, -100 /* AT_FDCWD */, 1023, 1024, 65535, 1 << 20, 0x7fffffff, -2};
  if (percent(50)) return (uint64_t)kFds[below(ARRAY_SIZE(kFds))];
  return percent(50) ? below(64) : rnd();
}

/* An fd a call may close or replace: never the report fd. */
static uint64_t victim_fd(void) {
  uint64_t fd = fd_arg();
  return (int)fd == REPORT_FD ? 3 : fd;
}

/* ---- paths ---- */

static char cwd[512];

static const char* const kPaths[] = {
    "f0", "f1", "d0", "d0/f2", "s0", "s1", "new", "new/", "d0/../f0", "./f0", ".", "..", "../..",
    "../../../../../../etc/passwd", "/etc/passwd", "/etc/shadow", "/etc", "/", "/tmp", "/tmp/escaped",
    "/proc/self", "/proc/self/maps", "/proc/self/status", "/proc/self/stat", "/proc/self/statm",
    "/proc/self/cmdline", "/proc/self/comm", "/proc/self/exe", "/proc/self/cwd", "/proc/self/root",
    "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/3", "/proc/self/fd/1", "/proc/thread-self",
    "/proc/self/task/1/maps", "/proc/1/cmdline", "/proc/self/environ", "/proc/self/mem", "/proc/cpuinfo",
    "/proc/meminfo", "/proc", "/sys/devices/system/cpu/online", "/sys/kernel", "/dev/null", "/dev/zero",
    "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/kvm", "/dev/stdin", "/dev/stdout",
    "/dev/fd/1", "/dev/fd/3", "/lib", "/usr/lib/os-release", "", "sock", "\x01\xff", "f0/", "f0/x",
    "s0/x", "d0/d1/d2/d3", "/nonexistent/x", "//f0", "d0//f2", "sym_to_etc/passwd", "dangling",
};

/* A path argument: a string written into the build area (or one that cannot be read to its end). */
static uint64_t path_arg(void) {
  switch (below(16)) {
    case 0: return any_pointer(PTR_ANY); /* whatever is there */
    case 1: {                            /* no NUL before the guard page */
      memset(path_end - 15, 'a', 16);
      return (uint64_t)(path_end - 15);
    }
    case 2: { /* too long */
      size_t n = 4096 + below(64);
      char* s = build_alloc(n + 1);
      memset(s, 'a', n);
      for (size_t i = 0; i < n; i += 1 + below(300)) s[i] = '/';
      return (uint64_t)s;
    }
    case 3: { /* absolute, inside the scratch directory */
      const char* rel = kPaths[below(12)];
      char* s = build_alloc(strlen(cwd) + strlen(rel) + 2);
      strcpy(s, cwd);
      strcat(s, "/");
      strcat(s, rel);
      return (uint64_t)s;
    }
    default: {
      const char* p = kPaths[below(ARRAY_SIZE(kPaths))];
      char* s = build_alloc(strlen(p) + 1);
      strcpy(s, p);
      return (uint64_t)s;
    }
  }
}

/* ---- structs ---- */

static uint64_t small_struct(void) { return any_pointer(PTR_SMALL); }

/* A timespec for a timeout: short, zero, invalid, or (rarely) one the watchdog must cut. */
static uint64_t timespec_arg(int null_ok) {
  if (null_ok && percent(3)) return 0;
  if (percent(8)) return any_pointer(PTR_SMALL);
  int64_t* t = build_alloc(16);
  switch (below(10)) {
    case 0: t[0] = 0; t[1] = 0; break;
    case 1: t[0] = -1; t[1] = 0; break;
    case 2: t[0] = 0; t[1] = 1000000000; break;
    case 3: t[0] = (int64_t)rnd(); t[1] = (int64_t)rnd(); break;
    case 4: if (percent(10)) { t[0] = INT64_MAX; t[1] = 999999999; break; } /* fallthrough */
    default: t[0] = 0; t[1] = (int64_t)below(1000000); break;
  }
  return (uint64_t)t;
}

static uint64_t timeval_arg(void) {
  if (percent(3)) return 0;
  if (percent(8)) return any_pointer(PTR_SMALL);
  int64_t* t = build_alloc(16);
  t[0] = percent(90) ? 0 : (int64_t)number();
  t[1] = percent(80) ? (int64_t)below(1000) : (int64_t)number();
  if (t[0] > 0 || t[1] > 1000000) { /* a real wait: keep it short unless it is nonsense */
    if (percent(90)) { t[0] = 0; t[1] = (int64_t)below(1000); }
  }
  return (uint64_t)t;
}

static int timeout_ms(void) { return percent(2) ? -1 : percent(50) ? 0 : (int)below(3); }

static uint64_t iovec_arg(uint64_t* count) {
  uint64_t n = percent(80) ? below(8) : percent(50) ? below(1100) : number();
  *count = n;
  if (percent(10)) return any_pointer(PTR_ANY);
  size_t k = n > 64 ? 64 : n;
  struct iovec* v = build_alloc((k ? k : 1) * sizeof *v);
  for (size_t i = 0; i < k; ++i) {
    uint64_t base = any_pointer(PTR_ANY);
    v[i].iov_base = (void*)base;
    v[i].iov_len = length_for(base);
  }
  if (n > k) *count = percent(50) ? k : n; /* sometimes claim more than was built */
  return (uint64_t)v;
}

static uint64_t sockaddr_arg(uint64_t* len) {
  if (percent(10)) {
    *len = number();
    return any_pointer(PTR_ANY);
  }
  uint8_t* b = build_alloc(160);
  switch (below(6)) {
    case 0: { /* Unix path, abstract or unnamed */
      struct sockaddr_un* u = (struct sockaddr_un*)b;
      u->sun_family = AF_UNIX;
      const char* names[] = {"sock", "s0", "/tmp/escaped.sock", "d0/sock", "", "\0abstract", "f0"};
      size_t i = below(ARRAY_SIZE(names));
      if (i == 5) {
        memcpy(u->sun_path, "\0abstract", 9);
        *len = offsetof(struct sockaddr_un, sun_path) + 9;
      } else {
        strcpy(u->sun_path, names[i]);
        *len = offsetof(struct sockaddr_un, sun_path) + strlen(names[i]) + (percent(50) ? 1 : 0);
      }
      if (percent(10)) memset(u->sun_path, 'x', sizeof u->sun_path); /* no NUL */
      break;
    }
    case 1: {
      struct sockaddr_in* in = (struct sockaddr_in*)b;
      in->sin_family = AF_INET;
      in->sin_port = (uint16_t)below(3) * 1000;
      in->sin_addr.s_addr = percent(50) ? htonl(INADDR_LOOPBACK) : (uint32_t)rnd();
      *len = sizeof *in;
      break;
    }
    case 2: {
      struct sockaddr_in6* in6 = (struct sockaddr_in6*)b;
      in6->sin6_family = AF_INET6;
      in6->sin6_port = (uint16_t)rnd();
      in6->sin6_addr.s6_addr[15] = 1;
      *len = percent(80) ? sizeof *in6 : below(40);
      break;
    }
    case 3:
      *(uint16_t*)b = AF_UNSPEC;
      *len = percent(50) ? 16 : below(20);
      break;
    default:
      randomize(b, 160);
      *(uint16_t*)b = (uint16_t)below(48);
      *len = percent(50) ? below(130) : number();
      break;
  }
  if (percent(10)) *len = number();
  return (uint64_t)b;
}

/* Control messages: fds to pass (SCM_RIGHTS), credentials, or garbage. */
static uint64_t control_arg(uint64_t* len) {
  if (percent(30)) {
    *len = percent(50) ? 0 : number();
    return percent(50) ? 0 : any_pointer(PTR_ANY);
  }
  uint8_t* b = build_alloc(256);
  struct cmsghdr* c = (struct cmsghdr*)b;
  switch (below(3)) {
    case 0: {
      int n = 1 + (int)below(4);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(n * sizeof(int));
      for (int i = 0; i < n; ++i) ((int*)CMSG_DATA(c))[i] = (int)fd_arg();
      *len = CMSG_SPACE(n * sizeof(int));
      break;
    }
    case 1: {
      struct ucred cred = {getpid(), 1000, 1000};
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_CREDENTIALS;
      c->cmsg_len = CMSG_LEN(sizeof cred);
      memcpy(CMSG_DATA(c), &cred, sizeof cred);
      *len = CMSG_SPACE(sizeof cred);
      break;
    }
    default:
      randomize(b, 256);
      *len = below(257);
      break;
  }
  if (percent(10)) c->cmsg_len = number();
  return (uint64_t)b;
}

static uint64_t msghdr_arg(void) {
  if (percent(8)) return any_pointer(PTR_ANY);
  struct msghdr* m = build_alloc(sizeof *m);
  uint64_t n = 0;
  if (percent(50)) {
    m->msg_name = (void*)sockaddr_arg(&n);
    m->msg_namelen = (socklen_t)n;
  }
  m->msg_iov = (struct iovec*)iovec_arg(&n);
  m->msg_iovlen = n;
  m->msg_control = (void*)control_arg(&n);
  m->msg_controllen = n;
  m->msg_flags = (int)flags();
  return (uint64_t)m;
}

static uint64_t mmsg_arg(uint64_t* count) {
  uint64_t n = percent(80) ? below(4) : number();
  *count = n;
  if (percent(10)) return any_pointer(PTR_ANY);
  size_t k = n > 4 ? 4 : n;
  struct mmsghdr* v = build_alloc((k ? k : 1) * sizeof *v);
  for (size_t i = 0; i < k; ++i) {
    struct msghdr* m = (struct msghdr*)msghdr_arg();
    if ((uint8_t*)m >= build && (uint8_t*)m < build + BUILD_SIZE) v[i].msg_hdr = *m;
  }
  return (uint64_t)v;
}

/* A socklen_t/int in-out length: a plausible value or nonsense, or a bad pointer. */
static uint64_t len_ptr_arg(void) {
  if (percent(10)) return any_pointer(PTR_SMALL);
  int32_t* l = build_alloc(4);
  *l = percent(70) ? (int32_t)below(200) : (int32_t)number();
  return (uint64_t)l;
}

static uint64_t pollfd_arg(uint64_t* nfds) {
  uint64_t n = percent(85) ? below(10) : number();
  *nfds = n;
  if (percent(8)) return any_pointer(PTR_ANY);
  size_t k = n > 64 ? 64 : n;
  struct pollfd* p = build_alloc((k ? k : 1) * sizeof *p);
  for (size_t i = 0; i < k; ++i) {
    p[i].fd = (int)fd_arg();
    p[i].events = (short)flags();
  }
  return (uint64_t)p;
}

static uint64_t fdset_arg(void) {
  if (percent(20)) return 0;
  if (percent(10)) return any_pointer(PTR_ANY);
  uint64_t* s = build_alloc(128);
  for (int i = 0; i < 4; ++i) {
    int fd = (int)fd_arg();
    if (fd >= 0 && fd < 1024) s[fd / 64] |= 1ull << (fd % 64);
  }
  if (percent(5)) randomize((uint8_t*)s, 128);
  return (uint64_t)s;
}

static uint64_t epoll_event_arg(void) {
  if (percent(10)) return any_pointer(PTR_ANY);
  struct epoll_event* e = build_alloc(sizeof *e);
  e->events = percent(50) ? (uint32_t)(EPOLLIN | EPOLLOUT | (percent(30) ? EPOLLET : 0)) : (uint32_t)flags();
  e->data.u64 = rnd();
  return (uint64_t)e;
}

static uint64_t itimerspec_arg(void) {
  if (percent(10)) return any_pointer(PTR_SMALL);
  int64_t* t = build_alloc(32);
  for (int i = 0; i < 4; ++i) t[i] = percent(80) ? (i % 2 ? (int64_t)below(1000000) : 0) : (int64_t)number();
  return (uint64_t)t;
}

enum { WATCHDOG_SIG = 42 }; /* SIGRTMIN+8 with glibc */

/* A signal set for a call to install as the mask (rt_sigprocmask, rt_sigsuspend, ppoll, pselect6,
 * epoll_pwait): never one that blocks the watchdog's signal, which would leave rt_sigsuspend or pause
 * waiting for ever (natively too), so it is cleared from the set, and an unreadable pointer stands
 * for "any pointer" (fuzzed memory could hold any set). */
static uint64_t sigset_arg(void) {
  if (percent(20)) return 0;
  if (percent(10)) return percent(50) ? (uint64_t)(none + below(NONE_SIZE)) : bad_addr();
  uint64_t* s = build_alloc(8);
  *s = flags() & ~(1ull << (WATCHDOG_SIG - 1));
  return (uint64_t)s;
}

/* ---- signals ---- */


static volatile uint64_t delivered_mask;
static volatile uint64_t signals_seen;
static volatile uint64_t watchdog_fired;
static uint64_t restorer;

struct ksigaction {
  uint64_t handler, flags, restorer, mask;
};

static void on_signal(int sig, siginfo_t* info, void* ctx) {
  (void)info;
  (void)ctx;
  if (sig > 0 && sig <= 64) delivered_mask |= 1ull << (sig - 1);
  signals_seen++;
}

static void on_watchdog(int sig) {
  (void)sig;
  watchdog_fired++;
}

static int terminates_by_default(int sig) {
  return !(sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT || sig == SIGKILL || sig == SIGSTOP);
}

static void install_handler(int sig) {
  struct ksigaction a = {(uint64_t)on_signal, SA_SIGINFO | SA_RESTART | 0x04000000 /* SA_RESTORER */, restorer, 0};
  raw4(SYS_rt_sigaction, sig, &a, 0, 8);
}

static void install_watchdog_handler(void) {
  struct ksigaction a = {(uint64_t)on_watchdog, 0x04000000, restorer, 0};
  raw4(SYS_rt_sigaction, WATCHDOG_SIG, &a, 0, 8);
  uint64_t unblock = 1ull << (WATCHDOG_SIG - 1);
  raw4(SYS_rt_sigprocmask, SIG_UNBLOCK, &unblock, 0, 8);
}

/* Puts back a disposition that would end the program (or jump to garbage) if sig came. */
static void make_safe(int sig) {
  if (sig < 1 || sig > 64 || sig == SIGKILL || sig == SIGSTOP) return;
  if (sig == WATCHDOG_SIG) {
    install_watchdog_handler();
    return;
  }
  struct ksigaction cur;
  if (raw4(SYS_rt_sigaction, sig, 0, &cur, 8) != 0) return;
  int safe;
  if (cur.handler == (uint64_t)SIG_IGN)
    safe = 1;
  else if (cur.handler == (uint64_t)SIG_DFL)
    safe = !terminates_by_default(sig);
  else
    safe = cur.handler == (uint64_t)on_signal && (cur.flags & 0x04000000) && cur.restorer == restorer &&
           !(cur.flags & SA_RESETHAND);
  if (!safe) install_handler(sig);
}

static void make_all_safe(void) {
  for (int sig = 1; sig <= 64; ++sig) make_safe(sig);
}

static void default_action(int sig) {
  struct ksigaction a = {(uint64_t)SIG_DFL, 0, 0, 0};
  raw4(SYS_rt_sigaction, sig, &a, 0, 8);
}

static void reset_altstack(void) {
  stack_t ss = {.ss_sp = altstack, .ss_flags = percent(50) ? SS_DISABLE : 0, .ss_size = ALTSTACK};
  raw2(SYS_sigaltstack, &ss, 0);
}

static uint64_t sigaction_arg(void) {
  if (percent(10)) return any_pointer(PTR_SMALL);
  struct ksigaction* a = build_alloc(sizeof *a);
  static const uint64_t kHandlers[] = {(uint64_t)SIG_DFL, (uint64_t)SIG_IGN, 0 /* on_signal */};
  a->handler = PICK(kHandlers);
  if (a->handler == 0) a->handler = (uint64_t)on_signal;
  a->flags = percent(60) ? (SA_SIGINFO | 0x04000000 | (percent(30) ? SA_ONSTACK : 0) | (percent(20) ? SA_NODEFER : 0) |
                            (percent(10) ? SA_RESETHAND : 0) | (percent(50) ? SA_RESTART : 0))
                         : flags();
  a->restorer = percent(90) ? restorer : rnd();
  a->mask = flags();
  return (uint64_t)a;
}

/* ---- the watchdog thread ---- */

static volatile uint64_t progress;
static volatile int in_call;
static volatile int main_tid, watchdog_tid;

static void* watchdog(void* arg) {
  (void)arg;
  watchdog_tid = (int)raw0(SYS_gettid);
  /* It takes no part in the fuzzing: block everything but the signals a fault would raise. */
  uint64_t all = ~((1ull << (SIGSEGV - 1)) | (1ull << (SIGBUS - 1)) | (1ull << (SIGILL - 1)) | (1ull << (SIGFPE - 1)));
  raw4(SYS_rt_sigprocmask, SIG_SETMASK, &all, 0, 8);
  uint64_t seen = progress;
  int stuck = 0;
  for (;;) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    raw2(SYS_nanosleep, &ts, 0);
    if (progress != seen || !in_call) {
      seen = progress;
      stuck = 0;
      continue;
    }
    if (++stuck >= 5) raw3(SYS_tgkill, raw0(SYS_getpid), main_tid, WATCHDOG_SIG);
  }
  return NULL;
}

/* ---- children ---- */

static int live_children;
static uint64_t children_made, threads_made;
static int child_pids[8], child_n;

static void reap(int block) {
  while (live_children > 0) {
    int status;
    long r = raw4(SYS_wait4, -1, &status, block ? 0 : WNOHANG, 0);
    if (r <= 0) {
      if (r == -ECHILD) live_children = 0;
      return;
    }
    --live_children;
  }
}

/* ---- the scratch directory ---- */

static void remove_tree(int dirfd, int depth) {
  char buf[4096];
  for (;;) {
    long n = raw3(SYS_getdents64, dirfd, buf, sizeof buf);
    if (n <= 0) break;
    int removed = 0;
    for (long off = 0; off < n;) {
      struct {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
      }* d = (void*)(buf + off);
      off += d->reclen;
      if (!strcmp(d->name, ".") || !strcmp(d->name, "..")) continue;
      if (d->type == DT_DIR && depth < 8) {
        long sub = raw4(SYS_openat, dirfd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (sub >= 0) {
          raw2(SYS_fchmod, sub, 0700);
          remove_tree((int)sub, depth + 1);
          raw1(SYS_close, sub);
        }
        raw3(SYS_unlinkat, dirfd, d->name, AT_REMOVEDIR);
      } else {
        raw3(SYS_unlinkat, dirfd, d->name, 0);
      }
      ++removed;
    }
    if (!removed) break;
    raw3(SYS_lseek, dirfd, 0, SEEK_SET);
  }
}

static void make_fixtures(void) {
  long fd = raw4(SYS_openat, AT_FDCWD, cwd, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd >= 0) {
    raw2(SYS_fchmod, fd, 0700);
    remove_tree((int)fd, 0);
    raw1(SYS_close, fd);
  }
  raw2(SYS_chdir, cwd, 0);
  raw2(SYS_umask, 022, 0);
  raw2(SYS_mkdir, "d0", 0755);
  raw2(SYS_mkdir, "d0/d1", 0755);
  long f = raw4(SYS_openat, AT_FDCWD, "f0", O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (f >= 0) {
    raw3(SYS_write, f, "0123456789abcdef\n", 17);
    raw1(SYS_close, f);
  }
  f = raw4(SYS_openat, AT_FDCWD, "d0/f2", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (f >= 0) raw1(SYS_close, f);
  raw2(SYS_symlink, "f0", "s0");
  raw2(SYS_symlink, "/etc", "sym_to_etc");
  raw2(SYS_symlink, "/tmp/escaped", "dangling");
  raw2(SYS_symlink, "../../../../tmp/escaped", "s1");
}

/* Regular files stay small: the scratch directory may live on tmpfs. */
static void trim_files(void) {
  for (int i = 0; i < pool_n; ++i) {
    struct stat st;
    if (raw2(SYS_fstat, pool[i], &st) == 0 && S_ISREG(st.st_mode) && st.st_blocks > 8192)
      raw2(SYS_ftruncate, pool[i], 0);
  }
}

/* ---- the fds the fuzzer starts with ---- */

static void open_base_fds(void) {
  int sv[2];
  base_n = 0;
#define ADD(expr)                                   \
  do {                                              \
    long fd_ = (long)(expr);                        \
    if (fd_ >= 0 && base_n < (int)ARRAY_SIZE(base_fds)) base_fds[base_n++] = (int)fd_; \
  } while (0)
  ADD(raw4(SYS_openat, AT_FDCWD, "f0", O_RDWR, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, "f0", O_RDONLY | O_APPEND, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, ".", O_RDONLY | O_DIRECTORY, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, "d0", O_PATH, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, "/dev/zero", O_RDWR, 0));
  ADD(raw4(SYS_openat, AT_FDCWD, "/dev/urandom", O_RDONLY, 0));
  if (raw2(SYS_pipe2, sv, O_NONBLOCK) == 0) { ADD(sv[0]); ADD(sv[1]); }
  if (raw2(SYS_pipe2, sv, 0) == 0) { ADD(sv[0]); ADD(sv[1]); }
  if (raw4(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0) { ADD(sv[0]); ADD(sv[1]); }
  if (raw4(SYS_socketpair, AF_UNIX, SOCK_DGRAM, 0, sv) == 0) { ADD(sv[0]); ADD(sv[1]); }
  if (raw4(SYS_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv) == 0) { ADD(sv[0]); ADD(sv[1]); }
  ADD(raw3(SYS_socket, AF_INET, SOCK_STREAM, 0));
  ADD(raw3(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0));
  ADD(raw3(SYS_socket, AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0));
  ADD(raw3(SYS_socket, AF_UNIX, SOCK_DGRAM, 0));
  ADD(raw2(SYS_eventfd2, 3, EFD_NONBLOCK));
  ADD(raw2(SYS_timerfd_create, CLOCK_MONOTONIC, 0));
  ADD(raw1(SYS_epoll_create1, 0));
  ADD(raw2(SYS_memfd_create, "fuzz", 0));
#undef ADD
  for (int i = 0; i < base_n; ++i) pool_add(base_fds[i]);
}

/* ---- the system calls ---- */

/* Argument signature letters:
 *   f fd            F flags           i small int      n number        o file offset   M mode
 *   P path          B buffer (its length is the next L)                 L length       S small struct out
 *   p any pointer   T timespec (short) V iovec array (count is the next c)            c count
 *   K sockaddr (length is the next k) k sockaddr length                 H msghdr       E epoll_event
 *   Q int length pointer                Y pollfd array (count is the next c)          w ms timeout
 *   X fd_set        U timeval (short)  I itimerspec    G sigset ptr     g signal       d pid
 *   x anything
 * Calls with a rule of their own have an empty signature (see special()). */
struct call {
  int nr;
  const char* name;
  const char* sig;
};

#define C(n, s) {SYS_##n, #n, s}
static const struct call kCalls[] = {
    C(read, "fBL"), C(write, "fBL"), C(pread64, "fBLo"), C(pwrite64, "fBLo"), C(readv, "fVc"),
    C(writev, "fVc"), C(preadv, "fVco"), C(pwritev, "fVco"), C(open, "PFM"), C(openat, "fPFM"),
    C(creat, "PM"), C(close, ""), C(close_range, ""), C(lseek, "foi"), C(dup, "f"), C(dup2, ""),
    C(dup3, ""), C(fcntl, ""), C(pipe, "S"), C(pipe2, "SF"), C(ioctl, ""), C(getdents64, "fBL"),
    C(sendfile, ""),
    C(stat, "PS"), C(lstat, "PS"), C(fstat, "fS"), C(newfstatat, "fPSF"), C(statx, "fPFnS"),
    C(readlink, "PBL"), C(readlinkat, "fPBL"), C(access, "Pi"), C(faccessat, "fPi"), C(faccessat2, "fPiF"),
    C(getcwd, "BL"), C(chdir, ""), C(fchdir, ""), C(umask, "M"), C(mkdir, "PM"), C(mkdirat, "fPM"),
    C(unlink, "P"), C(unlinkat, "fPF"), C(rmdir, "P"), C(rename, "PP"), C(renameat, "fPfP"),
    C(renameat2, "fPfPF"), C(symlink, "PP"), C(symlinkat, "PfP"), C(link, "PP"), C(linkat, "fPfPF"),
    C(utimensat, "fPpF"), C(ftruncate, "fo"), C(truncate, "Po"), C(fsync, "f"), C(fdatasync, "f"),
    C(fchmod, "fM"), C(fchmodat, "fPM"), C(chmod, "PM"), C(statfs, "PS"), C(fstatfs, "fS"),
    C(brk, ""), C(mmap, ""), C(munmap, ""), C(mprotect, ""), C(mremap, ""), C(madvise, ""),
    C(mlock, ""), C(munlock, ""), C(msync, ""), C(mincore, ""), C(mlockall, "F"), C(munlockall, ""),
    C(memfd_create, "PF"),
    C(getpid, ""), C(gettid, ""), C(getppid, ""), C(getuid, ""), C(geteuid, ""), C(getgid, ""),
    C(getegid, ""), C(getpgrp, ""), C(getpgid, "d"), C(getsid, "d"), C(setsid, ""), C(getgroups, "np"),
    C(getresuid, "SSS"), C(getresgid, "SSS"), C(uname, "S"), C(sysinfo, "S"), C(getrandom, ""),
    C(prlimit64, ""), C(getrlimit, "iS"), C(setrlimit, ""), C(getrusage, "iS"),
    C(sched_getaffinity, "dnS"), C(sched_setaffinity, "dnp"), C(sched_yield, ""), C(getpriority, "ii"),
    C(prctl, ""), C(getcpu, "SSp"), C(sched_getparam, "dS"), C(sched_getscheduler, "d"),
    C(sched_setscheduler, "dip"), C(sched_get_priority_max, "i"), C(sched_get_priority_min, "i"),
    C(setpriority, "iin"), C(setuid, "n"), C(setgid, "n"), C(setreuid, "nn"), C(setregid, "nn"),
    C(setresuid, "nnn"), C(setresgid, "nnn"), C(setgroups, "np"), C(capget, "pS"), C(capset, "pp"),
    C(getitimer, "iS"), C(setitimer, "ipS"),
    C(exit, ""), C(exit_group, ""), C(arch_prctl, ""), C(set_tid_address, ""), C(set_robust_list, "pn"),
    C(get_robust_list, "dSS"), C(rseq, "pnFn"), C(fork, ""), C(vfork, ""), C(clone, ""), C(clone3, ""),
    C(execve, ""), C(execveat, ""), C(wait4, ""), C(waitid, ""),
    C(futex, ""), C(membarrier, "FF"),
    C(clock_gettime, "iS"), C(clock_getres, "iS"), C(gettimeofday, "SS"), C(time, "S"), C(nanosleep, "TS"),
    C(clock_nanosleep, ""), C(times, "S"),
    C(rt_sigaction, ""), C(rt_sigprocmask, ""), C(sigaltstack, ""), C(kill, ""), C(tgkill, ""), C(tkill, ""),
    C(rt_sigpending, "Sn"), C(rt_sigreturn, ""), C(rt_sigqueueinfo, ""), C(rt_tgsigqueueinfo, ""),
    C(rt_sigtimedwait, "GSTn"),
    C(socket, ""), C(socketpair, ""), C(bind, "fKk"), C(listen, ""), C(accept, "fpQ"), C(accept4, "fpQF"),
    C(connect, "fKk"), C(shutdown, "fi"), C(getsockname, "fpQ"), C(getpeername, "fpQ"), C(setsockopt, ""),
    C(getsockopt, ""), C(sendto, "fBLFKk"), C(recvfrom, "fBLFpQ"), C(sendmsg, "fHF"), C(recvmsg, "fHF"),
    C(sendmmsg, ""), C(recvmmsg, ""),
    C(epoll_create, "n"), C(epoll_create1, "F"), C(epoll_ctl, ""), C(epoll_wait, ""), C(epoll_pwait, ""),
    C(epoll_pwait2, ""), C(poll, ""), C(ppoll, ""), C(select, ""), C(pselect6, ""), C(eventfd, "n"),
    C(eventfd2, "nF"), C(timerfd_create, "iF"), C(timerfd_settime, "fFIS"), C(timerfd_gettime, "fS"),
    /* Not (yet) in kvmserver: they must fail cleanly with ENOSYS. */
    C(rt_sigsuspend, "Gn"), C(pause, ""), C(flock, "fi"), C(fallocate, "fioo"),
    C(splice, "fpfpnF"), C(copy_file_range, "fpfpnF"), C(inotify_init1, "F"), C(signalfd4, "fGnF"),
    C(timer_create, "ipp"), C(process_vm_readv, "dVcVcF"), C(ptrace, "ndpp"), C(io_uring_setup, "np"),
    C(bpf, "ipn"), C(perf_event_open, "pdifF"), C(pidfd_open, "dF"), C(userfaultfd, "F"), C(mount, "PPPFp"),
};
#undef C

static uint64_t name_counts[ARRAY_SIZE(kCalls)];

/* Fills args from a signature. */
static void generic(const char* sig, uint64_t args[6]) {
  for (int i = 0; i < 6; ++i) args[i] = 0;
  for (int i = 0; sig[i] && i < 6; ++i) {
    switch (sig[i]) {
      case 'f': args[i] = fd_arg(); break;
      case 'F': args[i] = flags(); break;
      case 'i': args[i] = percent(80) ? below(8) : number(); break;
      case 'n': args[i] = number(); break;
      case 'o': args[i] = offset(); break;
      case 'M': args[i] = mode_arg(); break;
      case 'P': args[i] = path_arg(); break;
      case 'B': args[i] = any_pointer(percent(15) ? PTR_SMALL : PTR_ANY); break;
      case 'L': args[i] = i > 0 ? length_for(args[i - 1]) : number(); break;
      case 'S': args[i] = small_struct(); break;
      case 'p': args[i] = any_pointer(PTR_ANY); break;
      case 'T': args[i] = timespec_arg(0); break;
      case 'V': args[i] = iovec_arg(&args[i + 1]); ++i; break;
      case 'c': args[i] = number(); break;
      case 'K': args[i] = sockaddr_arg(&args[i + 1]); ++i; break;
      case 'k': args[i] = number(); break;
      case 'H': args[i] = msghdr_arg(); break;
      case 'E': args[i] = epoll_event_arg(); break;
      case 'Q': args[i] = len_ptr_arg(); break;
      case 'Y': args[i] = pollfd_arg(&args[i + 1]); ++i; break;
      case 'w': args[i] = (uint64_t)(int64_t)timeout_ms(); break;
      case 'X': args[i] = fdset_arg(); break;
      case 'U': args[i] = timeval_arg(); break;
      case 'I': args[i] = itimerspec_arg(); break;
      case 'G': args[i] = sigset_arg(); break;
      case 'g': args[i] = below(66); break;
      case 'd': args[i] = 0; break; /* filled by pid_arg() below */
      default: args[i] = percent(50) ? number() : any_pointer(PTR_ANY); break;
    }
  }
}

static int my_pid;
static uint64_t pid_arg(void) {
  static const int64_t kPids[] = {0, -1, 1, 2, 0x7fffffff, INT32_MIN, 4194304};
  switch (below(5)) {
    case 0: return (uint64_t)(int64_t)my_pid;
    case 1: return (uint64_t)(int64_t)main_tid;
    case 2: return (uint64_t)(int64_t)watchdog_tid;
    case 3: return child_n && percent(30) ? (uint64_t)(int64_t)child_pids[below(child_n)] : (uint64_t)kPids[below(ARRAY_SIZE(kPids))];
    default: return (uint64_t)(int64_t)(my_pid + (int)below(8));
  }
}

/* A signal number for a call aimed at this process: never SIGKILL or SIGSTOP, whose dispositions
 * cannot be made safe. */
static uint64_t self_signal(void) {
  uint64_t s = percent(90) ? below(65) : number();
  if (s == SIGKILL || s == SIGSTOP) s = 0;
  return s;
}

/* A memory range for the calls that change mappings: inside the scratch region, a mapping the
 * fuzzer made, the vDSO pages, or somewhere that cannot be mapped. */
static void mm_range(uint64_t* addr, uint64_t* len) {
  switch (below(10)) {
    case 0: case 1: case 2: case 3: {
      uint64_t off = below(SCRATCH_SIZE / PAGE) * PAGE;
      *addr = (uint64_t)scratch + off;
      *len = percent(70) ? (1 + below(16)) * PAGE : below(SCRATCH_SIZE - off + 1);
      break;
    }
    case 4: case 5: {
      struct owned* o = &owned[below(ARRAY_SIZE(owned))];
      if (o->addr) {
        *addr = o->addr + (percent(50) ? 0 : below(o->len / PAGE) * PAGE);
        *len = percent(50) ? o->len : below(o->len + 1);
        break;
      }
    } /* fallthrough */
    case 6: *addr = bad_addr(); *len = number(); break;
    case 7: *addr = percent(50) ? vvar : vdso; *len = PAGE * (1 + below(2)); break;
    case 8: *addr = (uint64_t)scratch + below(SCRATCH_SIZE); *len = number(); break; /* unaligned */
    default: *addr = (uint64_t)scratch + below(SCRATCH_SIZE / PAGE) * PAGE; *len = PICK(kSpecial); break;
  }
  /* Never more than the scratch region when starting inside it: a huge length would reach the
   * fuzzer's own mappings above it. */
  if (*addr >= (uint64_t)scratch && *addr < (uint64_t)scratch + SCRATCH_SIZE && *len > (uint64_t)scratch + SCRATCH_SIZE - *addr)
    *len = (uint64_t)scratch + SCRATCH_SIZE - *addr;
  /* The same for the fuzzer's own mappings (a length reaching past them). */
  for (size_t i = 0; i < ARRAY_SIZE(owned); ++i)
    if (owned[i].addr && *addr >= owned[i].addr && *addr < owned[i].addr + owned[i].len &&
        *len > owned[i].addr + owned[i].len - *addr)
      *len = owned[i].addr + owned[i].len - *addr;
  if (*addr == vvar || *addr == vdso) *len = PAGE;
  /* Below mmap_min_addr nothing is mapped, but a length could reach the program above it. */
  if (*addr < 0x10000 && *len > 0x10000 - *addr) *len = 0x10000 - *addr;
}

static int in_scratch(uint64_t a, uint64_t len) {
  return a >= (uint64_t)scratch && a + len <= (uint64_t)scratch + SCRATCH_SIZE && a + len >= a;
}

static void remember_mapping(uint64_t addr, uint64_t len) {
  if (in_scratch(addr, len)) return;
  struct owned* o = &owned[below(ARRAY_SIZE(owned))];
  if (o->addr) raw2(SYS_munmap, o->addr, o->len);
  o->addr = addr;
  o->len = (len + PAGE - 1) & ~(PAGE - 1);
}

static void forget_mapping(uint64_t addr) {
  for (size_t i = 0; i < ARRAY_SIZE(owned); ++i)
    if (owned[i].addr == addr) owned[i].addr = owned[i].len = 0;
}

static uint64_t mmap_flags(void) {
  uint64_t f = percent(70) ? (MAP_PRIVATE | (percent(70) ? MAP_ANONYMOUS : 0)) : percent(50) ? MAP_SHARED : below(4);
  if (percent(20)) f |= 1ull << below(28);
  if (percent(5)) f = flags();
  return f;
}

enum { MAX_CHILDREN = 4 };

static int deliberate_end;
static uint64_t calls_made, ok_count, err_count, enosys_count, numbers_tried[8];

/* One call with rules of its own; returns 1 when it made a call (result in *ret). */
static int special(int nr, uint64_t a[6], long* ret) {
  uint64_t addr, len;
  switch (nr) {
    case SYS_close:
      a[0] = victim_fd();
      break;
    case SYS_close_range: {
      a[0] = percent(90) ? 3 + below(200) : number();
      a[1] = percent(50) ? a[0] + below(8) : number();
      a[2] = percent(70) ? (percent(50) ? 4 /* CLOSE_RANGE_CLOEXEC */ : 0) : flags();
      /* The kernel reads both as unsigned int: compare them as such. */
      if ((uint32_t)a[0] <= 2) a[0] = 3;
      if ((uint32_t)a[0] <= REPORT_FD && (uint32_t)a[1] >= REPORT_FD) a[1] = REPORT_FD - 1;
      break;
    }
    case SYS_dup2:
    case SYS_dup3:
      a[0] = fd_arg();
      a[1] = victim_fd();
      if ((int64_t)a[1] >= 0 && a[1] <= 2) a[1] = 3 + below(100);
      a[2] = percent(70) ? (percent(50) ? O_CLOEXEC : 0) : flags();
      break;
    case SYS_fcntl: {
      static const uint64_t kCmds[] = {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK,
                                       F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GETPIPE_SZ,
                                       F_SETPIPE_SZ, F_GETOWN, F_SETSIG, F_ADD_SEALS, F_GET_SEALS, 1234};
      a[0] = fd_arg();
      a[1] = percent(90) ? PICK(kCmds) : number();
      if (a[1] == F_GETLK || a[1] == F_SETLK || a[1] == F_SETLKW || a[1] == F_OFD_GETLK || a[1] == F_OFD_SETLK ||
          a[1] == F_OFD_SETLKW) {
        struct flock* l = build_alloc(sizeof *l);
        l->l_type = (short)(percent(80) ? below(3) : rnd());
        l->l_whence = (short)below(3);
        l->l_start = (off_t)offset();
        l->l_len = (off_t)(percent(50) ? 0 : offset());
        l->l_pid = percent(80) ? 0 : (int)number();
        a[2] = percent(90) ? (uint64_t)l : any_pointer(PTR_SMALL);
      } else {
        a[2] = percent(50) ? below(1 << 20) : number();
      }
      if (a[1] == F_DUPFD || a[1] == F_DUPFD_CLOEXEC) a[2] = percent(80) ? below(1100) : number();
      break;
    }
    case SYS_ioctl: {
      static const uint64_t kCmds[] = {FIOCLEX, FIONCLEX, FIONBIO, FIONREAD, TCGETS, TIOCGWINSZ, TIOCGPGRP,
                                       TCSETS, TIOCSPGRP, 0x5401, 0x80086601, 0xc0185879};
      a[0] = fd_arg();
      a[1] = percent(85) ? PICK(kCmds) : flags();
      a[2] = percent(80) ? small_struct() : any_pointer(PTR_ANY);
      break;
    }
    case SYS_sendfile:
      a[0] = fd_arg();
      a[1] = fd_arg();
      a[2] = percent(50) ? 0 : percent(80) ? small_struct() : any_pointer(PTR_ANY);
      if (a[2] >= (uint64_t)build && a[2] < (uint64_t)build + BUILD_SIZE) *(int64_t*)a[2] = (int64_t)offset();
      a[3] = percent(90) ? below(1 << 16) : number(); /* huge counts only rarely: files are on tmpfs */
      break;
    case SYS_chdir:
    case SYS_fchdir:
      if (nr == SYS_chdir) a[0] = path_arg(); else a[0] = fd_arg();
      *ret = raw1(nr, a[0]);
      raw1(SYS_chdir, cwd); /* relative paths stay in the scratch directory */
      return 1;
    case SYS_brk:
      switch (below(4)) {
        case 0: a[0] = 0; break;
        case 1: a[0] = initial_brk + below(1 << 24); break;
        case 2: a[0] = bad_addr(); break;
        default: a[0] = below(0x10000); break; /* below any brk_start: no change */
      }
      break;
    case SYS_mmap: {
      uint64_t f = mmap_flags();
      mm_range(&addr, &len);
      a[0] = (f & (MAP_FIXED | MAP_FIXED_NOREPLACE)) ? addr : percent(50) ? 0 : addr;
      a[1] = percent(80) ? len : number();
      if ((f & MAP_FIXED) && a[0] >= (uint64_t)scratch && a[0] < (uint64_t)scratch + SCRATCH_SIZE &&
          a[1] > (uint64_t)scratch + SCRATCH_SIZE - a[0])
        a[1] = (uint64_t)scratch + SCRATCH_SIZE - a[0];
      if ((f & MAP_FIXED) && !in_scratch(a[0], a[1]) && a[0] != vvar && a[0] != vdso) {
        int owned_range = 0;
        for (size_t i = 0; i < ARRAY_SIZE(owned); ++i)
          if (owned[i].addr && a[0] >= owned[i].addr && a[0] + a[1] <= owned[i].addr + owned[i].len) owned_range = 1;
        if (!owned_range) a[0] = bad_addr();
      }
      a[2] = percent(80) ? below(8) : flags();
      a[3] = f;
      a[4] = (f & MAP_ANONYMOUS) && percent(70) ? (uint64_t)-1 : fd_arg();
      a[5] = percent(80) ? below(4) * PAGE : offset();
      *ret = raw6(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
      if (*ret > 0 && (uint64_t)*ret < (1ull << 47)) remember_mapping((uint64_t)*ret, a[1]);
      return 1;
    }
    case SYS_munmap:
    case SYS_mprotect:
    case SYS_madvise:
    case SYS_mlock:
    case SYS_munlock:
    case SYS_msync:
      mm_range(&addr, &len);
      a[0] = addr;
      a[1] = len;
      if (nr == SYS_mprotect) a[2] = percent(80) ? below(8) | (percent(5) ? 0x01000000 : 0) : flags();
      else if (nr == SYS_madvise) a[2] = percent(80) ? below(26) : percent(50) ? 100 + below(2) : number();
      else a[2] = flags();
      *ret = raw3(nr, a[0], a[1], a[2]);
      if (nr == SYS_munmap && *ret == 0) forget_mapping(addr);
      return 1;
    case SYS_mincore:
      mm_range(&addr, &len);
      a[0] = addr;
      a[1] = len;
      a[2] = percent(80) ? (uint64_t)sac : any_pointer(PTR_ANY);
      break;
    case SYS_mremap: {
      mm_range(&addr, &len);
      a[0] = addr;
      a[1] = len;
      a[2] = percent(70) ? (1 + below(32)) * PAGE : number();
      a[3] = percent(80) ? below(8) : flags();
      uint64_t dst, dlen;
      mm_range(&dst, &dlen);
      a[4] = dst;
      if ((a[3] & 2 /* MREMAP_FIXED */) && in_scratch(dst, 1) && a[2] > (uint64_t)scratch + SCRATCH_SIZE - dst)
        a[2] = (uint64_t)scratch + SCRATCH_SIZE - dst;
      if ((a[3] & 2) && !in_scratch(dst, a[2])) a[4] = bad_addr();
      *ret = raw6(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], 0);
      if (*ret > 0 && (uint64_t)*ret < (1ull << 47) && (uint64_t)*ret != a[0]) {
        forget_mapping(a[0]);
        remember_mapping((uint64_t)*ret, a[2]);
      }
      return 1;
    }
    case SYS_getrandom:
      a[0] = any_pointer(percent(20) ? PTR_SMALL : PTR_ANY);
      a[1] = percent(97) ? length_for(a[0]) : number();
      if (a[0] >= (uint64_t)stackbuf && a[0] < (uint64_t)stackbuf + STACKBUF) a[1] = length_for(a[0]);
      a[2] = percent(70) ? below(8) : flags();
      break;
    case SYS_prlimit64:
    case SYS_setrlimit: {
      uint64_t res = percent(90) ? below(17) : number();
      uint64_t* lim = build_alloc(16);
      struct rlimit cur = {0, 0};
      if (raw2(SYS_getrlimit, res < 16 ? res : 0, &cur) == 0) {
        lim[1] = percent(80) ? cur.rlim_max : number(); /* lowering a hard limit cannot be undone */
        lim[0] = percent(70) ? below(lim[1] < 4096 ? lim[1] + 1 : 4096) : number();
      }
      if (res == RLIMIT_NOFILE || res == RLIMIT_DATA || res == RLIMIT_MEMLOCK || res == RLIMIT_NICE) lim[1] = cur.rlim_max;
      uint64_t newp = percent(90) ? (uint64_t)lim : any_pointer(PTR_SMALL);
      if (nr == SYS_setrlimit) {
        *ret = raw2(nr, res, newp);
      } else {
        a[0] = percent(80) ? 0 : pid_arg();
        *ret = raw4(nr, a[0], res, percent(80) ? newp : 0, percent(50) ? small_struct() : 0);
      }
      /* Back to what it was (the soft limits: a smaller fd limit would end the fuzzing). */
      if (res < 16) raw2(SYS_setrlimit, res, &cur);
      return 1;
    }
    case SYS_prctl: {
      static const uint64_t kOpts[] = {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_PDEATHSIG,
                                       PR_GET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_SET_VMA,
                                       PR_GET_TIMERSLACK, PR_SET_TIMERSLACK, PR_CAPBSET_READ, PR_GET_SECCOMP,
                                       PR_GET_THP_DISABLE, PR_SET_THP_DISABLE, PR_GET_TID_ADDRESS, PR_SET_MM, 1000};
      a[0] = percent(90) ? PICK(kOpts) : number();
      a[1] = percent(50) ? any_pointer(PTR_SMALL) : number();
      if (a[0] == PR_SET_NAME && percent(70)) a[1] = path_arg();
      a[2] = number();
      break;
    }
    case SYS_arch_prctl: {
      static const uint64_t kCodes[] = {0x1001 /* SET_GS */, 0x1002 /* SET_FS */, 0x1003 /* GET_FS */,
                                        0x1004 /* GET_GS */, 0x1011 /* GET_CPUID */, 0x1012 /* SET_CPUID */, 0x3001};
      a[0] = percent(95) ? PICK(kCodes) : number();
      a[1] = percent(50) ? small_struct() : number();
      if (a[0] == 0x1002) { /* the fs base is glibc's TLS: only the current one, or one refused */
        uint64_t fs = 0;
        raw2(SYS_arch_prctl, 0x1003, &fs);
        a[1] = percent(50) ? fs : 0x800000000000ull + below(1ull << 20);
      }
      break;
    }
    case SYS_set_tid_address:
      a[0] = percent(80) ? (uint64_t)(sac + below(SAC_SIZE / 4) * 4) : bad_addr();
      break;
    case SYS_exit:
    case SYS_exit_group:
    case SYS_rt_sigreturn:
      *ret = -ENOSYS; /* only at the end, deliberately */
      return 1;
    case SYS_fork:
    case SYS_vfork:
    case SYS_clone:
    case SYS_clone3: {
      if (live_children >= MAX_CHILDREN) reap(1);
      uint64_t cflags = 0, stack = 0;
      long child_nr = SYS_exit_group;
      if (nr == SYS_clone || nr == SYS_clone3) {
        static const uint64_t kKinds[] = {SIGCHLD, CLONE_VM | CLONE_VFORK | SIGCHLD,
                                          CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM};
        cflags = PICK(kKinds);
        if (percent(30)) cflags |= (CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID) & rnd();
        if (percent(10)) cflags |= 1ull << below(40);
        if (percent(3)) cflags = flags();
        if (cflags & CLONE_THREAD) {
          child_nr = SYS_exit;
          stack = percent(90) ? (uint64_t)(thread_stack + 16384) : percent(50) ? 0 : bad_addr();
        } else if (percent(5)) {
          stack = (uint64_t)(thread_stack + 16384);
        }
      }
      uint64_t ptid = percent(90) ? (uint64_t)(sac + below(SAC_SIZE / 4) * 4) : bad_addr();
      uint64_t ctid = percent(90) ? (uint64_t)(sac + below(SAC_SIZE / 4) * 4) : bad_addr();
      uint64_t tls = rnd();
      long code = (long)below(256);
      if (nr == SYS_fork || nr == SYS_vfork) {
        *ret = raw_spawn(nr, 0, 0, 0, 0, 0, child_nr, code);
      } else if (nr == SYS_clone) {
        *ret = raw_spawn(nr, (long)cflags, (long)stack, (long)ptid, (long)ctid, (long)tls, child_nr, code);
      } else {
        uint64_t* ca = build_alloc(11 * 8);
        ca[0] = cflags & ~0xffull;
        ca[1] = 0;
        ca[2] = ctid;
        ca[3] = ptid;
        ca[4] = (cflags & CLONE_THREAD) ? 0 : percent(90) ? SIGCHLD : below(70);
        ca[5] = stack ? stack - 16384 : 0;
        ca[6] = stack ? 16384 : 0;
        ca[7] = tls;
        if (percent(5)) ca[8] = number();
        uint64_t size = percent(85) ? 64 + 8 * below(4) : number();
        uint64_t p = percent(95) ? (uint64_t)ca : any_pointer(PTR_ANY);
        *ret = raw_spawn(nr, (long)p, (long)size, 0, 0, 0, child_nr, code);
        cflags = ca[0];
      }
      if (*ret > 0) {
        if (cflags & CLONE_THREAD) {
          ++threads_made;
        } else {
          ++children_made;
          ++live_children;
          if (child_n < (int)ARRAY_SIZE(child_pids)) child_pids[child_n++] = (int)*ret;
          else child_pids[below(ARRAY_SIZE(child_pids))] = (int)*ret;
        }
      }
      return 1;
    }
    case SYS_execve:
    case SYS_execveat: {
      /* Nothing it names is a program (the fuzzer's own binary is left out): these fail. */
      uint64_t* argv = build_alloc(4 * 8);
      argv[0] = path_arg();
      argv[1] = percent(50) ? any_pointer(PTR_ANY) : 0;
      uint64_t av = percent(70) ? (uint64_t)argv : percent(50) ? 0 : any_pointer(PTR_ANY);
      uint64_t ev = percent(50) ? 0 : percent(50) ? (uint64_t)argv : any_pointer(PTR_ANY);
      uint64_t path;
      do path = path_arg(); while (path >= (uint64_t)build && path < (uint64_t)build + BUILD_SIZE &&
                                   (strstr((char*)path, "exe") || strstr((char*)path, "fd/")));
      if (nr == SYS_execve) {
        *ret = raw3(nr, path, av, ev);
      } else {
        uint64_t dirfd = percent(50) ? (uint64_t)-100 : fd_arg();
        *ret = raw6(nr, (long)dirfd, (long)path, (long)av, (long)ev, (long)(percent(70) ? below(0x2000) : flags()), 0);
      }
      return 1;
    }
    case SYS_wait4:
    case SYS_waitid: {
      uint64_t opts = percent(80) ? (WNOHANG | (percent(50) ? __WALL : 0)) : flags();
      if (!(opts & WNOHANG) && live_children == 0) opts |= WNOHANG;
      if (nr == SYS_wait4) {
        a[0] = percent(70) ? (uint64_t)-1 : pid_arg();
        *ret = raw4(nr, a[0], percent(80) ? small_struct() : 0, opts, percent(20) ? small_struct() : 0);
      } else {
        opts |= percent(90) ? WEXITED : 0;
        *ret = raw6(nr, (long)below(4), (long)(percent(50) ? 0 : pid_arg()), (long)small_struct(), (long)opts,
                    (long)(percent(20) ? small_struct() : 0), 0);
      }
      if (*ret > 0 && live_children > 0) --live_children;
      return 1;
    }
    case SYS_futex: {
      static const uint64_t kOps[] = {FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP,
                                      FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET, FUTEX_LOCK_PI, FUTEX_WAIT_REQUEUE_PI, 13};
      uint64_t op = PICK(kOps) | (percent(30) ? FUTEX_PRIVATE_FLAG : 0) | (percent(10) ? FUTEX_CLOCK_REALTIME : 0);
      if (percent(5)) op = number();
      uint64_t word = percent(80) ? (uint64_t)(sac + below(SAC_SIZE / 4) * 4) : any_pointer(PTR_ANY);
      uint64_t val = number();
      uint64_t timeout = timespec_arg(1);
      int cmd = (int)(op & FUTEX_CMD_MASK);
      if (cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET) {
        /* A wait nobody ends must have a timeout, or not match the word. */
        if (word >= (uint64_t)sac && word < (uint64_t)sac + SAC_SIZE && (timeout == 0 || percent(50)))
          val = ~(uint64_t)*(volatile uint32_t*)word & 0xffffffff;
        if (cmd == FUTEX_WAIT_BITSET && timeout >= (uint64_t)build && timeout < (uint64_t)build + BUILD_SIZE) {
          struct timespec now;
          raw2(SYS_clock_gettime, (op & FUTEX_CLOCK_REALTIME) ? CLOCK_REALTIME : CLOCK_MONOTONIC, &now);
          int64_t* t = (int64_t*)timeout;
          if (percent(80)) { t[0] = now.tv_sec; t[1] = now.tv_nsec; }
        }
      }
      uint64_t word2 = percent(80) ? (uint64_t)(sac + below(SAC_SIZE / 4) * 4) : any_pointer(PTR_ANY);
      *ret = raw6(nr, (long)word, (long)op, (long)val,
                  (long)((cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET) ? timeout : number()), (long)word2,
                  (long)(percent(50) ? flags() : number()));
      return 1;
    }
    case SYS_clock_nanosleep: {
      uint64_t fl = percent(80) ? (percent(50) ? TIMER_ABSTIME : 0) : flags();
      uint64_t t = timespec_arg(0);
      if ((fl & TIMER_ABSTIME) && t >= (uint64_t)build && t < (uint64_t)build + BUILD_SIZE && percent(80)) {
        int64_t* ts = (int64_t*)t;
        ts[0] = 0; /* long past */
      }
      *ret = raw4(nr, percent(80) ? below(12) : number(), fl, t, percent(50) ? small_struct() : 0);
      return 1;
    }
    case SYS_rt_sigaction:
      a[0] = percent(90) ? 1 + below(64) : number();
      a[1] = percent(70) ? sigaction_arg() : 0;
      a[2] = percent(50) ? small_struct() : 0;
      a[3] = percent(90) ? 8 : number();
      *ret = raw4(nr, a[0], a[1], a[2], a[3]);
      make_safe((int)a[0]);
      return 1;
    case SYS_rt_sigprocmask:
      a[0] = percent(90) ? below(3) : number();
      a[1] = sigset_arg();
      a[2] = percent(50) ? small_struct() : 0;
      a[3] = percent(90) ? 8 : number();
      *ret = raw4(nr, a[0], a[1], a[2], a[3]);
      install_watchdog_handler();
      return 1;
    case SYS_sigaltstack: {
      stack_t* ss = build_alloc(sizeof *ss);
      ss->ss_sp = percent(70) ? altstack : (void*)any_pointer(PTR_ANY);
      ss->ss_flags = percent(70) ? (int)below(3) * (percent(50) ? SS_DISABLE : 0) : (int)flags();
      ss->ss_size = percent(70) ? ALTSTACK : number();
      *ret = raw2(nr, percent(80) ? (uint64_t)ss : percent(50) ? 0 : any_pointer(PTR_SMALL), percent(50) ? small_struct() : 0);
      reset_altstack();
      return 1;
    }
    case SYS_kill: {
      static const int64_t kTargets[] = {0, -1};
      a[0] = percent(60) ? (uint64_t)(int64_t)my_pid : percent(50) ? (uint64_t)kTargets[below(2)] : pid_arg();
      a[1] = self_signal();
      if (a[1] == 0 && percent(50)) a[1] = 1 + below(31);
      if (a[1] == SIGKILL || a[1] == SIGSTOP) a[1] = 0;
      if (percent(10) && child_n) { /* a child, maybe exiting right now: any signal */
        a[0] = (uint64_t)(int64_t)child_pids[below(child_n)];
        a[1] = below(65);
      }
      *ret = raw2(nr, a[0], a[1]);
      return 1;
    }
    case SYS_tgkill:
      *ret = raw3(nr, percent(80) ? (uint64_t)(int64_t)my_pid : pid_arg(), percent(70) ? (uint64_t)(int64_t)main_tid : pid_arg(),
                  self_signal());
      return 1;
    case SYS_tkill:
      *ret = raw2(nr, percent(70) ? (uint64_t)(int64_t)main_tid : pid_arg(), self_signal());
      return 1;
    case SYS_rt_sigqueueinfo:
    case SYS_rt_tgsigqueueinfo: {
      siginfo_t* info = build_alloc(sizeof *info);
      randomize((uint8_t*)info, sizeof *info);
      if (percent(70)) info->si_code = percent(50) ? SI_QUEUE : (int)below(8) - 6;
      const uint64_t i = percent(90) ? (uint64_t)info : any_pointer(PTR_ANY);
      const uint64_t pid = percent(80) ? (uint64_t)(int64_t)my_pid : pid_arg();
      if (nr == SYS_rt_sigqueueinfo)
        *ret = raw3(nr, pid, self_signal(), i);
      else
        *ret = raw4(nr, pid, percent(70) ? (uint64_t)(int64_t)main_tid : pid_arg(), self_signal(), i);
      return 1;
    }
    case SYS_socket:
    case SYS_socketpair: {
      static const uint64_t kDomains[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNSPEC, 45};
      static const uint64_t kTypes[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_RAW, SOCK_PACKET, 0, 11};
      a[0] = percent(90) ? PICK(kDomains) : number();
      a[1] = (percent(90) ? PICK(kTypes) : number()) | (percent(50) ? SOCK_NONBLOCK : 0) | (percent(30) ? SOCK_CLOEXEC : 0);
      a[2] = percent(80) ? 0 : percent(50) ? below(20) : number();
      if (nr == SYS_socket) {
        *ret = raw3(nr, a[0], a[1], a[2]);
      } else {
        int* sv = build_alloc(8);
        uint64_t p = percent(90) ? (uint64_t)sv : any_pointer(PTR_SMALL);
        *ret = raw4(nr, a[0], a[1], a[2], p);
        if (*ret == 0 && p == (uint64_t)sv) {
          pool_add(sv[0]);
          pool_add(sv[1]);
        }
      }
      return 1;
    }
    case SYS_listen: {
      /* Only on a socket closed right after: a listening socket would turn the fuzzer into a server
       * (kvmserver pauses it at its first wait on one). */
      long s = raw3(SYS_socket, percent(50) ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (s >= 0 && percent(50)) {
        struct sockaddr_un u = {.sun_family = AF_UNIX};
        raw3(SYS_bind, s, &u, sizeof(sa_family_t)); /* autobind */
      }
      *ret = raw2(nr, percent(90) ? (uint64_t)s : percent(50) ? (uint64_t)-1 : (uint64_t)base_fds[0], number());
      if (s >= 0) raw1(SYS_close, s);
      return 1;
    }
    case SYS_setsockopt:
    case SYS_getsockopt: {
      static const uint64_t kLevels[] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_UDP, 0, 1000};
      a[0] = fd_arg();
      a[1] = percent(90) ? PICK(kLevels) : number();
      a[2] = percent(80) ? below(80) : number();
      if (nr == SYS_setsockopt) {
        a[3] = percent(80) ? (uint64_t)(sac + below(SAC_SIZE - 256)) : any_pointer(PTR_ANY);
        a[4] = percent(80) ? below(64) : number();
      } else {
        a[3] = percent(80) ? (uint64_t)(sac + below(SAC_SIZE - 256)) : any_pointer(PTR_ANY);
        a[4] = len_ptr_arg();
      }
      break;
    }
    case SYS_sendmmsg:
    case SYS_recvmmsg:
      a[0] = fd_arg();
      a[1] = mmsg_arg(&a[2]);
      a[3] = flags() | (nr == SYS_recvmmsg && percent(50) ? MSG_DONTWAIT : 0);
      a[4] = nr == SYS_recvmmsg ? timespec_arg(1) : 0;
      break;
    case SYS_epoll_ctl:
      a[0] = fd_arg();
      a[1] = percent(90) ? 1 + below(3) : number();
      a[2] = fd_arg();
      a[3] = epoll_event_arg();
      break;
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      a[0] = fd_arg();
      a[1] = percent(80) ? (uint64_t)sac : any_pointer(PTR_ANY);
      a[2] = percent(80) ? 1 + below(16) : number();
      a[3] = nr == SYS_epoll_pwait2 ? timespec_arg(1) : (uint64_t)(int64_t)timeout_ms();
      a[4] = sigset_arg();
      a[5] = percent(90) ? 8 : number();
      break;
    case SYS_poll:
      a[0] = pollfd_arg(&a[1]);
      a[2] = (uint64_t)(int64_t)timeout_ms();
      break;
    case SYS_ppoll:
      a[0] = pollfd_arg(&a[1]);
      a[2] = timespec_arg(1);
      a[3] = sigset_arg();
      a[4] = percent(90) ? 8 : number();
      break;
    case SYS_select:
    case SYS_pselect6:
      a[0] = percent(80) ? below(130) : number();
      a[1] = fdset_arg();
      a[2] = fdset_arg();
      a[3] = fdset_arg();
      if (nr == SYS_select) {
        a[4] = timeval_arg();
      } else {
        a[4] = timespec_arg(1);
        uint64_t* s6 = build_alloc(16);
        s6[0] = sigset_arg();
        s6[1] = percent(90) ? 8 : number();
        a[5] = percent(80) ? (uint64_t)s6 : percent(50) ? 0 : any_pointer(PTR_SMALL);
      }
      break;
    default:
      return 0;
  }
  *ret = raw6(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
  return 1;
}

static int creates_fd(int nr) {
  switch (nr) {
    case SYS_open: case SYS_openat: case SYS_creat: case SYS_dup: case SYS_dup2: case SYS_dup3: case SYS_socket:
    case SYS_accept: case SYS_accept4: case SYS_epoll_create: case SYS_epoll_create1: case SYS_eventfd:
    case SYS_eventfd2: case SYS_timerfd_create: case SYS_memfd_create:
      return 1;
    default:
      return 0;
  }
}

static const struct call* find_call(int nr) {
  for (size_t i = 0; i < ARRAY_SIZE(kCalls); ++i)
    if (kCalls[i].nr == nr) return &kCalls[i];
  return NULL;
}

/* SYSCALL_FUZZ_TRACE=1: a line per call and its result; 2: also a line before each generic call
 * (what a hang is stuck in). A debugging aid. */
static int tracing;

static int spawns(int nr) { return nr == SYS_fork || nr == SYS_vfork || nr == SYS_clone || nr == SYS_clone3; }

/* A new process is a new VM (costly in the nested test machine): the calls that make processes or
 * threads are drawn one time in 25, about one call in 3000 in all. SYSCALL_FUZZ_NO_SPAWN=1 in the
 * environment: never (a debugging aid). */
static int spawn_turn(void) {
  static int off = -1;
  if (off < 0) off = getenv("SYSCALL_FUZZ_NO_SPAWN") != NULL;
  return !off && percent(4);
}

/* One fuzzed call. */
static void one_call(void) {
  uint64_t a[6] = {0};
  int nr;
  const struct call* c = NULL;
  uint64_t r = below(100);
  if (r < 75) {
    do c = &kCalls[below(ARRAY_SIZE(kCalls))];
    while (spawns(c->nr) && !spawn_turn());
    nr = c->nr;
    numbers_tried[0]++;
  } else if (r < 95) {
    do nr = (int)below(460); /* every number, implemented or not */
    while (spawns(nr) && !spawn_turn());
    c = find_call(nr);
    numbers_tried[1]++;
  } else {
    static const int64_t kOdd[] = {512, 513, 1000, 0x40000000 /* x32 */, 0x40000027, -1, -2, 0x7fffffff, 335, 387};
    nr = (int)kOdd[below(ARRAY_SIZE(kOdd))];
    numbers_tried[2]++;
  }
  long ret;
  build_used = 0;
  in_call = 1;
  if (!special(nr, a, &ret)) {
    if (c && nr != SYS_exit && nr != SYS_exit_group && nr != SYS_rt_sigreturn) {
      generic(c->sig, a);
      for (int i = 0; c->sig[i] && i < 6; ++i)
        if (c->sig[i] == 'd') a[i] = pid_arg();
    } else {
      for (int i = 0; i < 6; ++i) a[i] = percent(50) ? number() : any_pointer(PTR_ANY);
    }
    if (nr == SYS_exit || nr == SYS_exit_group || nr == SYS_rt_sigreturn) {
      ret = -ENOSYS;
    } else {
      if (tracing > 1) {
        char line[256];
        snprintf(line, sizeof line, "syscall_fuzz: call %llu starts: %d(%#llx, %#llx, %#llx, %#llx, %#llx, %#llx)\n",
                 (unsigned long long)calls_made + 1, nr, (unsigned long long)a[0], (unsigned long long)a[1],
                 (unsigned long long)a[2], (unsigned long long)a[3], (unsigned long long)a[4], (unsigned long long)a[5]);
        out(line);
      }
      ret = raw6(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
    }
  }
  in_call = 0;
  if (nr == SYS_setitimer || nr == SYS_alarm) {
    /* A real-time timer left armed would send SIGALRM at any later moment, perhaps while a call
     * has just made its disposition SIG_DFL (before make_safe puts it back): disarmed at once. */
    static const long kDisarm[4];
    raw3(SYS_setitimer, 0 /* ITIMER_REAL */, (long)kDisarm, 0);
  }
  progress++;
  calls_made++;
  if (tracing) {
    char line[256];
    snprintf(line, sizeof line, "syscall_fuzz: call %llu: %d(%#llx, %#llx, %#llx, %#llx, %#llx, %#llx) = %ld\n",
             (unsigned long long)calls_made, nr, (unsigned long long)a[0], (unsigned long long)a[1],
             (unsigned long long)a[2], (unsigned long long)a[3], (unsigned long long)a[4], (unsigned long long)a[5], ret);
    out(line);
  }
  if (c) name_counts[c - kCalls]++;
  if (ret >= 0 || ret < -4095) {
    ok_count++;
    if (creates_fd(nr)) pool_add(ret);
  } else if (ret == -ENOSYS) {
    enosys_count++;
  } else {
    err_count++;
  }
  if (delivered_mask) {
    uint64_t m = delivered_mask;
    delivered_mask = 0;
    for (int sig = 1; sig <= 64; ++sig)
      if (m & (1ull << (sig - 1))) make_safe(sig);
  }
}

static void maintenance(uint64_t i) {
  if (i % 500 == 0) {
    reap(0);
    randomize(sac + below(SAC_SIZE / 2), PAGE);
    uint64_t none_mask = 0;
    raw4(SYS_rt_sigprocmask, SIG_SETMASK, &none_mask, 0, 8);
    install_watchdog_handler();
  }
  if (i % 2000 == 0) trim_files();
  if (i % 5000 == 0) {
    /* Back to a known state: every fd but 0-2 and the report fd closed, the base fds and the
     * scratch directory and region made again. */
    raw3(SYS_close_range, 3, REPORT_FD - 1, 0);
    raw3(SYS_close_range, REPORT_FD + 1, ~0u, 0);
    make_fixtures();
    pool_n = 0;
    open_base_fds();
    mmap(scratch, SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    reset_altstack();
    raw2(SYS_umask, 022, 0);
    make_all_safe();
  }
}

static void finish(int deliberate, uint64_t seed) {
  reap(1);
  char line[4096];
  /* Top syscalls by count. */
  char top[2048] = "";
  size_t used = 0;
  uint64_t done[ARRAY_SIZE(kCalls)] = {0};
  for (int k = 0; k < 12; ++k) {
    size_t best = 0;
    uint64_t best_n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(kCalls); ++i)
      if (!done[i] && name_counts[i] > best_n) best = i, best_n = name_counts[i];
    if (!best_n) break;
    done[best] = 1;
    used += (size_t)snprintf(top + used, sizeof top - used, " %s=%llu", kCalls[best].name, (unsigned long long)best_n);
    if (used >= sizeof top) break;
  }
  size_t distinct = 0;
  for (size_t i = 0; i < ARRAY_SIZE(kCalls); ++i) distinct += name_counts[i] != 0;
  snprintf(line, sizeof line,
           "syscall_fuzz: seed=%llu calls=%llu ok=%llu errors=%llu enosys=%llu table=%llu any-number=%llu odd-number=%llu "
           "named-distinct=%zu/%zu signals=%llu children=%llu threads=%llu watchdog=%llu top:%s\n",
           (unsigned long long)seed, (unsigned long long)calls_made, (unsigned long long)ok_count,
           (unsigned long long)err_count, (unsigned long long)enosys_count, (unsigned long long)numbers_tried[0],
           (unsigned long long)numbers_tried[1], (unsigned long long)numbers_tried[2], distinct, ARRAY_SIZE(kCalls),
           (unsigned long long)signals_seen, (unsigned long long)children_made, (unsigned long long)threads_made,
           (unsigned long long)watchdog_fired, top);
  out(line);
  if (!deliberate) raw1(SYS_exit_group, 0);
}

/* The end of one run in 16: an exit status or death of its choosing, which the runner must see. */
static void deliberate(uint64_t seed) {
  char line[256];
  switch (seed / 16 % 4) {
    case 0: {
      int code = (int)(rnd() | 1);
      snprintf(line, sizeof line, "syscall_fuzz: ending with exit_group(%d), expect status %d\n", code, code & 0xff);
      out(line);
      raw1(SYS_exit_group, code);
      break;
    }
    case 1: {
      snprintf(line, sizeof line, "syscall_fuzz: ending with rt_sigreturn on garbage, expect status 139\n");
      out(line);
      uint64_t frame[64];
      randomize((uint8_t*)frame, sizeof frame);
      frame[1 + 5 + 15] = 0; /* the context's rsp (the frame is read at frame + 1): no stack to return to */
      default_action(SIGSEGV);
      __asm__ volatile("mov %0, %%rsp\n\tmov $15, %%eax\n\tsyscall\n\tud2" ::"r"(frame + 1) : "memory");
      break;
    }
    case 2: {
      snprintf(line, sizeof line, "syscall_fuzz: ending with kill(self, SIGKILL), expect status 137\n");
      out(line);
      raw2(SYS_kill, my_pid, SIGKILL);
      break;
    }
    default: {
      snprintf(line, sizeof line, "syscall_fuzz: ending with a SIGSEGV at address 0x10, expect status 139\n");
      out(line);
      uint64_t zero = 0;
      default_action(SIGSEGV);
      raw4(SYS_rt_sigprocmask, SIG_SETMASK, &zero, 0, 8);
      volatile uintptr_t where = 0x10;
      *(volatile int*)where = 1;
      break;
    }
  }
  out("syscall_fuzz: still alive after a deliberate end\n");
  raw1(SYS_exit_group, 3);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: syscall_fuzz SEED [CALLS]\n");
    return 2;
  }
  struct utsname u;
  if (uname(&u) != 0 || !strstr(u.release, "kvmserver")) {
    fprintf(stderr, "syscall_fuzz: refusing to run outside kvmserver (these calls would reach the real kernel)\n");
    return 2;
  }
  const uint64_t seed = strtoull(argv[1], NULL, 0);
  const uint64_t calls = argc > 2 ? strtoull(argv[2], NULL, 0) : 100000;
  rng_state = seed * 0x9E3779B97F4A7C15ull + 0x1234567;
  if (!rng_state) rng_state = 1;
  deliberate_end = seed % 16 == 15;
  tracing = getenv("SYSCALL_FUZZ_TRACE") ? atoi(getenv("SYSCALL_FUZZ_TRACE")) : 0;

  /* Output goes to fd 999; 0-2 become /dev/null so that fuzzed writes to them stay quiet. */
  if (dup2(1, REPORT_FD) != REPORT_FD || fstat(REPORT_FD, &report_st) != 0) return 2;
  int devnull = open("/dev/null", O_RDWR);
  for (int fd = 0; fd < 3; ++fd) dup2(devnull, fd);
  if (devnull > 2) close(devnull);
  if (!getcwd(cwd, sizeof cwd)) return 2;

  uint8_t stack_area[STACKBUF];
  stackbuf = stack_area;
  sac = guarded(SAC_SIZE, PROT_READ | PROT_WRITE);
  build = guarded(BUILD_SIZE, PROT_READ | PROT_WRITE);
  none = guarded(NONE_SIZE, PROT_NONE);
  ro = guarded(RO_SIZE, PROT_READ | PROT_WRITE);
  uint8_t* path_page = guarded(PAGE, PROT_READ | PROT_WRITE);
  altstack = guarded(ALTSTACK, PROT_READ | PROT_WRITE);
  thread_stack = guarded(16384, PROT_READ | PROT_WRITE);
  scratch = mmap(NULL, SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!sac || !build || !none || !ro || !path_page || !altstack || !thread_stack || scratch == MAP_FAILED) {
    out("syscall_fuzz: cannot set up memory\n");
    return 2;
  }
  path_end = path_page + PAGE - 1;
  randomize(sac, SAC_SIZE);
  randomize(ro, RO_SIZE);
  mprotect(ro, RO_SIZE, PROT_READ);
  vdso = (uint64_t)getauxval(AT_SYSINFO_EHDR);
  vvar = vdso ? vdso - PAGE : 0x7f0000000000ull;
  if (!vdso) vdso = 0x7f0000001000ull;
  initial_brk = (uint64_t)raw1(SYS_brk, 0);
  my_pid = getpid();
  main_tid = (int)raw0(SYS_gettid);

  /* Dispositions: a real handler for everything that can be caught, which the fuzzing may replace
   * with SIG_IGN/SIG_DFL or another handler (see make_safe). The restorer is libc's. */
  struct sigaction sa = {0};
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  struct ksigaction k;
  raw4(SYS_rt_sigaction, SIGUSR1, 0, &k, 8);
  restorer = k.restorer;
  for (int sig = 1; sig <= 64; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP && sig != WATCHDOG_SIG) install_handler(sig);
  install_watchdog_handler();
  reset_altstack();

  make_fixtures();
  open_base_fds();
  pthread_t wd;
  if (pthread_create(&wd, NULL, watchdog, NULL) != 0) {
    out("syscall_fuzz: cannot start the watchdog thread\n");
    return 2;
  }
  while (!watchdog_tid) raw0(SYS_sched_yield);
  make_all_safe();  /* glibc's own handlers (SIGCANCEL, SIGSETXID) come with its first thread */
  randomize(stack_area, sizeof stack_area);  /* no libc leftovers that look like structs */

  for (uint64_t i = 1; i <= calls; ++i) {
    one_call();
    maintenance(i);
  }
  finish(deliberate_end, seed);
  if (deliberate_end) deliberate(seed);
  return 0;
}

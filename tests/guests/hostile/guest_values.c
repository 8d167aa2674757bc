/* Hostile: guest values the host must not trust, one section per class of tests/hostile/README.md
 * ("What the host reads from the guest"). Each call gets what Linux gives it (checked natively by
 * running this program directly), and kvmserver neither crashes nor touches memory outside the
 * guest's mappings. Only raw syscalls where libc would touch the pointers itself.
 *
 * Without an argument every section runs; with one, only that section:
 *   iovec msghdr sockaddr poll select futex sigaltstack robust execve getdents ioctl ranges clock
 * Expected: exit 0 printing "ok guest_values". A failed check prints its line and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int fails;

#define KERNEL ((void *)0xffffff8000000000ull) /* kvmserver's guest kernel area (GDT) */
#define HOLE ((void *)0x400000000000ull)       /* above user memory, below the canonical limit */

#define EXPECT_ERR(err, ...)                                                                       \
  do {                                                                                             \
    errno = 0;                                                                                     \
    long r_ = syscall(__VA_ARGS__);                                                                \
    if (r_ != -1 || errno != (err)) {                                                              \
      fprintf(stderr, "line %d: syscall(%s) = %ld errno %d (want errno %d)\n", __LINE__, #__VA_ARGS__, r_, \
              errno, (err));                                                                       \
      fails++;                                                                                     \
    }                                                                                              \
  } while (0)

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "line %d: %s (errno %d)\n", __LINE__, #cond, errno); \
      fails++;                                                             \
    }                                                                      \
  } while (0)

/* A page followed by an unmapped one: ranges starting near its end run off the mapping. */
static char *edge_page(void) {
  static char *page;
  if (!page) {
    page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED || munmap(page + 4096, 4096) != 0) exit(3);
  }
  return page;
}

static void iovec_class(void) {
  int p[2];
  CHECK(pipe2(p, O_NONBLOCK) == 0);
  char buf[16] = "0123456789abcdef";
  struct iovec ok = {buf, 4};
  EXPECT_ERR(EINVAL, SYS_writev, p[1], &ok, 1025);      /* past UIO_MAXIOV */
  EXPECT_ERR(EINVAL, SYS_writev, p[1], &ok, -1);
  EXPECT_ERR(EFAULT, SYS_writev, p[1], KERNEL, 1);      /* the array itself in the kernel area */
  EXPECT_ERR(EFAULT, SYS_writev, p[1], HOLE, 1);
  struct iovec *tail = (struct iovec *)(edge_page() + 4096 - sizeof(struct iovec));
  *tail = ok;
  EXPECT_ERR(EFAULT, SYS_writev, p[1], tail, 2);         /* the array runs off its mapping */
  struct iovec huge[2] = {{buf, 4}, {buf, (size_t)SSIZE_MAX + 1}};
  EXPECT_ERR(EINVAL, SYS_writev, p[1], huge, 2);         /* a length that is negative as ssize_t */
  struct iovec kern[2] = {{KERNEL, 16}, {buf, 4}};
  EXPECT_ERR(EFAULT, SYS_writev, p[1], kern, 2);
  struct iovec wrap = {(void *)-8L, 16};
  EXPECT_ERR(EFAULT, SYS_writev, p[1], &wrap, 1);
  CHECK(write(p[1], buf, 16) == 16);
  EXPECT_ERR(EFAULT, SYS_readv, p[0], kern, 2);          /* never written into the kernel area */
  struct iovec ro = {(void *)&iovec_class, 16};          /* read-only code */
  EXPECT_ERR(EFAULT, SYS_readv, p[0], &ro, 1);
  char out[16];
  CHECK(read(p[0], out, 16) == 16 && !memcmp(out, buf, 16)); /* the pipe kept its data */
  close(p[0]);
  close(p[1]);
}

static void msghdr_class(void) {
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
  char byte = 'x';
  struct iovec iov = {&byte, 1};
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  EXPECT_ERR(EFAULT, SYS_sendmsg, sv[0], KERNEL, 0);
  EXPECT_ERR(EFAULT, SYS_recvmsg, sv[0], HOLE, 0);
  m.msg_iovlen = 1025;
  EXPECT_ERR(EMSGSIZE, SYS_sendmsg, sv[0], &m, 0);
  m.msg_iovlen = 1;
  m.msg_iov = KERNEL;
  EXPECT_ERR(EFAULT, SYS_sendmsg, sv[0], &m, 0);
  m.msg_iov = &iov;
  m.msg_control = KERNEL;
  m.msg_controllen = 64;
  EXPECT_ERR(EFAULT, SYS_sendmsg, sv[0], &m, 0);
  m.msg_controllen = (size_t)INT_MAX + 1;
  EXPECT_ERR(ENOBUFS, SYS_sendmsg, sv[0], &m, 0);
  /* Control messages whose lengths lie. */
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(300 * sizeof(int))];
  } c;
  memset(&c, 0, sizeof c);
  m.msg_control = &c;
  c.h.cmsg_level = SOL_SOCKET;
  c.h.cmsg_type = SCM_RIGHTS;
  m.msg_controllen = CMSG_SPACE(sizeof(int));
  c.h.cmsg_len = CMSG_LEN(sizeof(int)) + 64;             /* longer than the buffer */
  EXPECT_ERR(EINVAL, SYS_sendmsg, sv[0], &m, 0);
  c.h.cmsg_len = sizeof(struct cmsghdr) - 1;             /* shorter than its header */
  EXPECT_ERR(EINVAL, SYS_sendmsg, sv[0], &m, 0);
  c.h.cmsg_len = CMSG_LEN(sizeof(int));
  *(int *)CMSG_DATA(&c.h) = -1;                          /* not an fd */
  EXPECT_ERR(EBADF, SYS_sendmsg, sv[0], &m, 0);
  *(int *)CMSG_DATA(&c.h) = 1000000;
  EXPECT_ERR(EBADF, SYS_sendmsg, sv[0], &m, 0);
  m.msg_controllen = CMSG_SPACE(300 * sizeof(int));      /* past SCM_MAX_FD (253) */
  c.h.cmsg_len = CMSG_LEN(300 * sizeof(int));
  for (int i = 0; i < 300; i++) ((int *)CMSG_DATA(&c.h))[i] = 0;
  EXPECT_ERR(EINVAL, SYS_sendmsg, sv[0], &m, 0);
  /* A name longer than any address. */
  m.msg_control = NULL;
  m.msg_controllen = 0;
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  m.msg_name = &un;
  m.msg_namelen = 4096;
  EXPECT_ERR(EINVAL, SYS_sendmsg, sv[0], &m, 0);
  m.msg_name = NULL;
  m.msg_namelen = 0;
  /* A passed fd that arrives where the receiver's control buffer is too small: MSG_CTRUNC. */
  c.h.cmsg_len = CMSG_LEN(sizeof(int));
  m.msg_control = &c;
  m.msg_controllen = CMSG_SPACE(sizeof(int));
  *(int *)CMSG_DATA(&c.h) = sv[0];
  CHECK(syscall(SYS_sendmsg, sv[0], &m, 0) == 1);
  char small[sizeof(struct cmsghdr)];
  struct msghdr r = {0};
  r.msg_iov = &iov;
  r.msg_iovlen = 1;
  r.msg_control = small;
  r.msg_controllen = sizeof small;
  CHECK(syscall(SYS_recvmsg, sv[1], &r, 0) == 1 && (r.msg_flags & MSG_CTRUNC));
  /* recvmmsg/sendmmsg: a vector in the kernel area, a vlen past UIO_MAXIOV is cut to it. */
  EXPECT_ERR(EFAULT, SYS_sendmmsg, sv[0], KERNEL, 1, 0);
  close(sv[0]);
  close(sv[1]);
}

static void sockaddr_class(void) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK(s >= 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  EXPECT_ERR(EINVAL, SYS_bind, s, &un, 0);
  EXPECT_ERR(EINVAL, SYS_bind, s, &un, 1);
  EXPECT_ERR(EINVAL, SYS_bind, s, &un, 4096);           /* past sizeof(struct sockaddr_storage) */
  EXPECT_ERR(EINVAL, SYS_bind, s, &un, -1);
  EXPECT_ERR(EFAULT, SYS_bind, s, KERNEL, sizeof un);
  EXPECT_ERR(EFAULT, SYS_connect, s, HOLE, sizeof un);
  EXPECT_ERR(EFAULT, SYS_connect, s, edge_page() + 4096 - 4, sizeof un);
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  socklen_t len = (socklen_t)-1;
  char addr[64];
  EXPECT_ERR(EINVAL, SYS_getsockname, sv[0], addr, &len); /* a negative length */
  EXPECT_ERR(EFAULT, SYS_getsockname, sv[0], addr, KERNEL);
  len = sizeof addr;
  EXPECT_ERR(EFAULT, SYS_getpeername, sv[0], KERNEL, &len);
  /* A short buffer: cut to it, the full length reported, nothing written past it. */
  memset(addr, 0x5a, sizeof addr);
  len = 1;
  CHECK(syscall(SYS_getsockname, sv[0], addr, &len) == 0 && len == sizeof(sa_family_t) && addr[1] == 0x5a);
  len = 1;
  EXPECT_ERR(EFAULT, SYS_getsockopt, sv[0], SOL_SOCKET, SO_TYPE, KERNEL, &len);
  len = 4;
  EXPECT_ERR(EFAULT, SYS_getsockopt, sv[0], SOL_SOCKET, SO_TYPE, KERNEL, &len);
  EXPECT_ERR(EFAULT, SYS_setsockopt, sv[0], SOL_SOCKET, SO_RCVBUF, KERNEL, 4);
  EXPECT_ERR(EINVAL, SYS_setsockopt, sv[0], SOL_SOCKET, SO_RCVBUF, addr, 1);
  close(sv[0]);
  close(sv[1]);
  close(s);
}

static void poll_class(void) {
  int ep = epoll_create1(0);
  CHECK(ep >= 0);
  int p[2];
  CHECK(pipe(p) == 0);
  struct epoll_event ev = {.events = EPOLLIN};
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0);
  EXPECT_ERR(EFAULT, SYS_epoll_ctl, ep, EPOLL_CTL_ADD, p[1], KERNEL);
  EXPECT_ERR(EINVAL, SYS_epoll_wait, ep, &ev, 0, 0);
  EXPECT_ERR(EINVAL, SYS_epoll_wait, ep, &ev, -1, 0);
  EXPECT_ERR(EINVAL, SYS_epoll_wait, ep, &ev, INT_MAX / (int)sizeof ev + 1, 0);
  EXPECT_ERR(EFAULT, SYS_epoll_wait, ep, KERNEL, 4, 0);
  EXPECT_ERR(EFAULT, SYS_epoll_wait, ep, (void *)-16L, 4, 0); /* wraps */
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  struct pollfd pf = {p[0], POLLIN, 0};
  EXPECT_ERR(EINVAL, SYS_poll, &pf, rl.rlim_cur + 1, 0);
  EXPECT_ERR(EINVAL, SYS_poll, &pf, 0xffffffffu, 0);
  EXPECT_ERR(EFAULT, SYS_poll, KERNEL, 1, 0);
  EXPECT_ERR(EFAULT, SYS_poll, edge_page() + 4096 - sizeof pf, 2, 0);
  CHECK(write(p[1], "x", 1) == 1);
  EXPECT_ERR(EFAULT, SYS_epoll_wait, ep, HOLE, 4, 0);    /* an event to write: Linux faults too */
  struct epoll_event got[2];
  CHECK(syscall(SYS_epoll_wait, ep, got, 2, 0) == 1 && got[0].events == EPOLLIN);
  CHECK(syscall(SYS_poll, &pf, 1, 0) == 1 && pf.revents == POLLIN);
  close(ep);
  close(p[0]);
  close(p[1]);
}

static void select_class(void) {
  /* fd 1500: past FD_SETSIZE, where glibc's fd_set ends. */
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_cur < 1501 && rl.rlim_max >= 1501) {
    rl.rlim_cur = 1501;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
  }
  int p[2];
  CHECK(pipe(p) == 0);
  const int high = 1500;
  if (dup2(p[1], high) != high) {
    fprintf(stderr, "select: no fd %d (RLIMIT_NOFILE %llu): part skipped\n", high, (unsigned long long)rl.rlim_cur);
    close(p[0]);
    close(p[1]);
    return;
  }
  uint64_t sets[3][64];
  memset(sets, 0, sizeof sets);
  sets[1][high / 64] = 1ull << (high % 64);
  sets[1][40] = 0xa5a5a5a5a5a5a5a5ull; /* past nfds' words: never read nor written */
  CHECK(syscall(SYS_select, 2000, NULL, sets[1], NULL, NULL) == 1);
  CHECK(sets[1][high / 64] == 1ull << (high % 64) && sets[1][40] == 0xa5a5a5a5a5a5a5a5ull);
  EXPECT_ERR(EINVAL, SYS_select, -1, NULL, NULL, NULL, NULL);
  /* A set running off its mapping, one in the kernel area. */
  EXPECT_ERR(EFAULT, SYS_select, 2000, NULL, edge_page() + 4096 - 64, NULL, NULL);
  EXPECT_ERR(EFAULT, SYS_select, 2000, KERNEL, NULL, NULL, NULL);
  /* A huge nfds is cut to the fd table: only its words are read. */
  memset(sets, 0, sizeof sets);
  sets[1][high / 64] = 1ull << (high % 64);
  CHECK(syscall(SYS_select, INT_MAX, NULL, sets[1], NULL, NULL) == 1);
  struct timespec zero = {0, 0};
  memset(sets, 0, sizeof sets);
  sets[0][high / 64] = 1ull << (high % 64); /* a write end: never readable */
  CHECK(syscall(SYS_pselect6, high + 1, sets[0], NULL, NULL, &zero, NULL) == 0);
  close(high);
  close(p[0]);
  close(p[1]);
}

static void futex_class(void) {
  static uint32_t word = 7;
  struct timespec ts = {0, 1000};
  EXPECT_ERR(EINVAL, SYS_futex, (char *)&word + 1, FUTEX_WAIT, 7, &ts, NULL, 0); /* unaligned */
  EXPECT_ERR(EFAULT, SYS_futex, KERNEL, FUTEX_WAIT, 0, &ts, NULL, 0);
  EXPECT_ERR(EFAULT, SYS_futex, HOLE, FUTEX_WAIT, 0, &ts, NULL, 0);
  EXPECT_ERR(EAGAIN, SYS_futex, &word, FUTEX_WAIT, 8, &ts, NULL, 0);
  EXPECT_ERR(EFAULT, SYS_futex, &word, FUTEX_WAIT, 7, KERNEL, NULL, 0);   /* the timeout */
  struct timespec bad = {0, 1000000000};
  EXPECT_ERR(EINVAL, SYS_futex, &word, FUTEX_WAIT, 7, &bad, NULL, 0);
  struct timespec centuries = {LONG_MAX, 0};
  EXPECT_ERR(EAGAIN, SYS_futex, &word, FUTEX_WAIT, 8, &centuries, NULL, 0);
  EXPECT_ERR(ETIMEDOUT, SYS_futex, &word, FUTEX_WAIT, 7, &ts, NULL, 0);
  /* WAKE_OP writes its second word: never into the kernel area, code, or unaligned. */
  EXPECT_ERR(EFAULT, SYS_futex, &word, FUTEX_WAKE_OP, 1, 1, KERNEL, FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0));
  EXPECT_ERR(EFAULT, SYS_futex, &word, FUTEX_WAKE_OP, 1, 1, (void *)&futex_class, FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0));
  EXPECT_ERR(EINVAL, SYS_futex, &word, FUTEX_WAKE_OP, 1, 1, (char *)&word + 2, FUTEX_OP(FUTEX_OP_SET, 1, FUTEX_OP_CMP_EQ, 0));
  EXPECT_ERR(EFAULT, SYS_futex, &word, FUTEX_CMP_REQUEUE, 1, 1, KERNEL, 7);
  EXPECT_ERR(EINVAL, SYS_futex, &word, FUTEX_CMP_REQUEUE, 1, 1, (char *)&word + 1, 7);
  EXPECT_ERR(EFAULT, SYS_futex, KERNEL, FUTEX_WAKE, 1, NULL, NULL, 0);
  EXPECT_ERR(EFAULT, SYS_futex, HOLE, FUTEX_WAKE, 1, NULL, NULL, 0);        /* shared: must be mapped */
  CHECK(syscall(SYS_futex, HOLE, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == 0); /* private: a user address is enough */
  CHECK(syscall(SYS_futex, &word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0) == 0);
  CHECK(word == 7);
}

static void on_usr1(int sig) { (void)sig; }

/* A child whose alternate signal stack is at `stack`: the signal frame cannot be written there,
 * so the child dies of SIGSEGV, as on Linux; kvmserver writes nothing there. */
static void altstack_child(void *stack) {
  pid_t pid = fork();
  if (pid == 0) {
    stack_t ss = {.ss_sp = stack, .ss_size = 65536, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) _exit(3);
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    _exit(4);
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV) {
    fprintf(stderr, "altstack at %p: child status 0x%x, want SIGSEGV\n", stack, status);
    fails++;
  }
}

static void sigaltstack_class(void) {
  stack_t ss = {.ss_sp = edge_page(), .ss_size = 1024, .ss_flags = 0};
  EXPECT_ERR(ENOMEM, SYS_sigaltstack, &ss, NULL);        /* smaller than MINSIGSTKSZ */
  ss.ss_size = 65536;
  ss.ss_flags = 0x1234;
  EXPECT_ERR(EINVAL, SYS_sigaltstack, &ss, NULL);
  EXPECT_ERR(EFAULT, SYS_sigaltstack, KERNEL, NULL);
  EXPECT_ERR(EFAULT, SYS_sigaltstack, NULL, KERNEL);
  EXPECT_ERR(EINVAL, SYS_rt_sigaction, SIGUSR1, NULL, NULL, 4); /* sigsetsize */
  EXPECT_ERR(EINVAL, SYS_rt_sigaction, 0, NULL, NULL, 8);
  EXPECT_ERR(EINVAL, SYS_rt_sigaction, 65, NULL, NULL, 8);
  struct { void *handler; unsigned long flags; void *restorer; uint64_t mask; } act = {(void *)on_usr1, 0, NULL, 0};
  EXPECT_ERR(EINVAL, SYS_rt_sigaction, SIGKILL, &act, NULL, 8);
  EXPECT_ERR(EINVAL, SYS_rt_sigaction, SIGSTOP, &act, NULL, 8);
  altstack_child((char *)KERNEL + 0x4000);              /* the exception stacks */
  altstack_child(HOLE);
}

/* struct robust_list_head as the kernel reads it. */
struct robust_head {
  void *next;
  long futex_offset;
  void *pending;
};
struct robust_lock {
  void *next;
  uint32_t word;
};

static struct robust_head rhead;
static struct robust_lock held, other, looped;

static void *robust_thread(void *arg) {
  (void)arg;
  const uint32_t tid = (uint32_t)syscall(SYS_gettid);
  /* held: owned by this thread with a waiter; other: someone else's; looped points at itself. */
  held.word = tid | FUTEX_WAITERS;
  other.word = tid + 1;
  held.next = &other;
  other.next = &looped;
  looped.next = &looped;
  rhead.next = &held;
  rhead.futex_offset = (long)offsetof(struct robust_lock, word);
  rhead.pending = NULL;
  if (syscall(SYS_set_robust_list, &rhead, sizeof rhead) != 0) return (void *)1;
  return NULL; /* the exit walks the list: Linux stops after ROBUST_LIST_LIMIT entries */
}

static void *robust_kernel_thread(void *arg) {
  (void)arg;
  /* Entries whose futex words are in the kernel area: nothing is written there. */
  static struct robust_head h;
  static struct robust_lock e;
  e.next = &h;
  h.next = &e;
  h.futex_offset = (long)((uintptr_t)KERNEL - (uintptr_t)&e);
  h.pending = (char *)KERNEL + 0x2000 - h.futex_offset;
  if (syscall(SYS_set_robust_list, &h, sizeof h) != 0) return (void *)1;
  return NULL;
}

static void *lock_and_end(void *m) {
  pthread_mutex_lock(m);
  return NULL;
}

static void robust_class(void) {
  EXPECT_ERR(EINVAL, SYS_set_robust_list, &rhead, sizeof rhead + 1);
  EXPECT_ERR(EFAULT, SYS_get_robust_list, 0, KERNEL, &(size_t){0});
  pthread_t t;
  void *rc = (void *)1;
  CHECK(pthread_create(&t, NULL, robust_thread, NULL) == 0 && pthread_join(t, &rc) == 0 && rc == NULL);
  /* The lock the thread held is marked as its owner's death (its waiter bit kept). */
  CHECK(held.word == (FUTEX_OWNER_DIED | FUTEX_WAITERS));
  CHECK((other.word & FUTEX_OWNER_DIED) == 0);
  rc = (void *)1;
  CHECK(pthread_create(&t, NULL, robust_kernel_thread, NULL) == 0 && pthread_join(t, &rc) == 0 && rc == NULL);
  /* A robust pthread mutex whose owner thread ends: the next locker gets EOWNERDEAD. */
  static pthread_mutex_t m;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&m, &a);
  CHECK(pthread_create(&t, NULL, lock_and_end, &m) == 0 && pthread_join(t, NULL) == 0);
  int r = pthread_mutex_lock(&m);
  CHECK(r == EOWNERDEAD);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&m);
    pthread_mutex_unlock(&m);
  }
}

static void execve_class(void) {
  char *argv_kernel[] = {"x", KERNEL, NULL};
  char *envp[] = {NULL};
  EXPECT_ERR(EFAULT, SYS_execve, "/proc/self/exe", KERNEL, envp);
  EXPECT_ERR(EFAULT, SYS_execve, "/proc/self/exe", argv_kernel, envp);
  EXPECT_ERR(EFAULT, SYS_execve, "/proc/self/exe", envp, argv_kernel);
  EXPECT_ERR(EFAULT, SYS_execve, KERNEL, envp, envp);
  /* argv without its NULL, running into an unmapped page. */
  char **tail = (char **)(edge_page() + 4096 - 2 * sizeof(char *));
  tail[0] = tail[1] = "x";
  EXPECT_ERR(EFAULT, SYS_execve, "/proc/self/exe", tail, envp);
}

static void getdents_class(void) {
  int d = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
  CHECK(d >= 0);
  char buf[4096];
  EXPECT_ERR(EINVAL, SYS_getdents64, d, buf, 1);         /* no room for one entry */
  EXPECT_ERR(EFAULT, SYS_getdents64, d, KERNEL, sizeof buf);
  EXPECT_ERR(EFAULT, SYS_getdents64, d, HOLE, sizeof buf);
  EXPECT_ERR(EFAULT, SYS_getdents64, d, (void *)&getdents_class, sizeof buf); /* read-only */
  EXPECT_ERR(ENOTDIR, SYS_getdents64, 1 /* not a directory */, buf, sizeof buf);
  long n = syscall(SYS_getdents64, d, buf, sizeof buf);
  CHECK(n > 0 && n <= (long)sizeof buf);
  close(d);
}

static void ioctl_class(void) {
  int p[2];
  CHECK(pipe(p) == 0);
  CHECK(write(p[1], "abc", 3) == 3);
  EXPECT_ERR(EFAULT, SYS_ioctl, p[0], FIONREAD, KERNEL);
  EXPECT_ERR(EFAULT, SYS_ioctl, p[0], FIONREAD, (void *)&ioctl_class);
  EXPECT_ERR(EFAULT, SYS_ioctl, p[0], FIONBIO, KERNEL);
  EXPECT_ERR(ENOTTY, SYS_ioctl, p[0], TCGETS, KERNEL);   /* not a terminal: before the pointer */
  EXPECT_ERR(ENOTTY, SYS_ioctl, p[0], TIOCGWINSZ, HOLE);
  EXPECT_ERR(ENOTTY, SYS_ioctl, p[0], 0xdeadbeef, KERNEL);
  int n = 0;
  CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 3);
  close(p[0]);
  close(p[1]);
}

static void ranges_class(void) {
  char *page = edge_page();
  EXPECT_ERR(EINVAL, SYS_munmap, (void *)0xfffffffffffff000ull, 0x2000);
  EXPECT_ERR(EINVAL, SYS_munmap, page, (size_t)-4096);
  EXPECT_ERR(ENOMEM, SYS_mprotect, page, (size_t)-8192, PROT_READ);
  EXPECT_ERR(EINVAL, SYS_madvise, page, (size_t)-8192, MADV_DONTNEED);
  EXPECT_ERR(EINVAL, SYS_mremap, page, 4096, (size_t)-8192, 0);
  EXPECT_ERR(ENOMEM, SYS_mmap, (void *)0xfffffffffffff000ull, 0x2000, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  EXPECT_ERR(ENOMEM, SYS_mmap, NULL, (size_t)-4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int p[2];
  CHECK(pipe2(p, O_NONBLOCK) == 0 && write(p[1], "0123456789abcdef", 16) == 16);
  EXPECT_ERR(EFAULT, SYS_read, p[0], page, 1ull << 63);   /* addr + len wraps */
  EXPECT_ERR(EFAULT, SYS_write, p[1], page, (size_t)-1);
  EXPECT_ERR(EFAULT, SYS_read, p[0], HOLE, 16);
  EXPECT_ERR(EFAULT, SYS_read, p[0], (void *)0x8000000000ull, 16); /* the kernel area's guest-physical address */
  EXPECT_ERR(EFAULT, SYS_write, p[1], (void *)0x7fffffffff00ull, 16);
  char out[16];
  CHECK(read(p[0], out, 16) == 16);
  /* Still usable after all that. */
  page[4095] = 1;
  CHECK(mprotect(page, 4096, PROT_READ) == 0 && mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0);
  close(p[0]);
  close(p[1]);
}

/* The page below the vDSO is where kvmserver's vDSO reads the clocks: guest memory. A program that
 * maps over it with nonsense (a shift of 255, a huge rate) breaks its own vDSO but not the clock
 * syscalls: the host never reads its values back. Raw syscalls only, in a child. */
static void clock_class(void) {
  const uintptr_t vdso = getauxval(AT_SYSINFO_EHDR);
  if (!vdso) return;
  pid_t pid = fork();
  if (pid == 0) {
    struct timespec before, after;
    if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &before) != 0) _exit(3);
    uint32_t *page = mmap((void *)(vdso - 4096), 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (page == MAP_FAILED) { /* Linux refuses to split its vvar (EINVAL) or has sealed it (EPERM): no attack */
      fprintf(stderr, "clock: the page below the vDSO cannot be replaced (errno %d)\n", errno);
      _exit(errno == EPERM || errno == EINVAL ? 0 : 4);
    }
    memset(page, 0xff, 4096);
    page[0] = 2; /* an even sequence number: "consistent" */
    for (int i = 0; i < 3; i++) {
      if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &after) != 0) _exit(5);
      const long long ns = (after.tv_sec - before.tv_sec) * 1000000000ll + (after.tv_nsec - before.tv_nsec);
      if (ns < 0 || ns > 30000000000ll) _exit(6);   /* went back, or jumped 30 s */
      struct timespec real;
      if (syscall(SYS_clock_gettime, CLOCK_REALTIME, &real) != 0 || real.tv_sec < 1600000000 || real.tv_sec > 5000000000) _exit(7);
      struct timespec nap = {0, 400000000};
      syscall(SYS_nanosleep, &nap, NULL);           /* long enough for the host to refresh the page */
    }
    _exit(0);
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "clock: child status 0x%x (exit 6/7: a clock the host read from the page)\n", status);
    fails++;
  }
}

static const struct {
  const char *name;
  void (*run)(void);
} sections[] = {
    {"iovec", iovec_class},       {"msghdr", msghdr_class},   {"sockaddr", sockaddr_class},
    {"poll", poll_class},         {"select", select_class},   {"futex", futex_class},
    {"sigaltstack", sigaltstack_class}, {"robust", robust_class}, {"execve", execve_class},
    {"getdents", getdents_class}, {"ioctl", ioctl_class},     {"ranges", ranges_class},
    {"clock", clock_class},
};

int main(int argc, char **argv) {
  int ran = 0;
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
    if (argc > 1 && strcmp(argv[1], sections[i].name)) continue;
    const int before = fails;
    sections[i].run();
    if (fails != before) fprintf(stderr, "section %s: %d failed\n", sections[i].name, fails - before);
    ran++;
  }
  if (!ran) {
    fprintf(stderr, "no section %s\n", argv[1]);
    return 2;
  }
  if (fails) return 1;
  printf("ok guest_values\n");
  return 0;
}

/* misc: getpid/gettid/getppid/get[e]uid/get[e]gid, uname, getrandom, sched_getaffinity/sched_yield,
 * prlimit64/getrlimit, sysinfo, arch_prctl(ARCH_GET_FS), set_tid_address, rt_sigaction and
 * rt_sigprocmask round trips, register preservation across syscall, and unknown syscalls (ENOSYS).
 *
 * Usage: misc */
#include "check.h"

#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

#ifndef ARCH_SET_FS
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#endif

/* The kernel's struct sigaction for rt_sigaction (libc's differs). */
struct ksigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)(void);
  uint64_t mask;
};
#define K_SA_RESTORER 0x04000000UL

static void test_ids(void) {
  pid_t pid = getpid();
  CHECK(pid > 0);
  CHECK(syscall(SYS_getpid) == pid);
  CHECK(syscall(SYS_gettid) == pid); /* single-threaded: tid == pid */
  CHECK(getppid() >= 0);
  CHECK(getuid() == geteuid());
  CHECK(getgid() == getegid());
  CHECK((long)getuid() == syscall(SYS_getuid));
  CHECK((long)getgid() == syscall(SYS_getgid));
  int x;
  CHECK(syscall(SYS_set_tid_address, &x) == pid);
}

static void test_uname(void) {
  struct utsname u;
  memset(&u, 0x7f, sizeof u);
  CHECK(uname(&u) == 0);
  CHECK(strcmp(u.sysname, "Linux") == 0);
  CHECK(strcmp(u.machine, "x86_64") == 0);
  CHECK(u.release[0] >= '2' && u.release[0] <= '9'); /* e.g. "6.1.0"; glibc checks it is >= 3.2 */
  CHECK(strchr(u.release, '.') != NULL);
  CHECK(memchr(u.nodename, 0, sizeof u.nodename) != NULL);
  CHECK(memchr(u.version, 0, sizeof u.version) != NULL);
  CHECK(memchr(u.release, 0, sizeof u.release) != NULL);
  CHECK(syscall(SYS_uname, &u) == 0 && strcmp(u.sysname, "Linux") == 0);
}

static void test_getrandom(void) {
  unsigned char a[32], b[32], zero[32] = {0};
  memset(a, 0, sizeof a);
  memset(b, 0, sizeof b);
  CHECK(syscall(SYS_getrandom, a, sizeof a, 0) == 32);
  CHECK(syscall(SYS_getrandom, b, sizeof b, 1 /* GRND_NONBLOCK */) == 32);
  CHECK(memcmp(a, zero, 32) != 0);
  CHECK(memcmp(a, b, 32) != 0); /* fresh bytes each call */
  /* A larger request: short reads are allowed above 256 bytes, but never zero. */
  static unsigned char big[1 << 16];
  long n = syscall(SYS_getrandom, big, sizeof big, 0);
  CHECK(n >= 256 && n <= (long)sizeof big);
  int counts[256] = {0};
  for (long i = 0; i < n; i++) counts[big[i]]++;
  int distinct = 0;
  for (int i = 0; i < 256; i++) distinct += counts[i] != 0;
  CHECK(distinct > 200); /* looks random, not a constant or a counter stuck at a few values */
  CHECK(syscall(SYS_getrandom, a, 0, 0) == 0);
  CHECK_ERR(syscall(SYS_getrandom, a, sizeof a, 0x40000000), EINVAL);
}

static void test_sched(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  long n = syscall(SYS_sched_getaffinity, 0, sizeof set, &set);
  CHECK(n > 0 && n <= (long)sizeof set && n % 8 == 0); /* returns the kernel's mask size */
  CHECK(CPU_COUNT(&set) >= 1);
  CPU_ZERO(&set);
  CHECK(sched_getaffinity(0, sizeof set, &set) == 0);
  CHECK(CPU_COUNT(&set) >= 1);
  CHECK(sched_yield() == 0);
  CHECK(syscall(SYS_sched_yield) == 0);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  CHECK(ncpu >= 1);
}

static void test_rlimits(void) {
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  CHECK(rl.rlim_cur >= 64 && rl.rlim_cur <= rl.rlim_max);
  CHECK(getrlimit(RLIMIT_STACK, &rl) == 0);
  CHECK(rl.rlim_cur >= 1 << 20 || rl.rlim_cur == RLIM_INFINITY);
  struct rlimit old;
  CHECK(syscall(SYS_prlimit64, 0, RLIMIT_STACK, NULL, &old) == 0);
  CHECK(old.rlim_cur == rl.rlim_cur && old.rlim_max == rl.rlim_max);
  CHECK(syscall(SYS_getrlimit, RLIMIT_AS, &rl) == 0);
  CHECK(rl.rlim_cur <= rl.rlim_max);
  CHECK(syscall(SYS_prlimit64, 0, RLIMIT_CORE, NULL, &rl) == 0);
  CHECK_ERR(syscall(SYS_prlimit64, 0, 1000, NULL, &rl), EINVAL);
}

static void test_sysinfo(void) {
  struct sysinfo si;
  memset(&si, 0, sizeof si);
  CHECK(sysinfo(&si) == 0);
  CHECK(si.totalram > 0);
  CHECK(si.mem_unit >= 1);
  CHECK(si.freeram <= si.totalram);
  CHECK(si.uptime < 100L * 365 * 86400);
  CHECK(si.procs >= 1);
}

static void test_arch_prctl(void) {
  uintptr_t fs = 0, self = 0;
  CHECK(syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) == 0);
  CHECK(fs != 0);
  /* On x86-64 both glibc and musl keep a self-pointer at %fs:0. */
  __asm__ volatile("mov %%fs:0, %0" : "=r"(self));
  CHECK(self == fs);
  /* Setting it to the same value again is harmless and reads back. */
  CHECK(syscall(SYS_arch_prctl, ARCH_SET_FS, fs) == 0);
  uintptr_t fs2 = 0;
  CHECK(syscall(SYS_arch_prctl, ARCH_GET_FS, &fs2) == 0 && fs2 == fs);
  CHECK_ERR(syscall(SYS_arch_prctl, 0x9999, &fs2), EINVAL);
}

static void handler(int sig) { (void)sig; }
static void handler2(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)si;
  (void)uc;
}

static void test_signals(void) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR2);
  CHECK(sigaction(SIGUSR1, &sa, &old) == 0);
  CHECK(old.sa_handler == SIG_DFL);
  memset(&old, 0, sizeof old);
  CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
  CHECK(old.sa_handler == handler);
  CHECK(old.sa_flags & SA_RESTART);
  CHECK(sigismember(&old.sa_mask, SIGUSR2) == 1);
  CHECK(sigismember(&old.sa_mask, SIGTERM) == 0);

  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = handler2;
  sa.sa_flags = SA_SIGINFO;
  CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
  CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
  CHECK(old.sa_sigaction == handler2 && (old.sa_flags & SA_SIGINFO));

  sa.sa_handler = SIG_IGN;
  sa.sa_flags = 0;
  CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
  CHECK(sigaction(SIGUSR1, NULL, &old) == 0 && old.sa_handler == SIG_IGN);
  sa.sa_handler = SIG_DFL;
  CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);

  /* The raw syscall, with the kernel's layout. */
  struct ksigaction k = {handler, K_SA_RESTORER | SA_RESTART, (void (*)(void))handler, 1UL << (SIGINT - 1)},
                    kold;
  memset(&kold, 0, sizeof kold);
  CHECK(syscall(SYS_rt_sigaction, SIGTERM, &k, NULL, 8) == 0);
  CHECK(syscall(SYS_rt_sigaction, SIGTERM, NULL, &kold, 8) == 0);
  CHECK(kold.handler == handler && kold.mask == (1UL << (SIGINT - 1)));
  CHECK((kold.flags & (K_SA_RESTORER | SA_RESTART)) == (K_SA_RESTORER | SA_RESTART));
  k.handler = SIG_DFL;
  k.flags = 0;
  k.mask = 0;
  CHECK(syscall(SYS_rt_sigaction, SIGTERM, &k, NULL, 8) == 0);
  CHECK_ERR(syscall(SYS_rt_sigaction, SIGTERM, &k, NULL, 4), EINVAL); /* wrong sigset size */

  /* SIGKILL and SIGSTOP cannot be caught; signal numbers out of range are refused. */
  sa.sa_handler = handler;
  CHECK_ERR(sigaction(SIGKILL, &sa, NULL), EINVAL);
  CHECK_ERR(sigaction(SIGSTOP, &sa, NULL), EINVAL);
  CHECK_ERR(syscall(SYS_rt_sigaction, 0, &k, NULL, 8), EINVAL);
  CHECK_ERR(syscall(SYS_rt_sigaction, 65, &k, NULL, 8), EINVAL);
  CHECK(sigaction(SIGKILL, NULL, &old) == 0); /* querying is allowed */

  /* rt_sigprocmask: block, query, unblock. SIGKILL/SIGSTOP are silently dropped from masks. */
  sigset_t set, cur;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGKILL);
  CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
  CHECK(sigprocmask(SIG_BLOCK, NULL, &cur) == 0);
  CHECK(sigismember(&cur, SIGUSR2) == 1);
  CHECK(sigismember(&cur, SIGKILL) == 0);
  CHECK(sigismember(&cur, SIGUSR1) == 0);
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  CHECK(sigprocmask(SIG_SETMASK, &set, &cur) == 0);
  CHECK(sigismember(&cur, SIGUSR2) == 1);
  CHECK(sigprocmask(SIG_UNBLOCK, &set, &cur) == 0);
  CHECK(sigismember(&cur, SIGHUP) == 1);
  CHECK(sigprocmask(SIG_BLOCK, NULL, &cur) == 0);
  CHECK(sigismember(&cur, SIGHUP) == 0 && sigismember(&cur, SIGUSR2) == 0);
  uint64_t kmask = 0, kold_mask = ~0UL;
  kmask = 1UL << (SIGALRM - 1);
  CHECK(syscall(SYS_rt_sigprocmask, SIG_BLOCK, &kmask, &kold_mask, 8) == 0);
  CHECK(syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &kold_mask, 8) == 0);
  CHECK(kold_mask & (1UL << (SIGALRM - 1)));
  CHECK(syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &kmask, NULL, 8) == 0);
  CHECK_ERR(syscall(SYS_rt_sigprocmask, 42, &kmask, NULL, 8), EINVAL);
  CHECK_ERR(syscall(SYS_rt_sigprocmask, SIG_BLOCK, &kmask, NULL, 4), EINVAL);
}

static void test_unknown_syscalls(void) {
  CHECK_ERR(syscall(500), ENOSYS);
  CHECK_ERR(syscall(500, 1, 2, 3, 4, 5, 6), ENOSYS);
  CHECK_ERR(syscall(1000), ENOSYS);
  /* A raw syscall instruction with a huge number: -ENOSYS in rax, nothing else happens. */
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(0x7fffffffL) : "rcx", "r11", "memory");
  CHECK(ret == -ENOSYS);
  __asm__ volatile("syscall" : "=a"(ret) : "a"(-1L) : "rcx", "r11", "memory");
  CHECK(ret == -ENOSYS);
}

/* syscall clobbers only rax, rcx and r11: every other general-purpose register, and the flags,
 * survive. regs_across_syscall(in, out) loads rbx rbp r12-r15 rdx r8-r10 rsi rdi from in[0..11],
 * sets CF, calls getpid, and stores them to out[0..11], with CF after the call in out[12]. */
void regs_across_syscall(const uint64_t *in, uint64_t *out);
__asm__(".text\n"
        ".globl regs_across_syscall\n"
        ".type regs_across_syscall, @function\n"
        "regs_across_syscall:\n"
        "  push %rbp\n  push %rbx\n  push %r12\n  push %r13\n  push %r14\n  push %r15\n"
        "  push %rsi\n"
        "  mov 0(%rdi), %rbx\n  mov 8(%rdi), %rbp\n  mov 16(%rdi), %r12\n  mov 24(%rdi), %r13\n"
        "  mov 32(%rdi), %r14\n  mov 40(%rdi), %r15\n  mov 48(%rdi), %rdx\n  mov 56(%rdi), %r8\n"
        "  mov 64(%rdi), %r9\n  mov 72(%rdi), %r10\n  mov 80(%rdi), %rsi\n  mov 88(%rdi), %rdi\n"
        "  mov $39, %eax\n"
        "  stc\n"
        "  syscall\n"
        "  setc %al\n  movzbl %al, %eax\n"
        "  push %rax\n  push %rdi\n  mov 16(%rsp), %rdi\n"
        "  mov %rbx, 0(%rdi)\n  mov %rbp, 8(%rdi)\n  mov %r12, 16(%rdi)\n  mov %r13, 24(%rdi)\n"
        "  mov %r14, 32(%rdi)\n  mov %r15, 40(%rdi)\n  mov %rdx, 48(%rdi)\n  mov %r8, 56(%rdi)\n"
        "  mov %r9, 64(%rdi)\n  mov %r10, 72(%rdi)\n  mov %rsi, 80(%rdi)\n"
        "  pop %rax\n  mov %rax, 88(%rdi)\n"
        "  pop %rax\n  mov %rax, 96(%rdi)\n"
        "  pop %rsi\n"
        "  pop %r15\n  pop %r14\n  pop %r13\n  pop %r12\n  pop %rbx\n  pop %rbp\n"
        "  ret\n"
        ".size regs_across_syscall, .-regs_across_syscall\n");

static void test_register_preservation(void) {
  uint64_t in[12], out[13];
  for (int i = 0; i < 12; i++) in[i] = (0x0101010101010101ULL * (uint64_t)(i + 1)) ^ 0x8000000000000000ULL;
  for (int round = 0; round < 100; round++) {
    memset(out, 0, sizeof out);
    regs_across_syscall(in, out);
    for (int i = 0; i < 12; i++) CHECK(out[i] == in[i]);
    CHECK(out[12] == 1); /* CF as set before the syscall */
    in[round % 12] = ~in[round % 12];
  }
}


/* Process groups and sessions (issue 12): setpgid for self and a child, joining a group, setsid
 * of a process that leads no group, kill(-pgid) reaching the group, and the errors. */
static void test_process_groups(void) {
  CHECK(getpgid(0) == getpgrp());
  CHECK(getsid(0) == getsid(getpid()));
  CHECK_ERR(setpgid(-1, 0), EINVAL);
  CHECK_ERR(setpgid(0, -1), EINVAL);
  CHECK_ERR(getpgid(0x3fffffff), ESRCH);
  int ready[2];
  CHECK(pipe(ready) == 0);
  pid_t leader = fork();
  CHECK(leader >= 0);
  if (leader == 0) {
    if (setpgid(0, 0) != 0 || getpgrp() != getpid()) _exit(2);
    if (setsid() != -1 || errno != EPERM) _exit(3); /* leads a group */
    pid_t member = fork();
    if (member < 0) _exit(4);
    if (member == 0) {
      if (getpgrp() != getppid()) _exit(5); /* inherited */
      struct timespec nap = {0, 10 * 1000 * 1000};
      for (int i = 0; i < 3000; i++) nanosleep(&nap, NULL); /* until the group is killed */
      _exit(6);
    }
    if (write(ready[1], "r", 1) != 1) _exit(7);
    struct timespec nap = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 3000; i++) nanosleep(&nap, NULL);
    _exit(8);
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  CHECK(getpgid(leader) == leader);
  CHECK(getsid(leader) == getsid(0));
  CHECK_ERR(setpgid(leader, 0x3ffffff0), EPERM); /* no such group */
  CHECK(kill(-leader, SIGTERM) == 0);
  int status = 0;
  CHECK(waitpid(leader, &status, 0) == leader);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  CHECK_ERR(kill(-0x3ffffff0, 0), ESRCH);
  /* A process that leads no group starts a session (and a group) of its own. */
  pid_t loner = fork();
  CHECK(loner >= 0);
  if (loner == 0) {
    pid_t sid = setsid();
    _exit(sid == getpid() && getsid(0) == getpid() && getpgrp() == getpid() ? 0 : 9);
  }
  CHECK(waitpid(loner, &status, 0) == loner);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(close(ready[0]) == 0 && close(ready[1]) == 0);
}

/* clone(2) making processes: on a stack of the caller's choosing (the child runs there, in a copy of
 * memory), with CLONE_PARENT (a sibling: its parent is the caller's), with no exit signal. */
static int clone_value = 1;
static int clone_child(void *arg) {
  clone_value = 99; /* the child's copy only */
  return *(int *)arg;
}

static int clone_sibling(void *arg) {
  (void)arg;
  return 5;
}

static void test_clone_processes(void) {
  static char stack[64 * 1024] __attribute__((aligned(16)));
  int code = 7;
  pid_t child = clone(clone_child, stack + sizeof stack, SIGCHLD, &code);
  CHECK(child > 0);
  int status;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 7);
  CHECK(clone_value == 1);

  int fds[2];
  CHECK(pipe(fds) == 0);
  child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    static char stack2[64 * 1024] __attribute__((aligned(16)));
    pid_t sibling = clone(clone_sibling, stack2 + sizeof stack2, CLONE_PARENT | SIGCHLD, 0);
    _exit(sibling > 0 && write(fds[1], &sibling, sizeof sibling) == sizeof sibling ? 0 : 1);
  }
  pid_t sibling = 0;
  CHECK(read(fds[0], &sibling, sizeof sibling) == sizeof sibling && sibling > 0);
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(waitpid(sibling, &status, 0) == sibling && WIFEXITED(status) && WEXITSTATUS(status) == 5);
  close(fds[0]);
  close(fds[1]);
  CHECK_ERR(clone(clone_sibling, stack + sizeof stack, CLONE_SIGHAND | SIGCHLD, 0), EINVAL);

  /* wait by process group: -pgid, 0 (ours), P_PGID; a group without children is ECHILD. One
   * child at a time is alive (each holds a copy of our memory): the first, in our group, has
   * ended (WNOWAIT leaves it to reap) when the second, in a group of its own, starts. */
  siginfo_t info;
  pid_t same_group = fork();
  CHECK(same_group >= 0);
  if (same_group == 0) _exit(12);
  CHECK(waitid(P_PID, same_group, &info, WEXITED | WNOWAIT) == 0 && info.si_pid == same_group);
  int ready[2];
  CHECK(pipe(ready) == 0);
  pid_t own_group = fork();
  CHECK(own_group >= 0);
  if (own_group == 0) {
    setpgid(0, 0);
    CHECK(write(ready[1], "g", 1) == 1);
    _exit(11);
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  CHECK(waitpid(-own_group, &status, 0) == own_group && WEXITSTATUS(status) == 11);
  CHECK(waitpid(0, &status, 0) == same_group && WEXITSTATUS(status) == 12);
  CHECK_ERR(waitpid(-own_group, &status, WNOHANG), ECHILD);
  CHECK_ERR(waitpid(INT32_MIN, &status, 0), ESRCH);
  CHECK_ERR(waitid(P_PGID, own_group + 1000, &info, WEXITED), ECHILD);
  close(ready[0]);
  close(ready[1]);
}

int main(void) {
  test_ids();
  test_uname();
  test_getrandom();
  test_sched();
  test_rlimits();
  test_sysinfo();
  test_arch_prctl();
  test_signals();
  test_unknown_syscalls();
  test_process_groups();
  test_clone_processes();
  test_register_preservation();
  guest_ok("misc");
  return 0;
}

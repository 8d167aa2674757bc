/* Signal delivery: handlers with SA_SIGINFO, masks and pending signals, faults delivered to handlers
 * (on the alternate stack, returning after fixing the cause, or leaving with siglongjmp), FPU state
 * kept across a handler, a signal to another thread interrupting its sleep, SIGPIPE's default action. */
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

static volatile sig_atomic_t got, got_pid, on_altstack, handler_tid;
static sigjmp_buf jump;
static char *page;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  got = sig;
  got_pid = si->si_pid;
}

static void on_segv_jump(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)si, (void)uc;
  stack_t ss;
  sigaltstack(0, &ss);
  on_altstack = (ss.ss_flags & SS_ONSTACK) != 0;
  siglongjmp(jump, 1);
}

static void on_segv_fix(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)uc;
  if ((char *)si->si_addr != page || si->si_code != SEGV_ACCERR) _exit(3);
  mprotect(page, 4096, PROT_READ | PROT_WRITE);
}

static void on_fpe(int sig) {
  got = sig;
  siglongjmp(jump, 2);
}

static void on_usr2(int sig) {
  (void)sig;
  handler_tid = syscall(SYS_gettid);
}

static void *sleeper(void *arg) {
  struct timespec ts = {20, 0};
  int rc = nanosleep(&ts, 0);
  *(int *)arg = (rc == -1 && errno == EINTR) ? 1 : 2;
  return 0;
}

/* ITIMER_REAL (issue 12): alarm's remaining seconds, SIGALRM ending a pause(), a periodic timer
 * interrupting code that makes no system call, getitimer, disarming, and the errors. */
static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
  (void)sig;
  alarms++;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_itimer_real(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  CHECK(sigaction(SIGALRM, &sa, 0) == 0);
  CHECK(alarm(0) == 0);
  CHECK(alarm(100) == 0);
  unsigned left = alarm(0);
  CHECK(left >= 99 && left <= 100);
  CHECK(alarm(0) == 0);

  struct itimerval t, old;
  memset(&t, 0, sizeof t);
  t.it_value.tv_usec = 50 * 1000;
  CHECK(setitimer(ITIMER_REAL, &t, &old) == 0);
  CHECK(old.it_value.tv_sec == 0 && old.it_value.tv_usec == 0);
  CHECK(getitimer(ITIMER_REAL, &old) == 0 && (old.it_value.tv_sec > 0 || old.it_value.tv_usec > 0));
  alarms = 0;
  CHECK(pause() == -1 && errno == EINTR);
  CHECK(alarms == 1);
  CHECK(getitimer(ITIMER_REAL, &old) == 0 && old.it_value.tv_sec == 0 && old.it_value.tv_usec == 0);

  /* Periodic, while this thread only computes. */
  t.it_interval.tv_usec = 20 * 1000;
  t.it_value.tv_usec = 20 * 1000;
  alarms = 0;
  CHECK(setitimer(ITIMER_REAL, &t, 0) == 0);
  const double give_up = now_s() + 20;
  volatile unsigned long spins = 0;
  while (alarms < 4 && now_s() < give_up) spins++;
  CHECK(alarms >= 4);
  memset(&t, 0, sizeof t);
  CHECK(setitimer(ITIMER_REAL, &t, &old) == 0);
  CHECK(old.it_interval.tv_usec == 20 * 1000);
  const int seen = alarms;
  struct timespec nap = {0, 100 * 1000 * 1000};
  nanosleep(&nap, 0);
  CHECK(alarms == seen); /* disarmed */

  t.it_value.tv_usec = 1000000;
  CHECK_ERR(setitimer(ITIMER_REAL, &t, 0), EINVAL);
  CHECK_ERR(setitimer(3, &t, 0), EINVAL);
  sa.sa_handler = SIG_DFL;
  CHECK(sigaction(SIGALRM, &sa, 0) == 0);
}

/* Signals landing while the process forks: the host's fork makes a new VM, and a signal kicking
 * the forking thread must not make that fail (it did: KVM_CREATE_VM returned EINTR, fork ENOMEM). */
static volatile sig_atomic_t usr1_count;
static void count_usr1(int sig) {
  (void)sig;
  usr1_count++;
}

static void test_fork_under_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = count_usr1;
  sa.sa_flags = SA_RESTART;
  CHECK(sigaction(SIGUSR1, &sa, 0) == 0);
  usr1_count = 0;
  fflush(stdout);
  pid_t parent = getpid();
  pid_t signaller = fork();
  CHECK(signaller >= 0);
  if (signaller == 0) {
    for (;;) {
      if (kill(parent, SIGUSR1) != 0) _exit(1);
      struct timespec pause_ts = {0, 200 * 1000};
      nanosleep(&pause_ts, 0);
    }
  }
  while (usr1_count == 0) sched_yield();
  for (int i = 0; i < 24; i++) {
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) _exit(7);
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
  }
  CHECK(kill(signaller, SIGKILL) == 0);
  int status;
  CHECK(waitpid(signaller, &status, 0) == signaller);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK(usr1_count > 0);
  signal(SIGUSR1, SIG_DFL);
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO;
  CHECK(sigaction(SIGUSR1, &sa, 0) == 0);
  CHECK(kill(getpid(), SIGUSR1) == 0);
  CHECK(got == SIGUSR1 && got_pid == getpid());

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  got = 0;
  CHECK(sigprocmask(SIG_BLOCK, &set, 0) == 0);
  CHECK(raise(SIGUSR1) == 0);
  CHECK(got == 0);
  sigset_t pending;
  CHECK(sigpending(&pending) == 0 && sigismember(&pending, SIGUSR1));
  CHECK(sigprocmask(SIG_UNBLOCK, &set, 0) == 0);
  CHECK(got == SIGUSR1);

  stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0};
  CHECK(sigaltstack(&ss, 0) == 0);
  sa.sa_sigaction = on_segv_jump;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  CHECK(sigaction(SIGSEGV, &sa, 0) == 0);
  volatile unsigned long bad_address = 16;
  if (sigsetjmp(jump, 1) == 0) {
    *(volatile int *)bad_address = 1;
    CHECK(!"no fault");
  }
  CHECK(on_altstack);

  page = mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(page != MAP_FAILED);
  sa.sa_sigaction = on_segv_fix;
  sa.sa_flags = SA_SIGINFO;
  CHECK(sigaction(SIGSEGV, &sa, 0) == 0);
  page[0] = 42;
  CHECK(page[0] == 42);

  signal(SIGFPE, on_fpe);
  volatile int zero = 0, seven = 7;
  got = 0;
  if (sigsetjmp(jump, 1) == 0) {
    volatile int q = seven / zero;
    (void)q;
    CHECK(!"no SIGFPE");
  }
  CHECK(got == SIGFPE);

  volatile double d = 1.5;
  CHECK(kill(getpid(), SIGUSR1) == 0);
  CHECK(d * 2 == 3.0);

  signal(SIGUSR2, on_usr2);
  int result = 0;
  pthread_t t;
  CHECK(pthread_create(&t, 0, sleeper, &result) == 0);
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, 0);
  CHECK(pthread_kill(t, SIGUSR2) == 0);
  CHECK(pthread_join(t, 0) == 0);
  CHECK(result == 1);
  CHECK(handler_tid != 0 && handler_tid != syscall(SYS_gettid));

  int fds[2];
  CHECK(pipe(fds) == 0);
  close(fds[0]);  /* no reader anywhere: the write must raise SIGPIPE */
  fflush(stdout);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    signal(SIGPIPE, SIG_DFL);
    write(fds[1], "x", 1);
    _exit(0);
  }
  close(fds[1]);
  int status;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE);
  test_itimer_real();
  test_fork_under_signals();
  guest_ok("signals");
  return 0;
}

/* Waiting for signals and timers that send them: sigsuspend, POSIX timers (timer_create and
 * friends: SIGEV_SIGNAL with overruns, SIGEV_THREAD_ID, SIGEV_NONE, absolute times, deletion),
 * signalfd (reads, readiness in poll, nonblocking reads, a new mask, SIGCHLD of a child), and
 * blocked signals whose disposition is "ignore" staying pending for sigwait, signals between
 * processes reaching handlers, SIGCHLD at a child's exit, the signal masks of ppoll/pselect/
 * epoll_pwait, sigwaitinfo of a signal that has a handler, PR_SET_PDEATHSIG. Passes natively;
 * kvmserver must give the same answers. */
#include "check.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

static volatile sig_atomic_t usr1_count, last_sig, handler_tid;
static volatile int last_overrun = -1, last_code;
static void *volatile last_value;

static void on_signal(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  last_sig = sig;
  last_code = si->si_code;
  last_overrun = si->si_code == SI_TIMER ? si->si_overrun : -1;
  last_value = si->si_value.sival_ptr;
  handler_tid = (sig_atomic_t)syscall(SYS_gettid);
  if (sig == SIGUSR1) usr1_count++;
}

static void handle(int sig) {
  struct sigaction sa = {0};
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO;
  CHECK(sigaction(sig, &sa, 0) == 0);
}

static void block(int sig, int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  CHECK(sigprocmask(how, &set, 0) == 0);
}

static void test_sigsuspend(void) {
  handle(SIGUSR1);
  block(SIGUSR1, SIG_BLOCK);
  CHECK(kill(getpid(), SIGUSR1) == 0);
  CHECK(usr1_count == 0);
  sigset_t during;
  sigemptyset(&during);
  sigaddset(&during, SIGUSR2);  /* blocks USR2 only while it waits */
  CHECK(sigsuspend(&during) == -1 && errno == EINTR);
  CHECK(usr1_count == 1 && last_sig == SIGUSR1);
  sigset_t now;
  CHECK(sigprocmask(SIG_SETMASK, 0, &now) == 0);
  CHECK(sigismember(&now, SIGUSR1) && !sigismember(&now, SIGUSR2)); /* the caller's mask is back */
  block(SIGUSR1, SIG_UNBLOCK);
  CHECK_ERR(syscall(SYS_rt_sigsuspend, &during, 4), EINVAL);
  CHECK_ERR(syscall(SYS_rt_sigsuspend, (void *)8, 8), EFAULT);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* The raw kernel sigevent (SIGEV_THREAD_ID's field is not named alike in every C library). */
struct raw_sigevent {
  void *value;
  int signo, notify, tid, pad[11];
};

static int tid_pipe[2];
static void *thread_waits(void *arg) {
  (void)arg;
  int tid = (int)syscall(SYS_gettid);
  CHECK(write(tid_pipe[1], &tid, sizeof tid) == sizeof tid);
  sleep_ms(300);
  return 0;
}

static void test_posix_timers(void) {
  handle(SIGUSR1);
  handle(SIGRTMIN + 1);
  /* One-shot, relative: SI_TIMER with the sigev_value. */
  struct sigevent ev = {0};
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGUSR1;
  ev.sigev_value.sival_ptr = (void *)0x1234;
  timer_t t1;
  CHECK(timer_create(CLOCK_MONOTONIC, &ev, &t1) == 0);
  struct itimerspec its = {{0, 0}, {0, 20 * 1000000}}, cur;
  usr1_count = 0;
  CHECK(timer_settime(t1, 0, &its, 0) == 0);
  CHECK(timer_gettime(t1, &cur) == 0 && cur.it_value.tv_nsec > 0);
  for (int i = 0; i < 200 && !usr1_count; i++) sleep_ms(5);
  CHECK(usr1_count == 1 && last_code == SI_TIMER && last_value == (void *)0x1234 && last_overrun == 0);
  CHECK(timer_gettime(t1, &cur) == 0 && cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0);

  /* Periodic while the signal is blocked: one instance queued, the rest counted as overruns. */
  block(SIGUSR1, SIG_BLOCK);
  usr1_count = 0;
  struct itimerspec periodic = {{0, 10 * 1000000}, {0, 10 * 1000000}};
  CHECK(timer_settime(t1, 0, &periodic, 0) == 0);
  sleep_ms(120);
  CHECK(usr1_count == 0);
  /* Taken while still blocked, so no later expiry can be delivered in between. */
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  siginfo_t info;
  CHECK(sigwaitinfo(&usr1, &info) == SIGUSR1);
  CHECK(info.si_code == SI_TIMER && info.si_overrun >= 3 && info.si_value.sival_ptr == (void *)0x1234);
  CHECK(timer_getoverrun(t1) == info.si_overrun);
  struct itimerspec off = {{0, 0}, {0, 0}}, old;
  CHECK(timer_settime(t1, 0, &off, &old) == 0);
  CHECK(old.it_interval.tv_nsec == 10 * 1000000);
  struct timespec zero = {0, 0};
  while (sigtimedwait(&usr1, &info, &zero) == SIGUSR1) {} /* one that came before the disarm */
  block(SIGUSR1, SIG_UNBLOCK);
  CHECK(usr1_count == 0);

  /* Absolute time on CLOCK_REALTIME, already past: fires at once. */
  struct itimerspec abs = {{0, 0}, {1, 0}};
  usr1_count = 0;
  CHECK(timer_settime(t1, TIMER_ABSTIME, &abs, 0) == 0);
  for (int i = 0; i < 200 && !usr1_count; i++) sleep_ms(5);
  CHECK(usr1_count == 1);

  /* Deleting a timer whose signal is pending (Linux before 6.13 still delivers that signal, later
   * ones drop it: either is right). */
  block(SIGUSR1, SIG_BLOCK);
  usr1_count = 0;
  struct itimerspec soon = {{0, 0}, {0, 1000000}};
  CHECK(timer_settime(t1, 0, &soon, 0) == 0);
  sleep_ms(50);
  sigset_t pending;
  CHECK(sigpending(&pending) == 0 && sigismember(&pending, SIGUSR1));
  CHECK(timer_delete(t1) == 0);
  block(SIGUSR1, SIG_UNBLOCK);
  CHECK(usr1_count <= 1);
  CHECK_ERR(timer_gettime(t1, &cur), EINVAL);
  CHECK_ERR(syscall(SYS_timer_delete, 4321), EINVAL); /* (musl's timer_delete returns -errno) */

  /* SIGEV_NONE: counts down, sends nothing. */
  ev.sigev_notify = SIGEV_NONE;
  timer_t t2;
  CHECK(timer_create(CLOCK_REALTIME, &ev, &t2) == 0);
  struct itimerspec long_one = {{0, 0}, {100, 0}};
  CHECK(timer_settime(t2, 0, &long_one, 0) == 0);
  CHECK(timer_gettime(t2, &cur) == 0 && cur.it_value.tv_sec >= 98 && cur.it_value.tv_sec <= 100);
  CHECK(timer_delete(t2) == 0);

  /* SIGEV_THREAD_ID: the named thread takes it. */
  pthread_t th;
  CHECK(pipe(tid_pipe) == 0);
  CHECK(pthread_create(&th, 0, thread_waits, 0) == 0);
  int other = 0;
  CHECK(read(tid_pipe[0], &other, sizeof other) == sizeof other && other != (int)syscall(SYS_gettid));
  struct raw_sigevent raw = {(void *)7, SIGRTMIN + 1, 4 /* SIGEV_THREAD_ID */, other, {0}};
  int id = -1;
  CHECK(syscall(SYS_timer_create, CLOCK_MONOTONIC, &raw, &id) == 0 && id >= 0);
  struct itimerspec once = {{0, 0}, {0, 5 * 1000000}};
  handler_tid = 0;
  CHECK(syscall(SYS_timer_settime, id, 0, &once, 0) == 0);
  for (int i = 0; i < 200 && !handler_tid; i++) sleep_ms(5);
  CHECK(handler_tid == other && last_sig == SIGRTMIN + 1 && last_value == (void *)7);
  CHECK(syscall(SYS_timer_delete, id) == 0);
  CHECK(pthread_join(th, 0) == 0);
  close(tid_pipe[0]);
  close(tid_pipe[1]);

  /* Errors. */
  raw.tid = 999999;
  CHECK_ERR(syscall(SYS_timer_create, CLOCK_MONOTONIC, &raw, &id), EINVAL);
  raw.notify = 77;
  CHECK_ERR(syscall(SYS_timer_create, CLOCK_MONOTONIC, &raw, &id), EINVAL);
  raw.notify = SIGEV_SIGNAL;
  raw.signo = 65;
  CHECK_ERR(syscall(SYS_timer_create, CLOCK_MONOTONIC, &raw, &id), EINVAL);
  CHECK_ERR(syscall(SYS_timer_create, 1000, 0, &id), EINVAL);
  CHECK_ERR(syscall(SYS_timer_create, CLOCK_MONOTONIC, 0, (void *)8), EFAULT);
  CHECK_ERR(syscall(SYS_timer_settime, 12345, 0, &once, 0), EINVAL);
  CHECK_ERR(syscall(SYS_timer_getoverrun, 12345), EINVAL);
  /* No sigevent: SIGALRM with the id as its value. */
  CHECK(syscall(SYS_timer_create, CLOCK_MONOTONIC, 0, &id) == 0);
  struct itimerspec bad = {{0, 0}, {0, 1000000000}};
  CHECK_ERR(syscall(SYS_timer_settime, id, 0, &bad, 0), EINVAL);
  CHECK(syscall(SYS_timer_delete, id) == 0);
}

static void test_signalfd(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  block(SIGUSR2, SIG_BLOCK);
  int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  CHECK(fd >= 0);
  struct signalfd_siginfo si;
  CHECK_ERR(read(fd, &si, sizeof si), EAGAIN);
  CHECK_ERR(read(fd, &si, 10), EINVAL);
  struct pollfd pfd = {fd, POLLIN, 0};
  CHECK(poll(&pfd, 1, 0) == 0);
  union sigval v = {.sival_int = 99};
  CHECK(sigqueue(getpid(), SIGUSR2, v) == 0);
  CHECK(poll(&pfd, 1, 1000) == 1 && (pfd.revents & POLLIN));
  CHECK(read(fd, &si, sizeof si) == sizeof si);
  CHECK(si.ssi_signo == SIGUSR2 && si.ssi_code == SI_QUEUE && si.ssi_int == 99 && si.ssi_pid == (uint32_t)getpid());
  CHECK(poll(&pfd, 1, 0) == 0);
  CHECK_ERR(write(fd, &si, 8), EINVAL);

  /* Two real-time signals, one read of two records. */
  sigaddset(&set, SIGRTMIN + 2);
  block(SIGRTMIN + 2, SIG_BLOCK);
  CHECK(signalfd(fd, &set, 0) == fd); /* a new mask */
  CHECK(kill(getpid(), SIGRTMIN + 2) == 0);
  CHECK(kill(getpid(), SIGRTMIN + 2) == 0);
  struct signalfd_siginfo two[3];
  CHECK(read(fd, two, sizeof two) == 2 * sizeof two[0]);
  CHECK(two[0].ssi_signo == (uint32_t)SIGRTMIN + 2 && two[1].ssi_signo == (uint32_t)SIGRTMIN + 2);
  CHECK(two[0].ssi_code == SI_USER);

  /* A blocking read wakes for a signal from a child; SIGCHLD (ignored by default) stays pending
   * while blocked. */
  sigaddset(&set, SIGCHLD);
  block(SIGCHLD, SIG_BLOCK);
  CHECK(signalfd(fd, &set, 0) == fd);
  int flags = fcntl(fd, F_GETFL);
  CHECK(fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    sleep_ms(50);
    kill(getppid(), SIGUSR2);
    _exit(3);
  }
  int seen_usr2 = 0, seen_chld = 0;
  while (!seen_usr2 || !seen_chld) {
    CHECK(read(fd, &si, sizeof si) == sizeof si);
    if (si.ssi_signo == SIGUSR2) {
      CHECK(si.ssi_pid == (uint32_t)child);
      seen_usr2 = 1;
    } else {
      CHECK(si.ssi_signo == SIGCHLD && si.ssi_pid == (uint32_t)child && si.ssi_status == 3 && si.ssi_code == CLD_EXITED);
      seen_chld = 1;
    }
  }
  int status;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 3);
  CHECK(close(fd) == 0);
  CHECK_ERR(signalfd(fd, &set, 0), EBADF);
  int pipefd[2];
  CHECK(pipe(pipefd) == 0);
  CHECK_ERR(signalfd(pipefd[0], &set, 0), EINVAL);
  CHECK_ERR(signalfd(-1, &set, 0x1234), EINVAL);
  close(pipefd[0]);
  close(pipefd[1]);
  block(SIGCHLD, SIG_UNBLOCK);
  block(SIGUSR2, SIG_UNBLOCK);
  block(SIGRTMIN + 2, SIG_UNBLOCK);
}

/* A blocked signal whose disposition is SIG_IGN or "ignore by default" stays pending for sigwait. */
static void test_blocked_ignored_signal(void) {
  block(SIGCHLD, SIG_BLOCK);
  CHECK(kill(getpid(), SIGCHLD) == 0);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  int sig = 0;
  CHECK(sigwait(&set, &sig) == 0 && sig == SIGCHLD);
  block(SIGCHLD, SIG_UNBLOCK);
}

/* kill(2) of another process runs its handler (and does not end it); the parent's SIGCHLD handler
 * runs when the child exits. */
static volatile sig_atomic_t chld_seen;
static void on_chld(int sig) { (void)sig; chld_seen = 1; }

static void test_signal_between_processes(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_chld;
  CHECK(sigaction(SIGCHLD, &sa, 0) == 0);
  int ready[2];
  CHECK(pipe(ready) == 0);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    handle(SIGUSR1);
    usr1_count = 0;
    CHECK(write(ready[1], "r", 1) == 1);
    for (int i = 0; i < 400 && !usr1_count; i++) sleep_ms(5);
    _exit(usr1_count == 1 && last_code == SI_USER ? 0 : 9);
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  CHECK(kill(child, SIGUSR1) == 0);
  int status;
  while (waitpid(child, &status, 0) != child) CHECK(errno == EINTR);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  for (int i = 0; i < 200 && !chld_seen; i++) sleep_ms(5);
  CHECK(chld_seen);
  /* The default action of SIGTERM still ends the other process. */
  child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    for (;;) pause();
  }
  /* Another process's /proc/<pid>/stat: sleeping (S) in pause, its parent is us. */
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)child);
  char state = 0;
  int ppid = 0;
  for (int i = 0; i < 500 && state != 'S'; i++) {
    FILE *f = fopen(path, "r");
    CHECK(f != 0);
    CHECK(fgets(line, sizeof line, f) != 0);
    fclose(f);
    char *after = strrchr(line, ')');
    CHECK(after && sscanf(after + 1, " %c %d", &state, &ppid) == 2);
    if (state != 'S') sleep_ms(10);
  }
  CHECK(state == 'S' && ppid == getpid());
  CHECK(kill(child, SIGTERM) == 0);
  while (waitpid(child, &status, 0) != child) CHECK(errno == EINTR);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  sa.sa_handler = SIG_DFL;
  CHECK(sigaction(SIGCHLD, &sa, 0) == 0);
  close(ready[0]);
  close(ready[1]);
}

/* ppoll/pselect/epoll_pwait's signal mask: the thread's mask while it waits, the caller's again
 * after; a signal it unblocks that is pending already ends the wait at once (EINTR, its handler
 * runs); one it keeps blocked stays pending through the wait. */
static void test_wait_sigmask(void) {
  handle(SIGUSR1);
  handle(SIGUSR2);
  block(SIGUSR1, SIG_BLOCK);
  block(SIGUSR2, SIG_BLOCK);
  usr1_count = 0;
  last_sig = 0;
  CHECK(kill(getpid(), SIGUSR1) == 0);
  sigset_t only_usr2;
  sigemptyset(&only_usr2);
  sigaddset(&only_usr2, SIGUSR2);
  struct timespec long_wait = {5, 0}, short_wait = {0, 20000000};
  CHECK(ppoll(NULL, 0, &long_wait, &only_usr2) == -1 && errno == EINTR); /* USR1 let through */
  CHECK(usr1_count == 1 && last_sig == SIGUSR1);
  sigset_t now;
  CHECK(sigprocmask(SIG_SETMASK, 0, &now) == 0);
  CHECK(sigismember(&now, SIGUSR1) && sigismember(&now, SIGUSR2)); /* the caller's mask is back */
  CHECK(kill(getpid(), SIGUSR2) == 0);
  sigset_t all_blocked;
  sigfillset(&all_blocked);
  CHECK(ppoll(NULL, 0, &short_wait, &all_blocked) == 0); /* a timeout: USR2 stays pending */
  CHECK(pselect(0, NULL, NULL, NULL, &short_wait, &all_blocked) == 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  CHECK(ep >= 0);
  struct epoll_event ev;
  CHECK(epoll_pwait(ep, &ev, 1, 20, &all_blocked) == 0);
  sigset_t pending;
  CHECK(sigpending(&pending) == 0 && sigismember(&pending, SIGUSR2));
  sigset_t none;
  sigemptyset(&none);
  CHECK(epoll_pwait(ep, &ev, 1, 5000, &none) == -1 && errno == EINTR);
  CHECK(last_sig == SIGUSR2);
  CHECK(sigprocmask(SIG_SETMASK, 0, &now) == 0 && sigismember(&now, SIGUSR2));
  CHECK_ERR(syscall(SYS_ppoll, NULL, 0, &short_wait, &none, 4), EINVAL);
  close(ep);
  block(SIGUSR1, SIG_UNBLOCK);
  block(SIGUSR2, SIG_UNBLOCK);
}

/* sigwaitinfo takes a signal of its set even when the signal is not blocked (it has a handler):
 * here one another process sends while we wait. */
static void test_sigwait_unblocked(void) {
  handle(SIGUSR1);
  usr1_count = 0;
  pid_t parent = getpid(), child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    for (int i = 0; i < 500; i++) {
      sleep_ms(20);
      if (kill(parent, SIGUSR1) != 0) break;
    }
    _exit(0);
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  siginfo_t si;
  CHECK(sigwaitinfo(&set, &si) == SIGUSR1);
  CHECK(si.si_pid == child && si.si_code == SI_USER);
  CHECK(kill(child, SIGKILL) == 0);
  int status;
  while (waitpid(child, &status, 0) != child) CHECK(errno == EINTR);
  /* a SIGUSR1 of the child may have reached the handler after the wait: that is fine */
}

/* PR_SET_PDEATHSIG: the signal a process gets when its parent ends; a fork's child starts without
 * one. Here a grandchild asks for SIGUSR2 and tells us through a pipe that it came. */
static int death_pipe = -1;
static void on_parent_death(int sig) {
  char c = sig == SIGUSR2 ? 'd' : '?';
  (void)!write(death_pipe, &c, 1);
  _exit(0);
}
static void test_parent_death_signal(void) {
  int sig = -1;
  CHECK(prctl(PR_SET_PDEATHSIG, SIGUSR1) == 0);
  CHECK(prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig == SIGUSR1);
  CHECK(prctl(PR_SET_PDEATHSIG, 0) == 0);
  CHECK_ERR(prctl(PR_SET_PDEATHSIG, 65), EINVAL);
  CHECK(prctl(PR_GET_DUMPABLE) == 1);
  CHECK(prctl(PR_SET_DUMPABLE, 0) == 0 && prctl(PR_GET_DUMPABLE) == 0);
  CHECK(prctl(PR_SET_DUMPABLE, 1) == 0 && prctl(PR_GET_DUMPABLE) == 1);
  int fds[2], ready[2];
  CHECK(pipe(fds) == 0 && pipe(ready) == 0);
  CHECK(prctl(PR_SET_PDEATHSIG, SIGUSR1) == 0);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    int inherited = -1;
    if (prctl(PR_GET_PDEATHSIG, &inherited) != 0 || inherited != 0) _exit(3);
    pid_t grandchild = fork();
    if (grandchild < 0) _exit(4);
    if (grandchild == 0) {
      death_pipe = fds[1];
      signal(SIGUSR2, on_parent_death);
      if (prctl(PR_SET_PDEATHSIG, SIGUSR2) != 0) _exit(5);
      (void)!write(ready[1], "r", 1);
      for (int i = 0; i < 1000; i++) sleep_ms(10);
      _exit(6);  /* no signal came */
    }
    char c;
    if (read(ready[0], &c, 1) != 1) _exit(7);
    _exit(0);  /* the grandchild's parent ends here */
  }
  CHECK(prctl(PR_SET_PDEATHSIG, 0) == 0);
  int status;
  while (waitpid(child, &status, 0) != child) CHECK(errno == EINTR);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  struct pollfd pfd = {fds[0], POLLIN, 0};
  CHECK(poll(&pfd, 1, 10000) == 1);
  char got = 0;
  CHECK(read(fds[0], &got, 1) == 1 && got == 'd');
  close(fds[0]);
  close(fds[1]);
  close(ready[0]);
  close(ready[1]);
}

/* SA_RESETHAND resets the handler to SIG_DFL when it runs, and nothing else (SA_SIGINFO stays). */
static void test_resethand(void) {
  struct sigaction sa = {0}, now;
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  CHECK(sigaction(SIGUSR2, &sa, 0) == 0);
  last_sig = 0;
  CHECK(raise(SIGUSR2) == 0);
  CHECK(last_sig == SIGUSR2);
  CHECK(sigaction(SIGUSR2, 0, &now) == 0);
  CHECK(now.sa_handler == SIG_DFL && (now.sa_flags & SA_SIGINFO));
  CHECK_ERR(syscall(SYS_tgkill, 0, 1, SIGUSR2), EINVAL);
}

int main(void) {
  test_sigsuspend();
  test_posix_timers();
  test_signalfd();
  test_blocked_ignored_signal();
  test_signal_between_processes();
  test_resethand();
  test_wait_sigmask();
  test_sigwait_unblocked();
  test_parent_death_signal();
  guest_ok("signal_waits");
  return 0;
}

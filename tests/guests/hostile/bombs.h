/* Resource attacks a hostile guest makes (issue 9): fork and thread bombs, fd floods, memory hogs,
 * filling /tmp, signal floods, orphans. Shared by tests/guests/hostile/bomb.c (one attack per run,
 * `kvmserver run`) and tests/guests/servers/abuse_server.c (one attack per request, server mode).
 * Each returns a one-line summary, "KIND key=value ...", that the tests parse; none of them may
 * crash or hang the program itself: every failure is counted, and whatever was created is freed. */
#ifndef KVMS_HOSTILE_BOMBS_H
#define KVMS_HOSTILE_BOMBS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define BOMB_LINE 256

static const char* bomb_errno_name(int e) {
  switch (e) {
    case 0: return "none";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOSPC: return "ENOSPC";
    case ENOBUFS: return "ENOBUFS";
    case EFBIG: return "EFBIG";
    default: return strerror(e);
  }
}

/* Every process forks in a loop `levels` times (2^levels processes if nothing stops it), with
 * fork() or, raw, clone(SIGCHLD), then waits for its children. The root counts, through a pipe,
 * the forks that worked and those that failed (and how). */
static void bomb_fork(int levels, int raw_clone, char* line) {
  int p[2];
  if (pipe(p) != 0) {
    snprintf(line, BOMB_LINE, "fork error=pipe:%s", bomb_errno_name(errno));
    return;
  }
  const pid_t root = getpid();
  for (int i = 0; i < levels; i++) {
    long c = raw_clone ? syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) : fork();
    char b = c > 0 ? '+' : c == 0 ? 0 : errno == EAGAIN ? 'a' : errno == ENOMEM ? 'm' : '?';
    if (b) (void)!write(p[1], &b, 1);
  }
  while (wait(NULL) > 0 || errno == EINTR) {
  }
  if (getpid() != root) _exit(0);
  close(p[1]);
  long made = 0, eagain = 0, enomem = 0, other = 0;
  char buf[4096];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; i++) {
      made += buf[i] == '+';
      eagain += buf[i] == 'a';
      enomem += buf[i] == 'm';
      other += buf[i] == '?';
    }
  close(p[0]);
  snprintf(line, BOMB_LINE, "%s forks=%ld eagain=%ld enomem=%ld other=%ld", raw_clone ? "clone" : "fork", made, eagain,
           enomem, other);
}

static pthread_mutex_t bomb_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bomb_release = PTHREAD_COND_INITIALIZER;
static int bomb_released;

static void* bomb_sleeper(void* arg) {
  (void)arg;
  pthread_mutex_lock(&bomb_mutex);
  while (!bomb_released) pthread_cond_wait(&bomb_release, &bomb_mutex);
  pthread_mutex_unlock(&bomb_mutex);
  return NULL;
}

/* Threads (64 KiB stacks) that all stay alive until creating one more fails or `most` exist. */
static void bomb_threads(int most, char* line) {
  pthread_t* t = calloc((size_t)most, sizeof *t);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  bomb_released = 0;
  int n = 0, err = 0;
  for (; n < most; n++)
    if ((err = pthread_create(&t[n], &attr, bomb_sleeper, NULL)) != 0) break;
  pthread_mutex_lock(&bomb_mutex);
  bomb_released = 1;
  pthread_cond_broadcast(&bomb_release);
  pthread_mutex_unlock(&bomb_mutex);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  free(t);
  snprintf(line, BOMB_LINE, "threads made=%d error=%s", n, n < most ? bomb_errno_name(err) : "none");
}

/* fds of one kind until the next one fails: files (`path`), pipes, sockets, eventfd-backed epoll
 * registrations. Everything is closed again. */
static void bomb_fds(const char* kind, const char* path, int most, char* line) {
  int* fds = calloc((size_t)most * 2, sizeof *fds);
  int n = 0, err = 0, ep = -1, watches = 0;
  if (strcmp(kind, "epoll") == 0) ep = epoll_create1(EPOLL_CLOEXEC);
  for (; n < most; n++) {
    int r;
    if (strcmp(kind, "pipes") == 0) {
      r = pipe2(&fds[2 * n], O_CLOEXEC);
    } else if (strcmp(kind, "sockets") == 0) {
      r = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, &fds[2 * n]);
    } else {
      fds[2 * n] = strcmp(kind, "epoll") == 0 ? eventfd(0, EFD_CLOEXEC) : open(path, O_RDONLY | O_CLOEXEC);
      fds[2 * n + 1] = -1;
      r = fds[2 * n] < 0 ? -1 : 0;
      if (r == 0 && ep >= 0) {
        /* Each fd registered in the one epoll: watches grow with fds. */
        struct epoll_event ev = {.events = EPOLLIN};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[2 * n], &ev) == 0) watches++;
      }
    }
    if (r != 0) {
      err = errno;
      break;
    }
  }
  for (int i = 0; i < 2 * n; i++)
    if (fds[i] > 0) close(fds[i]);
  if (ep >= 0) close(ep);
  free(fds);
  snprintf(line, BOMB_LINE, "fds kind=%s made=%d watches=%d error=%s", kind, n, watches,
           n < most ? bomb_errno_name(err) : "none");
}

/* `children` processes and this one each allocate 1 MiB chunks (touching every page) until an
 * allocation fails, and hold it all until every one is done; the root adds up what all of them
 * held at once. */
static void bomb_memory(int children, char* line) {
  int p[2], hold[2];
  if (pipe(p) != 0 || pipe(hold) != 0) {
    snprintf(line, BOMB_LINE, "memory error=pipe:%s", bomb_errno_name(errno));
    return;
  }
  int forked = 0, fork_err = 0;
  pid_t pid = 1;
  for (int i = 0; i < children && pid > 0; i++) {
    pid = fork();
    if (pid < 0) fork_err = errno;
    if (pid > 0) forked++;
  }
  long mb = 0;
  int err = 0;
  for (;;) {
    char* m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      err = errno;
      break;
    }
    for (int off = 0; off < (1 << 20); off += 4096) m[off] = 1;
    mb++;
  }
  if (pid == 0) {
    (void)!write(p[1], &mb, sizeof mb);
    close(hold[1]);
    char b;
    (void)!read(hold[0], &b, 1);  /* until the root lets go: EOF */
    _exit(0);
  }
  close(p[1]);
  long total = mb, each;
  for (int i = 0; i < forked && read(p[0], &each, sizeof each) == sizeof each; i++) total += each;
  close(hold[1]);
  close(hold[0]);
  while (wait(NULL) > 0 || errno == EINTR) {
  }
  close(p[0]);
  snprintf(line, BOMB_LINE, "memory processes=%d mb=%ld error=%s fork_error=%s", forked + 1, total, bomb_errno_name(err),
           bomb_errno_name(fork_err));
}

/* Fills directory `dir` with 1 MiB writes until one fails or is cut short, then with empty files;
 * everything is removed again unless `keep`. */
static void bomb_tmp(const char* dir, int keep, char* line) {
  char path[512];
  static char chunk[1 << 20];
  memset(chunk, 'x', sizeof chunk);
  long bytes = 0;
  int err = 0, files = 0, names = 0, name_err = 0;
  for (int done = 0; !done && files < 100000; files++) {
    snprintf(path, sizeof path, "%s/fill.%d", dir, files);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      err = errno;
      break;
    }
    for (int i = 0; i < 64; i++) {
      ssize_t n = write(fd, chunk, sizeof chunk);
      if (n > 0) bytes += n;
      if (n != (ssize_t)sizeof chunk) {
        err = n < 0 ? errno : ENOSPC;
        done = 1;
        break;
      }
    }
    close(fd);
  }
  for (; names < 1000000; names++) {
    snprintf(path, sizeof path, "%s/name.%d", dir, names);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      name_err = errno;
      break;
    }
    close(fd);
  }
  if (!keep) {
    for (int i = 0; i <= files; i++) {
      snprintf(path, sizeof path, "%s/fill.%d", dir, i);
      unlink(path);
    }
    for (int i = 0; i < names; i++) {
      snprintf(path, sizeof path, "%s/name.%d", dir, i);
      unlink(path);
    }
  }
  snprintf(line, BOMB_LINE, "tmp mb=%ld error=%s names=%d name_error=%s", bytes >> 20, bomb_errno_name(err), names,
           bomb_errno_name(name_err));
}

/* timerfds until the next one fails. */
static void bomb_timers(int most, char* line) {
  int* fds = calloc((size_t)most, sizeof *fds);
  int n = 0, err = 0;
  for (; n < most; n++)
    if ((fds[n] = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)) < 0) {
      err = errno;
      break;
    }
  for (int i = 0; i < n; i++) close(fds[i]);
  free(fds);
  snprintf(line, BOMB_LINE, "timers made=%d error=%s", n, n < most ? bomb_errno_name(err) : "none");
}

/* One memfd written in 1 MiB chunks until a write fails or is cut short, or `most_mb` were written
 * (natively nothing stops it: keep that small). */
static void bomb_memfd(int most_mb, char* line) {
  static char chunk[1 << 20];
  memset(chunk, 'm', sizeof chunk);
  int fd = memfd_create("bomb", MFD_CLOEXEC);
  if (fd < 0) {
    snprintf(line, BOMB_LINE, "memfd error=create:%s", bomb_errno_name(errno));
    return;
  }
  long bytes = 0;
  int err = 0;
  for (int i = 0; i < most_mb; i++) {
    ssize_t n = write(fd, chunk, sizeof chunk);
    if (n > 0) bytes += n;
    if (n != (ssize_t)sizeof chunk) {
      err = n < 0 ? errno : ENOSPC;
      break;
    }
  }
  close(fd);
  snprintf(line, BOMB_LINE, "memfd mb=%ld error=%s", bytes >> 20, bomb_errno_name(err));
}

/* Real-time signals queued to ourselves while blocked, until one more is refused. */
static void bomb_signals(int most, char* line) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN);
  sigprocmask(SIG_BLOCK, &set, &old);
  int n = 0, err = 0;
  union sigval v = {.sival_int = 0};
  for (; n < most; n++)
    if (sigqueue(getpid(), SIGRTMIN, v) != 0) {
      err = errno;
      break;
    }
  /* Drain them again, each one: they queue. */
  int drained = 0;
  struct timespec zero = {0, 0};
  while (sigtimedwait(&set, NULL, &zero) == SIGRTMIN) drained++;
  sigprocmask(SIG_SETMASK, &old, NULL);
  snprintf(line, BOMB_LINE, "signals queued=%d drained=%d error=%s", n, drained, n < most ? bomb_errno_name(err) : "none");
}

/* A child that outlives its parent's interest in it: closes what it inherited (a server's
 * connection among it) and sleeps `seconds`. */
static void bomb_orphan(int seconds, char* line) {
  pid_t c = fork();
  if (c == 0) {
    for (int fd = 3; fd < 1024; fd++) close(fd);
    sleep((unsigned)seconds);
    _exit(0);
  }
  snprintf(line, BOMB_LINE, "orphan pid=%d", (int)c);
}

/* Runs the attack named by argv-style words; 0, or -1 for an unknown one. */
static int bomb_run(int argc, char** argv, char* line) {
  const char* kind = argc > 0 ? argv[0] : "";
  const char* arg = argc > 1 ? argv[1] : "";
  if (strcmp(kind, "fork") == 0) bomb_fork(argc > 1 ? atoi(arg) : 10, 0, line);
  else if (strcmp(kind, "clone") == 0) bomb_fork(argc > 1 ? atoi(arg) : 10, 1, line);
  else if (strcmp(kind, "threads") == 0) bomb_threads(argc > 1 ? atoi(arg) : 4096, line);
  else if (strcmp(kind, "files") == 0) bomb_fds("files", arg, 1 << 20, line);
  else if (strcmp(kind, "pipes") == 0 || strcmp(kind, "sockets") == 0 || strcmp(kind, "epoll") == 0)
    bomb_fds(kind, "", 1 << 20, line);
  else if (strcmp(kind, "memory") == 0) bomb_memory(argc > 1 ? atoi(arg) : 4, line);
  else if (strcmp(kind, "tmp") == 0) {
    char dir[256];  /* relative names are taken from / (a URL path cannot hold the leading slash) */
    snprintf(dir, sizeof dir, "%s%s", argc > 1 && arg[0] != '/' ? "/" : "", argc > 1 ? arg : "/tmp");
    bomb_tmp(dir, argc > 2 && strcmp(argv[2], "keep") == 0, line);
  }
  else if (strcmp(kind, "timers") == 0) bomb_timers(argc > 1 ? atoi(arg) : 1 << 20, line);
  else if (strcmp(kind, "memfd") == 0) bomb_memfd(argc > 1 ? atoi(arg) : 1024, line);
  else if (strcmp(kind, "signals") == 0) bomb_signals(argc > 1 ? atoi(arg) : 1 << 20, line);
  else if (strcmp(kind, "orphan") == 0) bomb_orphan(argc > 1 ? atoi(arg) : 1000, line);
  else return -1;
  return 0;
}

#endif

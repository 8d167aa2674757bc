/* clock_server: an event-loop HTTP server with timers, the way Node's libuv and most event loops
 * keep them, for tests/e2e/clock.sh (a request's clock starts where the template paused, README
 * "Timers of a paused template"). Every response closes its connection.
 *
 *   clock_server PORT [SECONDS]   listens on 127.0.0.1:PORT; its timers are due SECONDS (default 3)
 *                                 after start-up
 *
 * Two timers are set at start-up: a loop timer (an end time on CLOCK_MONOTONIC, waited for through
 * epoll_wait's timeout, as libuv does) and a timerfd (relative, in the epoll set). Each counts its
 * expirations.
 * Routes (GET):
 *   /state   "loop_fired=N timerfd_fired=M\n"
 *   /waited  "waited_ms=W\n": how long, by CLOCK_MONOTONIC, the loop had been waiting when this
 *            request's connection came
 *   /abs     sleeps until absolute end times 300 ms ahead on the monotonic clocks, and reports the
 *            time each took by CLOCK_MONOTONIC, in ms: "sleep=A boot_sleep=B timerfd=C futex=D
 *            timer_left=E\n" (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC and CLOCK_BOOTTIME,
 *            a timerfd with TFD_TIMER_ABSTIME, FUTEX_WAIT_BITSET's absolute timeout, and what
 *            timer_gettime leaves of a timer_settime TIMER_ABSTIME)
 *   /wall    "wall=S\n": CLOCK_REALTIME in seconds
 * On start-up prints "clock_server: listening on 127.0.0.1:PORT" on stdout. */
#include "http.h"

#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>

static int loop_fired, timerfd_fired;
static int64_t loop_due_ns; /* 0: no loop timer */
static int64_t wait_started_ns;

static int64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec at_ns(int64_t ns) {
  struct timespec ts = {ns / 1000000000, ns % 1000000000};
  return ts;
}

static long ms_since(int64_t start) { return (long)((now_ns(CLOCK_MONOTONIC) - start) / 1000000); }

#define AHEAD_NS 300000000LL

static size_t absolute_waits(char* out, size_t cap) {
  int64_t t = now_ns(CLOCK_MONOTONIC);
  struct timespec end = at_ns(t + AHEAD_NS);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL) == EINTR) {}
  long sleep_ms = ms_since(t);

  t = now_ns(CLOCK_MONOTONIC);
  end = at_ns(now_ns(CLOCK_BOOTTIME) + AHEAD_NS);
  while (clock_nanosleep(CLOCK_BOOTTIME, TIMER_ABSTIME, &end, NULL) == EINTR) {}
  long boot_ms = ms_since(t);

  long timerfd_ms = -1;
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  if (tfd >= 0) {
    t = now_ns(CLOCK_MONOTONIC);
    struct itimerspec its = {{0, 0}, at_ns(t + AHEAD_NS)};
    uint64_t n;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0 && read(tfd, &n, sizeof n) == sizeof n)
      timerfd_ms = ms_since(t);
    close(tfd);
  }

  static uint32_t word;
  t = now_ns(CLOCK_MONOTONIC);
  end = at_ns(t + AHEAD_NS);
  long futex_ms = -1;
  long rc;
  do rc = syscall(SYS_futex, &word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0, &end, NULL, FUTEX_BITSET_MATCH_ANY);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno == ETIMEDOUT) futex_ms = ms_since(t);

  long timer_left_ms = -1;
  timer_t timer;
  struct sigevent sev = {.sigev_notify = SIGEV_NONE};
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0) {
    struct itimerspec its = {{0, 0}, at_ns(now_ns(CLOCK_MONOTONIC) + AHEAD_NS)}, left;
    if (timer_settime(timer, TIMER_ABSTIME, &its, NULL) == 0 && timer_gettime(timer, &left) == 0)
      timer_left_ms = (long)((int64_t)left.it_value.tv_sec * 1000 + left.it_value.tv_nsec / 1000000);
    timer_delete(timer);
  }
  return http_response(out, cap, 200, "sleep=%ld boot_sleep=%ld timerfd=%ld futex=%ld timer_left=%ld\n", sleep_ms,
                       boot_ms, timerfd_ms, futex_ms, timer_left_ms);
}

static int64_t waited_ms;

static size_t route(const char* path, char* out, size_t cap) {
  if (strcmp(path, "/state") == 0) return http_response(out, cap, 200, "loop_fired=%d timerfd_fired=%d\n", loop_fired, timerfd_fired);
  if (strcmp(path, "/waited") == 0) return http_response(out, cap, 200, "waited_ms=%lld\n", (long long)waited_ms);
  if (strcmp(path, "/abs") == 0) return absolute_waits(out, cap);
  if (strcmp(path, "/wall") == 0) return http_response(out, cap, 200, "wall=%lld\n", (long long)time(NULL));
  return http_response(out, cap, 404, "not found\n");
}

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s PORT [SECONDS]\n", argv[0]);
    return 2;
  }
  const int64_t due_in = (argc == 3 ? atoll(argv[2]) : 3) * 1000000000LL;
  int lfd = http_listen(argv[1], SOCK_CLOEXEC | SOCK_NONBLOCK);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (tfd < 0 || ep < 0) {
    perror("clock_server: timerfd/epoll");
    return 1;
  }
  struct itimerspec its = {{0, 0}, at_ns(due_in)};
  timerfd_settime(tfd, 0, &its, NULL);
  loop_due_ns = now_ns(CLOCK_MONOTONIC) + due_in;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.fd = tfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
  printf("clock_server: listening on 127.0.0.1:%s\n", argv[1]);
  fflush(stdout);

  static char req[HTTP_MAX_REQUEST], out[HTTP_MAX_RESPONSE], path[4200];
  for (;;) {
    int timeout_ms = -1;
    wait_started_ns = now_ns(CLOCK_MONOTONIC);
    if (loop_due_ns) {
      int64_t left = loop_due_ns - wait_started_ns;
      timeout_ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
    }
    struct epoll_event events[4];
    int n = epoll_wait(ep, events, 4, timeout_ms);
    if (n < 0 && errno != EINTR) {
      perror("epoll_wait");
      return 1;
    }
    if (loop_due_ns && now_ns(CLOCK_MONOTONIC) >= loop_due_ns) {
      ++loop_fired;
      loop_due_ns = 0;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == tfd) {
        uint64_t count;
        if (read(tfd, &count, sizeof count) == sizeof count) timerfd_fired += (int)count;
        continue;
      }
      int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0) continue;
      waited_ms = (now_ns(CLOCK_MONOTONIC) - wait_started_ns) / 1000000;
      http_answer(fd, route, req, sizeof req, out, sizeof out, path, sizeof path);
    }
  }
}

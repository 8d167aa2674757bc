/* time: clock_gettime (REALTIME, MONOTONIC, BOOTTIME, *_COARSE, MONOTONIC_RAW) through libc (which
 * may use the vDSO) and the raw syscall; gettimeofday, time, clock_getres, nanosleep,
 * clock_nanosleep (relative and absolute).
 *
 * Usage: time [NOW]   NOW = the host's time in seconds since the epoch; without it the
 *                     environment variable KVMS_NOW is used; without both that check is skipped.
 *                     CLOCK_REALTIME must be within 5 s of it. */
#include "check.h"

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static int64_t now_ns(clockid_t c) {
  struct timespec t;
  CHECK(clock_gettime(c, &t) == 0);
  return ns(t);
}

static int valid(struct timespec t) { return t.tv_sec >= 0 && t.tv_nsec >= 0 && t.tv_nsec < 1000000000; }

static void test_clocks(void) {
  static const struct {
    clockid_t id;
    const char *name;
    int monotonic;
  } clocks[] = {
      {CLOCK_REALTIME, "REALTIME", 0},
      {CLOCK_MONOTONIC, "MONOTONIC", 1},
      {CLOCK_BOOTTIME, "BOOTTIME", 1},
      {CLOCK_MONOTONIC_COARSE, "MONOTONIC_COARSE", 1},
      {CLOCK_REALTIME_COARSE, "REALTIME_COARSE", 0},
      {CLOCK_MONOTONIC_RAW, "MONOTONIC_RAW", 1},
  };
  for (size_t c = 0; c < sizeof clocks / sizeof clocks[0]; c++) {
    struct timespec prev, cur, raw;
    CHECK(clock_gettime(clocks[c].id, &prev) == 0);
    CHECK(valid(prev));
    int64_t first = ns(prev), backwards = 0;
    for (int i = 0; i < 10000; i++) {
      /* Alternate libc (vDSO) and the raw syscall: both count on the same clock. */
      if (i % 10 == 0) {
        CHECK(syscall(SYS_clock_gettime, clocks[c].id, &cur) == 0);
      } else {
        CHECK(clock_gettime(clocks[c].id, &cur) == 0);
      }
      CHECK(valid(cur));
      if (ns(cur) < ns(prev)) backwards++;
      prev = cur;
    }
    if (clocks[c].monotonic) {
      if (backwards) fprintf(stderr, "clock %s went backwards %ld times\n", clocks[c].name, (long)backwards);
      CHECK(backwards == 0);
    } else {
      CHECK(backwards <= 1); /* the wall clock may be stepped once, not jitter */
    }
    CHECK(syscall(SYS_clock_gettime, clocks[c].id, &raw) == 0);
    CHECK(ns(raw) >= first || !clocks[c].monotonic);
    /* 10000 reads do not take a minute. */
    CHECK(ns(raw) - first < 60LL * 1000000000);
  }
  /* BOOTTIME counts at least what MONOTONIC does (it adds time suspended). */
  int64_t mono = now_ns(CLOCK_MONOTONIC);
  int64_t boot = now_ns(CLOCK_BOOTTIME);
  CHECK(boot >= mono);
  /* Coarse clocks lag the fine ones by at most a few ticks. */
  int64_t fine = now_ns(CLOCK_MONOTONIC);
  int64_t coarse = now_ns(CLOCK_MONOTONIC_COARSE);
  CHECK(coarse <= now_ns(CLOCK_MONOTONIC));
  CHECK(fine - coarse < 100 * 1000000LL);
  int64_t rt = now_ns(CLOCK_REALTIME), rtc = now_ns(CLOCK_REALTIME_COARSE);
  CHECK(rt - rtc < 100 * 1000000LL && rtc - rt < 100 * 1000000LL);

  struct timespec t;
  CHECK_ERR(clock_gettime((clockid_t)100, &t), EINVAL);
  CHECK_ERR(syscall(SYS_clock_gettime, 100, &t), EINVAL);
}

static void test_wall(const char *expected) {
  struct timespec rt;
  CHECK(clock_gettime(CLOCK_REALTIME, &rt) == 0);
  CHECK(rt.tv_sec > 1600000000); /* after 2020: a real wall clock, not time since boot */
  if (expected && *expected) {
    long long want = atoll(expected);
    long long diff = (long long)rt.tv_sec - want;
    if (diff < -30 || diff > 30) fprintf(stderr, "realtime %lld, expected about %lld\n", (long long)rt.tv_sec, want);
    CHECK(diff >= -30 && diff <= 30); /* the caller's clock was read before a (possibly nested, slow) start */
  }
  struct timeval tv;
  CHECK(gettimeofday(&tv, NULL) == 0);
  CHECK(tv.tv_usec >= 0 && tv.tv_usec < 1000000);
  CHECK(tv.tv_sec >= rt.tv_sec && tv.tv_sec - rt.tv_sec <= 2);
  CHECK(syscall(SYS_gettimeofday, &tv, NULL) == 0);
  CHECK(tv.tv_usec >= 0 && tv.tv_usec < 1000000 && tv.tv_sec - rt.tv_sec <= 2);
  /* time() may read the kernel's coarse clock (glibc's vDSO time on Linux): up to one tick behind
   * CLOCK_REALTIME, so one second earlier than rt near a second's boundary. */
  time_t t1 = time(NULL), t2 = 0;
  CHECK(t1 >= rt.tv_sec - 1 && t1 - rt.tv_sec <= 2);
  CHECK(time(&t2) >= t1 && t2 >= t1);
  long t3 = syscall(SYS_time, NULL);
  CHECK(t3 >= t1 && t3 - t1 <= 2);
  time_t t4 = 0;
  CHECK(syscall(SYS_time, &t4) >= t1 && t4 >= t1);
}

static void test_res(void) {
  struct timespec r;
  clockid_t fine[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_MONOTONIC_RAW};
  for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
    memset(&r, 0xff, sizeof r);
    CHECK(clock_getres(fine[i], &r) == 0);
    CHECK(r.tv_sec == 0 && r.tv_nsec > 0 && r.tv_nsec <= 1000000); /* at most 1 ms */
  }
  clockid_t coarse[] = {CLOCK_MONOTONIC_COARSE, CLOCK_REALTIME_COARSE};
  for (size_t i = 0; i < 2; i++) {
    CHECK(syscall(SYS_clock_getres, coarse[i], &r) == 0);
    CHECK(r.tv_sec == 0 && r.tv_nsec > 0 && r.tv_nsec <= 100000000); /* a tick, at most 100 ms */
  }
  CHECK(clock_getres(CLOCK_MONOTONIC, NULL) == 0);
  CHECK_ERR(clock_getres((clockid_t)100, &r), EINVAL);
}

static void test_sleep(void) {
  /* nanosleep 10 ms: at least 10 ms pass, and not absurdly more. */
  struct timespec req = {0, 10 * 1000000}, rem = {7, 7};
  int64_t t0 = now_ns(CLOCK_MONOTONIC);
  CHECK(nanosleep(&req, &rem) == 0);
  int64_t t1 = now_ns(CLOCK_MONOTONIC);
  CHECK(t1 - t0 >= 10 * 1000000LL);
  CHECK(t1 - t0 < 2000 * 1000000LL);

  t0 = now_ns(CLOCK_MONOTONIC);
  CHECK(syscall(SYS_nanosleep, &req, NULL) == 0);
  t1 = now_ns(CLOCK_MONOTONIC);
  CHECK(t1 - t0 >= 10 * 1000000LL);

  /* Zero sleeps return at once. */
  struct timespec zero = {0, 0};
  CHECK(nanosleep(&zero, NULL) == 0);
  struct timespec bad = {0, 1000000000};
  CHECK_ERR(nanosleep(&bad, NULL), EINVAL);
  struct timespec neg = {-1, 0};
  CHECK_ERR(nanosleep(&neg, NULL), EINVAL);

  /* clock_nanosleep returns the error number instead of setting errno. */
  t0 = now_ns(CLOCK_MONOTONIC);
  CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL) == 0);
  t1 = now_ns(CLOCK_MONOTONIC);
  CHECK(t1 - t0 >= 10 * 1000000LL);

  /* Absolute: sleep until 15 ms from now on MONOTONIC, and on REALTIME. */
  clockid_t abs_clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME};
  for (size_t i = 0; i < 3; i++) {
    struct timespec target;
    CHECK(clock_gettime(abs_clocks[i], &target) == 0);
    target.tv_nsec += 15 * 1000000;
    if (target.tv_nsec >= 1000000000) {
      target.tv_nsec -= 1000000000;
      target.tv_sec++;
    }
    CHECK(clock_nanosleep(abs_clocks[i], TIMER_ABSTIME, &target, NULL) == 0);
    CHECK(now_ns(abs_clocks[i]) >= ns(target));
  }
  /* An absolute time in the past returns immediately. */
  struct timespec past = {1, 0};
  t0 = now_ns(CLOCK_MONOTONIC);
  CHECK(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &past, NULL) == 0);
  CHECK(now_ns(CLOCK_MONOTONIC) - t0 < 1000 * 1000000LL);
  CHECK(syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &req, NULL) == 0);
  CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, NULL) == EINVAL);
  CHECK(clock_nanosleep((clockid_t)100, 0, &req, NULL) == EINVAL);
  /* Sleeping on a CPU-time clock is not supported by Linux either (EINVAL/ENOTSUP). */
}

int main(int argc, char **argv) {
  const char *expected = argc >= 2 ? argv[1] : getenv("KVMS_NOW");
  test_clocks();
  test_wall(expected);
  test_res();
  test_sleep();
  guest_ok("time");
  return 0;
}

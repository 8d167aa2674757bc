/* The guest's vDSO: the clock functions answered from the shared clock page and the TSC, without a
 * VM exit. Anything it cannot answer falls back to the real syscall. The clock page is the page just
 * below the vDSO image (the host maps it there). */
#include <stddef.h>
#include <stdint.h>

#include "clock_page.h"

struct timespec_ { int64_t tv_sec; int64_t tv_nsec; };
struct timeval_ { int64_t tv_sec; int64_t tv_usec; };


static const struct kvms_clock_page* clock_page(void) {
  uintptr_t base;
  /* The load address of this image (its ELF header): rip-relative address of the image start. */
  __asm__("lea __ehdr_start(%%rip), %0" : "=r"(base));
  return (const struct kvms_clock_page*)(base - 4096);
}

static long fallback(long nr, long a, long b) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
  return ret;
}

static uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

static int64_t monotonic_ns(const struct kvms_clock_page* p, int64_t* realtime_off, int64_t* boot_off) {
  uint32_t seq;
  int64_t ns;
  do {
    while ((seq = p->seq) & 1) __asm__ volatile("pause");
    __asm__ volatile("" ::: "memory");
    uint64_t delta = rdtsc() - p->tsc_base;
    if ((int64_t)delta < 0) delta = 0; /* a TSC behind the base: the clock holds, it never wraps */
    ns = (int64_t)(p->monotonic_base_ns + (uint64_t)(((unsigned __int128)delta * p->mult) >> p->shift));
    *realtime_off = p->realtime_offset_ns;
    *boot_off = p->boottime_offset_ns;
    __asm__ volatile("" ::: "memory");
  } while (p->seq != seq);
  return ns;
}

static int do_clock_gettime(int clock, struct timespec_* ts) {
  int64_t real_off, boot_off, ns;
  switch (clock) {
    case 0: case 5:  /* REALTIME, REALTIME_COARSE */
      ns = monotonic_ns(clock_page(), &real_off, &boot_off) + real_off; break;
    case 1: case 4: case 6:  /* MONOTONIC, MONOTONIC_RAW, MONOTONIC_COARSE */
      ns = monotonic_ns(clock_page(), &real_off, &boot_off); break;
    case 7:  /* BOOTTIME */
      ns = monotonic_ns(clock_page(), &real_off, &boot_off) + boot_off; break;
    default:
      return (int)fallback(228, clock, (long)ts);
  }
  ts->tv_sec = ns / 1000000000;
  ts->tv_nsec = ns % 1000000000;
  return 0;
}

int __vdso_clock_gettime(int clock, struct timespec_* ts) { return do_clock_gettime(clock, ts); }

int __vdso_gettimeofday(struct timeval_* tv, void* tz) {
  if (tz) return (int)fallback(96, (long)tv, (long)tz);
  if (tv) {
    struct timespec_ ts;
    do_clock_gettime(0, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
  }
  return 0;
}

int64_t __vdso_time(int64_t* t) {
  struct timespec_ ts;
  do_clock_gettime(0, &ts);
  if (t) *t = ts.tv_sec;
  return ts.tv_sec;
}

int __vdso_clock_getres(int clock, struct timespec_* res) {
  if (clock < 0 || clock > 7 || clock == 2 || clock == 3) return (int)fallback(229, clock, (long)res);
  if (res) { res->tv_sec = 0; res->tv_nsec = 1; }
  return 0;
}

int clock_gettime(int, struct timespec_*) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval_*, void*) __attribute__((weak, alias("__vdso_gettimeofday")));
int64_t time(int64_t*) __attribute__((weak, alias("__vdso_time")));
int clock_getres(int, struct timespec_*) __attribute__((weak, alias("__vdso_clock_getres")));

/* The page the host shares with the guest's vDSO so clock_gettime needs no VM exit.
 * C, because the vDSO (vdso.c) is built as C without a C++ runtime. */
#ifndef KVMS_CLOCK_PAGE_H
#define KVMS_CLOCK_PAGE_H
#include <stdint.h>

struct kvms_clock_page {
  volatile uint32_t seq;        /* odd while the host updates the page */
  uint32_t shift;
  uint64_t mult;                /* ns = ((tsc - tsc_base) * mult) >> shift */
  uint64_t tsc_base;            /* guest TSC at the base instant */
  uint64_t monotonic_base_ns;   /* CLOCK_MONOTONIC at the base instant */
  int64_t realtime_offset_ns;   /* CLOCK_REALTIME - CLOCK_MONOTONIC */
  int64_t boottime_offset_ns;   /* CLOCK_BOOTTIME - CLOCK_MONOTONIC */
};

#endif

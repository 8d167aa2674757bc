/* Shared helpers for the guest test programs. Each program exits 0 and prints "ok NAME" on stdout
 * when every CHECK passes; the first failing CHECK prints "FAIL file:line expr" on stderr and
 * exits 1. Builds with glibc (static, static-pie) and musl, so nothing here is glibc-only. */
#ifndef KVMS_GUEST_CHECK_H
#define KVMS_GUEST_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#define CHECK(expr)                                                                      \
  do {                                                                                   \
    if (!(expr)) {                                                                       \
      int e_ = errno;                                                                    \
      fprintf(stderr, "FAIL %s:%d %s (errno %d: %s)\n", __FILE__, __LINE__, #expr, e_,   \
              strerror(e_));                                                             \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

/* A call that must fail with the given errno. */
#define CHECK_ERR(call, err)                                                             \
  do {                                                                                   \
    errno = 0;                                                                           \
    long r_ = (long)(call);                                                              \
    if (r_ != -1 || errno != (err)) {                                                    \
      int e_ = errno;                                                                    \
      fprintf(stderr, "FAIL %s:%d %s == -1 && errno == %s (got %ld, errno %d: %s)\n",   \
              __FILE__, __LINE__, #call, #err, r_, e_, strerror(e_));                    \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

static inline void guest_ok(const char *name) {
  printf("ok %s\n", name);
  fflush(stdout);
}

/* Constants that musl's headers (it has no linux/ headers) may lack. */
#ifndef SYS_faccessat2
#define SYS_faccessat2 439
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_statx
#define SYS_statx 332
#endif
#ifndef SYS_renameat2
#define SYS_renameat2 316
#endif
#ifndef SYS_getrandom
#define SYS_getrandom 318
#endif

#endif

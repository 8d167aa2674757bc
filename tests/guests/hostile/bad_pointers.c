/* Hostile: system calls with bad pointers: NULL, unmapped, the guest kernel area, non-canonical,
 * and ranges wrapping around the top of the address space. Each must fail with EFAULT, and must
 * neither leak kernel memory nor write into it (the calls after those writing to the kernel area
 * would crash a VM whose GDT or page tables got overwritten). Only raw syscalls: libc (and the
 * vDSO) would touch the pointers in user mode. Expected: exit 0 printing "ok bad_pointers". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int fails;

#define EFAULT_CALL(...)                                                                         \
  do {                                                                                           \
    errno = 0;                                                                                   \
    long r_ = syscall(__VA_ARGS__);                                                              \
    if (r_ != -1 || errno != EFAULT) {                                                           \
      fprintf(stderr, "line %d: syscall(%s) = %ld errno %d (want EFAULT)\n", __LINE__, #__VA_ARGS__, \
              r_, errno);                                                                        \
      fails++;                                                                                   \
    }                                                                                            \
  } while (0)

int main(int argc, char **argv) {
  (void)argc;
  void *bad[] = {
      (void *)0,                       /* NULL */
      (void *)0x1000,                  /* unmapped low page */
      (void *)0xffffff8000000000ull,   /* kernel GDT */
      (void *)0xffffff8000002000ull,   /* kernel entry code */
      (void *)0xffffff8000004000ull,   /* kernel exception stack */
      (void *)0xffffff8000008000ull,   /* kernel page tables */
      (void *)0x0000800000000000ull,   /* non-canonical */
      (void *)0xfffffffffffff000ull,   /* last page */
  };
  int p[2];
  if (pipe2(p, O_NONBLOCK) != 0) return 1;
  /* A valid buffer right before an unmapped page: ranges running off it must fault. */
  char *two = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (two == MAP_FAILED || munmap(two + 4096, 4096) != 0) return 1;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    void *b = bad[i];
    EFAULT_CALL(SYS_write, p[1], b, 16);            /* would leak guest-kernel memory */
    if (write(p[1], "0123456789abcdef", 16) != 16) return 1;
    EFAULT_CALL(SYS_read, p[0], b, 16);             /* would write into it */
    char drain[64];
    while (read(p[0], drain, sizeof drain) > 0) {
    }
    EFAULT_CALL(SYS_open, b, O_RDONLY);
    EFAULT_CALL(SYS_openat, AT_FDCWD, b, O_RDONLY);
    EFAULT_CALL(SYS_fstat, 1, b);
    EFAULT_CALL(SYS_newfstatat, AT_FDCWD, argv[0], b, 0);
    EFAULT_CALL(SYS_stat, argv[0], b);
    EFAULT_CALL(SYS_clock_gettime, CLOCK_MONOTONIC, b);
    if (b) EFAULT_CALL(SYS_gettimeofday, b, NULL); /* NULL is allowed there */
    EFAULT_CALL(SYS_uname, b);
    EFAULT_CALL(SYS_getrandom, b, 16, 0);
    EFAULT_CALL(SYS_getcwd, b, 256);
    EFAULT_CALL(SYS_pipe2, b, 0);
    EFAULT_CALL(SYS_sysinfo, b);
    EFAULT_CALL(SYS_writev, 1, b, 1);
    struct iovec iov = {b, 16};
    EFAULT_CALL(SYS_writev, p[1], &iov, 1);
    EFAULT_CALL(SYS_nanosleep, b, NULL);
    if (b) EFAULT_CALL(SYS_rt_sigaction, 10, b, NULL, 8);
    if (b) EFAULT_CALL(SYS_rt_sigaction, 10, NULL, b, 8);
    if (b) EFAULT_CALL(SYS_prlimit64, 0, 7, NULL, b);
    EFAULT_CALL(SYS_sched_getaffinity, 0, 128, b);
    EFAULT_CALL(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, b);
  }
  /* Ranges that start valid and run into unmapped memory or wrap around. */
  if (write(p[1], "0123456789abcdef", 16) != 16) return 1;
  EFAULT_CALL(SYS_read, p[0], (void *)-8L, 16);
  EFAULT_CALL(SYS_write, p[1], (void *)-8L, 16);
  EFAULT_CALL(SYS_uname, two + 4096 - 100); /* struct utsname is 390 bytes */
  EFAULT_CALL(SYS_clock_gettime, CLOCK_REALTIME, two + 4096 - 8);

  /* Everything still works. */
  char drain[64];
  while (read(p[0], drain, sizeof drain) > 0) {
  }
  struct timespec ts;
  if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) != 0) return 1;
  if (getpid() <= 0) return 1;
  char buf[8];
  if (write(p[1], "ok", 2) != 2 || read(p[0], buf, 8) != 2) return 1;
  if (fails) return 1;
  printf("ok bad_pointers\n");
  return 0;
}

/* tls: __thread variables with initializers (.tdata), zero-initialized ones (.tbss, including a
 * large one), over-aligned ones, their placement below the thread pointer (variant II), and errno.
 *
 * Usage: tls */
#include "check.h"

#include <fcntl.h>
#include <stdint.h>

#ifndef ARCH_GET_FS
#define ARCH_GET_FS 0x1003
#endif

__thread int t_int = 42;
__thread long long t_ll = 0x123456789abcdef0LL;
__thread char t_str[32] = "hello, tls";
__thread double t_dbl = 3.25;
__thread int t_zero;
__thread char t_bss[65536];
__thread __attribute__((aligned(64))) char t_aligned[64] = {1, 2, 3};
__thread __attribute__((aligned(4096))) int t_page_aligned = 7;
static __thread int t_static = -5;
int non_tls_global = 11;

static __attribute__((noinline)) int *addr_of_int(void) { return &t_int; }

int main(void) {
  /* Initial values from the TLS image. */
  CHECK(t_int == 42);
  CHECK(t_ll == 0x123456789abcdef0LL);
  CHECK(strcmp(t_str, "hello, tls") == 0);
  for (size_t i = strlen("hello, tls"); i < sizeof t_str; i++) CHECK(t_str[i] == 0);
  CHECK(t_dbl == 3.25);
  CHECK(t_static == -5);
  CHECK(t_aligned[0] == 1 && t_aligned[2] == 3 && t_aligned[63] == 0);
  CHECK(t_page_aligned == 7);
  /* .tbss is zero, all 64 KB of it. */
  CHECK(t_zero == 0);
  for (size_t i = 0; i < sizeof t_bss; i++) CHECK(t_bss[i] == 0);
  CHECK(non_tls_global == 11);

  /* Alignment is honoured. */
  CHECK(((uintptr_t)t_aligned & 63) == 0);
  CHECK(((uintptr_t)&t_page_aligned & 4095) == 0);

  /* x86-64 uses TLS variant II: the block sits just below the thread pointer, which points at
   * itself; %fs-relative and absolute accesses agree. */
  uintptr_t tp = 0, fs = 0;
  __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
  CHECK(syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) == 0);
  CHECK(tp == fs && tp != 0);
  uintptr_t vars[] = {(uintptr_t)&t_int, (uintptr_t)&t_ll, (uintptr_t)t_str, (uintptr_t)&t_zero,
                      (uintptr_t)t_bss, (uintptr_t)t_aligned, (uintptr_t)&t_page_aligned};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) CHECK(vars[i] < tp && tp - vars[i] < (1 << 20));
  int via_fs;
  long off = (long)((uintptr_t)&t_int - tp);
  __asm__ volatile("movl %%fs:(%1), %0" : "=r"(via_fs) : "r"(off));
  CHECK(via_fs == 42);
  CHECK(addr_of_int() == &t_int);

  /* Writes persist, including across syscalls. */
  t_int = 1000;
  t_bss[0] = 'a';
  t_bss[sizeof t_bss - 1] = 'z';
  t_zero = -1;
  strcpy(t_str, "changed");
  CHECK(getpid() > 0);
  CHECK(write(1, "", 0) == 0);
  CHECK(t_int == 1000 && t_bss[0] == 'a' && t_bss[sizeof t_bss - 1] == 'z' && t_zero == -1);
  CHECK(strcmp(t_str, "changed") == 0);
  CHECK(*addr_of_int() == 1000);

  /* errno is thread-local and set by failing calls. */
  errno = 0;
  CHECK(open("/nonexistent/file", O_RDONLY) == -1);
  CHECK(errno == ENOENT || errno == EACCES); /* EACCES when the sandbox denies the path */
  int *e = &errno;
  /* glibc keeps errno in the TLS block, musl in the thread descriptor at the thread pointer. */
  CHECK((uintptr_t)e + (1 << 20) > tp && (uintptr_t)e < tp + (1 << 20));
  errno = 0;
  CHECK(close(-1) == -1 && errno == EBADF);
  errno = 1234;
  CHECK(*e == 1234);
  CHECK(getpid() > 0); /* successful calls leave errno alone */
  CHECK(errno == 1234);
  errno = 0;
  CHECK(syscall(500) == -1 && errno == ENOSYS);

  guest_ok("tls");
  return 0;
}

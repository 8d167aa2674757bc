/* mmap: brk, anonymous mmap/munmap/mprotect/mremap (in place, grow+move, fixed), madvise(DONTNEED)
 * zeroing, private read-only file mappings, MAP_FIXED, a large PROT_NONE reservation made usable
 * in parts, and a 1 TB mapping that must fail with ENOMEM.
 *
 * Usage: mmap FILE   (FILE readable, at least 3 pages long and not a multiple of the page size;
 *                     without an argument the program maps its own binary) */
#include "check.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#endif
#ifndef MREMAP_FIXED
#define MREMAP_FIXED 2
#endif

#define PG 4096UL
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)
#define RW (PROT_READ | PROT_WRITE)

static int all_bytes(const void *p, int v, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != (unsigned char)v) return 0;
  return 1;
}

static void fill(void *p, size_t n, unsigned seed) {
  unsigned char *c = p;
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(i * 13 + seed);
}

static int filled(const void *p, size_t n, unsigned seed) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != (unsigned char)(i * 13 + seed)) return 0;
  return 1;
}

static void test_brk(void) {
  long cur = syscall(SYS_brk, 0);
  CHECK(cur > 0);
  long want = cur + (1L << 20) + 123;
  CHECK(syscall(SYS_brk, want) == want);
  CHECK(syscall(SYS_brk, 0) == want);
  char *p = (char *)cur;
  CHECK(all_bytes(p, 0, (1 << 20) + 123)); /* fresh heap is zeroed */
  memset(p, 0x5a, (1 << 20) + 123);
  CHECK(syscall(SYS_brk, cur) == cur); /* shrink */
  CHECK(syscall(SYS_brk, cur + 8 * PG) == (long)(cur + 8 * PG)); /* grow again: released pages are zero */
  CHECK(all_bytes((char *)((cur + PG - 1) & ~(PG - 1)) + PG, 0, 4 * PG));
  CHECK(syscall(SYS_brk, cur) == cur);
  /* Impossible requests leave the break where it was. */
  CHECK(syscall(SYS_brk, cur + (1L << 40)) == cur);
  CHECK(syscall(SYS_brk, 4096) == cur);
  CHECK(syscall(SYS_brk, 0) == cur);
  /* malloc still works afterwards, big and small. */
  void *small = malloc(100), *big = malloc(8 << 20);
  CHECK(small && big);
  memset(big, 1, 8 << 20);
  free(big);
  free(small);
}

static void test_anon(void) {
  size_t len = 1 << 20;
  char *p = mmap(NULL, len, RW, ANON, -1, 0);
  CHECK(p != MAP_FAILED);
  CHECK(((uintptr_t)p & (PG - 1)) == 0);
  CHECK(all_bytes(p, 0, len));
  fill(p, len, 1);
  CHECK(filled(p, len, 1));

  /* Punch a hole, refill it with MAP_FIXED_NOREPLACE; occupied ranges are refused. */
  CHECK(munmap(p + PG, PG) == 0);
  char *q = mmap(p + PG, PG, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0);
  CHECK(q == p + PG);
  CHECK(all_bytes(q, 0, PG));
  errno = 0;
  CHECK(mmap(p, PG, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED && errno == EEXIST);
  CHECK(filled(p, PG, 1));

  /* mprotect round trips keep the data. */
  CHECK(mprotect(p, len, PROT_READ) == 0);
  CHECK(filled(p + 2 * PG, PG, 1 + 2 * PG * 13));
  CHECK(mprotect(p, len, PROT_NONE) == 0);
  CHECK(mprotect(p, len, RW) == 0);
  CHECK(filled(p + 2 * PG, len - 2 * PG, (unsigned char)(1 + 2 * PG * 13)));
  p[5] = 7;
  CHECK(p[5] == 7);
  CHECK(mprotect(p, len, PROT_READ | PROT_WRITE | PROT_EXEC) == 0);
  CHECK_ERR(syscall(SYS_mprotect, p + 1, PG, PROT_READ), EINVAL); /* musl's wrapper rounds down */
  CHECK(munmap(p, len) == 0);
  CHECK_ERR(mprotect(p, PG, PROT_READ), ENOMEM); /* no longer mapped */

  /* Argument errors. */
  errno = 0;
  CHECK(mmap(NULL, 0, RW, ANON, -1, 0) == MAP_FAILED && errno == EINVAL);
  errno = 0;
  CHECK(mmap(NULL, PG, RW, MAP_PRIVATE, -1, 0) == MAP_FAILED && errno == EBADF);
  errno = 0;
  CHECK(mmap(NULL, PG, RW, ANON | MAP_SHARED, -1, 0) == MAP_FAILED && errno == EINVAL);
  CHECK_ERR(syscall(SYS_mmap, NULL, (size_t)-PG, RW, ANON, -1, 0), ENOMEM);
  CHECK_ERR(munmap((void *)(p + 1), PG), EINVAL);
  CHECK_ERR(munmap(p, 0), EINVAL);
  CHECK(munmap(p, PG) == 0); /* unmapping nothing is fine */

  /* MAP_POPULATE is a hint; the memory behaves as usual. */
  p = mmap(NULL, 16 * PG, RW, ANON | MAP_POPULATE, -1, 0);
  CHECK(p != MAP_FAILED && all_bytes(p, 0, 16 * PG));
  CHECK(munmap(p, 16 * PG) == 0);

  /* Lots of small maps and unmaps: address reuse and page-table churn. */
  for (int i = 0; i < 5000; i++) {
    char *a = mmap(NULL, PG * (1 + i % 7), RW, ANON, -1, 0);
    CHECK(a != MAP_FAILED);
    CHECK(a[0] == 0 && a[PG * (i % 7)] == 0);
    a[0] = 1;
    a[PG * (i % 7)] = 2;
    CHECK(munmap(a, PG * (1 + i % 7)) == 0);
  }
}

static void test_mremap(void) {
  /* Shrink in place. */
  char *p = mmap(NULL, 4 * PG, RW, ANON, -1, 0);
  CHECK(p != MAP_FAILED);
  fill(p, 4 * PG, 3);
  CHECK(mremap(p, 4 * PG, 2 * PG, 0) == p);
  CHECK(filled(p, 2 * PG, 3));
  CHECK_ERR(mprotect(p + 2 * PG, PG, PROT_READ), ENOMEM);

  /* Grow in place when the space behind is free. */
  char *r = mmap(NULL, 8 * PG, PROT_NONE, ANON, -1, 0);
  CHECK(r != MAP_FAILED);
  CHECK(mmap(r, 2 * PG, RW, ANON | MAP_FIXED, -1, 0) == r);
  fill(r, 2 * PG, 4);
  CHECK(munmap(r + 2 * PG, 6 * PG) == 0);
  CHECK(mremap(r, 2 * PG, 6 * PG, 0) == r);
  CHECK(filled(r, 2 * PG, 4));
  CHECK(all_bytes(r + 2 * PG, 0, 4 * PG));
  r[6 * PG - 1] = 9;

  /* Growth blocked by a neighbour: fails without MAYMOVE, moves with it. */
  CHECK(mprotect(r + 4 * PG, 2 * PG, PROT_NONE) == 0); /* splits r into two mappings */
  errno = 0;
  CHECK(mremap(r, 4 * PG, 5 * PG, 0) == MAP_FAILED && errno == ENOMEM);
  char *m = mremap(r, 4 * PG, 64 * PG, MREMAP_MAYMOVE);
  CHECK(m != MAP_FAILED && m != r);
  CHECK(filled(m, 2 * PG, 4));
  CHECK(all_bytes(m + 2 * PG, 0, 62 * PG));
  CHECK_ERR(mprotect(r, PG, PROT_READ), ENOMEM);            /* old range is gone */
  CHECK(mprotect(r + 4 * PG, 2 * PG, PROT_READ) == 0);       /* the neighbour is untouched */
  CHECK(munmap(r + 4 * PG, 2 * PG) == 0);

  /* MREMAP_FIXED moves to a chosen address, replacing what was there. */
  char *t = mmap(NULL, 64 * PG, RW, ANON, -1, 0);
  CHECK(t != MAP_FAILED);
  memset(t, 0x77, 64 * PG);
  CHECK(mremap(m, 64 * PG, 64 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t) == t);
  CHECK(filled(t, 2 * PG, 4));
  CHECK(all_bytes(t + 2 * PG, 0, 62 * PG));
  CHECK_ERR(mprotect(m, PG, PROT_READ), ENOMEM);
  CHECK(munmap(t, 64 * PG) == 0);

  /* A big move keeps every page. */
  size_t big = 64UL << 20;
  char *b = mmap(NULL, big, RW, ANON, -1, 0);
  CHECK(b != MAP_FAILED);
  for (size_t off = 0; off < big; off += PG) *(size_t *)(b + off) = off ^ 0x5555;
  char *b2 = mremap(b, big, 2 * big, MREMAP_MAYMOVE);
  CHECK(b2 != MAP_FAILED);
  for (size_t off = 0; off < big; off += PG) CHECK(*(size_t *)(b2 + off) == (off ^ 0x5555));
  CHECK(all_bytes(b2 + big, 0, 4 * PG));
  CHECK(munmap(b2, 2 * big) == 0);

  /* Errors. */
  errno = 0;
  CHECK(mremap(p + 1, PG, 2 * PG, MREMAP_MAYMOVE) == MAP_FAILED && errno == EINVAL);
  errno = 0;
  CHECK(mremap(p, 2 * PG, 0, MREMAP_MAYMOVE) == MAP_FAILED && errno == EINVAL);
  errno = 0;
  CHECK(mremap(p, 2 * PG, 4 * PG, 0x100) == MAP_FAILED && errno == EINVAL);
  CHECK(munmap(p, 2 * PG) == 0);
  errno = 0;
  CHECK(mremap(p, PG, 2 * PG, MREMAP_MAYMOVE) == MAP_FAILED && errno == EFAULT);
}

static void test_madvise(void) {
  char *p = mmap(NULL, 16 * PG, RW, ANON, -1, 0);
  CHECK(p != MAP_FAILED);
  memset(p, 0xab, 16 * PG);
  CHECK(madvise(p + 4 * PG, 4 * PG, MADV_DONTNEED) == 0);
  CHECK(all_bytes(p, 0xab, 4 * PG));
  CHECK(all_bytes(p + 4 * PG, 0, 4 * PG)); /* private anonymous: zero-fill after DONTNEED */
  CHECK(all_bytes(p + 8 * PG, 0xab, 8 * PG));
  p[4 * PG] = 1; /* still mapped and writable */
  CHECK(madvise(p, 16 * PG, MADV_WILLNEED) == 0);
  CHECK(madvise(p, 16 * PG, MADV_NORMAL) == 0);
  CHECK(madvise(p, 16 * PG, MADV_SEQUENTIAL) == 0);
  CHECK(madvise(p, 16 * PG, MADV_RANDOM) == 0);
  CHECK_ERR(madvise(p + 1, PG, MADV_DONTNEED), EINVAL);
  CHECK_ERR(madvise(p, PG, 12345), EINVAL);
  CHECK(all_bytes(p + 8 * PG, 0xab, 8 * PG));
  CHECK(munmap(p, 16 * PG) == 0);
}

static void test_file(const char *path) {
  int fd = open(path, O_RDONLY);
  CHECK(fd >= 0);
  struct stat st;
  CHECK(fstat(fd, &st) == 0);
  size_t size = (size_t)st.st_size;
  CHECK(size >= 3 * PG);
  char *want = malloc(size);
  CHECK(want != NULL);
  CHECK(pread(fd, want, size, 0) == (ssize_t)size);

  char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  CHECK(m != MAP_FAILED);
  CHECK(memcmp(m, want, size) == 0);
  if (size % PG) CHECK(all_bytes(m + size, 0, PG - size % PG)); /* tail of the last page */

  /* At an offset. */
  char *o = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, PG);
  CHECK(o != MAP_FAILED);
  CHECK(memcmp(o, want + PG, 2 * PG) == 0);
  CHECK_ERR(syscall(SYS_mmap, NULL, PG, PROT_READ, MAP_PRIVATE, fd, 100), EINVAL);

  /* The mapping outlives the fd. */
  CHECK(close(fd) == 0);
  CHECK(memcmp(m, want, size) == 0);
  CHECK(memcmp(o + PG, want + 2 * PG, PG) == 0);
  CHECK(munmap(o, 2 * PG) == 0);
  /* Partial unmap of a file mapping. */
  CHECK(munmap(m, PG) == 0);
  CHECK(memcmp(m + PG, want + PG, size - PG) == 0);
  CHECK(munmap(m + PG, size - PG) == 0);

  /* Many mappings of the same file. */
  fd = open(path, O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0);
  char *maps[32];
  for (int i = 0; i < 32; i++) {
    maps[i] = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, (off_t)(PG * (i % 3)));
    CHECK(maps[i] != MAP_FAILED);
  }
  for (int i = 0; i < 32; i++) {
    CHECK(memcmp(maps[i], want + PG * (i % 3), PG) == 0);
    CHECK(munmap(maps[i], PG) == 0);
  }

  /* MAP_FIXED: anonymous and file mappings inside a reservation; a fixed map replaces. */
  char *r = mmap(NULL, 16 * PG, PROT_NONE, ANON, -1, 0);
  CHECK(r != MAP_FAILED);
  CHECK(mmap(r + 4 * PG, 2 * PG, RW, ANON | MAP_FIXED, -1, 0) == r + 4 * PG);
  memset(r + 4 * PG, 0x11, 2 * PG);
  CHECK(mmap(r + 8 * PG, 2 * PG, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == r + 8 * PG);
  CHECK(memcmp(r + 8 * PG, want, 2 * PG) == 0);
  CHECK(mmap(r + 5 * PG, PG, RW, ANON | MAP_FIXED, -1, 0) == r + 5 * PG);
  CHECK(all_bytes(r + 4 * PG, 0x11, PG));
  CHECK(all_bytes(r + 5 * PG, 0, PG)); /* replaced: fresh zero page */
  CHECK(mmap(r + 8 * PG, PG, RW, ANON | MAP_FIXED, -1, 0) == r + 8 * PG); /* file page replaced */
  CHECK(all_bytes(r + 8 * PG, 0, PG));
  CHECK(memcmp(r + 9 * PG, want + PG, PG) == 0);
  errno = 0;
  CHECK(mmap(r + 1, PG, RW, ANON | MAP_FIXED, -1, 0) == MAP_FAILED && errno == EINVAL);
  CHECK(munmap(r, 16 * PG) == 0);
  CHECK(close(fd) == 0);
  free(want);
}

static void test_reservation(void) {
  /* Reserve 8 GiB of address space, then make two pieces of it usable. */
  size_t len = 8UL << 30;
  char *r = mmap(NULL, len, PROT_NONE, ANON | MAP_NORESERVE, -1, 0);
  CHECK(r != MAP_FAILED);
  char *mid = r + (4UL << 30);
  CHECK(mprotect(mid, 1 << 20, RW) == 0);
  CHECK(all_bytes(mid, 0, 1 << 20));
  fill(mid, 1 << 20, 5);
  char *end = r + len - 2 * PG;
  CHECK(mprotect(end, 2 * PG, RW) == 0);
  memset(end, 0x42, 2 * PG);
  CHECK(filled(mid, 1 << 20, 5));
  CHECK(all_bytes(end, 0x42, 2 * PG));
  CHECK(mprotect(mid, 1 << 20, PROT_NONE) == 0);
  CHECK(mprotect(mid, 1 << 20, PROT_READ) == 0);
  CHECK(filled(mid, 1 << 20, 5));
  CHECK(munmap(r, len) == 0);
}

static void test_too_big(void) {
  /* 1 TB of committed read-write memory cannot be had. */
  errno = 0;
  void *p = mmap(NULL, 1UL << 40, RW, ANON, -1, 0);
  CHECK(p == MAP_FAILED);
  CHECK(errno == ENOMEM);
  CHECK_ERR(syscall(SYS_mmap, NULL, 1UL << 40, RW, ANON, -1, 0), ENOMEM);
  /* And the process is fine afterwards. */
  p = mmap(NULL, PG, RW, ANON, -1, 0);
  CHECK(p != MAP_FAILED);
  CHECK(munmap(p, PG) == 0);
}

static void test_stack(void) {
  /* Half a megabyte of stack, touched page by page. */
  volatile char buf[512 * 1024];
  for (size_t i = 0; i < sizeof buf; i += PG) buf[i] = (char)i;
  for (size_t i = 0; i < sizeof buf; i += PG) CHECK(buf[i] == (char)i);
}

int main(int argc, char **argv) {
  test_brk();
  test_anon();
  test_mremap();
  test_madvise();
  test_file(argc >= 2 ? argv[1] : argv[0]);
  test_reservation();
  test_too_big();
  test_stack();
  guest_ok("mmap");
  return 0;
}

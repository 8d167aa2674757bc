/* Hostile: ask for 1 TB of read-write memory in several ways. Each must fail cleanly (ENOMEM, or
 * brk staying put) and the process must keep running. Expected: exit 0 printing "ok mmap_1tb";
 * exit 2 if 1 TB was handed out. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TB (1UL << 40)

int main(void) {
  int bad = 0;
  void *p = mmap(NULL, TB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) {
    fprintf(stderr, "mmap 1 TB succeeded at %p\n", p);
    return 2;
  }
  if (errno != ENOMEM) fprintf(stderr, "mmap 1 TB: %s (want ENOMEM)\n", strerror(errno)), bad = 1;
  p = mmap(NULL, TB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p != MAP_FAILED) {
    fprintf(stderr, "mmap 1 TB MAP_POPULATE succeeded\n");
    return 2;
  }
  if (errno != ENOMEM) fprintf(stderr, "mmap 1 TB populate: %s (want ENOMEM)\n", strerror(errno)), bad = 1;
  /* brk to +1 TB: the break stays where it was. */
  long cur = syscall(SYS_brk, 0);
  long got = syscall(SYS_brk, cur + (long)TB);
  if (got != cur) {
    fprintf(stderr, "brk +1 TB moved the break to %lx (was %lx)\n", got, cur);
    return 2;
  }
  /* mremap a page up to 1 TB. */
  char *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q == MAP_FAILED) return 1;
  q[0] = 'x';
  void *r = mremap(q, 4096, TB, MREMAP_MAYMOVE);
  if (r != MAP_FAILED) {
    fprintf(stderr, "mremap to 1 TB succeeded\n");
    return 2;
  }
  if (errno != ENOMEM) fprintf(stderr, "mremap 1 TB: %s (want ENOMEM)\n", strerror(errno)), bad = 1;
  if (q[0] != 'x') return 1;
  /* Still alive and able to map ordinary amounts. */
  p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 1;
  memset(p, 1, 1 << 20);
  if (bad) return 1;
  printf("ok mmap_1tb\n");
  return 0;
}

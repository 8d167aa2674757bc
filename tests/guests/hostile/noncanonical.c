/* Hostile: read a non-canonical address (bit 47 set, upper bits clear). Expected: general
 * protection fault (not a page fault) -> SIGSEGV, status 139. */
#include <stdint.h>
#include <stdio.h>
int main(void) {
  uint64_t v = *(volatile uint64_t *)0x0000800000000000ull;
  printf("read %llx\n", (unsigned long long)v);
  return 2;
}

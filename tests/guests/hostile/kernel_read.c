/* Hostile: read the guest kernel's page tables (kernel slot + 0x8000) to leak them.
 * Expected: page fault -> SIGSEGV, status 139. Natively also 139. */
#include <stdint.h>
#include <stdio.h>
int main(void) {
  uint64_t v = *(volatile uint64_t *)0xffffff8000008000ull;
  printf("LEAK %llx\n", (unsigned long long)v);
  return 2;
}

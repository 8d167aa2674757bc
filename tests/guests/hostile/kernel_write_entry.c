/* Hostile: overwrite the guest kernel's entry code (kernel slot + 0x2000) with a jump-to-self.
 * Expected: page fault -> SIGSEGV, status 139. Natively also 139. */
#include <stdint.h>
int main(void) {
  *(volatile uint64_t *)0xffffff8000002000ull = 0xfeebfeebfeebfeebull; /* jmp $ */
  return 0;
}

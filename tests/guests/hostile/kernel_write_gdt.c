/* Hostile: write to the guest kernel area (GDT/TSS at the start of kvmserver's kernel slot).
 * Expected: page fault (the page is supervisor-only) -> SIGSEGV, status 139. Natively also 139. */
#include <stdint.h>
int main(void) {
  *(volatile uint64_t *)0xffffff8000000000ull = 0;
  return 0;
}

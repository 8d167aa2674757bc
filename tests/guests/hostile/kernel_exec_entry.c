/* Hostile: jump straight into the guest kernel's entry code (kernel slot + 0x2000) from user mode.
 * Expected: page fault on the instruction fetch (supervisor page) -> SIGSEGV, status 139. */
#include <stdint.h>
int main(void) {
  void (*entry)(void) = (void (*)(void))0xffffff8000002000ull;
  entry();
  return 0;
}

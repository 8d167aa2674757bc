/* Hostile: cli in user mode (IOPL 0). Expected: general protection fault -> SIGSEGV, status 139. */
int main(void) {
  __asm__ volatile("cli");
  return 2;
}

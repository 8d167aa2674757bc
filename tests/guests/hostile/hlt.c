/* Hostile: the privileged hlt instruction in user mode. Expected: general protection fault ->
 * SIGSEGV, status 139 (the VM must not halt). */
int main(void) {
  __asm__ volatile("hlt");
  return 2;
}

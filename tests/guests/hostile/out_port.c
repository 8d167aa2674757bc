/* Hostile: write to I/O port 0x10, the port kvmserver's own entry code uses for system calls.
 * In user mode with IOPL 0 this must be a general protection fault -> SIGSEGV, status 139. */
int main(void) {
  __asm__ volatile("mov $60, %%eax\n\tout %%al, $0x10" ::: "eax");
  return 2;
}

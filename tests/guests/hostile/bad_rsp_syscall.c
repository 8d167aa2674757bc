/* Hostile: make system calls with rsp pointing at garbage: NULL, the kernel area's exception
 * stack, and a non-canonical address. The syscall path must not use the user stack.
 * Expected: exit 0 (the final exit_group(0) goes through), after printing "ok bad_rsp_syscall". */
#include <stdio.h>
int main(void) {
  printf("ok bad_rsp_syscall\n");
  fflush(stdout);
  __asm__ volatile(
      "mov %%rsp, %%r12\n\t"
      "xor %%esp, %%esp\n\t"
      "mov $39, %%eax\n\tsyscall\n\t" /* getpid with rsp = 0 */
      "movabs $0xffffff8000006000, %%rsp\n\t"
      "mov $39, %%eax\n\tsyscall\n\t" /* getpid with rsp inside the kernel's stack */
      "movabs $0x0000800000000000, %%rsp\n\t"
      "mov $39, %%eax\n\tsyscall\n\t" /* non-canonical rsp */
      "mov %%r12, %%rsp\n\t" ::: "rax", "rcx", "r11", "r12", "memory");
  __asm__ volatile("xor %%esp, %%esp\n\txor %%edi, %%edi\n\tmov $231, %%eax\n\tsyscall\n\tud2" ::: "memory");
  return 2;
}

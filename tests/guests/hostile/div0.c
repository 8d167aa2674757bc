/* Hostile: integer division by zero. Expected: #DE (divide error) -> SIGFPE, status 136. */
int main(void) {
  __asm__ volatile("xor %%ecx, %%ecx\n\tmov $1, %%eax\n\txor %%edx, %%edx\n\tdiv %%ecx" ::: "eax", "ecx", "edx");
  return 2;
}

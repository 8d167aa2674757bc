/* Hostile: breakpoint instruction. Expected: #BP -> SIGTRAP, status 133. */
int main(void) {
  __asm__ volatile("int3");
  return 2;
}

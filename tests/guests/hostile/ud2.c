/* Hostile: undefined instruction. Expected: #UD (invalid opcode) -> SIGILL, status 132. */
int main(void) {
  __asm__ volatile("ud2");
  return 2;
}

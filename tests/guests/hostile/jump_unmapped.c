/* Hostile: jump to the unmapped address 0x1000. Expected: page fault -> SIGSEGV, status 139. */
int main(void) {
  void (*f)(void) = (void (*)(void))0x1000;
  f();
  return 2;
}

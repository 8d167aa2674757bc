/* Hostile: spin forever without making a system call. Expected: killed by --timeout, status 124. */
int main(void) {
  for (;;) __asm__ volatile("" ::: "memory");
}

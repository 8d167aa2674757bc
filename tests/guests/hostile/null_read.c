/* Hostile: read through a NULL pointer. Expected: page fault -> SIGSEGV, status 139. */
#include <stdio.h>
int main(void) {
  int v = *(volatile int *)0;
  printf("read %d\n", v);
  return 2;
}

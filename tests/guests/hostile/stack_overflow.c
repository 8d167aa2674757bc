/* Hostile: unbounded recursion until the stack runs out. Expected: page fault at the end of the
 * stack -> SIGSEGV, status 139 (and nothing else of the process overwritten on the way). */
#include <stdio.h>
#pragma GCC diagnostic ignored "-Winfinite-recursion"
static volatile int sink;
static int recurse(int n) {
  volatile char frame[4096];
  frame[0] = (char)n;
  frame[4095] = (char)n;
  int r = recurse(n + 1);
  return r + frame[0] + frame[4095];
}
int main(int argc, char **argv) {
  (void)argv;
  sink = recurse(argc);
  printf("returned %d\n", sink);
  return 2;
}

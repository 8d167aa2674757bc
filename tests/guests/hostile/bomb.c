/* Hostile: one resource attack per run (bombs.h), e.g. `bomb fork 10`, `bomb threads`,
 * `bomb files /etc/hostname`, `bomb memory 4`, `bomb tmp /tmp`. Prints "ok bomb <summary>" and
 * exits 0 whatever the attack ran into; tests/e2e/limits.sh checks the summary against the caps. */
#include "bombs.h"

int main(int argc, char** argv) {
  char line[BOMB_LINE];
  if (bomb_run(argc - 1, argv + 1, line) != 0) {
    fprintf(stderr, "usage: bomb fork|clone [LEVELS] | threads [MAX] | files PATH | pipes | sockets | epoll |"
                    " memory [CHILDREN] | memfd [MAX_MB] | timers [MAX] | tmp DIR [keep] | signals [MAX] | orphan [SECONDS]\n");
    return 2;
  }
  printf("ok bomb %s\n", line);
  return 0;
}

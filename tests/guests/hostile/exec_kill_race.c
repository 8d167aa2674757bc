/* Hostile: fork children that exec something that fails or succeeds ("" with argv {NULL},
 * execveat AT_EMPTY_PATH, a missing file, ourselves) and kill each one with SIGKILL at once, while
 * it may be exiting, exec'ing or not started yet; then wait for it. Crashed kvmserver once (a kill
 * reached a child process that was being destroyed). Expected: exit 0, "ok exec_kill_race N" (N rounds, 200 by default). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "child") == 0) return 0;
  const int rounds = argc > 1 ? atoi(argv[1]) : 200;
  int odd = 0;
  for (int i = 0; i < rounds; i++) {
    pid_t c = fork();
    if (c < 0) {
      perror("fork");
      return 1;
    }
    if (c == 0) {
      char* no_argv[] = {NULL};
      char* envp[] = {NULL};
      char* self[] = {argv[0], "child", NULL};
      switch (i % 4) {
        case 0: execve("", no_argv, envp); break;
        case 1: execve(argv[0], self, envp); break;
        case 2: syscall(SYS_execveat, AT_FDCWD, "", no_argv, envp, AT_EMPTY_PATH); break;
        case 3: execve("/nonexistent/program", no_argv, envp); break;
      }
      _exit(1);
    }
    if (i % 3 == 0) usleep((useconds_t)(i % 7) * 100);
    kill(c, SIGKILL);
    int status = 0;
    if (waitpid(c, &status, 0) != c) {
      perror("waitpid");
      return 1;
    }
    /* Killed, or ended first with its own status (1 after a failed exec, 0 after exec'ing us). */
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) && !(WIFEXITED(status) && WEXITSTATUS(status) <= 1)) odd++;
  }
  if (odd) {
    fprintf(stderr, "%d children ended neither killed nor with status 0/1\n", odd);
    return 1;
  }
  printf("ok exec_kill_race %d\n", rounds);
  return 0;
}

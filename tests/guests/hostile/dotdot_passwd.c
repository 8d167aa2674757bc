/* Hostile: escape the working directory with "..": open "../../../../etc/passwd" (and deeper and
 * odder spellings) relative to the cwd, with open, openat(AT_FDCWD) and openat(fd of "."), plus a
 * /proc/self/cwd route. Run with the cwd four levels deep (so the short form reaches /etc/passwd)
 * and at most the cwd granted. Expected under kvmserver: every attempt EACCES -> exit 0.
 * Exit 2 if any attempt opened a file (natively they do), 1 for other errors. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *paths[] = {
    "../../../../etc/passwd",
    "../../../../../../../../../../../../../../../../etc/passwd",
    "./../.././../../etc/passwd",
    ".//..//..//..//..//etc//passwd",
    "../../../../etc/../etc/passwd",
    "/proc/self/cwd/../../../../etc/passwd",
};

int main(void) {
  int leaks = 0, other = 0;
  int dot = open(".", O_RDONLY | O_DIRECTORY);
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    for (int how = 0; how < 3; how++) {
      int fd;
      errno = 0;
      if (how == 0) fd = open(paths[i], O_RDONLY);
      else if (how == 1) fd = openat(AT_FDCWD, paths[i], O_RDONLY);
      else if (dot >= 0) fd = openat(dot, paths[i], O_RDONLY);
      else continue; /* "." itself may be denied */
      if (fd >= 0) {
        printf("LEAK: opened %s (method %d)\n", paths[i], how);
        leaks++;
        close(fd);
      } else if (errno != EACCES) {
        fprintf(stderr, "%s (method %d): %s (want EACCES)\n", paths[i], how, strerror(errno));
        other++;
      }
    }
  }
  if (leaks) return 2;
  if (other) return 1;
  printf("ok dotdot_passwd\n");
  return 0;
}

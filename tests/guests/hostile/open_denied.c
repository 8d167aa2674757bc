/* Hostile: open each PATH given on the command line for reading; every one must be EACCES.
 * Used for symlink escapes: a granted directory holding "esc -> /etc/passwd" and "escdir -> /etc",
 * opened as DIR/esc and DIR/escdir/passwd. Expected under kvmserver: exit 0.
 * Exit 2 if any path opened, 1 for other errors. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int leaks = 0, other = 0;
  for (int i = 1; i < argc; i++) {
    errno = 0;
    int fd = open(argv[i], O_RDONLY);
    if (fd >= 0) {
      printf("LEAK: opened %s\n", argv[i]);
      leaks++;
      close(fd);
    } else if (errno != EACCES) {
      fprintf(stderr, "%s: %s (want EACCES)\n", argv[i], strerror(errno));
      other++;
    }
  }
  if (argc < 2) return 1;
  if (leaks) return 2;
  if (other) return 1;
  printf("ok open_denied\n");
  return 0;
}

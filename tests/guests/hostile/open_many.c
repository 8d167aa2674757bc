/* Hostile: open the program's own binary (readable without grants) up to 100000 times, until
 * EMFILE or ENFILE. Must not crash the guest or the host. Expected: exit 0, printing
 * "ok open_many N" with the number of fds it got. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  (void)argc;
  int n = 0, last = -1, err = 0;
  for (; n < 100000; n++) {
    int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      break;
    }
    last = fd;
  }
  if (n < 100000 && err != EMFILE && err != ENFILE) {
    fprintf(stderr, "open #%d failed with %s, want EMFILE or ENFILE\n", n, strerror(err));
    return 1;
  }
  if (n < 10) {
    fprintf(stderr, "only %d opens succeeded\n", n);
    return 1;
  }
  /* The table still works: free one slot, the next open takes it. */
  if (close(last) != 0) return 1;
  int fd = open(argv[0], O_RDONLY);
  if (fd != last) {
    fprintf(stderr, "reopen gave fd %d, want %d (%s)\n", fd, last, strerror(errno));
    return 1;
  }
  char magic[4];
  if (pread(fd, magic, 4, 0) != 4 || memcmp(magic, "\177ELF", 4) != 0) return 1;
  /* Close everything above stderr in one call. */
  if (syscall(SYS_close_range, 3, ~0U, 0) != 0) return 1;
  if (fcntl(last, F_GETFD) != -1 || errno != EBADF) return 1;
  fd = open(argv[0], O_RDONLY);
  if (fd != 3) return 1;
  printf("ok open_many %d (%s)\n", n, n < 100000 ? strerror(err) : "no limit hit");
  return 0;
}

/* Hostile: read /etc/shadow without a grant. Expected under kvmserver: EACCES -> exit 0.
 * Exit 2 if the file could be read (natively as root it can), 1 for any other error. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
  int fd = open("/etc/shadow", O_RDONLY);
  if (fd >= 0) {
    char buf[16];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("LEAK: opened /etc/shadow, read %zd bytes\n", n);
    return 2;
  }
  if (errno != EACCES) {
    fprintf(stderr, "open /etc/shadow: %s (want EACCES)\n", strerror(errno));
    return 1;
  }
  printf("ok read_shadow\n");
  return 0;
}

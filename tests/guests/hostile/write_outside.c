/* Hostile: modify things outside --allow-write. FILE is an existing file and DIR an existing
 * directory (FILE's), both readable but not writable for the guest. Every attempt below must fail
 * with EACCES and change nothing.
 * Usage: write_outside FILE DIR
 * Exit 0 when all were refused with EACCES, 2 if any went through (natively they do), 1 otherwise. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int leaks, other;

static void expect(long r, const char *what) {
  if (r >= 0) {
    printf("LEAK: %s succeeded\n", what);
    leaks++;
  } else if (errno != EACCES) {
    fprintf(stderr, "%s: %s (want EACCES)\n", what, strerror(errno));
    other++;
  }
}

int main(int argc, char **argv) {
  if (argc != 3) return 1;
  const char *file = argv[1], *dir = argv[2];
  char p[4096], q[4096];
  int fd;

  /* The file is readable: reading works, which proves the path itself is fine. */
  fd = open(file, O_RDONLY);
  if (fd < 0) {
    fprintf(stderr, "cannot even read %s: %s\n", file, strerror(errno));
    return 1;
  }

  errno = 0; expect(open(file, O_WRONLY), "open O_WRONLY");
  errno = 0; expect(open(file, O_RDWR), "open O_RDWR");
  errno = 0; expect(open(file, O_WRONLY | O_APPEND), "open O_APPEND");
  errno = 0; expect(open(file, O_RDONLY | O_TRUNC), "open O_RDONLY|O_TRUNC");
  snprintf(p, sizeof p, "%s/new-file", dir);
  errno = 0; expect(open(p, O_CREAT | O_WRONLY, 0644), "create file");
  snprintf(p, sizeof p, "%s/new-file-ro", dir);
  errno = 0; expect(open(p, O_CREAT | O_RDONLY, 0644), "create file O_RDONLY");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  errno = 0; expect(openat(dfd, "new-at", O_CREAT | O_RDWR, 0644), "openat create");
  snprintf(p, sizeof p, "%s/new-dir", dir);
  errno = 0; expect(mkdir(p, 0755), "mkdir");
  errno = 0; expect(mkdirat(dfd, "new-dir-at", 0755), "mkdirat");
  errno = 0; expect(unlink(file), "unlink");
  errno = 0; expect(syscall(SYS_unlinkat, dfd, strrchr(file, '/') ? strrchr(file, '/') + 1 : file, 0), "unlinkat");
  snprintf(q, sizeof q, "%s/renamed", dir);
  errno = 0; expect(rename(file, q), "rename");
  errno = 0; expect(syscall(SYS_renameat2, AT_FDCWD, file, AT_FDCWD, q, 1 /* NOREPLACE */), "renameat2");
  snprintf(p, sizeof p, "%s/sym", dir);
  errno = 0; expect(symlink(file, p), "symlink");
  snprintf(p, sizeof p, "%s/hard", dir);
  errno = 0; expect(link(file, p), "link");
  errno = 0; expect(rmdir(dir), "rmdir");
  struct timespec ts[2] = {{1, 0}, {1, 0}};
  errno = 0; expect(utimensat(AT_FDCWD, file, ts, 0), "utimensat");
  errno = 0; expect(futimens(fd, ts), "futimens on a read-only fd");
  errno = 0; expect(fchmod(fd, 0777), "fchmod");
  errno = 0; expect(chown(file, (uid_t)-1, (gid_t)-1), "chown");
  errno = 0; expect(lchown(file, (uid_t)-1, (gid_t)-1), "lchown");
  errno = 0; expect(fchownat(AT_FDCWD, file, (uid_t)-1, (gid_t)-1, AT_SYMLINK_NOFOLLOW), "fchownat");
  errno = 0; expect(fchown(fd, (uid_t)-1, (gid_t)-1), "fchown on a read-only fd");
  close(fd);
  if (dfd >= 0) close(dfd);
  if (leaks) return 2;
  if (other) return 1;
  printf("ok write_outside\n");
  return 0;
}

/* file_io: open/read/write/pread/pwrite/readv/writev/lseek/dup/dup2/dup3/fcntl/close_range/pipe2/ioctl.
 * Usage: file_io DIR   (DIR must be readable and writable; a scratch file is created and removed). */
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <termios.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

static void test_basic_rw(const char *path) {
  int fd = openat(AT_FDCWD, path, O_CREAT | O_RDWR | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK(write(fd, "hello world\n", 12) == 12);
  CHECK(lseek(fd, 0, SEEK_CUR) == 12);
  CHECK(lseek(fd, 0, SEEK_END) == 12);
  CHECK(lseek(fd, -6, SEEK_END) == 6);
  char buf[64] = {0};
  CHECK(read(fd, buf, sizeof buf) == 6);
  CHECK(memcmp(buf, "world\n", 6) == 0);
  CHECK(read(fd, buf, sizeof buf) == 0); /* EOF */
  CHECK(lseek(fd, 0, SEEK_SET) == 0);
  CHECK(read(fd, buf, 0) == 0);
  CHECK(lseek(fd, 0, SEEK_CUR) == 0);
  CHECK_ERR(lseek(fd, -1, SEEK_SET), EINVAL);
  CHECK_ERR(lseek(fd, 0, 42), EINVAL);

  /* pwrite/pread do not move the file offset. */
  CHECK(lseek(fd, 3, SEEK_SET) == 3);
  CHECK(pwrite(fd, "WORLD", 5, 6) == 5);
  memset(buf, 0, sizeof buf);
  CHECK(pread(fd, buf, 12, 0) == 12);
  CHECK(memcmp(buf, "hello WORLD\n", 12) == 0);
  CHECK(lseek(fd, 0, SEEK_CUR) == 3);
  CHECK(pread(fd, buf, 10, 100) == 0);
  CHECK_ERR(pread(fd, buf, 1, -1), EINVAL);

  /* writev/readv, scattered over several buffers. */
  CHECK(lseek(fd, 0, SEEK_SET) == 0);
  CHECK(ftruncate(fd, 0) == 0);
  struct iovec wv[3] = {{(void *)"abc", 3}, {(void *)"", 0}, {(void *)"defghij", 7}};
  CHECK(writev(fd, wv, 3) == 10);
  CHECK(lseek(fd, 0, SEEK_SET) == 0);
  char a[4] = {0}, b[16] = {0};
  struct iovec rv[2] = {{a, 4}, {b, sizeof b}};
  CHECK(readv(fd, rv, 2) == 10);
  CHECK(memcmp(a, "abcd", 4) == 0);
  CHECK(memcmp(b, "efghij", 6) == 0);
  /* preadv/pwritev via the same iovecs are not required; a hole reads back as zeros. */
  CHECK(lseek(fd, 4096, SEEK_SET) == 4096);
  CHECK(write(fd, "Z", 1) == 1);
  struct stat st;
  CHECK(fstat(fd, &st) == 0);
  CHECK(st.st_size == 4097);
  static char big[4097];
  CHECK(pread(fd, big, sizeof big, 0) == 4097);
  CHECK(memcmp(big, "abcdefghij", 10) == 0);
  for (int i = 10; i < 4096; i++) CHECK(big[i] == 0);
  CHECK(big[4096] == 'Z');

  /* A large write and read, more than one page, in one call each. */
  static char pattern[200000], back[200000];
  for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (char)(i * 31 + 7);
  CHECK(pwrite(fd, pattern, sizeof pattern, 12345) == (ssize_t)sizeof pattern);
  CHECK(pread(fd, back, sizeof back, 12345) == (ssize_t)sizeof back);
  CHECK(memcmp(pattern, back, sizeof back) == 0);
  CHECK(close(fd) == 0);
  CHECK_ERR(close(fd), EBADF);
}

static void test_open_errors(const char *dir, const char *path) {
  char missing[PATH_MAX];
  snprintf(missing, sizeof missing, "%s/does-not-exist", dir);
  CHECK_ERR(open(missing, O_RDONLY), ENOENT);
  CHECK_ERR(open(path, O_RDONLY | O_DIRECTORY), ENOTDIR);
  CHECK_ERR(open(path, O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
  CHECK_ERR(open(dir, O_WRONLY), EISDIR);
  char under_file[PATH_MAX];
  snprintf(under_file, sizeof under_file, "%s/x", path);
  CHECK_ERR(open(under_file, O_RDONLY), ENOTDIR);
  /* The raw open(2) syscall (libc uses openat). */
  long fd = syscall(SYS_open, path, O_RDONLY);
  CHECK(fd >= 0);
  char c;
  CHECK(read((int)fd, &c, 1) == 1 && c == 'a');
  CHECK_ERR(write((int)fd, "x", 1), EBADF); /* opened read-only */
  CHECK(close((int)fd) == 0);
  int wfd = open(path, O_WRONLY);
  CHECK(wfd >= 0);
  CHECK_ERR(read(wfd, &c, 1), EBADF); /* opened write-only */
  CHECK(close(wfd) == 0);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(dfd >= 0);
  CHECK_ERR(read(dfd, &c, 1), EISDIR);
  /* openat relative to a directory fd. */
  const char *base = strrchr(path, '/') + 1;
  int rfd = openat(dfd, base, O_RDONLY);
  CHECK(rfd >= 0);
  CHECK(read(rfd, &c, 1) == 1 && c == 'a');
  CHECK(close(rfd) == 0);
  CHECK(close(dfd) == 0);
  CHECK_ERR(read(12345, &c, 1), EBADF);
  CHECK_ERR(write(-1, &c, 1), EBADF);
}

static void test_append(const char *path) {
  int fd = open(path, O_WRONLY | O_TRUNC);
  CHECK(fd >= 0);
  CHECK(write(fd, "one", 3) == 3);
  CHECK(close(fd) == 0);
  fd = open(path, O_WRONLY | O_APPEND);
  CHECK(fd >= 0);
  CHECK(lseek(fd, 0, SEEK_SET) == 0);
  CHECK(write(fd, "two", 3) == 3); /* appends despite the offset */
  CHECK(close(fd) == 0);
  fd = open(path, O_RDONLY);
  char buf[16] = {0};
  CHECK(read(fd, buf, sizeof buf) == 6);
  CHECK(strcmp(buf, "onetwo") == 0);
  CHECK(close(fd) == 0);
}

static void test_dup_fcntl(const char *path) {
  int fd = open(path, O_RDWR);
  CHECK(fd >= 0);
  CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR);
  CHECK(fcntl(fd, F_GETFD) == 0);

  /* dup shares the file offset. */
  int d = dup(fd);
  CHECK(d >= 0 && d != fd);
  CHECK(lseek(fd, 2, SEEK_SET) == 2);
  CHECK(lseek(d, 0, SEEK_CUR) == 2);
  char c;
  CHECK(read(d, &c, 1) == 1 && c == 'e');
  CHECK(lseek(fd, 0, SEEK_CUR) == 3);
  CHECK(fcntl(d, F_GETFD) == 0); /* dup clears FD_CLOEXEC */

  /* dup2 to a chosen number, and onto itself. */
  CHECK(dup2(fd, 50) == 50);
  CHECK(lseek(50, 0, SEEK_CUR) == 3);
  CHECK(dup2(50, 50) == 50);
  CHECK(syscall(SYS_dup2, fd, 51) == 51);
  CHECK_ERR(dup2(777, 52), EBADF);
  CHECK(!fd_is_open(52));
  /* dup2 onto an open fd closes it silently. */
  CHECK(dup2(d, 50) == 50);

  /* dup3 with O_CLOEXEC; dup3 onto itself is EINVAL. */
  CHECK(syscall(SYS_dup3, fd, 60, O_CLOEXEC) == 60);
  CHECK(fcntl(60, F_GETFD) == FD_CLOEXEC);
  CHECK_ERR(syscall(SYS_dup3, fd, fd, 0), EINVAL);
  CHECK_ERR(syscall(SYS_dup3, fd, 61, 0x12345), EINVAL);
  CHECK(!fd_is_open(61));

  /* F_DUPFD / F_DUPFD_CLOEXEC pick the lowest free fd >= arg. */
  int f1 = fcntl(fd, F_DUPFD, 100);
  CHECK(f1 == 100);
  int f2 = fcntl(fd, F_DUPFD, 100);
  CHECK(f2 == 101);
  int f3 = fcntl(fd, F_DUPFD_CLOEXEC, 100);
  CHECK(f3 == 102);
  CHECK(fcntl(f3, F_GETFD) == FD_CLOEXEC);
  CHECK(fcntl(f1, F_SETFD, FD_CLOEXEC) == 0);
  CHECK(fcntl(f1, F_GETFD) == FD_CLOEXEC);
  CHECK(fcntl(f1, F_SETFD, 0) == 0);
  CHECK(fcntl(f1, F_GETFD) == 0);
  CHECK_ERR(fcntl(999, F_GETFD), EBADF);

  /* F_SETFL O_APPEND is visible through the shared open file description. */
  CHECK(fcntl(fd, F_SETFL, O_APPEND) == 0);
  CHECK(fcntl(d, F_GETFL) & O_APPEND);
  CHECK(fcntl(fd, F_SETFL, 0) == 0);
  CHECK(!(fcntl(d, F_GETFL) & O_APPEND));

  /* The lowest free fd is reused. */
  CHECK(close(d) == 0);
  int again = dup(fd);
  CHECK(again == d);

  /* close_range: close 100..102, then mark 50..60 close-on-exec. */
  CHECK(syscall(SYS_close_range, 100, 102, 0) == 0);
  CHECK(!fd_is_open(100) && !fd_is_open(101) && !fd_is_open(102));
  CHECK(fd_is_open(fd));
  CHECK(fcntl(50, F_GETFD) == 0);
  CHECK(syscall(SYS_close_range, 50, 60, CLOSE_RANGE_CLOEXEC) == 0);
  CHECK(fcntl(50, F_GETFD) == FD_CLOEXEC);
  CHECK(fcntl(51, F_GETFD) == FD_CLOEXEC);
  CHECK(syscall(SYS_close_range, 50, ~0U, 0) == 0);
  CHECK(!fd_is_open(50) && !fd_is_open(51) && !fd_is_open(60));
  CHECK_ERR(syscall(SYS_close_range, 10, 5, 0), EINVAL);
  CHECK(close(again) == 0);
  CHECK(close(fd) == 0);
}

static void test_pipes(void) {
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  CHECK(fcntl(p[0], F_GETFD) == FD_CLOEXEC);
  CHECK(fcntl(p[0], F_GETFL) & O_NONBLOCK);
  CHECK((fcntl(p[0], F_GETFL) & O_ACCMODE) == O_RDONLY);
  CHECK((fcntl(p[1], F_GETFL) & O_ACCMODE) == O_WRONLY);
  int n = -1;
  CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 0);
  char buf[64];
  CHECK_ERR(read(p[0], buf, sizeof buf), EAGAIN);
  CHECK(write(p[1], "12345", 5) == 5);
  CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 5);
  CHECK(read(p[0], buf, 2) == 2 && memcmp(buf, "12", 2) == 0);
  CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 3);
  struct iovec iov[2] = {{(void *)"ab", 2}, {(void *)"cd", 2}};
  CHECK(writev(p[1], iov, 2) == 4);
  CHECK(read(p[0], buf, sizeof buf) == 7 && memcmp(buf, "345abcd", 7) == 0);
  CHECK_ERR(write(p[0], "x", 1), EBADF);
  CHECK_ERR(read(p[1], buf, 1), EBADF);
  CHECK_ERR(lseek(p[0], 0, SEEK_SET), ESPIPE);
  CHECK_ERR(pread(p[0], buf, 1, 0), ESPIPE);
  /* A pipe is not a terminal. */
  struct termios t;
  CHECK_ERR(ioctl(p[0], TCGETS, &t), ENOTTY);
  CHECK_ERR(tcgetattr(p[1], &t), ENOTTY);
  CHECK(!isatty(p[0]));
  struct winsize ws;
  CHECK_ERR(ioctl(p[1], TIOCGWINSZ, &ws), ENOTTY);
  /* Fill the pipe until it would block; the write end then reports EAGAIN. */
  static char chunk[4096];
  long total = 0;
  for (;;) {
    ssize_t w = write(p[1], chunk, sizeof chunk);
    if (w < 0) {
      CHECK(errno == EAGAIN);
      break;
    }
    total += w;
    CHECK(total < (1L << 24));
  }
  CHECK(total >= 4096);
  CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == total);
  CHECK(close(p[1]) == 0);
  long got = 0;
  for (;;) {
    ssize_t r = read(p[0], chunk, sizeof chunk);
    CHECK(r >= 0);
    if (r == 0) break; /* EOF once the write end is closed and the pipe drained */
    got += r;
  }
  CHECK(got == total);
  CHECK(close(p[0]) == 0);

  /* A blocking pipe made non-blocking with FIONBIO, then blocking again. */
  CHECK(syscall(SYS_pipe2, p, 0) == 0); /* musl turns pipe2(p, 0) into pipe() */
  CHECK(fcntl(p[0], F_GETFD) == 0);
  CHECK(!(fcntl(p[0], F_GETFL) & O_NONBLOCK));
  int on = 1;
  CHECK(ioctl(p[0], FIONBIO, &on) == 0);
  CHECK(fcntl(p[0], F_GETFL) & O_NONBLOCK);
  CHECK_ERR(read(p[0], buf, 1), EAGAIN);
  on = 0;
  CHECK(ioctl(p[0], FIONBIO, &on) == 0);
  CHECK(!(fcntl(p[0], F_GETFL) & O_NONBLOCK));
  CHECK(write(p[1], "q", 1) == 1);
  CHECK(read(p[0], buf, 1) == 1 && buf[0] == 'q');
  CHECK(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
  CHECK_ERR(read(p[0], buf, 1), EAGAIN);
  CHECK(close(p[0]) == 0);
  /* Writing into a pipe without readers is EPIPE (SIGPIPE ignored so the process survives). */
  signal(SIGPIPE, SIG_IGN);
  CHECK_ERR(write(p[1], "x", 1), EPIPE);
  CHECK(close(p[1]) == 0);
  CHECK_ERR(pipe2(p, 0x12345678), EINVAL);
}

static void test_own_binary(const char *argv0) {
  /* The program binary is readable without any --allow-read. */
  int fd = open(argv0, O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0);
  unsigned char magic[4];
  CHECK(read(fd, magic, 4) == 4);
  CHECK(memcmp(magic, "\177ELF", 4) == 0);
  CHECK(pread(fd, magic, 1, 4) == 1 && magic[0] == 2); /* ELFCLASS64 */
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 4096);
  CHECK(close(fd) == 0);
}

static void test_std_fds(void) {
  /* stdout/stderr are open and writable; a zero-length write succeeds. */
  CHECK(fcntl(1, F_GETFD) != -1);
  CHECK(fcntl(2, F_GETFD) != -1);
  CHECK(write(1, "", 0) == 0);
  CHECK(write(2, "", 0) == 0);
}

int main(int argc, char **argv) {
  CHECK(argc >= 2);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/file_io.tmp", argv[1]);
  test_std_fds();
  test_basic_rw(path);
  test_open_errors(argv[1], path);
  test_append(path);
  test_dup_fcntl(path);
  test_pipes();
  test_own_binary(argv[0]);
  CHECK(unlink(path) == 0);
  guest_ok("file_io");
  return 0;
}

/* file_write: mkdir(at)/unlink(at)/rename(at)/renameat2/rmdir/symlink/link/utimensat/ftruncate/
 * fsync/fchmod inside DIR. Needs read and write permission on DIR; leaves DIR as it found it.
 *
 * Usage: file_write DIR   (DIR should be empty) */
#include "check.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static int dfd;

static void put(const char *name, const char *text) {
  int fd = openat(dfd, name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  CHECK(close(fd) == 0);
}

static int has(const char *name, const char *text) {
  char buf[256] = {0};
  int fd = openat(dfd, name, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n == (ssize_t)strlen(text) && memcmp(buf, text, n) == 0;
}

static int exists(const char *name) {
  struct stat st;
  return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int entries(void) {
  int n = 0;
  int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY);
  CHECK(fd >= 0);
  DIR *d = fdopendir(fd);
  CHECK(d != NULL);
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void test_dirs(const char *dir) {
  char p[PATH_MAX];
  struct stat st;
  snprintf(p, sizeof p, "%s/d", dir);
  CHECK(mkdir(p, 0755) == 0);
  CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
  CHECK_ERR(mkdir(p, 0755), EEXIST);
  CHECK(mkdirat(dfd, "d2", 0700) == 0);
  CHECK(fstatat(dfd, "d2", &st, 0) == 0 && S_ISDIR(st.st_mode));
  CHECK(syscall(SYS_mkdir, "/this/does/not/exist/x", 0755) == -1);
  CHECK(mkdirat(dfd, "d/nested", 0755) == 0);
  CHECK_ERR(mkdirat(dfd, "missing/nested", 0755), ENOENT);
  put("d/nested/f", "x");
  CHECK_ERR(unlinkat(dfd, "d", AT_REMOVEDIR), ENOTEMPTY);
  CHECK_ERR(rmdir(p), ENOTEMPTY);
  CHECK_ERR(unlinkat(dfd, "d/nested", 0), EISDIR);
  CHECK_ERR(unlinkat(dfd, "d/nested/f", AT_REMOVEDIR), ENOTDIR);
  CHECK(unlinkat(dfd, "d/nested/f", 0) == 0);
  CHECK(unlinkat(dfd, "d/nested", AT_REMOVEDIR) == 0);
  CHECK(rmdir(p) == 0);
  CHECK(!exists("d"));
  CHECK_ERR(rmdir(p), ENOENT);
  snprintf(p, sizeof p, "%s/d2", dir);
  CHECK(syscall(SYS_rmdir, p) == 0);
  CHECK(!exists("d2"));
  /* Raw mkdir/unlink syscalls. */
  snprintf(p, sizeof p, "%s/raw", dir);
  CHECK(syscall(SYS_mkdir, p, 0755) == 0);
  CHECK(syscall(SYS_rmdir, p) == 0);
  put("f", "1");
  snprintf(p, sizeof p, "%s/f", dir);
  CHECK(syscall(SYS_unlink, p) == 0);
  CHECK_ERR(syscall(SYS_unlink, p), ENOENT);
}

static void test_rename(const char *dir) {
  char a[PATH_MAX], b[PATH_MAX];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  put("a", "AAA");
  CHECK(rename(a, b) == 0);
  CHECK(!exists("a") && has("b", "AAA"));
  CHECK(syscall(SYS_rename, b, a) == 0);
  CHECK(has("a", "AAA") && !exists("b"));
  CHECK(renameat(dfd, "a", dfd, "b") == 0);
  CHECK(has("b", "AAA"));
  CHECK_ERR(renameat(dfd, "missing", dfd, "x"), ENOENT);
  /* rename over an existing file replaces it. */
  put("c", "CCC");
  CHECK(renameat(dfd, "c", dfd, "b") == 0);
  CHECK(has("b", "CCC") && !exists("c"));
  /* renameat2: NOREPLACE refuses to clobber; EXCHANGE swaps atomically. */
  put("a", "AAA");
  CHECK_ERR(syscall(SYS_renameat2, dfd, "a", dfd, "b", RENAME_NOREPLACE), EEXIST);
  CHECK(has("a", "AAA") && has("b", "CCC"));
  CHECK(syscall(SYS_renameat2, dfd, "a", dfd, "n", RENAME_NOREPLACE) == 0);
  CHECK(has("n", "AAA") && !exists("a"));
  CHECK(syscall(SYS_renameat2, dfd, "n", dfd, "b", RENAME_EXCHANGE) == 0);
  CHECK(has("n", "CCC") && has("b", "AAA"));
  CHECK_ERR(syscall(SYS_renameat2, dfd, "n", dfd, "zz", RENAME_EXCHANGE), ENOENT);
  CHECK_ERR(syscall(SYS_renameat2, dfd, "n", dfd, "b", RENAME_EXCHANGE | RENAME_NOREPLACE), EINVAL);
  /* Directories move too; a directory cannot replace a file. */
  CHECK(mkdirat(dfd, "dir1", 0755) == 0);
  put("dir1/inner", "I");
  CHECK(renameat(dfd, "dir1", dfd, "dir2") == 0);
  CHECK(has("dir2/inner", "I"));
  CHECK_ERR(renameat(dfd, "dir2", dfd, "b"), ENOTDIR);
  CHECK(renameat(dfd, "n", dfd, "dir2/moved") == 0);
  CHECK(has("dir2/moved", "CCC"));
  CHECK(unlinkat(dfd, "dir2/moved", 0) == 0);
  CHECK(unlinkat(dfd, "dir2/inner", 0) == 0);
  CHECK(unlinkat(dfd, "dir2", AT_REMOVEDIR) == 0);
  CHECK(unlinkat(dfd, "b", 0) == 0);
}

static void test_links(const char *dir) {
  char p[PATH_MAX], q[PATH_MAX], buf[64];
  struct stat st, st2;
  put("target", "T");
  snprintf(p, sizeof p, "%s/s", dir);
  CHECK(symlink("target", p) == 0);
  CHECK(readlink(p, buf, sizeof buf) == 6 && memcmp(buf, "target", 6) == 0);
  CHECK(has("s", "T"));
  CHECK_ERR(symlink("other", p), EEXIST);
  CHECK(symlinkat("no/such/target", dfd, "s2") == 0);
  CHECK(fstatat(dfd, "s2", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode));
  snprintf(q, sizeof q, "%s/s3", dir);
  CHECK(syscall(SYS_symlink, "/absolute/target", q) == 0);
  CHECK(readlinkat(dfd, "s3", buf, sizeof buf) == 16 && !memcmp(buf, "/absolute/target", 16));

  /* Hard links share the inode and bump st_nlink. */
  snprintf(p, sizeof p, "%s/target", dir);
  snprintf(q, sizeof q, "%s/hard", dir);
  CHECK(link(p, q) == 0);
  CHECK(stat(p, &st) == 0 && stat(q, &st2) == 0);
  CHECK(st.st_ino == st2.st_ino && st.st_nlink == 2);
  CHECK(linkat(dfd, "target", dfd, "hard2", 0) == 0);
  CHECK(stat(p, &st) == 0 && st.st_nlink == 3);
  CHECK_ERR(linkat(dfd, "target", dfd, "hard", 0), EEXIST);
  CHECK_ERR(linkat(dfd, "missing", dfd, "hard3", 0), ENOENT);
  snprintf(p, sizeof p, "%s/hard2", dir);
  CHECK(unlink(p) == 0);
  snprintf(p, sizeof p, "%s/hard4", dir);
  CHECK(syscall(SYS_link, q, p) == 0);
  CHECK(fstatat(dfd, "target", &st, 0) == 0 && st.st_nlink == 3);
  /* Writing through one name shows through the other. */
  put("hard", "changed");
  CHECK(has("target", "changed"));
  CHECK(unlinkat(dfd, "hard", 0) == 0 && unlinkat(dfd, "hard4", 0) == 0);
  CHECK(fstatat(dfd, "target", &st, 0) == 0 && st.st_nlink == 1);
  /* Removing a symlink leaves its target alone. */
  CHECK(unlinkat(dfd, "s", 0) == 0 && unlinkat(dfd, "s2", 0) == 0 && unlinkat(dfd, "s3", 0) == 0);
  CHECK(has("target", "changed"));
  CHECK(unlinkat(dfd, "target", 0) == 0);
}

static void test_times(void) {
  struct stat st;
  put("t", "time");
  struct timespec ts[2] = {{1000000000, 123456789}, {1234567890, 987654321}};
  CHECK(utimensat(dfd, "t", ts, 0) == 0);
  CHECK(fstatat(dfd, "t", &st, 0) == 0);
  CHECK(st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789);
  CHECK(st.st_mtim.tv_sec == 1234567890 && st.st_mtim.tv_nsec == 987654321);
  /* UTIME_OMIT keeps one, UTIME_NOW sets the other to about now. */
  struct timespec ts2[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  time_t before = time(NULL);
  CHECK(utimensat(dfd, "t", ts2, 0) == 0);
  CHECK(fstatat(dfd, "t", &st, 0) == 0);
  CHECK(st.st_atim.tv_sec == 1000000000);
  CHECK(st.st_mtim.tv_sec >= before - 2 && st.st_mtim.tv_sec <= time(NULL) + 2);
  /* Via an fd (futimens is utimensat with a NULL path). */
  int fd = openat(dfd, "t", O_RDWR);
  CHECK(fd >= 0);
  CHECK(futimens(fd, ts) == 0);
  CHECK(fstat(fd, &st) == 0 && st.st_mtim.tv_sec == 1234567890);
  /* NULL times: both to now. */
  CHECK(utimensat(dfd, "t", NULL, 0) == 0);
  CHECK(fstat(fd, &st) == 0 && st.st_mtim.tv_sec >= before - 2);
  /* AT_SYMLINK_NOFOLLOW changes the link, not the target. */
  CHECK(symlinkat("t", dfd, "tl") == 0);
  CHECK(utimensat(dfd, "tl", ts, AT_SYMLINK_NOFOLLOW) == 0);
  struct stat lst;
  CHECK(fstatat(dfd, "tl", &lst, AT_SYMLINK_NOFOLLOW) == 0 && lst.st_mtim.tv_sec == 1234567890);
  CHECK(fstat(fd, &st) == 0 && st.st_mtim.tv_sec != 1234567890);
  struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
  CHECK_ERR(utimensat(dfd, "t", bad, 0), EINVAL);
  CHECK_ERR(utimensat(dfd, "missing", ts, 0), ENOENT);
  CHECK(unlinkat(dfd, "tl", 0) == 0);
  CHECK(close(fd) == 0);
  CHECK(unlinkat(dfd, "t", 0) == 0);
}

static void test_truncate_sync_chmod(void) {
  struct stat st;
  int fd = openat(dfd, "tr", O_CREAT | O_RDWR | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK(write(fd, "abcdef", 6) == 6);
  CHECK(ftruncate(fd, 10000) == 0);
  CHECK(fstat(fd, &st) == 0 && st.st_size == 10000);
  static char buf[10000];
  CHECK(pread(fd, buf, sizeof buf, 0) == 10000);
  CHECK(memcmp(buf, "abcdef", 6) == 0);
  for (int i = 6; i < 10000; i++) CHECK(buf[i] == 0);
  CHECK(ftruncate(fd, 3) == 0);
  CHECK(fstat(fd, &st) == 0 && st.st_size == 3);
  CHECK(pread(fd, buf, sizeof buf, 0) == 3 && memcmp(buf, "abc", 3) == 0);
  /* The file offset is not changed by truncation; writing past the end leaves a hole. */
  CHECK(lseek(fd, 0, SEEK_CUR) == 6);
  CHECK(write(fd, "Z", 1) == 1);
  CHECK(fstat(fd, &st) == 0 && st.st_size == 7);
  CHECK_ERR(ftruncate(fd, -1), EINVAL);
  CHECK(fsync(fd) == 0);

  CHECK(fchmod(fd, 0600) == 0);
  CHECK(fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0600);
  CHECK(fchmod(fd, 0755) == 0);
  CHECK(fstatat(dfd, "tr", &st, 0) == 0 && (st.st_mode & 07777) == 0755);
  /* chown to what the file already has, or -1 for "leave it": allowed whoever we are. */
  const uid_t owner = st.st_uid;
  const gid_t group = st.st_gid;
  CHECK(owner == getuid()); /* what a process creates is its own (kvmserver's user shows as the guest's) */
  CHECK(fchown(fd, (uid_t)-1, (gid_t)-1) == 0);
  CHECK(fchown(fd, owner, group) == 0);
  CHECK(fchownat(dfd, "tr", owner, (gid_t)-1, 0) == 0);
  CHECK(symlinkat("tr", dfd, "tr-link") == 0);
  CHECK(fchownat(dfd, "tr-link", (uid_t)-1, group, AT_SYMLINK_NOFOLLOW) == 0);
  CHECK_ERR(fchownat(dfd, "tr", owner, group, 0x40000), EINVAL);
  CHECK_ERR(fchownat(dfd, "no-such-file", owner, group, 0), ENOENT);
  CHECK(unlinkat(dfd, "tr-link", 0) == 0);
  CHECK(fstat(fd, &st) == 0 && st.st_uid == owner && st.st_gid == group);
  CHECK(close(fd) == 0);

  /* ftruncate on a read-only fd is EINVAL (or EBADF on some kernels); on a directory EINVAL/EISDIR. */
  fd = openat(dfd, "tr", O_RDONLY);
  CHECK(fd >= 0);
  errno = 0;
  CHECK(ftruncate(fd, 0) == -1 && (errno == EINVAL || errno == EBADF));
  CHECK(close(fd) == 0);
  CHECK_ERR(fsync(999), EBADF);

  /* O_CREAT honours the umask. */
  mode_t old = umask(027);
  fd = openat(dfd, "um", O_CREAT | O_WRONLY | O_EXCL, 0777);
  CHECK(fd >= 0);
  CHECK(fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0750);
  CHECK(close(fd) == 0);
  CHECK(mkdirat(dfd, "umd", 0777) == 0);
  CHECK(fstatat(dfd, "umd", &st, 0) == 0 && (st.st_mode & 0777) == 0750);
  umask(old);
  CHECK(unlinkat(dfd, "umd", AT_REMOVEDIR) == 0);
  CHECK(unlinkat(dfd, "um", 0) == 0);
  CHECK(unlinkat(dfd, "tr", 0) == 0);
}

static void test_o_tmpfile_like(void) {
  /* An unlinked file stays usable through its open fd. */
  int fd = openat(dfd, "gone", O_CREAT | O_RDWR | O_EXCL, 0600);
  CHECK(fd >= 0);
  CHECK(unlinkat(dfd, "gone", 0) == 0);
  CHECK(!exists("gone"));
  CHECK(write(fd, "still here", 10) == 10);
  char buf[16];
  CHECK(pread(fd, buf, 10, 0) == 10 && memcmp(buf, "still here", 10) == 0);
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0);
  CHECK(close(fd) == 0);
}

/* POSIX record locks between processes: a child sees the parent's lock (F_GETLK with its pid),
 * cannot take a conflicting one, waits for it with F_SETLKW; a process's adjacent locks merge; the
 * locks go when the process closes any fd of the file and when it exits. flock(2) too. */
static int lock_range(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl = {0};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fcntl(fd, cmd, &fl);
}

static struct flock query(int fd, short type, off_t start, off_t len) {
  struct flock fl = {0};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  CHECK(fcntl(fd, F_GETLK, &fl) == 0);
  return fl;
}

static void test_record_locks(void) {
  int fd = openat(dfd, "locked", O_RDWR | O_CREAT | O_EXCL, 0644);
  CHECK(fd >= 0);
  CHECK(lock_range(fd, F_SETLK, F_RDLCK, 0, 10) == 0);
  CHECK(lock_range(fd, F_SETLK, F_RDLCK, 10, 10) == 0); /* merges with the first */
  CHECK(lock_range(fd, F_SETLK, F_WRLCK, 100, 0) == 0); /* to the end of the file */
  CHECK(query(fd, F_WRLCK, 0, 0).l_type == F_UNLCK);    /* one's own locks never conflict */
  pid_t parent = getpid();
  int go[2];
  CHECK(pipe(go) == 0);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    int cfd = openat(dfd, "locked", O_RDWR);
    CHECK(cfd >= 0);
    struct flock fl = query(cfd, F_WRLCK, 15, 1);
    CHECK(fl.l_type == F_RDLCK && fl.l_start == 0 && fl.l_len == 20 && fl.l_pid == parent);
    fl = query(cfd, F_RDLCK, 5000, 1);
    CHECK(fl.l_type == F_WRLCK && fl.l_start == 100 && fl.l_len == 0 && fl.l_pid == parent);
    CHECK(query(cfd, F_RDLCK, 0, 20).l_type == F_UNLCK); /* readers share */
    CHECK(query(cfd, F_WRLCK, 20, 80).l_type == F_UNLCK);
    CHECK_ERR(lock_range(cfd, F_SETLK, F_WRLCK, 5, 1), EAGAIN);
    CHECK(lock_range(cfd, F_SETLK, F_WRLCK, 30, 10) == 0);
    CHECK(write(go[1], "1", 1) == 1);
    CHECK(lock_range(cfd, F_SETLKW, F_WRLCK, 0, 10) == 0); /* after the parent lets go */
    _exit(0);
  }
  char c;
  CHECK(read(go[0], &c, 1) == 1);
  struct flock fl = query(fd, F_WRLCK, 35, 1);
  CHECK(fl.l_type == F_WRLCK && fl.l_pid == child);
  CHECK(lock_range(fd, F_SETLK, F_UNLCK, 0, 20) == 0);
  int status;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(query(fd, F_WRLCK, 0, 0).l_type == F_UNLCK); /* the child's locks went with it */

  /* Closing any fd of the file drops the process's locks on it. */
  CHECK(lock_range(fd, F_SETLK, F_WRLCK, 0, 1) == 0);
  int other = openat(dfd, "locked", O_RDONLY);
  CHECK(other >= 0);
  CHECK(close(other) == 0);
  child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    int cfd = openat(dfd, "locked", O_RDWR);
    _exit(cfd >= 0 && lock_range(cfd, F_SETLK, F_WRLCK, 0, 0) == 0 ? 0 : 1);
  }
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

  /* Errors. */
  CHECK_ERR(lock_range(fd, F_SETLK, 77, 0, 1), EINVAL);
  CHECK_ERR(lock_range(fd, F_SETLK, F_RDLCK, -5, 1), EINVAL);
  int ro = openat(dfd, "locked", O_RDONLY);
  CHECK(ro >= 0);
  CHECK_ERR(lock_range(ro, F_SETLK, F_WRLCK, 0, 1), EBADF);

  /* flock: another open file description conflicts, the same one (a fork's) does not. */
  CHECK(flock(fd, LOCK_EX | LOCK_NB) == 0);
  CHECK_ERR(flock(ro, LOCK_EX | LOCK_NB), EWOULDBLOCK);
  CHECK(flock(fd, LOCK_UN) == 0);
  CHECK(flock(ro, LOCK_SH | LOCK_NB) == 0);
  CHECK_ERR(flock(fd, 0), EINVAL);
  CHECK(close(ro) == 0);
  CHECK(close(fd) == 0);
  close(go[0]);
  close(go[1]);
  CHECK(unlinkat(dfd, "locked", 0) == 0);
}

/* FIFOs (mkfifo, mknod): a blocking open waits for the other end, which another process opens;
 * regular files through mknod; device nodes need a privilege the guest lacks. */
static void test_fifos(void) {
  CHECK(mkfifoat(dfd, "fifo", 0600) == 0);
  struct stat st;
  CHECK(fstatat(dfd, "fifo", &st, 0) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0600);
  CHECK_ERR(openat(dfd, "fifo", O_WRONLY | O_NONBLOCK), ENXIO); /* no reader */
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    int w = openat(dfd, "fifo", O_WRONLY); /* waits for the parent's open */
    _exit(w >= 0 && write(w, "fifo!", 5) == 5 ? 0 : 1);
  }
  int r = openat(dfd, "fifo", O_RDONLY);
  CHECK(r >= 0);
  char buf[8] = {0};
  CHECK(read(r, buf, sizeof buf) == 5 && memcmp(buf, "fifo!", 5) == 0);
  CHECK(read(r, buf, sizeof buf) == 0); /* the writer is gone */
  int status;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(close(r) == 0);
  CHECK_ERR(mkfifoat(dfd, "fifo", 0600), EEXIST);
  CHECK(unlinkat(dfd, "fifo", 0) == 0);
  CHECK(mknodat(dfd, "plain", S_IFREG | 0640, 0) == 0);
  CHECK(fstatat(dfd, "plain", &st, 0) == 0 && S_ISREG(st.st_mode) && st.st_size == 0);
  CHECK(unlinkat(dfd, "plain", 0) == 0);
  if (geteuid() != 0) CHECK_ERR(mknodat(dfd, "dev", S_IFCHR | 0600, makedev(1, 3)), EPERM); /* (root may) */
  CHECK_ERR(mknodat(dfd, "bad", 0170000 | 0600, 0), EINVAL);
}

int main(int argc, char **argv) {
  CHECK(argc >= 2);
  CHECK(strlen(argv[1]) < PATH_MAX / 2);
  dfd = open(argv[1], O_RDONLY | O_DIRECTORY);
  CHECK(dfd >= 0);
  int before = entries();
  test_dirs(argv[1]);
  test_rename(argv[1]);
  test_links(argv[1]);
  test_times();
  test_truncate_sync_chmod();
  test_o_tmpfile_like();
  test_record_locks();
  test_fifos();
  CHECK(entries() == before);
  CHECK(close(dfd) == 0);
  guest_ok("file_write");
  return 0;
}

/* file_meta: stat/lstat/fstat/newfstatat/statx, getdents64, readlink(at), access/faccessat(2),
 * getcwd/chdir/fchdir, umask. Read-only: needs only read permission on DIR.
 *
 * Usage: file_meta DIR
 *   DIR is an absolute path without symlinks (getcwd is compared against it) that holds:
 *     a.txt      regular file, contents "hello\n", mode 0640
 *     sub/       directory holding b.txt (contents "b")
 *     link       symlink to "a.txt"
 *     dangling   symlink to "nonexistent"
 *   (tests/kvm/run_guests.sh makes it; so does `file_meta --make-fixture DIR` natively.) */
#include "check.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>

/* struct statx as the kernel defines it (musl 1.2.3 and older glibc lack it). */
struct kstatx_ts {
  int64_t tv_sec;
  uint32_t tv_nsec;
  int32_t reserved;
};
struct kstatx {
  uint32_t stx_mask, stx_blksize;
  uint64_t stx_attributes;
  uint32_t stx_nlink, stx_uid, stx_gid;
  uint16_t stx_mode, pad1;
  uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
  struct kstatx_ts stx_atime, stx_btime, stx_ctime, stx_mtime;
  uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
  uint64_t spare[14];
};
#define K_STATX_TYPE 0x1u
#define K_STATX_MODE 0x2u
#define K_STATX_SIZE 0x200u
#define K_STATX_INO 0x100u
#define K_STATX_BASIC_STATS 0x7ffu
#ifndef AT_STATX_SYNC_AS_STAT
#define AT_STATX_SYNC_AS_STAT 0
#endif

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

static char dir[PATH_MAX / 2];

static const char *at(const char *name) {
  static char bufs[4][PATH_MAX];
  static int next;
  char *b = bufs[next++ % 4];
  snprintf(b, PATH_MAX, "%s/%s", dir, name);
  return b;
}

static void make_fixture(const char *d) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/a.txt", d);
  int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0640);
  CHECK(fd >= 0 && write(fd, "hello\n", 6) == 6 && close(fd) == 0);
  CHECK(chmod(p, 0640) == 0);
  snprintf(p, sizeof p, "%s/sub", d);
  CHECK(mkdir(p, 0755) == 0);
  snprintf(p, sizeof p, "%s/sub/b.txt", d);
  fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && write(fd, "b", 1) == 1 && close(fd) == 0);
  snprintf(p, sizeof p, "%s/link", d);
  CHECK(symlink("a.txt", p) == 0);
  snprintf(p, sizeof p, "%s/dangling", d);
  CHECK(symlink("nonexistent", p) == 0);
}

static void test_stat(void) {
  struct stat st, lst, fst, ast;
  CHECK(stat(at("a.txt"), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_size == 6);
  CHECK(st.st_nlink == 1);
  CHECK(st.st_ino != 0);
  CHECK(st.st_blksize > 0);
  CHECK(st.st_mtime > 0);

  CHECK(lstat(at("link"), &lst) == 0);
  CHECK(S_ISLNK(lst.st_mode));
  CHECK(lst.st_size == 5); /* strlen("a.txt") */
  CHECK(stat(at("link"), &ast) == 0);
  CHECK(S_ISREG(ast.st_mode) && ast.st_ino == st.st_ino && ast.st_dev == st.st_dev);
  CHECK(lstat(at("a.txt"), &ast) == 0 && ast.st_ino == st.st_ino);

  int fd = open(at("a.txt"), O_RDONLY);
  CHECK(fd >= 0);
  CHECK(fstat(fd, &fst) == 0);
  CHECK(fst.st_ino == st.st_ino && fst.st_dev == st.st_dev && fst.st_size == 6);

  /* The raw syscalls, whichever the libc happens to use. */
  memset(&ast, 0, sizeof ast);
  CHECK(syscall(SYS_stat, at("a.txt"), &ast) == 0 && ast.st_ino == st.st_ino && ast.st_size == 6);
  CHECK(syscall(SYS_lstat, at("link"), &ast) == 0 && S_ISLNK(ast.st_mode));
  CHECK(syscall(SYS_fstat, fd, &ast) == 0 && ast.st_ino == st.st_ino);
  CHECK(syscall(SYS_newfstatat, AT_FDCWD, at("link"), &ast, 0) == 0 && S_ISREG(ast.st_mode));
  CHECK(syscall(SYS_newfstatat, AT_FDCWD, at("link"), &ast, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(ast.st_mode));
  CHECK(syscall(SYS_newfstatat, fd, "", &ast, AT_EMPTY_PATH) == 0 && ast.st_ino == st.st_ino);

  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(dfd >= 0);
  CHECK(fstatat(dfd, "a.txt", &ast, 0) == 0 && ast.st_ino == st.st_ino);
  CHECK(fstatat(dfd, "sub/b.txt", &ast, 0) == 0 && ast.st_size == 1);
  CHECK(fstatat(dfd, "dangling", &ast, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ast.st_mode));
  CHECK_ERR(fstatat(dfd, "dangling", &ast, 0), ENOENT);
  CHECK(fstatat(dfd, ".", &ast, 0) == 0 && S_ISDIR(ast.st_mode));
  CHECK(stat(at("sub"), &ast) == 0 && S_ISDIR(ast.st_mode) && ast.st_nlink >= 1);
  CHECK(stat(dir, &ast) == 0 && S_ISDIR(ast.st_mode));

  CHECK_ERR(stat(at("missing"), &ast), ENOENT);
  CHECK_ERR(stat(at("a.txt/x"), &ast), ENOTDIR);
  CHECK_ERR(stat("", &ast), ENOENT);
  CHECK_ERR(fstat(999, &ast), EBADF);

  /* statx */
  struct kstatx sx;
  memset(&sx, 0xa5, sizeof sx);
  CHECK(syscall(SYS_statx, AT_FDCWD, at("a.txt"), AT_STATX_SYNC_AS_STAT, K_STATX_BASIC_STATS, &sx) ==
        0);
  CHECK((sx.stx_mask & (K_STATX_TYPE | K_STATX_MODE | K_STATX_SIZE | K_STATX_INO)) ==
        (K_STATX_TYPE | K_STATX_MODE | K_STATX_SIZE | K_STATX_INO));
  CHECK(sx.stx_size == 6);
  CHECK(sx.stx_ino == st.st_ino);
  CHECK(S_ISREG(sx.stx_mode) && (sx.stx_mode & 07777) == 0640);
  CHECK(sx.stx_nlink == 1);
  CHECK(sx.stx_mtime.tv_sec == st.st_mtime);
  CHECK(sx.stx_mtime.tv_nsec < 1000000000u);
  CHECK(syscall(SYS_statx, AT_FDCWD, at("link"), AT_SYMLINK_NOFOLLOW, K_STATX_BASIC_STATS, &sx) == 0);
  CHECK(S_ISLNK(sx.stx_mode) && sx.stx_size == 5);
  CHECK(syscall(SYS_statx, fd, "", AT_EMPTY_PATH, K_STATX_BASIC_STATS, &sx) == 0);
  CHECK(sx.stx_ino == st.st_ino);
  CHECK(syscall(SYS_statx, dfd, "sub", 0, K_STATX_BASIC_STATS, &sx) == 0 && S_ISDIR(sx.stx_mode));
  CHECK_ERR(syscall(SYS_statx, AT_FDCWD, at("missing"), 0, K_STATX_BASIC_STATS, &sx), ENOENT);
  CHECK(close(dfd) == 0);
  CHECK(close(fd) == 0);
}

struct seen {
  int dot, dotdot, a, sub, link, dangling, other;
};

static void note(struct seen *s, const char *name, unsigned char type) {
  if (!strcmp(name, ".")) {
    s->dot++;
    CHECK(type == DT_DIR || type == DT_UNKNOWN);
  } else if (!strcmp(name, "..")) {
    s->dotdot++;
    CHECK(type == DT_DIR || type == DT_UNKNOWN);
  } else if (!strcmp(name, "a.txt")) {
    s->a++;
    CHECK(type == DT_REG || type == DT_UNKNOWN);
  } else if (!strcmp(name, "sub")) {
    s->sub++;
    CHECK(type == DT_DIR || type == DT_UNKNOWN);
  } else if (!strcmp(name, "link")) {
    s->link++;
    CHECK(type == DT_LNK || type == DT_UNKNOWN);
  } else if (!strcmp(name, "dangling")) {
    s->dangling++;
    CHECK(type == DT_LNK || type == DT_UNKNOWN);
  } else {
    s->other++;
  }
}

static void check_seen(const struct seen *s) {
  CHECK(s->dot == 1 && s->dotdot == 1 && s->a == 1 && s->sub == 1 && s->link == 1 &&
        s->dangling == 1 && s->other == 0);
}

static void test_getdents(void) {
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(dfd >= 0);
  /* A small buffer forces several calls, so the directory offset must carry over. */
  char buf[80] __attribute__((aligned(8)));
  struct seen s = {0};
  int calls = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    CHECK(n >= 0);
    if (n == 0) break;
    calls++;
    for (long off = 0; off < n;) {
      struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
      CHECK(d->d_reclen > 0 && off + d->d_reclen <= n);
      CHECK(d->d_ino != 0);
      note(&s, d->d_name, d->d_type);
      off += d->d_reclen;
    }
  }
  CHECK(calls >= 2);
  check_seen(&s);
  /* At the end, another call keeps returning 0; rewinding starts over. */
  CHECK(syscall(SYS_getdents64, dfd, buf, sizeof buf) == 0);
  CHECK(lseek(dfd, 0, SEEK_SET) == 0);
  CHECK(syscall(SYS_getdents64, dfd, buf, sizeof buf) > 0);
  /* A buffer too small for even one entry. */
  CHECK(lseek(dfd, 0, SEEK_SET) == 0);
  CHECK_ERR(syscall(SYS_getdents64, dfd, buf, 8), EINVAL);
  CHECK(close(dfd) == 0);

  int fd = open(at("a.txt"), O_RDONLY);
  CHECK_ERR(syscall(SYS_getdents64, fd, buf, sizeof buf), ENOTDIR);
  CHECK(close(fd) == 0);
  CHECK_ERR(syscall(SYS_getdents64, 999, buf, sizeof buf), EBADF);

  /* The libc way. */
  DIR *d = opendir(dir);
  CHECK(d != NULL);
  struct seen s2 = {0};
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) note(&s2, e->d_name, e->d_type);
  CHECK(errno == 0);
  check_seen(&s2);
  CHECK(closedir(d) == 0);
}

static void test_readlink(void) {
  char buf[64];
  memset(buf, 'X', sizeof buf);
  CHECK(readlink(at("link"), buf, sizeof buf) == 5);
  CHECK(memcmp(buf, "a.txt", 5) == 0 && buf[5] == 'X'); /* no terminating NUL */
  CHECK(syscall(SYS_readlink, at("dangling"), buf, sizeof buf) == 11);
  CHECK(memcmp(buf, "nonexistent", 11) == 0);
  CHECK(readlink(at("link"), buf, 2) == 2 && memcmp(buf, "a.", 2) == 0); /* truncated */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(readlinkat(dfd, "link", buf, sizeof buf) == 5 && memcmp(buf, "a.txt", 5) == 0);
  CHECK_ERR(readlinkat(dfd, "a.txt", buf, sizeof buf), EINVAL);
  CHECK_ERR(readlinkat(dfd, "missing", buf, sizeof buf), ENOENT);
  CHECK(close(dfd) == 0);
  CHECK_ERR(readlink(at("sub"), buf, sizeof buf), EINVAL);
}

static void test_access(const char *argv0) {
  CHECK(access(at("a.txt"), R_OK) == 0);
  CHECK(access(at("a.txt"), F_OK) == 0);
  CHECK(access(at("sub"), R_OK | X_OK) == 0);
  CHECK_ERR(access(at("a.txt"), X_OK), EACCES); /* mode 0640: no execute bit, even for root */
  CHECK_ERR(access(at("missing"), F_OK), ENOENT);
  CHECK_ERR(access(at("dangling"), F_OK), ENOENT);
  CHECK(syscall(SYS_access, at("link"), R_OK) == 0);
  CHECK(access(argv0, R_OK | X_OK) == 0);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(syscall(SYS_faccessat, dfd, "a.txt", R_OK) == 0);
  CHECK(syscall(SYS_faccessat, dfd, "sub/b.txt", F_OK) == 0);
  CHECK_ERR(syscall(SYS_faccessat, dfd, "nope", F_OK), ENOENT);
  CHECK(syscall(SYS_faccessat2, dfd, "a.txt", R_OK, 0) == 0);
  /* AT_SYMLINK_NOFOLLOW looks at the link itself, which exists even when dangling. */
  CHECK(syscall(SYS_faccessat2, dfd, "dangling", F_OK, AT_SYMLINK_NOFOLLOW) == 0);
  CHECK_ERR(syscall(SYS_faccessat2, dfd, "dangling", F_OK, 0), ENOENT);
  CHECK_ERR(syscall(SYS_faccessat2, dfd, "a.txt", F_OK, 0x40000000), EINVAL);
  CHECK(close(dfd) == 0);
}

static void test_cwd(void) {
  char buf[PATH_MAX], want[PATH_MAX];
  CHECK(getcwd(buf, sizeof buf) == buf);
  CHECK(buf[0] == '/');
  CHECK(chdir(dir) == 0);
  CHECK(getcwd(buf, sizeof buf) == buf && strcmp(buf, dir) == 0);
  /* The raw syscall returns the length including the NUL. */
  CHECK(syscall(SYS_getcwd, buf, sizeof buf) == (long)strlen(dir) + 1);
  CHECK_ERR(syscall(SYS_getcwd, buf, 1), ERANGE);

  /* Relative paths now resolve against the new cwd. */
  struct stat st;
  CHECK(stat("a.txt", &st) == 0 && st.st_size == 6);
  CHECK(chdir("sub") == 0);
  snprintf(want, sizeof want, "%s/sub", dir);
  CHECK(getcwd(buf, sizeof buf) && strcmp(buf, want) == 0);
  CHECK(stat("b.txt", &st) == 0 && st.st_size == 1);
  CHECK(stat("../a.txt", &st) == 0 && st.st_size == 6);
  CHECK(chdir("..") == 0);
  CHECK(getcwd(buf, sizeof buf) && strcmp(buf, dir) == 0);

  int sfd = open("sub", O_RDONLY | O_DIRECTORY);
  CHECK(sfd >= 0);
  CHECK(fchdir(sfd) == 0);
  CHECK(getcwd(buf, sizeof buf) && strcmp(buf, want) == 0);
  int fd = open("b.txt", O_RDONLY);
  CHECK(fd >= 0);
  char c;
  CHECK(read(fd, &c, 1) == 1 && c == 'b');
  CHECK(close(fd) == 0);
  /* A directory fd opened before the chdir still resolves against its own directory. */
  CHECK(fstatat(sfd, "b.txt", &st, 0) == 0);
  CHECK(close(sfd) == 0);

  CHECK(chdir(dir) == 0);
  CHECK_ERR(chdir("a.txt"), ENOTDIR);
  CHECK_ERR(chdir("missing"), ENOENT);
  fd = open("a.txt", O_RDONLY);
  CHECK_ERR(fchdir(fd), ENOTDIR);
  CHECK(close(fd) == 0);
  CHECK_ERR(fchdir(999), EBADF);
  CHECK(getcwd(buf, sizeof buf) && strcmp(buf, dir) == 0); /* failures changed nothing */
}

static void test_umask(void) {
  mode_t old = umask(022);
  CHECK(umask(077) == 022);
  CHECK(umask(0777 | 01000) == 077); /* only the permission bits are kept */
  CHECK(umask(old) == 0777);
  CHECK(syscall(SYS_umask, old) == (long)old);
}

int main(int argc, char **argv) {
  CHECK(argc >= 2);
  if (argc == 3 && !strcmp(argv[1], "--make-fixture")) {
    make_fixture(argv[2]);
    return 0;
  }
  CHECK(strlen(argv[1]) < sizeof dir);
  strcpy(dir, argv[1]);
  test_stat();
  test_getdents();
  test_readlink();
  test_access(argv[0]);
  test_umask();
  test_cwd();
  guest_ok("file_meta");
  return 0;
}

/* Shared memory between guest processes (issue 12): MAP_SHARED of a file opened for writing is the
 * file itself (writes through the mapping reach the file, writes to the file show in the mapping,
 * a forked child's writes show in the parent), MAP_SHARED|MAP_ANONYMOUS is shared with a forked
 * child, a futex in shared memory wakes across processes, mremap keeps the sharing, MADV_REMOVE
 * zeroes for everyone, and a file truncated under its mapping costs the guest the data, never the
 * host. The same checks pass natively.
 * Usage: shared_mem DIR (a writable directory). */
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define PG 4096
#define FUTEX_WAIT 0 /* <linux/futex.h>, which musl-gcc lacks */
#define FUTEX_WAKE 1
#define RW (PROT_READ | PROT_WRITE)

static void wait_child_ok(pid_t pid) {
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A new file of 2 pages in dir, mapped shared and writable: the mapping; its fd and path out. */
static char *map_new_file(const char *dir, const char *name, int *fd, char *path, size_t path_size) {
  snprintf(path, path_size, "%s/%s", dir, name);
  *fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  CHECK(*fd >= 0);
  CHECK(ftruncate(*fd, 2 * PG) == 0);
  char *m = mmap(NULL, 2 * PG, RW, MAP_SHARED, *fd, 0);
  CHECK(m != MAP_FAILED);
  return m;
}

static void test_file(const char *dir) {
  char path[4096];
  int fd;
  char *m = map_new_file(dir, "shared.dat", &fd, path, sizeof path);
  /* Through the mapping into the file, and back. */
  memcpy(m + 10, "hello", 5);
  char buf[8] = {0};
  CHECK(pread(fd, buf, 5, 10) == 5 && memcmp(buf, "hello", 5) == 0);
  CHECK(pwrite(fd, "world", 5, PG + 20) == 5);
  CHECK(memcmp(m + PG + 20, "world", 5) == 0);
  /* A second mapping of the same page, at an offset, sees the same bytes. */
  char *second = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, PG);
  CHECK(second != MAP_FAILED && memcmp(second + 20, "world", 5) == 0);
  m[PG + 21] = 'O';
  CHECK(second[21] == 'O');
  CHECK(munmap(second, PG) == 0);
  /* A forked child writes; the parent sees it, in the mapping and in the file. */
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    memcpy(m + 100, "from child", 10);
    _exit(0);
  }
  wait_child_ok(pid);
  CHECK(memcmp(m + 100, "from child", 10) == 0);
  CHECK(pread(fd, buf, 4, 100) == 4 && memcmp(buf, "from", 4) == 0);
  /* Partial unmap keeps the rest shared; the unmapped range maps again as fresh memory. */
  CHECK(munmap(m, PG) == 0);
  CHECK(pwrite(fd, "again", 5, PG + 40) == 5);
  CHECK(memcmp(m + PG + 40, "again", 5) == 0);
  char *fresh = mmap(m, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  CHECK(fresh == m);
  for (int i = 0; i < PG; i++) CHECK(fresh[i] == 0);
  fresh[10] = 'x';  /* private: the file keeps "hello" */
  CHECK(pread(fd, buf, 5, 10) == 5 && memcmp(buf, "hello", 5) == 0);
  CHECK(munmap(m, 2 * PG) == 0);
  /* mremap grows a shared file mapping in the file. */
  CHECK(ftruncate(fd, 4 * PG) == 0);
  char *g = mmap(NULL, PG, RW, MAP_SHARED, fd, 0);
  CHECK(g != MAP_FAILED);
  char *grown = mremap(g, PG, 4 * PG, MREMAP_MAYMOVE);
  CHECK(grown != MAP_FAILED);
  CHECK(memcmp(grown + 10, "hello", 5) == 0 && memcmp(grown + PG + 40, "again", 5) == 0);
  grown[3 * PG] = 'z';
  CHECK(pread(fd, buf, 1, 3 * PG) == 1 && buf[0] == 'z');
  CHECK(munmap(grown, 4 * PG) == 0);
  /* The data stayed in the file after every mapping went. */
  CHECK(pread(fd, buf, 5, 10) == 5 && memcmp(buf, "hello", 5) == 0);
  /* Write access is needed for a writable shared mapping. */
  int ro = open(path, O_RDONLY);
  CHECK(ro >= 0);
  CHECK(mmap(NULL, PG, RW, MAP_SHARED, ro, 0) == MAP_FAILED && errno == EACCES);
  CHECK(close(ro) == 0);
  CHECK(close(fd) == 0);
  CHECK(unlink(path) == 0);
}

static void test_anonymous(void) {
  char *m = mmap(NULL, 3 * PG, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  m[0] = 1;
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    if (m[0] != 1) _exit(2);
    m[1] = 2;
    m[2 * PG] = 3;
    _exit(0);
  }
  wait_child_ok(pid);
  CHECK(m[1] == 2 && m[2 * PG] == 3);
  /* MADV_REMOVE: the pages go, for everyone. */
  CHECK(madvise(m, PG, MADV_REMOVE) == 0);
  CHECK(m[0] == 0 && m[1] == 0 && m[2 * PG] == 3);
  CHECK(munmap(m, 3 * PG) == 0);
}

static long futex(uint32_t *word, int op, uint32_t value, const struct timespec *timeout) {
  return syscall(SYS_futex, word, op, value, timeout, NULL, 0);
}

static void test_futex(void) {
  uint32_t *word = mmap(NULL, PG, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(word != MAP_FAILED);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    __atomic_store_n(word, 1, __ATOMIC_SEQ_CST);
    futex(word, FUTEX_WAKE, 1, NULL);
    _exit(0);
  }
  /* Woken by the child (or returns at once when it was quicker), well before the timeout. */
  struct timespec start, end, limit = {10, 0};
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == 0) {
    long r = futex(word, FUTEX_WAIT, 0, &limit);
    CHECK(r == 0 || errno == EAGAIN || errno == EINTR);
  }
  clock_gettime(CLOCK_MONOTONIC, &end);
  CHECK(end.tv_sec - start.tv_sec < 5);
  wait_child_ok(pid);
  /* A wake that does not change the word (LTP's checkpoints): the waiter in another process is
   * woken, and the waker counts it. */
  __atomic_store_n(word, 0, __ATOMIC_SEQ_CST);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    struct timespec nap = {0, 1000 * 1000};
    for (int i = 0; i < 5000; i++) {
      if (futex(word, FUTEX_WAKE, 1, NULL) == 1) _exit(0);
      nanosleep(&nap, NULL);
    }
    _exit(3); /* nobody was ever waiting */
  }
  clock_gettime(CLOCK_MONOTONIC, &start);
  CHECK(futex(word, FUTEX_WAIT, 0, &limit) == 0);
  clock_gettime(CLOCK_MONOTONIC, &end);
  CHECK(end.tv_sec - start.tv_sec < 5);
  wait_child_ok(pid);
  CHECK(munmap(word, PG) == 0);
}

/* A file truncated under its shared mapping: the host copies into the page that went (a read()
 * into it) without dying. Linux answers EFAULT; kvmserver gives the guest a zero page there. */
static void test_truncated(const char *dir) {
  char path[4096];
  int fd;
  char *m = map_new_file(dir, "truncated.dat", &fd, path, sizeof path);
  m[0] = 'a';
  CHECK(ftruncate(fd, 0) == 0);
  int pipes[2];
  CHECK(pipe(pipes) == 0);
  CHECK(write(pipes[1], "abc", 3) == 3);
  errno = 0;
  long n = read(pipes[0], m + PG, 3);
  CHECK(n == 3 || (n == -1 && errno == EFAULT));
  CHECK(close(pipes[0]) == 0 && close(pipes[1]) == 0);
  /* The guest's own access past the end: SIGBUS, as on Linux (a child, so that we see it). */
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    ((volatile char *)m)[PG + 8] = 1;
    _exit(0);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS);
  CHECK(munmap(m, 2 * PG) == 0);
  CHECK(close(fd) == 0);
  CHECK(unlink(path) == 0);
}

int main(int argc, char **argv) {
  const char *dir = argc >= 2 ? argv[1] : "/tmp";
  test_file(dir);
  test_anonymous();
  test_futex();
  test_truncated(dir);
  guest_ok("shared_mem");
  return 0;
}

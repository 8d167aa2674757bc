/* Hostile: a symlink swapped in between kvmserver's policy check and its open (TOCTOU).
 *
 * Usage: symlink_race DIR SECONDS   (DIR granted read+write, /etc not granted)
 * One thread keeps replacing DIR/f by a regular file and by a symlink to /etc/passwd, and DIR/d by
 * a directory and by a symlink to /etc; the main thread opens DIR/f and DIR/d/passwd, and stats
 * them, as fast as it can. Whatever it opens must be the regular file: a read that starts with
 * "root:" is a leak. Natively the symlinks are followed (exit 2); under kvmserver nothing outside
 * DIR is ever reached. Prints "ok symlink_race N" (N: opens that got the regular file; both
 * kinds of entry must have been seen, or the race was not run). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static atomic_int stop;

static void path(char *out, const char *name) { snprintf(out, 4096, "%s/%s", dir, name); }

static void *flipper(void *arg) {
  (void)arg;
  char f[4096], ftmp[4096], d[4096], dtmp[4096], dfile[4200];
  path(f, "f");
  path(ftmp, "f.tmp");
  path(d, "d");
  path(dtmp, "d.tmp");
  while (!atomic_load(&stop)) {
    unlink(ftmp);
    if (symlink("/etc/passwd", ftmp) == 0) rename(ftmp, f);
    int fd = open(ftmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      if (write(fd, "inside\n", 7) != 7) break;
      close(fd);
      rename(ftmp, f);
    }
    /* The directory: a symlink to /etc, then a real directory holding a harmless "passwd". */
    unlink(dtmp);
    if (symlink("/etc", dtmp) == 0) {
      if (rename(dtmp, d) != 0) unlink(dtmp);
    }
    snprintf(dfile, sizeof dfile, "%s/passwd", dtmp);
    if (mkdir(dtmp, 0755) == 0) {
      fd = open(dfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        if (write(fd, "inside\n", 7) != 7) break;
        close(fd);
      }
      unlink(d); /* a symlink: rename cannot put a directory over it */
      if (rename(dtmp, d) != 0) {
        unlink(dfile);
        rmdir(dtmp);
      }
    }
    /* Back to nothing for the next round (the directory is emptied first). */
    char inner[4200];
    snprintf(inner, sizeof inner, "%s/passwd", d);
    struct stat st;
    if (lstat(d, &st) == 0 && S_ISDIR(st.st_mode)) {
      unlink(inner);
      rmdir(d);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: symlink_race DIR SECONDS\n");
    return 64;
  }
  dir = argv[1];
  const double seconds = atof(argv[2]);
  pthread_t t;
  if (pthread_create(&t, NULL, flipper, NULL) != 0) return 1;
  char f[4096], dp[4096];
  path(f, "f");
  path(dp, "d/passwd");
  long inside = 0, leaks = 0, rounds = 0;
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    const char *targets[] = {f, dp};
    for (int i = 0; i < 2; i++) {
      int fd = open(targets[i], O_RDONLY);
      if (fd >= 0) {
        char buf[8] = {0};
        if (read(fd, buf, 5) == 5) {
          if (!memcmp(buf, "root:", 5)) {
            if (leaks++ == 0) printf("LEAK: %s opened /etc/passwd\n", targets[i]);
          } else if (!memcmp(buf, "insid", 5)) {
            inside++;
          }
        }
        close(fd);
      }
      struct stat st;
      if (stat(targets[i], &st) == 0 && st.st_size > 7 && leaks++ == 0)
        printf("LEAK: stat of %s reached a file outside (size %lld)\n", targets[i], (long long)st.st_size);
    }
    rounds++;
    clock_gettime(CLOCK_MONOTONIC, &now);
  } while ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  if (leaks) return 2;
  if (!inside) {
    fprintf(stderr, "symlink_race: never opened the regular file in %ld rounds\n", rounds);
    return 1;
  }
  printf("ok symlink_race %ld\n", inside);
  return 0;
}

/* epoll_server: a small single-threaded, non-blocking, epoll-driven HTTP/1.1 server for the
 * kvmserver server-mode tests (tests/e2e/server.sh). Every response closes its connection.
 *
 *   epoll_server PORT [DIR]      listens on 127.0.0.1:PORT; DIR is a writable directory
 *
 * Routes (GET):
 *   /              "hello\n"
 *   /id/XYZ        ++counter; "counter=N prev=<buffer>\n"; then XYZ is copied into buffer
 *   /secret/VALUE  VALUE into buffer and into heap_secret (malloc), written to DIR/secret.txt;
 *                  DIR/kept.txt opened (O_CREAT) and its fd kept in kept_fd, never closed; "stored\n"
 *   /check         "buffer=<buffer> heap=<heap_secret|(null)> file=<exists|missing> fd=<open|closed>\n"
 *                  (file: DIR/secret.txt exists; fd: kept_fd >= 0 and fcntl(kept_fd, F_GETFD) != -1)
 *   /fds           "fds=A,B,C\n": the open fds among 0..255 (fcntl F_GETFD)
 *   /segv          writes to address 0
 *   /loop          loops forever without system calls
 *   /alloc/MB      mallocs MB megabytes in 1 MiB chunks, touching every page, until malloc fails;
 *                  "allocated=K\n" (K chunks succeeded), then frees them
 *   /touch/N       writes one byte in each of N pages (N <= 256) of a 1 MiB static array that was
 *                  filled at start-up (so its pages are part of a server-mode template); "touched=N\n"
 *   anything else  404
 * On start-up prints "epoll_server: listening on 127.0.0.1:PORT" on stdout. */
#include "http.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>

static int counter;
static char buffer[4096];
static char* heap_secret;
static int kept_fd = -1;

static const char* dir; /* argv[2] or NULL */
#define SCRATCH_PAGES 256
static char scratch[SCRATCH_PAGES * 4096];

#define MAX_CONNS 64
struct conn {
  int fd; /* -1: free slot */
  size_t in_len;
  char in[HTTP_MAX_REQUEST];
  size_t out_len, out_off;
  char out[HTTP_MAX_RESPONSE];
};
static struct conn conns[MAX_CONNS];
static int epfd, lfd;

static void crash(void) { *(volatile int*)0 = 42; }

static void spin(void) {
  volatile unsigned long n = 0;
  for (;;) n++;
}

static size_t route(const char* path, char* out, size_t cap) {
  if (strcmp(path, "/") == 0) return http_response(out, cap, 200, "hello\n");

  if (strncmp(path, "/id/", 4) == 0) {
    ++counter;
    size_t n = http_response(out, cap, 200, "counter=%d prev=%s\n", counter, buffer);
    copy_text(buffer, sizeof buffer, path + 4);
    return n;
  }

  if (strncmp(path, "/secret/", 8) == 0) {
    const char* value = path + 8;
    copy_text(buffer, sizeof buffer, value);
    free(heap_secret);
    heap_secret = malloc(strlen(value) + 1);
    if (!heap_secret) return http_response(out, cap, 500, "error: malloc: %s\n", strerror(errno));
    strcpy(heap_secret, value);
    if (!dir) return http_response(out, cap, 500, "error: no directory argument\n");
    char file[4096];
    snprintf(file, sizeof file, "%s/secret.txt", dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return http_response(out, cap, 500, "error: open %s: %s\n", file, strerror(errno));
    size_t len = strlen(value);
    ssize_t w = write(fd, value, len);
    int werr = errno;
    close(fd);
    if (w != (ssize_t)len) return http_response(out, cap, 500, "error: write %s: %s\n", file, strerror(werr));
    if (kept_fd < 0) {
      snprintf(file, sizeof file, "%s/kept.txt", dir);
      kept_fd = open(file, O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (kept_fd < 0) return http_response(out, cap, 500, "error: open %s: %s\n", file, strerror(errno));
    }
    return http_response(out, cap, 200, "stored\n");
  }

  if (strcmp(path, "/check") == 0) {
    int exists = 0;
    if (dir) {
      char file[4096];
      snprintf(file, sizeof file, "%s/secret.txt", dir);
      exists = access(file, F_OK) == 0;
    }
    int fd_open = kept_fd >= 0 && fcntl(kept_fd, F_GETFD) != -1;
    return http_response(out, cap, 200, "buffer=%s heap=%s file=%s fd=%s\n", buffer,
                         heap_secret ? heap_secret : "(null)", exists ? "exists" : "missing",
                         fd_open ? "open" : "closed");
  }

  if (strcmp(path, "/fds") == 0) {
    char list[2048];
    size_t n = 0;
    list[0] = 0;
    for (int fd = 0; fd < 256; fd++)
      if (fcntl(fd, F_GETFD) != -1) n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? "," : "", fd);
    return http_response(out, cap, 200, "fds=%s\n", list);
  }

  if (strcmp(path, "/segv") == 0) crash();
  if (strcmp(path, "/loop") == 0) spin();

  if (strncmp(path, "/alloc/", 7) == 0) {
    long mb = strtol(path + 7, NULL, 10);
    if (mb < 0 || mb > 65536) return http_response(out, cap, 400, "bad size\n");
    static char* chunks[65536];
    long k = 0;
    for (; k < mb; k++) {
      chunks[k] = malloc(1 << 20);
      if (!chunks[k]) break;
      for (size_t off = 0; off < (1u << 20); off += 4096) chunks[k][off] = (char)(k + 1);
    }
    for (long i = 0; i < k; i++) free(chunks[i]);
    return http_response(out, cap, 200, "allocated=%ld\n", k);
  }

  if (strncmp(path, "/touch/", 7) == 0) {
    long n = strtol(path + 7, NULL, 10);
    if (n < 0 || n > SCRATCH_PAGES) return http_response(out, cap, 400, "bad count\n");
    for (long i = 0; i < n; i++) scratch[i * 4096] ^= 0x5a;
    return http_response(out, cap, 200, "touched=%ld\n", n);
  }

  return http_response(out, cap, 404, "not found\n");
}

static void drop(struct conn* c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

/* Sends what is pending; closes the connection once everything went out (or on an error). */
static void flush_out(struct conn* c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)(c - conns) + 1};
      epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
      return;
    }
    if (n <= 0) break;
    c->out_off += (size_t)n;
  }
  drop(c);
}

static void on_readable(struct conn* c) {
  for (;;) {
    if (c->in_len == sizeof c->in) break;
    ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) { /* EOF or error before a full request */
      drop(c);
      return;
    }
    c->in_len += (size_t)n;
    if (http_complete(c->in, c->in_len)) break;
  }
  if (!http_complete(c->in, c->in_len)) {
    if (c->in_len < sizeof c->in) return; /* wait for more */
    c->out_len = http_response(c->out, sizeof c->out, 400, "request too large\n");
  } else {
    char path[4200];
    if (http_path(c->in, c->in_len, path, sizeof path) != 0)
      c->out_len = http_response(c->out, sizeof c->out, 400, "bad request\n");
    else
      c->out_len = route(path, c->out, sizeof c->out);
  }
  c->out_off = 0;
  flush_out(c);
}

static void accept_all(void) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) perror("accept4");
      return;
    }
    int slot = -1;
    for (int i = 0; i < MAX_CONNS; i++)
      if (conns[i].fd < 0) {
        slot = i;
        break;
      }
    if (slot < 0) {
      close(fd);
      continue;
    }
    struct conn* c = &conns[slot];
    c->fd = fd;
    c->in_len = c->out_len = c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)slot + 1};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      perror("epoll_ctl ADD");
      close(fd);
      c->fd = -1;
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s PORT [DIR]\n", argv[0]);
    return 2;
  }
  if (argc == 3) dir = argv[2];
  memset(scratch, 1, sizeof scratch);
  for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

  lfd = http_listen(argv[1], SOCK_NONBLOCK | SOCK_CLOEXEC);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    perror("epoll_create1");
    return 2;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0) {
    perror("epoll_ctl ADD listener");
    return 2;
  }
  printf("epoll_server: listening on 127.0.0.1:%s\n", argv[1]);
  fflush(stdout);

  struct epoll_event events[64];
  for (;;) {
    int n = epoll_wait(epfd, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == 0) {
        accept_all();
        continue;
      }
      struct conn* c = &conns[key - 1];
      if (c->fd < 0) continue;
      if (c->out_len > c->out_off)
        flush_out(c);
      else
        on_readable(c);
    }
  }
}

/* request_server: the test server of request isolation (tests/e2e/isolation.sh). A blocking
 * accept() loop like accept_server, but it reads request bodies (Content-Length or chunked) and
 * answers the way servers do, including the awkward ways: no length (close-delimited), 204, HEAD,
 * garbage. It keeps the connection open for more requests unless the request says close, so that
 * in connection mode a keep-alive client's requests share its state (the leak request mode ends).
 *
 *   request_server PORT [PORT2]   listens on 127.0.0.1:PORT (and :PORT2, served the same way)
 *
 * Routes: GET /id/X -> "counter=N prev=P" (N counts requests this process served, P the X of the
 * previous one); POST /upload -> "bytes=N sum=S" (S: the sum of the body's bytes mod 2^32);
 * GET /nolength -> a body without Content-Length, then close; GET /nocontent -> 204; HEAD /id/X ->
 * the GET's headers; GET /big/N -> N KiB of 'b'; GET /peer, /sock -> the connection's peer and local
 * addresses; GET /garbage -> not HTTP, then close; GET /pid -> "pid=N"; GET /forkflags -> what this
 * process and a child it forks see of two pages the server filled before it was paused, one marked
 * MADV_WIPEONFORK and one MADV_DONTFORK: "wipe=SUM dontfork=mapped|gone child_wipe=SUM
 * child_dontfork=mapped|gone" (SUM: the sum of the wipe page's bytes, 0 when wiped); GET /random
 * -> "pid=N getrandom=HEX urandom=HEX random=HEX" (16 bytes from each source); anything else 404.
 * On start-up prints "request_server: listening on 127.0.0.1:PORT". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http.h"

static int counter;
static char previous[4096];

/* Secrets a forked child must not inherit (what OpenSSL and libressl keep their generator state in). */
static unsigned char* wipe_page;
static unsigned char* dontfork_page;

static void mark_fork_pages(void) {
  wipe_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  dontfork_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (wipe_page == MAP_FAILED || dontfork_page == MAP_FAILED) abort();
  memset(wipe_page, 0x5a, 4096);
  memset(dontfork_page, 0xa5, 4096);
  if (madvise(wipe_page, 4096, MADV_WIPEONFORK) != 0 || madvise(dontfork_page, 4096, MADV_DONTFORK) != 0) {
    perror("request_server: madvise");
    exit(1);
  }
}

/* 16 bytes from getrandom() (path NULL) or a device, as hex. */
static void random_hex(const char* path, char* out) {
  unsigned char b[16];
  ssize_t n = -1;
  if (!path) {
    n = getrandom(b, sizeof b, 0);
  } else {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) n = read(fd, b, sizeof b);
    if (fd >= 0) close(fd);
  }
  if (n != (ssize_t)sizeof b) {
    snprintf(out, 33, "error:%d", errno);
    return;
  }
  for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static unsigned page_sum(const unsigned char* page) {
  unsigned sum = 0;
  for (int i = 0; i < 4096; i++) sum += page[i];
  return sum;
}

/* "mapped" or "gone": whether the page can be read, asked of the kernel (a pipe write of one byte
 * fails with EFAULT when it is not mapped) instead of touching it and dying of SIGSEGV. */
static const char* page_state(const void* page) {
  int p[2];
  if (pipe(p) != 0) return "error";
  ssize_t n = write(p[1], page, 1);
  int err = errno;
  close(p[0]);
  close(p[1]);
  return n == 1 ? "mapped" : err == EFAULT ? "gone" : "error";
}

/* A buffered reader over one connection. */
struct conn {
  int fd;
  char buf[16384];
  size_t len, pos;
};

static int fill(struct conn* c) {
  if (c->pos == c->len) c->pos = c->len = 0;
  if (c->len == sizeof c->buf) return -1;
  ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
  if (n <= 0) return -1;
  c->len += (size_t)n;
  return 0;
}

/* One line (without CRLF) into out; -1 at EOF. */
static int read_line(struct conn* c, char* out, size_t cap) {
  size_t n = 0;
  for (;;) {
    while (c->pos < c->len) {
      char ch = c->buf[c->pos++];
      if (ch == '\n') {
        if (n && out[n - 1] == '\r') n--;
        out[n] = 0;
        return 0;
      }
      if (n + 1 < cap) out[n++] = ch;
    }
    if (fill(c) != 0) return -1;
  }
}

/* Up to len body bytes, summed; -1 at EOF. */
static int read_bytes(struct conn* c, uint64_t len, uint32_t* sum) {
  while (len > 0) {
    if (c->pos == c->len && fill(c) != 0) return -1;
    size_t take = c->len - c->pos < len ? c->len - c->pos : (size_t)len;
    for (size_t i = 0; i < take; i++) *sum += (unsigned char)c->buf[c->pos + i];
    c->pos += take;
    len -= take;
  }
  return 0;
}

static void send_all(int fd, const char* data, size_t len) { http_write_all(fd, data, len); }

static void respond(int fd, int code, int keep, const char* fmt, ...) {
  char body[1024], head[512];
  va_list ap;
  va_start(ap, fmt);
  int blen = vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  int hlen = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n", code,
                      code == 200 ? "OK" : code == 404 ? "Not Found" : "Error", blen, keep ? "" : "Connection: close\r\n");
  send_all(fd, head, (size_t)hlen);
  send_all(fd, body, (size_t)blen);
}

static void address(int fd, int peer, char* out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int rc = peer ? getpeername(fd, (struct sockaddr*)&ss, &len) : getsockname(fd, (struct sockaddr*)&ss, &len);
  if (rc != 0) {
    snprintf(out, cap, "error:%s", strerror(errno));
    return;
  }
  char host[64] = "?";
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in* in = (struct sockaddr_in*)&ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
  } else {
    snprintf(out, cap, "family %d", ss.ss_family);
  }
}

/* Serves requests on one connection until it closes or a request says close. */
static void serve(int fd) {
  static struct conn c;
  c.fd = fd;
  c.len = c.pos = 0;
  char line[8192], method[16], path[4096];
  for (;;) {
    if (read_line(&c, line, sizeof line) != 0) return;
    if (!line[0]) continue;
    if (sscanf(line, "%15s %4095s", method, path) != 2) return;
    uint64_t length = 0;
    int chunked = 0, keep = 1;
    for (;;) {
      if (read_line(&c, line, sizeof line) != 0) return;
      if (!line[0]) break;
      if (strncasecmp(line, "Content-Length:", 15) == 0) length = strtoull(line + 15, NULL, 10);
      if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strcasestr(line, "chunked")) chunked = 1;
      if (strncasecmp(line, "Connection:", 11) == 0 && strcasestr(line, "close")) keep = 0;
    }
    uint32_t sum = 0;
    uint64_t bytes = 0;
    if (chunked) {
      for (;;) {
        if (read_line(&c, line, sizeof line) != 0) return;
        uint64_t n = strtoull(line, NULL, 16);
        if (n == 0) {
          while (read_line(&c, line, sizeof line) == 0 && line[0]) {
          }
          break;
        }
        if (read_bytes(&c, n, &sum) != 0 || read_line(&c, line, sizeof line) != 0) return;
        bytes += n;
      }
    } else if (length) {
      if (read_bytes(&c, length, &sum) != 0) return;
      bytes = length;
    }
    ++counter;
    const int head = strcmp(method, "HEAD") == 0;
    char text[256];
    if (strncmp(path, "/id/", 4) == 0) {
      char body[512];
      int blen = snprintf(body, sizeof body, "counter=%d prev=%s\n", counter, previous);
      snprintf(previous, sizeof previous, "%s", path + 4);
      char hdr[256];
      int hlen = snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n", blen,
                          keep ? "" : "Connection: close\r\n");
      send_all(fd, hdr, (size_t)hlen);
      if (!head) send_all(fd, body, (size_t)blen);
    } else if (strcmp(path, "/upload") == 0) {
      respond(fd, 200, keep, "bytes=%llu sum=%u\n", (unsigned long long)bytes, sum);
    } else if (strcmp(path, "/nolength") == 0) {
      const char* r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nno length here\n";
      send_all(fd, r, strlen(r));
      return;
    } else if (strcmp(path, "/nocontent") == 0) {
      const char* r = "HTTP/1.1 204 No Content\r\n\r\n";
      send_all(fd, r, strlen(r));
    } else if (strncmp(path, "/big/", 5) == 0) {
      long kib = strtol(path + 5, NULL, 10);
      char hdr[256], block[1024];
      memset(block, 'b', sizeof block);
      int hlen = snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n%s\r\n", kib * 1024,
                          keep ? "" : "Connection: close\r\n");
      send_all(fd, hdr, (size_t)hlen);
      for (long i = 0; i < kib; i++) send_all(fd, block, sizeof block);
    } else if (strcmp(path, "/peer") == 0 || strcmp(path, "/sock") == 0) {
      address(fd, strcmp(path, "/peer") == 0, text, sizeof text);
      respond(fd, 200, keep, "%s\n", text);
    } else if (strcmp(path, "/pid") == 0) {
      respond(fd, 200, keep, "pid=%d\n", (int)getpid());
    } else if (strcmp(path, "/random") == 0) {
      char g[40], u[40], r[40];
      random_hex(NULL, g);
      random_hex("/dev/urandom", u);
      random_hex("/dev/random", r);
      respond(fd, 200, keep, "pid=%d getrandom=%s urandom=%s random=%s\n", (int)getpid(), g, u, r);
    } else if (strcmp(path, "/forkflags") == 0) {
      char child[128] = "child_error";
      int p[2];
      if (pipe(p) == 0) {
        pid_t pid = fork();
        if (pid == 0) {
          char line[128];
          int n = snprintf(line, sizeof line, "child_wipe=%u child_dontfork=%s", page_sum(wipe_page), page_state(dontfork_page));
          if (write(p[1], line, (size_t)n) != n) _exit(1);
          _exit(0);
        }
        close(p[1]);
        ssize_t n = pid > 0 ? read(p[0], child, sizeof child - 1) : -1;
        if (n > 0) child[n] = 0;
        close(p[0]);
        if (pid > 0) waitpid(pid, NULL, 0);
      }
      respond(fd, 200, keep, "wipe=%u dontfork=%s %s\n", page_sum(wipe_page), page_state(dontfork_page), child);
    } else if (strcmp(path, "/garbage") == 0) {
      const char* r = "this is not HTTP at all\r\n\r\n";
      send_all(fd, r, strlen(r));
      return;
    } else {
      respond(fd, 404, keep, "not found\n");
    }
    if (!keep) return;
  }
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s PORT [PORT2]\n", argv[0]);
    return 2;
  }
  int l[2] = {http_listen(argv[1], SOCK_CLOEXEC), argc == 3 ? http_listen(argv[2], SOCK_CLOEXEC) : -1};
  mark_fork_pages();
  printf("request_server: listening on 127.0.0.1:%s\n", argv[1]);
  fflush(stdout);
  for (;;) {
    struct pollfd p[2] = {{l[0], POLLIN, 0}, {l[1], POLLIN, 0}};
    if (poll(p, l[1] >= 0 ? 2 : 1, -1) < 0) continue;
    for (int i = 0; i < 2; i++) {
      if (l[i] < 0 || !(p[i].revents & POLLIN)) continue;
      int fd = accept(l[i], NULL, NULL);
      if (fd < 0) continue;
      serve(fd);
      close(fd);
    }
  }
}

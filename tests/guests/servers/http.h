/* Shared helpers for the test HTTP servers (epoll_server, poll_server, accept_server): request
 * parsing and response formatting. Plain C, glibc or musl, no allocation. Every response is
 * "HTTP/1.1 CODE ...", Content-Type text/plain, Content-Length, Connection: close. */
#ifndef KVMS_SERVERS_HTTP_H
#define KVMS_SERVERS_HTTP_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_REQUEST 8192
#define HTTP_MAX_RESPONSE 16384

/* Listening socket on 127.0.0.1:port (port as a string), SO_REUSEADDR, backlog 128. Exits 2 on
 * any failure, with the reason on stderr. */
static inline int http_listen(const char* port_text, int type_flags) {
  char* end = NULL;
  long port = strtol(port_text, &end, 10);
  if (!*port_text || *end || port <= 0 || port > 65535) {
    fprintf(stderr, "bad port '%s'\n", port_text);
    exit(2);
  }
  int fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);
  if (fd < 0) {
    perror("socket");
    exit(2);
  }
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    perror("setsockopt SO_REUSEADDR");
    exit(2);
  }
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr*)&addr, sizeof addr) != 0) {
    perror("bind");
    exit(2);
  }
  if (listen(fd, 128) != 0) {
    perror("listen");
    exit(2);
  }
  return fd;
}

/* The request is complete once the header block has ended. */
static inline int http_complete(const char* req, size_t len) {
  return memmem(req, len, "\r\n\r\n", 4) != NULL || memmem(req, len, "\n\n", 2) != NULL;
}

/* Copies the path of "GET /path HTTP/1.x" into path (NUL-terminated, at most cap-1 bytes).
 * Returns 0 for a GET, -1 for anything malformed or another method. */
static inline int http_path(const char* req, size_t len, char* path, size_t cap) {
  if (len < 5 || memcmp(req, "GET /", 5) != 0) return -1;
  size_t i = 4, n = 0;
  while (i < len && req[i] != ' ' && req[i] != '\r' && req[i] != '\n') {
    if (n + 1 >= cap) return -1;
    path[n++] = req[i++];
  }
  path[n] = 0;
  return 0;
}

/* Formats a full response with the body given printf-style into out (cap bytes); returns its length. */
static inline size_t http_response(char* out, size_t cap, int code, const char* fmt, ...) {
  char body[HTTP_MAX_RESPONSE - 256];
  va_list ap;
  va_start(ap, fmt);
  int blen = vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  if (blen < 0) blen = 0;
  if ((size_t)blen >= sizeof body) blen = (int)sizeof body - 1;
  const char* reason = code == 200 ? "OK" : code == 404 ? "Not Found" : code == 400 ? "Bad Request" : "Error";
  int n = snprintf(out, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%.*s",
                   code, reason, blen, blen, body);
  if (n < 0) return 0;
  return (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Copies src into dst (cap bytes), truncated and always NUL-terminated. */
static inline void copy_text(char* dst, size_t cap, const char* src) {
  size_t n = strnlen(src, cap - 1);
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* Blocking helpers for the poll and accept servers: read one request, write all of a response. */
static inline ssize_t http_read_request(int fd, char* req, size_t cap) {
  size_t len = 0;
  while (len < cap && !http_complete(req, len)) {
    ssize_t n = read(fd, req + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return len ? (ssize_t)len : -1;
    len += (size_t)n;
  }
  return (ssize_t)len;
}

static inline void http_write_all(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    len -= (size_t)n;
  }
}

/* Answers one blocking connection with route(path, out, cap) and closes it. The buffers are the
 * caller's (static or thread-local: requests can be large). */
typedef size_t (*http_route_fn)(const char* path, char* out, size_t cap);
static inline void http_answer(int fd, http_route_fn route, char* req, size_t req_cap, char* out, size_t out_cap,
                               char* path, size_t path_cap) {
  ssize_t len = http_read_request(fd, req, req_cap);
  if (len > 0) {
    size_t n;
    if (!http_complete(req, (size_t)len))
      n = http_response(out, out_cap, 400, "incomplete request\n");
    else if (http_path(req, (size_t)len, path, path_cap) != 0)
      n = http_response(out, out_cap, 400, "bad request\n");
    else
      n = route(path, out, out_cap);
    http_write_all(fd, out, n);
  }
  close(fd);
}

#endif

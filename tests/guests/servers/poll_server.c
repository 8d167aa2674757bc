/* poll_server: a single-threaded HTTP/1.1 test server for kvmserver's server mode that waits in
 * poll() on a blocking listening socket, then accept()s (blocking) once poll says it is readable,
 * and serves that connection with blocking reads and writes. Every response closes its connection.
 *
 *   poll_server PORT          listens on 127.0.0.1:PORT
 *
 * Routes (GET): "/" -> "hello\n"; "/id/XYZ" -> ++counter, "counter=N prev=<buffer>\n", then XYZ
 * is copied into buffer; anything else 404.
 * On start-up prints "poll_server: listening on 127.0.0.1:PORT" on stdout. */
#include "http.h"

#include <poll.h>

static int counter;
static char buffer[4096];

static size_t route(const char* path, char* out, size_t cap) {
  if (strcmp(path, "/") == 0) return http_response(out, cap, 200, "hello\n");
  if (strncmp(path, "/id/", 4) == 0) {
    ++counter;
    size_t n = http_response(out, cap, 200, "counter=%d prev=%s\n", counter, buffer);
    copy_text(buffer, sizeof buffer, path + 4);
    return n;
  }
  return http_response(out, cap, 404, "not found\n");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int lfd = http_listen(argv[1], SOCK_CLOEXEC);
  printf("poll_server: listening on 127.0.0.1:%s\n", argv[1]);
  fflush(stdout);

  static char req[HTTP_MAX_REQUEST], out[HTTP_MAX_RESPONSE], path[4200];
  for (;;) {
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    int r = poll(&p, 1, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      return 1;
    }
    if (!(p.revents & POLLIN)) continue;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("accept");
      return 1;
    }
    http_answer(fd, route, req, sizeof req, out, sizeof out, path, sizeof path);
  }
}

/* routes_server: the static C twin of the runtime servers of tests/e2e/runtimes.sh
 * (runtimes/py_server.py, node_server.js, deno_server.ts): the same routes, so the "servers" cases
 * of runtimes.sh can be checked end to end under kvmserver (readiness, 500 requests, isolation,
 * --warmup, the counters) while the runtimes themselves cannot run there yet. Blocking accept()
 * loop, one connection at a time, every response closes its connection.
 *
 *   routes_server PORT        listens on 127.0.0.1:PORT
 *
 * Routes (GET): "/" -> "hello\n"; "/set/NAME" -> sets the global to NAME, "set NAME\n"; "/get" ->
 * "global=VALUE\n" (VALUE "unset" until a /set); "/hits" -> "hits=N\n", N counting every request
 * served, this one included; anything else 404.
 * On start-up prints "routes_server: listening on 127.0.0.1:PORT" on stdout. */
#include "http.h"

static char state[4096] = "unset";
static int hits;

static size_t route(const char* path, char* out, size_t cap) {
  ++hits;
  if (strcmp(path, "/") == 0) return http_response(out, cap, 200, "hello\n");
  if (strncmp(path, "/set/", 5) == 0) {
    copy_text(state, sizeof state, path + 5);
    return http_response(out, cap, 200, "set %s\n", state);
  }
  if (strcmp(path, "/get") == 0) return http_response(out, cap, 200, "global=%s\n", state);
  if (strcmp(path, "/hits") == 0) return http_response(out, cap, 200, "hits=%d\n", hits);
  return http_response(out, cap, 404, "not found\n");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int lfd = http_listen(argv[1], SOCK_CLOEXEC);
  printf("routes_server: listening on 127.0.0.1:%s\n", argv[1]);
  fflush(stdout);

  static char req[HTTP_MAX_REQUEST], out[HTTP_MAX_RESPONSE], path[4200];
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("accept");
      return 1;
    }
    http_answer(fd, route, req, sizeof req, out, sizeof out, path, sizeof path);
  }
}

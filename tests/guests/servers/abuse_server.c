/* abuse_server: an HTTP server whose requests attack the sandbox's resources (issue 9), for
 * tests/e2e/limits.sh: under `kvmserver -e`, a request that runs into a cap must cost only itself.
 * Blocking accept() loop like accept_server.
 *
 *   abuse_server PORT        listens on 127.0.0.1:PORT
 *
 * Routes (GET): "/" -> "hello\n"; "/bomb/KIND[/ARG[/ARG]]" runs that attack of
 * tests/guests/hostile/bombs.h (fork, clone, threads, files, pipes, sockets, epoll, memory, tmp,
 * signals, orphan) and answers with its summary line; "/tmp" -> the number of entries in /tmp.
 * On start-up prints "abuse_server: listening on 127.0.0.1:PORT". */
#define _GNU_SOURCE
#include <dirent.h>

#include "../hostile/bombs.h"
#include "http.h"

static size_t route(const char* path, char* out, size_t cap) {
  if (strcmp(path, "/") == 0) return http_response(out, cap, 200, "hello\n");
  if (strcmp(path, "/tmp") == 0) {
    DIR* d = opendir("/tmp");
    if (!d) return http_response(out, cap, 500, "opendir /tmp: %s\n", strerror(errno));
    int n = 0;
    for (struct dirent* e; (e = readdir(d));) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return http_response(out, cap, 200, "entries=%d\n", n);
  }
  if (strncmp(path, "/bomb/", 6) == 0) {
    char words[256];
    copy_text(words, sizeof words, path + 6);
    char* argv[4];
    int argc = 0;
    for (char *save = NULL, *w = strtok_r(words, "/", &save); w && argc < 4; w = strtok_r(NULL, "/", &save)) argv[argc++] = w;
    char line[BOMB_LINE];
    if (bomb_run(argc, argv, line) != 0) return http_response(out, cap, 404, "no such attack\n");
    return http_response(out, cap, 200, "%s\n", line);
  }
  return http_response(out, cap, 404, "not found\n");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int lfd = http_listen(argv[1], SOCK_CLOEXEC);
  printf("abuse_server: listening on 127.0.0.1:%s\n", argv[1]);
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

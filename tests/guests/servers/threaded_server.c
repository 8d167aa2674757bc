/* threaded_server: an HTTP/1.1 test server with a thread pool, like the runtimes' servers: the main
 * thread blocks in accept() and hands each connection to one of 4 pool threads waiting on a
 * condition variable; a pool thread answers and closes. Under kvmserver the template pauses with
 * the pool threads asleep in futex waits, and every worker reset must bring all of them back.
 *
 *   threaded_server PORT      listens on 127.0.0.1:PORT
 *
 * Routes (GET): "/" -> "hello\n"; "/id/XYZ" -> ++counter, "counter=N prev=<buffer>\n", then XYZ
 * is copied into buffer; "/threads" -> "threads=N" (pool threads that ever ran a request, summed
 * over the pool: per-request isolation keeps it at 1); anything else 404. */
#include "http.h"

#include <pthread.h>

#define POOL 4

static int counter;
static char buffer[4096];
static int served_by[POOL];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static int queue[64];
static int queued;

static size_t route(const char* path, char* out, size_t cap) {
  if (strcmp(path, "/") == 0) return http_response(out, cap, 200, "hello\n");
  if (strncmp(path, "/id/", 4) == 0) {
    pthread_mutex_lock(&lock);
    ++counter;
    size_t n = http_response(out, cap, 200, "counter=%d prev=%s\n", counter, buffer);
    copy_text(buffer, sizeof buffer, path + 4);
    pthread_mutex_unlock(&lock);
    return n;
  }
  if (strcmp(path, "/threads") == 0) {
    int sum = 0;
    for (int i = 0; i < POOL; i++) sum += served_by[i];
    return http_response(out, cap, 200, "threads=%d\n", sum);
  }
  return http_response(out, cap, 404, "not found\n");
}

static void* pool_thread(void* arg) {
  int id = (int)(long)arg;
  static __thread char req[HTTP_MAX_REQUEST], out[HTTP_MAX_RESPONSE], path[4200];
  for (;;) {
    pthread_mutex_lock(&lock);
    while (queued == 0) pthread_cond_wait(&work_ready, &lock);
    int fd = queue[--queued];
    served_by[id] = 1;
    pthread_mutex_unlock(&lock);
    http_answer(fd, route, req, sizeof req, out, sizeof out, path, sizeof path);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int lfd = http_listen(argv[1], SOCK_CLOEXEC);
  for (long i = 0; i < POOL; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, pool_thread, (void*)i) != 0) {
      perror("pthread_create");
      return 1;
    }
  }
  printf("threaded_server: listening on 127.0.0.1:%s\n", argv[1]);
  fflush(stdout);
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("accept");
      return 1;
    }
    pthread_mutex_lock(&lock);
    if (queued < 64) {
      queue[queued++] = fd;
      pthread_cond_signal(&work_ready);
    } else {
      close(fd);
    }
    pthread_mutex_unlock(&lock);
  }
}

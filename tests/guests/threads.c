/* Threads: creation and join, mutex + condition variable + atomics giving an exact total, a thread
 * spinning on a flag another thread sets (needs real parallelism or preemption), thread exit vs
 * process exit, futex timeouts, and per-thread TLS. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define THREADS 8
#define PER_THREAD 12500

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_started = PTHREAD_COND_INITIALIZER;
static long counter;
static atomic_long atomic_counter;
static int started;
static atomic_int flag;
static __thread long tls_value;

static void *work(void *arg) {
  tls_value = (long)arg;
  pthread_mutex_lock(&lock);
  started++;
  pthread_cond_broadcast(&all_started);
  while (started < THREADS) pthread_cond_wait(&all_started, &lock);
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < PER_THREAD; i++) {
    pthread_mutex_lock(&lock);
    counter++;
    pthread_mutex_unlock(&lock);
    atomic_fetch_add(&atomic_counter, 1);
  }
  return (void *)(tls_value * 10);
}

static void *spin(void *arg) {
  while (!atomic_load(&flag)) {
  }
  return arg;
}

static void *set_flag_later(void *arg) {
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, 0);
  atomic_store(&flag, 2);
  return arg;
}

int main(void) {
  for (int round = 0; round < 3; round++) {
    pthread_t t[THREADS];
    counter = 0;
    atomic_store(&atomic_counter, 0);
    started = 0;
    for (long i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], 0, work, (void *)i) == 0);
    for (long i = 0; i < THREADS; i++) {
      void *ret;
      CHECK(pthread_join(t[i], &ret) == 0);
      CHECK((long)ret == i * 10);
    }
    CHECK(counter == (long)THREADS * PER_THREAD);
    CHECK(atomic_load(&atomic_counter) == (long)THREADS * PER_THREAD);
  }
  /* The main thread spins while another sets the flag; and a thread spins while main sets it. */
  pthread_t setter, spinner;
  CHECK(pthread_create(&setter, 0, set_flag_later, 0) == 0);
  while (atomic_load(&flag) != 2) {
  }
  CHECK(pthread_join(setter, 0) == 0);
  atomic_store(&flag, 0);
  CHECK(pthread_create(&spinner, 0, spin, (void *)7) == 0);
  struct timespec ts = {0, 10 * 1000 * 1000};
  nanosleep(&ts, 0);
  atomic_store(&flag, 1);
  void *ret;
  CHECK(pthread_join(spinner, &ret) == 0 && (long)ret == 7);

  /* A timed wait that nobody signals times out. */
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_nsec += 30 * 1000 * 1000;
  if (deadline.tv_nsec >= 1000000000) deadline.tv_sec++, deadline.tv_nsec -= 1000000000;
  pthread_mutex_lock(&lock);
  CHECK(pthread_cond_timedwait(&all_started, &lock, &deadline) == ETIMEDOUT);
  pthread_mutex_unlock(&lock);

  CHECK(syscall(SYS_gettid) == getpid());
  guest_ok("threads");
  return 0;
}

/* pthread_stress: 8 threads, a mutex, condition variables and atomics; exact totals or exit 1.
 *
 * Each round:
 *   - start gate: 8 new threads check in (mutex + condvar "ready"), then all wait on condvar "go"
 *     until the main thread broadcasts, so they really run at the same time;
 *   - increments: each thread adds 1 to a mutex-protected counter and 1 to an atomic counter
 *     125000 times (10^6 each in total) and adds its own count to an atomic sum at the end;
 *   - token ring: a token goes round the 8 threads 1000 times (8000 passes, each thread waits on
 *     its own condvar until the token is its own, and signals the next one's), so almost every
 *     pass needs a real wake-up;
 *   - the threads are joined and every total is checked exactly: mutex 1000000, atomic 1000000,
 *     per-thread sum 1000000, ring 8000 passes in order.
 * Output: one deterministic line, "pthread_stress: 8 threads x R rounds: mutex=1000000
 * atomic=1000000 ring=8000 ok" (the per-round totals), and exit 0; else "pthread_stress: FAIL ..."
 * on stderr and exit 1.
 *
 * Usage: pthread_stress [ROUNDS]   (default 1; every round starts 8 new threads)
 * Built with glibc dynamically linked, glibc -static and musl (tests/guests/CMakeLists.txt); run by
 * tests/e2e/runtimes.sh (the "pthread" case), not yet by tests/kvm/run_guests.sh. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 8
#define INCREMENTS 125000 /* per thread: 10^6 in total */
#define LAPS 1000         /* token ring: THREADS * LAPS passes */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t go_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t turn_cv[THREADS]; /* one per thread: passing the token wakes exactly the next */

static long mutex_total;     /* under lock */
static int ready_count;      /* under lock */
static int go;               /* under lock */
static int turn;             /* under lock: whose the token is */
static long ring_passes;     /* under lock */
static int ring_out_of_order; /* under lock */
static atomic_long atomic_total;
static atomic_long thread_sum;

static void fail(const char *what, int err) {
  fprintf(stderr, "pthread_stress: FAIL %s (error %d)\n", what, err);
  exit(1);
}

static void *worker(void *arg) {
  int me = (int)(long)arg;
  long mine = 0;

  pthread_mutex_lock(&lock);
  ready_count++;
  pthread_cond_signal(&ready_cv);
  while (!go) pthread_cond_wait(&go_cv, &lock);
  pthread_mutex_unlock(&lock);

  for (int i = 0; i < INCREMENTS; i++) {
    pthread_mutex_lock(&lock);
    mutex_total++;
    pthread_mutex_unlock(&lock);
    atomic_fetch_add_explicit(&atomic_total, 1, memory_order_relaxed);
    mine++;
  }
  atomic_fetch_add(&thread_sum, mine);

  for (int lap = 0; lap < LAPS; lap++) {
    pthread_mutex_lock(&lock);
    while (turn != me) pthread_cond_wait(&turn_cv[me], &lock);
    if (ring_passes % THREADS != me) ring_out_of_order++;
    ring_passes++;
    turn = (me + 1) % THREADS;
    pthread_cond_signal(&turn_cv[turn]);
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 1;
  if (rounds < 1) fail("bad ROUNDS argument", 0);
  for (int i = 0; i < THREADS; i++) pthread_cond_init(&turn_cv[i], NULL);

  for (int r = 0; r < rounds; r++) {
    pthread_t t[THREADS];
    mutex_total = 0;
    ready_count = 0;
    go = 0;
    turn = 0;
    ring_passes = 0;
    ring_out_of_order = 0;
    atomic_store(&atomic_total, 0);
    atomic_store(&thread_sum, 0);

    for (long i = 0; i < THREADS; i++) {
      int e = pthread_create(&t[i], NULL, worker, (void *)i);
      if (e) fail("pthread_create", e);
    }
    pthread_mutex_lock(&lock);
    while (ready_count < THREADS) pthread_cond_wait(&ready_cv, &lock);
    go = 1;
    pthread_cond_broadcast(&go_cv);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < THREADS; i++) {
      int e = pthread_join(t[i], NULL);
      if (e) fail("pthread_join", e);
    }

    long want = (long)THREADS * INCREMENTS;
    if (mutex_total != want || atomic_load(&atomic_total) != want || atomic_load(&thread_sum) != want ||
        ring_passes != (long)THREADS * LAPS || ring_out_of_order != 0) {
      fprintf(stderr,
              "pthread_stress: FAIL round %d: mutex=%ld atomic=%ld sum=%ld ring=%ld out_of_order=%d (want %ld, %ld, %ld, %d, 0)\n",
              r + 1, mutex_total, atomic_load(&atomic_total), atomic_load(&thread_sum), ring_passes,
              ring_out_of_order, want, want, want, THREADS * LAPS);
      return 1;
    }
  }
  printf("pthread_stress: %d threads x %d rounds: mutex=%ld atomic=%ld ring=%ld ok\n", THREADS, rounds,
         mutex_total, atomic_load(&atomic_total), ring_passes);
  return 0;
}

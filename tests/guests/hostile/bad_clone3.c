/* Hostile: clone3 and clone with arguments Linux refuses, and tid pointers it ignores.
 *   - struct sizes: 0, 63 (EINVAL), 4097 (E2BIG), 4096 with bytes set past the known struct (E2BIG)
 *   - the struct at NULL, in the kernel area, running into an unmapped page (EFAULT)
 *   - exit_signal 65, signal bits in flags, set_tid without a size (EINVAL)
 *   - a stack without a size, a size without a stack, a stack wrapping around or in the kernel area
 *     (EINVAL)
 *   - CLONE_SETTLS with a non-canonical tls (EPERM)
 *   - 200 threads, one after another, whose CLONE_PARENT_SETTID pointer is bad: Linux ignores it
 *     and each thread runs (kvmserver once failed them with EFAULT, keeping a vCPU slot each that
 *     a later pause of the process waited for forever)
 * Each must give what Linux gives; then "ok bad_clone3". */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct clone_args_v2 {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

static int fails;
#define KERNEL ((uint64_t)0xffffff8000004000ull)

static void expect(const char *what, long r, int err) {
  if (r == -1 && errno == err) return;
  printf("%s: %ld errno %d (want errno %d)\n", what, r, r == -1 ? errno : 0, err);
  fails++;
}

static long clone3_raw(void *args, size_t size) { return syscall(SYS_clone3, args, size); }

/* A process child that exits at once; the parent reaps it. */
static void expect_fork_works(const char *what, void *args, size_t size) {
  long pid = clone3_raw(args, size);
  if (pid == 0) _exit(7);
  int status;
  if (pid < 0 || waitpid((pid_t)pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 7) {
    printf("%s: clone3 = %ld errno %d\n", what, pid, errno);
    fails++;
  }
}

static volatile int ran;
static void thread_body(void) { __atomic_add_fetch(&ran, 1, __ATOMIC_SEQ_CST); }

/* clone3 of a thread that runs thread_body on its own stack, then exit(0): the tid (or -errno). */
static long clone3_thread(struct clone_args_v2 *args) {
  long ret;
  register void (*fn)(void) __asm__("r12") = thread_body;
  __asm__ volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "call *%%r12\n\t"
      "mov $60, %%eax\n\t"
      "xor %%edi, %%edi\n\t"
      "syscall\n\t"
      "1:"
      : "=a"(ret)
      : "a"(SYS_clone3), "D"(args), "S"(sizeof *args), "r"(fn)
      : "rcx", "r11", "memory");
  return ret;
}

int main(void) {
  char *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED || munmap(page + 4096, 4096) != 0) return 1;
  struct clone_args_v2 args;
  memset(&args, 0, sizeof args);
  args.exit_signal = SIGCHLD;

  expect("size 0", clone3_raw(&args, 0), EINVAL);
  expect("size 63", clone3_raw(&args, 63), EINVAL);
  static uint8_t big[8192] __attribute__((aligned(64)));
  memcpy(big, &args, sizeof args);
  expect("size 4097", clone3_raw(big, 4097), E2BIG);
  big[4000] = 1;
  expect("unknown fields set", clone3_raw(big, 4096), E2BIG);
  big[4000] = 0;
  expect_fork_works("size 4096, zeros past the struct", big, 4096);
  expect_fork_works("size 64", &args, 64);

  expect("args NULL", clone3_raw(NULL, sizeof args), EFAULT);
  expect("args in the kernel area", clone3_raw((void *)KERNEL, sizeof args), EFAULT);
  expect("args running off a mapping", clone3_raw(page + 4096 - 40, sizeof args), EFAULT);

  struct clone_args_v2 bad = args;
  bad.exit_signal = 65;
  expect("exit_signal 65", clone3_raw(&bad, sizeof bad), EINVAL);
  bad = args;
  bad.flags = SIGCHLD;
  expect("signal bits in flags", clone3_raw(&bad, sizeof bad), EINVAL);
  bad = args;
  bad.set_tid = (uint64_t)(uintptr_t)page;
  expect("set_tid without a size", clone3_raw(&bad, sizeof bad), EINVAL);
  bad = args;
  bad.stack = (uint64_t)(uintptr_t)page;
  expect("stack without a size", clone3_raw(&bad, sizeof bad), EINVAL);
  bad = args;
  bad.stack_size = 4096;
  expect("size without a stack", clone3_raw(&bad, sizeof bad), EINVAL);
  bad = args;
  bad.stack = 0x7ffffffff000ull;
  bad.stack_size = ~0ull - 0x1000;
  expect("stack wrapping around", clone3_raw(&bad, sizeof bad), EINVAL);
  bad.stack = KERNEL;
  bad.stack_size = 4096;
  expect("stack in the kernel area", clone3_raw(&bad, sizeof bad), EINVAL);

  static uint8_t stack[64 * 1024] __attribute__((aligned(16)));
  struct clone_args_v2 thr;
  memset(&thr, 0, sizeof thr);
  thr.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS;
  thr.stack = (uint64_t)(uintptr_t)stack;
  thr.stack_size = sizeof stack;
  thr.tls = 0x0000800000000000ull;
  errno = 0;
  long r = clone3_thread(&thr);
  if (r != -EPERM) {
    printf("CLONE_SETTLS with a non-canonical tls: %ld (want %d)\n", r, -EPERM);
    fails++;
  }
  if (syscall(SYS_clone, CLONE_SETTLS | SIGCHLD, 0, 0, 0, 0x0000800000000000ull) != -1 || errno != EPERM) {
    printf("clone CLONE_SETTLS with a non-canonical tls: errno %d (want EPERM)\n", errno);
    fails++;
  }

  /* Threads with bad tid pointers still run, one after another, more of them than vCPU slots. */
  static volatile uint32_t alive;
  thr.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_PARENT_SETTID |
              CLONE_CHILD_CLEARTID;
  thr.tls = 0;
  for (int i = 0; i < 200; i++) {
    thr.parent_tid = (i & 1) ? KERNEL : 0x1000;
    alive = 1;
    thr.child_tid = (uint64_t)(uintptr_t)&alive; /* cleared and woken when the thread is gone */
    r = clone3_thread(&thr);
    if (r <= 0) {
      printf("thread %d with a bad parent_tid: %ld\n", i, r);
      fails++;
      break;
    }
    while (__atomic_load_n(&alive, __ATOMIC_SEQ_CST) != 0) syscall(SYS_futex, &alive, FUTEX_WAIT, 1, NULL, NULL, 0);
  }
  if (ran != 200 && !fails) {
    printf("%d of 200 threads ran\n", ran);
    fails++;
  }
  if (fails) return 1;
  printf("ok bad_clone3\n");
  return 0;
}

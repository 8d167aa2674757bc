/* Hostile: signal frames changed by the handler before rt_sigreturn pops them.
 *
 * Without an argument: one child per attack the guest survives, each checked after the return:
 *   selectors  cs = kernel code, ss = kernel data: the program goes on in ring 3 (or, as Linux
 *              does for a selector it cannot load, dies of SIGSEGV)
 *   rflags     IOPL 3, NT, VM, VIF, VIP: none of them is set afterwards
 *   tf         the trap flag: the next instruction raises SIGTRAP, whose handler clears it
 *   xsave_reserved    header bytes XRSTOR ignores: taken (cleared), as on Linux
 *   xsave_compacted   a compacted XSAVE area: Linux restores it, KVM cannot; SIGSEGV then
 * and prints "ok bad_sigreturn_frames".
 * With an argument, one attack whose frame is bad; the program must die of SIGSEGV (as on Linux),
 * with kvmserver alive to report it: xsave_feature (a reserved XSTATE_BV bit), mxcsr (reserved
 * MXCSR bits), fpstate_kernel (the fpstate pointer in the kernel area), rip_noncanonical. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

static const char *attack;
static volatile int traps;

static uint64_t *xsave_header(ucontext_t *uc) { return (uint64_t *)((uint8_t *)uc->uc_mcontext.fpregs + 512); }

static void on_usr1(int sig, siginfo_t *info, void *ctx) {
  (void)sig;
  (void)info;
  ucontext_t *uc = ctx;
  greg_t *g = uc->uc_mcontext.gregs;
  if (!strcmp(attack, "selectors")) {
    /* REG_CSGSFS packs cs, gs, fs and ss (16 bits each). */
    g[REG_CSGSFS] = (greg_t)(0x08ull | (0x10ull << 48));
  } else if (!strcmp(attack, "rflags")) {
    g[REG_EFL] |= (3 << 12) | (1 << 14) | (1 << 17) | (1 << 19) | (1 << 20);
  } else if (!strcmp(attack, "tf")) {
    g[REG_EFL] |= 1 << 8;
  } else if (!strcmp(attack, "xsave_feature")) {
    xsave_header(uc)[0] |= 1ull << 63;
  } else if (!strcmp(attack, "xsave_compacted")) {
    xsave_header(uc)[1] = 1ull << 63 | xsave_header(uc)[0];
  } else if (!strcmp(attack, "xsave_reserved")) {
    xsave_header(uc)[5] = 0x4141414141414141ull;
  } else if (!strcmp(attack, "mxcsr")) {
    xsave_header(uc)[0] |= 3; /* x87 and SSE state present: MXCSR is loaded */
    uc->uc_mcontext.fpregs->mxcsr = 0xffff1f80;
  } else if (!strcmp(attack, "fpstate_kernel")) {
    uc->uc_mcontext.fpregs = (void *)0xffffff8000004000ull;
  } else if (!strcmp(attack, "rip_noncanonical")) {
    g[REG_RIP] = (greg_t)0x0000800000000000ull;
  }
}

static void on_trap(int sig, siginfo_t *info, void *ctx) {
  (void)sig;
  (void)info;
  ucontext_t *uc = ctx;
  uc->uc_mcontext.gregs[REG_EFL] &= ~(greg_t)(1 << 8);
  traps++;
}

static uint64_t flags_now(void) {
  uint64_t f;
  __asm__ volatile("pushfq; popq %0" : "=r"(f));
  return f;
}

static int attack_now(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_sigaction = on_trap;
  sigaction(SIGTRAP, &sa, NULL);
  raise(SIGUSR1);
  /* Back from rt_sigreturn (if the frame was taken). */
  if (!strcmp(attack, "selectors")) {
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    return (cs & 3) == 3 ? 0 : 3;
  }
  if (!strcmp(attack, "rflags")) {
    const uint64_t f = flags_now();
    return (f & ((3 << 12) | (1 << 14) | (1 << 17) | (1 << 19) | (1 << 20))) ? 3 : 0;
  }
  if (!strcmp(attack, "tf")) return traps >= 1 && !(flags_now() & (1 << 8)) ? 0 : 3;
  if (!strcmp(attack, "xsave_reserved") || !strcmp(attack, "xsave_compacted")) return 0;
  return 4; /* a bad frame was taken */
}

int main(int argc, char **argv) {
  if (argc > 1) {
    attack = argv[1];
    return attack_now();
  }
  static const char *const survivable[] = {"selectors", "rflags", "tf", "xsave_reserved", "xsave_compacted"};
  int fails = 0;
  for (size_t i = 0; i < sizeof survivable / sizeof survivable[0]; i++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      attack = survivable[i];
      _exit(attack_now());
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) return 1;
    const int may_die = !strcmp(survivable[i], "selectors") || !strcmp(survivable[i], "xsave_compacted");
    const int ok = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                   (may_die && WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    if (!ok) {
      printf("attack %s: status 0x%x\n", survivable[i], status);
      fails++;
    }
  }
  if (fails) return 1;
  printf("ok bad_sigreturn_frames\n");
  return 0;
}

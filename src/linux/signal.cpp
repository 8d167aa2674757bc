// Signal dispositions and masks are recorded so programs that set them up run; delivering signals to
// guest handlers comes with threads. A signal the guest sends itself takes the default action.
#include <signal.h>

#include <cerrno>

#include "linux/process_table.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr int kMaxSignal = 64;
constexpr int kSsAutodisarm = 1 << 31;
constexpr uint64_t kUnblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));

bool ignored_by_default(int sig) {
  return sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT;
}

// What a signal sent to ourselves does without delivery: nothing when ignored or blocked, otherwise
// the process ends as if killed by it.
int64_t raise_signal(Process& p, int sig) {
  if (sig == 0) return 0;
  if (sig < 1 || sig > kMaxSignal) return -EINVAL;
  const KernelSigaction& act = p.sigactions[sig];
  const bool blocked = (p.thread().sigmask >> (sig - 1)) & 1;
  if (act.handler == uint64_t(SIG_IGN) || blocked) return 0;
  if (act.handler == uint64_t(SIG_DFL) && ignored_by_default(sig)) return 0;
  if (act.handler != uint64_t(SIG_DFL))
    p.log("signal " + std::to_string(sig) + " has a handler, but delivery is not supported yet: terminating");
  p.exit_status = 128 + sig;
  return 0;
}

}  // namespace

KVMS_SYSCALL(rt_sigaction) {
  const int sig = int(a.a[0]);
  const uint64_t act = a.a[1], old = a.a[2], size = a.a[3];
  if (size != sizeof(uint64_t)) return -EINVAL;
  if (sig < 1 || sig > kMaxSignal) return -EINVAL;
  KernelSigaction next{};
  if (act) {
    if (sig == SIGKILL || sig == SIGSTOP) return -EINVAL;
    if (!p.mm().read(act, next)) return -EFAULT;
    next.mask &= ~kUnblockable;
  }
  if (old && !p.mm().write(old, p.sigactions[sig])) return -EFAULT;
  if (act) p.sigactions[sig] = next;
  return 0;
}

KVMS_SYSCALL(rt_sigprocmask) {
  const int how = int(a.a[0]);
  const uint64_t set = a.a[1], old = a.a[2], size = a.a[3];
  if (size != sizeof(uint64_t)) return -EINVAL;
  uint64_t mask = 0;
  if (set && !p.mm().read(set, mask)) return -EFAULT;
  if (old && !p.mm().write(old, p.thread().sigmask)) return -EFAULT;
  if (!set) return 0;
  switch (how) {
    case SIG_BLOCK: p.thread().sigmask |= mask; break;
    case SIG_UNBLOCK: p.thread().sigmask &= ~mask; break;
    case SIG_SETMASK: p.thread().sigmask = mask; break;
    default: return -EINVAL;
  }
  p.thread().sigmask &= ~kUnblockable;
  return 0;
}

KVMS_SYSCALL(rt_sigpending) {
  if (a.a[1] > sizeof(uint64_t)) return -EINVAL;
  const uint64_t none = 0;
  return p.mm().copy_to_user(a.a[0], &none, a.a[1]) ? 0 : -EFAULT;
}

KVMS_SYSCALL(sigaltstack) {
  struct { uint64_t sp; int32_t flags; int32_t pad; uint64_t size; } next{}, current{p.thread().altstack_sp, p.thread().altstack_flags, 0, p.thread().altstack_size};
  if (a.a[0]) {
    if (!p.mm().read(a.a[0], next)) return -EFAULT;
    if (next.flags & ~(SS_DISABLE | kSsAutodisarm)) return -EINVAL;
    if (!(next.flags & SS_DISABLE) && next.size < uint64_t(MINSIGSTKSZ)) return -ENOMEM;
  }
  if (a.a[1] && !p.mm().write(a.a[1], current)) return -EFAULT;
  if (a.a[0]) {
    p.thread().altstack_sp = next.sp;
    p.thread().altstack_size = next.size;
    p.thread().altstack_flags = next.flags;
  }
  return 0;
}

KVMS_SYSCALL(kill) {
  const int64_t pid = int64_t(a.a[0]);
  const int sig = int(a.a[1]);
  if (sig < 0 || sig > kMaxSignal) return -EINVAL;
  if (pid == p.pid || pid == 0 || pid == -1 || pid == -int64_t(p.pid)) return raise_signal(p, sig);
  if (!p.table) return -ESRCH;
  return p.table->kill(int(pid > 0 ? pid : -pid), sig);  // another of the guest's processes
}

KVMS_SYSCALL(tgkill) {
  if (int64_t(a.a[0]) != p.pid || int64_t(a.a[1]) != p.thread().tid) return -ESRCH;
  return raise_signal(p, int(a.a[2]));
}

KVMS_SYSCALL(tkill) {
  if (int64_t(a.a[0]) != p.thread().tid) return -ESRCH;
  return raise_signal(p, int(a.a[1]));
}

}  // namespace kvms::linux

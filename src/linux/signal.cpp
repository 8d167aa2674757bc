// Signals: dispositions, masks, the alternate stack, sending to the guest's own threads, and the
// x86-64 signal frame that delivery pushes and rt_sigreturn pops (the Guest decides when to deliver:
// on the way back from a syscall, after a kick, or at a fault).
#include "linux/signal.hpp"

#include <signal.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <chrono>

#include "kvm/vm.hpp"
#include "linux/deadline.hpp"
#include "linux/process_table.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr int kMaxSignal = 64;
constexpr int kFirstRealtime = 32;  // the kernel's SIGRTMIN (the C library keeps a few for itself)
constexpr int kSsAutodisarm = 1 << 31;
constexpr uint64_t kUnblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));
constexpr uint64_t kSaRestorer = 0x04000000;
constexpr uint64_t kRedZone = 128;
constexpr uint64_t kMinSigStackSize = 2048;  // the kernel's MINSIGSTKSZ (the C library's may be bigger)
constexpr uint64_t kXsaveBytes = 4096;
constexpr uint64_t kUserAddressEnd = 1ull << 47;  // canonical user addresses are below
// rflags bits a signal frame may change (Linux's FIX_EFLAGS): AC OF DF TF SF ZF AF PF CF RF.
constexpr uint64_t kUserFlags = 0x40000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x10000;

uint64_t bit(int sig) { return 1ull << (sig - 1); }

bool ignored_by_default(int sig) {
  return sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT;
}

// Linux's struct sigcontext, ucontext and rt_sigframe for x86-64.
struct SigContext {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
  uint16_t cs, gs, fs, ss;
  uint64_t err, trapno, oldmask, cr2, fpstate;
  uint64_t reserved[8];
};
struct UContext {
  uint64_t flags, link;
  uint64_t ss_sp;
  int32_t ss_flags, pad;
  uint64_t ss_size;
  SigContext mcontext;
  uint64_t sigmask;
};
struct RtSigframe {
  uint64_t pretcode;
  UContext uc;
  siginfo_t info;
};
static_assert(sizeof(SigContext) == 256 && sizeof(siginfo_t) == 128);

// The MXCSR bits this CPU implements (FXSAVE's MXCSR_MASK; 0 means the architectural default).
uint32_t mxcsr_feature_mask() {
  static const uint32_t mask = [] {
    alignas(16) uint8_t area[512] = {};
    __asm__ volatile("fxsave %0" : "=m"(area));
    uint32_t m;
    std::memcpy(&m, area + 28, sizeof m);
    return m ? m : 0xffbfu;
  }();
  return mask;
}

bool on_altstack(const ThreadContext& t, uint64_t sp) {
  return t.altstack_size && sp > t.altstack_sp && sp - t.altstack_sp <= t.altstack_size;
}

}  // namespace

uint64_t pending_in_process(const Process& p) {
  uint64_t n = 0;
  for (const auto& [tid, t] : p.threads)
    for (const auto& [sig, queue] : t.pending_queue) n += queue.size();
  return n;
}

bool is_stop_signal(int sig) { return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU; }

int64_t queue_signal(Process& p, ThreadContext& t, const siginfo_t& info) {
  const int sig = info.si_signo;
  if (sig == 0) return 0;
  if (sig < 1 || sig > kMaxSignal) return -EINVAL;
  // Job control acts when the signal is generated, whatever its disposition (Linux's
  // prepare_signal): SIGCONT drops pending stop signals and ends a stop; a stop signal drops a
  // pending SIGCONT.
  if (sig == SIGCONT) {
    for (int stop : {SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU}) discard_pending(p, stop);
    if (p.lock.group_stop.exchange(0)) p.lock.continued = true;
    p.lock.changed.notify_all();
  } else if (is_stop_signal(sig)) {
    discard_pending(p, SIGCONT);
  }
  // A child's stop or continue notice is not sent to a parent that asked not to have it.
  if (sig == SIGCHLD && (info.si_code == CLD_STOPPED || info.si_code == CLD_CONTINUED) &&
      (p.sigactions[sig].flags & SA_NOCLDSTOP))
    return 0;
  // An ignored signal is dropped, unless the thread blocks it: then it stays pending (sigwait and
  // signalfd take blocked signals, and the disposition may change before it is unblocked).
  const KernelSigaction& act = p.sigactions[sig];
  const bool blocked = t.sigmask & bit(sig);
  if (!blocked && act.handler == uint64_t(SIG_IGN)) return 0;
  if (!blocked && act.handler == uint64_t(SIG_DFL) && ignored_by_default(sig)) return 0;
  auto& queue = t.pending_queue[sig];
  if (sig < kFirstRealtime) {
    if (!queue.empty()) return 0;  // a standard signal is pending once, whatever is sent meanwhile
  } else if (pending_in_process(p) >= p.limits().pending_signals) {
    p.log_cap("--max-pending-signals", p.limits().pending_signals, "signal " + std::to_string(sig) + ": EAGAIN");
    return -EAGAIN;  // like Linux past RLIMIT_SIGPENDING
  }
  queue.push_back(PendingSignal{info});
  t.pending_signals |= bit(sig);
  update_signalfds(p);
  if (&t != &p.thread() && t.vcpu) t.vcpu->kick();  // delivered at its next exit
  p.lock.changed.notify_all();  // a sigtimedwait may be waiting for it
  return 0;
}

int64_t send_signal_to_thread(Process& p, ThreadContext& t, int sig, int code, int sender_pid) {
  siginfo_t info{};
  info.si_signo = sig;
  info.si_code = code;
  info.si_pid = sender_pid;
  info.si_uid = p.uid;
  return queue_signal(p, t, info);
}

bool post_signal_locked(Process& p, const siginfo_t& info, int tid) {
  const int sig = info.si_signo;
  ThreadContext* target = nullptr;
  if (tid) {  // SIGEV_THREAD_ID: that thread while it lives, else the process
    auto it = p.threads.find(tid);
    if (it != p.threads.end()) target = &it->second;
  }
  if (!target) {
    target = &p.main_thread();
    if (target->sigmask & bit(sig))
      for (auto& [id, t] : p.threads)
        if (!(t.sigmask & bit(sig))) {
          target = &t;
          break;
        }
  }
  const auto pending = [&] {
    auto it = target->pending_queue.find(sig);
    return it == target->pending_queue.end() ? size_t(0) : it->second.size();
  };
  const size_t before = pending();
  if (queue_signal(p, *target, info) != 0) return false;
  if (target->vcpu) target->vcpu->kick();
  return pending() > before;
}

std::optional<siginfo_t> dequeue_signal(Process& p, ThreadContext& t, int sig) {
  auto it = t.pending_queue.find(sig);
  if (it == t.pending_queue.end() || it->second.empty()) {
    t.pending_signals &= ~bit(sig);
    return std::nullopt;
  }
  siginfo_t info = it->second.front().info;
  it->second.pop_front();
  timer_signal_taken(p, info);
  if (it->second.empty()) {
    t.pending_queue.erase(it);
    t.pending_signals &= ~bit(sig);
  }
  update_signalfds(p);
  return info;
}

void discard_pending(Process& p, int sig) {
  for (auto& [tid, t] : p.threads) {
    if (auto it = t.pending_queue.find(sig); it != t.pending_queue.end())
      for (PendingSignal& pending : it->second) timer_signal_taken(p, pending.info);
    t.pending_queue.erase(sig);
    t.pending_signals &= ~bit(sig);
  }
  update_signalfds(p);
}

int take_default_stop(Process& p, ThreadContext& t) {
  const uint64_t ready = t.pending_signals & ~(t.sigmask & ~kUnblockable);
  if (!ready) return 0;
  const int sig = __builtin_ctzll(ready) + 1;
  if (!is_stop_signal(sig) || p.sigactions[sig].handler != uint64_t(SIG_DFL)) return 0;
  dequeue_signal(p, t, sig);
  p.lock.group_stop = sig;
  return sig;
}

std::optional<SignalToDeliver> take_signal(Process& p, ThreadContext& t) {
  if (take_default_stop(p, t)) return take_signal(p, t);  // the Guest stops the process (group_stop)
  const uint64_t ready = t.pending_signals & ~(t.sigmask & ~kUnblockable);
  if (!ready) return std::nullopt;
  const int sig = __builtin_ctzll(ready) + 1;
  SignalToDeliver d;
  d.sig = sig;
  d.act = p.sigactions[sig];
  std::memset(&d.info, 0, sizeof d.info);
  d.info.si_signo = sig;
  if (auto info = dequeue_signal(p, t, sig)) d.info = *info;
  if (d.act.handler == uint64_t(SIG_IGN)) return take_signal(p, t);
  if (d.act.handler == uint64_t(SIG_DFL)) {
    if (ignored_by_default(sig)) return take_signal(p, t);
    p.exit_status = 128 + sig;  // the default action of everything else here: terminate
  }
  return d;
}

uint64_t signal_stack_top(const ThreadContext& t, const SignalToDeliver& d, uint64_t rsp) {
  const bool use_altstack = (d.act.flags & SA_ONSTACK) && !(t.altstack_flags & SS_DISABLE) && t.altstack_size &&
                            !on_altstack(t, rsp);
  return use_altstack ? t.altstack_sp + t.altstack_size : rsp - kRedZone;
}

uint64_t push_signal_frame(Process& p, ThreadContext& t, const SignalToDeliver& d, const kvm_regs& user,
                           const std::array<uint32_t, 1024>& xsave, const FaultDetail& fault) {
  if (!(d.act.flags & kSaRestorer)) return 0;  // x86-64 has no kernel trampoline: the libc provides it
  const uint64_t sp = signal_stack_top(t, d, user.rsp);
  const bool use_altstack = sp != user.rsp - kRedZone;
  const uint64_t fpstate = (sp - kXsaveBytes) & ~uint64_t(63);
  uint64_t frame = fpstate - sizeof(RtSigframe);
  frame = ((frame + 8) & ~uint64_t(15)) - 8;  // as after a call: (rsp + 8) % 16 == 0

  RtSigframe f{};
  f.pretcode = d.act.restorer;
  f.uc.flags = 0x1 | 0x2 | 0x4;  // UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
  f.uc.ss_sp = t.altstack_sp;
  f.uc.ss_flags = (t.altstack_flags & SS_DISABLE) ? SS_DISABLE : on_altstack(t, user.rsp) ? SS_ONSTACK : 0;
  f.uc.ss_size = t.altstack_size;
  SigContext& c = f.uc.mcontext;
  c.r8 = user.r8; c.r9 = user.r9; c.r10 = user.r10; c.r11 = user.r11; c.r12 = user.r12; c.r13 = user.r13;
  c.r14 = user.r14; c.r15 = user.r15; c.rdi = user.rdi; c.rsi = user.rsi; c.rbp = user.rbp; c.rbx = user.rbx;
  c.rdx = user.rdx; c.rax = user.rax; c.rcx = user.rcx; c.rsp = user.rsp; c.rip = user.rip; c.eflags = user.rflags;
  c.cs = 0x2b;
  c.ss = 0x23;
  c.err = fault.error;
  c.trapno = fault.trapno;
  c.cr2 = fault.address;
  const uint64_t restored_mask = t.saved_sigmask.value_or(t.sigmask);  // what sigreturn puts back
  c.oldmask = restored_mask;
  c.fpstate = fpstate;
  f.uc.sigmask = restored_mask;
  f.info = d.info;
  if (fault.trapno >= 0 && d.info.si_code > 0) f.info.si_addr = reinterpret_cast<void*>(fault.address);
  if (!p.mm().copy_to_user(fpstate, xsave.data(), kXsaveBytes) || !p.mm().copy_to_user(frame, &f, sizeof f)) return 0;

  t.sigmask |= d.act.mask | ((d.act.flags & SA_NODEFER) ? 0 : bit(d.sig));
  t.sigmask &= ~kUnblockable;
  t.saved_sigmask.reset();
  if (d.act.flags & SA_RESETHAND) p.sigactions[d.sig].handler = uint64_t(SIG_DFL);  // (flags stay, as on Linux)
  if (use_altstack && (t.altstack_flags & kSsAutodisarm)) t.altstack_flags = SS_DISABLE;
  return frame;
}

bool sanitize_xsave_area(std::array<uint32_t, 1024>& area, uint64_t xfeatures) {
  constexpr size_t kMxcsr = 24 / 4, kHeader = 512 / 4, kHeaderWords = 64 / 4;
  const uint64_t xstate_bv = area[kHeader] | uint64_t(area[kHeader + 1]) << 32;
  if (xstate_bv & ~xfeatures) return false;  // a feature XCR0 does not enable, or a reserved bit
  // XCOMP_BV and the 8 bytes after it: XRSTOR's standard form faults unless they are zero (a
  // compacted area, which Linux would also take, is not one KVM can load).
  for (size_t i = 2; i < 6; ++i)
    if (area[kHeader + i]) return false;
  // The rest of the header XRSTOR ignores (Linux's sigreturn too); KVM refuses it unless zero.
  for (size_t i = 6; i < kHeaderWords; ++i) area[kHeader + i] = 0;
  constexpr uint64_t kFpSseYmm = 0x7;        // the states that load MXCSR
  if ((xstate_bv & kFpSseYmm) && (area[kMxcsr] & ~mxcsr_feature_mask())) return false;
  return true;
}

bool pop_signal_frame(Process& p, ThreadContext& t, uint64_t rsp, kvm_regs& user, std::array<uint32_t, 1024>& xsave,
                      uint64_t xfeatures) {
  UContext uc{};
  if (!p.mm().copy_from_user(&uc, rsp, sizeof uc)) return false;
  const SigContext& c = uc.mcontext;
  if (c.rip >= kUserAddressEnd) return false;  // iretq would fault in the entry code
  if (c.fpstate) {
    std::array<uint32_t, 1024> area;
    if (!p.mm().copy_from_user(area.data(), c.fpstate, kXsaveBytes)) return false;
    if (!sanitize_xsave_area(area, xfeatures)) return false;
    xsave = area;
  }
  user.r8 = c.r8; user.r9 = c.r9; user.r10 = c.r10; user.r11 = c.r11; user.r12 = c.r12; user.r13 = c.r13;
  user.r14 = c.r14; user.r15 = c.r15; user.rdi = c.rdi; user.rsi = c.rsi; user.rbp = c.rbp; user.rbx = c.rbx;
  user.rdx = c.rdx; user.rax = c.rax; user.rcx = c.rcx; user.rsp = c.rsp; user.rip = c.rip;
  user.rflags = (user.rflags & ~kUserFlags) | (c.eflags & kUserFlags) | 0x202;
  t.sigmask = uc.sigmask & ~kUnblockable;
  return true;
}

uint64_t sigframe_ucontext(uint64_t frame) { return frame + offsetof(RtSigframe, uc); }
uint64_t sigframe_siginfo(uint64_t frame) { return frame + offsetof(RtSigframe, info); }

int fault_signal_code(int sig, int vector, uint64_t error) {
  switch (sig) {
    case SIGSEGV: return (vector == 14 && (error & 1)) ? SEGV_ACCERR : SEGV_MAPERR;
    case SIGBUS: return BUS_ADRERR;
    case SIGFPE: return vector == 0 ? FPE_INTDIV : FPE_FLTINV;
    case SIGILL: return ILL_ILLOPN;
    case SIGTRAP: return TRAP_BRKPT;
    default: return SI_KERNEL;
  }
}

void publish_child_disposition(Process& p) {
  if (!p.view) return;
  const KernelSigaction& chld = p.sigactions[SIGCHLD];
  p.view->reaps_children = chld.handler == uint64_t(SIG_IGN) || (chld.flags & SA_NOCLDWAIT);
}

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
  if (act) {
    p.sigactions[sig] = next;
    if (next.handler == uint64_t(SIG_IGN) || (next.handler == uint64_t(SIG_DFL) && ignored_by_default(sig)))
      discard_pending(p, sig);  // as POSIX says
    if (sig == SIGCHLD) publish_child_disposition(p);
  }
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
  const uint64_t pending = p.thread().pending_signals;
  return p.mm().copy_to_user(a.a[0], &pending, a.a[1]) ? 0 : -EFAULT;
}

// rt_sigreturn itself is handled by the Guest (it replaces every register); this entry is only
// reached without one (tests).
KVMS_SYSCALL(rt_sigreturn) { return -ENOSYS; }

KVMS_SYSCALL(sigaltstack) {
  ThreadContext& t = p.thread();
  struct { uint64_t sp; int32_t flags; int32_t pad; uint64_t size; } next{}, current{t.altstack_sp, t.altstack_flags, 0, t.altstack_size};
  if (t.altstack_size && !(t.altstack_flags & SS_DISABLE) && on_altstack(t, p.vcpu_rsp())) current.flags = SS_ONSTACK;
  if (a.a[0]) {
    if (!p.mm().read(a.a[0], next)) return -EFAULT;
    // Linux's do_sigaltstack: no change while on the stack, whatever is asked; then the mode is
    // 0, SS_DISABLE or SS_ONSTACK (an old way to say 0: what a get returned can be set again).
    if (current.flags == SS_ONSTACK) return -EPERM;
    const int mode = next.flags & ~kSsAutodisarm;
    if (mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK) return -EINVAL;
    if (mode == SS_ONSTACK) next.flags &= ~SS_ONSTACK;
    if (!(next.flags & SS_DISABLE) && next.size < kMinSigStackSize) return -ENOMEM;
  }
  if (a.a[1] && !p.mm().write(a.a[1], current)) return -EFAULT;
  if (a.a[0]) {
    t.altstack_sp = (next.flags & SS_DISABLE) ? 0 : next.sp;
    t.altstack_size = (next.flags & SS_DISABLE) ? 0 : next.size;
    t.altstack_flags = next.flags;
  }
  return 0;
}

namespace {

// sigqueue(3)'s siginfo from the guest. Only to itself may a process claim a kernel si_code
// (>= 0) or SI_TKILL: to others that is EPERM, as on Linux.
int64_t read_queued_info(Process& p, uint64_t uinfo, int sig, bool to_self, siginfo_t& info) {
  if (!p.mm().read(uinfo, info)) return -EFAULT;
  if (!to_self && (info.si_code >= 0 || info.si_code == SI_TKILL)) return -EPERM;
  info.si_signo = sig;
  return 0;
}

// What kill(2) sends: SI_USER from the caller.
siginfo_t user_signal(const Process& p, int sig) {
  siginfo_t info{};
  info.si_signo = sig;
  info.si_code = SI_USER;
  info.si_pid = p.pid;
  info.si_uid = p.uid;
  return info;
}

// A process-directed signal goes to a thread that does not block it, the caller first.
ThreadContext& receiver(Process& p, int sig) {
  ThreadContext* target = &p.thread();
  if (sig && (target->sigmask & bit(sig)))
    for (auto& [tid, t] : p.threads)
      if (!(t.sigmask & bit(sig))) return t;
  return *target;
}

}  // namespace

KVMS_SYSCALL(kill) {
  const int64_t pid = int32_t(a.a[0]);  // pid_t: the register's low 32 bits, as Linux reads it
  const int sig = int(a.a[1]);
  if (sig < 0 || sig > kMaxSignal) return -EINVAL;
  if (pid == INT32_MIN) return -ESRCH;  // -INT_MIN is no group
  // Any of our threads' ids names this process too (Linux signals the thread group of that task).
  if (p.is_self(pid) || pid == -1 || (pid > 0 && p.threads.count(int(pid))))
    return send_signal_to_thread(p, receiver(p, sig), sig, SI_USER, p.pid);
  if (pid <= 0) {  // a process group: 0 is the caller's
    if (!p.table) return (pid == 0 || p.is_self(-pid)) ? send_signal_to_thread(p, receiver(p, sig), sig, SI_USER, p.pid) : -ESRCH;
    const int pgid = pid == 0 ? p.table->pgid_of(p.pid) : int(-pid);
    bool self = false;
    const int rc = p.table->kill_group(pgid, user_signal(p, sig), p.pid, self);
    if (rc != 0) return rc;
    return self ? send_signal_to_thread(p, receiver(p, sig), sig, SI_USER, p.pid) : 0;
  }
  if (!p.table) return -ESRCH;
  return p.table->kill(int(pid), user_signal(p, sig));  // another of the guest's processes
}

KVMS_SYSCALL(rt_sigqueueinfo) {
  const int64_t pid = int64_t(a.a[0]);
  const int sig = int(a.a[1]);
  if (sig < 0 || sig > kMaxSignal) return -EINVAL;
  siginfo_t info{};
  if (int64_t rc = read_queued_info(p, a.a[2], sig, p.is_self(pid), info)) return rc;
  if (p.is_self(pid)) return queue_signal(p, receiver(p, sig), info);
  if (pid <= 0 || !p.table) return -ESRCH;
  return p.table->kill(int(pid), info);  // another guest process, with its si_value
}

KVMS_SYSCALL(rt_tgsigqueueinfo) {
  const int sig = int(a.a[2]);
  if (sig < 0 || sig > kMaxSignal) return -EINVAL;
  if (!p.is_self(int64_t(a.a[0]))) return -ESRCH;
  auto t = p.threads.find(int(a.a[1]));
  if (t == p.threads.end()) return -ESRCH;
  siginfo_t info{};
  if (int64_t rc = read_queued_info(p, a.a[3], sig, t->first == p.thread().tid, info)) return rc;
  return queue_signal(p, t->second, info);
}

// Waits for one of the signals in the set to be pending for the calling thread and takes it
// without running its handler. A kick (stop, kill) ends the wait with EINTR, which the Guest turns
// into a restart; a signal outside the set that has a handler interrupts it for good (EINTR).
KVMS_SYSCALL(rt_sigtimedwait) {
  const uint64_t uset = a.a[0], uinfo = a.a[1], utimeout = a.a[2], size = a.a[3];
  if (size != sizeof(uint64_t)) return -EINVAL;
  uint64_t set = 0;
  if (!p.mm().read(uset, set)) return -EFAULT;
  set &= ~kUnblockable;
  Deadline deadline = Deadline::infinite();
  if (utimeout) {
    timespec ts{};
    if (!p.mm().read(utimeout, ts)) return -EFAULT;
    if (ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000) return -EINVAL;
    deadline = kept_across_restart(p, Deadline::after(ts.tv_sec, ts.tv_nsec));
  }
  Process::Asleep asleep(p);
  Process::HandlerWait wait(p);
  std::unique_lock<std::mutex>& lk = wait.lock();
  for (;;) {
    if (p.host) p.host->take_incoming_signals(p);  // another process's signal may be the one awaited
    ThreadContext& t = p.thread();
    if (const uint64_t ready = t.pending_signals & set) {
      const int sig = __builtin_ctzll(ready) + 1;
      siginfo_t info{};
      info.si_signo = sig;
      if (auto queued = dequeue_signal(p, t, sig)) info = *queued;
      if (uinfo && !p.mm().write(uinfo, info)) return -EFAULT;
      return sig;
    }
    if (t.pending_signals & ~t.sigmask) return -EINTR;  // one to deliver instead
    if (p.lock.stop || (t.vcpu && t.vcpu->run_area()->immediate_exit)) return -EINTR;
    if (deadline.expired()) return -EAGAIN;
    auto step = std::chrono::milliseconds(100);
    if (const timespec left = deadline.remaining(); deadline.timed() && left.tv_sec == 0)
      step = std::min(step, std::chrono::milliseconds(left.tv_nsec / 1000000 + 1));
    p.lock.changed.wait_for(lk, step);
  }
}

// Replaces the thread's mask until a signal is delivered: -EINTR, with the handler's frame saving
// the caller's mask (ThreadContext::saved_sigmask). A kick (stop, kill) restarts the call, which
// then keeps the mask it saved the first time.
KVMS_SYSCALL(rt_sigsuspend) {
  if (a.a[1] != sizeof(uint64_t)) return -EINVAL;
  uint64_t mask = 0;
  if (!p.mm().read(a.a[0], mask)) return -EFAULT;
  ThreadContext& t = p.thread();
  if (!t.saved_sigmask) t.saved_sigmask = t.sigmask;
  t.sigmask = mask & ~kUnblockable;
  return wait_for_signal(p);
}

int64_t set_wait_sigmask(Process& p, uint64_t mask_addr, uint64_t size) {
  if (!mask_addr) return 0;
  if (size != sizeof(uint64_t)) return -EINVAL;
  uint64_t mask = 0;
  if (!p.mm().read(mask_addr, mask)) return -EFAULT;
  ThreadContext& t = p.thread();
  if (!t.saved_sigmask) t.saved_sigmask = t.sigmask;  // a restarted call keeps the first one
  t.sigmask = mask & ~kUnblockable;
  if (p.host) p.host->take_incoming_signals(p);
  return (t.pending_signals & ~t.sigmask) ? -EINTR : 0;
}

int64_t wait_for_signal(Process& p) {
  Process::Asleep asleep(p);
  Process::HandlerWait wait(p);
  std::unique_lock<std::mutex>& lk = wait.lock();
  for (;;) {
    if (p.host) p.host->take_incoming_signals(p);
    ThreadContext& t = p.thread();
    if (t.pending_signals & ~t.sigmask) return -EINTR;
    if (p.lock.stop || (t.vcpu && t.vcpu->run_area()->immediate_exit)) return -EINTR;
    p.lock.changed.wait_for(lk, std::chrono::milliseconds(100));
  }
}

namespace {
// tkill/tgkill naming another guest process's main thread: sent as kill(2) to that process, with
// the thread-directed si_code.
int64_t other_main_thread(Process& p, int tid, int sig) {
  if (sig < 0 || sig > kMaxSignal) return -EINVAL;
  siginfo_t info = user_signal(p, sig);
  info.si_code = SI_TKILL;
  return p.table->kill(tid, info);
}
}  // namespace

KVMS_SYSCALL(tgkill) {
  if (int32_t(a.a[0]) <= 0 || int32_t(a.a[1]) <= 0) return -EINVAL;
  if (!p.is_self(int64_t(a.a[0]))) {
    // Another guest process's main thread (its tid is its pid); its other threads are not
    // reachable from here (the table knows processes, not their threads): ESRCH for those.
    if (a.a[0] != a.a[1] || !p.table) return -ESRCH;
    return other_main_thread(p, int(a.a[1]), int(a.a[2]));
  }
  auto t = p.threads.find(int(a.a[1]));
  if (t == p.threads.end()) return -ESRCH;
  return send_signal_to_thread(p, t->second, int(a.a[2]), SI_TKILL, p.pid);
}

KVMS_SYSCALL(tkill) {
  if (int32_t(a.a[0]) <= 0) return -EINVAL;
  auto t = p.threads.find(int(a.a[0]));
  if (t == p.threads.end()) return p.table ? other_main_thread(p, int(a.a[0]), int(a.a[1])) : -ESRCH;
  return send_signal_to_thread(p, t->second, int(a.a[1]), SI_TKILL, p.pid);
}

}  // namespace kvms::linux

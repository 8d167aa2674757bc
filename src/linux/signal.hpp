#pragma once
// Signal delivery pieces the Guest puts together (see signal.cpp): picking the next signal for a
// thread, and the x86-64 signal frame on the guest stack.
#include <linux/kvm.h>
#include <signal.h>

#include <array>
#include <cstdint>
#include <optional>

#include "linux/process.hpp"

namespace kvms::linux {

struct SignalToDeliver {
  int sig = 0;
  siginfo_t info{};
  KernelSigaction act;
};

// What a fault adds to the frame (trapno -1: not a fault).
struct FaultDetail {
  int64_t trapno = -1;
  uint64_t error = 0, address = 0;
};

// Queues sig for thread t (kicks it when it is another thread). Ignored signals are dropped, a
// standard signal already pending is merged, a real-time one past --max-pending-signals is -EAGAIN.
int64_t send_signal_to_thread(Process& p, ThreadContext& t, int sig, int code, int sender_pid);
// The same with a whole siginfo (sigqueue: si_value and the sender's si_code).
int64_t queue_signal(Process& p, ThreadContext& t, const siginfo_t& info);
// From a host thread that is none of the process's (a timer): queues info for thread `tid` (0: the
// thread that would take a process-directed signal) and kicks that thread's vCPU so that it is
// delivered at once. Whether a new instance was queued (not merged, ignored or refused). The
// caller holds p.lock.mutex.
bool post_signal_locked(Process& p, const siginfo_t& info, int tid);
// signalfd.cpp: after a signal is queued or taken, every signalfd of p is readable exactly while
// one of its signals is pending; a signalfd's read (count bytes at buf); a worker's own copy.
void update_signalfds(Process& p);
// Tells the process table (p.view) whether p's SIGCHLD disposition reaps its children itself
// (SIG_IGN or SA_NOCLDWAIT: no zombies). Called wherever its sigactions change or its view is new.
void publish_child_disposition(Process& p);
int64_t signalfd_read(Process& p, OpenFile& f, uint64_t buf, uint64_t count);
std::shared_ptr<OpenFile> clone_signalfd(const OpenFile& signalfd);
// pause and rt_sigsuspend: until a signal is pending for the calling thread that its mask lets
// through (-EINTR: its handler runs as the call returns), or a kick (-EINTR: restarted).
int64_t wait_for_signal(Process& p);
// The sigmask argument of ppoll/pselect6/epoll_pwait/epoll_pwait2 (mask_addr 0: none): the calling
// thread's mask while it waits. The caller's mask comes back as the call returns, or through the
// frame of the handler the new mask lets run (as for rt_sigsuspend). -EINTR when a signal it
// unblocks is pending already (the wait does not start); -EINVAL/-EFAULT as Linux.
int64_t set_wait_sigmask(Process& p, uint64_t mask_addr, uint64_t size);
// Takes the oldest pending instance of sig off t (nullopt when none is).
std::optional<siginfo_t> dequeue_signal(Process& p, ThreadContext& t, int sig);
// Drops every pending instance of sig in the process (its disposition became "ignore").
void discard_pending(Process& p, int sig);
// A stop signal (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU).
bool is_stop_signal(int sig);
// The lowest unblocked pending signal of t when it is a stop signal with the default action:
// taken off t and the process's group stop begun (p.lock.group_stop); 0 otherwise.
int take_default_stop(Process& p, ThreadContext& t);
// The next unblocked pending signal of t with a handler to run. A signal whose default action ends
// the process sets p.exit_status (the caller checks it) and is returned too.
std::optional<SignalToDeliver> take_signal(Process& p, ThreadContext& t);
// Where a signal's frame goes: below the interrupted rsp's red zone, or at the top of the
// alternate signal stack (SA_ONSTACK, when not already on it).
uint64_t signal_stack_top(const ThreadContext& t, const SignalToDeliver& d, uint64_t rsp);
// Pushes the frame for d below user.rsp (or on the alternate stack) and updates t's mask; the
// frame's address (the handler's rsp), or 0 when the stack is not writable or there is no restorer.
uint64_t push_signal_frame(Process& p, ThreadContext& t, const SignalToDeliver& d, const kvm_regs& user,
                           const std::array<uint32_t, 1024>& xsave, const FaultDetail& fault);
// rt_sigreturn: reads the frame whose ucontext is at rsp back into user/xsave and t's mask. False
// (the guest gets SIGSEGV, as on Linux) when the frame is not readable or its XSAVE area is one
// the CPU would refuse (sanitize_xsave_area); only the flags a signal frame may change are taken from
// it (never IOPL, NT, VM...), and never its segment selectors: the guest returns to ring 3.
bool pop_signal_frame(Process& p, ThreadContext& t, uint64_t rsp, kvm_regs& user, std::array<uint32_t, 1024>& xsave,
                      uint64_t xfeatures);
// Whether an XSAVE area from the guest is one the CPU would restore (Linux's sigreturn takes what
// XRSTOR takes): only features of `xfeatures` (XCR0) in XSTATE_BV, the standard format (XCOMP_BV
// and the next 8 bytes zero), an MXCSR without bits the CPU lacks. The header bytes XRSTOR ignores
// are cleared, as KVM_SET_XSAVE wants them.
bool sanitize_xsave_area(std::array<uint32_t, 1024>& area, uint64_t xfeatures);
// Where the handler's arguments point inside a frame pushed at `frame`.
uint64_t sigframe_ucontext(uint64_t frame);
uint64_t sigframe_siginfo(uint64_t frame);
// si_code for a fault turned into sig.
int fault_signal_code(int sig, int vector, uint64_t error);

}  // namespace kvms::linux

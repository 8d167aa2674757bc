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
// Takes the oldest pending instance of sig off t (nullopt when none is).
std::optional<siginfo_t> dequeue_signal(ThreadContext& t, int sig);
// Drops every pending instance of sig in the process (its disposition became "ignore").
void discard_pending(Process& p, int sig);
// The next unblocked pending signal of t with a handler to run. A signal whose default action ends
// the process sets p.exit_status (the caller checks it) and is returned too.
std::optional<SignalToDeliver> take_signal(Process& p, ThreadContext& t);
// Pushes the frame for d below user.rsp (or on the alternate stack) and updates t's mask; the
// frame's address (the handler's rsp), or 0 when the stack is not writable or there is no restorer.
uint64_t push_signal_frame(Process& p, ThreadContext& t, const SignalToDeliver& d, const kvm_regs& user,
                           const std::array<uint32_t, 1024>& xsave, const FaultDetail& fault);
// rt_sigreturn: reads the frame whose ucontext is at rsp back into user/xsave and t's mask.
bool pop_signal_frame(Process& p, ThreadContext& t, uint64_t rsp, kvm_regs& user, std::array<uint32_t, 1024>& xsave);
// Where the handler's arguments point inside a frame pushed at `frame`.
uint64_t sigframe_ucontext(uint64_t frame);
uint64_t sigframe_siginfo(uint64_t frame);
// si_code for a fault turned into sig.
int fault_signal_code(int sig, int vector, uint64_t error);

}  // namespace kvms::linux

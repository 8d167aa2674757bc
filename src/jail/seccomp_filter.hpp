#pragma once
// seccomp on the host process: kvmserver's threads may make only the host system calls kvmserver
// needs (libseccomp builds the BPF programs).
//
// The filters are allow-lists. FilterRole::Process covers every thread (installed once the guest is
// loaded, with TSYNC so threads that exist get it; threads created later, which includes every guest
// thread and guest process, inherit it). Threads that need less stack a narrower filter of their own
// on top: the server's signal thread, the --metrics thread. The jail's outer processes, which only
// forward signals and wait, run under FilterRole::Supervisor alone.
//
// Arguments are restricted where it matters: ioctl only the KVM requests kvmserver issues
// (kvm::Kvm::ioctls_used()) and the few terminal/FIONREAD/timerfd ones the syscall emulation forwards;
// socket() only AF_UNIX/AF_INET/AF_INET6; clone only with CLONE_THREAD (no host fork; clone3, whose
// flags a filter cannot read, answers ENOSYS so glibc falls back to clone); mmap/mprotect never
// PROT_EXEC; fcntl and prctl only the commands used; prlimit64 only to read; tgkill only within
// kvmserver. execve, ptrace, mount, unshare, bpf, keyctl, ... are simply not on any list.
//
// A call outside the list stops kvmserver with one line on stderr naming it, e.g.
//   kvmserver: seccomp: denied host system call ptrace (101) in thread "worker 2": stopping
// and exit status 125 (see seccomp_filter.cpp for why SECCOMP_RET_TRAP rather than KILL_PROCESS).
#include <sys/types.h>

#include <string>
#include <vector>

namespace kvms::jail {

enum class FilterRole {
  Process,        // every thread: the emulation, KVM, workers, guest threads, warm-up
  SignalThread,   // server mode's main thread once workers run: sigwait, stop and join workers, clean up
  MetricsThread,  // --metrics: one TCP listener answering with text
  Supervisor,     // the jail's outer processes: forward signals to one child and wait for it
};

struct FilterOptions {
  // KVMS_SECCOMP=log (a debugging aid): calls outside the list are allowed and logged by the kernel
  // (dmesg: "audit: type=1326 ... syscall=N") instead of stopping kvmserver; used to find what a new
  // feature needs.
  bool log_only = false;
  // KVMS_SECCOMP_DENY=NAME[,NAME...] (for tests only): these calls are taken off every list, so that
  // the tests can check what a denied call does to a running kvmserver.
  std::vector<std::string> denied;
  // Supervisor: the only process it may signal.
  pid_t child = 0;
};

// The options the environment asks for (KVMS_SECCOMP, KVMS_SECCOMP_DENY). Throws std::runtime_error
// for a value it does not understand.
FilterOptions filter_options_from_environment();

// Installs the filter of `role` (Process: on every thread of the process; the others on the calling
// thread only) and the SIGSYS handler that reports a denied call. Throws std::runtime_error with a
// one-line reason when libseccomp or the kernel refuses.
void install_filter(FilterRole role, const FilterOptions& options);

// The exit status after a denied call.
inline constexpr int kDeniedCallStatus = 125;

}  // namespace kvms::jail

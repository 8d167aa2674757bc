#pragma once
// A guest program in its own VM: loading it, and the vCPU loop that turns every VM exit into a
// syscall, an exception report, or a stop.
#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/vm.hpp"
#include "linux/process.hpp"
#include "loader/elf_loader.hpp"

namespace kvms::linux {

class PathPolicy;

struct GuestConfig {
  std::string program;             // path as given (searched in PATH when it has no '/')
  std::vector<std::string> argv;   // argv[0] included
  std::vector<std::string> envp;
  std::string cwd = "/";
  uint64_t address_space = 64ull << 30;  // guest-physical size of user memory
  ProcessConfig process;
  std::shared_ptr<const PathPolicy> policy;
};

// Why the run ended and with what shell-style status.
struct RunResult {
  // Paused: a ServerHooks asked to stop before a wait syscall, which stays pending (see run()).
  // Interrupted: kick() while no deadline had passed.
  enum Reason { Exited, Signaled, Faulted, TimedOut, Paused, Interrupted } reason = Exited;
  int status = 0;            // exit status as a shell reports it: code, 128+signal, 124 timeout
  std::string message;       // one line for stderr when the run did not end by exit
};

struct ExitCounters {
  uint64_t syscall = 0, exception = 0, interrupted = 0, other = 0;
  uint64_t total() const { return syscall + exception + interrupted + other; }
};

class Guest : private ProcessHost {
 public:
  // Loads the program; throws loader::LoadError (126/127) or std::runtime_error (KVM problems).
  static std::unique_ptr<Guest> create(const GuestConfig& config);

  // Runs until the program exits, faults, pauses, or deadline_ns (CLOCK_MONOTONIC, 0 = none) passes.
  // syscall_pending: the vCPU stands at a syscall that has not been handled yet (the state a pause
  // leaves, and what a worker restores): handle it first.
  // stop_on_kick: return Interrupted when kicked before the deadline instead of carrying on.
  RunResult run(uint64_t deadline_ns = 0, bool syscall_pending = false, bool stop_on_kick = false);

  // A copy-on-write child of this (paused) guest in a VM of its own, with dirty-page tracking on.
  // The caller gives it its own Process (see server/worker).
  std::unique_ptr<Guest> fork_paused(const kvm::VcpuState& state) const;
  kvm::AddressSpace& address_space() { return *mm_; }
  std::shared_ptr<kvm::AddressSpace> shared_address_space() { return mm_; }
  std::shared_ptr<kvm::GuestMemory> shared_memory() const { return memory_; }
  void set_process(std::unique_ptr<Process> p);

  Process& process() { return *process_; }
  kvm::Vcpu& vcpu() { return *vcpu_; }
  const ExitCounters& exits() const { return exits_; }
  kvm::GuestMemory& memory() { return *memory_; }
  // The resolved host path of the program.
  const std::string& program_path() const { return program_path_; }
  // Ends the program as if killed by `sig` (from another thread; the run returns Signaled).
  void kill(int sig);

 private:
  // A loaded program image, before it becomes a guest's current one (create, execve).
  struct Image {
    std::string path;
    std::shared_ptr<kvm::GuestMemory> memory;
    std::shared_ptr<kvm::AddressSpace> mm;
    loader::LoadedElf elf;
    uint64_t stack_top = 0, vdso = 0;
    uint64_t interp_base = 0, start = 0;  // AT_BASE; the first instruction (ld.so's entry when dynamic)
  };
  // The interpreter (PT_INTERP) is read through `policy`.
  static Image load_image(const std::string& host_path, uint64_t user_size, const PathPolicy& policy);
  // Makes `image` this guest's program with a fresh VM, initial stack and registers.
  void install(Image image, const std::vector<std::string>& argv, const std::vector<std::string>& envp,
               const std::string& execfn);

  int64_t fork(Process& p, uint64_t flags, uint64_t parent_tid, uint64_t child_tid) override;
  int64_t execve(Process& p, const std::string& guest_path, std::vector<std::string> argv,
                 std::vector<std::string> envp) override;
  std::shared_ptr<kvm::GuestMemory> snapshot_memory() const;

  Guest() = default;
  // Handles the syscall the vCPU stands at; a result when the run must end (exit, pause).
  std::optional<RunResult> complete_syscall(bool resumed);
  RunResult report_exception(int vector);
  void flush_tlb_before_resume();

  std::string program_path_;
  std::shared_ptr<kvm::GuestMemory> memory_;
  std::shared_ptr<kvm::AddressSpace> mm_;
  std::unique_ptr<kvm::Vm> vm_;
  std::unique_ptr<kvm::Vcpu> vcpu_;
  std::unique_ptr<Process> process_;
  ExitCounters exits_;
  uint64_t deadline_ns_ = 0;
  std::optional<Image> pending_exec_;  // set by execve, installed when the syscall returns
  struct PendingExec {
    std::vector<std::string> argv, envp;
    std::string execfn;
  } exec_args_;
  std::atomic<int> kill_signal_{0};
};

// Finds PROGRAM like execvp: as given when it contains '/', else the first executable in PATH.
std::string find_program(const std::string& program);

}  // namespace kvms::linux

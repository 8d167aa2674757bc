#pragma once
// A guest program in its own VM: loading it, and the vCPU loop that turns every VM exit into a
// syscall, an exception report, or a stop.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/vm.hpp"
#include "linux/process.hpp"
#include "linux/signal.hpp"
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

// One guest thread of a paused guest, as a fork or a reset needs it.
struct ThreadSnapshot {
  int tid = 0;
  kvm::VcpuState state;
  bool pending = false;  // stands at a syscall not handled yet (it runs first when resumed)
};

// Guest threads are vCPUs of the guest's VM, each on a host thread of its own (the main thread on the
// caller's), so threads run in parallel and a blocked or spinning thread never holds up another. The
// syscall handlers of one process are serialised by its lock (see Process::lock).
class Guest : private ProcessHost {
 public:
  // Loads the program; throws loader::LoadError (126/127) or std::runtime_error (KVM problems).
  static std::unique_ptr<Guest> create(const GuestConfig& config);

  // A template that is only memory and state (a snapshot's, src/snapshot/): no VM and no threads of
  // its own; workers are forked from it (fork_paused) with the threads the snapshot holds.
  static std::unique_ptr<Guest> from_parts(std::string program_path, std::shared_ptr<kvm::GuestMemory> memory,
                                           std::shared_ptr<kvm::AddressSpace> mm, std::unique_ptr<Process> process);

  // Runs until the program exits, faults, pauses, or deadline_ns (CLOCK_MONOTONIC, 0 = none) passes.
  // A run that resumes a pause goes on from each thread's own state: a thread that stands at a
  // syscall not handled yet (set by the pause, kept by save_threads/restore_threads and snapshots)
  // handles it first.
  // stop_on_kick: return Interrupted when kicked before the deadline instead of carrying on.
  // The guest's other threads run while the main thread runs here, and are stopped (parked) whenever
  // run returns.
  RunResult run(uint64_t deadline_ns = 0, bool stop_on_kick = false);
  ~Guest() override;

  // Every live thread of this guest (stopped: after run returned), the main thread first.
  std::vector<ThreadSnapshot> save_threads();
  // A copy-on-write child of this (paused) guest in a VM of its own, with dirty-page tracking on,
  // with the threads given. The caller gives it its own Process (see server/worker).
  std::unique_ptr<Guest> fork_paused(const std::vector<ThreadSnapshot>& threads) const;
  // Puts the threads back as given (a worker's reset): threads started since go, threads that ended
  // come back. Only between runs.
  void restore_threads(const std::vector<ThreadSnapshot>& threads);
  // Pages the guest wrote since the last harvest, from every vCPU's dirty ring.
  void harvest_dirty(std::vector<uint64_t>& pages);

  kvm::AddressSpace& address_space() { return *mm_; }
  std::shared_ptr<kvm::AddressSpace> shared_address_space() { return mm_; }
  std::shared_ptr<kvm::GuestMemory> shared_memory() const { return memory_; }
  void set_process(std::unique_ptr<Process> p);

  Process& process() { return *process_; }
  bool has_process() const { return process_ != nullptr; }
  kvm::Vcpu& vcpu() { return *threads_.front()->vcpu; }  // the main thread's
  const ExitCounters& exits() const { return exits_; }
  // KVM ioctls on this guest's VM and vCPUs so far (KVM_RUN included).
  uint64_t kvm_calls() const { return vm_ ? vm_->kvm_calls() : 0; }
  kvm::GuestMemory& memory() { return *memory_; }
  // The resolved host path of the program.
  const std::string& program_path() const { return program_path_; }
  // Ends the program as if killed by `sig` (from another thread; the run returns Signaled).
  void kill(int sig);
  // Kicks every running thread out of KVM_RUN or its wait (a wait restarts).
  void kick_threads();
  // The syscall the last pause left pending (whichever thread it was in): the template's wait.
  uint64_t paused_syscall() const { return paused_syscall_; }
  // A signal from another of the guest's processes (or a child's SIGCHLD): queued for the process
  // as kill(2) would, its handler run or its default action taken at the next chance (the threads
  // are kicked out of what they wait in). SIGKILL ends it (kill()).
  void receive_signal(const siginfo_t& info);

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
  static Image load_image(const std::string& host_path, const std::vector<uint8_t>& file, uint64_t user_size,
                          const PathPolicy& policy);
  // Makes `image` this guest's program with a fresh VM, initial stack and registers.
  void install(Image image, const std::vector<std::string>& argv, const std::vector<std::string>& envp,
               const std::string& execfn);

  struct GuestThread {
    int tid = 0;
    std::unique_ptr<kvm::Vcpu> vcpu;  // its id is the thread's slot in threads_
    std::thread host;                 // none for the main thread (it runs in run())
    enum State { Running, Parked, Done } state = Parked;  // under threads_mutex_
    bool pending = false;             // stands at a syscall not handled yet
    uint64_t flush_generation = 0;    // the address space's TLB generation this vCPU has seen
    uint64_t last_spurious_fault = 0; // a stale-TLB fault retried; the same one again is real
  };

  uint64_t other_threads_cpu_ns() const { return other_threads_cpu_ns_.load(); }
  int64_t fork(Process& p, const CloneRequest& req) override;
  int64_t clone_thread(Process& p, const CloneRequest& req) override;
  int64_t execve(Process& p, const ExecName& name, std::vector<std::string> argv,
                 std::vector<std::string> envp) override;
  void take_incoming_signals(Process&) override { take_incoming_locked(); }
  std::shared_ptr<kvm::GuestMemory> snapshot_memory() const;

  Guest() = default;
  // One thread's vCPU loop, until the thread exits, the process ends, or (main thread) run must return.
  RunResult run_thread(GuestThread& t, bool is_main, uint64_t deadline_ns, bool stop_on_kick);
  std::optional<RunResult> check_stop(GuestThread& t, bool is_main, uint64_t deadline_ns, bool kicked, bool stop_on_kick);
  // Handles the syscall the vCPU stands at; a result when the thread must stop (exit, pause, ...).
  std::optional<RunResult> complete_syscall(GuestThread& t);
  std::optional<RunResult> handle_exception(GuestThread& t, int vector);
  RunResult report_exception(kvm::Vcpu& vcpu, int vector);
  void flush_tlb_before_resume(GuestThread& t);
  // Signal delivery (signal.hpp has the frame). `where` says how the vCPU returns to user mode:
  // through sysret after a syscall, directly (it was stopped in user mode), or through iretq (it
  // stands in an exception stub). `user` is the interrupted user context.
  enum class ResumePath { Sysret, Direct, Iret };
  std::optional<RunResult> deliver_signal(GuestThread& t, ResumePath where, const kvm_regs& user,
                                          const FaultDetail& fault = {});
  bool has_deliverable_signal(GuestThread& t);
  // Job control: while the process is stopped (p.lock.group_stop), each thread waits here at its
  // next exit until a SIGCONT or SIGKILL; the parent is told of the stop and of the continue.
  void wait_while_stopped();
  std::atomic<bool> stop_reported_{false};
  std::optional<RunResult> deliver_signal_in_entry(GuestThread& t);
  void resume_user_via_iret(GuestThread& t, const kvm_regs& user);
  std::optional<RunResult> sigreturn(GuestThread& t);
  // The whole process ends with r (exit_group, a fatal fault, a kill): every thread stops.
  void end_process(const RunResult& r);
  void thread_host_main(GuestThread* t);
  void start_host_thread(GuestThread& t);
  // A parked thread slot to reuse, or a new vCPU charged to p's tree; nullptr when it has no room.
  GuestThread* new_thread_slot(Process& p);
  void stop_other_threads(GuestThread& self);
  void resume_other_threads(GuestThread& self);
  void finish_threads();  // ends every other thread's host thread (destruction, execve)

  std::string program_path_;
  std::shared_ptr<kvm::GuestMemory> memory_;
  std::shared_ptr<kvm::AddressSpace> mm_;
  std::unique_ptr<kvm::Vm> vm_;
  std::vector<std::unique_ptr<GuestThread>> threads_;  // [0] is the main thread
  mutable std::mutex threads_mutex_;
  std::condition_variable threads_cv_;
  std::atomic<bool> ending_{false};
  std::optional<RunResult> end_result_;  // under threads_mutex_
  std::unique_ptr<Process> process_;
  ExitCounters exits_;
  uint64_t deadline_ns_ = 0;
  std::optional<Image> pending_exec_;  // set by execve, installed when the syscall returns
  std::atomic<uint64_t> other_threads_cpu_ns_{0};  // CPU time of its threads' runs but the main one's
  // execve of one file: an ELF image, or a "#!" script run by its interpreter (script_depth: how
  // many scripts led here; Linux stops at 4 with ELOOP).
  int64_t exec_file(Process& p, const ExecName& name, std::vector<std::string> argv,
                    std::vector<std::string> envp, int script_depth);
  Charge exec_reservation_;            // the pending image's memory until the process's charge has it
  struct PendingExec {
    std::vector<std::string> argv, envp;
    std::string execfn;
  } exec_args_;
  std::string execfn_;  // the execve in progress: the path as the guest gave it
  std::atomic<int> kill_signal_{0};
  std::atomic<bool> pause_requested_{false};  // a thread other than the main one paused at a wait
  uint64_t paused_syscall_ = 0;               // the syscall a pause left pending
  // Signals from other processes, until a thread of this one takes them into its pending queues
  // under the process lock (take_incoming_locked).
  std::mutex incoming_mutex_;
  std::vector<siginfo_t> incoming_;
  std::atomic<bool> has_incoming_{false};
  void take_incoming_locked();
};

// Finds PROGRAM like execvp: as given when it contains '/', else the first executable in PATH.
std::string find_program(const std::string& program);

}  // namespace kvms::linux

#pragma once
// Everything the emulated Linux kernel knows about the guest program, in one copyable object: its
// address space, fd table, cwd, signal dispositions, limits and counters. A worker's fork is a copy of
// the template's Process over forked guest memory; a reset assigns the template's copy back.
#include <sys/types.h>

#include <signal.h>
#include <time.h>

#include <array>
#include <deque>
#include <atomic>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <string>
#include <variant>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/clock_page.h"
#include "linux/fasync.hpp"
#include "linux/fd_table.hpp"
#include "linux/itimer.hpp"
#include "linux/record_locks.hpp"
#include "linux/limits.hpp"

namespace kvms::kvm {
class Vcpu;
}

namespace kvms::linux {

class PathPolicy;
class NetPolicy;
class Process;

class ProcessTable;
struct ProcessView;

// clone(2)/clone3(2) of a thread.
struct CloneRequest {
  uint64_t flags = 0, stack = 0, parent_tid = 0, child_tid = 0, tls = 0;
};

// Process creation that needs the VM behind the process (implemented by Guest).
// The program an execve names.
struct ExecName {
  std::string guest_path;      // what to run, absolute
  std::string filename;        // as the guest named it (Linux's bprm->filename: what a "#!"
                               // interpreter is given as the script's path)
  bool filename_gone = false;  // filename is /dev/fd/N... of an fd that closes on exec: a script
                               // cannot be run by that name (Linux: ENOENT)
};

class ProcessHost {
 public:
  virtual ~ProcessHost() = default;
  // fork/vfork/clone without CLONE_THREAD: a copy of p as a new guest process (on req.stack when
  // given, with req.tls under CLONE_SETTLS); the child's pid.
  virtual int64_t fork(Process& p, const CloneRequest& req) = 0;
  // clone with CLONE_THREAD: a new thread of p; its tid or -errno.
  virtual int64_t clone_thread(Process& p, const CloneRequest& req) = 0;
  // Replaces p's program (the switch happens when the syscall returns); 0 or -errno.
  virtual int64_t execve(Process& p, const ExecName& name, std::vector<std::string> argv,
                         std::vector<std::string> envp) = 0;
  // Queues for p the signals other guest processes sent it and that wait in its inbox (they are
  // taken between syscalls; a handler that waits for signals takes them itself). The caller holds
  // the process lock.
  virtual void take_incoming_signals(Process&) {}
};

// What the server layer learns from the syscalls that wait and accept. Null for `kvmserver run`.
class ServerHooks {
 public:
  virtual ~ServerHooks() = default;
  // The guest is about to wait (epoll_wait/epoll_pwait/poll/select/a blocking accept), on a set that
  // does or does not include a listening socket. Returning true stops the syscall before it runs: it
  // is left pending at the syscall entry (set Process::pause) and Guest::run returns Paused.
  virtual bool before_wait(Process& p, bool includes_listener, bool would_block) = 0;
  // A blocking accept() on a listening socket: before_wait(p, true, true) unless overridden.
  virtual bool before_blocking_accept(Process& p) { return before_wait(p, true, true); }
  // Whether listening sockets must look empty to this guest now (an ephemeral worker busy with its
  // one connection): accept -> EAGAIN, never ready in epoll/poll/select.
  virtual bool listener_hidden(const Process& p) const = 0;
  // accept/accept4 returned guest_fd, a new connection.
  virtual void on_accept(Process& p, int guest_fd) = 0;
  // The guest closed a socket: a request may have ended while another of its threads already
  // waits on the listener (a threaded server's event loop), which must look again.
  virtual void after_socket_close(Process&) {}
  // The guest is about to listen() on a stream socket of `domain`: a host socket to listen on
  // instead (socket activation: what systemd passed to kvmserver), ours to close, or -1.
  virtual int take_inherited_listener(Process&, int /*domain*/) { return -1; }
};

struct SyscallArgs {
  uint64_t nr = 0;
  uint64_t a[6] = {};
};

// The kernel's struct k_sigaction for x86-64 (what rt_sigaction reads and writes).
struct KernelSigaction {
  uint64_t handler = 0;
  uint64_t flags = 0;
  uint64_t restorer = 0;
  uint64_t mask = 0;
};

// One pending instance of a signal: the siginfo its handler (or sigtimedwait) will see.
struct PendingSignal {
  siginfo_t info{};
};

// What Linux keeps per thread rather than per process.
struct ThreadContext {
  int tid = 2;
  kvm::Vcpu* vcpu = nullptr;
  uint64_t clear_child_tid = 0, robust_list = 0, robust_list_len = 0;
  uint64_t rseq = 0, rseq_len = 0;
  uint64_t sigmask = 0;
  // rt_sigsuspend's caller's mask while the call has its own: the frame of the signal that ends
  // the call saves this one, so the handler's return restores it.
  std::optional<uint64_t> saved_sigmask;
  // The end time (CLOCK_MONOTONIC) of the timed wait this thread last began, and whether the call
  // being handled is that wait run again after a kick (kept_across_restart in deadline.hpp).
  std::optional<timespec> restart_end;
  bool restarting = false;
  uint64_t pending_signals = 0;  // bit sig-1, sent to this thread and not delivered yet
  // The pending instances of each signal: at most one of a standard signal, every one of a
  // real-time signal (they queue, up to --max-pending-signals per process; signal.cpp).
  std::map<int, std::deque<PendingSignal>> pending_queue;
  uint64_t altstack_sp = 0, altstack_size = 0;
  int altstack_flags = 2;  // SS_DISABLE
  char comm[16] = "main";  // PR_SET_NAME
  std::optional<int> exit_code;  // set by exit(2): this thread ends
};

// A thread blocked in FUTEX_WAIT (futex.cpp). Lives on the waiter's stack while it is queued.
struct FutexWaiter {
  uint64_t addr = 0;
  uint32_t bitset = ~0u;
  int tid = 0;
  bool woken = false;
  bool shared = false;  // waits as a shared futex (no FUTEX_PRIVATE_FLAG): a private wake misses it
  bool pi = false;      // FUTEX_LOCK_PI: woken only by FUTEX_UNLOCK_PI, which hands it the lock
};

// A mutex and condition variable that a copied Process does not share or copy: each process (and each
// worker's copy) has its own.
struct ProcessLock {
  std::mutex mutex;
  std::condition_variable changed;  // futex wake-ups, thread stops, exit_group
  std::atomic<bool> stop{false};    // every thread must stop at its next chance (pause, exit, kill)
  // Job control: the stop signal the whole process is stopped by (0: running), set when a thread
  // takes a stop signal with the default action, cleared by a SIGCONT's arrival (queue_signal);
  // `continued`: a SIGCONT ended a stop and the parent has not been told yet.
  std::atomic<int> group_stop{0};
  std::atomic<bool> continued{false};
  ProcessLock() = default;
  ProcessLock(const ProcessLock&) {}
  ProcessLock& operator=(const ProcessLock&) { return *this; }
};

struct SyscallStats {
  std::array<uint64_t, 512> calls{};
  uint64_t unknown = 0;
};

struct ProcessConfig {
  bool verbose = false;
  Limits limits;  // the caps (limits.hpp); the tree-wide ones are enforced by the account
  std::string hostname = "kvmserver";
};

class Process {
 public:
  Process(std::shared_ptr<kvm::AddressSpace> mm, std::shared_ptr<const PathPolicy> policy, ProcessConfig config);
  // A copy of `other` over another address space (a worker's fork).
  Process(const Process& other, std::shared_ptr<kvm::AddressSpace> mm);
  Process& operator=(const Process&) = default;

  kvm::AddressSpace& mm() { return *mm_; }
  void set_address_space(std::shared_ptr<kvm::AddressSpace> mm) { mm_ = std::move(mm); }
  const PathPolicy& policy() const { return *policy_; }
  void set_policy(std::shared_ptr<const PathPolicy> policy) { policy_ = std::move(policy); }
  const ProcessConfig& config() const { return config_; }
  const Limits& limits() const { return config_.limits; }

  // The process tree's account (limits.hpp). A new process starts a tree of its own; fork puts the
  // child in its parent's; a worker gives each request a fresh one. Charges the process's memory
  // and its slot in the tree to the new account, whatever its limits (it already exists).
  void join_account(std::shared_ptr<ResourceAccount> account);
  ResourceAccount& account() const { return *account_; }
  const std::shared_ptr<ResourceAccount>& shared_account() const { return account_; }
  // Before mapping: would `added` more bytes, after `removed` go away, fit the tree's --max-memory?
  // If so they are held for this process until settle_memory(); if not, logs (-v) and false.
  bool reserve_memory(uint64_t added, uint64_t removed = 0);
  // Makes this process's memory charge what it holds now: accessible mappings, page tables, and
  // the host's cost of its VM, vCPUs, mappings and fds (after every syscall; cheap when unchanged).
  void settle_memory();
  // What settle_memory() charges.
  uint64_t memory_in_use() const;
  // --max-memory as this process sees it (sysinfo, /proc/meminfo), and what its tree uses of it.
  uint64_t memory_limit() const;
  uint64_t tree_memory_used() const;
  // The tree refused a charge of r: one -v line per tree and resource, naming the flag and what
  // the guest gets instead ("fork: EAGAIN").
  void log_refusal(ResourceAccount::Resource r, const std::string& consequence) const;
  // Charges a child about to be forked to the tree before anything is copied: a process slot and a
  // copy of this process's memory, into `slot` and `memory` (Linux's fork fails the same ways).
  // 0, or -EAGAIN (--max-processes) / -ENOMEM (--max-memory) with a -v line.
  int charge_fork(Charge& slot, Charge& memory) const;
  // A per-process cap was hit (--max-threads, --max-fds, ...): one -v line per process and cap.
  void log_cap(const char* flag, uint64_t value, const std::string& consequence);
  // vCPUs of this process's VM (threads that ended leave theirs for later ones): host cost.
  void set_vcpu_count(uint64_t n) { vcpu_count_ = n; }
  // This process's charges, set up by whoever creates it (fork charges the child before copying).
  Charge memory_charge;   // kMemory: memory_in_use() after each settle
  Charge process_slot;    // kProcesses: 1 while the process lives
  // The calling thread's vCPU and per-thread state. Guest threads run on host threads of their own;
  // the one whose syscall is being handled is "current" (the main thread outside guest runs).
  kvm::Vcpu& vcpu() { return *thread().vcpu; }
  ThreadContext& thread();
  uint64_t vcpu_rsp();  // the calling thread's user stack pointer (0 without a vCPU)
  const ThreadContext& thread() const { return const_cast<Process*>(this)->thread(); }
  void make_current(ThreadContext* t);  // on this host thread, until changed
  void attach(kvm::Vcpu* vcpu) { main_thread().vcpu = vcpu; }
  ThreadContext& main_thread();
  const ThreadContext& main_thread() const { return const_cast<Process*>(this)->main_thread(); }
  // The process keeps only the thread `keep` (fork in a threaded program, execve), now with id tid.
  void keep_only_thread(int keep, int tid);

  // Held while a syscall handler runs: handlers of different guest threads never overlap, except
  // around the host calls that block (BlockingSection) and in futex waits.
  ProcessLock lock;
  // The process lock for a handler that waits on lock.changed (pause, sigtimedwait): adopted
  // when the handler holds it already (holds_lock; tests call without it), and still held when
  // the handler returns.
  class HandlerWait {
   public:
    explicit HandlerWait(Process& p)
        : lock_(holds_lock ? std::unique_lock<std::mutex>(p.lock.mutex, std::adopt_lock)
                           : std::unique_lock<std::mutex>(p.lock.mutex)) {}
    ~HandlerWait() {
      if (holds_lock) lock_.release();
    }
    HandlerWait(const HandlerWait&) = delete;
    HandlerWait& operator=(const HandlerWait&) = delete;
    std::unique_lock<std::mutex>& lock() { return lock_; }

   private:
    std::unique_lock<std::mutex> lock_;
  };
  // While it lives, a main thread waiting for something shows state S in /proc/<pid>/stat.
  class Asleep {
   public:
    explicit Asleep(Process& p);
    ~Asleep();
    Asleep(const Asleep&) = delete;
    Asleep& operator=(const Asleep&) = delete;
   private:
    ProcessView* view_ = nullptr;
  };
  // Releases the process lock around a blocking host call; only from inside a handler.
  class BlockingSection {
   public:
    explicit BlockingSection(Process& p);
    ~BlockingSection();
    BlockingSection(const BlockingSection&) = delete;
    BlockingSection& operator=(const BlockingSection&) = delete;
   private:
    Asleep asleep_;
    Process& p_;
    bool unlocked_ = false;
  };
  // Set by the Guest while a handler runs with the lock held (so blocking sections know to unlock).
  // Defined here, constant-initialized: every use is a plain thread-local access (an out-of-line
  // definition made each one a call to a TLS wrapper, which GCC 12's UBSan also got wrong).
  static inline thread_local bool holds_lock = false;

  std::map<int, ThreadContext> threads;  // tid -> state; the main thread's tid is pid
  std::list<FutexWaiter*> futex_waiters;

  FdTable fds;
  std::string cwd = "/";  // guest path, absolute, normalised
  mode_t umask = 022;

  uint64_t brk_start = 0, brk_current = 0;
  uint64_t stack_top = 0, stack_size = 0;
  uint64_t vdso_base = 0;  // vDSO image; the clock page is the page below
  uint64_t arg_start = 0, arg_end = 0;  // the argv strings on the initial stack (/proc/self/cmdline)
  uint64_t env_start = 0, env_end = 0;  // the envp strings there (/proc/self/environ)

  // How guest TSC values relate to host time, for the vDSO's clock page (time.cpp).
  struct Clock {
    int64_t tsc_offset = 0;   // guest TSC - host TSC
    uint64_t tsc_khz = 0;
    uint64_t calibration_tsc = 0, calibration_ns = 0;  // first sample, to refine the rate
    uint64_t refreshed_ns = 0;
    // What the clock page holds, as the host last wrote it: the page itself is guest memory (the
    // guest may mprotect and scribble on it), so the host never reads its values back.
    uint32_t seq = 0, shift = 0;
    uint64_t mult = 0, tsc_base = 0, monotonic_base_ns = 0;
    int64_t realtime_offset_ns = 0, boottime_offset_ns = 0;
    // The guest's CLOCK_MONOTONIC (and BOOTTIME) minus the host's. 0 while a program boots; a
    // worker's request starts its clock where the template paused (start_clock_at), so this is
    // negative there, and a snapshot goes on from the time it was saved. Absolute times the guest
    // gives on those clocks are moved by it before the host waits for them (host_time).
    int64_t ahead_ns = 0;
  } clock;

  int pid = 2, ppid = 1;
  // prctl: the signal this process gets when its parent ends (0: none; a fork's child starts
  // without one), and whether it is "dumpable".
  int parent_death_signal = 0;
  bool dumpable = true;
  bool child_subreaper = false;  // PR_SET_CHILD_SUBREAPER: per process, not inherited by fork
  // The main thread's tid: the pid the program started with. A worker's request gets a new pid
  // (every request is a new process to the guest's libraries) while its threads keep the tids the
  // guest's memory already holds (glibc caches them); the first pid stays an alias of the process.
  int main_tid = 2;
  bool is_self(int64_t id) const { return id == pid || id == main_tid; }
  uint32_t uid = 1000, gid = 1000;
  int nice = 0;  // setpriority
  std::array<KernelSigaction, 65> sigactions{};
  RealTimerSlot real_timer;  // ITIMER_REAL (itimer.cpp): none in a copy
  PosixTimers posix_timers;  // timer_create's (posix_timer.cpp): none in a copy
  std::array<std::pair<uint64_t, uint64_t>, 16> rlimits{};  // RLIMIT_* -> {soft, hard}

  std::optional<int> exit_status;  // set by exit/exit_group
  bool pause = false;              // set through ServerHooks::before_wait: stop before this syscall
  ServerHooks* server = nullptr;
  ProcessHost* host = nullptr;
  std::shared_ptr<ProcessTable> table;  // every guest process of this run
  std::shared_ptr<ProcessView> view;    // what others see of it in /proc/<pid>/stat (its table's)
  std::string exe_path;                 // host path of the running program (/proc/self/exe)
  std::shared_ptr<const NetPolicy> net_policy;  // --allow-listen/--allow-connect; null = deny all

  SyscallStats stats;

  // --verbose diagnostics: one line each, and each unsupported syscall only once.
  void log(const std::string& line) const;
  // A host resource failed under the guest (it sees an errno): said even without -v, but only the
  // first time in this kvmserver, as a guest can make it happen in a loop.
  void log_host_failure(const std::string& line) const;
  void log_denied(const std::string& guest_path, const std::string& flag) const;
  void log_unsupported(uint64_t nr);

  // Resolves a guest path argument (dirfd-relative like the *at syscalls) to an absolute guest path.
  // Returns -EBADF/-ENOTDIR/-EFAULT/-ENAMETOOLONG/-ENOENT as the kernel would.
  std::variant<std::string, int> guest_path(int dirfd, uint64_t user_path);

  // The guest's /tmp is a private host directory (ephemeral servers): what it holds is charged to
  // the tree (file_quota.hpp).
  bool has_private_tmp = false;
  bool has_signalfd = false;
  LockOwner lock_owner;  // its POSIX record locks (record_locks.hpp): a copy is a new owner  // made one: queued and taken signals update signalfds' readiness
  AsyncIoSlot async_io;  // O_ASYNC's watcher of the files it turned it on for (fasync.hpp): none in a copy

 private:
  // Only through the constructor above, which gives the copy its own address space.
  Process(const Process&) = default;
  std::shared_ptr<kvm::AddressSpace> mm_;
  std::shared_ptr<const PathPolicy> policy_;
  ProcessConfig config_;
  std::set<uint64_t> unsupported_logged_;
  std::set<std::string> caps_logged_;
  std::shared_ptr<ResourceAccount> account_;
  uint64_t vcpu_count_ = 1;
};

}  // namespace kvms::linux

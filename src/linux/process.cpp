#include "linux/process.hpp"

#include "linux/process_table.hpp"

#include <fcntl.h>
#include <sys/resource.h>

#include <cerrno>
#include <algorithm>
#include <atomic>
#include <cstdio>

#include "kvm/vm.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {

Process::Process(std::shared_ptr<kvm::AddressSpace> mm, std::shared_ptr<const PathPolicy> policy, ProcessConfig config)
    : mm_(std::move(mm)), policy_(std::move(policy)), config_(std::move(config)) {
  constexpr uint64_t kInfinity = ~0ull;
  rlimits.fill({kInfinity, kInfinity});
  rlimits[RLIMIT_NOFILE] = {config_.limits.fds, config_.limits.fds};
  fds.set_limit(int(std::min<uint64_t>(config_.limits.fds, FdTable::kMaxLimit)));
  rlimits[RLIMIT_STACK] = {8ull << 20, kInfinity};
  rlimits[RLIMIT_CORE] = {0, kInfinity};
  rlimits[RLIMIT_NPROC] = {config_.limits.processes, config_.limits.processes};
  rlimits[RLIMIT_MEMLOCK] = {8ull << 20, 8ull << 20};
  rlimits[RLIMIT_SIGPENDING] = {config_.limits.pending_signals, config_.limits.pending_signals};
  rlimits[RLIMIT_MSGQUEUE] = {819200, 819200};
  rlimits[RLIMIT_NICE] = {0, 0};
  rlimits[RLIMIT_RTPRIO] = {0, 0};
  threads[pid].tid = pid;
  main_tid = pid;
  join_account(std::make_shared<ResourceAccount>(config_.limits));
}

Process::Process(const Process& other, std::shared_ptr<kvm::AddressSpace> mm) : Process(other) {
  mm_ = std::move(mm);
  for (auto& [tid, t] : threads) t.vcpu = nullptr;
  futex_waiters.clear();
}

namespace {
thread_local Process* current_process = nullptr;
thread_local ThreadContext* current_thread = nullptr;
}  // namespace

ThreadContext& Process::thread() {
  if (current_process == this && current_thread) return *current_thread;
  return main_thread();
}

uint64_t Process::vcpu_rsp() {
  kvm::Vcpu* v = thread().vcpu;
  return v ? v->regs().rsp : 0;
}

ThreadContext& Process::main_thread() {
  auto it = threads.find(main_tid);
  return it != threads.end() ? it->second : threads.begin()->second;
}

void Process::make_current(ThreadContext* t) {
  current_process = t ? this : nullptr;
  current_thread = t;
}

void Process::keep_only_thread(int keep, int tid) {
  ThreadContext t = threads.at(keep);
  t.tid = tid;
  threads.clear();
  threads.emplace(tid, t);
  main_tid = tid;
  make_current(nullptr);
}

Process::Asleep::Asleep(Process& p) {
  if (p.view && p.thread().tid == p.main_tid) {
    view_ = p.view.get();
    view_->state = 'S';
  }
}

Process::Asleep::~Asleep() {
  if (view_) view_->state = 'R';
}

Process::BlockingSection::BlockingSection(Process& p) : asleep_(p), p_(p) {
  if (holds_lock) {
    p_.lock.mutex.unlock();
    holds_lock = false;
    unlocked_ = true;
  }
}

Process::BlockingSection::~BlockingSection() {
  if (unlocked_) {
    const int err = errno;  // the host call's, for the handler to read
    p_.lock.mutex.lock();
    holds_lock = true;
    errno = err;
  }
}

void Process::log(const std::string& line) const {
  if (config_.verbose) std::fprintf(stderr, "kvmserver: %s\n", line.c_str());
}

void Process::log_host_failure(const std::string& line) const {
  static std::atomic<bool> said{false};
  if (config_.verbose || !said.exchange(true)) std::fprintf(stderr, "kvmserver: %s\n", line.c_str());
}

void Process::log_denied(const std::string& guest_path, const std::string& flag) const {
  log("denied: " + guest_path + " (allow with " + flag + ")");
}

void Process::log_unsupported(uint64_t nr) {
  if (!config_.verbose || !unsupported_logged_.insert(nr).second) return;
  const char* name = syscall_name(nr);
  log(std::string("unsupported syscall ") + (name ? name : "#" + std::to_string(nr)) + " -> ENOSYS");
}

std::variant<std::string, int> Process::guest_path(int dirfd, uint64_t user_path) {
  auto path = mm().read_string(user_path, 4096);
  if (!path) return mm().find(user_path) ? -ENAMETOOLONG : -EFAULT;
  if (path->empty()) return -ENOENT;
  if ((*path)[0] == '/') return *path;
  std::string base;
  if (dirfd == AT_FDCWD) {
    base = cwd;
  } else {
    auto dir = fds.get(dirfd);
    if (!dir) return -EBADF;
    if (dir->kind != OpenFile::Kind::Directory) return -ENOTDIR;
    base = dir->path;
  }
  if (base.empty() || base.back() != '/') base += '/';
  return base + *path;
}

void Process::join_account(std::shared_ptr<ResourceAccount> account) {
  account_ = std::move(account);
  memory_charge = Charge(account_, ResourceAccount::kMemory);
  memory_charge.set_unchecked(memory_in_use());
  process_slot = Charge(account_, ResourceAccount::kProcesses);
  process_slot.set_unchecked(1);
}

uint64_t Process::memory_in_use() const {
  return mm_->mapped_bytes() + mm_->page_table_pages() * kvm::kPageSize + host_cost::process(mm_->limit()) +
         vcpu_count_ * host_cost::kVcpu + mm_->mapping_count() * host_cost::kMapping +
         fds.open_count() * host_cost::kOpenFd;
}

bool Process::reserve_memory(uint64_t added, uint64_t removed) {
  if (added <= removed) return true;
  // With what mapping it costs the host: page tables (a page per 2 MiB, and the levels above) and
  // the list entries a split may add; settle_memory() then charges what it really took.
  const uint64_t bytes = added - removed;
  const uint64_t tables = (bytes >> 21) * kvm::kPageSize + 3 * kvm::kPageSize + 2 * host_cost::kMapping;
  if (memory_charge.grow(bytes + tables)) return true;
  log_refusal(ResourceAccount::kMemory, "ENOMEM");
  return false;
}

void Process::settle_memory() {
  const uint64_t now = memory_in_use();
  if (now != memory_charge.amount()) memory_charge.set_unchecked(now);
}

uint64_t Process::memory_limit() const { return account_->limit(ResourceAccount::kMemory); }
uint64_t Process::tree_memory_used() const { return account_->used(ResourceAccount::kMemory); }

int Process::charge_fork(Charge& slot, Charge& memory) const {
  slot = Charge(account_, ResourceAccount::kProcesses);
  if (!slot.grow(1)) {
    log_refusal(ResourceAccount::kProcesses, "fork: EAGAIN");
    return -EAGAIN;
  }
  memory = Charge(account_, ResourceAccount::kMemory);
  if (!memory.grow(memory_in_use())) {
    log_refusal(ResourceAccount::kMemory, "fork: ENOMEM");
    return -ENOMEM;
  }
  return 0;
}

void Process::log_refusal(ResourceAccount::Resource r, const std::string& consequence) const {
  if (!config_.verbose || !account_->first_refusal(r)) return;
  log("limit: " + account_->describe_limit(r) + " reached (pid " + std::to_string(pid) + "): " + consequence);
}

void Process::log_cap(const char* flag, uint64_t value, const std::string& consequence) {
  if (!config_.verbose || !caps_logged_.insert(flag).second) return;
  log(std::string("limit: ") + flag + "=" + std::to_string(value) + " reached (pid " + std::to_string(pid) +
      "): " + consequence);
}

}  // namespace kvms::linux

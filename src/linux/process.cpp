#include "linux/process.hpp"

#include <fcntl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdio>

#include "kvm/vm.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {

Process::Process(std::shared_ptr<kvm::AddressSpace> mm, std::shared_ptr<const PathPolicy> policy, ProcessConfig config)
    : mm_(std::move(mm)), policy_(std::move(policy)), config_(std::move(config)) {
  constexpr uint64_t kInfinity = ~0ull;
  rlimits.fill({kInfinity, kInfinity});
  rlimits[RLIMIT_NOFILE] = {FdTable::kDefaultLimit, FdTable::kDefaultLimit};
  rlimits[RLIMIT_STACK] = {8ull << 20, kInfinity};
  rlimits[RLIMIT_CORE] = {0, kInfinity};
  rlimits[RLIMIT_NPROC] = {1024, 1024};
  rlimits[RLIMIT_MEMLOCK] = {8ull << 20, 8ull << 20};
  rlimits[RLIMIT_SIGPENDING] = {1024, 1024};
  rlimits[RLIMIT_MSGQUEUE] = {819200, 819200};
  rlimits[RLIMIT_NICE] = {0, 0};
  rlimits[RLIMIT_RTPRIO] = {0, 0};
  threads[pid].tid = pid;
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
  auto it = threads.find(pid);
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
  make_current(nullptr);
}

Process::BlockingSection::BlockingSection(Process& p) : p_(p) {
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

bool Process::within_memory_limit(uint64_t extra_bytes) const {
  return mm_->mapped_bytes() + extra_bytes <= config_.memory_limit;
}

}  // namespace kvms::linux

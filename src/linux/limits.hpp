#pragma once
// What one guest process tree may use, and what it is using.
//
// A tree is everything one `kvmserver run` starts, the template while it boots, or everything one
// request of a worker starts (each request gets a fresh account, so a request that hits a cap costs
// only itself). Every host resource a guest can multiply is charged to its tree's account: guest
// memory, and with it the host memory kvmserver spends on the guest's behalf (VMs, vCPUs, page
// tables, mapping and fd bookkeeping, memfds, pipe and socket buffers, files in a private /tmp).
// That is what keeps kvmserver's own memory bounded whatever a guest does. A cap that is hit is
// answered with the errno Linux gives for it and one -v line per tree and resource.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace kvms::linux {

struct Limits {
  uint64_t memory = 1024ull << 20;      // --max-memory: bytes across the tree (see ResourceAccount)
  uint64_t processes = 64;              // --max-processes: live guest processes in the tree
  uint64_t threads = 128;               // --max-threads: threads of one process (kvm::kMaxVcpus at most)
  uint64_t fds = 1024;                  // --max-fds: open fds of one process (its RLIMIT_NOFILE)
  uint64_t tmp_bytes = 256ull << 20;    // --max-tmp-size: bytes of files in a private /tmp
  uint64_t pending_signals = 1024;      // --max-pending-signals: queued signals of one process
  uint64_t epoll_watches = 65536;       // --max-epoll-watches: epoll registrations in the tree
  uint64_t timers = 1024;               // --max-timers: timers (timerfds) in the tree
};

// What kvmserver spends on the host for things a guest creates, charged to --max-memory with the
// guest's own memory; see README "Limits". The VM and vCPU figures were measured in the nested
// machine (Debian's 6.1 kernel; /proc/meminfo MemAvailable before and with 40 guest processes or
// 100 threads alive, 2026-12-04): almost all of it is the host kernel's (vmalloc'ed KVM state), not
// kvmserver's RSS. A VM cost 5.5 MiB with an 8 GiB guest address space, 10.2 MiB with 64 GiB,
// 15.3 MiB with 256 GiB; a vCPU 0.55 MiB.
namespace host_cost {
// A VM of `address_space` bytes: 5 MiB, plus 2 MiB for each doubling past 8 GiB (the fit above).
constexpr uint64_t process(uint64_t address_space) {
  uint64_t cost = 5ull << 20;
  for (uint64_t size = 8ull << 30; size < address_space; size *= 2) cost += 2ull << 20;
  return cost;
}
constexpr uint64_t kVcpu = 576ull << 10;      // a vCPU: KVM's per-vCPU state, kvm_run, a host thread
constexpr uint64_t kMapping = 128;            // one entry of the mapping list
constexpr uint64_t kOpenFd = 1024;            // a guest fd: our OpenFile and the host's struct file
constexpr uint64_t kPipe = 64ull << 10;       // a pipe's buffer (Linux's default 16 pages; F_SETPIPE_SZ: its size)
// A socket's buffers. The kernel lets each hold up to its SO_SNDBUF/SO_RCVBUF, but TCP memory is
// bounded system-wide and most sockets hold little: a nominal share, so that servers with thousands
// of connections still fit while a socket flood does not.
constexpr uint64_t kSocket = 64ull << 10;
}  // namespace host_cost

class ResourceAccount {
 public:
  enum Resource { kMemory, kProcesses, kTmpBytes, kEpollWatches, kTimers, kResourceCount };

  explicit ResourceAccount(const Limits& limits);
  const Limits& limits() const { return limits_; }

  // Takes n of r if the total stays within r's limit; false, taking nothing, otherwise.
  bool charge(Resource r, uint64_t n);
  // Takes n of r whatever the limit (what is already held: a worker's copy of its template).
  void charge_unchecked(Resource r, uint64_t n);
  void release(Resource r, uint64_t n);
  uint64_t used(Resource r) const { return used_[r].load(std::memory_order_relaxed); }
  uint64_t peak(Resource r) const { return peak_[r].load(std::memory_order_relaxed); }
  uint64_t limit(Resource r) const { return limit_[r]; }
  // Changes r's limit (a worker's memory: its template's share plus what a request may add);
  // `described_by` is the flag the -v line names then ("--max-request-memory=64").
  void set_limit(Resource r, uint64_t limit, std::string described_by = "");
  // True only the first time it is asked after r's limit stopped something (one -v line each).
  bool first_refusal(Resource r);
  // "--max-memory=256": the flag and value behind r's limit, for -v lines.
  std::string describe_limit(Resource r) const;
  // How many charges of r were refused.
  uint64_t refusals(Resource r) const { return refused_[r].load(std::memory_order_relaxed); }

  // The flag that sets r ("--max-memory").
  static const char* flag(Resource r);

  // Files in a private /tmp outlive the fds that wrote them: what each holds (by host inode) counts
  // toward kTmpBytes and kMemory while it exists (file_quota.cpp keeps it current).
  bool reserve_tmp(uint64_t n);  // n of both, or nothing
  void release_tmp(uint64_t n);
  void set_tmp_file(uint64_t inode, uint64_t bytes);  // whatever the limits: it is there
  void forget_tmp_file(uint64_t inode);

 private:
  void note_peak(Resource r, uint64_t now);
  Limits limits_;
  uint64_t limit_[kResourceCount];
  std::atomic<uint64_t> used_[kResourceCount] = {};
  std::atomic<uint64_t> peak_[kResourceCount] = {};
  std::atomic<uint64_t> refused_[kResourceCount] = {};
  std::atomic<bool> logged_[kResourceCount] = {};
  std::string described_by_[kResourceCount];
  std::mutex tmp_mutex_;
  std::map<uint64_t, uint64_t> tmp_files_;  // inode -> bytes charged
};

// A share of an account that its holder gives back when it goes (a process's memory, an open
// file's buffers, a process slot). Copying a holder copies no charge: the copy starts holding
// nothing of the same account, and whoever made the copy charges it.
class Charge {
 public:
  Charge() = default;
  Charge(std::shared_ptr<ResourceAccount> account, ResourceAccount::Resource resource)
      : account_(std::move(account)), resource_(resource) {}
  Charge(const Charge& other) : account_(other.account_), resource_(other.resource_) {}
  Charge& operator=(const Charge& other);
  Charge(Charge&& other) noexcept;
  Charge& operator=(Charge&& other) noexcept;
  ~Charge() { reset(); }

  // Holds n more, within the limit; false (nothing taken) past it or without an account.
  bool grow(uint64_t n);
  // Holds exactly `amount` from now on; growth is taken whatever the limit.
  void set_unchecked(uint64_t amount);
  void reset();  // gives everything back
  uint64_t amount() const { return amount_; }
  ResourceAccount* account() const { return account_.get(); }
  explicit operator bool() const { return account_ != nullptr; }

 private:
  std::shared_ptr<ResourceAccount> account_;
  ResourceAccount::Resource resource_ = ResourceAccount::kMemory;
  uint64_t amount_ = 0;
};

}  // namespace kvms::linux

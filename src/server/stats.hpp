#pragma once
// Server counters: what each request cost, in numbers that mean the same on every machine (VM exits,
// syscalls, pages reset, bytes copied), plus the times of worker creation and reset.
#include <atomic>
#include <cstdint>
#include <string>

#include "http/front.hpp"

namespace kvms::server {

struct RequestCost {
  uint64_t exits_syscall = 0, exits_exception = 0, exits_interrupted = 0, exits_other = 0;
  uint64_t syscalls = 0;
  uint64_t pages_reset = 0;
  bool full_reset = false;
  uint64_t reset_ns = 0;
  uint64_t kvm_calls = 0;  // KVM ioctls, KVM_RUN included, from the end of the last reset to the end of this one
};

class ServerStats {
 public:
  void add_request(const RequestCost& cost);
  void add_worker_created(uint64_t ns, uint64_t kvm_calls) {
    workers_.fetch_add(1);
    create_ns_.fetch_add(ns);
    create_kvm_calls_.fetch_add(kvm_calls);
  }
  // What the paused template (after warm-up) holds: pages of guest memory, which every worker
  // shares; its open fds, of which every reset makes `files_recreated` files again; its mappings,
  // which every reset copies.
  void set_template(uint64_t resident_pages, uint64_t fds, uint64_t files_recreated, uint64_t mappings) {
    template_resident_pages_.store(resident_pages);
    template_fds_.store(fds);
    template_files_recreated_.store(files_recreated);
    template_mappings_.store(mappings);
  }
  void add_fault() { faults_.fetch_add(1); }
  void add_timeout() { timeouts_.fetch_add(1); }
  void add_worker_failed() { workers_failed_.fetch_add(1); }
  uint64_t requests() const { return requests_.load(); }
  uint64_t workers_created() const { return workers_.load(); }
  uint64_t workers_failed() const { return workers_failed_.load(); }

  // The front's counters (--isolate=request): client connections and requests, apart from the
  // guest connections (one per request) counted above.
  http::FrontStats front;
  bool has_front = false;

  // One line per topic for stderr (--stats, SIGUSR1).
  std::string text() const;
  // The same in Prometheus' text exposition format (--metrics).
  std::string prometheus() const;

 private:
  std::atomic<uint64_t> requests_{0}, exits_syscall_{0}, exits_exception_{0}, exits_interrupted_{0}, exits_other_{0};
  std::atomic<uint64_t> syscalls_{0}, pages_reset_{0}, full_resets_{0}, reset_ns_{0};
  std::atomic<uint64_t> workers_{0}, workers_failed_{0}, create_ns_{0}, create_kvm_calls_{0}, faults_{0}, timeouts_{0};
  std::atomic<uint64_t> kvm_calls_{0}, template_resident_pages_{0}, template_fds_{0}, template_files_recreated_{0},
      template_mappings_{0};
};

}  // namespace kvms::server

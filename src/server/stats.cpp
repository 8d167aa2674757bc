#include "server/stats.hpp"

#include <fmt/format.h>

namespace kvms::server {
namespace {

constexpr uint64_t kPageSize = 4096;

double per(uint64_t total, uint64_t count) { return count ? double(total) / double(count) : 0.0; }

}  // namespace

void ServerStats::add_request(const RequestCost& c) {
  requests_.fetch_add(1);
  exits_syscall_.fetch_add(c.exits_syscall);
  exits_exception_.fetch_add(c.exits_exception);
  exits_interrupted_.fetch_add(c.exits_interrupted);
  exits_other_.fetch_add(c.exits_other);
  syscalls_.fetch_add(c.syscalls);
  pages_reset_.fetch_add(c.pages_reset);
  full_resets_.fetch_add(c.full_reset ? 1 : 0);
  reset_ns_.fetch_add(c.reset_ns);
  kvm_calls_.fetch_add(c.kvm_calls);
}

std::string ServerStats::text() const {
  const uint64_t n = requests_.load();
  const uint64_t exits = exits_syscall_ + exits_exception_ + exits_interrupted_ + exits_other_;
  std::string out;
  out += fmt::format("kvmserver: stats: requests={} full_resets={} faults={} timeouts={}\n", n, full_resets_.load(),
                     faults_.load(), timeouts_.load());
  out += fmt::format(
      "kvmserver: stats: per request: vm_exits={:.1f} (syscall={:.1f} exception={:.2f} interrupted={:.2f} other={:.2f}) "
      "syscalls={:.1f} pages_reset={:.1f} bytes_copied={:.0f} kvm_calls={:.1f}\n",
      per(exits, n), per(exits_syscall_, n), per(exits_exception_, n), per(exits_interrupted_, n), per(exits_other_, n),
      per(syscalls_, n), per(pages_reset_, n), per(pages_reset_ * kPageSize, n), per(kvm_calls_, n));
  out += fmt::format(
      "kvmserver: stats: workers={} avg_worker_create_us={:.1f} worker_create_kvm_calls={:.1f} avg_reset_us={:.1f} "
      "template_resident_kib={} template_fds={} template_files_recreated={} template_mappings={}\n",
      workers_.load(), per(create_ns_, workers_) / 1000.0, per(create_kvm_calls_, workers_), per(reset_ns_, n) / 1000.0,
      template_resident_pages_.load() * (kPageSize / 1024), template_fds_.load(), template_files_recreated_.load(),
      template_mappings_.load());
  if (has_front)
    out += fmt::format("kvmserver: stats: front: client_connections={} client_requests={} rejected={} bad_gateway={} upgrades={}\n",
                       front.connections.load(), front.requests.load(), front.rejected.load(), front.bad_gateway.load(),
                       front.upgrades.load());
  return out;
}

std::string ServerStats::prometheus() const {
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t value, const char* labels = "") {
    out += fmt::format("# HELP kvmserver_{0} {1}\n# TYPE kvmserver_{0} counter\nkvmserver_{0}{2} {3}\n", name, help, labels, value);
  };
  counter("requests_total", "Guest connections served (each followed by a reset in ephemeral mode; with --isolate=request one per HTTP request).", requests_);
  out += "# HELP kvmserver_vm_exits_total VM exits while serving requests, by reason.\n# TYPE kvmserver_vm_exits_total counter\n";
  out += fmt::format("kvmserver_vm_exits_total{{reason=\"syscall\"}} {}\n", exits_syscall_.load());
  out += fmt::format("kvmserver_vm_exits_total{{reason=\"exception\"}} {}\n", exits_exception_.load());
  out += fmt::format("kvmserver_vm_exits_total{{reason=\"interrupted\"}} {}\n", exits_interrupted_.load());
  out += fmt::format("kvmserver_vm_exits_total{{reason=\"other\"}} {}\n", exits_other_.load());
  counter("guest_syscalls_total", "Guest system calls handled while serving requests.", syscalls_);
  counter("pages_reset_total", "Guest pages restored from the template by resets.", pages_reset_);
  counter("bytes_copied_total", "Bytes copied back from the template by resets.", pages_reset_ * kPageSize);
  counter("full_resets_total", "Resets that dropped every private page.", full_resets_);
  counter("kvm_calls_total", "KVM ioctls (KVM_RUN included) of the workers while serving and resetting.", kvm_calls_);
  counter("request_faults_total", "Requests that ended in a guest fault or exit.", faults_);
  counter("request_timeouts_total", "Requests stopped by --max-request-time.", timeouts_);
  counter("reset_seconds_total_ns", "Nanoseconds spent resetting workers.", reset_ns_);
  counter("workers_created_total", "Workers forked from the template.", workers_);
  out += fmt::format("# HELP kvmserver_template_resident_bytes Guest memory the paused template holds, shared by every worker.\n"
                     "# TYPE kvmserver_template_resident_bytes gauge\nkvmserver_template_resident_bytes {}\n",
                     template_resident_pages_.load() * kPageSize);
  if (has_front) {
    counter("client_connections_total", "Client connections the front accepted (--isolate=request).", front.connections);
    counter("client_requests_total", "HTTP requests read from clients (--isolate=request).", front.requests);
    counter("client_requests_rejected_total", "Requests answered by the front itself (400, 408, 413, 417, 431, 505).", front.rejected);
    counter("bad_gateway_total", "Requests whose guest answered garbage or nothing (502).", front.bad_gateway);
  }
  return out;
}

}  // namespace kvms::server

#pragma once
// A worker: one copy-on-write fork of the paused template, on its own host thread with its own VM
// and vCPU, serving connections and (ephemeral mode) reset to the template after each one.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "kvm/vm.hpp"
#include "linux/guest.hpp"
#include "linux/process.hpp"
#include "server/private_tmp.hpp"
#include "server/stats.hpp"

namespace kvms::server {

struct WorkerConfig {
  bool ephemeral = false;
  double max_request_time = 0;        // seconds, 0 = none
  uint64_t max_request_memory = 0;    // bytes the request may map beyond the template, 0 = default limit
  uint64_t reset_full_above_pages = 0;  // a reset that would copy more pages drops them all instead
  // Private /tmp (see private_tmp.hpp): the template's directory and the policy to give it to workers.
  const PrivateDir* template_tmp = nullptr;
  linux::PolicyConfig tmp_policy_base;
};

// What a worker is forked from: the paused guest, its process and its threads' vCPU states.
struct Template {
  linux::Guest* guest = nullptr;
  const linux::Process* process = nullptr;
  std::vector<linux::ThreadSnapshot> threads;
};

// The template's Process for a worker: the same state over the worker's address space, with the fds
// that must not be shared between workers replaced by private equivalents (regular files reopened at
// the same offset, eventfds/timerfds/pipes/epolls recreated); listening sockets and stdio stay shared.
std::unique_ptr<linux::Process> worker_process(const linux::Process& tmpl, std::shared_ptr<kvm::AddressSpace> mm);

class Worker : private linux::ServerHooks {
 public:
  Worker(int id, const Template& tmpl, const WorkerConfig& config, ServerStats& stats);
  ~Worker() override;
  void start();
  // Ask the worker to finish: an idle worker stops at once, a busy one after its connection.
  void stop();
  void join();
  // Joins unless the thread is still running at `deadline`; false then.
  bool join_until(std::chrono::steady_clock::time_point deadline);

 private:
  void main();
  void serve();
  void reset(bool full);
  void begin_request();
  void end_request(bool full_reset);
  bool connection_done() const;
  bool holds_connection(const linux::Process& p) const;  // p still has an fd for the connection

  bool before_wait(linux::Process& p, bool includes_listener, bool would_block) override;
  bool before_blocking_accept(linux::Process& p) override;
  bool listener_hidden(const linux::Process& p) const override;
  void on_accept(linux::Process& p, int guest_fd) override;

  int id_;
  Template tmpl_;
  WorkerConfig config_;
  ServerStats& stats_;
  std::unique_ptr<linux::Guest> guest_;
  std::unique_ptr<PrivateDir> tmp_;
  std::shared_ptr<const linux::PathPolicy> policy_;  // null: the template's
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> finished_{false};

  // The request in progress (from its first accept to the reset).
  bool busy_ = false;
  std::vector<std::weak_ptr<linux::OpenFile>> connections_;
  uint64_t request_deadline_ns_ = 0;
  linux::ExitCounters exits_at_start_;
  uint64_t syscalls_at_start_ = 0;
  uint64_t last_reset_pages_ = 0;
  bool last_reset_full_ = false;
};

}  // namespace kvms::server

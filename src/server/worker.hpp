#pragma once
// A worker: one copy-on-write fork of the paused template, on its own host thread with its own VM
// and vCPU, serving connections and (ephemeral mode) reset to the template after each one.
#include <atomic>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "kvm/vm.hpp"
#include "linux/guest.hpp"
#include "linux/process.hpp"
#include "linux/process_table.hpp"
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
  // --isolate=request: the worker's guest listens on private copies of the template's listeners,
  // which only the front connects to, one request per connection; on_ready(id) says when the
  // worker can take the next one (created, or reset after a request).
  bool request_mode = false;
  std::function<void(int)> on_ready;
  // Every request's pid (and its children's and threads') comes from here: never one seen before.
  std::shared_ptr<linux::IdSource> ids;
};

// What a worker is forked from: the paused guest, its process and its threads' vCPU states.
struct Template {
  linux::Guest* guest = nullptr;
  const linux::Process* process = nullptr;
  std::vector<linux::ThreadSnapshot> threads;
  std::vector<std::shared_ptr<linux::OpenFile>> listeners;  // its listening sockets, in fd order
  // The template's CLOCK_MONOTONIC when it paused: every request's clock starts there, so a timer
  // the template set is as far from due in every request as it was at the pause, however long the
  // template has waited since (README "Timers of a paused template").
  uint64_t paused_monotonic_ns = 0;
};

using FileReplacements = std::map<const linux::OpenFile*, std::shared_ptr<linux::OpenFile>>;

// The template's Process for a worker: the same state over the worker's address space, with the fds
// that must not be shared between workers replaced by private equivalents (regular files reopened at
// the same offset, eventfds/timerfds/pipes/epolls recreated, and whatever `replacements` names:
// a request-mode worker's private listeners); listening sockets and stdio stay shared otherwise.
std::unique_ptr<linux::Process> worker_process(const linux::Process& tmpl, std::shared_ptr<kvm::AddressSpace> mm,
                                               const FileReplacements& replacements = {});
// Whether worker_process() makes a private equivalent of f (host calls at every reset) or shares it.
bool recreated_per_worker(const linux::OpenFile& f);
// Records, once the template has paused, the host state of each file worker_process() makes again
// (OpenFile::paused_file, and a timerfd's setting): resets then copy it without host calls.
void record_paused_files(const linux::Process& tmpl);
// How many of the template's open files every reset makes again: what its fd-table rebuild costs.
size_t files_recreated_per_worker(const linux::Process& tmpl);

class Worker : private linux::ServerHooks {
 public:
  Worker(int id, const Template& tmpl, const WorkerConfig& config, ServerStats& stats);
  ~Worker() override;
  void start();
  // Ask the worker to finish: an idle worker stops at once, a busy one after its connection.
  void stop();
  // Request mode: the request in flight is given up (its client went away, or its guest answered
  // garbage): the worker is reset fully at once, if `token` (from request_token() when the request
  // was handed to it) is still its current request.
  void abort_request(uint64_t token);
  uint64_t request_token() const;
  // Request mode: where the front connects for the guest's listener `index`, and the client address
  // the guest is to see on that connection.
  const sockaddr_storage& private_address(size_t index, socklen_t& len) const;
  void show_next_peer(size_t index, const sockaddr_storage& peer, socklen_t len);
  int id() const { return id_; }
  void join();
  // Joins unless the thread is still running at `deadline`; false then.
  bool join_until(std::chrono::steady_clock::time_point deadline);

 private:
  void main();
  void serve();
  void reset(bool full);
  void make_private_listeners();
  void drain_private_listeners();  // connections left from a request given up
  void begin_request();
  void end_request(bool full_reset);
  bool connection_done() const;
  bool holds_connection(const linux::Process& p) const;  // p still has an fd for the connection

  bool before_wait(linux::Process& p, bool includes_listener, bool would_block) override;
  bool before_blocking_accept(linux::Process& p) override;
  bool listener_hidden(const linux::Process& p) const override;
  void on_accept(linux::Process& p, int guest_fd) override;
  void after_socket_close(linux::Process& p) override;

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
  std::atomic<bool> abort_{false};
  mutable std::mutex abort_mutex_;  // orders abort_request against the end of a request
  uint64_t token_ = 0;              // under abort_mutex_: counts requests handed out
  // Request mode: private copies of the template's listeners, and their host addresses.
  FileReplacements replacements_;
  std::vector<std::shared_ptr<linux::OpenFile>> private_listeners_;
  std::vector<std::pair<sockaddr_storage, socklen_t>> private_addresses_;

  // The request in progress (from its first accept to the reset).
  bool busy_ = false;
  std::vector<std::weak_ptr<linux::OpenFile>> connections_;
  uint64_t request_deadline_ns_ = 0;
  linux::ExitCounters exits_at_start_;
  uint64_t syscalls_at_start_ = 0;
  uint64_t kvm_calls_mark_ = 0;  // the guest's KVM calls at the end of the last reset
  uint64_t last_reset_pages_ = 0;
  bool last_reset_full_ = false;
};

}  // namespace kvms::server

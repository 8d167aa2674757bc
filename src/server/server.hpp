#pragma once
// Serving: the template guest is paused at its first wait for a connection; fork it into workers,
// answer signals, serve metrics, and stop cleanly.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "linux/guest.hpp"
#include "server/private_tmp.hpp"
#include "server/stats.hpp"

namespace kvms::server {

// Watches the template while it boots: pauses it the first time it is about to block waiting on a
// listening socket, unless warm-up connections are still being served.
class TemplateHooks : public linux::ServerHooks {
 public:
  bool before_wait(linux::Process& p, bool includes_listener, bool would_block) override;
  bool listener_hidden(const linux::Process&) const override { return false; }
  void on_accept(linux::Process& p, int guest_fd) override;
  // Connection mode under socket activation: the guest's listeners, in the order it listens,
  // take over the sockets systemd passed (host fds, not ours: each is dup'ed when taken).
  void inherit_listeners(std::vector<int> fds) { inherited_ = std::move(fds); }
  int take_inherited_listener(linux::Process& p, int domain) override;
  // While warming up, the template keeps serving until every warm-up request is done.
  void begin_warmup() { warming_up_ = true; }
  void end_warmup() { warming_up_ = false; }

 private:
  std::atomic<bool> warming_up_{false};
  std::vector<std::weak_ptr<linux::OpenFile>> connections_;
  std::vector<int> inherited_;
  size_t next_inherited_ = 0;
};

// `ADDR:PORT` or a Unix socket path for the template's listening sockets, comma-separated.
std::string listening_addresses(const linux::Process& p);
// "epoll", "poll", "select" or "accept": what the guest was waiting in when it paused.
std::string wait_kind(uint64_t syscall_nr);

// Sends `count` HTTP GET requests for `path`, one connection each, to the template's first listening
// socket. Returns an empty string on success, else why it failed.
std::string warm_up(const linux::Process& p, unsigned count, const std::string& path);

// Serves with the paused template (its threads as given: Guest::save_threads, or a snapshot's)
// until SIGINT/SIGTERM. Returns the exit status. template_tmp: the template's private /tmp, if it
// has one, and tmp_policy_base the policy without it.
int serve(linux::Guest& tmpl, std::vector<linux::ThreadSnapshot> threads, const cli::Options& opts, const std::string& wait,
          const PrivateDir* template_tmp, const linux::PolicyConfig& tmp_policy_base);

}  // namespace kvms::server

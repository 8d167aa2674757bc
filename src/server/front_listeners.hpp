#pragma once
// The front's listening sockets (--isolate=request), one per listener of the guest, in the order
// the guest opened them: --listen's addresses first, then the sockets systemd passed (socket
// activation: LISTEN_FDS), then the guest's own listener taken over.
#include <memory>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "linux/fd_table.hpp"

namespace kvms::server {

struct FrontListeners {
  std::vector<int> fds;            // ours to close
  std::vector<std::string> names;  // "127.0.0.1:8080", "unix:/run/x.sock", for the ready line
};

// Throws std::runtime_error with a one-line reason ("--listen=unix:/x: Address already in use").
FrontListeners front_listeners(const cli::Options& opts, const std::vector<std::shared_ptr<linux::OpenFile>>& guest_listeners);

// A listening socket of ours at ADDR:PORT or unix:PATH (--listen); throws std::runtime_error
// ("--listen=unix:/x: Address already in use").
int listen_on(const std::string& spec);

// Sockets systemd passed to us (sd_listen_fds: LISTEN_PID, LISTEN_FDS), taken once; empty when none.
const std::vector<int>& activated_sockets();

// "ADDR:PORT" or "unix:PATH" of a listening host socket.
std::string socket_name(int fd);

}  // namespace kvms::server

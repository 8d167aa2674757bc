#pragma once
// The request-isolating front (`--isolate=request`): kvmserver owns the client connections, reads
// HTTP/1.x requests off them (keep-alive, pipelined, chunked, 100-continue), and hands each request
// to a worker as a fresh connection of its own that carries exactly that request; the worker is
// reset after it, so no two requests ever share a VM state, whatever the client (or a reverse
// proxy's upstream keep-alive) does with its connection. Responses are streamed back and re-framed
// for the client (a close-delimited guest response becomes chunked for a keep-alive client).
//
// Bad input never reaches a guest: a malformed or smuggling-shaped head is 400 (505 for HTTP/2,
// 431 past --max-header-bytes), a head that takes longer than --max-header-time 408, a body past
// --max-request-body 413; a guest that answers garbage gives the client 502 and its worker a full
// reset. An Upgrade request (WebSocket) or CONNECT makes the rest of the connection one request.
//
// One thread per client connection (bounded by max_connections); every wait has a deadline.
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kvms::http {

// Where requests go: a worker's guest, reached over a connection to its private listener.
class Backend {
 public:
  virtual ~Backend() = default;
  struct Lease {
    int fd = -1;      // connected to the worker's copy of the guest's listener `listener`
    int worker = -1;
    uint64_t token = 0;  // which of the worker's requests this is (an abort must not hit the next one)
  };
  // Waits for a free worker (nullopt when the server stops first) and connects to it; the guest
  // sees `client` as its peer.
  virtual std::optional<Lease> acquire(size_t listener, const sockaddr_storage& client, socklen_t client_len) = 0;
  // The request is over on the front's side (lease.fd is closed by the caller). abort: the guest
  // misbehaved or the client went away mid-request: reset the worker fully now.
  virtual void release(const Lease& lease, bool abort) = 0;
};

struct FrontConfig {
  size_t max_header_bytes = 64 * 1024;   // --max-header-bytes
  double max_header_time = 10;           // --max-header-time: from a request's first byte to its head's end
  uint64_t max_request_body = 0;         // --max-request-body, 0 = none
  double idle_timeout = 75;              // a keep-alive connection with no request in flight
  double io_timeout = 60;                // a client or guest that neither reads nor writes
  size_t max_connections = 4096;         // client connections at once; more wait in the backlog
};

struct FrontStats {
  std::atomic<uint64_t> connections{0}, requests{0}, rejected{0}, bad_gateway{0}, upgrades{0};
};

class Front {
 public:
  // listeners: listening sockets (ours to close), each serving the guest listener of its index.
  Front(std::vector<int> listeners, Backend& backend, FrontConfig config, FrontStats& stats);
  ~Front();
  Front(const Front&) = delete;
  Front& operator=(const Front&) = delete;
  void start();
  // Stops accepting, and asks connections to finish the request in flight then close.
  void stop();
  // Waits (at most until `deadline_ms` from now) for every connection to end; false if some remain.
  bool wait(int timeout_ms);

 private:
  void accept_loop(size_t index);
  void serve_connection(int fd, size_t listener, sockaddr_storage peer, socklen_t peer_len);

  std::vector<int> listeners_;
  Backend& backend_;
  FrontConfig config_;
  FrontStats& stats_;
  std::vector<std::thread> acceptors_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  size_t active_ = 0;  // connection threads running (under mutex_)
};

}  // namespace kvms::http

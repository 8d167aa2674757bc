#include "http/front.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "http/message.hpp"

namespace kvms::http {
namespace {

constexpr size_t kBuffer = 64 * 1024;  // one read's worth each way: all a connection ever buffers
constexpr int kSliceMs = 200;          // waits wake up this often to notice a stop

uint64_t now_ms() {
  return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}
uint64_t after(double seconds) { return now_ms() + uint64_t(seconds * 1000); }

void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on Unix sockets
}

// Writes all of data by the deadline (false: the peer is gone or too slow).
bool write_all(int fd, const char* data, size_t len, uint64_t deadline) {
  while (len > 0) {
    const ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data += n;
      len -= size_t(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    const uint64_t now = now_ms();
    if (now >= deadline) return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, int(std::min<uint64_t>(deadline - now, kSliceMs)));
  }
  return true;
}
bool write_all(int fd, std::string_view s, uint64_t deadline) { return write_all(fd, s.data(), s.size(), deadline); }

// One request from head to the end of its response: the client's body streamed to the guest and
// the guest's response streamed to the client at the same time (a guest may answer before it has
// read the whole body), through one bounded buffer each way.
class Exchange {
 public:
  Exchange(int client, int guest, Parser& request, const Head& head, const FrontConfig& config)
      : client_(client), guest_(guest), request_(request), head_(head), config_(config),
        response_(Parser::Kind::Response, config.max_header_bytes) {
    response_.expect_no_body(head.method == "HEAD");
  }

  // What happened, for the connection's next step.
  struct Outcome {
    bool keep_alive = false;   // the client connection may carry the next request
    bool abort = false;        // reset the worker fully (a broken guest, a client gone mid-way)
    bool bad_gateway = false;
    bool too_large = false;
    bool bad_request = false;  // the body was malformed (chunk framing): the client gets 400
    bool response_started = false;  // bytes of the guest's response reached the client
  };

  // `pending`: client bytes already read past the head (the body's start, or a tunnel's).
  Outcome run(std::string_view pending, bool tunnel);
  // Unparsed client bytes left over after the request (the next pipelined request's start).
  std::string leftover;

 private:
  void on_request_body(const char* d, size_t n);
  void on_response_head();
  void on_response_body(const char* d, size_t n);
  void feed_request(const char* d, size_t n);
  void feed_response(const char* d, size_t n, bool eof);
  void fail_response();

  int client_, guest_;
  Parser& request_;
  const Head& head_;
  const FrontConfig& config_;
  Parser response_;
  Outcome out_;
  std::string to_guest_, to_client_;
  bool tunnel_ = false;
  bool request_done_ = false, response_done_ = false, client_eof_ = false, guest_eof_ = false;
  bool sent_to_client_ = false;  // a byte of the response has gone out: too late for a 502
  bool chunk_out_ = false;       // re-framing the response as chunked
  bool guest_gone_ = false;      // writing to the guest failed: its answer is all that is left
  uint64_t body_bytes_ = 0;
};

void Exchange::on_request_body(const char* d, size_t n) {
  body_bytes_ += n;
  if (config_.max_request_body && body_bytes_ > config_.max_request_body) {
    out_.too_large = true;
    return;
  }
  if (head_.chunked) {
    to_guest_ += chunk_header(n);
    to_guest_.append(d, n);
    to_guest_ += kChunkEnd;
  } else {
    to_guest_.append(d, n);
  }
}

void Exchange::on_response_head() {
  const Head& r = response_.head();
  const bool informational = r.status / 100 == 1;
  if (r.status == 101) {  // only an upgrade request may be answered so; then it is a tunnel
    if (!head_.upgrade) return fail_response();
    to_client_ += response_to_client(r, "", true);
    tunnel_ = true;
    return;
  }
  if (informational) {  // 103 Early Hints and its like go through; the final response follows
    to_client_ += response_to_client(r, "", true);
    return;
  }
  // The client's framing: the guest's length where it gave one; chunked in place of a
  // close-delimited body for a keep-alive HTTP/1.1 client; a HTTP/1.0 client gets the end of the
  // connection instead.
  // (The guest's own Connection header is about its connection to us, which carries one request.)
  std::string framing;
  bool keep_alive = head_.keep_alive;
  const bool bodiless = head_.method == "HEAD" || r.status == 204 || r.status == 304;
  if (bodiless) {
    if (r.content_length && r.status != 204) framing = "Content-Length: " + std::to_string(*r.content_length);
  } else if (r.content_length) {
    framing = "Content-Length: " + std::to_string(*r.content_length);
  } else if (head_.minor >= 1) {
    framing = "Transfer-Encoding: chunked";  // chunking marks the end: the connection may stay
    chunk_out_ = true;
  } else {
    keep_alive = false;
  }
  out_.keep_alive = keep_alive;
  to_client_ += response_to_client(r, framing, keep_alive);
}

void Exchange::on_response_body(const char* d, size_t n) {
  if (chunk_out_) {
    if (n == 0) return;
    to_client_ += chunk_header(n);
    to_client_.append(d, n);
    to_client_ += kChunkEnd;
  } else {
    to_client_.append(d, n);
  }
}

void Exchange::fail_response() {
  out_.abort = true;
  out_.keep_alive = false;
  response_done_ = true;
  if (!sent_to_client_) {
    out_.bad_gateway = true;
    to_client_ = error_response(502, true);
  } else {
    to_client_.clear();  // too late for a status: the client sees the connection end
  }
}

void Exchange::feed_request(const char* d, size_t n) {
  while (!request_done_) {
    size_t used = 0;
    const Parser::Event e = request_.feed(d, n, &used);
    d += used;
    n -= used;
    if (e == Parser::Event::Complete) {
      request_done_ = true;
      if (head_.chunked) to_guest_ += kLastChunk;
    } else if (e == Parser::Event::Error) {  // a broken body: the guest gets no more; the client a 400
      request_done_ = true;
      out_.abort = true;
      out_.bad_request = true;
    } else if (e == Parser::Event::NeedMore) {
      break;
    }
  }
  if (n) leftover.append(d, n);  // the next request's start (pipelining)
}

void Exchange::feed_response(const char* d, size_t n, bool eof) {
  while (!response_done_) {
    size_t used = 0;
    Parser::Event e = n ? response_.feed(d, n, &used) : Parser::Event::NeedMore;
    d += used;
    n -= used;
    if (e == Parser::Event::NeedMore && eof && n == 0) e = response_.finish();
    switch (e) {
      case Parser::Event::Head:
        on_response_head();
        if (tunnel_) {  // what follows the 101 is the new protocol's
          to_client_.append(d, n);
          return;
        }
        break;
      case Parser::Event::Complete:
        if (response_.head().status / 100 == 1) break;  // the final response is still to come
        if (chunk_out_) to_client_ += kLastChunk;
        response_done_ = true;
        break;
      case Parser::Event::Error:
        return fail_response();
      case Parser::Event::NeedMore:
        if (eof && n == 0) return fail_response();  // the guest closed before the response ended
        return;
    }
  }
}

Exchange::Outcome Exchange::run(std::string_view pending, bool tunnel) {
  tunnel_ = tunnel;
  request_.body = [this](const char* d, size_t n) { on_request_body(d, n); };
  response_.body = [this](const char* d, size_t n) { on_response_body(d, n); };
  if (tunnel_) {
    to_guest_.append(pending);
    request_done_ = true;
  } else {
    feed_request(pending.data(), pending.size());
  }
  char buf[kBuffer];
  uint64_t deadline = after(config_.io_timeout);
  while (!(response_done_ && to_client_.empty()) && !out_.too_large && !out_.bad_request) {
    if (tunnel_ && (client_eof_ || guest_eof_) && to_client_.empty() && to_guest_.empty()) break;
    // A side that has closed is left out (its POLLHUP would wake every poll).
    pollfd p[2] = {{client_eof_ && to_client_.empty() ? -1 : client_, 0, 0}, {guest_eof_ ? -1 : guest_, 0, 0}};
    // Read a side only when what it sends the other way has gone out: one buffer each way.
    const bool want_client = !client_eof_ && to_guest_.empty() && (!request_done_ || tunnel_);
    const bool want_guest = !guest_eof_ && to_client_.empty() && (!response_done_ || tunnel_);
    if (want_client) p[0].events |= POLLIN;
    if (!to_client_.empty()) p[0].events |= POLLOUT;
    if (want_guest) p[1].events |= POLLIN;
    if (!to_guest_.empty() && !guest_gone_) p[1].events |= POLLOUT;
    if (!p[0].events && !p[1].events) {  // nothing can move: the guest stopped reading an unfinished body
      out_.abort = true;
      break;
    }
    const uint64_t now = now_ms();
    if (!tunnel_ && now >= deadline) {
      out_.abort = true;
      if (!sent_to_client_ && !response_done_) {
        to_client_ = error_response(504, true);
        write_all(client_, to_client_, after(1));
      }
      break;
    }
    const int ready = ::poll(p, 2, tunnel_ ? kSliceMs : int(std::min<uint64_t>(deadline - now, kSliceMs)));
    if (ready <= 0) continue;
    bool progress = false;
    if (p[1].revents & POLLOUT) {
      const ssize_t n = ::send(guest_, to_guest_.data(), to_guest_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        to_guest_.erase(0, size_t(n));
        progress = true;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        guest_gone_ = true;  // it answered early and closed, or failed: its response decides
        to_guest_.clear();
        request_done_ = true;
        out_.keep_alive = false;
      }
    }
    if (p[0].revents & POLLOUT) {
      const ssize_t n = ::send(client_, to_client_.data(), to_client_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        to_client_.erase(0, size_t(n));
        sent_to_client_ = progress = true;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        out_.abort = true;  // the client is gone
        out_.keep_alive = false;
        break;
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR) && want_guest) {
      const ssize_t n = ::recv(guest_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0 || n == 0 || (errno != EAGAIN && errno != EINTR)) progress = true;
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) guest_eof_ = true;
      if (tunnel_) {
        if (n > 0) to_client_.append(buf, size_t(n));
      } else if (n >= 0 || guest_eof_) {
        feed_response(buf, n > 0 ? size_t(n) : 0, guest_eof_);
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR) && want_client) {
      const ssize_t n = ::recv(client_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        progress = true;
        if (tunnel_)
          to_guest_.append(buf, size_t(n));
        else
          feed_request(buf, size_t(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        client_eof_ = true;
        progress = true;
        if (!tunnel_ && !request_done_) {  // gone before it sent the whole request
          out_.abort = true;
          break;
        }
        if (tunnel_) ::shutdown(guest_, SHUT_WR);
      }
    }
    if (tunnel_ && guest_eof_ && to_client_.empty()) ::shutdown(client_, SHUT_WR);
    if (progress) deadline = after(config_.io_timeout);
  }
  request_.body = nullptr;
  out_.response_started = sent_to_client_;
  if (!request_done_ || client_eof_) out_.keep_alive = false;  // the stream is no longer in step
  if (tunnel_) out_.keep_alive = false;
  return out_;
}

// Reads from fd into buf (up to cap) by the deadline, waking every slice to look at `stop`:
// >0 bytes, 0 EOF (or an error), -1 deadline passed, -2 stopped.
ssize_t read_some(int fd, char* buf, size_t cap, uint64_t deadline, const std::atomic<bool>* stop) {
  for (;;) {
    const ssize_t n = ::recv(fd, buf, cap, MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno != EAGAIN && errno != EINTR) return 0;
    if (stop && *stop) return -2;
    const uint64_t now = now_ms();
    if (now >= deadline) return -1;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, int(std::min<uint64_t>(deadline - now, kSliceMs)));
  }
}

}  // namespace

Front::Front(std::vector<int> listeners, Backend& backend, FrontConfig config, FrontStats& stats)
    : listeners_(std::move(listeners)), backend_(backend), config_(config), stats_(stats) {
  // libhttp-parser's own bound on a head is process-wide; ours is per message and decides first.
  http_parser_set_max_header_size(uint32_t(std::max<size_t>(config_.max_header_bytes + 1024, 80 * 1024)));
}

Front::~Front() {
  stop();
  wait(10000);
  for (int fd : listeners_) ::close(fd);
}

void Front::start() {
  for (size_t i = 0; i < listeners_.size(); ++i) acceptors_.emplace_back([this, i] { accept_loop(i); });
}

void Front::stop() {
  if (stopping_.exchange(true)) return;
  for (int fd : listeners_) ::shutdown(fd, SHUT_RDWR);  // wakes accept()
  for (auto& t : acceptors_)
    if (t.joinable()) t.join();
}

bool Front::wait(int timeout_ms) {
  std::unique_lock<std::mutex> lk(mutex_);
  return changed_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return active_ == 0; });
}

void Front::accept_loop(size_t index) {
  pthread_setname_np(pthread_self(), "front accept");
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lk(mutex_);
      changed_.wait(lk, [&] { return active_ < config_.max_connections || stopping_; });
      if (stopping_) break;
    }
    // The listener may be non-blocking (the guest's own, taken over): wait for a connection first.
    pollfd pl{listeners_[index], POLLIN, 0};
    if (::poll(&pl, 1, kSliceMs) <= 0) continue;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    const int fd = ::accept4(listeners_[index], reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // out of fds for now: the backlog waits
        continue;
      }
      break;  // shut down
    }
    // Accepted sockets inherit nothing of O_NONBLOCK on Linux; the exchange uses MSG_DONTWAIT.
    {
      std::lock_guard<std::mutex> lk(mutex_);
      ++active_;
    }
    stats_.connections.fetch_add(1);
    std::thread([this, fd, index, peer, len] {
      pthread_setname_np(pthread_self(), "front conn");
      serve_connection(fd, index, peer, len);
      ::close(fd);
      std::lock_guard<std::mutex> lk(mutex_);
      --active_;
      changed_.notify_all();
    }).detach();
  }
}

void Front::serve_connection(int fd, size_t listener, sockaddr_storage peer, socklen_t peer_len) {
  no_delay(fd);
  Parser request(Parser::Kind::Request, config_.max_header_bytes);
  std::string pending;  // client bytes read and not parsed yet
  char buf[kBuffer];
  for (;;) {
    // The next request's head: the connection may idle until one starts, then the head must be
    // complete within --max-header-time.
    bool started = !pending.empty();
    uint64_t deadline = started ? after(config_.max_header_time) : after(config_.idle_timeout);
    Parser::Event e = Parser::Event::NeedMore;
    for (;;) {
      size_t used = 0;
      e = request.feed(pending.data(), pending.size(), &used);
      pending.erase(0, used);
      if (e != Parser::Event::NeedMore) break;
      const ssize_t n = read_some(fd, buf, sizeof buf, deadline, started ? nullptr : &stopping_);
      if (n == -1 && started) {
        stats_.rejected.fetch_add(1);
        write_all(fd, error_response(408, true), after(1));
        return;
      }
      if (n <= 0) return;  // closed, idle too long, or stopping between requests
      if (!started) {
        started = true;
        deadline = after(config_.max_header_time);
      }
      pending.append(buf, size_t(n));
    }
    if (e == Parser::Event::Error) {
      stats_.rejected.fetch_add(1);
      write_all(fd, error_response(request.error().status, true), after(1));
      return;
    }
    const Head head = request.head();
    stats_.requests.fetch_add(1);
    // RFC 9112 3.2: a HTTP/1.1 request has exactly one Host, a HTTP/1.0 one at most.
    size_t hosts = 0;
    for (const auto& h : head.headers) hosts += same_name(h.name, "host");
    if (hosts > 1 || (hosts == 0 && head.minor >= 1)) {
      stats_.rejected.fetch_add(1);
      write_all(fd, error_response(400, true), after(1));
      return;
    }
    // Expectations and limits, before a worker is taken.
    bool expects_continue = false;
    if (const std::string* expect = head.find("expect")) {
      if (!same_name(*expect, "100-continue")) {
        stats_.rejected.fetch_add(1);
        write_all(fd, error_response(417, true), after(1));
        return;
      }
      expects_continue = true;
    }
    if (config_.max_request_body && head.content_length && *head.content_length > config_.max_request_body) {
      stats_.rejected.fetch_add(1);
      write_all(fd, error_response(413, true), after(1));
      return;
    }
    auto lease = backend_.acquire(listener, peer, peer_len);
    if (!lease) {
      write_all(fd, error_response(503, true), after(1));
      return;
    }
    no_delay(lease->fd);
    if (head.upgrade) stats_.upgrades.fetch_add(1);
    const bool has_body = head.chunked || (head.content_length && *head.content_length > 0);
    std::string framing;
    if (head.chunked)
      framing = "Transfer-Encoding: chunked";
    else if (head.content_length && !head.upgrade)
      framing = "Content-Length: " + std::to_string(*head.content_length);
    Exchange::Outcome out;
    if (!write_all(lease->fd, request_to_guest(head, framing), after(config_.io_timeout))) {
      out.abort = true;
      write_all(fd, error_response(502, true), after(1));
      stats_.bad_gateway.fetch_add(1);
    } else {
      if (expects_continue && has_body) write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", after(config_.io_timeout));
      Exchange exchange(fd, lease->fd, request, head, config_);
      out = exchange.run(pending, head.upgrade);
      pending = std::move(exchange.leftover);
      if ((out.too_large || out.bad_request) && !out.response_started) {
        stats_.rejected.fetch_add(1);
        write_all(fd, error_response(out.too_large ? 413 : 400, true), after(1));
      }
      if (out.bad_gateway) stats_.bad_gateway.fetch_add(1);
    }
    ::close(lease->fd);
    backend_.release(*lease, out.abort || out.too_large || out.bad_request);
    if (!out.keep_alive || out.too_large || out.bad_request || stopping_) return;
  }
}

}  // namespace kvms::http

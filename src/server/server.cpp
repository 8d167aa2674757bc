#include "server/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "server/sandbox.hpp"
#include "http/front.hpp"
#include "server/front_listeners.hpp"
#include "server/request_router.hpp"
#include "linux/epoll.hpp"
#include "linux/process_table.hpp"
#include "linux/syscalls.hpp"
#include "server/worker.hpp"

namespace kvms::server {
namespace {

constexpr uint64_t kDefaultResetFullAboveMb = 128;
constexpr int kStopGraceSeconds = 10;
constexpr int kFirstRequestPid = 1000;  // requests' pids start here (the template's are small)

std::string describe(const sockaddr_storage& ss, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
    if (len <= offsetof(sockaddr_un, sun_path)) return "unix:(unnamed)";
    if (un->sun_path[0] == 0) return "@" + std::string(un->sun_path + 1, len - offsetof(sockaddr_un, sun_path) - 1);
    return un->sun_path;
  }
  return "?";
}

std::vector<std::shared_ptr<linux::OpenFile>> listeners(const linux::Process& p) {
  std::vector<std::shared_ptr<linux::OpenFile>> out;
  for (int fd : p.fds.fds())
    if (auto f = p.fds.get(fd); f->listening && std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  return out;
}

bool open_connections(std::vector<std::weak_ptr<linux::OpenFile>>& conns) {
  std::erase_if(conns, [](const auto& w) { return w.expired(); });
  return !conns.empty();
}

// Connects to a listening socket of ours as a client would (wildcard addresses become loopback).
int connect_to(const linux::OpenFile& listener) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(listener.host_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    if (in->sin_addr.s_addr == htonl(INADDR_ANY)) in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) in6->sin6_addr = in6addr_loopback;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void serve_metrics(const cli::Options& opts, const ServerStats& stats, std::atomic<bool>& stopping, int& listen_fd);

}  // namespace

bool TemplateHooks::before_wait(linux::Process& p, bool includes_listener, bool would_block) {
  if (!includes_listener || !would_block) return false;
  if (warming_up_ || open_connections(connections_)) return false;
  p.pause = true;
  return true;
}

void TemplateHooks::on_accept(linux::Process& p, int guest_fd) { connections_.push_back(p.fds.get(guest_fd)); }

int TemplateHooks::take_inherited_listener(linux::Process&, int domain) {
  if (next_inherited_ >= inherited_.size()) return -1;
  const int fd = inherited_[next_inherited_];
  int family = 0;
  socklen_t len = sizeof family;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0 || family != domain) return -1;
  ++next_inherited_;
  return ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

std::string listening_addresses(const linux::Process& p) {
  std::string out;
  for (const auto& f : listeners(p)) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(f->host_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) continue;
    if (!out.empty()) out += ", ";
    out += ss.ss_family == AF_UNIX && f->path.rfind("unix:", 0) == 0 ? f->path.substr(5) : describe(ss, len);
  }
  return out.empty() ? "?" : out;
}

std::string wait_kind(uint64_t nr) {
  switch (nr) {
    case SYS_epoll_wait: case SYS_epoll_pwait: case SYS_epoll_pwait2: return "epoll";
    case SYS_poll: case SYS_ppoll: return "poll";
    case SYS_select: case SYS_pselect6: return "select";
    case SYS_accept: case SYS_accept4: return "accept";
    default: return "syscall " + std::to_string(nr);
  }
}

std::string warm_up(const linux::Process& p, unsigned count, const std::string& path) {
  auto ls = listeners(p);
  if (ls.empty()) return "no listening socket";
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kvmserver-warmup\r\nConnection: close\r\n\r\n";
  for (unsigned i = 0; i < count; ++i) {
    int fd = connect_to(*ls.front());
    if (fd < 0) return std::string("cannot connect: ") + strerror(errno);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != ssize_t(request.size())) {
      close(fd);
      return "cannot send the warm-up request";
    }
    char buf[4096];
    ssize_t n, total = 0;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) total += n;
    close(fd);
    if (total == 0) return "no response to warm-up request " + std::to_string(i + 1);
  }
  return "";
}

int serve(linux::Guest& tmpl, std::vector<linux::ThreadSnapshot> threads, const cli::Options& opts, const std::string& wait,
          const PrivateDir* template_tmp, const linux::PolicyConfig& tmp_policy_base) {
  linux::Process& tp = tmpl.process();
  tp.server = nullptr;
  Template t{&tmpl, &tp, std::move(threads), listeners(tp)};
  t.paused_monotonic_ns = uint64_t(linux::guest_now_ns(tp, CLOCK_MONOTONIC));
  record_paused_files(tp);
  WorkerConfig wc;
  wc.ephemeral = opts.ephemeral;
  wc.max_request_time = opts.max_request_time.value_or(0);
  wc.max_request_memory = opts.max_request_memory_mb.value_or(0) << 20;
  wc.reset_full_above_pages = (opts.reset_full_above_mb.value_or(kDefaultResetFullAboveMb) << 20) / 4096;
  wc.template_tmp = template_tmp;
  wc.tmp_policy_base = tmp_policy_base;
  wc.ids = std::make_shared<linux::IdSource>(kFirstRequestPid);
  // --isolate=request: kvmserver's front owns the clients' connections and leases workers per request.
  std::unique_ptr<RequestRouter> router;
  if (opts.isolate_requests) {
    router = std::make_unique<RequestRouter>();
    wc.request_mode = true;
    wc.on_ready = [r = router.get()](int id) { r->ready(id); };
  }

  // Signals are taken synchronously by this thread; workers inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ServerStats stats;
  stats.set_template(tmpl.memory().resident_pages(), tp.fds.open_count(), files_recreated_per_worker(tp), tp.mm().mappings().size());
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < opts.threads; ++i) {
    workers.push_back(std::make_unique<Worker>(int(i), t, wc, stats));
    if (router) router->add(workers.back().get());
    workers.back()->start();
  }
  for (int waited = 0; stats.workers_created() + stats.workers_failed() < opts.threads && waited < 60000; ++waited)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (stats.workers_created() == 0) {
    std::fprintf(stderr, "kvmserver: no worker could be started\n");
    for (auto& w : workers) w->stop();
    return 125;
  }
  std::unique_ptr<http::Front> front;
  std::string addresses = listening_addresses(tp);
  if (router) {
    FrontListeners fl;
    try {
      fl = front_listeners(opts, t.listeners);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvmserver: %s\n", e.what());
      router->stop();
      for (auto& w : workers) w->stop();
      return 2;
    }
    http::FrontConfig fc;
    fc.max_header_bytes = opts.max_header_bytes;
    fc.max_header_time = opts.max_header_time;
    fc.max_request_body = opts.max_request_body_mb << 20;
    addresses.clear();
    for (const auto& n : fl.names) addresses += (addresses.empty() ? "" : ", ") + n;
    stats.has_front = true;
    front = std::make_unique<http::Front>(std::move(fl.fds), *router, fc, stats.front);
    front->start();
  }
  const uint64_t created = stats.workers_created();
  std::fprintf(stderr, "kvmserver: ready: %s listening on %s (%s), %llu worker%s, %s%s\n", opts.program.c_str(),
               addresses.c_str(), wait.c_str(), (unsigned long long)created, created == 1 ? "" : "s",
               opts.ephemeral ? "ephemeral" : "persistent", router ? ", per request" : "");

  std::atomic<bool> stopping{false};
  int metrics_fd = -1;
  std::thread metrics;
  if (!opts.metrics.empty()) metrics = std::thread([&] { serve_metrics(opts, stats, stopping, metrics_fd); });
  // This thread only waits for signals from now on, then stops the workers and cleans up.
  restrict_this_thread(opts, jail::FilterRole::SignalThread);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      std::fputs(stats.text().c_str(), stderr);
      continue;
    }
    break;
  }
  std::fprintf(stderr, "kvmserver: stopping: finishing requests in progress (at most %d s)\n", kStopGraceSeconds);
  stopping = true;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(kStopGraceSeconds);
  if (front) {  // no new connections; requests in flight finish first, then their workers stop
    front->stop();
    front->wait(kStopGraceSeconds * 1000);
    router->stop();
  }
  for (auto& w : workers) w->stop();
  bool all_joined = true;
  for (auto& w : workers)
    if (!w->join_until(give_up)) all_joined = false;
  if (metrics_fd >= 0) shutdown(metrics_fd, SHUT_RDWR);
  if (metrics.joinable()) metrics.join();
  if (opts.stats) std::fputs(stats.text().c_str(), stderr);
  if (!all_joined) {
    std::fprintf(stderr, "kvmserver: requests still running after %d s: exiting anyway\n", kStopGraceSeconds);
    std::fflush(stderr);
    _exit(0);
  }
  return 0;
}

namespace {

void serve_metrics(const cli::Options& opts, const ServerStats& stats, std::atomic<bool>& stopping, int& listen_fd) {
  pthread_setname_np(pthread_self(), "metrics");
  try {
    restrict_this_thread(opts, jail::FilterRole::MetricsThread);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: --metrics: %s\n", e.what());
    return;
  }
  const std::string& address = opts.metrics;
  const auto colon = address.rfind(':');
  std::string host = colon == std::string::npos ? "127.0.0.1" : address.substr(0, colon);
  const int port = std::atoi(address.substr(colon == std::string::npos ? 0 : colon + 1).c_str());
  if (host.empty() || host == "*") host = "0.0.0.0";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, 16) != 0) {
    std::fprintf(stderr, "kvmserver: --metrics=%s: cannot listen: %s\n", address.c_str(), strerror(errno));
    close(fd);
    return;
  }
  listen_fd = fd;
  while (!stopping) {
    int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char buf[2048];
    (void)recv(c, buf, sizeof buf, 0);
    const std::string body = stats.prometheus();
    const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    (void)send(c, response.data(), response.size(), MSG_NOSIGNAL);
    close(c);
  }
  close(fd);
}

}  // namespace

}  // namespace kvms::server

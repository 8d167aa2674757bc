#include "server/front_listeners.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace kvms::server {
namespace {

[[noreturn]] void refuse(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}


}  // namespace

int listen_on(const std::string& spec) {
  constexpr int kBacklog = 1024;
  if (spec.rfind("unix:", 0) == 0) {
    const std::string path = spec.substr(5);
    sockaddr_un un{};
    if (path.size() >= sizeof un.sun_path) throw std::runtime_error("--listen=" + spec + ": path too long");
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) refuse("--listen=" + spec);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0 || ::listen(fd, kBacklog) != 0) {
      const int err = errno;
      ::close(fd);
      errno = err;
      refuse("--listen=" + spec);
    }
    return fd;
  }
  const size_t colon = spec.rfind(':');
  std::string host = spec.substr(0, colon), port = spec.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("--listen=" + spec + ": " + gai_strerror(rc));
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, kBacklog) != 0) {
    const int err = errno;
    ::freeaddrinfo(res);
    if (fd >= 0) ::close(fd);
    errno = err;
    refuse("--listen=" + spec);
  }
  ::freeaddrinfo(res);
  return fd;
}

// systemd's socket-activation protocol (sd_listen_fds(3)): when LISTEN_PID is our pid, LISTEN_FDS
// fds from 3 up were passed to us. The variables are unset (nothing else is to see them) and every
// passed fd made close-on-exec, as sd_listen_fds(1) does. Read here rather than through libsystemd,
// so that a -DKVMS_STATIC=ON build can be fully static: Debian ships no static libsystemd.
constexpr int kFirstPassedFd = 3;

int passed_fd_count() {
  const char* pid_text = std::getenv("LISTEN_PID");
  const char* count_text = std::getenv("LISTEN_FDS");
  const std::string pid = pid_text ? pid_text : "", count = count_text ? count_text : "";
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  char* end = nullptr;
  const long for_pid = std::strtol(pid.c_str(), &end, 10);
  if (pid.empty() || *end || for_pid != ::getpid()) return 0;
  const long n = std::strtol(count.c_str(), &end, 10);
  if (count.empty() || *end || n <= 0 || n > INT_MAX - kFirstPassedFd) return 0;  // as sd_listen_fds refuses it
  // No fd lies at or above the open-files limit: a larger count (a hostile environment's
  // LISTEN_FDS=2000000000) would only make the caller probe fds that cannot exist.
  const long open_max = ::sysconf(_SC_OPEN_MAX);
  return int(std::min(n, open_max > kFirstPassedFd ? open_max - kFirstPassedFd : 0L));
}

bool listening_stream_socket(int fd) {
  int type = 0, listening = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return false;
  len = sizeof listening;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening;
}

const std::vector<int>& activated_sockets() {
  static const std::vector<int> fds = [] {
    std::vector<int> out;
    const int n = passed_fd_count();
    for (int fd = kFirstPassedFd; fd < kFirstPassedFd + n; ++fd) {
      if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) continue;  // not open after all
      if (listening_stream_socket(fd)) out.push_back(fd);
    }
    return out;
  }();
  return fds;
}

std::string socket_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  auto* un = reinterpret_cast<sockaddr_un*>(&ss);
  if (len > offsetof(sockaddr_un, sun_path) && un->sun_path[0]) return "unix:" + std::string(un->sun_path);
  return "unix:(abstract)";
}

FrontListeners front_listeners(const cli::Options& opts, const std::vector<std::shared_ptr<linux::OpenFile>>& guest_listeners) {
  if (opts.listen.size() > guest_listeners.size())
    throw std::runtime_error("--listen given " + std::to_string(opts.listen.size()) + " times, but the program listens on " +
                             std::to_string(guest_listeners.size()) + " socket(s)");
  FrontListeners out;
  const auto& activated = activated_sockets();
  size_t next_activated = 0;
  for (size_t i = 0; i < guest_listeners.size(); ++i) {
    int fd;
    if (i < opts.listen.size()) {
      fd = listen_on(opts.listen[i]);
    } else if (next_activated < activated.size()) {
      fd = ::fcntl(activated[next_activated++], F_DUPFD_CLOEXEC, 3);
    } else {
      fd = ::fcntl(guest_listeners[i]->host_fd, F_DUPFD_CLOEXEC, 3);  // the guest's address: clients keep it
    }
    if (fd < 0) refuse("front listener");
    out.fds.push_back(fd);
    out.names.push_back(socket_name(fd));
  }
  return out;
}

}  // namespace kvms::server

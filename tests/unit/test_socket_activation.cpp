// Socket activation (src/server/front_listeners.cpp, activated_sockets()): systemd's protocol read
// by kvmserver itself (sd_listen_fds(3)): the listening stream sockets among LISTEN_FDS fds from 3
// when LISTEN_PID is ours, the variables unset, the fds close-on-exec. Each case in a child: the
// answer is taken once per process.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "child_process.hpp"
#include "server/front_listeners.hpp"

namespace kvms::server {
namespace {

// In the child: fd 3 a listening TCP socket, fd 4 a pipe, fd 5 a bound but not listening socket.
void pass_fds() {
  for (int fd = 3; fd < 64; ++fd) ::close(fd);
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(listener, 4);
  ::dup2(listener, 3);
  int ends[2];
  ::pipe(ends);
  ::dup2(ends[0], 4);
  int quiet = ::socket(AF_INET, SOCK_STREAM, 0);
  ::dup2(quiet, 5);
  for (int fd : {listener, ends[0], ends[1], quiet})
    if (fd > 5) ::close(fd);
}

TEST(SocketActivation, TakesTheListeningSocketsPassedToUs) {
  auto r = test::run_in_child([] {
    pass_fds();
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "3", 1);
    ::setenv("LISTEN_FDNAMES", "a:b:c", 1);
    const auto& fds = activated_sockets();
    if (fds.size() != 1 || fds[0] != 3) return 1;
    if (std::getenv("LISTEN_PID") || std::getenv("LISTEN_FDS") || std::getenv("LISTEN_FDNAMES")) return 2;
    for (int fd : {3, 4, 5})
      if (!(::fcntl(fd, F_GETFD) & FD_CLOEXEC)) return 3;
    if (&activated_sockets() != &fds || activated_sockets().size() != 1) return 4;  // taken once
    return 0;
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
}

TEST(SocketActivation, IgnoresVariablesMeantForAnotherProcessOrMalformed) {
  for (const auto& [pid, count] : {std::pair<std::string, std::string>{"1", "1"}, {"self", "x"}, {"self", "-1"},
                                   {"self", ""}, {"", "1"}, {"self", "99999999999"}}) {
    auto r = test::run_in_child([pid = pid, count = count] {
      pass_fds();
      ::setenv("LISTEN_PID", pid == "self" ? std::to_string(::getpid()).c_str() : pid.c_str(), 1);
      ::setenv("LISTEN_FDS", count.c_str(), 1);
      if (!activated_sockets().empty()) return 1;
      return std::getenv("LISTEN_FDS") ? 2 : 0;
    });
    EXPECT_TRUE(r.exited(0)) << "LISTEN_PID=" << pid << " LISTEN_FDS=" << count << ": " << r.describe();
  }
}

// A count far beyond any fd that can exist (hostile or broken environment): the fds that are there
// are still taken, and it takes no longer than a small count (no probing of two billion fds).
TEST(SocketActivation, AHugeCountIsBoundedByTheOpenFilesLimit) {
  auto r = test::run_in_child([] {
    pass_fds();
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "2000000000", 1);
    const auto& fds = activated_sockets();
    return fds.size() == 1 && fds[0] == 3 ? 0 : 1;
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
}

}  // namespace
}  // namespace kvms::server

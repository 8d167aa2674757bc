// epoll, poll, select, eventfd and timerfd handlers called directly over a real AddressSpace (no KVM),
// with host pipes, eventfds and sockets in the guest's fd table; clone_* for workers; ServerHooks.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/epoll.hpp"
#include "linux/fd_table.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kBase = 0x100000;
constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kUnmapped = 0x400000;

struct GuestTimespec {
  int64_t sec, nsec;
};
struct GuestTimeval {
  int64_t sec, usec;
};
struct __attribute__((packed)) GuestEpollEvent {
  uint32_t events;
  uint64_t data;
};
static_assert(sizeof(GuestEpollEvent) == 12);

int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

class FakeHooks : public ServerHooks {
 public:
  bool before_wait(Process&, bool includes_listener, bool would_block) override {
    ++calls;
    last_listener = includes_listener;
    last_block = would_block;
    return take_over;
  }
  bool listener_hidden(const Process&) const override { return hidden; }
  void on_accept(Process&, int) override {}

  int calls = 0;
  bool last_listener = false, last_block = false;
  bool take_over = false, hidden = false;
};

class EpollSyscalls : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mem = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem);
    ASSERT_EQ(as_->map(kBase, kSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    p_ = std::make_unique<Process>(as_, nullptr, ProcessConfig{});
  }

  Process& p() { return *p_; }

  int64_t call(int64_t (*fn)(Process&, const SyscallArgs&), uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0,
               uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0) {
    SyscallArgs a;
    a.a[0] = a0, a.a[1] = a1, a.a[2] = a2, a.a[3] = a3, a.a[4] = a4, a.a[5] = a5;
    return fn(*p_, a);
  }

  // A host pipe as two guest fds {read, write}.
  std::pair<int, int> pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    int r = p().fds.install(std::make_shared<OpenFile>(fds[0], OpenFile::Kind::Pipe, "pipe:[r]", O_RDONLY), false);
    int w = p().fds.install(std::make_shared<OpenFile>(fds[1], OpenFile::Kind::Pipe, "pipe:[w]", O_WRONLY), false);
    return {r, w};
  }
  int host_fd(int guest_fd) { return p().fds.get(guest_fd)->host_fd; }
  void put(int guest_fd, const char* s) { ASSERT_EQ(::write(host_fd(guest_fd), s, strlen(s)), ssize_t(strlen(s))); }

  // A listening TCP socket on 127.0.0.1 (OpenFile::listening set), and its port.
  int listener(uint16_t* port = nullptr) {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    EXPECT_GE(s, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(s, 8), 0);
    socklen_t len = sizeof addr;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
    if (port) *port = ntohs(addr.sin_port);
    auto f = std::make_shared<OpenFile>(s, OpenFile::Kind::Socket, "socket:[l]", O_RDWR | O_NONBLOCK);
    f->listening = true;
    return p().fds.install(std::move(f), false);
  }
  // A pending connection to the listener, so that it is readable.
  int connect_to(uint16_t port) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return c;
  }

  template <typename T> void poke(uint64_t addr, const T& v) { ASSERT_TRUE(as_->write(addr, v)); }
  template <typename T> T peek(uint64_t addr) {
    T v{};
    EXPECT_TRUE(as_->read(addr, v));
    return v;
  }

  int64_t ctl(int epfd, int op, int fd, uint32_t events, uint64_t data, uint64_t ev_addr = kBase + 0x100) {
    poke(ev_addr, GuestEpollEvent{events, data});
    return call(sys_epoll_ctl, epfd, op, fd, ev_addr);
  }

  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> p_;
};

// ---- epoll ---------------------------------------------------------------------------------------

TEST_F(EpollSyscalls, CreateFlags) {
  EXPECT_EQ(call(sys_epoll_create, 0), -EINVAL);
  EXPECT_EQ(call(sys_epoll_create1, 0x1234), -EINVAL);
  int64_t a = call(sys_epoll_create, 1);
  ASSERT_GE(a, 0);
  EXPECT_FALSE(p().fds.cloexec(int(a)));
  int64_t b = call(sys_epoll_create1, EPOLL_CLOEXEC);
  ASSERT_GE(b, 0);
  EXPECT_TRUE(p().fds.cloexec(int(b)));
  EXPECT_EQ(p().fds.get(int(b))->kind, OpenFile::Kind::Epoll);
}

TEST_F(EpollSyscalls, CtlErrors) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), 0);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), -EEXIST);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_MOD, w, EPOLLOUT, 2), -ENOENT);
  EXPECT_EQ(call(sys_epoll_ctl, ep, EPOLL_CTL_DEL, w, 0), -ENOENT);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, ep, EPOLLIN, 3), -EINVAL);      // itself
  EXPECT_EQ(ctl(r, EPOLL_CTL_ADD, w, EPOLLOUT, 3), -EINVAL);       // not an epoll
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, 77, EPOLLIN, 3), -EBADF);       // fd not open
  EXPECT_EQ(ctl(78, EPOLL_CTL_ADD, w, EPOLLIN, 3), -EBADF);        // epfd not open
  EXPECT_EQ(ctl(ep, 99, w, EPOLLIN, 3), -EINVAL);                  // bad op
  EXPECT_EQ(call(sys_epoll_ctl, ep, EPOLL_CTL_ADD, w, kUnmapped), -EFAULT);
  EXPECT_EQ(call(sys_epoll_ctl, ep, EPOLL_CTL_DEL, r, kUnmapped), 0);  // DEL reads no event
  EXPECT_EQ(call(sys_epoll_ctl, ep, EPOLL_CTL_DEL, r, 0), -ENOENT);
  // EPOLLEXCLUSIVE: not with MOD, nor with other bits than in/out/err/hup/et.
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN | EPOLLPRI | EPOLLEXCLUSIVE, 1), -EINVAL);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN | EPOLLEXCLUSIVE, 1), 0);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_MOD, r, EPOLLIN | EPOLLEXCLUSIVE, 1), -EINVAL);

  // Regular files cannot be polled.
  int file = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  int gf = p().fds.install(std::make_shared<OpenFile>(file, OpenFile::Kind::Regular, "/exe", O_RDONLY), false);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, gf, EPOLLIN, 3), -EPERM);
}

TEST_F(EpollSyscalls, InterestListFollowsCtl) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  auto& list = p().fds.get(ep)->epoll_interest;
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 11), 0);
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, w, EPOLLOUT | EPOLLET, 22), 0);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].guest_fd, r);
  EXPECT_EQ(list[0].events, uint32_t(EPOLLIN));
  EXPECT_EQ(list[0].data, 11u);
  EXPECT_EQ(list[1].events, uint32_t(EPOLLOUT | EPOLLET));
  ASSERT_EQ(ctl(ep, EPOLL_CTL_MOD, r, EPOLLIN | EPOLLRDHUP, 33), 0);
  EXPECT_EQ(list[0].events, uint32_t(EPOLLIN | EPOLLRDHUP));
  EXPECT_EQ(list[0].data, 33u);
  ASSERT_EQ(call(sys_epoll_ctl, ep, EPOLL_CTL_DEL, w, 0), 0);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].guest_fd, r);
}

TEST_F(EpollSyscalls, WaitReturnsGuestData) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 0xdeadbeefcafe1234ull), 0);
  const uint64_t events = kBase + 0x1000;
  EXPECT_EQ(call(sys_epoll_wait, ep, events, 8, 0), 0);
  put(w, "x");
  ASSERT_EQ(call(sys_epoll_wait, ep, events, 8, 0), 1);
  auto ev = peek<GuestEpollEvent>(events);
  EXPECT_EQ(ev.events, uint32_t(EPOLLIN));
  EXPECT_EQ(ev.data, 0xdeadbeefcafe1234ull);
  // epoll_pwait with a signal mask, epoll_pwait2 with a timespec.
  poke(kBase + 0x200, uint64_t(0));
  ASSERT_EQ(call(sys_epoll_pwait, ep, events, 8, -1, kBase + 0x200, 8), 1);
  poke(kBase + 0x300, GuestTimespec{1, 0});
  ASSERT_EQ(call(sys_epoll_pwait2, ep, events, 8, kBase + 0x300, 0, 0), 1);
  EXPECT_EQ(peek<GuestEpollEvent>(events).data, 0xdeadbeefcafe1234ull);
}

TEST_F(EpollSyscalls, WaitErrors) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  const uint64_t events = kBase + 0x1000;
  EXPECT_EQ(call(sys_epoll_wait, ep, events, 0, 0), -EINVAL);
  EXPECT_EQ(call(sys_epoll_wait, ep, events, uint64_t(-1), 0), -EINVAL);
  EXPECT_EQ(call(sys_epoll_wait, ep, events, INT_MAX / 12 + 1, 0), -EINVAL);
  EXPECT_EQ(call(sys_epoll_wait, ep, kUnmapped, 4, 0), -EFAULT);
  EXPECT_EQ(call(sys_epoll_wait, ep, kBase + kSize - 12, 2, 0), -EFAULT);  // runs off the mapping
  EXPECT_EQ(call(sys_epoll_wait, 55, events, 4, 0), -EBADF);
  EXPECT_EQ(call(sys_epoll_wait, r, events, 4, 0), -EINVAL);
  EXPECT_EQ(call(sys_epoll_pwait, ep, events, 4, 0, kBase + 0x200, 7), -EINVAL);
  EXPECT_EQ(call(sys_epoll_pwait, ep, events, 4, 0, kUnmapped, 8), -EFAULT);
  EXPECT_EQ(call(sys_epoll_pwait, ep, events, 4, 0, 0, 7), 0);  // no mask: size unchecked
  poke(kBase + 0x300, GuestTimespec{0, 1000000000});
  EXPECT_EQ(call(sys_epoll_pwait2, ep, events, 4, kBase + 0x300, 0, 0), -EINVAL);
  EXPECT_EQ(call(sys_epoll_pwait2, ep, events, 4, kUnmapped, 0, 0), -EFAULT);
}

// A lattice of nested epolls, each level watching every epoll of the next, 5 deep (the host takes
// it: EP_MAX_NESTS, and the tree's 65536 watches hold 150 + 3 * 150^2): a wait looks at each epoll
// once, not at each of the 150^4 paths through the lattice. The interest lists are filled directly
// (what epoll_ctl records), since building it through the host takes it seconds.
TEST_F(EpollSyscalls, NestedEpollLatticeCostsItsSizeNotItsPaths) {
  constexpr int kWidth = 150, kLevels = 4;
  std::vector<std::vector<int>> level(kLevels + 1);
  level[0].push_back(int(call(sys_epoll_create1, 0)));
  for (int l = 1; l <= kLevels; ++l)
    for (int i = 0; i < kWidth; ++i) level[l].push_back(int(call(sys_epoll_create1, 0)));
  for (int l = 0; l < kLevels; ++l)
    for (int outer : level[l])
      for (int inner : level[l + 1]) p().fds.get(outer)->epoll_interest.push_back({inner, EPOLLIN, 0});
  const int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_epoll_wait, level[0][0], kBase + 0x1000, 16, 0), 0);
  EXPECT_LT(now_ms() - t0, 1000);
}

TEST_F(EpollSyscalls, WaitTimeouts) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), 0);
  const uint64_t events = kBase + 0x1000;
  int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_epoll_wait, ep, events, 4, 60), 0);
  EXPECT_GE(now_ms() - t0, 55);
  poke(kBase + 0x300, GuestTimespec{0, 40000000});
  t0 = now_ms();
  EXPECT_EQ(call(sys_epoll_pwait2, ep, events, 4, kBase + 0x300, 0, 0), 0);
  EXPECT_GE(now_ms() - t0, 35);
  EXPECT_LT(now_ms() - t0, 2000);
}

TEST_F(EpollSyscalls, StaleEntryAfterCloseAndReuse) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), 0);
  // The guest closes r without EPOLL_CTL_DEL; a new pipe reuses the number.
  ASSERT_EQ(p().fds.close(r), 0);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ASSERT_EQ(p().fds.install_at(r, std::make_shared<OpenFile>(fds[0], OpenFile::Kind::Pipe, "pipe:[r2]", O_RDONLY), false), r);
  int w2 = p().fds.install(std::make_shared<OpenFile>(fds[1], OpenFile::Kind::Pipe, "pipe:[w2]", O_WRONLY), false);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 2), 0);
  EXPECT_EQ(p().fds.get(ep)->epoll_interest.size(), 1u);
  put(w2, "y");
  const uint64_t events = kBase + 0x1000;
  ASSERT_EQ(call(sys_epoll_wait, ep, events, 4, 0), 1);
  EXPECT_EQ(peek<GuestEpollEvent>(events).data, 2u);
}

TEST_F(EpollSyscalls, ForgetFdOnLastClose) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), 0);
  // Another reference to the same file (held, as a template process would): the host keeps the
  // registration unless we remove it.
  auto held = p().fds.get(r);
  epoll_forget_fd(p(), r);
  ASSERT_EQ(p().fds.close(r), 0);
  EXPECT_TRUE(p().fds.get(ep)->epoll_interest.empty());
  put(w, "z");
  EXPECT_EQ(call(sys_epoll_wait, ep, kBase + 0x1000, 4, 0), 0);
}

TEST_F(EpollSyscalls, ForgetFdKeepsDupedFile) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), 0);
  int dup = p().fds.install(p().fds.get(r), false);
  epoll_forget_fd(p(), r);
  ASSERT_EQ(p().fds.close(r), 0);
  EXPECT_EQ(p().fds.get(ep)->epoll_interest.size(), 1u);
  put(w, "z");
  EXPECT_EQ(call(sys_epoll_wait, ep, kBase + 0x1000, 4, 0), 1);
  (void)dup;
}

// ---- poll ----------------------------------------------------------------------------------------

TEST_F(EpollSyscalls, PollPipes) {
  auto [r, w] = pipe();
  const uint64_t fds = kBase + 0x2000;
  pollfd set[4] = {{r, POLLIN, 0}, {w, POLLOUT, 0}, {-1, POLLIN, 0}, {90, POLLIN, 0}};
  ASSERT_TRUE(as_->copy_to_user(fds, set, sizeof set));
  EXPECT_EQ(call(sys_poll, fds, 4, 1000), 2);  // writable + POLLNVAL, without waiting
  ASSERT_TRUE(as_->copy_from_user(set, fds, sizeof set));
  EXPECT_EQ(set[0].revents, 0);
  EXPECT_EQ(set[1].revents, POLLOUT);
  EXPECT_EQ(set[2].revents, 0);
  EXPECT_EQ(set[3].revents, POLLNVAL);
  EXPECT_EQ(set[0].fd, r);
  put(w, "a");
  EXPECT_EQ(call(sys_poll, fds, 2, 0), 2);
  ASSERT_TRUE(as_->copy_from_user(set, fds, sizeof set));
  EXPECT_EQ(set[0].revents, POLLIN);
}

// A wait the Guest runs again after a kick (a stop, another process's signal) keeps the end time of
// its first run: a stream of kicks cannot keep it from timing out (kept_across_restart).
TEST_F(EpollSyscalls, KickedWaitKeepsItsEndTime) {
  auto [r, w] = pipe();
  const uint64_t fds = kBase + 0x2000;
  pollfd set[1] = {{r, POLLIN, 0}};
  ASSERT_TRUE(as_->copy_to_user(fds, set, sizeof set));
  int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_poll, fds, 1, 50), 0);  // the first run; its end passes
  EXPECT_GE(now_ms() - t0, 45);
  p().thread().restarting = true;  // as the Guest runs it again
  t0 = now_ms();
  EXPECT_EQ(call(sys_poll, fds, 1, 50), 0);
  EXPECT_LT(now_ms() - t0, 40);  // not another 50 ms
  p().thread().restarting = false;
  t0 = now_ms();
  EXPECT_EQ(call(sys_poll, fds, 1, 50), 0);  // a new call, a new end
  EXPECT_GE(now_ms() - t0, 45);
  (void)w;
}

TEST_F(EpollSyscalls, PollErrorsAndTimeout) {
  auto [r, w] = pipe();
  const uint64_t fds = kBase + 0x2000;
  EXPECT_EQ(call(sys_poll, fds, p().fds.limit() + 1, 0), -EINVAL);
  EXPECT_EQ(call(sys_poll, kUnmapped, 1, 0), -EFAULT);
  pollfd set[1] = {{r, POLLIN, 0}};
  ASSERT_TRUE(as_->copy_to_user(fds, set, sizeof set));
  int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_poll, fds, 1, 50), 0);
  EXPECT_GE(now_ms() - t0, 45);
  // ppoll: the time left is written back.
  const uint64_t ts = kBase + 0x300;
  poke(ts, GuestTimespec{5, 0});
  put(w, "b");
  EXPECT_EQ(call(sys_ppoll, fds, 1, ts, 0, 0), 1);
  auto left = peek<GuestTimespec>(ts);
  EXPECT_TRUE(left.sec == 4 || left.sec == 5);
  poke(ts, GuestTimespec{0, -1});
  EXPECT_EQ(call(sys_ppoll, fds, 1, ts, 0, 0), -EINVAL);
  poke(ts, GuestTimespec{0, 0});
  EXPECT_EQ(call(sys_ppoll, fds, 1, ts, kBase + 0x200, 4), -EINVAL);
  EXPECT_EQ(call(sys_ppoll, fds, 1, ts, kUnmapped, 8), -EFAULT);
  EXPECT_EQ(call(sys_ppoll, fds, 1, kUnmapped, 0, 0), -EFAULT);
  EXPECT_EQ(call(sys_ppoll, fds, 1, ts, kBase + 0x200, 8), 1);
}

TEST_F(EpollSyscalls, PollNothingSleeps) {
  int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_poll, 0, 0, 30), 0);
  EXPECT_GE(now_ms() - t0, 25);
}

// ---- select --------------------------------------------------------------------------------------

TEST_F(EpollSyscalls, SelectPipes) {
  auto [r, w] = pipe();
  const uint64_t rs = kBase + 0x3000, ws = kBase + 0x3080, tv = kBase + 0x3200;
  fd_set rset, wset;
  FD_ZERO(&rset);
  FD_ZERO(&wset);
  FD_SET(r, &rset);
  FD_SET(w, &wset);
  ASSERT_TRUE(as_->copy_to_user(rs, &rset, sizeof rset));
  ASSERT_TRUE(as_->copy_to_user(ws, &wset, sizeof wset));
  poke(tv, GuestTimeval{2, 0});
  const int nfds = std::max(r, w) + 1;
  EXPECT_EQ(call(sys_select, nfds, rs, ws, 0, tv), 1);
  ASSERT_TRUE(as_->copy_from_user(&rset, rs, sizeof rset));
  ASSERT_TRUE(as_->copy_from_user(&wset, ws, sizeof wset));
  EXPECT_FALSE(FD_ISSET(r, &rset));
  EXPECT_TRUE(FD_ISSET(w, &wset));
  auto left = peek<GuestTimeval>(tv);
  EXPECT_TRUE(left.sec == 1 || left.sec == 2);

  put(w, "c");
  FD_ZERO(&rset);
  FD_SET(r, &rset);
  ASSERT_TRUE(as_->copy_to_user(rs, &rset, sizeof rset));
  EXPECT_EQ(call(sys_select, nfds, rs, 0, 0, 0), 1);
  ASSERT_TRUE(as_->copy_from_user(&rset, rs, sizeof rset));
  EXPECT_TRUE(FD_ISSET(r, &rset));

  // pselect6 with a timespec and a {sigset*, size} pair.
  const uint64_t ts = kBase + 0x3300, sig = kBase + 0x3400, mask = kBase + 0x3500;
  poke(ts, GuestTimespec{1, 0});
  poke(mask, uint64_t(0));
  struct {
    uint64_t ss, len;
  } pair{mask, 8};
  poke(sig, pair);
  EXPECT_EQ(call(sys_pselect6, nfds, rs, 0, 0, ts, sig), 1);
  pair.len = 16;
  poke(sig, pair);
  EXPECT_EQ(call(sys_pselect6, nfds, rs, 0, 0, ts, sig), -EINVAL);
  EXPECT_EQ(call(sys_pselect6, nfds, rs, 0, 0, ts, kUnmapped), -EFAULT);
}

TEST_F(EpollSyscalls, SelectErrorsAndTimeout) {
  auto [r, w] = pipe();
  const uint64_t rs = kBase + 0x3000, es = kBase + 0x3100, tv = kBase + 0x3200;
  fd_set set;
  FD_ZERO(&set);
  FD_SET(40, &set);  // not open
  ASSERT_TRUE(as_->copy_to_user(rs, &set, sizeof set));
  EXPECT_EQ(call(sys_select, 41, rs, 0, 0, 0), -EBADF);
  EXPECT_EQ(call(sys_select, uint64_t(-1), rs, 0, 0, 0), -EINVAL);
  EXPECT_EQ(call(sys_select, 41, kUnmapped, 0, 0, 0), -EFAULT);
  poke(tv, GuestTimeval{0, -5});
  EXPECT_EQ(call(sys_select, 0, 0, 0, 0, tv), -EINVAL);

  // Timeout: nothing readable; sets cleared; time left is 0.
  FD_ZERO(&set);
  FD_SET(r, &set);
  ASSERT_TRUE(as_->copy_to_user(rs, &set, sizeof set));
  ASSERT_TRUE(as_->copy_to_user(es, &set, sizeof set));
  poke(tv, GuestTimeval{0, 50000});
  int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_select, r + 1, rs, 0, es, tv), 0);
  EXPECT_GE(now_ms() - t0, 45);
  ASSERT_TRUE(as_->copy_from_user(&set, rs, sizeof set));
  EXPECT_FALSE(FD_ISSET(r, &set));
  auto left = peek<GuestTimeval>(tv);
  EXPECT_EQ(left.sec, 0);
  EXPECT_EQ(left.usec, 0);
  // usec beyond a second is folded into seconds, not rejected.
  poke(tv, GuestTimeval{0, 1000001});
  put(w, "d");
  ASSERT_TRUE(as_->copy_to_user(rs, &set, sizeof set));
  FD_SET(r, &set);
  ASSERT_TRUE(as_->copy_to_user(rs, &set, sizeof set));
  EXPECT_EQ(call(sys_select, r + 1, rs, 0, 0, tv), 1);
  // A huge nfds is clamped to the fd table, like Linux.
  EXPECT_EQ(call(sys_select, 100000, rs, 0, 0, tv), 1);
}

// ---- eventfd and timerfd -------------------------------------------------------------------------

TEST_F(EpollSyscalls, EventFd) {
  EXPECT_EQ(call(sys_eventfd2, 0, 0x4000000), -EINVAL);
  const int e = int(call(sys_eventfd2, 3, EFD_NONBLOCK | EFD_CLOEXEC));
  ASSERT_GE(e, 0);
  EXPECT_TRUE(p().fds.cloexec(e));
  auto f = p().fds.get(e);
  EXPECT_EQ(f->kind, OpenFile::Kind::EventFd);
  EXPECT_TRUE(f->status_flags & O_NONBLOCK);
  uint64_t v = 0;
  ASSERT_EQ(::read(f->host_fd, &v, 8), 8);
  EXPECT_EQ(v, 3u);
  EXPECT_EQ(::read(f->host_fd, &v, 8), -1);  // nonblocking, empty
  EXPECT_EQ(errno, EAGAIN);

  const int s = int(call(sys_eventfd2, 2, EFD_SEMAPHORE | EFD_NONBLOCK));
  ASSERT_GE(s, 0);
  ASSERT_EQ(::read(host_fd(s), &v, 8), 8);
  EXPECT_EQ(v, 1u);
  const int plain = int(call(sys_eventfd, 7));
  ASSERT_GE(plain, 0);
  EXPECT_FALSE(p().fds.cloexec(plain));
  ASSERT_EQ(::read(host_fd(plain), &v, 8), 8);
  EXPECT_EQ(v, 7u);
}

TEST_F(EpollSyscalls, TimerFd) {
  EXPECT_EQ(call(sys_timerfd_create, CLOCK_PROCESS_CPUTIME_ID, 0), -EINVAL);
  EXPECT_EQ(call(sys_timerfd_create, CLOCK_MONOTONIC, 0x10), -EINVAL);
  const int t = int(call(sys_timerfd_create, CLOCK_MONOTONIC, TFD_NONBLOCK));
  ASSERT_GE(t, 0);
  auto [r, w] = pipe();
  const uint64_t spec = kBase + 0x4000, old = kBase + 0x4100;
  poke(spec, itimerspec{{0, 0}, {0, 30000000}});
  EXPECT_EQ(call(sys_timerfd_settime, t, 0x40, spec, 0), -EINVAL);
  EXPECT_EQ(call(sys_timerfd_settime, r, 0, spec, 0), -EINVAL);
  EXPECT_EQ(call(sys_timerfd_settime, 60, 0, spec, 0), -EBADF);
  EXPECT_EQ(call(sys_timerfd_settime, t, 0, kUnmapped, 0), -EFAULT);
  ASSERT_EQ(call(sys_timerfd_settime, t, 0, spec, old), 0);
  auto cur = peek<itimerspec>(old);
  EXPECT_EQ(cur.it_value.tv_sec, 0);
  EXPECT_EQ(cur.it_value.tv_nsec, 0);
  ASSERT_EQ(call(sys_timerfd_gettime, t, old), 0);
  cur = peek<itimerspec>(old);
  EXPECT_GT(cur.it_value.tv_nsec, 0);
  EXPECT_EQ(call(sys_timerfd_gettime, t, kUnmapped), -EFAULT);
  EXPECT_EQ(call(sys_timerfd_gettime, r, old), -EINVAL);

  // It fires: poll on it wakes up.
  const uint64_t fds = kBase + 0x2000;
  pollfd set[1] = {{t, POLLIN, 0}};
  ASSERT_TRUE(as_->copy_to_user(fds, set, sizeof set));
  EXPECT_EQ(call(sys_poll, fds, 1, 2000), 1);
  uint64_t ticks = 0;
  ASSERT_EQ(::read(host_fd(t), &ticks, 8), 8);
  EXPECT_EQ(ticks, 1u);
}

// ---- Copies for workers --------------------------------------------------------------------------

TEST_F(EpollSyscalls, CloneEpoll) {
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  auto [r2, w2] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 0x1111), 0);
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r2, EPOLLIN, 0x2222), 0);
  ASSERT_EQ(p().fds.close(r2), 0);  // gone: dropped from the copy
  auto original = p().fds.get(ep);
  auto copy = clone_epoll(p(), *original);
  ASSERT_TRUE(copy);
  EXPECT_NE(copy->host_fd, original->host_fd);
  EXPECT_EQ(copy->kind, OpenFile::Kind::Epoll);
  ASSERT_EQ(copy->epoll_interest.size(), 1u);
  EXPECT_EQ(copy->epoll_interest[0].guest_fd, r);
  EXPECT_EQ(original->epoll_interest.size(), 2u);  // the original is untouched

  // The worker's fd table gets the copy; it reports the guest's data.
  ASSERT_EQ(p().fds.install_at(ep, copy, false), ep);
  put(w, "e");
  const uint64_t events = kBase + 0x1000;
  ASSERT_EQ(call(sys_epoll_wait, ep, events, 4, 0), 1);
  EXPECT_EQ(peek<GuestEpollEvent>(events).data, 0x1111u);
  // Changes to the copy do not reach the original's host epoll.
  ASSERT_EQ(call(sys_epoll_ctl, ep, EPOLL_CTL_DEL, r, 0), 0);
  epoll_event host_ev[2];
  EXPECT_EQ(::epoll_wait(original->host_fd, host_ev, 2, 0), 1);
  (void)w2;
}

TEST_F(EpollSyscalls, CloneEventFd) {
  const int e = int(call(sys_eventfd2, 5, EFD_SEMAPHORE | EFD_NONBLOCK));
  auto original = p().fds.get(e);
  auto copy = clone_eventfd(*original);
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->kind, OpenFile::Kind::EventFd);
  EXPECT_NE(copy->host_fd, original->host_fd);
  EXPECT_EQ(copy->status_flags, original->status_flags);
  EXPECT_TRUE(::fcntl(copy->host_fd, F_GETFL) & O_NONBLOCK);
  uint64_t v = 0;
  ASSERT_EQ(::read(copy->host_fd, &v, 8), 8);
  EXPECT_EQ(v, 1u);  // semaphore mode kept
  // The original's counter was not consumed; the copy's is independent.
  ASSERT_EQ(::read(original->host_fd, &v, 8), 8);
  EXPECT_EQ(v, 1u);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(::read(copy->host_fd, &v, 8), 8);  // 5 in all
  EXPECT_EQ(::read(copy->host_fd, &v, 8), -1);

  const int big = int(call(sys_eventfd2, 0, 0));
  uint64_t add = 0x123456789ull;
  ASSERT_EQ(::write(host_fd(big), &add, 8), 8);
  auto copy2 = clone_eventfd(*p().fds.get(big));
  ASSERT_TRUE(copy2);
  EXPECT_FALSE(::fcntl(copy2->host_fd, F_GETFL) & O_NONBLOCK);
  ASSERT_EQ(::read(copy2->host_fd, &v, 8), 8);
  EXPECT_EQ(v, add);
}

TEST_F(EpollSyscalls, CloneTimerFd) {
  const int t = int(call(sys_timerfd_create, CLOCK_BOOTTIME, TFD_NONBLOCK));
  ASSERT_GE(t, 0);
  const uint64_t spec = kBase + 0x4000;
  poke(spec, itimerspec{{10, 0}, {20, 0}});
  ASSERT_EQ(call(sys_timerfd_settime, t, 0, spec, 0), 0);
  auto copy = clone_timerfd(*p().fds.get(t));
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->kind, OpenFile::Kind::TimerFd);
  itimerspec cur{};
  ASSERT_EQ(::timerfd_gettime(copy->host_fd, &cur), 0);
  EXPECT_EQ(cur.it_interval.tv_sec, 10);
  EXPECT_TRUE(cur.it_value.tv_sec == 19 || cur.it_value.tv_sec == 20);
  EXPECT_TRUE(::fcntl(copy->host_fd, F_GETFL) & O_NONBLOCK);
  // fdinfo says which clock.
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", copy->host_fd);
  FILE* f = fopen(path, "r");
  ASSERT_TRUE(f);
  char line[256];
  bool found = false;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "clockid:", 8) == 0) found = atoi(line + 8) == CLOCK_BOOTTIME;
  fclose(f);
  EXPECT_TRUE(found);

  // Unread expirations carry over; a disarmed timer stays disarmed.
  const int t2 = int(call(sys_timerfd_create, CLOCK_MONOTONIC, 0));
  poke(spec, itimerspec{{0, 0}, {0, 1000000}});
  ASSERT_EQ(call(sys_timerfd_settime, t2, 0, spec, 0), 0);
  usleep(20000);
  auto copy2 = clone_timerfd(*p().fds.get(t2));
  ASSERT_TRUE(copy2);
  pollfd pf{copy2->host_fd, POLLIN, 0};
  EXPECT_EQ(::poll(&pf, 1, 1000), 1);
  uint64_t ticks = 0;
  ASSERT_EQ(::read(copy2->host_fd, &ticks, 8), 8);
  EXPECT_EQ(ticks, 1u);
  const int t3 = int(call(sys_timerfd_create, CLOCK_REALTIME, 0));
  auto copy3 = clone_timerfd(*p().fds.get(t3));
  ASSERT_TRUE(copy3);
  ASSERT_EQ(::timerfd_gettime(copy3->host_fd, &cur), 0);
  EXPECT_EQ(cur.it_value.tv_sec, 0);
  EXPECT_EQ(cur.it_value.tv_nsec, 0);
}

// ---- ServerHooks ---------------------------------------------------------------------------------

TEST_F(EpollSyscalls, HooksSeeListenerInEpoll) {
  FakeHooks hooks;
  p().server = &hooks;
  const int ep = int(call(sys_epoll_create1, 0));
  auto [r, w] = pipe();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, r, EPOLLIN, 1), 0);
  const uint64_t events = kBase + 0x1000;
  EXPECT_EQ(call(sys_epoll_wait, ep, events, 4, 0), 0);
  EXPECT_EQ(hooks.calls, 1);
  EXPECT_FALSE(hooks.last_listener);
  EXPECT_FALSE(hooks.last_block);

  const int l = listener();
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, l, EPOLLIN, 2), 0);
  EXPECT_EQ(call(sys_epoll_wait, ep, events, 4, 0), 0);
  EXPECT_TRUE(hooks.last_listener);
  // Taking over: returns 0 at once, before the host wait (which would block forever here).
  hooks.take_over = true;
  put(w, "f");
  poke(events, GuestEpollEvent{0xaa, 0xbb});
  EXPECT_EQ(call(sys_epoll_wait, ep, events, 4, -1), 0);
  EXPECT_TRUE(hooks.last_block);
  EXPECT_EQ(peek<GuestEpollEvent>(events).data, 0xbbu);  // untouched
  EXPECT_EQ(call(sys_epoll_pwait2, ep, events, 4, 0, 0, 0), 0);
  EXPECT_EQ(hooks.calls, 4);

  // A listener behind a nested epoll counts too.
  hooks.take_over = false;
  const int outer = int(call(sys_epoll_create1, 0));
  ASSERT_EQ(ctl(outer, EPOLL_CTL_ADD, ep, EPOLLIN, 3), 0);
  call(sys_epoll_wait, outer, events, 4, 0);
  EXPECT_TRUE(hooks.last_listener);
}

TEST_F(EpollSyscalls, HiddenListenerRegistrationStaysOffTheHost) {
  FakeHooks hooks;
  p().server = &hooks;
  uint16_t port = 0;
  const int l = listener(&port);
  const int c = connect_to(port);
  const int ep = int(call(sys_epoll_create1, 0));
  hooks.hidden = true;
  ASSERT_EQ(ctl(ep, EPOLL_CTL_ADD, l, EPOLLIN, 9), 0);
  EXPECT_EQ(ctl(ep, EPOLL_CTL_ADD, l, EPOLLIN, 9), -EEXIST);
  EXPECT_EQ(p().fds.get(ep)->epoll_interest.size(), 1u);
  EXPECT_EQ(call(sys_epoll_wait, ep, kBase + 0x1000, 4, 0), 0);  // not on the host epoll
  EXPECT_TRUE(hooks.last_listener);
  // Rebuilt once visible again: the registration reaches the host.
  hooks.hidden = false;
  auto copy = clone_epoll(p(), *p().fds.get(ep));
  ASSERT_TRUE(copy);
  ASSERT_EQ(p().fds.install_at(ep, copy, false), ep);
  ASSERT_EQ(call(sys_epoll_wait, ep, kBase + 0x1000, 4, 0), 1);
  EXPECT_EQ(peek<GuestEpollEvent>(kBase + 0x1000).data, 9u);
  ::close(c);
}

TEST_F(EpollSyscalls, HooksPollAndSelect) {
  FakeHooks hooks;
  p().server = &hooks;
  uint16_t port = 0;
  const int l = listener(&port);
  const int c = connect_to(port);  // the listener is readable
  auto [r, w] = pipe();
  put(w, "g");
  const uint64_t fds = kBase + 0x2000;
  pollfd set[2] = {{l, POLLIN, 0}, {r, POLLIN, 0}};
  ASSERT_TRUE(as_->copy_to_user(fds, set, sizeof set));

  EXPECT_EQ(call(sys_poll, fds, 2, 0), 2);
  EXPECT_TRUE(hooks.last_listener);
  EXPECT_FALSE(hooks.last_block);
  EXPECT_EQ(call(sys_poll, fds + sizeof(pollfd), 1, 100), 1);
  EXPECT_FALSE(hooks.last_listener);
  EXPECT_TRUE(hooks.last_block);

  // Hidden: the listener never looks ready.
  hooks.hidden = true;
  EXPECT_EQ(call(sys_poll, fds, 2, 0), 1);
  ASSERT_TRUE(as_->copy_from_user(set, fds, sizeof set));
  EXPECT_EQ(set[0].revents, 0);
  EXPECT_EQ(set[1].revents, POLLIN);
  int64_t t0 = now_ms();
  EXPECT_EQ(call(sys_poll, fds, 1, 40), 0);
  EXPECT_GE(now_ms() - t0, 35);

  const uint64_t rs = kBase + 0x3000;
  fd_set rset;
  FD_ZERO(&rset);
  FD_SET(l, &rset);
  FD_SET(r, &rset);
  ASSERT_TRUE(as_->copy_to_user(rs, &rset, sizeof rset));
  const int nfds = std::max(l, r) + 1;
  EXPECT_EQ(call(sys_select, nfds, rs, 0, 0, 0), 1);
  EXPECT_TRUE(hooks.last_listener);
  EXPECT_TRUE(hooks.last_block);
  ASSERT_TRUE(as_->copy_from_user(&rset, rs, sizeof rset));
  EXPECT_FALSE(FD_ISSET(l, &rset));
  EXPECT_TRUE(FD_ISSET(r, &rset));
  hooks.hidden = false;
  FD_SET(l, &rset);
  ASSERT_TRUE(as_->copy_to_user(rs, &rset, sizeof rset));
  EXPECT_EQ(call(sys_select, nfds, rs, 0, 0, 0), 2);

  // Taking over: nothing is written back.
  hooks.take_over = true;
  set[0].revents = set[1].revents = 0x77;
  ASSERT_TRUE(as_->copy_to_user(fds, set, sizeof set));
  const int before = hooks.calls;
  EXPECT_EQ(call(sys_poll, fds, 2, -1), 0);
  EXPECT_EQ(call(sys_ppoll, fds, 2, 0, 0, 0), 0);
  EXPECT_EQ(call(sys_select, nfds, rs, 0, 0, 0), 0);
  const uint64_t tv = kBase + 0x3200;
  poke(tv, GuestTimeval{5, 0});
  EXPECT_EQ(call(sys_select, nfds, rs, 0, 0, tv), 0);
  EXPECT_EQ(peek<GuestTimeval>(tv).sec, 5);  // pending: the timeout is left as it was
  EXPECT_EQ(peek<GuestTimeval>(tv).usec, 0);
  EXPECT_EQ(hooks.calls, before + 4);
  ASSERT_TRUE(as_->copy_from_user(set, fds, sizeof set));
  EXPECT_EQ(set[0].revents, 0x77);
  ::close(c);
}

}  // namespace
}  // namespace kvms::linux

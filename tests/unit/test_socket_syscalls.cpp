// Socket handlers called directly over a real AddressSpace (no KVM): host sockets in the guest's fd
// table, the network and file policies, SCM_RIGHTS, and the ServerHooks of accept.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/fd_table.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kBase = 0x100000;
constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kReadOnly = 0x300000;
constexpr uint64_t kUnmapped = 0x400000;

class FakeHooks : public ServerHooks {
 public:
  bool before_wait(Process&, bool includes_listener, bool would_block) override {
    ++wait_calls;
    last_listener = includes_listener;
    last_block = would_block;
    return take_over;
  }
  bool listener_hidden(const Process&) const override { return hidden; }
  void on_accept(Process&, int fd) override { accepted.push_back(fd); }

  int wait_calls = 0;
  bool last_listener = false, last_block = false;
  bool take_over = false, hidden = false;
  std::vector<int> accepted;
};

class SocketSyscalls : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvms-sock-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    char* real = ::realpath(tmpl, nullptr);
    root_ = real;
    ::free(real);
    fs::create_directories(root_ + "/rw");
    fs::create_directories(root_ + "/ro");

    auto mem = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem);
    ASSERT_EQ(as_->map(kBase, kSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    ASSERT_EQ(as_->map(kReadOnly, 0x1000, kvm::kProtRead, ""), 0);
    PolicyConfig pc;
    pc.write = {root_ + "/rw"};
    pc.read = {root_ + "/ro"};
    p_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(pc), ProcessConfig{});
    set_net({"127.0.0.1", "/"}, {"127.0.0.1", "/"});
  }
  void TearDown() override {
    p_.reset();
    fs::remove_all(root_);
  }

  void set_net(std::vector<std::string> listen, std::vector<std::string> connect) {
    NetPolicyConfig c;
    c.listen = std::move(listen);
    c.connect = std::move(connect);
    p().net_policy = std::make_shared<NetPolicy>(c);
  }

  Process& p() { return *p_; }

  // A bump allocator over the scratch mapping.
  uint64_t alloc(uint64_t n) {
    uint64_t at = next_;
    next_ += (n + 15) & ~uint64_t(15);
    EXPECT_LE(next_, kBase + kSize);
    return at;
  }
  template <typename T> uint64_t put(const T& v) {
    uint64_t at = alloc(sizeof(T));
    EXPECT_TRUE(as_->copy_to_user(at, &v, sizeof(T)));
    return at;
  }
  uint64_t put_bytes(const std::string& s) {
    uint64_t at = alloc(s.size() + 1);
    EXPECT_TRUE(as_->copy_to_user(at, s.c_str(), s.size() + 1));
    return at;
  }
  template <typename T> T get(uint64_t at) {
    T v{};
    EXPECT_TRUE(as_->copy_from_user(&v, at, sizeof(T)));
    return v;
  }
  std::string get_bytes(uint64_t at, size_t n) {
    std::string s(n, '\0');
    EXPECT_TRUE(as_->copy_from_user(s.data(), at, n));
    return s;
  }

  using Handler = int64_t (*)(Process&, const SyscallArgs&);
  int64_t sc(Handler h, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
             uint64_t a5 = 0) {
    SyscallArgs args;
    args.a[0] = a0, args.a[1] = a1, args.a[2] = a2, args.a[3] = a3, args.a[4] = a4, args.a[5] = a5;
    return h(p(), args);
  }

  static sockaddr_in inet4(const char* ip, uint16_t port) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, ip, &sin.sin_addr);
    return sin;
  }
  static sockaddr_un unix_addr(const std::string& path, socklen_t* len = nullptr) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::memcpy(sun.sun_path, path.data(), path.size());
    if (len) *len = offsetof(sockaddr_un, sun_path) + path.size() + 1;
    return sun;
  }

  int host_fd(int guest_fd) { return p().fds.get(guest_fd)->host_fd; }

  // A guest TCP socket bound to 127.0.0.1:0 and listening; returns the guest fd and its port.
  int guest_listener(uint16_t& port, int type_flags = 0) {
    int fd = int(sc(sys_socket, AF_INET, SOCK_STREAM | type_flags, 0));
    EXPECT_GE(fd, 0);
    auto sin = inet4("127.0.0.1", 0);
    EXPECT_EQ(sc(sys_bind, fd, put(sin), sizeof sin), 0);
    EXPECT_EQ(sc(sys_listen, fd, 16), 0);
    uint64_t addr = alloc(sizeof(sockaddr_in)), len = put<int>(sizeof(sockaddr_in));
    EXPECT_EQ(sc(sys_getsockname, fd, addr, len), 0);
    port = ntohs(get<sockaddr_in>(addr).sin_port);
    return fd;
  }

  // A host-side client connected to 127.0.0.1:port.
  static int host_client(uint16_t port) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    auto sin = inet4("127.0.0.1", port);
    EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0) << strerror(errno);
    return c;
  }

  std::string root_;
  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> p_;
  uint64_t next_ = kBase;
};

TEST_F(SocketSyscalls, SocketCreation) {
  int fd = int(sc(sys_socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  ASSERT_GE(fd, 0);
  auto f = p().fds.get(fd);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->kind, OpenFile::Kind::Socket);
  EXPECT_EQ(f->path.rfind("socket:[", 0), 0u) << f->path;
  EXPECT_TRUE(f->status_flags & O_NONBLOCK);
  EXPECT_TRUE(p().fds.cloexec(fd));
  EXPECT_TRUE(fcntl(f->host_fd, F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(fcntl(f->host_fd, F_GETFD) & FD_CLOEXEC);

  int fd2 = int(sc(sys_socket, AF_INET6, SOCK_DGRAM, 0));
  ASSERT_GE(fd2, 0);
  EXPECT_FALSE(p().fds.get(fd2)->status_flags & O_NONBLOCK);
  EXPECT_FALSE(p().fds.cloexec(fd2));
  EXPECT_FALSE(fcntl(host_fd(fd2), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(fcntl(host_fd(fd2), F_GETFD) & FD_CLOEXEC);  // host fds always are
  EXPECT_GE(sc(sys_socket, AF_UNIX, SOCK_SEQPACKET, 0), 0);

  EXPECT_EQ(sc(sys_socket, AF_NETLINK, SOCK_RAW, 0), -EAFNOSUPPORT);
  EXPECT_EQ(sc(sys_socket, AF_INET, SOCK_RAW, IPPROTO_ICMP), -EPERM);  // no CAP_NET_RAW
  EXPECT_EQ(sc(sys_socket, AF_INET, SOCK_RAW, 0), -EPROTONOSUPPORT);
  EXPECT_EQ(sc(sys_socket, AF_INET, SOCK_DGRAM, IPPROTO_ICMP), -EACCES);  // ping sockets
  EXPECT_EQ(sc(sys_socket, AF_PACKET, SOCK_RAW, 0), -EPERM);
  EXPECT_EQ(sc(sys_socket, AF_INET, SOCK_DGRAM, IPPROTO_ICMP), -EACCES);
  EXPECT_EQ(sc(sys_socket, AF_INET, SOCK_STREAM, IPPROTO_UDP), -EPROTONOSUPPORT);
  EXPECT_EQ(sc(sys_socket, AF_INET, SOCK_STREAM | 0x100, 0), -EINVAL);

  // Not sockets.
  EXPECT_EQ(sc(sys_listen, 77, 1), -EBADF);
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  int gp = p().fds.install(std::make_shared<OpenFile>(pipefd[0], OpenFile::Kind::Pipe, "pipe:[1]", O_RDONLY), false);
  ::close(pipefd[1]);
  EXPECT_EQ(sc(sys_listen, gp, 1), -ENOTSOCK);
  EXPECT_EQ(sc(sys_getsockname, gp, alloc(16), put<int>(16)), -ENOTSOCK);
}

TEST_F(SocketSyscalls, ListenAcceptEcho) {
  uint16_t port = 0;
  int lfd = guest_listener(port);
  ASSERT_GE(lfd, 0);
  EXPECT_NE(port, 0);
  EXPECT_TRUE(p().fds.get(lfd)->listening);

  int c = host_client(port);
  uint64_t peer = alloc(sizeof(sockaddr_in)), peerlen = put<int>(sizeof(sockaddr_in));
  int fd = int(sc(sys_accept4, lfd, peer, peerlen, SOCK_NONBLOCK | SOCK_CLOEXEC));
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(p().fds.cloexec(fd));
  EXPECT_TRUE(p().fds.get(fd)->status_flags & O_NONBLOCK);
  EXPECT_TRUE(fcntl(host_fd(fd), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(get<int>(peerlen), int(sizeof(sockaddr_in)));
  sockaddr_in local{};
  socklen_t ll = sizeof local;
  ASSERT_EQ(getsockname(c, reinterpret_cast<sockaddr*>(&local), &ll), 0);
  auto got = get<sockaddr_in>(peer);
  EXPECT_EQ(got.sin_port, local.sin_port);
  EXPECT_EQ(got.sin_addr.s_addr, local.sin_addr.s_addr);

  // Nothing to read yet on the non-blocking socket.
  uint64_t buf = alloc(64);
  EXPECT_EQ(sc(sys_recvfrom, fd, buf, 64, 0, 0, 0), -EAGAIN);
  ASSERT_EQ(::send(c, "hello", 5, 0), 5);
  pollfd pfd{host_fd(fd), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 2000), 1);
  as_->track_host_writes(true);
  EXPECT_EQ(sc(sys_recvfrom, fd, buf, 64, 0, 0, 0), 5);
  EXPECT_EQ(get_bytes(buf, 5), "hello");
  EXPECT_FALSE(as_->host_written_pages().empty());  // the host's write into guest memory was noted
  as_->track_host_writes(false);

  uint64_t msg = put_bytes("world");
  EXPECT_EQ(sc(sys_sendto, fd, msg, 5, 0, 0, 0), 5);
  char back[8] = {};
  EXPECT_EQ(::recv(c, back, sizeof back, 0), 5);
  EXPECT_STREQ(back, "world");
  // A connected TCP socket ignores a destination, granted or not (as Linux does).
  auto far = inet4("10.9.9.9", 9);
  EXPECT_EQ(sc(sys_sendto, fd, msg, 5, 0, put(far), sizeof far), 5);
  EXPECT_EQ(::recv(c, back, sizeof back, 0), 5);

  // getpeername matches the client; a short buffer is truncated and the full length reported.
  uint64_t small = alloc(8), smalllen = put<int>(4);
  EXPECT_EQ(sc(sys_getpeername, fd, small, smalllen), 0);
  EXPECT_EQ(get<int>(smalllen), int(sizeof(sockaddr_in)));
  EXPECT_EQ(get<uint16_t>(small), AF_INET);
  EXPECT_EQ(get<uint16_t>(small + 4), 0);  // beyond the 4 bytes asked for: untouched

  // Peer closed: EOF, then EPIPE on send (no SIGPIPE: the test would die).
  ::close(c);
  ASSERT_EQ(poll(&pfd, 1, 2000), 1);
  EXPECT_EQ(sc(sys_recvfrom, fd, buf, 64, 0, 0, 0), 0);
  int64_t rc = 0;
  for (int i = 0; i < 50 && rc >= 0; ++i) {
    rc = sc(sys_sendto, fd, msg, 5, 0, 0, 0);
    if (rc >= 0) usleep(2000);
  }
  EXPECT_TRUE(rc == -EPIPE || rc == -ECONNRESET) << rc;
  sc(sys_shutdown, fd, SHUT_RDWR);  // may be ENOTCONN after the reset

  // accept without an address; a blocking accept of a queued connection.
  int c2 = host_client(port);
  int fd2 = int(sc(sys_accept, lfd, 0, 0));
  EXPECT_GE(fd2, 0);
  EXPECT_FALSE(p().fds.cloexec(fd2));
  EXPECT_FALSE(fcntl(host_fd(fd2), F_GETFL) & O_NONBLOCK);
  ::close(c2);
  EXPECT_EQ(sc(sys_accept4, lfd, 0, 0, 0x4000), -EINVAL);
}

TEST_F(SocketSyscalls, BindDenied) {
  int fd = int(sc(sys_socket, AF_INET, SOCK_STREAM, 0));
  auto any = inet4("0.0.0.0", 0);
  EXPECT_EQ(sc(sys_bind, fd, put(any), sizeof any), -EACCES);
  {
    // With --verbose, the denial says which flag would allow it.
    ProcessConfig verbose;
    verbose.verbose = true;
    Process vp(as_, nullptr, verbose);
    vp.net_policy = p().net_policy;
    int vfd = vp.fds.install(p().fds.get(fd), false);
    SyscallArgs args;
    args.a[0] = vfd, args.a[1] = put(any), args.a[2] = sizeof any;
    testing::internal::CaptureStderr();
    EXPECT_EQ(sys_bind(vp, args), -EACCES);
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("denied: listen on 0.0.0.0:0 (allow with --allow-listen=0.0.0.0:0)"), std::string::npos) << err;
  }
  auto other = inet4("127.0.0.2", 0);
  EXPECT_EQ(sc(sys_bind, fd, put(other), sizeof other), -EACCES);
  // Listening on an unbound socket would bind the wildcard address.
  EXPECT_EQ(sc(sys_listen, fd, 1), -EACCES);
  // Malformed addresses are EINVAL before the policy is asked.
  auto lo = inet4("127.0.0.1", 0);
  EXPECT_EQ(sc(sys_bind, fd, put(lo), 8), -EINVAL);
  EXPECT_EQ(sc(sys_bind, fd, put(lo), 200), -EINVAL);
  // No policy at all: nothing is allowed.
  p().net_policy = nullptr;
  EXPECT_EQ(sc(sys_bind, fd, put(lo), sizeof lo), -EACCES);

  // A port grant.
  set_net({"127.0.0.1:1"}, {});
  EXPECT_EQ(sc(sys_bind, fd, put(lo), sizeof lo), -EACCES);  // ephemeral needs a grant without a port
  set_net({":0"}, {});
  EXPECT_EQ(sc(sys_bind, fd, put(any), sizeof any), 0);
  EXPECT_EQ(sc(sys_listen, fd, 1), 0);
  // --allow-net.
  NetPolicyConfig all;
  all.listen_all = true;
  p().net_policy = std::make_shared<NetPolicy>(all);
  int fd2 = int(sc(sys_socket, AF_INET, SOCK_STREAM, 0));
  EXPECT_EQ(sc(sys_listen, fd2, 1), 0);
}

TEST_F(SocketSyscalls, ConnectPolicy) {
  int srv = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto sin = inet4("127.0.0.1", 0);
  ASSERT_EQ(::bind(srv, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  ASSERT_EQ(::listen(srv, 4), 0);
  socklen_t sl = sizeof sin;
  ASSERT_EQ(getsockname(srv, reinterpret_cast<sockaddr*>(&sin), &sl), 0);
  uint16_t port = ntohs(sin.sin_port);

  int fd = int(sc(sys_socket, AF_INET, SOCK_STREAM, 0));
  auto target = inet4("127.0.0.1", port);
  set_net({}, {"localhost:1"});
  EXPECT_EQ(sc(sys_connect, fd, put(target), sizeof target), -EACCES);
  set_net({}, {"localhost:" + std::to_string(port)});
  EXPECT_EQ(sc(sys_connect, fd, put(target), sizeof target), 0);
  int s = ::accept4(srv, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(s, 0);
  uint64_t peer = alloc(sizeof(sockaddr_in)), peerlen = put<int>(sizeof(sockaddr_in));
  EXPECT_EQ(sc(sys_getpeername, fd, peer, peerlen), 0);
  EXPECT_EQ(get<sockaddr_in>(peer).sin_port, htons(port));

  // IPv4-mapped IPv6 is the IPv4 address.
  int fd6 = int(sc(sys_socket, AF_INET6, SOCK_STREAM, 0));
  sockaddr_in6 mapped{};
  mapped.sin6_family = AF_INET6;
  mapped.sin6_port = htons(port);
  inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.sin6_addr);
  EXPECT_EQ(sc(sys_connect, fd6, put(mapped), sizeof mapped), 0);
  int s2 = ::accept4(srv, nullptr, nullptr, SOCK_CLOEXEC);
  EXPECT_GE(s2, 0);
  // Denied families and bad pointers.
  int fd3 = int(sc(sys_socket, AF_INET, SOCK_STREAM, 0));
  EXPECT_EQ(sc(sys_connect, fd3, kUnmapped, sizeof target), -EFAULT);
  EXPECT_EQ(sc(sys_connect, fd3, put(target), 4), -EINVAL);
  ::close(s);
  ::close(s2);
  ::close(srv);
}

TEST_F(SocketSyscalls, UdpSendmsgRecvmsgWithIovecs) {
  int a = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0));
  int b = int(sc(sys_socket, AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0));
  auto lo = inet4("127.0.0.1", 0);
  ASSERT_EQ(sc(sys_bind, a, put(lo), sizeof lo), 0);
  ASSERT_EQ(sc(sys_bind, b, put(lo), sizeof lo), 0);
  uint64_t baddr = alloc(sizeof(sockaddr_in)), blen = put<int>(sizeof(sockaddr_in));
  ASSERT_EQ(sc(sys_getsockname, b, baddr, blen), 0);
  auto bsin = get<sockaddr_in>(baddr);

  // sendmsg: two iovecs, a destination.
  uint64_t p1 = put_bytes("abc"), p2 = put_bytes("defgh");
  iovec iov[2] = {{reinterpret_cast<void*>(p1), 3}, {reinterpret_cast<void*>(p2), 5}};
  uint64_t uiov = put(iov);
  msghdr m{};
  m.msg_name = reinterpret_cast<void*>(put(bsin));
  m.msg_namelen = sizeof bsin;
  m.msg_iov = reinterpret_cast<iovec*>(uiov);
  m.msg_iovlen = 2;
  EXPECT_EQ(sc(sys_sendmsg, a, put(m), 0), 8);

  // recvmsg: scattered over two iovecs, with the sender's address.
  uint64_t r1 = alloc(4), r2 = alloc(16);
  iovec riov[2] = {{reinterpret_cast<void*>(r1), 4}, {reinterpret_cast<void*>(r2), 16}};
  msghdr rm{};
  uint64_t from = alloc(sizeof(sockaddr_in));
  rm.msg_name = reinterpret_cast<void*>(from);
  rm.msg_namelen = sizeof(sockaddr_in);
  rm.msg_iov = reinterpret_cast<iovec*>(put(riov));
  rm.msg_iovlen = 2;
  uint64_t urm = put(rm);
  pollfd pfd{host_fd(b), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 2000), 1);
  EXPECT_EQ(sc(sys_recvmsg, b, urm, 0), 8);
  EXPECT_EQ(get_bytes(r1, 4), "abcd");
  EXPECT_EQ(get_bytes(r2, 4), "efgh");
  auto back = get<msghdr>(urm);
  EXPECT_EQ(back.msg_namelen, sizeof(sockaddr_in));
  EXPECT_EQ(back.msg_flags, 0);
  uint64_t aaddr = alloc(sizeof(sockaddr_in)), alen = put<int>(sizeof(sockaddr_in));
  ASSERT_EQ(sc(sys_getsockname, a, aaddr, alen), 0);
  EXPECT_EQ(get<sockaddr_in>(from).sin_port, get<sockaddr_in>(aaddr).sin_port);
  EXPECT_EQ(sc(sys_recvmsg, b, urm, 0), -EAGAIN);

  // sendto/recvfrom with addresses; truncation with MSG_TRUNC.
  uint64_t msg = put_bytes("0123456789");
  EXPECT_EQ(sc(sys_sendto, a, msg, 10, 0, put(bsin), sizeof bsin), 10);
  ASSERT_EQ(poll(&pfd, 1, 2000), 1);
  uint64_t rb = alloc(16), src = alloc(sizeof(sockaddr_in)), srclen = put<int>(sizeof(sockaddr_in));
  EXPECT_EQ(sc(sys_recvfrom, b, rb, 4, MSG_TRUNC, src, srclen), 10);
  EXPECT_EQ(get_bytes(rb, 4), "0123");
  EXPECT_EQ(get<int>(srclen), int(sizeof(sockaddr_in)));

  // A destination outside the grant.
  auto far = inet4("127.0.0.9", 9);
  EXPECT_EQ(sc(sys_sendto, a, msg, 10, 0, put(far), sizeof far), -EACCES);
  m.msg_name = reinterpret_cast<void*>(put(far));
  EXPECT_EQ(sc(sys_sendmsg, a, put(m), 0), -EACCES);

  // EFAULT: an iovec into unmapped or read-only memory, a bad msghdr; EMSGSIZE for too many iovecs.
  iovec bad[1] = {{reinterpret_cast<void*>(kReadOnly), 8}};
  rm.msg_iov = reinterpret_cast<iovec*>(put(bad));
  rm.msg_iovlen = 1;
  EXPECT_EQ(sc(sys_recvmsg, b, put(rm), 0), -EFAULT);
  EXPECT_EQ(sc(sys_recvmsg, b, kUnmapped, 0), -EFAULT);
  rm.msg_iovlen = 1025;
  EXPECT_EQ(sc(sys_recvmsg, b, put(rm), 0), -EMSGSIZE);
  EXPECT_EQ(sc(sys_recvfrom, b, kReadOnly, 8, 0, 0, 0), -EFAULT);
  EXPECT_EQ(sc(sys_recvfrom, b, kUnmapped, 8, 0, 0, 0), -EFAULT);
  EXPECT_EQ(sc(sys_sendto, a, kUnmapped, 8, 0, put(bsin), sizeof bsin), -EFAULT);
}

TEST_F(SocketSyscalls, SendmmsgRecvmmsg) {
  int a = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0));
  int b = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0));
  auto lo = inet4("127.0.0.1", 0);
  ASSERT_EQ(sc(sys_bind, b, put(lo), sizeof lo), 0);
  uint64_t baddr = alloc(sizeof(sockaddr_in)), blen = put<int>(sizeof(sockaddr_in));
  ASSERT_EQ(sc(sys_getsockname, b, baddr, blen), 0);
  ASSERT_EQ(sc(sys_connect, a, baddr, sizeof(sockaddr_in)), 0);

  mmsghdr vec[3]{};
  const char* words[3] = {"one", "two", "three"};
  for (int i = 0; i < 3; ++i) {
    iovec v{reinterpret_cast<void*>(put_bytes(words[i])), strlen(words[i])};
    vec[i].msg_hdr.msg_iov = reinterpret_cast<iovec*>(put(v));
    vec[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t uvec = put(vec);
  EXPECT_EQ(sc(sys_sendmmsg, a, uvec, 3, 0), 3);
  EXPECT_EQ(get<mmsghdr>(uvec + 2 * sizeof(mmsghdr)).msg_len, 5u);

  mmsghdr rvec[4]{};
  uint64_t bufs = alloc(4 * 16);
  for (int i = 0; i < 4; ++i) {
    iovec v{reinterpret_cast<void*>(bufs + i * 16), 16};
    rvec[i].msg_hdr.msg_iov = reinterpret_cast<iovec*>(put(v));
    rvec[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t urvec = put(rvec);
  pollfd pfd{host_fd(b), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 2000), 1);
  usleep(10000);
  struct { int64_t sec, nsec; } timeout{5, 0};
  uint64_t ut = put(timeout);
  EXPECT_EQ(sc(sys_recvmmsg, b, urvec, 4, MSG_WAITFORONE, ut), 3);
  EXPECT_EQ(get_bytes(bufs, 3), "one");
  EXPECT_EQ(get_bytes(bufs + 32, 5), "three");
  EXPECT_EQ(get<mmsghdr>(urvec + sizeof(mmsghdr)).msg_len, 3u);
  auto left = get<decltype(timeout)>(ut);
  EXPECT_LE(left.sec, 5);
  struct { int64_t sec, nsec; } bad{0, 2000000000};
  EXPECT_EQ(sc(sys_recvmmsg, b, urvec, 4, MSG_DONTWAIT, put(bad)), -EINVAL);
  EXPECT_EQ(sc(sys_recvmmsg, b, urvec, 4, MSG_DONTWAIT, 0), -EAGAIN);
  // A timeout of centuries: the deadline does not overflow into the past (which ended the batch
  // after one message and reported no time left).
  EXPECT_EQ(sc(sys_sendmmsg, a, uvec, 3, 0), 3);
  ASSERT_EQ(poll(&pfd, 1, 2000), 1);
  usleep(10000);
  struct { int64_t sec, nsec; } forever{INT64_MAX, 999999999};
  ut = put(forever);
  EXPECT_EQ(sc(sys_recvmmsg, b, urvec, 3, MSG_DONTWAIT, ut), 3);
  EXPECT_GT(get<decltype(forever)>(ut).sec, 1ll << 31);
}

TEST_F(SocketSyscalls, SocketpairAndScmRights) {
  uint64_t sv = alloc(8);
  ASSERT_EQ(sc(sys_socketpair, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  int s0 = get<int>(sv), s1 = get<int>(sv + 4);
  EXPECT_TRUE(p().fds.cloexec(s0));
  EXPECT_EQ(sc(sys_socketpair, AF_INET, SOCK_STREAM, 0, sv), -EOPNOTSUPP);
  EXPECT_EQ(sc(sys_socketpair, AF_UNIX, SOCK_STREAM, 0, kReadOnly), -EFAULT);

  // A pipe in the guest's table; pass its write end.
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  int gr = p().fds.install(std::make_shared<OpenFile>(pipefd[0], OpenFile::Kind::Pipe, "pipe:[r]", O_RDONLY), false);
  int gw = p().fds.install(std::make_shared<OpenFile>(pipefd[1], OpenFile::Kind::Pipe, "pipe:[w]", O_WRONLY), false);

  uint64_t data = put_bytes("x");
  iovec v{reinterpret_cast<void*>(data), 1};
  alignas(cmsghdr) uint8_t cbuf[CMSG_SPACE(sizeof(int))] = {};
  auto* cm = reinterpret_cast<cmsghdr*>(cbuf);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &gw, sizeof gw);
  uint64_t ucontrol = alloc(sizeof cbuf);
  ASSERT_TRUE(as_->copy_to_user(ucontrol, cbuf, sizeof cbuf));
  msghdr m{};
  m.msg_iov = reinterpret_cast<iovec*>(put(v));
  m.msg_iovlen = 1;
  m.msg_control = reinterpret_cast<void*>(ucontrol);
  m.msg_controllen = sizeof cbuf;
  EXPECT_EQ(sc(sys_sendmsg, s0, put(m), 0), 1);

  // Receive it: a new guest fd backed by a new host fd for the same pipe.
  uint64_t rbuf = alloc(4), rcontrol = alloc(64);
  iovec rv{reinterpret_cast<void*>(rbuf), 4};
  msghdr rm{};
  rm.msg_iov = reinterpret_cast<iovec*>(put(rv));
  rm.msg_iovlen = 1;
  rm.msg_control = reinterpret_cast<void*>(rcontrol);
  rm.msg_controllen = 64;
  uint64_t urm = put(rm);
  EXPECT_EQ(sc(sys_recvmsg, s1, urm, MSG_CMSG_CLOEXEC), 1);
  auto back = get<msghdr>(urm);
  EXPECT_EQ(back.msg_controllen, CMSG_SPACE(sizeof(int)));
  EXPECT_EQ(back.msg_flags & MSG_CTRUNC, 0);
  auto rcm = get<cmsghdr>(rcontrol);
  EXPECT_EQ(rcm.cmsg_level, SOL_SOCKET);
  EXPECT_EQ(rcm.cmsg_type, SCM_RIGHTS);
  EXPECT_EQ(rcm.cmsg_len, CMSG_LEN(sizeof(int)));
  int newfd = get<int>(rcontrol + CMSG_LEN(0));
  ASSERT_NE(newfd, gw);
  auto nf = p().fds.get(newfd);
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->kind, OpenFile::Kind::Pipe);
  EXPECT_TRUE(p().fds.cloexec(newfd));
  EXPECT_TRUE(fcntl(nf->host_fd, F_GETFD) & FD_CLOEXEC);
  ASSERT_EQ(::write(nf->host_fd, "!", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(host_fd(gr), &c, 1), 1);
  EXPECT_EQ(c, '!');

  // A bad guest fd in SCM_RIGHTS: EBADF; a malformed cmsg_len: EINVAL.
  int bogus = 999;
  std::memcpy(CMSG_DATA(cm), &bogus, sizeof bogus);
  ASSERT_TRUE(as_->copy_to_user(ucontrol, cbuf, sizeof cbuf));
  EXPECT_EQ(sc(sys_sendmsg, s0, put(m), 0), -EBADF);
  cm->cmsg_len = 200;
  ASSERT_TRUE(as_->copy_to_user(ucontrol, cbuf, sizeof cbuf));
  EXPECT_EQ(sc(sys_sendmsg, s0, put(m), 0), -EINVAL);

  // A control buffer too small for the fd: MSG_CTRUNC, no fd installed.
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &gw, sizeof gw);
  ASSERT_TRUE(as_->copy_to_user(ucontrol, cbuf, sizeof cbuf));
  EXPECT_EQ(sc(sys_sendmsg, s0, put(m), 0), 1);
  size_t open_before = p().fds.open_count();
  rm.msg_controllen = sizeof(cmsghdr);  // room for the header only
  urm = put(rm);
  EXPECT_EQ(sc(sys_recvmsg, s1, urm, 0), 1);
  EXPECT_TRUE(get<msghdr>(urm).msg_flags & MSG_CTRUNC);
  EXPECT_EQ(p().fds.open_count(), open_before);
}

TEST_F(SocketSyscalls, UnixPathSockets) {
  const std::string path = root_ + "/rw/app.sock";
  int lfd = int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0));
  socklen_t len;
  auto sun = unix_addr(path, &len);
  // The network policy must grant it...
  set_net({root_ + "/ro/"}, {"/"});
  EXPECT_EQ(sc(sys_bind, lfd, put(sun), len), -EACCES);
  // ...and the file policy must grant writing it.
  set_net({"/"}, {"/"});
  auto ro = unix_addr(root_ + "/ro/app.sock");
  EXPECT_EQ(sc(sys_bind, lfd, put(ro), sizeof ro), -EACCES);
  auto outside = unix_addr(root_ + "/app.sock");
  EXPECT_EQ(sc(sys_bind, lfd, put(outside), sizeof outside), -EACCES);
  EXPECT_FALSE(fs::exists(root_ + "/ro/app.sock"));

  set_net({root_ + "/rw/"}, {path});
  ASSERT_EQ(sc(sys_bind, lfd, put(sun), len), 0);
  struct stat st{};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(sc(sys_bind, int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0)), put(sun), len), -EADDRINUSE);
  ASSERT_EQ(sc(sys_listen, lfd, 4), 0);
  uint64_t name = alloc(sizeof(sockaddr_un)), namelen = put<int>(sizeof(sockaddr_un));
  ASSERT_EQ(sc(sys_getsockname, lfd, name, namelen), 0);
  EXPECT_EQ(get<int>(namelen), int(len));
  EXPECT_EQ(std::string(get<sockaddr_un>(name).sun_path), path);

  // A guest client connects by path (relative to the cwd, too).
  p().cwd = root_ + "/rw";
  int cfd = int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0));
  socklen_t rlen;
  auto rel = unix_addr("app.sock", &rlen);
  ASSERT_EQ(sc(sys_connect, cfd, put(rel), rlen), 0);
  int afd = int(sc(sys_accept4, lfd, 0, 0, 0));
  ASSERT_GE(afd, 0);
  // Names as the guest knows them, not the host's.
  ASSERT_EQ(sc(sys_getpeername, cfd, name, put<int>(sizeof(sockaddr_un))), 0);
  EXPECT_EQ(std::string(get<sockaddr_un>(name).sun_path), path);
  ASSERT_EQ(sc(sys_getsockname, afd, name, put<int>(sizeof(sockaddr_un))), 0);
  EXPECT_EQ(std::string(get<sockaddr_un>(name).sun_path), path);
  uint64_t msg = put_bytes("ping");
  EXPECT_EQ(sc(sys_sendto, cfd, msg, 4, 0, 0, 0), 4);
  uint64_t rb = alloc(8);
  EXPECT_EQ(sc(sys_recvfrom, afd, rb, 8, 0, 0, 0), 4);
  EXPECT_EQ(get_bytes(rb, 4), "ping");

  // A host client reaches it at the host path.
  int hc = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto hsun = unix_addr(path);
  EXPECT_EQ(::connect(hc, reinterpret_cast<sockaddr*>(&hsun), sizeof hsun), 0);
  ::close(hc);

  // Connecting needs the connect grant.
  set_net({}, {root_ + "/rw/other.sock"});
  int c2 = int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0));
  EXPECT_EQ(sc(sys_connect, c2, put(sun), len), -EACCES);
  // A symlink in a granted directory to a socket outside the file grant: denied by the file policy.
  set_net({}, {"/"});
  std::string hidden = root_ + "/hidden.sock";
  int hs = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto hsa = unix_addr(hidden);
  ASSERT_EQ(::bind(hs, reinterpret_cast<sockaddr*>(&hsa), sizeof hsa), 0);
  ASSERT_EQ(::listen(hs, 1), 0);
  fs::create_symlink(hidden, root_ + "/rw/link.sock");
  auto lnk = unix_addr(root_ + "/rw/link.sock");
  EXPECT_EQ(sc(sys_connect, c2, put(lnk), sizeof lnk), -EACCES);
  EXPECT_EQ(sc(sys_connect, c2, put(hsa), sizeof hsa), -EACCES);
  // A regular file is not a socket.
  { FILE* f = fopen((root_ + "/rw/plain").c_str(), "w"); fclose(f); }
  auto plain = unix_addr(root_ + "/rw/plain");
  EXPECT_EQ(sc(sys_connect, c2, put(plain), sizeof plain), -ECONNREFUSED);
  ::close(hs);

  // Abstract names need their own grant; unnamed sockets need none.
  int ab = int(sc(sys_socket, AF_UNIX, SOCK_DGRAM, 0));
  sockaddr_un abs{};
  abs.sun_family = AF_UNIX;
  std::memcpy(abs.sun_path + 1, "kvms-test", 9);
  socklen_t abslen = offsetof(sockaddr_un, sun_path) + 10;
  EXPECT_EQ(sc(sys_bind, ab, put(abs), abslen), -EACCES);
  sa_family_t fam = AF_UNIX;
  EXPECT_EQ(sc(sys_bind, ab, put(fam), sizeof fam), 0);  // autobind
}

TEST_F(SocketSyscalls, ServerHooksOnAccept) {
  FakeHooks hooks;
  p().server = &hooks;
  uint16_t port = 0;
  int nb = guest_listener(port, SOCK_NONBLOCK);
  int c = host_client(port);

  // Hidden listener: as if nothing were queued.
  hooks.hidden = true;
  EXPECT_EQ(sc(sys_accept4, nb, 0, 0, 0), -EAGAIN);
  EXPECT_EQ(hooks.wait_calls, 0);
  uint16_t port2 = 0;
  int blocking = guest_listener(port2);
  int c2 = host_client(port2);
  hooks.take_over = true;
  EXPECT_EQ(sc(sys_accept4, blocking, 0, 0, 0), 0);  // left pending
  EXPECT_EQ(hooks.wait_calls, 1);
  EXPECT_TRUE(hooks.last_listener);
  EXPECT_TRUE(hooks.last_block);
  hooks.take_over = false;
  EXPECT_EQ(sc(sys_accept4, blocking, 0, 0, 0), -EAGAIN);
  EXPECT_TRUE(hooks.accepted.empty());

  // Visible: accepts, and tells the server.
  hooks.hidden = false;
  int fd = int(sc(sys_accept4, nb, 0, 0, 0));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(hooks.wait_calls, 2);  // a non-blocking accept does not wait
  ASSERT_EQ(hooks.accepted.size(), 1u);
  EXPECT_EQ(hooks.accepted[0], fd);
  int fd2 = int(sc(sys_accept4, blocking, 0, 0, 0));
  ASSERT_GE(fd2, 0);
  EXPECT_EQ(hooks.wait_calls, 3);
  EXPECT_EQ(hooks.accepted.back(), fd2);
  ::close(c);
  ::close(c2);
}

TEST_F(SocketSyscalls, SocketOptions) {
  int fd = int(sc(sys_socket, AF_INET, SOCK_STREAM, 0));
  uint64_t one = put<int>(1);
  EXPECT_EQ(sc(sys_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, one, sizeof(int)), 0);
  uint64_t val = put<int>(0), len = put<int>(sizeof(int));
  EXPECT_EQ(sc(sys_getsockopt, fd, SOL_SOCKET, SO_REUSEADDR, val, len), 0);
  EXPECT_EQ(get<int>(val), 1);
  EXPECT_EQ(get<int>(len), int(sizeof(int)));
  EXPECT_EQ(sc(sys_getsockopt, fd, SOL_SOCKET, SO_TYPE, val, len), 0);
  EXPECT_EQ(get<int>(val), SOCK_STREAM);

  uint64_t dev = put_bytes("lo");
  EXPECT_EQ(sc(sys_setsockopt, fd, SOL_SOCKET, SO_BINDTODEVICE, dev, 3), -EPERM);
  EXPECT_EQ(sc(sys_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, kUnmapped, sizeof(int)), -EFAULT);
  EXPECT_EQ(sc(sys_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, one, uint64_t(-1)), -EINVAL);
  EXPECT_EQ(sc(sys_getsockopt, fd, SOL_SOCKET, SO_TYPE, kReadOnly, len), -EFAULT);
  EXPECT_EQ(sc(sys_getsockopt, fd, SOL_SOCKET, SO_TYPE, val, kUnmapped), -EFAULT);
  EXPECT_EQ(sc(sys_getsockopt, fd, SOL_SOCKET, SO_TYPE, val, put<int>(-1)), -EINVAL);

  // SO_PEERCRED of a peer in this process shows the guest's ids.
  uint64_t sv = alloc(8);
  ASSERT_EQ(sc(sys_socketpair, AF_UNIX, SOCK_STREAM, 0, sv), 0);
  uint64_t cred = alloc(sizeof(ucred)), credlen = put<int>(sizeof(ucred));
  EXPECT_EQ(sc(sys_getsockopt, get<int>(sv), SOL_SOCKET, SO_PEERCRED, cred, credlen), 0);
  EXPECT_EQ(get<ucred>(cred).pid, p().pid);
  EXPECT_EQ(get<ucred>(cred).uid, p().uid);

  // EFAULT on bad address pointers.
  EXPECT_EQ(sc(sys_getsockname, fd, alloc(16), kUnmapped), -EFAULT);
  EXPECT_EQ(sc(sys_getsockname, fd, kReadOnly, put<int>(16)), -EFAULT);
  EXPECT_EQ(sc(sys_bind, fd, kUnmapped, 16), -EFAULT);
}

}  // namespace
}  // namespace kvms::linux

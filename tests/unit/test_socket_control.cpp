// Credentials over Unix sockets (SCM_CREDENTIALS, SO_PEERCRED) and the socket ioctls, through the
// syscall handlers over a real AddressSpace (no KVM). The guest's ids are set apart from the host's
// (pid 77, uid 4242, gid 4343) so that every translation shows.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/fd_table.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/socket_control.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kBase = 0x100000;
constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kReadOnly = 0x300000;
constexpr uint64_t kUnmapped = 0x400000;

class SocketControl : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mem = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem);
    ASSERT_EQ(as_->map(kBase, kSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    ASSERT_EQ(as_->map(kReadOnly, 0x1000, kvm::kProtRead, ""), 0);
    p_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(PolicyConfig{}), ProcessConfig{});
    NetPolicyConfig c;
    c.listen = {"127.0.0.1", "@kvms-creds-test"};
    c.connect = {"127.0.0.1", "@kvms-creds-test"};
    p().net_policy = std::make_shared<NetPolicy>(c);
    p().pid = p().main_tid = 77;
    p().uid = 4242;
    p().gid = 4343;
    ASSERT_NE(p().uid, ::getuid());  // else the test could not tell translated ids from host ones
  }
  Process& p() { return *p_; }

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
  template <typename T> T get(uint64_t at) {
    T v{};
    EXPECT_TRUE(as_->copy_from_user(&v, at, sizeof(T)));
    return v;
  }
  int64_t sc(int64_t (*h)(Process&, const SyscallArgs&), uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0,
             uint64_t a3 = 0, uint64_t a4 = 0) {
    SyscallArgs args;
    args.a[0] = a0, args.a[1] = a1, args.a[2] = a2, args.a[3] = a3, args.a[4] = a4;
    return h(p(), args);
  }

  // A guest socketpair of `type`; fds in s[0], s[1].
  void pair(int type, int s[2]) {
    uint64_t sv = alloc(8);
    ASSERT_EQ(sc(sys_socketpair, AF_UNIX, type, 0, sv), 0);
    s[0] = get<int>(sv);
    s[1] = get<int>(sv + 4);
  }
  void pass_creds(int fd) {
    ASSERT_EQ(sc(sys_setsockopt, fd, SOL_SOCKET, SO_PASSCRED, put<int>(1), sizeof(int)), 0);
  }
  // sendmsg of one byte with SCM_CREDENTIALS `c` (cmsg_len `len`, 0: the right one).
  int64_t send_creds(int fd, ucred c, size_t len = 0) {
    alignas(cmsghdr) uint8_t cbuf[CMSG_SPACE(sizeof(ucred))] = {};
    auto* cm = reinterpret_cast<cmsghdr*>(cbuf);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_CREDENTIALS;
    cm->cmsg_len = len ? len : CMSG_LEN(sizeof(ucred));
    std::memcpy(CMSG_DATA(cm), &c, sizeof c);
    uint64_t ucontrol = alloc(sizeof cbuf);
    EXPECT_TRUE(as_->copy_to_user(ucontrol, cbuf, sizeof cbuf));
    iovec v{reinterpret_cast<void*>(put<char>('x')), 1};
    msghdr m{};
    m.msg_iov = reinterpret_cast<iovec*>(put(v));
    m.msg_iovlen = 1;
    m.msg_control = reinterpret_cast<void*>(ucontrol);
    m.msg_controllen = sizeof cbuf;
    return sc(sys_sendmsg, fd, put(m), 0);
  }
  // recvmsg of one byte into a control buffer of `controllen`; the msghdr as it came back.
  msghdr recv(int fd, uint64_t ucontrol, size_t controllen) {
    iovec v{reinterpret_cast<void*>(alloc(1)), 1};
    msghdr m{};
    m.msg_iov = reinterpret_cast<iovec*>(put(v));
    m.msg_iovlen = 1;
    m.msg_control = reinterpret_cast<void*>(ucontrol);
    m.msg_controllen = controllen;
    uint64_t um = put(m);
    EXPECT_EQ(sc(sys_recvmsg, fd, um, 0), 1);
    return get<msghdr>(um);
  }

  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> p_;
  uint64_t next_ = kBase;
};

TEST_F(SocketControl, CredentialsSentAreTheGuestsOwnAndReadAsTheGuests) {
  int s[2];
  pair(SOCK_DGRAM, s);
  pass_creds(s[1]);
  // Its own ids: accepted (given to the host as kvmserver's), and received as the guest's.
  ASSERT_EQ(send_creds(s[0], {77, 4242, 4343}), 1);
  uint64_t ucontrol = alloc(64);
  msghdr m = recv(s[1], ucontrol, 64);
  EXPECT_EQ(m.msg_controllen, CMSG_SPACE(sizeof(ucred)));
  EXPECT_EQ(m.msg_flags & MSG_CTRUNC, 0);
  auto cm = get<cmsghdr>(ucontrol);
  EXPECT_EQ(cm.cmsg_type, SCM_CREDENTIALS);
  EXPECT_EQ(cm.cmsg_len, CMSG_LEN(sizeof(ucred)));
  ucred got = get<ucred>(ucontrol + CMSG_LEN(0));
  EXPECT_EQ(got.pid, 77);
  EXPECT_EQ(got.uid, 4242u);
  EXPECT_EQ(got.gid, 4343u);

  // Without explicit credentials the host's are attached: read as the guest's too.
  ASSERT_EQ(sc(sys_write, s[0], put<char>('y'), 1), 1);
  recv(s[1], ucontrol, 64);
  got = get<ucred>(ucontrol + CMSG_LEN(0));
  EXPECT_EQ(got.pid, 77);
  EXPECT_EQ(got.uid, 4242u);
  EXPECT_EQ(got.gid, 4343u);
}

TEST_F(SocketControl, OtherCredentialsAreRefusedAsLinuxRefusesAnUnprivilegedProcess) {
  int s[2];
  pair(SOCK_DGRAM, s);
  EXPECT_EQ(send_creds(s[0], {78, 4242, 4343}), -EPERM);               // another pid
  EXPECT_EQ(send_creds(s[0], {::getpid(), 4242, 4343}), -EPERM);       // the host's pid
  EXPECT_EQ(send_creds(s[0], {77, ::getuid(), 4343}), -EPERM);         // the host's uid
  EXPECT_EQ(send_creds(s[0], {77, 0, 4343}), -EPERM);                  // root
  EXPECT_EQ(send_creds(s[0], {77, 4242, 0}), -EPERM);                  // another gid
  EXPECT_EQ(send_creds(s[0], {77, uid_t(-1), 4343}), -EINVAL);         // no uid at all
  EXPECT_EQ(send_creds(s[0], {78, 4242, gid_t(-1)}), -EINVAL);         // EINVAL before EPERM
  EXPECT_EQ(send_creds(s[0], {77, 4242, 4343}, CMSG_LEN(0)), -EINVAL);  // not a struct ucred
  // IP sockets ignore SCM_CREDENTIALS, whatever they say.
  int u = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0));
  ASSERT_GE(u, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(sc(sys_bind, u, put(sin), sizeof sin), 0);
  uint64_t len = put<int>(sizeof sin), addr = alloc(sizeof sin);
  ASSERT_EQ(sc(sys_getsockname, u, addr, len), 0);
  ASSERT_EQ(sc(sys_connect, u, addr, sizeof sin), 0);
  EXPECT_EQ(send_creds(u, {1, 0, 0}), 1);
}

TEST_F(SocketControl, ReceivedCredentialsCutShortKeepTheGuestsBufferSize) {
  int s[2];
  pair(SOCK_STREAM, s);
  pass_creds(s[1]);
  ASSERT_EQ(send_creds(s[0], {77, 4242, 4343}), 1);
  // Room for the header and the pid only: the kernel cuts the message there, and so must we (no
  // byte written past the guest's buffer), with the pid translated.
  constexpr size_t kRoom = CMSG_SPACE(0) + sizeof(pid_t);
  uint64_t ucontrol = alloc(64);
  ASSERT_TRUE(as_->copy_to_user(ucontrol, std::string(64, '\xee').data(), 64));
  msghdr m = recv(s[1], ucontrol, kRoom);
  EXPECT_EQ(m.msg_controllen, kRoom);
  EXPECT_TRUE(m.msg_flags & MSG_CTRUNC);
  auto cm = get<cmsghdr>(ucontrol);
  EXPECT_EQ(cm.cmsg_len, kRoom);
  EXPECT_EQ(get<pid_t>(ucontrol + CMSG_LEN(0)), 77);
  EXPECT_EQ(get<uint8_t>(ucontrol + kRoom), 0xee);
}

TEST_F(SocketControl, CredentialsOfOthersAsTheGuestSeesThem) {
  // kvmserver's own host process is the guest that asks (or the one given).
  ucred own = creds_to_guest(p(), {::getpid(), ::getuid(), ::getgid()}, 77);
  EXPECT_EQ(own.pid, 77);
  EXPECT_EQ(own.uid, 4242u);
  EXPECT_EQ(own.gid, 4343u);
  EXPECT_EQ(creds_to_guest(p(), {::getpid(), ::getuid(), ::getgid()}, 90).pid, 90);
  // Another host process has no pid in the guest's world: 0, as for a peer in another pid
  // namespace. Foreign ids are shown as they are.
  ucred other = creds_to_guest(p(), {::getppid(), 12345, 23456}, 77);
  EXPECT_EQ(other.pid, 0);
  EXPECT_EQ(other.uid, 12345u);
  EXPECT_EQ(other.gid, 23456u);
  // What Linux reports for no credentials (a message written before SO_PASSCRED, or an
  // unconnected socket's SO_PEERCRED) stays as it is.
  ucred none = creds_to_guest(p(), {0, uid_t(-1), gid_t(-1)}, 77);
  EXPECT_EQ(none.pid, 0);
  EXPECT_EQ(none.uid, uid_t(-1));
  EXPECT_EQ(none.gid, gid_t(-1));
}

TEST_F(SocketControl, PeerCredentialsNameTheGuestLinuxWould) {
  int s[2];
  pair(SOCK_STREAM, s);
  // Another guest process (a fork) holding the pair asks: the creator is its peer, as on Linux.
  p().pid = p().main_tid = 78;
  uint64_t cred = alloc(sizeof(ucred)), credlen = put<int>(sizeof(ucred));
  ASSERT_EQ(sc(sys_getsockopt, s[1], SOL_SOCKET, SO_PEERCRED, cred, credlen), 0);
  EXPECT_EQ(get<ucred>(cred).pid, 77);
  EXPECT_EQ(get<ucred>(cred).uid, 4242u);
  EXPECT_EQ(get<ucred>(cred).gid, 4343u);
  // An unconnected socket has no peer: Linux's {0, -1, -1}.
  int u = int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0));
  ASSERT_EQ(sc(sys_getsockopt, u, SOL_SOCKET, SO_PEERCRED, cred, credlen), 0);
  EXPECT_EQ(get<ucred>(cred).pid, 0);
  EXPECT_EQ(get<ucred>(cred).uid, uid_t(-1));
}

TEST_F(SocketControl, ConnectionsBetweenGuestsNameEachOther) {
  // Guest 77 listens on an abstract name; guests 78 and 79 (forks: same host process) connect.
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  const std::string name = std::string(1, '\0') + "kvms-creds-test";
  std::memcpy(sun.sun_path, name.data(), name.size());
  const uint64_t addr = put(sun), len = offsetof(sockaddr_un, sun_path) + name.size();
  int l = int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0));
  ASSERT_EQ(sc(sys_bind, l, addr, len), 0);
  ASSERT_EQ(sc(sys_listen, l, 8), 0);
  int client[2];
  for (int i = 0; i < 2; ++i) {
    p().pid = p().main_tid = 78 + i;
    client[i] = int(sc(sys_socket, AF_UNIX, SOCK_STREAM, 0));
    ASSERT_EQ(sc(sys_connect, client[i], addr, len), 0);
  }
  // A connection that fails is not waiting to be accepted.
  p().pid = p().main_tid = 80;
  int dgram = int(sc(sys_socket, AF_UNIX, SOCK_DGRAM, 0));
  EXPECT_EQ(sc(sys_connect, dgram, addr, len), -ECONNREFUSED);  // another type: none listening

  uint64_t cred = alloc(sizeof(ucred)), credlen = put<int>(sizeof(ucred));
  // Each client's peer is the listener...
  ASSERT_EQ(sc(sys_getsockopt, client[0], SOL_SOCKET, SO_PEERCRED, cred, credlen), 0);
  EXPECT_EQ(get<ucred>(cred).pid, 77);
  EXPECT_EQ(get<ucred>(cred).uid, 4242u);
  // ...and each accepted connection's is the guest that made it, in order.
  p().pid = p().main_tid = 77;
  for (int i = 0; i < 2; ++i) {
    int a = int(sc(sys_accept, l, 0, 0));
    ASSERT_GE(a, 0);
    ASSERT_EQ(sc(sys_getsockopt, a, SOL_SOCKET, SO_PEERCRED, cred, credlen), 0);
    EXPECT_EQ(get<ucred>(cred).pid, 78 + i);
    EXPECT_EQ(get<ucred>(cred).gid, 4343u);
  }
  // The listening socket's own peer credentials are its listener's.
  ASSERT_EQ(sc(sys_getsockopt, l, SOL_SOCKET, SO_PEERCRED, cred, credlen), 0);
  EXPECT_EQ(get<ucred>(cred).pid, 77);
}

TEST_F(SocketControl, NetdeviceIoctlsSeeLoopbackOnly) {
  int s[2];
  pair(SOCK_DGRAM, s);
  const unsigned lo_index = if_nametoindex("lo");
  ASSERT_NE(lo_index, 0u);
  ifreq r{};
  std::strcpy(r.ifr_name, "lo");
  uint64_t ur = put(r);
  ASSERT_EQ(sc(sys_ioctl, s[0], SIOCGIFINDEX, ur), 0);
  EXPECT_EQ(get<ifreq>(ur).ifr_ifindex, int(lo_index));
  ASSERT_EQ(sc(sys_ioctl, s[0], SIOCGIFFLAGS, ur), 0);
  EXPECT_TRUE(get<ifreq>(ur).ifr_flags & IFF_LOOPBACK);

  // By index: lo's name; any other index is no interface.
  ifreq byindex{};
  byindex.ifr_ifindex = int(lo_index);
  uint64_t ub = put(byindex);
  ASSERT_EQ(sc(sys_ioctl, s[0], SIOCGIFNAME, ub), 0);
  EXPECT_STREQ(get<ifreq>(ub).ifr_name, "lo");
  for (unsigned i = 1; i < 64; ++i) {
    if (i == lo_index) continue;
    byindex.ifr_ifindex = int(i);
    EXPECT_EQ(sc(sys_ioctl, s[0], SIOCGIFNAME, put(byindex)), -ENODEV) << i;
  }

  // Another name, existing on the host or not, is no interface; a request the socket does not
  // answer stays ENOTTY whatever it names.
  char host_name[IF_NAMESIZE] = "";
  if (struct if_nameindex* all = if_nameindex()) {
    for (auto* e = all; e->if_index; ++e)
      if (std::strcmp(e->if_name, "lo") != 0) std::strncpy(host_name, e->if_name, IF_NAMESIZE - 1);
    if_freenameindex(all);
  }
  for (const char* name : {static_cast<const char*>("no-such-if0"), static_cast<const char*>(host_name)}) {
    if (!*name) continue;
    ifreq o{};
    std::strncpy(o.ifr_name, name, IFNAMSIZ - 1);
    EXPECT_EQ(sc(sys_ioctl, s[0], SIOCGIFINDEX, put(o)), -ENODEV) << name;
    EXPECT_EQ(sc(sys_ioctl, s[0], SIOCGIFHWADDR, put(o)), -ENODEV) << name;
  }
  EXPECT_EQ(sc(sys_ioctl, s[0], SIOCGIFINDEX, kUnmapped), -EFAULT);

  // SIOCGIFCONF lists lo's addresses only; with no buffer, the length they need.
  int u = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0));
  ASSERT_GE(u, 0);
  struct { int32_t len; uint64_t buf; } conf{0, 0};
  uint64_t uc = put(conf);
  ASSERT_EQ(sc(sys_ioctl, u, SIOCGIFCONF, uc), 0);
  const int32_t need = get<decltype(conf)>(uc).len;
  EXPECT_GT(need, 0);
  EXPECT_EQ(need % int32_t(sizeof(ifreq)), 0);
  conf = {int32_t(8 * sizeof(ifreq)), alloc(8 * sizeof(ifreq))};
  uc = put(conf);
  ASSERT_EQ(sc(sys_ioctl, u, SIOCGIFCONF, uc), 0);
  ASSERT_EQ(get<decltype(conf)>(uc).len, need);
  for (int32_t at = 0; at < need; at += int32_t(sizeof(ifreq)))
    EXPECT_STREQ(get<ifreq>(conf.buf + at).ifr_name, "lo");
  conf.buf = kReadOnly;
  EXPECT_EQ(sc(sys_ioctl, u, SIOCGIFCONF, put(conf)), -EFAULT);

  // Changes need CAP_NET_ADMIN: EPERM, and nothing reaches the host.
  EXPECT_EQ(sc(sys_ioctl, s[0], SIOCSIFFLAGS, ur), -EPERM);
  EXPECT_EQ(sc(sys_ioctl, s[0], SIOCSIFMTU, kUnmapped), -EFAULT);
  EXPECT_EQ(sc(sys_ioctl, u, SIOCSIFADDR, ur), -EPERM);
  EXPECT_EQ(sc(sys_ioctl, s[0], SIOCSIFADDR, ur), -ENOTTY);  // not a Unix socket's request
}

TEST_F(SocketControl, QueueAndTimestampIoctls) {
  int s[2];
  pair(SOCK_STREAM, s);
  uint64_t n = put<int>(-1);
  ASSERT_EQ(sc(sys_ioctl, s[0], SIOCOUTQ, n), 0);
  EXPECT_EQ(get<int>(n), 0);
  EXPECT_EQ(sc(sys_ioctl, s[0], SIOCOUTQ, kReadOnly), -EFAULT);
  EXPECT_EQ(sc(sys_ioctl, s[0], SIOCGSTAMP_OLD, alloc(16)), -ENOTTY);  // Unix sockets have none

  // UDP: no packet yet is ENOENT; after one, its receive time.
  int a = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0)), b = int(sc(sys_socket, AF_INET, SOCK_DGRAM, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(sc(sys_bind, b, put(sin), sizeof sin), 0);
  uint64_t addr = alloc(sizeof sin), len = put<int>(sizeof sin);
  ASSERT_EQ(sc(sys_getsockname, b, addr, len), 0);
  uint64_t tv = alloc(16);
  EXPECT_EQ(sc(sys_ioctl, b, SIOCGSTAMP_OLD, tv), -ENOENT);
  ASSERT_EQ(sc(sys_connect, a, addr, sizeof sin), 0);
  ASSERT_EQ(sc(sys_write, a, put<char>('z'), 1), 1);
  ASSERT_EQ(sc(sys_read, b, alloc(1), 1), 1);
  ASSERT_EQ(sc(sys_ioctl, b, SIOCGSTAMP_OLD, tv), 0);
  EXPECT_GT(get<int64_t>(tv), 0);  // seconds since the epoch
  ASSERT_EQ(sc(sys_ioctl, b, SIOCGSTAMPNS_OLD, tv), 0);
  EXPECT_GT(get<int64_t>(tv), 0);
  EXPECT_EQ(sc(sys_ioctl, b, SIOCGSTAMP_OLD, kReadOnly), -EFAULT);
}

TEST_F(SocketControl, ASocketCannotBeReopenedThroughProc) {
  int s[2];
  pair(SOCK_STREAM, s);
  const std::string path = "/proc/self/fd/" + std::to_string(s[0]);
  uint64_t up = alloc(path.size() + 1);
  ASSERT_TRUE(as_->copy_to_user(up, path.c_str(), path.size() + 1));
  EXPECT_EQ(sc(sys_openat, uint64_t(AT_FDCWD), up, O_WRONLY), -ENXIO);
  EXPECT_EQ(sc(sys_openat, uint64_t(AT_FDCWD), up, O_RDONLY), -ENXIO);
  EXPECT_GE(sc(sys_openat, uint64_t(AT_FDCWD), up, O_PATH), 0);  // O_PATH opens nothing
}

}  // namespace
}  // namespace kvms::linux

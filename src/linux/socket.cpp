// Sockets: TCP/UDP over IPv4/IPv6 and Unix sockets, backed by host sockets. Every address the
// guest binds or reaches is checked against the network policy (--allow-listen/--allow-connect);
// Unix socket paths also go through the file policy, and the host socket is bound or connected
// through the resolved host path without following symlinks (see unix_bind/unix_target).
//
// Host sockets are always close-on-exec and sends always carry MSG_NOSIGNAL (the host must never
// die of SIGPIPE). A host fd is blocking exactly when the guest's is, so a blocking guest call is a
// blocking host call.
//
// Unix names: a path-bound guest socket is bound on the host as /proc/self/fd/DIRFD/NAME, which
// the kernel then reports as its name. The guest's own name is kept in OpenFile::path as
// "unix:NAME" (getsockname, and accepted sockets inherit it), and a process-wide table maps the
// reported host names back to guest names for the addresses of peers (getpeername, accept,
// recvfrom, recvmsg). Unix addresses not made by us (a host server's path) are passed unchanged.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "linux/deadline.hpp"
#include "linux/host_fs.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "linux/file_quota.hpp"
#include "linux/socket_control.hpp"
#include "linux/syscalls.hpp"

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace kvms::linux {
namespace {

constexpr socklen_t kSunPathOffset = offsetof(sockaddr_un, sun_path);
constexpr uint64_t kMaxIov = 1024;             // UIO_MAXIOV
constexpr uint64_t kMaxRw = 0x7ffff000;        // MAX_RW_COUNT
constexpr size_t kMaxControl = 256 * 1024;     // control buffers beyond this: ENOBUFS (like optmem_max)
constexpr size_t kMaxOptLen = 64 * 1024;       // socket option buffers
constexpr uint64_t kMmsgSize = sizeof(mmsghdr);  // 64
constexpr int kFlagMask = SOCK_NONBLOCK | SOCK_CLOEXEC;

// ---------------------------------------------------------------------------------------------
// Addresses

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  sockaddr* sa() { return reinterpret_cast<sockaddr*>(&ss); }
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
  sockaddr_un* un() { return reinterpret_cast<sockaddr_un*>(&ss); }
  const sockaddr_un* un() const { return reinterpret_cast<const sockaddr_un*>(&ss); }
  int family() const { return len >= sizeof(sa_family_t) ? ss.ss_family : -1; }
};

// A guest sockaddr argument. Linux reads the length as an int.
int read_sockaddr(Process& p, uint64_t addr, uint64_t len64, SockAddr& out) {
  int len = static_cast<int>(len64);
  if (len < 0 || size_t(len) > sizeof(sockaddr_storage)) return -EINVAL;
  out = {};
  if (len > 0 && !p.mm().copy_from_user(&out.ss, addr, len)) return -EFAULT;
  out.len = len;
  return 0;
}

void set_unix_path(SockAddr& a, std::string_view path) {
  a = {};
  a.un()->sun_family = AF_UNIX;
  size_t n = std::min(path.size(), sizeof(a.un()->sun_path) - 1);
  std::memcpy(a.un()->sun_path, path.data(), n);
  a.len = kSunPathOffset + n + 1;
}

enum class UnixKind { Unnamed, Abstract, Path };

UnixKind unix_kind(const SockAddr& a) {
  if (a.len <= kSunPathOffset) return UnixKind::Unnamed;
  return a.un()->sun_path[0] == '\0' ? UnixKind::Abstract : UnixKind::Path;
}

std::string unix_path(const SockAddr& a) {
  size_t max = std::min<size_t>(a.len - kSunPathOffset, sizeof(a.un()->sun_path));
  return std::string(a.un()->sun_path, strnlen(a.un()->sun_path, max));
}

// Host names of sockets we bound (/proc/self/fd/N/NAME) -> the guest's name. Best effort: a later
// bind through the same dirfd number and name replaces an older entry.
std::mutex g_names_mu;
std::unordered_map<std::string, std::string> g_names;

void remember_unix_name(const std::string& host, const std::string& guest) {
  std::lock_guard lock(g_names_mu);
  if (g_names.size() >= 65536) g_names.clear();
  g_names[host] = guest;
}

// A host-reported address, as the guest should see it.
void to_guest_addr(SockAddr& a) {
  if (a.family() != AF_UNIX || unix_kind(a) != UnixKind::Path) return;
  std::string host = unix_path(a);
  std::lock_guard lock(g_names_mu);
  auto it = g_names.find(host);
  if (it != g_names.end()) set_unix_path(a, it->second);
}

// The (addr, addrlen) pair of a returned address: addrlen is in/out.
struct AddrOut {
  uint64_t addr = 0, lenp = 0;
  int ulen = 0;
};

int prepare_addr_out(Process& p, uint64_t addr, uint64_t lenp, AddrOut& o) {
  o.addr = addr;
  o.lenp = lenp;
  if (!p.mm().read(lenp, o.ulen)) return -EFAULT;
  if (o.ulen < 0) return -EINVAL;
  if (o.ulen > 0 && !p.mm().writable(addr, o.ulen)) return -EFAULT;
  return 0;
}

int write_addr_out(Process& p, const AddrOut& o, const SockAddr& a) {
  size_t n = std::min<size_t>(size_t(o.ulen), a.len);
  if (n > 0 && !p.mm().copy_to_user(o.addr, &a.ss, n)) return -EFAULT;
  int klen = static_cast<int>(a.len);
  return p.mm().write(o.lenp, klen) ? 0 : -EFAULT;
}

// Minimum lengths the kernel insists on; other families are not ours to pass to the host.
int check_inet_addr(const SockAddr& a) {
  switch (a.family()) {
    case AF_INET:
    case AF_UNSPEC:
      return a.len >= sizeof(sockaddr_in) ? 0 : -EINVAL;
    case AF_INET6:
      return a.len >= 24 ? 0 : -EINVAL;  // SIN6_LEN_RFC2133
    default:
      return -EAFNOSUPPORT;
  }
}

// ---------------------------------------------------------------------------------------------
// Sockets and host fds

std::shared_ptr<OpenFile> socket_file(Process& p, uint64_t fd, int& err) {
  auto f = p.fds.get(static_cast<int>(fd));
  if (!f || (f->status_flags & O_PATH)) {  // an O_PATH fd names a file, it cannot be used as one
    err = -EBADF;
    return nullptr;
  }
  if (f->kind != OpenFile::Kind::Socket) {
    err = -ENOTSOCK;
    return nullptr;
  }
  return f;
}

int sockopt_int(int host_fd, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (::getsockopt(host_fd, SOL_SOCKET, name, &v, &len) != 0) return -1;
  return v;
}

std::string inode_name(int host_fd, const char* kind) {
  struct stat st{};
  fstat(host_fd, &st);
  return std::string(kind) + ":[" + std::to_string(st.st_ino) + "]";
}

}  // namespace

// A host fd received with SCM_RIGHTS, as a guest file (socket_control.hpp).
std::shared_ptr<OpenFile> adopt_host_fd(int host_fd) {
  OpenFile::Kind kind = kind_of(host_fd);
  std::string name;
  if (kind == OpenFile::Kind::Socket) {
    name = inode_name(host_fd, "socket");
  } else if (kind == OpenFile::Kind::Pipe) {
    name = inode_name(host_fd, "pipe");
  } else {
    char buf[4096];
    std::string link = "/proc/self/fd/" + std::to_string(host_fd);
    ssize_t n = readlink(link.c_str(), buf, sizeof buf);
    name = n > 0 ? std::string(buf, n) : "anon_inode:[unknown]";
  }
  int flags = fcntl(host_fd, F_GETFL);
  auto f = std::make_shared<OpenFile>(host_fd, kind, std::move(name), flags < 0 ? O_RDWR : flags);
  if (kind == OpenFile::Kind::Socket) f->listening = sockopt_int(host_fd, SO_ACCEPTCONN) == 1;
  return f;
}

namespace {

struct FdCloser {
  int fd = -1;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

void log_listen_denied(Process& p, const std::string& what) {
  p.log("denied: listen on " + what + " (allow with --allow-listen=" + what + ")");
}
void log_connect_denied(Process& p, const std::string& what) {
  p.log("denied: connect to " + what + " (allow with --allow-connect=" + what + ")");
}

// A Unix socket path needs two grants: the network policy's (for listening or connecting) and the
// file policy's (writing the socket file to bind, reading it to connect). The resolved path, or
// -errno after the --verbose denial line.
std::variant<PathPolicy::Resolved, int> unix_path_grant(Process& p, const std::string& raw, bool listening) {
  const std::string guest = join_guest_path(p.cwd, raw);
  const std::string norm = normalize_path(guest);
  const Access access = listening ? Access::Write : Access::Read;
  auto r = p.policy().resolve(guest, access, !listening);
  auto* ok = std::get_if<PathPolicy::Resolved>(&r);
  auto may = [&](const std::string& path) {
    return listening ? p.net_policy->may_listen_path(path) : p.net_policy->may_connect_path(path);
  };
  if (!p.net_policy || !(may(norm) || (ok && may(ok->guest_path)))) {
    listening ? log_listen_denied(p, norm) : log_connect_denied(p, norm);
    return -EACCES;
  }
  if (!ok && std::get<int>(r) == -EACCES) p.log_denied(norm, p.policy().suggestion(guest, access));
  return r;
}

// bind() of a Unix socket to a path: the network policy must grant the path for listening and the
// file policy must grant writing it. `key` is the socket file's, for unix_listener_bound.
int64_t unix_bind(Process& p, OpenFile& f, const std::string& raw, std::string& key) {
  auto r = unix_path_grant(p, raw, true);
  if (auto* e = std::get_if<int>(&r)) return *e;
  const auto* ok = &std::get<PathPolicy::Resolved>(r);
  if (ok->exists) return -EADDRINUSE;
  const std::string& host = ok->host_path;
  auto slash = host.rfind('/');
  if (slash == std::string::npos || slash + 1 >= host.size()) return -EINVAL;
  std::string parent = slash == 0 ? "/" : host.substr(0, slash), name = host.substr(slash + 1);
  FdCloser dir{fileops::open_host(parent, O_PATH | O_DIRECTORY, 0)};
  if (dir.fd < 0) return dir.fd;
  std::string via = "/proc/self/fd/" + std::to_string(dir.fd) + "/" + name;
  if (via.size() >= sizeof(sockaddr_un::sun_path)) return -ENAMETOOLONG;
  SockAddr host_addr;
  set_unix_path(host_addr, via);
  if (::bind(f.host_fd, host_addr.sa(), host_addr.len) != 0) return -errno;
  struct stat st{};
  if (::fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) key = unix_file_key(st);
  remember_unix_name(via, raw);
  f.path = "unix:" + raw;
  return 0;
}

// The host address for reaching a Unix socket path (connect, sendto): granted by the network
// policy for connecting and by the file policy for reading; the socket file is opened without
// following symlinks and reached through /proc/self/fd/N, which `hold` keeps open.
int64_t unix_target(Process& p, const std::string& raw, SockAddr& out, FdCloser& hold) {
  auto r = unix_path_grant(p, raw, false);
  if (auto* e = std::get_if<int>(&r)) return *e;
  const auto* ok = &std::get<PathPolicy::Resolved>(r);
  if (!ok->exists) return -ENOENT;
  hold.fd = fileops::open_host(ok->host_path, O_PATH, 0);
  if (hold.fd < 0) return hold.fd;
  struct stat st{};
  if (fstat(hold.fd, &st) != 0) return -errno;
  if (S_ISLNK(st.st_mode)) return -ELOOP;  // swapped in after the policy walk
  if (!S_ISSOCK(st.st_mode)) return -ECONNREFUSED;
  set_unix_path(out, "/proc/self/fd/" + std::to_string(hold.fd));
  return 0;
}

// A destination for connect() or a datagram send: checked, and rewritten for Unix paths.
int64_t check_destination(Process& p, SockAddr& dest, FdCloser& hold) {
  if (dest.family() == AF_UNIX) {
    switch (unix_kind(dest)) {
      case UnixKind::Unnamed:
        return 0;  // names nothing; the host fails it
      case UnixKind::Path:
        return unix_target(p, unix_path(dest), dest, hold);
      case UnixKind::Abstract:
        break;
    }
  } else if (int rc = check_inet_addr(dest); rc < 0) {
    return rc;
  }
  if (!p.net_policy || !p.net_policy->may_connect(dest.sa(), dest.len)) {
    log_connect_denied(p, NetPolicy::describe(dest.sa(), dest.len));
    return -EACCES;
  }
  return 0;
}

// The destination of sendto/sendmsg. Stream sockets ignore it (TCP) or fail (Unix) unless it
// starts a TCP Fast Open connection, which is a connect; datagram destinations are connects.
// Returns 0 with dest.len = 0 when no address is to be passed to the host.
int64_t send_destination(Process& p, OpenFile& f, SockAddr& dest, int flags, FdCloser& hold) {
  if (dest.len == 0) return 0;
  int type = sockopt_int(f.host_fd, SO_TYPE);
  if (type == SOCK_STREAM && !(flags & MSG_FASTOPEN)) {
    if (sockopt_int(f.host_fd, SO_DOMAIN) == AF_UNIX) {
      SockAddr peer;
      peer.len = sizeof peer.ss;
      return ::getpeername(f.host_fd, peer.sa(), &peer.len) == 0 ? -EISCONN : -EOPNOTSUPP;
    }
    dest.len = 0;
    return 0;
  }
  if (type == SOCK_SEQPACKET) {  // Unix seqpacket ignores it
    dest.len = 0;
    return 0;
  }
  return check_destination(p, dest, hold);
}

// ---------------------------------------------------------------------------------------------
// Messages

// The guest's iovec array as host iovecs over guest memory (every byte of each must be accessible
// with the span's access), at most MAX_RW_COUNT in total; `spans` are the guest ranges behind them.
template <typename Span>
int64_t load_iov(Process& p, uint64_t iov_addr, uint64_t iovlen, std::vector<iovec>& out, std::vector<Span>& spans) {
  if (iovlen > kMaxIov) return -EMSGSIZE;
  std::vector<iovec> raw(iovlen);
  if (iovlen && !p.mm().copy_from_user(raw.data(), iov_addr, iovlen * sizeof(iovec))) return -EFAULT;
  uint64_t total = 0;
  out.clear();
  spans.clear();
  for (const auto& v : raw) {
    uint64_t base = reinterpret_cast<uint64_t>(v.iov_base), len = v.iov_len;
    if (int64_t(len) < 0) return -EINVAL;
    len = std::min(len, kMaxRw - total);
    std::optional<Span> span;
    if constexpr (std::is_same_v<Span, kvm::WritableSpan>)
      span = p.mm().writable(base, len);
    else
      span = p.mm().readable(base, len);
    if (!span) return -EFAULT;
    out.push_back({const_cast<uint8_t*>(span->data()), len});
    spans.push_back(*span);
    total += len;
  }
  return 0;
}

void note_iov_writes(Process& p, const std::vector<kvm::WritableSpan>& spans, uint64_t n) {
  for (const auto& span : spans) {
    if (n == 0) break;
    uint64_t k = std::min(span.size(), n);
    p.mm().note_write(span, k);
    n -= k;
  }
}

int64_t do_sendmsg(Process& p, OpenFile& f, uint64_t umsg, int flags) {
  msghdr gm{};
  if (!p.mm().read(umsg, gm)) return -EFAULT;
  SockAddr dest;
  if (gm.msg_name && gm.msg_namelen) {
    if (int rc = read_sockaddr(p, reinterpret_cast<uint64_t>(gm.msg_name), gm.msg_namelen, dest); rc < 0) return rc;
  }
  std::vector<iovec> iov;
  std::vector<kvm::ReadableSpan> spans;
  if (int64_t rc = load_iov(p, reinterpret_cast<uint64_t>(gm.msg_iov), gm.msg_iovlen, iov, spans); rc < 0) return rc;
  std::vector<uint8_t> control;
  std::vector<std::shared_ptr<OpenFile>> passed;
  if (gm.msg_controllen) {
    if (gm.msg_controllen > kMaxControl) return -ENOBUFS;
    std::vector<uint8_t> in(gm.msg_controllen);
    if (!p.mm().copy_from_user(in.data(), reinterpret_cast<uint64_t>(gm.msg_control), in.size())) return -EFAULT;
    const bool unix_socket = sockopt_int(f.host_fd, SO_DOMAIN) == AF_UNIX;
    if (int64_t rc = control_to_host(p, in, unix_socket, control, passed); rc < 0) return rc;
  }
  FdCloser hold;
  if (int64_t rc = send_destination(p, f, dest, flags, hold); rc < 0) return rc;
  msghdr hm{};
  hm.msg_name = dest.len ? dest.sa() : nullptr;
  hm.msg_namelen = dest.len;
  hm.msg_iov = iov.data();
  hm.msg_iovlen = iov.size();
  hm.msg_control = control.empty() ? nullptr : control.data();
  hm.msg_controllen = control.size();
  Process::BlockingSection unlocked(p);
  return errno_result(::sendmsg(f.host_fd, &hm, flags | MSG_NOSIGNAL));
}

int64_t do_recvmsg(Process& p, OpenFile& f, uint64_t umsg, int flags) {
  msghdr gm{};
  if (!p.mm().read(umsg, gm)) return -EFAULT;
  const uint64_t uname = reinterpret_cast<uint64_t>(gm.msg_name);
  const uint64_t ucontrol = reinterpret_cast<uint64_t>(gm.msg_control);
  int namelen = static_cast<int>(gm.msg_namelen);
  if (uname) {
    if (namelen < 0) return -EINVAL;
    namelen = std::min<int>(namelen, sizeof(sockaddr_storage));
    if (namelen && !p.mm().writable(uname, namelen)) return -EFAULT;
  }
  std::vector<iovec> iov;
  std::vector<kvm::WritableSpan> spans;
  if (int64_t rc = load_iov(p, reinterpret_cast<uint64_t>(gm.msg_iov), gm.msg_iovlen, iov, spans); rc < 0) return rc;
  std::vector<uint8_t> control;
  if (ucontrol && gm.msg_controllen) {
    control.resize(std::min<size_t>(gm.msg_controllen, kMaxControl));
    if (!p.mm().writable(ucontrol, control.size())) return -EFAULT;
  }
  SockAddr from;
  msghdr hm{};
  if (uname) {
    hm.msg_name = from.sa();
    hm.msg_namelen = sizeof from.ss;
  }
  hm.msg_iov = iov.data();
  hm.msg_iovlen = iov.size();
  hm.msg_control = control.empty() ? nullptr : control.data();
  hm.msg_controllen = control.size();
  ssize_t n;
  {
    Process::BlockingSection unlocked(p);
    n = ::recvmsg(f.host_fd, &hm, (flags & ~MSG_WAITFORONE) | MSG_CMSG_CLOEXEC);
  }
  if (n < 0) return -errno;
  note_iov_writes(p, spans, uint64_t(n));

  int out_flags = hm.msg_flags & ~MSG_CMSG_CLOEXEC;
  size_t out_controllen = 0;
  if (!control.empty()) {
    bool truncated = false;
    out_controllen = control_to_guest(p, control.data(), hm.msg_controllen, flags & MSG_CMSG_CLOEXEC, p.pid, truncated);
    if (truncated) out_flags |= MSG_CTRUNC;
    if (out_controllen && !p.mm().copy_to_user(ucontrol, control.data(), out_controllen)) return -EFAULT;
  }
  if (!p.mm().write<size_t>(umsg + offsetof(msghdr, msg_controllen), out_controllen)) return -EFAULT;
  if (!p.mm().write<int>(umsg + offsetof(msghdr, msg_flags), out_flags)) return -EFAULT;
  if (uname) {
    from.len = hm.msg_namelen;
    to_guest_addr(from);
    size_t k = std::min<size_t>(namelen, from.len);
    if (k && !p.mm().copy_to_user(uname, &from.ss, k)) return -EFAULT;
    if (!p.mm().write<socklen_t>(umsg + offsetof(msghdr, msg_namelen), from.len)) return -EFAULT;
  }
  return n;
}

// The error accept(2) gives on a socket that cannot accept (not connection-based: EOPNOTSUPP; not
// listening: EINVAL), or 0.
int accept_refusal(int host_fd) {
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(host_fd, SOL_SOCKET, SO_TYPE, &value, &len) == 0 && value != SOCK_STREAM && value != SOCK_SEQPACKET)
    return -EOPNOTSUPP;
  len = sizeof value;
  if (getsockopt(host_fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) == 0 && value == 0) return -EINVAL;
  return 0;
}

int64_t do_accept(Process& p, uint64_t fd, uint64_t addr, uint64_t lenp, int flags) {
  if (flags & ~kFlagMask) return -EINVAL;
  int err = 0;
  auto f = socket_file(p, fd, err);
  if (!f) return err;
  AddrOut out;
  if (addr) {
    // Linux looks at the address buffer only once it has a connection: a socket that cannot accept
    // says so first, whatever the buffer.
    if (int rc = prepare_addr_out(p, addr, lenp, out); rc < 0) {
      const int refusal = accept_refusal(f->host_fd);
      return refusal ? refusal : rc;
    }
  }
  if (p.fds.open_count() >= size_t(p.fds.limit())) return -EMFILE;
  int host_flags = fcntl(f->host_fd, F_GETFL);
  bool nonblock = (f->status_flags & O_NONBLOCK) || (host_flags >= 0 && (host_flags & O_NONBLOCK));
  if (f->listening && p.server) {
    bool hidden = p.server->listener_hidden(p);
    if (hidden && nonblock) return -EAGAIN;
    if (!nonblock) {
      if (&p.thread() == &p.main_thread() && p.server->before_blocking_accept(p))
        return 0;  // left pending; the result is ignored
      if (hidden) return -EAGAIN;  // as a blocking accept with SO_RCVTIMEO would
    }
  }
  SockAddr peer;
  peer.len = sizeof peer.ss;
  int h;
  {
    Process::BlockingSection unlocked(p);
    h = ::accept4(f->host_fd, peer.sa(), &peer.len, SOCK_CLOEXEC | (flags & SOCK_NONBLOCK));
  }
  if (h < 0) return -errno;
  std::string path = f->path.rfind("unix:", 0) == 0 ? f->path : inode_name(h, "socket");
  auto nf = std::make_shared<OpenFile>(h, OpenFile::Kind::Socket, std::move(path),
                                       O_RDWR | ((flags & SOCK_NONBLOCK) ? O_NONBLOCK : 0));
  if (int rc = charge_open_file(p, *nf, host_cost::kSocket, ENOBUFS, "accept")) return rc;  // the connection is dropped
  // A connection the front made for a client (--isolate=request) shows the client as its peer.
  bool shown = false;
  if (f->next_peer) {
    std::lock_guard<std::mutex> lk(f->next_peer->mutex);
    if (f->next_peer->peer) {
      nf->shown_peer = std::make_shared<OpenFile::Address>(*f->next_peer->peer);
      f->next_peer->peer.reset();
      std::memcpy(&peer.ss, &nf->shown_peer->addr, nf->shown_peer->len);
      peer.len = nf->shown_peer->len;
      shown = true;
    }
  }
  nf->shown_local = f->shown_local;
  if (f->cred_pid) {  // a guest's listener: a connection from kvmserver itself is from a guest
    ucred c{};
    socklen_t clen = sizeof c;
    if (::getsockopt(h, SOL_SOCKET, SO_PEERCRED, &c, &clen) == 0 && c.pid == ::getpid()) nf->cred_pid = unix_accepted(*f);
  }
  int gfd = p.fds.install(std::move(nf), flags & SOCK_CLOEXEC);
  if (gfd < 0) return gfd;
  if (addr) {
    if (!shown) to_guest_addr(peer);
    if (int rc = write_addr_out(p, out, peer); rc < 0) {
      p.fds.close(gfd);
      return rc;
    }
  }
  if (p.server) p.server->on_accept(p, gfd);
  return gfd;
}

// socket()/socketpair() type argument: the base type and flags, or -EINVAL.
int split_type(uint64_t arg, int& base, int& flags) {
  int type = static_cast<int>(arg);
  flags = type & kFlagMask;
  base = type & ~kFlagMask;
  return (base & ~0xf) ? -EINVAL : 0;
}

std::shared_ptr<OpenFile> new_socket_file(int host_fd, int flags) {
  return std::make_shared<OpenFile>(host_fd, OpenFile::Kind::Socket, inode_name(host_fd, "socket"),
                                    O_RDWR | ((flags & SOCK_NONBLOCK) ? O_NONBLOCK : 0));
}

// Options that are not the guest's to set: they need privileges a root host might have, or carry
// host fds.
bool setsockopt_denied(int level, int name) {
  if (level == SOL_SOCKET)
    return name == SO_BINDTODEVICE || name == SO_BINDTOIFINDEX || name == SO_MARK || name == SO_SNDBUFFORCE ||
           name == SO_RCVBUFFORCE || name == SO_ATTACH_BPF || name == SO_ATTACH_REUSEPORT_EBPF;
  if (level == SOL_IP) return name == IP_TRANSPARENT || name == IP_IPSEC_POLICY || name == IP_XFRM_POLICY;
  if (level == SOL_IPV6) return name == IPV6_TRANSPARENT || name == IPV6_IPSEC_POLICY || name == IPV6_XFRM_POLICY;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

namespace {

// What Linux answers an unprivileged socket() of an internet domain that kvmserver does not make:
// 0 for TCP and UDP.
int inet_socket_error(int base, int protocol) {
  // Raw sockets need CAP_NET_RAW (EPERM), once the protocol is known to exist (0 is none).
  if (base == SOCK_RAW) return protocol == 0 ? -EPROTONOSUPPORT : -EPERM;
  if (base == SOCK_PACKET) return -EPERM;
  if (base == SOCK_STREAM) return protocol != 0 && protocol != IPPROTO_TCP ? -EPROTONOSUPPORT : 0;
  if (base == SOCK_DGRAM) {
    if (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6) return -EACCES;  // ping sockets: not in ping_group_range
    return protocol != 0 && protocol != IPPROTO_UDP ? -EPROTONOSUPPORT : 0;
  }
  return -ESOCKTNOSUPPORT;
}

}  // namespace

KVMS_SYSCALL(socket) {
  const int domain = static_cast<int>(a.a[0]), protocol = static_cast<int>(a.a[2]);
  int base, flags;
  if (int rc = split_type(a.a[1], base, flags); rc < 0) return rc;
  switch (domain) {
    case AF_UNIX:
      break;
    case AF_INET:
    case AF_INET6:
      if (int rc = inet_socket_error(base, protocol)) return rc;
      break;
    case AF_PACKET:
      return -EPERM;  // CAP_NET_RAW
    default:  // AF_NETLINK and everything else
      return -EAFNOSUPPORT;
  }
  int h = ::socket(domain, base | SOCK_CLOEXEC | (flags & SOCK_NONBLOCK), protocol);
  if (h < 0) return -errno;
  auto f = new_socket_file(h, flags);
  if (int rc = charge_open_file(p, *f, host_cost::kSocket, ENOBUFS, "socket")) return rc;
  return p.fds.install(std::move(f), flags & SOCK_CLOEXEC);
}

KVMS_SYSCALL(socketpair) {
  const int domain = static_cast<int>(a.a[0]), protocol = static_cast<int>(a.a[2]);
  int base, flags;
  if (int rc = split_type(a.a[1], base, flags); rc < 0) return rc;
  if (domain == AF_INET || domain == AF_INET6) {  // the socket's own errors first, as Linux makes it first
    if (int rc = inet_socket_error(base, protocol)) return rc;
    return -EOPNOTSUPP;
  }
  if (domain != AF_UNIX) return -EAFNOSUPPORT;
  if (!p.mm().writable(a.a[3], 2 * sizeof(int))) return -EFAULT;
  int h[2];
  if (::socketpair(AF_UNIX, base | SOCK_CLOEXEC | (flags & SOCK_NONBLOCK), protocol, h) != 0) return -errno;
  auto f0 = new_socket_file(h[0], flags), f1 = new_socket_file(h[1], flags);
  static std::atomic<uint64_t> pairs{0};
  f0->socketpair_id = f1->socketpair_id = ++pairs;
  f0->cred_pid = f1->cred_pid = p.pid;  // Linux's peer credentials of both ends: the creator's
  if (int rc = charge_open_file(p, *f0, host_cost::kSocket, ENOBUFS, "socketpair")) return rc;
  if (int rc = charge_open_file(p, *f1, host_cost::kSocket, ENOBUFS, "socketpair")) return rc;
  int g[2];
  g[0] = p.fds.install(std::move(f0), flags & SOCK_CLOEXEC);
  if (g[0] < 0) return g[0];  // both OpenFiles close their host fds
  g[1] = p.fds.install(std::move(f1), flags & SOCK_CLOEXEC);
  if (g[1] < 0) {
    p.fds.close(g[0]);
    return g[1];
  }
  if (!p.mm().copy_to_user(a.a[3], g, sizeof g)) {
    p.fds.close(g[0]);
    p.fds.close(g[1]);
    return -EFAULT;
  }
  return 0;
}

KVMS_SYSCALL(bind) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  SockAddr addr;
  if (int rc = read_sockaddr(p, a.a[1], a.a[2], addr); rc < 0) return rc;
  if (addr.len < sizeof(sa_family_t)) return -EINVAL;
  int domain = sockopt_int(f->host_fd, SO_DOMAIN);
  if (addr.family() == AF_UNIX) {
    if (domain != AF_UNIX) return -EAFNOSUPPORT;
    switch (unix_kind(addr)) {
      case UnixKind::Unnamed:  // autobind to a fresh abstract name: needs no grant
        return errno_result(::bind(f->host_fd, addr.sa(), addr.len));
      case UnixKind::Path: {
        std::string key;
        const int64_t rc = unix_bind(p, *f, unix_path(addr), key);
        if (rc == 0 && !key.empty()) unix_listener_bound(key, f);
        return rc;
      }
      case UnixKind::Abstract:
        break;
    }
  } else {
    if (domain == AF_UNIX) return -EINVAL;
    if (int rc = check_inet_addr(addr); rc < 0) return rc;
  }
  if (!p.net_policy || !p.net_policy->may_listen(addr.sa(), addr.len)) {
    log_listen_denied(p, NetPolicy::describe(addr.sa(), addr.len));
    return -EACCES;
  }
  if (::bind(f->host_fd, addr.sa(), addr.len) != 0) return -errno;
  if (addr.family() == AF_UNIX) unix_listener_bound(unix_abstract_key(addr.un()->sun_path, addr.len - kSunPathOffset), f);
  return 0;
}

KVMS_SYSCALL(listen) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  // An unbound TCP socket listens on the wildcard address at an ephemeral port: that needs a grant.
  int domain = sockopt_int(f->host_fd, SO_DOMAIN);
  if ((domain == AF_INET || domain == AF_INET6) && sockopt_int(f->host_fd, SO_TYPE) == SOCK_STREAM) {
    SockAddr self;
    self.len = sizeof self.ss;
    if (::getsockname(f->host_fd, self.sa(), &self.len) != 0) return -errno;
    uint16_t port = domain == AF_INET ? reinterpret_cast<sockaddr_in*>(&self.ss)->sin_port
                                      : reinterpret_cast<sockaddr_in6*>(&self.ss)->sin6_port;
    if (port == 0 && (!p.net_policy || !p.net_policy->may_listen(self.sa(), self.len))) {
      log_listen_denied(p, NetPolicy::describe(self.sa(), self.len));
      return -EACCES;
    }
  }
  bool inherited_listener = false;
  if (p.server && !f->listening) {
    // Socket activation: the guest listens where systemd's socket is, whatever it bound, and
    // keeps the file status flags it set (O_NONBLOCK) on the socket it now holds.
    if (int inherited = p.server->take_inherited_listener(p, domain); inherited >= 0) {
      const int flags = ::fcntl(f->host_fd, F_GETFL);
      const int rc = ::dup3(inherited, f->host_fd, O_CLOEXEC);
      const int err = errno;
      ::close(inherited);
      if (rc < 0) return -err;
      if (flags >= 0) ::fcntl(f->host_fd, F_SETFL, flags);
      inherited_listener = true;
    }
  }
  if (::listen(f->host_fd, static_cast<int>(a.a[1])) != 0) return -errno;
  f->listening = true;
  // A listening socket's peer credentials are its listener's (an inherited one's are its maker's).
  if (!inherited_listener) f->cred_pid = p.pid;
  return 0;
}

KVMS_SYSCALL(accept) { return do_accept(p, a.a[0], a.a[1], a.a[2], 0); }
KVMS_SYSCALL(accept4) { return do_accept(p, a.a[0], a.a[1], a.a[2], static_cast<int>(a.a[3])); }

KVMS_SYSCALL(connect) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  SockAddr addr;
  if (int rc = read_sockaddr(p, a.a[1], a.a[2], addr); rc < 0) return rc;
  if (addr.len < sizeof(sa_family_t)) return -EINVAL;
  FdCloser hold;
  // AF_UNSPEC dissolves the association (every family we support reads it that way).
  if (addr.family() != AF_UNSPEC) {
    if (int64_t rc = check_destination(p, addr, hold); rc < 0) return rc;
  }
  // A connection to a guest's Unix listener: who is at each end (socket_control.cpp).
  std::shared_ptr<OpenFile> listener;
  if (addr.family() == AF_UNIX) {
    struct stat st{};
    if (hold.fd >= 0 && ::fstat(hold.fd, &st) == 0)
      listener = unix_connecting(p, unix_file_key(st));
    else if (unix_kind(addr) == UnixKind::Abstract)
      listener = unix_connecting(p, unix_abstract_key(addr.un()->sun_path, addr.len - kSunPathOffset));
  }
  int rc;
  {
    Process::BlockingSection unlocked(p);
    rc = ::connect(f->host_fd, addr.sa(), addr.len) == 0 ? 0 : -errno;
  }
  if (listener) unix_connected(p, *f, *listener, rc == 0);
  return rc;
}

KVMS_SYSCALL(shutdown) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  return errno_result(::shutdown(f->host_fd, static_cast<int>(a.a[1])));
}

KVMS_SYSCALL(getsockname) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  AddrOut out;
  if (int rc = prepare_addr_out(p, a.a[1], a.a[2], out); rc < 0) return rc;
  SockAddr self;
  if (f->shown_local) {
    std::memcpy(&self.ss, &f->shown_local->addr, f->shown_local->len);
    self.len = f->shown_local->len;
  } else if (f->path.rfind("unix:", 0) == 0) {
    set_unix_path(self, std::string_view(f->path).substr(5));
  } else {
    self.len = sizeof self.ss;
    if (::getsockname(f->host_fd, self.sa(), &self.len) != 0) return -errno;
    to_guest_addr(self);
  }
  return write_addr_out(p, out, self);
}

KVMS_SYSCALL(getpeername) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  AddrOut out;
  if (int rc = prepare_addr_out(p, a.a[1], a.a[2], out); rc < 0) return rc;
  SockAddr peer;
  peer.len = sizeof peer.ss;
  if (::getpeername(f->host_fd, peer.sa(), &peer.len) != 0) return -errno;  // ENOTCONN stays
  if (f->shown_peer) {
    std::memcpy(&peer.ss, &f->shown_peer->addr, f->shown_peer->len);
    peer.len = f->shown_peer->len;
  } else {
    to_guest_addr(peer);
  }
  return write_addr_out(p, out, peer);
}

KVMS_SYSCALL(setsockopt) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  const int level = static_cast<int>(a.a[1]), name = static_cast<int>(a.a[2]);
  const uint64_t optval = a.a[3];
  const int optlen = static_cast<int>(a.a[4]);
  if (optlen < 0) return -EINVAL;
  if (level == SOL_SOCKET && name == SO_PASSPIDFD) return -ENOPROTOOPT;
  if (setsockopt_denied(level, name)) return -EPERM;
  if (size_t(optlen) > kMaxOptLen) return -EINVAL;
  std::vector<uint8_t> buf(optlen);
  if (optlen && !p.mm().copy_from_user(buf.data(), optval, optlen)) return -EFAULT;
  if (level == SOL_SOCKET && (name == SO_ATTACH_FILTER || name == SO_ATTACH_REUSEPORT_CBPF)) {
    // struct sock_fprog { unsigned short len; struct sock_filter* filter; }: the filter pointer is
    // a guest address.
    struct Fprog {
      uint16_t len;
      uint64_t filter;
    } prog;
    if (size_t(optlen) < sizeof prog) return -EINVAL;
    std::memcpy(&prog, buf.data(), sizeof prog);
    constexpr uint64_t kInsnSize = 8;  // struct sock_filter
    const auto filter = p.mm().readable(prog.filter, uint64_t(prog.len) * kInsnSize);
    if (!filter) return -EFAULT;
    prog.filter = reinterpret_cast<uint64_t>(filter->data());
    std::memcpy(buf.data(), &prog, sizeof prog);
  }
  return errno_result(::setsockopt(f->host_fd, level, name, buf.data(), optlen));
}

KVMS_SYSCALL(getsockopt) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  const int level = static_cast<int>(a.a[1]), name = static_cast<int>(a.a[2]);
  const uint64_t optval = a.a[3], lenp = a.a[4];
  int len = 0;
  if (!p.mm().read(lenp, len)) return -EFAULT;
  if (len < 0) return -EINVAL;
  if (level == SOL_SOCKET && name == SO_PEERPIDFD) return -ENOPROTOOPT;  // would make a host fd
  if (level == SOL_TCP && name == TCP_ZEROCOPY_RECEIVE) return -EOPNOTSUPP;  // maps host memory
  std::vector<uint8_t> buf(std::min<size_t>(len, kMaxOptLen));
  // Some options read their buffer too (multicast filters): start from the guest's bytes.
  if (!buf.empty()) {
    const auto in = p.mm().writable(optval, buf.size());
    if (!in) return -EFAULT;
    std::memcpy(buf.data(), in->data(), buf.size());
  }
  socklen_t hlen = buf.size();
  if (::getsockopt(f->host_fd, level, name, buf.data(), &hlen) != 0) {
    int e = errno;
    if (e == ERANGE) p.mm().write(lenp, static_cast<int>(hlen));  // SO_PEERGROUPS: the size needed
    return -e;
  }
  if (level == SOL_SOCKET && name == SO_PEERCRED && hlen >= sizeof(ucred)) {
    ucred cred;
    std::memcpy(&cred, buf.data(), sizeof cred);
    cred = creds_to_guest(p, cred, f->cred_pid ? f->cred_pid : p.pid);
    std::memcpy(buf.data(), &cred, sizeof cred);
  }
  size_t n = std::min<size_t>(hlen, buf.size());
  if (n && !p.mm().copy_to_user(optval, buf.data(), n)) return -EFAULT;
  return p.mm().write(lenp, static_cast<int>(hlen)) ? 0 : -EFAULT;
}

KVMS_SYSCALL(sendto) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  const uint64_t buf = a.a[1], len = std::min<uint64_t>(a.a[2], INT32_MAX);
  const int flags = static_cast<int>(a.a[3]);
  const auto data = p.mm().readable(buf, len);
  if (!data) return -EFAULT;
  SockAddr dest;
  if (a.a[4]) {
    if (int rc = read_sockaddr(p, a.a[4], a.a[5], dest); rc < 0) return rc;
  }
  FdCloser hold;
  if (int64_t rc = send_destination(p, *f, dest, flags, hold); rc < 0) return rc;
  Process::BlockingSection unlocked(p);
  return errno_result(::sendto(f->host_fd, data->data(), len, flags | MSG_NOSIGNAL, dest.len ? dest.sa() : nullptr, dest.len));
}

KVMS_SYSCALL(recvfrom) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  const uint64_t buf = a.a[1], len = std::min<uint64_t>(a.a[2], INT32_MAX);
  const int flags = static_cast<int>(a.a[3]);
  const uint64_t src = a.a[4], lenp = a.a[5];
  const auto data = p.mm().writable(buf, len);
  if (!data) return -EFAULT;
  AddrOut out;
  if (src) {
    if (int rc = prepare_addr_out(p, src, lenp, out); rc < 0) return rc;
  }
  SockAddr from;
  from.len = sizeof from.ss;
  ssize_t n;
  {
    Process::BlockingSection unlocked(p);
    n = ::recvfrom(f->host_fd, data->data(), len, flags, src ? from.sa() : nullptr, src ? &from.len : nullptr);
  }
  if (n < 0) return -errno;
  p.mm().note_write(*data, uint64_t(n));
  if (src) {
    to_guest_addr(from);
    if (int rc = write_addr_out(p, out, from); rc < 0) return rc;
  }
  return n;
}

KVMS_SYSCALL(sendmsg) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  return do_sendmsg(p, *f, a.a[1], static_cast<int>(a.a[2]));
}

KVMS_SYSCALL(recvmsg) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  return do_recvmsg(p, *f, a.a[1], static_cast<int>(a.a[2]));
}

KVMS_SYSCALL(sendmmsg) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  const uint64_t vec = a.a[1];
  const uint64_t vlen = std::min<uint64_t>(static_cast<uint32_t>(a.a[2]), kMaxIov);
  const int flags = static_cast<int>(a.a[3]);
  uint64_t sent = 0;
  int64_t result = 0;
  for (; sent < vlen; ++sent) {
    uint64_t entry = vec + sent * kMmsgSize;
    result = do_sendmsg(p, *f, entry, flags);
    if (result < 0) break;
    if (!p.mm().write<uint32_t>(entry + offsetof(mmsghdr, msg_len), static_cast<uint32_t>(result))) {
      result = -EFAULT;
      break;
    }
  }
  return sent > 0 ? int64_t(sent) : result;
}

KVMS_SYSCALL(recvmmsg) {
  int err = 0;
  auto f = socket_file(p, a.a[0], err);
  if (!f) return err;
  const uint64_t vec = a.a[1];
  const uint64_t vlen = std::min<uint64_t>(static_cast<uint32_t>(a.a[2]), kMaxIov);
  int flags = static_cast<int>(a.a[3]);
  const uint64_t utimeout = a.a[4];
  // Checked after each datagram, as Linux does (it does not bound the wait for one).
  Deadline deadline = Deadline::infinite();
  if (int64_t rc = read_timeout(p, utimeout, deadline)) return rc;
  uint64_t received = 0;
  int64_t result = 0;
  while (received < vlen) {
    uint64_t entry = vec + received * kMmsgSize;
    int fl = flags & ~MSG_WAITFORONE;
    if ((flags & MSG_WAITFORONE) && received > 0) fl |= MSG_DONTWAIT;
    result = do_recvmsg(p, *f, entry, fl);
    if (result < 0) break;
    if (!p.mm().write<uint32_t>(entry + offsetof(mmsghdr, msg_len), static_cast<uint32_t>(result))) {
      result = -EFAULT;
      break;
    }
    ++received;
    if (deadline.expired()) break;
    int got_flags = 0;
    if (p.mm().read(entry + offsetof(msghdr, msg_flags), got_flags) && (got_flags & MSG_OOB)) break;
  }
  if (received == 0) return vlen == 0 ? 0 : result;
  if (utimeout) {
    const timespec left = deadline.remaining();
    struct { int64_t sec, nsec; } t{left.tv_sec, left.tv_nsec};
    if (!p.mm().write(utimeout, t)) return -EFAULT;
  }
  return int64_t(received);
}

}  // namespace kvms::linux

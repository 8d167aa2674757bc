// ioctl(2) on sockets: queue sizes, packet timestamps and the netdevice ioctls (man 7 netdevice).
//
// Network interfaces: the guest sees the host's loopback interface "lo" and nothing else. Its
// sockets are host sockets, so an interface index it passes on (IP_ADD_MEMBERSHIP's ip_mreqn,
// IP_MULTICAST_IF, IPV6_JOIN_GROUP...) must be the host's: the "get" requests about lo are asked of
// the host socket itself and answered as the host answers. The host's other interfaces (names,
// addresses, hardware addresses) are the host's business: a guest asking about one is told ENODEV,
// what Linux says for an interface that does not exist, and SIOCGIFCONF lists lo's addresses only.
// Requests naming another interface are never passed to the host (a root kvmserver's kernel would
// try to load a module for an unknown name). Changing an interface, a route or the ARP table needs
// CAP_NET_ADMIN, which the guest never has: EPERM, and nothing reaches the host.
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <linux/sockios.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "linux/socket_control.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr char kLoopback[] = "lo";
constexpr uint32_t kSiocGStampNew = 0x80108906, kSiocGStampNsNew = 0x80108907;  // _IOR(0x89, 6/7, long long[2])

bool is_loopback(const ifreq& r) { return std::strncmp(r.ifr_name, kLoopback, IFNAMSIZ) == 0; }

int socket_domain(int host_fd) {
  int v = -1;
  socklen_t len = sizeof v;
  return ::getsockopt(host_fd, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0 ? v : -1;
}

// The guest's struct ifreq (40 bytes, no pointers in the requests handled here), with its name
// NUL-terminated as the kernel does.
int read_ifreq(Process& p, uint64_t arg, ifreq& r) {
  if (!p.mm().copy_from_user(&r, arg, sizeof r)) return -EFAULT;
  r.ifr_name[IFNAMSIZ - 1] = '\0';
  return 0;
}

// A "get" request about the interface the ifreq names.
int64_t get_by_name(Process& p, OpenFile& f, uint32_t cmd, uint64_t arg) {
  ifreq r;
  if (int rc = read_ifreq(p, arg, r)) return rc;
  if (!is_loopback(r)) {
    // Another interface is one that does not exist (ENODEV), unless the request itself is one this
    // socket does not answer (a Unix socket's SIOCGIFADDR is ENOTTY): the host tells which, asked
    // the same about lo.
    ifreq probe{};
    std::memcpy(probe.ifr_name, kLoopback, sizeof kLoopback);
    return ::ioctl(f.host_fd, cmd, &probe) < 0 ? -errno : -ENODEV;
  }
  if (::ioctl(f.host_fd, cmd, &r) < 0) return -errno;
  return p.mm().copy_to_user(arg, &r, sizeof r) ? 0 : -EFAULT;
}

// SIOCGIFNAME: the name of an interface index; only lo's is known.
int64_t get_name(Process& p, OpenFile& f, uint64_t arg) {
  ifreq r;
  if (int rc = read_ifreq(p, arg, r)) return rc;
  if (::ioctl(f.host_fd, SIOCGIFNAME, &r) < 0) return -errno;
  if (!is_loopback(r)) return -ENODEV;
  return p.mm().copy_to_user(arg, &r, sizeof r) ? 0 : -EFAULT;
}

// SIOCGIFCONF: lo's IPv4 addresses, one struct ifreq each; with no buffer, the length they need.
int64_t get_conf(Process& p, OpenFile& f, uint64_t arg) {
  struct GuestIfconf {
    int32_t len;
    uint64_t buf;
  } conf;
  static_assert(sizeof(GuestIfconf) == sizeof(ifconf));
  if (!p.mm().read(arg, conf)) return -EFAULT;
  // The host's whole list, however long: ask its length first, and again if it grew meanwhile.
  std::vector<ifreq> all;
  for (int tries = 0;; ++tries) {
    ifconf hc{};
    if (::ioctl(f.host_fd, SIOCGIFCONF, &hc) < 0) return -errno;
    all.resize(size_t(hc.ifc_len) / sizeof(ifreq) + 1);
    hc.ifc_len = int(all.size() * sizeof(ifreq));
    hc.ifc_req = all.data();
    if (::ioctl(f.host_fd, SIOCGIFCONF, &hc) < 0) return -errno;
    if (size_t(hc.ifc_len) < all.size() * sizeof(ifreq) || tries == 3) {
      all.resize(size_t(hc.ifc_len) / sizeof(ifreq));
      break;
    }
  }
  std::vector<ifreq> lo;
  for (const ifreq& r : all)
    if (is_loopback(r)) lo.push_back(r);
  int32_t total = 0;
  for (const ifreq& r : lo) {
    if (conf.buf) {
      if (conf.len - total < int32_t(sizeof r)) break;  // only whole entries, as inet_gifconf
      if (!p.mm().copy_to_user(conf.buf + uint64_t(total), &r, sizeof r)) return -EFAULT;
    }
    total += int32_t(sizeof r);
  }
  return p.mm().write(arg + offsetof(GuestIfconf, len), total) ? 0 : -EFAULT;
}

// A request answered with an int (queue sizes, the urgent mark).
int64_t get_int(Process& p, OpenFile& f, uint32_t cmd, uint64_t arg) {
  int v = 0;
  if (::ioctl(f.host_fd, cmd, &v) < 0) return -errno;
  return p.mm().write<int32_t>(arg, v) ? 0 : -EFAULT;
}

// SIOCGSTAMP(NS), old and new: the last packet's time as two 64-bit fields (timeval, timespec or
// long long[2]: the same bytes on x86-64).
int64_t get_stamp(Process& p, OpenFile& f, uint32_t cmd, uint64_t arg) {
  int64_t t[2] = {0, 0};
  if (::ioctl(f.host_fd, cmd, t) < 0) return -errno;
  return p.mm().copy_to_user(arg, t, sizeof t) ? 0 : -EFAULT;
}

}  // namespace

std::vector<uint32_t> socket_ioctls_forwarded() {
  return {SIOCOUTQ,      SIOCOUTQNSD,    SIOCATMARK,     SIOCGSTAMP_OLD, SIOCGSTAMPNS_OLD, kSiocGStampNew,
          kSiocGStampNsNew, SIOCGIFFLAGS, SIOCGIFADDR,   SIOCGIFDSTADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK,
          SIOCGIFMETRIC, SIOCGIFMTU,     SIOCGIFHWADDR,  SIOCGIFINDEX,   SIOCGIFTXQLEN,  SIOCGIFMAP,
          SIOCGIFNAME,   SIOCGIFCONF};
}

std::optional<int64_t> socket_ioctl(Process& p, OpenFile& f, uint32_t cmd, uint64_t arg) {
  switch (cmd) {
    case SIOCOUTQ:
    case SIOCOUTQNSD:
    case SIOCATMARK:
      return get_int(p, f, cmd, arg);
    case SIOCGSTAMP_OLD:
    case SIOCGSTAMPNS_OLD:
    case kSiocGStampNew:
    case kSiocGStampNsNew:
      return get_stamp(p, f, cmd, arg);
    case SIOCGIFFLAGS:
    case SIOCGIFADDR:
    case SIOCGIFDSTADDR:
    case SIOCGIFBRDADDR:
    case SIOCGIFNETMASK:
    case SIOCGIFMETRIC:
    case SIOCGIFMTU:
    case SIOCGIFHWADDR:
    case SIOCGIFINDEX:
    case SIOCGIFTXQLEN:
    case SIOCGIFMAP:
      return get_by_name(p, f, cmd, arg);
    case SIOCGIFNAME:
      return get_name(p, f, arg);
    case SIOCGIFCONF:
      return get_conf(p, f, arg);
    // Changing an interface (dev_ioctl: the ifreq is read first, then CAP_NET_ADMIN is checked).
    case SIOCSIFFLAGS:
    case SIOCSIFMETRIC:
    case SIOCSIFMTU:
    case SIOCSIFMAP:
    case SIOCSIFHWADDR:
    case SIOCSIFSLAVE:
    case SIOCADDMULTI:
    case SIOCDELMULTI:
    case SIOCSIFHWBROADCAST:
    case SIOCSIFTXQLEN:
    case SIOCSIFNAME:
    case SIOCSMIIREG:
    case SIOCBONDENSLAVE:
    case SIOCBONDRELEASE:
    case SIOCBONDSETHWADDR:
    case SIOCBONDCHANGEACTIVE:
    case SIOCBRADDIF:
    case SIOCBRDELIF:
    case SIOCSHWTSTAMP: {
      ifreq r;
      if (int rc = read_ifreq(p, arg, r)) return rc;
      return -EPERM;
    }
    // Addresses, routes and ARP entries are the IP protocols' (inet_ioctl, inet6_ioctl): CAP_NET_ADMIN
    // there; other sockets do not know these requests.
    case SIOCSIFADDR:
    case SIOCSIFDSTADDR:
    case SIOCSIFBRDADDR:
    case SIOCSIFNETMASK:
    case SIOCDIFADDR:
    case SIOCADDRT:
    case SIOCDELRT:
    case SIOCSARP:
    case SIOCDARP: {
      const int domain = socket_domain(f.host_fd);
      return domain == AF_INET || domain == AF_INET6 ? -EPERM : -ENOTTY;
    }
    default:
      return std::nullopt;
  }
}

}  // namespace kvms::linux

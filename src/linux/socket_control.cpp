// Socket control messages and credentials between the guest and the host.
//
// Credentials. The guest runs as uid/gid Process::uid/gid (1000) with pids of its own, while the
// host kernel stamps what kvmserver sends (SCM_CREDENTIALS, SO_PASSCRED, SO_PEERCRED) with
// kvmserver's host pid and ids, and checks what it is told against those. So:
//  * sending, a guest may name only itself: its own pid, uid and gid (what Linux allows a process
//    without CAP_SYS_ADMIN/CAP_SETUID/CAP_SETGID, which the guest never has); those are given to the
//    host as kvmserver's own ids. Anything else fails as on Linux (EINVAL for an invalid id or a
//    malformed message, EPERM for another process's pid or ids).
//  * receiving, kvmserver's own host ids read as the guest's (uid/gid: every guest process of a
//    kvmserver has the same ones, so this is exact). A pid other than kvmserver's is a process
//    outside the guest's world, which has no pid there: 0, what Linux reports for a peer outside
//    the receiver's pid namespace. Other uids and gids are shown as they are (as stat shows the
//    owners of host files), 0 and the overflow ids (65534) included.
//  * which guest pid kvmserver's own host pid stands for: every guest process of one kvmserver
//    (a fork is a separate VM in the same host process) sends and connects as the same host pid,
//    so the host cannot tell us which guest sent a message or made a connection. SO_PEERCRED names
//    the guest Linux would, as kvmserver keeps track of it (OpenFile::cred_pid): both ends of a
//    socketpair name its creator, a listening socket its listener, a guest's connection to a
//    guest's listener that listener, and the accepted end the guest that connected. The last is
//    known by order: a guest connecting to a guest's listener (bound by path or abstract name) is
//    queued on it before the host connect, and each connection from kvmserver's host process that
//    the listener accepts takes the oldest; the host queues connections in the same order, unless
//    two guests connect to one listener at the same instant. Where nothing is known (a received
//    SCM_CREDENTIALS, a listener inherited by socket activation), the receiving guest itself is
//    named: exact for a process talking to itself and whenever there is one guest process (the
//    common case); between two guest processes of one kvmserver, the ids are still right but the
//    pid is the receiver's, not its peer's.
#include "linux/socket_control.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "linux/fd_table.hpp"

#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif

namespace kvms::linux {
namespace {

constexpr int kScmMaxFd = 253;  // SCM_MAX_FD

// Walks the control messages of a buffer the way the kernel does (CMSG_FIRSTHDR/CMSG_NXTHDR).
// fn(header, payload, payload_len) returns 0 or -errno. A malformed length is -EINVAL.
template <typename F> int64_t for_each_cmsg(const uint8_t* buf, size_t size, F&& fn) {
  size_t off = 0;
  while (off + sizeof(cmsghdr) <= size) {
    cmsghdr h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.cmsg_len < sizeof(cmsghdr) || h.cmsg_len > size - off) return -EINVAL;
    if (int64_t rc = fn(h, buf + off + CMSG_LEN(0), h.cmsg_len - CMSG_LEN(0)); rc < 0) return rc;
    off += CMSG_ALIGN(h.cmsg_len);
  }
  return 0;
}

void append_cmsg(std::vector<uint8_t>& out, const cmsghdr& h, const void* payload, size_t len) {
  size_t at = out.size();
  out.resize(at + CMSG_SPACE(len));
  cmsghdr nh = h;
  nh.cmsg_len = CMSG_LEN(len);
  std::memcpy(out.data() + at, &nh, sizeof nh);
  if (len) std::memcpy(out.data() + at + CMSG_LEN(0), payload, len);
}

void close_fds(const uint8_t* data, size_t len) {
  for (size_t i = 0; i + sizeof(int) <= len; i += sizeof(int)) {
    int fd;
    std::memcpy(&fd, data + i, sizeof fd);
    ::close(fd);
  }
}

}  // namespace

namespace {

constexpr size_t kMaxPendingConnectors = 4096;  // a listen backlog holds no more (somaxconn's ceiling)

// Guests' Unix listeners by key, and every OpenFile::unix_connectors.
std::mutex g_listeners_mu;
std::unordered_map<std::string, std::weak_ptr<OpenFile>> g_listeners;

}  // namespace

std::string unix_file_key(const struct stat& st) {
  return "f" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

std::string unix_abstract_key(const char* name, size_t len) { return "a" + std::string(name, len); }

void unix_listener_bound(const std::string& key, const std::shared_ptr<OpenFile>& f) {
  std::lock_guard lock(g_listeners_mu);
  if (g_listeners.size() >= 4096) {  // sockets closed since: forget them
    for (auto it = g_listeners.begin(); it != g_listeners.end();) it = it->second.expired() ? g_listeners.erase(it) : ++it;
  }
  g_listeners[key] = f;
}

std::shared_ptr<OpenFile> unix_connecting(const Process& p, const std::string& key) {
  std::lock_guard lock(g_listeners_mu);
  auto it = g_listeners.find(key);
  if (it == g_listeners.end()) return nullptr;
  auto listener = it->second.lock();
  if (!listener || !listener->listening || !listener->cred_pid) return nullptr;
  if (listener->unix_connectors.size() >= kMaxPendingConnectors) listener->unix_connectors.pop_front();
  listener->unix_connectors.push_back(p.pid);
  return listener;
}

void unix_connected(const Process& p, OpenFile& client, OpenFile& listener, bool ok) {
  std::lock_guard lock(g_listeners_mu);
  if (ok) {
    client.cred_pid = listener.cred_pid;  // Linux copies the listener's credentials at connect
    return;
  }
  auto& q = listener.unix_connectors;  // no connection: not pending after all
  for (auto it = q.rbegin(); it != q.rend(); ++it) {
    if (*it == p.pid) {
      q.erase(std::next(it).base());
      break;
    }
  }
}

int unix_accepted(OpenFile& listener) {
  std::lock_guard lock(g_listeners_mu);
  if (listener.unix_connectors.empty()) return 0;
  const int pid = listener.unix_connectors.front();
  listener.unix_connectors.pop_front();
  return pid;
}

int creds_to_host(const Process& p, const ucred& guest, ucred& host) {
  // -1 is no uid or gid at all (make_kuid fails): EINVAL before any permission check, as in Linux.
  if (guest.uid == uid_t(-1) || guest.gid == gid_t(-1)) return -EINVAL;
  // The guest has no capabilities: only its own pid (the thread group's) and its own ids.
  if (!p.is_self(guest.pid) || guest.uid != p.uid || guest.gid != p.gid) return -EPERM;
  host.pid = ::getpid();
  host.uid = ::getuid();
  host.gid = ::getgid();
  return 0;
}

ucred creds_to_guest(const Process& p, const ucred& host, int self_pid) {
  ucred out = host;
  if (host.pid == ::getpid()) {
    out.pid = self_pid;
  } else if (host.pid != 0) {
    out.pid = 0;  // not in the guest's pid space
  }
  if (host.uid == ::getuid() || host.uid == ::geteuid()) out.uid = p.uid;
  if (host.gid == ::getgid() || host.gid == ::getegid()) out.gid = p.gid;
  return out;
}

int64_t control_to_host(Process& p, const std::vector<uint8_t>& in, bool unix_socket, std::vector<uint8_t>& out,
                        std::vector<std::shared_ptr<OpenFile>>& files) {
  return for_each_cmsg(in.data(), in.size(), [&](const cmsghdr& h, const uint8_t* data, size_t len) -> int64_t {
    if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SCM_CREDENTIALS) {
      if (!unix_socket) return 0;  // IP sockets ignore them (Linux: "semantically in SOL_UNIX")
      if (h.cmsg_len != CMSG_LEN(sizeof(ucred))) return -EINVAL;
      ucred guest, host;
      std::memcpy(&guest, data, sizeof guest);
      if (int rc = creds_to_host(p, guest, host)) return rc;
      append_cmsg(out, h, &host, sizeof host);
      return 0;
    }
    if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SCM_RIGHTS) {
      size_t n = len / sizeof(int);
      if (n > size_t(kScmMaxFd)) return -EINVAL;
      std::vector<uint8_t> payload(data, data + len);
      for (size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, payload.data() + i * sizeof(int), sizeof fd);
        auto f = p.fds.get(fd);
        if (!f) return -EBADF;
        std::memcpy(payload.data() + i * sizeof(int), &f->host_fd, sizeof(int));
        files.push_back(std::move(f));
      }
      append_cmsg(out, h, payload.data(), len);
      return 0;
    }
    append_cmsg(out, h, data, len);
    return 0;
  });
}

size_t control_to_guest(Process& p, uint8_t* buf, size_t size, bool cloexec, int self_pid, bool& truncated) {
  bool table_full = false;
  size_t off = 0;
  while (off + sizeof(cmsghdr) <= size) {
    cmsghdr h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.cmsg_len < sizeof(cmsghdr)) break;  // not something the kernel writes
    // The kernel cuts the last message (and its padding) at the end of the buffer.
    const size_t len = std::min<size_t>(h.cmsg_len, size - off), space = std::min<size_t>(CMSG_ALIGN(h.cmsg_len), size - off);
    uint8_t* data = buf + off + CMSG_LEN(0);
    const size_t data_len = len - CMSG_LEN(0);
    if (h.cmsg_level != SOL_SOCKET) {
      off += space;
      continue;
    }
    if (h.cmsg_type == SCM_CREDENTIALS) {
      // Possibly cut short: only the fields present are there to translate.
      ucred host{};
      std::memcpy(&host, data, std::min(data_len, sizeof host));
      const ucred guest = creds_to_guest(p, host, self_pid);
      std::memcpy(data, &guest, std::min(data_len, sizeof guest));
    } else if (h.cmsg_type == SCM_PIDFD) {
      // A host pidfd means nothing to the guest (it cannot ask for one: SO_PASSPIDFD is refused).
      close_fds(data, data_len);
      std::memmove(buf + off, buf + off + space, size - off - space);
      size -= space;
      continue;
    } else if (h.cmsg_type == SCM_RIGHTS) {
      const size_t n = data_len / sizeof(int);
      size_t installed = 0;
      for (size_t i = 0; i < n; ++i) {
        int host_fd;
        std::memcpy(&host_fd, data + i * sizeof(int), sizeof host_fd);
        if (table_full) {
          ::close(host_fd);
          continue;
        }
        const int g = p.fds.install(adopt_host_fd(host_fd), cloexec);  // on failure the OpenFile closes it
        if (g < 0) {
          table_full = truncated = true;
          continue;
        }
        std::memcpy(data + installed * sizeof(int), &g, sizeof g);
        ++installed;
      }
      if (table_full) {
        // As scm_detach_fds: the message holds the fds installed (none: no message) and ends the
        // buffer; whatever followed is dropped (its fds closed).
        size_t end = off;
        if (installed > 0) {
          const cmsghdr nh{CMSG_LEN(installed * sizeof(int)), SOL_SOCKET, SCM_RIGHTS};
          std::memcpy(buf + off, &nh, sizeof nh);
          end = off + std::min<size_t>(CMSG_SPACE(installed * sizeof(int)), size - off);
        }
        for_each_cmsg(buf + off + space, size - off - space, [&](const cmsghdr& rest, const uint8_t* d, size_t l) -> int64_t {
          if (rest.cmsg_level == SOL_SOCKET && (rest.cmsg_type == SCM_RIGHTS || rest.cmsg_type == SCM_PIDFD)) close_fds(d, l);
          return 0;
        });
        return end;
      }
    }
    off += space;
  }
  return size;
}

}  // namespace kvms::linux

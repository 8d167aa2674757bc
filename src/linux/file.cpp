// Descriptors and I/O. Every guest fd wraps a host fd (fd_table.hpp), so the I/O calls are the host
// call on the host fd, reading or writing guest memory in place: it is identity-mapped host memory.
// Paths go through the PathPolicy first; what it returns is canonical and opened without following
// symlinks again (host_fs.hpp), so a host-side swap cannot redirect us.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kvm/vm.hpp"
#include "linux/fasync.hpp"
#include "linux/file_quota.hpp"
#include "linux/signal.hpp"
#include "linux/host_fs.hpp"
#include "linux/policy.hpp"
#include "linux/procfs.hpp"
#include "linux/socket_control.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {

// Shared with file_meta.cpp (declared again there).
namespace fileops {

// policy().resolve(), logging a denial (-EACCES) with the flag that would allow it. A path into
// procfs's trees is never a host file: it is looked up there first, and what it names there is
// read-only and cannot be created (-EACCES), unless a made-up link leads back out of the trees
// (/proc/self/cwd/x), where the policy decides. An absent one is -ENOENT (callers that create map
// it with procfs::creation_errno).
int resolve(Process& p, const std::string& guest_path, Access access, bool follow_last,
            PathPolicy::Resolved& out) {
  auto where = procfs::lookup(p, guest_path, follow_last);
  if (std::holds_alternative<procfs::Node>(where)) return -EACCES;
  if (auto* err = std::get_if<int>(&where)) return *err;
  const std::string& path = std::get<std::string>(where);
  auto r = p.policy().resolve(path, access, follow_last);
  if (auto* err = std::get_if<int>(&r)) {
    if (*err == -EACCES && p.config().verbose)
      p.log_denied(normalize_path(path), p.policy().suggestion(path, access));
    return *err;
  }
  out = std::move(std::get<PathPolicy::Resolved>(r));
  return 0;
}

}  // namespace fileops

namespace {

constexpr uint64_t kMaxRw = 0x7ffff000;  // MAX_RW_COUNT: Linux's cap on one read/write
constexpr int kOLargefile = 0100000;     // the kernel's O_LARGEFILE (0 in glibc's x86-64 headers)
constexpr unsigned kCloseRangeUnshare = 1u << 1, kCloseRangeCloexec = 1u << 2;
constexpr uint32_t kPipeMaxSize = 1 << 20;  // Linux's default fs.pipe-max-size

using Kind = OpenFile::Kind;

// Runs a write-like host call on f without the host process getting SIGPIPE when the reader is
// gone (the guest gets EPIPE; the server must survive).
// partial_sigpipe (optional): set when a write that moved some bytes but not all (`wanted`) ended
// because the reader went away: Linux raises SIGPIPE then too, which the guest must get.
template <typename Io> ssize_t without_sigpipe(const OpenFile& f, Io io, size_t wanted = 0, bool* partial_sigpipe = nullptr) {
  if (f.kind != Kind::Pipe && f.kind != Kind::Socket && f.kind != Kind::Other) return io();
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t r = io();
  int err = errno;
  const bool partial = partial_sigpipe && r > 0 && size_t(r) < wanted;
  if (((r < 0 && err == EPIPE) || partial) && !sigismember(&old, SIGPIPE)) {
    timespec zero{};
    // Drop the SIGPIPE raised for us (only a partial write's check costs a host call here).
    if (sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE && partial) *partial_sigpipe = true;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return r;
}

// Linux's access_ok() on the whole count, before read/write cut it to MAX_RW_COUNT: a range that
// wraps or leaves user space is EFAULT, even when its first bytes could be transferred.
constexpr uint64_t kUserSpaceEnd = 0x7fff'ffff'f000ull;  // TASK_SIZE_MAX
bool user_range(uint64_t buf, uint64_t len) { return len <= kUserSpaceEnd && buf <= kUserSpaceEnd - len; }

// Reads into guest memory [buf, buf+len) in place with io(host_ptr, n).
template <typename Io> int64_t read_into(Process& p, uint64_t buf, uint64_t len, Io io) {
  if (!user_range(buf, len)) return -EFAULT;
  len = std::min(len, kMaxRw);
  const auto span = p.mm().writable(buf, p.mm().accessible(buf, len, kvm::kProtWrite));
  if (!span) return -EFAULT;
  ssize_t got;
  {
    Process::BlockingSection unlocked(p);
    got = io(span->data(), span->size());
  }
  if (got < 0) return -errno;
  if (span->size() == 0 && len != 0) return -EFAULT;  // the host call only checked the fd
  p.mm().note_write(*span, static_cast<uint64_t>(got));
  return got;
}

// Writes guest memory [buf, buf+len) out with io(host_ptr, n).
template <typename Io> int64_t write_from(Process& p, const OpenFile& f, uint64_t buf, uint64_t len, Io io) {
  len = std::min(len, kMaxRw);
  const auto span = p.mm().readable(buf, p.mm().accessible(buf, len, kvm::kProtRead));
  if (!span) return -EFAULT;
  ssize_t put;
  bool partial_sigpipe = false;
  {
    Process::BlockingSection unlocked(p);
    put = without_sigpipe(f, [&] { return io(span->data(), span->size()); }, span->size(), &partial_sigpipe);
  }
  if (put < 0) return -errno;
  if (partial_sigpipe) send_signal_to_thread(p, p.thread(), SIGPIPE, SI_USER, p.pid);
  if (span->size() == 0 && len != 0) return -EFAULT;
  return put;
}

struct GuestIovec {
  uint64_t base, len;
};

// The guest's iovec array as host iovecs over guest memory, cut at the first inaccessible byte and
// at MAX_RW_COUNT in total. `spans`: the guest ranges behind the host iovecs (a read reports what
// it wrote through them). `requested`: whether any byte was asked for (EFAULT when none is
// accessible).
template <typename Span>
int import_iovecs(Process& p, uint64_t uiov, uint64_t count, int prot, std::vector<iovec>& out,
                  std::vector<Span>& spans, bool& requested) {
  if (count > IOV_MAX) return -EINVAL;
  std::vector<GuestIovec> guest(count);
  if (count && !p.mm().copy_from_user(guest.data(), uiov, count * sizeof(GuestIovec))) return -EFAULT;
  // Linux's import_iovec: a negative length is EINVAL and an iovec outside user space EFAULT
  // (access_ok, even for an empty one), checked in order for every iovec before any is used.
  for (auto& v : guest) {
    if (v.len > static_cast<uint64_t>(SSIZE_MAX)) return -EINVAL;
    if (!user_range(v.base, v.len)) return -EFAULT;
  }
  uint64_t budget = kMaxRw;
  requested = false;
  for (auto& v : guest) {
    const uint64_t len = std::min(v.len, budget);
    requested |= len != 0;
    const uint64_t n = p.mm().accessible(v.base, len, prot);
    if (n) {
      std::optional<Span> span;
      if constexpr (std::is_same_v<Span, kvm::WritableSpan>)
        span = p.mm().writable(v.base, n);
      else
        span = p.mm().readable(v.base, n);
      if (!span) return -EFAULT;
      out.push_back({const_cast<uint8_t*>(span->data()), n});
      spans.push_back(*span);
    }
    budget -= n;
    if (n < len || budget == 0) break;
  }
  return 0;
}

int64_t total_of(const std::vector<iovec>& iov) {
  int64_t t = 0;
  for (auto& v : iov) t += static_cast<int64_t>(v.iov_len);
  return t;
}

int64_t do_readv(Process& p, const SyscallArgs& a, std::optional<int64_t> offset) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  std::vector<iovec> iov;
  std::vector<kvm::WritableSpan> spans;
  bool requested = false;
  if (int rc = import_iovecs(p, a.a[1], a.a[2], kvm::kProtWrite, iov, spans, requested)) return rc;
  ssize_t got;
  {
    Process::BlockingSection unlocked(p);
    got = offset ? ::preadv(f->host_fd, iov.data(), static_cast<int>(iov.size()), *offset)
                 : ::readv(f->host_fd, iov.data(), static_cast<int>(iov.size()));
  }
  if (got < 0) return -errno;
  if (total_of(iov) == 0 && requested) return -EFAULT;
  // Record what the host wrote into guest memory, iovec by iovec.
  uint64_t left = static_cast<uint64_t>(got);
  for (const auto& span : spans) {
    if (left == 0) break;
    const uint64_t n = std::min<uint64_t>(left, span.size());
    p.mm().note_write(span, n);
    left -= n;
  }
  return got;
}

int64_t do_writev(Process& p, const SyscallArgs& a, std::optional<int64_t> offset) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  std::vector<iovec> iov;
  std::vector<kvm::ReadableSpan> spans;
  bool requested = false;
  if (int rc = import_iovecs(p, a.a[1], a.a[2], kvm::kProtRead, iov, spans, requested)) return rc;
  const uint64_t total = static_cast<uint64_t>(total_of(iov));
  uint64_t room = total;
  WriteQuota quota(p, *f, room);
  if (quota.error()) return quota.error();
  if (room < total) return -ENOSPC;  // all or nothing here: cutting iovecs is not worth it
  ssize_t put;
  {
    Process::BlockingSection unlocked(p);
    put = without_sigpipe(*f, [&] {
      return offset ? ::pwritev(f->host_fd, iov.data(), static_cast<int>(iov.size()), *offset)
                    : ::writev(f->host_fd, iov.data(), static_cast<int>(iov.size()));
    });
  }
  if (put < 0) return -errno;
  if (total_of(iov) == 0 && requested) return -EFAULT;
  return put;
}

// Whether a new guest fd can be allocated (checked before anything is created, like Linux).
bool fd_available(const Process& p) {
  int used = 0;
  for (int fd : p.fds.fds()) used += fd < p.fds.limit();
  return used < p.fds.limit();
}

int64_t install_host_fd(Process& p, int host_fd, std::string path, int status_flags, bool cloexec,
                        bool writable_grant) {
  auto file = std::make_shared<OpenFile>(host_fd, kind_of(host_fd), std::move(path), status_flags);
  file->writable_grant = writable_grant;
  return p.fds.install(std::move(file), cloexec);
}

// What F_GETFL reports for a file opened with `flags` (an O_PATH open's are already cut to
// kOpathFlags: Linux forces O_LARGEFILE before it cuts them, so an O_PATH file has none).
int status_flags_of(int flags) {
  if (flags & O_PATH) return flags & (O_PATH | O_DIRECTORY | O_NOFOLLOW);
  return (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)) | kOLargefile;
}

// Linux's O_PATH_FLAGS: with O_PATH, open(2) ignores every other flag (openat2 would refuse them).
constexpr int kOpathFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// open(O_CREAT) of "name/": Linux looks the parent up, then refuses to create a directory with
// open (EISDIR) whether or not the name exists; a missing parent stays ENOENT.
int64_t create_with_trailing_slash(Process& p, const std::string& guest_path) {
  std::string path = guest_path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  PathPolicy::Resolved r;
  const int rc = fileops::resolve(p, path, Access::Read, true, r);
  return rc == 0 ? -EISDIR : rc;  // (resolves a missing last name whose parent exists: exists=false)
}

int64_t do_open(Process& p, int dirfd, uint64_t user_path, int flags, mode_t mode) {
  auto gp = p.guest_path(dirfd, user_path);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  if (!fd_available(p)) return -EMFILE;
  if (flags & O_PATH) flags &= kOpathFlags;

  const int acc = flags & O_ACCMODE;
  const bool write = acc == O_WRONLY || acc == O_RDWR || (flags & (O_CREAT | O_TRUNC | O_APPEND)) ||
                     (flags & O_TMPFILE) == O_TMPFILE;
  const bool follow = !(flags & O_NOFOLLOW) && !((flags & O_CREAT) && (flags & O_EXCL));
  auto where = procfs::lookup(p, std::get<std::string>(gp), follow);
  if (auto* made_up = std::get_if<procfs::Node>(&where)) return procfs::open(p, *made_up, flags, follow);
  if (auto* err = std::get_if<int>(&where))
    return *err == -ENOENT && (flags & O_CREAT) ? procfs::creation_errno(p, std::get<std::string>(gp)) : *err;
  const std::string& path = std::get<std::string>(where);
  if ((flags & O_CREAT) && path.size() > 1 && path.back() == '/') return create_with_trailing_slash(p, path);
  PathPolicy::Resolved r;
  if (int rc = fileops::resolve(p, path, write ? Access::Write : Access::Read, follow, r)) return rc;
  const bool creates = flags & (O_CREAT | O_TRUNC | O_TMPFILE);
  std::optional<WriteQuota> quota;
  if (creates) {
    quota.emplace(p, r.guest_path);
    if (quota->error()) return quota->error();
  }
  int fd;
  if (!(flags & (O_NONBLOCK | O_PATH)) && acc != O_RDWR) {
    // Opening a FIFO waits for its other end, which another thread or process of the guest may
    // open: without the process lock (a kick interrupts the host's wait: EINTR, restarted).
    Process::BlockingSection unlocked(p);
    fd = fileops::open_host(r.host_path, flags, mode & ~p.umask);
  } else {
    fd = fileops::open_host(r.host_path, flags, mode & ~p.umask);
  }
  if (fd < 0) return fd;
  if (quota) quota->created(fd);
  return install_host_fd(p, fd, r.guest_path, status_flags_of(flags), flags & O_CLOEXEC, r.writable);
}

// F_SETFL (fd: the guest fd it came through): Linux's settable flags. O_APPEND, O_NONBLOCK,
// O_DIRECT and O_NOATIME take effect on the host fd, which refuses them as Linux would (O_DIRECT
// where the file system has no direct I/O, O_NOATIME on another's file); O_ASYNC is kvmserver's
// own (fasync.hpp: the host's would signal kvmserver). The others are ignored, as there.
int64_t set_status_flags(Process& p, const std::shared_ptr<OpenFile>& f, int fd, int flags) {
  constexpr int kForwarded = O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME;
  const int host = ::fcntl(f->host_fd, F_GETFL);
  if (host < 0) return -errno;
  if ((host & kForwarded) != (flags & kForwarded) &&
      ::fcntl(f->host_fd, F_SETFL, (host & ~kForwarded) | (flags & kForwarded)) < 0)
    return -errno;
  const bool was_async = f->status_flags & O_ASYNC, async = flags & O_ASYNC;
  f->status_flags = (f->status_flags & ~(kForwarded | O_ASYNC)) | (flags & (kForwarded | O_ASYNC));
  if (async != was_async) set_async(p, f, fd, async);  // (only a change registers: Linux's setfl)
  return 0;
}

int64_t make_pipe(Process& p, uint64_t ufds, uint64_t flags) {
  if (flags & ~uint64_t(O_CLOEXEC | O_NONBLOCK | O_DIRECT)) return -EINVAL;
  if (!p.mm().writable(ufds, 2 * sizeof(int32_t))) return -EFAULT;
  if (!fd_available(p)) return -EMFILE;
  const int status = static_cast<int>(flags) & (O_NONBLOCK | O_DIRECT);
  int host[2];
  if (::pipe2(host, O_CLOEXEC | status) < 0) return -errno;
  struct stat st{};
  ::fstat(host[0], &st);
  const std::string name = "pipe:[" + std::to_string(st.st_ino) + "]";
  auto r = std::make_shared<OpenFile>(host[0], Kind::Pipe, name, O_RDONLY | status);
  auto w = std::make_shared<OpenFile>(host[1], Kind::Pipe, name, O_WRONLY | status);
  r->writable_grant = w->writable_grant = true;  // ours alone
  // The buffer is charged to the read end: once it closes, writes fail and nothing stays buffered.
  if (int rc = charge_open_file(p, *r, host_cost::kPipe, ENFILE, "pipe")) return rc;
  const bool cloexec = flags & O_CLOEXEC;
  int rfd = p.fds.install(std::move(r), cloexec);
  if (rfd < 0) return rfd;
  int wfd = p.fds.install(std::move(w), cloexec);
  if (wfd < 0) {
    p.fds.close(rfd);
    return wfd;
  }
  const int32_t out[2] = {rfd, wfd};
  if (!p.mm().copy_to_user(ufds, out, sizeof out)) {
    p.fds.close(rfd);
    p.fds.close(wfd);
    return -EFAULT;
  }
  return 0;
}

// A terminal query forwarded to a host tty; `size` bytes of the host's answer go to the guest.
int64_t tty_query(Process& p, const OpenFile& f, unsigned long cmd, uint64_t arg, size_t size) {
  if (f.kind != Kind::Tty) return -ENOTTY;
  alignas(8) unsigned char buf[64] = {};
  if (::ioctl(f.host_fd, cmd, buf) < 0) return -errno;
  return p.mm().copy_to_user(arg, buf, size) ? 0 : -EFAULT;
}

// The old getdents' struct linux_dirent from getdents64's struct linux_dirent64, in place: the
// same d_ino, d_off and record length (both are 20 + the name's length, 8-aligned: linux_dirent's
// name starts a byte earlier and its d_type is the record's last byte, after the name's NUL).
void dirents64_to_legacy(uint8_t* buf, size_t n) {
  for (size_t off = 0; off + 20 <= n;) {
    uint16_t reclen;
    std::memcpy(&reclen, buf + off + 16, 2);
    if (reclen < 24 || off + reclen > n) break;  // (never from the host)
    const uint8_t type = buf[off + 18];
    const size_t name_len = ::strnlen(reinterpret_cast<const char*>(buf + off + 19), reclen - 20);
    std::memmove(buf + off + 18, buf + off + 19, name_len);
    std::memset(buf + off + 18 + name_len, 0, reclen - 18 - name_len);
    buf[off + reclen - 1] = type;
    off += reclen;
  }
}

// getdents64, and the old getdents (legacy) that x86-64 programs still call (its records carry
// d_type in their last byte). Linux keeps the count in an int: above INT_MAX it is negative and
// no entry fits (EINVAL).
int64_t do_getdents(Process& p, const SyscallArgs& a, bool legacy) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (static_cast<uint32_t>(a.a[2]) > uint32_t(INT_MAX)) return -EINVAL;
  const uint64_t count = std::min<uint64_t>(static_cast<uint32_t>(a.a[2]), 1u << 20);
  if (auto made_up = procfs::getdents64(p, *f, a.a[1], count, legacy)) return *made_up;
  const uint64_t room = p.mm().accessible(a.a[1], count, kvm::kProtWrite);
  if (room == 0 && count != 0) return -EFAULT;
  std::vector<uint8_t> buf(std::max<uint64_t>(room, 1));
  long n = ::syscall(SYS_getdents64, f->host_fd, buf.data(), room);
  if (n < 0) return -errno;
  if (legacy) dirents64_to_legacy(buf.data(), static_cast<size_t>(n));
  return p.mm().copy_to_user(a.a[1], buf.data(), static_cast<uint64_t>(n)) ? n : -EFAULT;
}

}  // namespace

KVMS_SYSCALL(read) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (f->kind == OpenFile::Kind::SignalFd) return signalfd_read(p, *f, a.a[1], a.a[2]);
  return read_into(p, a.a[1], a.a[2], [&](void* buf, size_t n) { return ::read(f->host_fd, buf, n); });
}

KVMS_SYSCALL(write) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (f->kind == OpenFile::Kind::SignalFd) return -EINVAL;  // (its host eventfd would take it)
  if (!user_range(a.a[1], a.a[2])) return -EFAULT;
  uint64_t len = std::min(a.a[2], kMaxRw);
  WriteQuota quota(p, *f, len);
  if (quota.error()) return quota.error();
  return write_from(p, *f, a.a[1], len, [&](const void* buf, size_t n) { return ::write(f->host_fd, buf, n); });
}

KVMS_SYSCALL(pread64) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  const auto off = static_cast<off_t>(a.a[3]);
  return read_into(p, a.a[1], a.a[2], [&](void* buf, size_t n) { return ::pread(f->host_fd, buf, n, off); });
}

KVMS_SYSCALL(pwrite64) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  const auto off = static_cast<off_t>(a.a[3]);
  if (!user_range(a.a[1], a.a[2])) return -EFAULT;
  uint64_t len = std::min(a.a[2], kMaxRw);
  WriteQuota quota(p, *f, len);
  if (quota.error()) return quota.error();
  return write_from(p, *f, a.a[1], len, [&](const void* buf, size_t n) { return ::pwrite(f->host_fd, buf, n, off); });
}

KVMS_SYSCALL(readv) { return do_readv(p, a, std::nullopt); }
KVMS_SYSCALL(writev) { return do_writev(p, a, std::nullopt); }
// On x86-64 the whole offset is in the "low" argument.
KVMS_SYSCALL(preadv) { return do_readv(p, a, static_cast<int64_t>(a.a[3])); }
KVMS_SYSCALL(pwritev) { return do_writev(p, a, static_cast<int64_t>(a.a[3])); }

KVMS_SYSCALL(open) {
  return do_open(p, AT_FDCWD, a.a[0], static_cast<int>(a.a[1]), static_cast<mode_t>(a.a[2]));
}
KVMS_SYSCALL(openat) {
  return do_open(p, static_cast<int>(a.a[0]), a.a[1], static_cast<int>(a.a[2]), static_cast<mode_t>(a.a[3]));
}
KVMS_SYSCALL(creat) {
  return do_open(p, AT_FDCWD, a.a[0], O_CREAT | O_WRONLY | O_TRUNC, static_cast<mode_t>(a.a[1]));
}

KVMS_SYSCALL(close) {
  const int fd = static_cast<int>(a.a[0]);
  auto f = p.fds.get(fd);
  release_locks_of(p, f);
  const bool socket = f && f->kind == Kind::Socket;
  f.reset();  // (the last reference to a connection goes with the fd)
  const int rc = p.fds.close(fd);
  if (rc == 0 && socket && p.server) p.server->after_socket_close(p);
  return rc;
}

KVMS_SYSCALL(close_range) {
  const auto first = static_cast<unsigned>(a.a[0]), last = static_cast<unsigned>(a.a[1]);
  const auto flags = static_cast<unsigned>(a.a[2]);
  if (a.a[2] & ~uint64_t(kCloseRangeUnshare | kCloseRangeCloexec)) return -EINVAL;
  if (first > last) return -EINVAL;
  p.fds.close_range(first, last, flags & kCloseRangeCloexec);  // the table is never shared: UNSHARE is a no-op
  return 0;
}

KVMS_SYSCALL(lseek) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  const int64_t off = static_cast<int64_t>(a.a[1]);
  const int whence = static_cast<int>(a.a[2]);
  if (f->synthetic_dir) {  // positions are entry indices (getdents64's d_off)
    // generic_file_llseek, as Linux's /proc and /sys directories: their size is 0 for SEEK_END.
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) return -EINVAL;
    int64_t pos = off;
    if (whence == SEEK_CUR && __builtin_add_overflow(int64_t(f->synthetic_dir->pos), off, &pos)) return -EINVAL;
    if (pos < 0) return -EINVAL;
    f->synthetic_dir->pos = static_cast<size_t>(pos);
    return pos;
  }
  if (f->made_up_seek != OpenFile::MadeUpSeek::None && whence != SEEK_SET && whence != SEEK_CUR) {
    if (f->made_up_seek == OpenFile::MadeUpSeek::SeqFile) return -EINVAL;  // seq_lseek: SET and CUR only
    // generic_file_llseek over size 0: SEEK_END is the offset itself; no data nor hole past it.
    if (whence == SEEK_DATA || whence == SEEK_HOLE) return -ENXIO;
    if (whence != SEEK_END || off < 0) return -EINVAL;
    return errno_result(::lseek(f->host_fd, static_cast<off_t>(off), SEEK_SET));
  }
  return errno_result(::lseek(f->host_fd, static_cast<off_t>(off), whence));
}

KVMS_SYSCALL(dup) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  return p.fds.install(std::move(f), false);
}

KVMS_SYSCALL(dup2) {
  const int oldfd = static_cast<int>(a.a[0]), newfd = static_cast<int>(a.a[1]);
  auto f = p.fds.get(oldfd);
  if (!f) return -EBADF;
  if (oldfd == newfd) return newfd;
  release_locks_of(p, p.fds.get(newfd));
  return p.fds.install_at(newfd, std::move(f), false);
}

KVMS_SYSCALL(dup3) {
  const int oldfd = static_cast<int>(a.a[0]), newfd = static_cast<int>(a.a[1]);
  if (a.a[2] & ~uint64_t(O_CLOEXEC)) return -EINVAL;
  if (oldfd == newfd) return -EINVAL;
  if (newfd < 0 || newfd >= p.fds.limit()) return -EBADF;
  auto f = p.fds.get(oldfd);
  if (!f) return -EBADF;
  release_locks_of(p, p.fds.get(newfd));
  return p.fds.install_at(newfd, std::move(f), a.a[2] & O_CLOEXEC);
}

KVMS_SYSCALL(fcntl) {
  const int fd = static_cast<int>(a.a[0]);
  const int cmd = static_cast<int>(a.a[1]);
  const uint64_t arg = a.a[2];
  auto f = p.fds.get(fd);
  if (!f) return -EBADF;
  // check_fcntl_cmd: an O_PATH file takes only these; anything else is EBADF, even an unknown cmd.
  if ((f->status_flags & O_PATH) && cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC && cmd != F_GETFD &&
      cmd != F_SETFD && cmd != F_GETFL)
    return -EBADF;
  switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      const uint64_t from = static_cast<uint32_t>(arg);
      if (from >= static_cast<uint64_t>(p.fds.limit())) return -EINVAL;
      return p.fds.install(std::move(f), cmd == F_DUPFD_CLOEXEC, static_cast<int>(from));
    }
    case F_GETFD: return p.fds.cloexec(fd) ? FD_CLOEXEC : 0;
    case F_SETFD: return p.fds.set_cloexec(fd, arg & FD_CLOEXEC);
    case F_GETFL: return f->status_flags;
    case F_SETFL: return set_status_flags(p, f, fd, static_cast<int>(arg));
    case F_GETOWN:
    case F_SETOWN:
    case F_GETOWN_EX:
    case F_SETOWN_EX:
    case F_GETSIG:
    case F_SETSIG: return fcntl_owner(p, *f, cmd, arg);
    case F_GETLK:
    case F_SETLK:
    case F_SETLKW:
    case F_OFD_GETLK:
    case F_OFD_SETLK:
    case F_OFD_SETLKW: return fcntl_lock(p, *f, cmd, arg);
    case F_GETPIPE_SZ:
      if (f->kind != Kind::Pipe) return -EBADF;
      return errno_result(::fcntl(f->host_fd, cmd));
    case F_SETPIPE_SZ: {
      if (f->kind != Kind::Pipe) return -EBADF;
      // Linux's /proc/sys/fs/pipe-max-size for an unprivileged process, whatever the host lets
      // kvmserver do (as root it could take 2 GiB per pipe, charged as 1 MiB).
      // Linux takes the size as an unsigned int; round_pipe_size has none above 2^31 (EINVAL).
      if (static_cast<uint32_t>(arg) > (1u << 31)) return -EINVAL;
      if (static_cast<uint32_t>(arg) > kPipeMaxSize) return -EPERM;
      // A bigger buffer is more host memory: charged (to this end) before the host grows it.
      const uint64_t wanted = std::max<uint64_t>(static_cast<uint32_t>(arg), host_cost::kPipe);
      if (int rc = charge_open_file(p, *f, wanted, EPERM, "fcntl(F_SETPIPE_SZ)")) return rc;
      const int64_t size = errno_result(::fcntl(f->host_fd, cmd, static_cast<int>(arg)));
      if (size >= 0) f->memory_charge.set_unchecked(std::max<uint64_t>(size, host_cost::kPipe));
      return size;
    }
    default: return -EINVAL;
  }
}

// flock(2) locks belong to open file descriptions, which guest processes share exactly as on Linux
// (a fork's fds are the same OpenFile, hence the same host fd): the host's flock is the right one.
KVMS_SYSCALL(flock) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  const int op = static_cast<int>(a.a[1]);
  const int kind = op & ~LOCK_NB;
  if (kind != LOCK_SH && kind != LOCK_EX && kind != LOCK_UN) return -EINVAL;
  if (f->status_flags & O_PATH) return -EBADF;
  if (op & LOCK_NB || kind == LOCK_UN) return errno_result(::flock(f->host_fd, op));
  Process::BlockingSection unlocked(p);  // a kick interrupts the host's wait (EINTR: restarted)
  return errno_result(::flock(f->host_fd, op));
}

KVMS_SYSCALL(pipe) { return make_pipe(p, a.a[0], 0); }
KVMS_SYSCALL(pipe2) { return make_pipe(p, a.a[0], a.a[1]); }

KVMS_SYSCALL(ioctl) {
  const int fd = static_cast<int>(a.a[0]);
  const auto cmd = static_cast<uint32_t>(a.a[1]);
  const uint64_t arg = a.a[2];
  auto f = p.fds.get(fd);
  if (!f) return -EBADF;
  if (f->kind == Kind::Socket && !(f->status_flags & O_PATH)) {
    if (auto r = socket_ioctl(p, *f, cmd, arg)) return *r;
  }
  switch (cmd) {
    case FIOCLEX: return p.fds.set_cloexec(fd, true);
    case FIONCLEX: return p.fds.set_cloexec(fd, false);
    case FIONBIO: {
      int32_t on = 0;
      if (!p.mm().read(arg, on)) return -EFAULT;
      return set_status_flags(p, f, fd, on ? (f->status_flags | O_NONBLOCK) : (f->status_flags & ~O_NONBLOCK));
    }
    case FIOASYNC: {  // O_ASYNC, as F_SETFL sets it
      int32_t on = 0;
      if (!p.mm().read(arg, on)) return -EFAULT;
      return set_status_flags(p, f, fd, on ? (f->status_flags | O_ASYNC) : (f->status_flags & ~O_ASYNC));
    }
    case FIONREAD: {
      int n = 0;
      if (::ioctl(f->host_fd, FIONREAD, &n) < 0) return -errno;
      return p.mm().write<int32_t>(arg, n) ? 0 : -EFAULT;
    }
    case TCGETS: return tty_query(p, *f, TCGETS, arg, 36);  // the kernel's struct termios
    case TIOCGWINSZ: return tty_query(p, *f, TIOCGWINSZ, arg, sizeof(struct winsize));
    case TIOCGPGRP: {
      if (f->kind != Kind::Tty) return -ENOTTY;
      pid_t fg = 0;
      if (::ioctl(f->host_fd, TIOCGPGRP, &fg) < 0) return -errno;
      // In guest terms: its own group when we are in the foreground, another one when not.
      const int32_t pgrp = fg == ::getpgrp() ? p.pid : p.ppid;
      return p.mm().write(arg, pgrp) ? 0 : -EFAULT;
    }
    default: return -ENOTTY;
  }
}

KVMS_SYSCALL(getdents64) { return do_getdents(p, a, false); }
KVMS_SYSCALL(getdents) { return do_getdents(p, a, true); }

KVMS_SYSCALL(sendfile) {
  auto out = p.fds.get(static_cast<int>(a.a[0]));
  auto in = p.fds.get(static_cast<int>(a.a[1]));
  if (!out || !in) return -EBADF;
  off_t offset = 0;
  if (a.a[2] && !p.mm().read(a.a[2], offset)) return -EFAULT;
  // rw_verify_area: a count that is negative as an ssize_t is EINVAL (only then cut to MAX_RW_COUNT).
  if (static_cast<int64_t>(a.a[3]) < 0) return -EINVAL;
  uint64_t count = std::min(a.a[3], kMaxRw);
  WriteQuota quota(p, *out, count);
  if (quota.error()) return quota.error();
  ssize_t n;
  {  // the guest's memory is touched again only with the process lock held
    Process::BlockingSection unlocked(p);
    n = without_sigpipe(*out, [&] { return ::sendfile(out->host_fd, in->host_fd, a.a[2] ? &offset : nullptr, count); });
  }
  if (n < 0) return -errno;
  if (a.a[2] && !p.mm().write(a.a[2], offset)) return -EFAULT;
  return n;
}

// splice, tee and vmsplice move data between the guest's fds on the host, as sendfile does: every
// pipe, socket and file of the guest is a host fd, so the host's own calls apply (with their
// checks: a pipe on one side, offsets only for a non-pipe, ESPIPE, EINVAL), and data never passes
// through kvmserver. Linux checks the fds' modes first (EBADF).
namespace {

bool readable_mode(const OpenFile& f) {
  return !(f.status_flags & O_PATH) && (f.status_flags & O_ACCMODE) != O_WRONLY;
}
bool writable_mode(const OpenFile& f) {
  return !(f.status_flags & O_PATH) && (f.status_flags & O_ACCMODE) != O_RDONLY;
}

}  // namespace

KVMS_SYSCALL(splice) {
  auto in = p.fds.get(static_cast<int>(a.a[0]));
  auto out = p.fds.get(static_cast<int>(a.a[2]));
  if (!in || !out || !readable_mode(*in) || !writable_mode(*out)) return -EBADF;
  const uint64_t uoff_in = a.a[1], uoff_out = a.a[3];
  const unsigned flags = static_cast<unsigned>(a.a[5]);
  if (flags & ~unsigned(SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT)) return -EINVAL;
  loff_t off_in = 0, off_out = 0;
  if (uoff_in && !p.mm().read(uoff_in, off_in)) return -EFAULT;
  if (uoff_out && !p.mm().read(uoff_out, off_out)) return -EFAULT;
  uint64_t count = std::min<uint64_t>(a.a[4], kMaxRw);
  WriteQuota quota(p, *out, count);
  if (quota.error()) return quota.error();
  ssize_t n;
  {
    Process::BlockingSection unlocked(p);
    n = without_sigpipe(*out, [&] {
      return ::splice(in->host_fd, uoff_in ? &off_in : nullptr, out->host_fd, uoff_out ? &off_out : nullptr, count, flags);
    });
  }
  if (n < 0) return -errno;
  if (uoff_in && !p.mm().write(uoff_in, off_in)) return -EFAULT;
  if (uoff_out && !p.mm().write(uoff_out, off_out)) return -EFAULT;
  return n;
}

KVMS_SYSCALL(tee) {
  auto in = p.fds.get(static_cast<int>(a.a[0]));
  auto out = p.fds.get(static_cast<int>(a.a[1]));
  if (!in || !out || !readable_mode(*in) || !writable_mode(*out)) return -EBADF;
  const unsigned flags = static_cast<unsigned>(a.a[3]);
  if (flags & ~unsigned(SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT)) return -EINVAL;
  ssize_t n;
  {
    Process::BlockingSection unlocked(p);
    n = without_sigpipe(*out, [&] { return ::tee(in->host_fd, out->host_fd, std::min<uint64_t>(a.a[2], kMaxRw), flags); });
  }
  return n < 0 ? -errno : n;
}

// vmsplice: guest memory into a pipe (its write end) or a pipe's data into guest memory (its read
// end), by the host's vmsplice over the guest memory kvmserver maps. As on Linux, a pipe may then
// refer to the guest's pages rather than hold a copy; a worker's reset makes its pipes anew, and
// the references go with the old ones.
KVMS_SYSCALL(vmsplice) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f || (f->status_flags & O_PATH)) return -EBADF;
  const unsigned flags = static_cast<unsigned>(a.a[3]);
  if (flags & ~unsigned(SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT)) return -EINVAL;
  if (f->kind != Kind::Pipe) return -EBADF;  // Linux: get_pipe_info fails
  const bool to_pipe = writable_mode(*f);
  if (!to_pipe && !readable_mode(*f)) return -EBADF;
  std::vector<iovec> iov;
  bool requested = false;
  ssize_t n;
  if (to_pipe) {
    std::vector<kvm::ReadableSpan> spans;
    if (int rc = import_iovecs(p, a.a[1], a.a[2], kvm::kProtRead, iov, spans, requested)) return rc;
    if (iov.empty()) return requested ? -EFAULT : 0;
    Process::BlockingSection unlocked(p);
    n = without_sigpipe(*f, [&] { return ::vmsplice(f->host_fd, iov.data(), iov.size(), flags & SPLICE_F_NONBLOCK); });
  } else {
    std::vector<kvm::WritableSpan> spans;
    if (int rc = import_iovecs(p, a.a[1], a.a[2], kvm::kProtWrite, iov, spans, requested)) return rc;
    if (iov.empty()) return requested ? -EFAULT : 0;
    {
      Process::BlockingSection unlocked(p);
      n = ::vmsplice(f->host_fd, iov.data(), iov.size(), flags & SPLICE_F_NONBLOCK);
    }
    uint64_t left = n > 0 ? uint64_t(n) : 0;
    for (const auto& span : spans) {
      if (left == 0) break;
      const uint64_t k = std::min<uint64_t>(left, span.size());
      p.mm().note_write(span, k);
      left -= k;
    }
  }
  return n < 0 ? -errno : n;
}

}  // namespace kvms::linux

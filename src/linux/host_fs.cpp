// Opening canonical host paths without following symlinks (host_fs.hpp).
#include "linux/host_fs.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace kvms::linux::fileops {
namespace {

// The guest's open flags as Linux's open(2) cleans them up, plus ours: close-on-exec, never a
// controlling terminal, never following a symlink as the last component.
int host_open_flags(int flags) {
  constexpr int kValid = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK |
                         O_DSYNC | O_ASYNC | O_DIRECT | 0100000 /* O_LARGEFILE */ | O_DIRECTORY |
                         O_NOFOLLOW | O_NOATIME | O_CLOEXEC | O_SYNC | O_PATH | O_TMPFILE;
  constexpr int kPathFlags = O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC;
  flags &= kValid;
  if (flags & O_PATH) flags &= kPathFlags;
  return flags | O_CLOEXEC | O_NOFOLLOW | ((flags & O_PATH) ? 0 : O_NOCTTY);
}

mode_t host_open_mode(int flags, mode_t mode) {
  const bool creates = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
  return creates ? (mode & 07777) : 0;
}

}  // namespace

int open_host(const std::string& host_path, int flags, mode_t mode) {
  flags = host_open_flags(flags);
  mode = host_open_mode(flags, mode);
  static std::atomic<bool> no_openat2{false};
  if (!no_openat2.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags);
    how.mode = mode;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const long fd = ::syscall(SYS_openat2, AT_FDCWD, host_path.c_str(), &how, sizeof how);
    if (fd >= 0) return static_cast<int>(fd);
    if (errno != ENOSYS && errno != EPERM) return -errno;
    if (errno == ENOSYS) no_openat2.store(true, std::memory_order_relaxed);
  }
  // No openat2 (an old kernel, or a seccomp filter that refuses it): the same walk by hand.
  return open_componentwise(host_path, flags, mode);
}

int open_componentwise(const std::string& host_path, int flags, mode_t mode) {
  if (host_path.empty() || host_path[0] != '/') return -EINVAL;
  flags = host_open_flags(flags);
  mode = host_open_mode(flags, mode);
  HostFd dir(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return -errno;
  size_t pos = 1;
  for (;;) {
    while (pos < host_path.size() && host_path[pos] == '/') ++pos;
    if (pos >= host_path.size()) {  // "/" itself (or a trailing slash): the directory walked to
      const int fd = ::openat(dir.get(), ".", flags, mode);
      return fd < 0 ? -errno : fd;
    }
    size_t end = host_path.find('/', pos);
    if (end == std::string::npos) end = host_path.size();
    const std::string comp = host_path.substr(pos, end - pos);
    if (comp == "." || comp == "..") return -EINVAL;
    size_t rest = end;
    while (rest < host_path.size() && host_path[rest] == '/') ++rest;
    if (rest >= host_path.size()) {  // the last component
      const int fd = ::openat(dir.get(), comp.c_str(), flags | (end < host_path.size() ? O_DIRECTORY : 0), mode);
      return fd < 0 ? -errno : fd;
    }
    const int next = ::openat(dir.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -errno;
    dir.reset(next);
    pos = end;
  }
}

int open_parent(const std::string& host_path, std::string& name) {
  const auto pos = host_path.rfind('/');
  if (pos == std::string::npos) return -EINVAL;
  name = host_path.substr(pos + 1);
  if (name.empty()) name = ".";
  return open_host(pos == 0 ? "/" : host_path.substr(0, pos), O_PATH | O_DIRECTORY, 0);
}

}  // namespace kvms::linux::fileops

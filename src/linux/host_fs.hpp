#pragma once
// Opening the canonical host paths PathPolicy::resolve() returns, without following any symlink in
// them (policy.hpp): a directory of the path swapped for a symlink between the policy check and
// the open makes the open fail (ELOOP/ENOTDIR) instead of leading outside what was checked.
#include <sys/types.h>
#include <unistd.h>

#include <string>

namespace kvms::linux {

// A host fd closed when it goes out of scope.
class HostFd {
 public:
  HostFd() = default;
  explicit HostFd(int fd) : fd_(fd) {}
  ~HostFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  HostFd(const HostFd&) = delete;
  HostFd& operator=(const HostFd&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace kvms::linux

namespace kvms::linux::fileops {

// Opens a canonical absolute host path with the guest's open flags (cleaned up like Linux's
// open(2); always close-on-exec and O_NOFOLLOW): openat2 with RESOLVE_NO_SYMLINKS, or, where the
// host has no openat2, open_componentwise. A host fd or -errno.
int open_host(const std::string& host_path, int flags, mode_t mode);
// The same one component at a time from "/": every directory opened O_PATH|O_NOFOLLOW, the last
// component with `flags` | O_NOFOLLOW. "." and ".." components are -EINVAL (the path must be
// canonical).
int open_componentwise(const std::string& host_path, int flags, mode_t mode);
// The parent directory of a canonical host path as an O_PATH fd, and the last component in `name`
// ("." for the root), for the *at host calls that never follow the last component.
int open_parent(const std::string& host_path, std::string& name);

}  // namespace kvms::linux::fileops

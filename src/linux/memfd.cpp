// memfd_create: a host memfd behind a guest fd, so read/write/ftruncate/fstat/lseek work as on any
// file and mmap copies it like one (MAP_PRIVATE with any prot, MAP_SHARED read-only; see mmap.cpp).
// Its pages are host memory the guest's mappings do not show, so the bytes all of a process's memfds
// hold count toward --max-memory with its mappings: a write that would go past it is cut short, or
// fails with ENOSPC (what a full tmpfs says). ftruncate allocates nothing and is not limited.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <string>

#include "linux/syscalls.hpp"

namespace kvms::linux {

namespace fileops {

bool is_memfd(const OpenFile& f) { return f.kind == OpenFile::Kind::Regular && ::fcntl(f.host_fd, F_GET_SEALS) >= 0; }

int memfd_room(Process& p, const OpenFile& f, uint64_t& len) {
  if (len == 0 || !is_memfd(f)) return 0;
  uint64_t held = 0;
  std::set<ino_t> seen;
  for (int fd : p.fds.fds()) {
    auto other = p.fds.get(fd);
    struct stat st{};
    if (!other || !is_memfd(*other) || ::fstat(other->host_fd, &st) != 0 || !seen.insert(st.st_ino).second) continue;
    held += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  const uint64_t limit = p.config().memory_limit, used = p.mm().mapped_bytes() + held;
  const uint64_t room = used < limit ? limit - used : 0;
  if (room == 0) return -ENOSPC;
  if (len > room) len = room;  // a short write, as when a file system fills up
  return 0;
}

}  // namespace fileops

namespace {
constexpr unsigned kMfdCloexec = 1, kMfdAllowSealing = 2, kMfdHugetlb = 4, kMfdNoexecSeal = 8, kMfdExec = 0x10;
constexpr size_t kMaxName = 249;  // NAME_MAX - strlen("memfd:")
constexpr int kOLargefile = 0100000;
}  // namespace

KVMS_SYSCALL(memfd_create) {
  const uint64_t flags = a.a[1];
  if (flags & ~uint64_t(kMfdCloexec | kMfdAllowSealing | kMfdHugetlb | kMfdNoexecSeal | kMfdExec)) return -EINVAL;
  if ((flags & kMfdNoexecSeal) && (flags & kMfdExec)) return -EINVAL;
  if (flags & kMfdHugetlb) return -EINVAL;  // no hugetlbfs behind the guest
  auto name = p.mm().read_string(a.a[0], kMaxName + 1);
  if (!name) return p.mm().find(a.a[0]) ? -EINVAL : -EFAULT;
  const int host = ::memfd_create(name->c_str(), MFD_CLOEXEC | ((flags & kMfdAllowSealing) ? MFD_ALLOW_SEALING : 0));
  if (host < 0) return -errno;
  auto file = std::make_shared<OpenFile>(host, OpenFile::Kind::Regular, "/memfd:" + *name + " (deleted)",
                                         O_RDWR | kOLargefile);
  file->writable_grant = true;  // the guest's own memory
  return p.fds.install(std::move(file), flags & kMfdCloexec);
}

}  // namespace kvms::linux

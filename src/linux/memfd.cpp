// memfd_create: a host memfd behind a guest fd, so read/write/ftruncate/fstat/lseek work as on any
// file and mmap copies it like one (MAP_PRIVATE with any prot, MAP_SHARED read-only; see mmap.cpp).
// Its pages are host memory the guest's mappings do not show: what a memfd holds counts toward its
// process tree's --max-memory (file_quota.hpp): a write that would go past it is cut short, or fails
// with ENOSPC (what a full tmpfs says). ftruncate allocates nothing and is not limited.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "linux/syscalls.hpp"

namespace kvms::linux {

namespace fileops {

// By name and by the host (F_GET_SEALS alone would also take files on a host tmpfs for memfds).
bool is_memfd(const OpenFile& f) {
  return f.kind == OpenFile::Kind::Regular && f.path.starts_with("/memfd:") && ::fcntl(f.host_fd, F_GET_SEALS) >= 0;
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

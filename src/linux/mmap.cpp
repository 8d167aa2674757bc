// Memory: brk, mmap and friends. The guest's address space is kvm::AddressSpace (mappings + page
// tables over identity-mapped guest memory); these handlers validate arguments the way Linux does and
// turn each call into map/unmap/protect on it.
//
// Deliberate differences from Linux, all because the guest is one process whose memory we own:
//  * Shared memory is real in a plain run (kvmserver run without server flags): MAP_SHARED of a file
//    opened for writing shows the host file itself in the guest (SQLite's -shm, LTP's results page),
//    and MAP_SHARED|MAP_ANONYMOUS (or of /dev/zero) is a memfd; a forked guest process keeps both
//    (kvm::SharedBacking). A template and its workers cannot share (their resets copy pages back):
//    there MAP_SHARED|MAP_ANONYMOUS is an ordinary private mapping and a writable shared file
//    mapping fails with ENODEV (what Linux says for a file that cannot be mapped). Either way shared
//    anonymous memory is named "/dev/zero (deleted)" as in Linux's /proc/self/maps, and madvise
//    treats it as shared memory: MADV_DONTNEED keeps the data, MADV_REMOVE zeroes.
//  * Other file mappings (MAP_PRIVATE, and MAP_SHARED of a file opened read-only) are copies made at
//    mmap time (host pread straight into guest memory): later changes to the file are not seen, and
//    mprotect(PROT_WRITE) of a read-only shared mapping is allowed (writes stay private). Bytes past
//    EOF read as zeros (Linux would raise SIGBUS past the last page; a shared file truncated under
//    its mapping reads as zeros there too, see kvm::guard_shared_mappings).
//  * mmap of /dev/zero is anonymous memory; other devices, pipes, sockets and directories are ENODEV.
//  * MAP_HUGETLB with MAP_ANONYMOUS is ENOMEM (a host with no huge pages reserved says the same);
//    MAP_LOCKED, MAP_POPULATE, MAP_NORESERVE, MAP_STACK, MAP_GROWSDOWN are accepted and change nothing.
//  * MADV_DONTNEED of a private file mapping keeps the current bytes (Linux would go back to the file).
//  * mremap growing a file mapping extends it with zeros, not with more of the file.
//  * mincore reports every mapped page as resident.
//  * Only accessible (not PROT_NONE) bytes count toward --max-memory; going over it is ENOMEM.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

using kvm::AddressSpace;
using kvm::kPageMask;
using kvm::kPageSize;
using kvm::kProtExec;
using kvm::kProtNone;
using kvm::kProtRead;
using kvm::kProtWrite;
using kvm::kUserMin;
using kvm::Mapping;
using kvm::page_down;
using kvm::page_up;

// Linux x86-64 values (spelled out so the glibc headers' feature macros do not matter).
constexpr uint64_t kTaskSize = 0x7fff'ffff'f000ull;  // TASK_SIZE_MAX with 4-level paging

constexpr uint64_t kProtSem = 0x8;
constexpr uint64_t kProtGrowsDown = 0x0100'0000, kProtGrowsUp = 0x0200'0000;

constexpr uint32_t kMapShared = 0x01, kMapPrivate = 0x02, kMapSharedValidate = 0x03, kMapType = 0x0f;
constexpr uint32_t kMapFixed = 0x10, kMapAnonymous = 0x20, kMap32Bit = 0x40, kMapGrowsDown = 0x100;
constexpr uint32_t kMapDenyWrite = 0x800, kMapExecutable = 0x1000, kMapLocked = 0x2000;
constexpr uint32_t kMapNoReserve = 0x4000, kMapPopulate = 0x8000, kMapNonBlock = 0x10000;
constexpr uint32_t kMapStack = 0x20000, kMapHugeTlb = 0x40000, kMapFixedNoReplace = 0x100000;
constexpr uint32_t kMapUninitialized = 0x4000000, kMapHugeMask = 0x3fu << 26;
// What MAP_SHARED_VALIDATE accepts for a file without mmap_supported_flags (LEGACY_MAP_MASK). MAP_SYNC
// is not in it: it needs DAX, which our copies are not.
constexpr uint32_t kMapValidateMask = kMapShared | kMapPrivate | kMapFixed | kMapAnonymous | kMapDenyWrite |
                                      kMapExecutable | kMapUninitialized | kMapGrowsDown | kMapLocked |
                                      kMapNoReserve | kMapPopulate | kMapNonBlock | kMapStack | kMapHugeTlb |
                                      kMap32Bit | kMapHugeMask | kMapFixedNoReplace;

// MAP_32BIT places mappings in [1 GiB, 2 GiB), like Linux on x86-64.
constexpr uint64_t k32BitLow = 0x4000'0000, k32BitHigh = 0x8000'0000;

constexpr uint64_t kMremapMayMove = 1, kMremapFixed = 2, kMremapDontUnmap = 4;

constexpr uint64_t kMsAsync = 1, kMsInvalidate = 2, kMsSync = 4;

constexpr const char* kSharedAnonName = "/dev/zero (deleted)";

// Calls f(start, end, mapping) for every mapping intersecting [addr, end), clipped to it, in order.
template <typename F> void for_each_mapping(const AddressSpace& mm, uint64_t addr, uint64_t end, F&& f) {
  const auto& maps = mm.mappings();
  auto it = maps.upper_bound(addr);
  if (it != maps.begin() && std::prev(it)->second.end > addr) --it;
  for (; it != maps.end() && it->first < end; ++it)
    f(std::max(it->first, addr), std::min(it->second.end, end), it->second);
}

// Bytes of [addr, end) that are mapped at all / mapped accessible (counted by --max-memory).
uint64_t mapped_in(const AddressSpace& mm, uint64_t addr, uint64_t end) {
  uint64_t n = 0;
  for_each_mapping(mm, addr, end, [&](uint64_t s, uint64_t e, const Mapping&) { n += e - s; });
  return n;
}
uint64_t accessible_in(const AddressSpace& mm, uint64_t addr, uint64_t end) {
  uint64_t n = 0;
  for_each_mapping(mm, addr, end, [&](uint64_t s, uint64_t e, const Mapping& m) {
    if (m.prot != kProtNone) n += e - s;
  });
  return n;
}

// Would `added` more accessible bytes, after `removed` go away, stay within --max-memory? If so
// they are held for p until the syscall ends (Process::settle_memory).
bool fits_memory_limit(Process& p, uint64_t added, uint64_t removed) { return p.reserve_memory(added, removed); }

// Anonymous private memory: what MADV_DONTNEED/MADV_FREE turn back into zeros.
bool is_private_anonymous(const std::string& name) {
  return name.empty() || name == "[heap]" || name == "[stack]" || name.starts_with("[anon:");
}

// A free range of len bytes inside [low, high), lowest first (Linux's MAP_32BIT search is bottom-up).
std::optional<uint64_t> find_free_between(const AddressSpace& mm, uint64_t len, uint64_t low, uint64_t high) {
  if (high <= low || len > high - low) return std::nullopt;
  uint64_t pos = low;
  const auto& maps = mm.mappings();
  auto it = maps.upper_bound(pos);
  if (it != maps.begin() && std::prev(it)->second.end > pos) pos = std::prev(it)->second.end;
  for (;; ++it) {
    uint64_t gap_end = it == maps.end() ? high : std::min(it->first, high);
    if (pos <= gap_end && gap_end - pos >= len) return pos;
    if (it == maps.end() || it->first >= high) return std::nullopt;
    pos = std::max(pos, it->second.end);
  }
}

bool is_dev_zero(int host_fd) {
  struct stat st{};
  return fstat(host_fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 5;
}

// The mapping [addr, addr+len) belongs to, as Linux would see it: pieces our AddressSpace keeps apart
// but Linux would have merged (same prot and name, adjacent) count as one. nullptr when addr is not
// mapped or the range leaves that mapping (mremap's EFAULT).
const Mapping* one_mapping(const AddressSpace& mm, uint64_t addr, uint64_t len) {
  const Mapping* first = mm.find(addr);
  if (!first) return nullptr;
  uint64_t pos = first->end;
  while (pos < addr + len) {
    const Mapping* next = mm.find(pos);
    if (!next || next->prot != first->prot || next->name != first->name || next->fork_flags != first->fork_flags) return nullptr;
    pos = next->end;
  }
  return first;
}

}  // namespace

KVMS_SYSCALL(brk) {
  const uint64_t want = a.a[0];
  auto& mm = p.mm();
  if (want < p.brk_start || want > kTaskSize) return static_cast<int64_t>(p.brk_current);
  const uint64_t old_top = page_up(p.brk_current), new_top = page_up(want);
  if (new_top <= old_top) {  // same pages, or shrinking
    if (new_top < old_top && mm.unmap(new_top, old_top - new_top) != 0) return static_cast<int64_t>(p.brk_current);
    p.brk_current = want;
    return static_cast<int64_t>(want);
  }
  const uint64_t data_limit = p.rlimits[RLIMIT_DATA].first;
  if (want - p.brk_start > data_limit) return static_cast<int64_t>(p.brk_current);
  // Like Linux: the first mapping ending above the old top must start at least a page above the new top.
  const auto& maps = mm.mappings();
  auto next = maps.upper_bound(old_top);
  if (next != maps.begin() && std::prev(next)->second.end > old_top) --next;
  const bool blocked = next != maps.end() && new_top + kPageSize > next->first;
  if (blocked || new_top > mm.limit() || !fits_memory_limit(p, new_top - old_top, 0))
    return static_cast<int64_t>(p.brk_current);
  if (mm.map(old_top, new_top - old_top, kProtRead | kProtWrite, "[heap]") != 0)
    return static_cast<int64_t>(p.brk_current);
  p.brk_current = want;
  return static_cast<int64_t>(want);
}

KVMS_SYSCALL(mmap) {
  const uint64_t addr = a.a[0], offset = a.a[5];
  uint64_t len = a.a[1];
  const uint64_t prot_arg = a.a[2];
  uint32_t flags = static_cast<uint32_t>(a.a[3]);
  auto& mm = p.mm();

  if (offset & kPageMask) return -EINVAL;
  const bool anonymous = flags & kMapAnonymous;
  std::shared_ptr<OpenFile> file;
  if (!anonymous) {
    file = p.fds.get(static_cast<int>(a.a[4]));
    if (!file || (file->status_flags & O_PATH)) return -EBADF;
    if (flags & kMapHugeTlb) return -EINVAL;  // not a hugetlbfs file
  }
  if (len == 0) return -EINVAL;
  if (prot_arg & ~uint64_t(kProtRead | kProtWrite | kProtExec | kProtSem)) return -EINVAL;
  const int prot = static_cast<int>(prot_arg & (kProtRead | kProtWrite | kProtExec));
  if (len > kTaskSize) return -ENOMEM;
  len = page_up(len);
  if (file && offset + len > static_cast<uint64_t>(INT64_MAX)) return -EOVERFLOW;

  const uint32_t type = flags & kMapType;
  if (type != kMapPrivate && type != kMapShared && type != kMapSharedValidate) return -EINVAL;
  const bool shared = type != kMapPrivate;
  // Linux 6.1 knows MAP_SHARED_VALIDATE only for files: anonymous memory takes MAP_SHARED or MAP_PRIVATE.
  if (anonymous && type == kMapSharedValidate) return -EINVAL;
  if (anonymous && shared && (flags & kMapGrowsDown)) return -EINVAL;
  if (flags & kMapFixedNoReplace) flags |= kMapFixed;

  // Where.
  uint64_t start;
  if (flags & kMapFixed) {
    if (addr & kPageMask) return -EINVAL;
    if (addr > kTaskSize - len) return -ENOMEM;
    if (addr < kUserMin) return -EPERM;  // vm.mmap_min_addr
    if (addr + len > mm.limit()) return -ENOMEM;
    if ((flags & kMapFixedNoReplace) && mapped_in(mm, addr, addr + len) != 0) return -EEXIST;
    start = addr;
  } else {
    uint64_t hint = page_down(addr);
    if (hint != 0 && hint < kUserMin) hint = kUserMin;
    std::optional<uint64_t> found;
    if (flags & kMap32Bit) {
      const uint64_t high = std::min(k32BitHigh, mm.limit());
      if (hint && hint + len <= high && hint <= high && mapped_in(mm, hint, hint + len) == 0)
        found = hint;
      else
        found = find_free_between(mm, len, k32BitLow, high);
    } else {
      found = mm.find_free(len, hint);
    }
    if (!found) return -ENOMEM;
    start = *found;
  }

  // What.
  bool copy_from_file = false;
  // Real sharing (see the top of the file): a plain run's process, memory that can share.
  const bool may_share = shared && !p.server && mm.can_share();
  int share_fd = -1;  // a host fd for kvm::SharedBacking (owned from here on)
  std::string name = anonymous && shared ? kSharedAnonName : "";
  if (file) {
    const int access = file->status_flags & O_ACCMODE;
    const bool readable = access == O_RDONLY || access == O_RDWR;
    const bool writable = access == O_WRONLY || access == O_RDWR;
    if (shared) {
      if (type == kMapSharedValidate && (flags & ~kMapValidateMask)) return -EOPNOTSUPP;
      if ((prot & kProtWrite) && (!writable || (file->status_flags & O_APPEND))) return -EACCES;
    }
    if (!readable) return -EACCES;
    if (is_dev_zero(file->host_fd)) {
      if (shared) name = kSharedAnonName;
    } else {
      if (file->kind != OpenFile::Kind::Regular) return -ENODEV;
      if (may_share && writable && !(file->status_flags & O_APPEND)) {
        share_fd = fcntl(file->host_fd, F_DUPFD_CLOEXEC, 3);
        if (share_fd < 0) return -errno;
      } else {
        if (shared && (prot & kProtWrite)) return -ENODEV;  // no write-back (see the top of the file)
        copy_from_file = true;
      }
      name = file->path;
    }
  } else if (flags & kMapHugeTlb) {
    return -ENOMEM;
  }
  uint64_t share_offset = offset;
  if (may_share && share_fd < 0 && name == kSharedAnonName) {  // shared anonymous memory: a memfd
    share_fd = memfd_create("kvmserver-shared", MFD_CLOEXEC);
    if (share_fd < 0) return -ENOMEM;
    if (ftruncate(share_fd, static_cast<off_t>(len)) != 0) {
      close(share_fd);
      return -ENOMEM;
    }
    share_offset = 0;
  }

  const uint64_t replaced = (flags & kMapFixed) ? accessible_in(mm, start, start + len) : 0;
  if (!fits_memory_limit(p, prot != kProtNone ? len : 0, replaced)) {
    if (share_fd >= 0) close(share_fd);
    return -ENOMEM;
  }
  if (share_fd >= 0) {
    const int rc = mm.map_shared(start, len, prot, name, std::make_shared<kvm::SharedBacking>(share_fd), share_offset);
    return rc != 0 ? rc : static_cast<int64_t>(start);
  }

  if (int rc = mm.map(start, len, prot, name); rc != 0) return rc;
  if (copy_from_file) {
    struct stat st{};
    if (fstat(file->host_fd, &st) != 0) {
      int err = errno;
      mm.unmap(start, len);
      return -err;
    }
    const uint64_t size = static_cast<uint64_t>(std::max<off_t>(st.st_size, 0));
    const uint64_t data = size > offset ? std::min(len, size - offset) : 0;
    if (int rc = data ? mm.fill_from_file(start, file->host_fd, offset, data) : 0; rc != 0) {
      mm.unmap(start, len);
      return rc;
    }
  }
  return static_cast<int64_t>(start);
}

KVMS_SYSCALL(munmap) {
  const uint64_t addr = a.a[0], len = a.a[1];
  if ((addr & kPageMask) || addr > kTaskSize || len > kTaskSize - addr || len == 0) return -EINVAL;
  return p.mm().unmap(addr, page_up(len));
}

KVMS_SYSCALL(mprotect) {
  uint64_t addr = a.a[0];
  uint64_t len = a.a[1];
  uint64_t prot = a.a[2];
  auto& mm = p.mm();
  const uint64_t grows = prot & (kProtGrowsDown | kProtGrowsUp);
  prot &= ~grows;
  if (grows == (kProtGrowsDown | kProtGrowsUp)) return -EINVAL;
  if (addr & kPageMask) return -EINVAL;
  if (len == 0) return 0;
  len = page_up(len);
  uint64_t end = addr + len;
  if (end <= addr) return -ENOMEM;
  if (prot & ~uint64_t(kProtRead | kProtWrite | kProtExec | kProtSem)) return -EINVAL;
  if (grows & kProtGrowsUp) return -EINVAL;  // x86 has no grows-up mappings
  if (grows & kProtGrowsDown) {  // extend down to the start of the stack mapping
    uint64_t start = 0;
    const Mapping* m = mm.find(addr, &start);
    if (!m) return -ENOMEM;
    if (m->name != "[stack]") return -EINVAL;
    for (uint64_t below_start = 0; start > 0;) {
      const Mapping* below = mm.find(start - 1, &below_start);
      if (!below || below->name != "[stack]") break;
      start = below_start;
    }
    addr = start;
  }
  if (end > mm.limit() || mapped_in(mm, addr, end) != end - addr) return -ENOMEM;
  const int vprot = static_cast<int>(prot & (kProtRead | kProtWrite | kProtExec));
  if (vprot != kProtNone && !fits_memory_limit(p, end - addr, accessible_in(mm, addr, end))) return -ENOMEM;
  return mm.protect(addr, end - addr, vprot);
}

namespace {

// A shared anonymous mapping that grows (mremap) grows its memfd to cover `bytes`.
bool cover_memfd(const kvm::SharedBacking& memfd, uint64_t bytes) {
  struct stat st{};
  if (fstat(memfd.fd, &st) != 0) return false;
  return uint64_t(st.st_size) >= bytes || ftruncate(memfd.fd, off_t(bytes)) == 0;
}

// The moving part of mremap: [addr, addr+old_len) -> dst (0: anywhere) of new_len bytes.
int64_t remap_move(Process& p, uint64_t addr, uint64_t old_len, uint64_t new_len, uint64_t dst, bool dont_unmap) {
  auto& mm = p.mm();
  const uint64_t keep = std::min(old_len, new_len);
  const Mapping* m = one_mapping(mm, addr, keep);
  if (!m) return -EFAULT;
  const int prot = m->prot;
  const std::string name = m->name;
  const uint8_t fork_flags = m->fork_flags;  // Linux moves the VMA, VM_WIPEONFORK and VM_DONTCOPY with it
  const auto backing = m->shared;
  uint64_t mapping_start = 0;
  mm.find(addr, &mapping_start);
  const uint64_t backing_offset = m->shared_offset + (addr - mapping_start);
  if (backing && dont_unmap) return -EINVAL;  // MREMAP_DONTUNMAP: private anonymous memory only (Linux 5.7)
  uint64_t removed = dont_unmap ? 0 : accessible_in(mm, addr, addr + old_len);
  if (dst) removed += accessible_in(mm, dst, dst + new_len);
  if (!fits_memory_limit(p, prot != kProtNone ? new_len : 0, removed)) return -ENOMEM;
  if (!dst) {
    auto found = mm.find_free(new_len);
    if (!found) return -ENOMEM;
    dst = *found;
  }
  if (backing) {  // the same file at the new place: nothing to copy
    if (name == kSharedAnonName && !cover_memfd(*backing, backing_offset + new_len)) return -ENOMEM;
    if (int rc = mm.map_shared(dst, new_len, prot, name, backing, backing_offset); rc != 0) return rc;
  } else {
    if (int rc = mm.map(dst, new_len, prot, name); rc != 0) return rc;
  }
  if (fork_flags) mm.set_fork_flags(dst, new_len, fork_flags, 0);
  if (!backing) mm.copy_within(dst, addr, keep);
  if (dont_unmap) {
    mm.map(addr, old_len, prot, name);  // the old range stays, emptied
    if (fork_flags) mm.set_fork_flags(addr, old_len, fork_flags, 0);
  } else {
    mm.unmap(addr, old_len);
  }
  return static_cast<int64_t>(dst);
}

}  // namespace

KVMS_SYSCALL(mremap) {
  const uint64_t addr = a.a[0], flags = a.a[3], new_addr = a.a[4];
  uint64_t old_len = a.a[1], new_len = a.a[2];
  auto& mm = p.mm();
  if (flags & ~(kMremapMayMove | kMremapFixed | kMremapDontUnmap)) return -EINVAL;
  if ((flags & kMremapFixed) && !(flags & kMremapMayMove)) return -EINVAL;
  if ((flags & kMremapDontUnmap) && (!(flags & kMremapMayMove) || old_len != new_len)) return -EINVAL;
  if (addr & kPageMask) return -EINVAL;
  old_len = page_up(old_len);
  new_len = page_up(new_len);
  if (new_len == 0) return -EINVAL;
  if (addr > kTaskSize || old_len > kTaskSize - addr) return -EINVAL;
  if (new_len > kTaskSize) return -EINVAL;  // what Linux answers (tests/guests/hostile/guest_values.c)
  // Every mapping is private here, and Linux only duplicates shared ones (old_len == 0).
  if (old_len == 0) return -EINVAL;

  if (flags & (kMremapFixed | kMremapDontUnmap)) {
    uint64_t dst = 0;
    if (flags & kMremapFixed) {
      if (new_addr & kPageMask) return -EINVAL;
      if (new_addr > kTaskSize - new_len) return -EINVAL;
      if (addr < new_addr + new_len && new_addr < addr + old_len) return -EINVAL;  // overlap
      if (new_addr < kUserMin) return -EPERM;
      if (new_addr + new_len > mm.limit()) return -ENOMEM;
      dst = new_addr;
    }
    return remap_move(p, addr, old_len, new_len, dst, flags & kMremapDontUnmap);
  }

  if (old_len >= new_len) {  // shrink in place (Linux does not even require the range to be mapped)
    if (old_len > new_len)
      if (int rc = mm.unmap(addr + new_len, old_len - new_len); rc != 0) return rc;
    return static_cast<int64_t>(addr);
  }

  const Mapping* m = one_mapping(mm, addr, old_len);
  if (!m) return -EFAULT;
  const int prot = m->prot;
  const std::string name = m->name;
  const uint8_t fork_flags = m->fork_flags;
  const auto backing = m->shared;
  uint64_t start = 0;
  mm.find(addr, &start);
  const uint64_t backing_offset = m->shared_offset + (addr - start);
  const uint64_t tail = addr + old_len, grow = new_len - old_len;
  if (prot != kProtNone && !fits_memory_limit(p, grow, 0)) return -ENOMEM;
  if (grow <= mm.limit() && tail <= mm.limit() - grow && mapped_in(mm, tail, tail + grow) == 0) {
    if (backing) {  // the file (or memfd) goes on past the old end
      if (name == kSharedAnonName && !cover_memfd(*backing, backing_offset + new_len)) return -ENOMEM;
      if (int rc = mm.map_shared(tail, grow, prot, name, backing, backing_offset + old_len); rc != 0) return rc;
      return static_cast<int64_t>(addr);
    }
    if (int rc = mm.map(tail, grow, prot, name); rc != 0) return rc;
    if (fork_flags) mm.set_fork_flags(tail, grow, fork_flags, 0);
    return static_cast<int64_t>(addr);
  }
  if (!(flags & kMremapMayMove)) return -ENOMEM;
  return remap_move(p, addr, old_len, new_len, 0, false);
}

KVMS_SYSCALL(madvise) {
  const uint64_t addr = a.a[0], len_in = a.a[1];
  const int64_t advice = static_cast<int>(a.a[2]);
  auto& mm = p.mm();
  enum class Kind { Nothing, DontNeed, Free, Remove, WipeOnFork, KeepOnFork, DontFork, DoFork, PopulateRead, PopulateWrite, Poison };
  Kind kind;
  switch (advice) {
    case MADV_NORMAL: case MADV_RANDOM: case MADV_SEQUENTIAL: case MADV_WILLNEED:
    case MADV_MERGEABLE: case MADV_UNMERGEABLE:
    case MADV_HUGEPAGE: case MADV_NOHUGEPAGE: case MADV_DONTDUMP: case MADV_DODUMP:
    case 20 /* MADV_COLD */: case 21 /* MADV_PAGEOUT */:
    case 25 /* MADV_COLLAPSE */:
      kind = Kind::Nothing;
      break;
    case MADV_DONTFORK: kind = Kind::DontFork; break;
    case MADV_DOFORK: kind = Kind::DoFork; break;
    case 19 /* MADV_KEEPONFORK */: kind = Kind::KeepOnFork; break;
    case MADV_DONTNEED: case 24 /* MADV_DONTNEED_LOCKED */: kind = Kind::DontNeed; break;
    case 8 /* MADV_FREE */: kind = Kind::Free; break;
    case MADV_REMOVE: kind = Kind::Remove; break;
    case 18 /* MADV_WIPEONFORK */: kind = Kind::WipeOnFork; break;
    case 22 /* MADV_POPULATE_READ */: kind = Kind::PopulateRead; break;
    case 23 /* MADV_POPULATE_WRITE */: kind = Kind::PopulateWrite; break;
    case 100 /* MADV_HWPOISON */: case 101 /* MADV_SOFT_OFFLINE */: kind = Kind::Poison; break;
    default: return -EINVAL;
  }
  if (addr & kPageMask) return -EINVAL;
  const uint64_t len = page_up(len_in);
  if (len_in && !len) return -EINVAL;
  const uint64_t end = addr + len;
  if (end < addr) return -EINVAL;
  if (end == addr) return 0;
  if (kind == Kind::Poison) return -EPERM;  // needs CAP_SYS_ADMIN

  struct Piece {
    uint64_t start, end;
    int prot;
    std::string name;
    uint8_t fork_flags;
    std::shared_ptr<const kvm::SharedBacking> shared;
    uint64_t shared_offset;  // of `start`
  };
  std::vector<Piece> pieces;
  for_each_mapping(mm, addr, end, [&](uint64_t s, uint64_t e, const Mapping& m) {
    uint64_t mapping_start = 0;
    mm.find(s, &mapping_start);
    pieces.push_back({s, e, m.prot, m.name, m.fork_flags, m.shared, m.shared_offset + (s - mapping_start)});
  });
  // Dropping pages keeps what the mapping is (Linux keeps the VMA): its fork flags too.
  auto refresh = [&](const Piece& piece) {
    mm.map(piece.start, piece.end - piece.start, piece.prot, piece.name);
    if (piece.fork_flags) mm.set_fork_flags(piece.start, piece.end - piece.start, piece.fork_flags, 0);
  };
  uint64_t covered = 0;
  for (const auto& piece : pieces) covered += piece.end - piece.start;
  const bool holes = covered != len;
  if ((kind == Kind::PopulateRead || kind == Kind::PopulateWrite) && holes) return -ENOMEM;

  for (const auto& piece : pieces) {
    const bool anon = is_private_anonymous(piece.name);
    switch (kind) {
      case Kind::Nothing: case Kind::Poison:
        break;
      case Kind::DontNeed:
        if (anon) refresh(piece);
        break;
      case Kind::Free:
        if (!anon) return -EINVAL;
        refresh(piece);
        break;
      case Kind::Remove:
        if (anon) return -EINVAL;                       // no file behind it
        if (piece.shared) {  // the file's (or memfd's) pages go: every process mapping them sees zeros
          if (!(piece.prot & kProtWrite)) return -EACCES;
          if (fallocate(piece.shared->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(piece.shared_offset),
                        off_t(piece.end - piece.start)) != 0)
            return -errno;
          break;
        }
        if (piece.name != kSharedAnonName || !(piece.prot & kProtWrite)) return -EACCES;  // needs shared+write
        refresh(piece);
        break;
      case Kind::WipeOnFork:  // a worker's reset is a fork of its template: see AddressSpace::apply_fork_flags
        if (!anon) return -EINVAL;
        if (int rc = mm.set_fork_flags(piece.start, piece.end - piece.start, kvm::kWipeOnFork, 0)) return rc;
        break;
      case Kind::KeepOnFork:
        if (int rc = mm.set_fork_flags(piece.start, piece.end - piece.start, 0, kvm::kWipeOnFork)) return rc;
        break;
      case Kind::DontFork:
        if (int rc = mm.set_fork_flags(piece.start, piece.end - piece.start, kvm::kDontFork, 0)) return rc;
        break;
      case Kind::DoFork:
        if (int rc = mm.set_fork_flags(piece.start, piece.end - piece.start, 0, kvm::kDontFork)) return rc;
        break;
      case Kind::PopulateRead:
        if (piece.prot == kProtNone) return -EFAULT;
        break;
      case Kind::PopulateWrite:
        if (!(piece.prot & kProtWrite)) return -EFAULT;
        break;
    }
  }
  return holes ? -ENOMEM : 0;
}

namespace {

// mlock/munlock: the range (rounded out to pages) must be mapped.
int64_t lock_range(Process& p, uint64_t addr, uint64_t len, bool lock) {
  const uint64_t start = page_down(addr);
  const uint64_t rounded = page_up(len + (addr & kPageMask));
  if (lock && (rounded >> 12) > (p.rlimits[RLIMIT_MEMLOCK].first >> 12)) return -ENOMEM;
  const uint64_t end = start + rounded;
  if (end < start) return -EINVAL;
  if (end == start) return 0;
  return mapped_in(p.mm(), start, end) == rounded ? 0 : -ENOMEM;
}

}  // namespace

KVMS_SYSCALL(mlock) {
  if (p.rlimits[RLIMIT_MEMLOCK].first == 0) return -EPERM;
  return lock_range(p, a.a[0], a.a[1], true);
}

KVMS_SYSCALL(munlock) { return lock_range(p, a.a[0], a.a[1], false); }

// Every page is host memory that is never swapped from the guest's point of view, so locking is
// only RLIMIT_MEMLOCK's accounting: the current mappings must fit under it.
KVMS_SYSCALL(mlockall) {
  constexpr uint64_t kCurrent = 1, kFuture = 2, kOnFault = 4;
  const uint64_t flags = a.a[0];
  if (!flags || (flags & ~(kCurrent | kFuture | kOnFault)) || flags == kOnFault) return -EINVAL;
  if (p.rlimits[RLIMIT_MEMLOCK].first == 0) return -EPERM;
  if ((flags & kCurrent) && p.mm().mapped_bytes() > p.rlimits[RLIMIT_MEMLOCK].first) return -ENOMEM;
  return 0;
}

KVMS_SYSCALL(munlockall) { return 0; }

KVMS_SYSCALL(msync) {
  const uint64_t addr = a.a[0], flags = a.a[2];
  uint64_t len = a.a[1];
  if (flags & ~(kMsAsync | kMsInvalidate | kMsSync)) return -EINVAL;
  if (addr & kPageMask) return -EINVAL;
  if ((flags & kMsAsync) && (flags & kMsSync)) return -EINVAL;
  len = page_up(len);
  const uint64_t end = addr + len;
  if (end < addr) return -ENOMEM;
  if (end == addr) return 0;
  return mapped_in(p.mm(), addr, end) == len ? 0 : -ENOMEM;  // nothing to write back
}

KVMS_SYSCALL(mincore) {
  const uint64_t addr = a.a[0], len = a.a[1], vec = a.a[2];
  auto& mm = p.mm();
  if (addr & kPageMask) return -EINVAL;
  if (len > kTaskSize || addr > kTaskSize - len) return -ENOMEM;
  const uint64_t pages = page_up(len) >> 12;
  static const std::vector<uint8_t> ones(4096, 1);
  for (uint64_t done = 0; done < pages;) {
    const uint64_t va = addr + done * kPageSize;
    const Mapping* m = mm.find(va);
    if (!m) return -ENOMEM;
    const uint64_t n = std::min(pages - done, (m->end - va) >> 12);
    for (uint64_t i = 0; i < n;) {
      const uint64_t chunk = std::min<uint64_t>(n - i, ones.size());
      if (!mm.copy_to_user(vec + done + i, ones.data(), chunk)) return -EFAULT;
      i += chunk;
    }
    done += n;
  }
  return 0;
}

}  // namespace kvms::linux

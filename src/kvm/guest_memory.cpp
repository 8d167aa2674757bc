#include "kvm/guest_memory.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cerrno>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace kvms::kvm {
namespace {

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

uint8_t* map(int fd, uint64_t offset, uint64_t size, int flags) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags | MAP_NORESERVE, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) fail("mmap guest memory");
  return static_cast<uint8_t*>(p);
}

}  // namespace

std::shared_ptr<GuestMemory> GuestMemory::create(uint64_t user_size, uint64_t kernel_size) {
  if (user_size == 0 || user_size > kMaxUserSize || (user_size & kPageMask) || (kernel_size & kPageMask))
    throw std::invalid_argument("guest memory size out of range");
  std::shared_ptr<GuestMemory> m(new GuestMemory);
  m->memfd_ = memfd_create("kvmserver-guest", MFD_CLOEXEC);
  if (m->memfd_ < 0) fail("memfd_create");
  if (ftruncate(m->memfd_, static_cast<off_t>(kKernelPhys + kernel_size)) != 0) fail("ftruncate guest memory");
  m->user_size_ = user_size;
  m->kernel_size_ = kernel_size;
  m->user_ = map(m->memfd_, 0, user_size, MAP_SHARED);
  m->kernel_ = map(m->memfd_, kKernelPhys, kernel_size, MAP_SHARED);
  return m;
}

GuestMemory::FileBacking::~FileBacking() {
  if (fd >= 0) close(fd);
}

std::shared_ptr<GuestMemory> GuestMemory::from_file(uint64_t user_size, uint64_t kernel_size, int fd,
                                                    std::vector<FileExtent> extents) {
  if (user_size == 0 || user_size > kMaxUserSize || (user_size & kPageMask) || (kernel_size & kPageMask))
    throw std::invalid_argument("guest memory size out of range");
  uint64_t previous_end = 0;
  for (const FileExtent& e : extents)
    if (((e.gpa | e.bytes | e.file_offset) & kPageMask) || e.bytes == 0 || e.gpa < previous_end ||
        e.bytes > user_size || e.gpa > user_size - e.bytes)
      throw std::invalid_argument("snapshot memory extents out of order or outside the user slot");
    else
      previous_end = e.gpa + e.bytes;
  auto backing = std::make_shared<FileBacking>();
  backing->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (backing->fd < 0) fail("dup snapshot file");
  backing->extents = std::move(extents);
  std::shared_ptr<GuestMemory> m(new GuestMemory);
  m->memfd_ = memfd_create("kvmserver-guest", MFD_CLOEXEC);  // the kernel slot only
  if (m->memfd_ < 0) fail("memfd_create");
  if (ftruncate(m->memfd_, static_cast<off_t>(kKernelPhys + kernel_size)) != 0) fail("ftruncate guest memory");
  m->user_size_ = user_size;
  m->kernel_size_ = kernel_size;
  m->file_ = std::move(backing);
  m->map_user_from_file();
  m->kernel_ = map(m->memfd_, kKernelPhys, kernel_size, MAP_SHARED);
  return m;
}

void GuestMemory::map_user_from_file() {
  user_ = map(-1, 0, user_size_, MAP_PRIVATE | MAP_ANONYMOUS);
  for (const FileExtent& e : file_->extents) {
    void* p = mmap(user_ + e.gpa, e.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, file_->fd,
                   static_cast<off_t>(e.file_offset));
    if (p == MAP_FAILED) fail("mmap snapshot memory");
  }
}

std::shared_ptr<GuestMemory> GuestMemory::fork_private(const std::shared_ptr<GuestMemory>& parent) {
  std::shared_ptr<GuestMemory> m(new GuestMemory);
  m->memfd_ = dup(parent->memfd_);
  if (m->memfd_ < 0) fail("dup guest memfd");
  m->user_size_ = parent->user_size_;
  m->kernel_size_ = parent->kernel_size_;
  m->file_ = parent->file_;
  if (m->file_)
    m->map_user_from_file();  // the same pages as the parent: it never writes to them
  else
    m->user_ = map(m->memfd_, 0, m->user_size_, MAP_PRIVATE);
  m->kernel_ = map(m->memfd_, kKernelPhys, m->kernel_size_, MAP_PRIVATE);
  m->parent_ = parent;
  return m;
}

namespace {

// The user slots that hold shared mappings, for the SIGBUS handler (fixed size: a handler must not
// allocate or lock). A slot is registered while its memory lives.
constexpr int kMaxGuardedSlots = 4096;
std::atomic<uintptr_t> guarded_base[kMaxGuardedSlots];
std::atomic<uintptr_t> guarded_size[kMaxGuardedSlots];
struct sigaction previous_sigbus;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (int i = 0; i < kMaxGuardedSlots; ++i) {
    const uintptr_t base = guarded_base[i].load(std::memory_order_acquire);
    if (base && addr >= base && addr - base < guarded_size[i].load(std::memory_order_acquire)) {
      void* page = reinterpret_cast<void*>(addr & ~uintptr_t(kPageMask));
      if (mmap(page, kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED)
        return;  // the access is retried on a zero page
    }
  }
  // Not ours: what would have happened without the handler.
  if (previous_sigbus.sa_flags & SA_SIGINFO && previous_sigbus.sa_sigaction) return previous_sigbus.sa_sigaction(sig, info, context);
  if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) return previous_sigbus.sa_handler(sig);
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

void register_slot(uint8_t* base, uint64_t size) {
  for (int i = 0; i < kMaxGuardedSlots; ++i) {
    if (guarded_base[i].load() == reinterpret_cast<uintptr_t>(base)) return;
    uintptr_t empty = 0;
    if (guarded_base[i].load() == 0) {
      guarded_size[i].store(size, std::memory_order_release);
      if (guarded_base[i].compare_exchange_strong(empty, reinterpret_cast<uintptr_t>(base))) return;
    }
  }
}

void unregister_slot(uint8_t* base) {
  for (int i = 0; i < kMaxGuardedSlots; ++i) {
    uintptr_t expected = reinterpret_cast<uintptr_t>(base);
    if (guarded_base[i].compare_exchange_strong(expected, 0)) return;
  }
}

}  // namespace

void guard_shared_mappings() {
  static const bool installed = [] {
    struct sigaction sa{};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, &previous_sigbus) == 0;
  }();
  (void)installed;
}

int GuestMemory::map_shared(uint64_t gpa, uint64_t len, int fd, uint64_t offset) {
  if (!can_share()) return -ENODEV;
  if ((gpa | len | offset) & kPageMask || len == 0 || gpa >= user_size_ || len > user_size_ - gpa) return -EINVAL;
  guard_shared_mappings();
  register_slot(user_, user_size_);
  if (mmap(user_ + gpa, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, static_cast<off_t>(offset)) == MAP_FAILED) {
    const int err = errno;
    unmap_shared(gpa, len);  // a failed MAP_FIXED may have unmapped the range
    return -err;
  }
  return 0;
}

void GuestMemory::unmap_shared(uint64_t gpa, uint64_t len) {
  if (mmap(user_ + gpa, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, memfd_, static_cast<off_t>(gpa)) ==
      MAP_FAILED)
    fail("mmap guest memory back over a shared mapping");
  punch_hole(gpa, len);
}

GuestMemory::~GuestMemory() {
  unregister_slot(user_);
  if (user_) munmap(user_, user_size_);
  if (kernel_) munmap(kernel_, kernel_size_);
  if (memfd_ >= 0) close(memfd_);
}

uint8_t* GuestMemory::host(uint64_t gpa, uint64_t len) const {
  if (gpa < user_size_ && len <= user_size_ - gpa) return user_ + gpa;
  if (gpa >= kKernelPhys && gpa - kKernelPhys < kernel_size_ && len <= kernel_size_ - (gpa - kKernelPhys))
    return kernel_ + (gpa - kKernelPhys);
  return nullptr;
}

uint64_t GuestMemory::resident_pages() const {
  struct stat st{};
  if (fstat(memfd_, &st) != 0) return 0;
  uint64_t pages = static_cast<uint64_t>(st.st_blocks) * 512 / kPageSize;
  if (file_)
    for (const FileExtent& e : file_->extents) pages += e.bytes / kPageSize;
  return pages;
}

std::vector<std::pair<uint64_t, uint64_t>> GuestMemory::nonzero_user_runs(uint64_t merge_gap_pages) const {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  auto add_page = [&](uint64_t page) {
    if (!runs.empty() && page - runs.back().second <= merge_gap_pages * kPageSize)
      runs.back().second = page + kPageSize;
    else
      runs.emplace_back(page, page + kPageSize);
  };
  auto scan = [&](uint64_t start, uint64_t end) {
    for (uint64_t page = start; page < end; page += kPageSize) {
      const auto* words = reinterpret_cast<const uint64_t*>(user_ + page);
      for (size_t i = 0; i < kPageSize / 8; ++i)
        if (words[i]) {
          add_page(page);
          break;
        }
    }
  };
  if (file_) {  // a template served from a snapshot: its data is the file's
    std::vector<unsigned char> data;
    may_hold_data(0, user_size_, data);
    for (uint64_t i = 0; i < data.size(); ++i)
      if (data[i]) scan(i * kPageSize, (i + 1) * kPageSize);
    return runs;
  }
  for (auto [start, end] : data_extents(0, user_size_)) scan(start, end);
  return runs;
}

int GuestMemory::write_user_range(int fd, uint64_t gpa, uint64_t len, uint64_t offset) const {
  if (!host(gpa, len) || gpa >= user_size_) return -EINVAL;
  while (len > 0) {
    const ssize_t n = pwrite(fd, user_ + gpa, std::min<uint64_t>(len, 1u << 30), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EIO;
    gpa += uint64_t(n);
    offset += uint64_t(n);
    len -= uint64_t(n);
  }
  return 0;
}

void GuestMemory::may_hold_data(uint64_t gpa, uint64_t len, std::vector<unsigned char>& out) const {
  out.assign((len + kPageSize - 1) / kPageSize, 0);
  const uint8_t* src = host(gpa, len);
  if (!src) return;
  // Resident here: a private copy, or a page of the memfd (holes are not resident).
  if (::mincore(const_cast<uint8_t*>(src), len, out.data()) != 0) out.assign(out.size(), 1);
  for (auto& r : out) r &= 1;
  // A snapshot's pages are data whether or not the host has read them from the file yet.
  if (file_ && gpa < user_size_)
    for (const FileExtent& e : file_->extents) {
      const uint64_t lo = std::max(e.gpa, gpa), hi = std::min(e.gpa + e.bytes, gpa + len);
      for (uint64_t a = lo; a < hi; a += kPageSize) out[(a - gpa) / kPageSize] = 1;
    }
}

void GuestMemory::discard_private() {
  if (!parent_) return;
  // MADV_DONTNEED on a MAP_PRIVATE file mapping drops the private copies; KVM's MMU notifier
  // invalidates the stale guest mappings, so the guest sees the parent's pages again.
  if (madvise(user_, user_size_, MADV_DONTNEED) != 0) fail("madvise user memory");
  if (madvise(kernel_, kernel_size_, MADV_DONTNEED) != 0) fail("madvise kernel memory");
}

void GuestMemory::discard_private_range(uint64_t gpa, uint64_t len) {
  if (parent_ && madvise(host(gpa, len), len, MADV_DONTNEED) != 0) fail("madvise guest range");
}

void GuestMemory::punch_hole(uint64_t gpa, uint64_t len) {
  if (fallocate(memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(gpa), static_cast<off_t>(len)) != 0)
    std::memset(host(gpa, len), 0, len);
}

std::vector<std::pair<uint64_t, uint64_t>> GuestMemory::data_extents(uint64_t gpa, uint64_t len) const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t end = gpa + len, pos = gpa;
  if (file_ && gpa < user_size_) {
    // The user slot's data is the snapshot file's extents, which hold some zero pages too (gaps
    // merged when it was written): only the pages that are not all zeros in the template count,
    // as only the memfd's data pages do otherwise. (A worker's zero() of a range, its guest's
    // mmap over it, would otherwise write and then reset every page of the extents it covers.)
    const GuestMemory& tmpl = parent_ ? *parent_ : *this;
    for (const FileExtent& e : file_->extents) {
      const uint64_t lo = std::max(e.gpa, gpa), hi = std::min(e.gpa + e.bytes, end);
      for (uint64_t page = lo; page < hi; page += kPageSize) {
        const auto* words = reinterpret_cast<const uint64_t*>(tmpl.user_ + page);
        bool zero = true;
        for (size_t i = 0; i < kPageSize / 8 && zero; ++i) zero = words[i] == 0;
        if (zero) continue;
        if (!out.empty() && out.back().second == page)
          out.back().second = page + kPageSize;
        else
          out.emplace_back(page, page + kPageSize);
      }
    }
    return out;
  }
  while (pos < end) {
    off_t data = lseek(memfd_, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 || static_cast<uint64_t>(data) >= end) break;
    off_t hole = lseek(memfd_, data, SEEK_HOLE);
    uint64_t stop = hole < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    out.emplace_back(static_cast<uint64_t>(data), stop);
    pos = stop;
  }
  return out;
}

void GuestMemory::restore_page(uint64_t gpa) {
  uint8_t* dst = host(gpa & ~kPageMask, kPageSize);
  const uint8_t* src = parent_ ? parent_->host(gpa & ~kPageMask, kPageSize) : nullptr;
  if (dst && src) std::memcpy(dst, src, kPageSize);
}

}  // namespace kvms::kvm

#include "kvm/guest_memory.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

std::shared_ptr<GuestMemory> GuestMemory::fork_private(const std::shared_ptr<GuestMemory>& parent) {
  std::shared_ptr<GuestMemory> m(new GuestMemory);
  m->memfd_ = dup(parent->memfd_);
  if (m->memfd_ < 0) fail("dup guest memfd");
  m->user_size_ = parent->user_size_;
  m->kernel_size_ = parent->kernel_size_;
  m->user_ = map(m->memfd_, 0, m->user_size_, MAP_PRIVATE);
  m->kernel_ = map(m->memfd_, kKernelPhys, m->kernel_size_, MAP_PRIVATE);
  m->parent_ = parent;
  return m;
}

GuestMemory::~GuestMemory() {
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
  return static_cast<uint64_t>(st.st_blocks) * 512 / kPageSize;
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

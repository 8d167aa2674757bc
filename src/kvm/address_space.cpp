#include "kvm/address_space.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

namespace kvms::kvm {
namespace {

constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kWritable = 1ull << 1;
constexpr uint64_t kUser = 1ull << 2;
constexpr uint64_t kAccessed = 1ull << 5;
constexpr uint64_t kDirty = 1ull << 6;
constexpr uint64_t kGlobal = 1ull << 8;
constexpr uint64_t kLargePage = 1ull << 7;  // a directory entry mapping 2 MiB itself (PS)
constexpr uint64_t kLargePageSize = 2ull << 20;
constexpr uint64_t kNoExecute = 1ull << 63;
constexpr uint64_t kAddrMask = 0x000f'ffff'ffff'f000ull;

// Accessed and dirty are set up front so the CPU never writes to page tables: a page-table page the
// guest wrote would be one more page to reset after every request.
uint64_t user_pte(uint64_t gpa, int prot) {
  uint64_t e = gpa | kPresent | kUser | kAccessed | kDirty;
  if (prot & kProtWrite) e |= kWritable;
  if (!(prot & kProtExec)) e |= kNoExecute;
  return e;
}

unsigned index_at(uint64_t vaddr, int level) { return (vaddr >> (12 + 9 * level)) & 511; }

bool add_overflows(uint64_t a, uint64_t b) { return a + b < a; }

}  // namespace

AddressSpace::AddressSpace(std::shared_ptr<GuestMemory> memory) : memory_(std::move(memory)) {
  next_table_ = kPageTableOffset;
  pml4_ = kKernelPhys + alloc_kernel_page();
}

AddressSpace::AddressSpace(const AddressSpace& other, std::shared_ptr<GuestMemory> memory) : AddressSpace(other) {
  memory_ = std::move(memory);
  host_written_.clear();
  // A fork's shared mappings show the same files (snapshot_memory left their pages out).
  for (auto& [start, m] : maps_) {
    if (!m.shared) continue;
    if (memory_->map_shared(start, m.end - start, m.shared->fd, m.shared_offset) != 0)
      throw std::runtime_error("cannot map a shared mapping into a forked address space");
  }
}

SharedBacking::SharedBacking(int owned_fd) : fd(owned_fd) {
  struct stat st{};
  if (fstat(fd, &st) == 0) {
    dev = st.st_dev;
    ino = st.st_ino;
  }
}

SharedBacking::~SharedBacking() {
  if (fd >= 0) close(fd);
}

uint64_t* AddressSpace::table_at(uint64_t gpa) const {
  return reinterpret_cast<uint64_t*>(memory_->host(gpa, kPageSize));
}

uint64_t AddressSpace::alloc_kernel_page() {
  if (next_table_ + kPageSize > memory_->kernel_size()) return 0;
  uint64_t offset = next_table_;
  next_table_ += kPageSize;
  return offset;
}

void AddressSpace::note_write(uint64_t gpa, uint64_t len) {
  if (!tracking_ || len == 0) return;
  for (uint64_t page = gpa >> 12; page <= (gpa + len - 1) >> 12; ++page) host_written_.push_back(page);
}

// The entry for vaddr in its table at `stop_level` (0: the last level; 1: the directory), creating
// missing tables when asked. A 2 MiB page on the way (restore_mappings makes them) is split into a
// table of 4 KiB pages with the same translation and access first, so every caller edits 4 KiB
// entries; the split changes no translation, so it needs no TLB flush.
uint64_t* AddressSpace::pte(uint64_t vaddr, bool create, int stop_level) {
  const bool kernel = vaddr >= kKernelVirt;
  uint64_t table = pml4_;
  for (int level = 3; level > stop_level; --level) {
    uint64_t* entry = table_at(table) + index_at(vaddr, level);
    const uint64_t entry_gpa = table + index_at(vaddr, level) * 8;
    if (!(*entry & kPresent)) {
      if (!create) return nullptr;
      uint64_t offset = alloc_kernel_page();
      if (offset == 0) return nullptr;
      *entry = (kKernelPhys + offset) | kPresent | kWritable | kAccessed | (kernel ? 0 : kUser);
      note_write(entry_gpa, 8);
    } else if (level == 1 && (*entry & kLargePage)) {
      // Never "no table here": the caller would take the 2 MiB as unmapped and leave it mapped.
      // (Unreachable: the kernel slot has room for tables covering the whole user slot.)
      uint64_t offset = alloc_kernel_page();
      if (offset == 0) throw std::bad_alloc();
      uint64_t* small = table_at(kKernelPhys + offset);
      const uint64_t base = *entry & kAddrMask & ~(kLargePageSize - 1);
      const uint64_t flags = *entry & (kPresent | kWritable | kUser | kAccessed | kDirty | kNoExecute);
      for (uint64_t i = 0; i < 512; ++i) small[i] = (base + i * kPageSize) | flags;
      note_write(kKernelPhys + offset, kPageSize);
      *entry = (kKernelPhys + offset) | kPresent | kWritable | kAccessed | kUser;
      note_write(entry_gpa, 8);
    }
    table = *entry & kAddrMask;
  }
  return table_at(table) + index_at(vaddr, stop_level);
}

void AddressSpace::set_ptes(uint64_t addr, uint64_t len, int prot) {
  const bool present = prot != kProtNone;
  uint64_t* pt = nullptr;
  for (uint64_t va = addr; va < addr + len; va += kPageSize) {
    if (!pt || index_at(va, 0) == 0) {
      pt = pte(va, present);
      if (!pt) {  // no table here: nothing mapped, skip to the next 2 MiB
        if (present) throw std::bad_alloc();
        va = (va | 0x1f'ffff) + 1 - kPageSize;
        continue;
      }
      pt -= index_at(va, 0);
      note_write(reinterpret_cast<uint8_t*>(pt) - memory_->kernel_base() + kKernelPhys, kPageSize);
    }
    uint64_t& e = pt[index_at(va, 0)];
    uint64_t next = present ? user_pte(va, prot) : 0;
    if (e != next) {
      if ((e & kPresent) && (next & ~kAccessed) != (e & ~kAccessed)) ++flush_generation_;
      e = next;
    }
  }
}

void AddressSpace::map_kernel_page(uint64_t offset, bool writable, bool executable) {
  uint64_t* e = pte(kKernelVirt + offset, true);
  if (!e) throw std::bad_alloc();
  *e = (kKernelPhys + offset) | kPresent | kAccessed | kDirty | kGlobal | (writable ? kWritable : 0) |
       (executable ? 0 : kNoExecute);
}

bool AddressSpace::split_at(uint64_t addr) {
  auto it = maps_.upper_bound(addr);
  if (it == maps_.begin()) return true;
  --it;
  if (it->first < addr && addr < it->second.end) {
    if (maps_.size() >= kMaxMappings) return false;
    Mapping tail = it->second;
    tail.shared_offset += addr - it->first;
    it->second.end = addr;
    if (tail.fork_flags) ++fork_flagged_;  // one flagged mapping more (the bytes are counted already)
    maps_.emplace(addr, std::move(tail));
  }
  return true;
}

bool AddressSpace::room_to_split(std::initializer_list<uint64_t> addrs) const {
  size_t needed = maps_.size();
  for (uint64_t a : addrs) {
    const Mapping* m;
    uint64_t start;
    if ((m = find(a, &start)) && start < a) ++needed;
  }
  return needed <= kMaxMappings;
}

void AddressSpace::count(const Mapping& m, uint64_t start, int sign) {
  if (m.fork_flags) fork_flagged_ += sign;
  if (m.prot == kProtNone) return;
  if (sign > 0)
    accessible_bytes_ += m.end - start;
  else
    accessible_bytes_ -= m.end - start;
}

int AddressSpace::set_fork_flags(uint64_t addr, uint64_t len, uint8_t set, uint8_t clear) {
  if (addr & kPageMask) return -EINVAL;
  len = page_up(len);
  if (len == 0) return 0;
  if (add_overflows(addr, len)) return -EINVAL;
  if (!room_to_split({addr, addr + len})) return -ENOMEM;
  split_at(addr);
  split_at(addr + len);
  for (auto it = maps_.lower_bound(addr); it != maps_.end() && it->first < addr + len; ++it) {
    count(it->second, it->first, -1);
    it->second.fork_flags = uint8_t((it->second.fork_flags | set) & ~clear);
    count(it->second, it->first, +1);
  }
  return 0;
}

void AddressSpace::apply_fork_flags(uint8_t which) {
  if (fork_flagged_ == 0) return;
  std::vector<std::pair<uint64_t, Mapping>> flagged;
  for (const auto& [start, m] : maps_)
    if (m.fork_flags & which) flagged.emplace_back(start, m);
  for (const auto& [start, m] : flagged) {
    if (m.fork_flags & which & kDontFork)
      unmap(start, m.end - start);
    else
      zero_range(start, m.end - start);  // the pages stay mapped, as zeros
  }
}

void AddressSpace::zero_range(uint64_t addr, uint64_t len) {
  memory_->zero(addr, len, [this](uint64_t gpa, uint64_t n) { note_write(gpa, n); });
}

int AddressSpace::map(uint64_t addr, uint64_t len, int prot, std::string name) {
  if ((addr & kPageMask) || len == 0) return -EINVAL;
  len = page_up(len);
  if (addr < kUserMin || add_overflows(addr, len) || addr + len > limit()) return -ENOMEM;
  if (int rc = unmap(addr, len); rc != 0) return rc;
  if (maps_.size() >= kMaxMappings) return -ENOMEM;  // like Linux, the old range may be gone then
  zero_range(addr, len);
  try {
    set_ptes(addr, len, prot);
  } catch (const std::bad_alloc&) {
    set_ptes(addr, len, kProtNone);
    return -ENOMEM;
  }
  auto added = maps_.emplace(addr, Mapping{addr + len, prot, std::move(name)}).first;
  count(added->second, addr, +1);
  return 0;
}

int AddressSpace::unmap(uint64_t addr, uint64_t len) {
  if ((addr & kPageMask) || len == 0) return -EINVAL;
  len = page_up(len);
  if (add_overflows(addr, len)) return -EINVAL;
  if (addr >= limit()) return 0;
  uint64_t end = std::min(addr + len, limit());
  if (!room_to_split({addr, end})) return -ENOMEM;
  split_at(addr);
  split_at(end);
  bool any = false;
  for (auto it = maps_.lower_bound(addr); it != maps_.end() && it->first < end;) {
    set_ptes(it->first, it->second.end - it->first, kProtNone);
    // The slot's own memory goes back under a shared mapping first: zeroing must not reach the file.
    if (it->second.shared) memory_->unmap_shared(it->first, it->second.end - it->first);
    if (!memory_->is_private()) zero_range(it->first, it->second.end - it->first);
    count(it->second, it->first, -1);
    it = maps_.erase(it);
    any = true;
  }
  if (any) ++flush_generation_;
  return 0;
}

int AddressSpace::map_shared(uint64_t addr, uint64_t len, int prot, std::string name,
                             std::shared_ptr<const SharedBacking> backing, uint64_t offset) {
  if (!memory_->can_share()) return -ENODEV;
  if (int rc = map(addr, len, prot, std::move(name)); rc != 0) return rc;
  len = page_up(len);
  if (int rc = memory_->map_shared(addr, len, backing->fd, offset); rc != 0) {
    unmap(addr, len);
    return rc;
  }
  Mapping& m = maps_.at(addr);
  m.shared = std::move(backing);
  m.shared_offset = offset;
  return 0;
}

int AddressSpace::protect(uint64_t addr, uint64_t len, int prot) {
  if (addr & kPageMask) return -EINVAL;
  if (len == 0) return 0;
  len = page_up(len);
  if (add_overflows(addr, len) || addr + len > limit()) return -ENOMEM;
  for (uint64_t pos = addr; pos < addr + len;) {  // Linux fails with ENOMEM on any hole
    uint64_t start;
    const Mapping* m = find(pos, &start);
    if (!m) return -ENOMEM;
    pos = m->end;
  }
  if (!room_to_split({addr, addr + len})) return -ENOMEM;
  split_at(addr);
  split_at(addr + len);
  try {
    for (auto it = maps_.lower_bound(addr); it != maps_.end() && it->first < addr + len; ++it) {
      set_ptes(it->first, it->second.end - it->first, prot);
      count(it->second, it->first, -1);
      it->second.prot = prot;
      count(it->second, it->first, +1);
    }
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  }
  return 0;
}

const Mapping* AddressSpace::find(uint64_t addr, uint64_t* start) const {
  auto it = maps_.upper_bound(addr);
  if (it == maps_.begin()) return nullptr;
  --it;
  if (addr >= it->second.end) return nullptr;
  if (start) *start = it->first;
  return &it->second;
}

std::optional<uint64_t> AddressSpace::find_free(uint64_t len, uint64_t hint, uint64_t align) const {
  len = page_up(len);
  if (len == 0 || len > limit() - kUserMin) return std::nullopt;
  if (align < kPageSize) align = kPageSize;
  auto is_free = [&](uint64_t a) {
    if (a < kUserMin || add_overflows(a, len) || a + len > limit()) return false;
    auto it = maps_.lower_bound(a);
    if (it != maps_.end() && it->first < a + len) return false;
    if (it != maps_.begin() && std::prev(it)->second.end > a) return false;
    return true;
  };
  if (hint && (hint % align) == 0 && is_free(hint)) return hint;
  // Top-down, like Linux's default mmap layout: walk the gaps from the highest one.
  uint64_t gap_end = limit();
  for (auto it = maps_.rbegin();; ++it) {
    uint64_t gap_start = it == maps_.rend() ? kUserMin : it->second.end;
    if (gap_end >= len && gap_end - len >= gap_start) {
      uint64_t a = (gap_end - len) / align * align;
      if (a >= gap_start && a >= kUserMin) return a;
    }
    if (it == maps_.rend()) break;
    gap_end = std::min(gap_end, it->first);
  }
  return std::nullopt;
}

bool AddressSpace::range_has(uint64_t addr, uint64_t len, int prot) const {
  if (len == 0) return true;
  if (add_overflows(addr, len)) return false;
  for (uint64_t pos = addr; pos < addr + len;) {
    const Mapping* m = find(pos);
    if (!m || m->prot == kProtNone) return false;
    if ((prot & kProtWrite) && !(m->prot & kProtWrite)) return false;
    pos = m->end;
  }
  return true;
}

uint8_t* AddressSpace::host_user(uint64_t addr, uint64_t len, int prot) const {
  if (!range_has(addr, len, prot)) return nullptr;
  static uint8_t empty;
  return len ? memory_->user_base() + addr : &empty;  // never a pointer computed from a wild addr
}

std::optional<ReadableSpan> AddressSpace::readable(uint64_t addr, uint64_t len) const {
  const uint8_t* p = host_user(addr, len, kProtRead);
  if (!p) return std::nullopt;
  return ReadableSpan(len ? p : nullptr, addr, len);
}

std::optional<WritableSpan> AddressSpace::writable(uint64_t addr, uint64_t len) const {
  uint8_t* p = host_user(addr, len, kProtWrite);
  if (!p) return std::nullopt;
  return WritableSpan(len ? p : nullptr, addr, len);
}

void AddressSpace::note_write(const WritableSpan& span, uint64_t written) {
  note_write(span.addr(), std::min(written, span.size()));
}

uint64_t AddressSpace::accessible(uint64_t addr, uint64_t len, int prot) const {
  const uint64_t end = add_overflows(addr, len) ? UINT64_MAX : addr + len;
  uint64_t pos = addr;
  while (pos < end) {
    const Mapping* m = find(pos);
    if (!m || m->prot == kProtNone || ((prot & kProtWrite) && !(m->prot & kProtWrite))) break;
    pos = m->end;
  }
  return std::min(pos, end) - addr;
}

bool AddressSpace::copy_from_user(void* dst, uint64_t src, uint64_t len) const {
  const uint8_t* p = host_user(src, len, kProtRead);
  if (!p) return false;
  if (len) std::memcpy(dst, p, len);
  return true;
}

bool AddressSpace::copy_to_user(uint64_t dst, const void* src, uint64_t len) {
  uint8_t* p = host_user(dst, len, kProtWrite);
  if (!p) return false;
  if (len) std::memcpy(p, src, len);
  note_write(dst, len);
  return true;
}

bool AddressSpace::fill_user(uint64_t dst, uint8_t byte, uint64_t len) {
  uint8_t* p = host_user(dst, len, kProtWrite);
  if (!p) return false;
  if (len) std::memset(p, byte, len);
  note_write(dst, len);
  return true;
}

bool AddressSpace::poke(uint64_t dst, const void* src, uint64_t len) {
  uint8_t* p = host_user(dst, len, kProtRead);
  if (!p) return false;
  if (len) std::memcpy(p, src, len);
  note_write(dst, len);
  return true;
}

std::optional<std::string> AddressSpace::read_string(uint64_t addr, uint64_t max) const {
  std::string out;
  uint64_t pos = addr;
  while (out.size() < max) {
    const Mapping* m = find(pos);
    if (!m || m->prot == kProtNone) return std::nullopt;
    const char* p = reinterpret_cast<const char*>(memory_->user_base() + pos);
    uint64_t avail = std::min<uint64_t>(m->end - pos, max - out.size());
    const void* nul = std::memchr(p, 0, avail);
    if (nul) {
      out.append(p, static_cast<const char*>(nul) - p);
      return out;
    }
    out.append(p, avail);
    pos += avail;
  }
  return std::nullopt;
}

}  // namespace kvms::kvm

namespace kvms::kvm {

bool AddressSpace::range_mapped(uint64_t addr, uint64_t len) const {
  if (len == 0) return true;
  if (add_overflows(addr, len)) return false;
  for (uint64_t pos = addr; pos < addr + len;) {
    const Mapping* m = find(pos);
    if (!m) return false;
    pos = m->end;
  }
  return true;
}

int AddressSpace::fill_from_file(uint64_t dst, int host_fd, uint64_t offset, uint64_t len) {
  if (!range_mapped(dst, len) || add_overflows(offset, len) || offset + len > uint64_t(INT64_MAX)) return -EFAULT;
  uint8_t* to = memory_->host(dst, len);
  if (!to) return -EFAULT;
  uint64_t done = 0;
  int rc = 0;
  while (done < len) {
    const uint64_t want = std::min<uint64_t>(len - done, 1ull << 30);
    const ssize_t n = ::pread(host_fd, to + done, want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = -errno;
      break;
    }
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  note_write(dst, done);
  return rc;
}

namespace {
bool page_is_zero(const uint8_t* page) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(page);
  for (size_t i = 0; i < kPageSize / 8; ++i)
    if (w[i]) return false;
  return true;
}
}  // namespace

bool AddressSpace::copy_within(uint64_t dst, uint64_t src, uint64_t len) {
  if ((dst | src | len) & kPageMask) return false;
  if (!range_mapped(dst, len) || !range_mapped(src, len)) return false;
  if (dst < src + len && src < dst + len) return false;  // overlapping
  const uint8_t* from = memory_->host(src, len);
  uint8_t* to = memory_->host(dst, len);
  if (!from || !to) return false;
  for (uint64_t off = 0; off < len; off += kPageSize) {
    if (page_is_zero(from + off)) continue;
    std::memcpy(to + off, from + off, kPageSize);
    note_write(dst + off, kPageSize);
  }
  return true;
}

uint64_t AddressSpace::push_iret_frame(int vcpu, const uint64_t (&frame)[5]) {
  if (vcpu < 0 || vcpu >= kMaxVcpus) throw std::out_of_range("vCPU id out of range");
  const uint64_t offset = stack_slot_top(vcpu) - sizeof frame;
  std::memcpy(memory_->kernel_base() + offset, frame, sizeof frame);
  note_write(kKernelPhys + offset, sizeof frame);
  return kKernelVirt + offset;
}

std::optional<ExceptionFrame> AddressSpace::exception_frame(uint64_t rsp, int vector) const {
  constexpr uint64_t kStacks = kKernelVirt + kStackOffset, kStacksEnd = kStacks + kStackPages * kPageSize;
  uint64_t w[6];
  if (rsp < kStacks || rsp > kStacksEnd || kStacksEnd - rsp < sizeof w) return std::nullopt;
  std::memcpy(w, memory_->kernel_base() + (rsp - kKernelVirt), sizeof w);
  const bool code = exception_has_error_code(vector);
  const uint64_t* f = w + (code ? 1 : 0);
  return ExceptionFrame{code ? w[0] : 0, f[0], f[1], f[2], f[3]};
}

std::optional<AddressSpace::Translation> AddressSpace::translate(uint64_t vaddr) const {
  uint64_t table = pml4_;
  for (int level = 3; level >= 0; --level) {
    const uint64_t* t = table_at(table);
    if (!t) return std::nullopt;
    const uint64_t e = t[index_at(vaddr, level)];
    if (!(e & kPresent)) return std::nullopt;
    const bool large = level == 1 && (e & kLargePage);
    if (level == 0 || large) {
      const uint64_t span = large ? kLargePageSize : kPageSize;
      return Translation{(e & kAddrMask & ~(span - 1)) + (vaddr & (span - 1)), (e & kWritable) != 0, !(e & kNoExecute), large};
    }
    table = e & kAddrMask;
  }
  return std::nullopt;
}

void AddressSpace::restore_mappings(const std::vector<std::pair<uint64_t, Mapping>>& mappings) {
  if (!maps_.empty()) throw std::logic_error("restore_mappings: the address space is not fresh");
  if (mappings.size() > kMaxMappings) throw std::invalid_argument("too many mappings");
  uint64_t previous_end = kUserMin;
  for (const auto& [start, m] : mappings) {
    if (((start | m.end) & kPageMask) || start < previous_end || m.end <= start || m.end > limit())
      throw std::invalid_argument("a mapping overlaps another, is unaligned or leaves user memory");
    if (m.prot & ~(kProtRead | kProtWrite | kProtExec)) throw std::invalid_argument("mapping with unknown protection");
    if (m.fork_flags & ~(kWipeOnFork | kDontFork)) throw std::invalid_argument("mapping with unknown fork flags");
    previous_end = m.end;
  }
  // The tables are fresh. Every whole 2 MiB inside one mapping is one directory entry (a 2 MiB
  // page: pte() splits it if the guest later changes part of it), so the work and the tables do
  // not grow with the template's size; the 4 KiB entries at the mappings' edges are written a
  // last-level table at a time. The pages that will hold the tables are faulted in by one call
  // rather than one fault each (counted: a table per 2 MiB region only partly covered, a
  // directory per 1 GiB region, the level above).
  uint64_t tables = 0;
  std::array<uint64_t, 3> last{~0ull, ~0ull, ~0ull};  // the last 2 MiB, 1 GiB, 512 GiB region counted
  auto count_region = [&](int level, uint64_t index) {
    if (index != last[level]) ++tables;
    last[level] = index;
  };
  for (const auto& [start, m] : mappings) {
    if (m.prot == kProtNone) continue;
    if (start & (kLargePageSize - 1)) count_region(0, start >> 21);
    if (m.end & (kLargePageSize - 1)) count_region(0, (m.end - 1) >> 21);
    for (int level = 1; level < 3; ++level) {
      const int shift = 21 + 9 * level;
      for (uint64_t i = start >> shift; i <= (m.end - 1) >> shift; ++i) count_region(level, i);
    }
  }
  tables = std::min(tables, (memory_->kernel_size() - next_table_) / kPageSize);
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  if (tables) (void)madvise(memory_->kernel_base() + next_table_, tables * kPageSize, MADV_POPULATE_WRITE);
  for (const auto& [start, m] : mappings) {
    if (m.prot != kProtNone) {
      for (uint64_t va = start; va < m.end;) {
        const uint64_t stop = std::min(m.end, (va | (kLargePageSize - 1)) + 1);
        if (!(va & (kLargePageSize - 1)) && stop - va == kLargePageSize) {
          uint64_t* pd = pte(va, true, 1);
          if (!pd) throw std::invalid_argument("no room for the page tables of the mappings");
          *pd = user_pte(va, m.prot) | kLargePage;
          va = stop;
          continue;
        }
        uint64_t* pt = pte(va, true);
        if (!pt) throw std::invalid_argument("no room for the page tables of the mappings");
        for (uint64_t e = user_pte(va, m.prot); va < stop; va += kPageSize, e += kPageSize) *pt++ = e;
      }
    }
    count(maps_.emplace_hint(maps_.end(), start, m)->second, start, +1);
  }
}

std::shared_ptr<GuestMemory> AddressSpace::snapshot_memory() const {
  auto copy = GuestMemory::create(memory_->user_size(), memory_->kernel_size());
  std::vector<unsigned char> data;
  auto copy_resident = [&](uint64_t gpa, uint64_t len) {
    const uint8_t* src = memory_->host(gpa, len);
    if (!src) return;
    memory_->may_hold_data(gpa, len, data);
    for (uint64_t i = 0; i < data.size(); ++i)
      if (data[i]) std::memcpy(copy->host(gpa + i * kPageSize), src + i * kPageSize, kPageSize);
  };
  for (const auto& [start, m] : maps_)
    if (m.prot != kProtNone && !m.shared) copy_resident(start, m.end - start);  // shared: in the file
  copy_resident(kKernelPhys, memory_->kernel_size());
  return copy;
}

}  // namespace kvms::kvm

#pragma once
// The guest's user address space: the list of mappings (like Linux's VMAs) and the 4-level page
// tables that enforce them. User memory is identity-mapped (see layout.hpp), so copying to and from
// the guest is a bounds-and-permission check plus memcpy.
//
// The object is plain data plus page-table pages that live in guest memory: copying it together with
// the guest memory gives an independent, identical address space (that is how workers fork and reset).
#include <cstdint>
#include <array>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvm/guest_memory.hpp"

namespace kvms::kvm {

enum Prot : int { kProtNone = 0, kProtRead = 1, kProtWrite = 2, kProtExec = 4 };

// What a fork does to a mapping (madvise): MADV_WIPEONFORK makes it read as zeros in the child,
// MADV_DONTFORK leaves it out. A worker's reset is such a fork of its template.
enum ForkFlag : uint8_t { kWipeOnFork = 1, kDontFork = 2 };

// What a MAP_SHARED mapping shows: a host file opened for writing, or a memfd for shared anonymous
// memory. Every guest process that maps it (a fork keeps the mapping) sees the same bytes.
struct SharedBacking {
  int fd = -1;  // owned
  uint64_t dev = 0, ino = 0;  // the file's identity: futexes in it are keyed by it (futex.cpp)
  explicit SharedBacking(int owned_fd);
  ~SharedBacking();
  SharedBacking(const SharedBacking&) = delete;
  SharedBacking& operator=(const SharedBacking&) = delete;
};

struct Mapping {
  uint64_t end = 0;
  int prot = kProtNone;
  std::string name;  // "[heap]", "[stack]", a file path, "" for anonymous
  uint8_t fork_flags = 0;
  std::shared_ptr<const SharedBacking> shared;  // MAP_SHARED with write-back; null otherwise
  uint64_t shared_offset = 0;                   // where in it the mapping starts
};

// A user range the host may access in place, made only by AddressSpace::readable()/writable()
// after checking that every byte is mapped with that access: handlers cannot forge one. The
// pointer stays valid while the guest memory exists (the host mapping covers the whole user slot
// even where the guest unmaps), so a blocking host call may use it without the process lock.
class ReadableSpan {
 public:
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  uint64_t addr() const { return addr_; }

 private:
  friend class AddressSpace;
  ReadableSpan(const uint8_t* data, uint64_t addr, uint64_t size) : data_(data), addr_(addr), size_(size) {}
  const uint8_t* data_;
  uint64_t addr_, size_;
};

class WritableSpan {
 public:
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  uint64_t addr() const { return addr_; }

 private:
  friend class AddressSpace;
  WritableSpan(uint8_t* data, uint64_t addr, uint64_t size) : data_(data), addr_(addr), size_(size) {}
  uint8_t* data_;
  uint64_t addr_, size_;
};

// Whether the CPU pushes an error code for the vector.
bool exception_has_error_code(int vector);

// Where an exception happened, as the CPU left it on the exception stack.
struct ExceptionFrame {
  uint64_t error = 0, rip = 0, cs = 0, rflags = 0, rsp = 0;
  bool from_user() const { return (cs & 3) == 3; }
};

class AddressSpace {
 public:
  explicit AddressSpace(std::shared_ptr<GuestMemory> memory);
  // Same mappings and page-table state over another (forked) guest memory.
  AddressSpace(const AddressSpace& other, std::shared_ptr<GuestMemory> memory);
  AddressSpace& operator=(const AddressSpace&) = default;

  GuestMemory& memory() const { return *memory_; }
  uint64_t cr3() const { return pml4_; }
  uint64_t limit() const { return memory_->user_size(); }

  // Maps [addr, addr+len) with fresh zero pages, replacing whatever was there (MAP_FIXED semantics).
  // Returns 0 or -errno.
  int map(uint64_t addr, uint64_t len, int prot, std::string name);
  int unmap(uint64_t addr, uint64_t len);
  // map(), then the range shows `backing` from `offset` (GuestMemory::map_shared): -ENODEV where
  // this memory cannot share (a worker's, a snapshot's).
  int map_shared(uint64_t addr, uint64_t len, int prot, std::string name, std::shared_ptr<const SharedBacking> backing,
                 uint64_t offset);
  bool can_share() const { return memory_->can_share(); }
  int protect(uint64_t addr, uint64_t len, int prot);
  // Sets and clears ForkFlags on the mappings of [addr, addr+len) (holes are skipped).
  int set_fork_flags(uint64_t addr, uint64_t len, uint8_t set, uint8_t clear);
  // This address space just became a copy of another: what is marked MADV_WIPEONFORK (when
  // `which` has kWipeOnFork) reads as zeros, what is marked MADV_DONTFORK (when `which` has
  // kDontFork) is unmapped. A guest fork applies both; a worker's reset only the wipe: the request
  // continues the whole server, all its threads, in memory V8 marks MADV_DONTFORK (its heap).
  void apply_fork_flags(uint8_t which);
  // A free range of len bytes, preferring hint, searching down from the top of user memory.
  std::optional<uint64_t> find_free(uint64_t len, uint64_t hint = 0, uint64_t align = kPageSize) const;
  const Mapping* find(uint64_t addr, uint64_t* start = nullptr) const;
  const std::map<uint64_t, Mapping>& mappings() const { return maps_; }
  // Bytes of accessible (not PROT_NONE) mappings: what --max-memory counts of the guest's memory.
  uint64_t mapped_bytes() const { return accessible_bytes_; }
  uint64_t mapping_count() const { return maps_.size(); }
  // Like Linux's vm.max_map_count: a map, protect or unmap that would need more entries fails
  // with ENOMEM, so the list (host memory) stays bounded whatever the guest does.
  static constexpr size_t kMaxMappings = 65530;

  // Guest accesses on behalf of a syscall: false (=> EFAULT) unless every byte is mapped with prot.
  // These, and the spans below, are the only way the syscall handlers reach guest memory: the raw
  // host mapping (GuestMemory) is private to the kvm layer.
  bool copy_from_user(void* dst, uint64_t src, uint64_t len) const;
  bool copy_to_user(uint64_t dst, const void* src, uint64_t len);
  bool fill_user(uint64_t dst, uint8_t byte, uint64_t len);
  // Like copy_to_user but ignores write permission (the loader filling read-only segments, the
  // vDSO's clock page).
  bool poke(uint64_t dst, const void* src, uint64_t len);
  // A NUL-terminated string of at most max bytes; nullopt on fault or when too long.
  std::optional<std::string> read_string(uint64_t addr, uint64_t max = 4096) const;
  template <typename T> bool read(uint64_t addr, T& out) const { return copy_from_user(&out, addr, sizeof(T)); }
  template <typename T> bool write(uint64_t addr, const T& v) { return copy_to_user(addr, &v, sizeof(T)); }

  // Direct host views of user ranges for the zero-copy syscalls (read/write into the guest's
  // buffer, recv/send, epoll_wait, getrandom): nullopt unless every byte is mapped with the access
  // asked for. A writable span's bytes must be reported with note_write once the host wrote them.
  std::optional<ReadableSpan> readable(uint64_t addr, uint64_t len) const;
  std::optional<WritableSpan> writable(uint64_t addr, uint64_t len) const;
  void note_write(const WritableSpan& span, uint64_t written);
  // How many bytes from addr on (at most len) are accessible with prot: reads and writes stop at
  // the first inaccessible byte, like Linux's copy loops.
  uint64_t accessible(uint64_t addr, uint64_t len, int prot) const;

  // Kernel-side copies into mapped user memory whatever its protection (mmap of a file, mremap):
  // false unless [dst, dst+len) (and [src, src+len)) lie inside mappings.
  // fill_from_file: pread()s up to len bytes of host_fd at offset into dst, stopping at EOF;
  // 0 or -errno.
  int fill_from_file(uint64_t dst, int host_fd, uint64_t offset, uint64_t len);
  // copy_within: the two ranges must not overlap; pages of zeros are skipped (dst is fresh).
  bool copy_within(uint64_t dst, uint64_t src, uint64_t len);

  // The exception stack of vCPU `vcpu` (kernel area): an iretq frame {rip, cs, rflags, rsp, ss}
  // put on it for the entry code's iret paths; returns the guest-virtual rsp that points to it.
  uint64_t push_iret_frame(int vcpu, const uint64_t (&frame)[5]);
  // The frame an exception stub finds at its kernel rsp for `vector` (error code or not, then rip,
  // cs, rflags, rsp, ss), when rsp points into the exception stacks; nullopt otherwise.
  std::optional<ExceptionFrame> exception_frame(uint64_t rsp, int vector) const;
  // The iretq frame push_iret_frame() left at rsp (rip, cs, rflags, rsp, ss; no error code).
  std::optional<ExceptionFrame> iret_frame(uint64_t rsp) const { return exception_frame(rsp, 0); }

  // Makes this fresh address space (kernel area installed, no user mapping yet) hold `mappings`,
  // with page tables built for them (loading a snapshot: its page tables are never taken from the
  // file). Throws std::invalid_argument unless they are sorted, disjoint, page-aligned, inside
  // [kUserMin, limit()), with known protections and fork flags, and at most kMaxMappings.
  void restore_mappings(const std::vector<std::pair<uint64_t, Mapping>>& mappings);

  // What the page tables say of a user address: the guest-physical address it reaches and whether
  // it is writable, executable, and part of a 2 MiB page; nullopt when not present (tests, checks).
  struct Translation {
    uint64_t gpa = 0;
    bool writable = false, executable = false, large = false;
  };
  std::optional<Translation> translate(uint64_t vaddr) const;

  // A private copy of everything the guest has in memory: the resident pages of its accessible
  // mappings (the only ones that can hold anything but zeros) and the kernel area (fork).
  std::shared_ptr<GuestMemory> snapshot_memory() const;

  // Counts page-table edits that removed or reduced access: a vCPU that has seen an older count must
  // flush its TLB before it runs guest code again.
  uint64_t flush_generation() const { return flush_generation_; }

  // Guest pages the host wrote (syscall results, page tables): the reset must restore them too,
  // because KVM's dirty log sees only the guest's own writes. Recording is off until enabled.
  void track_host_writes(bool on) { tracking_ = on; }
  std::vector<uint64_t>& host_written_pages() { return host_written_; }

  // Kernel-area pages (supervisor-only): map a kernel-slot offset at kKernelVirt + offset.
  void map_kernel_page(uint64_t offset, bool writable, bool executable);
  uint64_t alloc_kernel_page();  // returns a kernel-slot offset of a zeroed page

  // Stats
  uint64_t page_table_pages() const { return next_table_ / kPageSize; }

 private:
  // Only through the constructor above, which gives the copy its own memory.
  AddressSpace(const AddressSpace&) = default;
  uint64_t* table_at(uint64_t gpa) const;
  uint64_t* pte(uint64_t vaddr, bool create, int stop_level = 0);
  void set_ptes(uint64_t addr, uint64_t len, int prot);
  void note_write(uint64_t gpa, uint64_t len);
  void zero_range(uint64_t addr, uint64_t len);
  bool range_has(uint64_t addr, uint64_t len, int prot) const;
  // Host pointer to checked user memory (len 0: nullptr, whatever addr is).
  uint8_t* host_user(uint64_t addr, uint64_t len, int prot) const;
  bool range_mapped(uint64_t addr, uint64_t len) const;
  // Splits the mapping around addr so that one starts there; false when that would pass kMaxMappings.
  bool split_at(uint64_t addr);
  // Whether splitting at each of these addresses still fits kMaxMappings.
  bool room_to_split(std::initializer_list<uint64_t> addrs) const;
  void count(const Mapping& m, uint64_t start, int sign);

  std::shared_ptr<GuestMemory> memory_;
  std::map<uint64_t, Mapping> maps_;  // key: start
  uint64_t accessible_bytes_ = 0;
  uint64_t fork_flagged_ = 0;  // mappings with fork_flags (apply_fork_flags has nothing to do without)
  uint64_t pml4_ = 0;                 // guest-physical
  uint64_t next_table_ = 0;           // next free kernel-slot offset for page-table pages
  uint64_t flush_generation_ = 0;
  bool tracking_ = false;
  std::vector<uint64_t> host_written_;  // guest-physical page numbers, may repeat
};

}  // namespace kvms::kvm

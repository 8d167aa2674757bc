#pragma once
// Guest-physical memory: one sparse memfd holding the user slot and the kernel slot.
//
// The memfd is what makes forking cheap: a template's memory is the memfd itself (MAP_SHARED), and a
// worker maps the same memfd MAP_PRIVATE, so creating it copies nothing and the host kernel copies a
// page only on the worker's first write. Pages never written stay holes and cost nothing.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "kvm/layout.hpp"

namespace kvms::kvm {

class AddressSpace;

// Installs (once per process) the SIGBUS handler that keeps kvmserver alive when it touches a page
// of a shared file mapping past the file's end (the file was truncated after the guest mapped it):
// that page of the guest's user slot becomes a private zero page, as if the data were gone, and the
// access goes on. Without it, a guest that maps a file, truncates it and passes the buffer to read()
// would kill the host process.
void guard_shared_mappings();

// Part of a snapshot file that holds guest memory: `bytes` bytes for guest-physical `gpa` on, at
// `file_offset` in the file (all page-aligned).
struct FileExtent {
  uint64_t gpa = 0, bytes = 0, file_offset = 0;
};

class GuestMemory {
 public:
  // A fresh, all-zero guest memory (user_size bytes of user slot, kernel_size of kernel slot).
  static std::shared_ptr<GuestMemory> create(uint64_t user_size, uint64_t kernel_size);
  // A template's memory served from a snapshot file (src/snapshot/): the user slot is the file's
  // extents mapped copy-on-write over zeros, so nothing is read until a page is first touched; the
  // kernel slot is fresh (the caller rebuilds the kernel area and the page tables there). The
  // extents must be sorted, disjoint, page-aligned and inside the user slot (the snapshot reader
  // checks; this throws std::invalid_argument otherwise). `fd` is dup'ed.
  static std::shared_ptr<GuestMemory> from_file(uint64_t user_size, uint64_t kernel_size, int fd,
                                                std::vector<FileExtent> extents);
  // A copy-on-write view of `parent`: reads see parent's bytes until written here.
  static std::shared_ptr<GuestMemory> fork_private(const std::shared_ptr<GuestMemory>& parent);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  uint64_t user_size() const { return user_size_; }
  uint64_t kernel_size() const { return kernel_size_; }
  bool is_private() const { return parent_ != nullptr; }
  const std::shared_ptr<GuestMemory>& parent() const { return parent_; }

  // Pages of the memfd that hold data (written at least once): the template's resident size.
  uint64_t resident_pages() const;

  // The user slot's runs of pages that are not all zeros, for a snapshot: [start, end) pairs,
  // page-aligned, with gaps of fewer than `merge_gap_pages` zero pages merged into their
  // neighbours (fewer, longer runs: each is one host mapping per worker at load).
  std::vector<std::pair<uint64_t, uint64_t>> nonzero_user_runs(uint64_t merge_gap_pages) const;
  // Writes guest-physical [gpa, gpa+len) of the user slot to `fd` at `offset`; 0 or -errno.
  int write_user_range(int fd, uint64_t gpa, uint64_t len, uint64_t offset) const;
  // Whether this memory (or the template it was forked from) is served from a snapshot file.
  bool file_backed() const { return file_ != nullptr; }
  // For each page of [gpa, gpa+len): non-zero when it may hold data (resident here, or in the
  // snapshot file behind it). A fork copies exactly these.
  void may_hold_data(uint64_t gpa, uint64_t len, std::vector<unsigned char>& out) const;

  // MAP_SHARED file and shared-anonymous mappings (a plain run's processes only: never a template or
  // a worker, whose resets copy pages back). map_shared shows `fd` from `offset` at [gpa, gpa+len)
  // of the user slot, so that the guest's and the host's accesses are the file's (and another guest
  // process mapping it sees them); unmap_shared puts the slot's own (zero) memory back. A host
  // access past the end of a file truncated meanwhile would be SIGBUS: see guard_shared_mappings.
  bool can_share() const { return !parent_ && !file_; }
  int map_shared(uint64_t gpa, uint64_t len, int fd, uint64_t offset);
  void unmap_shared(uint64_t gpa, uint64_t len);

  // Drops every private page of a forked memory: the next access sees the parent again.
  void discard_private();
  // Copies the parent's bytes back over one guest-physical page (fast reset: the page stays resident).
  void restore_page(uint64_t gpa);

 private:
  // The raw host mapping is the kvm layer's alone: syscall handlers reach guest memory only
  // through AddressSpace, whose accessors check every range against the guest's mappings.
  friend class AddressSpace;
  friend class Vm;
  friend void install_kernel_area(AddressSpace& as);
  friend struct GuestMemoryTestAccess;  // unit tests: raw bytes whatever the page permissions

  uint8_t* user_base() const { return user_; }
  uint8_t* kernel_base() const { return kernel_; }
  // Host pointer for a guest-physical range, or nullptr when the range leaves both slots.
  uint8_t* host(uint64_t gpa, uint64_t len = 1) const;

  // Makes [gpa, gpa+len) read as zeros. A shared memory punches a hole (freeing the pages); a
  // private one drops its copies and overwrites the parent's data pages. Calls on_write for every page
  // the host had to write, so dirty tracking can see it.
  template <typename F> void zero(uint64_t gpa, uint64_t len, F&& on_write);

  void discard_private_range(uint64_t gpa, uint64_t len);

  struct FileBacking {
    int fd = -1;
    std::vector<FileExtent> extents;
    ~FileBacking();
  };
  GuestMemory() = default;
  // Maps the user slot: zeros, with the file's extents over them copy-on-write.
  void map_user_from_file();
  void punch_hole(uint64_t gpa, uint64_t len);
  // Data (non-hole) extents of the memfd inside [gpa, gpa+len), as [start, end) pairs.
  std::vector<std::pair<uint64_t, uint64_t>> data_extents(uint64_t gpa, uint64_t len) const;
  int memfd_ = -1;
  uint64_t user_size_ = 0, kernel_size_ = 0;
  uint8_t* user_ = nullptr;
  uint8_t* kernel_ = nullptr;
  std::shared_ptr<GuestMemory> parent_;
  std::shared_ptr<const FileBacking> file_;  // a snapshot's user slot (shared with workers)
};

template <typename F> void GuestMemory::zero(uint64_t gpa, uint64_t len, F&& on_write) {
  if (!parent_) return punch_hole(gpa, len);
  discard_private_range(gpa, len);
  for (auto [start, end] : data_extents(gpa, len)) {
    std::memset(host(start), 0, end - start);
    on_write(start, end - start);
  }
}

}  // namespace kvms::kvm

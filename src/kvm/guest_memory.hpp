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

class GuestMemory {
 public:
  // A fresh, all-zero guest memory (user_size bytes of user slot, kernel_size of kernel slot).
  static std::shared_ptr<GuestMemory> create(uint64_t user_size, uint64_t kernel_size);
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

  GuestMemory() = default;
  void punch_hole(uint64_t gpa, uint64_t len);
  // Data (non-hole) extents of the memfd inside [gpa, gpa+len), as [start, end) pairs.
  std::vector<std::pair<uint64_t, uint64_t>> data_extents(uint64_t gpa, uint64_t len) const;
  int memfd_ = -1;
  uint64_t user_size_ = 0, kernel_size_ = 0;
  uint8_t* user_ = nullptr;
  uint8_t* kernel_ = nullptr;
  std::shared_ptr<GuestMemory> parent_;
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

#pragma once
// Unit tests look at guest bytes whatever the page permissions (what a loader or mmap left there);
// handlers cannot: GuestMemory's raw mapping is private, and this friend is defined only here.
#include <cstdint>

#include "kvm/guest_memory.hpp"

namespace kvms::kvm {

struct GuestMemoryTestAccess {
  static uint8_t* user_base(const GuestMemory& m) { return m.user_base(); }
  // Zeroes [gpa, gpa+len) without tracking the writes (tests/fuzz: one memory reused per input).
  static void zero(GuestMemory& m, uint64_t gpa, uint64_t len) {
    m.zero(gpa, len, [](uint64_t, uint64_t) {});
  }
};

}  // namespace kvms::kvm

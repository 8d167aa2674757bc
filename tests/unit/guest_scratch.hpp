#pragma once
// What the syscall handlers' unit tests share: a guest Process over an address space, a bump
// allocator in a scratch region of guest memory, strings and bytes in and out of it, and a call
// of a handler with up to six arguments. A fixture derives from ::testing::Test and this, maps the
// scratch region in SetUp, and sets as_, proc_ and next_.
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {

struct GuestScratch {
  uint64_t alloc(size_t n) {
    const uint64_t a = next_;
    next_ += (n + 15) & ~size_t(15);
    if (scratch_end_) {
      EXPECT_LE(next_, scratch_end_);
    }
    return a;
  }
  uint64_t str(const std::string& s) {
    const uint64_t a = alloc(s.size() + 1);
    EXPECT_TRUE(as_->copy_to_user(a, s.c_str(), s.size() + 1));
    return a;
  }
  std::string peek(uint64_t addr, size_t n) {
    std::string s(n, '\0');
    EXPECT_TRUE(as_->copy_from_user(s.data(), addr, n));
    return s;
  }
  int64_t call(SyscallHandler h, std::initializer_list<uint64_t> args) {
    SyscallArgs a;
    int i = 0;
    for (uint64_t v : args) a.a[i++] = v;
    return h(*proc_, a);
  }

  std::shared_ptr<kvm::GuestMemory> mem_;
  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> proc_;
  uint64_t next_ = 0;
  uint64_t scratch_end_ = 0;  // set: alloc checks it stays below
};

}  // namespace kvms::linux

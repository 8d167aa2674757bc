#pragma once
// What the syscall handlers' unit tests share: a guest Process over an address space, a bump
// allocator in a scratch region of guest memory, strings and bytes in and out of it, and a call
// of a handler with up to six arguments. A fixture derives from ::testing::Test and this, maps the
// scratch region in SetUp, and sets as_, proc_ and next_.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/policy.hpp"
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

  // A new directory /tmp/kvms-NAME-XXXXXX (empty string on failure, with a test failure).
  static std::string make_temp_dir(const std::string& name) {
    std::string tmpl = "/tmp/kvms-" + name + "-XXXXXX";
    const bool made = mkdtemp(tmpl.data()) != nullptr;
    EXPECT_TRUE(made) << tmpl;
    return made ? tmpl : "";
  }
  // A guest of 1 GiB with [scratch, scratch + size) mapped read-write as the bump allocator's
  // region, and its Process under `grants`.
  void make_guest(uint64_t scratch, uint64_t size, PolicyConfig grants) {
    mem_ = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem_);
    EXPECT_EQ(as_->map(scratch, size, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    proc_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(std::move(grants)), ProcessConfig{});
    next_ = scratch;
    scratch_end_ = scratch + size;
  }
  // The guest's Process goes first (it holds host fds in the directory), then the directory.
  void remove_guest_and(const std::string& dir) {
    proc_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  std::shared_ptr<kvm::GuestMemory> mem_;
  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> proc_;
  uint64_t next_ = 0;
  uint64_t scratch_end_ = 0;  // set: alloc checks it stays below
};

}  // namespace kvms::linux

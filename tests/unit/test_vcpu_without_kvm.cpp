// kvm::Vcpu::without_kvm: the register file the syscall handlers use (arch_prctl here) and kicks
// that interrupt a handler's blocking host call, with no KVM at all (what the in-process fuzzer,
// tests/fuzz/, runs the handlers on).
#include <asm/prctl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/futex.h>

#include <atomic>
#include <chrono>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <thread>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/vm.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kScratch = 0x100000;

class VcpuWithoutKvm : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem_);
    ASSERT_EQ(as_->map(kScratch, 1 << 20, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    proc_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(PolicyConfig{}), ProcessConfig{});
    vcpu_ = kvm::Vcpu::without_kvm(0);
    proc_->attach(vcpu_.get());
  }
  int64_t call(SyscallHandler h, std::initializer_list<uint64_t> args) {
    SyscallArgs a;
    int i = 0;
    for (uint64_t v : args) a.a[i++] = v;
    return h(*proc_, a);
  }
  // Kicks the vCPU every 10 ms until `done` (one kick may land just before the blocking call).
  std::thread kicker(std::atomic<bool>& done) {
    return std::thread([this, &done] {
      while (!done) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        vcpu_->kick();
      }
    });
  }

  std::shared_ptr<kvm::GuestMemory> mem_;
  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> proc_;
  std::unique_ptr<kvm::Vcpu> vcpu_;
};

TEST_F(VcpuWithoutKvm, ArchPrctlSetsAndReadsTheSegmentBases) {
  EXPECT_EQ(call(sys_arch_prctl, {ARCH_SET_FS, 0x7f0000001000}), 0);
  EXPECT_EQ(vcpu_->fs_base(), 0x7f0000001000u);
  EXPECT_EQ(call(sys_arch_prctl, {ARCH_GET_FS, kScratch}), 0);
  uint64_t v = 0;
  ASSERT_TRUE(as_->read(kScratch, v));
  EXPECT_EQ(v, 0x7f0000001000u);
  EXPECT_EQ(call(sys_arch_prctl, {ARCH_SET_GS, 0x5000}), 0);
  EXPECT_EQ(call(sys_arch_prctl, {ARCH_GET_GS, kScratch + 8}), 0);
  ASSERT_TRUE(as_->read(kScratch + 8, v));
  EXPECT_EQ(v, 0x5000u);
  EXPECT_EQ(vcpu_->sregs().cs.dpl, 3);  // user mode from the start
  EXPECT_EQ(call(sys_arch_prctl, {ARCH_SET_FS, 0x800000000000}), -EPERM);
  EXPECT_EQ(call(sys_arch_prctl, {ARCH_GET_FS, 0xffffff8000000000}), -EFAULT);
}

TEST_F(VcpuWithoutKvm, WhatNeedsKvmThrows) {
  EXPECT_THROW(vcpu_->run(), std::logic_error);
  EXPECT_THROW(vcpu_->save(), std::logic_error);
  std::array<uint32_t, 1024> xsave{};
  EXPECT_THROW(vcpu_->get_xsave(xsave), std::logic_error);
  EXPECT_GT(vcpu_->guest_tsc(), 0u);
}

TEST_F(VcpuWithoutKvm, KickInterruptsABlockingRead) {
  ASSERT_EQ(call(sys_pipe2, {kScratch, 0}), 0);
  int32_t fds[2];
  ASSERT_TRUE(as_->read(kScratch, fds));
  vcpu_->bind_to_this_thread();
  std::atomic<bool> done{false};
  std::thread t = kicker(done);
  const int64_t r = call(sys_read, {uint64_t(fds[0]), kScratch + 64, 16});  // nobody writes
  done = true;
  t.join();
  EXPECT_EQ(r, -EINTR);
  EXPECT_TRUE(vcpu_->run_area()->immediate_exit);  // what the vCPU loop checks after a handler
}

TEST_F(VcpuWithoutKvm, KickEndsAFutexWait) {
  vcpu_->bind_to_this_thread();
  std::atomic<bool> done{false};
  std::thread t = kicker(done);
  const int64_t r = call(sys_futex, {kScratch + 128, FUTEX_WAIT, 0, 0, 0, 0});  // the word is 0: it waits
  done = true;
  t.join();
  EXPECT_EQ(r, -EINTR);
}

}  // namespace
}  // namespace kvms::linux

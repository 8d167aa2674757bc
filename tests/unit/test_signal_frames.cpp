// The signal frame rt_sigreturn pops (signal.cpp) when the guest made it up: only the flags a frame
// may change come back, and an XSAVE area the CPU would refuse makes the frame bad (the guest gets
// SIGSEGV), never an error in kvmserver. No KVM needed.
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <signal.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/signal.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kStack = 0x100000, kStackSize = 1 << 20;
constexpr uint64_t kXcr0 = 0x7;  // x87, SSE, AVX
// Offsets in Linux's struct ucontext (x86-64).
constexpr uint64_t kEflags = 40 + 17 * 8, kFpstate = 40 + 23 * 8;
// Offsets in the XSAVE area.
constexpr size_t kMxcsr = 24, kXstateBv = 512, kXcompBv = 520, kHeaderReserved = 528;

class SignalFrames : public ::testing::Test {
 protected:
  void SetUp() override {
    as_ = std::make_shared<kvm::AddressSpace>(kvm::GuestMemory::create(1ull << 30, 16 << 20));
    ASSERT_EQ(as_->map(kStack, kStackSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    proc_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(PolicyConfig{}), ProcessConfig{});
    xsave_.fill(0);
    put32(kMxcsr, 0x1f80);
    put64(kXstateBv, 0x3);
    user_.rsp = kStack + kStackSize - 256;
    user_.rip = 0x401000;
    user_.rflags = 0x202;
    SignalToDeliver d;
    d.sig = SIGUSR1;
    d.act.handler = 0x402000;
    d.act.flags = 0x04000000 | SA_SIGINFO;  // SA_RESTORER
    d.act.restorer = 0x403000;
    frame_ = push_signal_frame(*proc_, thread(), d, user_, xsave_, FaultDetail{});
    ASSERT_NE(frame_, 0u);
    uc_ = sigframe_ucontext(frame_);
    ASSERT_TRUE(as_->read(uc_ + kFpstate, fpstate_));
    ASSERT_NE(fpstate_, 0u);
  }
  ThreadContext& thread() { return proc_->main_thread(); }
  void put32(size_t at, uint32_t v) { std::memcpy(reinterpret_cast<uint8_t*>(xsave_.data()) + at, &v, 4); }
  void put64(size_t at, uint64_t v) { std::memcpy(reinterpret_cast<uint8_t*>(xsave_.data()) + at, &v, 8); }
  template <typename T> void poke_fp(size_t at, T v) { ASSERT_TRUE(as_->write(fpstate_ + at, v)); }
  bool pop(kvm_regs& out) {
    std::array<uint32_t, 1024> area{};
    return pop_signal_frame(*proc_, thread(), uc_, out, area, kXcr0);
  }

  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> proc_;
  std::array<uint32_t, 1024> xsave_{};
  kvm_regs user_{};
  uint64_t frame_ = 0, uc_ = 0, fpstate_ = 0;
};

TEST_F(SignalFrames, AFrameWeMadePopsBack) {
  kvm_regs out{};
  ASSERT_TRUE(pop(out));
  EXPECT_EQ(out.rip, user_.rip);
  EXPECT_EQ(out.rsp, user_.rsp);
}

TEST_F(SignalFrames, OnlyTheFlagsAFrameMayChangeComeBack) {
  // IOPL 3, NT, VM, VIF, VIP, ID: never; TF, AC, CF, RF: yes (Linux's FIX_EFLAGS).
  const uint64_t iopl = 3ull << 12, nt = 1 << 14, vm = 1 << 17, vif = 1 << 19, vip = 1 << 20, id = 1 << 21;
  const uint64_t tf = 1 << 8, ac = 1 << 18, cf = 1, rf = 1 << 16;
  ASSERT_TRUE(as_->write<uint64_t>(uc_ + kEflags, iopl | nt | vm | vif | vip | id | tf | ac | cf | rf));
  kvm_regs out{};
  out.rflags = 0x2;  // what the vCPU holds at the syscall: IF clear, IOPL 0
  ASSERT_TRUE(pop(out));
  EXPECT_EQ(out.rflags & (iopl | nt | vm | vif | vip | id), 0u);
  EXPECT_EQ(out.rflags & (tf | ac | cf | rf), tf | ac | cf | rf);
  EXPECT_TRUE(out.rflags & 0x200);  // interrupts stay enabled
}

TEST_F(SignalFrames, AnXsaveHeaderTheCpuWouldRefuseIsABadFrame) {
  const uint64_t mask_before = thread().sigmask;
  poke_fp<uint64_t>(kXstateBv, 0x3 | (1ull << 63));  // a reserved feature bit
  kvm_regs out{};
  EXPECT_FALSE(pop(out));
  EXPECT_EQ(thread().sigmask, mask_before);  // nothing of a bad frame is taken
  poke_fp<uint64_t>(kXstateBv, 0x3 | (1ull << 9));   // PKRU: not in this XCR0
  EXPECT_FALSE(pop(out));
  poke_fp<uint64_t>(kXstateBv, 0x3);
  ASSERT_TRUE(pop(out));
  poke_fp<uint64_t>(kXcompBv, 1ull << 63);             // the compacted format
  EXPECT_FALSE(pop(out));
  poke_fp<uint64_t>(kXcompBv, 0);
  poke_fp<uint64_t>(kHeaderReserved, 1);               // the reserved bytes XRSTOR checks
  EXPECT_FALSE(pop(out));
}

TEST_F(SignalFrames, HeaderBytesXrstorIgnoresAreClearedForKvm) {
  poke_fp<uint64_t>(kHeaderReserved + 40, 0x4141414141414141ull);
  kvm_regs out{};
  std::array<uint32_t, 1024> area{};
  ASSERT_TRUE(pop_signal_frame(*proc_, thread(), uc_, out, area, kXcr0));
  uint64_t reserved;
  std::memcpy(&reserved, reinterpret_cast<uint8_t*>(area.data()) + kHeaderReserved + 40, 8);
  EXPECT_EQ(reserved, 0u);
}

TEST_F(SignalFrames, MxcsrWithReservedBitsIsABadFrame) {
  poke_fp<uint32_t>(kMxcsr, 0xffff0000);
  kvm_regs out{};
  EXPECT_FALSE(pop(out));
  poke_fp<uint64_t>(kXstateBv, 0x0);  // no state that loads MXCSR: like Linux, not looked at
  EXPECT_TRUE(pop(out));
}

TEST_F(SignalFrames, ANonCanonicalRipIsABadFrame) {
  ASSERT_TRUE(as_->write<uint64_t>(uc_ + 40 + 16 * 8, 0x0000'8000'0000'0000ull));
  kvm_regs out{};
  EXPECT_FALSE(pop(out));
}

TEST_F(SignalFrames, FpstateOrFrameOutsideGuestMemoryIsABadFrame) {
  kvm_regs out{};
  for (uint64_t bad : {uint64_t(0x1000), kvm::kKernelVirt, kStack + kStackSize - 100, uint64_t(0x0000'8000'0000'0000)}) {
    ASSERT_TRUE(as_->write(uc_ + kFpstate, bad));
    EXPECT_FALSE(pop(out)) << std::hex << bad;
  }
  std::array<uint32_t, 1024> area{};
  EXPECT_FALSE(pop_signal_frame(*proc_, thread(), kvm::kKernelVirt + 0x4000, out, area, kXcr0));
  EXPECT_FALSE(pop_signal_frame(*proc_, thread(), kStack + kStackSize - 16, out, area, kXcr0));
}

TEST(XsaveArea, Validation) {
  std::array<uint32_t, 1024> a{};
  a[24 / 4] = 0x1f80;
  a[512 / 4] = 0x7;
  EXPECT_TRUE(sanitize_xsave_area(a, 0x7));
  EXPECT_FALSE(sanitize_xsave_area(a, 0x3));  // AVX state where XCR0 has no AVX
  a[24 / 4] = 0x1f80 | (1u << 31);
  EXPECT_FALSE(sanitize_xsave_area(a, 0x7));
}

}  // namespace
}  // namespace kvms::linux

// The KVM layer on its own: hand-assembled ring-3 code, no loader and no syscall table.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/layout.hpp"
#include "kvm/vm.hpp"

using namespace kvms::kvm;

namespace {

constexpr uint64_t kCode = 0x400000;
constexpr uint64_t kData = 0x600000;
constexpr uint64_t kStackTop = 0x800000;

struct Machine {
  std::shared_ptr<GuestMemory> memory = GuestMemory::create(1ull << 30, 16 << 20);
  AddressSpace as{memory};
  std::unique_ptr<Vm> vm;
  std::unique_ptr<Vcpu> vcpu;

  explicit Machine(const std::vector<uint8_t>& code, bool track_dirty = false) {
    install_kernel_area(as);
    EXPECT_EQ(as.map(kCode, kPageSize, kProtRead | kProtExec, "code"), 0);
    EXPECT_EQ(as.map(kData, 16 * kPageSize, kProtRead | kProtWrite, "data"), 0);
    EXPECT_EQ(as.map(kStackTop - 16 * kPageSize, 16 * kPageSize, kProtRead | kProtWrite, "stack"), 0);
    EXPECT_TRUE(as.poke(kCode, code.data(), code.size()));
    vm = std::make_unique<Vm>(memory, track_dirty);
    vcpu = std::make_unique<Vcpu>(*vm, 0);
    vcpu->enter_user_mode(as.cr3(), kCode, kStackTop);
  }
};

// mov eax, imm32
std::vector<uint8_t> mov_eax(uint32_t v) { return {0xb8, uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)}; }
std::vector<uint8_t> operator+(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
const std::vector<uint8_t> kSyscall = {0x0f, 0x05};
const std::vector<uint8_t> kUd2 = {0x0f, 0x0b};

}  // namespace

TEST(Vcpu, SyscallExitsOnceAndReturnsResultInRax) {
  // rax = 39; rbx = 0x1122334455667788 (movabs); syscall; mov rdi, rax; mov eax, 60; syscall
  std::vector<uint8_t> code = mov_eax(39) + std::vector<uint8_t>{0x48, 0xbb, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11} +
                              kSyscall + std::vector<uint8_t>{0x48, 0x89, 0xc7} + mov_eax(60) + kSyscall;
  Machine m(code);
  Exit e = m.vcpu->run();
  ASSERT_EQ(e.kind, Exit::Syscall) << e.detail;
  EXPECT_EQ(m.vcpu->regs().rax, 39u);
  EXPECT_EQ(m.vcpu->exits(), 1u);
  m.vcpu->regs().rax = 4242;
  m.vcpu->regs_changed();
  e = m.vcpu->run();
  ASSERT_EQ(e.kind, Exit::Syscall) << e.detail;
  EXPECT_EQ(m.vcpu->regs().rax, 60u);
  EXPECT_EQ(m.vcpu->regs().rdi, 4242u);
  EXPECT_EQ(m.vcpu->regs().rbx, 0x1122334455667788u);  // preserved across the first syscall
  EXPECT_EQ(m.vcpu->exits(), 2u);
}

TEST(Vcpu, InvalidOpcodeIsReportedWithUserRip) {
  Machine m(kUd2);
  Exit e = m.vcpu->run();
  ASSERT_EQ(e.kind, Exit::Exception) << e.detail;
  EXPECT_EQ(e.vector, 6);
  const auto frame = m.as.exception_frame(m.vcpu->regs().rsp, e.vector);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->rip, kCode);
  EXPECT_TRUE(frame->from_user());
}

TEST(Vcpu, UserCannotWriteKernelArea) {
  // mov rax, kKernelVirt; mov byte [rax], 1
  std::vector<uint8_t> code = {0x48, 0xb8};
  for (int i = 0; i < 8; ++i) code.push_back(uint8_t(kKernelVirt >> (8 * i)));
  code = code + std::vector<uint8_t>{0xc6, 0x00, 0x01};
  Machine m(code);
  Exit e = m.vcpu->run();
  ASSERT_EQ(e.kind, Exit::Exception);
  EXPECT_EQ(e.vector, 14);
  EXPECT_EQ(m.vcpu->sregs().cr2, kKernelVirt);
}

TEST(Vcpu, UserCannotDoPortIo) {
  Machine m({0xe6, 0x10});  // out 0x10, al: what the entry code does, but from ring 3
  Exit e = m.vcpu->run();
  ASSERT_EQ(e.kind, Exit::Exception);
  EXPECT_EQ(e.vector, 13);
}

TEST(Vcpu, DivideErrorAndBreakpoint) {
  {
    Machine m({0x31, 0xc9, 0xf7, 0xf1});  // xor ecx, ecx; div ecx
    Exit e = m.vcpu->run();
    ASSERT_EQ(e.kind, Exit::Exception);
    EXPECT_EQ(e.vector, 0);
  }
  {
    Machine m({0xcc});
    Exit e = m.vcpu->run();
    ASSERT_EQ(e.kind, Exit::Exception);
    EXPECT_EQ(e.vector, 3);
  }
}

TEST(Vcpu, AvxWorks) {
  // vpxor ymm0, ymm0, ymm0; vmovdqu [kData], ymm0 via rax; then syscall
  std::vector<uint8_t> code = {0xc5, 0xfd, 0xef, 0xc0, 0x48, 0xc7, 0xc0, 0x00, 0x00, 0x60, 0x00, 0xc5, 0xfe, 0x7f, 0x00};
  code = code + mov_eax(1) + kSyscall;
  Machine m(code);
  Exit e = m.vcpu->run();
  EXPECT_EQ(e.kind, Exit::Syscall) << "vector " << e.vector << " " << e.detail;
}

TEST(Vcpu, DirtyRingSeesGuestWritesAndForkIsCopyOnWrite) {
  // mov dword [kData + 0x1000], 0xdeadbeef; syscall
  std::vector<uint8_t> code = {0xc7, 0x04, 0x25, 0x00, 0x10, 0x60, 0x00, 0xef, 0xbe, 0xad, 0xde};
  code = code + mov_eax(1) + kSyscall;
  auto template_memory = GuestMemory::create(1ull << 30, 16 << 20);
  AddressSpace tas(template_memory);
  install_kernel_area(tas);
  ASSERT_EQ(tas.map(kCode, kPageSize, kProtRead | kProtExec, "code"), 0);
  ASSERT_EQ(tas.map(kData, 16 * kPageSize, kProtRead | kProtWrite, "data"), 0);
  ASSERT_TRUE(tas.poke(kCode, code.data(), code.size()));
  uint32_t original = 7;
  ASSERT_TRUE(tas.copy_to_user(kData + 0x1000, &original, 4));

  auto worker_memory = GuestMemory::fork_private(template_memory);
  AddressSpace was(tas, worker_memory);
  Vm vm(worker_memory, true);
  Vcpu vcpu(vm, 0);
  vcpu.enter_user_mode(was.cr3(), kCode, kStackTop);
  Exit e = vcpu.run();
  ASSERT_EQ(e.kind, Exit::Syscall) << e.detail;
  uint32_t seen = 0;
  ASSERT_TRUE(was.copy_from_user(&seen, kData + 0x1000, 4));
  EXPECT_EQ(seen, 0xdeadbeefu);
  ASSERT_TRUE(tas.copy_from_user(&seen, kData + 0x1000, 4));
  EXPECT_EQ(seen, 7u);  // the template is untouched
  std::vector<uint64_t> dirty;
  vcpu.harvest_dirty(dirty);
  EXPECT_NE(std::find(dirty.begin(), dirty.end(), (kData + 0x1000) >> 12), dirty.end());
  for (uint64_t page : dirty) worker_memory->restore_page(page << 12);
  ASSERT_TRUE(was.copy_from_user(&seen, kData + 0x1000, 4));
  EXPECT_EQ(seen, 7u);
}

TEST(Vcpu, TimerInterruptsAnInfiniteLoop) {
  Machine m({0xeb, 0xfe});  // jmp $
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  m.vcpu->set_deadline(uint64_t(now.tv_sec) * 1000000000 + now.tv_nsec + 200000000);
  Exit e = m.vcpu->run();
  EXPECT_EQ(e.kind, Exit::Interrupted);
  m.vcpu->set_deadline(0);
}

#pragma once
// Guest-physical and guest-virtual layout shared by the host code and entry.asm.
//
// User memory is identity-mapped: guest-virtual == guest-physical for every user address, so a user
// pointer is also an offset into the host mapping of guest memory and needs no page-table walk.
// The kernel area (GDT, IDT, TSS, entry code, exception stack, page tables) lives in a second slot at a
// high guest-physical address, mapped supervisor-only at kKernelVirt.
#include <cstdint>

namespace kvms::kvm {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kPageMask = kPageSize - 1;
constexpr uint64_t page_down(uint64_t a) { return a & ~kPageMask; }
constexpr uint64_t page_up(uint64_t a) { return (a + kPageMask) & ~kPageMask; }

// Lowest user address the guest may map (like vm.mmap_min_addr).
constexpr uint64_t kUserMin = 0x10000;
// Guest-physical base of the kernel slot; user memory must stay below it. 512 GiB keeps every
// guest-physical address under 2^40, the smallest MAXPHYADDR we meet (QEMU TCG's default).
constexpr uint64_t kKernelPhys = 0x80'0000'0000ull;
constexpr uint64_t kMaxUserSize = kKernelPhys;
constexpr uint64_t kKernelVirt = 0xffff'ff80'0000'0000ull;

// Offsets inside the kernel slot (must match entry.asm).
constexpr uint64_t kGdtOffset = 0x0000;     // GDT + TSS, read-only
constexpr uint64_t kIdtOffset = 0x1000;     // IDT, read-only
constexpr uint64_t kEntryOffset = 0x2000;   // entry.asm, read+execute, 2 pages
constexpr uint64_t kEntryPages = 2;
constexpr uint64_t kStackOffset = 0x4000;   // exception stacks (IST1), one slot per vCPU, read+write
constexpr uint64_t kStackPages = 8;
constexpr uint64_t kTssOffset = 0xc000;     // one TSS per vCPU, read-only, 4 pages
constexpr uint64_t kTssPages = 4;
constexpr uint64_t kPageTableOffset = 0x10000;  // page-table pages are allocated from here up

// Each vCPU (guest thread) needs its own TSS and exception stack: two threads may fault at once, and
// the host builds iretq frames on the stack of the vCPU it resumes. A slot holds one exception frame
// or one iretq frame (at most 6 words), never both at a time.
constexpr int kMaxVcpus = 128;
constexpr uint64_t kStackSlot = kStackPages * kPageSize / kMaxVcpus;  // 256 bytes
constexpr uint64_t kTssSize = 0x68;
constexpr uint64_t stack_slot_top(int vcpu) { return kStackOffset + (uint64_t(vcpu) + 1) * kStackSlot; }
constexpr uint64_t tss_offset(int vcpu) { return kTssOffset + uint64_t(vcpu) * kTssSize; }

// Segment selectors (GDT layout, must match entry.asm). sysret needs user data at STAR+8, code at +16.
constexpr uint16_t kKernelCs = 0x08;
constexpr uint16_t kKernelDs = 0x10;
constexpr uint16_t kUserStarBase = 0x18;
constexpr uint16_t kUserDs = 0x20 | 3;
constexpr uint16_t kUserCs = 0x28 | 3;
constexpr uint16_t kTssSelBase = 0x30;  // + 16 * vCPU id: 16-byte system descriptors
constexpr uint16_t tss_selector(int vcpu) { return uint16_t(kTssSelBase + 16 * vcpu); }
constexpr uint16_t kGdtLimit = kTssSelBase + 16 * kMaxVcpus - 1;

// I/O ports the entry code writes to; each `out` is one VM exit.
constexpr uint16_t kSyscallPort = 0x10;
constexpr uint16_t kExceptionPortBase = 0x20;  // + vector (0..31)

// Offsets of entry points inside entry.asm (checked at start-up against the blob's header).
constexpr uint64_t kEntrySyscall = 0x000;     // MSR_LSTAR
constexpr uint64_t kEntryIret = 0x040;        // iretq from the frame at rsp
constexpr uint64_t kEntryFlushIret = 0x060;   // flush the TLB, then iretq
constexpr uint64_t kEntryExceptions = 0x100;  // 32 stubs of 16 bytes each

}  // namespace kvms::kvm

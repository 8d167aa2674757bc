// The guest's kernel-mode pieces: descriptor tables, TSS, entry code and the exception stack. All are
// supervisor-only, and only the stack is writable, so ring-3 code can neither read nor change them.
#include <sys/mman.h>

#include <cstring>
#include <stdexcept>

#include "kvm/address_space.hpp"
#include "kvm/layout.hpp"
#include "kvm/vm.hpp"

extern "C" const uint8_t kvms_entry_blob[];
extern "C" const uint8_t kvms_entry_blob_end[];

namespace kvms::kvm {
namespace {

// Descriptors with the accessed bit already set, so the CPU never writes to the (read-only) GDT.
constexpr uint64_t kGdt[] = {
    0,
    0x00209b0000000000,  // 0x08 kernel code, 64-bit
    0x00cf93000000ffff,  // 0x10 kernel data
    0x00cffb000000ffff,  // 0x18 user code, 32-bit (unused; sysret needs the slot)
    0x00cff3000000ffff,  // 0x20 user data
    0x0020fb0000000000,  // 0x28 user code, 64-bit
};

struct IdtGate {
  uint16_t offset_low, selector;
  uint8_t ist, type_attr;
  uint16_t offset_mid;
  uint32_t offset_high, reserved;
};

void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

}  // namespace

void install_kernel_area(AddressSpace& as) {
  GuestMemory& mem = as.memory();
  uint8_t* k = mem.kernel_base();
  // The fixed pages and the tables that map them (the PML4 and one table per level below it) are
  // all written now: one call faults them in instead of one fault each (~20 faults, most of a
  // snapshot load's host CPU where faults are dear, as in a VM).
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  (void)madvise(k, kPageTableOffset + 4 * kPageSize, MADV_POPULATE_WRITE);
  const uint64_t entry_size = kvms_entry_blob_end - kvms_entry_blob;
  if (entry_size > kEntryPages * kPageSize) throw std::logic_error("entry code larger than its pages");

  uint8_t* gdt = k + kGdtOffset;
  std::memcpy(gdt, kGdt, sizeof kGdt);
  static_assert(kGdtLimit < kPageSize && kTssPages * kPageSize >= kMaxVcpus * kTssSize);
  for (int v = 0; v < kMaxVcpus; ++v) {
    const uint64_t tss = kKernelVirt + tss_offset(v);
    const uint64_t lo = (kTssSize - 1) | ((tss & 0xffffff) << 16) | (0x8bull << 40) | (((tss >> 24) & 0xff) << 56);
    put64(gdt + tss_selector(v), lo);
    put64(gdt + tss_selector(v) + 8, tss >> 32);
    uint8_t* t = k + tss_offset(v);
    const uint64_t stack_top = kKernelVirt + stack_slot_top(v);
    put64(t + 4, stack_top);     // rsp0
    put64(t + 0x24, stack_top);  // ist1
    uint16_t iomap = kTssSize;   // no I/O bitmap: every port access from ring 3 is #GP
    std::memcpy(t + 0x66, &iomap, 2);
  }

  auto* idt = reinterpret_cast<IdtGate*>(k + kIdtOffset);
  for (int v = 0; v < 32; ++v) {
    uint64_t handler = kKernelVirt + kEntryOffset + kEntryExceptions + 16 * v;
    const bool user_may_raise = v == 3 || v == 4;  // int3 and into from ring 3, as on Linux
    idt[v] = IdtGate{uint16_t(handler), kKernelCs, 1, uint8_t(user_may_raise ? 0xee : 0x8e),
                     uint16_t(handler >> 16), uint32_t(handler >> 32), 0};
  }
  std::memcpy(k + kEntryOffset, kvms_entry_blob, entry_size);

  as.map_kernel_page(kGdtOffset, false, false);
  as.map_kernel_page(kIdtOffset, false, false);
  for (uint64_t i = 0; i < kEntryPages; ++i) as.map_kernel_page(kEntryOffset + i * kPageSize, false, true);
  for (uint64_t i = 0; i < kStackPages; ++i) as.map_kernel_page(kStackOffset + i * kPageSize, true, false);
  for (uint64_t i = 0; i < kTssPages; ++i) as.map_kernel_page(kTssOffset + i * kPageSize, false, false);
}

const char* exception_name(int vector) {
  static const char* const names[32] = {
      "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range exceeded", "invalid opcode",
      "device not available", "double fault", "coprocessor segment overrun", "invalid TSS", "segment not present",
      "stack fault", "general protection fault", "page fault", "reserved 15", "x87 floating-point error",
      "alignment check", "machine check", "SIMD floating-point error", "virtualization exception",
      "control protection fault", "reserved 22", "reserved 23", "reserved 24", "reserved 25", "reserved 26",
      "reserved 27", "hypervisor injection", "VMM communication", "security exception", "reserved 31"};
  return vector >= 0 && vector < 32 ? names[vector] : "unknown exception";
}

bool exception_has_error_code(int vector) {
  return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30;
}

}  // namespace kvms::kvm

/* Does this host's /dev/kvm run the kind of guest kvmserver runs? Exit 0 if so.
 *
 * Some hosts expose a /dev/kvm that runs only guests of its own kind (for example a paravirtual KVM
 * without hardware virtualization), so opening it proves nothing. This runs what kvmserver's guest
 * does: 64-bit long mode, ring-3 code that executes `syscall`, a ring-0 entry that leaves with `out`,
 * returns with `sysretq`, and then reports a second `out` from ring 0. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM 0x200000ul
#define PML4 0x1000ul
#define PDPT 0x2000ul
#define PD 0x3000ul
#define GDT 0x4000ul
#define KCODE 0x5000ul
#define UCODE 0x6000ul

struct msrs { uint32_t nmsrs, pad; struct kvm_msr_entry e[4]; };

static int fail(const char *what) { fprintf(stderr, "kvm-probe: %s\n", what); return 1; }

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return fail("cannot open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return fail("KVM_CREATE_VM failed");
  uint8_t *mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return fail("mmap failed");
  struct kvm_userspace_memory_region region = {0, 0, 0, MEM, (uint64_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return fail("KVM_SET_USER_MEMORY_REGION failed");

  /* Identity map of the first 2 MiB with one large page, user-accessible (ring 3 runs at UCODE). */
  uint64_t *pml4 = (uint64_t *)(mem + PML4), *pdpt = (uint64_t *)(mem + PDPT), *pd = (uint64_t *)(mem + PD);
  pml4[0] = PDPT | 7;
  pdpt[0] = PD | 7;
  pd[0] = 0x87 | 0x60;
  uint64_t *gdt = (uint64_t *)(mem + GDT);
  gdt[1] = 0x00209b0000000000; /* 0x08 kernel code */
  gdt[2] = 0x00cf93000000ffff; /* 0x10 kernel data */
  gdt[3] = 0x00cffb000000ffff; /* 0x18 user code 32 */
  gdt[4] = 0x00cff3000000ffff; /* 0x20 user data */
  gdt[5] = 0x0020fb0000000000; /* 0x28 user code 64 */
  /* ring 0: out 0x10, al; sysretq */
  const uint8_t kcode[] = {0xe6, 0x10, 0x48, 0x0f, 0x07};
  /* ring 3: mov eax, 42; syscall; mov ebx, eax; mov eax, 60; syscall */
  const uint8_t ucode[] = {0xb8, 42, 0, 0, 0, 0x0f, 0x05, 0x89, 0xc3, 0xb8, 60, 0, 0, 0, 0x0f, 0x05};
  memcpy(mem + KCODE, kcode, sizeof kcode);
  memcpy(mem + UCODE, ucode, sizeof ucode);

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return fail("KVM_CREATE_VCPU failed");
  int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) return fail("mmap kvm_run failed");

  struct kvm_sregs s;
  if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0) return fail("KVM_GET_SREGS failed");
  s.cr0 = 0x80050033;
  s.cr3 = PML4;
  s.cr4 = 0x20 | 0x200 | 0x400;
  s.efer = 0xd01;
  struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 0x2b, .type = 11, .present = 1, .dpl = 3, .s = 1, .l = 1, .g = 1};
  struct kvm_segment data = {.base = 0, .limit = 0xffffffff, .selector = 0x23, .type = 3, .present = 1, .dpl = 3, .s = 1, .db = 1, .g = 1};
  s.cs = code;
  s.ss = s.ds = s.es = s.fs = s.gs = data;
  s.gdt.base = GDT;
  s.gdt.limit = 0x2f;
  if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0) return fail("KVM_SET_SREGS failed");
  struct msrs m = {3, 0, {{0xc0000081, 0, (0x18ull << 48) | (0x08ull << 32)}, {0xc0000082, 0, KCODE}, {0xc0000084, 0, 0x47700}}};
  if (ioctl(vcpu, KVM_SET_MSRS, &m) != 3) return fail("KVM_SET_MSRS failed");
  struct kvm_regs r = {0};
  r.rip = UCODE;
  r.rsp = 0x100000;
  r.rflags = 0x2;
  if (ioctl(vcpu, KVM_SET_REGS, &r) < 0) return fail("KVM_SET_REGS failed");

  for (int expected = 42, round = 0; round < 2; ++round) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) return fail("KVM_RUN failed");
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10) return fail("guest syscall did not reach the ring-0 entry");
    if (ioctl(vcpu, KVM_GET_REGS, &r) < 0) return fail("KVM_GET_REGS failed");
    if (r.rax != (uint64_t)expected) return fail("wrong syscall number at the entry");
    if (round == 0) {
      r.rax = 60;
      if (ioctl(vcpu, KVM_SET_REGS, &r) < 0) return fail("KVM_SET_REGS failed");
      expected = 60;
    } else if (r.rbx != 60) {
      return fail("sysret did not return the result to ring 3");
    }
  }
  return 0;
}

#include "kvm/vm.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "kvm/address_space.hpp"
#include "kvm/layout.hpp"
#include "kvm/probe.hpp"

namespace kvms::kvm {
namespace {

constexpr uint32_t kMsrStar = 0xc0000081, kMsrLstar = 0xc0000082, kMsrCstar = 0xc0000083, kMsrSfmask = 0xc0000084;
constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
constexpr uint64_t kEferSce = 1, kEferLme = 1 << 8, kEferLma = 1 << 10, kEferNxe = 1 << 11;
constexpr uint64_t kCr0Pe = 1, kCr0Mp = 2, kCr0Et = 1 << 4, kCr0Ne = 1 << 5, kCr0Wp = 1 << 16, kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1 << 5, kCr4Pge = 1 << 7, kCr4Osfxsr = 1 << 9, kCr4Osxmmexcpt = 1 << 10;
constexpr uint64_t kCr4Osxsave = 1 << 18;
// Flags syscall clears on entry, as Linux sets MSR_SYSCALL_MASK: TF, IF, DF, IOPL, NT, AC.
constexpr uint64_t kSyscallMask = 0x47700;
// AMX tile state does not fit struct kvm_xsave; nothing we run needs it.
constexpr uint64_t kXcr0Amx = (1ull << 17) | (1ull << 18);

// <linux/kvm.h> declares its variable-length structs with flexible-array wrappers that C++ sizes
// differently from C (an empty struct is one byte in C++), which changes both the ioctl numbers and
// the offset of the arrays. These are the C layouts and numbers.
template <typename Entry, size_t N> struct KvmList {
  uint32_t count = 0, padding = 0;
  Entry entries[N];
};
struct XsaveArea {
  uint32_t region[1024];
};
using CpuidList = KvmList<kvm_cpuid_entry2, 256>;
template <size_t N> using MsrList = KvmList<kvm_msr_entry, N>;
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, uint64_t);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, uint64_t);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, uint64_t);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, uint64_t);
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, struct XsaveArea);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, struct XsaveArea);

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

int kick_signal() { return SIGRTMIN + 1; }
// The vCPU this thread runs. It stays set between KVM_RUNs, so a kick that lands while the thread is
// in a host syscall on the guest's behalf still stops the next KVM_RUN.
thread_local kvm_run* running_area = nullptr;

void on_kick(int) {
  if (running_area) running_area->immediate_exit = 1;
}

void install_kick_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    sigaction(kick_signal(), &sa, nullptr);  // no SA_RESTART: KVM_RUN must return EINTR
  });
}

// Every KVM call but KVM_RUN, run again when the kick signal interrupts it: the handler has no
// SA_RESTART (KVM_RUN must return to us), so a call that sleeps, as KVM_CREATE_VM can, would
// otherwise fail with EINTR whenever another guest thread kicks this one.
template <class Arg>
int kvm_call(int fd, unsigned long request, Arg arg) {
  int rc;
  do rc = ::ioctl(fd, request, arg);
  while (rc < 0 && errno == EINTR);
  return rc;
}

template <class Arg>
int counted(Vm* vm, int fd, unsigned long request, Arg arg) {  // vm: null for a vCPU without KVM (tests)
  if (vm) vm->count_kvm_call();
  return kvm_call(fd, request, arg);
}

uint64_t host_xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

kvm_segment segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64) {
  kvm_segment s{};
  s.selector = selector;
  s.limit = 0xffffffff;
  s.type = type;
  s.present = 1;
  s.dpl = dpl;
  s.s = 1;
  s.l = code64;
  s.db = !code64;
  s.g = 1;
  return s;
}

// The segment registers of 64-bit user mode (CPL 3); fs and gs unusable until a base is set.
void set_user_segments(kvm_sregs& s) {
  s.cs = segment(kUserCs, 0xb, 3, true);
  s.ss = s.ds = s.es = segment(kUserDs, 0x3, 3, false);
  s.fs = s.gs = segment(0, 0x3, 3, false);
  s.fs.present = s.gs.present = 0;
  s.fs.unusable = s.gs.unusable = 1;
}

}  // namespace

const std::vector<unsigned long>& Kvm::ioctls_used() {
  static const std::vector<unsigned long> requests = {
      KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, kGetXsave, kSetXsave, KVM_GET_XCRS,
      KVM_SET_XCRS, KVM_RESET_DIRTY_RINGS, kGetMsrs, kSetMsrs, KVM_GET_TSC_KHZ, kSetCpuid2, KVM_CREATE_VCPU,
      KVM_CREATE_VM, KVM_SET_TSS_ADDR, KVM_ENABLE_CAP, KVM_SET_USER_MEMORY_REGION, KVM_GET_API_VERSION,
      KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE, kGetSupportedCpuid,
  };
  return requests;
}

Kvm& Kvm::instance() {
  static Kvm kvm;
  return kvm;
}

Kvm::Kvm() {
  fd_ = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error(std::string("cannot open /dev/kvm: ") + strerror(errno));
  if (kvm_call(fd_, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) throw std::runtime_error("unsupported KVM API version");
  for (const Capability& cap : required_capabilities())  // probe.cpp explains a missing one at start
    if (kvm_call(fd_, KVM_CHECK_EXTENSION, cap.id) <= 0)
      throw std::runtime_error(std::string("KVM lacks a capability kvmserver needs: ") + cap.name);
  vcpu_mmap_size_ = kvm_call(fd_, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (vcpu_mmap_size_ <= 0) fail("KVM_GET_VCPU_MMAP_SIZE");

  auto list = std::make_unique<CpuidList>();
  list->count = 256;
  if (kvm_call(fd_, kGetSupportedCpuid, list.get()) != 0) fail("KVM_GET_SUPPORTED_CPUID");
  cpuid_.assign(list->entries, list->entries + list->count);
  for (auto& e : cpuid_) {
    if (e.function == 0xd && e.index == 0) xcr0_ = ((uint64_t(e.edx) << 32) | e.eax) & host_xcr0() & ~kXcr0Amx;
    if (e.function == 7 && e.index == 0) {
      if (e.ebx & (1u << 0)) cr4_extra_ |= 1u << 16;  // FSGSBASE
      if (e.ebx & (1u << 7)) cr4_extra_ |= 1u << 20;  // SMEP
      if (e.ebx & (1u << 20)) cr4_extra_ |= 1u << 21; // SMAP
      if (e.ecx & (1u << 2)) cr4_extra_ |= 1u << 11;  // UMIP
    }
  }
  int ring = kvm_call(fd_, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
  if (ring >= int(kDirtyRingEntries * sizeof(kvm_dirty_gfn))) dirty_ring_bytes_ = kDirtyRingEntries * sizeof(kvm_dirty_gfn);
}

Vm::Vm(std::shared_ptr<GuestMemory> memory, bool track_dirty) : memory_(std::move(memory)), track_dirty_(track_dirty) {
  Kvm& kvm = Kvm::instance();
  fd_ = counted(this, kvm.fd(), KVM_CREATE_VM, 0);
  if (fd_ < 0) fail("KVM_CREATE_VM");
  fcntl(fd_, F_SETFD, FD_CLOEXEC);
  counted(this, fd_, KVM_SET_TSS_ADDR, 0xfffbd000ul);  // only Intel without unrestricted guest needs it
  if (track_dirty_) {
    if (!kvm.has_dirty_ring()) throw std::runtime_error("KVM has no dirty-page ring (KVM_CAP_DIRTY_LOG_RING)");
    kvm_enable_cap cap{};
    cap.cap = KVM_CAP_DIRTY_LOG_RING;
    cap.args[0] = kvm.dirty_ring_bytes();
    if (counted(this, fd_, KVM_ENABLE_CAP, &cap) != 0) fail("enable KVM dirty ring");
  }
  const uint32_t flags = track_dirty_ ? KVM_MEM_LOG_DIRTY_PAGES : 0;
  kvm_userspace_memory_region user{0, flags, 0, memory_->user_size(), reinterpret_cast<uint64_t>(memory_->user_base())};
  kvm_userspace_memory_region kernel{1, flags, kKernelPhys, memory_->kernel_size(),
                                     reinterpret_cast<uint64_t>(memory_->kernel_base())};
  if (counted(this, fd_, KVM_SET_USER_MEMORY_REGION, &user) != 0) fail("KVM_SET_USER_MEMORY_REGION (user)");
  if (counted(this, fd_, KVM_SET_USER_MEMORY_REGION, &kernel) != 0) fail("KVM_SET_USER_MEMORY_REGION (kernel)");
}

Vm::~Vm() {
  if (fd_ >= 0) close(fd_);
}

Vcpu::Vcpu(Vm& vm, int id) : vm_(&vm), id_(id) {
  if (id < 0 || id >= kMaxVcpus) throw std::runtime_error("too many vCPUs (at most " + std::to_string(kMaxVcpus) + ")");
  fd_ = counted(&vm, vm.fd(), KVM_CREATE_VCPU, id);
  if (fd_ < 0) fail("KVM_CREATE_VCPU");
  fcntl(fd_, F_SETFD, FD_CLOEXEC);
  Kvm& kvm = Kvm::instance();
  void* p = mmap(nullptr, kvm.vcpu_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) fail("mmap kvm_run");
  run_ = static_cast<kvm_run*>(p);
  run_->kvm_valid_regs = KVM_SYNC_X86_REGS;
  if (vm.tracks_dirty()) {
    ring_entries_ = kvm.dirty_ring_bytes() / sizeof(kvm_dirty_gfn);
    void* r = mmap(nullptr, kvm.dirty_ring_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd_,
                   KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
    if (r == MAP_FAILED) fail("mmap dirty ring");
    ring_ = static_cast<kvm_dirty_gfn*>(r);
  }
  load_cpuid();
  load_syscall_msrs();
  if (auto offset = vm.tsc_offset()) set_guest_tsc(__rdtsc() + uint64_t(*offset));
  install_kick_handler();
}

Vcpu::Vcpu(int id) : id_(id) {
  run_ = static_cast<kvm_run*>(std::calloc(1, sizeof(kvm_run)));
  if (!run_) throw std::bad_alloc();
  set_user_segments(sregs_);
  sregs_valid_ = true;  // never fetched again: there is no KVM to fetch from
  run_->s.regs.regs.rflags = 0x202;
  install_kick_handler();
}

std::unique_ptr<Vcpu> Vcpu::without_kvm(int id) { return std::unique_ptr<Vcpu>(new Vcpu(id)); }

void Vcpu::require_kvm(const char* what) const {
  if (!vm_) throw std::logic_error(std::string(what) + " needs a vCPU in KVM (this one has none)");
}

Vcpu::~Vcpu() {
  if (running_area == run_) running_area = nullptr;
  if (timer_) timer_delete(static_cast<timer_t>(timer_));
  if (ring_) munmap(ring_, ring_entries_ * sizeof(kvm_dirty_gfn));
  if (run_ && vm_) munmap(run_, Kvm::instance().vcpu_mmap_size());
  if (run_ && !vm_) std::free(run_);
  if (fd_ >= 0) close(fd_);
}

// The syscall MSRs never change: every vCPU gets them at creation, so a restored state is complete.
void Vcpu::load_syscall_msrs() {
  const kvm_msr_entry entries[] = {
      {kMsrStar, 0, (uint64_t(kUserStarBase) << 48) | (uint64_t(kKernelCs) << 32)},
      {kMsrLstar, 0, kKernelVirt + kEntryOffset + kEntrySyscall},
      {kMsrCstar, 0, kKernelVirt + kEntryOffset + kEntrySyscall},
      {kMsrSfmask, 0, kSyscallMask},
      {kMsrKernelGsBase, 0, 0},
  };
  MsrList<5> msrs;
  msrs.count = 5;
  std::memcpy(msrs.entries, entries, sizeof entries);
  if (counted(vm_, fd_, kSetMsrs, &msrs) != 5) fail("KVM_SET_MSRS");
}

void Vcpu::load_cpuid() {
  const auto& entries = Kvm::instance().guest_cpuid();
  auto c = std::make_unique<CpuidList>();
  c->count = uint32_t(entries.size());
  std::copy(entries.begin(), entries.end(), c->entries);
  for (uint32_t i = 0; i < c->count; ++i) {
    auto& e = c->entries[i];
    if (e.function == 1) e.ebx = (e.ebx & 0x00ffffff) | (uint32_t(id_) << 24);
    if (e.function == 0xd && e.index == 0) {  // advertise only the XCR0 bits we enable
      e.eax &= uint32_t(Kvm::instance().xcr0());
      e.edx &= uint32_t(Kvm::instance().xcr0() >> 32);
    }
  }
  if (counted(vm_, fd_, kSetCpuid2, c.get()) != 0) fail("KVM_SET_CPUID2");
}

namespace {
constexpr uint64_t kUserCr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
constexpr uint64_t kUserCr4 = kCr4Pae | kCr4Pge | kCr4Osfxsr | kCr4Osxmmexcpt | kCr4Osxsave;
constexpr uint64_t kCr4Extras = (1u << 16) | (1u << 20) | (1u << 21) | (1u << 11);  // FSGSBASE SMEP SMAP UMIP
constexpr uint64_t kUserEfer = kEferSce | kEferLme | kEferLma | kEferNxe;

bool ring3_data(const kvm_segment& s) {
  if (s.unusable || !s.present) return true;  // a null selector (fs, gs)
  return s.dpl == 3 && (s.selector == 0 || (s.selector & 3) == 3) && s.s == 1 && !(s.type & 0x8);
}
}  // namespace

std::string user_mode_violation(const kvm_sregs& s) {
  if (s.cs.selector != kUserCs || s.cs.dpl != 3 || !s.cs.l || !s.cs.present || !(s.cs.type & 0x8))
    return "code segment is not 64-bit ring 3";
  if (s.ss.selector != kUserDs || s.ss.dpl != 3) return "stack segment is not ring 3";
  for (const kvm_segment* d : {&s.ds, &s.es, &s.fs, &s.gs})
    if (!ring3_data(*d)) return "data segment is not ring 3";
  if (s.cr0 != kUserCr0) return "CR0 is not kvmserver's";
  if ((s.cr4 & ~kCr4Extras) != kUserCr4) return "CR4 is not kvmserver's";
  if (s.efer != kUserEfer) return "EFER is not kvmserver's";
  if (s.gdt.base != kKernelVirt + kGdtOffset || s.gdt.limit != kGdtLimit) return "GDT is not kvmserver's";
  if (s.idt.base != kKernelVirt + kIdtOffset || s.idt.limit != 32 * 16 - 1) return "IDT is not kvmserver's";
  if (s.tr.type != 0xb || !s.tr.present || s.tr.base < kKernelVirt + kTssOffset ||
      s.tr.base >= kKernelVirt + kTssOffset + kTssPages * kPageSize)
    return "task register is not kvmserver's";
  constexpr uint64_t kCanonicalUserEnd = 1ull << 47;
  if ((s.fs.present && s.fs.base >= kCanonicalUserEnd) || (s.gs.present && s.gs.base >= kCanonicalUserEnd))
    return "fs or gs base outside user memory";
  for (uint64_t word : s.interrupt_bitmap)
    if (word) return "interrupts pending";
  if (s.apic_base != 0 && (s.apic_base & ~0x900ull) != 0xfee00000) return "APIC base is not KVM's default";
  return "";
}

kvm_sregs user_mode_sregs(const kvm_sregs& saved, uint64_t cr3, uint32_t cr4_extra) {
  kvm_sregs s{};
  s.apic_base = saved.apic_base;
  s.cr0 = kUserCr0;
  s.cr3 = cr3;
  s.cr4 = kUserCr4 | (cr4_extra & kCr4Extras);
  s.efer = kUserEfer;
  set_user_segments(s);
  for (auto [from, to] : {std::pair{&saved.fs, &s.fs}, std::pair{&saved.gs, &s.gs}})
    if (from->present && !from->unusable) {
      to->base = from->base;
      to->present = 1;
      to->unusable = 0;
    }
  s.tr.base = kKernelVirt + tss_offset(0);
  s.tr.limit = kTssSize - 1;
  s.tr.selector = tss_selector(0);
  s.tr.type = 0xb;
  s.tr.present = 1;
  s.ldt.unusable = 1;
  s.gdt.base = kKernelVirt + kGdtOffset;
  s.gdt.limit = kGdtLimit;
  s.idt.base = kKernelVirt + kIdtOffset;
  s.idt.limit = 32 * 16 - 1;
  return s;
}

std::optional<UserView> user_view(const VcpuState& state, const AddressSpace& as) {
  UserView v;
  v.regs = state.regs;
  v.sregs = state.sregs;
  if ((state.sregs.cs.selector & 3) == 3) return v;  // in user mode already
  // In the entry code: describe the user state it returns to, with ring-3 segments.
  kvm_sregs user = state.sregs;
  set_user_segments(user);
  user.fs = state.sregs.fs;
  user.gs = state.sregs.gs;
  v.sregs = user;
  const uint64_t entry = kKernelVirt + kEntryOffset;
  const uint64_t rip = state.regs.rip;
  if (rip == entry + kEntrySyscall || rip == entry + kEntrySyscall + 2) {  // at the `out`, or at sysret after it
    v.at_syscall = rip == entry + kEntrySyscall;
    v.regs.rip = state.regs.rcx;
    v.regs.rflags = (state.regs.r11 & kUserRflags) | 0x2;
    return v;
  }
  if (rip == entry + kEntryIret || rip == entry + kEntryFlushIret) {
    auto frame = as.exception_frame(state.regs.rsp, 0);  // {rip, cs, rflags, rsp, ss}: vector 0 has no error code
    if (!frame || !frame->from_user()) return std::nullopt;
    v.regs.rip = frame->rip;
    v.regs.rsp = frame->rsp;
    v.regs.rflags = (frame->rflags & kUserRflags) | 0x2;
    if (rip == entry + kEntryFlushIret) v.regs.rcx = frame->rip;  // what the flush path leaves in rcx
    return v;
  }
  return std::nullopt;
}

VcpuState state_from_user_view(const UserView& view, uint64_t cr3, const std::array<uint32_t, 1024>& xsave, uint64_t xcr0,
                               uint32_t cr4_extra) {
  VcpuState st;
  st.regs = view.regs;
  st.sregs = user_mode_sregs(view.sregs, cr3, cr4_extra);
  if (view.at_syscall) {  // what the syscall instruction did (STAR, LSTAR, SFMASK), before the `out`
    st.regs.rcx = view.regs.rip;
    st.regs.r11 = view.regs.rflags;
    st.regs.rip = kKernelVirt + kEntryOffset + kEntrySyscall;
    st.regs.rflags = (view.regs.rflags & ~kSyscallMask) | 0x2;
    st.sregs.cs = segment(kKernelCs, 0xb, 0, true);
    st.sregs.ss = segment(kKernelDs, 0x3, 0, false);
  }
  st.xsave = xsave;
  st.xcrs.nr_xcrs = 1;
  st.xcrs.xcrs[0].xcr = 0;
  st.xcrs.xcrs[0].value = xcr0;
  st.fs_base = st.sregs.fs.base;
  st.gs_base = st.sregs.gs.base;
  return st;
}

void Vcpu::enter_user_mode(uint64_t cr3, uint64_t rip, uint64_t rsp) {
  require_kvm("enter_user_mode");
  Kvm& kvm = Kvm::instance();
  kvm_sregs s{};
  if (counted(vm_, fd_, KVM_GET_SREGS, &s) != 0) fail("KVM_GET_SREGS");
  s.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  s.cr3 = cr3;
  s.cr4 = kCr4Pae | kCr4Pge | kCr4Osfxsr | kCr4Osxmmexcpt | kCr4Osxsave | kvm.cr4_extra();
  s.efer = kEferSce | kEferLme | kEferLma | kEferNxe;
  set_user_segments(s);
  s.tr = {};
  s.tr.base = kKernelVirt + tss_offset(id_);
  s.tr.limit = kTssSize - 1;
  s.tr.selector = tss_selector(id_);
  s.tr.type = 0xb;
  s.tr.present = 1;
  s.ldt = {};
  s.ldt.unusable = 1;
  s.gdt.base = kKernelVirt + kGdtOffset;
  s.gdt.limit = kGdtLimit;
  s.idt.base = kKernelVirt + kIdtOffset;
  s.idt.limit = 32 * 16 - 1;
  if (counted(vm_, fd_, KVM_SET_SREGS, &s) != 0) fail("KVM_SET_SREGS");
  sregs_ = s;
  sregs_valid_ = true;

  kvm_xcrs xcrs{};
  xcrs.nr_xcrs = 1;
  xcrs.xcrs[0].xcr = 0;
  xcrs.xcrs[0].value = kvm.xcr0();
  if (counted(vm_, fd_, KVM_SET_XCRS, &xcrs) != 0) fail("KVM_SET_XCRS");
  xcr0_loaded_ = kvm.xcr0();


  kvm_regs r{};
  r.rip = rip;
  r.rsp = rsp;
  r.rflags = 0x202;
  if (counted(vm_, fd_, KVM_SET_REGS, &r) != 0) fail("KVM_SET_REGS");
  run_->s.regs.regs = r;
}

kvm_regs& Vcpu::regs() { return run_->s.regs.regs; }
void Vcpu::regs_changed() { run_->kvm_dirty_regs |= KVM_SYNC_X86_REGS; }

kvm_sregs& Vcpu::sregs() {
  if (!sregs_valid_) {
    if (counted(vm_, fd_, KVM_GET_SREGS, &sregs_) != 0) fail("KVM_GET_SREGS");
    sregs_valid_ = true;
  }
  return sregs_;
}
void Vcpu::sregs_changed() { sregs_dirty_ = true; }
uint64_t Vcpu::fs_base() { return sregs().fs.base; }
void Vcpu::set_fs_base(uint64_t base) {
  kvm_sregs& s = sregs();
  s.fs.base = base;
  s.fs.present = 1;
  s.fs.unusable = 0;
  sregs_changed();
}

Exit Vcpu::run() {
  require_kvm("run");
  for (;;) {
    if (sregs_dirty_) {
      if (counted(vm_, fd_, KVM_SET_SREGS, &sregs_) != 0) fail("KVM_SET_SREGS");
      sregs_dirty_ = false;
    }
    running_area = run_;
    thread_ = pthread_self();
    vm_->count_kvm_call();
    int rc = ioctl(fd_, KVM_RUN, 0);
    int err = errno;
    run_->kvm_dirty_regs = 0;
    sregs_valid_ = false;
    if (rc < 0) {
      if (err == EINTR || err == EAGAIN) {
        run_->immediate_exit = 0;
        // KVM_RUN that returns EINTR leaves the sync area stale: refresh it so callers see real registers.
        if (counted(vm_, fd_, KVM_GET_REGS, &run_->s.regs.regs) != 0) fail("KVM_GET_REGS");
        return {Exit::Interrupted};
      }
      if (err == EFAULT) return {Exit::Bus, -1, "memory past the end of a shared file mapping"};
      errno = err;
      fail("KVM_RUN");
    }
    ++exits_;
    switch (run_->exit_reason) {
      case KVM_EXIT_IO:
        if (run_->io.direction == KVM_EXIT_IO_OUT && run_->io.port == kSyscallPort) return {Exit::Syscall};
        if (run_->io.direction == KVM_EXIT_IO_OUT && run_->io.port >= kExceptionPortBase &&
            run_->io.port < kExceptionPortBase + 32)
          return {Exit::Exception, run_->io.port - kExceptionPortBase};
        return {Exit::Fault, -1, "unexpected I/O port access " + std::to_string(run_->io.port)};
      case KVM_EXIT_HLT:
        return {Exit::Halt};
      case KVM_EXIT_SHUTDOWN:
        return {Exit::Shutdown, -1, "triple fault"};
      case KVM_EXIT_DIRTY_RING_FULL:
        harvest_dirty(pending_dirty_);
        continue;
      case KVM_EXIT_MMIO:
        return {Exit::Fault, -1, "access to unbacked guest-physical address 0x" + [](uint64_t a) {
                  char b[32]; snprintf(b, sizeof b, "%llx", (unsigned long long)a); return std::string(b); }(run_->mmio.phys_addr)};
      case KVM_EXIT_FAIL_ENTRY:
        return {Exit::Fault, -1, "VM entry failed (reason " +
                                     std::to_string(run_->fail_entry.hardware_entry_failure_reason) + ")"};
      case KVM_EXIT_INTERNAL_ERROR:
        return {Exit::Fault, -1, "KVM internal error " + std::to_string(run_->internal.suberror)};
      case KVM_EXIT_INTR:
        run_->immediate_exit = 0;
        return {Exit::Interrupted};
      default:
        return {Exit::Fault, -1, "unexpected VM exit " + std::to_string(run_->exit_reason)};
    }
  }
}

void Vcpu::harvest_dirty(std::vector<uint64_t>& pages) {
  if (!pending_dirty_.empty() && &pages != &pending_dirty_) {
    pages.insert(pages.end(), pending_dirty_.begin(), pending_dirty_.end());
    pending_dirty_.clear();
  }
  if (!ring_) return;
  bool any = false;
  for (;; ++ring_next_) {
    kvm_dirty_gfn& e = ring_[ring_next_ % ring_entries_];
    if (!(__atomic_load_n(&e.flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY)) break;
    uint64_t base = e.slot == 0 ? 0 : kKernelPhys >> 12;
    pages.push_back(base + e.offset);
    __atomic_store_n(&e.flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
    any = true;
  }
  if (any && counted(vm_, vm_->fd(), KVM_RESET_DIRTY_RINGS, 0) < 0) fail("KVM_RESET_DIRTY_RINGS");
}

uint64_t Vcpu::guest_tsc() {
  if (!vm_) return __rdtsc();
  MsrList<1> msrs;
  msrs.count = 1;
  msrs.entries[0] = {0x10, 0, 0};  // IA32_TIME_STAMP_COUNTER
  if (counted(vm_, fd_, kGetMsrs, &msrs) != 1) fail("KVM_GET_MSRS(TSC)");
  return msrs.entries[0].data;
}

void Vcpu::set_guest_tsc(uint64_t value) {
  MsrList<1> msrs;
  msrs.count = 1;
  msrs.entries[0] = {0x10, 0, value};  // IA32_TIME_STAMP_COUNTER: KVM keeps the offset to the host's
  if (counted(vm_, fd_, kSetMsrs, &msrs) != 1) fail("KVM_SET_MSRS(TSC)");
}

uint64_t Vcpu::tsc_khz() const {
  require_kvm("tsc_khz");
  int khz = counted(vm_, fd_, KVM_GET_TSC_KHZ, 0);
  if (khz <= 0) fail("KVM_GET_TSC_KHZ");
  return uint64_t(khz);
}

void Vcpu::get_xsave(std::array<uint32_t, 1024>& area) {
  require_kvm("get_xsave");
  if (counted(vm_, fd_, kGetXsave, area.data()) != 0) fail("KVM_GET_XSAVE");
}

void Vcpu::set_xsave(const std::array<uint32_t, 1024>& area) {
  require_kvm("set_xsave");
  if (counted(vm_, fd_, kSetXsave, area.data()) != 0) fail("KVM_SET_XSAVE");
}

VcpuState Vcpu::save() {
  require_kvm("save");
  VcpuState st;
  st.regs = run_->s.regs.regs;
  st.sregs = sregs();
  if (counted(vm_, fd_, kGetXsave, st.xsave.data()) != 0) fail("KVM_GET_XSAVE");
  if (counted(vm_, fd_, KVM_GET_XCRS, &st.xcrs) != 0) fail("KVM_GET_XCRS");
  st.fs_base = st.sregs.fs.base;
  st.gs_base = st.sregs.gs.base;
  return st;
}

void Vcpu::restore(const VcpuState& st) {
  require_kvm("restore");
  run_->s.regs.regs = st.regs;
  regs_changed();
  sregs_ = st.sregs;
  sregs_.tr.base = kKernelVirt + tss_offset(id_);  // the state may come from another vCPU (thread slot)
  sregs_.tr.selector = tss_selector(id_);
  sregs_valid_ = true;
  sregs_dirty_ = true;
  if (counted(vm_, fd_, kSetXsave, st.xsave.data()) != 0) fail("KVM_SET_XSAVE");
  const bool same_xcr0 = st.xcrs.nr_xcrs == 1 && st.xcrs.xcrs[0].xcr == 0 && st.xcrs.xcrs[0].value == xcr0_loaded_;
  if (!same_xcr0) {
    if (counted(vm_, fd_, KVM_SET_XCRS, &st.xcrs) != 0) fail("KVM_SET_XCRS");
    xcr0_loaded_ = st.xcrs.nr_xcrs == 1 && st.xcrs.xcrs[0].xcr == 0 ? st.xcrs.xcrs[0].value : 0;
  }
}

void Vcpu::bind_to_this_thread() {
  running_area = run_;
  thread_ = pthread_self();
}

void Vcpu::kick() {
  run_->immediate_exit = 1;
  if (thread_) pthread_kill(static_cast<pthread_t>(thread_), kick_signal());
}

void Vcpu::set_deadline(uint64_t monotonic_ns) {
  if (!timer_) {
    sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = kick_signal();
    ev._sigev_un._tid = static_cast<pid_t>(syscall(SYS_gettid));
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0) fail("timer_create");
    timer_ = t;
    thread_ = pthread_self();
  }
  itimerspec its{};
  its.it_value.tv_sec = monotonic_ns / 1000000000;
  its.it_value.tv_nsec = monotonic_ns % 1000000000;
  if (timer_settime(static_cast<timer_t>(timer_), TIMER_ABSTIME, &its, nullptr) != 0) fail("timer_settime");
}

}  // namespace kvms::kvm

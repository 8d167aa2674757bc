#pragma once
// A KVM virtual machine over a GuestMemory, and its vCPUs.
//
// Each worker is its own Vm (one VM per host thread, so workers never contend in KVM). The vCPU
// state that a fork or a reset must carry is VcpuState: registers, segment state, the whole XSAVE
// area, XCR0 and the MSRs the guest can change.
#include <atomic>
#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvm/guest_memory.hpp"

namespace kvms::kvm {

class Kvm {
 public:
  static Kvm& instance();  // opens /dev/kvm once; throws std::runtime_error with a one-line reason
  int fd() const { return fd_; }
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  const std::vector<kvm_cpuid_entry2>& guest_cpuid() const { return cpuid_; }
  uint64_t xcr0() const { return xcr0_; }
  uint32_t cr4_extra() const { return cr4_extra_; }  // SMEP/SMAP/FSGSBASE/UMIP where the CPU has them
  bool has_dirty_ring() const { return dirty_ring_bytes_ > 0; }
  uint32_t dirty_ring_bytes() const { return dirty_ring_bytes_; }
  // Every ioctl request kvmserver issues on /dev/kvm, a VM or a vCPU fd, the most frequent first
  // (the host seccomp filter allows exactly these). A new KVM ioctl must be added here, or the
  // filter stops kvmserver.
  static const std::vector<unsigned long>& ioctls_used();

 private:
  Kvm();
  int fd_ = -1;
  int vcpu_mmap_size_ = 0;
  std::vector<kvm_cpuid_entry2> cpuid_;
  uint64_t xcr0_ = 3;
  uint32_t cr4_extra_ = 0;
  uint32_t dirty_ring_bytes_ = 0;
};

struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_xcrs xcrs{};
  std::array<uint32_t, 1024> xsave{};  // struct kvm_xsave's region (4 KiB)
  uint64_t fs_base = 0, gs_base = 0, kernel_gs_base = 0;
};

// Why KVM_RUN returned.
struct Exit {
  // Bus: the guest touched memory the host cannot give it (a page of a shared file mapping past
  // the end of a file truncated meanwhile: KVM_RUN fails with EFAULT), Linux's SIGBUS.
  enum Kind { Syscall, Exception, Interrupted, Halt, Shutdown, Fault, Bus } kind = Fault;
  int vector = -1;           // Exception
  std::string detail;        // Fault/Shutdown: what KVM reported
};

class Vcpu;

class Vm {
 public:
  // track_dirty: enable KVM's dirty-page ring (workers), so a reset knows what the guest wrote.
  Vm(std::shared_ptr<GuestMemory> memory, bool track_dirty);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;
  int fd() const { return fd_; }
  GuestMemory& memory() const { return *memory_; }
  bool tracks_dirty() const { return track_dirty_; }
  // Every vCPU created from now on starts with its TSC at the host's TSC plus `offset`, so that a
  // server's VMs (template, workers, forks) and all their threads read one TSC timeline: the clock
  // page's tsc_base is written from one vCPU and read against rdtsc on any other. Without it a new
  // VM's vCPU starts near 0, below the template's tsc_base, and the vDSO's unsigned delta wraps
  // (times far in the future or negative; Rust's clock_gettime unwrap panics on tv_nsec < 0).
  void set_tsc_offset(int64_t offset) { tsc_offset_ = offset; }
  std::optional<int64_t> tsc_offset() const { return tsc_offset_; }
  // KVM ioctls made on this VM and its vCPUs so far (KVM_RUN included): a counter that means the
  // same on every machine, for the per-request costs (bench/).
  uint64_t kvm_calls() const { return calls_.load(std::memory_order_relaxed); }
  void count_kvm_call() { calls_.fetch_add(1, std::memory_order_relaxed); }

 private:
  int fd_ = -1;
  std::atomic<uint64_t> calls_{0};
  std::shared_ptr<GuestMemory> memory_;
  bool track_dirty_;
  std::optional<int64_t> tsc_offset_;
};

class Vcpu {
 public:
  Vcpu(Vm& vm, int id);
  // A vCPU with no KVM behind it, for tests and the in-process syscall fuzzer: a register file
  // (regs, sregs, fs/gs base) in plain memory, set up for user mode, that the syscall handlers can
  // read and write, and kicks and deadlines that interrupt the host thread that bound it, as for a
  // real vCPU. Everything that needs KVM (run, XSAVE, save/restore, the TSC rate) throws
  // std::logic_error; the guest TSC is the host's.
  static std::unique_ptr<Vcpu> without_kvm(int id);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  // Puts the vCPU in 64-bit long mode at CPL 3: rip/rsp as given, paging from cr3.
  void enter_user_mode(uint64_t cr3, uint64_t rip, uint64_t rsp);
  Exit run();

  // General registers, kept in kvm_run's sync area: no ioctl to read or write them.
  kvm_regs& regs();
  void regs_changed();
  kvm_sregs& sregs();  // fetched on demand (one ioctl), written back before the next run
  void sregs_changed();
  uint64_t fs_base();
  void set_fs_base(uint64_t base);

  // The XSAVE area (FPU/SSE/AVX state) alone, standard format, 4 KiB (signal frames).
  void get_xsave(std::array<uint32_t, 1024>& area);
  void set_xsave(const std::array<uint32_t, 1024>& area);
  VcpuState save();
  void restore(const VcpuState& state);

  // Makes a running or about-to-run KVM_RUN return Exit::Interrupted (async-signal-safe), and
  // interrupts a blocking host call of the thread that drives this vCPU.
  void kick();
  // The calling host thread drives this vCPU from now on (kicks go to it).
  void bind_to_this_thread();
  // Interrupts KVM_RUN at an absolute CLOCK_MONOTONIC time (0 = never).
  void set_deadline(uint64_t monotonic_ns);
  int id() const { return id_; }
  kvm_run* run_area() const { return run_; }

  // Guest pages the guest wrote since the last harvest (dirty ring); appended as page numbers.
  void harvest_dirty(std::vector<uint64_t>& pages);

  uint64_t exits() const { return exits_; }
  uint64_t guest_tsc();       // IA32_TSC as the guest reads it
  void set_guest_tsc(uint64_t value);
  uint64_t tsc_khz() const;   // the guest TSC's frequency

 private:
  explicit Vcpu(int id);  // without_kvm
  void load_cpuid();
  void load_syscall_msrs();
  void require_kvm(const char* what) const;
  Vm* vm_ = nullptr;  // null: no KVM (without_kvm)
  int id_;
  int fd_ = -1;
  kvm_run* run_ = nullptr;
  kvm_dirty_gfn* ring_ = nullptr;
  uint32_t ring_entries_ = 0, ring_next_ = 0;
  bool sregs_valid_ = false, sregs_dirty_ = false;
  // XCR0 as last given to KVM. Only the host changes it: xsetbv needs ring 0, where only
  // kvmserver's entry code runs, and that never executes it. restore() skips KVM_SET_XCRS when
  // the state to restore has this value (every reset, normally: one KVM call less per thread).
  uint64_t xcr0_loaded_ = 0;
  kvm_sregs sregs_{};
  void* timer_ = nullptr;
  unsigned long thread_ = 0;  // pthread_t of the thread that runs this vCPU
  std::vector<uint64_t> pending_dirty_;  // harvested when the ring filled up mid-run
  uint64_t exits_ = 0;
};

// Why `s` is not the state of a thread in 64-bit user mode as kvmserver sets one up (ring-3
// segments, long mode with paging, kvmserver's descriptor tables and control registers); empty
// when it is. Needs no KVM (a snapshot file's threads are checked before anything is created).
std::string user_mode_violation(const kvm_sregs& s);
// The sregs of a thread loaded from a snapshot: kvmserver's own user-mode setup (this host's CR4
// features: Kvm::cr4_extra(), page tables at cr3), keeping only what user code can change of
// `saved` (the fs and gs bases) and its APIC base. Nothing privileged is ever taken from a file.
kvm_sregs user_mode_sregs(const kvm_sregs& saved, uint64_t cr3, uint32_t cr4_extra);
// The rflags bits user code can hold (and bit 1, always set); a snapshot's threads have no other.
inline constexpr uint64_t kUserRflags = 0x1 | 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 |
                                        0x10000 | 0x40000 | 0x200000;

// A parked thread's state as user mode sees it (a snapshot keeps threads this way). A thread parked
// in kvmserver's entry code is described by the user state it returns to: standing at a syscall's
// `out` (the syscall still to be handled: at_syscall, with rip the user address after the syscall
// instruction and rflags the user's, as rcx and r11 hold them), before the sysret of a handled
// one, or before an iretq the host set up (its frame is on the vCPU's exception stack in `as`).
struct UserView {
  kvm_regs regs{};
  kvm_sregs sregs{};  // user-mode segments; only the fs/gs bases and the APIC base matter
  bool at_syscall = false;
};
class AddressSpace;
// nullopt for any other state (an exception stub: kvmserver handles those before it parks a thread).
std::optional<UserView> user_view(const VcpuState& state, const AddressSpace& as);
// The inverse, for loading: registers and sregs of the thread in user mode, or (at_syscall) just
// entered through `syscall` and standing at the entry code's `out`, as a template's waiting
// thread does; the sregs are user_mode_sregs() (privileged state is never taken from a file).
VcpuState state_from_user_view(const UserView& view, uint64_t cr3, const std::array<uint32_t, 1024>& xsave, uint64_t xcr0,
                               uint32_t cr4_extra);

// Writes the kernel area (GDT, TSS, IDT, entry code, exception stack) into a fresh guest memory and
// maps it supervisor-only into `as`'s page tables.
class AddressSpace;
void install_kernel_area(AddressSpace& as);

// "page fault", "general protection", ... for an exception vector.
const char* exception_name(int vector);

}  // namespace kvms::kvm

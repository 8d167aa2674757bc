#include "kvm/probe.hpp"

#include <cpuid.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/kvm.h>
#include <pwd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/layout.hpp"
#include "kvm/vm.hpp"

namespace kvms::kvm {
namespace {

// The probe guest's one page of ring-3 code: mov eax, kProbeMagic; syscall; ud2.
constexpr uint32_t kProbeMagic = 0x6b766d73;  // "kvms"
constexpr uint8_t kProbeCode[] = {0xb8, 0x73, 0x6d, 0x76, 0x6b, 0x0f, 0x05, 0x0f, 0x0b};
constexpr uint64_t kProbeSyscallEnd = 7;  // offset after `syscall`: where rcx must point
constexpr uint64_t kProbeUserSize = 2ull << 20;
constexpr uint64_t kProbeKernelSize = 1ull << 20;  // the fixed kernel pages and a few page tables
constexpr uint64_t kProbeTimeoutNs = 10'000'000'000;  // ring-0 code emulated one instruction at a time is slow, not stuck
constexpr const char* kRemedyHardware =
    "use a machine with hardware virtualization (vmx/svm) or nested virtualization enabled";

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

bool cpu_has_virtualization() {
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 5))) return true;               // VMX
  return __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & (1u << 2));                 // SVM
}

std::string user_name(uid_t uid) {
  if (const passwd* pw = getpwuid(uid)) return pw->pw_name;
  return std::to_string(uid);
}

std::string group_name(gid_t gid) {
  if (const group* gr = getgrgid(gid)) return gr->gr_name;
  return std::to_string(gid);
}

// One ring-3 `syscall` in a guest made of kvmserver's own kernel area and entry code: it must leave
// the VM through the entry stub's `out` (ring 0; from ring 3 the `out` itself would fault).
void run_probe(HostFacts& f) {
  const uint64_t start = monotonic_ns();
  try {
    auto memory = GuestMemory::create(kProbeUserSize, kProbeKernelSize);
    AddressSpace as(memory);
    install_kernel_area(as);
    if (as.map(kUserMin, kPageSize, kProtRead | kProtExec, "probe") != 0 || !as.poke(kUserMin, kProbeCode, sizeof kProbeCode))
      throw std::runtime_error("cannot map the probe's code");
    Vm vm(memory, false);
    f.cost.vms = 1;
    Vcpu vcpu(vm, 0);
    f.cost.vcpus = 1;
    f.tsc_khz = vcpu.tsc_khz();
    vcpu.bind_to_this_thread();
    vcpu.enter_user_mode(as.cr3(), kUserMin, kUserMin + kPageSize);
    vcpu.set_deadline(monotonic_ns() + kProbeTimeoutNs);
    const Exit exit = vcpu.run();
    vcpu.set_deadline(0);
    f.cost.runs = 1;
    f.cost.exits = vcpu.exits();
    f.cost.pages = memory->resident_pages();
    const kvm_regs& r = vcpu.regs();
    const uint64_t entry = kKernelVirt + kEntryOffset + kEntrySyscall;
    switch (exit.kind) {
      case Exit::Syscall:
        if (r.rax == kProbeMagic && r.rcx == kUserMin + kProbeSyscallEnd) {
          f.probe = HostFacts::Probe::ReachedRing0;
        } else {
          f.probe = HostFacts::Probe::Failed;
          f.probe_detail = "the entry saw rax " + hex(r.rax) + " and rcx " + hex(r.rcx);
        }
        break;
      case Exit::Exception: {
        const auto frame = as.exception_frame(r.rsp, exit.vector);
        std::string where = frame ? " at rip " + hex(frame->rip) + (frame->from_user() ? " in ring 3" : " in ring 0") : "";
        f.probe_detail = exception_name(exit.vector) + where;
        f.probe = frame && frame->from_user() && frame->rip == entry ? HostFacts::Probe::StayedInRing3
                                                                      : HostFacts::Probe::Failed;
        break;
      }
      case Exit::Interrupted:
        f.probe = HostFacts::Probe::Failed;
        f.probe_detail = "the probe guest did not finish within " + std::to_string(kProbeTimeoutNs / 1000000000) + " s";
        break;
      default:
        f.probe = HostFacts::Probe::Failed;
        f.probe_detail = exit.detail.empty() ? "the probe guest halted" : exit.detail;
        break;
    }
  } catch (const std::exception& e) {
    f.probe = HostFacts::Probe::Failed;
    f.probe_detail = e.what();
  }
  f.cost.ns = monotonic_ns() - start;
}

}  // namespace

const std::vector<Capability>& required_capabilities() {
  static const std::vector<Capability> caps = {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest memory"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "the guest's CPUID"},
      {KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS", "registers without an ioctl per syscall"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping a running vCPU"},
      {KVM_CAP_XSAVE, "KVM_CAP_XSAVE", "FPU and vector registers"},
      {KVM_CAP_XCRS, "KVM_CAP_XCRS", "XCR0"},
      {KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ", "the vDSO's clock"},
  };
  return caps;
}

const Capability& dirty_ring_capability() {
  static const Capability cap{KVM_CAP_DIRTY_LOG_RING, "KVM_CAP_DIRTY_LOG_RING", "resetting server workers"};
  return cap;
}

std::string verdict(const HostFacts& f) {
  const std::string& dev = f.device;
  if (f.open_errno == ENOENT || !f.exists) {
    if (!f.hardware_virtualization)
      return dev + " does not exist and this CPU shows no hardware virtualization (no vmx/svm flag); " + kRemedyHardware;
    return dev + " does not exist; load the KVM module for this CPU (sudo modprobe kvm_intel, or kvm_amd), "
                 "or enable virtualization in the firmware settings";
  }
  if (f.open_errno == EACCES || f.open_errno == EPERM) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(f.mode & 07777));
    if ((f.mode & 0060) == 0060 && !f.group.empty() && f.group != "root")
      return "cannot open " + dev + ": permission denied; add yourself to the " + f.group +
             " group (sudo usermod -aG " + f.group + " $USER, then log in again)";
    return "cannot open " + dev + ": permission denied (mode " + mode + ", owner " + f.owner + ":" + f.group +
           "); ask an administrator for read-write access to it (the usual way: group kvm, mode 0660)";
  }
  if (f.open_errno != 0)
    return "cannot open " + dev + ": " + std::strerror(f.open_errno) +
           "; check that KVM works on this machine (sudo modprobe kvm_intel, or kvm_amd)";
  if (!f.char_device || f.api_version < 0) {
    const std::string what = !f.char_device ? "not a character device"
                                            : std::string("KVM_GET_API_VERSION: ") + std::strerror(f.api_errno);
    return dev + " is not a KVM device (" + what + "); the KVM device is character device 10:232, made by the "
                 "kvm module: check what is mounted or created at " + dev;
  }
  if (f.api_version != KVM_API_VERSION)
    return dev + " speaks KVM API version " + std::to_string(f.api_version) + ", kvmserver needs " +
           std::to_string(KVM_API_VERSION) + "; use a Linux kernel with the standard KVM";
  if (!f.missing_capabilities.empty()) {
    std::string list;
    for (const auto& c : f.missing_capabilities) list += (list.empty() ? "" : ", ") + c;
    return "KVM on this machine lacks what kvmserver needs: " + list + "; use Linux 5.11 or newer on a machine "
           "with hardware virtualization (vmx/svm)";
  }
  using Probe = HostFacts::Probe;
  if (f.probe != Probe::StayedInRing3 && f.probe != Probe::Failed) return "";
  const std::string what = f.probe == Probe::StayedInRing3
                               ? "a ring-3 syscall does not reach ring 0: " + f.probe_detail
                               : "the start-up probe guest failed: " + f.probe_detail;
  if (f.pvm_module) return dev + " is provided by kvm_pvm, which cannot run kvmserver's guest (" + what + "); " + kRemedyHardware;
  if (!f.hardware_virtualization)
    return "this machine's KVM works without hardware virtualization (no vmx/svm CPU flag) and cannot run kvmserver's "
           "guest (" + what + "); " + kRemedyHardware;
  return "KVM on this machine cannot run kvmserver's guest (" + what + "); " + kRemedyHardware;
}

HostFacts examine_host(bool needs_dirty_ring, const std::string& device) {
  HostFacts f;
  f.device = device;
  f.hardware_virtualization = cpu_has_virtualization();
  f.pvm_module = ::access("/sys/module/kvm_pvm", F_OK) == 0;
  struct stat st{};
  f.exists = ::stat(device.c_str(), &st) == 0;
  if (f.exists) {
    f.char_device = S_ISCHR(st.st_mode);
    f.mode = st.st_mode;
    f.owner = user_name(st.st_uid);
    f.group = group_name(st.st_gid);
  }
  const int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    f.open_errno = errno;
    return f;
  }
  f.api_version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  if (f.api_version < 0) f.api_errno = errno;
  if (f.char_device && f.api_version == KVM_API_VERSION) {
    for (const Capability& c : required_capabilities())
      if (::ioctl(fd, KVM_CHECK_EXTENSION, c.id) <= 0) f.missing_capabilities.push_back(std::string(c.name) + " (" + c.use + ")");
    if (needs_dirty_ring) {
      const Capability& c = dirty_ring_capability();
      if (::ioctl(fd, KVM_CHECK_EXTENSION, c.id) < int(kDirtyRingEntries * sizeof(kvm_dirty_gfn)))
        f.missing_capabilities.push_back(std::string(c.name) + " (" + c.use + ")");
    }
  }
  ::close(fd);
  if (f.char_device && f.api_version == KVM_API_VERSION && f.missing_capabilities.empty()) run_probe(f);
  return f;
}

}  // namespace kvms::kvm

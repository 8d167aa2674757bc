#pragma once
// Whether this machine can run kvmserver's guests at all, found out once at start, before the
// program is loaded: a machine that cannot gets one line with the cause and the remedy (exit 125)
// instead of a failure later (or every program dying of "page fault at rip 0xffffff8000002000").
//
// In order, stopping at the first failure: /dev/kvm exists and opens read-write; it is a KVM device
// of the API version kvmserver speaks, with the capabilities kvmserver uses; and a probe guest, built
// from kvmserver's own kernel area and entry code, makes one ring-3 `syscall` that must arrive in the
// ring-0 entry stub. The kvm_pvm module (a /dev/kvm without hardware virtualization) fails that last
// step: its `syscall` stays in ring 3 and faults at the entry address. The module's presence
// (/sys/module/kvm_pvm) and the CPU's vmx/svm flag only name the cause; the probe decides, so a KVM
// that does run the guest is never refused.
//
// examine_host() gathers the facts; verdict() turns them into the line. verdict() is a pure
// function, so every outcome can be tested on a machine that shows none of them.
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvms::kvm {

// A KVM capability kvmserver relies on, and what for.
struct Capability {
  int id;
  const char* name;
  const char* use;
};
// What every run needs.
const std::vector<Capability>& required_capabilities();
// What server workers need in addition: the dirty-page ring (at least kDirtyRingBytes).
const Capability& dirty_ring_capability();
constexpr uint32_t kDirtyRingEntries = 16384;

struct HostFacts {
  std::string device = "/dev/kvm";
  int open_errno = 0;        // 0: opened read-write
  bool exists = true;        // stat() found something there
  bool char_device = true;
  mode_t mode = 0;           // permission bits, for an open refused
  std::string owner, group;  // names (or numbers) of the device's owner and group
  int api_version = 12;      // KVM_GET_API_VERSION; -1 when the ioctl failed (api_errno)
  int api_errno = 0;
  std::vector<std::string> missing_capabilities;  // "KVM_CAP_XSAVE (FPU and vector registers)"
  bool pvm_module = false;               // /sys/module/kvm_pvm exists
  bool hardware_virtualization = true;   // the vmx or svm CPUID flag
  enum class Probe { NotRun, ReachedRing0, StayedInRing3, Failed } probe = Probe::NotRun;
  std::string probe_detail;  // what the probe guest did instead, for StayedInRing3 and Failed
  uint64_t tsc_khz = 0;      // the probe vCPU's TSC rate (KVM_GET_TSC_KHZ): what a guest's TSC runs at
  struct Cost {
    int vms = 0, vcpus = 0, runs = 0;
    uint64_t exits = 0, pages = 0, ns = 0;  // VM exits, guest pages written, wall-clock time
  } cost;
};

// "" when kvmserver can run here; otherwise one line, cause then remedy, without a prefix.
std::string verdict(const HostFacts& facts);

// Looks at `device` (normally /dev/kvm; another path in tests) and, when it passes, runs the probe
// guest through /dev/kvm. needs_dirty_ring: the run will serve (workers track dirty pages).
HostFacts examine_host(bool needs_dirty_ring, const std::string& device = "/dev/kvm");

}  // namespace kvms::kvm

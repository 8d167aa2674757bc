// Process and thread lifetime. The guest is one thread for now, so exit and exit_group both end it.
#include <asm/prctl.h>

#include <cerrno>

#include "kvm/vm.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kRobustListHeadSize = 24;
constexpr uint64_t kRseqMinSize = 32;
constexpr uint32_t kRseqFlagUnregister = 1;

bool canonical_user(uint64_t addr) { return addr < (1ull << 47); }

}  // namespace

KVMS_SYSCALL(exit) {
  p.exit_status = int(a.a[0] & 0xff);
  return 0;
}

KVMS_SYSCALL(exit_group) {
  p.exit_status = int(a.a[0] & 0xff);
  return 0;
}

KVMS_SYSCALL(arch_prctl) {
  switch (a.a[0]) {
    case ARCH_SET_FS:
      if (!canonical_user(a.a[1])) return -EPERM;
      p.vcpu().set_fs_base(a.a[1]);
      return 0;
    case ARCH_GET_FS:
      return p.mm().write(a.a[1], p.vcpu().fs_base()) ? 0 : -EFAULT;
    case ARCH_SET_GS: {
      if (!canonical_user(a.a[1])) return -EPERM;
      auto& s = p.vcpu().sregs();
      s.gs.base = a.a[1];
      s.gs.present = 1;
      s.gs.unusable = 0;
      p.vcpu().sregs_changed();
      return 0;
    }
    case ARCH_GET_GS:
      return p.mm().write(a.a[1], p.vcpu().sregs().gs.base) ? 0 : -EFAULT;
    case ARCH_GET_CPUID:
      return 1;
    case ARCH_SET_CPUID:
      return -ENODEV;  // no CPUID faulting
    default:
      return -EINVAL;
  }
}

KVMS_SYSCALL(set_tid_address) {
  p.clear_child_tid = a.a[0];
  return p.tid;
}

KVMS_SYSCALL(set_robust_list) {
  if (a.a[1] != kRobustListHeadSize) return -EINVAL;
  p.robust_list = a.a[0];
  p.robust_list_len = a.a[1];
  return 0;
}

KVMS_SYSCALL(get_robust_list) {
  if (a.a[0] != 0 && int64_t(a.a[0]) != p.tid) return -ESRCH;
  if (!p.mm().write(a.a[1], p.robust_list) || !p.mm().write(a.a[2], p.robust_list_len)) return -EFAULT;
  return 0;
}

// One CPU that never changes and no preemption of guest code by us: registering only needs the cpu
// fields filled in; no critical section can ever need a restart.
KVMS_SYSCALL(rseq) {
  const uint64_t area = a.a[0], len = a.a[1];
  const uint32_t flags = uint32_t(a.a[2]);
  if (flags & kRseqFlagUnregister) {
    if (area != p.rseq) return -EINVAL;
    p.rseq = p.rseq_len = 0;
    return 0;
  }
  if (flags) return -EINVAL;
  if (p.rseq) return area == p.rseq ? -EBUSY : -EINVAL;
  if (len < kRseqMinSize || (area & 31)) return -EINVAL;
  const uint32_t cpu_fields[2] = {0, 0};  // cpu_id_start, cpu_id
  if (!p.mm().copy_to_user(area, cpu_fields, sizeof cpu_fields)) return -EFAULT;
  p.rseq = area;
  p.rseq_len = len;
  return 0;
}

}  // namespace kvms::linux

// Identity, limits, system information and randomness. The guest sees a fixed, unprivileged identity
// and one CPU; nothing about the host leaks except what the program could learn from time.
#include <sched.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <linux/prctl.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include "linux/process_table.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kMaxGetrandom = 33554431;  // Linux's per-call cap (INT_MAX >> 6)

bool is_self(Process& p, int64_t pid) { return pid == 0 || p.is_self(pid); }

int64_t put_ids(Process& p, const SyscallArgs& a, uint32_t id) {
  for (int i = 0; i < 3; ++i)
    if (!p.mm().write<uint32_t>(a.a[i], id)) return -EFAULT;
  return 0;
}

}  // namespace

KVMS_SYSCALL(getpid) { return p.pid; }
KVMS_SYSCALL(gettid) { return p.thread().tid; }
KVMS_SYSCALL(getppid) { return p.ppid; }
KVMS_SYSCALL(getuid) { return p.uid; }
KVMS_SYSCALL(geteuid) { return p.uid; }
KVMS_SYSCALL(getgid) { return p.gid; }
KVMS_SYSCALL(getegid) { return p.gid; }
// Process groups and sessions live in the process table, shared by the guest's processes.
int64_t pid_arg(Process& p, int64_t pid) { return pid == 0 || p.is_self(pid) ? p.pid : pid; }
KVMS_SYSCALL(getpgrp) { return p.table ? p.table->pgid_of(p.pid) : p.pid; }
KVMS_SYSCALL(getpgid) {
  const int64_t pid = pid_arg(p, int32_t(a.a[0]));  // pid_t: the register's low 32 bits, as Linux reads it
  if (pid < 0) return -ESRCH;
  return p.table ? p.table->pgid_of(int(pid)) : (pid == p.pid ? p.pid : -ESRCH);
}
KVMS_SYSCALL(getsid) {
  const int64_t pid = pid_arg(p, int32_t(a.a[0]));
  if (pid < 0) return -ESRCH;
  return p.table ? p.table->sid_of(int(pid)) : (pid == p.pid ? p.pid : -ESRCH);
}
KVMS_SYSCALL(setsid) { return p.table ? p.table->set_sid(p.pid) : -EPERM; }
KVMS_SYSCALL(setpgid) {
  const int64_t pid = int32_t(a.a[0]), pgid = int32_t(a.a[1]);  // pid_t: the low 32 bits
  if (pid < 0 || pgid < 0) return -EINVAL;
  if (!p.table) return pid == 0 || pid == p.pid ? ((pgid == 0 || pgid == p.pid) ? 0 : -EPERM) : -ESRCH;
  return p.table->set_pgid(p.pid, p.is_self(pid) ? p.pid : int(pid), int(pgid));
}
KVMS_SYSCALL(getgroups) { return int(a.a[0]) < 0 ? -EINVAL : 0; }
KVMS_SYSCALL(getresuid) { return put_ids(p, a, p.uid); }
KVMS_SYSCALL(getresgid) { return put_ids(p, a, p.gid); }

KVMS_SYSCALL(uname) {
  struct utsname u{};
  std::strncpy(u.sysname, "Linux", sizeof u.sysname - 1);
  std::strncpy(u.nodename, p.config().hostname.c_str(), sizeof u.nodename - 1);
  std::strncpy(u.release, "6.1.0-kvmserver", sizeof u.release - 1);
  std::strncpy(u.version, "#1 SMP PREEMPT_DYNAMIC kvmserver", sizeof u.version - 1);
  std::strncpy(u.machine, "x86_64", sizeof u.machine - 1);
  std::strncpy(u.domainname, "(none)", sizeof u.domainname - 1);
  return p.mm().write(a.a[0], u) ? 0 : -EFAULT;
}

// The names uname shows are kvmserver's (--hostname): changing them needs CAP_SYS_ADMIN, which the
// guest never has; Linux checks that before the arguments.
KVMS_SYSCALL(sethostname) { return -EPERM; }
KVMS_SYSCALL(setdomainname) { return -EPERM; }

KVMS_SYSCALL(sysinfo) {
  struct sysinfo info{};
  info.uptime = guest_now_ns(p, CLOCK_BOOTTIME) / 1000000000;
  info.totalram = p.memory_limit();
  const uint64_t used = p.tree_memory_used();
  info.freeram = used < info.totalram ? info.totalram - used : 0;
  info.procs = uint16_t(std::min<uint64_t>(p.account().used(ResourceAccount::kProcesses), 0xffff));
  info.mem_unit = 1;
  return p.mm().write(a.a[0], info) ? 0 : -EFAULT;
}

KVMS_SYSCALL(getrandom) {
  const uint64_t buf = a.a[0], flags = a.a[2];
  const uint64_t len = std::min<uint64_t>(a.a[1], kMaxGetrandom);
  if (flags & ~uint64_t(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE)) return -EINVAL;
  if ((flags & GRND_RANDOM) && (flags & GRND_INSECURE)) return -EINVAL;
  // Straight into the guest's buffer (identity-mapped guest memory is ours): no host copy of up to
  // 32 MiB per call.
  const auto out = p.mm().writable(buf, len);
  if (!out) return -EFAULT;
  for (uint64_t done = 0; done < len;) {
    ssize_t n = ::getrandom(out->data() + done, len - done, 0);
    if (n < 0 && errno != EINTR) return -errno;
    if (n > 0) done += uint64_t(n);
  }
  p.mm().note_write(*out, len);
  return int64_t(len);
}

KVMS_SYSCALL(prlimit64) {
  const int64_t pid = int64_t(a.a[0]);
  const uint64_t resource = a.a[1], new_limit = a.a[2], old_limit = a.a[3];
  if (!is_self(p, pid)) return -ESRCH;
  if (resource >= p.rlimits.size()) return -EINVAL;
  auto& current = p.rlimits[resource];
  std::pair<uint64_t, uint64_t> next = current;
  if (new_limit) {
    struct rlimit64 r{};
    if (!p.mm().read(new_limit, r)) return -EFAULT;
    if (r.rlim_cur > r.rlim_max) return -EINVAL;
    if (r.rlim_max > current.second) return -EPERM;  // unprivileged: cannot raise the hard limit
    if (resource == RLIMIT_NOFILE && r.rlim_max > uint64_t(FdTable::kMaxLimit)) return -EPERM;
    next = {r.rlim_cur, r.rlim_max};
  }
  if (old_limit) {
    struct rlimit64 r{current.first, current.second};
    if (!p.mm().write(old_limit, r)) return -EFAULT;
  }
  current = next;
  if (resource == RLIMIT_NOFILE) p.fds.set_limit(int(std::min<uint64_t>(current.first, FdTable::kMaxLimit)));
  return 0;
}

KVMS_SYSCALL(getrlimit) {
  SyscallArgs b{SYS_prlimit64, {0, a.a[0], 0, a.a[1], 0, 0}};
  return sys_prlimit64(p, b);
}

KVMS_SYSCALL(setrlimit) {
  SyscallArgs b{SYS_prlimit64, {0, a.a[0], a.a[1], 0, 0, 0}};
  return sys_prlimit64(p, b);
}

KVMS_SYSCALL(getrusage) {
  const int who = int(a.a[0]);
  if (who != RUSAGE_SELF && who != RUSAGE_CHILDREN && who != RUSAGE_THREAD) return -EINVAL;
  struct rusage usage{};
  if (who != RUSAGE_CHILDREN) {
    timespec cpu{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);  // the vCPU thread: guest time plus our handling
    usage.ru_utime.tv_sec = cpu.tv_sec;
    usage.ru_utime.tv_usec = cpu.tv_nsec / 1000;
    usage.ru_maxrss = long(p.mm().memory().resident_pages() * 4);
  } else if (p.table) {  // the children that ended and were waited for
    const uint64_t ns = p.table->children_cpu_ns(p.pid);
    usage.ru_utime.tv_sec = time_t(ns / 1000000000);
    usage.ru_utime.tv_usec = suseconds_t(ns % 1000000000 / 1000);
  }
  return p.mm().write(a.a[1], usage) ? 0 : -EFAULT;
}

KVMS_SYSCALL(sched_getaffinity) {
  const uint64_t len = a.a[1];
  if (!is_self(p, int64_t(a.a[0])) && int64_t(a.a[0]) != p.thread().tid) return -ESRCH;
  if (len < sizeof(uint64_t) || (len & (sizeof(uint64_t) - 1))) return -EINVAL;
  const uint64_t one_cpu = 1;
  return p.mm().write(a.a[2], one_cpu) ? int64_t(sizeof one_cpu) : -EFAULT;
}

KVMS_SYSCALL(sched_setaffinity) {
  uint64_t mask = 0;
  if (a.a[1] < sizeof mask) return -EINVAL;
  if (!p.mm().read(a.a[2], mask)) return -EFAULT;
  return (mask & 1) ? 0 : -EINVAL;
}

KVMS_SYSCALL(sched_yield) {
  Process::BlockingSection unlocked(p);  // let a thread waiting for the lock in
  sched_yield();
  return 0;
}

// Scheduling: the guest runs as an ordinary SCHED_OTHER process; real-time policies need privileges.
KVMS_SYSCALL(sched_getparam) {
  if (int64_t(a.a[0]) < 0 || a.a[1] == 0) return -EINVAL;
  if (!is_self(p, int64_t(a.a[0])) && int64_t(a.a[0]) != p.thread().tid) return -ESRCH;
  return p.mm().write<int32_t>(a.a[1], 0) ? 0 : -EFAULT;
}

KVMS_SYSCALL(sched_getscheduler) {
  if (int64_t(a.a[0]) < 0) return -EINVAL;
  if (!is_self(p, int64_t(a.a[0])) && int64_t(a.a[0]) != p.thread().tid) return -ESRCH;
  return SCHED_OTHER;
}

KVMS_SYSCALL(sched_setscheduler) {
  const int64_t pid = int64_t(a.a[0]);
  const int policy = int(a.a[1]) & ~SCHED_RESET_ON_FORK;
  if (pid < 0 || a.a[2] == 0) return -EINVAL;
  if (!is_self(p, pid) && pid != p.thread().tid) return -ESRCH;
  int32_t priority = 0;
  if (!p.mm().read(a.a[2], priority)) return -EFAULT;
  switch (policy) {
    case SCHED_OTHER: case SCHED_BATCH: case SCHED_IDLE: return priority == 0 ? 0 : -EINVAL;
    case SCHED_FIFO: case SCHED_RR: return priority >= 1 && priority <= 99 ? -EPERM : -EINVAL;  // RLIMIT_RTPRIO 0
    default: return -EINVAL;
  }
}

KVMS_SYSCALL(sched_get_priority_max) {
  const int policy = int(a.a[0]);
  if (policy == SCHED_FIFO || policy == SCHED_RR) return 99;
  return policy == SCHED_OTHER || policy == SCHED_BATCH || policy == SCHED_IDLE ? 0 : -EINVAL;
}

KVMS_SYSCALL(sched_get_priority_min) {
  const int policy = int(a.a[0]);
  if (policy == SCHED_FIFO || policy == SCHED_RR) return 1;
  return policy == SCHED_OTHER || policy == SCHED_BATCH || policy == SCHED_IDLE ? 0 : -EINVAL;
}

namespace {

// PRIO_PROCESS/PRIO_PGRP/PRIO_USER naming this process (its group, its user): the only target.
int64_t check_priority_target(Process& p, uint64_t which, uint64_t who) {
  switch (which) {
    case PRIO_PROCESS: case PRIO_PGRP: return is_self(p, int64_t(int32_t(who))) ? 0 : -ESRCH;
    case PRIO_USER: return uint32_t(who) == 0 || uint32_t(who) == p.uid ? 0 : -ESRCH;
    default: return -EINVAL;
  }
}

}  // namespace

KVMS_SYSCALL(getpriority) {
  if (int64_t rc = check_priority_target(p, a.a[0], a.a[1])) return rc;
  return 20 - p.nice;  // the kernel returns 20 - nice, so that it is never negative
}

KVMS_SYSCALL(setpriority) {
  if (int64_t rc = check_priority_target(p, a.a[0], a.a[1])) return rc;
  const int nice = std::clamp(int(a.a[2]), -20, 19);
  if (nice < p.nice && 20 - nice > int(p.rlimits[RLIMIT_NICE].first)) return -EACCES;  // raising needs privilege
  p.nice = nice;
  return 0;
}

// Identity changes: an unprivileged process may only "change" to the ids it already has.
namespace {
bool same_or_unchanged(uint64_t id, uint32_t current) { return uint32_t(id) == uint32_t(-1) || uint32_t(id) == current; }
}  // namespace

KVMS_SYSCALL(setuid) { return uint32_t(a.a[0]) == p.uid ? 0 : -EPERM; }
KVMS_SYSCALL(setgid) { return uint32_t(a.a[0]) == p.gid ? 0 : -EPERM; }
KVMS_SYSCALL(setreuid) { return same_or_unchanged(a.a[0], p.uid) && same_or_unchanged(a.a[1], p.uid) ? 0 : -EPERM; }
KVMS_SYSCALL(setregid) { return same_or_unchanged(a.a[0], p.gid) && same_or_unchanged(a.a[1], p.gid) ? 0 : -EPERM; }
KVMS_SYSCALL(setresuid) {
  for (int i = 0; i < 3; ++i)
    if (!same_or_unchanged(a.a[i], p.uid)) return -EPERM;
  return 0;
}
KVMS_SYSCALL(setresgid) {
  for (int i = 0; i < 3; ++i)
    if (!same_or_unchanged(a.a[i], p.gid)) return -EPERM;
  return 0;
}
KVMS_SYSCALL(setgroups) { return int64_t(int32_t(a.a[0])) < 0 || a.a[0] > 65536 ? -EINVAL : -EPERM; }  // CAP_SETGID

// Capabilities: none, in every set.
namespace {
constexpr uint32_t kCapV1 = 0x19980330, kCapV2 = 0x20071026, kCapV3 = 0x20080522;
}  // namespace

KVMS_SYSCALL(capget) {
  uint32_t header[2];
  if (!p.mm().copy_from_user(header, a.a[0], sizeof header)) return -EFAULT;
  if (header[0] != kCapV1 && header[0] != kCapV2 && header[0] != kCapV3) {
    const uint32_t preferred = kCapV3;
    return p.mm().write(a.a[0], preferred) ? -EINVAL : -EFAULT;
  }
  if (int32_t(header[1]) < 0) return -EINVAL;
  if (header[1] != 0 && !p.is_self(int(header[1])) && int(header[1]) != p.thread().tid) return -ESRCH;
  if (a.a[1] == 0) return 0;  // a version probe
  const uint32_t zeros[6] = {};
  return p.mm().copy_to_user(a.a[1], zeros, header[0] == kCapV1 ? 12 : 24) ? 0 : -EFAULT;
}

KVMS_SYSCALL(capset) {
  uint32_t header[2];
  if (!p.mm().copy_from_user(header, a.a[0], sizeof header)) return -EFAULT;
  if (header[0] != kCapV1 && header[0] != kCapV2 && header[0] != kCapV3) return -EINVAL;
  if (header[1] != 0 && !p.is_self(int(header[1])) && int(header[1]) != p.thread().tid) return -EPERM;
  uint32_t data[6] = {};
  if (!p.mm().copy_from_user(data, a.a[1], header[0] == kCapV1 ? 12 : 24)) return -EFAULT;
  for (uint32_t d : data)
    if (d) return -EPERM;
  return 0;
}

// Interval timers: none is ever armed, since kvmserver does not deliver SIGALRM/SIGVTALRM/SIGPROF
// yet; arming one is ENOSYS rather than a timer that silently never fires.
KVMS_SYSCALL(prctl) {
  switch (a.a[0]) {
    case PR_SET_NAME: {
      auto name = p.mm().read_string(a.a[1], 4096);
      if (!name) return -EFAULT;
      std::memset(p.thread().comm, 0, sizeof p.thread().comm);
      std::strncpy(p.thread().comm, name->c_str(), sizeof p.thread().comm - 1);
      if (p.view && p.thread().tid == p.main_tid) {
        std::lock_guard<std::mutex> lk(p.view->mutex);
        p.view->comm = p.thread().comm;
      }
      return 0;
    }
    case PR_GET_NAME:
      return p.mm().copy_to_user(a.a[1], p.thread().comm, sizeof p.thread().comm) ? 0 : -EFAULT;
    case PR_GET_DUMPABLE: return p.dumpable ? 1 : 0;
    case PR_SET_DUMPABLE:
      if (a.a[1] > 1) return -EINVAL;
      p.dumpable = a.a[1] == 1;
      return 0;
    case PR_SET_PDEATHSIG:
      if (a.a[1] > 64) return -EINVAL;
      p.parent_death_signal = int(a.a[1]);
      if (p.table) p.table->set_parent_death_signal(p.pid, p.parent_death_signal);
      return 0;
    case PR_GET_PDEATHSIG: return p.mm().write<int>(a.a[1], p.parent_death_signal) ? 0 : -EFAULT;
    case PR_SET_CHILD_SUBREAPER:  // any nonzero value sets it (Linux stores !!arg2)
      p.child_subreaper = a.a[1] != 0;
      if (p.table) p.table->set_child_subreaper(p.pid, p.child_subreaper);
      return 0;
    case PR_GET_CHILD_SUBREAPER: return p.mm().write<int>(a.a[1], p.child_subreaper ? 1 : 0) ? 0 : -EFAULT;
    case PR_SET_NO_NEW_PRIVS: return 0;
    case PR_GET_NO_NEW_PRIVS: return 1;
    case PR_SET_VMA: return 0;  // naming anonymous memory is cosmetic
    case PR_GET_TIMERSLACK: return 50000;
    case PR_SET_TIMERSLACK: return 0;
    case PR_CAPBSET_READ: return a.a[1] <= 63 ? 0 : -EINVAL;
    case PR_GET_SECCOMP: return 0;  // no filter
    case PR_GET_THP_DISABLE: return 0;
    case PR_SET_THP_DISABLE: return 0;  // advisory: no huge pages behind the guest anyway
    case PR_GET_TID_ADDRESS: return p.mm().write<uint64_t>(a.a[1], p.thread().clear_child_tid) ? 0 : -EFAULT;
    case PR_SET_MM: return -EPERM;  // CAP_SYS_RESOURCE
    default: return -EINVAL;
  }
}

KVMS_SYSCALL(getcpu) {
  const uint32_t zero = 0;
  if (a.a[0] && !p.mm().write(a.a[0], zero)) return -EFAULT;
  if (a.a[1] && !p.mm().write(a.a[1], zero)) return -EFAULT;
  return 0;
}

}  // namespace kvms::linux

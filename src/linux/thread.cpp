// Process and thread lifetime: exit ends the calling thread (the process with its last thread),
// exit_group the whole process; clone makes processes (each a VM of its own) and threads (a vCPU
// more in the same VM, see Guest).
#include <asm/prctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "kvm/vm.hpp"
#include "linux/policy.hpp"
#include "linux/process_table.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kRobustListHeadSize = 24;
constexpr uint64_t kRseqMinSize = 32;
constexpr uint32_t kRseqFlagUnregister = 1;

constexpr uint64_t kUserAddressEnd = 1ull << 47;  // canonical user addresses are below

bool canonical_user(uint64_t addr) { return addr < kUserAddressEnd; }

}  // namespace

KVMS_SYSCALL(exit) {
  if (p.threads.size() > 1)
    p.thread().exit_code = int(a.a[0] & 0xff);
  else
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
  p.thread().clear_child_tid = a.a[0];
  return p.thread().tid;
}

KVMS_SYSCALL(set_robust_list) {
  if (a.a[1] != kRobustListHeadSize) return -EINVAL;
  p.thread().robust_list = a.a[0];
  p.thread().robust_list_len = a.a[1];
  return 0;
}

KVMS_SYSCALL(get_robust_list) {
  // Any thread of this process by its tid (0: the caller); another process's are not ours to show.
  const int tid = int(a.a[0]);
  auto it = tid == 0 ? p.threads.find(p.thread().tid) : p.threads.find(tid);
  if (int64_t(a.a[0]) < 0 || it == p.threads.end() || it->second.exit_code) return -ESRCH;
  if (!p.mm().write(a.a[1], it->second.robust_list) || !p.mm().write(a.a[2], it->second.robust_list_len)) return -EFAULT;
  return 0;
}

// One CPU that never changes and no preemption of guest code by us: registering only needs the cpu
// fields filled in; no critical section can ever need a restart.
KVMS_SYSCALL(rseq) {
  const uint64_t area = a.a[0], len = a.a[1];
  const uint32_t flags = uint32_t(a.a[2]);
  if (flags & kRseqFlagUnregister) {
    if (area != p.thread().rseq) return -EINVAL;
    p.thread().rseq = p.thread().rseq_len = 0;
    return 0;
  }
  if (flags) return -EINVAL;
  if (p.thread().rseq) return area == p.thread().rseq ? -EBUSY : -EINVAL;
  if (len < kRseqMinSize || (area & 31)) return -EINVAL;
  const uint32_t cpu_fields[2] = {0, 0};  // cpu_id_start, cpu_id
  if (!p.mm().copy_to_user(area, cpu_fields, sizeof cpu_fields)) return -EFAULT;
  p.thread().rseq = area;
  p.thread().rseq_len = len;
  return 0;
}

namespace {

constexpr uint64_t kMaxArgStrlen = 32 * 4096;   // MAX_ARG_STRLEN: one string, its NUL included
constexpr uint64_t kMinArgBytes = 32 * 4096;    // ARG_MAX: what is always allowed in total

// Linux's budget for argv and envp together (strings and their pointers): a quarter of the stack
// limit, at least ARG_MAX, at most 6 MiB (3/4 of _STK_LIM). It also bounds what we copy to the host.
uint64_t exec_argument_budget(const Process& p) {
  return std::clamp<uint64_t>(p.rlimits[RLIMIT_STACK].first / 4, kMinArgBytes, 6ull << 20);
}

// A NULL-terminated array of guest string pointers (argv, envp), charged to `budget`.
std::variant<std::vector<std::string>, int> read_string_array(Process& p, uint64_t addr, uint64_t& budget) {
  std::vector<std::string> out;
  if (!addr) return out;
  for (uint64_t i = 0;; ++i) {
    uint64_t ptr = 0;
    if (!p.mm().read(addr + i * 8, ptr)) return -EFAULT;
    if (!ptr) return out;
    auto s = p.mm().read_string(ptr, std::min(kMaxArgStrlen, budget));
    if (!s) return p.mm().find(ptr) ? -E2BIG : -EFAULT;
    const uint64_t cost = s->size() + 1 + sizeof(uint64_t);
    if (cost > budget) return -E2BIG;
    budget -= cost;
    out.push_back(std::move(*s));
  }
}

// For host waits that signals do not interrupt: whether the thread was kicked (stop, kill, deadline).
std::function<bool()> kicked(Process& p) {
  kvm::Vcpu* vcpu = p.thread().vcpu;
  return [&p, vcpu] { return p.lock.stop.load() || (vcpu && vcpu->run_area()->immediate_exit); };
}

int64_t do_fork(Process& p, const CloneRequest& req) {
  if (!p.host || !p.table) return -ENOSYS;
  return p.host->fork(p, req);
}

// AT_SYMLINK_NOFOLLOW: a path whose last component is a symlink is not executed (ELOOP); symlinks
// above it are followed as always.
int64_t refuse_final_symlink(Process& p, const std::string& guest_path) {
  auto r = p.policy().resolve(guest_path, Access::Read, false);
  if (auto* err = std::get_if<int>(&r)) return *err;
  struct stat st{};
  if (::lstat(std::get<PathPolicy::Resolved>(r).host_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return -ELOOP;
  return 0;
}

// A waited-for child's resource usage: its CPU time, counted as user time (kvmserver does not
// tell the guest's own time from its handling of the guest's calls).
struct rusage child_rusage(uint64_t cpu_ns) {
  struct rusage ru{};
  ru.ru_utime.tv_sec = time_t(cpu_ns / 1000000000);
  ru.ru_utime.tv_usec = suseconds_t(cpu_ns % 1000000000 / 1000);
  return ru;
}

int64_t do_execve(Process& p, int dirfd, uint64_t upath, uint64_t uargv, uint64_t uenvp, int flags) {
  if (!p.host) return -ENOSYS;
  if (flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) return -EINVAL;
  auto raw = p.mm().read_string(upath, 4096);
  if (!raw) return p.mm().find(upath) ? -ENAMETOOLONG : -EFAULT;
  ExecName name;
  if (raw->empty()) {
    // execveat(fd, "", AT_EMPTY_PATH): the file fd refers to (symlinks were followed when it was
    // opened, so AT_SYMLINK_NOFOLLOW has nothing left to refuse). Linux names it /dev/fd/N.
    if (!(flags & AT_EMPTY_PATH)) return -ENOENT;
    if (dirfd == AT_FDCWD) return -EACCES;  // the working directory
    auto file = p.fds.get(dirfd);
    if (!file) return -EBADF;
    if (file->kind != OpenFile::Kind::Regular) return -EACCES;
    name.guest_path = file->path;
    name.filename = "/dev/fd/" + std::to_string(dirfd);
    name.filename_gone = p.fds.cloexec(dirfd);
  } else {
    auto path = p.guest_path(dirfd, upath);
    if (auto* err = std::get_if<int>(&path)) return *err;
    name.guest_path = std::move(std::get<std::string>(path));
    // The name as given, as Linux hands it to a "#!" interpreter: relative to a directory fd it is
    // /dev/fd/N/NAME, which the interpreter cannot open once that fd has closed on exec.
    name.filename = std::move(*raw);
    if (name.filename.front() != '/' && dirfd != AT_FDCWD) {
      name.filename = "/dev/fd/" + std::to_string(dirfd) + "/" + name.filename;
      name.filename_gone = p.fds.cloexec(dirfd);
    }
    if (flags & AT_SYMLINK_NOFOLLOW)
      if (int64_t err = refuse_final_symlink(p, name.guest_path)) return err;
  }
  uint64_t budget = exec_argument_budget(p);
  auto argv = read_string_array(p, uargv, budget);
  if (auto* err = std::get_if<int>(&argv)) return *err;
  auto envp = read_string_array(p, uenvp, budget);
  if (auto* err = std::get_if<int>(&envp)) return *err;
  return p.host->execve(p, name, std::move(std::get<0>(argv)), std::move(std::get<0>(envp)));
}

}  // namespace

KVMS_SYSCALL(fork) { return do_fork(p, CloneRequest{SIGCHLD}); }
KVMS_SYSCALL(vfork) { return do_fork(p, CloneRequest{CLONE_VM | CLONE_VFORK | SIGCHLD}); }

namespace {

int64_t do_clone(Process& p, uint64_t flags, uint64_t stack, uint64_t parent_tid, uint64_t child_tid, uint64_t tls) {
  constexpr uint64_t kUnsupported = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                    CLONE_NEWPID | CLONE_NEWNET | CLONE_PTRACE | CLONE_UNTRACED | CLONE_PIDFD;
  if (flags & kUnsupported) return -EINVAL;
  if ((flags & CLONE_SETTLS) && !canonical_user(tls)) return -EPERM;  // as ARCH_SET_FS: a VM entry would fail
  if (flags & CLONE_THREAD) {
    // A thread shares memory, signal handlers, files and fs: Linux requires the first two, and a
    // thread with its own fd table or cwd is something we do not offer.
    if (!(flags & CLONE_VM) || !(flags & CLONE_SIGHAND)) return -EINVAL;
    if (!(flags & CLONE_FILES) || !(flags & CLONE_FS)) return -EINVAL;
    if (!stack) return -EINVAL;
    if (!p.host) return -ENOSYS;
    return p.host->clone_thread(p, CloneRequest{flags, stack, parent_tid, child_tid, tls});
  }
  if ((flags & CLONE_VM) && !(flags & CLONE_VFORK)) return -ENOSYS;  // a process sharing our memory
  if ((flags & CLONE_SIGHAND) && !(flags & CLONE_VM)) return -EINVAL;  // as Linux
  return do_fork(p, CloneRequest{flags, stack, parent_tid, child_tid, tls});
}

}  // namespace

KVMS_SYSCALL(clone) { return do_clone(p, a.a[0], a.a[1], a.a[2], a.a[3], a.a[4]); }

KVMS_SYSCALL(clone3) {
  struct CloneArgs {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
  } args{};
  const uint64_t size = a.a[1];
  if (size > 4096) return -E2BIG;  // a page at most
  if (size < 64) return -EINVAL;   // CLONE_ARGS_SIZE_VER0
  if (!p.mm().copy_from_user(&args, a.a[0], std::min<uint64_t>(size, sizeof args))) return -EFAULT;
  if (size > sizeof args) {  // a newer struct: what we do not know must be zero (copy_struct_from_user)
    std::vector<uint8_t> rest(size - sizeof args);
    if (!p.mm().copy_from_user(rest.data(), a.a[0] + sizeof args, rest.size())) return -EFAULT;
    if (std::any_of(rest.begin(), rest.end(), [](uint8_t b) { return b != 0; })) return -E2BIG;
  }
  // Linux's clone3_args_valid: the flags it knows (no CLONE_INTO_CGROUP here: no cgroups), an
  // exit signal only for a child whose parent is the caller, no CLONE_CLEAR_SIGHAND with shared
  // handlers.
  constexpr uint64_t kCloneClearSighand = 0x100000000ull;
  if (args.flags & ~(0xffffffffull | kCloneClearSighand)) return -EINVAL;
  if (args.set_tid || args.set_tid_size || args.cgroup) return -EINVAL;
  if (args.exit_signal > 64 || (args.flags & 0xff)) return -EINVAL;
  if ((args.flags & (CLONE_THREAD | CLONE_PARENT)) && args.exit_signal) return -EINVAL;
  if ((args.flags & kCloneClearSighand) && (args.flags & CLONE_SIGHAND)) return -EINVAL;
  if ((args.stack == 0) != (args.stack_size == 0)) return -EINVAL;
  // The stack must lie in user space (Linux's access_ok): its top is where the thread starts.
  if (args.stack && (args.stack_size > kUserAddressEnd || args.stack > kUserAddressEnd - args.stack_size)) return -EINVAL;
  const uint64_t stack = args.stack ? args.stack + args.stack_size : 0;
  return do_clone(p, args.flags | args.exit_signal, stack, args.parent_tid, args.child_tid, args.tls);
}

KVMS_SYSCALL(execve) { return do_execve(p, AT_FDCWD, a.a[0], a.a[1], a.a[2], 0); }
KVMS_SYSCALL(execveat) { return do_execve(p, int(a.a[0]), a.a[1], a.a[2], a.a[3], int(a.a[4])); }

KVMS_SYSCALL(wait4) {
  const int64_t pid = int64_t(a.a[0]);
  const uint64_t status_addr = a.a[1], options = a.a[2], rusage_addr = a.a[3];
  if (options & ~uint64_t(WNOHANG | WUNTRACED | WCONTINUED | __WALL | __WCLONE | __WNOTHREAD)) return -EINVAL;
  if (!p.table) return -ECHILD;
  if (int32_t(pid) == INT32_MIN) return -ESRCH;  // -INT_MIN is no group
  // 0: a child in the caller's process group; below -1: in group -pid.
  const int pgid = int32_t(pid) == 0 ? p.table->pgid_of(p.pid) : int32_t(pid) < -1 ? -int32_t(pid) : 0;
  std::pair<int, int> waited;
  uint64_t cpu_ns = 0;
  {
    Process::BlockingSection unlocked(p);
    const int which = WEXITED | ((options & WUNTRACED) ? WSTOPPED : 0) | int(options & WCONTINUED);
    waited = p.table->wait(p.pid, int32_t(pid) > 0 ? int32_t(pid) : -1, options & WNOHANG, kicked(p), pgid, true, which,
                           &cpu_ns);
  }
  auto [child, status] = waited;
  if (child <= 0) return child;
  if (status_addr && !p.mm().write<int32_t>(status_addr, status)) return -EFAULT;
  if (rusage_addr && !p.mm().write(rusage_addr, child_rusage(cpu_ns))) return -EFAULT;
  return child;
}

KVMS_SYSCALL(waitid) {
  const int idtype = int(a.a[0]);
  const int64_t id = int64_t(a.a[1]);
  const uint64_t info_addr = a.a[2], options = a.a[3];
  if (idtype != P_ALL && idtype != P_PID && idtype != P_PGID) return -EINVAL;
  if (!(options & (WEXITED | WSTOPPED | WCONTINUED))) return -EINVAL;
  if (!p.table) return -ECHILD;
  if (idtype == P_PID && int32_t(id) <= 0) return -EINVAL;
  if (idtype == P_PGID && int32_t(id) < 0) return -EINVAL;
  const int pgid = idtype != P_PGID ? 0 : int32_t(id) == 0 ? p.table->pgid_of(p.pid) : int32_t(id);
  std::pair<int, int> waited;
  uint64_t cpu_ns = 0;
  {
    Process::BlockingSection unlocked(p);
    waited = p.table->wait(p.pid, idtype == P_PID ? int(id) : -1, options & WNOHANG, kicked(p), pgid, !(options & WNOWAIT),
                           int(options & (WEXITED | WSTOPPED | WCONTINUED)), &cpu_ns);
  }
  auto [child, status] = waited;
  if (child < 0) return child;
  siginfo_t info{};
  if (child > 0) {
    info.si_signo = SIGCHLD;
    info.si_pid = child;
    info.si_uid = p.uid;
    if (WIFSTOPPED(status)) {
      info.si_code = CLD_STOPPED;
      info.si_status = WSTOPSIG(status);
    } else if (WIFCONTINUED(status)) {
      info.si_code = CLD_CONTINUED;
      info.si_status = SIGCONT;
    } else {
      info.si_code = WIFEXITED(status) ? CLD_EXITED : (status & 0x80) ? CLD_DUMPED : CLD_KILLED;
      info.si_status = WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);
    }
  }
  if (info_addr && !p.mm().write(info_addr, info)) return -EFAULT;
  if (a.a[4] && !p.mm().write(a.a[4], child_rusage(cpu_ns))) return -EFAULT;  // Linux's fifth argument
  return 0;
}

}  // namespace kvms::linux

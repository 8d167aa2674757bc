// The whole system-call table in one place. Numbers not listed here are -ENOSYS.
#include "linux/syscalls.hpp"

#include <sys/syscall.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <cerrno>
#include <utility>

namespace kvms::linux {
namespace {

constexpr std::pair<int, SyscallHandler> kHandlers[] = {
    // file.cpp
    {SYS_read, sys_read}, {SYS_write, sys_write}, {SYS_pread64, sys_pread64}, {SYS_pwrite64, sys_pwrite64},
    {SYS_readv, sys_readv}, {SYS_writev, sys_writev}, {SYS_preadv, sys_preadv}, {SYS_pwritev, sys_pwritev},
    {SYS_open, sys_open}, {SYS_openat, sys_openat}, {SYS_creat, sys_creat}, {SYS_close, sys_close},
    {SYS_close_range, sys_close_range}, {SYS_lseek, sys_lseek}, {SYS_dup, sys_dup}, {SYS_dup2, sys_dup2},
    {SYS_dup3, sys_dup3}, {SYS_fcntl, sys_fcntl}, {SYS_pipe, sys_pipe}, {SYS_pipe2, sys_pipe2},
    {SYS_ioctl, sys_ioctl}, {SYS_getdents64, sys_getdents64}, {SYS_getdents, sys_getdents},
    {SYS_sendfile, sys_sendfile}, {SYS_splice, sys_splice}, {SYS_tee, sys_tee}, {SYS_vmsplice, sys_vmsplice},
    {SYS_flock, sys_flock},
    // file_meta.cpp
    {SYS_stat, sys_stat}, {SYS_lstat, sys_lstat}, {SYS_fstat, sys_fstat}, {SYS_newfstatat, sys_newfstatat},
    {SYS_statx, sys_statx}, {SYS_readlink, sys_readlink}, {SYS_readlinkat, sys_readlinkat},
    {SYS_access, sys_access}, {SYS_faccessat, sys_faccessat}, {SYS_faccessat2, sys_faccessat2},
    {SYS_getcwd, sys_getcwd}, {SYS_chdir, sys_chdir}, {SYS_fchdir, sys_fchdir}, {SYS_umask, sys_umask},
    {SYS_mkdir, sys_mkdir}, {SYS_mkdirat, sys_mkdirat}, {SYS_mknod, sys_mknod}, {SYS_mknodat, sys_mknodat}, {SYS_unlink, sys_unlink}, {SYS_unlinkat, sys_unlinkat},
    {SYS_rmdir, sys_rmdir}, {SYS_rename, sys_rename}, {SYS_renameat, sys_renameat},
    {SYS_renameat2, sys_renameat2}, {SYS_symlink, sys_symlink}, {SYS_symlinkat, sys_symlinkat},
    {SYS_link, sys_link}, {SYS_linkat, sys_linkat}, {SYS_utimensat, sys_utimensat},
    {SYS_ftruncate, sys_ftruncate}, {SYS_truncate, sys_truncate}, {SYS_fsync, sys_fsync},
    {SYS_fdatasync, sys_fdatasync}, {SYS_fchmod, sys_fchmod}, {SYS_fchmodat, sys_fchmodat},
    {SYS_chmod, sys_chmod}, {SYS_statfs, sys_statfs}, {SYS_fstatfs, sys_fstatfs},
    {SYS_chown, sys_chown}, {SYS_fchown, sys_fchown}, {SYS_lchown, sys_lchown}, {SYS_fchownat, sys_fchownat},
    // mmap.cpp
    {SYS_brk, sys_brk}, {SYS_mmap, sys_mmap}, {SYS_munmap, sys_munmap}, {SYS_mprotect, sys_mprotect},
    {SYS_mremap, sys_mremap}, {SYS_madvise, sys_madvise}, {SYS_mlock, sys_mlock}, {SYS_munlock, sys_munlock},
    {SYS_msync, sys_msync}, {SYS_mincore, sys_mincore}, {SYS_mlockall, sys_mlockall},
    {SYS_munlockall, sys_munlockall},
    // memfd.cpp
    {SYS_memfd_create, sys_memfd_create},
    // misc.cpp
    {SYS_getpid, sys_getpid}, {SYS_gettid, sys_gettid}, {SYS_getppid, sys_getppid}, {SYS_getuid, sys_getuid},
    {SYS_geteuid, sys_geteuid}, {SYS_getgid, sys_getgid}, {SYS_getegid, sys_getegid},
    {SYS_getpgrp, sys_getpgrp}, {SYS_getpgid, sys_getpgid}, {SYS_getsid, sys_getsid}, {SYS_setsid, sys_setsid},
    {SYS_setpgid, sys_setpgid},
    {SYS_getgroups, sys_getgroups}, {SYS_getresuid, sys_getresuid}, {SYS_getresgid, sys_getresgid},
    {SYS_uname, sys_uname}, {SYS_sethostname, sys_sethostname}, {SYS_setdomainname, sys_setdomainname}, {SYS_sysinfo, sys_sysinfo}, {SYS_getrandom, sys_getrandom},
    {SYS_prlimit64, sys_prlimit64}, {SYS_getrlimit, sys_getrlimit}, {SYS_setrlimit, sys_setrlimit},
    {SYS_getrusage, sys_getrusage}, {SYS_sched_getaffinity, sys_sched_getaffinity},
    {SYS_sched_setaffinity, sys_sched_setaffinity}, {SYS_sched_yield, sys_sched_yield},
    {SYS_getpriority, sys_getpriority}, {SYS_prctl, sys_prctl}, {SYS_getcpu, sys_getcpu},
    {SYS_sched_getparam, sys_sched_getparam}, {SYS_sched_getscheduler, sys_sched_getscheduler},
    {SYS_sched_setscheduler, sys_sched_setscheduler}, {SYS_sched_get_priority_max, sys_sched_get_priority_max},
    {SYS_sched_get_priority_min, sys_sched_get_priority_min}, {SYS_setpriority, sys_setpriority},
    {SYS_setuid, sys_setuid}, {SYS_setgid, sys_setgid}, {SYS_setreuid, sys_setreuid}, {SYS_setregid, sys_setregid},
    {SYS_setresuid, sys_setresuid}, {SYS_setresgid, sys_setresgid}, {SYS_setgroups, sys_setgroups},
    {SYS_capget, sys_capget}, {SYS_capset, sys_capset},
    // itimer.cpp
    {SYS_getitimer, sys_getitimer}, {SYS_setitimer, sys_setitimer}, {SYS_alarm, sys_alarm}, {SYS_pause, sys_pause},
    // thread.cpp
    {SYS_exit, sys_exit}, {SYS_exit_group, sys_exit_group}, {SYS_arch_prctl, sys_arch_prctl},
    {SYS_set_tid_address, sys_set_tid_address}, {SYS_set_robust_list, sys_set_robust_list},
    {SYS_get_robust_list, sys_get_robust_list}, {SYS_rseq, sys_rseq}, {SYS_fork, sys_fork},
    {SYS_vfork, sys_vfork}, {SYS_clone, sys_clone}, {SYS_clone3, sys_clone3}, {SYS_execve, sys_execve},
    {SYS_execveat, sys_execveat}, {SYS_wait4, sys_wait4}, {SYS_waitid, sys_waitid},
    // futex.cpp
    {SYS_futex, sys_futex}, {SYS_membarrier, sys_membarrier},
    // time.cpp
    {SYS_clock_gettime, sys_clock_gettime}, {SYS_clock_getres, sys_clock_getres},
    {SYS_gettimeofday, sys_gettimeofday}, {SYS_time, sys_time}, {SYS_nanosleep, sys_nanosleep},
    {SYS_clock_nanosleep, sys_clock_nanosleep}, {SYS_times, sys_times},
    // signal.cpp
    {SYS_rt_sigaction, sys_rt_sigaction}, {SYS_rt_sigprocmask, sys_rt_sigprocmask},
    {SYS_sigaltstack, sys_sigaltstack}, {SYS_kill, sys_kill}, {SYS_tgkill, sys_tgkill}, {SYS_tkill, sys_tkill},
    {SYS_rt_sigpending, sys_rt_sigpending}, {SYS_rt_sigreturn, sys_rt_sigreturn},
    {SYS_rt_sigqueueinfo, sys_rt_sigqueueinfo}, {SYS_rt_tgsigqueueinfo, sys_rt_tgsigqueueinfo},
    {SYS_rt_sigtimedwait, sys_rt_sigtimedwait}, {SYS_rt_sigsuspend, sys_rt_sigsuspend},
    // signalfd.cpp
    {SYS_signalfd, sys_signalfd}, {SYS_signalfd4, sys_signalfd4},
    // posix_timer.cpp
    {SYS_timer_create, sys_timer_create}, {SYS_timer_settime, sys_timer_settime},
    {SYS_timer_gettime, sys_timer_gettime}, {SYS_timer_getoverrun, sys_timer_getoverrun},
    {SYS_timer_delete, sys_timer_delete},
    // socket.cpp
    {SYS_socket, sys_socket}, {SYS_socketpair, sys_socketpair}, {SYS_bind, sys_bind}, {SYS_listen, sys_listen},
    {SYS_accept, sys_accept}, {SYS_accept4, sys_accept4}, {SYS_connect, sys_connect},
    {SYS_shutdown, sys_shutdown}, {SYS_getsockname, sys_getsockname}, {SYS_getpeername, sys_getpeername},
    {SYS_setsockopt, sys_setsockopt}, {SYS_getsockopt, sys_getsockopt}, {SYS_sendto, sys_sendto},
    {SYS_recvfrom, sys_recvfrom}, {SYS_sendmsg, sys_sendmsg}, {SYS_recvmsg, sys_recvmsg},
    {SYS_sendmmsg, sys_sendmmsg}, {SYS_recvmmsg, sys_recvmmsg},
    // epoll.cpp
    {SYS_epoll_create, sys_epoll_create}, {SYS_epoll_create1, sys_epoll_create1}, {SYS_epoll_ctl, sys_epoll_ctl},
    {SYS_epoll_wait, sys_epoll_wait}, {SYS_epoll_pwait, sys_epoll_pwait}, {SYS_epoll_pwait2, sys_epoll_pwait2},
    {SYS_poll, sys_poll}, {SYS_ppoll, sys_ppoll}, {SYS_select, sys_select}, {SYS_pselect6, sys_pselect6},
    {SYS_eventfd, sys_eventfd}, {SYS_eventfd2, sys_eventfd2}, {SYS_timerfd_create, sys_timerfd_create},
    {SYS_timerfd_settime, sys_timerfd_settime}, {SYS_timerfd_gettime, sys_timerfd_gettime},
};

constexpr size_t kTableSize = 512;

const std::array<SyscallHandler, kTableSize>& table() {
  static const auto t = [] {
    std::array<SyscallHandler, kTableSize> t{};
    for (auto [nr, handler] : kHandlers) t[nr] = handler;
    return t;
  }();
  return t;
}

struct NameEntry {
  int nr;
  const char* name;
};
constexpr NameEntry kNames[] = {
#include "syscall_names.inc"
};

}  // namespace

const char* syscall_name(uint64_t nr) {
  static const auto names = [] {
    std::array<const char*, kTableSize> n{};
    for (auto e : kNames)
      if (e.nr >= 0 && static_cast<size_t>(e.nr) < kTableSize) n[e.nr] = e.name;
    return n;
  }();
  return nr < kTableSize ? names[nr] : nullptr;
}

bool syscall_implemented(uint64_t nr) { return nr < kTableSize && table()[nr] != nullptr; }

// KVMS_TRACE=1 in kvmserver's environment: one line per guest syscall on stderr; KVMS_TRACE=errors:
// only the failed ones (debugging aids).
int trace_level() {
  static const int level = [] {
    const char* v = getenv("KVMS_TRACE");
    if (!v || !*v || *v == '0') return 0;
    return std::string(v) == "errors" ? 1 : 2;
  }();
  return level;
}
bool tracing() { return trace_level() > 0; }

namespace {

// What every syscall's result goes through: the process's memory charge follows what it holds now
// (limits.hpp), and a guest that runs out of fds is told why on -v.
int64_t finish(Process& p, uint64_t nr, int64_t result) {
  p.settle_memory();
  if (result == -EMFILE) {  // only the fd limit says that
    const char* name = syscall_name(nr);
    p.log_cap("--max-fds", uint64_t(p.fds.limit()), std::string(name ? name : "?") + ": EMFILE");
  }
  return result;
}

}  // namespace

int64_t dispatch_syscall(Process& p, const SyscallArgs& args) {
  if (args.nr < kTableSize) {
    ++p.stats.calls[args.nr];
    if (SyscallHandler h = table()[args.nr]) {
      if (!tracing()) return finish(p, args.nr, h(p, args));
      if (trace_level() == 2 && args.nr != SYS_futex && args.nr != SYS_clock_gettime)
        std::fprintf(stderr, "[host %ld pid %d tid %d] > %s\n", long(::syscall(SYS_gettid)), p.pid, p.thread().tid, syscall_name(args.nr));
      const int64_t r = finish(p, args.nr, h(p, args));
      if (trace_level() == 1 && (r >= 0 || r == -EAGAIN || r == -EINTR || r == -ETIMEDOUT)) return r;
      const char* name = syscall_name(args.nr);
      std::fprintf(stderr, "[host %ld pid %d tid %d] %s(%#llx, %#llx, %#llx, %#llx, %#llx, %#llx) = %lld\n", long(::syscall(SYS_gettid)), p.pid, p.thread().tid,
                   name ? name : "?", (unsigned long long)args.a[0], (unsigned long long)args.a[1],
                   (unsigned long long)args.a[2], (unsigned long long)args.a[3], (unsigned long long)args.a[4],
                   (unsigned long long)args.a[5], (long long)r);
      return r;
    }
  } else {
    ++p.stats.unknown;
  }
  p.log_unsupported(args.nr);
  return -ENOSYS;
}

int64_t errno_result(long host_rc) { return host_rc < 0 ? -errno : host_rc; }

}  // namespace kvms::linux

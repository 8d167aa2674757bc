#pragma once
// The system-call table and the handlers of each family (one .cpp per family). A handler validates its
// arguments, does the work, and returns the result or -errno, exactly like a Linux syscall.
#include <cstdint>
#include <ctime>
#include <optional>

#include "linux/process.hpp"

namespace kvms::linux {

using SyscallHandler = int64_t (*)(Process&, const SyscallArgs&);

// Runs syscall `args.nr` for the guest. Unknown or unsupported numbers are -ENOSYS (logged once
// with --verbose).
int64_t dispatch_syscall(Process& p, const SyscallArgs& args);
// "read", "openat", ... or nullptr.
const char* syscall_name(uint64_t nr);
// Whether nr has a handler (every other number is -ENOSYS).
bool syscall_implemented(uint64_t nr);

#define KVMS_SYSCALL(name) int64_t sys_##name(Process& p, const SyscallArgs& a)

// file.cpp: descriptors and I/O
KVMS_SYSCALL(read); KVMS_SYSCALL(write); KVMS_SYSCALL(pread64); KVMS_SYSCALL(pwrite64);
KVMS_SYSCALL(readv); KVMS_SYSCALL(writev); KVMS_SYSCALL(preadv); KVMS_SYSCALL(pwritev);
KVMS_SYSCALL(open); KVMS_SYSCALL(openat); KVMS_SYSCALL(creat); KVMS_SYSCALL(close); KVMS_SYSCALL(close_range);
KVMS_SYSCALL(lseek); KVMS_SYSCALL(dup); KVMS_SYSCALL(dup2); KVMS_SYSCALL(dup3); KVMS_SYSCALL(fcntl);
KVMS_SYSCALL(pipe); KVMS_SYSCALL(pipe2); KVMS_SYSCALL(ioctl); KVMS_SYSCALL(getdents64); KVMS_SYSCALL(getdents); KVMS_SYSCALL(sendfile);
KVMS_SYSCALL(splice); KVMS_SYSCALL(tee); KVMS_SYSCALL(vmsplice);
// file_meta.cpp: names, metadata, the working directory, and changes under write permission
KVMS_SYSCALL(stat); KVMS_SYSCALL(lstat); KVMS_SYSCALL(fstat); KVMS_SYSCALL(newfstatat); KVMS_SYSCALL(statx);
KVMS_SYSCALL(readlink); KVMS_SYSCALL(readlinkat); KVMS_SYSCALL(access); KVMS_SYSCALL(faccessat);
KVMS_SYSCALL(faccessat2); KVMS_SYSCALL(getcwd); KVMS_SYSCALL(chdir); KVMS_SYSCALL(fchdir); KVMS_SYSCALL(umask);
KVMS_SYSCALL(mkdir); KVMS_SYSCALL(mkdirat); KVMS_SYSCALL(unlink); KVMS_SYSCALL(unlinkat); KVMS_SYSCALL(rmdir);
KVMS_SYSCALL(rename); KVMS_SYSCALL(renameat); KVMS_SYSCALL(renameat2); KVMS_SYSCALL(symlink);
KVMS_SYSCALL(symlinkat); KVMS_SYSCALL(link); KVMS_SYSCALL(linkat); KVMS_SYSCALL(utimensat);
KVMS_SYSCALL(ftruncate); KVMS_SYSCALL(truncate); KVMS_SYSCALL(fsync); KVMS_SYSCALL(fdatasync);
KVMS_SYSCALL(fchmod); KVMS_SYSCALL(fchmodat); KVMS_SYSCALL(chmod); KVMS_SYSCALL(statfs); KVMS_SYSCALL(fstatfs);
KVMS_SYSCALL(chown); KVMS_SYSCALL(fchown); KVMS_SYSCALL(lchown); KVMS_SYSCALL(fchownat);
// mmap.cpp: memory
KVMS_SYSCALL(brk); KVMS_SYSCALL(mmap); KVMS_SYSCALL(munmap); KVMS_SYSCALL(mprotect); KVMS_SYSCALL(mremap);
KVMS_SYSCALL(madvise); KVMS_SYSCALL(mlock); KVMS_SYSCALL(munlock); KVMS_SYSCALL(msync); KVMS_SYSCALL(mincore);
KVMS_SYSCALL(mlockall); KVMS_SYSCALL(munlockall);
// memfd.cpp
KVMS_SYSCALL(memfd_create);
// misc.cpp: identity, limits, system information, randomness
KVMS_SYSCALL(getpid); KVMS_SYSCALL(gettid); KVMS_SYSCALL(getppid); KVMS_SYSCALL(getuid); KVMS_SYSCALL(geteuid);
KVMS_SYSCALL(getgid); KVMS_SYSCALL(getegid); KVMS_SYSCALL(getpgrp); KVMS_SYSCALL(getpgid); KVMS_SYSCALL(getsid);
KVMS_SYSCALL(setpgid); KVMS_SYSCALL(setsid); KVMS_SYSCALL(getgroups); KVMS_SYSCALL(getresuid); KVMS_SYSCALL(getresgid);
KVMS_SYSCALL(uname); KVMS_SYSCALL(sethostname); KVMS_SYSCALL(setdomainname); KVMS_SYSCALL(sysinfo); KVMS_SYSCALL(getrandom); KVMS_SYSCALL(prlimit64);
KVMS_SYSCALL(getrlimit); KVMS_SYSCALL(setrlimit); KVMS_SYSCALL(getrusage); KVMS_SYSCALL(sched_getaffinity);
KVMS_SYSCALL(sched_setaffinity); KVMS_SYSCALL(sched_yield); KVMS_SYSCALL(getpriority); KVMS_SYSCALL(prctl);
KVMS_SYSCALL(getcpu); KVMS_SYSCALL(sched_getparam); KVMS_SYSCALL(sched_getscheduler);
KVMS_SYSCALL(sched_setscheduler); KVMS_SYSCALL(sched_get_priority_max); KVMS_SYSCALL(sched_get_priority_min);
KVMS_SYSCALL(setpriority); KVMS_SYSCALL(setuid); KVMS_SYSCALL(setgid); KVMS_SYSCALL(setreuid);
KVMS_SYSCALL(setregid); KVMS_SYSCALL(setresuid); KVMS_SYSCALL(setresgid); KVMS_SYSCALL(setgroups);
KVMS_SYSCALL(capget); KVMS_SYSCALL(capset); KVMS_SYSCALL(getitimer); KVMS_SYSCALL(alarm); KVMS_SYSCALL(pause); KVMS_SYSCALL(setitimer);
// thread.cpp: process and thread lifetime
KVMS_SYSCALL(exit); KVMS_SYSCALL(exit_group); KVMS_SYSCALL(arch_prctl); KVMS_SYSCALL(set_tid_address);
KVMS_SYSCALL(set_robust_list); KVMS_SYSCALL(get_robust_list); KVMS_SYSCALL(rseq);
KVMS_SYSCALL(fork); KVMS_SYSCALL(vfork); KVMS_SYSCALL(clone); KVMS_SYSCALL(clone3); KVMS_SYSCALL(execve);
KVMS_SYSCALL(execveat); KVMS_SYSCALL(wait4); KVMS_SYSCALL(waitid);
// futex.cpp: futexes and memory barriers between threads
KVMS_SYSCALL(futex); KVMS_SYSCALL(membarrier);
// time.cpp: clocks and sleeping
KVMS_SYSCALL(clock_gettime); KVMS_SYSCALL(clock_getres); KVMS_SYSCALL(gettimeofday); KVMS_SYSCALL(time);
KVMS_SYSCALL(nanosleep); KVMS_SYSCALL(clock_nanosleep); KVMS_SYSCALL(times);
// signal.cpp: dispositions and masks (recorded; delivery comes later)
KVMS_SYSCALL(rt_sigaction); KVMS_SYSCALL(rt_sigprocmask); KVMS_SYSCALL(sigaltstack); KVMS_SYSCALL(kill);
KVMS_SYSCALL(tgkill); KVMS_SYSCALL(tkill); KVMS_SYSCALL(rt_sigpending); KVMS_SYSCALL(rt_sigreturn);
KVMS_SYSCALL(rt_sigqueueinfo); KVMS_SYSCALL(rt_tgsigqueueinfo); KVMS_SYSCALL(rt_sigtimedwait);
KVMS_SYSCALL(rt_sigsuspend); KVMS_SYSCALL(flock); KVMS_SYSCALL(mknod); KVMS_SYSCALL(mknodat);
// signalfd.cpp
KVMS_SYSCALL(signalfd); KVMS_SYSCALL(signalfd4);
// posix_timer.cpp
KVMS_SYSCALL(timer_create); KVMS_SYSCALL(timer_settime); KVMS_SYSCALL(timer_gettime);
KVMS_SYSCALL(timer_getoverrun); KVMS_SYSCALL(timer_delete);

// socket.cpp: sockets (TCP/UDP over IPv4/IPv6, Unix), checked against the network policy
KVMS_SYSCALL(socket); KVMS_SYSCALL(socketpair); KVMS_SYSCALL(bind); KVMS_SYSCALL(listen); KVMS_SYSCALL(accept);
KVMS_SYSCALL(accept4); KVMS_SYSCALL(connect); KVMS_SYSCALL(shutdown); KVMS_SYSCALL(getsockname);
KVMS_SYSCALL(getpeername); KVMS_SYSCALL(setsockopt); KVMS_SYSCALL(getsockopt); KVMS_SYSCALL(sendto);
KVMS_SYSCALL(recvfrom); KVMS_SYSCALL(sendmsg); KVMS_SYSCALL(recvmsg); KVMS_SYSCALL(sendmmsg);
KVMS_SYSCALL(recvmmsg);
// epoll.cpp: readiness (epoll, poll, select) and the fds that exist to be waited on
KVMS_SYSCALL(epoll_create); KVMS_SYSCALL(epoll_create1); KVMS_SYSCALL(epoll_ctl); KVMS_SYSCALL(epoll_wait);
KVMS_SYSCALL(epoll_pwait); KVMS_SYSCALL(epoll_pwait2); KVMS_SYSCALL(poll); KVMS_SYSCALL(ppoll);
KVMS_SYSCALL(select); KVMS_SYSCALL(pselect6); KVMS_SYSCALL(eventfd); KVMS_SYSCALL(eventfd2);
KVMS_SYSCALL(timerfd_create); KVMS_SYSCALL(timerfd_settime); KVMS_SYSCALL(timerfd_gettime);

// Helpers shared by the families.
int64_t errno_result(long host_rc);  // host syscall wrapper result -> value or -errno
// Wakes up to count waiters on the futex at addr whose bitset intersects bitset; how many woke.
// Wakes up to count (at least one, as Linux) of p's waiters on addr whose bitset meets bitset.
// kind: only waiters that waited as a shared (or as a private) futex; unset: either (the wakes
// kvmserver makes itself: a thread's clear_child_tid, robust lists).
int64_t futex_wake(Process& p, uint64_t addr, uint64_t count, uint32_t bitset, std::optional<bool> shared = std::nullopt);
// A thread's exit, as Linux's exit_robust_list: the locks on its robust list (set_robust_list) that
// it still holds are marked FUTEX_OWNER_DIED and a waiter is woken. The list is guest memory.
void release_robust_futexes(Process& p, uint64_t head_addr, int tid);

}  // namespace kvms::linux

namespace kvms::linux {
// time.cpp: keeps the vDSO's clock page in step with the host's clocks.
void refresh_clock_page(Process& p);
void maybe_refresh_clock_page(Process& p);
// The guest's clock `clock` now, in ns: as its vDSO reads it for the clocks that has, else the
// host's (plus Process::Clock::ahead_ns for the monotonic ones).
int64_t guest_now_ns(Process& p, int64_t clock);
// Restarts the guest's monotonic clocks at `monotonic_ns` (its wall clock stays the host's) and
// rewrites the clock page: a worker's request starts where its template paused.
void start_clock_at(Process& p, uint64_t monotonic_ns);
// How far the guest's clock `clock` is ahead of the host's (0 for the wall clock), and an absolute
// time the guest gave on it as the host's clock reads it (saturated, never negative).
int64_t clock_ahead_ns(const Process& p, int64_t clock);
timespec host_time(const Process& p, int64_t clock, const timespec& guest_time);
}  // namespace kvms::linux

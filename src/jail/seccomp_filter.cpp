#include "jail/seccomp_filter.hpp"

#include <fcntl.h>
#include <linux/audit.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "kvm/vm.hpp"
#include "linux/socket_control.hpp"

// AddressSanitizer (clang says so through __has_feature, gcc through __SANITIZE_ADDRESS__).
#if defined(__SANITIZE_ADDRESS__)
#define KVMS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVMS_ASAN 1
#endif
#endif
#ifndef KVMS_ASAN
#define KVMS_ASAN 0
#endif

namespace kvms::jail {
namespace {

// Why SECCOMP_RET_TRAP and not SECCOMP_RET_KILL_PROCESS: both stop the call before it runs, but
// KILL_PROCESS leaves the user with a bare "Bad system call" (or nothing, under a supervisor) and
// nobody knows which call or which thread. TRAP delivers SIGSYS to the calling thread, whose handler
// below writes one line naming both and ends the process with exit_group, in every build. It is no
// weaker: the denied call never executes; the handler makes only calls every filter allows (write,
// prctl(PR_GET_NAME), exit_group); SIGSYS is forced, so a thread that blocked it is killed by the
// default action instead (no core: RLIMIT_CORE is 0); and guest code never runs on a host thread
// (guest signal handlers are emulated), so a guest cannot install or reach a SIGSYS handler.

constexpr int kSysSeccomp = 1;  // si_code of a SIGSYS from seccomp (SYS_SECCOMP in <asm-generic/siginfo.h>)
// <linux/timerfd.h> clashes with glibc's fcntl definitions.
constexpr unsigned long kTimerfdSetTicks = _IOW('T', 0, uint64_t);

// Syscall names for the report, resolved by libseccomp before any filter exists (the handler must
// not allocate).
constexpr int kNamedSyscalls = 512;
char g_names[kNamedSyscalls][32];
std::once_flag g_reporter_once;

// Async-signal-safe appending to a fixed buffer.
struct Line {
  char text[256];
  size_t len = 0;
  void add(const char* s) {
    while (*s && len < sizeof text - 1) text[len++] = *s++;
  }
  void add(long v) {
    char digits[24];
    int n = 0;
    unsigned long u = v < 0 ? 0UL - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
    do {
      digits[n++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u);
    if (v < 0) add("-");
    while (n > 0 && len < sizeof text - 1) text[len++] = digits[--n];
  }
};

void report_denied_call(int sig, siginfo_t* info, void*) {
  if (info->si_code != kSysSeccomp) {
    // Someone sent SIGSYS: what the default action would do (no core: RLIMIT_CORE is 0).
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
  }
  const int nr = info->si_syscall;
  Line line;
  line.add("kvmserver: seccomp: denied host system call ");
  line.add(info->si_arch == AUDIT_ARCH_X86_64 && nr >= 0 && nr < kNamedSyscalls && g_names[nr][0] ? g_names[nr] : "?");
  line.add(" (");
  line.add(static_cast<long>(nr));
  line.add(") in thread \"");
  char thread[17] = {};
  if (prctl(PR_GET_NAME, thread) != 0) std::strcpy(thread, "?");
  line.add(thread);
  line.add("\": stopping\n");
  (void)!write(STDERR_FILENO, line.text, line.len);
  _exit(kDeniedCallStatus);
}

void install_reporter() {
  std::call_once(g_reporter_once, [] {
    for (int nr = 0; nr < kNamedSyscalls; ++nr) {
      char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_X86_64, nr);
      if (!name) continue;
      std::strncpy(g_names[nr], name, sizeof g_names[nr] - 1);
      std::free(name);
    }
  });
  struct sigaction sa{};
  sa.sa_sigaction = report_denied_call;
  sa.sa_flags = SA_SIGINFO;
  sigfillset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, nullptr) != 0) throw std::runtime_error(std::string("sigaction(SIGSYS): ") + strerror(errno));
}

// One allow rule: the call, and conditions on its arguments that must all hold.
struct Rule {
  const char* name;
  std::vector<scmp_arg_cmp> args;
};

scmp_arg_cmp arg_is(unsigned arg, uint64_t value) { return {arg, SCMP_CMP_EQ, value, 0}; }
// The bits of `mask` in the argument equal `value`.
scmp_arg_cmp arg_bits(unsigned arg, uint64_t mask, uint64_t value) { return {arg, SCMP_CMP_MASKED_EQ, mask, value}; }

void add_plain(std::vector<Rule>& rules, std::initializer_list<const char*> names) {
  for (const char* n : names) rules.push_back({n, {}});
}

// One rule per allowed value of argument `arg` (libseccomp ORs rules of one call).
void add_values(std::vector<Rule>& rules, const char* name, unsigned arg, std::initializer_list<uint64_t> values,
                uint64_t mask = ~uint64_t(0)) {
  for (uint64_t v : values) rules.push_back({name, {arg_bits(arg, mask, v)}});
}

// What every filter allows: memory management (never executable), futexes, signal returns, the
// clock, leaving, and what the SIGSYS report itself needs.
void add_basics(std::vector<Rule>& rules) {
  add_plain(rules, {"brk", "munmap", "mremap", "madvise", "futex", "rt_sigreturn", "rt_sigprocmask", "rt_sigaction",
                    "restart_syscall",
                    "clock_gettime", "clock_nanosleep", "nanosleep", "sched_yield", "getpid", "gettid", "exit",
                    "exit_group"});
  rules.push_back({"mmap", {arg_bits(2, PROT_EXEC, 0)}});
  rules.push_back({"mprotect", {arg_bits(2, PROT_EXEC, 0)}});
  add_values(rules, "prctl", 0, {PR_GET_NAME});
  rules.push_back({"tgkill", {arg_is(0, static_cast<uint64_t>(getpid()))}});
  // Adding a narrower filter on top (libseccomp sets no_new_privs again first): only ever restricts.
  add_values(rules, "prctl", 0, {PR_SET_NO_NEW_PRIVS});
  add_values(rules, "seccomp", 0, {SECCOMP_SET_MODE_FILTER});
#if KVMS_ASAN
  // The sanitizer runtime of the fuzzing build (tests/fuzz/build.sh) calls prctl at exit.
  add_plain(rules, {"prctl"});
#endif
}

std::vector<Rule> process_rules() {
  std::vector<Rule> r;
  add_basics(r);
  // Files and fds: the emulation of the guest's file system calls, kvmserver's own files
  // (/proc/self/fd reopening, private /tmp copies), memfds for guest memory and made-up /proc files.
  add_plain(r, {"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
                "open", "openat", "openat2", "close", "close_range", "lseek", "fstat", "stat", "lstat", "newfstatat",
                "statx", "statfs", "fstatfs", "dup", "dup2", "dup3", "pipe2", "getdents64", "readlink", "readlinkat",
                "access", "faccessat", "faccessat2", "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename",
                "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchownat", "fchown",
                "utimensat", "ftruncate", "fallocate", "fsync", "fdatasync", "sendfile", "copy_file_range", "getcwd", "flock", "mknodat",
                "memfd_create", "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime", "epoll_create1",
                "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "mincore",
                // tee: also a snapshot's copy of the bytes waiting in a pipe without taking them
                "splice", "tee", "vmsplice"});
  add_values(r, "fcntl", 1,
             {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK,
              F_OFD_SETLK, F_OFD_SETLKW, F_GETPIPE_SZ, F_SETPIPE_SZ, F_ADD_SEALS, F_GET_SEALS});
  // ioctl: KVM, and what the emulation forwards to host fds (src/linux/file.cpp: FIONREAD, terminal
  // queries; epoll.cpp: a cloned timerfd's ticks; isatty() is TCGETS; socket_ioctl.cpp: queue sizes,
  // timestamps and questions about the loopback interface, never a change). The request is an
  // unsigned int to the kernel: only the low 32 bits are compared, as the kernel reads them.
  // libseccomp checks a call's rules last-added first: KVM_RUN, by far the most frequent, goes last.
  add_values(r, "ioctl", 1, {FIONREAD, TCGETS, TIOCGWINSZ, TIOCGPGRP, kTimerfdSetTicks}, 0xffffffffu);
  for (uint32_t request : linux::socket_ioctls_forwarded()) r.push_back({"ioctl", {arg_bits(1, 0xffffffffu, request)}});
  const auto& kvm_requests = kvm::Kvm::ioctls_used();
  for (auto it = kvm_requests.rbegin(); it != kvm_requests.rend(); ++it)
    r.push_back({"ioctl", {arg_bits(1, 0xffffffffu, *it)}});
  // Network: the guest's sockets are host sockets; warm-up and metrics connect and listen.
  add_values(r, "socket", 0, {AF_UNIX, AF_INET, AF_INET6});
  add_values(r, "socketpair", 0, {AF_UNIX});
  add_plain(r, {"bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "getsockopt",
                "setsockopt", "shutdown", "sendto", "recvfrom", "sendmsg", "recvmsg"});
  // Threads (guest threads and processes are host threads), signals (vCPU kicks), timers (request
  // deadlines), identity and limits (read only).
  r.push_back({"clone", {arg_bits(0, CLONE_THREAD, CLONE_THREAD)}});
  add_plain(r, {"set_robust_list", "rseq", "rt_sigtimedwait", "sigaltstack", "sched_getaffinity",
                "clock_getres", "gettimeofday", "timer_create", "timer_settime", "timer_gettime", "timer_delete",
                "getrandom", "getuid", "geteuid", "getgid", "getegid", "getpgrp"});
  add_values(r, "getpgid", 0, {0});
  add_values(r, "prctl", 0, {PR_SET_NAME});
  add_values(r, "prlimit64", 2, {0});  // new limit NULL: reading
  return r;
}

// Server mode's main thread once the workers run: it waits for signals, prints statistics, stops and
// joins the workers and frees what they held (guest memory, VMs, fds, private /tmp directories).
std::vector<Rule> signal_thread_rules() {
  std::vector<Rule> r;
  add_basics(r);
  add_plain(r, {"rt_sigtimedwait", "write", "writev", "fstat", "newfstatat", "lstat", "close",
                "shutdown", "timer_delete", "getdents64", "unlinkat", "unlink", "rmdir"});
  // Directories only (removing private /tmp trees: fdopendir checks the fd's mode with F_GETFL).
  r.push_back({"openat", {arg_bits(2, O_DIRECTORY, O_DIRECTORY)}});
  add_values(r, "fcntl", 1, {F_GETFL, F_GETFD, F_SETFD});
  return r;
}

// --metrics: one IPv4 listener, a request read and a text response written per connection.
std::vector<Rule> metrics_thread_rules() {
  std::vector<Rule> r;
  add_basics(r);
  add_values(r, "socket", 0, {AF_INET});
  add_plain(r, {"setsockopt", "bind", "listen", "accept4", "recvfrom", "sendto", "close", "write", "fstat",
                "newfstatat"});
  return r;
}

// The jail's outer processes: wait for signals and the child, forward, replicate its end.
std::vector<Rule> supervisor_rules(pid_t child) {
  std::vector<Rule> r;
  add_plain(r, {"rt_sigtimedwait", "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "restart_syscall", "wait4",
                "getpid", "gettid", "exit", "exit_group"});
  r.push_back({"kill", {arg_is(0, static_cast<uint64_t>(child))}});
  r.push_back({"tgkill", {arg_is(0, static_cast<uint64_t>(getpid()))}});
  add_values(r, "write", 0, {STDERR_FILENO});
  add_values(r, "prctl", 0, {PR_GET_NAME});
  return r;
}

std::vector<std::string> split_names(const char* list) {
  std::vector<std::string> out;
  std::string s = list;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string name = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!name.empty()) out.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

struct Context {
  scmp_filter_ctx ctx;
  explicit Context(uint32_t deny) : ctx(seccomp_init(deny)) {
    if (!ctx) throw std::runtime_error("seccomp_init failed");
  }
  ~Context() { seccomp_release(ctx); }
};

void check(int rc, const std::string& what) {
  if (rc < 0) throw std::runtime_error(what + ": " + strerror(-rc));
}

}  // namespace

FilterOptions filter_options_from_environment() {
  FilterOptions o;
  if (const char* mode = std::getenv("KVMS_SECCOMP")) {
    if (std::strcmp(mode, "log") == 0) {
      o.log_only = true;
    } else if (*mode) {
      throw std::runtime_error(std::string("KVMS_SECCOMP=") + mode + ": expected 'log'");
    }
  }
  if (const char* deny = std::getenv("KVMS_SECCOMP_DENY")) {
    o.denied = split_names(deny);
    for (const auto& name : o.denied)
      if (seccomp_syscall_resolve_name(name.c_str()) == __NR_SCMP_ERROR)
        throw std::runtime_error("KVMS_SECCOMP_DENY: unknown system call '" + name + "'");
  }
  return o;
}

void install_filter(FilterRole role, const FilterOptions& options) {
  install_reporter();
  const uint32_t deny = options.log_only ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
  Context c(deny);
  check(seccomp_attr_set(c.ctx, SCMP_FLTATR_ACT_BADARCH, deny), "seccomp: bad-architecture action");
  // A binary tree over the syscall numbers: the cost of a call does not grow with the list.
  check(seccomp_attr_set(c.ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp: optimize");
  if (role == FilterRole::Process) check(seccomp_attr_set(c.ctx, SCMP_FLTATR_CTL_TSYNC, 1), "seccomp: thread sync");

  std::vector<Rule> rules;
  switch (role) {
    case FilterRole::Process: rules = process_rules(); break;
    case FilterRole::SignalThread: rules = signal_thread_rules(); break;
    case FilterRole::MetricsThread: rules = metrics_thread_rules(); break;
    case FilterRole::Supervisor: rules = supervisor_rules(options.child); break;
  }
  for (const Rule& rule : rules) {
    if (std::find(options.denied.begin(), options.denied.end(), rule.name) != options.denied.end()) continue;
    const int nr = seccomp_syscall_resolve_name(rule.name);
    if (nr == __NR_SCMP_ERROR) continue;  // a call this libseccomp does not know: nobody makes it
    check(seccomp_rule_add_array(c.ctx, SCMP_ACT_ALLOW, nr, static_cast<unsigned>(rule.args.size()),
                                 rule.args.empty() ? nullptr : rule.args.data()),
          std::string("seccomp: rule for ") + rule.name);
  }
  // glibc tries clone3 first and falls back to clone, whose flags the filter can check.
  if (role == FilterRole::Process && std::find(options.denied.begin(), options.denied.end(), "clone3") == options.denied.end())
    check(seccomp_rule_add(c.ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "seccomp: rule for clone3");
  // fchmodat2 (Linux 6.6; libseccomp 2.5.4 has no name for it): file_meta.cpp tries it first for a
  // chmod that follows no symlink and falls back on ENOSYS (found by the guest fuzzer: a guest
  // chmod stopped kvmserver).
  constexpr int kFchmodat2 = 452;
  if (role == FilterRole::Process && std::find(options.denied.begin(), options.denied.end(), "fchmodat2") == options.denied.end())
    check(seccomp_rule_add(c.ctx, SCMP_ACT_ERRNO(ENOSYS), kFchmodat2, 0), "seccomp: rule for fchmodat2");
  check(seccomp_load(c.ctx), "seccomp: loading the filter");
}

}  // namespace kvms::jail

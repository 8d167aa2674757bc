// The host seccomp filters (src/jail/seccomp_filter.cpp), natively: each case installs a real filter
// in a forked child, checks that what kvmserver needs still works and that a call outside the list
// stops the process with the one-line report and exit status 125.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "child_process.hpp"
#include "jail/seccomp_filter.hpp"

namespace kvms::jail {
namespace {

using test::ChildResult;
using test::run_in_child;

std::string denied_line(const char* call, int nr, const char* thread = "filter-test") {
  return std::string("kvmserver: seccomp: denied host system call ") + call + " (" + std::to_string(nr) +
         ") in thread \"" + thread + "\": stopping\n";
}

// Installs `role`'s filter (Process first, as kvmserver stacks them) in a child named
// "filter-test", then runs body.
ChildResult under_filter(FilterRole role, const std::function<int()>& body, FilterOptions options = {}) {
  return run_in_child([&] {
    prctl(PR_SET_NAME, "filter-test", 0, 0, 0);
    try {
      if (role != FilterRole::Supervisor) install_filter(FilterRole::Process, options);
      if (role != FilterRole::Process) install_filter(role, options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "install: %s\n", e.what());
      return 99;
    }
    return body();
  });
}

TEST(SeccompFilter, AllowsWhatKvmserverDoes) {
  ChildResult r = under_filter(FilterRole::Process, [] {
    if (getpid() <= 0) return 1;
    const int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    char buf[16];
    if (fd < 0 || read(fd, buf, sizeof buf) != sizeof buf) return 2;
    // KVM's requests are allowed (on /dev/null the kernel answers ENOTTY).
    if (ioctl(fd, KVM_RUN, 0) != -1 || errno != ENOTTY) return 3;
    if (ioctl(fd, KVM_GET_REGS, 0) != -1 || errno != ENOTTY) return 4;
    int n = 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0 || ioctl(fds[0], FIONREAD, &n) != 0) return 5;
    // The socket requests the emulation forwards (socket_ioctl.cpp): the loopback's index.
    const int u = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    if (u < 0 || ioctl(u, SIOCGIFINDEX, &ifr) != 0 || ifr.ifr_ifindex <= 0) return 11;
    // Threads: glibc's clone3 gets ENOSYS and falls back to clone with CLONE_THREAD.
    int from_thread = 0;
    std::thread([&] { from_thread = static_cast<int>(syscall(SYS_gettid)); }).join();
    if (from_thread <= 0) return 6;
    if (syscall(SYS_clone3, nullptr, 0) != -1 || errno != ENOSYS) return 7;
    // A chmod that follows no symlink tries fchmodat2 first: ENOSYS, then the fallback.
    if (syscall(452 /* fchmodat2 */, AT_FDCWD, "/nonexistent", 0600, 0) != -1 || errno != ENOSYS) return 10;
    void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p, 4096, PROT_READ) != 0) return 8;
    const int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 9;
    return 0;
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(r.stderr_text, "");
}

TEST(SeccompFilter, DeniedCallStopsWithOneLine) {
  ChildResult r = under_filter(FilterRole::Process, [] {
    syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
    return 0;  // not reached
  });
  EXPECT_TRUE(r.exited(kDeniedCallStatus)) << r.describe();
  EXPECT_EQ(r.stderr_text, denied_line("ptrace", SYS_ptrace));
}

TEST(SeccompFilter, RestrictsArguments) {
  struct Case {
    const char* call;
    int nr;
    std::function<void()> make;
  };
  const Case cases[] = {
      {"mmap", SYS_mmap, [] { mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); }},
      {"mprotect", SYS_mprotect,
       [] {
         void* p = mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         mprotect(p, 4096, PROT_READ | PROT_EXEC);
       }},
      {"socket", SYS_socket, [] { socket(AF_NETLINK, SOCK_RAW, 0); }},
      {"socket", SYS_socket, [] { socket(AF_PACKET, SOCK_RAW, 0); }},
      {"clone", SYS_clone, [] { syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }},  // a host fork
      {"ioctl", SYS_ioctl, [] { char c = 'x'; ioctl(0, TIOCSTI, &c); }},   // typing into a terminal
      {"fcntl", SYS_fcntl, [] { fcntl(0, F_SETOWN, getpid()); }},
      {"prlimit64", SYS_prlimit64, [] { rlimit r{1, 1}; prlimit(0, RLIMIT_NOFILE, &r, nullptr); }},
      {"tgkill", SYS_tgkill, [] { syscall(SYS_tgkill, 1, 1, 0); }},
      {"prctl", SYS_prctl, [] { prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); }},
      {"execve", SYS_execve, [] { execl("/bin/true", "true", nullptr); }},
      {"mount", SYS_mount, [] { mount("none", "/", nullptr, MS_REMOUNT, nullptr); }},
      {"unshare", SYS_unshare, [] { unshare(CLONE_NEWUSER); }},
      {"uname", SYS_uname, [] { utsname u; uname(&u); }},
  };
  for (const Case& c : cases) {
    ChildResult r = under_filter(FilterRole::Process, [&] {
      c.make();
      return 0;
    });
    EXPECT_TRUE(r.exited(kDeniedCallStatus)) << c.call << ": " << r.describe();
    EXPECT_EQ(r.stderr_text, denied_line(c.call, c.nr)) << c.call;
  }
}

TEST(SeccompFilter, ThreadFiltersAreNarrower) {
  // The signal thread cannot open sockets or files for reading, the metrics thread cannot reach KVM.
  ChildResult s = under_filter(FilterRole::SignalThread, [] {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return 1;  // still under Process's list, but not SignalThread's
    return 0;
  });
  EXPECT_TRUE(s.exited(kDeniedCallStatus)) << s.describe();
  EXPECT_EQ(s.stderr_text, denied_line("pipe2", SYS_pipe2));
  // What it does: wait for a signal, write, and remove private /tmp trees.
  char tree[] = "/tmp/kvms-filter-test-XXXXXX";
  ASSERT_NE(mkdtemp(tree), nullptr);
  std::filesystem::create_directories(std::string(tree) + "/a/b");
  std::ofstream(std::string(tree) + "/a/b/file") << "x";
  ChildResult ok = under_filter(FilterRole::SignalThread, [&] {
    std::error_code ec;
    if (std::filesystem::remove_all(tree, ec) != 4 || ec) return 3;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    raise(SIGUSR1);
    int sig = 0;
    if (sigwait(&set, &sig) != 0 || sig != SIGUSR1) return 1;
    if (write(STDERR_FILENO, "", 0) != 0) return 2;
    return 0;
  });
  EXPECT_TRUE(ok.exited(0)) << ok.describe();
  EXPECT_FALSE(std::filesystem::exists(tree));
  std::filesystem::remove_all(tree);
  ChildResult m = under_filter(FilterRole::MetricsThread, [] {
    const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 1;
    ioctl(s, KVM_RUN, 0);
    return 0;
  });
  EXPECT_TRUE(m.exited(kDeniedCallStatus)) << m.describe();
  EXPECT_EQ(m.stderr_text, denied_line("ioctl", SYS_ioctl));
}

TEST(SeccompFilter, SupervisorSignalsOnlyItsChild) {
  FilterOptions options;
  options.child = getpid();  // the test process stands in for the child: kill(child, 0) is allowed
  ChildResult r = under_filter(
      FilterRole::Supervisor,
      [parent = options.child] {
        if (kill(parent, 0) != 0) return 1;
        kill(1, 0);
        return 0;
      },
      options);
  EXPECT_TRUE(r.exited(kDeniedCallStatus)) << r.describe();
  EXPECT_EQ(r.stderr_text, denied_line("kill", SYS_kill));
}

TEST(SeccompFilter, LogOnlyLetsCallsThrough) {
  FilterOptions options;
  options.log_only = true;
  ChildResult r = under_filter(
      FilterRole::Process,
      [] {
        utsname u;
        return uname(&u) == 0 ? 0 : 1;
      },
      options);
  EXPECT_TRUE(r.exited(0)) << r.describe();
}

TEST(SeccompFilter, DeniedForTests) {
  FilterOptions options;
  options.denied = {"getrandom"};
  ChildResult r = under_filter(
      FilterRole::Process,
      [] {
        char b[4];
        getrandom(b, sizeof b, 0);
        return 0;
      },
      options);
  EXPECT_TRUE(r.exited(kDeniedCallStatus)) << r.describe();
  EXPECT_EQ(r.stderr_text, denied_line("getrandom", SYS_getrandom));
}

TEST(SeccompFilter, OptionsFromEnvironment) {
  ChildResult r = run_in_child([] {
    setenv("KVMS_SECCOMP", "log", 1);
    setenv("KVMS_SECCOMP_DENY", "getrandom,fsync", 1);
    FilterOptions o = filter_options_from_environment();
    if (!o.log_only || o.denied != std::vector<std::string>{"getrandom", "fsync"}) return 1;
    setenv("KVMS_SECCOMP_DENY", "no_such_call", 1);
    try {
      filter_options_from_environment();
      return 2;
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()) != "KVMS_SECCOMP_DENY: unknown system call 'no_such_call'") return 3;
    }
    unsetenv("KVMS_SECCOMP_DENY");
    setenv("KVMS_SECCOMP", "loud", 1);
    try {
      filter_options_from_environment();
      return 4;
    } catch (const std::runtime_error&) {
    }
    return 0;
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
}

}  // namespace
}  // namespace kvms::jail

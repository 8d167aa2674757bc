// The jail (src/jail/jail.cpp), natively: each case forks a child that enters a jail and checks,
// from inside, what it can see. No KVM needed; skipped where the kernel refuses user namespaces.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "child_process.hpp"
#include "jail/host_process.hpp"
#include "jail/jail.hpp"

namespace kvms::jail {
namespace {

namespace fs = std::filesystem;
using test::ChildResult;
using test::run_in_child;

constexpr long kTmpfsMagic = 0x01021994;

bool user_namespaces_work() {
  return run_in_child([] { return unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID) == 0 ? 0 : 1; }).exited(0);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return in ? ss.str() : "";
}

bool exists(const std::string& path) {
  struct stat st{};
  return lstat(path.c_str(), &st) == 0;
}

// "Field:\tvalue" of /proc/self/status.
std::string status_field(const std::string& name) {
  std::istringstream in(read_file("/proc/self/status"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + ":", 0) == 0) return line.substr(line.find_first_not_of(" \t", name.size() + 1));
  return "";
}

// Enters the jail in a child; `check` runs inside and returns a message for what is wrong ("" =
// all good), printed to stderr.
ChildResult in_jail(const JailSpec& spec, const std::function<std::string()>& check) {
  return run_in_child([&] {
    try {
      harden_host_process(open_files_limit(1, linux::Limits{}));  // as kvmserver's main does first (not dumpable...)
      enter(spec, std::nullopt);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "enter: %s\n", e.what());
      return 99;
    }
    const std::string problem = check();
    std::fputs(problem.c_str(), stderr);
    return problem.empty() ? 0 : 1;
  });
}

class Jail : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!user_namespaces_work()) GTEST_SKIP() << "the kernel refuses user namespaces here";
    char tmpl[] = "/tmp/kvms-jail-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/granted/sub");
    std::ofstream(dir_ + "/granted/file.txt") << "granted\n";
    std::ofstream(dir_ + "/granted/sub/deep.txt") << "deep\n";
    std::ofstream(dir_ + "/secret.txt") << "secret\n";
    fs::create_directories(dir_ + "/out");
    fs::create_directories(dir_ + "/real");
    std::ofstream(dir_ + "/real/lib.txt") << "lib\n";
    fs::create_directory_symlink("real", dir_ + "/link");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(Jail, EmptyRootHoldsOnlyTheBinds) {
  JailSpec spec;
  spec.binds = {{dir_ + "/granted", false}, {dir_ + "/out/new.txt", true}, {dir_ + "/link/lib.txt", false},
                {"/dev/null", false}, {dir_ + "/missing/x", false}};
  spec.scratch_dirs = {"/tmp"};
  spec.cwd = dir_ + "/granted/sub";
  spec.new_network = true;
  const std::string d = dir_;
  ChildResult r = in_jail(spec, [d]() -> std::string {
    if (read_file(d + "/granted/file.txt") != "granted\n") return "granted file not readable\n";
    if (read_file(d + "/granted/sub/deep.txt") != "deep\n") return "granted subtree not readable\n";
    if (open((d + "/granted/file.txt").c_str(), O_WRONLY) >= 0 || errno != EROFS) return "read-only bind writable\n";
    if (exists(d + "/secret.txt")) return "an ungranted file is there\n";
    if (exists("/etc/passwd") || exists("/home") || exists("/usr") || exists("/bin")) return "host tree visible\n";
    if (exists(d + "/missing")) return "a missing read grant made something\n";
    // A writable grant of a file that does not exist yet: its directory, where it can be created.
    std::ofstream(d + "/out/new.txt") << "written\n";
    if (read_file(d + "/out/new.txt") != "written\n") return "cannot create the granted file\n";
    // The symlink on the way is there, as on the host.
    char target[64] = {};
    if (readlink((d + "/link").c_str(), target, sizeof target - 1) <= 0 || std::string(target) != "real")
      return "symlink not recreated\n";
    if (read_file(d + "/link/lib.txt") != "lib\n") return "file behind the symlink not readable\n";
    if (exists(d + "/real/other")) return "?\n";
    // Devices: only the one bound.
    if (!exists("/dev/null") || exists("/dev/zero") || exists("/dev/sda")) return "wrong /dev\n";
    const int null = open("/dev/null", O_WRONLY);
    if (null < 0 || write(null, "x", 1) != 1) return "cannot write /dev/null\n";
    // The root itself is read-only.
    if (mkdir("/newdir", 0755) == 0 || errno != EROFS) return "root writable\n";
    // /tmp: a fresh, writable tmpfs.
    struct statfs fsinfo{};
    if (statfs("/tmp", &fsinfo) != 0 || fsinfo.f_type != kTmpfsMagic) return "/tmp is not a tmpfs\n";
    if (exists(d) && fs::path(d).parent_path() == "/tmp" && fs::directory_iterator("/tmp") == fs::directory_iterator())
      return "/tmp empty although the test dir is bound beneath it\n";
    std::ofstream("/tmp/scratch") << "x";
    if (read_file("/tmp/scratch") != "x") return "/tmp not writable\n";
    // The working directory was kept.
    if (fs::current_path() != d + "/granted/sub") return "cwd is " + fs::current_path().string() + "\n";
    // PID 1 of its own PID namespace, with a /proc of its own and no capabilities.
    if (getpid() != 1) return "pid " + std::to_string(getpid()) + "\n";
    if (fs::directory_iterator("/proc/self/fd") == fs::directory_iterator()) return "no /proc/self/fd\n";
    if (status_field("CapEff") != "0000000000000000" || status_field("CapBnd") != "0000000000000000" ||
        status_field("CapPrm") != "0000000000000000")
      return "capabilities left: " + status_field("CapEff") + " " + status_field("CapBnd") + "\n";
    // A network namespace of its own: only lo.
    if (exists("/proc/self/net/dev") && read_file("/proc/self/net/dev").find("eth") != std::string::npos)
      return "host network visible\n";
    return "";
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
  // Written through the writable bind: on the host.
  EXPECT_EQ(read_file(dir_ + "/out/new.txt"), "written\n");
  // Nothing else leaked out: no mount point files, no scratch files.
  EXPECT_FALSE(exists("/tmp/scratch"));
}

TEST_F(Jail, NamespacesDiffer) {
  JailSpec spec;
  spec.binds = {{dir_, false}};
  std::vector<std::string> outside;
  for (const char* ns : {"user", "mnt", "pid", "ipc", "uts", "net"})
    outside.push_back(fs::read_symlink(std::string("/proc/self/ns/") + ns).string());
  ChildResult r = in_jail(spec, [&]() -> std::string {
    int i = 0;
    for (const char* ns : {"user", "mnt", "pid", "ipc", "uts"})
      if (fs::read_symlink(std::string("/proc/self/ns/") + ns).string() == outside[i++])
        return std::string("same ") + ns + " namespace\n";
    // The network is the host's unless asked otherwise.
    if (fs::read_symlink("/proc/self/ns/net").string() != outside[5]) return "new network namespace\n";
    // The caller's uid and gid, mapped to themselves.
    const std::string map = read_file("/proc/self/uid_map");
    if (map.find(" " + std::to_string(getuid()) + " ") == std::string::npos) return "uid_map: " + map;
    return "";
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
}

TEST_F(Jail, HostRootReadOnlyWithItsOwnDevProcSys) {
  JailSpec spec;
  spec.host_root = JailSpec::HostRoot::ReadOnly;
  spec.binds = {{dir_ + "/out", true}, {"/dev/zero", false}};
  spec.scratch_dirs = {"/tmp"};
  const std::string d = dir_;
  ChildResult r = in_jail(spec, [d]() -> std::string {
    if (read_file(d + "/secret.txt") != "secret\n") return "host file not readable\n";
    if (!exists("/etc/passwd")) return "no /etc/passwd\n";
    struct statvfs etc{};
    if (statvfs("/etc", &etc) != 0 || !(etc.f_flag & ST_RDONLY)) return "host tree writable\n";
    std::ofstream(d + "/out/w.txt") << "w";
    if (read_file(d + "/out/w.txt") != "w") return "writable grant not writable\n";
    if (!exists("/dev/zero") || exists("/dev/null") || exists("/dev/tty")) return "host /dev visible\n";
    if (exists("/sys/kernel") || exists("/sys/class")) return "host /sys visible\n";
    if (getpid() != 1 || !exists("/proc/1/status") || exists("/proc/2")) return "host /proc visible\n";
    // /tmp is the host's (the grant covers it), writable for kvmserver's own directories.
    if (!exists(d)) return "host /tmp hidden\n";
    if (mkdir("/tmp/kvms-jail-scratch", 0700) != 0) return "/tmp not writable\n";
    rmdir("/tmp/kvms-jail-scratch");
    return "";
  });
  EXPECT_TRUE(r.exited(0)) << r.describe();
  EXPECT_EQ(read_file(dir_ + "/out/w.txt"), "w");
}

TEST_F(Jail, StatusAndSignalsPassThrough) {
  JailSpec spec;
  ChildResult exited = in_jail(spec, []() -> std::string { _exit(7); });
  EXPECT_TRUE(exited.exited(7)) << exited.describe();
  // SIGTERM to the outermost process reaches kvmserver proper (PID 1 in the jail, where it would be
  // ignored by default), and the caller sees death by SIGTERM, as without a jail.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  ChildResult signaled = run_in_child(
      [&] {
        close(ready[0]);
        try {
          harden_host_process(open_files_limit(1, linux::Limits{}));
          enter(spec, std::nullopt);
        } catch (const std::exception& e) {
          return 99;
        }
        (void)!write(ready[1], "r", 1);
        for (;;) pause();
      },
      [&](pid_t pid) {
        close(ready[1]);
        char c;
        if (read(ready[0], &c, 1) == 1) kill(pid, SIGTERM);
        close(ready[0]);
      });
  EXPECT_TRUE(signaled.killed_by(SIGTERM)) << signaled.describe();
  // A crash inside stays a crash outside.
  ChildResult crashed = in_jail(spec, []() -> std::string {
    signal(SIGSEGV, SIG_DFL);
    *static_cast<volatile int*>(nullptr) = 1;
    return "not crashed";
  });
  EXPECT_TRUE(crashed.killed_by(SIGSEGV)) << crashed.describe();
}

}  // namespace
}  // namespace kvms::jail

// procfs (src/linux/procfs.cpp): the made-up /proc and /sys files, through the syscall handlers on a
// Process over a real AddressSpace. No KVM needed.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sys/statfs.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <initializer_list>
#include <memory>
#include <regex>
#include <set>
#include <string>

#include "guest_scratch.hpp"
#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/procfs.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kScratch = 0x100000;
constexpr uint64_t kScratchSize = 1 << 20;
constexpr uint64_t kFdcwd = static_cast<uint64_t>(AT_FDCWD);

class Procfs : public ::testing::Test, protected GuestScratch {
 protected:
  void SetUp() override {
    mem_ = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem_);
    ASSERT_EQ(as_->map(kScratch, kScratchSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    ASSERT_EQ(as_->map(0x400000, 0x2000, kvm::kProtRead | kvm::kProtExec, "/usr/bin/prog"), 0);
    ASSERT_EQ(as_->map(0x402000, 0x1000, kvm::kProtRead | kvm::kProtExec, "/usr/bin/prog"), 0);  // merges
    ASSERT_EQ(as_->map(0x600000, 0x1000, kvm::kProtRead | kvm::kProtWrite, "/dev/zero (deleted)"), 0);
    ASSERT_EQ(as_->map(0x700000, 0x3000, kvm::kProtRead | kvm::kProtWrite, "[heap]"), 0);
    proc_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(PolicyConfig{}), ProcessConfig{});
    // The Guest keeps it canonical (/bin is a symlink on merged-/usr systems).
    proc_->exe_path = std::filesystem::canonical("/bin/true");
    std::strcpy(proc_->main_thread().comm, "prog");
    proc_->brk_start = 0x700000;
    proc_->brk_current = 0x703000;
    next_ = kScratch + 0x10000;
    // argv strings as the initial stack holds them
    const char args[] = "prog\0-c\0print(1)";
    ASSERT_TRUE(as_->copy_to_user(kScratch, args, sizeof args));
    proc_->arg_start = kScratch;
    proc_->arg_end = kScratch + sizeof args;
  }

  int64_t open(const std::string& path, int flags = O_RDONLY) {
    return call(sys_openat, {kFdcwd, str(path), uint64_t(flags), 0});
  }
  std::string read_all(int64_t fd) {
    std::string out;
    for (;;) {
      const uint64_t b = alloc(4096);
      const int64_t n = call(sys_read, {uint64_t(fd), b, 4096});
      EXPECT_GE(n, 0);
      if (n <= 0) return out;
      out += peek(b, size_t(n));
    }
  }
  std::string slurp(const std::string& path) {
    const int64_t fd = open(path);
    EXPECT_GE(fd, 0) << path;
    if (fd < 0) return "";
    std::string s = read_all(fd);
    call(sys_close, {uint64_t(fd)});
    return s;
  }
  // The names getdents64 gives for an open directory, read in 4 KiB steps.
  std::set<std::string> list(int64_t dir) {
    std::set<std::string> names;
    const uint64_t b = alloc(4096);
    for (;;) {
      const int64_t n = call(sys_getdents64, {uint64_t(dir), b, 4096});
      EXPECT_GE(n, 0);
      if (n <= 0) break;
      const std::string buf = peek(b, size_t(n));
      for (size_t off = 0; off < buf.size();) {
        uint16_t reclen;
        std::memcpy(&reclen, buf.data() + off + 16, 2);
        names.insert(std::string(buf.data() + off + 19));
        off += reclen;
      }
    }
    return names;
  }
  std::set<std::string> list(const std::string& path) {
    const int64_t dir = open(path, O_RDONLY | O_DIRECTORY);
    EXPECT_GE(dir, 0) << path;
    if (dir < 0) return {};
    auto names = list(dir);
    call(sys_close, {uint64_t(dir)});
    return names;
  }
  int64_t lstat(const std::string& path, struct stat& s, bool follow = false) {
    const uint64_t st = alloc(sizeof(struct stat));
    const int64_t rc = call(follow ? sys_stat : sys_lstat, {str(path), st});
    if (rc == 0) {
      EXPECT_TRUE(as_->read(st, s));
    }
    return rc;
  }
  void use_policy(PolicyConfig c) { proc_->set_policy(std::make_shared<PathPolicy>(std::move(c))); }

  std::variant<std::string, int64_t> readlink(const std::string& path) {
    const uint64_t b = alloc(4096);
    const int64_t n = call(sys_readlink, {str(path), b, 4096});
    if (n < 0) return n;
    return peek(b, size_t(n));
  }

};

TEST_F(Procfs, MapsInLinuxFormat) {
  const std::string maps = slurp("/proc/self/maps");
  // Linux pads the fields to 72 columns, then one space and the name.
  auto named = [](const std::string& fields, const std::string& name) {
    return fields + std::string(72 - fields.size(), ' ') + " " + name + "\n";
  };
  EXPECT_NE(maps.find(named("00400000-00403000 r-xp 00000000 00:00 0 ", "/usr/bin/prog")), std::string::npos) << maps;
  EXPECT_NE(maps.find(named("00600000-00601000 rw-s 00000000 00:00 0 ", "/dev/zero (deleted)")), std::string::npos);
  EXPECT_NE(maps.find(named("00700000-00703000 rw-p 00000000 00:00 0 ", "[heap]")), std::string::npos);
  EXPECT_NE(maps.find("00100000-00200000 rw-p 00000000 00:00 0 \n"), std::string::npos);  // anonymous
  const std::regex line(R"([0-9a-f]{8,}-[0-9a-f]{8,} [r-][w-][x-][ps] [0-9a-f]{8} 00:00 0 ( +\S.*)?)");
  std::istringstream in(maps);
  for (std::string l; std::getline(in, l);) {
    EXPECT_TRUE(std::regex_match(l, line)) << l;
    if (l.size() > 40) {
      EXPECT_NE(l[73], ' ') << l;
    }
  }
  EXPECT_EQ(slurp("/proc/" + std::to_string(proc_->pid) + "/maps"), maps);
  EXPECT_EQ(slurp("/proc/thread-self/maps"), maps);
}

TEST_F(Procfs, FilesAreReadOnlySnapshots) {
  const int64_t fd = open("/proc/self/status");
  ASSERT_GE(fd, 0);
  EXPECT_EQ(call(sys_write, {uint64_t(fd), str("x"), 1}), -EBADF);
  const std::string text = read_all(fd);
  EXPECT_EQ(call(sys_lseek, {uint64_t(fd), 0, SEEK_SET}), 0);
  EXPECT_EQ(read_all(fd), text);
  const uint64_t st = alloc(sizeof(struct stat));
  ASSERT_EQ(call(sys_fstat, {uint64_t(fd), st}), 0);
  struct stat s;
  ASSERT_TRUE(as_->read(st, s));
  EXPECT_TRUE(S_ISREG(s.st_mode));
  // mmap of it works like a file's
  const int64_t addr = call(sys_mmap, {0, 4096, PROT_READ, MAP_PRIVATE, uint64_t(fd), 0});
  ASSERT_GT(addr, 0);
  EXPECT_EQ(peek(uint64_t(addr), 5), "Name:");
  EXPECT_EQ(open("/proc/self/maps", O_WRONLY), -EACCES);
  EXPECT_EQ(open("/proc/self/maps", O_RDWR), -EACCES);
  EXPECT_EQ(open("/proc/self/maps", O_RDONLY | O_DIRECTORY), -ENOTDIR);
  EXPECT_EQ(open("/proc/self/exe", O_WRONLY), -ETXTBSY);
}

TEST_F(Procfs, StatusStatCmdline) {
  const std::string status = slurp("/proc/self/status");
  EXPECT_NE(status.find("Name:\tprog\n"), std::string::npos) << status;
  EXPECT_NE(status.find("Pid:\t" + std::to_string(proc_->pid) + "\n"), std::string::npos);
  EXPECT_NE(status.find("PPid:\t" + std::to_string(proc_->ppid) + "\n"), std::string::npos);
  EXPECT_NE(status.find("Threads:\t1\n"), std::string::npos);
  EXPECT_NE(status.find("Uid:\t1000\t1000\t1000\t1000\n"), std::string::npos);
  EXPECT_NE(status.find("VmRSS:"), std::string::npos);
  const std::string stat = slurp("/proc/self/stat");
  EXPECT_EQ(stat.rfind(std::to_string(proc_->pid) + " (prog) R " + std::to_string(proc_->ppid) + " ", 0), 0u) << stat;
  std::istringstream fields(stat.substr(stat.find(')') + 2));
  int n = 2;
  for (std::string f; fields >> f;) ++n;
  EXPECT_EQ(n, 52);  // Linux's field count
  EXPECT_EQ(slurp("/proc/self/cmdline"), std::string("prog\0-c\0print(1)", 17));
  EXPECT_EQ(slurp("/proc/self/comm"), "prog\n");
  EXPECT_NE(slurp("/proc/self/statm").find(' '), std::string::npos);
}

// The program's path is resolved once, when it is loaded: a guest that may write there and puts a
// symlink in its place (to a file it may not read) gets ELOOP from /proc/self/exe, not that file.
TEST_F(Procfs, ExeIsNeverResolvedAgain) {
  char tmpl[] = "/tmp/kvms-exe-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = std::filesystem::canonical(tmpl);
  { std::ofstream(dir + "/secret") << "secret"; }
  { std::ofstream(dir + "/prog") << "\x7f" "ELF"; }
  proc_->exe_path = dir + "/prog";
  ASSERT_EQ(::unlink((dir + "/prog").c_str()), 0);
  ASSERT_EQ(::symlink((dir + "/secret").c_str(), (dir + "/prog").c_str()), 0);
  EXPECT_EQ(open("/proc/self/exe"), -ELOOP);
  EXPECT_EQ(std::get<std::string>(readlink("/proc/self/exe")), dir + "/prog");
  const uint64_t st = alloc(sizeof(struct stat));
  struct stat s, secret;
  if (call(sys_stat, {str("/proc/self/exe"), st}) == 0) {
    ASSERT_TRUE(as_->read(st, s));
    ASSERT_EQ(::stat((dir + "/secret").c_str(), &secret), 0);
    EXPECT_NE(s.st_ino, secret.st_ino);
  }
  std::filesystem::remove_all(dir);
}

TEST_F(Procfs, Links) {
  const std::string exe = std::filesystem::canonical("/bin/true");
  EXPECT_EQ(std::get<std::string>(readlink("/proc/self/exe")), exe);
  EXPECT_EQ(std::get<std::string>(readlink("/proc/" + std::to_string(proc_->pid) + "/exe")), exe);
  EXPECT_EQ(std::get<std::string>(readlink("/proc/self")), std::to_string(proc_->pid));
  EXPECT_EQ(std::get<std::string>(readlink("/proc/self/cwd")), proc_->cwd);
  const int64_t fd = open("/proc/self/maps");
  ASSERT_GE(fd, 0);
  EXPECT_EQ(std::get<std::string>(readlink("/proc/self/fd/" + std::to_string(fd))),
            "/proc/" + std::to_string(proc_->pid) + "/maps");  // opened through the link, as Linux shows
  EXPECT_EQ(std::get<int64_t>(readlink("/proc/self/fd/99")), -ENOENT);
  EXPECT_EQ(std::get<int64_t>(readlink("/proc/self/maps")), -EINVAL);
  // Another process's files are not made up: they do not exist.
  EXPECT_EQ(std::get<int64_t>(readlink("/proc/1/exe")), -ENOENT);
  EXPECT_EQ(open("/proc/1/maps"), -ENOENT);
  // A short buffer gets a truncated link, as readlink does.
  const uint64_t b = alloc(16);
  EXPECT_EQ(call(sys_readlink, {str("/proc/self/exe"), b, 4}), 4);
  EXPECT_EQ(peek(b, 4), exe.substr(0, 4));
  // stat follows /proc/self/exe to the program, lstat does not.
  const uint64_t st = alloc(sizeof(struct stat));
  struct stat s, host;
  ASSERT_EQ(call(sys_stat, {str("/proc/self/exe"), st}), 0);
  ASSERT_TRUE(as_->read(st, s));
  ASSERT_EQ(::stat("/bin/true", &host), 0);
  EXPECT_EQ(s.st_ino, host.st_ino);
  ASSERT_EQ(call(sys_lstat, {str("/proc/self/exe"), st}), 0);
  ASSERT_TRUE(as_->read(st, s));
  EXPECT_TRUE(S_ISLNK(s.st_mode));
  // the program opens through its link, read-only
  const int64_t exe_fd = open("/proc/self/exe");
  ASSERT_GE(exe_fd, 0);
  EXPECT_EQ(read_all(exe_fd).substr(0, 4), "\x7f" "ELF");
}

TEST_F(Procfs, FdDirectoryLists) {
  const int64_t dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  const std::set<std::string> names = list(dir);
  EXPECT_EQ(names, (std::set<std::string>{".", "..", std::to_string(dir)}));
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), 0, SEEK_SET}), 0);
  EXPECT_EQ(list(dir), names);
  EXPECT_EQ(call(sys_getdents64, {uint64_t(dir), alloc(8), 8}), 0);  // at the end: nothing left
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), 0, SEEK_SET}), 0);
  EXPECT_EQ(call(sys_getdents64, {uint64_t(dir), alloc(8), 8}), -EINVAL);  // too small for one entry
  // Positions are entry indices; one past any int64 is EINVAL (it was signed overflow: UBSan, found
  // by the in-process fuzzer) and leaves the position alone.
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), 2, SEEK_SET}), 2);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), uint64_t(INT64_MAX), SEEK_CUR}), -EINVAL);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), uint64_t(-3), SEEK_CUR}), -EINVAL);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), uint64_t(-1), SEEK_CUR}), 1);
  // generic_file_llseek, as Linux's /proc directories: their size is 0 for SEEK_END.
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), 0, SEEK_END}), 0);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), uint64_t(-1), SEEK_END}), -EINVAL);
  EXPECT_EQ(open("/proc/self/fd", O_WRONLY), -EISDIR);
}

TEST_F(Procfs, FdinfoShowsTheGuestsOffsetAndFlags) {
  const int64_t dir = open("/proc/self/fdinfo", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  EXPECT_EQ(list(dir), (std::set<std::string>{".", "..", std::to_string(dir)}));
  struct stat st{};
  ASSERT_EQ(lstat("/proc/self/fdinfo/" + std::to_string(dir), st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  const std::string text = slurp("/proc/self/fdinfo/" + std::to_string(dir));
  // O_RDONLY | O_DIRECTORY | O_CLOEXEC, in octal as Linux prints it (O_LARGEFILE: Linux adds it on
  // 64-bit; the status flags here are what the guest asked for).
  EXPECT_EQ(text.rfind("pos:\t0\nflags:\t0", 0), 0u) << text;
  EXPECT_NE(text.find("ino:\t"), std::string::npos) << text;
  const std::string flags = text.substr(text.find("flags:\t") + 7, text.find('\n', text.find("flags:")) - text.find("flags:\t") - 7);
  EXPECT_TRUE(std::stoul(flags, nullptr, 8) & O_CLOEXEC) << flags;
  EXPECT_EQ(lstat("/proc/self/fdinfo/999", st), -ENOENT);
  EXPECT_TRUE(list("/proc/self").count("fdinfo"));
}

TEST_F(Procfs, SystemFiles) {
  const std::string meminfo = slurp("/proc/meminfo");
  EXPECT_TRUE(std::regex_search(
      meminfo, std::regex("^MemTotal: +" + std::to_string(proc_->memory_limit() / 1024) + " kB\n")))
      << meminfo;
  EXPECT_NE(slurp("/proc/cpuinfo").find("processor"), std::string::npos);
  const std::string online = slurp("/sys/devices/system/cpu/online");
  EXPECT_TRUE(std::regex_match(online, std::regex("[0-9,-]+\n"))) << online;
  EXPECT_EQ(open("/sys/devices/system/cpu/cpu0/online"), -ENOENT);  // not made up: does not exist
  EXPECT_EQ(slurp("/proc/sys/kernel/pid_max"), "4194304\n");
  EXPECT_EQ(slurp("/proc/sys/fs/pipe-max-size"), "1048576\n");  // what F_SETPIPE_SZ allows
  EXPECT_EQ(open("/proc/sys/kernel/core_pattern"), -ENOENT);
}

TEST_F(Procfs, EnvironAndLimits) {
  const char env[] = "HOME=/home/guest\0LANG=C";
  const uint64_t at = alloc(sizeof env);
  ASSERT_TRUE(as_->copy_to_user(at, env, sizeof env));
  proc_->env_start = at;
  proc_->env_end = at + sizeof env;
  EXPECT_EQ(slurp("/proc/self/environ"), std::string(env, sizeof env));
  EXPECT_EQ(slurp("/proc/thread-self/environ"), std::string(env, sizeof env));
  proc_->env_start = proc_->env_end = 0;  // a program started with no environment
  EXPECT_EQ(slurp("/proc/self/environ"), "");

  const std::string limits = slurp("/proc/self/limits");
  EXPECT_EQ(limits.rfind("Limit                     Soft Limit           Hard Limit           Units     \n", 0), 0u)
      << limits;
  EXPECT_NE(limits.find("Max open files            1024                 1024                 files     \n"),
            std::string::npos) << limits;
  EXPECT_NE(limits.find("Max cpu time              unlimited            unlimited            seconds   \n"),
            std::string::npos);
  EXPECT_NE(limits.find("Max nice priority         0                    0                    \n"), std::string::npos);
  EXPECT_EQ(std::count(limits.begin(), limits.end(), '\n'), 17);
}

TEST_F(Procfs, DirectoriesListWhatExists) {
  const std::string pid = std::to_string(proc_->pid), tid = std::to_string(proc_->thread().tid);
  EXPECT_EQ(list("/proc"), (std::set<std::string>{".", "..", "self", "thread-self", pid, "cpuinfo", "meminfo", "sys"}));
  EXPECT_EQ(list("/proc/sys"), (std::set<std::string>{".", "..", "fs", "kernel", "net", "vm"}));
  EXPECT_EQ(list("/proc/sys/net/core"), (std::set<std::string>{".", "..", "somaxconn"}));
  const std::set<std::string> process = {".", "..", "exe", "cwd", "root", "fd", "fdinfo", "task", "maps", "status", "stat",
                                         "statm", "cmdline", "comm", "environ", "limits"};
  EXPECT_EQ(list("/proc/self"), process);
  EXPECT_EQ(list("/proc/" + pid + "/"), process);
  EXPECT_EQ(list("/proc/self/task"), (std::set<std::string>{".", "..", tid}));
  std::set<std::string> thread = process;
  thread.erase("task");
  EXPECT_EQ(list("/proc/thread-self"), thread);
  EXPECT_EQ(list("/sys"), (std::set<std::string>{".", "..", "devices"}));
  EXPECT_EQ(list("/sys/devices/system/cpu"), (std::set<std::string>{".", "..", "online", "possible", "present"}));
  EXPECT_EQ(list("/dev"), (std::set<std::string>{".", "..", "null", "zero", "full", "random", "urandom", "stdin",
                                                 "stdout", "stderr", "fd"}));
  // Everything listed exists for lstat, with the type the listing gave.
  for (const std::string dir : {"/proc", "/proc/self", "/dev", "/sys/devices/system/cpu", "/proc/sys/kernel"}) {
    for (const std::string& name : list(dir)) {
      if (name == "." || name == "..") continue;
      struct stat st;
      EXPECT_EQ(lstat(dir + "/" + name, st), 0) << dir << "/" << name;
    }
  }
  struct stat st;
  ASSERT_EQ(lstat("/dev/null", st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  ASSERT_EQ(lstat("/dev/stdin", st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(lstat("/proc", st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  ASSERT_EQ(lstat("/proc/self", st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(lstat("/proc/self", st, true), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

// Whatever is granted, nothing but the made-up entries exists under /proc, /sys and /dev, and
// every call agrees on it.
TEST_F(Procfs, NothingElseExistsEvenUnderAllowAll) {
  PolicyConfig all;
  all.allow_all = true;
  use_policy(all);
  for (const std::string path : {"/proc/1/cmdline", "/proc/1", "/proc/self/mounts", "/proc/self/mem", "/proc/version",
                                 "/proc/sys/kernel/hostname", "/proc/self/task/99999", "/sys/kernel", "/sys/class",
                                 "/dev/kvm", "/dev/sda", "/dev/mem", "/dev/shm", "/dev/shm/x", "/dev/tty", "/dev/pts/0",
                                 "/dev/fd/99", "/proc/self/fd/99", "/dev/null/x"}) {
    const int64_t want = path == "/dev/null/x" ? -ENOTDIR : -ENOENT;
    struct stat st;
    EXPECT_EQ(open(path), want) << path;
    EXPECT_EQ(lstat(path, st), want) << path;
    EXPECT_EQ(lstat(path, st, true), want) << path;
    EXPECT_EQ(std::get<int64_t>(readlink(path)), want) << path;
    EXPECT_EQ(call(sys_access, {str(path), F_OK}), want) << path;
  }
  // The guest's environ is its own (here: none), never kvmserver's.
  ASSERT_NE(::getenv("PATH"), nullptr);
  EXPECT_EQ(slurp("/proc/self/environ"), "");
  // Creating anything there fails as in a read-only directory; what exists cannot be changed.
  EXPECT_EQ(open("/dev/newfile", O_CREAT | O_WRONLY), -EACCES);
  EXPECT_EQ(open("/proc/self/newfile", O_CREAT | O_WRONLY), -EACCES);
  EXPECT_EQ(open("/dev/nodir/newfile", O_CREAT | O_WRONLY), -ENOENT);
  EXPECT_EQ(open("/dev/null", O_CREAT | O_EXCL | O_WRONLY), -EEXIST);
  EXPECT_EQ(call(sys_mkdir, {str("/dev/shm"), 0755}), -EACCES);
  EXPECT_EQ(call(sys_mkdir, {str("/proc"), 0755}), -EEXIST);
  EXPECT_EQ(call(sys_mkdir, {str("/dev"), 0755}), -EEXIST);
  EXPECT_EQ(call(sys_unlink, {str("/dev/null")}), -EACCES);
  EXPECT_EQ(call(sys_unlink, {str("/dev/kvm")}), -ENOENT);
  EXPECT_EQ(call(sys_rename, {str("/proc/self/status"), str("/proc/self/x")}), -EACCES);
  EXPECT_EQ(call(sys_rename, {str("/dev/kvm"), str("/dev/x")}), -ENOENT);
  EXPECT_EQ(call(sys_symlink, {str("/etc/passwd"), str("/dev/x")}), -EACCES);
  EXPECT_EQ(call(sys_chmod, {str("/dev/null"), 0777}), -EACCES);
  EXPECT_EQ(call(sys_access, {str("/proc/self/status"), W_OK}), -EACCES);
  EXPECT_EQ(call(sys_access, {str("/proc/self/status"), R_OK}), 0);
  EXPECT_EQ(call(sys_access, {str("/dev/null"), R_OK | W_OK}), 0);
  EXPECT_EQ(call(sys_access, {str("/proc/self"), X_OK}), 0);
  const uint64_t fs = alloc(sizeof(struct statfs));
  ASSERT_EQ(call(sys_statfs, {str("/proc/self"), fs}), 0);
  struct statfs sfs;
  ASSERT_TRUE(as_->read(fs, sfs));
  EXPECT_EQ(sfs.f_type, 0x9fa0);
}

TEST_F(Procfs, LinksLeadWhereLinuxWould) {
  EXPECT_EQ(std::get<std::string>(readlink("/dev/stdin")), "/proc/self/fd/0");
  EXPECT_EQ(std::get<std::string>(readlink("/dev/fd")), "/proc/self/fd");
  EXPECT_EQ(std::get<std::string>(readlink("/proc/thread-self")),
            std::to_string(proc_->pid) + "/task/" + std::to_string(proc_->thread().tid));
  const int64_t maps = open("/proc/self/maps");
  ASSERT_GE(maps, 0);
  EXPECT_EQ(std::get<std::string>(readlink("/dev/fd/" + std::to_string(maps))),
            "/proc/" + std::to_string(proc_->pid) + "/maps");
  // Through cwd and root the path leaves the trees, and the policy decides as for any path.
  char tmpl[] = "/tmp/kvms-procfs-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = std::filesystem::canonical(tmpl);
  std::ofstream(dir + "/file") << "in cwd";
  proc_->cwd = dir;
  EXPECT_EQ(open("/proc/self/cwd/file"), -EACCES);  // not granted
  PolicyConfig c;
  c.read = {dir};
  use_policy(c);
  EXPECT_EQ(slurp("/proc/self/cwd/file"), "in cwd");
  EXPECT_EQ(slurp("/proc/self/root" + dir + "/file"), "in cwd");
  EXPECT_EQ(slurp("/proc/self/root/proc/self/cwd/file"), "in cwd");
  // `..` after a link applies to where the link led, as the kernel's walk does.
  std::filesystem::create_directory(dir + "/sub");
  proc_->cwd = dir + "/sub";
  EXPECT_EQ(slurp("/proc/self/cwd/../file"), "in cwd");
  EXPECT_EQ(slurp("/proc/self/cwd/../../../../../../../../../../" + dir + "/file"), "in cwd");
  proc_->cwd = dir;
  // From outside, `..` that leads back in is taken lexically.
  EXPECT_EQ(slurp("/usr/../proc/self/comm"), "prog\n");
  EXPECT_EQ(slurp(dir + "/../../../../../../proc/self/comm"), "prog\n");
  const int64_t d = open(dir, O_RDONLY | O_DIRECTORY);
  ASSERT_GE(d, 0);
  EXPECT_EQ(slurp("/proc/self/fd/" + std::to_string(d) + "/file"), "in cwd");
  // chdir into the trees: relative paths are made up too.
  ASSERT_EQ(call(sys_chdir, {str("/proc/self")}), 0);
  EXPECT_EQ(proc_->cwd, "/proc/" + std::to_string(proc_->pid));
  EXPECT_EQ(slurp("comm"), "prog\n");
  ASSERT_EQ(call(sys_chdir, {str("/dev/fd/" + std::to_string(d))}), 0);
  EXPECT_EQ(proc_->cwd, dir);
  EXPECT_EQ(call(sys_chdir, {str("/dev/null")}), -ENOTDIR);
  std::filesystem::remove_all(dir);
  // Loops end.
  EXPECT_EQ(open("/proc/self/root/proc/self/root/proc/self/root/proc/self/root/proc/self/root/proc/self/root"
                 "/proc/self/root/proc/self/root/proc/self/root/proc/self/root/proc/self/root/proc/self/root"
                 "/proc/self/root/proc/self/root/proc/self/root/proc/self/root/proc/self/root/proc/self/root"
                 "/proc/self/root/proc/self/root/proc/self/root/dev/null"),
            -ELOOP);
}

TEST_F(Procfs, TtyOnlyWhenGranted) {
  struct stat st;
  EXPECT_EQ(lstat("/dev/tty", st), -ENOENT);
  EXPECT_EQ(open("/dev/tty", O_RDWR), -ENOENT);
  PolicyConfig read;
  read.read = {"/dev/tty"};
  use_policy(read);
  ASSERT_EQ(lstat("/dev/tty", st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(list("/dev").count("tty"), 1u);
  EXPECT_EQ(open("/dev/tty", O_WRONLY), -EACCES);  // granted for reading only
  EXPECT_EQ(call(sys_access, {str("/dev/tty"), W_OK}), -EACCES);
  // Opening it opens kvmserver's controlling terminal: ENXIO when it has none, as on Linux.
  const int64_t fd = open("/dev/tty", O_RDONLY);
  const int host = ::open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
  if (host >= 0) {
    ::close(host);
    EXPECT_GE(fd, 0);
  } else {
    EXPECT_EQ(fd, -errno);
  }
  PolicyConfig write;
  write.write = {"/dev/tty"};
  use_policy(write);
  EXPECT_EQ(call(sys_access, {str("/dev/tty"), W_OK}), 0);
}

}  // namespace
}  // namespace kvms::linux

// fcntl's owner, signal and O_ASYNC (src/linux/fasync.cpp), O_PATH files, the legacy getdents and
// the errno corner cases of open, readv, sendfile and lseek that gVisor's tests check (file.cpp),
// called directly on a Process over a real AddressSpace. No KVM needed.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "guest_scratch.hpp"
#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kScratch = 0x100000;
constexpr uint64_t kScratchSize = 1 << 20;
constexpr uint64_t kFdcwd = static_cast<uint64_t>(AT_FDCWD);

class FcntlSyscalls : public ::testing::Test, protected GuestScratch {
 protected:
  void SetUp() override {
    root_ = make_temp_dir("fcntl-test");
    std::ofstream(root_ + "/file") << "data";
    PolicyConfig cfg;
    cfg.write = {root_};
    make_guest(kScratch, kScratchSize, cfg);
    proc_->cwd = root_;
  }
  void TearDown() override {
    remove_guest_and(root_);
  }

  int64_t open(const std::string& path, int flags, mode_t mode = 0644) {
    return call(sys_openat, {kFdcwd, str(path), uint64_t(flags), mode});
  }
  int64_t fcntl(int64_t fd, int cmd, uint64_t arg = 0) { return call(sys_fcntl, {uint64_t(fd), uint64_t(cmd), arg}); }
  std::pair<int, int> make_pipe() {
    const uint64_t fds = alloc(8);
    EXPECT_EQ(call(sys_pipe2, {fds, O_NONBLOCK}), 0);
    int32_t v[2];
    EXPECT_TRUE(as_->copy_from_user(v, fds, 8));
    return {v[0], v[1]};
  }
  // The pending instances of sig, waiting up to `wait` for the first one (the watcher posts them
  // from its own thread, under the process lock).
  std::deque<PendingSignal> pending(int sig, std::chrono::milliseconds wait = std::chrono::milliseconds(0)) {
    const auto end = std::chrono::steady_clock::now() + wait;
    for (;;) {
      {
        std::lock_guard<std::mutex> lk(proc_->lock.mutex);
        auto& q = proc_->main_thread().pending_queue;
        if (q.count(sig) && !q[sig].empty()) return q[sig];
      }
      if (std::chrono::steady_clock::now() >= end) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  std::string root_;
};

TEST_F(FcntlSyscalls, OpathFileTakesOnlyDescriptorCommands) {
  const int64_t fd = open(root_ + "/file", O_PATH | O_RDWR | O_APPEND | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(fcntl(fd, F_GETFL), O_PATH);  // no O_LARGEFILE, the other flags ignored
  const int64_t dir = open(root_, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_RDWR);
  ASSERT_GE(dir, 0);
  EXPECT_EQ(fcntl(dir, F_GETFL), O_PATH | O_DIRECTORY | O_NOFOLLOW);
  const int64_t dup = fcntl(fd, F_DUPFD, 0);
  ASSERT_GE(dup, 0);
  EXPECT_EQ(fcntl(dup, F_GETFL), O_PATH);
  EXPECT_EQ(fcntl(fd, F_SETFD, FD_CLOEXEC), 0);
  for (int cmd : {F_SETFL, F_SETOWN, F_GETOWN, F_SETOWN_EX, F_GETOWN_EX, F_SETSIG, F_GETSIG, F_SETLK, 12345})
    EXPECT_EQ(fcntl(fd, cmd, 0), -EBADF) << cmd;
}

TEST_F(FcntlSyscalls, OwnerAndSignalAreRecorded) {
  auto [r, w] = make_pipe();
  const int pid = proc_->pid;
  EXPECT_EQ(fcntl(r, F_GETOWN), 0);
  EXPECT_EQ(fcntl(r, F_GETSIG), 0);
  EXPECT_EQ(fcntl(r, F_SETOWN, uint64_t(pid)), 0);
  EXPECT_EQ(fcntl(r, F_GETOWN), pid);
  EXPECT_EQ(fcntl(r, F_SETOWN, uint64_t(int64_t(-pid))), 0);  // its group
  const uint64_t owner = alloc(sizeof(f_owner_ex));
  EXPECT_EQ(fcntl(r, F_GETOWN_EX, owner), 0);
  f_owner_ex got{};
  ASSERT_TRUE(as_->read(owner, got));
  EXPECT_EQ(got.type, F_OWNER_PGRP);
  EXPECT_EQ(got.pid, pid);
  EXPECT_EQ(fcntl(r, F_GETOWN), -pid);
  EXPECT_EQ(fcntl(r, F_SETOWN, 0), 0);
  EXPECT_EQ(fcntl(r, F_GETOWN), 0);
  EXPECT_EQ(fcntl(r, F_SETOWN, 12345678), -ESRCH);
  EXPECT_EQ(fcntl(r, F_SETOWN, uint64_t(int64_t(-12345678))), -ESRCH);
  EXPECT_EQ(fcntl(r, F_SETOWN, uint64_t(uint32_t(INT_MIN))), -EINVAL);

  f_owner_ex set{};
  set.type = F_OWNER_TID;
  set.pid = proc_->main_thread().tid;
  ASSERT_TRUE(as_->write(owner, set));
  EXPECT_EQ(fcntl(r, F_SETOWN_EX, owner), 0);
  EXPECT_EQ(fcntl(r, F_GETOWN), set.pid);
  set.pid = -1;
  ASSERT_TRUE(as_->write(owner, set));
  EXPECT_EQ(fcntl(r, F_SETOWN_EX, owner), -ESRCH);
  set.type = static_cast<__pid_type>(7);
  ASSERT_TRUE(as_->write(owner, set));
  EXPECT_EQ(fcntl(r, F_SETOWN_EX, owner), -EINVAL);
  EXPECT_EQ(fcntl(r, F_SETOWN_EX, 0x10), -EFAULT);

  EXPECT_EQ(fcntl(r, F_SETSIG, SIGUSR1), 0);
  EXPECT_EQ(fcntl(r, F_SETSIG, 65), -EINVAL);
  EXPECT_EQ(fcntl(r, F_GETSIG), SIGUSR1);  // unchanged by the refused one
  // Per open file description: a dup shares them.
  const int64_t dup = fcntl(r, F_DUPFD, 0);
  EXPECT_EQ(fcntl(dup, F_GETSIG), SIGUSR1);
}

TEST_F(FcntlSyscalls, AsyncPipeSignalsItsOwnerOnNewData) {
  auto [r, w] = make_pipe();
  const int status = int(fcntl(r, F_GETFL));
  EXPECT_EQ(fcntl(r, F_SETOWN, uint64_t(proc_->pid)), 0);
  EXPECT_EQ(fcntl(r, F_SETSIG, SIGUSR1), 0);
  EXPECT_EQ(fcntl(r, F_SETFL, uint64_t(status | O_ASYNC)), 0);
  EXPECT_EQ(fcntl(r, F_GETFL), status | O_ASYNC);
  EXPECT_TRUE(pending(SIGUSR1, std::chrono::milliseconds(100)).empty());  // nothing new yet
  ASSERT_EQ(call(sys_write, {uint64_t(w), str("test"), 4}), 4);
  auto q = pending(SIGUSR1, std::chrono::seconds(5));
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q.front().info.si_code, POLL_IN);
  EXPECT_EQ(q.front().info.si_fd, r);
  EXPECT_EQ(q.front().info.si_band, EPOLLIN | EPOLLRDNORM);

  // Without F_SETSIG: plain SIGIO. O_ASYNC off: nothing.
  EXPECT_EQ(fcntl(r, F_SETSIG, 0), 0);
  ASSERT_EQ(call(sys_write, {uint64_t(w), str("more"), 4}), 4);
  auto io = pending(SIGIO, std::chrono::seconds(5));
  ASSERT_EQ(io.size(), 1u);
  EXPECT_EQ(io.front().info.si_code, SI_KERNEL);
  EXPECT_EQ(fcntl(r, F_SETFL, uint64_t(status)), 0);
  EXPECT_EQ(fcntl(r, F_SETSIG, SIGUSR2), 0);
  ASSERT_EQ(call(sys_write, {uint64_t(w), str("late"), 4}), 4);
  EXPECT_TRUE(pending(SIGUSR2, std::chrono::milliseconds(200)).empty());
}

TEST_F(FcntlSyscalls, AsyncOnFilesWithoutFasyncSignalsNothing) {
  const int64_t fd = open(root_ + "/file", O_RDWR);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(fcntl(fd, F_SETOWN, uint64_t(proc_->pid)), 0);
  const int status = int(fcntl(fd, F_GETFL));
  EXPECT_EQ(fcntl(fd, F_SETFL, uint64_t(status | O_ASYNC)), 0);  // accepted, as Linux
  EXPECT_EQ(fcntl(fd, F_GETFL), status | O_ASYNC);
  EXPECT_EQ(call(sys_close, {uint64_t(fd)}), 0);
}

TEST_F(FcntlSyscalls, LegacyGetdentsHasTypeInLastByte) {
  std::ofstream(root_ + "/abcdefgh") << "";
  ASSERT_EQ(::mkdir((root_ + "/sub").c_str(), 0755), 0);
  const int64_t d64 = open(root_, O_RDONLY | O_DIRECTORY), dl = open(root_, O_RDONLY | O_DIRECTORY);
  ASSERT_GE(d64, 0);
  ASSERT_GE(dl, 0);
  const uint64_t b64 = alloc(4096), bl = alloc(4096);
  const int64_t n64 = call(sys_getdents64, {uint64_t(d64), b64, 4096});
  const int64_t nl = call(sys_getdents, {uint64_t(dl), bl, 4096});
  ASSERT_GT(nl, 0);
  ASSERT_EQ(nl, n64);  // the same records, the same lengths
  const std::string a = peek(b64, size_t(n64)), l = peek(bl, size_t(nl));
  std::map<std::string, int> types;
  for (size_t off = 0; off < l.size();) {
    uint16_t reclen, reclen64;
    std::memcpy(&reclen, l.data() + off + 16, 2);
    std::memcpy(&reclen64, a.data() + off + 16, 2);
    ASSERT_EQ(reclen, reclen64);
    EXPECT_EQ(reclen % 8, 0);
    EXPECT_EQ(std::memcmp(l.data() + off, a.data() + off, 16), 0);  // d_ino, d_off
    const std::string name = l.c_str() + off + 18;
    EXPECT_EQ(name, std::string(a.c_str() + off + 19));
    EXPECT_EQ(l[off + reclen - 1], a[off + 18]) << name;
    types[name] = l[off + reclen - 1];
    off += reclen;
  }
  EXPECT_EQ(types["abcdefgh"], DT_REG);
  EXPECT_EQ(types["sub"], DT_DIR);
  EXPECT_EQ(types["."], DT_DIR);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dl), 0, SEEK_SET}), 0);
  EXPECT_EQ(call(sys_getdents, {uint64_t(dl), bl, 4}), -EINVAL);  // too small for one entry
  EXPECT_EQ(call(sys_getdents, {uint64_t(dl), bl, uint64_t(INT_MAX) + 1}), -EINVAL);
  EXPECT_EQ(call(sys_getdents64, {uint64_t(dl), bl, 0xffffffffull}), -EINVAL);
  const int64_t file = open(root_ + "/file", O_RDONLY);
  EXPECT_EQ(call(sys_getdents, {uint64_t(file), bl, 4096}), -ENOTDIR);

  // A made-up directory too.
  const int64_t proc = open("/proc/self", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(proc, 0);
  const int64_t np = call(sys_getdents, {uint64_t(proc), bl, 4096});
  ASSERT_GT(np, 0);
  const std::string pl = peek(bl, size_t(np));
  uint16_t reclen;
  std::memcpy(&reclen, pl.data() + 16, 2);
  EXPECT_EQ(std::string(pl.c_str() + 18), ".");
  EXPECT_EQ(pl[reclen - 1], DT_DIR);
}

TEST_F(FcntlSyscalls, ErrnoCornerCases) {
  // open(O_CREAT) of "name/": EISDIR whether or not it exists, nothing created; no parent: ENOENT.
  EXPECT_EQ(open(root_ + "/new/", O_RDONLY | O_CREAT), -EISDIR);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/new"));
  EXPECT_EQ(open(root_ + "/none/new/", O_RDONLY | O_CREAT), -ENOENT);
  // readv: an iovec outside user space is EFAULT even when empty, and nothing is read.
  const int64_t fd = open(root_ + "/file", O_RDONLY);
  ASSERT_GE(fd, 0);
  const uint64_t buf = alloc(16), iov = alloc(32);
  const uint64_t vec[4] = {~0ull, 0, buf, 16};
  ASSERT_TRUE(as_->copy_to_user(iov, vec, sizeof vec));
  EXPECT_EQ(call(sys_readv, {uint64_t(fd), iov, 2}), -EFAULT);
  EXPECT_EQ(call(sys_lseek, {uint64_t(fd), 0, SEEK_CUR}), 0);
  const uint64_t null_first[4] = {0, 0, buf, 16};
  ASSERT_TRUE(as_->copy_to_user(iov, null_first, sizeof null_first));
  EXPECT_EQ(call(sys_readv, {uint64_t(fd), iov, 2}), 4);
  // sendfile: a count negative as an ssize_t.
  const int64_t out = open(root_ + "/out", O_WRONLY | O_CREAT);
  ASSERT_GE(out, 0);
  EXPECT_EQ(call(sys_sendfile, {uint64_t(out), uint64_t(fd), 0, ~0ull}), -EINVAL);
  // lseek on made-up /proc files: seq_files refuse SEEK_END, directories and cmdline are size 0.
  const int64_t meminfo = open("/proc/meminfo", O_RDONLY);
  ASSERT_GE(meminfo, 0);
  EXPECT_EQ(call(sys_lseek, {uint64_t(meminfo), 0, SEEK_CUR}), 0);
  EXPECT_EQ(call(sys_lseek, {uint64_t(meminfo), 0, SEEK_END}), -EINVAL);
  const int64_t cmdline = open("/proc/self/cmdline", O_RDONLY);
  ASSERT_GE(cmdline, 0);
  EXPECT_EQ(call(sys_lseek, {uint64_t(cmdline), 3, SEEK_END}), 3);
  const int64_t dir = open("/proc/self", O_RDONLY);
  ASSERT_GE(dir, 0);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), 0, SEEK_END}), 0);
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), ~0ull, SEEK_END}), -EINVAL);
}

// OFD locks are the host's, POSIX ones kvmserver's: each kind still conflicts with the other, as on
// Linux, even within one process (their owners differ).
TEST_F(FcntlSyscalls, OfdAndPosixLocksConflict) {
  const int64_t a = open(root_ + "/file", O_RDWR), b = open(root_ + "/file", O_RDWR);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  const uint64_t fl = alloc(sizeof(struct flock));
  auto put = [&](short type, off_t start, off_t len) {
    struct flock l{};
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = start;
    l.l_len = len;
    ASSERT_TRUE(as_->write(fl, l));
  };
  put(F_WRLCK, 0, 10);
  ASSERT_EQ(fcntl(a, F_OFD_SETLK, fl), 0);
  put(F_RDLCK, 0, 0);
  EXPECT_EQ(fcntl(b, F_SETLK, fl), -EAGAIN);
  EXPECT_EQ(fcntl(b, F_GETLK, fl), 0);
  struct flock got{};
  ASSERT_TRUE(as_->read(fl, got));
  EXPECT_EQ(got.l_type, F_WRLCK);
  EXPECT_EQ(got.l_pid, -1);  // an OFD lock's
  EXPECT_EQ(got.l_len, 10);
  put(F_RDLCK, 10, 5);  // past it: free
  EXPECT_EQ(fcntl(b, F_SETLK, fl), 0);
  put(F_WRLCK, 12, 1);
  EXPECT_EQ(fcntl(a, F_OFD_SETLK, fl), -EAGAIN);  // the POSIX read lock is in the way
  EXPECT_EQ(fcntl(a, F_OFD_GETLK, fl), 0);
  ASSERT_TRUE(as_->read(fl, got));
  EXPECT_EQ(got.l_type, F_RDLCK);
  EXPECT_EQ(got.l_pid, proc_->pid);
  put(F_UNLCK, 0, 0);
  EXPECT_EQ(fcntl(b, F_SETLK, fl), 0);
  put(F_WRLCK, 12, 1);
  EXPECT_EQ(fcntl(a, F_OFD_SETLK, fl), 0);
  struct flock bad{};
  bad.l_type = F_RDLCK;
  bad.l_pid = 1;
  ASSERT_TRUE(as_->write(fl, bad));
  EXPECT_EQ(fcntl(a, F_OFD_SETLK, fl), -EINVAL);
}

}  // namespace
}  // namespace kvms::linux

// The file and file-metadata syscall handlers (src/linux/file.cpp, file_meta.cpp), called directly on
// a Process over a real AddressSpace and a PathPolicy granting parts of a temporary directory.
// No KVM needed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "guest_scratch.hpp"
#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/vm.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kScratch = 0x100000;
constexpr uint64_t kScratchSize = 1 << 20;
constexpr uint64_t kReadOnly = 0x300000;  // a read-only guest page
constexpr uint64_t kUnmapped = 0x500000;
constexpr uint64_t kFdcwd = static_cast<uint64_t>(AT_FDCWD);

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& data) { std::ofstream(path) << data; }

class FileSyscalls : public ::testing::Test, protected GuestScratch {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvms-file-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    rw_ = root_ + "/rw";
    ro_ = root_ + "/ro";
    out_ = root_ + "/out";
    for (auto* d : {&rw_, &ro_, &out_}) ASSERT_EQ(::mkdir(d->c_str(), 0755), 0);
    spit(ro_ + "/data.txt", "read-only data");
    spit(out_ + "/secret", "secret");

    mem_ = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem_);
    ASSERT_EQ(as_->map(kScratch, kScratchSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    ASSERT_EQ(as_->map(kReadOnly, 4096, kvm::kProtRead, ""), 0);
    PolicyConfig cfg;
    cfg.write = {rw_};
    cfg.read = {ro_};
    proc_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(cfg), ProcessConfig{});
    proc_->cwd = rw_;
    next_ = kScratch;
    scratch_end_ = kScratch + kScratchSize;
  }
  void TearDown() override {
    proc_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  template <typename T> T get(uint64_t addr) {
    T v{};
    EXPECT_TRUE(as_->read(addr, v));
    return v;
  }
  int64_t open(const std::string& path, int flags, mode_t mode = 0644) {
    return call(sys_openat, {kFdcwd, str(path), uint64_t(flags), mode});
  }
  int64_t write(int64_t fd, const std::string& data) {
    return call(sys_write, {uint64_t(fd), str(data), data.size()});
  }
  std::string read(int64_t fd, size_t n) {
    uint64_t b = alloc(n);
    int64_t got = call(sys_read, {uint64_t(fd), b, n});
    EXPECT_GE(got, 0);
    return got < 0 ? "" : peek(b, static_cast<size_t>(got));
  }
  int host_fd(int64_t guest_fd) { return proc_->fds.get(static_cast<int>(guest_fd))->host_fd; }

  std::string root_, rw_, ro_, out_;
};

TEST_F(FileSyscalls, OpenWriteReadCloseRoundTrip) {
  int64_t fd = open(rw_ + "/a.txt", O_CREAT | O_RDWR, 0666);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(write(fd, "hello world"), 11);
  EXPECT_EQ(call(sys_lseek, {uint64_t(fd), 0, SEEK_SET}), 0);
  EXPECT_EQ(read(fd, 64), "hello world");
  EXPECT_EQ(read(fd, 64), "");  // EOF
  EXPECT_EQ(call(sys_pwrite64, {uint64_t(fd), str("WORLD"), 5, 6}), 5);
  uint64_t b = alloc(16);
  EXPECT_EQ(call(sys_pread64, {uint64_t(fd), b, 11, 0}), 11);
  EXPECT_EQ(peek(b, 11), "hello WORLD");
  EXPECT_EQ(call(sys_close, {uint64_t(fd)}), 0);
  EXPECT_EQ(call(sys_close, {uint64_t(fd)}), -EBADF);
  EXPECT_EQ(slurp(rw_ + "/a.txt"), "hello WORLD");
  struct stat st;
  ASSERT_EQ(::stat((rw_ + "/a.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);  // 0666 & ~umask 022

  // Relative to the cwd, and relative to a directory fd; OpenFile.path is the canonical guest path.
  int64_t rel = call(sys_open, {str("a.txt"), O_RDONLY, 0});
  ASSERT_GE(rel, 0);
  EXPECT_EQ(read(rel, 5), "hello");
  int64_t dir = open(rw_, O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  int64_t at = call(sys_openat, {uint64_t(dir), str("a.txt"), O_RDONLY, 0});
  ASSERT_GE(at, 0);
  EXPECT_EQ(proc_->fds.get(int(at))->path, std::filesystem::canonical(rw_ + "/a.txt").string());
  EXPECT_EQ(call(sys_read, {uint64_t(dir), alloc(4), 4}), -EISDIR);
  EXPECT_EQ(call(sys_write, {uint64_t(rel), str("x"), 1}), -EBADF);  // opened read-only
  EXPECT_EQ(call(sys_read, {999, alloc(4), 4}), -EBADF);

  // creat, O_EXCL, missing files, O_DIRECTORY on a file.
  int64_t c = call(sys_creat, {str(rw_ + "/c.txt"), 0600});
  ASSERT_GE(c, 0);
  EXPECT_EQ(open(rw_ + "/c.txt", O_CREAT | O_EXCL | O_WRONLY), -EEXIST);
  EXPECT_EQ(open(rw_ + "/missing", O_RDONLY), -ENOENT);
  EXPECT_EQ(open(rw_ + "/c.txt", O_RDONLY | O_DIRECTORY), -ENOTDIR);
  EXPECT_EQ(open(rw_ + "/c.txt/x", O_RDONLY), -ENOTDIR);
}

TEST_F(FileSyscalls, ReadvWritevPreadvPwritev) {
  int64_t fd = open(rw_ + "/v.txt", O_CREAT | O_RDWR);
  ASSERT_GE(fd, 0);
  uint64_t iov = alloc(3 * 16);
  uint64_t v[6] = {str("abc"), 3, str(""), 0, str("defghij"), 7};
  ASSERT_TRUE(as_->copy_to_user(iov, v, sizeof v));
  EXPECT_EQ(call(sys_writev, {uint64_t(fd), iov, 3}), 10);
  EXPECT_EQ(call(sys_pwritev, {uint64_t(fd), iov, 1, 20}), 3);
  uint64_t a = alloc(4), b = alloc(32);
  uint64_t r[4] = {a, 4, b, 32};
  ASSERT_TRUE(as_->copy_to_user(iov, r, sizeof r));
  EXPECT_EQ(call(sys_lseek, {uint64_t(fd), 0, SEEK_SET}), 0);
  EXPECT_EQ(call(sys_readv, {uint64_t(fd), iov, 2}), 23);
  EXPECT_EQ(peek(a, 4), "abcd");
  EXPECT_EQ(peek(b, 6), "efghij");
  EXPECT_EQ(peek(b + 16, 3), "abc");
  EXPECT_EQ(call(sys_preadv, {uint64_t(fd), iov, 1, 2}), 4);
  EXPECT_EQ(peek(a, 4), "cdef");
  EXPECT_EQ(call(sys_readv, {uint64_t(fd), iov, 5000}), -EINVAL);
  EXPECT_EQ(call(sys_readv, {uint64_t(fd), kUnmapped, 1}), -EFAULT);
}

TEST_F(FileSyscalls, PolicyDeniesOutsideGrantsAndWritesToReadOnlyGrants) {
  EXPECT_EQ(open(out_ + "/secret", O_RDONLY), -EACCES);
  EXPECT_EQ(open(root_ + "/../../etc/passwd", O_RDONLY), -EACCES);
  int64_t fd = open(ro_ + "/data.txt", O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read(fd, 64), "read-only data");
  EXPECT_FALSE(proc_->fds.get(int(fd))->writable_grant);
  EXPECT_EQ(open(ro_ + "/data.txt", O_WRONLY), -EACCES);
  EXPECT_EQ(open(ro_ + "/data.txt", O_RDONLY | O_TRUNC), -EACCES);
  EXPECT_EQ(open(ro_ + "/new.txt", O_CREAT | O_WRONLY), -EACCES);
  EXPECT_FALSE(std::filesystem::exists(ro_ + "/new.txt"));
  // A symlink planted inside a write grant does not lead out of it.
  ASSERT_EQ(::symlink((out_ + "/secret").c_str(), (rw_ + "/escape").c_str()), 0);
  EXPECT_EQ(open(rw_ + "/escape", O_RDONLY), -EACCES);
  EXPECT_EQ(open(rw_ + "/escape", O_RDONLY | O_NOFOLLOW), -ELOOP);
  EXPECT_EQ(open(rw_ + "/../out/secret", O_RDONLY), -EACCES);
  int64_t w = open(rw_ + "/w.txt", O_CREAT | O_WRONLY);
  ASSERT_GE(w, 0);
  EXPECT_TRUE(proc_->fds.get(int(w))->writable_grant);
}

TEST_F(FileSyscalls, SpecialFilesNeedNoGrant) {
  int64_t null = open("/dev/null", O_RDWR);
  ASSERT_GE(null, 0);
  EXPECT_EQ(write(null, "discarded"), 9);
  EXPECT_EQ(read(null, 8), "");
  int64_t zero = open("/dev/zero", O_RDONLY);
  ASSERT_GE(zero, 0);
  EXPECT_EQ(read(zero, 4), std::string(4, '\0'));
  int64_t urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(urandom, 0);
  EXPECT_TRUE(proc_->fds.cloexec(int(urandom)));
  EXPECT_EQ(read(urandom, 16).size(), 16u);
  int64_t full = open("/dev/full", O_WRONLY);
  ASSERT_GE(full, 0);
  EXPECT_EQ(write(full, "x"), -ENOSPC);

  // /proc/self/fd/N and /dev/stdout name the guest's own fds.
  int64_t file = open(rw_ + "/f.txt", O_CREAT | O_RDWR);
  ASSERT_GE(file, 0);
  int64_t again = open("/proc/self/fd/" + std::to_string(file), O_RDONLY);
  ASSERT_GE(again, 0);
  EXPECT_EQ(proc_->fds.get(int(again)), proc_->fds.get(int(file)));
  EXPECT_EQ(open("/dev/fd/" + std::to_string(file), O_RDONLY), again + 1);
  ASSERT_EQ(call(sys_close, {1}), 0);
  EXPECT_EQ(open("/dev/stdout", O_WRONLY), -ENOENT);  // fd 1 is not open now
  ASSERT_EQ(call(sys_dup2, {uint64_t(file), 1}), 1);
  int64_t out = open("/dev/stdout", O_WRONLY);
  ASSERT_GE(out, 0);
  EXPECT_EQ(write(out, "via stdout"), 10);
  EXPECT_EQ(slurp(rw_ + "/f.txt"), "via stdout");
  EXPECT_EQ(open("/dev/sda", O_RDONLY), -ENOENT);  // only the emulated devices exist
}

TEST_F(FileSyscalls, BadPointersAreEfault) {
  int64_t fd = open(rw_ + "/e.txt", O_CREAT | O_RDWR);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(write(fd, "0123456789"), 10);
  EXPECT_EQ(call(sys_openat, {kFdcwd, kUnmapped, O_RDONLY, 0}), -EFAULT);
  EXPECT_EQ(call(sys_open, {0, O_RDONLY, 0}), -EFAULT);
  EXPECT_EQ(call(sys_pread64, {uint64_t(fd), kUnmapped, 4, 0}), -EFAULT);
  EXPECT_EQ(call(sys_pread64, {uint64_t(fd), kReadOnly, 4, 0}), -EFAULT);  // not writable
  EXPECT_EQ(call(sys_write, {uint64_t(fd), kUnmapped, 4}), -EFAULT);
  EXPECT_EQ(call(sys_write, {uint64_t(fd), kReadOnly, 0}), 0);
  // A read that runs off the end of a mapping stops there, like Linux's short copy.
  const uint64_t tail = kScratch + kScratchSize - 3;
  EXPECT_EQ(call(sys_pread64, {uint64_t(fd), tail, 10, 0}), 3);
  EXPECT_EQ(peek(tail, 3), "012");
  EXPECT_EQ(call(sys_fstat, {uint64_t(fd), kUnmapped}), -EFAULT);
  EXPECT_EQ(call(sys_stat, {str(rw_ + "/e.txt"), kReadOnly}), -EFAULT);
  EXPECT_EQ(call(sys_getcwd, {kUnmapped, 4096}), -EFAULT);
  EXPECT_EQ(call(sys_pipe2, {kReadOnly, 0}), -EFAULT);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_GETLK, kUnmapped}), -EFAULT);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(fd), FIONBIO, kUnmapped}), -EFAULT);
  int64_t dir = open(rw_, O_RDONLY | O_DIRECTORY);
  EXPECT_EQ(call(sys_getdents64, {uint64_t(dir), kUnmapped, 4096}), -EFAULT);
  EXPECT_EQ(call(sys_readlink, {str(rw_), kUnmapped, 100}), -EINVAL);  // not a symlink comes first
  EXPECT_EQ(call(sys_symlink, {kUnmapped, str(rw_ + "/l")}), -EFAULT);
  EXPECT_EQ(call(sys_utimensat, {kFdcwd, str(rw_ + "/e.txt"), kUnmapped, 0}), -EFAULT);
}

TEST_F(FileSyscalls, ReadsIntoGuestMemoryAreTrackedForReset) {
  int64_t fd = open(ro_ + "/data.txt", O_RDONLY);
  ASSERT_GE(fd, 0);
  as_->track_host_writes(true);
  as_->host_written_pages().clear();
  const uint64_t b = kScratch + 5 * 4096 + 100;
  ASSERT_EQ(call(sys_read, {uint64_t(fd), b, 64}), 14);
  auto& pages = as_->host_written_pages();
  EXPECT_NE(std::find(pages.begin(), pages.end(), b >> 12), pages.end());
  pages.clear();
  uint64_t iov[2] = {kScratch + 9 * 4096 - 2, 4};
  uint64_t uiov = alloc(sizeof iov);
  ASSERT_TRUE(as_->copy_to_user(uiov, iov, sizeof iov));
  pages.clear();
  ASSERT_EQ(call(sys_preadv, {uint64_t(fd), uiov, 1, 0}), 4);
  EXPECT_NE(std::find(pages.begin(), pages.end(), (kScratch >> 12) + 8), pages.end());
  EXPECT_NE(std::find(pages.begin(), pages.end(), (kScratch >> 12) + 9), pages.end());
}

TEST_F(FileSyscalls, Getdents64ListsFiles) {
  spit(rw_ + "/one", "1");
  spit(rw_ + "/two", "2");
  ASSERT_EQ(::mkdir((rw_ + "/sub").c_str(), 0755), 0);
  int64_t dir = open(rw_, O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  std::set<std::string> names;
  const uint64_t b = alloc(4096);
  for (;;) {
    int64_t n = call(sys_getdents64, {uint64_t(dir), b, 4096});
    ASSERT_GE(n, 0);
    if (n == 0) break;
    std::string data = peek(b, static_cast<size_t>(n));
    for (size_t off = 0; off < data.size();) {
      uint16_t reclen;
      std::memcpy(&reclen, data.data() + off + 16, 2);
      names.insert(std::string(data.c_str() + off + 19));
      off += reclen;
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{".", "..", "one", "two", "sub"}));
  EXPECT_EQ(call(sys_lseek, {uint64_t(dir), 0, SEEK_SET}), 0);
  EXPECT_EQ(call(sys_getdents64, {uint64_t(dir), b, 4}), -EINVAL);  // too small for one entry
  int64_t file = open(rw_ + "/one", O_RDONLY);
  EXPECT_EQ(call(sys_getdents64, {uint64_t(file), b, 4096}), -ENOTDIR);
  EXPECT_EQ(open(root_, O_RDONLY | O_DIRECTORY), -EACCES);  // above the grants: walk only
}

TEST_F(FileSyscalls, RenameAndUnlinkNeedWriteGrant) {
  spit(rw_ + "/from", "x");
  EXPECT_EQ(call(sys_rename, {str(rw_ + "/from"), str(rw_ + "/to")}), 0);
  EXPECT_FALSE(std::filesystem::exists(rw_ + "/from"));
  EXPECT_EQ(slurp(rw_ + "/to"), "x");
  spit(rw_ + "/other", "y");
  EXPECT_EQ(call(sys_renameat2, {kFdcwd, str("other"), kFdcwd, str("to"), RENAME_NOREPLACE}), -EEXIST);
  EXPECT_EQ(call(sys_renameat2, {kFdcwd, str("other"), kFdcwd, str("to"), RENAME_EXCHANGE}), 0);
  EXPECT_EQ(slurp(rw_ + "/to"), "y");
  EXPECT_EQ(call(sys_renameat2, {kFdcwd, str("other"), kFdcwd, str("to"), 0x100}), -EINVAL);
  EXPECT_EQ(call(sys_renameat, {kFdcwd, str("other"), kFdcwd, str(rw_ + "/.")}), -EBUSY);

  // Either side outside the write grant: denied, nothing moves.
  EXPECT_EQ(call(sys_rename, {str(ro_ + "/data.txt"), str(rw_ + "/stolen")}), -EACCES);
  EXPECT_EQ(call(sys_rename, {str(rw_ + "/to"), str(ro_ + "/planted")}), -EACCES);
  EXPECT_EQ(call(sys_rename, {str(out_ + "/secret"), str(rw_ + "/s")}), -EACCES);
  EXPECT_TRUE(std::filesystem::exists(ro_ + "/data.txt"));
  EXPECT_TRUE(std::filesystem::exists(rw_ + "/to"));

  EXPECT_EQ(call(sys_unlink, {str(ro_ + "/data.txt")}), -EACCES);
  EXPECT_EQ(call(sys_unlink, {str(out_ + "/secret")}), -EACCES);
  EXPECT_TRUE(std::filesystem::exists(out_ + "/secret"));
  EXPECT_EQ(call(sys_unlink, {str(rw_ + "/to")}), 0);
  EXPECT_FALSE(std::filesystem::exists(rw_ + "/to"));
  EXPECT_EQ(call(sys_unlink, {str(rw_ + "/to")}), -ENOENT);
  EXPECT_EQ(call(sys_unlinkat, {kFdcwd, str("other"), 0x1}), -EINVAL);
  EXPECT_EQ(call(sys_unlinkat, {kFdcwd, str("other/"), 0}), -ENOTDIR);
  // Unlinking a symlink removes the link, never its target.
  ASSERT_EQ(::symlink((rw_ + "/other").c_str(), (rw_ + "/link").c_str()), 0);
  EXPECT_EQ(call(sys_unlink, {str(rw_ + "/link")}), 0);
  EXPECT_TRUE(std::filesystem::exists(rw_ + "/other"));
}

TEST_F(FileSyscalls, MkdirRmdirSymlinkLink) {
  EXPECT_EQ(call(sys_mkdir, {str(rw_ + "/d"), 0777}), 0);
  struct stat st;
  ASSERT_EQ(::stat((rw_ + "/d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_EQ(call(sys_mkdir, {str(rw_ + "/d"), 0777}), -EEXIST);
  EXPECT_EQ(call(sys_mkdirat, {kFdcwd, str("d/e/"), 0700}), 0);
  EXPECT_EQ(call(sys_mkdir, {str(ro_ + "/d"), 0777}), -EACCES);
  EXPECT_EQ(call(sys_rmdir, {str(rw_ + "/d")}), -ENOTEMPTY);
  EXPECT_EQ(call(sys_rmdir, {str(rw_ + "/d/e/.")}), -EINVAL);
  EXPECT_EQ(call(sys_unlinkat, {kFdcwd, str("d/e"), AT_REMOVEDIR}), 0);
  EXPECT_EQ(call(sys_rmdir, {str(rw_ + "/d")}), 0);
  EXPECT_FALSE(std::filesystem::exists(rw_ + "/d"));
  EXPECT_EQ(call(sys_rmdir, {str(ro_)}), -EACCES);
  // rmdir of a symlink: ENOTDIR, or EACCES when it names a directory the guest may not write.
  ASSERT_EQ(::mkdir((rw_ + "/real").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("real", (rw_ + "/dirlink").c_str()), 0);
  ASSERT_EQ(::symlink("../ro", (rw_ + "/rolink").c_str()), 0);
  EXPECT_EQ(call(sys_rmdir, {str(rw_ + "/dirlink")}), -ENOTDIR);
  EXPECT_EQ(call(sys_rmdir, {str(rw_ + "/rolink")}), -EACCES);
  EXPECT_TRUE(std::filesystem::exists(rw_ + "/real"));
  EXPECT_TRUE(std::filesystem::exists(ro_));

  // The symlink text is stored as given; only its location needs write access.
  EXPECT_EQ(call(sys_symlink, {str("/etc/passwd"), str(rw_ + "/pw")}), 0);
  uint64_t b = alloc(64);
  EXPECT_EQ(call(sys_readlink, {str(rw_ + "/pw"), b, 64}), 11);
  EXPECT_EQ(peek(b, 11), "/etc/passwd");
  EXPECT_EQ(call(sys_readlinkat, {kFdcwd, str("pw"), b, 4}), 4);  // truncated, like Linux
  EXPECT_EQ(call(sys_readlink, {str(rw_ + "/pw"), b, 0}), -EINVAL);
  EXPECT_EQ(open(rw_ + "/pw", O_RDONLY), -EACCES);  // the target is still checked
  EXPECT_EQ(call(sys_symlinkat, {str("x"), kFdcwd, str(ro_ + "/l")}), -EACCES);
  EXPECT_EQ(call(sys_symlink, {str(""), str(rw_ + "/empty")}), -ENOENT);
  EXPECT_EQ(call(sys_readlink, {str(ro_ + "/data.txt"), b, 64}), -EINVAL);
  EXPECT_EQ(call(sys_readlink, {str(root_), b, 64}), -EINVAL);  // an ancestor of a grant
  EXPECT_EQ(call(sys_readlink, {str(out_ + "/secret"), b, 64}), -EACCES);

  spit(rw_ + "/orig", "data");
  EXPECT_EQ(call(sys_link, {str(rw_ + "/orig"), str(rw_ + "/hard")}), 0);
  EXPECT_EQ(slurp(rw_ + "/hard"), "data");
  EXPECT_EQ(call(sys_link, {str(ro_ + "/data.txt"), str(rw_ + "/hard2")}), -EACCES);
  EXPECT_EQ(call(sys_linkat, {kFdcwd, str("orig"), kFdcwd, str(ro_ + "/hard")}), -EACCES);
  EXPECT_EQ(call(sys_linkat, {kFdcwd, str("orig"), kFdcwd, str("hard3"), 0x8000}), -EINVAL);
}

// A guest that may write rw_ plants symlinks to what it may not see: stat, statx and mkdir through
// them answer the same whether the target exists or not, and never show its metadata.
TEST_F(FileSyscalls, APlantedSymlinkProbesNothingOutsideTheView) {
  ASSERT_EQ(::symlink(out_.c_str(), (rw_ + "/to_dir").c_str()), 0);  // an existing directory
  ASSERT_EQ(::symlink((root_ + "/nothing").c_str(), (rw_ + "/to_none").c_str()), 0);
  const uint64_t st = alloc(sizeof(struct stat)), sx = alloc(sizeof(struct statx));
  for (const char* link : {"/to_dir", "/to_none"}) {
    EXPECT_EQ(call(sys_stat, {str(rw_ + link), st}), -EACCES) << link;
    EXPECT_EQ(call(sys_newfstatat, {kFdcwd, str(rw_ + link), st, 0}), -EACCES) << link;
    EXPECT_EQ(call(sys_statx, {kFdcwd, str(rw_ + link), 0, STATX_BASIC_STATS, sx}), -EACCES) << link;
    EXPECT_EQ(call(sys_mkdir, {str(rw_ + link + "/x"), 0755}), -EACCES) << link;
  }
  EXPECT_EQ(call(sys_mkdir, {str(rw_ + "/to_dir/secret"), 0755}), -EACCES);  // it exists out there
  EXPECT_EQ(call(sys_mkdir, {str(rw_ + "/to_dir/absent"), 0755}), -EACCES);
  EXPECT_FALSE(std::filesystem::exists(out_ + "/absent"));
  EXPECT_EQ(call(sys_lstat, {str(rw_ + "/to_dir"), st}), 0);  // the link itself is inside the grant
  // The directories above the grants still show (mkdir -p stats and makes every ancestor).
  EXPECT_EQ(call(sys_stat, {str(root_), st}), 0);
  EXPECT_EQ(call(sys_statx, {kFdcwd, str(root_), 0, STATX_BASIC_STATS, sx}), 0);
  EXPECT_EQ(call(sys_mkdir, {str(root_), 0755}), -EEXIST);
}

// A pipe's buffer is host memory: at most Linux's unprivileged 1 MiB, even when kvmserver runs as
// root (which the host would let grow a pipe to 2 GiB).
TEST_F(FileSyscalls, PipeBuffersStayWithinPipeMaxSize) {
  const uint64_t fds = alloc(8);
  ASSERT_EQ(call(sys_pipe2, {fds, 0}), 0);
  const int32_t r = get<int32_t>(fds);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_SETPIPE_SZ, 1 << 20}), 1 << 20);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_SETPIPE_SZ, (1 << 20) + 1}), -EPERM);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_SETPIPE_SZ, 1u << 31}), -EPERM);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_SETPIPE_SZ, ~0ull}), -EINVAL);  // no size above 2^31
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_GETPIPE_SZ, 0}), 1 << 20);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_SETPIPE_SZ, (1ull << 32) | 4096}), 4096);  // an unsigned int
}

TEST_F(FileSyscalls, Dup2Dup3SharesTheOpenFile) {
  int64_t fd = open(rw_ + "/d.txt", O_CREAT | O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "abcdef"), 6);
  EXPECT_EQ(call(sys_dup2, {uint64_t(fd), 10}), 10);
  EXPECT_EQ(proc_->fds.get(10), proc_->fds.get(int(fd)));
  EXPECT_EQ(call(sys_lseek, {10, 2, SEEK_SET}), 2);
  EXPECT_EQ(call(sys_lseek, {uint64_t(fd), 0, SEEK_CUR}), 2);
  EXPECT_EQ(call(sys_dup2, {10, 10}), 10);
  EXPECT_EQ(call(sys_dup2, {777, 11}), -EBADF);
  EXPECT_EQ(call(sys_dup2, {uint64_t(fd), 5000}), -EBADF);
  EXPECT_EQ(call(sys_dup3, {uint64_t(fd), 12, O_CLOEXEC}), 12);
  EXPECT_EQ(call(sys_fcntl, {12, F_GETFD, 0}), FD_CLOEXEC);
  EXPECT_EQ(call(sys_dup3, {uint64_t(fd), uint64_t(fd), 0}), -EINVAL);
  EXPECT_EQ(call(sys_dup3, {uint64_t(fd), 13, 0x1234}), -EINVAL);
  int64_t d = call(sys_dup, {uint64_t(fd)});
  EXPECT_EQ(d, fd + 1);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(d), F_GETFD, 0}), 0);
  // Closing one name keeps the file open through the others.
  EXPECT_EQ(call(sys_close, {uint64_t(fd)}), 0);
  EXPECT_EQ(read(10, 10), "cdef");
  EXPECT_EQ(call(sys_close_range, {10, 12, 4 /* CLOSE_RANGE_CLOEXEC */}), 0);
  EXPECT_EQ(call(sys_fcntl, {10, F_GETFD, 0}), FD_CLOEXEC);
  EXPECT_EQ(call(sys_close_range, {10, ~0u, 0}), 0);
  EXPECT_EQ(call(sys_fcntl, {10, F_GETFD, 0}), -EBADF);
  EXPECT_EQ(call(sys_fcntl, {12, F_GETFD, 0}), -EBADF);
  EXPECT_EQ(call(sys_close_range, {5, 4, 0}), -EINVAL);
  EXPECT_EQ(call(sys_close_range, {5, 6, 1u << 8}), -EINVAL);
}

TEST_F(FileSyscalls, FcntlFlags) {
  int64_t fd = open(rw_ + "/f.txt", O_CREAT | O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_GETFD, 0}), FD_CLOEXEC);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_SETFD, 0}), 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_GETFD, 0}), 0);
  int64_t fl = call(sys_fcntl, {uint64_t(fd), F_GETFL, 0});
  EXPECT_EQ(fl & O_ACCMODE, O_RDWR);
  EXPECT_EQ(fl & (O_CREAT | O_CLOEXEC | O_APPEND), 0);

  ASSERT_EQ(write(fd, "one"), 3);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_SETFL, O_APPEND}), 0);
  EXPECT_TRUE(call(sys_fcntl, {uint64_t(fd), F_GETFL, 0}) & O_APPEND);
  EXPECT_TRUE(::fcntl(host_fd(fd), F_GETFL) & O_APPEND);
  EXPECT_EQ(call(sys_lseek, {uint64_t(fd), 0, SEEK_SET}), 0);
  EXPECT_EQ(write(fd, "two"), 3);
  EXPECT_EQ(slurp(rw_ + "/f.txt"), "onetwo");
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_SETFL, 0}), 0);
  EXPECT_FALSE(call(sys_fcntl, {uint64_t(fd), F_GETFL, 0}) & O_APPEND);

  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_DUPFD, 100}), 100);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_DUPFD, 100}), 101);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_DUPFD_CLOEXEC, 100}), 102);
  EXPECT_EQ(call(sys_fcntl, {102, F_GETFD, 0}), FD_CLOEXEC);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_DUPFD, 1u << 20}), -EINVAL);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_NOTIFY, 0}), -EINVAL);
  EXPECT_EQ(call(sys_fcntl, {999, F_GETFD, 0}), -EBADF);

  // Record locks are forwarded to the host fd.
  struct flock lk{};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  lk.l_len = 10;
  uint64_t ulk = alloc(sizeof lk);
  ASSERT_TRUE(as_->write(ulk, lk));
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_SETLK, ulk}), 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_GETLK, ulk}), 0);
  EXPECT_EQ(get<struct flock>(ulk).l_type, F_UNLCK);  // our own lock never conflicts

  // FIONBIO and FIOCLEX.
  uint64_t on = alloc(4);
  ASSERT_TRUE(as_->write<int32_t>(on, 1));
  EXPECT_EQ(call(sys_ioctl, {uint64_t(fd), FIONBIO, on}), 0);
  EXPECT_TRUE(call(sys_fcntl, {uint64_t(fd), F_GETFL, 0}) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(host_fd(fd), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(fd), FIOCLEX, 0}), 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_GETFD, 0}), FD_CLOEXEC);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(fd), FIONCLEX, 0}), 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(fd), F_GETFD, 0}), 0);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(fd), TCGETS, alloc(64)}), -ENOTTY);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(fd), 0x12345678, 0}), -ENOTTY);
  EXPECT_EQ(call(sys_ioctl, {999, FIONREAD, 0}), -EBADF);
}

TEST_F(FileSyscalls, Pipe2AndFionread) {
  uint64_t ufds = alloc(8);
  ASSERT_EQ(call(sys_pipe2, {ufds, O_CLOEXEC | O_NONBLOCK}), 0);
  const int32_t r = get<int32_t>(ufds), w = get<int32_t>(ufds + 4);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_GETFD, 0}), FD_CLOEXEC);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(r), F_GETFL, 0}), O_RDONLY | O_NONBLOCK);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(w), F_GETFL, 0}), O_WRONLY | O_NONBLOCK);
  EXPECT_EQ(proc_->fds.get(r)->kind, OpenFile::Kind::Pipe);
  uint64_t n = alloc(4);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(r), FIONREAD, n}), 0);
  EXPECT_EQ(get<int32_t>(n), 0);
  EXPECT_EQ(call(sys_read, {uint64_t(r), alloc(8), 8}), -EAGAIN);
  EXPECT_EQ(write(w, "12345"), 5);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(r), FIONREAD, n}), 0);
  EXPECT_EQ(get<int32_t>(n), 5);
  EXPECT_EQ(read(r, 2), "12");
  EXPECT_EQ(call(sys_lseek, {uint64_t(r), 0, SEEK_SET}), -ESPIPE);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(r), TCGETS, alloc(64)}), -ENOTTY);
  EXPECT_EQ(call(sys_ioctl, {uint64_t(w), TIOCGWINSZ, alloc(8)}), -ENOTTY);
  EXPECT_EQ(call(sys_write, {uint64_t(r), str("x"), 1}), -EBADF);
  EXPECT_EQ(call(sys_pipe2, {ufds, 0x12345678}), -EINVAL);

  // No reader: EPIPE, and the host process survives (its SIGPIPE is swallowed).
  EXPECT_EQ(call(sys_close, {uint64_t(r)}), 0);
  EXPECT_EQ(write(w, "x"), -EPIPE);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE));

  ASSERT_EQ(call(sys_pipe, {ufds}), 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(get<int32_t>(ufds)), F_GETFD, 0}), 0);
}

TEST_F(FileSyscalls, GetcwdAndChdir) {
  const std::string cwd = proc_->cwd;
  uint64_t b = alloc(4096);
  EXPECT_EQ(call(sys_getcwd, {b, 4096}), int64_t(cwd.size() + 1));
  EXPECT_EQ(peek(b, cwd.size() + 1), cwd + '\0');
  EXPECT_EQ(call(sys_getcwd, {b, cwd.size()}), -ERANGE);
  EXPECT_EQ(call(sys_getcwd, {b, 0}), -ERANGE);

  ASSERT_EQ(::mkdir((rw_ + "/sub").c_str(), 0755), 0);
  spit(rw_ + "/sub/file", "in sub");
  EXPECT_EQ(call(sys_chdir, {str("sub/./")}), 0);
  const std::string canon_rw = std::filesystem::canonical(rw_).string();
  EXPECT_EQ(proc_->cwd, canon_rw + "/sub");
  int64_t fd = call(sys_open, {str("file"), O_RDONLY, 0});
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read(fd, 16), "in sub");
  EXPECT_EQ(call(sys_chdir, {str("..")}), 0);
  EXPECT_EQ(proc_->cwd, canon_rw);
  EXPECT_EQ(call(sys_chdir, {str("sub/file")}), -ENOTDIR);
  EXPECT_EQ(call(sys_chdir, {str("nope")}), -ENOENT);
  EXPECT_EQ(call(sys_chdir, {str(out_)}), -EACCES);
  EXPECT_EQ(proc_->cwd, canon_rw);

  int64_t dir = open(ro_, O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  EXPECT_EQ(call(sys_fchdir, {uint64_t(dir)}), 0);
  EXPECT_EQ(proc_->cwd, std::filesystem::canonical(ro_).string());
  EXPECT_EQ(call(sys_fchdir, {uint64_t(fd)}), -ENOTDIR);
  EXPECT_EQ(call(sys_fchdir, {999}), -EBADF);

  EXPECT_EQ(call(sys_umask, {077}), 022);
  EXPECT_EQ(call(sys_umask, {01777}), 077);
  EXPECT_EQ(proc_->umask, 0777u);
}

TEST_F(FileSyscalls, EmfileAtTheFdLimit) {
  proc_->fds.set_limit(6);
  std::vector<int64_t> fds;
  for (int i = 0; i < 6; ++i) {
    int64_t fd = open(ro_ + "/data.txt", O_RDONLY);
    ASSERT_EQ(fd, i);
    fds.push_back(fd);
  }
  EXPECT_EQ(open(ro_ + "/data.txt", O_RDONLY), -EMFILE);
  EXPECT_EQ(open(rw_ + "/never", O_CREAT | O_WRONLY), -EMFILE);
  EXPECT_FALSE(std::filesystem::exists(rw_ + "/never"));  // nothing created on EMFILE
  EXPECT_EQ(open("/dev/null", O_RDONLY), -EMFILE);
  EXPECT_EQ(call(sys_dup, {0}), -EMFILE);
  EXPECT_EQ(call(sys_pipe2, {alloc(8), 0}), -EMFILE);
  EXPECT_EQ(call(sys_close, {5}), 0);
  EXPECT_EQ(call(sys_pipe2, {alloc(8), 0}), -EMFILE);  // needs two
  EXPECT_EQ(proc_->fds.get(5), nullptr);                // and leaves none behind
  EXPECT_EQ(call(sys_dup, {0}), 5);
}

TEST_F(FileSyscalls, StatAccessAndStatx) {
  uint64_t b = alloc(sizeof(struct stat));
  EXPECT_EQ(call(sys_stat, {str(ro_ + "/data.txt"), b}), 0);
  EXPECT_EQ(get<struct stat>(b).st_size, 14);
  EXPECT_TRUE(S_ISREG(get<struct stat>(b).st_mode));
  EXPECT_EQ(call(sys_stat, {str(out_ + "/secret"), b}), -EACCES);
  EXPECT_EQ(call(sys_stat, {str(ro_ + "/none"), b}), -ENOENT);

  ASSERT_EQ(::symlink("data.txt", (ro_ + "/link").c_str()), 0);
  EXPECT_EQ(call(sys_lstat, {str(ro_ + "/link"), b}), 0);
  EXPECT_TRUE(S_ISLNK(get<struct stat>(b).st_mode));
  EXPECT_EQ(call(sys_newfstatat, {kFdcwd, str(ro_ + "/link"), b, 0}), 0);
  EXPECT_TRUE(S_ISREG(get<struct stat>(b).st_mode));
  EXPECT_EQ(call(sys_newfstatat, {kFdcwd, str(ro_ + "/link"), b, AT_SYMLINK_NOFOLLOW}), 0);
  EXPECT_TRUE(S_ISLNK(get<struct stat>(b).st_mode));
  EXPECT_EQ(call(sys_newfstatat, {kFdcwd, str(ro_ + "/link"), b, 0x1}), -EINVAL);

  int64_t fd = open(ro_ + "/data.txt", O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(call(sys_fstat, {uint64_t(fd), b}), 0);
  EXPECT_EQ(get<struct stat>(b).st_size, 14);
  EXPECT_EQ(call(sys_newfstatat, {uint64_t(fd), str(""), b, AT_EMPTY_PATH}), 0);
  EXPECT_EQ(get<struct stat>(b).st_size, 14);
  EXPECT_EQ(call(sys_newfstatat, {uint64_t(fd), str(""), b, 0}), -ENOENT);
  EXPECT_EQ(call(sys_newfstatat, {kFdcwd, str(""), b, AT_EMPTY_PATH}), 0);  // the cwd
  EXPECT_TRUE(S_ISDIR(get<struct stat>(b).st_mode));

  uint64_t sx = alloc(sizeof(struct statx));
  EXPECT_EQ(call(sys_statx, {kFdcwd, str(ro_ + "/data.txt"), 0, STATX_SIZE, sx}), 0);
  EXPECT_EQ(get<struct statx>(sx).stx_size, 14u);
  EXPECT_EQ(call(sys_statx, {uint64_t(fd), str(""), AT_EMPTY_PATH, STATX_BASIC_STATS, sx}), 0);
  EXPECT_EQ(get<struct statx>(sx).stx_size, 14u);
  EXPECT_EQ(call(sys_statx, {kFdcwd, str(ro_ + "/link"), AT_SYMLINK_NOFOLLOW, STATX_MODE, sx}), 0);
  EXPECT_TRUE(S_ISLNK(get<struct statx>(sx).stx_mode));
  EXPECT_EQ(call(sys_statx, {kFdcwd, str(out_ + "/secret"), 0, STATX_SIZE, sx}), -EACCES);
  EXPECT_EQ(call(sys_statx, {kFdcwd, str(ro_), 0, STATX__RESERVED, sx}), -EINVAL);

  EXPECT_EQ(call(sys_access, {str(ro_ + "/data.txt"), R_OK}), 0);
  EXPECT_EQ(call(sys_access, {str(ro_ + "/data.txt"), W_OK}), -EACCES);  // the policy, even for root
  EXPECT_EQ(call(sys_access, {str(out_ + "/secret"), F_OK}), -EACCES);
  EXPECT_EQ(call(sys_access, {str(rw_ + "/none"), F_OK}), -ENOENT);
  EXPECT_EQ(call(sys_faccessat, {kFdcwd, str(ro_ + "/data.txt"), 8}), -EINVAL);
  spit(rw_ + "/w", "");
  EXPECT_EQ(call(sys_faccessat2, {kFdcwd, str(rw_ + "/w"), W_OK, AT_EACCESS}), 0);
  EXPECT_EQ(call(sys_faccessat2, {kFdcwd, str(rw_ + "/w"), W_OK, 0x4}), -EINVAL);
  EXPECT_EQ(call(sys_faccessat2, {uint64_t(fd), str(""), R_OK, AT_EMPTY_PATH}), 0);
  EXPECT_EQ(call(sys_faccessat2, {uint64_t(fd), str(""), W_OK, AT_EMPTY_PATH}), -EACCES);

  uint64_t fs = alloc(sizeof(struct statfs));
  EXPECT_EQ(call(sys_statfs, {str(ro_), fs}), 0);
  EXPECT_GT(get<struct statfs>(fs).f_bsize, 0);
  EXPECT_EQ(call(sys_fstatfs, {uint64_t(fd), fs}), 0);
  EXPECT_EQ(call(sys_statfs, {str(out_), fs}), -EACCES);
}

TEST_F(FileSyscalls, MetadataChangesNeedWriteGrant) {
  int64_t ro = open(ro_ + "/data.txt", O_RDONLY);
  ASSERT_GE(ro, 0);
  EXPECT_EQ(call(sys_fchmod, {uint64_t(ro), 0600}), -EACCES);
  EXPECT_EQ(call(sys_chmod, {str(ro_ + "/data.txt"), 0600}), -EACCES);
  struct stat st;
  ASSERT_EQ(::stat((ro_ + "/data.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);

  int64_t rw = open(rw_ + "/m.txt", O_CREAT | O_RDONLY);
  ASSERT_GE(rw, 0);
  EXPECT_EQ(call(sys_fchmod, {uint64_t(rw), 0600}), 0);
  ASSERT_EQ(::stat((rw_ + "/m.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(call(sys_fchmodat, {kFdcwd, str("m.txt"), 0640}), 0);
  ASSERT_EQ(::stat((rw_ + "/m.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  // ftruncate needs an fd open for writing; truncate needs a write grant.
  EXPECT_EQ(call(sys_ftruncate, {uint64_t(rw), 0}), -EINVAL);
  int64_t w = open(rw_ + "/m.txt", O_WRONLY);
  EXPECT_EQ(write(w, "0123456789"), 10);
  EXPECT_EQ(call(sys_ftruncate, {uint64_t(w), 4}), 0);
  EXPECT_EQ(slurp(rw_ + "/m.txt"), "0123");
  EXPECT_EQ(call(sys_ftruncate, {uint64_t(w), uint64_t(-1)}), -EINVAL);
  EXPECT_EQ(call(sys_truncate, {str(rw_ + "/m.txt"), 2}), 0);
  EXPECT_EQ(slurp(rw_ + "/m.txt"), "01");
  EXPECT_EQ(call(sys_truncate, {str(ro_ + "/data.txt"), 0}), -EACCES);
  EXPECT_EQ(slurp(ro_ + "/data.txt"), "read-only data");
  EXPECT_EQ(call(sys_truncate, {str(rw_), 0}), -EISDIR);
  EXPECT_EQ(call(sys_fsync, {uint64_t(w)}), 0);
  EXPECT_EQ(call(sys_fdatasync, {uint64_t(w)}), 0);
  EXPECT_EQ(call(sys_fsync, {999}), -EBADF);

  // utimensat by path and by fd (NULL path).
  timespec times[2] = {{1000000000, 0}, {1000000000, 0}};
  uint64_t ut = alloc(sizeof times);
  ASSERT_TRUE(as_->copy_to_user(ut, times, sizeof times));
  EXPECT_EQ(call(sys_utimensat, {kFdcwd, str(rw_ + "/m.txt"), ut, 0}), 0);
  ASSERT_EQ(::stat((rw_ + "/m.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1000000000);
  EXPECT_EQ(call(sys_utimensat, {kFdcwd, str(ro_ + "/data.txt"), ut, 0}), -EACCES);
  EXPECT_EQ(call(sys_utimensat, {uint64_t(w), 0, 0, 0}), 0);
  ASSERT_EQ(::stat((rw_ + "/m.txt").c_str(), &st), 0);
  EXPECT_GT(st.st_mtime, 1000000000);
  EXPECT_EQ(call(sys_utimensat, {uint64_t(ro), 0, ut, 0}), -EACCES);
  EXPECT_EQ(call(sys_utimensat, {kFdcwd, 0, ut, 0}), -EFAULT);
  EXPECT_EQ(call(sys_utimensat, {uint64_t(w), 0, ut, AT_SYMLINK_NOFOLLOW}), -EINVAL);
}

TEST_F(FileSyscalls, Sendfile) {
  int64_t in = open(ro_ + "/data.txt", O_RDONLY);
  int64_t out = open(rw_ + "/copy", O_CREAT | O_WRONLY);
  ASSERT_GE(in, 0);
  ASSERT_GE(out, 0);
  uint64_t off = alloc(8);
  ASSERT_TRUE(as_->write<int64_t>(off, 5));
  EXPECT_EQ(call(sys_sendfile, {uint64_t(out), uint64_t(in), off, 100}), 9);
  EXPECT_EQ(get<int64_t>(off), 14);
  EXPECT_EQ(call(sys_lseek, {uint64_t(in), 0, SEEK_CUR}), 0);  // an offset pointer leaves the file's alone
  EXPECT_EQ(call(sys_sendfile, {uint64_t(out), uint64_t(in), 0, 4}), 4);
  EXPECT_EQ(slurp(rw_ + "/copy"), "only dataread");
  EXPECT_EQ(call(sys_sendfile, {uint64_t(out), uint64_t(in), kUnmapped, 4}), -EFAULT);
  EXPECT_EQ(call(sys_sendfile, {999, uint64_t(in), 0, 4}), -EBADF);
}

// A lock wait (F_OFD_SETLKW) leaves the process lock free, so the guest's other threads go on (one
// of them may be the one to release the lock) and a kick ends the wait. It once held the lock:
// every other thread stopped at its next syscall, the guest fuzzer's watchdog too (seed 103).
TEST_F(FileSyscalls, LockWaitLeavesTheProcessLockFree) {
  const int64_t a = open(rw_ + "/lock", O_CREAT | O_RDWR), b = open(rw_ + "/lock", O_RDWR);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  struct flock lock{};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_len = 1;
  const uint64_t ulock = alloc(sizeof lock);
  ASSERT_TRUE(as_->write(ulock, lock));
  ASSERT_EQ(call(sys_fcntl, {uint64_t(a), F_OFD_SETLK, ulock}), 0);
  EXPECT_EQ(call(sys_fcntl, {uint64_t(b), F_OFD_SETLK, ulock}), -EAGAIN);

  auto vcpu = kvm::Vcpu::without_kvm(0);
  proc_->attach(vcpu.get());
  std::atomic<int64_t> result{1};
  std::thread waiter([&] {
    vcpu->bind_to_this_thread();
    std::unique_lock<std::mutex> lk(proc_->lock.mutex);
    Process::holds_lock = true;  // as the vCPU loop runs a handler
    result = call(sys_fcntl, {uint64_t(b), F_OFD_SETLKW, ulock});
    Process::holds_lock = false;
  });
  bool free = false;
  for (int i = 0; i < 200 && !free; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (result == 1 && proc_->lock.mutex.try_lock()) {
      free = result == 1;  // still waiting, and the process lock was ours
      proc_->lock.mutex.unlock();
    }
  }
  EXPECT_TRUE(free);
  while (result == 1) {
    vcpu->kick();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  waiter.join();
  EXPECT_EQ(result, -EINTR);
}

TEST_F(FileSyscalls, SpliceTeeAndVmspliceMoveDataOnTheHost) {
  spit(rw_ + "/src", "0123456789");
  const int64_t src = open(rw_ + "/src", O_RDONLY);
  const int64_t dst = open(rw_ + "/dst", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(src, 0);
  ASSERT_GE(dst, 0);
  const uint64_t fds = alloc(8), fds2 = alloc(8);
  ASSERT_EQ(call(sys_pipe2, {fds, O_NONBLOCK}), 0);
  ASSERT_EQ(call(sys_pipe2, {fds2, O_NONBLOCK}), 0);
  const auto r = uint64_t(get<int32_t>(fds)), w = uint64_t(get<int32_t>(fds + 4));
  const auto r2 = uint64_t(get<int32_t>(fds2)), w2 = uint64_t(get<int32_t>(fds2 + 4));
  // A file into a pipe from offset 2 (the file's own offset stays), then the pipe into a file.
  const uint64_t off = alloc(8);
  ASSERT_TRUE(as_->write<int64_t>(off, 2));
  EXPECT_EQ(call(sys_splice, {uint64_t(src), off, w, 0, 5, 0}), 5);
  EXPECT_EQ(get<int64_t>(off), 7);
  EXPECT_EQ(call(sys_lseek, {uint64_t(src), 0, SEEK_CUR}), 0);
  EXPECT_EQ(call(sys_tee, {r, w2, 100, 0}), 5);  // a copy; the first pipe keeps its bytes
  EXPECT_EQ(call(sys_splice, {r, 0, uint64_t(dst), 0, 100, 0}), 5);
  EXPECT_EQ(slurp(rw_ + "/dst"), "23456");
  EXPECT_EQ(read(int64_t(r2), 16), "23456");
  // Refusals: no pipe on either side, an offset for a pipe, a write-only source, bad flags.
  EXPECT_EQ(call(sys_splice, {uint64_t(src), 0, uint64_t(dst), 0, 5, 0}), -EINVAL);
  EXPECT_EQ(call(sys_splice, {r, off, uint64_t(dst), 0, 5, 0}), -ESPIPE);
  EXPECT_EQ(call(sys_splice, {w, 0, uint64_t(dst), 0, 5, 0}), -EBADF);
  EXPECT_EQ(call(sys_splice, {uint64_t(src), 0, w, 0, 5, 0x100}), -EINVAL);
  EXPECT_EQ(call(sys_splice, {r, 0, uint64_t(dst), 0, 5, SPLICE_F_NONBLOCK}), -EAGAIN);  // empty
  // vmsplice: guest memory into the pipe, then the pipe's bytes back into guest memory.
  const uint64_t data = str("vmspliced"), iov = alloc(16), back = alloc(16), iov2 = alloc(16);
  ASSERT_TRUE(as_->write<uint64_t>(iov, data));
  ASSERT_TRUE(as_->write<uint64_t>(iov + 8, 9));
  EXPECT_EQ(call(sys_vmsplice, {w, iov, 1, 0}), 9);
  ASSERT_TRUE(as_->write<uint64_t>(iov2, back));
  ASSERT_TRUE(as_->write<uint64_t>(iov2 + 8, 16));
  EXPECT_EQ(call(sys_vmsplice, {r, iov2, 1, 0}), 9);
  EXPECT_EQ(peek(back, 9), "vmspliced");
  EXPECT_EQ(call(sys_vmsplice, {uint64_t(src), iov, 1, 0}), -EBADF);  // not a pipe
}

}  // namespace
}  // namespace kvms::linux

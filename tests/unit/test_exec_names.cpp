// execve/execveat: which file the host is asked to run and by what name (the host's loading of it
// is the KVM suite's and gVisor's exec_test's business).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "guest_scratch.hpp"
#include "linux/policy.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kScratch = 0x10000000;
constexpr uint64_t kScratchSize = 1 << 20;
constexpr uint64_t kFdcwd = uint64_t(int64_t(AT_FDCWD));

// Records what execve was asked to run; runs nothing.
class RecordingHost : public ProcessHost {
 public:
  int64_t fork(Process&, const CloneRequest&) override { return -ENOSYS; }
  int64_t clone_thread(Process&, const CloneRequest&) override { return -ENOSYS; }
  int64_t execve(Process&, const ExecName& name, std::vector<std::string>, std::vector<std::string>) override {
    asked = name;
    return 0;
  }
  std::optional<ExecName> asked;
};

class ExecNames : public ::testing::Test, protected GuestScratch {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("exec-test");
    std::ofstream(dir_ + "/prog") << "#!/bin/sh\nexit 0\n";
    ::chmod((dir_ + "/prog").c_str(), 0755);
    std::filesystem::create_symlink(dir_ + "/prog", dir_ + "/link");
    PolicyConfig cfg;
    cfg.read = {dir_};
    make_guest(kScratch, kScratchSize, cfg);
    proc_->cwd = dir_;
    proc_->host = &host_;
    argv_ = alloc(16);  // {NULL}
  }
  void TearDown() override { remove_guest_and(dir_); }
  int64_t open(const std::string& path, int flags) { return call(sys_openat, {kFdcwd, str(path), uint64_t(flags), 0}); }
  int64_t execveat(int64_t dirfd, const std::string& path, int flags) {
    host_.asked.reset();
    return call(sys_execveat, {uint64_t(dirfd), str(path), argv_, argv_, uint64_t(flags)});
  }

  std::string dir_;
  RecordingHost host_;
  uint64_t argv_ = 0;
};

TEST_F(ExecNames, EmptyPathRunsTheFileOfTheFdNamedDevFd) {
  const int64_t fd = open(dir_ + "/prog", O_PATH);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(execveat(fd, "", AT_EMPTY_PATH), 0);
  ASSERT_TRUE(host_.asked);
  EXPECT_EQ(host_.asked->guest_path, dir_ + "/prog");
  EXPECT_EQ(host_.asked->filename, "/dev/fd/" + std::to_string(fd));
  EXPECT_FALSE(host_.asked->filename_gone);
  // The same through an fd that closes on exec: a script could not be opened by that name.
  const int64_t cloexec_fd = open(dir_ + "/prog", O_RDONLY | O_CLOEXEC);
  ASSERT_EQ(execveat(cloexec_fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_TRUE(host_.asked->filename_gone);
}

TEST_F(ExecNames, EmptyPathRefusals) {
  const int64_t fd = open(dir_ + "/prog", O_RDONLY);
  EXPECT_EQ(execveat(fd, "", 0), -ENOENT);  // an empty name without AT_EMPTY_PATH
  const int64_t dirfd = open(dir_, O_DIRECTORY);
  EXPECT_EQ(execveat(dirfd, "", AT_EMPTY_PATH), -EACCES);  // a directory
  EXPECT_EQ(execveat(int64_t(AT_FDCWD), "", AT_EMPTY_PATH), -EACCES);
  EXPECT_EQ(execveat(99, "", AT_EMPTY_PATH), -EBADF);
  EXPECT_EQ(execveat(fd, "", 0x8000), -EINVAL);
  EXPECT_FALSE(host_.asked);
}

TEST_F(ExecNames, RelativeToADirectoryFd) {
  const int64_t dirfd = open(dir_, O_DIRECTORY);
  ASSERT_EQ(execveat(dirfd, "prog", 0), 0);
  EXPECT_EQ(host_.asked->guest_path, dir_ + "/prog");
  EXPECT_EQ(host_.asked->filename, "/dev/fd/" + std::to_string(dirfd) + "/prog");
  EXPECT_FALSE(host_.asked->filename_gone);
  const int64_t cloexec_dirfd = open(dir_, O_DIRECTORY | O_CLOEXEC);
  ASSERT_EQ(execveat(cloexec_dirfd, "prog", 0), 0);
  EXPECT_TRUE(host_.asked->filename_gone);
  // An absolute path ignores the fd, and is the name.
  ASSERT_EQ(execveat(-1, dir_ + "/prog", 0), 0);
  EXPECT_EQ(host_.asked->filename, dir_ + "/prog");
}

TEST_F(ExecNames, SymlinkNoFollowRefusesOnlyAFinalSymlink) {
  EXPECT_EQ(execveat(int64_t(AT_FDCWD), dir_ + "/link", AT_SYMLINK_NOFOLLOW), -ELOOP);
  const int64_t dirfd = open(dir_, O_DIRECTORY);
  EXPECT_EQ(execveat(dirfd, "link", AT_SYMLINK_NOFOLLOW), -ELOOP);
  EXPECT_FALSE(host_.asked);
  EXPECT_EQ(execveat(int64_t(AT_FDCWD), dir_ + "/link", 0), 0);  // followed without the flag
  EXPECT_EQ(execveat(int64_t(AT_FDCWD), dir_ + "/prog", AT_SYMLINK_NOFOLLOW), 0);
}

}  // namespace
}  // namespace kvms::linux

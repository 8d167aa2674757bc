// Opening canonical host paths without following symlinks (host_fs.hpp): openat2's
// RESOLVE_NO_SYMLINKS, and the component-wise walk used where the host has no openat2. A directory
// swapped for a symlink to somewhere else, at any moment, never leads the open outside.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "linux/host_fs.hpp"

namespace kvms::linux::fileops {
namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class HostFs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvms-hostfs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    char* real = ::realpath(tmpl, nullptr);
    root_ = real;
    ::free(real);
    fs::create_directories(root_ + "/in/d");
    fs::create_directories(root_ + "/out");
    std::ofstream(root_ + "/in/d/file") << "inside";
    std::ofstream(root_ + "/out/file") << "outside";
    fs::create_directory_symlink(root_ + "/out", root_ + "/in/link");
    fs::create_symlink(root_ + "/out/file", root_ + "/in/filelink");
  }
  void TearDown() override { fs::remove_all(root_); }

  using Opener = int (*)(const std::string&, int, mode_t);
  void expect_no_symlink_followed(Opener open) {
    const int fd = open(root_ + "/in/d/file", O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    ::close(fd);
    EXPECT_LT(open(root_ + "/in/link/file", O_RDONLY, 0), 0);                        // a directory symlink
    EXPECT_EQ(open(root_ + "/in/filelink", O_RDONLY, 0), -ELOOP);                    // the last component
    EXPECT_LT(open(root_ + "/in/link/new", O_WRONLY | O_CREAT, 0644), 0);           // creating through one
    EXPECT_FALSE(fs::exists(root_ + "/out/new"));
    const int dir = open("/", O_PATH | O_DIRECTORY, 0);
    ASSERT_GE(dir, 0);
    ::close(dir);
  }

  std::string root_;
};

TEST_F(HostFs, OpenHostFollowsNoSymlink) { expect_no_symlink_followed(open_host); }
TEST_F(HostFs, TheComponentWiseWalkFollowsNoSymlink) { expect_no_symlink_followed(open_componentwise); }

TEST_F(HostFs, TheComponentWiseWalkWantsCanonicalAbsolutePaths) {
  EXPECT_EQ(open_componentwise("relative/path", O_RDONLY, 0), -EINVAL);
  EXPECT_EQ(open_componentwise(root_ + "/in/../out/file", O_RDONLY, 0), -EINVAL);
  EXPECT_EQ(open_componentwise(root_ + "/in/./d/file", O_RDONLY, 0), -EINVAL);
  EXPECT_EQ(open_componentwise(root_ + "/in/d/file/", O_RDONLY, 0), -ENOTDIR);
}

TEST_F(HostFs, ParentOfASwappedPathIsNotOpened) {
  std::string name;
  EXPECT_LT(open_parent(root_ + "/in/link/file", name), 0);
  const int dir = open_parent(root_ + "/in/d/file", name);
  ASSERT_GE(dir, 0);
  EXPECT_EQ(name, "file");
  ::close(dir);
}

// A thread swaps in/d between the real directory and a symlink to out/ while opens for writing go
// through in/d: whatever the interleaving, out/ is never written.
TEST_F(HostFs, ADirectorySwappedForASymlinkMidWalkIsNeverFollowed) {
  for (Opener open : {open_host, open_componentwise}) {
    std::atomic<bool> stop{false};
    std::thread swapper([&] {
      const std::string d = root_ + "/in/d", real = root_ + "/in/d.real";
      while (!stop) {
        ::rename(d.c_str(), real.c_str());
        ::symlink((root_ + "/out").c_str(), d.c_str());
        std::this_thread::yield();
        ::unlink(d.c_str());
        ::rename(real.c_str(), d.c_str());
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    });
    int opened = 0;
    for (int i = 0; i < 3000; ++i) {
      const int fd = open(root_ + "/in/d/file", O_WRONLY | O_TRUNC, 0);
      if (fd < 0) continue;
      ++opened;
      EXPECT_EQ(::write(fd, "written", 7), 7);
      ::close(fd);
      const int created = open(root_ + "/in/d/created", O_WRONLY | O_CREAT, 0644);
      if (created >= 0) ::close(created);
    }
    stop = true;
    swapper.join();
    if (!fs::exists(root_ + "/in/d")) fs::rename(root_ + "/in/d.real", root_ + "/in/d");
    EXPECT_GT(opened, 0);
    EXPECT_EQ(read_file(root_ + "/out/file"), "outside");
    EXPECT_FALSE(fs::exists(root_ + "/out/created"));
  }
}

}  // namespace
}  // namespace kvms::linux::fileops

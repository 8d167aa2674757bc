// worker_process(): a worker's private copies of the template's files, made at every reset from
// what the files held when the template paused (record_paused_files), not from what they hold now.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "guest_scratch.hpp"
#include "linux/policy.hpp"
#include "server/worker.hpp"

namespace kvms::server {
namespace {

using linux::OpenFile;
using linux::PathPolicy;
using linux::PolicyConfig;
using linux::Process;
using linux::ProcessConfig;

constexpr uint64_t kScratch = 0x10000000;
constexpr uint64_t kScratchSize = 1 << 20;
constexpr uint64_t kFdcwd = uint64_t(int64_t(AT_FDCWD));

class WorkerFiles : public ::testing::Test, protected linux::GuestScratch {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("worker-files");
    std::ofstream(dir_ + "/data") << "0123456789";
    PolicyConfig cfg;
    cfg.read = {dir_};
    make_guest(kScratch, kScratchSize, cfg);
  }
  void TearDown() override { remove_guest_and(dir_); }
  int host(const Process& p, int64_t fd) { return p.fds.get(int(fd))->host_fd; }

  std::string dir_;
};

TEST_F(WorkerFiles, CopiesAreMadeFromThePausedState) {
  const int64_t file = call(linux::sys_openat, {kFdcwd, str(dir_ + "/data"), O_RDONLY, 0});
  ASSERT_GE(file, 0);
  ASSERT_EQ(call(linux::sys_lseek, {uint64_t(file), 4, SEEK_SET}), 4);
  const int64_t counter = call(linux::sys_eventfd2, {3, EFD_SEMAPHORE});
  ASSERT_GE(counter, 0);
  const uint64_t ends_addr = alloc(8);
  ASSERT_EQ(call(linux::sys_pipe2, {ends_addr, 0}), 0);
  int32_t ends[2];
  ASSERT_TRUE(as_->read(ends_addr, ends));

  record_paused_files(*proc_);
  // The template's files change afterwards (a child process of the template could do this): the
  // workers still start from the pause.
  ASSERT_EQ(::lseek(host(*proc_, file), 8, SEEK_SET), 8);
  const uint64_t more = 10;
  ASSERT_EQ(::write(host(*proc_, counter), &more, 8), 8);
  ASSERT_EQ(::write(host(*proc_, ends[1]), "x", 1), 1);

  auto worker = worker_process(*proc_, as_);
  ASSERT_NE(host(*worker, file), host(*proc_, file));
  EXPECT_EQ(::lseek(host(*worker, file), 0, SEEK_CUR), 4);
  char buf[4] = {};
  EXPECT_EQ(::read(host(*worker, file), buf, 2), 2);
  EXPECT_EQ(std::string(buf, 2), "45");

  // The eventfd: count 3 in semaphore mode: three reads of 1, then nothing (O_NONBLOCK set here).
  const int ev = host(*worker, counter);
  ASSERT_NE(ev, host(*proc_, counter));
  ASSERT_EQ(::fcntl(ev, F_SETFL, O_NONBLOCK), 0);
  uint64_t got = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(::read(ev, &got, 8), 8);
    EXPECT_EQ(got, 1u);
  }
  EXPECT_EQ(::read(ev, &got, 8), -1);

  // The pipe: a new, empty one whose two ends are connected to each other.
  const int r = host(*worker, ends[0]), w = host(*worker, ends[1]);
  ASSERT_NE(r, host(*proc_, ends[0]));
  ASSERT_EQ(::fcntl(r, F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(::read(r, buf, 1), -1);  // the template's "x" is not there
  ASSERT_EQ(::write(w, "y", 1), 1);
  ASSERT_EQ(::read(r, buf, 1), 1);
  EXPECT_EQ(buf[0], 'y');
}

}  // namespace
}  // namespace kvms::server

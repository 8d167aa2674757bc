// The caps of issue 9 (src/linux/limits.hpp and where they are enforced), without KVM: the account
// and its charges, the mapping list's bound, fds, epoll registrations, timers, queued signals,
// pipes and sockets, and files in a private /tmp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/file_quota.hpp"
#include "linux/limits.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kBuf = 0x100000;  // a 1 MiB read-write buffer in every test process

TEST(ResourceAccount, ChargesWithinTheLimitOnly) {
  Limits l;
  l.processes = 3;
  ResourceAccount a(l);
  EXPECT_TRUE(a.charge(ResourceAccount::kProcesses, 2));
  EXPECT_FALSE(a.charge(ResourceAccount::kProcesses, 2));  // all or nothing
  EXPECT_EQ(a.used(ResourceAccount::kProcesses), 2u);
  EXPECT_TRUE(a.first_refusal(ResourceAccount::kProcesses));
  EXPECT_FALSE(a.first_refusal(ResourceAccount::kProcesses));  // logged once
  EXPECT_TRUE(a.charge(ResourceAccount::kProcesses, 1));
  a.release(ResourceAccount::kProcesses, 3);
  EXPECT_EQ(a.used(ResourceAccount::kProcesses), 0u);
  EXPECT_EQ(a.peak(ResourceAccount::kProcesses), 3u);
  EXPECT_EQ(a.refusals(ResourceAccount::kProcesses), 1u);
  EXPECT_FALSE(a.charge(ResourceAccount::kProcesses, ~0ull));  // no overflow
  EXPECT_EQ(a.describe_limit(ResourceAccount::kProcesses), "--max-processes=3");
  a.set_limit(ResourceAccount::kMemory, 5 * kMiB, "--max-request-memory=4");
  EXPECT_EQ(a.describe_limit(ResourceAccount::kMemory), "--max-request-memory=4");
}

TEST(Charge, GivesBackWhatItHoldsAndCopiesHoldNothing) {
  auto a = std::make_shared<ResourceAccount>(Limits{});
  {
    Charge c(a, ResourceAccount::kTimers);
    EXPECT_TRUE(c.grow(5));
    Charge copy = c;  // a copied holder is charged by whoever copies it
    EXPECT_EQ(copy.amount(), 0u);
    EXPECT_TRUE(copy.grow(1));
    Charge moved = std::move(c);
    EXPECT_EQ(moved.amount(), 5u);
    EXPECT_EQ(a->used(ResourceAccount::kTimers), 6u);
    moved.set_unchecked(2);
    EXPECT_EQ(a->used(ResourceAccount::kTimers), 3u);
  }
  EXPECT_EQ(a->used(ResourceAccount::kTimers), 0u);
  Charge none;
  EXPECT_FALSE(none.grow(1));  // no account: nothing can be held
}

class Caps : public ::testing::Test {
 protected:
  void SetUp() override { make(ProcessConfig{}); }

  void make(ProcessConfig config, std::shared_ptr<const PathPolicy> policy = nullptr) {
    mem_ = kvm::GuestMemory::create(8ull << 30, 64 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem_);
    ASSERT_EQ(as_->map(kBuf, kMiB, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    proc_ = std::make_unique<Process>(as_, std::move(policy), config);
  }
  Process& p() { return *proc_; }
  int64_t call(uint64_t nr, std::initializer_list<uint64_t> args) {
    SyscallArgs a;
    a.nr = nr;
    size_t i = 0;
    for (uint64_t v : args) a.a[i++] = v;
    return dispatch_syscall(p(), a);
  }
  uint64_t str(const std::string& s) {
    EXPECT_TRUE(as_->copy_to_user(kBuf + kMiB - 4096, s.c_str(), s.size() + 1));
    return kBuf + kMiB - 4096;
  }
  std::shared_ptr<kvm::GuestMemory> mem_;
  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> proc_;
};

TEST_F(Caps, TheMappingListIsBounded) {
  // Every other page of a big reservation made accessible: each one a list entry.
  const uint64_t base = 0x1'0000'0000ull, pages = kvm::AddressSpace::kMaxMappings + 10;
  ASSERT_EQ(as_->map(base, pages * kPage, kvm::kProtNone, ""), 0);
  int64_t rc = 0;
  uint64_t i = 0;
  for (; i < pages; i += 2)
    if ((rc = call(SYS_mprotect, {base + i * kPage, kPage, PROT_READ})) != 0) break;
  EXPECT_EQ(rc, -ENOMEM);
  EXPECT_LE(as_->mapping_count(), kvm::AddressSpace::kMaxMappings);
  EXPECT_GT(as_->mapping_count(), kvm::AddressSpace::kMaxMappings - 3);
  // An munmap that removes whole entries still works.
  EXPECT_EQ(call(SYS_munmap, {base + 3 * kPage, kPage}), 0);  // a whole entry (a PROT_NONE gap) goes
  // The accessible-bytes count kept on the way matches a recount.
  uint64_t recount = 0;
  for (const auto& [start, m] : as_->mappings())
    if (m.prot != kvm::kProtNone) recount += m.end - start;
  EXPECT_EQ(as_->mapped_bytes(), recount);
}

TEST_F(Caps, FdsPerProcess) {
  ProcessConfig c;
  c.limits.fds = 20;
  make(c);
  EXPECT_EQ(p().fds.limit(), 20);
  int64_t fd = 0;
  int opened = 0;
  while ((fd = call(SYS_eventfd2, {0, 0})) >= 0) ++opened;
  EXPECT_EQ(fd, -EMFILE);
  EXPECT_EQ(opened, 20);
  EXPECT_EQ(p().fds.open_count(), 20u);
  EXPECT_EQ(call(SYS_close, {5}), 0);
  EXPECT_EQ(p().fds.open_count(), 19u);
  // The guest may lower its limit but never raise it past the cap.
  struct { uint64_t cur, max; } r{30, 30};
  ASSERT_TRUE(as_->write(kBuf, r));
  EXPECT_EQ(call(SYS_prlimit64, {0, RLIMIT_NOFILE, kBuf, 0}), -EPERM);
}

TEST_F(Caps, EpollRegistrationsPerTree) {
  ProcessConfig c;
  c.limits.epoll_watches = 3;
  make(c);
  const int64_t ep = call(SYS_epoll_create1, {0});
  ASSERT_GE(ep, 0);
  struct __attribute__((packed)) {
    uint32_t events;
    uint64_t data;
  } ev{EPOLLIN, 0};
  ASSERT_TRUE(as_->write(kBuf, ev));
  int64_t fds[5];
  for (auto& fd : fds) fd = call(SYS_eventfd2, {0, 0});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(call(SYS_epoll_ctl, {uint64_t(ep), EPOLL_CTL_ADD, uint64_t(fds[i]), kBuf}), 0);
  EXPECT_EQ(call(SYS_epoll_ctl, {uint64_t(ep), EPOLL_CTL_ADD, uint64_t(fds[3]), kBuf}), -ENOSPC);
  EXPECT_EQ(p().account().used(ResourceAccount::kEpollWatches), 3u);
  // Removing one makes room again.
  EXPECT_EQ(call(SYS_epoll_ctl, {uint64_t(ep), EPOLL_CTL_DEL, uint64_t(fds[0]), 0}), 0);
  EXPECT_EQ(call(SYS_epoll_ctl, {uint64_t(ep), EPOLL_CTL_ADD, uint64_t(fds[3]), kBuf}), 0);
  // A closed fd's entry stays until its number is registered again (servers that close without
  // EPOLL_CTL_DEL reuse their fd numbers): that costs nothing more.
  EXPECT_EQ(call(SYS_close, {uint64_t(fds[1])}), 0);
  EXPECT_EQ(call(SYS_eventfd2, {0, 0}), fds[1]);
  EXPECT_EQ(call(SYS_epoll_ctl, {uint64_t(ep), EPOLL_CTL_ADD, uint64_t(fds[1]), kBuf}), 0);
  EXPECT_EQ(call(SYS_epoll_ctl, {uint64_t(ep), EPOLL_CTL_ADD, uint64_t(fds[4]), kBuf}), -ENOSPC);
  // The epoll's registrations go back to the tree with it.
  EXPECT_EQ(call(SYS_close, {uint64_t(ep)}), 0);
  EXPECT_EQ(p().account().used(ResourceAccount::kEpollWatches), 0u);
}

TEST_F(Caps, TimersPerTree) {
  ProcessConfig c;
  c.limits.timers = 2;
  make(c);
  const int64_t a = call(SYS_timerfd_create, {CLOCK_MONOTONIC, 0});
  const int64_t b = call(SYS_timerfd_create, {CLOCK_MONOTONIC, 0});
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(call(SYS_timerfd_create, {CLOCK_MONOTONIC, 0}), -ENOMEM);
  EXPECT_EQ(call(SYS_close, {uint64_t(a)}), 0);
  EXPECT_GE(call(SYS_timerfd_create, {CLOCK_MONOTONIC, 0}), 0);
}

TEST_F(Caps, PipesAndSocketsAreMemory) {
  ProcessConfig c;
  c.limits.memory = 12 * kMiB;  // the process itself costs about half of it (its VM)
  make(c);
  int pipes = 0, sockets = 0;
  int64_t rc;
  while ((rc = call(SYS_pipe2, {kBuf, 0})) == 0) ++pipes;
  EXPECT_EQ(rc, -ENFILE);
  EXPECT_GT(pipes, 5);
  EXPECT_LT(uint64_t(pipes), 6 * kMiB / host_cost::kPipe);
  EXPECT_LE(p().tree_memory_used(), p().memory_limit());
  while ((rc = call(SYS_socketpair, {AF_UNIX, SOCK_STREAM, 0, kBuf})) == 0) ++sockets;
  EXPECT_EQ(rc, -ENOBUFS);
  // Closing gives it back.
  for (int fd = 0; fd < 1024; ++fd) call(SYS_close, {uint64_t(fd)});
  EXPECT_EQ(call(SYS_pipe2, {kBuf, 0}), 0);
}

TEST_F(Caps, RealtimeSignalsQueueUpToTheCap) {
  ProcessConfig c;
  c.limits.pending_signals = 5;
  make(c);
  const int rt = 40;
  uint64_t blocked = 1ull << (rt - 1) | 1ull << (SIGUSR1 - 1);
  ASSERT_TRUE(as_->write(kBuf, blocked));
  ASSERT_EQ(call(SYS_rt_sigprocmask, {SIG_BLOCK, kBuf, 0, 8}), 0);
  siginfo_t info{};
  info.si_code = SI_QUEUE;
  for (int i = 0; i < 5; ++i) {
    info.si_value.sival_int = i;
    ASSERT_TRUE(as_->write(kBuf + 64, info));
    EXPECT_EQ(call(SYS_rt_sigqueueinfo, {uint64_t(p().pid), rt, kBuf + 64}), 0);
  }
  EXPECT_EQ(call(SYS_rt_sigqueueinfo, {uint64_t(p().pid), rt, kBuf + 64}), -EAGAIN);
  // A standard signal merges instead of queueing, and is not refused.
  EXPECT_EQ(call(SYS_kill, {uint64_t(p().pid), SIGUSR1}), 0);
  EXPECT_EQ(call(SYS_kill, {uint64_t(p().pid), SIGUSR1}), 0);
  // sigtimedwait takes the lowest signal first (as Linux does), the queued ones oldest first with
  // their values, then times out.
  const timespec zero{0, 0};
  ASSERT_TRUE(as_->write(kBuf + 512, zero));
  EXPECT_EQ(call(SYS_rt_sigtimedwait, {kBuf, kBuf + 256, kBuf + 512, 8}), SIGUSR1);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(call(SYS_rt_sigtimedwait, {kBuf, kBuf + 256, kBuf + 512, 8}), rt);
    siginfo_t got{};
    ASSERT_TRUE(as_->read(kBuf + 256, got));
    EXPECT_EQ(got.si_value.sival_int, i);
    EXPECT_EQ(got.si_code, SI_QUEUE);
  }
  EXPECT_EQ(call(SYS_rt_sigtimedwait, {kBuf, kBuf + 256, kBuf + 512, 8}), -EAGAIN);
  // Claiming a kernel si_code for another process is not allowed.
  info.si_code = SI_USER;
  ASSERT_TRUE(as_->write(kBuf + 64, info));
  EXPECT_EQ(call(SYS_rt_sigqueueinfo, {uint64_t(p().pid) + 1, rt, kBuf + 64}), -EPERM);
}

TEST_F(Caps, FilesInAPrivateTmp) {
  const std::string dir = std::filesystem::temp_directory_path() / ("kvms-tmpquota-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  PolicyConfig pc;
  pc.volumes.push_back({dir, "/tmp", true});
  ProcessConfig c;
  c.limits.tmp_bytes = 2 * kMiB;
  make(c, std::make_shared<PathPolicy>(pc));
  p().has_private_tmp = true;
  const int64_t fd = call(SYS_openat, {uint64_t(AT_FDCWD), str("/tmp/big"), O_WRONLY | O_CREAT, 0600});
  ASSERT_GE(fd, 0);
  int64_t total = 0, n;
  while ((n = call(SYS_write, {uint64_t(fd), kBuf, 256 * 1024})) > 0) total += n;
  EXPECT_EQ(n, -ENOSPC);
  EXPECT_GT(total, int64_t(kMiB));
  EXPECT_LE(uint64_t(total), 2 * kMiB);
  EXPECT_LE(p().account().used(ResourceAccount::kTmpBytes), 2 * kMiB);
  // New names cost a page each: at most the little that is left fits.
  int dirs = 0;
  while (call(SYS_mkdirat, {uint64_t(AT_FDCWD), str("/tmp/d" + std::to_string(dirs)), 0700}) == 0) ++dirs;
  EXPECT_LE(dirs, 2);
  EXPECT_EQ(call(SYS_mkdirat, {uint64_t(AT_FDCWD), str("/tmp/more"), 0700}), -ENOSPC);
  // Truncating and unlinking give the room back.
  EXPECT_EQ(call(SYS_ftruncate, {uint64_t(fd), 0}), 0);
  EXPECT_EQ(p().account().used(ResourceAccount::kTmpBytes), (dirs + 1) * kPage);  // an empty file: a page
  EXPECT_EQ(call(SYS_close, {uint64_t(fd)}), 0);
  EXPECT_EQ(call(SYS_unlinkat, {uint64_t(AT_FDCWD), str("/tmp/big"), 0}), 0);
  EXPECT_EQ(p().account().used(ResourceAccount::kTmpBytes), dirs * kPage);
  EXPECT_EQ(call(SYS_mkdirat, {uint64_t(AT_FDCWD), str("/tmp/more"), 0700}), 0);
  EXPECT_EQ(p().account().used(ResourceAccount::kTmpBytes), (dirs + 1) * kPage);
  std::filesystem::remove_all(dir);
}

// What unlink/rename are about to remove is looked at through the directory fd the policy walk
// opened, never by path again: with a directory of the path swapped for a symlink meanwhile, the
// path would name another file, whose charge would be forgotten while it stays (a way past
// --max-tmp-size).
TEST_F(Caps, TmpChargesFollowTheFileRemovedNotThePath) {
  const std::string dir = std::filesystem::temp_directory_path() / ("kvms-tmpswap-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir + "/a");
  std::filesystem::create_directories(dir + "/b");
  std::ofstream(dir + "/a/x") << "small";
  std::ofstream(dir + "/b/x") << std::string(100000, 'b');
  PolicyConfig pc;
  pc.volumes.push_back({dir, "/tmp", true});
  make(ProcessConfig{}, std::make_shared<PathPolicy>(pc));
  p().has_private_tmp = true;
  struct stat a{}, b{};
  ASSERT_EQ(::stat((dir + "/a/x").c_str(), &a), 0);
  ASSERT_EQ(::stat((dir + "/b/x").c_str(), &b), 0);
  const int a_dir = ::open((dir + "/a").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(a_dir, 0);
  std::filesystem::rename(dir + "/a", dir + "/a2");
  std::filesystem::create_directory_symlink(dir + "/b", dir + "/a");  // /tmp/a now leads to b
  EXPECT_EQ(tmp_inode_removed_by(p(), "/tmp/a/x", a_dir, "x"), a.st_ino);
  ::close(a_dir);
  std::filesystem::remove_all(dir);
}

TEST_F(Caps, ExecArgumentsAreBounded) {
  // A huge argv is E2BIG before anything is copied (the host would otherwise hold it all).
  const uint64_t strings = kBuf + 4096;
  std::string s(100 * 1024, 'a');
  ASSERT_TRUE(as_->copy_to_user(strings, s.c_str(), s.size() + 1));
  std::vector<uint64_t> argv(64, strings);
  argv.push_back(0);
  ASSERT_TRUE(as_->copy_to_user(kBuf + 512 * 1024, argv.data(), argv.size() * 8));
  class NoExec : public ProcessHost {
    int64_t fork(Process&, const CloneRequest&) override { return -ENOSYS; }
    int64_t clone_thread(Process&, const CloneRequest&) override { return -ENOSYS; }
    int64_t execve(Process&, const ExecName&, std::vector<std::string>, std::vector<std::string>) override {
      return 0;
    }
  } host;
  p().host = &host;
  EXPECT_EQ(call(SYS_execve, {str("/bin/true"), kBuf + 512 * 1024, 0}), -E2BIG);
  argv[8] = 0;  // 8 strings of 100 KiB fit in Linux's 2 MiB (a quarter of the 8 MiB stack)
  ASSERT_TRUE(as_->copy_to_user(kBuf + 512 * 1024, argv.data(), argv.size() * 8));
  EXPECT_EQ(call(SYS_execve, {str("/bin/true"), kBuf + 512 * 1024, 0}), 0);
  p().host = nullptr;
}

}  // namespace
}  // namespace kvms::linux

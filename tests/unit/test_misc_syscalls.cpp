// Identity, scheduling, capability, timer, memory-locking, memfd and futex handlers (misc.cpp,
// mmap.cpp, memfd.cpp, futex.cpp) on a Process over a real AddressSpace. No KVM needed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <sys/signalfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <climits>
#include <algorithm>
#include <chrono>
#include <thread>
#include <ctime>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/process_table.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kScratch = 0x100000;
constexpr uint64_t kScratchSize = 1 << 20;

class MiscSyscalls : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = kvm::GuestMemory::create(1ull << 30, 16 << 20);
    as_ = std::make_shared<kvm::AddressSpace>(mem_);
    ASSERT_EQ(as_->map(kScratch, kScratchSize, kvm::kProtRead | kvm::kProtWrite, ""), 0);
    ProcessConfig cfg;
    cfg.limits.memory = 8 << 20;
    proc_ = std::make_unique<Process>(as_, std::make_shared<PathPolicy>(PolicyConfig{}), cfg);
  }
  uint64_t str(const std::string& s) {
    const uint64_t a = next_;
    next_ += (s.size() + 16) & ~size_t(15);
    EXPECT_TRUE(as_->copy_to_user(a, s.c_str(), s.size() + 1));
    return a;
  }
  // A vDSO's clock page (the page below the vDSO), written once by the host as at start-up.
  uint64_t map_clock_page() {
    constexpr uint64_t kVvar = 0x800000;
    EXPECT_EQ(as_->map(kVvar, 4096, kvm::kProtRead | kvm::kProtWrite, "[vvar]"), 0);
    proc_->vdso_base = kVvar + 4096;
    proc_->clock.tsc_khz = 1000000;
    refresh_clock_page(*proc_);
    return kVvar;
  }
  int64_t call(SyscallHandler h, std::initializer_list<uint64_t> args) {
    SyscallArgs a;
    int i = 0;
    for (uint64_t v : args) a.a[i++] = v;
    return h(*proc_, a);
  }
  template <typename T> T get(uint64_t addr) {
    T v{};
    EXPECT_TRUE(as_->read(addr, v));
    return v;
  }

  std::shared_ptr<kvm::GuestMemory> mem_;
  std::shared_ptr<kvm::AddressSpace> as_;
  std::unique_ptr<Process> proc_;
  uint64_t next_ = kScratch + 0x80000;
};

TEST_F(MiscSyscalls, MemfdWritesTruncatesAndMaps) {
  const int64_t fd = call(sys_memfd_create, {str("jit"), MFD_CLOEXEC});
  ASSERT_GE(fd, 0);
  EXPECT_EQ(proc_->fds.get(int(fd))->path, "/memfd:jit (deleted)");
  EXPECT_TRUE(proc_->fds.cloexec(int(fd)));
  EXPECT_EQ(call(sys_ftruncate, {uint64_t(fd), 3 * 4096}), 0);
  EXPECT_EQ(call(sys_pwrite64, {uint64_t(fd), str("code"), 4, 4096}), 4);
  const int64_t addr = call(sys_mmap, {0, 3 * 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, uint64_t(fd), 0});
  ASSERT_GT(addr, 0);
  char buf[5] = {};
  ASSERT_TRUE(as_->copy_from_user(buf, uint64_t(addr) + 4096, 4));
  EXPECT_STREQ(buf, "code");
  // Shared: the memfd itself (issue 12), what a write through the mapping shows.
  const int64_t shared = call(sys_mmap, {0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, uint64_t(fd), 4096});
  ASSERT_GT(shared, 0);
  ASSERT_TRUE(as_->copy_to_user(uint64_t(shared), "CODE", 4));
  ASSERT_TRUE(as_->copy_from_user(buf, uint64_t(addr) + 4096, 4));  // the private copy keeps its bytes
  EXPECT_STREQ(buf, "code");
  const uint64_t into = str("....");
  EXPECT_EQ(call(sys_pread64, {uint64_t(fd), into, 4, 4096}), 4);
  ASSERT_TRUE(as_->copy_from_user(buf, into, 4));
  EXPECT_STREQ(buf, "CODE");
  EXPECT_EQ(call(sys_memfd_create, {str("x"), 0x100}), -EINVAL);
  EXPECT_EQ(call(sys_memfd_create, {str("x"), MFD_HUGETLB}), -EINVAL);
  EXPECT_EQ(call(sys_memfd_create, {str(std::string(300, 'n')), 0}), -EINVAL);
  EXPECT_EQ(call(sys_memfd_create, {0x900000, 0}), -EFAULT);
}

TEST_F(MiscSyscalls, MemfdBytesCountTowardMaxMemory) {
  const int64_t fd = call(sys_memfd_create, {str("big"), 0});
  ASSERT_GE(fd, 0);
  EXPECT_EQ(call(sys_ftruncate, {uint64_t(fd), 1ull << 40}), 0);  // sparse: costs nothing
  // 8 MiB limit, 1 MiB mapped and the process's own host costs: writes stop short at the limit,
  // then ENOSPC.
  const int64_t room = int64_t(proc_->memory_limit() - proc_->tree_memory_used());
  int64_t total = 0;
  for (int i = 0; i < 16; ++i) {
    const int64_t n = call(sys_pwrite64, {uint64_t(fd), kScratch, kScratchSize, uint64_t(i) * kScratchSize});
    if (n < 0) {
      EXPECT_EQ(n, -ENOSPC);
      break;
    }
    total += n;
  }
  EXPECT_LE(total, room);
  EXPECT_GE(total, room - 3 * 4096);
  EXPECT_LE(proc_->tree_memory_used(), proc_->memory_limit());
}

// getrandom writes guest memory in place: all of it or EFAULT, and nothing to copy for no bytes
// (it once memcpy'd from an empty vector's null data(), undefined behaviour UBSan reported).
// PR_SET_CHILD_SUBREAPER stores whether arg2 is nonzero; GET writes it as an int.
TEST_F(MiscSyscalls, ChildSubreaperIsABoolean) {
  int32_t value = -1;
  EXPECT_EQ(call(sys_prctl, {PR_GET_CHILD_SUBREAPER, kScratch}), 0);
  ASSERT_TRUE(as_->copy_from_user(&value, kScratch, sizeof value));
  EXPECT_EQ(value, 0);
  EXPECT_EQ(call(sys_prctl, {PR_SET_CHILD_SUBREAPER, 42}), 0);
  EXPECT_EQ(call(sys_prctl, {PR_GET_CHILD_SUBREAPER, kScratch}), 0);
  ASSERT_TRUE(as_->copy_from_user(&value, kScratch, sizeof value));
  EXPECT_EQ(value, 1);
  EXPECT_EQ(call(sys_prctl, {PR_SET_CHILD_SUBREAPER, 0}), 0);
  EXPECT_EQ(call(sys_prctl, {PR_GET_CHILD_SUBREAPER, kScratch}), 0);
  ASSERT_TRUE(as_->copy_from_user(&value, kScratch, sizeof value));
  EXPECT_EQ(value, 0);
  EXPECT_EQ(call(sys_prctl, {PR_GET_CHILD_SUBREAPER, 0}), -EFAULT);
}

// tkill/tgkill of another guest process's main thread (tid == pid) reach it through the table,
// with SI_TKILL; a zombie still takes the call; an unknown tid is ESRCH.
TEST_F(MiscSyscalls, TkillReachesAnotherProcessMainThread) {
  proc_->table = std::make_shared<ProcessTable>(proc_->pid);
  std::vector<siginfo_t> got;
  const int child = proc_->table->add_child(proc_->pid, [&](const siginfo_t& i) { got.push_back(i); });
  EXPECT_EQ(call(sys_tkill, {uint64_t(child), SIGUSR1}), 0);
  EXPECT_EQ(call(sys_tgkill, {uint64_t(child), uint64_t(child), SIGUSR2}), 0);
  EXPECT_EQ(call(sys_tgkill, {uint64_t(child), uint64_t(child) + 1000, SIGUSR2}), -ESRCH);
  EXPECT_EQ(call(sys_tkill, {uint64_t(child), 65}), -EINVAL);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].si_signo, SIGUSR1);
  EXPECT_EQ(got[0].si_code, SI_TKILL);
  EXPECT_EQ(got[1].si_signo, SIGUSR2);
  proc_->table->detach(child);
  proc_->table->exited(child, 0);
  EXPECT_EQ(call(sys_tkill, {uint64_t(child), SIGKILL}), 0);  // a zombie
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(call(sys_tkill, {uint64_t(child) + 1000, SIGKILL}), -ESRCH);
}

// A stop signal with the default action stops the process instead of ending it; SIGCONT's
// arrival (ignored by default all the same) ends the stop and drops pending stop signals.
TEST_F(MiscSyscalls, StopSignalStopsAndSigcontContinues) {
  ASSERT_EQ(send_signal_to_thread(*proc_, proc_->thread(), SIGSTOP, SI_USER, 9), 0);
  EXPECT_FALSE(take_signal(*proc_, proc_->thread()).has_value());
  EXPECT_FALSE(proc_->exit_status.has_value());
  EXPECT_EQ(proc_->lock.group_stop.load(), SIGSTOP);
  ASSERT_EQ(send_signal_to_thread(*proc_, proc_->thread(), SIGTSTP, SI_USER, 9), 0);  // pending
  ASSERT_EQ(send_signal_to_thread(*proc_, proc_->thread(), SIGCONT, SI_USER, 9), 0);
  EXPECT_EQ(proc_->lock.group_stop.load(), 0);
  EXPECT_TRUE(proc_->lock.continued.load());
  EXPECT_EQ(proc_->thread().pending_signals, 0u);  // SIGTSTP dropped, SIGCONT ignored by default
}

TEST_F(MiscSyscalls, GetrandomFillsGuestMemoryInPlace) {
  EXPECT_EQ(call(sys_getrandom, {0, 0, 0}), 0);
  EXPECT_EQ(call(sys_getrandom, {kScratch, 0, GRND_NONBLOCK}), 0);
  EXPECT_EQ(call(sys_getrandom, {kScratch, 64, 0}), 64);
  uint64_t words[8];
  ASSERT_TRUE(as_->copy_from_user(words, kScratch, sizeof words));
  uint64_t any = 0;
  for (uint64_t w : words) any |= w;
  EXPECT_NE(any, 0u);
  EXPECT_EQ(call(sys_getrandom, {kScratch + kScratchSize - 16, 32, 0}), -EFAULT);  // runs off the mapping
  EXPECT_EQ(call(sys_getrandom, {kScratch, 1ull << 40, 0}), -EFAULT);  // 32 MiB (the cap) do not fit either
  EXPECT_EQ(call(sys_getrandom, {kScratch, 16, 0x80}), -EINVAL);
  EXPECT_EQ(call(sys_getrandom, {kScratch, 16, GRND_RANDOM | GRND_INSECURE}), -EINVAL);
}

// Zero bytes at any address, even one outside guest memory, is nothing to copy (a pointer to it once
// overflowed in AddressSpace's host pointer: UBSan, rt_sigpending in guest fuzzer seed 32).
TEST_F(MiscSyscalls, EmptyRangesMayBeAnywhere) {
  EXPECT_EQ(call(sys_rt_sigpending, {0xffffff8000000000, 0}), 0);
  EXPECT_EQ(call(sys_getcpu, {0, 0, 0}), 0);
  for (const uint64_t addr : {uint64_t(0), uint64_t(1) << 30, uint64_t(0xffffff8000000000), ~uint64_t(0)}) {
    EXPECT_TRUE(as_->writable(addr, 0).has_value());
    EXPECT_TRUE(as_->readable(addr, 0).has_value());
    EXPECT_TRUE(as_->copy_to_user(addr, "", 0));
  }
}

// The guest may make its clock page writable and fill it with anything: the clock syscalls and the
// next refresh use the host's copy (they read the guest's once: a shift of 2^31 bits and signed
// overflow, UBSan, found by the in-process fuzzer).
TEST_F(MiscSyscalls, ClockPageTheGuestOverwroteIsNotTheHostsClock) {
  const uint64_t kVvar = map_clock_page();
  const std::vector<uint8_t> junk(4096, 0xa5);
  ASSERT_TRUE(as_->copy_to_user(kVvar, junk.data(), junk.size()));
  for (const clockid_t id : {CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME}) {
    timespec host{};
    clock_gettime(id, &host);
    ASSERT_EQ(call(sys_clock_gettime, {uint64_t(id), next_}), 0);
    const auto guest = get<timespec>(next_);
    EXPECT_NEAR(double(guest.tv_sec), double(host.tv_sec), 2.0) << id;
  }
  refresh_clock_page(*proc_);
  kvms_clock_page page{};
  ASSERT_TRUE(as_->read(kVvar, page));
  EXPECT_EQ(page.mult, proc_->clock.mult);  // the guest's copy is the host's again
  EXPECT_EQ(page.shift, 32u);
}

// A worker's request starts its monotonic clocks where the template paused (start_clock_at): the
// guest reads that time, its wall clock stays the host's, and the absolute end times it gives on
// the monotonic clocks are waited for at the matching host time, not taken as long past.
TEST_F(MiscSyscalls, MonotonicClockStartedAtThePauseAndAbsoluteWaits) {
  const uint64_t kVvar = map_clock_page();
  auto ns_of = [](const timespec& ts) { return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec; };
  timespec host{};
  clock_gettime(CLOCK_MONOTONIC, &host);
  const int64_t paused = ns_of(host) > 7200'000000000 ? ns_of(host) - 3600'000000000 : ns_of(host) + 3600'000000000;
  start_clock_at(*proc_, uint64_t(paused));
  EXPECT_NEAR(double(proc_->clock.ahead_ns), double(paused - ns_of(host)), 1e9);
  ASSERT_EQ(call(sys_clock_gettime, {uint64_t(CLOCK_MONOTONIC), next_}), 0);
  EXPECT_NEAR(double(ns_of(get<timespec>(next_))), double(paused), 1e9);
  kvms_clock_page page{};
  ASSERT_TRUE(as_->read(kVvar, page));
  EXPECT_NEAR(double(page.monotonic_base_ns), double(paused), 1e9);  // what the vDSO reads
  clock_gettime(CLOCK_REALTIME, &host);
  ASSERT_EQ(call(sys_clock_gettime, {uint64_t(CLOCK_REALTIME), next_}), 0);
  EXPECT_NEAR(double(get<timespec>(next_).tv_sec), double(host.tv_sec), 2.0);

  // 100 ms ahead on the guest's clock: a 100 ms wait, for each kind of absolute end time.
  auto guest_end = [&](clockid_t id) {
    EXPECT_EQ(call(sys_clock_gettime, {uint64_t(id), next_}), 0);
    timespec end = get<timespec>(next_);
    end.tv_nsec += 100000000;
    if (end.tv_nsec >= 1000000000) { end.tv_nsec -= 1000000000; end.tv_sec += 1; }
    return end;
  };
  auto took = [](auto&& wait) {
    const auto t0 = std::chrono::steady_clock::now();
    wait();
    return std::chrono::steady_clock::now() - t0;
  };
  const uint64_t ts = next_ + 64, word = next_ + 128;
  for (clockid_t id : {CLOCK_MONOTONIC, CLOCK_BOOTTIME}) {
    ASSERT_TRUE(as_->write(ts, guest_end(id)));
    const auto d = took([&] { EXPECT_EQ(call(sys_clock_nanosleep, {uint64_t(id), TIMER_ABSTIME, ts, 0}), 0); });
    EXPECT_GE(d, std::chrono::milliseconds(90)) << id;
    EXPECT_LT(d, std::chrono::seconds(5)) << id;
  }
  ASSERT_TRUE(as_->write<uint32_t>(word, 7));
  ASSERT_TRUE(as_->write(ts, guest_end(CLOCK_MONOTONIC)));
  const auto d = took([&] {
    EXPECT_EQ(call(sys_futex, {word, uint64_t(FUTEX_WAIT_BITSET_PRIVATE), 7, ts, 0, ~0u}), -ETIMEDOUT);
  });
  EXPECT_GE(d, std::chrono::milliseconds(90));
  EXPECT_LT(d, std::chrono::seconds(5));
  // Moved by the difference; an end time the host's clock reads as before its epoch is "now".
  const timespec moved = host_time(*proc_, CLOCK_MONOTONIC, timespec{1, 0});
  const int64_t want_ns = std::max<int64_t>(0, 1000000000 - proc_->clock.ahead_ns);
  EXPECT_EQ(ns_of(moved), want_ns);
  EXPECT_EQ(host_time(*proc_, CLOCK_REALTIME, timespec{5, 6}).tv_sec, 5);  // the wall clock: as given
  EXPECT_EQ(host_time(*proc_, CLOCK_MONOTONIC, timespec{INT64_MAX, 0}).tv_sec, INT64_MAX / 4);
}

// kill() with the id of one of the process's threads signals the process (Linux looks the task up
// and signals its thread group), where another id is no process of ours.
TEST_F(MiscSyscalls, KillWithAThreadsIdSignalsTheProcess) {
  proc_->threads.emplace(proc_->pid + 40, ThreadContext{});
  EXPECT_EQ(call(sys_kill, {uint64_t(proc_->pid + 40), 0}), 0);
  EXPECT_EQ(call(sys_kill, {uint64_t(proc_->pid + 41), 0}), -ESRCH);
}

TEST_F(MiscSyscalls, IdentityCannotChange) {
  EXPECT_EQ(call(sys_setuid, {proc_->uid}), 0);
  EXPECT_EQ(call(sys_setuid, {0}), -EPERM);
  EXPECT_EQ(call(sys_setgid, {proc_->gid}), 0);
  EXPECT_EQ(call(sys_setgid, {0}), -EPERM);
  EXPECT_EQ(call(sys_setresuid, {~0ull, proc_->uid, ~0ull}), 0);
  EXPECT_EQ(call(sys_setresuid, {~0ull, 0, ~0ull}), -EPERM);
  EXPECT_EQ(call(sys_setreuid, {proc_->uid, ~0ull}), 0);
  EXPECT_EQ(call(sys_setregid, {0, ~0ull}), -EPERM);
  EXPECT_EQ(call(sys_setgroups, {0, 0}), -EPERM);
  EXPECT_EQ(call(sys_setgroups, {uint64_t(-1), 0}), -EINVAL);
  EXPECT_EQ(call(sys_sethostname, {str("x"), 1}), -EPERM);  // uname's names are kvmserver's
  EXPECT_EQ(call(sys_setdomainname, {0, 0}), -EPERM);
}

TEST_F(MiscSyscalls, NoCapabilities) {
  const uint64_t hdr = next_, data = next_ + 16;
  const uint32_t v3[2] = {0x20080522, 0};
  ASSERT_TRUE(as_->copy_to_user(hdr, v3, sizeof v3));
  ASSERT_TRUE(as_->fill_user(data, 0xff, 24));
  EXPECT_EQ(call(sys_capget, {hdr, data}), 0);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(get<uint32_t>(data + 4 * i), 0u);
  const uint32_t bad[2] = {1, 0};
  ASSERT_TRUE(as_->copy_to_user(hdr, bad, sizeof bad));
  EXPECT_EQ(call(sys_capget, {hdr, 0}), -EINVAL);
  EXPECT_EQ(get<uint32_t>(hdr), 0x20080522u);  // the preferred version, for the caller's retry
  EXPECT_EQ(call(sys_capget, {0x900000, data}), -EFAULT);
  ASSERT_TRUE(as_->copy_to_user(hdr, v3, sizeof v3));
  EXPECT_EQ(call(sys_capset, {hdr, data}), 0);  // all zero: no change
  ASSERT_TRUE(as_->fill_user(data, 0xff, 4));
  EXPECT_EQ(call(sys_capset, {hdr, data}), -EPERM);
}

TEST_F(MiscSyscalls, Scheduling) {
  const uint64_t param = next_;
  EXPECT_EQ(call(sys_sched_getscheduler, {0}), SCHED_OTHER);
  EXPECT_EQ(call(sys_sched_getscheduler, {99999}), -ESRCH);
  EXPECT_EQ(call(sys_sched_getparam, {0, param}), 0);
  EXPECT_EQ(get<int32_t>(param), 0);
  EXPECT_EQ(call(sys_sched_getparam, {0, 0}), -EINVAL);
  EXPECT_EQ(call(sys_sched_setscheduler, {0, SCHED_BATCH, param}), 0);
  ASSERT_TRUE(as_->write<int32_t>(param, 10));
  EXPECT_EQ(call(sys_sched_setscheduler, {0, SCHED_FIFO, param}), -EPERM);
  EXPECT_EQ(call(sys_sched_get_priority_max, {SCHED_RR}), 99);
  EXPECT_EQ(call(sys_sched_get_priority_min, {SCHED_OTHER}), 0);
  EXPECT_EQ(call(sys_sched_get_priority_max, {42}), -EINVAL);
  EXPECT_EQ(call(sys_getpriority, {PRIO_PROCESS, 0}), 20);
  EXPECT_EQ(call(sys_setpriority, {PRIO_PROCESS, 0, 5}), 0);
  EXPECT_EQ(call(sys_getpriority, {PRIO_PROCESS, 0}), 15);
  EXPECT_EQ(call(sys_setpriority, {PRIO_PROCESS, 0, 0}), -EACCES);  // lowering nice needs privilege
  EXPECT_EQ(call(sys_setpriority, {PRIO_PROCESS, 99999, 5}), -ESRCH);
  EXPECT_EQ(call(sys_getpriority, {7, 0}), -EINVAL);
}

TEST_F(MiscSyscalls, LockingIsAccounting) {
  EXPECT_EQ(call(sys_mlockall, {MCL_CURRENT | MCL_FUTURE}), 0);
  EXPECT_EQ(call(sys_munlockall, {}), 0);
  EXPECT_EQ(call(sys_mlockall, {0}), -EINVAL);
  EXPECT_EQ(call(sys_mlockall, {4 /* MCL_ONFAULT alone */}), -EINVAL);
  proc_->rlimits[RLIMIT_MEMLOCK] = {4096, 4096};
  EXPECT_EQ(call(sys_mlockall, {MCL_CURRENT}), -ENOMEM);
  proc_->rlimits[RLIMIT_MEMLOCK] = {0, 0};
  EXPECT_EQ(call(sys_mlockall, {MCL_FUTURE}), -EPERM);
}

TEST_F(MiscSyscalls, IntervalTimers) {
  const uint64_t val = next_, old = next_ + 64;
  ASSERT_TRUE(as_->fill_user(val, 0xff, 32));
  EXPECT_EQ(call(sys_getitimer, {0, val}), 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(get<int64_t>(val + 8 * i), 0);
  EXPECT_EQ(call(sys_setitimer, {0, val, old}), 0);  // disarming what is not armed
  ASSERT_TRUE(as_->write<int64_t>(val + 16, 5));  // ITIMER_REAL in 5 s (itimer.cpp)
  EXPECT_EQ(call(sys_setitimer, {0, val, old}), 0);
  EXPECT_EQ(call(sys_getitimer, {0, old}), 0);
  const int64_t left_us = get<int64_t>(old + 16) * 1000000 + get<int64_t>(old + 24);
  EXPECT_GT(left_us, 4000000);
  EXPECT_LE(left_us, 5000000);
  EXPECT_EQ(call(sys_alarm, {0}), 5);  // disarms, says what was left (rounded)
  EXPECT_EQ(call(sys_alarm, {0}), 0);
  EXPECT_EQ(call(sys_setitimer, {1, val, 0}), -ENOSYS);  // CPU-time timers cannot be armed
  ASSERT_TRUE(as_->write<int64_t>(val + 24, 1000000));
  EXPECT_EQ(call(sys_setitimer, {0, val, 0}), -EINVAL);
  EXPECT_EQ(call(sys_getitimer, {3, val}), -EINVAL);
}

TEST_F(MiscSyscalls, FutexOfOneThread) {
  const uint64_t word = next_, ts = next_ + 16;
  ASSERT_TRUE(as_->write<uint32_t>(word, 7));
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1}), 0);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAIT_PRIVATE, 8, 0}), -EAGAIN);
  const int64_t short_wait[2] = {0, 1000000};
  ASSERT_TRUE(as_->copy_to_user(ts, short_wait, sizeof short_wait));
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAIT_PRIVATE, 7, ts}), -ETIMEDOUT);
  EXPECT_EQ(call(sys_futex, {word + 1, FUTEX_WAIT_PRIVATE, 7, 0}), -EINVAL);
  EXPECT_EQ(call(sys_futex, {0x900000, FUTEX_WAIT_PRIVATE, 7, 0}), -EFAULT);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAIT_BITSET, 7, 0, 0, 0}), -EINVAL);  // empty bitset
  // FUTEX_WAKE_OP still does its operation: *uaddr2 += 3
  ASSERT_TRUE(as_->write<uint32_t>(word + 4, 10));
  const uint64_t op = (uint64_t(FUTEX_OP_ADD) << 28) | (3u << 12);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAKE_OP, 1, 1, word + 4, op}), 0);
  EXPECT_EQ(get<uint32_t>(word + 4), 13u);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAIT_REQUEUE_PI, 7, 0, word + 4, 0}), -ENOSYS);
}

TEST_F(MiscSyscalls, SigaltstackModes) {
  struct { uint64_t sp; int32_t flags; int32_t pad; uint64_t size; } ss{}, got{};
  const uint64_t in = next_, out = next_ + 64;
  ss = {kScratch, SS_ONSTACK, 0, 64 * 1024};  // what a get says on the stack: set again, it means 0
  ASSERT_TRUE(as_->write(in, ss));
  EXPECT_EQ(call(sys_sigaltstack, {in, out}), 0);
  EXPECT_EQ(call(sys_sigaltstack, {0, out}), 0);
  ASSERT_TRUE(as_->read(out, got));
  EXPECT_EQ(got.sp, kScratch);
  EXPECT_EQ(got.flags, 0);  // not on it (no vCPU here: no stack pointer on it)
  ss.flags = 4;             // no such mode
  ASSERT_TRUE(as_->write(in, ss));
  EXPECT_EQ(call(sys_sigaltstack, {in, 0}), -EINVAL);
  ss.flags = SS_DISABLE;
  ASSERT_TRUE(as_->write(in, ss));
  EXPECT_EQ(call(sys_sigaltstack, {in, 0}), 0);
  EXPECT_EQ(call(sys_sigaltstack, {0, out}), 0);
  ASSERT_TRUE(as_->read(out, got));
  EXPECT_EQ(got.flags, SS_DISABLE);
}

TEST_F(MiscSyscalls, PriorityInheritanceFutexes) {
  const uint64_t word = next_, ts = next_ + 16;
  const uint32_t tid = uint32_t(proc_->thread().tid);
  ASSERT_TRUE(as_->write<uint32_t>(word, 0));
  EXPECT_EQ(call(sys_futex, {word, FUTEX_LOCK_PI_PRIVATE, 0, 0}), 0);
  EXPECT_EQ(get<uint32_t>(word), tid);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_LOCK_PI_PRIVATE, 0, 0}), -EDEADLK);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_TRYLOCK_PI_PRIVATE, 0, 0}), -EDEADLK);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_UNLOCK_PI_PRIVATE, 0, 0}), 0);
  EXPECT_EQ(get<uint32_t>(word), 0u);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_UNLOCK_PI_PRIVATE, 0, 0}), -EPERM);
  // Held by another thread of the process: trylock fails, a lock waits (marking the word) until
  // its timeout, absolute on CLOCK_REALTIME.
  proc_->threads.emplace(4242, ThreadContext{});
  ASSERT_TRUE(as_->write<uint32_t>(word, 4242));
  EXPECT_EQ(call(sys_futex, {word, FUTEX_TRYLOCK_PI_PRIVATE, 0, 0}), -EAGAIN);
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const int64_t soon[2] = {int64_t(now.tv_sec), int64_t(now.tv_nsec)};  // already past
  ASSERT_TRUE(as_->copy_to_user(ts, soon, sizeof soon));
  EXPECT_EQ(call(sys_futex, {word, FUTEX_LOCK_PI_PRIVATE, 0, ts}), -ETIMEDOUT);
  EXPECT_EQ(get<uint32_t>(word), 4242u | FUTEX_WAITERS);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_UNLOCK_PI_PRIVATE, 0, 0}), -EPERM);  // not ours
  EXPECT_EQ(call(sys_futex, {word, FUTEX_WAKE_PRIVATE, 1, 0}), 0);            // nobody waits now
  // Held by a tid the process has no thread of: ESRCH, as Linux; released by a robust list
  // (owner 0, FUTEX_OWNER_DIED): taken, the bit kept for glibc to report EOWNERDEAD.
  proc_->threads.erase(4242);
  EXPECT_EQ(call(sys_futex, {word, FUTEX_LOCK_PI_PRIVATE, 0, 0}), -ESRCH);
  EXPECT_EQ(get<uint32_t>(word), 4242u | FUTEX_WAITERS);
  ASSERT_TRUE(as_->write<uint32_t>(word, FUTEX_OWNER_DIED));
  EXPECT_EQ(call(sys_futex, {word, FUTEX_LOCK_PI_PRIVATE, 0, 0}), 0);
  EXPECT_EQ(get<uint32_t>(word), tid | FUTEX_OWNER_DIED);
  EXPECT_EQ(call(sys_futex, {word + 1, FUTEX_LOCK_PI_PRIVATE, 0, 0}), -EINVAL);
}

// A timeout of centuries is a long wait, relative or absolute, not an overflow that times out at
// once: the wait here ends only when the process is stopped (-EINTR, restarted by the Guest).
TEST_F(MiscSyscalls, FutexTimeoutsOfCenturiesWait) {
  const uint64_t word = next_, ts = next_ + 16;
  ASSERT_TRUE(as_->write<uint32_t>(word, 7));
  for (int64_t sec : {int64_t(INT64_MAX), int64_t(INT64_MAX / 1000000000 + 1), int64_t(1) << 40}) {
    const int64_t forever[2] = {sec, 999999999};
    ASSERT_TRUE(as_->copy_to_user(ts, forever, sizeof forever));
    for (uint64_t op : {uint64_t(FUTEX_WAIT_PRIVATE), uint64_t(FUTEX_WAIT_BITSET_PRIVATE)}) {
      proc_->lock.stop = false;
      std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        std::lock_guard<std::mutex> lk(proc_->lock.mutex);
        proc_->lock.stop = true;
        proc_->lock.changed.notify_all();
      });
      const auto t0 = std::chrono::steady_clock::now();
      EXPECT_EQ(call(sys_futex, {word, op, 7, ts, 0, ~0u}), -EINTR) << sec << " op " << op;
      EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
      stopper.join();
    }
  }
  proc_->lock.stop = false;
}

}  // namespace
}  // namespace kvms::linux

namespace kvms::linux {
namespace {

// A periodic POSIX timer whose signal is blocked queues it once and counts the other expiries as
// overruns, which the signal carries when taken (and timer_getoverrun tells afterwards).
TEST_F(MiscSyscalls, PosixTimerQueuesOnceAndCountsOverruns) {
  const uint64_t ev = next_, id = next_ + 64, spec = next_ + 128;
  proc_->thread().sigmask = 1ull << (SIGUSR1 - 1);
  const struct { uint64_t value; int32_t signo, notify, tid, pad[11]; } sigev{0x77, SIGUSR1, 0 /* SIGEV_SIGNAL */, 0, {}};
  ASSERT_TRUE(as_->copy_to_user(ev, &sigev, sizeof sigev));
  ASSERT_EQ(call(sys_timer_create, {CLOCK_MONOTONIC, ev, id}), 0);
  const int32_t timer = get<int32_t>(id);
  const int64_t every_2ms[4] = {0, 2000000, 0, 2000000};
  ASSERT_TRUE(as_->copy_to_user(spec, every_2ms, sizeof every_2ms));
  ASSERT_EQ(call(sys_timer_settime, {uint64_t(timer), 0, spec, 0}), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  const int64_t off[4] = {};
  ASSERT_TRUE(as_->copy_to_user(spec, off, sizeof off));
  ASSERT_EQ(call(sys_timer_settime, {uint64_t(timer), 0, spec, 0}), 0);
  std::optional<siginfo_t> info;
  {
    std::lock_guard<std::mutex> lk(proc_->lock.mutex);
    EXPECT_EQ(proc_->thread().pending_queue[SIGUSR1].size(), 1u);
    info = dequeue_signal(*proc_, proc_->thread(), SIGUSR1);
  }
  ASSERT_TRUE(info);
  EXPECT_EQ(info->si_code, SI_TIMER);
  EXPECT_EQ(info->si_timerid, timer);
  EXPECT_EQ(uint64_t(info->si_value.sival_ptr), 0x77u);
  EXPECT_GE(info->si_overrun, 3);
  EXPECT_EQ(call(sys_timer_getoverrun, {uint64_t(timer)}), info->si_overrun);
  EXPECT_EQ(call(sys_timer_delete, {uint64_t(timer)}), 0);
  EXPECT_EQ(call(sys_timer_delete, {uint64_t(timer)}), -EINVAL);
  EXPECT_EQ(call(sys_timer_create, {CLOCK_PROCESS_CPUTIME_ID, 0, id}), -EINVAL);
  EXPECT_EQ(call(sys_timer_create, {CLOCK_REALTIME_ALARM, 0, id}), -EPERM);
}

// A signalfd's host fd is readable exactly while one of its signals is pending; reading takes it.
TEST_F(MiscSyscalls, SignalfdReadableWhileItsSignalIsPending) {
  const uint64_t mask = next_, buf = next_ + 64;
  ASSERT_TRUE(as_->write<uint64_t>(mask, 1ull << (SIGUSR2 - 1)));
  const int64_t fd = call(sys_signalfd4, {uint64_t(-1), mask, 8, SFD_NONBLOCK});
  ASSERT_GE(fd, 0);
  const int host = proc_->fds.get(int(fd))->host_fd;
  auto readable = [&] {
    pollfd pfd{host, POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 1;
  };
  EXPECT_FALSE(readable());
  EXPECT_EQ(call(sys_read, {uint64_t(fd), buf, 128}), -EAGAIN);
  EXPECT_EQ(send_signal_to_thread(*proc_, proc_->thread(), SIGUSR1, SI_USER, 9), 0);
  EXPECT_FALSE(readable());  // not one of its signals
  EXPECT_EQ(send_signal_to_thread(*proc_, proc_->thread(), SIGUSR2, SI_USER, 9), 0);
  EXPECT_TRUE(readable());
  EXPECT_EQ(call(sys_read, {uint64_t(fd), buf, 64}), -EINVAL);  // smaller than one record
  EXPECT_EQ(call(sys_read, {uint64_t(fd), buf, 256}), 128);
  EXPECT_EQ(get<uint32_t>(buf), uint32_t(SIGUSR2));
  EXPECT_EQ(get<uint32_t>(buf + 12), 9u);  // ssi_pid
  EXPECT_FALSE(readable());
  EXPECT_EQ(call(sys_write, {uint64_t(fd), buf, 8}), -EINVAL);
  EXPECT_EQ(call(sys_signalfd4, {uint64_t(fd), mask, 8, 0x1234}), -EINVAL);
  EXPECT_EQ(call(sys_signalfd4, {uint64_t(fd), mask, 4, 0}), -EINVAL);
  EXPECT_EQ(call(sys_signalfd4, {77, mask, 8, 0}), -EBADF);
}

// Another process's kill(2) and a child's exit reach the first process once it is attached.
TEST(ProcessTableSignals, KillAndSigchldReachTheRoot) {
  ProcessTable table(2);
  std::vector<siginfo_t> root_got, child_got;
  const siginfo_t usr1 = [] {
    siginfo_t i{};
    i.si_signo = SIGUSR1;
    i.si_code = SI_USER;
    return i;
  }();
  EXPECT_EQ(table.kill(2, usr1), 0);  // not attached: exists, nothing is delivered
  table.attach_root([&](const siginfo_t& i) { root_got.push_back(i); });
  const int child = table.add_child(2, [&](const siginfo_t& i) { child_got.push_back(i); });
  ASSERT_GT(child, 2);
  EXPECT_EQ(table.kill(2, usr1), 0);
  EXPECT_EQ(table.kill(child, usr1), 0);
  EXPECT_EQ(table.kill(999, usr1), -ESRCH);
  bool caller_in_group = false;
  EXPECT_EQ(table.kill_group(2, usr1, child, caller_in_group), 0);  // the child's group is the root's
  EXPECT_TRUE(caller_in_group);
  table.detach(child);
  table.exited(child, 3 << 8, 1000);  // exit(3)
  ASSERT_EQ(root_got.size(), 3u);
  EXPECT_EQ(root_got[2].si_signo, SIGCHLD);
  EXPECT_EQ(root_got[2].si_code, CLD_EXITED);
  EXPECT_EQ(root_got[2].si_pid, child);
  EXPECT_EQ(root_got[2].si_status, 3);
  EXPECT_EQ(root_got[2].si_uid, 1000u);
  ASSERT_EQ(child_got.size(), 1u);
  EXPECT_EQ(table.kill(child, usr1), 0);  // a zombie until waited for: kill succeeds, reaches nothing
  EXPECT_EQ(child_got.size(), 1u);
  EXPECT_EQ(table.wait(2, child, true).first, child);
  EXPECT_EQ(table.kill(child, usr1), -ESRCH);
  table.detach_root();
  EXPECT_EQ(table.kill(2, usr1), 0);
  EXPECT_EQ(root_got.size(), 3u);
}

}  // namespace
}  // namespace kvms::linux

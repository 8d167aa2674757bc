// ProcessTable: wait(2) states, zombies, and subreapers, without any guest.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <vector>

#include "linux/process_table.hpp"

namespace kvms::linux {
namespace {

siginfo_t signal_info(int sig) {
  siginfo_t i{};
  i.si_signo = sig;
  i.si_code = SI_USER;
  return i;
}

// waitid without WEXITED neither reports nor counts an ended child (Linux: ECHILD when that is
// all there is); WNOWAIT leaves it to be waited for again.
TEST(ProcessTableWait, EndedChildNeedsWexited) {
  ProcessTable table(2);
  const int child = table.add_child(2, [](const siginfo_t&) {});
  table.detach(child);
  table.exited(child, 42 << 8);
  EXPECT_EQ(table.wait(2, -1, true, nullptr, 0, true, WSTOPPED).first, -ECHILD);
  EXPECT_EQ(table.wait(2, -1, true, nullptr, 0, true, WCONTINUED).first, -ECHILD);
  auto peek = table.wait(2, child, true, nullptr, 0, false, WEXITED);
  EXPECT_EQ(peek.first, child);
  EXPECT_EQ(peek.second, 42 << 8);
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, true, WEXITED).first, child);
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, true, WEXITED).first, -ECHILD);
}

// A running child still counts without WEXITED: no state to report yet, so WNOHANG gives 0.
TEST(ProcessTableWait, RunningChildCountsForWstopped) {
  ProcessTable table(2);
  const int child = table.add_child(2, [](const siginfo_t&) {});
  EXPECT_EQ(table.wait(2, -1, true, nullptr, 0, true, WSTOPPED).first, 0);
  EXPECT_EQ(table.wait(2, child, true).first, 0);
}

TEST(ProcessTableWait, KillOfZombieSucceedsUntilReaped) {
  ProcessTable table(2);
  int got = 0;
  const int child = table.add_child(2, [&](const siginfo_t&) { ++got; });
  table.detach(child);
  table.exited(child, 0);
  EXPECT_EQ(table.kill(child, signal_info(SIGTERM)), 0);
  EXPECT_EQ(table.kill(child, signal_info(0)), 0);
  EXPECT_EQ(got, 0);
  EXPECT_EQ(table.wait(2, child, true).first, child);
  EXPECT_EQ(table.kill(child, signal_info(0)), -ESRCH);
}

// The orphans of an ended process go to the nearest subreaper above it, which can wait for them;
// one that had already ended is announced to the subreaper with SIGCHLD.
TEST(ProcessTableSubreaper, OrphansGoToTheNearestSubreaper) {
  ProcessTable table(2);
  std::vector<siginfo_t> root_got;
  table.attach_root([&](const siginfo_t& i) { root_got.push_back(i); });
  table.set_child_subreaper(2, true);
  const int middle = table.add_child(2, [](const siginfo_t&) {});
  const int running = table.add_child(middle, [](const siginfo_t&) {});
  const int zombie = table.add_child(middle, [](const siginfo_t&) {});
  table.detach(zombie);
  table.exited(zombie, 7 << 8);  // reported to middle (not attached here)
  EXPECT_EQ(table.wait(2, -1, true).first, 0);  // middle runs; the grandchildren are not the root's
  table.detach(middle);
  table.exited(middle, 0);
  EXPECT_EQ(table.parent_of(running), 2);
  EXPECT_EQ(table.parent_of(zombie), 2);
  // SIGCHLD for the reparented zombie, then for middle itself.
  ASSERT_EQ(root_got.size(), 2u);
  EXPECT_EQ(root_got[0].si_signo, SIGCHLD);
  EXPECT_EQ(root_got[0].si_pid, zombie);
  EXPECT_EQ(root_got[0].si_status, 7);
  EXPECT_EQ(root_got[1].si_pid, middle);
  auto first = table.wait(2, zombie, true);
  EXPECT_EQ(first.first, zombie);
  EXPECT_EQ(first.second, 7 << 8);
  EXPECT_EQ(table.wait(2, middle, true).first, middle);
  EXPECT_EQ(table.wait(2, running, true).first, 0);  // still running, now the root's child
  table.detach_root();
}

TEST(ProcessTableSubreaper, WithoutSubreaperOrphansKeepTheirParentId) {
  ProcessTable table(2);
  const int middle = table.add_child(2, [](const siginfo_t&) {});
  const int orphan = table.add_child(middle, [](const siginfo_t&) {});
  table.detach(middle);
  table.exited(middle, 0);
  EXPECT_EQ(table.parent_of(orphan), middle);
  EXPECT_EQ(table.wait(2, orphan, true).first, -ECHILD);
  table.set_child_subreaper(2, false);
}

// A stop and a continue are each reported once to WSTOPPED / WCONTINUED waits (kept by WNOWAIT),
// with SIGCHLD CLD_STOPPED / CLD_CONTINUED to the parent; a plain wait ignores them.
TEST(ProcessTableWait, StopAndContinueReports) {
  ProcessTable table(2);
  std::vector<siginfo_t> root_got;
  table.attach_root([&](const siginfo_t& i) { root_got.push_back(i); });
  const int child = table.add_child(2, [](const siginfo_t&) {});
  table.stopped(child, SIGSTOP, 1000);
  ASSERT_EQ(root_got.size(), 1u);
  EXPECT_EQ(root_got[0].si_signo, SIGCHLD);
  EXPECT_EQ(root_got[0].si_code, CLD_STOPPED);
  EXPECT_EQ(root_got[0].si_status, SIGSTOP);
  EXPECT_EQ(table.wait(2, child, true).first, 0);  // WEXITED only: nothing to report
  auto peek = table.wait(2, child, true, nullptr, 0, false, WSTOPPED);
  EXPECT_EQ(peek.first, child);
  EXPECT_TRUE(WIFSTOPPED(peek.second));
  EXPECT_EQ(WSTOPSIG(peek.second), SIGSTOP);
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, true, WEXITED | WSTOPPED).first, child);
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, true, WSTOPPED).first, 0);  // reported once
  table.continued(child, 1000);
  ASSERT_EQ(root_got.size(), 2u);
  EXPECT_EQ(root_got[1].si_code, CLD_CONTINUED);
  EXPECT_EQ(root_got[1].si_status, SIGCONT);
  auto cont = table.wait(2, child, true, nullptr, 0, true, WCONTINUED);
  EXPECT_EQ(cont.first, child);
  EXPECT_TRUE(WIFCONTINUED(cont.second));
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, true, WCONTINUED).first, 0);
  table.detach_root();
}

// wait's CPU time of an ended child, and RUSAGE_CHILDREN's sum of the children waited for (not a
// WNOWAIT peek).
TEST(ProcessTableWait, WaitedChildrensCpuTime) {
  ProcessTable table(2);
  const int child = table.add_child(2, [](const siginfo_t&) {});
  table.detach(child);
  table.exited(child, 0, 0, 3'000'000'000);
  uint64_t cpu = 0;
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, false, WEXITED, &cpu).first, child);
  EXPECT_EQ(cpu, 3'000'000'000u);
  EXPECT_EQ(table.children_cpu_ns(2), 0u);
  EXPECT_EQ(table.wait(2, child, true, nullptr, 0, true, WEXITED, &cpu).first, child);
  EXPECT_EQ(table.children_cpu_ns(2), 3'000'000'000u);
}

// SIGCHLD ignored (or SA_NOCLDWAIT) in the parent: an ended child is reaped at once, no zombie,
// nothing for wait (ECHILD) and no CPU time for RUSAGE_CHILDREN.
TEST(ProcessTableWait, ParentThatReapsItselfLeavesNoZombie) {
  ProcessTable table(2);
  table.view(2)->reaps_children = true;
  const int child = table.add_child(2, [](const siginfo_t&) {});
  EXPECT_EQ(table.wait(2, -1, true).first, 0);  // running: counted
  table.detach(child);
  table.exited(child, 0, 0, 1'000'000);
  EXPECT_EQ(table.wait(2, -1, true).first, -ECHILD);
  EXPECT_EQ(table.kill(child, signal_info(0)), -ESRCH);
  EXPECT_EQ(table.children_cpu_ns(2), 0u);
}

// Without a subreaper nobody can wait for an orphan, so nothing of it stays: its zombie goes when
// its parent ends, and a running orphan goes as it ends (init reaps them on Linux).
TEST(ProcessTableWait, OrphansLeaveNoZombies) {
  ProcessTable table(2);
  const int middle = table.add_child(2, [](const siginfo_t&) {});
  const int zombie = table.add_child(middle, [](const siginfo_t&) {});
  const int running = table.add_child(middle, [](const siginfo_t&) {});
  table.detach(zombie);
  table.exited(zombie, 0);
  EXPECT_EQ(table.kill(zombie, signal_info(0)), 0);  // a zombie of a running parent stays
  table.detach(middle);
  table.exited(middle, 0);
  EXPECT_EQ(table.kill(zombie, signal_info(0)), -ESRCH);
  table.detach(running);
  table.exited(running, 0);
  EXPECT_EQ(table.kill(running, signal_info(0)), -ESRCH);
  EXPECT_EQ(table.wait(2, middle, true).first, middle);  // the middle one is still 2's to wait for
}

}  // namespace
}  // namespace kvms::linux

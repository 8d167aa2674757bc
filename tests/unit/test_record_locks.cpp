// POSIX record locks between guest processes (src/linux/record_locks.cpp): conflicts, merging,
// and the bound on what one process may hold (host memory it does not pay for). No KVM needed.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <cerrno>

#include "linux/record_locks.hpp"

namespace kvms::linux {
namespace {

RecordLock range(short type, uint64_t start, uint64_t end) { return RecordLock{type, start, end, 7}; }

TEST(RecordLocks, ConflictsMergeAndRelease) {
  LockOwner a, b;
  const FileKey file{1, 100};
  EXPECT_EQ(set_record_lock(file, a.id(), range(F_RDLCK, 0, 10), false, nullptr), 0);
  EXPECT_EQ(set_record_lock(file, a.id(), range(F_RDLCK, 10, 20), false, nullptr), 0);  // merges
  const RecordLock seen = test_record_lock(file, b.id(), range(F_WRLCK, 15, 16));
  EXPECT_EQ(seen.type, F_RDLCK);
  EXPECT_EQ(seen.start, 0u);
  EXPECT_EQ(seen.end, 20u);
  EXPECT_EQ(set_record_lock(file, b.id(), range(F_WRLCK, 5, 6), false, nullptr), -EAGAIN);
  EXPECT_EQ(set_record_lock(file, b.id(), range(F_RDLCK, 5, 6), false, nullptr), 0);  // readers share
  release_record_locks(a.id(), &file);
  EXPECT_EQ(test_record_lock(file, b.id(), range(F_WRLCK, 0, 100)).type, F_UNLCK);
  release_record_locks(b.id(), nullptr);
  EXPECT_FALSE(any_record_locks());
}

// A guest locking every other byte of a file would grow kvmserver's table without end: past 8192
// locks of one process, ENOLCK; giving some back makes room again; its end frees them all.
TEST(RecordLocks, OneProcessHoldsABoundedNumber) {
  const FileKey file{1, 200};
  {
    LockOwner greedy;
    int refused = 0, last_ok = -1;
    for (int i = 0; i < 9000; ++i) {
      const int rc = set_record_lock(file, greedy.id(), range(F_WRLCK, 2 * i, 2 * i + 1), false, nullptr);
      if (rc == -ENOLCK) ++refused;
      else if (rc == 0) last_ok = i;
    }
    EXPECT_EQ(last_ok, 8191);
    EXPECT_EQ(refused, 9000 - 8192);
    EXPECT_EQ(set_record_lock(file, greedy.id(), range(F_UNLCK, 0, 2), false, nullptr), 0);
    EXPECT_EQ(set_record_lock(file, greedy.id(), range(F_WRLCK, 100000, 100001), false, nullptr), 0);
    // Merging into a lock it holds costs nothing.
    EXPECT_EQ(set_record_lock(file, greedy.id(), range(F_WRLCK, 100001, 100002), false, nullptr), 0);
  }
  EXPECT_FALSE(any_record_locks());  // its end (LockOwner's destructor) released them
}

}  // namespace
}  // namespace kvms::linux

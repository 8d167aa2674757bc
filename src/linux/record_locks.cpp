// POSIX record locks between guest processes (see record_locks.hpp): one table for all of
// kvmserver, like the kernel's per-inode lock lists.
#include "linux/record_locks.hpp"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <vector>

namespace kvms::linux {
namespace {

struct HeldLock {
  uint64_t owner;
  RecordLock lock;
};

struct Table {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<FileKey, std::vector<HeldLock>> files;
  std::map<uint64_t, uint64_t> waits_for;  // owner blocked in F_SETLKW -> the owner in its way
  std::map<uint64_t, size_t> held;         // owner -> how many locks it holds in all files
};

// Locks are host memory the guest does not pay for: a process holding this many (ranges that do
// not merge) gets ENOLCK, as Linux answers when it has no memory for another.
constexpr size_t kMaxLocksPerOwner = 8192;

size_t owned_by(const std::vector<HeldLock>& locks, uint64_t owner) {
  size_t n = 0;
  for (const HeldLock& h : locks) n += h.owner == owner;
  return n;
}

Table& table() {
  static Table* t = new Table;  // never destroyed: process teardown may still release locks
  return *t;
}

std::atomic<uint64_t> next_owner{1};
std::atomic<size_t> locked_files{0};  // table().files.size(), read without the mutex

bool overlaps(const RecordLock& a, const RecordLock& b) { return a.start < b.end && b.start < a.end; }
bool conflicts(const RecordLock& held, const RecordLock& wanted) {
  return overlaps(held, wanted) && (held.type == F_WRLCK || wanted.type == F_WRLCK);
}

const HeldLock* blocker(const std::vector<HeldLock>& locks, uint64_t owner, const RecordLock& wanted) {
  for (const HeldLock& h : locks)
    if (h.owner != owner && conflicts(h.lock, wanted)) return &h;
  return nullptr;
}

// Takes [start, end) out of owner's locks (splitting those that stick out), then adds `lock`
// unless it is an unlock, merging it with the owner's touching locks of the same type.
std::vector<HeldLock> replace_range(const std::vector<HeldLock>& locks, uint64_t owner, const RecordLock& lock) {
  std::vector<HeldLock> next;
  next.reserve(locks.size() + 2);
  RecordLock merged = lock;
  for (const HeldLock& h : locks) {
    if (h.owner != owner) {
      next.push_back(h);
      continue;
    }
    const RecordLock& l = h.lock;
    const bool touches = l.start <= lock.end && lock.start <= l.end;
    if (lock.type != F_UNLCK && l.type == lock.type && touches) {  // same type, touching: one lock
      merged.start = std::min(merged.start, l.start);
      merged.end = std::max(merged.end, l.end);
      continue;
    }
    if (!overlaps(l, lock)) {
      next.push_back(h);
      continue;
    }
    if (l.start < lock.start) next.push_back({owner, {l.type, l.start, lock.start, l.pid}});
    if (l.end > lock.end) next.push_back({owner, {l.type, lock.end, l.end, l.pid}});
  }
  if (lock.type != F_UNLCK) next.push_back({owner, merged});
  std::sort(next.begin(), next.end(), [](const HeldLock& a, const HeldLock& b) { return a.lock.start < b.lock.start; });
  return next;
}

// Whether owner waiting for `holder` closes a cycle of waits.
bool would_deadlock(const Table& t, uint64_t owner, uint64_t holder) {
  for (int hops = 0; hops < 64; ++hops) {
    if (holder == owner) return true;
    auto it = t.waits_for.find(holder);
    if (it == t.waits_for.end()) return false;
    holder = it->second;
  }
  return false;
}

}  // namespace

LockOwner::LockOwner() : id_(next_owner++) {}
LockOwner::LockOwner(const LockOwner&) : id_(next_owner++) {}
LockOwner& LockOwner::operator=(const LockOwner&) {
  release_record_locks(id_, nullptr);
  id_ = next_owner++;
  return *this;
}
LockOwner::~LockOwner() { release_record_locks(id_, nullptr); }

RecordLock test_record_lock(FileKey file, uint64_t owner, const RecordLock& wanted) {
  Table& t = table();
  std::lock_guard<std::mutex> lk(t.mutex);
  auto it = t.files.find(file);
  if (it != t.files.end())
    if (const HeldLock* h = blocker(it->second, owner, wanted)) return h->lock;
  RecordLock none = wanted;
  none.type = F_UNLCK;
  return none;
}

int set_record_lock(FileKey file, uint64_t owner, const RecordLock& lock, bool wait,
                    const std::function<bool()>& interrupted) {
  Table& t = table();
  std::unique_lock<std::mutex> lk(t.mutex);
  for (;;) {
    auto& locks = t.files[file];
    const HeldLock* h = lock.type == F_UNLCK ? nullptr : blocker(locks, owner, lock);
    if (!h) {
      t.waits_for.erase(owner);
      std::vector<HeldLock> next = replace_range(locks, owner, lock);
      size_t& held = t.held[owner];
      const size_t after = held - owned_by(locks, owner) + owned_by(next, owner);
      if (after > kMaxLocksPerOwner) {
        if (locks.empty()) t.files.erase(file);
        if (held == 0) t.held.erase(owner);
        return -ENOLCK;
      }
      held = after;
      if (held == 0) t.held.erase(owner);
      locks.swap(next);
      if (locks.empty()) t.files.erase(file);
      locked_files = t.files.size();
      t.changed.notify_all();
      return 0;
    }
    if (!wait) return -EAGAIN;
    if (would_deadlock(t, owner, h->owner)) {
      t.waits_for.erase(owner);
      return -EDEADLK;
    }
    if (interrupted && interrupted()) {
      t.waits_for.erase(owner);
      return -EINTR;
    }
    t.waits_for[owner] = h->owner;
    t.changed.wait_for(lk, std::chrono::milliseconds(100));
  }
}

void release_record_locks(uint64_t owner, const FileKey* file) {
  if (!any_record_locks()) return;
  Table& t = table();
  std::lock_guard<std::mutex> lk(t.mutex);
  bool changed = false;
  size_t removed = 0;
  for (auto it = t.files.begin(); it != t.files.end();) {
    if (file && (it->first < *file || *file < it->first)) {
      ++it;
      continue;
    }
    auto& locks = it->second;
    const size_t before = locks.size();
    std::erase_if(locks, [&](const HeldLock& h) { return h.owner == owner; });
    changed |= locks.size() != before;
    removed += before - locks.size();
    it = locks.empty() ? t.files.erase(it) : std::next(it);
  }
  t.waits_for.erase(owner);
  if (!file) t.held.erase(owner);
  else if (auto it = t.held.find(owner); it != t.held.end())
    if ((it->second -= std::min(it->second, removed)) == 0) t.held.erase(it);
  locked_files = t.files.size();
  if (changed) t.changed.notify_all();
}

bool any_record_locks() { return locked_files.load(std::memory_order_relaxed) != 0; }

}  // namespace kvms::linux

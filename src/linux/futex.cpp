// futex(2): the wait queue lives in the Process and is protected by the process lock, which every
// syscall handler holds. A waiter compares the futex word and queues itself under that lock, and a
// waker changes the word in guest code before taking the lock, so no wake-up is lost.
#include <linux/futex.h>
#include <sys/syscall.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <list>
#include <mutex>
#include <optional>
#include <cerrno>
#include <chrono>
#include <climits>
#include <ctime>

#include "kvm/vm.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr auto kWaitSlice = std::chrono::milliseconds(100);
constexpr int64_t kForeverSec = int64_t(1) << 32;

// A futex word the host reads in place (atomically, like the guest's own accesses): aligned and
// mapped readable, or nullptr.
const uint32_t* futex_word(Process& p, uint64_t addr) {
  if (addr & 3) return nullptr;
  const auto span = p.mm().readable(addr, 4);
  return span ? reinterpret_cast<const uint32_t*>(span->data()) : nullptr;
}

// Linux's get_futex_key for a futex it only names (wake, requeue): aligned (EINVAL), a user address
// (EFAULT: the kernel area, the hole, non-canonical), and for a shared futex a mapped one (EFAULT).
int64_t check_futex_address(Process& p, uint64_t addr, bool shared) {
  constexpr uint64_t kTaskSizeMax = 0x7ffffffff000;  // x86-64's first address past user space
  if (addr & 3) return -EINVAL;
  if (addr > kTaskSizeMax - 4) return -EFAULT;
  if (shared && !p.mm().find(addr)) return -EFAULT;
  return 0;
}

// Futexes in memory shared between guest processes (kvm::SharedBacking: a MAP_SHARED file or
// shared anonymous memory) are woken by whichever process: their waiters are in one table for the
// whole kvmserver, keyed by the backing's identity and the word's offset in it (what Linux's
// get_futex_key does with the inode), not in the process's own queue.
struct SharedKey {
  uint64_t dev = 0, ino = 0, offset = 0;
  bool operator==(const SharedKey&) const = default;
};
struct SharedWaiter {
  SharedKey key;
  uint32_t bitset = 0;
  std::atomic<bool> woken{false};
  std::condition_variable* wake_up = nullptr;  // the waiter's process lock's
};
std::mutex shared_waiters_mutex;
std::list<SharedWaiter*> shared_waiters;

std::optional<SharedKey> shared_key(Process& p, uint64_t addr) {
  uint64_t start = 0;
  const kvm::Mapping* m = p.mm().find(addr, &start);
  if (!m || !m->shared) return std::nullopt;
  return SharedKey{m->shared->dev, m->shared->ino, m->shared_offset + (addr - start)};
}

int64_t wake_shared(const SharedKey& key, uint64_t count, uint32_t bitset) {
  int64_t n = 0;
  std::lock_guard<std::mutex> lock(shared_waiters_mutex);
  for (auto it = shared_waiters.begin(); it != shared_waiters.end() && uint64_t(n) < count;) {
    SharedWaiter* w = *it;
    if (w->key == key && (w->bitset & bitset)) {
      w->woken = true;
      w->wake_up->notify_all();  // without the waiter's lock: it re-checks every kSharedSlice anyway
      it = shared_waiters.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

// A kick (stop, kill, deadline) ends a wait early; the syscall is then restarted (see Guest).
bool interrupted(Process& p) {
  if (p.lock.stop) return true;
  kvm::Vcpu* vcpu = p.thread().vcpu;
  return vcpu && vcpu->run_area()->immediate_exit;
}

// A futex timeout as a host deadline: none (max) without one, -EFAULT/-EINVAL for a bad one.
// Relative, or absolute on the guest's CLOCK_MONOTONIC (or CLOCK_REALTIME).
int64_t futex_deadline(Process& p, uint64_t timeout_addr, bool absolute, bool realtime,
                       std::chrono::steady_clock::time_point& deadline) {
  deadline = std::chrono::steady_clock::time_point::max();
  if (!timeout_addr) return 0;
  timespec ts{};
  if (!p.mm().read(timeout_addr, ts)) return -EFAULT;
  if (ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000) return -EINVAL;
  if (absolute) ts = host_time(p, realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC, ts);
  // In nanoseconds, a guest's tv_sec past 292 years would overflow (and come out negative: an
  // endless wait timing out at once); 2^32 s is forever enough.
  auto span = std::chrono::seconds(std::min<int64_t>(ts.tv_sec, kForeverSec)) + std::chrono::nanoseconds(ts.tv_nsec);
  if (absolute) {
    timespec now{};
    clock_gettime(realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC, &now);
    auto left = span - (std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec));
    deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(left);
  } else {
    deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(span);
  }
  return 0;
}

// Sleeps on the process's condition (lk holds the process lock) until done() (0), a kick (-EINTR)
// or the deadline (-ETIMEDOUT), looking again at least every slice.
template <typename Done>
int64_t sleep_until(Process& p, std::unique_lock<std::mutex>& lk, std::chrono::steady_clock::time_point deadline,
                    std::chrono::milliseconds slice, Done done) {
  Process::Asleep asleep(p);
  for (;;) {
    if (done()) return 0;
    if (interrupted(p)) return -EINTR;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return -ETIMEDOUT;
    p.lock.changed.wait_until(lk, std::min(deadline, now + slice));
  }
}

int64_t futex_wait(Process& p, uint64_t addr, uint32_t expected, uint32_t bitset, uint64_t timeout_addr, bool absolute,
                   bool realtime, bool shared) {
  if (bitset == 0) return -EINVAL;
  const uint32_t* word = futex_word(p, addr);
  if (!word) return (addr & 3) ? -EINVAL : -EFAULT;
  std::chrono::steady_clock::time_point deadline;
  if (int64_t rc = futex_deadline(p, timeout_addr, absolute, realtime, deadline)) return rc;
  if (__atomic_load_n(word, __ATOMIC_SEQ_CST) != expected) return -EAGAIN;

  // Handlers run with the process lock held (Process::holds_lock); tests may call without it.
  std::unique_lock<std::mutex> lk = Process::holds_lock ? std::unique_lock<std::mutex>(p.lock.mutex, std::adopt_lock)
                                                         : std::unique_lock<std::mutex>(p.lock.mutex);
  // A futex in memory shared with other guest processes waits in the shared table (see
  // SharedKey), and re-checks every kSharedSlice: its waker notifies without this process's lock.
  const std::optional<SharedKey> key = shared_key(p, addr);
  constexpr auto kSharedSlice = std::chrono::milliseconds(5);
  const std::chrono::milliseconds slice = key ? kSharedSlice : kWaitSlice;
  FutexWaiter self{addr, bitset, p.thread().tid, false, shared};
  SharedWaiter shared_self;
  if (key) {
    shared_self.key = *key;
    shared_self.bitset = bitset;
    shared_self.wake_up = &p.lock.changed;
    std::lock_guard<std::mutex> lock(shared_waiters_mutex);
    shared_waiters.push_back(&shared_self);
  } else {
    p.futex_waiters.push_back(&self);
  }
  int64_t result = sleep_until(p, lk, deadline, slice, [&] { return self.woken || shared_self.woken; });
  if (key) {
    std::lock_guard<std::mutex> lock(shared_waiters_mutex);
    if (!shared_self.woken) shared_waiters.remove(&shared_self);
    else result = 0;  // woken as it timed out or was interrupted: the wake counts, as on Linux
  } else if (!self.woken) {
    p.futex_waiters.remove(&self);
  }
  if (Process::holds_lock) lk.release();
  return result;
}

int64_t requeue(Process& p, uint64_t from, uint64_t to, uint64_t wake, uint64_t move, bool shared) {
  int64_t n = 0;
  for (auto it = p.futex_waiters.begin(); it != p.futex_waiters.end();) {
    FutexWaiter* w = *it;
    if (w->addr != from || w->shared != shared) {
      ++it;
      continue;
    }
    if (w->pi) return -EINVAL;  // a PI futex is only requeued by CMP_REQUEUE_PI, as on Linux
    if (uint64_t(n) < wake) {
      w->woken = true;
      it = p.futex_waiters.erase(it);
    } else if (uint64_t(n) < wake + move) {
      w->addr = to;
      ++it;
    } else {
      break;
    }
    ++n;
  }
  if (n) p.lock.changed.notify_all();
  return n;
}

int64_t wake_op(Process& p, uint64_t addr1, uint64_t addr2, uint64_t wake1, uint64_t wake2, uint32_t encoded,
                bool shared) {
  if (addr2 & 3) return -EINVAL;
  const auto span = p.mm().writable(addr2, 4);
  if (!span) return -EFAULT;
  uint32_t* word = reinterpret_cast<uint32_t*>(span->data());
  const uint32_t op = (encoded >> 28) & 7, cmp = (encoded >> 24) & 15;
  uint32_t oparg = (encoded >> 12) & 0xfff, cmparg = encoded & 0xfff;
  if (encoded & (FUTEX_OP_OPARG_SHIFT << 28)) oparg = 1u << (oparg & 31);
  uint32_t old = __atomic_load_n(word, __ATOMIC_SEQ_CST), next;
  do {
    switch (op) {
      case FUTEX_OP_SET: next = oparg; break;
      case FUTEX_OP_ADD: next = old + oparg; break;
      case FUTEX_OP_OR: next = old | oparg; break;
      case FUTEX_OP_ANDN: next = old & ~oparg; break;
      case FUTEX_OP_XOR: next = old ^ oparg; break;
      default: return -ENOSYS;
    }
  } while (!__atomic_compare_exchange_n(word, &old, next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  p.mm().note_write(*span, 4);
  bool cond;
  switch (cmp) {
    case FUTEX_OP_CMP_EQ: cond = old == cmparg; break;
    case FUTEX_OP_CMP_NE: cond = old != cmparg; break;
    case FUTEX_OP_CMP_LT: cond = int32_t(old) < int32_t(cmparg); break;
    case FUTEX_OP_CMP_LE: cond = int32_t(old) <= int32_t(cmparg); break;
    case FUTEX_OP_CMP_GT: cond = int32_t(old) > int32_t(cmparg); break;
    case FUTEX_OP_CMP_GE: cond = int32_t(old) >= int32_t(cmparg); break;
    default: return -ENOSYS;
  }
  int64_t n = futex_wake(p, addr1, wake1, ~0u, shared);
  if (n < 0) return n;
  if (cond) {
    const int64_t m = futex_wake(p, addr2, wake2, ~0u, shared);
    if (m < 0) return m;
    n += m;
  }
  return n;
}

// Priority-inheritance futexes (FUTEX_LOCK_PI, TRYLOCK_PI, UNLOCK_PI): the word holds the owner's
// tid, FUTEX_WAITERS while some thread waits in the kernel (so that the owner's unlock comes here
// rather than cmpxchg-ing the word to 0 itself), and FUTEX_OWNER_DIED. An unlock hands the lock to
// the first waiter: the word gets its tid. There is no priority to inherit: kvmserver schedules no
// guest thread over another. The queue is the process's (a PI futex in memory shared between
// processes is locked and unlocked by each process's threads alone here).
// Setting FUTEX_WAITERS and queueing happen under the process lock, as does the unlock's look at
// the queue, so no handover is lost.
int64_t lock_pi(Process& p, uint64_t addr, uint64_t timeout_addr, bool realtime, bool try_only) {
  if (addr & 3) return -EINVAL;
  const auto span = p.mm().writable(addr, 4);
  if (!span) return -EFAULT;
  uint32_t* word = reinterpret_cast<uint32_t*>(span->data());
  std::chrono::steady_clock::time_point deadline;
  if (int64_t rc = futex_deadline(p, timeout_addr, true, realtime, deadline)) return rc;
  const uint32_t tid = uint32_t(p.thread().tid);
  std::unique_lock<std::mutex> lk = Process::holds_lock ? std::unique_lock<std::mutex>(p.lock.mutex, std::adopt_lock)
                                                         : std::unique_lock<std::mutex>(p.lock.mutex);
  struct ReleaseAdopted {
    std::unique_lock<std::mutex>& lk;
    ~ReleaseAdopted() {
      if (Process::holds_lock) lk.release();
    }
  } release_adopted{lk};
  for (;;) {
    // Free: ours (FUTEX_OWNER_DIED kept: glibc reports EOWNERDEAD from it). Held by a tid this
    // process has no thread of: ESRCH, as Linux's attach_to_pi_owner. Otherwise waited for.
    uint32_t old = __atomic_load_n(word, __ATOMIC_SEQ_CST);
    const uint32_t owner = old & FUTEX_TID_MASK;
    if (owner == tid) return -EDEADLK;
    if (owner == 0) {
      if (!__atomic_compare_exchange_n(word, &old, tid | (old & (FUTEX_WAITERS | FUTEX_OWNER_DIED)), false,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        continue;
      p.mm().note_write(*span, 4);
      return 0;
    }
    if (!p.threads.count(int(owner))) return -ESRCH;
    if (try_only) return -EAGAIN;
    if (!(old & FUTEX_WAITERS)) {
      if (!__atomic_compare_exchange_n(word, &old, old | FUTEX_WAITERS, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) continue;
      p.mm().note_write(*span, 4);
    }
    FutexWaiter self{addr, ~0u, int(tid), false, false, true};
    p.futex_waiters.push_back(&self);
    bool owner_gone = false;
    const int64_t result = sleep_until(p, lk, deadline, kWaitSlice, [&] {
      if (self.woken) return true;  // the unlock made the word ours
      const uint32_t now_owner = __atomic_load_n(word, __ATOMIC_SEQ_CST) & FUTEX_TID_MASK;
      owner_gone = now_owner == 0 || (now_owner != tid && !p.threads.count(int(now_owner)));
      return owner_gone;
    });
    if (self.woken) return 0;
    p.futex_waiters.remove(&self);
    if (!owner_gone) return result;
    // Its owner ended holding it: ours with FUTEX_OWNER_DIED (Linux's exit_pi_state_list hands it
    // to a waiter so). Released on the way out (a robust list's word is 0): taken from the top.
    uint32_t now = __atomic_load_n(word, __ATOMIC_SEQ_CST);
    const uint32_t dead = now & FUTEX_TID_MASK;
    if (dead != 0 && dead != tid && !p.threads.count(int(dead)) &&
        __atomic_compare_exchange_n(word, &now, tid | FUTEX_OWNER_DIED | (now & FUTEX_WAITERS), false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST)) {
      p.mm().note_write(*span, 4);
      return 0;
    }
  }
}

int64_t unlock_pi(Process& p, uint64_t addr) {
  if (addr & 3) return -EINVAL;
  const auto span = p.mm().writable(addr, 4);
  if (!span) return -EFAULT;
  uint32_t* word = reinterpret_cast<uint32_t*>(span->data());
  const uint32_t tid = uint32_t(p.thread().tid);
  std::unique_lock<std::mutex> lk = Process::holds_lock ? std::unique_lock<std::mutex>(p.lock.mutex, std::adopt_lock)
                                                         : std::unique_lock<std::mutex>(p.lock.mutex);
  FutexWaiter* next = nullptr;
  bool more = false;
  for (FutexWaiter* w : p.futex_waiters) {
    if (w->addr != addr || !w->pi) continue;
    if (next) {
      more = true;
      break;
    }
    next = w;
  }
  uint32_t old = __atomic_load_n(word, __ATOMIC_SEQ_CST);
  int64_t result = 0;
  do {
    if ((old & FUTEX_TID_MASK) != tid) {
      result = -EPERM;
      break;
    }
  } while (!__atomic_compare_exchange_n(word, &old, next ? uint32_t(next->tid) | (more ? FUTEX_WAITERS : 0) : 0, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  if (result == 0) {
    p.mm().note_write(*span, 4);
    if (next) {
      next->woken = true;
      p.futex_waiters.remove(next);
      p.lock.changed.notify_all();
    }
  }
  if (Process::holds_lock) lk.release();
  return result;
}

// Linux's handle_futex_death: the word at addr, if `tid` owns it, gets FUTEX_OWNER_DIED (keeping
// FUTEX_WAITERS) and one waiter is woken. A pending lock the thread was taking but had not got yet
// (word still 0) wakes a waiter that may now take it. False when the word cannot be accessed.
bool release_futex(Process& p, uint64_t addr, int tid, bool pi, bool pending) {
  if (addr & 3) return false;
  const auto span = p.mm().writable(addr, 4);
  if (!span) return false;
  uint32_t* word = reinterpret_cast<uint32_t*>(span->data());
  uint32_t old = __atomic_load_n(word, __ATOMIC_SEQ_CST);
  if (pending && !pi && old == 0) {
    futex_wake(p, addr, 1, FUTEX_BITSET_MATCH_ANY);
    return true;
  }
  do {
    if ((old & FUTEX_TID_MASK) != uint32_t(tid)) return true;
  } while (!__atomic_compare_exchange_n(word, &old, (old & FUTEX_WAITERS) | FUTEX_OWNER_DIED, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
  p.mm().note_write(*span, 4);
  if (!pi && (old & FUTEX_WAITERS)) futex_wake(p, addr, 1, FUTEX_BITSET_MATCH_ANY);
  return true;
}

}  // namespace

void release_robust_futexes(Process& p, uint64_t head_addr, int tid) {
  // struct robust_list_head: the list (a pointer to the first entry, the head itself ending it),
  // the offset of each lock's futex word from its entry, and the entry being locked right now.
  // Entries' low bit says the lock is a PI one.
  struct {
    uint64_t next;
    int64_t futex_offset;
    uint64_t pending;
  } head{};
  if (!head_addr || !p.mm().read(head_addr, head)) return;
  const uint64_t pending = head.pending & ~uint64_t(1);
  // A guest's list may loop or run anywhere: Linux stops after ROBUST_LIST_LIMIT entries, or at
  // the first one it cannot read.
  uint64_t link = head.next;
  for (int left = ROBUST_LIST_LIMIT; (link & ~uint64_t(1)) != head_addr && left > 0; --left) {
    const uint64_t entry = link & ~uint64_t(1);
    uint64_t next = 0;
    const bool readable = p.mm().read(entry, next);
    if (entry != pending && !release_futex(p, entry + uint64_t(head.futex_offset), tid, link & 1, false)) return;
    if (!readable) return;
    link = next;
  }
  if (pending) release_futex(p, pending + uint64_t(head.futex_offset), tid, head.pending & 1, true);
}

int64_t futex_wake(Process& p, uint64_t addr, uint64_t count, uint32_t bitset, std::optional<bool> shared) {
  if (bitset == 0) return -EINVAL;
  count = std::max<uint64_t>(count, 1);  // Linux wakes one before it compares with the count
  if (const auto key = shared_key(p, addr)) return wake_shared(*key, count, bitset);
  int64_t n = 0;
  for (auto it = p.futex_waiters.begin(); it != p.futex_waiters.end() && uint64_t(n) < count;) {
    FutexWaiter* w = *it;
    if (w->addr == addr && (!shared || w->shared == *shared) && w->pi) return n ? n : -EINVAL;
    if (w->addr == addr && (!shared || w->shared == *shared) && (w->bitset & bitset)) {
      w->woken = true;
      it = p.futex_waiters.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  if (n) p.lock.changed.notify_all();
  return n;
}

KVMS_SYSCALL(futex) {
  const uint64_t addr = a.a[0];
  const int op = int(a.a[1]);
  const uint32_t val = uint32_t(a.a[2]);
  const int cmd = op & FUTEX_CMD_MASK;
  const bool realtime = op & FUTEX_CLOCK_REALTIME;
  if (realtime && cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET && cmd != FUTEX_LOCK_PI2) return -ENOSYS;
  const uint64_t count = val > INT_MAX ? INT_MAX : val;
  const bool shared = !(op & FUTEX_PRIVATE_FLAG);
  switch (cmd) {
    case FUTEX_WAIT:
      return futex_wait(p, addr, val, ~0u, a.a[3], false, false, shared);
    case FUTEX_WAIT_BITSET:
      return futex_wait(p, addr, val, uint32_t(a.a[5]), a.a[3], true, realtime, shared);
    case FUTEX_WAKE:
      if (int64_t rc = check_futex_address(p, addr, shared)) return rc;
      return futex_wake(p, addr, count, ~0u, shared);
    case FUTEX_WAKE_BITSET:
      if (int64_t rc = check_futex_address(p, addr, shared)) return rc;
      return futex_wake(p, addr, count, uint32_t(a.a[5]), shared);
    case FUTEX_REQUEUE:
    case FUTEX_CMP_REQUEUE: {
      // Linux takes both counts as ints: nr_wake from val, nr_requeue from the low half of val2.
      if (int32_t(val) < 0 || int32_t(a.a[3]) < 0) return -EINVAL;
      if (int64_t rc = check_futex_address(p, addr, shared)) return rc;
      if (int64_t rc = check_futex_address(p, a.a[4], shared)) return rc;
      if (cmd == FUTEX_CMP_REQUEUE) {
        const uint32_t* word = futex_word(p, addr);
        if (!word) return -EFAULT;
        if (__atomic_load_n(word, __ATOMIC_SEQ_CST) != uint32_t(a.a[5])) return -EAGAIN;
      }
      return requeue(p, addr, a.a[4], count, uint32_t(a.a[3]), shared);
    }
    case FUTEX_WAKE_OP:
      if (int64_t rc = check_futex_address(p, addr, shared)) return rc;
      return wake_op(p, addr, a.a[4], count, a.a[3] > INT_MAX ? INT_MAX : a.a[3], uint32_t(a.a[5]), shared);
    case FUTEX_LOCK_PI:  // its timeout is absolute on CLOCK_REALTIME
      return lock_pi(p, addr, a.a[3], true, false);
    case FUTEX_LOCK_PI2:  // absolute on CLOCK_MONOTONIC unless FUTEX_CLOCK_REALTIME
      return lock_pi(p, addr, a.a[3], realtime, false);
    case FUTEX_TRYLOCK_PI:
      return lock_pi(p, addr, 0, false, true);
    case FUTEX_UNLOCK_PI:
      return unlock_pi(p, addr);
    default:
      // FUTEX_WAIT_REQUEUE_PI and FUTEX_CMP_REQUEUE_PI: glibc uses them only for condition
      // variables over PI mutexes, which programs ask for explicitly.
      p.log("futex operation " + std::to_string(cmd) + " is not supported -> ENOSYS");
      return -ENOSYS;
  }
}

// Every other thread passes a VM exit (a full barrier) before this returns... or is about to: kicked
// vCPUs exit KVM_RUN at once, and threads in the host are past any guest instruction anyway.
KVMS_SYSCALL(membarrier) {
  constexpr int kQuery = 0, kGlobal = 1, kPrivateExpedited = 8, kRegisterPrivateExpedited = 16;
  constexpr int kSupported = kGlobal | kPrivateExpedited | kRegisterPrivateExpedited;
  const int cmd = int(a.a[0]);
  if (a.a[1] != 0 && cmd != kQuery) return -EINVAL;
  switch (cmd) {
    case kQuery:
      return kSupported;
    case kRegisterPrivateExpedited:
      return 0;
    case kGlobal:
    case kPrivateExpedited:
      for (auto& [tid, t] : p.threads)
        if (t.vcpu && &t != &p.thread()) t.vcpu->kick();
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      return 0;
    default:
      return -EINVAL;
  }
}

}  // namespace kvms::linux

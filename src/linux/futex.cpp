// futex for a single-threaded process: no other thread exists to wait or wake, so a wake finds
// nobody and a wait whose value still matches sleeps until its timeout (or, without one, until the
// run is interrupted, as Linux would sleep until a signal). glibc's locks, once and condition
// variables call it even in single-threaded programs (Python's start-up does). The thread work
// replaces this with real queues.
#include <linux/futex.h>
#include <poll.h>
#include <time.h>

#include <cerrno>
#include <cstdint>

#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr int kCmdMask = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);

int64_t wait(Process& p, uint64_t uaddr, uint32_t val, uint64_t utimeout, bool absolute, clockid_t clock) {
  if (uaddr & 3) return -EINVAL;
  uint32_t current = 0;
  if (!p.mm().read(uaddr, current)) return -EFAULT;
  timespec ts{};
  if (utimeout) {
    if (!p.mm().read(utimeout, ts)) return -EFAULT;
    if (ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000) return -EINVAL;
  }
  if (current != val) return -EAGAIN;
  if (!utimeout) {
    p.log("futex: waiting with no other thread to wake it: blocks until the run ends");
    ::ppoll(nullptr, 0, nullptr, nullptr);  // nobody can wake us: only an interruption ends this
    return -EINTR;
  }
  const int rc = ::clock_nanosleep(clock, absolute ? TIMER_ABSTIME : 0, &ts, nullptr);
  return rc == 0 ? -ETIMEDOUT : -rc;
}

}  // namespace

KVMS_SYSCALL(futex) {
  const uint64_t uaddr = a.a[0], utimeout = a.a[3], uaddr2 = a.a[4];
  const int op = static_cast<int>(a.a[1]);
  const uint32_t val = static_cast<uint32_t>(a.a[2]), val3 = static_cast<uint32_t>(a.a[5]);
  const int cmd = op & kCmdMask;
  const bool realtime = op & FUTEX_CLOCK_REALTIME;
  if (realtime && cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET && cmd != FUTEX_WAIT_REQUEUE_PI &&
      cmd != FUTEX_LOCK_PI2)
    return -ENOSYS;  // what Linux says for FUTEX_CLOCK_REALTIME on other commands
  switch (cmd) {
    case FUTEX_WAIT:
      return wait(p, uaddr, val, utimeout, false, CLOCK_MONOTONIC);
    case FUTEX_WAIT_BITSET:
      if (val3 == 0) return -EINVAL;
      return wait(p, uaddr, val, utimeout, true, realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC);
    case FUTEX_WAKE:
    case FUTEX_WAKE_BITSET: {
      if (cmd == FUTEX_WAKE_BITSET && val3 == 0) return -EINVAL;
      if (uaddr & 3) return -EINVAL;
      return 0;  // no waiters
    }
    case FUTEX_REQUEUE:
    case FUTEX_CMP_REQUEUE: {
      if ((uaddr & 3) || (uaddr2 & 3)) return -EINVAL;
      if (cmd == FUTEX_CMP_REQUEUE) {
        uint32_t current = 0;
        if (!p.mm().read(uaddr, current)) return -EFAULT;
        if (current != val3) return -EAGAIN;
      }
      return 0;
    }
    case FUTEX_WAKE_OP: {
      // Applies the operation to *uaddr2 (the caller relies on it), then wakes nobody.
      if ((uaddr & 3) || (uaddr2 & 3)) return -EINVAL;
      const uint32_t encoded = val3;
      const int oparg_shift = (encoded >> 31) & 1;
      const int wop = (encoded >> 28) & 7;
      uint32_t oparg = (encoded >> 12) & 0xfff;
      if (oparg & 0x800) oparg |= 0xfffff000;  // sign-extended
      if (oparg_shift) {
        if (oparg > 31) return -EINVAL;
        oparg = 1u << oparg;
      }
      uint32_t old = 0;
      if (!p.mm().read(uaddr2, old)) return -EFAULT;
      uint32_t next;
      switch (wop) {
        case FUTEX_OP_SET: next = oparg; break;
        case FUTEX_OP_ADD: next = old + oparg; break;
        case FUTEX_OP_OR: next = old | oparg; break;
        case FUTEX_OP_ANDN: next = old & ~oparg; break;
        case FUTEX_OP_XOR: next = old ^ oparg; break;
        default: return -ENOSYS;
      }
      if (!p.mm().write(uaddr2, next)) return -EFAULT;
      return 0;
    }
    default:
      return -ENOSYS;  // PI futexes: not without threads
  }
}

}  // namespace kvms::linux

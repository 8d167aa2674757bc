// POSIX per-process timers: timer_create, timer_settime, timer_gettime, timer_getoverrun,
// timer_delete. Each is a SignalTimer (itimer.cpp) on the host's steady clock; absolute times of
// CLOCK_REALTIME/BOOTTIME are turned into a delay when the timer is set (as for a relative timer,
// a later change of the wall clock does not move it). CPU-time clocks cannot be timers here: guest
// CPU time is not counted per process (EINVAL, logged).
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>

#include "linux/itimer.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr int kSigevSignal = 0, kSigevNone = 1, kSigevThread = 2, kSigevThreadId = 4;
constexpr int kMaxSignal = 64;
constexpr int64_t kNsPerSec = 1000000000;
constexpr int64_t kMaxSeconds = int64_t(1) << 32;  // ~136 years: "forever" without overflow

// struct sigevent as the x86-64 kernel reads it.
struct GuestSigevent {
  uint64_t value;
  int32_t signo;
  int32_t notify;
  int32_t thread_id;  // sigev_notify_thread_id
  int32_t pad[11];
};
static_assert(sizeof(GuestSigevent) == 64);

struct GuestItimerspec {
  int64_t interval_sec, interval_nsec, value_sec, value_nsec;
};

std::shared_ptr<SignalTimer> find_timer(Process& p, uint64_t id) {
  auto it = p.posix_timers.by_id.find(int(id));
  if (id > uint64_t(INT32_MAX) || it == p.posix_timers.by_id.end()) return nullptr;
  return it->second;
}

bool write_setting(Process& p, uint64_t addr, const SignalTimer::Setting& s) {
  const GuestItimerspec v{s.interval.count() / kNsPerSec, s.interval.count() % kNsPerSec,
                          s.value.count() / kNsPerSec, s.value.count() % kNsPerSec};
  return p.mm().write(addr, v);
}

}  // namespace

KVMS_SYSCALL(timer_create) {
  const int clock = int(a.a[0]);
  if (clock == CLOCK_REALTIME_ALARM || clock == CLOCK_BOOTTIME_ALARM) return -EPERM;  // CAP_WAKE_ALARM
  if (clock == CLOCK_PROCESS_CPUTIME_ID || clock == CLOCK_THREAD_CPUTIME_ID || clock < 0) {
    if (clock >= 0) p.log("timer_create on a CPU-time clock is not supported -> EINVAL");
    return -EINVAL;  // (negative ids are other processes' CPU clocks, which Linux checks the same way)
  }
  if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME) return -EINVAL;
  TimerEvent event;
  event.code = SI_TIMER;
  GuestSigevent ev{};
  const bool given = a.a[1] != 0;
  if (given && !p.mm().read(a.a[1], ev)) return -EFAULT;
  if (given) {
    switch (ev.notify) {
      case kSigevThreadId | kSigevSignal:
        if (!p.threads.count(ev.thread_id)) return -EINVAL;  // a thread of this process only
        event.tid = ev.thread_id;
        [[fallthrough]];
      case kSigevSignal:
      case kSigevThread:  // the C library's business: to the kernel, a signal
        if (ev.signo <= 0 || ev.signo > kMaxSignal) return -EINVAL;
        break;
      case kSigevNone:
        event.sends = false;
        break;
      default:
        return -EINVAL;
    }
    event.sig = ev.signo;
    event.value = ev.value;
  }
  int id = 0;  // the lowest free id, as Linux hands them out
  while (p.posix_timers.by_id.count(id)) ++id;
  if (!given) event.value = uint64_t(id);  // no sigevent: SIGALRM carrying the id
  event.timer_id = id;
  Charge charge(p.shared_account(), ResourceAccount::kTimers);  // the tree's --max-timers
  if (!charge.grow(1)) {
    p.log_refusal(ResourceAccount::kTimers, "timer_create: EAGAIN");
    return -EAGAIN;
  }
  if (!p.mm().write(a.a[2], id)) return -EFAULT;
  auto timer = std::make_shared<SignalTimer>(p, event);
  timer->clock = clock;
  timer->charge = std::move(charge);
  p.posix_timers.by_id[id] = std::move(timer);
  return 0;
}

KVMS_SYSCALL(timer_settime) {
  const int flags = int(a.a[1]);
  auto timer = find_timer(p, a.a[0]);
  if (!timer) return -EINVAL;
  // (Linux ignores flags other than TIMER_ABSTIME.)
  GuestItimerspec v{};
  if (!p.mm().read(a.a[2], v)) return -EFAULT;
  if (v.interval_sec < 0 || v.interval_nsec < 0 || v.interval_nsec >= kNsPerSec || v.value_sec < 0 ||
      v.value_nsec < 0 || v.value_nsec >= kNsPerSec)
    return -EINVAL;
  SignalTimer::Setting next;
  next.interval = std::chrono::nanoseconds(std::min(v.interval_sec, kMaxSeconds) * kNsPerSec + v.interval_nsec);
  int64_t value = std::min(v.value_sec, kMaxSeconds) * kNsPerSec + v.value_nsec;
  if (value > 0 && (flags & TIMER_ABSTIME)) value = std::max<int64_t>(value - guest_now_ns(p, timer->clock), 1);  // past: now
  next.value = std::chrono::nanoseconds(value);
  const SignalTimer::Setting old = timer->set(next);
  if (a.a[3] && !write_setting(p, a.a[3], old)) return -EFAULT;
  return 0;
}

KVMS_SYSCALL(timer_gettime) {
  auto timer = find_timer(p, a.a[0]);
  if (!timer) return -EINVAL;
  return write_setting(p, a.a[1], timer->get()) ? 0 : -EFAULT;
}

KVMS_SYSCALL(timer_getoverrun) {
  auto timer = find_timer(p, a.a[0]);
  if (!timer) return -EINVAL;
  return timer->last_overrun();
}

// A signal of the timer still pending stays (as on Linux before 6.13), without overrun count.
KVMS_SYSCALL(timer_delete) {
  if (!find_timer(p, a.a[0])) return -EINVAL;
  p.posix_timers.by_id.erase(int(a.a[0]));  // joins its thread (which only tries the process lock we hold)
  return 0;
}

}  // namespace kvms::linux

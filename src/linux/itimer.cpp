// alarm, setitimer, getitimer (ITIMER_REAL; the CPU-time timers ITIMER_VIRTUAL and ITIMER_PROF
// are read as disarmed and cannot be armed: ENOSYS) and pause.
#include "linux/itimer.hpp"

#include <sys/time.h>

#include <algorithm>
#include <cerrno>

#include "kvm/vm.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {

SignalTimer::SignalTimer(Process& owner, TimerEvent event)
    : owner_(owner), event_(event), thread_([this] { run(); }) {}

SignalTimer::~SignalTimer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  changed_.notify_all();  // (under no lock of the owner's: see run())
  if (thread_.joinable()) thread_.join();
}

SignalTimer::Setting SignalTimer::get() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Setting s;
  s.interval = interval_;
  if (armed_) {
    const auto left = std::chrono::duration_cast<Duration>(deadline_ - std::chrono::steady_clock::now());
    s.value = std::max(left, Duration(1));  // an armed timer never reads as 0 (that means disarmed)
  }
  return s;
}

SignalTimer::Setting SignalTimer::set(Setting next) {
  const Setting old = get();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = next.value.count() > 0;
    ++generation_;
    interval_ = armed_ ? next.interval : Duration(0);
    if (armed_) deadline_ = std::chrono::steady_clock::now() + next.value;
  }
  changed_.notify_all();
  return old;
}

int SignalTimer::signal_taken() {
  queued_ = false;
  last_overrun_ = overrun_;
  overrun_ = 0;
  return last_overrun_;
}

void SignalTimer::expire_locked() {
  if (!event_.sends) return;
  if (queued_) {  // the last one is still pending: count it (Linux caps the count at INT_MAX)
    if (overrun_ < INT32_MAX) ++overrun_;
    return;
  }
  siginfo_t info{};
  info.si_signo = event_.sig;
  info.si_code = event_.code;
  if (event_.timer_id >= 0) {
    info.si_timerid = event_.timer_id;
    info.si_value.sival_ptr = reinterpret_cast<void*>(event_.value);
  }
  queued_ = post_signal_locked(owner_, info, event_.tid) && event_.timer_id >= 0;
  // Not queued (the same standard signal already pending from elsewhere: one instance at most): an
  // expiry the program never sees, so an overrun of the signal this timer sends next, as on Linux.
  if (!queued_ && event_.timer_id >= 0 && overrun_ < INT32_MAX) ++overrun_;
}

void SignalTimer::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!quit_) {
    if (!armed_) {
      changed_.wait(lock);
      continue;
    }
    if (changed_.wait_until(lock, deadline_) != std::cv_status::timeout || quit_) continue;
    const auto now = std::chrono::steady_clock::now();
    if (!armed_ || now < deadline_) continue;
    int expiries = 1;
    if (interval_.count() > 0) {
      deadline_ += interval_;
      // Periods missed while this thread was not scheduled are overruns, not a burst of signals.
      if (now >= deadline_) {
        const auto missed = (now - deadline_) / interval_ + 1;
        deadline_ += missed * interval_;
        expiries += int(std::min<int64_t>(missed, INT32_MAX - 1));
      }
    } else {
      armed_ = false;
    }
    // The signal is posted without this timer's lock (a handler holding the process lock may be
    // waiting for it: setitimer), and the process lock is only tried, so that a destructor run
    // under it (the owner going away) never waits for this thread: it gives up once told to quit.
    // The owner outlives this thread (the destructor joins it).
    const uint64_t generation = generation_;
    lock.unlock();
    while (!quit_) {
      if (owner_.lock.mutex.try_lock()) {
        // set() runs under the process lock, so the setting seen now is the one the guest last made.
        std::unique_lock<std::mutex> relock(mutex_);
        const bool current = generation == generation_;
        relock.unlock();
        if (current)
          for (int i = 0; i < expiries; ++i) expire_locked();
        owner_.lock.mutex.unlock();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    lock.lock();
  }
}

void timer_signal_taken(Process& p, siginfo_t& info) {
  if (info.si_code != SI_TIMER) return;
  auto it = p.posix_timers.by_id.find(info.si_timerid);
  if (it == p.posix_timers.by_id.end()) return;
  info.si_overrun = it->second->signal_taken();
}

namespace {

constexpr int64_t kMaxSeconds = int64_t(1) << 32;  // ~136 years: "forever" without overflow

// struct itimerval {it_interval, it_value}, each {tv_sec, tv_usec}.
bool read_itimerval(Process& p, uint64_t addr, SignalTimer::Setting& s) {
  int64_t v[4] = {};
  if (!p.mm().copy_from_user(v, addr, sizeof v)) return false;
  auto micros = [](int64_t sec, int64_t usec) {
    return SignalTimer::Duration((std::min(sec, kMaxSeconds) * 1000000 + usec) * 1000);
  };
  if (v[0] < 0 || v[1] < 0 || v[1] >= 1000000 || v[2] < 0 || v[3] < 0 || v[3] >= 1000000) {
    s.value = SignalTimer::Duration(-1);  // EINVAL
    return true;
  }
  s.interval = micros(v[0], v[1]);
  s.value = micros(v[2], v[3]);
  return true;
}

bool write_itimerval(Process& p, uint64_t addr, const SignalTimer::Setting& s) {
  const int64_t interval = s.interval.count() / 1000;
  const int64_t value = s.value.count() > 0 ? std::max<int64_t>(s.value.count() / 1000, 1) : 0;  // armed: never 0
  const int64_t v[4] = {interval / 1000000, interval % 1000000, value / 1000000, value % 1000000};
  return p.mm().copy_to_user(addr, v, sizeof v);
}

SignalTimer& timer_of(Process& p) {
  if (!p.real_timer.timer) p.real_timer.timer = std::make_shared<SignalTimer>(p, TimerEvent{});
  return *p.real_timer.timer;
}

SignalTimer::Setting current(Process& p) { return p.real_timer.timer ? p.real_timer.timer->get() : SignalTimer::Setting{}; }

}  // namespace

KVMS_SYSCALL(getitimer) {
  if (a.a[0] > 2) return -EINVAL;  // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
  const SignalTimer::Setting s = a.a[0] == ITIMER_REAL ? current(p) : SignalTimer::Setting{};
  return write_itimerval(p, a.a[1], s) ? 0 : -EFAULT;
}

KVMS_SYSCALL(setitimer) {
  if (a.a[0] > 2) return -EINVAL;
  SignalTimer::Setting next;
  if (a.a[1] && !read_itimerval(p, a.a[1], next)) return -EFAULT;
  if (next.value.count() < 0) return -EINVAL;
  if (a.a[0] != ITIMER_REAL) {  // CPU-time timers: kvmserver does not count guest CPU time per process
    if (a.a[2] && !write_itimerval(p, a.a[2], {})) return -EFAULT;
    if (next.value.count() > 0) p.log("setitimer of a CPU-time timer is not supported -> ENOSYS");
    return next.value.count() > 0 ? -ENOSYS : 0;
  }
  const SignalTimer::Setting old = next.value.count() > 0 || p.real_timer.timer ? timer_of(p).set(next) : SignalTimer::Setting{};
  if (a.a[2] && !write_itimerval(p, a.a[2], old)) return -EFAULT;
  return 0;
}

// Seconds left of the previous alarm, rounded to the nearest (at least 1 when one was armed), as
// Linux's alarm_setitimer answers.
KVMS_SYSCALL(alarm) {
  const uint64_t seconds = uint32_t(a.a[0]);
  SignalTimer::Setting next;
  next.value = std::chrono::seconds(seconds);
  const SignalTimer::Setting old = seconds || p.real_timer.timer ? timer_of(p).set(next) : SignalTimer::Setting{};
  if (old.value.count() == 0) return 0;
  const int64_t left = (old.value.count() + 500000000) / 1000000000;
  return std::max<int64_t>(left, 1);
}

// Until a signal is delivered to this thread (then -EINTR, its handler runs as the call returns).
KVMS_SYSCALL(pause) { return wait_for_signal(p); }

}  // namespace kvms::linux

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

RealTimer::RealTimer(Process& owner) : owner_(owner), thread_([this] { run(); }) {}

RealTimer::~RealTimer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  changed_.notify_all();  // (under no lock of the owner's: see run())
  if (thread_.joinable()) thread_.join();
}

RealTimer::Setting RealTimer::get() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Setting s;
  s.interval = interval_;
  if (armed_) {
    const auto left = std::chrono::duration_cast<Duration>(deadline_ - std::chrono::steady_clock::now());
    s.value = std::max(left, Duration(1));  // an armed timer never reads as 0 (that means disarmed)
  }
  return s;
}

RealTimer::Setting RealTimer::set(Setting next) {
  const Setting old = get();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = next.value.count() > 0;
    interval_ = armed_ ? next.interval : Duration(0);
    if (armed_) deadline_ = std::chrono::steady_clock::now() + next.value;
  }
  changed_.notify_all();
  return old;
}

void RealTimer::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!quit_) {
    if (!armed_) {
      changed_.wait(lock);
      continue;
    }
    if (changed_.wait_until(lock, deadline_) != std::cv_status::timeout || quit_) continue;
    if (!armed_ || std::chrono::steady_clock::now() < deadline_) continue;
    if (interval_.count() > 0) deadline_ += interval_;
    else armed_ = false;
    // The signal is posted without this timer's lock (a handler holding the process lock may be
    // waiting for it: setitimer), and the process lock is only tried, so that a destructor run
    // under it (the owner going away) never waits for this thread: it gives up once told to quit.
    // The owner outlives this thread (the destructor joins it).
    lock.unlock();
    while (!quit_) {
      if (owner_.lock.mutex.try_lock()) {
        post_signal_locked(owner_, SIGALRM, SI_KERNEL);
        owner_.lock.mutex.unlock();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    lock.lock();
  }
}

namespace {

constexpr int64_t kMaxSeconds = int64_t(1) << 32;  // ~136 years: "forever" without overflow

// struct itimerval {it_interval, it_value}, each {tv_sec, tv_usec}.
bool read_itimerval(Process& p, uint64_t addr, RealTimer::Setting& s) {
  int64_t v[4] = {};
  if (!p.mm().copy_from_user(v, addr, sizeof v)) return false;
  auto micros = [](int64_t sec, int64_t usec) {
    return RealTimer::Duration(std::min(sec, kMaxSeconds) * 1000000 + usec);
  };
  if (v[0] < 0 || v[1] < 0 || v[1] >= 1000000 || v[2] < 0 || v[3] < 0 || v[3] >= 1000000) {
    s.value = RealTimer::Duration(-1);  // EINVAL
    return true;
  }
  s.interval = micros(v[0], v[1]);
  s.value = micros(v[2], v[3]);
  return true;
}

bool write_itimerval(Process& p, uint64_t addr, const RealTimer::Setting& s) {
  const int64_t v[4] = {s.interval.count() / 1000000, s.interval.count() % 1000000, s.value.count() / 1000000,
                        s.value.count() % 1000000};
  return p.mm().copy_to_user(addr, v, sizeof v);
}

RealTimer& timer_of(Process& p) {
  if (!p.real_timer.timer) p.real_timer.timer = std::make_shared<RealTimer>(p);
  return *p.real_timer.timer;
}

RealTimer::Setting current(Process& p) { return p.real_timer.timer ? p.real_timer.timer->get() : RealTimer::Setting{}; }

}  // namespace

KVMS_SYSCALL(getitimer) {
  if (a.a[0] > 2) return -EINVAL;  // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
  const RealTimer::Setting s = a.a[0] == ITIMER_REAL ? current(p) : RealTimer::Setting{};
  return write_itimerval(p, a.a[1], s) ? 0 : -EFAULT;
}

KVMS_SYSCALL(setitimer) {
  if (a.a[0] > 2) return -EINVAL;
  RealTimer::Setting next;
  if (a.a[1] && !read_itimerval(p, a.a[1], next)) return -EFAULT;
  if (next.value.count() < 0) return -EINVAL;
  if (a.a[0] != ITIMER_REAL) {  // CPU-time timers: kvmserver does not count guest CPU time per process
    if (a.a[2] && !write_itimerval(p, a.a[2], {})) return -EFAULT;
    if (next.value.count() > 0) p.log("setitimer of a CPU-time timer is not supported -> ENOSYS");
    return next.value.count() > 0 ? -ENOSYS : 0;
  }
  const RealTimer::Setting old = next.value.count() > 0 || p.real_timer.timer ? timer_of(p).set(next) : RealTimer::Setting{};
  if (a.a[2] && !write_itimerval(p, a.a[2], old)) return -EFAULT;
  return 0;
}

// Seconds left of the previous alarm, rounded to the nearest (at least 1 when one was armed), as
// Linux's alarm_setitimer answers.
KVMS_SYSCALL(alarm) {
  const uint64_t seconds = uint32_t(a.a[0]);
  RealTimer::Setting next;
  next.value = RealTimer::Duration(int64_t(seconds) * 1000000);
  const RealTimer::Setting old = seconds || p.real_timer.timer ? timer_of(p).set(next) : RealTimer::Setting{};
  if (old.value.count() == 0) return 0;
  const int64_t left = (old.value.count() + 500000) / 1000000;
  return std::max<int64_t>(left, 1);
}

// Until a signal is delivered to this thread (then -EINTR, its handler runs as the call returns).
KVMS_SYSCALL(pause) {
  Process::HandlerWait wait(p);
  std::unique_lock<std::mutex>& lk = wait.lock();
  for (;;) {
    ThreadContext& t = p.thread();
    if (t.pending_signals & ~t.sigmask) return -EINTR;
    if (p.lock.stop || (t.vcpu && t.vcpu->run_area()->immediate_exit)) return -EINTR;
    p.lock.changed.wait_for(lk, std::chrono::milliseconds(100));
  }
}

}  // namespace kvms::linux

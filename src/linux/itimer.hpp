#pragma once
// Timers that send a signal when they expire: ITIMER_REAL (alarm, setitimer) and the POSIX timers
// of timer_create. A host thread per timer posts the signal, as the kernel would, whatever the
// guest is doing (running user code, blocked in a call). A fork's child has none, a worker's reset
// disarms them all, exec deletes the POSIX ones (ITIMER_REAL survives it, as on Linux).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "linux/limits.hpp"

namespace kvms::linux {

class Process;

// What an expiry sends.
struct TimerEvent {
  int sig = SIGALRM;
  int code = SI_KERNEL;  // ITIMER_REAL's; SI_TIMER for timer_create's
  int timer_id = -1;     // si_timerid of a POSIX timer
  uint64_t value = 0;    // sigev_value
  int tid = 0;           // SIGEV_THREAD_ID: that thread (while it lives); 0: the process
  bool sends = true;     // false for SIGEV_NONE: the timer only counts down
};

class SignalTimer {
 public:
  SignalTimer(Process& owner, TimerEvent event);
  ~SignalTimer();  // disarms and waits for the thread: the owner is never reached afterwards
  SignalTimer(const SignalTimer&) = delete;
  SignalTimer& operator=(const SignalTimer&) = delete;

  using Duration = std::chrono::nanoseconds;
  struct Setting {
    Duration value{0}, interval{0};  // value 0: disarmed
  };
  // Arms (value > 0, relative to now) or disarms it; returns what was left of the previous setting.
  Setting set(Setting next);
  Setting get() const;
  const TimerEvent& event() const { return event_; }
  int clock = CLOCK_MONOTONIC;  // timer_create's clock (its absolute times and what gettime means)
  Charge charge;                // its share of --max-timers

  // POSIX overrun accounting, under the owner's process lock: an expiry while this timer's last
  // signal is still pending is counted instead of queued again; delivering (or discarding) that
  // signal takes the count, which is the signal's si_overrun and what timer_getoverrun answers.
  int signal_taken();
  int last_overrun() const { return last_overrun_; }

 private:
  void run();
  void expire_locked();  // the owner's lock held
  Process& owner_;
  const TimerEvent event_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::chrono::steady_clock::time_point deadline_{};
  Duration interval_{0};
  bool armed_ = false;
  uint64_t generation_ = 0;  // each set() a new one: an expiry of an older setting is not posted
  std::atomic<bool> quit_{false};
  bool queued_ = false;  // these three: under the owner's process lock
  int overrun_ = 0, last_overrun_ = 0;
  std::thread thread_;
};

// The Process members: copies (a fork's child, a worker reset to its template) get no timer.
struct RealTimerSlot {
  std::shared_ptr<SignalTimer> timer;
  RealTimerSlot() = default;
  RealTimerSlot(const RealTimerSlot&) {}
  RealTimerSlot& operator=(const RealTimerSlot&) {
    timer.reset();
    return *this;
  }
};
struct PosixTimers {
  std::map<int, std::shared_ptr<SignalTimer>> by_id;
  PosixTimers() = default;
  PosixTimers(const PosixTimers&) {}
  PosixTimers& operator=(const PosixTimers&) {
    by_id.clear();
    return *this;
  }
};

// A timer's signal left the pending queue (delivered, waited for, or discarded): its overrun count
// goes to info.si_overrun and the timer may queue again. No-op for any other signal.
void timer_signal_taken(Process& p, siginfo_t& info);

}  // namespace kvms::linux

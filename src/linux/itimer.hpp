#pragma once
// ITIMER_REAL (alarm, setitimer, getitimer): a host thread per armed timer sends the process
// SIGALRM when it expires, as the kernel would, whatever the guest is doing (running user code,
// blocked in a call). One per process; a fork's child has none, a worker's reset disarms it.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace kvms::linux {

class Process;

class RealTimer {
 public:
  explicit RealTimer(Process& owner);
  ~RealTimer();  // disarms and waits for the thread: the owner is never reached afterwards
  RealTimer(const RealTimer&) = delete;
  RealTimer& operator=(const RealTimer&) = delete;

  using Duration = std::chrono::microseconds;
  struct Setting {
    Duration value{0}, interval{0};  // value 0: disarmed
  };
  // Arms (value > 0) or disarms it; returns what was left of the previous setting.
  Setting set(Setting next);
  Setting get() const;

 private:
  void run();
  Process& owner_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::chrono::steady_clock::time_point deadline_{};
  Duration interval_{0};
  bool armed_ = false;
  std::atomic<bool> quit_{false};
  std::thread thread_;
};

// The Process member: copies (a fork's child, a worker reset to its template) get no timer.
struct RealTimerSlot {
  std::shared_ptr<RealTimer> timer;
  RealTimerSlot() = default;
  RealTimerSlot(const RealTimerSlot&) {}
  RealTimerSlot& operator=(const RealTimerSlot&) {
    timer.reset();
    return *this;
  }
};

}  // namespace kvms::linux

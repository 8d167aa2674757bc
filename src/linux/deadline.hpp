#pragma once
// A wait's timeout as Linux keeps it (epoll, poll, select, recvmmsg): none, zero, or an end time on
// CLOCK_MONOTONIC, saturated like the kernel's timespec64_add_safe, so that no guest value
// overflows and the time left can be written back.
#include <time.h>

#include <cerrno>
#include <cstdint>

#include "linux/process.hpp"

namespace kvms::linux {

class Deadline {
 public:
  static constexpr int64_t kNsPerSec = 1000000000;

  static Deadline infinite() { return Deadline(Mode::Infinite); }
  // sec/nsec already validated (>= 0, nsec < 1e9).
  static Deadline after(int64_t sec, int64_t nsec) {
    if (sec == 0 && nsec == 0) return Deadline(Mode::Zero);
    Deadline d(Mode::At);
    constexpr int64_t kMaxSec = INT64_MAX / 4;  // saturate like timespec64_add_safe
    const timespec now = monotonic_now();
    if (sec > kMaxSec - now.tv_sec) {
      d.end_ = {kMaxSec, 0};
    } else {
      d.end_.tv_sec = now.tv_sec + sec;
      d.end_.tv_nsec = now.tv_nsec + nsec;
      if (d.end_.tv_nsec >= kNsPerSec) {
        d.end_.tv_nsec -= kNsPerSec;
        d.end_.tv_sec += 1;
      }
    }
    return d;
  }
  static Deadline at(const timespec& end) {
    Deadline d(Mode::At);
    d.end_ = end;
    return d;
  }
  static Deadline from_ms(int ms) {
    if (ms < 0) return infinite();
    return after(ms / 1000, int64_t(ms % 1000) * 1000000);
  }

  bool would_block() const { return mode_ != Mode::Zero; }
  const timespec& end() const { return end_; }  // when timed()
  bool timed() const { return mode_ == Mode::At; }
  // Time left, never negative.
  timespec remaining() const {
    if (mode_ != Mode::At) return {0, 0};
    const timespec now = monotonic_now();
    if (!before(now, end_)) return {0, 0};
    timespec r{end_.tv_sec - now.tv_sec, end_.tv_nsec - now.tv_nsec};
    if (r.tv_nsec < 0) {
      r.tv_nsec += kNsPerSec;
      r.tv_sec -= 1;
    }
    return r;
  }
  bool expired() const {
    const timespec r = remaining();
    return mode_ != Mode::Infinite && r.tv_sec == 0 && r.tv_nsec == 0;
  }
  // For the host's ppoll/epoll_pwait2: nullptr blocks without limit.
  const timespec* host_timeout(timespec& buf) const {
    if (mode_ == Mode::Infinite) return nullptr;
    buf = remaining();
    return &buf;
  }

 private:
  enum class Mode { Infinite, Zero, At };
  explicit Deadline(Mode m) : mode_(m) {}
  static timespec monotonic_now() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
  }
  static bool before(const timespec& x, const timespec& y) {
    return x.tv_sec < y.tv_sec || (x.tv_sec == y.tv_sec && x.tv_nsec < y.tv_nsec);
  }
  Mode mode_;
  timespec end_{0, 0};
};

// Reads a guest struct timespec timeout (0 = none): -EFAULT/-EINVAL like Linux.
inline int64_t read_timeout(Process& p, uint64_t addr, Deadline& out) {
  if (!addr) {
    out = Deadline::infinite();
    return 0;
  }
  struct {
    int64_t sec, nsec;
  } ts{};
  if (!p.mm().read(addr, ts)) return -EFAULT;
  if (ts.sec < 0 || ts.nsec < 0 || ts.nsec >= Deadline::kNsPerSec) return -EINVAL;
  out = Deadline::after(ts.sec, ts.nsec);
  return 0;
}

// A kick (a stop, the server's pause, another process's signal) ends a wait with EINTR and the
// Guest runs the call again from the start: the end time its first run computed holds for the runs
// after it (as Linux's restart_block keeps it), or a stream of kicks (an ignored signal another
// process sends every 100 ms) would keep a timed wait from ever ending.
inline Deadline kept_across_restart(Process& p, const Deadline& fresh) {
  ThreadContext& t = p.thread();
  if (t.restarting && t.restart_end) return Deadline::at(*t.restart_end);
  if (fresh.timed()) t.restart_end = fresh.end();
  else t.restart_end.reset();
  return fresh;
}

}  // namespace kvms::linux

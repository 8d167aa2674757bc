// Clocks and sleeping. The common clocks are answered in the guest by the vDSO from the clock page
// this file keeps up to date; these handlers are the syscall fallbacks and the sleeps.
#include <sys/times.h>
#include <x86intrin.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <ctime>

#include "kvm/clock_page.h"
#include "kvm/vm.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kNsPerSec = 1000000000;
constexpr uint32_t kShift = 32;

uint64_t now_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * kNsPerSec + uint64_t(ts.tv_nsec);
}

bool valid_clock(int64_t id) {
  return id == CLOCK_REALTIME || id == CLOCK_MONOTONIC || id == CLOCK_PROCESS_CPUTIME_ID ||
         id == CLOCK_THREAD_CPUTIME_ID || id == CLOCK_MONOTONIC_RAW || id == CLOCK_REALTIME_COARSE ||
         id == CLOCK_MONOTONIC_COARSE || id == CLOCK_BOOTTIME || id == CLOCK_TAI;
}

// The guest's CPU-time clocks are the vCPU thread's: the guest has no other threads yet.
clockid_t host_clock(int64_t id) {
  return id == CLOCK_PROCESS_CPUTIME_ID ? CLOCK_THREAD_CPUTIME_ID : clockid_t(id);
}

int64_t read_timespec(Process& p, uint64_t addr, timespec& ts) {
  struct { int64_t sec, nsec; } t{};
  if (!p.mm().read(addr, t)) return -EFAULT;
  if (t.sec < 0 || t.nsec < 0 || t.nsec >= int64_t(kNsPerSec)) return -EINVAL;
  ts = {t.sec, t.nsec};
  return 0;
}

int64_t write_timespec(Process& p, uint64_t addr, const timespec& ts) {
  struct { int64_t sec, nsec; } t{ts.tv_sec, ts.tv_nsec};
  return p.mm().write(addr, t) ? 0 : -EFAULT;
}

}  // namespace

// Re-bases the clock page on the host's clocks (from the host's copy of it: Process::Clock) at the
// vCPU's TSC now. The rate comes from KVM's TSC frequency at first, then from what was measured
// since the first sample, which is more precise than whole kHz. The monotonic value never steps
// back across a refresh.
void refresh_clock_page(Process& p) {
  if (!p.vdso_base) return;
  auto& c = p.clock;
  kvm::Vcpu* vcpu = p.thread().vcpu;
  const uint64_t guest_tsc = vcpu ? vcpu->guest_tsc() : __rdtsc() + uint64_t(c.tsc_offset);
  const uint64_t host_mono = now_ns(CLOCK_MONOTONIC);
  uint64_t mult = (uint64_t(1000000) << kShift) / c.tsc_khz;
  if (c.calibration_tsc == 0) {
    c.calibration_tsc = guest_tsc;
    c.calibration_ns = host_mono;
  } else if (host_mono - c.calibration_ns > kNsPerSec && guest_tsc > c.calibration_tsc) {
    mult = uint64_t((static_cast<unsigned __int128>(host_mono - c.calibration_ns) << kShift) / (guest_tsc - c.calibration_tsc));
  }
  // The guest's monotonic time now, and the offsets of its other clocks from it, taken so that its
  // wall clock is the host's.
  const uint64_t mono = host_mono + uint64_t(c.ahead_ns);
  uint64_t base = mono;
  int64_t realtime_offset = int64_t(now_ns(CLOCK_REALTIME) - mono);
  // BOOTTIME is MONOTONIC plus the time the host spent suspended (read after mono: never negative),
  // and that only grows. Relative to `base` instead, it went below MONOTONIC whenever the guest's
  // clock had run ahead of the host's (base = previous).
  int64_t boottime_offset = int64_t(now_ns(CLOCK_BOOTTIME) - host_mono);
  if (c.mult) {
    const uint64_t ticks = guest_tsc > c.tsc_base ? guest_tsc - c.tsc_base : 0;  // never wraps, as in the vDSO
    uint64_t previous = c.monotonic_base_ns + uint64_t((static_cast<unsigned __int128>(ticks) * c.mult) >> c.shift);
    if (previous > base) base = previous;
    // Nor may the wall clock step back: until the rate is calibrated it can run a little ahead.
    realtime_offset = std::max(int64_t(mono + realtime_offset - base), int64_t(previous + c.realtime_offset_ns - base));
    boottime_offset = std::max(boottime_offset, c.boottime_offset_ns);
  }
  c.shift = kShift;
  c.mult = mult;
  c.tsc_base = guest_tsc;
  c.monotonic_base_ns = base;
  // Where the guest's clock ran ahead (the rate was not calibrated yet, or the TSC is noisy), it
  // stays ahead rather than stepping back: the host's translation of the guest's end times follows.
  c.ahead_ns = int64_t(base - host_mono);
  c.realtime_offset_ns = realtime_offset;
  c.boottime_offset_ns = boottime_offset;
  c.seq += 2;  // even: the page is consistent (the vCPUs do not run while we write it)
  kvms_clock_page page{};
  page.seq = c.seq;
  page.shift = c.shift;
  page.mult = c.mult;
  page.tsc_base = c.tsc_base;
  page.monotonic_base_ns = c.monotonic_base_ns;
  page.realtime_offset_ns = c.realtime_offset_ns;
  page.boottime_offset_ns = c.boottime_offset_ns;
  p.mm().poke(p.vdso_base - kvm::kPageSize, &page, sizeof page);  // fails harmlessly if the guest unmapped it
  c.refreshed_ns = host_mono;
}

void maybe_refresh_clock_page(Process& p) {
  if (p.vdso_base && now_ns(CLOCK_MONOTONIC) - p.clock.refreshed_ns > kNsPerSec) refresh_clock_page(p);
}

void start_clock_at(Process& p, uint64_t monotonic_ns) {
  auto& c = p.clock;
  c.ahead_ns = int64_t(monotonic_ns - now_ns(CLOCK_MONOTONIC));
  // Not "never step back" this once: the memory this clock goes on with (the template's) saw no
  // time after monotonic_ns, so to the guest the clock still only moves forward.
  c.mult = 0;
  // The vCPU's own TSC (one KVM_GET_MSRS): the host's TSC plus the VM's intended offset is off by
  // however long KVM took to apply that offset when the vCPU was made, which on a loaded machine
  // was a quarter of a second (the guest's clock then held that long, and its absolute waits came
  // short by as much: tests/e2e/clock.sh).
  refresh_clock_page(p);
}

int64_t clock_ahead_ns(const Process& p, int64_t clock) {
  switch (clock) {
    case CLOCK_MONOTONIC: case CLOCK_MONOTONIC_RAW: case CLOCK_MONOTONIC_COARSE: case CLOCK_BOOTTIME:
      return p.clock.ahead_ns;
    default:
      return 0;  // the wall clocks are the host's; CPU-time clocks are the vCPU threads'
  }
}

timespec host_time(const Process& p, int64_t clock, const timespec& guest_time) {
  const int64_t ahead = clock_ahead_ns(p, clock);
  if (ahead == 0) return guest_time;
  constexpr int64_t kMaxSec = INT64_MAX / 4;  // far enough (as Deadline saturates); |ahead| < 2^34 s
  if (guest_time.tv_sec > kMaxSec) return {kMaxSec, 0};
  int64_t sec = guest_time.tv_sec - ahead / int64_t(kNsPerSec);
  int64_t nsec = guest_time.tv_nsec - ahead % int64_t(kNsPerSec);
  if (nsec < 0) {
    nsec += kNsPerSec;
    sec -= 1;
  } else if (nsec >= int64_t(kNsPerSec)) {
    nsec -= kNsPerSec;
    sec += 1;
  }
  if (sec < 0) return {0, 0};  // long past on the host's clock: as good as now
  return {sec, nsec};
}

namespace {

// The clocks the vDSO answers, read the way it does (clock page + guest TSC), so a program that
// mixes the vDSO and the syscall sees one clock, never one running a little behind the other.
std::optional<int64_t> clock_page_ns(Process& p, int64_t id) {
  if (!p.vdso_base || id < 0 || id > 7 || id == CLOCK_PROCESS_CPUTIME_ID || id == CLOCK_THREAD_CPUTIME_ID) return std::nullopt;
  const Process::Clock& page = p.clock;  // the host's copy of the page, never the guest's
  if (!page.mult) return std::nullopt;
  // The guest's own TSC, as its rdtsc reads it (host TSC + offset can be off by the latency of the
  // calibration, enough to make the syscall lag the vDSO by a few microseconds).
  kvm::Vcpu* vcpu = p.thread().vcpu;
  const uint64_t guest_tsc = vcpu ? vcpu->guest_tsc() : __rdtsc() + uint64_t(p.clock.tsc_offset);
  const uint64_t ticks = guest_tsc > page.tsc_base ? guest_tsc - page.tsc_base : 0;  // as the vDSO: it holds, never wraps
  const int64_t mono = int64_t(page.monotonic_base_ns + uint64_t((static_cast<unsigned __int128>(ticks) * page.mult) >> page.shift));
  switch (id) {
    case CLOCK_REALTIME: case CLOCK_REALTIME_COARSE: return mono + page.realtime_offset_ns;
    case CLOCK_BOOTTIME: return mono + page.boottime_offset_ns;
    default: return mono;  // MONOTONIC, MONOTONIC_RAW, MONOTONIC_COARSE
  }
}

}  // namespace

int64_t guest_now_ns(Process& p, int64_t id) {
  if (auto ns = clock_page_ns(p, id)) return *ns;
  return int64_t(now_ns(host_clock(id))) + clock_ahead_ns(p, id);
}

namespace {

timespec guest_time(Process& p, int64_t id) {
  const int64_t ns = guest_now_ns(p, id);
  return {ns / int64_t(kNsPerSec), ns % int64_t(kNsPerSec)};
}

}  // namespace

KVMS_SYSCALL(clock_gettime) {
  const int64_t id = int64_t(a.a[0]);
  if (!valid_clock(id)) return -EINVAL;
  return write_timespec(p, a.a[1], guest_time(p, id));
}

KVMS_SYSCALL(clock_getres) {
  const int64_t id = int64_t(a.a[0]);
  if (!valid_clock(id)) return -EINVAL;
  timespec ts{};
  clock_getres(host_clock(id), &ts);
  return a.a[1] ? write_timespec(p, a.a[1], ts) : 0;
}

KVMS_SYSCALL(gettimeofday) {
  if (a.a[0]) {
    const timespec ts = guest_time(p, CLOCK_REALTIME);
    struct { int64_t sec, usec; } tv{ts.tv_sec, ts.tv_nsec / 1000};
    if (!p.mm().write(a.a[0], tv)) return -EFAULT;
  }
  if (a.a[1]) {
    struct { int32_t minuteswest, dsttime; } tz{0, 0};
    if (!p.mm().write(a.a[1], tz)) return -EFAULT;
  }
  return 0;
}

KVMS_SYSCALL(time) {
  const int64_t t = guest_time(p, CLOCK_REALTIME).tv_sec;
  if (a.a[0] && !p.mm().write(a.a[0], t)) return -EFAULT;
  return t;
}

KVMS_SYSCALL(nanosleep) {
  timespec req{}, rem{};
  if (int64_t rc = read_timespec(p, a.a[0], req)) return rc;
  int rc;
  {
    Process::BlockingSection unlocked(p);
    rc = ::nanosleep(&req, &rem);
  }
  if (rc == 0) return 0;
  if (errno == EINTR && a.a[1] && write_timespec(p, a.a[1], rem)) return -EFAULT;
  return -errno;
}

KVMS_SYSCALL(clock_nanosleep) {
  const int64_t id = int64_t(a.a[0]);
  const int flags = int(a.a[1]);
  if (!valid_clock(id)) return -EINVAL;
  if (id == CLOCK_THREAD_CPUTIME_ID) return -EOPNOTSUPP;  // Linux's own answer (libc turns it into EINVAL)
  if (flags & ~TIMER_ABSTIME) return -EINVAL;
  timespec req{}, rem{};
  if (int64_t rc = read_timespec(p, a.a[2], req)) return rc;
  if (flags & TIMER_ABSTIME) req = host_time(p, id, req);
  int rc;
  {
    Process::BlockingSection unlocked(p);
    rc = ::clock_nanosleep(host_clock(id), flags, &req, &rem);
  }
  if (rc == EINTR && !(flags & TIMER_ABSTIME) && a.a[3] && write_timespec(p, a.a[3], rem)) return -EFAULT;
  return -rc;
}

KVMS_SYSCALL(times) {
  const long ticks_per_sec = 100;
  timespec cpu{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
  if (a.a[0]) {
    struct tms t{};
    t.tms_utime = clock_t(cpu.tv_sec * ticks_per_sec + cpu.tv_nsec / (kNsPerSec / ticks_per_sec));
    if (!p.mm().write(a.a[0], t)) return -EFAULT;
  }
  return guest_now_ns(p, CLOCK_MONOTONIC) / int64_t(kNsPerSec / ticks_per_sec);
}

}  // namespace kvms::linux

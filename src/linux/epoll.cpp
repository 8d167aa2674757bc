// Readiness: epoll, poll and select, and the fds that exist to be waited on (eventfd, timerfd).
//
// Every guest fd is a host fd, so these are the host's own syscalls over translated fds. An epoll
// instance is a host epoll: registrations carry the guest's epoll_event.data unchanged, so what the
// host's epoll_wait writes is exactly what the guest must read, straight into guest memory. The
// guest's interest list is also kept in OpenFile::epoll_interest (guest fds), from which a worker's
// copy is rebuilt over its own host fds (clone_epoll).
//
// The server layer learns about every wait first (ServerHooks::before_wait) and may take over; while
// it hides listening sockets, poll and select leave them out of the host's set (epoll: the server
// layer removes them from the host epoll itself).
#include "linux/epoll.hpp"
#include "linux/signal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "linux/deadline.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
constexpr uint64_t kEpollEventSize = 12;  // struct epoll_event is packed on x86-64
static_assert(sizeof(epoll_event) == kEpollEventSize);
static_assert(sizeof(pollfd) == 8);
constexpr int kMaxEpollEvents = INT_MAX / int(kEpollEventSize);
constexpr int kMaxEpollNesting = 4;  // EP_MAX_NESTS

struct GuestTimespec {
  int64_t sec, nsec;
};
struct GuestTimeval {
  int64_t sec, usec;
};

// ---- Timeouts (Deadline, read_timeout: deadline.hpp) ------------------------------------------

// Linux writes the time left back for select/pselect6/ppoll (not for a zero timeout), and ignores a
// failure to do so: the wait itself succeeded.
void write_back_timespec(Process& p, uint64_t addr, const Deadline& d) {
  if (!addr || !d.timed()) return;
  const timespec r = d.remaining();
  const GuestTimespec ts{r.tv_sec, r.tv_nsec};
  p.mm().write(addr, ts);
}

void write_back_timeval(Process& p, uint64_t addr, const Deadline& d) {
  if (!addr || !d.timed()) return;
  const timespec r = d.remaining();
  const GuestTimeval tv{r.tv_sec, r.tv_nsec / 1000};
  p.mm().write(addr, tv);
}

// ---- Listening sockets and the server layer ----------------------------------------------------

bool listener_hidden(const Process& p) { return p.server && p.server->listener_hidden(p); }

// Whether ep, or an epoll nested in it, watches a listening socket. Each epoll is looked at once:
// epolls nested in several others (a guest can build a lattice of them, each level watching every
// epoll of the next) would otherwise cost the product of the levels' sizes, per wait.
bool epoll_watches_listener(const Process& p, const OpenFile& ep) {
  std::unordered_set<const OpenFile*> seen{&ep};
  std::vector<const OpenFile*> level{&ep};
  for (int depth = 0; depth <= kMaxEpollNesting && !level.empty(); ++depth) {
    std::vector<const OpenFile*> next;
    for (const OpenFile* e : level) {
      for (const auto& interest : e->epoll_interest) {
        auto f = p.fds.get(interest.guest_fd);
        if (!f) continue;
        if (f->listening) return true;
        if (f->kind == OpenFile::Kind::Epoll && seen.insert(f.get()).second) next.push_back(f.get());
      }
    }
    level = std::move(next);
  }
  return false;
}

// True when the server layer takes the wait over: the syscall must return at once (its result is
// discarded, the syscall stays pending). The main thread's waits count, and another thread's wait
// that includes a listener (Go's netpoller runs on whichever thread is free); a runtime's helper
// threads wait on their own event loops all the time, idle or not, without one.
bool server_takes_over(Process& p, bool includes_listener, bool would_block) {
  return p.server && (includes_listener || &p.thread() == &p.main_thread()) &&
         p.server->before_wait(p, includes_listener, would_block);
}

std::shared_ptr<OpenFile> get_epoll(Process& p, int epfd, int64_t& err) {
  auto ep = p.fds.get(epfd);
  if (!ep) {
    err = -EBADF;
    return nullptr;
  }
  if (ep->kind != OpenFile::Kind::Epoll) {
    err = -EINVAL;
    return nullptr;
  }
  return ep;
}

// ---- epoll -------------------------------------------------------------------------------------

int64_t create_epoll(Process& p, bool cloexec) {
  const int h = ::epoll_create1(EPOLL_CLOEXEC);
  if (h < 0) return -errno;
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::Epoll, "anon_inode:[eventpoll]", O_RDWR);
  return p.fds.install(std::move(file), cloexec);
}

// The host's epoll_pwait2 (Linux 5.11) when it has one, else epoll_wait in whole milliseconds
// (rounded up, so that a timeout never ends early).
int host_epoll_wait(int epfd, epoll_event* events, int maxevents, const timespec* timeout) {
  static std::atomic<bool> have_pwait2{true};
  if (have_pwait2.load(std::memory_order_relaxed)) {
    long rc = ::syscall(SYS_epoll_pwait2, epfd, events, maxevents, timeout, nullptr, 0);
    if (rc >= 0 || errno != ENOSYS) return int(rc);
    have_pwait2.store(false, std::memory_order_relaxed);
  }
  int ms = -1;
  if (timeout) {
    const int64_t total = timeout->tv_sec * 1000 + (timeout->tv_nsec + 999999) / 1000000;
    ms = timeout->tv_sec > INT_MAX / 1000 || total > INT_MAX ? INT_MAX : int(total);
  }
  return ::epoll_wait(epfd, events, maxevents, ms);
}

int64_t epoll_wait_common(Process& p, const SyscallArgs& a, const Deadline& deadline) {
  const int epfd = int(a.a[0]);
  const uint64_t events = a.a[1];
  const int maxevents = int(a.a[2]);
  if (maxevents <= 0 || maxevents > kMaxEpollEvents) return -EINVAL;
  const auto buf = p.mm().writable(events, uint64_t(maxevents) * kEpollEventSize);
  if (!buf) return -EFAULT;
  int64_t err = 0;
  auto ep = get_epoll(p, epfd, err);
  if (!ep) return err;
  if (server_takes_over(p, epoll_watches_listener(p, *ep), deadline.would_block())) return 0;
  timespec ts{};
  int n;
  {
    Process::BlockingSection unlocked(p);
    n = host_epoll_wait(ep->host_fd, reinterpret_cast<epoll_event*>(buf->data()), maxevents, deadline.host_timeout(ts));
  }
  if (n < 0) return -errno;
  if (n > 0) p.mm().note_write(*buf, uint64_t(n) * kEpollEventSize);
  return n;
}

// ---- poll and select ---------------------------------------------------------------------------

// Host ppoll over a set whose entries may be -1 (left out); EINTR and the like come back as -errno.
int64_t host_poll(Process& p, std::vector<pollfd>& set, const Deadline& deadline, bool already_ready) {
  Process::BlockingSection unlocked(p);
  timespec ts{};
  const timespec zero{0, 0};
  const timespec* timeout = already_ready ? &zero : deadline.host_timeout(ts);
  const int rc = ::ppoll(set.empty() ? nullptr : set.data(), set.size(), timeout, nullptr);
  return rc < 0 ? -errno : rc;
}

// taken_over: the server layer took the wait over (the syscall stays pending: leave the guest's
// timeout as it was).
int64_t poll_common(Process& p, uint64_t ufds, uint64_t nfds_arg, const Deadline& deadline, bool& taken_over) {
  const uint32_t nfds = uint32_t(nfds_arg);  // unsigned int in Linux
  if (nfds > uint32_t(p.fds.limit())) return -EINVAL;
  std::vector<pollfd> guest(nfds);
  if (nfds && !p.mm().copy_from_user(guest.data(), ufds, uint64_t(nfds) * sizeof(pollfd))) return -EFAULT;

  bool includes_listener = false;
  for (const auto& g : guest) {
    if (g.fd < 0) continue;
    auto f = p.fds.get(g.fd);
    if (f && f->listening) includes_listener = true;
  }
  if ((taken_over = server_takes_over(p, includes_listener, deadline.would_block()))) return 0;
  const bool hide = listener_hidden(p);

  // Entries that stay out of the host's set: negative fds (revents 0), closed fds (POLLNVAL, which
  // counts as ready), hidden listeners (never ready).
  std::vector<pollfd> host(nfds);
  std::vector<bool> nval(nfds, false);
  bool any_nval = false;
  for (uint32_t i = 0; i < nfds; ++i) {
    host[i] = {-1, 0, 0};
    if (guest[i].fd < 0) continue;
    auto f = p.fds.get(guest[i].fd);
    if (!f) {
      nval[i] = any_nval = true;
      continue;
    }
    if (f->listening && hide) continue;
    host[i] = {f->host_fd, guest[i].events, 0};
  }
  const int64_t rc = host_poll(p, host, deadline, any_nval);
  if (rc < 0) return rc;

  int64_t ready = 0;
  for (uint32_t i = 0; i < nfds; ++i) {
    guest[i].revents = nval[i] ? short(POLLNVAL) : host[i].fd < 0 ? short(0) : host[i].revents;
    if (guest[i].revents) ++ready;
  }
  if (nfds && !p.mm().copy_to_user(ufds, guest.data(), uint64_t(nfds) * sizeof(pollfd))) return -EFAULT;
  return ready;
}

// What select's three sets mean in poll terms (the kernel's POLLIN_SET/POLLOUT_SET/POLLEX_SET).
constexpr short kSelectIn = POLLIN | POLLRDNORM | POLLRDBAND | POLLHUP | POLLERR;
constexpr short kSelectOut = POLLOUT | POLLWRNORM | POLLWRBAND | POLLERR;
constexpr short kSelectEx = POLLPRI;

// The size of the guest's fd table as Linux would have it (64 slots, doubling as fds are opened):
// select ignores bits at and beyond it.
int kernel_max_fds(const Process& p) {
  const auto open = p.fds.fds();
  int max_fds = 64;
  if (!open.empty())
    while (max_fds <= open.back() && max_fds < (INT_MAX >> 1)) max_fds <<= 1;
  return max_fds;
}

int64_t select_common(Process& p, uint64_t nfds_arg, const uint64_t sets[3], const Deadline& deadline, bool& taken_over) {
  int n = int(nfds_arg);
  if (n < 0) return -EINVAL;
  n = std::min(n, kernel_max_fds(p));
  const size_t words = (size_t(n) + 63) / 64;
  std::vector<uint64_t> in[3], out[3];
  for (int s = 0; s < 3; ++s) {
    in[s].assign(words, 0);
    out[s].assign(words, 0);
    if (sets[s] && words && !p.mm().copy_from_user(in[s].data(), sets[s], words * 8)) return -EFAULT;
  }
  auto bit = [](const std::vector<uint64_t>& set, int fd) { return (set[fd / 64] >> (fd % 64)) & 1; };

  struct Entry {
    int fd;
    bool r, w, e;
  };
  std::vector<Entry> wanted;
  std::vector<std::shared_ptr<OpenFile>> files;
  bool includes_listener = false;
  for (int fd = 0; fd < n; ++fd) {
    const bool r = bit(in[0], fd), w = bit(in[1], fd), e = bit(in[2], fd);
    if (!r && !w && !e) continue;
    auto f = p.fds.get(fd);
    if (!f) return -EBADF;
    includes_listener |= f->listening;
    wanted.push_back({fd, r, w, e});
    files.push_back(std::move(f));
  }
  if ((taken_over = server_takes_over(p, includes_listener, deadline.would_block()))) return 0;
  const bool hide = listener_hidden(p);

  std::vector<pollfd> host(wanted.size());
  for (size_t i = 0; i < wanted.size(); ++i) {
    host[i] = {-1, 0, 0};
    if (files[i]->listening && hide) continue;
    short events = 0;
    if (wanted[i].r) events |= POLLIN | POLLRDNORM | POLLRDBAND;
    if (wanted[i].w) events |= POLLOUT | POLLWRNORM | POLLWRBAND;
    if (wanted[i].e) events |= POLLPRI;
    host[i] = {files[i]->host_fd, events, 0};
  }
  const int64_t rc = host_poll(p, host, deadline, false);
  if (rc < 0) return rc;

  int64_t ready = 0;
  auto set_bit = [&](int s, int fd) {
    out[s][fd / 64] |= uint64_t(1) << (fd % 64);
    ++ready;
  };
  for (size_t i = 0; i < wanted.size(); ++i) {
    if (host[i].fd < 0) continue;
    const short rev = host[i].revents;
    if (wanted[i].r && (rev & kSelectIn)) set_bit(0, wanted[i].fd);
    if (wanted[i].w && (rev & kSelectOut)) set_bit(1, wanted[i].fd);
    if (wanted[i].e && (rev & kSelectEx)) set_bit(2, wanted[i].fd);
  }
  for (int s = 0; s < 3; ++s)
    if (sets[s] && words && !p.mm().copy_to_user(sets[s], out[s].data(), words * 8)) return -EFAULT;
  return ready;
}

bool host_nonblocking(const OpenFile& f) {
  const int fl = ::fcntl(f.host_fd, F_GETFL);
  return fl >= 0 ? (fl & O_NONBLOCK) != 0 : (f.status_flags & O_NONBLOCK) != 0;
}

}  // namespace

// ---- fdinfo ------------------------------------------------------------------------------------

FdInfo::FdInfo(int host_fd) {
  const std::string path = "/proc/self/fdinfo/" + std::to_string(host_fd);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[4096];
  // A seq_file read returns all it has up to the buffer's size: a short read is the end.
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
    text_.append(buf, size_t(n));
    if (size_t(n) < sizeof buf) break;
  }
  ::close(fd);
}

std::optional<std::string> FdInfo::field(const char* key) const {
  const std::string needle = std::string(key) + ":";
  for (size_t pos = 0; pos < text_.size();) {
    size_t eol = text_.find('\n', pos);
    if (eol == std::string::npos) eol = text_.size();
    if (text_.compare(pos, needle.size(), needle) == 0) {
      size_t v = pos + needle.size();
      while (v < eol && (text_[v] == ' ' || text_[v] == '\t')) ++v;
      return text_.substr(v, eol - v);
    }
    pos = eol + 1;
  }
  return std::nullopt;
}


// ---- Syscalls: epoll -----------------------------------------------------------------------------

KVMS_SYSCALL(epoll_create) {
  if (int(a.a[0]) <= 0) return -EINVAL;
  return create_epoll(p, false);
}

KVMS_SYSCALL(epoll_create1) {
  const int flags = int(a.a[0]);
  if (flags & ~EPOLL_CLOEXEC) return -EINVAL;
  return create_epoll(p, flags & EPOLL_CLOEXEC);
}

KVMS_SYSCALL(epoll_ctl) {
  const int epfd = int(a.a[0]), op = int(a.a[1]), fd = int(a.a[2]);
  const bool has_event = op != EPOLL_CTL_DEL;
  epoll_event ev{};
  if (has_event && !p.mm().copy_from_user(&ev, a.a[3], sizeof ev)) return -EFAULT;
  auto ep = p.fds.get(epfd);
  if (!ep || (ep->status_flags & O_PATH)) return -EBADF;
  auto target = p.fds.get(fd);
  if (!target || (target->status_flags & O_PATH)) return -EBADF;  // O_PATH: not a file to use
  // Files that cannot be polled.
  if (target->kind == OpenFile::Kind::Regular || target->kind == OpenFile::Kind::Directory) return -EPERM;
  if (ep == target || ep->kind != OpenFile::Kind::Epoll) return -EINVAL;
  if (has_event) {
    ev.events &= ~uint32_t(EPOLLWAKEUP);  // needs CAP_BLOCK_SUSPEND: silently dropped, like Linux
    if (ev.events & EPOLLEXCLUSIVE) {
      constexpr uint32_t kExclusiveOk = EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE;
      if (op == EPOLL_CTL_MOD) return -EINVAL;
      if (op == EPOLL_CTL_ADD && (target->kind == OpenFile::Kind::Epoll || (ev.events & ~kExclusiveOk))) return -EINVAL;
    }
  }
  if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD && op != EPOLL_CTL_DEL) return -EINVAL;

  auto& list = ep->epoll_interest;
  auto it = std::find_if(list.begin(), list.end(), [fd](const OpenFile::EpollInterest& e) { return e.guest_fd == fd; });
  const OpenFile::EpollInterest entry{fd, ev.events, ev.data.u64};
  // Each registration is host memory (ours and the host epoll's): the tree's --max-epoll-watches.
  if (op == EPOLL_CTL_ADD && it == list.end()) {
    if (!ep->resource_charge) ep->resource_charge = Charge(p.shared_account(), ResourceAccount::kEpollWatches);
    if (!ep->resource_charge.grow(1)) {
      p.log_refusal(ResourceAccount::kEpollWatches, "epoll_ctl: ENOSPC");
      return -ENOSPC;
    }
  }
  struct SettleWatches {
    OpenFile& ep;
    ~SettleWatches() { ep.resource_charge.set_unchecked(ep.epoll_interest.size()); }
  } settle{*ep};

  // While the server layer hides listening sockets, a listener's registration lives only in the
  // interest list: the host epoll must not see it (the server layer registers it again later).
  if (target->listening && listener_hidden(p)) {
    switch (op) {
      case EPOLL_CTL_ADD:
        if (it != list.end()) return -EEXIST;
        list.push_back(entry);
        return 0;
      case EPOLL_CTL_MOD:
        if (it == list.end()) return -ENOENT;
        if (it->events & EPOLLEXCLUSIVE) return -EINVAL;
        *it = entry;
        return 0;
      default:
        if (it == list.end()) return -ENOENT;
        list.erase(it);
        return 0;
    }
  }

  // The host epoll decides what is registered: an entry of ours whose guest fd was closed and
  // reused since is stale (the host dropped the registration with the old host file).
  if (::epoll_ctl(ep->host_fd, op, target->host_fd, has_event ? &ev : nullptr) < 0) {
    const int err = errno;
    if (err == ENOENT && it != list.end()) list.erase(it);
    return -err;
  }
  if (op == EPOLL_CTL_DEL) {
    if (it != list.end()) list.erase(it);
  } else if (it != list.end()) {
    *it = entry;
  } else {
    list.push_back(entry);
  }
  return 0;
}

KVMS_SYSCALL(epoll_wait) { return epoll_wait_common(p, a, kept_across_restart(p, Deadline::from_ms(int(a.a[3])))); }

KVMS_SYSCALL(epoll_pwait) {
  if (int64_t rc = set_wait_sigmask(p, a.a[4], a.a[5])) return rc;
  return epoll_wait_common(p, a, kept_across_restart(p, Deadline::from_ms(int(a.a[3]))));
}

KVMS_SYSCALL(epoll_pwait2) {
  Deadline deadline = Deadline::infinite();
  if (int64_t rc = read_timeout(p, a.a[3], deadline)) return rc;
  if (int64_t rc = set_wait_sigmask(p, a.a[4], a.a[5])) return rc;
  return epoll_wait_common(p, a, kept_across_restart(p, deadline));
}

// ---- Syscalls: poll and select -----------------------------------------------------------------

KVMS_SYSCALL(poll) {
  bool taken_over = false;
  return poll_common(p, a.a[0], a.a[1], kept_across_restart(p, Deadline::from_ms(int(a.a[2]))), taken_over);
}

KVMS_SYSCALL(ppoll) {
  Deadline deadline = Deadline::infinite();
  if (int64_t rc = read_timeout(p, a.a[2], deadline)) return rc;
  if (int64_t rc = set_wait_sigmask(p, a.a[3], a.a[4])) return rc;
  deadline = kept_across_restart(p, deadline);
  bool taken_over = false;
  const int64_t rc = poll_common(p, a.a[0], a.a[1], deadline, taken_over);
  if (!taken_over) write_back_timespec(p, a.a[2], deadline);
  return rc;
}

KVMS_SYSCALL(select) {
  Deadline deadline = Deadline::infinite();
  if (a.a[4]) {
    GuestTimeval tv{};
    if (!p.mm().read(a.a[4], tv)) return -EFAULT;
    // Linux folds whole seconds of tv_usec into tv_sec; what is negative after that is invalid.
    int64_t sec = 0;
    if (__builtin_add_overflow(tv.sec, tv.usec / 1000000, &sec)) sec = INT64_MAX;
    const int64_t nsec = (tv.usec % 1000000) * 1000;
    if (sec < 0 || nsec < 0) return -EINVAL;
    deadline = Deadline::after(sec, nsec);
  }
  deadline = kept_across_restart(p, deadline);
  const uint64_t sets[3] = {a.a[1], a.a[2], a.a[3]};
  bool taken_over = false;
  const int64_t rc = select_common(p, a.a[0], sets, deadline, taken_over);
  if (!taken_over) write_back_timeval(p, a.a[4], deadline);
  return rc;
}

KVMS_SYSCALL(pselect6) {
  // The sixth argument points to {const sigset_t* ss; size_t ss_len;}.
  struct {
    uint64_t ss, ss_len;
  } sig{};
  if (a.a[5] && !p.mm().read(a.a[5], sig)) return -EFAULT;
  Deadline deadline = Deadline::infinite();
  if (int64_t rc = read_timeout(p, a.a[4], deadline)) return rc;
  if (int64_t rc = set_wait_sigmask(p, sig.ss, sig.ss_len)) return rc;
  deadline = kept_across_restart(p, deadline);
  const uint64_t sets[3] = {a.a[1], a.a[2], a.a[3]};
  bool taken_over = false;
  const int64_t rc = select_common(p, a.a[0], sets, deadline, taken_over);
  if (!taken_over) write_back_timespec(p, a.a[4], deadline);
  return rc;
}

// ---- Syscalls: eventfd and timerfd -------------------------------------------------------------

KVMS_SYSCALL(eventfd2) {
  const uint32_t count = uint32_t(a.a[0]);
  const int flags = int(a.a[1]);
  if (flags & ~(EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE)) return -EINVAL;
  const int h = ::eventfd(count, EFD_CLOEXEC | (flags & (EFD_NONBLOCK | EFD_SEMAPHORE)));
  if (h < 0) return -errno;
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::EventFd, "anon_inode:[eventfd]",
                                         O_RDWR | ((flags & EFD_NONBLOCK) ? O_NONBLOCK : 0));
  return p.fds.install(std::move(file), flags & EFD_CLOEXEC);
}

KVMS_SYSCALL(eventfd) {
  SyscallArgs b = a;
  b.a[1] = 0;
  return sys_eventfd2(p, b);
}

KVMS_SYSCALL(timerfd_create) {
  const int clock = int(a.a[0]);
  const int flags = int(a.a[1]);
  if (flags & ~(TFD_CLOEXEC | TFD_NONBLOCK)) return -EINVAL;
  if (clock == CLOCK_REALTIME_ALARM || clock == CLOCK_BOOTTIME_ALARM) return -EPERM;  // CAP_WAKE_ALARM
  if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME) return -EINVAL;
  Charge timer(p.shared_account(), ResourceAccount::kTimers);  // the tree's --max-timers
  if (!timer.grow(1)) {
    p.log_refusal(ResourceAccount::kTimers, "timerfd_create: ENOMEM");
    return -ENOMEM;
  }
  const int h = ::timerfd_create(clock, TFD_CLOEXEC | (flags & TFD_NONBLOCK));
  if (h < 0) return -errno;
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::TimerFd, "anon_inode:[timerfd]",
                                         O_RDWR | ((flags & TFD_NONBLOCK) ? O_NONBLOCK : 0));
  file->resource_charge = std::move(timer);
  return p.fds.install(std::move(file), flags & TFD_CLOEXEC);
}

KVMS_SYSCALL(timerfd_settime) {
  const int fd = int(a.a[0]);
  const int flags = int(a.a[1]);
  itimerspec value{}, old{};
  if (!p.mm().read(a.a[2], value)) return -EFAULT;
  if (flags & ~(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET)) return -EINVAL;
  auto valid = [](const timespec& ts) { return ts.tv_sec >= 0 && ts.tv_nsec >= 0 && ts.tv_nsec < kNsPerSec; };
  if (!valid(value.it_value) || !valid(value.it_interval)) return -EINVAL;
  auto f = p.fds.get(fd);
  if (!f) return -EBADF;
  if (f->kind != OpenFile::Kind::TimerFd) return -EINVAL;
  if ((flags & TFD_TIMER_ABSTIME) && p.clock.ahead_ns) {  // a monotonic end time is the guest clock's
    const auto clock = FdInfo(f->host_fd).field("clockid");
    value.it_value = host_time(p, clock ? std::atoi(clock->c_str()) : CLOCK_MONOTONIC, value.it_value);
  }
  if (::timerfd_settime(f->host_fd, flags, &value, &old) < 0) return -errno;
  if (a.a[3] && !p.mm().write(a.a[3], old)) return -EFAULT;
  return 0;
}

KVMS_SYSCALL(timerfd_gettime) {
  auto f = p.fds.get(int(a.a[0]));
  if (!f) return -EBADF;
  if (f->kind != OpenFile::Kind::TimerFd) return -EINVAL;
  itimerspec cur{};
  if (::timerfd_gettime(f->host_fd, &cur) < 0) return -errno;
  return p.mm().write(a.a[1], cur) ? 0 : -EFAULT;
}

// ---- Copies for workers --------------------------------------------------------------------------

std::shared_ptr<OpenFile> clone_epoll(Process& p, const OpenFile& epoll) {
  const int h = ::epoll_create1(EPOLL_CLOEXEC);
  if (h < 0) return nullptr;
  auto copy = std::make_shared<OpenFile>(h, OpenFile::Kind::Epoll, epoll.path, epoll.status_flags);
  for (const auto& e : epoll.epoll_interest) {
    auto f = p.fds.get(e.guest_fd);
    if (!f || f.get() == &epoll) continue;
    epoll_event ev{};
    ev.events = e.events;
    ev.data.u64 = e.data;
    if (::epoll_ctl(h, EPOLL_CTL_ADD, f->host_fd, &ev) == 0) copy->epoll_interest.push_back(e);
  }
  return copy;
}

namespace {

OpenFile::PausedFile eventfd_state(const OpenFile& eventfd) {
  OpenFile::PausedFile state;
  const FdInfo info(eventfd.host_fd);
  if (auto v = info.field("eventfd-count")) state.eventfd_count = std::strtoull(v->c_str(), nullptr, 16);
  if (auto v = info.field("eventfd-semaphore")) state.eventfd_semaphore = std::atoi(v->c_str()) != 0;
  state.nonblocking = host_nonblocking(eventfd);
  return state;
}

}  // namespace

void record_paused_eventfd(OpenFile& eventfd) { eventfd.paused_file = eventfd_state(eventfd); }

std::shared_ptr<OpenFile> clone_eventfd(const OpenFile& eventfd) {
  const OpenFile::PausedFile state = eventfd.paused_file ? *eventfd.paused_file : eventfd_state(eventfd);
  const uint64_t count = state.eventfd_count;
  const bool semaphore = state.eventfd_semaphore, nonblock = state.nonblocking;
  const int h = ::eventfd(0, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0) | (semaphore ? EFD_SEMAPHORE : 0));
  if (h < 0) return nullptr;
  auto copy = std::make_shared<OpenFile>(h, OpenFile::Kind::EventFd, eventfd.path, eventfd.status_flags);
  // A fresh counter is 0, so adding any value below the maximum never blocks.
  if (count && ::write(h, &count, sizeof count) != ssize_t(sizeof count)) return nullptr;
  return copy;
}

namespace {

std::optional<OpenFile::TimerSetting> timerfd_setting(const OpenFile& timerfd) {
  const FdInfo info(timerfd.host_fd);
  OpenFile::TimerSetting t;
  t.clock = CLOCK_MONOTONIC;
  if (auto v = info.field("clockid")) t.clock = std::atoi(v->c_str());
  if (auto v = info.field("ticks")) t.ticks = std::strtoull(v->c_str(), nullptr, 10);
  if (::timerfd_gettime(timerfd.host_fd, &t.value) < 0) return std::nullopt;
  return t;
}

}  // namespace

void record_paused_timerfd(OpenFile& timerfd) {
  timerfd.paused_timer = timerfd_setting(timerfd);
  timerfd.paused_file = OpenFile::PausedFile{};
  timerfd.paused_file->nonblocking = host_nonblocking(timerfd);
}

std::shared_ptr<OpenFile> clone_timerfd(const OpenFile& timerfd) {
  const std::optional<OpenFile::TimerSetting> setting = timerfd.paused_timer ? timerfd.paused_timer : timerfd_setting(timerfd);
  if (!setting) return nullptr;
  const int clock = setting->clock;
  const uint64_t ticks = setting->ticks;
  const itimerspec cur = setting->value;
  const bool nonblock = timerfd.paused_file ? timerfd.paused_file->nonblocking : host_nonblocking(timerfd);
  const int h = ::timerfd_create(clock, TFD_CLOEXEC | (nonblock ? TFD_NONBLOCK : 0));
  if (h < 0) return nullptr;
  auto copy = std::make_shared<OpenFile>(h, OpenFile::Kind::TimerFd, timerfd.path, timerfd.status_flags);
  const bool armed = cur.it_value.tv_sec || cur.it_value.tv_nsec;
  if (armed && ::timerfd_settime(h, 0, &cur, nullptr) < 0) return nullptr;
  if (ticks) {
#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif
    // Needs CONFIG_CHECKPOINT_RESTORE; without it, expire at once (one unread expiration).
    if (::ioctl(h, TFD_IOC_SET_TICKS, &ticks) < 0) {
      itimerspec now = cur;
      now.it_value = {0, 1};
      ::timerfd_settime(h, 0, &now, nullptr);
    }
  }
  return copy;
}

void epoll_forget_fd(Process& p, int guest_fd) {
  auto f = p.fds.get(guest_fd);
  if (!f) return;
  const auto open = p.fds.fds();
  for (int other : open)
    if (other != guest_fd && p.fds.get(other) == f) return;  // the file stays open
  for (int efd : open) {
    auto ep = p.fds.get(efd);
    if (!ep || ep->kind != OpenFile::Kind::Epoll) continue;
    auto& list = ep->epoll_interest;
    auto it = std::find_if(list.begin(), list.end(), [guest_fd](const OpenFile::EpollInterest& e) { return e.guest_fd == guest_fd; });
    if (it == list.end()) continue;
    list.erase(it);
    ep->resource_charge.set_unchecked(list.size());
    ::epoll_ctl(ep->host_fd, EPOLL_CTL_DEL, f->host_fd, nullptr);
  }
}

}  // namespace kvms::linux

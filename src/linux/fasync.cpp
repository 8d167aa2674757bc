// Signal-driven I/O (fasync.hpp): the owner and signal of a file, and the watcher that sends them.
#include "linux/fasync.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "linux/process_table.hpp"
#include "linux/signal.hpp"

namespace kvms::linux {

// What the watcher and the watches of its files share: the epoll it waits on, and one inner,
// edge-triggered epoll per watched file (so that registering reports nothing the file already had:
// Linux signals new readiness only). A watch (OpenFile::async_watch) that goes (O_ASYNC cleared,
// the file's last fd closed) takes its file out, even after the watcher stopped.
struct AsyncRegistry {
  struct Entry {
    std::weak_ptr<OpenFile> file;
    int inner = -1;
  };
  std::mutex mutex;
  int epoll = -1;
  int wake = -1;  // an eventfd (data 0 in `epoll`): stop
  std::map<uint64_t, Entry> entries;  // by the id that is their data in `epoll`
  uint64_t next_id = 1;
  std::atomic<bool> stopped{false};
  AsyncRegistry() : epoll(::epoll_create1(EPOLL_CLOEXEC)), wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~AsyncRegistry() {
    for (auto& [id, e] : entries) ::close(e.inner);
    if (epoll >= 0) ::close(epoll);
    if (wake >= 0) ::close(wake);
  }
};

namespace {

struct Watch {
  std::shared_ptr<AsyncRegistry> registry;
  uint64_t id = 0;
  ~Watch() {
    std::lock_guard<std::mutex> lk(registry->mutex);
    auto it = registry->entries.find(id);
    if (it == registry->entries.end()) return;
    ::close(it->second.inner);  // (which takes it out of the outer epoll)
    registry->entries.erase(it);
  }
};

// Linux's band_table: si_band for each si_code POLL_*.
constexpr long kBandIn = EPOLLIN | EPOLLRDNORM, kBandOut = EPOLLOUT | EPOLLWRNORM | EPOLLWRBAND;

// Which kinds of file Linux has an fasync for: pipes (FIFOs too), sockets and terminals.
bool signals_readiness(const OpenFile& f) {
  return f.kind == OpenFile::Kind::Pipe || f.kind == OpenFile::Kind::Socket || f.kind == OpenFile::Kind::Tty;
}

// Whether a guest id names something a signal can reach now (Linux's find_vpid): this process or
// one of its threads, another running guest process, or this process's group.
bool id_exists(Process& p, int id) {
  if (p.is_self(id) || p.threads.count(id)) return true;
  if (!p.table) return false;
  return p.table->pgid_of(id) >= 0 || p.table->pgid_of(p.pid) == id;
}

}  // namespace

class AsyncWatcher {
 public:
  explicit AsyncWatcher(Process& owner) : owner_(owner), registry_(std::make_shared<AsyncRegistry>()) {
    if (registry_->epoll < 0 || registry_->wake < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (::epoll_ctl(registry_->epoll, EPOLL_CTL_ADD, registry_->wake, &ev) != 0) return;
    thread_ = std::thread([this] { run(); });
  }
  ~AsyncWatcher() { stop(); }
  AsyncWatcher(const AsyncWatcher&) = delete;
  AsyncWatcher& operator=(const AsyncWatcher&) = delete;

  void stop() {
    registry_->stopped = true;
    const uint64_t one = 1;
    (void)!::write(registry_->wake, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
  }
  bool running() const { return thread_.joinable() && !registry_->stopped; }

  // Watches f's host fd for new readiness of the directions it is open for; null when the host
  // cannot watch it (then nothing is signalled, as for a file without fasync on Linux).
  std::shared_ptr<void> watch(const std::shared_ptr<OpenFile>& f) {
    if (!running()) return nullptr;
    const int inner = ::epoll_create1(EPOLL_CLOEXEC);
    if (inner < 0) return nullptr;
    const int mode = f->status_flags & O_ACCMODE;
    epoll_event ev{};
    ev.events = EPOLLET | (mode != O_WRONLY ? EPOLLIN | EPOLLPRI : 0u) | (mode != O_RDONLY ? EPOLLOUT : 0u);
    epoll_event drained[4];
    std::lock_guard<std::mutex> lk(registry_->mutex);
    const uint64_t id = registry_->next_id++;
    if (::epoll_ctl(inner, EPOLL_CTL_ADD, f->host_fd, &ev) != 0 ||
        ::epoll_wait(inner, drained, 4, 0) < 0) {  // what it has already is not news
      ::close(inner);
      return nullptr;
    }
    epoll_event outer{};
    outer.events = EPOLLIN;
    outer.data.u64 = id;
    if (::epoll_ctl(registry_->epoll, EPOLL_CTL_ADD, inner, &outer) != 0) {
      ::close(inner);
      return nullptr;
    }
    registry_->entries[id] = {f, inner};
    auto w = std::make_shared<Watch>();
    w->registry = registry_;
    w->id = id;
    return w;
  }

 private:
  struct Ready {
    std::weak_ptr<OpenFile> file;
    uint32_t events;
  };

  void run() {
    epoll_event evs[16];
    while (!registry_->stopped) {
      const int n = ::epoll_wait(registry_->epoll, evs, 16, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      std::vector<Ready> ready;
      {
        std::lock_guard<std::mutex> lk(registry_->mutex);
        for (int i = 0; i < n; ++i) {
          const uint64_t id = evs[i].data.u64;  // (epoll_event is packed: no reference to its field)
          auto it = registry_->entries.find(id);
          if (it == registry_->entries.end()) continue;  // the wake-up, or a watch that went
          epoll_event inner[4];
          const int got = ::epoll_wait(it->second.inner, inner, 4, 0);
          uint32_t events = 0;
          for (int j = 0; j < got; ++j) events |= inner[j].events;
          if (events) ready.push_back({it->second.file, events});
        }
      }
      if (!ready.empty()) deliver(ready);
    }
  }

  // Posts the signals under the owner's process lock, only tried (as the timers do, signal.cpp):
  // a handler holding it may be stopping this thread.
  void deliver(const std::vector<Ready>& ready) {
    std::vector<std::shared_ptr<OpenFile>> held;  // released after the lock: a last reference's
    while (!registry_->stopped) {                 // destructor takes the registry's mutex
      if (!owner_.lock.mutex.try_lock()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      for (const Ready& r : ready)
        if (auto f = r.file.lock()) {
          signal_owner(*f, r.events);
          held.push_back(std::move(f));
        }
      owner_.lock.mutex.unlock();
      break;
    }
  }

  // Linux's send_sigio, once per kind of readiness the wake-up reported.
  void signal_owner(OpenFile& f, uint32_t events) {
    OpenFile::AsyncOwner owner;
    {
      std::lock_guard<std::mutex> lk(f.async_mutex);
      owner = f.async;
    }
    if (owner.id == 0) return;
    std::vector<std::pair<int, long>> reasons;  // si_code, si_band
    if (events & EPOLLIN) reasons.push_back({POLL_IN, kBandIn});
    if (events & EPOLLOUT) reasons.push_back({POLL_OUT, kBandOut});
    if (events & EPOLLPRI) reasons.push_back({POLL_PRI, EPOLLPRI | EPOLLRDBAND});
    if (reasons.empty() && (events & EPOLLERR)) reasons.push_back({POLL_ERR, EPOLLERR});
    if (reasons.empty() && (events & EPOLLHUP)) reasons.push_back({POLL_HUP, EPOLLHUP | EPOLLERR});
    for (const auto& [code, band] : reasons) {
      siginfo_t info{};
      if (owner.sig == 0) {  // plain SIGIO: nothing says which file (SEND_SIG_PRIV)
        info.si_signo = SIGIO;
        info.si_code = SI_KERNEL;
      } else {
        info.si_signo = owner.sig;
        info.si_code = code;
        info.si_band = band;
        info.si_fd = owner.fd;
      }
      send(owner, info);
    }
  }

  void send(const OpenFile::AsyncOwner& owner, const siginfo_t& info) {
    Process& p = owner_;
    switch (owner.type) {
      case F_OWNER_TID:  // that thread of this process (another process's threads are not known here)
        if (p.threads.count(owner.id)) post_signal_locked(p, info, owner.id);
        return;
      case F_OWNER_PID:
        if (p.is_self(owner.id)) {
          post_signal_locked(p, info, 0);
        } else if (p.table) {
          p.table->kill(owner.id, info);  // another guest process (-ESRCH once it has ended)
        }
        return;
      case F_OWNER_PGRP: {
        if (!p.table) {
          if (p.is_self(owner.id)) post_signal_locked(p, info, 0);
          return;
        }
        bool self = false;
        p.table->kill_group(owner.id, info, p.pid, self);
        if (self) post_signal_locked(p, info, 0);
        return;
      }
    }
  }

  Process& owner_;
  std::shared_ptr<AsyncRegistry> registry_;
  std::thread thread_;
};

AsyncIoSlot& AsyncIoSlot::operator=(const AsyncIoSlot&) {
  if (watcher) watcher->stop();
  watcher.reset();
  return *this;
}

AsyncIoSlot::~AsyncIoSlot() {
  if (watcher) watcher->stop();
}

void set_async(Process& p, const std::shared_ptr<OpenFile>& f, int fd, bool on) {
  std::shared_ptr<void> old;  // dropped without async_mutex held
  std::lock_guard<std::mutex> lk(f->async_mutex);
  old = std::move(f->async_watch);
  if (!on) return;
  f->async.fd = fd;
  if (!signals_readiness(*f)) return;
  if (!p.async_io.watcher) p.async_io.watcher = std::make_shared<AsyncWatcher>(p);
  f->async_watch = p.async_io.watcher->watch(f);
}

int64_t fcntl_owner(Process& p, OpenFile& f, int cmd, uint64_t arg) {
  switch (cmd) {
    case F_GETOWN: {  // a group's id comes back negative
      std::lock_guard<std::mutex> lk(f.async_mutex);
      return f.async.type == F_OWNER_PGRP ? -int64_t(f.async.id) : f.async.id;
    }
    case F_SETOWN: {
      int64_t who = int32_t(arg);  // Linux takes the int
      int type = F_OWNER_PID;
      if (who < 0) {
        if (who == INT_MIN) return -EINVAL;  // -who would overflow
        type = F_OWNER_PGRP;
        who = -who;
      }
      if (who && !id_exists(p, int(who))) return -ESRCH;
      std::lock_guard<std::mutex> lk(f.async_mutex);
      f.async.type = type;
      f.async.id = int(who);
      return 0;
    }
    case F_GETOWN_EX: {
      f_owner_ex out{};
      {
        std::lock_guard<std::mutex> lk(f.async_mutex);
        out.type = static_cast<__pid_type>(f.async.type);
        out.pid = f.async.id;
      }
      return p.mm().write(arg, out) ? 0 : -EFAULT;
    }
    case F_SETOWN_EX: {
      f_owner_ex in{};
      if (!p.mm().read(arg, in)) return -EFAULT;
      const int type = int(in.type);
      if (type != F_OWNER_TID && type != F_OWNER_PID && type != F_OWNER_PGRP) return -EINVAL;
      if (in.pid && !id_exists(p, in.pid)) return -ESRCH;  // (a negative id never exists)
      std::lock_guard<std::mutex> lk(f.async_mutex);
      f.async.type = type;
      f.async.id = in.pid;
      return 0;
    }
    case F_GETSIG: {
      std::lock_guard<std::mutex> lk(f.async_mutex);
      return f.async.sig;
    }
    case F_SETSIG: {
      if (arg > 64) return -EINVAL;  // valid_signal: 0 (plain SIGIO) to _NSIG
      std::lock_guard<std::mutex> lk(f.async_mutex);
      f.async.sig = int(arg);
      return 0;
    }
  }
  return -EINVAL;
}

}  // namespace kvms::linux

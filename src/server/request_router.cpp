#include "server/request_router.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kvms::server {

void RequestRouter::add(Worker* w) {
  std::lock_guard<std::mutex> lk(mutex_);
  if (workers_.size() <= size_t(w->id())) {
    workers_.resize(w->id() + 1);
    is_idle_.resize(w->id() + 1);
  }
  workers_[w->id()] = w;
}

void RequestRouter::ready(int worker) {
  std::lock_guard<std::mutex> lk(mutex_);
  if (is_idle_.at(worker)) return;
  is_idle_[worker] = true;
  idle_.push_back(worker);
  changed_.notify_one();
}

void RequestRouter::stop() {
  std::lock_guard<std::mutex> lk(mutex_);
  stopping_ = true;
  changed_.notify_all();
}

std::optional<http::Backend::Lease> RequestRouter::acquire(size_t listener, const sockaddr_storage& client,
                                                           socklen_t client_len) {
  for (;;) {
    Worker* w;
    {
      std::unique_lock<std::mutex> lk(mutex_);
      changed_.wait(lk, [&] { return stopping_ || !idle_.empty(); });
      if (stopping_) return std::nullopt;
      const int id = idle_.front();
      idle_.pop_front();
      is_idle_[id] = false;
      w = workers_.at(id);
    }
    socklen_t len = 0;
    const sockaddr_storage& to = w->private_address(listener, len);
    const int fd = ::socket(to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    w->show_next_peer(listener, client, client_len);
    const uint64_t token = w->request_token();
    if (fd >= 0 && ::connect(fd, reinterpret_cast<const sockaddr*>(&to), len) == 0) return Lease{fd, w->id(), token};
    // The worker's listener refused (it cannot normally): give the worker a fresh start and try
    // the next one; it comes back through ready() after its reset.
    std::fprintf(stderr, "kvmserver: worker %d: cannot reach its listener: %s\n", w->id(), strerror(errno));
    if (fd >= 0) ::close(fd);
    w->abort_request(token);
  }
}

void RequestRouter::release(const Lease& lease, bool abort) {
  if (!abort) return;  // the worker resets itself once the guest is done with the connection
  Worker* w;
  {
    std::lock_guard<std::mutex> lk(mutex_);
    w = workers_.at(lease.worker);
  }
  w->abort_request(lease.token);
}

}  // namespace kvms::server

#pragma once
// --isolate=request: the workers as the front's backend (http/front.hpp). A free worker is leased
// for one request; the front connects to the worker's private copy of the guest's listener, and
// the worker comes back to the pool once it has been reset after that request.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "http/front.hpp"
#include "server/worker.hpp"

namespace kvms::server {

class RequestRouter : public http::Backend {
 public:
  // Called by a worker (from its thread) when it can take the next request.
  void ready(int worker);
  void add(Worker* w);
  // Wakes every acquire() waiting: they get nullopt from now on.
  void stop();

  std::optional<Lease> acquire(size_t listener, const sockaddr_storage& client, socklen_t client_len) override;
  void release(const Lease& lease, bool abort) override;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Worker*> workers_;
  std::deque<int> idle_;
  std::vector<bool> is_idle_;  // a worker is in idle_ at most once
  bool stopping_ = false;
};

}  // namespace kvms::server

#include "linux/process_table.hpp"

#include <chrono>
#include <vector>

#include <cerrno>

namespace kvms::linux {

int IdSource::take() {
  // Past 2^30 the count starts over (a billion requests later, nothing can remember the old ones).
  int id = next_.fetch_add(1);
  if (id >= (1 << 30)) {
    next_ = first_;
    id = next_.fetch_add(1);
  }
  return id;
}

int ProcessTable::next_id() { return ids_ ? ids_->take() : next_pid_++; }

int ProcessTable::allocate_id() {
  std::lock_guard<std::mutex> lk(mutex_);
  return next_id();
}

int ProcessTable::add_child(int ppid, std::function<void(int)> kill) {
  auto s = std::make_shared<KillSwitch>();
  s->kill = std::move(kill);
  std::lock_guard lock(mutex_);
  if (closing_) return -EAGAIN;
  const int pid = next_id();
  entries_[pid] = Entry{ppid, false, 0, false, std::move(s)};
  return pid;
}

void ProcessTable::fire(const std::shared_ptr<KillSwitch>& s, int sig) {
  if (!s) return;
  std::lock_guard lock(s->mutex);
  if (s->kill) s->kill(sig);
}

void ProcessTable::detach(int pid) {
  std::shared_ptr<KillSwitch> s;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(pid);
    if (it == entries_.end()) return;
    s = it->second.kill;
  }
  if (!s) return;
  std::lock_guard lock(s->mutex);
  s->kill = nullptr;
}

void ProcessTable::exited(int pid, int wait_status) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pid);
  if (it == entries_.end()) return;
  it->second.ended = true;
  it->second.status = wait_status;
  it->second.vfork_released = true;
  it->second.kill = nullptr;
  changed_.notify_all();
}

void ProcessTable::release_vfork(int pid) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(pid); it != entries_.end()) it->second.vfork_released = true;
  changed_.notify_all();
}

void ProcessTable::wait_vfork_release(int pid) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] {
    auto it = entries_.find(pid);
    return it == entries_.end() || it->second.vfork_released;
  });
}

std::pair<int, int> ProcessTable::wait(int ppid, int pid, bool nohang, const std::function<bool()>& interrupted) {
  std::unique_lock lock(mutex_);
  for (;;) {
    bool any = false;
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.ppid != ppid || (pid > 0 && it->first != pid)) continue;
      any = true;
      if (it->second.ended) {
        std::pair<int, int> result{it->first, it->second.status};
        entries_.erase(it);
        return result;
      }
    }
    if (!any) return {-ECHILD, 0};
    if (nohang) return {0, 0};
    if (interrupted && interrupted()) return {-EINTR, 0};
    changed_.wait_for(lock, std::chrono::milliseconds(interrupted ? 100 : 1000));
  }
}

int ProcessTable::kill(int pid, int sig) {
  std::shared_ptr<KillSwitch> s;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(pid);
    if (it == entries_.end() || it->second.ended) return -ESRCH;
    s = it->second.kill;
  }
  if (sig) fire(s, sig);
  return 0;
}

bool ProcessTable::kill_all_and_wait(int sig, int timeout_ms) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  {
    std::lock_guard lock(mutex_);
    closing_ = true;  // no new processes from here on (a fork racing us gets EAGAIN)
  }
  for (;;) {
    std::vector<std::shared_ptr<KillSwitch>> running;
    {
      std::lock_guard lock(mutex_);
      for (auto& [pid, e] : entries_)
        if (!e.ended) running.push_back(e.kill);
    }
    if (running.empty()) return true;
    for (auto& s : running) fire(s, sig);  // again each round: a kill can land before the run starts
    std::unique_lock lock(mutex_);
    if (std::chrono::steady_clock::now() >= give_up) return false;
    changed_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

size_t ProcessTable::running() const {
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (auto& [pid, e] : entries_) n += !e.ended;
  return n;
}

int ProcessTable::parent_of(int pid) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pid);
  return it == entries_.end() ? 1 : it->second.ppid;
}

}  // namespace kvms::linux

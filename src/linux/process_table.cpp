#include "linux/process_table.hpp"

#include <chrono>

#include <cerrno>

namespace kvms::linux {

int ProcessTable::allocate_id() {
  std::lock_guard<std::mutex> lk(mutex_);
  return next_pid_++;
}

int ProcessTable::add_child(int ppid, std::function<void(int)> kill) {
  std::lock_guard lock(mutex_);
  const int pid = next_pid_++;
  entries_[pid] = Entry{ppid, false, 0, false, std::move(kill)};
  return pid;
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
  std::function<void(int)> kill;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(pid);
    if (it == entries_.end() || it->second.ended) return -ESRCH;
    kill = it->second.kill;
  }
  if (kill && sig) kill(sig);
  return 0;
}

int ProcessTable::parent_of(int pid) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pid);
  return it == entries_.end() ? 1 : it->second.ppid;
}

}  // namespace kvms::linux

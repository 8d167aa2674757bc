#include "linux/process_table.hpp"

#include <algorithm>
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

int ProcessTable::add_child(int ppid, Deliver kill, int exit_signal) {
  auto s = std::make_shared<KillSwitch>();
  s->kill = std::move(kill);
  std::lock_guard lock(mutex_);
  if (closing_) return -EAGAIN;
  const int pid = next_id();
  entries_[pid] = Entry{ppid, false, 0, 0, false, std::move(s), exit_signal};
  groups_[pid] = group_locked(ppid);
  return pid;
}

std::shared_ptr<ProcessView> ProcessTable::view(int pid) const {
  std::lock_guard lock(mutex_);
  if (pid == root_pid_) return root_view_;
  auto it = entries_.find(pid);
  return it == entries_.end() || it->second.ended ? nullptr : it->second.view;
}

std::vector<int> ProcessTable::pids() const {
  std::lock_guard lock(mutex_);
  std::vector<int> out{root_pid_};
  for (const auto& [pid, e] : entries_)
    if (!e.ended) out.push_back(pid);
  std::sort(out.begin(), out.end());
  return out;
}

void ProcessTable::attach_root(Deliver deliver) {
  std::lock_guard lock(root_switch_->mutex);
  root_switch_->kill = std::move(deliver);
}

void ProcessTable::detach_root() {
  std::lock_guard lock(root_switch_->mutex);
  root_switch_->kill = nullptr;
}

std::shared_ptr<ProcessTable::KillSwitch> ProcessTable::switch_locked(int pid) const {
  if (pid == root_pid_) return root_switch_;
  auto it = entries_.find(pid);
  return it == entries_.end() || it->second.ended ? nullptr : it->second.kill;
}

ProcessTable::Group ProcessTable::group_locked(int pid) const {
  auto it = groups_.find(pid);
  return it != groups_.end() ? it->second : Group{pid, pid};
}

bool ProcessTable::alive_locked(int pid) const {
  auto it = entries_.find(pid);
  return it != entries_.end() ? !it->second.ended : pid == root_pid_;
}

bool ProcessTable::zombie_locked(int pid) const {
  auto it = entries_.find(pid);
  return it != entries_.end() && it->second.ended;
}

int ProcessTable::subreaper_of_locked(int pid) const {
  // Bounded walk: parent links form a tree, but a bad table must not hang the host.
  for (size_t hops = 0; hops <= entries_.size(); ++hops) {
    auto it = entries_.find(pid);
    if (it == entries_.end()) return 0;  // the first process: its parent is outside the guest
    pid = it->second.ppid;
    if (pid == root_pid_) return root_subreaper_ && alive_locked(pid) ? pid : 0;
    auto up = entries_.find(pid);
    if (up != entries_.end() && !up->second.ended && up->second.subreaper) return pid;
  }
  return 0;
}

void ProcessTable::set_child_subreaper(int pid, bool on) {
  std::lock_guard lock(mutex_);
  if (pid == root_pid_) root_subreaper_ = on;
  if (auto it = entries_.find(pid); it != entries_.end()) it->second.subreaper = on;
}

int ProcessTable::pgid_of(int pid) const {
  std::lock_guard lock(mutex_);
  return alive_locked(pid) ? group_locked(pid).pgid : -ESRCH;
}

int ProcessTable::sid_of(int pid) const {
  std::lock_guard lock(mutex_);
  return alive_locked(pid) ? group_locked(pid).sid : -ESRCH;
}

int ProcessTable::set_pgid(int caller, int pid, int pgid) {
  if (pgid < 0) return -EINVAL;
  std::lock_guard lock(mutex_);
  if (pid == 0) pid = caller;
  if (pgid == 0) pgid = pid;
  if (pid != caller) {  // only the caller or one of its children
    auto it = entries_.find(pid);
    if (it == entries_.end() || it->second.ppid != caller || it->second.ended) return -ESRCH;
  }
  const Group self = group_locked(caller), target = group_locked(pid);
  if (target.sid == pid) return -EPERM;  // a session leader stays where it is
  if (target.sid != self.sid) return -EPERM;
  if (pgid != pid) {  // joining a group: a live member of it must be in the same session
    bool exists = alive_locked(root_pid_) && group_locked(root_pid_).pgid == pgid && group_locked(root_pid_).sid == self.sid;
    for (const auto& [other, e] : entries_)
      if (!e.ended && group_locked(other).pgid == pgid && group_locked(other).sid == self.sid) exists = true;
    if (!exists) return -EPERM;
  }
  groups_[pid] = Group{pgid, target.sid};
  return 0;
}

int ProcessTable::set_sid(int caller) {
  std::lock_guard lock(mutex_);
  if (group_locked(root_pid_).pgid == caller) return -EPERM;  // a group of this id exists: its leader
  for (const auto& [pid, e] : entries_)
    if (!e.ended && group_locked(pid).pgid == caller) return -EPERM;
  groups_[caller] = Group{caller, caller};
  return caller;
}

int ProcessTable::kill_group(int pgid, const siginfo_t& info, int caller, bool& caller_in_group) {
  std::vector<std::shared_ptr<KillSwitch>> targets;
  {
    std::lock_guard lock(mutex_);
    caller_in_group = group_locked(caller).pgid == pgid;
    for (const auto& [pid, e] : entries_)
      if (!e.ended && pid != caller && group_locked(pid).pgid == pgid) targets.push_back(e.kill);
    if (root_pid_ != caller && group_locked(root_pid_).pgid == pgid) targets.push_back(root_switch_);
  }
  if (targets.empty() && !caller_in_group) return -ESRCH;
  if (info.si_signo)
    for (const auto& s : targets) fire(s, info);
  return 0;
}

void ProcessTable::fire(const std::shared_ptr<KillSwitch>& s, const siginfo_t& info) {
  if (!s) return;
  std::lock_guard lock(s->mutex);
  if (s->kill) s->kill(info);
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

void ProcessTable::exited(int pid, int wait_status, uint32_t uid, uint64_t cpu_ns) {
  std::shared_ptr<KillSwitch> parent;
  int exit_signal = 0;
  std::vector<std::pair<std::shared_ptr<KillSwitch>, int>> orphans;  // children asking for a signal
  std::vector<std::pair<std::shared_ptr<KillSwitch>, siginfo_t>> reaped_zombies;  // to a new parent
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(pid);
    if (it == entries_.end()) return;
    for (const auto& [child, e] : entries_)
      if (e.ppid == pid && !e.ended && e.parent_death_signal) orphans.emplace_back(e.kill, e.parent_death_signal);
    // Its children go to the nearest subreaper above it, if any (Linux's find_new_reaper); an
    // ended one is announced to it with its exit signal, as Linux's reparent_leader does.
    if (const int reaper = subreaper_of_locked(pid)) {
      for (auto& [child, e] : entries_) {
        if (e.ppid != pid) continue;
        e.ppid = reaper;
        if (e.ended && e.exit_signal > 0 && e.exit_signal <= 64) {
          siginfo_t info{};
          info.si_signo = e.exit_signal;
          info.si_pid = child;
          const bool exited = (e.status & 0x7f) == 0;
          info.si_code = exited ? CLD_EXITED : (e.status & 0x80) ? CLD_DUMPED : CLD_KILLED;
          info.si_status = exited ? (e.status >> 8) & 0xff : e.status & 0x7f;
          reaped_zombies.emplace_back(switch_locked(reaper), info);
        }
      }
    }
    it->second.ended = true;
    it->second.status = wait_status;
    it->second.cpu_ns = cpu_ns;
    it->second.vfork_released = true;
    it->second.kill = nullptr;
    const int ppid = it->second.ppid;
    parent = switch_locked(ppid);
    exit_signal = it->second.exit_signal;
    // Its ended children nobody took over are nobody's to wait for now (init reaps them on Linux).
    for (auto c = entries_.begin(); c != entries_.end();)
      c = c->second.ppid == pid && c->second.ended ? entries_.erase(c) : std::next(c);
    children_cpu_ns_.erase(pid);
    // No zombie when the parent reaps its children itself, or has ended (Linux: init reaps it).
    const bool parent_is_root = ppid == root_pid_;
    const auto p = entries_.find(ppid);
    const std::shared_ptr<ProcessView> parent_view = parent_is_root ? root_view_ : p != entries_.end() ? p->second.view : nullptr;
    const bool parent_running = parent_is_root || (p != entries_.end() && !p->second.ended);
    if (!parent_running || (parent_view && parent_view->reaps_children)) entries_.erase(it);
    changed_.notify_all();
  }
  for (const auto& [child, sig] : orphans) {
    siginfo_t death{};
    death.si_signo = sig;
    death.si_code = SI_USER;
    death.si_pid = pid;
    death.si_uid = uid;
    fire(child, death);
  }
  for (const auto& [reaper, info] : reaped_zombies) fire(reaper, info);
  if (exit_signal <= 0 || exit_signal > 64) return;
  siginfo_t info{};
  info.si_signo = exit_signal;
  info.si_pid = pid;
  info.si_uid = uid;
  const bool exited = (wait_status & 0x7f) == 0;
  info.si_code = exited ? CLD_EXITED : (wait_status & 0x80) ? CLD_DUMPED : CLD_KILLED;
  info.si_status = exited ? (wait_status >> 8) & 0xff : wait_status & 0x7f;
  fire(parent, info);
}

void ProcessTable::stopped(int pid, int sig, uint32_t uid) {
  std::shared_ptr<KillSwitch> parent;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(pid);
    if (it == entries_.end() || it->second.ended) return;
    it->second.stop_report = sig;
    it->second.continued_report = false;
    parent = switch_locked(it->second.ppid);
    changed_.notify_all();
  }
  siginfo_t info{};
  info.si_signo = SIGCHLD;  // whatever the exit signal: Linux's do_notify_parent_cldstop
  info.si_code = CLD_STOPPED;
  info.si_pid = pid;
  info.si_uid = uid;
  info.si_status = sig;
  fire(parent, info);
}

void ProcessTable::continued(int pid, uint32_t uid) {
  std::shared_ptr<KillSwitch> parent;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(pid);
    if (it == entries_.end() || it->second.ended) return;
    it->second.stop_report = 0;
    it->second.continued_report = true;
    parent = switch_locked(it->second.ppid);
    changed_.notify_all();
  }
  siginfo_t info{};
  info.si_signo = SIGCHLD;
  info.si_code = CLD_CONTINUED;
  info.si_pid = pid;
  info.si_uid = uid;
  info.si_status = SIGCONT;
  fire(parent, info);
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

uint64_t ProcessTable::children_cpu_ns(int pid) const {
  std::lock_guard lock(mutex_);
  const auto it = children_cpu_ns_.find(pid);
  return it == children_cpu_ns_.end() ? 0 : it->second;
}

std::pair<int, int> ProcessTable::wait(int ppid, int pid, bool nohang, const std::function<bool()>& interrupted,
                                       int pgid, bool reap, int which, uint64_t* cpu_ns) {
  if (cpu_ns) *cpu_ns = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    bool any = false;
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.ppid != ppid || (pid > 0 && it->first != pid)) continue;
      if (pgid > 0 && group_locked(it->first).pgid != pgid) continue;
      if (it->second.ended && !(which & WEXITED)) continue;
      any = true;
      if (it->second.ended) {
        std::pair<int, int> result{it->first, it->second.status};
        if (cpu_ns) *cpu_ns = it->second.cpu_ns;
        if (reap) {
          children_cpu_ns_[ppid] += it->second.cpu_ns;
          entries_.erase(it);
        }
        return result;
      }
      if ((which & WSTOPPED) && it->second.stop_report) {
        std::pair<int, int> result{it->first, stopped_wait_status(it->second.stop_report)};
        if (reap) it->second.stop_report = 0;
        return result;
      }
      if ((which & WCONTINUED) && it->second.continued_report) {
        if (reap) it->second.continued_report = false;
        return {it->first, continued_wait_status()};
      }
    }
    if (!any) return {-ECHILD, 0};
    if (nohang) return {0, 0};
    if (interrupted && interrupted()) return {-EINTR, 0};
    changed_.wait_for(lock, std::chrono::milliseconds(interrupted ? 100 : 1000));
  }
}

int ProcessTable::kill(int pid, const siginfo_t& info) {
  std::shared_ptr<KillSwitch> s;
  {
    std::lock_guard lock(mutex_);
    if (zombie_locked(pid)) return 0;
    if (!alive_locked(pid)) return -ESRCH;
    s = switch_locked(pid);
  }
  if (info.si_signo) fire(s, info);
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
    siginfo_t info{};
    info.si_signo = sig;
    info.si_code = SI_KERNEL;
    for (auto& s : running) fire(s, info);  // again each round: a kill can land before the run starts
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

void ProcessTable::set_parent_death_signal(int pid, int sig) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(pid); it != entries_.end()) it->second.parent_death_signal = sig;
}

int ProcessTable::parent_of(int pid) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pid);
  return it == entries_.end() ? 1 : it->second.ppid;
}

}  // namespace kvms::linux

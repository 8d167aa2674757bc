#pragma once
// The guest's processes: pids, parents, exit statuses for wait, and the vfork hand-back. One table is
// shared by every process of one kvmserver run; each guest process runs on its own host thread.
#include <atomic>
#include <signal.h>
#include <sys/wait.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kvms::linux {

// Where pids and tids come from: one counter for a whole server, so that no two requests ever see
// the same pid (a library that notices a new pid after a fork, like OpenSSL's generator, then
// reseeds) and no id is reused while the server runs.
class IdSource {
 public:
  explicit IdSource(int first) : next_(first) {}
  int take();

 private:
  std::atomic<int> next_;
  int first_ = next_;
};

// What other processes may see of one through /proc/<pid>/stat: whether its main thread is
// sleeping in a blocking call (state S) or running (R), and its name. Written by the process.
struct ProcessView {
  std::atomic<char> state{'R'};
  // SIGCHLD ignored (SIG_IGN) or SA_NOCLDWAIT: its children that end are reaped at once, never
  // zombies (publish_child_disposition keeps this in step with the process's sigaction).
  std::atomic<bool> reaps_children{false};
  std::mutex mutex;
  std::string comm = "main";  // under mutex
};

class ProcessTable {
 public:
  // Ids after first_pid (a `kvmserver run`), or from `ids` (a server's requests).
  explicit ProcessTable(int first_pid, std::shared_ptr<IdSource> ids = nullptr)
      : next_pid_(first_pid + 1), root_pid_(first_pid), ids_(std::move(ids)) {}

  // How a signal from another process reaches one (queued for it, its vCPUs kicked; SIGKILL ends it).
  using Deliver = std::function<void(const siginfo_t&)>;
  // A new child of ppid, running, reached through `deliver`. -EAGAIN once kill_all_and_wait() has begun.
  // exit_signal: what its parent gets when it ends (SIGCHLD, or 0 for nothing: clone's choice).
  int add_child(int ppid, Deliver deliver, int exit_signal = SIGCHLD);
  // The view of a running process (the first one's too), or null.
  std::shared_ptr<ProcessView> view(int pid) const;
  // Running processes, ascending (the first one included).
  std::vector<int> pids() const;
  // The first process (not a child of any here), while it runs: attached, kill() and SIGCHLD reach it.
  void attach_root(Deliver deliver);
  void detach_root();
  int root_pid() const { return root_pid_; }
  // The child's process is about to be destroyed: from now on kill() no longer reaches it (waits
  // for a kill() that is reaching it right now). Called before exited().
  void detach(int pid);
  // A new thread id (threads share the pid space with processes, as on Linux).
  int allocate_id();
  // The child ended; status is encoded as wait(2) reports it. Also releases a vfork parent and
  // sends its parent SIGCHLD (uid: the child's, for the siginfo).
  // cpu_ns: the CPU time it used, its waited-for children's included (wait4's rusage, and its
  // parent's RUSAGE_CHILDREN once waited for). A child whose parent reaps children itself (see
  // ProcessView::reaps_children) or whose parent has ended is removed at once: no zombie stays.
  void exited(int pid, int wait_status, uint32_t uid = 0, uint64_t cpu_ns = 0);
  // Job control: the process stopped (by sig) or was continued. Its parent can wait for that
  // (WSTOPPED/WUNTRACED, WCONTINUED) and gets SIGCHLD with CLD_STOPPED/CLD_CONTINUED.
  void stopped(int pid, int sig, uint32_t uid = 0);
  void continued(int pid, uint32_t uid = 0);
  // After vfork, the parent may run again once the child has exec'd or exited.
  void release_vfork(int pid);
  void wait_vfork_release(int pid);

  // wait4: a child of ppid that has ended (pid -1: any) as {pid, wait status}; {0, 0} with nohang
  // and none ended yet; {-ECHILD, 0} when there is no such child.
  // interrupted: polled while waiting; true ends the wait with {-EINTR, 0}.
  // pgid > 0: only children in that process group (pid -1). reap false (WNOWAIT): the child stays
  // to be waited for again. which: the waitid(2) states asked for; without WEXITED an ended child
  // is neither reported nor counted (only such children: -ECHILD, as Linux's wait_task_zombie).
  // cpu_ns (optional): an ended child's CPU time (0 for a stop or continue).
  std::pair<int, int> wait(int ppid, int pid, bool nohang, const std::function<bool()>& interrupted = nullptr,
                           int pgid = 0, bool reap = true, int which = WEXITED, uint64_t* cpu_ns = nullptr);
  // The CPU time of pid's children that ended and were waited for (RUSAGE_CHILDREN).
  uint64_t children_cpu_ns(int pid) const;
  // kill(2) of one of the guest's other processes (info.si_signo 0: only whether it exists):
  // -ESRCH if there is none. A zombie (ended, not yet waited for) exists: the call succeeds and
  // the signal goes nowhere, as on Linux.
  int kill(int pid, const siginfo_t& info);
  int parent_of(int pid);
  // PR_SET_PDEATHSIG: the signal pid gets when its parent ends (0: none). The first process's
  // parent is outside the guest and never ends.
  void set_parent_death_signal(int pid, int sig);
  // PR_SET_CHILD_SUBREAPER: when a descendant's parent ends, the descendant's nearest running
  // ancestor marked so becomes its parent (it can wait for it; an ended one is reported with
  // SIGCHLD). Without one, an orphan keeps its old parent id and nobody here can wait for it.
  void set_child_subreaper(int pid, bool on);

  // Process groups and sessions (setpgid, setsid, getpgid, getsid, kill(-pgid)). A process not in
  // the table (the first one) leads its own group and session until it changes them; a child
  // starts in its parent's. Return -errno as the syscalls do.
  int pgid_of(int pid) const;
  int sid_of(int pid) const;
  int set_pgid(int caller, int pid, int pgid);
  int set_sid(int caller);
  // kill(-pgid): signals every other running process of the group (not `caller`, whom the caller
  // signals itself); -ESRCH when the group has no process at all (caller_in_group says whether
  // the caller is one).
  int kill_group(int pgid, const siginfo_t& info, int caller, bool& caller_in_group);
  // Ends every process of the table (a worker's request is over) and waits until all have ended,
  // at most `timeout_ms`; false if some are still running then.
  bool kill_all_and_wait(int sig, int timeout_ms);
  // Processes started and not ended.
  size_t running() const;

 private:
  // How another thread stops a process: disarmed (under its own mutex) before the process goes,
  // so a kill never reaches a destroyed process.
  struct KillSwitch {
    std::mutex mutex;
    Deliver kill;
  };
  struct Entry {
    int ppid = 0;
    bool ended = false;
    int status = 0;
    uint64_t cpu_ns = 0;
    bool vfork_released = false;
    std::shared_ptr<KillSwitch> kill;
    int exit_signal = SIGCHLD;
    int parent_death_signal = 0;
    bool subreaper = false;
    int stop_report = 0;             // a stop not yet waited for: the signal
    bool continued_report = false;   // a continue not yet waited for
    std::shared_ptr<ProcessView> view = std::make_shared<ProcessView>();
  };
  struct Group {
    int pgid = 0, sid = 0;
  };
  Group group_locked(int pid) const;  // the group of a pid, its own when unknown
  bool alive_locked(int pid) const;
  bool zombie_locked(int pid) const;  // ended and not yet waited for
  // The nearest running ancestor of pid (pid excluded) marked subreaper, or 0.
  int subreaper_of_locked(int pid) const;
  static void fire(const std::shared_ptr<KillSwitch>& s, const siginfo_t& info);
  std::shared_ptr<KillSwitch> switch_locked(int pid) const;  // a running process's, or null
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int, Entry> entries_;
  std::map<int, Group> groups_;  // pid -> group and session, where set or inherited
  std::map<int, uint64_t> children_cpu_ns_;  // pid -> its waited-for children's CPU time
  int next_pid_;
  int root_pid_;  // the process the table was made for (not in entries_)
  std::shared_ptr<KillSwitch> root_switch_ = std::make_shared<KillSwitch>();
  std::shared_ptr<ProcessView> root_view_ = std::make_shared<ProcessView>();
  std::shared_ptr<IdSource> ids_;
  bool closing_ = false;
  bool root_subreaper_ = false;
  int next_id();  // under mutex_
};

// wait(2) status words.
constexpr int exit_wait_status(int code) { return (code & 0xff) << 8; }
constexpr int signal_wait_status(int sig) { return sig & 0x7f; }
constexpr int stopped_wait_status(int sig) { return ((sig & 0xff) << 8) | 0x7f; }
constexpr int continued_wait_status() { return 0xffff; }

}  // namespace kvms::linux

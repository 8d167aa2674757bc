#include "jail/jail.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace kvms::jail {
namespace {

constexpr int kSetupFailed = 125;
constexpr int kMaxSymlinks = 40;
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
// Where the root is built: a tmpfs mounted over /tmp of the (private) mount namespace holds the new
// root and, after the first pivot_root, the host's tree at /oldroot, from which the binds are taken.
constexpr const char* kBase = "/tmp";
constexpr const char* kNewRoot = "/newroot";
constexpr const char* kOldRoot = "/oldroot";

std::string errno_text(int err) { return strerror(err); }

[[noreturn]] void fail(const std::string& step, int err = errno) { throw JailError(step + ": " + errno_text(err)); }

// ---- Paths on the host -----------------------------------------------------------------------

bool within(std::string_view path, std::string_view dir) {
  if (dir == "/") return true;
  return path.size() >= dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         (path.size() == dir.size() || path[dir.size()] == '/');
}

std::vector<std::string> components(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += "/" + p;
  return s.empty() ? "/" : s;
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

struct Symlink {
  std::string path;    // canonical path of the link itself
  std::string target;  // its text
};

// A host path resolved component by component, like the kernel's walk: the symlinks met on the way
// (so the jail can recreate them) and the canonical path.
struct Resolved {
  std::string canonical;
  bool exists = true;
  std::vector<Symlink> links;
};

Resolved resolve_host(const std::string& path) {
  Resolved r;
  std::vector<std::string> todo = components(path);
  std::reverse(todo.begin(), todo.end());
  std::vector<std::string> cur;
  int links = 0;
  while (!todo.empty()) {
    std::string c = std::move(todo.back());
    todo.pop_back();
    if (c == ".") continue;
    if (c == "..") {
      if (!cur.empty()) cur.pop_back();
      continue;
    }
    cur.push_back(std::move(c));
    const std::string here = join(cur);
    struct stat st{};
    if (lstat(here.c_str(), &st) != 0 || (!todo.empty() && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode))) {
      r.exists = false;
      for (auto it = todo.rbegin(); it != todo.rend(); ++it)
        if (*it != "." && *it != "..") cur.push_back(*it);  // the rest, lexically: nothing there anyway
      break;
    }
    if (!S_ISLNK(st.st_mode)) continue;
    std::string target(4096, '\0');
    const ssize_t n = readlink(here.c_str(), target.data(), target.size());
    if (n <= 0 || ++links > kMaxSymlinks) {
      r.exists = false;
      break;
    }
    target.resize(static_cast<size_t>(n));
    r.links.push_back({here, target});
    cur.pop_back();
    if (target[0] == '/') cur.clear();
    auto parts = components(target);
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo.push_back(*it);
  }
  r.canonical = join(cur);
  return r;
}

// ---- The plan: what the new root holds -----------------------------------------------------

struct Mount {
  enum Kind { BindMount, Tmpfs, Proc } kind;
  std::string path;
  bool writable = false;  // BindMount
  bool operator<(const Mount& o) const { return path != o.path ? path < o.path : kind > o.kind; }
};

struct Plan {
  JailSpec::HostRoot host_root = JailSpec::HostRoot::None;  // the spec's, or a bind of "/"
  std::vector<Mount> mounts;      // parents before children
  std::vector<Symlink> symlinks;
  std::vector<std::string> dirs;  // to exist (empty) where nothing is mounted
};

Plan make_plan(const JailSpec& spec) {
  Plan plan;
  plan.host_root = spec.host_root;
  auto add_links = [&](const Resolved& r) {
    for (const auto& l : r.links)
      if (!within(l.path, "/proc")) plan.symlinks.push_back(l);
  };
  std::vector<Bind> wanted;
  for (const Bind& b : spec.binds) {
    Resolved r = resolve_host(b.path);
    if (within(r.canonical, "/proc") && r.canonical != "/") continue;  // the jail has its own procfs
    add_links(r);
    if (r.exists) {
      wanted.push_back({r.canonical, b.writable});
    } else if (b.writable) {
      // Where the guest may create it (resolve_host stopped at the first missing component).
      const Resolved parent = resolve_host(parent_of(r.canonical));
      if (parent.exists) wanted.push_back({parent.canonical, true});
    }
  }
  for (const Bind& b : wanted)
    if (b.path == "/")
      plan.host_root = b.writable || plan.host_root == JailSpec::HostRoot::Writable ? JailSpec::HostRoot::Writable
                                                                                  : JailSpec::HostRoot::ReadOnly;
  // The jail's own file systems; over the host's tree they hide /dev and /sys.
  std::vector<std::string> own = {"/proc"};
  if (plan.host_root != JailSpec::HostRoot::None) own = {"/proc", "/dev", "/sys"};
  for (const auto& dir : own) plan.mounts.push_back({dir == "/proc" ? Mount::Proc : Mount::Tmpfs, dir});

  std::vector<Bind> binds;
  if (plan.host_root != JailSpec::HostRoot::None) binds.push_back({"/", plan.host_root == JailSpec::HostRoot::Writable});
  // The bind that shows `path`: the deepest one holding it, unless one of the jail's own file
  // systems lies between them.
  auto covering = [&](const std::string& path) -> const Bind* {
    const Bind* best = nullptr;
    for (const Bind& b : binds)
      if (within(path, b.path) && (!best || b.path.size() > best->path.size())) best = &b;
    if (best)
      for (const auto& dir : own)
        if (within(path, dir) && dir.size() > best->path.size()) return nullptr;
    return best;
  };
  // Parents first; a path already shown by a bind at least as permissive needs none of its own.
  std::sort(wanted.begin(), wanted.end(), [](const Bind& a, const Bind& b) {
    return a.path != b.path ? a.path < b.path : a.writable > b.writable;
  });
  for (const Bind& b : wanted) {
    if (b.path == "/") continue;
    const Bind* c = covering(b.path);
    if (c && (c->writable || !b.writable)) continue;
    binds.push_back(b);
    plan.mounts.push_back({Mount::BindMount, b.path, b.writable});
  }
  // kvmserver's temporary directories.
  for (const std::string& dir : spec.scratch_dirs) {
    Resolved r = resolve_host(dir);
    add_links(r);
    const Bind* c = covering(r.canonical);
    if (!c) {
      plan.mounts.push_back({Mount::Tmpfs, r.canonical});
    } else if (!c->writable && r.exists) {
      plan.mounts.push_back({Mount::BindMount, r.canonical, true});
    }
  }
  std::sort(plan.mounts.begin(), plan.mounts.end());
  plan.mounts.erase(std::unique(plan.mounts.begin(), plan.mounts.end(),
                                [](const Mount& a, const Mount& b) { return a.path == b.path && a.kind == b.kind; }),
                    plan.mounts.end());
  if (!spec.cwd.empty()) {
    Resolved r = resolve_host(spec.cwd);
    add_links(r);
    if (r.exists) plan.dirs.push_back(r.canonical);
  }
  return plan;
}

// ---- Building the root ------------------------------------------------------------------------

bool exists(const std::string& path) {
  struct stat st{};
  return lstat(path.c_str(), &st) == 0;
}

// mkdir -p beneath the new root (`path` is canonical: no symlinks on the way).
void make_dirs(const std::string& path) {
  std::string sofar;
  for (const auto& c : components(path)) {
    sofar += "/" + c;
    if (mkdir(sofar.c_str(), 0755) != 0 && errno != EEXIST) fail("mkdir " + sofar);
  }
}

void mount_or_fail(const char* source, const std::string& target, const char* type, unsigned long flags,
                   const char* data, const std::string& what) {
  if (mount(source, target.c_str(), type, flags, data) != 0) fail(what);
}

// Read-only, recursively, keeping the flags the kernel locks in a user namespace (mount_setattr
// only sets the one attribute). Before Linux 5.12: a remount with the flags the mount has.
void make_read_only(const std::string& target, bool recursive) {
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  if (syscall(SYS_mount_setattr, AT_FDCWD, target.c_str(), recursive ? AT_RECURSIVE : 0, &attr, sizeof attr) == 0) return;
  if (errno != ENOSYS) fail("making " + target + " read-only");
  struct statvfs st{};
  if (statvfs(target.c_str(), &st) != 0) fail("statvfs " + target);
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  mount_or_fail(nullptr, target, nullptr, flags, nullptr, "making " + target + " read-only");
}

void mount_one(const Mount& m) {
  const std::string target = std::string(kNewRoot) + (m.path == "/" ? "" : m.path);
  switch (m.kind) {
    case Mount::BindMount: {
      const std::string source = std::string(kOldRoot) + m.path;
      struct stat st{};
      if (stat(source.c_str(), &st) != 0) fail("" + m.path);
      if (!exists(target)) {
        if (S_ISDIR(st.st_mode)) {
          make_dirs(target);
        } else {
          make_dirs(parent_of(target));
          const int fd = open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
          if (fd < 0) fail("mount point for " + m.path);
          close(fd);
        }
      }
      mount_or_fail(source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr, "binding " + m.path);
      if (!m.writable) make_read_only(target, true);
      break;
    }
    case Mount::Tmpfs:
      make_dirs(target);
      mount_or_fail("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, m.path == "/dev" || m.path == "/sys" ? "mode=0755" : "mode=1777",
                    "tmpfs on " + m.path);
      break;
    case Mount::Proc:
      make_dirs(target);
      mount_or_fail("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr,
                    "mounting /proc for the jail's PID namespace");
      break;
  }
}

// Inside a bind of a host tree (creating there would create on the host).
bool inside_bind(const Plan& plan, const std::string& path) {
  if (plan.host_root != JailSpec::HostRoot::None) {
    bool in_own = false;
    for (const Mount& m : plan.mounts)
      if (m.kind != Mount::BindMount && within(path, m.path)) in_own = true;
    if (!in_own) return true;
  }
  const Mount* inner = nullptr;
  for (const Mount& m : plan.mounts)
    if (within(path, m.path) && (!inner || m.path.size() > inner->path.size())) inner = &m;
  return inner && inner->kind == Mount::BindMount;
}

void build_root(const JailSpec& spec, const Plan& plan) {
  const bool host_root = plan.host_root != JailSpec::HostRoot::None;
  // Nothing done here may reach the host's mount namespace.
  mount_or_fail(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr, "making the mounts private");
  mount_or_fail("tmpfs", kBase, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700", std::string("tmpfs on ") + kBase);
  if (chdir(kBase) != 0) fail("chdir");
  if (mkdir("newroot", 0755) != 0 || mkdir("oldroot", 0755) != 0) fail("mkdir");
  if (syscall(SYS_pivot_root, ".", "oldroot") != 0) fail("pivot_root");
  if (chdir("/") != 0) fail("chdir /");

  if (!host_root) {
    mount_or_fail("tmpfs", kNewRoot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", "tmpfs root");
  } else {
    mount_or_fail(kOldRoot, kNewRoot, nullptr, MS_BIND | MS_REC, nullptr, "binding the host's root");
    if (plan.host_root == JailSpec::HostRoot::ReadOnly) make_read_only(kNewRoot, true);
  }
  for (const Mount& m : plan.mounts) mount_one(m);
  const std::string root = kNewRoot;
  for (const Symlink& l : plan.symlinks) {
    if (inside_bind(plan, l.path) || exists(root + l.path)) continue;
    make_dirs(root + parent_of(l.path));
    if (symlink(l.target.c_str(), (root + l.path).c_str()) != 0) fail("symlink " + l.path);
  }
  for (const std::string& dir : plan.dirs)
    if (!inside_bind(plan, dir) && !exists(root + dir)) make_dirs(root + dir);
  if (!host_root) make_read_only(kNewRoot, false);

  // Leave the host's tree behind: make the new root the root (pivot_root(".", ".") stacks the
  // old root, the base tmpfs with the host's tree beneath it, on top), then detach that whole stack
  // at once (each detach waits for an RCU grace period: one is enough).
  mount_or_fail(nullptr, kOldRoot, nullptr, MS_REC | MS_PRIVATE, nullptr, "making the old root private");
  if (chdir(kNewRoot) != 0) fail("chdir to the new root");
  if (syscall(SYS_pivot_root, ".", ".") != 0) fail("pivot_root to the new root");
  if (umount2(".", MNT_DETACH) != 0) fail("detaching the host's tree");
  if (chdir("/") != 0) fail("chdir /");
  if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0 && chdir("/") != 0) fail("chdir");
}

// ---- Identity and privileges ------------------------------------------------------------------

void write_file(const char* path, const std::string& text) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("opening ") + path);
  const ssize_t n = write(fd, text.data(), text.size());
  const int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) fail(std::string("writing ") + path, err);
}

// The caller's uid and gid, mapped to themselves: files keep their owners and permissions. A process
// that is not dumpable (host_process.cpp) has its /proc/self files owned by root, so it is dumpable
// just while it writes them (it holds no guest data: the guest is loaded after the jail).
void map_identity(uid_t uid, gid_t gid) {
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  if (access("/proc/self/setgroups", F_OK) == 0) write_file("/proc/self/setgroups", "deny");
  write_file("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1\n");
  write_file("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1\n");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("PR_SET_DUMPABLE");
}

// Every capability set emptied, and the securebits locked so that no execve could bring any back.
void drop_capabilities(bool must) {
  const int secure = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
                     SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  if (prctl(PR_SET_SECUREBITS, secure, 0, 0, 0) != 0 && must) fail("securebits");
  for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && must) fail("dropping capability " + std::to_string(cap));
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && must) fail("clearing ambient capabilities");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capset, &header, data) != 0) fail("dropping capabilities");
}

// ---- Supervising ------------------------------------------------------------------------------

sigset_t forwarded_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kForwarded) sigaddset(&set, s);
  return set;
}

// Ends this process the way its child ended.
[[noreturn]] void end_like(int status, int last_forwarded) {
  int sig = 0;
  if (WIFSIGNALED(status)) {
    sig = WTERMSIG(status);
  } else if (last_forwarded && WEXITSTATUS(status) == 128 + last_forwarded) {
    sig = last_forwarded;  // PID 1 exited for the signal it was sent (see handle_forwarded_as_init)
  }
  if (sig) {
    signal(sig, SIG_DFL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigprocmask(SIG_UNBLOCK, &only, nullptr);
    raise(sig);
    _exit(128 + sig);  // a signal whose default is not to terminate
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : kSetupFailed);
}

[[noreturn]] void supervise(pid_t child, const std::optional<FilterOptions>& seccomp) {
  prctl(PR_SET_NAME, "kvmserver-jail", 0, 0, 0);
  if (seccomp) {
    FilterOptions options = *seccomp;
    options.child = child;
    try {
      install_filter(FilterRole::Supervisor, options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvmserver: %s\n", e.what());
      kill(child, SIGKILL);
      _exit(kSetupFailed);
    }
  }
  sigset_t waited = forwarded_signals();
  sigaddset(&waited, SIGCHLD);
  int last_forwarded = 0;
  for (;;) {
    siginfo_t info{};
    const int sig = sigwaitinfo(&waited, &info);
    if (sig < 0) continue;
    if (sig == SIGCHLD) {
      int status = 0;
      if (waitpid(child, &status, WNOHANG) == child) end_like(status, last_forwarded);
      continue;
    }
    kill(child, sig);
    last_forwarded = sig;
  }
}

// As PID 1 of its namespace, kvmserver would ignore a signal left at its default action: exit as the
// default action would have ended it (the supervisors turn 128 + sig back into death by sig).
void exit_for_signal(int sig) { _exit(128 + sig); }

void handle_forwarded_as_init() {
  struct sigaction sa{};
  sa.sa_handler = exit_for_signal;
  sigfillset(&sa.sa_mask);
  for (int s : kForwarded) sigaction(s, &sa, nullptr);
}

// ---- The processes ----------------------------------------------------------------------------

void report(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0 && errno != EINTR) return;
    if (n > 0) done += static_cast<size_t>(n);
  }
}

std::string unshare_failure(int err) {
  std::string why = "cannot create namespaces (unshare: " + errno_text(err) + ")";
  if (err == ENOSPC) return why + ": user namespaces are disabled or used up (sysctl user.max_user_namespaces)";
  if (err == EPERM)
    return why + ": the kernel does not let this user create user namespaces (sysctl "
                 "kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns, or a container's "
                 "seccomp profile)";
  if (err == EINVAL) return why + ": this kernel lacks a namespace kvmserver needs";
  return why;
}

// kvmserver proper: PID 1 of the new PID namespace. Returns inside the jail, with a description.
std::string become_jailed(const JailSpec& spec, int report_fd, const sigset_t& original_mask) {
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  std::string description = std::string("user, mount, PID, IPC, UTS") + (spec.new_network ? ", network" : "") +
                            " namespaces; root: ";
  try {
    const Plan plan = make_plan(spec);
    size_t binds = 0;
    for (const Mount& m : plan.mounts) binds += m.kind == Mount::BindMount;
    description += (plan.host_root == JailSpec::HostRoot::None       ? "empty"
                    : plan.host_root == JailSpec::HostRoot::ReadOnly ? "the host's, read-only"
                                                                     : "the host's") +
                   std::string(", ") + std::to_string(binds) + " bind mounts; no capabilities";
    build_root(spec, plan);
    drop_capabilities(true);
  } catch (const std::exception& e) {
    report(report_fd, e.what());
    _exit(kSetupFailed);
  }
  report(report_fd, "ok");
  close(report_fd);
  handle_forwarded_as_init();
  sigprocmask(SIG_SETMASK, &original_mask, nullptr);
  return description;
}

// The middle process: creates the namespaces, forks kvmserver proper into them, supervises it.
std::string run_middle(const JailSpec& spec, pid_t outer, uid_t uid, gid_t gid, int report_fd,
                const std::optional<FilterOptions>& seccomp, const sigset_t& original_mask) {
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid() != outer) _exit(kSetupFailed);
  const int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                    (spec.new_network ? CLONE_NEWNET : 0);
  try {
    if (unshare(flags) != 0) throw JailError(unshare_failure(errno));
    map_identity(uid, gid);
  } catch (const std::exception& e) {
    report(report_fd, e.what());
    _exit(kSetupFailed);
  }
  const pid_t inner = fork();
  if (inner < 0) {
    report(report_fd, "fork: " + errno_text(errno));
    _exit(kSetupFailed);
  }
  if (inner == 0) return become_jailed(spec, report_fd, original_mask);
  close(report_fd);
  try {
    drop_capabilities(true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    kill(inner, SIGKILL);
    _exit(kSetupFailed);
  }
  supervise(inner, seccomp);
}

std::string read_report(int fd) {
  std::string text;
  char buf[512];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      return text;
    }
  }
}

}  // namespace

std::string enter(const JailSpec& spec, const std::optional<FilterOptions>& supervisor_seccomp) {
  // The forwarded signals wait (blocked) until someone forwards them; kvmserver proper restores the
  // mask once it is in the jail.
  sigset_t blocked = forwarded_signals(), original;
  sigaddset(&blocked, SIGCHLD);
  sigprocmask(SIG_BLOCK, &blocked, &original);
  int report_pipe[2];
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    sigprocmask(SIG_SETMASK, &original, nullptr);
    fail("pipe", err);
  }
  std::fflush(nullptr);
  const pid_t outer = getpid();
  const pid_t middle = fork();
  if (middle < 0) {
    const int err = errno;
    close(report_pipe[0]);
    close(report_pipe[1]);
    sigprocmask(SIG_SETMASK, &original, nullptr);
    fail("fork", err);
  }
  if (middle == 0) {
    close(report_pipe[0]);
    return run_middle(spec, outer, geteuid(), getegid(), report_pipe[1], supervisor_seccomp, original);
  }
  close(report_pipe[1]);
  const std::string outcome = read_report(report_pipe[0]);
  close(report_pipe[0]);
  if (outcome != "ok") {
    int status = 0;
    while (waitpid(middle, &status, 0) < 0 && errno == EINTR) {
    }
    sigprocmask(SIG_SETMASK, &original, nullptr);
    throw JailError(outcome.empty() ? "the set-up process ended without saying why" : outcome);
  }
  drop_capabilities(false);  // the caller's own, if any: supervising needs none
  supervise(middle, supervisor_seccomp);
}

}  // namespace kvms::jail

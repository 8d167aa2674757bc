#pragma once
// --jail: kvmserver in namespaces of its own, under a private root holding only what it needs, with
// no capabilities. Models: Firecracker's jailer (a pivot_root'ed private root, namespaces, privileges
// dropped before the VMM runs) and bubblewrap (unprivileged, through a user namespace: a tmpfs root
// holding bind mounts). It works unprivileged where the kernel allows user namespaces, and as root.
//
// Processes. enter() forks a middle process, which unshares user, mount, PID, IPC, UTS and
// (JailSpec::new_network) network namespaces, maps the caller's uid and gid to themselves, and forks
// kvmserver proper: PID 1 of the new PID namespace (so the jail gets a /proc of its own). That one
// builds the root and returns from enter(); the caller and the middle process become supervisors:
// they forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 down, wait, and end the way
// their child ended (the same exit status, or killed by the same signal), so the user sees
// kvmserver's status unchanged. Each child dies with its parent (PR_SET_PDEATHSIG). As PID 1,
// kvmserver would ignore those signals while their action is the default, so it handles them by
// exiting with 128 + the signal, which the supervisors turn back into death by that signal.
// stdin, stdout and stderr are inherited unchanged.
//
// The root (a read-only tmpfs, or the host's tree with JailSpec::host_root) holds:
//   - every JailSpec::binds path at the same path: a bind mount, read-only unless writable (through
//     mount_setattr, which keeps the flags a user namespace locks; before Linux 5.12 a remount with
//     those flags). Symlinks on the way to a path are recreated, so it resolves as on the host (the
//     path policy resolves guest paths by lstat/realpath of host paths: same paths, same answers).
//     A path that does not exist at start: a writable one binds its parent directory, where the
//     guest may create it; a read-only one binds nothing (there is nothing to read yet).
//   - /proc: a new procfs of the jail's PID namespace (binds beneath /proc are ignored);
//   - /dev: only what the binds name (in host_root mode a tmpfs hides the host's /dev, /sys too);
//   - JailSpec::scratch_dirs (kvmserver's own temporary directories): a fresh tmpfs each, unless a
//     bind or the host root covers them; then they are the host's, writable for kvmserver (the
//     guest's access still follows its grants);
//   - kvmserver's working directory, recreated (empty where nothing is bound) so relative paths work.
// Then the capability sets (bounding, ambient, effective, permitted, inheritable) are emptied and
// the securebits locked; PR_SET_NO_NEW_PRIVS is already set (host_process.hpp).
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "jail/seccomp_filter.hpp"

namespace kvms::jail {

struct Bind {
  std::string path;  // absolute host path, shown at the same path
  bool writable = false;
};

struct JailSpec {
  std::vector<Bind> binds;
  // The host's whole tree instead of an empty root (-A, a bare --allow-read/--allow-write), still
  // with the jail's own /proc, /dev and /sys.
  enum class HostRoot { None, ReadOnly, Writable } host_root = HostRoot::None;
  std::vector<std::string> scratch_dirs;
  std::string cwd;           // kvmserver's working directory
  bool new_network = false;  // nothing needs the host's network: a network namespace of its own
};

// The kernel refused a step. what() is one line: the step and the cause (and what to check).
class JailError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Enters the jail; must be called while the process has a single thread. Returns in kvmserver
// proper, inside the jail. The caller's process never returns (it supervises) unless the jail could
// not be set up: then it throws JailError, and the caller is as it was (no namespace, no change).
// supervisor_seccomp: when set, the supervisors run under FilterRole::Supervisor. Returns a
// description of the jail for -v.
std::string enter(const JailSpec& spec, const std::optional<FilterOptions>& supervisor_seccomp);

}  // namespace kvms::jail

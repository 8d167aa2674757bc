#pragma once
// The guest's /proc, /sys and /dev: trees kvmserver makes up from the guest's own state. No path in
// them ever reaches the host's files, whatever is granted (the path policy answers -ENOENT for them
// and refuses grants of them: policy.hpp). What exists:
//
//   /proc               self -> <pid>, thread-self -> <pid>/task/<tid>, <pid>/, cpuinfo, meminfo
//   /proc/<pid>/        exe, cwd, root (links), fd/ (N -> the open file), task/<tid>/ (the same
//                       files again), maps, status, stat, statm, cmdline, comm, environ, limits
//   /sys/devices/system/cpu/   online, possible, present
//   /dev                null, zero, full, random, urandom (the host's devices), tty (only when
//                       granted: kvmserver's controlling terminal), stdin, stdout, stderr
//                       (-> /proc/self/fd/0..2), fd (-> /proc/self/fd)
//
// <pid> is the guest process's own pid: other processes, even the guest's children, are not there.
// Anything else is ENOENT, and directories list exactly what exists. Files are read-only snapshots
// taken at open (a sealed host memfd, so read/pread/lseek/fstat/mmap work as on any file); the
// directories are synthetic (getdents64 lists them). /proc/cpuinfo and the /sys CPU lists are the
// host's text (the guest runs on those CPUs and sees them through CPUID anyway); /proc/meminfo is
// sized by --max-memory, /proc/<pid>/environ and cmdline are read from the guest's memory as Linux
// does.
//
// Links made up here are followed by lookup() like the kernel's: /proc/self/cwd/x is x in the guest's
// cwd, which the path policy then decides about. fd/N and exe are "magic": followed as the last
// component they are the open file and the program themselves.
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "linux/process.hpp"

namespace kvms::linux::procfs {

// Something that exists in the made-up trees.
struct Node {
  enum class Kind { Dir, File, Link, FdLink, ExeLink, Device } kind = Kind::Dir;
  std::string path;  // canonical: "/proc/<pid>/status", never "/proc/self/status"
  int id = 0;        // FdLink: the guest fd; File under task/<tid>: the tid (0: the process's)
  std::string link;  // Link: its text ("2", "/proc/self/fd/0", the cwd...)
};

// What a guest path (absolute) names, made-up links followed (the last one only when follow_last
// or with a trailing slash):
//   a Node;
//   a std::string: a path outside the trees, for the path policy (the guest path itself when it
//   never entered them, so the policy's own walk keeps `..` and symlink semantics);
//   an int: -ENOENT (not made up), -ENOTDIR, -ELOOP.
using Lookup = std::variant<Node, std::string, int>;
Lookup lookup(Process& p, std::string_view guest_path, bool follow_last);

// open: the new guest fd or -errno. `followed`: whether the last component was followed (a link
// that was not, as with O_NOFOLLOW, is -ELOOP).
int64_t open(Process& p, const Node& n, int flags, bool followed);
// The errno for creating `guest_path` that lookup() says is absent: -EACCES when its directory is a
// made-up one (nothing can be created there), else what looking the directory up says.
int creation_errno(Process& p, std::string_view guest_path);
// readlink: the link's text, or -EINVAL (not a link).
std::variant<std::string, int> readlink(Process& p, const Node& n);
// stat (or lstat when !followed): 0 with st filled in, or -errno.
int stat(Process& p, const Node& n, bool followed, struct stat& st);
// access(2): 0 or -EACCES for the R_OK/W_OK/X_OK bits in mode.
int access(Process& p, const Node& n, bool followed, int mode);
// statfs: the file system the tree stands for (proc, sysfs, devtmpfs).
void statfs(const Node& n, struct statfs& st);

// getdents64 on a directory opened here (legacy: the old getdents' struct linux_dirent, whose
// d_type is the record's last byte); nullopt when f is not one.
std::optional<int64_t> getdents64(Process& p, OpenFile& f, uint64_t buf, uint64_t count, bool legacy = false);

// The text of a made-up file (exposed for tests); nullopt when the path is not one.
std::optional<std::string> contents(Process& p, const std::string& path);

}  // namespace kvms::linux::procfs

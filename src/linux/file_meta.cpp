// Names and metadata: stat, readlink, access, the working directory, and the calls that change the
// file system (each needs Write access from the policy for every path it modifies).
//
// Path calls resolve the guest path with the PathPolicy, open the parent of the canonical host path
// without following symlinks (host_fs.hpp: fileops::open_parent), and make the *at host call on the last
// component with AT_SYMLINK_NOFOLLOW or its equivalent, so nothing is followed that the policy did
// not check.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <optional>
#include <string>
#include <vector>

#include "linux/file_quota.hpp"
#include "linux/host_fs.hpp"
#include "linux/policy.hpp"
#include "linux/procfs.hpp"
#include "linux/syscalls.hpp"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#define RENAME_WHITEOUT (1 << 2)
#endif

namespace kvms::linux {

namespace fileops {  // file.cpp
int resolve(Process& p, const std::string& guest_path, Access access, bool follow_last, PathPolicy::Resolved& out);
}  // namespace fileops

namespace {

constexpr long kFchmodat2 = 452;   // SYS_fchmodat2 (Linux 6.6)
constexpr long kFaccessat2 = 439;  // SYS_faccessat2 (Linux 5.8)

// A path resolved under the policy, with its parent directory open for the *at host calls.
struct Target {
  PathPolicy::Resolved r;
  HostFd dir;        // O_PATH fd of the parent directory (host)
  std::string name;  // last component
};

int open_target(Process& p, const std::string& guest, Access access, bool follow, Target& t) {
  if (int rc = fileops::resolve(p, guest, access, follow, t.r)) return rc;
  const int dir = fileops::open_parent(t.r.host_path, t.name);
  if (dir < 0) return dir;
  t.dir.reset(dir);
  return 0;
}

int open_target_at(Process& p, int dirfd, uint64_t upath, Access access, bool follow, Target& t) {
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  return open_target(p, std::get<std::string>(gp), access, follow, t);
}

// For AT_EMPTY_PATH: 1 when the path argument is "" (or NULL, as Linux 6.11 allows), 0 when not,
// -EFAULT.
int is_empty_path(Process& p, uint64_t upath) {
  if (upath == 0) return 1;
  char c;
  if (!p.mm().read(upath, c)) return -EFAULT;
  return c == '\0';
}

// The calls that modify the directory entry named by the last component (create, unlink, rename)
// follow Linux for a last component of ".", ".." or "/": they fail before touching anything.
enum class Op { Create, Unlink, Rmdir, Rename };

int special_last_errno(std::string_view path, Op op) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const bool root = path == "/";
  const auto last = path.substr(path.rfind('/') + 1);
  if (!root && last != "." && last != "..") return 0;
  switch (op) {
    case Op::Create: return -EEXIST;
    case Op::Unlink: return -EISDIR;
    case Op::Rename: return -EBUSY;
    case Op::Rmdir: return root ? -EBUSY : last == "." ? -EINVAL : -ENOTEMPTY;
  }
  return 0;
}

// A path whose last component is about to be created, removed or renamed: Write access, the last
// component not followed (a trailing slash only says it must be a directory; `is_dir_syntax`).
int modify_target(Process& p, std::string path, Op op, Target& t, bool* is_dir_syntax = nullptr) {
  if (int rc = special_last_errno(path, op)) return rc;
  const bool slash = path.size() > 1 && path.back() == '/';
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (is_dir_syntax) *is_dir_syntax = slash;
  const int rc = open_target(p, path, Access::Write, false, t);
  // Nothing can be created in procfs's directories: EACCES, as for a directory one may not write.
  return rc == -ENOENT && op == Op::Create ? procfs::creation_errno(p, path) : rc;
}

int modify_target(Process& p, int dirfd, uint64_t upath, Op op, Target& t, bool* is_dir_syntax = nullptr) {
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  return modify_target(p, std::move(std::get<std::string>(gp)), op, t, is_dir_syntax);
}

// For a name given with a trailing slash: the entry must be a directory (ENOTDIR; ENOENT when absent).
int require_dir(const Target& t) {
  struct stat st;
  if (::fstatat(t.dir.get(), t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
  return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

// A guest fd named for an fd-based metadata change: needs a writable grant.
int deny_unless_writable(Process& p, const OpenFile& f) {
  if (f.writable_grant) return 0;
  if (p.config().verbose) p.log_denied(f.path, p.policy().suggestion(f.path, Access::Write));
  return -EACCES;
}

template <typename T> int64_t put(Process& p, uint64_t addr, const T& value) {
  return p.mm().write(addr, value) ? 0 : -EFAULT;
}

// Owners as the guest sees them: kvmserver's own user and group are the guest's (as a user
// namespace maps one id), so what the guest creates is its own; other owners show as they are.
uid_t guest_owner(const Process& p, uid_t host) { return host == ::geteuid() ? p.uid : host; }
gid_t guest_group(const Process& p, gid_t host) { return host == ::getegid() ? p.gid : host; }
// And back, for chown: the guest's own ids are kvmserver's; -1 (unchanged) and others go as given.
uid_t host_owner(const Process& p, uint64_t guest) {
  return static_cast<uid_t>(guest) == p.uid ? ::geteuid() : static_cast<uid_t>(guest);
}
gid_t host_group(const Process& p, uint64_t guest) {
  return static_cast<gid_t>(guest) == p.gid ? ::getegid() : static_cast<gid_t>(guest);
}

int64_t put(Process& p, uint64_t addr, struct stat st) {
  st.st_uid = guest_owner(p, st.st_uid);
  st.st_gid = guest_group(p, st.st_gid);
  return p.mm().write(addr, st) ? 0 : -EFAULT;
}

int64_t put(Process& p, uint64_t addr, struct statx sx) {
  sx.stx_uid = guest_owner(p, sx.stx_uid);
  sx.stx_gid = guest_group(p, sx.stx_gid);
  return p.mm().write(addr, sx) ? 0 : -EFAULT;
}

int64_t stat_target(Process& p, const Target& t, uint64_t ubuf) {
  struct stat st;
  if (::fstatat(t.dir.get(), t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return -errno;
  return put(p, ubuf, st);
}

int64_t stat_fd(Process& p, int fd, uint64_t ubuf) {
  if (fd == AT_FDCWD) {
    Target t;
    if (int rc = open_target(p, p.cwd, Access::Read, true, t)) return rc;
    return stat_target(p, t, ubuf);
  }
  auto f = p.fds.get(fd);
  if (!f) return -EBADF;
  struct stat st;
  if (::fstat(f->host_fd, &st) < 0) return -errno;
  return put(p, ubuf, st);
}

// The directories above a grant cannot be opened, but the guest may see that they exist: `mkdir -p`
// and path walks stat every ancestor. Their metadata is all they show. An O_PATH fd of the
// directory (opened without following symlinks), or -EACCES unless every component of the path,
// and whatever symlinks among them lead to, is in the guest's view.
int open_ancestor(Process& p, const std::string& guest) {
  auto r = p.policy().resolve_visible(guest);
  auto* ok = std::get_if<PathPolicy::Resolved>(&r);
  if (!ok || !ok->exists) return -EACCES;
  const int fd = fileops::open_host(ok->host_path, O_PATH | O_DIRECTORY, 0);
  return fd < 0 ? -EACCES : fd;
}

// The guest path argument of a path call, fetched from the guest once (what is checked is what is
// looked at), and what it names in procfs's trees: a node there (made up, never a host file), an
// error, or the path for the policy.
struct PathArg {
  std::string path;
  std::optional<procfs::Node> made_up;
  int error = 0;
};

PathArg path_arg(Process& p, int dirfd, uint64_t upath, bool follow) {
  PathArg arg;
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) {
    arg.error = *err;
    return arg;
  }
  auto where = procfs::lookup(p, std::get<std::string>(gp), follow);
  if (auto* n = std::get_if<procfs::Node>(&where)) arg.made_up = std::move(*n);
  else if (auto* err = std::get_if<int>(&where)) arg.error = *err;
  else arg.path = std::move(std::get<std::string>(where));
  return arg;
}

// stat/lstat/newfstatat: a made-up file, a file the policy grants, or the directory above a grant.
int64_t stat_path(Process& p, int dirfd, uint64_t upath, uint64_t ubuf, bool follow) {
  PathArg arg = path_arg(p, dirfd, upath, follow);
  if (arg.error) return arg.error;
  struct stat st;
  if (arg.made_up) {
    int rc = procfs::stat(p, *arg.made_up, follow, st);
    return rc ? rc : put(p, ubuf, st);
  }
  Target t;
  if (int rc = open_target(p, arg.path, Access::Read, follow, t)) {
    if (rc != -EACCES) return rc;
    HostFd dir(open_ancestor(p, arg.path));
    if (dir.get() < 0 || ::fstat(dir.get(), &st) != 0) return rc;
    return put(p, ubuf, st);
  }
  return stat_target(p, t, ubuf);
}

int64_t do_readlink(Process& p, int dirfd, uint64_t upath, uint64_t ubuf, int64_t size) {
  if (size <= 0) return -EINVAL;
  PathArg arg = path_arg(p, dirfd, upath, false);
  if (arg.error) return arg.error;
  if (arg.made_up) {
    auto link = procfs::readlink(p, *arg.made_up);
    if (auto* err = std::get_if<int>(&link)) return *err;
    const std::string& text = std::get<std::string>(link);
    const uint64_t n = std::min<uint64_t>(text.size(), static_cast<uint64_t>(size));
    return p.mm().copy_to_user(ubuf, text.data(), n) ? static_cast<int64_t>(n) : -EFAULT;
  }
  const std::string& path = arg.path;
  // The directories above a grant can be walked through but not examined. realpath() readlinks
  // every component and gives up on anything but EINVAL, so for those say "not a symlink" (the
  // policy expands any symlink among them anyway).
  auto r = p.policy().resolve(path, Access::Read, false);
  if (auto* err = std::get_if<int>(&r); err && *err == -EACCES && p.policy().visible(normalize_path(path)))
    return -EINVAL;
  Target t;
  if (auto* err = std::get_if<int>(&r)) {
    if (*err == -EACCES && p.config().verbose)
      p.log_denied(normalize_path(path), p.policy().suggestion(path, Access::Read));
    return *err;
  }
  t.r = std::move(std::get<PathPolicy::Resolved>(r));
  const int dir = fileops::open_parent(t.r.host_path, t.name);
  if (dir < 0) return dir;
  t.dir.reset(dir);
  std::vector<char> buf(std::min<int64_t>(size, PATH_MAX));
  const ssize_t n = ::readlinkat(t.dir.get(), t.name.c_str(), buf.data(), buf.size());
  if (n < 0) return -errno;
  return p.mm().copy_to_user(ubuf, buf.data(), static_cast<uint64_t>(n)) ? n : -EFAULT;
}

int host_faccessat(int dir, const char* name, int mode, int flags) {
  long rc = ::syscall(kFaccessat2, dir, name, mode, flags);
  if (rc < 0 && errno == ENOSYS && !(flags & AT_EMPTY_PATH))
    rc = ::syscall(SYS_faccessat, dir, name, mode);  // the name is canonical: nothing to follow
  return rc < 0 ? -errno : 0;
}

int64_t do_access(Process& p, int dirfd, uint64_t upath, uint64_t mode, uint64_t flags) {
  if (mode & ~uint64_t(R_OK | W_OK | X_OK)) return -EINVAL;
  if (flags & ~uint64_t(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)) return -EINVAL;
  const Access access = (mode & W_OK) ? Access::Write : Access::Read;
  const int eaccess = static_cast<int>(flags & AT_EACCESS);
  if (flags & AT_EMPTY_PATH) {
    int empty = is_empty_path(p, upath);
    if (empty < 0) return empty;
    if (empty && dirfd != AT_FDCWD) {
      auto f = p.fds.get(dirfd);
      if (!f) return -EBADF;
      if (access == Access::Write)
        if (int rc = deny_unless_writable(p, *f)) return rc;
      return host_faccessat(f->host_fd, "", static_cast<int>(mode), AT_EMPTY_PATH | eaccess);
    }
    if (empty) {
      Target t;
      if (int rc = open_target(p, p.cwd, access, true, t)) return rc;
      return host_faccessat(t.dir.get(), t.name.c_str(), static_cast<int>(mode), AT_SYMLINK_NOFOLLOW | eaccess);
    }
  }
  const bool follow = !(flags & AT_SYMLINK_NOFOLLOW);
  PathArg arg = path_arg(p, dirfd, upath, follow);
  if (arg.error) return arg.error;
  if (arg.made_up) return procfs::access(p, *arg.made_up, follow, static_cast<int>(mode));
  Target t;
  if (int rc = open_target(p, arg.path, access, follow, t)) return rc;
  return host_faccessat(t.dir.get(), t.name.c_str(), static_cast<int>(mode), AT_SYMLINK_NOFOLLOW | eaccess);
}

int64_t do_mkdir(Process& p, int dirfd, uint64_t upath, uint64_t mode) {
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  const std::string& path = std::get<std::string>(gp);
  Target t;
  if (int rc = modify_target(p, path, Op::Create, t)) {
    // Linux looks the name up before it checks write permission: an existing, visible path is EEXIST
    // (`mkdir -p` relies on it for every ancestor), a made-up one too.
    if (rc == -EACCES) {
      if (std::holds_alternative<procfs::Node>(procfs::lookup(p, path, false))) return -EEXIST;
      auto seen = p.policy().resolve_visible(path, false);
      auto* r = std::get_if<PathPolicy::Resolved>(&seen);
      if (r && r->exists) return -EEXIST;
    }
    return rc;
  }
  WriteQuota quota(p, t.r.guest_path);
  if (quota.error()) return quota.error();
  const int64_t rc = errno_result(::mkdirat(t.dir.get(), t.name.c_str(), static_cast<mode_t>(mode) & 01777 & ~p.umask));
  if (rc == 0) quota.created_at(t.dir.get(), t.name);
  return rc;
}

// mknod: FIFOs, sockets and regular files, as for an unprivileged process on Linux; device nodes
// need CAP_MKNOD (EPERM).
int64_t do_mknod(Process& p, int dirfd, uint64_t upath, uint64_t mode) {
  const mode_t type = static_cast<mode_t>(mode) & S_IFMT;
  switch (type) {
    case 0: case S_IFREG: case S_IFIFO: case S_IFSOCK: break;
    case S_IFCHR: case S_IFBLK: return -EPERM;
    case S_IFDIR: return -EPERM;  // (mkdir makes directories)
    default: return -EINVAL;
  }
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  Target t;
  if (int rc = modify_target(p, std::get<std::string>(gp), Op::Create, t)) return rc;
  WriteQuota quota(p, t.r.guest_path);
  if (quota.error()) return quota.error();
  const mode_t perms = static_cast<mode_t>(mode) & 07777 & ~p.umask;
  const int64_t rc = errno_result(::mknodat(t.dir.get(), t.name.c_str(), (type ? type : S_IFREG) | perms, 0));
  if (rc == 0) quota.created_at(t.dir.get(), t.name);
  return rc;
}

int64_t do_unlink(Process& p, int dirfd, uint64_t upath, uint64_t flags) {
  if (flags & ~uint64_t(AT_REMOVEDIR)) return -EINVAL;
  const bool rmdir = flags & AT_REMOVEDIR;
  Target t;
  bool slash = false;
  if (int rc = modify_target(p, dirfd, upath, rmdir ? Op::Rmdir : Op::Unlink, t, &slash)) return rc;
  if (slash && !rmdir) {  // "file/" is ENOTDIR, "dir/" EISDIR
    int rc = require_dir(t);
    return rc ? rc : -EISDIR;
  }
  if (rmdir) {
    // rmdir of a symlink is ENOTDIR, but one to a directory the guest may not write is refused as
    // such: whoever named it meant that directory.
    struct stat st;
    if (::fstatat(t.dir.get(), t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      PathPolicy::Resolved target;
      int rc = fileops::resolve(p, t.r.guest_path, Access::Write, true, target);
      return rc == -EACCES ? rc : -ENOTDIR;
    }
  }
  const uint64_t removed = tmp_inode_removed_by(p, t.r.guest_path, t.dir.get(), t.name);
  const int64_t rc = errno_result(::unlinkat(t.dir.get(), t.name.c_str(), rmdir ? AT_REMOVEDIR : 0));
  if (rc == 0) forget_removed(p, removed);
  return rc;
}

int64_t do_rename(Process& p, int olddir, uint64_t oldpath, int newdir, uint64_t newpath, uint64_t flags) {
  if (flags & ~uint64_t(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) return -EINVAL;
  if ((flags & RENAME_EXCHANGE) && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT))) return -EINVAL;
  Target from, to;
  bool from_slash = false, to_slash = false;
  if (int rc = modify_target(p, olddir, oldpath, Op::Rename, from, &from_slash)) return rc;
  if (int rc = modify_target(p, newdir, newpath, Op::Rename, to, &to_slash)) {
    auto gp = p.guest_path(newdir, newpath);  // the new name is created, maybe in procfs's trees
    return rc == -ENOENT && std::holds_alternative<std::string>(gp) ? procfs::creation_errno(p, std::get<std::string>(gp)) : rc;
  }
  if (from_slash || to_slash)  // a trailing slash on either side: the source must be a directory
    if (int rc = require_dir(from)) return rc;
  // A file renamed over goes with its last link (RENAME_EXCHANGE keeps both).
  const uint64_t replaced = (flags & RENAME_EXCHANGE) ? 0 : tmp_inode_removed_by(p, to.r.guest_path, to.dir.get(), to.name);
  const int64_t rc = flags == 0 ? errno_result(::renameat(from.dir.get(), from.name.c_str(), to.dir.get(), to.name.c_str()))
                                : errno_result(::syscall(SYS_renameat2, from.dir.get(), from.name.c_str(), to.dir.get(),
                                                         to.name.c_str(), static_cast<unsigned>(flags)));
  if (rc == 0) forget_removed(p, replaced);
  return rc;
}

int64_t do_symlink(Process& p, uint64_t utarget, int dirfd, uint64_t ulink) {
  auto text = p.mm().read_string(utarget, PATH_MAX);
  if (!text) return p.mm().find(utarget) ? -ENAMETOOLONG : -EFAULT;
  if (text->empty()) return -ENOENT;
  Target t;
  if (int rc = modify_target(p, dirfd, ulink, Op::Create, t)) return rc;
  WriteQuota quota(p, t.r.guest_path);
  if (quota.error()) return quota.error();
  const int64_t rc = errno_result(::symlinkat(text->c_str(), t.dir.get(), t.name.c_str()));
  if (rc == 0) quota.created_at(t.dir.get(), t.name);
  return rc;
}

int64_t do_link(Process& p, int olddir, uint64_t oldpath, int newdir, uint64_t newpath, uint64_t flags) {
  if (flags & ~uint64_t(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH)) return -EINVAL;
  if (flags & AT_EMPTY_PATH) {
    int empty = is_empty_path(p, oldpath);
    if (empty < 0) return empty;
    if (empty) {
      auto f = p.fds.get(olddir);
      if (!f) return olddir == AT_FDCWD ? -ENOENT : -EBADF;
      if (int rc = deny_unless_writable(p, *f)) return rc;
      Target to;
      if (int rc = modify_target(p, newdir, newpath, Op::Create, to)) return rc;
      WriteQuota quota(p, to.r.guest_path);
      if (quota.error()) return quota.error();
      const int64_t rc = errno_result(::linkat(f->host_fd, "", to.dir.get(), to.name.c_str(), AT_EMPTY_PATH));
      if (rc == 0) quota.created_at(to.dir.get(), to.name);
      return rc;
    }
  }
  Target from, to;
  if (int rc = open_target_at(p, olddir, oldpath, Access::Write, flags & AT_SYMLINK_FOLLOW, from)) return rc;
  if (int rc = modify_target(p, newdir, newpath, Op::Create, to)) return rc;
  WriteQuota quota(p, to.r.guest_path);
  if (quota.error()) return quota.error();
  const int64_t rc = errno_result(::linkat(from.dir.get(), from.name.c_str(), to.dir.get(), to.name.c_str(), 0));
  if (rc == 0) quota.created_at(to.dir.get(), to.name);
  return rc;
}

// chmod of a canonical host path through an O_PATH fd, so that a symlink swapped in meanwhile is
// never followed.
int64_t chmod_host(const std::string& host_path, mode_t mode) {
  const int fd = fileops::open_host(host_path, O_PATH, 0);
  if (fd < 0) return fd;
  HostFd file(fd);
  long rc = ::syscall(kFchmodat2, fd, "", mode, AT_EMPTY_PATH);
  if (rc == 0) return 0;
  if (errno != ENOSYS && errno != EINVAL) return -errno;
  struct stat st;
  if (::fstat(fd, &st) < 0) return -errno;
  if (S_ISLNK(st.st_mode)) return -ELOOP;
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  return errno_result(::chmod(proc.c_str(), mode));
}

int64_t do_chmod(Process& p, int dirfd, uint64_t upath, uint64_t mode) {
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  PathPolicy::Resolved r;
  if (int rc = fileops::resolve(p, std::get<std::string>(gp), Access::Write, true, r)) return rc;
  return chmod_host(r.host_path, static_cast<mode_t>(mode) & 07777);
}

// chown of a path through an O_PATH fd (as chmod_host): the owner change is the host's, under the
// same write grant chmod needs, and what the host allows kvmserver (a kvmserver without CAP_CHOWN,
// in its jail or run by a user, may only change the group to one of its own: EPERM otherwise, as
// for an unprivileged process on Linux).
int64_t do_chown(Process& p, int dirfd, uint64_t upath, uint64_t owner, uint64_t group, int flags) {
  if (flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)) return -EINVAL;
  const bool follow = !(flags & AT_SYMLINK_NOFOLLOW);
  const uid_t uid = host_owner(p, owner);
  const gid_t gid = host_group(p, group);
  if ((flags & AT_EMPTY_PATH) && dirfd != AT_FDCWD) {
    const auto path = p.mm().read_string(upath);
    if (!path) return -EFAULT;
    if (path->empty()) {
      auto f = p.fds.get(dirfd);
      if (!f) return -EBADF;
      if (int rc = deny_unless_writable(p, *f)) return rc;
      return errno_result(::fchownat(f->host_fd, "", uid, gid, AT_EMPTY_PATH));
    }
  }
  auto gp = p.guest_path(dirfd, upath);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  PathPolicy::Resolved r;
  if (int rc = fileops::resolve(p, std::get<std::string>(gp), Access::Write, follow, r)) return rc;
  const int fd = fileops::open_host(r.host_path, O_PATH | O_NOFOLLOW, 0);
  if (fd < 0) return fd;
  HostFd file(fd);
  return errno_result(::fchownat(fd, "", uid, gid, AT_EMPTY_PATH));
}

int64_t statfs_of(Process& p, const std::string& guest, uint64_t ubuf) {
  if (auto where = procfs::lookup(p, guest, true); auto* n = std::get_if<procfs::Node>(&where)) {
    struct statfs st;
    procfs::statfs(*n, st);
    return put(p, ubuf, st);
  }
  PathPolicy::Resolved r;
  if (int rc = fileops::resolve(p, guest, Access::Read, true, r)) return rc;
  const int fd = fileops::open_host(r.host_path, O_PATH, 0);
  if (fd < 0) return fd;
  HostFd file(fd);
  struct statfs st;
  if (::fstatfs(fd, &st) < 0) return -errno;
  return put(p, ubuf, st);
}

// statx's answer for what only a struct stat describes (procfs's files).
struct statx statx_of(const struct stat& st) {
  struct statx sx{};
  sx.stx_mask = STATX_BASIC_STATS;
  sx.stx_blksize = static_cast<uint32_t>(st.st_blksize);
  sx.stx_nlink = static_cast<uint32_t>(st.st_nlink);
  sx.stx_uid = st.st_uid;
  sx.stx_gid = st.st_gid;
  sx.stx_mode = static_cast<uint16_t>(st.st_mode);
  sx.stx_ino = st.st_ino;
  sx.stx_size = static_cast<uint64_t>(st.st_size);
  sx.stx_blocks = static_cast<uint64_t>(st.st_blocks);
  auto ts = [](const timespec& t) { return statx_timestamp{t.tv_sec, static_cast<uint32_t>(t.tv_nsec), 0}; };
  sx.stx_atime = ts(st.st_atim);
  sx.stx_mtime = ts(st.st_mtim);
  sx.stx_ctime = ts(st.st_ctim);
  sx.stx_rdev_major = major(st.st_rdev);
  sx.stx_rdev_minor = minor(st.st_rdev);
  sx.stx_dev_major = major(st.st_dev);
  sx.stx_dev_minor = minor(st.st_dev);
  return sx;
}

}  // namespace

KVMS_SYSCALL(stat) { return stat_path(p, AT_FDCWD, a.a[0], a.a[1], true); }
KVMS_SYSCALL(lstat) { return stat_path(p, AT_FDCWD, a.a[0], a.a[1], false); }
KVMS_SYSCALL(fstat) { return stat_fd(p, static_cast<int>(a.a[0]), a.a[1]); }

KVMS_SYSCALL(newfstatat) {
  const int dirfd = static_cast<int>(a.a[0]);
  const uint64_t flags = a.a[3];
  if (flags & ~uint64_t(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)) return -EINVAL;
  if (flags & AT_EMPTY_PATH) {
    int empty = is_empty_path(p, a.a[1]);
    if (empty < 0) return empty;
    if (empty) return stat_fd(p, dirfd, a.a[2]);
  }
  return stat_path(p, dirfd, a.a[1], a.a[2], !(flags & AT_SYMLINK_NOFOLLOW));
}

KVMS_SYSCALL(statx) {
  const int dirfd = static_cast<int>(a.a[0]);
  const uint64_t flags = a.a[2];
  const auto mask = static_cast<unsigned>(a.a[3]);
  if (flags & ~uint64_t(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE)) return -EINVAL;
  if ((flags & AT_STATX_SYNC_TYPE) == AT_STATX_SYNC_TYPE) return -EINVAL;
  if (mask & STATX__RESERVED) return -EINVAL;
  const int sync = static_cast<int>(flags & AT_STATX_SYNC_TYPE);
  struct statx sx{};
  if (flags & AT_EMPTY_PATH) {
    int empty = is_empty_path(p, a.a[1]);
    if (empty < 0) return empty;
    if (empty && dirfd != AT_FDCWD) {
      auto f = p.fds.get(dirfd);
      if (!f) return -EBADF;
      if (::statx(f->host_fd, "", AT_EMPTY_PATH | sync, mask, &sx) < 0) return -errno;
      return put(p, a.a[4], sx);
    }
    if (empty) {
      Target t;
      if (int rc = open_target(p, p.cwd, Access::Read, true, t)) return rc;
      if (::statx(t.dir.get(), t.name.c_str(), AT_SYMLINK_NOFOLLOW | sync, mask, &sx) < 0) return -errno;
      return put(p, a.a[4], sx);
    }
  }
  const bool follow = !(flags & AT_SYMLINK_NOFOLLOW);
  PathArg arg = path_arg(p, dirfd, a.a[1], follow);
  if (arg.error) return arg.error;
  if (arg.made_up) {
    struct stat st;
    int rc = procfs::stat(p, *arg.made_up, follow, st);
    return rc ? rc : put(p, a.a[4], statx_of(st));
  }
  Target t;
  if (int rc = open_target(p, arg.path, Access::Read, follow, t)) {
    if (rc != -EACCES) return rc;
    HostFd dir(open_ancestor(p, arg.path));
    if (dir.get() < 0 || ::statx(dir.get(), "", AT_EMPTY_PATH | sync, mask, &sx) < 0) return rc;
    return put(p, a.a[4], sx);
  }
  if (::statx(t.dir.get(), t.name.c_str(), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | sync, mask, &sx) < 0) return -errno;
  return put(p, a.a[4], sx);
}

KVMS_SYSCALL(readlink) { return do_readlink(p, AT_FDCWD, a.a[0], a.a[1], static_cast<int>(a.a[2])); }
KVMS_SYSCALL(readlinkat) {
  return do_readlink(p, static_cast<int>(a.a[0]), a.a[1], a.a[2], static_cast<int>(a.a[3]));
}

KVMS_SYSCALL(access) { return do_access(p, AT_FDCWD, a.a[0], a.a[1], 0); }
KVMS_SYSCALL(faccessat) { return do_access(p, static_cast<int>(a.a[0]), a.a[1], a.a[2], 0); }
KVMS_SYSCALL(faccessat2) { return do_access(p, static_cast<int>(a.a[0]), a.a[1], a.a[2], a.a[3]); }

KVMS_SYSCALL(getcwd) {
  const uint64_t need = p.cwd.size() + 1;
  if (a.a[1] < need) return -ERANGE;
  return p.mm().copy_to_user(a.a[0], p.cwd.c_str(), need) ? static_cast<int64_t>(need) : -EFAULT;
}

KVMS_SYSCALL(chdir) {
  PathArg arg = path_arg(p, AT_FDCWD, a.a[0], true);
  if (arg.error) return arg.error;
  if (arg.made_up) {
    auto f = arg.made_up->kind == procfs::Node::Kind::FdLink ? p.fds.get(arg.made_up->id) : nullptr;
    if (f && f->kind == OpenFile::Kind::Directory && !f->path.empty() && f->path[0] == '/') {
      p.cwd = f->path;  // /proc/self/fd/N of a directory the guest opened
      return 0;
    }
    if (arg.made_up->kind != procfs::Node::Kind::Dir) return -ENOTDIR;
    p.cwd = arg.made_up->path;
    return 0;
  }
  PathPolicy::Resolved r;
  if (int rc = fileops::resolve(p, arg.path, Access::Read, true, r)) return rc;
  const int fd = fileops::open_host(r.host_path, O_PATH | O_DIRECTORY, 0);
  if (fd < 0) return fd;
  ::close(fd);
  p.cwd = r.guest_path;  // canonical, as the guest sees it (not the host path behind a volume)
  return 0;
}

KVMS_SYSCALL(fchdir) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (f->kind != OpenFile::Kind::Directory) return -ENOTDIR;
  p.cwd = f->path;
  return 0;
}

KVMS_SYSCALL(umask) {
  const mode_t old = p.umask;
  p.umask = static_cast<mode_t>(a.a[0]) & 0777;
  return old;
}

KVMS_SYSCALL(mkdir) { return do_mkdir(p, AT_FDCWD, a.a[0], a.a[1]); }
KVMS_SYSCALL(mkdirat) { return do_mkdir(p, static_cast<int>(a.a[0]), a.a[1], a.a[2]); }
KVMS_SYSCALL(mknod) { return do_mknod(p, AT_FDCWD, a.a[0], a.a[1]); }
KVMS_SYSCALL(mknodat) { return do_mknod(p, static_cast<int>(a.a[0]), a.a[1], a.a[2]); }
KVMS_SYSCALL(unlink) { return do_unlink(p, AT_FDCWD, a.a[0], 0); }
KVMS_SYSCALL(unlinkat) { return do_unlink(p, static_cast<int>(a.a[0]), a.a[1], a.a[2]); }
KVMS_SYSCALL(rmdir) { return do_unlink(p, AT_FDCWD, a.a[0], AT_REMOVEDIR); }

KVMS_SYSCALL(rename) { return do_rename(p, AT_FDCWD, a.a[0], AT_FDCWD, a.a[1], 0); }
KVMS_SYSCALL(renameat) { return do_rename(p, static_cast<int>(a.a[0]), a.a[1], static_cast<int>(a.a[2]), a.a[3], 0); }
KVMS_SYSCALL(renameat2) {
  return do_rename(p, static_cast<int>(a.a[0]), a.a[1], static_cast<int>(a.a[2]), a.a[3], static_cast<unsigned>(a.a[4]));
}

KVMS_SYSCALL(symlink) { return do_symlink(p, a.a[0], AT_FDCWD, a.a[1]); }
KVMS_SYSCALL(symlinkat) { return do_symlink(p, a.a[0], static_cast<int>(a.a[1]), a.a[2]); }
KVMS_SYSCALL(link) { return do_link(p, AT_FDCWD, a.a[0], AT_FDCWD, a.a[1], 0); }
KVMS_SYSCALL(linkat) {
  return do_link(p, static_cast<int>(a.a[0]), a.a[1], static_cast<int>(a.a[2]), a.a[3], static_cast<unsigned>(a.a[4]));
}

KVMS_SYSCALL(utimensat) {
  const int dirfd = static_cast<int>(a.a[0]);
  const uint64_t upath = a.a[1], flags = a.a[3];
  if (flags & ~uint64_t(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)) return -EINVAL;
  timespec times[2];
  if (a.a[2] && !p.mm().copy_from_user(times, a.a[2], sizeof times)) return -EFAULT;
  const timespec* ts = a.a[2] ? times : nullptr;

  bool on_fd = false;
  if (upath == 0) {  // utimensat(fd, NULL, ...): futimens
    if (dirfd == AT_FDCWD) return -EFAULT;
    if (flags & AT_SYMLINK_NOFOLLOW) return -EINVAL;
    on_fd = true;
  } else if (flags & AT_EMPTY_PATH) {
    int empty = is_empty_path(p, upath);
    if (empty < 0) return empty;
    on_fd = empty && dirfd != AT_FDCWD;
    if (empty && dirfd == AT_FDCWD) {
      Target t;
      if (int rc = open_target(p, p.cwd, Access::Write, true, t)) return rc;
      return errno_result(::utimensat(t.dir.get(), t.name.c_str(), ts, AT_SYMLINK_NOFOLLOW));
    }
  }
  if (on_fd) {
    auto f = p.fds.get(dirfd);
    if (!f) return -EBADF;
    if (int rc = deny_unless_writable(p, *f)) return rc;
    return errno_result(::futimens(f->host_fd, ts));
  }
  Target t;
  if (int rc = open_target_at(p, dirfd, upath, Access::Write, !(flags & AT_SYMLINK_NOFOLLOW), t)) return rc;
  return errno_result(::utimensat(t.dir.get(), t.name.c_str(), ts, AT_SYMLINK_NOFOLLOW));
}

KVMS_SYSCALL(ftruncate) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (static_cast<int64_t>(a.a[1]) < 0) return -EINVAL;
  uint64_t nothing = 0;  // a size change allocates nothing; what the file holds afterwards is settled
  WriteQuota quota(p, *f, nothing);
  return errno_result(::ftruncate(f->host_fd, static_cast<off_t>(a.a[1])));  // the host checks O_WRONLY/O_RDWR
}

KVMS_SYSCALL(truncate) {
  if (static_cast<int64_t>(a.a[1]) < 0) return -EINVAL;
  auto gp = p.guest_path(AT_FDCWD, a.a[0]);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  PathPolicy::Resolved r;
  if (int rc = fileops::resolve(p, std::get<std::string>(gp), Access::Write, true, r)) return rc;
  const int fd = fileops::open_host(r.host_path, O_WRONLY | O_NONBLOCK, 0);
  if (fd < 0) return fd;
  HostFd file(fd);
  const int64_t rc = errno_result(::ftruncate(fd, static_cast<off_t>(a.a[1])));
  if (rc == 0) tmp_file_changed(p, r.guest_path, fd);
  return rc;
}

KVMS_SYSCALL(fsync) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  return f ? errno_result(::fsync(f->host_fd)) : -EBADF;
}

KVMS_SYSCALL(fdatasync) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  return f ? errno_result(::fdatasync(f->host_fd)) : -EBADF;
}

KVMS_SYSCALL(fchmod) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (f->status_flags & O_PATH) return -EBADF;
  if (int rc = deny_unless_writable(p, *f)) return rc;
  return errno_result(::fchmod(f->host_fd, static_cast<mode_t>(a.a[1]) & 07777));
}

KVMS_SYSCALL(fchmodat) { return do_chmod(p, static_cast<int>(a.a[0]), a.a[1], a.a[2]); }
KVMS_SYSCALL(chmod) { return do_chmod(p, AT_FDCWD, a.a[0], a.a[1]); }

KVMS_SYSCALL(fchown) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  if (f->status_flags & O_PATH) return -EBADF;
  if (int rc = deny_unless_writable(p, *f)) return rc;
  return errno_result(::fchown(f->host_fd, host_owner(p, a.a[1]), host_group(p, a.a[2])));
}
KVMS_SYSCALL(chown) { return do_chown(p, AT_FDCWD, a.a[0], a.a[1], a.a[2], 0); }
KVMS_SYSCALL(lchown) { return do_chown(p, AT_FDCWD, a.a[0], a.a[1], a.a[2], AT_SYMLINK_NOFOLLOW); }
KVMS_SYSCALL(fchownat) { return do_chown(p, static_cast<int>(a.a[0]), a.a[1], a.a[2], a.a[3], static_cast<int>(a.a[4])); }

KVMS_SYSCALL(statfs) {
  auto gp = p.guest_path(AT_FDCWD, a.a[0]);
  if (auto* err = std::get_if<int>(&gp)) return *err;
  return statfs_of(p, std::get<std::string>(gp), a.a[1]);
}

KVMS_SYSCALL(fstatfs) {
  auto f = p.fds.get(static_cast<int>(a.a[0]));
  if (!f) return -EBADF;
  struct statfs st;
  if (::fstatfs(f->host_fd, &st) < 0) return -errno;
  return put(p, a.a[1], st);
}

}  // namespace kvms::linux

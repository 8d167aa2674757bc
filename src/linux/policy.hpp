#pragma once
// The path permission policy: which host files the guest may reach, and under which host path.
//
// The guest sees the host's file system at the same paths, filtered by grants, plus volumes
// (--volume=HOST:GUEST[:rw] makes host directory HOST appear at guest path GUEST, shadowing whatever
// the host has there). Nothing is reachable unless granted.
//
// The guest's view ("visible" paths) is: everything inside a grant (either the granted path as
// written or its canonical form), every ancestor directory of a grant or of a volume mount point
// (so they can be walked through, not opened), and everything inside a volume. A path component
// outside the view is EACCES before the host is even asked, so the guest cannot probe the host's
// tree: not with `..`, not with symlinks it plants itself.
//
// Resolution (resolve()) walks the guest path one component at a time in *guest* space, like the
// kernel's path walk: every component is lstat'ed on the host (through the volume mapping), symlinks
// are expanded by hand relative to the guest view (absolute targets restart at the guest root,
// relative ones at the symlink's directory; at most 40 expansions, then -ELOOP), and `..` is applied
// to the canonical path walked so far (i.e. after symlink expansion, like the kernel; `..` at a
// volume root leaves the volume). Only the fully canonical result is checked against the grants.
//
// /proc, /sys and /dev are not the host's: kvmserver makes them up from the guest's own state
// (procfs.hpp), and no path in them ever reaches the host, whatever is granted. The walk answers
// -ENOENT as soon as it enters one of them (also through a symlink found on the host, e.g.
// /etc/mtab -> ../proc/self/mounts); the callers look such paths up in procfs first. A grant or
// volume naming them is refused (grant_refusal()), except grants of the devices in
// grantable_devices(); allow_all, read_all, write_all and a grant of "/" do not cover them either.
// Beyond those trees, a path that crosses into a procfs or sysfs mounted elsewhere (a granted
// chroot's /proc, say) is -EACCES, and so is a device node found under a grant: the guest reaches
// host devices only through procfs's /dev.
//
// The returned host path is canonical (no symlinks, no `.`/`..`); callers must open it without
// following symlinks again (openat2 RESOLVE_NO_SYMLINKS, or O_NOFOLLOW for the last component plus
// a component-wise check), so that a host process swapping a directory for a symlink between
// resolve() and open() yields ELOOP rather than an escape.
//
// PathPolicy is immutable after construction; resolve() and suggestion() are thread-safe.
#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

// GNU C++ modes (-std=gnu++20) predefine `linux` as 1, which would break `namespace kvms::linux`.
// The build uses ISO mode; this guard keeps the header usable from a gnu++ translation unit too.
#ifdef linux
#undef linux
#endif

namespace kvms::linux {

enum class Access { Read, Write };

// --volume=HOST:GUEST[:rw]. Both absolute. HOST must exist when the policy is built.
struct Volume {
  std::string host;
  std::string guest;
  bool writable = false;
  bool operator==(const Volume&) const = default;
};

struct PolicyConfig {
  bool allow_all = false;  // -A: read and write everything (except /proc, /sys, /dev: see above)
  bool read_all = false;   // bare --allow-read
  bool write_all = false;  // bare --allow-write (implies read_all)
  std::vector<std::string> read, write;  // absolute host paths; a directory grant covers its subtree
  std::vector<Volume> volumes;
  std::vector<std::string> always_readable;  // read-only grants added by us: program binary, etc.
};

class PathPolicy {
 public:
  // Canonicalizes every grant and volume once (realpath of the longest existing prefix, the rest
  // appended lexically, so a grant of a not-yet-existing path works). Throws std::invalid_argument
  // for a relative grant/volume path, a volume whose host path does not exist, or a grant or volume
  // that grant_refusal() refuses (always_readable entries in those trees are ignored).
  explicit PathPolicy(PolicyConfig config);

  struct Resolved {
    std::string host_path;   // canonical host path to open (no symlinks unless !follow_last)
    std::string guest_path;  // canonical guest path (differs from host_path inside volumes)
    bool writable = false;   // whether Access::Write would be granted for this path
    bool exists = true;      // false: the last component does not exist (create it)
  };

  // guest_path must be absolute (callers join with the guest cwd first: join_guest_path).
  // On success the host path to open; on failure a negative errno:
  //   -EACCES: denied, or a component outside the guest's view (even if it does not exist);
  //   -ENOENT: also any path that enters /proc, /sys or /dev (procfs answers for those);
  //   -ENOENT/-ENOTDIR/-ELOOP/-ENAMETOOLONG...: resolution errors, only for visible components;
  //   -EINVAL: relative path or embedded NUL; -ENOENT: empty path.
  // follow_last: whether a symlink as the last component is followed (open, stat) or not (lstat,
  // readlink, unlink, O_NOFOLLOW). A trailing slash always follows and requires a directory.
  // The last component need not exist (exists=false): create/mkdir/symlink then need its parent
  // resolved and the (nonexistent) path granted, which is what this checks. Opening it without
  // O_CREAT simply fails with ENOENT on the host.
  std::variant<Resolved, int> resolve(std::string_view guest_path, Access access,
                                      bool follow_last = true) const;

  // The flag that would allow the access, for the --verbose denial line, e.g.
  // "--allow-read=/etc/shadow" or "--volume=/data:/data:rw". Resolves the path without the grants
  // (host-side only, never shown to the guest); falls back to the lexically normalized path.
  std::string suggestion(std::string_view guest_path, Access access) const;

  // Whether the canonical guest path is inside the guest's view (see above). For filtering
  // directory listings of ancestor directories, if a caller wants to.
  bool visible(std::string_view canonical_guest_path) const;

  // Whether a grantable device (grantable_devices(), e.g. "/dev/tty") was granted for `access`.
  bool device_granted(std::string_view device, Access access) const;

  const PolicyConfig& config() const { return config_; }

 private:
  struct Grant {
    std::string path;       // as given (lexically normalized)
    std::string canonical;  // realpath'ed
    bool write = false;
  };
  struct Vol {
    std::string guest;  // canonicalized guest mount point
    std::string host;   // realpath'ed host directory
    bool writable = false;
  };
  enum class Mode { Checked, Unchecked };

  std::variant<Resolved, int> walk(std::string_view guest_path, Access access, bool follow_last,
                                   Mode mode) const;
  const Vol* volume_for(std::string_view guest) const;
  std::string to_host(std::string_view guest, const Vol* v) const;
  bool allowed(std::string_view guest, std::string_view host, const Vol* v, Access access,
               bool last_is_unfollowed_link) const;

  PolicyConfig config_;
  std::vector<Grant> grants_;
  std::vector<Vol> vols_;
  std::vector<std::pair<std::string, bool>> devices_;  // granted devices, writable or not
  dev_t root_dev_ = 0;  // st_dev of the host's "/": where the walk starts
};

// The trees kvmserver makes up (procfs.hpp): whether a lexically normalized absolute path is /proc,
// /sys or /dev, or beneath one of them.
bool is_made_up_path(std::string_view path);

// The devices a grant may name: /dev/tty (kvmserver's controlling terminal) must be granted; the
// emulated null, zero, full, random and urandom are always there, so granting them changes nothing.
const std::vector<std::string>& grantable_devices();
const std::vector<std::string>& emulated_devices();

// Why a grant or volume of this host path (absolute, lexically normalized) cannot be given, or ""
// when it can: the path, or what it resolves to on the host, is in /proc, /sys or /dev and is not a
// grantable device. One line, for the usage error that names the flag.
std::string grant_refusal(std::string_view path);
// The same for either side of a volume, which must be a directory outside those trees.
std::string volume_refusal(std::string_view path);

// What every program may read without a flag (README "Libraries"): the system library directories,
// where a dynamically linked program's loader and libraries live, and the loader's cache. Callers add
// them to PolicyConfig::always_readable (with the program and its interpreter).
const std::vector<std::string>& system_library_paths();

// Lexical join of a guest cwd and a path: an absolute path is returned as is, a relative one is
// appended to cwd with a '/'. `.` and `..` are kept for resolve() (which must apply `..` after
// symlink expansion). An empty path stays empty (resolve() fails it with -ENOENT; callers handle
// AT_EMPTY_PATH before).
std::string join_guest_path(std::string_view cwd, std::string_view path);

// The non-empty components of a path ("/a//b/" -> {"a", "b"}); "." and ".." are kept.
std::vector<std::string> path_components(std::string_view path);

// Lexical normalization of an absolute path: collapses `//`, drops `.`, applies `..` textually
// (never above "/"), no trailing slash. Not a substitute for resolve(): only for display and for
// normalizing configuration paths.
std::string normalize_path(std::string_view path);

}  // namespace kvms::linux

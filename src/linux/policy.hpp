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
// /proc and /sys are outside the view unless a grant names them (or something beneath them)
// explicitly: allow_all, read_all, write_all and a grant of "/" do not cover them. Even then, the
// per-process magic links and their like are always denied: /proc/<pid|self|thread-self>/
// [task/<tid>/]{root,cwd,exe,fd,map_files,ns,mem}, and any symlink found on a procfs mount whose
// target is absolute or of the "type:[inode]" form (magic links), wherever procfs is mounted.
//
// The returned host path is canonical (no symlinks, no `.`/`..`); callers must open it without
// following symlinks again (openat2 RESOLVE_NO_SYMLINKS, or O_NOFOLLOW for the last component plus
// a component-wise check), so that a host process swapping a directory for a symlink between
// resolve() and open() yields ELOOP rather than an escape.
//
// PathPolicy is immutable after construction; resolve() and suggestion() are thread-safe.
#include <string>
#include <string_view>
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
  bool allow_all = false;  // -A: read and write everything (except /proc, /sys: see above)
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
  // for a relative grant/volume path, or a volume whose host path does not exist.
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
  //   -ENOENT/-ENOTDIR/-ELOOP/-ENAMETOOLONG...: resolution errors, only for visible components;
  //   -EINVAL: relative path or embedded NUL; -ENOENT: empty path.
  // follow_last: whether a symlink as the last component is followed (open, stat) or not (lstat,
  // readlink, unlink, O_NOFOLLOW). A trailing slash always follows and requires a directory.
  // The last component need not exist (exists=false): create/mkdir/symlink then need its parent
  // resolved and the (nonexistent) path granted, which is what this checks. Opening it without
  // O_CREAT simply fails with ENOENT on the host.
  std::variant<Resolved, int> resolve(std::string_view guest_path, Access access,
                                      bool follow_last = true) const;

  // Like resolve(), but only the view is checked, not the grants: for the directories above a grant,
  // which the guest may walk through and stat (their metadata is all they show) but not open. Every
  // component, including what symlinks lead to, must be visible; the result is canonical.
  std::variant<Resolved, int> resolve_visible(std::string_view guest_path, bool follow_last = true) const;

  // The flag that would allow the access, for the --verbose denial line, e.g.
  // "--allow-read=/etc/shadow" or "--volume=/data:/data:rw". Resolves the path without the grants
  // (host-side only, never shown to the guest); falls back to the lexically normalized path.
  std::string suggestion(std::string_view guest_path, Access access) const;

  // Whether the canonical guest path is inside the guest's view (see above). For filtering
  // directory listings of ancestor directories, if a caller wants to.
  bool visible(std::string_view canonical_guest_path) const;

  const PolicyConfig& config() const { return config_; }

 private:
  struct Grant {
    std::string path;       // as given (lexically normalized)
    std::string canonical;  // realpath'ed
    bool write = false;
    bool special = false;   // canonical (or as given) inside /proc or /sys
  };
  struct Vol {
    std::string guest;  // canonicalized guest mount point
    std::string host;   // realpath'ed host directory
    bool writable = false;
  };
  // Checked: every component visible and the result granted; Visible: every component visible
  // (no grant needed); Unchecked: neither (suggestion()).
  enum class Mode { Checked, Visible, Unchecked };

  std::variant<Resolved, int> walk(std::string_view guest_path, Access access, bool follow_last,
                                   Mode mode) const;
  const Vol* volume_for(std::string_view guest) const;
  std::string to_host(std::string_view guest, const Vol* v) const;
  bool allowed(std::string_view guest, std::string_view host, const Vol* v, Access access,
               bool last_is_unfollowed_link) const;

  PolicyConfig config_;
  std::vector<Grant> grants_;
  std::vector<Vol> vols_;
};

// What every program may read without a flag (README "Libraries"): the system library directories,
// where a dynamically linked program's loader and libraries live, and the loader's cache. Callers add
// them to PolicyConfig::always_readable (with the program and its interpreter).
const std::vector<std::string>& system_library_paths();

// Lexical join of a guest cwd and a path: an absolute path is returned as is, a relative one is
// appended to cwd with a '/'. `.` and `..` are kept for resolve() (which must apply `..` after
// symlink expansion). An empty path stays empty (resolve() fails it with -ENOENT; callers handle
// AT_EMPTY_PATH before).
std::string join_guest_path(std::string_view cwd, std::string_view path);

// Lexical normalization of an absolute path: collapses `//`, drops `.`, applies `..` textually
// (never above "/"), no trailing slash. Not a substitute for resolve(): only for display and for
// normalizing configuration paths.
std::string normalize_path(std::string_view path);

}  // namespace kvms::linux

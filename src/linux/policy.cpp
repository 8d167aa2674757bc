#include "linux/policy.hpp"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <stdexcept>

namespace kvms::linux {

namespace {

constexpr long kProcSuperMagic = 0x9fa0;   // PROC_SUPER_MAGIC from <linux/magic.h>
constexpr long kSysfsMagic = 0x62656572;  // SYSFS_MAGIC
constexpr int kMaxSymlinks = 40;          // MAXSYMLINKS
constexpr size_t kPathMax = PATH_MAX;     // 4096, including the NUL

// Whether `path` is `prefix` or beneath it. Both absolute and normalized.
bool within(std::string_view path, std::string_view prefix) {
  if (prefix == "/") return !path.empty() && path[0] == '/';
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

bool is_tree_root(std::string_view path) { return path == "/proc" || path == "/sys" || path == "/dev"; }

std::string join(const std::vector<std::string>& comps) {
  if (comps.empty()) return "/";
  std::string s;
  for (auto& c : comps) {
    s += '/';
    s += c;
  }
  return s;
}

// realpath() of the longest existing prefix of an absolute, normalized path; the rest appended.
std::string canonicalize(const std::string& path) {
  std::string head = path;
  std::string tail;
  for (;;) {
    if (char* r = ::realpath(head.c_str(), nullptr)) {
      std::string out = r;
      ::free(r);
      if (tail.empty()) return out;
      return out == "/" ? tail : out + tail;
    }
    if (head == "/") return path;  // cannot happen unless / is unreadable
    auto pos = head.rfind('/');
    tail = head.substr(pos) + tail;
    head = pos == 0 ? "/" : head.substr(0, pos);
  }
}

std::string require_absolute(const std::string& p, const char* what) {
  if (p.empty() || p[0] != '/') throw std::invalid_argument(std::string(what) + " must be an absolute path: " + p);
  if (p.find('\0') != std::string::npos) throw std::invalid_argument(std::string(what) + " contains a NUL byte");
  return normalize_path(p);
}

}  // namespace

const std::vector<std::string>& system_library_paths() {
  static const std::vector<std::string> paths = {"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
                                                 "/etc/ld.so.cache"};
  return paths;
}

bool is_made_up_path(std::string_view path) {
  return within(path, "/proc") || within(path, "/sys") || within(path, "/dev");
}

const std::vector<std::string>& grantable_devices() {
  static const std::vector<std::string> devices = {"/dev/tty"};
  return devices;
}

const std::vector<std::string>& emulated_devices() {
  static const std::vector<std::string> devices = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                                    "/dev/urandom"};
  return devices;
}

std::string grant_refusal(std::string_view path) {
  auto listed = [](const std::vector<std::string>& list, std::string_view p) {
    return std::find(list.begin(), list.end(), p) != list.end();
  };
  if (listed(grantable_devices(), path) || listed(emulated_devices(), path)) return "";
  auto why = [](std::string_view p) -> std::string {
    if (within(p, "/dev"))
      return "the guest's /dev holds only the devices kvmserver emulates (null, zero, full, random, urandom; "
             "tty when granted as --allow-read=/dev/tty or --allow-write=/dev/tty)";
    return "the guest's /proc and /sys are made up by kvmserver from the guest's own state and need no grant";
  };
  if (is_made_up_path(path)) return std::string(path) + ": " + why(path);
  const std::string canonical = canonicalize(std::string(path));
  if (is_made_up_path(canonical))  // even /dev/tty: the guest names a device by its /dev path
    return std::string(path) + " is " + canonical + " on this host: " + why(canonical);
  return "";
}

std::string volume_refusal(std::string_view path) {
  std::string why = grant_refusal(path);
  if (why.empty() && is_made_up_path(path))
    why = std::string(path) + ": a volume must be a directory outside /proc, /sys and /dev";
  return why;
}

std::vector<std::string> path_components(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = i;
    while (j < path.size() && path[j] != '/') ++j;
    if (j > i) out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string normalize_path(std::string_view path) {
  bool abs = !path.empty() && path[0] == '/';
  std::vector<std::string> out;
  for (auto c : path_components(path)) {
    if (c == ".") continue;
    if (c == "..") {
      if (!out.empty() && out.back() != "..") {
        out.pop_back();
      } else if (!abs) {
        out.emplace_back("..");
      }
      continue;
    }
    out.emplace_back(c);
  }
  if (abs) return join(out);
  std::string s;
  for (auto& c : out) {
    if (!s.empty()) s += '/';
    s += c;
  }
  return s.empty() ? "." : s;
}

std::string join_guest_path(std::string_view cwd, std::string_view path) {
  if (path.empty() || path[0] == '/') return std::string(path);
  std::string s(cwd);
  if (s.empty() || s.back() != '/') s += '/';
  s += path;
  return s;
}

PathPolicy::PathPolicy(PolicyConfig config) : config_(std::move(config)) {
  auto add = [&](const std::string& p, bool write, const char* what, bool ours) {
    Grant g;
    g.path = require_absolute(p, what);
    if (const std::string refusal = grant_refusal(g.path); !refusal.empty()) {
      if (ours) return;  // a program path in those trees is loaded by its host path, never granted
      throw std::invalid_argument(refusal);
    }
    if (is_made_up_path(g.path)) {  // a device: grantable (kept), or emulated (always there)
      if (std::find(grantable_devices().begin(), grantable_devices().end(), g.path) != grantable_devices().end())
        devices_.emplace_back(g.path, write);
      return;
    }
    g.canonical = canonicalize(g.path);
    g.write = write;
    grants_.push_back(std::move(g));
  };
  for (auto& p : config_.write) add(p, true, "--allow-write path", false);
  for (auto& p : config_.read) add(p, false, "--allow-read path", false);
  for (auto& p : config_.always_readable) add(p, false, "readable path", true);
  for (auto& v : config_.volumes) {
    Vol vol;
    std::string host = require_absolute(v.host, "volume host path");
    const std::string guest = require_absolute(v.guest, "volume guest path");
    for (const std::string& side : {host, guest})
      if (std::string refusal = volume_refusal(side); !refusal.empty()) throw std::invalid_argument(refusal);
    char* r = ::realpath(host.c_str(), nullptr);
    if (!r) throw std::invalid_argument("volume host path does not exist: " + v.host);
    vol.host = r;
    ::free(r);
    vol.guest = canonicalize(guest);
    if (std::string refusal = volume_refusal(vol.guest); !refusal.empty()) throw std::invalid_argument(refusal);
    vol.writable = v.writable;
    vols_.push_back(std::move(vol));
  }
  // Longest guest mount point first, so that volume_for() finds the innermost volume.
  std::stable_sort(vols_.begin(), vols_.end(),
                   [](const Vol& a, const Vol& b) { return a.guest.size() > b.guest.size(); });
  struct stat root;
  if (::stat("/", &root) == 0) root_dev_ = root.st_dev;
}

bool PathPolicy::device_granted(std::string_view device, Access access) const {
  return std::any_of(devices_.begin(), devices_.end(), [&](const auto& d) {
    return d.first == device && (access == Access::Read || d.second);
  });
}

const PathPolicy::Vol* PathPolicy::volume_for(std::string_view guest) const {
  for (auto& v : vols_)
    if (within(guest, v.guest)) return &v;
  return nullptr;
}

std::string PathPolicy::to_host(std::string_view guest, const Vol* v) const {
  if (!v) return std::string(guest);
  std::string_view rest = guest.substr(v->guest == "/" ? 0 : v->guest.size());
  if (rest.empty()) return v->host;
  return v->host == "/" ? std::string(rest) : v->host + std::string(rest);
}

bool PathPolicy::visible(std::string_view g) const {
  if (is_made_up_path(g)) return false;  // procfs's business, never the host's
  for (auto& v : vols_)
    if (within(g, v.guest) || within(v.guest, g)) return true;
  if (config_.allow_all || config_.read_all || config_.write_all) return true;
  for (auto& gr : grants_) {
    if (within(gr.path, g) || within(gr.canonical, g)) return true;  // an ancestor of a grant
    if (within(g, gr.path) || within(g, gr.canonical)) return true;
  }
  return false;
}

bool PathPolicy::allowed(std::string_view g, std::string_view host, const Vol* v, Access access,
                         bool last_is_unfollowed_link) const {
  if (is_made_up_path(g)) return false;
  if (v) return access == Access::Read || v->writable;
  if (config_.allow_all || config_.write_all) return true;
  if (access == Access::Read && config_.read_all) return true;
  for (auto& gr : grants_) {
    bool covers = within(g, gr.canonical) || (last_is_unfollowed_link && g == gr.path);
    if (covers && (access == Access::Read || gr.write)) return true;
  }
  return false;
}

std::variant<PathPolicy::Resolved, int> PathPolicy::resolve(std::string_view guest_path,
                                                            Access access, bool follow_last) const {
  return walk(guest_path, access, follow_last, Mode::Checked);
}

std::variant<PathPolicy::Resolved, int> PathPolicy::walk(std::string_view guest_path, Access access,
                                                         bool follow_last, Mode mode) const {
  const bool checked = mode == Mode::Checked;
  if (guest_path.empty()) return -ENOENT;
  if (guest_path[0] != '/' || guest_path.find('\0') != std::string_view::npos) return -EINVAL;
  if (guest_path.size() >= kPathMax) return -ENAMETOOLONG;

  // Components still to walk, next one at the back.
  std::vector<std::string> todo = path_components(guest_path);
  std::reverse(todo.begin(), todo.end());
  const bool must_be_dir = guest_path.size() > 1 && guest_path.back() == '/';
  if (must_be_dir) follow_last = true;

  std::vector<std::string> cur;  // canonical guest path walked so far: existing directories
  int links = 0;
  bool exists = true;
  bool last_is_link = false;
  bool device_node = false;
  dev_t checked_dev = root_dev_;  // a file system already known not to be procfs or sysfs
  while (!todo.empty()) {
    std::string c = std::move(todo.back());
    todo.pop_back();
    const bool last = todo.empty();
    if (c == ".") continue;  // cur is always a directory
    if (c == "..") {
      if (!cur.empty()) cur.pop_back();
      continue;
    }
    if (c.size() > NAME_MAX) return -ENAMETOOLONG;
    cur.push_back(std::move(c));
    const std::string g = join(cur);
    if (is_made_up_path(g)) {
      if (is_tree_root(g) && !last) continue;  // walked through, e.g. for `/dev/../etc`
      return -ENOENT;  // procfs's (callers look there first), never the host's
    }
    if (checked && !visible(g)) return -EACCES;
    const Vol* v = volume_for(g);
    const std::string h = to_host(g, v);

    struct stat st;
    if (::lstat(h.c_str(), &st) != 0) {
      int err = errno;
      if (err == ENOENT) {
        bool virtual_dir = std::any_of(vols_.begin(), vols_.end(), [&](const Vol& vol) {
          return within(vol.guest, g) && vol.guest != g;
        });
        if (virtual_dir && !last) continue;  // an absent mount point's ancestor: walk through
        if (last) {
          exists = false;
          break;
        }
      }
      return -err;
    }
    // Crossing into another file system: never into a procfs or sysfs (the host's, mounted inside a
    // grant), whose files are the host's processes and kernel.
    if (st.st_dev != checked_dev) {
      struct statfs fs;
      if (::statfs(h.c_str(), &fs) != 0) return -errno;
      const long type = static_cast<long>(fs.f_type);
      if (type == kProcSuperMagic || type == kSysfsMagic) return -EACCES;
      checked_dev = st.st_dev;
    }
    if (S_ISLNK(st.st_mode) && (!last || follow_last)) {
      if (++links > kMaxSymlinks) return -ELOOP;
      std::string target(kPathMax, '\0');
      ssize_t n = ::readlink(h.c_str(), target.data(), target.size());
      if (n < 0) return -errno;
      if (static_cast<size_t>(n) >= target.size()) return -ENAMETOOLONG;
      target.resize(static_cast<size_t>(n));
      if (target.empty()) return -ENOENT;
      cur.pop_back();  // the link itself is replaced by its target
      if (target[0] == '/') cur.clear();
      auto parts = path_components(target);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo.emplace_back(*it);
      continue;
    }
    if (last) {
      last_is_link = S_ISLNK(st.st_mode);
      device_node = S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode);
      if (must_be_dir && !S_ISDIR(st.st_mode)) return -ENOTDIR;
      break;
    }
    if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
  }

  Resolved r;
  r.guest_path = join(cur);
  const Vol* v = volume_for(r.guest_path);
  r.host_path = to_host(r.guest_path, v);
  r.exists = exists;
  if (r.guest_path.size() >= kPathMax) return -ENAMETOOLONG;
  if (is_made_up_path(r.guest_path)) return -ENOENT;  // "/dev/.." ends at "/"; "/dev" alone is procfs's
  if (device_node) return -EACCES;  // host devices only through procfs's /dev
  if (checked) {
    if (!allowed(r.guest_path, r.host_path, v, access, last_is_link)) return -EACCES;
    r.writable = access == Access::Write || allowed(r.guest_path, r.host_path, v, Access::Write, last_is_link);
  }
  return r;
}

std::string PathPolicy::suggestion(std::string_view guest_path, Access access) const {
  std::string p;
  auto r = walk(guest_path, access, true, Mode::Unchecked);
  if (auto* ok = std::get_if<Resolved>(&r)) {
    p = ok->guest_path;
  } else if (!guest_path.empty() && guest_path[0] == '/') {
    p = normalize_path(guest_path);
  } else {
    p = std::string(guest_path);
  }
  if (access == Access::Write) {
    for (size_t i = 0; i < vols_.size(); ++i) {
      if (!within(p, vols_[i].guest)) continue;
      // Report the volume as the user wrote it.
      for (auto& cv : config_.volumes) {
        if (canonicalize(normalize_path(cv.guest)) == vols_[i].guest)
          return "--volume=" + cv.host + ":" + cv.guest + ":rw";
      }
      return "--volume=" + vols_[i].host + ":" + vols_[i].guest + ":rw";
    }
    return "--allow-write=" + p;
  }
  return "--allow-read=" + p;
}

}  // namespace kvms::linux

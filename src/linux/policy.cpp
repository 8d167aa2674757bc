#include "linux/policy.hpp"

#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <stdexcept>

namespace kvms::linux {

namespace {

constexpr long kProcSuperMagic = 0x9fa0;  // PROC_SUPER_MAGIC from <linux/magic.h>
constexpr int kMaxSymlinks = 40;          // MAXSYMLINKS
constexpr size_t kPathMax = PATH_MAX;     // 4096, including the NUL

// Whether `path` is `prefix` or beneath it. Both absolute and normalized.
bool within(std::string_view path, std::string_view prefix) {
  if (prefix == "/") return !path.empty() && path[0] == '/';
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

bool in_special_area(std::string_view path) { return within(path, "/proc") || within(path, "/sys"); }

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = i;
    while (j < path.size() && path[j] != '/') ++j;
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string join(const std::vector<std::string>& comps) {
  if (comps.empty()) return "/";
  std::string s;
  for (auto& c : comps) {
    s += '/';
    s += c;
  }
  return s;
}

std::string parent_of(std::string_view path) {
  auto pos = path.rfind('/');
  if (pos == 0 || pos == std::string_view::npos) return "/";
  return std::string(path.substr(0, pos));
}

bool is_number(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// /proc/<pid|self|thread-self>/[task/<tid>/]{root,cwd,exe,fd,map_files,ns,mem}[/...]: the host
// process's magic links (and its memory). Never reachable, whatever the grants.
bool is_proc_magic(std::string_view host) {
  if (!within(host, "/proc")) return false;
  auto c = split(host);
  if (c.size() < 3) return false;
  if (!(is_number(c[1]) || c[1] == "self" || c[1] == "thread-self")) return false;
  size_t i = 2;
  if (c[i] == "task") {
    if (c.size() < 5) return false;
    i = 4;
  }
  static constexpr std::array<std::string_view, 7> kDenied = {"root", "cwd", "exe", "fd",
                                                              "map_files", "ns", "mem"};
  return std::find(kDenied.begin(), kDenied.end(), c[i]) != kDenied.end();
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

std::string normalize_path(std::string_view path) {
  bool abs = !path.empty() && path[0] == '/';
  std::vector<std::string> out;
  for (auto c : split(path)) {
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
  auto add = [&](const std::string& p, bool write, const char* what) {
    Grant g;
    g.path = require_absolute(p, what);
    g.canonical = canonicalize(g.path);
    g.write = write;
    g.special = in_special_area(g.path) || in_special_area(g.canonical);
    grants_.push_back(std::move(g));
  };
  for (auto& p : config_.write) add(p, true, "--allow-write path");
  for (auto& p : config_.read) add(p, false, "--allow-read path");
  for (auto& p : config_.always_readable) add(p, false, "readable path");
  for (auto& v : config_.volumes) {
    Vol vol;
    std::string host = require_absolute(v.host, "volume host path");
    char* r = ::realpath(host.c_str(), nullptr);
    if (!r) throw std::invalid_argument("volume host path does not exist: " + v.host);
    vol.host = r;
    ::free(r);
    vol.guest = canonicalize(require_absolute(v.guest, "volume guest path"));
    vol.writable = v.writable;
    vols_.push_back(std::move(vol));
  }
  // Longest guest mount point first, so that volume_for() finds the innermost volume.
  std::stable_sort(vols_.begin(), vols_.end(),
                   [](const Vol& a, const Vol& b) { return a.guest.size() > b.guest.size(); });
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
  for (auto& v : vols_)
    if (within(g, v.guest) || within(v.guest, g)) return true;
  bool special = in_special_area(g);
  if (!special && (config_.allow_all || config_.read_all || config_.write_all)) return true;
  for (auto& gr : grants_) {
    if (within(gr.path, g) || within(gr.canonical, g)) return true;  // an ancestor of a grant
    if (special && !gr.special) continue;
    if (within(g, gr.path) || within(g, gr.canonical)) return true;
  }
  return false;
}

bool PathPolicy::allowed(std::string_view g, std::string_view host, const Vol* v, Access access,
                         bool last_is_unfollowed_link) const {
  if (is_proc_magic(host)) return false;
  if (v) return access == Access::Read || v->writable;
  bool special = in_special_area(g);
  if (!special) {
    if (config_.allow_all || config_.write_all) return true;
    if (access == Access::Read && config_.read_all) return true;
  }
  for (auto& gr : grants_) {
    if (special && !gr.special) continue;
    bool covers = within(g, gr.canonical) || (last_is_unfollowed_link && g == gr.path);
    if (covers && (access == Access::Read || gr.write)) return true;
  }
  return false;
}

std::variant<PathPolicy::Resolved, int> PathPolicy::resolve(std::string_view guest_path,
                                                            Access access, bool follow_last) const {
  return walk(guest_path, access, follow_last, Mode::Checked);
}

std::variant<PathPolicy::Resolved, int> PathPolicy::resolve_visible(std::string_view guest_path, bool follow_last) const {
  return walk(guest_path, Access::Read, follow_last, Mode::Visible);
}

std::variant<PathPolicy::Resolved, int> PathPolicy::walk(std::string_view guest_path, Access access,
                                                         bool follow_last, Mode mode) const {
  const bool checked = mode != Mode::Unchecked;  // the view, component by component
  if (guest_path.empty()) return -ENOENT;
  if (guest_path[0] != '/' || guest_path.find('\0') != std::string_view::npos) return -EINVAL;
  if (guest_path.size() >= kPathMax) return -ENAMETOOLONG;

  // Components still to walk, next one at the back.
  std::vector<std::string> todo;
  for (auto c : split(guest_path)) todo.emplace_back(c);
  std::reverse(todo.begin(), todo.end());
  const bool must_be_dir = guest_path.size() > 1 && guest_path.back() == '/';
  if (must_be_dir) follow_last = true;

  std::vector<std::string> cur;  // canonical guest path walked so far: existing directories
  int links = 0;
  bool exists = true;
  bool last_is_link = false;
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
    if (checked && !visible(g)) return -EACCES;
    const Vol* v = volume_for(g);
    const std::string h = to_host(g, v);
    if (is_proc_magic(h)) return -EACCES;

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
    if (S_ISLNK(st.st_mode) && (!last || follow_last)) {
      if (++links > kMaxSymlinks) return -ELOOP;
      std::string target(kPathMax, '\0');
      ssize_t n = ::readlink(h.c_str(), target.data(), target.size());
      if (n < 0) return -errno;
      if (static_cast<size_t>(n) >= target.size()) return -ENAMETOOLONG;
      target.resize(static_cast<size_t>(n));
      if (target.empty()) return -ENOENT;
      // A symlink on procfs with an absolute or "type:[inode]" target is a magic link (root, cwd,
      // exe, fd/N, ...): its text is not where the kernel would take us. Deny wherever procfs is.
      struct statfs fs;
      if (::statfs(parent_of(h).c_str(), &fs) != 0) return -errno;
      if (static_cast<long>(fs.f_type) == kProcSuperMagic &&
          (target[0] == '/' || target.find(':') != std::string::npos))
        return -EACCES;
      cur.pop_back();  // the link itself is replaced by its target
      if (target[0] == '/') cur.clear();
      auto parts = split(target);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo.emplace_back(*it);
      continue;
    }
    if (last) {
      last_is_link = S_ISLNK(st.st_mode);
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
  if (mode == Mode::Checked) {
    if (!allowed(r.guest_path, r.host_path, v, access, last_is_link)) return -EACCES;
    r.writable = access == Access::Write || allowed(r.guest_path, r.host_path, v, Access::Write, last_is_link);
  } else {
    if (is_proc_magic(r.host_path)) return -EACCES;
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

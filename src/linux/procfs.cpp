// Made-up /proc and /sys files (see procfs.hpp). They describe the guest, not the host: the host's
// /proc stays out of reach (policy.hpp), and nothing here needs a grant. Only /proc/cpuinfo and the
// /sys CPU lists are the host's own text (the guest runs on those CPUs and sees them through CPUID
// anyway); /proc/meminfo is sized by --max-memory like sysinfo.
#include "linux/procfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include "kvm/layout.hpp"
#include "linux/policy.hpp"

namespace kvms::linux {

namespace fileops {  // file.cpp
int open_host(const std::string& host_path, int flags, mode_t mode);
}  // namespace fileops

namespace procfs {
namespace {

constexpr const char* kSharedAnonName = "/dev/zero (deleted)";  // mmap.cpp's MAP_SHARED|MAP_ANONYMOUS
constexpr dev_t kProcDev = 0x16;  // what stat reports as procfs's device
constexpr int kOLargefile = 0100000;

enum class Kind { None, File, Link, FdDir, ProcessDir };

struct Target {
  Kind kind = Kind::None;
  std::string name;  // File: the file's name under /proc/self ("maps") or its full path; Link: "exe", "cwd", "root", "fd"
  int fd = -1;       // Link "fd": which one
};

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream in(path);
  for (std::string c; std::getline(in, c, '/');)
    if (!c.empty()) out.push_back(c);
  return out;
}

bool parse_number(const std::string& s, int& out) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  out = std::stoi(s);
  return true;
}

// Host files whose text the guest sees as is.
bool is_host_passthrough(const std::string& path) {
  return path == "/proc/cpuinfo" || path == "/sys/devices/system/cpu/online" ||
         path == "/sys/devices/system/cpu/possible" || path == "/sys/devices/system/cpu/present";
}

Target classify(const Process& p, const std::string& path) {
  if (is_host_passthrough(path) || path == "/proc/meminfo") return {Kind::File, path};
  const auto c = split(path);
  if (c.size() < 2 || c[0] != "proc") return {};
  size_t i = 2;  // first component below the process directory
  int n = 0;
  if (c[1] == "thread-self") {
  } else if (c[1] == "self" || (parse_number(c[1], n) && n == p.pid)) {
    if (c.size() >= 4 && c[2] == "task") {  // /proc/self/task/<tid>/...
      if (!parse_number(c[3], n) || n != p.thread().tid) return {};
      i = 4;
    }
  } else {
    return {};
  }
  if (c.size() == i) return {Kind::ProcessDir, ""};
  const std::string& name = c[i];
  if (c.size() == i + 1) {
    if (name == "exe" || name == "cwd" || name == "root") return {Kind::Link, name};
    if (name == "fd") return {Kind::FdDir, name};
    static const char* kFiles[] = {"maps", "status", "stat", "statm", "cmdline", "comm"};
    for (const char* f : kFiles)
      if (name == f) return {Kind::File, name};
    return {};
  }
  if (c.size() == i + 2 && name == "fd" && parse_number(c[i + 1], n)) return {Kind::Link, "fd", n};
  return {};
}

std::string host_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return std::string(buf, n < 0 ? 0 : std::min<size_t>(size_t(n), sizeof buf - 1));
}

using ull = unsigned long long;

std::string maps(Process& p) {
  std::string out;
  const auto& mappings = p.mm().mappings();
  for (auto it = mappings.begin(); it != mappings.end();) {
    const uint64_t start = it->first;
    const kvm::Mapping& m = it->second;
    uint64_t end = m.end;
    // Pieces Linux would have merged into one VMA (adjacent, same permissions and name) show as one.
    for (++it; it != mappings.end() && it->first == end && it->second.prot == m.prot && it->second.name == m.name; ++it)
      end = it->second.end;
    const bool shared = m.name == kSharedAnonName;
    std::string line = format("%08llx-%08llx %c%c%c%c %08llx %02x:%02x %llu ", ull(start), ull(end),
                              (m.prot & kvm::kProtRead) ? 'r' : '-', (m.prot & kvm::kProtWrite) ? 'w' : '-',
                              (m.prot & kvm::kProtExec) ? 'x' : '-', shared ? 's' : 'p', 0ull, 0, 0, 0ull);
    const std::string name = m.name == "[elf]" ? "" : m.name;
    if (!name.empty()) {
      if (line.size() < 72) line.append(72 - line.size(), ' ');  // Linux's seq_pad to 25 + 6 * 8 - 1
      line += ' ';
      line += name;
    }
    out += line + '\n';
  }
  return out;
}

uint64_t resident_kb(Process& p) { return p.mm().memory().resident_pages() * (kvm::kPageSize / 1024); }

uint64_t cpu_ticks() {
  timespec cpu{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
  return uint64_t(cpu.tv_sec) * 100 + uint64_t(cpu.tv_nsec) / 10000000;
}

// Bit n-1 for each signal n whose disposition is ignore / a handler.
std::pair<uint64_t, uint64_t> ignored_and_caught(const Process& p) {
  uint64_t ign = 0, cgt = 0;
  for (size_t sig = 1; sig < p.sigactions.size(); ++sig) {
    const uint64_t h = p.sigactions[sig].handler;
    if (h == 1) ign |= 1ull << (sig - 1);
    else if (h > 1) cgt |= 1ull << (sig - 1);
  }
  return {ign, cgt};
}

std::string status(Process& p) {
  const uint64_t vm_kb = p.mm().mapped_bytes() / 1024, rss_kb = resident_kb(p);
  const uint64_t heap_kb = (kvm::page_up(p.brk_current) - p.brk_start) / 1024;
  const auto [ign, cgt] = ignored_and_caught(p);
  const int fd_size = std::max(64, (int(p.fds.fds().empty() ? 0 : p.fds.fds().back()) + 64) / 64 * 64);
  std::string s;
  s += format("Name:\t%s\nUmask:\t%04o\nState:\tR (running)\nTgid:\t%d\nNgid:\t0\nPid:\t%d\nPPid:\t%d\n", p.main_thread().comm,
              unsigned(p.umask), p.pid, p.pid, p.ppid);
  s += format("TracerPid:\t0\nUid:\t%u\t%u\t%u\t%u\nGid:\t%u\t%u\t%u\t%u\nFDSize:\t%d\nGroups:\t\n", p.uid, p.uid, p.uid,
              p.uid, p.gid, p.gid, p.gid, p.gid, fd_size);
  s += format("NStgid:\t%d\nNSpid:\t%d\nNSpgid:\t%d\nNSsid:\t%d\n", p.pid, p.pid, p.pid, p.pid);
  s += format("VmPeak:\t%8llu kB\nVmSize:\t%8llu kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n", ull(vm_kb), ull(vm_kb));
  s += format("VmHWM:\t%8llu kB\nVmRSS:\t%8llu kB\nRssAnon:\t%8llu kB\nRssFile:\t       0 kB\nRssShmem:\t       0 kB\n",
              ull(rss_kb), ull(rss_kb), ull(rss_kb));
  s += format("VmData:\t%8llu kB\nVmStk:\t%8llu kB\nVmExe:\t       0 kB\nVmLib:\t       0 kB\nVmPTE:\t       0 kB\n",
              ull(heap_kb), ull(p.stack_size / 1024));
  s += "VmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\nCoreDumping:\t0\nTHP_enabled:\t1\nThreads:\t" + std::to_string(p.threads.size()) + "\n";
  s += format("SigQ:\t0/%llu\nSigPnd:\t%016llx\nShdPnd:\t%016llx\nSigBlk:\t%016llx\nSigIgn:\t%016llx\nSigCgt:\t%016llx\n",
              ull(p.rlimits[RLIMIT_SIGPENDING].first), 0ull, 0ull, ull(p.thread().sigmask), ull(ign), ull(cgt));
  s += "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
       "CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\nSeccomp_filters:\t0\n"
       "Cpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed:\t1\nMems_allowed_list:\t0\n"
       "voluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n";
  return s;
}

std::string stat_line(Process& p) {
  const auto [ign, cgt] = ignored_and_caught(p);
  std::string s = format("%d (%s) R %d %d %d 0 -1 4194304 0 0 0 0 %llu 0 0 0 20 0 1 0 0 %llu %llu ", p.pid, p.main_thread().comm,
                         p.ppid, p.pid, p.pid, ull(cpu_ticks()), ull(p.mm().mapped_bytes()),
                         ull(resident_kb(p) / 4));
  s += format("%llu 0 0 %llu 0 0 0 %llu %llu %llu 0 0 0 17 0 0 0 0 0 0 0 0 %llu %llu %llu %llu %llu 0\n",
              ull(p.rlimits[RLIMIT_RSS].first), ull(p.stack_top), ull(p.thread().sigmask), ull(ign), ull(cgt),
              ull(p.brk_start), ull(p.arg_start), ull(p.arg_end), ull(p.arg_end), ull(p.arg_end));
  return s;
}

std::string statm(Process& p) {
  const uint64_t size = p.mm().mapped_bytes() / kvm::kPageSize, rss = resident_kb(p) / 4;
  const uint64_t data = (kvm::page_up(p.brk_current) - p.brk_start + p.stack_size) / kvm::kPageSize;
  return format("%llu %llu 0 0 0 %llu 0\n", ull(size), ull(rss), ull(data));
}

std::string cmdline(Process& p) {
  if (p.arg_end <= p.arg_start || p.arg_end - p.arg_start > (1u << 20)) return "";
  std::string s(p.arg_end - p.arg_start, '\0');
  if (!p.mm().copy_from_user(s.data(), p.arg_start, s.size())) return "";
  return s;
}

std::string meminfo(Process& p) {
  const uint64_t total = p.memory_limit() / 1024, used = p.tree_memory_used() / 1024;
  const uint64_t free = used < total ? total - used : 0;
  return format("MemTotal:       %8llu kB\nMemFree:        %8llu kB\nMemAvailable:   %8llu kB\n", ull(total), ull(free),
                ull(free)) +
         "Buffers:               0 kB\nCached:                0 kB\nSwapCached:            0 kB\n"
         "SwapTotal:             0 kB\nSwapFree:              0 kB\nShmem:                 0 kB\n";
}

// A read-only host file holding text: a sealed memfd reopened O_RDONLY, so the guest's writes fail
// with EBADF as on a file opened read-only.
int sealed_file(const std::string& text) {
  const int fd = ::memfd_create("kvmserver-proc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -errno;
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return -err;
    }
    done += size_t(n);
  }
  ::fchmod(fd, 0444);
  ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  const int ro = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDONLY | O_CLOEXEC);
  ::close(fd);
  return ro < 0 ? -errno : ro;
}

// A host fd for a made-up directory: an empty directory removed at once (nothing can be created in
// it, getdents64 never reaches it).
int empty_directory_fd() {
  char tmpl[] = "/tmp/kvmserver-procdir-XXXXXX";
  if (!::mkdtemp(tmpl)) return -errno;
  const int fd = ::open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int err = errno;
  ::rmdir(tmpl);
  return fd < 0 ? -err : fd;
}

// What /proc/self/exe names: the program's canonical path, as Linux resolves it at exec.
std::string exe_link(const Process& p) {
  char* real = ::realpath(p.exe_path.c_str(), nullptr);
  if (!real) return p.exe_path;
  std::string out = real;
  ::free(real);
  return out;
}

int status_flags_of(int flags) { return (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)) | kOLargefile; }

int64_t install(Process& p, int host_fd, OpenFile::Kind kind, const std::string& path, int flags) {
  auto file = std::make_shared<OpenFile>(host_fd, kind, path, status_flags_of(flags));
  return p.fds.install(std::move(file), flags & O_CLOEXEC);
}

void fill_stat(const Process& p, const std::string& path, mode_t mode, struct stat& st) {
  st = {};
  st.st_dev = kProcDev;
  st.st_ino = std::hash<std::string>{}(path) | 1;
  st.st_mode = mode;
  st.st_nlink = S_ISDIR(mode) ? 2 : 1;
  st.st_uid = p.uid;
  st.st_gid = p.gid;
  st.st_blksize = 1024;
  clock_gettime(CLOCK_REALTIME, &st.st_mtim);
  st.st_atim = st.st_ctim = st.st_mtim;
}

}  // namespace

std::optional<std::string> contents(Process& p, const std::string& path) {
  const Target t = classify(p, path);
  if (t.kind != Kind::File) return std::nullopt;
  if (is_host_passthrough(t.name)) return host_file(t.name);
  if (t.name == "/proc/meminfo") return meminfo(p);
  if (t.name == "maps") return maps(p);
  if (t.name == "status") return status(p);
  if (t.name == "stat") return stat_line(p);
  if (t.name == "statm") return statm(p);
  if (t.name == "cmdline") return cmdline(p);
  if (t.name == "comm") return std::string(p.main_thread().comm) + "\n";
  return std::nullopt;
}

std::optional<int64_t> open(Process& p, const std::string& path, int flags) {
  const Target t = classify(p, path);
  if (t.kind == Kind::None || t.kind == Kind::ProcessDir) return std::nullopt;
  const bool writing = (flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_APPEND)) != 0;
  if ((flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;
  if (t.kind == Kind::Link) {
    if (t.name == "exe") {
      if (writing) return -ETXTBSY;
      const std::string exe = exe_link(p);
      const int fd = fileops::open_host(exe, O_RDONLY | (flags & O_PATH), 0);
      return fd < 0 ? fd : install(p, fd, OpenFile::Kind::Regular, exe, flags);
    }
    if (t.name == "fd") {
      auto file = p.fds.get(t.fd);
      if (!file) return -ENOENT;
      return p.fds.install(std::move(file), flags & O_CLOEXEC);
    }
    return std::nullopt;  // cwd, root: the policy decides about the directory itself
  }
  if (t.kind == Kind::FdDir) {
    if (writing) return -EISDIR;
    const int host = empty_directory_fd();
    if (host < 0) return host;
    auto file = std::make_shared<OpenFile>(host, OpenFile::Kind::Directory, path, status_flags_of(flags));
    auto dir = file->synthetic_dir = std::make_shared<OpenFile::SyntheticDir>();
    const int64_t guest_fd = p.fds.install(std::move(file), flags & O_CLOEXEC);
    if (guest_fd < 0) return guest_fd;
    dir->entries.push_back({".", DT_DIR});
    dir->entries.push_back({"..", DT_DIR});
    for (int fd : p.fds.fds()) dir->entries.push_back({std::to_string(fd), DT_LNK});  // its own fd too, as Linux
    return guest_fd;
  }
  if (writing) return -EACCES;  // mode 0444
  if (flags & O_DIRECTORY) return -ENOTDIR;
  const auto text = contents(p, path);
  if (!text) return -ENOENT;
  const int fd = sealed_file(*text);
  if (fd < 0) return fd;
  return install(p, fd, OpenFile::Kind::Regular, path, flags);
}

std::optional<std::variant<std::string, int>> readlink(Process& p, const std::string& path) {
  if (path == "/proc/self") return std::to_string(p.pid);
  if (path == "/proc/thread-self") return std::to_string(p.pid) + "/task/" + std::to_string(p.thread().tid);
  const Target t = classify(p, path);
  switch (t.kind) {
    case Kind::None: return std::nullopt;
    case Kind::Link:
      if (t.name == "exe") return exe_link(p);
      if (t.name == "cwd") return p.cwd;
      if (t.name == "root") return std::string("/");
      if (auto f = p.fds.get(t.fd)) return f->path;
      return -ENOENT;
    default: return -EINVAL;  // not a symlink
  }
}

std::optional<int> stat(Process& p, const std::string& path, bool follow, struct stat& st) {
  if (path == "/proc/self" || path == "/proc/thread-self") {
    if (!follow) {
      fill_stat(p, path, S_IFLNK | 0777, st);
      return 0;
    }
    fill_stat(p, path, S_IFDIR | 0555, st);
    return 0;
  }
  const Target t = classify(p, path);
  switch (t.kind) {
    case Kind::None: return std::nullopt;
    case Kind::ProcessDir: fill_stat(p, path, S_IFDIR | 0555, st); return 0;
    case Kind::FdDir: fill_stat(p, path, S_IFDIR | 0500, st); return 0;
    case Kind::File: fill_stat(p, path, S_IFREG | 0444, st); return 0;
    case Kind::Link:
      if (!follow) {
        fill_stat(p, path, S_IFLNK | (t.name == "fd" ? 0700 : 0777), st);
        return 0;
      }
      if (t.name == "exe") return ::stat(exe_link(p).c_str(), &st) == 0 ? 0 : -errno;
      if (t.name == "fd") {
        auto f = p.fds.get(t.fd);
        if (!f) return -ENOENT;
        return ::fstat(f->host_fd, &st) == 0 ? 0 : -errno;
      }
      return std::nullopt;  // cwd, root: the policy decides
  }
  return std::nullopt;
}

std::optional<int64_t> getdents64(Process& p, OpenFile& f, uint64_t buf, uint64_t count) {
  if (!f.synthetic_dir) return std::nullopt;
  auto& dir = *f.synthetic_dir;
  const size_t start = dir.pos;
  std::vector<uint8_t> out;
  while (dir.pos < dir.entries.size()) {
    const auto& e = dir.entries[dir.pos];
    const size_t reclen = (19 + e.name.size() + 1 + 7) & ~size_t{7};  // struct linux_dirent64, 8-aligned
    if (out.size() + reclen > count) break;
    const size_t at = out.size();
    out.resize(at + reclen, 0);
    const uint64_t ino = std::hash<std::string>{}(f.path + "/" + e.name) | 1;
    const int64_t next = int64_t(dir.pos + 1);
    const uint16_t len16 = uint16_t(reclen);
    std::memcpy(&out[at], &ino, 8);
    std::memcpy(&out[at + 8], &next, 8);
    std::memcpy(&out[at + 16], &len16, 2);
    out[at + 18] = e.type;
    std::memcpy(&out[at + 19], e.name.c_str(), e.name.size());
    ++dir.pos;
  }
  if (out.empty() && dir.pos < dir.entries.size()) return -EINVAL;  // buffer too small for one entry
  if (!out.empty() && !p.mm().copy_to_user(buf, out.data(), out.size())) {
    dir.pos = start;
    return -EFAULT;
  }
  return int64_t(out.size());
}

}  // namespace procfs
}  // namespace kvms::linux

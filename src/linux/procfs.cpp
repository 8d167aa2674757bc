// The made-up /proc, /sys and /dev (see procfs.hpp). They describe the guest, not the host: the
// host's trees stay out of reach (policy.hpp), and nothing here needs a grant except /dev/tty.
#include "linux/procfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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
#include "linux/host_fs.hpp"
#include "linux/policy.hpp"
#include "linux/process_table.hpp"

namespace kvms::linux {

namespace procfs {
namespace {

using Kind = Node::Kind;

constexpr const char* kSharedAnonName = "/dev/zero (deleted)";  // mmap.cpp's MAP_SHARED|MAP_ANONYMOUS
constexpr dev_t kProcDev = 0x16;  // what stat reports as procfs's device
constexpr int kOLargefile = 0100000;
constexpr int kMaxLinks = 40;     // MAXSYMLINKS
constexpr long kProcSuperMagic = 0x9fa0, kSysfsMagic = 0x62656572, kTmpfsMagic = 0x01021994;

// The files of a process directory, and of each of its task/<tid> directories.
const std::vector<std::string> kProcessFiles = {"maps", "status", "stat", "statm", "cmdline", "comm", "environ", "limits"};
const std::vector<std::string> kCpuDir = {"sys", "devices", "system", "cpu"};
const std::vector<std::string> kCpuLists = {"online", "possible", "present"};
const std::vector<std::string> kDevEntries = {"null", "zero", "full", "random", "urandom", "tty",
                                              "stdin", "stdout", "stderr", "fd"};

bool listed(const std::vector<std::string>& list, std::string_view name);

// /proc/sys: the settings programs (and test suites) read, with a default Linux's values and
// kvmserver's own limits; read-only. pipe-max-size is what F_SETPIPE_SZ allows (file.cpp).
const std::vector<std::pair<std::string, std::string>> kSysctls = {
    {"/proc/sys/fs/nr_open", "1048576\n"},
    {"/proc/sys/fs/pipe-max-size", "1048576\n"},
    {"/proc/sys/fs/pipe-user-pages-soft", "16384\n"},
    {"/proc/sys/kernel/ngroups_max", "65536\n"},
    {"/proc/sys/kernel/ostype", "Linux\n"},
    {"/proc/sys/kernel/pid_max", "4194304\n"},
    {"/proc/sys/kernel/tainted", "0\n"},
    {"/proc/sys/net/core/somaxconn", "4096\n"},
    {"/proc/sys/vm/max_map_count", "65530\n"},
    {"/proc/sys/vm/overcommit_memory", "0\n"},
};

const std::string* sysctl_text(const std::string& path) {
  for (const auto& [name, text] : kSysctls)
    if (name == path) return &text;
  return nullptr;
}

// The entries of a /proc/sys directory (none: not one).
std::vector<std::string> sysctl_children(const std::string& dir) {
  std::vector<std::string> names;
  const std::string prefix = dir + "/";
  for (const auto& [name, text] : kSysctls) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string child = name.substr(prefix.size(), name.find('/', prefix.size()) - prefix.size());
    if (!listed(names, child)) names.push_back(child);
  }
  return names;
}

std::string join(const std::vector<std::string>& comps) {
  std::string s;
  for (const auto& c : comps) s += "/" + c;
  return s.empty() ? "/" : s;
}

bool parse_number(const std::string& s, int& out) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  out = std::stoi(s);
  return true;
}

bool listed(const std::vector<std::string>& list, std::string_view name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

// Host files whose text the guest sees as is.
// The pid of another guest process whose /proc directory `path` is in (0: none, or this one's).
int other_pid(const Process& p, const std::string& path) {
  if (path.compare(0, 6, "/proc/") != 0) return 0;
  const size_t end = path.find('/', 6);
  int pid = 0;
  if (!parse_number(path.substr(6, end == std::string::npos ? std::string::npos : end - 6), pid)) return 0;
  return pid == p.pid || pid == p.main_tid ? 0 : pid;
}

bool is_host_passthrough(const std::string& path) {
  return path == "/proc/cpuinfo" || path == "/sys/devices/system/cpu/online" ||
         path == "/sys/devices/system/cpu/possible" || path == "/sys/devices/system/cpu/present";
}

// What exists at the canonical tree path `c` (components), or nullopt.
std::optional<Node> classify(Process& p, const std::vector<std::string>& c) {
  if (c.empty()) return std::nullopt;
  const std::string path = join(c);
  auto node = [&](Kind kind, int id = 0, std::string link = {}) { return Node{kind, path, id, std::move(link)}; };
  if (c[0] == "dev") {
    if (c.size() == 1) return node(Kind::Dir);
    if (c.size() > 2) return std::nullopt;
    if (listed(emulated_devices(), path)) return node(Kind::Device);
    if (listed(grantable_devices(), path) && p.policy().device_granted(path, Access::Read)) return node(Kind::Device);
    if (c[1] == "stdin") return node(Kind::Link, 0, "/proc/self/fd/0");
    if (c[1] == "stdout") return node(Kind::Link, 0, "/proc/self/fd/1");
    if (c[1] == "stderr") return node(Kind::Link, 0, "/proc/self/fd/2");
    if (c[1] == "fd") return node(Kind::Link, 0, "/proc/self/fd");
    return std::nullopt;
  }
  if (c[0] == "sys") {
    if (c.size() > kCpuDir.size() + 1 || !std::equal(c.begin(), c.begin() + std::min(c.size(), kCpuDir.size()), kCpuDir.begin()))
      return std::nullopt;
    if (c.size() <= kCpuDir.size()) return node(Kind::Dir);
    return listed(kCpuLists, c.back()) ? std::optional(node(Kind::File)) : std::nullopt;
  }
  if (c[0] != "proc") return std::nullopt;
  if (c.size() == 1) return node(Kind::Dir);
  const std::string pid = std::to_string(p.pid);
  if (c[1] == "sys") {
    if (sysctl_text(path)) return node(Kind::File);
    return sysctl_children(path).empty() ? std::nullopt : std::optional(node(Kind::Dir));
  }
  if (c.size() == 2) {
    if (c[1] == "self") return node(Kind::Link, 0, pid);
    if (c[1] == "thread-self") return node(Kind::Link, 0, pid + "/task/" + std::to_string(p.thread().tid));
    if (c[1] == "cpuinfo" || c[1] == "meminfo") return node(Kind::File);
  }
  // The process's first pid stays its alias after a worker gives it a new one (Process::main_tid),
  // as /proc/<tid> does for a thread on Linux.
  if (c[1] != pid && c[1] != std::to_string(p.main_tid)) {
    // Another of the guest's processes: its directory holds its stat (state, parent, group).
    int other = 0;
    if (!parse_number(c[1], other) || !p.table || !p.table->view(other)) return std::nullopt;
    if (c.size() == 2) return node(Kind::Dir, other);
    if (c.size() == 3 && c[2] == "stat") return node(Kind::File, other);
    return std::nullopt;
  }
  if (c.size() == 2) return node(Kind::Dir);
  size_t i = 2;  // first component below the process (or task) directory
  int tid = 0;
  if (c[2] == "task") {
    if (c.size() == 3) return node(Kind::Dir);
    if (!parse_number(c[3], tid) || !p.threads.count(tid)) return std::nullopt;
    if (c.size() == 4) return node(Kind::Dir);
    i = 4;
  }
  const std::string& name = c[i];
  if (c.size() == i + 1) {
    if (name == "exe") return node(Kind::ExeLink);
    if (name == "cwd") return node(Kind::Link, 0, p.cwd);
    if (name == "root") return node(Kind::Link, 0, "/");
    if (name == "fd" || name == "fdinfo") return node(Kind::Dir);
    if (listed(kProcessFiles, name)) return node(Kind::File, tid);
    return std::nullopt;
  }
  int fd = 0;
  if (c.size() == i + 2 && name == "fd" && parse_number(c[i + 1], fd) && p.fds.get(fd)) return node(Kind::FdLink, fd);
  if (c.size() == i + 2 && name == "fdinfo" && parse_number(c[i + 1], fd) && p.fds.get(fd)) return node(Kind::File, fd);
  return std::nullopt;
}

// The names a made-up directory may hold (classify() decides which exist).
std::vector<std::string> candidates(Process& p, const std::vector<std::string>& c) {
  if (c[0] == "dev") return kDevEntries;
  if (c[0] == "sys") return c.size() < kCpuDir.size() ? std::vector<std::string>{kCpuDir[c.size()]} : kCpuLists;
  if (c.size() == 1) {
    std::vector<std::string> names = {"self", "thread-self", std::to_string(p.pid), "cpuinfo", "meminfo", "sys"};
    if (p.table)
      for (int other : p.table->pids())
        if (other != p.pid) names.push_back(std::to_string(other));
    return names;
  }
  if (c[1] == "sys") return sysctl_children(join(c));
  if (other_pid(p, join(c))) return {"stat"};
  std::vector<std::string> names;
  if (c.back() == "fd" || c.back() == "fdinfo") {
    for (int fd : p.fds.fds()) names.push_back(std::to_string(fd));
  } else if (c.size() == 3) {  // task
    for (const auto& [tid, t] : p.threads) names.push_back(std::to_string(tid));
  } else {
    names = {"exe", "cwd", "root", "fd", "fdinfo"};
    if (c.size() == 2) names.push_back("task");
    names.insert(names.end(), kProcessFiles.begin(), kProcessFiles.end());
  }
  return names;
}

uint8_t dirent_type(Kind kind) {
  switch (kind) {
    case Kind::Dir: return DT_DIR;
    case Kind::File: return DT_REG;
    case Kind::Device: return DT_CHR;
    default: return DT_LNK;
  }
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
    for (++it; it != mappings.end() && it->first == end && it->second.prot == m.prot && it->second.name == m.name &&
               it->second.shared == m.shared;
         ++it)
      end = it->second.end;
    const bool shared = m.shared || m.name == kSharedAnonName;
    std::string line = format("%08llx-%08llx %c%c%c%c %08llx %02x:%02x %llu ", ull(start), ull(end),
                              (m.prot & kvm::kProtRead) ? 'r' : '-', (m.prot & kvm::kProtWrite) ? 'w' : '-',
                              (m.prot & kvm::kProtExec) ? 'x' : '-', shared ? 's' : 'p', ull(m.shared ? m.shared_offset : 0), 0, 0, 0ull);
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

// /proc/<pid>/stat of another guest process: what the table knows (the rest reads as zero).
std::string other_stat_line(Process& p, int pid) {
  auto view = p.table ? p.table->view(pid) : nullptr;
  if (!view) return "";
  std::string comm;
  {
    std::lock_guard<std::mutex> lk(view->mutex);
    comm = view->comm;
  }
  std::string s = format("%d (%s) %c %d %d %d 0 -1 4194304", pid, comm.c_str(), view->state.load(),
                         p.table->parent_of(pid), p.table->pgid_of(pid), p.table->sid_of(pid));
  for (int field = 10; field <= 52; ++field) s += field == 18 ? " 20" : field == 20 ? " 1" : " 0";
  return s + "\n";
}

std::string statm(Process& p) {
  const uint64_t size = p.mm().mapped_bytes() / kvm::kPageSize, rss = resident_kb(p) / 4;
  const uint64_t data = (kvm::page_up(p.brk_current) - p.brk_start + p.stack_size) / kvm::kPageSize;
  return format("%llu %llu 0 0 0 %llu 0\n", ull(size), ull(rss), ull(data));
}


// The guest's strings [start, end) as Linux reads them for cmdline and environ: the memory as it is
// now (the program may have changed it), empty when unreadable.
std::string guest_strings(Process& p, uint64_t start, uint64_t end) {
  if (end <= start || end - start > (1u << 20)) return "";
  std::string s(end - start, '\0');
  if (!p.mm().copy_from_user(s.data(), start, s.size())) return "";
  return s;
}

// Linux's /proc/<pid>/limits (fs/proc/base.c proc_pid_limits).
std::string limits(const Process& p) {
  struct Row {
    const char* name;
    int resource;
    const char* unit;
  };
  static constexpr Row kRows[] = {
      {"Max cpu time", RLIMIT_CPU, "seconds"},        {"Max file size", RLIMIT_FSIZE, "bytes"},
      {"Max data size", RLIMIT_DATA, "bytes"},        {"Max stack size", RLIMIT_STACK, "bytes"},
      {"Max core file size", RLIMIT_CORE, "bytes"},   {"Max resident set", RLIMIT_RSS, "bytes"},
      {"Max processes", RLIMIT_NPROC, "processes"},   {"Max open files", RLIMIT_NOFILE, "files"},
      {"Max locked memory", RLIMIT_MEMLOCK, "bytes"}, {"Max address space", RLIMIT_AS, "bytes"},
      {"Max file locks", RLIMIT_LOCKS, "locks"},      {"Max pending signals", RLIMIT_SIGPENDING, "signals"},
      {"Max msgqueue size", RLIMIT_MSGQUEUE, "bytes"}, {"Max nice priority", RLIMIT_NICE, ""},
      {"Max realtime priority", RLIMIT_RTPRIO, ""},   {"Max realtime timeout", RLIMIT_RTTIME, "us"},
  };
  auto value = [](uint64_t v) { return v == ~0ull ? std::string("unlimited") : std::to_string(v); };
  std::string s = format("%-25s %-20s %-20s %-10s\n", "Limit", "Soft Limit", "Hard Limit", "Units");
  for (const Row& r : kRows) {
    const auto [soft, hard] = p.rlimits[size_t(r.resource)];
    s += format("%-25s %-20s %-20s ", r.name, value(soft).c_str(), value(hard).c_str());
    s += *r.unit ? format("%-10s\n", r.unit) : "\n";
  }
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

// What /proc/self/exe names: the program's canonical path, as Linux resolves it at exec (the Guest
// keeps it canonical). Never resolved again: what the guest put at that path since (a symlink to a
// file it may not read) must not be followed.
const std::string& exe_link(const Process& p) { return p.exe_path; }

// F_GETFL's answer, as file.cpp's (an O_PATH file has only O_PATH, O_DIRECTORY, O_NOFOLLOW).
int status_flags_of(int flags) {
  if (flags & O_PATH) return flags & (O_PATH | O_DIRECTORY | O_NOFOLLOW);
  return (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)) | kOLargefile;
}

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

// The mode of a made-up node that is not a host object.
mode_t mode_of(const Node& n) {
  switch (n.kind) {
    case Kind::Dir:
      if (n.path.ends_with("/fd") || n.path.ends_with("/fdinfo")) return S_IFDIR | 0500;
      return S_IFDIR | (n.path.rfind("/proc", 0) == 0 ? 0555 : 0755);
    case Kind::File: return S_IFREG | 0444;
    case Kind::FdLink: return S_IFLNK | 0700;
    default: return S_IFLNK | 0777;
  }
}

// /proc/self/fdinfo/N: Linux's common lines with the guest's view (its offset, its flags with
// O_CLOEXEC as the guest set it), then the host's lines that describe the object itself (inode,
// eventfd counter, timerfd setting); not the host's epoll lines, which name host fds.
std::string fdinfo(Process& p, int fd) {
  const std::shared_ptr<OpenFile> f = p.fds.get(fd);
  if (!f) return "";
  const off_t pos = f->kind == OpenFile::Kind::Regular ? ::lseek(f->host_fd, 0, SEEK_CUR) : 0;
  std::string out = format("pos:\t%lld\nflags:\t0%o\n", (long long)std::max<off_t>(pos, 0),
                           unsigned(f->status_flags | (p.fds.cloexec(fd) ? O_CLOEXEC : 0)));
  std::istringstream host(host_file("/proc/self/fdinfo/" + std::to_string(f->host_fd)));
  static const char* const kKept[] = {"mnt_id:", "ino:", "eventfd-", "clockid:", "ticks:", "settime flags:", "it_value:",
                                      "it_interval:"};
  for (std::string line; std::getline(host, line);)
    for (const char* kept : kKept)
      if (line.rfind(kept, 0) == 0) {
        out += line + "\n";
        break;
      }
  return out;
}

std::string text_of(Process& p, const Node& n) {
  if (int other = other_pid(p, n.path)) return other_stat_line(p, other);
  if (n.path.find("/fdinfo/") != std::string::npos) return fdinfo(p, n.id);
  if (is_host_passthrough(n.path)) return host_file(n.path);
  if (n.path == "/proc/meminfo") return meminfo(p);
  if (const std::string* text = sysctl_text(n.path)) return *text;
  const std::string name = n.path.substr(n.path.rfind('/') + 1);
  if (name == "maps") return maps(p);
  if (name == "status") return status(p);
  if (name == "stat") return stat_line(p);
  if (name == "statm") return statm(p);
  if (name == "cmdline") return guest_strings(p, p.arg_start, p.arg_end);
  if (name == "environ") return guest_strings(p, p.env_start, p.env_end);
  if (name == "limits") return limits(p);
  if (name == "comm") {
    auto t = p.threads.find(n.id);
    return std::string(t != p.threads.end() ? t->second.comm : p.main_thread().comm) + "\n";
  }
  return "";
}

int64_t open_directory(Process& p, const Node& n, int flags) {
  const int host = empty_directory_fd();
  if (host < 0) return host;
  auto file = std::make_shared<OpenFile>(host, OpenFile::Kind::Directory, n.path, status_flags_of(flags));
  auto dir = file->synthetic_dir = std::make_shared<OpenFile::SyntheticDir>();
  const int64_t guest_fd = p.fds.install(std::move(file), flags & O_CLOEXEC);
  if (guest_fd < 0) return guest_fd;
  dir->entries.push_back({".", DT_DIR});
  dir->entries.push_back({"..", DT_DIR});
  std::vector<std::string> c = path_components(n.path);
  for (const std::string& name : candidates(p, c)) {  // the new fd is listed in fd/ too, as on Linux
    c.push_back(name);
    if (auto child = classify(p, c)) dir->entries.push_back({name, dirent_type(child->kind)});
    c.pop_back();
  }
  return guest_fd;
}

}  // namespace

Lookup lookup(Process& p, std::string_view guest_path, bool follow_last) {
  const bool must_be_dir = guest_path.size() > 1 && guest_path.back() == '/';
  if (must_be_dir) follow_last = true;
  std::vector<std::string> todo = path_components(guest_path);  // next component at the back
  const auto first = std::find_if(todo.begin(), todo.end(), [](const std::string& c) { return c != "." && c != ".."; });
  if (first == todo.end() || !is_made_up_path("/" + *first)) {
    // A path that starts outside the trees is the policy's, unchanged (its walk applies `..` after
    // symlinks, and never enters the trees), unless `..` brings it back in lexically: then it is
    // taken lexically, as /usr/../proc/self is /proc/self.
    const std::string lexical = normalize_path(guest_path);
    if (!is_made_up_path(lexical)) return std::string(guest_path);
    todo = path_components(lexical);
  }
  std::reverse(todo.begin(), todo.end());
  std::vector<std::string> cur;  // canonical tree path walked so far
  std::optional<Node> node;
  int links = 0;
  while (!todo.empty()) {
    std::string c = std::move(todo.back());
    todo.pop_back();
    const bool last = todo.empty();
    if (c == ".") continue;
    if (c == "..") {
      if (!cur.empty()) cur.pop_back();
      node.reset();
      continue;
    }
    cur.push_back(std::move(c));
    if (cur.size() == 1 && !is_made_up_path("/" + cur[0])) {  // a made-up link (or `..`) led out
      std::string out = join(cur);
      for (auto it = todo.rbegin(); it != todo.rend(); ++it) out += "/" + *it;
      return must_be_dir ? out + "/" : out;
    }
    node = classify(p, cur);
    if (!node) {
      if (last && listed(grantable_devices(), join(cur)) && p.config().verbose)
        p.log_denied(join(cur), "--allow-read=" + join(cur) + " or --allow-write=" + join(cur));
      return -ENOENT;
    }
    const bool follow = !last || follow_last;
    std::string target;  // where a followed link leads
    switch (node->kind) {
      case Kind::Dir: continue;
      case Kind::File:
      case Kind::Device:
      case Kind::ExeLink:
        if (!last || must_be_dir) return -ENOTDIR;
        continue;
      case Kind::FdLink: {
        if (!follow || (last && !must_be_dir)) continue;  // the open file itself
        auto f = p.fds.get(node->id);
        if (!f || f->kind != OpenFile::Kind::Directory || f->path.empty() || f->path[0] != '/') return -ENOTDIR;
        target = f->path;
        break;
      }
      case Kind::Link:
        if (!follow) continue;
        target = node->link;
        break;
    }
    if (++links > kMaxLinks) return -ELOOP;
    cur.pop_back();
    if (target[0] == '/') cur.clear();
    auto parts = path_components(target);
    todo.insert(todo.end(), parts.rbegin(), parts.rend());
    node.reset();
  }
  if (node) return *node;
  // Ended on a directory reached by `..` (or on "/"): look it up again.
  if (cur.empty()) return std::string("/");
  if (cur.size() == 1 && !is_made_up_path("/" + cur[0])) return join(cur) + (must_be_dir ? "/" : "");
  if (auto n = classify(p, cur)) return *n;
  return -ENOENT;
}

int64_t open(Process& p, const Node& n, int flags, bool followed) {
  if ((flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;
  const bool writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  const bool is_link = n.kind == Kind::Link || n.kind == Kind::FdLink || n.kind == Kind::ExeLink;
  if (is_link && !followed) return -ELOOP;
  switch (n.kind) {
    case Kind::Dir:
      if (writing || (flags & O_CREAT)) return -EISDIR;
      return open_directory(p, n, flags);
    case Kind::File: {
      if (flags & O_DIRECTORY) return -ENOTDIR;
      if (writing) return -EACCES;  // mode 0444
      const int fd = sealed_file(text_of(p, n));
      if (fd < 0) return fd;
      auto file = std::make_shared<OpenFile>(fd, OpenFile::Kind::Regular, n.path, status_flags_of(flags));
      const std::string name = n.path.substr(n.path.rfind('/') + 1);
      const bool size_zero = name == "cmdline" || name == "environ" || sysctl_text(n.path);
      file->made_up_seek = size_zero ? OpenFile::MadeUpSeek::SizeZero : OpenFile::MadeUpSeek::SeqFile;
      return p.fds.install(std::move(file), flags & O_CLOEXEC);
    }
    case Kind::ExeLink: {
      if (writing) return -ETXTBSY;
      const std::string exe = exe_link(p);
      const int fd = fileops::open_host(exe, O_RDONLY | (flags & O_PATH), 0);
      return fd < 0 ? fd : install(p, fd, OpenFile::Kind::Regular, exe, flags);
    }
    case Kind::FdLink: {
      auto file = p.fds.get(n.id);
      if (!file) return -ENOENT;
      if ((flags & O_DIRECTORY) && file->kind != OpenFile::Kind::Directory) return -ENOTDIR;
      // A socket cannot be opened, only made: Linux's sock_no_open. O_PATH opens nothing.
      if (file->kind == OpenFile::Kind::Socket && !(flags & O_PATH)) return -ENXIO;
      return p.fds.install(std::move(file), flags & O_CLOEXEC);
    }
    case Kind::Device: {
      if (flags & O_DIRECTORY) return -ENOTDIR;
      if (writing && listed(grantable_devices(), n.path) && !p.policy().device_granted(n.path, Access::Write)) {
        if (p.config().verbose) p.log_denied(n.path, "--allow-write=" + n.path);
        return -EACCES;
      }
      const int fd = fileops::open_host(n.path, flags & ~O_CREAT, 0);
      return fd < 0 ? fd : install(p, fd, kind_of(fd), n.path, flags);
    }
    case Kind::Link: break;
  }
  return -ELOOP;
}

int creation_errno(Process& p, std::string_view guest_path) {
  std::string path = normalize_path(guest_path);
  const auto slash = path.rfind('/');
  auto parent = lookup(p, slash == 0 ? "/" : path.substr(0, slash), true);
  if (auto* n = std::get_if<Node>(&parent)) return n->kind == Kind::Dir ? -EACCES : -ENOTDIR;
  if (auto* err = std::get_if<int>(&parent)) return *err;
  return -ENOENT;
}

std::variant<std::string, int> readlink(Process& p, const Node& n) {
  switch (n.kind) {
    case Kind::Link: return n.link;
    case Kind::ExeLink: return exe_link(p);
    case Kind::FdLink:
      if (auto f = p.fds.get(n.id)) return f->path;
      return -ENOENT;
    default: return -EINVAL;
  }
}

int stat(Process& p, const Node& n, bool followed, struct stat& st) {
  if (followed && n.kind == Kind::ExeLink) {  // what is at the path now, never through a symlink
    const int fd = fileops::open_host(exe_link(p), O_PATH, 0);
    if (fd < 0) return fd;
    const int rc = ::fstat(fd, &st) == 0 ? 0 : -errno;
    ::close(fd);
    return rc;
  }
  if (followed && n.kind == Kind::FdLink) {
    auto f = p.fds.get(n.id);
    if (!f) return -ENOENT;
    return ::fstat(f->host_fd, &st) == 0 ? 0 : -errno;
  }
  if (n.kind == Kind::Device) return ::stat(n.path.c_str(), &st) == 0 ? 0 : -errno;
  fill_stat(p, n.path, mode_of(n), st);
  return 0;
}

int access(Process& p, const Node& n, bool followed, int mode) {
  struct stat st;
  if (int rc = stat(p, n, followed, st)) return rc;
  // The guest owns what is made up here; the host's objects (devices, open files, the program)
  // answer for whoever their mode lets in.
  const bool made_up = n.kind == Kind::Dir || n.kind == Kind::File || !followed || n.kind == Kind::Link;
  int allowed = made_up ? (st.st_mode >> 6) & 7 : ((st.st_mode >> 6) | (st.st_mode >> 3) | st.st_mode) & 7;
  if (listed(grantable_devices(), n.path) && !p.policy().device_granted(n.path, Access::Write)) allowed &= ~W_OK;
  return (mode & (R_OK | W_OK | X_OK) & ~allowed) ? -EACCES : 0;
}

void statfs(const Node& n, struct statfs& st) {
  st = {};
  st.f_type = n.path.rfind("/proc", 0) == 0 ? kProcSuperMagic : n.path.rfind("/sys", 0) == 0 ? kSysfsMagic : kTmpfsMagic;
  st.f_bsize = st.f_frsize = 4096;
  st.f_namelen = 255;
  st.f_flags = ST_RDONLY | ST_NOSUID | ST_NODEV | ST_NOEXEC;
}

std::optional<std::string> contents(Process& p, const std::string& path) {
  auto where = lookup(p, path, true);
  auto* n = std::get_if<Node>(&where);
  if (!n || n->kind != Kind::File) return std::nullopt;
  return text_of(p, *n);
}

std::optional<int64_t> getdents64(Process& p, OpenFile& f, uint64_t buf, uint64_t count, bool legacy) {
  if (!f.synthetic_dir) return std::nullopt;
  auto& dir = *f.synthetic_dir;
  const size_t start = dir.pos;
  std::vector<uint8_t> out;
  while (dir.pos < dir.entries.size()) {
    const auto& e = dir.entries[dir.pos];
    // struct linux_dirent64, 8-aligned; struct linux_dirent has the same length (its name starts a
    // byte earlier, its d_type is the last byte).
    const size_t reclen = (19 + e.name.size() + 1 + 7) & ~size_t{7};
    if (out.size() + reclen > count) break;
    const size_t at = out.size();
    out.resize(at + reclen, 0);
    const uint64_t ino = std::hash<std::string>{}(f.path + "/" + e.name) | 1;
    const int64_t next = int64_t(dir.pos + 1);
    const uint16_t len16 = uint16_t(reclen);
    std::memcpy(&out[at], &ino, 8);
    std::memcpy(&out[at + 8], &next, 8);
    std::memcpy(&out[at + 16], &len16, 2);
    if (legacy) {
      std::memcpy(&out[at + 18], e.name.c_str(), e.name.size());
      out[at + reclen - 1] = e.type;
    } else {
      out[at + 18] = e.type;
      std::memcpy(&out[at + 19], e.name.c_str(), e.name.size());
    }
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

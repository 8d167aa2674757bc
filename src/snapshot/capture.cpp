// Saving a paused template: its state into a Description, its memory's non-zero runs after it.
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <x86intrin.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <algorithm>
#include <map>
#include <stdexcept>

#include "kvm/vm.hpp"
#include "linux/epoll.hpp"
#include "linux/process_table.hpp"
#include "snapshot/snapshot.hpp"

namespace kvms::snapshot {
namespace {

using linux::OpenFile;

// Zero pages between two runs that are written anyway rather than split into two extents: each
// extent is one host mapping per worker when serving, and 8 pages cost 32 KiB at most.
constexpr uint64_t kMergeGapPages = 8;
constexpr uint64_t kMaxTmpBytes = 64ull << 20;

[[noreturn]] void cannot(const std::string& why) { throw std::runtime_error("cannot save this template: " + why); }

int64_t timespec_ns(const timespec& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; }

FileRecord describe_file(const OpenFile& f, int fd) {
  FileRecord r;
  r.guest_path = f.path;
  r.status_flags = f.status_flags;
  r.writable_grant = f.writable_grant;
  const std::string which = "fd " + std::to_string(fd) + " (" + f.path + ")";
  const int host_flags = fcntl(f.host_fd, F_GETFL);
  r.nonblocking = host_flags >= 0 && (host_flags & O_NONBLOCK);
  if (f.path == "/dev/stdin" || f.path == "/dev/stdout" || f.path == "/dev/stderr") {
    r.kind = FileRecord::Kind::Stdio;
    r.stdio = f.path == "/dev/stdin" ? 0 : f.path == "/dev/stdout" ? 1 : 2;
    return r;
  }
  struct stat st{};
  if (fstat(f.host_fd, &st) != 0) cannot(which + ": " + strerror(errno));
  switch (f.kind) {
    case OpenFile::Kind::Regular:
    case OpenFile::Kind::Directory: {
      if (f.synthetic_dir || f.path.empty() || f.path[0] != '/' || linux::is_made_up_path(f.path))
        cannot(which + ": a file kvmserver makes up (/proc, /sys, /dev) is not saved");
      if (st.st_nlink == 0) cannot(which + ": the file was deleted");
      r.kind = f.kind == OpenFile::Kind::Regular ? FileRecord::Kind::Regular : FileRecord::Kind::Directory;
      const off_t offset = lseek(f.host_fd, 0, SEEK_CUR);
      r.offset = offset > 0 ? uint64_t(offset) : 0;
      r.dev = st.st_dev;
      r.ino = st.st_ino;
      r.size = uint64_t(st.st_size);
      r.mtime_ns = timespec_ns(st.st_mtim);
      return r;
    }
    case OpenFile::Kind::CharDevice:
    case OpenFile::Kind::Tty:
      r.kind = FileRecord::Kind::Device;
      return r;
    case OpenFile::Kind::Pipe: {
      r.kind = FileRecord::Kind::PipeEnd;
      r.pipe_id = st.st_ino;
      // Bytes waiting in the pipe are saved with its read end, copied without being consumed
      // (tee): libuv keeps a lock as one byte in a pipe, for one. Without a read end nobody can
      // read them.
      int unread = 0;
      if ((f.status_flags & O_ACCMODE) == O_RDONLY && ioctl(f.host_fd, FIONREAD, &unread) == 0 && unread > 0) {
        if (uint64_t(unread) > kMaxPendingBytes) cannot(which + ": a pipe holding " + std::to_string(unread) + " unread bytes");
        int copy[2];
        if (pipe2(copy, O_CLOEXEC | O_NONBLOCK) != 0) cannot(which + ": pipe: " + strerror(errno));
        const ssize_t n = tee(f.host_fd, copy[1], size_t(unread), SPLICE_F_NONBLOCK);
        r.data.resize(n > 0 ? size_t(n) : 0);
        const bool ok = n == unread && read(copy[0], r.data.data(), r.data.size()) == n;
        close(copy[0]);
        close(copy[1]);
        if (!ok) cannot(which + ": cannot copy the bytes waiting in a pipe");
      }
      return r;
    }
    case OpenFile::Kind::EventFd: {
      r.kind = FileRecord::Kind::EventFd;
      const linux::FdInfo info(f.host_fd);
      if (auto v = info.field("eventfd-count")) r.count = std::strtoull(v->c_str(), nullptr, 16);
      if (auto v = info.field("eventfd-semaphore")) r.semaphore = std::atoi(v->c_str()) != 0;
      return r;
    }
    case OpenFile::Kind::TimerFd: {
      r.kind = FileRecord::Kind::TimerFd;
      r.clock = CLOCK_MONOTONIC;
      const linux::FdInfo info(f.host_fd);
      if (auto v = info.field("clockid")) r.clock = std::atoi(v->c_str());
      if (auto v = info.field("ticks")) r.count = std::strtoull(v->c_str(), nullptr, 10);
      itimerspec cur{};
      if (timerfd_gettime(f.host_fd, &cur) != 0) cannot(which + ": " + strerror(errno));
      r.interval_ns = timespec_ns(cur.it_interval);
      r.value_ns = timespec_ns(cur.it_value);
      return r;
    }
    case OpenFile::Kind::Socket: {
      if (!f.listening && f.socketpair_id) {  // one end of a socketpair(): re-paired at load
        r.kind = FileRecord::Kind::SocketPairEnd;
        r.pipe_id = f.socketpair_id;
        int v = 0;
        socklen_t vl = sizeof v;
        if (getsockopt(f.host_fd, SOL_SOCKET, SO_TYPE, &v, &vl) != 0) cannot(which + ": " + strerror(errno));
        r.type = v;
        std::string pending(kMaxPendingBytes + 1, '\0');
        const ssize_t n = recv(f.host_fd, pending.data(), pending.size(), MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) {
          if (r.type != SOCK_STREAM) cannot(which + ": a datagram socket pair with messages waiting");
          if (uint64_t(n) > kMaxPendingBytes) cannot(which + ": a socket pair holding more than 64 KiB unread");
          r.data.assign(pending.data(), size_t(n));
        }
        return r;
      }
      if (!f.listening) cannot(which + ": a socket that is not listening (only listening sockets and socket pairs are saved)");
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (getsockname(f.host_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) cannot(which + ": " + strerror(errno));
      if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
        cannot(which + ": a Unix socket listener (only TCP listeners are saved)");
      r.kind = FileRecord::Kind::Listener;
      r.family = ss.ss_family;
      r.address.assign(reinterpret_cast<const char*>(&ss), len);
      int v = 0;
      socklen_t vl = sizeof v;
      if (getsockopt(f.host_fd, SOL_SOCKET, SO_TYPE, &v, &vl) == 0) r.type = v;
      vl = sizeof v;
      if (getsockopt(f.host_fd, SOL_SOCKET, SO_PROTOCOL, &v, &vl) == 0) r.protocol = v;
      vl = sizeof v;
      r.reuse_address = getsockopt(f.host_fd, SOL_SOCKET, SO_REUSEADDR, &v, &vl) == 0 && v;
      vl = sizeof v;
      r.reuse_port = getsockopt(f.host_fd, SOL_SOCKET, SO_REUSEPORT, &v, &vl) == 0 && v;
      vl = sizeof v;
      r.v6_only = ss.ss_family == AF_INET6 && getsockopt(f.host_fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vl) == 0 && v;
      if (r.type != SOCK_STREAM) cannot(which + ": a listening socket that is not a stream socket");
      return r;
    }
    case OpenFile::Kind::Epoll:
      r.kind = FileRecord::Kind::Epoll;
      for (const auto& i : f.epoll_interest) r.interest.push_back({i.guest_fd, i.events, i.data});
      return r;
    default:
      cannot(which + ": an open file of a kind snapshots do not hold");
  }
}

void describe_tmp(const std::string& dir, Description& d) {
  namespace fs = std::filesystem;
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path& path = it->path();
    TmpEntry e;
    e.path = fs::relative(path, dir).string();
    struct stat st{};
    if (lstat(path.c_str(), &st) != 0) cannot("/tmp/" + e.path + ": " + strerror(errno));
    e.mode = st.st_mode & 07777;
    if (S_ISDIR(st.st_mode)) {
      e.type = TmpEntry::Type::Directory;
    } else if (S_ISLNK(st.st_mode)) {
      e.type = TmpEntry::Type::Symlink;
      e.data = fs::read_symlink(path, ec).string();
    } else if (S_ISREG(st.st_mode)) {
      e.type = TmpEntry::Type::File;
      total += uint64_t(st.st_size);
      if (total > kMaxTmpBytes) cannot("the template's /tmp holds more than 64 MiB");
      const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) cannot("/tmp/" + e.path + ": " + strerror(errno));
      char buf[65536];
      for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) e.data.append(buf, size_t(n));
      close(fd);
    } else {
      cannot("/tmp/" + e.path + ": neither a file, a directory nor a symlink");
    }
    d.tmp.push_back(std::move(e));
  }
  if (ec) cannot("the template's /tmp: " + ec.message());
}

// Fewer extents make a faster load and worker start (each is one host mapping, ~4 us here):
// beyond kFewExtents, the smallest gaps are filled with zeros as long as the zeros stay under
// 1/kZeroBudgetDivisor of the image (so the file stays about the template's resident size).
constexpr size_t kFewExtents = 16;
constexpr uint64_t kZeroBudgetDivisor = 16;
std::vector<std::pair<uint64_t, uint64_t>> merge_small_gaps(std::vector<std::pair<uint64_t, uint64_t>> runs) {
  if (runs.size() <= kFewExtents) return runs;
  uint64_t data = 0;
  for (auto [start, end] : runs) data += end - start;
  std::vector<std::pair<uint64_t, size_t>> gaps;  // size, index of the run before it
  for (size_t i = 0; i + 1 < runs.size(); ++i) gaps.emplace_back(runs[i + 1].first - runs[i].second, i);
  std::sort(gaps.begin(), gaps.end());
  std::vector<bool> merge(runs.size(), false);
  uint64_t zeros = 0;
  size_t count = runs.size();
  for (auto [size, i] : gaps) {
    if (count <= kFewExtents || zeros + size > data / kZeroBudgetDivisor) break;
    merge[i] = true;
    zeros += size;
    --count;
  }
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i > 0 && merge[i - 1])
      out.back().second = runs[i].second;
    else
      out.push_back(runs[i]);
  }
  return out;
}

void write_all(int fd, const uint8_t* data, uint64_t size, uint64_t offset) {
  while (size > 0) {
    const ssize_t n = pwrite(fd, data, size, off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(std::string("cannot write the snapshot: ") + strerror(n < 0 ? errno : EIO));
    data += n;
    offset += uint64_t(n);
    size -= uint64_t(n);
  }
}

}  // namespace

OutputFile::OutputFile(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  const fs::path p = fs::absolute(path);
  name_ = p.filename().string();
  if (name_.empty() || name_ == "." || name_ == "..") throw std::runtime_error(path + ": not a file name");
  const std::string dir = p.parent_path().string();
  dir_fd_ = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) throw std::runtime_error(dir + ": " + strerror(errno));
  struct stat st{};
  if (fstatat(dir_fd_, name_.c_str(), &st, 0) == 0 && !S_ISREG(st.st_mode))
    throw std::runtime_error(path + ": exists and is not a regular file");
  if (faccessat(dir_fd_, ".", W_OK, 0) != 0) throw std::runtime_error(dir + ": not writable: " + strerror(errno));
}

OutputFile::~OutputFile() {
  if (dir_fd_ >= 0) close(dir_fd_);
}

SaveResult save(const SaveRequest& req, const OutputFile& out) {
  linux::Guest& g = *req.guest;
  linux::Process& p = g.process();
  if (p.table && p.table->running() > 0) cannot("it has child processes (only a single process is saved)");
  if (g.memory().file_backed()) cannot("it was itself loaded from a snapshot (copy that file instead)");
  kvm::AddressSpace& mm = g.address_space();
  Description d;
  d.kvmserver_version = req.kvmserver_version;
  d.created_unix = time(nullptr);
  d.xcr0 = kvm::Kvm::instance().xcr0();
  for (const auto& e : kvm::Kvm::instance().guest_cpuid()) d.cpuid.push_back({e.function, e.index, e.eax, e.ebx, e.ecx, e.edx});
  d.program = req.program;
  d.exe_path = p.exe_path;
  d.argv = req.argv;
  d.cwd = p.cwd;
  d.wait_syscall = req.wait_syscall;
  d.allow_all = req.paths.allow_all;
  d.read_all = req.paths.read_all;
  d.write_all = req.paths.write_all;
  d.read = req.paths.read;
  d.write = req.paths.write;
  d.always_readable = req.paths.always_readable;
  for (const auto& v : req.paths.volumes) d.volumes.push_back({v.host, v.guest, v.writable});
  d.listen_all = req.net.listen_all;
  d.connect_all = req.net.connect_all;
  d.listen = req.net.listen;
  d.connect = req.net.connect;
  d.hostname = p.config().hostname;
  // The environment is in memory (the initial stack); the list is kept for inspect.
  if (p.env_end > p.env_start && p.env_end - p.env_start <= (1u << 20)) {
    std::string env(p.env_end - p.env_start, '\0');
    if (mm.copy_from_user(env.data(), p.env_start, env.size()))
      for (size_t pos = 0; pos < env.size();) {
        const size_t end = env.find('\0', pos);
        if (end == std::string::npos || end == pos) break;
        d.envp.push_back(env.substr(pos, end - pos));
        pos = end + 1;
      }
  }
  d.user_size = g.memory().user_size();
  d.kernel_size = g.memory().kernel_size();
  for (const auto& [start, m] : mm.mappings()) d.mappings.push_back({start, m.end, m.prot, m.fork_flags, m.name});

  // Threads, as user mode sees them (kvm::user_view): nothing privileged goes into the file.
  for (const auto& t : req.threads) {
    auto view = kvm::user_view(t.state, mm);
    if (!view) cannot("thread " + std::to_string(t.tid) + " stopped inside kvmserver's entry code; try again");
    if (t.pending != view->at_syscall) cannot("thread " + std::to_string(t.tid) + " is between a syscall and its return; try again");
    auto ctx = p.threads.find(t.tid);
    if (ctx == p.threads.end()) cannot("thread " + std::to_string(t.tid) + " has no process state");
    const linux::ThreadContext& c = ctx->second;
    if (c.pending_signals || !c.pending_queue.empty()) cannot("thread " + std::to_string(t.tid) + " has signals pending");
    ThreadRecord r;
    r.tid = t.tid;
    r.pending = view->at_syscall;
    r.regs = view->regs;
    r.sregs = view->sregs;
    r.xcr0 = t.state.xcrs.xcrs[0].value;
    r.xsave = t.state.xsave;
    r.clear_child_tid = c.clear_child_tid;
    r.robust_list = c.robust_list;
    r.robust_list_len = c.robust_list_len;
    r.rseq = c.rseq;
    r.rseq_len = c.rseq_len;
    // A thread inside rt_sigsuspend or a ppoll-like wait has that call's mask for now: the call runs
    // again after a load (it is pending) and sets it again; the thread's own mask is the one kept.
    r.sigmask = c.saved_sigmask.value_or(c.sigmask);
    r.altstack_sp = c.altstack_sp;
    r.altstack_size = c.altstack_size;
    r.altstack_flags = c.altstack_flags;
    r.comm.assign(c.comm, strnlen(c.comm, sizeof c.comm - 1));
    d.threads.push_back(std::move(r));
  }
  if (d.threads.empty() || d.threads.front().tid != p.main_tid) cannot("the main thread is not the first");
  // The XCR0 the guest ran with is the snapshot's.
  d.xcr0 = d.threads.front().xcr0;

  d.pid = p.pid;
  d.ppid = p.ppid;
  d.main_tid = p.main_tid;
  d.uid = p.uid;
  d.gid = p.gid;
  d.umask = p.umask;
  d.nice = p.nice;
  d.brk_start = p.brk_start;
  d.brk_current = p.brk_current;
  d.stack_top = p.stack_top;
  d.stack_size = p.stack_size;
  d.vdso_base = p.vdso_base;
  d.arg_start = p.arg_start;
  d.arg_end = p.arg_end;
  d.env_start = p.env_start;
  d.env_end = p.env_end;
  for (size_t i = 0; i < d.sigactions.size(); ++i)
    d.sigactions[i] = {p.sigactions[i].handler, p.sigactions[i].flags, p.sigactions[i].restorer, p.sigactions[i].mask};
  d.rlimits = p.rlimits;
  d.fd_limit = p.fds.limit();
  // The guest's TSC now: a load continues from here, so its clocks never step back.
  d.guest_tsc = __rdtsc() + uint64_t(p.clock.tsc_offset);
  d.tsc_khz = p.clock.tsc_khz;
  d.clock_seq = p.clock.seq;
  d.clock_shift = p.clock.shift;
  d.clock_mult = p.clock.mult;
  d.clock_tsc_base = p.clock.tsc_base;
  d.clock_monotonic_base_ns = p.clock.monotonic_base_ns;
  d.clock_realtime_offset_ns = p.clock.realtime_offset_ns;
  d.clock_boottime_offset_ns = p.clock.boottime_offset_ns;

  std::map<const OpenFile*, uint32_t> index;
  for (int fd : p.fds.fds()) {
    auto f = p.fds.get(fd);
    auto [it, added] = index.emplace(f.get(), uint32_t(d.files.size()));
    if (added) d.files.push_back(describe_file(*f, fd));
    d.fds.push_back({fd, it->second, p.fds.cloexec(fd)});
  }
  d.private_tmp = p.has_private_tmp;
  if (p.has_private_tmp && !req.private_tmp.empty()) describe_tmp(req.private_tmp, d);

  // Memory: the non-zero runs of the user slot, packed after the description.
  const auto runs = merge_small_gaps(g.memory().nonzero_user_runs(kMergeGapPages));
  for (auto [start, end] : runs) d.extents.push_back({start, end - start});
  const uint64_t memory_bytes = d.memory_bytes();
  d.chunk_hashes.assign((memory_bytes + kChunkBytes - 1) / kChunkBytes, 0);

  const std::string temp = "." + out.name() + ".partial-" + std::to_string(getpid());
  const int fd = openat(out.dir_fd(), temp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(out.path() + ": cannot create: " + strerror(errno));
  struct Cleanup {
    int fd;
    int dir;
    const std::string& name;
    bool keep = false;
    ~Cleanup() {
      close(fd);
      if (!keep) unlinkat(dir, name.c_str(), 0);
    }
  } cleanup{fd, out.dir_fd(), temp};
  // The memory image first (its hashes go into the description), at the offset the description's
  // size decides: encode once to learn it (the hashes are fixed-size, so it does not change).
  const uint64_t memory_offset = encode(d).size();
  {
    uint64_t offset = memory_offset;
    for (const ExtentRecord& e : d.extents) {
      if (int rc = g.memory().write_user_range(fd, e.gpa, e.bytes, offset); rc < 0)
        throw std::runtime_error(out.path() + ": cannot write the memory image: " + strerror(-rc));
      offset += e.bytes;
    }
    std::vector<uint8_t> chunk(kChunkBytes);
    for (uint64_t i = 0, done = 0; done < memory_bytes; ++i, done += kChunkBytes) {
      const uint64_t n = std::min(kChunkBytes, memory_bytes - done);
      if (pread(fd, chunk.data(), n, off_t(memory_offset + done)) != ssize_t(n))
        throw std::runtime_error(out.path() + ": cannot read back the memory image");
      d.chunk_hashes[i] = hash_bytes(chunk.data(), n);
    }
  }
  const std::vector<uint8_t> head = encode(d);
  if (head.size() != memory_offset) throw std::logic_error("snapshot description changed size");
  write_all(fd, head.data(), head.size(), 0);
  if (ftruncate(fd, off_t(memory_offset + memory_bytes)) != 0 || fsync(fd) != 0)
    throw std::runtime_error(out.path() + ": cannot write: " + strerror(errno));
  if (renameat(out.dir_fd(), temp.c_str(), out.dir_fd(), out.name().c_str()) != 0)
    throw std::runtime_error(out.path() + ": cannot rename into place: " + strerror(errno));
  cleanup.keep = true;
  SaveResult result;
  result.file_bytes = memory_offset + memory_bytes;
  result.memory_bytes = memory_bytes;
  result.extents = d.extents.size();
  result.resident_bytes = g.memory().resident_pages() * kvm::kPageSize;
  return result;
}

}  // namespace kvms::snapshot

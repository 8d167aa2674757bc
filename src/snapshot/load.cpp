// Making a template from a snapshot file: memory mapped from the file, the kernel area and page
// tables rebuilt by this kvmserver, the process and its open files re-created on this host.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "kvm/vm.hpp"
#include "linux/epoll.hpp"
#include "linux/process_table.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"
#include "snapshot/snapshot.hpp"

namespace kvms::snapshot {
namespace {

using linux::OpenFile;

[[noreturn]] void refuse(const std::string& why) { throw SnapshotError(why); }

timespec ns_timespec(int64_t ns) { return timespec{time_t(ns / 1000000000), long(ns % 1000000000)}; }
int64_t timespec_ns(const timespec& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; }

std::string describe_fd(const FileRecord& f, int fd) { return "fd " + std::to_string(fd) + " (" + f.guest_path + ")"; }

// A regular file or directory the template had open: the same path, through the grants in force,
// and (unless told to reopen it anyway) the same file, unchanged.
std::shared_ptr<OpenFile> reopen_path(const FileRecord& f, int fd, const LoadOptions& o, bool in_saved_tmp) {
  const bool writing = (f.status_flags & O_ACCMODE) != O_RDONLY;
  auto r = o.policy->resolve(f.guest_path, writing ? linux::Access::Write : linux::Access::Read);
  if (auto* e = std::get_if<int>(&r))
    refuse(describe_fd(f, fd) + ": not reachable with these grants (" + std::strerror(-*e) + ")");
  const std::string& host = std::get<linux::PathPolicy::Resolved>(r).host_path;
  const int keep = O_ACCMODE | O_APPEND | O_DIRECTORY | O_NOATIME;
  const int h = open(host.c_str(), (f.status_flags & keep & ~O_NOATIME) | (f.nonblocking ? O_NONBLOCK : 0) | O_CLOEXEC | O_NOFOLLOW);
  if (h < 0) refuse(describe_fd(f, fd) + ": cannot open " + host + ": " + std::strerror(errno));
  struct stat st{};
  fstat(h, &st);
  if (f.kind == FileRecord::Kind::Regular && !in_saved_tmp) {  // a saved /tmp's files are the snapshot's own
    const bool same = st.st_dev == f.dev && st.st_ino == f.ino && uint64_t(st.st_size) == f.size &&
                      timespec_ns(st.st_mtim) == f.mtime_ns;
    if (!same && !o.reopen_changed_files) {
      close(h);
      refuse(describe_fd(f, fd) + ": " + host + " changed since the snapshot was made (size, time or inode); "
             "--reopen-changed-files opens it as it is now");
    }
    if (!S_ISREG(st.st_mode)) {
      close(h);
      refuse(describe_fd(f, fd) + ": " + host + " is no longer a regular file");
    }
  }
  if (f.offset) lseek(h, off_t(f.offset), SEEK_SET);
  auto file = std::make_shared<OpenFile>(h, f.kind == FileRecord::Kind::Regular ? OpenFile::Kind::Regular : OpenFile::Kind::Directory,
                                         f.guest_path, f.status_flags);
  file->writable_grant = f.writable_grant && std::get<linux::PathPolicy::Resolved>(r).writable;
  return file;
}

std::shared_ptr<OpenFile> reopen_device(const FileRecord& f, int fd, const LoadOptions& o) {
  const auto& emulated = linux::emulated_devices();
  const bool writing = (f.status_flags & O_ACCMODE) != O_RDONLY;
  const bool ok = std::find(emulated.begin(), emulated.end(), f.guest_path) != emulated.end() ||
                  o.policy->device_granted(f.guest_path, writing ? linux::Access::Write : linux::Access::Read);
  if (!ok) refuse(describe_fd(f, fd) + ": a device these grants do not give");
  const int h = open(f.guest_path.c_str(), (f.status_flags & O_ACCMODE) | O_CLOEXEC | O_NOCTTY);
  if (h < 0) refuse(describe_fd(f, fd) + ": " + std::strerror(errno));
  return std::make_shared<OpenFile>(h, linux::kind_of(h), f.guest_path, f.status_flags);
}

std::shared_ptr<OpenFile> recreate_listener(const FileRecord& f, int fd, const LoadOptions& o, std::vector<int>& inherited) {
  const auto len = socklen_t(f.address.size());
  sockaddr_storage ss{};
  std::memcpy(&ss, f.address.data(), std::min(f.address.size(), sizeof ss));
  const auto* addr = reinterpret_cast<const sockaddr*>(&ss);
  if (!inherited.empty()) {  // moved by the operator (--listen, socket activation): no guest grant needed
    const int h = fcntl(inherited.front(), F_DUPFD_CLOEXEC, 3);
    inherited.erase(inherited.begin());
    if (h < 0) refuse(describe_fd(f, fd) + ": " + std::strerror(errno));
    const int flags = fcntl(h, F_GETFL);  // blocking exactly when the guest's is (socket.cpp)
    fcntl(h, F_SETFL, f.nonblocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
    auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::Socket, f.guest_path, f.status_flags);
    file->listening = true;
    return file;
  }
  if (!o.net || !o.net->may_listen(addr, len))
    refuse(describe_fd(f, fd) + ": listening on this address is not granted (--allow-listen)");
  const int h = socket(f.family, SOCK_STREAM | SOCK_CLOEXEC | (f.nonblocking ? SOCK_NONBLOCK : 0), f.protocol);
  if (h < 0) refuse(describe_fd(f, fd) + ": socket: " + std::strerror(errno));
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::Socket, f.guest_path, f.status_flags);
  int one = 1;
  if (f.reuse_address) setsockopt(h, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (f.reuse_port) setsockopt(h, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (f.family == AF_INET6) {
    int v6only = f.v6_only;
    setsockopt(h, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(h, addr, len) != 0 || listen(h, SOMAXCONN) != 0)
    refuse(describe_fd(f, fd) + ": cannot listen: " + std::strerror(errno));
  file->listening = true;
  return file;
}

std::shared_ptr<OpenFile> recreate_eventfd(const FileRecord& f, int fd) {
  const int h = eventfd(0, EFD_CLOEXEC | (f.nonblocking ? EFD_NONBLOCK : 0) | (f.semaphore ? EFD_SEMAPHORE : 0));
  if (h < 0) refuse(describe_fd(f, fd) + ": eventfd: " + std::strerror(errno));
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::EventFd, f.guest_path, f.status_flags);
  if (f.count && (f.count == ~0ull || write(h, &f.count, sizeof f.count) != ssize_t(sizeof f.count)))
    refuse(describe_fd(f, fd) + ": eventfd counter out of range");
  return file;
}

std::shared_ptr<OpenFile> recreate_timerfd(const FileRecord& f, int fd) {
  const int h = timerfd_create(f.clock, TFD_CLOEXEC | (f.nonblocking ? TFD_NONBLOCK : 0));
  if (h < 0) refuse(describe_fd(f, fd) + ": timerfd: " + std::strerror(errno));
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::TimerFd, f.guest_path, f.status_flags);
  itimerspec t{ns_timespec(f.interval_ns), ns_timespec(f.value_ns)};
  if (f.count) t.it_value = {0, 1};  // expirations not read yet: one is due at once
  if ((t.it_value.tv_sec || t.it_value.tv_nsec) && timerfd_settime(h, 0, &t, nullptr) != 0)
    refuse(describe_fd(f, fd) + ": timerfd_settime: " + std::strerror(errno));
  return file;
}

void restore_process_state(linux::Process& p, const Description& d, const LoadOptions& o) {
  p.pid = d.pid;
  p.ppid = d.ppid;
  p.main_tid = d.main_tid;
  p.uid = d.uid;
  p.gid = d.gid;
  p.umask = d.umask;
  p.nice = d.nice;
  p.cwd = d.cwd;
  p.exe_path = d.exe_path;
  p.brk_start = d.brk_start;
  p.brk_current = d.brk_current;
  p.stack_top = d.stack_top;
  p.stack_size = d.stack_size;
  p.vdso_base = d.vdso_base;
  p.arg_start = d.arg_start;
  p.arg_end = d.arg_end;
  p.env_start = d.env_start;
  p.env_end = d.env_end;
  for (size_t i = 0; i < d.sigactions.size(); ++i)
    p.sigactions[i] = {d.sigactions[i].handler, d.sigactions[i].flags, d.sigactions[i].restorer, d.sigactions[i].mask};
  // The caps of this kvmserver stay in force whatever the guest had raised its limits to.
  const auto caps = p.rlimits;
  p.rlimits = d.rlimits;
  for (int r : {RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_SIGPENDING})
    p.rlimits[r] = {std::min(p.rlimits[r].first, caps[r].first), std::min(p.rlimits[r].second, caps[r].second)};
  p.threads.clear();
  for (const ThreadRecord& t : d.threads) {
    linux::ThreadContext c;
    c.tid = t.tid;
    c.clear_child_tid = t.clear_child_tid;
    c.robust_list = t.robust_list;
    c.robust_list_len = t.robust_list_len;
    c.rseq = t.rseq;
    c.rseq_len = t.rseq_len;
    c.sigmask = t.sigmask;
    c.altstack_sp = t.altstack_sp;
    c.altstack_size = t.altstack_size;
    c.altstack_flags = t.altstack_flags;
    std::memset(c.comm, 0, sizeof c.comm);
    std::memcpy(c.comm, t.comm.data(), std::min(t.comm.size(), sizeof c.comm - 1));
    p.threads.emplace(t.tid, c);
  }
  // The clock. The guest's clock page maps its TSC to CLOCK_MONOTONIC. The guest TSC continues
  // from its saved value, so the guest's monotonic clocks go on from the instant the file was
  // saved, on any host (never back, never a jump): no timer of the program comes due merely
  // because the file waited. Its wall clock is this host's (the page is rewritten before the guest
  // runs: start_clock_at, or the first syscall's refresh). Clock::ahead_ns relates its monotonic
  // clock to this host's, so that its absolute timeouts are waited for at the right host time.
  auto& c = p.clock;
  c = {};
  const uint64_t guest_tsc = d.guest_tsc;
  if (d.clock_mult) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const uint64_t host_ns = uint64_t(now.tv_sec) * 1000000000 + uint64_t(now.tv_nsec);
    const uint64_t ticks = d.guest_tsc > d.clock_tsc_base ? d.guest_tsc - d.clock_tsc_base : 0;
    const uint64_t saved_ns =
        d.clock_monotonic_base_ns + uint64_t((static_cast<unsigned __int128>(ticks) * d.clock_mult) >> d.clock_shift);
    c.ahead_ns = int64_t(saved_ns - host_ns);
  }
  c.tsc_offset = int64_t(guest_tsc - __rdtsc());
  c.tsc_khz = o.tsc_khz ? o.tsc_khz : d.tsc_khz;
  c.seq = d.clock_seq;
  c.shift = d.clock_shift;
  c.mult = d.clock_mult;
  c.tsc_base = d.clock_tsc_base;
  c.monotonic_base_ns = d.clock_monotonic_base_ns;
  c.realtime_offset_ns = d.clock_realtime_offset_ns;
  c.boottime_offset_ns = d.clock_boottime_offset_ns;
  c.refreshed_ns = 0;  // long ago: the first syscall refreshes it
}

void restore_files(linux::Process& p, const Description& d, const LoadOptions& o) {
  std::vector<std::shared_ptr<OpenFile>> made(d.files.size());
  std::map<uint64_t, std::array<int, 2>> pipes;
  std::map<uint64_t, std::pair<std::array<int, 2>, int>> pairs;  // ends, and how many are handed out
  std::vector<int> inherited = o.inherited_listeners;
  for (int pass = 0; pass < 2; ++pass) {  // epolls last: their interest lists name the other fds
    for (const FdRecord& r : d.fds) {
      const FileRecord& f = d.files[r.file];
      if ((f.kind == FileRecord::Kind::Epoll) != (pass == 1)) continue;
      auto& file = made[r.file];
      if (!file) {
        switch (f.kind) {
          case FileRecord::Kind::Stdio:
            file = linux::inherit_host_fd(f.stdio, f.guest_path);
            if (!file) refuse(describe_fd(f, r.fd) + ": kvmserver's own fd " + std::to_string(f.stdio) + " is not open");
            break;
          case FileRecord::Kind::Regular:
          case FileRecord::Kind::Directory:
            file = reopen_path(f, r.fd, o, d.private_tmp && f.guest_path.rfind("/tmp/", 0) == 0);
            break;
          case FileRecord::Kind::Device:
            file = reopen_device(f, r.fd, o);
            break;
          case FileRecord::Kind::PipeEnd: {
            auto it = pipes.find(f.pipe_id);
            if (it == pipes.end()) {
              std::array<int, 2> ends{};
              if (pipe2(ends.data(), O_CLOEXEC) != 0) refuse(describe_fd(f, r.fd) + ": pipe: " + std::strerror(errno));
              it = pipes.emplace(f.pipe_id, ends).first;
            }
            if (!f.data.empty() && write(it->second[1], f.data.data(), f.data.size()) != ssize_t(f.data.size()))
              refuse(describe_fd(f, r.fd) + ": cannot refill the pipe");
            const bool reader = (f.status_flags & O_ACCMODE) == O_RDONLY;
            const int h = fcntl(it->second[reader ? 0 : 1], F_DUPFD_CLOEXEC, 3);
            if (h < 0) refuse(describe_fd(f, r.fd) + ": " + std::strerror(errno));
            if (f.nonblocking) fcntl(h, F_SETFL, O_NONBLOCK);
            file = std::make_shared<OpenFile>(h, OpenFile::Kind::Pipe, f.guest_path, f.status_flags);
            break;
          }
          case FileRecord::Kind::SocketPairEnd: {
            auto it = pairs.find(f.pipe_id);
            if (it == pairs.end()) {
              std::array<int, 2> ends{};
              if (socketpair(AF_UNIX, f.type | SOCK_CLOEXEC, 0, ends.data()) != 0)
                refuse(describe_fd(f, r.fd) + ": socketpair: " + std::strerror(errno));
              it = pairs.emplace(f.pipe_id, std::pair{ends, 0}).first;
            }
            auto& [ends, used] = it->second;
            if (used > 1) refuse(describe_fd(f, r.fd) + ": a third end of one socket pair");
            const int mine = ends[used], other = ends[1 - used];
            ++used;
            // What this end had to read is sent from the other end (which the guest may not hold).
            if (!f.data.empty() && send(other, f.data.data(), f.data.size(), MSG_NOSIGNAL | MSG_DONTWAIT) != ssize_t(f.data.size()))
              refuse(describe_fd(f, r.fd) + ": cannot refill the socket pair");
            const int h = fcntl(mine, F_DUPFD_CLOEXEC, 3);
            if (h < 0) refuse(describe_fd(f, r.fd) + ": " + std::strerror(errno));
            if (f.nonblocking) fcntl(h, F_SETFL, O_NONBLOCK);
            file = std::make_shared<OpenFile>(h, OpenFile::Kind::Socket, f.guest_path, f.status_flags);
            file->socketpair_id = f.pipe_id;
            break;
          }
          case FileRecord::Kind::EventFd:
            file = recreate_eventfd(f, r.fd);
            break;
          case FileRecord::Kind::TimerFd:
            file = recreate_timerfd(f, r.fd);
            break;
          case FileRecord::Kind::Listener:
            file = recreate_listener(f, r.fd, o, inherited);
            break;
          case FileRecord::Kind::Epoll: {
            OpenFile description(-1, OpenFile::Kind::Epoll, f.guest_path, f.status_flags);
            for (const auto& i : f.interest) description.epoll_interest.push_back({i.guest_fd, i.events, i.data});
            file = linux::clone_epoll(p, description);
            if (!file) refuse(describe_fd(f, r.fd) + ": epoll: " + std::strerror(errno));
            if (file->epoll_interest.size() != f.interest.size())
              refuse(describe_fd(f, r.fd) + ": its interest list names fds that are not open");
            break;
          }
        }
      }
      if (p.fds.install_at(r.fd, file, r.cloexec) < 0)
        refuse("fd " + std::to_string(r.fd) + " is above this server's fd limit (--max-fds)");
    }
  }
  for (auto& [id, ends] : pipes)
    for (int end : ends) close(end);
  for (auto& [id, pair] : pairs)
    for (int end : pair.first) close(end);
}

}  // namespace

linux::PolicyConfig recorded_paths(const Description& d) {
  linux::PolicyConfig c;
  c.allow_all = d.allow_all;
  c.read_all = d.read_all;
  c.write_all = d.write_all;
  c.read = d.read;
  c.write = d.write;
  for (const auto& v : d.volumes) c.volumes.push_back({v.host, v.guest, v.writable});
  c.always_readable = d.always_readable;
  return c;
}

linux::NetPolicyConfig recorded_net(const Description& d) {
  linux::NetPolicyConfig c;
  c.listen_all = d.listen_all;
  c.connect_all = d.connect_all;
  c.listen = d.listen;
  c.connect = d.connect;
  return c;
}

void check_cpu(const Description& d) {
  std::vector<CpuidLeaf> here;
  for (const auto& e : kvm::Kvm::instance().guest_cpuid()) here.push_back({e.function, e.index, e.eax, e.ebx, e.ecx, e.edx});
  if (const std::string missing = missing_cpu_features(d, here, kvm::Kvm::instance().xcr0()); !missing.empty())
    refuse("made on a CPU with features this one lacks (" + missing + "): the guest may use them; make the snapshot on this kind of CPU");
}

void restore_tmp(const Description& d, const std::string& dir) {
  for (const TmpEntry& e : d.tmp) {
    const std::string path = dir + "/" + e.path;
    switch (e.type) {
      case TmpEntry::Type::Directory:
        if (mkdir(path.c_str(), mode_t(e.mode)) != 0 && errno != EEXIST) refuse("/tmp/" + e.path + ": " + std::strerror(errno));
        break;
      case TmpEntry::Type::Symlink:
        if (symlink(e.data.c_str(), path.c_str()) != 0) refuse("/tmp/" + e.path + ": " + std::strerror(errno));
        break;
      case TmpEntry::Type::File: {
        const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_t(e.mode));
        if (fd < 0) refuse("/tmp/" + e.path + ": " + std::strerror(errno));
        const bool ok = write(fd, e.data.data(), e.data.size()) == ssize_t(e.data.size());
        close(fd);
        if (!ok) refuse("/tmp/" + e.path + ": cannot write");
        break;
      }
    }
  }
}

Loaded load(int fd, const Header& h, const Description& d, const LoadOptions& o) {
  std::vector<kvm::FileExtent> extents;
  uint64_t offset = h.memory_offset;
  for (const ExtentRecord& e : d.extents) {
    extents.push_back({e.gpa, e.bytes, offset});
    offset += e.bytes;
  }
  std::shared_ptr<kvm::GuestMemory> memory;
  std::shared_ptr<kvm::AddressSpace> mm;
  try {
    memory = kvm::GuestMemory::from_file(d.user_size, d.kernel_size, fd, std::move(extents));
    mm = std::make_shared<kvm::AddressSpace>(memory);
    kvm::install_kernel_area(*mm);
    std::vector<std::pair<uint64_t, kvm::Mapping>> mappings;
    for (const MappingRecord& m : d.mappings) mappings.push_back({m.start, kvm::Mapping{m.end, m.prot, m.name, m.fork_flags}});
    mm->restore_mappings(mappings);
  } catch (const std::invalid_argument& e) {
    refuse(e.what());
  }
  linux::ProcessConfig config = o.process;
  config.hostname = d.hostname.empty() ? config.hostname : d.hostname;
  auto process = std::make_unique<linux::Process>(mm, o.policy, config);
  linux::Process& p = *process;
  restore_process_state(p, d, o);
  p.net_policy = o.net;
  p.table = std::make_shared<linux::ProcessTable>(p.pid);
  p.view = p.table->view(p.pid);
  linux::publish_child_disposition(p);
  p.fds = linux::FdTable();
  p.fds.set_limit(std::min(d.fd_limit, int(std::min<uint64_t>(o.process.limits.fds, linux::FdTable::kMaxLimit))));
  restore_files(p, d, o);
  p.settle_memory();

  Loaded loaded;
  for (const ThreadRecord& t : d.threads) {
    kvm::UserView view;
    view.regs = t.regs;
    view.sregs = t.sregs;
    view.at_syscall = t.pending;
    loaded.threads.push_back({t.tid, kvm::state_from_user_view(view, mm->cr3(), t.xsave, t.xcr0, o.cr4_extra), t.pending});
  }
  loaded.guest = linux::Guest::from_parts(d.exe_path, memory, mm, std::move(process));
  return loaded;
}

}  // namespace kvms::snapshot

#include "server/worker.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "linux/epoll.hpp"
#include "linux/policy.hpp"
#include "linux/process_table.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace kvms::server {
namespace {

constexpr int kChildStopMs = 5000;  // a killed guest process stops at its next exit: this is ample

using linux::OpenFile;

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}

uint64_t total_syscalls(const linux::Process& p) {
  uint64_t n = p.stats.unknown;
  for (uint64_t c : p.stats.calls) n += c;
  return n;
}

std::shared_ptr<OpenFile> reopen(const OpenFile& f) {
  const int keep = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECTORY | O_NOATIME;
  const std::string self = "/proc/self/fd/" + std::to_string(f.host_fd);
  int fd = open(self.c_str(), (f.status_flags & keep & ~O_NOATIME) | O_CLOEXEC);
  if (fd < 0) return nullptr;
  const off_t offset = f.paused_file ? off_t(f.paused_file->offset) : lseek(f.host_fd, 0, SEEK_CUR);
  if (offset > 0) lseek(fd, offset, SEEK_SET);
  auto copy = std::make_shared<OpenFile>(fd, f.kind, f.path, f.status_flags);
  copy->writable_grant = f.writable_grant;
  return copy;
}

// Both ends of a template pipe map to the two ends of one new pipe.
ino_t pipe_inode(const OpenFile& f) {
  if (f.paused_file) return ino_t(f.paused_file->inode);
  struct stat st{};
  return fstat(f.host_fd, &st) == 0 ? st.st_ino : 0;
}

std::shared_ptr<OpenFile> fresh_pipe_end(const OpenFile& f, std::map<ino_t, std::array<int, 2>>& pipes) {
  const ino_t inode = pipe_inode(f);
  if (!inode) return nullptr;
  auto it = pipes.find(inode);
  if (it == pipes.end()) {
    std::array<int, 2> ends{};
    if (pipe2(ends.data(), O_CLOEXEC) != 0) return nullptr;
    it = pipes.emplace(inode, ends).first;
  }
  const bool reader = (f.status_flags & O_ACCMODE) == O_RDONLY;
  int& end = it->second[reader ? 0 : 1];
  int fd = end >= 0 ? end : fcntl(f.host_fd, F_DUPFD_CLOEXEC, 3);
  end = -1;  // each end is handed out once; a second fd for the same end gets a dup of the template's
  if (f.status_flags & O_NONBLOCK) fcntl(fd, F_SETFL, O_NONBLOCK);
  return std::make_shared<OpenFile>(fd, f.kind, f.path, f.status_flags);
}

std::shared_ptr<OpenFile> private_copy(const OpenFile& f, std::map<ino_t, std::array<int, 2>>& pipes,
                                       const std::shared_ptr<OpenFile>& shared) {
  if (!recreated_per_worker(f)) return shared;
  switch (f.kind) {
    case OpenFile::Kind::Regular:
    case OpenFile::Kind::Directory:
      return reopen(f);
    case OpenFile::Kind::EventFd:
      return linux::clone_eventfd(f);
    case OpenFile::Kind::TimerFd:
      return linux::clone_timerfd(f);
    case OpenFile::Kind::SignalFd:
      return linux::clone_signalfd(f);
    case OpenFile::Kind::Pipe:
      return fresh_pipe_end(f, pipes);
    default:
      return shared;
  }
}

}  // namespace

bool recreated_per_worker(const OpenFile& f) {
  switch (f.kind) {
    case OpenFile::Kind::Regular:
    case OpenFile::Kind::Directory:
    case OpenFile::Kind::EventFd:
    case OpenFile::Kind::TimerFd:
    case OpenFile::Kind::SignalFd:
    case OpenFile::Kind::Epoll:
      return true;
    case OpenFile::Kind::Pipe:
      return f.path.rfind("pipe:", 0) == 0;  // not inherited stdio
    default:
      return false;  // listening and other sockets, ttys, devices: shared with the template
  }
}

void record_paused_files(const linux::Process& tmpl) {
  for (int fd : tmpl.fds.fds()) {
    const std::shared_ptr<OpenFile> f = tmpl.fds.get(fd);
    if (!recreated_per_worker(*f) || f->paused_file) continue;  // (a dup: recorded already)
    switch (f->kind) {
      case OpenFile::Kind::TimerFd:
        linux::record_paused_timerfd(*f);
        break;
      case OpenFile::Kind::EventFd:
        linux::record_paused_eventfd(*f);
        break;
      case OpenFile::Kind::Regular:
      case OpenFile::Kind::Directory: {
        const off_t offset = lseek(f->host_fd, 0, SEEK_CUR);
        f->paused_file = OpenFile::PausedFile{};
        f->paused_file->offset = offset > 0 ? offset : 0;
        break;
      }
      case OpenFile::Kind::Pipe: {
        struct stat st{};
        if (fstat(f->host_fd, &st) != 0) break;
        f->paused_file = OpenFile::PausedFile{};
        f->paused_file->inode = st.st_ino;
        break;
      }
      default:
        break;
    }
  }
}

size_t files_recreated_per_worker(const linux::Process& tmpl) {
  std::set<const OpenFile*> files;  // a file open as two fds (dup) is made once
  for (int fd : tmpl.fds.fds())
    if (const auto f = tmpl.fds.get(fd); recreated_per_worker(*f)) files.insert(f.get());
  return files.size();
}

std::unique_ptr<linux::Process> worker_process(const linux::Process& tmpl, std::shared_ptr<kvm::AddressSpace> mm,
                                               const FileReplacements& replacements) {
  auto p = std::make_unique<linux::Process>(tmpl, std::move(mm));
  std::map<const OpenFile*, std::shared_ptr<OpenFile>> copies;
  std::map<ino_t, std::array<int, 2>> pipes;
  const std::vector<int> fds = tmpl.fds.fds();
  for (int pass = 0; pass < 2; ++pass) {  // epolls last: their interest lists name the worker's fds
    for (int fd : fds) {
      std::shared_ptr<OpenFile> f = tmpl.fds.get(fd);
      if ((f->kind == OpenFile::Kind::Epoll) != (pass == 1)) continue;
      auto& copy = copies[f.get()];
      if (auto r = replacements.find(f.get()); r != replacements.end()) copy = r->second;
      if (!copy) copy = pass == 1 ? linux::clone_epoll(*p, *f) : private_copy(*f, pipes, f);
      if (copy) p->fds.install_at(fd, copy, tmpl.fds.cloexec(fd));
    }
  }
  for (auto& [inode, ends] : pipes)
    for (int end : ends)
      if (end >= 0) close(end);
  return p;
}

Worker::Worker(int id, const Template& tmpl, const WorkerConfig& config, ServerStats& stats)
    : id_(id), tmpl_(tmpl), config_(config), stats_(stats) {}

Worker::~Worker() {
  stop();
  join();
}

void Worker::start() { thread_ = std::thread([this] { main(); }); }

void Worker::stop() {
  stopping_ = true;
  // Only a live worker thread can be kicked (the vCPU's thread may have ended, even been joined).
  if (guest_ && thread_.joinable() && !finished_) guest_->vcpu().kick();
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

bool Worker::join_until(std::chrono::steady_clock::time_point deadline) {
  while (!finished_ && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!finished_) return false;
  join();
  return true;
}

void Worker::main() {
  struct MarkFinished {
    std::atomic<bool>& f;
    ~MarkFinished() { f = true; }
  } mark{finished_};
  bool created = false;
  pthread_setname_np(pthread_self(), ("worker " + std::to_string(id_)).c_str());
  try {
    const uint64_t t0 = monotonic_ns();
    if (config_.template_tmp) {
      tmp_ = std::make_unique<PrivateDir>();
      policy_ = std::make_shared<linux::PathPolicy>(with_private_tmp(config_.tmp_policy_base, tmp_->path()));
    }
    if (config_.request_mode) make_private_listeners();
    guest_ = tmpl_.guest->fork_paused(tmpl_.threads);
    reset(false);
    kvm_calls_mark_ = guest_->kvm_calls();
    stats_.add_worker_created(monotonic_ns() - t0, kvm_calls_mark_);
    created = true;
    if (config_.on_ready) config_.on_ready(id_);
    serve();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: worker %d stopped: %s\n", id_, e.what());
    if (!created) stats_.add_worker_failed();
  }
}

void Worker::serve() {
  while (!(stopping_ && !busy_)) {
    const linux::RunResult r = guest_->run(0, true);
    switch (r.reason) {
      case linux::RunResult::Paused:
        end_request(false);
        break;
      case linux::RunResult::Interrupted:
      case linux::RunResult::TimedOut:
        if (abort_.exchange(false)) {  // the front gave the request up
          end_request(true);
        } else if (busy_ && request_deadline_ns_ && monotonic_ns() >= request_deadline_ns_) {
          std::fprintf(stderr, "kvmserver: worker %d: request took longer than %g s: connection closed, worker reset\n",
                       id_, config_.max_request_time);
          stats_.add_timeout();
          end_request(true);
        }
        break;
      default:
        std::fprintf(stderr, "kvmserver: worker %d: %s: %s: connection closed, worker reset\n", id_,
                     guest_->program_path().c_str(),
                     r.message.empty() ? ("exited with status " + std::to_string(r.status)).c_str() : r.message.c_str());
        stats_.add_fault();
        end_request(true);
        break;
    }
  }
}

void Worker::reset(bool full) {
  // Whatever the request started ends with it: its other guest processes hold its data and must
  // not outlive it (they are VMs of their own, with their own memory).
  if (guest_->has_process() && guest_->process().table &&
      !guest_->process().table->kill_all_and_wait(SIGKILL, kChildStopMs))
    std::fprintf(stderr, "kvmserver: worker %d: processes of the last request still running after %d ms\n", id_,
                 kChildStopMs);
  kvm::GuestMemory& memory = guest_->memory();
  kvm::AddressSpace& mm = guest_->address_space();
  std::vector<uint64_t> dirty;
  guest_->harvest_dirty(dirty);
  dirty.insert(dirty.end(), mm.host_written_pages().begin(), mm.host_written_pages().end());
  std::sort(dirty.begin(), dirty.end());
  dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
  const bool drop_all = full || (config_.reset_full_above_pages && dirty.size() > config_.reset_full_above_pages);
  if (drop_all)
    memory.discard_private();
  else
    for (uint64_t page : dirty) memory.restore_page(page << 12);
  last_reset_pages_ = dirty.size();
  last_reset_full_ = drop_all;

  mm = kvm::AddressSpace(tmpl_.guest->address_space(), guest_->shared_memory());
  mm.track_host_writes(true);
  // Every request is a new copy of the template: what is marked MADV_WIPEONFORK (generator state:
  // OpenSSL, BoringSSL, LibreSSL, glibc's arc4random) reads as zeros. MADV_DONTFORK regions stay:
  // unlike a fork child, which goes on in one thread and usually execs, the copy runs the whole
  // server, and V8 marks its heap MADV_DONTFORK.
  mm.apply_fork_flags(kvm::kWipeOnFork);
  if (config_.request_mode) drain_private_listeners();
  guest_->set_process(worker_process(*tmpl_.process, guest_->shared_address_space(), replacements_));
  linux::Process& p = guest_->process();
  p.server = this;
  if (tmp_) {
    tmp_->reset_from(*config_.template_tmp);
    p.set_policy(policy_);
    p.has_private_tmp = true;
  }
  // Each request is a process tree of its own: its own pids' table and its own account, so a
  // request that hits a limit costs only itself. What the template already holds is charged
  // first, whatever the limits; --max-request-memory is what a request may add on top.
  // A new pid for the new request, as a forked child gets one (its threads keep their tids: the
  // guest's memory holds them). The template's pid stays an alias (Process::main_tid).
  if (config_.ids) p.pid = config_.ids->take();
  p.table = std::make_shared<linux::ProcessTable>(p.pid, config_.ids);
  p.view = p.table->view(p.pid);
  linux::publish_child_disposition(p);  // the template's SIGCHLD disposition, in the new table
  auto account = std::make_shared<linux::ResourceAccount>(p.limits());
  p.join_account(account);
  if (config_.max_request_memory)
    account->set_limit(linux::ResourceAccount::kMemory, account->used(linux::ResourceAccount::kMemory) + config_.max_request_memory,
                       "--max-request-memory=" + std::to_string(config_.max_request_memory >> 20));
  guest_->restore_threads(tmpl_.threads);
  linux::start_clock_at(p, tmpl_.paused_monotonic_ns);
}

void Worker::begin_request() {
  busy_ = true;
  exits_at_start_ = guest_->exits();
  syscalls_at_start_ = total_syscalls(guest_->process());
  if (config_.max_request_time > 0) {
    request_deadline_ns_ = monotonic_ns() + uint64_t(config_.max_request_time * 1e9);
    guest_->vcpu().set_deadline(request_deadline_ns_);
  }
}

void Worker::end_request(bool full_reset) {
  RequestCost cost;
  const linux::ExitCounters& x = guest_->exits();
  cost.exits_syscall = x.syscall - exits_at_start_.syscall;
  cost.exits_exception = x.exception - exits_at_start_.exception;
  cost.exits_interrupted = x.interrupted - exits_at_start_.interrupted;
  cost.exits_other = x.other - exits_at_start_.other;
  cost.syscalls = total_syscalls(guest_->process()) - syscalls_at_start_;
  if (request_deadline_ns_) guest_->vcpu().set_deadline(0);
  const bool counted = busy_;
  busy_ = false;
  connections_.clear();
  request_deadline_ns_ = 0;
  if (config_.ephemeral || full_reset) {
    const uint64_t t0 = monotonic_ns();
    reset(full_reset);
    cost.reset_ns = monotonic_ns() - t0;
    cost.pages_reset = last_reset_pages_;
    cost.full_reset = last_reset_full_;
  }
  exits_at_start_ = guest_->exits();
  cost.kvm_calls = guest_->kvm_calls() - kvm_calls_mark_;
  kvm_calls_mark_ = guest_->kvm_calls();
  if (counted) stats_.add_request(cost);
  {
    // An abort meant for this request is spent (the reset has happened: the front's release can
    // race the guest's own end of the request), and one for it arriving later must not hit the next.
    std::lock_guard<std::mutex> lk(abort_mutex_);
    abort_ = false;
    ++token_;
  }
  if (config_.on_ready && (config_.ephemeral || full_reset)) config_.on_ready(id_);
}

uint64_t Worker::request_token() const {
  std::lock_guard<std::mutex> lk(abort_mutex_);
  return token_;
}

void Worker::abort_request(uint64_t token) {
  {
    std::lock_guard<std::mutex> lk(abort_mutex_);
    if (token != token_) return;
    abort_ = true;
  }
  if (guest_ && thread_.joinable() && !finished_) guest_->vcpu().kick();
}

// A host listening socket of the listener's family on loopback, with an address of its own (an
// abstract name for Unix sockets), that only the front connects to. It shows the guest the address
// the guest bound.
void Worker::make_private_listeners() {
  for (const auto& l : tmpl_.listeners) {
    sockaddr_storage bound{};
    socklen_t bound_len = sizeof bound;
    if (::getsockname(l->host_fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
      throw std::runtime_error(std::string("getsockname of a listener: ") + strerror(errno));
    const int host_flags = fcntl(l->host_fd, F_GETFL);
    const int fd = ::socket(bound.ss_family, SOCK_STREAM | SOCK_CLOEXEC | ((host_flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) throw std::runtime_error(std::string("private listener: ") + strerror(errno));
    auto copy = std::make_shared<linux::OpenFile>(fd, linux::OpenFile::Kind::Socket, l->path, l->status_flags);
    sockaddr_storage own{};
    socklen_t own_len = 0;
    if (bound.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&own);
      in->sin_family = AF_INET;
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      own_len = sizeof *in;
    } else if (bound.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&own);
      in6->sin6_family = AF_INET6;
      in6->sin6_addr = in6addr_loopback;
      own_len = sizeof *in6;
    } else {
      own.ss_family = AF_UNIX;  // just the family: the kernel picks an abstract name (autobind)
      own_len = sizeof(sa_family_t);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&own), own_len) != 0 || ::listen(fd, 16) != 0)
      throw std::runtime_error(std::string("private listener: ") + strerror(errno));
    socklen_t len = sizeof own;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&own), &len);
    private_addresses_.push_back({own, len});
    copy->listening = true;
    copy->writable_grant = l->writable_grant;
    if (bound.ss_family != AF_UNIX) copy->shown_local = std::make_shared<linux::OpenFile::Address>(linux::OpenFile::Address{bound, bound_len});
    copy->next_peer = std::make_shared<linux::OpenFile::NextPeer>();
    replacements_[l.get()] = copy;
    private_listeners_.push_back(std::move(copy));
  }
}

// Before the next request: connections left in the backlog by a request given up go, and whatever
// the request changed of the listener's flags is the template's again.
void Worker::drain_private_listeners() {
  for (size_t i = 0; i < private_listeners_.size(); ++i) {
    const auto& l = private_listeners_[i];
    const int host_flags = fcntl(l->host_fd, F_GETFL);
    fcntl(l->host_fd, F_SETFL, host_flags | O_NONBLOCK);
    int fd;
    while ((fd = ::accept4(l->host_fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0) ::close(fd);
    const int template_flags = fcntl(tmpl_.listeners[i]->host_fd, F_GETFL);
    fcntl(l->host_fd, F_SETFL, (host_flags & ~O_NONBLOCK) | (template_flags & O_NONBLOCK));
    l->status_flags = tmpl_.listeners[i]->status_flags;
    std::lock_guard<std::mutex> lk(l->next_peer->mutex);
    l->next_peer->peer.reset();
  }
}

const sockaddr_storage& Worker::private_address(size_t index, socklen_t& len) const {
  len = private_addresses_.at(index).second;
  return private_addresses_.at(index).first;
}

void Worker::show_next_peer(size_t index, const sockaddr_storage& peer, socklen_t len) {
  const auto& l = private_listeners_.at(index);
  std::lock_guard<std::mutex> lk(l->next_peer->mutex);
  linux::OpenFile::Address a;
  std::memcpy(&a.addr, &peer, std::min<size_t>(len, sizeof a.addr));
  a.len = len;
  l->next_peer->peer = a;
}

// The request is over when its connections are closed by the guest, or by the peer with nothing left
// unread.
bool Worker::connection_done() const {
  for (const auto& weak : connections_) {
    auto conn = weak.lock();
    if (!conn) continue;
    pollfd pfd{conn->host_fd, POLLRDHUP, 0};
    if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))) return false;
    int unread = 0;
    if (ioctl(conn->host_fd, FIONREAD, &unread) == 0 && unread > 0) return false;
  }
  return true;
}

bool Worker::holds_connection(const linux::Process& p) const {
  for (int fd : p.fds.fds()) {
    auto f = p.fds.get(fd);
    for (const auto& weak : connections_)
      if (weak.lock() == f) return true;
  }
  return false;
}

bool Worker::before_wait(linux::Process& p, bool includes_listener, bool would_block) {
  if (!busy_) return false;
  if (!config_.ephemeral) {
    // Persistent: the request ends with its connection; the worker keeps its state.
    if (connection_done()) end_request(false);
    return false;
  }
  if (!would_block) return false;
  // A server that handed the connection to a child process (and closed its own fd) comes back to
  // wait on the (hidden) listener at once: hold it here until the connection is over instead of
  // letting it spin.
  while (includes_listener && !connection_done() && !holds_connection(p) && !stopping_) {
    std::vector<pollfd> fds;
    for (const auto& weak : connections_)
      if (auto conn = weak.lock()) fds.push_back({conn->host_fd, POLLRDHUP, 0});
    poll(fds.data(), fds.size(), 20);
  }
  if (!connection_done()) return false;
  p.pause = true;
  return true;
}

// A threaded server accepts again while another of its threads still answers: in ephemeral mode the
// next connection belongs to the next request, so this thread waits (without the process lock, so
// the answering thread can go on) until the connection is over, then the worker pauses and resets.
bool Worker::before_blocking_accept(linux::Process& p) {
  if (busy_ && config_.ephemeral && p.threads.size() > 1) {
    linux::Process::BlockingSection unlocked(p);
    while (!connection_done() && !stopping_) {
      std::vector<pollfd> fds;
      for (const auto& weak : connections_)
        if (auto conn = weak.lock()) fds.push_back({conn->host_fd, POLLRDHUP, 0});
      poll(fds.data(), fds.size(), 20);
    }
  }
  return before_wait(p, true, true);
}

bool Worker::listener_hidden(const linux::Process&) const { return config_.ephemeral && busy_; }

// The connection is over: a thread blocked on the listener since before (Go's netpoller, a
// threaded event loop) is kicked out of its wait, which restarts and pauses the worker.
void Worker::after_socket_close(linux::Process& p) {
  if (busy_ && config_.ephemeral && p.threads.size() > 1 && connection_done()) guest_->kick_threads();
}

void Worker::on_accept(linux::Process& p, int guest_fd) {
  if (busy_ && !config_.ephemeral) end_request(false);  // persistent: the previous connection's cost
  if (!busy_) begin_request();
  connections_.push_back(p.fds.get(guest_fd));
  if (!config_.ephemeral) return;
  // From now on the listening sockets look empty to this worker: take them out of its epolls.
  for (int fd : p.fds.fds()) {
    auto ep = p.fds.get(fd);
    if (ep->kind != OpenFile::Kind::Epoll) continue;
    for (const auto& interest : ep->epoll_interest)
      if (auto target = p.fds.get(interest.guest_fd); target && target->listening)
        epoll_ctl(ep->host_fd, EPOLL_CTL_DEL, target->host_fd, nullptr);
  }
}

}  // namespace kvms::server

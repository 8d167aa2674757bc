#include "server/worker.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "linux/epoll.hpp"
#include "linux/policy.hpp"
#include "linux/process_table.hpp"

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
  off_t offset = lseek(f.host_fd, 0, SEEK_CUR);
  if (offset > 0) lseek(fd, offset, SEEK_SET);
  auto copy = std::make_shared<OpenFile>(fd, f.kind, f.path, f.status_flags);
  copy->writable_grant = f.writable_grant;
  return copy;
}

// Both ends of a template pipe map to the two ends of one new pipe.
std::shared_ptr<OpenFile> fresh_pipe_end(const OpenFile& f, std::map<ino_t, std::array<int, 2>>& pipes) {
  struct stat st{};
  if (fstat(f.host_fd, &st) != 0) return nullptr;
  auto it = pipes.find(st.st_ino);
  if (it == pipes.end()) {
    std::array<int, 2> ends{};
    if (pipe2(ends.data(), O_CLOEXEC) != 0) return nullptr;
    it = pipes.emplace(st.st_ino, ends).first;
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
  switch (f.kind) {
    case OpenFile::Kind::Regular:
    case OpenFile::Kind::Directory:
      return reopen(f);
    case OpenFile::Kind::EventFd:
      return linux::clone_eventfd(f);
    case OpenFile::Kind::TimerFd:
      return linux::clone_timerfd(f);
    case OpenFile::Kind::Pipe:
      if (f.path.rfind("pipe:", 0) == 0) return fresh_pipe_end(f, pipes);
      return shared;  // inherited stdio
    default:
      return shared;  // listening and other sockets, ttys, devices
  }
}

}  // namespace

std::unique_ptr<linux::Process> worker_process(const linux::Process& tmpl, std::shared_ptr<kvm::AddressSpace> mm) {
  auto p = std::make_unique<linux::Process>(tmpl, std::move(mm));
  std::map<const OpenFile*, std::shared_ptr<OpenFile>> copies;
  std::map<ino_t, std::array<int, 2>> pipes;
  const std::vector<int> fds = tmpl.fds.fds();
  for (int pass = 0; pass < 2; ++pass) {  // epolls last: their interest lists name the worker's fds
    for (int fd : fds) {
      std::shared_ptr<OpenFile> f = tmpl.fds.get(fd);
      if ((f->kind == OpenFile::Kind::Epoll) != (pass == 1)) continue;
      auto& copy = copies[f.get()];
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
    guest_ = tmpl_.guest->fork_paused(tmpl_.threads);
    reset(false);
    stats_.add_worker_created(monotonic_ns() - t0);
    created = true;
    serve();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: worker %d stopped: %s\n", id_, e.what());
    if (!created) stats_.add_worker_failed();
  }
}

void Worker::serve() {
  bool pending = true;  // the template's wait syscall, not yet handled
  while (!(stopping_ && !busy_)) {
    const linux::RunResult r = guest_->run(0, pending, true);
    pending = false;
    switch (r.reason) {
      case linux::RunResult::Paused:
        end_request(false);
        pending = true;
        break;
      case linux::RunResult::Interrupted:
      case linux::RunResult::TimedOut:
        if (busy_ && request_deadline_ns_ && monotonic_ns() >= request_deadline_ns_) {
          std::fprintf(stderr, "kvmserver: worker %d: request took longer than %g s: connection closed, worker reset\n",
                       id_, config_.max_request_time);
          stats_.add_timeout();
          end_request(true);
          pending = true;
        }
        break;
      default:
        std::fprintf(stderr, "kvmserver: worker %d: %s: %s: connection closed, worker reset\n", id_,
                     guest_->program_path().c_str(),
                     r.message.empty() ? ("exited with status " + std::to_string(r.status)).c_str() : r.message.c_str());
        stats_.add_fault();
        end_request(true);
        pending = true;
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
  guest_->set_process(worker_process(*tmpl_.process, guest_->shared_address_space()));
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
  p.table = std::make_shared<linux::ProcessTable>(p.pid);
  auto account = std::make_shared<linux::ResourceAccount>(p.limits());
  p.join_account(account);
  if (config_.max_request_memory)
    account->set_limit(linux::ResourceAccount::kMemory, account->used(linux::ResourceAccount::kMemory) + config_.max_request_memory,
                       "--max-request-memory=" + std::to_string(config_.max_request_memory >> 20));
  guest_->restore_threads(tmpl_.threads);
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
  if (counted) stats_.add_request(cost);
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

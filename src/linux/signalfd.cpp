// signalfd: a file to read pending signals from. Its host fd is an eventfd that kvmserver keeps
// readable exactly while a signal in its mask is pending for the process (update_signalfds runs
// whenever a signal is queued or taken), so poll, select and epoll wait on it like on any fd; a
// read takes the signals themselves off the guest's pending queues.
#include <signal.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "kvm/vm.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kUnblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));

uint64_t pending_anywhere(const Process& p) {
  uint64_t pending = 0;
  for (const auto& [tid, t] : p.threads) pending |= t.pending_signals;
  return pending;
}

// (The guest's F_SETFL reaches the host fd too: whether it blocks is not ours to rely on.)
void set_readable(int eventfd, bool readable) {
  uint64_t count = 0;
  pollfd pfd{eventfd, POLLIN, 0};
  if (::poll(&pfd, 1, 0) == 1) {
    if (readable) return;  // already
    (void)!::read(eventfd, &count, sizeof count);  // drains it (the count is 1 at most)
  }
  if (readable) {
    count = 1;
    (void)!::write(eventfd, &count, sizeof count);
  }
}

// Linux's signalfd_copyinfo: which fields mean something depends on how the signal was sent.
signalfd_siginfo to_signalfd_info(const siginfo_t& info) {
  signalfd_siginfo out{};
  out.ssi_signo = uint32_t(info.si_signo);
  out.ssi_errno = info.si_errno;
  out.ssi_code = info.si_code;
  if (info.si_code == SI_TIMER) {
    out.ssi_tid = uint32_t(info.si_timerid);
    out.ssi_overrun = uint32_t(info.si_overrun);
    out.ssi_ptr = uint64_t(info.si_value.sival_ptr);
    out.ssi_int = info.si_value.sival_int;
    return out;
  }
  out.ssi_pid = uint32_t(info.si_pid);
  out.ssi_uid = info.si_uid;
  if (info.si_signo == SIGCHLD && info.si_code > 0) {
    out.ssi_status = info.si_status;
  } else if (info.si_code == SI_QUEUE || info.si_code == SI_MESGQ || info.si_code < SI_TKILL) {
    out.ssi_ptr = uint64_t(info.si_value.sival_ptr);
    out.ssi_int = info.si_value.sival_int;
  }
  return out;
}

// Takes one pending signal of `mask`: the calling thread's first, then the process's.
std::optional<siginfo_t> take_one(Process& p, uint64_t mask) {
  ThreadContext& self = p.thread();
  if (const uint64_t ready = self.pending_signals & mask) return dequeue_signal(p, self, __builtin_ctzll(ready) + 1);
  for (auto& [tid, t] : p.threads)
    if (const uint64_t ready = t.pending_signals & mask) return dequeue_signal(p, t, __builtin_ctzll(ready) + 1);
  return std::nullopt;
}

int64_t create(Process& p, int fd, uint64_t mask_addr, uint64_t size, int flags) {
  if (flags & ~(SFD_CLOEXEC | SFD_NONBLOCK)) return -EINVAL;
  if (size != sizeof(uint64_t)) return -EINVAL;
  uint64_t mask = 0;
  if (!p.mm().read(mask_addr, mask)) return -EFAULT;
  mask &= ~kUnblockable;
  if (fd != -1) {  // a new mask for an existing signalfd
    auto f = p.fds.get(fd);
    if (!f) return -EBADF;
    if (f->kind != OpenFile::Kind::SignalFd) return -EINVAL;
    f->signal_mask = mask;
    update_signalfds(p);
    return fd;
  }
  const int h = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h < 0) return -errno;
  auto file = std::make_shared<OpenFile>(h, OpenFile::Kind::SignalFd, "anon_inode:[signalfd]",
                                         O_RDWR | ((flags & SFD_NONBLOCK) ? O_NONBLOCK : 0));
  file->signal_mask = mask;
  set_readable(h, pending_anywhere(p) & mask);
  p.has_signalfd = true;
  return p.fds.install(std::move(file), flags & SFD_CLOEXEC);
}

}  // namespace

void update_signalfds(Process& p) {
  if (!p.has_signalfd) return;
  const uint64_t pending = pending_anywhere(p);
  for (int fd : p.fds.fds()) {
    auto f = p.fds.get(fd);
    if (f && f->kind == OpenFile::Kind::SignalFd) set_readable(f->host_fd, pending & f->signal_mask);
  }
}

int64_t signalfd_read(Process& p, OpenFile& f, uint64_t buf, uint64_t count) {
  if (count < sizeof(signalfd_siginfo)) return -EINVAL;
  Process::HandlerWait wait(p);
  std::unique_lock<std::mutex>& lk = wait.lock();
  uint64_t done = 0;
  for (;;) {
    while (done + sizeof(signalfd_siginfo) <= count) {
      auto info = take_one(p, f.signal_mask);
      if (!info) break;
      const signalfd_siginfo out = to_signalfd_info(*info);
      if (!p.mm().copy_to_user(buf + done, &out, sizeof out)) {
        update_signalfds(p);
        return done ? int64_t(done) : -EFAULT;  // (Linux loses that signal too)
      }
      done += sizeof out;
    }
    if (done) break;
    if (f.status_flags & O_NONBLOCK) return -EAGAIN;
    ThreadContext& t = p.thread();
    if (t.pending_signals & ~t.sigmask) return -EINTR;  // a handler to run first: restarts after it
    if (p.lock.stop || (t.vcpu && t.vcpu->run_area()->immediate_exit)) return -EINTR;
    p.lock.changed.wait_for(lk, std::chrono::milliseconds(100));
  }
  update_signalfds(p);
  return int64_t(done);
}

std::shared_ptr<OpenFile> clone_signalfd(const OpenFile& signalfd) {
  const int h = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h < 0) return nullptr;
  auto copy = std::make_shared<OpenFile>(h, OpenFile::Kind::SignalFd, signalfd.path, signalfd.status_flags);
  copy->signal_mask = signalfd.signal_mask;
  return copy;
}

KVMS_SYSCALL(signalfd4) { return create(p, int(a.a[0]), a.a[1], a.a[2], int(a.a[3])); }
KVMS_SYSCALL(signalfd) { return create(p, int(a.a[0]), a.a[1], a.a[2], 0); }

}  // namespace kvms::linux

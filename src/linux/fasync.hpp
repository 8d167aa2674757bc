#pragma once
// Signal-driven I/O: fcntl's F_SETOWN, F_SETOWN_EX and F_SETSIG name who gets a signal and which one
// when a file becomes ready, and O_ASYNC (F_SETFL, ioctl FIOASYNC) turns it on, as Linux's fasync.
// kvmserver cannot let the host do it (the host's SIGIO would go to kvmserver, with host pids), so
// a host thread per guest process that turned O_ASYNC on waits on the host fds of its files in an
// edge-triggered epoll and posts the signal to the guest owner: each new readiness (data written to
// a pipe, arriving on a socket, room to write again) one signal, as Linux's wake-ups send one.
#include <cstdint>
#include <memory>

namespace kvms::linux {

class Process;
struct OpenFile;
class AsyncWatcher;

// F_SETOWN, F_GETOWN, F_SETOWN_EX, F_GETOWN_EX, F_SETSIG, F_GETSIG on f: the result or -errno.
int64_t fcntl_owner(Process& p, OpenFile& f, int cmd, uint64_t arg);

// F_SETFL changed O_ASYNC of f (through guest fd `fd`, the si_fd its signals carry): watched from
// now on by p's watcher, or no longer. Files Linux has no fasync for (regular files, directories,
// eventfds, signalfds, timerfds, epolls) keep the flag and signal nothing, as there.
void set_async(Process& p, const std::shared_ptr<OpenFile>& f, int fd, bool on);

// The Process member: a copy (a fork's child, a worker reset to its template) gets no watcher; the
// files it shares stay watched by the process that turned O_ASYNC on, while that one runs.
struct AsyncIoSlot {
  std::shared_ptr<AsyncWatcher> watcher;
  AsyncIoSlot() = default;
  AsyncIoSlot(const AsyncIoSlot&) {}
  AsyncIoSlot& operator=(const AsyncIoSlot&);
  ~AsyncIoSlot();  // stops the watcher's thread: the process is never reached afterwards
};

}  // namespace kvms::linux

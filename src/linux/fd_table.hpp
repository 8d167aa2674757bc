#pragma once
// The guest's file descriptors. Every open guest fd is backed by a host fd we opened on its behalf
// (files, directories, pipes, the inherited stdio), so most file syscalls are the host syscall on the
// host fd with the guest's buffer (identity-mapped guest memory is host memory).
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <ctime>
#include <string>
#include <vector>

#include "linux/limits.hpp"

namespace kvms::linux {

struct OpenFile {
  enum class Kind { Regular, Directory, Pipe, Tty, CharDevice, Socket, Epoll, EventFd, TimerFd, SignalFd, Other };
  OpenFile(int host_fd, Kind kind, std::string path, int status_flags);
  ~OpenFile();  // closes the host fd
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

  int host_fd;
  Kind kind;
  std::string path;   // guest path it was opened by ("pipe:[N]", "/dev/stdout"...), for readlink and logs
  int status_flags;   // O_APPEND, O_NONBLOCK, O_RDONLY/O_WRONLY/O_RDWR ... as the guest set them
  bool writable_grant = false;  // opened under a grant that allows writing (fchmod, futimens...)
  bool listening = false;  // a socket after a successful listen(): what the server layer watches
  uint64_t socketpair_id = 0;  // both ends of one socketpair() share it (a snapshot re-pairs them)
  // A Unix socket's peer as Linux's SO_PEERCRED would name it when the host names kvmserver itself
  // (socket_control.cpp): the guest pid that made a socketpair, listens, or connected; 0 when not
  // known. A guest's Unix listener also keeps the guests whose connections wait to be accepted
  // (oldest first; guarded by socket_control.cpp's lock).
  int cred_pid = 0;
  std::deque<int> unix_connectors;
  uint64_t signal_mask = 0;    // a signalfd's signals (bit sig-1; signalfd.cpp)
  // A /proc or /sys file kvmserver made up (procfs.cpp) is a sealed memfd holding its text, but
  // lseek answers as Linux's file would: most are seq_files, whose seq_lseek refuses SEEK_END;
  // the others (cmdline, environ, sysctls) have size 0 there.
  enum class MadeUpSeek : uint8_t { None, SeqFile, SizeZero } made_up_seek = MadeUpSeek::None;

  // Signal-driven I/O (fasync.hpp), per open file description as on Linux: the owner F_SETOWN or
  // F_SETOWN_EX named (type: Linux's F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2; id 0: none),
  // F_SETSIG's signal (0: SIGIO without details), the guest fd O_ASYNC was set through (si_fd),
  // and the watch that exists while O_ASYNC is on. Under async_mutex: the processes sharing the
  // file and the watcher's thread read them.
  struct AsyncOwner {
    int type = 1, id = 0, sig = 0, fd = -1;
  };
  std::mutex async_mutex;
  AsyncOwner async;
  std::shared_ptr<void> async_watch;

  // Addresses a socket shows the guest in place of its host socket's own (--isolate=request: a
  // worker's private copy of a listener shows the address the guest bound; a connection from the
  // front shows the client as its peer). Set by the server layer; read by getsockname,
  // getpeername and accept.
  struct Address {
    sockaddr_storage addr{};
    socklen_t len = 0;
  };
  std::shared_ptr<const Address> shown_local, shown_peer;
  // A private listener: the peer its next accepted connection is to show (one request at a time).
  struct NextPeer {
    std::mutex mutex;
    std::optional<Address> peer;
  };
  std::shared_ptr<NextPeer> next_peer;

  // What this open file holds of its process tree's account (limits.hpp), given back when its last
  // fd closes: host memory behind it (a memfd's pages, a pipe's or a socket's buffers), and one
  // counted resource (an epoll's registrations, a timer).
  Charge memory_charge;
  Charge resource_charge;

  // An epoll instance's interest list as the guest registered it (guest fds), so a worker's fork or
  // reset can rebuild the host epoll over its own host fds.
  struct EpollInterest {
    int guest_fd;
    uint32_t events;
    uint64_t data;
  };
  std::vector<EpollInterest> epoll_interest;

  // A directory kvmserver makes up (procfs.cpp: /proc/self/fd): its entries and the read position,
  // which getdents64 and lseek use instead of the host fd (an empty, deleted directory).
  struct SyntheticDir {
    struct Entry {
      std::string name;
      uint8_t type;  // DT_*
    };
    std::vector<Entry> entries;
    size_t pos = 0;
  };
  std::shared_ptr<SyntheticDir> synthetic_dir;

  // A template's timerfd as it stood when the template paused (record_paused_timerfd): a worker's
  // copy is armed from this, as its clock starts from that instant, not from the template's live
  // timer, which goes on counting down (and expiring) while the template waits.
  struct TimerSetting {
    int clock = 0;
    itimerspec value{};   // relative, as timerfd_gettime gives it
    uint64_t ticks = 0;   // expirations not read yet
  };
  std::optional<TimerSetting> paused_timer;
  // A template's eventfd, timerfd, regular file or pipe as the host had it when the template paused
  // (server::record_paused_files): every reset makes a worker's copy from this instead of asking the
  // host again (fdinfo, F_GETFL, lseek, fstat: up to 5 host calls per file and request). The
  // template never runs again, so this is what its files hold.
  struct PausedFile {
    bool nonblocking = false;    // the host fd's O_NONBLOCK (eventfd, timerfd)
    uint64_t eventfd_count = 0;
    bool eventfd_semaphore = false;
    int64_t offset = 0;          // regular file
    uint64_t inode = 0;          // pipe: both ends of one template pipe have the same
  };
  std::optional<PausedFile> paused_file;
};

class FdTable {
 public:
  static constexpr int kDefaultLimit = 1024;
  static constexpr int kMaxLimit = 1 << 20;  // Linux's fs.nr_open: RLIMIT_NOFILE cannot go past it

  // Allocates the lowest free guest fd >= min_fd, or -EMFILE.
  int install(std::shared_ptr<OpenFile> file, bool cloexec, int min_fd = 0);
  // Puts file at exactly `fd` (dup2/dup3), closing what was there. -EBADF if fd is out of range.
  int install_at(int fd, std::shared_ptr<OpenFile> file, bool cloexec);
  std::shared_ptr<OpenFile> get(int fd) const;
  int close(int fd);  // 0 or -EBADF
  void close_range(unsigned first, unsigned last, bool cloexec_only_mark);
  void close_on_exec();  // closes every fd marked close-on-exec
  bool cloexec(int fd) const;
  int set_cloexec(int fd, bool on);
  size_t open_count() const { return open_; }
  int limit() const { return limit_; }
  void set_limit(int limit) { limit_ = limit; }
  // Guest fds in use, ascending (for /proc/self/fd and resets).
  std::vector<int> fds() const;

 private:
  struct Slot {
    std::shared_ptr<OpenFile> file;
    bool cloexec = false;
  };
  void put(size_t fd, Slot slot);  // keeps open_ right
  std::vector<Slot> slots_;
  size_t open_ = 0;
  int limit_ = kDefaultLimit;
};

// Wraps a host fd the guest inherits (stdin/stdout/stderr): dup'ed, so closing it in the guest never
// closes ours.
std::shared_ptr<OpenFile> inherit_host_fd(int host_fd, std::string name);
OpenFile::Kind kind_of(int host_fd);

}  // namespace kvms::linux

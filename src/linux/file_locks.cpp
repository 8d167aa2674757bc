// fcntl's record locks. POSIX locks (F_GETLK, F_SETLK, F_SETLKW) are kvmserver's own, between guest
// processes (record_locks.hpp: every guest process is a thread of kvmserver, so the host's POSIX
// locks would never conflict between them); OFD locks (F_OFD_*) are the host's, as they belong to
// open file descriptions, which guest processes share as on Linux. On Linux the two kinds conflict
// with each other, so each side also looks at the other: a POSIX lock meets the host's OFD locks
// through F_OFD_GETLK, an OFD lock meets kvmserver's POSIX locks through its table. (A conflict
// between the two kinds is found by testing, then setting: not atomic, and a wait for the other
// kind polls.)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "kvm/vm.hpp"
#include "linux/process.hpp"
#include "linux/record_locks.hpp"

namespace kvms::linux {
namespace {

// An OFD lock has no guest process as owner: every process's POSIX lock is in its way.
constexpr uint64_t kNoOwner = 0;
constexpr auto kPollOtherKind = std::chrono::milliseconds(20);

std::optional<FileKey> file_key(const OpenFile& f) {
  struct stat st{};
  if (::fstat(f.host_fd, &st) != 0) return std::nullopt;
  return FileKey{st.st_dev, st.st_ino};
}

// The range of a struct flock, resolved as Linux's flock_to_posix_lock does.
int resolve_range(const OpenFile& f, const struct flock& lock, int pid, RecordLock& out) {
  int64_t base = 0;
  switch (lock.l_whence) {
    case SEEK_SET: break;
    case SEEK_CUR: base = ::lseek(f.host_fd, 0, SEEK_CUR); break;
    case SEEK_END: {
      struct stat st{};
      if (::fstat(f.host_fd, &st) != 0) return -errno;
      base = st.st_size;
      break;
    }
    default: return -EINVAL;
  }
  if (base < 0) return -EINVAL;
  int64_t start;
  if (__builtin_add_overflow(base, int64_t(lock.l_start), &start)) return -EOVERFLOW;
  if (start < 0) return -EINVAL;
  out = RecordLock{lock.l_type, uint64_t(start), UINT64_MAX, pid};
  if (lock.l_len > 0) {
    int64_t end;
    if (__builtin_add_overflow(start, int64_t(lock.l_len), &end)) return -EOVERFLOW;
    out.end = uint64_t(end);
  } else if (lock.l_len < 0) {
    if (start + lock.l_len < 0) return -EINVAL;
    out.end = uint64_t(start);
    out.start = uint64_t(start + lock.l_len);
  }
  return 0;
}

struct flock to_flock(const RecordLock& r) {
  struct flock l{};
  l.l_type = r.type;
  l.l_whence = SEEK_SET;
  l.l_start = off_t(r.start);
  l.l_len = r.end == UINT64_MAX ? 0 : off_t(r.end - r.start);
  l.l_pid = r.pid;
  return l;
}

// The host's OFD lock in the way of `wanted` (l_type F_UNLCK: none; l_pid -1, as Linux reports an
// OFD lock to F_GETLK).
struct flock host_ofd_conflict(const OpenFile& f, const RecordLock& wanted) {
  struct flock q = to_flock(wanted);
  q.l_pid = 0;
  if (::fcntl(f.host_fd, F_OFD_GETLK, &q) != 0) q.l_type = F_UNLCK;
  if (q.l_type != F_UNLCK) q.l_pid = -1;
  return q;
}

// Whether the calling thread must give up a wait (a kick: the call is restarted, or a signal).
std::function<bool()> kick_check(Process& p) {
  kvm::Vcpu* vcpu = p.thread().vcpu;
  return [&p, vcpu] { return p.lock.stop.load() || (vcpu && vcpu->run_area()->immediate_exit); };
}

// Polls until `busy` is false (0) or the thread is kicked (-EINTR); the process lock is not held.
template <typename Busy> int wait_other_kind(const std::function<bool()>& kicked, Busy busy) {
  while (busy()) {
    if (kicked()) return -EINTR;
    std::this_thread::sleep_for(kPollOtherKind);
  }
  return 0;
}

int64_t posix_lock(Process& p, const OpenFile& f, int cmd, uint64_t uflock, struct flock& lock) {
  if (lock.l_type != F_RDLCK && lock.l_type != F_WRLCK && lock.l_type != F_UNLCK) return -EINVAL;
  RecordLock wanted;
  if (int rc = resolve_range(f, lock, p.pid, wanted)) return rc;
  auto key = file_key(f);
  if (!key) return -EBADF;
  if (cmd == F_GETLK) {
    const RecordLock got = test_record_lock(*key, p.lock_owner.id(), wanted);
    if (got.type != F_UNLCK) {
      lock = to_flock(got);
    } else if (lock.l_type != F_UNLCK) {
      const struct flock ofd = host_ofd_conflict(f, wanted);
      lock.l_type = F_UNLCK;
      if (ofd.l_type != F_UNLCK) lock = ofd;
    }
    return p.mm().write(uflock, lock) ? 0 : -EFAULT;
  }
  const int mode = f.status_flags & O_ACCMODE;
  if (lock.l_type == F_RDLCK && mode == O_WRONLY) return -EBADF;
  if (lock.l_type == F_WRLCK && mode == O_RDONLY) return -EBADF;
  const bool taking = lock.l_type != F_UNLCK;
  if (cmd == F_SETLK) {
    if (taking && host_ofd_conflict(f, wanted).l_type != F_UNLCK) return -EAGAIN;
    return set_record_lock(*key, p.lock_owner.id(), wanted, false, nullptr);
  }
  auto kicked = kick_check(p);
  Process::BlockingSection unlocked(p);  // other threads of the guest run while it waits
  if (taking)
    if (int rc = wait_other_kind(kicked, [&] { return host_ofd_conflict(f, wanted).l_type != F_UNLCK; })) return rc;
  return set_record_lock(*key, p.lock_owner.id(), wanted, true, kicked);
}

// F_OFD_*: the host's, after kvmserver's POSIX locks of every guest process had their say.
int64_t ofd_lock(Process& p, const OpenFile& f, int cmd, uint64_t uflock, struct flock& lock) {
  if (lock.l_pid != 0) return -EINVAL;  // (as the host would say first)
  std::optional<FileKey> key;
  RecordLock wanted;
  const bool taking = lock.l_type == F_RDLCK || lock.l_type == F_WRLCK;
  if (taking && any_record_locks() && resolve_range(f, lock, 0, wanted) == 0) key = file_key(f);
  auto posix_conflict = [&] {
    if (key) return test_record_lock(*key, kNoOwner, wanted);
    RecordLock none;
    none.type = F_UNLCK;  // (RecordLock's 0 is F_RDLCK)
    return none;
  };
  int rc;
  if (cmd == F_OFD_SETLKW) {
    auto kicked = kick_check(p);
    Process::BlockingSection unlocked(p);
    if (int err = wait_other_kind(kicked, [&] { return posix_conflict().type != F_UNLCK; })) return err;
    rc = ::fcntl(f.host_fd, cmd, &lock);
  } else {
    if (cmd == F_OFD_SETLK && posix_conflict().type != F_UNLCK) return -EAGAIN;
    rc = ::fcntl(f.host_fd, cmd, &lock);
  }
  if (rc < 0) return -errno;
  if (cmd != F_OFD_GETLK) return 0;
  if (lock.l_type == F_UNLCK) {
    const RecordLock got = posix_conflict();
    if (got.type != F_UNLCK) lock = to_flock(got);
  }
  return p.mm().write(uflock, lock) ? 0 : -EFAULT;
}

}  // namespace

int64_t fcntl_lock(Process& p, const OpenFile& f, int cmd, uint64_t uflock) {
  struct flock lock{};
  if (!p.mm().read(uflock, lock)) return -EFAULT;
  if (cmd == F_GETLK || cmd == F_SETLK || cmd == F_SETLKW) return posix_lock(p, f, cmd, uflock, lock);
  return ofd_lock(p, f, cmd, uflock, lock);
}

void release_locks_of(Process& p, const std::shared_ptr<OpenFile>& f) {
  if (!f || !any_record_locks() || f->kind != OpenFile::Kind::Regular) return;
  if (auto key = file_key(*f)) release_record_locks(p.lock_owner.id(), &*key);
}

}  // namespace kvms::linux

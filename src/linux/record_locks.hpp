#pragma once
// POSIX record locks (fcntl F_SETLK, F_SETLKW, F_GETLK) between the guest's processes. Every guest
// process is a thread of kvmserver, so the host's own POSIX locks (owned by the host process) never
// conflict between them: kvmserver keeps them itself, per file (device and inode), per owning
// guest process, with Linux's rules: a process's locks on a file merge and split, never conflict
// with each other, all go when it closes any fd of that file and when it ends; F_SETLKW waits and
// reports EDEADLK for a wait that would close a cycle. (OFD locks stay the host's: they belong to
// open file descriptions, which guest processes share as on Linux.)
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>

namespace kvms::linux {

class Process;
struct OpenFile;

// file_locks.cpp: fcntl's F_GETLK, F_SETLK, F_SETLKW (these tables) and F_OFD_GETLK, F_OFD_SETLK,
// F_OFD_SETLKW (the host's) on f, struct flock at uflock: 0 or -errno.
int64_t fcntl_lock(Process& p, const OpenFile& f, int cmd, uint64_t uflock);
// An fd of f is going: the POSIX locks its process holds on f's file go too, whichever fd set them.
void release_locks_of(Process& p, const std::shared_ptr<OpenFile>& f);

// One owner per guest process object: copies (a fork's child, a worker reset) are new owners, and
// an owner's locks go with it.
class LockOwner {
 public:
  LockOwner();
  LockOwner(const LockOwner&);
  LockOwner& operator=(const LockOwner&);
  ~LockOwner();
  uint64_t id() const { return id_; }

 private:
  uint64_t id_;
};

struct RecordLock {
  short type = 0;       // F_RDLCK, F_WRLCK (F_UNLCK: none)
  uint64_t start = 0;   // first byte
  uint64_t end = 0;     // one past the last (UINT64_MAX: to the end of the file, however it grows)
  int pid = 0;          // the owner's guest pid, for F_GETLK
};

struct FileKey {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator<(const FileKey& o) const { return dev != o.dev ? dev < o.dev : ino < o.ino; }
};

// F_GETLK: the first lock of another owner that would block `wanted` (type F_UNLCK when none).
RecordLock test_record_lock(FileKey file, uint64_t owner, const RecordLock& wanted);
// F_SETLK/F_SETLKW: sets (or with F_UNLCK removes) owner's lock on the range. 0, -EAGAIN when
// another owner's lock is in the way and !wait, -EDEADLK, -ENOLCK past 8192 locks of one owner,
// or -EINTR when `interrupted` says so while waiting (polled at least every 100 ms).
int set_record_lock(FileKey file, uint64_t owner, const RecordLock& lock, bool wait,
                    const std::function<bool()>& interrupted);
// Whether any process holds a record lock at all (a close need not look for its locks otherwise).
bool any_record_locks();
// Every lock the owner holds on the file (close of an fd of it), or on every file (owner == its end).
void release_record_locks(uint64_t owner, const FileKey* file);

}  // namespace kvms::linux

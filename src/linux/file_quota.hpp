#pragma once
// What writing files costs a process tree (limits.hpp): a memfd's pages are host memory
// (--max-memory); a file in a private /tmp is both --max-tmp-size and --max-memory (the host's /tmp
// is often a tmpfs), and so is every name created there (at least one page each, so a flood of empty
// files is bounded too). Handlers that write or create take a WriteQuota first and let it settle
// what the file holds afterwards; a write that does not fit is cut short, as on a file system that
// fills up, or fails with ENOSPC.
#include <cstdint>
#include <string>

#include "linux/process.hpp"

namespace kvms::linux {

// Whether a canonical guest path lies in the process's private /tmp.
bool in_private_tmp(const Process& p, const std::string& guest_path);

class WriteQuota {
 public:
  // Before writing up to len bytes to f (len may be cut). Check error() before writing.
  WriteQuota(Process& p, OpenFile& f, uint64_t& len);
  // Before creating a name at canonical guest path `path` (open O_CREAT, mkdir, symlink, link,
  // mknod): one page if it is in a private /tmp.
  WriteQuota(Process& p, const std::string& path);
  // Settles what the written file holds now (and gives back what was reserved).
  ~WriteQuota();
  WriteQuota(const WriteQuota&) = delete;
  WriteQuota& operator=(const WriteQuota&) = delete;

  int error() const { return error_; }  // 0 or -ENOSPC
  // The name was created: charge it (call with its host fd or path once it exists).
  void created(int host_fd);
  void created_at(const std::string& host_path);

 private:
  enum class Kind { None, Memfd, TmpFile, TmpName };
  Process& p_;
  OpenFile* file_ = nullptr;
  Kind kind_ = Kind::None;
  uint64_t reserved_ = 0;
  int error_ = 0;
};

// Host memory an open file holds for its life (a pipe's buffer, a socket's): charged to f's
// memory_charge, which gives it back when the file closes. -errno_if_refused (and a -v line) when
// the tree has no room for it; `what` names the call for that line.
int charge_open_file(Process& p, OpenFile& f, uint64_t bytes, int errno_if_refused, const char* what);

// A file changed size by other means than a WriteQuota'd fd (truncate by path): if it is in a
// private /tmp, charge what it holds now.
void tmp_file_changed(Process& p, const std::string& guest_path, int host_fd);

// A name in a private /tmp is about to go (unlink, rmdir, rename over it): returns its inode when
// the host's file goes with it (its last link), for forget_removed() after the call succeeded.
uint64_t tmp_inode_removed_by(const Process& p, const std::string& guest_path, const std::string& host_path);
void forget_removed(Process& p, uint64_t inode);

}  // namespace kvms::linux

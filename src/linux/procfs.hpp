#pragma once
// The few /proc and /sys files runtimes read about themselves, made up from the guest's own state
// (never the host's /proc): /proc/self/{exe,cwd,root,fd/,fd/N,maps,status,stat,statm,cmdline,comm},
// the same under /proc/thread-self and /proc/<own pid>, /proc/cpuinfo, /proc/meminfo and
// /sys/devices/system/cpu/{online,possible,present}. Files are read-only snapshots taken at open
// (a sealed host memfd, so read/pread/lseek/fstat/mmap work as on any file); links answer readlink
// and stat; /proc/self/fd is a directory getdents64 lists.
#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "linux/process.hpp"

namespace kvms::linux::procfs {

// Each takes an absolute, lexically normalized guest path and returns nullopt when procfs does not
// make that path up (the caller goes on to the path policy).

// open: the new guest fd or -errno (EACCES for writing, ENOENT for a missing fd, ...).
std::optional<int64_t> open(Process& p, const std::string& path, int flags);
// readlink: the link's text, or -errno (EINVAL: not a link).
std::optional<std::variant<std::string, int>> readlink(Process& p, const std::string& path);
// stat/lstat: 0 with st filled in, or -errno.
std::optional<int> stat(Process& p, const std::string& path, bool follow, struct stat& st);
// getdents64 on a directory procfs opened; nullopt when f is not one.
std::optional<int64_t> getdents64(Process& p, OpenFile& f, uint64_t buf, uint64_t count);

// The text of a made-up file (exposed for tests); nullopt when the path is not one.
std::optional<std::string> contents(Process& p, const std::string& path);

}  // namespace kvms::linux::procfs

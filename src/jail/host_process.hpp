#pragma once
// The host process's basics, set first thing in main, before any guest data exists.
#include <cstdint>

#include "linux/limits.hpp"

namespace kvms::jail {

// PR_SET_NO_NEW_PRIVS (nothing kvmserver runs can gain privileges; seccomp needs it too), no core
// dumps (RLIMIT_CORE 0) and not dumpable (a core or a ptrace attach would expose guest data:
// requests, their secrets), RLIMIT_NOFILE set to `open_files` (soft and hard; the hard limit if that
// is lower). Throws std::runtime_error naming the step that failed.
void harden_host_process(uint64_t open_files);

// RLIMIT_NOFILE for kvmserver serving with `workers` worker VMs (1 in run mode) under the guest caps
// `limits`. Every guest fd is a host fd, and so are each guest process's VM, vCPU and memory fds:
// kvmserver's own few hundred, plus, per guest process tree (the template's, and one per worker),
// --max-processes processes each with a full fd table (--max-fds) and its VM and vCPU fds. The caps
// answer a guest first (EMFILE, EAGAIN); the bound only keeps a bug in them from taking the host's
// whole table.
uint64_t open_files_limit(unsigned workers, const linux::Limits& limits);

}  // namespace kvms::jail

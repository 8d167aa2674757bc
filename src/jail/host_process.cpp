#include "jail/host_process.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace kvms::jail {
namespace {

constexpr uint64_t kOwnFiles = 256;            // stdio, /dev/kvm, listeners, metrics, directories
constexpr uint64_t kPerProcessOverhead = 32;   // besides its fds and vCPUs: its VM, memory and /proc memfds

[[noreturn]] void fail(const char* what) { throw std::runtime_error(std::string(what) + ": " + strerror(errno)); }

}  // namespace

uint64_t open_files_limit(unsigned workers, const linux::Limits& limits) {
  const uint64_t per_process = limits.fds + limits.threads + kPerProcessOverhead;
  return kOwnFiles + (uint64_t(workers) + 1) * limits.processes * per_process;
}

void harden_host_process(uint64_t open_files) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("PR_SET_NO_NEW_PRIVS");
  const rlimit no_core{0, 0};
  if (setrlimit(RLIMIT_CORE, &no_core) != 0) fail("RLIMIT_CORE");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("PR_SET_DUMPABLE");
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) fail("getrlimit(RLIMIT_NOFILE)");
  const rlim_t bound = files.rlim_max == RLIM_INFINITY || open_files < files.rlim_max ? open_files : files.rlim_max;
  files.rlim_cur = files.rlim_max = bound;
  if (setrlimit(RLIMIT_NOFILE, &files) != 0) fail("setrlimit(RLIMIT_NOFILE)");
}

}  // namespace kvms::jail

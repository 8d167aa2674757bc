// kvmserver: per-request isolation for unmodified Linux programs with KVM.
#include <signal.h>
#include <sys/resource.h>

#include "cli/options.hpp"
#include "server/run_command.hpp"

int main(int argc, char** argv) {
  // A guest writing to a closed socket or pipe gets EPIPE; it must never kill us.
  signal(SIGPIPE, SIG_IGN);
  // Every guest fd is a host fd, and workers each hold their own: take the whole hard limit.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  int status = 0;
  auto opts = kvms::cli::parse_command_line(argc, argv, status);
  if (!opts) return status;
  return kvms::server::run_program(*opts);
}

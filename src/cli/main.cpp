// kvmserver: per-request isolation for unmodified Linux programs with KVM.
#include <signal.h>

#include <cstdio>
#include <exception>

#include "cli/doctor.hpp"
#include "cli/options.hpp"
#include "jail/host_process.hpp"
#include "server/run_command.hpp"
#include "server/snapshot_command.hpp"

int main(int argc, char** argv) {
  // A guest writing to a closed socket or pipe gets EPIPE; it must never kill us.
  signal(SIGPIPE, SIG_IGN);
  int status = 0;
  auto opts = kvms::cli::parse_command_line(argc, argv, status);
  if (!opts) return status;
  if (opts->command == kvms::cli::Command::Doctor) return kvms::cli::run_doctor();
  // Reading a snapshot file needs neither KVM nor the sandbox around a guest.
  if (opts->command == kvms::cli::Command::Inspect) return kvms::server::inspect_snapshot(*opts);
  try {
    kvms::jail::harden_host_process(kvms::jail::open_files_limit(opts->threads, kvms::cli::limits_config(*opts)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    return 125;
  }
  if (opts->command == kvms::cli::Command::Serve) return kvms::server::serve_snapshot(*opts);
  return kvms::server::run_program(*opts);
}

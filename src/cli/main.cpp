// kvmserver: per-request isolation for unmodified Linux programs with KVM.
#include "cli/options.hpp"
#include "server/run_command.hpp"

int main(int argc, char** argv) {
  int status = 0;
  auto opts = kvms::cli::parse_command_line(argc, argv, status);
  if (!opts) return status;
  return kvms::server::run_program(*opts);
}

#pragma once
// The snapshot commands (src/snapshot/ has the file and how to save and load it):
//   kvmserver snapshot --output FILE [OPTIONS] run [--] PROGRAM [ARGS...]   (run_command.cpp boots it)
//   kvmserver --snapshot-on-ready FILE [OPTIONS] run ...                     (the same, then serves)
//   kvmserver serve FILE [OPTIONS]
//   kvmserver inspect [--verify] FILE
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "linux/guest.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "snapshot/snapshot.hpp"

namespace kvms::server {

// Saves the paused template; prints one line (size, time). 0, or the exit status after one line.
int write_snapshot(linux::Guest& tmpl, const std::vector<linux::ThreadSnapshot>& threads, const snapshot::OutputFile& out,
                   const cli::Options& opts, const std::vector<std::string>& argv, uint64_t wait_syscall,
                   const linux::PolicyConfig& paths, const linux::NetPolicyConfig& net, const std::string& private_tmp);

// `kvmserver serve FILE`: serves from the file until SIGINT/SIGTERM, as run_program serves a
// program it booted. A file that cannot be loaded is one line and exit 2.
int serve_snapshot(const cli::Options& opts);

// `kvmserver inspect [--verify] FILE`: prints what the file holds; 0, or 2 after one line.
int inspect_snapshot(const cli::Options& opts);

}  // namespace kvms::server

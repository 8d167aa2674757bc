#pragma once
// `kvmserver run`: one program in one guest, from start to exit.
#include "cli/options.hpp"

namespace kvms::server {

// Runs opts.program to completion and returns the exit status a shell would report (the program's
// own, 128+signal, 124 on --timeout, 126/127 when it cannot start, 125 when kvmserver itself fails).
// Every failure prints one line on stderr.
int run_program(const cli::Options& opts);

}  // namespace kvms::server

#pragma once
// The sandbox around kvmserver itself, from the options (README "Threat model"): the jail (--jail)
// and the host seccomp filters (--seccomp).
#include <string>

#include "cli/options.hpp"
#include "jail/jail.hpp"
#include "linux/policy.hpp"

namespace kvms::server {

// What the jail holds for these options, `policy` being the guest's path policy (grants, volumes,
// and in always_readable the program, its interpreter and the system library paths): those paths;
// the devices and /sys files kvmserver opens itself; the directories of Unix socket grants (a socket
// the guest binds must appear on the host); kvmserver's temporary directories and working directory.
// The network namespace is new unless a network grant or --metrics needs the host's.
jail::JailSpec jail_spec(const cli::Options& opts, const linux::PolicyConfig& policy);

// Enters the jail when --jail asks for it, or by default when the options ask for a server. Returns
// 0 to go on (jailed; or not: the kernel refused and --jail was not given, which -v reports), else
// the status to exit with: 125 when --jail was given and the kernel refused (one line says why).
// Must run while kvmserver has a single thread, before anything of the guest is loaded.
int enter_jail(const cli::Options& opts, const linux::PolicyConfig& policy);

// With --seccomp (the default): the host filter for every thread of the process, from now on.
// Throws std::runtime_error with a one-line reason.
void start_seccomp(const cli::Options& opts);
// With --seccomp: the calling thread's narrower filter (SignalThread, MetricsThread) on top.
void restrict_this_thread(const cli::Options& opts, jail::FilterRole role);

}  // namespace kvms::server

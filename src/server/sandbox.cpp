#include "server/sandbox.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <filesystem>

namespace kvms::server {
namespace {

// What kvmserver opens itself, whatever the grants: KVM, the devices every guest may open
// (linux/file.cpp open_special) and the host files the guest's /proc and /sys pass through
// (linux/procfs.cpp; /proc/cpuinfo comes from the jail's own procfs).
constexpr const char* kOwnDevices[] = {"/dev/kvm", "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"};
constexpr const char* kOwnSysFiles[] = {"/sys/devices/system/cpu/online", "/sys/devices/system/cpu/possible",
                                        "/sys/devices/system/cpu/present"};

std::string parent_dir(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string working_directory() {
  std::error_code ec;
  const auto cwd = std::filesystem::current_path(ec);
  return ec ? "" : cwd.string();
}

}  // namespace

jail::JailSpec jail_spec(const cli::Options& opts, const linux::PolicyConfig& policy) {
  jail::JailSpec spec;
  if (policy.allow_all || policy.write_all) {
    spec.host_root = jail::JailSpec::HostRoot::Writable;
  } else if (policy.read_all) {
    spec.host_root = jail::JailSpec::HostRoot::ReadOnly;
  }
  for (const auto& p : policy.write) spec.binds.push_back({p, true});
  for (const auto& p : policy.read) spec.binds.push_back({p, false});
  for (const auto& p : policy.always_readable) spec.binds.push_back({p, false});
  for (const auto& v : policy.volumes) spec.binds.push_back({v.host, v.writable});
  for (const char* p : kOwnDevices) spec.binds.push_back({p, false});
  for (const char* p : kOwnSysFiles) spec.binds.push_back({p, false});
  // A Unix socket the guest listens on is created in its directory; one it connects to may appear
  // there later.
  for (const auto& item : opts.allow_listen.items)
    if (item.starts_with("/")) spec.binds.push_back({parent_dir(linux::normalize_path(item)), true});
  for (const auto& item : opts.allow_connect.items)
    if (item.starts_with("/")) spec.binds.push_back({parent_dir(linux::normalize_path(item)), false});
  // --listen=unix:PATH: kvmserver creates the front's socket there once the template is ready.
  for (const auto& item : opts.listen)
    if (item.starts_with("unix:/")) spec.binds.push_back({parent_dir(linux::normalize_path(item.substr(5))), true});
  // Private /tmp directories (private_tmp.cpp) and made-up /proc directories (procfs.cpp).
  spec.scratch_dirs = {"/tmp"};
  std::error_code ec;
  if (const auto tmp = std::filesystem::temp_directory_path(ec); !ec && tmp != "/tmp") spec.scratch_dirs.push_back(tmp);
  spec.cwd = working_directory();
  spec.new_network = !(opts.allow_all || opts.allow_listen.any() || opts.allow_connect.any() || !opts.metrics.empty() ||
                       !opts.listen.empty());
  return spec;
}

int enter_jail(const cli::Options& opts, const linux::PolicyConfig& policy) {
  if (!opts.jail.value_or(opts.expects_server())) return 0;
  std::optional<jail::FilterOptions> supervisor_seccomp;
  try {
    if (opts.seccomp_on()) supervisor_seccomp = jail::filter_options_from_environment();
    // Socket activation: the sockets pass into the jail (inherited fds), but sd_listen_fds() takes
    // them only in the process LISTEN_PID names, which was ours and is now the outer supervisor.
    const char* listen_pid = std::getenv("LISTEN_PID");
    const bool activated = listen_pid && std::to_string(getpid()) == listen_pid;
    const std::string description = jail::enter(jail_spec(opts, policy), supervisor_seccomp);
    if (activated) setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    if (opts.verbose) std::fprintf(stderr, "kvmserver: jailed: %s\n", description.c_str());
  } catch (const jail::JailError& e) {
    if (opts.jail) {
      std::fprintf(stderr, "kvmserver: --jail: %s\n", e.what());
      return 125;
    }
    if (opts.verbose) std::fprintf(stderr, "kvmserver: not jailed: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    return 125;
  }
  return 0;
}

void start_seccomp(const cli::Options& opts) {
  if (opts.seccomp_on()) jail::install_filter(jail::FilterRole::Process, jail::filter_options_from_environment());
}

void restrict_this_thread(const cli::Options& opts, jail::FilterRole role) {
  if (opts.seccomp_on()) jail::install_filter(role, jail::filter_options_from_environment());
}

}  // namespace kvms::server

#include "server/run_command.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <ctime>
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "kvm/probe.hpp"
#include "linux/guest.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "linux/syscalls.hpp"
#include "loader/elf_loader.hpp"
#include "server/sandbox.hpp"
#include "server/front_listeners.hpp"
#include "server/server.hpp"
#include "server/snapshot_command.hpp"
#include "snapshot/snapshot.hpp"

extern char** environ;

namespace kvms::server {
namespace {


constexpr int kInternalError = 125;

std::vector<std::string> guest_environment(const cli::Options& opts) {
  std::vector<std::string> env;
  if (opts.allow_all || opts.allow_env.any()) {
    for (char** e = environ; *e; ++e) {
      std::string var = *e;
      std::string name = var.substr(0, var.find('='));
      if (opts.allow_all || opts.allow_env.all ||
          std::find(opts.allow_env.items.begin(), opts.allow_env.items.end(), name) != opts.allow_env.items.end())
        env.push_back(var);
    }
  }
  for (const auto& var : opts.env) {
    std::string name = var.substr(0, var.find('=') + 1);
    std::erase_if(env, [&](const std::string& e) { return e.compare(0, name.size(), name) == 0; });
    env.push_back(var);
  }
  return env;
}

uint64_t deadline_after(double seconds) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return uint64_t(now.tv_sec) * 1000000000 + uint64_t(now.tv_nsec) + uint64_t(seconds * 1e9);
}

void print_stats(linux::Guest& guest, const kvm::HostFacts::Cost& check) {
  std::fprintf(stderr, "kvmserver: stats: host check: vms=%d vcpus=%d runs=%d exits=%llu pages=%llu time=%.1f ms\n",
               check.vms, check.vcpus, check.runs, (unsigned long long)check.exits, (unsigned long long)check.pages,
               double(check.ns) / 1e6);
  const auto& x = guest.exits();
  std::fprintf(stderr, "kvmserver: stats: vm exits: syscall=%llu exception=%llu interrupted=%llu other=%llu total=%llu\n",
               (unsigned long long)x.syscall, (unsigned long long)x.exception, (unsigned long long)x.interrupted,
               (unsigned long long)x.other, (unsigned long long)guest.vcpu().exits());
  std::vector<std::pair<uint64_t, std::string>> calls;
  const auto& stats = guest.process().stats;
  for (size_t nr = 0; nr < stats.calls.size(); ++nr)
    if (stats.calls[nr]) {
      const char* name = linux::syscall_name(nr);
      calls.emplace_back(stats.calls[nr], name ? name : "#" + std::to_string(nr));
    }
  std::sort(calls.begin(), calls.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  std::string line;
  uint64_t total = 0;
  for (auto& [count, name] : calls) {
    line += " " + name + "=" + std::to_string(count);
    total += count;
  }
  std::fprintf(stderr, "kvmserver: stats: syscalls: total=%llu%s\n", (unsigned long long)total, line.c_str());
  const uint64_t pages = guest.memory().resident_pages();
  std::fprintf(stderr, "kvmserver: stats: memory: pages touched=%llu (%llu KiB), mapped=%llu KiB\n",
               (unsigned long long)pages, (unsigned long long)pages * 4,
               (unsigned long long)guest.process().mm().mapped_bytes() / 1024);
}

// Runs a step of getting the program started. A failure prints one line and gives the exit status:
// the loader's (126/127), 2 for a bad grant, 125 for anything else.
template <typename Step>
std::optional<int> start_step(Step&& step) {
  try {
    step();
    return std::nullopt;
  } catch (const loader::LoadError& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    return e.exit_status;
  } catch (const cli::UsageError& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    return cli::UsageError::kExitStatus;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    return kInternalError;
  }
}

}  // namespace

int run_program(const cli::Options& opts) {
  const bool expect_server = opts.expects_server();
  // Refuse what cannot work before anything else: no usable /dev/kvm is one line, not a failure later.
  const kvm::HostFacts host = kvm::examine_host(expect_server);
  if (const std::string why = kvm::verdict(host); !why.empty()) {
    std::fprintf(stderr, "kvmserver: %s\n", why.c_str());
    return kInternalError;
  }
  std::unique_ptr<linux::Guest> guest;
  std::unique_ptr<PrivateDir> template_tmp;
  linux::PolicyConfig base_policy;
  std::shared_ptr<linux::NetPolicy> net_policy;
  // What the guest may reach, settled before the jail (it names what the jail holds; host names in
  // network grants are resolved while the host's resolver configuration is still there).
  if (const auto failed = start_step([&] {
        base_policy = cli::policy_config(opts);
        const std::string program = std::filesystem::absolute(linux::find_program(opts.program)).lexically_normal();
        base_policy.always_readable.push_back(program);
        if (const std::string interp = loader::interpreter_of(program); interp.starts_with("/"))
          base_policy.always_readable.push_back(interp);
        for (const auto& path : linux::system_library_paths()) base_policy.always_readable.push_back(path);
        try {
          net_policy = std::make_shared<linux::NetPolicy>(cli::net_config(opts));
        } catch (const std::invalid_argument& e) {
          throw cli::UsageError(e.what());
        }
      }))
    return *failed;
  // A snapshot's directory is opened before the jail hides the host's tree.
  std::unique_ptr<snapshot::OutputFile> snapshot_out;
  if (const std::string& path = opts.command == cli::Command::Snapshot ? opts.snapshot_output : opts.snapshot_on_ready; !path.empty()) {
    try {
      snapshot_out = std::make_unique<snapshot::OutputFile>(path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvmserver: %s\n", e.what());
      return cli::UsageError::kExitStatus;
    }
  }
  if (const int status = enter_jail(opts, base_policy)) return status;

  if (const auto failed = start_step([&] {
        linux::GuestConfig config;
        config.program = opts.program;
        config.argv.push_back(opts.program);
        config.argv.insert(config.argv.end(), opts.args.begin(), opts.args.end());
        config.envp = guest_environment(opts);
        config.cwd = opts.cwd;
        config.address_space = opts.max_address_space_gb << 30;
        config.process.verbose = opts.verbose > 0;
        config.process.limits = cli::limits_config(opts);
        linux::PolicyConfig policy = base_policy;
        // A snapshot is made to be served ephemerally: its template's /tmp is private (and saved).
        const bool ephemeral = opts.ephemeral || opts.command == cli::Command::Snapshot;
        if (ephemeral && guest_may_write_tmp(linux::PathPolicy(policy))) {
          template_tmp = std::make_unique<PrivateDir>();
          policy = with_private_tmp(policy, template_tmp->path());
        }
        config.policy = std::make_shared<linux::PathPolicy>(std::move(policy));
        guest = linux::Guest::create(config);
        guest->process().has_private_tmp = template_tmp != nullptr;
        guest->process().net_policy = net_policy;
        // From here on every thread of kvmserver, and every one it starts, makes only the host calls
        // it needs.
        start_seccomp(opts);
      }))
    return *failed;

  // Asked to serve, the program is paused the first time it waits on a listening socket; otherwise
  // it runs as it would natively, to its exit status (Options::expects_server).
  TemplateHooks hooks;
  if (expect_server) {
    guest->process().server = &hooks;
    if (!opts.isolate_requests) hooks.inherit_listeners(activated_sockets());  // request mode: the front's
  }
  double limit = opts.timeout.value_or(0);
  if (expect_server && (limit == 0 || opts.max_boot_time < limit)) limit = opts.max_boot_time;
  linux::RunResult result;
  try {
    result = guest->run(limit > 0 ? deadline_after(limit) : 0);
    if (result.reason == linux::RunResult::Paused && opts.warmup > 0) {
      hooks.begin_warmup();
      std::string failure;
      std::atomic<bool> paused_again{false};
      std::thread client([&] {
        failure = warm_up(guest->process(), opts.warmup, opts.warmup_path);
        hooks.end_warmup();
        // The server may already be blocked again on its listener (warming up, it was let through):
        // kick it until it re-checks and pauses; every thread, as any may wait on the listener
        // (Go's netpoller). A kicked wait restarts, so nothing is lost.
        while (!paused_again) {
          guest->kick_threads();
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
      result = guest->run(deadline_after(opts.max_boot_time + 60.0 * opts.warmup));
      paused_again = true;
      client.join();
      if (!failure.empty()) {
        std::fprintf(stderr, "kvmserver: %s: warm-up failed: %s\n", opts.program.c_str(), failure.c_str());
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s: internal error: %s\n", opts.program.c_str(), e.what());
    return kInternalError;
  }
  if (result.reason == linux::RunResult::Paused) {
    try {
      const uint64_t wait_syscall = guest->paused_syscall();
      std::vector<linux::ThreadSnapshot> threads = guest->save_threads();
      if (snapshot_out) {
        std::vector<std::string> argv{opts.program};
        argv.insert(argv.end(), opts.args.begin(), opts.args.end());
        if (const int status = write_snapshot(*guest, threads, *snapshot_out, opts, argv, wait_syscall, base_policy, cli::net_config(opts),
                                              template_tmp ? template_tmp->path() : "");
            status != 0 || opts.command == cli::Command::Snapshot)
          return status;
      }
      return serve(*guest, std::move(threads), opts, wait_kind(wait_syscall), template_tmp.get(), base_policy);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvmserver: %s: internal error: %s\n", opts.program.c_str(), e.what());
      return kInternalError;
    }
  }
  if (expect_server && result.reason != linux::RunResult::TimedOut) {
    std::fprintf(stderr, "kvmserver: %s: %s before listening for connections\n", opts.program.c_str(),
                 result.message.empty() ? ("exited with status " + std::to_string(result.status)).c_str()
                                        : result.message.c_str());
    if (opts.stats) print_stats(*guest, host.cost);
    return result.status == 0 ? 1 : result.status;
  }
  if (expect_server && result.reason == linux::RunResult::TimedOut && limit == opts.max_boot_time) {
    std::fprintf(stderr, "kvmserver: %s: not listening for connections after %g s (--max-boot-time)\n",
                 opts.program.c_str(), opts.max_boot_time);
    return 124;
  }
  std::fflush(stdout);
  if (result.reason == linux::RunResult::TimedOut)
    std::fprintf(stderr, "kvmserver: %s: timed out after %g s\n", opts.program.c_str(), *opts.timeout);
  else if (!result.message.empty())
    std::fprintf(stderr, "kvmserver: %s: %s\n", opts.program.c_str(), result.message.c_str());
  if (opts.stats) print_stats(*guest, host.cost);
  return result.status;
}

}  // namespace kvms::server

// What --jail costs at start-up, natively (no KVM needed: kvmserver jails itself before it loads the
// guest, so the jail's cost is the same with or without a working /dev/kvm).
//
//   jail_startup_bench [Google Benchmark flags]
//
// Each iteration forks a child that does what kvmserver does first and exits, and waits for it:
// BM_fork_exit only the fork and exit; BM_fork_jail_exit enters the jail kvmserver builds for
// `kvmserver -t 2 -e --allow-listen=127.0.0.1:8080 --allow-read=/usr/share/doc run /bin/true`
// (namespaces, the middle process and kvmserver proper, the private root's binds, pivot_root,
// dropping capabilities, the supervisors under seccomp) and exits from inside, through both
// supervisors. The difference is the jail's start-up cost; it costs nothing per request.
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli/options.hpp"
#include "jail/host_process.hpp"
#include "jail/jail.hpp"
#include "linux/guest.hpp"
#include "linux/policy.hpp"
#include "loader/elf_loader.hpp"
#include "server/sandbox.hpp"

namespace {

kvms::jail::JailSpec g_spec;

// The jail run_program enters for these options (the same policy: grants, program, interpreter,
// system libraries).
kvms::jail::JailSpec spec_for(std::vector<std::string> args) {
  args.insert(args.begin(), "kvmserver");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  int status = 0;
  const auto opts = kvms::cli::parse_command_line(static_cast<int>(argv.size()), argv.data(), status);
  if (!opts) std::exit(status);
  kvms::linux::PolicyConfig policy = kvms::cli::policy_config(*opts);
  const std::string program = std::filesystem::absolute(kvms::linux::find_program(opts->program)).lexically_normal();
  policy.always_readable.push_back(program);
  if (const std::string interp = kvms::loader::interpreter_of(program); interp.starts_with("/"))
    policy.always_readable.push_back(interp);
  for (const auto& path : kvms::linux::system_library_paths()) policy.always_readable.push_back(path);
  return kvms::server::jail_spec(*opts, policy);
}

// Forks a child running `child` (its return value is the exit status) and waits for it.
template <typename Child>
void fork_and_wait(benchmark::State& state, Child child) {
  const pid_t pid = fork();
  if (pid == 0) _exit(child());
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    state.SkipWithError(("child failed: status " + std::to_string(status)).c_str());
}

void BM_fork_exit(benchmark::State& state) {
  for (auto _ : state) fork_and_wait(state, [] { return 0; });
}
BENCHMARK(BM_fork_exit)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_fork_jail_exit(benchmark::State& state) {
  for (auto _ : state)
    fork_and_wait(state, [] {
      try {
        kvms::jail::harden_host_process(1024);
        kvms::jail::enter(g_spec, kvms::jail::FilterOptions{});
      } catch (const std::exception& e) {
        std::fprintf(stderr, "jail_startup_bench: %s\n", e.what());
        return 1;
      }
      return 0;
    });
}
BENCHMARK(BM_fork_jail_exit)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  g_spec = spec_for({"-t", "2", "-e", "--allow-listen=127.0.0.1:8080", "--allow-read=/usr/share/doc", "run", "/bin/true"});
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

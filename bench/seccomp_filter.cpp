// The cost of kvmserver's host seccomp filter per host system call, natively (no KVM needed: the
// filter decides on the call number and arguments before the call runs, so a KVM_RUN request number
// on /dev/null costs the filter what a real KVM_RUN does).
//
//   seccomp_filter_bench --filter=off|on [Google Benchmark flags]
//
// --filter=on installs kvmserver's real FilterRole::Process filter (jail::install_filter) before the
// benchmarks run. bench/seccomp.sh runs both and prints the difference as a table.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "jail/seccomp_filter.hpp"

namespace {

bool g_filter = false;
int g_zero = -1;   // /dev/zero
int g_null = -1;   // /dev/null
int g_pipe[2] = {-1, -1};

// Installed from the first benchmark, once Google Benchmark has read the machine's description
// (sysinfo, /sys files), which kvmserver's filter does not allow.
void install_filter_once() {
  static const bool installed = [] {
    if (!g_filter) return false;
    try {
      kvms::jail::install_filter(kvms::jail::FilterRole::Process, {});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "seccomp_filter_bench: %s\n", e.what());
      std::exit(1);
    }
    return true;
  }();
  (void)installed;
}

void BM_getpid(benchmark::State& state) {
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(syscall(SYS_getpid));
}
BENCHMARK(BM_getpid);

void BM_read_dev_zero_64B(benchmark::State& state) {
  char buf[64];
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(read(g_zero, buf, sizeof buf));
}
BENCHMARK(BM_read_dev_zero_64B);

// The vCPU loop's call: KVM_RUN's request number (the filter's first ioctl rule)...
void BM_ioctl_KVM_RUN_number(benchmark::State& state) {
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(ioctl(g_null, KVM_RUN, 0));
}
BENCHMARK(BM_ioctl_KVM_RUN_number);

// ...and the request the filter checks last.
void BM_ioctl_TFD_IOC_SET_TICKS_number(benchmark::State& state) {
  uint64_t ticks = 0;
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(ioctl(g_null, _IOW('T', 0, uint64_t), &ticks));
}
BENCHMARK(BM_ioctl_TFD_IOC_SET_TICKS_number);

void BM_ioctl_FIONREAD_pipe(benchmark::State& state) {
  int n = 0;
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(ioctl(g_pipe[0], FIONREAD, &n));
}
BENCHMARK(BM_ioctl_FIONREAD_pipe);

void BM_futex_wake_nobody(benchmark::State& state) {
  static int word = 0;
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0));
}
BENCHMARK(BM_futex_wake_nobody);

void BM_fcntl_GETFL(benchmark::State& state) {
  install_filter_once();
  for (auto _ : state) benchmark::DoNotOptimize(fcntl(g_zero, F_GETFL));
}
BENCHMARK(BM_fcntl_GETFL);

}  // namespace

int main(int argc, char** argv) {
  bool filter = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--filter=on") == 0) {
      filter = true;
    } else if (std::strcmp(argv[i], "--filter=off") != 0) {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  g_zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
  g_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (g_zero < 0 || g_null < 0 || pipe2(g_pipe, O_CLOEXEC) != 0) {
    std::perror("seccomp_filter_bench: open");
    return 1;
  }
  g_filter = filter;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// `kvmserver doctor`: what this host offers kvmserver, one fact per line with the remedy for each
// missing piece, then whether kvmserver can run here. The first thing to run on a new host.
//
// Every check does the real thing where it can instead of reading a setting: the KVM check runs
// the start-up probe guest (kvm/probe.hpp), the jail check creates the namespaces in a child, the
// seccomp check installs a filter in a child. Exit status 0 when kvmserver can run programs and
// serve here, 1 when it cannot.
#include "cli/doctor.hpp"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "jail/host_process.hpp"
#include "kvm/probe.hpp"
#include "kvm/vm.hpp"

namespace kvms::cli {
namespace {

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "always [madvise] never" -> "madvise"
std::string bracketed(const std::string& s) {
  const auto a = s.find('['), b = s.find(']');
  return a == std::string::npos || b == std::string::npos ? s : s.substr(a + 1, b - a - 1);
}

std::string meminfo(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream fields(line.substr(key.size() + 1));
      std::string value;
      fields >> value;
      return value;
    }
  return "?";
}

std::string kvm_kind(const kvm::HostFacts& f) {
  if (!f.exists) return "none: " + f.device + " is missing" + (f.pvm_module ? " (the kvm_pvm module is loaded)" : "");
  if (f.pvm_module) return "kvm_pvm (paravirtualized, no hardware virtualization)";
  if (::access("/sys/module/kvm_intel", F_OK) == 0) return "kvm_intel (Intel VT-x)";
  if (::access("/sys/module/kvm_amd", F_OK) == 0) return "kvm_amd (AMD SVM)";
  return "unknown module";
}

// The runs a child process makes: its exit status, or -1 when it could not be made.
template <typename Body>
int in_child(Body&& body) {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) _exit(body());
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// --jail's namespaces, unprivileged: user, mount, PID, IPC, UTS (as jail.cpp makes them).
// "" when they can be made, else why not.
std::string namespaces_refusal() {
  const int status = in_child([] {
    return unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) == 0 ? 0 : (errno & 0x7f);
  });
  if (status == 0) return "";
  if (status < 0) return "cannot fork to test";
  return std::strerror(status);
}

// A seccomp filter (allow everything) after PR_SET_NO_NEW_PRIVS, as kvmserver installs its own.
std::string seccomp_refusal() {
  const int status = in_child([] {
    sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    sock_fprog prog{1, allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno & 0x7f;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0 ? 0 : (errno & 0x7f);
  });
  if (status == 0) return "";
  if (status < 0) return "cannot fork to test";
  return std::strerror(status);
}

// The guest's view of the CPU: vendor and the features a program is most likely to use, from the
// CPUID table KVM gives the guest (what kvmserver sets in every vCPU).
std::string guest_cpu_features() {
  const auto& table = kvm::Kvm::instance().guest_cpuid();
  auto leaf = [&](uint32_t function) -> const kvm_cpuid_entry2* {
    for (const auto& e : table)
      if (e.function == function && e.index == 0) return &e;
    return nullptr;
  };
  std::string out;
  if (const auto* l0 = leaf(0)) {
    char vendor[13] = {};
    std::memcpy(vendor, &l0->ebx, 4);
    std::memcpy(vendor + 4, &l0->edx, 4);
    std::memcpy(vendor + 8, &l0->ecx, 4);
    out = vendor;
  }
  struct Feature {
    uint32_t leaf;
    int reg;  // 0 ebx, 1 ecx, 2 edx
    int bit;
    const char* name;
  };
  static const Feature kFeatures[] = {
      {1, 2, 26, "sse2"}, {1, 1, 20, "sse4.2"}, {1, 1, 25, "aes"},     {1, 1, 26, "xsave"},  {1, 1, 28, "avx"},
      {1, 1, 12, "fma"},  {1, 1, 30, "rdrand"}, {7, 0, 5, "avx2"},     {7, 0, 8, "bmi2"},    {7, 0, 16, "avx512f"},
      {7, 0, 18, "rdseed"}, {7, 0, 29, "sha"},  {7, 1, 7, "cet_ss"},   {7, 0, 0, "fsgsbase"},
  };
  for (const Feature& f : kFeatures) {
    const auto* e = leaf(f.leaf);
    if (!e) continue;
    const uint32_t reg = f.reg == 0 ? e->ebx : f.reg == 1 ? e->ecx : e->edx;
    if (reg & (1u << f.bit)) out += std::string(" ") + f.name;
  }
  const uint64_t xcr0 = kvm::Kvm::instance().xcr0();
  char buf[64];
  std::snprintf(buf, sizeof buf, "; XCR0 %#llx", static_cast<unsigned long long>(xcr0));
  return out + buf;
}

struct Report {
  bool can_run = true;
  void line(const char* what, const std::string& value) { std::printf("  %-16s %s\n", what, value.c_str()); }
  void problem(const char* what, const std::string& value, const std::string& remedy, bool fatal) {
    line(what, value);
    std::printf("  %-16s   remedy: %s\n", "", remedy.c_str());
    if (fatal) can_run = false;
  }
};

}  // namespace

int run_doctor() {
  Report r;
  utsname u{};
  uname(&u);
  std::printf("kvmserver %s doctor: what this host offers (Linux %s, %s)\n", kVersion, u.release, u.machine);

  // KVM: the device, its kind, and the probe guest (run mode), then what serving adds (the dirty ring).
  const kvm::HostFacts run = kvm::examine_host(false);
  r.line("KVM kind", kvm_kind(run));
  r.line("CPU", run.hardware_virtualization ? "hardware virtualization (vmx/svm flag)" : "no vmx/svm flag");
  const std::string run_verdict = kvm::verdict(run);
  if (!run_verdict.empty()) {
    r.problem("KVM", "cannot run kvmserver's guests", run_verdict, true);
  } else {
    char probe[160];
    std::snprintf(probe, sizeof probe, "%s: API %d, probe guest reached ring 0 (%d VM, %d vCPU, %llu exits, %.2f ms), TSC %llu kHz",
                  run.device.c_str(), run.api_version, run.cost.vms, run.cost.vcpus, (unsigned long long)run.cost.exits,
                  double(run.cost.ns) / 1e6, (unsigned long long)run.tsc_khz);
    r.line("KVM", probe);
    const std::string serve_verdict = kvm::verdict(kvm::examine_host(true));
    if (serve_verdict.empty())
      r.line("serving", "dirty-page ring available (-t N, -e)");
    else
      r.problem("serving", "workers cannot track dirty pages", serve_verdict, true);
    try {
      r.line("guest CPU", guest_cpu_features());
    } catch (const std::exception& e) {
      r.problem("guest CPU", e.what(), "see the KVM line", true);
    }
  }

  // Memory: transparent huge pages back guest memory's 2 MiB pages on the host side.
  const std::string thp = bracketed(first_line("/sys/kernel/mm/transparent_hugepage/enabled"));
  const std::string hugepages = "transparent " + (thp.empty() ? std::string("unavailable") : thp) + ", reserved " +
                                meminfo("HugePages_Total") + " x " + meminfo("Hugepagesize") + " KiB";
  if (thp == "never")
    r.problem("hugepages", hugepages, "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (fewer host page faults)", false);
  else
    r.line("hugepages", hugepages);

  // Limits: the open files kvmserver asks for with the default limits, for one and for 8 workers.
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  const auto text = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v); };
  const linux::Limits defaults = limits_config(Options{});
  const uint64_t need1 = jail::open_files_limit(1, defaults), need8 = jail::open_files_limit(8, defaults);
  // kvmserver raises its soft limit towards what the worst case of the default limits needs (every
  // guest process of every worker at --max-fds), bounded by the hard limit: below that it still
  // runs, and a guest meets EMFILE sooner.
  const std::string nofile = "soft " + text(files.rlim_cur) + ", hard " + text(files.rlim_max) + "; the default limits' worst case needs " +
                             std::to_string(need1) + " with -t 1, " + std::to_string(need8) + " with -t 8";
  if (files.rlim_max != RLIM_INFINITY && files.rlim_max < need8)
    r.problem("open files", nofile,
              "raise the hard limit (ulimit -Hn, LimitNOFILE= in a systemd unit), or lower --max-fds/--max-processes: "
              "until then a busy guest may get EMFILE earlier",
              false);
  else
    r.line("open files", nofile);
  rlimit procs{};
  getrlimit(RLIMIT_NPROC, &procs);
  r.line("processes", "RLIMIT_NPROC soft " + text(procs.rlim_cur) + " (kvmserver uses a thread per vCPU, not processes)");

  // The sandbox around kvmserver itself.
  if (const std::string why = namespaces_refusal(); why.empty())
    r.line("namespaces", "user, mount, PID, IPC and UTS namespaces can be made: --jail works");
  else
    r.problem("namespaces", "cannot make them (" + why + "): --jail (on by default when serving) falls back to no jail",
              "sysctl user.max_user_namespaces=15000 / kernel.unprivileged_userns_clone=1 (or kernel.apparmor_restrict_unprivileged_userns=0), "
              "or a container with user namespaces allowed",
              false);
  if (const std::string why = seccomp_refusal(); why.empty())
    r.line("seccomp", "filters can be installed: --seccomp works");
  else
    r.problem("seccomp", "cannot install a filter (" + why + ")", "a kernel built with CONFIG_SECCOMP_FILTER; a container runtime that allows seccomp", false);

  if (r.can_run)
    std::printf("kvmserver can run here.\n");
  else
    std::printf("kvmserver cannot run here: see the remedies above.\n");
  std::fflush(stdout);
  return r.can_run ? 0 : 1;
}

}  // namespace kvms::cli

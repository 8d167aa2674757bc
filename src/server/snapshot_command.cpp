#include "server/snapshot_command.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <memory>

#include "kvm/probe.hpp"
#include "kvm/vm.hpp"
#include "server/front_listeners.hpp"
#include "server/private_tmp.hpp"
#include "server/sandbox.hpp"
#include "server/server.hpp"

namespace kvms::server {
namespace {

constexpr int kInternalError = 125;

uint64_t clock_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}

struct Faults {
  long minor = 0, major = 0;
  static Faults now() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return {u.ru_minflt, u.ru_majflt};
  }
};

std::string join_grants(const cli::Options& o) {
  std::string s;
  auto add = [&](const std::string& g) { s += (s.empty() ? "" : " ") + g; };
  if (o.allow_all) add("--allow-all");
  if (o.allow_read.all) add("--allow-read");
  if (o.allow_write.all) add("--allow-write");
  for (const auto& p : o.allow_read.items) add("--allow-read=" + p);
  for (const auto& p : o.allow_write.items) add("--allow-write=" + p);
  for (const auto& v : o.volumes) add("--volume=" + v.host + ":" + v.guest + (v.writable ? ":rw" : ":ro"));
  if (o.allow_listen.all) add("--allow-listen");
  if (o.allow_connect.all) add("--allow-connect");
  for (const auto& a : o.allow_listen.items) add("--allow-listen=" + a);
  for (const auto& a : o.allow_connect.items) add("--allow-connect=" + a);
  return s.empty() ? "(none)" : s;
}

// The snapshot's grants as options, so that everything decided from the options (the jail's
// contents and network namespace, the policies) sees them.
void take_recorded_grants(cli::Options& o, const snapshot::Description& d) {
  o.allow_all = d.allow_all;
  o.allow_read = {d.read_all, d.read};
  o.allow_write = {d.write_all, d.write};
  o.volumes.clear();
  for (const auto& v : d.volumes) o.volumes.push_back({v.host, v.guest, v.writable});
  o.allow_listen = {d.listen_all, d.listen};
  o.allow_connect = {d.connect_all, d.connect};
}

int open_snapshot(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) std::fprintf(stderr, "kvmserver: %s: %s\n", path.c_str(), strerror(errno));
  return fd;
}

}  // namespace

int write_snapshot(linux::Guest& tmpl, const std::vector<linux::ThreadSnapshot>& threads, const snapshot::OutputFile& out,
                   const cli::Options& opts, const std::vector<std::string>& argv, uint64_t wait_syscall,
                   const linux::PolicyConfig& paths, const linux::NetPolicyConfig& net, const std::string& private_tmp) {
  const uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
  snapshot::SaveRequest req;
  req.guest = &tmpl;
  req.threads = threads;
  req.program = opts.program;
  req.argv = argv;
  req.wait_syscall = wait_syscall;
  req.paths = paths;
  req.net = net;
  req.private_tmp = private_tmp;
  req.kvmserver_version = cli::kVersion;
  try {
    const snapshot::SaveResult r = snapshot::save(req, out);
    std::fprintf(stderr,
                 "kvmserver: snapshot: wrote %s: %.1f MiB (memory image %.1f MiB in %llu extents; template resident %.1f MiB) "
                 "in %.0f ms\n",
                 out.path().c_str(), double(r.file_bytes) / (1 << 20), double(r.memory_bytes) / (1 << 20),
                 (unsigned long long)r.extents, double(r.resident_bytes) / (1 << 20),
                 double(clock_ns(CLOCK_MONOTONIC) - t0) / 1e6);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s: %s\n", out.path().c_str(), e.what());
    return 1;
  }
}

int inspect_snapshot(const cli::Options& opts) {
  const int fd = open_snapshot(opts.snapshot_file);
  if (fd < 0) return snapshot::SnapshotError::kExitStatus;
  try {
    snapshot::Header h;
    const snapshot::Description d = snapshot::read_description(fd, &h);
    std::string text = snapshot::describe(h, d);
    if (opts.verify) {
      snapshot::verify_memory(fd, h, d);
      text += "verified: every memory chunk matches its checksum\n";
    }
    close(fd);
    std::fputs(text.c_str(), stdout);
    return 0;
  } catch (const snapshot::SnapshotError& e) {
    close(fd);
    std::fprintf(stderr, "kvmserver: %s: %s\n", opts.snapshot_file.c_str(), e.what());
    return snapshot::SnapshotError::kExitStatus;
  }
}

int serve_snapshot(const cli::Options& opts_in) {
  cli::Options opts = opts_in;
  const std::string& file = opts.snapshot_file;
  const int fd = open_snapshot(file);
  if (fd < 0) return snapshot::SnapshotError::kExitStatus;
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  snapshot::Header h;
  snapshot::Description d;
  try {
    d = snapshot::read_description(fd, &h);
  } catch (const snapshot::SnapshotError& e) {
    std::fprintf(stderr, "kvmserver: %s: %s\n", file.c_str(), e.what());
    return snapshot::SnapshotError::kExitStatus;
  }
  const kvm::HostFacts host = kvm::examine_host(true);
  if (const std::string why = kvm::verdict(host); !why.empty()) {
    std::fprintf(stderr, "kvmserver: %s\n", why.c_str());
    return kInternalError;
  }
  try {
    snapshot::check_cpu(d);
    if (opts.verify) snapshot::verify_memory(fd, h, d);
  } catch (const snapshot::SnapshotError& e) {
    std::fprintf(stderr, "kvmserver: %s: %s\n", file.c_str(), e.what());
    return snapshot::SnapshotError::kExitStatus;
  }
  opts.program = d.program;
  opts.args.assign(d.argv.begin() + (d.argv.empty() ? 0 : 1), d.argv.end());
  // Grant flags replace the snapshot's grants, all of them (README "Snapshots").
  const bool replaced = opts.grants_given();
  if (!replaced) take_recorded_grants(opts, d);
  linux::PolicyConfig base_policy = cli::policy_config(opts);
  base_policy.always_readable = d.always_readable;
  std::shared_ptr<linux::NetPolicy> net;
  std::shared_ptr<linux::PathPolicy> policy;
  try {
    net = std::make_shared<linux::NetPolicy>(cli::net_config(opts));
    policy = std::make_shared<linux::PathPolicy>(base_policy);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "kvmserver: %s\n", e.what());
    return cli::UsageError::kExitStatus;
  }
  if (const int status = enter_jail(opts, base_policy)) return status;

  std::unique_ptr<PrivateDir> template_tmp;
  snapshot::Loaded loaded;
  const uint64_t cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID), wall0 = clock_ns(CLOCK_MONOTONIC);
  const Faults faults0 = Faults::now();
  try {
    if (d.private_tmp || (opts.ephemeral && guest_may_write_tmp(*policy))) {
      template_tmp = std::make_unique<PrivateDir>();
      snapshot::restore_tmp(d, template_tmp->path());
      policy = std::make_shared<linux::PathPolicy>(with_private_tmp(base_policy, template_tmp->path()));
    }
    snapshot::LoadOptions lo;
    lo.process.verbose = opts.verbose > 0;
    lo.process.limits = cli::limits_config(opts);
    lo.policy = policy;
    lo.net = net;
    lo.reopen_changed_files = opts.reopen_changed_files;
    // Connection mode: the guest's listeners move to --listen's addresses, or take the sockets
    // systemd passed; otherwise they are bound where the template had them. (Request mode: the
    // front takes --listen and the activated sockets.)
    std::vector<int> moved;
    if (!opts.isolate_requests) {
      for (const auto& spec : opts.listen) moved.push_back(listen_on(spec));
      for (int fd : activated_sockets()) moved.push_back(fd);
    }
    lo.inherited_listeners = moved;
    lo.tsc_khz = host.tsc_khz;
    lo.cr4_extra = kvm::Kvm::instance().cr4_extra();
    try {
      loaded = snapshot::load(fd, h, d, lo);
    } catch (...) {
      for (size_t i = 0; i < opts.listen.size() && i < moved.size(); ++i) close(moved[i]);
      throw;
    }
    for (size_t i = 0; i < opts.listen.size() && i < moved.size(); ++i) close(moved[i]);  // the guest's are dups
    loaded.guest->process().has_private_tmp = template_tmp != nullptr;
  } catch (const snapshot::SnapshotError& e) {
    std::fprintf(stderr, "kvmserver: %s: %s\n", file.c_str(), e.what());
    return snapshot::SnapshotError::kExitStatus;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s: cannot load: %s\n", file.c_str(), e.what());
    return kInternalError;
  }
  const uint64_t cpu_ns = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall_ns = clock_ns(CLOCK_MONOTONIC) - wall0;
  const Faults faults1 = Faults::now();
  std::fprintf(stderr, "kvmserver: %s: grants %s: %s\n", file.c_str(),
               replaced ? "from the command line (replacing the snapshot's)" : "as recorded in the snapshot",
               join_grants(opts).c_str());
  std::fprintf(stderr,
               "kvmserver: %s: loaded in %.0f us (host CPU %.0f us, 0 KVM ioctls; %zu memory extents mapped, "
               "%ld page faults, %ld of them reading the disk)\n",
               file.c_str(), double(wall_ns) / 1e3, double(cpu_ns) / 1e3, d.extents.size(), faults1.minor - faults0.minor,
               faults1.major - faults0.major);
  try {
    start_seccomp(opts);
    return serve(*loaded.guest, std::move(loaded.threads), opts, wait_kind(d.wait_syscall), template_tmp.get(), base_policy);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmserver: %s: internal error: %s\n", file.c_str(), e.what());
    return kInternalError;
  }
}

}  // namespace kvms::server

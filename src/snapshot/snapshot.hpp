#pragma once
// Saving a paused template to a snapshot file, and making a template from one (format.hpp has the
// file). The server layer decides when (src/server/snapshot_command.cpp); this room knows how.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "linux/guest.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "snapshot/format.hpp"

namespace kvms::snapshot {

// Where a snapshot goes: the directory is opened before kvmserver enters its jail (which hides the
// host's tree), the file is written under a temporary name there and renamed over `name` only when
// complete, so a failed snapshot never replaces a good one.
class OutputFile {
 public:
  explicit OutputFile(const std::string& path);  // throws std::runtime_error (one line)
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  const std::string& path() const { return path_; }
  int dir_fd() const { return dir_fd_; }
  const std::string& name() const { return name_; }

 private:
  std::string path_, name_;
  int dir_fd_ = -1;
};

// What the template was made with, beyond the guest itself.
struct SaveRequest {
  linux::Guest* guest = nullptr;                  // paused at its first wait for connections
  std::vector<linux::ThreadSnapshot> threads;     // its threads (Guest::save_threads)
  std::string program;                            // as the user named it
  std::vector<std::string> argv;
  uint64_t wait_syscall = 0;
  linux::PolicyConfig paths;                      // the grants, always_readable included
  linux::NetPolicyConfig net;
  std::string private_tmp;                        // host directory behind the guest's /tmp, or empty
  std::string kvmserver_version;
};

struct SaveResult {
  uint64_t file_bytes = 0, memory_bytes = 0, extents = 0, resident_bytes = 0;
};

// Writes the snapshot; throws std::runtime_error naming what cannot be saved (a child process, a
// connected socket, a pipe with unread data, ...) or what failed to be written.
SaveResult save(const SaveRequest& request, const OutputFile& out);

// A template made from a snapshot file: a Guest with no VM of its own (workers fork from it), its
// threads, ready for server::serve.
struct Loaded {
  std::unique_ptr<linux::Guest> guest;
  std::vector<linux::ThreadSnapshot> threads;
  uint64_t kvm_ioctls = 0;  // issued while loading (none: the template needs no VM)
};

struct LoadOptions {
  linux::ProcessConfig process;                   // limits, verbosity
  std::shared_ptr<const linux::PathPolicy> policy;
  std::shared_ptr<const linux::NetPolicy> net;
  bool reopen_changed_files = false;  // a regular file that changed since: reopen it instead of refusing
  std::vector<int> inherited_listeners;  // socket activation: host sockets for the listeners, in order
  uint64_t tsc_khz = 0;                  // this host's guest TSC rate (kvm::HostFacts); 0: the file's
  uint32_t cr4_extra = 0;                // this host's CR4 features (kvm::Kvm::cr4_extra())
};

// Refuses (SnapshotError, exit 2) what this host cannot run: CPU features the guest may use that
// this CPU lacks. Needs /dev/kvm (the guest's CPUID is KVM's).
void check_cpu(const Description& d);
// Makes the template. Throws SnapshotError for what the file asks that cannot be given (a file the
// grants do not reach or that changed, an address the network grants refuse), std::runtime_error
// for host failures.
Loaded load(int fd, const Header& h, const Description& d, const LoadOptions& options);

// The grants recorded in the file, as policy configurations.
linux::PolicyConfig recorded_paths(const Description& d);
linux::NetPolicyConfig recorded_net(const Description& d);

// Fills `dir` (an empty host directory: the template's private /tmp) with the file's /tmp entries.
void restore_tmp(const Description& d, const std::string& dir);

}  // namespace kvms::snapshot

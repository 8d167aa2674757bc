#pragma once
// Command-line options and the TOML config file.
//
//   kvmserver [OPTIONS] run [--] PROGRAM [ARGS...]
//   kvmserver --help | --version
//
// Everything after `run` belongs to the program, including things that look like flags
// (`kvmserver -A run deno run --allow-net x.js`); a `--` right after `run` is dropped.
//
// --config FILE reads TOML whose keys are the long option names without dashes:
//   allow-read = ["/lib", "/etc"]   # or true (= bare --allow-read), or "a,b"
//   timeout = 2.5
//   threads = 4
//   ephemeral = true
//   env = ["A=B"]
// Command-line values override scalar settings of the file and extend its lists and grants.
// Relative paths in the file are relative to the file's directory; on the command line, to the
// caller's working directory. An unknown key, a wrong type or bad TOML is a UsageError naming the
// file (and line).
//
// Use from main:
//   int status;
//   auto opts = kvms::cli::parse_command_line(argc, argv, status);
//   if (!opts) return status;   // --help/--version printed (0) or usage error printed (2)
// or call parse_options() and handle UsageError (exit 2) and InfoExit (print text, exit 0).
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "linux/limits.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"

namespace kvms::cli {

inline constexpr const char* kVersion = "0.1.0";

// A bad flag, value, or config file. what() is a one-line message without the program name.
// Exit status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  static constexpr int kExitStatus = 2;
};

// --help or --version: print text() to stdout and exit with status 0.
class InfoExit : public std::exception {
 public:
  explicit InfoExit(std::string text) : text_(std::move(text)) {}
  const char* what() const noexcept override { return text_.c_str(); }
  const std::string& text() const { return text_; }
  static constexpr int kExitStatus = 0;

 private:
  std::string text_;
};

// A --allow-X[=A,B,...] flag: bare means everything (all), values accumulate over repeats.
struct Grant {
  bool all = false;
  std::vector<std::string> items;
  bool any() const { return all || !items.empty(); }
  bool operator==(const Grant&) const = default;
};

// What kvmserver is asked to do: `run` a program (serving when it turns out to be a server),
// make a `snapshot` of one, `serve` from a snapshot file, `inspect` one.
enum class Command { Run, Snapshot, Serve, Inspect, Doctor };

struct Options {
  Command command = Command::Run;
  // --- Permissions and the program's environment
  bool allow_all = false;             // -A, --allow-all: everything below, all of it
  Grant allow_read;                   // --allow-read[=PATH,...]   absolute, lexically normalized
  Grant allow_write;                  // --allow-write[=PATH,...]  (implies read)
  Grant allow_env;                    // --allow-env[=NAME,...]    host variables passed through
  std::vector<linux::Volume> volumes; // --volume=HOST:GUEST[:rw|:ro] (repeatable)
  std::vector<std::string> env;       // --env=NAME=VALUE (repeatable), set in the guest
  std::string cwd;                    // --cwd=DIR: guest working directory (default: ours)
  std::optional<double> timeout;      // --timeout=SECONDS (> 0): whole-run wall-clock limit
  uint64_t max_memory_mb = 1024;      // --max-memory=MB: the whole process tree (see limits.hpp)
  uint64_t max_address_space_gb = 64; // --max-address-space=GB
  uint64_t max_processes = 64;        // --max-processes=N: guest processes in the tree
  uint64_t max_threads = 128;         // --max-threads=N: threads of one process (1..128)
  uint64_t max_fds = 1024;            // --max-fds=N: open fds of one process
  uint64_t max_tmp_size_mb = 256;     // --max-tmp-size=MB: files in a private /tmp
  uint64_t max_pending_signals = 1024;  // --max-pending-signals=N: queued signals of one process
  uint64_t max_epoll_watches = 65536;   // --max-epoll-watches=N: epoll registrations in the tree
  uint64_t max_timers = 1024;           // --max-timers=N: timers in the tree
  std::string config_file;            // --config FILE, or ./kvmserver.toml when there is one (absolute); empty if none
  bool stats = false;                 // --stats
  int verbose = 0;                    // -v, --verbose (count; TOML: true or a number)

  // --- Sandbox (README "Threat model")
  std::optional<bool> jail;  // --jail[=on|off]; unset: on when serving, where the kernel allows it
  // --seccomp[=on|off]; unset: on in run mode, off when serving (README "Threat model": its measured
  // cost per request is above the 2 % a default may cost).
  std::optional<bool> seccomp;

  // --- Server (next milestone)
  unsigned threads = 1;                       // -t, --threads N (1..1024; 0: one per CPU this process may use)
  bool threads_given = false;                 // -t given (even -t 1: a persistent server)
  bool ephemeral = false;                     // -e, --ephemeral
  Grant allow_listen;                         // --allow-listen=ADDR:PORT|PATH,...
  Grant allow_connect;                        // --allow-connect=HOST:PORT|PATH,...
                                              // --allow-net sets .all on both
  std::optional<double> max_request_time;     // --max-request-time=S (> 0)
  std::optional<uint64_t> max_request_memory_mb;  // --max-request-memory=MB (> 0)
  std::optional<uint64_t> reset_full_above_mb;    // --reset-full-above=MB (>= 0)
  unsigned warmup = 0;                        // -w, --warmup=N
  std::string warmup_path = "/";              // --warmup-path=/PATH
  double max_boot_time = 20;                  // --max-boot-time=S (> 0)
  std::string metrics;                        // --metrics=ADDR:PORT, empty if none
  // --- Request isolation (src/http/front.hpp)
  bool isolate_requests = false;              // --isolate=request (implies -e); default connection
  std::vector<std::string> listen;            // --listen=ADDR:PORT|unix:PATH (repeatable): the front's
                                              // sockets, one per guest listener in order
  uint64_t max_header_bytes = 64 * 1024;      // --max-header-bytes=N
  double max_header_time = 10;                // --max-header-time=S
  uint64_t max_request_body_mb = 1024;        // --max-request-body=MB (0: no limit)

  // --- Snapshots (src/snapshot/format.hpp)
  std::string snapshot_output;                // snapshot --output FILE
  std::string snapshot_on_ready;              // --snapshot-on-ready FILE
  std::string snapshot_file;                  // serve FILE, inspect FILE
  bool verify = false;                        // --verify: check the memory image's checksums
  bool reopen_changed_files = false;          // --reopen-changed-files
  // Whether grant flags were given (serve: they replace the snapshot's grants).
  bool grants_given() const {
    return allow_all || allow_read.any() || allow_write.any() || !volumes.empty() || allow_listen.any() ||
           allow_connect.any();
  }

  // --- The program: `run [--] PROGRAM [ARGS...]`
  std::string program;            // as given (resolving it through PATH is the caller's job)
  std::vector<std::string> args;  // the program's arguments, without the program itself

  bool net_all() const { return allow_all || (allow_listen.all && allow_connect.all); }
  // Whether the options ask for a server: workers (-t, even -t 1), -e, request isolation, warm-up,
  // request limits, metrics, a snapshot, a front (--listen), or the `snapshot`/`serve` forms. Only
  // then is the program paused when it first waits for connections and served from that template;
  // otherwise `run` runs it as it would run natively (a program that listens serves its
  // connections itself, in its one VM) and exits with its status. A listen grant alone is a grant,
  // not a mode.
  bool seccomp_on() const { return seccomp.value_or(!expects_server()); }
  bool expects_server() const {
    return command != Command::Run || ephemeral || isolate_requests || threads_given || warmup > 0 ||
           max_request_time || max_request_memory_mb || !metrics.empty() || !snapshot_on_ready.empty() ||
           !listen.empty();
  }
};

// Parses argv (argv[0] is ignored). `caller_cwd` stands for getcwd() when not empty (tests).
// Throws UsageError or InfoExit.
Options parse_options(int argc, char** argv, std::string_view caller_cwd = {});
Options parse_options(const std::vector<std::string>& args, std::string_view caller_cwd = {});

// For main: parse_options, printing --help/--version text to stdout or "kvmserver: <message>"
// plus a hint to stderr. Returns std::nullopt with exit_status set when main should return.
std::optional<Options> parse_command_line(int argc, char** argv, int& exit_status);

// The caps the options ask for (limits.hpp).
linux::Limits limits_config(const Options& opts);

// The network policy the options ask for (--allow-listen, --allow-connect, --allow-net, -A).
linux::NetPolicyConfig net_config(const Options& opts);

// The path policy the options ask for. `always_readable` (program binary, its interpreter...) is
// left for the caller to fill in.
linux::PolicyConfig policy_config(const Options& opts);

namespace detail {
// One top-level `key = value` of the config file. Arrays must hold strings only.
struct ConfigEntry {
  std::string key;
  std::variant<bool, int64_t, double, std::string, std::vector<std::string>> value;
  int line = 0;
};
// Reads and parses the TOML file (config.cpp). Throws UsageError "FILE:LINE: message" for bad
// TOML, "FILE: message" when unreadable; "FILE:LINE: KEY: ..." for values of unsupported types
// (tables, dates, mixed arrays).
std::vector<ConfigEntry> read_config_file(const std::string& path);
}  // namespace detail

}  // namespace kvms::cli

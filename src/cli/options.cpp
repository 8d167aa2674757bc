#include "cli/options.hpp"

#include <fmt/core.h>
#include <arpa/inet.h>
#include <sched.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>

#include "kvm/layout.hpp"

namespace kvms::cli {

namespace {

// ---------------------------------------------------------------------------------------------
// Values, from the command line or the config file, and their validation.

// A value error; the caller prefixes it with "--name: " or "FILE:LINE: name: ".
struct BadValue : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Kind {
  Flag,       // --stats                     TOML: bool
  Count,      // -v -v                       TOML: bool or integer
  Int,        // --threads=4                 TOML: integer
  Float,      // --timeout=2.5               TOML: integer or float
  String,     // --cwd=/x                    TOML: string
  List,       // --volume=a:b (repeatable)   TOML: array of strings or one string
  OptGrant,   // --allow-read[=a,b]          TOML: bool, array of strings or "a,b"
  ListGrant,  // --allow-listen=a,b          TOML: array of strings or "a,b"
  Switch,     // --jail, --jail=off            TOML: bool, "on" or "off"
};

struct Value {
  int64_t count = 0;  // Flag/Count: occurrences (Flag: 0 or 1 = false/true)
  std::string text;   // Int/Float/String
  std::vector<std::string> items;  // List/OptGrant/ListGrant
  bool all = false;                // OptGrant: bare flag
};

struct Ctx {
  std::string base_dir;  // relative paths are relative to this
};

using Apply = std::function<void(Options&, const Value&, const Ctx&)>;

struct Spec {
  const char* names;  // CLI11 names: "-t,--threads"
  const char* key;    // the long name: TOML key
  Kind kind;
  const char* group;
  const char* metavar;  // shown after the option name in --help
  const char* help;
  Apply apply;
};

// The CPUs this process may run on (its affinity mask: a container's or taskset's share, not the
// machine's), for -t 0.
unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::clamp(unsigned(CPU_COUNT(&set)), 1u, 1024u);
}

constexpr uint64_t kMaxMemoryMb = kvm::kMaxUserSize >> 20;
constexpr uint64_t kMaxAddressSpaceGb = kvm::kMaxUserSize >> 30;
constexpr double kMaxSeconds = 1e9;

int64_t parse_int(const std::string& s, int64_t lo, int64_t hi) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec == std::errc::invalid_argument || end != s.data() + s.size())
    throw BadValue("'" + s + "' is not an integer");
  if (ec == std::errc::result_out_of_range || v < lo || v > hi)
    throw BadValue(fmt::format("{} is out of range ({}..{})", s, lo, hi));
  return v;
}

double parse_seconds(const std::string& s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) throw BadValue("'" + s + "' is not a number");
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE) throw BadValue("'" + s + "' is not a number");
  if (!std::isfinite(v) || !(v > 0)) throw BadValue("must be a positive number of seconds, not " + s);
  if (v > kMaxSeconds) throw BadValue("is too large: " + s);
  return v;
}

std::string abs_path(const std::string& p, const Ctx& ctx) {
  if (p.empty()) throw BadValue("empty path");
  if (p.find('\0') != std::string::npos) throw BadValue("path contains a NUL byte");
  if (p[0] == '/') return linux::normalize_path(p);
  return linux::normalize_path(ctx.base_dir + "/" + p);
}

// A path for --allow-read/--allow-write: absolute, and not in the trees kvmserver makes up (/proc,
// /sys, /dev), which no grant reaches.
std::string grant_path(const std::string& p, const Ctx& ctx) {
  std::string path = abs_path(p, ctx);
  if (std::string why = linux::grant_refusal(path); !why.empty()) throw BadValue(why);
  return path;
}

// ADDR:PORT (ADDR may be empty = any, a name, IPv4 or [IPv6]) or, with allow_path, /PATH.
std::string endpoint(const std::string& s, bool allow_path) {
  if (allow_path && !s.empty() && s[0] == '/') return s;
  const char* expected = allow_path ? "expected ADDR:PORT or /PATH, not '" : "expected ADDR:PORT, not '";
  auto colon = s.rfind(':');
  if (colon == std::string::npos) throw BadValue(expected + s + "'");
  std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (!bracketed && host.find_first_of(":[]/ ") != std::string::npos) throw BadValue(expected + s + "'");
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      port.size() > 5 || std::stoi(port) > 65535)
    throw BadValue("bad port in '" + s + "'");
  return s;
}

// An --allow-listen/--allow-connect entry: ADDR:PORT (ADDR may be empty or *, a name, IPv4 or [IPv6]),
// ADDR alone (any port), *, a Unix socket /PATH or @abstract name. Names are resolved later, when
// the network policy is built.
std::string net_entry(const std::string& s) {
  const std::string expected = "expected ADDR:PORT or /PATH, not '" + s + "'";
  if (s.empty()) throw BadValue(expected);
  if (s[0] == '/' || s[0] == '@' || s == "*") return s;
  std::string host = s, port;
  const auto close = s.rfind(']');
  const auto colon = s.rfind(':');
  if (s[0] == '[') {
    if (close == std::string::npos) throw BadValue(expected);
    host = s.substr(0, close + 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') throw BadValue(expected);
      port = s.substr(close + 2);
      if (port.empty()) throw BadValue(expected);
    }
  } else if (colon != std::string::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (port.empty()) throw BadValue(expected);
  } else {  // an address alone (any port): only literal addresses, so a stray word is not a grant
    in6_addr a6{};
    in_addr a4{};
    if (s != "localhost" && inet_pton(AF_INET, s.c_str(), &a4) != 1 && inet_pton(AF_INET6, s.c_str(), &a6) != 1)
      throw BadValue(expected);
  }
  if (s[0] != '[' && host.find_first_of(":[]/ ") != std::string::npos) throw BadValue(expected);
  if (!port.empty() && port != "*" &&
      (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) || port.size() > 5 ||
       std::stoi(port) > 65535))
    throw BadValue("bad port in '" + s + "'");
  return s;
}

linux::Volume volume(const std::string& s, const Ctx& ctx) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    auto c = s.find(':', start);
    parts.push_back(s.substr(start, c == std::string::npos ? std::string::npos : c - start));
    if (c == std::string::npos) break;
    start = c + 1;
  }
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty())
    throw BadValue("expected HOST:GUEST[:rw], not '" + s + "'");
  linux::Volume v;
  v.host = abs_path(parts[0], ctx);
  if (parts[1][0] != '/') throw BadValue("the guest path must be absolute in '" + s + "'");
  v.guest = linux::normalize_path(parts[1]);
  for (const std::string& side : {v.host, v.guest})
    if (std::string why = linux::volume_refusal(side); !why.empty()) throw BadValue(why);
  if (parts.size() == 3) {
    if (parts[2] == "rw") {
      v.writable = true;
    } else if (parts[2] != "ro") {
      throw BadValue("expected :rw or :ro at the end of '" + s + "'");
    }
  }
  return v;
}

// A Switch's value: bare (empty) is on.
bool on_off(const std::string& s) {
  if (s.empty() || s == "on" || s == "true") return true;
  if (s == "off" || s == "false") return false;
  throw BadValue("expected on or off, not '" + s + "'");
}

std::string env_assignment(const std::string& s) {
  auto eq = s.find('=');
  if (eq == 0 || eq == std::string::npos) throw BadValue("expected NAME=VALUE, not '" + s + "'");
  return s;
}

std::string env_name(const std::string& s) {
  if (s.empty() || s.find('=') != std::string::npos) throw BadValue("bad variable name '" + s + "'");
  return s;
}

void add_grant(Grant& g, const Value& v, const std::function<std::string(const std::string&)>& item) {
  g.all = g.all || v.all;
  for (auto& s : v.items) {
    auto x = item(s);
    if (std::find(g.items.begin(), g.items.end(), x) == g.items.end()) g.items.push_back(std::move(x));
  }
}

const std::vector<Spec>& specs() {
  static const std::vector<Spec> s = {
      // --- Permissions
      {"-A,--allow-all", "allow-all", Kind::Flag, "Permissions",
       "", "Allow everything: all files (but /proc, /sys, /dev), environment, network",
       [](Options& o, const Value& v, const Ctx&) { o.allow_all = v.count > 0; }},
      {"--allow-read", "allow-read", Kind::OptGrant, "Permissions",
       "[=PATH,...]", "Allow reading these paths (comma-separated; bare: everything but /proc, /sys, /dev)",
       [](Options& o, const Value& v, const Ctx& c) {
         add_grant(o.allow_read, v, [&](const std::string& p) { return grant_path(p, c); });
       }},
      {"--allow-write", "allow-write", Kind::OptGrant, "Permissions",
       "[=PATH,...]", "Allow reading and writing these paths (comma-separated; bare: everything but /proc, /sys, /dev)",
       [](Options& o, const Value& v, const Ctx& c) {
         add_grant(o.allow_write, v, [&](const std::string& p) { return grant_path(p, c); });
       }},
      {"--allow-env", "allow-env", Kind::OptGrant, "Permissions",
       "[=NAME,...]", "Pass these host environment variables (comma-separated; bare: all)",
       [](Options& o, const Value& v, const Ctx&) { add_grant(o.allow_env, v, env_name); }},
      {"--volume", "volume", Kind::List, "Permissions",
       "HOST:GUEST[:rw]", "Show host directory HOST at guest path GUEST (read-only unless :rw)",
       [](Options& o, const Value& v, const Ctx& c) {
         for (auto& s : v.items) o.volumes.push_back(volume(s, c));
       }},
      {"--env", "env", Kind::List, "Permissions", "NAME=VALUE", "Set a variable in the program's environment",
       [](Options& o, const Value& v, const Ctx&) {
         for (auto& s : v.items) o.env.push_back(env_assignment(s));
       }},
      {"--cwd", "cwd", Kind::String, "Permissions", "DIR", "The program's working directory (default: ours)",
       [](Options& o, const Value& v, const Ctx& c) { o.cwd = abs_path(v.text, c); }},
      // --- Limits and reporting
      {"--timeout", "timeout", Kind::Float, "Limits", "SECONDS", "Stop the program after this long",
       [](Options& o, const Value& v, const Ctx&) { o.timeout = parse_seconds(v.text); }},
      {"--max-memory", "max-memory", Kind::Int, "Limits", "MB",
       "Memory of all guest processes together (default 1024; per request when serving)",
       [](Options& o, const Value& v, const Ctx&) {
         o.max_memory_mb = static_cast<uint64_t>(parse_int(v.text, 1, kMaxMemoryMb));
       }},
      {"--max-processes", "max-processes", Kind::Int, "Limits", "N",
       "Guest processes at a time (default 64; per request when serving)",
       [](Options& o, const Value& v, const Ctx&) { o.max_processes = uint64_t(parse_int(v.text, 1, 1 << 16)); }},
      {"--max-threads", "max-threads", Kind::Int, "Limits", "N", "Threads of one guest process (default 128, at most 128)",
       [](Options& o, const Value& v, const Ctx&) { o.max_threads = uint64_t(parse_int(v.text, 1, kvm::kMaxVcpus)); }},
      {"--max-fds", "max-fds", Kind::Int, "Limits", "N", "Open fds of one guest process (default 1024)",
       [](Options& o, const Value& v, const Ctx&) { o.max_fds = uint64_t(parse_int(v.text, 16, 1 << 20)); }},
      {"--max-tmp-size", "max-tmp-size", Kind::Int, "Limits", "MB",
       "Files in a private /tmp, per request (default 256)",
       [](Options& o, const Value& v, const Ctx&) { o.max_tmp_size_mb = uint64_t(parse_int(v.text, 1, kMaxMemoryMb)); }},
      {"--max-pending-signals", "max-pending-signals", Kind::Int, "Limits", "N",
       "Queued signals of one guest process (default 1024)",
       [](Options& o, const Value& v, const Ctx&) { o.max_pending_signals = uint64_t(parse_int(v.text, 1, 1 << 20)); }},
      {"--max-epoll-watches", "max-epoll-watches", Kind::Int, "Limits", "N",
       "Epoll registrations at a time (default 65536)",
       [](Options& o, const Value& v, const Ctx&) { o.max_epoll_watches = uint64_t(parse_int(v.text, 1, 1 << 24)); }},
      {"--max-timers", "max-timers", Kind::Int, "Limits", "N", "Timers at a time (default 1024)",
       [](Options& o, const Value& v, const Ctx&) { o.max_timers = uint64_t(parse_int(v.text, 1, 1 << 20)); }},
      {"--max-address-space", "max-address-space", Kind::Int, "Limits",
       "GB", "Guest virtual address space (default 64)",
       [](Options& o, const Value& v, const Ctx&) {
         o.max_address_space_gb = static_cast<uint64_t>(parse_int(v.text, 1, kMaxAddressSpaceGb));
       }},
      {"--stats", "stats", Kind::Flag, "Limits", "", "Print run statistics on exit",
       [](Options& o, const Value& v, const Ctx&) { o.stats = v.count > 0; }},
      {"-v,--verbose", "verbose", Kind::Count, "Limits", "", "Explain denials and more (repeatable)",
       [](Options& o, const Value& v, const Ctx&) {
         if (v.count < 0 || v.count > 100) throw BadValue("out of range");
         o.verbose = static_cast<int>(v.count);
       }},
      // --- Sandbox
      {"--jail", "jail", Kind::Switch, "Sandbox", "[=on|off]",
       "Run in namespaces with a private root holding only the granted paths (default: on when serving, "
       "if the kernel allows)",
       [](Options& o, const Value& v, const Ctx&) { o.jail = on_off(v.text); }},
      {"--seccomp", "seccomp", Kind::Switch, "Sandbox", "[=on|off]",
       "Allow kvmserver only the host system calls it needs (default: on in run mode, off when serving)",
       [](Options& o, const Value& v, const Ctx&) { o.seccomp = on_off(v.text); }},
      // --- Server
      {"-t,--threads", "threads", Kind::Int, "Server", "N", "Worker VMs (default 1; 0: one per CPU)",
       [](Options& o, const Value& v, const Ctx&) {
         o.threads = static_cast<unsigned>(parse_int(v.text, 0, 1024));
         if (o.threads == 0) o.threads = usable_cpus();
         o.threads_given = true;
       }},
      {"-e,--ephemeral", "ephemeral", Kind::Flag, "Server", "", "Reset the VM after every request",
       [](Options& o, const Value& v, const Ctx&) { o.ephemeral = v.count > 0; }},
      {"--allow-listen", "allow-listen", Kind::ListGrant, "Server",
       "ADDR:PORT|PATH,...", "Allow listening on these addresses",
       [](Options& o, const Value& v, const Ctx&) {
         add_grant(o.allow_listen, v, [](const std::string& s) { return net_entry(s); });
       }},
      {"--allow-connect", "allow-connect", Kind::ListGrant, "Server",
       "HOST:PORT|PATH,...", "Allow connecting to these addresses",
       [](Options& o, const Value& v, const Ctx&) {
         add_grant(o.allow_connect, v, [](const std::string& s) { return net_entry(s); });
       }},
      {"--allow-net", "allow-net", Kind::Flag, "Server", "", "Allow listening and connecting anywhere",
       [](Options& o, const Value& v, const Ctx&) {
         if (v.count > 0) o.allow_listen.all = o.allow_connect.all = true;
       }},
      {"--max-request-time", "max-request-time", Kind::Float, "Server", "S", "Time limit per request",
       [](Options& o, const Value& v, const Ctx&) { o.max_request_time = parse_seconds(v.text); }},
      {"--max-request-memory", "max-request-memory", Kind::Int, "Server", "MB", "Memory a request may add",
       [](Options& o, const Value& v, const Ctx&) {
         o.max_request_memory_mb = static_cast<uint64_t>(parse_int(v.text, 1, kMaxMemoryMb));
       }},
      {"--reset-full-above", "reset-full-above", Kind::Int, "Server",
       "MB", "Reset the whole VM when a request dirtied more than this",
       [](Options& o, const Value& v, const Ctx&) {
         o.reset_full_above_mb = static_cast<uint64_t>(parse_int(v.text, 0, kMaxMemoryMb));
       }},
      {"-w,--warmup", "warmup", Kind::Int, "Server", "N", "Warm-up requests before serving (default 0)",
       [](Options& o, const Value& v, const Ctx&) { o.warmup = static_cast<unsigned>(parse_int(v.text, 0, 1000000)); }},
      {"--warmup-path", "warmup-path", Kind::String, "Server", "/PATH", "Path of warm-up requests (default /)",
       [](Options& o, const Value& v, const Ctx&) {
         if (v.text.empty() || v.text[0] != '/') throw BadValue("must start with '/': '" + v.text + "'");
         o.warmup_path = v.text;
       }},
      {"--max-boot-time", "max-boot-time", Kind::Float, "Server", "S", "Time limit to start listening (default 20)",
       [](Options& o, const Value& v, const Ctx&) { o.max_boot_time = parse_seconds(v.text); }},
      {"--metrics", "metrics", Kind::String, "Server", "ADDR:PORT", "Serve metrics here",
       [](Options& o, const Value& v, const Ctx&) { o.metrics = endpoint(v.text, false); }},
      {"--isolate", "isolate", Kind::String, "Server", "connection|request",
       "Reset workers per connection (default) or per HTTP request (implies -e)",
       [](Options& o, const Value& v, const Ctx&) {
         if (v.text != "connection" && v.text != "request")
           throw BadValue("must be 'connection' or 'request', not '" + v.text + "'");
         o.isolate_requests = v.text == "request";
       }},
      {"--listen", "listen", Kind::List, "Server", "ADDR:PORT|unix:PATH",
       "Where clients connect with --isolate=request, and with serve FILE (default: the program's own address)",
       [](Options& o, const Value& v, const Ctx& c) {
         for (auto& s : v.items) o.listen.push_back(s.rfind("unix:", 0) == 0 ? "unix:" + abs_path(s.substr(5), c) : endpoint(s, false));
       }},
      {"--max-header-bytes", "max-header-bytes", Kind::Int, "Server", "N", "Largest request head (default 65536)",
       [](Options& o, const Value& v, const Ctx&) { o.max_header_bytes = uint64_t(parse_int(v.text, 1024, 16 << 20)); }},
      {"--max-header-time", "max-header-time", Kind::Float, "Server", "S", "Time to send a request head (default 10)",
       [](Options& o, const Value& v, const Ctx&) { o.max_header_time = parse_seconds(v.text); }},
      {"--max-request-body", "max-request-body", Kind::Int, "Server", "MB", "Largest request body (default 1024, 0: none)",
       [](Options& o, const Value& v, const Ctx&) { o.max_request_body_mb = uint64_t(parse_int(v.text, 0, 1 << 30)); }},
      // --- Snapshots (src/snapshot/format.hpp)
      {"-o,--output", "output", Kind::String, "Snapshot", "FILE", "kvmserver snapshot: the file to write",
       [](Options& o, const Value& v, const Ctx& c) { o.snapshot_output = abs_path(v.text, c); }},
      {"--snapshot-on-ready", "snapshot-on-ready", Kind::String, "Snapshot", "FILE",
       "Also save the paused template to FILE before serving",
       [](Options& o, const Value& v, const Ctx& c) { o.snapshot_on_ready = abs_path(v.text, c); }},
      {"--verify", "verify", Kind::Flag, "Snapshot", "",
       "kvmserver serve/inspect: check every memory chunk's checksum first (reads the whole file)",
       [](Options& o, const Value& v, const Ctx&) { o.verify = v.count > 0; }},
      {"--reopen-changed-files", "reopen-changed-files", Kind::Flag, "Snapshot", "",
       "kvmserver serve: reopen files the template had open that changed since (default: refuse to start)",
       [](Options& o, const Value& v, const Ctx&) { o.reopen_changed_files = v.count > 0; }},
  };
  return s;
}

const Spec* find_spec(std::string_view key) {
  for (auto& s : specs())
    if (key == s.key) return &s;
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// The config file.

std::string dir_of(const std::string& path) {
  auto pos = path.rfind('/');
  return pos == 0 ? "/" : path.substr(0, pos);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    auto c = s.find(',', start);
    auto item = s.substr(start, c == std::string::npos ? std::string::npos : c - start);
    if (item.empty()) throw BadValue("empty item in '" + s + "'");
    out.push_back(std::move(item));
    if (c == std::string::npos) break;
    start = c + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// --print-config: the options in effect, as a config file would give them.

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string toml_value(const Spec& spec, const Value& v) {
  auto array = [](const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + toml_string(items[i]);
    return out + "]";
  };
  switch (spec.kind) {
    case Kind::Flag: return v.count ? "true" : "false";
    case Kind::Count: return std::to_string(v.count);
    case Kind::Int:
    case Kind::Float: return v.text;
    case Kind::String: return toml_string(v.text);
    case Kind::Switch: return v.text.empty() ? "true" : toml_string(v.text);
    case Kind::List:
    case Kind::ListGrant: return array(v.items);
    case Kind::OptGrant: return v.all ? "true" : array(v.items);  // bare: everything, the items included
  }
  return "";
}

// An option set by the config file or the command line, in the order applied: --print-config's input.
struct Given {
  const Spec* spec;
  Value value;
  std::string source;  // the config file's path, or "command line"
};

bool is_list_kind(Kind k) { return k == Kind::List || k == Kind::ListGrant || k == Kind::OptGrant; }

// Valid TOML, reusable as a config file: one line per key set, a list's items from every source
// together (the command line adds to the file's), a scalar's last value (the command line's wins).
std::string print_config(const Options& o, const std::vector<Given>& given) {
  std::string out = std::string("# kvmserver ") + kVersion + ": the options in effect (--print-config)\n";
  out += "# config file: " + (o.config_file.empty() ? std::string("none") : o.config_file) + "\n";
  std::string unset;
  for (const auto& spec : specs()) {
    std::optional<Value> merged;
    std::string sources;
    for (const auto& g : given) {
      if (g.spec != &spec) continue;
      if (sources.find(g.source) == std::string::npos) sources += (sources.empty() ? "" : " + ") + g.source;
      if (!merged || !is_list_kind(spec.kind)) {
        merged = g.value;
      } else {
        merged->all |= g.value.all;
        merged->items.insert(merged->items.end(), g.value.items.begin(), g.value.items.end());
      }
    }
    if (!merged) {
      unset += std::string(unset.empty() ? "" : ", ") + spec.key;
      continue;
    }
    std::string value = toml_value(spec, *merged);
    if (std::string_view(spec.key) == "threads" && value == "0") {
      value = std::to_string(o.threads);
      sources += " (0: one per CPU)";
    }
    out += fmt::format("{:<48} # {}\n", std::string(spec.key) + " = " + value, sources);
  }
  out += "# at their defaults (kvmserver --help): " + unset + "\n";
  if (o.command == Command::Serve) out += "# serve: " + o.snapshot_file + "\n";
  if (!o.program.empty()) {
    std::string run = o.program;
    for (const auto& a : o.args)
      run += " " + (a.empty() || a.find_first_of(" \t\"'\\$") != std::string::npos ? toml_string(a) : a);
    out += "# run: " + run + "\n";
  }
  return out;
}

void apply_config(Options& o, const std::string& path, std::vector<Given>& given) {
  auto entries = detail::read_config_file(path);
  std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.line < b.line; });
  Ctx ctx{dir_of(path)};
  for (auto& e : entries) {
    std::string where = path + ":" + std::to_string(e.line) + ": ";
    const Spec* spec = find_spec(e.key);
    if (!spec) throw UsageError(where + "unknown key '" + e.key + "' in config file " + path);
    where += e.key + ": ";
    const auto& val = e.value;
    auto type_error = [&](const char* expected) { return UsageError(where + "expected " + expected); };
    Value v;
    try {
      switch (spec->kind) {
        case Kind::Flag:
          if (!std::holds_alternative<bool>(val)) throw type_error("true or false");
          v.count = std::get<bool>(val) ? 1 : 0;
          break;
        case Kind::Count:
          if (auto* b = std::get_if<bool>(&val)) {
            v.count = *b ? 1 : 0;
          } else if (auto* i = std::get_if<int64_t>(&val)) {
            v.count = *i;
          } else {
            throw type_error("true, false or a number");
          }
          break;
        case Kind::Int:
          if (!std::holds_alternative<int64_t>(val)) throw type_error("an integer");
          v.text = std::to_string(std::get<int64_t>(val));
          break;
        case Kind::Float:
          if (auto* i = std::get_if<int64_t>(&val)) {
            v.text = std::to_string(*i);
          } else if (auto* d = std::get_if<double>(&val)) {
            v.text = fmt::format("{}", *d);
          } else {
            throw type_error("a number");
          }
          break;
        case Kind::String:
          if (!std::holds_alternative<std::string>(val)) throw type_error("a string");
          v.text = std::get<std::string>(val);
          break;
        case Kind::List:
          if (auto* s = std::get_if<std::string>(&val)) {
            v.items = {*s};
          } else if (auto* a = std::get_if<std::vector<std::string>>(&val)) {
            v.items = *a;
          } else {
            throw type_error("a string or an array of strings");
          }
          break;
        case Kind::Switch:
          if (auto* b = std::get_if<bool>(&val)) {
            v.text = *b ? "on" : "off";
          } else if (auto* t = std::get_if<std::string>(&val); t && !t->empty()) {
            v.text = *t;
          } else {
            throw type_error("true, false, \"on\" or \"off\"");
          }
          break;
        case Kind::OptGrant:
        case Kind::ListGrant:
          if (auto* b = std::get_if<bool>(&val); b && spec->kind == Kind::OptGrant) {
            v.all = *b;
          } else if (auto* s = std::get_if<std::string>(&val)) {
            v.items = split_commas(*s);
          } else if (auto* a = std::get_if<std::vector<std::string>>(&val)) {
            for (auto& item : *a)
              if (item.empty()) throw BadValue("empty item");
            v.items = *a;
          } else {
            throw type_error(spec->kind == Kind::OptGrant ? "true, a string or an array of strings"
                                                           : "a string or an array of strings");
          }
          break;
      }
      spec->apply(o, v, ctx);
      given.push_back({spec, v, path});
    } catch (const BadValue& e) {
      throw UsageError(where + e.what());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The command line.

class Formatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App*, std::string) const override {
    return "Usage: kvmserver [OPTIONS] run [--] PROGRAM [ARGS...]\n"
           "       kvmserver snapshot --output FILE [OPTIONS] run [--] PROGRAM [ARGS...]\n"
           "       kvmserver serve FILE [OPTIONS]\n"
           "       kvmserver inspect [--verify] FILE\n"
           "       kvmserver doctor       (what this host offers, and whether kvmserver can run here)\n"
           "       kvmserver --help | --version\n";
  }
  // "--allow-read[=PATH,...]", "--volume HOST:GUEST[:rw]", "--stats": no CLI11 " ..." decorations.
  std::string make_option_opts(const CLI::Option* opt) const override {
    if (opt->get_expected_max() == 0) return "";
    std::string t = opt->get_type_name();
    if (t.empty()) return "";
    return t[0] == '[' ? t : " " + t;
  }
};

bool is_grant_kind(Kind k) { return k == Kind::OptGrant || k == Kind::ListGrant; }

// Where `run` is among the arguments: the first `run` that is not the value of an option.
// first_positional: the first argument of any name that is not an option or an option's value
// (serve FILE, inspect FILE).
size_t find_run(const CLI::App& app, const std::vector<std::string>& a, bool first_positional = false) {
  auto takes_value = [&](const std::string& name) {
    const CLI::Option* o = app.get_option_no_throw(name);
    return o && o->get_expected_min() > 0;
  };
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string& t = a[i];
    if (t == "run") return i;
    if (t == "--") break;
    if (first_positional && (t.empty() || t[0] != '-')) return i;
    if (t.size() > 2 && t[0] == '-' && t[1] == '-') {
      if (t.find('=') == std::string::npos && takes_value(t)) ++i;
    } else if (t.size() > 1 && t[0] == '-') {
      for (size_t k = 1; k < t.size(); ++k) {
        std::string name{'-', t[k]};
        if (!app.get_option_no_throw(name)) break;  // CLI11 will complain
        if (takes_value(name)) {
          if (k + 1 == t.size()) ++i;  // -t 4; otherwise -t4
          break;
        }
      }
    }
  }
  return std::string::npos;
}

std::string get_cwd() {
  std::string buf(4096, '\0');
  if (!::getcwd(buf.data(), buf.size())) throw UsageError(std::string("cannot get the working directory: ") + std::strerror(errno));
  buf.resize(std::strlen(buf.c_str()));
  return buf;
}

}  // namespace

Options parse_options(const std::vector<std::string>& argv_in, std::string_view caller_cwd) {
  std::vector<std::string> args(argv_in.begin() + (argv_in.empty() ? 0 : 1), argv_in.end());
  // `snapshot`, `serve FILE` and `inspect FILE` come first; `run` is found among the options.
  Command command = Command::Run;
  std::string snapshot_file;
  if (!args.empty() && args[0] == "doctor") {
    if (args.size() > 1) throw UsageError("doctor takes no arguments");
    Options o;
    o.command = Command::Doctor;
    return o;
  }
  if (!args.empty() && (args[0] == "snapshot" || args[0] == "serve" || args[0] == "inspect")) {
    command = args[0] == "snapshot" ? Command::Snapshot : args[0] == "serve" ? Command::Serve : Command::Inspect;
    args.erase(args.begin());
  }

  CLI::App app{"Runs unmodified Linux x86-64 programs inside a KVM guest, with per-request isolation.",
               "kvmserver"};
  app.formatter(std::make_shared<Formatter>());
  app.allow_extras();  // reported below, after the values: `-t run p` is about -t, not about p
  app.set_version_flag("--version", std::string("kvmserver ") + kVersion);
  app.footer(
      "Everything after `run` belongs to the program. Nothing on the host is reachable unless "
      "granted.\nThe guest's /proc, /sys and /dev are made up by kvmserver: no grant reaches the host's. /dev "
      "holds null, zero,\nfull, random, urandom, and tty (kvmserver's terminal) with --allow-read=/dev/tty or "
      "--allow-write=/dev/tty.\n--config FILE takes the long options as TOML keys, e.g. allow-read = [\"/lib\"], "
      "timeout = 2.5.");
  app.add_option("--config", "TOML file of options (the long names as keys; default: ./kvmserver.toml if there is one)")
      ->allow_extra_args(false)
      ->type_name("FILE");
  app.add_flag("--print-config")->description("Print the options in effect (config file and command line) as TOML, and exit");

  std::vector<std::pair<const Spec*, CLI::Option*>> opts;
  for (auto& s : specs()) {
    CLI::Option* o = nullptr;
    switch (s.kind) {
      case Kind::Flag:
      case Kind::Count:
        o = app.add_flag(s.names, s.help)->disable_flag_override();
        break;
      case Kind::Int:
      case Kind::Float:
      case Kind::String:
        o = app.add_option(s.names, s.help)->take_last()->allow_extra_args(false);
        break;
      case Kind::List:
        o = app.add_option(s.names, s.help)->take_all()->allow_extra_args(false);
        break;
      case Kind::OptGrant:
        o = app.add_option(s.names, s.help)
                ->expected(0, CLI::detail::expected_max_vector_size)
                ->allow_extra_args(false)
                ->delimiter(',')
                ->take_all();
        break;
      case Kind::ListGrant:
        o = app.add_option(s.names, s.help)->allow_extra_args(false)->delimiter(',')->take_all();
        break;
      case Kind::Switch:
        o = app.add_option(s.names, s.help)->expected(0, 1)->allow_extra_args(false)->take_last();
        break;
    }
    o->group(s.group);
    if (*s.metavar) o->type_name(s.metavar);
    opts.emplace_back(&s, o);
  }

  // serve FILE, inspect FILE: wherever FILE is among the options.
  if (command == Command::Serve || command == Command::Inspect) {
    const size_t at = find_run(app, args, true);
    if (at == std::string::npos || args[at] == "run")
      throw UsageError(std::string(command == Command::Serve ? "serve" : "inspect") + " needs a snapshot FILE");
    snapshot_file = args[at];
    args.erase(args.begin() + std::ptrdiff_t(at));
  }
  // Split at `run`: CLI11 sees only our part.
  size_t run = find_run(app, args);
  std::vector<std::string> ours(args.begin(), run == std::string::npos ? args.end() : args.begin() + run);
  // `--allow-read=` and `--allow-read=a,,b` would look like a bare flag to CLI11: reject them.
  for (auto& t : ours) {
    auto eq = t.find('=');
    if (eq == std::string::npos || t.rfind("--", 0) != 0) continue;
    const Spec* s = find_spec(std::string_view(t).substr(2, eq - 2));
    if (!s || !is_grant_kind(s->kind)) continue;
    try {
      split_commas(t.substr(eq + 1));
    } catch (const BadValue& e) {
      throw UsageError(t.substr(0, eq) + ": " + e.what());
    }
  }
  std::reverse(ours.begin(), ours.end());  // CLI11 takes the vector last-first
  try {
    app.parse(ours);
  } catch (const CLI::CallForHelp&) {
    throw InfoExit(app.help());
  } catch (const CLI::CallForAllHelp&) {
    throw InfoExit(app.help());
  } catch (const CLI::CallForVersion& e) {
    throw InfoExit(std::string(e.what()) + "\n");
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    throw UsageError(msg);
  }

  Options o;
  const std::string cwd = caller_cwd.empty() ? get_cwd() : std::string(caller_cwd);
  o.cwd = cwd;
  Ctx ctx{cwd};
  std::vector<Given> given;  // for --print-config
  if (auto* c = app.get_option("--config"); c->count() > 0) {
    o.config_file = abs_path(c->results().back(), ctx);
    apply_config(o, o.config_file, given);
  } else if (command != Command::Inspect && ::access((cwd + "/kvmserver.toml").c_str(), F_OK) == 0) {
    o.config_file = linux::normalize_path(cwd + "/kvmserver.toml");  // as the reference kvmserver does
    apply_config(o, o.config_file, given);
  }
  for (auto& [spec, opt] : opts) {
    if (opt->count() == 0) continue;
    Value v;
    const auto& res = opt->results();
    switch (spec->kind) {
      case Kind::Flag:
      case Kind::Count:
        v.count = static_cast<int64_t>(opt->count());
        break;
      case Kind::Int:
      case Kind::Float:
      case Kind::String:
        v.text = res.back();
        break;
      case Kind::Switch:
        v.text = res.empty() ? "" : res.back();
        break;
      case Kind::List:
      case Kind::ListGrant:
        v.items = res;
        break;
      case Kind::OptGrant:
        for (auto& r : res) {
          if (r.empty()) {
            v.all = true;
          } else {
            v.items.push_back(r);
          }
        }
        break;
    }
    try {
      spec->apply(o, v, ctx);
      given.push_back({spec, v, "command line"});
    } catch (const BadValue& e) {
      std::string name = spec->key;
      throw UsageError("--" + name + ": " + e.what());
    }
  }

  if (auto extra = app.remaining(); !extra.empty()) {
    const std::string& x = extra.front();
    if (x.size() > 1 && x[0] == '-') throw UsageError("unknown option '" + x + "'");
    throw UsageError("unexpected argument '" + x + "' (the program and its arguments go after `run`)");
  }
  o.command = command;
  if (!snapshot_file.empty()) o.snapshot_file = abs_path(snapshot_file, ctx);
  // `run [--] PROGRAM ARGS...`: false when there is no `run` or no PROGRAM after it.
  auto take_program = [&] {
    if (run == std::string::npos) return false;
    size_t p = run + 1;
    if (p < args.size() && args[p] == "--") ++p;
    if (p >= args.size() || args[p].empty()) return false;
    o.program = args[p];
    o.args.assign(args.begin() + static_cast<std::ptrdiff_t>(p) + 1, args.end());
    return true;
  };
  if (app.get_option("--print-config")->count() > 0) {
    take_program();
    throw InfoExit(print_config(o, given));
  }
  if (command == Command::Serve || command == Command::Inspect) {
    const char* name = command == Command::Serve ? "serve" : "inspect";
    if (run != std::string::npos) throw UsageError(std::string(name) + " takes no program: it is in the snapshot");
    if (command == Command::Inspect && args.size() > (o.verify ? 1u : 0u))
      throw UsageError("inspect takes only --verify and a FILE");
    if (!o.env.empty() || o.allow_env.any())
      throw UsageError(std::string(name) + ": the environment is in the snapshot (--env and --allow-env apply when making it)");
    if (o.warmup > 0) throw UsageError(std::string(name) + ": --warmup applies when making the snapshot");
    if (!o.snapshot_output.empty() || !o.snapshot_on_ready.empty())
      throw UsageError(std::string(name) + ": --output and --snapshot-on-ready apply when making a snapshot");
    if (o.isolate_requests) o.ephemeral = true;  // serve: --listen without --isolate=request moves the listeners
    return o;
  }
  if (command == Command::Snapshot && o.snapshot_output.empty()) throw UsageError("snapshot needs --output FILE");
  if (command != Command::Snapshot && !o.snapshot_output.empty())
    throw UsageError("--output is for `kvmserver snapshot` (or use --snapshot-on-ready FILE)");
  if (o.verify || o.reopen_changed_files) throw UsageError("--verify and --reopen-changed-files are for `kvmserver serve`");
  if (run == std::string::npos) throw UsageError("nothing to run: expected `run [--] PROGRAM [ARGS...]`");
  if (!take_program()) throw UsageError("`run` needs a PROGRAM");
  if (o.isolate_requests) o.ephemeral = true;  // a request's worker is reset after it: that is the point
  if (!o.listen.empty() && !o.isolate_requests)
    throw UsageError("--listen is the front's address: it needs --isolate=request");
  return o;
}

Options parse_options(int argc, char** argv, std::string_view caller_cwd) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
  return parse_options(args, caller_cwd);
}

std::optional<Options> parse_command_line(int argc, char** argv, int& exit_status) {
  try {
    return parse_options(argc, argv);
  } catch (const InfoExit& e) {
    std::fputs(e.text().c_str(), stdout);
    std::fflush(stdout);
    exit_status = InfoExit::kExitStatus;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "kvmserver: %s (see kvmserver --help)\n", e.what());
    exit_status = UsageError::kExitStatus;
  }
  return std::nullopt;
}

linux::Limits limits_config(const Options& o) {
  linux::Limits l;
  l.memory = o.max_memory_mb << 20;
  l.processes = o.max_processes;
  l.threads = o.max_threads;
  l.fds = o.max_fds;
  l.tmp_bytes = o.max_tmp_size_mb << 20;
  l.pending_signals = o.max_pending_signals;
  l.epoll_watches = o.max_epoll_watches;
  l.timers = o.max_timers;
  return l;
}

linux::NetPolicyConfig net_config(const Options& o) {
  linux::NetPolicyConfig net;
  net.listen_all = o.allow_all || o.allow_listen.all;
  net.connect_all = o.allow_all || o.allow_connect.all;
  net.listen = o.allow_listen.items;
  net.connect = o.allow_connect.items;
  return net;
}

linux::PolicyConfig policy_config(const Options& o) {
  linux::PolicyConfig c;
  c.allow_all = o.allow_all;
  c.read_all = o.allow_read.all;
  c.write_all = o.allow_write.all;
  c.read = o.allow_read.items;
  c.write = o.allow_write.items;
  c.volumes = o.volumes;
  return c;
}

}  // namespace kvms::cli

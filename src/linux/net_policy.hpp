#pragma once
// The network permission policy: which addresses the guest may listen on (bind) and connect to
// (connect, and sendto/sendmsg destinations), from Deno-style flags:
//   --allow-listen=ADDR:PORT|PATH,...   --allow-connect=HOST:PORT|PATH,...   --allow-net (both, all)
//
// Entry forms (the same for both lists):
//   127.0.0.1:8080  [::1]:8080  0.0.0.0:80    one address, one port (IPv6 in brackets)
//   localhost:8080                           127.0.0.1 and ::1 (never looked up)
//   example.com:443                          every address the name resolves to at construction
//   *:8080  :8080                            any address, that port
//   127.0.0.1  [::1]  HOST  HOST:*           that address (or name), any port
//   *                                        any address, any port
//   /run/app.sock                            that Unix socket path exactly
//   /run/app/                                any Unix socket path under that directory
//   @name                                    that abstract Unix socket name
// Addresses compare exactly, after IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are taken as the
// IPv4 address: 0.0.0.0 is not 127.0.0.1, and [::] is not 0.0.0.0 (use *:PORT for "anywhere").
// Port 0 (ephemeral) matches entries without a port (or with port * or 0) only.
// Unnamed Unix sockets (socketpair, autobind, an unbound client) need no grant.
//
// Unix paths are guest paths. The sockaddr forms match the path in the address only when it is
// absolute (after lexical normalization); socket.cpp joins relative paths with the guest's cwd and
// asks with the *_path forms. Paths also need the file policy (PathPolicy), which socket.cpp checks.
//
// Immutable after construction; thread-safe.
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#ifdef linux
#undef linux
#endif

namespace kvms::linux {

struct NetPolicyConfig {
  bool listen_all = false, connect_all = false;
  std::vector<std::string> listen, connect;
};

class NetPolicy {
 public:
  // Throws std::invalid_argument with a one-line message for a malformed entry or a host name that
  // does not resolve.
  explicit NetPolicy(NetPolicyConfig config);

  // bind() of a socket (and an implicit bind by listen()). AF_UNSPEC is judged as AF_INET (an IPv4
  // socket binds it as such).
  bool may_listen(const sockaddr* addr, socklen_t len) const;
  // connect()/sendto() destination. AF_UNSPEC is judged as AF_INET (that is how UDP sendto reads
  // it); connect()'s AF_UNSPEC (dissolve the association) is the caller's to allow.
  bool may_connect(const sockaddr* addr, socklen_t len) const;
  // Unix socket paths: absolute guest paths (normalized here lexically).
  bool may_listen_path(std::string_view guest_path) const;
  bool may_connect_path(std::string_view guest_path) const;

  // "127.0.0.1:8080", "[::1]:80", "/tmp/x.sock", "@abstract", "(unnamed)", "(unspecified)".
  static std::string describe(const sockaddr* addr, socklen_t len);

  const NetPolicyConfig& config() const { return config_; }

 private:
  struct Ip {
    int family = 0;  // AF_INET (first 4 bytes used) or AF_INET6
    std::array<uint8_t, 16> bytes{};
    bool operator==(const Ip&) const = default;
  };
  struct InetRule {
    bool any_address = false;
    std::vector<Ip> addresses;
    std::optional<uint16_t> port;  // nullopt: any port
  };
  struct Rules {
    bool all = false;
    std::vector<InetRule> inet;
    std::vector<std::string> paths;  // exact, normalized
    std::vector<std::string> dirs;   // normalized, no trailing slash ("/" for the root)
    std::vector<std::string> abstract_names;
  };

  static Rules parse(const std::vector<std::string>& entries, bool all, const char* flag);
  static void parse_one(const std::string& entry, Rules& rules, const char* flag);
  static bool match(const Rules& rules, const sockaddr* addr, socklen_t len);
  static bool match_inet(const Rules& rules, const Ip& ip, uint16_t port);
  static bool match_path(const Rules& rules, std::string_view path);

  NetPolicyConfig config_;
  Rules listen_, connect_;
};

}  // namespace kvms::linux

#include "linux/net_policy.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "linux/policy.hpp"

namespace kvms::linux {
namespace {

constexpr socklen_t kSunPathOffset = offsetof(sockaddr_un, sun_path);
constexpr socklen_t kSin6MinLen = 24;  // SIN6_LEN_RFC2133: sockaddr_in6 without the scope id

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

}  // namespace

NetPolicy::NetPolicy(NetPolicyConfig config)
    : config_(std::move(config)),
      listen_(parse(config_.listen, config_.listen_all, "--allow-listen")),
      connect_(parse(config_.connect, config_.connect_all, "--allow-connect")) {}

NetPolicy::Rules NetPolicy::parse(const std::vector<std::string>& entries, bool all, const char* flag) {
  Rules rules;
  rules.all = all;
  for (const auto& e : entries) parse_one(e, rules, flag);
  return rules;
}

void NetPolicy::parse_one(const std::string& entry, Rules& rules, const char* flag) {
  auto bad = [&](const std::string& why) {
    throw std::invalid_argument(std::string(flag) + ": bad entry '" + entry + "': " + why);
  };
  if (entry.empty()) bad("empty");
  if (entry.find('\0') != std::string::npos) bad("contains a NUL byte");

  if (entry[0] == '/') {
    if (entry.size() >= sizeof(sockaddr_un::sun_path)) bad("a Unix socket path is at most 107 bytes");
    std::string norm = normalize_path(entry);
    if (entry.back() == '/')
      rules.dirs.push_back(norm);
    else
      rules.paths.push_back(norm);
    return;
  }
  if (entry[0] == '@') {
    if (entry.size() == 1) bad("empty abstract socket name");
    if (entry.size() > sizeof(sockaddr_un::sun_path)) bad("an abstract socket name is at most 107 bytes");
    rules.abstract_names.push_back(entry.substr(1));
    return;
  }

  // Inet: HOST, HOST:PORT, [V6], [V6]:PORT, *, *:PORT, :PORT, HOST:*.
  std::string host, port;
  bool has_port = false, bracketed = false;
  if (entry[0] == '[') {
    auto close = entry.find(']');
    if (close == std::string::npos) bad("missing ']'");
    host = entry.substr(1, close - 1);
    std::string rest = entry.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') bad("expected ':PORT' after ']'");
      port = rest.substr(1);
      has_port = true;
    }
    bracketed = true;
  } else {
    auto colons = std::count(entry.begin(), entry.end(), ':');
    if (colons > 1) bad("write IPv6 addresses in brackets, like [::1]:8080");
    auto colon = entry.find(':');
    if (colon == std::string::npos) {
      host = entry;
    } else {
      host = entry.substr(0, colon);
      port = entry.substr(colon + 1);
      has_port = true;
    }
  }

  InetRule rule;
  if (has_port && port != "*") {
    if (!all_digits(port) || port.size() > 5 || std::stoul(port) > 65535) bad("bad port '" + port + "'");
    rule.port = static_cast<uint16_t>(std::stoul(port));
  }

  if (bracketed) {
    Ip ip;
    ip.family = AF_INET6;
    if (inet_pton(AF_INET6, host.c_str(), ip.bytes.data()) != 1) bad("'" + host + "' is not an IPv6 address");
    if (IN6_IS_ADDR_V4MAPPED(reinterpret_cast<const in6_addr*>(ip.bytes.data()))) {
      Ip v4;
      v4.family = AF_INET;
      std::memcpy(v4.bytes.data(), ip.bytes.data() + 12, 4);
      ip = v4;
    }
    rule.addresses.push_back(ip);
  } else if (host.empty() || host == "*") {
    rule.any_address = true;
  } else if (iequals(host, "localhost")) {
    Ip v4, v6;
    v4.family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", v4.bytes.data());
    v6.family = AF_INET6;
    inet_pton(AF_INET6, "::1", v6.bytes.data());
    rule.addresses = {v4, v6};
  } else {
    Ip ip;
    ip.family = AF_INET;
    if (inet_pton(AF_INET, host.c_str(), ip.bytes.data()) == 1) {
      rule.addresses.push_back(ip);
    } else {
      if (all_digits(host) && !has_port) bad("a bare number is not a host; for a port write ':" + host + "'");
      if (std::all_of(host.begin(), host.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; }))
        bad("'" + host + "' is not an IPv4 address");
      bool name_ok = std::all_of(host.begin(), host.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_';
      });
      if (!name_ok || host.size() > 253) bad("'" + host + "' is not a host name or address");
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
      if (rc != 0) bad("cannot resolve '" + host + "': " + gai_strerror(rc));
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        Ip r;
        if (ai->ai_family == AF_INET) {
          r.family = AF_INET;
          std::memcpy(r.bytes.data(), &reinterpret_cast<const sockaddr_in*>(ai->ai_addr)->sin_addr, 4);
        } else if (ai->ai_family == AF_INET6) {
          r.family = AF_INET6;
          std::memcpy(r.bytes.data(), &reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr, 16);
        } else {
          continue;
        }
        if (std::find(rule.addresses.begin(), rule.addresses.end(), r) == rule.addresses.end())
          rule.addresses.push_back(r);
      }
      freeaddrinfo(res);
      if (rule.addresses.empty()) bad("'" + host + "' has no IPv4 or IPv6 address");
    }
  }
  rules.inet.push_back(std::move(rule));
}

bool NetPolicy::match_inet(const Rules& rules, const Ip& ip, uint16_t port) {
  for (const auto& r : rules.inet) {
    if (r.port && *r.port != port) continue;
    if (r.any_address || std::find(r.addresses.begin(), r.addresses.end(), ip) != r.addresses.end()) return true;
  }
  return false;
}

bool NetPolicy::match_path(const Rules& rules, std::string_view path) {
  if (path.empty() || path[0] != '/') return false;
  std::string norm = normalize_path(path);
  if (std::find(rules.paths.begin(), rules.paths.end(), norm) != rules.paths.end()) return true;
  for (const auto& d : rules.dirs) {
    if (d == "/") return norm.size() > 1;
    if (norm.size() > d.size() + 1 && norm.compare(0, d.size(), d) == 0 && norm[d.size()] == '/') return true;
  }
  return false;
}

bool NetPolicy::match(const Rules& rules, const sockaddr* addr, socklen_t len) {
  if (!addr || len < socklen_t(sizeof(sa_family_t))) return false;
  sa_family_t family = addr->sa_family;
  if (family == AF_UNIX) {
    if (len <= kSunPathOffset) return true;  // autobind / unnamed
    const auto* un = reinterpret_cast<const sockaddr_un*>(addr);
    size_t max = std::min<size_t>(len - kSunPathOffset, sizeof un->sun_path);
    if (un->sun_path[0] == '\0') {
      std::string_view name(un->sun_path + 1, max - 1);
      if (rules.all) return true;
      return std::find(rules.abstract_names.begin(), rules.abstract_names.end(), name) !=
             rules.abstract_names.end();
    }
    if (rules.all) return true;
    return match_path(rules, std::string_view(un->sun_path, strnlen(un->sun_path, max)));
  }
  if (family == AF_INET || family == AF_UNSPEC) {
    if (len < socklen_t(sizeof(sockaddr_in))) return false;
    if (rules.all) return true;
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    Ip ip;
    ip.family = AF_INET;
    std::memcpy(ip.bytes.data(), &in->sin_addr, 4);
    return match_inet(rules, ip, ntohs(in->sin_port));
  }
  if (family == AF_INET6) {
    if (len < kSin6MinLen) return false;
    if (rules.all) return true;
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    Ip ip;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      ip.family = AF_INET;
      std::memcpy(ip.bytes.data(), in6->sin6_addr.s6_addr + 12, 4);
    } else {
      ip.family = AF_INET6;
      std::memcpy(ip.bytes.data(), &in6->sin6_addr, 16);
    }
    return match_inet(rules, ip, ntohs(in6->sin6_port));
  }
  return false;
}

bool NetPolicy::may_listen(const sockaddr* addr, socklen_t len) const { return match(listen_, addr, len); }
bool NetPolicy::may_connect(const sockaddr* addr, socklen_t len) const { return match(connect_, addr, len); }
bool NetPolicy::may_listen_path(std::string_view p) const { return listen_.all || match_path(listen_, p); }
bool NetPolicy::may_connect_path(std::string_view p) const { return connect_.all || match_path(connect_, p); }

std::string NetPolicy::describe(const sockaddr* addr, socklen_t len) {
  if (!addr || len < socklen_t(sizeof(sa_family_t))) return "(no address)";
  char buf[INET6_ADDRSTRLEN] = {};
  switch (addr->sa_family) {
    case AF_UNSPEC:
      if (len < socklen_t(sizeof(sockaddr_in))) return "(unspecified)";
      [[fallthrough]];
    case AF_INET: {
      if (len < socklen_t(sizeof(sockaddr_in))) return "(short IPv4 address)";
      const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
      inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
      if (len < kSin6MinLen) return "(short IPv6 address)";
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
      return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
      if (len <= kSunPathOffset) return "(unnamed)";
      const auto* un = reinterpret_cast<const sockaddr_un*>(addr);
      size_t max = std::min<size_t>(len - kSunPathOffset, sizeof un->sun_path);
      if (un->sun_path[0] == '\0') {
        std::string name(un->sun_path + 1, max - 1);
        std::replace(name.begin(), name.end(), '\0', '@');
        return "@" + name;
      }
      return std::string(un->sun_path, strnlen(un->sun_path, max));
    }
    default:
      return "(address family " + std::to_string(addr->sa_family) + ")";
  }
}

}  // namespace kvms::linux

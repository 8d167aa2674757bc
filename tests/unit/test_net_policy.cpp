// NetPolicy: parsing of every entry form and matching of socket addresses.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "linux/net_policy.hpp"

namespace kvms::linux {
namespace {

// A socket address built from text: "1.2.3.4:80", "[::1]:80", "/path", "@name", "unnamed".
struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
};

Addr addr(const std::string& s) {
  Addr a;
  if (s == "unnamed") {
    a.ss.ss_family = AF_UNIX;
    a.len = sizeof(sa_family_t);
  } else if (s[0] == '/' || s[0] == '@') {
    auto* un = reinterpret_cast<sockaddr_un*>(&a.ss);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, s.data(), s.size());
    if (s[0] == '@') un->sun_path[0] = '\0';
    a.len = offsetof(sockaddr_un, sun_path) + s.size() + (s[0] == '/' ? 1 : 0);
  } else if (s[0] == '[') {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    auto close = s.find(']');
    in6->sin6_family = AF_INET6;
    EXPECT_EQ(inet_pton(AF_INET6, s.substr(1, close - 1).c_str(), &in6->sin6_addr), 1) << s;
    in6->sin6_port = htons(uint16_t(std::stoi(s.substr(close + 2))));
    a.len = sizeof(sockaddr_in6);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&a.ss);
    auto colon = s.find(':');
    in->sin_family = AF_INET;
    EXPECT_EQ(inet_pton(AF_INET, s.substr(0, colon).c_str(), &in->sin_addr), 1) << s;
    in->sin_port = htons(uint16_t(std::stoi(s.substr(colon + 1))));
    a.len = sizeof(sockaddr_in);
  }
  return a;
}

NetPolicy listen_policy(std::vector<std::string> entries) {
  NetPolicyConfig c;
  c.listen = std::move(entries);
  return NetPolicy(c);
}

bool listens(const NetPolicy& p, const std::string& s) {
  Addr a = addr(s);
  return p.may_listen(a.sa(), a.len);
}
bool connects(const NetPolicy& p, const std::string& s) {
  Addr a = addr(s);
  return p.may_connect(a.sa(), a.len);
}

std::string parse_error(std::vector<std::string> entries) {
  try {
    listen_policy(std::move(entries));
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(NetPolicy, EmptyDeniesEverythingButUnnamed) {
  NetPolicy p{NetPolicyConfig{}};
  EXPECT_FALSE(listens(p, "127.0.0.1:80"));
  EXPECT_FALSE(connects(p, "127.0.0.1:80"));
  EXPECT_FALSE(listens(p, "/tmp/x.sock"));
  EXPECT_FALSE(listens(p, "@x"));
  EXPECT_TRUE(listens(p, "unnamed"));
  EXPECT_FALSE(p.may_listen(nullptr, 0));
}

TEST(NetPolicy, AllowNet) {
  NetPolicyConfig c;
  c.listen_all = c.connect_all = true;
  NetPolicy p(c);
  for (auto s : {"127.0.0.1:80", "0.0.0.0:0", "[::]:443", "/x", "@y"}) {
    EXPECT_TRUE(listens(p, s)) << s;
    EXPECT_TRUE(connects(p, s)) << s;
  }
  EXPECT_TRUE(p.may_connect_path("/run/a.sock"));
  NetPolicyConfig only_listen;
  only_listen.listen_all = true;
  NetPolicy l(only_listen);
  EXPECT_TRUE(listens(l, "10.0.0.1:80"));
  EXPECT_FALSE(connects(l, "10.0.0.1:80"));
}

TEST(NetPolicy, AddressAndPort) {
  auto p = listen_policy({"127.0.0.1:8080", "0.0.0.0:80"});
  EXPECT_TRUE(listens(p, "127.0.0.1:8080"));
  EXPECT_FALSE(listens(p, "127.0.0.1:8081"));
  EXPECT_FALSE(listens(p, "127.0.0.2:8080"));
  EXPECT_FALSE(listens(p, "0.0.0.0:8080"));
  EXPECT_TRUE(listens(p, "0.0.0.0:80"));
  EXPECT_FALSE(listens(p, "127.0.0.1:80"));  // addresses compare exactly
  EXPECT_FALSE(listens(p, "[::]:80"));
  EXPECT_FALSE(listens(p, "127.0.0.1:0"));   // ephemeral: only entries without a port
  EXPECT_FALSE(connects(p, "127.0.0.1:8080"));  // listen grants are not connect grants
  // IPv4-mapped IPv6 is IPv4.
  EXPECT_TRUE(listens(p, "[::ffff:127.0.0.1]:8080"));
}

TEST(NetPolicy, Ipv6) {
  auto p = listen_policy({"[::1]:8080", "[::]", "[::ffff:10.0.0.1]:1"});
  EXPECT_TRUE(listens(p, "[::1]:8080"));
  EXPECT_FALSE(listens(p, "[::1]:8081"));
  EXPECT_FALSE(listens(p, "127.0.0.1:8080"));
  EXPECT_TRUE(listens(p, "[::]:1234"));
  EXPECT_TRUE(listens(p, "[::]:0"));
  EXPECT_TRUE(listens(p, "10.0.0.1:1"));
  EXPECT_TRUE(listens(p, "[::ffff:10.0.0.1]:1"));
}

TEST(NetPolicy, Localhost) {
  auto p = listen_policy({"localhost:8080", "LOCALHOST"});
  EXPECT_TRUE(listens(p, "127.0.0.1:8080"));
  EXPECT_TRUE(listens(p, "[::1]:8080"));
  EXPECT_TRUE(listens(p, "127.0.0.1:0"));  // the entry without a port
  EXPECT_TRUE(listens(p, "[::1]:9"));
  EXPECT_FALSE(listens(p, "127.0.0.2:8080"));
  EXPECT_FALSE(listens(p, "0.0.0.0:8080"));
}

TEST(NetPolicy, AnyAddress) {
  auto p = listen_policy({"*:8080", ":9090", "10.1.2.3:*"});
  EXPECT_TRUE(listens(p, "0.0.0.0:8080"));
  EXPECT_TRUE(listens(p, "[::]:8080"));
  EXPECT_TRUE(listens(p, "192.168.1.1:9090"));
  EXPECT_FALSE(listens(p, "0.0.0.0:8081"));
  EXPECT_FALSE(listens(p, "0.0.0.0:0"));
  EXPECT_TRUE(listens(p, "10.1.2.3:1"));
  EXPECT_TRUE(listens(p, "10.1.2.3:0"));
  auto all = listen_policy({"*"});
  EXPECT_TRUE(listens(all, "1.2.3.4:5"));
  EXPECT_TRUE(listens(all, "[::]:0"));
  EXPECT_FALSE(listens(all, "/tmp/x"));  // inet only
  auto zero = listen_policy({"127.0.0.1:0"});
  EXPECT_TRUE(listens(zero, "127.0.0.1:0"));
  EXPECT_FALSE(listens(zero, "127.0.0.1:80"));
}

TEST(NetPolicy, AddressWithoutPort) {
  auto p = listen_policy({"127.0.0.1"});
  EXPECT_TRUE(listens(p, "127.0.0.1:0"));
  EXPECT_TRUE(listens(p, "127.0.0.1:65535"));
  EXPECT_FALSE(listens(p, "127.0.0.2:1"));
}

TEST(NetPolicy, UnixPaths) {
  NetPolicyConfig c;
  c.listen = {"/run/app.sock", "/tmp/socks/", "@abstract"};
  c.connect = {"/var/run/docker.sock"};
  NetPolicy p(c);
  EXPECT_TRUE(listens(p, "/run/app.sock"));
  EXPECT_TRUE(listens(p, "/run//./app.sock"));
  EXPECT_FALSE(listens(p, "/run/app.sock2"));
  EXPECT_FALSE(listens(p, "/run/other.sock"));
  EXPECT_TRUE(listens(p, "/tmp/socks/a"));
  EXPECT_TRUE(listens(p, "/tmp/socks/deep/b"));
  EXPECT_FALSE(listens(p, "/tmp/socks"));
  EXPECT_FALSE(listens(p, "/tmp/socksx/a"));
  EXPECT_FALSE(listens(p, "/tmp/socks/../x"));
  EXPECT_TRUE(listens(p, "@abstract"));
  EXPECT_FALSE(listens(p, "@abstrac"));
  EXPECT_FALSE(listens(p, "@abstract2"));
  EXPECT_FALSE(connects(p, "/run/app.sock"));
  EXPECT_TRUE(connects(p, "/var/run/docker.sock"));
  EXPECT_TRUE(p.may_listen_path("/tmp/socks/x"));
  EXPECT_FALSE(p.may_listen_path("relative"));
  EXPECT_TRUE(p.may_connect_path("/var/run/../run/docker.sock"));
  // A relative path in an address cannot be judged without the cwd: denied here.
  Addr rel = addr("/x");
  std::memcpy(reinterpret_cast<sockaddr_un*>(&rel.ss)->sun_path, "app.sock", 9);
  EXPECT_FALSE(p.may_listen(rel.sa(), rel.len));
  auto root = listen_policy({"/"});
  EXPECT_TRUE(listens(root, "/anything/at/all"));
  EXPECT_FALSE(listens(root, "@abstract"));
}

TEST(NetPolicy, ConnectResolvesNames) {
  NetPolicyConfig c;
  c.connect = {"localhost:5432", "127.0.0.1:6379"};
  NetPolicy p(c);
  EXPECT_TRUE(connects(p, "127.0.0.1:5432"));
  EXPECT_TRUE(connects(p, "[::1]:5432"));
  EXPECT_TRUE(connects(p, "127.0.0.1:6379"));
  EXPECT_FALSE(connects(p, "127.0.0.1:6380"));
  // AF_UNSPEC is judged as IPv4 (UDP sendto reads it so).
  Addr u = addr("127.0.0.1:6379");
  u.ss.ss_family = AF_UNSPEC;
  EXPECT_TRUE(p.may_connect(u.sa(), u.len));
  reinterpret_cast<sockaddr_in*>(&u.ss)->sin_port = htons(1);
  EXPECT_FALSE(p.may_connect(u.sa(), u.len));
  // A name that resolves (through /etc/hosts, no network needed) or does not.
  NetPolicyConfig bad;
  bad.connect = {"no-such-host.invalid:80"};
  EXPECT_THROW(NetPolicy{bad}, std::invalid_argument);
}

TEST(NetPolicy, ShortAddressesAreDenied) {
  auto p = listen_policy({"*"});
  Addr a = addr("127.0.0.1:80");
  EXPECT_FALSE(p.may_listen(a.sa(), 8));
  Addr b = addr("[::1]:80");
  EXPECT_FALSE(p.may_listen(b.sa(), 20));
  EXPECT_TRUE(p.may_listen(b.sa(), 24));  // without the scope id
  Addr other;
  other.ss.ss_family = AF_NETLINK;
  other.len = 12;
  EXPECT_FALSE(p.may_listen(other.sa(), other.len));
}

TEST(NetPolicy, ParseErrors) {
  EXPECT_NE(parse_error({""}).find("empty"), std::string::npos);
  EXPECT_NE(parse_error({"::1:80"}).find("brackets"), std::string::npos);
  EXPECT_NE(parse_error({"[::1"}).find("]"), std::string::npos);
  EXPECT_NE(parse_error({"[::1]80"}).find("PORT"), std::string::npos);
  EXPECT_NE(parse_error({"[1.2.3.4]:80"}).find("IPv6"), std::string::npos);
  EXPECT_NE(parse_error({"127.0.0.1:99999"}).find("port"), std::string::npos);
  EXPECT_NE(parse_error({"127.0.0.1:"}).find("port"), std::string::npos);
  EXPECT_NE(parse_error({"127.0.0.1:http"}).find("port"), std::string::npos);
  EXPECT_NE(parse_error({"8080"}).find(":8080"), std::string::npos);
  EXPECT_NE(parse_error({"1.2.3"}).find("IPv4"), std::string::npos);
  EXPECT_NE(parse_error({"bad host:80"}).find("host"), std::string::npos);
  EXPECT_NE(parse_error({"@"}).find("abstract"), std::string::npos);
  EXPECT_NE(parse_error({"/" + std::string(200, 'a')}).find("107"), std::string::npos);
  // The message names the flag and the entry, on one line.
  std::string msg = parse_error({"localhost:1", "x:y"});
  EXPECT_EQ(msg.rfind("--allow-listen", 0), 0u) << msg;
  EXPECT_NE(msg.find("'x:y'"), std::string::npos);
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  NetPolicyConfig c;
  c.connect = {"[zz]:1"};
  try {
    NetPolicy p(c);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--allow-connect", 0), 0u);
  }
}

TEST(NetPolicy, Describe) {
  auto d = [](const std::string& s) {
    Addr a = addr(s);
    return NetPolicy::describe(a.sa(), a.len);
  };
  EXPECT_EQ(d("127.0.0.1:8080"), "127.0.0.1:8080");
  EXPECT_EQ(d("[::1]:80"), "[::1]:80");
  EXPECT_EQ(d("/tmp/x.sock"), "/tmp/x.sock");
  EXPECT_EQ(d("@abstract"), "@abstract");
  EXPECT_EQ(d("unnamed"), "(unnamed)");
  sockaddr sa{};
  sa.sa_family = AF_UNSPEC;
  EXPECT_EQ(NetPolicy::describe(&sa, sizeof(sa_family_t)), "(unspecified)");
  EXPECT_EQ(NetPolicy::describe(nullptr, 0), "(no address)");
  // Round trip: a described address is an entry that grants it.
  for (auto s : {"127.0.0.1:8080", "[::1]:80", "/tmp/x.sock", "@abstract"}) {
    auto p = listen_policy({d(s)});
    EXPECT_TRUE(listens(p, s)) << s;
  }
}

}  // namespace
}  // namespace kvms::linux

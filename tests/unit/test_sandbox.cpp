// What the jail holds for a set of options (src/server/sandbox.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "server/sandbox.hpp"

namespace kvms::server {
namespace {

jail::JailSpec spec_for(std::vector<std::string> args) {
  args.insert(args.begin(), "kvmserver");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  int status = 0;
  const auto opts = cli::parse_command_line(static_cast<int>(argv.size()), argv.data(), status);
  EXPECT_TRUE(opts) << "status " << status;
  return opts ? jail_spec(*opts, cli::policy_config(*opts)) : jail::JailSpec{};
}

bool binds(const jail::JailSpec& spec, const std::string& path, bool writable) {
  return std::any_of(spec.binds.begin(), spec.binds.end(),
                     [&](const jail::Bind& b) { return b.path == path && b.writable == writable; });
}

TEST(JailSpec, NetworkNamespaceOnlyWithoutNetworkNeeds) {
  EXPECT_TRUE(spec_for({"-t", "2", "-e", "run", "/bin/true"}).new_network);
  EXPECT_FALSE(spec_for({"-t", "2", "-e", "--allow-listen=127.0.0.1:8080", "run", "/bin/true"}).new_network);
  EXPECT_FALSE(spec_for({"--metrics=127.0.0.1:9100", "run", "/bin/true"}).new_network);
  // The front of --isolate=request listens on the host's network, once the template is ready.
  EXPECT_FALSE(spec_for({"--isolate=request", "--listen=127.0.0.1:8080", "run", "/bin/true"}).new_network);
}

TEST(JailSpec, UnixSocketDirectoriesAreBound) {
  const auto spec = spec_for({"--isolate=request", "--listen=unix:/run/kvms/front.sock",
                              "--allow-connect=/run/db/db.sock", "run", "/bin/true"});
  EXPECT_TRUE(binds(spec, "/run/kvms", true));   // kvmserver creates the front's socket there
  EXPECT_TRUE(binds(spec, "/run/db", false));    // the guest connects there
  EXPECT_TRUE(binds(spec, "/dev/kvm", false));
}

}  // namespace
}  // namespace kvms::server

// Command-line and config-file parsing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/options.hpp"

namespace kvms::cli {
namespace {

namespace fs = std::filesystem;
using Args = std::vector<std::string>;

const std::string kCwd = "/home/u/work";

Options parse(Args a) {
  a.insert(a.begin(), "kvmserver");
  return parse_options(a, kCwd);
}

// The UsageError message, or "" if parsing succeeded.
std::string usage_error(Args a) {
  try {
    parse(std::move(a));
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_USAGE_ERROR(args, substring)                  \
  do {                                                       \
    std::string msg_ = usage_error(args);                    \
    EXPECT_NE(msg_, "") << "no error";                       \
    EXPECT_NE(msg_.find(substring), std::string::npos) << msg_; \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << msg_;   \
  } while (0)

TEST(Options, Defaults) {
  Options o = parse({"run", "/bin/true"});
  EXPECT_EQ(o.program, "/bin/true");
  EXPECT_TRUE(o.args.empty());
  EXPECT_FALSE(o.allow_all);
  EXPECT_FALSE(o.allow_read.any());
  EXPECT_FALSE(o.allow_write.any());
  EXPECT_FALSE(o.allow_env.any());
  EXPECT_TRUE(o.volumes.empty());
  EXPECT_TRUE(o.env.empty());
  EXPECT_EQ(o.cwd, kCwd);
  EXPECT_FALSE(o.timeout);
  EXPECT_EQ(o.max_memory_mb, 1024u);
  EXPECT_EQ(o.max_address_space_gb, 64u);
  EXPECT_EQ(o.config_file, "");
  EXPECT_FALSE(o.stats);
  EXPECT_EQ(o.verbose, 0);
  EXPECT_EQ(o.threads, 1u);
  EXPECT_FALSE(o.ephemeral);
  EXPECT_FALSE(o.allow_listen.any());
  EXPECT_FALSE(o.allow_connect.any());
  EXPECT_FALSE(o.max_request_time);
  EXPECT_FALSE(o.max_request_memory_mb);
  EXPECT_FALSE(o.reset_full_above_mb);
  EXPECT_EQ(o.warmup, 0u);
  EXPECT_EQ(o.warmup_path, "/");
  EXPECT_EQ(o.max_boot_time, 20.0);
  EXPECT_EQ(o.metrics, "");
  EXPECT_FALSE(o.jail);  // decided later: on when serving
  EXPECT_FALSE(o.seccomp);  // decided later: on in run mode, off when serving
}

TEST(Options, SandboxSwitches) {
  EXPECT_EQ(parse({"--jail", "run", "p"}).jail, true);  // bare: on, and `run` is not its value
  EXPECT_EQ(parse({"--jail", "run", "p"}).program, "p");
  EXPECT_EQ(parse({"--jail=on", "run", "p"}).jail, true);
  EXPECT_EQ(parse({"--jail=off", "run", "p"}).jail, false);
  EXPECT_EQ(parse({"--jail=false", "--jail=true", "run", "p"}).jail, true);  // the last one counts
  EXPECT_EQ(parse({"--seccomp=off", "run", "p"}).seccomp, false);
  EXPECT_EQ(parse({"--seccomp=off", "--seccomp", "run", "p"}).seccomp, true);
  EXPECT_TRUE(parse({"run", "p"}).seccomp_on());
  EXPECT_FALSE(parse({"-t", "2", "-e", "run", "p"}).seccomp_on());
  EXPECT_TRUE(parse({"-t", "2", "-e", "--seccomp", "run", "p"}).seccomp_on());
  EXPECT_FALSE(parse({"--seccomp=off", "run", "p"}).seccomp_on());
  EXPECT_USAGE_ERROR(Args({"--jail=maybe", "run", "p"}), "--jail: expected on or off, not 'maybe'");
  EXPECT_USAGE_ERROR(Args({"--seccomp=1", "run", "p"}), "--seccomp: expected on or off");
  // After `run`, they are the program's.
  EXPECT_EQ(parse({"run", "p", "--jail=off"}).args, (Args{"--jail=off"}));
  EXPECT_FALSE(parse({"run", "p", "--jail=off"}).jail);
  // Whether the options ask for a server (the jail's default).
  EXPECT_FALSE(parse({"run", "p"}).expects_server());
  EXPECT_TRUE(parse({"-e", "run", "p"}).expects_server());
  EXPECT_TRUE(parse({"-t", "2", "run", "p"}).expects_server());
  EXPECT_TRUE(parse({"-t", "1", "run", "p"}).expects_server());  // -t 1: a persistent server
  EXPECT_TRUE(parse({"-w", "3", "run", "p"}).expects_server());
  EXPECT_TRUE(parse({"--metrics=127.0.0.1:9100", "run", "p"}).expects_server());
  // A grant is not a mode: a program run with it runs as it would natively (issue 12).
  EXPECT_FALSE(parse({"--allow-listen=:80", "run", "p"}).expects_server());
  EXPECT_FALSE(parse({"--allow-all", "run", "p"}).expects_server());
  EXPECT_FALSE(parse({"--allow-connect=db:5432", "run", "p"}).expects_server());
}

TEST(Options, DefaultCwdIsOurs) {
  char buf[4096];
  ASSERT_NE(::getcwd(buf, sizeof buf), nullptr);
  Args a = {"kvmserver", "run", "x"};
  EXPECT_EQ(parse_options(a).cwd, buf);
}

TEST(Options, EveryFlag) {
  Options o = parse({"-A", "--allow-read=/a", "--allow-write=/w", "--allow-env=HOME,PATH", "--volume=/h:/g",
                     "--env=A=B", "--cwd=/tmp", "--timeout=2.5", "--max-memory=512", "--max-address-space=128",
                     "--stats", "-v", "-t", "8", "-e", "--allow-listen=127.0.0.1:8080,/run/s.sock",
                     "--allow-connect=example.com:443", "--max-request-time=0.25", "--max-request-memory=64",
                     "--reset-full-above=32", "-w", "100", "--warmup-path=/health", "--max-boot-time=5",
                     "--metrics=:9100", "run", "prog", "a1"});
  EXPECT_TRUE(o.allow_all);
  EXPECT_EQ(o.allow_read, (Grant{false, {"/a"}}));
  EXPECT_EQ(o.allow_write, (Grant{false, {"/w"}}));
  EXPECT_EQ(o.allow_env, (Grant{false, {"HOME", "PATH"}}));
  ASSERT_EQ(o.volumes.size(), 1u);
  EXPECT_EQ(o.volumes[0], (linux::Volume{"/h", "/g", false}));
  EXPECT_EQ(o.env, (std::vector<std::string>{"A=B"}));
  EXPECT_EQ(o.cwd, "/tmp");
  EXPECT_EQ(o.timeout, 2.5);
  EXPECT_EQ(o.max_memory_mb, 512u);
  EXPECT_EQ(o.max_address_space_gb, 128u);
  EXPECT_TRUE(o.stats);
  EXPECT_EQ(o.verbose, 1);
  EXPECT_EQ(o.threads, 8u);
  EXPECT_TRUE(o.ephemeral);
  EXPECT_EQ(o.allow_listen, (Grant{false, {"127.0.0.1:8080", "/run/s.sock"}}));
  EXPECT_EQ(o.allow_connect, (Grant{false, {"example.com:443"}}));
  EXPECT_EQ(o.max_request_time, 0.25);
  EXPECT_EQ(o.max_request_memory_mb, 64u);
  EXPECT_EQ(o.reset_full_above_mb, 32u);
  EXPECT_EQ(o.warmup, 100u);
  EXPECT_EQ(o.warmup_path, "/health");
  EXPECT_EQ(o.max_boot_time, 5.0);
  EXPECT_EQ(o.metrics, ":9100");
  EXPECT_EQ(o.program, "prog");
  EXPECT_EQ(o.args, (std::vector<std::string>{"a1"}));
}

TEST(Options, LongFormsAndSpellings) {
  Options o = parse({"--allow-all", "--verbose", "--verbose", "--threads=4", "--ephemeral", "--warmup=3",
                     "--timeout", "7", "--cwd", "sub/../dir", "run", "p"});
  EXPECT_TRUE(o.allow_all);
  EXPECT_EQ(o.verbose, 2);
  EXPECT_EQ(o.threads, 4u);
  EXPECT_TRUE(o.ephemeral);
  EXPECT_EQ(o.warmup, 3u);
  EXPECT_EQ(o.timeout, 7.0);
  EXPECT_EQ(o.cwd, kCwd + "/dir");
  // Short clusters and attached values.
  Options s = parse({"-vve", "-t4", "-vw", "2", "run", "p"});
  EXPECT_EQ(s.verbose, 3);
  EXPECT_TRUE(s.ephemeral);
  EXPECT_EQ(s.threads, 4u);
  EXPECT_EQ(s.warmup, 2u);
  // The last of a repeated scalar wins.
  EXPECT_EQ(parse({"-t", "2", "--threads=3", "run", "p"}).threads, 3u);
}

TEST(Options, OptionalValueGrants) {
  Options bare = parse({"--allow-read", "run", "p"});
  EXPECT_TRUE(bare.allow_read.all);
  EXPECT_TRUE(bare.allow_read.items.empty());
  EXPECT_FALSE(bare.allow_write.any());

  Options list = parse({"--allow-read=/a,/b", "run", "p"});
  EXPECT_EQ(list.allow_read, (Grant{false, {"/a", "/b"}}));

  Options rep = parse({"--allow-read=/a", "--allow-read=/b,/c", "--allow-read=/a", "run", "p"});
  EXPECT_EQ(rep.allow_read, (Grant{false, {"/a", "/b", "/c"}}));

  Options mixed = parse({"--allow-write=/w", "--allow-write", "--allow-env", "run", "p"});
  EXPECT_TRUE(mixed.allow_write.all);
  EXPECT_EQ(mixed.allow_write.items, (std::vector<std::string>{"/w"}));
  EXPECT_TRUE(mixed.allow_env.all);

  // Relative paths are made absolute against our cwd, and normalized.
  Options rel = parse({"--allow-read=lib,../x/./y/", "run", "p"});
  EXPECT_EQ(rel.allow_read.items, (std::vector<std::string>{kCwd + "/lib", "/home/u/x/y"}));

  // A bare grant does not swallow the next argument: the value needs '='.
  EXPECT_USAGE_ERROR(Args({"--allow-read", "/x", "run", "p"}), "/x");
  EXPECT_USAGE_ERROR(Args({"--allow-read=", "run", "p"}), "--allow-read");
  EXPECT_USAGE_ERROR(Args({"--allow-write=/a,,/b", "run", "p"}), "empty item");
  EXPECT_USAGE_ERROR(Args({"--allow-env=A,", "run", "p"}), "empty item");
  EXPECT_USAGE_ERROR(Args({"--allow-env=A=B", "run", "p"}), "A=B");
}

TEST(Options, NetworkGrants) {
  Options net = parse({"--allow-net", "run", "p"});
  EXPECT_TRUE(net.allow_listen.all);
  EXPECT_TRUE(net.allow_connect.all);
  EXPECT_TRUE(net.net_all());
  Options l = parse({"--allow-listen=[::1]:80", "--allow-listen=0.0.0.0:8000", "--allow-connect=/tmp/x.sock", "run", "p"});
  EXPECT_EQ(l.allow_listen.items, (std::vector<std::string>{"[::1]:80", "0.0.0.0:8000"}));
  EXPECT_EQ(l.allow_connect.items, (std::vector<std::string>{"/tmp/x.sock"}));
  EXPECT_FALSE(l.net_all());
  EXPECT_USAGE_ERROR(Args({"--allow-listen", "run", "p"}), "ADDR:PORT or /PATH, not 'run'");
  EXPECT_USAGE_ERROR(Args({"--allow-listen"}), "allow-listen");
  EXPECT_USAGE_ERROR(Args({"--allow-listen=8080", "run", "p"}), "ADDR:PORT");
  EXPECT_USAGE_ERROR(Args({"--allow-connect=host:99999", "run", "p"}), "port");
  EXPECT_USAGE_ERROR(Args({"--allow-connect=::1:80", "run", "p"}), "ADDR:PORT");
  EXPECT_USAGE_ERROR(Args({"--metrics=/tmp/sock", "run", "p"}), "ADDR:PORT");
  EXPECT_USAGE_ERROR(Args({"--metrics=localhost:", "run", "p"}), "port");
}

TEST(Options, Volumes) {
  Options o = parse({"--volume=/srv/data:/data", "--volume", "rel/dir:/out/:rw", "--volume=/a:/b:ro", "run", "p"});
  ASSERT_EQ(o.volumes.size(), 3u);
  EXPECT_EQ(o.volumes[0], (linux::Volume{"/srv/data", "/data", false}));
  EXPECT_EQ(o.volumes[1], (linux::Volume{kCwd + "/rel/dir", "/out", true}));
  EXPECT_EQ(o.volumes[2], (linux::Volume{"/a", "/b", false}));
  EXPECT_USAGE_ERROR(Args({"--volume=/a", "run", "p"}), "HOST:GUEST");
  EXPECT_USAGE_ERROR(Args({"--volume=/a:rel", "run", "p"}), "absolute");
  EXPECT_USAGE_ERROR(Args({"--volume=/a:/b:rx", "run", "p"}), ":rw");
  EXPECT_USAGE_ERROR(Args({"--volume=/a:/b:rw:x", "run", "p"}), "HOST:GUEST");
  EXPECT_USAGE_ERROR(Args({"--volume=:/b", "run", "p"}), "HOST:GUEST");
}

TEST(Options, Env) {
  Options o = parse({"--env=A=B", "--env", "C=", "--env=D=x=y,z", "run", "p"});
  EXPECT_EQ(o.env, (std::vector<std::string>{"A=B", "C=", "D=x=y,z"}));
  EXPECT_USAGE_ERROR(Args({"--env=A", "run", "p"}), "NAME=VALUE");
  EXPECT_USAGE_ERROR(Args({"--env==x", "run", "p"}), "NAME=VALUE");
}

TEST(Options, BadValues) {
  EXPECT_USAGE_ERROR(Args({"--timeout=-1", "run", "p"}), "--timeout");
  EXPECT_USAGE_ERROR(Args({"--timeout=0", "run", "p"}), "positive");
  EXPECT_USAGE_ERROR(Args({"--timeout=abc", "run", "p"}), "not a number");
  EXPECT_USAGE_ERROR(Args({"--timeout=nan", "run", "p"}), "--timeout");
  EXPECT_USAGE_ERROR(Args({"--timeout=inf", "run", "p"}), "--timeout");
  EXPECT_USAGE_ERROR(Args({"--timeout=1s", "run", "p"}), "not a number");
  EXPECT_USAGE_ERROR(Args({"--threads=-1", "run", "p"}), "--threads");
  EXPECT_USAGE_ERROR(Args({"-t", "1025", "run", "p"}), "out of range");
  EXPECT_USAGE_ERROR(Args({"-t", "-3", "run", "p"}), "--threads");
  EXPECT_USAGE_ERROR(Args({"-t", "0x10", "run", "p"}), "not an integer");
  EXPECT_USAGE_ERROR(Args({"-t", "run", "p"}), "not an integer");  // `run` is -t's value here
  EXPECT_USAGE_ERROR(Args({"--max-memory=0", "run", "p"}), "--max-memory");
  EXPECT_USAGE_ERROR(Args({"--max-address-space=100000", "run", "p"}), "out of range");
  EXPECT_USAGE_ERROR(Args({"--max-request-time=-0.5", "run", "p"}), "--max-request-time");
  EXPECT_USAGE_ERROR(Args({"--max-boot-time=0", "run", "p"}), "--max-boot-time");
  EXPECT_USAGE_ERROR(Args({"--warmup=-1", "run", "p"}), "--warmup");
  EXPECT_USAGE_ERROR(Args({"--warmup-path=health", "run", "p"}), "/");
  EXPECT_USAGE_ERROR(Args({"--bogus", "run", "p"}), "--bogus");
  EXPECT_USAGE_ERROR(Args({"-x", "run", "p"}), "unknown option '-x'");
  EXPECT_USAGE_ERROR(Args({"--bogus=1", "-v", "run", "p"}), "--bogus");
  EXPECT_USAGE_ERROR(Args({"--stats=false", "run", "p"}), "stats");
  EXPECT_USAGE_ERROR(Args({"stray", "run", "p"}), "unexpected argument 'stray'");
  EXPECT_USAGE_ERROR(Args({"--cwd", "run", "p"}), "unexpected argument 'p'");  // --cwd took `run`
  EXPECT_USAGE_ERROR(Args({"--cwd", "run"}), "nothing to run");
  EXPECT_EQ(parse({"--reset-full-above=0", "run", "p"}).reset_full_above_mb, 0u);
}

TEST(Options, ProgramAndArgs) {
  Options o = parse({"-A", "run", "deno", "run", "--allow-net", "x.js"});
  EXPECT_EQ(o.program, "deno");
  EXPECT_EQ(o.args, (std::vector<std::string>{"run", "--allow-net", "x.js"}));
  EXPECT_FALSE(o.allow_listen.any());

  Options dd = parse({"run", "--", "prog", "--", "-v", "--help"});
  EXPECT_EQ(dd.program, "prog");
  EXPECT_EQ(dd.args, (std::vector<std::string>{"--", "-v", "--help"}));
  EXPECT_EQ(dd.verbose, 0);

  Options flags_after = parse({"run", "prog", "-t", "4", "--version"});
  EXPECT_EQ(flags_after.threads, 1u);
  EXPECT_EQ(flags_after.args, (std::vector<std::string>{"-t", "4", "--version"}));

  // An option's value may be "run".
  Options val = parse({"--cwd", "run", "--env", "run=1", "run", "run", "x"});
  EXPECT_EQ(val.cwd, kCwd + "/run");
  EXPECT_EQ(val.env, (std::vector<std::string>{"run=1"}));
  EXPECT_EQ(val.program, "run");
  EXPECT_EQ(val.args, (std::vector<std::string>{"x"}));

  EXPECT_USAGE_ERROR(Args({}), "nothing to run");
  EXPECT_USAGE_ERROR(Args({"-v"}), "nothing to run");
  EXPECT_USAGE_ERROR(Args({"run"}), "PROGRAM");
  EXPECT_USAGE_ERROR(Args({"run", "--"}), "PROGRAM");
  EXPECT_USAGE_ERROR(Args({"-A", "run", ""}), "PROGRAM");
}

TEST(Options, HelpAndVersion) {
  try {
    parse({"--help"});
    FAIL() << "no InfoExit";
  } catch (const InfoExit& e) {
    EXPECT_NE(e.text().find("Usage: kvmserver [OPTIONS] run [--] PROGRAM [ARGS...]"), std::string::npos);
    EXPECT_NE(e.text().find("--allow-read"), std::string::npos);
    EXPECT_NE(e.text().find("--max-boot-time"), std::string::npos);
  }
  try {
    parse({"-A", "--version"});
    FAIL() << "no InfoExit";
  } catch (const InfoExit& e) {
    EXPECT_EQ(e.text(), "kvmserver 0.1.0\n");
  }
  EXPECT_THROW(parse({"-h", "run", "p"}), InfoExit);
  // After `run`, --help is the program's.
  EXPECT_EQ(parse({"run", "p", "--help"}).args, (std::vector<std::string>{"--help"}));
}

TEST(Options, ParseCommandLineExitStatus) {
  auto call = [](std::vector<std::string> a, int& status) {
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    return parse_command_line(static_cast<int>(a.size()), argv.data(), status);
  };
  int status = -1;
  testing::internal::CaptureStdout();
  EXPECT_FALSE(call({"kvmserver", "--version"}, status));
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "kvmserver 0.1.0\n");
  EXPECT_EQ(status, 0);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(call({"kvmserver", "--threads=-1", "run", "x"}, status));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.rfind("kvmserver: --threads", 0), 0u) << err;
  EXPECT_EQ(status, 2);
  status = -1;
  auto o = call({"kvmserver", "run", "x"}, status);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->program, "x");
  EXPECT_EQ(status, -1);
}

TEST(Options, PolicyConfig) {
  Options o = parse({"--allow-read=/r", "--allow-write", "--volume=/h:/g:rw", "run", "p"});
  auto c = policy_config(o);
  EXPECT_FALSE(c.allow_all);
  EXPECT_FALSE(c.read_all);
  EXPECT_TRUE(c.write_all);
  EXPECT_EQ(c.read, (std::vector<std::string>{"/r"}));
  EXPECT_TRUE(c.write.empty());
  ASSERT_EQ(c.volumes.size(), 1u);
  EXPECT_TRUE(c.volumes[0].writable);
  EXPECT_TRUE(policy_config(parse({"-A", "run", "p"})).allow_all);
}

// Grants of /proc, /sys and /dev (made up by kvmserver) are usage errors naming the flag and why;
// /dev/tty is the one device a grant names, and the always-present ones need none (accepted).
TEST(Options, GrantsOfTheMadeUpTreesAreRefused) {
  EXPECT_USAGE_ERROR(Args({"--allow-read=/proc", "run", "p"}), "--allow-read: /proc: the guest's /proc and /sys are made up");
  EXPECT_USAGE_ERROR(Args({"--allow-read=/etc,/proc/self/environ", "run", "p"}), "--allow-read: /proc/self/environ:");
  EXPECT_USAGE_ERROR(Args({"--allow-write=/sys", "run", "p"}), "--allow-write: /sys:");
  EXPECT_USAGE_ERROR(Args({"--allow-read=/dev", "run", "p"}), "/dev holds only the devices kvmserver emulates");
  EXPECT_USAGE_ERROR(Args({"--allow-write=/dev/kvm", "run", "p"}), "--allow-write: /dev/kvm:");
  EXPECT_USAGE_ERROR(Args({"--allow-read=/dev/shm/x", "run", "p"}), "--allow-read: /dev/shm/x:");
  EXPECT_USAGE_ERROR(Args({"--allow-read=/etc/../proc", "run", "p"}), "--allow-read: /proc:");
  EXPECT_USAGE_ERROR(Args({"--volume=/proc:/hostproc", "run", "p"}), "--volume: /proc:");
  EXPECT_USAGE_ERROR(Args({"--volume=/srv:/dev/shm:rw", "run", "p"}), "--volume: /dev/shm:");
  EXPECT_USAGE_ERROR(Args({"--volume=/srv:/dev/tty", "run", "p"}), "a volume must be a directory outside");
  Options tty = parse({"--allow-read=/dev/tty", "--allow-write=/dev/tty,/dev/null", "-A", "run", "p"});
  EXPECT_EQ(tty.allow_read.items, (std::vector<std::string>{"/dev/tty"}));
  EXPECT_EQ(tty.allow_write.items, (std::vector<std::string>{"/dev/tty", "/dev/null"}));
  // The help says what the bare grants leave out.
  try {
    parse({"--help"});
    ADD_FAILURE() << "no help";
  } catch (const InfoExit& e) {
    EXPECT_NE(e.text().find("everything but /proc, /sys, /dev"), std::string::npos) << e.text();
    EXPECT_NE(e.text().find("--allow-read=/dev/tty"), std::string::npos) << e.text();
  }
}

// ------------------------------------------------------------------------------------------------
// Config files.

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvms-options-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigTest, AllKeys) {
  auto path = write("all.toml", R"(
allow-all = true
allow-read = ["/lib", "/etc"]
allow-write = "/w1,/w2"
allow-env = true
volume = ["/h:/g:rw", "data:/data"]
env = ["A=B"]
cwd = "/srv"
timeout = 2.5
max-memory = 256
max-address-space = 32
stats = true
verbose = 2
threads = 4
ephemeral = true
allow-listen = [":8080"]
allow-connect = "db:5432"
allow-net = false
max-request-time = 1
max-request-memory = 100
reset-full-above = 50
warmup = 10
warmup-path = "/ping"
max-boot-time = 3.5
metrics = "127.0.0.1:9100"
jail = true
seccomp = "off"
)");
  Options o = parse({"--config", path, "run", "p"});
  EXPECT_EQ(o.config_file, path);
  EXPECT_TRUE(o.allow_all);
  EXPECT_EQ(o.allow_read, (Grant{false, {"/lib", "/etc"}}));
  EXPECT_EQ(o.allow_write, (Grant{false, {"/w1", "/w2"}}));
  EXPECT_TRUE(o.allow_env.all);
  ASSERT_EQ(o.volumes.size(), 2u);
  EXPECT_EQ(o.volumes[0], (linux::Volume{"/h", "/g", true}));
  EXPECT_EQ(o.volumes[1], (linux::Volume{dir_ + "/data", "/data", false}));  // relative to the file
  EXPECT_EQ(o.env, (std::vector<std::string>{"A=B"}));
  EXPECT_EQ(o.cwd, "/srv");
  EXPECT_EQ(o.timeout, 2.5);
  EXPECT_EQ(o.max_memory_mb, 256u);
  EXPECT_EQ(o.max_address_space_gb, 32u);
  EXPECT_TRUE(o.stats);
  EXPECT_EQ(o.verbose, 2);
  EXPECT_EQ(o.threads, 4u);
  EXPECT_TRUE(o.ephemeral);
  EXPECT_EQ(o.allow_listen, (Grant{false, {":8080"}}));
  EXPECT_EQ(o.allow_connect, (Grant{false, {"db:5432"}}));
  EXPECT_EQ(o.max_request_time, 1.0);
  EXPECT_EQ(o.max_request_memory_mb, 100u);
  EXPECT_EQ(o.reset_full_above_mb, 50u);
  EXPECT_EQ(o.warmup, 10u);
  EXPECT_EQ(o.warmup_path, "/ping");
  EXPECT_EQ(o.max_boot_time, 3.5);
  EXPECT_EQ(o.metrics, "127.0.0.1:9100");
  EXPECT_EQ(o.jail, true);
  EXPECT_EQ(o.seccomp, false);
}

TEST_F(ConfigTest, CommandLineOverridesAndExtends) {
  auto path = write("c.toml", R"(
threads = 4
timeout = 10
allow-read = ["/lib"]
env = ["A=1"]
volume = ["/h:/g"]
cwd = "rel"
verbose = true
)");
  Options o = parse({"--allow-read=/etc", "-t", "2", "--env=B=2", "--volume=/h2:/g2", "--config=" + path, "run", "p"});
  EXPECT_EQ(o.threads, 2u);       // overridden
  EXPECT_EQ(o.timeout, 10.0);     // from the file
  EXPECT_EQ(o.allow_read.items, (std::vector<std::string>{"/lib", "/etc"}));  // extended
  EXPECT_EQ(o.env, (std::vector<std::string>{"A=1", "B=2"}));
  ASSERT_EQ(o.volumes.size(), 2u);
  EXPECT_EQ(o.volumes[1].guest, "/g2");
  EXPECT_EQ(o.cwd, dir_ + "/rel");  // relative to the file's directory
  EXPECT_EQ(o.verbose, 1);
  // A bare flag on the command line widens a file's list.
  Options all = parse({"--config", path, "--allow-read", "run", "p"});
  EXPECT_TRUE(all.allow_read.all);
  EXPECT_EQ(all.allow_read.items, (std::vector<std::string>{"/lib"}));
  // The config path is relative to our cwd.
  Options rel = parse_options(Args{"kvmserver", "--config", "c.toml", "run", "p"}, dir_);
  EXPECT_EQ(rel.threads, 4u);
}

TEST_F(ConfigTest, UnknownKey) {
  auto path = write("u.toml", "threads = 2\nallow_read = [\"/x\"]\n");
  EXPECT_USAGE_ERROR(Args({"--config", path, "run", "p"}), "unknown key 'allow_read'");
  EXPECT_USAGE_ERROR(Args({"--config", path, "run", "p"}), path);
  EXPECT_USAGE_ERROR(Args({"--config", write("c.toml", "config = \"x.toml\"\n"), "run", "p"}), "unknown key 'config'");
  EXPECT_USAGE_ERROR(Args({"--config", write("t.toml", "[server]\nthreads = 2\n"), "run", "p"}), "server");
}

TEST_F(ConfigTest, BadToml) {
  auto path = write("bad.toml", "threads = 2\ntimeout = = 3\n");
  EXPECT_USAGE_ERROR(Args({"--config", path, "run", "p"}), path + ":2:");
  auto path2 = write("bad2.toml", "allow-read = [\"/a\"\n\n");
  EXPECT_USAGE_ERROR(Args({"--config", path2, "run", "p"}), path2 + ":");
  EXPECT_USAGE_ERROR(Args({"--config", dir_ + "/missing.toml", "run", "p"}), "missing.toml");
  auto proc = write("proc.toml", "threads = 2\nallow-read = [\"/etc\", \"/proc\"]\n");
  EXPECT_USAGE_ERROR(Args({"--config", proc, "run", "p"}), proc + ":2: allow-read: /proc: the guest's /proc");
}

TEST_F(ConfigTest, BadTypesAndValues) {
  EXPECT_USAGE_ERROR(Args({"--config", write("a.toml", "\nthreads = \"4\"\n"), "run", "p"}), ":2: threads: expected an integer");
  EXPECT_USAGE_ERROR(Args({"--config", write("b.toml", "threads = 2000\n"), "run", "p"}), ":1: threads: 2000 is out of range");
  EXPECT_USAGE_ERROR(Args({"--config", write("c.toml", "timeout = -2.5\n"), "run", "p"}), "timeout");
  EXPECT_USAGE_ERROR(Args({"--config", write("d.toml", "ephemeral = 1\n"), "run", "p"}), "true or false");
  EXPECT_USAGE_ERROR(Args({"--config", write("e.toml", "allow-read = [1, 2]\n"), "run", "p"}), "array of strings");
  EXPECT_USAGE_ERROR(Args({"--config", write("f.toml", "allow-listen = true\n"), "run", "p"}), "allow-listen");
  EXPECT_USAGE_ERROR(Args({"--config", write("g.toml", "volume = [\"/a\"]\n"), "run", "p"}), "HOST:GUEST");
  EXPECT_USAGE_ERROR(Args({"--config", write("h.toml", "allow-read = \"/a,,/b\"\n"), "run", "p"}), "empty item");
  EXPECT_USAGE_ERROR(Args({"--config", write("i.toml", "cwd = 5\n"), "run", "p"}), "expected a string");
  EXPECT_USAGE_ERROR(Args({"--config", write("k.toml", "jail = 1\n"), "run", "p"}), ":1: jail: expected true, false, \"on\" or \"off\"");
  EXPECT_USAGE_ERROR(Args({"--config", write("l.toml", "seccomp = \"no\"\n"), "run", "p"}), ":1: seccomp: expected on or off, not 'no'");
  EXPECT_EQ(parse({"--config", write("m.toml", "jail = \"off\"\n"), "--jail", "run", "p"}).jail, true);  // the command line wins
  // Integers are fine where seconds are expected.
  EXPECT_EQ(parse({"--config", write("j.toml", "timeout = 3\n"), "run", "p"}).timeout, 3.0);
}

TEST(Options, SnapshotCommands) {
  Options o = parse({"snapshot", "--output", "x.snap", "-w", "3", "run", "--", "/srv/app", "8080"});
  EXPECT_EQ(o.command, Command::Snapshot);
  EXPECT_EQ(o.snapshot_output, kCwd + "/x.snap");
  EXPECT_EQ(o.program, "/srv/app");
  EXPECT_TRUE(o.expects_server());
  o = parse({"serve", "a.snap", "-t", "2", "-e"});
  EXPECT_EQ(o.command, Command::Serve);
  EXPECT_EQ(o.snapshot_file, kCwd + "/a.snap");
  EXPECT_EQ(o.threads, 2u);
  EXPECT_TRUE(o.ephemeral);
  EXPECT_FALSE(o.grants_given());
  o = parse({"serve", "-t", "2", "--verify", "/abs/a.snap", "--listen=127.0.0.1:9000"});  // FILE among the options
  EXPECT_EQ(o.snapshot_file, "/abs/a.snap");
  EXPECT_TRUE(o.verify);
  EXPECT_EQ(o.listen.size(), 1u);
  EXPECT_TRUE(parse({"serve", "a.snap", "--allow-listen=127.0.0.1:1"}).grants_given());
  o = parse({"inspect", "--verify", "b.snap"});
  EXPECT_EQ(o.command, Command::Inspect);
  EXPECT_TRUE(o.verify);
  o = parse({"--snapshot-on-ready", "c.snap", "run", "/bin/true"});
  EXPECT_EQ(o.command, Command::Run);
  EXPECT_EQ(o.snapshot_on_ready, kCwd + "/c.snap");
  EXPECT_TRUE(o.expects_server());
  EXPECT_USAGE_ERROR(Args({"serve"}), "serve needs a snapshot FILE");
  EXPECT_USAGE_ERROR(Args({"inspect"}), "inspect needs a snapshot FILE");
  EXPECT_USAGE_ERROR(Args({"serve", "a.snap", "run", "/bin/true"}), "takes no program");
  EXPECT_USAGE_ERROR(Args({"serve", "a.snap", "--env=A=B"}), "environment is in the snapshot");
  EXPECT_USAGE_ERROR(Args({"serve", "a.snap", "-w", "2"}), "--warmup");
  EXPECT_USAGE_ERROR(Args({"inspect", "a.snap", "-t", "2"}), "inspect takes only --verify");
  EXPECT_USAGE_ERROR(Args({"snapshot", "run", "/bin/true"}), "snapshot needs --output FILE");
  EXPECT_USAGE_ERROR(Args({"--output", "x", "run", "/bin/true"}), "--output is for `kvmserver snapshot`");
  EXPECT_USAGE_ERROR(Args({"--verify", "run", "/bin/true"}), "--verify");
  EXPECT_USAGE_ERROR(Args({"--listen=127.0.0.1:1", "run", "/bin/true"}), "--isolate=request");
}

}  // namespace
}  // namespace kvms::cli

namespace kvms::cli {
namespace {

// kvmserver.toml in the working directory is the config file when --config is not given.
TEST_F(ConfigTest, KvmserverTomlInTheWorkingDirectory) {
  write("kvmserver.toml", "threads = 3\nallow-read = [\"/lib\"]\n");
  Options o = parse_options(Args{"kvmserver", "run", "p"}, dir_);
  EXPECT_EQ(o.config_file, dir_ + "/kvmserver.toml");
  EXPECT_EQ(o.threads, 3u);
  EXPECT_EQ(o.allow_read.items, (std::vector<std::string>{"/lib"}));
  // The command line still wins; --config names another file instead.
  EXPECT_EQ(parse_options(Args{"kvmserver", "-t", "5", "run", "p"}, dir_).threads, 5u);
  auto other = write("other.toml", "threads = 7\n");
  Options given = parse_options(Args{"kvmserver", "--config", other, "run", "p"}, dir_);
  EXPECT_EQ(given.threads, 7u);
  EXPECT_TRUE(given.allow_read.items.empty());
  // Elsewhere, no config file.
  EXPECT_EQ(parse_options(Args{"kvmserver", "run", "p"}, "/").config_file, "");
  // A broken kvmserver.toml is reported like a --config file.
  write("kvmserver.toml", "threads = \"many\"\n");
  try {
    parse_options(Args{"kvmserver", "run", "p"}, dir_);
    ADD_FAILURE() << "a bad kvmserver.toml was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("kvmserver.toml:1: threads: expected an integer"), std::string::npos) << e.what();
  }
}

// --print-config prints what is in effect as TOML that reads back to the same options.
TEST_F(ConfigTest, PrintConfigReadsBack) {
  auto path = write("c.toml", "threads = 2\nallow-read = [\"/usr\"]\ntimeout = 2.5\nseccomp = \"off\"\n");
  std::string text;
  try {
    parse_options(Args{"kvmserver", "--config", path, "--print-config", "-t", "4", "--allow-read=/lib", "-e",
                       "--env=A=b c", "run", "--", "prog", "x y"},
                  dir_);
    ADD_FAILURE() << "--print-config did not stop";
  } catch (const InfoExit& e) {
    text = e.text();
  }
  EXPECT_NE(text.find("threads = 4"), std::string::npos) << text;
  EXPECT_EQ(text.find("threads = 2"), std::string::npos) << text;
  EXPECT_NE(text.find("# run: prog \"x y\""), std::string::npos) << text;
  EXPECT_NE(text.find("# config file: " + path), std::string::npos) << text;
  Options again = parse_options(Args{"kvmserver", "--config", write("printed.toml", text), "run", "prog"}, dir_);
  EXPECT_EQ(again.threads, 4u);
  EXPECT_TRUE(again.ephemeral);
  EXPECT_EQ(again.timeout, 2.5);
  EXPECT_EQ(again.seccomp, std::optional<bool>(false));
  EXPECT_EQ(again.allow_read.items, (std::vector<std::string>{"/usr", "/lib"}));
  ASSERT_EQ(again.env.size(), 1u);
  EXPECT_EQ(again.env[0], "A=b c");
}

TEST(Options, ThreadsZeroIsOnePerCpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  Options o = parse_options(Args{"kvmserver", "-t", "0", "run", "p"}, "/");
  EXPECT_EQ(o.threads, unsigned(CPU_COUNT(&set)));
  EXPECT_TRUE(o.threads_given);
}

}  // namespace
}  // namespace kvms::cli

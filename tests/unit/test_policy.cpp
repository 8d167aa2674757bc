// PathPolicy on a temporary directory tree.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "linux/policy.hpp"

namespace kvms::linux {
namespace {

namespace fs = std::filesystem;

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvms-policy-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    char* real = ::realpath(tmpl, nullptr);
    root_ = real;
    ::free(real);
    // root/
    //   g/            (granted in most tests)
    //     file
    //     sub/deep/   sub/file2
    //     w/          (write-granted in some tests)
    //   h/file        (a second grant)
    //   other/secret  (never granted)
    //   real/file     (target of the granted symlink glink)
    //   glink -> real
    //   volhost/      (a volume's host dir) file, sub/file
    for (auto d : {"g/sub/deep", "g/w", "h", "other", "real", "volhost/sub", "volhost2"})
      fs::create_directories(p(d));
    for (auto f : {"g/file", "g/sub/file2", "g/w/existing", "h/file", "other/secret", "real/file",
                   "volhost/file", "volhost/sub/file", "volhost2/file", "file_at_root"})
      touch(p(f));
    fs::create_symlink(p("real"), p("glink"));
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string p(std::string_view rel) const { return root_ + "/" + std::string(rel); }
  static void touch(const std::string& path) { std::ofstream(path) << "x"; }
  void link(std::string_view target, std::string_view at) { fs::create_symlink(std::string(target), p(at)); }

  static int err(const std::variant<PathPolicy::Resolved, int>& r) {
    return std::holds_alternative<int>(r) ? std::get<int>(r) : 0;
  }
  static std::string host(const std::variant<PathPolicy::Resolved, int>& r) {
    if (auto* ok = std::get_if<PathPolicy::Resolved>(&r)) return ok->host_path;
    return "error " + std::to_string(std::get<int>(r));
  }

  PathPolicy read_g() {
    PolicyConfig c;
    c.read.push_back(p("g"));
    return PathPolicy(c);
  }

  std::string root_;
};

TEST_F(PolicyTest, ReadGrantCoversSubtree) {
  auto pol = read_g();
  auto r = pol.resolve(p("g/file"), Access::Read, true);
  ASSERT_EQ(err(r), 0);
  auto& ok = std::get<PathPolicy::Resolved>(r);
  EXPECT_EQ(ok.host_path, p("g/file"));
  EXPECT_EQ(ok.guest_path, p("g/file"));
  EXPECT_FALSE(ok.writable);
  EXPECT_TRUE(ok.exists);
  EXPECT_EQ(host(pol.resolve(p("g"), Access::Read)), p("g"));
  EXPECT_EQ(host(pol.resolve(p("g/sub/deep/"), Access::Read)), p("g/sub/deep"));
  EXPECT_EQ(host(pol.resolve(p("g//sub/./file2"), Access::Read)), p("g/sub/file2"));
}

TEST_F(PolicyTest, OutsideGrantIsEaccesEvenIfMissing) {
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve(p("other/secret"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("other/missing"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("missing/x/y"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("file_at_root"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve("/nonexistent-kvms-dir/x", Access::Read)), -EACCES);
  // Ancestors of a grant can be walked through but not opened.
  EXPECT_EQ(err(pol.resolve(root_, Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve("/", Access::Read)), -EACCES);
  // Inside the grant, real resolution errors are reported.
  EXPECT_EQ(err(pol.resolve(p("g/missing"), Access::Read)), 0);  // may be created: exists=false
  EXPECT_FALSE(std::get<PathPolicy::Resolved>(pol.resolve(p("g/missing"), Access::Read)).exists);
  EXPECT_EQ(err(pol.resolve(p("g/missing/x"), Access::Read)), -ENOENT);
  EXPECT_EQ(err(pol.resolve(p("g/file/x"), Access::Read)), -ENOTDIR);
  EXPECT_EQ(err(pol.resolve(p("g/file/"), Access::Read)), -ENOTDIR);
  EXPECT_EQ(err(pol.resolve(p("g/file/."), Access::Read)), -ENOTDIR);
}

TEST_F(PolicyTest, BadArguments) {
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve("", Access::Read)), -ENOENT);
  EXPECT_EQ(err(pol.resolve("g/file", Access::Read)), -EINVAL);
  std::string nul = p("g/file") + std::string("\0/../../other/secret", 20);
  EXPECT_EQ(err(pol.resolve(nul, Access::Read)), -EINVAL);
  EXPECT_EQ(err(pol.resolve("/" + std::string(5000, 'a'), Access::Read)), -ENAMETOOLONG);
  EXPECT_EQ(err(pol.resolve(p("g/") + std::string(300, 'a'), Access::Read)), -ENAMETOOLONG);
}

TEST_F(PolicyTest, NestedGrants) {
  PolicyConfig c;
  c.read.push_back(p("g"));
  c.write.push_back(p("g/w"));
  PathPolicy pol(c);
  EXPECT_EQ(err(pol.resolve(p("g/w/existing"), Access::Write)), 0);
  EXPECT_TRUE(std::get<PathPolicy::Resolved>(pol.resolve(p("g/w/existing"), Access::Read)).writable);
  EXPECT_EQ(err(pol.resolve(p("g/file"), Access::Write)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/file"), Access::Read)), 0);

  // A read grant inside a write grant does not take the write grant away.
  PolicyConfig c2;
  c2.write.push_back(p("g"));
  c2.read.push_back(p("g/sub"));
  PathPolicy pol2(c2);
  EXPECT_EQ(err(pol2.resolve(p("g/sub/file2"), Access::Write)), 0);
}

TEST_F(PolicyTest, DotDotEscapes) {
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve(p("g/../other/secret"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/sub/../../other/secret"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/../../../../../etc/passwd"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/../missing"), Access::Read)), -EACCES);
  EXPECT_EQ(host(pol.resolve(p("g/sub/../file"), Access::Read)), p("g/file"));
  EXPECT_EQ(host(pol.resolve(p("g/../g/file"), Access::Read)), p("g/file"));
  EXPECT_EQ(host(pol.resolve("/../../" + p("g/file"), Access::Read)), p("g/file"));
  // Going through an invisible directory is denied even if it would come back in: no probing.
  EXPECT_EQ(err(pol.resolve(p("other/../g/file"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("missing/../g/file"), Access::Read)), -EACCES);
}

TEST_F(PolicyTest, SymlinksEscapingAreDenied) {
  link(p("other/secret"), "g/abs");
  link("../other/secret", "g/rel");
  link("../../../../../../../../etc/passwd", "g/deeprel");
  link(p("other"), "g/absdir");
  link("/etc/shadow", "g/shadow");
  link("/nonexistent-kvms/../" + p("g/file"), "g/probe");
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve(p("g/abs"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/rel"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/deeprel"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/absdir/secret"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/absdir/../g/file"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/shadow"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/probe"), Access::Read)), -EACCES);
  // Not following the last component: the link itself is inside the grant.
  auto r = pol.resolve(p("g/abs"), Access::Read, false);
  EXPECT_EQ(host(r), p("g/abs"));
  // ...but as a directory (trailing slash) it is followed.
  EXPECT_EQ(err(pol.resolve(p("g/absdir/"), Access::Read, false)), -EACCES);
}

TEST_F(PolicyTest, DotDotAppliesAfterSymlinkExpansion) {
  link(p("g/sub/deep"), "g/todeep");
  link("sub/deep", "g/reltodeep");
  auto pol = read_g();
  // todeep/.. is g/sub (the kernel's answer), not g (the lexical one).
  EXPECT_EQ(host(pol.resolve(p("g/todeep/../file2"), Access::Read)), p("g/sub/file2"));
  EXPECT_EQ(host(pol.resolve(p("g/reltodeep/../file2"), Access::Read)), p("g/sub/file2"));
  EXPECT_EQ(err(pol.resolve(p("g/todeep/../file"), Access::Read)), 0);  // g/sub/file: creatable
  EXPECT_FALSE(std::get<PathPolicy::Resolved>(pol.resolve(p("g/todeep/../file"), Access::Read)).exists);
}

TEST_F(PolicyTest, SymlinkLoops) {
  link("loop2", "g/loop1");
  link("loop1", "g/loop2");
  link("self", "g/self");
  link(".", "g/dot");
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve(p("g/loop1"), Access::Read)), -ELOOP);
  EXPECT_EQ(err(pol.resolve(p("g/self/x"), Access::Read)), -ELOOP);
  EXPECT_EQ(err(pol.resolve(p("g/loop1"), Access::Read, false)), 0);  // lstat of the link is fine
  // 40 expansions are fine, 41 are not.
  std::string many = p("g");
  for (int i = 0; i < 40; ++i) many += "/dot";
  EXPECT_EQ(host(pol.resolve(many + "/file", Access::Read)), p("g/file"));
  EXPECT_EQ(err(pol.resolve(many + "/dot/file", Access::Read)), -ELOOP);
  // Loops outside the grant are denied, not reported.
  fs::create_symlink("oloop", p("other/oloop"));
  link(p("other/oloop"), "g/tooloop");
  EXPECT_EQ(err(pol.resolve(p("g/tooloop"), Access::Read)), -EACCES);
}

TEST_F(PolicyTest, SymlinkWithinGrantsIsFine) {
  link(p("h/file"), "g/toh");
  link("../h", "g/relh");
  link("file", "g/samedir");
  PolicyConfig c;
  c.read = {p("g"), p("h")};
  PathPolicy pol(c);
  EXPECT_EQ(host(pol.resolve(p("g/toh"), Access::Read)), p("h/file"));
  EXPECT_EQ(host(pol.resolve(p("g/relh/file"), Access::Read)), p("h/file"));
  EXPECT_EQ(host(pol.resolve(p("g/samedir"), Access::Read)), p("g/file"));
}

TEST_F(PolicyTest, GrantThatIsASymlink) {
  PolicyConfig c;
  c.read.push_back(p("glink"));
  PathPolicy pol(c);
  EXPECT_EQ(host(pol.resolve(p("glink/file"), Access::Read)), p("real/file"));
  EXPECT_EQ(host(pol.resolve(p("real/file"), Access::Read)), p("real/file"));
  EXPECT_EQ(host(pol.resolve(p("glink"), Access::Read, false)), p("glink"));  // readlink
  EXPECT_EQ(host(pol.resolve(p("glink"), Access::Read, true)), p("real"));
  EXPECT_EQ(err(pol.resolve(p("glink/../other/secret"), Access::Read)), -EACCES);
}

TEST_F(PolicyTest, GrantOfMissingPath) {
  PolicyConfig c;
  c.write.push_back(p("glink/new/deeper"));  // canonical: root/real/new/deeper
  PathPolicy pol(c);
  EXPECT_EQ(err(pol.resolve(p("real/new/deeper/f"), Access::Write)), -ENOENT);  // parent missing
  fs::create_directories(p("real/new/deeper"));
  auto r = pol.resolve(p("glink/new/deeper/f"), Access::Write);
  EXPECT_EQ(host(r), p("real/new/deeper/f"));
  EXPECT_EQ(err(pol.resolve(p("real/new/f"), Access::Write)), -EACCES);
}

TEST_F(PolicyTest, WriteNeedsWriteGrant) {
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve(p("g/file"), Access::Write)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/newfile"), Access::Write)), -EACCES);
  PolicyConfig c;
  c.write.push_back(p("g"));
  PathPolicy wpol(c);
  EXPECT_EQ(err(wpol.resolve(p("g/file"), Access::Write)), 0);
  EXPECT_EQ(err(wpol.resolve(p("g/file"), Access::Read)), 0);  // write implies read
  EXPECT_EQ(err(wpol.resolve(p("h/file"), Access::Write)), -EACCES);
  // read_all does not give write.
  PolicyConfig ra;
  ra.read_all = true;
  PathPolicy rapol(ra);
  EXPECT_EQ(err(rapol.resolve(p("h/file"), Access::Read)), 0);
  EXPECT_EQ(err(rapol.resolve(p("h/file"), Access::Write)), -EACCES);
  // always_readable is read-only.
  PolicyConfig ar;
  ar.always_readable.push_back(p("h/file"));
  PathPolicy arpol(ar);
  EXPECT_EQ(err(arpol.resolve(p("h/file"), Access::Read)), 0);
  EXPECT_EQ(err(arpol.resolve(p("h/file"), Access::Write)), -EACCES);
  EXPECT_EQ(err(arpol.resolve(p("h"), Access::Read)), -EACCES);
}

TEST_F(PolicyTest, CreateNewFileUnderWriteGrant) {
  PolicyConfig c;
  c.write.push_back(p("g"));
  PathPolicy pol(c);
  auto r = pol.resolve(p("g/sub/newfile"), Access::Write);
  ASSERT_EQ(err(r), 0);
  auto& ok = std::get<PathPolicy::Resolved>(r);
  EXPECT_FALSE(ok.exists);
  EXPECT_TRUE(ok.writable);
  EXPECT_EQ(ok.host_path, p("g/sub/newfile"));
  EXPECT_EQ(err(pol.resolve(p("g/newdir/"), Access::Write)), 0);  // mkdir with trailing slash
  EXPECT_EQ(err(pol.resolve(p("g/nodir/newfile"), Access::Write)), -ENOENT);
  EXPECT_EQ(err(pol.resolve(p("other/newfile"), Access::Write)), -EACCES);
  // A dangling symlink inside the grant creates its target, if that is granted.
  link("created-by-link", "g/dangling");
  link(p("other/created"), "g/dangling-out");
  EXPECT_EQ(host(pol.resolve(p("g/dangling"), Access::Write)), p("g/created-by-link"));
  EXPECT_EQ(err(pol.resolve(p("g/dangling-out"), Access::Write)), -EACCES);
  // The host path can actually be created.
  int fd = ::open(ok.host_path.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW, 0644);
  EXPECT_GE(fd, 0);
  ::close(fd);
}

TEST_F(PolicyTest, Volumes) {
  PolicyConfig c;
  c.volumes.push_back({p("volhost"), p("mnt/vol"), false});  // root/mnt does not exist on the host
  c.volumes.push_back({p("volhost2"), p("g/rw"), true});
  c.read.push_back(p("g"));
  PathPolicy pol(c);
  auto r = pol.resolve(p("mnt/vol/file"), Access::Read);
  ASSERT_EQ(err(r), 0);
  EXPECT_EQ(std::get<PathPolicy::Resolved>(r).host_path, p("volhost/file"));
  EXPECT_EQ(std::get<PathPolicy::Resolved>(r).guest_path, p("mnt/vol/file"));
  EXPECT_FALSE(std::get<PathPolicy::Resolved>(r).writable);
  EXPECT_EQ(host(pol.resolve(p("mnt/vol"), Access::Read)), p("volhost"));
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/file"), Access::Write)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/new"), Access::Write)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/missing/x"), Access::Read)), -ENOENT);
  EXPECT_EQ(err(pol.resolve(p("mnt/other"), Access::Read)), -EACCES);
  // The volume's host path is not reachable at its host location without a grant.
  EXPECT_EQ(err(pol.resolve(p("volhost/file"), Access::Read)), -EACCES);
  // rw volume, mounted inside a read-only grant, shadowing nothing.
  EXPECT_EQ(host(pol.resolve(p("g/rw/file"), Access::Write)), p("volhost2/file"));
  EXPECT_EQ(host(pol.resolve(p("g/rw/new"), Access::Write)), p("volhost2/new"));
  EXPECT_EQ(err(pol.resolve(p("g/file"), Access::Write)), -EACCES);
  // `..` at the volume root goes to the guest parent.
  EXPECT_EQ(host(pol.resolve(p("g/rw/../file"), Access::Read)), p("g/file"));
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/../../other/secret"), Access::Read)), -EACCES);
}

TEST_F(PolicyTest, SymlinksInsideVolumesResolveInGuestSpace) {
  fs::create_symlink(p("mnt/vol/sub/file"), p("volhost/guestabs"));  // guest-space absolute
  fs::create_symlink("sub/file", p("volhost/rel"));
  fs::create_symlink("../../../../../../other/secret", p("volhost/escape"));
  fs::create_symlink(p("volhost/file"), p("volhost/hostabs"));  // the host path: not visible
  fs::create_symlink(p("g/file"), p("volhost/togrant"));
  fs::create_symlink("..", p("volhost/up"));
  PolicyConfig c;
  c.volumes.push_back({p("volhost"), p("mnt/vol"), true});
  c.read.push_back(p("g"));
  PathPolicy pol(c);
  EXPECT_EQ(host(pol.resolve(p("mnt/vol/guestabs"), Access::Read)), p("volhost/sub/file"));
  EXPECT_EQ(host(pol.resolve(p("mnt/vol/rel"), Access::Read)), p("volhost/sub/file"));
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/escape"), Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/hostabs"), Access::Read)), -EACCES);
  EXPECT_EQ(host(pol.resolve(p("mnt/vol/togrant"), Access::Read)), p("g/file"));
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/togrant"), Access::Write)), -EACCES);  // g is read-only
  // up -> .. from the volume root: the guest's root/mnt, which is only a mount point's ancestor.
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/up/vol/file"), Access::Read)), 0);
  EXPECT_EQ(err(pol.resolve(p("mnt/vol/up"), Access::Read)), -EACCES);
}

TEST_F(PolicyTest, EtcShadowNeedsAGrant) {
  auto pol = read_g();
  EXPECT_EQ(err(pol.resolve("/etc/shadow", Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve("/etc/passwd", Access::Read)), -EACCES);
  EXPECT_EQ(pol.suggestion("/etc/shadow", Access::Read), "--allow-read=/etc/shadow");
  EXPECT_EQ(pol.suggestion("/etc/../etc/./shadow", Access::Write), "--allow-write=/etc/shadow");
  PolicyConfig c;
  c.read.push_back("/etc/shadow");
  PathPolicy granted(c);
  EXPECT_EQ(host(granted.resolve("/etc/shadow", Access::Read)), "/etc/shadow");
  EXPECT_EQ(err(granted.resolve("/etc/passwd", Access::Read)), -EACCES);
}

// README "Libraries": the system library directories and ld.so.cache, read-only, nothing else.
TEST_F(PolicyTest, SystemLibrariesAreReadable) {
  PolicyConfig c;
  c.always_readable = system_library_paths();
  PathPolicy pol(c);
  for (const char* lib : {"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6",
                          "/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache"}) {
    if (!fs::exists(lib)) continue;
    EXPECT_EQ(err(pol.resolve(lib, Access::Read)), 0) << lib;
    EXPECT_EQ(err(pol.resolve(lib, Access::Write)), -EACCES) << lib;
  }
  EXPECT_EQ(err(pol.resolve("/usr/lib/kvms-no-such-dir/file", Access::Read)), -ENOENT);
  EXPECT_EQ(err(pol.resolve("/etc/passwd", Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve("/etc/ld.so.preload", Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve("/usr/bin/env", Access::Read)), -EACCES);
  EXPECT_EQ(err(pol.resolve(p("g/file"), Access::Read)), -EACCES);
  // A symlink in a library directory leads nowhere the rule does not cover.
  EXPECT_EQ(err(pol.resolve("/usr/lib/../../etc/passwd", Access::Read)), -EACCES);
}

// /proc, /sys and /dev are procfs's (made up from the guest's state): the walk never enters the host's.
TEST_F(PolicyTest, MadeUpTreesNeverReachTheHost) {
  PolicyConfig all;
  all.allow_all = true;
  PathPolicy apol(all);
  for (const char* path : {"/proc", "/proc/", "/proc/cpuinfo", "/proc/self/environ", "/proc/1/cmdline",
                           "/proc/self/root/etc/passwd", "/sys", "/sys/kernel", "/dev", "/dev/kvm", "/dev/null",
                           "/dev/fd/0", "/dev/stdin", "/dev/shm/x", "/etc/../proc/self/environ"}) {
    EXPECT_EQ(err(apol.resolve(path, Access::Read)), -ENOENT) << path;
    EXPECT_EQ(err(apol.resolve(path, Access::Write, false)), -ENOENT) << path;
    EXPECT_FALSE(apol.visible(normalize_path(path))) << path;
  }
  EXPECT_EQ(err(apol.resolve("/", Access::Read)), 0);
  EXPECT_TRUE(apol.visible("/"));
  // Walking through a tree's root and back out is a path like any other.
  EXPECT_EQ(host(apol.resolve("/dev/../" + p("g/file"), Access::Read)), p("g/file"));
  EXPECT_EQ(err(apol.resolve("/dev/./null", Access::Read)), -ENOENT);
  EXPECT_EQ(err(apol.resolve("/dev/..", Access::Read)), 0);
  // Symlinks on the host that lead into the trees (/etc/mtab -> ../proc/self/mounts) end there too.
  link("/proc/self/environ", "g/toenviron");
  link("../../../../../../../../proc/1/cmdline", "g/toinit");
  link("/dev/kvm", "g/tokvm");
  link("/sys", "g/tosys");
  for (const char* l : {"g/toenviron", "g/toinit", "g/tokvm", "g/tosys"}) {
    EXPECT_EQ(err(apol.resolve(p(l), Access::Read)), -ENOENT) << l;
    EXPECT_EQ(err(apol.resolve(p(l), Access::Read, false)), 0) << l;  // the link itself is a file
  }
  EXPECT_EQ(err(apol.resolve(p("g/tosys/kernel"), Access::Read)), -ENOENT);
  // Explicit grants of a parent (or bare grants) do not cover them either.
  PolicyConfig root;
  root.write.push_back("/");
  root.read_all = true;
  PathPolicy rpol(root);
  EXPECT_EQ(err(rpol.resolve("/proc/cpuinfo", Access::Read)), -ENOENT);
  EXPECT_EQ(err(rpol.resolve("/dev/sda", Access::Write)), -ENOENT);
  EXPECT_EQ(host(rpol.resolve("/etc/passwd", Access::Read)), "/etc/passwd");
}

TEST_F(PolicyTest, GrantsOfTheMadeUpTreesAreRefused) {
  for (const char* path : {"/proc", "/proc/self/environ", "/proc/1", "/sys", "/sys/kernel", "/dev", "/dev/kvm",
                           "/dev/shm", "/dev/pts/0", "/dev/stdin", "/dev/fd"}) {
    EXPECT_NE(grant_refusal(path), "") << path;
    for (bool write : {false, true}) {
      PolicyConfig c;
      (write ? c.write : c.read).push_back(path);
      EXPECT_THROW(PathPolicy{c}, std::invalid_argument) << path;
    }
  }
  EXPECT_NE(grant_refusal("/proc/1").find("/proc and /sys are made up by kvmserver"), std::string::npos);
  EXPECT_NE(grant_refusal("/dev/kvm").find("only the devices kvmserver emulates"), std::string::npos);
  for (const char* path : {"/etc", "/", "/devices", "/processes", "/system", "/dev/tty", "/dev/null", "/dev/urandom"})
    EXPECT_EQ(grant_refusal(path), "") << path;
  // What a grant resolves to on the host counts, too.
  link("/proc/self", "g/toself");
  link("/dev/tty", "g/totty");
  EXPECT_NE(grant_refusal(p("g/toself")).find("is /proc/"), std::string::npos) << grant_refusal(p("g/toself"));
  EXPECT_NE(grant_refusal(p("g/toself/environ")), "");
  EXPECT_NE(grant_refusal(p("g/totty")), "");
  // Volumes: neither side in the trees, not even a grantable device.
  for (Volume v : {Volume{"/proc", p("myproc")}, Volume{p("g"), "/proc"}, Volume{p("g"), "/dev/tty"},
                   Volume{"/dev", p("mydev")}, Volume{p("g"), "/sys/x"}}) {
    PolicyConfig c;
    c.volumes.push_back(v);
    EXPECT_THROW(PathPolicy{c}, std::invalid_argument) << v.host << ":" << v.guest;
    EXPECT_NE(volume_refusal(v.host) + volume_refusal(v.guest), "");
  }
  // The program's own path in a tree (run /proc/self/exe) is not refused: it is simply no grant.
  PolicyConfig ours;
  ours.always_readable.push_back("/proc/self/exe");
  EXPECT_NO_THROW(PathPolicy{ours});
}

TEST_F(PolicyTest, GrantableDevices) {
  PolicyConfig none;
  EXPECT_FALSE(PathPolicy(none).device_granted("/dev/tty", Access::Read));
  PolicyConfig read;
  read.read = {"/dev/tty", "/dev/null"};  // /dev/null needs no grant: accepted, changes nothing
  PathPolicy rpol(read);
  EXPECT_TRUE(rpol.device_granted("/dev/tty", Access::Read));
  EXPECT_FALSE(rpol.device_granted("/dev/tty", Access::Write));
  EXPECT_FALSE(rpol.device_granted("/dev/null", Access::Read));
  EXPECT_EQ(err(rpol.resolve("/dev/tty", Access::Read)), -ENOENT);  // procfs opens it, not the walk
  PolicyConfig write;
  write.write = {"/dev/tty"};
  PathPolicy wpol(write);
  EXPECT_TRUE(wpol.device_granted("/dev/tty", Access::Read));
  EXPECT_TRUE(wpol.device_granted("/dev/tty", Access::Write));
  PolicyConfig all;
  all.allow_all = true;  // -A does not grant the terminal
  EXPECT_FALSE(PathPolicy(all).device_granted("/dev/tty", Access::Read));
}

TEST_F(PolicyTest, AllowAll) {
  PolicyConfig c;
  c.allow_all = true;
  PathPolicy pol(c);
  EXPECT_EQ(host(pol.resolve(p("other/secret"), Access::Write)), p("other/secret"));
  EXPECT_EQ(host(pol.resolve(p("g/../other/new"), Access::Write)), p("other/new"));
  link(p("other/secret"), "g/abs");
  EXPECT_EQ(host(pol.resolve(p("g/abs"), Access::Read)), p("other/secret"));
  EXPECT_EQ(err(pol.resolve(p("missing/x"), Access::Read)), -ENOENT);
  EXPECT_EQ(err(pol.resolve("/etc/passwd", Access::Read)), 0);
}

TEST_F(PolicyTest, Suggestions) {
  PolicyConfig c;
  c.volumes.push_back({p("volhost"), p("mnt/vol"), false});
  c.read.push_back(p("g"));
  PathPolicy pol(c);
  EXPECT_EQ(pol.suggestion(p("other/secret"), Access::Read), "--allow-read=" + p("other/secret"));
  EXPECT_EQ(pol.suggestion(p("g/../other/missing"), Access::Write), "--allow-write=" + p("other/missing"));
  EXPECT_EQ(pol.suggestion(p("glink/file"), Access::Read), "--allow-read=" + p("real/file"));
  EXPECT_EQ(pol.suggestion(p("mnt/vol/file"), Access::Write),
            "--volume=" + p("volhost") + ":" + p("mnt/vol") + ":rw");
}

TEST_F(PolicyTest, ConstructorRejectsBadConfig) {
  PolicyConfig rel;
  rel.read.push_back("relative/path");
  EXPECT_THROW(PathPolicy{rel}, std::invalid_argument);
  PolicyConfig missing;
  missing.volumes.push_back({p("no-such-dir"), "/data", false});
  EXPECT_THROW(PathPolicy{missing}, std::invalid_argument);
}

TEST(PolicyPaths, JoinAndNormalize) {
  EXPECT_EQ(join_guest_path("/home/u", "a/../b"), "/home/u/a/../b");
  EXPECT_EQ(join_guest_path("/", "a"), "/a");
  EXPECT_EQ(join_guest_path("/home/u", "/etc"), "/etc");
  EXPECT_EQ(join_guest_path("/home/u", ""), "");
  EXPECT_EQ(normalize_path("/a//b/./c/../d/"), "/a/b/d");
  EXPECT_EQ(normalize_path("/../.."), "/");
  EXPECT_EQ(normalize_path("/"), "/");
  EXPECT_EQ(normalize_path("a/../../b"), "../b");
}

}  // namespace
}  // namespace kvms::linux

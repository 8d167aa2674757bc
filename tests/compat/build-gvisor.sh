#!/usr/bin/env bash
# Builds gVisor's syscall tests (gtest, written for Bazel) with plain g++ and Debian's gtest, gmock,
# absl and libcap, static, from the source snapshot in the third-party directory into
# .cache/compat/gvisor, for tests/compat/run-gvisor.sh. Only the targets of the families a server
# uses (TARGETS below, overridable: names of linux/BUILD's `NAME_test` targets, without `_test`) are
# built: one binary per Bazel target (a target may take several .cc files and test-case libraries,
# read from test/syscalls/linux/BUILD), plus the helper binaries the tests exec (the target's
# `data`). Safe to run again: a generated Makefile only redoes what is missing (a clean build: ~5 min
# on 2 idle cores).
#
#   tests/compat/build-gvisor.sh         KVMS_THIRD_PARTY (default ../shared/third-party): where
#                                        gvisor-syscall-tests-*.tar.xz is; KVMS_COMPAT_DIR (default
#                                        .cache/compat); JOBS (default nproc)
#
# Out: $KVMS_COMPAT_DIR/gvisor/bin/NAME_test and helpers, build logs per binary in
# $KVMS_COMPAT_DIR/gvisor-build-logs/NAME.log.
# Needs g++, python3, libgtest-dev, libgmock-dev, libabsl-dev, libcap-dev (scripts/setup.sh installs
# them: CI builds a subset, tests/compat/ci.sh).
#
# Stand-ins for the Bazel-only pieces (our code, written into gvisor/kvms/, never into src/):
# - test_util_impl.cc: TestInit/RunAllTests without google-benchmark (Debian ships no static
#   libbenchmark, and no test here runs benchmarks); benchmark.cc: the one benchmark function
#   timers.cc's use of benchmark.h needs;
# - test_util_runfiles.cc: RunfilePath("test/syscalls/linux/X") is X in the bin directory (or
#   $TEST_SRCDIR/PATH when set), where this script puts the helper binaries;
# - gVisor's main() (test/util/test_main.cc) is linked from an archive, as Bazel does: the tests
#   with a main() of their own (fcntl, exec, signalfd...) keep theirs.
# Source edits (for Debian's absl 20220623, older than gVisor's) are in apply_edits below: they are
# applied to the extracted copy only.
#
# Families of issue 12 without a target of their own: writev (in write, readv), openat (open),
# fstat and lstat (stat), mprotect (mmap), nanosleep (clock_nanosleep). Left out of the default
# TARGETS: socket_inet_loopback (its cases run over ~30 listener x connector pairs of v4, v6 and
# dual-stack addresses, several waiting up to 120 s: too long for the nested machine;
# socket_ip_tcp_loopback, tcp_socket and accept_bind cover TCP over loopback).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
third_party=${KVMS_THIRD_PARTY:-$root/../shared/third-party}
out=$(realpath -m -- "${KVMS_COMPAT_DIR:-$root/.cache/compat}")  # absolute: the build runs in $out/gvisor
jobs=${JOBS:-$(nproc)}
# linux/BUILD targets (NAME for //test/syscalls/linux:NAME_test), by the families issue 12 names.
TARGETS=${TARGETS:-"read write pread64 pwrite64 readv preadv open open_create stat lseek
  mmap munmap mremap madvise brk pipe dup fcntl close_range epoll poll ppoll select pselect
  futex fork exec vfork wait sigaction sigprocmask sigaltstack sigtimedwait sigstop kill tgkill
  clock_gettime clock_getres clock_nanosleep timerfd itimer timers alarm getrandom prctl uname
  rlimits eventfd sendfile sendfile_socket signalfd getdents chdir
  socket accept_bind accept_bind_stream tcp_socket udp_socket socket_ip_tcp_loopback
  socket_ip_tcp_generic_loopback socket_ip_udp_loopback socket_ipv4_udp_unbound_loopback
  socket_ip_unbound socket_unix_pair socket_unix_stream socket_unix_seqpacket_local
  socket_unix_dgram_local socket_unix_unbound_stream socket_unix_unbound_dgram
  socket_unix_unbound_seqpacket socket_stream_blocking_tcp socket_stream_blocking_local
  socket_non_stream_blocking_udp"}

die() { echo "build-gvisor.sh: $*" >&2; exit 1; }
command -v g++ >/dev/null || die "needs g++"
command -v python3 >/dev/null || die "needs python3 (reads Bazel's BUILD files)"
for h in gtest/gtest.h gmock/gmock.h absl/strings/str_split.h sys/capability.h; do
  [ -f "/usr/include/$h" ] || die "no /usr/include/$h (install libgtest-dev libgmock-dev libabsl-dev libcap-dev)"
done
. "$root/tests/compat/lib.sh"
tarball=$(snapshot_tarball 'gvisor-syscall-tests-*.tar.xz') || exit 1

# The source edits Debian's older absl needs: small, mechanical, idempotent sed scripts, applied on
# every run to the extracted copy, a file being rewritten only if its edit changes it (so make
# rebuilds only what an added edit touches; delete $KVMS_COMPAT_DIR/gvisor to drop an edit).
edit() { # SED-SCRIPT GREP-PATTERN: the script on the files of test/ the pattern is found in
  local f
  for f in $(grep -rlE "$2" test --include='*.cc' --include='*.h'); do
    sed "$1" "$f" >"$f.edit"
    if cmp -s "$f" "$f.edit"; then rm -f "$f.edit"; else mv -f "$f.edit" "$f"; fi
  done
}
apply_edits() {
  # absl::StrSplit yields absl::string_view, which is not std::string_view in Debian's absl (built
  # without ABSL_USES_STD_STRING_VIEW): split into std::string instead.
  edit 's/std::vector<std::string_view> \([a-z_]*\) = absl::StrSplit/std::vector<std::string> \1 = absl::StrSplit/' \
    'std::string_view> [a-z_]* = absl::StrSplit'
  # absl::Mutex in 20220623: MutexLock takes a Mutex* (not yet a Mutex&), and it has Lock/Unlock but
  # not yet the std-style lock/unlock.
  edit 's/absl::MutexLock \([a-z_]*\)(\([a-z_]*\))/absl::MutexLock \1(\&\2)/' 'absl::MutexLock [a-z_]*\([a-z_]*\)'
  edit 's/\bmu\.lock()/mu.Lock()/g; s/\bmu\.unlock()/mu.Unlock()/g' '\bmu\.(un)?lock\(\)'
}

t0=$(date +%s)
mkdir -p "$out"
gv=$out/gvisor
extract_snapshot "$tarball" gvisor "$gv"
cd "$gv"
apply_edits
mkdir -p kvms bin obj/util obj/linux obj/kvms
logs=$out/gvisor-build-logs
mkdir -p "$logs"

# Stand-ins for Bazel's test_util_impl.cc and test_util_runfiles.cc (see the header). Written only
# when they change, so that make does not relink everything on every run.
write_if_changed() { # FILE: stdin's text into FILE unless it already holds it
  local tmp=$1.tmp
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}
write_if_changed kvms/test_util_impl.cc <<'CC'
// kvmserver's stand-in for gVisor's test/util/test_util_impl.cc, without google-benchmark.
#include <signal.h>

#include "gtest/gtest.h"
#include "absl/flags/parse.h"
#include "test/util/logging.h"
#include "test/util/test_util.h"

namespace gvisor {
namespace testing {

void SetupGvisorDeathTest() {}

void TestInit(int* argc, char*** argv) {
  ::testing::InitGoogleTest(argc, *argv);
  ::absl::ParseCommandLine(*argc, *argv);
  // Always mask SIGPIPE as it's common and tests aren't expected to handle it.
  struct sigaction sa = {};
  sa.sa_handler = SIG_IGN;
  TEST_CHECK(sigaction(SIGPIPE, &sa, nullptr) == 0);
}

int RunAllTests() { return RUN_ALL_TESTS(); }

}  // namespace testing
}  // namespace gvisor
CC
write_if_changed kvms/test_util_runfiles.cc <<'CC'
// kvmserver's stand-in for gVisor's test/util/test_util_runfiles.cc (Bazel runfiles): the helper
// binaries a test execs are in the directory build-gvisor.sh compiled in, by their base name.
#include <stdlib.h>
#include <sys/stat.h>

#include <string>

#include "test/util/fs_util.h"
#include "test/util/test_util.h"

namespace gvisor {
namespace testing {

std::string RunfilePath(std::string path) {
  if (const char* srcdir = getenv("TEST_SRCDIR")) {
    std::string p = JoinPath(srcdir, path);
    struct stat st;
    if (stat(p.c_str(), &st) == 0) return p;
  }
  return JoinPath(KVMS_HELPER_DIR, std::string(Basename(path)));
}

}  // namespace testing
}  // namespace gvisor
CC
write_if_changed kvms/benchmark.cc <<'CC'
// kvmserver's stand-in for the one google-benchmark function a test needs: benchmark.h (timers.cc
// uses its inline DoNotOptimize) calls InitializeStreams() from a static initializer.
namespace benchmark {
namespace internal {
int InitializeStreams() { return 0; }
}  // namespace internal
}  // namespace benchmark
CC

# The Makefile, from linux/BUILD: each target's .cc files (its own and those of the linux/
# cc_library rules it depends on, transitively) and its helper binaries (data). Everything in
# test/util goes into one static library: the linker takes what a binary uses.
python3 - test/syscalls/linux/BUILD "$gv" $TARGETS >Makefile.kvms.tmp 2>targets.missing 3>targets.deps <<'PY' ||
import os, sys
build, gv, names = sys.argv[1], sys.argv[2], sys.argv[3:]
deps = os.fdopen(3, "w")  # NAME and the files its binary is made of, for the per-binary logs
rules = {}
def rule(kind):
    def f(name, **kw):
        kw["kind"] = kind
        rules[name] = kw
    return f
# Just enough of Starlark's and gVisor's macros to evaluate linux/BUILD (Linux, x86-64).
env = dict(load=lambda *a, **k: None, package=lambda **k: None, exports_files=lambda *a, **k: None,
           cc_binary=rule("bin"), cc_library=rule("lib"), sh_binary=rule("sh"), select_gtest=lambda: [],
           gbenchmark=[], select_system=lambda linux=[], **k: linux, select_arch=lambda amd64=[], **k: amd64)
exec(open(build).read(), env)
def local(dep):
    if not isinstance(dep, str): return None  # gbenchmark, a list
    if dep.startswith(":"): return dep[1:]
    if dep.startswith("//test/syscalls/linux:"): return dep.split(":", 1)[1]
    return None
def closure(name):
    """The .cc files of a rule and of the linux/ libraries it needs."""
    srcs, seen, stack = [], set(), [name]
    while stack:
        n = stack.pop()
        if n in seen or n not in rules: continue
        seen.add(n)
        srcs += [s for s in rules[n].get("srcs", []) if s.endswith(".cc")]
        stack += [d for d in map(local, rules[n].get("deps", [])) if d]
    return sorted(set(srcs))
util = sorted(f[:-3] for f in os.listdir("test/util") if f.endswith(".cc") and not f.endswith("_test.cc")
              and f not in ("test_main.cc", "test_util_impl.cc", "test_util_runfiles.cc", "errno_safe_allocator.cc"))
print(f"""# Generated by tests/compat/build-gvisor.sh: do not edit.
CXX ?= g++
# -O1: quick to build, and the tests measure system calls, not code.
CXXFLAGS = -std=c++17 -O1 -g0 -w -pthread -I{gv} -DKVMS_HELPER_DIR='"{gv}/bin"'
ABSL = $(sort $(wildcard /usr/lib/x86_64-linux-gnu/libabsl_*.a))
LIBS = obj/libgvutil.a -lgmock -lgtest -Wl,--start-group $(ABSL) -Wl,--end-group -lcap -pthread
# Compiler and linker messages go to TARGET.log, shown on failure.
RUN = 2>$@.log || {{ cat $@.log; rm -f $@; exit 1; }}
.DELETE_ON_ERROR:
obj/util/%.o: test/util/%.cc
\t$(CXX) $(CXXFLAGS) -c -o $@ $< $(RUN)
obj/linux/%.o: test/syscalls/linux/%.cc
\t$(CXX) $(CXXFLAGS) -c -o $@ $< $(RUN)
obj/kvms/%.o: kvms/%.cc
\t$(CXX) $(CXXFLAGS) -c -o $@ $< $(RUN)
UTIL = {" ".join(f"obj/util/{u}.o" for u in util)} obj/kvms/test_util_impl.o obj/kvms/test_util_runfiles.o obj/kvms/benchmark.o
obj/libgvutil.a: $(UTIL)
\trm -f $@ && ar rcs $@ $^
# gVisor's main() (TestInit, RunAllTests), in an archive as Bazel links it: only taken by the tests
# that have no main() of their own.
obj/libgvmain.a: obj/util/test_main.o
\trm -f $@ && ar rcs $@ $^
MAIN = obj/util/errno_safe_allocator.o obj/libgvmain.a""")
bins, helpers = [], set()
for n in names:
    t = n + "_test"
    if t not in rules:
        print(n, file=sys.stderr)
        continue
    objs = " ".join(f"obj/linux/{s[:-3]}.o" for s in closure(t))
    data = [d for d in map(local, rules[t].get("data", [])) if d]
    helpers.update(data)
    print(f"bin/{t}: {objs} $(MAIN) obj/libgvutil.a | {' '.join(f'bin/{d}' for d in data)}\n"
          f"\t$(CXX) -static -o $@ {objs} $(MAIN) $(LIBS) $(RUN)")
    bins.append(f"bin/{t}")
    print(n, objs, " ".join(f"bin/{d}" for d in data), file=deps)
for h in sorted(helpers):
    r = rules[h]
    if r["kind"] == "sh":
        print(f"bin/{h}: test/syscalls/linux/{r['srcs'][0]}\n\tcp $< $@ && chmod +x $@")
    else:
        objs = " ".join(f"obj/linux/{s[:-3]}.o" for s in closure(h))
        print(f"bin/{h}: {objs} obj/libgvutil.a\n\t$(CXX) -static -o $@ {objs} $(LIBS) $(RUN)")
print("all: " + " ".join(bins))
PY
  die "cannot read test/syscalls/linux/BUILD: $(tail -n 1 targets.missing)"
mv Makefile.kvms.tmp Makefile.kvms
[ -s targets.missing ] && echo "build-gvisor.sh: no such target in linux/BUILD: $(paste -sd' ' targets.missing)" >&2

# Build: the util library first (every binary needs it), then all binaries, -k to go past failures.
make -f Makefile.kvms -j"$jobs" obj/libgvutil.a obj/libgvmain.a obj/util/errno_safe_allocator.o \
  >"$logs/util.log" 2>&1 || die "the test/util library failed to build: $logs/util.log"
make -f Makefile.kvms -k -j"$jobs" all >"$logs/make.log" 2>&1 || true

# Per binary: built or not, and its log (the messages of its objects, helpers and link).
built=0 failed=()
while read -r n deps; do
  b=bin/${n}_test
  for d in $deps "$b"; do if [ -s "$d.log" ]; then echo "== $d"; cat "$d.log"; fi; done >"$logs/$n.log"
  if [ -x "$b" ]; then built=$((built + 1)); else failed+=("$n"); fi
done <targets.deps
echo "build-gvisor.sh: $built binaries built, failed: ${failed[*]:-none}, in $(($(date +%s) - t0)) s ($gv/bin, logs: $logs)"
[ "$built" -gt 0 ]

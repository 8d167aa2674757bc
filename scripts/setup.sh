#!/usr/bin/env bash
# Installs every Debian package kvmserver's build, tests and nested KVM machine need (Debian 12),
# then Deno from npm into .cache/deno (scripts/fetch-deno.sh, for tests/e2e/runtimes.sh), then
# builds into build/, and with clang into build-fuzz/ (tests/fuzz/build.sh: kvmserver with ASan, UBSan
# and coverage for tests/fuzz/guest_fuzz.sh, and the in-process fuzzer; KVMS_FUZZ_BUILD=0 skips it).
# Safe to run again: apt, npm and cmake only do what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)

packages=(
  build-essential cmake pkg-config nasm
  libgtest-dev libcli11-dev libtomlplusplus-dev libfmt-dev libspdlog-dev libseccomp-dev libbenchmark-dev
  libhttp-parser-dev libxxhash-dev
  autoconf automake m4  # tests/compat/build-ltp.sh: LTP's syscall tests (run by hand, issue 12)
  libgmock-dev libabsl-dev libcap-dev  # tests/compat/build-gvisor.sh: gVisor's syscall tests (CI runs a subset)
  musl-tools busybox-static python3 curl ca-certificates procps
  libpython3.11-testsuite wrk
  golang-go  # tests/e2e/runtimes.sh: Go servers (static and cgo) under kvmserver; examples/go
  rustc  # examples/rust (std only, tests/e2e/examples.sh)
  gnuplot-nox  # bench/run.sh, bench/host_costs.sh CHART=: the reset and worker-creation chart
  nginx systemd  # tests/e2e/isolation.sh: a reverse proxy in front; systemd-socket-activate
  clang libclang-rt-14-dev llvm-14  # tests/fuzz/: libFuzzer, ASan/UBSan, source-based coverage
  help2man file lintian man-db  # the Debian package (cmake/Packaging.cmake) and tests/packaging/run.sh
)
mapfile -t -O "${#packages[@]}" packages < <(grep -v '^\s*#' tools/with-kvm.packages | grep -v '^\s*$')

# Node.js (a runtime the tests run under kvmserver; npm fetches Deno): Debian's unless one is there.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Deno for tests/e2e/runtimes.sh; without it only the deno cases fail, so this is not fatal.
if command -v npm >/dev/null; then
  scripts/fetch-deno.sh >/dev/null || echo "setup: WARNING: scripts/fetch-deno.sh failed: the deno cases of tests/e2e/runtimes.sh will fail" >&2
  tests/packaging/fetch-validators.sh >/dev/null || echo "setup: WARNING: tests/packaging/fetch-validators.sh failed: tests/packaging/run.sh cannot validate the manifests" >&2
else
  echo "setup: WARNING: no npm: no Deno in .cache/deno, the deno cases of tests/e2e/runtimes.sh will fail" >&2
fi
t1=$(date +%s)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
t2=$(date +%s)
fuzzing=""
if [ "${KVMS_FUZZ_BUILD:-1}" != 0 ]; then
  tests/fuzz/build.sh build-fuzz
  fuzzing=", fuzzing build (clang, ASan+UBSan+coverage) $(($(date +%s) - t2)) s"
fi
echo "setup: packages $((t1 - t0)) s, build $((t2 - t1)) s$fuzzing"

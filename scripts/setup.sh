#!/usr/bin/env bash
# Installs every Debian package kvmserver's build, tests and nested KVM machine need (Debian 12),
# then builds into build/. Safe to run again: apt and cmake only do what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)

packages=(
  build-essential cmake pkg-config nasm
  libgtest-dev libcli11-dev libtomlplusplus-dev libfmt-dev libspdlog-dev libseccomp-dev
  musl-tools busybox-static python3 curl ca-certificates procps
)
mapfile -t -O "${#packages[@]}" packages < <(grep -v '^\s*#' tools/with-kvm.packages | grep -v '^\s*$')

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
t1=$(date +%s)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
t2=$(date +%s)
echo "setup: packages $((t1 - t0)) s, build $((t2 - t1)) s"

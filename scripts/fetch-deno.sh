#!/usr/bin/env bash
# Installs Deno from the npm package `deno` (version pinned below; override with DENO_VERSION)
# into .cache/deno with npm, checks that the binary runs natively, and prints its path on stdout
# (everything else goes to stderr). Safe to run again: nothing is fetched when the pinned version
# is already there. Used by tests/e2e/runtimes.sh (the deno cases) and called from scripts/setup.sh.
#
# Usage: scripts/fetch-deno.sh            -> prints e.g. /work/…/.cache/deno/node_modules/@deno/linux-x64-glibc/deno
# Environment: DENO_VERSION (default 2.9.6), DENO_PREFIX (default <project>/.cache/deno).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${DENO_VERSION:-2.9.6}
prefix=${DENO_PREFIX:-$PWD/.cache/deno}

# The npm package `deno` is a wrapper (bin.cjs + a postinstall step) around the platform package
# @deno/linux-x64-glibc, which holds the real executable. We want that executable: the wrapper
# would put node in front of it.
find_binary() {
  local b
  for b in "$prefix/node_modules/@deno/linux-x64-glibc/deno" "$prefix/node_modules/deno/deno"; do
    if [ -x "$b" ] && [ ! -L "$b" ]; then echo "$b"; return 0; fi
  done
  return 1
}

installed_version() { # of the deno package in $prefix, empty if none
  node -e 'try { console.log(require(process.argv[1]).version) } catch (e) {}' \
    "$prefix/node_modules/deno/package.json" 2>/dev/null || true
}

if [ "$(installed_version)" != "$version" ] || ! find_binary >/dev/null; then
  echo "fetch-deno: npm install deno@$version into $prefix" >&2
  mkdir -p "$prefix"
  [ -f "$prefix/package.json" ] || echo '{"name": "kvms-deno", "private": true}' >"$prefix/package.json"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error --save-exact "deno@$version" >&2
fi

bin=$(find_binary) || { echo "fetch-deno: no deno executable under $prefix/node_modules" >&2; exit 1; }
got=$(timeout 60 "$bin" --version </dev/null | head -n1) || { echo "fetch-deno: $bin --version failed" >&2; exit 1; }
case $got in
  "deno $version"*) ;;
  *) echo "fetch-deno: $bin says '$got', wanted deno $version" >&2; exit 1 ;;
esac
echo "fetch-deno: $got natively OK" >&2
echo "$bin"

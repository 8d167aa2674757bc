#!/usr/bin/env bash
# examples/: every example, as its README says to run it: the compiled ones (C, Go, Rust) as the
# build made them (examples/CMakeLists.txt: BUILD/examples/, natively: compiling in the nested
# machine took minutes), then served by kvmserver started in the example's directory, so that its
# kvmserver.toml is the configuration (two workers, ephemeral, the example's grants); the test adds
# only --allow-listen for a free port (and a boot time limit for the nested machine's speed). 50 requests from 2 client threads must all answer "hits=1"
# (every request meets the paused template: isolation), then SIGINT must stop it with status 0.
# A toolchain or runtime that is missing is a failure, not a skip: scripts/setup.sh installs them
# all (DENO: scripts/fetch-deno.sh).
#
#   tests/e2e/examples.sh [KVMSERVER]        EXAMPLES="c go ..." picks (default: all)
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
e2e_binaries "${1:-}"
e2e_init examples
EXAMPLES=${EXAMPLES:-c go rust python_http python_wsgi python_asyncio node deno}
DENO=${DENO:-$root/.cache/deno/node_modules/@deno/linux-x64-glibc/deno}
REQUESTS=${EXAMPLE_REQUESTS:-50}
ex=$root/examples

BUILT=${EXAMPLES_BIN:-$(dirname "$KVMSERVER")/examples}

# built NAME PACKAGE : the example's binary is in $BUILT; else NAME.build fails, naming what to install.
built() {
  [ -x "$BUILT/$1_server" ] && return 0
  fail "$1.build" "no $BUILT/$1_server: install $2 (scripts/setup.sh does) and rebuild (cmake --build)"
  return 1
}

# serve NAME DIR PROGRAM ARGS... (PORT in ARGS as @PORT): kvmserver in DIR, 50 requests, stop.
serve() {
  local name=$1 dir=$2 port t0
  shift 2
  port=$(free_port)
  local args=("${@//@PORT/$port}")
  t0=$(now_ms)
  # --max-boot-time: the default 20 s is for real KVM; the nested machine is ~15x slower, and on a
  # loaded 2-core host Python's examples once took longer than that to start listening.
  START_DIR=$dir start "$name" "$KVMSERVER" --max-boot-time=180 "--allow-listen=127.0.0.1:$port" run -- "${args[@]}"
  if ! wait_ready; then
    fail "$name.ready" "$WHY"
    stop KILL
    return
  fi
  if [[ $READY != *"2 workers, ephemeral"* ]]; then
    fail "$name.config" "kvmserver.toml in $dir not in effect: $READY"
  else
    pass "$name.config"
  fi
  many "$name.isolated" --port "$port" --count $((REQUESTS / 2)) --threads 2 --path / --expect 'hits=1\n'
  stop_check "$name"
  info "  $name: $(secs $(($(now_ms) - t0))) s"
}

enabled() { [[ " $EXAMPLES " == *" $1 "* ]]; }

enabled c && built c build-essential && serve c "$ex/c" "$BUILT/c_server" @PORT
enabled go && built go golang-go && serve go "$ex/go" "$BUILT/go_server" @PORT
enabled rust && built rust rustc && serve rust "$ex/rust" "$BUILT/rust_server" @PORT
enabled python_http && serve python_http "$ex/python" /usr/bin/python3 http_server.py @PORT
enabled python_wsgi && serve python_wsgi "$ex/python" /usr/bin/python3 wsgi_app.py @PORT
enabled python_asyncio && serve python_asyncio "$ex/python" /usr/bin/python3 asyncio_server.py @PORT
enabled node && serve node "$ex/node" /usr/bin/node server.js @PORT
if enabled deno; then
  if [ -x "$DENO" ]; then
    serve deno "$ex/deno" "$DENO" run --allow-net=127.0.0.1:@PORT server.ts @PORT
  else
    fail deno.build "no deno at $DENO: run scripts/fetch-deno.sh (or set DENO)"
  fi
fi
e2e_summary

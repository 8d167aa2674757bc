#!/usr/bin/env bash
# Acceptance tests of issue 5: real language runtimes under kvmserver. Every case runs natively
# first (so a failure under kvmserver is kvmserver's, not the case's) and then under
# `kvmserver run`; where the output is deterministic the two stdouts must be byte-identical.
#
# Cases (select any mix of case and group names as arguments; none: all):
#   group python   py_stdlib   /usr/bin/python3 tests/e2e/runtimes/py_stdlib.py (json, hashlib,
#                              sqlite3 in memory, re, threading, queue)
#                  pyregr      python3 -m test (sequential) PYREGR_TESTS, pass counts compared
#                              (from --junit-xml: tests, skipped, failures, errors, and which)
#   group node     node_eval   node -e '…'
#                  node_workers  node runtimes/node_workers.js (worker_threads, Atomics)
#   group deno     deno_run    deno run runtimes/deno_run.ts a b (TypeScript, Web Crypto)
#                  deno_eval   deno eval '…'
#                  deno_workers  deno run --v8-flags=--jitless --allow-read=runtimes/ runtimes/deno_workers.ts
#                              (4 Workers); deno_workers_jit: the same with the JIT, a known
#                              limitation (XFAIL: it must fail; if it passes, drop the marker)
#                  deno_compile  deno compile runtimes/deno_run.ts, natively, then the output runs
#                              natively and under kvmserver; needs DENORT_BIN (deno compile fetches
#                              denort from Deno's release site otherwise, unreachable here): SKIP
#                              without it
#   group pthread  pthread     build/guests/pthread_stress.{gcc-dynamic,gcc-static,musl}: gcc-dynamic
#                              PTHREAD_RUNS (4 in CI's budget; 100 by hand) times in a row under kvmserver, the others
#                              PTHREAD_OTHER_RUNS (4; ~6 s a run nested): the exact totals
#                              every time (natively PTHREAD_NATIVE_RUNS, 2, for the reference:
#                              inside the nested machine 100 native runs take minutes)
#   group servers  server_c       build/guests/servers/routes_server: the static C twin of the three
#                                 below (same routes): the harness's own check, passes today
#                  server_python  runtimes/py_server.py (http.server)
#                  server_node    runtimes/node_server.js (http.createServer)
#                  server_deno    deno run --allow-net=127.0.0.1:PORT runtimes/deno_server.ts
#                  server_go      build/guests/servers/go_server (runtimes/go_server.go, net/http,
#                                 CGO_ENABLED=0); server_go_cgo: the same with cgo (dynamic)
#     each natively (the control: a global set by one request IS seen by the next), then under
#     `kvmserver -t 2 -e --stats`: 2 x SERVER_REQUESTS (100) GET / over 2 concurrent connections (a
#     new connection per request, tests/e2e/http_client.py many --threads 2) with zero errors;
#     /set/leak then /get must answer global=unset and /hits hits=1 (isolation); python, node, deno, go:
#     2 x IDENTITY_REQUESTS (100) GET /identity give as many different pids, random bytes and UUIDs
#     (every request is a new process; issue 10); SIGINT: exit 0; the --stats
#     request count is exact, and the counters (VM exits, syscalls, pages reset per request) are
#     printed; then `-w 5 --warmup-path=/hits --snapshot-on-ready FILE`: ready within
#     WARMUP_READY_LIMIT, the snapshot file written ("kvmserver: snapshot: wrote"; if kvmserver
#     refuses to save the template, that FAILs with its one line, the phase runs again without
#     --snapshot-on-ready and the serve phase is SKIPped), every request answers hits=6 and
#     isolation holds; then `kvmserver serve FILE -t 2 -e --stats
#     --listen=127.0.0.1:NEWPORT` (same environment and HOME path; the grants recorded in the file):
#     ready (its "loaded in" line printed), SNAPSHOT_REQUESTS (100, over 2 threads) GET /hits all
#     answer hits=6 (the warm-up's state, and every request starts from it), /set/leak then /get
#     global=unset, python, node, deno, go: 20 distinct pids (a loaded template resets pids too); the exact request
#     count, and the per request counters (vm_exits, syscalls) of those /hits within 10 % of the
#     --warmup phase's for its 10 /hits (both read with SIGUSR1 right after the /hits, so both
#     average the same request); c only: a second serve of the same file at the same time on
#     another port (persistent, -t 1): both answer /hits concurrently from the warmed-up state
#     (hits=6) and neither sees the other's /set.
#
# Environment of every run (native and kvmserver alike, nothing else: env -i): PATH=/usr/bin:/bin,
# HOME, TMPDIR and DENO_DIR in a fresh per-run directory HOME (made anew before each half, at the
# same path), LANG=C.UTF-8, PYTHONDONTWRITEBYTECODE=1, DENO_NO_UPDATE_CHECK=1, NO_COLOR=1.
# kvmserver grants: --allow-env=<those names>, --allow-write=HOME, and $RUNTIME_READ_GRANT
# (default bare --allow-read: this suite is about running the runtimes, not about the read policy;
# -v in KVMSERVER_FLAGS logs what a tighter grant would deny), plus --allow-listen for servers.
#
# Usage: tests/e2e/runtimes.sh [CASE|GROUP ...]
# Environment: KVMSERVER (default build/kvmserver; "native": only the native halves), GUESTS
#   (default build/guests), PYTHON (default /usr/bin/python3: the runtime under test and the test
#   client; never a pyenv shim), NODE (/usr/bin/node), DENO (default .cache/deno/node_modules/
#   @deno/linux-x64-glibc/deno, from scripts/fetch-deno.sh), DENORT_BIN, PTHREAD_RUNS (4),
#   PTHREAD_OTHER_RUNS (4), PTHREAD_NATIVE_RUNS (2), SERVER_REQUESTS (50), IDENTITY_REQUESTS (50),
#   SNAPSHOT_REQUESTS (100), SERVER_NATIVE_REQUESTS (100),
#   PYREGR_TESTS, CASE_TIMEOUT (s per native run, 120), KVM_TIMEOUT (s per kvmserver run, 900;
#   pyregr: 4x both), READY_TIMEOUT (s until a server is ready, 300), MAX_BOOT_TIME (kvmserver
#   --max-boot-time, 240), WARMUP_READY_LIMIT (s from start to ready with -w 5, 120), REQ_TIMEOUT
#   (s per request, 60), KVMSERVER_FLAGS (extra flags before
#   "run"), E2E_LOG_DIR (copy every run's stdout/stderr there).
# Output: "PASS name", "FAIL name: reason" or "SKIP name: reason" per case ("#" lines are
# information: timings, counters), then "time: …" per group and "N passed, M failed, K skipped".
# Exit status 1 if anything failed. Needs /dev/kvm for the kvmserver halves: run it through
# tools/with-kvm (stdin is /dev/null there and /tmp private; every command has a time limit).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
RT=$here/runtimes
KVMSERVER=${KVMSERVER:-$root/build/kvmserver}
GUESTS=${GUESTS:-$root/build/guests}
PYTHON=${PYTHON:-/usr/bin/python3}
NODE=${NODE:-/usr/bin/node}
DENO=${DENO:-$root/.cache/deno/node_modules/@deno/linux-x64-glibc/deno}
DENORT_BIN=${DENORT_BIN:-}
# The counts below fit CI's 45 minutes (servers: ~12 minutes in the nested machine at these): raise them by hand.
PTHREAD_RUNS=${PTHREAD_RUNS:-4}                # the gcc-dynamic build (what runtimes link like)
SERVER_REQUESTS=${SERVER_REQUESTS:-50}          # per client thread (2) in the kvm server cases
SERVER_NATIVE_REQUESTS=${SERVER_NATIVE_REQUESTS:-100}  # per client thread (2), natively (the control)
IDENTITY_REQUESTS=${IDENTITY_REQUESTS:-50}      # per client thread (2): 100 /identity answers
SNAPSHOT_REQUESTS=${SNAPSHOT_REQUESTS:-100}     # /hits served from the snapshot file, in all (2 threads)
PTHREAD_OTHER_RUNS=${PTHREAD_OTHER_RUNS:-4}    # the static glibc and musl builds
PTHREAD_NATIVE_RUNS=${PTHREAD_NATIVE_RUNS:-2}
# test_threading (~40 % of the time) is left to PYREGR_TESTS by hand: CI's budget; threads are the
# pthread group's and node_workers' subject.
PYREGR_TESTS=${PYREGR_TESTS:-test_json test_re test_math test_struct test_hashlib test_bisect test_heapq test_string}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
KVM_TIMEOUT=${KVM_TIMEOUT:-900}
READY_TIMEOUT=${READY_TIMEOUT:-300}
MAX_BOOT_TIME=${MAX_BOOT_TIME:-240}
WARMUP_READY_LIMIT=${WARMUP_READY_LIMIT:-120}
REQ_TIMEOUT=${REQ_TIMEOUT:-60}
SERVER_TIMEOUT=${SERVER_TIMEOUT:-1800}
CLIENT_LIMIT=${CLIENT_LIMIT:-1800}
RUNTIME_READ_GRANT=${RUNTIME_READ_GRANT:---allow-read}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"
read -r -a READ_GRANT <<<"$RUNTIME_READ_GRANT"

NATIVE_ONLY=0
if [ "$KVMSERVER" = native ]; then
  NATIVE_ONLY=1
else
  case $KVMSERVER in /*) ;; *) KVMSERVER=$PWD/$KVMSERVER ;; esac
fi
case $GUESTS in /*) ;; *) GUESTS=$PWD/$GUESTS ;; esac

SELECTED=" $* "
ALL_GROUPS="python node deno pthread servers"
for a in "$@"; do
  case " $ALL_GROUPS py_stdlib pyregr node_eval node_workers deno_run deno_eval deno_workers deno_workers_jit deno_compile pthread server_c server_python server_node server_deno server_go server_go_cgo " in
    *" $a "*) ;;
    *) echo "runtimes: unknown case or group '$a' (groups: $ALL_GROUPS; see the head of $0)" >&2; exit 2 ;;
  esac
done
# enabled CASE GROUP : selected by name or group (or nothing selected).
enabled() { [ "$SELECTED" = "  " ] || [[ $SELECTED == *" $1 "* ]] || [[ $SELECTED == *" $2 "* ]]; }

. "$here/lib.sh"
e2e_init runtimes
home=$tmp/home
START_DIR=$home  # servers run in HOME, like every other run

# The guest environment, the same for both halves.
ENV_NAMES=PATH,HOME,TMPDIR,LANG,PYTHONDONTWRITEBYTECODE,DENO_DIR,DENO_NO_UPDATE_CHECK,NO_COLOR
ENVS=(PATH=/usr/bin:/bin "HOME=$home" "TMPDIR=$home/tmp" LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
      "DENO_DIR=$home/deno" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1)
# A new, empty HOME (with tmp/ and deno/) at the same path.
fresh_home() {
  chmod -R u+rwx "$home" 2>/dev/null
  rm -rf "$home"
  mkdir -p "$home/tmp" "$home/deno"
}
# kvmserver's grants for a run: KVM_GRANTS.
KVM_GRANTS=("--allow-env=$ENV_NAMES" "${READ_GRANT[@]}" "--allow-write=$home")

# ---- timing, per group and half ----
declare -A T_NATIVE T_KVM
add_time() { # native|kvm GROUP MS
  if [ "$1" = native ]; then T_NATIVE[$2]=$((${T_NATIVE[$2]:-0} + $3)); else T_KVM[$2]=$((${T_KVM[$2]:-0} + $3)); fi
}

# run PFX LIMIT CMD... : CMD in $home with stdin /dev/null, stdout/stderr to PFX.out/.err, killed
# after LIMIT seconds; sets $status and $elapsed_ms. No shell "Killed" notices.
run() {
  local pfx=$1 limit=$2 t0
  shift 2
  t0=$(now_ms)
  { (cd "$home" && exec timeout -s KILL "$limit" "$@") >"$pfx.out" 2>"$pfx.err" </dev/null; } 2>/dev/null
  status=$?
  elapsed_ms=$(($(now_ms) - t0))
}
run_native() { # PFX LIMIT CMD...
  local pfx=$1 limit=$2
  shift 2
  fresh_home
  run "$pfx" "$limit" env -i "${ENVS[@]}" "$@"
}
run_kvm() { # PFX LIMIT EXTRA-GRANTS... -- CMD...
  local pfx=$1 limit=$2
  shift 2
  local -a grants=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do grants+=("$1"); shift; done
  shift
  fresh_home
  # kvmserver's own --timeout first (exit 124, clean), the outer KILL 30 s later as a backstop.
  run "$pfx" $((limit + 30)) env -i "${ENVS[@]}" "$KVMSERVER" "${EXTRA_FLAGS[@]}" "--timeout=$limit" \
    "${KVM_GRANTS[@]}" "${grants[@]}" run -- "$@"
}

# why PFX : a short reason from a finished run.
why() {
  local w
  if [ "$status" = 137 ]; then w="killed (time limit)"
  elif [ "$status" = 124 ]; then w="exit 124 (kvmserver --timeout)"
  elif [ "$status" -gt 128 ]; then w="exit $status (signal $((status - 128)))"
  else w="exit $status"; fi
  echo "$w; stderr: $(grep -v '^$' "$1.err" 2>/dev/null | head -n 4 | tr '\n' '|' | cut -c1-400); stdout: $(head -c 200 "$1.out" 2>/dev/null | tr '\n' '|')"
}

# simple_case NAME GROUP LAST_LINE_REGEX CMD... : native must exit 0 with a last
# stdout line matching the regex; kvmserver must exit 0 with byte-identical stdout.
simple_case() {
  local name=$1 group=$2 want=$3
  shift 3
  enabled "$name" "$group" || return 0
  local -a cmd=("$@")
  if [ ! -x "${cmd[0]}" ]; then
    fail "native:$name" "missing ${cmd[0]}"
    [ "$NATIVE_ONLY" = 1 ] || fail "kvm:$name" "missing ${cmd[0]}"
    return 0
  fi
  local pfx=$tmp/$name
  run_native "$pfx.native" "$CASE_TIMEOUT" "${cmd[@]}"
  add_time native "$group" "$elapsed_ms"
  local last
  last=$(tail -n 1 "$pfx.native.out")
  if [ "$status" = 0 ] && [[ $last =~ $want ]]; then
    pass "native:$name"
    info "  $name native: $(secs "$elapsed_ms") s, $(wc -l <"$pfx.native.out") lines, last: $last"
  else
    fail "native:$name" "$(why "$pfx.native") (want a last line matching '$want')"
    return 0
  fi
  [ "$NATIVE_ONLY" = 1 ] && return 0
  run_kvm "$pfx.kvm" "$KVM_TIMEOUT" -- "${cmd[@]}"
  add_time kvm "$group" "$elapsed_ms"
  if [ -n "${KNOWN_LIMIT:-}" ]; then  # a documented limitation: it must still fail, and say so
    if [ "$status" != 0 ]; then
      xfail "kvm:$name" "$KNOWN_LIMIT ($(why "$pfx.kvm" | cut -c1-200))"
    else
      fail "kvm:$name" "passes now: drop its known-limitation marker in tests/e2e/runtimes.sh"
    fi
  elif [ "$status" != 0 ]; then
    fail "kvm:$name" "$(why "$pfx.kvm")"
  elif ! cmp -s "$pfx.native.out" "$pfx.kvm.out"; then
    fail "kvm:$name" "stdout differs from native: $(diff "$pfx.native.out" "$pfx.kvm.out" | head -n 6 | tr '\n' '|' | cut -c1-500)"
  else
    pass "kvm:$name"
    info "  $name kvmserver: $(secs "$elapsed_ms") s, stdout identical to native"
  fi
}

# =============================================================================================
python_group() {
  simple_case py_stdlib python '^ok py_stdlib$' "$PYTHON" "$RT/py_stdlib.py"
  enabled pyregr python || return 0
  local pfx=$tmp/pyregr
  local -a tests cmd
  read -r -a tests <<<"$PYREGR_TESTS"
  cmd=("$PYTHON" -m test --junit-xml "$home/junit.xml" "${tests[@]}")
  summarize() { # the --junit-xml in $home: one line of counts, then the names of tests not passed
    "$PYTHON" - "$home/junit.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    print(f"no junit xml: {e}")
    sys.exit(1)
n = {"passed": 0, "skipped": 0, "failures": 0, "errors": 0}
other = []
for tc in root.iter("testcase"):
    tags = {k.tag for k in tc}
    kind = "errors" if "error" in tags else "failures" if "failure" in tags else "skipped" if "skipped" in tags else "passed"
    n[kind] += 1
    if kind != "passed":
        other.append(f"{kind}: {tc.get('name')}")
print(f"tests={sum(n.values())} " + " ".join(f"{k}={v}" for k, v in n.items()))
print("\n".join(sorted(other)))
PYEOF
  }
  run_native "$pfx.native" $((CASE_TIMEOUT * 4)) "${cmd[@]}"
  add_time native python "$elapsed_ms"
  local native_status=$status
  summarize >"$pfx.native.sum" 2>&1
  if [ "$native_status" = 0 ] && grep -q '^Tests result: SUCCESS' "$pfx.native.out"; then
    pass "native:pyregr"
  else
    fail "native:pyregr" "$(why "$pfx.native"); $(head -n1 "$pfx.native.sum")"
  fi
  info "  pyregr native: $(secs "$elapsed_ms") s, $(grep -E '^(All )?[0-9]+ tests? (OK|failed)' "$pfx.native.out" | head -n1 | tr -d '.'): $(head -n1 "$pfx.native.sum")"
  [ "$NATIVE_ONLY" = 1 ] && return 0
  run_kvm "$pfx.kvm" $((KVM_TIMEOUT * 4)) -- "${cmd[@]}"
  add_time kvm python "$elapsed_ms"
  summarize >"$pfx.kvm.sum" 2>&1
  if [ "$status" != 0 ]; then
    fail "kvm:pyregr" "$(why "$pfx.kvm"); $(head -n1 "$pfx.kvm.sum")"
  elif ! cmp -s "$pfx.native.sum" "$pfx.kvm.sum"; then
    fail "kvm:pyregr" "results differ from native: native $(head -n1 "$pfx.native.sum"), kvmserver $(head -n1 "$pfx.kvm.sum"); $(diff "$pfx.native.sum" "$pfx.kvm.sum" | grep '^[<>]' | head -n 5 | tr '\n' '|')"
  else
    pass "kvm:pyregr"
  fi
  [ -s "$pfx.kvm.sum" ] && info "  pyregr kvmserver: $(secs "$elapsed_ms") s: $(head -n1 "$pfx.kvm.sum")"
}

node_group() {
  simple_case node_eval node '^ok node_eval$' "$NODE" -e '
const c = require("node:crypto");
console.log([1, 2, 3].map((x) => x * 2).join(","), JSON.stringify({ a: 1, b: [true, null, "é"] }));
console.log(c.createHash("sha256").update("kvmserver").digest("hex"), process.version, typeof SharedArrayBuffer);
setTimeout(() => console.log("ok node_eval"), 10);'
  simple_case node_workers node '^ok node_workers$' "$NODE" "$RT/node_workers.js"
}

deno_group() {
  if ! enabled deno_run deno && ! enabled deno_eval deno && ! enabled deno_workers deno && ! enabled deno_workers_jit deno &&
    ! enabled deno_compile deno; then return 0; fi
  if [ ! -x "$DENO" ]; then
    fail deno "no deno at $DENO: run scripts/fetch-deno.sh (or set DENO)"
    return 0
  fi
  simple_case deno_run deno '^ok deno_run$' "$DENO" run "$RT/deno_run.ts" a b
  simple_case deno_eval deno '^ok deno_eval$' "$DENO" eval '
const d = new Uint8Array(await crypto.subtle.digest("SHA-1", new TextEncoder().encode("kvmserver")));
console.log(Array.from(d, (b) => b.toString(16).padStart(2, "0")).join(""), Deno.version.deno, [3, 1, 2].sort().join());
console.log("ok deno_eval");'
  # V8 wants a 1 TB sandbox reservation; the guest's identity-mapped address space is at most 512 GB,
  # so V8 falls back to a partially reserved sandbox and cannot place a Worker isolate's JIT code
  # range. Without the JIT, Workers run (and give the same output).
  simple_case deno_workers deno '^ok deno_workers$' "$DENO" run --v8-flags=--jitless "--allow-read=$RT" "$RT/deno_workers.ts"
  KNOWN_LIMIT="V8's CodeRange for a Worker isolate does not fit the guest address space (use --v8-flags=--jitless)" \
    simple_case deno_workers_jit deno '^ok deno_workers$' "$DENO" run "--allow-read=$RT" "$RT/deno_workers.ts"

  enabled deno_compile deno || return 0
  if [ -z "$DENORT_BIN" ] || [ ! -x "$DENORT_BIN" ]; then
    skip deno_compile "needs DENORT_BIN=<denort $("$DENO" --version 2>/dev/null | head -n1 | cut -d' ' -f2) executable>: deno compile downloads denort from Deno's release site, which this machine cannot reach (the npm package has no denort)"
    return 0
  fi
  # Compile natively, into $tmp (not $home, which every run makes anew).
  local pfx=$tmp/deno_compile
  run_native "$pfx.build" "$CASE_TIMEOUT" env "DENORT_BIN=$DENORT_BIN" "$DENO" compile -o "$tmp/deno_compiled" "$RT/deno_run.ts"
  if [ "$status" != 0 ] || [ ! -x "$tmp/deno_compiled" ]; then
    fail "native:deno_compile.build" "$(why "$pfx.build")"
    return 0
  fi
  simple_case deno_compile deno '^ok deno_run$' "$tmp/deno_compiled" a b
}

pthread_group() {
  enabled pthread pthread || return 0
  local v bin i pfx want='^pthread_stress: 8 threads x 1 rounds: mutex=1000000 atomic=1000000 ring=8000 ok$' ok
  for v in gcc-dynamic gcc-static musl; do
    bin=$GUESTS/pthread_stress.$v
    if [ ! -x "$bin" ]; then
      fail "native:pthread.$v" "missing $bin (cmake --build build -j2)"
      continue
    fi
    pfx=$tmp/pthread.$v
    ok=0
    local t0
    t0=$(now_ms)
    for ((i = 1; i <= PTHREAD_NATIVE_RUNS; i++)); do
      run_native "$pfx.native" "$CASE_TIMEOUT" "$bin"
      if [ "$status" != 0 ] || ! [[ $(cat "$pfx.native.out") =~ $want ]]; then break; fi
      ok=$i
    done
    add_time native pthread $(($(now_ms) - t0))
    if [ "$ok" = "$PTHREAD_NATIVE_RUNS" ]; then
      pass "native:pthread.$v"
      info "  pthread.$v native: $PTHREAD_NATIVE_RUNS runs in $(secs $(($(now_ms) - t0))) s"
    else
      fail "native:pthread.$v" "run $((ok + 1)) of $PTHREAD_NATIVE_RUNS: $(why "$pfx.native")"
      continue
    fi
    [ "$NATIVE_ONLY" = 1 ] && continue
    ok=0
    t0=$(now_ms)
    local runs=$PTHREAD_RUNS
    [ "$v" = gcc-dynamic ] || runs=$PTHREAD_OTHER_RUNS
    for ((i = 1; i <= runs; i++)); do
      run_kvm "$pfx.kvm" "$KVM_TIMEOUT" -- "$bin"
      if [ "$status" != 0 ] || ! cmp -s "$pfx.native.out" "$pfx.kvm.out"; then break; fi
      ok=$i
    done
    add_time kvm pthread $(($(now_ms) - t0))
    if [ "$ok" = "$runs" ]; then
      pass "kvm:pthread.$v"
      info "  pthread.$v kvmserver: $runs runs in a row in $(secs $(($(now_ms) - t0))) s, each output identical to native"
    else
      fail "kvm:pthread.$v" "run $((ok + 1)) of $runs (the previous $ok were exact): $(why "$pfx.kvm")"
    fi
  done
}

# =============================================================================================
# Servers: life cycle helpers (as in tests/e2e/server.sh).
# last_stat TOPIC : kvmserver's last "kvmserver: stats: TOPIC..." line in $SLOG.err, without the prefix
# (the exit's, after a SIGUSR1 printed earlier ones).
last_stat() { grep "^kvmserver: stats: $1" "$SLOG.err" | tail -n1 | sed 's/^kvmserver: stats: //'; }
# counters CASE SENT : after the SIGINT: the request count must be SENT; prints the counters.
counters() {
  local c=$1 sent=$2 n
  n=$(stat_field requests "$SLOG.err")
  info "  $c counters: $(last_stat requests=)"
  info "  $c counters: $(last_stat 'per request: ')"
  info "  $c counters: $(last_stat workers=)"
  if [ "$n" = "$sent" ]; then
    pass "$c.stats"
  else
    fail "$c.stats" "sent $sent requests, --stats says requests=${n:-?}; stderr: $(tail_of "$SLOG.err" 6)"
  fi
}
# cost_at CASE N : the running server's "per request:" counters once it has counted exactly N
# requests (SIGUSR1 prints the stats; a request is counted when its worker has been reset, a little
# after its answer: asked again for up to ~10 s). Sets COST (the line, "" on failure, then FAIL CASE).
cost_at() {
  local c=$1 want=$2 i j lines n=''
  COST=''
  for ((i = 0; i < 20; i++)); do
    lines=$(grep -c '^kvmserver: stats: per request: ' "$SLOG.err")
    kill -USR1 "$SPID" 2>/dev/null
    for ((j = 0; j < 50; j++)); do
      [ "$(grep -c '^kvmserver: stats: per request: ' "$SLOG.err")" -gt "$lines" ] && break
      sleep 0.1
    done
    n=$(stat_field requests "$SLOG.err")
    if [ "$n" = "$want" ]; then
      COST=$(last_stat 'per request: ' | sed 's/^per request: //')
      return 0
    fi
    sleep 0.5
  done
  fail "$c" "SIGUSR1 stats never said requests=$want (last: requests=${n:-?}); stderr: $(tail_of "$SLOG.err" 4)"
  return 1
}
# cost_field NAME LINE : the number after " NAME=" (or a leading "NAME=") in a "per request:" line.
cost_field() { sed -nE "s/(^|.* )$1=([0-9.]+).*/\2/p" <<<"$2"; }
# same_cost CASE LINE_A LINE_B : PASS when vm_exits and syscalls per request agree within 10 %.
same_cost() {
  local c=$1 a=$2 b=$3 f x y bad=''
  for f in vm_exits syscalls; do
    x=$(cost_field "$f" "$a")
    y=$(cost_field "$f" "$b")
    if [ -z "$x" ] || [ -z "$y" ]; then
      bad+=" $f: not in both lines;"
    elif ! awk -v x="$x" -v y="$y" 'BEGIN { d = x - y; if (d < 0) d = -d; m = x > y ? x : y; exit !(d <= 0.1 * m) }'; then
      bad+=" $f $x vs $y;"
    fi
  done
  if [ -z "$bad" ]; then
    pass "$c"
  elif [ -n "${KNOWN_COST_DIFFERENCE:-}" ]; then
    xfail "$c" "$KNOWN_COST_DIFFERENCE; per request counters differ by more than 10 %:$bad"
  else
    fail "$c" "per request counters differ by more than 10 %:$bad"
  fi
}
# server_cmd RUNTIME PORT : SERVER_CMD, the command serving on 127.0.0.1:PORT.
server_cmd() {
  case $1 in
    c) SERVER_CMD=("$GUESTS/servers/routes_server" "$2") ;;
    python) SERVER_CMD=("$PYTHON" "$RT/py_server.py" "$2") ;;
    node) SERVER_CMD=("$NODE" "$RT/node_server.js" "$2") ;;
    deno) SERVER_CMD=("$DENO" run "--allow-net=127.0.0.1:$2" "$RT/deno_server.ts" "$2") ;;
    go) SERVER_CMD=("$GUESTS/servers/go_server" "$2") ;;
    go_cgo) SERVER_CMD=("$GUESTS/servers/go_server_cgo" "$2") ;;
  esac
}

# server_case RUNTIME
server_case() {
  local r=$1 c=server_$1 port t0 ready_re
  enabled "$c" servers || return 0
  server_cmd "$r" 0
  if [ ! -x "${SERVER_CMD[0]}" ]; then
    fail "$c" "missing ${SERVER_CMD[0]}"
    return 0
  fi

  # -- natively: works, and the global IS shared between requests (the control for isolation)
  port=$(client port)
  server_cmd "$r" "$port"
  ready_re="_server: listening on 127\\.0\\.0\\.1:$port\$"
  t0=$(now_ms)
  fresh_home
  start "$c.native" env -i "${ENVS[@]}" "${SERVER_CMD[@]}"
  if wait_ready "$ready_re"; then
    many "native:$c.requests" --port "$port" --count "$SERVER_NATIVE_REQUESTS" --threads 2 --path / --expect 'hello\n'
    expect_fetch "native:$c.set" "$port" /set/leak 'set leak\n'
    expect_fetch "native:$c.shared_global" "$port" /get 'global=leak\n'
  else
    fail "native:$c.ready" "$WHY"
  fi
  stop TERM
  add_time native servers $(($(now_ms) - t0))
  info "  $c native: $(secs $(($(now_ms) - t0))) s"
  [ "$NATIVE_ONLY" = 1 ] && return 0

  # -- kvmserver -t 2 -e: requests, isolation, identity, counters
  local kflags=(-t 2 -e --stats "--max-boot-time=$MAX_BOOT_TIME" "${KVM_GRANTS[@]}")
  port=$(client port)
  server_cmd "$r" "$port"
  t0=$(now_ms)
  fresh_home
  start "$c.kvm" env -i "${ENVS[@]}" "$KVMSERVER" "${EXTRA_FLAGS[@]}" "${kflags[@]}" "--allow-listen=127.0.0.1:$port" run -- "${SERVER_CMD[@]}"
  if wait_ready '^kvmserver: ready: '; then
    pass "kvm:$c.ready"
    info "  $c: $READY (after $(secs $(($(now_ms) - t0))) s)"
    local sent=$((2 * SERVER_REQUESTS + 1 + 4 + 4))
    many "kvm:$c.requests" --port "$port" --count "$SERVER_REQUESTS" --threads 2 --path / --expect 'hello\n'
    expect_fetch "kvm:$c.set" "$port" /set/leak 'set leak\n'
    many "kvm:$c.isolation" --port "$port" --count 4 --path /get --expect 'global=unset\n'
    many "kvm:$c.fresh_hits" --port "$port" --count 4 --path /hits --expect 'hits=1\n'
    if [ "$r" = deno ]; then
      # Deno's generator (Rust's rand) reseeds on fork only through pthread_atfork, which a reset
      # does not run: its values repeat (README, "Every request is a new process").
      distinct "kvm:$c.fresh_identity" --port "$port" --count "$IDENTITY_REQUESTS" --threads 2 --path /identity --only pid
      local out
      if out=$(client distinct --port "$port" --count 20 --path /identity --only values,uuid 2>&1); then
        pass "kvm:$c.fresh_generator"
      else
        xfail "kvm:$c.fresh_generator" "Deno's crypto.getRandomValues/randomUUID state is cloned with the template: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
      fi
      sent=$((sent + 2 * IDENTITY_REQUESTS + 20))
    elif [ "$r" != c ]; then  # every request a new process: pid, crypto generator, UUIDs (issue 10)
      distinct "kvm:$c.fresh_identity" --port "$port" --count "$IDENTITY_REQUESTS" --threads 2 --path /identity
      sent=$((sent + 2 * IDENTITY_REQUESTS))
    fi
    stop_check "kvm:$c"
    counters "kvm:$c" "$sent"
  else
    fail "kvm:$c.ready" "$WHY"
    stop KILL
  fi
  add_time kvm servers $(($(now_ms) - t0))
  info "  $c kvmserver: $(secs $(($(now_ms) - t0))) s"

  # -- --warmup: 5 requests to /hits before the template: every request then answers hits=6; the
  # template (after the warm-up) is also written to a snapshot file, served by the next phase. A
  # template kvmserver refuses to save stops the run (exit 1, one line naming what): that is
  # kvm:CASE.snapshot.written's FAIL, and the phase runs again without the file for its own checks.
  local snap=$tmp/$c.snap warm_cost='' refused='' ready=0
  local -a snapshot_flag=(--snapshot-on-ready "$snap")
  rm -f "$snap"
  while :; do
    port=$(client port)
    server_cmd "$r" "$port"
    t0=$(now_ms)
    fresh_home
    start "$c.warmup" env -i "${ENVS[@]}" "$KVMSERVER" "${EXTRA_FLAGS[@]}" "${kflags[@]}" -w 5 --warmup-path=/hits \
      "${snapshot_flag[@]}" "--allow-listen=127.0.0.1:$port" run -- "${SERVER_CMD[@]}"
    if wait_ready '^kvmserver: ready: '; then
      ready=1
      break
    fi
    refused=$(grep -m1 -F "kvmserver: $snap: " "$SLOG.err")
    [ -n "$refused" ] && [ ${#snapshot_flag[@]} -gt 0 ] || break
    stop KILL
    cp "$SLOG.err" "$tmp/$c.warmup_snapshot.err"  # kept for E2E_LOG_DIR: the retry reuses the name
    fail "kvm:$c.snapshot.written" "${refused#kvmserver: } (exit $STATUS)"
    add_time kvm servers $(($(now_ms) - t0))
    info "  $c kvmserver --warmup --snapshot-on-ready: $(secs $(($(now_ms) - t0))) s; again without --snapshot-on-ready"
    snapshot_flag=()
  done
  if [ "$ready" = 1 ]; then
    pass "kvm:$c.warmup.ready"
    local ready_ms=$(($(now_ms) - t0)) wrote
    info "  $c warmup: $READY (after $(secs "$ready_ms") s)"
    # 5 warm-up requests must not take long: a stall here once lasted until --max-boot-time.
    if [ "$ready_ms" -le $((WARMUP_READY_LIMIT * 1000)) ]; then
      pass "kvm:$c.warmup.ready_time"
    else
      fail "kvm:$c.warmup.ready_time" "ready only after $(secs "$ready_ms") s (limit WARMUP_READY_LIMIT=$WARMUP_READY_LIMIT s; --max-boot-time=$MAX_BOOT_TIME): the warm-up stalled"
    fi
    # The snapshot is written before serving starts, so before the ready line.
    wrote=$(grep -m1 '^kvmserver: snapshot: wrote ' "$SLOG.err")
    if [ ${#snapshot_flag[@]} = 0 ]; then
      :  # refused above
    elif [ -n "$wrote" ] && [ -s "$snap" ]; then
      pass "kvm:$c.snapshot.written"
      info "  $c warmup: ${wrote#kvmserver: }"
    else
      fail "kvm:$c.snapshot.written" "no 'kvmserver: snapshot: wrote' line or no $snap ($(stat -c %s "$snap" 2>/dev/null || echo missing)); stderr: $(tail_of "$SLOG.err" 6)"
    fi
    many "kvm:$c.warmup.hits" --port "$port" --count 5 --threads 2 --path /hits --expect 'hits=6\n'
    # The per request counters of these 10 /hits alone, for the snapshot phase's comparison.
    cost_at "kvm:$c.warmup.hits_counters" 10 && warm_cost=$COST
    expect_fetch "kvm:$c.warmup.set" "$port" /set/leak 'set leak\n'
    many "kvm:$c.warmup.isolation" --port "$port" --count 4 --path /get --expect 'global=unset\n'
    stop_check "kvm:$c.warmup"
    counters "kvm:$c.warmup" $((10 + 1 + 4))
  else
    fail "kvm:$c.warmup.ready" "$WHY"
    stop KILL
  fi
  add_time kvm servers $(($(now_ms) - t0))
  info "  $c kvmserver --warmup: $(secs $(($(now_ms) - t0))) s"

  # -- serve the snapshot the --warmup phase wrote
  snapshot_phase "$r" "$snap" "$warm_cost"
  rm -f "$snap"
}

# start_serve NAME PORT SERVE-FLAGS... : `kvmserver serve` of the snapshot $snap (from snapshot_phase)
# with its listeners moved to 127.0.0.1:PORT, in the same environment and HOME path as the run that
# wrote it (the guest's environment is in the snapshot: no --allow-env, and no grants: the recorded
# ones apply).
start_serve() {
  local name=$1 port=$2
  shift 2
  start "$name" env -i "${ENVS[@]}" "$KVMSERVER" serve "$snap" "${EXTRA_FLAGS[@]}" "$@" "--listen=127.0.0.1:$port"
}

# snapshot_phase RUNTIME SNAP WARMUP_COST : `kvmserver serve SNAP -t 2 -e --stats` on a new port: no
# start-up, every request answers as the warmed-up template does (hits=6) and starts from it
# (isolation, a new pid per request); the per request counters of SNAPSHOT_REQUESTS /hits must be
# those of the --warmup phase's 10 /hits (WARMUP_COST). c: a second serve of the same file at the
# same time, on its own port, independent of the first.
snapshot_phase() {
  local r=$1 snap=$2 warm_cost=$3 c=server_$1 port t0
  if [ ! -s "$snap" ]; then
    skip "kvm:$c.snapshot" "no snapshot file from the --warmup phase: see kvm:$c.snapshot.written"
    return 0
  fi
  port=$(client port)
  t0=$(now_ms)
  fresh_home
  start_serve "$c.snapshot" "$port" -t 2 -e --stats
  if wait_ready '^kvmserver: ready: '; then
    pass "kvm:$c.snapshot.ready"
    info "  $c snapshot: $(grep -m1 ': grants ' "$SLOG.err" | sed 's/^kvmserver: //')"
    info "  $c snapshot: $(grep -m1 ': loaded in ' "$SLOG.err" | sed 's/^kvmserver: //')"
    info "  $c snapshot: $READY (after $(secs $(($(now_ms) - t0))) s)"
    local half=$((SNAPSHOT_REQUESTS / 2)) sent
    sent=$((2 * half))
    many "kvm:$c.snapshot.hits" --port "$port" --count "$half" --threads 2 --path /hits --expect 'hits=6\n'
    if cost_at "kvm:$c.snapshot.hits_counters" "$sent"; then
      info "  $c per request, --warmup phase, 10 /hits:    ${warm_cost:-?}"
      info "  $c per request, snapshot serve, $sent /hits: $COST"
      if [ -n "$warm_cost" ]; then
        # Node's HTTP server checks its connections every 30 s, and this serve starts more than
        # 30 s after the template paused: before each request's clock started at the pause (README
        # "Timers of a paused template"), every request ran that overdue check (~10x the syscalls:
        # 106 vs 11 exits). What differs since is timing, not the snapshot: Node arms timers a
        # request's own work runs into (epoll_pwait with 685 ms, expired in every traced request in
        # the nested machine), so a request's count follows its duration. Traced side by side
        # (2026-12-05, nested, -t 1, 6 /hits each, KVMS_TRACE=1 lines counted between
        # requests): after a boot 18.7 syscalls and 13.0 exits per request, from the snapshot 17.0 and
        # 12.0, the same calls in the same order; with this suite's 2 workers and 2 client threads
        # on a loaded machine the two phases have measured 16.9 vs 20.4.
        KNOWN_COST_DIFFERENCE=$(case $r in
          node) echo "Node's timers run into its requests: a request's syscalls follow its duration, which the nested machine varies (traced serially: the same calls after a boot and from the snapshot)" ;;
          go*) echo "Go's runtime makes time-driven syscalls (sysmon's sleeps, preemption signals): a request's count follows its duration, which the nested machine varies" ;;
        esac) \
          same_cost "kvm:$c.snapshot.same_counters" "$warm_cost" "$COST"
      else
        fail "kvm:$c.snapshot.same_counters" "no counters from the --warmup phase to compare with"
      fi
    fi
    expect_fetch "kvm:$c.snapshot.set" "$port" /set/leak 'set leak\n'
    many "kvm:$c.snapshot.isolation" --port "$port" --count 4 --path /get --expect 'global=unset\n'
    sent=$((sent + 1 + 4))
    if [ "$r" != c ]; then  # every request a new process (Deno's generator values: see the kvm phase)
      # 20 suffice here: the kvm phase shows it at scale; this shows a loaded template resets pids too.
      distinct "kvm:$c.snapshot.fresh_identity" --port "$port" --count 10 --threads 2 --path /identity --only pid
      sent=$((sent + 2 * 10))
    else
      second_serve "$c" "$port"
      sent=$((sent + SENT_TO_FIRST))
    fi
    stop_check "kvm:$c.snapshot"
    counters "kvm:$c.snapshot" "$sent"
  else
    fail "kvm:$c.snapshot.ready" "$WHY"
    stop KILL
  fi
  add_time kvm servers $(($(now_ms) - t0))
  info "  $c kvmserver serve (snapshot): $(secs $(($(now_ms) - t0))) s"
}

# second_serve CASE PORT : while the snapshot is served (ephemerally) on PORT, serves the same file
# again on another port, persistently with one worker (its state carries over from one connection to
# the next: the control that makes "independent" mean something). Sets SENT_TO_FIRST (the requests
# it sent PORT: 2 x 10 /hits, /get and /set/other; none if the second was not ready). Leaves
# $SPID/$SLOG/$SWATCH as they were.
second_serve() {
  local c=$1 port=$2 port2 first=("$SPID" "$SLOG" "$SWATCH") p1 p2 rc1 rc2 got
  SENT_TO_FIRST=0
  port2=$(client port)
  start_serve "$c.snapshot2" "$port2" -t 1 --stats
  if wait_ready '^kvmserver: ready: '; then
    pass "kvm:$c.snapshot2.ready"
    # At the same time: 2 x 10 /hits on the first (each hits=6) and 3 in a row on the second (its own
    # count goes on: 6, 7, 8, whatever the first serves).
    client many --timeout "$REQ_TIMEOUT" --port "$port" --count 10 --threads 2 --path /hits --expect 'hits=6\n' >"$tmp/$c.pair1" 2>&1 &
    p1=$!
    (for _ in 1 2 3; do client fetch --timeout "$REQ_TIMEOUT" --port "$port2" /hits 2>/dev/null; done) >"$tmp/$c.pair2" &
    p2=$!
    wait "$p1"
    rc1=$?
    wait "$p2"
    rc2=$?
    got=$(paste -sd' ' "$tmp/$c.pair2")
    SENT_TO_FIRST=$((2 * 10 + 2))
    if [ "$rc1" = 0 ] && [ "$got" = "hits=6 hits=7 hits=8" ]; then
      pass "kvm:$c.snapshot2.concurrent_hits"
      info "  $c two serves of one file at once: first $(head -n1 "$tmp/$c.pair1"); second: $got"
    else
      fail "kvm:$c.snapshot2.concurrent_hits" "first (want hits=6 each): exit $rc1, $(tr '\n' ' ' <"$tmp/$c.pair1" | cut -c1-400); second (want hits=6 hits=7 hits=8): exit $rc2, '$got'; stderr: $(tail_of "$SLOG.err" 4)"
    fi
    expect_fetch "kvm:$c.snapshot2.set" "$port2" /set/leak 'set leak\n'
    expect_fetch "kvm:$c.snapshot2.keeps_state" "$port2" /get 'global=leak\n'
    expect_fetch "kvm:$c.snapshot2.independent" "$port" /get 'global=unset\n'
    expect_fetch "kvm:$c.snapshot.set_other" "$port" /set/other 'set other\n'
    expect_fetch "kvm:$c.snapshot2.independent_back" "$port2" /get 'global=leak\n'
    stop_check "kvm:$c.snapshot2"
    counters "kvm:$c.snapshot2" $((3 + 1 + 1 + 1))
  else
    fail "kvm:$c.snapshot2.ready" "$WHY"
    stop KILL
  fi
  SPID=${first[0]} SLOG=${first[1]} SWATCH=${first[2]}
}

servers_group() {
  server_case c
  server_case python
  server_case node
  server_case go
  server_case go_cgo
  [ -x "$DENO" ] || { enabled server_deno servers && fail server_deno "no deno at $DENO: run scripts/fetch-deno.sh (or set DENO)"; return 0; }
  server_case deno
}

# =============================================================================================
info "kvmserver: $KVMSERVER"
info "python: $PYTHON ($("$PYTHON" --version 2>&1)), node: $NODE ($("$NODE" --version 2>&1)), deno: $DENO ($("$DENO" --version 2>/dev/null | head -n1))"
if [ "$NATIVE_ONLY" = 0 ] && [ ! -x "$KVMSERVER" ]; then
  fail kvmserver "not found or not executable: $KVMSERVER (use KVMSERVER=native for the native halves only)"
  NATIVE_ONLY=1
fi
[ "$NATIVE_ONLY" = 0 ] && [ ! -c /dev/kvm ] && info "no /dev/kvm here: the kvmserver halves will fail; run me through tools/with-kvm"
total_t0=$(now_ms)
python_group
node_group
deno_group
pthread_group
servers_group
for g in $ALL_GROUPS; do
  [ -n "${T_NATIVE[$g]:-}${T_KVM[$g]:-}" ] || continue
  echo "time: $g native $(secs "${T_NATIVE[$g]:-0}") s, kvmserver $(secs "${T_KVM[$g]:-0}") s"
done
echo "time: total $(secs $(($(now_ms) - total_t0))) s"
e2e_summary

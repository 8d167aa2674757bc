#!/usr/bin/env bash
# The reference's benchmark tables, reproduced (issue 13), in one command:
#   1. the three reference programs under load (wrk), natively and under kvmserver: latency rows as in
#      the reference, with kvmserver's per-request counters beside them, and a memory table;
#   2. kvmserver's host-side costs, timed natively (bench/host_costs.sh), and a chart of them;
#   3. bench/estimate.md: what the counters of 1 and the host costs of 2 come to on hardware, an
#      estimate labelled as one (bench/estimate.py).
# Where /dev/kvm is real (the VM kind kvmserver runs on), the latency columns are measured. Elsewhere
# part 1 runs in the nested machine (tools/with-kvm: QEMU TCG, ~15x slower, exits 30-100x dearer):
# its counters and memory columns hold, and every timing column reads "nested: not a figure".
#
#   bench/run.sh [BUILD_DIR]      (default build)
# Environment:
#   PROGRAMS   which programs (default "c deno_hello react")
#   WARMUP     warm-up requests before measuring, as in the reference (default 1000)
#   DURATION   seconds of load per row (default 10; in the nested machine NESTED_DURATION, default 3)
#   OUT        the results file (default bench/results/<hostname>-<date>.md)
# Programs (the reference's roles):
#   c           tests/guests/servers/accept_server: static C, blocking accept loop, always closes
#               (the reference's "Rust minimal http server")
#   deno_hello  bench/programs/deno_hello.ts, Deno.serve (the reference's "Deno helloworld")
#   react       bench/programs/react_ssr.js, React's renderToString of a ~30 KB page per request
#               (react and react-dom 18.3.1 from npm into .cache/bench/react)
# Deno runs with --v8-flags=--predictable (all work on the main thread), as in the reference.
# Load generator: wrk (Debian's package): it keeps the given number of connections busy, reconnects
# after every "Connection: close" response, and reports a latency distribution (avg, p50, p90, p99)
# from the request's first byte to the response's last; a connection's set-up is not in it.
# Rows: base (reusing connection) and base are the program natively; kvmserver threads=1 is
# persistent (-t 1); ephemeral threads=N is -t N -e with N connections; "threads=2 no tail" is -t 2
# -e with one connection, so a request never waits for the reset of the previous one (the reset is
# the tail of a request, after its response has gone).
set -u
cd "$(dirname "$0")/.."
root=$PWD
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$root/$BUILD ;; esac
KVMSERVER=${KVMSERVER:-$BUILD/kvmserver}
C_SERVER=$BUILD/guests/servers/accept_server
DENO=${DENO:-$root/.cache/deno/node_modules/@deno/linux-x64-glibc/deno}
REACT_DIR=$root/.cache/bench/react
PROGRAMS=${PROGRAMS:-c deno_hello react}
WARMUP=${WARMUP:-1000}
. bench/lib.sh

die() { echo "bench/run.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- part 1, where KVM works
# program_cmd NAME PORT : CMD (the server's command line), KVM_FLAGS (its grants), ENVS.
program_cmd() {
  local home=$WORK/home
  ENVS=(PATH=/usr/bin:/bin "HOME=$home" "TMPDIR=$home/tmp" LANG=C.UTF-8 "DENO_DIR=$home/deno" DENO_NO_UPDATE_CHECK=1 NO_COLOR=1)
  local env_names=PATH,HOME,TMPDIR,LANG,DENO_DIR,DENO_NO_UPDATE_CHECK,NO_COLOR
  KVM_FLAGS=()
  case $1 in
    c) CMD=("$C_SERVER" "$2") ;;
    deno_hello)
      CMD=("$DENO" run --v8-flags=--predictable "--allow-net=127.0.0.1:$2" "$root/bench/programs/deno_hello.ts" "$2")
      KVM_FLAGS=(--allow-read "--allow-write=$home" "--allow-env=$env_names") ;;
    react)
      ENVS+=(NODE_ENV=production)
      CMD=("$DENO" run --v8-flags=--predictable "--allow-net=127.0.0.1:$2" "--allow-read=$REACT_DIR" --allow-env=NODE_ENV
           "$root/bench/programs/react_ssr.js" "$2" "$REACT_DIR")
      KVM_FLAGS=(--allow-read "--allow-write=$home" "--allow-env=$env_names,NODE_ENV") ;;
  esac
}

# wait_port PORT PID : until PORT accepts (or PID died: 1).
wait_port() {
  local i
  for ((i = 0; i < 1200; i++)); do
    kill -0 "$2" 2>/dev/null || return 1
    $PY -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1).close()' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# load PORT CONNECTIONS close|reuse : wrk for $DURATION s; prints "avg p50 p90 p99 rps requests" (µs).
load() {
  local hdr=()
  [ "$3" = close ] && hdr=(-H "Connection: close")
  wrk -t1 -c"$2" -d"${DURATION}s" --latency "${hdr[@]}" "http://127.0.0.1:$1/" >"$WORK/wrk.out" 2>&1 ||
    { echo "- - - - - 0"; return; }
  $PY - "$WORK/wrk.out" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
def us(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
avg = us(re.search(r"Latency\s+(\S+)", text).group(1))
pct = {p: us(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
n = int(re.search(r"(\d+) requests in", text).group(1))
print(f"{avg:.0f} {pct['50']:.0f} {pct['90']:.0f} {pct['99']:.0f} {rps:.0f} {n}")
PYEOF
}

# row PROGRAM NAME native|kvm CONNECTIONS close|reuse [KVMSERVER FLAGS...] : one table row on stdout
# and its counters as a JSON line in $WORK/counters.jsonl.
row() {
  local prog=$1 name=$2 how=$3 conns=$4 conn=$5
  shift 5
  local port pid err=$WORK/server.err
  port=$(free_port)
  program_cmd "$prog" "$port"
  rm -rf "$WORK/home"
  mkdir -p "$WORK/home/tmp" "$WORK/home/deno"
  if [ "$how" = native ]; then
    (cd "$WORK/home" && exec env -i "${ENVS[@]}" "${CMD[@]}") </dev/null >/dev/null 2>"$err" &
    pid=$!
    wait_port "$port" "$pid" || { echo "| $name | did not start: $(tail -c 200 "$err" | tr '\n' ' ') |"; return; }
    get "$port" "$WARMUP"  # the native rows' warm-up (kvmserver's is --warmup)
  else
    (cd "$WORK/home" && exec env -i "${ENVS[@]}" "$KVMSERVER" --stats --max-boot-time=600 "--warmup=$WARMUP" "$@" \
       "${KVM_FLAGS[@]}" "--allow-listen=127.0.0.1:$port" run -- "${CMD[@]}") </dev/null >/dev/null 2>"$err" &
    pid=$!
    local i
    for ((i = 0; i < 12000; i++)); do
      grep -q '^kvmserver: ready:' "$err" && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    grep -q '^kvmserver: ready:' "$err" || { echo "| $name | did not start: $(tail -c 300 "$err" | tr '\n' ' ') |"; kill -KILL "$pid" 2>/dev/null; return; }
  fi
  local avg p50 p90 p99 rps n
  read -r avg p50 p90 p99 rps n <<<"$(load "$port" "$conns" "$conn")"
  kill -INT "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ "$NESTED" = 1 ]; then
    avg="nested: not a figure" p50=$avg p90=$avg p99=$avg rps=$avg
  else
    avg="$avg µs" p50="$p50 µs" p90="$p90 µs" p99="$p99 µs"
  fi
  field() { grep -E "^kvmserver: stats:.*[ (]$1=" "$err" | tail -n1 | sed -E "s/.*[ (]$1=([0-9.]+).*/\\1/"; }
  local ex sc exc intr oth sys pr bytes kc tr tf trc tm
  ex=$(field vm_exits) sc=$(field syscall) exc=$(field exception) intr=$(field interrupted) oth=$(field other)
  sys=$(field syscalls) pr=$(field pages_reset) bytes=$(field bytes_copied) kc=$(field kvm_calls)
  tr=$(field template_resident_kib) tf=$(field template_fds) trc=$(field template_files_recreated) tm=$(field template_mappings)
  if [ "$how" = kvm ]; then
    echo "| $name | $avg | $p50 | $p90 | $p99 | $n | ${ex:--} (${sc:--} / ${exc:--} / ${intr:--} / ${oth:--}) | ${sys:--} | ${pr:--} | ${bytes:--} | ${kc:--} |"
  else
    echo "| $name | $avg | $p50 | $p90 | $p99 | $n | - | - | - | - | - |"
  fi
  echo "{\"program\": \"$prog\", \"row\": \"$name\", \"how\": \"$how\", \"requests\": ${n:-0}, \"p50_us\": \"${p50% µs}\", \"vm_exits\": ${ex:-null}, \"exits_syscall\": ${sc:-null}, \"exits_exception\": ${exc:-null}, \"exits_interrupted\": ${intr:-null}, \"exits_other\": ${oth:-null}, \"syscalls\": ${sys:-null}, \"pages_reset\": ${pr:-null}, \"bytes_copied\": ${bytes:-null}, \"kvm_calls\": ${kc:-null}, \"template_resident_kib\": ${tr:-null}, \"template_fds\": ${tf:-null}, \"template_files_recreated\": ${trc:-null}, \"template_mappings\": ${tm:-null}}" >>"$WORK/counters.jsonl"
}

title() {
  case $1 in
    c) echo "Minimal C HTTP server (the reference's \"Rust minimal http server\"; always closes)" ;;
    deno_hello) echo "Deno hello (Deno.serve)" ;;
    react) echo "Deno React renderer (renderToString, ~30 KB page)" ;;
  esac
}

load_part() {
  NESTED=0
  [ "${WITH_KVM_MACHINE:-host}" = nested ] && NESTED=1
  [ "$NESTED" = 1 ] && DURATION=${NESTED_DURATION:-3} || DURATION=${DURATION:-10}
  : >"$WORK/counters.jsonl"
  local p
  for p in $PROGRAMS; do
    local t0=$SECONDS
    echo "### $(title "$p")"
    echo
    echo "| name | average | p50 | p90 | p99 | requests measured | VM exits/request (syscall / exception / interrupted / other) | syscalls/request | pages reset/request | bytes copied/request | KVM ioctls/request |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    [ "$p" = c ] || row "$p" "base (reusing connection)" native 1 reuse
    row "$p" "base" native 1 close
    row "$p" "kvmserver threads=1" kvm 1 close -t 1
    row "$p" "kvmserver ephemeral threads=1" kvm 1 close -t 1 -e
    row "$p" "kvmserver ephemeral threads=2" kvm 2 close -t 2 -e
    row "$p" "kvmserver ephemeral threads=4" kvm 4 close -t 4 -e
    row "$p" "kvmserver ephemeral threads=2 no tail" kvm 1 close -t 2 -e
    echo
    echo "($((SECONDS - t0)) s for this table)" >&2
  done
}

if [ "${BENCH_PART:-}" = load ]; then  # inside tools/with-kvm (or directly, where /dev/kvm is real)
  WORK=$BENCH_WORK
  load_part >"$WORK/load.md"
  exit 0
fi

# ---------------------------------------------------------------- on this host
command -v wrk >/dev/null || die "needs wrk (apt-get install wrk; scripts/setup.sh installs it)"
[ -x "$KVMSERVER" ] || die "no $KVMSERVER (build first: cmake --build $BUILD)"
for p in $PROGRAMS; do
  case $p in
    c) [ -x "$C_SERVER" ] || die "no $C_SERVER (cmake --build $BUILD)" ;;
    deno_hello | react) [ -x "$DENO" ] || die "no deno at $DENO (scripts/fetch-deno.sh)" ;;
    *) die "unknown program '$p' (c, deno_hello, react)" ;;
  esac
done
if [[ " $PROGRAMS " == *" react "* ]] && [ ! -d "$REACT_DIR/node_modules/react-dom" ]; then
  mkdir -p "$REACT_DIR"
  echo '{"private": true}' >"$REACT_DIR/package.json"
  (cd "$REACT_DIR" && npm install --no-audit --no-fund --silent react@18.3.1 react-dom@18.3.1) ||
    die "cannot install react from npm into $REACT_DIR"
fi
OUT=${OUT:-bench/results/$(hostname)-$(date +%F).md}
mkdir -p "$(dirname "$OUT")"
WORK=$root/.cache/bench/run-$$  # in the project tree: the nested machine sees it
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
t_start=$SECONDS

# KVM kind: real (a hardware hypervisor's kvm_intel/kvm_amd), kvm_pvm (cannot run our guest), none.
kvm_kind=none
if [ -e /dev/kvm ]; then
  if [ -d /sys/module/kvm_pvm ]; then kvm_kind="kvm_pvm (not usable: its guests' syscalls land in ring 3)"
  elif [ -d /sys/module/kvm_intel ]; then kvm_kind="kvm_intel"
  elif [ -d /sys/module/kvm_amd ]; then kvm_kind="kvm_amd"
  else kvm_kind="present (kind unknown)"; fi
fi

echo "part 2: host-side costs, natively (bench/host_costs.sh) ..." >&2
chart=${OUT%.md}.png
t0=$SECONDS
JSON_OUT=$WORK/host_costs.json CHART=$chart bench/host_costs.sh "$BUILD" >"$WORK/host_costs.md" 2>"$WORK/host_costs.err" ||
  die "bench/host_costs.sh failed: $(tail -c 300 "$WORK/host_costs.err")"
t_host=$((SECONDS - t0))

echo "part 1: the programs under load ..." >&2
t0=$SECONDS
load_seconds=${NESTED_DURATION:-3}
case $kvm_kind in kvm_intel | kvm_amd) load_seconds=${DURATION:-10} ;; esac
case $kvm_kind in
  kvm_intel | kvm_amd) where="this host's /dev/kvm ($kvm_kind): timings are measured"
    BENCH_PART=load BENCH_WORK=$WORK WARMUP=$WARMUP PROGRAMS=$PROGRAMS bench/run.sh "$BUILD" || die "the load part failed" ;;
  *) where="the nested machine (tools/with-kvm, QEMU TCG emulating AMD SVM; this host's KVM: $kvm_kind): timings are not figures"
    WITH_KVM_NESTED=1 tools/with-kvm env BENCH_PART=load BENCH_WORK="$WORK" WARMUP="$WARMUP" PROGRAMS="$PROGRAMS" \
      ${NESTED_DURATION:+NESTED_DURATION=$NESTED_DURATION} bench/run.sh "$BUILD" || die "the load part failed in the nested machine" ;;
esac
t_load=$((SECONDS - t0))

echo "part 3: the estimate (bench/estimate.py) ..." >&2
$PY bench/estimate.py "$WORK/counters.jsonl" "$WORK/host_costs.json" "$kvm_kind" >bench/estimate.md ||
  die "bench/estimate.py failed"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
  echo "# kvmserver benchmarks on $(hostname), $(date +%F)"
  echo
  echo "- machine: $cpu, $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB; $(command -v systemd-detect-virt >/dev/null && systemd-detect-virt 2>/dev/null || echo '?') virtualization"
  echo "- kernel: $(uname -srm); KVM: $kvm_kind"
  echo "- kvmserver $("$KVMSERVER" --version 2>/dev/null | head -n1) ($(git rev-parse --short HEAD 2>/dev/null)), built $(grep -m1 '^CMAKE_BUILD_TYPE:' "$BUILD/CMakeCache.txt" 2>/dev/null | cut -d= -f2)"
  echo "- deno $("$DENO" --version 2>/dev/null | head -n1 | cut -d' ' -f2), react 18.3.1, $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1,2)"
  echo "- programs under load ran in: $where"
  echo "- $WARMUP warm-up requests before each row; wrk -t1 for $load_seconds s per row (connections: 1, or N for threads=N)"
  echo
  echo "## 1. The reference's tables"
  echo
  echo "Counters are per request served (warm-up excluded), from kvmserver --stats. Reference"
  echo "(kvmserver on TinyKVM, Ryzen 9 7950X): see ../shared/seeds/kvmserver-readme.txt and bench/estimate.md."
  echo
  cat "$WORK/load.md"
  echo "## Memory"
  echo
  $PY - "$WORK/counters.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = {"c": ("9 MB", 68), "deno_hello": ("102 MB", 452), "react": ("162 MB", 2324)}
names = {"c": "Minimal C HTTP server", "deno_hello": "Deno hello", "react": "Deno React renderer"}
print("| program | template RSS | reset per request | reference RSS | reference reset | reset vs reference |")
print("| --- | --- | --- | --- | --- | --- |")
for prog in ["c", "deno_hello", "react"]:
    r = next((r for r in rows if r["program"] == prog and r["row"] == "kvmserver ephemeral threads=1"), None)
    if not r or r["pages_reset"] is None:
        continue
    reset_kb = r["pages_reset"] * 4
    rss = r["template_resident_kib"]
    print(f"| {names[prog]} | {rss / 1024:.1f} MiB | {reset_kb:.0f} KiB ({r['pages_reset']:.1f} pages) | {ref[prog][0]} | {ref[prog][1]} KB | {reset_kb / ref[prog][1]:.2f}x |")
print()
print("Template RSS: the paused template's guest memory after warm-up (shared by every worker).")
print("Reset per request: pages a request wrote, restored by the reset (kvmserver ephemeral threads=1).")
PYEOF
  echo
  echo "## 2. kvmserver's host-side costs, natively"
  echo
  cat "$WORK/host_costs.md"
  [ -f "$chart" ] && { echo; echo "Chart of reset time vs dirty pages and worker creation vs template size: $(basename "$chart"),"; echo "written beside this file by the run (a generated image: not committed)."; }
  echo
  echo "## 3. Estimate for hardware"
  echo
  echo "See [bench/estimate.md](../estimate.md) (generated by this run)."
  echo
  echo "Time: part 1 ${t_load} s, part 2 ${t_host} s, all $((SECONDS - t_start)) s."
} >"$OUT"
cat "$OUT"
echo >&2
echo "bench/run.sh: wrote $OUT$([ -f "$chart" ] && echo " and $chart") and bench/estimate.md" >&2

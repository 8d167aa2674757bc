# Shared helpers of the end-to-end scripts (server.sh, runtimes.sh, limits.sh, ...): results,
# a private temporary directory, background servers and their life cycle, and HTTP checks through
# tests/e2e/http_client.py. Source it after setting the script's own defaults:
#
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$here/lib.sh"
#   e2e_init NAME          # $tmp, cleanup on exit, CLIENT
#   ...
#   e2e_summary            # "N passed, M failed[, ...]"; the script's status
#
# Variables the helpers read: PYTHON, SERVER_TIMEOUT (s any server may live, default 900),
# READY_TIMEOUT (s until ready, default 120), STOP_TIMEOUT (s to exit after a signal, default 30),
# REQ_TIMEOUT (s per request, default 30), CLIENT_LIMIT (s per client command, default 900),
# E2E_LOG_DIR (copy every run's stdout/stderr there), START_DIR (servers' working directory).

if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
SERVER_TIMEOUT=${SERVER_TIMEOUT:-900}
READY_TIMEOUT=${READY_TIMEOUT:-120}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
REQ_TIMEOUT=${REQ_TIMEOUT:-30}
E2E_LOG_DIR=${E2E_LOG_DIR:-}

# ---- results ----
passed=0 failed=0 skipped=0 xfailed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
xfail() { echo "XFAIL $1: $2"; xfailed=$((xfailed + 1)); }
info() { echo "# $*"; }
e2e_summary() {
  local line="$passed passed, $failed failed"
  [ "$skipped" = 0 ] || line+=", $skipped skipped"
  [ "$xfailed" = 0 ] || line+=", $xfailed known limitations (XFAIL)"
  echo "$line"
  [ "$failed" = 0 ]
}

# ---- one-shot commands ----
# check CASE EXPECTED_STATUS STDERR_REGEX(or "") -- COMMAND... : runs COMMAND (60 s at most); PASS
# when it exits EXPECTED_STATUS and its stderr matches the extended regex (and, for a failure with a
# pattern, is one line unless ONE_LINE=0: errors are one line). Sets LAST_OUT and LAST_ERR.
check() {
  local name=$1 want=$2 pattern=$3 status why=""
  shift 4
  LAST_OUT=$(timeout -k 10 60 "$@" 2>"$tmp/check.err")  # -k: a process that ignores SIGTERM must not hang the suite
  status=$?
  LAST_ERR=$(cat "$tmp/check.err")
  [ "$status" = "$want" ] || why="status $status, expected $want"
  if [ -n "$pattern" ] && ! grep -Eq -- "$pattern" <<<"$LAST_ERR"; then
    why="${why:+$why; }stderr does not match /$pattern/: $(head -c 300 <<<"$LAST_ERR" | tr '\n' '|')"
  fi
  if [ "$want" != 0 ] && [ -n "$pattern" ] && [ "${ONE_LINE:-1}" = 1 ] && [ "$(grep -c . <<<"$LAST_ERR")" -gt 1 ]; then
    why="${why:+$why; }more than one stderr line: $(tr '\n' '|' <<<"$LAST_ERR")"
  fi
  if [ -z "$why" ]; then pass "$name"; else fail "$name" "$why"; fi
}

# ---- time ----
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }

# ---- the temporary directory and background processes ----
BG_PIDS=()
e2e_cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "$E2E_LOG_DIR" ]; then
    mkdir -p "$E2E_LOG_DIR" && cp "$tmp"/*.out "$tmp"/*.err "$E2E_LOG_DIR"/ 2>/dev/null
  fi
  chmod -R u+rwx "$tmp" 2>/dev/null
  rm -rf "$tmp"
}
# e2e_init NAME : $tmp (a new private directory, removed on exit with everything started here).
e2e_init() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvms-$1.XXXXXX")
  tmp=$(cd "$tmp" && pwd -P)
  trap e2e_cleanup EXIT
  trap 'exit 130' INT TERM
  CLIENT=("$PYTHON" "$E2E_LIB_DIR/http_client.py")
}
E2E_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# e2e_binaries [KVMSERVER [GUESTS]] : absolute KVMSERVER and GUESTS from the script's arguments,
# else the environment, else build/.
e2e_binaries() {
  KVMSERVER=$(realpath "${1:-${KVMSERVER:-$E2E_LIB_DIR/../../build/kvmserver}}")
  GUESTS=$(realpath "${2:-${GUESTS:-$E2E_LIB_DIR/../../build/guests}}")
}

# The last lines of a log file, on one line.
tail_of() { tail -n "${2:-6}" "$1" 2>/dev/null | tr '\n' '|' | cut -c1-"${3:-700}"; }

# ---- servers ----
# Runs a client command with a hard time limit (the client bounds each request itself as well).
client() { timeout -s KILL "${CLIENT_LIMIT:-900}" "${CLIENT[@]}" "$@"; }
free_port() { client port; }

# alive PID : the process exists and is not a zombie (kill -0 succeeds on an unreaped child).
alive() {
  local st
  st=$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# start NAME CMD... : starts CMD in the background (in START_DIR if set; stdin /dev/null,
# stdout/stderr to $tmp/NAME.out/.err) with SIGINT/SIGQUIT/SIGPIPE at their defaults (a background
# job of a non-interactive shell would otherwise ignore SIGINT), plus a watchdog that kills it after
# SERVER_TIMEOUT. Sets SPID, SLOG (the path prefix) and SWATCH.
start() {
  local name=$1
  shift
  SLOG=$tmp/$name
  (cd "${START_DIR:-.}" && exec "$PYTHON" -c 'import os, signal, sys
for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE): signal.signal(s, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' "$@") </dev/null >"$SLOG.out" 2>"$SLOG.err" &
  SPID=$!
  BG_PIDS+=("$SPID")
  (sleep "$SERVER_TIMEOUT" && kill -KILL "$SPID") >/dev/null 2>&1 &
  SWATCH=$!
  BG_PIDS+=("$SWATCH")
}

# start_kvm NAME KVMSERVER-FLAGS... -- PROGRAM ARGS... : start under $KVMSERVER (with the
# script's EXTRA_FLAGS first).
start_kvm() {
  local name=$1
  shift
  local -a flags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  start "$name" "$KVMSERVER" "${EXTRA_FLAGS[@]}" "${flags[@]}" run -- "$@"
}

# wait_ready [PATTERN] : waits until the server's stderr has a "kvmserver: ready:" line (or, with
# PATTERN, a line matching that extended regex on stdout+stderr), it exits, or READY_TIMEOUT.
# Sets READY (the line) and WHY (the reason on failure); returns 0 when ready.
wait_ready() {
  local pattern=${1:-'^kvmserver: ready: '} i
  READY=''
  WHY=''
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    READY=$(grep -h -m1 -E "$pattern" "$SLOG.err" "$SLOG.out" 2>/dev/null | head -n1)
    [ -n "$READY" ] && return 0
    if ! alive "$SPID"; then
      wait "$SPID" 2>/dev/null
      WHY="exited with status $? before it was ready; stderr: $(tail_of "$SLOG.err" 8)"
      return 1
    fi
    sleep 0.1
  done
  WHY="not ready after ${READY_TIMEOUT}s; stderr: $(tail_of "$SLOG.err" 8)"
  return 1
}

# stop [SIGNAL] : sends SIGNAL (default INT) and waits up to STOP_TIMEOUT for the exit; then
# SIGKILL. Sets STATUS (exit status, or "timeout" when it had to be killed) and STOP_SECONDS.
stop() {
  local sig=${1:-INT} i t0
  t0=$(date +%s%N)
  kill "-$sig" "$SPID" 2>/dev/null
  STATUS=timeout
  for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do
    alive "$SPID" || break
    sleep 0.05
  done
  if alive "$SPID"; then
    kill -KILL "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
  else
    wait "$SPID" 2>/dev/null
    STATUS=$?
  fi
  STOP_SECONDS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  kill -KILL "$SWATCH" 2>/dev/null
  wait "$SWATCH" 2>/dev/null
}

# stop_check CASE [SIGNAL] : stops the idle server with SIGNAL (default INT); PASS CASE.exit when
# it exits 0 in time. With IDLE_STOP_LIMIT set, also CASE.idle_stop when it did so promptly (no
# request is in flight when this is called, so there is nothing to finish: within IDLE_STOP_LIMIT
# s, and without "requests still running").
stop_check() {
  local c=$1 sig=${2:-INT} late
  local exitname=$c.exit
  [ "$sig" = INT ] || exitname=$c.exit_sig$(tr 'A-Z' 'a-z' <<<"$sig")
  stop "$sig"
  if [ "$STATUS" = 0 ]; then
    pass "$exitname"
  elif [ "$STATUS" = timeout ]; then
    fail "$exitname" "still running ${STOP_TIMEOUT}s after SIG$sig (killed); stderr: $(tail_of "$SLOG.err")"
    return
  else
    fail "$exitname" "exit status $STATUS after SIG$sig (want 0); stderr: $(tail_of "$SLOG.err")"
  fi
  [ -n "${IDLE_STOP_LIMIT:-}" ] || return 0
  late=$(grep -m1 'requests still running' "$SLOG.err")
  if [ -z "$late" ] && awk -v s="$STOP_SECONDS" -v m="$IDLE_STOP_LIMIT" 'BEGIN { exit !(s <= m) }'; then
    pass "$c.idle_stop"
  else
    fail "$c.idle_stop" "idle server (no request in flight) took ${STOP_SECONDS}s to exit after SIG$sig${late:+ and said '$late'}"
  fi
}

# fetch PORT PATH : one GET; sets BODY, META (status=... line of the client) and FETCH_RC.
fetch() {
  local got
  got=$(client fetch --port "$1" --timeout "$REQ_TIMEOUT" "$2" 2>"$tmp/fetch.meta"; echo "x$?")
  FETCH_RC=${got##*x}
  BODY=${got%x*}
  META=$(tr '\n' ' ' <"$tmp/fetch.meta")
}

# expect_fetch CASE PORT PATH WANT : one GET must answer 200 with exactly WANT (printf escapes).
expect_fetch() {
  local c=$1 want
  want=$(printf "$4"; echo x)
  want=${want%x}
  fetch "$2" "$3"
  if [ "$FETCH_RC" = 0 ] && [[ $META == status=200* ]] && [ "$BODY" = "$want" ]; then
    pass "$c"
  else
    fail "$c" "sent GET $3, wanted 200 $(printf %q "$want"), got $(printf %q "$BODY") [$META exit $FETCH_RC]; server stderr: $(tail_of "$SLOG.err" 4)"
  fi
}

# many CASE ARGS... : http_client.py many ...; PASS when every request was as expected.
many() { client_case many "$@"; }
# distinct CASE ARGS... : http_client.py distinct ...; PASS when no two answers share a value.
distinct() { client_case distinct "$@"; }
client_case() {
  local cmd=$1 c=$2 out
  shift 2
  out=$(client "$cmd" --timeout "$REQ_TIMEOUT" "$@" 2>&1)
  if [ $? = 0 ]; then
    pass "$c"
    info "  $c: $(head -n1 <<<"$out")"
  else
    fail "$c" "$(tr '\n' ' ' <<<"$out" | cut -c1-1500); server stderr: $(tail_of "$SLOG.err" 4)"
  fi
}

# stat_field NAME FILE : the number after "NAME=" in the last kvmserver stats line holding it.
stat_field() {
  grep -E "^kvmserver: stats:.*[ (]$1=" "$2" | tail -n1 | sed -E "s/.*[ (]$1=([0-9.]+).*/\\1/"
}

# need CASE FILE : fails CASE when FILE is not executable.
need() {
  [ -x "$2" ] && return 0
  fail "$1" "missing $2 (build: cmake --build build -j2)"
  return 1
}

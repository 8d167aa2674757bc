#!/usr/bin/env bash
# End-to-end tests of kvmserver's server mode: real HTTP servers (tests/guests/servers/*.c and
# busybox httpd) run under `kvmserver -t N [-e] --allow-listen=127.0.0.1:PORT run -- SERVER PORT`,
# driven over loopback by tests/e2e/http_client.py.
#
# Groups (each case has its own free port and its own kvmserver):
#   native      the test servers run directly on Linux (so a failure below is kvmserver's, not theirs)
#   ephemeral   -t 4 -e: 200 sequential and 4x50 concurrent /id/ requests all see a fresh template
#   persistent  -t 1: state carries over, counters 1..20 and prev= the previous id; with
#               --max-request-time=2 --stats, 5 s idle between requests loses nothing and the
#               stats count all 3 requests
#   secret      -t 1 -e --allow-write=/tmp: memory, heap, files in the private /tmp and fds are
#               all gone for the next request (and a persistent-mode control that they are not)
#   faults      -t 2 -e --max-request-time=FAULT_TIME (4) --max-request-memory=16: /segv, /loop,
#               /alloc/512, each followed by 100 good requests; the stats count the timeout and the
#               fault (4 s: touching 16 MB once took longer than 2 s with two nested machines on 2 cores)
#   stats       --stats on SIGINT: exit 0, request count exact, pages_reset per request small,
#               and a calibration: /touch/64 resets 64 pages more than /touch/0
#   robust      -t 2 -e --max-request-time=2: clients that connect and close, send half a request,
#               or never read the answer; then a stalled client (half a request, then silence)
#               must be cut off after ~2 s; every good request after them must still work
#   poll/accept poll_server and accept_server under -t 2 -e
#   busybox     busybox httpd -f under -t 2 -e --allow-read=WWW (busybox forks per connection)
#   warmup      -w 5 with warm-up path / (counter=1) and /id/warm (template counter 5: counter=6)
#   metrics     --metrics=127.0.0.1:PORT2 shows kvmserver_requests_total 10 after 10 requests
#   usr1        kill -USR1 prints the stats line live, and the server keeps serving; SIGTERM stops it
# Every kvmserver is stopped with SIGINT (usr1: SIGTERM) when idle: it must exit 0 (CASE.exit) and
# promptly, without "requests still running" (CASE.idle_stop).
#
# Usage: tests/e2e/server.sh [KVMSERVER [GUESTS]]
#   KVMSERVER  kvmserver binary (default: $KVMSERVER or build/kvmserver); "native" runs only the
#              native group, to check the servers and this script without KVM.
#   GUESTS     directory with the built guests (default: $GUESTS or build/guests); the servers are
#              in GUESTS/servers/.
# Environment: SERVER_FILTER (regex on case names), BUSYBOX (default /bin/busybox), PYTHON
#   (default /usr/bin/python3 or python3), READY_TIMEOUT (s until the ready line, default 120),
#   REQ_TIMEOUT (s per request, default 30), LOOP_SLACK (s allowed past --max-request-time for
#   /loop, default 8), SERVER_TIMEOUT (s any one kvmserver may live, default 900), E2E_LOG_DIR
#   (copy every server's stdout/stderr there), IDLE_STOP_LIMIT (s an idle server may take to
#   exit on SIGINT, default 8), KVMSERVER_FLAGS (extra flags before "run").
# Output: "PASS name" or "FAIL name: reason" per case ("#" lines are information), then
# "N passed, M failed". Exit status 1 if anything failed.
# Under a machine whose /dev/kvm does not work: tools/with-kvm --nested tests/e2e/server.sh ...
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
KVMSERVER=${1:-${KVMSERVER:-$root/build/kvmserver}}
GUESTS=${2:-${GUESTS:-$root/build/guests}}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SERVER_FILTER=${SERVER_FILTER:-}
LOOP_SLACK=${LOOP_SLACK:-8}
FAULT_TIME=${FAULT_TIME:-4}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"

NATIVE_ONLY=0
if [ "$KVMSERVER" = native ]; then
  NATIVE_ONLY=1
else
  case $KVMSERVER in /*) ;; *) KVMSERVER=$PWD/$KVMSERVER ;; esac
fi
case $GUESTS in /*) ;; *) GUESTS=$PWD/$GUESTS ;; esac
SERVERS=$GUESTS/servers

. "$here/lib.sh"
e2e_init server
enabled() { [ -z "$SERVER_FILTER" ] || [[ $1 =~ $SERVER_FILTER ]]; }
# 8 s: well under the 10 s a server gives requests in flight (which an idle one has none of), with
# room for the nested machine's emulation on a loaded 2-core host (6.6 s seen there).
IDLE_STOP_LIMIT=${IDLE_STOP_LIMIT:-8}

# ready_check CASE KIND WORKERS MODE PORT : the ready line names the program, the address, the
# wait kind, the worker count and the mode.
ready_check() {
  local c=$1 kind=$2 workers=$3 mode=$4 port=$5
  local plural=s; [ "$workers" = 1 ] && plural=""
  local want="^kvmserver: ready: .+ listening on 127\\.0\\.0\\.1:$port \\($kind\\), $workers worker$plural, $mode\$"
  if [[ $READY =~ $want ]]; then
    pass "$c.ready"
  else
    fail "$c.ready" "ready line '$READY' does not match '$want'"
  fi
}

WWW=$tmp/www
mkdir -p "$WWW"
printf '<html><body>kvmserver busybox httpd e2e</body></html>\n' >"$WWW/index.html"

# =============================================================================================
# native: the test servers themselves, directly on Linux.
native_group() {
  local s port d
  for s in epoll_server poll_server accept_server; do
    enabled "native:$s" || continue
    need "native:$s" "$SERVERS/$s" || continue
    port=$(free_port)
    d=$tmp/native-$s.dir
    mkdir -p "$d"
    start "native-$s" "$SERVERS/$s" "$port" $([ $s = epoll_server ] && echo "$d")
    if ! wait_ready "^$s: listening on 127\\.0\\.0\\.1:$port\$"; then
      fail "native:$s" "$WHY"
      stop KILL
      continue
    fi
    local before=$failed
    expect_fetch "native:$s.hello" "$port" / 'hello\n'
    expect_fetch "native:$s.id1" "$port" /id/a 'counter=1 prev=\n'
    expect_fetch "native:$s.id2" "$port" /id/b 'counter=2 prev=a\n'
    if [ $s = epoll_server ]; then
      expect_fetch "native:$s.secret" "$port" /secret/s3cr3t 'stored\n'
      expect_fetch "native:$s.check" "$port" /check 'buffer=s3cr3t heap=s3cr3t file=exists fd=open\n'
      expect_fetch "native:$s.alloc" "$port" /alloc/8 'allocated=8\n'
      expect_fetch "native:$s.touch" "$port" /touch/64 'touched=64\n'
      # /segv must kill it the way Linux does.
      client fetch --port "$port" --timeout "$REQ_TIMEOUT" /segv >/dev/null 2>&1
      stop KILL
      [ "$STATUS" = 139 ] && pass "native:$s.segv" || fail "native:$s.segv" "exit status $STATUS after /segv, want 139 (SIGSEGV)"
    else
      stop TERM
    fi
    [ $failed = "$before" ] || info "  native $s stderr: $(tail_of "$SLOG.err")"
  done

  if enabled native:busybox_httpd; then
    if [ ! -x "$BUSYBOX" ]; then
      fail native:busybox_httpd "no busybox at $BUSYBOX (apt-get install busybox-static)"
    else
      port=$(free_port)
      start native-busybox "$BUSYBOX" httpd -f -p "127.0.0.1:$port" -h "$WWW"
      sleep 0.5
      many native:busybox_httpd --port "$port" --count 5 --path / --expect "$(sed 's/\\/\\\\/g' "$WWW/index.html")\\n"
      stop TERM
    fi
  fi
}

# =============================================================================================
ephemeral_case() {
  enabled ephemeral || return
  need ephemeral "$SERVERS/epoll_server" || return
  local port
  port=$(free_port)
  start_kvm ephemeral -t 4 -e "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail ephemeral.ready "$WHY"; stop KILL; return; fi
  ready_check ephemeral epoll 4 ephemeral "$port"
  many ephemeral.sequential --port "$port" --count 200 --threads 1 --path '/id/req{i}' --expect 'counter=1 prev=\n'
  many ephemeral.concurrent --port "$port" --count 50 --threads 4 --path '/id/t{t}r{i}' --expect 'counter=1 prev=\n'
  stop_check ephemeral
}

# A server whose requests are answered by pool threads: the template pauses with them asleep in
# futex waits; every reset must bring each one back, and no request sees another's state.
threaded_case() {
  enabled threaded || return
  need threaded "$SERVERS/threaded_server" || return
  local port
  port=$(free_port)
  start_kvm threaded -t 2 -e --stats "--allow-listen=127.0.0.1:$port" -- "$SERVERS/threaded_server" "$port"
  if ! wait_ready; then fail threaded.ready "$WHY"; stop KILL; return; fi
  ready_check threaded accept 2 ephemeral "$port"
  many threaded.sequential --port "$port" --count 60 --threads 1 --path '/id/req{i}' --expect 'counter=1 prev=\n'
  many threaded.concurrent --port "$port" --count 40 --threads 2 --path '/id/t{t}r{i}' --expect 'counter=1 prev=\n'
  many threaded.pool_state --port "$port" --count 10 --threads 2 --path '/threads' --expect 'threads=1\n'
  stop_check threaded
}

persistent_case() {
  enabled persistent || return
  need persistent "$SERVERS/epoll_server" || return
  local port out
  port=$(free_port)
  start_kvm persistent -t 1 "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail persistent.ready "$WHY"; stop KILL; return; fi
  ready_check persistent epoll 1 persistent "$port"
  out=$(client sequence --port "$port" --count 20 --prefix p --first 1 --timeout "$REQ_TIMEOUT" 2>&1)
  if [ $? = 0 ]; then
    pass persistent.sequence
  else
    fail persistent.sequence "$(grep -v '^  GET' <<<"$out" | tr '\n' ' ' | cut -c1-800); responses: $(grep '^  GET' <<<"$out" | head -n 4 | tr '\n' ' ')"
  fi
  stop_check persistent

  # Persistent mode with a request time limit and --stats: the time limit is per request, so an
  # idle worker must keep its state however long it waits between requests; the stats count every
  # connection served.
  enabled persistent.limits || return
  port=$(free_port)
  start_kvm persistent-limits -t 1 --max-request-time=2 --stats "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail persistent.limits.ready "$WHY"; stop KILL; return; fi
  expect_fetch persistent.limits.first "$port" /id/a 'counter=1 prev=\n'
  expect_fetch persistent.limits.second "$port" /id/b 'counter=2 prev=a\n'
  sleep 5
  expect_fetch persistent.limits.after_idle "$port" /id/c 'counter=3 prev=b\n'
  stop_check persistent.limits
  local line
  line=$(grep -m1 '^kvmserver: stats: requests=' "$SLOG.err")
  info "  persistent.limits: ${line:-no stats line}"
  [ "$(stat_field requests "$SLOG.err")" = 3 ] && [ "$(stat_field timeouts "$SLOG.err")" = 0 ] && pass persistent.limits.stats ||
    fail persistent.limits.stats "3 requests, none slow (5 s idle between the 2nd and 3rd): want requests=3 timeouts=0, got '${line:-no stats line}'; stderr: $(tail_of "$SLOG.err" 5)"
}

# host_tmp_state : what /tmp/secret.txt and /tmp/kept.txt look like on the host (not the guest).
host_tmp_state() {
  local f
  for f in /tmp/secret.txt /tmp/kept.txt; do
    if [ -e "$f" ]; then echo "$f:$(stat -c '%s:%Y' "$f"):$(head -c 64 "$f" | od -An -c | tr -d ' \n')"; else echo "$f:absent"; fi
  done
}

secret_case() {
  enabled secret || return
  need secret "$SERVERS/epoll_server" || return
  local port fds0 fds1 host0 host1
  port=$(free_port)
  host0=$(host_tmp_state)
  start_kvm secret -t 1 -e "--allow-listen=127.0.0.1:$port" --allow-write=/tmp -- "$SERVERS/epoll_server" "$port" /tmp
  if ! wait_ready; then fail secret.ready "$WHY"; stop KILL; return; fi
  fds0=$(client fetch --port "$port" --timeout "$REQ_TIMEOUT" /fds 2>/dev/null)
  info "  secret: fds before: $fds0"
  expect_fetch secret.store "$port" /secret/s3cr3t 'stored\n'
  expect_fetch secret.check "$port" /check 'buffer= heap=(null) file=missing fd=closed\n'
  fds1=$(client fetch --port "$port" --timeout "$REQ_TIMEOUT" /fds 2>/dev/null)
  if [ -n "$fds0" ] && [ "$fds0" = "$fds1" ]; then
    pass secret.fd_table
  else
    fail secret.fd_table "open guest fds before /secret: '$fds0', after: '$fds1' (the kept fd must not survive the reset)"
  fi
  # The private /tmp is the guest's: nothing may appear in (or change in) the host's /tmp.
  host1=$(host_tmp_state)
  if [ "$host0" = "$host1" ]; then
    pass secret.host_tmp_untouched
  else
    fail secret.host_tmp_untouched "host /tmp changed: before [$(tr '\n' ' ' <<<"$host0")] after [$(tr '\n' ' ' <<<"$host1")]"
  fi
  stop_check secret

  # Control: the same requests in persistent mode must show everything still there, or the
  # checks above prove nothing. (A directory of ours, not /tmp: persistent /tmp is the host's.)
  enabled secret.persistent_control || return
  local d=$tmp/secret-control
  mkdir -p "$d"
  port=$(free_port)
  start_kvm secret-control -t 1 "--allow-listen=127.0.0.1:$port" "--allow-write=$d" -- "$SERVERS/epoll_server" "$port" "$d"
  if ! wait_ready; then fail secret.persistent_control "$WHY"; stop KILL; return; fi
  expect_fetch secret.persistent_control.store "$port" /secret/s3cr3t 'stored\n'
  expect_fetch secret.persistent_control.check "$port" /check 'buffer=s3cr3t heap=s3cr3t file=exists fd=open\n'
  if [ "$(cat "$d/secret.txt" 2>/dev/null)" = s3cr3t ] && [ -e "$d/kept.txt" ]; then
    pass secret.persistent_control.host_file
  else
    fail secret.persistent_control.host_file "$d/secret.txt is '$(cat "$d/secret.txt" 2>&1)', kept.txt $([ -e "$d/kept.txt" ] && echo exists || echo missing)"
  fi
  stop_check secret.persistent_control
}

# fetch_fault CASE PORT PATH : GET PATH; sets FRC (client exit status), FBODY, FMETA, FELAPSED.
fetch_fault() {
  local port=$2 path=$3
  FBODY=$(client fetch --port "$port" --timeout "$REQ_TIMEOUT" "$path" 2>"$tmp/fetch.meta"; echo "x$?")
  FRC=${FBODY##*x}
  FBODY=${FBODY%x*}
  FMETA=$(tr '\n' ' ' <"$tmp/fetch.meta")
  FELAPSED=$(sed -nE 's/.*elapsed=([0-9.]+).*/\1/p' "$tmp/fetch.meta")
}

faults_case() {
  enabled faults || return
  need faults "$SERVERS/epoll_server" || return
  local port k
  port=$(free_port)
  start_kvm faults -t 2 -e "--max-request-time=$FAULT_TIME" --max-request-memory=16 --stats "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail faults.ready "$WHY"; stop KILL; return; fi

  # /segv: the guest crashes; the connection must close with no response.
  fetch_fault faults.segv "$port" /segv
  if [ "$FRC" = 2 ] || [ "$FRC" = 6 ]; then
    pass faults.segv
    info "  faults.segv: $FMETA"
  else
    fail faults.segv "sent GET /segv, wanted the connection closed without a response, got $(printf %q "$FBODY") [$FMETA exit $FRC]; server stderr: $(tail_of "$SLOG.err" 4)"
  fi
  many faults.segv.after --port "$port" --count 100 --path / --expect 'hello\n'

  # /loop: stopped by --max-request-time, connection closed, no response.
  fetch_fault faults.loop "$port" /loop
  if { [ "$FRC" = 2 ] || [ "$FRC" = 6 ]; } && awk -v e="$FELAPSED" -v m="$LOOP_SLACK" -v t="$FAULT_TIME" 'BEGIN { exit !(e >= t - 0.5 && e <= t + m) }'; then
    pass faults.loop
    info "  faults.loop: closed after ${FELAPSED}s ($FMETA)"
  else
    fail faults.loop "sent GET /loop, wanted the connection closed without a response after $FAULT_TIME..$((FAULT_TIME + LOOP_SLACK)) s, got $(printf %q "$FBODY") [$FMETA exit $FRC]; server stderr: $(tail_of "$SLOG.err" 4)"
  fi
  many faults.loop.after --port "$port" --count 100 --path / --expect 'hello\n'

  # /alloc/512 past --max-request-memory=16: malloc must start failing near 16 MB (kept small so the
  # allocation finishes well inside --max-request-time even in a loaded nested machine).
  fetch_fault faults.alloc "$port" /alloc/512
  k=$(sed -nE 's/^allocated=([0-9]+)$/\1/p' <<<"$FBODY")
  if [ "$FRC" = 0 ] && [[ $FMETA == status=200* ]] && [ -n "$k" ] && [ "$k" -lt 24 ]; then
    pass faults.alloc
    info "  faults.alloc: /alloc/512 under --max-request-memory=16 -> allocated=$k MB"
  else
    fail faults.alloc "sent GET /alloc/512, wanted 'allocated=K' with K < 24, got $(printf %q "$FBODY") [$FMETA exit $FRC]; server stderr: $(tail_of "$SLOG.err" 4)"
  fi
  many faults.alloc.after --port "$port" --count 100 --path / --expect 'hello\n'
  # Below the limit an allocation must succeed (else the case above proves nothing). 4 MB: 8 MB
  # took longer than a --max-request-time of 2 s once in a nested machine loaded by other jobs.
  expect_fetch faults.alloc_under_limit "$port" /alloc/4 'allocated=4\n'

  stop_check faults
  local line timeouts faults_n
  line=$(grep -m1 '^kvmserver: stats: requests=' "$SLOG.err")
  timeouts=$(stat_field timeouts "$SLOG.err")
  faults_n=$(stat_field faults "$SLOG.err")
  info "  faults.stats: ${line:-no stats line}"
  if [ "$timeouts" = 1 ] && [ -n "$faults_n" ] && [ "$faults_n" -ge 1 ]; then
    pass faults.stats
  else
    fail faults.stats "want timeouts=1 and faults>=1 after one /loop and one /segv, got '${line:-no stats line}'"
  fi
}

# stats_run NAME PORT REQUESTS-ARGS... : starts the epoll server -t 2 -e --stats, runs
# http_client.py many with the given arguments, stops it with SIGINT. Sets SENT.
stats_case() {
  enabled stats || return
  need stats "$SERVERS/epoll_server" || return
  local port line pr
  port=$(free_port)
  start_kvm stats -t 2 -e --stats "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail stats.ready "$WHY"; stop KILL; return; fi
  many stats.requests_id --port "$port" --count 30 --path '/id/s{i}' --expect 'counter=1 prev=\n'
  many stats.requests_hello --port "$port" --count 10 --path / --expect 'hello\n'
  stop_check stats
  line=$(grep -m1 '^kvmserver: stats: requests=' "$SLOG.err")
  if [ -n "$line" ] && grep -q '^kvmserver: stats: per request: ' "$SLOG.err"; then
    pass stats.lines
  else
    fail stats.lines "no 'kvmserver: stats: requests=' and 'per request:' lines on stderr after SIGINT; stderr: $(tail_of "$SLOG.err")"
  fi
  info "  stats: $line"
  info "  stats: $(grep -m1 '^kvmserver: stats: per request: ' "$SLOG.err")"
  local n
  n=$(stat_field requests "$SLOG.err")
  [ "$n" = 40 ] && pass stats.request_count || fail stats.request_count "sent 40 requests, stats say requests=${n:-?} ($line)"
  pr=$(stat_field pages_reset "$SLOG.err")
  info "  stats: pages_reset per request (epoll_server, /id and /, -e): ${pr:-?}"
  if [ -n "$pr" ] && awk -v p="$pr" 'BEGIN { exit !(p < 64) }'; then
    pass stats.pages_reset_small
  else
    fail stats.pages_reset_small "pages_reset per request is '${pr:-?}', want < 64"
  fi
  # Every VM exit is one KVM_RUN; a reset adds a few calls (dirty-ring reset, vCPU state): the KVM
  # calls per request lie between the exits and the exits plus a small constant.
  local kc ex
  kc=$(stat_field kvm_calls "$SLOG.err")
  ex=$(stat_field vm_exits "$SLOG.err")
  info "  stats: kvm_calls per request ${kc:-?}, vm_exits ${ex:-?}"
  if [ -n "$kc" ] && [ -n "$ex" ] && awk -v k="$kc" -v e="$ex" 'BEGIN { exit !(k >= e && k < e + 32) }'; then
    pass stats.kvm_calls
  else
    fail stats.kvm_calls "kvm_calls per request '${kc:-?}' with vm_exits '${ex:-?}': want vm_exits <= kvm_calls < vm_exits + 32"
  fi
  # The template's resident memory: the epoll server's code, data, stack and the kernel area are
  # tens of pages at least, and a static C server stays far below 64 MiB.
  local rk
  rk=$(stat_field template_resident_kib "$SLOG.err")
  info "  stats: template_resident_kib ${rk:-?}"
  if [ -n "$rk" ] && [ "$rk" -ge 64 ] && [ "$rk" -lt 65536 ]; then
    pass stats.template_resident
  else
    fail stats.template_resident "template_resident_kib '${rk:-?}': want 64 KiB .. 64 MiB for the static epoll server"
  fi

  # Calibration: /touch/N writes one byte in each of N template pages; a reset should restore
  # about N pages more than for /touch/0.
  enabled stats.calibration || return
  local p0 p64 n_touch
  for n_touch in 0 64; do
    port=$(free_port)
    start_kvm "stats-touch$n_touch" -t 1 -e --stats "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
    if ! wait_ready; then fail "stats.calibration" "touch/$n_touch: $WHY"; stop KILL; return; fi
    many "stats.calibration.touch$n_touch" --port "$port" --count 20 --path "/touch/$n_touch" --expect "touched=$n_touch\\n"
    stop INT
    if [ "$n_touch" = 0 ]; then p0=$(stat_field pages_reset "$SLOG.err"); else p64=$(stat_field pages_reset "$SLOG.err"); fi
  done
  info "  stats.calibration: pages_reset per request: /touch/0 ${p0:-?}, /touch/64 ${p64:-?}"
  if [ -n "$p0" ] && [ -n "$p64" ] && awk -v a="$p0" -v b="$p64" 'BEGIN { d = b - a; exit !(d >= 60 && d <= 72) }'; then
    pass stats.calibration
  else
    fail stats.calibration "pages_reset per request: /touch/0 '${p0:-?}', /touch/64 '${p64:-?}': the difference should be 64 (+-4..8)"
  fi
}

robust_case() {
  enabled robust || return
  need robust "$SERVERS/epoll_server" || return
  local port mode out rc e line
  port=$(free_port)
  start_kvm robust -t 2 -e --max-request-time=2 --stats "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail robust.ready "$WHY"; stop KILL; return; fi
  for mode in empty partial noread; do
    out=$(client abuse --port "$port" --mode "$mode" --count 20 --timeout "$REQ_TIMEOUT" 2>&1)
    [ $? = 0 ] || fail "robust.$mode" "$(tr '\n' ' ' <<<"$out")"
    many "robust.$mode.after" --port "$port" --count 20 --path "/id/$mode{i}" --expect 'counter=1 prev=\n'
  done
  # A client that sends half a request and then nothing: the request time limit must end it.
  out=$(client stall --port "$port" --timeout $((2 + LOOP_SLACK + 10)) 2>&1)
  rc=$?
  e=$(sed -nE 's/^closed after ([0-9.]+) s.*/\1/p' <<<"$out")
  if [ "$rc" = 0 ] && awk -v e="$e" -v m="$LOOP_SLACK" 'BEGIN { exit !(e >= 1.5 && e <= 2 + m) }'; then
    pass robust.stalled_client
    info "  robust.stalled_client: $out"
  else
    fail robust.stalled_client "sent 'GET / HTTP/1.1\\r\\n' and nothing more under --max-request-time=2: want the connection closed after 2..$((2 + LOOP_SLACK)) s, got: $out; server stderr: $(tail_of "$SLOG.err" 4)"
  fi
  many robust.stalled_client.after --port "$port" --count 20 --path / --expect 'hello\n'
  stop_check robust
  line=$(grep -m1 '^kvmserver: stats: requests=' "$SLOG.err")
  info "  robust.stats: ${line:-no stats line} (60 bad connections, 60 + 20 good requests, 1 stalled)"
  [ "$(stat_field timeouts "$SLOG.err")" = 1 ] && pass robust.stats_timeouts ||
    fail robust.stats_timeouts "want timeouts=1 (the stalled client), got '${line:-no stats line}'"
}

simple_server_case() { # NAME KIND
  local s=$1 kind=$2 c=${1%_server}
  enabled "$c" || return
  need "$c" "$SERVERS/$s" || return
  local port
  port=$(free_port)
  start_kvm "$c" -t 2 -e "--allow-listen=127.0.0.1:$port" -- "$SERVERS/$s" "$port"
  if ! wait_ready; then fail "$c.ready" "$WHY"; stop KILL; return; fi
  ready_check "$c" "$kind" 2 ephemeral "$port"
  many "$c.requests" --port "$port" --count 50 --path '/id/r{i}' --expect 'counter=1 prev=\n'
  stop_check "$c"
}

busybox_case() {
  enabled busybox || return
  if [ ! -x "$BUSYBOX" ]; then fail busybox "no busybox at $BUSYBOX (apt-get install busybox-static)"; return; fi
  local port
  port=$(free_port)
  start_kvm busybox -v -t 2 -e "--allow-read=$WWW" "--allow-listen=127.0.0.1:$port" -- "$BUSYBOX" httpd -f -p "127.0.0.1:$port" -h "$WWW"
  if ! wait_ready; then
    fail busybox.ready "$WHY"
    stop KILL
    return
  fi
  info "  busybox: $READY"
  local before=$failed
  many busybox.requests --port "$port" --count 50 --path / --expect "$(sed 's/\\/\\\\/g' "$WWW/index.html")\\n"
  if [ "$failed" != "$before" ]; then
    info "  busybox httpd forks per connection; kvmserver -v said (repeats counted):"
    grep -v '^$' "$SLOG.err" | uniq -c | head -n 20 | sed -E 's/^ *([0-9]+) /#     \1x /'
  fi
  stop_check busybox
}

warmup_case() {
  enabled warmup || return
  need warmup "$SERVERS/epoll_server" || return
  local port bad
  port=$(free_port)
  start_kvm warmup -t 2 -e -w 5 --warmup-path=/ "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail warmup.ready "$WHY"; stop KILL; return; fi
  ready_check warmup epoll 2 ephemeral "$port"
  expect_fetch warmup.first_request "$port" /id/first 'counter=1 prev=\n'
  many warmup.requests --port "$port" --count 10 --path '/id/w{i}' --expect 'counter=1 prev=\n'
  stop_check warmup
  bad=$(grep -v -E '^kvmserver: (ready|stopping): ' "$SLOG.err" | grep -i -E 'error|fail|fault|warn|denied|unsupported|abort|cannot|timed? ?out|unknown' | head -n 5)
  if [ -z "$bad" ]; then
    pass warmup.log_clean
  else
    fail warmup.log_clean "kvmserver stderr during warm-up: $(tr '\n' '|' <<<"$bad")"
  fi

  # Warm-up requests that change state: the template is taken after them, so every request
  # starts from counter=5 and buffer=warm.
  enabled warmup.id_path || return
  port=$(free_port)
  start_kvm warmup-id -t 2 -e -w 5 --warmup-path=/id/warm "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail warmup.id_path.ready "$WHY"; stop KILL; return; fi
  many warmup.id_path --port "$port" --count 10 --path '/id/x{i}' --expect 'counter=6 prev=warm\n'
  stop_check warmup.id_path
}

metrics_case() {
  enabled metrics || return
  need metrics "$SERVERS/epoll_server" || return
  local port mport body i
  port=$(free_port)
  mport=$(free_port)
  start_kvm metrics -t 2 -e "--metrics=127.0.0.1:$mport" "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail metrics.ready "$WHY"; stop KILL; return; fi
  many metrics.requests --port "$port" --count 10 --path / --expect 'hello\n'
  # Responses go out before the reset that counts the request: allow the count a moment.
  for ((i = 0; i < 50; i++)); do
    body=$(client fetch --port "$mport" --timeout "$REQ_TIMEOUT" /metrics 2>"$tmp/fetch.meta")
    grep -qx 'kvmserver_requests_total 10' <<<"$body" && break
    sleep 0.1
  done
  if grep -qx 'kvmserver_requests_total 10' <<<"$body"; then
    pass metrics.requests_total
    [ "$i" -gt 0 ] && info "  metrics: the count reached 10 after $i retries (0.1 s apart)"
  else
    fail metrics.requests_total "after 10 requests GET /metrics on $mport: $(grep -m1 '^kvmserver_requests_total' <<<"$body" || echo "no kvmserver_requests_total line") [$(tr '\n' ' ' <"$tmp/fetch.meta")]; body: $(head -c 300 <<<"$body" | tr '\n' '|')"
  fi
  if grep -qx '# TYPE kvmserver_requests_total counter' <<<"$body"; then
    pass metrics.format
  else
    fail metrics.format "no '# TYPE kvmserver_requests_total counter' line; body: $(head -c 300 <<<"$body" | tr '\n' '|')"
  fi
  stop_check metrics
}

usr1_case() {
  enabled usr1 || return
  need usr1 "$SERVERS/epoll_server" || return
  local port i line
  port=$(free_port)
  start_kvm usr1 -t 2 -e "--allow-listen=127.0.0.1:$port" -- "$SERVERS/epoll_server" "$port"
  if ! wait_ready; then fail usr1.ready "$WHY"; stop KILL; return; fi
  many usr1.requests --port "$port" --count 5 --path / --expect 'hello\n'
  kill -USR1 "$SPID"
  for ((i = 0; i < 100; i++)); do
    line=$(grep -m1 '^kvmserver: stats: requests=' "$SLOG.err")
    [ -n "$line" ] && break
    sleep 0.1
  done
  if [ -n "$line" ]; then
    pass usr1.stats_line
    info "  usr1: $line"
  else
    fail usr1.stats_line "no 'kvmserver: stats: requests=' line within 10 s of SIGUSR1; alive: $(alive "$SPID" && echo yes || echo no); stderr: $(tail_of "$SLOG.err")"
  fi
  [[ $line == *requests=5\ * ]] || [ -z "$line" ] || fail usr1.stats_count "sent 5 requests, SIGUSR1 stats say: $line"
  expect_fetch usr1.still_serving "$port" / 'hello\n'
  stop_check usr1 TERM
}

# =============================================================================================
info "kvmserver: $KVMSERVER"
info "guests: $SERVERS"
native_group
if [ "$NATIVE_ONLY" = 0 ]; then
  if [ ! -x "$KVMSERVER" ]; then
    fail kvmserver "not found or not executable: $KVMSERVER"
  else
    ephemeral_case
    threaded_case
    persistent_case
    secret_case
    faults_case
    stats_case
    robust_case
    simple_server_case poll_server poll
    simple_server_case accept_server accept
    busybox_case
    warmup_case
    metrics_case
    usr1_case
  fi
fi

e2e_summary

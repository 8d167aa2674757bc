#!/usr/bin/env bash
# The clock of a request (README "Timers of a paused template"): every request of an ephemeral
# worker starts its monotonic clock where the template paused, so a timer the template set is no
# nearer due in any request however long the template has waited; a snapshot's clock goes on from
# when it was saved. Absolute end times the guest gives on the monotonic clocks are waited for at
# the right host time, and the wall clock is the host's. The guest is
# build/guests/servers/clock_server (a loop timer and a timerfd, due TIMER_S after start-up).
#
#   ephemeral   -t 1 -e: requests one after another for longer than TIMER_S + 2 s after ready, so
#               the template is older than its timers: in every request neither timer has fired;
#               absolute waits take their 300 ms; the wall clock is the host's
#   persistent  -t 1: the worker's clock runs on from the pause, so its timers fire while it waits
#   snapshot    a file saved, left for TIMER_S + 1 s, served -t 1 -e: no timer fired in any request;
#               absolute waits right (the file's clock is ahead of or behind this host's)
#
# Usage: tests/e2e/clock.sh [KVMSERVER [GUESTS]]  (needs /dev/kvm: through tools/with-kvm)
# Environment: TIMER_S (10), and lib.sh's.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
e2e_binaries "${1:-}" "${2:-}"
SERVER=$GUESTS/servers/clock_server
TIMER_S=${TIMER_S:-10}
e2e_init clock
need clock "$SERVER" || { e2e_summary; exit 1; }

# fresh_requests CASE PORT SECONDS : GET /state, one request after the other (batches of 100 from
# one client, so the worker is never idle for long: an idle worker's clock runs, and a timer due
# while it waits runs then, as it should; TIMER_S is long enough for a loaded machine's client
# start-up), until SECONDS have passed: every answer must show that no timer fired.
fresh_requests() {
  local c=$1 port=$2 until=$(($(date +%s) + $3)) n=0 out
  # The worker has been idle since it was made, before "ready": its timers may have come due (the
  # template's boot and this client's start-up on a loaded machine). That first request is not
  # judged; after it every request starts from the template's pause again.
  fetch "$port" /waited
  while :; do
    if ! out=$(client many --timeout "$REQ_TIMEOUT" --port "$port" --count 100 --path /state --expect 'loop_fired=0 timerfd_fired=0\n' 2>&1); then
      fail "$c" "after $n requests: $(tr '\n' ' ' <<<"$out" | cut -c1-600); server stderr: $(tail_of "$SLOG.err" 4)"
      return
    fi
    n=$((n + 100))
    [ "$(date +%s)" -ge "$until" ] && break
  done
  pass "$c"
  fetch "$port" /waited
  info "  $c: $n requests over $3 s; the last one's loop had waited: $BODY"
}

# absolute_waits CASE PORT : /abs: each absolute wait took its 300 ms (not 0: an end time taken as
# already past; not far more: one taken as far ahead), timer_gettime left at most 300 ms.
absolute_waits() {
  local c=$1 why=""
  fetch "$2" /abs
  if [[ $BODY =~ ^sleep=(-?[0-9]+)\ boot_sleep=(-?[0-9]+)\ timerfd=(-?[0-9]+)\ futex=(-?[0-9]+)\ timer_left=(-?[0-9]+) ]]; then
    local i names=(x sleep boot_sleep timerfd futex)
    for i in 1 2 3 4; do
      local v=${BASH_REMATCH[$i]}
      { [ "$v" -ge 280 ] && [ "$v" -le 20000 ]; } || why+="${names[$i]}=$v ms "
    done
    local left=${BASH_REMATCH[5]}
    { [ "$left" -ge 1 ] && [ "$left" -le 300 ]; } || why+="timer_left=$left ms "
  else
    why="answer $(printf %q "$BODY") [$META]"
  fi
  if [ -z "$why" ]; then pass "$c"; info "  $c: $BODY"; else fail "$c" "$why(want 280..20000 ms waits, 1..300 ms left)"; fi
}

wall_clock() {
  fetch "$2" /wall
  local host
  host=$(date +%s)
  if [[ $BODY =~ ^wall=([0-9]+) ]] && [ $((BASH_REMATCH[1] - host)) -le 5 ] && [ $((host - BASH_REMATCH[1])) -le 5 ]; then
    pass "$1"
  else
    fail "$1" "guest wall clock $(printf %q "$BODY"), host $host"
  fi
}

# ---- ephemeral -----------------------------------------------------------------------------------
port=$(free_port)
start_kvm ephemeral -t 1 -e --allow-listen=127.0.0.1:"$port" -- "$SERVER" "$port" "$TIMER_S"
if wait_ready; then
  pass ephemeral.ready
  fresh_requests ephemeral.timers_not_due "$port" $((TIMER_S + 2))
  absolute_waits ephemeral.absolute_waits "$port"
  wall_clock ephemeral.wall_clock "$port"
  stop_check ephemeral
else
  fail ephemeral.ready "$WHY"
fi

# ---- persistent ----------------------------------------------------------------------------------
port=$(free_port)
start_kvm persistent -t 1 --allow-listen=127.0.0.1:"$port" -- "$SERVER" "$port" "$TIMER_S"
if wait_ready; then
  pass persistent.ready
  sleep $((TIMER_S + 1))
  fetch "$port" /state
  if [[ $BODY == "loop_fired=1 timerfd_fired=1"* ]]; then pass persistent.timers_fire; else fail persistent.timers_fire "after $((TIMER_S + 1)) s: $(printf %q "$BODY") [$META]"; fi
  absolute_waits persistent.absolute_waits "$port"
  stop_check persistent
else
  fail persistent.ready "$WHY"
fi

# ---- snapshot ------------------------------------------------------------------------------------
port=$(free_port)
snap=$tmp/clock.snap
check snapshot.make 0 '^kvmserver: snapshot: wrote ' -- "$KVMSERVER" snapshot --output "$snap" --allow-listen=127.0.0.1:"$port" run -- "$SERVER" "$port" "$TIMER_S"
sleep $((TIMER_S + 1))
start snapshot "$KVMSERVER" serve "$snap" -t 1 -e
if wait_ready; then
  pass snapshot.ready
  fresh_requests snapshot.timers_not_due "$port" 1
  absolute_waits snapshot.absolute_waits "$port"
  wall_clock snapshot.wall_clock "$port"
  stop_check snapshot
else
  fail snapshot.ready "$WHY"
fi

e2e_summary

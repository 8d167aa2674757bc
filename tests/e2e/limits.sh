#!/usr/bin/env bash
# Resource caps (issue 9): hostile guests that multiply what they hold must run into kvmserver's
# caps, get the errno Linux gives, leave one -v line naming the flag, and cost kvmserver nothing
# beyond --max-memory (+ 64 MB of its own).
#
# run mode (build/guests/hostile/bomb KIND under `kvmserver -v run`): fork and clone bombs
#   (--max-processes), a thread bomb (--max-threads), fd floods of files, pipes and sockets
#   (--max-fds), epoll registrations (--max-epoll-watches), timers (--max-timers), queued signals
#   (--max-pending-signals), a memory hog over 5 processes and a memfd (--max-memory, with
#   kvmserver's peak RSS checked).
# server mode (build/guests/servers/abuse_server under `kvmserver -t 2 -e`): the same attacks as
#   requests: each gets its errno, the next request is served as usual, a request's other processes
#   end with it, a /tmp-filling request is cut at --max-tmp-size and the next one finds /tmp empty,
#   and kvmserver's peak RSS stays within its template plus two workers' limits.
#
# Usage: tests/e2e/limits.sh [KVMSERVER [GUESTS]]
# Environment: LIMITS_FILTER (regex on case names), CASE_TIMEOUT (s per run, default 300),
#   KVMSERVER_FLAGS (extra flags before "run"), and those of tests/e2e/lib.sh.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
e2e_binaries "$@"
BOMB=$GUESTS/hostile/bomb
LIMITS_FILTER=${LIMITS_FILTER:-}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"
e2e_init limits
enabled() { [ -z "$LIMITS_FILTER" ] || [[ $1 =~ $LIMITS_FILTER ]]; }
RSS_SLACK_MB=64  # what kvmserver may use of its own beyond --max-memory (issue 9)

# measure PFX CMD... : runs CMD (stdin /dev/null, stdout/stderr to PFX.out/.err, killed after
# CASE_TIMEOUT); sets status and maxrss_mb (the peak RSS of kvmserver, from getrusage).
measure() {
  local pfx=$1
  shift
  (cd "$tmp" && exec "$PYTHON" -c '
import resource, subprocess, sys
limit, out, err, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out, "wb") as o, open(err, "wb") as e:
    try:
        status = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        status = 137
status = 128 - status if status < 0 else status
print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
' "$CASE_TIMEOUT" "$pfx.out" "$pfx.err" "$@") >"$pfx.measure"
  read -r status maxrss_mb <"$pfx.measure"
}

# field NAME LINE : the value after NAME= in a bomb summary.
field() { sed -nE "s/.*[ ]$1=([^ ]+).*/\\1/p" <<<"$2" | head -n1; }

# bomb_case NAME EXPECT FLAGS... -- BOMB-ARGS... : `kvmserver -v FLAGS run bomb BOMB-ARGS` must exit
# 0 with its "ok bomb" line; EXPECT is a bash condition over the summary's fields (as $f_NAME) and
# $maxrss_mb; LOGLINE (if set) a regex stderr must match (the -v line of the cap).
bomb_case() {
  local name=$1 expect=$2
  shift 2
  enabled "$name" || return 0
  local -a flags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  local pfx=$tmp/$name line reasons=() key
  measure "$pfx" "$KVMSERVER" "${EXTRA_FLAGS[@]}" -v "${flags[@]}" run -- "$BOMB" "$@"
  line=$(grep -m1 '^ok bomb ' "$pfx.out")
  [ "$status" = 0 ] || reasons+=("status $status")
  [ -n "$line" ] || reasons+=("no 'ok bomb' line")
  for key in $(grep -oE '[a-z_]+=' <<<"$line" | tr -d =); do
    local "f_$key=$(field "$key" "$line")"
  done
  if [ -n "$line" ] && ! eval "$expect" 2>/dev/null; then reasons+=("expected $expect"); fi
  if [ -n "${LOGLINE:-}" ] && ! grep -Eq "$LOGLINE" "$pfx.err"; then reasons+=("no -v line /$LOGLINE/"); fi
  if grep -Eq 'AddressSanitizer|runtime error:|internal error' "$pfx.err"; then reasons+=("kvmserver reported an error"); fi
  if [ ${#reasons[@]} = 0 ]; then
    pass "$name"
  else
    fail "$name" "$(IFS=';'; echo "${reasons[*]}"); summary: ${line:-none}; stderr: $(tail_of "$pfx.err" 4)"
  fi
  info "  $name: ${line#ok bomb } (kvmserver peak RSS ${maxrss_mb} MB)"
  LOGLINE=
}

run_mode() {
  local self=$BOMB  # readable without grants: the program itself
  # With the defaults, 1024 MB run out before 64 processes do (a VM, its stack and its copy of the
  # program cost about 20 MB): fork gets ENOMEM or EAGAIN, whichever comes first.
  LOGLINE='limit: --max-(processes=64|memory=1024) reached'
  bomb_case fork '(( f_eagain + f_enomem > 0 && f_other == 0 ))' -- fork 10
  LOGLINE='limit: --max-(processes=64|memory=1024) reached'
  bomb_case clone '(( f_eagain + f_enomem > 0 && f_other == 0 ))' -- clone 10
  LOGLINE='limit: --max-processes=8 reached'
  bomb_case fork.max-processes '(( f_eagain > 0 && f_forks < 200 ))' --max-processes=8 -- fork 10
  LOGLINE='limit: --max-threads=32 reached'
  bomb_case threads '(( f_made == 31 )) && [ "$f_error" = EAGAIN ]' --max-threads=32 -- threads 1000
  LOGLINE='limit: --max-fds=100 reached'
  bomb_case files '(( f_made >= 90 && f_made <= 97 )) && [ "$f_error" = EMFILE ]' --max-fds=100 -- files "$self"
  LOGLINE='limit: --max-fds=100 reached'
  bomb_case pipes '(( f_made >= 45 && f_made <= 49 )) && [ "$f_error" = EMFILE ]' --max-fds=100 -- pipes
  LOGLINE='limit: --max-fds=100 reached'
  bomb_case sockets '(( f_made >= 45 && f_made <= 49 )) && [ "$f_error" = EMFILE ]' --max-fds=100 -- sockets
  LOGLINE='limit: --max-epoll-watches=50 reached'
  bomb_case epoll '(( f_watches == 50 ))' --max-epoll-watches=50 -- epoll
  LOGLINE='limit: --max-timers=20 reached'
  bomb_case timers '(( f_made == 20 )) && [ "$f_error" = ENOMEM ]' --max-timers=20 -- timers 1000
  LOGLINE='limit: --max-pending-signals=100 reached'
  bomb_case signals '(( f_queued == 100 && f_drained == 100 )) && [ "$f_error" = EAGAIN ]' --max-pending-signals=100 -- signals 100000
  LOGLINE='limit: --max-memory=256 reached'
  # Five processes cost about 50 MB of the 256 in host memory (their VMs) and 40 MB of stacks.
  bomb_case memory "(( f_mb > 100 && f_mb <= 256 && maxrss_mb <= 256 + RSS_SLACK_MB )) && [ \"\$f_error\" = ENOMEM ]" \
    --max-memory=256 -- memory 4
  LOGLINE='limit: --max-memory=128 reached'
  bomb_case memfd "(( f_mb > 64 && f_mb < 128 && maxrss_mb <= 128 + RSS_SLACK_MB )) && [ \"\$f_error\" = ENOSPC ]" \
    --max-memory=128 -- memfd 4096
  LOGLINE='limit: --max-memory=256 reached'
  bomb_case fork.max-memory "(( f_enomem > 0 && maxrss_mb <= 256 + RSS_SLACK_MB ))" --max-memory=256 -- fork 10
}

# ---- server mode ----
# bomb_request NAME PORT PATH EXPECT : one request to the abuse server; its summary (the body) must
# satisfy EXPECT (a bash condition over $f_NAME), and the next request must still be answered.
bomb_request() {
  local name=$1 port=$2 path=$3 expect=$4 key
  fetch "$port" "$path"
  local line=${BODY%$'\n'}
  for key in $(grep -oE '[a-z_]+=' <<<"$line" | tr -d =); do
    local "f_$key=$(field "$key" " $line")"
  done
  if [ "$FETCH_RC" = 0 ] && [[ $META == status=200* ]] && eval "$expect" 2>/dev/null; then
    pass "$name"
  else
    fail "$name" "GET $path: [$META exit $FETCH_RC] '$line', expected $expect; stderr: $(tail_of "$SLOG.err" 4)"
  fi
  info "  $name: $line"
  expect_fetch "$name.next" "$port" / 'hello\n'
}

# guest_processes : how many guest processes besides the workers kvmserver runs now (each is a
# host thread named "guest pid N").
guest_processes() { cat /proc/"$SPID"/task/*/comm 2>/dev/null | grep -c '^guest pid'; }

server_mode() {
  enabled server || return 0
  need server "$GUESTS/servers/abuse_server" || return 0
  local port
  port=$(free_port)
  start_kvm server -v -t 2 -e --allow-listen=127.0.0.1:"$port" --allow-write=/tmp --max-tmp-size=16 \
    --max-request-memory=96 --max-threads=16 --max-processes=4 -- "$GUESTS/servers/abuse_server" "$port"
  if ! wait_ready; then
    fail server "$WHY"
    return
  fi
  pass server.ready
  bomb_request server.fork "$port" /bomb/fork/10 '(( f_eagain > 0 ))'
  bomb_request server.fork.again "$port" /bomb/fork/10 '(( f_eagain > 0 ))'
  bomb_request server.threads "$port" /bomb/threads/1000 '(( f_made == 15 )) && [ "$f_error" = EAGAIN ]'
  bomb_request server.memory "$port" /bomb/memory/2 '(( f_mb > 16 && f_mb <= 96 ))'
  bomb_request server.tmp "$port" /bomb/tmp/tmp/keep '(( f_mb >= 8 && f_mb <= 16 )) && [ "$f_error" = ENOSPC ]'
  expect_fetch server.tmp.reset "$port" /tmp 'entries=0\n'
  bomb_request server.orphan "$port" /bomb/orphan/1000 '(( f_pid > 0 ))'
  local i n
  for ((i = 0; i < 50; i++)); do
    n=$(guest_processes)
    [ "$n" = 0 ] && break
    sleep 0.1
  done
  if [ "$n" = 0 ]; then
    pass server.orphan.ended
  else
    fail server.orphan.ended "$n guest processes of finished requests are still running"
  fi
  local rss
  rss=$(awk '/^VmHWM:/ { print int($2 / 1024) }' /proc/"$SPID"/status)
  info "  server: kvmserver peak RSS $rss MB"
  stop_check server
  local vline
  for vline in 'limit: --max-processes=4 reached \(pid [0-9]+\): fork: EAGAIN' 'limit: --max-threads=16 reached' \
               'limit: --max-request-memory=96 reached' 'limit: --max-tmp-size=16 reached'; do
    if grep -Eq "$vline" "$SLOG.err"; then pass "server.vline.${vline:7:13}"; else fail "server.vline.${vline:7:13}" "no -v line /$vline/: $(tail_of "$SLOG.err" 6)"; fi
  done
}

info "kvmserver: $KVMSERVER"
need bomb "$BOMB" && run_mode
server_mode
e2e_summary

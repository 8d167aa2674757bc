#!/usr/bin/env bash
# Isolation per HTTP request (--isolate=request, issue 10): kvmserver's front owns the client
# connections and gives every request a freshly reset worker, whatever the client or a reverse
# proxy does with its connection. tests/e2e/front_client.py drives the clients; the guest is
# build/guests/servers/request_server (bodies, keep-alive, awkward answers).
#
# Groups (each with its own kvmserver):
#   request     --isolate=request -t 2: 500 requests over 4 keep-alive connections all fresh;
#               pipelining; uploads of 1 MB (length and chunked) and 100 MB chunked with kvmserver's
#               RSS growing by less than 64 MB; Expect: 100-continue; HEAD, 204, a close-delimited
#               answer re-chunked on a keep-alive connection, HTTP/1.0, a 2 MB download; a guest
#               answering garbage (502); the client's address as the guest's peer; >= 200 malformed
#               requests answered by the front (none reaching a guest: the guest connection count
#               does not move); a slowloris client (408 after --max-header-time); --stats counts
#               client connections and requests apart from guest connections. Identity: 200
#               requests give 200 different pids and random bytes (getrandom, /dev/urandom,
#               /dev/random); a MADV_WIPEONFORK page reads zeros, a MADV_DONTFORK page stays
#               (the request runs the whole server) and is gone in a child the request forks.
#   connection  the same keep-alive client in connection mode: requests share state (the leak);
#               identity and fork flags as in request mode (every connection is a new copy).
#   nginx       nginx with upstream keepalive in front: fresh in request mode, leaking in
#               connection mode; and kvmserver's front on a Unix socket behind nginx.
#   activation  systemd-socket-activate passes the listening socket to kvmserver: the front's in
#               request mode, the guest's listener in connection mode.
#   listeners   a guest with two listeners: both served in both modes.
#
# Usage: tests/e2e/isolation.sh [KVMSERVER [GUESTS]]
# Environment: ISOLATION_FILTER (regex on group names), and those of tests/e2e/lib.sh.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
e2e_binaries "$@"
SERVER=$GUESTS/servers/request_server
ISOLATION_FILTER=${ISOLATION_FILTER:-}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"
e2e_init isolation
enabled() { [ -z "$ISOLATION_FILTER" ] || [[ $1 =~ $ISOLATION_FILTER ]]; }
FRONT=("$PYTHON" "$here/front_client.py")

# scenario NAME ARGS... : front_client.py ARGS; its ok/FAIL lines become our PASS/FAIL lines.
scenario() {
  local name=$1 line out
  shift
  out=$(timeout -s KILL 900 "${FRONT[@]}" "$@" 2>&1)
  while IFS= read -r line; do
    case $line in
      ok\ *) pass "$name:${line#ok }" ;;
      FAIL\ *) fail "$name:${line#FAIL }" "server stderr: $(tail_of "$SLOG.err" 4)" ;;
      \#*) info "$line" ;;
      *) [ -n "$line" ] && info "  $line" ;;
    esac
  done <<<"$out"
  grep -q '^\(ok\|FAIL\) ' <<<"$out" || fail "$name" "no result: $(head -c 400 <<<"$out")"
}

rss_kb() { awk "/^$1:/ { print \$2 }" /proc/"$SPID"/status; }
# stats_now : kvmserver's request count now (SIGUSR1 prints the stats).
stats_now() {
  local lines
  lines=$(grep -c '^kvmserver: stats: requests=' "$SLOG.err")
  kill -USR1 "$SPID"
  for _ in $(seq 100); do
    [ "$(grep -c '^kvmserver: stats: requests=' "$SLOG.err")" -gt "$lines" ] && break
    sleep 0.1
  done
  grep '^kvmserver: stats: requests=' "$SLOG.err" | tail -n1 | sed -E 's/.*requests=([0-9]+).*/\1/'
}
# guest_connections : the guest connection count once it is settled (a request is counted when
# its worker has been reset, a little after its answer).
guest_connections() {
  local a b
  a=$(stats_now)
  for _ in $(seq 20); do
    sleep 0.5
    b=$(stats_now)
    [ "$a" = "$b" ] && break
    a=$b
  done
  echo "$b"
}

# identity GROUP PORT : every request is a new process: new pid, fresh random bytes, fork flags.
identity() {
  distinct "$1.fresh_identity" --port "$2" --count 200 --path /random
  expect_fetch "$1.fork_flags" "$2" /forkflags 'wipe=0 dontfork=mapped child_wipe=0 child_dontfork=gone\n'
}

request_group() {
  enabled request || return 0
  need request "$SERVER" || return 0
  local port
  port=$(free_port)
  start_kvm request --isolate=request -t 2 --stats --max-header-time=3 --max-request-body=200 \
    --allow-listen=127.0.0.1:"$port" -- "$SERVER" "$port"
  if ! wait_ready; then fail request.ready "$WHY"; return; fi
  if [[ $READY == *", per request" ]]; then pass request.ready; else fail request.ready "ready line: $READY"; fi
  scenario request keepalive --port "$port" --connections 4 --count 500 --expect fresh
  identity request "$port"
  scenario request pipeline --port "$port"
  scenario request upload --port "$port" --mb 1
  scenario request upload --port "$port" --mb 1 --chunked
  local idle
  idle=$(rss_kb VmRSS)
  scenario request upload --port "$port" --mb 100 --chunked
  local peak
  peak=$(rss_kb VmHWM)
  info "  kvmserver RSS idle ${idle} kB, peak after a 100 MB upload ${peak} kB"
  if [ $((peak - idle)) -lt $((64 * 1024)) ]; then pass request.upload_memory_bounded; else fail request.upload_memory_bounded "RSS grew by $(((peak - idle) / 1024)) MB"; fi
  scenario request expect --port "$port"
  scenario request awkward --port "$port"
  scenario request garbage --port "$port"
  scenario request peer --port "$port" --guest-port "$port"
  local before after
  before=$(guest_connections)
  scenario request malformed --port "$port" --max-body-mb 200
  scenario request slow --port "$port" --header-time 3
  after=$(guest_connections)
  scenario request badbody --port "$port"
  if [ -n "$before" ] && [ "$before" = "$after" ]; then
    pass request.nothing_reached_the_guest
  else
    fail request.nothing_reached_the_guest "guest connections went from ${before:-?} to ${after:-?}"
  fi
  expect_fetch request.still_serving "$port" /id/last 'counter=1 prev=\n'
  stop_check request
  if grep -Eq '^kvmserver: stats: front: client_connections=[0-9]+ client_requests=[0-9]+ rejected=[1-9]' "$SLOG.err"; then
    pass request.stats
  else
    fail request.stats "no front line in --stats: $(grep 'stats:' "$SLOG.err" | tail -n 4 | tr '\n' '|')"
  fi
}

connection_group() {
  enabled connection || return 0
  need connection "$SERVER" || return 0
  local port
  port=$(free_port)
  start_kvm connection -t 2 -e --allow-listen=127.0.0.1:"$port" -- "$SERVER" "$port"
  if ! wait_ready; then fail connection.ready "$WHY"; return; fi
  scenario connection keepalive --port "$port" --connections 2 --count 40 --expect leak
  identity connection "$port"
  stop_check connection
}

# nginx_conf FILE PORT UPSTREAM : a reverse proxy on 127.0.0.1:PORT keeping 8 upstream connections.
nginx_conf() {
  mkdir -p "$tmp/nginx"
  cat >"$1" <<EOF
worker_processes 1;
daemon off;
$([ "$(id -u)" = 0 ] && echo "user root;")
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  upstream kvms { server $3; keepalive 8; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://kvms;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

# behind_nginx NAME EXPECT KVMSERVER-FLAGS... : kvmserver behind nginx; 500 requests over 4
# keep-alive client connections, answers fresh or leaking as EXPECT says.
behind_nginx() {
  local name=$1 expect=$2 port nport upstream
  shift 2
  port=$(free_port)
  nport=$(free_port)
  upstream=127.0.0.1:$port
  local -a flags=("$@")
  if [ "${flags[0]:-}" = --unix ]; then
    upstream=unix:$tmp/front.sock
    flags=(--listen="unix:$tmp/front.sock" "${flags[@]:1}")
  fi
  start_kvm "$name" "${flags[@]}" --allow-listen=127.0.0.1:"$port" -- "$SERVER" "$port"
  if ! wait_ready; then fail "$name.ready" "$WHY"; return; fi
  local kpid=$SPID klog=$SLOG kwatch=$SWATCH
  nginx_conf "$tmp/nginx-$name.conf" "$nport" "$upstream"
  start "nginx-$name" nginx -c "$tmp/nginx-$name.conf"
  local npid=$SPID nwatch=$SWATCH
  local i
  for ((i = 0; i < 100; i++)); do
    "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $nport), 1)" 2>/dev/null && break
    sleep 0.1
  done
  SLOG=$klog
  scenario "$name" keepalive --port "$nport" --connections "${NGINX_CONNECTIONS:-4}" --count "${NGINX_REQUESTS:-500}" --expect "$expect"
  [ "$failed" = 0 ] || info "  nginx error log: $(tail_of "$tmp/nginx/error.log" 3)"
  SPID=$npid SWATCH=$nwatch
  stop QUIT
  SPID=$kpid SLOG=$klog SWATCH=$kwatch
  stop_check "$name"
}

nginx_group() {
  enabled nginx || return 0
  if ! command -v nginx >/dev/null; then fail nginx "no nginx (scripts/setup.sh installs it)"; return; fi
  need nginx "$SERVER" || return 0
  behind_nginx nginx.request fresh --isolate=request -t 2
  # In connection mode each worker serves one upstream connection for its whole life: with nginx
  # keeping several open, more than the workers wait forever. One client connection at a time.
  NGINX_CONNECTIONS=1 NGINX_REQUESTS=20 behind_nginx nginx.connection leak -t 2 -e
  behind_nginx nginx.unix fresh --unix --isolate=request -t 2
}

activation_group() {
  enabled activation || return 0
  if ! command -v systemd-socket-activate >/dev/null; then fail activation "no systemd-socket-activate"; return; fi
  local mode port gport name expect
  for mode in request connection; do
    name=activation.$mode expect=fresh
    [ "$mode" = connection ] && expect=leak
    port=$(free_port)
    gport=$(free_port)
    start "$name" systemd-socket-activate -l 127.0.0.1:"$port" "$KVMSERVER" "${EXTRA_FLAGS[@]}" --isolate="$mode" -t 2 -e \
      --allow-listen=127.0.0.1:"$gport" run -- "$SERVER" "$gport"
    # systemd-socket-activate starts kvmserver at the first connection: that request waits for it.
    # (Until systemd-socket-activate itself listens, connecting fails: exit 4, try again.)
    local got i
    for ((i = 0; i < 100; i++)); do
      got=$(client fetch --port "$port" --timeout 120 /id/first 2>/dev/null)
      [ $? = 4 ] || break
      sleep 0.1
    done
    if [ "$got" = "counter=1 prev=" ]; then pass "$name.first"; else fail "$name.first" "got '$got'; stderr: $(tail_of "$SLOG.err")"; fi
    if wait_ready && [[ $READY == *"listening on 127.0.0.1:$port "* ]]; then
      pass "$name.ready_names_the_passed_socket"
    else
      fail "$name.ready_names_the_passed_socket" "ready: '$READY' $WHY"
    fi
    # In connection mode the guest listens on the passed socket instead of its own address.
    if [ "$mode" = connection ]; then
      expect_fetch "$name.guest_sees_the_passed_socket" "$port" /sock "127.0.0.1:$port\n"
      if client fetch --port "$gport" --timeout 5 /id/x >/dev/null 2>&1; then
        fail "$name.own_address_unused" "the guest's own address $gport answers"
      else
        pass "$name.own_address_unused"
      fi
    fi
    scenario "$name" keepalive --port "$port" --connections 1 --count 20 --expect "$expect"
    stop_check "$name"
  done
}

# A guest listening on two ports: connections to each are served, in both modes.
listeners_group() {
  enabled listeners || return 0
  need listeners "$SERVER" || return 0
  local mode port port2
  for mode in request connection; do
    port=$(free_port)
    port2=$(free_port)
    start_kvm "listeners.$mode" --isolate="$mode" -t 2 -e --allow-listen=127.0.0.1:"$port" --allow-listen=127.0.0.1:"$port2" \
      -- "$SERVER" "$port" "$port2"
    if ! wait_ready; then fail "listeners.$mode.ready" "$WHY"; continue; fi
    many "listeners.$mode.first" --port "$port" --count 10 --path /id/a --expect 'counter=1 prev=\n'
    many "listeners.$mode.second" --port "$port2" --count 10 --path /id/b --expect 'counter=1 prev=\n'
    expect_fetch "listeners.$mode.second_sock" "$port2" /sock "127.0.0.1:$port2\n"
    stop_check "listeners.$mode"
  done
}

info "kvmserver: $KVMSERVER"
request_group
connection_group
listeners_group
nginx_group
activation_group
e2e_summary

#!/usr/bin/env bash
# Snapshot files (issue 11) with the C epoll server (tests/guests/servers/epoll_server.c), from
# outside: `kvmserver snapshot`, `--snapshot-on-ready`, `serve`, `inspect`, and hostile files.
# (The runtimes' snapshots are in tests/e2e/runtimes.sh, servers group.)
#
#   make        snapshot --output after -w 5 --warmup-path=/secret/warm (state: buffer, heap, a file
#               in the granted directory and an fd kept open on another): exit 0, one "wrote" line;
#               the file is about the template's resident memory, not more (no zero pages);
#               inspect and inspect --verify exit 0 and name program, listener, grants
#   serve       serve FILE -t 2 -e --stats: SNAPSHOT_REQUESTS /id/ requests all see the warmed
#               template (counter=1 prev=warm), /check shows the warm-up's buffer, heap, file and
#               fd; the answers are byte-identical to the booted server's (--snapshot-on-ready, the
#               same warm-up) and so are the per-request counters (VM exits, syscalls, pages reset)
#   twice       the same file served by two kvmservers at once (--listen to other ports), -t 1
#               persistent: each counts on from the template on its own
#   grants      grant flags replace the recorded ones (printed); a grant set that does not reach the
#               template's listener or kept file is refused with one line, exit 2
#   changed     the kept file changes on the host: serve refuses (exit 2, one line naming it);
#               --reopen-changed-files serves
#   hostile     empty, truncated, extended, a directory, missing, bit flips in header and
#               description, another format version, a flipped memory byte (refused by
#               serve --verify and inspect --verify; plain serve does not read the image): each
#               refused with one line, exit 2, nothing listening
#   usage       serve without FILE, serve with `run`, --env with serve, snapshot without --output:
#               exit 2, one line
#
# Usage: tests/e2e/snapshot.sh [KVMSERVER [GUESTS]]  (needs /dev/kvm: through tools/with-kvm)
# Environment: SNAPSHOT_REQUESTS (200), and lib.sh's.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
e2e_binaries "${1:-}" "${2:-}"
SERVER=$GUESTS/servers/epoll_server
SNAPSHOT_REQUESTS=${SNAPSHOT_REQUESTS:-200}
e2e_init snapshot
t_start=$(now_ms)
need snapshot "$SERVER" || { e2e_summary; exit 1; }

# The granted directory is outside /tmp: an ephemeral template's /tmp is private, and saved whole.
data=$root/build/snapshot-e2e.$$
rm -rf "$data" && mkdir -p "$data"
trap 'rm -rf "$data"; e2e_cleanup' EXIT
snap=$tmp/epoll.snap
port=$(free_port)
warm=(-w 5 --warmup-path=/secret/warm "--allow-listen=127.0.0.1:$port" "--allow-write=$data")

# one_line_refusal CASE STATUS REGEX -- CMD... : like lib.sh's check (exit status, one stderr line).
one_line_refusal() { check "$@"; }

# counters_of LOG : "vm_exits=… syscalls=… pages_reset=…" of the per-request stats line.
counters_of() {
  grep -m1 '^kvmserver: stats: per request: ' "$1" | sed -E 's/.*(vm_exits=[0-9.]+).*(syscalls=[0-9.]+).*(pages_reset=[0-9.]+).*/\1 \2 \3/'
}

# ---- make ---------------------------------------------------------------------------------------
t0=$(now_ms)
check make.exit 0 '^kvmserver: snapshot: wrote ' -- "$KVMSERVER" snapshot --output "$snap" "${warm[@]}" run -- "$SERVER" "$port" "$data"
info "  $(grep -m1 'snapshot: wrote' <<<"$LAST_ERR")"
if [ -f "$snap" ]; then
  pass make.file
  # No zero pages: the file is about the template's resident memory ("template resident X MiB").
  resident=$(sed -nE 's/.*template resident ([0-9.]+) MiB.*/\1/p' <<<"$LAST_ERR")
  size_mib=$(awk -v b="$(stat -c %s "$snap")" 'BEGIN { printf "%.1f", b / 1048576 }')
  if awk -v s="$size_mib" -v r="${resident:-0}" 'BEGIN { exit !(r > 0 && s <= r * 1.1 + 0.2) }'; then
    pass make.size
  else
    fail make.size "file $size_mib MiB, template resident ${resident:-?} MiB"
  fi
else
  fail make.file "no $snap"
fi
[ -e "$data/kept.txt" ] && pass make.warm_state || fail make.warm_state "the warm-up did not open $data/kept.txt"
check inspect 0 '' -- "$KVMSERVER" inspect "$snap"
if grep -q "^listeners: 127.0.0.1:$port" <<<"$LAST_OUT" && grep -q -- "--allow-write=$data" <<<"$LAST_OUT" &&
   grep -q "^program: $SERVER" <<<"$LAST_OUT"; then
  pass inspect.content
else
  fail inspect.content "$(tr '\n' '|' <<<"$LAST_OUT")"
fi
check inspect.verify 0 '' -- "$KVMSERVER" inspect --verify "$snap"
grep -q '^verified: ' <<<"$LAST_OUT" && pass inspect.verified || fail inspect.verified "$(tr '\n' '|' <<<"$LAST_OUT")"
info "make: $(secs $(($(now_ms) - t0))) s"

# ---- serve --------------------------------------------------------------------------------------
t0=$(now_ms)
# The same server booted normally, with the same warm-up (and --snapshot-on-ready writes a second
# file on the way): its answers and counters are what serving from the file must give.
rm -f "$data/kept.txt" "$data/secret.txt"
start booted "$KVMSERVER" -t 2 -e --stats --snapshot-on-ready "$tmp/on-ready.snap" "${warm[@]}" run -- "$SERVER" "$port" "$data"
if wait_ready; then
  grep -q '^kvmserver: snapshot: wrote ' "$SLOG.err" && pass on_ready.written || fail on_ready.written "$(tail_of "$SLOG.err")"
  fetch "$port" /check; booted_check=$BODY
  fetch "$port" /id/x; booted_id=$BODY
  many booted.requests --port "$port" --count 25 --threads 2 --path '/id/r{i}' --expect 'counter=1 prev=warm\n'
  stop_check booted
  booted_counters=$(counters_of "$tmp/booted.err")
else
  fail on_ready.ready "$WHY"
  stop KILL
fi
# kept.txt was re-created by that boot: take the first snapshot's view back (same inode needed).
check on_ready.inspect 0 '' -- "$KVMSERVER" inspect --verify "$tmp/on-ready.snap"

start served "$KVMSERVER" serve "$tmp/on-ready.snap" -t 2 -e --stats
if wait_ready; then
  pass serve.ready
  info "  $(grep -m1 'loaded in' "$SLOG.err")"
  grep -q 'grants as recorded in the snapshot' "$SLOG.err" && pass serve.grants_printed || fail serve.grants_printed "$(tail_of "$SLOG.err")"
  fetch "$port" /check
  [ "$BODY" = $'buffer=warm heap=warm file=exists fd=open\n' ] && pass serve.warm_state || fail serve.warm_state "/check answered '$BODY'"
  [ "$BODY" = "$booted_check" ] && pass serve.identical_check || fail serve.identical_check "booted '$booted_check', served '$BODY'"
  fetch "$port" /id/x
  [ "$BODY" = "$booted_id" ] && [ -n "$BODY" ] && pass serve.identical_id || fail serve.identical_id "booted '$booted_id', served '$BODY'"
  many serve.requests --port "$port" --count 25 --threads 2 --path '/id/r{i}' --expect 'counter=1 prev=warm\n'
  stop_check served
  served_counters=$(counters_of "$tmp/served.err")
  info "  counters booted: $booted_counters; served from the file: $served_counters"
  if [ -n "$served_counters" ] && [ "$served_counters" = "$booted_counters" ]; then
    pass serve.same_counters
  else
    fail serve.same_counters "booted: '$booted_counters', from the file: '$served_counters'"
  fi
else
  fail serve.ready "$WHY"
  stop KILL
fi

start served_many "$KVMSERVER" serve "$snap" -t 2 -e --stats --reopen-changed-files
if wait_ready; then
  many serve.many --port "$port" --count $((SNAPSHOT_REQUESTS / 2)) --threads 2 --path '/id/m{i}' --expect 'counter=1 prev=warm\n'
  stop_check served_many
  n=$(stat_field requests "$tmp/served_many.err")
  [ "$n" = "$SNAPSHOT_REQUESTS" ] && pass serve.many.stats || fail serve.many.stats "--stats says requests=${n:-?}"
else
  fail serve.many.ready "$WHY"
  stop KILL
fi
info "serve: $(secs $(($(now_ms) - t0))) s"

# ---- twice --------------------------------------------------------------------------------------
t0=$(now_ms)
p1=$(free_port)
p2=$(free_port)
start twice1 "$KVMSERVER" serve "$snap" -t 1 --reopen-changed-files "--listen=127.0.0.1:$p1"
pid1=$SPID log1=$SLOG
if wait_ready; then
  start twice2 "$KVMSERVER" serve "$snap" -t 1 --reopen-changed-files "--listen=127.0.0.1:$p2"
  if wait_ready; then
    pass twice.ready
    expect_fetch twice.first_a "$p1" /id/a 'counter=1 prev=warm\n'
    expect_fetch twice.first_b "$p2" /id/b 'counter=1 prev=warm\n'
    expect_fetch twice.second_a "$p1" /id/c 'counter=2 prev=a\n'
    expect_fetch twice.second_b "$p2" /id/d 'counter=2 prev=b\n'
    stop_check twice2
  else
    fail twice.ready "$WHY"
    stop KILL
  fi
  SPID=$pid1 SLOG=$log1
  stop_check twice1
else
  fail twice.ready "$WHY"
  stop KILL
fi
info "twice: $(secs $(($(now_ms) - t0))) s"

# ---- grants -------------------------------------------------------------------------------------
other=$(free_port)
check grants.listener_not_granted 2 'not granted' -- \
  "$KVMSERVER" serve "$snap" -t 1 --reopen-changed-files "--allow-listen=127.0.0.1:$other" "--allow-write=$data"
check grants.kept_file_not_granted 2 'not reachable with these grants' -- \
  "$KVMSERVER" serve "$snap" -t 1 --reopen-changed-files "--allow-listen=127.0.0.1:$port"
start grants_replaced "$KVMSERVER" serve "$snap" -t 1 --reopen-changed-files "--allow-listen=127.0.0.1:$port" "--allow-write=$data" "--allow-read=/etc/hostname"
if wait_ready; then
  grep -q "from the command line (replacing the snapshot's): .*--allow-read=/etc/hostname" "$SLOG.err" &&
    pass grants.replaced_printed || fail grants.replaced_printed "$(tail_of "$SLOG.err")"
  expect_fetch grants.replaced_serves "$port" /id/a 'counter=1 prev=warm\n'
  stop_check grants_replaced
else
  fail grants.replaced_ready "$WHY"
  stop KILL
fi

# ---- changed ------------------------------------------------------------------------------------
# The booted run above re-created kept.txt (another inode): the first snapshot's kept file changed.
check changed.refused 2 'kept.txt changed since the snapshot was made' -- "$KVMSERVER" serve "$snap" -t 1
start changed_reopened "$KVMSERVER" serve "$snap" -t 1 -e --reopen-changed-files
if wait_ready; then
  expect_fetch changed.reopened "$port" /check 'buffer=warm heap=warm file=exists fd=open\n'
  stop_check changed_reopened
else
  fail changed.reopened "$WHY"
  stop KILL
fi
# Unchanged since: the on-ready snapshot's kept file is the one on disk now.
start unchanged "$KVMSERVER" serve "$tmp/on-ready.snap" -t 1
if wait_ready; then pass changed.unchanged_serves; stop_check unchanged; else fail changed.unchanged_serves "$WHY"; stop KILL; fi
echo more >>"$data/kept.txt"
check changed.appended_refused 2 'changed since the snapshot was made' -- "$KVMSERVER" serve "$tmp/on-ready.snap" -t 1

# ---- hostile ------------------------------------------------------------------------------------
t0=$(now_ms)
size=$(stat -c %s "$snap")
# mutate NAME OFFSET : a copy of the snapshot with the byte at OFFSET inverted.
mutate() {
  cp "$snap" "$tmp/$1.snap"
  printf "$(printf '\\%03o' $((255 - $(od -An -tu1 -j "$2" -N1 "$snap"))))" |
    dd of="$tmp/$1.snap" bs=1 seek="$2" conv=notrunc status=none
}
: >"$tmp/empty.snap"
head -c 5000 "$snap" >"$tmp/truncated.snap"
head -c $((size - 4096)) "$snap" >"$tmp/short.snap"
cp "$snap" "$tmp/extended.snap" && printf x >>"$tmp/extended.snap"
mutate magic 0
mutate header_field 20
mutate header_version 70
mutate description 4200
mutate description_late $((4096 + 600))
cp "$snap" "$tmp/format.snap" && printf '\002' | dd of="$tmp/format.snap" bs=1 seek=8 conv=notrunc status=none
mem=$((size - 4096 * 3))
mutate memory "$mem"
mkdir -p "$tmp/dir.snap"
for f in empty truncated short extended magic header_field header_version description description_late; do
  check "hostile.$f" 2 "^kvmserver: $tmp/$f.snap: " -- "$KVMSERVER" serve "$tmp/$f.snap" -t 1
done
check hostile.format 2 'snapshot format 2 .*this kvmserver reads format 1' -- "$KVMSERVER" serve "$tmp/format.snap" -t 1
check hostile.directory 2 'not a regular file' -- "$KVMSERVER" serve "$tmp/dir.snap" -t 1
check hostile.missing 2 'No such file' -- "$KVMSERVER" serve "$tmp/nothing.snap" -t 1
check hostile.inspect_truncated 2 'truncated|extended|header' -- "$KVMSERVER" inspect "$tmp/truncated.snap"
check hostile.memory_verify 2 'corrupted memory image: chunk' -- "$KVMSERVER" serve --verify "$tmp/memory.snap" -t 1
check hostile.memory_inspect_verify 2 'corrupted memory image' -- "$KVMSERVER" inspect --verify "$tmp/memory.snap"
check hostile.memory_inspect_plain 0 '' -- "$KVMSERVER" inspect "$tmp/memory.snap"
# Nothing was left listening by any refused serve.
if client fetch --port "$port" --timeout 2 / >/dev/null 2>&1; then
  fail hostile.nothing_listening "something answers on $port after the refused loads"
else
  pass hostile.nothing_listening
fi
info "hostile: $(secs $(($(now_ms) - t0))) s"

# ---- usage --------------------------------------------------------------------------------------
check usage.serve_without_file 2 'serve needs a snapshot FILE' -- "$KVMSERVER" serve
check usage.serve_with_run 2 'serve takes no program' -- "$KVMSERVER" serve "$snap" run -- /bin/true
check usage.serve_env 2 'the environment is in the snapshot' -- "$KVMSERVER" serve "$snap" --env=A=B
check usage.snapshot_without_output 2 'snapshot needs --output FILE' -- "$KVMSERVER" snapshot run -- "$SERVER" "$port"
check usage.output_unwritable 2 'not writable|No such file' -- "$KVMSERVER" snapshot --output /nonexistent/dir/x.snap run -- "$SERVER" "$port"

info "total: $(secs $(($(now_ms) - t_start))) s"
e2e_summary

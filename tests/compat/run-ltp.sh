#!/usr/bin/env bash
# Runs LTP's syscall tests (built by tests/compat/build-ltp.sh) natively and under
# `kvmserver --allow-all run`, same binaries, same machine, and prints a markdown table per family:
# runtest entries, native passes, kvmserver passes among them, kvmserver's own errors (exit 125,
# "internal error", a kvmserver crash: told apart from the test's failures) and the first failing
# line of each failure. The rate is kvmserver passes / native passes (entries that pass natively;
# TCONF, "not applicable here", counts for neither). Run it in the nested machine:
#
#   tools/with-kvm tests/compat/run-ltp.sh [KVMSERVER]
#
# Environment: FILTER (a regex on runtest entry names), LIMIT (at most this many entries),
# KVMS_COMPAT_DIR (default .cache/compat), NATIVE_TIMEOUT (s, 60), KVM_TIMEOUT (s, 180).
# Writes $KVMS_COMPAT_DIR/ltp-results.md and ltp-logs/. Exit 0 unless kvmserver itself failed
# (exit 125 or an internal error) on some entry, or nothing ran.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
KVMSERVER=$(realpath "${1:-$root/build/kvmserver}")
out=${KVMS_COMPAT_DIR:-$root/.cache/compat}
ltp=$out/ltp
syscalls=$ltp/testcases/kernel/syscalls
[ -d "$syscalls" ] || { echo "run-ltp.sh: no LTP build in $ltp (tests/compat/build-ltp.sh)" >&2; exit 1; }
[ -x "$KVMSERVER" ] || { echo "run-ltp.sh: no kvmserver at $KVMSERVER" >&2; exit 1; }
logs=$out/ltp-logs
rm -rf "$logs"
mkdir -p "$logs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Every built test binary, by name: its family is its directory. (Files, not process substitution:
# the nested machine has no /dev/fd.)
find "$syscalls" -mindepth 2 -maxdepth 2 -type f -perm -u+x ! -name '*.sh' ! -name '*.o' ! -name Makefile >"$work/binaries"
sed 's/#.*//' "$ltp/runtest/syscalls" >"$work/runtest"
declare -A family_of dir_of
while IFS= read -r bin; do
  name=$(basename "$bin")
  dir=$(dirname "$bin")
  family_of[$name]=$(basename "$dir")
  dir_of[$name]=$dir
done <"$work/binaries"

# LTP's exit status: 0 pass, 32 TCONF only (not applicable), anything else a failure.
classify() { case $1 in 0) echo pass ;; 32) echo conf ;; 124 | 137) echo timeout ;; *) echo fail ;; esac; }
first_failure() { grep -m1 -E 'TFAIL|TBROK|kvmserver:|Segmentation|Killed' "$1" | tr -s ' \t' ' ' | cut -c1-160; }

t0=$(date +%s)
ran=0 kvm_errors=0
: >"$work/rows"
while read -r entry cmd args; do
  [ -z "${entry:-}" ] && continue
  case $entry in \#*) continue ;; esac
  [ -n "${FILTER:-}" ] && ! [[ $entry =~ $FILTER ]] && continue
  [ -n "${family_of[$cmd]:-}" ] || continue  # not built (another family, or needs what we skipped)
  [ -n "${LIMIT:-}" ] && [ "$ran" -ge "$LIMIT" ] && break
  dir=${dir_of[$cmd]}
  read -r -a argv <<<"${args:-}"
  mkdir -p "$work/tmp-native" "$work/tmp-kvm"
  (cd "$dir" && TMPDIR=$work/tmp-native PATH=$dir:$PATH LTP_TIMEOUT_MUL=3 timeout -s KILL "${NATIVE_TIMEOUT:-60}" \
    "$dir/$cmd" "${argv[@]}") </dev/null >"$logs/$entry.native" 2>&1
  native=$(classify $?)
  (cd "$dir" && TMPDIR=$work/tmp-kvm PATH=$dir:$PATH LTP_TIMEOUT_MUL=10 timeout -s KILL "${KVM_TIMEOUT:-180}" \
    "$KVMSERVER" --allow-all --cwd="$dir" run -- "$dir/$cmd" "${argv[@]}") </dev/null >"$logs/$entry.kvm" 2>&1
  status=$?
  kvm=$(classify $status)
  own=0
  if [ "$status" = 125 ] || grep -q "^kvmserver: .*internal error" "$logs/$entry.kvm"; then own=1; kvm_errors=$((kvm_errors + 1)); fi
  why=""
  [ "$native" = pass ] && [ "$kvm" != pass ] && why=$(first_failure "$logs/$entry.kvm")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${family_of[$cmd]}" "$entry" "$native" "$kvm" "$own" "${why:-$kvm}" >>"$work/rows"
  ran=$((ran + 1))
done <"$work/runtest"
[ "$ran" -gt 0 ] || { echo "run-ltp.sh: no runtest entry ran (FILTER=${FILTER:-})" >&2; exit 1; }

python3 - "$work/rows" "$out/ltp-results.md" "$(git -C "$root" rev-parse --short HEAD 2>/dev/null)" "$(($(date +%s) - t0))" <<'PY'
import collections, sys, datetime
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
fam = collections.OrderedDict()
for f, entry, native, kvm, own, why in rows:
    d = fam.setdefault(f, {"entries": 0, "native": 0, "kvm": 0, "own": 0, "conf": 0, "kconf": 0, "fails": []})
    d["entries"] += 1
    d["own"] += int(own)
    if native == "conf": d["conf"] += 1
    if native == "pass" and kvm == "conf": d["kconf"] += 1  # e.g. needs root: the guest is uid 1000
    if native == "pass":
        d["native"] += 1
        if kvm == "pass": d["kvm"] += 1
        else: d["fails"].append(f"{entry}: {why}")
lines = [f"LTP syscall tests, natively and under `kvmserver --allow-all run` (unmodified harness, static), "
         f"{datetime.date.today()}, commit {sys.argv[3]}, {sys.argv[4]} s in the nested machine.", "",
         "| family | entries | TCONF natively | pass natively | pass under kvmserver | TCONF under kvmserver | kvmserver errors | first failures |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
tn = tk = to = te = 0
for f, d in sorted(fam.items()):
    tn += d["native"]; tk += d["kvm"]; to += d["own"]; te += d["entries"]
    fails = "; ".join(d["fails"][:3]).replace("|", "/") + (f" (+{len(d['fails']) - 3})" if len(d["fails"]) > 3 else "")
    lines.append(f"| {f} | {d['entries']} | {d['conf']} | {d['native']} | {d['kvm']} | {d['kconf']} | {d['own']} | {fails} |")
rate = 100.0 * tk / tn if tn else 0.0
kconf = sum(d["kconf"] for d in fam.values())
lines += ["", f"**{tk} of {tn} natively passing entries pass under kvmserver ({rate:.1f} %)**; {te} entries ran, "
          f"kvmserver's own errors: {to}; {kconf} natively passing entries say TCONF under kvmserver (most: "
          f"they need root, and the guest is never root: uid 1000)."]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "run-ltp.sh: logs in $logs"
[ "$kvm_errors" = 0 ]

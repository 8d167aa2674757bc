#!/usr/bin/env bash
# Runs gVisor's syscall tests (built by tests/compat/build-gvisor.sh) natively and under
# `kvmserver --allow-all run`, same binaries, same machine, and prints a markdown table per binary:
# test cases, native passes, kvmserver passes among them, natively passing cases kvmserver skips
# (the test's own check: a capability the uid-1000 guest lacks, a feature it lacks), kvmserver's own
# errors (exit 125, an "internal error", kvmserver killed by SIGSEGV: told apart from the test's
# failures) and the first failing assertions; then the most common failing assertions and skip
# reasons over all binaries. The rate is kvmserver passes / native passes. Run it in the nested
# machine (natively the tests run as its root; the whole selection takes over an hour there):
#
#   WITH_KVM_TIMEOUT=10800 tools/with-kvm tests/compat/run-gvisor.sh [KVMSERVER]
#
# Each binary runs whole on each side, its gtest JSON (--gtest_output) giving per-case results. A
# case that kills its process (a crash, kvmserver's own error), or makes no progress for its time
# limit, is recorded as such from the streamed output, and the binary runs again without the cases
# done (--gtest_filter), until every case has a result. Time limits (no new gtest line for): natively
# NATIVE_TIMEOUT; under kvmserver 30 s plus 10 times the case's native time, at most KVM_TIMEOUT.
# After two instances of a parametrized test (Suite.Test/N) time out, its other instances are not
# run but counted as time-outs (hangs come by the dozen: one per socket type).
#
# Environment: FILTER (a regex on binary names, e.g. '^(read|eventfd)_test'), LIMIT (at most this
# many binaries), KVMS_COMPAT_DIR (default .cache/compat), NATIVE_TIMEOUT (s, 60), KVM_TIMEOUT
# (s, 180). Writes $KVMS_COMPAT_DIR/gvisor-results.md and gvisor-logs/ (per binary: NAME.cases.tsv,
# every case's result on both sides and kvmserver's first failing assertion or skip reason, and
# the raw outputs NAME.SIDE.N.out/json of each attempt N); progress to stderr. REPORT_ONLY=1 runs
# nothing: it writes the table again from the logs of the last run (FILTER applies). Exit 0 unless
# kvmserver itself failed on some case, or nothing ran.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
KVMSERVER=$(realpath "${1:-$root/build/kvmserver}")
out=${KVMS_COMPAT_DIR:-$root/.cache/compat}
bindir=$out/gvisor/bin
[ -d "$bindir" ] || { echo "run-gvisor.sh: no gVisor build in $out/gvisor (tests/compat/build-gvisor.sh)" >&2; exit 1; }
[ -x "$KVMSERVER" ] || { echo "run-gvisor.sh: no kvmserver at $KVMSERVER" >&2; exit 1; }
command -v python3 >/dev/null || { echo "run-gvisor.sh: needs python3" >&2; exit 1; }
logs=$out/gvisor-logs
[ -n "${REPORT_ONLY:-}" ] || rm -rf "$logs"
mkdir -p "$logs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"

# One python process runs everything: starting an interpreter takes seconds in the nested machine.
# (No process substitution either: the nested machine has no /dev/fd.)
python3 - "$bindir" "$KVMSERVER" "$logs" "$work/tmp" "$out/gvisor-results.md" \
  "$(git -C "$root" rev-parse --short HEAD 2>/dev/null)" <<'PY'
import collections, datetime, json, os, re, signal, subprocess, sys, time

bindir, kvmserver, logs, tmpdir, md, commit = sys.argv[1:7]
FILTER, LIMIT = os.environ.get("FILTER", ""), os.environ.get("LIMIT", "")
TIMEOUT = {"native": float(os.environ.get("NATIVE_TIMEOUT", 60)), "kvm": float(os.environ.get("KVM_TIMEOUT", 180))}

def first_assertion(text):
    """file:line, the expression, what happened, what was expected: one line, short."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if not lines: return ""
    where = re.sub(r"^.*/", "", lines[0]).replace(": Failure", "").replace(": Skipped", "")
    rest = [l for l in lines[1:] if not l.startswith(("Google Test trace", "Stack trace"))][:4]
    # The expression, at most 60 characters: what it returned matters more.
    rest = [re.sub(r"^(Value of: .{60}).+", r"\1…", l) for l in rest]
    # What happened first (it names the errno), then what was expected.
    rest.sort(key=lambda l: 0 if l.startswith("Value of:") else 1 if l.startswith("Actual:") else 2)
    s = where + ": " + " / ".join(rest)
    s = re.sub(r"(with errno )?PosixError\(errno=(\d+) ([^)]*)\)", r"errno \2 \3", s)
    s = re.sub(r" \(of type [^)]*\)|Value of: ", "", s)
    return re.sub(r"\s+", " ", s).replace("|", "/")[:160]

def parse_stream(path):
    """Results from gtest's streamed output: case -> (result, message), the case left running and its
    first failing assertion if any. A "Check failed" line (TEST_CHECK, often in a forked child: the
    parent's assertion then only says the child aborted) says more than the assertion after it."""
    res, cur, msg, check = {}, None, [], ""
    def failure():
        text = first_assertion("".join(msg))
        if check: text = (text.split(": ", 1)[0] + ": " if msg else "") + re.sub(r"\s+", " ", check)
        return text[:160]
    for line in open(path, errors="replace"):
        m = re.match(r"\[ +(RUN|OK|FAILED|SKIPPED) +\] ([^\s,]+)", line)  # "NAME, where GetParam() = ..."
        if m and m.group(1) == "RUN":
            cur, msg, check = m.group(2), [], ""
        elif m and m.group(2) == cur:
            r = {"OK": "pass", "FAILED": "fail", "SKIPPED": "skip"}[m.group(1)]
            res[cur] = (r, "" if r == "pass" else first_assertion("".join(msg[:2])) if r == "skip" else failure())
            cur = None
        elif cur is not None and (msg or line.rstrip().endswith((": Failure", ": Skipped"))):
            if len(msg) < 20: msg.append(line)
        elif cur is not None and line.startswith("Check failed:") and not check:
            check = line.strip()
    return res, cur, failure() if cur and (msg or check) else ""

def parse_json(path):
    res = {}
    for suite in json.load(open(path)).get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = suite["name"] + "." + t["name"]
            if t.get("status") == "NOTRUN": continue
            if t.get("failures"): res[name] = ("fail", first_assertion(t["failures"][0].get("failure", "")))
            elif t.get("result") in ("SKIPPED", "SUPPRESSED"): res[name] = ("skip", "")
            else: res[name] = ("pass", "")
    return res

def gtest_filter(todo, cases):
    """A --gtest_filter for `todo`: whole suites as Suite.*, the rest by name (it is one argument)."""
    by_suite = collections.defaultdict(list)
    for c in cases: by_suite[c.split(".", 1)[0]].append(c)
    pats = []
    for s, cs in by_suite.items():
        left = [c for c in cs if c in todo]
        if len(left) == len(cs): pats.append(s + ".*")
        else: pats += left
    return ":".join(pats)

def list_cases(binary):
    p = subprocess.run([binary, "--gtest_list_tests"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace", timeout=600)
    names, suite = [], None
    for line in p.stdout.splitlines():
        line = line.split("#")[0].rstrip()  # "  Case/3  # GetParam() = ..."
        if not line: continue
        if not line.startswith(" "): suite = line.strip()
        elif suite and "DISABLED_" not in suite + line:
            names.append(suite + line.strip())
    return names

def case_limit(side, case, native_s):
    """How long a case may go without progress: NATIVE_TIMEOUT natively; under kvmserver 30 s plus 10
    times its native time (a passing case never took 15 s more than natively), at most KVM_TIMEOUT."""
    if side == "native": return TIMEOUT["native"]
    return min(TIMEOUT["kvm"], 30 + 10 * native_s.get(case, 0.0))

def attempt(side, name, prefix, n, filt, native_s):
    """Runs the binary once; a case without progress for its time limit is killed. (status, why, note)"""
    argv = [os.path.join(bindir, name), f"--gtest_output=json:{prefix}.{n}.json"] + ([f"--gtest_filter={filt}"] if filt else [])
    env = dict(os.environ)
    if side == "native": env["TEST_TMPDIR"] = tmpdir  # under kvmserver: the guest's own /tmp
    else: argv = [kvmserver, "--allow-all", f"--cwd={bindir}", "run", "--"] + argv
    outp = f"{prefix}.{n}.out"
    with open(outp, "wb") as f:
        # A session of its own: the test's children go too when a stuck case is killed.
        p = subprocess.Popen(argv, cwd=bindir, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    why, last, poll, buf = "crash", time.monotonic(), 0.05, b""
    limit = case_limit(side, None, native_s)
    with open(outp, "rb") as f:
        while True:
            try:
                p.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                poll = min(1.0, poll * 2)
            buf += f.read()
            *complete, buf = buf.split(b"\n")
            for line in complete:  # progress: [ RUN ], [ OK ], [ FAILED ], [ SKIPPED ]
                if line.startswith(b"[ "): last = time.monotonic()
                m = re.match(rb"\[ RUN +\] (\S+)", line)
                if m: limit = case_limit(side, m.group(1).decode(errors="replace"), native_s)
            if time.monotonic() - last > limit:
                why = "timeout"
                try: os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError: pass
                p.wait()
                break
    note = f"no progress for {limit:.0f} s" if why == "timeout" else ""
    st = p.returncode if p.returncode >= 0 else 128 - p.returncode
    if side == "kvm" and why != "timeout":
        text = open(outp, errors="replace").read()
        # What kvmserver said during the last case (a guest's fault, an internal error), without the
        # program's path.
        said = re.findall(r"^kvmserver: (?:\S+(?: \(pid \d+\))?: )?(.*)$", text[text.rfind("[ RUN"):], re.M)
        note = said[-1] if said else ""
        # kvmserver's own failure: exit 125, an internal error, or killed by SIGSEGV itself (a guest
        # process's fault is reported by a "kvmserver: PROGRAM ...: page fault ..." line).
        if st == 125 or re.search(r"^kvmserver: .*internal error", text, re.M) or \
                (st == 128 + signal.SIGSEGV and not re.search(r"^kvmserver: ", text, re.M)):
            why = "kvmserver-error"
    return st, why, note

def run_side(side, name, cases, native_s):
    """All cases of one binary on one side: attempts until every case has a result."""
    prefix = os.path.join(logs, f"{name}.{side}")
    done, n, own, filt, hung = {}, 0, 0, "", collections.Counter()
    while True:
        st, why, note = attempt(side, name, prefix, n, filt, native_s)
        own += why == "kvmserver-error"
        new = {}
        if os.path.exists(f"{prefix}.{n}.json"):
            try: new = parse_json(f"{prefix}.{n}.json")
            except ValueError: pass
        streamed, running, failed = parse_stream(f"{prefix}.{n}.out")
        for c, rm in streamed.items():  # the JSON has no reason for a skip, nor the "Check failed" lines
            if c not in new or (new[c][0] == rm[0] and (not new[c][1] or "Check failed" in rm[1])): new[c] = rm
        how = note or (f"killed by signal {st - 128}" if st > 128 else f"exit {st}")
        if running and running not in new:
            # What failed first, if anything did, then how the case ended (the hang or crash is often
            # the consequence: a failed call, then a wait for what it should have done).
            if failed:
                end = f" [then {why if why != 'crash' else how[:40]}]"
                new[running] = (why, failed[:160 - len(end)] + end)
            else:
                new[running] = (why, f"{why} ({how})"[:160])
            # Instances of a parametrized test (Suite.Test/N) mostly behave alike: after two of them
            # timed out, the others are not run (each would cost its time limit) but counted so.
            base, sep, _ = running.rpartition("/")
            if why == "timeout" and sep and "." in base:
                hung[base] += 1
                if hung[base] >= 2:
                    for c in cases:
                        if c.rpartition("/")[0] == base and c not in done and c not in new:
                            new[c] = ("timeout", failed[:120] + " [not run: 2 instances hung]" if failed else
                                      "timeout (not run: two other instances of this test timed out)")
        new = {c: rm for c, rm in new.items() if c in cases and c not in done}
        done.update(new)
        n += 1
        todo = set(cases) - set(done)
        if not todo: break
        if not new:  # the process fails before any case: the rest cannot run
            for c in todo: done[c] = (why, f"{why} before any case ({how})"[:160])
            break
        filt = gtest_filter(todo, cases)
    return done, own

def durations(prefix):
    """Each case's time in seconds, from the streamed outputs of a side's attempts."""
    d, n = {}, 0
    while os.path.exists(f"{prefix}.{n}.out"):
        for m in re.finditer(r"^\[ +(?:OK|FAILED|SKIPPED) +\] ([^\s,]+).* \((\d+) ms\)$", open(f"{prefix}.{n}.out", errors="replace").read(), re.M):
            d[m.group(1)] = int(m.group(2)) / 1000
        n += 1
    return d

def report(rows, seconds, commit, date, server):
    """The markdown table of rows (binary, cases, kvmserver's own errors) from the NAME.cases.tsv files."""
    lines = [f"gVisor syscall tests, natively and under `kvmserver --allow-all run` (gtest binaries, static), "
             f"{date}, commit {commit}, kvmserver {server}, {seconds} s in the nested machine.", "",
             "| binary | cases | pass natively | skip natively | pass under kvmserver | skip under kvmserver | kvmserver errors | first failures |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    tot = collections.Counter()
    groups = {"fail": collections.defaultdict(list), "skip": collections.defaultdict(list)}
    for name, ncases, own in rows:
        d = collections.Counter(cases=ncases, own=own)
        fails = []
        for l in open(os.path.join(logs, name + ".cases.tsv")):
            c, nat, kvm, msg = l.rstrip("\n").split("\t")
            d["nskip"] += nat == "skip"
            if nat != "pass": continue
            d["native"] += 1
            if kvm == "pass":
                d["kvm"] += 1
                continue
            d["kskip"] += kvm == "skip"
            if kvm != "skip": fails.append(f"{c}: {msg or kvm}"[:160])
            # Grouped by what the assertion printed (a skip: its first reason), wherever it is, with
            # addresses blanked out; one place it is at as an example.
            m = re.match(r"([\w.]+:\d+): (.*)", msg or kvm)
            where, what = (m.group(1), m.group(2)) if m else ("", msg or kvm)
            if kvm == "skip": what = what.split(" / ")[0]
            what = re.sub(r"no progress for \d+ s", "no progress for its time limit", re.sub(r"\b0x[0-9a-f]+\b", "0x…", what))
            groups["skip" if kvm == "skip" else "fail"][what].append((name, where))
        tot.update(d)
        first = "; ".join(fails[:3]).replace("|", "/") + (f" (+{len(fails) - 3})" if len(fails) > 3 else "")
        lines.append(f"| {name} | {d['cases']} | {d['native']} | {d['nskip']} | {d['kvm']} | {d['kskip']} | {d['own']} | {first} |")
    rate = 100.0 * tot["kvm"] / tot["native"] if tot["native"] else 0.0
    lines += ["", f"**{tot['kvm']} of {tot['native']} natively passing cases pass under kvmserver ({rate:.1f} %)**; "
              f"{len(rows)} binaries, {tot['cases']} cases, {tot['nskip']} skipped natively; {tot['kskip']} natively "
              f"passing cases skip under kvmserver (why: below); kvmserver's own errors: {tot['own']}."]
    for kind, title, top in (("fail", "Most common failures under kvmserver (natively passing cases), by what the "
                              "assertion printed:", 40),
                             ("skip", "Natively passing cases that skip under kvmserver, by the test's reason (a "
                              "capability: the guest is uid 1000 without any; else a missing feature):", 15)):
        lines += ["", title, "", "| cases | binaries | where (e.g.) | what |", "| --- | --- | --- | --- |"]
        for what, at in sorted(groups[kind].items(), key=lambda kv: -len(kv[1]))[:top]:
            places = sorted({w for _, w in at if w})
            where = (places[0] + (f" (+{len(places) - 1})" if len(places) > 1 else "")) if places else ""
            bins = " ".join(sorted({b for b, _ in at}))[:80]
            lines.append(f"| {len(at)} | {bins} | {where} | {what.replace('|', '/')} |")
    open(md, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))

info = os.path.join(logs, "run.json")  # what the report needs besides the cases, for REPORT_ONLY
if os.environ.get("REPORT_ONLY"):
    if not os.path.exists(info):
        print(f"run-gvisor.sh: no earlier run in {logs}", file=sys.stderr)
        sys.exit(1)
    r = json.load(open(info))
    rows = [row for row in r["rows"] if not FILTER or re.search(FILTER, row[0])]
    report(rows, r["seconds"], r["commit"], r["date"], r.get("kvmserver", "?"))
    sys.exit(1 if any(own for _, _, own in rows) else 0)

t0 = time.time()
rows = []
names = sorted(f for f in os.listdir(bindir) if f.endswith("_test") and os.access(os.path.join(bindir, f), os.X_OK))
for name in names:
    if FILTER and not re.search(FILTER, name): continue
    if LIMIT and len(rows) >= int(LIMIT): break
    t1 = time.time()
    cases = list_cases(os.path.join(bindir, name))
    if not cases:
        print(f"run-gvisor.sh: {name} lists no test case", file=sys.stderr)
        continue
    native, _ = run_side("native", name, cases, {})
    kvm, own = run_side("kvm", name, cases, durations(os.path.join(logs, f"{name}.native")))
    with open(os.path.join(logs, name + ".cases.tsv"), "w") as f:
        for c in cases:
            nat, (k, msg) = native.get(c, ("none", ""))[0], kvm.get(c, ("none", ""))
            f.write(f"{c}\t{nat}\t{k}\t{msg}\n")
    rows.append((name, len(cases), own))
    npass = sum(r == "pass" for r, _ in native.values())
    kpass = sum(native.get(c, ("",))[0] == "pass" and r == "pass" for c, (r, _) in kvm.items())
    print(f"run-gvisor.sh: {name}: {len(cases)} cases, {npass} pass natively, {kpass} of them under kvmserver"
          f"{f', {own} kvmserver errors' if own else ''} ({time.time() - t1:.0f} s)", file=sys.stderr, flush=True)
if not rows:
    print(f"run-gvisor.sh: no binary ran (FILTER={FILTER})", file=sys.stderr)
    sys.exit(1)
seconds, date = round(time.time() - t0), str(datetime.date.today())
json.dump({"rows": rows, "seconds": seconds, "commit": commit, "date": date, "kvmserver": kvmserver}, open(info, "w"))
report(rows, seconds, commit, date, kvmserver)
sys.exit(1 if any(own for _, _, own in rows) else 0)
PY
status=$?
echo "run-gvisor.sh: logs in $logs"
exit "$status"

#!/usr/bin/env python3
"""HTTP client for tests/e2e/server.sh: one connection per request ("Connection: close"), raw
sockets so that an empty reply, a reset and a time-out are told apart, every wait bounded.

  http_client.py port
      Prints a free TCP port on 127.0.0.1.
  http_client.py fetch --port P PATH [--timeout S]
      One GET. The body goes to stdout as received; "status=CODE elapsed=SECONDS" or
      "error=WHAT elapsed=SECONDS" to stderr. Exit 0 for a response of any status, 2 when the
      connection closed without a response, 6 when it was reset without a response, 3 on
      time-out with nothing received, 4 when it cannot connect, 5 for anything else (a response
      cut short, garbage, a reset or time-out part way).
  http_client.py distinct --port P --count N --path PATH [--threads T] [--only KEY,...]
      every answer's KEY=VALUE fields differ from every other answer's (exit 1 on a repeat)
  http_client.py many --port P --count N [--threads T] [--path TEMPLATE] [--expect TEXT] [--status CODE]
      T threads each send N requests one after the other (TEMPLATE's {t} is the thread number,
      {i} the request number in the thread); each must answer CODE (default 200) with exactly
      TEXT as body (backslash escapes decoded, e.g. 'hello\\n'; omitted: any body).
      Prints "ok=K bad=B total=N elapsed=S" and then up to 5 failures, what was sent and what
      came back. Exit 0 iff all were as expected.
  http_client.py sequence --port P --count N [--prefix p] [--first C]
      Persistent-mode check, sequential: sends /id/PREFIX1 .. /id/PREFIXN; the counters must go
      up by one each time and every prev= must be the previous request's id. With --first C the
      first request must answer counter=C with an empty prev=. Prints each response and a
      verdict; exit 0/1.
  http_client.py abuse --port P --mode MODE --count N
      N misbehaving connections one after the other: "empty" connects and closes without sending,
      "partial" sends half a request line and closes, "noread" sends a whole request and closes
      without reading the answer (may reset the server's side). Prints what happened; exit 0
      unless a connect failed.
  http_client.py stall --port P [--timeout S]
      Sends the start of a request ("GET / HTTP/1.1\r\n", no end of headers) and then nothing,
      waiting for the server to close the connection. Prints "closed after S s (...)" or
      "still open after S s"; exit 0 when the server closed it, 3 when it did not.
"""
import argparse
import socket
import sys
import threading
import time


def request(port, path, timeout=30.0, host="127.0.0.1"):
    """One GET; returns a dict: status (int or None), body (bytes), error (str or None), elapsed."""
    start = time.monotonic()
    out = {"status": None, "body": b"", "error": None, "elapsed": 0.0, "headers": {}}
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        out.update(error="connect timed out", elapsed=time.monotonic() - start)
        return out
    except OSError as e:
        out.update(error=f"cannot connect: {e}", elapsed=time.monotonic() - start)
        return out
    data = b""
    try:
        s.settimeout(timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kvms-e2e\r\n"
                  f"Connection: close\r\n\r\n".encode())
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        out["error"] = f"timed out after {timeout:g} s ({len(data)} bytes received)"
    except ConnectionResetError:
        out["error"] = f"connection reset ({len(data)} bytes received)" if data else "connection reset, no response"
    except OSError as e:
        out["error"] = f"{e} ({len(data)} bytes received)"
    finally:
        s.close()
    out["elapsed"] = time.monotonic() - start
    if out["error"] and not data:
        return out
    if not data:
        out["error"] = "closed without a response (empty reply)"
        return out
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        out["error"] = out["error"] or f"no end of headers in {data[:200]!r}"
        return out
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        out["error"] = f"bad status line {lines[0][:200]!r}"
        return out
    out["status"] = int(parts[1])
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        out["headers"][k.strip().lower().decode(errors="replace")] = v.strip().decode(errors="replace")
    out["body"] = body
    cl = out["headers"].get("content-length")
    if cl is not None and cl.isdigit() and len(body) != int(cl):
        out["error"] = out["error"] or f"body is {len(body)} bytes, Content-Length says {cl}"
    return out


def describe(r):
    if r["status"] is None:
        return f"error: {r['error']} after {r['elapsed']:.3f} s"
    s = f"status {r['status']} body {r['body'][:300]!r}"
    if r["error"]:
        s += f" ({r['error']})"
    return s + f" after {r['elapsed']:.3f} s"


def cmd_port(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()
    return 0


def cmd_fetch(args):
    r = request(args.port, args.path, args.timeout)
    sys.stdout.buffer.write(r["body"])
    sys.stdout.flush()
    if r["status"] is not None and not r["error"]:
        print(f"status={r['status']} elapsed={r['elapsed']:.3f}", file=sys.stderr)
        return 0
    print(f"error={r['error']} status={r['status']} elapsed={r['elapsed']:.3f}", file=sys.stderr)
    err = r["error"] or ""
    if r["status"] is not None:
        return 5
    if err.startswith("closed without"):
        return 2
    if err == "connection reset, no response":
        return 6
    if err == "connect timed out" or (err.startswith("timed out") and "(0 bytes" in err):
        return 3
    if err.startswith("cannot connect"):
        return 4
    return 5


def in_threads(count, worker):
    """Runs worker(t) for t in 0..count-1, each on a thread of its own, and waits for them all."""
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def cmd_many(args):
    expect = None if args.expect is None else args.expect.encode().decode("unicode_escape").encode()
    lock = threading.Lock()
    bad = []
    ok = [0]

    def worker(t):
        for i in range(args.count):
            path = args.path.format(t=t, i=i)
            r = request(args.port, path, args.timeout)
            good = (r["status"] == args.status and not r["error"]
                    and (expect is None or r["body"] == expect))
            with lock:
                if good:
                    ok[0] += 1
                else:
                    bad.append((t, i, path, r))

    start = time.monotonic()
    in_threads(args.threads, worker)
    total = args.count * args.threads
    print(f"ok={ok[0]} bad={len(bad)} total={total} elapsed={time.monotonic() - start:.2f}")
    for t, i, path, r in sorted(bad, key=lambda b: (b[0], b[1]))[:5]:
        want = f"status {args.status}" + ("" if expect is None else f" body {expect!r}")
        print(f"  thread {t} request {i}: sent GET {path}, wanted {want}, got {describe(r)}")
    return 0 if not bad else 1


def cmd_distinct(args):
    """Every request's answer is KEY=VALUE fields; each KEY's values must all differ (what two
    processes must not share: pids, random bytes, UUIDs, tokens)."""
    lock = threading.Lock()
    seen = {}
    bad = []

    def worker(t):
        for i in range(args.count):
            r = request(args.port, args.path, args.timeout)
            if r["status"] != 200 or r["error"]:
                with lock:
                    bad.append(f"request {t}/{i}: {describe(r)}")
                continue
            fields = dict(f.split("=", 1) for f in r["body"].decode(errors="replace").split() if "=" in f)
            if args.only:
                fields = {k: v for k, v in fields.items() if k in args.only.split(",")}
            with lock:
                if not fields:
                    bad.append(f"request {t}/{i}: no KEY=VALUE in {r['body'][:200]!r}")
                for k, v in fields.items():
                    seen.setdefault(k, []).append(v)

    start = time.monotonic()
    in_threads(args.threads, worker)
    total = args.count * args.threads
    for k, values in sorted(seen.items()):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            bad.append(f"{k}: only {len(set(values))} different values in {len(values)} answers, "
                       f"e.g. {repeated[0][:80]}")
        elif len(values) != total:
            bad.append(f"{k}: in {len(values)} of {total} answers")
    keys = ",".join(sorted(seen))
    print(f"distinct: {total} requests, keys {keys}, elapsed={time.monotonic() - start:.2f}")
    for b in bad[:8]:
        print(f"  {b}")
    return 0 if not bad else 1


def cmd_sequence(args):
    failures = []
    prev_counter = None
    prev_id = None
    for k in range(1, args.count + 1):
        ident = f"{args.prefix}{k}"
        r = request(args.port, f"/id/{ident}", args.timeout)
        body = r["body"].decode(errors="replace")
        print(f"  GET /id/{ident} -> {describe(r)}")
        if r["status"] != 200 or r["error"]:
            failures.append(f"request {k} (/id/{ident}): {describe(r)}")
            prev_counter, prev_id = None, ident
            continue
        fields = dict(p.split("=", 1) for p in body.strip("\n").split(" ") if "=" in p)
        try:
            counter = int(fields.get("counter", ""))
        except ValueError:
            failures.append(f"request {k}: no counter in {body!r}")
            prev_counter, prev_id = None, ident
            continue
        if "prev" not in fields or not body.endswith("\n"):
            failures.append(f"request {k}: malformed body {body!r}")
        if prev_counter is not None and counter != prev_counter + 1:
            failures.append(f"request {k}: counter={counter} after counter={prev_counter} (want {prev_counter + 1})")
        if prev_id is not None and fields.get("prev") != prev_id:
            failures.append(f"request {k}: prev={fields.get('prev')!r}, want {prev_id!r}")
        if k == 1:
            print(f"  first counter={counter} prev={fields.get('prev')!r}")
            if args.first is not None and (counter != args.first or fields.get("prev") != ""):
                failures.append(f"request 1: counter={counter} prev={fields.get('prev')!r}, "
                                f"want counter={args.first} prev=''")
        prev_counter, prev_id = counter, ident
    if failures:
        print(f"sequence: {len(failures)} problems: " + "; ".join(failures[:5]))
        return 1
    print(f"sequence: {args.count} requests, counters consecutive, prev always the previous id")
    return 0


def cmd_abuse(args):
    errors = 0
    for i in range(args.count):
        try:
            s = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
        except OSError as e:
            print(f"  {args.mode} connection {i}: cannot connect: {e}")
            errors += 1
            continue
        try:
            if args.mode == "partial":
                s.sendall(b"GET / HT")
            elif args.mode == "noread":
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        except OSError as e:
            print(f"  {args.mode} connection {i}: send failed: {e}")
        s.close()
    print(f"abuse {args.mode}: {args.count} connections, {errors} could not connect")
    return 1 if errors else 0


def cmd_stall(args):
    start = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    except OSError as e:
        print(f"cannot connect: {e}")
        return 4
    data = b""
    how = None
    try:
        s.sendall(b"GET / HTTP/1.1\r\n")
        while True:
            left = start + args.timeout - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                how = "EOF"
                break
            data += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        how = "reset"
    except OSError as e:
        how = str(e)
    finally:
        s.close()
    elapsed = time.monotonic() - start
    if how is None:
        print(f"still open after {elapsed:.3f} s ({len(data)} bytes received: {data[:200]!r})")
        return 3
    print(f"closed after {elapsed:.3f} s ({how}, {len(data)} bytes received: {data[:200]!r})")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("port")
    f = sub.add_parser("fetch")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--timeout", type=float, default=30.0)
    f.add_argument("path")
    m = sub.add_parser("many")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--path", default="/")
    m.add_argument("--expect")
    m.add_argument("--status", type=int, default=200)
    m.add_argument("--timeout", type=float, default=30.0)
    d = sub.add_parser("distinct")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--path", required=True)
    d.add_argument("--only", help="KEY,KEY...: look at these fields alone")
    d.add_argument("--timeout", type=float, default=30.0)
    s = sub.add_parser("sequence")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--prefix", default="p")
    s.add_argument("--first", type=int)
    s.add_argument("--timeout", type=float, default=30.0)
    a = sub.add_parser("abuse")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--mode", choices=["empty", "partial", "noread"], required=True)
    a.add_argument("--count", type=int, default=10)
    a.add_argument("--timeout", type=float, default=30.0)
    st = sub.add_parser("stall")
    st.add_argument("--port", type=int, required=True)
    st.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    return {"port": cmd_port, "fetch": cmd_fetch, "many": cmd_many, "distinct": cmd_distinct, "sequence": cmd_sequence,
            "abuse": cmd_abuse, "stall": cmd_stall}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

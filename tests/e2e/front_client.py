#!/usr/bin/env python3
"""Clients for tests/e2e/isolation.sh: what keep-alive clients, reverse proxies and hostile
clients do to kvmserver's request-isolating front. Every scenario prints one line per check,
"ok WHAT" or "FAIL WHAT: why", and exits 1 if any check failed. Every wait is bounded.

  front_client.py keepalive --port P --connections K --count N [--expect fresh|leak]
      K persistent connections (http.client, one thread each) send N GET /id/... in all; "fresh":
      every answer is counter=1 (each request met a fresh server), "leak": some are not. Also
      checks that the connections were really reused (no reconnects).
  front_client.py pipeline --port P        3 requests in one write, 3 answers in order
  front_client.py upload --port P --mb N [--chunked]
      POST /upload with an N MiB body generated on the fly; the answer's bytes= and sum= match
  front_client.py expect --port P          Expect: 100-continue: the 100 comes before the body
  front_client.py awkward --port P         HEAD, 204 and a close-delimited answer on one keep-alive
                                           connection (re-framed as chunked), then a request more
  front_client.py garbage --port P         a guest answering garbage: 502, then service goes on
  front_client.py peer --port P            the guest sees the client's address as its peer
  front_client.py malformed --port P [--max-body-mb M]
      >= 200 malformed requests, each on its own connection: the status of each, and the close
  front_client.py badbody --port P        broken chunk framing after a good head: 400, close
  front_client.py slow --port P --header-time S
      a head sent one byte a second: 408 and close after about S seconds
"""
import argparse
import http.client
import socket
import sys
import threading
import time

failures = 0


def ok(what):
    print(f"ok {what}")


def fail(what, why):
    global failures
    failures += 1
    print(f"FAIL {what}: {why}")


def check(cond, what, why=""):
    if cond:
        ok(what)
    else:
        fail(what, why)


def connect(port, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


class Reader:
    """Reads HTTP/1.1 responses one after the other off one socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _more(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def exactly(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request=False):
        """(status, headers dict lower-cased, body); body None when cut by a close."""
        status_line = self.line()
        parts = status_line.split(" ", 2)
        status = int(parts[1])
        headers = {}
        while True:
            line = self.line()
            if not line:
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if head_request or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.line().split(";")[0], 16)
                if size == 0:
                    while self.line():
                        pass
                    return status, headers, body
                body += self.exactly(size)
                self.line()
        if "content-length" in headers:
            return status, headers, self.exactly(int(headers["content-length"]))
        body = self.buf
        self.buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                body += d
        except OSError:
            pass
        return status, headers, body


def get(path, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


# ---- scenarios ---------------------------------------------------------------------------------

def keepalive(args):
    results, errors = [], []
    lock = threading.Lock()
    per = args.count // args.connections

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        socks = set()
        try:
            for i in range(per):
                conn.request("GET", f"/id/t{t}r{i}")
                r = conn.getresponse()
                body = r.read().decode()
                socks.add(id(conn.sock))
                with lock:
                    results.append((r.status, body, r.getheader("Connection")))
        except Exception as e:  # noqa: BLE001 - report, don't crash the harness
            with lock:
                errors.append(f"thread {t}: {e!r}")
        finally:
            with lock:
                results.append(("socks", len(socks), None))
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.connections)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.monotonic() - start
    answers = [r for r in results if r[0] != "socks"]
    reconnects = sum(r[1] - 1 for r in results if r[0] == "socks")
    fresh = sum(1 for s, b, _ in answers if s == 200 and b.startswith("counter=1 "))
    print(f"# requests={len(answers)} fresh={fresh} reconnects={reconnects} elapsed={elapsed:.2f}s "
          f"({len(answers) / elapsed:.1f}/s)")
    check(not errors, "keepalive.no_errors", "; ".join(errors[:3]))
    check(len(answers) == per * args.connections, "keepalive.all_answered", f"{len(answers)} of {per * args.connections}")
    if args.expect == "fresh":
        bad = [b for s, b, _ in answers if not (s == 200 and b.startswith("counter=1 "))]
        check(not bad, "keepalive.every_request_fresh", f"{len(bad)} were not, e.g. {bad[:3]}")
        check(reconnects == 0, "keepalive.connections_reused", f"{reconnects} reconnects")
    else:
        check(fresh < len(answers), "keepalive.leak_shown", "every request was fresh in connection mode")


def pipeline(args):
    s = connect(args.port)
    s.sendall(get("/id/one") + get("/id/two") + get("/id/three", "Connection: close\r\n"))
    r = Reader(s)
    got = []
    try:
        for _ in range(3):
            st, h, body = r.response()
            got.append((st, body.decode()))
        tail = s.recv(10)
    except Exception as e:  # noqa: BLE001
        fail("pipeline", f"{e!r} after {got}")
        return
    check(len(got) == 3 and all(st == 200 and b.startswith("counter=1 ") for st, b in got), "pipeline.fresh_in_order", repr(got))
    check(tail == b"", "pipeline.closed_after_close", repr(tail))


def body_bytes(total, block=65536):
    pattern = bytes(range(256)) * (block // 256)
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield pattern[:n]
        sent += n


def upload(args):
    total = args.mb << 20
    expect_sum = 0
    for b in body_bytes(total):
        expect_sum = (expect_sum + sum(b)) & 0xffffffff
    s = connect(args.port, timeout=600)
    if args.chunked:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for b in body_bytes(total):
            s.sendall(b"%x\r\n" % len(b) + b + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    else:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % total)
        for b in body_bytes(total):
            s.sendall(b)
    st, h, body = Reader(s).response()
    what = f"upload.{args.mb}mb{'.chunked' if args.chunked else ''}"
    check(st == 200 and body.decode().strip() == f"bytes={total} sum={expect_sum}", what, f"{st} {body[:100]!r}")


def expect(args):
    s = connect(args.port)
    body = b"x" * 1000
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    r = Reader(s)
    st, _, _ = r.response()
    check(st == 100, "expect.continue_first", f"got {st} first")
    s.sendall(body)
    st, _, b = r.response()
    check(st == 200 and b.startswith(b"bytes=1000 "), "expect.then_answer", f"{st} {b!r}")
    s2 = connect(args.port)
    s2.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\nx")
    st, _, _ = Reader(s2).response()
    check(st == 417, "expect.unknown_is_417", f"got {st}")


def awkward(args):
    s = connect(args.port)
    r = Reader(s)
    s.sendall(b"HEAD /id/h HTTP/1.1\r\nHost: test\r\n\r\n")
    st, h, b = r.response(head_request=True)
    check(st == 200 and h.get("content-length") == str(len("counter=1 prev=\n")), "awkward.head_keeps_length", f"{st} {h}")
    s.sendall(get("/nocontent"))
    st, h, b = r.response()
    check(st == 204 and "content-length" not in h and "transfer-encoding" not in h, "awkward.204_bodiless", f"{st} {h}")
    s.sendall(get("/nolength"))
    st, h, b = r.response()
    check(st == 200 and h.get("transfer-encoding") == "chunked" and b == b"no length here\n" and h.get("connection") == "keep-alive",
          "awkward.close_delimited_rechunked", f"{st} {h} {b!r}")
    s.sendall(get("/id/after"))
    st, h, b = r.response()
    check(st == 200 and b.startswith(b"counter=1 "), "awkward.connection_still_usable", f"{st} {b!r}")
    # HTTP/1.0 client: the close-delimited body stays close-delimited.
    s10 = connect(args.port)
    s10.sendall(b"GET /nolength HTTP/1.0\r\n\r\n")
    st, h, b = Reader(s10).response()
    check(st == 200 and b == b"no length here\n" and h.get("connection") == "close", "awkward.http10_close_delimited", f"{st} {h} {b!r}")
    big = connect(args.port)
    big.sendall(get("/big/2048", "Connection: close\r\n"))
    st, h, b = Reader(big).response()
    check(st == 200 and len(b) == 2048 * 1024, "awkward.big_download", f"{st} {len(b)}")


def garbage(args):
    s = connect(args.port)
    s.sendall(get("/garbage"))
    st, h, b = Reader(s).response()
    check(st == 502 and h.get("connection") == "close", "garbage.502", f"{st} {h}")
    for i in range(5):
        s2 = connect(args.port)
        s2.sendall(get(f"/id/g{i}", "Connection: close\r\n"))
        st, _, b = Reader(s2).response()
        if not (st == 200 and b.startswith(b"counter=1 ")):
            fail("garbage.service_goes_on", f"{st} {b!r}")
            return
    ok("garbage.service_goes_on")


def peer(args):
    s = connect(args.port)
    s.sendall(get("/peer"))
    r = Reader(s)
    st, _, b = r.response()
    mine = "%s:%d" % s.getsockname()[:2]
    check(st == 200 and b.decode().strip() == mine, "peer.client_address", f"guest saw {b!r}, client is {mine}")
    s.sendall(get("/sock"))
    st, _, b = r.response()
    check(st == 200 and b.decode().strip() == f"127.0.0.1:{args.guest_port}", "peer.listener_address",
          f"guest saw {b!r}, it listens on 127.0.0.1:{args.guest_port}")


def corpus(max_body_mb):
    """(name, request bytes, expected status) for >= 200 malformed requests."""
    cases = []
    too_big = (max_body_mb << 20) + 1
    base = [
        ("bad method", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("lowercase method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("no version", b"GET /\r\nHost: a\r\n\r\n", 400),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bad version", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
        ("HTTP/2 version", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("HTTP/1.9", b"GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505),
        ("h2c preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        ("bare LF line", b"GET / HTTP/1.1\nHost: a\n\n", 400),
        ("bare LF header", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
        ("CR in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        ("NUL in target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        ("space in name", b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
        ("colon-less header", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("CL and TE", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE and CL", b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
        ("two CLs", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        ("negative CL", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400),
        ("CL with letters", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 12abc\r\n\r\n", 400),
        ("CL overflow", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 184467440737095516160\r\n\r\n", 400),
        ("TE not chunked", b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("body too large", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % too_big, 413),
        ("header bomb", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100000 + b"\r\n\r\n", 431),
        ("many headers", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(20000)) + b"\r\n", 431),
        ("long target", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
    ]
    cases += base
    # Variations: each bad byte in the method, the target, a header name and a header value.
    for c in list(range(0, 32)) + [127]:
        if c in (9, 10, 13):
            continue
        cases.append((f"ctl {c} in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a" + bytes([c]) + b"b\r\n\r\n", 400))
        cases.append((f"ctl {c} in name", b"GET / HTTP/1.1\r\nHost: a\r\nX" + bytes([c]) + b"Y: b\r\n\r\n", 400))
        cases.append((f"ctl {c} in target", b"GET /a" + bytes([c]) + b"b HTTP/1.1\r\nHost: a\r\n\r\n", 400))
        cases.append((f"ctl {c} in method", b"GE" + bytes([c]) + b"T / HTTP/1.1\r\nHost: a\r\n\r\n", 400))
    for c in b"()<>@,;\\\"/[]?={} ":
        cases.append((f"separator {chr(c)!r} in name", b"GET / HTTP/1.1\r\nHost: a\r\nX" + bytes([c]) + b"Y: b\r\n\r\n", 400))
    for v in (b"HTTP/1.", b"HTTP/11", b"HTTP/1.1.1", b"HTTP/a.1", b"HTTPS/1.1", b"http/1.1", b"HTTP/ 1.1"):
        cases.append((f"version {v.decode()}", b"GET / " + v + b"\r\nHost: a\r\n\r\n", 400))
    for v in (b"HTTP/0.9", b"HTTP/2.0", b"HTTP/3.0", b"HTTP/1.2", b"HTTP/9.9"):
        cases.append((f"unsupported {v.decode()}", b"GET / " + v + b"\r\nHost: a\r\n\r\n", 505))
    for m in (b"GE T", b"G\tET", b"GET\x7f", b"\xffGET", b"GETT", b"PUTS", b"DELET", b"OPTION"):
        cases.append((f"method {m!r}", m + b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400))
    for te in (b"chunked, gzip", b"identity", b"chunkedx", b"x-chunked", b"chunked;q=1"):
        cases.append((f"transfer-encoding {te!r}", b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + te + b"\r\n\r\n", 400))
    for cl in (b"", b" ", b"1 2", b"+5", b"0x10", b"1.5", b"1e3", b"-0"):
        cases.append((f"content-length {cl!r}", b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: " + cl + b"\r\n\r\n", 400))
    for n in (70000, 200000):
        cases.append((f"{n}-byte cookie", b"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + b"c" * n + b"\r\n\r\n", 431))
    return cases


def malformed(args):
    cases = corpus(args.max_body_mb)
    wrong = []
    for name, data, want in cases:
        try:
            s = connect(args.port, timeout=30)
            s.sendall(data)
            r = Reader(s)
            st, h, _ = r.response()
            closed = False
            try:
                closed = s.recv(1) == b""
            except OSError:
                closed = True
            if st != want or not closed:
                wrong.append(f"{name}: {st} (want {want}){'' if closed else ', left open'}")
        except Exception as e:  # noqa: BLE001
            wrong.append(f"{name}: {e!r}")
    print(f"# {len(cases)} malformed requests, {len(wrong)} answered wrongly")
    check(len(cases) >= 200, "malformed.corpus_size", str(len(cases)))
    check(not wrong, "malformed.right_status_and_close", "; ".join(wrong[:8]))


def badbody(args):
    """A valid head with broken chunk framing: 400 and close (the guest saw the head only: its
    worker is reset fully), and the service goes on."""
    s = connect(args.port)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n")
    try:
        st, h, _ = Reader(s).response()
    except Exception as e:  # noqa: BLE001
        st, h = repr(e), {}
    check(st == 400 and h.get("connection") == "close", "badbody.400", f"{st} {h}")
    s2 = connect(args.port)
    s2.sendall(get("/id/after", "Connection: close\r\n"))
    st, _, b = Reader(s2).response()
    check(st == 200 and b.startswith(b"counter=1 "), "badbody.service_goes_on", f"{st} {b!r}")


def slow(args):
    s = connect(args.port, timeout=args.header_time + 30)
    start = time.monotonic()
    data = b"GET /id/slow HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"z" * 100 + b"\r\n\r\n"
    got = b""
    try:
        for byte in data:
            s.sendall(bytes([byte]))
            s.setblocking(False)
            try:
                got += s.recv(4096)
            except BlockingIOError:
                pass
            s.setblocking(True)
            if got:
                break
            time.sleep(1)
        s.settimeout(args.header_time + 30)
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except OSError:
        pass
    elapsed = time.monotonic() - start
    check(got.startswith(b"HTTP/1.1 408 "), "slow.408", f"{got[:60]!r}")
    check(elapsed <= args.header_time + 5, "slow.in_time", f"{elapsed:.1f}s for --max-header-time={args.header_time}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("keepalive", "pipeline", "upload", "expect", "awkward", "garbage", "peer", "malformed", "badbody", "slow"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        if name == "keepalive":
            p.add_argument("--connections", type=int, default=4)
            p.add_argument("--count", type=int, default=500)
            p.add_argument("--expect", choices=("fresh", "leak"), default="fresh")
        if name == "upload":
            p.add_argument("--mb", type=int, default=1)
            p.add_argument("--chunked", action="store_true")
        if name == "peer":
            p.add_argument("--guest-port", type=int, required=True)
        if name == "malformed":
            p.add_argument("--max-body-mb", type=int, default=1024)
        if name == "slow":
            p.add_argument("--header-time", type=float, default=10)
    args = ap.parse_args()
    globals()[args.cmd](args)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

"""runtimes.sh "python" case: json, hashlib, sqlite3 (in memory), re, threading and queue.
Deterministic output (compared byte for byte with the native run); last line "ok py_stdlib"."""
import hashlib
import json
import queue
import re
import sqlite3
import sys
import threading


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", file=sys.stderr)
        sys.exit(1)


# json: a round trip, sorted keys, unicode, floats
doc = {"name": "kvmserver", "list": [1, 2.5, None, True, "é✓"], "nested": {"a": [{"b": i, "c": i / 3} for i in range(5)]}}
s = json.dumps(doc, sort_keys=True)
check(json.loads(s) == doc, "json round trip")
print("json", s)
print("json pretty", json.dumps(doc["nested"], indent=1).count("\n"), "lines")

# hashlib: OpenSSL's and Python's own digests, pbkdf2
data = b"".join(i.to_bytes(4, "little") for i in range(100000))
for name in ("md5", "sha1", "sha256", "sha512", "sha3_256", "blake2b", "blake2s"):
    print("hashlib", name, hashlib.new(name, data).hexdigest())
print("hashlib pbkdf2", hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1000).hex())

# sqlite3 in memory: table, index, aggregate, transaction rollback
db = sqlite3.connect(":memory:")
db.execute("create table t (k integer primary key, v text, n real)")
db.executemany("insert into t (v, n) values (?, ?)", [(f"row{i}", i * 0.5) for i in range(1000)])
db.execute("create index t_v on t(v)")
db.commit()
print("sqlite", db.execute("select count(*), sum(n), max(v) from t").fetchone())
print("sqlite like", db.execute("select k, v from t where v like 'row99%' order by k").fetchall())
try:
    with db:
        db.execute("delete from t")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
print("sqlite after rollback", db.execute("select count(*) from t").fetchone()[0])

# re
text = " ".join(f"user{i}@example{i % 7}.org" for i in range(200))
emails = re.findall(r"(\w+)@(example\d)\.org", text)
print("re", len(emails), emails[:3], re.sub(r"\d+", "#", "a1b22c333"),
      bool(re.fullmatch(r"(?i)[a-z]+\d*", "Hello42")), re.split(r"[,;]\s*", "a, b;c ,d"))

# threading: 8 threads, a lock-protected counter, per-thread digests
lock = threading.Lock()
total = [0]
results = {}


def work(n):
    h = hashlib.sha256()
    for i in range(2000):
        h.update(f"{n}:{i}".encode())
        with lock:
            total[0] += 1
    results[n] = h.hexdigest()[:12]


threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(total[0] == 16000, f"threading total {total[0]}")
print("threading", total[0], [results[n] for n in range(8)])

# queue + condition variables: 2 producers, 2 consumers, a small bounded queue
q = queue.Queue(maxsize=4)
sums = [0, 0]


def producer(base):
    for i in range(500):
        q.put(base + i)


def consumer(k):
    while True:
        x = q.get()
        if x is None:
            return
        sums[k] += x


cons = [threading.Thread(target=consumer, args=(k,)) for k in range(2)]
prods = [threading.Thread(target=producer, args=(b,)) for b in (0, 1000)]
for t in cons + prods:
    t.start()
for t in prods:
    t.join()
for _ in cons:
    q.put(None)
for t in cons:
    t.join()
check(sum(sums) == sum(range(500)) + sum(range(1000, 1500)), f"queue sum {sums}")
print("queue", sum(sums))
print("ok py_stdlib")

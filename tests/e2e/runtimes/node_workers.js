// runtimes.sh "node" case: 4 worker_threads each hash and count primes in their own range; the main
// thread collects the answers (in worker order) and a SharedArrayBuffer counter all workers add to
// with Atomics. Deterministic output; last line "ok node_workers".
"use strict";
const { Worker, isMainThread, parentPort, workerData } = require("node:worker_threads");
const crypto = require("node:crypto");

if (isMainThread) {
  const shared = new Int32Array(new SharedArrayBuffer(4));
  const jobs = [0, 1, 2, 3].map((n) => new Promise((resolve, reject) => {
    const w = new Worker(__filename, { workerData: { n, shared } });
    w.once("message", resolve);
    w.once("error", reject);
    w.once("exit", (code) => { if (code !== 0) reject(new Error(`worker ${n} exit ${code}`)); });
  }));
  Promise.all(jobs).then((results) => {
    for (const r of results) console.log(`worker ${r.n}: primes=${r.primes} sha256=${r.digest}`);
    console.log(`atomics total=${Atomics.load(shared, 0)}`);
    if (Atomics.load(shared, 0) !== 40000) { console.error("FAIL atomics total"); process.exit(1); }
    console.log("ok node_workers");
  }, (e) => { console.error(`FAIL ${e}`); process.exit(1); });
} else {
  const { n, shared } = workerData;
  let primes = 0;
  for (let x = n * 20000; x < (n + 1) * 20000; x++) {
    let p = x > 1;
    for (let d = 2; d * d <= x && p; d++) if (x % d === 0) p = false;
    if (p) primes++;
  }
  const h = crypto.createHash("sha256");
  for (let i = 0; i < 10000; i++) { h.update(`${n}:${i}`); Atomics.add(shared, 0, 1); }
  parentPort.postMessage({ n, primes, digest: h.digest("hex").slice(0, 16) });
}

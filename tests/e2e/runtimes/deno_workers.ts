// runtimes.sh "deno" case: 4 module Workers (deno_worker.ts), results printed in worker order.
// Deterministic output; last line "ok deno_workers".
type Result = { n: number; primes: number; hex: string };
const results = await Promise.all([0, 1, 2, 3].map((n) =>
  new Promise<Result>((resolve, reject) => {
    const w = new Worker(new URL("./deno_worker.ts", import.meta.url).href, { type: "module" });
    w.onmessage = (e: MessageEvent<Result>) => { resolve(e.data); w.terminate(); };
    w.onerror = (e) => { e.preventDefault(); reject(new Error(`worker ${n}: ${e.message}`)); };
    w.postMessage({ n });
  })
));
for (const r of results) console.log(`worker ${r.n}: primes=${r.primes} sha256=${r.hex}`);
console.log("ok deno_workers");

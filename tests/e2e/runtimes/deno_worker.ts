// Worker of deno_workers.ts: counts primes in its range and hashes, then posts the result.
self.onmessage = async (e: MessageEvent<{ n: number }>) => {
  const n = e.data.n;
  let primes = 0;
  for (let x = n * 20000; x < (n + 1) * 20000; x++) {
    let p = x > 1;
    for (let d = 2; d * d <= x && p; d++) if (x % d === 0) p = false;
    if (p) primes++;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`worker ${n}`)));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16);
  self.postMessage({ n, primes, hex });
  self.close();
};

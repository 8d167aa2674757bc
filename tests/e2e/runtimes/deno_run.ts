// runtimes.sh "deno" case (deno run, and the source of the deno compile case): TypeScript, Web
// Crypto, TextEncoder, JSON, a class with types, arguments. Deterministic output; last line
// "ok deno_run".
interface Point { x: number; y: number }
class Path {
  constructor(private points: Point[]) {}
  length(): number {
    let sum = 0;
    for (let i = 1; i < this.points.length; i++) {
      sum += Math.hypot(this.points[i].x - this.points[i - 1].x, this.points[i].y - this.points[i - 1].y);
    }
    return sum;
  }
}
const p = new Path(Array.from({ length: 100 }, (_, i) => ({ x: i, y: (i * i) % 17 })));
console.log(`path length ${p.length().toFixed(6)}`);
const data = new TextEncoder().encode("kvmserver ".repeat(1000));
const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
console.log(`sha256 ${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}`);
console.log(`json ${JSON.stringify({ a: [1, 2.5, null, true, "é✓"], b: { c: "d" } })}`);
console.log(`args ${JSON.stringify(Deno.args)}`);
const sorted = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1000).sort((a, b) => a - b);
console.log(`sorted ok ${sorted.every((v, i) => v === i)}`);
console.log("ok deno_run");

// bench/run.sh's "Deno hello" program (the reference's "Deno helloworld"): Deno.serve on
// 127.0.0.1:PORT (Deno.args[0]) answering every request with a short text.
const port = Number(Deno.args[0]);
Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen() { console.log(`deno_hello: listening on 127.0.0.1:${port}`); },
}, () => new Response("Hello, World!\n", { headers: { "content-type": "text/plain" } }));

// A Deno.serve server for kvmserver on 127.0.0.1:PORT (Deno.args[0], default 8080): "/" answers
// "hits=N", the requests this process has served.
let hits = 0;
const port = Number(Deno.args[0] ?? 8080);
Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen() { console.log(`deno example: listening on 127.0.0.1:${port}`); },
}, () => new Response(`hits=${++hits}\n`, { headers: { "content-type": "text/plain" } }));

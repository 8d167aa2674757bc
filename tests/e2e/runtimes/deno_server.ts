// runtimes.sh server case: Deno.serve on 127.0.0.1:PORT (Deno.args[0]); the same routes as
// py_server.py: / "hello\n", /set/NAME sets a global, /get "global=VALUE\n", /hits "hits=N\n";
// /identity "pid=N values=HEX uuid=UUID": what must differ between two processes (the generator
// is used once before listening, so its state is part of the paused template).
const hex = (a: Uint8Array) => Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
crypto.getRandomValues(new Uint8Array(16));
let state = "unset";
let hits = 0;
const port = Number(Deno.args[0]);
Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen() { console.log(`deno_server: listening on 127.0.0.1:${port}`); },
}, (req: Request): Response => {
  hits++;
  const path = new URL(req.url).pathname;
  let body: string;
  if (path === "/") body = "hello\n";
  else if (path.startsWith("/set/")) { state = path.slice(5); body = `set ${state}\n`; }
  else if (path === "/get") body = `global=${state}\n`;
  else if (path === "/hits") body = `hits=${hits}\n`;
  else if (path === "/identity") {
    body = `pid=${Deno.pid} values=${hex(crypto.getRandomValues(new Uint8Array(16)))} uuid=${crypto.randomUUID()}\n`;
  }
  else return new Response("not found\n", { status: 404 });
  return new Response(body, { headers: { "content-type": "text/plain" } });
});

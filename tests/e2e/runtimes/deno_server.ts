// runtimes.sh server case: Deno.serve on 127.0.0.1:PORT (Deno.args[0]); the same routes as
// py_server.py: / "hello\n", /set/NAME sets a global, /get "global=VALUE\n", /hits "hits=N\n".
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
  else return new Response("not found\n", { status: 404 });
  return new Response(body, { headers: { "content-type": "text/plain" } });
});

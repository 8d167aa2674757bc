// runtimes.sh server case: http.createServer on 127.0.0.1:PORT (argv[2]); the same routes as
// py_server.py: / "hello\n", /set/NAME sets a global, /get "global=VALUE\n", /hits "hits=N\n".
"use strict";
const http = require("node:http");
let state = "unset";
let hits = 0;
const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
  hits++;
  let body;
  if (req.url === "/") body = "hello\n";
  else if (req.url.startsWith("/set/")) { state = req.url.slice(5); body = `set ${state}\n`; }
  else if (req.url === "/get") body = `global=${state}\n`;
  else if (req.url === "/hits") body = `hits=${hits}\n`;
  else { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});
server.listen(port, "127.0.0.1", () => console.log(`node_server: listening on 127.0.0.1:${port}`));

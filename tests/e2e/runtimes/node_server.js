// runtimes.sh server case: http.createServer on 127.0.0.1:PORT (argv[2]); the same routes as
// py_server.py: / "hello\n", /set/NAME sets a global, /get "global=VALUE\n", /hits "hits=N\n";
// /identity "pid=N bytes=HEX values=HEX uuid=UUID": what must differ between two processes (the
// crypto generator is used once before listening, so its state is part of the paused template).
"use strict";
const http = require("node:http");
const crypto = require("node:crypto");
const fs = require("node:fs");
crypto.randomBytes(16);
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
  else if (req.url === "/identity") {
    const values = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
    // process.pid is read once at start-up; the kernel's answer is /proc/self.
    body = `pid=${fs.readlinkSync("/proc/self")} bytes=${crypto.randomBytes(16).toString("hex")} values=${values} uuid=${crypto.randomUUID()}\n`;
  }
  else { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});
server.listen(port, "127.0.0.1", () => console.log(`node_server: listening on 127.0.0.1:${port}`));

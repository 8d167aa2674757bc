// A node:http server for kvmserver on 127.0.0.1:PORT (process.argv[2], default 8080): "/" answers
// "hits=N", the requests this process has served.
const http = require("node:http");

let hits = 0;
const port = Number(process.argv[2] || 8080);
http.createServer((req, res) => {
  const body = `hits=${++hits}\n`;
  res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
  res.end(body);
}).listen(port, "127.0.0.1", () => console.log(`node example: listening on 127.0.0.1:${port}`));

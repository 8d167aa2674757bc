"""runtimes.sh server case: http.server on 127.0.0.1:PORT (argv[1]), one request at a time.
  /          "hello\n"
  /set/NAME  sets the global STATE to NAME: "set NAME\n"
  /get       "global=STATE\n" (STATE is "unset" until a /set)
  /hits      "hits=N\n", N counting every request this process served, this one included
  /identity  "pid=N token=HEX uuid=UUID ssl=HEX": what must differ between two processes (OpenSSL's
             generator is used once before listening, so its state is part of the paused template)
Prints "py_server: listening on 127.0.0.1:PORT" once it listens."""
import http.server
import os
import secrets
import ssl
import sys
import uuid

ssl.RAND_bytes(16)

STATE = "unset"
HITS = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global STATE, HITS
        HITS += 1
        if self.path == "/":
            body = "hello\n"
        elif self.path.startswith("/set/"):
            STATE = self.path[len("/set/"):]
            body = f"set {STATE}\n"
        elif self.path == "/get":
            body = f"global={STATE}\n"
        elif self.path == "/hits":
            body = f"hits={HITS}\n"
        elif self.path == "/identity":
            body = f"pid={os.getpid()} token={secrets.token_hex(16)} uuid={uuid.uuid4()} ssl={ssl.RAND_bytes(16).hex()}\n"
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


port = int(sys.argv[1])
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
print(f"py_server: listening on 127.0.0.1:{port}", flush=True)
server.serve_forever()

"""http.server for kvmserver on 127.0.0.1:PORT (argv[1], default 8080): "/" answers "hits=N", the
requests this process has served."""
import http.server
import sys

HITS = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global HITS
        HITS += 1
        body = f"hits={HITS}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
print(f"http_server example: listening on 127.0.0.1:{port}", flush=True)
server.serve_forever()

"""A WSGI application served by the standard library's wsgiref on 127.0.0.1:PORT (argv[1], default
8080): "/" answers "hits=N", the requests this process has served. Any WSGI app fits here."""
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

HITS = 0


def app(environ, start_response):
    global HITS
    HITS += 1
    body = f"hits={HITS}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
server = make_server("127.0.0.1", port, app, handler_class=QuietHandler)
print(f"wsgi_app example: listening on 127.0.0.1:{port}", flush=True)
server.serve_forever()

# Shared helpers of the bench/ scripts that drive servers (run.sh, server.sh, host_calls.sh).
# Source it after `cd` to the project root.
PY=/usr/bin/python3

# free_port : a TCP port on 127.0.0.1 that nothing listens on now.
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# get PORT COUNT : COUNT sequential GETs of / on 127.0.0.1:PORT, a new connection each (a warm-up,
# or a known number of requests to count per).
get() {
  $PY - "$1" "$2" <<'PYEOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), 30)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
PYEOF
}

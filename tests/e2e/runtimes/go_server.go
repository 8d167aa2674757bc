// runtimes.sh server case: net/http on 127.0.0.1:PORT (os.Args[1]); the same routes as
// py_server.py: / "hello\n", /set/NAME sets a global, /get "global=VALUE\n", /hits "hits=N\n";
// /identity "pid=N bytes=HEX uuid=UUID": what must differ between two processes. Built static
// (CGO_ENABLED=0) and with cgo (dynamically linked against glibc) by tests/guests/CMakeLists.txt.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

var (
	mu    sync.Mutex
	state = "unset"
	hits  = 0
)

func uuid4() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func main() {
	addr := "127.0.0.1:" + os.Args[1]
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		var body string
		switch {
		case r.URL.Path == "/":
			body = "hello\n"
		case strings.HasPrefix(r.URL.Path, "/set/"):
			state = strings.TrimPrefix(r.URL.Path, "/set/")
			body = "set " + state + "\n"
		case r.URL.Path == "/get":
			body = "global=" + state + "\n"
		case r.URL.Path == "/hits":
			body = fmt.Sprintf("hits=%d\n", hits)
		case r.URL.Path == "/identity":
			b := make([]byte, 16)
			rand.Read(b)
			body = fmt.Sprintf("pid=%d bytes=%s uuid=%s\n", os.Getpid(), hex.EncodeToString(b), uuid4())
		default:
			mu.Unlock()
			http.NotFound(w, r)
			return
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write([]byte(body))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("go_server: listening on %s\n", addr)
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// A net/http server for kvmserver on 127.0.0.1:PORT (os.Args[1], default 8080); "/" answers
// "hits=N", the requests this process has served.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
)

var hits atomic.Int64

func main() {
	port := "8080"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hits=%d\n", hits.Add(1))
	})
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("go example: listening on 127.0.0.1:%s\n", port)
	http.Serve(listener, nil)
}

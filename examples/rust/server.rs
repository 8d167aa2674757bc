// A std-only HTTP server for kvmserver on 127.0.0.1:PORT (first argument, default 8080); every
// answer is "hits=N" (requests this process has served) and closes the connection.
use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".to_string());
    let listener = TcpListener::bind(format!("127.0.0.1:{}", port)).expect("cannot listen");
    println!("rust example: listening on 127.0.0.1:{}", port);
    let mut hits = 0u64;
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(_) => continue,
        };
        let mut request = [0u8; 4096];
        if stream.read(&mut request).unwrap_or(0) == 0 {
            continue;
        }
        hits += 1;
        let body = format!("hits={}\n", hits);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            body
        );
    }
}

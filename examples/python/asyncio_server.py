"""An asyncio HTTP server (streams, standard library only) on 127.0.0.1:PORT (argv[1], default
8080): every answer is "hits=N", the requests this process has served; each connection is closed."""
import asyncio
import sys

HITS = 0


async def handle(reader, writer):
    global HITS
    await reader.readuntil(b"\r\n\r\n")
    HITS += 1
    body = f"hits={HITS}\n".encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"asyncio_server example: listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8080))

/* A minimal HTTP server for kvmserver: a blocking accept loop on 127.0.0.1:PORT (argv[1], default
 * 8080); every answer is "hits=N" (requests this process has served) and closes the connection. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char** argv) {
  const int port = argc > 1 ? atoi(argv[1]) : 8080;
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(listener, 128) != 0) {
    perror("listen");
    return 1;
  }
  printf("c example: listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
  static int hits;
  for (;;) {
    const int client = accept(listener, NULL, NULL);
    if (client < 0) continue;
    char request[4096];
    if (read(client, request, sizeof request) > 0) {  /* a request head fits one read here */
      char body[64], response[256];
      const int body_len = snprintf(body, sizeof body, "hits=%d\n", ++hits);
      const int len = snprintf(response, sizeof response,
                               "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                               body_len, body);
      write(client, response, (size_t)len);
    }
    close(client);
  }
}

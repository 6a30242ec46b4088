/* A tiny HTTP/1.1 server for bench/net.py: httpserve PORT. One process per connection (fork),
 * keep-alive, the same 13-byte answer to every request: the network path, not the server, is
 * what the benchmark measures. */
#define _GNU_SOURCE /* memmem */
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char ANSWER[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, bench\n";

static void serve(int c) {
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(c, buf + have, sizeof buf - have);
        if (n <= 0) return;
        have += (size_t)n;
        char *end;
        /* answer every complete request in the buffer (wrk does not pipeline, but be safe) */
        while ((end = memmem(buf, have, "\r\n\r\n", 4)) != NULL) {
            size_t used = (size_t)(end - buf) + 4;
            if (write(c, ANSWER, sizeof ANSWER - 1) < 0) return;
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        if (have == sizeof buf) return;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    signal(SIGCHLD, SIG_IGN);
    int fd = socket(AF_INET6, SOCK_STREAM, 0), one = 1, off = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((unsigned short)atoi(argv[1]));
    a.sin6_addr = in6addr_any;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 256) < 0) return 1;
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) {
            close(fd);
            serve(c);
            _exit(0);
        }
        close(c);
    }
}

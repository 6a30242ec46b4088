/* A UDP echo server for the network tests (busybox has no UDP server): udpecho PORT [v6].
 * Answers each datagram with "echo:" and the datagram, forever. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int port = atoi(argv[1]);
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    int off = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_any;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    for (;;) {
        char buf[1500], out[1510];
        struct sockaddr_in6 from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n < 0) continue;
        memcpy(out, "echo:", 5);
        memcpy(out + 5, buf, n);
        sendto(fd, out, n + 5, 0, (struct sockaddr *)&from, len);
    }
}

/*
 * Native reference UDP echo server for the benchmark: one thread, one
 * blocking socket, recvmmsg of up to 64 datagrams at a time, and sendmmsg of
 * the same batch back, each datagram to its sender.  The limit a Python
 * server could reach on this machine with the same load generator
 * (bench/udpgen.c).  Datagrams of up to 65,507 bytes come back whole, empty
 * ones too.  No guards: it answers every source (bench only, on loopback).
 *
 * usage: mmsg_echo PORT [ADDRESS]   (default 127.0.0.1; prints "listening")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define DATAGRAM_MAX 65536 /* more than the largest IPv4 UDP payload (65,507) */

static struct mmsghdr msgs[BATCH];
static struct iovec iovs[BATCH];
static struct sockaddr_in6 peers[BATCH]; /* room for any address family */

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: mmsg_echo PORT [ADDRESS]\n");
        return 64;
    }
    int port = atoi(argv[1]);
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "mmsg_echo: expected a port and an IPv4 address\n");
        return 64;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("mmsg_echo: socket/bind");
        return 1;
    }
    char *buffers = malloc((size_t)BATCH * DATAGRAM_MAX);
    if (!buffers) {
        perror("mmsg_echo: malloc");
        return 1;
    }
    for (int i = 0; i < BATCH; i++) {
        iovs[i].iov_base = buffers + (size_t)i * DATAGRAM_MAX;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &peers[i];
    }
    printf("listening on %s:%d (recvmmsg/sendmmsg, batches of %d)\n", host, port, BATCH);
    fflush(stdout);
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iovs[i].iov_len = DATAGRAM_MAX;
            msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
            msgs[i].msg_hdr.msg_flags = 0;
        }
        /* Wait for one datagram, then take whatever else is already queued. */
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("mmsg_echo: recvmmsg");
            return 1;
        }
        for (int i = 0; i < n; i++)
            iovs[i].iov_len = msgs[i].msg_len;
        int sent = 0;
        while (sent < n) {
            int r = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), 0);
            if (r < 0) {
                if (errno != EINTR)
                    sent++; /* this datagram cannot be sent (as any UDP server, drop it) */
                continue;
            }
            sent += r;
        }
    }
}

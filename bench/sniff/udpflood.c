/*
 * udpflood: send UDP datagrams to HOST:PORT at a fixed rate for a fixed time.
 *
 *   udpflood HOST PORT RATE SECONDS [SIZE]
 *
 * Datagrams go out in sendmmsg() batches paced against CLOCK_MONOTONIC, so the
 * rate holds on average over every millisecond.  Prints one line of JSON:
 * {"sent": N, "seconds": S, "rate": R}.  It binds HOST:PORT itself (a socket
 * that never reads) when it can, so nothing answers with ICMP.  Part of echod's sniffer benchmark
 * (bench/sniff/run.py compiles it into bench/build/).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT RATE SECONDS [SIZE]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double rate = atof(argv[3]);
    double seconds = atof(argv[4]);
    int size = argc > 5 ? atoi(argv[5]) : 18;
    if (size < 0 || size > 65507 || rate <= 0 || seconds <= 0) {
        fprintf(stderr, "udpflood: bad arguments\n");
        return 2;
    }

    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        fprintf(stderr, "udpflood: not an IPv4 address: %s\n", host);
        return 2;
    }
    /* A receiver that never reads: the kernel drops the datagrams at its
     * full queue instead of answering each with ICMP port unreachable. */
    int sink = socket(AF_INET, SOCK_DGRAM, 0);
    int small = 4096;
    setsockopt(sink, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (bind(sink, (struct sockaddr *)&to, sizeof to) < 0) {
        close(sink);
        sink = -1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
        perror("udpflood: socket");
        return 1;
    }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

    char *payload = calloc(1, size ? size : 1);
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    long long sent = 0, failed = 0;
    double start = now(), end = start + seconds;
    for (;;) {
        double t = now();
        if (t >= end)
            break;
        long long due = (long long)((t - start) * rate);
        if (sent + failed >= due) {
            struct timespec pause = {0, 50000};
            nanosleep(&pause, NULL);
            continue;
        }
        long long want = due - sent - failed;
        int n = want > BATCH ? BATCH : (int)want;
        int done = sendmmsg(fd, msgs, n, 0);
        if (done < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) {
                failed += 1;
                continue;
            }
            perror("udpflood: sendmmsg");
            return 1;
        }
        sent += done;
    }
    double elapsed = now() - start;
    printf("{\"sent\": %lld, \"failed\": %lld, \"seconds\": %.3f, \"rate\": %.0f}\n",
           sent, failed, elapsed, sent / elapsed);
    return 0;
}

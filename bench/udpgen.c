/*
 * echod benchmark UDP load generator: native, epoll, one thread.  Compiled at
 * run time by bench/run.py (gcc -O2) into bench/build/udpgen.
 *
 * --sockets N UDP sockets, each connect()ed to the server, each keeping
 * --window W datagrams of --size S bytes in flight (closed loop: a reply sends
 * the next datagram).  Every datagram carries a 16-byte header (magic, socket
 * id, sequence) and then a slice of a random pattern at an offset given by
 * (socket, sequence), so each reply is checked against what that socket sent
 * under that sequence, byte for byte.  A connected socket receives only the
 * server's datagrams; the sender of each reply is checked again.  A reply of
 * the wrong size, from another address, carrying another socket's header or
 * a sequence this socket never sent, or with one wrong byte is a mismatch:
 * the first is printed and the exit status is 2.
 *
 * A datagram with no reply within --loss-timeout seconds (0.2) is counted
 * lost and its slot sends a new datagram (a new sequence), so the window never
 * stalls; a reply to a datagram already answered or given up is counted late
 * (and checked too).  Loss is a result, not a failure: a UDP server may drop
 * datagrams under load.
 *
 * --sources K binds the sockets, in turn, to K distinct loopback addresses
 * 127.0.1.1, 127.0.1.2, ... (all of 127/8 is loopback on Linux), so that a
 * server keeping state per source address sees K sources; 0 (the default)
 * leaves the choice to the kernel (127.0.0.1 towards a loopback server).
 *
 * Timing: --warmup seconds not counted, then --seconds measured (replies
 * arriving then count), then no new datagram is sent and the outstanding ones
 * are waited for (each at most the loss timeout).  Any other failure (ICMP
 * port unreachable, a socket error, the whole run past --timeout) exits 1.
 * The result is one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAT_LEN 65521u   /* prime: no datagram size aligns with it */
#define DATAGRAM_MAX 65507 /* the largest UDP payload over IPv4 */
#define HEADER 16
#define MAGIC 0x65636864u /* "dhce" in memory on little-endian machines */
#define RBATCH 64         /* datagrams per recvmmsg */
#define MAX_EVENTS 512
#define MAX_WINDOW 1024

enum slot_state { FREE, OUT };

struct slot {
    unsigned char header[HEADER]; /* of the datagram in flight (or last sent) */
    uint64_t seq;                 /* its sequence */
    uint64_t next;                /* the sequence this slot sends next: slot + k * window */
    uint64_t t_sent;
    enum slot_state state;
};

struct sock {
    int fd;
    uint32_t id;
    int out; /* datagrams in flight */
    struct slot *slots;
};

static struct options {
    const char *host;
    int port;
    int sockets;
    int window;
    int size;
    int sources;
    double seconds;
    double warmup;
    double loss_timeout;
    double timeout;
    uint32_t seed;
} opt = {
    .host = "127.0.0.1",
    .port = 0,
    .sockets = 16,
    .window = 8,
    .size = 64,
    .sources = 0,
    .seconds = 3.0,
    .warmup = 0.5,
    .loss_timeout = 0.2,
    .timeout = 60.0,
    .seed = 0,
};

static unsigned char *pattern; /* PAT_LEN + DATAGRAM_MAX bytes, periodic */
static struct sockaddr_in server_addr;
static struct sock *socks;

static int failed; /* 0 ok, 1 error, 2 mismatch */
static long mismatches;
static char fail_message[512];

static struct {
    uint64_t sent, received, lost, late, bytes;
    uint64_t measured_received, measured_lost, measured_sent;
} count;

static uint64_t t_measure, t_end;

static void fail(int kind, const char *fmt, ...) {
    if (kind == 2)
        mismatches++;
    if (failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_message, sizeof fail_message, fmt, ap);
    va_end(ap);
    failed = kind;
    fprintf(stderr, "udpgen: %s\n", fail_message);
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int measuring(uint64_t t) {
    return t >= t_measure && t < t_end;
}

static void make_pattern(uint32_t seed) {
    pattern = malloc(PAT_LEN + DATAGRAM_MAX);
    if (!pattern) {
        perror("malloc");
        exit(1);
    }
    uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
    for (unsigned i = 0; i < PAT_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (unsigned char)(x >> 24);
    }
    for (unsigned i = 0; i < DATAGRAM_MAX; i++)
        pattern[PAT_LEN + i] = pattern[i % PAT_LEN];
}

/* The body of datagram (id, seq): its size - HEADER bytes start here. */
static inline const unsigned char *body(uint32_t id, uint64_t seq) {
    return pattern + (id * 2654435761ull + seq * 40503ull) % PAT_LEN;
}

static void make_header(unsigned char *h, uint32_t id, uint64_t seq) {
    uint32_t magic = MAGIC;
    memcpy(h, &magic, 4);
    memcpy(h + 4, &id, 4);
    memcpy(h + 8, &seq, 8);
}

/* --- sending ----------------------------------------------------------------- */

/* Send a new datagram from every free slot of s, in one sendmmsg. */
static void send_free(struct sock *s, uint64_t t) {
    static struct mmsghdr msgs[MAX_WINDOW];
    static struct iovec iovs[MAX_WINDOW][2];
    static int which[MAX_WINDOW];
    int n = 0;
    for (int j = 0; j < opt.window; j++) {
        struct slot *sl = &s->slots[j];
        if (sl->state != FREE)
            continue;
        uint64_t seq = sl->next;
        make_header(sl->header, s->id, seq);
        iovs[n][0].iov_base = sl->header;
        iovs[n][0].iov_len = HEADER;
        iovs[n][1].iov_base = (void *)body(s->id, seq);
        iovs[n][1].iov_len = (size_t)opt.size - HEADER;
        memset(&msgs[n], 0, sizeof msgs[n]);
        msgs[n].msg_hdr.msg_iov = iovs[n];
        msgs[n].msg_hdr.msg_iovlen = 2;
        which[n++] = j;
    }
    int done = 0;
    while (done < n) {
        int r = sendmmsg(s->fd, msgs + done, (unsigned)(n - done), 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == ENOBUFS)
                break; /* the free slots are tried again at the next scan */
            if (errno == ECONNREFUSED)
                fail(1, "socket %u: the server's port is closed (ICMP port unreachable)", s->id);
            else
                fail(1, "socket %u: sendmmsg: %s", s->id, strerror(errno));
            return;
        }
        done += r;
    }
    for (int k = 0; k < done; k++) {
        struct slot *sl = &s->slots[which[k]];
        sl->seq = sl->next;
        sl->next += (uint64_t)opt.window;
        sl->t_sent = t;
        sl->state = OUT;
        s->out++;
        count.sent++;
        if (measuring(t))
            count.measured_sent++;
    }
}

/* --- receiving and checking ---------------------------------------------------- */

static void check_reply(struct sock *s, const unsigned char *data, size_t len,
                        const struct sockaddr_in *from, socklen_t fromlen, uint64_t t) {
    if (fromlen < sizeof *from || from->sin_family != AF_INET ||
        from->sin_port != server_addr.sin_port ||
        from->sin_addr.s_addr != server_addr.sin_addr.s_addr) {
        char text[INET_ADDRSTRLEN] = "?";
        if (fromlen >= sizeof *from && from->sin_family == AF_INET)
            inet_ntop(AF_INET, &from->sin_addr, text, sizeof text);
        fail(2, "socket %u: a datagram from %s:%u, not from the server", s->id, text,
             (unsigned)ntohs(from->sin_port));
        return;
    }
    if (len != (size_t)opt.size) {
        fail(2, "socket %u: a reply of %zu bytes to datagrams of %d bytes", s->id, len, opt.size);
        return;
    }
    uint32_t magic, id;
    uint64_t seq;
    memcpy(&magic, data, 4);
    memcpy(&id, data + 4, 4);
    memcpy(&seq, data + 8, 8);
    if (magic != MAGIC) {
        fail(2, "socket %u: a reply whose header this load generator never sent "
                "(magic 0x%08x)", s->id, magic);
        return;
    }
    if (id != s->id) {
        fail(2, "socket %u: a reply carrying the header of socket %u", s->id, id);
        return;
    }
    struct slot *sl = &s->slots[seq % (uint64_t)opt.window];
    if (seq >= sl->next) {
        fail(2, "socket %u: a reply with sequence %" PRIu64 ", never sent", s->id, seq);
        return;
    }
    const unsigned char *want = body(id, seq);
    if (memcmp(data + HEADER, want, len - HEADER) != 0) {
        size_t k = 0;
        while (data[HEADER + k] == want[k])
            k++;
        fail(2, "socket %u, sequence %" PRIu64 ": byte %zu: expected 0x%02x, got 0x%02x", s->id,
             seq, HEADER + k, want[k], data[HEADER + k]);
        return;
    }
    if (sl->state == OUT && sl->seq == seq) {
        sl->state = FREE;
        s->out--;
        count.received++;
        count.bytes += len;
        if (measuring(t))
            count.measured_received++;
    } else {
        count.late++; /* answered already, or given up as lost */
    }
}

static unsigned char *rbuf;
static struct mmsghdr rmsgs[RBATCH];
static struct iovec riovs[RBATCH];
static struct sockaddr_in rfrom[RBATCH];

static void receive(struct sock *s, int sending) {
    for (;;) {
        for (int i = 0; i < RBATCH; i++)
            rmsgs[i].msg_hdr.msg_namelen = sizeof rfrom[i];
        int r = recvmmsg(s->fd, rmsgs, RBATCH, MSG_DONTWAIT, NULL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            if (errno == ECONNREFUSED)
                fail(1, "socket %u: the server's port is closed (ICMP port unreachable)", s->id);
            else
                fail(1, "socket %u: recvmmsg: %s", s->id, strerror(errno));
            return;
        }
        uint64_t t = now_ns();
        for (int i = 0; i < r && !failed; i++)
            check_reply(s, riovs[i].iov_base, rmsgs[i].msg_len, &rfrom[i],
                        rmsgs[i].msg_hdr.msg_namelen, t);
        if (failed || r < RBATCH)
            break;
    }
    if (sending && !failed)
        send_free(s, now_ns());
}

/* Datagrams without a reply for too long are lost; their slots send anew. */
static void scan(uint64_t t, int sending) {
    uint64_t limit = (uint64_t)(opt.loss_timeout * 1e9);
    for (int i = 0; i < opt.sockets && !failed; i++) {
        struct sock *s = &socks[i];
        for (int j = 0; j < opt.window; j++) {
            struct slot *sl = &s->slots[j];
            if (sl->state == OUT && t - sl->t_sent > limit) {
                sl->state = FREE;
                s->out--;
                count.lost++;
                if (measuring(t))
                    count.measured_lost++;
            }
        }
        if (sending && s->out < opt.window)
            send_free(s, t);
    }
}

/* --- setup ------------------------------------------------------------------- */

static void open_sockets(int epfd) {
    socks = calloc((size_t)opt.sockets, sizeof *socks);
    if (!socks) {
        perror("calloc");
        exit(1);
    }
    for (int i = 0; i < opt.sockets; i++) {
        struct sock *s = &socks[i];
        s->id = (uint32_t)i;
        s->slots = calloc((size_t)opt.window, sizeof *s->slots);
        if (!s->slots) {
            perror("calloc");
            exit(1);
        }
        for (int j = 0; j < opt.window; j++)
            s->slots[j].next = (uint64_t)j;
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0) {
            fprintf(stderr, "udpgen: socket: %s\n", strerror(errno));
            exit(1);
        }
        if (opt.sources > 0) {
            /* 127.0.1.1 ... 127.0.1.254, 127.0.2.1 ...: never .0 or .255 */
            int k = i % opt.sources;
            struct sockaddr_in source = {.sin_family = AF_INET};
            source.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(1 + k / 254) << 8 |
                                           (uint32_t)(1 + k % 254));
            if (bind(s->fd, (struct sockaddr *)&source, sizeof source) < 0) {
                fprintf(stderr, "udpgen: bind to source address %d: %s\n", k, strerror(errno));
                exit(1);
            }
        }
        if (connect(s->fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0) {
            fprintf(stderr, "udpgen: connect: %s\n", strerror(errno));
            exit(1);
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
            fprintf(stderr, "udpgen: epoll_ctl: %s\n", strerror(errno));
            exit(1);
        }
    }
}

static int outstanding(void) {
    int n = 0;
    for (int i = 0; i < opt.sockets; i++)
        n += socks[i].out;
    return n;
}

static void run(void) {
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    open_sockets(epfd);
    uint64_t t0 = now_ns();
    t_measure = t0 + (uint64_t)(opt.warmup * 1e9);
    t_end = t_measure + (uint64_t)(opt.seconds * 1e9);
    uint64_t deadline = t0 + (uint64_t)(opt.timeout * 1e9);
    uint64_t scan_every = 5000000u, last_scan = t0;
    for (int i = 0; i < opt.sockets && !failed; i++)
        send_free(&socks[i], t0);
    static struct epoll_event events[MAX_EVENTS];
    int sending = 1;
    while (!failed) {
        uint64_t t = now_ns();
        if (t > deadline) {
            fail(1, "timed out: %d datagrams still in flight after %.1f s", outstanding(),
                 opt.timeout);
            break;
        }
        if (sending && t >= t_end)
            sending = 0;
        if (!sending && outstanding() == 0)
            break;
        int n = epoll_wait(epfd, events, MAX_EVENTS, 5);
        if (n < 0 && errno != EINTR) {
            fail(1, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int k = 0; k < n && !failed; k++)
            receive(&socks[events[k].data.u32], sending);
        t = now_ns();
        if (t - last_scan >= scan_every) {
            scan(t, sending);
            last_scan = t;
        }
    }
}

/* --- main ------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: udpgen --port P [--host A] [--sockets N] [--window W] [--size S]\n"
            "       [--sources K] [--seconds T] [--warmup T] [--loss-timeout T]\n"
            "       [--timeout T] [--seed N]\n");
    exit(64);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--host"))
            opt.host = v;
        else if (ARG("--port"))
            opt.port = atoi(v);
        else if (ARG("--sockets"))
            opt.sockets = atoi(v);
        else if (ARG("--window"))
            opt.window = atoi(v);
        else if (ARG("--size"))
            opt.size = atoi(v);
        else if (ARG("--sources"))
            opt.sources = atoi(v);
        else if (ARG("--seconds"))
            opt.seconds = atof(v);
        else if (ARG("--warmup"))
            opt.warmup = atof(v);
        else if (ARG("--loss-timeout"))
            opt.loss_timeout = atof(v);
        else if (ARG("--timeout"))
            opt.timeout = atof(v);
        else if (ARG("--seed"))
            opt.seed = (uint32_t)strtoul(v, NULL, 10);
        else
            usage();
#undef ARG
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.sockets < 1 || opt.sockets > 60000 ||
        opt.window < 1 || opt.window > MAX_WINDOW || opt.size < HEADER ||
        opt.size > DATAGRAM_MAX || opt.sources < 0 || opt.sources > 254 * 254 ||
        opt.seconds <= 0 || opt.warmup < 0 || opt.loss_timeout <= 0 || opt.timeout <= 0)
        usage();
    raise_nofile();
    if (!opt.seed)
        opt.seed = (uint32_t)(now_ns() ^ (uint64_t)getpid());
    make_pattern(opt.seed);
    rbuf = malloc((size_t)RBATCH * DATAGRAM_MAX);
    if (!rbuf) {
        perror("malloc");
        return 1;
    }
    for (int i = 0; i < RBATCH; i++) {
        /* room for the largest datagram: a reply longer than sent shows */
        riovs[i].iov_base = rbuf + (size_t)i * DATAGRAM_MAX;
        riovs[i].iov_len = DATAGRAM_MAX;
        rmsgs[i].msg_hdr.msg_iov = &riovs[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
        rmsgs[i].msg_hdr.msg_name = &rfrom[i];
    }
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) {
        fprintf(stderr, "udpgen: --host must be an IPv4 address\n");
        return 64;
    }

    uint64_t t0 = now_ns();
    double cpu0 = cpu_seconds();
    run();
    double wall = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;

    char err[600] = "null";
    if (failed) /* the message holds no quotes or backslashes */
        snprintf(err, sizeof err, "\"%s\"", fail_message);
    printf("{\"mode\": \"udp\", \"ok\": %s, \"error\": %s, \"mismatches\": %ld, "
           "\"sockets\": %d, \"window\": %d, \"size\": %d, \"sources\": %d, "
           "\"seconds\": %.3f, \"warmup\": %.3f, \"loss_timeout_s\": %.3f, "
           "\"wall_s\": %.3f, \"cpu_s\": %.3f, "
           "\"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"lost\": %" PRIu64
           ", \"late\": %" PRIu64 ", \"in_flight_at_end\": %d, "
           "\"measured_sent\": %" PRIu64 ", \"measured_received\": %" PRIu64
           ", \"measured_lost\": %" PRIu64 ", "
           "\"dgrams_per_s\": %.1f, \"mb_per_s\": %.3f}\n",
           failed ? "false" : "true", err, mismatches, opt.sockets, opt.window, opt.size,
           opt.sources, opt.seconds, opt.warmup, opt.loss_timeout, wall, cpu, count.sent,
           count.received, count.lost, count.late, outstanding(), count.measured_sent,
           count.measured_received, count.measured_lost,
           (double)count.measured_received / opt.seconds,
           (double)count.measured_received * opt.size / opt.seconds / 1e6);
    fflush(stdout);
    return failed;
}

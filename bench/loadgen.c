/*
 * echod benchmark load generator: native, epoll, one process, optionally
 * several threads.  Compiled at run time by bench/run.py (gcc -O2).
 *
 * Every echoed byte is checked against what was sent.  Each connection sends
 * its own slice of a random pattern whose length is a prime (65521), so a
 * byte echoed out of order, on the wrong connection, or corrupted differs
 * from the expected one; the first difference is printed and the exit status
 * is 2.  Any other failure (reset, refused, timeout) exits 1.  The result is
 * one JSON object on stdout.
 *
 * Modes:
 *   pingpong  C connections, closed loop: send S bytes, wait for all S back,
 *             verify, record the round-trip time, repeat.  messages/s, p50/p99.
 *   stream    C connections, each keeping at most W bytes in flight; MB/s of
 *             verified echo.
 *   hold      open C connections (at most P connecting at once), each echoes
 *             a small message; time until all have.  Then hold them idle
 *             ("ESTABLISHED n secs" on stderr) until stdin gives a line or
 *             EOF, check every one still echoes, close them all.
 *   rate      L lanes, each: connect, echo S bytes, close, repeat; conn/s.
 *             Sources rotate over 127.0.0.2-201 so TIME_WAIT never runs out
 *             of ports.
 *
 * Timing: WARMUP seconds are run and not counted, then SECONDS are measured;
 * then new work stops, what is in flight is drained and verified, every
 * connection half-closes and waits for the server's EOF (so every server is
 * also checked to close after a half-close), within --drain seconds; the
 * whole run within --timeout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PAT_LEN 65521u   /* prime: no message size aligns with it */
#define MAX_CHUNK (256u * 1024u) /* longest slice taken from the pattern at once */
#define RECV_BUF (256u * 1024u)
#define MAX_EVENTS 512
#define HSUB 64 /* histogram: 64 linear sub-buckets per power of two */
#define HBUCKETS (64 * HSUB)

enum mode { PINGPONG, STREAM, HOLD, RATE };
enum state { S_CONNECTING, S_RUNNING, S_DRAINING, S_SHUTDOWN, S_CLOSED, S_IDLE };

static unsigned char *pattern; /* PAT_LEN + MAX_CHUNK bytes, periodic */

static struct options {
    enum mode mode;
    const char *host;
    int port;
    int conns;
    int size;
    double seconds;
    double warmup;
    int threads;
    long window;
    int pending;
    double timeout;
    double hold_max;
    double drain;
    int nodelay;
    uint32_t seed;
} opt = {
    .mode = PINGPONG,
    .host = "127.0.0.1",
    .port = 0,
    .conns = 1,
    .size = 64,
    .seconds = 3.0,
    .warmup = 0.5,
    .threads = 1,
    .window = 256 * 1024,
    .pending = 1000,
    .timeout = 60.0,
    .hold_max = 120.0,
    .drain = 10.0,
    .nodelay = 1,
    .seed = 0,
};

static struct sockaddr_in server_addr;

/* --- failure ------------------------------------------------------------ */

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int failed;      /* 0 ok, 1 error, 2 mismatch */
static char fail_message[512];
static atomic_long mismatches;

static void fail(int kind, const char *fmt, ...) {
    pthread_mutex_lock(&fail_lock);
    if (!atomic_load(&failed)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fail_message, sizeof fail_message, fmt, ap);
        va_end(ap);
        atomic_store(&failed, kind);
        fprintf(stderr, "loadgen: %s\n", fail_message);
    }
    if (kind == 2)
        atomic_fetch_add(&mismatches, 1);
    pthread_mutex_unlock(&fail_lock);
}

/* --- time, histogram ------------------------------------------------------ */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int hist_index(uint64_t v) {
    if (v < HSUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* e >= 6 */
    int m = (int)((v >> (e - 6)) & (HSUB - 1));
    return (e - 5) * HSUB + m;
}

static double hist_value(int idx) {
    if (idx < HSUB)
        return idx;
    int e = idx / HSUB + 5;
    int m = idx % HSUB;
    double low = (double)((uint64_t)(HSUB + m) << (e - 6));
    double width = (double)(1ull << (e - 6));
    return low + width / 2;
}

static double hist_quantile(const uint64_t *h, uint64_t total, double q) {
    if (!total)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1, seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += h[i];
        if (seen >= rank)
            return hist_value(i);
    }
    return hist_value(HBUCKETS - 1);
}

/* --- pattern ------------------------------------------------------------- */

static void make_pattern(uint32_t seed) {
    pattern = malloc(PAT_LEN + MAX_CHUNK);
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
    for (unsigned i = 0; i < MAX_CHUNK; i++)
        pattern[PAT_LEN + i] = pattern[i];
}

static inline const unsigned char *expected_at(uint32_t cseed, uint64_t offset) {
    return pattern + (cseed + offset) % PAT_LEN;
}

/* --- connections ----------------------------------------------------------- */

struct conn {
    int fd;
    int id;
    enum state state;
    uint32_t cseed;
    int out_armed; /* registered for EPOLLOUT */
    uint64_t sent;     /* stream offset of the next byte to send */
    uint64_t recvd;    /* stream offset of the next byte expected back */
    uint64_t msg_end;  /* pingpong/hold/rate: end offset of the current message */
    uint64_t t_send;   /* when the current message started */
};

struct worker {
    int index;
    int epfd;
    struct conn *conns;
    int nconns;
    uint64_t t_measure, t_end, t_deadline;
    /* results */
    uint64_t messages;
    uint64_t bytes;
    uint64_t connections;
    uint64_t hist[HBUCKETS];
    int open;
    pthread_t thread;
    unsigned char *buf;
    int lane_source; /* rate: rotating source address */
};

static uint32_t conn_seed(int id) {
    return (uint32_t)(((uint64_t)id * 7919u + opt.seed) % PAT_LEN);
}

static void set_events(struct worker *w, struct conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(w->epfd, op, c->fd, &ev) < 0) {
        fail(1, "epoll_ctl: %s", strerror(errno));
    }
}

static void arm_out(struct worker *w, struct conn *c, int on) {
    if (c->out_armed == on)
        return;
    c->out_armed = on;
    set_events(w, c, EPOLLIN | (on ? EPOLLOUT : 0), EPOLL_CTL_MOD);
}

/* Start a non-blocking connect; the socket is registered for EPOLLOUT. */
static int start_connect(struct worker *w, struct conn *c, const struct sockaddr_in *source) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail(1, "socket: %s (raise RLIMIT_NOFILE?)", strerror(errno));
        return -1;
    }
    if (opt.nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (source) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)source, sizeof *source) < 0) {
            fail(1, "bind source address: %s", strerror(errno));
            close(fd);
            return -1;
        }
    }
    c->fd = fd;
    c->state = S_CONNECTING;
    c->sent = c->recvd = c->msg_end = 0;
    c->out_armed = 1;
    if (connect(fd, (const struct sockaddr *)&server_addr, sizeof server_addr) < 0 &&
        errno != EINPROGRESS) {
        fail(1, "connect: %s", strerror(errno));
        close(fd);
        c->fd = -1;
        return -1;
    }
    set_events(w, c, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD);
    w->open++;
    return 0;
}

static int connect_finished(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        fail(1, "connection %d: connect failed: %s", c->id, strerror(err));
        return -1;
    }
    return 0;
}

static void close_conn(struct worker *w, struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        w->open--;
    }
    c->state = S_CLOSED;
}

/* Send what the message or window allows; returns -1 on failure. */
static int send_pending(struct worker *w, struct conn *c, uint64_t limit) {
    while (c->sent < limit) {
        uint64_t n = limit - c->sent;
        if (n > MAX_CHUNK)
            n = MAX_CHUNK;
        ssize_t r = send(c->fd, expected_at(c->cseed, c->sent), n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                arm_out(w, c, 1);
                return 0;
            }
            if (errno == EINTR)
                continue;
            fail(1, "connection %d: send: %s", c->id, strerror(errno));
            return -1;
        }
        c->sent += (uint64_t)r;
    }
    arm_out(w, c, 0);
    return 0;
}

static void start_message(struct worker *w, struct conn *c, uint64_t t) {
    c->msg_end = c->sent + (uint64_t)opt.size;
    c->t_send = t;
    send_pending(w, c, c->msg_end);
}

/* Verify n received bytes against the pattern. */
static int verify(struct conn *c, const unsigned char *data, size_t n) {
    if (c->recvd + n > c->sent) {
        fail(2, "connection %d: server echoed %zu bytes at offset %" PRIu64
                " but only %" PRIu64 " were sent",
             c->id, n, c->recvd, c->sent);
        return -1;
    }
    size_t done = 0;
    while (done < n) {
        size_t piece = n - done;
        if (piece > MAX_CHUNK)
            piece = MAX_CHUNK;
        const unsigned char *want = expected_at(c->cseed, c->recvd + done);
        if (memcmp(data + done, want, piece) != 0) {
            for (size_t i = 0; i < piece; i++) {
                if (data[done + i] != want[i]) {
                    fail(2, "mismatch on connection %d at stream offset %" PRIu64
                            ": expected 0x%02x, got 0x%02x",
                         c->id, c->recvd + done + i, want[i], data[done + i]);
                    return -1;
                }
            }
        }
        done += piece;
    }
    c->recvd += n;
    return 0;
}

/* Read what is there.  Returns bytes read, 0 on EOF, -1 on EAGAIN, -2 on error. */
static ssize_t read_some(struct worker *w, struct conn *c) {
    for (;;) {
        ssize_t r = recv(c->fd, w->buf, RECV_BUF, 0);
        if (r > 0) {
            if (verify(c, w->buf, (size_t)r) < 0)
                return -2;
            return r;
        }
        if (r == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -1;
        fail(1, "connection %d: recv: %s", c->id, strerror(errno));
        return -2;
    }
}

static void half_close(struct worker *w, struct conn *c) {
    if (c->state == S_SHUTDOWN || c->state == S_CLOSED)
        return;
    if (shutdown(c->fd, SHUT_WR) < 0) {
        fail(1, "connection %d: shutdown: %s", c->id, strerror(errno));
        return;
    }
    c->state = S_SHUTDOWN;
    arm_out(w, c, 0);
}

/* --- the event loop, shared by all modes ---------------------------------- */

static struct sockaddr_in rate_source(struct worker *w) {
    /* Spread rate-mode connections over 127.0.0.2-127.0.0.201: TIME_WAIT
     * entries are per address pair, so no run exhausts the ephemeral ports. */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    uint32_t host = 0x7f000002u + (uint32_t)((w->lane_source++ * 8 + w->index) % 200);
    a.sin_addr.s_addr = htonl(host);
    return a;
}

static int rate_restart(struct worker *w, struct conn *c, uint64_t t) {
    close_conn(w, c);
    if (t >= w->t_end) {
        c->state = S_CLOSED;
        return 0;
    }
    struct sockaddr_in source = rate_source(w);
    if (server_addr.sin_addr.s_addr != htonl(0x7f000001u))
        return start_connect(w, c, NULL);
    return start_connect(w, c, &source);
}

static void message_done(struct worker *w, struct conn *c, uint64_t t) {
    if (t >= w->t_measure && t < w->t_end) {
        w->messages++;
        uint64_t rtt = t - c->t_send;
        w->hist[hist_index(rtt)]++;
    }
}

static void on_event(struct worker *w, struct conn *c, uint32_t events, uint64_t t) {
    if (c->state == S_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (connect_finished(c) < 0)
            return;
        c->state = S_RUNNING;
        c->out_armed = 1;
        arm_out(w, c, 0);
        if (opt.mode == STREAM) {
            send_pending(w, c, c->recvd + (uint64_t)opt.window);
        } else {
            start_message(w, c, t);
        }
        return;
    }
    if ((events & EPOLLOUT) && c->state != S_SHUTDOWN && c->state != S_IDLE) {
        uint64_t limit = opt.mode == STREAM && c->state == S_RUNNING
                             ? c->recvd + (uint64_t)opt.window
                             : c->msg_end;
        if (opt.mode == STREAM && c->state == S_DRAINING)
            limit = c->sent;
        if (send_pending(w, c, limit) < 0)
            return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    /* One read per event: epoll is level-triggered, so what is left is
     * reported again, and ping-pong saves the recv() that would say EAGAIN. */
    {
        uint64_t before = c->recvd;
        ssize_t r = read_some(w, c);
        if (r == -2)
            return;
        if (r == 0) {
            if (c->state == S_SHUTDOWN) {
                if (c->recvd != c->sent) {
                    fail(1, "connection %d: server closed with %" PRIu64 " bytes not echoed",
                         c->id, c->sent - c->recvd);
                    return;
                }
                close_conn(w, c);
            } else {
                fail(1, "connection %d: server closed the connection (%s)", c->id,
                     c->state == S_IDLE ? "while held idle" : "while echoing");
            }
            return;
        }
        if (r == -1)
            return;
        if (c->state == S_IDLE) {
            fail(1, "connection %d: unexpected data while idle", c->id);
            return;
        }
        if (opt.mode == STREAM) {
            if (t >= w->t_measure && t < w->t_end)
                w->bytes += c->recvd - before;
            if (c->state == S_RUNNING) {
                if (t >= w->t_end) {
                    c->state = S_DRAINING;
                } else if (send_pending(w, c, c->recvd + (uint64_t)opt.window) < 0) {
                    return;
                }
            }
            if (c->state == S_DRAINING && c->recvd == c->sent)
                half_close(w, c);
        } else if (c->recvd == c->msg_end && c->sent == c->msg_end) {
            if (c->state == S_RUNNING || c->state == S_DRAINING)
                message_done(w, c, t);
            if (opt.mode == RATE && c->state == S_RUNNING) {
                if (t >= w->t_measure && t < w->t_end)
                    w->connections++;
                rate_restart(w, c, t);
                return;
            }
            if (opt.mode == HOLD) {
                w->connections++;
                if (c->state == S_RUNNING)
                    c->state = S_IDLE;
                else
                    half_close(w, c);
                return;
            }
            if (c->state == S_RUNNING && t < w->t_end) {
                start_message(w, c, t);
            } else {
                half_close(w, c);
            }
        }
    }
}

static int loop_once(struct worker *w, int timeout_ms) {
    struct epoll_event events[MAX_EVENTS];
    int n = epoll_wait(w->epfd, events, MAX_EVENTS, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        fail(1, "epoll_wait: %s", strerror(errno));
        return -1;
    }
    uint64_t t = now_ns();
    for (int i = 0; i < n && !atomic_load_explicit(&failed, memory_order_relaxed); i++)
        on_event(w, events[i].data.ptr, events[i].events, t);
    return n;
}

/* Stop new work: connections between messages half-close now; the rest do
 * when their message completes (see on_event). */
static void stop_work(struct worker *w) {
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == S_RUNNING) {
            if (opt.mode == STREAM) {
                c->state = S_DRAINING;
                if (c->recvd == c->sent)
                    half_close(w, c);
            } else if (opt.mode == RATE) {
                /* finishes its current echo, then closes (rate_restart) */
            } else if (c->recvd == c->msg_end && c->sent == c->msg_end) {
                half_close(w, c);
            } else {
                c->state = S_DRAINING;
            }
        }
    }
}

static void *run_worker(void *arg) {
    struct worker *w = arg;
    w->buf = malloc(RECV_BUF);
    if (!w->buf) {
        fail(1, "malloc");
        return NULL;
    }
    int stopped = 0;
    while (!atomic_load(&failed)) {
        uint64_t t = now_ns();
        if (t > w->t_deadline || (stopped && t > w->t_end + (uint64_t)(opt.drain * 1e9))) {
            int waiting_eof = 0, echoing = 0, connecting = 0;
            for (int i = 0; i < w->nconns; i++) {
                enum state st = w->conns[i].state;
                waiting_eof += st == S_SHUTDOWN;
                connecting += st == S_CONNECTING;
                echoing += st == S_RUNNING || st == S_DRAINING;
            }
            fail(1, "timed out: %d connections half-closed and waiting for the server to close, "
                    "%d waiting for an echo, %d connecting",
                 waiting_eof, echoing, connecting);
            break;
        }
        if (!stopped && t >= w->t_end) {
            stop_work(w);
            stopped = 1;
        }
        if (stopped && w->open == 0)
            break;
        if (loop_once(w, 5) < 0)
            break;
    }
    return NULL;
}

/* --- modes ------------------------------------------------------------------ */

static struct worker *workers;

static void setup_workers(uint64_t t0) {
    workers = calloc((size_t)opt.threads, sizeof *workers);
    for (int k = 0; k < opt.threads; k++) {
        struct worker *w = &workers[k];
        w->index = k;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->t_measure = t0 + (uint64_t)(opt.warmup * 1e9);
        w->t_end = w->t_measure + (uint64_t)(opt.seconds * 1e9);
        w->t_deadline = t0 + (uint64_t)(opt.timeout * 1e9);
    }
    for (int i = 0; i < opt.conns; i++)
        workers[i % opt.threads].nconns++;
    int next = 0;
    for (int k = 0; k < opt.threads; k++) {
        struct worker *w = &workers[k];
        w->conns = calloc((size_t)(w->nconns ? w->nconns : 1), sizeof *w->conns);
        for (int j = 0; j < w->nconns; j++) {
            struct conn *c = &w->conns[j];
            c->id = next++;
            c->fd = -1;
            c->cseed = conn_seed(c->id);
        }
    }
}

static void run_threads(void) {
    for (int k = 0; k < opt.threads; k++) {
        struct worker *w = &workers[k];
        for (int j = 0; j < w->nconns; j++) {
            struct conn *c = &w->conns[j];
            struct sockaddr_in source;
            const struct sockaddr_in *src = NULL;
            if (opt.mode == RATE && server_addr.sin_addr.s_addr == htonl(0x7f000001u)) {
                source = rate_source(w);
                src = &source;
            }
            if (start_connect(w, c, src) < 0)
                return;
        }
    }
    for (int k = 1; k < opt.threads; k++)
        pthread_create(&workers[k].thread, NULL, run_worker, &workers[k]);
    run_worker(&workers[0]);
    for (int k = 1; k < opt.threads; k++)
        pthread_join(workers[k].thread, NULL);
}

/* hold: connect all, hold idle until told, check them, close them. */
static double hold_established_s;
static double hold_check_s;

static void run_hold(void) {
    struct worker *w = &workers[0];
    w->buf = malloc(RECV_BUF);
    w->t_measure = 0;
    w->t_end = UINT64_MAX;
    uint64_t t0 = now_ns();
    int started = 0;
    /* phase 1: establish, at most opt.pending connecting or echoing at once */
    while (!atomic_load(&failed) && (int)w->connections < opt.conns) {
        while (started < opt.conns && started - (int)w->connections < opt.pending) {
            if (start_connect(w, &w->conns[started], NULL) < 0)
                return;
            started++;
        }
        if (now_ns() > w->t_deadline) {
            fail(1, "timed out establishing: %" PRIu64 " of %d connections echoed",
                 w->connections, opt.conns);
            return;
        }
        if (loop_once(w, 5) < 0)
            return;
    }
    if (atomic_load(&failed))
        return;
    hold_established_s = (double)(now_ns() - t0) / 1e9;
    fprintf(stderr, "ESTABLISHED %d %.6f\n", opt.conns, hold_established_s);
    fflush(stderr);
    /* phase 2: idle until stdin has a line or EOF, or hold_max */
    uint64_t hold_until = now_ns() + (uint64_t)(opt.hold_max * 1e9);
    for (;;) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int r = poll(&p, 1, 0);
        if (r > 0)
            break;
        if (now_ns() > hold_until)
            break;
        if (loop_once(w, 20) < 0 || atomic_load(&failed))
            return;
    }
    /* phase 3: every connection still echoes; then half-close and wait EOF */
    uint64_t t1 = now_ns();
    w->t_deadline = t1 + (uint64_t)(opt.timeout * 1e9);
    w->connections = 0;
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &w->conns[i];
        c->state = S_DRAINING;
        start_message(w, c, t1);
        if (atomic_load(&failed))
            return;
    }
    while (!atomic_load(&failed) && w->open > 0) {
        if (now_ns() > w->t_deadline) {
            fail(1, "timed out checking and closing the held connections (%d still open)",
                 w->open);
            return;
        }
        loop_once(w, 5);
    }
    hold_check_s = (double)(now_ns() - t1) / 1e9;
}

/* --- main ------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --mode pingpong|stream|hold|rate --port P [--host A]\n"
            "       [--conns C] [--size S] [--seconds T] [--warmup W] [--threads N]\n"
            "       [--window BYTES] [--pending P] [--timeout S] [--hold-max S] [--drain S]\n"
            "       [--no-nodelay] [--seed N]\n");
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
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < (long)opt.conns + 64) {
        fprintf(stderr, "loadgen: open file limit %ld is too low for %d connections\n",
                (long)rl.rlim_cur, opt.conns);
        exit(1);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--mode")) {
            if (!strcmp(v, "pingpong"))
                opt.mode = PINGPONG;
            else if (!strcmp(v, "stream"))
                opt.mode = STREAM;
            else if (!strcmp(v, "hold"))
                opt.mode = HOLD;
            else if (!strcmp(v, "rate"))
                opt.mode = RATE;
            else
                usage();
        } else if (ARG("--host"))
            opt.host = v;
        else if (ARG("--port"))
            opt.port = atoi(v);
        else if (ARG("--conns"))
            opt.conns = atoi(v);
        else if (ARG("--size"))
            opt.size = atoi(v);
        else if (ARG("--seconds"))
            opt.seconds = atof(v);
        else if (ARG("--warmup"))
            opt.warmup = atof(v);
        else if (ARG("--threads"))
            opt.threads = atoi(v);
        else if (ARG("--window"))
            opt.window = atol(v);
        else if (ARG("--pending"))
            opt.pending = atoi(v);
        else if (ARG("--timeout"))
            opt.timeout = atof(v);
        else if (ARG("--hold-max"))
            opt.hold_max = atof(v);
        else if (ARG("--drain"))
            opt.drain = atof(v);
        else if (ARG("--seed"))
            opt.seed = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--no-nodelay"))
            opt.nodelay = 0;
        else
            usage();
#undef ARG
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.size < 1 ||
        opt.size > 16 * 1024 * 1024 || opt.seconds <= 0 || opt.warmup < 0 || opt.threads < 1 ||
        opt.threads > 64 || opt.window < 1 || opt.pending < 1 || opt.timeout <= 0)
        usage();
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
    if (opt.mode == HOLD)
        opt.threads = 1;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (!opt.seed)
        opt.seed = (uint32_t)(now_ns() ^ (uint64_t)getpid());
    make_pattern(opt.seed);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 64;
    }

    uint64_t t0 = now_ns();
    double cpu0 = cpu_seconds();
    setup_workers(t0);
    if (opt.mode == HOLD)
        run_hold();
    else
        run_threads();
    double wall = (double)(now_ns() - t0) / 1e9;
    double cpu = cpu_seconds() - cpu0;

    uint64_t messages = 0, bytes = 0, connections = 0;
    static uint64_t hist[HBUCKETS];
    for (int k = 0; k < opt.threads; k++) {
        messages += workers[k].messages;
        bytes += workers[k].bytes;
        connections += workers[k].connections;
        for (int i = 0; i < HBUCKETS; i++)
            hist[i] += workers[k].hist[i];
    }
    static const char *names[] = {"pingpong", "stream", "hold", "rate"};
    int kind = atomic_load(&failed);
    char err[600] = "null";
    if (kind) {
        /* the message holds no quotes or backslashes */
        snprintf(err, sizeof err, "\"%s\"", fail_message);
    }
    printf("{\"mode\": \"%s\", \"ok\": %s, \"error\": %s, \"mismatches\": %ld, "
           "\"conns\": %d, \"size\": %d, \"threads\": %d, \"seconds\": %.3f, "
           "\"warmup\": %.3f, \"wall_s\": %.3f, \"cpu_s\": %.3f",
           names[opt.mode], kind ? "false" : "true", err, atomic_load(&mismatches), opt.conns,
           opt.size, opt.threads, opt.seconds, opt.warmup, wall, cpu);
    if (opt.mode == PINGPONG) {
        printf(", \"messages\": %" PRIu64 ", \"msgs_per_s\": %.1f, \"rtt_p50_us\": %.2f, "
               "\"rtt_p99_us\": %.2f, \"mb_per_s\": %.3f",
               messages, messages / opt.seconds, hist_quantile(hist, messages, 0.50) / 1e3,
               hist_quantile(hist, messages, 0.99) / 1e3,
               (double)messages * opt.size / opt.seconds / 1e6);
    } else if (opt.mode == STREAM) {
        printf(", \"window\": %ld, \"bytes\": %" PRIu64 ", \"mb_per_s\": %.3f", opt.window, bytes,
               bytes / opt.seconds / 1e6);
    } else if (opt.mode == HOLD) {
        printf(", \"established\": %" PRIu64 ", \"establish_s\": %.6f, \"check_s\": %.6f, "
               "\"pending\": %d",
               kind ? 0 : (uint64_t)opt.conns, hold_established_s, hold_check_s, opt.pending);
    } else {
        printf(", \"connections\": %" PRIu64 ", \"conn_per_s\": %.1f", connections,
               connections / opt.seconds);
    }
    printf("}\n");
    fflush(stdout);
    return kind;
}

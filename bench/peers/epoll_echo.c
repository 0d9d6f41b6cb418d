/*
 * Native reference echo server for the benchmark: one thread, epoll
 * (level-triggered), non-blocking sockets, TCP_NODELAY.  The limit a Python
 * server could reach on this machine with the same load generator.
 *
 * It keeps the duties echod keeps: backpressure (a connection is not read
 * while 1 MiB of its echo is unsent: memory per connection stays bounded),
 * half-close (after the peer's EOF, the pending echo is flushed, then the
 * connection is closed).  SIGPIPE is ignored and sends use MSG_NOSIGNAL: a
 * client that resets must not kill the server.
 *
 * usage: epoll_echo PORT [ADDRESS]   (default 127.0.0.1; prints "listening")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define HIGH_WATER (1024 * 1024) /* stop reading a peer while this much is unsent */
#define MAX_EVENTS 512

struct conn {
    int fd;
    int eof;        /* the peer half-closed: close once everything is sent */
    uint32_t mask;  /* events registered with epoll */
    char *pending;  /* unsent echo: pending[off..len) of cap bytes, or NULL */
    size_t off, len, cap;
};

static int epfd;
static char readbuf[READ_SIZE];
static volatile sig_atomic_t stopping;

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static void drop(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Read while less than HIGH_WATER is unsent and the peer has not closed;
 * want writability while anything is unsent. */
static void update_mask(struct conn *c) {
    size_t unsent = c->len - c->off;
    uint32_t mask = 0;
    if (!c->eof && unsent < HIGH_WATER)
        mask |= EPOLLIN;
    if (unsent)
        mask |= EPOLLOUT;
    if (mask != c->mask) {
        struct epoll_event ev = {.events = mask, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->mask = mask;
    }
}

static int append(struct conn *c, const char *data, size_t n) {
    if (c->off == c->len)
        c->off = c->len = 0;
    if (c->len + n > c->cap && c->off) {
        memmove(c->pending, c->pending + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 65536;
        while (cap < c->len + n)
            cap *= 2;
        char *grown = realloc(c->pending, cap);
        if (!grown)
            return -1;
        c->pending = grown;
        c->cap = cap;
    }
    memcpy(c->pending + c->len, data, n);
    c->len += n;
    return 0;
}

/* Send from data[0..n); returns bytes sent, or -1 if the connection failed. */
static ssize_t send_some(struct conn *c, const char *data, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(c->fd, data + done, n - done, MSG_NOSIGNAL);
        if (w > 0) {
            done += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return -1;
        }
    }
    return (ssize_t)done;
}

/* Returns -1 if the connection was dropped. */
static int flush_pending(struct conn *c) {
    if (c->off < c->len) {
        ssize_t w = send_some(c, c->pending + c->off, c->len - c->off);
        if (w < 0) {
            drop(c);
            return -1;
        }
        c->off += (size_t)w;
    }
    if (c->off == c->len) {
        c->off = c->len = 0;
        if (c->cap > 4 * 65536) { /* do not keep a large buffer on an idle peer */
            free(c->pending);
            c->pending = NULL;
            c->cap = 0;
        }
        if (c->eof) {
            drop(c);
            return -1;
        }
    }
    update_mask(c);
    return 0;
}

static void on_readable(struct conn *c) {
    ssize_t r = recv(c->fd, readbuf, sizeof readbuf, 0);
    if (r > 0) {
        size_t n = (size_t)r, sent = 0;
        if (c->off == c->len) {
            ssize_t w = send_some(c, readbuf, n);
            if (w < 0) {
                drop(c);
                return;
            }
            sent = (size_t)w;
        }
        if (sent < n && append(c, readbuf + sent, n - sent) < 0) {
            drop(c);
            return;
        }
        update_mask(c);
        return;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (r < 0) {
        drop(c);
        return;
    }
    /* EOF: half-close.  Close once the rest of the echo is sent. */
    c->eof = 1;
    flush_pending(c);
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN; EMFILE leaves it in the backlog */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->mask = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: epoll_echo PORT [ADDRESS]\n");
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    if (inet_pton(AF_INET, argc > 2 ? argv[2] : "127.0.0.1", &addr.sin_addr) != 1) {
        fprintf(stderr, "epoll_echo: bad IPv4 address\n");
        return 64;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("epoll_echo: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("listening on 127.0.0.1:%s\n", argv[1]);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 500);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            if (!c) {
                accept_all(lfd);
                continue;
            }
            if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->off < c->len) {
                if (flush_pending(c) < 0)
                    continue;
            }
            if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if ((c->mask & EPOLLIN) || !(c->off < c->len))
                    on_readable(c);
            }
        }
    }
    return 0;
}

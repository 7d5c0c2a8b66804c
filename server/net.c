#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "es.pb-c.h"
#include "frame.h"
#include "handler.h"
#include "metrics.h"
#include "prehello.h"
#include "reply.h"
#include "subs.h"
#include "groups.h"
#include "tls.h"
#include "web/web.h"

#define SHUTDOWN_GRACE_S 5
/* Input discarded per call while shutting down. */
#define DRAIN_MAX_BYTES (1u << 20)
#define CLOSE_FLUSH_S   2
/* After the client's FIN: time for its queued requests and their replies. */
#define PEER_FIN_FLUSH_S 30
/* Connections accepted per loop turn: libevent's listener accepts until
 * the backlog is empty, so a burst of 10,000 connects held every other
 * client for ~0.85 s. After this many the listener pauses until the next
 * turn (accept_resume), which serves the ready connections first. */
#define ACCEPTS_PER_TURN 32
/* Work taken from one connection's input per loop turn. */
#define FRAMES_PER_TURN 64
#define OUTPUT_PER_TURN (4u * 1024u * 1024u)
/* Before the hello a frame may be this large at most (a hello is ~1 KiB). */
#define PREHELLO_MAX_FRAME (64u * 1024u)
/* Bytes taken from one socket per read call (libevent's evbuffer_read
 * takes at most 4 KiB; a 16 MiB frame would cost 4,096 callbacks). */
#define READ_CHUNK (1024u * 1024u)
/* A slow consumer whose subscriptions were dropped is closed once its
 * output is flushed, or after this long (time to read the notice). */
#define SLOW_CLOSE_GRACE_S 30
/* The memory budget's re-evaluation period while connections are paused. */
#define BUDGET_TICK_MS 100
/* After the memory in use fell by this much from its peak, or to half of
 * it (and by TRIM_MIN_BYTES at least): malloc_trim. */
#define TRIM_AFTER_BYTES (32ull << 20)
#define TRIM_MIN_BYTES   (4ull << 20)
/* ... once the memory in use has stayed down this long: a trim returns the
 * pages, and every page of the next large frame or page faults again
 * (measured: a 15 MiB request then cost 0.3-1 s of loop time, most of it
 * page faults, with a trim after each one). */
#define TRIM_QUIET_MS 1000

typedef struct conn conn;

struct conn {
    session sess; /* first: handler_complete returns &conn->sess */
    net *n;
    evutil_socket_t fd;
    struct evbuffer *in, *out;
    struct event *read_ev, *write_ev;
    struct event *handshake_timer, *frame_timer, *close_timer, *idle_timer;
    conn *prev, *next; /* live connections */
    conn *flush_next;  /* connections with output to flush this loop turn */
    bool in_flush_list;
    conn *cont_next; /* connections with frames left for the next loop turn */
    bool in_cont_list;
    bool reading;           /* read_ev is added */
    bool writing;           /* write_ev is added: the socket was full */
    bool paused;            /* reading stopped for backpressure */
    bool closing;           /* flush the output, then close */
    bool zombie;            /* socket gone; waiting for queued requests */
    bool idle_armed;        /* the idle timer runs */
    bool budget_paused;     /* paused by the memory budget (see "Memory budget") */
    uint64_t pending_acct;  /* sess.pending_bytes as last counted in n->mem_pending */
    uint64_t over_since_us; /* paused, and above half a share ever since (0: not) */
    bool wr_shut;           /* shutting down: FIN sent after the replies; input is discarded */
    prehello_link pre;      /* in net's count of connections before their hello */
    /* TLS (see "Transport" below); ssl NULL for a plaintext connection */
    SSL *ssl;
    bool tls_accepting;   /* the handshake is not finished */
    bool tls_peeked;      /* the first byte was checked for a ClientHello */
    bool tls_want_write;  /* OpenSSL waits for the socket to take more */
    size_t tls_retry_len; /* an SSL_write to repeat with this length */
    char peer[64];
};

struct net {
    server_ctx *srv;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *completion_ev;
    struct event *import_ev; /* a follower's imports (srv->import_fd) */
    struct event *sigterm_ev, *sigint_ev;
    struct event *accept_retry;
    struct event *accept_resume; /* after ACCEPTS_PER_TURN in one turn */
    unsigned accepts_this_turn;
    struct event *reader_check;
    struct event *group_tick; /* consumer groups' ack timeouts (groups_tick) */
    struct event *shutdown_check;
    struct event *deliver_ev;
    struct evhttp *http; /* --metrics-listen: /metrics, /healthz, /readyz */
    web *web;            /* --http-listen: the web console (web/web.h) */
    SSL_CTX *tls;        /* --tls-cert/--tls-key: every connection is TLS */
    uint64_t shutdown_deadline_us;
    conn *conns;      /* live connections (not zombies) */
    conn *flush_list; /* see conn_send */
    conn *cont_list;  /* see cont_later */
    struct event *cont_ev;
    uint64_t next_conn_id;
    size_t input_cap; /* one whole frame and a little */
    prehello *pre;    /* connections without a hello, per source (prehello.h) */
    /* The memory budget (see "Memory budget" below). */
    uint64_t mem_out, mem_in, mem_pending; /* bytes, by kind, over all connections */
    uint64_t mem_peak;                     /* since the last malloc_trim */
    uint64_t mem_recent_high;              /* since trim_ev was armed */
    struct event *trim_ev;                 /* a malloc_trim TRIM_QUIET_MS after a fall */
    uint32_t n_budget_paused;              /* connections paused by the budget */
    uint64_t budget_pauses;                /* ever */
    uint64_t slow_dropped;                 /* subscribers dropped (SLOW_CONSUMER), ever */
    struct event *budget_ev;
};

static void conn_flush(conn *c);
static void cont_later(conn *c);
static void budget_note(net *n);
static void budget_gate(conn *c);

static bool retriable(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}
static void process_input(conn *c);

/* ---------------------------------------------------------- connections -- */

/*
 * Output: replies are appended to the connection's buffer and the
 * connection is put on the flush list; every callback ends with
 * flush_all(), which writes each buffer straight to its socket (one
 * writev for everything a loop turn produced). Only when the socket is
 * full is a write event registered — no epoll_ctl churn per reply.
 */
static void free_reply(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* Output was added to c: apply the memory budget and flush it at the end
 * of this loop turn (one write per connection per turn). */
static void queued(conn *c)
{
    budget_gate(c);
    if (!c->in_flush_list) {
        c->in_flush_list = true;
        c->flush_next = c->n->flush_list;
        c->n->flush_list = c;
    }
}

/* A large page, handed over without a copy (session_send_owned_fn). */
static bool conn_send_owned(void *io, void *data, size_t len)
{
    conn *c = io;
    if (c->zombie || evbuffer_add_reference(c->out, data, len, free_reply, NULL) != 0) {
        return false;
    }
    queued(c);
    return true;
}

static void release_shared(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    reply_shared_release(arg);
}

/* A payload shared by many connections (session_send_shared_fn): each
 * output buffer refers to the same bytes. The budget counts it in every
 * buffer that holds it (evbuffer lengths include referenced bytes): an
 * upper bound of what is really held, never less. */
static bool conn_send_shared(void *io, reply_shared *sh)
{
    conn *c = io;
    if (c->zombie || c->wr_shut) {
        return false;
    }
    sh->refs++; /* first: the buffer owns it the moment the chain is in */
    if (evbuffer_add_reference(c->out, sh->p, sh->len, release_shared, sh) != 0) {
        sh->refs--; /* never the last: the caller holds one */
        return false;
    }
    queued(c);
    return true;
}

static size_t conn_room(void *io);

static void conn_send(void *io, const void *data, size_t len)
{
    conn *c = io;
    if (c->zombie || c->wr_shut) {
        return;
    }
    /* Not evbuffer_add: after a large chain (a page), it allocates the
     * next chain as large as that one, whatever len is (measured: 3x the
     * bytes held). Reserving asks for a chain sized by len. */
    struct evbuffer_iovec v;
    if (len == 0) {
        /* nothing: a flush request */
    } else if (evbuffer_reserve_space(c->out, (ev_ssize_t)len, &v, 1) == 1 && v.iov_len >= len) {
        memcpy(v.iov_base, data, len);
        v.iov_len = len;
        evbuffer_commit_space(c->out, &v, 1);
    } else {
        evbuffer_add(c->out, data, len);
    }
    queued(c);
}

static size_t conn_outlen(void *io)
{
    conn *c = io;
    return c->out ? evbuffer_get_length(c->out) : 0;
}

/* evbuffer callback: keeps n->mem_in / n->mem_out equal to the sum of the
 * connections' buffer lengths. */
static void mem_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    uint64_t *counter = arg;
    *counter += info->n_added;
    *counter -= info->n_deleted;
}

/* Bring n->mem_pending up to date with the session's queued request bytes
 * (the handler changes them; net only counts). */
static void pending_sync(conn *c)
{
    c->n->mem_pending += c->sess.pending_bytes;
    c->n->mem_pending -= c->pending_acct;
    c->pending_acct = c->sess.pending_bytes;
}

static void conn_unlink(conn *c)
{
    net *n = c->n;
    if (c->prev) {
        c->prev->next = c->next;
    } else if (n->conns == c) {
        n->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void conn_free_struct(conn *c)
{
    c->n->mem_pending -= c->pending_acct;
    session_finish(&c->sess);
    free(c);
}

/* A zombie is freed once nothing refers to it any more. */
static void conn_maybe_free(conn *c)
{
    if (c->zombie && c->sess.in_flight == 0 && !c->in_flush_list && !c->in_cont_list) {
        conn_free_struct(c);
    }
}

static void free_event(struct event **ev)
{
    if (*ev) {
        event_free(*ev);
        *ev = NULL;
    }
}

/*
 * Read and discard what the peer sent, at most DRAIN_MAX_BYTES a call (a
 * peer that sends for ever must not hold the loop).
 * @return true when the peer is gone (EOF or an error); false when there
 *   is nothing more to read now.
 */
static bool drain_input(conn *c)
{
    char buf[16384];
    for (size_t total = 0; total < DRAIN_MAX_BYTES;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            total += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return r == 0 || !retriable(errno);
    }
    return false;
}

/* Close the socket now; keep the struct while the writer holds requests. */
static void conn_close(conn *c, const char *reason)
{
    if (c->zombie) {
        return;
    }
    net *n = c->n;
    log_msg(LOG_DEBUG, "connection closed", "conn=%llu peer=%s reason=\"%s\"",
            (unsigned long long)c->sess.conn_id, c->peer, reason);
    free_event(&c->handshake_timer);
    free_event(&c->frame_timer);
    free_event(&c->close_timer);
    free_event(&c->idle_timer);
    free_event(&c->read_ev);
    free_event(&c->write_ev);
    if (c->budget_paused) {
        c->budget_paused = false;
        c->sess.paused_output = false;
        n->n_budget_paused--;
    }
    /* evbuffer_free runs no callbacks: take the bytes off by hand. */
    if (c->in) {
        n->mem_in -= evbuffer_get_length(c->in);
        evbuffer_free(c->in);
        c->in = NULL;
    }
    if (c->out) {
        n->mem_out -= evbuffer_get_length(c->out);
        evbuffer_free(c->out);
        c->out = NULL;
    }
    if (c->ssl) {
        if (!c->tls_accepting && !c->wr_shut) {
            (void)SSL_shutdown(c->ssl); /* best effort: one close_notify, no wait */
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c->wr_shut) {
        /* Unread input would make close() send a reset (see "Shutdown"). */
        (void)drain_input(c);
    }
    evutil_closesocket(c->fd);
    c->fd = -1;
    prehello_remove(n->pre, &c->pre);
    conn_unlink(c);
    n->srv->counters.connections--;
    subs_drop_session(&c->sess);
    groups_drop_session(&c->sess);
    c->sess.dead = true;
    c->zombie = true;
    conn_maybe_free(c);
}

static void flush_all(net *n)
{
    while (n->flush_list) {
        conn *c = n->flush_list;
        n->flush_list = c->flush_next;
        c->in_flush_list = false;
        c->flush_next = NULL;
        if (c->zombie) {
            conn_maybe_free(c);
        } else {
            conn_flush(c);
        }
    }
    budget_note(n);
}

static void close_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    net *n = c->n;
    conn_close(c, "flush deadline");
    flush_all(n);
}

/* Stop reading, flush what is queued, then close. */
static void conn_close_after_flush(conn *c, const char *reason, int seconds)
{
    if (c->closing || c->zombie) {
        return;
    }
    c->closing = true;
    if (c->reading) {
        event_del(c->read_ev);
        c->reading = false;
    }
    c->close_timer = evtimer_new(c->n->base, close_timer_cb, c);
    if (c->close_timer) {
        struct timeval tv = {seconds, 0};
        evtimer_add(c->close_timer, &tv);
    }
    (void)reason;
    conn_send(c, "", 0); /* make sure a flush (and so the close) happens */
}

/* -------------------------------------------------------------- transport -- */

/*
 * Bytes in and out of a connection: plaintext through evbuffer_read and
 * evbuffer_write, TLS through SSL_read and SSL_write on the same
 * non-blocking socket (net.h says why). Everything above — framing, the
 * budgets, the flush list — sees only c->in and c->out.
 */

/* Write interest: the socket was full, or OpenSSL needs to write. */
static void sync_write_ev(conn *c)
{
    if (c->writing || c->tls_want_write) {
        event_add(c->write_ev, NULL);
    } else {
        event_del(c->write_ev);
    }
}

/* OpenSSL may hold decrypted or undecrypted bytes that no socket event
 * will announce: read them on the next turn. */
static void tls_kick_pending(conn *c)
{
    if (c->ssl && !c->tls_accepting && c->reading && !c->paused && !c->closing &&
        SSL_has_pending(c->ssl) && evbuffer_get_length(c->in) < c->n->input_cap) {
        event_active(c->read_ev, EV_READ, 0);
    }
}

/*
 * Read into c->in, at most room bytes.
 * @return > 0 bytes read; 0 the peer closed (FIN, or TLS close_notify);
 *   -1 nothing to read now; -2 a fatal error (why says which).
 */
static int transport_read(conn *c, int room, char *why, size_t why_len)
{
    if (!c->ssl) {
        /* As much as the socket holds, up to room, in one read: what is
         * waiting (FIONREAD) sizes the space, at least 4 KiB. */
        int avail = 0;
        if (ioctl(c->fd, FIONREAD, &avail) < 0 || avail < 4096) {
            avail = 4096;
        }
        int want = avail < room ? avail : room;
        /* Two vectors: the free tail of the last chain first, so that
         * chains fill up instead of leaving slack behind. */
        struct evbuffer_iovec v[2];
        int nv = evbuffer_reserve_space(c->in, want, v, 2);
        if (nv < 1) {
            snprintf(why, why_len, "out of memory");
            return -2;
        }
        struct iovec iov[2];
        size_t left = (size_t)want;
        int used = 0;
        for (int i = 0; i < nv && left > 0; i++, used++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
            left -= iov[i].iov_len;
        }
        ssize_t r = readv(c->fd, iov, used);
        if (r < 0) {
            if (retriable(errno)) {
                return -1;
            }
            snprintf(why, why_len, "%s", strerror(errno));
            return -2;
        }
        size_t got = (size_t)r;
        for (int i = 0; i < used; i++) {
            v[i].iov_len = got < iov[i].iov_len ? got : iov[i].iov_len;
            got -= v[i].iov_len;
        }
        evbuffer_commit_space(c->in, v, used);
        return (int)r;
    }
    int total = 0;
    while (total < room) {
        int want = room - total > 65536 ? 65536 : room - total;
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->in, want, &v, 1) < 1) {
            snprintf(why, why_len, "out of memory");
            return -2;
        }
        int len = v.iov_len < (size_t)want ? (int)v.iov_len : want;
        errno = 0;
        int r = SSL_read(c->ssl, v.iov_base, len);
        if (r > 0) {
            v.iov_len = (size_t)r;
            evbuffer_commit_space(c->in, &v, 1);
            total += r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            break;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            c->tls_want_write = true;
            sync_write_ev(c);
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN ||
            (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
            /* close_notify, or a FIN without one */
            ERR_clear_error();
            return total > 0 ? total : 0;
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            snprintf(why, why_len, "%s", strerror(errno));
        } else {
            tls_error_string(why, why_len);
        }
        return -2;
    }
    return total > 0 ? total : -1;
}

/* Write what c->out holds until the socket is full. @return 0; -1 on a
 * fatal error (the caller closes). */
static int transport_write(conn *c)
{
    if (!c->ssl) {
        int w = evbuffer_write(c->out, c->fd);
        return w < 0 && !retriable(errno) ? -1 : 0;
    }
    if (c->tls_accepting) {
        return 0; /* nothing is sent before the handshake is done */
    }
    while (evbuffer_get_length(c->out) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1) {
            break;
        }
        /* A write that OpenSSL asked to repeat is repeated with the same
         * length (the first chunk can only have grown meanwhile). */
        size_t len = c->tls_retry_len ? c->tls_retry_len : (v.iov_len < 16384 ? v.iov_len : 16384);
        int w = SSL_write(c->ssl, v.iov_base, (int)len);
        if (w > 0) {
            evbuffer_drain(c->out, (size_t)w);
            c->tls_retry_len = 0;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->tls_retry_len = len;
            break;
        }
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* An es.v1 Error frame written straight to a socket, best effort. */
static void write_error_frame(evutil_socket_t fd, es_err code, const char *message)
{
    Es__V1__Error err = ES__V1__ERROR__INIT;
    err.code = (Es__V1__ErrorCode)code;
    err.message = (char *)message;
    Es__V1__Response r = ES__V1__RESPONSE__INIT;
    r.kind_case = ES__V1__RESPONSE__KIND_ERROR;
    r.error = &err;
    uint8_t buf[256];
    size_t size = es__v1__response__get_packed_size(&r);
    if (size + FRAME_HEADER_BYTES <= sizeof buf) {
        frame_write_header(buf, (uint32_t)size);
        es__v1__response__pack(&r, buf + FRAME_HEADER_BYTES);
        ssize_t wr = send(fd, buf, size + FRAME_HEADER_BYTES, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)wr; /* the socket is closed next either way */
    }
}

/*
 * Drive the TLS handshake of a new connection. A first byte that cannot
 * start a TLS record (0x16, handshake) is a plaintext client: it gets an
 * es.v1 Error frame in plaintext saying so, and the connection is closed.
 * @return 1 done; 0 in progress; -1 failed (the connection is closed).
 */
static int tls_handshake(conn *c)
{
    net *n = c->n;
    if (!c->tls_peeked) {
        uint8_t b;
        ssize_t r = recv(c->fd, &b, 1, MSG_PEEK);
        if (r < 0 && retriable(errno)) {
            return 0;
        }
        if (r <= 0) {
            conn_close(c, r == 0 ? "peer closed" : "read error");
            return -1;
        }
        c->tls_peeked = true;
        if (b != 0x16) {
            n->srv->metrics.tls_plaintext_refused++;
            log_msg(LOG_INFO, "plaintext on the TLS port; refused", "conn=%llu peer=%s",
                    (unsigned long long)c->sess.conn_id, c->peer);
            write_error_frame(c->fd, ES_ERR_REFUSED,
                              "this server requires TLS: connect with TLS (esctl --tls or "
                              "--tls-ca FILE)");
            conn_close(c, "plaintext on the TLS port");
            return -1;
        }
    }
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_accepting = false;
        if (log_enabled(LOG_DEBUG)) {
            char desc[128];
            tls_describe(c->ssl, desc, sizeof desc);
            log_msg(LOG_DEBUG, "TLS established", "conn=%llu peer=%s tls=\"%s\"",
                    (unsigned long long)c->sess.conn_id, c->peer, desc);
        }
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->tls_want_write = true;
        sync_write_ev(c);
        return 0;
    }
    char why[256] = "";
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        snprintf(why, sizeof why, "%s", errno ? strerror(errno) : "peer closed");
    } else {
        tls_error_string(why, sizeof why);
    }
    n->srv->metrics.tls_handshake_failures++;
    log_msg(LOG_INFO, "TLS handshake failed; closing", "conn=%llu peer=%s error=\"%s\"",
            (unsigned long long)c->sess.conn_id, c->peer, why);
    conn_close(c, "TLS handshake failed");
    return -1;
}

static bool over_budget(const conn *c)
{
    const server_config *cfg = c->n->srv->cfg;
    return c->budget_paused || evbuffer_get_length(c->out) > cfg->max_output_bytes ||
           c->sess.pending_bytes > cfg->max_pending_bytes;
}

static void set_reading(conn *c, bool on)
{
    if (on && !c->reading) {
        event_add(c->read_ev, NULL);
        c->reading = true;
        tls_kick_pending(c);
    } else if (!on && c->reading) {
        event_del(c->read_ev);
        c->reading = false;
    }
}

/* A connection with subscriptions may legitimately send nothing for a
 * long time: the idle timeout applies only to connections without. */
static void update_idle_timer(conn *c, bool activity)
{
    bool want = c->sess.n_subs == 0 && c->n->srv->cfg->idle_timeout_s > 0;
    if (want && (activity || !c->idle_armed)) {
        struct timeval idle = {c->n->srv->cfg->idle_timeout_s, 0};
        evtimer_add(c->idle_timer, &idle);
    } else if (!want && c->idle_armed) {
        evtimer_del(c->idle_timer);
    }
    c->idle_armed = want;
}

static void maybe_resume(conn *c)
{
    if (c->paused && !c->zombie && !c->closing && !c->n->srv->shutting_down && !over_budget(c)) {
        c->paused = false;
        set_reading(c, true);
        process_input(c);
    }
}

/* After output left: close a closing connection, resume a paused reader,
 * wake subscriptions waiting for room. */
static void after_write(conn *c)
{
    size_t left = evbuffer_get_length(c->out);
    if (c->closing) {
        if (left == 0 && c->sess.in_flight == 0) {
            conn_close(c, "closed after flushing");
        }
        return;
    }
    if (left <= c->n->srv->cfg->max_output_bytes / 2) {
        maybe_resume(c);
        subs_on_writable(&c->sess);
        groups_on_writable(&c->sess);
    }
}

static void conn_flush(conn *c)
{
    if (!c->writing && evbuffer_get_length(c->out) > 0) {
        if (transport_write(c) < 0) {
            conn_close(c, "write error");
            return;
        }
        if (evbuffer_get_length(c->out) > 0) {
            c->writing = true;
            sync_write_ev(c);
        }
    }
    after_write(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    net *n = c->n;
    if (c->tls_want_write) {
        /* OpenSSL wanted to write in a handshake or a read: go on there */
        c->tls_want_write = false;
        sync_write_ev(c);
        if (c->tls_accepting) {
            if (tls_handshake(c) == 1 && c->reading) {
                event_active(c->read_ev, EV_READ, 0);
            }
            flush_all(n);
            return;
        }
        if (c->reading) {
            event_active(c->read_ev, EV_READ, 0);
        }
        if (!c->writing) {
            flush_all(n);
            return;
        }
    }
    if (transport_write(c) < 0) {
        conn_close(c, "write error");
        flush_all(n);
        return;
    }
    if (evbuffer_get_length(c->out) == 0) {
        c->writing = false;
        sync_write_ev(c);
    }
    after_write(c);
    flush_all(n);
}

static void frame_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    net *n = c->n;
    if (c->paused) {
        return; /* we are not reading: the client is not the slow one */
    }
    log_msg(LOG_INFO, "incomplete frame deadline passed; closing", "conn=%llu peer=%s",
            (unsigned long long)c->sess.conn_id, c->peer);
    conn_close(c, "incomplete frame deadline");
    flush_all(n);
}

static void handshake_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    net *n = c->n;
    if (!c->sess.hello_done) {
        log_msg(LOG_INFO, "no hello before the deadline; closing", "conn=%llu peer=%s",
                (unsigned long long)c->sess.conn_id, c->peer);
        conn_close(c, "handshake deadline");
        flush_all(n);
    }
}

static void idle_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    net *n = c->n;
    if (c->paused || c->sess.in_flight || c->sess.n_subs) {
        update_idle_timer(c, true); /* waiting on us, not idle */
        return;
    }
    log_msg(LOG_DEBUG, "idle timeout", "conn=%llu peer=%s", (unsigned long long)c->sess.conn_id,
            c->peer);
    conn_close(c, "idle timeout");
    flush_all(n);
}

/*
 * Frames left over by the fairness limit are taken on the next loop turn,
 * after the sockets were polled: through a zero timer, not event_active
 * (libevent runs events activated from a callback in the same turn, which
 * would let one deep pipeline hold the loop until it is drained).
 */
static void cont_later(conn *c)
{
    net *n = c->n;
    if (!c->in_cont_list) {
        c->in_cont_list = true;
        c->cont_next = n->cont_list;
        n->cont_list = c;
    }
    if (!evtimer_pending(n->cont_ev, NULL)) {
        struct timeval now = {0, 0};
        evtimer_add(n->cont_ev, &now);
    }
}

static void cont_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    conn *list = n->cont_list;
    n->cont_list = NULL;
    while (list) {
        conn *c = list;
        list = c->cont_next;
        c->cont_next = NULL;
        c->in_cont_list = false;
        if (c->zombie) {
            conn_maybe_free(c);
        } else if (!c->closing && !c->paused) {
            process_input(c);
        }
    }
    flush_all(n);
}

/* Take every complete frame from the input, within the budgets. */
static void process_input(conn *c)
{
    const server_config *cfg = c->n->srv->cfg;
    struct evbuffer *in = c->in;
    bool progressed = false; /* a frame completed: the deadline starts anew */
    unsigned frames = 0;
    size_t out_start = evbuffer_get_length(c->out);
    while (!c->closing && !c->zombie) {
        /* Fairness: one connection's pipeline gets a bounded share of a
         * loop turn; the rest of it is taken on the next turn. */
        if (frames >= FRAMES_PER_TURN ||
            evbuffer_get_length(c->out) - out_start > OUTPUT_PER_TURN) {
            if (evbuffer_get_length(in) >= FRAME_HEADER_BYTES) {
                cont_later(c);
            }
            break;
        }
        if (over_budget(c)) {
            if (!c->paused) {
                c->paused = true;
                set_reading(c, false);
            }
            /* The server stopped reading, not the client: no frame
             * deadline runs while paused (it restarts on resume). */
            evtimer_del(c->frame_timer);
            return;
        }
        size_t avail = evbuffer_get_length(in);
        if (avail < FRAME_HEADER_BYTES) {
            break;
        }
        uint8_t hdr[FRAME_HEADER_BYTES];
        evbuffer_copyout(in, hdr, FRAME_HEADER_BYTES);
        uint32_t blen;
        /* Before the hello only a hello-sized frame: an unauthenticated
         * peer holds at most PREHELLO_MAX_FRAME of our memory. */
        uint32_t cap = c->sess.hello_done || cfg->max_frame_bytes < PREHELLO_MAX_FRAME
                           ? cfg->max_frame_bytes
                           : PREHELLO_MAX_FRAME;
        es_err rv = frame_parse_header(hdr, cap, &blen);
        if (rv != ES_OK) {
            reply_send_error(&c->sess, 0, rv,
                             rv != ES_ERR_TOO_LARGE ? "frame length 0"
                             : cap < cfg->max_frame_bytes
                                 ? "frame length above the cap before the hello (64 KiB)"
                                 : "frame length above the server's cap");
            log_msg(LOG_INFO, "bad frame header; closing", "conn=%llu peer=%s error=%s",
                    (unsigned long long)c->sess.conn_id, c->peer, es_errname(rv));
            conn_close_after_flush(c, "bad frame header", CLOSE_FLUSH_S);
            return;
        }
        if (avail - FRAME_HEADER_BYTES < blen) {
            break;
        }
        uint8_t *frame = evbuffer_pullup(in, (ev_ssize_t)(FRAME_HEADER_BYTES + blen));
        if (!frame) {
            reply_send_error(&c->sess, 0, ES_ERR_NO_MEMORY, NULL);
            conn_close_after_flush(c, "no memory", CLOSE_FLUSH_S);
            return;
        }
        rv = handler_on_frame(&c->sess, frame + FRAME_HEADER_BYTES, blen);
        pending_sync(c);
        if (c->zombie) {
            return;
        }
        evbuffer_drain(in, FRAME_HEADER_BYTES + blen);
        progressed = true;
        frames++;
        if (c->sess.hello_done && c->handshake_timer) {
            free_event(&c->handshake_timer);
            prehello_remove(c->n->pre, &c->pre);
        }
        if (rv != ES_OK) {
            conn_close_after_flush(c, es_errname(rv), CLOSE_FLUSH_S);
            return;
        }
    }
    if (c->zombie || c->closing) {
        return;
    }
    update_idle_timer(c, false);
    /* A partial frame must complete within the deadline, counted from when
     * the previous frame completed (or reading resumed). */
    if (evbuffer_get_length(in) > 0) {
        if (progressed || !evtimer_pending(c->frame_timer, NULL)) {
            struct timeval tv = {cfg->frame_timeout_s, 0};
            evtimer_add(c->frame_timer, &tv);
        }
    } else {
        evtimer_del(c->frame_timer);
    }
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    conn *c = arg;
    net *n = c->n;
    (void)fd;
    if (c->wr_shut) {
        if (drain_input(c)) {
            conn_close(c, "peer closed after the shutdown");
        }
        flush_all(n);
        return;
    }
    if (c->ssl && c->tls_accepting) {
        int h = tls_handshake(c);
        if (h <= 0) {
            flush_all(n);
            return;
        }
    }
    size_t have = evbuffer_get_length(c->in);
    /* The input holds at most one whole frame and a little more; a frame
     * never needs more, so a full buffer always has one to take. Before
     * the hello that is one hello-sized frame. */
    size_t cap = c->sess.hello_done ? n->input_cap : PREHELLO_MAX_FRAME + FRAME_HEADER_BYTES;
    int room = have < cap ? (int)(cap - have) : 0;
    if (room > 0) {
        char why[256] = "";
        int r = transport_read(c, room > (int)READ_CHUNK ? (int)READ_CHUNK : room, why, sizeof why);
        if (r == 0) {
            /* FIN: the client sends nothing more, but may still be reading
             * (half-close). Answer every complete request it sent, finish
             * those queued for the writer, flush, then close. */
            process_input(c);
            if (!c->zombie) {
                conn_close_after_flush(c, "peer closed", PEER_FIN_FLUSH_S);
            }
            flush_all(n);
            return;
        }
        if (r == -2) {
            if (c->ssl) {
                log_msg(LOG_INFO, "TLS error; closing", "conn=%llu peer=%s error=\"%s\"",
                        (unsigned long long)c->sess.conn_id, c->peer, why);
            }
            conn_close(c, why);
            flush_all(n);
            return;
        }
        if (r > 0) {
            update_idle_timer(c, true);
        }
        /* r == -1: nothing new; go on with what is buffered (a continued turn) */
    }
    process_input(c);
    if (!c->zombie) {
        tls_kick_pending(c);
    }
    flush_all(n);
}

/* An error frame written straight to a socket we will not serve (in
 * plaintext: a TLS client sees a failed handshake, which is refusal enough). */
static void refuse_fd(evutil_socket_t fd, es_err code, const char *message)
{
    write_error_frame(fd, code, message);
    evutil_closesocket(fd);
}

static void format_peer(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%u", host, port);
    } else {
        snprintf(out, len, "unknown");
    }
}

/* The address without its port, for the per-address failure budget. */
static void format_host(const struct sockaddr *sa, char *out, size_t len)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
    }
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        return (a >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a)) {
            return true;
        }
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            return a->s6_addr[12] == 127;
        }
    }
    return false;
}

static void accept_one(net *n, evutil_socket_t fd, struct sockaddr *sa);

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)salen;
    net *n = arg;
    accept_one(n, fd, sa);
    if (++n->accepts_this_turn >= ACCEPTS_PER_TURN) {
        /* libevent's accept loop stops when its callback disables it */
        evconnlistener_disable(l);
        static const struct timeval now = {0, 0};
        evtimer_add(n->accept_resume, &now);
    }
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    n->accepts_this_turn = 0;
    if (n->listener && !n->srv->shutting_down && !evtimer_pending(n->accept_retry, NULL)) {
        evconnlistener_enable(n->listener);
    }
}

static void accept_one(net *n, evutil_socket_t fd, struct sockaddr *sa)
{
    const server_config *cfg = n->srv->cfg;
    if (n->srv->shutting_down) {
        n->srv->metrics.connections_refused++;
        refuse_fd(fd, ES_ERR_SHUTTING_DOWN, "server shutting down");
        return;
    }
    if (n->srv->counters.connections >= cfg->max_connections) {
        char peer[64];
        format_peer(sa, peer, sizeof peer);
        log_msg(LOG_WARN, "connection refused: max connections reached", "peer=%s max=%u", peer,
                cfg->max_connections);
        n->srv->metrics.connections_refused++;
        refuse_fd(fd, ES_ERR_BUSY, "too many connections");
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        refuse_fd(fd, ES_ERR_NO_MEMORY, "out of memory");
        return;
    }
    c->n = n;
    c->fd = fd;
    format_peer(sa, c->peer, sizeof c->peer);
    if (session_init(&c->sess, n->srv, ++n->next_conn_id, c, conn_send, conn_outlen) != ES_OK) {
        free(c);
        refuse_fd(fd, ES_ERR_NO_MEMORY, "out of memory");
        return;
    }
    format_host(sa, c->sess.peer_addr, sizeof c->sess.peer_addr);
    c->sess.send_owned = conn_send_owned;
    c->sess.send_shared = conn_send_shared;
    c->sess.room = conn_room;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evutil_make_socket_nonblocking(fd);
    if (n->tls) {
        c->ssl = SSL_new(n->tls);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
            if (c->ssl) {
                SSL_free(c->ssl);
            }
            session_finish(&c->sess);
            free(c);
            refuse_fd(fd, ES_ERR_NO_MEMORY, "out of memory");
            return;
        }
        SSL_set_accept_state(c->ssl);
        c->tls_accepting = true;
    }
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    if (c->in) {
        evbuffer_add_cb(c->in, mem_cb, &n->mem_in);
    }
    if (c->out) {
        evbuffer_add_cb(c->out, mem_cb, &n->mem_out);
    }
    c->read_ev = event_new(n->base, fd, EV_READ | EV_PERSIST, read_cb, c);
    c->write_ev = event_new(n->base, fd, EV_WRITE | EV_PERSIST, write_cb, c);
    c->handshake_timer = evtimer_new(n->base, handshake_timer_cb, c);
    c->frame_timer = evtimer_new(n->base, frame_timer_cb, c);
    c->idle_timer = evtimer_new(n->base, idle_timer_cb, c);
    if (!c->in || !c->out || !c->read_ev || !c->write_ev || !c->handshake_timer ||
        !c->frame_timer || !c->idle_timer) {
        /* Not linked yet: undo by hand. */
        n->srv->counters.connections++;
        conn_close(c, "out of memory");
        return;
    }
    struct timeval hs = {cfg->handshake_timeout_s, 0};
    evtimer_add(c->handshake_timer, &hs);
    update_idle_timer(c, true);
    set_reading(c, true);
    c->next = n->conns;
    if (n->conns) {
        n->conns->prev = c;
    }
    n->conns = c;
    n->srv->counters.connections++;
    n->srv->metrics.connections_total++;
    log_msg(LOG_DEBUG, "connection accepted", "conn=%llu peer=%s",
            (unsigned long long)c->sess.conn_id, c->peer);
    prehello_link *oldest = prehello_add(n->pre, c->sess.peer_addr, &c->pre);
    if (oldest) {
        conn *v = (conn *)(void *)((char *)oldest - offsetof(conn, pre));
        n->srv->metrics.prehello_closed++;
        log_msg(LOG_DEBUG,
                "too many connections without a hello from one address; closing the oldest",
                "conn=%llu peer=%s max=%u", (unsigned long long)v->sess.conn_id, v->peer,
                cfg->max_prehello);
        conn_close(v, "too many connections without a hello");
        flush_all(n);
    }
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    n->accepts_this_turn = 0;
    if (n->listener && !n->srv->shutting_down) {
        evconnlistener_enable(n->listener);
    }
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    net *n = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_msg(LOG_WARN, "accept failed; pausing the listener for 100 ms", "error=\"%s\"",
            evutil_socket_error_to_string(err));
    /* EMFILE/ENFILE leave the connection in the backlog: retrying at once
     * would spin. Pause, let descriptors free up, try again. */
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    evtimer_add(n->accept_retry, &tv);
}

/* -------------------------------------------------------- memory budget -- */

/*
 * One budget (cfg->max_memory) for what connections make esd hold: unsent
 * output (n->mem_out), read-ahead (n->mem_in) and request bytes queued for
 * the writer (n->mem_pending), counted exactly and incrementally (evbuffer
 * callbacks, and pending_sync after every handler call), so checking it
 * costs O(1) per loop callback (budget_note).
 *
 * At the budget, the connections holding more than an equal share of it
 * (max_memory / connections) are paused: no reading, no request taken
 * from their input, no subscription delivery (session.paused_output);
 * their output keeps draining. The check is made where output is
 * produced (budget_gate, after every reply or push appended), so a
 * connection overshoots its share by one reply or one batch at most, and
 * again for all connections by a pass over them (budget_cb). Everyone else keeps being served, so
 * the memory held is about the budget plus what the paused ones held when they were paused. Every
 * BUDGET_TICK_MS while any connection is paused: a paused connection resumes when the total is
 * below 7/8 of the budget or its own share fell below half a share (its client read); a paused
 * connection with subscriptions that stays paused for
 * slow_consumer_timeout_s has its subscriptions dropped with
 * SLOW_CONSUMER, a log line is written, and it is closed once its output
 * is flushed (or after another slow_consumer_timeout_s).
 *
 * At the budget a connection produces only what is left of its share
 * (conn_room: pages and batches are cut to it, and it is paused before
 * producing when nothing is left), and nobody gets a page or batch past
 * 1.5x the budget (see conn_room for why).
 *
 * Memory returned: freed buffers stay in glibc's heap (main.c keeps large
 * blocks there on purpose); after the total has fallen TRIM_AFTER_BYTES
 * below its peak, or to half of it, and stayed down for TRIM_QUIET_MS,
 * malloc_trim(0) gives the free pages back (at most a few times per
 * halving: cheap).
 */

static uint64_t mem_total(const net *n)
{
    return n->mem_out + n->mem_in + n->mem_pending;
}

static uint64_t conn_held(const conn *c)
{
    return (c->out ? evbuffer_get_length(c->out) : 0) + (c->in ? evbuffer_get_length(c->in) : 0) +
           c->sess.pending_bytes;
}

static uint64_t budget_share(const net *n)
{
    uint32_t conns = n->srv->counters.connections ? n->srv->counters.connections : 1;
    uint64_t share = n->srv->cfg->max_memory / conns;
    return share < 65536 ? 65536 : share;
}

static void budget_pause(conn *c, uint64_t now_us)
{
    if (c->budget_paused || c->zombie || c->closing) {
        return;
    }
    c->budget_paused = true;
    if (!c->over_since_us) {
        c->over_since_us = now_us;
    }
    c->sess.paused_output = true;
    c->paused = true;
    set_reading(c, false);
    evtimer_del(c->frame_timer); /* we stopped reading, not the client */
    c->n->n_budget_paused++;
    c->n->budget_pauses++;
    log_msg(LOG_DEBUG, "paused by the memory budget", "conn=%llu peer=%s held=%llu",
            (unsigned long long)c->sess.conn_id, c->peer, (unsigned long long)conn_held(c));
}

static void budget_resume(conn *c)
{
    if (!c->budget_paused) {
        return;
    }
    c->budget_paused = false;
    c->sess.paused_output = false;
    c->n->n_budget_paused--;
    maybe_resume(c);
    if (!c->zombie) {
        subs_on_writable(&c->sess);
        groups_on_writable(&c->sess);
    }
}

static void budget_drop_slow(conn *c)
{
    net *n = c->n;
    uint32_t n_subs = c->sess.n_subs;
    log_msg(LOG_WARN, "slow consumer: subscriptions dropped, closing after the flush",
            "conn=%llu peer=%s subscriptions=%u held=%llu paused_s=%u",
            (unsigned long long)c->sess.conn_id, c->peer, n_subs, (unsigned long long)conn_held(c),
            n->srv->cfg->slow_consumer_timeout_s);
    subs_drop_all(&c->sess, ES_ERR_SLOW_CONSUMER,
                  "the connection held more than its share of the server's memory for too long");
    n->slow_dropped += n_subs;
    /* The notices go behind the unsent output; the client gets them if it
     * reads within the grace, and the connection is closed either way. */
    budget_resume(c);
    conn_close_after_flush(c, "slow consumer", SLOW_CLOSE_GRACE_S);
}

static void budget_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    const server_config *cfg = n->srv->cfg;
    uint64_t now = store_now_us();
    uint64_t share = budget_share(n);
    bool over = mem_total(n) >= cfg->max_memory;
    bool low = mem_total(n) < cfg->max_memory / 8 * 7;
    conn *next;
    for (conn *c = n->conns; c; c = next) {
        next = c->next;
        if (c->closing) {
            continue;
        }
        uint64_t held = conn_held(c);
        if (held < share / 2) {
            c->over_since_us = 0; /* its client reads: not a slow consumer */
        }
        if (c->over_since_us && c->sess.n_subs > 0 &&
            now - c->over_since_us >= cfg->slow_consumer_timeout_s * 1000000ull) {
            budget_drop_slow(c);
        } else if (over && held > share) {
            budget_pause(c, now);
        } else if (c->budget_paused && (low || held < share / 2)) {
            budget_resume(c);
        }
    }
    /* Under pressure the heap is full of freed page buffers that glibc
     * keeps: give them back on every tick (a few ms at most). */
    if (n->n_budget_paused > 0) {
        malloc_trim(0);
    }
    if (n->n_budget_paused > 0) {
        struct timeval tv = {0, BUDGET_TICK_MS * 1000};
        evtimer_add(n->budget_ev, &tv);
    }
    flush_all(n);
}

/* After every reply or push appended (conn_send): at the budget, a
 * connection holding more than its share produces nothing more (O(1)). */
static void budget_gate(conn *c)
{
    net *n = c->n;
    if (!c->budget_paused && mem_total(n) >= n->srv->cfg->max_memory &&
        conn_held(c) > budget_share(n)) {
        budget_pause(c, store_now_us());
        if (!evtimer_pending(n->budget_ev, NULL)) {
            struct timeval tv = {0, BUDGET_TICK_MS * 1000};
            evtimer_add(n->budget_ev, &tv);
        }
    }
}

/* session_room_fn: what the connection may still produce. At the budget,
 * pages and batches are cut to what is left of its share (reply.h,
 * reply_session_budget), so a connection passes its share by one record,
 * not by a whole page or batch each; with none left it is paused here,
 * before producing, rather than by budget_gate after. The share is the
 * budget over the connections there are now, so connections that came
 * one by one were each given the share of their time; held by clients
 * that never read, those shares summed to 2.5x the budget (measured:
 * 160 MiB counted at 64 MiB). So pages and batches also stop, for
 * everyone, at 1.5x the budget; replies that are not
 * pages (pings, appends' acknowledgements) are never cut. */
static size_t conn_room(void *io)
{
    conn *c = io;
    net *n = c->n;
    if (mem_total(n) < n->srv->cfg->max_memory) {
        return SIZE_MAX;
    }
    uint64_t held = conn_held(c);
    uint64_t share = budget_share(n);
    uint64_t total = mem_total(n);
    uint64_t ceiling = n->srv->cfg->max_memory / 2 * 3;
    if (held < share && total < ceiling) {
        uint64_t room = share - held < ceiling - total ? share - held : ceiling - total;
        return (size_t)room;
    }
    if (!c->budget_paused && !c->zombie && !c->closing) {
        budget_pause(c, store_now_us());
        if (!evtimer_pending(n->budget_ev, NULL)) {
            struct timeval tv = {0, BUDGET_TICK_MS * 1000};
            evtimer_add(n->budget_ev, &tv);
        }
    }
    return 0;
}

/* TRIM_QUIET_MS after the memory in use fell well below its peak: give the
 * free pages back, unless it went up again meanwhile (large frames or
 * pages still coming: they would fault every page in again). */
static void trim_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    uint64_t total = mem_total(n);
    if (n->mem_recent_high - total >= TRIM_MIN_BYTES) {
        n->mem_recent_high = total; /* busy: look again later */
        struct timeval tv = {0, TRIM_QUIET_MS * 1000};
        evtimer_add(n->trim_ev, &tv);
        return;
    }
    malloc_trim(0);
    n->mem_peak = total;
}

/* After every callback (flush_all): O(1) unless something is to be done. */
static void budget_note(net *n)
{
    uint64_t total = mem_total(n);
    if (total > n->mem_recent_high) {
        n->mem_recent_high = total;
    }
    if (total > n->mem_peak) {
        n->mem_peak = total;
    } else if (n->mem_peak - total >= TRIM_MIN_BYTES &&
               (n->mem_peak - total >= TRIM_AFTER_BYTES || total <= n->mem_peak / 2) &&
               n->trim_ev && !evtimer_pending(n->trim_ev, NULL)) {
        n->mem_recent_high = total;
        struct timeval tv = {0, TRIM_QUIET_MS * 1000};
        evtimer_add(n->trim_ev, &tv);
    }
    if (total >= n->srv->cfg->max_memory && n->budget_ev && !evtimer_pending(n->budget_ev, NULL)) {
        struct timeval now = {0, 0};
        evtimer_add(n->budget_ev, &now);
    }
}

/* The budget's figures, after metrics_render's. */
static void budget_render(FILE *f, const net *n)
{
    fprintf(f,
            "# HELP esd_memory_budget_bytes The memory budget (--max-memory).\n"
            "# TYPE esd_memory_budget_bytes gauge\n"
            "esd_memory_budget_bytes %llu\n"
            "# HELP esd_memory_bytes Memory held for connections, by kind.\n"
            "# TYPE esd_memory_bytes gauge\n"
            "esd_memory_bytes{kind=\"output\"} %llu\n"
            "esd_memory_bytes{kind=\"input\"} %llu\n"
            "esd_memory_bytes{kind=\"pending\"} %llu\n"
            "# HELP esd_connections_paused Connections paused by the memory budget.\n"
            "# TYPE esd_connections_paused gauge\n"
            "esd_connections_paused %u\n"
            "# HELP esd_memory_pauses_total Connections paused by the memory budget, ever.\n"
            "# TYPE esd_memory_pauses_total counter\n"
            "esd_memory_pauses_total %llu\n"
            "# HELP esd_subscribers_dropped_total Subscriptions dropped as slow consumers.\n"
            "# TYPE esd_subscribers_dropped_total counter\n"
            "esd_subscribers_dropped_total{reason=\"slow_consumer\"} %llu\n",
            (unsigned long long)n->srv->cfg->max_memory, (unsigned long long)n->mem_out,
            (unsigned long long)n->mem_in, (unsigned long long)n->mem_pending, n->n_budget_paused,
            (unsigned long long)n->budget_pauses, (unsigned long long)n->slow_dropped);
    uint64_t from_store = 0, shared = 0;
    if (n->srv->subs) {
        subs_batch_stats(n->srv->subs, &from_store, &shared);
    }
    fprintf(f,
            "# HELP esd_subscription_batches_total Subscription batches delivered, by source:"
            " read from the store, or shared with another subscription of the same target"
            " (the whole batch, or its part from the subscription's position on).\n"
            "# TYPE esd_subscription_batches_total counter\n"
            "esd_subscription_batches_total{source=\"store\"} %llu\n"
            "esd_subscription_batches_total{source=\"shared\"} %llu\n",
            (unsigned long long)from_store, (unsigned long long)shared);
}

/* -------------------------------------------------------- completions -- */

static void completion_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    write_job *list = writer_take_completed(n->srv->w);
    while (list) {
        write_job *next = list->next;
        if (list->complete) {
            list->complete(list);
            list = next;
            continue;
        }
        if (list->kind == WRITE_JOB_GROUP) {
            groups_complete(n->srv->groups, list); /* a group job has no connection */
            list = next;
            continue;
        }
        session *s = handler_complete(list);
        conn *c = (conn *)s; /* sess is the first member */
        pending_sync(c);
        if (c->zombie) {
            conn_maybe_free(c);
        } else if (c->closing) {
            conn_send(c, "", 0); /* the flush closes it once drained */
        } else if (c->paused) {
            maybe_resume(c);
        }
        list = next;
    }
    subs_on_commit(n->srv->subs);
    groups_on_commit(n->srv->groups);
    flush_all(n);
}

/* A follower committed imported events: the same wake-up as after a group
 * commit, with no jobs to complete. */
static void import_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    net *n = arg;
    uint64_t cnt;
    ssize_t rd = read(fd, &cnt, sizeof cnt);
    (void)rd; /* EAGAIN when another callback already cleared it: fine */
    subs_on_commit(n->srv->subs);
    flush_all(n);
}

/* --------------------------------------------------------- subscriptions -- */

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    bool more_groups = groups_deliver(n->srv->groups);
    if (subs_deliver(n->srv->subs) || more_groups) {
        /* More to send: come back on the next loop turn, after I/O. */
        struct timeval now = {0, 0};
        evtimer_add(n->deliver_ev, &now);
    }
    flush_all(n);
}

static void kick_delivery(void *arg)
{
    net *n = arg;
    if (!evtimer_pending(n->deliver_ev, NULL)) {
        struct timeval now = {0, 0};
        evtimer_add(n->deliver_ev, &now);
    }
}

/* ------------------------------------------------------------- shutdown -- */

/*
 * Shutdown (SIGTERM, SIGINT): stop accepting and stop reading requests;
 * let the writer finish what it holds and every reply be written; then,
 * connection by connection, once its replies are all handed to the kernel:
 *
 *   1. a TLS close_notify, then shutdown(SHUT_WR): the kernel sends a FIN
 *      after the last reply, so the client reads every reply, then EOF;
 *   2. from then on, what the client sends is read and discarded;
 *   3. the socket is closed when the client closes (EOF), or once the
 *      kernel has had every byte and the FIN acknowledged (SIOCOUTQ is 0),
 *      draining the input once more just before.
 *
 * close() of a socket with unread input makes Linux send a reset and drop
 * whatever it had not sent yet, and a peer's stack may discard replies it
 * received but its application had not read: the input is therefore
 * always drained before the close. The loop ends when no connection is
 * left, or at the grace deadline (SHUTDOWN_GRACE_S); then the remaining
 * connections are shut and drained the same way, and whatever the kernel
 * still holds for them is sent after esd has exited.
 */
static bool all_flushed(net *n)
{
    if (writer_pending(n->srv->w) > 0) {
        return false;
    }
    for (conn *c = n->conns; c; c = c->next) {
        if (c->sess.in_flight || evbuffer_get_length(c->out) > 0) {
            return false;
        }
    }
    return true;
}

/* Step 1 above (and the end of every output: anything unsent is dropped). */
static void conn_shut_write(conn *c)
{
    if (c->wr_shut || c->zombie) {
        return;
    }
    subs_drop_session(&c->sess);
    groups_drop_session(&c->sess);
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    c->writing = false;
    c->tls_want_write = false;
    event_del(c->write_ev);
    evtimer_del(c->frame_timer);
    evtimer_del(c->idle_timer);
    if (c->handshake_timer) {
        evtimer_del(c->handshake_timer);
    }
    if (c->ssl && !c->tls_accepting) {
        (void)SSL_shutdown(c->ssl); /* close_notify, best effort */
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
    c->wr_shut = true;
    c->paused = false;
    set_reading(c, true); /* read_cb now only drains */
}

/* Every byte written and the FIN acknowledged by the peer. */
static bool all_acked(const conn *c)
{
    int unacked = 0;
    return ioctl(c->fd, SIOCOUTQ, &unacked) != 0 || unacked == 0;
}

static void shutdown_check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    bool late = store_now_us() >= n->shutdown_deadline_us;
    if (late && !all_flushed(n)) {
        log_msg(LOG_WARN, "shutdown grace period over with replies unsent", NULL);
    }
    bool flushed = late || all_flushed(n);
    conn *next;
    for (conn *c = n->conns; c; c = next) {
        next = c->next;
        if (!c->wr_shut && (late || (c->sess.in_flight == 0 && evbuffer_get_length(c->out) == 0 &&
                                     !c->writing && !c->tls_want_write))) {
            conn_shut_write(c);
        }
        if (c->wr_shut && (drain_input(c) || all_acked(c) || late)) {
            conn_close(c, "shut down");
        }
    }
    flush_all(n);
    if ((flushed && !n->conns) || late) {
        event_base_loopexit(n->base, NULL);
        return;
    }
    struct timeval tv = {0, 20000};
    evtimer_add(n->shutdown_check, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    net *n = arg;
    if (n->srv->shutting_down) {
        return;
    }
    log_msg(LOG_INFO, "shutting down", "signal=%d", (int)sig);
    n->srv->shutting_down = true;
    if (n->listener) {
        evconnlistener_free(n->listener);
        n->listener = NULL;
    }
    for (conn *c = n->conns; c; c = c->next) {
        set_reading(c, false);
    }
    n->shutdown_deadline_us = store_now_us() + SHUTDOWN_GRACE_S * 1000000ull;
    shutdown_check_cb(-1, 0, n);
}

static void group_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    groups_tick(n->srv->groups);
    flush_all(n);
}

static void reader_check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    int cleared = store_reader_check(n->srv->st);
    if (cleared > 0) {
        log_msg(LOG_INFO, "cleared stale reader slots", "count=%d", cleared);
    }
}

/* ------------------------------------------------------------ lifecycle -- */

/* HOST:PORT or [V6]:PORT; HOST may be a name; PORT 0 picks a free port. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, int *len)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || colon[1] == '\0') {
        return -1;
    }
    size_t hl = (size_t)(colon - spec);
    const char *h = spec;
    if (spec[0] == '[') {
        if (hl < 2 || spec[hl - 1] != ']') {
            return -1;
        }
        h = spec + 1;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof host) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) {
        return -1;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res) {
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = (int)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* --------------------------------------------------------------- metrics -- */

/*
 * The HTTP endpoint of --metrics-listen, on the same event base: evhttp
 * parses the requests, the handlers run on the loop thread like everything
 * else, so the figures need no locks. GET or HEAD only.
 *
 *   /metrics  Prometheus text (metrics_render)
 *   /healthz  200 while the loop turns (a scrape that gets an answer is the
 *             proof)
 *   /readyz   200 while esd serves requests; 503 once it is shutting down, or
 *             while its store refuses writes after meeting damage
 */
static void http_reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                       const char *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(b, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void http_cb(struct evhttp_request *req, void *arg)
{
    net *n = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evhttp_send_error(req, 405, "Method Not Allowed");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path) {
        evhttp_send_error(req, 400, "Bad Request");
        return;
    }
    if (!strcmp(path, "/healthz")) {
        http_reply(req, 200, "OK", "text/plain; charset=utf-8", "ok\n", 3);
    } else if (!strcmp(path, "/readyz")) {
        const char *body;
        int status = server_readiness(n->srv, &body);
        http_reply(req, status, status == 200 ? "OK" : "Service Unavailable",
                   "text/plain; charset=utf-8", body, strlen(body));
    } else if (!strcmp(path, "/metrics")) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) {
            evhttp_send_error(req, 500, "out of memory");
            return;
        }
        metrics_render(f, n->srv);
        budget_render(f, n);
        if (fclose(f) != 0 || !text) {
            free(text);
            evhttp_send_error(req, 500, "out of memory");
            return;
        }
        http_reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else {
        evhttp_send_error(req, 404, "Not Found");
    }
}

static es_err start_http(net *n, char *msg, size_t msg_len)
{
    const char *spec = n->srv->cfg->metrics_listen;
    struct sockaddr_storage ss;
    int sslen = 0;
    if (parse_listen(spec, &ss, &sslen) != 0) {
        snprintf(msg, msg_len, "bad metrics-listen address '%s' (expected HOST:PORT)", spec);
        return ES_ERR_INVALID_ARGUMENT;
    }
    n->http = evhttp_new(n->base);
    if (!n->http) {
        return ES_ERR_NO_MEMORY;
    }
    evhttp_set_timeout(n->http, 10);
    evhttp_set_max_headers_size(n->http, 16384);
    evhttp_set_max_body_size(n->http, 4096);
    evhttp_set_allowed_methods(n->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(n->http, http_cb, n);
    struct evconnlistener *l = evconnlistener_new_bind(
        n->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
        (struct sockaddr *)&ss, sslen);
    if (!l) {
        snprintf(msg, msg_len, "cannot listen on %s (metrics): %s", spec, strerror(errno));
        return ES_ERR_IO;
    }
    if (!evhttp_bind_listener(n->http, l)) {
        evconnlistener_free(l);
        return ES_ERR_NO_MEMORY;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char addr[80] = "?";
    if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen) == 0) {
        format_peer((struct sockaddr *)&bound, addr, sizeof addr);
    }
    log_msg(LOG_INFO, "metrics listening", "addr=%s paths=/metrics,/healthz,/readyz", addr);
    return ES_OK;
}

/* Descriptors esd needs besides its connections: the listener, LMDB, the
 * writer's eventfd, logs, the metrics endpoint and its clients, a relay. */
#define FDS_RESERVED 64

/*
 * Fleets: raise the soft RLIMIT_NOFILE to the hard limit (allowed without
 * privileges) and say how many connections esd can take; when that is
 * below --max-connections the excess would be refused at accept anyway.
 */
static void raise_fd_limit(const server_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            rl = want;
        }
    }
    uint64_t fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    uint64_t can = fds > FDS_RESERVED ? fds - FDS_RESERVED : 0;
    if (can < cfg->max_connections) {
        log_msg(LOG_WARN, "file descriptor limit below --max-connections",
                "nofile=%llu "
                "connections=%llu max_connections=%u",
                (unsigned long long)fds, (unsigned long long)can, cfg->max_connections);
    } else {
        can = cfg->max_connections;
    }
    char mem[32];
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)(cfg->max_memory >> 20));
    log_msg(LOG_INFO, "capacity", "connections=%llu nofile=%llu max_memory_mib=%s",
            (unsigned long long)can, (unsigned long long)fds, mem);
}

es_err net_create(server_ctx *srv, const char *port_file, net **out, char *msg, size_t msg_len)
{
    *out = NULL;
    net *n = calloc(1, sizeof *n);
    if (!n) {
        return ES_ERR_NO_MEMORY;
    }
    n->srv = srv;
    n->input_cap = (size_t)srv->cfg->max_frame_bytes + FRAME_HEADER_BYTES + 65536;
    raise_fd_limit(srv->cfg);
    n->pre = prehello_create(srv->cfg->max_prehello);
    n->base = n->pre ? event_base_new() : NULL;
    if (!n->base) {
        prehello_destroy(n->pre);
        free(n);
        return ES_ERR_NO_MEMORY;
    }
    struct sockaddr_storage ss;
    int sslen = 0;
    if (parse_listen(srv->cfg->listen, &ss, &sslen) != 0) {
        snprintf(msg, msg_len, "bad listen address '%s' (expected HOST:PORT)", srv->cfg->listen);
        event_base_free(n->base);
        prehello_destroy(n->pre);
        free(n);
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (!srv->auth && !srv->cfg->insecure && !is_loopback((struct sockaddr *)&ss)) {
        snprintf(msg, msg_len,
                 "refusing to listen on %s without authentication: give --auth-file FILE, "
                 "or --insecure to let anyone who can reach it read and write",
                 srv->cfg->listen);
        event_base_free(n->base);
        prehello_destroy(n->pre);
        free(n);
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (srv->cfg->tls_cert) {
        es_err trv = tls_server_ctx(srv->cfg->tls_cert, srv->cfg->tls_key, &n->tls, msg, msg_len);
        if (trv != ES_OK) {
            event_base_free(n->base);
            prehello_destroy(n->pre);
            free(n);
            return trv;
        }
    }
    n->listener = evconnlistener_new_bind(
        n->base, accept_cb, n, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        512, (struct sockaddr *)&ss, sslen);
    if (!n->listener) {
        snprintf(msg, msg_len, "cannot listen on %s: %s", srv->cfg->listen, strerror(errno));
        if (n->tls) {
            SSL_CTX_free(n->tls);
        }
        event_base_free(n->base);
        prehello_destroy(n->pre);
        free(n);
        return ES_ERR_IO;
    }
    evconnlistener_set_error_cb(n->listener, accept_error_cb);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char addr[80] = "?";
    if (getsockname(evconnlistener_get_fd(n->listener), (struct sockaddr *)&bound, &blen) == 0) {
        format_peer((struct sockaddr *)&bound, addr, sizeof addr);
    }
    n->accept_retry = evtimer_new(n->base, accept_retry_cb, n);
    n->accept_resume = evtimer_new(n->base, accept_resume_cb, n);
    n->completion_ev =
        event_new(n->base, writer_fd(srv->w), EV_READ | EV_PERSIST, completion_cb, n);
    n->sigterm_ev = evsignal_new(n->base, SIGTERM, signal_cb, n);
    n->sigint_ev = evsignal_new(n->base, SIGINT, signal_cb, n);
    n->reader_check = event_new(n->base, -1, EV_PERSIST, reader_check_cb, n);
    n->group_tick = event_new(n->base, -1, EV_PERSIST, group_tick_cb, n);
    n->shutdown_check = evtimer_new(n->base, shutdown_check_cb, n);
    n->deliver_ev = evtimer_new(n->base, deliver_cb, n);
    n->budget_ev = evtimer_new(n->base, budget_cb, n);
    n->trim_ev = evtimer_new(n->base, trim_cb, n);
    n->cont_ev = evtimer_new(n->base, cont_cb, n);
    if (!n->accept_retry || !n->accept_resume || !n->completion_ev || !n->sigterm_ev ||
        !n->sigint_ev || !n->reader_check || !n->group_tick || !n->shutdown_check ||
        !n->deliver_ev || !n->budget_ev || !n->cont_ev || !n->trim_ev) {
        net_destroy(n, NULL);
        return ES_ERR_NO_MEMORY;
    }
    if (srv->follow) {
        n->import_ev = event_new(n->base, srv->import_fd, EV_READ | EV_PERSIST, import_cb, n);
        if (!n->import_ev) {
            net_destroy(n, NULL);
            return ES_ERR_NO_MEMORY;
        }
        event_add(n->import_ev, NULL);
    }
    if (srv->cfg->metrics_listen) {
        es_err hrv = start_http(n, msg, msg_len);
        if (hrv != ES_OK) {
            net_destroy(n, NULL);
            return hrv;
        }
    }
    if (srv->cfg->http_listen) {
        es_err wrv = web_start(n->base, srv, n->tls, &n->web, msg, msg_len);
        if (wrv != ES_OK) {
            net_destroy(n, NULL);
            return wrv;
        }
    }
    srv->kick = kick_delivery;
    srv->kick_ctx = n;
    event_add(n->completion_ev, NULL);
    event_add(n->sigterm_ev, NULL);
    event_add(n->sigint_ev, NULL);
    struct timeval rc = {60, 0};
    event_add(n->reader_check, &rc);
    struct timeval gt = {0, 50000};
    event_add(n->group_tick, &gt);
    signal(SIGPIPE, SIG_IGN);
    log_msg(LOG_INFO, "listening", "addr=%s auth=%s tls=%s", addr,
            srv->auth ? "on" : (srv->cfg->insecure ? "off-insecure" : "off-loopback-only"),
            n->tls ? "on" : "off");
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        const char *port = strrchr(addr, ':');
        if (!f || !port) {
            if (f) {
                fclose(f);
            }
            snprintf(msg, msg_len, "cannot write the port file %s", port_file);
            net_destroy(n, NULL);
            return ES_ERR_IO;
        }
        fprintf(f, "%s\n", port + 1);
        fclose(f);
    }
    *out = n;
    return ES_OK;
}

void net_run(net *n)
{
    event_base_dispatch(n->base);
}

void net_destroy(net *n, write_job *leftover)
{
    if (!n) {
        return;
    }
    while (n->conns) {
        conn_close(n->conns, "server stopped");
    }
    while (n->cont_list) {
        conn *c = n->cont_list;
        n->cont_list = c->cont_next;
        c->in_cont_list = false;
        conn_maybe_free(c);
    }
    flush_all(n);
    while (leftover) {
        write_job *next = leftover->next;
        if (leftover->complete) {
            leftover->complete(leftover);
            leftover = next;
            continue;
        }
        if (leftover->kind == WRITE_JOB_GROUP) {
            groups_complete(n->srv->groups, leftover);
            leftover = next;
            continue;
        }
        session *s = handler_complete(leftover);
        conn *c = (conn *)s;
        if (c->zombie && s->in_flight == 0) {
            conn_free_struct(c);
        }
        leftover = next;
    }
    if (n->listener) {
        evconnlistener_free(n->listener);
    }
    if (n->http) {
        evhttp_free(n->http); /* its bound listeners and connections too */
    }
    web_stop(n->web);
    n->srv->kick = NULL;
    struct event *evs[] = {n->accept_retry, n->accept_resume, n->completion_ev, n->import_ev,
                           n->sigterm_ev,   n->sigint_ev,     n->reader_check,  n->shutdown_check,
                           n->deliver_ev,   n->budget_ev,     n->cont_ev,       n->group_tick,
                           n->trim_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (evs[i]) {
            event_free(evs[i]);
        }
    }
    if (n->tls) {
        SSL_CTX_free(n->tls);
    }
    event_base_free(n->base);
    prehello_destroy(n->pre);
    free(n);
}

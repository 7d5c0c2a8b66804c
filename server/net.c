#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "es.pb-c.h"
#include "frame.h"
#include "handler.h"
#include "reply.h"
#include "subs.h"

#define SHUTDOWN_GRACE_S 5
#define CLOSE_FLUSH_S 2

typedef struct conn conn;

struct conn {
    session sess; /* first: handler_complete returns &conn->sess */
    net *n;
    struct bufferevent *bev;
    struct event *handshake_timer;
    struct event *frame_timer;
    struct event *close_timer;
    conn *prev, *next;
    bool paused;  /* reading stopped for backpressure */
    bool closing; /* flush the output, then close */
    bool zombie;  /* socket gone; waiting for queued requests */
    bool idle_armed; /* the idle (read) timeout is set */
    char peer[64];
};

struct net {
    server_ctx *srv;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *completion_ev;
    struct event *sigterm_ev, *sigint_ev;
    struct event *accept_retry;
    struct event *reader_check;
    struct event *shutdown_check;
    struct event *deliver_ev;
    uint64_t shutdown_deadline_us;
    conn *conns; /* live connections (not zombies) */
    uint64_t next_conn_id;
};

/* ---------------------------------------------------------- connections -- */

static void conn_send(void *io, const void *data, size_t len)
{
    conn *c = io;
    if (c->bev) {
        bufferevent_write(c->bev, data, len);
    }
}

static size_t conn_outlen(void *io)
{
    conn *c = io;
    return c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

/* A connection with subscriptions may legitimately send nothing for a
 * long time: the idle timeout applies only to connections without. */
static void update_idle_timeout(conn *c)
{
    bool want = c->sess.n_subs == 0 && c->n->srv->cfg->idle_timeout_s > 0;
    if (want == c->idle_armed) {
        return;
    }
    c->idle_armed = want;
    if (want) {
        struct timeval idle = {c->n->srv->cfg->idle_timeout_s, 0};
        bufferevent_set_timeouts(c->bev, &idle, NULL);
    } else {
        bufferevent_set_timeouts(c->bev, NULL, NULL);
    }
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
    session_finish(&c->sess);
    free(c);
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
    if (c->handshake_timer) {
        event_free(c->handshake_timer);
        c->handshake_timer = NULL;
    }
    if (c->frame_timer) {
        event_free(c->frame_timer);
        c->frame_timer = NULL;
    }
    if (c->close_timer) {
        event_free(c->close_timer);
        c->close_timer = NULL;
    }
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    conn_unlink(c);
    n->srv->counters.connections--;
    subs_drop_session(&c->sess);
    c->sess.dead = true;
    c->zombie = true;
    if (c->sess.in_flight == 0) {
        conn_free_struct(c);
    }
}

static void close_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_close(arg, "flush deadline");
}

/* Stop reading, flush what is queued, then close. */
static void conn_close_after_flush(conn *c, const char *reason)
{
    if (c->closing || c->zombie) {
        return;
    }
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 && c->sess.in_flight == 0) {
        conn_close(c, reason);
        return;
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    c->close_timer = evtimer_new(c->n->base, close_timer_cb, c);
    if (c->close_timer) {
        struct timeval tv = {CLOSE_FLUSH_S, 0};
        evtimer_add(c->close_timer, &tv);
    }
}

static bool over_budget(const conn *c)
{
    const server_config *cfg = c->n->srv->cfg;
    return evbuffer_get_length(bufferevent_get_output(c->bev)) > cfg->max_output_bytes ||
           c->sess.pending_bytes > cfg->max_pending_bytes;
}

static void frame_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    log_msg(LOG_INFO, "incomplete frame deadline passed; closing", "conn=%llu peer=%s",
            (unsigned long long)c->sess.conn_id, c->peer);
    conn_close(c, "incomplete frame deadline");
}

static void handshake_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    if (!c->sess.hello_done) {
        log_msg(LOG_INFO, "no hello before the deadline; closing", "conn=%llu peer=%s",
                (unsigned long long)c->sess.conn_id, c->peer);
        conn_close(c, "handshake deadline");
    }
}

/* Take every complete frame from the input, within the budgets. */
static void process_input(conn *c)
{
    const server_config *cfg = c->n->srv->cfg;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closing && !c->zombie) {
        if (over_budget(c)) {
            if (!c->paused) {
                c->paused = true;
                bufferevent_disable(c->bev, EV_READ);
            }
            break;
        }
        size_t avail = evbuffer_get_length(in);
        if (avail < FRAME_HEADER_BYTES) {
            break;
        }
        uint8_t hdr[FRAME_HEADER_BYTES];
        evbuffer_copyout(in, hdr, FRAME_HEADER_BYTES);
        uint32_t blen;
        es_err rv = frame_parse_header(hdr, cfg->max_frame_bytes, &blen);
        if (rv != ES_OK) {
            reply_send_error(&c->sess, 0, rv,
                               rv == ES_ERR_TOO_LARGE ? "frame length above the server's cap"
                                                      : "frame length 0");
            log_msg(LOG_INFO, "bad frame header; closing", "conn=%llu peer=%s error=%s",
                    (unsigned long long)c->sess.conn_id, c->peer, es_errname(rv));
            conn_close_after_flush(c, "bad frame header");
            return;
        }
        if (avail - FRAME_HEADER_BYTES < blen) {
            break;
        }
        uint8_t *frame = evbuffer_pullup(in, (ev_ssize_t)(FRAME_HEADER_BYTES + blen));
        if (!frame) {
            reply_send_error(&c->sess, 0, ES_ERR_NO_MEMORY, NULL);
            conn_close_after_flush(c, "no memory");
            return;
        }
        rv = handler_on_frame(&c->sess, frame + FRAME_HEADER_BYTES, blen);
        if (c->zombie) {
            return;
        }
        evbuffer_drain(in, FRAME_HEADER_BYTES + blen);
        update_idle_timeout(c);
        if (c->sess.hello_done && c->handshake_timer) {
            event_free(c->handshake_timer);
            c->handshake_timer = NULL;
        }
        if (rv != ES_OK) {
            conn_close_after_flush(c, es_errname(rv));
            return;
        }
    }
    if (c->zombie || c->closing) {
        return;
    }
    /* A partial frame must complete within the deadline. */
    if (evbuffer_get_length(in) > 0) {
        if (c->frame_timer && !evtimer_pending(c->frame_timer, NULL)) {
            struct timeval tv = {cfg->frame_timeout_s, 0};
            evtimer_add(c->frame_timer, &tv);
        }
    } else if (c->frame_timer) {
        evtimer_del(c->frame_timer);
    }
}

static void maybe_resume(conn *c)
{
    if (c->paused && !c->zombie && !c->closing && !c->n->srv->shutting_down && !over_budget(c)) {
        c->paused = false;
        bufferevent_enable(c->bev, EV_READ);
        process_input(c);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process_input(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 && c->sess.in_flight == 0) {
            conn_close(c, "closed after flushing");
        }
        return;
    }
    maybe_resume(c);
    subs_on_writable(&c->sess);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        conn_close(c, "idle timeout");
    } else if (what & BEV_EVENT_EOF) {
        conn_close(c, "peer closed");
    } else if (what & BEV_EVENT_ERROR) {
        conn_close(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
}

/* A BUSY error frame written straight to a socket we will not serve. */
static void refuse_fd(evutil_socket_t fd, es_err code, const char *message)
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
        (void)wr; /* best effort: the socket is closed next either way */
    }
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

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    (void)salen;
    net *n = arg;
    const server_config *cfg = n->srv->cfg;
    if (n->srv->shutting_down) {
        refuse_fd(fd, ES_ERR_SHUTTING_DOWN, "server shutting down");
        return;
    }
    if (n->srv->counters.connections >= cfg->max_connections) {
        log_msg(LOG_WARN, "connection refused: max connections reached", "max=%u",
                cfg->max_connections);
        refuse_fd(fd, ES_ERR_BUSY, "too many connections");
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        refuse_fd(fd, ES_ERR_NO_MEMORY, "out of memory");
        return;
    }
    c->n = n;
    format_peer(sa, c->peer, sizeof c->peer);
    if (session_init(&c->sess, n->srv, ++n->next_conn_id, c, conn_send, conn_outlen) != ES_OK) {
        free(c);
        refuse_fd(fd, ES_ERR_NO_MEMORY, "out of memory");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->bev = bufferevent_socket_new(n->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->handshake_timer = evtimer_new(n->base, handshake_timer_cb, c);
    c->frame_timer = evtimer_new(n->base, frame_timer_cb, c);
    if (!c->bev || !c->handshake_timer || !c->frame_timer) {
        if (c->bev) {
            bufferevent_free(c->bev);
        } else {
            evutil_closesocket(fd);
        }
        if (c->handshake_timer) {
            event_free(c->handshake_timer);
        }
        if (c->frame_timer) {
            event_free(c->frame_timer);
        }
        conn_free_struct(c);
        return;
    }
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    /* Input: at most one whole frame (plus a little) is buffered. */
    bufferevent_setwatermark(c->bev, EV_READ, 0,
                             (size_t)cfg->max_frame_bytes + FRAME_HEADER_BYTES + 65536);
    /* Output: the write callback fires when unsent output drops below half
     * the cap, which is when a paused reader resumes. */
    bufferevent_setwatermark(c->bev, EV_WRITE, cfg->max_output_bytes / 2, 0);
    update_idle_timeout(c);
    struct timeval hs = {cfg->handshake_timeout_s, 0};
    evtimer_add(c->handshake_timer, &hs);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = n->conns;
    if (n->conns) {
        n->conns->prev = c;
    }
    n->conns = c;
    n->srv->counters.connections++;
    log_msg(LOG_DEBUG, "connection accepted", "conn=%llu peer=%s",
            (unsigned long long)c->sess.conn_id, c->peer);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
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

/* -------------------------------------------------------- completions -- */

static void completion_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    write_job *list = writer_take_completed(n->srv->w);
    while (list) {
        write_job *next = list->next;
        session *s = handler_complete(list);
        conn *c = (conn *)s; /* sess is the first member */
        if (c->zombie) {
            if (s->in_flight == 0) {
                conn_free_struct(c);
            }
        } else if (c->closing) {
            if (s->in_flight == 0 && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
                conn_close(c, "closed after flushing");
            }
        } else {
            maybe_resume(c);
        }
        list = next;
    }
    subs_on_commit(n->srv->subs);
}

/* --------------------------------------------------------- subscriptions -- */

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    if (subs_deliver(n->srv->subs)) {
        /* More to send: come back on the next loop turn, after I/O. */
        struct timeval now = {0, 0};
        evtimer_add(n->deliver_ev, &now);
    }
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

static bool all_flushed(net *n)
{
    if (writer_pending(n->srv->w) > 0) {
        return false;
    }
    for (conn *c = n->conns; c; c = c->next) {
        if (c->sess.in_flight || evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
            return false;
        }
    }
    return true;
}

static void shutdown_check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    net *n = arg;
    if (all_flushed(n) || store_now_us() >= n->shutdown_deadline_us) {
        if (!all_flushed(n)) {
            log_msg(LOG_WARN, "shutdown grace period over with replies unsent", NULL);
        }
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
        bufferevent_disable(c->bev, EV_READ);
    }
    n->shutdown_deadline_us = store_now_us() + SHUTDOWN_GRACE_S * 1000000ull;
    shutdown_check_cb(-1, 0, n);
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

es_err net_create(server_ctx *srv, const char *port_file, net **out, char *msg, size_t msg_len)
{
    *out = NULL;
    net *n = calloc(1, sizeof *n);
    if (!n) {
        return ES_ERR_NO_MEMORY;
    }
    n->srv = srv;
    n->base = event_base_new();
    if (!n->base) {
        free(n);
        return ES_ERR_NO_MEMORY;
    }
    struct sockaddr_storage ss;
    int sslen = 0;
    if (parse_listen(srv->cfg->listen, &ss, &sslen) != 0) {
        snprintf(msg, msg_len, "bad listen address '%s' (expected HOST:PORT)", srv->cfg->listen);
        event_base_free(n->base);
        free(n);
        return ES_ERR_INVALID_ARGUMENT;
    }
    n->listener = evconnlistener_new_bind(
        n->base, accept_cb, n, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        512, (struct sockaddr *)&ss, sslen);
    if (!n->listener) {
        snprintf(msg, msg_len, "cannot listen on %s: %s", srv->cfg->listen, strerror(errno));
        event_base_free(n->base);
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
    n->completion_ev =
        event_new(n->base, writer_fd(srv->w), EV_READ | EV_PERSIST, completion_cb, n);
    n->sigterm_ev = evsignal_new(n->base, SIGTERM, signal_cb, n);
    n->sigint_ev = evsignal_new(n->base, SIGINT, signal_cb, n);
    n->reader_check = event_new(n->base, -1, EV_PERSIST, reader_check_cb, n);
    n->shutdown_check = evtimer_new(n->base, shutdown_check_cb, n);
    n->deliver_ev = evtimer_new(n->base, deliver_cb, n);
    if (!n->accept_retry || !n->completion_ev || !n->sigterm_ev || !n->sigint_ev ||
        !n->reader_check || !n->shutdown_check || !n->deliver_ev) {
        net_destroy(n, NULL);
        return ES_ERR_NO_MEMORY;
    }
    srv->kick = kick_delivery;
    srv->kick_ctx = n;
    event_add(n->completion_ev, NULL);
    event_add(n->sigterm_ev, NULL);
    event_add(n->sigint_ev, NULL);
    struct timeval rc = {60, 0};
    event_add(n->reader_check, &rc);
    signal(SIGPIPE, SIG_IGN);
    log_msg(LOG_INFO, "listening", "addr=%s", addr);
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
    while (leftover) {
        write_job *next = leftover->next;
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
    n->srv->kick = NULL;
    struct event *evs[] = {n->accept_retry, n->completion_ev, n->sigterm_ev,   n->sigint_ev,
                           n->reader_check, n->shutdown_check, n->deliver_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (evs[i]) {
            event_free(evs[i]);
        }
    }
    event_base_free(n->base);
    free(n);
}

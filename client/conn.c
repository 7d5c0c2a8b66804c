/*
 * conn — the client's socket: connecting with a deadline, sending and
 * receiving frames with poll().
 *
 * Design notes: the socket is non-blocking and every wait is a poll() with
 * the caller's deadline, so no call blocks longer than its timeout. Sending
 * also reads: a pipelining client that only wrote could deadlock against a
 * server that stops reading while its replies are not consumed. Frames are
 * assembled from recv() chunks; the 4-byte header is checked against the
 * receive cap (frame_parse_header) before a single byte is allocated for
 * the body, and a large body is then received straight into its buffer.
 * After a framing error the byte stream cannot be trusted and the
 * connection is dropped.
 *
 * TLS (opts.tls): after the TCP connect, an OpenSSL handshake on the same
 * non-blocking socket, polled against the same deadline; TLS 1.2 or newer,
 * the certificate verified against the CA file or the system's store and
 * its name against tls_server_name or the address's host (unless
 * tls_insecure). Afterwards SSL_read and SSL_write take the place of recv
 * and send, and a read first drains what OpenSSL already holds (no poll()
 * would announce it). The context is made once, at the first connection,
 * so a bad CA file is reported by es_client_connect with its reason.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "frame.h"
#include "internal.h"

static int remaining_ms(uint64_t deadline_us)
{
    uint64_t now = cl_mono_us();
    if (now >= deadline_us) {
        return 0;
    }
    uint64_t ms = (deadline_us - now + 999) / 1000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

static es_err connect_addr(const struct addrinfo *ai, uint64_t deadline_us, int *out, int *err)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        *err = errno;
        return ES_ERR_CONNECTION;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            *err = errno;
            close(fd);
            return ES_ERR_CONNECTION;
        }
        for (;;) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int n = poll(&pfd, 1, remaining_ms(deadline_us));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                *err = n == 0 ? ETIMEDOUT : errno;
                close(fd);
                return ES_ERR_CONNECTION;
            }
            break;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            *err = soerr ? soerr : errno;
            close(fd);
            return ES_ERR_CONNECTION;
        }
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = fd;
    return ES_OK;
}

/* ------------------------------------------------------------------- TLS -- */

static void tls_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
    } else {
        ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
}

void conn_tls_free(es_client *c)
{
    if (c->tls_ctx != NULL) {
        SSL_CTX_free(c->tls_ctx);
        c->tls_ctx = NULL;
    }
}

static es_err tls_make_ctx(es_client *c)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a TLS context");
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int ok = c->opts.tls_ca_file != NULL
                 ? SSL_CTX_load_verify_locations(ctx, c->opts.tls_ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        tls_reason(why, sizeof(why));
        SSL_CTX_free(ctx);
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "cannot load the CA certificates %s: %s",
                       c->opts.tls_ca_file ? c->opts.tls_ca_file : "of the system", why);
    }
    SSL_CTX_set_verify(ctx, c->opts.tls_insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    c->tls_ctx = ctx;
    return ES_OK;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* The TLS handshake on c->fd before the deadline. On failure the socket
 * is closed and the reason recorded. */
static es_err tls_connect(es_client *c, uint64_t deadline_us)
{
    es_err rv;
    if (c->tls_ctx == NULL && (rv = tls_make_ctx(c)) != ES_OK) {
        close(c->fd);
        c->fd = -1;
        return rv;
    }
    const char *name = c->opts.tls_server_name ? c->opts.tls_server_name : c->host;
    SSL *ssl = SSL_new(c->tls_ctx);
    if (ssl == NULL || SSL_set_fd(ssl, c->fd) != 1) {
        SSL_free(ssl);
        close(c->fd);
        c->fd = -1;
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a TLS session");
    }
    if (is_ip_literal(name)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    } else {
        SSL_set_tlsext_host_name(ssl, name);
        SSL_set1_host(ssl, name);
    }
    ERR_clear_error();
    for (;;) {
        int r = SSL_connect(ssl);
        if (r == 1) {
            break;
        }
        int e = SSL_get_error(ssl, r);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (ev != 0) {
            struct pollfd pfd = {.fd = c->fd, .events = ev};
            int n = poll(&pfd, 1, remaining_ms(deadline_us));
            if (n > 0 || (n < 0 && errno == EINTR)) {
                continue;
            }
            SSL_free(ssl);
            close(c->fd);
            c->fd = -1;
            return cl_fail(c, ES_ERR_CONNECTION, "TLS handshake with %s timed out", c->address);
        }
        char why[512];
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK) {
            snprintf(why, sizeof(why), "the server's certificate is not trusted for \"%s\": %s",
                     name, X509_verify_cert_error_string(vr));
            ERR_clear_error();
        } else {
            tls_reason(why, sizeof(why));
        }
        SSL_free(ssl);
        close(c->fd);
        c->fd = -1;
        return cl_fail(c, ES_ERR_CONNECTION, "TLS handshake with %s failed: %s", c->address, why);
    }
    c->ssl = ssl;
    return ES_OK;
}

/* recv() or SSL_read(). @return > 0 bytes; 0 the server closed; -1 nothing
 * now; -2 failed (why). */
static ssize_t xrecv(es_client *c, void *buf, size_t len, char *why, size_t why_len)
{
    if (c->ssl == NULL) {
        for (;;) {
            ssize_t n = recv(c->fd, buf, len, 0);
            if (n >= 0) {
                return n;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return -1;
            }
            snprintf(why, why_len, "connection lost: %s", strerror(errno));
            return -2;
        }
    }
    int want = len > 0x7fffffff ? 0x7fffffff : (int)len;
    errno = 0;
    int n = SSL_read(c->ssl, buf, want);
    if (n > 0) {
        return n;
    }
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN ||
        (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET))) {
        ERR_clear_error();
        return 0;
    }
    char r[200];
    tls_reason(r, sizeof(r));
    snprintf(why, why_len, "connection lost: TLS: %s", r);
    return -2;
}

/* send() or SSL_write(). @return bytes written (0: the socket is full);
 * -2 failed (why). */
static ssize_t xsend(es_client *c, const void *buf, size_t len, char *why, size_t why_len)
{
    if (c->ssl == NULL) {
        ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w >= 0) {
            return w;
        }
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        snprintf(why, why_len, "connection lost while sending: %s", strerror(errno));
        return -2;
    }
    int want = len > 0x7fffffff ? 0x7fffffff : (int)len;
    int w = SSL_write(c->ssl, buf, want);
    if (w > 0) {
        return w;
    }
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return 0;
    }
    char r[200];
    tls_reason(r, sizeof(r));
    snprintf(why, why_len, "connection lost while sending: TLS: %s", r);
    return -2;
}

es_err conn_open(es_client *c, uint64_t deadline_us)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(c->host, c->port, &hints, &res);
    if (gai != 0) {
        return cl_fail(c, ES_ERR_CONNECTION, "cannot resolve %s: %s", c->host, gai_strerror(gai));
    }
    int err = 0;
    es_err rv = ES_ERR_CONNECTION;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rv = connect_addr(ai, deadline_us, &c->fd, &err);
        if (rv == ES_OK || remaining_ms(deadline_us) == 0) {
            break;
        }
    }
    freeaddrinfo(res);
    if (rv != ES_OK) {
        return cl_fail(c, ES_ERR_CONNECTION, "%s", strerror(err ? err : ETIMEDOUT));
    }
    memset(c->notice, 0, sizeof(c->notice));
    if (c->opts.tls) {
        return tls_connect(c, deadline_us);
    }
    return ES_OK;
}

static void rx_reset(cl_rx *rx)
{
    cl_free(rx->body);
    rx->body = NULL;
    rx->body_cap = 0;
    rx->hdr_have = 0;
    rx->body_len = 0;
    rx->body_have = 0;
}

void conn_drop(es_client *c, es_err reason, const char *fmt, ...)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl); /* no close_notify: the socket is closed at once */
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->ready = false;
    rx_reset(&c->rx);

    char msg[CL_ERRMSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->notice[0] != '\0') {
        cl_fail(c, reason, "%s (server said: %s)", msg, c->notice);
    } else {
        cl_fail(c, reason, "%s", msg);
    }

    /* Complete every request in flight. Deleting shifts later entries
     * back into slot i, so i only advances past a slot that stays. */
    ptable *t = &c->pending;
    for (size_t i = 0; i < t->cap;) {
        pending *e = &t->slots[i];
        if (e->id != 0 && e->state == PENDING_WAITING) {
            e->state = PENDING_DONE;
            e->err = reason;
        }
        if (e->id != 0 && e->abandoned) {
            cl_pending_release(c, e);
            ptable_del(t, e->id);
            continue;
        }
        i++;
    }
    c->in_flight = 0;
}

/* Dispatch the frame being assembled if its body is complete.
 * @return ES_OK or the reason the connection was dropped. */
static es_err rx_complete(es_client *c)
{
    cl_rx *rx = &c->rx;
    if (rx->body == NULL || rx->body_have < rx->body_len) {
        return ES_OK;
    }
    uint8_t *body = rx->body;
    uint32_t blen = rx->body_len, bcap = rx->body_cap;
    rx->body = NULL;
    rx->body_cap = 0;
    rx->hdr_have = 0;
    rx->body_len = 0;
    rx->body_have = 0;
    bool taken = false;
    es_err rv = cl_on_frame(c, body, blen, bcap, &taken);
    if (!taken) {
        cl_buf_put(c, body, bcap);
    }
    if (rv != ES_OK) {
        conn_drop(c, rv, "server sent an undecodable frame: connection dropped");
    }
    return rv;
}

/* Feed received bytes into the frame being assembled; dispatch every frame
 * completed. @return ES_OK or the reason the connection was dropped. */
static es_err rx_consume(es_client *c, const uint8_t *p, size_t n)
{
    cl_rx *rx = &c->rx;
    while (n > 0) {
        if (rx->body == NULL) {
            size_t take = FRAME_HEADER_BYTES - rx->hdr_have;
            if (take > n) {
                take = n;
            }
            memcpy(rx->hdr + rx->hdr_have, p, take);
            rx->hdr_have += (uint32_t)take;
            p += take;
            n -= take;
            if (rx->hdr_have < FRAME_HEADER_BYTES) {
                break;
            }
            uint32_t blen = 0;
            es_err rv = frame_parse_header(rx->hdr, c->recv_cap, &blen);
            if (rv != ES_OK) {
                uint32_t declared = ((uint32_t)rx->hdr[0] << 24) | ((uint32_t)rx->hdr[1] << 16) |
                                    ((uint32_t)rx->hdr[2] << 8) | rx->hdr[3];
                conn_drop(c, rv, "server sent a frame of %u bytes (cap %u): connection dropped",
                          declared, c->recv_cap);
                return rv;
            }
            rx->body = cl_buf_get(c, blen, &rx->body_cap);
            if (rx->body == NULL) {
                conn_drop(c, ES_ERR_NO_MEMORY, "no memory for a frame of %u bytes", blen);
                return ES_ERR_NO_MEMORY;
            }
            rx->body_len = blen;
            rx->body_have = 0;
        } else {
            size_t take = rx->body_len - rx->body_have;
            if (take > n) {
                take = n;
            }
            memcpy(rx->body + rx->body_have, p, take);
            rx->body_have += (uint32_t)take;
            p += take;
            n -= take;
        }
        es_err rv = rx_complete(c);
        if (rv != ES_OK) {
            return rv;
        }
    }
    return ES_OK;
}

/* One non-blocking read. @return ES_OK (possibly nothing read) or the
 * reason the connection was dropped. */
static es_err read_once(es_client *c)
{
    cl_rx *rx = &c->rx;
    char why[256];
    ssize_t n;
    bool direct = rx->body != NULL && rx->body_have < rx->body_len;
    if (direct) {
        /* The header is checked and the body allocated: fill it in place. */
        n = xrecv(c, rx->body + rx->body_have, rx->body_len - rx->body_have, why, sizeof(why));
    } else {
        n = xrecv(c, rx->chunk, sizeof(rx->chunk), why, sizeof(why));
    }
    if (n == -1) {
        return ES_OK;
    }
    if (n == -2) {
        conn_drop(c, ES_ERR_CLOSED, "%s", why);
        return ES_ERR_CLOSED;
    }
    if (n == 0) {
        if (rx->hdr_have > 0 || rx->body != NULL) {
            conn_drop(c, ES_ERR_CLOSED, "server closed the connection in the middle of a frame");
        } else {
            conn_drop(c, ES_ERR_CLOSED, "server closed the connection");
        }
        return ES_ERR_CLOSED;
    }
    if (direct) {
        rx->body_have += (uint32_t)n;
        return rx_complete(c);
    }
    return rx_consume(c, rx->chunk, (size_t)n);
}

es_err conn_pump(es_client *c, uint64_t deadline_us)
{
    if (c->fd < 0) {
        return ES_ERR_CLOSED;
    }
    if (c->ssl != NULL && SSL_has_pending(c->ssl)) {
        return read_once(c); /* OpenSSL holds bytes no poll() announces */
    }
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int n = poll(&pfd, 1, remaining_ms(deadline_us));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int e = errno;
            conn_drop(c, ES_ERR_CLOSED, "poll: %s", strerror(e));
            return ES_ERR_CLOSED;
        }
        if (n == 0) {
            return ES_ERR_TIMEOUT;
        }
        /* On error read_once has dropped the connection: report why. */
        return read_once(c);
    }
}

es_err conn_send(es_client *c, const uint8_t *buf, size_t len, uint64_t deadline_us)
{
    size_t off = 0;
    while (off < len) {
        if (c->fd < 0) {
            return ES_ERR_CLOSED;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN | POLLOUT};
        int n = poll(&pfd, 1, remaining_ms(deadline_us));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int e = errno;
            conn_drop(c, ES_ERR_CLOSED, "poll: %s", strerror(e));
            return ES_ERR_CLOSED;
        }
        if (n == 0) {
            conn_drop(c, ES_ERR_CLOSED, "sending a request timed out: connection dropped");
            return ES_ERR_TIMEOUT;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            es_err rv = read_once(c);
            if (rv != ES_OK) {
                return rv;
            }
            if (c->fd < 0) {
                return ES_ERR_CLOSED;
            }
        }
        if (pfd.revents & POLLOUT) {
            char why[256];
            ssize_t w = xsend(c, buf + off, len - off, why, sizeof(why));
            if (w < 0) {
                conn_drop(c, ES_ERR_CLOSED, "%s", why);
                return ES_ERR_CLOSED;
            }
            off += (size_t)w;
        }
    }
    return ES_OK;
}

/* frames — raw wire frames and test sockets; see frames.h. */
#include "frames.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "esd_proc.h"

/* Replies larger than this are not something esd may send (its hard cap). */
#define H_MAX_FRAME (64u * 1024u * 1024u)

/* ------------------------------------------------------------ byte buffer -- */

/* Room for extra more bytes after len. */
static void hbuf_reserve(hbuf *b, size_t extra)
{
    if (b->len + extra <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        abort();
    }
    b->p = p;
    b->cap = cap;
}

void hbuf_put(hbuf *b, const void *data, size_t len)
{
    hbuf_reserve(b, len);
    if (len) {
        memcpy(b->p + b->len, data, len);
    }
    b->len += len;
}

void hbuf_put_byte(hbuf *b, uint8_t v)
{
    hbuf_put(b, &v, 1);
}

void hbuf_put_varint(hbuf *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) {
            c |= 0x80;
        }
        hbuf_put_byte(b, c);
    } while (v);
}

void hbuf_put_tag(hbuf *b, uint32_t field, uint32_t wire)
{
    hbuf_put_varint(b, ((uint64_t)field << 3) | wire);
}

void hbuf_put_lenfield(hbuf *b, uint32_t field, const void *data, size_t len)
{
    hbuf_put_tag(b, field, 2);
    hbuf_put_varint(b, len);
    hbuf_put(b, data, len);
}

void hbuf_put_header(hbuf *b, uint32_t len)
{
    uint8_t h[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    hbuf_put(b, h, 4);
}

void hbuf_put_frame(hbuf *b, const void *body, size_t len)
{
    hbuf_put_header(b, (uint32_t)len);
    hbuf_put(b, body, len);
}

void hbuf_free(hbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------ connections -- */

int h_connect_rcvbuf(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

int h_connect(uint16_t port)
{
    return h_connect_rcvbuf(port, 0);
}

static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - h_now_ms();
        if (left < 0) {
            left = 0;
        }
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)left);
        if (r > 0) {
            return H_OK;
        }
        if (r == 0) {
            return H_TIMEOUT;
        }
        if (errno != EINTR) {
            return H_ERR;
        }
    }
}

int h_send_all(int fd, const void *data, size_t len, int timeout_ms)
{
    const uint8_t *p = data;
    int64_t deadline = h_now_ms() + timeout_ms;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r != H_OK) {
                return r;
            }
            continue;
        }
        return (errno == EPIPE || errno == ECONNRESET) ? H_CLOSED : H_ERR;
    }
    return H_OK;
}

ssize_t h_send_some(int fd, const void *data, size_t len)
{
    ssize_t w = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
        return w;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return 0;
    }
    return -1;
}

/* Read exactly len bytes. */
static int recv_exact(int fd, uint8_t *p, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t r = recv(fd, p, len, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
            continue;
        }
        if (r == 0) {
            return H_CLOSED;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w != H_OK) {
                return w;
            }
            continue;
        }
        return (errno == ECONNRESET || errno == EPIPE) ? H_CLOSED : H_ERR;
    }
    return H_OK;
}

/* Once a frame has started, this long is allowed for the rest of it. */
#define H_FRAME_REST_MS 10000

int h_recv(int fd, int timeout_ms, Es__V1__Response **out, size_t *body_len)
{
    *out = NULL;
    /* timeout_ms bounds the wait for the first byte only: nothing is
     * consumed on H_TIMEOUT, so a caller may poll with short timeouts
     * without losing its place in the byte stream. */
    int r = wait_fd(fd, POLLIN, h_now_ms() + timeout_ms);
    if (r != H_OK) {
        return r;
    }
    int64_t deadline = h_now_ms() + (timeout_ms > H_FRAME_REST_MS ? timeout_ms : H_FRAME_REST_MS);
    uint8_t hdr[4];
    r = recv_exact(fd, hdr, 4, deadline);
    if (r != H_OK) {
        return r;
    }
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len == 0 || len > H_MAX_FRAME) {
        return H_BADFRAME;
    }
    uint8_t *body = malloc(len);
    if (!body) {
        return H_ERR;
    }
    r = recv_exact(fd, body, len, deadline);
    if (r != H_OK) {
        free(body);
        return r;
    }
    if (body_len) {
        *body_len = len;
    }
    *out = es__v1__response__unpack(NULL, len, body);
    free(body);
    return *out ? H_OK : H_BADFRAME;
}

int h_set_recv_timeout(int fd, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int recv_all_blocking(int fd, uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t r = recv(fd, p, len, MSG_WAITALL);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
            continue;
        }
        if (r == 0) {
            return H_CLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return H_TIMEOUT;
        }
        return (errno == ECONNRESET || errno == EPIPE) ? H_CLOSED : H_ERR;
    }
    return H_OK;
}

int h_recv_blocking(int fd, Es__V1__Response **out)
{
    *out = NULL;
    uint8_t hdr[4];
    int r = recv_all_blocking(fd, hdr, 4);
    if (r != H_OK) {
        return r;
    }
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len == 0 || len > H_MAX_FRAME) {
        return H_BADFRAME;
    }
    uint8_t small[512];
    uint8_t *body = len <= sizeof small ? small : malloc(len);
    if (!body) {
        return H_ERR;
    }
    r = recv_all_blocking(fd, body, len);
    if (r == H_OK) {
        *out = es__v1__response__unpack(NULL, len, body);
        r = *out ? H_OK : H_BADFRAME;
    }
    if (body != small) {
        free(body);
    }
    return r;
}

int h_wait_closed(int fd, int timeout_ms, int *frames)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    int n = 0;
    for (;;) {
        int64_t left = deadline - h_now_ms();
        Es__V1__Response *r = NULL;
        int rv = h_recv(fd, left > 0 ? (int)left : 0, &r, NULL);
        if (rv == H_OK) {
            n++;
            h_resp_free(r);
            continue;
        }
        if (rv == H_BADFRAME) {
            /* Drain whatever it is up to the close. */
            uint8_t junk[4096];
            for (;;) {
                if (wait_fd(fd, POLLIN, deadline) != H_OK) {
                    rv = H_TIMEOUT;
                    break;
                }
                ssize_t g = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
                if (g == 0 || (g < 0 && errno != EAGAIN && errno != EINTR)) {
                    rv = H_CLOSED;
                    break;
                }
            }
        }
        if (frames) {
            *frames = n;
        }
        return rv == H_CLOSED ? H_CLOSED : H_TIMEOUT;
    }
}

void h_resp_free(Es__V1__Response *r)
{
    if (r) {
        es__v1__response__free_unpacked(r, NULL);
    }
}

void h_put_req(hbuf *b, const Es__V1__Request *req)
{
    size_t size = es__v1__request__get_packed_size(req);
    hbuf_put_header(b, (uint32_t)size);
    hbuf_reserve(b, size);
    es__v1__request__pack(req, b->p + b->len);
    b->len += size;
}

int h_flush(int fd, hbuf *b, int timeout_ms)
{
    int r = h_send_all(fd, b->p, b->len, timeout_ms);
    b->len = 0;
    return r;
}

int h_send_req(int fd, const Es__V1__Request *req, int timeout_ms)
{
    hbuf b = {0};
    h_put_req(&b, req);
    int r = h_send_all(fd, b.p, b.len, timeout_ms);
    hbuf_free(&b);
    return r;
}

Es__V1__Response *h_call(int fd, const Es__V1__Request *req, int timeout_ms)
{
    if (h_send_req(fd, req, timeout_ms) != H_OK) {
        return NULL;
    }
    Es__V1__Response *r = NULL;
    h_recv(fd, timeout_ms, &r, NULL);
    return r;
}

void h_put_hello(hbuf *b, uint64_t id, uint32_t version)
{
    Es__V1__Hello h = ES__V1__HELLO__INIT;
    h.protocol_version = version;
    h.client_name = (char *)"esd-integration-test";
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_HELLO;
    r.hello = &h;
    h_put_req(b, &r);
}

void h_put_ping(hbuf *b, uint64_t id, const void *payload, size_t len)
{
    Es__V1__Ping p = ES__V1__PING__INIT;
    p.payload.data = (uint8_t *)payload;
    p.payload.len = len;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_PING;
    r.ping = &p;
    h_put_req(b, &r);
}

void h_put_stats(hbuf *b, uint64_t id)
{
    Es__V1__StatsRequest s = ES__V1__STATS_REQUEST__INIT;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_STATS;
    r.stats = &s;
    h_put_req(b, &r);
}

void h_put_read_stream(hbuf *b, uint64_t id, const char *stream, size_t stream_len, uint64_t from,
                       bool backward, uint32_t limit)
{
    Es__V1__ReadStream rs = ES__V1__READ_STREAM__INIT;
    rs.stream.data = (uint8_t *)stream;
    rs.stream.len = stream_len ? stream_len : strlen(stream);
    rs.from_revision = from;
    rs.backward = backward;
    rs.limit = limit;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_READ_STREAM;
    r.read_stream = &rs;
    h_put_req(b, &r);
}

void h_put_read_all(hbuf *b, uint64_t id, uint64_t from, bool backward, uint32_t limit,
                    const char *prefix, const char *category, const char *type)
{
    Es__V1__Filter f = ES__V1__FILTER__INIT;
    Es__V1__ReadAll ra = ES__V1__READ_ALL__INIT;
    ra.from_position = from;
    ra.backward = backward;
    ra.limit = limit;
    if (prefix || category || type) {
        if (prefix) {
            f.stream_prefix.data = (uint8_t *)prefix;
            f.stream_prefix.len = strlen(prefix);
        }
        if (category) {
            f.category.data = (uint8_t *)category;
            f.category.len = strlen(category);
        }
        if (type) {
            f.event_type.data = (uint8_t *)type;
            f.event_type.len = strlen(type);
        }
        ra.filter = &f;
    }
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_READ_ALL;
    r.read_all = &ra;
    h_put_req(b, &r);
}

/* Storage for one Append built from an h_app. */
typedef struct built_append {
    Es__V1__Append a;
    Es__V1__Expected exp;
    Es__V1__ProposedEvent *evs;
    Es__V1__ProposedEvent **ptrs;
} built_append;

static void build_append(built_append *ba, const h_app *in)
{
    es__v1__append__init(&ba->a);
    es__v1__expected__init(&ba->exp);
    ba->a.stream.data = (uint8_t *)in->stream;
    ba->a.stream.len = in->stream_len ? in->stream_len : (in->stream ? strlen(in->stream) : 0);
    if (in->kind != H_NO_EXPECTED) {
        ba->exp.kind = (Es__V1__ExpectedKind)in->kind;
        ba->exp.revision = in->rev;
        ba->a.expected = &ba->exp;
    }
    size_t n = in->n;
    ba->evs = calloc(n ? n : 1, sizeof *ba->evs);
    ba->ptrs = calloc(n ? n : 1, sizeof *ba->ptrs);
    if (!ba->evs || !ba->ptrs) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        Es__V1__ProposedEvent *e = &ba->evs[i];
        es__v1__proposed_event__init(e);
        const h_ev *s = in->evs ? &in->evs[i] : NULL;
        const char *type = s && s->type ? s->type : "Test";
        e->type.data = (uint8_t *)type;
        e->type.len = s && s->type && s->type_len ? s->type_len : strlen(type);
        if (s && s->id) {
            e->id.data = (uint8_t *)s->id;
            e->id.len = s->id_len ? s->id_len : 16;
        }
        if (s && s->data) {
            e->data.data = (uint8_t *)s->data;
            e->data.len = s->data_len ? s->data_len : strlen(s->data);
        } else if (!s) {
            e->data.data = (uint8_t *)"x";
            e->data.len = 1;
        }
        if (s && s->meta) {
            e->metadata.data = (uint8_t *)s->meta;
            e->metadata.len = s->meta_len ? s->meta_len : strlen(s->meta);
        }
        ba->ptrs[i] = e;
    }
    ba->a.n_events = n;
    ba->a.events = ba->ptrs;
}

static void free_built(built_append *ba)
{
    free(ba->evs);
    free(ba->ptrs);
}

void h_put_append(hbuf *b, uint64_t id, const h_app *a)
{
    built_append ba;
    build_append(&ba, a);
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_APPEND;
    r.append = &ba.a;
    h_put_req(b, &r);
    free_built(&ba);
}

void h_put_txn(hbuf *b, uint64_t id, const h_app *apps, size_t n)
{
    built_append *bas = calloc(n ? n : 1, sizeof *bas);
    Es__V1__Append **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!bas || !ptrs) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        build_append(&bas[i], &apps[i]);
        ptrs[i] = &bas[i].a;
    }
    Es__V1__Transaction t = ES__V1__TRANSACTION__INIT;
    t.n_appends = n;
    t.appends = ptrs;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_TRANSACTION;
    r.transaction = &t;
    h_put_req(b, &r);
    for (size_t i = 0; i < n; i++) {
        free_built(&bas[i]);
    }
    free(bas);
    free(ptrs);
}

Es__V1__Response *h_append(int fd, uint64_t id, const h_app *a, int timeout_ms)
{
    hbuf b = {0};
    h_put_append(&b, id, a);
    int r = h_send_all(fd, b.p, b.len, timeout_ms);
    hbuf_free(&b);
    if (r != H_OK) {
        return NULL;
    }
    Es__V1__Response *resp = NULL;
    h_recv(fd, timeout_ms, &resp, NULL);
    return resp;
}

bool h_hello(int fd)
{
    hbuf b = {0};
    h_put_hello(&b, 1, 1);
    int r = h_send_all(fd, b.p, b.len, 5000);
    hbuf_free(&b);
    if (r != H_OK) {
        return false;
    }
    Es__V1__Response *resp = NULL;
    h_recv(fd, 5000, &resp, NULL);
    bool ok = resp && resp->kind_case == ES__V1__RESPONSE__KIND_HELLO && resp->id == 1;
    h_resp_free(resp);
    return ok;
}

int h_open(uint16_t port)
{
    int fd = h_connect(port);
    if (fd < 0) {
        return -1;
    }
    if (!h_hello(fd)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The requests in b over a fresh connection (hello first), and the first
 * reply after the HelloOk; NULL when there is none within 2 s. */
static Es__V1__Response *fresh_call(uint16_t port, hbuf *b)
{
    int fd = h_open(port);
    Es__V1__Response *resp = NULL;
    if (fd >= 0 && h_flush(fd, b, 2000) == H_OK) {
        h_recv(fd, 2000, &resp, NULL);
    }
    hbuf_free(b);
    if (fd >= 0) {
        close(fd);
    }
    return resp;
}

bool h_server_ok(uint16_t port)
{
    hbuf b = {0};
    h_put_ping(&b, 77, "alive", 5);
    Es__V1__Response *resp = fresh_call(port, &b);
    bool ok = resp && resp->kind_case == ES__V1__RESPONSE__KIND_PONG && resp->id == 77 &&
              resp->pong->payload.len == 5 && !memcmp(resp->pong->payload.data, "alive", 5);
    h_resp_free(resp);
    return ok;
}

uint64_t h_head(uint16_t port)
{
    hbuf b = {0};
    h_put_stats(&b, 5);
    Es__V1__Response *resp = fresh_call(port, &b);
    uint64_t head = UINT64_MAX;
    if (resp && resp->kind_case == ES__V1__RESPONSE__KIND_STATS) {
        head = resp->stats->head_position;
    }
    h_resp_free(resp);
    return head;
}

es_err h_code(const Es__V1__Response *r)
{
    if (r && r->kind_case == ES__V1__RESPONSE__KIND_ERROR && r->error) {
        return (es_err)r->error->code;
    }
    return ES_OK;
}

const char *h_describe(const Es__V1__Response *r)
{
    static _Thread_local char buf[320];
    if (!r) {
        return "no response (timeout or close)";
    }
    if (r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
        snprintf(buf, sizeof buf, "id=%llu error %s (%d): %s", (unsigned long long)r->id,
                 es_errname((es_err)r->error->code), (int)r->error->code,
                 r->error->message ? r->error->message : "");
    } else {
        snprintf(buf, sizeof buf, "id=%llu kind=%d", (unsigned long long)r->id, (int)r->kind_case);
    }
    return buf;
}

void h_make_id(uint8_t out[16], uint32_t tag, uint64_t n)
{
    out[0] = 0xe5;
    out[1] = 0xd0;
    out[2] = (uint8_t)(tag >> 24);
    out[3] = (uint8_t)(tag >> 16);
    out[4] = (uint8_t)(tag >> 8);
    out[5] = (uint8_t)tag;
    out[6] = 0x40;
    out[7] = 0x80;
    for (int i = 0; i < 8; i++) {
        out[8 + i] = (uint8_t)(n >> (56 - 8 * i));
    }
}

/* ------------------------------------------------------------------- HTTP -- */

#define H_MAX_HTTP (16u * 1024u * 1024u)

int h_http(uint16_t port, const char *method, const char *path, int *status, char **body)
{
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[2048];
    int n =
        snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    if (n < 0 || (size_t)n >= sizeof req || h_send_all(fd, req, (size_t)n, 10000) != H_OK) {
        close(fd);
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -1;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= H_MAX_HTTP) {
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int code = 0;
    char *hdr_end = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1 || !hdr_end) {
        free(buf);
        return -1;
    }
    *hdr_end = '\0';
    if (strcasestr(buf, "Transfer-Encoding: chunked")) {
        free(buf); /* not decoded here: the body would be wrong */
        return -1;
    }
    *status = code;
    *body = strdup(hdr_end + 4);
    free(buf);
    return *body ? 0 : -1;
}

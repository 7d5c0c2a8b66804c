/*
 * call — the request engine of the client.
 *
 * Design notes:
 *
 *  Connecting. cl_ensure() is called by every operation: when the client
 *  holds no greeted connection it makes up to reconnect_attempts attempts
 *  (TCP connect + Hello, within connect_timeout_ms each), sleeping a
 *  full-jitter backoff between them, each attempt subject to the breaker
 *  (resil.h). A Hello refused for a reason that retrying cannot fix
 *  (credentials, protocol version) ends the call at once and does not
 *  count against the breaker: the server is up.
 *
 *  Sending. A request gets the next id of a client-wide counter (never
 *  reused, so a handle from a dropped connection can never match a reply
 *  on a new one), is checked against the server's frame limit, registered
 *  in the pending table and written out. At most inflight_cap requests
 *  are unanswered at a time; beyond that the sender first reads replies.
 *
 *  Receiving. cl_on_frame() scans the frame with the pbwire primitives
 *  before protobuf-c sees it: it finds the id and the kind, checks the
 *  body against the byte cap of that request and counts the repeated
 *  elements (events of a page, results and conflicts of a transaction,
 *  streams of a listing) against what was asked for. Only then does
 *  protobuf-c unpack it, with the library's allocator. A reply for an id
 *  nobody waits for is dropped; a push goes to the queue of the
 *  subscription opened by its id (subscribe.c), which checks it there
 *  (size, number of events) with the same care. A reply that fails its
 *  checks fails its own request
 *  with ES_ERR_MALFORMED; only bytes that cannot be parsed at all drop the
 *  connection.
 *
 *  Timeouts. A request not answered within request_timeout_ms of being
 *  sent fails with ES_ERR_TIMEOUT and the connection is dropped (a peer
 *  that stopped answering cannot be told apart from a dead one, and a
 *  late reply would be meaningless); the other requests in flight fail
 *  with ES_ERR_CLOSED.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "frame.h"
#include "internal.h"
#include "pbwire.h"

void cl_resp_free(Es__V1__Response *resp)
{
    if (resp != NULL) {
        es__v1__response__free_unpacked(resp, &cl_pb_allocator);
    }
}

void cl_pending_release(es_client *c, pending *e)
{
    cl_resp_free(e->resp);
    e->resp = NULL;
    cl_buf_put(c, e->raw, e->raw_cap);
    e->raw = NULL;
}

/* ------------------------------------------------------------ receiving -- */

/* The Response kind that answers a Request kind. */
static uint32_t reply_kind_of(uint32_t req_kind)
{
    switch (req_kind) {
    case ES__V1__REQUEST__KIND_HELLO:
        return ES__V1__RESPONSE__KIND_HELLO;
    case ES__V1__REQUEST__KIND_APPEND:
        return ES__V1__RESPONSE__KIND_APPEND;
    case ES__V1__REQUEST__KIND_TRANSACTION:
        return ES__V1__RESPONSE__KIND_TRANSACTION;
    case ES__V1__REQUEST__KIND_READ_STREAM:
    case ES__V1__REQUEST__KIND_READ_ALL:
        return ES__V1__RESPONSE__KIND_READ;
    case ES__V1__REQUEST__KIND_SUBSCRIBE:
        return ES__V1__RESPONSE__KIND_SUBSCRIBED;
    case ES__V1__REQUEST__KIND_UNSUBSCRIBE:
        return ES__V1__RESPONSE__KIND_UNSUBSCRIBED;
    case ES__V1__REQUEST__KIND_STREAM_INFO:
        return ES__V1__RESPONSE__KIND_STREAM_INFO;
    case ES__V1__REQUEST__KIND_LIST_STREAMS:
        return ES__V1__RESPONSE__KIND_STREAMS;
    case ES__V1__REQUEST__KIND_SAVE_SNAPSHOT:
        return ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED;
    case ES__V1__REQUEST__KIND_LOAD_SNAPSHOT:
        return ES__V1__RESPONSE__KIND_SNAPSHOT;
    case ES__V1__REQUEST__KIND_STATS:
        return ES__V1__RESPONSE__KIND_STATS;
    case ES__V1__REQUEST__KIND_PING:
        return ES__V1__RESPONSE__KIND_PONG;
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM:
        return ES__V1__RESPONSE__KIND_STREAM_DELETED;
    case ES__V1__REQUEST__KIND_SET_STREAM_METADATA:
    case ES__V1__REQUEST__KIND_GET_STREAM_METADATA:
        return ES__V1__RESPONSE__KIND_STREAM_METADATA;
    case ES__V1__REQUEST__KIND_ERASE_STREAM:
    case ES__V1__REQUEST__KIND_ERASE_SUBJECT:
        return ES__V1__RESPONSE__KIND_ERASED;
    case ES__V1__REQUEST__KIND_CREATE_GROUP:
    case ES__V1__REQUEST__KIND_UPDATE_GROUP:
    case ES__V1__REQUEST__KIND_DELETE_GROUP:
    case ES__V1__REQUEST__KIND_GROUP_ACK:
    case ES__V1__REQUEST__KIND_GROUP_NACK:
    case ES__V1__REQUEST__KIND_REPLAY_PARKED:
        return ES__V1__RESPONSE__KIND_GROUP_DONE;
    case ES__V1__REQUEST__KIND_LIST_GROUPS:
        return ES__V1__RESPONSE__KIND_GROUPS;
    case ES__V1__REQUEST__KIND_GROUP_INFO:
        return ES__V1__RESPONSE__KIND_GROUP_STATE;
    case ES__V1__REQUEST__KIND_JOIN_GROUP:
        return ES__V1__RESPONSE__KIND_GROUP_JOINED;
    case ES__V1__REQUEST__KIND_LIST_PARKED:
        return ES__V1__RESPONSE__KIND_PARKED;
    default:
        return 0;
    }
}

/* Count the occurrences of field `number` in a message, and, when
 * inner_cap is set, check every such element to have at most inner_cap
 * fields. @return ES_OK or ES_ERR_MALFORMED. */
static es_err count_field(const uint8_t *p, size_t len, uint32_t number, uint32_t inner_cap,
                          uint64_t *count)
{
    const uint8_t *end = p + len;
    *count = 0;
    for (;;) {
        pbw_field f;
        es_err rv = pbw_next(&p, end, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            return ES_OK;
        }
        if (rv != ES_OK) {
            return rv;
        }
        if (f.number != number) {
            continue;
        }
        (*count)++;
        if (inner_cap != 0 && f.wire == PBW_WIRE_LEN) {
            const uint8_t *q = f.data;
            uint32_t fields = 0;
            pbw_field g;
            while ((rv = pbw_next(&q, f.data + f.len, &g)) == ES_OK) {
                if (++fields > inner_cap) {
                    return ES_ERR_MALFORMED;
                }
            }
            if (rv != ES_ERR_NOT_FOUND) {
                return rv;
            }
        }
    }
}

/* Check a reply's repeated elements against what its request allows. */
static es_err check_items(const pending *e, uint32_t kind, const uint8_t *data, size_t len)
{
    uint64_t n = 0;
    es_err rv = ES_OK;
    switch (kind) {
    case ES__V1__RESPONSE__KIND_ERROR: {
        /* Conflicts: one per append of the request; a few for others. */
        bool appends =
            e->kind == ES__V1__REQUEST__KIND_APPEND || e->kind == ES__V1__REQUEST__KIND_TRANSACTION;
        uint32_t cap = appends ? e->max_items : 16;
        rv = count_field(data, len, 3, 16, &n);
        if (rv == ES_OK && n > cap) {
            rv = ES_ERR_MALFORMED;
        }
        break;
    }
    case ES__V1__RESPONSE__KIND_TRANSACTION:
    case ES__V1__RESPONSE__KIND_STREAMS:
    case ES__V1__RESPONSE__KIND_GROUPS:
    case ES__V1__RESPONSE__KIND_PARKED:
        rv = count_field(data, len, 1, CL_MAX_EVENT_FIELDS, &n);
        if (rv == ES_OK && n > e->max_items) {
            rv = ES_ERR_MALFORMED;
        }
        break;
    case ES__V1__RESPONSE__KIND_READ:
        rv = count_field(data, len, 1, CL_MAX_EVENT_FIELDS, &n);
        if (rv == ES_OK && n > e->max_items) {
            rv = ES_ERR_MALFORMED;
        }
        break;
    default:
        break;
    }
    return rv;
}

uint8_t *cl_buf_get(es_client *c, uint32_t need, uint32_t *cap)
{
    if (c->spare != NULL && c->spare_cap >= need) {
        uint8_t *b = c->spare;
        *cap = c->spare_cap;
        c->spare = NULL;
        c->spare_cap = 0;
        return b;
    }
    uint8_t *b = cl_malloc(need ? need : 1);
    *cap = b != NULL ? (need ? need : 1) : 0;
    return b;
}

void cl_buf_put(es_client *c, uint8_t *buf, uint32_t cap)
{
    if (buf == NULL) {
        return;
    }
    if (c == NULL || cap <= c->spare_cap) {
        cl_free(buf);
        return;
    }
    cl_free(c->spare);
    c->spare = buf;
    c->spare_cap = cap;
}

es_err cl_on_frame(es_client *c, uint8_t *body, uint32_t len, uint32_t cap, bool *taken)
{
    *taken = false;
    /* Scan the top level: the id (field 1) and the kind (the oneof field,
     * 9..63, last one wins as in protobuf). */
    const uint8_t *p = body, *end = body + len;
    uint64_t id = 0;
    uint32_t kind = 0;
    const uint8_t *kdata = NULL;
    size_t klen = 0;
    uint32_t fields = 0;
    for (;;) {
        pbw_field f;
        es_err rv = pbw_next(&p, end, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            break;
        }
        if (rv != ES_OK) {
            return ES_ERR_MALFORMED;
        }
        if (++fields > CL_MAX_EVENT_FIELDS) {
            return ES_ERR_MALFORMED;
        }
        if (f.number == 1 && f.wire == PBW_WIRE_VARINT) {
            id = f.varint;
        } else if (f.number >= 9 && f.number <= 63 && f.wire == PBW_WIRE_LEN) {
            kind = f.number;
            kdata = f.data;
            klen = f.len;
        }
    }

    if (kind == ES__V1__RESPONSE__KIND_EVENTS || kind == ES__V1__RESPONSE__KIND_CAUGHT_UP ||
        kind == ES__V1__RESPONSE__KIND_DROPPED) {
        /* Subscription pushes: queued on their subscription (subscribe.c),
         * delivered by es_sub_poll(). */
        if (id == 0) {
            c->pushes_dropped++;
            return ES_OK;
        }
        cl_sub_on_push(c, id, kind, kdata, klen);
        return ES_OK;
    }
    if (kind == ES__V1__RESPONSE__KIND_GROUP_EVENTS || kind == ES__V1__RESPONSE__KIND_GROUP_LEFT ||
        kind == ES__V1__RESPONSE__KIND_GROUP_REVOKED) {
        /* Consumer-group pushes: queued on their member (group.c). */
        cl_group_on_push(c, id, kind, kdata, klen);
        return ES_OK;
    }

    if (id == 0) {
        /* A connection-level error (e.g. shutting down): keep its message
         * for the report of the close that follows. */
        if (kind == ES__V1__RESPONSE__KIND_ERROR && len <= CL_SMALL_REPLY_CAP) {
            Es__V1__Response *r = es__v1__response__unpack(&cl_pb_allocator, len, body);
            if (r != NULL && r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
                snprintf(c->notice, sizeof(c->notice), "%s: %s", es_errname((es_err)r->error->code),
                         r->error->message ? r->error->message : "");
            }
            cl_resp_free(r);
        }
        c->replies_dropped++;
        return ES_OK;
    }

    pending *e = ptable_get(&c->pending, id);
    if (e == NULL || e->state != PENDING_WAITING) {
        c->replies_dropped++;
        return ES_OK;
    }
    e->state = PENDING_DONE;
    c->in_flight--;

    if (len > e->reply_cap) {
        e->err = ES_ERR_MALFORMED;
    } else if (kind != 0 && !(e->want_raw && kind == ES__V1__RESPONSE__KIND_READ) &&
               check_items(e, kind, kdata, klen) != ES_OK) {
        /* (A raw page is counted by its reader and decoded in place, one
         * event at a time: no allocation depends on its contents.) */
        e->err = ES_ERR_MALFORMED;
    } else if (e->want_raw && kind == ES__V1__RESPONSE__KIND_READ) {
        /* The frame itself becomes the page: its events are decoded in
         * place later, without a copy. */
        *taken = true;
        e->raw = body;
        e->raw_cap = cap;
        e->raw_off = (uint32_t)(kdata - body);
        e->raw_len = (uint32_t)klen;
    } else {
        e->resp = es__v1__response__unpack(&cl_pb_allocator, len, body);
        if (e->resp == NULL) {
            e->err = ES_ERR_MALFORMED;
        }
    }
    if (e->abandoned) {
        cl_pending_release(c, e);
        ptable_del(&c->pending, id);
        c->replies_dropped++;
    }
    return ES_OK;
}

/* -------------------------------------------------------------- sending -- */

static es_err submit(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
                     bool want_raw, uint64_t *id);

es_err cl_submit(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
                 uint64_t *id)
{
    return submit(c, req, max_items, reply_cap, false, id);
}

static es_err submit(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
                     bool want_raw, uint64_t *id)
{
    if (c->fd < 0) {
        return cl_fail(c, ES_ERR_CLOSED, "not connected");
    }
    /* The id is part of the encoding: set it before measuring. */
    req->id = c->next_id + 1;
    size_t size = es__v1__request__get_packed_size(req);
    if (size > c->send_cap) {
        return cl_fail(c, ES_ERR_TOO_LARGE,
                       "request of %zu bytes exceeds the server's frame limit of %u bytes", size,
                       c->send_cap);
    }

    /* Respect the cap on requests in flight: read replies until one is
     * answered. */
    while (c->in_flight >= c->inflight_cap) {
        es_err rv = conn_pump(c, cl_mono_us() + (uint64_t)c->opts.request_timeout_ms * 1000);
        if (rv == ES_ERR_TIMEOUT) {
            conn_drop(c, ES_ERR_CLOSED, "no reply within %u ms: connection dropped",
                      c->opts.request_timeout_ms);
            return ES_ERR_TIMEOUT;
        }
        if (rv != ES_OK) {
            return rv;
        }
    }

    uint8_t *buf = cl_malloc(FRAME_HEADER_BYTES + size);
    if (buf == NULL) {
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a request of %zu bytes", size);
    }
    /* Waiting above may not send anything, so the id is still free. */
    c->next_id = req->id;
    frame_write_header(buf, (uint32_t)size);
    es__v1__request__pack(req, buf + FRAME_HEADER_BYTES);

    pending *e = NULL;
    es_err rv = ptable_add(&c->pending, req->id, &e);
    if (rv != ES_OK) {
        cl_free(buf);
        return cl_fail(c, rv, "no memory for the request table");
    }
    uint64_t now = cl_mono_us();
    uint64_t timeout = c->ready ? c->opts.request_timeout_ms : c->opts.connect_timeout_ms;
    e->kind = (uint32_t)req->kind_case;
    e->state = PENDING_WAITING;
    e->max_items = max_items;
    e->reply_cap = reply_cap;
    e->want_raw = want_raw;
    e->deadline_us = now + timeout * 1000;
    c->in_flight++;

    rv = conn_send(c, buf, FRAME_HEADER_BYTES + size, e->deadline_us);
    cl_free(buf);
    if (rv != ES_OK) {
        /* conn_drop completed the entry; the caller gets the error here. */
        e = ptable_get(&c->pending, req->id);
        if (e != NULL) {
            cl_pending_release(c, e);
            ptable_del(&c->pending, req->id);
        }
        return rv;
    }
    *id = req->id;
    return ES_OK;
}

/* Copy the Error of a reply into the client's last-failure state. */
static es_err take_error(es_client *c, const Es__V1__Error *err)
{
    es_err code = (es_err)err->code;
    if (code == ES_OK) {
        code = ES_ERR_INTERNAL;
    }
    if (err->message != NULL && err->message[0] != '\0') {
        cl_fail(c, code, "%s", err->message);
    } else {
        cl_fail(c, code, "%s", es_strerror(code));
    }
    if (err->n_conflicts == 0) {
        return code;
    }
    es_conflict *cs = cl_calloc(err->n_conflicts, sizeof(*cs));
    if (cs == NULL) {
        return code;
    }
    size_t n = 0;
    for (size_t i = 0; i < err->n_conflicts; i++) {
        const Es__V1__FailedCheck *fc = err->conflicts[i];
        char *s = cl_strndup((const char *)fc->stream.data, fc->stream.len);
        if (s == NULL) {
            break;
        }
        cs[n].stream = s;
        if (fc->expected != NULL) {
            cs[n].expected.kind = (es_expected_kind)fc->expected->kind;
            cs[n].expected.revision = fc->expected->revision;
        }
        if (fc->actual != NULL) {
            cs[n].actual_exists = fc->actual->exists;
            cs[n].actual_revision = fc->actual->revision;
        }
        n++;
    }
    c->conflicts = cs;
    c->n_conflicts = n;
    return code;
}

/* cl_wait, and for a read sent with want_raw its bytes in *raw. */
static es_err wait_reply(es_client *c, uint64_t id, Es__V1__Response **resp, cl_page *raw)
{
    *resp = NULL;
    for (;;) {
        pending *e = ptable_get(&c->pending, id);
        if (e == NULL) {
            return cl_fail(c, ES_ERR_NOT_FOUND, "unknown request handle %llu",
                           (unsigned long long)id);
        }
        if (e->state == PENDING_DONE) {
            Es__V1__Response *r = e->resp;
            es_err err = e->err;
            uint32_t want = reply_kind_of(e->kind);
            if (e->raw != NULL) {
                raw->buf = e->raw;
                raw->cap = e->raw_cap;
                raw->data = e->raw + e->raw_off;
                raw->len = e->raw_len;
                e->raw = NULL;
                ptable_del(&c->pending, id);
                return ES_OK;
            }
            ptable_del(&c->pending, id);
            if (r == NULL) {
                switch (err) {
                case ES_ERR_MALFORMED:
                    return cl_fail(c, err, "the server's reply broke the protocol");
                case ES_ERR_CLOSED:
                case ES_ERR_TOO_LARGE:
                    /* conn_drop's message explains the loss. */
                    return err;
                default:
                    return cl_fail(c, err, "%s", es_strerror(err));
                }
            }
            if (r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
                es_err code = take_error(c, r->error);
                cl_resp_free(r);
                return code;
            }
            if ((uint32_t)r->kind_case != want) {
                cl_resp_free(r);
                return cl_fail(c, ES_ERR_MALFORMED,
                               "the server answered with a reply of another kind");
            }
            *resp = r;
            return ES_OK;
        }
        if (c->fd < 0) {
            /* Cannot happen: a drop completes every waiting entry. */
            e->state = PENDING_DONE;
            e->err = ES_ERR_CLOSED;
            continue;
        }
        uint64_t deadline = e->deadline_us;
        if (cl_mono_us() >= deadline) {
            e->state = PENDING_DONE;
            e->err = ES_ERR_TIMEOUT;
            c->in_flight--;
            ptable_del(&c->pending, id);
            conn_drop(c, ES_ERR_CLOSED, "a reply did not come in time: connection dropped");
            return cl_fail(c, ES_ERR_TIMEOUT, "no reply within the request timeout");
        }
        (void)conn_pump(c, deadline);
    }
}

/* ----------------------------------------------------------- connecting -- */

static uint32_t nonzero_min(uint32_t a, uint32_t b)
{
    if (a == 0) {
        return b;
    }
    if (b == 0) {
        return a;
    }
    return a < b ? a : b;
}

static uint32_t clamp_frame(uint32_t v)
{
    if (v == 0) {
        return FRAME_DEFAULT_MAX_BODY;
    }
    return v > FRAME_HARD_MAX_BODY ? FRAME_HARD_MAX_BODY : v;
}

static void copy_cstr(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

/* One attempt: connect, Hello, HelloOk. */
static es_err connect_once(es_client *c)
{
    uint64_t deadline = cl_mono_us() + (uint64_t)c->opts.connect_timeout_ms * 1000;
    c->recv_cap = clamp_frame(c->opts.max_frame_bytes);
    c->send_cap = FRAME_DEFAULT_MAX_BODY;
    c->inflight_cap = 1;
    c->ready = false;

    es_err rv = conn_open(c, deadline);
    if (rv != ES_OK) {
        return rv;
    }

    Es__V1__Hello hello = ES__V1__HELLO__INIT;
    hello.protocol_version = ES_PROTOCOL_VERSION;
    hello.client_name = c->client_name ? c->client_name : (char *)"";
    hello.user = c->user ? c->user : (char *)"";
    hello.token.data = c->token;
    hello.token.len = c->opts.token_len;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_HELLO;
    req.hello = &hello;

    uint64_t id = 0;
    rv = cl_submit(c, &req, 0, CL_SMALL_REPLY_CAP, &id);
    if (rv != ES_OK) {
        conn_drop(c, ES_ERR_CLOSED, "%s", c->errmsg);
        return rv;
    }
    /* The Hello's entry carries the connect deadline. */
    pending *e = ptable_get(&c->pending, id);
    if (e != NULL && e->deadline_us > deadline) {
        e->deadline_us = deadline;
    }
    Es__V1__Response *resp = NULL;
    rv = cl_wait(c, id, &resp);
    if (rv != ES_OK) {
        if (c->fd >= 0) {
            char msg[CL_ERRMSG_BYTES];
            snprintf(msg, sizeof(msg), "%s", c->errmsg);
            conn_drop(c, ES_ERR_CLOSED, "hello refused");
            cl_fail(c, rv, "%s", msg);
        }
        return rv;
    }
    const Es__V1__HelloOk *ok = resp->hello;
    if (ok->protocol_version != ES_PROTOCOL_VERSION) {
        uint32_t v = ok->protocol_version;
        cl_resp_free(resp);
        conn_drop(c, ES_ERR_CLOSED, "unsupported protocol version");
        return cl_fail(c, ES_ERR_UNSUPPORTED_VERSION,
                       "the server speaks protocol version %u, this library %u", v,
                       ES_PROTOCOL_VERSION);
    }

    es_server_info *in = &c->info;
    memset(in, 0, sizeof(*in));
    in->protocol_version = ok->protocol_version;
    copy_cstr(in->server_version, sizeof(in->server_version), ok->server_version);
    copy_cstr(in->role, sizeof(in->role), ok->role);
    if (ok->limits != NULL) {
        in->limits.max_frame_bytes = ok->limits->max_frame_bytes;
        in->limits.max_events_per_append = ok->limits->max_events_per_append;
        in->limits.max_event_bytes = ok->limits->max_event_bytes;
        in->limits.max_page_size = ok->limits->max_page_size;
        in->limits.max_in_flight = ok->limits->max_in_flight;
        in->limits.max_appends_per_transaction = ok->limits->max_appends_per_transaction;
    }
    in->sync_mode =
        ok->sync_mode == ES__V1__SYNC_MODE__SYNC_MODE_NONE ? ES_SYNC_NONE : ES_SYNC_FULL;
    if (ok->store_id.len == ES_UUID_BYTES) {
        memcpy(in->store_id, ok->store_id.data, ES_UUID_BYTES);
        in->store_id_len = ES_UUID_BYTES;
    }
    cl_resp_free(resp);
    c->have_info = true;

    c->send_cap = clamp_frame(in->limits.max_frame_bytes);
    c->recv_cap =
        clamp_frame(c->opts.max_frame_bytes ? c->opts.max_frame_bytes : in->limits.max_frame_bytes);
    c->inflight_cap = nonzero_min(c->opts.max_in_flight, in->limits.max_in_flight);
    if (c->inflight_cap == 0) {
        c->inflight_cap = CL_DEFAULT_IN_FLIGHT;
    }
    c->ready = true;
    c->epoch++;
    return ES_OK;
}

/* Refusals that retrying cannot fix; the server is reachable. */
static bool is_refusal(es_err rv)
{
    switch (rv) {
    case ES_ERR_UNAUTHENTICATED:
    case ES_ERR_PERMISSION_DENIED:
    case ES_ERR_UNSUPPORTED_VERSION:
    case ES_ERR_INVALID_ARGUMENT:
    case ES_ERR_NO_MEMORY:
        return true;
    default:
        return false;
    }
}

es_err cl_ensure(es_client *c)
{
    if (c->ready && c->fd >= 0) {
        /* Notice a connection the server closed while we were idle (and
         * take in any reply already there), so that the call reconnects
         * instead of failing on a dead socket. One poll() with no wait. */
        (void)conn_pump(c, 0);
        if (c->ready && c->fd >= 0) {
            return ES_OK;
        }
    }
    if (c->fd >= 0) {
        conn_drop(c, ES_ERR_CLOSED, "stale connection dropped");
    }
    uint32_t attempts = c->opts.reconnect_attempts ? c->opts.reconnect_attempts : 1;
    uint32_t made = 0;
    char cause[CL_ERRMSG_BYTES] = "";
    for (uint32_t a = 0; a < attempts; a++) {
        if (a > 0) {
            uint64_t d =
                backoff_delay_us((uint64_t)c->opts.backoff_initial_ms * 1000,
                                 (uint64_t)c->opts.backoff_max_ms * 1000, a - 1, rng_next(&c->rng));
            c->sleep(c->hook_ctx, d);
        }
        uint64_t wait_us = 0;
        if (!breaker_allow(&c->br, c->clock(c->hook_ctx), &wait_us)) {
            if (made == 0) {
                return cl_fail(c, ES_ERR_CIRCUIT_OPEN,
                               "circuit breaker open after %u consecutive connection failures; "
                               "next trial in %llu ms",
                               c->br.failures, (unsigned long long)((wait_us + 999) / 1000));
            }
            break;
        }
        made++;
        c->connect_attempts++;
        es_err rv = connect_once(c);
        if (rv == ES_OK) {
            breaker_on_success(&c->br);
            return ES_OK;
        }
        if (is_refusal(rv)) {
            breaker_on_success(&c->br);
            return rv;
        }
        snprintf(cause, sizeof(cause), "%s", c->errmsg);
        if (breaker_on_failure(&c->br, c->clock(c->hook_ctx))) {
            break;
        }
    }
    if (c->br.state == ES_BREAKER_OPEN) {
        return cl_fail(c, ES_ERR_CONNECTION,
                       "cannot connect to %s: %s (%u attempt%s; circuit breaker now open)",
                       c->address, cause, made, made == 1 ? "" : "s");
    }
    return cl_fail(c, ES_ERR_CONNECTION, "cannot connect to %s: %s (%u attempt%s)", c->address,
                   cause, made, made == 1 ? "" : "s");
}

es_err cl_wait(es_client *c, uint64_t id, Es__V1__Response **resp)
{
    cl_page raw = {0};
    return wait_reply(c, id, resp, &raw); /* no entry of cl_submit wants raw */
}

es_err cl_call(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
               Es__V1__Response **resp)
{
    *resp = NULL;
    es_err rv = cl_ensure(c);
    if (rv != ES_OK) {
        return rv;
    }
    uint64_t id = 0;
    rv = cl_submit(c, req, max_items, reply_cap, &id);
    if (rv != ES_OK) {
        return rv;
    }
    return cl_wait(c, id, resp);
}

es_err cl_submit_read(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
                      uint64_t *id)
{
    return submit(c, req, max_items, reply_cap, true, id);
}

void cl_abandon(es_client *c, uint64_t id)
{
    pending *e = ptable_get(&c->pending, id);
    if (e == NULL) {
        return;
    }
    if (e->state == PENDING_DONE) {
        cl_pending_release(c, e);
        ptable_del(&c->pending, id);
    } else {
        e->abandoned = true;
    }
}

es_err cl_wait_read(es_client *c, uint64_t id, cl_page *page)
{
    memset(page, 0, sizeof *page);
    Es__V1__Response *resp = NULL;
    es_err rv = wait_reply(c, id, &resp, page);
    if (rv == ES_OK && page->buf == NULL) {
        /* A successful reply of the read kind always arrives raw. */
        cl_resp_free(resp);
        return cl_fail(c, ES_ERR_MALFORMED, "the server answered with a reply of another kind");
    }
    return rv;
}

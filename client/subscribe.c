/*
 * subscribe — catch-up subscriptions on the client's connection: history,
 * then a caught-up notification, then live events, pushed by esd; resumed
 * after a lost connection strictly after the last event delivered.
 *
 * Design notes
 * ------------
 * Pushes and callbacks are decoupled. A push (EventsBatch, CaughtUp,
 * SubscriptionDropped) carries the id of the Subscribe request that opened
 * the subscription; whichever call happens to be reading the connection (an
 * append waiting for its reply, a read, es_sub_poll itself) hands it to
 * cl_sub_on_push, which only checks it and appends a copy to that
 * subscription's queue. The application's callbacks run only in
 * es_sub_poll, after the read returned, so a callback may itself append,
 * read or close the connection without re-entering the frame reader.
 *
 *   conn_pump ─▶ cl_on_frame ─▶ cl_sub_on_push ─▶ queue ─▶ es_sub_poll ─▶ on_batch
 *                 (any call)      (checks, copies)          (decodes)     on_caught_up
 *
 * Bounded memory. A push is a frame, capped like every frame on the header
 * (conn.c). Its events are counted before it is queued, against the batch
 * size asked for (or the server's page size): no more events than that are
 * ever decoded. A queue holds at most CL_SUB_QUEUE_BYTES beyond its first
 * item; when a push would exceed that (the application polls another
 * subscription, or keeps the connection busy with requests, while this one
 * streams), the subscription stops queueing: it discards every further
 * push of that server-side subscription, delivers what it holds, then
 * unsubscribes it and subscribes again strictly after the last event
 * delivered. A slow consumer therefore costs a bounded queue and a
 * resubscription, never unbounded buffering (the server, for its part,
 * stops pushing when its output for the connection is above half of its
 * --max-output-bytes).
 *
 * Exactly once, in order. The subscription remembers the last point it
 * delivered (a revision for a one-stream subscription, a position
 * otherwise) and counts a batch as delivered only when on_batch returned 0.
 * Every (re)subscription asks for events strictly after that point: after
 * a reconnect (a connection epoch that changed), after a discarded queue,
 * after a bad push. Before anything was delivered the point is the start:
 * from_start, the `after` given, or for ES_SUB_FROM_END the head_position
 * of the first SubscribeOk (for a one-stream subscription, whose points are
 * revisions, the stream's last revision is read just before subscribing).
 * As a second line of defence, decoding drops any event at or below that
 * point, and for the gapless target (one stream) a batch that does not
 * continue at exactly point + 1 is refused as malformed and fetched again
 * by a resubscription. The whole log is not gapless: deleted and expired
 * events leave holes in it (docs/lifecycle.md), so there positions must
 * only rise.
 *
 * Liveness. The server exempts connections with subscriptions from its
 * idle timeout, and a quiet live subscription receives nothing, so a peer
 * that vanished without a FIN would never be noticed: after
 * request_timeout_ms without a push, es_sub_poll sends a Ping; a reply
 * that does not come in time drops the connection and the subscription
 * resumes on a new one.
 *
 * A subscription is also tied to the store it was opened on (the store id
 * of the HelloOk): reconnecting to a server with another store id closes it
 * with ES_ERR_INCOMPATIBLE_STORE, since its positions mean nothing there.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"
#include "pbwire.h"
#include "validate.h"

/* Cap on the events of one push when the server stated no page size. */
#define SUB_FALLBACK_PAGE 65536u
/* Room for a SubscriptionDropped message kept for es_client_errmsg(). */
#define SUB_MSG_BYTES 256u

/* One undelivered push. */
typedef struct sub_item {
    struct sub_item *next;
    uint32_t kind;  /* ES__V1__RESPONSE__KIND_EVENTS, _CAUGHT_UP, _DROPPED */
    uint32_t n;     /* EVENTS: the events in data */
    uint64_t value; /* CAUGHT_UP: the position; DROPPED: the reason */
    size_t len;
    uint8_t data[]; /* EVENTS: the EventsBatch message; DROPPED: its text */
} sub_item;

struct es_subscription {
    es_client *c;                 /* NULL once the client was destroyed */
    struct es_subscription *next; /* the client's list */

    /* what to follow, and whom to tell */
    es_sub_target target;
    char *name; /* NULL for ES_SUB_ALL */
    uint32_t batch_size;
    es_sub_batch_fn on_batch;
    es_sub_caught_up_fn on_caught_up;
    void *ctx;

    /* the last delivered point (before any delivery: the start point) */
    bool has_last;
    uint64_t last;
    bool from_end; /* ES_SUB_FROM_END not resolved yet (no SubscribeOk so far) */

    /* the server-side subscription */
    uint64_t id;         /* the Subscribe request's id; 0: none */
    uint64_t epoch;      /* the connection (c->epoch) it lives on */
    bool discard;        /* drop its pushes; resubscribe at the next poll */
    uint64_t last_rx_us; /* last push (or subscription): the heartbeat's clock */
    uint8_t store_id[ES_UUID_BYTES];
    bool have_store_id;

    es_err pending; /* a bad push, reported once by the next poll */
    char pending_msg[SUB_MSG_BYTES];
    bool caught_up; /* caught up at least once */
    es_err closed;  /* ES_OK while open; why it ended */
    char closed_msg[CL_ERRMSG_BYTES];

    /* undelivered pushes, oldest first */
    sub_item *head, *tail;
    size_t queued; /* bytes held by the queue */

    /* delivery buffers, reused: one batch's events and their strings */
    es_recorded_event *evs;
    size_t evs_cap; /* bytes */
    char *strs;
    size_t strs_cap;
};

/* -------------------------------------------------------------- helpers -- */

static bool attached(const es_subscription *s)
{
    const es_client *c = s->c;
    return c != NULL && c->fd >= 0 && c->ready && s->id != 0 && s->epoch == c->epoch;
}

static es_subscription *find_sub(es_client *c, uint64_t id)
{
    for (es_subscription *s = c->subs; s != NULL; s = s->next) {
        if (s->id == id) {
            return s;
        }
    }
    return NULL;
}

static void unlink_sub(es_client *c, es_subscription *s)
{
    for (es_subscription **pp = &c->subs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->next = NULL;
}

static void pop_item(es_subscription *s)
{
    sub_item *it = s->head;
    s->head = it->next;
    if (s->head == NULL) {
        s->tail = NULL;
    }
    s->queued -= sizeof(*it) + it->len;
    cl_free(it);
}

static void clear_queue(es_subscription *s)
{
    while (s->head != NULL) {
        pop_item(s);
    }
}

/* The most events one push may carry: what was asked for, within the
 * server's page size (the server caps the batch at its page size). */
static uint32_t push_cap(const es_subscription *s)
{
    uint32_t page = s->c->info.limits.max_page_size;
    if (page == 0) {
        page = SUB_FALLBACK_PAGE;
    }
    return s->batch_size != 0 && s->batch_size < page ? s->batch_size : page;
}

/* End the subscription for good; @return reason (message recorded). */
static es_err close_sub(es_subscription *s, es_err reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static es_err close_sub(es_subscription *s, es_err reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->closed_msg, sizeof(s->closed_msg), fmt, ap);
    va_end(ap);
    s->closed = reason;
    s->id = 0;
    s->discard = false;
    clear_queue(s);
    return s->c != NULL ? cl_fail(s->c, reason, "%s", s->closed_msg) : reason;
}

/* A push that breaks the rules: drop it and everything after it, report it
 * once, resubscribe after the last delivered event. */
static void bad_push(es_client *c, es_subscription *s, const char *what)
{
    c->pushes_dropped++;
    s->discard = true;
    if (s->pending == ES_OK) {
        s->pending = ES_ERR_MALFORMED;
        snprintf(s->pending_msg, sizeof(s->pending_msg), "the server pushed %s", what);
    }
}

/* ------------------------------------------------------------- queueing -- */

void cl_sub_on_push(es_client *c, uint64_t id, uint32_t kind, const uint8_t *data, size_t len)
{
    es_subscription *s = find_sub(c, id);
    if (s == NULL || s->discard || s->closed != ES_OK) {
        c->pushes_dropped++;
        return;
    }
    const uint8_t *keep = NULL; /* the bytes to queue */
    size_t keep_len = 0;
    uint64_t value = 0;
    uint32_t n = 0;
    if (kind == ES__V1__RESPONSE__KIND_EVENTS) {
        /* Count the events (field 1) before anything else: at most the
         * batch asked for. Their insides are checked when decoded. */
        const uint8_t *p = data, *end = data + len;
        uint32_t cap = push_cap(s);
        for (;;) {
            pbw_field f;
            es_err rv = pbw_next(&p, end, &f);
            if (rv == ES_ERR_NOT_FOUND) {
                break;
            }
            if (rv != ES_OK || (f.number == 1 && f.wire != PBW_WIRE_LEN)) {
                bad_push(c, s, "an undecodable batch of events");
                return;
            }
            if (f.number == 1 && ++n > cap) {
                bad_push(c, s, "more events in one batch than asked for");
                return;
            }
        }
        keep = data;
        keep_len = len;
        /* Beyond the cap (and beyond one item), stop queueing: the
         * subscription resubscribes once its queue is delivered. */
        if (s->head != NULL && s->queued + sizeof(sub_item) + len > c->sub_queue_cap) {
            c->pushes_dropped++;
            s->discard = true;
            return;
        }
    } else if (kind == ES__V1__RESPONSE__KIND_CAUGHT_UP) {
        es_err rv = pbw_find_varint(data, len, 1, &value);
        if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
            bad_push(c, s, "an undecodable caught-up notification");
            return;
        }
    } else {
        const uint8_t *msg = NULL;
        size_t msg_len = 0;
        es_err rv = pbw_find_varint(data, len, 1, &value);
        if (rv == ES_OK || rv == ES_ERR_NOT_FOUND) {
            rv = pbw_find_bytes(data, len, 2, &msg, &msg_len);
        }
        if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
            bad_push(c, s, "an undecodable SubscriptionDropped");
            return;
        }
        keep = msg;
        keep_len = msg_len < SUB_MSG_BYTES - 1 ? msg_len : SUB_MSG_BYTES - 1;
    }

    sub_item *it = cl_malloc(sizeof(*it) + keep_len);
    if (it == NULL) {
        /* Nothing lost: the events come again after a resubscription. */
        c->pushes_dropped++;
        s->discard = true;
        return;
    }
    it->next = NULL;
    it->kind = kind;
    it->n = n;
    it->value = value;
    it->len = keep_len;
    if (keep_len > 0) {
        memcpy(it->data, keep, keep_len);
    }
    if (s->tail != NULL) {
        s->tail->next = it;
    } else {
        s->head = it;
    }
    s->tail = it;
    s->queued += sizeof(*it) + keep_len;
    s->last_rx_us = cl_mono_us();
}

void cl_subs_detach(es_client *c)
{
    while (c->subs != NULL) {
        es_subscription *s = c->subs;
        c->subs = s->next;
        s->next = NULL;
        s->c = NULL;
        s->id = 0;
    }
}

/* ------------------------------------------------------------- decoding -- */

/* Make a reusable buffer at least `need` bytes (contents not kept).
 * @return false when out of memory (the old buffer stays). */
static bool grow(void *bufp, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return true;
    }
    void *p = cl_malloc(need);
    if (p == NULL) {
        return false;
    }
    void *old;
    memcpy(&old, bufp, sizeof(old));
    cl_free(old);
    memcpy(bufp, &p, sizeof(p));
    *cap = need;
    return true;
}

/* Decode a queued batch into s->evs, dropping events at or below the last
 * delivered point and checking the order.
 * @return ES_OK with *n events; ES_ERR_MALFORMED (an invalid event, events
 *   out of order, or a gap in a gapless target); ES_ERR_NO_MEMORY. */
static es_err decode_batch(es_subscription *s, const sub_item *it, size_t *n)
{
    es_client *c = s->c;
    *n = 0;
    /* The strings of an event are at most its bytes plus three NULs. */
    size_t ev_bytes = (size_t)it->n * sizeof(*s->evs);
    if (!grow(&s->evs, &s->evs_cap, ev_bytes) ||
        !grow(&s->strs, &s->strs_cap, it->len + 3 * (size_t)it->n + 1)) {
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory to decode a batch of %u events", it->n);
    }
    bool stream = s->target == ES_SUB_STREAM;
    /* The whole log has holes where deleted or expired events are left out
     * (docs/lifecycle.md): only a stream's revisions are gapless. */
    bool gapless = stream;
    bool has_prev = s->has_last;
    uint64_t prev = s->last;
    const uint8_t *p = it->data, *end = it->data + it->len;
    char *sp = s->strs;
    size_t k = 0;
    for (;;) {
        pbw_field f;
        es_err rv = pbw_next(&p, end, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            break;
        }
        if (rv != ES_OK || k >= it->n) {
            return cl_fail(c, ES_ERR_MALFORMED, "the server pushed an undecodable batch");
        }
        if (f.number != 1) {
            continue;
        }
        es_recorded_event *e = &s->evs[k];
        if (!cl_parse_event(f.data, f.len, e, &sp)) {
            return cl_fail(c, ES_ERR_MALFORMED, "the server pushed an invalid event");
        }
        uint64_t key = stream ? e->revision : e->position;
        if (has_prev && key <= prev) {
            continue; /* delivered already: never twice */
        }
        uint64_t want = has_prev ? prev + 1 : (stream ? 0 : 1);
        if (gapless && key != want) {
            return cl_fail(c, ES_ERR_MALFORMED,
                           "the server pushed %s %llu where %llu was due (a gap): "
                           "resubscribing after %llu",
                           stream ? "revision" : "position", (unsigned long long)key,
                           (unsigned long long)want, (unsigned long long)prev);
        }
        prev = key;
        has_prev = true;
        k++;
    }
    *n = k;
    return ES_OK;
}

/* ------------------------------------------------------- the server side -- */

/* Errors of a Subscribe reply that a later attempt may not meet. */
static bool transient(es_err rv)
{
    switch (rv) {
    case ES_ERR_CLOSED:
    case ES_ERR_TIMEOUT:
    case ES_ERR_CONNECTION:
    case ES_ERR_CIRCUIT_OPEN:
    case ES_ERR_SHUTTING_DOWN:
    case ES_ERR_BUSY:
    case ES_ERR_NO_MEMORY:
    case ES_ERR_TOO_MANY_REQUESTS:
    case ES_ERR_IO:
    case ES_ERR_INTERNAL:
    case ES_ERR_MALFORMED:
    case ES_ERR_TOO_LARGE:
        return true;
    default:
        return false;
    }
}

/* Tell the server to stop a subscription of this connection, without
 * waiting for the answer (it is dropped on arrival). */
static void unsubscribe_async(es_subscription *s)
{
    es_client *c = s->c;
    Es__V1__Unsubscribe u = ES__V1__UNSUBSCRIBE__INIT;
    u.subscription_id = s->id;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
    req.unsubscribe = &u;
    uint64_t id = 0;
    if (cl_submit(c, &req, 0, CL_SMALL_REPLY_CAP, &id) != ES_OK) {
        return;
    }
    cl_abandon(c, id);
}

/* Open the server-side subscription strictly after the last delivered
 * point (connecting first if needed) and wait for the SubscribeOk.
 * @return ES_OK; the errors of cl_ensure(); the Subscribe's error (a
 *   permanent one also closes the subscription). */
static es_err subscribe_now(es_subscription *s)
{
    es_client *c = s->c;
    es_err rv = cl_ensure(c);
    if (rv != ES_OK) {
        return rv;
    }
    if (s->have_store_id && c->info.store_id_len == ES_UUID_BYTES &&
        memcmp(s->store_id, c->info.store_id, ES_UUID_BYTES) != 0) {
        return close_sub(s, ES_ERR_INCOMPATIBLE_STORE,
                         "the server now serves another store (its store id changed): "
                         "the subscription's positions mean nothing there");
    }
    Es__V1__Subscribe sr = ES__V1__SUBSCRIBE__INIT;
    sr.target = (Es__V1__SubscribeTarget)s->target;
    if (s->name != NULL) {
        sr.name.data = (uint8_t *)s->name;
        sr.name.len = strlen(s->name);
    }
    sr.batch_size = s->batch_size;
    if (s->has_last) {
        sr.after = s->last;
    } else if (s->from_end) {
        sr.from_end = true;
    } else {
        sr.from_start = true;
    }
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    req.subscribe = &sr;
    uint64_t id = 0;
    rv = cl_submit(c, &req, 0, CL_SMALL_REPLY_CAP, &id);
    if (rv != ES_OK) {
        return rv;
    }
    /* Registered before the reply is read: pushes right behind the
     * SubscribeOk (same read) are queued. */
    s->id = id;
    s->epoch = c->epoch;
    s->discard = false;
    Es__V1__Response *resp = NULL;
    rv = cl_wait(c, id, &resp);
    if (rv != ES_OK) {
        s->id = 0;
        clear_queue(s);
        if (!transient(rv)) {
            return close_sub(s, rv, "subscribing failed: %s", c->errmsg);
        }
        return rv;
    }
    if (s->from_end) {
        s->from_end = false;
        s->has_last = true;
        s->last = resp->subscribed->head_position;
    }
    cl_resp_free(resp);
    if (!s->have_store_id && c->info.store_id_len == ES_UUID_BYTES) {
        memcpy(s->store_id, c->info.store_id, ES_UUID_BYTES);
        s->have_store_id = true;
    }
    s->last_rx_us = cl_mono_us();
    return ES_OK;
}

static es_err resubscribe(es_subscription *s)
{
    if (attached(s)) {
        /* Its queue was discarded: the server-side one still runs. */
        unsubscribe_async(s);
    }
    s->id = 0;
    s->discard = false;
    return subscribe_now(s);
}

/* ------------------------------------------------------------ delivery -- */

/* Hand the queued pushes to the callbacks, oldest first. */
static es_err deliver(es_subscription *s)
{
    es_client *c = s->c;
    while (s->head != NULL) {
        sub_item *it = s->head;
        if (it->kind == ES__V1__RESPONSE__KIND_EVENTS) {
            size_t n = 0;
            es_err rv = decode_batch(s, it, &n);
            if (rv == ES_ERR_NO_MEMORY) {
                return rv; /* kept: the next poll tries again */
            }
            if (rv != ES_OK) {
                /* Fetch it again: drop it and what follows, resubscribe. */
                clear_queue(s);
                s->discard = true;
                return rv;
            }
            if (n > 0) {
                if (s->on_batch(s->ctx, s->evs, n) != 0) {
                    return cl_fail(c, ES_ERR_REFUSED,
                                   "the batch callback refused %zu events: they are delivered "
                                   "again by the next poll",
                                   n);
                }
                const es_recorded_event *e = &s->evs[n - 1];
                s->last = s->target == ES_SUB_STREAM ? e->revision : e->position;
                s->has_last = true;
            }
            pop_item(s);
        } else if (it->kind == ES__V1__RESPONSE__KIND_CAUGHT_UP) {
            uint64_t pos = it->value;
            pop_item(s);
            s->caught_up = true;
            if (s->on_caught_up != NULL) {
                s->on_caught_up(s->ctx, pos);
            }
        } else {
            es_err reason = it->value != ES_OK ? (es_err)it->value : ES_ERR_INTERNAL;
            char msg[SUB_MSG_BYTES];
            memcpy(msg, it->data, it->len);
            msg[it->len] = '\0';
            pop_item(s);
            return close_sub(s, reason, "the server dropped the subscription: %s",
                             msg[0] != '\0' ? msg : es_strerror(reason));
        }
    }
    return ES_OK;
}

/* ----------------------------------------------------------------- API -- */

static es_err check_options(es_client *c, const es_sub_options *o)
{
    if ((unsigned)o->target > ES_SUB_STREAM_PREFIX) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "unknown subscription target %d",
                       (int)o->target);
    }
    if ((unsigned)o->start > ES_SUB_AFTER) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "unknown subscription start %d", (int)o->start);
    }
    if (o->start == ES_SUB_AFTER && o->after == UINT64_MAX) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "nothing lies after %llu",
                       (unsigned long long)o->after);
    }
    const char *name = o->name;
    size_t len = name != NULL ? strlen(name) : 0;
    switch (o->target) {
    case ES_SUB_ALL:
        if (len != 0) {
            return cl_fail(c, ES_ERR_INVALID_ARGUMENT,
                           "a subscription to the whole log takes no name");
        }
        return ES_OK;
    case ES_SUB_STREAM:
        if (name == NULL || es_validate_stream_id((const uint8_t *)name, len, true) != ES_OK) {
            return cl_fail(c, ES_ERR_INVALID_STREAM_ID, "invalid stream id");
        }
        return ES_OK;
    default:
        if (name == NULL || es_validate_name((const uint8_t *)name, len) != ES_OK) {
            return cl_fail(c, ES_ERR_INVALID_ARGUMENT,
                           "a category, event type or prefix needs a valid name");
        }
        return ES_OK;
    }
}

static void free_sub(es_subscription *s)
{
    clear_queue(s);
    cl_free(s->evs);
    cl_free(s->strs);
    cl_free(s->name);
    cl_free(s);
}

es_err es_subscribe(es_client *c, const es_sub_options *opts, es_sub_batch_fn on_batch,
                    es_sub_caught_up_fn on_caught_up, void *ctx, es_subscription **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (c == NULL || opts == NULL || on_batch == NULL || out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_options(c, opts);
    if (rv != ES_OK) {
        return rv;
    }
    es_subscription *s = cl_calloc(1, sizeof(*s));
    if (s == NULL) {
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a subscription");
    }
    s->c = c;
    s->target = opts->target;
    s->batch_size = opts->batch_size;
    s->on_batch = on_batch;
    s->on_caught_up = on_caught_up;
    s->ctx = ctx;
    if (opts->target != ES_SUB_ALL) {
        s->name = cl_strndup(opts->name, strlen(opts->name));
        if (s->name == NULL) {
            free_sub(s);
            return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a subscription");
        }
    }
    switch (opts->start) {
    case ES_SUB_FROM_START:
        break;
    case ES_SUB_AFTER:
        s->has_last = true;
        s->last = opts->after;
        break;
    case ES_SUB_FROM_END:
        if (opts->target == ES_SUB_STREAM) {
            /* Revisions: the SubscribeOk's head_position is a position,
             * so take the stream's last revision now and start after it. */
            es_stream_info si;
            rv = es_stream_info_get(c, s->name, &si);
            if (rv == ES_OK) {
                s->has_last = true;
                s->last = si.last_revision;
            } else if (rv != ES_ERR_NOT_FOUND) {
                free_sub(s);
                return rv;
            }
        } else {
            s->from_end = true;
        }
        break;
    }
    s->next = c->subs;
    c->subs = s;
    rv = subscribe_now(s);
    if (rv != ES_OK) {
        unlink_sub(c, s);
        free_sub(s);
        return rv;
    }
    *out = s;
    return ES_OK;
}

/* A frame above the client's max_frame_bytes dropped the connection (its
 * header is refused before its id is known: most likely a push of ours).
 * Resubscribing with the same batch would fail the same way forever, so
 * halve it (the server's default is 256); a single event that does not fit
 * ends the subscription. */
static es_err shrink_batch(es_subscription *s)
{
    es_client *c = s->c;
    if (s->batch_size == 1) {
        return close_sub(s, ES_ERR_TOO_LARGE,
                         "one event is larger than this client's max_frame_bytes (%u)",
                         c->recv_cap);
    }
    s->batch_size = s->batch_size == 0 ? 128 : s->batch_size / 2;
    return cl_fail(c, ES_ERR_TOO_LARGE,
                   "a frame exceeded this client's max_frame_bytes (%u): resubscribing with "
                   "batches of %u events",
                   c->recv_cap, s->batch_size);
}

es_err es_sub_poll(es_subscription *s, int timeout_ms)
{
    if (s == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_client *c = s->c;
    if (c == NULL) {
        return ES_ERR_CLOSED; /* the client was destroyed */
    }
    if (s->closed != ES_OK) {
        return cl_fail(c, s->closed, "%s", s->closed_msg);
    }
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : cl_mono_us() + (uint64_t)timeout_ms * 1000u;
    uint64_t beat = (uint64_t)c->opts.request_timeout_ms * 1000u;
    for (;;) {
        if (s->head != NULL) {
            return deliver(s);
        }
        if (s->pending != ES_OK) {
            es_err rv = s->pending;
            s->pending = ES_OK;
            return cl_fail(c, rv, "%s; resubscribing after the last event delivered",
                           s->pending_msg);
        }
        if (s->discard || !attached(s)) {
            es_err rv = resubscribe(s);
            if (rv != ES_OK) {
                return rv;
            }
            continue;
        }
        uint64_t now = cl_mono_us();
        if (now - s->last_rx_us >= beat) {
            /* Quiet for a whole request timeout: is the server still
             * there? A ping that is not answered drops the connection. */
            es_err rv = es_client_ping(c, NULL);
            s->last_rx_us = cl_mono_us();
            if (rv != ES_OK && rv != ES_ERR_CLOSED && rv != ES_ERR_TIMEOUT) {
                return rv;
            }
            continue;
        }
        uint64_t until = s->last_rx_us + beat < deadline ? s->last_rx_us + beat : deadline;
        es_err rv = conn_pump(c, until);
        if (rv == ES_ERR_TIMEOUT && cl_mono_us() >= deadline) {
            return ES_OK;
        }
        if (rv == ES_ERR_TOO_LARGE) {
            return shrink_batch(s);
        }
        /* ES_OK: something was read; another error: the connection is gone
         * and the next turn resubscribes on a new one. */
    }
}

uint64_t es_sub_last(const es_subscription *s, bool *has)
{
    if (s == NULL) {
        if (has != NULL) {
            *has = false;
        }
        return 0;
    }
    if (has != NULL) {
        *has = s->has_last;
    }
    return s->has_last ? s->last : 0;
}

bool es_sub_caught_up(const es_subscription *s)
{
    return s != NULL && s->caught_up;
}

void es_sub_destroy(es_subscription *s)
{
    if (s == NULL) {
        return;
    }
    es_client *c = s->c;
    if (c != NULL) {
        if (s->closed == ES_OK && attached(s)) {
            /* Best effort; the failure of a call just made stays reported. */
            char saved[CL_ERRMSG_BYTES];
            memcpy(saved, c->errmsg, sizeof(saved));
            unsubscribe_async(s);
            memcpy(c->errmsg, saved, sizeof(saved));
        }
        unlink_sub(c, s);
    }
    free_sub(s);
}

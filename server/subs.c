#include "subs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbwire.h"
#include "reply.h"
#include "validate.h"

typedef struct sub {
    struct sub *prev_all, *next_all; /* registry-wide list */
    struct sub *next_in_session;
    session *sess;
    uint64_t id;
    bool one_stream;        /* cursor is a revision of one stream */
    store_filter_kind kind; /* otherwise a filter over the global log */
    uint8_t name[ES_MAX_NAME_BYTES];
    size_t name_len;
    uint64_t cursor; /* next revision / position to deliver */
    uint32_t batch;
    bool dirty;
    bool caught_up_sent;
} sub;

struct subs {
    server_ctx *srv;
    sub *all;
    uint32_t count;
};

es_err subs_create(server_ctx *srv, subs **out)
{
    subs *r = calloc(1, sizeof *r);
    if (!r) {
        return ES_ERR_NO_MEMORY;
    }
    r->srv = srv;
    *out = r;
    return ES_OK;
}

void subs_destroy(subs *r)
{
    free(r);
}

static void kick(subs *r)
{
    if (r->srv->kick) {
        r->srv->kick(r->srv->kick_ctx);
    }
}

static void sub_unlink_free(subs *r, session *s, sub *x)
{
    for (sub **pp = &s->subs; *pp; pp = &(*pp)->next_in_session) {
        if (*pp == x) {
            *pp = x->next_in_session;
            break;
        }
    }
    s->n_subs--;
    if (x->prev_all) {
        x->prev_all->next_all = x->next_all;
    } else {
        r->all = x->next_all;
    }
    if (x->next_all) {
        x->next_all->prev_all = x->prev_all;
    }
    r->count--;
    r->srv->counters.subscriptions = r->count;
    free(x);
}

static sub *find(const session *s, uint64_t id)
{
    for (sub *x = s->subs; x; x = x->next_in_session) {
        if (x->id == id) {
            return x;
        }
    }
    return NULL;
}

bool subs_has(const session *s, uint64_t id)
{
    return find(s, id) != NULL;
}

void subs_drop_session(session *s)
{
    subs *r = s->srv ? s->srv->subs : NULL;
    while (s->subs && r) {
        sub_unlink_free(r, s, s->subs);
    }
}

void subs_subscribe(session *s, uint64_t id, const Es__V1__Subscribe *req)
{
    subs *r = s->srv->subs;
    const server_config *cfg = s->srv->cfg;
    if (find(s, id)) {
        reply_send_error(s, id, ES_ERR_DUPLICATE_REQUEST_ID,
                         "a subscription with this id is open on this connection");
        return;
    }
    if (s->n_subs >= SUBS_MAX_PER_SESSION) {
        reply_send_error(s, id, ES_ERR_TOO_MANY_REQUESTS,
                         "too many subscriptions on this connection");
        return;
    }
    sub tmp = {0};
    tmp.sess = s;
    tmp.id = id;
    const uint8_t *name = req->name.data;
    size_t name_len = req->name.len;
    switch (req->target) {
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL:
        tmp.kind = STORE_FILTER_NONE;
        if (name_len) {
            reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT,
                             "a subscription to the whole log takes no name");
            return;
        }
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM:
        tmp.one_stream = true;
        if (es_validate_stream_id(name, name_len, true) != ES_OK) {
            reply_send_error(s, id, ES_ERR_INVALID_STREAM_ID, NULL);
            return;
        }
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY:
        tmp.kind = STORE_FILTER_CATEGORY;
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_EVENT_TYPE:
        tmp.kind = STORE_FILTER_EVENT_TYPE;
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM_PREFIX:
        tmp.kind = STORE_FILTER_STREAM_PREFIX;
        break;
    default:
        reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT, "unknown subscription target");
        return;
    }
    if (!tmp.one_stream && tmp.kind != STORE_FILTER_NONE &&
        es_validate_name(name, name_len) != ES_OK) {
        reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT,
                         "name must be 1..256 bytes of UTF-8 without control characters");
        return;
    }
    if (name_len) {
        memcpy(tmp.name, name, name_len); /* name is NULL when empty */
    }
    tmp.name_len = name_len;
    tmp.batch = req->batch_size == 0 ? SUBS_DEFAULT_BATCH : req->batch_size;
    if (tmp.batch > cfg->max_page) {
        tmp.batch = cfg->max_page;
    }

    /* The starting point: strictly after `after`, from the start, or from
     * the head as it is now. A start beyond the head is refused. */
    uint64_t head = store_head(s->srv->st);
    uint64_t end; /* the first cursor value with nothing behind it yet */
    if (tmp.one_stream) {
        store_stream_info si;
        es_err rv = store_stream_info_get(s->srv->st, name, name_len, &si);
        if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
            reply_send_error(s, id, rv, NULL);
            return;
        }
        end = rv == ES_OK ? si.last_revision + 1 : 0;
    } else {
        end = head + 1;
    }
    if (req->from_end) {
        tmp.cursor = end;
    } else if (req->from_start) {
        tmp.cursor = tmp.one_stream ? 0 : 1;
    } else {
        /* `after` is honoured as given, 0 included ("after revision 0"). */
        if (req->after == UINT64_MAX || req->after + 1 > end) {
            reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT,
                             tmp.one_stream ? "start revision is beyond the end of the stream"
                                            : "start position is beyond the head of the log");
            return;
        }
        tmp.cursor = req->after + 1;
    }
    sub *x = reply_calloc(1, sizeof *x);
    if (!x) {
        reply_send_error(s, id, ES_ERR_NO_MEMORY, NULL);
        return;
    }
    *x = tmp;
    x->dirty = true;
    x->next_in_session = s->subs;
    s->subs = x;
    s->n_subs++;
    x->next_all = r->all;
    if (r->all) {
        r->all->prev_all = x;
    }
    r->all = x;
    r->count++;
    s->srv->counters.subscriptions = r->count;

    Es__V1__SubscribeOk ok = ES__V1__SUBSCRIBE_OK__INIT;
    ok.head_position = head;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_SUBSCRIBED;
    resp.subscribed = &ok;
    reply_send(s, &resp);
    kick(r);
}

void subs_unsubscribe(session *s, uint64_t id, uint64_t sub_id)
{
    sub *x = find(s, sub_id);
    if (!x) {
        reply_send_error(s, id, ES_ERR_SUBSCRIPTION_NOT_FOUND, NULL);
        return;
    }
    sub_unlink_free(s->srv->subs, s, x);
    Es__V1__UnsubscribeOk ok = ES__V1__UNSUBSCRIBE_OK__INIT;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_UNSUBSCRIBED;
    resp.unsubscribed = &ok;
    reply_send(s, &resp);
}

void subs_on_commit(subs *r)
{
    for (sub *x = r->all; x; x = x->next_all) {
        x->dirty = true;
    }
    if (r->all) {
        kick(r);
    }
}

void subs_on_writable(session *s)
{
    bool any = false;
    for (sub *x = s->subs; x; x = x->next_in_session) {
        any |= x->dirty;
    }
    if (any) {
        kick(s->srv->subs);
    }
}

static bool has_room(const session *s)
{
    return !s->dead && s->outlen(s->io) < s->srv->cfg->max_output_bytes / 2;
}

static void send_caught_up(session *s, uint64_t id, uint64_t position)
{
    Es__V1__CaughtUp cu = ES__V1__CAUGHT_UP__INIT;
    cu.position = position;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_CAUGHT_UP;
    resp.caught_up = &cu;
    reply_send(s, &resp);
}

static void send_dropped(session *s, uint64_t id, es_err reason, const char *message)
{
    Es__V1__SubscriptionDropped d = ES__V1__SUBSCRIPTION_DROPPED__INIT;
    d.reason = (Es__V1__ErrorCode)reason;
    d.message = (char *)message;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_DROPPED;
    resp.dropped = &d;
    reply_send(s, &resp);
}

/* Read and push one batch. @return false when the subscription was dropped. */
static bool deliver_one(subs *r, sub *x)
{
    session *s = x->sess;
    store *st = r->srv->st;
    if (!x->one_stream && x->cursor > store_head(st) && x->caught_up_sent) {
        x->dirty = false; /* nothing new anywhere: no transaction needed */
        return true;
    }
    page_ctx pc = {.budget = reply_page_budget(r->srv->cfg)};
    store_page pg;
    es_err rv;
    if (x->one_stream) {
        rv = store_read_stream(st, x->name, x->name_len, x->cursor, false, x->batch, page_visit,
                               &pc, &pg);
        if (rv == ES_ERR_NOT_FOUND) {
            rv = ES_OK; /* not created yet: nothing to deliver */
            pg.end = true;
            pg.next = x->cursor;
            pg.head = store_head(st);
        }
    } else {
        store_filter f = {x->kind, x->name, x->name_len};
        rv = store_read_all(st, &f, x->cursor, false, x->batch, page_visit, &pc, &pg);
    }
    if (rv == ES_OK && pc.oom) {
        rv = ES_ERR_NO_MEMORY;
    }
    if (rv != ES_OK) {
        bb_free(&pc.buf);
        send_dropped(s, x->id, rv,
                     rv == ES_ERR_CORRUPT ? "a stored record failed its checksum"
                                          : es_strerror(rv));
        sub_unlink_free(r, s, x);
        return false;
    }
    if (pc.buf.len) {
        reply_send_wrapped(s, x->id, ES__V1__RESPONSE__KIND_EVENTS, &pc.buf);
    }
    bb_free(&pc.buf);
    if (x->one_stream) {
        x->cursor = pg.next;
    } else {
        /* With the whole page read in one transaction that saw `head`, a
         * finished forward read has looked at everything up to head. */
        x->cursor = pg.end && pg.head + 1 > pg.next ? pg.head + 1 : pg.next;
    }
    if (pg.end) {
        x->dirty = false;
        if (!x->caught_up_sent) {
            x->caught_up_sent = true;
            send_caught_up(s, x->id, pg.head);
        }
    }
    return true;
}

bool subs_deliver(subs *r)
{
    bool more = false;
    sub *next;
    for (sub *x = r->all; x; x = next) {
        next = x->next_all;
        if (!x->dirty) {
            continue;
        }
        if (!has_room(x->sess)) {
            continue; /* subs_on_writable will bring it back */
        }
        if (deliver_one(r, x) && x->dirty && has_room(x->sess)) {
            more = true;
        }
    }
    return more;
}

void subs_lag(const subs *r, uint64_t head, subs_lag_stats *out)
{
    memset(out, 0, sizeof *out);
    for (const sub *x = r->all; x; x = x->next_all) {
        if (x->one_stream) {
            out->behind += !x->caught_up_sent;
            continue;
        }
        uint64_t lag = head >= x->cursor ? head - x->cursor + 1 : 0;
        out->sum += lag;
        out->max = lag > out->max ? lag : out->max;
        out->behind += lag > 0;
    }
}

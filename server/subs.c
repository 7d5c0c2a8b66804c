#include "subs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbwire.h"
#include "reply.h"
#include "validate.h"

/*
 * The index
 * ---------
 * Every subscription hangs off one target: (kind, name), kind being one
 * stream, a category, an event type, a stream prefix, or the whole log.
 * Targets live in a hash table keyed by kind and name; subscriptions that
 * share a target share its list. After a commit, subs_on_commit reads the
 * new records once (stream id and type of each, positions seen+1..head)
 * and looks up, per record, the targets it matches:
 *
 *   stream    the stream id                  one lookup
 *   category  the stream id up to its '-'    one lookup
 *   type      the event type                 one lookup
 *   prefix    the stream id cut at every     one lookup per distinct
 *             prefix length in use           prefix length in use
 *   all       always                         none
 *
 * A target found is marked once per commit (a generation number), and its
 * subscriptions that are not dirty yet go on the ready list. The cost of a
 * commit is O(events + matching subscriptions); a subscription that
 * matches nothing is never touched. A commit of more than
 * SUBS_SCAN_LIMIT records (a follower's import) marks every subscription
 * instead of reading them all on the loop thread.
 *
 * Cursor catch-up without touching: a clean (not dirty) subscription to
 * the log has, by construction, matched none of the records scanned since
 * it became clean; when a scan marks it, its cursor moves up to the first
 * position of that scan. A category or prefix subscription idle through a
 * million unrelated commits so reads from its first matching record, not
 * from where it last stopped.
 *
 * The ready list holds the dirty subscriptions whose connection had room
 * when last looked at. A subscription whose connection is full leaves the
 * list (it stays dirty) and comes back through subs_on_writable, so a pass
 * costs O(subscriptions with work and room).
 */

#define SUBS_SCAN_LIMIT 4096u

/*
 * Shared batches
 * --------------
 * A thousand subscriptions to the whole log, caught up, all want the same
 * records after each commit. Reading them from LMDB a thousand times
 * (checksum, lifecycle filter, copy into a page, copy into each output)
 * made delivery the loop's whole cost. So a delivery pass keeps the
 * batches it read, keyed by (target, cursor, batch size), one slot per
 * read (SUBS_SHARED_SLOTS, the most reads a pass makes): another
 * subscription of the same target at the same cursor gets the same
 * encoded bytes (reply_shared, reference counted) with only its own head
 * — frame length, its request id, the field header — written for it; the
 * bytes themselves go into its connection's output by reference (net.c's
 * conn_send_shared), not copied.
 *
 * Subscribers that fall behind do not stay together: a connection's room
 * runs out after some of its subscriptions were served, a slow client
 * drains its connections one by one, and soon a thousand subscriptions of
 * the log sit at hundreds of positions. With exact keys each read its own
 * batch, so every record was read, checked and decrypted again for almost
 * every subscriber. Hence, for filters over the global log (not for one
 * stream, whose cursor is a revision):
 *   - a read notes where each record starts in its batch and its position
 *     (batch_visit); a subscription whose cursor falls inside a slot's
 *     batch — between its cursor and where it stopped — gets the batch
 *     from the first record at or after its cursor on: a view of the same
 *     bytes (reply_shared_view), which is what its own read would have
 *     returned, or less (protobuf's repeated field: any tail of the
 *     records is a valid message);
 *   - a subscription that must read stops its read at the lowest cursor
 *     above its own where a slot begins (the records from there are read
 *     already);
 *   - after its batch, a subscription with room takes up to SUBS_CHAIN
 *     more from the slots that go on from where it now is.
 * So a pass reads each stretch of the log at most once, however scattered
 * its subscribers are.
 *
 * A batch that reached the end of the log is reused only while the head
 * is still the one its read saw (otherwise the subscription would be
 * marked clean with records after it unsent); a batch cut by its size
 * holds fixed positions and stays valid for the pass. The slots are
 * emptied at the end of every pass, so nothing cached outlives a loop
 * turn (a deletion or erasure committed later is never served from it).
 * The registry counts both kinds (subs_batch_stats).
 */
#define SUBS_SHARED_SLOTS SUBS_PER_PASS
/* A pass serves at most SUBS_PER_PASS subscriptions that read the store,
 * and at most this many in all (shared batches cost a head and a
 * reference each), and stops once it queued SUBS_PASS_BYTES: never more
 * than the SUBS_PER_PASS reads of SUBS_BATCH_BYTES it queued before. */
#define SUBS_SHARED_PER_PASS 1024u
/* Batches a subscription may take from the shared ones after its own. */
#define SUBS_CHAIN      16u
#define SUBS_PASS_BYTES ((size_t)SUBS_PER_PASS * SUBS_BATCH_BYTES)

typedef struct shared_batch {
    const struct target *tgt; /* NULL: empty slot */
    uint64_t cursor;
    uint32_t batch;
    reply_shared *payload; /* NULL: the page had no record */
    store_page pg;
    /* Where each record of payload starts, and its position (a batch of
     * the global log read from the store; n_recs 0 otherwise). Arrays of
     * cap_recs, kept across passes. */
    uint64_t *rec_pos;
    uint32_t *rec_off;
    uint32_t n_recs, cap_recs;
} shared_batch;

typedef struct target target;

typedef struct sub {
    struct sub *prev_all, *next_all; /* registry-wide list (lag, destroy) */
    struct sub *next_in_session;
    struct sub *prev_t, *next_t; /* subscriptions of the same target */
    struct sub *prev_ready, *next_ready;
    target *tgt;
    session *sess;
    uint64_t id;
    bool one_stream;        /* cursor is a revision of one stream */
    store_filter_kind kind; /* otherwise a filter over the global log */
    uint64_t cursor;        /* next revision / position to deliver */
    uint32_t batch;
    bool dirty;    /* may have something to deliver */
    bool on_ready; /* on the registry's ready list */
    bool caught_up_sent;
} sub;

enum { TGT_STREAM = 0, TGT_CATEGORY, TGT_TYPE, TGT_PREFIX, TGT_ALL };

struct target {
    target *next_hash;
    sub *subs;
    uint32_t hash;
    uint32_t n_subs;
    uint64_t mark_gen;
    uint8_t kind;
    size_t name_len;
    uint8_t name[]; /* name_len bytes */
};

struct subs {
    server_ctx *srv;
    sub *all;
    uint32_t count;
    target **buckets; /* n_buckets (a power of two) chains */
    uint32_t n_buckets;
    uint32_t n_targets;
    /* prefix_len_count[L]: prefix targets of length L (1..ES_MAX_NAME_BYTES) */
    uint32_t prefix_len_count[ES_MAX_NAME_BYTES + 1];
    uint32_t n_prefix_targets;
    sub *ready_head, *ready_tail;
    uint64_t seen; /* the last position subs_on_commit has looked at */
    uint64_t gen;  /* of the current scan */
    uint64_t scan_from;
    bool scan_failed;
    shared_batch shared[SUBS_SHARED_SLOTS]; /* this pass's batches */
    shared_batch scratch;                   /* record offsets of the read under way */
    unsigned shared_next;                   /* the slot to fill next */
    unsigned shared_used;                   /* slots filled this pass (at most all) */
    size_t pass_bytes;                      /* queued by this pass */
    uint64_t shared_hits;                   /* batches sent from a slot, ever */
    uint64_t store_reads;                   /* batches read from the store, ever */
};

static uint32_t hash_key(uint8_t kind, const uint8_t *name, size_t len)
{
    uint32_t h = 2166136261u ^ kind;
    h *= 16777619u;
    for (size_t i = 0; i < len; i++) {
        h ^= name[i];
        h *= 16777619u;
    }
    return h;
}

static target *target_find(const subs *r, uint8_t kind, const uint8_t *name, size_t len, uint32_t h)
{
    for (target *t = r->buckets[h & (r->n_buckets - 1)]; t; t = t->next_hash) {
        if (t->hash == h && t->kind == kind && t->name_len == len &&
            (len == 0 || !memcmp(t->name, name, len))) {
            return t;
        }
    }
    return NULL;
}

static void table_grow(subs *r)
{
    uint32_t nb = r->n_buckets * 2;
    target **b = calloc(nb, sizeof *b);
    if (!b) {
        return; /* longer chains, still correct */
    }
    for (uint32_t i = 0; i < r->n_buckets; i++) {
        target *t = r->buckets[i];
        while (t) {
            target *next = t->next_hash;
            t->next_hash = b[t->hash & (nb - 1)];
            b[t->hash & (nb - 1)] = t;
            t = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->n_buckets = nb;
}

/* The target of (kind, name), created when missing. NULL: out of memory. */
static target *target_get(subs *r, uint8_t kind, const uint8_t *name, size_t len)
{
    uint32_t h = hash_key(kind, name, len);
    target *t = target_find(r, kind, name, len, h);
    if (t) {
        return t;
    }
    t = reply_calloc(1, sizeof *t + len);
    if (!t) {
        return NULL;
    }
    t->hash = h;
    t->kind = kind;
    t->name_len = len;
    if (len) {
        memcpy(t->name, name, len);
    }
    t->next_hash = r->buckets[h & (r->n_buckets - 1)];
    r->buckets[h & (r->n_buckets - 1)] = t;
    r->n_targets++;
    if (kind == TGT_PREFIX) {
        r->prefix_len_count[len]++;
        r->n_prefix_targets++;
    }
    if (r->n_targets > r->n_buckets) {
        table_grow(r);
    }
    return t;
}

static void target_release(subs *r, target *t)
{
    if (t->n_subs > 0) {
        return;
    }
    for (unsigned i = 0; i < SUBS_SHARED_SLOTS; i++) {
        if (r->shared[i].tgt == t) {
            r->shared[i].tgt = NULL; /* a new target could get its address */
        }
    }
    for (target **pp = &r->buckets[t->hash & (r->n_buckets - 1)]; *pp; pp = &(*pp)->next_hash) {
        if (*pp == t) {
            *pp = t->next_hash;
            break;
        }
    }
    r->n_targets--;
    if (t->kind == TGT_PREFIX) {
        r->prefix_len_count[t->name_len]--;
        r->n_prefix_targets--;
    }
    free(t);
}

es_err subs_create(server_ctx *srv, subs **out)
{
    subs *r = calloc(1, sizeof *r);
    if (!r) {
        return ES_ERR_NO_MEMORY;
    }
    r->n_buckets = 64;
    r->buckets = calloc(r->n_buckets, sizeof *r->buckets);
    if (!r->buckets) {
        free(r);
        return ES_ERR_NO_MEMORY;
    }
    r->srv = srv;
    r->seen = srv->st ? store_head(srv->st) : 0;
    *out = r;
    return ES_OK;
}

void subs_destroy(subs *r)
{
    if (!r) {
        return;
    }
    for (unsigned i = 0; i < SUBS_SHARED_SLOTS; i++) {
        reply_shared_release(r->shared[i].payload);
        free(r->shared[i].rec_pos);
        free(r->shared[i].rec_off);
    }
    free(r->scratch.rec_pos);
    free(r->scratch.rec_off);
    for (uint32_t i = 0; i < r->n_buckets; i++) {
        while (r->buckets[i]) {
            target *t = r->buckets[i];
            r->buckets[i] = t->next_hash;
            free(t);
        }
    }
    free(r->buckets);
    free(r);
}

static void kick(subs *r)
{
    if (r->srv->kick) {
        r->srv->kick(r->srv->kick_ctx);
    }
}

static void ready_push(subs *r, sub *x)
{
    if (x->on_ready) {
        return;
    }
    x->on_ready = true;
    x->next_ready = NULL;
    x->prev_ready = r->ready_tail;
    if (r->ready_tail) {
        r->ready_tail->next_ready = x;
    } else {
        r->ready_head = x;
    }
    r->ready_tail = x;
}

static void ready_remove(subs *r, sub *x)
{
    if (!x->on_ready) {
        return;
    }
    if (x->prev_ready) {
        x->prev_ready->next_ready = x->next_ready;
    } else {
        r->ready_head = x->next_ready;
    }
    if (x->next_ready) {
        x->next_ready->prev_ready = x->prev_ready;
    } else {
        r->ready_tail = x->prev_ready;
    }
    x->on_ready = false;
    x->prev_ready = x->next_ready = NULL;
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
    if (x->prev_t) {
        x->prev_t->next_t = x->next_t;
    } else {
        x->tgt->subs = x->next_t;
    }
    if (x->next_t) {
        x->next_t->prev_t = x->prev_t;
    }
    x->tgt->n_subs--;
    target_release(r, x->tgt);
    ready_remove(r, x);
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
    uint8_t tkind;
    const uint8_t *name = req->name.data;
    size_t name_len = req->name.len;
    switch (req->target) {
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL:
        tmp.kind = STORE_FILTER_NONE;
        tkind = TGT_ALL;
        if (name_len) {
            reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT,
                             "a subscription to the whole log takes no name");
            return;
        }
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM:
        tmp.one_stream = true;
        tkind = TGT_STREAM;
        if (es_validate_stream_id(name, name_len, true) != ES_OK) {
            reply_send_error(s, id, ES_ERR_INVALID_STREAM_ID, NULL);
            return;
        }
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY:
        tmp.kind = STORE_FILTER_CATEGORY;
        tkind = TGT_CATEGORY;
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_EVENT_TYPE:
        tmp.kind = STORE_FILTER_EVENT_TYPE;
        tkind = TGT_TYPE;
        break;
    case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM_PREFIX:
        tmp.kind = STORE_FILTER_STREAM_PREFIX;
        tkind = TGT_PREFIX;
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
    target *t = target_get(r, tkind, name_len ? name : NULL, name_len);
    sub *x = t ? reply_calloc(1, sizeof *x) : NULL;
    if (!x) {
        if (t) {
            target_release(r, t);
        }
        reply_send_error(s, id, ES_ERR_NO_MEMORY, NULL);
        return;
    }
    *x = tmp;
    x->tgt = t;
    x->next_t = t->subs;
    if (t->subs) {
        t->subs->prev_t = x;
    }
    t->subs = x;
    t->n_subs++;
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
    ready_push(r, x);

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

/* Room for a batch: below the low-water mark and not paused; at the
 * memory budget with the connection's share used up, session.room pauses
 * it (and the network layer resumes it, which brings it back here). */
static bool has_room(const session *s)
{
    return !s->dead && !s->paused_output && s->outlen(s->io) < s->srv->cfg->max_output_bytes / 2 &&
           (!s->room || s->room(s->io) > 0);
}

/* A subscription may have something new: dirty, and ready when it has room. */
static void mark(subs *r, sub *x)
{
    if (!x->dirty) {
        x->dirty = true;
        /* Clean, it matched nothing scanned since it became clean. */
        if (!x->one_stream && x->cursor < r->scan_from) {
            x->cursor = r->scan_from;
        }
    }
    if (has_room(x->sess)) {
        ready_push(r, x);
    }
}

static void mark_target(subs *r, target *t)
{
    if (!t || t->mark_gen == r->gen) {
        return;
    }
    t->mark_gen = r->gen;
    for (sub *x = t->subs; x; x = x->next_t) {
        mark(r, x);
    }
}

static void lookup_mark(subs *r, uint8_t kind, const uint8_t *name, size_t len)
{
    mark_target(r, target_find(r, kind, name, len, hash_key(kind, name, len)));
}

/* store_visit_fn over the newly committed records: mark what they match. */
static int scan_visit(void *ctx, const store_record *rec)
{
    subs *r = ctx;
    const uint8_t *stream = NULL, *type = NULL;
    size_t stream_len = 0, type_len = 0;
    if (pbw_find_bytes(rec->bytes, rec->len, 1, &stream, &stream_len) != ES_OK ||
        pbw_find_bytes(rec->bytes, rec->len, 5, &type, &type_len) != ES_OK) {
        r->scan_failed = true;
        return -1;
    }
    lookup_mark(r, TGT_STREAM, stream, stream_len);
    lookup_mark(r, TGT_CATEGORY, stream, es_category_len(stream, stream_len));
    lookup_mark(r, TGT_TYPE, type, type_len);
    if (r->n_prefix_targets) {
        size_t max = stream_len < ES_MAX_NAME_BYTES ? stream_len : ES_MAX_NAME_BYTES;
        for (size_t l = 1; l <= max; l++) {
            if (r->prefix_len_count[l]) {
                lookup_mark(r, TGT_PREFIX, stream, l);
            }
        }
    }
    return 0;
}

static void mark_everything(subs *r)
{
    for (sub *x = r->all; x; x = x->next_all) {
        if (!x->dirty) {
            x->dirty = true; /* no cursor move: nothing was scanned */
        }
        if (has_room(x->sess)) {
            ready_push(r, x);
        }
    }
}

void subs_on_commit(subs *r)
{
    uint64_t head = store_head(r->srv->st);
    if (head <= r->seen) {
        return;
    }
    uint64_t from = r->seen + 1;
    r->seen = head;
    if (!r->all) {
        return;
    }
    r->gen++;
    r->scan_from = from;
    mark_target(r, target_find(r, TGT_ALL, NULL, 0, hash_key(TGT_ALL, NULL, 0)));
    bool everything = head - from + 1 > SUBS_SCAN_LIMIT;
    r->scan_failed = false;
    while (!everything && from <= head) {
        store_page pg;
        es_err rv = store_read_all(r->srv->st, NULL, from, false, 0, scan_visit, r, &pg);
        if (rv != ES_OK || r->scan_failed) {
            everything = true; /* the delivery reads will report what is wrong */
            break;
        }
        if (pg.returned == 0 || pg.next <= from) {
            break;
        }
        from = pg.next;
    }
    if (everything) {
        mark_everything(r);
    }
    if (r->ready_head) {
        kick(r);
    }
}

void subs_on_writable(session *s)
{
    subs *r = s->srv->subs;
    /* has_room asks the memory budget, which may pause the connection:
     * only for one that has something to deliver. */
    if (!r || !s->subs || !has_room(s)) {
        return;
    }
    bool any = false;
    for (sub *x = s->subs; x; x = x->next_in_session) {
        if (x->dirty && !x->on_ready) {
            ready_push(r, x);
            any = true;
        }
    }
    if (any) {
        kick(r);
    }
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

/* Empty a slot, keeping its arrays for the next batch. */
static void slot_empty(shared_batch *b)
{
    reply_shared_release(b->payload);
    b->payload = NULL;
    b->tgt = NULL;
    b->n_recs = 0;
}

static void shared_clear(subs *r)
{
    for (unsigned i = 0; i < r->shared_used; i++) {
        slot_empty(&r->shared[i]);
    }
    r->shared_next = 0;
    r->shared_used = 0;
}

/* The first position after what b has looked at: a read from anywhere in
 * [b->cursor, that) returns b's records from there on (or fewer). */
static uint64_t slot_covers_to(const shared_batch *b)
{
    return b->pg.end && b->pg.head + 1 > b->pg.next ? b->pg.head + 1 : b->pg.next;
}

/* The batch this pass already read for x's target at x's cursor, if any
 * and still valid (see "Shared batches"); or one read from an earlier
 * cursor that covers x's: *off is then where x's part starts (the first
 * record at or after x's cursor; the payload's length when none is). */
static const shared_batch *shared_find(const subs *r, const sub *x, size_t room, size_t *off)
{
    uint64_t head = store_head(r->srv->st);
    for (unsigned i = 0; i < r->shared_used; i++) {
        const shared_batch *b = &r->shared[i];
        if (b->tgt != x->tgt || b->batch != x->batch || (b->pg.end && b->pg.head != head)) {
            continue;
        }
        if (b->cursor == x->cursor && (!b->payload || b->payload->len <= room)) {
            *off = 0;
            return b;
        }
        if (x->one_stream || !b->payload || b->n_recs == 0 || x->cursor < b->cursor ||
            x->cursor >= slot_covers_to(b)) {
            continue;
        }
        uint32_t lo = 0, hi = b->n_recs; /* the first record at or after the cursor */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (b->rec_pos[mid] < x->cursor) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        size_t o = lo < b->n_recs ? b->rec_off[lo] : b->payload->len;
        if (b->payload->len - o <= room) {
            *off = o;
            return b;
        }
    }
    return NULL;
}

/* Keep a batch for the rest of the pass (takes over the payload's
 * reference, and the record offsets of the read in r->scratch). */
static void shared_keep(subs *r, const sub *x, reply_shared *payload, const store_page *pg)
{
    shared_batch *b = &r->shared[r->shared_next];
    r->shared_next = (r->shared_next + 1) % SUBS_SHARED_SLOTS;
    if (r->shared_used < SUBS_SHARED_SLOTS) {
        r->shared_used++;
    }
    slot_empty(b);
    shared_batch t = *b; /* swap the arrays: the slot takes the scratch ones */
    b->rec_pos = r->scratch.rec_pos;
    b->rec_off = r->scratch.rec_off;
    b->cap_recs = r->scratch.cap_recs;
    b->n_recs = payload ? r->scratch.n_recs : 0;
    r->scratch.rec_pos = t.rec_pos;
    r->scratch.rec_off = t.rec_off;
    r->scratch.cap_recs = t.cap_recs;
    r->scratch.n_recs = 0;
    b->tgt = x->tgt;
    b->cursor = x->cursor;
    b->batch = x->batch;
    b->payload = payload;
    b->pg = *pg;
}

/* page_visit up to a stop position, noting where each record starts in
 * r->scratch (global-log reads; a record that does not fit the arrays ends
 * the notes). */
typedef struct batch_ctx {
    page_ctx pc;
    shared_batch *notes; /* NULL: not noted */
    uint64_t stop;       /* the page ends before this position */
} batch_ctx;

static int batch_visit(void *ctx, const store_record *rec)
{
    batch_ctx *bc = ctx;
    if (rec->position >= bc->stop) {
        return -1; /* another batch of this pass goes on from here */
    }
    size_t off = bc->pc.buf.len;
    int rv = page_visit(&bc->pc, rec);
    shared_batch *n = bc->notes;
    if (rv == 0 && n) {
        if (n->n_recs < n->cap_recs && off <= UINT32_MAX) {
            n->rec_pos[n->n_recs] = rec->position;
            n->rec_off[n->n_recs] = (uint32_t)off;
            n->n_recs++;
        } else {
            n->n_recs = 0;
            bc->notes = NULL;
        }
    }
    return rv;
}

/* Room in r->scratch for the offsets of n records; false: no memory (the
 * batch is then shared from its cursor only). */
static bool scratch_reserve(subs *r, uint32_t n)
{
    shared_batch *s = &r->scratch;
    s->n_recs = 0;
    if (s->cap_recs >= n) {
        return true;
    }
    uint64_t *pos = reply_malloc((size_t)n * sizeof *pos);
    uint32_t *off = pos ? reply_malloc((size_t)n * sizeof *off) : NULL;
    if (!off) {
        free(pos);
        return false;
    }
    free(s->rec_pos);
    free(s->rec_off);
    s->rec_pos = pos;
    s->rec_off = off;
    s->cap_recs = n;
    return true;
}

/* Read the next batch of x from the store. @return ES_OK with *payload
 * (NULL for an empty page) and *pg; or the error of the read. */
static es_err read_batch(subs *r, const sub *x, size_t room, uint64_t stop, bytebuf *out,
                         store_page *pg)
{
    store *st = r->srv->st;
    batch_ctx bc = {.pc = {.budget = reply_page_budget(r->srv->cfg)}, .stop = stop};
    page_ctx *pc = &bc.pc;
    if (pc->budget > SUBS_BATCH_BYTES) {
        pc->budget = SUBS_BATCH_BYTES;
    }
    if (pc->budget > room) {
        pc->budget = room; /* at the memory budget: what is left of the share */
    }
    if (!x->one_stream && x->tgt->n_subs > 1 && scratch_reserve(r, x->batch)) {
        bc.notes = &r->scratch;
    }
    es_err rv;
    if (x->one_stream) {
        rv = store_read_stream(st, x->tgt->name, x->tgt->name_len, x->cursor, false, x->batch,
                               page_visit, pc, pg);
        if (rv == ES_ERR_NOT_FOUND) {
            rv = ES_OK; /* not created yet: nothing to deliver */
            pg->end = true;
            pg->next = x->cursor;
            pg->head = store_head(st);
        }
    } else {
        store_filter f = {x->kind, x->tgt->name, x->tgt->name_len};
        rv = store_read_all(st, &f, x->cursor, false, x->batch, batch_visit, &bc, pg);
    }
    if (rv == ES_OK && pc->oom) {
        rv = ES_ERR_NO_MEMORY;
    }
    if (!bc.notes) {
        r->scratch.n_recs = 0;
    }
    if (rv != ES_OK) {
        bb_free(&pc->buf);
        return rv;
    }
    *out = pc->buf;
    return ES_OK;
}

/* Move x past a batch it was sent; the end of the log marks it clean (and
 * tells it it caught up, once). */
static void advance(sub *x, const store_page *pg)
{
    if (x->one_stream) {
        x->cursor = pg->next;
    } else {
        /* With the whole page read in one transaction that saw `head`, a
         * finished forward read has looked at everything up to head. */
        x->cursor = pg->end && pg->head + 1 > pg->next ? pg->head + 1 : pg->next;
    }
    if (pg->end) {
        x->dirty = false;
        if (!x->caught_up_sent) {
            x->caught_up_sent = true;
            send_caught_up(x->sess, x->id, pg->head);
        }
    }
}

/* Push x's next batch from this pass's shared batches, if one holds it.
 * @return false when none does (or no memory for a view of one). */
static bool serve_shared(subs *r, sub *x, size_t room)
{
    size_t off = 0;
    const shared_batch *hit = shared_find(r, x, room, &off);
    if (!hit) {
        return false;
    }
    reply_shared *part = NULL;
    if (off > 0 && off < hit->payload->len) {
        part = reply_shared_view(hit->payload, off);
        if (!part) {
            return false; /* read it instead */
        }
    }
    r->shared_hits++;
    reply_shared *p = part ? part : off == 0 ? hit->payload : NULL;
    if (p) {
        reply_send_shared(x->sess, x->id, ES__V1__RESPONSE__KIND_EVENTS, p);
        r->pass_bytes += p->len;
    }
    reply_shared_release(part);
    store_page pg = hit->pg;
    advance(x, &pg);
    return true;
}

/* The lowest cursor past x's at which this pass holds a batch for x's
 * target (UINT64_MAX: none): x's own read stops there and goes on from
 * that batch. */
static uint64_t shared_next_cursor(const subs *r, const sub *x)
{
    uint64_t best = UINT64_MAX;
    uint64_t head = store_head(r->srv->st);
    for (unsigned i = 0; i < r->shared_used; i++) {
        const shared_batch *b = &r->shared[i];
        if (b->tgt == x->tgt && b->batch == x->batch && b->payload && b->cursor > x->cursor &&
            b->cursor < best && (!b->pg.end || b->pg.head == head)) {
            best = b->cursor;
        }
    }
    return best;
}

/* Read (or take from this pass's shared batches) and push x's next batch,
 * then up to SUBS_CHAIN more from the shared batches while x has room.
 * @return false when the subscription was dropped. *read_store tells
 * whether the store was read. */
static bool deliver_one(subs *r, sub *x, bool *read_store)
{
    session *s = x->sess;
    store *st = r->srv->st;
    *read_store = false;
    if (!x->one_stream && x->cursor > store_head(st) && x->caught_up_sent) {
        x->dirty = false; /* nothing new anywhere: no transaction needed */
        return true;
    }
    size_t room = reply_session_budget(s, SUBS_BATCH_BYTES);
    if (!serve_shared(r, x, room)) {
        *read_store = true;
        r->store_reads++;
        bytebuf buf = {0};
        store_page pg;
        uint64_t stop = x->one_stream ? UINT64_MAX : shared_next_cursor(r, x);
        es_err rv = read_batch(r, x, room, stop, &buf, &pg);
        if (rv != ES_OK) {
            send_dropped(s, x->id, rv,
                         rv == ES_ERR_CORRUPT ? "a stored record failed its checksum"
                                              : es_strerror(rv));
            sub_unlink_free(r, s, x);
            return false;
        }
        r->pass_bytes += buf.len;
        reply_shared *payload = buf.len ? reply_shared_create(&buf) : NULL;
        if (payload) {
            reply_send_shared(s, x->id, ES__V1__RESPONSE__KIND_EVENTS, payload);
            shared_keep(r, x, payload, &pg);
        } else {
            /* An empty page, or no memory to share it: sent as it is. */
            if (buf.len) {
                reply_send_wrapped(s, x->id, ES__V1__RESPONSE__KIND_EVENTS, &buf);
            } else {
                shared_keep(r, x, NULL, &pg);
            }
            bb_free(&buf);
        }
        advance(x, &pg);
    }
    /* Behind the others of its target, x joins them: the batches they
     * were sent this pass follow on from where x is now. */
    for (unsigned i = 0; i < SUBS_CHAIN && x->dirty && !x->one_stream &&
                         r->pass_bytes < SUBS_PASS_BYTES && has_room(s);
         i++) {
        if (!serve_shared(r, x, reply_session_budget(s, SUBS_BATCH_BYTES))) {
            break;
        }
    }
    return true;
}

bool subs_deliver(subs *r)
{
    /* This pass serves what is ready now, within its limits (the others
     * keep their place); what becomes ready meanwhile (a batch that left
     * more) waits for the next pass. Between passes the loop polls its
     * sockets: appends and pings are not held up by a thousand
     * subscribers, whose next batches grow instead. */
    sub *stop = r->ready_tail;
    if (!r->ready_head) {
        return false;
    }
    r->pass_bytes = 0;
    unsigned reads = 0;
    for (unsigned done = 0;; done++) {
        sub *x = r->ready_head;
        bool last = x == stop;
        ready_remove(r, x);
        bool read_store = false;
        if (x->dirty && has_room(x->sess) && deliver_one(r, x, &read_store) && x->dirty &&
            has_room(x->sess)) {
            ready_push(r, x);
        }
        reads += read_store;
        /* A subscription with no room leaves the list, still dirty:
         * subs_on_writable brings it back. */
        if (last || !r->ready_head || reads >= SUBS_PER_PASS || done + 1 >= SUBS_SHARED_PER_PASS ||
            r->pass_bytes >= SUBS_PASS_BYTES) {
            break;
        }
    }
    shared_clear(r);
    return r->ready_head != NULL;
}

void subs_batch_stats(const subs *r, uint64_t *from_store, uint64_t *shared)
{
    *from_store = r->store_reads;
    *shared = r->shared_hits;
}

void subs_lag(const subs *r, uint64_t head, subs_lag_stats *out)
{
    memset(out, 0, sizeof *out);
    for (const sub *x = r->all; x; x = x->next_all) {
        if (x->one_stream) {
            out->behind += !x->caught_up_sent;
            continue;
        }
        /* A clean subscription has matched nothing since it caught up. */
        uint64_t lag = x->dirty && head >= x->cursor ? head - x->cursor + 1 : 0;
        out->sum += lag;
        out->max = lag > out->max ? lag : out->max;
        out->behind += lag > 0;
    }
}

void subs_drop_all(session *s, es_err reason, const char *message)
{
    subs *r = s->srv ? s->srv->subs : NULL;
    while (s->subs && r) {
        sub *x = s->subs;
        send_dropped(s, x->id, reason, message);
        sub_unlink_free(r, s, x);
    }
}

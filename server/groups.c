#include "groups.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pbwire.h"
#include "reply.h"
#include "validate.h"

/* Design notes in groups.h. */

/* E_SETTLING: acked, skipped or parked, not yet committed: it holds its
 * stream (a kill -9 before the commit brings it back, and no later event of
 * its stream may have gone out meanwhile). */
enum { E_PENDING = 0, E_INFLIGHT, E_SETTLING, E_DONE };
enum { SETTLE_DONE = 0, SETTLE_PARK };

typedef struct member member;
typedef struct gstream gstream;

typedef struct entry {
    uint64_t pos;
    gstream *st;
    struct entry *next_pending;      /* its stream's queue */
    struct entry *prev_fl, *next_fl; /* the group's in-flight list (delivery order) */
    member *m;
    uint64_t deadline_us;
    uint32_t attempts;     /* deliveries so far */
    uint64_t timed_out_at; /* member_bit of each member its ack timeout passed at */
    uint8_t state;
    uint8_t settle; /* E_SETTLING: SETTLE_DONE or SETTLE_PARK */
    bool replay;    /* a parked event replayed: not in the window */
    struct entry *next_settling;
    uint32_t len;
    uint8_t *bytes; /* the packed RecordedEvent, stored right after the entry */
} entry;

struct gstream {
    gstream *next_hash;
    uint32_t hash;
    entry *head, *tail; /* pending, in delivery order */
    entry *inflight;
    uint32_t blocking; /* parked events holding it (park_blocks) */
    uint32_t refs;     /* entries pointing at it (window, replays) */
    bool on_ready;
    gstream *next_ready;
    size_t len;
    uint8_t name[]; /* len bytes */
};

struct member {
    member *next;      /* the group's members */
    member *next_sess; /* the session's memberships (session.gmembers) */
    struct group *g;
    session *sess;
    uint64_t id; /* of the JoinGroup request */
    uint32_t max_in_flight, in_flight;
    char consumer[64];
    /* Positions taken back from it in this sweep, told in one GroupRevoked
     * (revoke_flush); at most its in-flight count, never above
     * GROUPS_REVOKE_MAX. */
    uint64_t *revoked;
    uint32_t n_revoked, cap_revoked;
};

/* A request answered once the job holding its changes committed. */
typedef struct waiter {
    struct waiter *next;
    session *sess; /* NULL: the connection left meanwhile */
    uint64_t id;
    uint32_t count;
    int kind;          /* the Request kind */
    struct group *g;   /* create: NULL until made; update/delete: the group */
    store_group_op op; /* create/update/delete */
} waiter;

typedef struct group {
    struct group *next;
    store_group_def def; /* as stored (checkpoint: the last one written) */
    bool deleted;        /* a DeleteGroup is on its way: nothing more is served */
    uint64_t checkpoint;
    uint64_t scan;      /* the next position to read */
    uint64_t read_upto; /* the highest position a fill visited: never read twice */
    /* The window: a ring of entries in position order. */
    entry **win;
    size_t win_head, win_len, win_cap;
    size_t win_bytes;
    /* Loaded at start: ranges of positions above the checkpoint already
     * done (acked, skipped, parked), sorted. */
    struct skip_range {
        uint64_t from, to;
    } * skip;
    size_t n_skip, cap_skip, skip_at;
    gstream **buckets;
    uint32_t n_buckets, n_streams;
    gstream *ready_head, *ready_tail;
    entry *fl_head, *fl_tail;
    member *members;
    uint32_t n_members;
    member *rr; /* where the next delivery round starts */
    /* Changes not yet handed to the writer. */
    uint64_t *p_done;
    size_t n_p_done, cap_p_done;
    store_group_parked *p_parks; /* stream and reason malloc'd */
    size_t n_p_parks, cap_p_parks;
    uint64_t *p_unparks;
    size_t n_p_unparks, cap_p_unparks;
    entry *settling, **settling_tail; /* settled since the last job was made */
    bool cp_dirty;
    /* Figures. */
    uint64_t acked, retries, n_parked;
    uint32_t in_flight;
    bool scan_failed;
} group;

/* The changes of one job, kept until it completes. */
typedef struct job_ctx {
    write_job job;
    waiter *waiters;
    store_group_op *ops;
    size_t n_ops;
    /* what the FLUSH ops point to */
    uint64_t **dones;
    store_group_parked **parks;
    size_t *n_parks;
    uint64_t **unparks;
    struct group **fgroups; /* the group of each FLUSH op */
    entry **settled;        /* its entries to finish once committed */
    size_t n_flush;
} job_ctx;

struct groups {
    server_ctx *srv;
    group *list;
    uint32_t n_groups;
    waiter *queued, **queued_tail; /* for the next job */
    job_ctx *running;              /* the job at the writer (one at a time) */
    uint64_t last_cp_write_us;
    uint64_t (*clock)(void *ctx); /* NULL: mono_us (groups_set_clock) */
    void *clock_ctx;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t gnow(const groups *gs)
{
    return gs->clock ? gs->clock(gs->clock_ctx) : mono_us();
}

void groups_set_clock(groups *gs, uint64_t (*now)(void *ctx), void *ctx)
{
    gs->clock = now;
    gs->clock_ctx = ctx;
}

static void kick(groups *gs)
{
    if (gs->srv->kick) {
        gs->srv->kick(gs->srv->kick_ctx);
    }
}

static bool has_room(const session *s)
{
    return !s->dead && !s->paused_output && s->outlen(s->io) < s->srv->cfg->max_output_bytes / 2;
}

/* ------------------------------------------------------------ streams -- */

static uint32_t hash_name(const uint8_t *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static void streams_grow(group *g)
{
    uint32_t nb = g->n_buckets ? g->n_buckets * 2 : 64;
    gstream **b = calloc(nb, sizeof *b);
    if (!b) {
        return; /* longer chains, still correct */
    }
    for (uint32_t i = 0; i < g->n_buckets; i++) {
        gstream *x = g->buckets[i];
        while (x) {
            gstream *next = x->next_hash;
            x->next_hash = b[x->hash & (nb - 1)];
            b[x->hash & (nb - 1)] = x;
            x = next;
        }
    }
    free(g->buckets);
    g->buckets = b;
    g->n_buckets = nb;
}

static gstream *stream_get(group *g, const uint8_t *name, size_t len)
{
    if (!g->n_buckets) {
        streams_grow(g);
        if (!g->n_buckets) {
            return NULL;
        }
    }
    uint32_t h = hash_name(name, len);
    for (gstream *x = g->buckets[h & (g->n_buckets - 1)]; x; x = x->next_hash) {
        if (x->hash == h && x->len == len && !memcmp(x->name, name, len)) {
            return x;
        }
    }
    gstream *x = calloc(1, sizeof *x + len);
    if (!x) {
        return NULL;
    }
    x->hash = h;
    x->len = len;
    memcpy(x->name, name, len);
    x->next_hash = g->buckets[h & (g->n_buckets - 1)];
    g->buckets[h & (g->n_buckets - 1)] = x;
    if (++g->n_streams > g->n_buckets) {
        streams_grow(g);
    }
    return x;
}

/* Free a stream with nothing queued, in flight or holding it. */
static void stream_maybe_free(group *g, gstream *x)
{
    if (x->head || x->inflight || x->blocking || x->on_ready || x->refs) {
        return;
    }
    for (gstream **pp = &g->buckets[x->hash & (g->n_buckets - 1)]; *pp; pp = &(*pp)->next_hash) {
        if (*pp == x) {
            *pp = x->next_hash;
            break;
        }
    }
    g->n_streams--;
    free(x);
}

static void ready_push(group *g, gstream *x)
{
    if (x->on_ready || !x->head || x->inflight || x->blocking) {
        return;
    }
    x->on_ready = true;
    x->next_ready = NULL;
    if (g->ready_tail) {
        g->ready_tail->next_ready = x;
    } else {
        g->ready_head = x;
    }
    g->ready_tail = x;
}

static gstream *ready_pop(group *g)
{
    gstream *x = g->ready_head;
    if (x) {
        g->ready_head = x->next_ready;
        if (!g->ready_head) {
            g->ready_tail = NULL;
        }
        x->on_ready = false;
        x->next_ready = NULL;
    }
    return x;
}

static void queue_back(gstream *x, entry *e)
{
    e->next_pending = NULL;
    if (x->tail) {
        x->tail->next_pending = e;
    } else {
        x->head = e;
    }
    x->tail = e;
}

static void queue_front(gstream *x, entry *e)
{
    e->next_pending = x->head;
    x->head = e;
    if (!x->tail) {
        x->tail = e;
    }
}

/* ------------------------------------------------------------- window -- */

static bool win_push(group *g, entry *e)
{
    if (g->win_len == g->win_cap) {
        size_t nc = g->win_cap ? g->win_cap * 2 : 1024;
        entry **w = malloc(nc * sizeof *w);
        if (!w) {
            return false;
        }
        for (size_t i = 0; i < g->win_len; i++) {
            w[i] = g->win[(g->win_head + i) % g->win_cap];
        }
        free(g->win);
        g->win = w;
        g->win_head = 0;
        g->win_cap = nc;
    }
    g->win[(g->win_head + g->win_len) % g->win_cap] = e;
    g->win_len++;
    g->win_bytes += e->len;
    return true;
}

static entry *win_at(const group *g, size_t i)
{
    return g->win[(g->win_head + i) % g->win_cap];
}

static entry *win_find(const group *g, uint64_t pos)
{
    size_t lo = 0, hi = g->win_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        entry *e = win_at(g, mid);
        if (e->pos == pos) {
            return e;
        }
        if (e->pos < pos) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* One allocation for the entry and a copy of its record. */
static entry *entry_new(const uint8_t *bytes, size_t len)
{
    entry *e = calloc(1, sizeof *e + (len ? len : 1));
    if (e) {
        e->bytes = (uint8_t *)(e + 1);
        e->len = (uint32_t)len;
        memcpy(e->bytes, bytes, len);
    }
    return e;
}

static void entry_free(entry *e)
{
    free(e);
}

/* Move the checkpoint over the done events at the window's front. */
static void advance_checkpoint(group *g)
{
    uint64_t before = g->checkpoint;
    while (g->win_len) {
        entry *e = win_at(g, 0);
        if (e->state != E_DONE) {
            break;
        }
        g->checkpoint = e->pos;
        g->win_head = (g->win_head + 1) % g->win_cap;
        g->win_len--;
        g->win_bytes -= e->len;
        gstream *x = e->st;
        entry_free(e);
        x->refs--;
        stream_maybe_free(g, x);
    }
    if (!g->win_len && g->scan > 0 && g->scan - 1 > g->checkpoint) {
        g->checkpoint = g->scan - 1;
    }
    if (g->checkpoint != before) {
        g->cp_dirty = true;
    }
}

/* ------------------------------------------------------------ pending -- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return true;
    }
    size_t nc = *cap ? *cap * 2 : 256;
    void *p = realloc(*arr, nc * size);
    if (!p) {
        return false;
    }
    *arr = p;
    *cap = nc;
    return true;
}

static void note_done(group *g, uint64_t pos)
{
    if (grow((void **)&g->p_done, &g->cap_p_done, g->n_p_done, sizeof *g->p_done)) {
        g->p_done[g->n_p_done++] = pos;
    }
    /* Out of memory: the checkpoint still covers it once it passes. */
}

static void note_unpark(group *g, uint64_t pos)
{
    if (grow((void **)&g->p_unparks, &g->cap_p_unparks, g->n_p_unparks, sizeof *g->p_unparks)) {
        g->p_unparks[g->n_p_unparks++] = pos;
    }
}

static void note_park(group *g, const entry *e, const char *reason)
{
    if (!grow((void **)&g->p_parks, &g->cap_p_parks, g->n_p_parks, sizeof *g->p_parks)) {
        return;
    }
    size_t rlen = strlen(reason);
    if (rlen > STORE_GROUP_REASON_MAX) {
        rlen = STORE_GROUP_REASON_MAX;
    }
    uint8_t *stream = malloc(e->st->len + rlen + 1);
    if (!stream) {
        return;
    }
    memcpy(stream, e->st->name, e->st->len);
    memcpy(stream + e->st->len, reason, rlen);
    store_group_parked *p = &g->p_parks[g->n_p_parks++];
    p->position = e->pos;
    p->attempts = e->attempts;
    p->parked_at_us = store_now_us();
    p->stream = stream;
    p->stream_len = e->st->len;
    p->reason = (const char *)stream + e->st->len;
    p->reason_len = rlen;
}

/* ------------------------------------------------------- state changes -- */

static void fl_remove(group *g, entry *e)
{
    if (e->prev_fl) {
        e->prev_fl->next_fl = e->next_fl;
    } else {
        g->fl_head = e->next_fl;
    }
    if (e->next_fl) {
        e->next_fl->prev_fl = e->prev_fl;
    } else {
        g->fl_tail = e->prev_fl;
    }
    e->prev_fl = e->next_fl = NULL;
}

static void fl_append(group *g, entry *e)
{
    e->next_fl = NULL;
    e->prev_fl = g->fl_tail;
    if (g->fl_tail) {
        g->fl_tail->next_fl = e;
    } else {
        g->fl_head = e;
    }
    g->fl_tail = e;
}

/* An in-flight event leaves its member. */
static void take_back(group *g, entry *e)
{
    fl_remove(g, e);
    if (e->m) {
        e->m->in_flight--;
    }
    e->m = NULL;
    g->in_flight--;
    e->st->inflight = NULL;
}

/* ------------------------------------------------------------ revokes -- */

static void revoke_flush(const group *g, member *m);

/* pos, in flight with m, is being taken back while m is still connected:
 * m is told with its next revoke_flush. Out of memory the position is not
 * told (the library may then hand it out late, as without the push). */
static void revoke_note(const group *g, member *m, uint64_t pos)
{
    if (m->n_revoked >= GROUPS_REVOKE_MAX) {
        revoke_flush(g, m); /* not reached: a member has at most that many in flight */
    }
    if (m->n_revoked == m->cap_revoked) {
        uint32_t nc = m->cap_revoked ? m->cap_revoked * 2 : 64;
        if (nc > GROUPS_REVOKE_MAX) {
            nc = GROUPS_REVOKE_MAX;
        }
        uint64_t *p = realloc(m->revoked, nc * sizeof *p);
        if (!p) {
            return;
        }
        m->revoked = p;
        m->cap_revoked = nc;
    }
    m->revoked[m->n_revoked++] = pos;
}

/* Tell m, in one GroupRevoked push, the positions noted since the last
 * flush (ascending). */
static void revoke_flush(const group *g, member *m)
{
    if (!m->n_revoked) {
        return;
    }
    if (m->n_revoked > 1) {
        qsort(m->revoked, m->n_revoked, sizeof *m->revoked, cmp_u64);
    }
    if (!m->sess->dead) {
        Es__V1__GroupRevoked r = ES__V1__GROUP_REVOKED__INIT;
        r.name.data = (uint8_t *)g->def.name;
        r.name.len = g->def.name_len;
        r.positions = m->revoked;
        r.n_positions = m->n_revoked;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = m->id;
        resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_REVOKED;
        resp.group_revoked = &r;
        reply_send(m->sess, &resp);
    }
    m->n_revoked = 0;
}

/* One bit of 64 for a member (its connection and join id): a set of
 * members in a word, where a false match only costs a needless revoke. */
static uint64_t member_bit(const member *m)
{
    uint64_t h = (m->sess->conn_id * 0x9e3779b97f4a7c15u) ^ m->id;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 32;
    return (uint64_t)1 << (h & 63);
}

static void member_free(member *m)
{
    free(m->revoked);
    free(m);
}

/* e (in flight, taken back) is acked, skipped or parked: written by the
 * next job, its stream held until that commit (settled_finish). */
static void settle(group *g, entry *e, bool parked, const char *reason)
{
    e->state = E_SETTLING;
    e->settle = parked ? SETTLE_PARK : SETTLE_DONE;
    e->st->inflight = e;
    if (parked) {
        note_park(g, e, reason);
    } else if (e->replay) {
        note_unpark(g, e->pos);
    } else {
        note_done(g, e->pos);
    }
    e->next_settling = NULL;
    if (!g->settling) {
        g->settling_tail = &g->settling;
    }
    *g->settling_tail = e;
    g->settling_tail = &e->next_settling;
}

/* A settling entry's change committed (ok) or failed (then it is pending
 * again, at the front of its stream). */
static void settled_finish(group *g, entry *e, bool ok)
{
    gstream *x = e->st;
    x->inflight = NULL;
    if (!ok) {
        e->state = E_PENDING;
        queue_front(x, e);
        ready_push(g, x);
        return;
    }
    e->state = E_DONE;
    if (e->settle == SETTLE_PARK) {
        g->n_parked += e->replay ? 0 : 1;
        if (g->def.park_blocks) {
            x->blocking++;
        }
    } else if (e->replay) {
        g->n_parked--;
        g->acked++;
    } else {
        g->acked++;
    }
    ready_push(g, x);
    if (e->replay) {
        entry_free(e);
        x->refs--;
        stream_maybe_free(g, x);
    } else {
        advance_checkpoint(g);
    }
}

/* e (in flight, taken back) failed: again, or parked after max_retries. */
static void failed(group *g, entry *e, const char *reason)
{
    if (e->attempts > g->def.max_retries) {
        settle(g, e, true, reason);
        return;
    }
    g->retries++;
    e->state = E_PENDING;
    queue_front(e->st, e);
    ready_push(g, e->st);
}

/* ------------------------------------------------------------ reading -- */

typedef struct fill_ctx {
    group *g;
    bool full;
} fill_ctx;

static bool window_full(const group *g)
{
    return g->win_len >= GROUPS_WINDOW_EVENTS || g->win_bytes >= GROUPS_WINDOW_BYTES;
}

static int fill_visit(void *ctx, const store_record *rec)
{
    fill_ctx *fc = ctx;
    group *g = fc->g;
    if (window_full(g)) {
        fc->full = true;
        return -1;
    }
    if (rec->position <= g->read_upto) {
        return 0; /* seen already: one entry per position, whatever a read returns */
    }
    g->read_upto = rec->position;
    while (g->skip_at < g->n_skip && g->skip[g->skip_at].to < rec->position) {
        g->skip_at++;
    }
    if (g->skip_at < g->n_skip && g->skip[g->skip_at].from <= rec->position) {
        return 0; /* done before the restart */
    }
    const uint8_t *stream;
    size_t stream_len;
    if (pbw_find_bytes(rec->bytes, rec->len, 1, &stream, &stream_len) != ES_OK) {
        g->read_upto = rec->position - 1;
        g->scan_failed = true;
        return -1;
    }
    if (g->def.target == ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM &&
        (stream_len != g->def.target_name_len ||
         memcmp(stream, g->def.target_name, stream_len) != 0)) {
        return 0; /* the prefix read matched a longer stream id */
    }
    entry *e = entry_new(rec->bytes, rec->len);
    gstream *x = e ? stream_get(g, stream, stream_len) : NULL;
    if (!x) {
        entry_free(e);
        g->read_upto = rec->position - 1; /* read again later */
        fc->full = true;                  /* out of memory: try again later */
        return -1;
    }
    e->pos = rec->position;
    e->st = x;
    x->refs++;
    if (!win_push(g, e)) {
        entry_free(e);
        x->refs--;
        stream_maybe_free(g, x);
        g->read_upto = rec->position - 1;
        fc->full = true;
        return -1;
    }
    queue_back(x, e);
    ready_push(g, x);
    return 0;
}

/* Read on while the window has room. @return true when it may read more. */
static bool fill(groups *gs, group *g)
{
    store *st = gs->srv->st;
    uint64_t head = store_head(st);
    for (int round = 0; round < 8; round++) {
        if (g->scan > head || window_full(g) || g->scan_failed) {
            return false;
        }
        store_filter f = {STORE_FILTER_NONE, g->def.target_name, g->def.target_name_len};
        switch (g->def.target) {
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM:
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM_PREFIX:
            f.kind = STORE_FILTER_STREAM_PREFIX;
            break;
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY:
            f.kind = STORE_FILTER_CATEGORY;
            break;
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_EVENT_TYPE:
            f.kind = STORE_FILTER_EVENT_TYPE;
            break;
        default:
            break;
        }
        fill_ctx fc = {g, false};
        store_page pg;
        es_err rv = store_read_all(st, f.kind == STORE_FILTER_NONE ? NULL : &f, g->scan, false,
                                   1024, fill_visit, &fc, &pg);
        if (rv != ES_OK) {
            return false; /* tried again after the next commit */
        }
        /* Stopped early (window full), the page's next is where to go on,
         * even when it was the last record. */
        g->scan = !fc.full && pg.end && pg.head + 1 > pg.next ? pg.head + 1 : pg.next;
        advance_checkpoint(g);
        if (fc.full || g->scan_failed) {
            return false;
        }
    }
    return g->scan <= head;
}

/* ----------------------------------------------------------- delivery -- */

/* Hand up to `max` ready events to m. @return events handed. */
static uint32_t deliver_to(group *g, member *m, uint32_t max, uint64_t now)
{
    page_ctx pc = {.budget = reply_session_budget(m->sess, reply_page_budget(m->sess->srv->cfg))};
    uint32_t n = 0;
    while (n < max) {
        gstream *x = ready_pop(g);
        if (!x) {
            break;
        }
        if (!x->head || x->inflight || x->blocking) {
            stream_maybe_free(g, x);
            continue;
        }
        entry *e = x->head;
        store_record rec = {e->pos, e->bytes, e->len};
        if (page_visit(&pc, &rec) != 0) {
            ready_push(g, x); /* no room in this push: the next one */
            break;
        }
        x->head = e->next_pending;
        if (!x->head) {
            x->tail = NULL;
        }
        e->next_pending = NULL;
        e->state = E_INFLIGHT;
        e->attempts++;
        e->m = m;
        e->deadline_us = now + (uint64_t)g->def.ack_timeout_ms * 1000u;
        x->inflight = e;
        fl_append(g, e);
        m->in_flight++;
        g->in_flight++;
        n++;
    }
    if (pc.buf.len) {
        reply_send_wrapped(m->sess, m->id, ES__V1__RESPONSE__KIND_GROUP_EVENTS, &pc.buf);
    }
    bb_free(&pc.buf);
    return n;
}

static bool deliver_group(groups *gs, group *g)
{
    bool more = fill(gs, g);
    if (!g->members || !g->ready_head) {
        return more;
    }
    /* Round-robin from where the last pass stopped; each member takes at
     * most its share of what is ready, so a batch is spread. */
    uint32_t handed = 0;
    for (int round = 0; round < 4 && g->ready_head; round++) {
        uint32_t with_room = 0;
        for (member *m = g->members; m; m = m->next) {
            with_room += m->in_flight < m->max_in_flight && has_room(m->sess);
        }
        if (!with_room) {
            break;
        }
        member *start = g->rr ? g->rr : g->members;
        member *m = start;
        handed = 0;
        do {
            if (m->in_flight < m->max_in_flight && has_room(m->sess) && g->ready_head) {
                uint32_t share = (g->n_streams + with_room - 1) / with_room;
                uint32_t room = m->max_in_flight - m->in_flight;
                uint32_t max = share < room ? share : room;
                handed += deliver_to(g, m, max ? max : 1, gnow(gs));
            }
            m = m->next ? m->next : g->members;
        } while (m != start);
        g->rr = start->next ? start->next : g->members;
        if (!handed) {
            break;
        }
        if (fill(gs, g)) {
            more = true;
        }
    }
    /* Ready events with no member room wait for an ack, a join or
     * writable output (each kicks a pass): no spinning. */
    return more || (handed && g->ready_head);
}

/* ---------------------------------------------------------- persisting -- */

static void waiter_reply(waiter *w, es_err rv, bool synced);
static void group_free(group *g);

static bool group_has_changes(const group *g)
{
    return g->n_p_done || g->n_p_parks || g->n_p_unparks || g->settling;
}

static void job_ctx_free(job_ctx *jc)
{
    for (size_t i = 0; i < jc->n_flush; i++) {
        free(jc->dones[i]);
        for (size_t k = 0; k < jc->n_parks[i]; k++) {
            free((void *)jc->parks[i][k].stream);
        }
        free(jc->parks[i]);
        free(jc->unparks[i]);
    }
    free(jc->dones);
    free(jc->parks);
    free(jc->n_parks);
    free(jc->unparks);
    free(jc->fgroups);
    free(jc->settled);
    free(jc->ops);
    free(jc);
}

/* Hand what has gathered to the writer, unless a job is there already.
 * cp_too: checkpoint-only changes go too. */
static void persist(groups *gs, bool cp_too)
{
    if (gs->running) {
        return;
    }
    size_t n_admin = 0, n_flush = 0;
    for (waiter *w = gs->queued; w; w = w->next) {
        n_admin += w->kind == ES__V1__REQUEST__KIND_CREATE_GROUP ||
                   w->kind == ES__V1__REQUEST__KIND_UPDATE_GROUP ||
                   w->kind == ES__V1__REQUEST__KIND_DELETE_GROUP;
    }
    bool any_waiter = gs->queued != NULL;
    for (group *g = gs->list; g; g = g->next) {
        if (!g->deleted && (group_has_changes(g) || ((cp_too || any_waiter) && g->cp_dirty))) {
            n_flush++;
        }
    }
    if (!n_admin && !n_flush && !gs->queued) {
        return;
    }
    job_ctx *jc = calloc(1, sizeof *jc);
    if (!jc) {
        return;
    }
    jc->ops = calloc(n_admin + n_flush + 1, sizeof *jc->ops);
    jc->dones = calloc(n_flush + 1, sizeof *jc->dones);
    jc->parks = calloc(n_flush + 1, sizeof *jc->parks);
    jc->n_parks = calloc(n_flush + 1, sizeof *jc->n_parks);
    jc->unparks = calloc(n_flush + 1, sizeof *jc->unparks);
    jc->fgroups = calloc(n_flush + 1, sizeof *jc->fgroups);
    jc->settled = calloc(n_flush + 1, sizeof *jc->settled);
    if (!jc->ops || !jc->dones || !jc->parks || !jc->n_parks || !jc->unparks || !jc->fgroups ||
        !jc->settled) {
        job_ctx_free(jc);
        return;
    }
    size_t k = 0;
    for (waiter *w = gs->queued; w; w = w->next) {
        if (w->kind == ES__V1__REQUEST__KIND_CREATE_GROUP ||
            w->kind == ES__V1__REQUEST__KIND_UPDATE_GROUP ||
            w->kind == ES__V1__REQUEST__KIND_DELETE_GROUP) {
            jc->ops[k++] = w->op;
        }
    }
    for (group *g = gs->list; g; g = g->next) {
        if (g->deleted || !(group_has_changes(g) || ((cp_too || any_waiter) && g->cp_dirty))) {
            continue;
        }
        /* Acks the checkpoint has passed meanwhile need no entry of their
         * own: in order, most of them. */
        size_t kept = 0;
        for (size_t i = 0; i < g->n_p_done; i++) {
            if (g->p_done[i] > g->checkpoint) {
                g->p_done[kept++] = g->p_done[i];
            }
        }
        g->n_p_done = kept;
        /* Ascending: the store keeps runs of them as ranges. */
        if (g->n_p_done > 1) {
            qsort(g->p_done, g->n_p_done, sizeof *g->p_done, cmp_u64);
        }
        size_t f = jc->n_flush++;
        store_group_op *op = &jc->ops[k++];
        op->kind = STORE_GROUP_FLUSH;
        op->def = g->def;
        op->checkpoint = g->checkpoint;
        op->done = jc->dones[f] = g->p_done;
        op->n_done = g->n_p_done;
        op->parks = jc->parks[f] = g->p_parks;
        op->n_parks = jc->n_parks[f] = g->n_p_parks;
        op->unparks = jc->unparks[f] = g->p_unparks;
        op->n_unparks = g->n_p_unparks;
        g->p_done = NULL;
        g->n_p_done = g->cap_p_done = 0;
        g->p_parks = NULL;
        g->n_p_parks = g->cap_p_parks = 0;
        g->p_unparks = NULL;
        g->n_p_unparks = g->cap_p_unparks = 0;
        g->cp_dirty = false;
        jc->fgroups[f] = g;
        jc->settled[f] = g->settling;
        g->settling = NULL;
        g->settling_tail = &g->settling;
    }
    jc->n_ops = k;
    jc->waiters = gs->queued;
    gs->queued = NULL;
    gs->queued_tail = &gs->queued;
    jc->job.kind = WRITE_JOB_GROUP;
    jc->job.group.ops = jc->ops;
    jc->job.group.n = k;
    jc->job.owner = jc;
    if (writer_submit(gs->srv->w, &jc->job) != ES_OK) {
        for (size_t f = 0; f < jc->n_flush; f++) {
            for (entry *e = jc->settled[f]; e;) {
                entry *next = e->next_settling;
                settled_finish(jc->fgroups[f], e, false);
                e = next;
            }
        }
        for (waiter *w = jc->waiters; w;) {
            waiter *next = w->next;
            waiter_reply(w, ES_ERR_SHUTTING_DOWN, false);
            free(w);
            w = next;
        }
        jc->waiters = NULL;
        job_ctx_free(jc);
        return;
    }
    gs->running = jc;
    gs->last_cp_write_us = mono_us();
}

static void queue_waiter(groups *gs, waiter *w)
{
    w->next = NULL;
    *gs->queued_tail = w;
    gs->queued_tail = &w->next;
}

/* -------------------------------------------------------------- replies -- */

static void send_done(session *s, uint64_t id, bool synced, uint32_t count)
{
    Es__V1__GroupDone d = ES__V1__GROUP_DONE__INIT;
    d.synced = synced;
    d.count = count;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_DONE;
    resp.group_done = &d;
    reply_send(s, &resp);
}

static void waiter_reply(waiter *w, es_err rv, bool synced)
{
    if (!w->sess) {
        return;
    }
    if (rv != ES_OK) {
        reply_send_error(w->sess, w->id, rv, NULL);
    } else {
        send_done(w->sess, w->id, synced, w->count);
    }
}

static void send_left(session *s, uint64_t id, es_err reason, const char *msg)
{
    Es__V1__GroupLeft l = ES__V1__GROUP_LEFT__INIT;
    l.reason = (Es__V1__ErrorCode)reason;
    l.message = (char *)msg;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_LEFT;
    resp.group_left = &l;
    reply_send(s, &resp);
}

/* ------------------------------------------------------------ lifecycle -- */

static group *group_new(const store_group_def *def)
{
    group *g = calloc(1, sizeof *g);
    if (!g) {
        return NULL;
    }
    g->def = *def;
    g->checkpoint = def->checkpoint;
    g->scan = def->checkpoint + 1;
    return g;
}

static void group_free(group *g)
{
    if (!g) {
        return;
    }
    /* Replayed entries (in flight, settling or queued) are not in the
     * window: free them first, while the window's entries are still there
     * to walk past. */
    for (entry *e = g->settling; e;) {
        entry *next = e->next_settling;
        if (e->replay) {
            entry_free(e);
        }
        e = next;
    }
    for (entry *e = g->fl_head; e;) {
        entry *next = e->next_fl;
        if (e->replay) {
            entry_free(e);
        }
        e = next;
    }
    for (uint32_t i = 0; i < g->n_buckets; i++) {
        for (gstream *x = g->buckets[i]; x; x = x->next_hash) {
            for (entry *e = x->head; e;) {
                entry *en = e->next_pending;
                if (e->replay) {
                    entry_free(e);
                }
                e = en;
            }
        }
    }
    for (size_t i = 0; i < g->win_len; i++) {
        entry_free(win_at(g, i));
    }
    for (uint32_t i = 0; i < g->n_buckets; i++) {
        gstream *x = g->buckets[i];
        while (x) {
            gstream *next = x->next_hash;
            free(x);
            x = next;
        }
    }
    for (member *m = g->members; m;) {
        member *next = m->next;
        member_free(m);
        m = next;
    }
    for (size_t i = 0; i < g->n_p_parks; i++) {
        free((void *)g->p_parks[i].stream);
    }
    free(g->p_parks);
    free(g->p_done);
    free(g->p_unparks);
    free(g->buckets);
    free(g->win);
    free(g->skip);
    free(g);
}

typedef struct load_ctx {
    groups *gs;
    es_err rv;
} load_ctx;

static int skip_visit(void *ctx, uint64_t from, uint64_t to)
{
    group *g = ctx;
    if (!grow((void **)&g->skip, &g->cap_skip, g->n_skip, sizeof *g->skip)) {
        return 1;
    }
    g->skip[g->n_skip].from = from;
    g->skip[g->n_skip].to = to;
    g->n_skip++;
    return 0;
}

static int parked_load_visit(void *ctx, const store_group_parked *p)
{
    group *g = ctx;
    g->n_parked++;
    if (p->position > g->checkpoint) {
        skip_visit(g, p->position, p->position);
    }
    if (g->def.park_blocks) {
        gstream *x = stream_get(g, p->stream, p->stream_len);
        if (x) {
            x->blocking++;
        }
    }
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    return cmp_u64(&((const struct skip_range *)a)->from, &((const struct skip_range *)b)->from);
}

static int load_visit(void *ctx, const store_group_def *def)
{
    load_ctx *lc = ctx;
    group *g = group_new(def);
    if (!g) {
        lc->rv = ES_ERR_NO_MEMORY;
        return 1;
    }
    es_err rv = store_group_done(lc->gs->srv->st, def->number, skip_visit, g);
    if (rv == ES_OK) {
        rv =
            store_group_parked_list(lc->gs->srv->st, def->number, 0, 0, parked_load_visit, g, NULL);
    }
    if (rv != ES_OK) {
        group_free(g);
        lc->rv = rv;
        return 1;
    }
    g->skip_at = 0;
    if (g->n_skip > 1) {
        qsort(g->skip, g->n_skip, sizeof *g->skip, cmp_range);
    }
    g->next = lc->gs->list;
    lc->gs->list = g;
    lc->gs->n_groups++;
    return 0;
}

es_err groups_create(server_ctx *srv, groups **out)
{
    groups *gs = calloc(1, sizeof *gs);
    if (!gs) {
        return ES_ERR_NO_MEMORY;
    }
    gs->srv = srv;
    gs->queued_tail = &gs->queued;
    load_ctx lc = {gs, ES_OK};
    es_err rv = srv->st ? store_group_list(srv->st, load_visit, &lc) : ES_OK;
    if (rv == ES_OK) {
        rv = lc.rv;
    }
    if (rv != ES_OK) {
        groups_destroy(gs);
        return rv;
    }
    gs->last_cp_write_us = mono_us();
    *out = gs;
    return ES_OK;
}

static void waiters_free(waiter *w)
{
    while (w) {
        waiter *next = w->next;
        free(w);
        w = next;
    }
}

void groups_destroy(groups *gs)
{
    if (!gs) {
        return;
    }
    if (gs->running) {
        /* Replayed entries settling in the job are nobody else's (walked
         * before the groups free the window entries on these lists). */
        for (size_t f = 0; f < gs->running->n_flush; f++) {
            for (entry *e = gs->running->settled[f]; e;) {
                entry *next = e->next_settling;
                if (e->replay) {
                    entry_free(e);
                }
                e = next;
            }
        }
    }
    while (gs->list) {
        group *g = gs->list;
        gs->list = g->next;
        group_free(g);
    }
    waiters_free(gs->queued);
    if (gs->running) {
        /* The writer stopped first and returned the job to net, which
         * hands it to groups_complete; a job still here was never taken. */
        waiters_free(gs->running->waiters);
        job_ctx_free(gs->running);
    }
    free(gs);
}

/* ------------------------------------------------------------- requests -- */

bool groups_is_request(int kind)
{
    switch ((Es__V1__Request__KindCase)kind) {
    case ES__V1__REQUEST__KIND_CREATE_GROUP:
    case ES__V1__REQUEST__KIND_UPDATE_GROUP:
    case ES__V1__REQUEST__KIND_DELETE_GROUP:
    case ES__V1__REQUEST__KIND_LIST_GROUPS:
    case ES__V1__REQUEST__KIND_GROUP_INFO:
    case ES__V1__REQUEST__KIND_JOIN_GROUP:
    case ES__V1__REQUEST__KIND_GROUP_ACK:
    case ES__V1__REQUEST__KIND_GROUP_NACK:
    case ES__V1__REQUEST__KIND_LIST_PARKED:
    case ES__V1__REQUEST__KIND_REPLAY_PARKED:
        return true;
    default:
        return false;
    }
}

/*
 * Roles: admin creates, updates and deletes groups and replays parked
 * events (they change what every consumer of the group gets); read may
 * consume (join, ack, nack) and look (list, info, parked) -- consuming
 * writes only the group's own bookkeeping, never the log. write is above
 * read, so it may consume too, but not manage.
 */
auth_role groups_required_role(int kind)
{
    switch ((Es__V1__Request__KindCase)kind) {
    case ES__V1__REQUEST__KIND_LIST_GROUPS:
    case ES__V1__REQUEST__KIND_GROUP_INFO:
    case ES__V1__REQUEST__KIND_JOIN_GROUP:
    case ES__V1__REQUEST__KIND_GROUP_ACK:
    case ES__V1__REQUEST__KIND_GROUP_NACK:
    case ES__V1__REQUEST__KIND_LIST_PARKED:
        return AUTH_ROLE_READ;
    default:
        return AUTH_ROLE_ADMIN;
    }
}

/*
 * Memberships by connection: each session lists its own (session.gmembers),
 * so the checks made for every request (is this id a membership's, which
 * membership does an ack name) walk the connection's memberships, not every
 * group's members.
 */
static void member_link(session *s, member *m)
{
    m->next_sess = s->gmembers;
    s->gmembers = m;
}

static void member_unlink(member *m)
{
    for (member **pp = &m->sess->gmembers; *pp; pp = &(*pp)->next_sess) {
        if (*pp == m) {
            *pp = m->next_sess;
            return;
        }
    }
}

static group *find_group(groups *gs, const uint8_t *name, size_t len)
{
    for (group *g = gs->list; g; g = g->next) {
        if (!g->deleted && g->def.name_len == len && !memcmp(g->def.name, name, len)) {
            return g;
        }
    }
    return NULL;
}

/* The session's membership of g (g NULL: of any group) opened with id (0:
 * any id). */
static member *find_member(const group *g, const session *s, uint64_t id)
{
    for (member *m = s->gmembers; m; m = m->next_sess) {
        if ((!g || m->g == g) && (id == 0 || m->id == id)) {
            return m;
        }
    }
    return NULL;
}

bool groups_has(const session *s, uint64_t id)
{
    return find_member(NULL, s, id) != NULL;
}

/* Settings from the wire, checked; absent: the defaults. */
static es_err settings_from(const Es__V1__GroupSettings *in, store_group_def *d, const char **why)
{
    d->ack_timeout_ms = GROUPS_DEFAULT_TIMEOUT_MS;
    d->max_retries = GROUPS_DEFAULT_RETRIES;
    d->max_in_flight = GROUPS_DEFAULT_IN_FLIGHT;
    d->park_blocks = false;
    if (!in) {
        return ES_OK;
    }
    if (in->ack_timeout_ms) {
        if (in->ack_timeout_ms < GROUPS_MIN_TIMEOUT_MS ||
            in->ack_timeout_ms > GROUPS_MAX_TIMEOUT_MS) {
            *why = "ack_timeout_ms must be 100..3600000";
            return ES_ERR_INVALID_ARGUMENT;
        }
        d->ack_timeout_ms = in->ack_timeout_ms;
    }
    if (in->max_retries > GROUPS_MAX_RETRIES) {
        *why = "max_retries must be 0..1000";
        return ES_ERR_INVALID_ARGUMENT;
    }
    d->max_retries = in->max_retries;
    if (in->max_in_flight > GROUPS_MAX_IN_FLIGHT) {
        *why = "max_in_flight must be 1..10000";
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (in->max_in_flight) {
        d->max_in_flight = in->max_in_flight;
    }
    d->park_blocks = in->park_blocks;
    return ES_OK;
}

static void settings_to(Es__V1__GroupSettings *out, const store_group_def *d)
{
    out->ack_timeout_ms = d->ack_timeout_ms;
    out->max_retries = d->max_retries;
    out->park_blocks = d->park_blocks;
    out->max_in_flight = d->max_in_flight;
}

static es_err check_name(const ProtobufCBinaryData *name, const char **why)
{
    if (es_validate_name(name->data, name->len) != ES_OK) {
        *why = "a group name is 1..256 bytes of UTF-8 without control characters";
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

/* The group a request names: the name checked, then found.
 * @return ES_OK with *out; ES_ERR_INVALID_ARGUMENT (why); GROUP_NOT_FOUND. */
static es_err named_group(groups *gs, const ProtobufCBinaryData *name, const char **why,
                          group **out)
{
    es_err rv = check_name(name, why);
    if (rv != ES_OK) {
        return rv;
    }
    *out = find_group(gs, name->data, name->len);
    return *out ? ES_OK : ES_ERR_GROUP_NOT_FOUND;
}

static es_err do_create(groups *gs, session *s, uint64_t id, const Es__V1__CreateGroup *r,
                        const char **why)
{
    es_err rv = check_name(&r->name, why);
    if (rv != ES_OK) {
        return rv;
    }
    if (find_group(gs, r->name.data, r->name.len)) {
        return ES_ERR_GROUP_EXISTS;
    }
    if (gs->n_groups >= GROUPS_MAX) {
        *why = "too many consumer groups";
        return ES_ERR_TOO_MANY_REQUESTS;
    }
    waiter *w = reply_calloc(1, sizeof *w);
    if (!w) {
        return ES_ERR_NO_MEMORY;
    }
    store_group_def *d = &w->op.def;
    rv = settings_from(r->settings, d, why);
    const uint8_t *tn = r->target_name.data;
    size_t tn_len = r->target_name.len;
    if (rv == ES_OK) {
        switch (r->target) {
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL:
            if (tn_len) {
                *why = "a group over the whole log takes no target name";
                rv = ES_ERR_INVALID_ARGUMENT;
            }
            break;
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM:
            rv = es_validate_stream_id(tn, tn_len, false);
            break;
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY:
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_EVENT_TYPE:
        case ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM_PREFIX:
            if (es_validate_name(tn, tn_len) != ES_OK) {
                *why = "target name must be 1..256 bytes of UTF-8 without control characters";
                rv = ES_ERR_INVALID_ARGUMENT;
            }
            break;
        default:
            *why = "unknown target";
            rv = ES_ERR_INVALID_ARGUMENT;
        }
    }
    uint64_t head = store_head(gs->srv->st);
    if (rv == ES_OK) {
        int starts = r->from_start + r->from_end + (r->after != 0);
        if (starts > 1) {
            *why = "give one start: from_start, from_end or after";
            rv = ES_ERR_INVALID_ARGUMENT;
        } else if (r->after > head) {
            *why = "start position is beyond the head of the log";
            rv = ES_ERR_INVALID_ARGUMENT;
        }
    }
    if (rv != ES_OK) {
        free(w);
        return rv;
    }
    memcpy(d->name, r->name.data, r->name.len);
    d->name_len = r->name.len;
    d->target = (uint8_t)r->target;
    if (tn_len) {
        memcpy(d->target_name, tn, tn_len);
    }
    d->target_name_len = tn_len;
    d->checkpoint = r->from_end ? head : r->after;
    w->op.kind = STORE_GROUP_CREATE;
    w->sess = s;
    w->id = id;
    w->kind = ES__V1__REQUEST__KIND_CREATE_GROUP;
    queue_waiter(gs, w);
    persist(gs, false);
    return ES_OK;
}

static es_err do_update_delete(groups *gs, session *s, uint64_t id, int kind,
                               const ProtobufCBinaryData *name,
                               const Es__V1__GroupSettings *settings, const char **why)
{
    group *g;
    es_err rv = named_group(gs, name, why, &g);
    if (rv != ES_OK) {
        return rv;
    }
    waiter *w = reply_calloc(1, sizeof *w);
    if (!w) {
        return ES_ERR_NO_MEMORY;
    }
    w->op.def = g->def;
    if (kind == ES__V1__REQUEST__KIND_UPDATE_GROUP) {
        rv = settings_from(settings, &w->op.def, why);
        if (rv != ES_OK) {
            free(w);
            return rv;
        }
        w->op.kind = STORE_GROUP_UPDATE;
    } else {
        w->op.kind = STORE_GROUP_DELETE;
        /* From now on nothing is served: the members are told. */
        g->deleted = true;
        while (g->members) {
            member *m = g->members;
            g->members = m->next;
            send_left(m->sess, m->id, ES_ERR_GROUP_NOT_FOUND, "the group was deleted");
            member_unlink(m);
            member_free(m);
        }
        g->n_members = 0;
        g->rr = NULL;
        for (entry *e = g->fl_head; e; e = e->next_fl) {
            e->m = NULL;
        }
    }
    w->sess = s;
    w->id = id;
    w->kind = kind;
    w->g = g;
    queue_waiter(gs, w);
    persist(gs, false);
    return ES_OK;
}

static void state_to_pb(groups *gs, const group *g, Es__V1__GroupState *out,
                        Es__V1__GroupSettings *set)
{
    uint64_t head = store_head(gs->srv->st);
    out->name.data = (uint8_t *)g->def.name;
    out->name.len = g->def.name_len;
    out->target = (Es__V1__SubscribeTarget)g->def.target;
    out->target_name.data = (uint8_t *)g->def.target_name;
    out->target_name.len = g->def.target_name_len;
    settings_to(set, &g->def);
    out->settings = set;
    out->checkpoint = g->def.checkpoint; /* committed: never backwards, kill -9 included */
    out->members = g->n_members;
    out->in_flight = g->in_flight;
    out->parked = g->n_parked;
    out->acked = g->acked;
    out->lag = head > g->def.checkpoint ? head - g->def.checkpoint : 0;
    out->head_position = head;
    out->retries = g->retries;
}

static es_err do_info(groups *gs, session *s, uint64_t id, const ProtobufCBinaryData *name,
                      const char **why)
{
    group *g;
    es_err rv = named_group(gs, name, why, &g);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__GroupState st = ES__V1__GROUP_STATE__INIT;
    Es__V1__GroupSettings set = ES__V1__GROUP_SETTINGS__INIT;
    state_to_pb(gs, g, &st, &set);
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_STATE;
    resp.group_state = &st;
    reply_send(s, &resp);
    return ES_OK;
}

static es_err do_list(groups *gs, session *s, uint64_t id)
{
    size_t n = 0;
    for (group *g = gs->list; g; g = g->next) {
        n += !g->deleted;
    }
    Es__V1__GroupState *sts = reply_calloc(n + 1, sizeof *sts);
    Es__V1__GroupSettings *sets = reply_calloc(n + 1, sizeof *sets);
    Es__V1__GroupState **ptrs = reply_calloc(n + 1, sizeof *ptrs);
    if (!sts || !sets || !ptrs) {
        free(sts);
        free(sets);
        free(ptrs);
        return ES_ERR_NO_MEMORY;
    }
    size_t i = 0;
    for (group *g = gs->list; g; g = g->next) {
        if (g->deleted) {
            continue;
        }
        es__v1__group_state__init(&sts[i]);
        es__v1__group_settings__init(&sets[i]);
        state_to_pb(gs, g, &sts[i], &sets[i]);
        ptrs[i] = &sts[i];
        i++;
    }
    Es__V1__GroupList list = ES__V1__GROUP_LIST__INIT;
    list.n_groups = i;
    list.groups = ptrs;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUPS;
    resp.groups = &list;
    reply_send(s, &resp);
    free(sts);
    free(sets);
    free(ptrs);
    return ES_OK;
}

static es_err do_join(groups *gs, session *s, uint64_t id, const Es__V1__JoinGroup *r,
                      const char **why)
{
    group *g;
    es_err rv = named_group(gs, &r->name, why, &g);
    if (rv != ES_OK) {
        return rv;
    }
    if (find_member(g, s, 0)) {
        return ES_ERR_ALREADY_JOINED;
    }
    if (g->n_members >= GROUPS_MAX_MEMBERS) {
        *why = "the group has its most members";
        return ES_ERR_TOO_MANY_REQUESTS;
    }
    if (r->max_in_flight > GROUPS_MAX_IN_FLIGHT) {
        *why = "max_in_flight must be 0..10000";
        return ES_ERR_INVALID_ARGUMENT;
    }
    member *m = reply_calloc(1, sizeof *m);
    if (!m) {
        return ES_ERR_NO_MEMORY;
    }
    m->sess = s;
    m->id = id;
    m->max_in_flight = r->max_in_flight && r->max_in_flight < g->def.max_in_flight
                           ? r->max_in_flight
                           : g->def.max_in_flight;
    if (r->consumer) {
        snprintf(m->consumer, sizeof m->consumer, "%s", r->consumer);
    }
    m->g = g;
    m->next = g->members;
    g->members = m;
    g->n_members++;
    member_link(s, m);
    Es__V1__GroupJoined j = ES__V1__GROUP_JOINED__INIT;
    j.checkpoint = g->def.checkpoint;
    j.max_in_flight = m->max_in_flight;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_JOINED;
    resp.group_joined = &j;
    reply_send(s, &resp);
    kick(gs);
    return ES_OK;
}

/* The entry at pos in flight with m, or NULL. */
static entry *inflight_of(group *g, member *m, uint64_t pos)
{
    entry *e = win_find(g, pos);
    if (!e) {
        /* A replayed parked event is not in the window. */
        for (entry *x = g->fl_head; x; x = x->next_fl) {
            if (x->replay && x->pos == pos) {
                e = x;
                break;
            }
        }
    }
    return e && e->state == E_INFLIGHT && e->m == m ? e : NULL;
}

static group *group_of_member(session *s, uint64_t join_id, member **out)
{
    member *m = join_id ? find_member(NULL, s, join_id) : NULL;
    if (!m) {
        return NULL;
    }
    *out = m;
    return m->g;
}

/* GroupAck and GroupNack: one path, the ack being the action -1. */
static es_err do_ack_nack(groups *gs, session *s, uint64_t id, const Es__V1__Request *msg,
                          const char **why)
{
    bool ack = msg->kind_case == ES__V1__REQUEST__KIND_GROUP_ACK;
    uint64_t join_id = ack ? msg->group_ack->join_id : msg->group_nack->join_id;
    const uint64_t *pos = ack ? msg->group_ack->positions : msg->group_nack->positions;
    size_t n = ack ? msg->group_ack->n_positions : msg->group_nack->n_positions;
    int action = ack ? -1 : (int)msg->group_nack->action;
    const char *reason = ack ? NULL : msg->group_nack->reason;
    member *m = NULL;
    group *g = group_of_member(s, join_id, &m);
    if (!g) {
        *why = "no membership with that join id on this connection";
        return ES_ERR_NOT_IN_FLIGHT;
    }
    if (n == 0 || n > GROUPS_MAX_IN_FLIGHT) {
        *why = "give 1..10000 positions";
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (action < -1 || action > ES__V1__NACK_ACTION__NACK_ACTION_SKIP) { /* -1: an ack */
        *why = "unknown nack action";
        return ES_ERR_INVALID_ARGUMENT;
    }
    /* All or nothing: every position is checked first. A position given
     * twice is handled once. */
    for (size_t i = 0; i < n; i++) {
        if (!inflight_of(g, m, pos[i])) {
            *why = "a position is not in flight with this member";
            return ES_ERR_NOT_IN_FLIGHT;
        }
    }
    waiter *w = reply_calloc(1, sizeof *w);
    if (!w) {
        return ES_ERR_NO_MEMORY;
    }
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++) {
        entry *e = inflight_of(g, m, pos[i]);
        if (!e) {
            continue; /* a duplicate in a long list: handled once */
        }
        take_back(g, e);
        count++;
        switch (action) {
        case -1: /* ack */
            settle(g, e, false, NULL);
            break;
        case ES__V1__NACK_ACTION__NACK_ACTION_RETRY:
            /* Timed out at this member before: it may be nacking the copy
             * it had handed out then, while a later push of the event to
             * it waits in its library -- the delivery this nack settles.
             * That copy is stale now: revoked (ahead of any redelivery,
             * which comes after this request). */
            if (e->timed_out_at & member_bit(m)) {
                revoke_note(g, m, e->pos);
            }
            failed(g, e, reason && *reason ? reason : "nacked");
            break;
        case ES__V1__NACK_ACTION__NACK_ACTION_PARK:
            settle(g, e, true, reason && *reason ? reason : "parked by the consumer");
            break;
        default: /* skip */
            settle(g, e, false, NULL);
            break;
        }
    }
    revoke_flush(g, m);
    w->sess = s;
    w->id = id;
    w->count = count;
    w->kind = ES__V1__REQUEST__KIND_GROUP_ACK;
    queue_waiter(gs, w);
    persist(gs, false);
    kick(gs);
    return ES_OK;
}

typedef struct parked_page {
    Es__V1__ParkedEvent *evs;
    Es__V1__ParkedEvent **ptrs;
    char **reasons;
    uint8_t **streams;
    size_t n, cap;
    bool oom;
} parked_page;

static int parked_page_visit(void *ctx, const store_group_parked *p)
{
    parked_page *pp = ctx;
    if (pp->n == pp->cap) {
        return 1;
    }
    char *reason = malloc(p->reason_len + 1);
    uint8_t *stream = malloc(p->stream_len ? p->stream_len : 1);
    if (!reason || !stream) {
        free(reason);
        free(stream);
        pp->oom = true;
        return 1;
    }
    memcpy(reason, p->reason, p->reason_len);
    reason[p->reason_len] = '\0';
    memcpy(stream, p->stream, p->stream_len);
    Es__V1__ParkedEvent *e = &pp->evs[pp->n];
    es__v1__parked_event__init(e);
    e->position = p->position;
    e->stream.data = stream;
    e->stream.len = p->stream_len;
    e->attempts = p->attempts;
    e->reason = reason;
    e->parked_at_us = p->parked_at_us;
    pp->reasons[pp->n] = reason;
    pp->streams[pp->n] = stream;
    pp->ptrs[pp->n] = e;
    pp->n++;
    return 0;
}

static es_err do_list_parked(groups *gs, session *s, uint64_t id, const Es__V1__ListParked *r,
                             const char **why)
{
    group *g;
    es_err rv = named_group(gs, &r->name, why, &g);
    if (rv != ES_OK) {
        return rv;
    }
    uint32_t limit = r->limit ? r->limit : GROUPS_PARKED_PAGE;
    if (limit > GROUPS_PARKED_PAGE_MAX) {
        limit = GROUPS_PARKED_PAGE_MAX;
    }
    parked_page pp = {0};
    pp.cap = limit;
    pp.evs = reply_calloc(limit, sizeof *pp.evs);
    pp.ptrs = reply_calloc(limit, sizeof *pp.ptrs);
    pp.reasons = reply_calloc(limit, sizeof *pp.reasons);
    pp.streams = reply_calloc(limit, sizeof *pp.streams);
    bool more = false;
    if (!pp.evs || !pp.ptrs || !pp.reasons || !pp.streams) {
        rv = ES_ERR_NO_MEMORY;
    } else {
        rv = store_group_parked_list(gs->srv->st, g->def.number, r->after, limit, parked_page_visit,
                                     &pp, &more);
        if (rv == ES_OK && pp.oom) {
            rv = ES_ERR_NO_MEMORY;
        }
    }
    if (rv == ES_OK) {
        Es__V1__ParkedList list = ES__V1__PARKED_LIST__INIT;
        list.events = pp.ptrs;
        list.n_events = pp.n;
        list.more = more;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = id;
        resp.kind_case = ES__V1__RESPONSE__KIND_PARKED;
        resp.parked = &list;
        reply_send(s, &resp);
    }
    for (size_t i = 0; i < pp.n; i++) {
        free(pp.reasons[i]);
        free(pp.streams[i]);
    }
    free(pp.evs);
    free(pp.ptrs);
    free(pp.reasons);
    free(pp.streams);
    return rv;
}

typedef struct replay_ctx {
    groups *gs;
    group *g;
    uint32_t count;
    es_err rv;
    /* The positions being replayed already (in flight or queued), sorted:
     * the parked events come in position order, so one pass merges them. */
    uint64_t *busy;
    size_t n_busy, at;
} replay_ctx;

typedef struct replay_read {
    uint64_t want;
    entry *e;
} replay_read;

static int replay_record_visit(void *ctx, const store_record *rec)
{
    replay_read *rr = ctx;
    if (rec->position == rr->want) { /* not a later one: the parked one is gone */
        rr->e = entry_new(rec->bytes, rec->len);
    }
    return 1;
}

/* Collect the positions of replayed events in flight or queued, sorted
 * (rc->busy, malloc'd). @return false: no memory. */
static bool replaying_collect(const group *g, replay_ctx *rc)
{
    size_t n = 0, cap = 0;
    uint64_t *a = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (entry *x = g->fl_head; x; x = x->next_fl) {
            if (x->replay && a) {
                a[n++] = x->pos;
            } else if (x->replay) {
                cap++;
            }
        }
        for (uint32_t i = 0; i < g->n_buckets; i++) {
            for (gstream *x = g->buckets[i]; x; x = x->next_hash) {
                for (entry *e = x->head; e; e = e->next_pending) {
                    if (e->replay && a) {
                        a[n++] = e->pos;
                    } else if (e->replay) {
                        cap++;
                    }
                }
            }
        }
        if (pass == 0) {
            if (cap == 0) {
                break;
            }
            a = malloc(cap * sizeof *a);
            if (!a) {
                return false;
            }
        }
    }
    if (n > 1) {
        qsort(a, n, sizeof *a, cmp_u64);
    }
    rc->busy = a;
    rc->n_busy = n;
    rc->at = 0;
    return true;
}

/* Whether pos is being replayed already; positions asked in ascending order. */
static bool replaying(replay_ctx *rc, uint64_t pos)
{
    while (rc->at < rc->n_busy && rc->busy[rc->at] < pos) {
        rc->at++;
    }
    return rc->at < rc->n_busy && rc->busy[rc->at] == pos;
}

static int replay_visit(void *ctx, const store_group_parked *p)
{
    replay_ctx *rc = ctx;
    group *g = rc->g;
    if (replaying(rc, p->position)) {
        return 0;
    }
    replay_read rr = {p->position, NULL};
    store_page pg;
    es_err rv =
        store_read_all(rc->gs->srv->st, NULL, p->position, false, 1, replay_record_visit, &rr, &pg);
    entry *e = rr.e;
    if (rv != ES_OK || !e) {
        /* The event is gone from the log (retention), or no memory: not now. */
        entry_free(e);
        return 0;
    }
    gstream *x = stream_get(g, p->stream, p->stream_len);
    if (!x) {
        entry_free(e);
        rc->rv = ES_ERR_NO_MEMORY;
        return 1;
    }
    e->pos = p->position;
    e->st = x;
    x->refs++;
    e->replay = true;
    e->attempts = 0;
    if (g->def.park_blocks && x->blocking) {
        x->blocking--;
    }
    queue_front(x, e);
    ready_push(g, x);
    rc->count++;
    return 0;
}

static es_err do_replay(groups *gs, session *s, uint64_t id, const ProtobufCBinaryData *name,
                        const char **why)
{
    group *g;
    es_err rv = named_group(gs, name, why, &g);
    if (rv != ES_OK) {
        return rv;
    }
    replay_ctx rc = {gs, g, 0, ES_OK, NULL, 0, 0};
    if (!replaying_collect(g, &rc)) {
        return ES_ERR_NO_MEMORY;
    }
    rv = store_group_parked_list(gs->srv->st, g->def.number, 0, GROUPS_WINDOW_EVENTS, replay_visit,
                                 &rc, NULL);
    free(rc.busy);
    if (rv == ES_OK) {
        rv = rc.rv;
    }
    if (rv != ES_OK && rc.count == 0) {
        return rv;
    }
    send_done(s, id, false, rc.count);
    kick(gs);
    return ES_OK;
}

void groups_request(session *s, uint64_t id, const Es__V1__Request *msg)
{
    groups *gs = s->srv->groups;
    const char *why = NULL;
    es_err rv;
    if (s->srv->follow) {
        reply_send_error(s, id, ES_ERR_FOLLOWER, "consumer groups are served by the primary");
        return;
    }
    if (!gs) {
        reply_send_error(s, id, ES_ERR_INTERNAL, "consumer groups are not available");
        return;
    }
    switch (msg->kind_case) {
    case ES__V1__REQUEST__KIND_CREATE_GROUP:
        rv = do_create(gs, s, id, msg->create_group, &why);
        break;
    case ES__V1__REQUEST__KIND_UPDATE_GROUP:
        rv = do_update_delete(gs, s, id, msg->kind_case, &msg->update_group->name,
                              msg->update_group->settings, &why);
        break;
    case ES__V1__REQUEST__KIND_DELETE_GROUP:
        rv = do_update_delete(gs, s, id, msg->kind_case, &msg->delete_group->name, NULL, &why);
        break;
    case ES__V1__REQUEST__KIND_LIST_GROUPS:
        rv = do_list(gs, s, id);
        break;
    case ES__V1__REQUEST__KIND_GROUP_INFO:
        rv = do_info(gs, s, id, &msg->group_info->name, &why);
        break;
    case ES__V1__REQUEST__KIND_JOIN_GROUP:
        rv = do_join(gs, s, id, msg->join_group, &why);
        break;
    case ES__V1__REQUEST__KIND_GROUP_ACK:
    case ES__V1__REQUEST__KIND_GROUP_NACK:
        rv = do_ack_nack(gs, s, id, msg, &why);
        break;
    case ES__V1__REQUEST__KIND_LIST_PARKED:
        rv = do_list_parked(gs, s, id, msg->list_parked, &why);
        break;
    case ES__V1__REQUEST__KIND_REPLAY_PARKED:
        rv = do_replay(gs, s, id, &msg->replay_parked->name, &why);
        break;
    default:
        rv = ES_ERR_UNKNOWN_REQUEST;
    }
    if (rv != ES_OK) {
        reply_send_error(s, id, rv, why);
    }
}

/* m leaves g: its events go back (counted as a failed delivery). tell: m's
 * connection stays (it left with Unsubscribe): it gets a GroupRevoked of
 * them, after anything pushed to it before. */
static void member_remove(group *g, member *m, const char *reason, bool tell)
{
    for (member **pp = &g->members; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    g->n_members--;
    member_unlink(m);
    if (g->rr == m) {
        g->rr = NULL;
    }
    for (entry *e = g->fl_head; e;) {
        entry *next = e->next_fl;
        if (e->m == m) {
            if (tell) {
                revoke_note(g, m, e->pos);
            }
            take_back(g, e);
            failed(g, e, reason);
        }
        e = next;
    }
    revoke_flush(g, m);
    member_free(m);
}

void groups_leave(session *s, uint64_t id, uint64_t join_id)
{
    groups *gs = s->srv->groups;
    member *m = NULL;
    group *g = gs ? group_of_member(s, join_id, &m) : NULL;
    if (!g) {
        reply_send_error(s, id, ES_ERR_SUBSCRIPTION_NOT_FOUND, NULL);
        return;
    }
    member_remove(g, m, "the consumer left", true);
    Es__V1__UnsubscribeOk ok = ES__V1__UNSUBSCRIBE_OK__INIT;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_UNSUBSCRIBED;
    resp.unsubscribed = &ok;
    reply_send(s, &resp);
    persist(gs, false);
    kick(gs);
}

void groups_drop_session(session *s)
{
    groups *gs = s->srv ? s->srv->groups : NULL;
    if (!gs) {
        return;
    }
    bool changed = s->gmembers != NULL;
    while (s->gmembers) {
        member_remove(s->gmembers->g, s->gmembers, "the consumer disconnected", false);
    }
    for (waiter *w = gs->queued; w; w = w->next) {
        if (w->sess == s) {
            w->sess = NULL;
        }
    }
    if (gs->running) {
        for (waiter *w = gs->running->waiters; w; w = w->next) {
            if (w->sess == s) {
                w->sess = NULL;
            }
        }
    }
    if (changed) {
        persist(gs, false);
        kick(gs);
    }
}

/* ---------------------------------------------------------- the loop -- */

void groups_on_writable(session *s)
{
    groups *gs = s->srv ? s->srv->groups : NULL;
    if (gs && groups_has(s, 0)) {
        kick(gs);
    }
}

void groups_on_commit(groups *gs)
{
    if (!gs) {
        return;
    }
    uint64_t head = store_head(gs->srv->st);
    for (group *g = gs->list; g; g = g->next) {
        if (!g->deleted && g->scan <= head) {
            kick(gs);
            return;
        }
    }
}

bool groups_deliver(groups *gs)
{
    if (!gs) {
        return false;
    }
    bool more = false;
    for (group *g = gs->list; g; g = g->next) {
        if (!g->deleted && deliver_group(gs, g)) {
            more = true;
        }
    }
    persist(gs, false);
    return more;
}

void groups_tick(groups *gs)
{
    if (!gs) {
        return;
    }
    uint64_t now = gnow(gs);
    bool changed = false;
    for (group *g = gs->list; g; g = g->next) {
        if (g->deleted) {
            continue;
        }
        /* The in-flight list is in delivery order; with one timeout per
         * group, deadlines are in order too (an update may shorten it:
         * the walk goes on past a later deadline). */
        for (entry *e = g->fl_head; e;) {
            entry *next = e->next_fl;
            if (e->deadline_us <= now) {
                if (e->m) {
                    revoke_note(g, e->m, e->pos);
                    e->timed_out_at |= member_bit(e->m);
                }
                take_back(g, e);
                failed(g, e, "ack timeout");
                changed = true;
            }
            e = next;
        }
        /* One GroupRevoked per member per sweep, sent before the events
         * can go to anyone else (the next delivery pass). */
        for (member *m = g->members; m; m = m->next) {
            revoke_flush(g, m);
        }
    }
    bool cp_due = mono_us() - gs->last_cp_write_us >= 1000000u;
    persist(gs, cp_due);
    if (changed) {
        kick(gs);
    }
}

void groups_complete(groups *gs, write_job *job)
{
    job_ctx *jc = job->owner;
    if (gs->running == jc) {
        gs->running = NULL;
    }
    es_err job_rv = job->group.rv;
    /* First the settled entries (their groups are alive: a delete frees
     * its group below, in a later job than any flush of it). */
    size_t first_flush = jc->n_ops - jc->n_flush;
    bool settled_any = false;
    for (size_t f = 0; f < jc->n_flush; f++) {
        const store_group_op *op = &jc->ops[first_flush + f];
        bool ok = job_rv == ES_OK && op->rv == ES_OK;
        group *g = jc->fgroups[f];
        if (ok && op->def.checkpoint > g->def.checkpoint) {
            g->def.checkpoint = op->def.checkpoint; /* what GroupState reports */
        }
        settled_any |= jc->settled[f] != NULL;
        for (entry *e = jc->settled[f]; e;) {
            entry *next = e->next_settling;
            settled_finish(g, e, ok);
            e = next;
        }
        jc->settled[f] = NULL;
    }
    size_t k = 0;
    for (waiter *w = jc->waiters; w;) {
        waiter *next = w->next;
        es_err rv = job_rv;
        if (w->kind == ES__V1__REQUEST__KIND_CREATE_GROUP ||
            w->kind == ES__V1__REQUEST__KIND_UPDATE_GROUP ||
            w->kind == ES__V1__REQUEST__KIND_DELETE_GROUP) {
            store_group_op *op = &jc->ops[k++];
            rv = op->rv;
            if (w->kind == ES__V1__REQUEST__KIND_CREATE_GROUP && rv == ES_OK) {
                group *g = group_new(&op->def);
                if (g) {
                    g->next = gs->list;
                    gs->list = g;
                    gs->n_groups++;
                } else {
                    rv = ES_ERR_NO_MEMORY;
                }
            } else if (w->kind == ES__V1__REQUEST__KIND_UPDATE_GROUP && rv == ES_OK && w->g &&
                       !w->g->deleted) {
                w->g->def.ack_timeout_ms = op->def.ack_timeout_ms;
                w->g->def.max_retries = op->def.max_retries;
                w->g->def.max_in_flight = op->def.max_in_flight;
                w->g->def.park_blocks = op->def.park_blocks;
            } else if (w->kind == ES__V1__REQUEST__KIND_DELETE_GROUP && w->g) {
                for (group **pp = &gs->list; *pp; pp = &(*pp)->next) {
                    if (*pp == w->g) {
                        *pp = w->g->next;
                        gs->n_groups--;
                        group_free(w->g);
                        break;
                    }
                }
            }
        }
        waiter_reply(w, rv, job->group.synced);
        free(w);
        w = next;
    }
    jc->waiters = NULL;
    job_ctx_free(jc);
    /* The acks just committed moved the checkpoint in memory: store it with
     * the next job (under load that job carries new acks anyway). */
    persist(gs, settled_any);
    kick(gs);
}

void groups_stats(groups *gs, void (*visit)(void *ctx, const groups_stat *st), void *ctx)
{
    if (!gs) {
        return;
    }
    uint64_t head = store_head(gs->srv->st);
    for (group *g = gs->list; g; g = g->next) {
        if (g->deleted) {
            continue;
        }
        groups_stat st = {g->def.name,      g->def.name_len,
                          g->n_members,     g->in_flight,
                          g->acked,         g->retries,
                          g->n_parked,      head > g->def.checkpoint ? head - g->def.checkpoint : 0,
                          g->def.checkpoint};
        visit(ctx, &st);
    }
}

/* --------------------------------------------------- members, for looks -- */

es_err groups_members(groups *gs, const uint8_t *name, size_t name_len,
                      void (*visit)(void *ctx, const groups_member_stat *m), void *ctx)
{
    group *g = gs ? find_group(gs, name, name_len) : NULL;
    if (!g) {
        return ES_ERR_GROUP_NOT_FOUND;
    }
    for (const member *m = g->members; m; m = m->next) {
        groups_member_stat st = {m->consumer, m->sess->user, m->sess->peer_addr, m->sess->conn_id,
                                 m->id,       m->in_flight,  m->max_in_flight};
        visit(ctx, &st);
    }
    return ES_OK;
}

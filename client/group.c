/*
 * group.c — consumer groups in libesclient (es/group.h).
 *
 * Design notes
 * ------------
 * Management calls are plain request/reply (cl_call). A member is a JoinGroup
 * on the client's connection: the server pushes GroupEvents (and GroupLeft)
 * with the join's request id. Whichever call reads the connection queues
 * those pushes on the member (cl_group_on_push: a copy of the bytes, never a
 * callback); es_group_next takes the oldest and decodes it in place. The
 * queue needs no cap of its own: the server never has more than the
 * member's max_in_flight events out with it, so the queue holds at most
 * that many events.
 *
 * A late ack: when an event's ack timeout passes at the server just as the
 * member acks it, the server may have pushed it to this same member again
 * before the ack arrived; the ack then settles that redelivery, and the
 * copy still queued here is stale. So the positions acked, skipped or
 * parked while pushes are queued are remembered (acked_while_queued) and
 * left out when those pushes are decoded: nothing reaches the application
 * after its ack was answered.
 *
 * Revoked events: the server's ack timeout runs from when it pushed a
 * batch, so while the application works on one batch, a batch queued here
 * may time out, and the server gives its events to another member (which
 * may ack them before this one gets to them). The server then pushes a
 * GroupRevoked with the positions it took back from this member, after
 * everything it pushed to it before. (It does so too when a retry nack
 * names an event that timed out here before: the nack may name the copy
 * handed out before a timeout and settle a redelivery queued here; the
 * settled positions above cover acks, skips and parks.) cl_group_on_push
 * applies it at once to the pushes queued at that moment -- only those: a
 * later push may carry the same position again, delivered anew to this
 * member -- by rewriting each GroupEvents in place without the revoked
 * events, and dropping a push left empty. The batch already handed out stays with the
 * application (its ack is answered NOT_IN_FLIGHT). A GroupRevoked that
 * cannot be decoded drops every queued batch: they are still in flight at
 * the server and come again after their ack timeout, which keeps the
 * order. es_group_next reads whatever has arrived, without waiting,
 * before it hands out a queued batch (below), so a revoke that reached
 * the connection is applied first.
 *
 * Reconnection: a member lives on one connection (c->epoch). When es_group_next
 * finds the connection gone or replaced, it drops the queue (the server
 * took those events back when the connection ended) and joins again on a
 * new one, with the same name, max_in_flight and label. It looks before
 * handing out a queued batch, reading without waiting whatever arrived: a
 * batch whose connection has ended may be with another member already, so
 * handing it out would break per-stream order and deliver events after
 * their ack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "es/group.h"
#include "internal.h"
#include "pbwire.h"

/* Reads without waiting before a queued batch is handed out (each up to
 * the connection's receive chunk). */
#define GROUP_DRAIN_READS 64

typedef struct gpush {
    struct gpush *next;
    uint32_t kind;
    size_t len;
    uint8_t data[]; /* the push message's bytes */
} gpush;

struct es_group_member {
    es_client *c; /* NULL once the client was destroyed */
    struct es_group_member *next;
    char *name;
    char *consumer;
    uint32_t max_in_flight;
    uint64_t id;    /* the JoinGroup request's id; 0: not joined */
    uint64_t epoch; /* the connection it lives on */
    gpush *head, *tail;
    es_err closed; /* GroupLeft: why */
    /* the batch handed out by es_group_next */
    es_recorded_event *events;
    size_t n_events, cap_events;
    char *strings;
    size_t strings_cap;
    gpush *current;
    uint64_t *settled; /* positions settled while pushes were queued */
    size_t n_settled, cap_settled;
    uint64_t revokes, revoked_dropped; /* GroupRevoked pushes; events they dropped */
};

void es_group_settings_init(es_group_settings *s)
{
    if (s) {
        s->ack_timeout_ms = 30000;
        s->max_retries = 10;
        s->max_in_flight = 1000;
        s->park_blocks = false;
    }
}

static es_err check_name(es_client *c, const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > 256u) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "a group name is 1..%u bytes", 256u);
    }
    return ES_OK;
}

static void settings_to_pb(Es__V1__GroupSettings *out, const es_group_settings *in)
{
    out->ack_timeout_ms = in->ack_timeout_ms;
    out->max_retries = in->max_retries;
    out->max_in_flight = in->max_in_flight;
    out->park_blocks = in->park_blocks;
}

static es_err call_done(es_client *c, Es__V1__Request *req, uint32_t *count)
{
    Es__V1__Response *resp = NULL;
    es_err rv = cl_call(c, req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    if (count) {
        *count = resp->group_done ? resp->group_done->count : 0;
    }
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_group_create(es_client *c, const char *name, es_group_target target,
                       const char *target_name, es_group_start start, uint64_t after,
                       const es_group_settings *settings)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__CreateGroup cg = ES__V1__CREATE_GROUP__INIT;
    Es__V1__GroupSettings gs = ES__V1__GROUP_SETTINGS__INIT;
    cg.name.data = (uint8_t *)name;
    cg.name.len = strlen(name);
    cg.target = (Es__V1__SubscribeTarget)target;
    if (target_name) {
        cg.target_name.data = (uint8_t *)target_name;
        cg.target_name.len = strlen(target_name);
    }
    cg.from_start = start == ES_GROUP_FROM_START;
    cg.from_end = start == ES_GROUP_FROM_END;
    cg.after = start == ES_GROUP_AFTER ? after : 0;
    if (settings) {
        settings_to_pb(&gs, settings);
        cg.settings = &gs;
    }
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_CREATE_GROUP;
    req.create_group = &cg;
    return call_done(c, &req, NULL);
}

es_err es_group_update(es_client *c, const char *name, const es_group_settings *settings)
{
    if (c == NULL || settings == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__UpdateGroup ug = ES__V1__UPDATE_GROUP__INIT;
    Es__V1__GroupSettings gs = ES__V1__GROUP_SETTINGS__INIT;
    ug.name.data = (uint8_t *)name;
    ug.name.len = strlen(name);
    settings_to_pb(&gs, settings);
    ug.settings = &gs;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_UPDATE_GROUP;
    req.update_group = &ug;
    return call_done(c, &req, NULL);
}

es_err es_group_delete(es_client *c, const char *name)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__DeleteGroup dg = ES__V1__DELETE_GROUP__INIT;
    dg.name.data = (uint8_t *)name;
    dg.name.len = strlen(name);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_DELETE_GROUP;
    req.delete_group = &dg;
    return call_done(c, &req, NULL);
}

es_err es_group_replay_parked(es_client *c, const char *name, uint32_t *count)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__ReplayParked rp = ES__V1__REPLAY_PARKED__INIT;
    rp.name.data = (uint8_t *)name;
    rp.name.len = strlen(name);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_REPLAY_PARKED;
    req.replay_parked = &rp;
    return call_done(c, &req, count);
}

static void copy_bytes(char *out, size_t cap, const ProtobufCBinaryData *b)
{
    size_t n = b->len < cap - 1 ? b->len : cap - 1;
    if (n) {
        memcpy(out, b->data, n);
    }
    out[n] = '\0';
}

static void info_from(es_group_info *out, const Es__V1__GroupState *st)
{
    memset(out, 0, sizeof *out);
    copy_bytes(out->name, sizeof out->name, &st->name);
    out->target = (es_group_target)st->target;
    copy_bytes(out->target_name, sizeof out->target_name, &st->target_name);
    if (st->settings) {
        out->settings.ack_timeout_ms = st->settings->ack_timeout_ms;
        out->settings.max_retries = st->settings->max_retries;
        out->settings.max_in_flight = st->settings->max_in_flight;
        out->settings.park_blocks = st->settings->park_blocks;
    }
    out->checkpoint = st->checkpoint;
    out->members = st->members;
    out->in_flight = st->in_flight;
    out->parked = st->parked;
    out->acked = st->acked;
    out->retries = st->retries;
    out->lag = st->lag;
    out->head_position = st->head_position;
}

es_err es_group_info_get(es_client *c, const char *name, es_group_info *out)
{
    if (c == NULL || out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__GroupInfoRequest gi = ES__V1__GROUP_INFO_REQUEST__INIT;
    gi.name.data = (uint8_t *)name;
    gi.name.len = strlen(name);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_GROUP_INFO;
    req.group_info = &gi;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    info_from(out, resp->group_state);
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_group_list(es_client *c, es_group_info **out, size_t *n)
{
    if (c == NULL || out == NULL || n == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    *n = 0;
    Es__V1__ListGroups lg = ES__V1__LIST_GROUPS__INIT;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_LIST_GROUPS;
    req.list_groups = &lg;
    Es__V1__Response *resp = NULL;
    es_err rv = cl_call(c, &req, 1024, 4u * 1024u * 1024u, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    size_t k = resp->groups->n_groups;
    es_group_info *arr = calloc(k ? k : 1, sizeof *arr);
    if (!arr) {
        cl_resp_free(resp);
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for %zu groups", k);
    }
    for (size_t i = 0; i < k; i++) {
        info_from(&arr[i], resp->groups->groups[i]);
    }
    cl_resp_free(resp);
    *out = arr;
    *n = k;
    return ES_OK;
}

es_err es_group_parked_list(es_client *c, const char *name, uint64_t after, uint32_t limit,
                            es_group_parked **out, size_t *n, bool *more)
{
    if (c == NULL || out == NULL || n == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    *n = 0;
    if (more) {
        *more = false;
    }
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__ListParked lp = ES__V1__LIST_PARKED__INIT;
    lp.name.data = (uint8_t *)name;
    lp.name.len = strlen(name);
    lp.after = after;
    lp.limit = limit;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_LIST_PARKED;
    req.list_parked = &lp;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 1000, 4u * 1024u * 1024u, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    size_t k = resp->parked->n_events;
    es_group_parked *arr = calloc(k ? k : 1, sizeof *arr);
    if (!arr) {
        cl_resp_free(resp);
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for %zu parked events", k);
    }
    for (size_t i = 0; i < k; i++) {
        const Es__V1__ParkedEvent *p = resp->parked->events[i];
        arr[i].position = p->position;
        copy_bytes(arr[i].stream, sizeof arr[i].stream, &p->stream);
        arr[i].attempts = p->attempts;
        snprintf(arr[i].reason, sizeof arr[i].reason, "%s", p->reason ? p->reason : "");
        arr[i].parked_at_us = p->parked_at_us;
    }
    if (more) {
        *more = resp->parked->more;
    }
    cl_resp_free(resp);
    *out = arr;
    *n = k;
    return ES_OK;
}

/* -------------------------------------------------------------- members -- */

static void queue_clear(es_group_member *m)
{
    while (m->head) {
        gpush *p = m->head;
        m->head = p->next;
        free(p);
    }
    m->tail = NULL;
    free(m->current);
    m->current = NULL;
    m->n_events = 0;
    m->n_settled = 0;
}

static bool was_settled(const es_group_member *m, uint64_t pos)
{
    for (size_t i = 0; i < m->n_settled; i++) {
        if (m->settled[i] == pos) {
            return true;
        }
    }
    return false;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool pos_in(const uint64_t *sorted, size_t n, uint64_t pos)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] == pos) {
            return true;
        }
        if (sorted[mid] < pos) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return false;
}

/* Rewrite the GroupEvents p in place without the events at the revoked
 * positions (sorted). @return the events left in it; a part that does not
 * scan counts as one and stays (es_group_next reports it malformed). */
static size_t push_drop(es_group_member *m, gpush *p, const uint64_t *sorted, size_t n)
{
    const uint8_t *q = p->data, *end = p->data + p->len;
    uint8_t *w = p->data;
    size_t left = 0;
    pbw_field f;
    for (;;) {
        const uint8_t *start = q;
        es_err rv = pbw_next(&q, end, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            break;
        }
        if (rv != ES_OK) {
            /* Keep the rest as it is: es_group_next reports it malformed. */
            memmove(w, start, (size_t)(end - start));
            w += end - start;
            left++;
            break;
        }
        if (f.number == 1 && f.wire == PBW_WIRE_LEN) {
            uint64_t pos;
            if (pbw_find_varint(f.data, f.len, 3, &pos) == ES_OK && pos_in(sorted, n, pos)) {
                m->revoked_dropped++;
                continue;
            }
            left++;
        }
        memmove(w, start, (size_t)(q - start));
        w += q - start;
    }
    p->len = (size_t)(w - p->data);
    return left;
}

/* A GroupRevoked for m: drop its positions from the pushes queued now. */
static void revoke_apply(es_group_member *m, const uint8_t *data, size_t len)
{
    m->revokes++;
    Es__V1__GroupRevoked *r = es__v1__group_revoked__unpack(NULL, len, data);
    if (r && r->n_positions > 1) {
        qsort(r->positions, r->n_positions, sizeof *r->positions, cmp_u64);
    }
    gpush **pp = &m->head;
    gpush *last = NULL;
    while (*pp) {
        gpush *p = *pp;
        if (p->kind == ES__V1__RESPONSE__KIND_GROUP_EVENTS) {
            size_t left = 0;
            if (r) {
                left = push_drop(m, p, r->positions, r->n_positions);
            }
            if (left == 0) {
                /* Emptied, or the revoke was unreadable: the server has
                 * these events back, or does after their ack timeout. */
                *pp = p->next;
                free(p);
                continue;
            }
        }
        last = p;
        pp = &p->next;
    }
    m->tail = last;
    if (!m->head) {
        m->n_settled = 0; /* no push left that could hold a stale copy */
    }
    if (r) {
        es__v1__group_revoked__free_unpacked(r, NULL);
    }
}

void cl_group_on_push(es_client *c, uint64_t id, uint32_t kind, const uint8_t *data, size_t len)
{
    es_group_member *m = c->members;
    while (m && !(m->id == id && m->epoch == c->epoch)) {
        m = m->next;
    }
    if (!m) {
        c->pushes_dropped++; /* a member that left (a revoke after its leave, say) */
        return;
    }
    if (kind == ES__V1__RESPONSE__KIND_GROUP_REVOKED) {
        revoke_apply(m, data, len);
        return;
    }
    gpush *p = malloc(sizeof *p + (len ? len : 1));
    if (!p) {
        /* The events come back after the ack timeout. */
        c->pushes_dropped++;
        return;
    }
    p->next = NULL;
    p->kind = kind;
    p->len = len;
    if (len) {
        memcpy(p->data, data, len);
    }
    if (m->tail) {
        m->tail->next = p;
    } else {
        m->head = p;
    }
    m->tail = p;
}

void cl_groups_detach(es_client *c)
{
    for (es_group_member *m = c->members; m; m = m->next) {
        m->c = NULL;
    }
    c->members = NULL;
}

static es_err join(es_group_member *m)
{
    es_client *c = m->c;
    es_err rv = cl_ensure(c);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__JoinGroup jg = ES__V1__JOIN_GROUP__INIT;
    jg.name.data = (uint8_t *)m->name;
    jg.name.len = strlen(m->name);
    jg.max_in_flight = m->max_in_flight;
    jg.consumer = m->consumer ? m->consumer : (char *)"";
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_JOIN_GROUP;
    req.join_group = &jg;
    uint64_t id;
    /* The id is known before the reply: pushes may follow it at once. */
    m->id = c->next_id + 1;
    m->epoch = c->epoch;
    rv = cl_submit(c, &req, 0, CL_SMALL_REPLY_CAP, &id);
    if (rv == ES_OK) {
        m->id = id;
        Es__V1__Response *resp = NULL;
        rv = cl_wait(c, id, &resp);
        cl_resp_free(resp);
    }
    if (rv != ES_OK) {
        m->id = 0;
    }
    return rv;
}

es_err es_group_join(es_client *c, const char *name, uint32_t max_in_flight, const char *consumer,
                     es_group_member **out)
{
    if (c == NULL || out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    es_err rv = check_name(c, name);
    if (rv != ES_OK) {
        return rv;
    }
    es_group_member *m = calloc(1, sizeof *m);
    if (!m) {
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a member");
    }
    m->c = c;
    m->name = strdup(name);
    m->consumer = consumer ? strdup(consumer) : NULL;
    m->max_in_flight = max_in_flight;
    if (!m->name || (consumer && !m->consumer)) {
        free(m->name);
        free(m->consumer);
        free(m);
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a member");
    }
    m->next = c->members;
    c->members = m;
    rv = join(m);
    if (rv != ES_OK) {
        es_group_leave(m);
        return rv;
    }
    *out = m;
    return ES_OK;
}

static bool attached(const es_group_member *m)
{
    const es_client *c = m->c;
    return c != NULL && c->fd >= 0 && c->ready && m->id != 0 && m->epoch == c->epoch;
}

/* Decode the GroupEvents at the head of the queue into m->events. */
static es_err take_batch(es_group_member *m, es_recorded_event **events, size_t *n)
{
    es_client *c = m->c;
    gpush *p = m->head;
    m->head = p->next;
    if (!m->head) {
        m->tail = NULL;
    }
    free(m->current);
    m->current = p;
    m->n_events = 0;
    if (p->kind == ES__V1__RESPONSE__KIND_GROUP_LEFT) {
        uint64_t reason = ES_ERR_CLOSED;
        const uint8_t *q = p->data, *end = p->data + p->len;
        pbw_field f;
        while (pbw_next(&q, end, &f) == ES_OK) {
            if (f.number == 1 && f.wire == PBW_WIRE_VARINT) {
                reason = f.varint;
            }
        }
        m->closed = (es_err)reason;
        m->id = 0;
        return cl_fail(c, m->closed, "the server ended the membership of group %s", m->name);
    }
    /* Count, then decode in place (the strings need the event's size plus
     * three NULs each). */
    size_t count = 0, strings = 0;
    const uint8_t *q = p->data, *end = p->data + p->len;
    pbw_field f;
    es_err rv;
    while ((rv = pbw_next(&q, end, &f)) == ES_OK) {
        if (f.number == 1 && f.wire == PBW_WIRE_LEN) {
            count++;
            strings += f.len + 3;
        }
    }
    if (rv != ES_ERR_NOT_FOUND) {
        return cl_fail(c, ES_ERR_MALFORMED, "a malformed batch of group events");
    }
    if (count > m->cap_events) {
        es_recorded_event *ev = realloc(m->events, count * sizeof *ev);
        if (!ev) {
            return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a batch");
        }
        m->events = ev;
        m->cap_events = count;
    }
    if (strings > m->strings_cap) {
        char *sp = realloc(m->strings, strings);
        if (!sp) {
            return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a batch");
        }
        m->strings = sp;
        m->strings_cap = strings;
    }
    char *sp = m->strings;
    q = p->data;
    size_t k = 0;
    while (pbw_next(&q, end, &f) == ES_OK) {
        if (f.number == 1 && f.wire == PBW_WIRE_LEN) {
            if (!cl_parse_event(f.data, f.len, &m->events[k], &sp)) {
                return cl_fail(c, ES_ERR_MALFORMED, "an invalid event in a group batch");
            }
            if (!was_settled(m, m->events[k].position)) {
                k++; /* else a stale copy of an event acked meanwhile */
            }
        }
    }
    if (!m->head) {
        m->n_settled = 0; /* no push left that could hold a stale copy */
    }
    m->n_events = k;
    *events = m->events;
    *n = k;
    return ES_OK;
}

es_err es_group_next(es_group_member *m, int timeout_ms, es_recorded_event **events, size_t *n)
{
    if (m == NULL || events == NULL || n == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *events = NULL;
    *n = 0;
    es_client *c = m->c;
    if (c == NULL) {
        return ES_ERR_CLOSED;
    }
    if (m->closed != ES_OK) {
        return cl_fail(c, m->closed, "the membership of group %s ended", m->name);
    }
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : cl_mono_us() + (uint64_t)timeout_ms * 1000u;
    for (;;) {
        if (m->head && attached(m)) {
            /* Queued pushes are handed out only while their connection
             * lives and after the revokes that reached it: read what has
             * arrived (an end of the connection included) without
             * waiting, first -- a bounded number of reads, in case
             * another member or subscription of this client streams. */
            for (int i = 0; i < GROUP_DRAIN_READS && attached(m); i++) {
                if (conn_pump(c, 0) != ES_OK) {
                    break;
                }
            }
        }
        if (m->head && attached(m)) {
            return take_batch(m, events, n);
        }
        if (!attached(m)) {
            queue_clear(m); /* the server took those events back */
            es_err rv = join(m);
            if (rv != ES_OK) {
                if (rv == ES_ERR_GROUP_NOT_FOUND || rv == ES_ERR_PERMISSION_DENIED) {
                    m->closed = rv;
                }
                return rv;
            }
            continue;
        }
        uint64_t now = cl_mono_us();
        if (now >= deadline) {
            return ES_OK;
        }
        es_err rv = conn_pump(c, deadline);
        if (rv == ES_ERR_TIMEOUT) {
            if (cl_mono_us() >= deadline) {
                return ES_OK;
            }
        }
        /* Another error: the connection is gone; the next turn rejoins. */
    }
}

static es_err ack_nack(es_group_member *m, const uint64_t *positions, size_t n, bool ack,
                       es_nack_action action, const char *reason)
{
    if (m == NULL || (n && positions == NULL)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_client *c = m->c;
    if (c == NULL) {
        return ES_ERR_CLOSED;
    }
    if (!attached(m)) {
        return cl_fail(c, ES_ERR_NOT_IN_FLIGHT,
                       "the connection was lost: these events are delivered again");
    }
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    Es__V1__GroupAck ga = ES__V1__GROUP_ACK__INIT;
    Es__V1__GroupNack gn = ES__V1__GROUP_NACK__INIT;
    if (ack) {
        ga.join_id = m->id;
        ga.positions = (uint64_t *)positions;
        ga.n_positions = n;
        req.kind_case = ES__V1__REQUEST__KIND_GROUP_ACK;
        req.group_ack = &ga;
    } else {
        gn.join_id = m->id;
        gn.positions = (uint64_t *)positions;
        gn.n_positions = n;
        gn.action = (Es__V1__NackAction)action;
        gn.reason = (char *)(reason ? reason : "");
        req.kind_case = ES__V1__REQUEST__KIND_GROUP_NACK;
        req.group_nack = &gn;
    }
    uint64_t id;
    es_err rv = cl_submit(c, &req, 0, CL_SMALL_REPLY_CAP, &id);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__Response *resp = NULL;
    rv = cl_wait(c, id, &resp);
    cl_resp_free(resp);
    if (rv == ES_OK && m->head && (ack || action != ES_NACK_RETRY)) {
        /* Settled: a copy in a queued push is stale (see the notes). */
        if (m->n_settled + n > m->cap_settled) {
            size_t cap = (m->n_settled + n) * 2;
            uint64_t *p = realloc(m->settled, cap * sizeof *p);
            if (!p) {
                return ES_OK; /* the copy then fails its ack with NOT_IN_FLIGHT */
            }
            m->settled = p;
            m->cap_settled = cap;
        }
        memcpy(m->settled + m->n_settled, positions, n * sizeof *positions);
        m->n_settled += n;
    }
    return rv;
}

es_err es_group_ack(es_group_member *m, const uint64_t *positions, size_t n)
{
    return ack_nack(m, positions, n, true, ES_NACK_RETRY, NULL);
}

es_err es_group_nack(es_group_member *m, const uint64_t *positions, size_t n, es_nack_action action,
                     const char *reason)
{
    return ack_nack(m, positions, n, false, action, reason);
}

void es_group_revoked(const es_group_member *m, uint64_t *pushes, uint64_t *dropped)
{
    if (pushes) {
        *pushes = m ? m->revokes : 0;
    }
    if (dropped) {
        *dropped = m ? m->revoked_dropped : 0;
    }
}

void es_group_leave(es_group_member *m)
{
    if (m == NULL) {
        return;
    }
    es_client *c = m->c;
    if (c) {
        if (attached(m)) {
            Es__V1__Unsubscribe un = ES__V1__UNSUBSCRIBE__INIT;
            un.subscription_id = m->id;
            Es__V1__Request req = ES__V1__REQUEST__INIT;
            req.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
            req.unsubscribe = &un;
            uint64_t id;
            if (cl_submit(c, &req, 0, CL_SMALL_REPLY_CAP, &id) == ES_OK) {
                cl_abandon(c, id);
            }
        }
        for (es_group_member **pp = &c->members; *pp; pp = &(*pp)->next) {
            if (*pp == m) {
                *pp = m->next;
                break;
            }
        }
    }
    queue_clear(m);
    free(m->settled);
    free(m->events);
    free(m->strings);
    free(m->name);
    free(m->consumer);
    free(m);
}

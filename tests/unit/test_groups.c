/*
 * test_groups — the consumer-group state machine (server/groups.c) driven
 * in-process through the handler (tests/support/server_harness.h), with
 * members on sessions of their own and a fake clock for the ack timeout:
 *
 *   order        one event per stream in flight, spread over two members;
 *                each stream's revisions in order, the next only after the
 *                ack
 *   retries      nack retry redelivers the same event first; past
 *                max_retries it is parked with the reason and the stream
 *                flows on; skip and park on request
 *   timeout      an event not acked within the ack timeout goes back (to
 *                any member) before its stream's next; then it is parked
 *   leave        a member that goes has its events given to another
 *   park_blocks  the stream waits for its parked event until replayed
 *   window       the checkpoint stays below an unacked event and jumps
 *                over the done ones once it is acked
 *   commit_first a stream's next event goes out only once the ack of the
 *                previous one is committed (a kill -9 in between must not
 *                let a later event overtake a redelivered one)
 *   memberships  one connection in two groups: each membership's events
 *                come under its own join id and are acked through it; a
 *                second join, another member's ack and a request reusing a
 *                join id are refused; the connection's end hands its
 *                events to the other member
 *   replay_once  ReplayParked while earlier replays are still queued or in
 *                flight delivers each parked event once
 *   revoke       events taken back from a connected member (ack timeout,
 *                Unsubscribe, a nack retry of an event that timed out at
 *                it before) are named to it in one GroupRevoked per
 *                sweep, ascending, before they are pushed to anyone again
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "groups.h"
#include "server_harness.h"

/* ------------------------------------------------------------- members -- */

typedef struct peer {
    session sess;
    uint8_t *out;
    size_t len, cap, pos;
    uint64_t join_id;
    /* GroupRevoked pushes seen (take, reply_code): the last one's positions */
    unsigned revokes;
    uint64_t revoked[16];
    size_t n_revoked;
    char order[64]; /* 'E' GroupEvents, 'R' GroupRevoked, as they came */
    size_t n_order;
} peer;

static void note_order(peer *p, char c)
{
    if (p->n_order + 1 < sizeof p->order) {
        p->order[p->n_order++] = c;
        p->order[p->n_order] = '\0';
    }
}

/* A GroupRevoked pushed to p: under its join id, naming group "g". */
static void note_revoked(peer *p, const Es__V1__Response *r)
{
    assert_int_equal(r->id, p->join_id);
    assert_int_equal(r->group_revoked->name.len, 1);
    assert_memory_equal(r->group_revoked->name.data, "g", 1);
    assert_true(r->group_revoked->n_positions <= 16);
    p->revokes++;
    p->n_revoked = r->group_revoked->n_positions;
    memcpy(p->revoked, r->group_revoked->positions, p->n_revoked * sizeof *p->revoked);
    note_order(p, 'R');
}

static void peer_send(void *io, const void *data, size_t len)
{
    peer *p = io;
    if (p->len + len > p->cap) {
        p->cap = (p->len + len) * 2;
        p->out = realloc(p->out, p->cap);
        assert_non_null(p->out);
    }
    memcpy(p->out + p->len, data, len);
    p->len += len;
}

static size_t peer_outlen(void *io)
{
    peer *p = io;
    return p->len - p->pos;
}

static Es__V1__Response *peer_next(peer *p)
{
    const uint8_t *body;
    uint32_t blen;
    size_t used;
    if (frame_next(p->out + p->pos, p->len - p->pos, FRAME_HARD_MAX_BODY, &body, &blen, &used) !=
            ES_OK ||
        !body) {
        return NULL;
    }
    p->pos += used;
    return es__v1__response__unpack(NULL, blen, body);
}

static void send_on(session *s, Es__V1__Request *req)
{
    size_t n = es__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    es__v1__request__pack(req, buf);
    assert_int_equal(handler_on_frame(s, buf, n), ES_OK);
    free(buf);
}

static uint64_t next_id = 100;

static int cmp_pos(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void peer_open(harness *h, peer *p, uint64_t conn_id)
{
    memset(p, 0, sizeof *p);
    assert_int_equal(session_init(&p->sess, &h->srv, conn_id, p, peer_send, peer_outlen), ES_OK);
    Es__V1__Hello hello = ES__V1__HELLO__INIT;
    hello.protocol_version = 1;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_HELLO;
    req.hello = &hello;
    send_on(&p->sess, &req);
    Es__V1__Response *r = peer_next(p);
    assert_non_null(r);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_HELLO);
    es__v1__response__free_unpacked(r, NULL);
}

static void peer_close(peer *p)
{
    session_finish(&p->sess);
    free(p->out);
    memset(p, 0, sizeof *p);
}

/* The reply to the last request (skipping pushes, which are kept in *pushed
 * when given); the error code or 0. */
static es_err reply_code(harness *h, peer *p)
{
    harness_drain(h);
    for (;;) {
        Es__V1__Response *r = peer_next(p);
        assert_non_null(r);
        if (r->kind_case == ES__V1__RESPONSE__KIND_GROUP_EVENTS) {
            es__v1__response__free_unpacked(r, NULL);
            continue; /* none expected where this is used */
        }
        if (r->kind_case == ES__V1__RESPONSE__KIND_GROUP_REVOKED) {
            note_revoked(p, r);
            es__v1__response__free_unpacked(r, NULL);
            continue;
        }
        es_err rv = r->kind_case == ES__V1__RESPONSE__KIND_ERROR ? (es_err)r->error->code : ES_OK;
        es__v1__response__free_unpacked(r, NULL);
        return rv;
    }
}

static void append(harness *h, peer *p, const char *stream, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        Es__V1__ProposedEvent ev = ES__V1__PROPOSED_EVENT__INIT;
        ev.type.data = (uint8_t *)"T";
        ev.type.len = 1;
        Es__V1__ProposedEvent *evs[1] = {&ev};
        Es__V1__Append a = ES__V1__APPEND__INIT;
        a.stream.data = (uint8_t *)stream;
        a.stream.len = strlen(stream);
        a.n_events = 1;
        a.events = evs;
        Es__V1__Request req = ES__V1__REQUEST__INIT;
        req.id = next_id++;
        req.kind_case = ES__V1__REQUEST__KIND_APPEND;
        req.append = &a;
        send_on(&p->sess, &req);
        assert_int_equal(reply_code(h, p), ES_OK);
    }
}

static es_err create(harness *h, peer *p, const char *name, uint32_t retries, uint32_t timeout_ms,
                     bool park_blocks)
{
    Es__V1__GroupSettings set = ES__V1__GROUP_SETTINGS__INIT;
    set.max_retries = retries;
    set.ack_timeout_ms = timeout_ms;
    set.park_blocks = park_blocks;
    Es__V1__CreateGroup cg = ES__V1__CREATE_GROUP__INIT;
    cg.name.data = (uint8_t *)name;
    cg.name.len = strlen(name);
    cg.from_start = true;
    cg.settings = &set;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_CREATE_GROUP;
    req.create_group = &cg;
    send_on(&p->sess, &req);
    return reply_code(h, p);
}

static void join(harness *h, peer *p, const char *name, uint32_t max_in_flight)
{
    Es__V1__JoinGroup jg = ES__V1__JOIN_GROUP__INIT;
    jg.name.data = (uint8_t *)name;
    jg.name.len = strlen(name);
    jg.max_in_flight = max_in_flight;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = p->join_id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_JOIN_GROUP;
    req.join_group = &jg;
    send_on(&p->sess, &req);
    assert_int_equal(reply_code(h, p), ES_OK);
}

/* Events pushed to p since the last look: (stream, revision, position). */
typedef struct got {
    char stream[32];
    uint64_t rev, pos;
} got;

static size_t take(harness *h, peer *p, got *out, size_t cap)
{
    harness_drain(h); /* parks and acks release their stream once committed */
    harness_deliver(h);
    size_t n = 0;
    Es__V1__Response *r;
    while ((r = peer_next(p)) != NULL) {
        if (r->kind_case == ES__V1__RESPONSE__KIND_GROUP_REVOKED) {
            note_revoked(p, r);
            es__v1__response__free_unpacked(r, NULL);
            continue;
        }
        assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_GROUP_EVENTS);
        assert_int_equal(r->id, p->join_id);
        note_order(p, 'E');
        for (size_t i = 0; i < r->group_events->n_events; i++) {
            const Es__V1__RecordedEvent *e = r->group_events->events[i];
            assert_true(n < cap);
            snprintf(out[n].stream, sizeof out[n].stream, "%.*s", (int)e->stream.len,
                     (const char *)e->stream.data);
            out[n].rev = e->revision;
            out[n].pos = e->position;
            n++;
        }
        es__v1__response__free_unpacked(r, NULL);
    }
    return n;
}

static es_err ack_nack(harness *h, peer *p, uint64_t pos, int action, const char *reason)
{
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    Es__V1__GroupAck ga = ES__V1__GROUP_ACK__INIT;
    Es__V1__GroupNack gn = ES__V1__GROUP_NACK__INIT;
    if (action < 0) {
        ga.join_id = p->join_id;
        ga.n_positions = 1;
        ga.positions = &pos;
        req.kind_case = ES__V1__REQUEST__KIND_GROUP_ACK;
        req.group_ack = &ga;
    } else {
        gn.join_id = p->join_id;
        gn.n_positions = 1;
        gn.positions = &pos;
        gn.action = (Es__V1__NackAction)action;
        gn.reason = (char *)(reason ? reason : "");
        req.kind_case = ES__V1__REQUEST__KIND_GROUP_NACK;
        req.group_nack = &gn;
    }
    send_on(&p->sess, &req);
    return reply_code(h, p);
}

static Es__V1__GroupState *info(harness *h, peer *p, const char *name)
{
    Es__V1__GroupInfoRequest gi = ES__V1__GROUP_INFO_REQUEST__INIT;
    gi.name.data = (uint8_t *)name;
    gi.name.len = strlen(name);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_GROUP_INFO;
    req.group_info = &gi;
    send_on(&p->sess, &req);
    harness_drain(h);
    Es__V1__Response *r = peer_next(p);
    assert_non_null(r);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_GROUP_STATE);
    static Es__V1__GroupState st;
    st = *r->group_state;
    st.settings = NULL;
    st.name.data = NULL;
    st.target_name.data = NULL;
    es__v1__response__free_unpacked(r, NULL);
    return &st;
}

static uint64_t fake_now;
static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

typedef struct fixture {
    harness h;
    peer admin, a, b;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(harness_init(&f->h, "/tmp"), 0);
    fake_now = 1000000;
    groups_set_clock(f->h.srv.groups, fake_clock, NULL);
    peer_open(&f->h, &f->admin, 11);
    peer_open(&f->h, &f->a, 12);
    peer_open(&f->h, &f->b, 13);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->a.out || f->a.sess.srv) {
        peer_close(&f->a);
    }
    if (f->b.out || f->b.sess.srv) {
        peer_close(&f->b);
    }
    peer_close(&f->admin);
    harness_finish(&f->h);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------ tests -- */

static void test_order(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "x-1", 3);
    append(&f->h, &f->admin, "x-2", 3);
    assert_int_equal(create(&f->h, &f->admin, "g", 10, 0, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    join(&f->h, &f->b, "g", 10);
    uint64_t next_rev[3] = {0};
    for (int round = 0; round < 3; round++) {
        got ga[8], gb[8];
        size_t na = take(&f->h, &f->a, ga, 8);
        size_t nb = take(&f->h, &f->b, gb, 8);
        /* One event per stream in flight over both members. */
        assert_int_equal(na + nb, 2);
        got all[2];
        memcpy(all, ga, na * sizeof *ga);
        memcpy(all + na, gb, nb * sizeof *gb);
        assert_string_not_equal(all[0].stream, all[1].stream);
        for (size_t i = 0; i < 2; i++) {
            int s = all[i].stream[2] - '0';
            assert_int_equal(all[i].rev, next_rev[s]);
            next_rev[s]++;
        }
        /* Nothing more until an ack. */
        assert_int_equal(take(&f->h, &f->a, ga, 8) + take(&f->h, &f->b, gb, 8), 0);
        for (size_t i = 0; i < na; i++) {
            assert_int_equal(ack_nack(&f->h, &f->a, ga[i].pos, -1, NULL), ES_OK);
        }
        for (size_t i = 0; i < nb; i++) {
            assert_int_equal(ack_nack(&f->h, &f->b, gb[i].pos, -1, NULL), ES_OK);
        }
    }
    Es__V1__GroupState *st = info(&f->h, &f->admin, "g");
    assert_int_equal(st->checkpoint, 6);
    assert_int_equal(st->acked, 6);
    assert_int_equal(st->in_flight, 0);
}

static void test_retries(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "r-1", 4);
    assert_int_equal(create(&f->h, &f->admin, "g", 2, 0, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    for (int d = 0; d < 3; d++) { /* the first delivery and two retries */
        assert_int_equal(take(&f->h, &f->a, g, 4), 1);
        assert_int_equal(g[0].rev, 0);
        assert_int_equal(
            ack_nack(&f->h, &f->a, g[0].pos, ES__V1__NACK_ACTION__NACK_ACTION_RETRY, "bad"), ES_OK);
        /* No ack timeout passed at a: no copy of it can be stale there. */
        assert_int_equal(f->a.revokes, 0);
    }
    /* Parked after max_retries: revision 1 flows. */
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(g[0].rev, 1);
    assert_int_equal(ack_nack(&f->h, &f->a, g[0].pos, ES__V1__NACK_ACTION__NACK_ACTION_SKIP, NULL),
                     ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(g[0].rev, 2);
    assert_int_equal(
        ack_nack(&f->h, &f->a, g[0].pos, ES__V1__NACK_ACTION__NACK_ACTION_PARK, "poison"), ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(g[0].rev, 3);
    assert_int_equal(ack_nack(&f->h, &f->a, g[0].pos, -1, NULL), ES_OK);
    Es__V1__GroupState *st = info(&f->h, &f->admin, "g");
    assert_int_equal(st->parked, 2);
    assert_int_equal(st->retries, 2);
    assert_int_equal(st->checkpoint, 4);
    /* Bad input changed nothing. */
    assert_int_equal(ack_nack(&f->h, &f->a, 99, -1, NULL), ES_ERR_NOT_IN_FLIGHT);
    assert_int_equal(ack_nack(&f->h, &f->a, g[0].pos, -1, NULL), ES_ERR_NOT_IN_FLIGHT);
    assert_int_equal(create(&f->h, &f->admin, "g", 2, 0, false), ES_ERR_GROUP_EXISTS);
    assert_int_equal(create(&f->h, &f->admin, "h", 2, 5, false), ES_ERR_INVALID_ARGUMENT);
    st = info(&f->h, &f->admin, "g");
    assert_int_equal(st->parked, 2);
    assert_int_equal(st->acked, 2);
}

static void test_timeout(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "t-1", 2);
    assert_int_equal(create(&f->h, &f->admin, "g", 1, 1000, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    uint64_t first = g[0].pos;
    fake_now += 999 * 1000;
    groups_tick(f->h.srv.groups);
    assert_int_equal(take(&f->h, &f->a, g, 4), 0); /* not yet */
    assert_int_equal(f->a.revokes, 0);
    fake_now += 2 * 1000;
    groups_tick(f->h.srv.groups);
    join(&f->h, &f->b, "g", 10);
    size_t na = take(&f->h, &f->a, g, 4);
    assert_int_equal(f->a.revokes, 1); /* a is told it lost the event */
    assert_int_equal(f->a.n_revoked, 1);
    assert_int_equal(f->a.revoked[0], first);
    got gb[4];
    size_t nb = take(&f->h, &f->b, gb, 4);
    assert_int_equal(na + nb, 1); /* again, to either member, before revision 1 */
    assert_int_equal(na ? g[0].pos : gb[0].pos, first);
    /* The late ack of the first delivery is refused: it was taken back. */
    if (nb) {
        assert_int_equal(ack_nack(&f->h, &f->a, first, -1, NULL), ES_ERR_NOT_IN_FLIGHT);
    }
    /* A second timeout parks it (max_retries 1). */
    fake_now += 1001 * 1000;
    groups_tick(f->h.srv.groups);
    na = take(&f->h, &f->a, g, 4);
    nb = take(&f->h, &f->b, gb, 4);
    assert_int_equal(na + nb, 1);
    assert_int_equal(na ? g[0].rev : gb[0].rev, 1);
    Es__V1__GroupState *st = info(&f->h, &f->admin, "g");
    assert_int_equal(st->parked, 1);
    assert_int_equal(st->in_flight, 1);
}

static void test_leave(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "l-1", 2);
    assert_int_equal(create(&f->h, &f->admin, "g", 5, 0, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    uint64_t pos = g[0].pos;
    join(&f->h, &f->b, "g", 10);
    assert_int_equal(take(&f->h, &f->b, g, 4), 0); /* the stream is held by a */
    peer_close(&f->a);                             /* the connection ends */
    assert_int_equal(take(&f->h, &f->b, g, 4), 1);
    assert_int_equal(g[0].pos, pos);
    assert_int_equal(ack_nack(&f->h, &f->b, pos, -1, NULL), ES_OK);
    assert_int_equal(take(&f->h, &f->b, g, 4), 1);
    assert_int_equal(g[0].rev, 1);
}

static void test_park_blocks(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "k-1", 2);
    assert_int_equal(create(&f->h, &f->admin, "g", 5, 0, true), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(
        ack_nack(&f->h, &f->a, g[0].pos, ES__V1__NACK_ACTION__NACK_ACTION_PARK, "hold"), ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 4), 0); /* revision 1 waits */
    Es__V1__ReplayParked rp = ES__V1__REPLAY_PARKED__INIT;
    rp.name.data = (uint8_t *)"g";
    rp.name.len = 1;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_REPLAY_PARKED;
    req.replay_parked = &rp;
    send_on(&f->admin.sess, &req);
    assert_int_equal(reply_code(&f->h, &f->admin), ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(g[0].rev, 0);
    assert_int_equal(ack_nack(&f->h, &f->a, g[0].pos, -1, NULL), ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(g[0].rev, 1);
    Es__V1__GroupState *st = info(&f->h, &f->admin, "g");
    assert_int_equal(st->parked, 0);
}

/* Events pushed to p, counted by the join id they came under. */
static size_t take_by_id(harness *h, peer *p, uint64_t id, uint64_t *pos, size_t *n_other)
{
    harness_drain(h);
    harness_deliver(h);
    size_t n = 0;
    *n_other = 0;
    Es__V1__Response *r;
    while ((r = peer_next(p)) != NULL) {
        assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_GROUP_EVENTS);
        for (size_t i = 0; i < r->group_events->n_events; i++) {
            if (r->id == id) {
                pos[n++] = r->group_events->events[i]->position;
            } else {
                (*n_other)++;
            }
        }
        es__v1__response__free_unpacked(r, NULL);
    }
    return n;
}

static es_err join_code(harness *h, peer *p, const char *name)
{
    Es__V1__JoinGroup jg = ES__V1__JOIN_GROUP__INIT;
    jg.name.data = (uint8_t *)name;
    jg.name.len = strlen(name);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_JOIN_GROUP;
    req.join_group = &jg;
    send_on(&p->sess, &req);
    return reply_code(h, p);
}

static void test_memberships(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "m-1", 1);
    assert_int_equal(create(&f->h, &f->admin, "g1", 5, 0, false), ES_OK);
    assert_int_equal(create(&f->h, &f->admin, "g2", 5, 0, false), ES_OK);
    uint64_t pos[4], pos2[4];
    size_t other;
    /* The one event comes once per group, each under its own join id. */
    join(&f->h, &f->a, "g1", 10);
    uint64_t j1 = f->a.join_id;
    assert_int_equal(take_by_id(&f->h, &f->a, j1, pos, &other), 1);
    assert_int_equal(other, 0);
    join(&f->h, &f->a, "g2", 10);
    uint64_t j2 = f->a.join_id;
    assert_int_equal(take_by_id(&f->h, &f->a, j2, pos2, &other), 1);
    assert_int_equal(other, 0);
    assert_int_equal(pos2[0], pos[0]);
    join(&f->h, &f->b, "g1", 10);
    assert_int_equal(take_by_id(&f->h, &f->b, f->b.join_id, pos2, &other), 0);
    /* Refused, nothing changed: a second join of g1 on the connection, an
     * ack through another member's membership, a request reusing a join id. */
    assert_int_equal(join_code(&f->h, &f->a, "g1"), ES_ERR_ALREADY_JOINED);
    assert_int_equal(ack_nack(&f->h, &f->b, pos[0], -1, NULL), ES_ERR_NOT_IN_FLIGHT);
    Es__V1__GroupInfoRequest gi = ES__V1__GROUP_INFO_REQUEST__INIT;
    gi.name.data = (uint8_t *)"g1";
    gi.name.len = 2;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = j1;
    req.kind_case = ES__V1__REQUEST__KIND_GROUP_INFO;
    req.group_info = &gi;
    send_on(&f->a.sess, &req);
    assert_int_equal(reply_code(&f->h, &f->a), ES_ERR_DUPLICATE_REQUEST_ID);
    /* The ack goes through g2's membership. */
    f->a.join_id = j2;
    assert_int_equal(ack_nack(&f->h, &f->a, pos[0], -1, NULL), ES_OK);
    Es__V1__GroupState *st = info(&f->h, &f->admin, "g2");
    assert_int_equal(st->acked, 1);
    assert_int_equal(st->checkpoint, pos[0]);
    st = info(&f->h, &f->admin, "g1");
    assert_int_equal(st->acked, 0);
    assert_int_equal(st->in_flight, 1);
    assert_int_equal(st->members, 2);
    /* a goes: g1's event goes to b, and both groups lose a member. */
    peer_close(&f->a);
    assert_int_equal(take_by_id(&f->h, &f->b, f->b.join_id, pos2, &other), 1);
    assert_int_equal(pos2[0], pos[0]);
    assert_int_equal(ack_nack(&f->h, &f->b, pos2[0], -1, NULL), ES_OK);
    st = info(&f->h, &f->admin, "g1");
    assert_int_equal(st->acked, 1);
    assert_int_equal(st->members, 1);
    st = info(&f->h, &f->admin, "g2");
    assert_int_equal(st->members, 0);
}

static uint32_t replay_count(harness *h, peer *p, const char *name)
{
    Es__V1__ReplayParked rp = ES__V1__REPLAY_PARKED__INIT;
    rp.name.data = (uint8_t *)name;
    rp.name.len = strlen(name);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_REPLAY_PARKED;
    req.replay_parked = &rp;
    send_on(&p->sess, &req);
    harness_drain(h);
    Es__V1__Response *r = peer_next(p);
    assert_non_null(r);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_GROUP_DONE);
    uint32_t n = r->group_done->count;
    es__v1__response__free_unpacked(r, NULL);
    return n;
}

static void test_replay_once(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "q-1", 1);
    append(&f->h, &f->admin, "q-2", 1);
    append(&f->h, &f->admin, "q-3", 1);
    assert_int_equal(create(&f->h, &f->admin, "g", 5, 0, false), ES_OK);
    join(&f->h, &f->a, "g", 2);
    got g[8];
    size_t parked = 0;
    for (int round = 0; round < 2; round++) {
        size_t n = take(&f->h, &f->a, g, 8);
        for (size_t i = 0; i < n; i++, parked++) {
            assert_int_equal(
                ack_nack(&f->h, &f->a, g[i].pos, ES__V1__NACK_ACTION__NACK_ACTION_PARK, "p"),
                ES_OK);
        }
    }
    assert_int_equal(parked, 3);
    assert_int_equal(replay_count(&f->h, &f->admin, "g"), 3);
    /* Two of them in flight with a (max_in_flight 2), one queued: asked
     * again, none is replayed twice. */
    assert_int_equal(take(&f->h, &f->a, g, 8), 2);
    assert_int_equal(replay_count(&f->h, &f->admin, "g"), 0);
    size_t seen = 2;
    uint64_t first = g[0].pos, second = g[1].pos;
    assert_int_equal(ack_nack(&f->h, &f->a, first, -1, NULL), ES_OK);
    assert_int_equal(ack_nack(&f->h, &f->a, second, -1, NULL), ES_OK);
    size_t n = take(&f->h, &f->a, g, 8);
    assert_int_equal(n, 1);
    seen += n;
    assert_true(g[0].pos != first && g[0].pos != second);
    assert_int_equal(ack_nack(&f->h, &f->a, g[0].pos, -1, NULL), ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 8), 0);
    assert_int_equal(seen, 3);
    Es__V1__GroupState *st = info(&f->h, &f->admin, "g");
    assert_int_equal(st->parked, 0);
    assert_int_equal(st->in_flight, 0);
}

static void test_window(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "w-1", 1);
    append(&f->h, &f->admin, "w-2", 1);
    append(&f->h, &f->admin, "w-3", 1);
    assert_int_equal(create(&f->h, &f->admin, "g", 5, 0, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    assert_int_equal(take(&f->h, &f->a, g, 4), 3);
    assert_int_equal(ack_nack(&f->h, &f->a, 2, -1, NULL), ES_OK);
    assert_int_equal(ack_nack(&f->h, &f->a, 3, -1, NULL), ES_OK);
    assert_int_equal(info(&f->h, &f->admin, "g")->checkpoint, 0);
    assert_int_equal(ack_nack(&f->h, &f->a, 1, -1, NULL), ES_OK);
    assert_int_equal(info(&f->h, &f->admin, "g")->checkpoint, 3);
}

static void test_commit_first(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "c-1", 2);
    assert_int_equal(create(&f->h, &f->admin, "g", 5, 0, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    /* The ack is handled, its job not completed yet: revision 1 waits. */
    uint64_t pos = g[0].pos;
    Es__V1__GroupAck ga = ES__V1__GROUP_ACK__INIT;
    ga.join_id = f->a.join_id;
    ga.n_positions = 1;
    ga.positions = &pos;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_GROUP_ACK;
    req.group_ack = &ga;
    send_on(&f->a.sess, &req);
    harness_deliver(&f->h);
    Es__V1__Response *r = peer_next(&f->a);
    assert_null(r); /* neither the ack's answer nor revision 1 */
    /* Committed: the answer, then revision 1. */
    assert_int_equal(reply_code(&f->h, &f->a), ES_OK);
    assert_int_equal(take(&f->h, &f->a, g, 4), 1);
    assert_int_equal(g[0].rev, 1);
}

static void test_revoke(void **state)
{
    fixture *f = *state;
    append(&f->h, &f->admin, "r-1", 1);
    append(&f->h, &f->admin, "r-2", 1);
    append(&f->h, &f->admin, "r-3", 1);
    assert_int_equal(create(&f->h, &f->admin, "g", 5, 1000, false), ES_OK);
    join(&f->h, &f->a, "g", 10);
    got g[4];
    assert_int_equal(take(&f->h, &f->a, g, 4), 3);
    uint64_t pos[3] = {g[0].pos, g[1].pos, g[2].pos};
    qsort(pos, 3, sizeof *pos, cmp_pos);
    f->a.n_order = 0;
    /* All three time out in one sweep: one push naming them, ascending,
     * before they go out again (to a, the only member). */
    fake_now += 1001 * 1000;
    groups_tick(f->h.srv.groups);
    assert_int_equal(take(&f->h, &f->a, g, 4), 3);
    assert_int_equal(f->a.revokes, 1);
    assert_int_equal(f->a.n_revoked, 3);
    assert_memory_equal(f->a.revoked, pos, sizeof pos);
    assert_string_equal(f->a.order, "RE"); /* the revoke, then the one redelivery push */
    /* a nacks the copy it had handed out before the timeout: the server
     * settles the redelivery with it, which a may still hold queued --
     * revoked before the reply. */
    assert_int_equal(ack_nack(&f->h, &f->a, pos[0], ES__V1__NACK_ACTION__NACK_ACTION_RETRY, NULL),
                     ES_OK);
    assert_int_equal(f->a.revokes, 2);
    assert_int_equal(f->a.n_revoked, 1);
    assert_int_equal(f->a.revoked[0], pos[0]);
    assert_int_equal(take(&f->h, &f->a, g, 4), 1); /* and comes again */
    assert_int_equal(g[0].pos, pos[0]);
    /* A member that leaves with Unsubscribe is told too (before the
     * reply); its events go to b. */
    join(&f->h, &f->b, "g", 10);
    Es__V1__Unsubscribe un = ES__V1__UNSUBSCRIBE__INIT;
    un.subscription_id = f->a.join_id;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
    req.unsubscribe = &un;
    send_on(&f->a.sess, &req);
    assert_int_equal(reply_code(&f->h, &f->a), ES_OK);
    assert_int_equal(f->a.revokes, 3);
    assert_int_equal(f->a.n_revoked, 3);
    assert_memory_equal(f->a.revoked, pos, sizeof pos);
    assert_int_equal(take(&f->h, &f->b, g, 4), 3);
    /* A sweep with nothing due sends nothing. */
    groups_tick(f->h.srv.groups);
    assert_int_equal(take(&f->h, &f->b, g, 4), 0);
    assert_int_equal(f->b.revokes, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leave, setup, teardown),
        cmocka_unit_test_setup_teardown(test_park_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memberships, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
    };
    return cmocka_run_group_tests_name("groups_unit", tests, NULL, NULL);
}

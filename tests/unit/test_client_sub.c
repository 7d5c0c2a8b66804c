/*
 * test_client_sub — libesclient's subscriptions against a tiny fake server.
 *
 * Same scheme as test_client.c: the fake server is a thread with a
 * listening socket on 127.0.0.1, port 0, running a script per accepted
 * connection that speaks frames with the generated protobuf-c code; the
 * library's allocator is routed to cmocka's, so every test is also a leak
 * check; the backoff's sleep is a fake clock, so reconnects do not wait.
 * The server thread never calls cmocka: it records failed checks, which
 * fake_stop() asserts.
 *
 * What is tested: the routing of pushes by request id (several
 * subscriptions on one client, pushes read while another call waits for its
 * reply, pushes for unknown ids), resumption after the connection is lost
 * in the middle of the stream (the Subscribe of the new connection carries
 * the right `after`, for positions and for revisions, for every kind of
 * start), a close made from inside on_caught_up, the end of a subscription
 * dropped by the server, a refused batch delivered again, the bounded queue
 * (a subscription that overflows unsubscribes and resubscribes after its
 * last event), pushes that break the rules (too many events, a gap, a
 * duplicate), a push above the client's frame cap (the batch is halved),
 * the heartbeat of a quiet subscription, and a change of store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "alloc.h"
#include "es.pb-c.h"
#include "es/client.h"
#include "fake_server.h"
#include "internal.h"

#include "check_rv.h"

/* ------------------------------------------------------------ allocator -- */

static void *track_malloc(size_t n)
{
    return test_malloc(n);
}

static void track_free(void *p)
{
    test_free(p);
}

/* ----------------------------------------------------------- fake clock -- */

static uint64_t fake_now = 1000000;

static uint64_t fclock_now(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static void fclock_sleep(void *ctx, uint64_t us)
{
    (void)ctx;
    fake_now += us;
}

/* ---------------------------------------------------------- fake server -- */

/* The fake server (tests/support/fake_server.h) announcing the limits these
 * tests were written against: a 1 MiB frame cap, 64 KiB events, the sync
 * mode left at its default (full) and no role. */
static void sub_fake_start(fake *f, script_fn script, void *ctx)
{
    fake_init(f, script, ctx);
    f->max_frame_bytes = 1u << 20;
    f->max_event_bytes = 1u << 16;
    f->sync_mode = ES__V1__SYNC_MODE__SYNC_MODE_FULL;
    f->role = NULL;
    fake_run(f);
}

/* The next request, which must be a Subscribe (NULL otherwise). */
static Es__V1__Request *srv_expect_sub(fake *f, int fd)
{
    Es__V1__Request *r = srv_recv(fd);
    SRV_CHECK(f, r != NULL && r->kind_case == ES__V1__REQUEST__KIND_SUBSCRIBE);
    if (r != NULL && r->kind_case != ES__V1__REQUEST__KIND_SUBSCRIBE) {
        srv_free(r);
        return NULL;
    }
    return r;
}

static bool srv_sub_ok(int fd, uint64_t id, uint64_t head)
{
    Es__V1__SubscribeOk ok = ES__V1__SUBSCRIBE_OK__INIT;
    ok.head_position = head;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_SUBSCRIBED;
    resp.subscribed = &ok;
    return srv_send(fd, &resp);
}

/* An EventsBatch push for subscription `sub`: n events with positions
 * pos[i] of stream "acct-<pos % 3>" (or `stream` with revisions rev[i]). */
static bool srv_events(int fd, uint64_t sub, const uint64_t *pos, const uint64_t *rev,
                       const char *stream, size_t n)
{
    Es__V1__RecordedEvent ev[16];
    Es__V1__RecordedEvent *evp[16];
    uint8_t ids[16][16];
    char names[16][32];
    char data[16][32];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        Es__V1__RecordedEvent *e = &ev[i];
        es__v1__recorded_event__init(e);
        if (stream != NULL) {
            snprintf(names[i], sizeof(names[i]), "%s", stream);
        } else {
            snprintf(names[i], sizeof(names[i]), "acct-%u", (unsigned)(pos[i] % 3));
        }
        e->stream.data = (uint8_t *)names[i];
        e->stream.len = strlen(names[i]);
        e->revision = rev != NULL ? rev[i] : pos[i] / 3;
        e->position = pos[i];
        memset(ids[i], (int)pos[i], 16);
        e->id.data = ids[i];
        e->id.len = 16;
        e->type.data = (uint8_t *)"Deposited";
        e->type.len = 9;
        snprintf(data[i], sizeof(data[i]), "{\"n\":%u}", (unsigned)pos[i]);
        e->data.data = (uint8_t *)data[i];
        e->data.len = strlen(data[i]);
        e->content_type.data = (uint8_t *)"application/json";
        e->content_type.len = 16;
        e->recorded_at_us = 1700000000000000ull + pos[i];
        evp[i] = e;
    }
    Es__V1__EventsBatch b = ES__V1__EVENTS_BATCH__INIT;
    b.n_events = n;
    b.events = evp;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = sub;
    resp.kind_case = ES__V1__RESPONSE__KIND_EVENTS;
    resp.events = &b;
    return srv_send(fd, &resp);
}

/* Positions first..last (at most 16) as one push. */
static bool srv_range(int fd, uint64_t sub, uint64_t first, uint64_t last)
{
    uint64_t pos[16];
    size_t n = 0;
    for (uint64_t p = first; p <= last && n < 16; p++) {
        pos[n++] = p;
    }
    return srv_events(fd, sub, pos, NULL, NULL, n);
}

static bool srv_caught_up(int fd, uint64_t sub, uint64_t position)
{
    Es__V1__CaughtUp cu = ES__V1__CAUGHT_UP__INIT;
    cu.position = position;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = sub;
    resp.kind_case = ES__V1__RESPONSE__KIND_CAUGHT_UP;
    resp.caught_up = &cu;
    return srv_send(fd, &resp);
}

static bool srv_dropped(int fd, uint64_t sub, Es__V1__ErrorCode reason, const char *msg)
{
    Es__V1__SubscriptionDropped d = ES__V1__SUBSCRIPTION_DROPPED__INIT;
    d.reason = reason;
    d.message = (char *)msg;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = sub;
    resp.kind_case = ES__V1__RESPONSE__KIND_DROPPED;
    resp.dropped = &d;
    return srv_send(fd, &resp);
}

/* Declare a frame of 100 bytes, send 10 of them, and let the script end
 * (the connection closes in the middle of a frame). */
static void srv_cut(int fd)
{
    uint8_t partial[14] = {0, 0, 0, 100, 8, 1, 0xf2, 1, 3, 4, 5, 6, 7, 8};
    srv_write_full(fd, partial, sizeof(partial));
}

/* ------------------------------------------------------------ client side -- */

static es_client *mk_client(fake *f, uint32_t request_timeout_ms)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = f->addr;
    o.client_name = "test-sub";
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = request_timeout_ms ? request_timeout_ms : 5000;
    o.reconnect_attempts = 3;
    o.backoff_initial_ms = 10;
    o.backoff_max_ms = 80;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    CHECK_RV(es_client_create(&o, &c), ES_OK);
    cl_set_hooks(c, fclock_now, fclock_sleep, NULL);
    return c;
}

/* What a subscription delivered. */
typedef struct seen {
    uint64_t keys[256]; /* positions, or revisions for a stream subscription */
    size_t n;
    size_t batches;
    unsigned caught_up;
    uint64_t caught_up_at;
    bool stream;
    int refuse_batch;              /* refuse the batch with this index once (-1: never) */
    es_client *close_at_caught_up; /* es_client_disconnect() from on_caught_up, once */
} seen;

static void seen_init(seen *s, bool stream)
{
    memset(s, 0, sizeof(*s));
    s->stream = stream;
    s->refuse_batch = -1;
}

static int on_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    seen *s = ctx;
    if ((int)s->batches == s->refuse_batch) {
        s->refuse_batch = -1;
        return 1;
    }
    s->batches++;
    for (size_t i = 0; i < n; i++) {
        assert_true(s->n < 256);
        s->keys[s->n++] = s->stream ? evs[i].revision : evs[i].position;
        assert_string_equal(evs[i].type, "Deposited");
        assert_string_equal(evs[i].content_type, "application/json");
        assert_int_equal(evs[i].id[0], (uint8_t)evs[i].position);
        assert_int_equal(evs[i].recorded_at_us, 1700000000000000ull + evs[i].position);
        char want[32];
        snprintf(want, sizeof(want), "{\"n\":%u}", (unsigned)evs[i].position);
        assert_int_equal(evs[i].data_len, strlen(want));
        assert_memory_equal(evs[i].data, want, evs[i].data_len);
    }
    return 0;
}

static void on_caught_up(void *ctx, uint64_t position)
{
    seen *s = ctx;
    s->caught_up++;
    s->caught_up_at = position;
    if (s->close_at_caught_up != NULL) {
        es_client_disconnect(s->close_at_caught_up);
        s->close_at_caught_up = NULL;
    }
}

/* Poll until the subscription delivered `key` (or 5 s passed). */
static void poll_until(es_subscription *sub, seen *s, uint64_t key)
{
    for (int i = 0; i < 500; i++) {
        if (s->n > 0 && s->keys[s->n - 1] >= key) {
            return;
        }
        CHECK_RV(es_sub_poll(sub, 10), ES_OK);
    }
    fail_msg("not delivered: %llu (last %llu)", (unsigned long long)key,
             s->n ? (unsigned long long)s->keys[s->n - 1] : 0ull);
}

/* The keys delivered are exactly first..last, once each, in order. */
static void assert_keys(const seen *s, uint64_t first, uint64_t last)
{
    assert_int_equal(s->n, last - first + 1);
    for (size_t i = 0; i < s->n; i++) {
        assert_int_equal(s->keys[i], first + i);
    }
}

/* ================================================================ tests == */

/* ---- routing -- */

/* Two subscriptions on one connection; pushes of both interleaved, some
 * read while an append waits for its reply, one for an unknown id. */
static void script_routing(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *a = srv_expect_sub(f, fd);
    if (a == NULL) {
        return;
    }
    SRV_CHECK(f, a->subscribe->target == ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL);
    SRV_CHECK(f, a->subscribe->from_start && !a->subscribe->from_end);
    SRV_CHECK(f, a->subscribe->name.len == 0);
    SRV_CHECK(f, a->subscribe->batch_size == 4);
    uint64_t ida = a->id;
    srv_free(a);
    srv_sub_ok(fd, ida, 6);
    Es__V1__Request *b = srv_expect_sub(f, fd);
    if (b == NULL) {
        return;
    }
    SRV_CHECK(f, b->subscribe->target == ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY);
    SRV_CHECK(f, b->subscribe->name.len == 4 && memcmp(b->subscribe->name.data, "acct", 4) == 0);
    SRV_CHECK(f, !b->subscribe->from_start && !b->subscribe->from_end);
    SRV_CHECK(f, b->subscribe->after == 2);
    uint64_t idb = b->id;
    srv_free(b);
    srv_sub_ok(fd, idb, 6);

    /* The client appends; the pushes come before the append's reply. */
    Es__V1__Request *ap = srv_recv(fd);
    SRV_CHECK(f, ap != NULL && ap->kind_case == ES__V1__REQUEST__KIND_APPEND);
    if (ap == NULL) {
        return;
    }
    srv_range(fd, ida, 1, 2);
    uint64_t bpos[2] = {3, 6};
    srv_events(fd, idb, bpos, NULL, NULL, 2);
    srv_range(fd, 999999, 1, 1); /* nobody's */
    srv_range(fd, ida, 3, 6);
    srv_caught_up(fd, idb, 6);
    srv_caught_up(fd, ida, 6);
    Es__V1__AppendResult ar = ES__V1__APPEND_RESULT__INIT;
    ar.first_position = ar.last_position = 7;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = ap->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_APPEND;
    resp.append = &ar;
    srv_send(fd, &resp);
    srv_free(ap);

    /* Live, once the client pinged: one event for each, then the client
     * ends both. */
    Es__V1__Request *ping = srv_recv(fd);
    SRV_CHECK(f, ping != NULL && ping->kind_case == ES__V1__REQUEST__KIND_PING);
    if (ping == NULL) {
        return;
    }
    Es__V1__Pong pong = ES__V1__PONG__INIT;
    pong.payload = ping->ping->payload;
    Es__V1__Response presp = ES__V1__RESPONSE__INIT;
    presp.id = ping->id;
    presp.kind_case = ES__V1__RESPONSE__KIND_PONG;
    presp.pong = &pong;
    srv_send(fd, &presp);
    srv_free(ping);
    srv_range(fd, ida, 7, 7);
    uint64_t seven = 7;
    srv_events(fd, idb, &seven, NULL, NULL, 1);
    unsigned unsubs = 0;
    Es__V1__Request *r;
    while ((r = srv_recv(fd)) != NULL) {
        if (r->kind_case == ES__V1__REQUEST__KIND_UNSUBSCRIBE) {
            uint64_t sid = r->unsubscribe->subscription_id;
            SRV_CHECK(f, sid == ida || sid == idb);
            unsubs++;
            Es__V1__UnsubscribeOk uok = ES__V1__UNSUBSCRIBE_OK__INIT;
            Es__V1__Response u = ES__V1__RESPONSE__INIT;
            u.id = r->id;
            u.kind_case = ES__V1__RESPONSE__KIND_UNSUBSCRIBED;
            u.unsubscribed = &uok;
            srv_send(fd, &u);
        }
        srv_free(r);
    }
    SRV_CHECK(f, unsubs == 2);
}

static void test_push_routing(void **state)
{
    fake f;
    sub_fake_start(&f, script_routing, NULL);
    es_client *c = mk_client(&f, 0);
    seen sa, sb;
    seen_init(&sa, false);
    seen_init(&sb, false);
    es_subscription *a = NULL, *b = NULL;
    es_sub_options oa = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START, .batch_size = 4};
    es_sub_options ob = {
        .target = ES_SUB_CATEGORY, .name = "acct", .start = ES_SUB_AFTER, .after = 2};
    CHECK_RV(es_subscribe(c, &oa, on_batch, on_caught_up, &sa, &a), ES_OK);
    CHECK_RV(es_subscribe(c, &ob, on_batch, on_caught_up, &sb, &b), ES_OK);
    bool has = true;
    assert_int_equal(es_sub_last(a, &has), 0);
    assert_false(has);
    assert_int_equal(es_sub_last(b, &has), 2);
    assert_true(has);

    /* The append reads every push sent before its reply: they wait in the
     * queues, and no callback ran inside the append. */
    es_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = "Deposited";
    es_append_result res;
    CHECK_RV(es_stream_append(c, "acct-1", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, &res), ES_OK);
    assert_int_equal(res.first_position, 7);
    assert_int_equal(sa.n + sb.n, 0);
    assert_true(c->pushes_dropped >= 1); /* the one for id 999999 */

    /* A poll with no wait delivers what is queued, for its own
     * subscription only. */
    CHECK_RV(es_sub_poll(a, 0), ES_OK);
    assert_keys(&sa, 1, 6);
    assert_int_equal(sa.caught_up, 1);
    assert_int_equal(sa.caught_up_at, 6);
    assert_true(es_sub_caught_up(a));
    assert_int_equal(sb.n, 0);
    assert_false(es_sub_caught_up(b));
    CHECK_RV(es_sub_poll(b, 0), ES_OK);
    assert_int_equal(sb.n, 2);
    assert_int_equal(sb.keys[0], 3);
    assert_int_equal(sb.keys[1], 6);
    assert_int_equal(sb.caught_up, 1);

    /* Live events. */
    CHECK_RV(es_client_ping(c, NULL), ES_OK);
    poll_until(a, &sa, 7);
    poll_until(b, &sb, 7);
    assert_keys(&sa, 1, 7);
    assert_int_equal(sb.n, 3);
    assert_int_equal(es_sub_last(a, NULL), 7);
    assert_int_equal(es_sub_last(b, NULL), 7);

    es_sub_destroy(a);
    es_sub_destroy(b);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- resumption -- */

/* Connection 1: events 1..5 in two pushes, then the connection is cut in
 * the middle of a frame. Connection 2: the Subscribe must ask for events
 * after 5; the server sends 5 again (a duplicate the client must drop),
 * 6..9, caught up at 9, then 10 live. */
static void script_resume(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    const Es__V1__Subscribe *s = r->subscribe;
    uint64_t id = r->id;
    if (conn_no == 1) {
        SRV_CHECK(f, s->from_start && !s->from_end && s->after == 0);
        srv_free(r);
        srv_sub_ok(fd, id, 9);
        srv_range(fd, id, 1, 3);
        srv_range(fd, id, 4, 5);
        srv_cut(fd);
        return;
    }
    SRV_CHECK(f, conn_no == 2);
    SRV_CHECK(f, !s->from_start && !s->from_end && s->after == 5);
    srv_free(r);
    srv_sub_ok(fd, id, 9);
    srv_range(fd, id, 5, 9);
    srv_caught_up(fd, id, 9);
    srv_range(fd, id, 10, 10);
    srv_drain(fd);
}

static void test_resume_mid_stream(void **state)
{
    fake f;
    sub_fake_start(&f, script_resume, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    poll_until(sub, &s, 10);
    assert_keys(&s, 1, 10);
    assert_int_equal(s.caught_up, 1);
    assert_int_equal(c->connect_attempts, 2);
    assert_int_equal(atomic_load(&f.accepts), 2);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* A stream subscription: its points are revisions. Connection 1 is lost
 * before anything was delivered (the resubscription starts from the first
 * event again); connection 2 delivers revisions 0 and 1 (positions 7, 9)
 * and is lost; connection 3 must ask for revisions after 1. */
static void script_resume_stream(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    const Es__V1__Subscribe *s = r->subscribe;
    uint64_t id = r->id;
    SRV_CHECK(f, s->target == ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM);
    SRV_CHECK(f, s->name.len == 6 && memcmp(s->name.data, "acct-1", 6) == 0);
    if (conn_no <= 2) {
        SRV_CHECK(f, s->from_start && s->after == 0);
    } else {
        SRV_CHECK(f, !s->from_start && !s->from_end && s->after == 1);
    }
    srv_free(r);
    srv_sub_ok(fd, id, 20);
    if (conn_no == 1) {
        return;
    }
    if (conn_no == 2) {
        uint64_t pos[2] = {7, 9}, rev[2] = {0, 1};
        srv_events(fd, id, pos, rev, "acct-1", 2);
        return;
    }
    uint64_t pos = 12, rev = 2;
    srv_events(fd, id, &pos, &rev, "acct-1", 1);
    srv_caught_up(fd, id, 20);
    srv_drain(fd);
}

static void test_resume_stream_revisions(void **state)
{
    fake f;
    sub_fake_start(&f, script_resume_stream, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, true);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_STREAM, .name = "acct-1", .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    poll_until(sub, &s, 2);
    assert_keys(&s, 0, 2);
    for (int i = 0; i < 100 && s.caught_up == 0; i++) {
        CHECK_RV(es_sub_poll(sub, 10), ES_OK);
    }
    assert_int_equal(s.caught_up, 1);
    assert_int_equal(s.caught_up_at, 20); /* a position, also for a stream */
    assert_int_equal(es_sub_last(sub, NULL), 2);
    assert_int_equal(atomic_load(&f.accepts), 3);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* From the end: nothing is delivered before connection 1 is lost, so the
 * resubscription asks for what follows the head of the first SubscribeOk. */
static void script_resume_from_end(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    const Es__V1__Subscribe *s = r->subscribe;
    uint64_t id = r->id;
    if (conn_no == 1) {
        SRV_CHECK(f, s->from_end && !s->from_start);
        srv_free(r);
        srv_sub_ok(fd, id, 42);
        srv_caught_up(fd, id, 42);
        srv_cut(fd);
        return;
    }
    SRV_CHECK(f, !s->from_end && !s->from_start && s->after == 42);
    srv_free(r);
    srv_sub_ok(fd, id, 44);
    srv_range(fd, id, 43, 44);
    srv_caught_up(fd, id, 44);
    srv_drain(fd);
}

static void test_resume_from_end(void **state)
{
    fake f;
    sub_fake_start(&f, script_resume_from_end, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_END};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    bool has = false;
    assert_int_equal(es_sub_last(sub, &has), 42);
    assert_true(has);
    poll_until(sub, &s, 44);
    assert_keys(&s, 43, 44);
    for (int i = 0; i < 100 && s.caught_up < 2; i++) {
        CHECK_RV(es_sub_poll(sub, 10), ES_OK);
    }
    assert_int_equal(s.caught_up, 2); /* once per subscription */
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* A stream from the end: the client reads the stream's last revision
 * first and subscribes after it; a stream that does not exist yet is
 * followed from its first event. */
static void script_stream_from_end(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    for (int round = 0; round < 2; round++) {
        Es__V1__Request *r = srv_recv(fd);
        SRV_CHECK(f, r != NULL && r->kind_case == ES__V1__REQUEST__KIND_STREAM_INFO);
        if (r == NULL) {
            return;
        }
        if (round == 0) {
            Es__V1__StreamInfo si = ES__V1__STREAM_INFO__INIT;
            si.stream = r->stream_info->stream;
            si.last_revision = 7;
            si.event_count = 8;
            Es__V1__Response resp = ES__V1__RESPONSE__INIT;
            resp.id = r->id;
            resp.kind_case = ES__V1__RESPONSE__KIND_STREAM_INFO;
            resp.stream_info = &si;
            srv_send(fd, &resp);
        } else {
            srv_error(fd, r->id, ES__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "no such stream");
        }
        srv_free(r);
        r = srv_expect_sub(f, fd);
        if (r == NULL) {
            return;
        }
        if (round == 0) {
            SRV_CHECK(f, !r->subscribe->from_end && !r->subscribe->from_start &&
                             r->subscribe->after == 7);
        } else {
            SRV_CHECK(f, r->subscribe->from_start);
        }
        srv_sub_ok(fd, r->id, 30);
        srv_free(r);
    }
    srv_drain(fd);
}

static void test_stream_from_end(void **state)
{
    fake f;
    sub_fake_start(&f, script_stream_from_end, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, true);
    es_subscription *a = NULL, *b = NULL;
    es_sub_options o = {.target = ES_SUB_STREAM, .name = "acct-1", .start = ES_SUB_FROM_END};
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &a), ES_OK);
    bool has = false;
    assert_int_equal(es_sub_last(a, &has), 7);
    assert_true(has);
    o.name = "acct-2";
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &b), ES_OK);
    es_sub_last(b, &has);
    assert_false(has);
    es_sub_destroy(a);
    es_sub_destroy(b);
    es_client_destroy(c);
    fake_stop(&f);
}

/* The application closes the connection from on_caught_up (the switch from
 * history to live): the subscription resumes after the last event. */
static void script_close_at_switch(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    if (conn_no == 1) {
        SRV_CHECK(f, r->subscribe->after == 10 && !r->subscribe->from_start);
        srv_free(r);
        srv_sub_ok(fd, id, 13);
        srv_range(fd, id, 11, 13);
        srv_caught_up(fd, id, 13);
        srv_range(fd, id, 14, 15); /* live, right behind: lost with the close */
        srv_drain(fd);
        return;
    }
    /* After 13, or after 15 when the events behind the caught-up came in
     * the same read as it and were delivered before the close took effect
     * (both exact: what was received is delivered, then the rest). */
    uint64_t after = r->subscribe->after;
    SRV_CHECK(f, (after == 13 || after == 15) && !r->subscribe->from_start);
    srv_free(r);
    srv_sub_ok(fd, id, 15);
    if (after < 15) {
        srv_range(fd, id, after + 1, 15);
    }
    srv_caught_up(fd, id, 15);
    srv_drain(fd);
}

static void test_close_at_caught_up(void **state)
{
    fake f;
    sub_fake_start(&f, script_close_at_switch, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    s.close_at_caught_up = c;
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_AFTER, .after = 10};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    poll_until(sub, &s, 15);
    assert_keys(&s, 11, 15);
    for (int i = 0; i < 100 && s.caught_up < 2; i++) {
        CHECK_RV(es_sub_poll(sub, 10), ES_OK);
    }
    assert_int_equal(s.caught_up, 2);
    assert_int_equal(atomic_load(&f.accepts), 2);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- the end of a subscription -- */

static void script_dropped(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 2);
    srv_range(fd, id, 1, 2);
    srv_dropped(fd, id, ES__V1__ERROR_CODE__ERROR_CODE_CORRUPT,
                "a stored record failed its checksum");
    srv_range(fd, id, 3, 3); /* after the end: ignored */
    /* Nothing more may come from the client: no resubscription, no
     * Unsubscribe of a subscription the server already ended. */
    SRV_CHECK(f, srv_drain(fd) == 0);
}

static void test_dropped_by_server(void **state)
{
    fake f;
    sub_fake_start(&f, script_dropped, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    es_err rv = ES_OK;
    for (int i = 0; i < 500 && rv == ES_OK; i++) {
        rv = es_sub_poll(sub, 10);
    }
    CHECK_RV(rv, ES_ERR_CORRUPT);
    assert_non_null(strstr(es_client_errmsg(c), "checksum"));
    assert_keys(&s, 1, 2);
    assert_int_equal(es_sub_last(sub, NULL), 2);
    /* Closed for good: every poll says so, without I/O. */
    CHECK_RV(es_sub_poll(sub, 10), ES_ERR_CORRUPT);
    CHECK_RV(es_sub_poll(sub, 0), ES_ERR_CORRUPT);
    assert_int_equal(s.n, 2);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* A resubscription refused for good (here: the log is shorter than the
 * last delivered position) closes the subscription with that error. */
static void script_refused_resub(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    srv_free(r);
    if (conn_no == 1) {
        srv_sub_ok(fd, id, 3);
        srv_range(fd, id, 1, 3);
        return;
    }
    srv_error(fd, id, ES__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
              "start position is beyond the head of the log");
    srv_drain(fd);
}

static void test_resubscribe_refused(void **state)
{
    fake f;
    sub_fake_start(&f, script_refused_resub, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    es_err rv = ES_OK;
    for (int i = 0; i < 500 && rv == ES_OK; i++) {
        rv = es_sub_poll(sub, 10);
    }
    CHECK_RV(rv, ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(es_client_errmsg(c), "beyond the head"));
    assert_keys(&s, 1, 3);
    CHECK_RV(es_sub_poll(sub, 0), ES_ERR_INVALID_ARGUMENT);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- refusal by the callback -- */

static void script_simple(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 6);
    srv_range(fd, id, 1, 2);
    srv_range(fd, id, 3, 4);
    srv_range(fd, id, 5, 6);
    srv_caught_up(fd, id, 6);
    srv_drain(fd);
}

static void test_refused_batch_again(void **state)
{
    fake f;
    sub_fake_start(&f, script_simple, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    s.refuse_batch = 1; /* the second batch (3, 4), once */
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    es_err rv = ES_OK;
    for (int i = 0; i < 500 && rv == ES_OK; i++) {
        rv = es_sub_poll(sub, 10);
    }
    CHECK_RV(rv, ES_ERR_REFUSED);
    assert_keys(&s, 1, 2);
    assert_int_equal(es_sub_last(sub, NULL), 2); /* not counted as delivered */
    poll_until(sub, &s, 6);
    assert_keys(&s, 1, 6);
    assert_int_equal(atomic_load(&f.accepts), 1); /* no resubscription needed */
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- bounded queue -- */

/* While the client waits for a ping's reply, the server pushes 8 batches:
 * more than the (lowered) queue cap holds. The client keeps the first ones,
 * discards the rest, and resubscribes after the last one it delivered. */
static void script_overflow(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 16);
    Es__V1__Request *ping = srv_recv(fd);
    SRV_CHECK(f, ping != NULL && ping->kind_case == ES__V1__REQUEST__KIND_PING);
    if (ping == NULL) {
        return;
    }
    for (uint64_t p = 1; p <= 16; p += 2) {
        srv_range(fd, id, p, p + 1);
    }
    srv_caught_up(fd, id, 16);
    Es__V1__Pong pong = ES__V1__PONG__INIT;
    pong.payload = ping->ping->payload;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = ping->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_PONG;
    resp.pong = &pong;
    srv_send(fd, &resp);
    srv_free(ping);

    /* The client stops the old subscription and asks again after what it
     * delivered (f->ctx receives that point). */
    Es__V1__Request *u = srv_recv(fd);
    SRV_CHECK(f, u != NULL && u->kind_case == ES__V1__REQUEST__KIND_UNSUBSCRIBE);
    if (u == NULL) {
        return;
    }
    SRV_CHECK(f, u->unsubscribe->subscription_id == id);
    srv_free(u);
    Es__V1__Request *again = srv_expect_sub(f, fd);
    if (again == NULL) {
        return;
    }
    uint64_t after = again->subscribe->after;
    SRV_CHECK(f, !again->subscribe->from_start && after >= 2 && after < 16);
    *(uint64_t *)f->ctx = after;
    uint64_t id2 = again->id;
    srv_free(again);
    srv_sub_ok(fd, id2, 16);
    for (uint64_t p = after + 1; p <= 16; p += 4) {
        srv_range(fd, id2, p, p + 3 > 16 ? 16 : p + 3);
    }
    srv_caught_up(fd, id2, 16);
    srv_drain(fd);
}

static void test_queue_overflow_resubscribes(void **state)
{
    uint64_t resumed_after = 0;
    fake f;
    sub_fake_start(&f, script_overflow, &resumed_after);
    es_client *c = mk_client(&f, 0);
    c->sub_queue_cap = 300; /* about two pushes of two events */
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    CHECK_RV(es_client_ping(c, NULL), ES_OK);
    assert_int_equal(s.n, 0);
    assert_true(c->pushes_dropped >= 1);
    c->sub_queue_cap = CL_SUB_QUEUE_BYTES;
    poll_until(sub, &s, 16);
    assert_keys(&s, 1, 16);
    assert_int_equal(resumed_after, s.keys[resumed_after - 1]);
    assert_true(resumed_after < 16);
    for (int i = 0; i < 100 && s.caught_up == 0; i++) {
        CHECK_RV(es_sub_poll(sub, 10), ES_OK);
    }
    /* The first caught-up was discarded with the overflow. */
    assert_int_equal(s.caught_up, 1);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- pushes that break the rules -- */

/* Connection 1: a push with more events than the batch asked for, then a
 * push with a gap: each is reported once (MALFORMED) and answered by a
 * resubscription after the last good event. */
static void script_bad_pushes(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    SRV_CHECK(f, r->subscribe->batch_size == 3 && r->subscribe->from_start);
    uint64_t id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 9);
    srv_range(fd, id, 1, 2);
    srv_range(fd, id, 3, 6); /* 4 events, 3 asked for */

    Es__V1__Request *u = srv_recv(fd);
    SRV_CHECK(f, u != NULL && u->kind_case == ES__V1__REQUEST__KIND_UNSUBSCRIBE);
    srv_free(u);
    r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    SRV_CHECK(f, r->subscribe->after == 2 && !r->subscribe->from_start);
    id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 9);
    /* A hole in the whole log is not an error: deleted events leave them. */
    uint64_t hole[2] = {3, 4};
    srv_events(fd, id, hole, NULL, NULL, 2);
    uint64_t dup[3] = {2, 3, 4}; /* old ones first: dropped, never twice */
    srv_events(fd, id, dup, NULL, NULL, 3);
    srv_range(fd, id, 5, 6);
    srv_range(fd, id, 7, 9);
    srv_caught_up(fd, id, 9);
    srv_drain(fd);
}

static void test_bad_pushes(void **state)
{
    fake f;
    sub_fake_start(&f, script_bad_pushes, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START, .batch_size = 3};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    unsigned malformed = 0;
    for (int i = 0; i < 1000 && (s.n == 0 || s.keys[s.n - 1] < 9); i++) {
        es_err rv = es_sub_poll(sub, 10);
        if (rv == ES_ERR_MALFORMED) {
            malformed++;
            continue;
        }
        CHECK_RV(rv, ES_OK);
    }
    assert_int_equal(malformed, 1); /* the batch larger than asked for */
    assert_keys(&s, 1, 9);
    assert_int_equal(atomic_load(&f.accepts), 1);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- liveness -- */

/* A quiet subscription pings the server after request_timeout_ms. */
static void script_heartbeat(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 0);
    srv_caught_up(fd, id, 0);
    Es__V1__Request *ping = srv_recv(fd);
    SRV_CHECK(f, ping != NULL && ping->kind_case == ES__V1__REQUEST__KIND_PING);
    if (ping == NULL) {
        return;
    }
    Es__V1__Pong pong = ES__V1__PONG__INIT;
    pong.payload = ping->ping->payload;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = ping->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_PONG;
    resp.pong = &pong;
    srv_send(fd, &resp);
    srv_free(ping);
    srv_range(fd, id, 1, 1);
    srv_drain(fd);
}

static void test_heartbeat(void **state)
{
    fake f;
    sub_fake_start(&f, script_heartbeat, NULL);
    es_client *c = mk_client(&f, 200);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    poll_until(sub, &s, 1);
    assert_int_equal(s.caught_up, 1);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* A reconnect that finds another store closes the subscription. */
static void script_store_changes(fake *f, int fd, unsigned conn_no)
{
    f->store_tag = (uint8_t)conn_no;
    if (!srv_hello(f, fd)) {
        return;
    }
    if (conn_no > 1) {
        SRV_CHECK(f, srv_drain(fd) == 0);
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    srv_free(r);
    srv_sub_ok(fd, id, 1);
    srv_range(fd, id, 1, 1);
}

static void test_store_changed(void **state)
{
    fake f;
    sub_fake_start(&f, script_store_changes, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &o, on_batch, on_caught_up, &s, &sub), ES_OK);
    es_err rv = ES_OK;
    for (int i = 0; i < 500 && rv == ES_OK; i++) {
        rv = es_sub_poll(sub, 10);
    }
    CHECK_RV(rv, ES_ERR_INCOMPATIBLE_STORE);
    assert_keys(&s, 1, 1);
    CHECK_RV(es_sub_poll(sub, 0), ES_ERR_INCOMPATIBLE_STORE);
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- a push above the client's frame cap -- */

/* The client's max_frame_bytes is 2048: a frame declared larger drops the
 * connection before anything is allocated for it. Connection 1 (batch 0,
 * the server's default) and 2 (batch 128) push such a frame; connection 3
 * must ask for batches of 64 and gets small pushes. A subscription with
 * batches of 1 that meets one is closed. */
static void srv_huge_frame(int fd)
{
    uint8_t hdr[8] = {0, 0, 0x10, 0, 8, 1, 0xf2, 1}; /* declares 4096 bytes */
    srv_write_full(fd, hdr, sizeof(hdr));
    srv_drain(fd);
}

static void script_too_large(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    uint64_t id = r->id;
    uint32_t batch = r->subscribe->batch_size;
    uint64_t after = r->subscribe->after;
    srv_free(r);
    srv_sub_ok(fd, id, 3);
    if (conn_no == 1) {
        SRV_CHECK(f, batch == 0);
        srv_huge_frame(fd);
        return;
    }
    if (conn_no == 2) {
        SRV_CHECK(f, batch == 128);
        srv_range(fd, id, 1, 1); /* one small push gets through first */
        srv_huge_frame(fd);
        return;
    }
    SRV_CHECK(f, conn_no == 3 && batch == 64 && after == 1);
    srv_range(fd, id, 2, 3);
    srv_caught_up(fd, id, 3);
    /* The client ends that one and subscribes with batches of 1. */
    for (;;) {
        r = srv_recv(fd);
        if (r == NULL || r->kind_case == ES__V1__REQUEST__KIND_SUBSCRIBE) {
            break;
        }
        SRV_CHECK(f, r->kind_case == ES__V1__REQUEST__KIND_UNSUBSCRIBE);
        srv_free(r);
    }
    SRV_CHECK(f, r != NULL && r->subscribe->batch_size == 1);
    if (r == NULL) {
        return;
    }
    srv_sub_ok(fd, r->id, 3);
    srv_free(r);
    srv_huge_frame(fd);
}

static void test_push_above_frame_cap(void **state)
{
    fake f;
    sub_fake_start(&f, script_too_large, NULL);
    es_client_options o;
    es_client_options_init(&o);
    o.address = f.addr;
    o.max_frame_bytes = 2048;
    o.reconnect_attempts = 2;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    CHECK_RV(es_client_create(&o, &c), ES_OK);
    cl_set_hooks(c, fclock_now, fclock_sleep, NULL);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = NULL;
    es_sub_options so = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    CHECK_RV(es_subscribe(c, &so, on_batch, on_caught_up, &s, &sub), ES_OK);
    unsigned too_large = 0;
    for (int i = 0; i < 500 && (s.n < 3 || s.caught_up == 0); i++) {
        es_err rv = es_sub_poll(sub, 10);
        if (rv == ES_ERR_TOO_LARGE) {
            too_large++;
            assert_non_null(strstr(es_client_errmsg(c), "max_frame_bytes"));
            continue;
        }
        CHECK_RV(rv, ES_OK);
    }
    assert_int_equal(too_large, 2);
    assert_keys(&s, 1, 3);
    es_sub_destroy(sub);

    /* Batches of one event, and still too large: closed. */
    so.batch_size = 1;
    CHECK_RV(es_subscribe(c, &so, on_batch, NULL, &s, &sub), ES_OK);
    es_err rv = ES_OK;
    for (int i = 0; i < 500 && rv == ES_OK; i++) {
        rv = es_sub_poll(sub, 10);
    }
    CHECK_RV(rv, ES_ERR_TOO_LARGE);
    CHECK_RV(es_sub_poll(sub, 0), ES_ERR_TOO_LARGE);
    assert_non_null(strstr(es_client_errmsg(c), "one event"));
    es_sub_destroy(sub);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- arguments and refusals -- */

static void script_refuse_subscribe(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    SRV_CHECK(f, r->subscribe->after == 1000);
    srv_error(fd, r->id, ES__V1__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
              "start position is beyond the head of the log");
    srv_free(r);
    /* One more, accepted, then the client is destroyed first. */
    r = srv_expect_sub(f, fd);
    if (r == NULL) {
        return;
    }
    srv_sub_ok(fd, r->id, 3);
    srv_range(fd, r->id, 1, 3);
    srv_free(r);
    srv_drain(fd);
}

static void test_arguments_and_refusal(void **state)
{
    fake f;
    sub_fake_start(&f, script_refuse_subscribe, NULL);
    es_client *c = mk_client(&f, 0);
    seen s;
    seen_init(&s, false);
    es_subscription *sub = (es_subscription *)&s;
    es_sub_options o = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
    /* Refused before any I/O. */
    CHECK_RV(es_subscribe(NULL, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    assert_null(sub);
    CHECK_RV(es_subscribe(c, NULL, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_subscribe(c, &o, NULL, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    o.name = "x";
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    o.target = ES_SUB_STREAM;
    o.name = NULL;
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_STREAM_ID);
    o.name = "bad\x01id";
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_STREAM_ID);
    o.target = ES_SUB_CATEGORY;
    o.name = "";
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    o.target = (es_sub_target)9;
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    o.target = ES_SUB_ALL;
    o.name = NULL;
    o.start = (es_sub_start)7;
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(atomic_load(&f.accepts), 0);
    assert_false(es_client_connected(c));

    /* Refused by the server: nothing remains. */
    o.start = ES_SUB_AFTER;
    o.after = 1000;
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_ERR_INVALID_ARGUMENT);
    assert_null(sub);
    assert_non_null(strstr(es_client_errmsg(c), "beyond the head"));

    /* A client destroyed before its subscription: the subscription is
     * detached, polls say CLOSED, destroy only frees. */
    o.start = ES_SUB_FROM_START;
    CHECK_RV(es_subscribe(c, &o, on_batch, NULL, &s, &sub), ES_OK);
    es_client_destroy(c);
    CHECK_RV(es_sub_poll(sub, 0), ES_ERR_CLOSED);
    es_sub_destroy(sub);
    es_sub_destroy(NULL);
    CHECK_RV(es_sub_poll(NULL, 0), ES_ERR_INVALID_ARGUMENT);
    assert_false(es_sub_caught_up(NULL));
    fake_stop(&f);
}

static int group_setup(void **state)
{
    cl_alloc_set(track_malloc, track_free);
    return 0;
}

static int group_teardown(void **state)
{
    cl_alloc_set(NULL, NULL);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_routing),
        cmocka_unit_test(test_resume_mid_stream),
        cmocka_unit_test(test_resume_stream_revisions),
        cmocka_unit_test(test_resume_from_end),
        cmocka_unit_test(test_stream_from_end),
        cmocka_unit_test(test_close_at_caught_up),
        cmocka_unit_test(test_dropped_by_server),
        cmocka_unit_test(test_resubscribe_refused),
        cmocka_unit_test(test_refused_batch_again),
        cmocka_unit_test(test_queue_overflow_resubscribes),
        cmocka_unit_test(test_bad_pushes),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_store_changed),
        cmocka_unit_test(test_push_above_frame_cap),
        cmocka_unit_test(test_arguments_and_refusal),
    };
    return cmocka_run_group_tests_name("client_sub", tests, group_setup, group_teardown);
}

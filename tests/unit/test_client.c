/*
 * test_client — libesclient against a tiny fake server.
 *
 * The fake server (tests/support/fake_server.h) is a thread with a listening
 * socket on 127.0.0.1, port 0. Each test gives it a script that runs once per
 * accepted connection and speaks frames with the generated protobuf-c code,
 * so every test drives
 * the real client code over a real socket: handshake, decoding of results
 * and conflicts, failures at every stage of a connection, reconnection,
 * the circuit breaker, pipelining and the frame cap.
 *
 * The library's allocator is routed to cmocka's test_malloc, so every test
 * is also a leak check; the largest allocation is recorded to prove that an
 * oversized frame header is refused before anything is allocated for it.
 * The breaker's clock and the backoff's sleep are replaced by a fake clock:
 * no test sleeps for timing. The server thread never calls cmocka (not
 * thread-safe); it records failed checks, asserted by the test afterwards.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "es.pb-c.h"
#include "es/client.h"
#include "fake_server.h"
#include "internal.h"
#include "ptable.h"
#include "resil.h"

#include "check_rv.h"

/* ------------------------------------------------------------ allocator -- */

static size_t max_alloc;

static void *track_malloc(size_t n)
{
    if (n > max_alloc) {
        max_alloc = n;
    }
    return test_malloc(n);
}

static void track_free(void *p)
{
    test_free(p);
}

/* ----------------------------------------------------------- fake clock -- */

typedef struct fclock {
    uint64_t now;
    unsigned sleeps;
    uint64_t slept[32];
} fclock;

static uint64_t fclock_now(void *ctx)
{
    return ((fclock *)ctx)->now;
}

static void fclock_sleep(void *ctx, uint64_t us)
{
    fclock *fc = ctx;
    if (fc->sleeps < 32) {
        fc->slept[fc->sleeps] = us;
    }
    fc->sleeps++;
    fc->now += us;
}

/* ------------------------------------------------------------ client side -- */

static fclock test_clock;

static es_client *mk_client(fake *f, es_client_options *o)
{
    es_client_options def;
    if (o == NULL) {
        es_client_options_init(&def);
        o = &def;
    }
    if (o->address == NULL || strcmp(o->address, ES_DEFAULT_ADDRESS) == 0) {
        o->address = f->addr;
    }
    es_client *c = NULL;
    CHECK_RV(es_client_create(o, &c), ES_OK);
    memset(&test_clock, 0, sizeof(test_clock));
    test_clock.now = 1000000;
    cl_set_hooks(c, fclock_now, fclock_sleep, &test_clock);
    return c;
}

static void base_opts(es_client_options *o, fake *f)
{
    es_client_options_init(o);
    o->address = f->addr;
    o->client_name = "test-client";
    o->user = "alice";
    o->token = (const uint8_t *)"s3cret";
    o->token_len = 6;
    o->connect_timeout_ms = 5000;
    o->request_timeout_ms = 5000;
    o->reconnect_attempts = 1;
    o->backoff_initial_ms = 10;
    o->backoff_max_ms = 80;
    o->breaker_threshold = 0;
}

static es_event mk_event(const char *type, const char *json)
{
    es_event e;
    memset(&e, 0, sizeof(e));
    e.type = type;
    e.data = json;
    e.data_len = strlen(json);
    e.content_type = "application/json";
    return e;
}

/* ================================================================ tests == */

/* ---- hello -- */

static void script_hello_check(fake *f, int fd, unsigned conn_no)
{
    Es__V1__Request *req = srv_recv(fd);
    if (req == NULL) {
        SRV_CHECK(f, !"no hello");
        return;
    }
    SRV_CHECK(f, req->kind_case == ES__V1__REQUEST__KIND_HELLO);
    if (req->kind_case == ES__V1__REQUEST__KIND_HELLO) {
        const Es__V1__Hello *h = req->hello;
        SRV_CHECK(f, h->protocol_version == 1);
        SRV_CHECK(f, strcmp(h->client_name, "test-client") == 0);
        SRV_CHECK(f, strcmp(h->user, "alice") == 0);
        SRV_CHECK(f, h->token.len == 6 && memcmp(h->token.data, "s3cret", 6) == 0);
    }
    /* Answer like srv_hello, reusing the request's id. */
    Es__V1__Limits lim = ES__V1__LIMITS__INIT;
    lim.max_frame_bytes = 1u << 20;
    lim.max_events_per_append = 100;
    lim.max_event_bytes = 1u << 16;
    lim.max_page_size = 500;
    lim.max_in_flight = 32;
    lim.max_appends_per_transaction = 8;
    Es__V1__HelloOk ok = ES__V1__HELLO_OK__INIT;
    ok.protocol_version = 1;
    ok.server_version = (char *)"esd-fake 9.9";
    ok.limits = &lim;
    ok.sync_mode = ES__V1__SYNC_MODE__SYNC_MODE_NONE;
    ok.store_id.data = (uint8_t *)FAKE_STORE_ID;
    ok.store_id.len = 16;
    ok.role = (char *)"leader";
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = req->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_HELLO;
    resp.hello = &ok;
    srv_free(req);
    srv_send(fd, &resp);
    srv_drain(fd);
}

static void test_hello_handshake(void **state)
{
    fake f;
    fake_start(&f, script_hello_check, NULL);
    es_client_options o;
    base_opts(&o, &f);
    es_client *c = mk_client(&f, &o);

    es_server_info info;
    CHECK_RV(es_client_server_info(c, &info), ES_ERR_NOT_FOUND);
    assert_false(es_client_connected(c));
    CHECK_RV(es_client_connect(c), ES_OK);
    assert_true(es_client_connected(c));
    CHECK_RV(es_client_server_info(c, &info), ES_OK);
    assert_int_equal(info.protocol_version, 1);
    assert_string_equal(info.server_version, "esd-fake 9.9");
    assert_string_equal(info.role, "leader");
    assert_int_equal(info.sync_mode, ES_SYNC_NONE);
    assert_int_equal(info.store_id_len, 16);
    assert_memory_equal(info.store_id, FAKE_STORE_ID, 16);
    assert_int_equal(info.limits.max_frame_bytes, 1u << 20);
    assert_int_equal(info.limits.max_events_per_append, 100);
    assert_int_equal(info.limits.max_event_bytes, 1u << 16);
    assert_int_equal(info.limits.max_page_size, 500);
    assert_int_equal(info.limits.max_in_flight, 32);
    assert_int_equal(info.limits.max_appends_per_transaction, 8);
    /* Connecting again is a no-op. */
    CHECK_RV(es_client_connect(c), ES_OK);
    assert_int_equal(atomic_load(&f.accepts), 1);

    /* The limits are enforced before sending. */
    es_event big = mk_event("Big", "x");
    static char blob[(1u << 16) + 1];
    big.data = blob;
    big.data_len = sizeof(blob);
    CHECK_RV(es_stream_append(c, "s-1", (es_expected){ES_EXPECT_ANY, 0}, &big, 1, NULL),
             ES_ERR_TOO_LARGE);

    es_client_destroy(c);
    fake_stop(&f);
}

static void script_hello_refused(fake *f, int fd, unsigned conn_no)
{
    Es__V1__Request *req = srv_recv(fd);
    if (req == NULL) {
        return;
    }
    Es__V1__Error err = ES__V1__ERROR__INIT;
    err.code = ES__V1__ERROR_CODE__ERROR_CODE_UNAUTHENTICATED;
    err.message = (char *)"bad token";
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = req->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_ERROR;
    resp.error = &err;
    srv_free(req);
    srv_send(fd, &resp);
}

static void test_hello_refused(void **state)
{
    fake f;
    fake_start(&f, script_hello_refused, NULL);
    es_client_options o;
    base_opts(&o, &f);
    o.reconnect_attempts = 4;
    o.breaker_threshold = 2;
    es_client *c = mk_client(&f, &o);
    /* Refused credentials: no retry, no breaker failure. */
    CHECK_RV(es_client_connect(c), ES_ERR_UNAUTHENTICATED);
    assert_non_null(strstr(es_client_errmsg(c), "bad token"));
    assert_int_equal(atomic_load(&f.accepts), 1);
    assert_int_equal(test_clock.sleeps, 0);
    CHECK_RV(es_client_connect(c), ES_ERR_UNAUTHENTICATED);
    CHECK_RV(es_client_connect(c), ES_ERR_UNAUTHENTICATED);
    assert_int_equal(es_client_breaker_state(c), ES_BREAKER_CLOSED);
    assert_false(es_client_connected(c));
    es_client_destroy(c);
    fake_stop(&f);
}

static void script_hello_v2(fake *f, int fd, unsigned conn_no)
{
    f->hello_version = 2;
    srv_hello(f, fd);
    srv_drain(fd);
}

static void test_hello_wrong_version(void **state)
{
    fake f;
    fake_start(&f, script_hello_v2, NULL);
    es_client *c = mk_client(&f, NULL);
    CHECK_RV(es_client_connect(c), ES_ERR_UNSUPPORTED_VERSION);
    assert_false(es_client_connected(c));
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- append -- */

typedef struct append_ctx {
    uint8_t ids[2][16];
    int requests;
} append_ctx;

static void script_append(fake *f, int fd, unsigned conn_no)
{
    append_ctx *ax = f->ctx;
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    while ((req = srv_recv(fd)) != NULL) {
        SRV_CHECK(f, req->kind_case == ES__V1__REQUEST__KIND_APPEND);
        if (req->kind_case != ES__V1__REQUEST__KIND_APPEND) {
            srv_free(req);
            return;
        }
        const Es__V1__Append *a = req->append;
        SRV_CHECK(f, a->stream.len == 10 && memcmp(a->stream.data, "account-42", 10) == 0);
        SRV_CHECK(f, a->expected != NULL &&
                         a->expected->kind == ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT &&
                         a->expected->revision == 4);
        SRV_CHECK(f, a->n_events == 2);
        if (a->n_events == 2) {
            for (int i = 0; i < 2; i++) {
                const Es__V1__ProposedEvent *e = a->events[i];
                SRV_CHECK(f, e->id.len == 16);
                if (e->id.len != 16) {
                    continue;
                }
                if (ax->requests == 0) {
                    memcpy(ax->ids[i], e->id.data, 16);
                } else {
                    /* A retry carries the very same ids. */
                    SRV_CHECK(f, memcmp(ax->ids[i], e->id.data, 16) == 0);
                }
            }
            SRV_CHECK(f, a->events[0]->type.len == 14 &&
                             memcmp(a->events[0]->type.data, "MoneyDeposited", 14) == 0);
            SRV_CHECK(f, a->events[0]->data.len == 13 &&
                             memcmp(a->events[0]->data.data, "{\"amount\":10}", 13) == 0);
            SRV_CHECK(f, a->events[0]->content_type.len == 16);
            SRV_CHECK(f, a->events[1]->metadata.len == 2);
            SRV_CHECK(f, a->events[0]->metadata.len == 0);
        }
        Es__V1__AppendResult ar = ES__V1__APPEND_RESULT__INIT;
        ar.first_revision = 5;
        ar.last_revision = 6;
        ar.first_position = 1000;
        ar.last_position = 1001;
        ar.duplicate = ax->requests > 0;
        ar.synced = true;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = req->id;
        resp.kind_case = ES__V1__RESPONSE__KIND_APPEND;
        resp.append = &ar;
        srv_free(req);
        srv_send(fd, &resp);
        ax->requests++;
    }
}

static void test_append_result(void **state)
{
    append_ctx ax;
    memset(&ax, 0, sizeof(ax));
    fake f;
    fake_start(&f, script_append, &ax);
    es_client *c = mk_client(&f, NULL);

    es_event ev[2] = {mk_event("MoneyDeposited", "{\"amount\":10}"),
                      mk_event("MoneyWithdrawn", "{\"amount\":3}")};
    ev[1].metadata = "{}";
    ev[1].metadata_len = 2;
    static const uint8_t given[16] = {0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x43, 0x33,
                                      0x84, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55};
    memcpy(ev[1].id, given, 16);
    ev[1].has_id = true;

    es_append_result res;
    memset(&res, 0, sizeof(res));
    CHECK_RV(es_stream_append(c, "account-42", (es_expected){ES_EXPECT_EXACT, 4}, ev, 2, &res),
             ES_OK);
    assert_int_equal(res.first_revision, 5);
    assert_int_equal(res.last_revision, 6);
    assert_int_equal(res.first_position, 1000);
    assert_int_equal(res.last_position, 1001);
    assert_false(res.duplicate);
    assert_true(res.synced);

    /* The missing id was generated (UUIDv7: version 7, and its first 48
     * bits are the current Unix time in ms) and written back; the given
     * one kept. */
    assert_true(ev[0].has_id);
    assert_int_equal(ev[0].id[6] >> 4, 7);
    {
        uint64_t ms = 0;
        for (int i = 0; i < 6; i++) {
            ms = (ms << 8) | ev[0].id[i];
        }
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t now_ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
        assert_true(ms <= now_ms && now_ms - ms < 60000);
    }
    assert_int_equal(ev[0].id[8] & 0xc0, 0x80);
    assert_memory_equal(ev[1].id, given, 16);

    /* Retrying with the same array sends the same ids (idempotent). */
    CHECK_RV(es_stream_append(c, "account-42", (es_expected){ES_EXPECT_EXACT, 4}, ev, 2, &res),
             ES_OK);
    assert_true(res.duplicate);
    es_client_destroy(c);
    fake_stop(&f);
    assert_int_equal(ax.requests, 2);
    assert_memory_equal(ax.ids[0], ev[0].id, 16);
    assert_memory_equal(ax.ids[1], given, 16);
}

/* Serves one snapshot for "account-42". */
static void script_snapshot(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    while ((req = srv_recv(fd)) != NULL) {
        SRV_CHECK(f, req->kind_case == ES__V1__REQUEST__KIND_LOAD_SNAPSHOT);
        Es__V1__Snapshot sn = ES__V1__SNAPSHOT__INIT;
        sn.stream.data = (uint8_t *)"account-42";
        sn.stream.len = 10;
        sn.revision = 7;
        sn.state_format = 3;
        sn.data.data = (uint8_t *)"state";
        sn.data.len = 5;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = req->id;
        resp.kind_case = ES__V1__RESPONSE__KIND_SNAPSHOT;
        resp.snapshot = &sn;
        srv_free(req);
        srv_send(fd, &resp);
    }
}

/* Regression: loading a snapshot as the very first call of a client (no
 * connect before) used a reply cap of 0 and failed with MALFORMED. */
static void test_snapshot_load_first_call(void **state)
{
    fake f;
    fake_start(&f, script_snapshot, NULL);
    es_client *c = mk_client(&f, NULL);
    es_snapshot snap;
    CHECK_RV(es_snapshot_load(c, "account-42", &snap), ES_OK);
    assert_int_equal(snap.revision, 7);
    assert_int_equal(snap.state_format, 3);
    assert_int_equal(snap.data_len, 5);
    assert_memory_equal(snap.data, "state", 5);
    es_snapshot_finish(&snap);
    es_client_destroy(c);
    fake_stop(&f);
}

static void test_append_invalid_args(void **state)
{
    fake f;
    fake_start(&f, NULL, NULL);
    es_client *c = mk_client(&f, NULL);
    es_event ev = mk_event("T", "{}");
    es_expected any = {ES_EXPECT_ANY, 0};
    /* Refused before any connection is made. */
    CHECK_RV(es_stream_append(c, "", any, &ev, 1, NULL), ES_ERR_INVALID_STREAM_ID);
    CHECK_RV(es_stream_append(c, "$system", any, &ev, 1, NULL), ES_ERR_RESERVED_STREAM);
    CHECK_RV(es_stream_append(c, "bad\nid", any, &ev, 1, NULL), ES_ERR_INVALID_STREAM_ID);
    CHECK_RV(es_stream_append(c, "s-1", any, &ev, 0, NULL), ES_ERR_INVALID_ARGUMENT);
    ev.type = "";
    CHECK_RV(es_stream_append(c, "s-1", any, &ev, 1, NULL), ES_ERR_INVALID_EVENT_TYPE);
    ev.type = "T";
    CHECK_RV(es_stream_append(c, "s-1", (es_expected){(es_expected_kind)9, 0}, &ev, 1, NULL),
             ES_ERR_INVALID_ARGUMENT);
    assert_false(ev.has_id);
    assert_int_equal(atomic_load(&f.accepts), 0);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- conflicts -- */

static void script_conflicts(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req = srv_recv(fd);
    if (req == NULL) {
        return;
    }
    SRV_CHECK(f, req->kind_case == ES__V1__REQUEST__KIND_TRANSACTION);
    if (req->kind_case == ES__V1__REQUEST__KIND_TRANSACTION) {
        const Es__V1__Transaction *t = req->transaction;
        SRV_CHECK(f, t->n_appends == 3);
        if (t->n_appends == 3) {
            SRV_CHECK(f,
                      t->appends[0]->expected->kind == ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT);
            SRV_CHECK(f, t->appends[0]->expected->revision == 4);
            SRV_CHECK(f, t->appends[1]->expected->kind ==
                             ES__V1__EXPECTED_KIND__EXPECTED_KIND_STREAM_EXISTS);
            SRV_CHECK(f, t->appends[2]->expected->kind ==
                             ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM);
            SRV_CHECK(f, t->appends[1]->n_events == 2);
        }
    }
    Es__V1__Expected e0 = ES__V1__EXPECTED__INIT, e2 = ES__V1__EXPECTED__INIT;
    e0.kind = ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT;
    e0.revision = 4;
    e2.kind = ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM;
    Es__V1__StreamState a0 = ES__V1__STREAM_STATE__INIT, a2 = ES__V1__STREAM_STATE__INIT;
    a0.exists = true;
    a0.revision = 7;
    a2.exists = true;
    a2.revision = 0;
    Es__V1__FailedCheck fc0 = ES__V1__FAILED_CHECK__INIT, fc2 = ES__V1__FAILED_CHECK__INIT;
    fc0.stream.data = (uint8_t *)"account-1";
    fc0.stream.len = 9;
    fc0.expected = &e0;
    fc0.actual = &a0;
    fc2.stream.data = (uint8_t *)"audit-1";
    fc2.stream.len = 7;
    fc2.expected = &e2;
    fc2.actual = &a2;
    Es__V1__FailedCheck *fcs[2] = {&fc0, &fc2};
    Es__V1__Error err = ES__V1__ERROR__INIT;
    err.code = ES__V1__ERROR_CODE__ERROR_CODE_WRONG_EXPECTED_REVISION;
    err.message = (char *)"2 checks failed";
    err.n_conflicts = 2;
    err.conflicts = fcs;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = req->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_ERROR;
    resp.error = &err;
    srv_free(req);
    srv_send(fd, &resp);
    srv_drain(fd);
}

static void test_conflict_details(void **state)
{
    fake f;
    fake_start(&f, script_conflicts, NULL);
    es_client *c = mk_client(&f, NULL);
    es_event w = mk_event("MoneyWithdrawn", "{\"amount\":5}");
    es_event d[2] = {mk_event("MoneyDeposited", "{\"amount\":5}"), mk_event("Noted", "{}")};
    es_event a = mk_event("TransferAudited", "{}");
    es_append_req reqs[3] = {
        {"account-1", {ES_EXPECT_EXACT, 4}, &w, 1},
        {"account-2", {ES_EXPECT_STREAM_EXISTS, 0}, d, 2},
        {"audit-1", {ES_EXPECT_NO_STREAM, 0}, &a, 1},
    };
    es_append_result results[3];
    CHECK_RV(es_txn_commit(c, reqs, 3, results), ES_ERR_WRONG_EXPECTED_REVISION);
    assert_string_equal(es_client_errmsg(c), "2 checks failed");
    size_t n = 0;
    const es_conflict *cs = es_client_conflicts(c, &n);
    assert_int_equal(n, 2);
    assert_non_null(cs);
    assert_string_equal(cs[0].stream, "account-1");
    assert_int_equal(cs[0].expected.kind, ES_EXPECT_EXACT);
    assert_int_equal(cs[0].expected.revision, 4);
    assert_true(cs[0].actual_exists);
    assert_int_equal(cs[0].actual_revision, 7);
    assert_string_equal(cs[1].stream, "audit-1");
    assert_int_equal(cs[1].expected.kind, ES_EXPECT_NO_STREAM);
    assert_true(cs[1].actual_exists);
    assert_int_equal(cs[1].actual_revision, 0);
    /* Every event got an id. */
    assert_true(w.has_id && d[0].has_id && d[1].has_id && a.has_id);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- connection failures -- */

static void test_refused_connect(void **state)
{
    /* A port nobody listens on: bind one, note it, close it. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    close(s);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));

    es_client_options o;
    es_client_options_init(&o);
    o.address = addr;
    o.reconnect_attempts = 3;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    CHECK_RV(es_client_create(&o, &c), ES_OK);
    fclock fc = {.now = 1};
    cl_set_hooks(c, fclock_now, fclock_sleep, &fc);
    uint64_t t0 = cl_mono_us();
    CHECK_RV(es_client_ping(c, NULL), ES_ERR_CONNECTION);
    uint64_t took = cl_mono_us() - t0;
    assert_true(took < 1000000); /* refused at once, not after a timeout */
    assert_int_equal(c->connect_attempts, 3);
    assert_int_equal(fc.sleeps, 2); /* backoff between the attempts */
    assert_non_null(strstr(es_client_errmsg(c), "refused"));
    es_client_destroy(c);
}

static void script_close_mid_frame(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req = srv_recv(fd);
    srv_free(req);
    /* Declare 100 bytes, send 10, close. */
    uint8_t partial[14] = {0, 0, 0, 100, 8, 1, 0x5a, 2, 3, 4, 5, 6, 7, 8};
    srv_write_full(fd, partial, sizeof(partial));
}

static void test_close_mid_frame(void **state)
{
    fake f;
    fake_start(&f, script_close_mid_frame, NULL);
    es_client *c = mk_client(&f, NULL);
    es_event ev = mk_event("T", "{}");
    CHECK_RV(es_stream_append(c, "s-1", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL),
             ES_ERR_CLOSED);
    assert_non_null(strstr(es_client_errmsg(c), "middle of a frame"));
    assert_false(es_client_connected(c));
    assert_int_equal(es_client_in_flight(c), 0);
    es_client_destroy(c);
    fake_stop(&f);
}

/* Reads three requests, answers the second, closes. */
static void script_answer_one_of_three(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    uint64_t ids[3] = {0};
    for (int i = 0; i < 3; i++) {
        Es__V1__Request *req = srv_recv(fd);
        if (req == NULL) {
            SRV_CHECK(f, !"expected three requests");
            return;
        }
        ids[i] = req->id;
        srv_free(req);
    }
    srv_append_ok(fd, ids[1], 0, 1, 77);
}

static void test_in_flight_fail_at_close(void **state)
{
    fake f;
    fake_start(&f, script_answer_one_of_three, NULL);
    es_client *c = mk_client(&f, NULL);
    es_event ev[3] = {mk_event("T", "1"), mk_event("T", "2"), mk_event("T", "3")};
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        CHECK_RV(es_stream_append_send(c, "s-1", (es_expected){ES_EXPECT_ANY, 0}, &ev[i], 1, &h[i]),
                 ES_OK);
    }
    assert_int_equal(es_client_in_flight(c), 3);
    es_append_result r;
    CHECK_RV(es_stream_append_wait(c, h[0], &r), ES_ERR_CLOSED);
    CHECK_RV(es_stream_append_wait(c, h[1], &r), ES_OK);
    assert_int_equal(r.first_position, 77);
    CHECK_RV(es_stream_append_wait(c, h[2], &r), ES_ERR_CLOSED);
    CHECK_RV(es_stream_append_wait(c, h[2], &r), ES_ERR_NOT_FOUND);
    assert_int_equal(es_client_in_flight(c), 0);
    es_client_destroy(c);
    fake_stop(&f);
}

/* Connection 1: serve one append then drop the next request. Connections
 * 2 and 3: the server is "restarting" (close before the Hello reply).
 * Connection 4 onwards: serve. */
static void script_flaky(fake *f, int fd, unsigned conn_no)
{
    if (conn_no == 2 || conn_no == 3) {
        return;
    }
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    int served = 0;
    while ((req = srv_recv(fd)) != NULL) {
        uint64_t id = req->id;
        srv_free(req);
        if (conn_no == 1 && served == 1) {
            return; /* lose the connection with the request in flight */
        }
        srv_append_ok(fd, id, (uint64_t)served, 1, 10 * conn_no + (uint64_t)served);
        served++;
    }
}

static void test_reconnect_with_backoff(void **state)
{
    fake f;
    fake_start(&f, script_flaky, NULL);
    es_client_options o;
    base_opts(&o, &f);
    o.reconnect_attempts = 5;
    o.backoff_initial_ms = 100;
    o.backoff_max_ms = 150;
    o.breaker_threshold = 10;
    es_client *c = mk_client(&f, &o);
    es_event ev = mk_event("T", "{}");
    es_append_result r;
    es_expected any = {ES_EXPECT_ANY, 0};
    CHECK_RV(es_stream_append(c, "s-1", any, &ev, 1, &r), ES_OK);
    assert_int_equal(r.first_position, 10);
    /* The server drops the connection with this append in flight. */
    CHECK_RV(es_stream_append(c, "s-1", any, &ev, 1, &r), ES_ERR_CLOSED);
    assert_false(es_client_connected(c));
    /* The retry reconnects: two failed attempts, backoff, then success. */
    CHECK_RV(es_stream_append(c, "s-1", any, &ev, 1, &r), ES_OK);
    assert_int_equal(r.first_position, 40);
    assert_true(es_client_connected(c));
    assert_int_equal(atomic_load(&f.accepts), 4);
    assert_int_equal(test_clock.sleeps, 2);
    /* Full jitter: retry k waits in [0, min(max, initial * 2^k)]. */
    assert_true(test_clock.slept[0] <= 100000);
    assert_true(test_clock.slept[1] <= 150000);
    assert_int_equal(es_client_breaker_state(c), ES_BREAKER_CLOSED);
    assert_int_equal(c->br.failures, 0);
    es_client_destroy(c);
    fake_stop(&f);
}

static void script_serve_pings(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    while ((req = srv_recv(fd)) != NULL) {
        Es__V1__Pong pong = ES__V1__PONG__INIT;
        if (req->kind_case == ES__V1__REQUEST__KIND_PING) {
            pong.payload = req->ping->payload;
        }
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = req->id;
        resp.kind_case = ES__V1__RESPONSE__KIND_PONG;
        resp.pong = &pong;
        srv_send(fd, &resp);
        srv_free(req);
    }
}

/* Connection 1 answers one ping and closes; later ones serve. */
static void script_close_when_idle(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    int served = 0;
    while ((conn_no > 1 || served < 1) && (req = srv_recv(fd)) != NULL) {
        Es__V1__Pong pong = ES__V1__PONG__INIT;
        pong.payload = req->ping->payload;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = req->id;
        resp.kind_case = ES__V1__RESPONSE__KIND_PONG;
        resp.pong = &pong;
        srv_send(fd, &resp);
        srv_free(req);
        served++;
    }
}

static void test_reconnect_after_idle_close(void **state)
{
    fake f;
    fake_start(&f, script_close_when_idle, NULL);
    es_client *c = mk_client(&f, NULL);
    CHECK_RV(es_client_ping(c, NULL), ES_OK);
    /* Wait (without sleeping) until the server's close reached us. */
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    /* The loss is noticed before sending: the call reconnects, no error. */
    CHECK_RV(es_client_ping(c, NULL), ES_OK);
    assert_int_equal(atomic_load(&f.accepts), 2);
    es_client_destroy(c);
    fake_stop(&f);
}

/* Every connection answers one ping and closes. */
static void script_one_ping(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req = srv_recv(fd);
    if (req == NULL) {
        return;
    }
    Es__V1__Pong pong = ES__V1__PONG__INIT;
    pong.payload = req->ping->payload;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = req->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_PONG;
    resp.pong = &pong;
    srv_send(fd, &resp);
    srv_free(req);
}

/* 1,000 reconnects (also run under valgrind: the client_valgrind test). */
static void test_many_reconnects(void **state)
{
    fake f;
    fake_start(&f, script_one_ping, NULL);
    es_client *c = mk_client(&f, NULL);
    for (int i = 0; i < 1000; i++) {
        CHECK_RV(es_client_ping(c, NULL), ES_OK);
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
    }
    assert_int_equal(atomic_load(&f.accepts), 1000);
    assert_int_equal(c->connect_attempts, 1000);
    es_client_destroy(c);
    fake_stop(&f);
}

static void test_circuit_breaker(void **state)
{
    fake f;
    fake_start(&f, script_serve_pings, NULL);
    atomic_store(&f.mode, MODE_DOWN);
    es_client_options o;
    base_opts(&o, &f);
    o.reconnect_attempts = 1;
    o.breaker_threshold = 3;
    o.breaker_reset_ms = 10000;
    es_client *c = mk_client(&f, &o);

    for (int i = 0; i < 3; i++) {
        CHECK_RV(es_client_ping(c, NULL), ES_ERR_CONNECTION);
    }
    assert_int_equal(atomic_load(&f.accepts), 3);
    assert_int_equal(es_client_breaker_state(c), ES_BREAKER_OPEN);

    /* Open: fail fast, nothing attempted. */
    uint64_t t0 = cl_mono_us();
    for (int i = 0; i < 100; i++) {
        CHECK_RV(es_client_ping(c, NULL), ES_ERR_CIRCUIT_OPEN);
    }
    assert_true(cl_mono_us() - t0 < 1000000);
    assert_int_equal(atomic_load(&f.accepts), 3);
    assert_int_equal(c->connect_attempts, 3);
    assert_non_null(strstr(es_client_errmsg(c), "circuit breaker open"));

    /* Still open just before the delay. */
    test_clock.now += 9999000;
    CHECK_RV(es_client_ping(c, NULL), ES_ERR_CIRCUIT_OPEN);
    assert_int_equal(atomic_load(&f.accepts), 3);

    /* After the delay: one trial (half-open); it fails: open again. */
    test_clock.now += 1000;
    CHECK_RV(es_client_ping(c, NULL), ES_ERR_CONNECTION);
    assert_int_equal(atomic_load(&f.accepts), 4);
    assert_int_equal(es_client_breaker_state(c), ES_BREAKER_OPEN);
    CHECK_RV(es_client_ping(c, NULL), ES_ERR_CIRCUIT_OPEN);
    assert_int_equal(atomic_load(&f.accepts), 4);

    /* The server comes back; the next trial closes the circuit. */
    atomic_store(&f.mode, MODE_UP);
    test_clock.now += 10000000;
    uint64_t rtt = 0;
    CHECK_RV(es_client_ping(c, &rtt), ES_OK);
    assert_int_equal(es_client_breaker_state(c), ES_BREAKER_CLOSED);
    assert_int_equal(atomic_load(&f.accepts), 5);
    CHECK_RV(es_client_ping(c, NULL), ES_OK);
    assert_int_equal(atomic_load(&f.accepts), 5);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- pipelining -- */

/* Reads requests in groups of `group`, answers each group in reverse. The
 * position of a result is 1000 + the order in which its request came. */
typedef struct pipe_ctx {
    int group;
    int total;
} pipe_ctx;

static void script_reverse(fake *f, int fd, unsigned conn_no)
{
    pipe_ctx *pc = f->ctx;
    if (!srv_hello(f, fd)) {
        return;
    }
    int seen = 0;
    while (seen < pc->total) {
        uint64_t ids[16];
        int n = 0;
        while (n < pc->group && seen + n < pc->total) {
            Es__V1__Request *req = srv_recv(fd);
            if (req == NULL) {
                SRV_CHECK(f, !"client went away early");
                return;
            }
            ids[n++] = req->id;
            srv_free(req);
            if ((unsigned)n > atomic_load(&f->max_unanswered)) {
                atomic_store(&f->max_unanswered, (unsigned)n);
            }
        }
        for (int i = n - 1; i >= 0; i--) {
            srv_append_ok(fd, ids[i], (uint64_t)(seen + i), 1, 1000 + (uint64_t)(seen + i));
        }
        seen += n;
    }
    srv_drain(fd);
}

static void test_pipelined_out_of_order(void **state)
{
    pipe_ctx pc = {.group = 6, .total = 6};
    fake f;
    fake_start(&f, script_reverse, &pc);
    es_client *c = mk_client(&f, NULL);
    es_event ev[6];
    uint64_t h[6];
    for (int i = 0; i < 6; i++) {
        ev[i] = mk_event("T", "{}");
        CHECK_RV(es_stream_append_send(c, "s-1", (es_expected){ES_EXPECT_ANY, 0}, &ev[i], 1, &h[i]),
                 ES_OK);
    }
    /* Collect in yet another order. */
    static const int order[6] = {2, 5, 0, 3, 1, 4};
    for (int k = 0; k < 6; k++) {
        int i = order[k];
        es_append_result r;
        CHECK_RV(es_stream_append_wait(c, h[i], &r), ES_OK);
        assert_int_equal(r.first_position, 1000 + (uint64_t)i);
        assert_int_equal(r.first_revision, (uint64_t)i);
    }
    assert_int_equal(es_client_in_flight(c), 0);
    es_client_destroy(c);
    fake_stop(&f);
}

static void test_pipelined_in_flight_cap(void **state)
{
    pipe_ctx pc = {.group = 2, .total = 7};
    fake f;
    fake_start(&f, script_reverse, &pc);
    f.max_in_flight = 2;
    es_client *c = mk_client(&f, NULL);
    es_event ev[7];
    uint64_t h[7];
    for (int i = 0; i < 7; i++) {
        ev[i] = mk_event("T", "{}");
        CHECK_RV(es_stream_append_send(c, "s-1", (es_expected){ES_EXPECT_ANY, 0}, &ev[i], 1, &h[i]),
                 ES_OK);
        assert_true(es_client_in_flight(c) <= 2);
    }
    for (int i = 6; i >= 0; i--) {
        es_append_result r;
        CHECK_RV(es_stream_append_wait(c, h[i], &r), ES_OK);
        assert_int_equal(r.first_position, 1000 + (uint64_t)i);
    }
    es_client_destroy(c);
    fake_stop(&f);
    assert_int_equal(atomic_load(&f.max_unanswered), 2);
}

static void script_answer_all(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    while ((req = srv_recv(fd)) != NULL) {
        srv_append_ok(fd, req->id, 0, 1, req->id);
        srv_free(req);
    }
}

static void test_pending_cap_and_discard(void **state)
{
    fake f;
    fake_start(&f, script_answer_all, NULL);
    es_client_options o;
    base_opts(&o, &f);
    o.max_pending = 3;
    es_client *c = mk_client(&f, &o);
    es_event ev = mk_event("T", "{}");
    es_expected any = {ES_EXPECT_ANY, 0};
    uint64_t h[4];
    for (int i = 0; i < 3; i++) {
        CHECK_RV(es_stream_append_send(c, "s-1", any, &ev, 1, &h[i]), ES_OK);
    }
    CHECK_RV(es_stream_append_send(c, "s-1", any, &ev, 1, &h[3]), ES_ERR_TOO_MANY_REQUESTS);
    CHECK_RV(es_stream_append_discard(c, h[0]), ES_OK);
    CHECK_RV(es_stream_append_discard(c, h[0]), ES_ERR_NOT_FOUND);
    CHECK_RV(es_stream_append_send(c, "s-1", any, &ev, 1, &h[3]), ES_OK);
    CHECK_RV(es_stream_append_wait(c, h[0], NULL), ES_ERR_NOT_FOUND);
    CHECK_RV(es_stream_append_wait(c, h[3], NULL), ES_OK);
    CHECK_RV(es_stream_append_wait(c, h[1], NULL), ES_OK);
    /* A discarded handle whose reply already came is freed at once; one
     * still in flight when the client is destroyed is freed then. */
    CHECK_RV(es_stream_append_discard(c, h[2]), ES_OK);
    CHECK_RV(es_stream_append_send(c, "s-1", any, &ev, 1, &h[0]), ES_OK);
    CHECK_RV(es_stream_append_discard(c, h[0]), ES_OK);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- frame cap -- */

typedef struct cap_ctx {
    uint8_t hdr[4];
} cap_ctx;

static void script_huge_header(fake *f, int fd, unsigned conn_no)
{
    cap_ctx *cc = f->ctx;
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req = srv_recv(fd);
    srv_free(req);
    srv_write_full(fd, cc->hdr, 4);
    srv_drain(fd);
}

static void test_frame_header_above_cap(void **state)
{
    static const uint32_t lens[] = {4097u, 0x7fffffffu, 0xffffffffu, 0u};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        cap_ctx cc;
        cc.hdr[0] = (uint8_t)(lens[k] >> 24);
        cc.hdr[1] = (uint8_t)(lens[k] >> 16);
        cc.hdr[2] = (uint8_t)(lens[k] >> 8);
        cc.hdr[3] = (uint8_t)lens[k];
        fake f;
        fake_start(&f, script_huge_header, &cc);
        es_client_options o;
        base_opts(&o, &f);
        o.max_frame_bytes = 4096;
        es_client *c = mk_client(&f, &o);
        CHECK_RV(es_client_connect(c), ES_OK);
        max_alloc = 0;
        es_event ev = mk_event("T", "{}");
        es_err want = lens[k] == 0 ? ES_ERR_MALFORMED : ES_ERR_TOO_LARGE;
        CHECK_RV(es_stream_append(c, "s-1", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL), want);
        /* Nothing near the declared size was allocated. */
        assert_true(max_alloc < 4096);
        assert_false(es_client_connected(c));
        es_client_destroy(c);
        fake_stop(&f);
    }
}

/* ---- timeout -- */

static void script_silent(fake *f, int fd, unsigned conn_no)
{
    if (!srv_hello(f, fd)) {
        return;
    }
    srv_drain(fd);
}

static void test_request_timeout(void **state)
{
    fake f;
    fake_start(&f, script_silent, NULL);
    es_client_options o;
    base_opts(&o, &f);
    o.request_timeout_ms = 100;
    es_client *c = mk_client(&f, &o);
    uint64_t t0 = cl_mono_us();
    CHECK_RV(es_client_ping(c, NULL), ES_ERR_TIMEOUT);
    uint64_t took = cl_mono_us() - t0;
    assert_true(took >= 100000 && took < 3000000);
    assert_false(es_client_connected(c));
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- reads -- */

typedef struct read_ctx {
    uint32_t events; /* in the fake stream */
    uint32_t extra;  /* send this many more events than asked */
    int pages;
} read_ctx;

static void script_read(fake *f, int fd, unsigned conn_no)
{
    read_ctx *rc = f->ctx;
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *req;
    while ((req = srv_recv(fd)) != NULL) {
        SRV_CHECK(f, req->kind_case == ES__V1__REQUEST__KIND_READ_STREAM);
        if (req->kind_case != ES__V1__REQUEST__KIND_READ_STREAM) {
            srv_free(req);
            return;
        }
        const Es__V1__ReadStream *rs = req->read_stream;
        SRV_CHECK(f, rs->limit > 0 && rs->limit <= 2);
        uint64_t from = rs->from_revision;
        uint32_t n = 0;
        Es__V1__RecordedEvent ev[8];
        Es__V1__RecordedEvent *evp[8];
        static uint8_t ids[8][16];
        char data[8][32];
        while (n < rs->limit + rc->extra && from + n < rc->events && n < 8) {
            Es__V1__RecordedEvent *e = &ev[n];
            es__v1__recorded_event__init(e);
            e->stream = rs->stream;
            e->revision = from + n;
            e->position = 100 + from + n;
            memset(ids[n], (int)(from + n), 16);
            e->id.data = ids[n];
            e->id.len = 16;
            e->type.data = (uint8_t *)"Tick";
            e->type.len = 4;
            snprintf(data[n], sizeof(data[n]), "{\"n\":%u}", (unsigned)(from + n));
            e->data.data = (uint8_t *)data[n];
            e->data.len = strlen(data[n]);
            e->recorded_at_us = 1700000000000000ull + from + n;
            evp[n] = e;
            n++;
        }
        Es__V1__ReadResult rr = ES__V1__READ_RESULT__INIT;
        rr.n_events = n;
        rr.events = evp;
        rr.next = from + n;
        rr.end_of_stream = from + n >= rc->events;
        rr.head_position = 100 + rc->events;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = req->id;
        resp.kind_case = ES__V1__RESPONSE__KIND_READ;
        resp.read = &rr;
        srv_send(fd, &resp);
        srv_free(req);
        rc->pages++;
    }
}

static void test_read_iterator_pages(void **state)
{
    read_ctx rc = {.events = 5};
    fake f;
    fake_start(&f, script_read, &rc);
    es_client *c = mk_client(&f, NULL);
    es_read_options ro = {.page_size = 2};
    es_read_iter *it = NULL;
    CHECK_RV(es_read_stream(c, "clock-1", &ro, &it), ES_OK);
    const es_recorded_event *ev = NULL;
    for (uint64_t i = 0; i < 5; i++) {
        CHECK_RV(es_read_next(it, &ev), ES_OK);
        assert_non_null(ev);
        assert_string_equal(ev->stream, "clock-1");
        assert_string_equal(ev->type, "Tick");
        assert_string_equal(ev->content_type, "");
        assert_int_equal(ev->revision, i);
        assert_int_equal(ev->position, 100 + i);
        assert_int_equal(ev->id[0], i);
        assert_int_equal(ev->recorded_at_us, 1700000000000000ull + i);
        char want[32];
        snprintf(want, sizeof(want), "{\"n\":%u}", (unsigned)i);
        assert_int_equal(ev->data_len, strlen(want));
        assert_memory_equal(ev->data, want, ev->data_len);
    }
    CHECK_RV(es_read_next(it, &ev), ES_OK);
    assert_null(ev);
    assert_int_equal(es_read_head(it), 105);
    es_read_destroy(it);
    es_client_destroy(c);
    fake_stop(&f);
    assert_int_equal(rc.pages, 3);
}

/* The iterator asks for page N+1 while page N is consumed: an iterator
 * dropped in the middle leaves that request behind, and its late reply must
 * not reach the next iterator on the same client. */
static void test_read_ahead_abandoned(void **state)
{
    read_ctx rc = {.events = 7};
    fake f;
    fake_start(&f, script_read, &rc);
    es_client *c = mk_client(&f, NULL);
    es_read_options ro = {.page_size = 2};
    for (int round = 0; round < 3; round++) {
        es_read_iter *it = NULL;
        CHECK_RV(es_read_stream(c, "clock-1", &ro, &it), ES_OK);
        const es_recorded_event *ev = NULL;
        uint64_t want = round == 2 ? 7 : 3; /* the last round reads to the end */
        for (uint64_t i = 0; i < want; i++) {
            CHECK_RV(es_read_next(it, &ev), ES_OK);
            assert_non_null(ev);
            assert_int_equal(ev->revision, i);
        }
        if (round == 2) {
            CHECK_RV(es_read_next(it, &ev), ES_OK);
            assert_null(ev);
        }
        es_read_destroy(it);
    }
    es_client_destroy(c);
    fake_stop(&f);
    /* Rounds 0 and 1: pages 0-1, 2-3 and the read-ahead 4-5; round 2: four. */
    assert_int_equal(rc.pages, 10);
}

static void test_read_more_than_asked(void **state)
{
    read_ctx rc = {.events = 8, .extra = 3};
    fake f;
    fake_start(&f, script_read, &rc);
    es_client *c = mk_client(&f, NULL);
    es_read_options ro = {.page_size = 2, .max_count = 4};
    es_read_iter *it = NULL;
    CHECK_RV(es_read_stream(c, "clock-1", &ro, &it), ES_OK);
    const es_recorded_event *ev = NULL;
    max_alloc = 0;
    CHECK_RV(es_read_next(it, &ev), ES_ERR_MALFORMED);
    assert_null(ev);
    es_read_destroy(it);
    es_client_destroy(c);
    fake_stop(&f);
}

/* ---- pure modules -- */

static void test_backoff_full_jitter(void **state)
{
    uint64_t rng = 42;
    for (uint32_t k = 0; k < 40; k++) {
        uint64_t window = k < 10 ? (100000ull << k) : 5000000ull;
        if (window > 5000000ull) {
            window = 5000000ull;
        }
        uint64_t maxseen = 0;
        for (int i = 0; i < 2000; i++) {
            uint64_t d = backoff_delay_us(100000, 5000000, k, rng_next(&rng));
            assert_true(d <= window);
            if (d > maxseen) {
                maxseen = d;
            }
        }
        /* Spread over the whole window, not clustered at its bottom. */
        assert_true(maxseen > window / 2);
    }
    assert_int_equal(backoff_delay_us(0, 0, 5, 12345), 0);
    assert_true(backoff_delay_us(1, UINT64_MAX, 200, UINT64_MAX) <= UINT64_MAX);
}

static void test_breaker_states(void **state)
{
    breaker b;
    breaker_init(&b, 2, 1000);
    assert_true(breaker_allow(&b, 0, NULL));
    assert_false(breaker_on_failure(&b, 10));
    breaker_on_success(&b);
    assert_false(breaker_on_failure(&b, 20));
    assert_true(breaker_on_failure(&b, 30));
    assert_int_equal(b.state, ES_BREAKER_OPEN);
    uint64_t wait = 0;
    assert_false(breaker_allow(&b, 1029, &wait));
    assert_int_equal(wait, 1);
    assert_true(breaker_allow(&b, 1030, NULL));
    assert_int_equal(b.state, ES_BREAKER_HALF_OPEN);
    assert_true(breaker_on_failure(&b, 1031)); /* the trial failed */
    assert_false(breaker_allow(&b, 2030, NULL));
    assert_true(breaker_allow(&b, 2031, NULL));
    breaker_on_success(&b);
    assert_int_equal(b.state, ES_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);

    breaker_init(&b, 0, 1000); /* disabled */
    for (int i = 0; i < 100; i++) {
        assert_false(breaker_on_failure(&b, 1));
    }
    assert_true(breaker_allow(&b, 1, NULL));
}

static void test_ptable(void **state)
{
    ptable t = {0};
    pending *e = NULL;
    for (uint64_t id = 1; id <= 1000; id++) {
        CHECK_RV(ptable_add(&t, id, &e), ES_OK);
        e->max_items = (uint32_t)id;
    }
    assert_int_equal(t.count, 1000);
    /* Delete every third, in a scattered order, and check the rest. */
    for (uint64_t id = 3; id <= 1000; id += 3) {
        ptable_del(&t, id);
    }
    for (uint64_t id = 1; id <= 1000; id++) {
        e = ptable_get(&t, id);
        if (id % 3 == 0) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_int_equal(e->max_items, id);
        }
    }
    assert_null(ptable_get(&t, 0));
    assert_null(ptable_get(&t, 5000));
    ptable_finish(&t);
}

static void test_uuid(void **state)
{
    uint8_t a[16], b[16], p[16];
    CHECK_RV(es_uuid_generate(a), ES_OK);
    CHECK_RV(es_uuid_generate(b), ES_OK);
    assert_memory_not_equal(a, b, 16);
    assert_int_equal(a[6] >> 4, 7);
    assert_int_equal(a[8] & 0xc0, 0x80);
    /* Time-ordered: b was made after a, so its 48-bit ms prefix is not smaller. */
    assert_true(memcmp(a, b, 6) <= 0);
    char s[ES_UUID_STRLEN + 1];
    es_uuid_format(a, s);
    assert_int_equal(strlen(s), 36);
    assert_int_equal(s[8], '-');
    CHECK_RV(es_uuid_parse(s, p), ES_OK);
    assert_memory_equal(a, p, 16);
    CHECK_RV(es_uuid_parse("0123456789ABCDEF0123456789abcdef0123", p), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_uuid_parse("01234567-89AB-CDEF-0123-456789abcdeg", p), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_uuid_parse("01234567-89AB-CDEF-0123-456789abcdef", p), ES_OK);
    assert_int_equal(p[0], 0x01);
    assert_int_equal(p[15], 0xef);
    CHECK_RV(es_uuid_parse(NULL, p), ES_ERR_INVALID_ARGUMENT);
}

/* Ids come from a per-thread pool of random bytes: every id distinct, and
 * a forked child never repeats the bytes its parent will hand out next. */
static void test_uuid_pool_unique_across_fork(void **state)
{
    enum { N = 5000 };
    static uint8_t ids[N][16];
    for (int i = 0; i < N; i++) {
        CHECK_RV(es_uuid_generate(ids[i]), ES_OK);
    }
    for (int i = 1; i < N; i++) {
        assert_memory_not_equal(ids[i - 1] + 6, ids[i] + 6, 10);
    }
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t child[16];
        _exit(es_uuid_generate(child) == ES_OK && write(fds[1], child, 16) == 16 ? 0 : 1);
    }
    uint8_t mine[16], theirs[16];
    CHECK_RV(es_uuid_generate(mine), ES_OK);
    assert_int_equal(read(fds[0], theirs, 16), 16);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    /* The random part (bytes 6..15 less the version and variant bits). */
    assert_memory_not_equal(mine + 9, theirs + 9, 7);
}

static void test_options(void **state)
{
    es_client_options o;
    es_client *c = NULL;
    es_client_options_init(&o);
    assert_string_equal(o.address, "127.0.0.1:7400");
    static const char *const bad[] = {"",           ":80",  "host:",  "host:0",
                                      "host:65536", "[::1", "[::1]x", "host:12ab"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.address = bad[i];
        CHECK_RV(es_client_create(&o, &c), ES_ERR_INVALID_ARGUMENT);
        assert_null(c);
    }
    static const char *const good[] = {"localhost", "127.0.0.1:1", "[::1]:7400", "::1",
                                       "example.com:65535"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        o.address = good[i];
        CHECK_RV(es_client_create(&o, &c), ES_OK);
        es_client_destroy(c);
    }
    es_client_destroy(NULL);
    o.address = "127.0.0.1:1";
    o.connect_timeout_ms = 0;
    CHECK_RV(es_client_create(&o, &c), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_client_create(NULL, &c), ES_ERR_INVALID_ARGUMENT);
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
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_ptable),
        cmocka_unit_test(test_backoff_full_jitter),
        cmocka_unit_test(test_breaker_states),
        cmocka_unit_test(test_hello_handshake),
        cmocka_unit_test(test_hello_refused),
        cmocka_unit_test(test_hello_wrong_version),
        cmocka_unit_test(test_append_result),
        cmocka_unit_test(test_append_invalid_args),
        cmocka_unit_test(test_snapshot_load_first_call),
        cmocka_unit_test(test_conflict_details),
        cmocka_unit_test(test_refused_connect),
        cmocka_unit_test(test_close_mid_frame),
        cmocka_unit_test(test_in_flight_fail_at_close),
        cmocka_unit_test(test_reconnect_with_backoff),
        cmocka_unit_test(test_reconnect_after_idle_close),
        cmocka_unit_test(test_many_reconnects),
        cmocka_unit_test(test_circuit_breaker),
        cmocka_unit_test(test_pipelined_out_of_order),
        cmocka_unit_test(test_pipelined_in_flight_cap),
        cmocka_unit_test(test_pending_cap_and_discard),
        cmocka_unit_test(test_frame_header_above_cap),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_read_iterator_pages),
        cmocka_unit_test(test_read_more_than_asked),
        cmocka_unit_test(test_read_ahead_abandoned),
        cmocka_unit_test(test_uuid_pool_unique_across_fork),
    };
    return cmocka_run_group_tests_name("client", tests, group_setup, group_teardown);
}

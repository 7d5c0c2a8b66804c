/*
 * Handler tests without sockets: a real store and writer behind one
 * in-memory session (tests/support/server_harness). Covers the session
 * rules, every request kind, subscriptions, the decode budget, and
 * allocation-failure injection along decode -> validate -> append -> reply.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "loopstats.h"
#include "reply.h"
#include "server_harness.h"

static Es__V1__Response *expect_reply(harness *h, uint64_t id, Es__V1__Response__KindCase kind)
{
    Es__V1__Response *r = harness_next(h);
    assert_non_null(r);
    assert_int_equal(r->id, id);
    if (r->kind_case != kind && r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
        fail_msg("expected kind %d, got error %s: %s", kind, es_errname((es_err)r->error->code),
                 r->error->message);
    }
    assert_int_equal(r->kind_case, kind);
    return r;
}

static void expect_error(harness *h, uint64_t id, es_err code)
{
    Es__V1__Response *r = harness_next(h);
    assert_non_null(r);
    assert_int_equal(r->id, id);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_ERROR);
    if ((es_err)r->error->code != code) {
        fail_msg("expected %s, got %s (%s)", es_errname(code), es_errname((es_err)r->error->code),
                 r->error->message);
    }
    es__v1__response__free_unpacked(r, NULL);
}

static void hello(harness *h)
{
    assert_int_equal(harness_hello(h, 1), ES_OK);
    Es__V1__Response *r = expect_reply(h, 1, ES__V1__RESPONSE__KIND_HELLO);
    assert_int_equal(r->hello->protocol_version, 1);
    assert_non_null(r->hello->limits);
    assert_int_equal(r->hello->limits->max_frame_bytes, h->cfg.max_frame_bytes);
    assert_int_equal(r->hello->store_id.len, 16);
    es__v1__response__free_unpacked(r, NULL);
}

/* Build an Append request of n events on the stack-friendly heap. */
typedef struct app_req {
    Es__V1__Request req;
    Es__V1__Append app;
    Es__V1__Expected exp;
    Es__V1__ProposedEvent ev[8];
    Es__V1__ProposedEvent *evp[8];
    uint8_t ids[8][16];
} app_req;

static void build_append(app_req *a, uint64_t id, const char *stream, Es__V1__ExpectedKind kind,
                         uint64_t rev, size_t n, uint8_t id_seed)
{
    memset(a, 0, sizeof *a);
    es__v1__request__init(&a->req);
    es__v1__append__init(&a->app);
    es__v1__expected__init(&a->exp);
    a->exp.kind = kind;
    a->exp.revision = rev;
    a->app.stream.data = (uint8_t *)stream;
    a->app.stream.len = strlen(stream);
    a->app.expected = &a->exp;
    for (size_t i = 0; i < n; i++) {
        es__v1__proposed_event__init(&a->ev[i]);
        memset(a->ids[i], id_seed, 16);
        a->ids[i][15] = (uint8_t)i;
        a->ev[i].id.data = a->ids[i];
        a->ev[i].id.len = id_seed ? 16 : 0;
        a->ev[i].type.data = (uint8_t *)"Deposited";
        a->ev[i].type.len = 9;
        a->ev[i].data.data = (uint8_t *)"{\"amount\":1}";
        a->ev[i].data.len = 12;
        a->evp[i] = &a->ev[i];
    }
    a->app.n_events = n;
    a->app.events = a->evp;
    a->req.id = id;
    a->req.kind_case = ES__V1__REQUEST__KIND_APPEND;
    a->req.append = &a->app;
}

static void test_hello_first(void **state)
{
    harness *h = *state;
    app_req a;
    build_append(&a, 5, "account-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 1);
    assert_int_equal(harness_send(h, &a.req), ES_OK);
    expect_error(h, 5, ES_ERR_HANDSHAKE_REQUIRED);
    hello(h);
    assert_int_equal(harness_hello(h, 2), ES_OK);
    expect_error(h, 2, ES_ERR_INVALID_ARGUMENT); /* hello twice */
    assert_int_equal(store_head(h->srv.st), 0);
}

static void test_wrong_version(void **state)
{
    harness *h = *state;
    Es__V1__Hello hh = ES__V1__HELLO__INIT;
    hh.protocol_version = 2;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 3;
    req.kind_case = ES__V1__REQUEST__KIND_HELLO;
    req.hello = &hh;
    harness_send(h, &req);
    expect_error(h, 3, ES_ERR_UNSUPPORTED_VERSION);
    hello(h); /* the right version still works afterwards */
}

static void test_append_conflict_and_retry(void **state)
{
    harness *h = *state;
    hello(h);
    app_req a;
    build_append(&a, 10, "account-7", ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM, 0, 3, 7);
    harness_send(h, &a.req);
    harness_drain(h);
    Es__V1__Response *r = expect_reply(h, 10, ES__V1__RESPONSE__KIND_APPEND);
    assert_int_equal(r->append->first_revision, 0);
    assert_int_equal(r->append->last_revision, 2);
    assert_int_equal(r->append->first_position, 1);
    assert_int_equal(r->append->last_position, 3);
    assert_false(r->append->duplicate);
    es__v1__response__free_unpacked(r, NULL);

    /* The same ids again: the original result, flagged duplicate. */
    a.req.id = 11;
    harness_send(h, &a.req);
    harness_drain(h);
    r = expect_reply(h, 11, ES__V1__RESPONSE__KIND_APPEND);
    assert_true(r->append->duplicate);
    assert_int_equal(r->append->first_position, 1);
    assert_int_equal(r->append->last_position, 3);
    es__v1__response__free_unpacked(r, NULL);
    assert_int_equal(store_head(h->srv.st), 3);

    /* Exact expectation off by one: a conflict naming the actual revision. */
    build_append(&a, 12, "account-7", ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 1, 1, 8);
    harness_send(h, &a.req);
    harness_drain(h);
    r = expect_reply(h, 12, ES__V1__RESPONSE__KIND_ERROR);
    assert_int_equal(r->error->code, ES_ERR_WRONG_EXPECTED_REVISION);
    assert_int_equal(r->error->n_conflicts, 1);
    assert_true(r->error->conflicts[0]->actual->exists);
    assert_int_equal(r->error->conflicts[0]->actual->revision, 2);
    assert_int_equal(r->error->conflicts[0]->expected->revision, 1);
    es__v1__response__free_unpacked(r, NULL);
    assert_int_equal(store_head(h->srv.st), 3);
}

static void test_transaction_reports_every_check(void **state)
{
    harness *h = *state;
    hello(h);
    app_req a, b, c;
    build_append(&a, 1, "account-a", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 1);
    harness_send(h, &a.req);
    harness_drain(h);
    es__v1__response__free_unpacked(harness_next(h), NULL);

    build_append(&a, 0, "account-a", ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 5, 1, 2);
    build_append(&b, 0, "account-b", ES__V1__EXPECTED_KIND__EXPECTED_KIND_STREAM_EXISTS, 0, 1, 3);
    build_append(&c, 0, "account-c", ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM, 0, 1, 4);
    Es__V1__Append *apps[3] = {&a.app, &b.app, &c.app};
    Es__V1__Transaction txn = ES__V1__TRANSACTION__INIT;
    txn.n_appends = 3;
    txn.appends = apps;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 20;
    req.kind_case = ES__V1__REQUEST__KIND_TRANSACTION;
    req.transaction = &txn;
    harness_send(h, &req);
    harness_drain(h);
    Es__V1__Response *r = expect_reply(h, 20, ES__V1__RESPONSE__KIND_ERROR);
    assert_int_equal(r->error->code, ES_ERR_WRONG_EXPECTED_REVISION);
    assert_int_equal(r->error->n_conflicts, 2);
    assert_memory_equal(r->error->conflicts[0]->stream.data, "account-a", 9);
    assert_int_equal(r->error->conflicts[0]->actual->revision, 0);
    assert_memory_equal(r->error->conflicts[1]->stream.data, "account-b", 9);
    assert_false(r->error->conflicts[1]->actual->exists);
    es__v1__response__free_unpacked(r, NULL);
    assert_int_equal(store_head(h->srv.st), 1); /* nothing of it written */

    /* Fixed expectations: all three commit together. */
    a.exp.revision = 0;
    b.exp.kind = ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM;
    req.id = 21;
    harness_send(h, &req);
    harness_drain(h);
    r = expect_reply(h, 21, ES__V1__RESPONSE__KIND_TRANSACTION);
    assert_int_equal(r->transaction->n_results, 3);
    assert_int_equal(r->transaction->results[0]->first_position, 2);
    assert_int_equal(r->transaction->results[2]->last_position, 4);
    es__v1__response__free_unpacked(r, NULL);
}

static void test_reads_info_snapshots_stats(void **state)
{
    harness *h = *state;
    hello(h);
    app_req a;
    build_append(&a, 1, "order-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 5, 9);
    harness_send(h, &a.req);
    harness_drain(h);
    es__v1__response__free_unpacked(harness_next(h), NULL);

    Es__V1__ReadStream rs = ES__V1__READ_STREAM__INIT;
    rs.stream.data = (uint8_t *)"order-1";
    rs.stream.len = 7;
    rs.from_revision = UINT64_MAX;
    rs.backward = true;
    rs.limit = 2;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 30;
    req.kind_case = ES__V1__REQUEST__KIND_READ_STREAM;
    req.read_stream = &rs;
    harness_send(h, &req);
    Es__V1__Response *r = expect_reply(h, 30, ES__V1__RESPONSE__KIND_READ);
    assert_int_equal(r->read->n_events, 2);
    assert_int_equal(r->read->events[0]->revision, 4);
    assert_int_equal(r->read->events[1]->revision, 3);
    assert_int_equal(r->read->next, 2);
    assert_false(r->read->end_of_stream);
    assert_memory_equal(r->read->events[0]->data.data, "{\"amount\":1}", 12);
    es__v1__response__free_unpacked(r, NULL);

    Es__V1__Filter f = ES__V1__FILTER__INIT;
    f.category.data = (uint8_t *)"order";
    f.category.len = 5;
    Es__V1__ReadAll ra = ES__V1__READ_ALL__INIT;
    ra.filter = &f;
    req.id = 31;
    req.kind_case = ES__V1__REQUEST__KIND_READ_ALL;
    req.read_all = &ra;
    harness_send(h, &req);
    r = expect_reply(h, 31, ES__V1__RESPONSE__KIND_READ);
    assert_int_equal(r->read->n_events, 5);
    assert_true(r->read->end_of_stream);
    es__v1__response__free_unpacked(r, NULL);

    /* Two filters at once are refused. */
    f.event_type.data = (uint8_t *)"Deposited";
    f.event_type.len = 9;
    req.id = 32;
    harness_send(h, &req);
    expect_error(h, 32, ES_ERR_INVALID_ARGUMENT);

    Es__V1__SaveSnapshot ss = ES__V1__SAVE_SNAPSHOT__INIT;
    ss.stream = rs.stream;
    ss.revision = 3;
    ss.state_format = 2;
    ss.data.data = (uint8_t *)"state";
    ss.data.len = 5;
    req.id = 33;
    req.kind_case = ES__V1__REQUEST__KIND_SAVE_SNAPSHOT;
    req.save_snapshot = &ss;
    harness_send(h, &req);
    harness_drain(h);
    r = expect_reply(h, 33, ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED);
    es__v1__response__free_unpacked(r, NULL);
    /* An older snapshot of the same format does not replace the newer one. */
    ss.revision = 1;
    ss.data.data = (uint8_t *)"older";
    req.id = 39;
    harness_send(h, &req);
    harness_drain(h);
    es__v1__response__free_unpacked(expect_reply(h, 39, ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED),
                                    NULL);
    Es__V1__LoadSnapshot ls = ES__V1__LOAD_SNAPSHOT__INIT;
    ls.stream = rs.stream;
    req.id = 34;
    req.kind_case = ES__V1__REQUEST__KIND_LOAD_SNAPSHOT;
    req.load_snapshot = &ls;
    harness_send(h, &req);
    r = expect_reply(h, 34, ES__V1__RESPONSE__KIND_SNAPSHOT);
    assert_int_equal(r->snapshot->revision, 3);
    assert_int_equal(r->snapshot->state_format, 2);
    assert_memory_equal(r->snapshot->data.data, "state", 5);
    es__v1__response__free_unpacked(r, NULL);

    Es__V1__StreamInfoRequest si = ES__V1__STREAM_INFO_REQUEST__INIT;
    si.stream = rs.stream;
    req.id = 35;
    req.kind_case = ES__V1__REQUEST__KIND_STREAM_INFO;
    req.stream_info = &si;
    harness_send(h, &req);
    r = expect_reply(h, 35, ES__V1__RESPONSE__KIND_STREAM_INFO);
    assert_int_equal(r->stream_info->event_count, 5);
    assert_int_equal(r->stream_info->last_revision, 4);
    es__v1__response__free_unpacked(r, NULL);

    Es__V1__ListStreams lst = ES__V1__LIST_STREAMS__INIT;
    req.id = 36;
    req.kind_case = ES__V1__REQUEST__KIND_LIST_STREAMS;
    req.list_streams = &lst;
    harness_send(h, &req);
    r = expect_reply(h, 36, ES__V1__RESPONSE__KIND_STREAMS);
    assert_int_equal(r->streams->n_streams, 1);
    assert_false(r->streams->more);
    es__v1__response__free_unpacked(r, NULL);

    Es__V1__StatsRequest st = ES__V1__STATS_REQUEST__INIT;
    req.id = 37;
    req.kind_case = ES__V1__REQUEST__KIND_STATS;
    req.stats = &st;
    harness_send(h, &req);
    r = expect_reply(h, 37, ES__V1__RESPONSE__KIND_STATS);
    assert_int_equal(r->stats->head_position, 5);
    assert_int_equal(r->stats->event_count, 5);
    assert_int_equal(r->stats->appends_ok, 1);
    es__v1__response__free_unpacked(r, NULL);

    Es__V1__Ping ping = ES__V1__PING__INIT;
    ping.payload.data = (uint8_t *)"hi";
    ping.payload.len = 2;
    req.id = 38;
    req.kind_case = ES__V1__REQUEST__KIND_PING;
    req.ping = &ping;
    harness_send(h, &req);
    r = expect_reply(h, 38, ES__V1__RESPONSE__KIND_PONG);
    assert_memory_equal(r->pong->payload.data, "hi", 2);
    es__v1__response__free_unpacked(r, NULL);
}

/* A lifecycle request: kind 30 (delete), 31 (tombstone) or 32 (set metadata). */
typedef struct life_req {
    Es__V1__Request req;
    Es__V1__DeleteStream del;
    Es__V1__TombstoneStream tomb;
    Es__V1__SetStreamMetadata meta;
    Es__V1__GetStreamMetadata get;
    Es__V1__Expected exp;
} life_req;

static Es__V1__Request *build_life(life_req *l, uint64_t id, Es__V1__Request__KindCase kind,
                                   const char *stream, Es__V1__ExpectedKind ek, uint64_t rev)
{
    memset(l, 0, sizeof *l);
    es__v1__request__init(&l->req);
    es__v1__expected__init(&l->exp);
    l->exp.kind = ek;
    l->exp.revision = rev;
    ProtobufCBinaryData sb = {strlen(stream), (uint8_t *)stream};
    l->req.id = id;
    l->req.kind_case = kind;
    switch (kind) {
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
        es__v1__delete_stream__init(&l->del);
        l->del.stream = sb;
        l->del.expected = &l->exp;
        l->req.delete_stream = &l->del;
        break;
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM:
        es__v1__tombstone_stream__init(&l->tomb);
        l->tomb.stream = sb;
        l->tomb.expected = &l->exp;
        l->req.tombstone_stream = &l->tomb;
        break;
    case ES__V1__REQUEST__KIND_SET_STREAM_METADATA:
        es__v1__set_stream_metadata__init(&l->meta);
        l->meta.stream = sb;
        l->meta.expected_metadata_revision = &l->exp;
        l->req.set_stream_metadata = &l->meta;
        break;
    default:
        es__v1__get_stream_metadata__init(&l->get);
        l->get.stream = sb;
        l->req.get_stream_metadata = &l->get;
        break;
    }
    return &l->req;
}

static void send_life_expect_error(harness *h, Es__V1__Request *req, es_err code)
{
    harness_send(h, req);
    harness_drain(h);
    expect_error(h, req->id, code);
}

static void test_lifecycle_requests(void **state)
{
    harness *h = *state;
    hello(h);
    app_req a;
    build_append(&a, 2, "account-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 3, 1);
    harness_send(h, &a.req);
    harness_drain(h);
    es__v1__response__free_unpacked(harness_next(h), NULL);

    /* Metadata: set (first revision 0), then read back. */
    life_req l;
    Es__V1__Request *req = build_life(&l, 3, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "account-1",
                                      ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM, 0);
    l.meta.truncate_before = 1;
    l.meta.max_count = 10;
    l.meta.max_age_s = 3600;
    harness_send(h, req);
    harness_drain(h);
    Es__V1__Response *r = expect_reply(h, 3, ES__V1__RESPONSE__KIND_STREAM_METADATA);
    assert_true(r->stream_metadata->exists);
    assert_int_equal(r->stream_metadata->metadata_revision, 0);
    assert_int_equal(r->stream_metadata->truncate_before, 1);
    es__v1__response__free_unpacked(r, NULL);
    req = build_life(&l, 4, ES__V1__REQUEST__KIND_GET_STREAM_METADATA, "account-1", 0, 0);
    harness_send(h, req);
    r = expect_reply(h, 4, ES__V1__RESPONSE__KIND_STREAM_METADATA);
    assert_int_equal(r->stream_metadata->max_count, 10);
    assert_int_equal(r->stream_metadata->max_age_s, 3600);
    assert_false(r->stream_metadata->deleted);
    es__v1__response__free_unpacked(r, NULL);

    /* Validation: typed errors, nothing changed. */
    req = build_life(&l, 5, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "$stats", 0, 0);
    send_life_expect_error(h, req, ES_ERR_RESERVED_STREAM);
    req = build_life(&l, 6, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "", 0, 0);
    send_life_expect_error(h, req, ES_ERR_INVALID_STREAM_ID);
    req = build_life(&l, 7, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "account-1",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 0);
    l.meta.max_age_s = UINT64_MAX; /* what a negative duration becomes on the wire */
    send_life_expect_error(h, req, ES_ERR_INVALID_ARGUMENT);
    req = build_life(&l, 8, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "account-1",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 0);
    l.meta.truncate_before = 4; /* beyond the end: the last revision is 2 */
    send_life_expect_error(h, req, ES_ERR_INVALID_ARGUMENT);
    req = build_life(&l, 9, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "account-1",
                     (Es__V1__ExpectedKind)7, 0);
    send_life_expect_error(h, req, ES_ERR_INVALID_ARGUMENT);
    req = build_life(&l, 10, ES__V1__REQUEST__KIND_SET_STREAM_METADATA, "account-1",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 5);
    send_life_expect_error(h, req, ES_ERR_WRONG_EXPECTED_REVISION);
    req = build_life(&l, 11, ES__V1__REQUEST__KIND_DELETE_STREAM, "account-9",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0);
    send_life_expect_error(h, req, ES_ERR_NOT_FOUND);
    req = build_life(&l, 12, ES__V1__REQUEST__KIND_DELETE_STREAM, "$all",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0);
    send_life_expect_error(h, req, ES_ERR_RESERVED_STREAM);
    req = build_life(&l, 13, ES__V1__REQUEST__KIND_GET_STREAM_METADATA, "account-1", 0, 0);
    harness_send(h, req);
    r = expect_reply(h, 13, ES__V1__RESPONSE__KIND_STREAM_METADATA);
    assert_int_equal(r->stream_metadata->metadata_revision, 0);
    assert_int_equal(r->stream_metadata->truncate_before, 1);
    es__v1__response__free_unpacked(r, NULL);

    /* Delete with a wrong expectation, then right: the reply names the last revision. */
    req = build_life(&l, 14, ES__V1__REQUEST__KIND_DELETE_STREAM, "account-1",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 1);
    send_life_expect_error(h, req, ES_ERR_WRONG_EXPECTED_REVISION);
    req = build_life(&l, 15, ES__V1__REQUEST__KIND_DELETE_STREAM, "account-1",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT, 2);
    harness_send(h, req);
    harness_drain(h);
    r = expect_reply(h, 15, ES__V1__RESPONSE__KIND_STREAM_DELETED);
    assert_int_equal(r->stream_deleted->last_revision, 2);
    es__v1__response__free_unpacked(r, NULL);
    Es__V1__ReadStream rs = ES__V1__READ_STREAM__INIT;
    rs.stream.data = (uint8_t *)"account-1";
    rs.stream.len = 9;
    Es__V1__Request rreq = ES__V1__REQUEST__INIT;
    rreq.id = 16;
    rreq.kind_case = ES__V1__REQUEST__KIND_READ_STREAM;
    rreq.read_stream = &rs;
    harness_send(h, &rreq);
    expect_error(h, 16, ES_ERR_NOT_FOUND);

    /* Tombstone: appends and reads get STREAM_DELETED. */
    req = build_life(&l, 17, ES__V1__REQUEST__KIND_TOMBSTONE_STREAM, "account-1",
                     ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0);
    harness_send(h, req);
    harness_drain(h);
    es__v1__response__free_unpacked(expect_reply(h, 17, ES__V1__RESPONSE__KIND_STREAM_DELETED),
                                    NULL);
    build_append(&a, 18, "account-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 2);
    harness_send(h, &a.req);
    harness_drain(h);
    expect_error(h, 18, ES_ERR_STREAM_DELETED);
    rreq.id = 19;
    harness_send(h, &rreq);
    expect_error(h, 19, ES_ERR_STREAM_DELETED);
    req = build_life(&l, 20, ES__V1__REQUEST__KIND_GET_STREAM_METADATA, "account-1", 0, 0);
    harness_send(h, req);
    expect_error(h, 20, ES_ERR_STREAM_DELETED);
    /* The three events, and one $lifecycle record for each change made
     * (metadata, delete, tombstone); none for the refused ones. */
    assert_int_equal(store_head(h->srv.st), 6);
    /* Their latencies are counted under their own kinds, not "unknown". */
    const int kinds[] = {
        ES__V1__REQUEST__KIND_DELETE_STREAM, ES__V1__REQUEST__KIND_TOMBSTONE_STREAM,
        ES__V1__REQUEST__KIND_SET_STREAM_METADATA, ES__V1__REQUEST__KIND_GET_STREAM_METADATA};
    for (size_t i = 0; i < 4; i++) {
        size_t k = loopstats_kind_index(kinds[i]);
        assert_int_not_equal(k, 0);
        assert_int_equal(loopstats_index_kind(k), kinds[i]);
        assert_true(h->srv.metrics.request_us[k].count > 0);
    }
    assert_string_equal(handler_kind_name(loopstats_index_kind(
                            loopstats_kind_index(ES__V1__REQUEST__KIND_TOMBSTONE_STREAM))),
                        "tombstone_stream");
}

static void test_in_flight_rules(void **state)
{
    harness *h = *state;
    hello(h);
    app_req a;
    /* Same id twice before the first completes. */
    build_append(&a, 40, "s-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 0);
    harness_send(h, &a.req);
    harness_send(h, &a.req);
    harness_drain(h);
    expect_error(h, 0, ES_ERR_DUPLICATE_REQUEST_ID); /* refused under id 0 */
    Es__V1__Response *r = expect_reply(h, 40, ES__V1__RESPONSE__KIND_APPEND);
    es__v1__response__free_unpacked(r, NULL);

    /* More than max_in_flight queued: the excess is refused, typed. The
     * writer may finish some meanwhile, so count refusals >= 1 only when
     * the queue really was full; pause it by flooding faster than it runs. */
    uint32_t cap = h->cfg.max_in_flight;
    uint32_t refused = 0, ok = 0;
    for (uint32_t i = 0; i < cap * 4; i++) {
        build_append(&a, 1000 + i, "s-2", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 0);
        harness_send(h, &a.req);
        if (h->sess.in_flight > cap) {
            fail_msg("in_flight %u above the cap %u", h->sess.in_flight, cap);
        }
    }
    harness_drain(h);
    while ((r = harness_next(h)) != NULL) {
        if (r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
            assert_int_equal(r->error->code, ES_ERR_TOO_MANY_REQUESTS);
            refused++;
        } else {
            assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_APPEND);
            ok++;
        }
        es__v1__response__free_unpacked(r, NULL);
    }
    assert_int_equal(ok + refused, cap * 4);
    assert_true(refused > 0); /* the handler queues without waiting for the writer */
    assert_int_equal(store_head(h->srv.st), 1 + ok);
}

static void test_decode_budget(void **state)
{
    harness *h = *state;
    hello(h);
    /* A Transaction of 1,000,000 empty appends: 2 MB on the wire, hundreds
     * of MB as protobuf-c structs. Refused by the budget, not allocated. */
    size_t n = 1000000;
    size_t len = 2 + 4 + n * 2;
    uint8_t *buf = malloc(len + 16);
    assert_non_null(buf);
    size_t k = 0;
    buf[k++] = 0x08; /* id = 50 */
    buf[k++] = 50;
    buf[k++] = (12 << 3) | 2; /* transaction */
    uint32_t inner = (uint32_t)(n * 2);
    while (inner >= 0x80) {
        buf[k++] = (uint8_t)(inner | 0x80);
        inner >>= 7;
    }
    buf[k++] = (uint8_t)inner;
    for (size_t i = 0; i < n; i++) {
        buf[k++] = 0x0a; /* appends = 1, empty */
        buf[k++] = 0x00;
    }
    harness_send_raw(h, buf, k);
    free(buf);
    expect_error(h, 50, ES_ERR_TOO_LARGE);
}

static void test_malformed_keeps_session(void **state)
{
    harness *h = *state;
    hello(h);
    const uint8_t bad[][4] = {
        {0x00, 0x01, 0x02, 0x03}, {0x0b, 0x00, 0x00, 0x00}, {0x08, 0xff, 0xff, 0xff}};
    for (size_t i = 0; i < 3; i++) {
        harness_send_raw(h, bad[i], 4);
        Es__V1__Response *r = harness_next(h);
        assert_non_null(r);
        assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_ERROR);
        assert_int_equal(r->error->code, ES_ERR_MALFORMED);
        es__v1__response__free_unpacked(r, NULL);
    }
    /* No kind set at all. */
    const uint8_t only_id[] = {0x08, 0x07};
    harness_send_raw(h, only_id, sizeof only_id);
    expect_error(h, 7, ES_ERR_UNKNOWN_REQUEST);
    /* Still serving. */
    Es__V1__Ping ping = ES__V1__PING__INIT;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 8;
    req.kind_case = ES__V1__REQUEST__KIND_PING;
    req.ping = &ping;
    harness_send(h, &req);
    es__v1__response__free_unpacked(expect_reply(h, 8, ES__V1__RESPONSE__KIND_PONG), NULL);
}

static void test_subscription_catch_up_then_live(void **state)
{
    harness *h = *state;
    hello(h);
    app_req a;
    for (int i = 0; i < 5; i++) {
        char stream[32];
        snprintf(stream, sizeof stream, "account-%d", i);
        build_append(&a, 100 + (uint64_t)i, stream, ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1,
                     0);
        harness_send(h, &a.req);
    }
    build_append(&a, 199, "other-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 0);
    harness_send(h, &a.req);
    harness_drain(h);
    harness_clear(h);

    Es__V1__Subscribe sub = ES__V1__SUBSCRIBE__INIT;
    sub.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY;
    sub.name.data = (uint8_t *)"account";
    sub.name.len = 7;
    sub.from_start = true;
    sub.batch_size = 2;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 60;
    req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    req.subscribe = &sub;
    harness_send(h, &req);
    es__v1__response__free_unpacked(expect_reply(h, 60, ES__V1__RESPONSE__KIND_SUBSCRIBED), NULL);
    /* Same id again while open: refused. */
    harness_send(h, &req);
    expect_error(h, 0, ES_ERR_DUPLICATE_REQUEST_ID); /* refused under id 0 */

    harness_deliver(h);
    uint64_t expect_pos = 1;
    size_t got = 0;
    bool caught_up = false;
    Es__V1__Response *r;
    while ((r = harness_next(h)) != NULL) {
        assert_int_equal(r->id, 60);
        if (r->kind_case == ES__V1__RESPONSE__KIND_EVENTS) {
            assert_false(caught_up);
            for (size_t i = 0; i < r->events->n_events; i++) {
                assert_int_equal(r->events->events[i]->position, expect_pos);
                expect_pos++;
                got++;
            }
            assert_true(r->events->n_events <= 2);
        } else {
            assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_CAUGHT_UP);
            caught_up = true;
        }
        es__v1__response__free_unpacked(r, NULL);
    }
    assert_int_equal(got, 5);
    assert_true(caught_up);

    /* Live: a new account event arrives, the other category does not. */
    build_append(&a, 200, "other-2", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 0);
    harness_send(h, &a.req);
    build_append(&a, 201, "account-9", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1, 0);
    harness_send(h, &a.req);
    harness_drain(h);
    harness_clear(h);
    harness_deliver(h);
    r = expect_reply(h, 60, ES__V1__RESPONSE__KIND_EVENTS);
    assert_int_equal(r->events->n_events, 1);
    assert_int_equal(r->events->events[0]->position, 8);
    es__v1__response__free_unpacked(r, NULL);
    assert_null(harness_next(h));

    Es__V1__Unsubscribe un = ES__V1__UNSUBSCRIBE__INIT;
    un.subscription_id = 60;
    req.id = 61;
    req.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
    req.unsubscribe = &un;
    harness_send(h, &req);
    es__v1__response__free_unpacked(expect_reply(h, 61, ES__V1__RESPONSE__KIND_UNSUBSCRIBED), NULL);
    harness_send(h, &req);
    expect_error(h, 61, ES_ERR_SUBSCRIPTION_NOT_FOUND);

    /* A start beyond the head is refused. */
    sub.from_start = false;
    sub.after = 1000;
    req.id = 62;
    req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    req.subscribe = &sub;
    harness_send(h, &req);
    expect_error(h, 62, ES_ERR_INVALID_ARGUMENT);
}

/* Regression (found by fuzz_request): a whole-log subscription has no name
 * (NULL data, length 0) — it must be accepted without touching it. */
static void test_subscribe_all_without_name(void **state)
{
    harness *h = *state;
    hello(h);
    Es__V1__Subscribe sub = ES__V1__SUBSCRIBE__INIT;
    sub.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL;
    sub.from_end = true;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 70;
    req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    req.subscribe = &sub;
    harness_send(h, &req);
    es__v1__response__free_unpacked(expect_reply(h, 70, ES__V1__RESPONSE__KIND_SUBSCRIBED), NULL);
    harness_deliver(h);
    Es__V1__Response *r = expect_reply(h, 70, ES__V1__RESPONSE__KIND_CAUGHT_UP);
    assert_int_equal(r->caught_up->position, 0);
    es__v1__response__free_unpacked(r, NULL);
}

/*
 * Allocation failures: fail the Nth allocation (and every later one) of the request path,
 * for N = 1, 2, ... until an append completes without hitting the
 * injection. Each time: a typed error or a result, never a crash; a result
 * only for an event that is stored; and a retry with the same event id
 * always ends with exactly one copy.
 */
static void test_allocation_failures(void **state)
{
    harness *h = *state;
    hello(h);
    uint64_t n;
    for (n = 1; n < 10000; n++) {
        char stream[32];
        snprintf(stream, sizeof stream, "fail-%llu", (unsigned long long)n);
        app_req a;
        build_append(&a, 1000 + n, stream, ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM, 0, 2,
                     (uint8_t)(n % 250 + 1));
        a.ids[0][0] = (uint8_t)(n >> 8);
        a.ids[1][0] = (uint8_t)(n >> 8);
        size_t len = es__v1__request__get_packed_size(&a.req);
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        es__v1__request__pack(&a.req, buf);
        uint64_t before = reply_injected_failures();
        reply_fail_alloc_after(n);
        harness_send_raw(h, buf, len);
        harness_drain(h);
        reply_fail_alloc_after(0);
        bool hit = reply_injected_failures() != before;
        Es__V1__Response *r = harness_next(h);
        assert_non_null(r);
        store_stream_info si;
        es_err have =
            store_stream_info_get(h->srv.st, (const uint8_t *)stream, strlen(stream), &si);
        if (r->kind_case == ES__V1__RESPONSE__KIND_APPEND) {
            assert_int_equal(have, ES_OK); /* acknowledged => stored */
            assert_int_equal(si.event_count, 2);
        } else {
            assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_ERROR);
            assert_int_equal(r->error->code, ES_ERR_NO_MEMORY);
            assert_true(hit);
            /* Retry without injection: one copy, whatever happened before. */
            harness_send_raw(h, buf, len);
            harness_drain(h);
            Es__V1__Response *r2 = harness_next(h);
            assert_non_null(r2);
            assert_int_equal(r2->kind_case, ES__V1__RESPONSE__KIND_APPEND);
            es__v1__response__free_unpacked(r2, NULL);
            assert_int_equal(
                store_stream_info_get(h->srv.st, (const uint8_t *)stream, strlen(stream), &si),
                ES_OK);
            assert_int_equal(si.event_count, 2);
        }
        es__v1__response__free_unpacked(r, NULL);
        assert_null(harness_next(h));
        free(buf);
        if (!hit) {
            break; /* the whole path ran with fewer than n allocations */
        }
    }
    assert_true(n > 3); /* the path really allocates, and every step was failed once */
    print_message("allocation-failure injection: %llu allocation points exercised\n",
                  (unsigned long long)(n - 1));
}

/* Append n single-event requests (ids 100...) to stream, drained and cleared. */
static void append_events(harness *h, const char *stream, int n)
{
    app_req a;
    for (int i = 0; i < n; i++) {
        build_append(&a, 100 + (uint64_t)i, stream, ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY, 0, 1,
                     0);
        harness_send(h, &a.req);
    }
    harness_drain(h);
    harness_clear(h);
}

/*
 * Subscriptions of one target at one position share the batch a delivery
 * pass read for the first of them. Two subscriptions to the whole log from
 * the start, delivered with the Nth allocation failing, N = 1, 2, ...:
 * each gets its events in order from position 1 without a gap (the batch
 * is sent unshared when the shared payload cannot be allocated), or is
 * dropped with NO_MEMORY; and without injection both get all of them.
 */
static void test_shared_batch_allocation_failures(void **state)
{
    harness *h = *state;
    hello(h);
    append_events(h, "shared-1", 6);
    bool unhit = false;
    for (uint64_t n = 1; n < 64 && !unhit; n++) {
        uint64_t ids[2] = {1000 + 2 * n, 1001 + 2 * n};
        for (int k = 0; k < 2; k++) {
            Es__V1__Subscribe sub = ES__V1__SUBSCRIBE__INIT;
            sub.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL;
            sub.from_start = true;
            Es__V1__Request req = ES__V1__REQUEST__INIT;
            req.id = ids[k];
            req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
            req.subscribe = &sub;
            harness_send(h, &req);
            es__v1__response__free_unpacked(
                expect_reply(h, ids[k], ES__V1__RESPONSE__KIND_SUBSCRIBED), NULL);
        }
        uint64_t before = reply_injected_failures();
        reply_fail_alloc_after(n);
        harness_deliver(h);
        reply_fail_alloc_after(0);
        unhit = reply_injected_failures() == before;
        uint64_t next[2] = {1, 1};
        bool dropped[2] = {false, false}, caught_up[2] = {false, false};
        Es__V1__Response *r;
        while ((r = harness_next(h)) != NULL) {
            int k = r->id == ids[0] ? 0 : 1;
            assert_int_equal(r->id, ids[k]);
            if (r->kind_case == ES__V1__RESPONSE__KIND_EVENTS) {
                assert_false(dropped[k]);
                for (size_t i = 0; i < r->events->n_events; i++) {
                    assert_int_equal(r->events->events[i]->position, next[k]);
                    next[k]++;
                }
            } else if (r->kind_case == ES__V1__RESPONSE__KIND_CAUGHT_UP) {
                caught_up[k] = true;
            } else {
                assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_DROPPED);
                assert_int_equal(r->dropped->reason, ES_ERR_NO_MEMORY);
                dropped[k] = true;
            }
            es__v1__response__free_unpacked(r, NULL);
        }
        for (int k = 0; k < 2; k++) {
            if (!dropped[k]) {
                assert_true(caught_up[k]);
                assert_int_equal(next[k], 7); /* positions 1..6, each once */
                Es__V1__Unsubscribe un = ES__V1__UNSUBSCRIBE__INIT;
                un.subscription_id = ids[k];
                Es__V1__Request req = ES__V1__REQUEST__INIT;
                req.id = 5000 + n * 2 + (uint64_t)k;
                req.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
                req.unsubscribe = &un;
                harness_send(h, &req);
                es__v1__response__free_unpacked(
                    expect_reply(h, req.id, ES__V1__RESPONSE__KIND_UNSUBSCRIBED), NULL);
            }
            if (unhit) {
                assert_false(dropped[k]); /* no failure: both got everything */
            }
        }
    }
    assert_true(unhit); /* the whole path ran out of failures to inject */
}

/*
 * Subscriptions of one target at different positions in the same pass:
 * one that is behind another is sent the later part of the batch read for
 * the other (from its own position on) and goes on with the batches read
 * for those ahead of it; a read stops where a batch of the pass begins.
 * Five whole-log subscriptions served in this order from positions 11, 5,
 * 26, 1 and 13, batches of 8 (so the one at 5 reads 5-10 and goes on with
 * the batch read at 11, the one at 1 reads 1-4 and goes on with both, the
 * one at 13 gets the part of the one at 11 from 13 on), with the Nth
 * allocation failing, N = 1, 2, ...: each gets every event from its
 * position on, in order, once, or is dropped with NO_MEMORY; without
 * injection all five get everything, and the store is read fewer times
 * than batches are sent.
 */
static void test_shared_batch_parts(void **state)
{
    harness *h = *state;
    hello(h);
    append_events(h, "parts-1", 40);
    enum { N_SUBS = 5 };
    const uint64_t after[N_SUBS] = {10, 4, 25, 0, 12};
    bool unhit = false;
    for (uint64_t n = 1; n < 200 && !unhit; n++) {
        uint64_t ids[N_SUBS];
        for (int k = 0; k < N_SUBS; k++) {
            ids[k] = 10000 + n * N_SUBS + (uint64_t)k;
            Es__V1__Subscribe sub = ES__V1__SUBSCRIBE__INIT;
            sub.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL;
            sub.after = after[k];
            sub.batch_size = 8;
            Es__V1__Request req = ES__V1__REQUEST__INIT;
            req.id = ids[k];
            req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
            req.subscribe = &sub;
            harness_send(h, &req);
            es__v1__response__free_unpacked(
                expect_reply(h, ids[k], ES__V1__RESPONSE__KIND_SUBSCRIBED), NULL);
        }
        uint64_t reads0, shared0;
        subs_batch_stats(h->srv.subs, &reads0, &shared0);
        uint64_t before = reply_injected_failures();
        reply_fail_alloc_after(n);
        harness_deliver(h);
        reply_fail_alloc_after(0);
        unhit = reply_injected_failures() == before;
        uint64_t reads1, shared1;
        subs_batch_stats(h->srv.subs, &reads1, &shared1);
        uint64_t next[N_SUBS], pushes = 0;
        bool dropped[N_SUBS] = {false}, caught_up[N_SUBS] = {false};
        for (int k = 0; k < N_SUBS; k++) {
            next[k] = after[k] + 1;
        }
        Es__V1__Response *r;
        while ((r = harness_next(h)) != NULL) {
            int k = 0;
            while (k < N_SUBS && r->id != ids[k]) {
                k++;
            }
            assert_true(k < N_SUBS);
            if (r->kind_case == ES__V1__RESPONSE__KIND_EVENTS) {
                assert_false(dropped[k]);
                assert_false(caught_up[k]);
                assert_true(r->events->n_events <= 8);
                for (size_t i = 0; i < r->events->n_events; i++) {
                    assert_int_equal(r->events->events[i]->position, next[k]);
                    next[k]++;
                }
                pushes++;
            } else if (r->kind_case == ES__V1__RESPONSE__KIND_CAUGHT_UP) {
                caught_up[k] = true;
            } else {
                assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_DROPPED);
                assert_int_equal(r->dropped->reason, ES_ERR_NO_MEMORY);
                dropped[k] = true;
            }
            es__v1__response__free_unpacked(r, NULL);
        }
        for (int k = 0; k < N_SUBS; k++) {
            if (!dropped[k]) {
                assert_true(caught_up[k]);
                assert_int_equal(next[k], 41); /* every position from its own on, once */
                Es__V1__Unsubscribe un = ES__V1__UNSUBSCRIBE__INIT;
                un.subscription_id = ids[k];
                Es__V1__Request req = ES__V1__REQUEST__INIT;
                req.id = 50000 + n * N_SUBS + (uint64_t)k;
                req.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
                req.unsubscribe = &un;
                harness_send(h, &req);
                es__v1__response__free_unpacked(
                    expect_reply(h, req.id, ES__V1__RESPONSE__KIND_UNSUBSCRIBED), NULL);
            }
            if (unhit) {
                assert_false(dropped[k]);
            }
        }
        if (unhit) {
            /* 149 events in batches of at most 8 (20 at least), 40
             * positions: parts of batches went to the others. */
            assert_true(pushes >= 20);
            assert_true(reads1 - reads0 < pushes);
            assert_true(shared1 - shared0 > 0);
        }
    }
    assert_true(unhit); /* the whole path ran out of failures to inject */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_first, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_version, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle_requests, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_append_conflict_and_retry, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_transaction_reports_every_check, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_reads_info_snapshots_stats, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_in_flight_rules, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_decode_budget, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_keeps_session, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_subscription_catch_up_then_live, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_all_without_name, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_shared_batch_allocation_failures, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_shared_batch_parts, harness_setup, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

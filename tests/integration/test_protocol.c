/*
 * test_protocol — the protocol rules that docs/protocol.md states for client
 * authors and that no other suite pins down, against the real esd:
 *
 *  - request id 0 is reserved: a request carrying it (hello included) is
 *    refused with INVALID_ARGUMENT under id 0, and nothing is served;
 *  - a request id reused while the first request is in flight (or its
 *    subscription open) is refused under id 0, so the first request's reply
 *    stays the only frame that carries the id;
 *  - the all-zero event id is refused (INVALID_EVENT_ID), nothing written;
 *  - a subscription takes one start: from_start, from_end or after;
 *  - SubscribeOk comes before the first push, nothing after UnsubscribeOk;
 *  - a snapshot never goes back to an older revision of the same format,
 *    and a snapshot of another format replaces it.
 *
 * Design notes
 * ------------
 * One esd for the whole file (the rules are per connection, and every test
 * opens its own); every wait is a poll() with a deadline (harness.h). A
 * test that asserts "nothing else arrives" sends a ping behind the request
 * and reads up to its pong: replies to one connection leave in order of
 * production, so anything the server meant to send before the pong is in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

#define REPLY_MS 5000

static esd_proc g_esd;

static int setup(void **state)
{
    (void)state;
    if (esd_init(&g_esd, NULL) != 0) {
        return -1;
    }
    return esd_start(&g_esd, 10000);
}

static int teardown(void **state)
{
    (void)state;
    return esd_finish(&g_esd, 8000);
}

/* Receive one response or fail. */
static Es__V1__Response *recv_one(int fd, const char *what)
{
    Es__V1__Response *r = NULL;
    int rv = h_recv(fd, REPLY_MS, &r, NULL);
    if (rv != H_OK) {
        fail_msg("%s: no response (%d)", what, rv);
    }
    return r;
}

static void expect_error(int fd, uint64_t id, es_err code, const char *what)
{
    Es__V1__Response *r = recv_one(fd, what);
    if (r->id != id || h_code(r) != code) {
        fail_msg("%s: got id %llu %s; expected id %llu %s", what, (unsigned long long)r->id,
                 h_describe(r), (unsigned long long)id, es_errname(code));
    }
    h_resp_free(r);
}

static void expect_kind(int fd, uint64_t id, Es__V1__Response__KindCase kind, const char *what)
{
    Es__V1__Response *r = recv_one(fd, what);
    if (r->id != id || r->kind_case != kind) {
        fail_msg("%s: got id %llu %s; expected id %llu kind %d", what, (unsigned long long)r->id,
                 h_describe(r), (unsigned long long)id, (int)kind);
    }
    h_resp_free(r);
}

static void send_buf(int fd, hbuf *b, const char *what)
{
    if (h_flush(fd, b, REPLY_MS) != H_OK) {
        fail_msg("%s: send failed", what);
    }
}

static void put_subscribe(hbuf *b, uint64_t id, bool from_start, bool from_end, uint64_t after)
{
    Es__V1__Subscribe sub = ES__V1__SUBSCRIBE__INIT;
    sub.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL;
    sub.from_start = from_start;
    sub.from_end = from_end;
    sub.after = after;
    sub.batch_size = 1;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    r.subscribe = &sub;
    h_put_req(b, &r);
}

static void put_unsubscribe(hbuf *b, uint64_t id, uint64_t sub_id)
{
    Es__V1__Unsubscribe u = ES__V1__UNSUBSCRIBE__INIT;
    u.subscription_id = sub_id;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_UNSUBSCRIBE;
    r.unsubscribe = &u;
    h_put_req(b, &r);
}

static void put_save_snapshot(hbuf *b, uint64_t id, const char *stream, uint64_t revision,
                              uint32_t format, const char *data)
{
    Es__V1__SaveSnapshot s = ES__V1__SAVE_SNAPSHOT__INIT;
    s.stream.data = (uint8_t *)stream;
    s.stream.len = strlen(stream);
    s.revision = revision;
    s.state_format = format;
    s.data.data = (uint8_t *)data;
    s.data.len = strlen(data);
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_SAVE_SNAPSHOT;
    r.save_snapshot = &s;
    h_put_req(b, &r);
}

/* -------------------------------------------------------- request id 0 -- */

static void test_request_id_zero_reserved(void **state)
{
    (void)state;
    uint64_t head0 = h_head(g_esd.port);
    int fd = h_connect(g_esd.port);
    assert_true(fd >= 0);
    hbuf b = {0};

    /* A hello with id 0 is refused and does not count as a hello. */
    h_put_hello(&b, 0, 1);
    h_put_ping(&b, 5, "p", 1);
    send_buf(fd, &b, "hello with id 0");
    expect_error(fd, 0, ES_ERR_INVALID_ARGUMENT, "hello with id 0");
    expect_error(fd, 5, ES_ERR_HANDSHAKE_REQUIRED, "ping after a refused id-0 hello");

    /* The connection is kept: a hello with id 1 succeeds. */
    h_put_hello(&b, 1, 1);
    send_buf(fd, &b, "hello");
    expect_kind(fd, 1, ES__V1__RESPONSE__KIND_HELLO, "hello with id 1");

    /* After the hello: ping, append and subscribe with id 0 are refused. */
    h_put_ping(&b, 0, "p", 1);
    h_app a = {.stream = "idzero-1", .kind = H_NO_EXPECTED, .n = 1};
    h_put_append(&b, 0, &a);
    put_subscribe(&b, 0, true, false, 0);
    h_put_ping(&b, 2, "q", 1);
    send_buf(fd, &b, "requests with id 0");
    expect_error(fd, 0, ES_ERR_INVALID_ARGUMENT, "ping with id 0");
    expect_error(fd, 0, ES_ERR_INVALID_ARGUMENT, "append with id 0");
    expect_error(fd, 0, ES_ERR_INVALID_ARGUMENT, "subscribe with id 0");
    /* No subscription was opened: the ping's pong is the next frame. */
    expect_kind(fd, 2, ES__V1__RESPONSE__KIND_PONG, "ping with id 2");
    assert_int_equal(h_head(g_esd.port), head0);
    hbuf_free(&b);
    close(fd);
}

/* --------------------------------------------------------- reused ids -- */

static void test_reused_id_answered_under_zero(void **state)
{
    (void)state;
    int fd = h_open(g_esd.port);
    assert_true(fd >= 0);
    uint64_t head0 = h_head(g_esd.port);
    hbuf b = {0};

    /* Two appends with one id in one write: the second is refused under id
     * 0 while the first is with the writer; exactly one frame carries 7. */
    h_app a = {.stream = "reuse-1", .kind = H_NO_EXPECTED, .n = 1};
    h_put_append(&b, 7, &a);
    h_put_append(&b, 7, &a);
    send_buf(fd, &b, "two appends with id 7");
    int with_7 = 0, dup_0 = 0;
    for (int i = 0; i < 2; i++) {
        Es__V1__Response *r = recv_one(fd, "two appends with id 7");
        if (r->id == 7 && r->kind_case == ES__V1__RESPONSE__KIND_APPEND) {
            with_7++;
        } else if (r->id == 0 && h_code(r) == ES_ERR_DUPLICATE_REQUEST_ID) {
            assert_non_null(strstr(r->error->message, "7"));
            dup_0++;
        } else {
            fail_msg("two appends with id 7: unexpected id %llu %s", (unsigned long long)r->id,
                     h_describe(r));
        }
        h_resp_free(r);
    }
    assert_int_equal(with_7, 1);
    assert_int_equal(dup_0, 1);
    assert_int_equal(h_head(g_esd.port), head0 + 1);

    /* An open subscription keeps its id: a ping with it is refused under 0;
     * after UnsubscribeOk the id is free again. */
    put_subscribe(&b, 9, false, true, 0);
    send_buf(fd, &b, "subscribe 9");
    expect_kind(fd, 9, ES__V1__RESPONSE__KIND_SUBSCRIBED, "subscribe 9");
    expect_kind(fd, 9, ES__V1__RESPONSE__KIND_CAUGHT_UP, "subscribe 9 caught up");
    h_put_ping(&b, 9, "p", 1);
    put_unsubscribe(&b, 10, 9);
    h_put_ping(&b, 9, "p", 1);
    send_buf(fd, &b, "ping 9 around an unsubscribe");
    expect_error(fd, 0, ES_ERR_DUPLICATE_REQUEST_ID, "ping with an open subscription's id");
    expect_kind(fd, 10, ES__V1__RESPONSE__KIND_UNSUBSCRIBED, "unsubscribe 9");
    expect_kind(fd, 9, ES__V1__RESPONSE__KIND_PONG, "ping 9 after the unsubscribe");
    hbuf_free(&b);
    close(fd);
}

/* ------------------------------------------------------------ nil UUID -- */

static void test_nil_event_id_refused(void **state)
{
    (void)state;
    int fd = h_open(g_esd.port);
    assert_true(fd >= 0);
    uint64_t head0 = h_head(g_esd.port);
    static const uint8_t nil[16] = {0};
    uint8_t good[16];
    h_make_id(good, 0x6e11, 1);
    hbuf b = {0};

    h_ev one = {.id = nil, .id_len = 16, .data = "x", .data_len = 1};
    h_app a = {.stream = "nil-1", .kind = H_NO_EXPECTED, .evs = &one, .n = 1};
    h_put_append(&b, 2, &a);
    /* Behind a good event, and inside a transaction: the same. */
    h_ev two[2] = {{.id = good, .id_len = 16, .data = "x", .data_len = 1},
                   {.id = nil, .id_len = 16, .data = "y", .data_len = 1}};
    h_app b2 = {.stream = "nil-2", .kind = H_NO_EXPECTED, .evs = two, .n = 2};
    h_put_append(&b, 3, &b2);
    h_app txn[2] = {{.stream = "nil-3", .kind = H_NO_EXPECTED, .n = 1},
                    {.stream = "nil-4", .kind = H_NO_EXPECTED, .evs = &one, .n = 1}};
    h_put_txn(&b, 4, txn, 2);
    send_buf(fd, &b, "nil event ids");
    expect_error(fd, 2, ES_ERR_INVALID_EVENT_ID, "append with the nil id");
    expect_error(fd, 3, ES_ERR_INVALID_EVENT_ID, "append with a good and the nil id");
    expect_error(fd, 4, ES_ERR_INVALID_EVENT_ID, "transaction with the nil id");
    assert_int_equal(h_head(g_esd.port), head0);

    /* The good id alone is stored (it was not consumed by the refusal). */
    h_ev g = {.id = good, .id_len = 16, .data = "x", .data_len = 1};
    h_app ok = {.stream = "nil-2", .kind = H_NO_EXPECTED, .evs = &g, .n = 1};
    Es__V1__Response *r = h_append(fd, 5, &ok, REPLY_MS);
    assert_non_null(r);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_APPEND);
    assert_false(r->append->duplicate);
    h_resp_free(r);
    assert_int_equal(h_head(g_esd.port), head0 + 1);
    hbuf_free(&b);
    close(fd);
}

/* -------------------------------------------------------- subscriptions -- */

static void test_subscription_one_start(void **state)
{
    (void)state;
    int fd = h_open(g_esd.port);
    assert_true(fd >= 0);
    hbuf b = {0};
    h_app a = {.stream = "start-1", .kind = H_NO_EXPECTED, .n = 2};
    h_resp_free(h_append(fd, 2, &a, REPLY_MS));

    put_subscribe(&b, 3, true, true, 0);
    put_subscribe(&b, 4, true, false, 1);
    put_subscribe(&b, 5, false, true, 1);
    /* None was opened: unsubscribing finds nothing. */
    put_unsubscribe(&b, 6, 3);
    send_buf(fd, &b, "subscriptions with two starts");
    expect_error(fd, 3, ES_ERR_INVALID_ARGUMENT, "from_start + from_end");
    expect_error(fd, 4, ES_ERR_INVALID_ARGUMENT, "from_start + after");
    expect_error(fd, 5, ES_ERR_INVALID_ARGUMENT, "from_end + after");
    expect_error(fd, 6, ES_ERR_SUBSCRIPTION_NOT_FOUND, "unsubscribe a refused subscription");
    hbuf_free(&b);
    close(fd);
}

static void test_subscription_order(void **state)
{
    (void)state;
    int fd = h_open(g_esd.port);
    assert_true(fd >= 0);
    hbuf b = {0};
    h_app a = {.stream = "order-1", .kind = H_NO_EXPECTED, .n = 3};
    h_resp_free(h_append(fd, 2, &a, REPLY_MS));

    /* From the start in batches of 1: SubscribeOk first, then pushes. */
    put_subscribe(&b, 3, true, false, 0);
    send_buf(fd, &b, "subscribe from the start");
    expect_kind(fd, 3, ES__V1__RESPONSE__KIND_SUBSCRIBED, "SubscribeOk before any push");
    Es__V1__Response *r = recv_one(fd, "first push");
    assert_int_equal(r->id, 3);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_EVENTS);
    h_resp_free(r);

    /* Unsubscribe with appends behind it: no frame of subscription 3 after
     * UnsubscribeOk, up to the pong that follows everything. */
    put_unsubscribe(&b, 4, 3);
    h_put_append(&b, 5, &a);
    h_put_append(&b, 6, &a);
    send_buf(fd, &b, "unsubscribe, then appends");
    bool unsubscribed = false;
    int appended = 0;
    while (appended < 2) {
        r = recv_one(fd, "after the unsubscribe");
        if (r->id == 4) {
            assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_UNSUBSCRIBED);
            unsubscribed = true;
        } else if (r->id == 3) {
            if (unsubscribed) {
                fail_msg("a push of subscription 3 after UnsubscribeOk: %s", h_describe(r));
            }
        } else {
            assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_APPEND);
            appended++;
        }
        h_resp_free(r);
    }
    h_put_ping(&b, 7, "end", 3);
    send_buf(fd, &b, "ping");
    for (;;) {
        r = recv_one(fd, "up to the pong");
        if (r->id == 3) {
            fail_msg("a push of subscription 3 after UnsubscribeOk: %s", h_describe(r));
        }
        bool pong = r->id == 7;
        h_resp_free(r);
        if (pong) {
            break;
        }
    }
    assert_true(unsubscribed);
    hbuf_free(&b);
    close(fd);
}

/* ------------------------------------------------------------ snapshots -- */

static void load_snapshot(int fd, uint64_t id, uint64_t *revision, uint32_t *format, char *data,
                          size_t cap)
{
    Es__V1__LoadSnapshot l = ES__V1__LOAD_SNAPSHOT__INIT;
    l.stream.data = (uint8_t *)"snap-1";
    l.stream.len = 6;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = id;
    req.kind_case = ES__V1__REQUEST__KIND_LOAD_SNAPSHOT;
    req.load_snapshot = &l;
    Es__V1__Response *r = h_call(fd, &req, REPLY_MS);
    if (!r || r->kind_case != ES__V1__RESPONSE__KIND_SNAPSHOT) {
        fail_msg("load snapshot: %s", h_describe(r));
    }
    *revision = r->snapshot->revision;
    *format = r->snapshot->state_format;
    assert_true(r->snapshot->data.len < cap);
    memcpy(data, r->snapshot->data.data, r->snapshot->data.len);
    data[r->snapshot->data.len] = '\0';
    h_resp_free(r);
}

static void test_snapshot_never_goes_back(void **state)
{
    (void)state;
    int fd = h_open(g_esd.port);
    assert_true(fd >= 0);
    hbuf b = {0};
    h_app a = {.stream = "snap-1", .kind = H_NO_EXPECTED, .n = 3};
    h_resp_free(h_append(fd, 2, &a, REPLY_MS));

    put_save_snapshot(&b, 3, "snap-1", 2, 1, "at-2");
    put_save_snapshot(&b, 4, "snap-1", 1, 1, "at-1");
    send_buf(fd, &b, "two saves of format 1");
    expect_kind(fd, 3, ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED, "save at revision 2");
    /* Acknowledged, and the newer one is kept. */
    expect_kind(fd, 4, ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED, "save at revision 1");
    uint64_t rev;
    uint32_t fmt;
    char data[16];
    load_snapshot(fd, 5, &rev, &fmt, data, sizeof data);
    assert_int_equal(rev, 2);
    assert_int_equal(fmt, 1);
    assert_string_equal(data, "at-2");

    /* Another format replaces it, even at an older revision. */
    put_save_snapshot(&b, 6, "snap-1", 1, 2, "f2-at-1");
    send_buf(fd, &b, "save of format 2");
    expect_kind(fd, 6, ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED, "save format 2");
    load_snapshot(fd, 7, &rev, &fmt, data, sizeof data);
    assert_int_equal(rev, 1);
    assert_int_equal(fmt, 2);
    assert_string_equal(data, "f2-at-1");

    /* Beyond the stream's last revision, or on a missing stream: refused. */
    put_save_snapshot(&b, 8, "snap-1", 3, 2, "ahead");
    put_save_snapshot(&b, 9, "snap-missing", 0, 1, "none");
    send_buf(fd, &b, "bad saves");
    expect_error(fd, 8, ES_ERR_INVALID_ARGUMENT, "snapshot beyond the stream");
    expect_error(fd, 9, ES_ERR_NOT_FOUND, "snapshot of a missing stream");
    hbuf_free(&b);
    close(fd);
}

int main(void)
{
    const char *filter = getenv("ESD_TEST_FILTER");
    if (filter && *filter) {
        cmocka_set_test_filter(filter);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_id_zero_reserved),
        cmocka_unit_test(test_reused_id_answered_under_zero),
        cmocka_unit_test(test_nil_event_id_refused),
        cmocka_unit_test(test_subscription_one_start),
        cmocka_unit_test(test_subscription_order),
        cmocka_unit_test(test_snapshot_never_goes_back),
    };
    return cmocka_run_group_tests_name("integration: protocol rules", tests, setup, teardown);
}

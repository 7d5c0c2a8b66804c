/*
 * test_aggregate — libesaggregate without a server: decisions (emit,
 * refuse, reset, caps), options and handle validation, and every argument
 * error of load/execute/snapshot that must be caught before any I/O.
 *
 * malloc, calloc, realloc and free are wrapped (-Wl,--wrap) into cmocka's
 * test_* allocator, so every test is also a leak check, and the wrapper can
 * fail the Nth allocation (fault injection: every failure gives
 * ES_ERR_NO_MEMORY and leaves the decision as it was). The load, retry and
 * snapshot paths need a server: tests/account/test_aggregate_it.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/aggregate.h"

#include "check_rv.h"

/* ------------------------------------------------------------ allocator -- */

/* Allocations left before one fails; -1: never fail. */
static long fail_countdown = -1;

static bool should_fail(void)
{
    if (fail_countdown < 0) {
        return false;
    }
    if (fail_countdown == 0) {
        fail_countdown = -1;
        return true;
    }
    fail_countdown--;
    return false;
}

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : test_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : test_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : test_realloc(p, n);
}

void __wrap_free(void *p)
{
    test_free(p);
}

/* ------------------------------------------------------------ decisions -- */

static void test_decision_create_bounds(void **state)
{
    es_agg_decision *d = (es_agg_decision *)1;
    CHECK_RV(es_agg_decision_create(0, &d), ES_ERR_INVALID_ARGUMENT);
    assert_null(d);
    CHECK_RV(es_agg_decision_create(ES_AGG_MAX_TARGETS + 1, &d), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_decision_create(1, NULL), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_decision_create(ES_AGG_MAX_TARGETS, &d), ES_OK);
    es_agg_decision_destroy(d);
    es_agg_decision_destroy(NULL);
}

static void test_emit_copies_and_orders(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(2, &d), ES_OK);
    char type[] = "MoneyDeposited";
    char data[] = "{\"amount\":5}";
    CHECK_RV(es_agg_emit(d, 0, type, "application/json", data, strlen(data)), ES_OK);
    CHECK_RV(es_agg_emit(d, 0, "Second", NULL, NULL, 0), ES_OK);
    CHECK_RV(es_agg_emit(d, 1, "Other", NULL, "x", 1), ES_OK);
    /* The decision owns copies. */
    memset(type, 'X', strlen(type));
    memset(data, 'X', strlen(data));

    size_t n = 0;
    const es_event *ev = es_agg_decision_events(d, 0, &n);
    assert_int_equal(n, 2);
    assert_string_equal(ev[0].type, "MoneyDeposited");
    assert_string_equal(ev[0].content_type, "application/json");
    assert_int_equal(ev[0].data_len, strlen("{\"amount\":5}"));
    assert_memory_equal(ev[0].data, "{\"amount\":5}", ev[0].data_len);
    assert_false(ev[0].has_id);
    assert_null(ev[0].correlation_id);
    assert_string_equal(ev[1].type, "Second");
    assert_null(ev[1].content_type);
    assert_null(ev[1].data);
    assert_int_equal(ev[1].data_len, 0);
    ev = es_agg_decision_events(d, 1, &n);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].type, "Other");
    assert_null(es_agg_decision_events(d, 2, &n));
    assert_int_equal(n, 0);
    assert_false(es_agg_decision_refused(d, NULL, NULL));

    es_agg_decision_reset(d);
    assert_null(es_agg_decision_events(d, 0, &n));
    assert_int_equal(n, 0);
    es_agg_decision_destroy(d);
}

static void test_emit_rejects(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    CHECK_RV(es_agg_emit(NULL, 0, "T", NULL, NULL, 0), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_emit(d, 1, "T", NULL, NULL, 0), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_emit(d, 0, NULL, NULL, NULL, 0), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_emit(d, 0, "T", NULL, NULL, 3), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_emit(d, 0, "", NULL, NULL, 0), ES_ERR_INVALID_EVENT_TYPE);
    char longtype[258];
    memset(longtype, 'a', 257);
    longtype[257] = '\0';
    CHECK_RV(es_agg_emit(d, 0, longtype, NULL, NULL, 0), ES_ERR_INVALID_EVENT_TYPE);
    longtype[256] = '\0';
    CHECK_RV(es_agg_emit(d, 0, longtype, NULL, NULL, 0), ES_OK);
    CHECK_RV(es_agg_emit(d, 0, "T", longtype, NULL, 0), ES_OK);
    size_t n;
    es_agg_decision_events(d, 0, &n);
    assert_int_equal(n, 2);
    es_agg_decision_destroy(d);
}

static void test_emit_cap(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    for (unsigned i = 0; i < ES_AGG_MAX_EVENTS; i++) {
        CHECK_RV(es_agg_emit(d, 0, "T", NULL, NULL, 0), ES_OK);
    }
    CHECK_RV(es_agg_emit(d, 0, "T", NULL, NULL, 0), ES_ERR_TOO_MANY_EVENTS);
    size_t n;
    es_agg_decision_events(d, 0, &n);
    assert_int_equal(n, ES_AGG_MAX_EVENTS);
    es_agg_decision_destroy(d);
}

static void test_refuse(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(2, &d), ES_OK);
    CHECK_RV(es_agg_emit(d, 0, "T", NULL, "x", 1), ES_OK);
    CHECK_RV(es_agg_emit(d, 1, "T", NULL, "x", 1), ES_OK);
    CHECK_RV(es_agg_refuse(d, 7, "insufficient funds: %d < %d", 3, 5), ES_ERR_REFUSED);
    int reason = 0;
    const char *msg = NULL;
    assert_true(es_agg_decision_refused(d, &reason, &msg));
    assert_int_equal(reason, 7);
    assert_string_equal(msg, "insufficient funds: 3 < 5");
    /* The events emitted before are gone and nothing more can be emitted. */
    size_t n = 1;
    assert_null(es_agg_decision_events(d, 0, &n));
    assert_int_equal(n, 0);
    CHECK_RV(es_agg_emit(d, 0, "T", NULL, NULL, 0), ES_ERR_INVALID_ARGUMENT);
    /* A second refusal replaces the first. */
    CHECK_RV(es_agg_refuse(d, 8, "%s", "other"), ES_ERR_REFUSED);
    assert_true(es_agg_decision_refused(d, &reason, &msg));
    assert_int_equal(reason, 8);
    assert_string_equal(msg, "other");
    /* An empty message becomes the generic one. */
    CHECK_RV(es_agg_refuse(d, 0, "%s", ""), ES_ERR_REFUSED);
    assert_true(es_agg_decision_refused(d, NULL, &msg));
    assert_string_equal(msg, es_strerror(ES_ERR_REFUSED));
    /* Reset makes it a fresh decision. */
    es_agg_decision_reset(d);
    assert_false(es_agg_decision_refused(d, NULL, NULL));
    CHECK_RV(es_agg_emit(d, 0, "T", NULL, NULL, 0), ES_OK);
    CHECK_RV(es_agg_refuse(NULL, 0, "x"), ES_ERR_INVALID_ARGUMENT);
    es_agg_decision_destroy(d);
}

static void test_refuse_truncates(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    char big[2 * ES_AGG_MESSAGE_BYTES];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_RV(es_agg_refuse(d, 1, "%s", big), ES_ERR_REFUSED);
    const char *msg = NULL;
    assert_true(es_agg_decision_refused(d, NULL, &msg));
    assert_int_equal(strlen(msg), ES_AGG_MESSAGE_BYTES - 1);
    es_agg_decision_destroy(d);
}

/* Fail each allocation of create and of a run of emits in turn: each failure
 * is ES_ERR_NO_MEMORY, the decision keeps what it had, nothing leaks. */
static void test_allocation_failures(void **state)
{
    for (long k = 0; k < 2; k++) {
        es_agg_decision *d = (es_agg_decision *)1;
        fail_countdown = k;
        CHECK_RV(es_agg_decision_create(3, &d), ES_ERR_NO_MEMORY);
        assert_null(d);
    }
    fail_countdown = -1;
    for (long k = 0; k < 40; k++) {
        es_agg_decision *d = NULL;
        CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
        size_t ok = 0;
        fail_countdown = k;
        for (int i = 0; i < 12; i++) {
            es_err rv = es_agg_emit(d, 0, "T", "ct", "data", 4);
            if (rv == ES_OK) {
                ok++;
            } else {
                assert_int_equal(rv, ES_ERR_NO_MEMORY);
            }
        }
        fail_countdown = -1;
        size_t n;
        const es_event *ev = es_agg_decision_events(d, 0, &n);
        assert_int_equal(n, ok);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(ev[i].type, "T");
            assert_string_equal(ev[i].content_type, "ct");
            assert_memory_equal(ev[i].data, "data", 4);
        }
        es_agg_decision_destroy(d);
    }
}

/* ------------------------------------------------------- handles, args -- */

static es_err st_init(void *ctx, void *st)
{
    memset(st, 0, sizeof(int));
    return ES_OK;
}

static es_err st_apply(void *ctx, void *st, const es_recorded_event *ev)
{
    (*(int *)st)++;
    return ES_OK;
}

static es_err st_encode(void *ctx, const void *st, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    return ES_OK;
}

static es_err st_decode(void *ctx, void *st, const void *data, size_t len)
{
    return ES_OK;
}

static es_err decide_nothing(const void *st, const void *cmd, es_agg_decision *d)
{
    fail_msg("decide must not be reached");
    return ES_OK;
}

static es_err decide_many_nothing(const void *const *st, size_t n, const void *cmd,
                                  es_agg_decision *d)
{
    fail_msg("decide must not be reached");
    return ES_OK;
}

static const es_agg_ops int_ops = {
    .state_size = sizeof(int),
    .state_format = 1,
    .init = st_init,
    .apply = st_apply,
    .encode = st_encode,
    .decode = st_decode,
};

/* A client that is never connected: nothing below may do I/O. */
static es_client *offline_client(void)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = "127.0.0.1:9";
    es_client *c = NULL;
    CHECK_RV(es_client_create(&o, &c), ES_OK);
    return c;
}

static void test_options_defaults(void **state)
{
    es_agg_options o;
    memset(&o, 0xff, sizeof(o));
    es_agg_options_init(&o);
    assert_int_equal(o.max_attempts, 16);
    assert_int_equal(o.backoff_initial_ms, 2);
    assert_int_equal(o.backoff_max_ms, 100);
    assert_int_equal(o.snapshot_every, 100);
    assert_true(o.read_snapshots);
    assert_int_equal(o.page_size, 0);
    es_agg_options_init(NULL);
}

static void test_create_validation(void **state)
{
    es_client *c = offline_client();
    es_agg *a = (es_agg *)1;
    CHECK_RV(es_agg_create(NULL, &int_ops, NULL, NULL, &a), ES_ERR_INVALID_ARGUMENT);
    assert_null(a);
    CHECK_RV(es_agg_create(c, NULL, NULL, NULL, &a), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_create(c, &int_ops, NULL, NULL, NULL), ES_ERR_INVALID_ARGUMENT);
    es_agg_ops ops = int_ops;
    ops.init = NULL;
    CHECK_RV(es_agg_create(c, &ops, NULL, NULL, &a), ES_ERR_INVALID_ARGUMENT);
    ops = int_ops;
    ops.apply = NULL;
    CHECK_RV(es_agg_create(c, &ops, NULL, NULL, &a), ES_ERR_INVALID_ARGUMENT);
    ops = int_ops;
    ops.state_size = 0;
    CHECK_RV(es_agg_create(c, &ops, NULL, NULL, &a), ES_ERR_INVALID_ARGUMENT);
    ops = int_ops;
    ops.decode = NULL;
    CHECK_RV(es_agg_create(c, &ops, NULL, NULL, &a), ES_ERR_INVALID_ARGUMENT);
    es_agg_options o;
    es_agg_options_init(&o);
    o.max_attempts = 0;
    CHECK_RV(es_agg_create(c, &int_ops, NULL, &o, &a), ES_ERR_INVALID_ARGUMENT);
    es_agg_options_init(&o);
    o.backoff_initial_ms = 500;
    o.backoff_max_ms = 100;
    CHECK_RV(es_agg_create(c, &int_ops, NULL, &o, &a), ES_ERR_INVALID_ARGUMENT);

    /* Snapshots are optional: neither encode nor decode is fine. */
    ops = int_ops;
    ops.encode = NULL;
    ops.decode = NULL;
    CHECK_RV(es_agg_create(c, &ops, NULL, NULL, &a), ES_OK);
    assert_ptr_equal(es_agg_client(a), c);
    assert_string_equal(es_agg_errmsg(a), "");
    assert_int_equal(es_agg_refusal_reason(a), 0);
    bool saved = true;
    uint64_t rev = 1;
    CHECK_RV(es_agg_snapshot(a, "s-1", &rev, &saved), ES_ERR_INVALID_ARGUMENT);
    assert_false(saved);
    assert_int_equal(rev, 0);
    assert_non_null(strstr(es_agg_errmsg(a), "snapshot"));
    es_agg_destroy(a);

    fail_countdown = 0;
    CHECK_RV(es_agg_create(c, &int_ops, NULL, NULL, &a), ES_ERR_NO_MEMORY);
    fail_countdown = -1;
    es_agg_destroy(NULL);
    es_client_destroy(c);
    assert_null(es_agg_client(NULL));
    assert_string_equal(es_agg_errmsg(NULL), "");
}

static void test_arguments_before_io(void **state)
{
    es_client *c = offline_client();
    es_client *c2 = offline_client();
    es_agg *a = NULL, *b = NULL, *other = NULL;
    CHECK_RV(es_agg_create(c, &int_ops, NULL, NULL, &a), ES_OK);
    CHECK_RV(es_agg_create(c, &int_ops, NULL, NULL, &b), ES_OK);
    CHECK_RV(es_agg_create(c2, &int_ops, NULL, NULL, &other), ES_OK);
    int st;
    es_agg_load_info info;
    es_agg_result res;

    CHECK_RV(es_agg_load(NULL, "s-1", &st, &info), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_load(a, "s-1", NULL, &info), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_load(a, NULL, &st, &info), ES_ERR_INVALID_STREAM_ID);
    CHECK_RV(es_agg_load(a, "", &st, &info), ES_ERR_INVALID_STREAM_ID);
    char longid[300];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    CHECK_RV(es_agg_load(a, longid, &st, &info), ES_ERR_INVALID_STREAM_ID);

    CHECK_RV(es_agg_execute(NULL, "s-1", decide_nothing, NULL, NULL, &res),
             ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_execute(a, "s-1", NULL, NULL, NULL, &res), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_execute(a, "", decide_nothing, NULL, NULL, &res), ES_ERR_INVALID_STREAM_ID);

    es_agg_target t[3] = {
        {.agg = a, .stream = "s-1"}, {.agg = b, .stream = "s-2"}, {.agg = a, .stream = "s-3"}};
    CHECK_RV(es_agg_execute_many(NULL, 2, decide_many_nothing, NULL, &res),
             ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_execute_many(t, 0, decide_many_nothing, NULL, &res), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_execute_many(t, ES_AGG_MAX_TARGETS + 1, decide_many_nothing, NULL, &res),
             ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_execute_many(t, 2, NULL, NULL, &res), ES_ERR_INVALID_ARGUMENT);
    t[2].stream = "s-1";
    CHECK_RV(es_agg_execute_many(t, 3, decide_many_nothing, NULL, &res), ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(es_agg_errmsg(a), "twice"));
    t[2].stream = "s-3";
    t[1].agg = other;
    CHECK_RV(es_agg_execute_many(t, 3, decide_many_nothing, NULL, &res), ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(es_agg_errmsg(a), "client"));
    t[1].agg = NULL;
    CHECK_RV(es_agg_execute_many(t, 3, decide_many_nothing, NULL, &res), ES_ERR_INVALID_ARGUMENT);
    t[1].agg = b;
    t[1].stream = "";
    CHECK_RV(es_agg_execute_many(t, 3, decide_many_nothing, NULL, &res), ES_ERR_INVALID_STREAM_ID);

    CHECK_RV(es_agg_snapshot(NULL, "s-1", NULL, NULL), ES_ERR_INVALID_ARGUMENT);
    CHECK_RV(es_agg_snapshot(a, "", NULL, NULL), ES_ERR_INVALID_STREAM_ID);

    /* Nothing above touched the network. */
    assert_false(es_client_connected(c));
    assert_false(es_client_connected(c2));
    es_agg_stats st_a;
    es_agg_stats_get(a, &st_a);
    assert_int_equal(st_a.loads, 0);
    assert_int_equal(st_a.attempts, 0);

    es_agg_destroy(a);
    es_agg_destroy(b);
    es_agg_destroy(other);
    es_client_destroy(c);
    es_client_destroy(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_create_bounds),
        cmocka_unit_test(test_emit_copies_and_orders),
        cmocka_unit_test(test_emit_rejects),
        cmocka_unit_test(test_emit_cap),
        cmocka_unit_test(test_refuse),
        cmocka_unit_test(test_refuse_truncates),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_options_defaults),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_arguments_before_io),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

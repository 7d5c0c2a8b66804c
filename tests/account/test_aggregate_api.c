/*
 * test_aggregate_api — es/aggregate.h against the real esd: load, execute,
 * refusals, the conflict loop (bounded, with the newer events folded in),
 * the no-stream expectation, snapshots (every N, on demand, an older state
 * format ignored, an undecodable one ignored), a fold that refuses a foreign
 * event, and decisions over two aggregates committed in one transaction
 * with both expectations (atomic: all or nothing).
 *
 * Conflicts are made deterministic: the decide functions of these tests
 * append to the stream through a second client before deciding, as often
 * as the test asks, so the append that follows must fail its expectation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "it.h"

static esd_proc esd;
static es_client *cl;    /* the client of the aggregates */
static es_client *other; /* the interfering one */

static int setup(void **state)
{
    static const char *const args[] = {"--sync", "none", NULL};
    if (esd_init(&esd, args) != 0 || esd_start(&esd, 10000) != 0) {
        return -1;
    }
    cl = it_client(esd.port);
    other = it_client(esd.port);
    return cl && other ? 0 : -1;
}

static int teardown(void **state)
{
    es_client_destroy(cl);
    es_client_destroy(other);
    int rc = esd_stop(&esd, SIGTERM, 5000, NULL, NULL);
    esd_destroy(&esd);
    return rc;
}

/* ------------------------------------------------- a counter aggregate -- */

/* State: the sum of the "Added" events. Events: "Added" with the decimal
 * amount as data. Snapshots: 16 bytes (value, events), format 2. */
typedef struct counter {
    int64_t value;
    uint64_t events;
} counter;

#define COUNTER_FORMAT 2u

static es_err ctr_init(void *ctx, void *st)
{
    memset(st, 0, sizeof(counter));
    return ES_OK;
}

static es_err ctr_apply(void *ctx, void *st, const es_recorded_event *ev)
{
    counter *c = st;
    if (strcmp(ev->type, "Added") != 0 || ev->data_len == 0 || ev->data_len > 20) {
        return ES_ERR_MALFORMED;
    }
    char buf[24];
    memcpy(buf, ev->data, ev->data_len);
    buf[ev->data_len] = '\0';
    c->value += strtoll(buf, NULL, 10);
    c->events++;
    return ES_OK;
}

static es_err ctr_encode(void *ctx, const void *st, void **data, size_t *len)
{
    void *p = malloc(sizeof(counter));
    if (p == NULL) {
        return ES_ERR_NO_MEMORY;
    }
    memcpy(p, st, sizeof(counter));
    *data = p;
    *len = sizeof(counter);
    return ES_OK;
}

static es_err ctr_decode(void *ctx, void *st, const void *data, size_t len)
{
    if (len != sizeof(counter)) {
        return ES_ERR_MALFORMED;
    }
    memcpy(st, data, sizeof(counter));
    return ES_OK;
}

static const es_agg_ops counter_ops = {
    .state_size = sizeof(counter),
    .state_format = COUNTER_FORMAT,
    .init = ctr_init,
    .apply = ctr_apply,
    .encode = ctr_encode,
    .decode = ctr_decode,
};

/* Interference: before deciding, append `interfere` times (one per call)
 * an "Added 100" to `stream` through the other client. */
typedef struct ctr_cmd {
    int64_t add;
    int refuse; /* 1: es_agg_refuse, 2: return ES_ERR_REFUSED bare, 3: ES_ERR_INTERNAL */
    bool nothing;
    const char *stream;
    int interfere;
    int calls;
    int64_t seen; /* the value decide saw last */
} ctr_cmd;

static es_err interfere_once(const char *stream)
{
    es_event ev = {.type = "Added", .data = "100", .data_len = 3};
    return es_stream_append(other, stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL);
}

static es_err ctr_decide(const void *st, const void *command, es_agg_decision *d)
{
    const counter *c = st;
    ctr_cmd *cmd = (ctr_cmd *)command;
    cmd->calls++;
    cmd->seen = c->value;
    if (cmd->interfere > 0) {
        cmd->interfere--;
        if (interfere_once(cmd->stream) != ES_OK) {
            return ES_ERR_INTERNAL;
        }
    }
    switch (cmd->refuse) {
    case 1:
        return es_agg_refuse(d, 42, "no: value is %lld", (long long)c->value);
    case 2:
        return ES_ERR_REFUSED;
    case 3:
        return ES_ERR_INTERNAL;
    default:
        break;
    }
    if (cmd->nothing) {
        return ES_OK;
    }
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%lld", (long long)cmd->add);
    return es_agg_emit(d, 0, "Added", "text/plain", buf, (size_t)n);
}

static es_agg *make(const es_agg_ops *ops, uint32_t snapshot_every, uint32_t max_attempts,
                    bool read_snapshots)
{
    es_agg_options o;
    es_agg_options_init(&o);
    o.snapshot_every = snapshot_every;
    o.max_attempts = max_attempts;
    o.read_snapshots = read_snapshots;
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 20;
    es_agg *a = NULL;
    CHECK_RV(es_agg_create(cl, ops, NULL, &o, &a), ES_OK);
    return a;
}

static uint64_t last_revision(const char *stream)
{
    es_stream_info info;
    CHECK_RV(es_stream_info_get(other, stream, &info), ES_OK);
    return info.last_revision;
}

/* ---------------------------------------------------------------- tests -- */

static void test_load_missing(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    counter c;
    es_agg_load_info info;
    memset(&info, 0xff, sizeof(info));
    CHECK_RV(es_agg_load(a, "ctr-missing", &c, &info), ES_OK);
    assert_false(info.exists);
    assert_false(info.from_snapshot);
    assert_int_equal(info.replayed, 0);
    assert_int_equal(c.value, 0);
    es_agg_state_finish(a, &c);
    es_agg_destroy(a);
}

static void test_execute_and_load(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    for (int i = 1; i <= 5; i++) {
        ctr_cmd cmd = {.add = i};
        counter after;
        es_agg_result res;
        CHECK_RV(es_agg_execute(a, "ctr-basic", ctr_decide, &cmd, &after, &res), ES_OK);
        assert_int_equal(res.revision, (uint64_t)(i - 1));
        assert_true(res.exists);
        assert_int_equal(res.n_events, 1);
        assert_int_equal(res.attempts, 1);
        assert_int_equal(res.conflicts, 0);
        assert_false(res.duplicate);
        assert_int_equal(after.value, i * (i + 1) / 2);
        assert_int_equal(after.events, (uint64_t)i);
        es_agg_state_finish(a, &after);
    }
    counter c;
    es_agg_load_info info;
    CHECK_RV(es_agg_load(a, "ctr-basic", &c, &info), ES_OK);
    assert_true(info.exists);
    assert_int_equal(info.revision, 4);
    assert_int_equal(info.replayed, 5);
    assert_false(info.from_snapshot);
    assert_int_equal(c.value, 15);
    es_agg_stats st;
    es_agg_stats_get(a, &st);
    assert_int_equal(st.commands, 5);
    assert_int_equal(st.succeeded, 5);
    assert_int_equal(st.conflicts, 0);
    es_agg_destroy(a);
}

static void test_refusals_and_decide_errors(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    ctr_cmd ok = {.add = 1};
    CHECK_RV(es_agg_execute(a, "ctr-refuse", ctr_decide, &ok, NULL, NULL), ES_OK);

    ctr_cmd cmd = {.add = 1, .refuse = 1};
    es_agg_result res;
    CHECK_RV(es_agg_execute(a, "ctr-refuse", ctr_decide, &cmd, NULL, &res), ES_ERR_REFUSED);
    assert_string_equal(es_agg_errmsg(a), "no: value is 1");
    assert_int_equal(es_agg_refusal_reason(a), 42);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(res.n_events, 0);
    assert_int_equal(last_revision("ctr-refuse"), 0);

    cmd.refuse = 2;
    CHECK_RV(es_agg_execute(a, "ctr-refuse", ctr_decide, &cmd, NULL, &res), ES_ERR_REFUSED);
    assert_string_equal(es_agg_errmsg(a), es_strerror(ES_ERR_REFUSED));
    assert_int_equal(es_agg_refusal_reason(a), 0);

    cmd.refuse = 3;
    CHECK_RV(es_agg_execute(a, "ctr-refuse", ctr_decide, &cmd, NULL, &res), ES_ERR_INTERNAL);
    assert_non_null(strstr(es_agg_errmsg(a), "decide"));
    assert_int_equal(last_revision("ctr-refuse"), 0);

    /* A success clears the refusal. */
    CHECK_RV(es_agg_execute(a, "ctr-refuse", ctr_decide, &ok, NULL, NULL), ES_OK);
    assert_string_equal(es_agg_errmsg(a), "");
    assert_int_equal(es_agg_refusal_reason(a), 0);
    es_agg_stats st;
    es_agg_stats_get(a, &st);
    assert_int_equal(st.refused, 2);
    es_agg_destroy(a);
}

static void test_empty_decision(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    ctr_cmd cmd = {.nothing = true};
    es_agg_result res;
    CHECK_RV(es_agg_execute(a, "ctr-empty", ctr_decide, &cmd, NULL, &res), ES_OK);
    assert_false(res.exists);
    assert_int_equal(res.n_events, 0);
    es_stream_info info;
    CHECK_RV(es_stream_info_get(other, "ctr-empty", &info), ES_ERR_NOT_FOUND);
    es_agg_destroy(a);
}

static void test_conflicts_retried(void **state)
{
    es_agg *a = make(&counter_ops, 0, 8, true);
    ctr_cmd first = {.add = 1};
    CHECK_RV(es_agg_execute(a, "ctr-conflict", ctr_decide, &first, NULL, NULL), ES_OK);

    ctr_cmd cmd = {.add = 1, .stream = "ctr-conflict", .interfere = 3};
    counter after;
    es_agg_result res;
    CHECK_RV(es_agg_execute(a, "ctr-conflict", ctr_decide, &cmd, &after, &res), ES_OK);
    assert_int_equal(res.conflicts, 3);
    assert_int_equal(res.attempts, 4);
    assert_int_equal(cmd.calls, 4);
    /* The last decision saw the three concurrent appends... */
    assert_int_equal(cmd.seen, 1 + 300);
    /* ...and ours came after them. */
    assert_int_equal(res.revision, 4);
    assert_int_equal(after.value, 1 + 300 + 1);
    assert_int_equal(last_revision("ctr-conflict"), 4);
    es_agg_stats st;
    es_agg_stats_get(a, &st);
    assert_int_equal(st.conflicts, 3);
    es_agg_destroy(a);
}

static void test_retries_bounded(void **state)
{
    es_agg_options o;
    es_agg_options_init(&o);
    o.max_attempts = 3;
    o.backoff_initial_ms = 40;
    o.backoff_max_ms = 40;
    es_agg *a = NULL;
    CHECK_RV(es_agg_create(cl, &counter_ops, NULL, &o, &a), ES_OK);
    ctr_cmd cmd = {.add = 1, .stream = "ctr-bounded", .interfere = 1000};
    es_agg_result res;
    int64_t t0 = h_now_ms();
    CHECK_RV(es_agg_execute(a, "ctr-bounded", ctr_decide, &cmd, NULL, &res),
             ES_ERR_WRONG_EXPECTED_REVISION);
    int64_t elapsed = h_now_ms() - t0;
    assert_int_equal(res.attempts, 3);
    assert_int_equal(res.conflicts, 3);
    assert_int_equal(res.n_events, 0);
    assert_non_null(strstr(es_agg_errmsg(a), "3 attempts"));
    /* The client still holds the last conflict's details. */
    size_t n = 0;
    const es_conflict *cf = es_client_conflicts(cl, &n);
    assert_int_equal(n, 1);
    assert_string_equal(cf[0].stream, "ctr-bounded");
    assert_true(cf[0].actual_exists);
    assert_int_equal(cf[0].actual_revision, 2);
    /* Only the interfering events are stored: ours never were. */
    assert_int_equal(last_revision("ctr-bounded"), 2);
    /* Two backoffs of at most 40 ms each (jitter), not more. */
    assert_true(elapsed < 2000);
    es_agg_stats st;
    es_agg_stats_get(a, &st);
    assert_int_equal(st.exhausted, 1);
    es_agg_destroy(a);
}

static void test_no_stream_expectation(void **state)
{
    /* The stream is created between our load and our append. */
    es_agg *a = make(&counter_ops, 0, 4, true);
    ctr_cmd cmd = {.add = 7, .stream = "ctr-created", .interfere = 1};
    es_agg_result res;
    CHECK_RV(es_agg_execute(a, "ctr-created", ctr_decide, &cmd, NULL, &res), ES_OK);
    assert_int_equal(res.conflicts, 1);
    assert_int_equal(cmd.seen, 100);
    assert_int_equal(res.revision, 1);
    es_agg_destroy(a);
}

static void test_snapshot_every(void **state)
{
    es_agg *a = make(&counter_ops, 10, 4, true);
    uint32_t saved = 0;
    for (int i = 0; i < 25; i++) {
        ctr_cmd cmd = {.add = 2};
        es_agg_result res;
        CHECK_RV(es_agg_execute(a, "ctr-snap", ctr_decide, &cmd, NULL, &res), ES_OK);
        saved += res.snapshots_saved;
        /* Snapshots at revisions 9 and 19 (10 events each). */
        assert_int_equal(res.snapshots_saved, (i == 9 || i == 19) ? 1 : 0);
    }
    assert_int_equal(saved, 2);
    counter c, full;
    es_agg_load_info info, finfo;
    CHECK_RV(es_agg_load(a, "ctr-snap", &c, &info), ES_OK);
    assert_true(info.from_snapshot);
    assert_int_equal(info.snapshot_revision, 19);
    assert_int_equal(info.replayed, 5);
    assert_int_equal(info.revision, 24);
    es_agg *replay = make(&counter_ops, 0, 4, false);
    CHECK_RV(es_agg_load(replay, "ctr-snap", &full, &finfo), ES_OK);
    assert_false(finfo.from_snapshot);
    assert_int_equal(finfo.replayed, 25);
    assert_int_equal(finfo.revision, 24);
    assert_memory_equal(&c, &full, sizeof(c));
    assert_int_equal(c.value, 50);
    es_agg_destroy(replay);
    es_agg_destroy(a);
}

static void test_snapshot_formats(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    for (int i = 0; i < 6; i++) {
        ctr_cmd cmd = {.add = 3};
        CHECK_RV(es_agg_execute(a, "ctr-format", ctr_decide, &cmd, NULL, NULL), ES_OK);
    }
    /* An older format that claims a different value: not trusted. */
    counter lie = {999999, 6};
    CHECK_RV(es_snapshot_save(other, "ctr-format", 5, COUNTER_FORMAT - 1, &lie, sizeof(lie)),
             ES_OK);
    counter c;
    es_agg_load_info info;
    CHECK_RV(es_agg_load(a, "ctr-format", &c, &info), ES_OK);
    assert_true(info.snapshot_ignored);
    assert_false(info.from_snapshot);
    assert_int_equal(info.replayed, 6);
    assert_int_equal(c.value, 18);

    /* The right format number, but bytes decode() rejects: ignored too. */
    CHECK_RV(es_snapshot_save(other, "ctr-format", 5, COUNTER_FORMAT, "junk", 4), ES_OK);
    CHECK_RV(es_agg_load(a, "ctr-format", &c, &info), ES_OK);
    assert_true(info.snapshot_ignored);
    assert_int_equal(info.replayed, 6);
    assert_int_equal(c.value, 18);

    /* A snapshot saved on demand replaces it and is used. */
    uint64_t rev = 0;
    bool saved = false;
    CHECK_RV(es_agg_snapshot(a, "ctr-format", &rev, &saved), ES_OK);
    assert_true(saved);
    assert_int_equal(rev, 5);
    CHECK_RV(es_agg_load(a, "ctr-format", &c, &info), ES_OK);
    assert_true(info.from_snapshot);
    assert_false(info.snapshot_ignored);
    assert_int_equal(info.snapshot_revision, 5);
    assert_int_equal(info.replayed, 0);
    assert_int_equal(c.value, 18);
    es_agg_stats st;
    es_agg_stats_get(a, &st);
    /* The two loads above, and the load of es_agg_snapshot. */
    assert_int_equal(st.snapshots_ignored, 3);
    es_agg_destroy(a);
}

static void test_snapshot_on_demand(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    uint64_t rev = 99;
    bool saved = true;
    CHECK_RV(es_agg_snapshot(a, "ctr-demand", &rev, &saved), ES_ERR_NOT_FOUND);
    assert_false(saved);
    for (int i = 0; i < 3; i++) {
        ctr_cmd cmd = {.add = 1};
        CHECK_RV(es_agg_execute(a, "ctr-demand", ctr_decide, &cmd, NULL, NULL), ES_OK);
    }
    CHECK_RV(es_agg_snapshot(a, "ctr-demand", &rev, &saved), ES_OK);
    assert_true(saved);
    assert_int_equal(rev, 2);
    CHECK_RV(es_agg_snapshot(a, "ctr-demand", &rev, &saved), ES_OK);
    assert_false(saved); /* already current */
    assert_int_equal(rev, 2);
    ctr_cmd cmd = {.add = 1};
    CHECK_RV(es_agg_execute(a, "ctr-demand", ctr_decide, &cmd, NULL, NULL), ES_OK);
    CHECK_RV(es_agg_snapshot(a, "ctr-demand", &rev, &saved), ES_OK);
    assert_true(saved);
    assert_int_equal(rev, 3);
    es_agg_destroy(a);
}

static void test_apply_refuses_foreign_event(void **state)
{
    es_agg *a = make(&counter_ops, 0, 4, true);
    ctr_cmd cmd = {.add = 1};
    CHECK_RV(es_agg_execute(a, "ctr-foreign", ctr_decide, &cmd, NULL, NULL), ES_OK);
    es_event ev = {.type = "Bogus", .data = "x", .data_len = 1};
    CHECK_RV(es_stream_append(other, "ctr-foreign", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL),
             ES_OK);
    counter c;
    CHECK_RV(es_agg_load(a, "ctr-foreign", &c, NULL), ES_ERR_MALFORMED);
    assert_non_null(strstr(es_agg_errmsg(a), "revision 1"));
    assert_non_null(strstr(es_agg_errmsg(a), "Bogus"));
    /* A command on it fails the same way, before deciding. */
    ctr_cmd more = {.add = 1};
    CHECK_RV(es_agg_execute(a, "ctr-foreign", ctr_decide, &more, NULL, NULL), ES_ERR_MALFORMED);
    assert_int_equal(more.calls, 0);
    es_agg_destroy(a);
}

/* --------------------------------------------------- two aggregates -- */

typedef struct interfering_transfer {
    account_cmd cmd;
    const char *stream; /* where to interfere */
    int interfere;
    int calls;
} interfering_transfer;

static es_err transfer_decide(const void *const *states, size_t n, const void *command,
                              es_agg_decision *d)
{
    interfering_transfer *t = (interfering_transfer *)command;
    t->calls++;
    if (t->interfere > 0) {
        t->interfere--;
        es_event ev = {.type = ACCOUNT_DEPOSITED,
                       .content_type = "application/json",
                       .data = "{\"amount\":5}",
                       .data_len = strlen("{\"amount\":5}")};
        if (es_stream_append(other, t->stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL) !=
            ES_OK) {
            return ES_ERR_INTERNAL;
        }
    }
    return account_decide_transfer(states, n, &t->cmd, d);
}

static void open_with(es_agg *a, const char *id, int64_t amount)
{
    char stream[ACCOUNT_STREAM_BYTES];
    assert_true(account_stream(id, stream));
    account_cmd open = {.kind = ACCOUNT_CMD_OPEN, .id = id, .owner = "Test"};
    CHECK_RV(es_agg_execute(a, stream, account_decide, &open, NULL, NULL), ES_OK);
    if (amount > 0) {
        account_cmd dep = {.kind = ACCOUNT_CMD_DEPOSIT, .id = id, .amount = amount};
        CHECK_RV(es_agg_execute(a, stream, account_decide, &dep, NULL, NULL), ES_OK);
    }
}

static account load_account(es_agg *a, const char *id, es_agg_load_info *info)
{
    char stream[ACCOUNT_STREAM_BYTES];
    assert_true(account_stream(id, stream));
    account acc;
    CHECK_RV(es_agg_load(a, stream, &acc, info), ES_OK);
    return acc;
}

/* The last event of a stream (copied fields). */
static void last_event(const char *stream, uint8_t corr[16], uint64_t *position)
{
    es_read_options ro = {.from = ES_READ_END, .backward = true, .max_count = 1};
    es_read_iter *it = NULL;
    CHECK_RV(es_read_stream(other, stream, &ro, &it), ES_OK);
    const es_recorded_event *ev = NULL;
    CHECK_RV(es_read_next(it, &ev), ES_OK);
    assert_non_null(ev);
    assert_non_null(ev->correlation_id);
    memcpy(corr, ev->correlation_id, 16);
    *position = ev->position;
    es_read_destroy(it);
}

static void test_transfer_one_transaction(void **state)
{
    es_agg *a = make(&account_ops, 0, 8, true);
    open_with(a, "tx-a", 1000);
    open_with(a, "tx-b", 0);

    /* Someone deposits into TO while we decide: both expectations are
     * checked, so the first commit fails and the second succeeds. */
    interfering_transfer t = {
        .cmd = {.kind = ACCOUNT_CMD_TRANSFER, .id = "tx-a", .to = "tx-b", .amount = 300},
        .stream = "account-tx-b",
        .interfere = 1,
    };
    account fa, ta;
    es_agg_target tg[2] = {
        {.agg = a, .stream = "account-tx-a", .state_out = &fa},
        {.agg = a, .stream = "account-tx-b", .state_out = &ta},
    };
    es_agg_result res;
    CHECK_RV(es_agg_execute_many(tg, 2, transfer_decide, &t, &res), ES_OK);
    assert_int_equal(res.conflicts, 1);
    assert_int_equal(res.attempts, 2);
    assert_int_equal(res.n_events, 2);
    assert_int_equal(tg[0].n_events, 1);
    assert_int_equal(tg[1].n_events, 1);
    assert_int_equal(tg[0].revision, 2);
    assert_int_equal(tg[1].revision, 2); /* opened, +5, +300 */
    assert_int_equal(res.revision, 2);
    assert_int_equal(fa.balance, 700);
    assert_int_equal(ta.balance, 305);
    account la = load_account(a, "tx-a", NULL), lb = load_account(a, "tx-b", NULL);
    assert_memory_equal(&la, &fa, sizeof(la));
    assert_memory_equal(&lb, &ta, sizeof(lb));

    /* Both events: one correlation id, adjacent positions. */
    uint8_t c1[16], c2[16];
    uint64_t p1, p2;
    last_event("account-tx-a", c1, &p1);
    last_event("account-tx-b", c2, &p2);
    assert_memory_equal(c1, c2, 16);
    assert_int_equal(p2, p1 + 1);
    es_agg_destroy(a);
}

static void test_transfer_all_or_nothing(void **state)
{
    es_agg *a = make(&account_ops, 0, 1, true);
    open_with(a, "an-a", 1000);
    open_with(a, "an-b", 0);

    /* FROM changes under us and no retry is allowed: nothing is stored on
     * either side, and the conflict names FROM only. */
    interfering_transfer t = {
        .cmd = {.kind = ACCOUNT_CMD_TRANSFER, .id = "an-a", .to = "an-b", .amount = 300},
        .stream = "account-an-a",
        .interfere = 1,
    };
    es_agg_target tg[2] = {{.agg = a, .stream = "account-an-a"},
                           {.agg = a, .stream = "account-an-b"}};
    es_agg_result res;
    CHECK_RV(es_agg_execute_many(tg, 2, transfer_decide, &t, &res), ES_ERR_WRONG_EXPECTED_REVISION);
    size_t n = 0;
    const es_conflict *cf = es_client_conflicts(cl, &n);
    assert_int_equal(n, 1);
    assert_string_equal(cf[0].stream, "account-an-a");
    assert_int_equal(cf[0].expected.kind, ES_EXPECT_EXACT);
    assert_int_equal(cf[0].expected.revision, 1);
    assert_int_equal(cf[0].actual_revision, 2);
    assert_int_equal(last_revision("account-an-a"), 2); /* only the interfering +5 */
    assert_int_equal(last_revision("account-an-b"), 0);

    /* A refusal: nothing on either side. */
    t.interfere = 0;
    t.cmd.amount = 5000;
    CHECK_RV(es_agg_execute_many(tg, 2, transfer_decide, &t, &res), ES_ERR_REFUSED);
    assert_int_equal(es_agg_refusal_reason(a), ACCOUNT_REFUSED_INSUFFICIENT_FUNDS);
    assert_string_equal(es_agg_errmsg(a),
                        "insufficient funds: account an-a has 1005, cannot withdraw 5000");
    assert_int_equal(last_revision("account-an-a"), 2);
    assert_int_equal(last_revision("account-an-b"), 0);

    /* To a closed account: refused, FROM keeps its money. */
    es_agg_target tc[2] = {{.agg = a, .stream = "account-an-a"},
                           {.agg = a, .stream = "account-an-none"}};
    t.cmd.amount = 10;
    t.cmd.to = "an-none";
    CHECK_RV(es_agg_execute_many(tc, 2, transfer_decide, &t, &res), ES_ERR_REFUSED);
    assert_int_equal(es_agg_refusal_reason(a), ACCOUNT_REFUSED_NOT_OPEN);
    assert_int_equal(last_revision("account-an-a"), 2);

    /* The helper refuses a transfer to the same account. */
    CHECK_RV(account_transfer(a, "an-a", "an-a", 1, NULL, NULL, NULL, &res), ES_ERR_REFUSED);
    assert_int_equal(es_agg_refusal_reason(a), ACCOUNT_REFUSED_SAME_ACCOUNT);
    assert_int_equal(last_revision("account-an-a"), 2);
    es_agg_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_execute_and_load),
        cmocka_unit_test(test_refusals_and_decide_errors),
        cmocka_unit_test(test_empty_decision),
        cmocka_unit_test(test_conflicts_retried),
        cmocka_unit_test(test_retries_bounded),
        cmocka_unit_test(test_no_stream_expectation),
        cmocka_unit_test(test_snapshot_every),
        cmocka_unit_test(test_snapshot_formats),
        cmocka_unit_test(test_snapshot_on_demand),
        cmocka_unit_test(test_apply_refuses_foreign_event),
        cmocka_unit_test(test_transfer_one_transaction),
        cmocka_unit_test(test_transfer_all_or_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

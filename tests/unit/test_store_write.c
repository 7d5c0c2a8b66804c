/*
 * test_store_write — the store's appends and imports: expectations,
 * transactions of several appends, group commit, idempotency (retries, and
 * the same ids with other content), gapless positions, imports
 * (server/store/write.c), against its contract in store.h. Validation,
 * caps and a full disk: test_store_limits.c. Fixture and helpers:
 * store_fixture.h.
 */
#include "store_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "validate.h"

/* ========================================================== expectations == */

static void test_expect_any(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 2, "T");
    store_append_result r;
    /* Any on a missing stream creates it... */
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    assert_int_equal(r.first_revision, 0);
    assert_int_equal(r.last_revision, 1);
    assert_int_equal(r.first_position, 1);
    assert_int_equal(r.last_position, 2);
    assert_false(r.duplicate);
    evset_free(&e);
    /* ...and on an existing one appends; the revision field is ignored. */
    evset_make(&e, f, 1, "T");
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 12345, &e, &r));
    assert_int_equal(r.first_revision, 2);
    assert_int_equal(r.last_revision, 2);
    assert_int_equal(r.first_position, 3);
    evset_free(&e);
}

static void test_expect_no_stream(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 3, "T");
    store_append_result r;
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_NO_STREAM, 0, &e, &r));
    assert_int_equal(r.first_revision, 0);
    assert_int_equal(r.last_revision, 2);
    evset_free(&e);

    state_snap ss = snap_state(f->s);
    evset_make(&e, f, 2, "T");
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "s-1", STORE_EXPECT_NO_STREAM, 0, &e, &r));
    assert_true(r.actual_exists);
    assert_int_equal(r.actual_revision, 2);
    assert_int_equal(r.first_position, 0);
    assert_int_equal(r.last_position, 0);
    assert_same_state(f->s, ss);
    assert_int_equal(last_rev(f->s, "s-1"), 2);
    evset_free(&e);
}

static void test_expect_stream_exists(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 1, "T");
    store_append_result r;
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "s-1", STORE_EXPECT_STREAM_EXISTS, 0, &e, &r));
    assert_false(r.actual_exists);
    assert_int_equal(r.actual_revision, 0);
    assert_false(stream_exists(f->s, "s-1"));
    assert_int_equal(store_head(f->s), 0);

    add(f, "s-1", 4);
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_STREAM_EXISTS, 0, &e, &r));
    assert_int_equal(r.first_revision, 4);
    assert_int_equal(r.first_position, 5);
    evset_free(&e);
}

static void test_expect_exact(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 1, "T");
    store_append_result r;
    /* Exact 0 on a missing stream: fails (exact means "exists at"). */
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "s-1", STORE_EXPECT_EXACT, 0, &e, &r));
    assert_false(r.actual_exists);
    assert_false(stream_exists(f->s, "s-1"));
    evset_free(&e);

    add(f, "s-1", 5); /* revisions 0..4 */
    state_snap ss = snap_state(f->s);
    const uint64_t wrong[] = {0, 3, 5, 6, UINT64_MAX, UINT64_MAX - 1, (uint64_t)INT64_MAX + 1};
    for (size_t i = 0; i < ARRAY_LEN(wrong); i++) {
        evset_make(&e, f, 2, "T");
        memset(&r, 0xa5, sizeof r);
        assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
                  append_ev(f->s, "s-1", STORE_EXPECT_EXACT, wrong[i], &e, &r));
        assert_true(r.actual_exists);
        assert_int_equal(r.actual_revision, 4);
        assert_false(r.duplicate);
        assert_same_state(f->s, ss);
        evset_free(&e);
    }
    evset_make(&e, f, 2, "T");
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_EXACT, 4, &e, &r));
    assert_int_equal(r.first_revision, 5);
    assert_int_equal(r.last_revision, 6);
    assert_int_equal(r.first_position, 6);
    assert_int_equal(r.last_position, 7);
    evset_free(&e);
    /* The old revision is now wrong. */
    evset_make(&e, f, 1, "T");
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "s-1", STORE_EXPECT_EXACT, 4, &e, &r));
    assert_int_equal(r.actual_revision, 6);
    evset_free(&e);
}

static void test_expect_invalid_kind(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 1, "T");
    store_append_in a = mk_append("s-1", (store_expect)7, 0, &e);
    assert_rv(ES_ERR_INVALID_ARGUMENT, append_one(f->s, &a, NULL));
    assert_int_equal(store_head(f->s), 0);
    evset_free(&e);
}

/* ====================================================== batches and txns == */

static void test_batch_same_stream_twice(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e1, e2, e3, e4;
    evset_make(&e1, f, 3, "T");
    evset_make(&e2, f, 2, "T");
    store_append_in a1 = mk_append("s-1", STORE_EXPECT_NO_STREAM, 0, &e1);
    store_append_in a2 = mk_append("s-1", STORE_EXPECT_EXACT, 2, &e2); /* sees a1 */
    store_append_result r1, r2;
    store_request reqs[2] = {
        {.appends = &a1, .n_appends = 1, .results = &r1},
        {.appends = &a2, .n_appends = 1, .results = &r2},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 2));
    assert_rv(ES_OK, reqs[0].rv);
    assert_rv(ES_OK, reqs[1].rv);
    assert_int_equal(r1.first_revision, 0);
    assert_int_equal(r1.last_revision, 2);
    assert_int_equal(r2.first_revision, 3);
    assert_int_equal(r2.last_revision, 4);
    assert_int_equal(r2.first_position, r1.last_position + 1);
    assert_int_equal(last_rev(f->s, "s-1"), 4);

    /* no_stream twice in one batch: the second sees the first and fails. */
    evset_make(&e3, f, 1, "T");
    evset_make(&e4, f, 1, "T");
    store_append_in b1 = mk_append("s-2", STORE_EXPECT_NO_STREAM, 0, &e3);
    store_append_in b2 = mk_append("s-2", STORE_EXPECT_NO_STREAM, 0, &e4);
    store_request reqs2[2] = {
        {.appends = &b1, .n_appends = 1, .results = &r1},
        {.appends = &b2, .n_appends = 1, .results = &r2},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs2, 2));
    assert_rv(ES_OK, reqs2[0].rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, reqs2[1].rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, r2.rv);
    assert_true(r2.actual_exists);
    assert_int_equal(r2.actual_revision, 0);
    assert_int_equal(last_rev(f->s, "s-2"), 0);
    assert_int_equal(store_head(f->s), 6);
    assert_check_clean(f->s);
    evset_free(&e1);
    evset_free(&e2);
    evset_free(&e3);
    evset_free(&e4);
}

static void test_txn_multi_stream_commits_atomically(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "account-1", 1);
    add(f, "account-2", 1);
    evset w, d;
    evset_make(&w, f, 1, "MoneyWithdrawn");
    evset_make(&d, f, 2, "MoneyDeposited");
    store_append_in ap[2] = {
        mk_append("account-1", STORE_EXPECT_EXACT, 0, &w),
        mk_append("account-2", STORE_EXPECT_EXACT, 0, &d),
    };
    store_append_result res[2];
    store_request r = {.appends = ap, .n_appends = 2, .results = res};
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_OK, r.rv);
    assert_rv(ES_OK, res[0].rv);
    assert_rv(ES_OK, res[1].rv);
    assert_int_equal(res[0].first_position, 3);
    assert_int_equal(res[0].last_position, 3);
    assert_int_equal(res[0].first_revision, 1);
    assert_int_equal(res[1].first_position, 4);
    assert_int_equal(res[1].last_position, 5);
    assert_int_equal(res[1].first_revision, 1);
    assert_int_equal(res[1].last_revision, 2);
    assert_false(r.synced); /* sync off */
    assert_check_clean(f->s);
    evset_free(&w);
    evset_free(&d);
}

static void test_txn_one_failing_check(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "account-1", 2);
    add(f, "account-2", 3);
    state_snap ss = snap_state(f->s);
    evset e0, e1, e2, x, y;
    evset_make(&e0, f, 1, "T");
    evset_make(&e1, f, 1, "T");
    evset_make(&e2, f, 1, "T");
    evset_make(&x, f, 2, "T");
    evset_make(&y, f, 1, "T");
    store_append_in ap[3] = {
        mk_append("account-1", STORE_EXPECT_EXACT, 1, &e0), /* right */
        mk_append("account-2", STORE_EXPECT_EXACT, 1, &e1), /* wrong: at 2 */
        mk_append("account-3", STORE_EXPECT_NO_STREAM, 0, &e2),
    };
    store_append_in before = mk_append("other-1", STORE_EXPECT_ANY, 0, &x);
    store_append_in after = mk_append("other-2", STORE_EXPECT_NO_STREAM, 0, &y);
    store_append_result res[3], rb, ra;
    memset(res, 0x5a, sizeof res);
    store_request reqs[3] = {
        {.appends = &before, .n_appends = 1, .results = &rb},
        {.appends = ap, .n_appends = 3, .results = res},
        {.appends = &after, .n_appends = 1, .results = &ra},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 3));
    assert_rv(ES_OK, reqs[0].rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, reqs[1].rv);
    assert_rv(ES_OK, reqs[2].rv);
    assert_rv(ES_OK, res[0].rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, res[1].rv);
    assert_rv(ES_OK, res[2].rv);
    assert_true(res[1].actual_exists);
    assert_int_equal(res[1].actual_revision, 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].first_position, 0);
        assert_int_equal(res[i].last_position, 0);
        assert_false(res[i].duplicate);
    }
    /* The transaction wrote nothing; the requests around it committed with
     * gapless positions. */
    assert_int_equal(last_rev(f->s, "account-1"), 1);
    assert_int_equal(last_rev(f->s, "account-2"), 2);
    assert_false(stream_exists(f->s, "account-3"));
    assert_int_equal(rb.first_position, ss.head + 1);
    assert_int_equal(rb.last_position, ss.head + 2);
    assert_int_equal(ra.first_position, ss.head + 3);
    assert_int_equal(store_head(f->s), ss.head + 3);
    assert_check_clean(f->s);
    evset_free(&e0);
    evset_free(&e1);
    evset_free(&e2);
    evset_free(&x);
    evset_free(&y);
}

static void test_txn_two_failing_checks(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "a-1", 2);
    add(f, "a-2", 1);
    state_snap ss = snap_state(f->s);
    evset e0, e1, e2, e3;
    evset_make(&e0, f, 1, "T");
    evset_make(&e1, f, 1, "T");
    evset_make(&e2, f, 1, "T");
    evset_make(&e3, f, 1, "T");
    store_append_in ap[4] = {
        mk_append("a-1", STORE_EXPECT_NO_STREAM, 0, &e0),     /* wrong: exists at 1 */
        mk_append("a-2", STORE_EXPECT_EXACT, 0, &e1),         /* right */
        mk_append("a-3", STORE_EXPECT_STREAM_EXISTS, 0, &e2), /* wrong: missing */
        mk_append("a-4", STORE_EXPECT_ANY, 0, &e3),
    };
    store_append_result res[4];
    store_request r = {.appends = ap, .n_appends = 4, .results = res};
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, r.rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, res[0].rv);
    assert_true(res[0].actual_exists);
    assert_int_equal(res[0].actual_revision, 1);
    assert_rv(ES_OK, res[1].rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, res[2].rv);
    assert_false(res[2].actual_exists);
    assert_rv(ES_OK, res[3].rv);
    assert_same_state(f->s, ss);
    assert_false(stream_exists(f->s, "a-3"));
    assert_false(stream_exists(f->s, "a-4"));
    assert_int_equal(last_rev(f->s, "a-2"), 0);
    evset_free(&e0);
    evset_free(&e1);
    evset_free(&e2);
    evset_free(&e3);
}

static void test_txn_large_and_invalid_shapes(void **state)
{
    fx *f = *state;
    fx_open(f);
    /* More than 8 appends (the plan array goes to the heap). */
    enum { N = 20 };
    evset e[N];
    store_append_in ap[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        evset_make(&e[i], f, 2, "T");
        snprintf(names[i], sizeof names[i], "t-%d", i);
        ap[i] = mk_append(names[i], STORE_EXPECT_NO_STREAM, 0, &e[i]);
    }
    store_append_result res[N];
    store_request r = {.appends = ap, .n_appends = N, .results = res};
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_OK, r.rv);
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].first_position, 2 * i + 1);
        assert_int_equal(res[i].last_revision, 1);
    }
    /* The same with one failing check in the middle: nothing. */
    state_snap ss = snap_state(f->s);
    evset more[N];
    for (int i = 0; i < N; i++) {
        evset_make(&more[i], f, 1, "T");
        ap[i] = mk_append(names[i], STORE_EXPECT_EXACT, i == 13 ? 0 : 1, &more[i]);
    }
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, r.rv);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, res[13].rv);
    assert_int_equal(res[13].actual_revision, 1);
    assert_same_state(f->s, ss);

    /* One stream twice in one transaction: invalid. */
    ap[1] = mk_append(names[0], STORE_EXPECT_ANY, 0, &more[1]);
    r.n_appends = 2;
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, r.rv);
    /* No appends, or more than the cap. */
    r.n_appends = 0;
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, r.rv);
    store_append_in *many = calloc(STORE_MAX_APPENDS_PER_TXN + 1, sizeof *many);
    store_append_result *mres = calloc(STORE_MAX_APPENDS_PER_TXN + 1, sizeof *mres);
    assert_non_null(many);
    assert_non_null(mres);
    for (size_t i = 0; i <= STORE_MAX_APPENDS_PER_TXN; i++) {
        many[i] = ap[0];
    }
    store_request big = {
        .appends = many, .n_appends = STORE_MAX_APPENDS_PER_TXN + 1, .results = mres};
    assert_rv(ES_OK, store_append_batch(f->s, &big, 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, big.rv);
    free(many);
    free(mres);
    /* A transaction with one invalid stream id: all of it refused. */
    ap[0] = mk_append("fresh-1", STORE_EXPECT_ANY, 0, &more[0]);
    ap[1] = mk_append("bad\x01", STORE_EXPECT_ANY, 0, &more[1]);
    r.n_appends = 2;
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_ERR_INVALID_STREAM_ID, r.rv);
    assert_false(stream_exists(f->s, "fresh-1"));
    assert_same_state(f->s, ss);
    /* An empty batch is fine. */
    assert_rv(ES_OK, store_append_batch(f->s, NULL, 0));
    assert_same_state(f->s, ss);
    for (int i = 0; i < N; i++) {
        evset_free(&e[i]);
        evset_free(&more[i]);
    }
    assert_check_clean(f->s);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The largest transaction: 1024 appends. Duplicate ids are found wherever
 * they are, and checking them does not take time quadratic in the events
 * (that let one 100,000-event request stall the writer for 30 s). */
static void test_txn_max_appends_duplicate_ids(void **state)
{
    fx *f = *state;
    fx_open(f);
    enum { NA = STORE_MAX_APPENDS_PER_TXN, NE = 100 };
    store_append_in *ap = calloc(NA, sizeof *ap);
    store_append_result *res = calloc(NA, sizeof *res);
    evset *e = calloc(NA, sizeof *e);
    char(*names)[16] = calloc(NA, sizeof *names);
    assert_non_null(ap);
    assert_non_null(res);
    assert_non_null(e);
    assert_non_null(names);
    for (size_t i = 0; i < NA; i++) {
        evset_make(&e[i], f, NE, "T");
        snprintf(names[i], sizeof names[i], "m-%zu", i);
        ap[i] = mk_append(names[i], STORE_EXPECT_NO_STREAM, 0, &e[i]);
    }
    store_request r = {.appends = ap, .n_appends = NA, .results = res};
    /* The last id of the last append repeats the first of the first. */
    uint8_t saved[16];
    memcpy(saved, e[NA - 1].ids[NE - 1], 16);
    memcpy(e[NA - 1].ids[NE - 1], e[0].ids[0], 16);
    double t0 = mono_s();
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    double secs = mono_s() - t0;
    assert_rv(ES_ERR_INVALID_EVENT_ID, r.rv);
    assert_int_equal(store_head(f->s), 0);
    if (secs > 5.0) {
        fail_msg("validating %d events took %.1f s", NA * NE, secs);
    }
    /* Neighbours in the middle. */
    memcpy(e[NA - 1].ids[NE - 1], saved, 16);
    memcpy(e[511].ids[7], e[511].ids[8], 16);
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_ERR_INVALID_EVENT_ID, r.rv);
    /* Ids that differ only in their last byte are distinct. */
    set_id(e[511].ids[7], 1000000000);
    set_id(e[511].ids[8], 1000000001);
    t0 = mono_s();
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    secs = mono_s() - t0;
    assert_rv(ES_OK, r.rv);
    assert_int_equal(store_head(f->s), (uint64_t)NA * NE);
    for (size_t i = 0; i < NA; i++) {
        assert_int_equal(res[i].first_position, i * NE + 1);
        assert_int_equal(res[i].last_revision, NE - 1);
    }
    if (secs > 20.0) {
        fail_msg("appending %d events in one transaction took %.1f s", NA * NE, secs);
    }
    /* Retried as a whole: a duplicate, nothing new. */
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_OK, r.rv);
    assert_true(res[NA - 1].duplicate);
    assert_int_equal(store_head(f->s), (uint64_t)NA * NE);
    for (size_t i = 0; i < NA; i++) {
        evset_free(&e[i]);
    }
    free(ap);
    free(res);
    free(e);
    free(names);
    assert_check_clean(f->s);
}

static void test_batch_middle_request_invalid(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "s-0", 1);
    enum { N = 5 };
    evset e[N];
    store_append_in ap[N];
    store_append_result res[N];
    store_request reqs[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        evset_make(&e[i], f, 3, i == 2 ? "" : "T"); /* request 2: empty event type */
        snprintf(names[i], sizeof names[i], "s-%d", i);
        ap[i] = mk_append(names[i], STORE_EXPECT_ANY, 0, &e[i]);
        reqs[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
    }
    assert_rv(ES_OK, store_append_batch(f->s, reqs, N));
    uint64_t next = 2;
    for (int i = 0; i < N; i++) {
        if (i == 2) {
            assert_rv(ES_ERR_INVALID_EVENT_TYPE, reqs[i].rv);
            assert_rv(ES_ERR_INVALID_EVENT_TYPE, res[i].rv);
            assert_false(stream_exists(f->s, names[i]));
            continue;
        }
        assert_rv(ES_OK, reqs[i].rv);
        assert_int_equal(res[i].first_position, next);
        assert_int_equal(res[i].last_position, next + 2);
        next += 3;
    }
    assert_int_equal(store_head(f->s), next - 1);
    assert_int_equal(store_head(f->s), 13);
    assert_int_equal(last_rev(f->s, "s-0"), 3);
    assert_check_clean(f->s);
    for (int i = 0; i < N; i++) {
        evset_free(&e[i]);
    }
}

/* =========================================================== idempotency == */

static void test_idempotent_retry(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "other-1", 2);
    evset e;
    evset_make(&e, f, 3, "T");
    store_append_result r1, r2;
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_NO_STREAM, 0, &e, &r1));
    assert_false(r1.duplicate);
    add(f, "other-1", 2);
    state_snap ss = snap_state(f->s);
    /* The retry carries the original expectation, which no longer holds:
     * a retry is recognised by its ids before the check. */
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_NO_STREAM, 0, &e, &r2));
    assert_true(r2.duplicate);
    assert_int_equal(r2.first_revision, r1.first_revision);
    assert_int_equal(r2.last_revision, r1.last_revision);
    assert_int_equal(r2.first_position, r1.first_position);
    assert_int_equal(r2.last_position, r1.last_position);
    assert_int_equal(r2.first_position, 3);
    assert_int_equal(r2.last_position, 5);
    assert_same_state(f->s, ss);
    /* With any other expectation too, and again after a reopen (permanent). */
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_EXACT, 999, &e, &r2));
    assert_true(r2.duplicate);
    fx_reopen(f);
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r2));
    assert_true(r2.duplicate);
    assert_int_equal(r2.first_position, 3);
    assert_same_state(f->s, ss);
    assert_int_equal(last_rev(f->s, "s-1"), 2);

    /* A retry inside the batch of the original. */
    evset e2;
    evset_make(&e2, f, 2, "T");
    store_append_in a = mk_append("s-2", STORE_EXPECT_NO_STREAM, 0, &e2);
    store_append_result ra, rb;
    store_request reqs[2] = {
        {.appends = &a, .n_appends = 1, .results = &ra},
        {.appends = &a, .n_appends = 1, .results = &rb},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 2));
    assert_rv(ES_OK, reqs[0].rv);
    assert_rv(ES_OK, reqs[1].rv);
    assert_false(ra.duplicate);
    assert_true(rb.duplicate);
    assert_int_equal(rb.first_position, ra.first_position);
    assert_int_equal(rb.last_position, ra.last_position);
    assert_int_equal(store_head(f->s), ss.head + 2);
    assert_int_equal(last_rev(f->s, "s-2"), 1);

    /* A retried transaction. */
    evset t1, t2;
    evset_make(&t1, f, 1, "T");
    evset_make(&t2, f, 2, "T");
    store_append_in ap[2] = {
        mk_append("s-1", STORE_EXPECT_EXACT, 2, &t1),
        mk_append("s-3", STORE_EXPECT_NO_STREAM, 0, &t2),
    };
    store_append_result tr[2], tr2[2];
    store_request tx = {.appends = ap, .n_appends = 2, .results = tr};
    assert_rv(ES_OK, store_append_batch(f->s, &tx, 1));
    assert_rv(ES_OK, tx.rv);
    ss = snap_state(f->s);
    tx.results = tr2;
    assert_rv(ES_OK, store_append_batch(f->s, &tx, 1));
    assert_rv(ES_OK, tx.rv);
    for (int i = 0; i < 2; i++) {
        assert_true(tr2[i].duplicate);
        assert_int_equal(tr2[i].first_position, tr[i].first_position);
        assert_int_equal(tr2[i].last_position, tr[i].last_position);
        assert_int_equal(tr2[i].first_revision, tr[i].first_revision);
        assert_int_equal(tr2[i].last_revision, tr[i].last_revision);
    }
    assert_same_state(f->s, ss);
    assert_check_clean(f->s);
    evset_free(&e);
    evset_free(&e2);
    evset_free(&t1);
    evset_free(&t2);
}

static void test_idempotency_conflicts(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 2, "T"); /* ids A, B */
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, NULL));
    add(f, "s-1", 1);
    add(f, "s-2", 1);
    state_snap ss = snap_state(f->s);
    store_append_result r;

    /* Partial: A, B stored, C new. */
    evset abc;
    evset_make(&abc, f, 3, "T");
    memcpy(abc.ids[0], e.ids[0], 16);
    memcpy(abc.ids[1], e.ids[1], 16);
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &abc, &r));
    assert_same_state(f->s, ss);
    /* C new first, then A. */
    memcpy(abc.ids[0], abc.ids[2], 16);
    memcpy(abc.ids[1], e.ids[0], 16);
    abc.n = 2;
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &abc, &r));
    /* A then C new. */
    memcpy(abc.ids[0], e.ids[0], 16);
    memcpy(abc.ids[1], abc.ids[2], 16);
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &abc, &r));
    /* B then A: stored, but not at these revisions. */
    memcpy(abc.ids[0], e.ids[1], 16);
    memcpy(abc.ids[1], e.ids[0], 16);
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &abc, &r));
    /* Ids stored in another stream (existing, and missing). */
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-2", STORE_EXPECT_ANY, 0, &e, &r));
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-9", STORE_EXPECT_ANY, 0, &e, &r));
    assert_false(stream_exists(f->s, "s-9"));
    assert_same_state(f->s, ss);

    /* A transaction of which one append is stored and one is new. */
    evset fresh;
    evset_make(&fresh, f, 1, "T");
    store_append_in ap[2] = {
        mk_append("s-1", STORE_EXPECT_ANY, 0, &e),
        mk_append("s-3", STORE_EXPECT_ANY, 0, &fresh),
    };
    store_append_result res[2];
    store_request tx = {.appends = ap, .n_appends = 2, .results = res};
    assert_rv(ES_OK, store_append_batch(f->s, &tx, 1));
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, tx.rv);
    assert_false(stream_exists(f->s, "s-3"));
    assert_same_state(f->s, ss);

    /* Ids first stored by an earlier request of the same batch, retried
     * against another stream. */
    evset g;
    evset_make(&g, f, 1, "T");
    store_append_in a1 = mk_append("s-4", STORE_EXPECT_ANY, 0, &g);
    store_append_in a2 = mk_append("s-5", STORE_EXPECT_ANY, 0, &g);
    store_append_result r1, r2;
    store_request reqs[2] = {
        {.appends = &a1, .n_appends = 1, .results = &r1},
        {.appends = &a2, .n_appends = 1, .results = &r2},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 2));
    assert_rv(ES_OK, reqs[0].rv);
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, reqs[1].rv);
    assert_false(stream_exists(f->s, "s-5"));
    assert_int_equal(store_head(f->s), ss.head + 1);
    assert_check_clean(f->s);
    evset_free(&e);
    evset_free(&abc);
    evset_free(&fresh);
    evset_free(&g);
}

/* The stored data of the event at `rev` of a stream equals `want`. */
static void assert_stored_data(store *s, const char *stream, uint64_t rev, const char *want)
{
    coll c = {0};
    read_stream_all(s, stream, 0, &c);
    assert_true(rev < c.n);
    assert_true(bin_is_str(c.ev[rev]->data, want));
    coll_free(&c);
}

static void test_idempotency_same_ids_other_content(void **state)
{
    fx *f = *state;
    fx_open(f);
    static const uint8_t corr[16] = {0xc0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    evset e;
    evset_make(&e, f, 2, "T");
    e.in[1].metadata = U8("m");
    e.in[1].metadata_len = 1;
    e.in[1].content_type = U8("text/plain");
    e.in[1].content_type_len = 10;
    e.in[1].correlation_id = corr;
    e.in[1].correlation_id_len = 16;
    store_append_result r1, r;
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_NO_STREAM, 0, &e, &r1));
    char data1[40];
    snprintf(data1, sizeof data1, "%s", e.data[1]);
    state_snap ss = snap_state(f->s);

    /* The same ids and the same content: a duplicate, as before. */
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_NO_STREAM, 0, &e, &r));
    assert_true(r.duplicate);
    assert_int_equal(r.first_position, r1.first_position);
    assert_int_equal(r.last_position, r1.last_position);

    /* The same ids with other content, one field at a time: a conflict, and
     * nothing written -- the stored event keeps its content. */
    e.in[1].data = U8("other data");
    e.in[1].data_len = 10;
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    assert_false(r.duplicate);
    assert_same_state(f->s, ss);
    assert_stored_data(f->s, "s-1", 1, data1);
    e.in[1].data = U8(e.data[1]);
    e.in[1].data_len = strlen(e.data[1]);
    e.in[1].data_len--; /* a prefix of the stored data */
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    e.in[1].data_len++;
    e.in[0].type = U8("U");
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    e.in[0].type = U8("T");
    e.in[1].metadata_len = 0;
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    e.in[1].metadata_len = 1;
    e.in[1].content_type = U8("text/html!");
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    e.in[1].content_type = U8("text/plain");
    e.in[1].correlation_id_len = 0;
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    e.in[1].correlation_id_len = 16;
    e.in[0].causation_id = corr;
    e.in[0].causation_id_len = 16;
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    e.in[0].causation_id_len = 0;
    e.in[0].causation_id = NULL;
    assert_same_state(f->s, ss);
    /* Back to the original content: a duplicate again. */
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    assert_true(r.duplicate);

    /* Inside one batch: the first request writes, the second carries the
     * same ids with other data and is refused alone. */
    evset g;
    evset_make(&g, f, 1, "T");
    store_append_in a1 = mk_append("s-2", STORE_EXPECT_ANY, 0, &g);
    store_event_in other = g.in[0];
    other.data = U8("changed");
    other.data_len = 7;
    store_append_in a2 = a1;
    a2.events = &other;
    store_append_result ra, rb;
    store_request reqs[2] = {
        {.appends = &a1, .n_appends = 1, .results = &ra},
        {.appends = &a2, .n_appends = 1, .results = &rb},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 2));
    assert_rv(ES_OK, reqs[0].rv);
    assert_false(ra.duplicate);
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT, reqs[1].rv);
    assert_int_equal(store_head(f->s), ss.head + 1);
    assert_stored_data(f->s, "s-2", 0, g.data[0]);
    assert_check_clean(f->s);
    evset_free(&e);
    evset_free(&g);
}

static void test_duplicate_ids_in_one_append(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 4, "T");
    memcpy(e.ids[3], e.ids[1], 16);
    assert_rv(ES_ERR_INVALID_EVENT_ID, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, NULL));
    assert_false(stream_exists(f->s, "s-1"));
    /* Across the appends of one transaction. */
    evset g;
    evset_make(&g, f, 2, "T");
    memcpy(g.ids[1], e.ids[0], 16);
    e.n = 2;
    store_append_in ap[2] = {
        mk_append("s-1", STORE_EXPECT_ANY, 0, &e),
        mk_append("s-2", STORE_EXPECT_ANY, 0, &g),
    };
    store_append_result res[2];
    store_request tx = {.appends = ap, .n_appends = 2, .results = res};
    assert_rv(ES_OK, store_append_batch(f->s, &tx, 1));
    assert_rv(ES_ERR_INVALID_EVENT_ID, tx.rv);
    /* A missing id. */
    e.in[1].id = NULL;
    assert_rv(ES_ERR_INVALID_EVENT_ID, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, NULL));
    assert_int_equal(store_head(f->s), 0);
    evset_free(&e);
    evset_free(&g);
}

/* ====================================================== positions/revs == */

static void test_positions_gapless_revisions_contiguous(void **state)
{
    fx *f = *state;
    fx_open(f);
    enum { STREAMS = 37, BATCHES = 60 };
    uint64_t counts[STREAMS] = {0};
    uint64_t rng = 12345;
    uint64_t total = 0;
    for (int b = 0; b < BATCHES; b++) {
        size_t nreq = 1 + (size_t)(b % 7);
        store_request reqs[8];
        store_append_in ap[8];
        store_append_result res[8];
        evset e[8];
        int sid[8];
        char names[8][16];
        for (size_t i = 0; i < nreq; i++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            sid[i] = (int)((rng >> 33) % STREAMS);
            snprintf(names[i], sizeof names[i], "st-%d", sid[i]);
            evset_make(&e[i], f, 1 + (size_t)((rng >> 20) % 5), (rng >> 40) & 1 ? "A" : "B");
            /* Alternate between exact (computed from our own counts, which
             * include the earlier requests of this batch) and any. */
            bool exact = counts[sid[i]] > 0 && (i % 2 == 0);
            ap[i] = mk_append(names[i], exact ? STORE_EXPECT_EXACT : STORE_EXPECT_ANY,
                              counts[sid[i]] - 1, &e[i]);
            reqs[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
            counts[sid[i]] += e[i].n;
        }
        assert_rv(ES_OK, store_append_batch(f->s, reqs, nreq));
        for (size_t i = 0; i < nreq; i++) {
            assert_rv(ES_OK, reqs[i].rv);
            assert_int_equal(res[i].first_position, total + 1);
            total += e[i].n;
            assert_int_equal(res[i].last_position, total);
            assert_int_equal(res[i].last_revision - res[i].first_revision + 1, e[i].n);
            evset_free(&e[i]);
        }
        assert_int_equal(store_head(f->s), total);
    }
    /* The global log: positions 1..total; each stream's revisions 0,1,2... */
    coll c = {0};
    read_all_fwd(f->s, NULL, 50, &c);
    assert_int_equal(c.n, total);
    uint64_t seen[STREAMS] = {0};
    for (size_t i = 0; i < c.n; i++) {
        assert_int_equal(c.ev[i]->position, i + 1);
        int id = -1;
        char sname[32] = "";
        assert_true(c.ev[i]->stream.len < sizeof sname);
        memcpy(sname, c.ev[i]->stream.data, c.ev[i]->stream.len);
        assert_int_equal(sscanf(sname, "st-%d", &id), 1);
        assert_true(id >= 0 && id < STREAMS);
        assert_int_equal(c.ev[i]->revision, seen[id]);
        seen[id]++;
    }
    coll_free(&c);
    uint64_t streams = 0;
    for (int i = 0; i < STREAMS; i++) {
        assert_int_equal(seen[i], counts[i]);
        if (!counts[i]) {
            continue;
        }
        streams++;
        char name[16];
        snprintf(name, sizeof name, "st-%d", i);
        coll sc = {0};
        read_stream_all(f->s, name, 7, &sc);
        assert_int_equal(sc.n, counts[i]);
        for (size_t k = 0; k < sc.n; k++) {
            assert_int_equal(sc.ev[k]->revision, k);
            if (k) {
                assert_true(sc.ev[k]->position > sc.ev[k - 1]->position);
            }
        }
        store_stream_info si;
        assert_rv(ES_OK, store_stream_info_get(f->s, U8(name), strlen(name), &si));
        assert_int_equal(si.event_count, counts[i]);
        assert_int_equal(si.first_position, sc.ev[0]->position);
        assert_int_equal(si.last_position, sc.ev[sc.n - 1]->position);
        coll_free(&sc);
    }
    store_stats st;
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_int_equal(st.stream_count, streams);
    assert_int_equal(st.event_count, total);
    assert_check_clean(f->s);
}

typedef struct rev_check {
    uint64_t next; /* the revision expected next */
    bool backward;
    uint64_t n;
    uint64_t last_pos;
} rev_check;

static int rev_visit(void *ctx, const store_record *rec)
{
    rev_check *c = ctx;
    Es__V1__RecordedEvent *e = es__v1__recorded_event__unpack(NULL, rec->len, rec->bytes);
    assert_non_null(e);
    if (e->revision != c->next) {
        fail_msg("revision %llu, expected %llu", (unsigned long long)e->revision,
                 (unsigned long long)c->next);
    }
    if (c->n) {
        assert_true(c->backward ? rec->position < c->last_pos : rec->position > c->last_pos);
    }
    c->last_pos = rec->position;
    c->n++;
    c->next = c->backward ? c->next - 1 : c->next + 1;
    es__v1__recorded_event__free_unpacked(e, NULL);
    return 0;
}

static void test_revision_order_across_byte_boundaries(void **state)
{
    fx *f = *state;
    fx_open(f);
    /* 70,000 events in one stream, in batches; another stream interleaved so
     * the stream's positions are not simply its revisions + 1. */
    const uint64_t total = 70000;
    uint64_t done = 0;
    while (done < total) {
        size_t n = total - done < 9000 ? (size_t)(total - done) : 9000;
        evset e;
        evset_make(&e, f, n, "Tick");
        store_append_result r;
        assert_rv(ES_OK, append_ev(f->s, "big-1", STORE_EXPECT_ANY, 0, &e, &r));
        assert_int_equal(r.first_revision, done);
        assert_int_equal(r.last_revision, done + n - 1);
        evset_free(&e);
        done += n;
        add(f, "small-1", 1);
    }
    assert_int_equal(last_rev(f->s, "big-1"), total - 1);
    const struct {
        uint64_t from;
        bool backward;
        uint32_t limit;
    } cases[] = {
        {250, false, 10},   {260, true, 10},        {65530, false, 10}, {65540, true, 10},
        {0, false, 300},    {300, true, 0},         {65000, false, 0},  {66000, true, 2000},
        {69990, false, 50}, {UINT64_MAX, true, 20},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint64_t start = cases[i].from == UINT64_MAX ? total - 1 : cases[i].from;
        rev_check rc = {.next = start, .backward = cases[i].backward};
        store_page pg;
        assert_rv(ES_OK, store_read_stream(f->s, U8("big-1"), 5, cases[i].from, cases[i].backward,
                                           cases[i].limit, rev_visit, &rc, &pg));
        uint32_t lim = cases[i].limit ? cases[i].limit : STORE_DEFAULT_MAX_PAGE;
        uint64_t avail = cases[i].backward ? start + 1 : total - start;
        uint64_t want = avail < lim ? avail : lim;
        assert_int_equal(rc.n, want);
        assert_int_equal(pg.returned, want);
        if (cases[i].backward && want == start + 1) {
            assert_true(pg.end); /* reached revision 0 */
            assert_int_equal(pg.next, 0);
        } else {
            assert_int_equal(pg.next, rc.next);
            assert_int_equal(pg.end, !cases[i].backward && rc.next == total);
        }
    }
    /* Whole stream forward and backward, page by page. */
    rev_check fw = {.next = 0};
    uint64_t from = 0;
    store_page pg;
    do {
        assert_rv(ES_OK,
                  store_read_stream(f->s, U8("big-1"), 5, from, false, 0, rev_visit, &fw, &pg));
        from = pg.next;
    } while (!pg.end);
    assert_int_equal(fw.n, total);
    rev_check bw = {.next = total - 1, .backward = true};
    from = UINT64_MAX;
    do {
        assert_rv(ES_OK,
                  store_read_stream(f->s, U8("big-1"), 5, from, true, 3000, rev_visit, &bw, &pg));
        from = pg.next;
    } while (!pg.end);
    assert_int_equal(bw.n, total);
    assert_check_clean(f->s);
}

/* ================================================================ imports == */

typedef struct rawset {
    size_t n;
    uint8_t *bytes[16];
    size_t len[16];
} rawset;

static int raw_visit(void *ctx, const store_record *rec)
{
    rawset *r = ctx;
    assert_true(r->n < 16);
    r->bytes[r->n] = malloc(rec->len);
    assert_non_null(r->bytes[r->n]);
    memcpy(r->bytes[r->n], rec->bytes, rec->len);
    r->len[r->n] = rec->len;
    r->n++;
    return 0;
}

static void rawset_free(rawset *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->bytes[i]);
    }
}

static es_err import_range(store *s, const rawset *r, size_t from, size_t n, size_t *bad)
{
    store_import_in in[16];
    for (size_t i = 0; i < n; i++) {
        in[i].record = r->bytes[from + i];
        in[i].len = r->len[from + i];
    }
    char msg[256];
    return store_import_batch(s, in, n, bad, msg, sizeof msg);
}

/* A follower's store rebuilt from a primary's records equals it. */
static void test_import_copies_a_store(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "a-1", 3);
    add(f, "b-1", 2);
    add(f, "a-1", 2);
    rawset raw = {0};
    store_page page;
    assert_rv(ES_OK, store_read_all(f->s, NULL, 1, false, 0, raw_visit, &raw, &page));
    assert_int_equal(raw.n, 7);

    char fpath[700];
    snprintf(fpath, sizeof fpath, "%s/follower", f->root);
    store_options o = {.path = fpath, .map_size = TEST_MAP_SIZE, .follower = true};
    store *fs = open_opts(&o);
    size_t bad;
    assert_rv(ES_OK, import_range(fs, &raw, 0, 4, &bad));
    assert_int_equal(store_head(fs), 4);
    /* All or nothing: a garbled record after a good one stores neither. */
    uint8_t junk[] = {0xff, 0xff, 0xff};
    store_import_in two[2] = {{raw.bytes[4], raw.len[4]}, {junk, sizeof junk}};
    char msg[256];
    assert_rv(ES_ERR_MALFORMED, store_import_batch(fs, two, 2, &bad, msg, sizeof msg));
    assert_int_equal(bad, 1);
    assert_int_equal(store_head(fs), 4);
    /* A repeat and a gap are refused. */
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, import_range(fs, &raw, 3, 1, &bad));
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, import_range(fs, &raw, 5, 1, &bad));
    assert_int_equal(bad, 0);
    assert_rv(ES_OK, import_range(fs, &raw, 4, 3, &bad));
    assert_int_equal(store_head(fs), 7);

    /* Byte for byte, and the same stream records. */
    rawset copy = {0};
    assert_rv(ES_OK, store_read_all(fs, NULL, 1, false, 0, raw_visit, &copy, &page));
    assert_int_equal(copy.n, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(copy.len[i], raw.len[i]);
        assert_memory_equal(copy.bytes[i], raw.bytes[i], raw.len[i]);
    }
    store_stream_info a, b;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("a-1"), 3, &a));
    assert_rv(ES_OK, store_stream_info_get(fs, U8("a-1"), 3, &b));
    assert_int_equal(a.last_revision, b.last_revision);
    assert_int_equal(a.first_position, b.first_position);
    assert_int_equal(a.last_position, b.last_position);
    assert_int_equal(a.created_us, b.created_us);
    assert_int_equal(a.updated_us, b.updated_us);
    store_check_report rep;
    assert_rv(ES_OK, store_check(fs, &rep, NULL, NULL));
    assert_int_equal(rep.events_checked, 7);

    /* A record from before the head is a repeat, never stored twice. */
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION, import_range(fs, &raw, 0, 1, &bad));

    /* A follower refuses appends and snapshot saves. */
    evset e;
    evset_make(&e, f, 1, "T");
    assert_rv(ES_ERR_FOLLOWER, append_ev(fs, "c-1", STORE_EXPECT_ANY, 0, &e, NULL));
    evset_free(&e);
    assert_rv(ES_ERR_FOLLOWER, store_save_snapshot(fs, U8("a-1"), 3, 1, 1, U8("x"), 1));
    store_close(fs);
    rawset_free(&raw);
    rawset_free(&copy);
}

/* ================================================================== main == */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_expect_any),
        T(test_expect_no_stream),
        T(test_expect_stream_exists),
        T(test_expect_exact),
        T(test_expect_invalid_kind),
        T(test_batch_same_stream_twice),
        T(test_txn_multi_stream_commits_atomically),
        T(test_txn_one_failing_check),
        T(test_txn_two_failing_checks),
        T(test_txn_large_and_invalid_shapes),
        T(test_txn_max_appends_duplicate_ids),
        T(test_batch_middle_request_invalid),
        T(test_idempotent_retry),
        T(test_idempotency_conflicts),
        T(test_idempotency_same_ids_other_content),
        T(test_duplicate_ids_in_one_append),
        T(test_positions_gapless_revisions_contiguous),
        T(test_revision_order_across_byte_boundaries),
        T(test_import_copies_a_store),
    };
    return cmocka_run_group_tests_name("store_write", tests, NULL, NULL);
}

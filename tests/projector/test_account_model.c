/*
 * test_account_model.c — unit tests of es-account-view's read model
 * (client/examples/account-view/model.c) through the projector, without a
 * server: opens, deposits, withdrawals and transfers fed as batches, then
 * the queries the HTTP side runs.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "esd_proc.h"
#include "model.h"

typedef struct fixture {
    char dir[256];
    es_projector *p;
    av_model m;
    uint64_t position;
    uint64_t revisions[64]; /* next revision of account-<i> for numeric ids < 64 */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (h_mkdtemp("esview", f->dir, sizeof f->dir) != 0) {
        free(f);
        return -1;
    }
    es_projector_options o;
    es_projector_options_init(&o);
    o.dir = f->dir;
    o.dbs = av_dbs;
    o.n_dbs = AV_N_DBS;
    o.apply = av_apply;
    o.lifecycle = av_lifecycle;
    o.ctx = &f->m;
    o.target = ES_SUB_ALL; /* as es-account-view: the lifecycle records too */
    o.sync = ES_PROJECTOR_SYNC_NONE;
    if (es_projector_create(&o, &f->p) != ES_OK) {
        return -1;
    }
    av_model_init(&f->m, f->p);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    es_projector_destroy(f->p);
    h_rm_rf(f->dir);
    free(f);
    return 0;
}

/* One event on stream "account-<id>" with the next position. */
typedef struct ev_buf {
    es_recorded_event ev;
    char stream[300];
    char data[600];
} ev_buf;

static void make_ev(fixture *f, ev_buf *b, const char *id, uint64_t revision, const char *type,
                    const char *data)
{
    memset(b, 0, sizeof *b);
    snprintf(b->stream, sizeof b->stream, "account-%s", id);
    snprintf(b->data, sizeof b->data, "%s", data);
    b->ev.stream = b->stream;
    b->ev.revision = revision;
    b->ev.position = ++f->position;
    b->ev.type = type;
    b->ev.data = (const uint8_t *)b->data;
    b->ev.data_len = strlen(b->data);
    b->ev.content_type = "application/json";
    b->ev.recorded_at_us = 1700000000000000ull + f->position;
}

static void apply1(fixture *f, const char *id, uint64_t revision, const char *type,
                   const char *data)
{
    ev_buf b;
    make_ev(f, &b, id, revision, type, data);
    es_err err = es_projector_apply_batch(f->p, &b.ev, 1);
    if (err != ES_OK) {
        fail_msg("apply %s %s: %s", b.stream, type, es_strerror(err));
    }
}

static void get(fixture *f, const char *id, av_account *a, es_err want)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(es_projector_env(f->p), NULL, MDB_RDONLY, &txn), 0);
    es_err err = av_get(&f->m, txn, id, a);
    mdb_txn_abort(txn);
    if (err != want) {
        fail_msg("av_get %s: %s, want %s", id, es_errname(err), es_errname(want));
    }
}

static av_totals totals(fixture *f)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(es_projector_env(f->p), NULL, MDB_RDONLY, &txn), 0);
    av_totals t;
    assert_int_equal(av_totals_get(&f->m, txn, &t), ES_OK);
    mdb_txn_abort(txn);
    return t;
}

typedef struct ids {
    char list[64][AV_MAX_ID + 1];
    size_t n;
} ids;

static int collect(void *ctx, const av_account *a)
{
    ids *x = ctx;
    snprintf(x->list[x->n++], sizeof x->list[0], "%s", a->id);
    return 0;
}

static uint64_t list(fixture *f, const av_query *q, ids *out)
{
    memset(out, 0, sizeof *out);
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(es_projector_env(f->p), NULL, MDB_RDONLY, &txn), 0);
    uint64_t total = 0;
    assert_int_equal(av_list(&f->m, txn, q, collect, out, &total), ES_OK);
    mdb_txn_abort(txn);
    return total;
}

static void test_open_deposit_withdraw(void **state)
{
    fixture *f = *state;
    apply1(f, "42", 0, "AccountOpened", "{\"owner\":\"alice\"}");
    apply1(f, "42", 1, "MoneyDeposited", "{\"amount\":1000}");
    apply1(f, "42", 2, "MoneyWithdrawn", "{\"amount\":250}");
    av_account a;
    get(f, "42", &a, ES_OK);
    assert_string_equal(a.id, "42");
    assert_int_equal(a.owner_len, 5);
    assert_memory_equal(a.owner, "alice", 5);
    assert_true(a.opened);
    assert_int_equal(a.balance, 750);
    assert_int_equal(a.revision, 2);
    assert_int_equal(a.position, 3);
    assert_int_equal(a.updated_us, 1700000000000003ull);
    get(f, "43", &a, ES_ERR_NOT_FOUND);
    get(f, "", &a, ES_ERR_INVALID_ARGUMENT);
    av_totals t = totals(f);
    assert_int_equal(t.accounts, 1);
    assert_int_equal(t.total_balance, 750);
    assert_int_equal(t.events, 3);
    assert_int_equal(t.skipped, 0);
    char when[32];
    av_format_time(1700000000123456ull, when);
    assert_string_equal(when, "2023-11-14T22:13:20.123456Z");
}

/* A $lifecycle event as esd writes it: the 48-byte state, then the stream. */
static void apply_life(fixture *f, const char *type, const char *stream, uint64_t deleted_before)
{
    uint8_t data[48 + 64] = {0};
    data[16] = (uint8_t)deleted_before;
    if (!strcmp(type, "$stream-tombstoned")) {
        data[0] = 1;
    }
    size_t len = strlen(stream);
    memcpy(data + 48, stream, len);
    es_recorded_event ev = {.stream = "$lifecycle",
                            .type = type,
                            .data = data,
                            .data_len = 48 + len,
                            .position = ++f->position,
                            .content_type = ""};
    assert_int_equal(es_projector_apply_batch(f->p, &ev, 1), ES_OK);
}

static void test_deleted_account_dropped(void **state)
{
    fixture *f = *state;
    apply1(f, "1", 0, "AccountOpened", "{\"owner\":\"alice\"}");
    apply1(f, "1", 1, "MoneyDeposited", "{\"amount\":100}");
    apply1(f, "2", 0, "AccountOpened", "{\"owner\":\"alice\"}");
    apply1(f, "2", 1, "MoneyDeposited", "{\"amount\":30}");
    apply_life(f, "$stream-metadata", "account-2", 0); /* retention: kept */
    apply_life(f, "$stream-deleted", "account-1", 2);
    av_account a;
    get(f, "1", &a, ES_ERR_NOT_FOUND);
    get(f, "2", &a, ES_OK);
    av_totals t = totals(f);
    assert_int_equal(t.accounts, 1);
    assert_int_equal(t.total_balance, 30);
    av_query q = {.page = 1, .per_page = 10, .owner = "alice"};
    ids out;
    assert_int_equal(list(f, &q, &out), 1); /* gone from the owner index too */
    /* Recreated: built again from its new events only. */
    apply1(f, "1", 2, "AccountOpened", "{\"owner\":\"bob\"}");
    get(f, "1", &a, ES_OK);
    assert_int_equal(a.balance, 0);
    apply_life(f, "$stream-tombstoned", "account-2", 2);
    get(f, "2", &a, ES_ERR_NOT_FOUND);
    t = totals(f);
    assert_int_equal(t.accounts, 1);
    assert_int_equal(t.total_balance, 0);
    apply_life(f, "$stream-deleted", "account-9", 1); /* never seen: nothing */
    apply_life(f, "$stream-deleted", "other-1", 1);   /* not an account */
}

/* A transfer: withdrawn on one, deposited on the other, consecutive positions, one batch. */
static void test_transfer_batch(void **state)
{
    fixture *f = *state;
    apply1(f, "1", 0, "AccountOpened", "{\"owner\":\"a\"}");
    apply1(f, "2", 0, "AccountOpened", "{\"owner\":\"b\"}");
    apply1(f, "1", 1, "MoneyDeposited", "{\"amount\":500}");
    ev_buf b[2];
    make_ev(f, &b[0], "1", 2, "MoneyWithdrawn", "{\"amount\":200}");
    make_ev(f, &b[1], "2", 1, "MoneyDeposited", "{\"amount\":200}");
    es_recorded_event evs[2] = {b[0].ev, b[1].ev};
    assert_int_equal(es_projector_apply_batch(f->p, evs, 2), ES_OK);
    assert_int_equal(es_projector_apply_batch(f->p, evs, 2), ES_OK); /* redelivered: no effect */
    av_account a;
    get(f, "1", &a, ES_OK);
    assert_int_equal(a.balance, 300);
    assert_int_equal(a.revision, 2);
    get(f, "2", &a, ES_OK);
    assert_int_equal(a.balance, 200);
    assert_int_equal(a.revision, 1);
    av_totals t = totals(f);
    assert_int_equal(t.total_balance, 500);
    assert_int_equal(t.events, 5);
}

static void test_bad_payloads_skipped(void **state)
{
    fixture *f = *state;
    apply1(f, "7", 0, "AccountOpened", "{\"owner\":\"carol\"}");
    apply1(f, "7", 1, "MoneyDeposited", "not json");
    apply1(f, "7", 2, "MoneyDeposited", "{\"amount\":-5}");
    apply1(f, "7", 3, "MoneyDeposited", "{\"amount\":0}");
    apply1(f, "7", 4, "MoneyDeposited", "{\"amount\":\"12\"}");
    apply1(f, "7", 5, "MoneyDeposited", "{\"amount\":1.5}");
    apply1(f, "7", 6, "AccountOpened", "{\"owner\":7}");
    apply1(f, "7", 7, "MoneyDeposited", "{\"amount\":9223372036854775807}");
    apply1(f, "7", 8, "MoneyDeposited", "{\"amount\":1}"); /* would overflow */
    apply1(f, "7", 9, "SomethingElse", "{}");
    av_account a;
    get(f, "7", &a, ES_OK);
    assert_int_equal(a.balance, INT64_MAX);
    assert_int_equal(a.revision, 9); /* every event moves the revision */
    assert_memory_equal(a.owner, "carol", 5);
    av_totals t = totals(f);
    assert_int_equal(t.events, 10);
    assert_int_equal(t.skipped, 7);
    /* events on streams outside the category are ignored entirely */
    ev_buf b;
    make_ev(f, &b, "x", 0, "MoneyDeposited", "{\"amount\":1}");
    snprintf(b.stream, sizeof b.stream, "accounts-1");
    assert_int_equal(es_projector_apply_batch(f->p, &b.ev, 1), ES_OK);
    make_ev(f, &b, "", 0, "MoneyDeposited", "{\"amount\":1}"); /* "account-": no id */
    assert_int_equal(es_projector_apply_batch(f->p, &b.ev, 1), ES_OK);
    assert_int_equal(totals(f).events, 10);
}

static void test_implicit_account_and_owner_change(void **state)
{
    fixture *f = *state;
    apply1(f, "9", 0, "Unknown", "{}"); /* neither creates nor finds an account */
    av_account a;
    get(f, "9", &a, ES_ERR_NOT_FOUND);
    apply1(f, "9", 1, "MoneyDeposited", "{\"amount\":10}"); /* creates it, owner "" */
    get(f, "9", &a, ES_OK);
    assert_false(a.opened);
    assert_int_equal(a.owner_len, 0);
    assert_int_equal(a.balance, 10);
    apply1(f, "9", 2, "AccountOpened", "{\"owner\":\"dave\"}");
    apply1(f, "9", 3, "AccountOpened", "{\"owner\":\"erin\"}"); /* owner changes: reindexed */
    ids x;
    av_query q = {.page = 1, .per_page = 10, .owner = "dave"};
    assert_int_equal(list(f, &q, &x), 0);
    q.owner = "erin";
    assert_int_equal(list(f, &q, &x), 1);
    assert_string_equal(x.list[0], "9");
    q.owner = "";
    assert_int_equal(list(f, &q, &x), 0);
    assert_int_equal(totals(f).accounts, 1);
}

static void test_list_order_filters_paging(void **state)
{
    fixture *f = *state;
    const char *idv[] = {"10", "2", "abc", "1", "007", "100", "B", "0"};
    for (size_t i = 0; i < 8; i++) {
        apply1(f, idv[i], 0, "AccountOpened",
               i % 2 ? "{\"owner\":\"odd\"}" : "{\"owner\":\"even\"}");
        char dep[64];
        snprintf(dep, sizeof dep, "{\"amount\":%zu}", (i + 1) * 100);
        apply1(f, idv[i], 1, "MoneyDeposited", dep);
    }
    ids x;
    av_query q = {.page = 1, .per_page = 100};
    assert_int_equal(list(f, &q, &x), 8);
    const char *want[] = {"0", "1", "2", "10", "100", "007", "B", "abc"};
    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(x.list[i], want[i]);
    }
    q.per_page = 3;
    q.page = 2;
    assert_int_equal(list(f, &q, &x), 8);
    assert_int_equal(x.n, 3);
    assert_string_equal(x.list[0], "10");
    assert_string_equal(x.list[2], "007");
    q.page = 3;
    assert_int_equal(list(f, &q, &x), 8);
    assert_int_equal(x.n, 2);
    q.page = 4;
    assert_int_equal(list(f, &q, &x), 8);
    assert_int_equal(x.n, 0);

    /* owner "odd" (odd indexes): "2" 200, "1" 400, "100" 600, "0" 800 */
    q = (av_query){.page = 1, .per_page = 100, .owner = "odd"};
    assert_int_equal(list(f, &q, &x), 4);
    assert_string_equal(x.list[0], "0");
    assert_string_equal(x.list[1], "1");
    assert_string_equal(x.list[2], "2");
    assert_string_equal(x.list[3], "100");
    q.has_min_balance = true;
    q.min_balance = 400;
    assert_int_equal(list(f, &q, &x), 3);
    assert_string_equal(x.list[0], "0");
    assert_string_equal(x.list[1], "1");
    assert_string_equal(x.list[2], "100");
    q.owner = NULL;
    q.min_balance = 700; /* "0" 800, "B" 700 */
    assert_int_equal(list(f, &q, &x), 2);
    assert_string_equal(x.list[0], "0");
    assert_string_equal(x.list[1], "B");
    av_totals t = totals(f);
    assert_int_equal(t.accounts, 8);
    assert_int_equal(t.total_balance, 3600);
}

static void test_long_owner(void **state)
{
    fixture *f = *state;
    char data[600], owner1[460], owner2[460];
    memset(owner1, 'x', 450);
    owner1[450] = '\0';
    memcpy(owner2, owner1, sizeof owner2);
    owner2[449] = 'y'; /* same first 400 bytes: one index key, two owners */
    snprintf(data, sizeof data, "{\"owner\":\"%s\"}", owner1);
    apply1(f, "1", 0, "AccountOpened", data);
    snprintf(data, sizeof data, "{\"owner\":\"%s\"}", owner2);
    apply1(f, "2", 0, "AccountOpened", data);
    ids x;
    av_query q = {.page = 1, .per_page = 10, .owner = owner2};
    assert_int_equal(list(f, &q, &x), 1);
    assert_string_equal(x.list[0], "2");
    char long_id[AV_MAX_ID + 1];
    memset(long_id, 'z', AV_MAX_ID);
    long_id[AV_MAX_ID] = '\0';
    apply1(f, long_id, 0, "AccountOpened", "{\"owner\":\"z\"}");
    av_account a;
    get(f, long_id, &a, ES_OK);
    assert_string_equal(a.id, long_id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_deposit_withdraw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_payloads_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_implicit_account_and_owner_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_order_filters_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_account_dropped, setup, teardown),
    };
    return cmocka_run_group_tests_name("account_model", tests, NULL, NULL);
}

/*
 * test_projector_e2e.c — libesprojector against the real esd: catch-up of a
 * large log (events/s), live events, resume after close, the run loop in a
 * thread with stop, lag, a category projection, and the store-id check
 * (a read model is refused by another store until rebuilt).
 *
 * The read model records each applied position in "seen" with
 * MDB_NOOVERWRITE: applying anything twice fails the batch, and the tests
 * compare the number of entries with the server's head.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "es/projector.h"
#include "support.h"

#define BULK_EVENTS       100000u
#define EVENTS_PER_APPEND 1000u

typedef struct fixture {
    char pdir[320];
    esd_proc esd;
    es_client *c;
    es_projector *p;
    uint64_t applied;
    uint64_t fail_once_at; /* apply fails (once) at this position; 0 = never */
    uint64_t failures;
} fixture;

static const es_projector_db dbs[] = {{"seen", 0}};

static es_err apply_fn(void *ctx, MDB_txn *txn, const es_recorded_event *ev)
{
    fixture *f = ctx;
    if (f->fail_once_at && ev->position == f->fail_once_at) {
        f->fail_once_at = 0;
        f->failures++;
        return ES_ERR_IO; /* e.g. a transient failure of the read model's storage */
    }
    uint8_t kb[8];
    uint64_t v = ev->position;
    for (int i = 7; i >= 0; i--) {
        kb[i] = (uint8_t)v;
        v >>= 8;
    }
    MDB_val k = {.mv_size = 8, .mv_data = kb};
    MDB_val d = {.mv_size = ev->data_len, .mv_data = (void *)ev->data};
    int rc = mdb_put(txn, es_projector_dbi(f->p, 0), &k, &d, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        return ES_ERR_IDEMPOTENCY_CONFLICT;
    }
    f->applied++;
    return es_projector_err_from_mdb(rc);
}

static es_err open_projector(fixture *f, uint16_t port, es_sub_target target, const char *name,
                             es_projector_sync sync, char *msg, size_t msg_len)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    es_client_options co;
    es_client_options_init(&co);
    co.address = addr;
    es_projector_options o;
    es_projector_options_init(&o);
    o.dir = f->pdir;
    o.dbs = dbs;
    o.n_dbs = 1;
    o.apply = apply_fn;
    o.ctx = f;
    o.target = target;
    o.name = name;
    o.sync = sync;
    o.client = &co;
    o.head_refresh_ms = 100;
    o.errmsg = msg;
    o.errmsg_len = msg_len;
    f->p = NULL;
    return es_projector_create(&o, &f->p);
}

static uint64_t seen_entries(es_projector *p)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(es_projector_env(p), NULL, MDB_RDONLY, &txn), 0);
    MDB_stat st;
    assert_int_equal(mdb_stat(txn, es_projector_dbi(p, 0), &st), 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

static uint64_t server_head(fixture *f)
{
    es_stats st;
    es_err err = es_stats_get(f->c, &st);
    if (err != ES_OK) {
        fail_msg("stats: %s", es_strerror(err));
    }
    return st.head_position;
}

/* Append n events to streams "<cat>-0".."<cat>-9", EVENTS_PER_APPEND per call. */
static void append_events(fixture *f, const char *cat, uint64_t n)
{
    static es_event evs[EVENTS_PER_APPEND];
    static char data[EVENTS_PER_APPEND][32];
    static uint64_t serial;
    uint64_t done = 0;
    while (done < n) {
        size_t k = n - done > EVENTS_PER_APPEND ? EVENTS_PER_APPEND : (size_t)(n - done);
        for (size_t i = 0; i < k; i++) {
            memset(&evs[i], 0, sizeof evs[i]);
            evs[i].type = "Bulk";
            int len =
                snprintf(data[i], sizeof data[i], "{\"n\":%llu}", (unsigned long long)++serial);
            evs[i].data = data[i];
            evs[i].data_len = (size_t)len;
        }
        char stream[64];
        snprintf(stream, sizeof stream, "%s-%llu", cat, (unsigned long long)(serial % 10));
        es_err err = es_stream_append(f->c, stream, (es_expected){ES_EXPECT_ANY, 0}, evs, k, NULL);
        if (err != ES_OK) {
            fail_msg("append: %s (%s)", es_strerror(err), es_client_errmsg(f->c));
        }
        done += k;
    }
}

/* Step until the checkpoint reaches target (or the deadline). */
static void step_until(fixture *f, uint64_t target, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    while (es_projector_checkpoint(f->p, NULL) < target) {
        es_err err = es_projector_step(f->p, 100);
        if (err != ES_OK && err != ES_ERR_TIMEOUT) {
            es_projector_status st;
            es_projector_status_get(f->p, &st);
            print_message("step: %s (%s)\n", es_errname(err), st.last_error_msg);
        }
        if (h_now_ms() > end) {
            fail_msg("checkpoint %llu, want %llu",
                     (unsigned long long)es_projector_checkpoint(f->p, NULL),
                     (unsigned long long)target);
        }
    }
}

static const char *const sync_none[] = {"--sync", "none", NULL};

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (esd_init(&f->esd, sync_none) != 0) {
        return -1;
    }
    snprintf(f->pdir, sizeof f->pdir, "%s/readmodel", f->esd.dir);
    if (esd_start(&f->esd, 10000) != 0) {
        return -1;
    }
    es_client_options co;
    es_client_options_init(&co);
    co.address = f->esd.address;
    if (es_client_create(&co, &f->c) != ES_OK) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    es_projector_destroy(f->p);
    es_client_destroy(f->c);
    esd_end(&f->esd, 5000);
    free(f);
    return 0;
}

/* 100k events caught up from the log, then live ones; resume after close. */
static void test_catch_up_live_resume(void **state)
{
    fixture *f = *state;
    append_events(f, "bulk", BULK_EVENTS);
    uint64_t head = server_head(f);
    assert_int_equal(head, BULK_EVENTS);

    char msg[256] = "";
    assert_int_equal(
        open_projector(f, f->esd.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_META, msg, sizeof msg),
        ES_OK);
    int64_t t0 = h_now_ms();
    step_until(f, head, 120000);
    int64_t ms = h_now_ms() - t0;
    es_projector_status st;
    es_projector_status_get(f->p, &st);
    print_message("catch-up: %llu events in %lld ms = %.0f events/s (%llu batches, "
                  "default sync: one fsync per batch)\n",
                  (unsigned long long)head, (long long)ms,
                  (double)head * 1000.0 / (double)(ms ? ms : 1),
                  (unsigned long long)st.batches_committed);
    assert_int_equal(seen_entries(f->p), head);
    assert_int_equal(st.events_applied, head);
    assert_int_equal(st.batches_failed, 0);

    /* live */
    append_events(f, "live", 2500);
    step_until(f, head + 2500, 30000);
    head += 2500;
    assert_int_equal(seen_entries(f->p), head);
    es_projector_status_get(f->p, &st);
    for (int i = 0; i < 40 && !st.caught_up; i++) {
        es_projector_step(f->p, 50);
        es_projector_status_get(f->p, &st);
    }
    assert_true(st.caught_up);

    /* close, append meanwhile, reopen: resumes strictly after the checkpoint */
    es_projector_destroy(f->p);
    f->p = NULL;
    append_events(f, "later", 777);
    assert_int_equal(
        open_projector(f, f->esd.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_META, msg, sizeof msg),
        ES_OK);
    assert_int_equal(es_projector_checkpoint(f->p, NULL), head);
    step_until(f, head + 777, 30000);
    assert_int_equal(seen_entries(f->p), head + 777);
    es_projector_status_get(f->p, &st);
    assert_int_equal(st.events_applied, 777);
    assert_int_equal(st.batches_failed, 0);
}

/* The same bulk catch-up with ES_PROJECTOR_SYNC_NONE (no fsync): the projector's own cost. */
static void test_catch_up_nosync(void **state)
{
    fixture *f = *state;
    append_events(f, "bulk", BULK_EVENTS);
    char msg[256] = "";
    assert_int_equal(
        open_projector(f, f->esd.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_NONE, msg, sizeof msg),
        ES_OK);
    int64_t t0 = h_now_ms();
    step_until(f, BULK_EVENTS, 120000);
    int64_t ms = h_now_ms() - t0;
    print_message("catch-up (no sync): %u events in %lld ms = %.0f events/s\n", BULK_EVENTS,
                  (long long)ms, (double)BULK_EVENTS * 1000.0 / (double)(ms ? ms : 1));
    assert_int_equal(seen_entries(f->p), BULK_EVENTS);
}

typedef struct runner {
    es_projector *p;
    es_err result;
} runner;

static void *run_thread(void *arg)
{
    runner *r = arg;
    r->result = es_projector_run(r->p);
    return NULL;
}

/* es_projector_run in a thread, a category projection, lag, stop. */
static void test_run_thread_category_lag(void **state)
{
    fixture *f = *state;
    append_events(f, "acc", 3000);
    append_events(f, "other", 1000);
    char msg[256] = "";
    assert_int_equal(open_projector(f, f->esd.port, ES_SUB_CATEGORY, "acc", ES_PROJECTOR_SYNC_META,
                                    msg, sizeof msg),
                     ES_OK);
    runner r = {.p = f->p, .result = ES_ERR_INTERNAL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_thread, &r), 0);
    append_events(f, "acc", 1000); /* live, while the thread runs */
    uint64_t head = server_head(f);
    es_projector_status st;
    int64_t end = h_now_ms() + 30000;
    do {
        h_sleep_ms(20);
        es_projector_status_get(f->p, &st);
    } while ((st.events_applied < 4000 || st.lag != 0) && h_now_ms() < end);
    assert_int_equal(st.events_applied, 4000);
    assert_true(st.caught_up);
    assert_true(st.connected);
    assert_int_equal(st.head, head);
    assert_int_equal(st.lag, 0);

    /* events outside the filter move the head; a caught-up projector
     * reports lag 0 again once it has seen the head and waited quietly */
    append_events(f, "other", 500);
    head = server_head(f);
    end = h_now_ms() + 10000;
    do {
        h_sleep_ms(20);
        es_projector_status_get(f->p, &st);
    } while ((st.head != head || st.lag != 0) && h_now_ms() < end);
    assert_int_equal(st.head, head);
    assert_int_equal(st.lag, 0);
    assert_int_equal(st.events_applied, 4000);

    int64_t t0 = h_now_ms();
    es_projector_stop(f->p);
    pthread_join(th, NULL);
    int64_t stop_ms = h_now_ms() - t0;
    assert_int_equal(r.result, ES_OK);
    print_message("run: stopped %lld ms after es_projector_stop\n", (long long)stop_ms);
    assert_true(stop_ms < 2000);
    assert_int_equal(seen_entries(f->p), 4000);
}

/*
 * esd restarts under a running projector (same port, same data): the
 * subscription resumes after the last delivered event, and the read model
 * ends with every event once.
 */
static void test_server_restart(void **state)
{
    fixture *f = *state;
    append_events(f, "x", 3000);
    char msg[256] = "";
    assert_int_equal(
        open_projector(f, f->esd.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_NONE, msg, sizeof msg),
        ES_OK);
    runner r = {.p = f->p, .result = ES_ERR_INTERNAL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_thread, &r), 0);
    for (int round = 0; round < 3; round++) {
        append_events(f, "x", 2000);
        int status;
        assert_int_equal(esd_stop(&f->esd, SIGTERM, 5000, &status, NULL), 0);
        f->esd.listen_port = f->esd.port;
        assert_int_equal(esd_start(&f->esd, 10000), 0); /* same port */
        es_client_disconnect(f->c);
    }
    append_events(f, "x", 1000);
    uint64_t head = server_head(f);
    assert_int_equal(head, 10000);
    int64_t end = h_now_ms() + 60000;
    while (es_projector_checkpoint(f->p, NULL) < head && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    es_projector_stop(f->p);
    pthread_join(th, NULL);
    assert_int_equal(r.result, ES_OK);
    assert_int_equal(es_projector_checkpoint(f->p, NULL), head);
    assert_int_equal(seen_entries(f->p), head);
    es_projector_status st;
    es_projector_status_get(f->p, &st);
    assert_int_equal(st.events_applied, head);
    assert_int_equal(st.batches_failed, 0);
}

/*
 * An apply failure in the middle of a live projection: the batch is
 * aborted and not acknowledged (the batch callback returns nonzero), the
 * projector resubscribes after its checkpoint, and the batch comes again:
 * every event applied once, none skipped.
 */
static void test_refused_batch_redelivered(void **state)
{
    fixture *f = *state;
    append_events(f, "r", 5000);
    char msg[256] = "";
    assert_int_equal(
        open_projector(f, f->esd.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_NONE, msg, sizeof msg),
        ES_OK);
    f->fail_once_at = 2345;
    bool saw_error = false;
    int64_t end = h_now_ms() + 30000;
    while (es_projector_checkpoint(f->p, NULL) < 5000 && h_now_ms() < end) {
        es_err err = es_projector_step(f->p, 100);
        if (err == ES_ERR_IO) {
            saw_error = true;
            assert_true(es_projector_checkpoint(f->p, NULL) < 2345);
        }
    }
    assert_true(saw_error);
    assert_int_equal(f->failures, 1);
    assert_int_equal(es_projector_checkpoint(f->p, NULL), 5000);
    assert_int_equal(seen_entries(f->p), 5000);
    es_projector_status st;
    es_projector_status_get(f->p, &st);
    assert_int_equal(st.batches_failed, 1);
    assert_int_equal(st.events_applied, 5000);
    assert_int_equal(st.last_error, ES_OK); /* cleared by the next commit */
}

/* A read model built from one store is refused by another until rebuilt. */
static void test_other_store_refused(void **state)
{
    fixture *f = *state;
    append_events(f, "a", 50);
    char msg[256] = "";
    assert_int_equal(
        open_projector(f, f->esd.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_META, msg, sizeof msg),
        ES_OK);
    step_until(f, 50, 20000);
    es_projector_destroy(f->p);
    f->p = NULL;

    esd_proc esd2;
    assert_int_equal(esd_init(&esd2, sync_none), 0);
    assert_int_equal(esd_start(&esd2, 10000), 0);
    assert_int_equal(
        open_projector(f, esd2.port, ES_SUB_ALL, NULL, ES_PROJECTOR_SYNC_META, msg, sizeof msg),
        ES_OK);
    es_err err = es_projector_step(f->p, 100);
    assert_int_equal(err, ES_ERR_INCOMPATIBLE_STORE);
    es_projector_status st;
    es_projector_status_get(f->p, &st);
    assert_non_null(strstr(st.last_error_msg, "another store"));
    assert_int_equal(es_projector_run(f->p), ES_ERR_INCOMPATIBLE_STORE); /* permanent */

    /* rebuild from the new store: its (empty) log, then its events */
    es_projector_request_rebuild(f->p);
    for (int i = 0; i < 5; i++) {
        err = es_projector_step(f->p, 50);
        assert_true(err == ES_OK || err == ES_ERR_TIMEOUT);
    }
    assert_int_equal(seen_entries(f->p), 0);
    es_projector_destroy(f->p);
    f->p = NULL;
    esd_end(&esd2, 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_catch_up_live_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catch_up_nosync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_thread_category_lag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_batch_redelivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_store_refused, setup, teardown),
    };
    return cmocka_run_group_tests_name("projector_e2e", tests, NULL, NULL);
}

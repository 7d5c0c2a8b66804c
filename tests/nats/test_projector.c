/*
 * test_projector — the projector fed from JetStream instead of esd
 * (es_projector_options.nats_url / nats_stream), exactly once.
 *
 * Design notes
 * ------------
 * One JetStream node; a primary relays appends to 20 "acct-" and 5
 * "other-" streams. Two projectors read the stream: one of the whole log,
 * one of the category "acct". Each counts events per stream in its read
 * model (and the whole-log one sums positions). The whole-log projector's
 * apply function fails once, in the middle of a batch (the batch must be
 * applied again, not twice); both projectors are closed and opened again
 * halfway while more events are appended. At the end every count equals
 * the stream's event count on the primary, the position sum is exactly
 * 1 + ... + head, and the category projector saw no "other-" stream and
 * stands at the last "acct-" position. That primary runs with
 * --no-encryption; a second one, encrypted (the default), relays events
 * whose data is sealed: a projector of its stream applies none of them and
 * stops with INVALID_ARGUMENT naming the event.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/projector.h"
#include "natsh.h"
#include "rel.h"
#include "support.h"

#define STREAM  "P"
#define N_ACCT  20u
#define N_OTHER 5u

typedef struct model {
    es_projector *p;
    uint64_t fail_at; /* fail once at this position (0: never) */
    bool failed;
} model;

static es_err count_apply(void *ctx, MDB_txn *txn, const es_recorded_event *ev)
{
    model *m = ctx;
    if (m->fail_at && ev->position == m->fail_at && !m->failed) {
        m->failed = true;
        return ES_ERR_IO;
    }
    MDB_dbi counts = es_projector_dbi(m->p, 0);
    MDB_val k = {strlen(ev->stream), (void *)ev->stream}, v;
    uint64_t n = 0;
    if (mdb_get(txn, counts, &k, &v) == MDB_SUCCESS && v.mv_size == 8) {
        memcpy(&n, v.mv_data, 8);
    }
    n++;
    v = (MDB_val){8, &n};
    int rc = mdb_put(txn, counts, &k, &v, 0);
    if (rc == MDB_SUCCESS) {
        MDB_val sk = {3, (void *)"sum"}, sv;
        uint64_t sum = 0;
        if (mdb_get(txn, es_projector_dbi(m->p, 1), &sk, &sv) == MDB_SUCCESS && sv.mv_size == 8) {
            memcpy(&sum, sv.mv_data, 8);
        }
        sum += ev->position;
        sv = (MDB_val){8, &sum};
        rc = mdb_put(txn, es_projector_dbi(m->p, 1), &sk, &sv, 0);
    }
    return es_projector_err_from_mdb(rc);
}

static es_projector *open_model_on(model *m, const char *dir, const char *urls, const char *stream,
                                   es_sub_target t, const char *name)
{
    static const es_projector_db dbs[] = {{"counts", 0}, {"sum", 0}};
    es_projector_options o;
    es_projector_options_init(&o);
    o.dir = dir;
    o.sync = ES_PROJECTOR_SYNC_NONE;
    o.dbs = dbs;
    o.n_dbs = 2;
    o.apply = count_apply;
    o.ctx = m;
    o.target = t;
    o.name = name;
    o.batch_size = 300;
    o.nats_url = urls;
    o.nats_stream = stream;
    char err[256] = "";
    o.errmsg = err;
    o.errmsg_len = sizeof err;
    es_err rv = es_projector_create(&o, &m->p);
    REL_CHECK(rv == ES_OK, "projector open: %s: %s", es_strerror(rv), err);
    return m->p;
}

static es_projector *open_model(model *m, const char *dir, const char *urls, es_sub_target t,
                                const char *name)
{
    return open_model_on(m, dir, urls, STREAM, t, name);
}

/* Step until the checkpoint reaches `until`. */
static void run_until(model *m, uint64_t until)
{
    int64_t deadline = h_now_ms() + 60000;
    for (;;) {
        bool has;
        uint64_t cp = es_projector_checkpoint(m->p, &has);
        if (has && cp >= until) {
            REL_CHECK(cp == until, "checkpoint %" PRIu64 " beyond %" PRIu64, cp, until);
            return;
        }
        es_err rv = es_projector_step(m->p, 200);
        if (rv != ES_OK && rv != ES_ERR_IO) {
            es_projector_status st;
            es_projector_status_get(m->p, &st);
            rel_log("step: %s (%s)", es_strerror(rv), st.last_error_msg);
        }
        REL_CHECK(h_now_ms() < deadline, "projector stuck at %" PRIu64 " of %" PRIu64, cp, until);
    }
}

static uint64_t model_count(model *m, const char *stream)
{
    MDB_txn *txn;
    REL_CHECK(mdb_txn_begin(es_projector_env(m->p), NULL, MDB_RDONLY, &txn) == 0, "txn");
    MDB_val k = {strlen(stream), (void *)stream}, v;
    uint64_t n = 0;
    if (mdb_get(txn, es_projector_dbi(m->p, 0), &k, &v) == MDB_SUCCESS) {
        memcpy(&n, v.mv_data, 8);
    }
    mdb_txn_abort(txn);
    return n;
}

static uint64_t model_sum(model *m)
{
    MDB_txn *txn;
    REL_CHECK(mdb_txn_begin(es_projector_env(m->p), NULL, MDB_RDONLY, &txn) == 0, "txn");
    MDB_val k = {3, (void *)"sum"}, v;
    uint64_t n = 0;
    if (mdb_get(txn, es_projector_dbi(m->p, 1), &k, &v) == MDB_SUCCESS) {
        memcpy(&n, v.mv_data, 8);
    }
    mdb_txn_abort(txn);
    return n;
}

static uint64_t next_rev_acct[N_ACCT], next_rev_other[N_OTHER], last_acct_pos;

static void append_some(const char *address, uint32_t n)
{
    es_client *c = rel_client(address, 10000);
    for (uint32_t i = 0; i < n; i++) {
        bool acct = i % 4 != 3;
        uint32_t s = acct ? i % N_ACCT : i % N_OTHER;
        char name[32];
        snprintf(name, sizeof name, "%s-%u", acct ? "acct" : "other", s);
        es_event e[3];
        memset(e, 0, sizeof e);
        uint32_t k = 1 + i % 3;
        for (uint32_t j = 0; j < k; j++) {
            e[j].type = j % 2 ? "Withdrawn" : "Deposited";
            e[j].data = "{\"amount\":1}";
            e[j].data_len = 12;
        }
        es_append_result res;
        es_err rv = es_stream_append(c, name, (es_expected){ES_EXPECT_ANY, 0}, e, k, &res);
        REL_CHECK(rv == ES_OK, "append: %s", es_strerror(rv));
        if (acct) {
            next_rev_acct[s] += k;
            last_acct_pos = res.last_position;
        } else {
            next_rev_other[s] += k;
        }
    }
    es_client_destroy(c);
}

static uint64_t wait_relayed(const char *address)
{
    int64_t deadline = h_now_ms() + 30000;
    for (;;) {
        es_client *c = rel_client(address, 10000);
        es_stats st;
        es_err rv = es_stats_get(c, &st);
        es_client_destroy(c);
        REL_CHECK(rv == ES_OK, "stats: %s", es_strerror(rv));
        if (st.relay_acked_position == st.head_position) {
            return st.head_position;
        }
        REL_CHECK(h_now_ms() < deadline, "relay did not catch up");
        h_sleep_ms(20);
    }
}

int main(int argc, char **argv)
{
    static const char *const names[] = {NULL};
    rel_args(argc, argv, "test_projector", names, NULL);
    natsh_require_server();
    esd_proc p;
    if (esd_init(&p, NULL) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    natsh_cluster c;
    natsh_start(&c, 1, p.dir);
    const char *relay_args[] = {"--relay-nats", c.urls, "--relay-stream",  STREAM,
                                "--sync",       "none", "--no-encryption", NULL};
    memcpy(p.args, relay_args, sizeof relay_args);
    int status;
    REL_CHECK(esd_start(&p, 10000) == 0, "primary did not start");

    append_some(p.address, 1500);
    uint64_t head = wait_relayed(p.address);
    char dir_all[600], dir_cat[600];
    snprintf(dir_all, sizeof dir_all, "%s/model-all", p.dir);
    snprintf(dir_cat, sizeof dir_cat, "%s/model-acct", p.dir);
    model all = {.fail_at = head / 2 + 7}, cat = {0};
    open_model(&all, dir_all, c.urls, ES_SUB_ALL, NULL);
    open_model(&cat, dir_cat, c.urls, ES_SUB_CATEGORY, "acct");
    run_until(&all, head);
    run_until(&cat, last_acct_pos);
    REL_CHECK(all.failed, "the injected failure did not happen");
    rel_log("both projectors at the head (%" PRIu64 "), one batch failed once and was redone",
            head);
    es_projector_destroy(all.p);
    es_projector_destroy(cat.p);

    append_some(p.address, 1000);
    head = wait_relayed(p.address);
    open_model(&all, dir_all, c.urls, ES_SUB_ALL, NULL);
    open_model(&cat, dir_cat, c.urls, ES_SUB_CATEGORY, "acct");
    run_until(&all, head);
    run_until(&cat, last_acct_pos);

    for (uint32_t s = 0; s < N_ACCT; s++) {
        char name[32];
        snprintf(name, sizeof name, "acct-%u", s);
        REL_CHECK(model_count(&all, name) == next_rev_acct[s] &&
                      model_count(&cat, name) == next_rev_acct[s],
                  "%s: counted %" PRIu64 " / %" PRIu64 ", appended %" PRIu64, name,
                  model_count(&all, name), model_count(&cat, name), next_rev_acct[s]);
    }
    for (uint32_t s = 0; s < N_OTHER; s++) {
        char name[32];
        snprintf(name, sizeof name, "other-%u", s);
        REL_CHECK(model_count(&all, name) == next_rev_other[s] && model_count(&cat, name) == 0,
                  "%s: counted %" PRIu64 " / %" PRIu64 ", appended %" PRIu64, name,
                  model_count(&all, name), model_count(&cat, name), next_rev_other[s]);
    }
    REL_CHECK(model_sum(&all) == head * (head + 1) / 2,
              "position sum %" PRIu64 ", expected %" PRIu64, model_sum(&all),
              head * (head + 1) / 2);
    rel_log("read models exact: every event applied once (%" PRIu64 " events, %u streams)", head,
            N_ACCT + N_OTHER);
    es_projector_destroy(all.p);
    es_projector_destroy(cat.p);
    REL_CHECK(esd_stop(&p, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "primary stop");

    /* An encrypted primary: its events reach JetStream sealed. */
    esd_proc q;
    REL_CHECK(esd_init(&q, NULL) == 0, "cannot make a temporary directory");
    const char *sealed_args[] = {
        "--relay-nats", c.urls,   "--relay-stream", "PE", "--relay-subject",
        "pe",           "--sync", "none",           NULL};
    memcpy(q.args, sealed_args, sizeof sealed_args);
    REL_CHECK(esd_start(&q, 10000) == 0, "encrypted primary did not start");
    memset(next_rev_acct, 0, sizeof next_rev_acct);
    memset(next_rev_other, 0, sizeof next_rev_other);
    append_some(q.address, 4);
    wait_relayed(q.address);
    char dir_sealed[600];
    snprintf(dir_sealed, sizeof dir_sealed, "%s/model-sealed", q.dir);
    model sealed = {0};
    open_model_on(&sealed, dir_sealed, c.urls, "PE", ES_SUB_ALL, NULL);
    es_err rv = es_projector_step(sealed.p, 2000);
    es_projector_status st;
    es_projector_status_get(sealed.p, &st);
    REL_CHECK(rv == ES_ERR_INVALID_ARGUMENT && st.last_error == ES_ERR_INVALID_ARGUMENT &&
                  strstr(st.last_error_msg, "position 1 ") &&
                  strstr(st.last_error_msg, "encrypted at rest"),
              "a sealed event: step %s, status \"%s\"", es_strerror(rv), st.last_error_msg);
    REL_CHECK(!st.has_checkpoint && st.events_applied == 0 && model_sum(&sealed) == 0,
              "a sealed event was applied (%" PRIu64 " events)", st.events_applied);
    rv = es_projector_step(sealed.p, 200); /* it stays there: never skipped */
    REL_CHECK(rv == ES_ERR_INVALID_ARGUMENT, "second step: %s", es_strerror(rv));
    rel_log("a projector of an encrypted store's stream stops at its first event: %s",
            st.last_error_msg);
    es_projector_destroy(sealed.p);
    REL_CHECK(esd_stop(&q, SIGTERM, 10000, &status, NULL) == 0 && status == 0,
              "encrypted primary stop");
    esd_destroy(&q);
    natsh_stop(&c);
    nats_Close();
    esd_destroy(&p);
    rel_log("PASS");
    return 0;
}

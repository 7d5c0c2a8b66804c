/*
 * test_projector.c — unit tests of libesprojector's apply/checkpoint logic,
 * without a server: batches are fed with es_projector_apply_batch(), the
 * same function the subscription's batch callback calls.
 *
 * The read model of these tests records every applied position in a
 * database "seen" with MDB_NOOVERWRITE, so applying an event twice is an
 * error the test sees, and counts the events in "count". The crash tests
 * fork a child that applies batches and dies (_exit or SIGKILL) inside the
 * apply function, i.e. with a write transaction open and uncommitted; the
 * parent then reopens the environment and checks that the read model and
 * the checkpoint agree, and that replaying from the checkpoint completes
 * the projection with every event applied exactly once.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "es/projector.h"
#include "esd_proc.h"

/* ------------------------------------------------------------- fixture -- */

enum { DB_SEEN = 0, DB_COUNT = 1 };
static const es_projector_db test_dbs[] = {{"seen", 0}, {"count", 0}};

typedef struct model {
    es_projector *p;
    uint64_t calls;      /* apply calls in this process */
    uint64_t fail_at;    /* return ES_ERR_INTERNAL at this key (0 = never) */
    uint64_t exit_at;    /* _exit(9) at this key, before the commit (0 = never) */
    uint64_t kill_after; /* SIGKILL self after this many calls (0 = never) */
    size_t value_bytes;  /* extra bytes written per event (map-full test) */
    bool key_is_revision;
} model;

typedef struct fixture {
    char dir[256];
    model m;
} fixture;

static void key_bytes(uint64_t v, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

static es_err apply_fn(void *ctx, MDB_txn *txn, const es_recorded_event *ev)
{
    model *m = ctx;
    uint64_t key = m->key_is_revision ? ev->revision : ev->position;
    m->calls++;
    if (m->kill_after && m->calls >= m->kill_after) {
        kill(getpid(), SIGKILL);
    }
    if (m->fail_at && key == m->fail_at) {
        return ES_ERR_INTERNAL;
    }
    uint8_t kb[8];
    key_bytes(key, kb);
    MDB_val k = {.mv_size = 8, .mv_data = kb};
    static uint8_t big[1 << 16];
    MDB_val v = {.mv_size = m->value_bytes ? m->value_bytes : 1, .mv_data = big};
    int rc = mdb_put(txn, es_projector_dbi(m->p, DB_SEEN), &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        return ES_ERR_IDEMPOTENCY_CONFLICT; /* applied twice: the bug these tests hunt */
    }
    if (rc != MDB_SUCCESS) {
        return es_projector_err_from_mdb(rc);
    }
    MDB_val ck = {.mv_size = 1, .mv_data = (void *)"n"}, cv;
    uint64_t n = 0;
    rc = mdb_get(txn, es_projector_dbi(m->p, DB_COUNT), &ck, &cv);
    if (rc == MDB_SUCCESS) {
        memcpy(&n, cv.mv_data, sizeof n);
    }
    n++;
    cv.mv_size = sizeof n;
    cv.mv_data = &n;
    rc = mdb_put(txn, es_projector_dbi(m->p, DB_COUNT), &ck, &cv, 0);
    if (m->exit_at && key == m->exit_at) {
        _exit(9); /* dies with the transaction open: nothing of it may stay */
    }
    return es_projector_err_from_mdb(rc);
}

static es_err open_p(fixture *f, es_sub_target target, const char *name, size_t map_size,
                     char *errmsg, size_t errmsg_len)
{
    es_projector_options o;
    es_projector_options_init(&o);
    o.dir = f->dir;
    o.dbs = test_dbs;
    o.n_dbs = 2;
    o.apply = apply_fn;
    o.ctx = &f->m;
    o.target = target;
    o.name = name;
    o.sync = ES_PROJECTOR_SYNC_NONE;
    if (map_size) {
        o.map_size = map_size;
    }
    o.errmsg = errmsg;
    o.errmsg_len = errmsg_len;
    f->m.p = NULL;
    es_err err = es_projector_create(&o, &f->m.p);
    f->m.key_is_revision = target == ES_SUB_STREAM;
    return err;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (h_mkdtemp("esproj", f->dir, sizeof f->dir) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    es_projector_destroy(f->m.p);
    h_rm_rf(f->dir);
    free(f);
    return 0;
}

/* Events at positions [from, to], streams "s-<pos % 3>". */
typedef struct batch {
    es_recorded_event ev[4096];
    char streams[4096][16];
    size_t n;
} batch;

static batch *make_batch(uint64_t from, uint64_t to)
{
    batch *b = calloc(1, sizeof *b);
    for (uint64_t pos = from; pos <= to && b->n < 4096; pos++) {
        es_recorded_event *e = &b->ev[b->n];
        snprintf(b->streams[b->n], sizeof b->streams[b->n], "s-%u", (unsigned)(pos % 3));
        e->stream = b->streams[b->n];
        e->position = pos;
        e->revision = pos - 1;
        e->type = "T";
        e->data = (const uint8_t *)"{}";
        e->data_len = 2;
        e->content_type = "";
        b->n++;
    }
    return b;
}

static es_err apply_range(es_projector *p, uint64_t from, uint64_t to)
{
    batch *b = make_batch(from, to);
    es_err err = es_projector_apply_batch(p, b->ev, b->n);
    free(b);
    return err;
}

/* The read model's event count and number of "seen" entries. */
static void read_model(es_projector *p, uint64_t *count, uint64_t *seen)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(es_projector_env(p), NULL, MDB_RDONLY, &txn), 0);
    MDB_val ck = {.mv_size = 1, .mv_data = (void *)"n"}, cv;
    *count = 0;
    if (mdb_get(txn, es_projector_dbi(p, DB_COUNT), &ck, &cv) == MDB_SUCCESS) {
        memcpy(count, cv.mv_data, sizeof *count);
    }
    MDB_stat st;
    assert_int_equal(mdb_stat(txn, es_projector_dbi(p, DB_SEEN), &st), 0);
    *seen = st.ms_entries;
    mdb_txn_abort(txn);
}

static void assert_model(es_projector *p, uint64_t want)
{
    uint64_t count, seen;
    read_model(p, &count, &seen);
    assert_int_equal(count, want);
    assert_int_equal(seen, want);
}

#define assert_es(expr, want)                                                                      \
    do {                                                                                           \
        es_err got_ = (expr);                                                                      \
        if (got_ != (want)) {                                                                      \
            fail_msg("%s: got %s, want %s", #expr, es_errname(got_), es_errname(want));            \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------- tests -- */

static void test_open_fresh(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    bool has = true;
    assert_int_equal(es_projector_checkpoint(f->m.p, &has), 0);
    assert_false(has);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_false(st.has_checkpoint);
    assert_int_equal(st.lag, 0);
    assert_int_equal(st.last_error, ES_OK);
    assert_int_equal(es_projector_dbi(f->m.p, 99), 0);
    assert_es(es_projector_apply_batch(f->m.p, NULL, 0), ES_OK);
}

static void test_apply_and_reopen(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 1, 10), ES_OK);
    bool has;
    assert_int_equal(es_projector_checkpoint(f->m.p, &has), 10);
    assert_true(has);
    assert_model(f->m.p, 10);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.events_applied, 10);
    assert_int_equal(st.batches_committed, 1);
    assert_int_equal(st.head, 10);
    assert_int_equal(st.lag, 0);
    es_projector_destroy(f->m.p);
    f->m.p = NULL;

    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_int_equal(es_projector_checkpoint(f->m.p, &has), 10);
    assert_true(has);
    assert_model(f->m.p, 10);
    assert_es(apply_range(f->m.p, 11, 25), ES_OK);
    assert_model(f->m.p, 25);
}

static void test_redelivery_skipped(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 1, 10), ES_OK);
    f->m.calls = 0;
    assert_es(apply_range(f->m.p, 1, 10), ES_OK); /* all old: nothing written */
    assert_int_equal(f->m.calls, 0);
    assert_es(apply_range(f->m.p, 5, 15), ES_OK); /* overlap: only 11..15 */
    assert_int_equal(f->m.calls, 5);
    assert_model(f->m.p, 15);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.events_skipped, 16);
    assert_int_equal(st.events_applied, 15);
}

static void test_handler_failure_aborts_batch(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 1, 10), ES_OK);
    f->m.fail_at = 15; /* 11..14 are written in the transaction, then it fails */
    assert_es(apply_range(f->m.p, 11, 20), ES_ERR_INTERNAL);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 10);
    assert_model(f->m.p, 10);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.last_error, ES_ERR_INTERNAL);
    assert_non_null(strstr(st.last_error_msg, "position 15"));
    assert_int_equal(st.batches_failed, 1);

    f->m.fail_at = 0; /* the batch comes again: applied once */
    assert_es(apply_range(f->m.p, 11, 20), ES_OK);
    assert_model(f->m.p, 20);
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.last_error, ES_OK);
}

/* A child applies 11..20 and exits inside the apply of event 20. */
static void test_crash_before_commit(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 1, 10), ES_OK);
    es_projector_destroy(f->m.p);
    f->m.p = NULL;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0) != ES_OK) {
            _exit(3);
        }
        f->m.exit_at = 20;
        apply_range(f->m.p, 11, 20);
        _exit(4); /* not reached */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 9);

    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 10);
    assert_model(f->m.p, 10);                     /* nothing of 11..19 survived */
    assert_es(apply_range(f->m.p, 1, 20), ES_OK); /* the replay of a resubscription */
    assert_model(f->m.p, 20);
}

/*
 * SIGKILL at random moments: children apply 1..N in batches of random
 * sizes and kill themselves after a random number of apply calls. After
 * each death the read model must equal exactly its checkpoint; in the end
 * every event is applied once.
 */
static void test_random_kills(void **state)
{
    fixture *f = *state;
    const uint64_t total = 3000;
    srand(12345);
    int kills = 0;
    for (int round = 0; round < 40; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0) != ES_OK) {
                _exit(3);
            }
            f->m.kill_after = 1 + (uint64_t)(rand() % 400) + (uint64_t)round;
            uint64_t cp = es_projector_checkpoint(f->m.p, NULL);
            /* resume a little before the checkpoint, as a redelivery would */
            uint64_t from = cp > 7 ? cp - 7 : 1;
            while (from <= total) {
                uint64_t to = from + (uint64_t)(rand() % 97);
                if (to > total) {
                    to = total;
                }
                if (apply_range(f->m.p, from, to) != ES_OK) {
                    _exit(5);
                }
                from = to + 1;
            }
            _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status)) {
            assert_int_equal(WTERMSIG(status), SIGKILL);
            kills++;
        } else {
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 0);
        }
        assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
        uint64_t cp = es_projector_checkpoint(f->m.p, NULL);
        assert_model(f->m.p, cp); /* read model == checkpoint, after any death */
        es_projector_destroy(f->m.p);
        f->m.p = NULL;
        if (cp == total) {
            break;
        }
        srand((unsigned)rand() + (unsigned)round);
    }
    assert_true(kills >= 3);
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    if (es_projector_checkpoint(f->m.p, NULL) < total) {
        assert_es(apply_range(f->m.p, 1, 4000 < total ? 4000 : total), ES_OK);
    }
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), total);
    assert_model(f->m.p, total);
    print_message("random kills: %d SIGKILLs, %llu events each applied once\n", kills,
                  (unsigned long long)total);
}

static void test_gap_refused(void **state)
{
    fixture *f = *state;
    /* One stream's revisions are gapless. */
    assert_es(open_p(f, ES_SUB_STREAM, "s-1", 0, NULL, 0), ES_OK);
    batch *b = make_batch(1, 3);
    for (size_t i = 0; i < b->n; i++) {
        b->ev[i].revision = i + 1; /* 1, 2, 3: the stream starts at 0 */
    }
    assert_es(es_projector_apply_batch(f->m.p, b->ev, b->n), ES_ERR_CORRUPT);
    free(b);
}

static void test_log_holes_accepted(void **state)
{
    fixture *f = *state;
    /* Deleted and expired events leave holes in the whole log: its
     * positions only have to rise. */
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 2, 5), ES_OK);
    assert_es(apply_range(f->m.p, 7, 8), ES_OK);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 8);
}

typedef struct life_seen {
    int n;
    char stream[64], type[32];
    uint64_t deleted_before;
    bool tombstoned;
} life_seen;

static life_seen g_life;

static es_err on_life(void *ctx, MDB_txn *txn, const es_projector_lifecycle *ch,
                      const es_recorded_event *ev)
{
    (void)ctx;
    (void)txn;
    (void)ev;
    g_life.n++;
    snprintf(g_life.stream, sizeof g_life.stream, "%s", ch->stream);
    snprintf(g_life.type, sizeof g_life.type, "%s", ch->type);
    g_life.deleted_before = ch->deleted_before;
    g_life.tombstoned = ch->tombstoned;
    return ES_OK;
}

static void test_lifecycle_hook(void **state)
{
    fixture *f = *state;
    es_projector_options o;
    es_projector_options_init(&o);
    o.dir = f->dir;
    o.dbs = test_dbs;
    o.n_dbs = 2;
    o.apply = apply_fn;
    o.ctx = &f->m;
    o.lifecycle = on_life;
    o.sync = ES_PROJECTOR_SYNC_NONE;
    assert_es(es_projector_create(&o, &f->m.p), ES_OK);
    batch *b = make_batch(1, 4);
    /* A tombstone of acc-9 (deleted before revision 7), as esd writes it. */
    uint8_t data[48 + 5] = {0};
    data[0] = 1;
    data[16] = 7;
    memcpy(data + 48, "acc-9", 5);
    b->ev[1].stream = "$lifecycle";
    b->ev[1].type = "$stream-tombstoned";
    b->ev[1].data = data;
    b->ev[1].data_len = sizeof data;
    uint8_t bad[10] = {0}; /* too short to be a change: skipped */
    b->ev[2].stream = "$lifecycle";
    b->ev[2].type = "$stream-deleted";
    b->ev[2].data = bad;
    b->ev[2].data_len = sizeof bad;
    memset(&g_life, 0, sizeof g_life);
    assert_es(es_projector_apply_batch(f->m.p, b->ev, b->n), ES_OK);
    free(b);
    assert_int_equal(g_life.n, 1);
    assert_string_equal(g_life.stream, "acc-9");
    assert_string_equal(g_life.type, "$stream-tombstoned");
    assert_int_equal(g_life.deleted_before, 7);
    assert_true(g_life.tombstoned);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 4);
}

static void test_filtered_positions(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_CATEGORY, "s", 0, NULL, 0), ES_OK);
    batch *b = make_batch(1, 10);
    es_recorded_event ev[3] = {b->ev[2], b->ev[4], b->ev[8]}; /* 3, 5, 9: gaps are normal */
    assert_es(es_projector_apply_batch(f->m.p, ev, 3), ES_OK);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 9);
    es_recorded_event back[2] = {b->ev[9], b->ev[9]}; /* 10, 10: not increasing */
    assert_es(es_projector_apply_batch(f->m.p, back, 2), ES_ERR_CORRUPT);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 9);
    assert_es(es_projector_apply_batch(f->m.p, &b->ev[9], 1), ES_OK);
    assert_model(f->m.p, 4);
    free(b);
}

static void test_stream_revisions(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_STREAM, "s-1", 0, NULL, 0), ES_OK);
    batch *b = make_batch(1, 5);                                               /* revisions 0..4 */
    assert_es(es_projector_apply_batch(f->m.p, &b->ev[1], 4), ES_ERR_CORRUPT); /* starts at 1 */
    assert_es(es_projector_apply_batch(f->m.p, b->ev, 5), ES_OK);
    bool has;
    assert_int_equal(es_projector_checkpoint(f->m.p, &has), 4);
    assert_true(has);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.head, 5); /* counted in events for a stream */
    assert_int_equal(st.lag, 0);
    free(b);
}

static void test_rebuild(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 1, 50), ES_OK);
    assert_es(es_projector_rebuild(f->m.p), ES_OK);
    bool has = true;
    assert_int_equal(es_projector_checkpoint(f->m.p, &has), 0);
    assert_false(has);
    assert_model(f->m.p, 0);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.rebuilds, 1);
    es_projector_destroy(f->m.p); /* the rebuild is durable */
    f->m.p = NULL;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    assert_false(es_projector_checkpoint(f->m.p, &has) != 0 || has);
    assert_model(f->m.p, 0);
    assert_es(apply_range(f->m.p, 1, 50), ES_OK); /* from zero again: each once */
    assert_model(f->m.p, 50);
}

static void test_other_projection_refused(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_CATEGORY, "account", 0, NULL, 0), ES_OK);
    es_projector_destroy(f->m.p);
    f->m.p = NULL;
    char msg[256] = "";
    assert_es(open_p(f, ES_SUB_CATEGORY, "order", 0, msg, sizeof msg), ES_ERR_INCOMPATIBLE_STORE);
    assert_null(f->m.p);
    assert_non_null(strstr(msg, "another subscription"));
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, msg, sizeof msg), ES_ERR_INCOMPATIBLE_STORE);
    assert_es(open_p(f, ES_SUB_CATEGORY, "account", 0, NULL, 0), ES_OK);
}

static void test_invalid_options(void **state)
{
    fixture *f = *state;
    es_projector *p = NULL;
    es_projector_options o;
    es_projector_options_init(&o);
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT); /* no dir, no apply */
    o.dir = f->dir;
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT); /* no apply */
    o.apply = apply_fn;
    o.ctx = &f->m;
    es_projector_db bad[] = {{"$x", 0}};
    o.dbs = bad;
    o.n_dbs = 1;
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT);
    es_projector_db twice[] = {{"a", 0}, {"a", 0}};
    o.dbs = twice;
    o.n_dbs = 2;
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT);
    o.n_dbs = 1;
    o.name = "x"; /* a name with ES_SUB_ALL */
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT);
    o.name = NULL;
    o.target = ES_SUB_CATEGORY; /* no name */
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT);
    o.target = (es_sub_target)42;
    assert_es(es_projector_create(&o, &p), ES_ERR_INVALID_ARGUMENT);
    assert_null(p);
    assert_es(es_projector_create(NULL, &p), ES_ERR_INVALID_ARGUMENT);
    /* a file where the directory should be */
    char path[300];
    snprintf(path, sizeof path, "%s/file", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    o.target = ES_SUB_ALL;
    o.dir = path;
    assert_true(es_projector_create(&o, &p) != ES_OK);
    assert_null(p);
}

static void test_map_full(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 256 * 1024, NULL, 0), ES_OK);
    assert_es(apply_range(f->m.p, 1, 10), ES_OK);
    f->m.value_bytes = 60000; /* 100 of those do not fit in 256 KiB */
    assert_es(apply_range(f->m.p, 11, 110), ES_ERR_STORE_FULL);
    assert_int_equal(es_projector_checkpoint(f->m.p, NULL), 10);
    es_projector_status st;
    es_projector_status_get(f->m.p, &st);
    assert_int_equal(st.last_error, ES_ERR_STORE_FULL);
    f->m.value_bytes = 0;
    assert_model(f->m.p, 10);
    assert_es(apply_range(f->m.p, 11, 20), ES_OK); /* still usable */
    assert_model(f->m.p, 20);
}

static void test_err_mapping(void **state)
{
    (void)state;
    assert_int_equal(es_projector_err_from_mdb(MDB_SUCCESS), ES_OK);
    assert_int_equal(es_projector_err_from_mdb(MDB_NOTFOUND), ES_ERR_NOT_FOUND);
    assert_int_equal(es_projector_err_from_mdb(MDB_MAP_FULL), ES_ERR_STORE_FULL);
    assert_int_equal(es_projector_err_from_mdb(ENOSPC), ES_ERR_STORE_FULL);
    assert_int_equal(es_projector_err_from_mdb(MDB_CORRUPTED), ES_ERR_CORRUPT);
    assert_int_equal(es_projector_err_from_mdb(MDB_PAGE_NOTFOUND), ES_ERR_CORRUPT);
    assert_int_equal(es_projector_err_from_mdb(MDB_INVALID), ES_ERR_INCOMPATIBLE_STORE);
    assert_int_equal(es_projector_err_from_mdb(MDB_VERSION_MISMATCH), ES_ERR_INCOMPATIBLE_STORE);
    assert_int_equal(es_projector_err_from_mdb(MDB_BAD_VALSIZE), ES_ERR_TOO_LARGE);
    assert_int_equal(es_projector_err_from_mdb(MDB_TXN_FULL), ES_ERR_TOO_LARGE);
    assert_int_equal(es_projector_err_from_mdb(MDB_READERS_FULL), ES_ERR_BUSY);
    assert_int_equal(es_projector_err_from_mdb(ENOMEM), ES_ERR_NO_MEMORY);
    assert_int_equal(es_projector_err_from_mdb(EIO), ES_ERR_IO);
}

/* Events per second through es_projector_apply_batch, batches of 512. */
static void test_throughput(void **state)
{
    fixture *f = *state;
    assert_es(open_p(f, ES_SUB_ALL, NULL, 0, NULL, 0), ES_OK);
    const uint64_t total = 100000;
    batch *b = make_batch(1, 512);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t from = 1; from <= total; from += 512) {
        size_t n = 0;
        for (uint64_t pos = from; pos <= total && n < 512; pos++, n++) {
            b->ev[n].position = pos;
        }
        assert_es(es_projector_apply_batch(f->m.p, b->ev, n), ES_OK);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(b);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_model(f->m.p, total);
    print_message("apply_batch: %llu events in %.3f s = %.0f events/s (no sync, batches of 512)\n",
                  (unsigned long long)total, s, (double)total / s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handler_failure_aborts_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_before_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_holes_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filtered_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_revisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_projection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_mapping, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
    };
    return cmocka_run_group_tests_name("projector", tests, NULL, NULL);
}

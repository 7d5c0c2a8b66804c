/*
 * test_store_check — damage and housekeeping: a flipped byte or header,
 * broken indexes, a truncated data file, store_check, backups, statistics
 * (server/store/check.c), against the contract in store.h. Fixture and
 * helpers: store_fixture.h.
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

/* ============================================================ corruption == */

typedef struct pos_log {
    uint64_t pos[256];
    size_t n;
} pos_log;

static int pos_visit(void *ctx, const store_record *rec)
{
    pos_log *p = ctx;
    Es__V1__RecordedEvent *e = es__v1__recorded_event__unpack(NULL, rec->len, rec->bytes);
    assert_non_null(e); /* anything handed out decodes */
    es__v1__recorded_event__free_unpacked(e, NULL);
    if (p->n < ARRAY_LEN(p->pos)) {
        p->pos[p->n++] = rec->position;
    }
    return 0;
}

static bool pos_seen(const pos_log *p, uint64_t pos)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->pos[i] == pos) {
            return true;
        }
    }
    return false;
}

static void test_flipped_byte_caught(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    add(f, "acc-2", 2);
    add(f, "acc-1", 3); /* acc-1 at positions 1,2,3,6,7,8 */
    assert_check_clean(f->s);
    store_close(f->s);
    f->s = NULL;
    const uint64_t bad = 3;
    raw_flip_record_byte(f->path, bad, 8 + 20); /* inside the payload */
    fx_open(f);
    store_check_report rep;
    int lines = 0;
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, check_log_print, &lines));
    assert_true(rep.crc_errors >= 1);
    assert_int_equal(rep.first_bad_position, bad);
    assert_int_equal(rep.events_checked, 8);
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, NULL, NULL));

    /* Stream reads stop at the record, never hand it out. */
    pos_log p = {0};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("acc-1"), 5, 0, false, 0, pos_visit, &p, &pg));
    assert_false(pos_seen(&p, bad));
    assert_int_equal(p.n, 2); /* positions 1 and 2 came before it */
    p.n = 0;
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("acc-1"), 5, UINT64_MAX, true, 0, pos_visit, &p, &pg));
    assert_false(pos_seen(&p, bad));
    /* Reads that do not touch it work. */
    p.n = 0;
    assert_rv(ES_OK, store_read_stream(f->s, U8("acc-1"), 5, 3, false, 0, pos_visit, &p, &pg));
    assert_int_equal(p.n, 3);
    p.n = 0;
    assert_rv(ES_OK, store_read_stream(f->s, U8("acc-2"), 5, 0, false, 0, pos_visit, &p, &pg));
    assert_int_equal(p.n, 2);
    /* The global log, forward, backward, and through each index. */
    p.n = 0;
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, NULL, 0, false, 0, pos_visit, &p, &pg));
    assert_false(pos_seen(&p, bad));
    p.n = 0;
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, NULL, UINT64_MAX, true, 0, pos_visit, &p, &pg));
    assert_false(pos_seen(&p, bad));
    const store_filter flts[] = {
        {STORE_FILTER_CATEGORY, U8("acc"), 3},
        {STORE_FILTER_EVENT_TYPE, U8("T"), 1},
        {STORE_FILTER_STREAM_PREFIX, U8("acc-2"), 5},
    };
    for (size_t i = 0; i < ARRAY_LEN(flts); i++) {
        p.n = 0;
        assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, &flts[i], 0, false, 0, pos_visit, &p, &pg));
        assert_false(pos_seen(&p, bad));
    }
    p.n = 0;
    assert_rv(ES_OK, store_read_all(f->s, NULL, 4, false, 0, pos_visit, &p, &pg));
    assert_int_equal(p.n, 5);
    /* Appends go on (the damaged record is not on their path). */
    add(f, "acc-3", 1);
    assert_int_equal(store_head(f->s), 9);
}

static void test_damaged_record_header_caught(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "s-1", 3);
    store_close(f->s);
    f->s = NULL;
    raw_flip_record_byte(f->path, 1, 0); /* the format byte of the header */
    raw_flip_record_byte(f->path, 2, 5); /* the stored CRC */
    /* Position 3: a record too short to hold a header. */
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 3};
    raw_put(f->path, "events", key, 8, "abc", 3);
    fx_open(f);
    store_check_report rep;
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, NULL, NULL));
    assert_int_equal(rep.crc_errors, 3);
    assert_int_equal(rep.first_bad_position, 1);
    pos_log p = {0};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("s-1"), 3, 2, false, 0, pos_visit, &p, &pg));
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("s-1"), 3, 2, true, 0, pos_visit, &p, &pg));
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, NULL, 3, false, 0, pos_visit, &p, &pg));
    assert_int_equal(p.n, 0);
}

static void test_check_finds_index_damage(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "s-1", 3);
    add(f, "s-2", 2);
    store_close(f->s);
    f->s = NULL;
    /* Remove one event-id entry: the idempotency index no longer covers it. */
    MDB_env *env = raw_env(f->path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "event_ids", 0, &dbi), 0);
    MDB_cursor *cur;
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    MDB_val k, v;
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
    assert_int_equal(mdb_cursor_del(cur, 0), 0);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    fx_open(f);
    store_check_report rep;
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, NULL, NULL));
    assert_true(rep.index_errors >= 1);
    assert_int_equal(rep.crc_errors, 0);
    store_close(f->s);
    f->s = NULL;
    /* Remove one record from the log: a gap. */
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 2};
    raw_del(f->path, "events", key, 8);
    fx_open(f);
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, NULL, NULL));
    assert_int_equal(rep.position_gaps, 1);
    pos_log p = {0};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("s-1"), 3, 0, false, 0, pos_visit, &p, &pg));
    assert_int_equal(p.n, 1);
}

/*
 * Open a damaged store, check it and read everything, in a child process:
 * a crash (SIGBUS on a missing page) fails the test instead of the suite.
 * The child exits 0 when every call returned an allowed outcome.
 */
static int damaged_child(const char *path)
{
    store *s = NULL;
    char msg[512] = "";
    es_err rv = try_open(path, TEST_MAP_SIZE, false, false, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        /* Refused at open: fine when it says why. */
        bool ok = (rv == ES_ERR_CORRUPT || rv == ES_ERR_INCOMPATIBLE_STORE) && msg[0];
        if (!ok) {
            fprintf(stderr, "open: %s: %s\n", es_errname(rv), msg);
        }
        return ok ? 0 : 1;
    }
    store_check_report rep;
    rv = store_check(s, &rep, NULL, NULL);
    if (rv != ES_OK && rv != ES_ERR_CORRUPT) {
        return 2;
    }
    uint64_t n = 0;
    store_page pg;
    rv = store_read_all(s, NULL, 0, false, 0, count_visit, &n, &pg);
    store_close(s);
    return rv == ES_OK || rv == ES_ERR_CORRUPT ? 0 : 3;
}

static void test_truncated_data_file(void **state)
{
    fx *f = *state;
    fx_open(f);
    static uint8_t payload[1000];
    memset(payload, 'z', sizeof payload);
    for (int i = 0; i < 100; i++) {
        evset e;
        evset_make(&e, f, 10, "T");
        for (size_t k = 0; k < e.n; k++) {
            e.in[k].data = payload;
            e.in[k].data_len = sizeof payload;
        }
        char name[32];
        snprintf(name, sizeof name, "t-%d", i % 9);
        assert_rv(ES_OK, append_ev(f->s, name, STORE_EXPECT_ANY, 0, &e, NULL));
        evset_free(&e);
    }
    store_close(f->s);
    f->s = NULL;
    char data[700];
    snprintf(data, sizeof data, "%s/data.mdb", f->path);
    size_t len;
    uint8_t *orig = read_file(data, &len);
    assert_true(len > 64 * 4096);
    const size_t cuts[] = {len - 1,  len - 4096, len - 3 * 4096, len / 2, len / 10,
                           2 * 4096, 4096 + 100, 4096,           100,     0};
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
        write_file(data, orig, len);
        assert_int_equal(truncate(data, (off_t)cuts[i]), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            _exit(damaged_child(f->path));
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fail_msg("data file cut to %zu of %zu bytes: child %s %d", cuts[i], len,
                     WIFSIGNALED(status) ? "killed by signal" : "exited with",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
        /* The refusal changed nothing. */
        struct stat st;
        assert_int_equal(stat(data, &st), 0);
        assert_int_equal((size_t)st.st_size, cuts[i]);
    }
    /* Put back whole, it opens and checks clean. */
    write_file(data, orig, len);
    free(orig);
    fx_open(f);
    assert_int_equal(store_head(f->s), 1000);
    assert_check_clean(f->s);
}

/* ====================================================== check and backup == */

static void test_check_clean_many_streams(void **state)
{
    fx *f = *state;
    fx_open(f);
    enum { STREAMS = 300 };
    store_request reqs[STREAMS];
    store_append_in ap[STREAMS];
    store_append_result res[STREAMS];
    evset e[STREAMS];
    char names[STREAMS][32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < STREAMS; i++) {
            snprintf(names[i], sizeof names[i], "%s-%d", i % 3 == 0 ? "order" : "cust", i);
            evset_make(&e[i], f, 1 + (size_t)((i + round) % 4), i % 2 ? "Created" : "Updated");
            ap[i] = mk_append(names[i], STORE_EXPECT_ANY, 0, &e[i]);
            reqs[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
        }
        assert_rv(ES_OK, store_append_batch(f->s, reqs, STREAMS));
        for (int i = 0; i < STREAMS; i++) {
            assert_rv(ES_OK, reqs[i].rv);
            evset_free(&e[i]);
        }
    }
    /* A stream whose category is empty ("-x": the part before the '-'). */
    add(f, "-lead", 2);
    store_check_report rep;
    assert_rv(ES_OK, store_check(f->s, &rep, check_log_print, NULL));
    assert_int_equal(rep.streams_checked, STREAMS + 1);
    assert_int_equal(rep.events_checked, store_head(f->s));
    assert_int_equal(rep.crc_errors + rep.position_gaps + rep.revision_errors + rep.index_errors,
                     0);
    assert_int_equal(rep.first_bad_position, 0);
    store_stats st;
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_int_equal(st.stream_count, STREAMS + 1);
    assert_int_equal(st.event_count, rep.events_checked);
}

static void test_backup(void **state)
{
    fx *f = *state;
    fx_open(f);
    for (int i = 0; i < 50; i++) {
        char name[32];
        snprintf(name, sizeof name, "acct-%d", i % 7);
        add(f, name, 1 + (size_t)(i % 3));
    }
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("acct-1"), 6, 0, 3, U8("snap"), 4));
    char dest[700];
    snprintf(dest, sizeof dest, "%s/backup", f->root);
    assert_rv(ES_OK, store_backup(f->s, dest));
    /* The source goes on; the backup is the state at the time. */
    uint64_t head = store_head(f->s);
    add(f, "acct-0", 1);
    store *b = open_at(dest, TEST_MAP_SIZE, false, false);
    assert_int_equal(store_head(b), head);
    assert_memory_equal(store_id(b), store_id(f->s), STORE_ID_BYTES);
    store_check_report rep;
    assert_rv(ES_OK, store_check(b, &rep, check_log_print, NULL));
    assert_int_equal(rep.events_checked, head);
    store_snapshot snap;
    assert_rv(ES_OK, store_load_snapshot(b, U8("acct-1"), 6, &snap));
    assert_memory_equal(snap.data, "snap", 4);
    free(snap.data);
    /* Same records, byte for byte. */
    coll c1 = {0}, c2 = {0};
    read_all_fwd(b, NULL, 0, &c2);
    read_all_fwd(f->s, NULL, 0, &c1);
    assert_int_equal(c2.n, head);
    for (size_t i = 0; i < c2.n; i++) {
        assert_true(bin_is(c2.ev[i]->id, c1.ev[i]->id.data, 16));
        assert_int_equal(c2.ev[i]->revision, c1.ev[i]->revision);
    }
    coll_free(&c1);
    coll_free(&c2);
    /* The backup is a working store of its own. */
    evset e;
    evset_make(&e, f, 1, "T");
    assert_rv(ES_OK, append_ev(b, "acct-0", STORE_EXPECT_ANY, 0, &e, NULL));
    evset_free(&e);
    assert_int_equal(store_head(b), head + 1);
    store_close(b);

    /* Into a non-empty directory (the backup itself), or onto a file. */
    assert_rv(ES_ERR_INVALID_ARGUMENT, store_backup(f->s, dest));
    char file[800];
    snprintf(file, sizeof file, "%s/data.mdb", dest);
    assert_rv(ES_ERR_INVALID_ARGUMENT, store_backup(f->s, file));
    char other[700];
    snprintf(other, sizeof other, "%s/other", f->root);
    assert_int_equal(mkdir(other, 0700), 0);
    char note[800];
    snprintf(note, sizeof note, "%s/keep.txt", other);
    write_file(note, "keep", 4);
    assert_rv(ES_ERR_INVALID_ARGUMENT, store_backup(f->s, other));
    char list[256];
    dir_listing(other, list, sizeof list);
    assert_string_equal(list, "keep.txt/");
    /* Into an existing empty directory: fine. Into a missing parent: IO. */
    char empty[700];
    snprintf(empty, sizeof empty, "%s/empty", f->root);
    assert_int_equal(mkdir(empty, 0700), 0);
    assert_rv(ES_OK, store_backup(f->s, empty));
    b = open_at(empty, TEST_MAP_SIZE, false, true);
    assert_int_equal(store_head(b), head + 1);
    store_close(b);
    char missing[800];
    snprintf(missing, sizeof missing, "%s/no/such/dir", f->root);
    assert_rv(ES_ERR_IO, store_backup(f->s, missing));
}

static void test_stats(void **state)
{
    fx *f = *state;
    f->s = open_at(f->path, 64u << 20, true, false);
    store_stats st;
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_true(st.sync);
    assert_int_equal(st.map_size, 64u << 20);
    assert_int_equal(st.readers_max, 126);
    uint64_t used0 = st.map_used;
    /* Sync on: every request of the commit says synced. */
    evset e1, e2;
    evset_make(&e1, f, 3, "T");
    evset_make(&e2, f, 2, "T");
    store_append_in a1 = mk_append("a-1", STORE_EXPECT_ANY, 0, &e1);
    store_append_in a2 = mk_append("b-1", STORE_EXPECT_ANY, 0, &e2);
    store_append_result r1, r2;
    store_request reqs[2] = {
        {.appends = &a1, .n_appends = 1, .results = &r1},
        {.appends = &a2, .n_appends = 1, .results = &r2},
    };
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 2));
    assert_true(reqs[0].synced);
    assert_true(reqs[1].synced);
    evset_free(&e1);
    evset_free(&e2);
    for (int i = 0; i < 20; i++) {
        add(f, i % 2 ? "a-1" : "c-1", 50);
    }
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_int_equal(st.head_position, 1005);
    assert_int_equal(st.event_count, 1005);
    assert_int_equal(st.stream_count, 3);
    assert_int_equal(st.format_version, STORE_FORMAT_VERSION);
    assert_true(st.map_used > used0);
    assert_true(st.map_used <= st.map_size);
    assert_true(st.readers_used <= st.readers_max);
    assert_memory_equal(st.store_id, store_id(f->s), STORE_ID_BYTES);
    /* Sync off. */
    store_close(f->s);
    f->s = NULL;
    f->s = open_at(f->path, 64u << 20, false, false);
    evset_make(&e1, f, 1, "T");
    a1 = mk_append("a-1", STORE_EXPECT_EXACT, 502, &e1); /* 3 + 10 x 50 events */
    store_request r = {.appends = &a1, .n_appends = 1, .results = &r1};
    assert_rv(ES_OK, store_append_batch(f->s, &r, 1));
    assert_rv(ES_OK, r.rv);
    assert_false(r.synced);
    evset_free(&e1);
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_false(st.sync);
    assert_int_equal(st.event_count, 1006);
}

/* ================================================================== main == */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_flipped_byte_caught),
        T(test_damaged_record_header_caught),
        T(test_check_finds_index_damage),
        T(test_truncated_data_file),
        T(test_check_clean_many_streams),
        T(test_backup),
        T(test_stats),
    };
    return cmocka_run_group_tests_name("store_check", tests, NULL, NULL);
}

/*
 * test_store_open — opening a data directory: creation, reopening,
 * read-only, and every kind of directory that is refused and left as it was
 * found (server/store/open.c), against the contract in store.h. Fixture and
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
/* ============================================================ open/close == */

static void test_open_creates_and_close(void **state)
{
    fx *f = *state;
    store_close(NULL); /* accepted */
    uint64_t t0 = store_now_us();
    fx_open(f);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    store_stats ss;
    assert_rv(ES_OK, store_stats_get(f->s, &ss));
    assert_int_equal(ss.format_version, STORE_FORMAT_VERSION);
    assert_int_equal(ss.head_position, 0);
    assert_int_equal(ss.event_count, 0);
    assert_int_equal(ss.stream_count, 0);
    assert_int_equal(ss.map_size, TEST_MAP_SIZE);
    assert_true(ss.created_us >= t0 && ss.created_us <= store_now_us());
    assert_false(ss.sync);
    assert_int_equal(store_head(f->s), 0);
    static const uint8_t zero[STORE_ID_BYTES];
    assert_memory_not_equal(store_id(f->s), zero, STORE_ID_BYTES);
    assert_memory_equal(store_id(f->s), ss.store_id, STORE_ID_BYTES);
    assert_check_clean(f->s);

    /* A second, independent store gets another id. */
    char other[700];
    snprintf(other, sizeof other, "%s/other", f->root);
    store *s2 = open_at(other, TEST_MAP_SIZE, true, false);
    assert_memory_not_equal(store_id(s2), store_id(f->s), STORE_ID_BYTES);
    store_stats ss2;
    assert_rv(ES_OK, store_stats_get(s2, &ss2));
    assert_true(ss2.sync);
    store_close(s2);

    /* No path. */
    store_options o = {0};
    store *s3 = (store *)1;
    assert_rv(ES_ERR_INVALID_ARGUMENT, store_open(&o, &s3, NULL, 0));
    assert_null(s3);
}

static void test_open_default_map_size_and_readers(void **state)
{
    fx *f = *state;
    store_options o = {.path = f->path, .max_readers = 7};
    f->s = open_opts(&o);
    store_stats ss;
    assert_rv(ES_OK, store_stats_get(f->s, &ss));
    assert_int_equal(ss.map_size,
                     sizeof(size_t) >= 8 ? STORE_DEFAULT_MAP_SIZE_64 : STORE_DEFAULT_MAP_SIZE_32);
    assert_int_equal(ss.readers_max, 7);
    assert_true(ss.map_used > 0 && ss.map_used <= ss.map_size);
    assert_true(ss.sync == false);
    assert_int_equal(store_reader_check(f->s), 0);
}

static void test_reopen_keeps_everything(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "account-1", 3);
    add(f, "account-2", 2);
    add(f, "account-1", 1);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("account-1"), 9, 2, 7, U8("snap"), 4));
    uint8_t id[STORE_ID_BYTES];
    memcpy(id, store_id(f->s), STORE_ID_BYTES);
    store_stats before;
    assert_rv(ES_OK, store_stats_get(f->s, &before));
    store_stream_info si1, si2;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("account-1"), 9, &si1));
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("account-2"), 9, &si2));
    coll c1 = {0};
    read_all_fwd(f->s, NULL, 0, &c1);

    fx_reopen(f);
    assert_memory_equal(store_id(f->s), id, STORE_ID_BYTES);
    store_stats after;
    assert_rv(ES_OK, store_stats_get(f->s, &after));
    assert_int_equal(after.head_position, 6);
    assert_int_equal(store_head(f->s), 6);
    assert_int_equal(after.event_count, before.event_count);
    assert_int_equal(after.stream_count, 2);
    assert_int_equal(after.created_us, before.created_us);
    assert_memory_equal(after.store_id, id, STORE_ID_BYTES);
    store_stream_info a1, a2;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("account-1"), 9, &a1));
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("account-2"), 9, &a2));
    assert_memory_equal(&a1, &si1, sizeof a1);
    assert_memory_equal(&a2, &si2, sizeof a2);
    coll c2 = {0};
    read_all_fwd(f->s, NULL, 0, &c2);
    assert_int_equal(c2.n, c1.n);
    for (size_t i = 0; i < c1.n; i++) {
        assert_int_equal(c2.ev[i]->position, c1.ev[i]->position);
        assert_int_equal(c2.ev[i]->revision, c1.ev[i]->revision);
        assert_int_equal(c2.ev[i]->recorded_at_us, c1.ev[i]->recorded_at_us);
        assert_true(bin_is(c2.ev[i]->stream, c1.ev[i]->stream.data, c1.ev[i]->stream.len));
        assert_true(bin_is(c2.ev[i]->id, c1.ev[i]->id.data, c1.ev[i]->id.len));
        assert_true(bin_is(c2.ev[i]->data, c1.ev[i]->data.data, c1.ev[i]->data.len));
    }
    coll_free(&c1);
    coll_free(&c2);
    store_snapshot snap;
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("account-1"), 9, &snap));
    assert_int_equal(snap.revision, 2);
    assert_int_equal(snap.state_format, 7);
    assert_int_equal(snap.data_len, 4);
    assert_memory_equal(snap.data, "snap", 4);
    free(snap.data);

    /* The store goes on where it stopped: positions, revisions, and new
     * streams get new interned numbers (no collision with the old ones). */
    store_append_result r = add(f, "account-1", 1);
    assert_int_equal(r.first_revision, 4);
    assert_int_equal(r.first_position, 7);
    r = add(f, "account-3", 2);
    assert_int_equal(r.first_revision, 0);
    assert_int_equal(r.first_position, 8);
    store_stream_info a3;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("account-3"), 9, &a3));
    assert_true(a3.number != a1.number && a3.number != a2.number);
    coll c3 = {0};
    read_stream_all(f->s, "account-2", 0, &c3);
    assert_int_equal(c3.n, 2);
    coll_free(&c3);
    assert_check_clean(f->s);

    /* Read-only reopen sees the same. */
    store_close(f->s);
    f->s = NULL;
    f->s = open_at(f->path, TEST_MAP_SIZE, false, true);
    assert_int_equal(store_head(f->s), 9);
    assert_memory_equal(store_id(f->s), id, STORE_ID_BYTES);
    assert_check_clean(f->s);
}

static void test_open_foreign_directory_refused(void **state)
{
    fx *f = *state;
    assert_int_equal(mkdir(f->path, 0700), 0);
    char file[700];
    snprintf(file, sizeof file, "%s/notes.txt", f->path);
    write_file(file, "my notes\n", 9);
    char before[256], after[256];
    dir_listing(f->path, before, sizeof before);
    for (int ro = 0; ro <= 1; ro++) {
        store *s = (store *)1;
        char msg[256] = "";
        assert_rv(ES_ERR_INCOMPATIBLE_STORE,
                  try_open(f->path, TEST_MAP_SIZE, false, ro, &s, msg, sizeof msg));
        assert_null(s);
        assert_true(strlen(msg) > 0);
        dir_listing(f->path, after, sizeof after);
        assert_string_equal(after, before);
        assert_string_equal(after, "notes.txt/");
    }
    size_t len;
    uint8_t *content = read_file(file, &len);
    assert_int_equal(len, 9);
    assert_memory_equal(content, "my notes\n", 9);
    free(content);

    /* A regular file where the directory should be. */
    store *s = NULL;
    assert_rv(ES_ERR_INCOMPATIBLE_STORE, try_open(file, TEST_MAP_SIZE, false, false, &s, NULL, 0));
    assert_null(s);
    content = read_file(file, &len);
    assert_int_equal(len, 9);
    free(content);
}

static void test_open_plain_lmdb_refused(void **state)
{
    fx *f = *state;
    assert_int_equal(mkdir(f->path, 0700), 0);
    /* Another program's LMDB environment: a key in the main database and a
     * named database of its own. */
    raw_put(f->path, NULL, "hello", 5, "world", 5);
    raw_put(f->path, "accounts", "k", 1, "v", 1);
    char data[700];
    snprintf(data, sizeof data, "%s/data.mdb", f->path);
    size_t len0;
    uint8_t *before = read_file(data, &len0);
    char list0[256];
    dir_listing(f->path, list0, sizeof list0);
    for (int ro = 0; ro <= 1; ro++) {
        store *s = (store *)1;
        char msg[256] = "";
        assert_rv(ES_ERR_INCOMPATIBLE_STORE,
                  try_open(f->path, TEST_MAP_SIZE, false, ro, &s, msg, sizeof msg));
        assert_null(s);
        assert_true(strlen(msg) > 0);
    }
    size_t len1;
    uint8_t *after = read_file(data, &len1);
    assert_int_equal(len1, len0);
    assert_memory_equal(after, before, len0);
    char list1[256];
    dir_listing(f->path, list1, sizeof list1);
    assert_string_equal(list1, list0);
    free(before);
    free(after);
}

static void test_open_plain_lmdb_named_db_only_refused(void **state)
{
    fx *f = *state;
    assert_int_equal(mkdir(f->path, 0700), 0);
    raw_put(f->path, "other", "k", 1, "v", 1);
    store *s = NULL;
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(f->path, TEST_MAP_SIZE, false, false, &s, NULL, 0));
    assert_null(s);
    /* Still the other program's environment, with its data. */
    MDB_env *env = raw_env(f->path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), MDB_NOTFOUND);
    assert_int_equal(mdb_dbi_open(txn, "other", 0, &dbi), 0);
    MDB_val k = {1, (void *)"k"}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static void test_open_plain_lmdb_meta_value_refused(void **state)
{
    fx *f = *state;
    assert_int_equal(mkdir(f->path, 0700), 0);
    /* "meta" in the main database as a plain key, not a database. */
    raw_put(f->path, NULL, "meta", 4, "not a db", 8);
    for (int ro = 0; ro <= 1; ro++) {
        store *s = (store *)1;
        assert_rv(ES_ERR_INCOMPATIBLE_STORE,
                  try_open(f->path, TEST_MAP_SIZE, false, ro, &s, NULL, 0));
        assert_null(s);
    }
    /* An esd store that lost one of its databases: refused read-only. */
    char other[700];
    snprintf(other, sizeof other, "%s/other", f->root);
    store *s = open_at(other, TEST_MAP_SIZE, false, false);
    store_close(s);
    MDB_env *env = raw_env(other);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    s = (store *)1;
    assert_rv(ES_ERR_INCOMPATIBLE_STORE, try_open(other, TEST_MAP_SIZE, false, true, &s, NULL, 0));
    assert_null(s);
}

static void test_open_not_lmdb_refused(void **state)
{
    fx *f = *state;
    assert_int_equal(mkdir(f->path, 0700), 0);
    char data[700];
    snprintf(data, sizeof data, "%s/data.mdb", f->path);
    size_t n = 16384;
    uint8_t *junk = malloc(n);
    assert_non_null(junk);
    for (size_t i = 0; i < n; i++) {
        junk[i] = (uint8_t)("not an lmdb file, just text. "[i % 29]);
    }
    write_file(data, junk, n);
    for (int ro = 0; ro <= 1; ro++) {
        store *s = (store *)1;
        char msg[256] = "";
        assert_rv(ES_ERR_INCOMPATIBLE_STORE,
                  try_open(f->path, TEST_MAP_SIZE, false, ro, &s, msg, sizeof msg));
        assert_null(s);
        assert_true(strlen(msg) > 0);
    }
    size_t len;
    uint8_t *after = read_file(data, &len);
    assert_int_equal(len, n);
    assert_memory_equal(after, junk, n);
    free(after);
    free(junk);
    /* Nothing was added beside it. */
    char list[256];
    dir_listing(f->path, list, sizeof list);
    assert_string_equal(list, "data.mdb/");

    /* A data file shorter than one LMDB page. */
    write_file(data, "short", 5);
    store *s = NULL;
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(f->path, TEST_MAP_SIZE, false, false, &s, NULL, 0));
    assert_null(s);
    after = read_file(data, &len);
    assert_int_equal(len, 5);
    free(after);
}

static void test_open_wrong_format_refused(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "a-1", 2);
    store_close(f->s);
    f->s = NULL;
    uint8_t fmt[4] = {STORE_FORMAT_VERSION + 1, 0, 0, 0}; /* the next format, little-endian */
    raw_put(f->path, "meta", "format", 6, fmt, 4);
    for (int ro = 0; ro <= 1; ro++) {
        store *s = (store *)1;
        char msg[256] = "";
        assert_rv(ES_ERR_INCOMPATIBLE_STORE,
                  try_open(f->path, TEST_MAP_SIZE, false, ro, &s, msg, sizeof msg));
        assert_null(s);
        char want[32];
        snprintf(want, sizeof want, "format %u", STORE_FORMAT_VERSION + 1);
        assert_non_null(strstr(msg, want));
    }
    /* A format field of the wrong size. */
    raw_put(f->path, "meta", "format", 6, fmt, 3);
    store *s = NULL;
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(f->path, TEST_MAP_SIZE, false, false, &s, NULL, 0));
    /* The current format again: opens with its events. */
    fmt[0] = STORE_FORMAT_VERSION;
    raw_put(f->path, "meta", "format", 6, fmt, 4);
    fx_open(f);
    assert_int_equal(store_head(f->s), 2);
    store_close(f->s);
    f->s = NULL;
    /* The magic gone: not an esd store. */
    raw_del(f->path, "meta", "magic", 5);
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(f->path, TEST_MAP_SIZE, false, false, &s, NULL, 0));
    assert_null(s);
}

static void test_open_read_only(void **state)
{
    fx *f = *state;
    store *s = (store *)1;
    char msg[256] = "";
    /* Missing directory: not found, and not created. */
    assert_rv(ES_ERR_NOT_FOUND, try_open(f->path, TEST_MAP_SIZE, false, true, &s, msg, sizeof msg));
    assert_null(s);
    struct stat st;
    assert_int_equal(stat(f->path, &st), -1);
    assert_int_equal(errno, ENOENT);
    /* Empty directory: no store there either. */
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_rv(ES_ERR_NOT_FOUND, try_open(f->path, TEST_MAP_SIZE, false, true, &s, msg, sizeof msg));
    assert_null(s);
    char list[256];
    dir_listing(f->path, list, sizeof list);
    assert_string_equal(list, "");

    fx_open(f);
    add(f, "s-1", 3);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 0, 1, U8("x"), 1));
    store_close(f->s);
    f->s = NULL;
    f->s = open_at(f->path, TEST_MAP_SIZE, false, true);
    state_snap ss = snap_state(f->s);
    assert_int_equal(ss.head, 3);

    evset e;
    evset_make(&e, f, 2, "T");
    store_append_in a = mk_append("s-1", STORE_EXPECT_ANY, 0, &e);
    store_append_in b = mk_append("s-2", STORE_EXPECT_NO_STREAM, 0, &e);
    store_append_result res[2];
    store_request reqs[2] = {
        {.appends = &a, .n_appends = 1, .results = &res[0]},
        {.appends = &b, .n_appends = 1, .results = &res[1]},
    };
    assert_rv(ES_ERR_READ_ONLY, store_append_batch(f->s, reqs, 2));
    assert_rv(ES_ERR_READ_ONLY, reqs[0].rv);
    assert_rv(ES_ERR_READ_ONLY, reqs[1].rv);
    assert_rv(ES_ERR_READ_ONLY, store_save_snapshot(f->s, U8("s-1"), 3, 1, 1, U8("y"), 1));
    assert_same_state(f->s, ss);
    evset_free(&e);

    /* Reads work. */
    coll c = {0};
    read_stream_all(f->s, "s-1", 0, &c);
    assert_int_equal(c.n, 3);
    coll_free(&c);
    store_snapshot snap;
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.data_len, 1);
    assert_memory_equal(snap.data, "x", 1);
    free(snap.data);
    assert_check_clean(f->s);
}

/* ================================================================== main == */

/* One writable open per directory: a second one (here, in the same
 * process: the lock is per open file) is refused naming the owner's pid;
 * read-only opens go beside it; closing frees the directory. */
static void test_open_directory_owned(void **state)
{
    fx *f = *state;
    fx_open(f);
    long pid = 0;
    assert_true(store_dir_owned(f->path, &pid));
    assert_int_equal(pid, (long)getpid());
    store *s2 = NULL;
    char msg[512] = "";
    assert_rv(ES_ERR_BUSY, try_open(f->path, TEST_MAP_SIZE, false, false, &s2, msg, sizeof msg));
    assert_null(s2);
    char want[64];
    snprintf(want, sizeof want, "pid %ld", (long)getpid());
    assert_non_null(strstr(msg, want));
    store *ro = open_at(f->path, TEST_MAP_SIZE, false, true);
    store_close(ro);
    add(f, "owned-1", 1); /* the owner was not disturbed */
    store_close(f->s);
    f->s = NULL;
    assert_false(store_dir_owned(f->path, &pid));
    fx_open(f);
    assert_int_equal(last_rev(f->s, "owned-1"), 0);
}

/* lock.mdb is reserved at exactly the size LMDB gives it (a bigger file
 * would be read as more reader slots): pins that size for the LMDB in use. */
static void test_open_lock_file_size(void **state)
{
    fx *f = *state;
    static const uint32_t readers[] = {1, 7, 126, 500};
    for (size_t i = 0; i < ARRAY_LEN(readers); i++) {
        rm_rf(f->path);
        store_options o = {.path = f->path, .map_size = TEST_MAP_SIZE, .max_readers = readers[i]};
        store *s = open_opts(&o);
        store_stats st;
        assert_rv(ES_OK, store_stats_get(s, &st));
        assert_int_equal(st.readers_max, readers[i]);
        char p[700];
        snprintf(p, sizeof p, "%s/lock.mdb", f->path);
        struct stat sb;
        assert_int_equal(stat(p, &sb), 0);
        assert_int_equal(sb.st_size, 192 + (readers[i] - 1) * 64);
        assert_true((uint64_t)sb.st_blocks * 512 >= (uint64_t)sb.st_size); /* no holes */
        store_close(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_creates_and_close),
        T(test_open_default_map_size_and_readers),
        T(test_reopen_keeps_everything),
        T(test_open_foreign_directory_refused),
        T(test_open_plain_lmdb_refused),
        T(test_open_plain_lmdb_named_db_only_refused),
        T(test_open_plain_lmdb_meta_value_refused),
        T(test_open_not_lmdb_refused),
        T(test_open_wrong_format_refused),
        T(test_open_read_only),
        T(test_open_directory_owned),
        T(test_open_lock_file_size),
    };
    return cmocka_run_group_tests_name("store_open", tests, NULL, NULL);
}

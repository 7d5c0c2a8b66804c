/*
 * test_store — the storage engine (server/store.c) against its contract in
 * server/store.h and the semantics of DESIGN.md §1–2.
 *
 * Design notes: every test runs in a fresh temporary directory (mkdtemp
 * under $TMPDIR or /tmp, removed afterwards) with its own store. Reads are
 * checked by decoding what the store hands out (packed es.v1.RecordedEvent)
 * with protobuf-c and comparing every field with what was appended. "Nothing
 * written" is proven by comparing the head, the event and stream counts and
 * the state of the streams involved before and after. Damage (a flipped
 * byte, a wrong format version, a foreign LMDB environment) is made with
 * LMDB directly, as a faulty disk or another program would. Event ids come
 * from a per-test counter, so every run is the same.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "es.pb-c.h"
#include "es/err.h"
#include "store.h"
#include "validate.h"

/* Assert an es_err, naming both codes on failure. */
#define assert_rv(expected, expr)                                                                  \
    do {                                                                                           \
        es_err want_ = (expected);                                                                 \
        es_err got_ = (expr);                                                                      \
        if (got_ != want_) {                                                                       \
            fail_msg("%s: got %s (%s), expected %s (%s)", #expr, es_errname(got_),                 \
                     es_strerror(got_), es_errname(want_), es_strerror(want_));                    \
        }                                                                                          \
    } while (0)

#define ARRAY_LEN(a)  (sizeof(a) / sizeof((a)[0]))
#define U8(s)         ((const uint8_t *)(s))
#define TEST_MAP_SIZE (1ull << 30)

/* ---------------------------------------------------------------- fixture -- */

typedef struct fx {
    char root[512]; /* the temporary directory */
    char path[600]; /* root/db: the data directory */
    store *s;
    uint64_t next_id; /* event id counter */
} fx;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (!f) {
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) {
        tmp = "/tmp";
    }
    snprintf(f->root, sizeof f->root, "%s/test_store.XXXXXX", tmp);
    if (!mkdtemp(f->root)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/db", f->root);
    f->next_id = 1;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    store_close(f->s);
    rm_rf(f->root);
    free(f);
    return 0;
}

static es_err try_open(const char *path, uint64_t map_size, bool sync, bool ro, store **out,
                       char *msg, size_t msg_len)
{
    store_options o = {.path = path, .map_size = map_size, .sync = sync, .read_only = ro};
    return store_open(&o, out, msg, msg_len);
}

static store *open_opts(const store_options *o)
{
    store *s = NULL;
    char msg[512] = "";
    es_err rv = store_open(o, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        fail_msg("store_open(%s): %s (%s): %s", o->path, es_errname(rv), es_strerror(rv), msg);
    }
    assert_non_null(s);
    return s;
}

static store *open_at(const char *path, uint64_t map_size, bool sync, bool ro)
{
    store_options o = {.path = path, .map_size = map_size, .sync = sync, .read_only = ro};
    return open_opts(&o);
}

static void fx_open(fx *f)
{
    f->s = open_at(f->path, TEST_MAP_SIZE, false, false);
}

static void fx_reopen(fx *f)
{
    store_close(f->s);
    f->s = NULL;
    fx_open(f);
}

/* ----------------------------------------------------------------- events -- */

static void set_id(uint8_t id[16], uint64_t n)
{
    memcpy(id, "evid", 4);
    id[4] = id[5] = id[6] = id[7] = 0xee;
    for (int i = 15; i >= 8; i--) {
        id[i] = (uint8_t)n;
        n >>= 8;
    }
}

typedef struct evset {
    size_t n;
    store_event_in *in;
    uint8_t (*ids)[16];
    char (*data)[40];
} evset;

/* n events of one type, ids from the fixture counter, data "data-<id>". */
static void evset_make(evset *e, fx *f, size_t n, const char *type)
{
    e->n = n;
    e->in = calloc(n ? n : 1, sizeof *e->in);
    e->ids = calloc(n ? n : 1, sizeof *e->ids);
    e->data = calloc(n ? n : 1, sizeof *e->data);
    assert_non_null(e->in);
    assert_non_null(e->ids);
    assert_non_null(e->data);
    for (size_t i = 0; i < n; i++) {
        uint64_t id = f->next_id++;
        set_id(e->ids[i], id);
        snprintf(e->data[i], sizeof e->data[i], "data-%llu", (unsigned long long)id);
        e->in[i].id = e->ids[i];
        e->in[i].type = U8(type);
        e->in[i].type_len = strlen(type);
        e->in[i].data = U8(e->data[i]);
        e->in[i].data_len = strlen(e->data[i]);
    }
}

static void evset_free(evset *e)
{
    free(e->in);
    free(e->ids);
    free(e->data);
    memset(e, 0, sizeof *e);
}

static store_append_in mk_append(const char *stream, store_expect ex, uint64_t rev, const evset *e)
{
    store_append_in a = {
        .stream = U8(stream),
        .stream_len = strlen(stream),
        .expect = ex,
        .revision = rev,
        .events = e->in,
        .n_events = e->n,
    };
    return a;
}

/*
 * One batch holding one request of one append; returns the request's rv.
 * A batch that failed as a whole (a failed commit) must say so in the
 * request too.
 */
static es_err append_one(store *s, const store_append_in *a, store_append_result *res)
{
    store_append_result local;
    store_request r = {.appends = a, .n_appends = 1, .results = res ? res : &local};
    es_err brv = store_append_batch(s, &r, 1);
    if (brv != ES_OK && brv != r.rv) {
        fail_msg("store_append_batch: %s (%s), request %s", es_errname(brv), es_strerror(brv),
                 es_errname(r.rv));
    }
    assert_int_equal(r.results[0].rv, r.rv);
    return r.rv;
}

static es_err append_ev(store *s, const char *stream, store_expect ex, uint64_t rev, const evset *e,
                        store_append_result *res)
{
    store_append_in a = mk_append(stream, ex, rev, e);
    return append_one(s, &a, res);
}

/* Append n fresh events of type "T" with expectation any; assert success. */
static store_append_result add(fx *f, const char *stream, size_t n)
{
    evset e;
    evset_make(&e, f, n, "T");
    store_append_result res;
    assert_rv(ES_OK, append_ev(f->s, stream, STORE_EXPECT_ANY, 0, &e, &res));
    evset_free(&e);
    return res;
}

/* --------------------------------------------------------------- reading -- */

typedef struct coll {
    size_t n, cap;
    Es__V1__RecordedEvent **ev;
    size_t stop_after; /* 0 = never stop */
} coll;

static int coll_visit(void *ctx, const store_record *rec)
{
    coll *c = ctx;
    assert_non_null(rec->bytes);
    Es__V1__RecordedEvent *e = es__v1__recorded_event__unpack(NULL, rec->len, rec->bytes);
    assert_non_null(e);
    assert_int_equal(e->position, rec->position);
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->ev = realloc(c->ev, c->cap * sizeof *c->ev);
        assert_non_null(c->ev);
    }
    c->ev[c->n++] = e;
    return c->stop_after && c->n >= c->stop_after;
}

static void coll_free(coll *c)
{
    for (size_t i = 0; i < c->n; i++) {
        es__v1__recorded_event__free_unpacked(c->ev[i], NULL);
    }
    free(c->ev);
    memset(c, 0, sizeof *c);
}

static bool bin_is(ProtobufCBinaryData b, const void *p, size_t len)
{
    return b.len == len && (len == 0 || memcmp(b.data, p, len) == 0);
}

static bool bin_is_str(ProtobufCBinaryData b, const char *s)
{
    return bin_is(b, s, strlen(s));
}

/* Read a whole stream forward in pages of `page_size`. */
static void read_stream_all(store *s, const char *stream, uint32_t page_size, coll *c)
{
    uint64_t from = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        store_page pg;
        size_t before = c->n;
        assert_rv(ES_OK, store_read_stream(s, U8(stream), strlen(stream), from, false, page_size,
                                           coll_visit, c, &pg));
        assert_int_equal(pg.returned, c->n - before);
        if (pg.end) {
            return;
        }
        assert_true(pg.returned > 0);
        from = pg.next;
    }
    fail_msg("read_stream_all did not end");
}

/* Read the whole log forward in pages. */
static void read_all_fwd(store *s, const store_filter *flt, uint32_t page_size, coll *c)
{
    uint64_t from = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        store_page pg;
        size_t before = c->n;
        assert_rv(ES_OK, store_read_all(s, flt, from, false, page_size, coll_visit, c, &pg));
        assert_int_equal(pg.returned, c->n - before);
        if (pg.end) {
            return;
        }
        from = pg.next;
    }
    fail_msg("read_all_fwd did not end");
}

static int count_visit(void *ctx, const store_record *rec)
{
    (void)rec;
    (*(uint64_t *)ctx)++;
    return 0;
}

typedef struct state_snap {
    uint64_t head, events, streams;
} state_snap;

static state_snap snap_state(store *s)
{
    store_stats st;
    assert_rv(ES_OK, store_stats_get(s, &st));
    state_snap ss = {store_head(s), st.event_count, st.stream_count};
    assert_int_equal(st.head_position, ss.head);
    return ss;
}

static void assert_same_state(store *s, state_snap before)
{
    state_snap now = snap_state(s);
    assert_int_equal(now.head, before.head);
    assert_int_equal(now.events, before.events);
    assert_int_equal(now.streams, before.streams);
}

static void check_log_print(void *ctx, const char *line)
{
    (void)ctx;
    print_message("store_check: %s\n", line);
}

static void assert_check_clean(store *s)
{
    store_check_report r;
    es_err rv = store_check(s, &r, check_log_print, NULL);
    if (rv != ES_OK) {
        fail_msg("store_check: %s (%s): crc %llu gaps %llu rev %llu idx %llu first bad %llu",
                 es_errname(rv), es_strerror(rv), (unsigned long long)r.crc_errors,
                 (unsigned long long)r.position_gaps, (unsigned long long)r.revision_errors,
                 (unsigned long long)r.index_errors, (unsigned long long)r.first_bad_position);
    }
    assert_int_equal(r.events_checked, store_head(s));
}

static bool stream_exists(store *s, const char *stream)
{
    store_stream_info si;
    es_err rv = store_stream_info_get(s, U8(stream), strlen(stream), &si);
    if (rv == ES_ERR_NOT_FOUND) {
        return false;
    }
    assert_rv(ES_OK, rv);
    return true;
}

static uint64_t last_rev(store *s, const char *stream)
{
    store_stream_info si;
    assert_rv(ES_OK, store_stream_info_get(s, U8(stream), strlen(stream), &si));
    return si.last_revision;
}

/* -------------------------------------------------------- raw LMDB access -- */

static MDB_env *raw_env(const char *path)
{
    MDB_env *env;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    int rc = mdb_env_open(env, path, 0, 0600);
    if (rc) {
        fail_msg("mdb_env_open(%s): %s", path, mdb_strerror(rc));
    }
    return env;
}

static void raw_put(const char *path, const char *db, const void *key, size_t klen, const void *val,
                    size_t vlen)
{
    MDB_env *env = raw_env(path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, db ? MDB_CREATE : 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void raw_del(const char *path, const char *db, const void *key, size_t klen)
{
    MDB_env *env = raw_env(path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key};
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/*
 * Flip one byte of the stored record at `pos`, `offset` bytes into the
 * value (the 8-byte header comes first), as a faulty disk would.
 */
static void raw_flip_record_byte(const char *path, uint64_t pos, size_t offset)
{
    MDB_env *env = raw_env(path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    uint8_t key[8];
    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)(pos >> (8 * (7 - i)));
    }
    MDB_val k = {8, key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_true(offset < v.mv_size);
    uint8_t *copy = malloc(v.mv_size);
    assert_non_null(copy);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[offset] ^= 0x01;
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    free(copy);
    mdb_env_close(env);
}

/* ------------------------------------------------------------ file utils -- */

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n >= 0);
    rewind(fp);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

/* Names in a directory, sorted, joined with '/' into buf. */
static void dir_listing(const char *path, char *buf, size_t len)
{
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    assert_true(n >= 0);
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
            strncat(buf, names[i]->d_name, len - strlen(buf) - 1);
            strncat(buf, "/", len - strlen(buf) - 1);
        }
        free(names[i]);
    }
    free(names);
}

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

/* ================================================================ reads == */

static void test_recorded_event_fields(void **state)
{
    fx *f = *state;
    fx_open(f);
    uint8_t id[16], corr[16], caus[16];
    set_id(id, 777);
    set_id(corr, 778);
    set_id(caus, 779);
    static const uint8_t data[] = {0, 1, 2, 0xff, 'x'};
    store_event_in ev[2] = {{
                                .id = id,
                                .type = U8("AccountOpened"),
                                .type_len = 13,
                                .data = data,
                                .data_len = sizeof data,
                                .metadata = U8("{\"user\":\"u\"}"),
                                .metadata_len = 12,
                                .content_type = U8("application/json"),
                                .content_type_len = 16,
                                .correlation_id = corr,
                                .correlation_id_len = 16,
                                .causation_id = caus,
                                .causation_id_len = 16,
                            },
                            {0}};
    uint8_t id2[16];
    set_id(id2, 780);
    ev[1].id = id2;
    ev[1].type = U8("Empty");
    ev[1].type_len = 5;
    add(f, "x-0", 2);
    uint64_t t0 = store_now_us();
    store_append_in a = {.stream = U8("account-42"),
                         .stream_len = 10,
                         .expect = STORE_EXPECT_NO_STREAM,
                         .events = ev,
                         .n_events = 2};
    store_append_result r;
    assert_rv(ES_OK, append_one(f->s, &a, &r));
    uint64_t t1 = store_now_us();
    coll c = {0};
    read_stream_all(f->s, "account-42", 0, &c);
    assert_int_equal(c.n, 2);
    Es__V1__RecordedEvent *e = c.ev[0];
    assert_true(bin_is_str(e->stream, "account-42"));
    assert_int_equal(e->revision, 0);
    assert_int_equal(e->position, 3);
    assert_true(bin_is(e->id, id, 16));
    assert_true(bin_is_str(e->type, "AccountOpened"));
    assert_true(bin_is(e->data, data, sizeof data));
    assert_true(bin_is_str(e->metadata, "{\"user\":\"u\"}"));
    assert_true(bin_is_str(e->content_type, "application/json"));
    assert_true(bin_is(e->correlation_id, corr, 16));
    assert_true(bin_is(e->causation_id, caus, 16));
    assert_true(e->recorded_at_us >= t0 && e->recorded_at_us <= t1);
    e = c.ev[1];
    assert_true(bin_is_str(e->stream, "account-42"));
    assert_int_equal(e->revision, 1);
    assert_int_equal(e->position, 4);
    assert_true(bin_is(e->id, id2, 16));
    assert_true(bin_is_str(e->type, "Empty"));
    assert_int_equal(e->data.len, 0);
    assert_int_equal(e->metadata.len, 0);
    assert_int_equal(e->content_type.len, 0);
    assert_int_equal(e->correlation_id.len, 0);
    assert_int_equal(e->causation_id.len, 0);
    assert_int_equal(e->recorded_at_us, c.ev[0]->recorded_at_us);
    coll_free(&c);
    /* The same bytes through read_all. */
    coll g = {0};
    store_page pg;
    assert_rv(ES_OK, store_read_all(f->s, NULL, 3, false, 1, coll_visit, &g, &pg));
    assert_int_equal(g.n, 1);
    assert_true(bin_is(g.ev[0]->id, id, 16));
    assert_true(bin_is_str(g.ev[0]->content_type, "application/json"));
    coll_free(&g);
}

static void test_read_stream_paging(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "s-1", 4);
    add(f, "s-2", 1);
    add(f, "s-1", 6); /* s-1: revisions 0..9 */
    coll c = {0};
    store_page pg;
    /* Forward in pages of 3. */
    uint64_t from = 0;
    int pages = 0;
    for (;;) {
        size_t before = c.n;
        assert_rv(ES_OK,
                  store_read_stream(f->s, U8("s-1"), 3, from, false, 3, coll_visit, &c, &pg));
        pages++;
        assert_int_equal(pg.head, 11);
        assert_int_equal(pg.returned, c.n - before);
        assert_int_equal(pg.next, c.n);
        if (pg.end) {
            break;
        }
        assert_int_equal(pg.returned, 3);
        from = pg.next;
    }
    assert_int_equal(pages, 4);
    assert_int_equal(pg.returned, 1);
    assert_int_equal(c.n, 10);
    for (size_t i = 0; i < c.n; i++) {
        assert_int_equal(c.ev[i]->revision, i);
        assert_true(bin_is_str(c.ev[i]->stream, "s-1"));
    }
    assert_int_equal(c.ev[3]->position, 4);
    assert_int_equal(c.ev[4]->position, 6);
    coll_free(&c);
    /* A page that ends exactly at the last revision says end. */
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 5, false, 5, coll_visit, &c, &pg));
    assert_int_equal(pg.returned, 5);
    assert_true(pg.end);
    assert_int_equal(pg.next, 10);
    coll_free(&c);

    /* Backward in pages of 4 from the end. */
    from = UINT64_MAX;
    uint64_t expect = 9;
    for (pages = 0;; pages++) {
        assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, from, true, 4, coll_visit, &c, &pg));
        if (pg.end) {
            break;
        }
        from = pg.next;
        assert_int_equal(from, 9 - c.n);
    }
    assert_int_equal(c.n, 10);
    for (size_t i = 0; i < c.n; i++) {
        assert_int_equal(c.ev[i]->revision, expect--);
    }
    coll_free(&c);
    /* Backward from a revision in the middle and from beyond the end. */
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 5, true, 2, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ev[0]->revision, 5);
    assert_int_equal(c.ev[1]->revision, 4);
    assert_int_equal(pg.next, 3);
    assert_false(pg.end);
    coll_free(&c);
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 100, true, 1, coll_visit, &c, &pg));
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0]->revision, 9);
    coll_free(&c);
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 0, true, 10, coll_visit, &c, &pg));
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0]->revision, 0);
    assert_true(pg.end);
    coll_free(&c);

    /* Forward from beyond the end: an empty page, end. */
    const uint64_t beyond[] = {10, 11, UINT64_MAX - 1, UINT64_MAX};
    for (size_t i = 0; i < ARRAY_LEN(beyond); i++) {
        assert_rv(ES_OK,
                  store_read_stream(f->s, U8("s-1"), 3, beyond[i], false, 10, coll_visit, &c, &pg));
        assert_int_equal(c.n, 0);
        assert_int_equal(pg.returned, 0);
        assert_true(pg.end);
        assert_int_equal(pg.next, beyond[i]);
    }
    /* Visitor stop: the stopping record counts as delivered. */
    c.stop_after = 2;
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 1, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(pg.returned, 2);
    assert_int_equal(pg.next, 3);
    assert_false(pg.end);
    coll_free(&c);
    c.stop_after = 1;
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 7, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 1);
    assert_int_equal(pg.next, 6);
    coll_free(&c);

    /* Unknown and invalid streams. */
    assert_rv(ES_ERR_NOT_FOUND,
              store_read_stream(f->s, U8("s-3"), 3, 0, false, 0, coll_visit, &c, &pg));
    assert_rv(ES_ERR_NOT_FOUND,
              store_read_stream(f->s, U8("s-"), 2, 0, true, 0, coll_visit, &c, &pg));
    assert_rv(ES_ERR_NOT_FOUND,
              store_read_stream(f->s, U8("s-10"), 4, 0, false, 0, coll_visit, &c, &pg));
    assert_rv(ES_ERR_INVALID_STREAM_ID,
              store_read_stream(f->s, U8(""), 0, 0, false, 0, coll_visit, &c, &pg));
    assert_rv(ES_ERR_INVALID_STREAM_ID,
              store_read_stream(f->s, U8("a\xff"), 2, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
}

static void test_read_stream_limits(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "big-1", STORE_DEFAULT_MAX_PAGE + 100);
    const uint32_t limits[] = {0, STORE_DEFAULT_MAX_PAGE, STORE_DEFAULT_MAX_PAGE + 1, 1000000,
                               UINT32_MAX};
    for (size_t i = 0; i < ARRAY_LEN(limits); i++) {
        uint64_t n = 0;
        store_page pg;
        assert_rv(ES_OK, store_read_stream(f->s, U8("big-1"), 5, 0, false, limits[i], count_visit,
                                           &n, &pg));
        assert_int_equal(n, STORE_DEFAULT_MAX_PAGE);
        assert_int_equal(pg.returned, STORE_DEFAULT_MAX_PAGE);
        assert_int_equal(pg.next, STORE_DEFAULT_MAX_PAGE);
        assert_false(pg.end);
        n = 0;
        assert_rv(ES_OK, store_read_stream(f->s, U8("big-1"), 5, UINT64_MAX, true, limits[i],
                                           count_visit, &n, &pg));
        assert_int_equal(n, STORE_DEFAULT_MAX_PAGE);
        n = 0;
        assert_rv(ES_OK, store_read_all(f->s, NULL, 0, false, limits[i], count_visit, &n, &pg));
        assert_int_equal(n, STORE_DEFAULT_MAX_PAGE);
        assert_int_equal(pg.next, STORE_DEFAULT_MAX_PAGE + 1);
        assert_false(pg.end);
    }
    uint64_t n = 0;
    store_page pg;
    assert_rv(ES_OK, store_read_stream(f->s, U8("big-1"), 5, STORE_DEFAULT_MAX_PAGE, false, 0,
                                       count_visit, &n, &pg));
    assert_int_equal(n, 100);
    assert_true(pg.end);
}

/* Accepts `accept` records, then refuses the next one (stop before it). */
typedef struct refuse_ctx {
    size_t accept;
    size_t n;
    uint64_t pos[64];
    uint64_t refused; /* position of the refused record, 0 if none */
} refuse_ctx;

static int refuse_visit(void *ctx, const store_record *rec)
{
    refuse_ctx *c = ctx;
    if (c->n >= c->accept) {
        c->refused = rec->position;
        return -1;
    }
    assert_true(c->n < ARRAY_LEN(c->pos));
    c->pos[c->n++] = rec->position;
    return 0;
}

static void test_visitor_stops_before_a_record(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "s-1", 4);
    add(f, "t-1", 1);
    add(f, "s-1", 3); /* s-1: revisions 0..6 at positions 1-4, 6-8 */
    store_page pg;
    /* Forward: two delivered, the third refused; next points at it. */
    refuse_ctx c = {.accept = 2};
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 1, false, 0, refuse_visit, &c, &pg));
    assert_int_equal(pg.returned, 2);
    assert_int_equal(c.refused, 4);
    assert_int_equal(pg.next, 3);
    assert_false(pg.end);
    /* Going on from next delivers the refused record first. */
    c = (refuse_ctx){.accept = 100};
    assert_rv(ES_OK,
              store_read_stream(f->s, U8("s-1"), 3, pg.next, false, 0, refuse_visit, &c, &pg));
    assert_int_equal(c.n, 4);
    assert_int_equal(c.pos[0], 4);
    assert_true(pg.end);
    /* Refusing the first record: nothing delivered, next = from. */
    c = (refuse_ctx){.accept = 0};
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 5, false, 0, refuse_visit, &c, &pg));
    assert_int_equal(pg.returned, 0);
    assert_int_equal(pg.next, 5);
    assert_false(pg.end);
    /* Refusing the last record of the stream: not the end yet. */
    c = (refuse_ctx){.accept = 1};
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 5, false, 0, refuse_visit, &c, &pg));
    assert_int_equal(pg.returned, 1);
    assert_int_equal(pg.next, 6);
    assert_false(pg.end);
    /* Backward. */
    c = (refuse_ctx){.accept = 1};
    assert_rv(ES_OK,
              store_read_stream(f->s, U8("s-1"), 3, UINT64_MAX, true, 0, refuse_visit, &c, &pg));
    assert_int_equal(pg.returned, 1);
    assert_int_equal(c.pos[0], 8);
    assert_int_equal(pg.next, 5);
    assert_false(pg.end);
    c = (refuse_ctx){.accept = 1};
    assert_rv(ES_OK, store_read_stream(f->s, U8("s-1"), 3, 1, true, 0, refuse_visit, &c, &pg));
    assert_int_equal(pg.next, 0);
    assert_false(pg.end); /* revision 0 was refused: still to deliver */

    /* The log, unfiltered and through each filter, both ways. */
    const store_filter flts[] = {
        {STORE_FILTER_NONE, NULL, 0},
        {STORE_FILTER_CATEGORY, U8("s"), 1},
        {STORE_FILTER_EVENT_TYPE, U8("T"), 1},
        {STORE_FILTER_STREAM_PREFIX, U8("s-"), 2},
    };
    for (size_t i = 0; i < ARRAY_LEN(flts); i++) {
        bool all = flts[i].kind == STORE_FILTER_NONE || flts[i].kind == STORE_FILTER_EVENT_TYPE;
        c = (refuse_ctx){.accept = 4};
        assert_rv(ES_OK, store_read_all(f->s, &flts[i], 0, false, 0, refuse_visit, &c, &pg));
        assert_int_equal(pg.returned, 4);
        uint64_t want = all ? 5 : 6; /* the fifth matching record */
        assert_int_equal(c.refused, want);
        assert_int_equal(pg.next, want);
        assert_false(pg.end);
        /* Continuing delivers it, then the rest. */
        c = (refuse_ctx){.accept = 100};
        assert_rv(ES_OK, store_read_all(f->s, &flts[i], pg.next, false, 0, refuse_visit, &c, &pg));
        assert_int_equal(c.pos[0], want);
        assert_int_equal(c.n, all ? 4 : 3);
        assert_true(pg.end);
        /* Backward. */
        c = (refuse_ctx){.accept = 2};
        assert_rv(ES_OK,
                  store_read_all(f->s, &flts[i], UINT64_MAX, true, 0, refuse_visit, &c, &pg));
        assert_int_equal(pg.returned, 2);
        assert_int_equal(c.pos[0], 8);
        assert_int_equal(c.refused, 6);
        assert_int_equal(pg.next, 6);
        assert_false(pg.end);
        /* Refusing the very first record forward. */
        c = (refuse_ctx){.accept = 0};
        assert_rv(ES_OK, store_read_all(f->s, &flts[i], 1, false, 0, refuse_visit, &c, &pg));
        assert_int_equal(pg.returned, 0);
        assert_int_equal(pg.next, 1);
        assert_false(pg.end);
    }
}

/* Streams and types for the read_all tests:
 *   pos 1 account-1 Opened   pos 2 acc-1 Opened     pos 3 account-1 Deposited
 *   pos 4 accounting Opened  pos 5 account Deposited pos 6 account-2 Opened
 *   pos 7 user-1 Opened      pos 8 account-1 Deposited pos 9 account-2 Withdrawn */
static void fill_for_read_all(fx *f)
{
    const struct {
        const char *stream, *type;
    } t[] = {
        {"account-1", "Opened"},  {"acc-1", "Opened"},        {"account-1", "Deposited"},
        {"accounting", "Opened"}, {"account", "Deposited"},   {"account-2", "Opened"},
        {"user-1", "Opened"},     {"account-1", "Deposited"}, {"account-2", "Withdrawn"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        evset e;
        evset_make(&e, f, 1, t[i].type);
        store_append_result r;
        assert_rv(ES_OK, append_ev(f->s, t[i].stream, STORE_EXPECT_ANY, 0, &e, &r));
        assert_int_equal(r.first_position, i + 1);
        evset_free(&e);
    }
}

static void positions_of(const coll *c, uint64_t *out)
{
    for (size_t i = 0; i < c->n; i++) {
        out[i] = c->ev[i]->position;
    }
}

static void expect_filtered(store *s, store_filter_kind kind, const char *name, bool backward,
                            const uint64_t *want, size_t n_want)
{
    store_filter flt = {kind, U8(name), name ? strlen(name) : 0};
    /* One big page. */
    coll c = {0};
    store_page pg;
    assert_rv(ES_OK,
              store_read_all(s, &flt, backward ? UINT64_MAX : 0, backward, 0, coll_visit, &c, &pg));
    assert_true(pg.end);
    if (c.n != n_want) {
        fail_msg("filter %d '%s' %s: %zu records, expected %zu", kind, name ? name : "",
                 backward ? "backward" : "forward", c.n, n_want);
    }
    uint64_t got[64];
    positions_of(&c, got);
    if (n_want) {
        assert_memory_equal(got, want, n_want * sizeof *want);
    }
    coll_free(&c);
    /* Pages of one. */
    uint64_t from = backward ? UINT64_MAX : 0;
    for (int guard = 0; guard < 100; guard++) {
        size_t before = c.n;
        assert_rv(ES_OK, store_read_all(s, &flt, from, backward, 1, coll_visit, &c, &pg));
        assert_true(c.n - before <= 1);
        if (pg.end) {
            break;
        }
        from = pg.next;
    }
    assert_true(pg.end);
    assert_int_equal(c.n, n_want);
    positions_of(&c, got);
    if (n_want) {
        assert_memory_equal(got, want, n_want * sizeof *want);
    }
    coll_free(&c);
}

static void test_read_all_unfiltered(void **state)
{
    fx *f = *state;
    fx_open(f);
    store_page pg;
    coll c = {0};
    /* Empty store. */
    assert_rv(ES_OK, store_read_all(f->s, NULL, 0, false, 0, coll_visit, &c, &pg));
    assert_true(pg.end);
    assert_int_equal(pg.returned, 0);
    assert_int_equal(pg.head, 0);
    assert_rv(ES_OK, store_read_all(f->s, NULL, UINT64_MAX, true, 0, coll_visit, &c, &pg));
    assert_true(pg.end);
    assert_int_equal(c.n, 0);

    fill_for_read_all(f);
    const uint64_t fwd[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const uint64_t bwd[] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    expect_filtered(f->s, STORE_FILTER_NONE, NULL, false, fwd, 9);
    expect_filtered(f->s, STORE_FILTER_NONE, NULL, true, bwd, 9);
    /* from 0 and from 1 are the same; from the middle is inclusive. */
    assert_rv(ES_OK, store_read_all(f->s, NULL, 1, false, 2, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ev[0]->position, 1);
    assert_int_equal(pg.next, 3);
    assert_false(pg.end);
    assert_int_equal(pg.head, 9);
    coll_free(&c);
    assert_rv(ES_OK, store_read_all(f->s, NULL, 5, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 5);
    assert_int_equal(c.ev[0]->position, 5);
    assert_true(pg.end);
    assert_int_equal(pg.next, 10);
    coll_free(&c);
    assert_rv(ES_OK, store_read_all(f->s, NULL, 5, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 5);
    assert_int_equal(c.ev[0]->position, 5);
    assert_int_equal(c.ev[4]->position, 1);
    assert_true(pg.end);
    coll_free(&c);
    /* A page ending exactly at the head says end. */
    assert_rv(ES_OK, store_read_all(f->s, NULL, 7, false, 3, coll_visit, &c, &pg));
    assert_int_equal(c.n, 3);
    assert_true(pg.end);
    coll_free(&c);
    /* Beyond the head. */
    assert_rv(ES_OK, store_read_all(f->s, NULL, 10, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    assert_true(pg.end);
    assert_rv(ES_OK, store_read_all(f->s, NULL, 100, true, 2, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ev[0]->position, 9);
    assert_int_equal(pg.next, 7);
    assert_false(pg.end);
    coll_free(&c);
    /* Backward from 0: nothing before the first event. */
    assert_rv(ES_OK, store_read_all(f->s, NULL, 0, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    assert_true(pg.end);
    /* Visitor stop. */
    c.stop_after = 3;
    assert_rv(ES_OK, store_read_all(f->s, NULL, 2, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 3);
    assert_int_equal(pg.returned, 3);
    assert_int_equal(pg.next, 5);
    assert_false(pg.end);
    coll_free(&c);
}

static void test_read_all_filters(void **state)
{
    fx *f = *state;
    fx_open(f);
    fill_for_read_all(f);
    /* Category "account": account-1, account-2 and the stream "account"
     * itself; not acc-1, not accounting. */
    const uint64_t cat_account[] = {1, 3, 5, 6, 8, 9};
    const uint64_t cat_account_b[] = {9, 8, 6, 5, 3, 1};
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "account", false, cat_account, 6);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "account", true, cat_account_b, 6);
    /* "acc" is the category of acc-1 only: it does not match account-1's. */
    const uint64_t cat_acc[] = {2};
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "acc", false, cat_acc, 1);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "acc", true, cat_acc, 1);
    const uint64_t cat_accounting[] = {4};
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "accounting", false, cat_accounting, 1);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "nobody", false, NULL, 0);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "nobody", true, NULL, 0);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "a", true, NULL, 0);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "zzz", true, NULL, 0);
    expect_filtered(f->s, STORE_FILTER_CATEGORY, "account-1", false, NULL, 0);
    /* Event types. */
    const uint64_t t_opened[] = {1, 2, 4, 6, 7};
    const uint64_t t_opened_b[] = {7, 6, 4, 2, 1};
    const uint64_t t_dep[] = {3, 5, 8};
    const uint64_t t_wd[] = {9};
    expect_filtered(f->s, STORE_FILTER_EVENT_TYPE, "Opened", false, t_opened, 5);
    expect_filtered(f->s, STORE_FILTER_EVENT_TYPE, "Opened", true, t_opened_b, 5);
    expect_filtered(f->s, STORE_FILTER_EVENT_TYPE, "Deposited", false, t_dep, 3);
    expect_filtered(f->s, STORE_FILTER_EVENT_TYPE, "Withdrawn", true, t_wd, 1);
    expect_filtered(f->s, STORE_FILTER_EVENT_TYPE, "Open", false, NULL, 0);
    expect_filtered(f->s, STORE_FILTER_EVENT_TYPE, "Opened2", false, NULL, 0);
    /* Stream prefix: plain bytes, so "acc" matches every account stream. */
    const uint64_t p_acc[] = {1, 2, 3, 4, 5, 6, 8, 9};
    const uint64_t p_account_[] = {1, 3, 6, 8, 9};
    const uint64_t p_account_b[] = {9, 8, 6, 3, 1};
    const uint64_t p_user[] = {7};
    expect_filtered(f->s, STORE_FILTER_STREAM_PREFIX, "acc", false, p_acc, 8);
    expect_filtered(f->s, STORE_FILTER_STREAM_PREFIX, "account-", false, p_account_, 5);
    expect_filtered(f->s, STORE_FILTER_STREAM_PREFIX, "account-", true, p_account_b, 5);
    expect_filtered(f->s, STORE_FILTER_STREAM_PREFIX, "user-1", false, p_user, 1);
    expect_filtered(f->s, STORE_FILTER_STREAM_PREFIX, "user-10", false, NULL, 0);

    /* Filtered reads from the middle, inclusive, both ways. */
    store_filter cat = {STORE_FILTER_CATEGORY, U8("account"), 7};
    coll c = {0};
    store_page pg;
    assert_rv(ES_OK, store_read_all(f->s, &cat, 5, false, 2, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ev[0]->position, 5);
    assert_int_equal(c.ev[1]->position, 6);
    assert_int_equal(pg.next, 7);
    coll_free(&c);
    assert_rv(ES_OK, store_read_all(f->s, &cat, 5, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 3);
    assert_int_equal(c.ev[0]->position, 5);
    assert_int_equal(c.ev[2]->position, 1);
    assert_true(pg.end);
    coll_free(&c);
    assert_rv(ES_OK, store_read_all(f->s, &cat, 4, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ev[0]->position, 3);
    coll_free(&c);
    /* Visitor stop in a filtered read. */
    store_filter typ = {STORE_FILTER_EVENT_TYPE, U8("Opened"), 6};
    c.stop_after = 2;
    assert_rv(ES_OK, store_read_all(f->s, &typ, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(pg.returned, 2);
    assert_int_equal(pg.next, 3);
    assert_false(pg.end);
    coll_free(&c);
    for (size_t i = 0; i < 3; i++) {
        store_filter pf = {STORE_FILTER_STREAM_PREFIX, U8("account-"), 8};
        c.stop_after = 1;
        assert_rv(ES_OK, store_read_all(f->s,
                                        i == 0   ? &pf
                                        : i == 1 ? &typ
                                                 : &cat,
                                        UINT64_MAX, true, 0, coll_visit, &c, &pg));
        assert_int_equal(c.n, 1);
        assert_false(pg.end);
        coll_free(&c);
    }

    /* Bad filters. */
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    const store_filter bad[] = {
        {(store_filter_kind)99, U8("x"), 1},
        {STORE_FILTER_CATEGORY, NULL, 0},
        {STORE_FILTER_CATEGORY, U8("x"), 0},
        {STORE_FILTER_CATEGORY, NULL, 3},
        {STORE_FILTER_CATEGORY, U8(long_name), 257},
        {STORE_FILTER_CATEGORY, U8("a\xc0\xaf"), 3},
        {STORE_FILTER_CATEGORY, U8("a\0b"), 3},
        {STORE_FILTER_EVENT_TYPE, U8(""), 0},
        {STORE_FILTER_EVENT_TYPE, U8(long_name), 257},
        {STORE_FILTER_EVENT_TYPE, U8("\x80"), 1},
        {STORE_FILTER_EVENT_TYPE, U8("a\nb"), 3},
        {STORE_FILTER_STREAM_PREFIX, U8(""), 0},
        {STORE_FILTER_STREAM_PREFIX, NULL, 0},
        {STORE_FILTER_STREAM_PREFIX, U8(long_name), 257},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        memset(&pg, 0xff, sizeof pg);
        es_err rv = store_read_all(f->s, &bad[i], 0, false, 0, coll_visit, &c, &pg);
        if (rv != ES_ERR_INVALID_ARGUMENT) {
            fail_msg("bad filter %zu: %s (%s)", i, es_errname(rv), es_strerror(rv));
        }
        assert_int_equal(c.n, 0);
        assert_int_equal(pg.returned, 0);
    }
    /* 256 bytes is a valid (if unmatched) name. */
    store_filter ok256 = {STORE_FILTER_CATEGORY, U8(long_name), 256};
    assert_rv(ES_OK, store_read_all(f->s, &ok256, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    assert_true(pg.end);
}

static void test_read_all_prefix_scan_limit(void **state)
{
    fx *f = *state;
    fx_open(f);
    /* More non-matching records than one call may examine. */
    const size_t noise = STORE_READ_ALL_SCAN_LIMIT + 10;
    size_t done = 0;
    while (done < noise) {
        size_t n = noise - done < 10000 ? noise - done : 10000;
        add(f, "noise-1", n);
        done += n;
    }
    add(f, "wanted-1", 3);
    store_filter pf = {STORE_FILTER_STREAM_PREFIX, U8("wanted-"), 7};
    coll c = {0};
    store_page pg;
    assert_rv(ES_OK, store_read_all(f->s, &pf, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    assert_false(pg.end);
    assert_int_equal(pg.next, STORE_READ_ALL_SCAN_LIMIT + 1);
    int calls = 1;
    while (!pg.end) {
        assert_rv(ES_OK, store_read_all(f->s, &pf, pg.next, false, 0, coll_visit, &c, &pg));
        calls++;
        assert_true(calls < 10);
    }
    assert_int_equal(c.n, 3);
    assert_int_equal(c.ev[0]->position, noise + 1);
    coll_free(&c);
    /* The indexed filters find them at once. */
    store_filter cat = {STORE_FILTER_CATEGORY, U8("wanted"), 6};
    assert_rv(ES_OK, store_read_all(f->s, &cat, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 3);
    assert_true(pg.end);
    coll_free(&c);
}

/* ========================================================= stream info == */

typedef struct list_coll {
    char names[64][300];
    store_stream_info info[64];
    size_t n;
    size_t stop_after;
} list_coll;

static int list_visit(void *ctx, const uint8_t *name, size_t len, const store_stream_info *info)
{
    list_coll *c = ctx;
    assert_true(c->n < 64);
    assert_true(len < sizeof c->names[0]);
    memcpy(c->names[c->n], name, len);
    c->names[c->n][len] = 0;
    c->info[c->n] = *info;
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static void test_stream_info(void **state)
{
    fx *f = *state;
    fx_open(f);
    uint64_t t0 = store_now_us();
    add(f, "s-1", 2);
    add(f, "s-2", 3);
    uint64_t t1 = store_now_us();
    add(f, "s-1", 1);
    store_stream_info a, b;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("s-1"), 3, &a));
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("s-2"), 3, &b));
    assert_int_equal(a.event_count, 3);
    assert_int_equal(a.last_revision, 2);
    assert_int_equal(a.first_position, 1);
    assert_int_equal(a.last_position, 6);
    assert_true(a.created_us >= t0 && a.created_us <= t1);
    assert_true(a.updated_us >= t1 && a.updated_us <= store_now_us());
    assert_int_equal(b.event_count, 3);
    assert_int_equal(b.last_revision, 2);
    assert_int_equal(b.first_position, 3);
    assert_int_equal(b.last_position, 5);
    assert_true(b.created_us == b.updated_us);
    assert_true(a.number != b.number);
    assert_rv(ES_ERR_NOT_FOUND, store_stream_info_get(f->s, U8("s-3"), 3, &a));
    assert_rv(ES_ERR_NOT_FOUND, store_stream_info_get(f->s, U8("s-"), 2, &a));
    assert_rv(ES_ERR_NOT_FOUND, store_stream_info_get(f->s, U8("s-10"), 4, &a));
    assert_rv(ES_ERR_INVALID_STREAM_ID, store_stream_info_get(f->s, U8(""), 0, &a));
    assert_rv(ES_ERR_INVALID_STREAM_ID, store_stream_info_get(f->s, U8("\xed\xa0\x80"), 3, &a));
    /* '$' streams can be looked up (the store's own). */
    assert_rv(ES_ERR_NOT_FOUND, store_stream_info_get(f->s, U8("$all"), 4, &a));
}

static void test_list_streams(void **state)
{
    fx *f = *state;
    fx_open(f);
    list_coll c = {0};
    bool more = true;
    assert_rv(ES_OK, store_list_streams(f->s, NULL, 0, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 0);
    assert_false(more);

    const char *names[] = {"account-1", "account-10", "account-2", "acc-1", "accounting",
                           "b-1",       "user-1",     "user-2",    "a"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        add(f, names[i], i + 1);
    }
    /* All, in byte order. */
    const char *sorted[] = {"a",          "acc-1", "account-1", "account-10", "account-2",
                            "accounting", "b-1",   "user-1",    "user-2"};
    assert_rv(ES_OK, store_list_streams(f->s, NULL, 0, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 9);
    assert_false(more);
    for (size_t i = 0; i < c.n; i++) {
        assert_string_equal(c.names[i], sorted[i]);
    }
    assert_int_equal(c.info[2].event_count, 1); /* account-1 */
    assert_int_equal(c.info[2].first_position, 1);
    assert_int_equal(c.info[4].event_count, 3); /* account-2 */
    c.n = 0;
    /* Prefix. */
    assert_rv(ES_OK,
              store_list_streams(f->s, U8("account-"), 8, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 3);
    assert_false(more);
    assert_string_equal(c.names[0], "account-1");
    assert_string_equal(c.names[2], "account-2");
    c.n = 0;
    assert_rv(ES_OK, store_list_streams(f->s, U8("acc"), 3, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 5);
    c.n = 0;
    assert_rv(ES_OK, store_list_streams(f->s, U8("zz"), 2, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 0);
    assert_false(more);
    /* Paging with after + limit, with and without a prefix. */
    const char *after = NULL;
    size_t total = 0;
    char last[300];
    for (int pages = 0;; pages++) {
        assert_true(pages < 10);
        c.n = 0;
        assert_rv(ES_OK, store_list_streams(f->s, NULL, 0, U8(after), after ? strlen(after) : 0, 2,
                                            list_visit, &c, &more));
        for (size_t i = 0; i < c.n; i++) {
            assert_string_equal(c.names[i], sorted[total + i]);
        }
        total += c.n;
        if (!more) {
            break;
        }
        assert_int_equal(c.n, 2);
        strcpy(last, c.names[c.n - 1]);
        after = last;
    }
    assert_int_equal(total, 9);
    c.n = 0;
    assert_rv(ES_OK,
              store_list_streams(f->s, U8("account-"), 8, NULL, 0, 2, list_visit, &c, &more));
    assert_int_equal(c.n, 2);
    assert_true(more);
    c.n = 0;
    assert_rv(ES_OK, store_list_streams(f->s, U8("account-"), 8, U8("account-10"), 10, 2,
                                        list_visit, &c, &more));
    assert_int_equal(c.n, 1);
    assert_string_equal(c.names[0], "account-2");
    assert_false(more); /* "accounting" follows, outside the prefix */
    /* after before the prefix range, after past it, after not a stream. */
    c.n = 0;
    assert_rv(ES_OK,
              store_list_streams(f->s, U8("user-"), 5, U8("a"), 1, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 2);
    assert_string_equal(c.names[0], "user-1");
    c.n = 0;
    assert_rv(ES_OK, store_list_streams(f->s, U8("acc"), 3, U8("b"), 1, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 0);
    assert_false(more);
    c.n = 0;
    assert_rv(ES_OK,
              store_list_streams(f->s, NULL, 0, U8("account-11"), 10, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 5);
    assert_string_equal(c.names[0], "account-2");
    /* after below, at, and inside the prefix range. */
    const struct {
        const char *after;
        size_t n;
        const char *first;
    } around[] = {
        {"acc", 3, "account-1"},        {"account", 3, "account-1"},   {"account-", 3, "account-1"},
        {"account-1", 2, "account-10"}, {"account-0", 3, "account-1"}, {"account-3", 0, NULL},
        {"accounting", 0, NULL},        {"", 3, "account-1"},
    };
    for (size_t i = 0; i < ARRAY_LEN(around); i++) {
        c.n = 0;
        assert_rv(ES_OK, store_list_streams(f->s, U8("account-"), 8, U8(around[i].after),
                                            strlen(around[i].after), 0, list_visit, &c, &more));
        if (c.n != around[i].n) {
            fail_msg("after '%s': %zu streams, expected %zu", around[i].after, c.n, around[i].n);
        }
        if (around[i].first) {
            assert_string_equal(c.names[0], around[i].first);
        }
        assert_false(more);
    }
    /* Visitor stop: more says whether anything follows. */
    c.n = 0;
    c.stop_after = 1;
    assert_rv(ES_OK, store_list_streams(f->s, U8("user-"), 5, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 1);
    assert_true(more);
    c.n = 0;
    assert_rv(ES_OK,
              store_list_streams(f->s, U8("user-"), 5, U8("user-1"), 6, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 1);
    assert_false(more);
    c.n = 0;
    assert_rv(ES_OK,
              store_list_streams(f->s, U8("account-"), 8, NULL, 0, 0, list_visit, &c, &more));
    assert_int_equal(c.n, 1);
    assert_true(more);
    c.stop_after = 0;
    /* Too long a prefix or after. */
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              store_list_streams(f->s, U8(long_name), 257, NULL, 0, 0, list_visit, &c, &more));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              store_list_streams(f->s, NULL, 0, U8(long_name), 257, 0, list_visit, &c, &more));
}

/* ============================================================ snapshots == */

static void test_snapshots(void **state)
{
    fx *f = *state;
    fx_open(f);
    store_snapshot snap;
    /* Unknown stream. */
    assert_rv(ES_ERR_NOT_FOUND, store_save_snapshot(f->s, U8("s-1"), 3, 0, 1, U8("x"), 1));
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_null(snap.data);
    add(f, "s-1", 5);
    /* None saved yet. */
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    /* Beyond the stream. */
    assert_rv(ES_ERR_INVALID_ARGUMENT, store_save_snapshot(f->s, U8("s-1"), 3, 5, 1, U8("x"), 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              store_save_snapshot(f->s, U8("s-1"), 3, UINT64_MAX, 1, U8("x"), 1));
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    /* Save and load. */
    uint64_t t0 = store_now_us();
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 2, 42, U8("balance=10"), 10));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.revision, 2);
    assert_int_equal(snap.state_format, 42);
    assert_int_equal(snap.data_len, 10);
    assert_memory_equal(snap.data, "balance=10", 10);
    assert_true(snap.saved_at_us >= t0 && snap.saved_at_us <= store_now_us());
    free(snap.data);
    /* Replace (a shorter one, at the last revision). */
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 4, 43, U8("b=7"), 3));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.revision, 4);
    assert_int_equal(snap.state_format, 43);
    assert_int_equal(snap.data_len, 3);
    assert_memory_equal(snap.data, "b=7", 3);
    free(snap.data);
    /* Empty data. */
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 0, 1, NULL, 0));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.revision, 0);
    assert_int_equal(snap.data_len, 0);
    assert_non_null(snap.data);
    free(snap.data);
    /* Big but within the cap. */
    size_t big_len = 1u << 20;
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++) {
        big[i] = (uint8_t)(i * 31);
    }
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 3, 2, big, big_len));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.data_len, big_len);
    assert_memory_equal(snap.data, big, big_len);
    free(snap.data);
    /* Too large, invalid id. */
    size_t huge_len = 16u * 1024u * 1024u + 1;
    uint8_t *huge = calloc(1, huge_len);
    assert_non_null(huge);
    assert_rv(ES_ERR_TOO_LARGE, store_save_snapshot(f->s, U8("s-1"), 3, 3, 2, huge, huge_len));
    free(huge);
    assert_rv(ES_ERR_INVALID_STREAM_ID, store_save_snapshot(f->s, U8(""), 0, 0, 1, U8("x"), 1));
    assert_rv(ES_ERR_INVALID_STREAM_ID, store_load_snapshot(f->s, U8("a\x01"), 2, &snap));
    /* An older snapshot of the same format never replaces a newer one (a
     * slow concurrent saver); the same revision, or another format, does. */
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 1, 2, U8("old"), 3));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.revision, 3);
    assert_int_equal(snap.data_len, big_len);
    free(snap.data);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 3, 2, U8("same"), 4));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.revision, 3);
    assert_int_equal(snap.data_len, 4);
    assert_memory_equal(snap.data, "same", 4);
    free(snap.data);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 1, 5, U8("v5"), 2));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.revision, 1);
    assert_int_equal(snap.state_format, 5);
    free(snap.data);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 3, 2, big, big_len));
    free(big);
    /* Snapshots are beside the log, not in it. */
    assert_int_equal(store_head(f->s), 5);
    assert_check_clean(f->s);
    /* Another stream's snapshot is its own. */
    add(f, "s-2", 1);
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("s-2"), 3, &snap));
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-2"), 3, 0, 9, U8("two"), 3));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_int_equal(snap.state_format, 2);
    free(snap.data);
}

static void test_snapshot_corrupt(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "s-1", 2);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 1, 1, U8("state"), 5));
    store_close(f->s);
    f->s = NULL;
    /* A snapshot whose bytes changed after the CRC was written. */
    uint8_t bad[24 + 5] = {0};
    memcpy(bad + 24, "state", 5);
    raw_put(f->path, "snapshots", "s-1", 3, bad, sizeof bad);
    fx_open(f);
    store_snapshot snap;
    assert_rv(ES_ERR_CORRUPT, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    assert_null(snap.data);
    /* Too short to be a snapshot. */
    store_close(f->s);
    f->s = NULL;
    raw_put(f->path, "snapshots", "s-1", 3, "abc", 3);
    fx_open(f);
    assert_rv(ES_ERR_CORRUPT, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    /* Saving again repairs it. */
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("s-1"), 3, 1, 1, U8("state"), 5));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("s-1"), 3, &snap));
    free(snap.data);
}

/* =========================================================== validation == */

static void test_validation_stream_ids(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "ok-1", 1);
    state_snap ss = snap_state(f->s);
    uint8_t *big = malloc(65536);
    assert_non_null(big);
    memset(big, 'a', 65536);
    const struct {
        const uint8_t *id;
        size_t len;
        es_err want;
        const char *what;
    } cases[] = {
        {U8(""), 0, ES_ERR_INVALID_STREAM_ID, "empty"},
        {NULL, 0, ES_ERR_INVALID_STREAM_ID, "NULL"},
        {big, 257, ES_ERR_INVALID_STREAM_ID, "257 bytes"},
        {big, 512, ES_ERR_INVALID_STREAM_ID, "512 bytes"},
        {big, 65536, ES_ERR_INVALID_STREAM_ID, "64 KiB"},
        {U8("\x80"), 1, ES_ERR_INVALID_STREAM_ID, "80"},
        {U8("a\x80"), 2, ES_ERR_INVALID_STREAM_ID, "a 80"},
        {U8("\xc0\xaf"), 2, ES_ERR_INVALID_STREAM_ID, "C0 AF (overlong)"},
        {U8("\xed\xa0\x80"), 3, ES_ERR_INVALID_STREAM_ID, "ED A0 80 (surrogate)"},
        {U8("\xf4\x90\x80\x80"), 4, ES_ERR_INVALID_STREAM_ID, "F4 90 80 80 (> U+10FFFF)"},
        {U8("\xe2\x82"), 2, ES_ERR_INVALID_STREAM_ID, "E2 82 (truncated)"},
        {U8("ab\xe2\x82"), 4, ES_ERR_INVALID_STREAM_ID, "ab E2 82 (truncated at end)"},
        {U8("\xff"), 1, ES_ERR_INVALID_STREAM_ID, "FF"},
        {U8("a\0b"), 3, ES_ERR_INVALID_STREAM_ID, "embedded NUL"},
        {U8("\0"), 1, ES_ERR_INVALID_STREAM_ID, "NUL"},
        {U8("a\x01"), 2, ES_ERR_INVALID_STREAM_ID, "01"},
        {U8("a\tb"), 3, ES_ERR_INVALID_STREAM_ID, "tab"},
        {U8("a\nb"), 3, ES_ERR_INVALID_STREAM_ID, "newline"},
        {U8("a\x1f"), 2, ES_ERR_INVALID_STREAM_ID, "1F"},
        {U8("a\x7f"), 2, ES_ERR_INVALID_STREAM_ID, "DEL"},
        {U8("a\xc2\x85"), 3, ES_ERR_INVALID_STREAM_ID, "C1 NEL"},
        {U8("$all"), 4, ES_ERR_RESERVED_STREAM, "'$' reserved"},
        {U8("$ce-account"), 11, ES_ERR_RESERVED_STREAM, "'$' reserved"},
    };
    evset e;
    evset_make(&e, f, 1, "T");
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        store_append_in a = mk_append("x", STORE_EXPECT_ANY, 0, &e);
        a.stream = cases[i].id;
        a.stream_len = cases[i].len;
        store_append_result r;
        es_err rv = append_one(f->s, &a, &r);
        if (rv != cases[i].want) {
            fail_msg("stream id %s: %s (%s), expected %s", cases[i].what, es_errname(rv),
                     es_strerror(rv), es_errname(cases[i].want));
        }
        assert_same_state(f->s, ss);
        /* The same in a transaction beside a valid append. */
        store_append_in ap[2] = {mk_append("ok-2", STORE_EXPECT_ANY, 0, &e), a};
        store_append_result res[2];
        store_request tx = {.appends = ap, .n_appends = 2, .results = res};
        assert_rv(ES_OK, store_append_batch(f->s, &tx, 1));
        assert_rv(cases[i].want, tx.rv);
        assert_same_state(f->s, ss);
        /* Reads refuse invalid ids; '$' ids may be read. */
        store_page pg;
        uint64_t n = 0;
        es_err want_read =
            cases[i].want == ES_ERR_RESERVED_STREAM ? ES_ERR_NOT_FOUND : ES_ERR_INVALID_STREAM_ID;
        assert_rv(want_read, store_read_stream(f->s, cases[i].id, cases[i].len, 0, false, 0,
                                               count_visit, &n, &pg));
        store_stream_info si;
        assert_rv(want_read, store_stream_info_get(f->s, cases[i].id, cases[i].len, &si));
    }
    assert_false(stream_exists(f->s, "ok-2"));
    /* 256 bytes, multi-byte UTF-8 and '$' with the right are fine. */
    const struct {
        const uint8_t *id;
        size_t len;
        bool reserved;
    } good[] = {
        {big, 256, false},
        {U8("caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80-\xf4\x8f\xbf\xbf"), 19, false},
        {U8("a b"), 3, false},
        {U8("$all"), 4, true},
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        evset g;
        evset_make(&g, f, 1, "T");
        store_append_in a = mk_append("x", STORE_EXPECT_NO_STREAM, 0, &g);
        a.stream = good[i].id;
        a.stream_len = good[i].len;
        a.allow_reserved = good[i].reserved;
        assert_rv(ES_OK, append_one(f->s, &a, NULL));
        store_stream_info si;
        assert_rv(ES_OK, store_stream_info_get(f->s, good[i].id, good[i].len, &si));
        assert_int_equal(si.event_count, 1);
        coll c = {0};
        store_page pg;
        assert_rv(ES_OK, store_read_stream(f->s, good[i].id, good[i].len, 0, false, 0, coll_visit,
                                           &c, &pg));
        assert_int_equal(c.n, 1);
        assert_true(bin_is(c.ev[0]->stream, good[i].id, good[i].len));
        coll_free(&c);
        evset_free(&g);
    }
    assert_int_equal(store_head(f->s), ss.head + ARRAY_LEN(good));
    assert_check_clean(f->s);
    evset_free(&e);
    free(big);
}

static void test_validation_events(void **state)
{
    fx *f = *state;
    store_options o = {.path = f->path,
                       .map_size = TEST_MAP_SIZE,
                       .max_events_per_append = 5,
                       .max_event_bytes = 1000};
    f->s = open_opts(&o);
    add(f, "s-1", 1);
    state_snap ss = snap_state(f->s);
    evset e;
    store_append_result r;

    /* Zero events. */
    evset_make(&e, f, 0, "T");
    assert_rv(ES_ERR_INVALID_ARGUMENT, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    assert_rv(ES_ERR_INVALID_ARGUMENT, append_ev(f->s, "s-2", STORE_EXPECT_NO_STREAM, 0, &e, &r));
    evset_free(&e);
    /* The cap on events per append: 5 fine, 6 too many. */
    evset_make(&e, f, 6, "T");
    assert_rv(ES_ERR_TOO_MANY_EVENTS, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    assert_same_state(f->s, ss);
    e.n = 5;
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
    evset_free(&e);
    ss = snap_state(f->s);

    /* Payload: data + metadata <= 1000. */
    static uint8_t buf[2000];
    memset(buf, 'p', sizeof buf);
    const struct {
        size_t data, meta;
        es_err want;
    } sizes[] = {
        {1001, 0, ES_ERR_TOO_LARGE},
        {0, 1001, ES_ERR_TOO_LARGE},
        {600, 401, ES_ERR_TOO_LARGE},
        {2000, 0, ES_ERR_TOO_LARGE},
        {1000, 0, ES_OK},
        {0, 1000, ES_OK},
        {600, 400, ES_OK},
    };
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        evset_make(&e, f, 3, "T");
        e.in[1].data = buf;
        e.in[1].data_len = sizes[i].data;
        e.in[1].metadata = buf;
        e.in[1].metadata_len = sizes[i].meta;
        assert_rv(sizes[i].want, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
        if (sizes[i].want != ES_OK) {
            assert_same_state(f->s, ss);
        } else {
            ss = snap_state(f->s);
        }
        evset_free(&e);
    }

    /* Event types. */
    char long_type[300];
    memset(long_type, 't', sizeof long_type);
    const struct {
        const char *type;
        size_t len;
        es_err want;
    } types[] = {
        {"", 0, ES_ERR_INVALID_EVENT_TYPE},
        {NULL, 0, ES_ERR_INVALID_EVENT_TYPE},
        {long_type, 257, ES_ERR_INVALID_EVENT_TYPE},
        {"\xc0\xaf", 2, ES_ERR_INVALID_EVENT_TYPE},
        {"\xed\xa0\x80", 3, ES_ERR_INVALID_EVENT_TYPE},
        {"\xe2\x82", 2, ES_ERR_INVALID_EVENT_TYPE},
        {"a\0b", 3, ES_ERR_INVALID_EVENT_TYPE},
        {"a\nb", 3, ES_ERR_INVALID_EVENT_TYPE},
        {"a\x7f", 2, ES_ERR_INVALID_EVENT_TYPE},
        {long_type, 256, ES_OK},
        {"$Reserved-is-fine-for-types", 27, ES_OK},
    };
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        evset_make(&e, f, 2, "T");
        e.in[1].type = U8(types[i].type);
        e.in[1].type_len = types[i].len;
        es_err rv = append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r);
        if (rv != types[i].want) {
            fail_msg("event type %zu: %s (%s), expected %s", i, es_errname(rv), es_strerror(rv),
                     es_errname(types[i].want));
        }
        if (types[i].want != ES_OK) {
            assert_same_state(f->s, ss);
        } else {
            ss = snap_state(f->s);
        }
        evset_free(&e);
    }

    /* Content type and correlation/causation ids. */
    uint8_t id17[17] = {0};
    const struct {
        const char *ct;
        size_t ct_len;
        size_t corr_len, caus_len;
        es_err want;
    } opt[] = {
        {"a\x01", 2, 0, 0, ES_ERR_INVALID_ARGUMENT}, {"\xff", 1, 0, 0, ES_ERR_INVALID_ARGUMENT},
        {NULL, 0, 15, 0, ES_ERR_INVALID_ARGUMENT},   {NULL, 0, 17, 0, ES_ERR_INVALID_ARGUMENT},
        {NULL, 0, 0, 1, ES_ERR_INVALID_ARGUMENT},    {"application/json", 16, 16, 16, ES_OK},
    };
    for (size_t i = 0; i < ARRAY_LEN(opt); i++) {
        evset_make(&e, f, 1, "T");
        e.in[0].content_type = U8(opt[i].ct);
        e.in[0].content_type_len = opt[i].ct_len;
        e.in[0].correlation_id = id17;
        e.in[0].correlation_id_len = opt[i].corr_len;
        e.in[0].causation_id = id17;
        e.in[0].causation_id_len = opt[i].caus_len;
        assert_rv(opt[i].want, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, &r));
        if (opt[i].want != ES_OK) {
            assert_same_state(f->s, ss);
        }
        evset_free(&e);
    }
    assert_check_clean(f->s);
}

static void test_validation_default_caps(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, STORE_DEFAULT_MAX_EVENTS_PER_APPEND + 1, "T");
    assert_rv(ES_ERR_TOO_MANY_EVENTS, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, NULL));
    assert_int_equal(store_head(f->s), 0);
    e.n = STORE_DEFAULT_MAX_EVENTS_PER_APPEND;
    assert_rv(ES_OK, append_ev(f->s, "s-1", STORE_EXPECT_ANY, 0, &e, NULL));
    assert_int_equal(store_head(f->s), STORE_DEFAULT_MAX_EVENTS_PER_APPEND);
    evset_free(&e);
    /* One payload above 8 MiB, and one exactly at it (stored and read back). */
    size_t len = STORE_DEFAULT_MAX_EVENT_BYTES + 1;
    uint8_t *p = malloc(len);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)(i ^ (i >> 8));
    }
    evset_make(&e, f, 1, "Big");
    e.in[0].data = p;
    e.in[0].data_len = len;
    assert_rv(ES_ERR_TOO_LARGE, append_ev(f->s, "s-2", STORE_EXPECT_ANY, 0, &e, NULL));
    assert_false(stream_exists(f->s, "s-2"));
    e.in[0].data_len = len - 1;
    assert_rv(ES_OK, append_ev(f->s, "s-2", STORE_EXPECT_ANY, 0, &e, NULL));
    coll c = {0};
    read_stream_all(f->s, "s-2", 0, &c);
    assert_int_equal(c.n, 1);
    assert_true(bin_is(c.ev[0]->data, p, len - 1));
    coll_free(&c);
    evset_free(&e);
    free(p);
    assert_check_clean(f->s);
}

/* ========================================================== store full == */

static void test_store_full(void **state)
{
    fx *f = *state;
    f->s = open_at(f->path, 1u << 20, false, false);
    static uint8_t payload[1000];
    memset(payload, 'f', sizeof payload);
    uint64_t stored = 0;
    es_err rv = ES_OK;
    store_append_result r;
    int i;
    state_snap ss = {0};
    for (i = 0; i < 10000; i++) {
        evset e;
        evset_make(&e, f, 10, "Fill");
        for (size_t k = 0; k < e.n; k++) {
            e.in[k].data = payload;
            e.in[k].data_len = sizeof payload;
        }
        char name[32];
        snprintf(name, sizeof name, "fill-%d", i % 13);
        ss = snap_state(f->s);
        rv = append_ev(f->s, name, STORE_EXPECT_ANY, 0, &e, &r);
        evset_free(&e);
        if (rv != ES_OK) {
            break;
        }
        stored += 10;
    }
    assert_rv(ES_ERR_STORE_FULL, rv);
    assert_true(stored > 0);
    /* Nothing of the failed request: head, counts, and the log. */
    assert_same_state(f->s, ss);
    assert_int_equal(store_head(f->s), stored);
    uint64_t n = 0;
    store_page pg;
    uint64_t from = 0;
    do {
        assert_rv(ES_OK, store_read_all(f->s, NULL, from, false, 0, count_visit, &n, &pg));
        from = pg.next;
    } while (!pg.end);
    assert_int_equal(n, stored);
    assert_check_clean(f->s);

    /* A small append: accepted if the map still has room for it. */
    evset small;
    evset_make(&small, f, 1, "Small");
    rv = append_ev(f->s, "small-1", STORE_EXPECT_ANY, 0, &small, &r);
    if (rv == ES_OK) {
        stored++;
        assert_int_equal(r.first_position, stored);
    } else {
        assert_rv(ES_ERR_STORE_FULL, rv);
        assert_int_equal(store_head(f->s), stored);
        /* A batch that fails as a whole (the commit found no room) says so
         * in every request, and nothing of it is visible. */
        evset e1, e2;
        evset_make(&e1, f, 1, "Small");
        evset_make(&e2, f, 1, "Small");
        store_append_in a1 = mk_append("small-1", STORE_EXPECT_ANY, 0, &e1);
        store_append_in a2 = mk_append("small-2", STORE_EXPECT_ANY, 0, &e2);
        store_append_result r1, r2;
        store_request reqs[2] = {
            {.appends = &a1, .n_appends = 1, .results = &r1},
            {.appends = &a2, .n_appends = 1, .results = &r2},
        };
        es_err brv = store_append_batch(f->s, reqs, 2);
        if (brv != ES_OK) {
            assert_rv(ES_ERR_STORE_FULL, brv);
            assert_rv(brv, reqs[0].rv);
            assert_rv(brv, reqs[1].rv);
            assert_rv(brv, r1.rv);
            assert_rv(brv, r2.rv);
            assert_false(reqs[0].synced);
            assert_int_equal(store_head(f->s), stored);
            assert_false(stream_exists(f->s, "small-1"));
        } else {
            for (int k = 0; k < 2; k++) {
                if (reqs[k].rv == ES_OK) {
                    stored++;
                } else {
                    assert_rv(ES_ERR_STORE_FULL, reqs[k].rv);
                }
            }
            assert_int_equal(store_head(f->s), stored);
        }
        evset_free(&e1);
        evset_free(&e2);
    }
    evset_free(&small);
    assert_check_clean(f->s);

    /* Reopen with a larger map: everything is there and appends work again. */
    store_close(f->s);
    f->s = NULL;
    f->s = open_at(f->path, 8u << 20, false, false);
    store_stats st;
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_int_equal(st.map_size, 8u << 20);
    assert_int_equal(store_head(f->s), stored);
    evset_make(&small, f, 10, "Small");
    assert_rv(ES_OK, append_ev(f->s, "small-1", STORE_EXPECT_ANY, 0, &small, &r));
    assert_int_equal(r.first_position, stored + 1);
    evset_free(&small);
    /* Reopening with a map smaller than the data keeps the data. */
    store_close(f->s);
    f->s = NULL;
    f->s = open_at(f->path, 1u << 20, false, false);
    assert_int_equal(store_head(f->s), stored + 10);
    assert_check_clean(f->s);
}

static void test_store_full_fails_alone(void **state)
{
    fx *f = *state;
    f->s = open_at(f->path, 1u << 20, false, false);
    add(f, "before-1", 2);
    /* A batch: small, too big for the map, small, too big, small. */
    static uint8_t payload[60000];
    memset(payload, 'b', sizeof payload);
    evset e[5];
    store_append_in ap[5];
    store_append_result res[5];
    store_request reqs[5];
    char names[5][16];
    for (int i = 0; i < 5; i++) {
        bool big = i == 1 || i == 3;
        evset_make(&e[i], f, big ? 40 : 2, big ? "Big" : "Small");
        if (big) {
            for (size_t k = 0; k < e[i].n; k++) {
                e[i].in[k].data = payload;
                e[i].in[k].data_len = sizeof payload;
            }
        }
        snprintf(names[i], sizeof names[i], "b-%d", i);
        ap[i] = mk_append(names[i], STORE_EXPECT_NO_STREAM, 0, &e[i]);
        reqs[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
    }
    assert_rv(ES_OK, store_append_batch(f->s, reqs, 5));
    assert_rv(ES_OK, reqs[0].rv);
    assert_rv(ES_ERR_STORE_FULL, reqs[1].rv);
    assert_rv(ES_ERR_STORE_FULL, res[1].rv);
    assert_rv(ES_OK, reqs[2].rv);
    assert_rv(ES_ERR_STORE_FULL, reqs[3].rv);
    assert_rv(ES_OK, reqs[4].rv);
    assert_int_equal(res[0].first_position, 3);
    assert_int_equal(res[2].first_position, 5);
    assert_int_equal(res[4].first_position, 7);
    assert_int_equal(res[4].last_position, 8);
    assert_int_equal(store_head(f->s), 8);
    assert_false(stream_exists(f->s, "b-1"));
    assert_false(stream_exists(f->s, "b-3"));
    store_stream_info si;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("b-4"), 3, &si));
    assert_int_equal(si.first_position, 7);
    assert_check_clean(f->s);
    /* Interned numbers stay unique after the redone batch. */
    add(f, "after-1", 1);
    list_coll lc = {0};
    bool more;
    assert_rv(ES_OK, store_list_streams(f->s, NULL, 0, NULL, 0, 0, list_visit, &lc, &more));
    assert_int_equal(lc.n, 5);
    for (size_t i = 0; i < lc.n; i++) {
        for (size_t j = i + 1; j < lc.n; j++) {
            assert_true(lc.info[i].number != lc.info[j].number);
        }
    }
    for (int i = 0; i < 5; i++) {
        evset_free(&e[i]);
    }
}

/*
 * The disk refuses to grow the data file (RLIMIT_FSIZE: the write fails
 * with EFBIG, as a full disk fails with ENOSPC), inside the commit rather
 * than at a put. Run in a child: the limit and SIGXFSZ are process-wide.
 * Returns 0 when every promise held, else the line that failed.
 */
#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child: line %d: %s\n", __LINE__, #cond);                              \
            return __LINE__;                                                                       \
        }                                                                                          \
    } while (0)

static int file_limit_child(fx *f, bool sync)
{
    signal(SIGXFSZ, SIG_IGN);
    store *s = NULL;
    CHILD_CHECK(try_open(f->path, TEST_MAP_SIZE, sync, false, &s, NULL, 0) == ES_OK);
    static uint8_t payload[1000];
    memset(payload, 'L', sizeof payload);
    char data[700];
    snprintf(data, sizeof data, "%s/data.mdb", f->path);
    struct stat st;
    CHILD_CHECK(stat(data, &st) == 0);
    struct rlimit old, rl;
    CHILD_CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    rl = old;
    rl.rlim_cur = (rlim_t)st.st_size + 200000;
    CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    es_err seen = ES_OK;
    int batch_failures = 0;
    for (int i = 0; i < 1000 && seen == ES_OK; i++) {
        evset big, small;
        evset_make(&big, f, 10, "Big");
        evset_make(&small, f, 1, "Small");
        for (size_t k = 0; k < big.n; k++) {
            big.in[k].data = payload;
            big.in[k].data_len = sizeof payload;
        }
        char name[32];
        snprintf(name, sizeof name, "grow-%d", i);
        store_append_in a = mk_append(name, STORE_EXPECT_NO_STREAM, 0, &big);
        store_append_in b = mk_append("small-1", STORE_EXPECT_ANY, 0, &small);
        store_append_result ra, rb;
        store_request reqs[2] = {
            {.appends = &a, .n_appends = 1, .results = &ra},
            {.appends = &b, .n_appends = 1, .results = &rb},
        };
        uint64_t head_before = store_head(s);
        es_err brv = store_append_batch(s, reqs, 2);
        if (brv != ES_OK) {
            /* The commit failed: every request says so, nothing is visible. */
            if (brv != ES_ERR_STORE_FULL) {
                fprintf(stderr, "child: commit failed with %s\n", es_errname(brv));
            }
            CHILD_CHECK(brv == ES_ERR_STORE_FULL);
            CHILD_CHECK(reqs[0].rv == brv && reqs[1].rv == brv && ra.rv == brv && rb.rv == brv);
            CHILD_CHECK(!reqs[0].synced && !reqs[1].synced);
            CHILD_CHECK(store_head(s) == head_before);
            store_stream_info si;
            CHILD_CHECK(store_stream_info_get(s, U8(name), strlen(name), &si) == ES_ERR_NOT_FOUND);
            batch_failures++;
            seen = brv;
        } else if (reqs[0].rv != ES_OK) {
            CHILD_CHECK(reqs[0].rv == ES_ERR_STORE_FULL);
            seen = reqs[0].rv;
        } else {
            CHILD_CHECK(reqs[1].rv == ES_OK);
            CHILD_CHECK(store_head(s) == head_before + 11);
        }
        evset_free(&big);
        evset_free(&small);
    }
    CHILD_CHECK(seen == ES_ERR_STORE_FULL);
    CHILD_CHECK(batch_failures == 1); /* it is the commit that fails here */
    /* Everything stored before is intact. */
    uint64_t n = 0, from = 0;
    store_page pg;
    do {
        CHILD_CHECK(store_read_all(s, NULL, from, false, 0, count_visit, &n, &pg) == ES_OK);
        from = pg.next;
    } while (!pg.end);
    CHILD_CHECK(n == store_head(s));
    store_check_report rep;
    CHILD_CHECK(store_check(s, &rep, NULL, NULL) == ES_OK);
    /* Space returns: the service resumes without a reopen. */
    CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    uint64_t head = store_head(s);
    for (int i = 0; i < 20; i++) {
        evset e;
        evset_make(&e, f, 10, "After");
        for (size_t k = 0; k < e.n; k++) {
            e.in[k].data = payload;
            e.in[k].data_len = sizeof payload;
        }
        store_append_in a = mk_append("after-1", STORE_EXPECT_ANY, 0, &e);
        store_append_result r;
        store_request q = {.appends = &a, .n_appends = 1, .results = &r};
        CHILD_CHECK(store_append_batch(s, &q, 1) == ES_OK && q.rv == ES_OK);
        CHILD_CHECK(r.first_position == head + 1);
        head += 10;
        evset_free(&e);
    }
    CHILD_CHECK(store_check(s, &rep, NULL, NULL) == ES_OK);
    store_close(s);
    s = NULL;
    CHILD_CHECK(try_open(f->path, TEST_MAP_SIZE, sync, false, &s, NULL, 0) == ES_OK);
    CHILD_CHECK(store_head(s) == head);
    CHILD_CHECK(store_check(s, &rep, NULL, NULL) == ES_OK);
    store_close(s);
    return 0;
}

static void test_disk_refuses_to_grow(void **state)
{
    fx *f = *state;
    for (int sync = 0; sync <= 1; sync++) {
        rm_rf(f->path);
        fx_open(f);
        add(f, "before-1", 200);
        store_close(f->s);
        f->s = NULL;
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            _exit(file_limit_child(f, sync));
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fail_msg("sync=%d: child %s %d", sync,
                     WIFSIGNALED(status) ? "killed by signal" : "failed at line",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
    }
}

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

/* ========================================================== concurrency == */

enum { CONC_STREAMS = 16 };

typedef struct conc {
    store *s;
    atomic_bool done;
    atomic_uint_fast64_t final_head;
} conc;

typedef struct conc_reader {
    conc *shared;
    uint64_t next;
    uint64_t revs[CONC_STREAMS];
    uint64_t seen;
    char error[256];
} conc_reader;

static int conc_visit(void *ctx, const store_record *rec)
{
    conc_reader *r = ctx;
    if (r->error[0]) {
        return 1;
    }
    Es__V1__RecordedEvent *e = es__v1__recorded_event__unpack(NULL, rec->len, rec->bytes);
    if (!e) {
        snprintf(r->error, sizeof r->error, "position %llu does not decode",
                 (unsigned long long)rec->position);
        return 1;
    }
    char name[32] = "";
    int id = -1;
    if (e->stream.len < sizeof name) {
        memcpy(name, e->stream.data, e->stream.len);
        sscanf(name, "c-%d", &id);
    }
    if (rec->position != r->next) {
        snprintf(r->error, sizeof r->error, "position %llu after %llu (gap or duplicate)",
                 (unsigned long long)rec->position, (unsigned long long)(r->next - 1));
    } else if (id < 0 || id >= CONC_STREAMS) {
        snprintf(r->error, sizeof r->error, "position %llu: unknown stream",
                 (unsigned long long)rec->position);
    } else if (e->revision != r->revs[id]) {
        snprintf(r->error, sizeof r->error, "%s revision %llu, expected %llu", name,
                 (unsigned long long)e->revision, (unsigned long long)r->revs[id]);
    } else {
        r->revs[id]++;
        r->next++;
        r->seen++;
    }
    es__v1__recorded_event__free_unpacked(e, NULL);
    return r->error[0] != 0;
}

static void *conc_reader_main(void *arg)
{
    conc_reader *r = arg;
    r->next = 1;
    for (;;) {
        bool done = atomic_load(&r->shared->done);
        store_page pg;
        es_err rv = store_read_all(r->shared->s, NULL, r->next, false, 97, conc_visit, r, &pg);
        if (rv != ES_OK) {
            snprintf(r->error, sizeof r->error, "read_all: %s", es_errname(rv));
        }
        if (r->error[0]) {
            break;
        }
        if (done && pg.end && r->next > atomic_load(&r->shared->final_head)) {
            break;
        }
    }
    return NULL;
}

static void test_concurrent_readers_see_gapless_log(void **state)
{
    fx *f = *state;
    fx_open(f);
    conc shared = {.s = f->s};
    atomic_init(&shared.done, false);
    atomic_init(&shared.final_head, 0);
    enum { READERS = 2 };
    conc_reader readers[READERS];
    pthread_t th[READERS];
    memset(readers, 0, sizeof readers);
    for (int i = 0; i < READERS; i++) {
        readers[i].shared = &shared;
        assert_int_equal(pthread_create(&th[i], NULL, conc_reader_main, &readers[i]), 0);
    }
    uint64_t counts[CONC_STREAMS] = {0};
    uint64_t rng = 99;
    for (int b = 0; b < 400; b++) {
        store_request reqs[4];
        store_append_in ap[4];
        store_append_result res[4];
        evset e[4];
        char names[4][16];
        for (int i = 0; i < 4; i++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            int sid = (int)((rng >> 33) % CONC_STREAMS);
            snprintf(names[i], sizeof names[i], "c-%d", sid);
            evset_make(&e[i], f, 1 + (size_t)((rng >> 17) % 5), "T");
            ap[i] = mk_append(names[i], counts[sid] ? STORE_EXPECT_EXACT : STORE_EXPECT_NO_STREAM,
                              counts[sid] - 1, &e[i]);
            counts[sid] += e[i].n;
            reqs[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
        }
        assert_rv(ES_OK, store_append_batch(f->s, reqs, 4));
        for (int i = 0; i < 4; i++) {
            assert_rv(ES_OK, reqs[i].rv);
            evset_free(&e[i]);
        }
    }
    atomic_store(&shared.final_head, store_head(f->s));
    atomic_store(&shared.done, true);
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (readers[i].error[0]) {
            fail_msg("reader %d: %s", i, readers[i].error);
        }
        assert_int_equal(readers[i].seen, store_head(f->s));
        assert_memory_equal(readers[i].revs, counts, sizeof counts);
    }
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

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

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
        T(test_duplicate_ids_in_one_append),
        T(test_positions_gapless_revisions_contiguous),
        T(test_revision_order_across_byte_boundaries),
        T(test_recorded_event_fields),
        T(test_read_stream_paging),
        T(test_read_stream_limits),
        T(test_read_all_unfiltered),
        T(test_read_all_filters),
        T(test_read_all_prefix_scan_limit),
        T(test_visitor_stops_before_a_record),
        T(test_stream_info),
        T(test_list_streams),
        T(test_snapshots),
        T(test_snapshot_corrupt),
        T(test_validation_stream_ids),
        T(test_validation_events),
        T(test_validation_default_caps),
        T(test_store_full),
        T(test_store_full_fails_alone),
        T(test_disk_refuses_to_grow),
        T(test_flipped_byte_caught),
        T(test_damaged_record_header_caught),
        T(test_check_finds_index_damage),
        T(test_truncated_data_file),
        T(test_concurrent_readers_see_gapless_log),
        T(test_check_clean_many_streams),
        T(test_backup),
        T(test_stats),
        T(test_import_copies_a_store),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}

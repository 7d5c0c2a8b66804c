/*
 * store_fixture — the helpers shared by the store's unit tests (see
 * store_fixture.h).
 */
#include "store_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- fixture -- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int fx_setup(void **state)
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

int fx_teardown(void **state)
{
    fx *f = *state;
    store_close(f->s);
    rm_rf(f->root);
    free(f);
    return 0;
}

es_err try_open(const char *path, uint64_t map_size, bool sync, bool ro, store **out, char *msg,
                size_t msg_len)
{
    store_options o = {.path = path, .map_size = map_size, .sync = sync, .read_only = ro};
    return store_open(&o, out, msg, msg_len);
}

store *open_opts(const store_options *o)
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

store *open_at(const char *path, uint64_t map_size, bool sync, bool ro)
{
    store_options o = {.path = path, .map_size = map_size, .sync = sync, .read_only = ro};
    return open_opts(&o);
}

void fx_open(fx *f)
{
    f->s = open_at(f->path, TEST_MAP_SIZE, false, false);
}

void fx_reopen(fx *f)
{
    store_close(f->s);
    f->s = NULL;
    fx_open(f);
}

/* ----------------------------------------------------------------- events -- */

void set_id(uint8_t id[16], uint64_t n)
{
    memcpy(id, "evid", 4);
    id[4] = id[5] = id[6] = id[7] = 0xee;
    for (int i = 15; i >= 8; i--) {
        id[i] = (uint8_t)n;
        n >>= 8;
    }
}

/* n events of one type, ids from the fixture counter, data "data-<id>". */
void evset_make(evset *e, fx *f, size_t n, const char *type)
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

void evset_free(evset *e)
{
    free(e->in);
    free(e->ids);
    free(e->data);
    memset(e, 0, sizeof *e);
}

store_append_in mk_append(const char *stream, store_expect ex, uint64_t rev, const evset *e)
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
es_err append_one(store *s, const store_append_in *a, store_append_result *res)
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

es_err append_ev(store *s, const char *stream, store_expect ex, uint64_t rev, const evset *e,
                 store_append_result *res)
{
    store_append_in a = mk_append(stream, ex, rev, e);
    return append_one(s, &a, res);
}

/* Append n fresh events of type "T" with expectation any; assert success. */
store_append_result add(fx *f, const char *stream, size_t n)
{
    evset e;
    evset_make(&e, f, n, "T");
    store_append_result res;
    assert_rv(ES_OK, append_ev(f->s, stream, STORE_EXPECT_ANY, 0, &e, &res));
    evset_free(&e);
    return res;
}

/* --------------------------------------------------------------- reading -- */

int coll_visit(void *ctx, const store_record *rec)
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

void coll_free(coll *c)
{
    for (size_t i = 0; i < c->n; i++) {
        es__v1__recorded_event__free_unpacked(c->ev[i], NULL);
    }
    free(c->ev);
    memset(c, 0, sizeof *c);
}

bool bin_is(ProtobufCBinaryData b, const void *p, size_t len)
{
    return b.len == len && (len == 0 || memcmp(b.data, p, len) == 0);
}

bool bin_is_str(ProtobufCBinaryData b, const char *s)
{
    return bin_is(b, s, strlen(s));
}

/* Read a whole stream forward in pages of `page_size`. */
void read_stream_all(store *s, const char *stream, uint32_t page_size, coll *c)
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
void read_all_fwd(store *s, const store_filter *flt, uint32_t page_size, coll *c)
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

int count_visit(void *ctx, const store_record *rec)
{
    (void)rec;
    (*(uint64_t *)ctx)++;
    return 0;
}

state_snap snap_state(store *s)
{
    store_stats st;
    assert_rv(ES_OK, store_stats_get(s, &st));
    state_snap ss = {store_head(s), st.event_count, st.stream_count};
    assert_int_equal(st.head_position, ss.head);
    return ss;
}

void assert_same_state(store *s, state_snap before)
{
    state_snap now = snap_state(s);
    assert_int_equal(now.head, before.head);
    assert_int_equal(now.events, before.events);
    assert_int_equal(now.streams, before.streams);
}

void check_log_print(void *ctx, const char *line)
{
    (void)ctx;
    print_message("store_check: %s\n", line);
}

void assert_check_clean(store *s)
{
    store_check_report r;
    es_err rv = store_check(s, &r, check_log_print, NULL);
    if (rv != ES_OK) {
        fail_msg("store_check: %s (%s): crc %llu gaps %llu rev %llu idx %llu first bad %llu",
                 es_errname(rv), es_strerror(rv), (unsigned long long)r.crc_errors,
                 (unsigned long long)r.position_gaps, (unsigned long long)r.revision_errors,
                 (unsigned long long)r.index_errors, (unsigned long long)r.first_bad_position);
    }
    assert_int_equal(r.events_checked + r.events_removed, store_head(s));
}

bool stream_exists(store *s, const char *stream)
{
    store_stream_info si;
    es_err rv = store_stream_info_get(s, U8(stream), strlen(stream), &si);
    if (rv == ES_ERR_NOT_FOUND) {
        return false;
    }
    assert_rv(ES_OK, rv);
    return true;
}

uint64_t last_rev(store *s, const char *stream)
{
    store_stream_info si;
    assert_rv(ES_OK, store_stream_info_get(s, U8(stream), strlen(stream), &si));
    return si.last_revision;
}

/* -------------------------------------------------------- raw LMDB access -- */

MDB_env *raw_env(const char *path)
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

void raw_put(const char *path, const char *db, const void *key, size_t klen, const void *val,
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

void raw_del(const char *path, const char *db, const void *key, size_t klen)
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
void raw_flip_record_byte(const char *path, uint64_t pos, size_t offset)
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

void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

uint8_t *read_file(const char *path, size_t *len)
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
void dir_listing(const char *path, char *buf, size_t len)
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

int list_visit(void *ctx, const uint8_t *name, size_t len, const store_stream_info *info)
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

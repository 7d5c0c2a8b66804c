/*
 * test_store_damage — indexes that point at the wrong record, and index
 * inserts that meet an existing entry (server/store/read.c, write.c,
 * open.c, check.c): the store refuses with ES_ERR_CORRUPT, logs the index
 * and the position, counts it (store_index_mismatches), never hands out an
 * event that is not what was asked and never writes over an entry. The
 * damage is made with LMDB directly on a closed store, as a faulty disk
 * would. Fixture and helpers: store_fixture.h.
 */
#include "store_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers -- */

typedef struct damage_log {
    char lines[8][300];
    size_t n;
} damage_log;

static void damage_log_line(void *ctx, const char *line)
{
    damage_log *d = ctx;
    if (d->n < ARRAY_LEN(d->lines)) {
        snprintf(d->lines[d->n], sizeof d->lines[d->n], "%s", line);
    }
    d->n++;
}

/* Reopen the fixture's store with the damage log captured. */
static void reopen_logged(fx *f, damage_log *d)
{
    store_close(f->s);
    store_options o = {.path = f->path,
                       .map_size = TEST_MAP_SIZE,
                       .damage_log = damage_log_line,
                       .damage_log_ctx = d};
    f->s = open_opts(&o);
}

/* A value of a closed store's database, copied into out (returns its size). */
static size_t raw_get(const char *path, const char *db, const void *key, size_t klen, void *out,
                      size_t cap)
{
    MDB_env *env = raw_env(path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_true(v.mv_size <= cap);
    memcpy(out, v.mv_data, v.mv_size);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return v.mv_size;
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* A stream's interned number (the first 8 bytes, LE, of its record). */
static uint64_t raw_stream_number(const char *path, const char *stream)
{
    uint8_t rec[64];
    assert_int_equal(raw_get(path, "streams", stream, strlen(stream), rec, sizeof rec), 32);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) {
        n = n << 8 | rec[i];
    }
    return n;
}

/* "name\0pos": a key of the category and type indexes. */
static size_t name_pos_key(uint8_t *key, const char *name, uint64_t pos)
{
    size_t n = strlen(name);
    memcpy(key, name, n);
    key[n] = 0;
    be64(key + n + 1, pos);
    return n + 9;
}

/* Every collected event belongs to `stream` at revision from + i. */
static void assert_stream_events(const coll *c, const char *stream, uint64_t from)
{
    for (size_t i = 0; i < c->n; i++) {
        assert_true(bin_is_str(c->ev[i]->stream, stream));
        assert_int_equal(c->ev[i]->revision, from + i);
    }
}

static bool log_names(const damage_log *d, const char *index, uint64_t pos)
{
    char want[64];
    snprintf(want, sizeof want, "position %llu", (unsigned long long)pos);
    for (size_t i = 0; i < d->n && i < ARRAY_LEN(d->lines); i++) {
        if (strstr(d->lines[i], index) && strstr(d->lines[i], want)) {
            return true;
        }
    }
    return false;
}

/* ----------------------------------------------------------------- reads -- */

/* The streams record of acct-3 carries acct-2's number: reads and appends
 * of acct-3 would land in acct-2's history. */
static void test_stream_record_of_another_stream(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acct-2", 3); /* positions 1..3 */
    add(f, "acct-3", 2); /* positions 4..5 */
    store_close(f->s);
    f->s = NULL;
    uint8_t rec[64];
    size_t n = raw_get(f->path, "streams", "acct-2", 6, rec, sizeof rec);
    raw_put(f->path, "streams", "acct-3", 6, rec, n);
    damage_log d = {0};
    reopen_logged(f, &d);
    state_snap before = snap_state(f->s);

    coll c = {0};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("acct-3"), 6, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    store_stream_info si;
    assert_rv(ES_ERR_CORRUPT, store_stream_info_get(f->s, U8("acct-3"), 6, &si));

    evset e;
    evset_make(&e, f, 1, "Deposit");
    assert_rv(ES_ERR_CORRUPT, append_ev(f->s, "acct-3", STORE_EXPECT_ANY, 0, &e, NULL));
    evset_free(&e);
    assert_same_state(f->s, before);

    read_stream_all(f->s, "acct-2", 0, &c); /* the other stream is untouched */
    assert_int_equal(c.n, 3);
    assert_stream_events(&c, "acct-2", 0);
    coll_free(&c);
    assert_true(store_index_mismatches(f->s) >= 3);
    assert_true(log_names(&d, "streams", 3)); /* acct-2's tail, where it led */
}

/* A stream_revs entry of acct-3 points at an event of acct-2. */
static void test_stream_index_points_elsewhere(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acct-2", 2); /* 1..2 */
    add(f, "acct-3", 3); /* 3..5 */
    store_close(f->s);
    f->s = NULL;
    uint8_t key[16], val[8];
    be64(key, raw_stream_number(f->path, "acct-3"));
    be64(key + 8, 1);
    be64(val, 2);
    raw_put(f->path, "stream_revs", key, 16, val, 8);
    damage_log d = {0};
    reopen_logged(f, &d);

    for (int backward = 0; backward <= 1; backward++) {
        coll c = {0};
        store_page pg;
        assert_rv(ES_ERR_CORRUPT, store_read_stream(f->s, U8("acct-3"), 6, backward ? 1 : 0,
                                                    backward, 0, coll_visit, &c, &pg));
        assert_int_equal(c.n, backward ? 0 : 1); /* revision 0 is sound */
        assert_stream_events(&c, "acct-3", 0);
        coll_free(&c);
    }
    /* Past the damage the stream reads as before. */
    coll c = {0};
    store_page pg;
    assert_rv(ES_OK, store_read_stream(f->s, U8("acct-3"), 6, 2, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 1);
    assert_stream_events(&c, "acct-3", 2);
    coll_free(&c);
    assert_int_equal(store_index_mismatches(f->s), 2);
    assert_true(log_names(&d, "stream_revs", 2));
}

/* A category entry and a type entry point at events of another category
 * and type. */
static void test_category_and_type_index_point_elsewhere(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acct-2", 2);                          /* 1..2, type T */
    store_append_result r = add(f, "other-1", 1); /* 3 */
    assert_int_equal(r.first_position, 3);
    evset e;
    evset_make(&e, f, 1, "U");
    assert_rv(ES_OK, append_ev(f->s, "acct-4", STORE_EXPECT_ANY, 0, &e, NULL)); /* 4, type U */
    evset_free(&e);
    store_close(f->s);
    f->s = NULL;
    uint8_t key[64];
    raw_put(f->path, "categories", key, name_pos_key(key, "acct", 3), NULL, 0);
    raw_put(f->path, "types", key, name_pos_key(key, "U", 1), NULL, 0);
    damage_log d = {0};
    reopen_logged(f, &d);

    store_filter cat = {STORE_FILTER_CATEGORY, U8("acct"), 4};
    coll c = {0};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, &cat, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2); /* positions 1 and 2, then the damaged entry */
    for (size_t i = 0; i < c.n; i++) {
        assert_true(bin_is_str(c.ev[i]->stream, "acct-2"));
    }
    coll_free(&c);
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, &cat, 10, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 1); /* position 4 (acct-4), then position 3 refused */
    assert_true(bin_is_str(c.ev[0]->stream, "acct-4"));
    coll_free(&c);

    store_filter type = {STORE_FILTER_EVENT_TYPE, U8("U"), 1};
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, &type, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    coll_free(&c);
    assert_true(log_names(&d, "categories", 3));
    assert_true(log_names(&d, "types", 1));
    assert_int_equal(store_index_mismatches(f->s), 3);
}

/* The event-id index sends a retry's first id to the stream's next event:
 * not a duplicate, not a conflict -- damage. */
static void test_event_id_index_points_elsewhere(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 2, "T");
    assert_rv(ES_OK, append_ev(f->s, "acct-2", STORE_EXPECT_ANY, 0, &e, NULL)); /* 1..2 */
    store_close(f->s);
    f->s = NULL;
    uint8_t val[24];
    be64(val, raw_stream_number(f->path, "acct-2"));
    be64(val + 8, 1);
    be64(val + 16, 2);
    raw_put(f->path, "event_ids", e.ids[0], 16, val, 24);
    damage_log d = {0};
    reopen_logged(f, &d);
    state_snap before = snap_state(f->s);
    assert_rv(ES_ERR_CORRUPT, append_ev(f->s, "acct-2", STORE_EXPECT_ANY, 0, &e, NULL));
    evset_free(&e);
    assert_same_state(f->s, before);
    assert_int_equal(store_index_mismatches(f->s), 1);
    assert_true(log_names(&d, "event_ids", 2));
}

/* ---------------------------------------------------------------- writes -- */

/* An entry already where a new event's category or type entry goes: the
 * whole batch is refused, nothing written, the entry kept. */
static void test_insert_collision_aborts_batch(void **state)
{
    static const char *const dbs[] = {"categories", "types"};
    for (size_t t = 0; t < ARRAY_LEN(dbs); t++) {
        fx *f = *state;
        fx_open(f);
        add(f, "acct-2", 1); /* 1 */
        store_close(f->s);
        f->s = NULL;
        uint8_t key[64];
        raw_put(f->path, dbs[t], key, name_pos_key(key, t == 0 ? "acct" : "T", 3), NULL, 0);
        damage_log d = {0};
        reopen_logged(f, &d);
        state_snap before = snap_state(f->s);

        evset e1, e2;
        evset_make(&e1, f, 1, "Other");
        evset_make(&e2, f, 1, "T");
        store_append_in a1 = mk_append("zzz-1", STORE_EXPECT_ANY, 0, &e1);  /* position 2 */
        store_append_in a2 = mk_append("acct-2", STORE_EXPECT_ANY, 0, &e2); /* position 3 */
        store_append_result r1, r2;
        store_request reqs[2] = {{.appends = &a1, .n_appends = 1, .results = &r1},
                                 {.appends = &a2, .n_appends = 1, .results = &r2}};
        assert_rv(ES_ERR_CORRUPT, store_append_batch(f->s, reqs, 2));
        assert_rv(ES_ERR_CORRUPT, reqs[0].rv);
        assert_rv(ES_ERR_CORRUPT, reqs[1].rv);
        assert_same_state(f->s, before);
        assert_false(stream_exists(f->s, "zzz-1"));
        assert_int_equal(last_rev(f->s, "acct-2"), 0);
        assert_int_equal(store_index_mismatches(f->s), 1);
        assert_true(log_names(&d, dbs[t], 3));
        evset_free(&e1);
        evset_free(&e2);
        store_close(f->s);
        f->s = NULL;
        rm_rf(f->path);
    }
}

/* The next-stream counter at or below a stream number in use: a writable
 * open refuses the store, store_check reports it. */
static void test_next_stream_counter_damaged(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acct-1", 1);
    add(f, "acct-2", 1);
    assert_check_clean(f->s);
    store_close(f->s);
    f->s = NULL;
    uint64_t highest = raw_stream_number(f->path, "acct-2");
    static const uint64_t bad[] = {1, 2};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        uint8_t le[8];
        uint64_t v = bad[i] == 2 ? highest : bad[i];
        for (int j = 0; j < 8; j++) {
            le[j] = (uint8_t)(v >> (8 * j));
        }
        raw_put(f->path, "meta", "next_stream", 11, le, 8);
        store *s = NULL;
        char msg[512] = "";
        assert_rv(ES_ERR_CORRUPT,
                  try_open(f->path, TEST_MAP_SIZE, false, false, &s, msg, sizeof msg));
        assert_null(s);
        assert_non_null(strstr(msg, "next-stream counter"));

        s = open_at(f->path, TEST_MAP_SIZE, false, true); /* read-only: opens */
        store_check_report rep;
        assert_rv(ES_ERR_CORRUPT, store_check(s, &rep, check_log_print, NULL));
        assert_int_equal(rep.index_errors, 1);
        coll c = {0};
        read_stream_all(s, "acct-1", 0, &c); /* reads still serve what is sound */
        assert_int_equal(c.n, 1);
        coll_free(&c);
        store_close(s);
    }
    /* A sound counter again: the store opens and appends to new streams. */
    uint8_t le[8] = {(uint8_t)(highest + 1)};
    raw_put(f->path, "meta", "next_stream", 11, le, 8);
    fx_open(f);
    add(f, "acct-3", 1);
    assert_check_clean(f->s);
}

/* ------------------------------------------------- other record layouts -- */

static size_t put_tag_len(uint8_t *p, uint8_t tag, const void *data, size_t len)
{
    p[0] = tag;
    p[1] = (uint8_t)len; /* < 128 here */
    memcpy(p + 2, data, len);
    return 2 + len;
}

/* A record with its fields in another order than the store writes them
 * (type, id, position, revision, stream, time): as another writer may have
 * laid out an imported record. Index reads check it all the same. */
static size_t reversed_record(uint8_t *p, const char *stream, uint64_t rev, uint64_t pos,
                              uint8_t idbyte)
{
    uint8_t id[16];
    memset(id, idbyte, sizeof id);
    size_t n = put_tag_len(p, 0x2a, "T", 1);
    n += put_tag_len(p + n, 0x22, id, 16);
    p[n++] = 0x18;
    p[n++] = (uint8_t)pos; /* < 128 */
    if (rev) {
        p[n++] = 0x10;
        p[n++] = (uint8_t)rev;
    }
    n += put_tag_len(p + n, 0x0a, stream, strlen(stream));
    p[n++] = 0x58; /* recorded_at_us = 1 */
    p[n++] = 1;
    return n;
}

static void test_other_field_order_checked(void **state)
{
    fx *f = *state;
    store_options o = {.path = f->path, .map_size = TEST_MAP_SIZE, .follower = true};
    f->s = open_opts(&o);
    uint8_t r1[128], r2[128];
    store_import_in in[2] = {{r1, reversed_record(r1, "imp-1", 0, 1, 0x11)},
                             {r2, reversed_record(r2, "imp-1", 1, 2, 0x22)}};
    size_t bad;
    char msg[256];
    assert_rv(ES_OK, store_import_batch(f->s, in, 2, &bad, msg, sizeof msg));
    coll c = {0};
    read_stream_all(f->s, "imp-1", 0, &c);
    assert_int_equal(c.n, 2);
    assert_stream_events(&c, "imp-1", 0);
    coll_free(&c);
    store_filter cat = {STORE_FILTER_CATEGORY, U8("imp"), 3};
    read_all_fwd(f->s, &cat, 0, &c);
    assert_int_equal(c.n, 2);
    coll_free(&c);
    store_filter type = {STORE_FILTER_EVENT_TYPE, U8("T"), 1};
    read_all_fwd(f->s, &type, 0, &c);
    assert_int_equal(c.n, 2);
    coll_free(&c);
    assert_int_equal(store_index_mismatches(f->s), 0);

    /* And a damaged index entry to such a record is refused. */
    store_close(f->s);
    f->s = NULL;
    uint8_t key[64];
    raw_put(f->path, "types", key, name_pos_key(key, "U", 2), NULL, 0);
    damage_log d = {0};
    store_options o2 = {.path = f->path,
                        .map_size = TEST_MAP_SIZE,
                        .follower = true,
                        .damage_log = damage_log_line,
                        .damage_log_ctx = &d};
    f->s = open_opts(&o2);
    store_filter u = {STORE_FILTER_EVENT_TYPE, U8("U"), 1};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT, store_read_all(f->s, &u, 0, false, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    assert_true(log_names(&d, "types", 2));
}

/* ------------------------------------------------------------ meta pages -- */

/* Flip one or two bits of data.mdb's byte at @off, or restore them. */
static void flip_file_bits(const char *dir, long off, int bit, int bit2)
{
    int mask = (1 << bit) | (bit2 >= 0 ? 1 << bit2 : 0);
    char path[512];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, off, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_true(c != EOF);
    assert_int_equal(fseek(fp, off, SEEK_SET), 0);
    assert_int_equal(fputc(c ^ mask, fp), c ^ mask);
    assert_int_equal(fclose(fp), 0);
}

/* A damaged page-size field, magic or flag in either meta page: every open,
 * read-only (esctl db check, db stat) or writable, refuses with a message
 * naming the page, before LMDB maps the file with that page size (which
 * faulted with SIGBUS). Transaction ids that are not consecutive likewise
 * (LMDB would open an older state). Restored, the store opens with every
 * event. */
static void test_meta_page_damage_refused(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acct-1", 3);
    store_close(f->s);
    f->s = NULL;
    static const struct {
        long off;
        int bit;
        int bit2; /* a second bit in the same byte, or -1 */
        es_err want;
        const char *says;
    } cases[] = {
        {4096 + 43, 0, -1, ES_ERR_CORRUPT, "meta page 1 has an impossible page size"},
        {4096 + 41, 4, -1, ES_ERR_CORRUPT, "meta page 1 has an impossible page size"},
        {40 + 1, 4, -1, ES_ERR_CORRUPT, "meta page 0 has an impossible page size"},
        {4096 + 41, 4, 5, ES_ERR_CORRUPT, "disagree on the page size (4096 and 8192)"},
        {16, 3, -1, ES_ERR_INCOMPATIBLE_STORE, "meta page 0 is not an LMDB meta page"},
        {4096 + 10, 3, -1, ES_ERR_CORRUPT, "meta page 1 is not an LMDB meta page"},
        {20, 1, -1, ES_ERR_INCOMPATIBLE_STORE, "meta page 0 has LMDB data version 3"},
        {144 + 1, 2, -1, ES_ERR_CORRUPT, "transaction ids"},        /* the older page looks newer */
        {4096 + 144, 0, -1, ES_ERR_CORRUPT, "are not consecutive"}, /* page 1 even */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        flip_file_bits(f->path, cases[i].off, cases[i].bit, cases[i].bit2);
        for (int ro = 0; ro <= 1; ro++) {
            store *s = NULL;
            char msg[512] = "";
            assert_rv(cases[i].want,
                      try_open(f->path, TEST_MAP_SIZE, false, ro, &s, msg, sizeof msg));
            assert_null(s);
            if (!strstr(msg, cases[i].says)) {
                fail_msg("case %zu: \"%s\" does not say \"%s\"", i, msg, cases[i].says);
            }
        }
        flip_file_bits(f->path, cases[i].off, cases[i].bit, cases[i].bit2);
    }
    fx_open(f);
    coll c = {0};
    read_stream_all(f->s, "acct-1", 0, &c);
    assert_int_equal(c.n, 3);
    coll_free(&c);
    assert_check_clean(f->s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stream_record_of_another_stream),
        T(test_stream_index_points_elsewhere),
        T(test_category_and_type_index_point_elsewhere),
        T(test_event_id_index_points_elsewhere),
        T(test_insert_collision_aborts_batch),
        T(test_next_stream_counter_damaged),
        T(test_other_field_order_checked),
        T(test_meta_page_damage_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

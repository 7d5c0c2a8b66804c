/*
 * test_store_lifecycle — a stream's lifecycle in the store: soft delete,
 * tombstone, retention metadata (truncate_before, max_count, max_age) and
 * what reads, listings, appends and snapshots see after each; the format-2
 * upgrade that adds the lifecycle database.
 *
 * Design notes: "never served" is checked through every read path (stream
 * reads both ways, read-all unfiltered and by category, listings, stream
 * info). Old events for max_age are made with store_import_batch, which
 * keeps a record's recorded_at: no test waits for a clock.
 */
#include "store_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers -- */

static es_err life(fx *f, store_life_kind kind, const char *stream, store_expect ex, uint64_t rev,
                   store_life_op *op)
{
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->stream = U8(stream);
    op->stream_len = strlen(stream);
    op->expect = ex;
    op->revision = rev;
    return store_life_apply(f->s, op);
}

static es_err set_meta(fx *f, const char *stream, store_expect ex, uint64_t rev, uint64_t tb,
                       uint64_t max_count, uint64_t max_age_s, store_life_op *op)
{
    memset(op, 0, sizeof *op);
    op->kind = STORE_LIFE_SET_META;
    op->stream = U8(stream);
    op->stream_len = strlen(stream);
    op->expect = ex;
    op->revision = rev;
    op->truncate_before = tb;
    op->max_count = max_count;
    op->max_age_s = max_age_s;
    return store_life_apply(f->s, op);
}

/* The revisions of a stream read forward (page size 2: several pages). */
static size_t revs_fwd(store *s, const char *stream, uint64_t *out, size_t cap)
{
    coll c = {0};
    read_stream_all(s, stream, 2, &c);
    assert_true(c.n <= cap);
    for (size_t i = 0; i < c.n; i++) {
        out[i] = c.ev[i]->revision;
    }
    size_t n = c.n;
    coll_free(&c);
    return n;
}

/* The revisions of a stream read backward from the end, one page. */
static size_t revs_back(store *s, const char *stream, uint64_t *out, size_t cap)
{
    coll c = {0};
    store_page pg;
    assert_rv(ES_OK, store_read_stream(s, U8(stream), strlen(stream), UINT64_MAX, true, 0,
                                       coll_visit, &c, &pg));
    assert_true(pg.end);
    assert_true(c.n <= cap);
    for (size_t i = 0; i < c.n; i++) {
        out[i] = c.ev[i]->revision;
    }
    size_t n = c.n;
    coll_free(&c);
    return n;
}

/* How many events of `stream` read-all hands out (no filter, and by category). */
static size_t in_read_all(store *s, const char *stream)
{
    size_t n = 0;
    const store_filter *filters[2];
    store_filter cat = {STORE_FILTER_CATEGORY, U8("acc"), 3};
    filters[0] = NULL;
    filters[1] = &cat;
    for (size_t k = 0; k < 2; k++) {
        coll c = {0};
        read_all_fwd(s, filters[k], 3, &c);
        for (size_t i = 0; i < c.n; i++) {
            n += bin_is_str(c.ev[i]->stream, stream);
        }
        coll_free(&c);
    }
    return n;
}

static bool listed(store *s, const char *stream)
{
    list_coll lc;
    memset(&lc, 0, sizeof lc);
    bool more;
    assert_rv(ES_OK, store_list_streams(s, NULL, 0, NULL, 0, 64, list_visit, &lc, &more));
    for (size_t i = 0; i < lc.n; i++) {
        if (!strcmp(lc.names[i], stream)) {
            return true;
        }
    }
    return false;
}

static void expect_revs(const uint64_t *got, size_t n, uint64_t first, uint64_t last, bool back)
{
    assert_int_equal(n, last - first + 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(got[i], back ? last - i : first + i);
    }
}

/* ---------------------------------------------------------- soft delete -- */

static void delete_hides_the_stream_from_every_read(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    store_append_result other = add(f, "acc-2", 2);
    store_life_op op;
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.last_revision, 2);
    assert_int_equal(op.life.deleted_before, 3);

    store_page pg;
    assert_rv(ES_ERR_NOT_FOUND, store_read_stream(f->s, U8("acc-1"), 5, 0, false, 0, count_visit,
                                                  &(uint64_t){0}, &pg));
    assert_false(stream_exists(f->s, "acc-1"));
    assert_false(listed(f->s, "acc-1"));
    assert_true(listed(f->s, "acc-2"));
    assert_int_equal(in_read_all(f->s, "acc-1"), 0);
    assert_int_equal(in_read_all(f->s, "acc-2"), 4); /* 2 events, twice */
    /* The other stream's events keep their positions; the delete's own
     * record (in $lifecycle) is the only new position. */
    assert_int_equal(store_head(f->s), 6);
    assert_int_equal(other.first_position, 4);
    assert_check_clean(f->s);

    /* Still hidden after a reopen. */
    fx_reopen(f);
    assert_false(stream_exists(f->s, "acc-1"));
    assert_int_equal(in_read_all(f->s, "acc-1"), 0);
}

static void an_append_recreates_a_deleted_stream_after_its_revisions(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    store_life_op op;
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_EXACT, 2, &op));

    evset e;
    evset_make(&e, f, 2, "T");
    store_append_result res;
    state_snap before = snap_state(f->s);
    /* A deleted stream does not exist for STREAM_EXISTS... */
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "acc-1", STORE_EXPECT_STREAM_EXISTS, 0, &e, &res));
    assert_false(res.actual_exists);
    assert_int_equal(res.actual_revision, 2);
    /* ... EXACT must name its last revision, nothing else. */
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "acc-1", STORE_EXPECT_EXACT, 0, &e, &res));
    assert_same_state(f->s, before);
    /* NO_STREAM recreates it; revisions continue after the deleted ones. */
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e, &res));
    assert_int_equal(res.first_revision, 3);
    assert_int_equal(res.last_revision, 4);
    uint64_t revs[16];
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 3, 4, false);
    expect_revs(revs, revs_back(f->s, "acc-1", revs, 16), 3, 4, true);
    assert_int_equal(in_read_all(f->s, "acc-1"), 4);
    assert_true(listed(f->s, "acc-1"));
    store_stream_info si;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("acc-1"), 5, &si));
    assert_int_equal(si.event_count, 2);
    assert_int_equal(si.last_revision, 4);
    /* Now it exists again: NO_STREAM fails, STREAM_EXISTS holds. */
    evset e2;
    evset_make(&e2, f, 1, "T");
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e2, &res));
    assert_true(res.actual_exists);
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_STREAM_EXISTS, 0, &e2, &res));
    assert_int_equal(res.first_revision, 5);

    /* EXACT with the deleted last revision and ANY recreate too. */
    add(f, "acc-2", 2);
    add(f, "acc-3", 1);
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-2", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-3", STORE_EXPECT_ANY, 0, &op));
    evset e3, e4;
    evset_make(&e3, f, 1, "T");
    evset_make(&e4, f, 1, "T");
    assert_rv(ES_OK, append_ev(f->s, "acc-2", STORE_EXPECT_EXACT, 1, &e3, &res));
    assert_int_equal(res.first_revision, 2);
    assert_rv(ES_OK, append_ev(f->s, "acc-3", STORE_EXPECT_ANY, 0, &e4, &res));
    assert_int_equal(res.first_revision, 1);
    assert_check_clean(f->s);
    evset_free(&e);
    evset_free(&e2);
    evset_free(&e3);
    evset_free(&e4);
}

static void delete_checks_its_expectation_and_is_idempotent(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    store_life_op op;
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_EXACT, 1, &op));
    assert_true(op.actual_exists);
    assert_int_equal(op.actual_revision, 2);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_NO_STREAM, 0, &op));
    assert_true(stream_exists(f->s, "acc-1")); /* nothing changed */
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_STREAM_EXISTS, 0, &op));
    /* Deleting a deleted stream is not an error. */
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_NO_STREAM, 0, &op));
    assert_int_equal(op.life.deleted_before, 3);
    /* A stream that never existed; bad and reserved ids. */
    assert_rv(ES_ERR_NOT_FOUND, life(f, STORE_LIFE_DELETE, "nope", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_RESERVED_STREAM, life(f, STORE_LIFE_DELETE, "$all", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_STREAM_ID, life(f, STORE_LIFE_DELETE, "", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              life(f, STORE_LIFE_DELETE, "acc-1", (store_expect)9, 0, &op));
}

static void a_retried_append_of_a_deleted_event_is_still_a_duplicate(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 2, "T");
    store_append_result res;
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e, &res));
    store_life_op op;
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    state_snap before = snap_state(f->s);
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e, &res));
    assert_true(res.duplicate);
    assert_int_equal(res.first_revision, 0);
    assert_int_equal(res.first_position, 1);
    assert_same_state(f->s, before);
    assert_false(stream_exists(f->s, "acc-1"));
    evset_free(&e);
}

/* ------------------------------------------------------------ tombstone -- */

static void a_tombstoned_stream_is_never_written_or_read_again(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 2);
    add(f, "acc-2", 1);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("acc-1"), 5, 1, 1, U8("st"), 2));
    store_life_op op;
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              life(f, STORE_LIFE_TOMBSTONE, "acc-1", STORE_EXPECT_EXACT, 0, &op));
    assert_rv(ES_OK, life(f, STORE_LIFE_TOMBSTONE, "acc-1", STORE_EXPECT_EXACT, 1, &op));
    assert_true(op.life.tombstoned);

    state_snap before = snap_state(f->s);
    evset e;
    evset_make(&e, f, 1, "T");
    store_append_result res;
    assert_rv(ES_ERR_STREAM_DELETED, append_ev(f->s, "acc-1", STORE_EXPECT_ANY, 0, &e, &res));
    assert_rv(ES_ERR_STREAM_DELETED, append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e, &res));
    /* In a transaction: nothing of it is written. */
    evset e2;
    evset_make(&e2, f, 1, "T");
    store_append_in two[2] = {mk_append("acc-2", STORE_EXPECT_ANY, 0, &e2),
                              mk_append("acc-1", STORE_EXPECT_ANY, 0, &e)};
    store_append_result results[2];
    store_request req = {.appends = two, .n_appends = 2, .results = results};
    assert_rv(ES_OK, store_append_batch(f->s, &req, 1));
    assert_rv(ES_ERR_STREAM_DELETED, req.rv);
    assert_rv(ES_ERR_STREAM_DELETED, store_save_snapshot(f->s, U8("acc-1"), 5, 1, 1, U8("x"), 1));
    assert_same_state(f->s, before);

    /* Reads: STREAM_DELETED, not NOT_FOUND; a stream that never existed is NOT_FOUND. */
    store_page pg;
    uint64_t n = 0;
    assert_rv(ES_ERR_STREAM_DELETED,
              store_read_stream(f->s, U8("acc-1"), 5, 0, false, 0, count_visit, &n, &pg));
    assert_rv(ES_ERR_NOT_FOUND,
              store_read_stream(f->s, U8("acc-9"), 5, 0, false, 0, count_visit, &n, &pg));
    store_stream_info si;
    assert_rv(ES_ERR_STREAM_DELETED, store_stream_info_get(f->s, U8("acc-1"), 5, &si));
    store_snapshot snap;
    assert_rv(ES_ERR_STREAM_DELETED, store_load_snapshot(f->s, U8("acc-1"), 5, &snap));
    store_stream_life l;
    assert_rv(ES_ERR_STREAM_DELETED, store_stream_life_get(f->s, U8("acc-1"), 5, &l, NULL));
    assert_int_equal(in_read_all(f->s, "acc-1"), 0);
    assert_false(listed(f->s, "acc-1"));

    /* Tombstoning again is not an error; delete and metadata are refused. */
    assert_rv(ES_OK, life(f, STORE_LIFE_TOMBSTONE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_STREAM_DELETED, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_STREAM_DELETED, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 5, 0, &op));
    /* A soft-deleted stream can be tombstoned (NO_STREAM holds for it). */
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-2", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, life(f, STORE_LIFE_TOMBSTONE, "acc-2", STORE_EXPECT_NO_STREAM, 0, &op));
    assert_rv(ES_ERR_STREAM_DELETED, store_stream_info_get(f->s, U8("acc-2"), 5, &si));
    fx_reopen(f);
    assert_rv(ES_ERR_STREAM_DELETED, append_ev(f->s, "acc-1", STORE_EXPECT_ANY, 0, &e, &res));
    assert_check_clean(f->s);
    evset_free(&e);
    evset_free(&e2);
}

static void a_snapshot_of_deleted_events_goes_with_them(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("acc-1"), 5, 2, 1, U8("st"), 2));
    store_life_op op;
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    store_snapshot snap;
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("acc-1"), 5, &snap));
    add(f, "acc-1", 1);
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("acc-1"), 5, &snap));
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("acc-1"), 5, 3, 1, U8("new"), 3));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("acc-1"), 5, &snap));
    assert_int_equal(snap.revision, 3);
    free(snap.data);
}

/* ------------------------------------------------------------- metadata -- */

static void metadata_has_its_own_revision(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 5);
    store_stream_life l;
    uint64_t last;
    assert_rv(ES_OK, store_stream_life_get(f->s, U8("acc-1"), 5, &l, &last));
    assert_false(l.meta_set);
    assert_int_equal(last, 4);
    store_life_op op;
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              set_meta(f, "acc-1", STORE_EXPECT_EXACT, 0, 0, 3, 0, &op));
    assert_false(op.actual_exists);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              set_meta(f, "acc-1", STORE_EXPECT_STREAM_EXISTS, 0, 0, 3, 0, &op));
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_NO_STREAM, 0, 1, 3, 60, &op));
    assert_int_equal(op.life.meta_revision, 0);
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              set_meta(f, "acc-1", STORE_EXPECT_NO_STREAM, 0, 0, 3, 0, &op));
    assert_true(op.actual_exists);
    assert_int_equal(op.actual_revision, 0);
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_EXACT, 0, 2, 0, 0, &op));
    assert_int_equal(op.life.meta_revision, 1);
    assert_rv(ES_OK, store_stream_life_get(f->s, U8("acc-1"), 5, &l, NULL));
    assert_true(l.meta_set);
    assert_int_equal(l.meta_revision, 1);
    assert_int_equal(l.truncate_before, 2);
    assert_int_equal(l.max_count, 0);
    assert_int_equal(l.max_age_s, 0);
    /* A stream that never existed; a reserved one. */
    assert_rv(ES_ERR_NOT_FOUND, set_meta(f, "nope", STORE_EXPECT_ANY, 0, 0, 1, 0, &op));
    assert_rv(ES_ERR_NOT_FOUND, store_stream_life_get(f->s, U8("nope"), 4, &l, NULL));
    assert_rv(ES_ERR_RESERVED_STREAM, set_meta(f, "$x", STORE_EXPECT_ANY, 0, 0, 1, 0, &op));
}

static void metadata_out_of_range_changes_nothing(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 5);
    store_life_op op;
    /* truncate_before may be the last revision + 1 (everything), not beyond. */
    assert_rv(ES_ERR_INVALID_ARGUMENT, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 6, 0, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 0, STORE_MAX_AGE_S + 1, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 0, UINT64_MAX, &op));
    store_stream_life l;
    assert_rv(ES_OK, store_stream_life_get(f->s, U8("acc-1"), 5, &l, NULL));
    assert_false(l.meta_set);
    uint64_t revs[16];
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 0, 4, false);
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 0, STORE_MAX_AGE_S, &op));
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 5, 0, 0, &op));
    /* Everything truncated: the stream exists, with nothing to serve. */
    assert_int_equal(revs_fwd(f->s, "acc-1", revs, 16), 0);
    assert_int_equal(revs_back(f->s, "acc-1", revs, 16), 0);
    assert_true(stream_exists(f->s, "acc-1"));
    assert_int_equal(in_read_all(f->s, "acc-1"), 0);
}

static void truncate_before_hides_earlier_revisions_at_once(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 10);
    add(f, "acc-2", 2);
    store_life_op op;
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 4, 0, 0, &op));
    uint64_t revs[16];
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 4, 9, false);
    expect_revs(revs, revs_back(f->s, "acc-1", revs, 16), 4, 9, true);
    assert_int_equal(in_read_all(f->s, "acc-1"), 12);
    assert_int_equal(in_read_all(f->s, "acc-2"), 4);
    /* A read from inside the truncated range starts at the first served one. */
    coll c = {0};
    store_page pg;
    assert_rv(ES_OK, store_read_stream(f->s, U8("acc-1"), 5, 1, false, 2, coll_visit, &c, &pg));
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ev[0]->revision, 4);
    coll_free(&c);
    /* Backward from below it: nothing. */
    assert_rv(ES_OK, store_read_stream(f->s, U8("acc-1"), 5, 3, true, 0, coll_visit, &c, &pg));
    assert_int_equal(c.n, 0);
    assert_true(pg.end);
    coll_free(&c);
    store_stream_info si;
    assert_rv(ES_OK, store_stream_info_get(f->s, U8("acc-1"), 5, &si));
    assert_int_equal(si.event_count, 6);
    assert_int_equal(si.last_revision, 9);
    /* Lowering it again serves the events again: nothing was removed. */
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_EXACT, 0, 0, 0, 0, &op));
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 0, 9, false);
    assert_check_clean(f->s);
}

static void max_count_serves_the_last_events_only(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 10);
    store_life_op op;
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 3, 0, &op));
    uint64_t revs[16];
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 7, 9, false);
    expect_revs(revs, revs_back(f->s, "acc-1", revs, 16), 7, 9, true);
    assert_int_equal(in_read_all(f->s, "acc-1"), 6);
    add(f, "acc-1", 2);
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 9, 11, false);
    assert_int_equal(in_read_all(f->s, "acc-1"), 6);
    /* max_count above the count: everything. */
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 100, 0, &op));
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 0, 11, false);
    /* With truncate_before the stricter one wins. */
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 10, 5, 0, &op));
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 10, 11, false);
}

/* A packed RecordedEvent as a primary would have stored it. */
static size_t pack_old(uint8_t *buf, size_t cap, const char *stream, uint64_t rev, uint64_t pos,
                       uint64_t id, uint64_t recorded_at_us)
{
    uint8_t idb[16];
    set_id(idb, id);
    Es__V1__RecordedEvent r = ES__V1__RECORDED_EVENT__INIT;
    r.stream.data = (uint8_t *)stream;
    r.stream.len = strlen(stream);
    r.revision = rev;
    r.position = pos;
    r.id.data = idb;
    r.id.len = 16;
    r.type.data = (uint8_t *)"T";
    r.type.len = 1;
    r.recorded_at_us = recorded_at_us;
    size_t n = es__v1__recorded_event__get_packed_size(&r);
    assert_true(n <= cap);
    return es__v1__recorded_event__pack(&r, buf);
}

static void max_age_hides_old_events(void **state)
{
    fx *f = *state;
    fx_open(f);
    uint64_t now = store_now_us();
    uint64_t hour = 3600ull * 1000000u;
    /* Revisions 0..2 two hours old, 3..4 recorded now. */
    uint8_t bufs[5][128];
    store_import_in in[5];
    for (uint64_t i = 0; i < 5; i++) {
        in[i].record = bufs[i];
        in[i].len = pack_old(bufs[i], sizeof bufs[i], "acc-1", i, i + 1, 1000 + i,
                             i < 3 ? now - 2 * hour : now);
    }
    size_t bad;
    char msg[200];
    assert_rv(ES_OK, store_import_batch(f->s, in, 5, &bad, msg, sizeof msg));
    store_life_op op;
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 0, 3600, &op));
    uint64_t revs[16];
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 3, 4, false);
    expect_revs(revs, revs_back(f->s, "acc-1", revs, 16), 3, 4, true);
    assert_int_equal(in_read_all(f->s, "acc-1"), 4);
    /* A longer max_age serves them again. */
    assert_rv(ES_OK, set_meta(f, "acc-1", STORE_EXPECT_ANY, 0, 0, 0, 3 * 3600, &op));
    expect_revs(revs, revs_fwd(f->s, "acc-1", revs, 16), 0, 4, false);
}

/* -------------------------------------------------------------- formats -- */

static void a_format_2_store_is_upgraded_when_opened_for_writing(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 2);
    store_close(f->s);
    f->s = NULL;
    /* Make it a format-2 store: no stream_life, format 2. */
    MDB_env *env = raw_env(f->path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "stream_life", 0, &dbi), 0);
    assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    uint8_t fmt2[4] = {2, 0, 0, 0};
    raw_put(f->path, "meta", "format", 6, fmt2, 4);

    /* Read-only: read as it is, nothing deleted, not upgraded. */
    store *ro = open_at(f->path, TEST_MAP_SIZE, false, true);
    store_stats st;
    assert_rv(ES_OK, store_stats_get(ro, &st));
    assert_int_equal(st.format_version, 2);
    uint64_t revs[4];
    expect_revs(revs, revs_fwd(ro, "acc-1", revs, 4), 0, 1, false);
    store_stream_life l;
    assert_rv(ES_OK, store_stream_life_get(ro, U8("acc-1"), 5, &l, NULL));
    assert_false(l.meta_set);
    store_close(ro);

    /* For writing: upgraded in place, and the lifecycle works. */
    fx_open(f);
    assert_rv(ES_OK, store_stats_get(f->s, &st));
    assert_int_equal(st.format_version, STORE_FORMAT_VERSION);
    store_life_op op;
    assert_rv(ES_OK, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    assert_false(stream_exists(f->s, "acc-1"));
    fx_reopen(f);
    assert_false(stream_exists(f->s, "acc-1"));
    assert_check_clean(f->s);
}

static void lifecycle_changes_are_refused_read_only_and_on_followers(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 1);
    store_close(f->s);
    f->s = open_at(f->path, TEST_MAP_SIZE, false, true);
    store_life_op op;
    assert_rv(ES_ERR_READ_ONLY, life(f, STORE_LIFE_DELETE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    store_close(f->s);
    store_options o = {.path = f->path, .map_size = TEST_MAP_SIZE, .follower = true};
    f->s = open_opts(&o);
    assert_rv(ES_ERR_FOLLOWER, life(f, STORE_LIFE_TOMBSTONE, "acc-1", STORE_EXPECT_ANY, 0, &op));
    assert_true(stream_exists(f->s, "acc-1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(delete_hides_the_stream_from_every_read),
        T(an_append_recreates_a_deleted_stream_after_its_revisions),
        T(delete_checks_its_expectation_and_is_idempotent),
        T(a_retried_append_of_a_deleted_event_is_still_a_duplicate),
        T(a_tombstoned_stream_is_never_written_or_read_again),
        T(a_snapshot_of_deleted_events_goes_with_them),
        T(metadata_has_its_own_revision),
        T(metadata_out_of_range_changes_nothing),
        T(truncate_before_hides_earlier_revisions_at_once),
        T(max_count_serves_the_last_events_only),
        T(max_age_hides_old_events),
        T(a_format_2_store_is_upgraded_when_opened_for_writing),
        T(lifecycle_changes_are_refused_read_only_and_on_followers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

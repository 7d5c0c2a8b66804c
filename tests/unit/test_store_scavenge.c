/*
 * test_store_scavenge — lifecycle records in the log, a follower applying
 * them, and the scavenger: what it removes and keeps, idempotency after
 * it, slices that each leave a clean store, page counts, and the store's
 * clock under max-age.
 *
 * Design notes: "reads unchanged by a scavenge" is checked by comparing the
 * packed bytes read-all hands out before and after. A follower is a second
 * store opened as one and fed every record of the primary's log through
 * store_import_batch, as the NATS follower does. The clock is replaced with
 * store_clock_hook (a wall clock and a monotonic clock the test moves), so
 * nothing waits for time to pass.
 */
#include "store_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- helpers -- */

static es_err life(store *s, store_life_kind kind, const char *stream, uint64_t tb,
                   uint64_t max_count, uint64_t max_age_s)
{
    store_life_op op;
    memset(&op, 0, sizeof op);
    op.kind = kind;
    op.stream = U8(stream);
    op.stream_len = strlen(stream);
    op.expect = STORE_EXPECT_ANY;
    op.truncate_before = tb;
    op.max_count = max_count;
    op.max_age_s = max_age_s;
    return store_life_apply(s, &op);
}

/* Every record read-all hands out, packed, concatenated with its length. */
typedef struct dump {
    uint8_t *buf;
    size_t len, cap, n;
} dump;

static int dump_visit(void *ctx, const store_record *rec)
{
    dump *d = ctx;
    if (d->len + rec->len + 16 > d->cap) {
        d->cap = (d->cap + rec->len + 16) * 2;
        d->buf = realloc(d->buf, d->cap);
        assert_non_null(d->buf);
    }
    memcpy(d->buf + d->len, &rec->position, 8);
    memcpy(d->buf + d->len + 8, &rec->len, 8);
    memcpy(d->buf + d->len + 16, rec->bytes, rec->len);
    d->len += rec->len + 16;
    d->n++;
    return 0;
}

static void dump_log(store *s, dump *d, bool stored)
{
    static const store_filter all = {STORE_FILTER_STORED, NULL, 0};
    memset(d, 0, sizeof *d);
    uint64_t from = 1;
    for (;;) {
        store_page pg;
        assert_rv(ES_OK,
                  store_read_all(s, stored ? &all : NULL, from, false, 0, dump_visit, d, &pg));
        if (pg.end) {
            break;
        }
        from = pg.next;
    }
}

/* What reads serve. */
static void dump_all(store *s, dump *d)
{
    dump_log(s, d, false);
}

static void assert_same_dump(const dump *a, const dump *b)
{
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->buf, b->buf, a->len);
}

static uint64_t stored_events(store *s)
{
    store_stats st;
    assert_rv(ES_OK, store_stats_get(s, &st));
    return st.event_count;
}

/* Slices until the scavenger has nothing left; the store checks clean
 * after every one (each is what a kill -9 could leave). */
static uint64_t scavenge_all(store *s, uint32_t budget, unsigned *slices)
{
    uint64_t removed = 0;
    unsigned n = 0;
    store_scavenge_result r;
    do {
        assert_rv(ES_OK, store_scavenge_slice(s, budget, &r));
        removed += r.events_removed;
        n++;
        assert_check_clean(s);
        assert_true(n < 100000);
    } while (r.more);
    if (slices) {
        *slices = n;
    }
    return removed;
}

/* ---------------------------------------------------- lifecycle records -- */

static void a_lifecycle_change_is_a_record_in_the_log(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_int_equal(store_head(f->s), 4);
    /* Deleting again changes nothing and writes nothing. */
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_int_equal(store_head(f->s), 4);
    add(f, "acc-1", 1);
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-1", 0, 7, 0));

    coll c = {0};
    read_stream_all(f->s, STORE_LIFE_STREAM, 10, &c);
    assert_int_equal(c.n, 2);
    assert_true(bin_is_str(c.ev[0]->type, STORE_LIFE_TYPE_DELETED));
    assert_true(bin_is_str(c.ev[1]->type, STORE_LIFE_TYPE_METADATA));
    store_stream_life l;
    const uint8_t *sid;
    size_t sid_len;
    assert_rv(ES_OK,
              store_life_record_decode(c.ev[1]->data.data, c.ev[1]->data.len, &l, &sid, &sid_len));
    assert_int_equal(sid_len, 5);
    assert_memory_equal(sid, "acc-1", 5);
    assert_int_equal(l.deleted_before, 3);
    assert_int_equal(l.max_count, 7);
    assert_true(l.meta_set);
    assert_rv(ES_ERR_MALFORMED, store_life_record_decode(c.ev[1]->data.data, 48, &l, &sid,
                                                         &sid_len)); /* no stream id */
    coll_free(&c);
    assert_check_clean(f->s);
}

/* A follower fed the primary's log ends with the same lifecycle and reads. */
static store *follow_copy(fx *f, const char *dir)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", f->root, dir);
    store_options o = {.path = path, .map_size = TEST_MAP_SIZE, .follower = true};
    store *b = open_opts(&o);
    dump d;
    dump_log(f->s, &d, true); /* what the relay publishes */
    size_t off = 0;
    while (off < d.len) {
        store_import_in in[64];
        size_t n = 0;
        while (off < d.len && n < 64) {
            uint64_t len;
            memcpy(&len, d.buf + off + 8, 8);
            in[n].record = d.buf + off + 16;
            in[n].len = len;
            off += 16 + len;
            n++;
        }
        /* The keys first, as the relay publishes them before the records. */
        for (size_t i = 0; i < n; i++) {
            uint64_t slot;
            if (store_record_key_slot(in[i].record, in[i].len, &slot)) {
                store_key_in k = {.slot = slot};
                store_key_state st;
                assert_rv(ES_OK, store_key_export(f->s, slot, &st, k.key));
                k.erased = st != STORE_KEY_LIVE;
                assert_rv(ES_OK, store_keys_import(b, &k, 1));
            }
        }
        size_t bad;
        char msg[200];
        es_err rv = store_import_batch(b, in, n, &bad, msg, sizeof msg);
        if (rv != ES_OK) {
            fail_msg("import: %s: %s", es_errname(rv), msg);
        }
    }
    free(d.buf);
    return b;
}

static void a_follower_applies_lifecycle_records(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    add(f, "acc-2", 4);
    add(f, "acc-3", 2);
    add(f, "acc-4", 5);
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-2", 2, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_TOMBSTONE, "acc-3", 0, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-4", 0, 2, 0));
    add(f, "acc-1", 1); /* recreated */

    store *b = follow_copy(f, "follower");
    dump da, db;
    dump_all(f->s, &da);
    dump_all(b, &db);
    assert_same_dump(&da, &db);
    free(da.buf);
    free(db.buf);
    dump_log(f->s, &da, true);
    dump_log(b, &db, true);
    assert_same_dump(&da, &db); /* byte for byte, unserved events included */
    const char *names[] = {"acc-1", "acc-2", "acc-4"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        store_stream_life la, lb;
        assert_rv(ES_OK, store_stream_life_get(f->s, U8(names[i]), 5, &la, NULL));
        assert_rv(ES_OK, store_stream_life_get(b, U8(names[i]), 5, &lb, NULL));
        assert_memory_equal(&la, &lb, sizeof la);
    }
    store_stream_life l;
    assert_rv(ES_ERR_STREAM_DELETED, store_stream_life_get(b, U8("acc-3"), 5, &l, NULL));
    assert_check_clean(b);

    /* Both scavenge to the same store. */
    scavenge_all(f->s, 1000, NULL);
    scavenge_all(b, 1000, NULL);
    free(da.buf);
    free(db.buf);
    dump_log(f->s, &da, true);
    dump_log(b, &db, true);
    assert_same_dump(&da, &db);
    assert_int_equal(stored_events(f->s), stored_events(b));
    free(da.buf);
    free(db.buf);
    store_close(b);
}

static void db_check_finds_stream_life_unlike_its_records(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 3);
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-1", 1, 0, 0));
    assert_check_clean(f->s);
    store_close(f->s);
    f->s = NULL;
    /* stream_life changed behind the records' back: truncate_before 2. */
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t val[48] = {2};
    val[24] = 2;
    raw_put(f->path, "stream_life", key, 8, val, 48);
    fx_open(f);
    store_check_report rep;
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, NULL, NULL));
    assert_int_equal(rep.index_errors, 1);
}

/* ------------------------------------------------------------ scavenger -- */

static void the_scavenger_removes_what_reads_no_longer_serve(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 10); /* deleted */
    add(f, "acc-2", 10); /* truncated before 6 */
    add(f, "acc-3", 10); /* max_count 3 */
    add(f, "acc-4", 10); /* tombstoned */
    add(f, "acc-5", 10); /* untouched */
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("acc-1"), 5, 9, 1, U8("s"), 1));
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("acc-2"), 5, 9, 1, U8("s"), 1));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-2", 6, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-3", 0, 3, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_TOMBSTONE, "acc-4", 0, 0, 0));
    uint64_t before = stored_events(f->s);
    store_pages pg;
    assert_rv(ES_OK, store_pages_get(f->s, &pg));
    /* Kept: each stream's last event; acc-2 4, acc-3 3. */
    uint64_t gone = 9 + 6 + 7 + 9;
    assert_int_equal(pg.unreclaimed_events, gone);
    assert_true(pg.unreclaimed >= 1);
    dump d0, d1;
    dump_all(f->s, &d0);

    unsigned slices;
    assert_int_equal(scavenge_all(f->s, 1000, &slices), gone);
    assert_int_equal(stored_events(f->s), before - gone);
    dump_all(f->s, &d1);
    assert_same_dump(&d0, &d1);
    assert_rv(ES_OK, store_pages_get(f->s, &pg));
    assert_int_equal(pg.unreclaimed_events, 0);
    /* The snapshot of the deleted stream went; the truncated one's stays. */
    store_snapshot snap;
    assert_rv(ES_ERR_NOT_FOUND, store_load_snapshot(f->s, U8("acc-1"), 5, &snap));
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("acc-2"), 5, &snap));
    free(snap.data);
    /* A second pass finds nothing. */
    store_scavenge_result r;
    assert_rv(ES_OK, store_scavenge_slice(f->s, 1000, &r));
    assert_int_equal(r.events_removed, 0);
    assert_true(r.pass_done);

    /* The deleted stream is recreated after its revisions, as before. */
    store_append_result res = add(f, "acc-1", 2);
    assert_int_equal(res.first_revision, 10);
    uint64_t revs[4];
    coll c = {0};
    read_stream_all(f->s, "acc-1", 2, &c);
    assert_int_equal(c.n, 2);
    revs[0] = c.ev[0]->revision;
    assert_int_equal(revs[0], 10);
    coll_free(&c);
    /* Appends to a max_count stream keep working; the window moves on. */
    add(f, "acc-3", 2);
    scavenge_all(f->s, 1000, NULL);
    read_stream_all(f->s, "acc-3", 2, &c);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.ev[0]->revision, 9);
    coll_free(&c);
    /* A limit lowered after the scavenge serves what is still stored. */
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-2", 0, 0, 0));
    read_stream_all(f->s, "acc-2", 3, &c);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.ev[0]->revision, 6);
    coll_free(&c);
    fx_reopen(f);
    assert_check_clean(f->s);
    free(d0.buf);
    free(d1.buf);
}

static void a_retried_append_of_a_scavenged_event_is_still_a_duplicate(void **state)
{
    fx *f = *state;
    fx_open(f);
    evset e;
    evset_make(&e, f, 3, "T");
    store_append_result first, again;
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e, &first));
    add(f, "acc-1", 2);
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-1", 4, 0, 0));
    assert_int_equal(scavenge_all(f->s, 1000, NULL), 4);
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_NO_STREAM, 0, &e, &again));
    assert_true(again.duplicate);
    /* Known by its digest only: the original answer is gone. */
    assert_int_equal(again.first_revision, 0);
    assert_int_equal(again.last_revision, 0);
    assert_int_equal(again.first_position, 0);
    assert_int_equal(last_rev(f->s, "acc-1"), 4); /* nothing written */
    assert_true(first.first_position != 0);
    /* Removed and kept ids in one retry: the kept ones give the answer. */
    store_append_result tail;
    evset t;
    evset_make(&t, f, 2, "T");
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_ANY, 0, &t, &tail));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-1", 6, 0, 0));
    assert_int_equal(scavenge_all(f->s, 1000, NULL), 2); /* revisions 4 and 5 */
    assert_rv(ES_OK, append_ev(f->s, "acc-1", STORE_EXPECT_ANY, 0, &t, &again));
    assert_true(again.duplicate);
    assert_int_equal(again.first_revision, 5);
    assert_int_equal(again.last_revision, 6);
    assert_int_equal(again.last_position, tail.last_position);
    assert_int_equal(last_rev(f->s, "acc-1"), 6);
    /* A removed id followed by a new one is neither a retry nor new. */
    evset m;
    evset_make(&m, f, 1, "T");
    store_event_in mixed[2] = {e.in[0], m.in[0]};
    evset mix = {.n = 2, .in = mixed};
    assert_rv(ES_ERR_IDEMPOTENCY_CONFLICT,
              append_ev(f->s, "acc-1", STORE_EXPECT_ANY, 0, &mix, &again));
    evset_free(&m);
    evset_free(&t);
    evset_free(&e);
    assert_check_clean(f->s);
}

static void the_scavenger_works_in_bounded_slices(void **state)
{
    fx *f = *state;
    fx_open(f);
    for (int i = 0; i < 4; i++) {
        add(f, "acc-1", 100);
    }
    add(f, "acc-2", 50);
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-2", 0, 10, 0));
    store_scavenge_result r;
    assert_rv(ES_OK, store_scavenge_slice(f->s, 25, &r));
    assert_true(r.more);
    assert_true(r.events_removed > 0 && r.events_removed <= 25);
    unsigned slices;
    uint64_t removed = r.events_removed + scavenge_all(f->s, 25, &slices);
    assert_int_equal(removed, 399 + 40);
    assert_true(slices >= 16);
    /* A read-only store is never scavenged. */
    store *ro = open_at(f->path, TEST_MAP_SIZE, false, true);
    assert_rv(ES_ERR_READ_ONLY, store_scavenge_slice(ro, 10, &r));
    store_close(ro);
}

static void the_scavenger_stops_at_the_horizon(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acc-1", 10); /* positions 1..10 */
    add(f, "acc-2", 10); /* 11..20 */
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-2", 0, 0, 0));
    /* What the relay has had acknowledged: up to position 14. */
    store_scavenge_horizon_set(f->s, 14);
    assert_int_equal(scavenge_all(f->s, 1000, NULL), 9 + 4);
    dump d;
    dump_log(f->s, &d, true);
    assert_int_equal(d.n, 1 + 6 + 2); /* acc-1's last, acc-2's 15..20, the two records */
    free(d.buf);
    store_scavenge_horizon_set(f->s, UINT64_MAX);
    assert_int_equal(scavenge_all(f->s, 1000, NULL), 5);
}

/* --------------------------------------------------------------- clock -- */

static uint64_t fake_real, fake_mono;
static uint64_t fake_real_us(void)
{
    return fake_real;
}
static uint64_t fake_mono_us(void)
{
    return fake_mono;
}

static int clock_teardown(void **state)
{
    store_clock_hook(NULL, NULL);
    return fx_teardown(state);
}

#define SEC 1000000ull

static void
max_age_is_applied_by_the_scavenger_and_a_clock_going_back_never_removes_early(void **state)
{
    fx *f = *state;
    fake_real = 1000000 * SEC;
    fake_mono = 5 * SEC;
    store_clock_hook(fake_real_us, fake_mono_us);
    fx_open(f);
    add(f, "acc-1", 3); /* recorded at 1,000,000 s */
    assert_rv(ES_OK, life(f->s, STORE_LIFE_SET_META, "acc-1", 0, 0, 100));
    fake_real += 50 * SEC;
    fake_mono += 50 * SEC;
    assert_int_equal(scavenge_all(f->s, 1000, NULL), 0);

    /* The wall clock is stepped back an hour; 10 s pass; an event comes. */
    fake_real -= 3600 * SEC;
    fake_mono += 10 * SEC;
    add(f, "acc-1", 1); /* stamped 1,000,060 s, not an hour early */
    coll c = {0};
    read_stream_all(f->s, "acc-1", 10, &c);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.ev[3]->recorded_at_us, 1000060 * SEC);
    coll_free(&c);

    /* The wall clock is corrected; 60 s after the last event: the first
     * three (120 s old) go, the last one (60 s old) stays. */
    fake_mono += 60 * SEC;
    fake_real = 1000120 * SEC;
    assert_int_equal(scavenge_all(f->s, 1000, NULL), 3);
    read_stream_all(f->s, "acc-1", 10, &c);
    assert_int_equal(c.n, 1);
    coll_free(&c);

    /* After a restart with the wall clock behind, the persisted high-water
     * mark is the clock's floor. */
    store_close(f->s);
    f->s = NULL;
    store_clock_hook(fake_real_us, fake_mono_us);
    fake_real = 900000 * SEC;
    fx_open(f);
    assert_true(store_now_us() >= 1000120 * SEC);
}

/* --------------------------------------------------------------- pages -- */

static void freed_pages_are_counted_and_reused(void **state)
{
    fx *f = *state;
    fx_open(f);
    for (int i = 0; i < 20; i++) {
        add(f, "acc-1", 200);
    }
    add(f, "acc-2", 1);
    store_pages p0, p1, p2;
    assert_rv(ES_OK, store_pages_get(f->s, &p0));
    assert_rv(ES_OK, life(f->s, STORE_LIFE_DELETE, "acc-1", 0, 0, 0));
    assert_rv(ES_OK, store_pages_get(f->s, &p1));
    assert_int_equal(p1.unreclaimed_events, 3999);
    print_message("pages: total %llu free %llu unreclaimed %llu live %llu\n",
                  (unsigned long long)p1.total, (unsigned long long)p1.free,
                  (unsigned long long)p1.unreclaimed, (unsigned long long)p1.live);
    assert_true(p1.unreclaimed > p1.total / 4);
    scavenge_all(f->s, 5000, NULL);
    /* A later write transaction reuses what the scavenge freed. */
    add(f, "acc-2", 1);
    add(f, "acc-2", 1);
    assert_rv(ES_OK, store_pages_get(f->s, &p2));
    assert_int_equal(p2.unreclaimed_events, 0);
    print_message("after: total %llu free %llu unreclaimed %llu live %llu\n",
                  (unsigned long long)p2.total, (unsigned long long)p2.free,
                  (unsigned long long)p2.unreclaimed, (unsigned long long)p2.live);
    assert_true(p2.free > p1.total / 2);
    /* (the scavenge's own transaction cannot reuse what it frees) */
    assert_true(p2.total <= p1.total + p1.total / 8);
    for (int i = 0; i < 10; i++) {
        add(f, "acc-2", 200);
    }
    store_pages p3;
    assert_rv(ES_OK, store_pages_get(f->s, &p3));
    assert_true(p3.total <= p2.total + 4); /* written into freed pages */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(a_lifecycle_change_is_a_record_in_the_log),
        T(a_follower_applies_lifecycle_records),
        T(db_check_finds_stream_life_unlike_its_records),
        T(the_scavenger_removes_what_reads_no_longer_serve),
        T(a_retried_append_of_a_scavenged_event_is_still_a_duplicate),
        T(the_scavenger_works_in_bounded_slices),
        T(the_scavenger_stops_at_the_horizon),
        cmocka_unit_test_setup_teardown(
            max_age_is_applied_by_the_scavenger_and_a_clock_going_back_never_removes_early,
            fx_setup, clock_teardown),
        T(freed_pages_are_counted_and_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_store_read — the store's reads: every field of a stored record,
 * stream reads and their paging, reads of the log by category, type and
 * prefix, stream info and listings, snapshots, concurrent readers
 * (server/store/read.c), against the contract in store.h. Fixture and
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

/* ================================================================== main == */

/* ======================================================= event by id == */

typedef struct one_visit {
    int calls;
    uint64_t position;
    Es__V1__RecordedEvent *ev;
} one_visit;

static int one_visit_fn(void *ctx, const store_record *rec)
{
    one_visit *o = ctx;
    o->calls++;
    o->position = rec->position;
    if (o->ev) {
        es__v1__recorded_event__free_unpacked(o->ev, NULL);
    }
    o->ev = es__v1__recorded_event__unpack(NULL, rec->len, rec->bytes);
    return 0;
}

static void test_read_event_by_id(void **state)
{
    fx *f = *state;
    fx_open(f);
    add(f, "acct-1", 3);  /* positions 1..3 */
    add(f, "acct-2", 2);  /* 4..5 */
    add(f, "other-1", 2); /* 6..7 */
    for (uint64_t pos = 1; pos <= 7; pos++) {
        uint8_t id[16];
        assert_rv(ES_OK, store_event_id_at(f->s, pos, id));
        one_visit o = {0};
        assert_rv(ES_OK, store_read_event_by_id(f->s, id, one_visit_fn, &o));
        assert_int_equal(o.calls, 1);
        assert_int_equal(o.position, pos);
        assert_non_null(o.ev);
        assert_true(bin_is(o.ev->id, id, 16));
        es__v1__recorded_event__free_unpacked(o.ev, NULL);
    }
    /* an id no event has: not found, nothing visited */
    uint8_t none[16];
    set_id(none, 999999);
    one_visit o = {0};
    assert_rv(ES_ERR_NOT_FOUND, store_read_event_by_id(f->s, none, one_visit_fn, &o));
    assert_int_equal(o.calls, 0);

    /* a soft-deleted stream's events are hidden from reads: not found */
    uint8_t id4[16], id1[16];
    assert_rv(ES_OK, store_event_id_at(f->s, 4, id4));
    assert_rv(ES_OK, store_event_id_at(f->s, 1, id1));
    store_life_op op = {.kind = STORE_LIFE_DELETE,
                        .stream = U8("acct-2"),
                        .stream_len = 6,
                        .expect = STORE_EXPECT_ANY};
    assert_rv(ES_OK, store_life_apply(f->s, &op));
    assert_rv(ES_ERR_NOT_FOUND, store_read_event_by_id(f->s, id4, one_visit_fn, &o));
    assert_int_equal(o.calls, 0);
    /* truncation hides revisions below it */
    store_life_op tr = {.kind = STORE_LIFE_SET_META,
                        .stream = U8("acct-1"),
                        .stream_len = 6,
                        .expect = STORE_EXPECT_ANY,
                        .truncate_before = 1};
    assert_rv(ES_OK, store_life_apply(f->s, &tr));
    assert_rv(ES_ERR_NOT_FOUND, store_read_event_by_id(f->s, id1, one_visit_fn, &o));
    assert_int_equal(o.calls, 0);

    /* a damaged index entry (the id leads to another event's record) is
     * refused as damage, never served as the event asked for */
    uint8_t id6[16];
    assert_rv(ES_OK, store_event_id_at(f->s, 6, id6));
    store_close(f->s);
    f->s = NULL;
    uint8_t val[24] = {0};
    val[23] = 7; /* position 7, another event */
    val[15] = 0; /* revision 0 */
    raw_put(f->path, "event_ids", id6, 16, val, 24);
    fx_reopen(f);
    uint64_t before = store_index_mismatches(f->s);
    assert_rv(ES_ERR_CORRUPT, store_read_event_by_id(f->s, id6, one_visit_fn, &o));
    assert_int_equal(o.calls, 0);
    assert_int_equal(store_index_mismatches(f->s), before + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_recorded_event_fields),
        T(test_read_stream_paging),
        T(test_read_stream_limits),
        T(test_visitor_stops_before_a_record),
        T(test_read_all_unfiltered),
        T(test_read_all_filters),
        T(test_read_all_prefix_scan_limit),
        T(test_stream_info),
        T(test_list_streams),
        T(test_snapshots),
        T(test_snapshot_corrupt),
        T(test_concurrent_readers_see_gapless_log),
        T(test_read_event_by_id),
    };
    return cmocka_run_group_tests_name("store_read", tests, NULL, NULL);
}

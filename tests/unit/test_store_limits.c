/*
 * test_store_limits — the store's appends against its rules and limits:
 * stream ids, event shapes, the default and configured caps, a full map, a
 * full disk and a file that may not grow, each refused with nothing written
 * (server/store/write.c), against its contract in store.h. Fixture and
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
        /* A plain store: the file limit must meet LMDB's commit, not the
         * key store's growth (a batch of new keys is written before the
         * commit that needs them; that refusal is a STORE_FULL of the
         * request, tested in store_erase). */
        store_options o = {.path = f->path, .map_size = TEST_MAP_SIZE, .no_encrypt = true};
        f->s = open_opts(&o);
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

/* ================================================================== main == */

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_validation_stream_ids),   T(test_validation_events),
        T(test_validation_default_caps), T(test_store_full),
        T(test_store_full_fails_alone),  T(test_disk_refuses_to_grow),
    };
    return cmocka_run_group_tests_name("store_limits", tests, NULL, NULL);
}

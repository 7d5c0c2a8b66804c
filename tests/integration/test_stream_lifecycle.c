/*
 * test_stream_lifecycle — a stream's lifecycle through a real esd, with
 * libesclient and esctl: soft delete and recreation, retention metadata,
 * tombstones, and what reads, read-all and subscriptions see after each.
 *
 * Design notes: one esd for the suite (port 0), each test on its own
 * streams. Subscriptions are polled until their caught-up callback: the
 * history they deliver is compared with what must be served, never timed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "es/client.h"
#include "support.h"

static esd_proc g_esd;
static es_client *g_c;

static int setup(void **state)
{
    (void)state;
    if (esd_init(&g_esd, NULL) != 0 || esd_start(&g_esd, 10000) != 0) {
        return -1;
    }
    es_client_options o;
    es_client_options_init(&o);
    o.address = g_esd.address;
    o.client_name = "test-stream-lifecycle";
    return es_client_create(&o, &g_c) == ES_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    es_client_destroy(g_c);
    return esd_finish(&g_esd, 10000);
}

#define CHECK_RV(expected, expr)                                                                   \
    do {                                                                                           \
        es_err want_ = (expected), got_ = (expr);                                                  \
        if (got_ != want_) {                                                                       \
            fail_msg("%s: got %s, expected %s (%s)", #expr, es_errname(got_), es_errname(want_),   \
                     es_client_errmsg(g_c));                                                       \
        }                                                                                          \
    } while (0)

static void append_n(const char *stream, es_expected exp, size_t n, es_append_result *res)
{
    es_event ev[16];
    assert_true(n <= 16);
    memset(ev, 0, sizeof ev);
    for (size_t i = 0; i < n; i++) {
        ev[i].type = "Tested";
        ev[i].data = "{}";
        ev[i].data_len = 2;
    }
    CHECK_RV(ES_OK, es_stream_append(g_c, stream, exp, ev, n, res));
}

/* The revisions a stream read hands out, or the read's error. */
static es_err stream_revs(const char *stream, uint64_t *out, size_t cap, size_t *n)
{
    *n = 0;
    es_read_options ro = {.page_size = 2};
    es_read_iter *it;
    CHECK_RV(ES_OK, es_read_stream(g_c, stream, &ro, &it));
    es_err rv;
    const es_recorded_event *ev;
    while ((rv = es_read_next(it, &ev)) == ES_OK && ev != NULL) {
        assert_true(*n < cap);
        out[(*n)++] = ev->revision;
    }
    es_read_destroy(it);
    return rv;
}

/* How many events of `stream` the whole log hands out. */
static size_t in_log(const char *stream)
{
    es_read_iter *it;
    CHECK_RV(ES_OK, es_read_all(g_c, NULL, &it));
    const es_recorded_event *ev;
    size_t n = 0;
    while (es_read_next(it, &ev) == ES_OK && ev != NULL) {
        n += strcmp(ev->stream, stream) == 0;
    }
    es_read_destroy(it);
    return n;
}

typedef struct sub_seen {
    uint64_t revs[64];
    size_t n;
    bool caught_up;
} sub_seen;

static int on_batch(void *ctx, const es_recorded_event *events, size_t n)
{
    sub_seen *s = ctx;
    for (size_t i = 0; i < n && s->n < 64; i++) {
        s->revs[s->n++] = events[i].revision;
    }
    return 0;
}

static void on_caught_up(void *ctx, uint64_t position)
{
    (void)position;
    ((sub_seen *)ctx)->caught_up = true;
}

/* What a category subscription from the start delivers before catching up. */
static void sub_history(const char *category, sub_seen *seen)
{
    memset(seen, 0, sizeof *seen);
    es_sub_options so = {.target = ES_SUB_CATEGORY, .name = category};
    es_subscription *sub;
    CHECK_RV(ES_OK, es_subscribe(g_c, &so, on_batch, on_caught_up, seen, &sub));
    for (int i = 0; i < 100 && !seen->caught_up; i++) {
        CHECK_RV(ES_OK, es_sub_poll(sub, 1000));
    }
    assert_true(seen->caught_up);
    es_sub_destroy(sub);
}

static void delete_and_recreate(void **state)
{
    (void)state;
    es_append_result res;
    append_n("del-1", (es_expected){ES_EXPECT_NO_STREAM, 0}, 3, &res);
    append_n("keep-1", (es_expected){ES_EXPECT_ANY, 0}, 2, &res);
    uint64_t last = 0;
    CHECK_RV(ES_ERR_WRONG_EXPECTED_REVISION,
             es_stream_delete(g_c, "del-1", (es_expected){ES_EXPECT_EXACT, 1}, &last));
    CHECK_RV(ES_OK, es_stream_delete(g_c, "del-1", (es_expected){ES_EXPECT_EXACT, 2}, &last));
    assert_int_equal(last, 2);
    CHECK_RV(ES_OK, es_stream_delete(g_c, "del-1", (es_expected){ES_EXPECT_ANY, 0}, NULL));

    uint64_t revs[16];
    size_t n;
    CHECK_RV(ES_ERR_NOT_FOUND, stream_revs("del-1", revs, 16, &n));
    assert_int_equal(in_log("del-1"), 0);
    assert_int_equal(in_log("keep-1"), 2);
    sub_seen seen;
    sub_history("del", &seen);
    assert_int_equal(seen.n, 0);
    es_stream_info si;
    CHECK_RV(ES_ERR_NOT_FOUND, es_stream_info_get(g_c, "del-1", &si));

    /* A recreating append continues the revisions. */
    append_n("del-1", (es_expected){ES_EXPECT_NO_STREAM, 0}, 2, &res);
    assert_int_equal(res.first_revision, 3);
    CHECK_RV(ES_OK, stream_revs("del-1", revs, 16, &n));
    assert_int_equal(n, 2);
    assert_int_equal(revs[0], 3);
    assert_int_equal(revs[1], 4);
    sub_history("del", &seen);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.revs[0], 3);
    assert_int_equal(in_log("del-1"), 2);
}

static void retention_through_esctl(void **state)
{
    (void)state;
    es_append_result res;
    append_n("ret-1", (es_expected){ES_EXPECT_ANY, 0}, 10, &res);
    char out[400];
    snprintf(out, sizeof out, "%s/esctl.out", g_esd.dir);
    const char *set[] = {"-s",    g_esd.address, "--json", "stream", "meta",
                         "ret-1", "--max-count", "4",      NULL};
    assert_int_equal(h_esctl(set, out, 20000), 0);
    es_stream_meta m;
    CHECK_RV(ES_OK, es_stream_meta_get(g_c, "ret-1", &m));
    assert_true(m.exists);
    assert_int_equal(m.metadata_revision, 0);
    assert_int_equal(m.max_count, 4);
    uint64_t revs[16];
    size_t n;
    CHECK_RV(ES_OK, stream_revs("ret-1", revs, 16, &n));
    assert_int_equal(n, 4);
    assert_int_equal(revs[0], 6);
    sub_seen seen;
    sub_history("ret", &seen);
    assert_int_equal(seen.n, 4);
    assert_int_equal(seen.revs[0], 6);

    /* The fields not given are kept; the metadata revision moves on. */
    const char *trunc[] = {"-s",    g_esd.address,       "stream", "meta",
                           "ret-1", "--truncate-before", "8",      NULL};
    assert_int_equal(h_esctl(trunc, out, 20000), 0);
    CHECK_RV(ES_OK, es_stream_meta_get(g_c, "ret-1", &m));
    assert_int_equal(m.metadata_revision, 1);
    assert_int_equal(m.max_count, 4);
    assert_int_equal(m.truncate_before, 8);
    CHECK_RV(ES_OK, stream_revs("ret-1", revs, 16, &n));
    assert_int_equal(n, 2);
    assert_int_equal(revs[0], 8);
    assert_int_equal(in_log("ret-1"), 2);

    /* Bad input: usage errors, nothing changed. */
    const char *bad_age[] = {"-s",    g_esd.address, "stream", "meta",
                             "ret-1", "--max-age",   "-5",     NULL};
    int st = h_esctl(bad_age, out, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    const char *beyond[] = {"-s",    g_esd.address,       "stream", "meta",
                            "ret-1", "--truncate-before", "11",     NULL};
    st = h_esctl(beyond, out, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    const char *reserved[] = {"-s",   g_esd.address, "stream", "meta",
                              "$ret", "--max-count", "1",      NULL};
    st = h_esctl(reserved, out, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK_RV(ES_OK, es_stream_meta_get(g_c, "ret-1", &m));
    assert_int_equal(m.metadata_revision, 1);
    CHECK_RV(ES_ERR_INVALID_ARGUMENT,
             es_stream_meta_set(g_c, "ret-1", (es_expected){ES_EXPECT_ANY, 0}, 0, 0,
                                ES_MAX_AGE_S + 1, NULL));
}

static void tombstone_through_esctl(void **state)
{
    (void)state;
    es_append_result res;
    append_n("tomb-1", (es_expected){ES_EXPECT_ANY, 0}, 2, &res);
    char out[400];
    snprintf(out, sizeof out, "%s/esctl.out", g_esd.dir);
    /* No expectation and no --force: refused before anything is sent. */
    const char *bare[] = {"-s", g_esd.address, "stream", "tombstone", "tomb-1", NULL};
    int st = h_esctl(bare, out, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    const char *wrong[] = {"-s",     g_esd.address, "stream", "tombstone",
                           "tomb-1", "--expected",  "0",      NULL};
    st = h_esctl(wrong, out, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    es_stream_meta m;
    CHECK_RV(ES_OK, es_stream_meta_get(g_c, "tomb-1", &m)); /* still there */
    const char *right[] = {"-s",     g_esd.address, "--json", "stream", "tombstone",
                           "tomb-1", "--expected",  "1",      NULL};
    assert_int_equal(h_esctl(right, out, 20000), 0);

    es_event ev = {.type = "Tested", .data = "{}", .data_len = 2};
    CHECK_RV(ES_ERR_STREAM_DELETED,
             es_stream_append(g_c, "tomb-1", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, &res));
    CHECK_RV(ES_ERR_STREAM_DELETED, es_snapshot_save(g_c, "tomb-1", 1, 1, "s", 1));
    uint64_t revs[4];
    size_t n;
    CHECK_RV(ES_ERR_STREAM_DELETED, stream_revs("tomb-1", revs, 4, &n));
    CHECK_RV(ES_ERR_NOT_FOUND, stream_revs("tomb-never", revs, 4, &n));
    const char *read[] = {"-s", g_esd.address, "read", "tomb-1", NULL};
    st = h_esctl(read, out, 20000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    size_t len;
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char buf[512];
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    assert_non_null(strstr(buf, "STREAM_DELETED"));
    assert_int_equal(in_log("tomb-1"), 0);
}

/* Refused by the library before anything is sent. */
static void client_side_checks(void **state)
{
    (void)state;
    es_stream_meta m;
    CHECK_RV(ES_ERR_RESERVED_STREAM,
             es_stream_delete(g_c, "$sys", (es_expected){ES_EXPECT_ANY, 0}, NULL));
    CHECK_RV(ES_ERR_INVALID_STREAM_ID,
             es_stream_tombstone(g_c, "", (es_expected){ES_EXPECT_ANY, 0}, NULL));
    CHECK_RV(ES_ERR_INVALID_STREAM_ID,
             es_stream_delete(g_c, NULL, (es_expected){ES_EXPECT_ANY, 0}, NULL));
    CHECK_RV(ES_ERR_INVALID_ARGUMENT,
             es_stream_delete(g_c, "cl-1", (es_expected){(es_expected_kind)9, 0}, NULL));
    CHECK_RV(ES_ERR_INVALID_ARGUMENT,
             es_stream_meta_set(g_c, "cl-1", (es_expected){(es_expected_kind)9, 0}, 0, 0, 0, &m));
    CHECK_RV(ES_ERR_RESERVED_STREAM, es_stream_meta_get(g_c, "$sys", &m));
    CHECK_RV(ES_ERR_INVALID_ARGUMENT, es_stream_meta_get(g_c, "cl-1", NULL));
    CHECK_RV(ES_ERR_NOT_FOUND, es_stream_meta_get(g_c, "cl-never", &m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delete_and_recreate),
        cmocka_unit_test(retention_through_esctl),
        cmocka_unit_test(tombstone_through_esctl),
        cmocka_unit_test(client_side_checks),
    };
    return cmocka_run_group_tests_name("integration: stream lifecycle", tests, setup, teardown);
}

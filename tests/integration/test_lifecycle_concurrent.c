/*
 * test_lifecycle_concurrent — deletes and truncations while appends, reads,
 * subscriptions and the scavenger run, through a real esd.
 *
 * Design notes
 * ------------
 * One esd (--scavenge-interval 10, so the scavenger works throughout).
 * An appender thread makes single-event appends to 8 streams at random
 * until it has made N_APPENDS; a lifecycle thread, every 150 of them,
 * deletes a stream or truncates one before a revision inside it. Before
 * each request it raises the stream's *ceiling* (the cut asked for; for a
 * delete unknown, so unbounded until the answer), after the
 * acknowledgement its *floor* (the lowest revision reads may still serve:
 * the delete's deleted_before, or truncate_before). Both only rise.
 *
 * Readers check, for every read of a stream (floor F0 taken before the
 * read, ceiling C1 after): no revision below F0 is ever served (a removed
 * event is never seen), and the revisions served are contiguous from a
 * first one no higher than C1 up to the last (no retained event
 * disappears, scavenged or not). A catch-up
 * subscription to $all opened mid-run, with the floors taken before it,
 * never delivers an event of a stream below that floor, and its positions
 * only rise. At the end: esctl db check is clean, and esd exits 0 on
 * SIGTERM without a sanitizer report.
 */
#include <inttypes.h>
#include <signal.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "es/client.h"
#include "support.h"

#define N_STREAMS  8u
#define N_APPENDS  3000u
#define LIFE_EVERY 150u

static esd_proc g_esd;
static _Atomic uint64_t floor_of[N_STREAMS]; /* acknowledged: reads serve nothing below */
static _Atomic uint64_t ceil_of[N_STREAMS];  /* asked for: may be in force before its ack */
static _Atomic uint64_t appended;
static _Atomic bool done;
static _Atomic uint64_t reads_checked, sub_checked, ops_done;

static es_client *client(const char *name)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = g_esd.address;
    o.client_name = name;
    es_client *c;
    assert_int_equal(es_client_create(&o, &c), ES_OK);
    return c;
}

static void name_of(uint32_t s, char *out, size_t cap)
{
    snprintf(out, cap, "cc-%u", s);
}

static void *appender(void *arg)
{
    (void)arg;
    es_client *c = client("cc-appender");
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint32_t i = 0; i < N_APPENDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        char name[16];
        name_of((uint32_t)(x % N_STREAMS), name, sizeof name);
        es_event e = {.type = "T", .data = name, .data_len = strlen(name)};
        es_err rv = es_stream_append(c, name, (es_expected){ES_EXPECT_ANY, 0}, &e, 1, NULL);
        if (rv != ES_OK) {
            fprintf(stderr, "append: %s\n", es_strerror(rv));
            abort();
        }
        atomic_fetch_add(&appended, 1);
    }
    es_client_destroy(c);
    atomic_store(&done, true);
    return NULL;
}

static void *lifecycler(void *arg)
{
    (void)arg;
    es_client *c = client("cc-lifecycle");
    uint64_t next = LIFE_EVERY;
    uint32_t k = 0;
    while (!atomic_load(&done)) {
        if (atomic_load(&appended) < next) {
            es_stream_info pace;
            (void)es_stream_info_get(c, "cc-0", &pace); /* a round trip: paced by the appender */
            continue;
        }
        next += LIFE_EVERY;
        uint32_t s = (k * 5u + 3u) % N_STREAMS;
        char name[16];
        name_of(s, name, sizeof name);
        es_stream_info info;
        es_err rv = es_stream_info_get(c, name, &info);
        if (rv != ES_OK) {
            continue; /* deleted and not appended to since */
        }
        if (k++ % 3 == 0) {
            uint64_t last;
            atomic_store(&ceil_of[s], UINT64_MAX); /* the stream's last revision at the delete */
            rv = es_stream_delete(c, name, (es_expected){ES_EXPECT_ANY, 0}, &last);
            if (rv == ES_OK) {
                atomic_store(&floor_of[s], last + 1);
                atomic_store(&ceil_of[s], last + 1);
            }
        } else {
            uint64_t tb = (atomic_load(&floor_of[s]) + info.last_revision + 1) / 2;
            es_stream_meta m;
            if (tb > atomic_load(&floor_of[s])) {
                atomic_store(&ceil_of[s], tb);
            }
            rv = es_stream_meta_set(c, name, (es_expected){ES_EXPECT_ANY, 0}, tb, 0, 0, &m);
            if (rv == ES_OK && tb > atomic_load(&floor_of[s])) {
                atomic_store(&floor_of[s], tb);
            }
        }
        if (rv != ES_OK) {
            fprintf(stderr, "lifecycle of %s: %s\n", name, es_strerror(rv));
            abort();
        }
        atomic_fetch_add(&ops_done, 1);
    }
    es_client_destroy(c);
    return NULL;
}

static void read_check(es_client *c, uint32_t s)
{
    char name[16];
    name_of(s, name, sizeof name);
    uint64_t f0 = atomic_load(&floor_of[s]);
    es_read_iter *it;
    assert_int_equal(es_read_stream(c, name, NULL, &it), ES_OK);
    const es_recorded_event *ev;
    es_err rv;
    uint64_t n = 0, first = 0, prev = 0;
    while ((rv = es_read_next(it, &ev)) == ES_OK && ev) {
        if (ev->revision < f0) {
            fail_msg("%s: revision %" PRIu64 " served below the floor %" PRIu64, name, ev->revision,
                     f0);
        }
        if (n == 0) {
            first = ev->revision;
        } else if (ev->revision != prev + 1) {
            fail_msg("%s: revisions %" PRIu64 " then %" PRIu64 ": a retained event is missing",
                     name, prev, ev->revision);
        }
        if (ev->data_len != strlen(name) || memcmp(ev->data, name, ev->data_len)) {
            fail_msg("%s: revision %" PRIu64 " holds another stream's event", name, ev->revision);
        }
        prev = ev->revision;
        n++;
    }
    es_read_destroy(it);
    uint64_t f1 = atomic_load(&ceil_of[s]);
    if (rv == ES_ERR_NOT_FOUND) {
        return; /* deleted, not appended to since (or never yet) */
    }
    assert_int_equal(rv, ES_OK);
    /* The read began at most at the floor as it was when the read ended. */
    if (n && first > f1) {
        fail_msg("%s: the first revision served is %" PRIu64 ", above the cut %" PRIu64
                 ": retained events disappeared",
                 name, first, f1);
    }
    atomic_fetch_add(&reads_checked, 1);
}

static void *reader(void *arg)
{
    (void)arg;
    es_client *c = client("cc-reader");
    uint32_t s = 0;
    while (!atomic_load(&done)) {
        read_check(c, s++ % N_STREAMS);
    }
    es_client_destroy(c);
    return NULL;
}

typedef struct sub_ctx {
    uint64_t floors[N_STREAMS];
    uint64_t last_pos, got;
    bool caught_up;
    char err[256];
} sub_ctx;

static void on_event(sub_ctx *x, const es_recorded_event *ev)
{
    if (ev->position <= x->last_pos) {
        snprintf(x->err, sizeof x->err, "position %" PRIu64 " after %" PRIu64, ev->position,
                 x->last_pos);
    }
    x->last_pos = ev->position;
    unsigned s;
    if (sscanf(ev->stream, "cc-%u", &s) == 1 && s < N_STREAMS && ev->revision < x->floors[s]) {
        snprintf(x->err, sizeof x->err,
                 "%s revision %" PRIu64 " delivered below the floor %" PRIu64, ev->stream,
                 ev->revision, x->floors[s]);
    }
    x->got++;
}

static int on_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        on_event(ctx, &evs[i]);
    }
    return 0;
}

static void on_caught_up(void *ctx, uint64_t position)
{
    (void)position;
    ((sub_ctx *)ctx)->caught_up = true;
}

static void concurrent_removals_never_show_a_removed_event_or_lose_a_kept_one(void **state)
{
    (void)state;
    pthread_t a, l, r;
    pthread_create(&a, NULL, appender, NULL);
    pthread_create(&l, NULL, lifecycler, NULL);
    pthread_create(&r, NULL, reader, NULL);
    es_client *c = client("cc-sub");
    /* Subscriptions opened mid-run, each until it caught up. */
    unsigned subs = 0;
    while (!atomic_load(&done) || subs == 0) {
        sub_ctx x;
        memset(&x, 0, sizeof x);
        for (uint32_t s = 0; s < N_STREAMS; s++) {
            x.floors[s] = atomic_load(&floor_of[s]);
        }
        es_sub_options so = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START};
        es_subscription *sub;
        assert_int_equal(es_subscribe(c, &so, on_batch, on_caught_up, &x, &sub), ES_OK);
        while (!x.caught_up) {
            es_err prv = es_sub_poll(sub, 200);
            if (prv != ES_OK) {
                fail_msg("subscription poll: %s (%s)", es_errname(prv), es_client_errmsg(c));
            }
            if (x.err[0]) {
                fail_msg("subscription: %s", x.err);
            }
        }
        es_sub_destroy(sub);
        atomic_fetch_add(&sub_checked, x.got);
        subs++;
    }
    pthread_join(a, NULL);
    pthread_join(l, NULL);
    pthread_join(r, NULL);
    for (uint32_t s = 0; s < N_STREAMS; s++) {
        read_check(c, s);
    }
    es_stats st;
    assert_int_equal(es_stats_get(c, &st), ES_OK);
    print_message("%" PRIu64 " lifecycle changes, %" PRIu64 " stream reads and %u catch-ups "
                  "(%" PRIu64 " events) checked; %" PRIu64 " of %" PRIu64 " events still stored\n",
                  atomic_load(&ops_done), atomic_load(&reads_checked), subs,
                  atomic_load(&sub_checked), st.event_count, st.head_position);
    assert_true(atomic_load(&ops_done) >= 5);
    es_client_destroy(c);
    /* A consistent snapshot beside esd (its scavenger may still work). */
    const char *args[] = {"db", "check", g_esd.data_dir, NULL};
    char out[400];
    snprintf(out, sizeof out, "%s/check.out", g_esd.dir);
    if (h_esctl(args, out, 60000) != 0) {
        h_dump_tail(out, 20);
        fail_msg("esctl db check found defects");
    }
    assert_int_equal(esd_finish(&g_esd, 10000), 0); /* exit 0, no sanitizer report */
}

static int setup(void **state)
{
    (void)state;
    static const char *const args[] = {"--scavenge-interval", "10", "--sync", "none", NULL};
    return esd_init(&g_esd, args) == 0 && esd_start(&g_esd, 10000) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_esd.pid && !esd_alive(&g_esd)) {
        esd_dump_log(&g_esd); /* it died under the test */
    }
    if (g_esd.pid || g_esd.dir[0]) {
        esd_destroy(&g_esd); /* a failed test: esd_finish did not run */
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_removals_never_show_a_removed_event_or_lose_a_kept_one),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

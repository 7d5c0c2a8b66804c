/*
 * test_resume — subscriptions resumed at random points
 * while 16 writers append, against the real esd.
 *
 * Sixteen writer threads append to 16 streams of two categories (rsa-*,
 * rsb-*) in batches of 1..4 events while five subscribers, each on its own
 * client and thread, follow the log:
 *
 *   all-start   the whole log from the first event       20 resumes
 *   all-middle  the whole log after the middle of the    20 resumes
 *               prefilled history
 *   all-end     the whole log from the end (taken while  20 resumes
 *               the writers run)
 *   category    category rsa from the first event        10 resumes
 *   stream      stream rsa-3 from its first revision     10 resumes
 *
 * A resume is triggered either after a random number of events or exactly
 * at the switch from history to live (inside on_caught_up of the previous
 * resubscription), and is made in one of two ways:
 *   - close: es_client_disconnect() — the library notices, reconnects and
 *     resubscribes after the last delivered event by itself;
 *   - checkpoint: the application takes es_sub_last() as its checkpoint,
 *     refuses what is still being delivered, destroys the subscription and
 *     opens a new one with ES_SUB_AFTER the checkpoint (a projector's
 *     restart).
 *
 * At the end the whole log is read with es_read_all and each subscriber's
 * deliveries must be exactly the events after its start point (for the
 * filtered ones: the events of its category or stream), each once, in
 * order; after a checkpoint resume nothing at or below the checkpoint may
 * come again.
 *
 * A second test puts two subscriptions (the whole log, one stream) on the
 * client that also appends, and closes its connection three times.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rel.h"
#include "support.h"

#define WRITERS       16
#define PREFILL       6000u
#define PER_WRITER    1500u
#define STREAMS       8 /* per category */
#define DEADLINE_US   (90u * 1000000u)
#define STREAM_FOLLOW "rsa-3"

static esd_proc esd;

/* esd without fsync and with warnings only in its log (plus a test's own arguments). */
static const char *const esd_args[] = {"--sync", "none", "--log-level", "warn", NULL};

/* A growable array of u64 (aborts when out of memory: test code). */
typedef struct u64s {
    uint64_t *v;
    size_t n, cap;
} u64s;

static void u64s_push(u64s *a, uint64_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        uint64_t *v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) {
            abort();
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

static void u64s_free(u64s *a)
{
    free(a->v);
    memset(a, 0, sizeof(*a));
}
static atomic_bool writers_done;
/* Set once the writers are done: the last key each kind of subscriber
 * must reach. */
static atomic_bool targets_known;
static uint64_t target_all, target_cat, target_stream;

/* --------------------------------------------------------------- writers -- */

typedef struct writer {
    pthread_t th;
    unsigned index;
    uint64_t written;
    char error[256];
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    es_client *c = h_client(esd.address, "resume-writer");
    if (c == NULL) {
        snprintf(w->error, sizeof(w->error), "cannot connect");
        return NULL;
    }
    rel_rng seed = {0x9e3779b97f4a7c15ull * (w->index + 1)};
    char data[64];
    es_event evs[4];
    while (w->written < PER_WRITER) {
        uint64_t r = rel_rand(&seed);
        size_t n = 1 + r % 4;
        if (n > PER_WRITER - w->written) {
            n = PER_WRITER - w->written;
        }
        char stream[32];
        snprintf(stream, sizeof(stream), "rs%c-%u", (r >> 8) & 1 ? 'a' : 'b',
                 (unsigned)((r >> 16) % STREAMS));
        snprintf(data, sizeof(data), "{\"w\":%u,\"n\":%llu}", w->index,
                 (unsigned long long)w->written);
        for (size_t i = 0; i < n; i++) {
            memset(&evs[i], 0, sizeof(evs[i]));
            evs[i].type = "Rs";
            evs[i].data = data;
            evs[i].data_len = strlen(data);
        }
        es_err rv;
        do {
            /* A retry after CLOSED/TIMEOUT reuses the ids: idempotent. */
            rv = es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, evs, n, NULL);
        } while (rv == ES_ERR_CLOSED || rv == ES_ERR_TIMEOUT);
        if (rv != ES_OK) {
            snprintf(w->error, sizeof(w->error), "append: %s", es_client_errmsg(c));
            break;
        }
        w->written += n;
    }
    es_client_destroy(c);
    return NULL;
}

/* ----------------------------------------------------------- subscribers -- */

typedef enum trigger { TRIG_COUNT, TRIG_SWITCH } trigger;
typedef enum resume_mode { MODE_CLOSE, MODE_CHECKPOINT } resume_mode;

typedef struct follower {
    pthread_t th;
    const char *label;
    es_sub_options opts; /* the first subscription */
    bool stream;         /* keys are revisions */
    int wanted;          /* resumes to make */
    uint64_t spread;     /* a count trigger fires within this many events */
    rel_rng seed;

    es_client *c;
    es_subscription *sub;
    u64s keys, positions;
    uint64_t start; /* the start point (es_sub_last after subscribing) */
    bool has_start;

    /* resumes */
    int resumes, at_switch, by_close, by_checkpoint, while_writing;
    trigger next_trigger;
    resume_mode next_mode;
    uint64_t next_at;  /* TRIG_COUNT: when keys.n reaches this */
    bool switch_armed; /* TRIG_SWITCH: at the next caught-up */
    bool recreate;     /* a checkpoint resume to finish after the poll */
    bool refusing;     /* refuse deliveries until recreated */
    uint64_t checkpoint;
    bool has_checkpoint;
    bool check_checkpoint;
    uint64_t last_checkpoint;

    uint64_t caught_ups;
    uint64_t violations; /* keys not increasing, or at/below a checkpoint */
    uint64_t first_violation;
    char error[256];
} follower;

static void plan_next(follower *f)
{
    if (f->resumes >= f->wanted) {
        return;
    }
    uint64_t r = rel_rand(&f->seed);
    /* Every third resume is at the switch (the one after a count trigger,
     * at the caught-up of its resubscription). */
    f->next_trigger = f->resumes % 3 == 1 ? TRIG_SWITCH : TRIG_COUNT;
    f->next_mode = (r >> 32) & 1 ? MODE_CLOSE : MODE_CHECKPOINT;
    f->next_at = f->keys.n + 1 + r % f->spread;
    f->switch_armed = f->next_trigger == TRIG_SWITCH;
}

static void do_resume(follower *f, bool at_switch)
{
    f->resumes++;
    f->at_switch += at_switch;
    f->while_writing += !atomic_load(&writers_done);
    if (f->next_mode == MODE_CLOSE) {
        es_client_disconnect(f->c);
        f->by_close++;
    } else {
        f->checkpoint = es_sub_last(f->sub, &f->has_checkpoint);
        f->recreate = true;
        f->refusing = true; /* what the poll still delivers comes again */
        f->by_checkpoint++;
    }
    plan_next(f);
}

static int on_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    follower *f = ctx;
    if (f->refusing) {
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t key = f->stream ? evs[i].revision : evs[i].position;
        bool bad = (f->keys.n > 0 && key <= f->keys.v[f->keys.n - 1]) ||
                   (f->check_checkpoint && key <= f->last_checkpoint);
        if (bad && f->violations++ == 0) {
            f->first_violation = key;
        }
        u64s_push(&f->keys, key);
        u64s_push(&f->positions, evs[i].position);
    }
    return 0;
}

static void on_caught_up(void *ctx, uint64_t position)
{
    follower *f = ctx;
    f->caught_ups++;
    if (f->switch_armed && !f->refusing) {
        f->switch_armed = false;
        do_resume(f, true);
    }
}

static es_err open_sub(follower *f, const es_sub_options *o)
{
    es_err rv;
    do {
        rv = es_subscribe(f->c, o, on_batch, on_caught_up, f, &f->sub);
    } while (rv == ES_ERR_CLOSED || rv == ES_ERR_TIMEOUT || rv == ES_ERR_CONNECTION);
    return rv;
}

static uint64_t target_of(const follower *f)
{
    if (f->opts.target == ES_SUB_ALL) {
        return target_all;
    }
    return f->opts.target == ES_SUB_CATEGORY ? target_cat : target_stream;
}

static void *follower_main(void *arg)
{
    follower *f = arg;
    f->c = h_client(esd.address, f->label);
    if (f->c == NULL) {
        snprintf(f->error, sizeof(f->error), "cannot connect");
        return NULL;
    }
    es_err rv = open_sub(f, &f->opts);
    if (rv != ES_OK) {
        snprintf(f->error, sizeof(f->error), "subscribe: %s", es_client_errmsg(f->c));
        es_client_destroy(f->c);
        return NULL;
    }
    f->start = es_sub_last(f->sub, &f->has_start);
    plan_next(f);
    uint64_t deadline = (uint64_t)h_now_us() + DEADLINE_US;
    for (;;) {
        if ((uint64_t)h_now_us() > deadline) {
            snprintf(f->error, sizeof(f->error),
                     "not done in time: %zu events, %d resumes, last %llu", f->keys.n, f->resumes,
                     f->keys.n ? (unsigned long long)f->keys.v[f->keys.n - 1] : 0ull);
            break;
        }
        if (f->recreate) {
            /* The checkpoint resume: a new subscription after it. */
            es_sub_destroy(f->sub);
            f->sub = NULL;
            es_sub_options o = f->opts;
            if (f->has_checkpoint) {
                o.start = ES_SUB_AFTER;
                o.after = f->checkpoint;
                f->check_checkpoint = true;
                f->last_checkpoint = f->checkpoint;
            } else {
                o.start = ES_SUB_FROM_START;
            }
            f->recreate = false;
            f->refusing = false;
            rv = open_sub(f, &o);
            if (rv != ES_OK) {
                snprintf(f->error, sizeof(f->error), "resubscribe: %s", es_client_errmsg(f->c));
                break;
            }
            continue;
        }
        rv = es_sub_poll(f->sub, 20);
        if (rv == ES_ERR_REFUSED && !f->recreate) {
            snprintf(f->error, sizeof(f->error), "refused without a reason");
            break;
        }
        if (rv != ES_OK && rv != ES_ERR_REFUSED && rv != ES_ERR_CLOSED && rv != ES_ERR_CONNECTION &&
            rv != ES_ERR_TIMEOUT) {
            snprintf(f->error, sizeof(f->error), "poll: %s: %s", es_errname(rv),
                     es_client_errmsg(f->c));
            break;
        }
        bool at_target = atomic_load(&targets_known) && f->keys.n > 0 &&
                         f->keys.v[f->keys.n - 1] >= target_of(f);
        if (f->resumes < f->wanted && !f->switch_armed && (f->keys.n >= f->next_at || at_target)) {
            do_resume(f, false);
            continue;
        }
        if (f->resumes >= f->wanted && !f->switch_armed && at_target) {
            break;
        }
    }
    es_sub_destroy(f->sub);
    f->sub = NULL;
    es_client_destroy(f->c);
    f->c = NULL;
    return NULL;
}

/* ------------------------------------------------------------------ test -- */

/* Prefill: PREFILL events over the 16 streams, in batches of 100. */
static void prefill(es_client *c)
{
    char data[] = "{\"prefill\":true}";
    es_event evs[100];
    for (unsigned b = 0; b < PREFILL / 100; b++) {
        for (unsigned i = 0; i < 100; i++) {
            memset(&evs[i], 0, sizeof(evs[i]));
            evs[i].type = "Rs";
            evs[i].data = data;
            evs[i].data_len = strlen(data);
        }
        char stream[32];
        snprintf(stream, sizeof(stream), "rs%c-%u", b & 1 ? 'a' : 'b', (b / 2) % STREAMS);
        es_err rv = es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, evs, 100, NULL);
        if (rv != ES_OK) {
            fail_msg("prefill: %s", es_client_errmsg(c));
        }
    }
}

/* The whole log: positions 1..n with their stream and revision. */
typedef struct log_copy {
    size_t n;
    char (*stream)[16];
    uint64_t *revision;
} log_copy;

static void read_log(es_client *c, log_copy *lc)
{
    memset(lc, 0, sizeof(*lc));
    size_t cap = 0;
    es_read_iter *it = NULL;
    es_read_options ro = {.from = 1};
    if (es_read_all(c, &ro, &it) != ES_OK) {
        fail_msg("read_all: %s", es_client_errmsg(c));
    }
    for (;;) {
        const es_recorded_event *ev = NULL;
        es_err rv = es_read_next(it, &ev);
        if (rv != ES_OK) {
            fail_msg("read_next: %s", es_client_errmsg(c));
        }
        if (ev == NULL) {
            break;
        }
        if (ev->position != lc->n + 1) {
            fail_msg("the log has position %llu at index %zu", (unsigned long long)ev->position,
                     lc->n);
        }
        if (lc->n == cap) {
            cap = cap ? cap * 2 : 65536;
            lc->stream = realloc(lc->stream, cap * sizeof(*lc->stream));
            lc->revision = realloc(lc->revision, cap * sizeof(*lc->revision));
            assert_non_null(lc->stream);
            assert_non_null(lc->revision);
        }
        snprintf(lc->stream[lc->n], sizeof(lc->stream[0]), "%s", ev->stream);
        lc->revision[lc->n] = ev->revision;
        lc->n++;
    }
    es_read_destroy(it);
}

/* What a follower must have received: the keys (and positions) after its
 * start point of the events it follows, in log order. */
static void expected_of(const follower *f, const log_copy *lc, u64s *keys, u64s *positions)
{
    for (size_t i = 0; i < lc->n; i++) {
        uint64_t pos = i + 1;
        const char *s = lc->stream[i];
        bool match = f->opts.target == ES_SUB_ALL ||
                     (f->opts.target == ES_SUB_CATEGORY && strncmp(s, "rsa-", 4) == 0) ||
                     (f->opts.target == ES_SUB_STREAM && strcmp(s, STREAM_FOLLOW) == 0);
        if (!match) {
            continue;
        }
        uint64_t key = f->stream ? lc->revision[i] : pos;
        if (f->has_start && key <= f->start) {
            continue;
        }
        u64s_push(keys, key);
        u64s_push(positions, pos);
    }
}

static void test_resumes(void **state)
{
    const char *const args[] = {"--max-page", "500", NULL};
    assert_int_equal(esd_launch(&esd, esd_args, args, 10000), 0);
    es_client *c = h_client(esd.address, "resume-main");
    assert_non_null(c);
    prefill(c);

    follower fs[5] = {
        {.label = "all-start",
         .opts = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START, .batch_size = 64},
         .wanted = 20,
         .spread = 2500},
        {.label = "all-middle",
         .opts = {.target = ES_SUB_ALL, .start = ES_SUB_AFTER, .after = PREFILL / 2},
         .wanted = 20,
         .spread = 2500},
        {.label = "all-end",
         .opts = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_END, .batch_size = 16},
         .wanted = 20,
         .spread = 2000},
        {.label = "category",
         .opts = {.target = ES_SUB_CATEGORY, .name = "rsa", .start = ES_SUB_FROM_START},
         .wanted = 10,
         .spread = 2500},
        {.label = "stream",
         .opts = {.target = ES_SUB_STREAM,
                  .name = STREAM_FOLLOW,
                  .start = ES_SUB_FROM_START,
                  .batch_size = 8},
         .stream = true,
         .wanted = 10,
         .spread = 200},
    };
    const size_t nf = sizeof(fs) / sizeof(fs[0]);

    writer ws[WRITERS];
    memset(ws, 0, sizeof(ws));
    atomic_store(&writers_done, false);
    atomic_store(&targets_known, false);
    uint64_t t0 = (uint64_t)h_now_us();
    for (unsigned i = 0; i < WRITERS; i++) {
        ws[i].index = i;
        assert_int_equal(pthread_create(&ws[i].th, NULL, writer_main, &ws[i]), 0);
    }
    for (size_t i = 0; i < nf; i++) {
        fs[i].seed.s = 0x51ed2701ull * (i + 7) ^ t0;
        assert_int_equal(pthread_create(&fs[i].th, NULL, follower_main, &fs[i]), 0);
    }
    for (unsigned i = 0; i < WRITERS; i++) {
        pthread_join(ws[i].th, NULL);
    }
    uint64_t t_writers = (uint64_t)h_now_us() - t0;
    atomic_store(&writers_done, true);
    for (unsigned i = 0; i < WRITERS; i++) {
        if (ws[i].error[0] != '\0') {
            fail_msg("writer %u: %s", i, ws[i].error);
        }
        assert_int_equal(ws[i].written, PER_WRITER);
    }

    /* The targets: the last position, the last position of the category,
     * the last revision of the stream. */
    es_stats st;
    assert_int_equal(es_stats_get(c, &st), ES_OK);
    target_all = st.head_position;
    assert_int_equal(target_all, PREFILL + WRITERS * PER_WRITER);
    es_read_options ro = {.from = ES_READ_END,
                          .backward = true,
                          .max_count = 1,
                          .filter = ES_FILTER_CATEGORY,
                          .filter_name = "rsa"};
    es_read_iter *it = NULL;
    const es_recorded_event *ev = NULL;
    assert_int_equal(es_read_all(c, &ro, &it), ES_OK);
    assert_int_equal(es_read_next(it, &ev), ES_OK);
    assert_non_null(ev);
    target_cat = ev->position;
    es_read_destroy(it);
    es_stream_info si;
    assert_int_equal(es_stream_info_get(c, STREAM_FOLLOW, &si), ES_OK);
    target_stream = si.last_revision;
    atomic_store(&targets_known, true);

    for (size_t i = 0; i < nf; i++) {
        pthread_join(fs[i].th, NULL);
    }
    uint64_t t_all = (uint64_t)h_now_us() - t0;

    /* Check every follower against the log. */
    log_copy lc;
    read_log(c, &lc);
    assert_int_equal(lc.n, target_all);
    printf("resume: %llu events (%u prefilled, %d writers x %u) written in %.2f s; "
           "all followers done in %.2f s\n",
           (unsigned long long)lc.n, PREFILL, WRITERS, PER_WRITER, (double)t_writers / 1e6,
           (double)t_all / 1e6);
    bool ok = true;
    for (size_t i = 0; i < nf; i++) {
        follower *f = &fs[i];
        u64s keys = {0}, positions = {0};
        expected_of(f, &lc, &keys, &positions);
        bool same = keys.n == f->keys.n &&
                    memcmp(keys.v, f->keys.v, keys.n * sizeof(uint64_t)) == 0 &&
                    memcmp(positions.v, f->positions.v, keys.n * sizeof(uint64_t)) == 0;
        printf("resume: %-10s start %s%-6llu delivered %6zu (expected %6zu) %s; resumes %d "
               "(%d at the caught-up switch, %d by close, %d by checkpoint, %d while writing), "
               "caught-up %llu times, violations %llu\n",
               f->label, f->has_start ? "after " : "first ",
               (unsigned long long)(f->has_start ? f->start : 0), f->keys.n, keys.n,
               same ? "exactly once, in order" : "MISMATCH", f->resumes, f->at_switch, f->by_close,
               f->by_checkpoint, f->while_writing, (unsigned long long)f->caught_ups,
               (unsigned long long)f->violations);
        if (f->error[0] != '\0') {
            printf("resume: %s: %s\n", f->label, f->error);
            ok = false;
        }
        if (!same) {
            size_t j = 0;
            while (j < keys.n && j < f->keys.n && keys.v[j] == f->keys.v[j]) {
                j++;
            }
            printf("resume: %s: first difference at index %zu: expected %llu, got %llu\n", f->label,
                   j, j < keys.n ? (unsigned long long)keys.v[j] : 0ull,
                   j < f->keys.n ? (unsigned long long)f->keys.v[j] : 0ull);
            ok = false;
        }
        if (f->violations != 0) {
            printf("resume: %s: first violation at key %llu\n", f->label,
                   (unsigned long long)f->first_violation);
            ok = false;
        }
        if (f->resumes != f->wanted || f->at_switch < f->wanted / 3) {
            ok = false;
        }
        u64s_free(&keys);
        u64s_free(&positions);
        u64s_free(&f->keys);
        u64s_free(&f->positions);
    }
    free(lc.stream);
    free(lc.revision);
    es_client_destroy(c);
    if (!ok) {
        esd_dump_log(&esd);
    }
    esd_end(&esd, 10000);
    assert_true(ok);
}

/* ---------------------------------------------- two subscriptions, one client -- */

typedef struct shared_seen {
    bool stream;
    u64s keys;
    uint64_t violations;
} shared_seen;

static int shared_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    shared_seen *s = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = s->stream ? evs[i].revision : evs[i].position;
        s->violations += s->keys.n > 0 && key <= s->keys.v[s->keys.n - 1];
        u64s_push(&s->keys, key);
    }
    return 0;
}

/* Two subscriptions (the whole log, one stream) on the client that also
 * appends: the appends' reads queue the pushes of both, each poll delivers
 * its own; the connection is closed three times on the way. */
static void test_two_subscriptions_one_client(void **state)
{
    assert_int_equal(esd_launch(&esd, esd_args, NULL, 10000), 0);
    es_client *c = h_client(esd.address, "resume-shared");
    assert_non_null(c);
    shared_seen all = {.stream = false}, one = {.stream = true};
    es_subscription *sa = NULL, *so = NULL;
    es_sub_options oa = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START, .batch_size = 7};
    es_sub_options os = {.target = ES_SUB_STREAM, .name = "pair-1", .start = ES_SUB_FROM_START};
    assert_int_equal(es_subscribe(c, &oa, shared_batch, NULL, &all, &sa), ES_OK);
    assert_int_equal(es_subscribe(c, &os, shared_batch, NULL, &one, &so), ES_OK);
    char data[] = "{}";
    for (unsigned i = 0; i < 600; i++) {
        es_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.type = "Pair";
        ev.data = data;
        ev.data_len = 2;
        assert_int_equal(es_stream_append(c, i % 3 ? "pair-2" : "pair-1",
                                          (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL),
                         ES_OK);
        if (i % 50 == 0) {
            assert_int_equal(es_sub_poll(sa, 0), ES_OK);
        }
        if (i % 70 == 0) {
            assert_int_equal(es_sub_poll(so, 0), ES_OK);
        }
        if (i == 150 || i == 320 || i == 480) {
            es_client_disconnect(c);
        }
    }
    uint64_t deadline = (uint64_t)h_now_us() + 20000000u;
    while ((all.keys.n < 600 || one.keys.n < 200) && (uint64_t)h_now_us() < deadline) {
        es_err rv = es_sub_poll(sa, 10);
        assert_true(rv == ES_OK || rv == ES_ERR_CLOSED);
        rv = es_sub_poll(so, 10);
        assert_true(rv == ES_OK || rv == ES_ERR_CLOSED);
    }
    printf("resume: two subscriptions on one client: %zu and %zu events\n", all.keys.n, one.keys.n);
    assert_int_equal(all.keys.n, 600);
    assert_int_equal(one.keys.n, 200);
    for (size_t i = 0; i < all.keys.n; i++) {
        assert_int_equal(all.keys.v[i], i + 1);
    }
    for (size_t i = 0; i < one.keys.n; i++) {
        assert_int_equal(one.keys.v[i], i);
    }
    assert_int_equal(all.violations + one.violations, 0);
    es_sub_destroy(sa);
    es_sub_destroy(so);
    u64s_free(&all.keys);
    u64s_free(&one.keys);
    es_client_destroy(c);
    esd_end(&esd, 10000);
}

/* Whatever happened in the test: no esd or temporary directory is left. */
static int teardown(void **state)
{
    esd_end(&esd, 10000);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_resumes, teardown),
        cmocka_unit_test_teardown(test_two_subscriptions_one_client, teardown),
    };
    return cmocka_run_group_tests_name("subs_resume", tests, NULL, NULL);
}

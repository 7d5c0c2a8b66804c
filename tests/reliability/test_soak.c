/*
 * test_soak — the soak: a steady mixed load for a long time; esd's
 * memory must stay bounded.
 *
 *   test_soak --seconds 120     (suite reliability)
 *   test_soak --seconds 3600    (suite long)
 *
 * Design notes
 * ------------
 * Workers, each with its own client, for the whole run:
 *
 *   4 appenders   own 8 streams each; exact expectations; contents derived
 *                 from (stream, revision) (rel.h); paced at --rate appends
 *                 per second each, so that an hour does not fill the disk;
 *   2 readers     read 1..100 events of a random stream from a random
 *                 revision and check every byte;
 *   1 pager       reads the global log in pages from random positions and
 *                 checks positions are consecutive and every byte;
 *   1 churner     connect, hello, ping, stats, disconnect, 20 times a second;
 *   2 subscribers (when the client has subscriptions — REL_HAVE_SUBSCRIBE)
 *                 one to the whole log from the start, one to the category
 *                 from the end; each checks order, gaplessness and bytes,
 *                 and every few seconds drops its subscription and resumes
 *                 strictly after the last event it saw.
 *
 * The main thread samples esd's /proc/PID/status every second. The bound
 * is on RssAnon — resident anonymous memory, i.e. the heap and stacks,
 * without the LMDB data file, which is a file mapping and grows with the
 * log by design. After warm-up (the sample at 25 % of the run) it may grow
 * by at most 1 MiB by the end of the run (the sample at 100 %). Under
 * AddressSanitizer (its quarantine keeps freed memory resident by design)
 * the bound is reported but not enforced; there, the leak check is
 * LeakSanitizer's, which makes esd's exit status non-zero on SIGTERM.
 *
 * At the end: every worker error fails the test, esd must exit 0 on
 * SIGTERM, `esctl db check` must pass and the whole log is walked once more.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "rel.h"
#include "support.h"

#if defined(__SANITIZE_ADDRESS__)
#define REL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REL_ASAN 1
#endif
#endif
#ifndef REL_ASAN
#define REL_ASAN 0
#endif

#ifndef REL_HAVE_SUBSCRIBE
#define REL_HAVE_SUBSCRIBE 0
#endif

#define N_APPENDERS          4u
#define STREAMS_PER_APPENDER 8u
#define N_STREAMS            (N_APPENDERS * STREAMS_PER_APPENDER)
#define MAX_DATA             300u
#define PREFIX               "soak"
#define RSS_GROWTH_BOUND_KB  1024

static uint64_t salt;
static const char *address;
static _Atomic bool stopping;
/* Published revisions: next revision of each stream (readers stay below). */
static _Atomic uint64_t published[N_STREAMS];
static _Atomic uint64_t n_appends, n_events, n_reads, n_read_events, n_pages, n_churns;
static _Atomic uint64_t n_sub_events, n_resubscribes;

static void pace(int64_t *next_us, int64_t period_us)
{
    *next_us += period_us;
    int64_t wait = *next_us - h_now_us();
    if (wait > 0) {
        h_sleep_ms((int)(wait / 1000));
    } else if (wait < -1000000) {
        *next_us = h_now_us(); /* fell behind: do not burst */
    }
}

typedef struct appender {
    uint32_t no;
    uint64_t rate;
    rel_rng rng;
    pthread_t thread;
} appender;

static void *appender_main(void *arg)
{
    appender *a = arg;
    es_client *c = rel_client(address, 30000);
    uint64_t rev[STREAMS_PER_APPENDER] = {0};
    int64_t next = h_now_us();
    while (!atomic_load(&stopping)) {
        uint32_t k = (uint32_t)rel_range(&a->rng, 0, STREAMS_PER_APPENDER - 1);
        uint32_t s = a->no * STREAMS_PER_APPENDER + k;
        uint32_t n = (uint32_t)rel_range(&a->rng, 1, 4);
        rel_ev evs[4];
        es_event e[4];
        for (uint32_t i = 0; i < n; i++) {
            rel_ev_make(&evs[i], salt, s, rev[k] + i, MAX_DATA);
            rel_ev_to_event(&evs[i], &e[i]);
        }
        es_expected ex = {rev[k] ? ES_EXPECT_EXACT : ES_EXPECT_NO_STREAM, rev[k] ? rev[k] - 1 : 0};
        char name[32];
        snprintf(name, sizeof name, "%s-%u", PREFIX, s);
        es_append_result res;
        es_err rv = es_stream_append(c, name, ex, e, n, &res);
        if (rv != ES_OK || res.first_revision != rev[k]) {
            rel_fail("appender %u: %s at %" PRIu64 ": %s (%s)", a->no, name, rev[k], es_errname(rv),
                     es_client_errmsg(c));
        }
        rev[k] += n;
        atomic_store(&published[s], rev[k]);
        atomic_fetch_add(&n_appends, 1);
        atomic_fetch_add(&n_events, n);
        pace(&next, 1000000 / (int64_t)a->rate);
    }
    es_client_destroy(c);
    return NULL;
}

typedef struct reader {
    uint32_t no;
    rel_rng rng;
    pthread_t thread;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    es_client *c = rel_client(address, 30000);
    rel_ev want;
    int64_t next = h_now_us();
    while (!atomic_load(&stopping)) {
        uint32_t s = (uint32_t)rel_range(&r->rng, 0, N_STREAMS - 1);
        uint64_t top = atomic_load(&published[s]);
        if (top == 0) {
            pace(&next, 10000);
            continue;
        }
        uint64_t from = rel_range(&r->rng, 0, top - 1);
        char name[32];
        snprintf(name, sizeof name, "%s-%u", PREFIX, s);
        es_read_options ro = {0};
        ro.from = from;
        ro.max_count = rel_range(&r->rng, 1, 100);
        es_read_iter *it;
        es_err rv = es_read_stream(c, name, &ro, &it);
        uint64_t expect = from;
        while (rv == ES_OK) {
            const es_recorded_event *ev;
            rv = es_read_next(it, &ev);
            if (rv != ES_OK || !ev) {
                break;
            }
            rel_ev_make(&want, salt, s, expect, MAX_DATA);
            if (ev->revision != expect || !rel_ev_equal(&want, ev)) {
                rel_fail("reader %u: %s revision %" PRIu64 " (expected %" PRIu64
                         "): not the bytes appended",
                         r->no, name, ev->revision, expect);
            }
            expect++;
            atomic_fetch_add(&n_read_events, 1);
        }
        es_read_destroy(it);
        if (rv != ES_OK) {
            rel_fail("reader %u: %s from %" PRIu64 ": %s (%s)", r->no, name, from, es_errname(rv),
                     es_client_errmsg(c));
        }
        if (expect < from + 1 || (expect - from < ro.max_count && expect < top)) {
            rel_fail("reader %u: %s from %" PRIu64 " ended at %" PRIu64 " (published up to %" PRIu64
                     ")",
                     r->no, name, from, expect, top);
        }
        atomic_fetch_add(&n_reads, 1);
        pace(&next, 10000);
    }
    es_client_destroy(c);
    return NULL;
}

static void check_log_event(const es_recorded_event *ev, const char *who)
{
    long s = rel_stream_no(PREFIX, ev->stream);
    if (s < 0 || s >= (long)N_STREAMS) {
        rel_fail("%s: position %" PRIu64 ": unexpected stream %s", who, ev->position, ev->stream);
    }
    rel_ev want;
    rel_ev_make(&want, salt, (uint32_t)s, ev->revision, MAX_DATA);
    if (!rel_ev_equal(&want, ev)) {
        rel_fail("%s: position %" PRIu64 " (%s revision %" PRIu64 "): not the bytes appended", who,
                 ev->position, ev->stream, ev->revision);
    }
}

static void *pager_main(void *arg)
{
    rel_rng *rng = arg;
    es_client *c = rel_client(address, 30000);
    int64_t next = h_now_us();
    while (!atomic_load(&stopping)) {
        es_stats st;
        es_err rv = es_stats_get(c, &st);
        if (rv != ES_OK) {
            rel_fail("pager: stats: %s", es_errname(rv));
        }
        es_read_options ro = {0};
        ro.from = st.head_position ? rel_range(rng, 1, st.head_position) : 1;
        ro.max_count = 500;
        ro.page_size = (uint32_t)rel_range(rng, 10, 200);
        ro.backward = rel_rand(rng) & 1;
        es_read_iter *it;
        rv = es_read_all(c, &ro, &it);
        uint64_t prev = 0;
        while (rv == ES_OK) {
            const es_recorded_event *ev;
            rv = es_read_next(it, &ev);
            if (rv != ES_OK || !ev) {
                break;
            }
            if (prev && ev->position != (ro.backward ? prev - 1 : prev + 1)) {
                rel_fail("pager: position %" PRIu64 " after %" PRIu64 " (%s)", ev->position, prev,
                         ro.backward ? "backward" : "forward");
            }
            prev = ev->position;
            check_log_event(ev, "pager");
        }
        es_read_destroy(it);
        if (rv != ES_OK) {
            rel_fail("pager: read-all from %" PRIu64 ": %s (%s)", ro.from, es_errname(rv),
                     es_client_errmsg(c));
        }
        atomic_fetch_add(&n_pages, 1);
        pace(&next, 20000);
    }
    es_client_destroy(c);
    return NULL;
}

static void *churn_main(void *arg)
{
    (void)arg;
    int64_t next = h_now_us();
    while (!atomic_load(&stopping)) {
        es_client *c = rel_client(address, 30000);
        es_err rv = es_client_connect(c);
        es_stats st;
        if (rv == ES_OK) {
            rv = es_client_ping(c, NULL);
        }
        if (rv == ES_OK) {
            rv = es_stats_get(c, &st);
        }
        if (rv != ES_OK) {
            rel_fail("churner: %s (%s)", es_errname(rv), es_client_errmsg(c));
        }
        es_client_destroy(c);
        atomic_fetch_add(&n_churns, 1);
        pace(&next, 50000);
    }
    return NULL;
}

#if REL_HAVE_SUBSCRIBE
typedef struct subscriber {
    const char *who;
    es_sub_options opts;
    uint64_t last; /* last position delivered, 0 = none */
    bool have_last;
    pthread_t thread;
} subscriber;

static int sub_batch(void *ctx, const es_recorded_event *events, size_t n)
{
    subscriber *sb = ctx;
    for (size_t i = 0; i < n; i++) {
        const es_recorded_event *ev = &events[i];
        if (sb->have_last && ev->position != sb->last + 1) {
            rel_fail("%s: position %" PRIu64 " after %" PRIu64 " (gap or repeat)", sb->who,
                     ev->position, sb->last);
        }
        check_log_event(ev, sb->who);
        sb->last = ev->position;
        sb->have_last = true;
    }
    atomic_fetch_add(&n_sub_events, n);
    return 0;
}

static void *subscriber_main(void *arg)
{
    subscriber *sb = arg;
    es_client *c = rel_client(address, 30000);
    while (!atomic_load(&stopping)) {
        es_subscription *sub = NULL;
        es_err rv = es_subscribe(c, &sb->opts, sub_batch, NULL, sb, &sub);
        if (rv != ES_OK) {
            rel_fail("%s: es_subscribe: %s (%s)", sb->who, es_errname(rv), es_client_errmsg(c));
        }
        if (sb->opts.start == ES_SUB_FROM_END) {
            bool has = false;
            uint64_t at = es_sub_last(sub, &has);
            sb->last = at;
            sb->have_last = has;
        }
        int64_t until = h_now_ms() + 3000;
        while (!atomic_load(&stopping) && h_now_ms() < until) {
            rv = es_sub_poll(sub, 100);
            if (rv != ES_OK) {
                rel_fail("%s: es_sub_poll: %s (%s)", sb->who, es_errname(rv), es_client_errmsg(c));
            }
        }
        es_sub_destroy(sub);
        /* Resume strictly after the last event seen. */
        if (sb->have_last) {
            sb->opts.start = ES_SUB_AFTER;
            sb->opts.after = sb->last;
        }
        atomic_fetch_add(&n_resubscribes, 1);
    }
    es_client_destroy(c);
    return NULL;
}
#endif

int main(int argc, char **argv)
{
    static const char *const names[] = {"seconds", "rate", NULL};
    uint64_t val[] = {120, 50};
    rel_args(argc, argv, "test_soak", names, val);
    uint64_t seconds = val[0];
    if (seconds < 8 || val[1] < 1 || val[1] > 1000) {
        rel_fail("--seconds must be >= 8 and --rate in 1..1000");
    }
    rel_rng rng = {rel_seed()};
    salt = rel_rand(&rng);

    esd_proc e;
    if (esd_init(&e, NULL) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    int st;
    char why[256];
    if (esd_start(&e, 20000) != 0) {
        rel_fail("esd did not start: %s", h_status_str(e.status, why, sizeof why));
    }
    address = e.address;

    appender aps[N_APPENDERS];
    reader rds[2];
    rel_rng pager_rng = {rel_rand(&rng)};
    pthread_t pager, churn;
    for (uint32_t i = 0; i < N_APPENDERS; i++) {
        aps[i] = (appender){.no = i, .rate = val[1], .rng = {rel_rand(&rng)}};
        pthread_create(&aps[i].thread, NULL, appender_main, &aps[i]);
    }
    for (uint32_t i = 0; i < 2; i++) {
        rds[i] = (reader){.no = i, .rng = {rel_rand(&rng)}};
        pthread_create(&rds[i].thread, NULL, reader_main, &rds[i]);
    }
    pthread_create(&pager, NULL, pager_main, &pager_rng);
    pthread_create(&churn, NULL, churn_main, NULL);
#if REL_HAVE_SUBSCRIBE
    subscriber subs[2] = {
        {.who = "subscriber(all, from start)",
         .opts = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_START, .batch_size = 64}},
        {.who = "subscriber(category, from end)",
         .opts = {.target = ES_SUB_CATEGORY, .name = PREFIX, .start = ES_SUB_FROM_END}},
    };
    for (int i = 0; i < 2; i++) {
        pthread_create(&subs[i].thread, NULL, subscriber_main, &subs[i]);
    }
#endif

    /* Sample esd's memory once a second. */
    size_t n_samples = (size_t)seconds + 2;
    long *anon = calloc(n_samples, sizeof *anon);
    if (!anon) {
        rel_fail("out of memory");
    }
    int64_t t0 = h_now_ms();
    size_t k = 0;
    long anon_25 = -1;
    long max_anon = 0;
    for (;;) {
        int64_t elapsed = h_now_ms() - t0;
        if (!esd_alive(&e)) {
            h_dump_tail(e.log_file, 20);
            rel_fail("esd died during the soak: %s", h_status_str(e.status, why, sizeof why));
        }
        long a = h_proc_status_kb(e.pid, "RssAnon");
        if (a < 0) {
            rel_fail("cannot read RssAnon of esd");
        }
        if (k < n_samples) {
            anon[k++] = a;
        }
        if (a > max_anon) {
            max_anon = a;
        }
        if (anon_25 < 0 && elapsed >= (int64_t)seconds * 250) {
            anon_25 = a;
            rel_log("25 %%: RssAnon %ld kB, VmRSS %ld kB, RssFile %ld kB; %" PRIu64
                    " events appended",
                    a, h_proc_status_kb(e.pid, "VmRSS"), h_proc_status_kb(e.pid, "RssFile"),
                    atomic_load(&n_events));
        }
        if (elapsed >= (int64_t)seconds * 1000) {
            break;
        }
        if (k % 60 == 0) {
            rel_log("%" PRId64 " s: RssAnon %ld kB; %" PRIu64 " events, %" PRIu64 " reads, %" PRIu64
                    " pages, %" PRIu64 " churns, %" PRIu64 " events to subscribers",
                    elapsed / 1000, a, atomic_load(&n_events), atomic_load(&n_reads),
                    atomic_load(&n_pages), atomic_load(&n_churns), atomic_load(&n_sub_events));
        }
        h_sleep_ms(1000);
    }
    long anon_100 = h_proc_status_kb(e.pid, "RssAnon");
    long rss_100 = h_proc_status_kb(e.pid, "VmRSS");
    long file_100 = h_proc_status_kb(e.pid, "RssFile");
    atomic_store(&stopping, true);
    for (uint32_t i = 0; i < N_APPENDERS; i++) {
        pthread_join(aps[i].thread, NULL);
    }
    for (uint32_t i = 0; i < 2; i++) {
        pthread_join(rds[i].thread, NULL);
    }
    pthread_join(pager, NULL);
    pthread_join(churn, NULL);
#if REL_HAVE_SUBSCRIBE
    for (int i = 0; i < 2; i++) {
        pthread_join(subs[i].thread, NULL);
    }
#endif

    /* The whole log, once more, through a fresh client. */
    es_client *c = rel_client(e.address, 60000);
    rel_walk wk;
    rel_walk_init(&wk, N_STREAMS);
    if (rel_walk_log(&wk, c, PREFIX, salt, MAX_DATA, why, sizeof why) != ES_OK) {
        rel_fail("final walk: %s", why);
    }
    if (wk.head != atomic_load(&n_events)) {
        rel_fail("final walk: %" PRIu64 " events in the log, %" PRIu64 " acknowledged", wk.head,
                 atomic_load(&n_events));
    }
    rel_walk_finish(&wk);
    es_client_destroy(c);
    if (esd_stop(&e, SIGTERM, 10000, &st, NULL) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        h_dump_tail(e.log_file, 40);
        rel_fail("esd did not exit 0 on SIGTERM: %s%s", h_status_str(st, why, sizeof why),
                 REL_ASAN ? " (LeakSanitizer reports make it exit non-zero: see the log)" : "");
    }
    char out[400];
    snprintf(out, sizeof out, "%s/check.out", e.dir);
    const char *a[] = {"db", "check", e.data_dir, NULL};
    int cst = h_esctl(a, out, 600000);
    if (cst != 0) {
        h_dump_tail(out, 20);
        rel_fail("esctl db check: %s", h_status_str(cst, why, sizeof why));
    }

    long growth = anon_100 - anon_25;
    rel_log("RssAnon: %ld kB at 25 %%, %ld kB at 100 %% (growth %ld kB, bound %d kB), max %ld "
            "kB; VmRSS %ld kB of which RssFile (the LMDB map) %ld kB",
            anon_25, anon_100, growth, RSS_GROWTH_BOUND_KB, max_anon, rss_100, file_100);
    if (growth > RSS_GROWTH_BOUND_KB) {
        if (REL_ASAN) {
            rel_log("(AddressSanitizer build: the bound is not enforced; its quarantine keeps "
                    "freed memory resident)");
        } else {
            fprintf(stderr, "RssAnon samples (kB, one a second):");
            for (size_t i = 0; i < k; i++) {
                fprintf(stderr, " %ld", anon[i]);
            }
            fputc('\n', stderr);
            rel_fail("esd's anonymous memory grew by %ld kB after warm-up (bound %d kB)", growth,
                     RSS_GROWTH_BOUND_KB);
        }
    }
    free(anon);
    rel_log("PASS soak: %" PRIu64 " s soak%s; %" PRIu64 " appends (%" PRIu64 " events), %" PRIu64
            " stream reads (%" PRIu64 " events checked), %" PRIu64 " log pages, %" PRIu64
            " connection churns, %" PRIu64 " events to subscribers over %" PRIu64
            " resubscriptions; final walk, SIGTERM exit 0 and db check clean",
            seconds,
            REL_HAVE_SUBSCRIBE ? "" : " (append/read only: no subscriptions in this client)",
            atomic_load(&n_appends), atomic_load(&n_events), atomic_load(&n_reads),
            atomic_load(&n_read_events), atomic_load(&n_pages), atomic_load(&n_churns),
            atomic_load(&n_sub_events), atomic_load(&n_resubscribes));
    esd_destroy(&e);
    return 0;
}

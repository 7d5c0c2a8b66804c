/*
 * test_stalled — a subscriber that never reads.
 *
 * esd runs with --max-frame-bytes 1 MiB and --max-output-bytes 8 MiB over a
 * log of 200,000 events of about 200 bytes (some 50 MB of history). Four
 * writer threads append single events without pause for the whole test,
 * each append's latency recorded with its start time. Then, in each of
 * five rounds:
 *
 *   1. a baseline window of WINDOW_US without a stalled subscriber;
 *   2. a raw connection (4 KiB receive buffer) says hello and subscribes
 *      to the whole log from the first event with batches of 4096 events,
 *      and then never reads again;
 *   3. after SETTLE_US (the kernel's socket buffers and esd's output buffer
 *      have filled), a window of WINDOW_US with the stalled subscriber;
 *   4. the stalled connection is closed.
 *
 * Memory: esd pushes a batch only while the connection's unsent output is
 * below half of --max-output-bytes, and a batch is at most one frame, so
 * what a stalled subscriber holds in esd is at most
 *     max_output_bytes / 2 + max_frame_bytes   (here 4 MiB + 1 MiB)
 * plus, while a push is being built, that batch's buffer (one more frame,
 * freed after the push): 6 MiB, within the bound asserted,
 *     --max-output-bytes + one page            (8 MiB + 4 KiB).
 * The test samples esd's VmRSS and RssAnon in /proc/PID/status every 20 ms
 * and compares the largest value of the stalled window with the largest of
 * the baseline window just before. The bound is asserted on RssAnon (the
 * heap, where the server's buffers live); VmRSS is printed too, but it also
 * counts the pages of the LMDB map touched by the history reads and by the
 * writers' commits (file-backed, reclaimable, not the subscriber's cost).
 * (With a small --max-output-bytes the growth can hide in heap memory freed
 * earlier in the run, hence 8 MiB: the growth is visible and bounded.)
 *
 * Latency: the p99 of the appends started in each window, esd's CPU time
 * (utime + stime) per append, and how long esd's threads waited for a CPU
 * (schedstat). The target is a median p99 with the stalled subscriber
 * within 1.5 x the median of the baselines, and the test prints whether
 * this run met it. On this shared 2-core machine (load averages of 10-15
 * from other work) the p99 of a 1.5-second window swings by 2-5x either
 * way from one window to the next, following the time esd waited for a
 * CPU, not its own work. So what is asserted is generous: median p99 with
 * the stalled subscriber within 5 x baseline + 5 ms (a loop held up by the
 * subscriber would show tens of ms), esd's CPU per append within 1.5 x
 * baseline (the direct evidence that a stalled subscriber costs the server
 * no work: it is skipped while its output is above the low-water mark), and
 * at least half the baseline's number of appends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rel.h"
#include "support.h"

#define HISTORY     200000u
#define EVENT_BYTES 200u
#define WRITERS     4
#define ROUNDS      5
#define WINDOW_US   1500000u
#define SETTLE_US   700000u
#define MAX_FRAME   (1u << 20)
#define MAX_OUTPUT  (8u << 20)
#define SAMPLES_CAP (4u << 20)

static esd_proc esd;

/* esd without fsync and with warnings only in its log (plus a test's own arguments). */
static const char *const esd_args[] = {"--sync", "none", "--log-level", "warn", NULL};
static atomic_bool stop_writers;

/* ----------------------------------------------------------------- writers -- */

typedef struct writer {
    pthread_t th;
    unsigned index;
    uint64_t *start_us; /* per append */
    uint32_t *lat_us;
    size_t n;
    char error[256];
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    es_client *c = h_client(esd.address, "stalled-writer");
    if (c == NULL) {
        snprintf(w->error, sizeof(w->error), "cannot connect");
        return NULL;
    }
    rel_rng seed = {0x2545f4914f6cdd1dull * (w->index + 3)};
    char data[EVENT_BYTES + 1];
    memset(data, 'w', EVENT_BYTES);
    data[0] = '"';
    data[EVENT_BYTES - 1] = '"';
    data[EVENT_BYTES] = '\0';
    while (!atomic_load(&stop_writers) && w->n < SAMPLES_CAP) {
        char stream[32];
        snprintf(stream, sizeof(stream), "slw-%u", (unsigned)(rel_rand(&seed) % 1000));
        es_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.type = "Sl";
        ev.data = data;
        ev.data_len = EVENT_BYTES;
        uint64_t t0 = (uint64_t)h_now_us();
        es_err rv = es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL);
        uint64_t t1 = (uint64_t)h_now_us();
        if (rv != ES_OK) {
            snprintf(w->error, sizeof(w->error), "append: %s", es_client_errmsg(c));
            break;
        }
        w->start_us[w->n] = t0;
        w->lat_us[w->n] = (uint32_t)(t1 - t0);
        w->n++;
    }
    es_client_destroy(c);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p99 of the appends started in [from, to). */
static uint32_t p99_between(const writer *ws, uint64_t from, uint64_t to, size_t *count)
{
    size_t n = 0;
    for (int i = 0; i < WRITERS; i++) {
        for (size_t j = 0; j < ws[i].n; j++) {
            n += ws[i].start_us[j] >= from && ws[i].start_us[j] < to;
        }
    }
    *count = n;
    if (n == 0) {
        return 0;
    }
    uint32_t *v = malloc(n * sizeof(*v));
    assert_non_null(v);
    size_t k = 0;
    for (int i = 0; i < WRITERS; i++) {
        for (size_t j = 0; j < ws[i].n; j++) {
            if (ws[i].start_us[j] >= from && ws[i].start_us[j] < to) {
                v[k++] = ws[i].lat_us[j];
            }
        }
    }
    qsort(v, n, sizeof(*v), cmp_u32);
    uint32_t p = v[(n * 99 + 99) / 100 - 1];
    free(v);
    return p;
}

static uint32_t median(const uint32_t *v, size_t n)
{
    uint32_t s[16];
    assert_true(n <= 16);
    memcpy(s, v, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_u32);
    return s[n / 2];
}

/* ---------------------------------------------------------------- memory -- */

typedef struct rss {
    long vm_kb, anon_kb; /* the largest samples */
} rss;

/* Sample esd's memory every 20 ms until `until`. */
static void sample_until(uint64_t until, rss *r)
{
    memset(r, 0, sizeof(*r));
    for (;;) {
        long vm = h_proc_status_kb(esd.pid, "VmRSS:");
        long anon = h_proc_status_kb(esd.pid, "RssAnon:");
        if (vm > r->vm_kb) {
            r->vm_kb = vm;
        }
        if (anon > r->anon_kb) {
            r->anon_kb = anon;
        }
        uint64_t now = (uint64_t)h_now_us();
        if (now >= until) {
            return;
        }
        uint64_t left_ms = (until - now) / 1000;
        poll(NULL, 0, left_ms < 20 ? (int)left_ms + 1 : 20);
    }
}

/* ------------------------------------------------------------------ test -- */

static void prefill(es_client *c)
{
    enum { BATCH = 1000, WINDOW = 16 };
    static char data[EVENT_BYTES + 1];
    memset(data, 'h', EVENT_BYTES);
    data[0] = '"';
    data[EVENT_BYTES - 1] = '"';
    static es_event evs[WINDOW][BATCH];
    uint64_t handles[WINDOW];
    unsigned sent = 0;
    for (unsigned b = 0; b < HISTORY / BATCH; b++) {
        unsigned slot = b % WINDOW;
        if (b >= WINDOW) {
            es_err rv = es_stream_append_wait(c, handles[slot], NULL);
            if (rv != ES_OK) {
                fail_msg("prefill: %s", es_client_errmsg(c));
            }
        }
        for (unsigned i = 0; i < BATCH; i++) {
            memset(&evs[slot][i], 0, sizeof(evs[slot][i]));
            evs[slot][i].type = "SlHistory";
            evs[slot][i].data = data;
            evs[slot][i].data_len = EVENT_BYTES;
        }
        char stream[32];
        snprintf(stream, sizeof(stream), "slh-%u", b % 100);
        es_err rv = es_stream_append_send(c, stream, (es_expected){ES_EXPECT_ANY, 0}, evs[slot],
                                          BATCH, &handles[slot]);
        if (rv != ES_OK) {
            fail_msg("prefill: %s", es_client_errmsg(c));
        }
        sent++;
    }
    for (unsigned b = sent >= WINDOW ? sent - WINDOW : 0; b < sent; b++) {
        es_err rv = es_stream_append_wait(c, handles[b % WINDOW], NULL);
        if (rv != ES_OK) {
            fail_msg("prefill: %s", es_client_errmsg(c));
        }
    }
}

/* A connection that subscribes to everything from the first event, reads
 * the SubscribeOk, and then never reads again. @return its fd. */
static int stalled_subscriber(void)
{
    int fd = h_connect_rcvbuf(esd.port, 4096);
    assert_true(fd >= 0);
    assert_true(h_hello(fd));
    Es__V1__Subscribe s = ES__V1__SUBSCRIBE__INIT;
    s.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL;
    s.from_start = true;
    s.batch_size = 4096;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 2;
    req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    req.subscribe = &s;
    assert_int_equal(h_send_req(fd, &req, 5000), H_OK);
    Es__V1__Response *r = NULL;
    assert_int_equal(h_recv(fd, 5000, &r, NULL), H_OK);
    assert_non_null(r);
    assert_int_equal(r->id, 2);
    assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_SUBSCRIBED);
    es__v1__response__free_unpacked(r, NULL);
    return fd;
}

static void test_stalled_subscriber(void **state)
{
    char frame[16], output[16];
    snprintf(frame, sizeof(frame), "%u", MAX_FRAME);
    snprintf(output, sizeof(output), "%u", MAX_OUTPUT);
    const char *const args[] = {"--max-frame-bytes",
                                frame,
                                "--max-output-bytes",
                                output,
                                "--max-event-bytes",
                                "65536",
                                NULL};
    assert_int_equal(esd_launch(&esd, esd_args, args, 10000), 0);
    es_client *c = h_client(esd.address, "stalled-main");
    assert_non_null(c);
    uint64_t t0 = (uint64_t)h_now_us();
    prefill(c);
    printf("stalled: %u events of history written in %.2f s\n", HISTORY,
           (double)((uint64_t)h_now_us() - t0) / 1e6);

    writer ws[WRITERS];
    memset(ws, 0, sizeof(ws));
    atomic_store(&stop_writers, false);
    for (int i = 0; i < WRITERS; i++) {
        ws[i].index = (unsigned)i;
        ws[i].start_us = malloc(SAMPLES_CAP * sizeof(uint64_t));
        ws[i].lat_us = malloc(SAMPLES_CAP * sizeof(uint32_t));
        assert_non_null(ws[i].start_us);
        assert_non_null(ws[i].lat_us);
        assert_int_equal(pthread_create(&ws[i].th, NULL, writer_main, &ws[i]), 0);
    }
    /* Warm up: the writers' connections, the allocator, the map. */
    rss warm;
    sample_until((uint64_t)h_now_us() + 1000000u, &warm);

    uint64_t base_from[ROUNDS], base_to[ROUNDS], stall_from[ROUNDS], stall_to[ROUNDS];
    long long base_cpu[ROUNDS], stall_cpu[ROUNDS], base_wait[ROUNDS], stall_wait[ROUNDS];
    rss base_rss[ROUNDS], stall_rss[ROUNDS];
    es_stats st;
    for (int r = 0; r < ROUNDS; r++) {
        base_from[r] = (uint64_t)h_now_us();
        base_cpu[r] = h_proc_cpu_ticks(esd.pid);
        base_wait[r] = h_proc_wait_us(esd.pid);
        sample_until(base_from[r] + WINDOW_US, &base_rss[r]);
        base_to[r] = (uint64_t)h_now_us();
        base_cpu[r] = h_proc_cpu_ticks(esd.pid) - base_cpu[r];
        base_wait[r] = h_proc_wait_us(esd.pid) - base_wait[r];

        int fd = stalled_subscriber();
        sample_until((uint64_t)h_now_us() + SETTLE_US, &stall_rss[r]);
        stall_from[r] = (uint64_t)h_now_us();
        stall_cpu[r] = h_proc_cpu_ticks(esd.pid);
        stall_wait[r] = h_proc_wait_us(esd.pid);
        sample_until(stall_from[r] + WINDOW_US, &stall_rss[r]);
        stall_to[r] = (uint64_t)h_now_us();
        stall_cpu[r] = h_proc_cpu_ticks(esd.pid) - stall_cpu[r];
        stall_wait[r] = h_proc_wait_us(esd.pid) - stall_wait[r];
        /* The stalled subscriber is still there (neither dropped nor
         * closed: it simply lags). */
        assert_int_equal(es_stats_get(c, &st), ES_OK);
        assert_int_equal(st.subscriptions, 1);
        close(fd);
    }
    atomic_store(&stop_writers, true);
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(ws[i].th, NULL);
        if (ws[i].error[0] != '\0') {
            fail_msg("writer %d: %s", i, ws[i].error);
        }
    }

    uint32_t p_base[ROUNDS], p_stall[ROUNDS];
    size_t n_base = 0, n_stall = 0;
    long long cpu_base = 0, cpu_stall = 0;
    long worst_anon = 0, worst_vm = 0;
    for (int r = 0; r < ROUNDS; r++) {
        size_t nb = 0, ns = 0;
        p_base[r] = p99_between(ws, base_from[r], base_to[r], &nb);
        p_stall[r] = p99_between(ws, stall_from[r], stall_to[r], &ns);
        long d_anon = stall_rss[r].anon_kb - base_rss[r].anon_kb;
        long d_vm = stall_rss[r].vm_kb - base_rss[r].vm_kb;
        worst_anon = d_anon > worst_anon ? d_anon : worst_anon;
        worst_vm = d_vm > worst_vm ? d_vm : worst_vm;
        printf("stalled: round %d: append p99 %u us without (%zu appends, esd waited %lld ms for a "
               "CPU), %u us with the stalled subscriber (%zu appends, waited %lld ms); esd "
               "RssAnon %ld -> %ld kB (%+ld), VmRSS %ld -> %ld kB (%+ld)\n",
               r + 1, p_base[r], nb, base_wait[r] / 1000, p_stall[r], ns, stall_wait[r] / 1000,
               base_rss[r].anon_kb, stall_rss[r].anon_kb, d_anon, base_rss[r].vm_kb,
               stall_rss[r].vm_kb, d_vm);
        assert_true(nb > 100 && ns > 100);
        n_base += nb;
        n_stall += ns;
        cpu_base += base_cpu[r];
        cpu_stall += stall_cpu[r];
    }
    uint32_t mb = median(p_base, ROUNDS), ms = median(p_stall, ROUNDS);
    long bound_kb = (long)(MAX_OUTPUT + 4096u) / 1024;
    printf("stalled: median append p99: %u us without, %u us with the stalled subscriber (%.2fx); "
           "appends %zu without, %zu with\n",
           mb, ms, mb ? (double)ms / mb : 0.0, n_base, n_stall);
    double tick_ms = 1000.0 / (double)sysconf(_SC_CLK_TCK);
    double cpu_b = n_base ? (double)cpu_base * tick_ms * 1000.0 / (double)n_base : 0.0;
    double cpu_s = n_stall ? (double)cpu_stall * tick_ms * 1000.0 / (double)n_stall : 0.0;
    printf(
        "stalled: esd CPU per 1000 appends: %.1f ms without, %.1f ms with the stalled subscriber\n",
        cpu_b, cpu_s);
    printf("stalled: largest growth while stalled: RssAnon %+ld kB (bound %ld kB = "
           "--max-output-bytes + one page), VmRSS %+ld kB\n",
           worst_anon, bound_kb, worst_vm);
    printf("stalled: target p99 within 1.5x: %s on this run\n",
           (uint64_t)ms * 2 <= (uint64_t)mb * 3 ? "met" : "NOT met");
    for (int i = 0; i < WRITERS; i++) {
        free(ws[i].start_us);
        free(ws[i].lat_us);
    }
    es_client_destroy(c);
    esd_end(&esd, 10000);
    /* Under ASan/TSan esd's heap holds quarantined and shadow memory: the
     * RSS bound is meaningful only in a plain build (meson sets
     * ESD_SANITIZED to the build's b_sanitize). */
    const char *san = getenv("ESD_SANITIZED");
    if (san && *san && strcmp(san, "none") != 0) {
        printf("stalled: sanitizer build (%s): the RSS bound is not asserted\n", san);
    } else {
        assert_true(worst_anon <= bound_kb);
    }
    assert_true((uint64_t)ms <= (uint64_t)mb * 5 + 5000);
    assert_true(cpu_s <= cpu_b * 1.5);
    assert_true(n_stall * 2 >= n_base);
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
        cmocka_unit_test_teardown(test_stalled_subscriber, teardown),
    };
    return cmocka_run_group_tests_name("subs_stalled", tests, NULL, NULL);
}

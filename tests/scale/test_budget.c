/*
 * The memory budget (--max-memory). Subscribers to the whole log from its
 * start that never read, and readers pipelining full-page reads without
 * reading the replies, would each make esd hold up to --max-output-bytes
 * (16 MiB) — 30 of them ~500 MiB. With --max-memory 64M:
 *
 * - esd's RssAnon stays under its level before the attack + the budget +
 *   64 MiB, sampled throughout;
 * - a well-behaved client on another connection has every ping answered;
 * - every never-reading subscriber that esd paused holding its share
 *   beyond --slow-consumer-timeout gets a SubscriptionDropped with reason
 *   SLOW_CONSUMER (read once it starts reading) and is then closed; one
 *   that esd gave nothing yet (pages and batches stop for everyone at 1.5x
 *   the budget) is no slow consumer: once it reads, it gets the whole log,
 *   in order, and no drop;
 * - afterwards esd serves new connections.
 *
 * PR: 20 subscribers + 10 readers over a 40 MiB log; long: 60 + 30 over
 * 120 MiB. RSS is not asserted in sanitizer builds.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scale_util.h"

#define REPLY_MS   10000
#define BUDGET_MIB 64
#define EVENT_SIZE 1024

static esd_proc g_esd;
static uint16_t g_metrics;

static int setup(void **state)
{
    (void)state;
    sc_raise_nofile(4096);
    static const char *const args[] = {"--sync",
                                       "none",
                                       "--max-memory",
                                       "64M",
                                       "--slow-consumer-timeout",
                                       "2",
                                       "--log-level",
                                       "info",
                                       "--metrics-listen",
                                       "127.0.0.1:0",
                                       NULL};
    if (esd_init(&g_esd, args) != 0) {
        return -1;
    }
    g_esd.nofile = 4096;
    if (esd_start(&g_esd, 10000) != 0) {
        return -1;
    }
    g_metrics = esd_metrics_port(&g_esd, 10000);
    return g_metrics ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return esd_finish(&g_esd, 10000);
}

/* events_total events of EVENT_SIZE bytes, 100 per append, 32 in flight. */
static void fill(int fd, size_t events_total)
{
    static uint8_t data[EVENT_SIZE];
    memset(data, 'd', sizeof data);
    h_ev evs[100];
    for (int i = 0; i < 100; i++) {
        evs[i] = (h_ev){.type = "Big", .data = data, .data_len = sizeof data};
    }
    size_t sent = 0, acked = 0;
    uint64_t id = 1;
    while (acked < events_total) {
        hbuf b = {0};
        while (sent < events_total && sent - acked < 3200) {
            char stream[32];
            snprintf(stream, sizeof stream, "big-%zu", sent / 100 % 50);
            h_app a = {.stream = stream, .kind = H_NO_EXPECTED, .evs = evs, .n = 100};
            h_put_append(&b, id++, &a);
            sent += 100;
        }
        if (b.len) {
            assert_int_equal(h_flush(fd, &b, REPLY_MS), H_OK);
        }
        hbuf_free(&b);
        Es__V1__Response *r = NULL;
        assert_int_equal(h_recv(fd, REPLY_MS, &r, NULL), H_OK);
        if (h_code(r) != ES_OK) {
            fail_msg("fill: %s", h_describe(r));
        }
        h_resp_free(r);
        acked += 100;
    }
}

typedef struct sub_reader {
    pthread_t th;
    int fd;
    bool dropped_slow; /* a SubscriptionDropped(SLOW_CONSUMER) arrived */
    int other_drop;    /* another reason, if any */
    bool closed;
    uint64_t events;
    uint64_t want;     /* the whole log: done when it has all of it */
    uint64_t last_pos; /* positions must come in order */
    bool disorder;
} sub_reader;

static void *sub_read_main(void *arg)
{
    sub_reader *s = arg;
    for (;;) {
        Es__V1__Response *r = NULL;
        int rv = h_recv(s->fd, 15000, &r, NULL);
        if (rv == H_CLOSED) {
            s->closed = true;
            return NULL;
        }
        if (rv != H_OK) {
            return NULL;
        }
        if (r->kind_case == ES__V1__RESPONSE__KIND_EVENTS) {
            for (size_t i = 0; i < r->events->n_events; i++) {
                s->disorder |= r->events->events[i]->position != s->last_pos + 1;
                s->last_pos = r->events->events[i]->position;
            }
            s->events += r->events->n_events;
            if (s->events >= s->want && !s->dropped_slow) {
                h_resp_free(r);
                return NULL; /* all of it, never dropped */
            }
        } else if (r->kind_case == ES__V1__RESPONSE__KIND_DROPPED) {
            if ((int)r->dropped->reason == ES_ERR_SLOW_CONSUMER) {
                s->dropped_slow = true;
            } else {
                s->other_drop = (int)r->dropped->reason;
            }
        }
        h_resp_free(r);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_budget(void **state)
{
    (void)state;
    int n_subs = sc_long() ? 60 : 20;
    int n_readers = sc_long() ? 30 : 10;
    size_t events = sc_long() ? 120000 : 40000;

    int afd = h_open(g_esd.port);
    assert_true(afd >= 0);
    fill(afd, events);
    close(afd);
    assert_true(h_server_ok(g_esd.port));
    long rss0 = sc_rss_anon_kb(g_esd.pid);

    /* Subscribers from the start that do not read. */
    sub_reader *subs = calloc((size_t)n_subs, sizeof *subs);
    assert_non_null(subs);
    for (int i = 0; i < n_subs; i++) {
        subs[i].want = events;
        subs[i].fd = h_connect_rcvbuf(g_esd.port, 4096);
        assert_true(subs[i].fd >= 0);
        assert_true(h_hello(subs[i].fd));
        hbuf b = {0};
        sc_put_subscribe(&b, 50, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL, NULL,
                         SC_FROM_START);
        assert_int_equal(h_flush(subs[i].fd, &b, REPLY_MS), H_OK);
        hbuf_free(&b);
    }
    /* Readers pipelining full-page reads without reading a reply. */
    int *readers = calloc((size_t)n_readers, sizeof *readers);
    assert_non_null(readers);
    for (int i = 0; i < n_readers; i++) {
        readers[i] = h_connect_rcvbuf(g_esd.port, 4096);
        assert_true(readers[i] >= 0);
        if (!h_hello(readers[i])) {
            esd_dump_log(&g_esd);
            fail_msg("reader %d: no hello", i);
        }
        hbuf b = {0};
        for (int k = 0; k < 64; k++) {
            h_put_read_all(&b, 100 + (uint64_t)k, 1, false, 4096, NULL, NULL, NULL);
        }
        assert_true(h_send_some(readers[i], b.p, b.len) >= 0);
        hbuf_free(&b);
    }

    /* A well-behaved client pings while RSS is sampled, for twice the
     * slow-consumer timeout and more. */
    int pfd = h_open(g_esd.port);
    assert_true(pfd >= 0);
    long peak = rss0;
    /* What esd counts, by kind, at the highest total seen (every 64 pings). */
    double seen_total = 0, at_out = 0, at_in = 0, at_pending = 0;
    int pings = 0;
    enum { MAX_RTT = 200000 };
    int64_t *rtt = calloc(MAX_RTT, sizeof *rtt);
    assert_non_null(rtt);
    /* Long enough for every subscriber to be paused past the timeout
     * (slower in sanitizer builds, which reach the budget later). */
    int64_t until = h_now_ms() + (h_sanitized() ? 20000 : 8000);
    while (h_now_ms() < until) {
        hbuf b = {0};
        h_put_ping(&b, 1000 + (uint64_t)pings, "p", 1);
        int64_t t0 = h_now_us();
        assert_int_equal(h_flush(pfd, &b, REPLY_MS), H_OK);
        hbuf_free(&b);
        Es__V1__Response *r = NULL;
        if (h_recv(pfd, REPLY_MS, &r, NULL) != H_OK) {
            fail_msg("ping %d: no reply during the attack", pings);
        }
        assert_int_equal(r->kind_case, ES__V1__RESPONSE__KIND_PONG);
        h_resp_free(r);
        if (pings < MAX_RTT) {
            rtt[pings] = h_now_us() - t0;
        }
        pings++;
        long rss = sc_rss_anon_kb(g_esd.pid);
        peak = rss > peak ? rss : peak;
        if (pings % 64 == 0) {
            double o = sc_metric(g_metrics, "esd_memory_bytes{kind=\"output\"}");
            double in = sc_metric(g_metrics, "esd_memory_bytes{kind=\"input\"}");
            double pe = sc_metric(g_metrics, "esd_memory_bytes{kind=\"pending\"}");
            if (o + in + pe > seen_total) {
                seen_total = o + in + pe;
                at_out = o;
                at_in = in;
                at_pending = pe;
            }
        }
    }
    long bound = rss0 + (BUDGET_MIB + 64) * 1024;
    int nr = pings < MAX_RTT ? pings : MAX_RTT;
    qsort(rtt, (size_t)nr, sizeof *rtt, cmp_i64);
    print_message("    %d subscribers + %d readers not reading: RssAnon %ld kB before, peak "
                  "%ld kB (bound %ld kB); %d pings answered, round trip p50 %.2f ms, p99 "
                  "%.2f ms, max %.2f ms\n",
                  n_subs, n_readers, rss0, peak, bound, pings, (double)rtt[nr / 2] / 1000.0,
                  (double)rtt[(size_t)nr * 99 / 100] / 1000.0, (double)rtt[nr - 1] / 1000.0);
    print_message("    counted by esd at its highest: output %.1f MiB, input %.1f MiB, pending "
                  "%.1f MiB\n",
                  at_out / 1048576.0, at_in / 1048576.0, at_pending / 1048576.0);
    free(rtt);
    if (!h_sanitized() && peak > bound) {
        esd_dump_log(&g_esd);
        fail_msg("esd's RssAnon reached %ld kB; budget bound %ld kB", peak, bound);
    }

    /* The subscribers read now: each finds SLOW_CONSUMER, then the close. */
    for (int i = 0; i < n_subs; i++) {
        pthread_create(&subs[i].th, NULL, sub_read_main, &subs[i]);
    }
    int slow = 0, whole = 0;
    for (int i = 0; i < n_subs; i++) {
        pthread_join(subs[i].th, NULL);
        slow += subs[i].dropped_slow;
        whole += !subs[i].dropped_slow && subs[i].events == events;
        if (subs[i].other_drop) {
            fail_msg("subscriber %d dropped with reason %d", i, subs[i].other_drop);
        }
        if (subs[i].disorder) {
            fail_msg("subscriber %d: positions out of order or with a gap", i);
        }
        close(subs[i].fd);
    }
    print_message("    %d of %d subscribers dropped with SLOW_CONSUMER, %d got the whole log "
                  "without a drop\n",
                  slow, n_subs, whole);
    if (slow + whole != n_subs || slow == 0) {
        esd_dump_log(&g_esd);
    }
    assert_true(slow > 0);
    assert_int_equal(slow + whole, n_subs);
    for (int i = 0; i < n_readers; i++) {
        close(readers[i]);
    }
    close(pfd);
    assert_true(h_server_ok(g_esd.port));
    free(subs);
    free(readers);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_budget, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

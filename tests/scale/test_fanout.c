/*
 * Fan-out: many idle subscriptions on categories that receive nothing, and
 * a handful of subscriptions of every kind that do. What a user depends
 * on: each subscription gets exactly the events its target matches — no
 * more (an idle one gets nothing but its SubscribeOk and CaughtUp), no
 * fewer (a prefix or category subscription idle through thousands of
 * unrelated commits still gets the one that matches), in order.
 *
 * PR: 20 connections x 64 idle subscriptions; long: 313 x 64 (20,032).
 *
 * Shared batches: many subscriptions to the whole log from its start, all
 * at the same position, then live appends. Each gets every event exactly
 * once, in order, with its caught-up marker; and esd reads each batch from
 * the store once for all the subscriptions at that position, not once per
 * subscription: esd_subscription_batches_total{source="shared"} is at
 * least 4x {source="store"} (measured: ~30x).
 * PR: 8 connections x 32 subscriptions over 3,000 events + 300 live;
 * long: 16 x 64 (1,024) over 20,000 + 2,000.
 *
 * Scattered subscribers: the same, but every subscription starts at a
 * position of its own, spread over the log; the batches are shared all
 * the same (test_fanout_scattered).
 */
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scale_util.h"

#define PER_CONN 64
#define REPLY_MS 10000

static esd_proc g_esd;
static uint16_t g_metrics;

static int setup(void **state)
{
    (void)state;
    sc_raise_nofile(4096);
    static const char *const args[] = {"--sync", "none", "--log-level", "warn", NULL};
    if (esd_init(&g_esd, args) != 0) {
        return -1;
    }
    g_esd.nofile = 4096;
    return esd_start(&g_esd, 10000);
}

static int setup_metrics(void **state)
{
    (void)state;
    sc_raise_nofile(4096);
    static const char *const args[] = {"--sync",           "none",        "--log-level", "info",
                                       "--metrics-listen", "127.0.0.1:0", NULL};
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

/* What one watched subscription must receive. */
typedef struct watch {
    uint64_t id;
    int target;
    const char *name;
    uint64_t want; /* events */
    uint64_t got;
    uint64_t last_pos;
    bool caught_up;
} watch;

static void append_window(int fd, const char *stream, const char *type, size_t from, size_t n,
                          uint64_t id0);

/* Append n one-event requests (to other-<i>, or to stream), 500 in flight at most. */
static void append_n(int fd, const char *stream, const char *type, size_t n, uint64_t id0)
{
    for (size_t done = 0; done < n; done += 500) {
        size_t k = n - done < 500 ? n - done : 500;
        append_window(fd, stream, type, done, k, id0 + done);
    }
}

static void append_window(int fd, const char *stream, const char *type, size_t from, size_t n,
                          uint64_t id0)
{
    hbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        h_ev ev = {.type = type, .data = "x", .data_len = 1};
        h_app a = {.stream = stream, .kind = H_NO_EXPECTED, .evs = &ev, .n = 1};
        char name[64];
        if (!stream) {
            snprintf(name, sizeof name, "other-%zu", from + i);
            a.stream = name;
        }
        h_put_append(&b, id0 + i, &a);
    }
    assert_int_equal(h_flush(fd, &b, REPLY_MS), H_OK);
    hbuf_free(&b);
    for (size_t i = 0; i < n; i++) {
        Es__V1__Response *r = NULL;
        assert_int_equal(h_recv(fd, REPLY_MS, &r, NULL), H_OK);
        if (h_code(r) != ES_OK) {
            fail_msg("append: %s", h_describe(r));
        }
        h_resp_free(r);
    }
}

static void test_fanout(void **state)
{
    (void)state;
    int idle_conns = sc_long() ? 313 : 20;
    int *idle = calloc((size_t)idle_conns, sizeof *idle);
    assert_non_null(idle);

    /* The idle subscriptions: categories nobody writes to. */
    for (int c = 0; c < idle_conns; c++) {
        idle[c] = h_open(g_esd.port);
        assert_true(idle[c] >= 0);
        hbuf b = {0};
        for (int i = 0; i < PER_CONN; i++) {
            char name[32];
            snprintf(name, sizeof name, "idle%d", c * PER_CONN + i);
            sc_put_subscribe(&b, 100 + (uint64_t)i,
                             ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY, name,
                             SC_FROM_END);
        }
        assert_int_equal(h_flush(idle[c], &b, REPLY_MS), H_OK);
        hbuf_free(&b);
    }

    /* The watched ones, one of every kind, on one connection. */
    watch w[] = {
        {1, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL, NULL, 0, 0, 0, false},
        {2, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM, "hit-1", 1, 0, 0, false},
        {3, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_CATEGORY, "hit", 2, 0, 0, false},
        {4, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_EVENT_TYPE, "HitType", 2, 0, 0, false},
        {5, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM_PREFIX, "hit-1", 1, 0, 0, false},
        {6, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_STREAM_PREFIX, "zz", 0, 0, 0, false},
    };
    size_t nw = sizeof w / sizeof w[0];
    int wfd = h_open(g_esd.port);
    assert_true(wfd >= 0);
    hbuf b = {0};
    for (size_t i = 0; i < nw; i++) {
        sc_put_subscribe(&b, w[i].id, w[i].target, w[i].name, SC_FROM_END);
    }
    assert_int_equal(h_flush(wfd, &b, REPLY_MS), H_OK);
    hbuf_free(&b);

    /* Thousands of unrelated commits, then the few that match. */
    size_t unrelated = sc_long() ? 20000 : 3000;
    int afd = h_open(g_esd.port);
    assert_true(afd >= 0);
    append_n(afd, NULL, "Other", unrelated, 1000);
    append_n(afd, "hit-1", "HitType", 1, 900);
    append_n(afd, "hit-2", "Other", 1, 901);
    append_n(afd, "zebra-1", "HitType", 1, 902);
    uint64_t head = h_head(g_esd.port);
    assert_true(head != UINT64_MAX);
    w[0].want = unrelated + 3;

    /* Collect the watched pushes until the whole-log one reaches the head
     * and every other has its count. */
    int64_t deadline = h_now_ms() + 30000;
    for (;;) {
        bool done = w[0].last_pos == head;
        for (size_t i = 1; i < nw; i++) {
            done = done && w[i].got >= w[i].want && w[i].caught_up;
        }
        if (done || h_now_ms() > deadline) {
            break;
        }
        Es__V1__Response *r = NULL;
        int rv = h_recv(wfd, 1000, &r, NULL);
        if (rv == H_TIMEOUT) {
            continue;
        }
        assert_int_equal(rv, H_OK);
        watch *x = NULL;
        for (size_t i = 0; i < nw; i++) {
            x = w[i].id == r->id ? &w[i] : x;
        }
        if (!x) {
            fail_msg("a push for unknown id %llu", (unsigned long long)r->id);
        }
        if (r->kind_case == ES__V1__RESPONSE__KIND_EVENTS) {
            for (size_t i = 0; i < r->events->n_events; i++) {
                uint64_t pos = r->events->events[i]->position;
                if (pos <= x->last_pos) {
                    fail_msg("subscription %llu: position %llu after %llu",
                             (unsigned long long)x->id, (unsigned long long)pos,
                             (unsigned long long)x->last_pos);
                }
                x->last_pos = pos;
                x->got++;
            }
        } else if (r->kind_case == ES__V1__RESPONSE__KIND_CAUGHT_UP) {
            x->caught_up = true;
        } else if (r->kind_case != ES__V1__RESPONSE__KIND_SUBSCRIBED) {
            fail_msg("subscription %llu: %s", (unsigned long long)x->id, h_describe(r));
        }
        h_resp_free(r);
    }
    /* Anything late would show up now. */
    assert_int_equal(sc_drain(wfd, 300), 0);
    for (size_t i = 0; i < nw; i++) {
        print_message("    subscription %llu (%s): %llu of %llu events\n",
                      (unsigned long long)w[i].id, w[i].name ? w[i].name : "all",
                      (unsigned long long)w[i].got, (unsigned long long)w[i].want);
        assert_int_equal(w[i].got, w[i].want);
    }

    /* Idle subscriptions: exactly their SubscribeOk and CaughtUp. */
    for (int c = 0; c < idle_conns; c++) {
        int frames = 0;
        for (;;) {
            Es__V1__Response *r = NULL;
            int rv = h_recv(idle[c], frames < 2 * PER_CONN ? REPLY_MS : 100, &r, NULL);
            if (rv == H_TIMEOUT) {
                break;
            }
            assert_int_equal(rv, H_OK);
            if (r->kind_case != ES__V1__RESPONSE__KIND_SUBSCRIBED &&
                r->kind_case != ES__V1__RESPONSE__KIND_CAUGHT_UP) {
                fail_msg("idle connection %d: %s", c, h_describe(r));
            }
            h_resp_free(r);
            frames++;
        }
        assert_int_equal(frames, 2 * PER_CONN);
        close(idle[c]);
    }
    print_message("    %d idle subscriptions over %d connections got nothing; %zu unrelated "
                  "events\n",
                  idle_conns * PER_CONN, idle_conns, unrelated);
    free(idle);
    close(wfd);
    close(afd);
}

/* One subscription of the shared test: positions seen so far. */
typedef struct shared_watch {
    uint64_t got;
    uint64_t last_pos;
    bool caught_up;
} shared_watch;

/* Read what is there on the connections (each frame within 1 s of the
 * previous one) until every subscription has reached head. */
static void shared_collect(int *fds, int n_conns, shared_watch *w, int per_conn, uint64_t head)
{
    int64_t deadline = h_now_ms() + 60000;
    for (;;) {
        bool done = true;
        for (int i = 0; i < n_conns * per_conn && done; i++) {
            done = w[i].last_pos == head && w[i].caught_up;
        }
        if (done) {
            return;
        }
        if (h_now_ms() > deadline) {
            fail_msg("the subscriptions did not reach position %" PRIu64 " within 60 s", head);
        }
        struct pollfd pfd[64];
        for (int c = 0; c < n_conns; c++) {
            pfd[c] = (struct pollfd){.fd = fds[c], .events = POLLIN};
        }
        assert_true(poll(pfd, (nfds_t)n_conns, 1000) >= 0);
        for (int c = 0; c < n_conns; c++) {
            if (!(pfd[c].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            /* Several frames per turn: what one poll saw and more. */
            for (int k = 0; k < 64; k++) {
                Es__V1__Response *r = NULL;
                int rv = h_recv(fds[c], k == 0 ? REPLY_MS : 0, &r, NULL);
                if (rv == H_TIMEOUT) {
                    break;
                }
                assert_int_equal(rv, H_OK);
                if (r->id < 1 || r->id > (uint64_t)per_conn) {
                    fail_msg("a push for unknown id %" PRIu64, r->id);
                }
                shared_watch *x = &w[c * per_conn + (int)r->id - 1];
                if (r->kind_case == ES__V1__RESPONSE__KIND_EVENTS) {
                    for (size_t i = 0; i < r->events->n_events; i++) {
                        uint64_t pos = r->events->events[i]->position;
                        if (pos != x->last_pos + 1) {
                            fail_msg("connection %d subscription %" PRIu64 ": position %" PRIu64
                                     " after %" PRIu64,
                                     c, r->id, pos, x->last_pos);
                        }
                        x->last_pos = pos;
                        x->got++;
                    }
                } else if (r->kind_case == ES__V1__RESPONSE__KIND_CAUGHT_UP) {
                    x->caught_up = true;
                } else if (r->kind_case != ES__V1__RESPONSE__KIND_SUBSCRIBED) {
                    fail_msg("connection %d subscription %" PRIu64 ": %s", c, r->id, h_describe(r));
                }
                h_resp_free(r);
            }
        }
    }
}

static void test_fanout_shared(void **state)
{
    (void)state;
    int n_conns = sc_long() ? 16 : 8;
    int per_conn = sc_long() ? 64 : 32;
    size_t history = sc_long() ? 20000 : 3000;
    size_t live = sc_long() ? 2000 : 300;
    int n = n_conns * per_conn;

    int afd = h_open(g_esd.port);
    assert_true(afd >= 0);
    append_n(afd, NULL, "Other", history, 1000);

    int *fds = calloc((size_t)n_conns, sizeof *fds);
    shared_watch *w = calloc((size_t)n, sizeof *w);
    assert_non_null(fds);
    assert_non_null(w);
    for (int c = 0; c < n_conns; c++) {
        fds[c] = h_open(g_esd.port);
        assert_true(fds[c] >= 0);
        hbuf b = {0};
        for (int i = 0; i < per_conn; i++) {
            sc_put_subscribe(&b, 1 + (uint64_t)i, ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL,
                             NULL, SC_FROM_START);
        }
        assert_int_equal(h_flush(fds[c], &b, REPLY_MS), H_OK);
        hbuf_free(&b);
    }
    /* History: every subscription from position 1 to the head. */
    uint64_t head = h_head(g_esd.port);
    assert_int_equal(head, history);
    shared_collect(fds, n_conns, w, per_conn, head);

    /* Live: one-event appends in windows of 100, read as they come. */
    for (size_t done = 0; done < live; done += 100) {
        append_window(afd, "live-1", "Live", done, 100, 100000 + done);
    }
    head = h_head(g_esd.port);
    assert_int_equal(head, history + live);
    shared_collect(fds, n_conns, w, per_conn, head);
    for (int c = 0; c < n_conns; c++) {
        assert_int_equal(sc_drain(fds[c], 300), 0); /* nothing more, nothing twice */
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(w[i].got, history + live);
    }

    double from_store = sc_metric(g_metrics, "esd_subscription_batches_total{source=\"store\"}");
    double shared = sc_metric(g_metrics, "esd_subscription_batches_total{source=\"shared\"}");
    print_message("    %d whole-log subscriptions over %d connections: %zu + %zu events each, "
                  "exactly once, in order; batches read from the store %.0f, shared %.0f\n",
                  n, n_conns, history, live, from_store, shared);
    assert_true(from_store > 0);
    if (shared < 4 * from_store) {
        esd_dump_log(&g_esd);
        fail_msg("the store was read for %.0f batches and %.0f were shared: the subscriptions "
                 "at one position should share one read",
                 from_store, shared);
    }
    for (int c = 0; c < n_conns; c++) {
        close(fds[c]);
    }
    close(afd);
    free(fds);
    free(w);
}

/*
 * Scattered subscribers: whole-log subscriptions that start at positions
 * spread over the log (as subscribers that fell behind end up), served in
 * the same passes. Each gets every event from its own position on,
 * exactly once, in order; and the batches are shared although no two
 * subscriptions start at the same position (a subscription inside a batch
 * read for another gets its tail; one behind reads only up to where a
 * batch of the pass begins): shared batches are at least twice those
 * read from the store (one read per subscription and batch before).
 * PR: 8 connections x 32 subscriptions over 3,000 events; long: 16 x 64
 * over 20,000.
 */
static void test_fanout_scattered(void **state)
{
    (void)state;
    int n_conns = sc_long() ? 16 : 8;
    int per_conn = sc_long() ? 64 : 32;
    size_t history = sc_long() ? 20000 : 3000;
    int n = n_conns * per_conn;

    int afd = h_open(g_esd.port);
    assert_true(afd >= 0);
    append_n(afd, NULL, "Other", history, 1000);
    uint64_t head = h_head(g_esd.port);
    assert_int_equal(head, history);

    int *fds = calloc((size_t)n_conns, sizeof *fds);
    shared_watch *w = calloc((size_t)n, sizeof *w);
    uint64_t *after = calloc((size_t)n, sizeof *after);
    assert_non_null(fds);
    assert_non_null(w);
    assert_non_null(after);
    /* Start positions: all different, neighbours on different connections. */
    for (int i = 0; i < n; i++) {
        int c = i % n_conns, k = i / n_conns;
        after[c * per_conn + k] = (uint64_t)i * (history - 1) / (uint64_t)n;
    }
    double store0 = sc_metric(g_metrics, "esd_subscription_batches_total{source=\"store\"}");
    double shared0 = sc_metric(g_metrics, "esd_subscription_batches_total{source=\"shared\"}");
    for (int c = 0; c < n_conns; c++) {
        fds[c] = h_open(g_esd.port);
        assert_true(fds[c] >= 0);
        hbuf b = {0};
        for (int k = 0; k < per_conn; k++) {
            Es__V1__Subscribe sub = ES__V1__SUBSCRIBE__INIT;
            sub.target = ES__V1__SUBSCRIBE_TARGET__SUBSCRIBE_TARGET_ALL;
            sub.after = after[c * per_conn + k];
            Es__V1__Request req = ES__V1__REQUEST__INIT;
            req.id = 1 + (uint64_t)k;
            req.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
            req.subscribe = &sub;
            h_put_req(&b, &req);
            w[c * per_conn + k].last_pos = after[c * per_conn + k];
        }
        assert_int_equal(h_flush(fds[c], &b, REPLY_MS), H_OK);
        hbuf_free(&b);
    }
    shared_collect(fds, n_conns, w, per_conn, head);
    for (int c = 0; c < n_conns; c++) {
        assert_int_equal(sc_drain(fds[c], 300), 0); /* nothing more, nothing twice */
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(w[i].got, history - after[i]);
    }
    double from_store =
        sc_metric(g_metrics, "esd_subscription_batches_total{source=\"store\"}") - store0;
    double shared =
        sc_metric(g_metrics, "esd_subscription_batches_total{source=\"shared\"}") - shared0;
    print_message("    %d whole-log subscriptions from %d different positions over %d "
                  "connections, each from its own on, exactly once, in order; batches read "
                  "from the store %.0f, shared %.0f\n",
                  n, n, n_conns, from_store, shared);
    assert_true(from_store > 0);
    if (shared < 2 * from_store) {
        esd_dump_log(&g_esd);
        fail_msg("the store was read for %.0f batches and %.0f were shared: subscriptions "
                 "inside a batch read this pass should get its tail",
                 from_store, shared);
    }
    for (int c = 0; c < n_conns; c++) {
        close(fds[c]);
    }
    close(afd);
    free(fds);
    free(w);
    free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fanout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fanout_shared, setup_metrics, teardown),
        cmocka_unit_test_setup_teardown(test_fanout_scattered, setup_metrics, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

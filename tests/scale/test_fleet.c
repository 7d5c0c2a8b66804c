/*
 * Fleets: many concurrent connections. esd raises its own descriptor
 * limit (started here with a soft limit of 1,024 and a hard limit above
 * N: it must take all N anyway). Asserted: N connections complete their
 * hello and are served; an idle connection costs at most 16 KiB of esd's
 * RssAnon; a client pinging throughout a burst of N connects has every
 * ping answered (the longest round trip is printed, not asserted); after
 * they close, esd's descriptor count is back where it was.
 *
 * PR: N = 2,000; long: N = 10,000.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "scale_util.h"

#define REPLY_MS 20000

static esd_proc g_esd;
static int g_n;

static int setup(void **state)
{
    (void)state;
    g_n = sc_long() ? 10000 : 2000;
    unsigned long have = sc_raise_nofile((unsigned long)g_n + 512);
    if (have < (unsigned long)g_n + 512) {
        print_message("    descriptor limit %lu: too low for %d connections\n", have, g_n);
        return -1;
    }
    static char maxconn[32];
    snprintf(maxconn, sizeof maxconn, "%d", g_n + 100);
    /* The whole fleet comes from 127.0.0.1, and the burst has up to N
     * connections waiting for their hello at once: the per-source cap on
     * those (--max-prehello, a defence against floods from one address)
     * is raised to N, as an operator would for clients behind one NAT. */
    const char *args[] = {"--sync", "none",           "--log-level", "warn", "--max-connections",
                          maxconn,  "--max-prehello", maxconn,       NULL};
    if (esd_init(&g_esd, args) != 0) {
        return -1;
    }
    /* A soft limit of 1,024 (the usual default) and a hard one above N:
     * esd raises the soft limit itself. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct rlimit child = {1024, rl.rlim_max};
    setrlimit(RLIMIT_NOFILE, &child);
    int rv = esd_start(&g_esd, 10000);
    setrlimit(RLIMIT_NOFILE, &rl);
    return rv;
}

static int teardown(void **state)
{
    (void)state;
    return esd_finish(&g_esd, 20000);
}

typedef struct pinger {
    pthread_t th;
    int fd;
    atomic_bool stop;
    int pings;
    int failed;
    int64_t max_us;
} pinger;

static void *ping_main(void *arg)
{
    pinger *p = arg;
    while (!atomic_load(&p->stop)) {
        hbuf b = {0};
        h_put_ping(&b, 1 + (uint64_t)p->pings, "p", 1);
        int64_t t0 = h_now_us();
        if (h_flush(p->fd, &b, REPLY_MS) != H_OK) {
            p->failed++;
            hbuf_free(&b);
            return NULL;
        }
        hbuf_free(&b);
        Es__V1__Response *r = NULL;
        if (h_recv(p->fd, REPLY_MS, &r, NULL) != H_OK ||
            r->kind_case != ES__V1__RESPONSE__KIND_PONG) {
            p->failed++;
            h_resp_free(r);
            return NULL;
        }
        h_resp_free(r);
        int64_t dt = h_now_us() - t0;
        p->max_us = dt > p->max_us ? dt : p->max_us;
        p->pings++;
    }
    return NULL;
}

static void test_fleet(void **state)
{
    (void)state;
    int *fds = calloc((size_t)g_n, sizeof *fds);
    assert_non_null(fds);
    pinger p = {.fd = h_open(g_esd.port)};
    assert_true(p.fd >= 0);
    int fd0 = h_proc_fd_count(g_esd.pid);
    long rss0 = sc_rss_anon_kb(g_esd.pid);
    pthread_create(&p.th, NULL, ping_main, &p);

    /* The burst: N connects as fast as this process can make them, each
     * sending its hello at once (within the handshake deadline). */
    hbuf hello = {0};
    h_put_hello(&hello, 1, 1);
    int64_t t0 = h_now_ms();
    for (int i = 0; i < g_n; i++) {
        fds[i] = h_connect(g_esd.port);
        if (fds[i] < 0) {
            fail_msg("connection %d of %d refused", i, g_n);
        }
        assert_int_equal(h_send_all(fds[i], hello.p, hello.len, REPLY_MS), H_OK);
    }
    int64_t burst_ms = h_now_ms() - t0;
    /* Every one of them is served. */
    for (int i = 0; i < g_n; i++) {
        Es__V1__Response *r = NULL;
        assert_int_equal(h_recv(fds[i], REPLY_MS, &r, NULL), H_OK);
        if (r->kind_case != ES__V1__RESPONSE__KIND_HELLO) {
            fail_msg("connection %d: %s", i, h_describe(r));
        }
        h_resp_free(r);
    }
    hbuf_free(&hello);
    atomic_store(&p.stop, true);
    pthread_join(p.th, NULL);
    assert_int_equal(p.failed, 0);
    assert_true(h_server_ok(g_esd.port));
    long rss1 = sc_rss_anon_kb(g_esd.pid);
    long per = (rss1 - rss0) * 1024 / g_n;
    print_message("    %d connections: burst of connects %lld ms; longest ping round trip "
                  "meanwhile %.1f ms over %d pings; RssAnon %ld -> %ld kB, %ld bytes per "
                  "idle connection\n",
                  g_n, (long long)burst_ms, (double)p.max_us / 1000.0, p.pings, rss0, rss1, per);
    if (!h_sanitized() && per > 16 * 1024) {
        fail_msg("an idle connection costs %ld bytes of RssAnon (bound 16 KiB)", per);
    }
    for (int i = 0; i < g_n; i++) {
        close(fds[i]);
    }
    close(p.fd);
    /* The descriptors come back (polled: closes are seen one by one). */
    int fd1 = h_proc_fd_count(g_esd.pid);
    int64_t deadline = h_now_ms() + 10000;
    while (fd1 > fd0 && h_now_ms() < deadline) {
        assert_true(h_server_ok(g_esd.port));
        fd1 = h_proc_fd_count(g_esd.pid);
    }
    assert_true(fd1 <= fd0);
    free(fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fleet, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

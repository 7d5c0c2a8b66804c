/*
 * Metrics and logs without sockets: the loop's figures (requests by kind,
 * appends by result), the Prometheus text rendered from a real store and
 * writer, and the slow-request log line with its connection id and
 * duration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"
#include "server_harness.h"

static void send_append(harness *h, uint64_t id, const char *stream, Es__V1__ExpectedKind kind)
{
    Es__V1__ProposedEvent ev = ES__V1__PROPOSED_EVENT__INIT;
    ev.type.data = (uint8_t *)"Observed";
    ev.type.len = 8;
    ev.data.data = (uint8_t *)"0123456789";
    ev.data.len = 10;
    Es__V1__ProposedEvent *evs[1] = {&ev};
    Es__V1__Expected x = ES__V1__EXPECTED__INIT;
    x.kind = kind;
    Es__V1__Append a = ES__V1__APPEND__INIT;
    a.stream.data = (uint8_t *)stream;
    a.stream.len = strlen(stream);
    a.expected = &x;
    a.n_events = 1;
    a.events = evs;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_APPEND;
    r.append = &a;
    assert_int_equal(harness_send(h, &r), ES_OK);
}

static char *render(harness *h)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    metrics_render(f, &h->srv);
    fclose(f);
    return text;
}

static void test_figures(void **state)
{
    harness *h = *state;
    assert_int_equal(harness_hello(h, 1), ES_OK);
    send_append(h, 2, "obs-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM);
    harness_drain(h);
    send_append(h, 3, "obs-1", ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM); /* conflict */
    harness_drain(h);
    send_append(h, 4, "$reserved", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY); /* refused early */
    harness_drain(h);
    const loopstats *m = &h->srv.metrics;
    assert_int_equal(m->append_requests[ES_OK], 1);
    assert_int_equal(m->append_events[ES_OK], 1);
    assert_int_equal(m->append_bytes[ES_OK], 10);
    assert_int_equal(m->append_requests[ES_ERR_WRONG_EXPECTED_REVISION], 1);
    assert_int_equal(m->append_requests[ES_ERR_RESERVED_STREAM], 1);
    assert_int_equal(m->request_us[loopstats_kind_index(ES__V1__REQUEST__KIND_HELLO)].count, 1);
    assert_int_equal(m->request_us[loopstats_kind_index(ES__V1__REQUEST__KIND_APPEND)].count, 3);

    char *text = render(h);
    assert_non_null(strstr(text, "# TYPE esd_append_requests_total counter\n"));
    assert_non_null(strstr(text, "esd_append_requests_total{result=\"ok\"} 1\n"));
    assert_non_null(
        strstr(text, "esd_append_requests_total{result=\"WRONG_EXPECTED_REVISION\"} 1\n"));
    assert_non_null(strstr(text, "esd_append_bytes_total{result=\"ok\"} 10\n"));
    assert_non_null(strstr(text, "esd_request_duration_seconds_count{kind=\"hello\"} 1\n"));
    assert_non_null(strstr(text, "esd_request_duration_seconds_count{kind=\"append\"} 3\n"));
    assert_non_null(
        strstr(text, "esd_request_duration_seconds_bucket{kind=\"append\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "esd_commits_total 2\n"));
    assert_non_null(strstr(text, "esd_commit_batch_requests_bucket{le=\"1\"} 2\n"));
    assert_non_null(strstr(text, "esd_commit_duration_seconds_count 2\n"));
    assert_non_null(strstr(text, "esd_commit_sync_duration_seconds_count 2\n"));
    assert_non_null(strstr(text, "esd_head_position 1\n"));
    assert_non_null(strstr(text, "esd_ready 1\n"));
    free(text);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    hist h = {0};
    uint64_t values[] = {0, 50, 51, 1000, 10000000, 10000001, 99999999};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        hist_observe(&h, &hist_latency_us, values[i]);
    }
    assert_int_equal(h.count, 7);
    assert_int_equal(h.buckets[0], 2);                     /* <= 50 */
    assert_int_equal(h.buckets[1], 1);                     /* <= 100 */
    assert_int_equal(h.buckets[4], 1);                     /* <= 1000 */
    assert_int_equal(h.buckets[hist_latency_us.n - 1], 1); /* <= 10 s */
    assert_int_equal(h.buckets[hist_latency_us.n], 2);     /* +Inf */
    ahist a = {0};
    ahist_observe(&a, &hist_batch, 3);
    ahist_observe(&a, &hist_batch, 5000);
    hist r;
    ahist_read(&a, &r);
    assert_int_equal(r.count, 2);
    assert_int_equal(r.sum, 5003);
    assert_int_equal(r.buckets[2], 1);            /* <= 4 */
    assert_int_equal(r.buckets[hist_batch.n], 1); /* +Inf */
}

/* A request slower than --slow-request-ms: counted, and logged with its
 * connection, id, kind and duration. */
static void test_slow_request(void **state)
{
    harness *h = *state;
    h->cfg.slow_request_ms = 0;
    assert_int_equal(harness_hello(h, 1), ES_OK);
    h->cfg.slow_request_ms = 20;
    assert_int_equal(h->srv.metrics.slow_requests, 0);

    char path[] = "/tmp/esd-observe-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    send_append(h, 7, "obs-slow", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY);
    /* the append waits in the writer's completion list: its latency is at
     * least this long, whatever the machine */
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    harness_drain(h);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    assert_int_equal(h->srv.metrics.slow_requests, 1);
    char buf[4096] = "";
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "level=info msg=\"slow request\" conn=1 id=7 request=append "
                                "duration_ms="));
    /* 0 turns it off */
    h->cfg.slow_request_ms = 0;
    send_append(h, 8, "obs-slow", ES__V1__EXPECTED_KIND__EXPECTED_KIND_ANY);
    nanosleep(&ts, NULL);
    harness_drain(h);
    assert_int_equal(h->srv.metrics.slow_requests, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_figures, harness_setup, harness_teardown),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test_setup_teardown(test_slow_request, harness_setup, harness_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

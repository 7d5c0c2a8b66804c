/*
 * test_garbage — a follower refuses what it must not import.
 *
 * Design notes
 * ------------
 * One JetStream node. A primary starts relaying; the node is killed and
 * restarted before any event exists (the relay must survive an idle
 * disconnection). The primary relays 100 events and stops; a follower
 * (--max-event-bytes 4K) copies them. Then, one case at a time, the test
 * publishes a bad message straight into the stream: no headers; a payload
 * over the follower's cap; a wrong checksum; headers that disagree with
 * the payload; a position that leaves a gap; an event id already stored.
 * Each time the follower must log why, stop consuming (stats:
 * follower_halted) and keep its head; the bad message is then deleted from
 * the stream and the follower restarted. Before that, the node is killed
 * and restarted under the idle follower, which must stay up. At the end a
 * good message for the next position is imported: the refusals left
 * nothing behind.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "natsh.h"
#include "pbwire.h"
#include "rel.h"
#include "support.h"

#define STREAM "G"
#define N0     100u

static size_t put_bytes(uint8_t *p, uint32_t field, const void *data, size_t len)
{
    size_t n = pbw_put_len_header(p, field, len);
    memcpy(p + n, data, len);
    return n + len;
}

/* A packed es.v1.RecordedEvent. */
static size_t make_record(uint8_t *p, const char *stream, uint64_t rev, uint64_t pos,
                          const uint8_t id[16], size_t data_len)
{
    size_t n = 0;
    n += put_bytes(p + n, 1, stream, strlen(stream));
    if (rev) {
        n += pbw_put_varint_field(p + n, 2, rev);
    }
    n += pbw_put_varint_field(p + n, 3, pos);
    n += put_bytes(p + n, 4, id, 16);
    n += put_bytes(p + n, 5, "T", 1);
    n += pbw_put_len_header(p + n, 6, data_len);
    memset(p + n, 'x', data_len);
    n += data_len;
    n += pbw_put_varint_field(p + n, 11, 1700000000000000ull);
    return n;
}

typedef struct bad_case {
    const char *name;
    bool headers;
    uint64_t pos;        /* in the record */
    uint64_t header_pos; /* in Es-Position */
    const char *header_stream;
    size_t data_len;
    bool bad_crc;
    bool dup_id;
} bad_case;

static uint64_t publish(jsCtx *js, const bad_case *bc, const uint8_t dup[16])
{
    static uint8_t rec[256 * 1024];
    uint8_t id[16];
    es_uuid_generate(id);
    if (bc->dup_id) {
        memcpy(id, dup, 16);
    }
    size_t len = make_record(rec, "bad-1", 0, bc->pos, id, bc->data_len);
    natsMsg *m = NULL;
    natsMsg_Create(&m, "es.bad.bad-1", NULL, (const char *)rec, (int)len);
    if (bc->headers) {
        char num[24], crc[9], uuid[ES_UUID_STRLEN + 1];
        snprintf(num, sizeof num, "%" PRIu64, bc->header_pos);
        natsMsgHeader_Set(m, "Es-Position", num);
        natsMsgHeader_Set(m, "Es-Revision", "0");
        natsMsgHeader_Set(m, "Es-Stream", bc->header_stream);
        natsMsgHeader_Set(m, "Es-Type", "T");
        es_uuid_format(id, uuid);
        natsMsgHeader_Set(m, "Es-Event-Id", uuid);
        snprintf(crc, sizeof crc, "%08x", bc->bad_crc ? 0u : crc32c(0, rec, len));
        natsMsgHeader_Set(m, "Es-Crc32c", crc);
    }
    jsPubAck *pa = NULL;
    natsStatus s = js_PublishMsg(&pa, js, m, NULL, NULL);
    REL_CHECK(s == NATS_OK, "publish %s: %s", bc->name, natsStatus_GetText(s));
    uint64_t seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    return seq;
}

static es_stats stats_of(const char *address)
{
    es_client *c = rel_client(address, 10000);
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    es_client_destroy(c);
    REL_CHECK(rv == ES_OK, "stats: %s", es_strerror(rv));
    return st;
}

static bool log_has(const char *path, const char *needle, long from)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    fseek(f, from, SEEK_SET);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {NULL};
    rel_args(argc, argv, "test_garbage", names, NULL);
    natsh_require_server();
    esd_proc p, f;
    if (esd_init(&p, NULL) != 0 || esd_init(&f, NULL) != 0) {
        rel_fail("cannot make temporary directories");
    }
    natsh_cluster c;
    natsh_start(&c, 1, p.dir);
    natsConnection *nc;
    jsCtx *js;
    natsh_connect(&c, &nc, &js);

    const char *relay_args[] = {
        "--relay-nats", c.urls, "--relay-stream", STREAM, "--metrics-listen", "127.0.0.1:0", NULL};
    memcpy(p.args, relay_args, sizeof relay_args);
    int status;
    REL_CHECK(esd_start(&p, 10000) == 0, "primary did not start");
    /* NATS gone and back while the relay has published nothing yet (a
     * libnats crash once: js_PublishAsyncGetPendingList on an unused
     * context). */
    int64_t deadline = h_now_ms() + 10000;
    while (!stats_of(p.address).relay_on) {
        REL_CHECK(h_now_ms() < deadline, "no relay");
        h_sleep_ms(20);
    }
    h_sleep_ms(300); /* pacing: let the relay reach its idle loop */
    natsh_kill(&c, 0);
    h_sleep_ms(1500); /* pacing: the relay notices and retries meanwhile */
    natsh_restart(&c, 0);
    REL_CHECK(esd_alive(&p), "esd died while NATS was down");
    es_client *pc = rel_client(p.address, 10000);
    uint8_t first_id[16];
    for (uint32_t i = 0; i < N0; i++) {
        es_event e = {.type = "T", .data = "{}", .data_len = 2};
        es_err rv = es_stream_append(pc, i % 2 ? "a-1" : "b-1", (es_expected){ES_EXPECT_ANY, 0}, &e,
                                     1, NULL);
        REL_CHECK(rv == ES_OK, "append: %s", es_strerror(rv));
        if (i == 0) {
            memcpy(first_id, e.id, 16);
        }
    }
    es_client_destroy(pc);
    deadline = h_now_ms() + 30000;
    while (stats_of(p.address).relay_acked_position < N0) {
        REL_CHECK(h_now_ms() < deadline, "relay did not finish");
        h_sleep_ms(20);
    }
    REL_CHECK(natsh_metric(&p, "esd_relay_acked_position") == N0 &&
                  natsh_metric(&p, "esd_relay_lag_positions") == 0 &&
                  natsh_metric(&p, "esd_relay_connected") == 1 &&
                  natsh_metric(&p, "esd_relay_published_total") >= N0,
              "relay metrics: acked %.0f lag %.0f", natsh_metric(&p, "esd_relay_acked_position"),
              natsh_metric(&p, "esd_relay_lag_positions"));
    REL_CHECK(esd_stop(&p, SIGTERM, 10000, &status, NULL) == 0, "primary stop");

    const char *follow_args[] = {"--follow-nats",
                                 c.urls,
                                 "--follow-stream",
                                 STREAM,
                                 "--max-event-bytes",
                                 "4K",
                                 "--metrics-listen",
                                 "127.0.0.1:0",
                                 NULL};
    memcpy(f.args, follow_args, sizeof follow_args);

    /* NATS gone and back under an idle follower (before the bad messages:
     * a killed nats-server may bring deleted messages back). */
    REL_CHECK(esd_start(&f, 10000) == 0, "follower did not start");
    deadline = h_now_ms() + 30000;
    while (stats_of(f.address).head_position < N0) {
        REL_CHECK(h_now_ms() < deadline, "follower did not catch up");
        h_sleep_ms(20);
    }
    natsh_kill(&c, 0);
    h_sleep_ms(1500); /* pacing: the follower's fetches fail meanwhile */
    natsh_restart(&c, 0);
    REL_CHECK(esd_alive(&f), "the follower died while NATS was down");
    REL_CHECK(!stats_of(f.address).follower_halted, "the follower halted after a NATS restart");
    REL_CHECK(esd_stop(&f, SIGTERM, 10000, &f.status, NULL) == 0 && f.status == 0, "follower stop");

    const bad_case cases[] = {
        {"no headers", false, N0 + 1, 0, "", 10, false, false},
        {"oversized payload", true, N0 + 1, N0 + 1, "bad-1", 100 * 1024, false, false},
        {"wrong checksum", true, N0 + 1, N0 + 1, "bad-1", 10, true, false},
        {"headers disagree with the payload", true, N0 + 1, N0 + 3, "bad-1", 10, false, false},
        {"position gap", true, N0 + 2, N0 + 2, "bad-1", 10, false, false},
        {"event id already stored", true, N0 + 1, N0 + 1, "bad-1", 10, false, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bad_case *bc = &cases[k];
        long log_from = file_size(f.log_file);
        REL_CHECK(esd_start(&f, 10000) == 0, "follower did not start");
        deadline = h_now_ms() + 30000;
        while (stats_of(f.address).head_position < N0) {
            REL_CHECK(h_now_ms() < deadline, "follower did not catch up");
            h_sleep_ms(20);
        }
        uint64_t seq = publish(js, bc, first_id);
        es_stats st;
        deadline = h_now_ms() + 30000;
        while (!(st = stats_of(f.address)).follower_halted) {
            REL_CHECK(h_now_ms() < deadline, "case '%s': the follower did not halt", bc->name);
            h_sleep_ms(20);
        }
        REL_CHECK(st.head_position == N0, "case '%s': head %" PRIu64 " after a refusal", bc->name,
                  st.head_position);
        REL_CHECK(log_has(f.log_file, "refusing a message", log_from),
                  "case '%s': no log line says why", bc->name);
        REL_CHECK(natsh_metric(&f, "esd_follower_halted") == 1,
                  "case '%s': the metrics do not say halted", bc->name);
        rel_log("case '%s' (seq %" PRIu64 "): refused, consuming stopped, head kept", bc->name,
                seq);
        REL_CHECK(esd_stop(&f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
        REL_CHECK(js_DeleteMsg(js, STREAM, seq, NULL, NULL) == NATS_OK, "delete message");
    }
    /* A good message for the next position is imported after all that. */
    REL_CHECK(esd_start(&f, 10000) == 0, "follower did not start");
    bad_case good = {"good", true, N0 + 1, N0 + 1, "bad-1", 10, false, false};
    publish(js, &good, first_id);
    deadline = h_now_ms() + 30000;
    es_stats st;
    while ((st = stats_of(f.address)).head_position < N0 + 1) {
        REL_CHECK(!st.follower_halted, "the follower refused a good message");
        REL_CHECK(h_now_ms() < deadline, "the good message was not imported");
        h_sleep_ms(20);
    }
    rel_log("a good message for position %u was imported", N0 + 1);
    REL_CHECK(esd_stop(&f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    const char *check[] = {"db", "check", f.data_dir, NULL};
    char out[512];
    snprintf(out, sizeof out, "%s/check.out", f.dir);
    REL_CHECK(h_esctl(check, out, 60000) == 0, "esctl db check of the follower failed");

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsh_stop(&c);
    nats_Close();
    esd_destroy(&f);
    esd_destroy(&p);
    rel_log("PASS");
    return 0;
}

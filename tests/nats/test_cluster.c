/*
 * test_cluster — the relay and the follower against a 3-node JetStream
 * cluster.
 *
 *   test_cluster --events 100000     (suite nats)
 *
 * Design notes
 * ------------
 * 1. Leader kill: a primary esd (--sync none, for speed; the relay reads
 *    what is committed either way) relays to an R3 stream while a client
 *    appends `events` events in appends of 100. Once JetStream has
 *    acknowledged a fifth of them, the stream's leader (from the stream
 *    info's cluster leader) is killed with SIGKILL; it is restarted once the
 *    relay has gone on by another tenth under a new leader. When the relay
 *    has caught up, the copy must hold every position exactly once and in
 *    order: message i has Es-Position i and Nats-Msg-Id <store>:i, and its
 *    payload matches its checksum (natsh_verify_copy).
 * 2. kill -9 mid-relay: more events are appended, esd is killed with
 *    SIGKILL while the relay lags, restarted, and more are appended; again
 *    the copy must be exactly positions 1..head.
 * 3. Follower: a fresh esd --follow-nats catches up from the stream; its
 *    log must equal the primary's event by event (position, stream,
 *    revision, id, type, data, metadata, content type, recorded-at) and
 *    pass `esctl db check`; it refuses appends, transactions and snapshot
 *    saves with ES_ERR_FOLLOWER; a subscriber of the follower sees events
 *    appended to the primary live; the subject of an event of an awkward
 *    stream id is escaped as documented.
 * Figures printed: append, relay and follower catch-up rates.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "natsh.h"
#include "rel.h"
#include "support.h"

#define STREAM     "ESD"
#define N_STREAMS  64u
#define PER_APPEND 100u
#define MAX_DATA   200u
#define PREFIX     "acct"

static uint64_t salt;
static uint64_t next_rev[N_STREAMS];
static uint32_t next_stream;

/* Append k (<= PER_APPEND) events to stream s. */
static void append_to(const char *address, uint32_t s, uint32_t k)
{
    es_client *c = rel_client(address, 30000);
    static rel_ev evs[PER_APPEND];
    es_event e[PER_APPEND];
    for (uint32_t i = 0; i < k; i++) {
        rel_ev_make(&evs[i], salt, s, next_rev[s] + i, MAX_DATA);
        rel_ev_to_event(&evs[i], &e[i]);
    }
    char name[32];
    snprintf(name, sizeof name, PREFIX "-%u", s);
    es_err rv = es_stream_append(c, name, (es_expected){ES_EXPECT_ANY, 0}, e, k, NULL);
    REL_CHECK(rv == ES_OK, "append to %s: %s", name, es_strerror(rv));
    next_rev[s] += k;
    es_client_destroy(c);
}

/* Append n events (appends of up to PER_APPEND to one stream, round robin). */
static void append_events(const char *address, uint64_t n)
{
    es_client *c = rel_client(address, 30000);
    static rel_ev evs[PER_APPEND];
    es_event e[PER_APPEND];
    while (n > 0) {
        uint32_t s = next_stream++ % N_STREAMS;
        uint32_t k = n < PER_APPEND ? (uint32_t)n : PER_APPEND;
        for (uint32_t i = 0; i < k; i++) {
            rel_ev_make(&evs[i], salt, s, next_rev[s] + i, MAX_DATA);
            rel_ev_to_event(&evs[i], &e[i]);
            e[i].metadata = "{\"m\":1}";
            e[i].metadata_len = 7;
        }
        char name[32];
        snprintf(name, sizeof name, PREFIX "-%u", s);
        es_append_result res;
        es_err rv = es_stream_append(c, name, (es_expected){ES_EXPECT_ANY, 0}, e, k, &res);
        REL_CHECK(rv == ES_OK, "append to %s: %s", name, es_strerror(rv));
        next_rev[s] += k;
        n -= k;
    }
    es_client_destroy(c);
}

static es_stats stats_of(const char *address)
{
    es_client *c = rel_client(address, 10000);
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    es_client_destroy(c);
    REL_CHECK(rv == ES_OK, "stats from %s: %s", address, es_strerror(rv));
    return st;
}

/* Poll until the relay has JetStream's acknowledgement for at least pos. */
static es_stats wait_acked(const char *address, uint64_t pos, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        es_stats st = stats_of(address);
        if (st.relay_acked_position >= pos) {
            return st;
        }
        REL_CHECK(h_now_ms() < deadline,
                  "the relay has %" PRIu64 " of %" PRIu64 " acknowledged after %d ms",
                  st.relay_acked_position, pos, timeout_ms);
        h_sleep_ms(20);
    }
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", p[i]);
    }
}

static bool bytes_eq(const void *a, size_t al, const void *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

/* The two logs, event by event (head: how many events both serve). */
static void compare_logs(const char *primary, const char *follower, uint64_t head)
{
    es_client *a = rel_client(primary, 30000), *b = rel_client(follower, 30000);
    es_read_iter *ia, *ib;
    REL_CHECK(es_read_all(a, NULL, &ia) == ES_OK && es_read_all(b, NULL, &ib) == ES_OK, "read-all");
    uint64_t n = 0;
    for (;;) {
        const es_recorded_event *x = NULL, *y = NULL;
        es_err ra = es_read_next(ia, &x), rb = es_read_next(ib, &y);
        REL_CHECK(ra == ES_OK && rb == ES_OK, "read-all after %" PRIu64 ": primary %s, follower %s",
                  n, es_strerror(ra), es_strerror(rb));
        if (!x || !y) {
            REL_CHECK(!x && !y, "one log ends after %" PRIu64 " events, the other does not", n);
            break;
        }
        REL_CHECK(
            x->position == y->position && !strcmp(x->stream, y->stream) &&
                x->revision == y->revision && !memcmp(x->id, y->id, ES_UUID_BYTES) &&
                !strcmp(x->type, y->type) && bytes_eq(x->data, x->data_len, y->data, y->data_len) &&
                bytes_eq(x->metadata, x->metadata_len, y->metadata, y->metadata_len) &&
                !strcmp(x->content_type, y->content_type) && x->recorded_at_us == y->recorded_at_us,
            "the follower differs from the primary at position %" PRIu64 " (primary %s@%" PRIu64
            ", follower %s@%" PRIu64 ")",
            x->position, x->stream, x->revision, y->stream, y->revision);
        n++;
    }
    REL_CHECK(n == head, "compared %" PRIu64 " events, expected %" PRIu64, n, head);
    es_read_destroy(ia);
    es_read_destroy(ib);
    es_client_destroy(a);
    es_client_destroy(b);
}

typedef struct live_ctx {
    uint64_t got, last;
} live_ctx;

static int on_live(void *ctx, const es_recorded_event *evs, size_t n)
{
    live_ctx *l = ctx;
    for (size_t i = 0; i < n; i++) {
        REL_CHECK(evs[i].position > l->last, "live events out of order");
        l->last = evs[i].position;
        l->got++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"events", NULL};
    uint64_t values[] = {100000};
    rel_args(argc, argv, "test_cluster", names, values);
    uint64_t events = values[0];
    natsh_require_server();
    salt = rel_seed();

    esd_proc p, f;
    if (esd_init(&p, NULL) != 0 || esd_init(&f, NULL) != 0) {
        rel_fail("cannot make temporary directories");
    }
    natsh_cluster c;
    int64_t t = h_now_ms();
    natsh_start(&c, 3, p.dir);
    rel_log("3-node JetStream cluster ready in %" PRId64 " ms at %s", h_now_ms() - t, c.urls);
    natsConnection *nc;
    jsCtx *js;
    natsh_connect(&c, &nc, &js);

    const char *relay_args[] = {
        "--relay-nats", c.urls, "--relay-stream", STREAM, "--relay-replicas", "3", "--sync",
        "none",         NULL};
    memcpy(p.args, relay_args, sizeof relay_args);
    int status;
    REL_CHECK(esd_start(&p, 10000) == 0, "primary esd did not start");

    /* ---- 1. relay `events` while the stream leader is killed ---- */
    int64_t t0 = h_now_ms();
    append_events(p.address, events);
    int64_t t_app = h_now_ms();
    rel_log("appended %" PRIu64 " events in %" PRId64 " ms", events, t_app - t0);
    es_stats st = wait_acked(p.address, events / 5, 60000);
    char leader[32];
    natsh_stream_leader(js, STREAM, leader, sizeof leader);
    int li = natsh_node_by_name(&c, leader);
    REL_CHECK(li >= 0, "no leader found for the stream (\"%s\")", leader);
    uint64_t at_kill = st.relay_acked_position;
    natsh_kill(&c, li);
    rel_log("killed the stream leader %s (pid gone) at acked position %" PRIu64, leader, at_kill);
    st = wait_acked(p.address, at_kill + events / 10 < events ? at_kill + events / 10 : events,
                    90000);
    char leader2[32];
    natsh_stream_leader(js, STREAM, leader2, sizeof leader2);
    rel_log("relay went on under leader %s (acked %" PRIu64 "); restarting %s", leader2,
            st.relay_acked_position, leader);
    natsh_restart(&c, li);
    st = wait_acked(p.address, events, 120000);
    int64_t t_rel = h_now_ms();
    rel_log("relay: %" PRIu64 " events acknowledged by JetStream R3 in %" PRId64
            " ms from the first append (%.0f events/s, with a leader kill); resumes: see log",
            events, t_rel - t0, (double)events * 1000.0 / (double)(t_rel - t0 ? t_rel - t0 : 1));
    char hex[2 * ES_UUID_BYTES + 1];
    hex_of(st.store_id, ES_UUID_BYTES, hex);
    natsh_verify_copy(js, STREAM, hex, events);
    rel_log("copy verified: positions 1..%" PRIu64 " exactly once, in order", events);

    /* ---- 2. kill -9 of esd mid-relay ---- */
    uint64_t more = events / 4;
    append_events(p.address, more);
    st = stats_of(p.address);
    rel_log("killing esd with %" PRIu64 " of %" PRIu64 " acknowledged (lag %" PRIu64 ")",
            st.relay_acked_position, st.head_position, st.relay_lag);
    if (st.relay_lag == 0) {
        rel_log("note: the relay had caught up before the kill");
    }
    REL_CHECK(esd_stop(&p, SIGKILL, 10000, &status, NULL) == 0, "kill esd");
    REL_CHECK(esd_start(&p, 10000) == 0, "primary esd did not restart");
    append_events(p.address, events / 20);
    uint64_t head = events + more + events / 20;
    st = wait_acked(p.address, head, 120000);
    REL_CHECK(st.head_position == head, "head %" PRIu64 ", expected %" PRIu64, st.head_position,
              head);
    natsh_verify_copy(js, STREAM, hex, head);
    rel_log("after kill -9 and restart: copy verified, positions 1..%" PRIu64
            " exactly once, in order",
            head);

    /* ---- 3. the follower ---- */
    const char *follow_args[] = {"--follow-nats", c.urls, "--follow-stream", STREAM, NULL};
    memcpy(f.args, follow_args, sizeof follow_args);
    int64_t tf = h_now_ms();
    REL_CHECK(esd_start(&f, 10000) == 0, "follower esd did not start");
    int64_t deadline = h_now_ms() + 120000;
    es_stats fs;
    for (;;) {
        fs = stats_of(f.address);
        REL_CHECK(!fs.follower_halted, "the follower halted (see %s)", f.log_file);
        if (fs.head_position == head) {
            break;
        }
        REL_CHECK(h_now_ms() < deadline, "the follower has %" PRIu64 " of %" PRIu64,
                  fs.head_position, head);
        h_sleep_ms(20);
    }
    int64_t tf_end = h_now_ms();
    rel_log("follower caught up %" PRIu64 " events in %" PRId64 " ms (%.0f events/s, from start)",
            head, tf_end - tf, (double)head * 1000.0 / (double)(tf_end - tf ? tf_end - tf : 1));
    REL_CHECK(fs.follower, "stats do not say follower");
    compare_logs(p.address, f.address, head);
    rel_log("follower equals the primary event by event (%" PRIu64 " events)", head);
    const char *check[] = {"db", "check", f.data_dir, NULL};
    char out[512];
    snprintf(out, sizeof out, "%s/check.out", f.dir);
    REL_CHECK(h_esctl(check, out, 60000) == 0, "esctl db check of the follower failed");

    /* refusals */
    es_client *fc = rel_client(f.address, 10000);
    es_event e = {.type = "T", .data = "{}", .data_len = 2};
    es_err rv = es_stream_append(fc, "acct-0", (es_expected){ES_EXPECT_ANY, 0}, &e, 1, NULL);
    REL_CHECK(rv == ES_ERR_FOLLOWER, "append to the follower: %s", es_strerror(rv));
    es_event e2 = {.type = "T", .data = "{}", .data_len = 2};
    es_append_req tx[2] = {
        {.stream = "acct-1", .expected = {ES_EXPECT_ANY, 0}, .events = &e, .n_events = 1},
        {.stream = "acct-2", .expected = {ES_EXPECT_ANY, 0}, .events = &e2, .n_events = 1}};
    rv = es_txn_commit(fc, tx, 2, NULL);
    REL_CHECK(rv == ES_ERR_FOLLOWER, "transaction on the follower: %s", es_strerror(rv));
    rv = es_snapshot_save(fc, "acct-0", 0, 1, "s", 1);
    REL_CHECK(rv == ES_ERR_FOLLOWER, "snapshot save on the follower: %s", es_strerror(rv));
    rel_log("the follower refuses appends, transactions and snapshot saves (FOLLOWER)");

    /* live subscription on the follower, and subject escaping */
    es_sub_options so = {.target = ES_SUB_ALL, .start = ES_SUB_FROM_END};
    live_ctx live = {0};
    es_subscription *sub;
    rv = es_subscribe(fc, &so, on_live, NULL, &live, &sub);
    REL_CHECK(rv == ES_OK, "subscribe on the follower: %s", es_strerror(rv));
    es_client *pc = rel_client(p.address, 10000);
    es_event w = {.type = "Weird", .data = "{}", .data_len = 2};
    rv = es_stream_append(pc, "we.ird *>-x", (es_expected){ES_EXPECT_ANY, 0}, &w, 1, NULL);
    REL_CHECK(rv == ES_OK, "append: %s", es_strerror(rv));
    es_event w2 = {.type = "Weird", .data = "{}", .data_len = 2};
    rv = es_stream_append(pc, "-x", (es_expected){ES_EXPECT_ANY, 0}, &w2, 1, NULL);
    REL_CHECK(rv == ES_OK, "append: %s", es_strerror(rv));
    es_event w3 = {.type = " Padded ", .data = "{}", .data_len = 2};
    rv = es_stream_append(pc, " sp-1 ", (es_expected){ES_EXPECT_ANY, 0}, &w3, 1, NULL);
    REL_CHECK(rv == ES_OK, "append: %s", es_strerror(rv));
    es_client_destroy(pc);
    deadline = h_now_ms() + 30000;
    while (live.got < 3) {
        rv = es_sub_poll(sub, 200);
        REL_CHECK(rv == ES_OK, "poll: %s", es_strerror(rv));
        REL_CHECK(h_now_ms() < deadline, "the follower's subscriber got %" PRIu64 " of 3",
                  live.got);
    }
    REL_CHECK(live.last == head + 3, "live events end at %" PRIu64 ", expected %" PRIu64, live.last,
              head + 3);
    es_sub_destroy(sub);
    es_client_destroy(fc);
    rel_log("a subscriber of the follower saw events appended to the primary live");
    static const char *const want[] = {"es.we%2Eird%20%2A%3E.we%2Eird%20%2A%3E-x", "es.%00.-x",
                                       "es.%20sp.%20sp-1%20"};
    for (int i = 0; i < 3; i++) {
        natsMsg *m = NULL;
        REL_CHECK(js_GetMsg(&m, js, STREAM, head + 1 + (uint64_t)i, NULL, NULL) == NATS_OK,
                  "get message %" PRIu64, head + 1 + (uint64_t)i);
        REL_CHECK(!strcmp(natsMsg_GetSubject(m), want[i]), "subject %s, expected %s",
                  natsMsg_GetSubject(m), want[i]);
        natsMsg_Destroy(m);
    }
    rel_log("subjects escaped as documented (%s, %s, %s)", want[0], want[1], want[2]);
    compare_logs(p.address, f.address, head + 3);
    rel_log("the follower still equals the primary (awkward stream ids and types included)");

    /* ---- 4. removals: lifecycle records relayed, applied, scavenged ---- */
    pc = rel_client(p.address, 10000);
    uint64_t last;
    REL_CHECK(es_stream_delete(pc, PREFIX "-1", (es_expected){ES_EXPECT_ANY, 0}, &last) == ES_OK,
              "delete");
    uint64_t hidden = next_rev[1]; /* all: the stream is recreated below */
    REL_CHECK(es_stream_meta_set(pc, PREFIX "-2", (es_expected){ES_EXPECT_ANY, 0}, 50, 0, 0,
                                 NULL) == ES_OK,
              "truncate");
    hidden += 50;
    REL_CHECK(es_stream_meta_set(pc, PREFIX "-3", (es_expected){ES_EXPECT_ANY, 0}, 0, 10, 0,
                                 NULL) == ES_OK,
              "max count");
    hidden += next_rev[3] - 10;
    REL_CHECK(es_stream_tombstone(pc, PREFIX "-4", (es_expected){ES_EXPECT_ANY, 0}, &last) == ES_OK,
              "tombstone");
    hidden += next_rev[4];
    es_client_destroy(pc);
    append_to(p.address, 1, 20); /* recreated */
    append_to(p.address, 3, 20); /* the max-count window moves on */
    hidden += 20;
    append_to(p.address, 5, 20);
    uint64_t head2 = head + 3 + 4 + 60;
    uint64_t served = head2 - hidden;
    deadline = h_now_ms() + 120000;
    es_stats ps;
    for (;;) {
        /* Both scavenge on their own timer (1 s): wait for both to finish. */
        ps = stats_of(p.address);
        fs = stats_of(f.address);
        REL_CHECK(!fs.follower_halted, "the follower halted (see %s)", f.log_file);
        if (fs.head_position == head2 && ps.event_count == fs.event_count &&
            ps.event_count == served + 1) {
            break; /* stored: the served ones, and the tombstoned stream's last event */
        }
        REL_CHECK(h_now_ms() < deadline,
                  "head %" PRIu64 "/%" PRIu64 ", stored events %" PRIu64 " and %" PRIu64
                  ", expected %" PRIu64,
                  fs.head_position, head2, ps.event_count, fs.event_count, served + 1);
        h_sleep_ms(50);
    }
    compare_logs(p.address, f.address, served);
    rel_log("after a delete, a truncation, a max-count and a tombstone, and both scavenged: the "
            "follower serves what the primary serves (%" PRIu64 " events) and stores as many "
            "(%" PRIu64 ")",
            served, fs.event_count);
    snprintf(out, sizeof out, "%s/check2.out", f.dir);
    REL_CHECK(h_esctl(check, out, 60000) == 0, "esctl db check of the follower failed");
    const char *pcheck[] = {"db", "check", p.data_dir, NULL};
    snprintf(out, sizeof out, "%s/check3.out", p.dir);
    REL_CHECK(h_esctl(pcheck, out, 60000) == 0, "esctl db check of the primary failed");
    rel_log("esctl db check: both clean (holes explained, stream_life equal to its records)");

    REL_CHECK(esd_stop(&f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    REL_CHECK(esd_stop(&p, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "primary stop");
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsh_stop(&c);
    nats_Close();
    esd_destroy(&f);
    esd_destroy(&p);
    rel_log("PASS");
    return 0;
}

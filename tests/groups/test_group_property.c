/*
 * test_group_property — a consumer group of 4 members over --streams
 * streams and --events events while members are randomly slowed, made to
 * nack (retry or park), to drop events (ack timeout), killed (the
 * connection closed with events in flight) and restarted, and esd itself is
 * killed with SIGKILL --esd-kills times and restarted on the same data and
 * port.
 *
 * Every delivery is recorded with a global sequence number taken when the
 * batch is received (start) and one taken just before its ack or nack is
 * sent (end). At the end:
 *   - every event is acknowledged (an ack answered OK) or parked, never
 *     both, and the parked ones are exactly the server's parked list;
 *   - per stream, in start order, each delivery's revision equals the
 *     previous one (a redelivery) or the next one: the events each member
 *     starts are in revision order; a revision is skipped only when it was
 *     parked without ever reaching the application (its pushes were lost
 *     with killed members' connections until max_retries ran out);
 *   - per stream, a delivery starts only after the previous delivery of
 *     that stream ended (no two members ever hold events of one stream at
 *     the same time), unless the previous one's ack was refused
 *     (NOT_IN_FLIGHT: the server had taken it back, e.g. after a kill of
 *     esd or an ack timeout) or never sent;
 *   - nothing is delivered after an answered ack of it (kill -9 included);
 *   - the checkpoint, polled throughout, never moves backwards, and ends at
 *     the head.
 *
 * PR figures: 200 streams, 100,000 events, 3 esd kills; the long suite
 * 1,000,000 events with 20 kills. The ack timeout is 500 ms, under the
 * sanitizers too: there a member's batch can take longer than that while
 * its next batch waits in the library; the server then takes that batch
 * back and says so (GroupRevoked), and the library drops it instead of
 * handing it out after another member's ack. The run reports how many
 * revokes the members received and how many queued events they dropped.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "es/group.h"
#include "rel.h"
#include "support.h"

#define MEMBERS 4
#define GROUP   "prop"

enum { OPT_STREAMS, OPT_EVENTS, OPT_KILLS, OPT_N };

static esd_proc esd;
static uint64_t n_events, n_streams;
static _Atomic uint64_t seq = 1;
static _Atomic bool stopping;
static uint64_t restart_seq[64];
static uint64_t n_restarts;
static _Atomic uint64_t revokes, revoked_dropped; /* GroupRevoked pushes; events dropped */

typedef struct delivery {
    uint64_t pos, rev, start, end;
    uint32_t stream;
    uint8_t member;
    uint8_t outcome; /* 0 dropped, 1 acked, 2 parked (nack), 3 retry (nack), 4 refused,
                        5 ack sent, its answer lost with the connection */
} delivery;

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static delivery *dlog;
static size_t dlog_n, dlog_cap;

static uint64_t tick(void)
{
    return atomic_fetch_add(&seq, 1);
}

static void log_add(const delivery *d)
{
    pthread_mutex_lock(&log_mu);
    if (dlog_n == dlog_cap) {
        dlog_cap = dlog_cap ? dlog_cap * 2 : 65536;
        dlog = realloc(dlog, dlog_cap * sizeof *dlog);
        REL_CHECK(dlog != NULL, "out of memory");
    }
    dlog[dlog_n++] = *d;
    pthread_mutex_unlock(&log_mu);
}

static uint32_t stream_no(const char *s)
{
    return (uint32_t)strtoul(s + strlen("prop-"), NULL, 10);
}

/* esd's address as the members may read it: the main thread restarts esd
 * (esd_start rewrites esd.address) while they run. */
static pthread_mutex_t addr_mu = PTHREAD_MUTEX_INITIALIZER;
static char addr_now[sizeof esd.address];

static void addr_publish(void)
{
    pthread_mutex_lock(&addr_mu);
    memcpy(addr_now, esd.address, sizeof addr_now);
    pthread_mutex_unlock(&addr_mu);
}

/* A client of esd; buf (the member's own) holds the address it keeps. */
static es_client *member_client(char buf[sizeof addr_now])
{
    pthread_mutex_lock(&addr_mu);
    memcpy(buf, addr_now, sizeof addr_now);
    pthread_mutex_unlock(&addr_mu);
    es_client_options o;
    es_client_options_init(&o);
    o.address = buf;
    o.client_name = "prop-member";
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = 10000;
    o.reconnect_attempts = 3;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    if (es_client_create(&o, &c) != ES_OK) {
        return NULL;
    }
    return c;
}

typedef struct member_ctx {
    int id;
    rel_rng rng;
    pthread_t th;
    char addr[sizeof addr_now];
} member_ctx;

static void *member_main(void *arg)
{
    member_ctx *mc = arg;
    while (!atomic_load(&stopping)) {
        es_client *c = member_client(mc->addr);
        es_group_member *m = NULL;
        if (!c ||
            es_group_join(c, GROUP, (uint32_t)rel_range(&mc->rng, 1, 64), "prop", &m) != ES_OK) {
            es_client_destroy(c);
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL); /* esd restarting: try again */
            continue;
        }
        bool killed = false;
        while (!atomic_load(&stopping) && !killed) {
            es_recorded_event *evs;
            size_t n = 0;
            if (es_group_next(m, 100, &evs, &n) != ES_OK) {
                break; /* esd gone: a new client */
            }
            uint64_t start = tick();
            uint64_t acks[64];
            delivery ack_d[64];
            size_t n_acks = 0;
            for (size_t i = 0; i < n; i++) {
                delivery d = {.pos = evs[i].position,
                              .rev = evs[i].revision,
                              .start = start,
                              .stream = stream_no(evs[i].stream),
                              .member = (uint8_t)mc->id};
                uint64_t r = rel_range(&mc->rng, 0, 999);
                if (r < 5) {
                    /* killed with its events in flight */
                    d.end = tick();
                    log_add(&d);
                    killed = true;
                    continue;
                }
                if (killed) {
                    d.end = tick();
                    log_add(&d);
                    continue;
                }
                if (r < 30) {
                    d.end = tick(); /* dropped: the ack timeout brings it back */
                    log_add(&d);
                    continue;
                }
                if (r < 40) {
                    struct timespec ts = {0, (long)rel_range(&mc->rng, 1, 5) * 1000000};
                    nanosleep(&ts, NULL); /* slowed */
                }
                if (r >= 40 && r < 90) {
                    es_nack_action a = r < 80 ? ES_NACK_RETRY : ES_NACK_PARK;
                    d.end = tick();
                    es_err rv = es_group_nack(m, &d.pos, 1, a, a == ES_NACK_PARK ? "prop" : NULL);
                    d.outcome = rv == ES_OK ? (a == ES_NACK_PARK ? 2 : 3) : 4;
                    log_add(&d);
                    continue;
                }
                acks[n_acks] = d.pos;
                ack_d[n_acks++] = d;
            }
            if (killed) {
                for (size_t i = 0; i < n_acks; i++) {
                    ack_d[i].end = tick();
                    log_add(&ack_d[i]);
                }
                break;
            }
            if (n_acks) {
                uint64_t end = tick();
                es_err rv = es_group_ack(m, acks, n_acks);
                if (rv != ES_OK && rv != ES_ERR_NOT_IN_FLIGHT) {
                    /* the connection went: not known whether it was stored */
                    for (size_t i = 0; i < n_acks; i++) {
                        ack_d[i].end = end;
                        ack_d[i].outcome = 5;
                        log_add(&ack_d[i]);
                    }
                    break;
                }
                if (rv == ES_ERR_NOT_IN_FLIGHT) {
                    /* One was taken back (timeout): ack them one by one. */
                    for (size_t i = 0; i < n_acks; i++) {
                        ack_d[i].end = tick();
                        es_err r1 = es_group_ack(m, &ack_d[i].pos, 1);
                        ack_d[i].outcome = r1 == ES_OK ? 1 : r1 == ES_ERR_NOT_IN_FLIGHT ? 4 : 5;
                        log_add(&ack_d[i]);
                    }
                    continue;
                }
                for (size_t i = 0; i < n_acks; i++) {
                    ack_d[i].end = end;
                    ack_d[i].outcome = 1;
                    log_add(&ack_d[i]);
                }
            }
        }
        uint64_t pushes = 0, dropped = 0;
        es_group_revoked(m, &pushes, &dropped);
        atomic_fetch_add(&revokes, pushes);
        atomic_fetch_add(&revoked_dropped, dropped);
        es_group_leave(m);
        es_client_destroy(c);
    }
    return NULL;
}

static int cmp_delivery(const void *a, const void *b)
{
    const delivery *x = a, *y = b;
    if (x->stream != y->stream) {
        return x->stream < y->stream ? -1 : 1;
    }
    return x->start < y->start ? -1 : x->start > y->start ? 1 : (x->pos < y->pos ? -1 : 1);
}

static void fill(es_client *c, rel_rng *rng)
{
    enum { TXN = 200 };
    es_event evs[TXN];
    es_append_req reqs[TXN];
    char names[TXN][32];
    char data[] = "{}";
    uint64_t written = 0;
    size_t per = n_streams < TXN ? (size_t)n_streams : TXN; /* a stream once per transaction */
    while (written < n_events) {
        size_t n = n_events - written < per ? (size_t)(n_events - written) : per;
        uint64_t base = rel_range(rng, 0, n_streams - 1);
        for (size_t i = 0; i < n; i++) {
            memset(&evs[i], 0, sizeof evs[i]);
            evs[i].type = "Prop";
            evs[i].data = data;
            evs[i].data_len = 2;
            snprintf(names[i], sizeof names[i], "prop-%" PRIu64, (base + i * 7) % n_streams);
            reqs[i] = (es_append_req){names[i], {ES_EXPECT_ANY, 0}, &evs[i], 1};
        }
        es_err rv = es_txn_commit(c, reqs, n, NULL);
        REL_CHECK(rv == ES_OK, "fill: %s", es_client_errmsg(c));
        written += n;
    }
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"streams", "events", "esd-kills", NULL};
    uint64_t values[OPT_N] = {200, 100000, 3};
    rel_args(argc, argv, "group_property", names, values);
    n_streams = values[OPT_STREAMS];
    n_events = values[OPT_EVENTS];
    rel_rng rng = {rel_seed()};
    static const char *const args[] = {"--sync", "none", "--log-level", "warn", NULL};
    REL_CHECK(esd_launch(&esd, args, NULL, 10000) == 0, "esd did not start");
    esd.listen_port = esd.port; /* restarts on the same port */
    es_client *c = h_client(esd.address, "prop-admin");
    REL_CHECK(c != NULL, "connect");
    fill(c, &rng);
    es_group_settings set;
    es_group_settings_init(&set);
    /* Under the sanitizers too: a member slower than that over one batch
     * has its queued next batch revoked, not handed out late. */
    set.ack_timeout_ms = 500;
    set.max_retries = 3;
    REL_CHECK(es_group_create(c, GROUP, ES_GROUP_CATEGORY, "prop", ES_GROUP_FROM_START, 0, &set) ==
                  ES_OK,
              "create: %s", es_client_errmsg(c));
    rel_log("%" PRIu64 " events over %" PRIu64 " streams; 4 members", n_events, n_streams);

    addr_publish();
    member_ctx ms[MEMBERS];
    for (int i = 0; i < MEMBERS; i++) {
        ms[i].id = i;
        ms[i].rng.s = rel_mix(rel_seed() + (uint64_t)i + 1);
        pthread_create(&ms[i].th, NULL, member_main, &ms[i]);
    }
    uint64_t last_cp = 0, kills = 0;
    int64_t deadline = h_now_ms() + 20 * 60 * 1000;
    uint64_t next_kill = n_events * (kills + 1) / (values[OPT_KILLS] + 1);
    for (;;) {
        es_group_info info;
        es_err rv = es_group_info_get(c, GROUP, &info);
        if (rv == ES_OK) {
            REL_CHECK(info.checkpoint >= last_cp, "checkpoint moved back: %" PRIu64 " -> %" PRIu64,
                      last_cp, info.checkpoint);
            last_cp = info.checkpoint;
            if (info.checkpoint >= n_events) {
                break;
            }
            if (kills < values[OPT_KILLS] && info.checkpoint >= next_kill) {
                if (n_restarts < 64) {
                    restart_seq[n_restarts++] = tick();
                }
                REL_CHECK(esd_stop(&esd, SIGKILL, 10000, NULL, NULL) == 0, "kill -9");
                REL_CHECK(esd_start(&esd, 10000) == 0, "restart");
                addr_publish();
                kills++;
                next_kill = n_events * (kills + 1) / (values[OPT_KILLS] + 1);
                rel_log("esd killed and restarted at checkpoint %" PRIu64, last_cp);
                es_client_destroy(c);
                c = h_client(esd.address, "prop-admin");
                REL_CHECK(c != NULL, "reconnect");
                continue;
            }
        } else {
            es_client_destroy(c);
            c = h_client(esd.address, "prop-admin");
            REL_CHECK(c != NULL, "reconnect");
        }
        REL_CHECK(h_now_ms() < deadline, "the group did not finish: checkpoint %" PRIu64, last_cp);
        h_sleep_ms(50);
    }
    atomic_store(&stopping, true);
    for (int i = 0; i < MEMBERS; i++) {
        pthread_join(ms[i].th, NULL);
    }

    /* The parked list, as the server has it. */
    uint8_t *state = calloc(n_events + 1, 1); /* 1 acked, 2 parked, 3 maybe acked */
    REL_CHECK(state != NULL, "out of memory");
    uint64_t after = 0, n_parked = 0;
    for (;;) {
        es_group_parked *p = NULL;
        size_t np = 0;
        bool more = false;
        REL_CHECK(es_group_parked_list(c, GROUP, after, 1000, &p, &np, &more) == ES_OK,
                  "parked list: %s", es_client_errmsg(c));
        for (size_t i = 0; i < np; i++) {
            REL_CHECK(p[i].position <= n_events, "parked position %" PRIu64, p[i].position);
            state[p[i].position] = 2;
            after = p[i].position;
            n_parked++;
        }
        free(p);
        if (!more) {
            break;
        }
    }

    /* Where each revision is: the log, read back. */
    uint32_t *stream_of = calloc(n_events + 1, sizeof *stream_of);
    uint64_t *rev_of = calloc(n_events + 1, sizeof *rev_of);
    REL_CHECK(stream_of && rev_of, "out of memory");
    {
        es_read_options ro = {0};
        es_read_iter *it = NULL;
        REL_CHECK(es_read_all(c, &ro, &it) == ES_OK, "read all: %s", es_client_errmsg(c));
        const es_recorded_event *ev;
        while (es_read_next(it, &ev) == ES_OK && ev != NULL) {
            if (ev->position <= n_events) {
                stream_of[ev->position] = stream_no(ev->stream);
                rev_of[ev->position] = ev->revision;
            }
        }
        es_read_destroy(it);
    }

    /* Per stream, in start order. */
    qsort(dlog, dlog_n, sizeof *dlog, cmp_delivery);
    uint64_t acked = 0, redeliveries = 0;
    uint64_t *acked_end = calloc(n_events + 1, sizeof *acked_end); /* end of its answered ack */
    REL_CHECK(acked_end != NULL, "out of memory");
    for (size_t i = 0; i < dlog_n; i++) {
        const delivery *d = &dlog[i];
        REL_CHECK(d->pos >= 1 && d->pos <= n_events, "delivery of position %" PRIu64, d->pos);
        if (acked_end[d->pos] != 0 && d->start > acked_end[d->pos]) {
            for (size_t k = 0; k < dlog_n; k++) {
                if (dlog[k].pos == d->pos) {
                    fprintf(stderr,
                            "  delivery of %" PRIu64 ": member %u rev %" PRIu64 " start %" PRIu64
                            " end %" PRIu64 " outcome %u\n",
                            d->pos, dlog[k].member, dlog[k].rev, dlog[k].start, dlog[k].end,
                            dlog[k].outcome);
                }
            }
            fprintf(stderr, "  esd restarts at sequence numbers:");
            for (uint64_t k = 0; k < n_restarts; k++) {
                fprintf(stderr, " %" PRIu64, restart_seq[k]);
            }
            fprintf(stderr, "\n");
            rel_fail("position %" PRIu64 " delivered again after its ack", d->pos);
        }
        if (i > 0 && dlog[i - 1].stream == d->stream) {
            const delivery *p = &dlog[i - 1];
            REL_CHECK(d->rev >= p->rev, "stream %u: revision %" PRIu64 " started after %" PRIu64,
                      d->stream, d->rev, p->rev);
            for (uint64_t r = p->rev + 1; r < d->rev; r++) {
                uint64_t at = 0;
                for (uint64_t q = 1; q <= n_events && !at; q++) {
                    at = stream_of[q] == d->stream && rev_of[q] == r ? q : 0;
                }
                REL_CHECK(at && state[at] == 2,
                          "stream %u: revision %" PRIu64 " started after %" PRIu64 " and %" PRIu64
                          " was neither delivered nor parked",
                          d->stream, d->rev, p->rev, r);
            }
            bool held = p->outcome == 1 || p->outcome == 2 || p->outcome == 3;
            REL_CHECK(!held || d->start > p->end,
                      "stream %u: revision %" PRIu64 " started while member %u held %" PRIu64,
                      d->stream, d->rev, p->member, p->rev);
            redeliveries += d->rev == p->rev;
        } else {
            /* A stream's first delivery: revision 0, or the ones before
             * it parked undelivered. */
            for (uint64_t r = 0; r < d->rev; r++) {
                uint64_t at = 0;
                for (uint64_t q = 1; q <= n_events && !at; q++) {
                    at = stream_of[q] == d->stream && rev_of[q] == r ? q : 0;
                }
                REL_CHECK(at && state[at] == 2,
                          "stream %u: first delivery is revision %" PRIu64 " and %" PRIu64
                          " was neither delivered nor parked",
                          d->stream, d->rev, r);
            }
        }
        if (d->outcome == 1) {
            REL_CHECK(state[d->pos] != 2, "position %" PRIu64 " both acked and parked", d->pos);
            REL_CHECK(state[d->pos] == 0, "position %" PRIu64 " acked twice", d->pos);
            state[d->pos] = 1;
            acked_end[d->pos] = d->end;
            acked++;
        }
    }
    /* An ack whose answer was lost (esd killed meanwhile) may have been
     * stored: such an event counts as acked when nothing else took it. */
    for (size_t i = 0; i < dlog_n; i++) {
        if (dlog[i].outcome == 5 && state[dlog[i].pos] == 0) {
            state[dlog[i].pos] = 3;
        }
    }
    for (uint64_t p = 1; p <= n_events; p++) {
        if (state[p] == 0) {
            for (size_t i = 0; i < dlog_n; i++) {
                if (dlog[i].pos == p) {
                    fprintf(stderr,
                            "  delivery of %" PRIu64 ": member %u rev %" PRIu64 " start %" PRIu64
                            " end %" PRIu64 " outcome %u\n",
                            p, dlog[i].member, dlog[i].rev, dlog[i].start, dlog[i].end,
                            dlog[i].outcome);
                }
            }
        }
        REL_CHECK(state[p] != 0, "position %" PRIu64 " neither acked nor parked", p);
    }
    es_group_info info;
    REL_CHECK(es_group_info_get(c, GROUP, &info) == ES_OK, "info");
    REL_CHECK(info.checkpoint == n_events && info.in_flight == 0, "final checkpoint %" PRIu64,
              info.checkpoint);
    REL_CHECK(info.parked == n_parked, "info says %" PRIu64 " parked, the list %" PRIu64,
              info.parked, n_parked);
    rel_log("ok: %zu deliveries, %" PRIu64 " acked, %" PRIu64 " parked, %" PRIu64
            " redeliveries, %" PRIu64 " esd kills; %" PRIu64 " revokes received, %" PRIu64
            " queued events dropped by them",
            dlog_n, acked, n_parked, redeliveries, kills, atomic_load(&revokes),
            atomic_load(&revoked_dropped));
    free(state);
    free(stream_of);
    free(rev_of);
    free(acked_end);
    free(dlog);
    es_client_destroy(c);
    REL_CHECK(esd_finish(&esd, 10000) == 0, "esd did not end cleanly");
    return 0;
}

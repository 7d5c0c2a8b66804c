/*
 * test_backup — hot backup while 32 writers run.
 *
 *   test_backup --backups 2      (suite reliability)
 *   test_backup --backups 20     (suite long)
 *
 * Design notes
 * ------------
 * esd (durable sync) takes appends from 32 writer threads, one client each,
 * each the only writer of 2 streams (exact expectations, contents derived
 * from (stream, revision) as in rel.h), every acknowledgement recorded.
 * While they run, the main thread takes backups one after another with
 * `esctl db backup DIR DEST`; just before starting each, it notes how many
 * acknowledgements every writer had received — those events were
 * acknowledged before the backup started and must be in it.
 *
 * After the load, each backup is verified: `esctl db check DEST` passes;
 * an esd started on DEST (another port) serves a log that is gapless from
 * position 1 with contiguous revisions and every byte as appended; every
 * event acknowledged before that backup began is there at its acknowledged
 * position; and the backup is a prefix of the live log (same event at
 * every position up to its head) — a consistent cut, not a mixture.
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

#define N_WRITERS          32u
#define STREAMS_PER_WRITER 2u
#define N_STREAMS          (N_WRITERS * STREAMS_PER_WRITER)
#define MAX_DATA           400u
#define PREFIX             "bk"
#define MAX_BACKUPS        100u

typedef struct ack {
    uint32_t stream, n;
    uint64_t first_rev, first_pos;
} ack;

typedef struct writer {
    uint32_t no;
    rel_rng rng;
    ack *acks; /* preallocated: published through n_acks */
    size_t cap;
    _Atomic size_t n_acks;
    pthread_t thread;
} writer;

static uint64_t salt;
static const char *address;
static _Atomic bool stopping;

static void *writer_main(void *arg)
{
    writer *w = arg;
    es_client *c = rel_client(address, 30000);
    uint64_t rev[STREAMS_PER_WRITER] = {0};
    while (!atomic_load(&stopping)) {
        size_t na = atomic_load(&w->n_acks);
        if (na == w->cap) {
            break; /* enough for this run */
        }
        uint32_t k = (uint32_t)rel_range(&w->rng, 0, STREAMS_PER_WRITER - 1);
        uint32_t s = w->no * STREAMS_PER_WRITER + k;
        uint32_t n = (uint32_t)rel_range(&w->rng, 1, 3);
        rel_ev evs[3];
        es_event e[3];
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
            rel_fail("writer %u: %s at %" PRIu64 ": %s (%s)", w->no, name, rev[k], es_errname(rv),
                     es_client_errmsg(c));
        }
        w->acks[na] = (ack){s, n, rev[k], res.first_position};
        atomic_store(&w->n_acks, na + 1);
        rev[k] += n;
    }
    es_client_destroy(c);
    return NULL;
}

static uint64_t total_acks(writer *ws)
{
    uint64_t t = 0;
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        t += atomic_load(&ws[i].n_acks);
    }
    return t;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"backups", NULL};
    uint64_t val[] = {2};
    rel_args(argc, argv, "test_backup", names, val);
    uint64_t n_backups = val[0];
    if (n_backups < 1 || n_backups > MAX_BACKUPS) {
        rel_fail("--backups must be in 1..%u", MAX_BACKUPS);
    }
    rel_rng rng = {rel_seed()};
    salt = rel_rand(&rng);
    int64_t t0 = h_now_ms();

    esd_proc e;
    if (esd_init(&e, NULL) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    int st;
    char why[512], out[400];
    snprintf(out, sizeof out, "%s/esctl.out", e.dir);
    if (esd_start(&e, 20000) != 0) {
        rel_fail("esd did not start: %s", h_status_str(e.status, why, sizeof why));
    }
    address = e.address;
    writer *ws = calloc(N_WRITERS, sizeof *ws);
    if (!ws) {
        rel_fail("out of memory");
    }
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        ws[i].no = i;
        ws[i].rng.s = rel_rand(&rng);
        ws[i].cap = 50000;
        ws[i].acks = malloc(ws[i].cap * sizeof *ws[i].acks);
        if (!ws[i].acks) {
            rel_fail("out of memory");
        }
        pthread_create(&ws[i].thread, NULL, writer_main, &ws[i]);
    }

    /* Backups under load. */
    size_t before[MAX_BACKUPS][N_WRITERS];
    char dest[MAX_BACKUPS][400];
    int64_t backup_ms[MAX_BACKUPS];
    for (uint64_t b = 0; b < n_backups; b++) {
        /* Let the load build up between backups. */
        uint64_t target = total_acks(ws) + 3000;
        int64_t deadline = h_now_ms() + 30000;
        while (total_acks(ws) < target) {
            if (h_now_ms() > deadline || !esd_alive(&e)) {
                rel_fail("backup %" PRIu64 ": the writers stalled", b + 1);
            }
            h_sleep_ms(5);
        }
        for (uint32_t i = 0; i < N_WRITERS; i++) {
            before[b][i] = atomic_load(&ws[i].n_acks);
        }
        snprintf(dest[b], sizeof dest[b], "%s/backup-%" PRIu64, e.dir, b + 1);
        int64_t tb = h_now_ms();
        const char *a[] = {"db", "backup", e.data_dir, dest[b], NULL};
        int cst = h_esctl(a, out, 300000);
        backup_ms[b] = h_now_ms() - tb;
        if (cst != 0) {
            h_dump_tail(out, 20);
            rel_fail("backup %" PRIu64 ": esctl db backup under load: %s", b + 1,
                     cst < 0 ? "did not finish" : h_status_str(cst, why, sizeof why));
        }
        uint64_t during = total_acks(ws);
        uint64_t acked_before = 0;
        for (uint32_t i = 0; i < N_WRITERS; i++) {
            acked_before += before[b][i];
        }
        rel_log("backup %" PRIu64 ": %.2f s with %" PRIu64 " appends acknowledged before it and "
                "%" PRIu64 " while it ran",
                b + 1, (double)backup_ms[b] / 1000.0, acked_before, during - acked_before);
    }
    /* A little more load after the last backup, then stop. */
    uint64_t target = total_acks(ws) + 500;
    int64_t deadline = h_now_ms() + 30000;
    while (total_acks(ws) < target && h_now_ms() < deadline) {
        h_sleep_ms(5);
    }
    atomic_store(&stopping, true);
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        pthread_join(ws[i].thread, NULL);
    }

    /* The live log, for the prefix comparison. */
    es_client *c = rel_client(e.address, 60000);
    rel_walk live;
    rel_walk_init(&live, N_STREAMS);
    if (rel_walk_log(&live, c, PREFIX, salt, MAX_DATA, why, sizeof why) != ES_OK) {
        rel_fail("live log: %s", why);
    }
    es_client_destroy(c);

    uint64_t verified = 0;
    for (uint64_t b = 0; b < n_backups; b++) {
        const char *a[] = {"db", "check", dest[b], NULL};
        int cst = h_esctl(a, out, 300000);
        if (cst != 0) {
            h_dump_tail(out, 20);
            rel_fail("backup %" PRIu64 ": esctl db check %s: %s", b + 1, dest[b],
                     cst < 0 ? "did not finish" : h_status_str(cst, why, sizeof why));
        }
        esd_proc r;
        if (esd_init(&r, NULL) != 0) {
            rel_fail("cannot make a temporary directory");
        }
        snprintf(r.data_dir, sizeof r.data_dir, "%s", dest[b]);
        if (esd_start(&r, 20000) != 0) {
            rel_fail("backup %" PRIu64 ": esd does not start on it: %s", b + 1,
                     h_status_str(r.status, why, sizeof why));
        }
        c = rel_client(r.address, 60000);
        rel_walk wk;
        rel_walk_init(&wk, N_STREAMS);
        if (rel_walk_log(&wk, c, PREFIX, salt, MAX_DATA, why, sizeof why) != ES_OK) {
            rel_fail("backup %" PRIu64 ": %s", b + 1, why);
        }
        es_client_destroy(c);
        uint64_t needed = 0;
        for (uint32_t i = 0; i < N_WRITERS; i++) {
            for (size_t j = 0; j < before[b][i]; j++) {
                const ack *k = &ws[i].acks[j];
                for (uint32_t x = 0; x < k->n; x++) {
                    uint64_t pos = k->first_pos + x;
                    if (pos > wk.head || wk.pos_stream[pos] != k->stream ||
                        wk.pos_rev[pos] != k->first_rev + x) {
                        rel_fail("backup %" PRIu64 ": %s-%u revision %" PRIu64
                                 " acknowledged at position %" PRIu64
                                 " before the backup started is MISSING (backup head %" PRIu64 ")",
                                 b + 1, PREFIX, k->stream, k->first_rev + x, pos, wk.head);
                    }
                    needed++;
                }
            }
        }
        if (wk.head > live.head) {
            rel_fail("backup %" PRIu64 ": head %" PRIu64 " beyond the live head %" PRIu64, b + 1,
                     wk.head, live.head);
        }
        for (uint64_t p = 1; p <= wk.head; p++) {
            if (wk.pos_stream[p] != live.pos_stream[p] || wk.pos_rev[p] != live.pos_rev[p] ||
                wk.pos_hash[p] != live.pos_hash[p]) {
                rel_fail("backup %" PRIu64 ": position %" PRIu64
                         " differs from the live log (not a consistent cut)",
                         b + 1, p);
            }
        }
        if (esd_stop(&r, SIGTERM, 10000, &st, NULL) != 0 || !WIFEXITED(st) ||
            WEXITSTATUS(st) != 0) {
            rel_fail("backup %" PRIu64 ": esd on the backup did not exit 0: %s", b + 1,
                     h_status_str(st, why, sizeof why));
        }
        esd_destroy(&r);
        rel_log("backup %" PRIu64 ": check clean; %" PRIu64 " events (gapless, contiguous, every "
                "byte), all %" PRIu64 " acknowledged before it present; a prefix of the live "
                "log (head %" PRIu64 ")",
                b + 1, wk.head, needed, live.head);
        verified += wk.head;
        rel_walk_finish(&wk);
    }
    rel_walk_finish(&live);
    if (esd_stop(&e, SIGTERM, 10000, &st, NULL) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        rel_fail("esd did not exit 0 on SIGTERM: %s", h_status_str(st, why, sizeof why));
    }
    rel_log("PASS hot backup: %" PRIu64
            " hot backups under 32 writers, all consistent and restorable; "
            "%" PRIu64 " events verified in backups, %" PRIu64 " appends in total, %.1f s",
            n_backups, verified, total_acks(ws), (double)(h_now_ms() - t0) / 1000.0);
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        free(ws[i].acks);
    }
    free(ws);
    esd_destroy(&e);
    return 0;
}

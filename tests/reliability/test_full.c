/*
 * test_full — the store runs out of room: the disk is full, or the map is.
 *
 *   test_full --disk 0 --cycles 1     map full (a 2 MiB --map-size)
 *   test_full --disk 1 --cycles 1     disk full (a 4 MiB tmpfs; needs the
 *                                     right to mount, else exit 77)
 *
 * Design notes
 * ------------
 * Each cycle starts esd on a fresh data directory that cannot grow past a
 * few MiB, and 4 writer threads (one client each, 4 streams each, exact
 * expectations, ids and bytes derived from (stream, revision) as in rel.h)
 * append batches of 1..8 events until the store says STORE_FULL. After a
 * STORE_FULL a writer at once reads its stream's record: the revision must
 * not have moved (nothing of the failed append visible). It then tries
 * single events until five in a row are refused, so the store is filled to
 * the brim and the group commit sees full and non-full requests mixed.
 * Any other error, or an acknowledgement whose revisions are not the ones
 * expected, fails the test.
 *
 * With the store full, esd must still be alive and serve reads: the whole
 * log is walked (gapless positions, contiguous revisions, every byte as
 * appended) and must hold exactly the acknowledged events — as many as were
 * acknowledged and each at its acknowledged position. Then room comes back:
 *
 *   map:  SIGTERM (exit 0), `esctl db check` clean, restart with
 *         --map-size 64M, append again, walk and check again;
 *   disk: the tmpfs is grown to 64 MiB under the running esd (remount),
 *         appends must work again without a restart; then SIGTERM, check,
 *         restart, walk.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "rel.h"
#include "support.h"

#define N_WRITERS          4u
#define STREAMS_PER_WRITER 4u
#define N_STREAMS          (N_WRITERS * STREAMS_PER_WRITER)
#define MAX_EVENTS         8u
#define MAX_DATA           600u
#define PREFIX             "full"

typedef struct ack {
    uint32_t stream, n;
    uint64_t first_rev, first_pos;
} ack;

typedef struct writer {
    uint32_t no;
    uint64_t salt;
    const char *address;
    rel_rng rng;
    uint64_t rev[STREAMS_PER_WRITER];
    ack *acks;
    size_t n_acks, cap_acks;
    uint64_t events_acked;
    uint64_t full_refusals;
    bool until_full; /* stop at the full store; else append `quota` events */
    uint64_t quota;
    pthread_t thread;
} writer;

static void push_ack(writer *w, const ack *a)
{
    if (w->n_acks == w->cap_acks) {
        size_t cap = w->cap_acks ? w->cap_acks * 2 : 256;
        ack *v = realloc(w->acks, cap * sizeof *v);
        if (!v) {
            rel_fail("out of memory");
        }
        w->acks = v;
        w->cap_acks = cap;
    }
    w->acks[w->n_acks++] = *a;
}

static es_err append_range(es_client *c, uint64_t salt, uint32_t s, uint64_t r, uint32_t n,
                           es_append_result *res)
{
    rel_ev evs[MAX_EVENTS];
    es_event e[MAX_EVENTS];
    for (uint32_t i = 0; i < n; i++) {
        rel_ev_make(&evs[i], salt, s, r + i, MAX_DATA);
        rel_ev_to_event(&evs[i], &e[i]);
    }
    es_expected ex = {r == 0 ? ES_EXPECT_NO_STREAM : ES_EXPECT_EXACT, r == 0 ? 0 : r - 1};
    char name[32];
    snprintf(name, sizeof name, "%s-%u", PREFIX, s);
    return es_stream_append(c, name, ex, e, n, res);
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    es_client *c = rel_client(w->address, 30000);
    uint32_t full_in_a_row = 0;
    uint64_t appended = 0;
    for (;;) {
        if (!w->until_full && appended >= w->quota) {
            break;
        }
        uint32_t k = (uint32_t)rel_range(&w->rng, 0, STREAMS_PER_WRITER - 1);
        uint32_t s = w->no * STREAMS_PER_WRITER + k;
        uint32_t n = full_in_a_row ? 1 : (uint32_t)rel_range(&w->rng, 1, MAX_EVENTS);
        es_append_result res;
        es_err rv = append_range(c, w->salt, s, w->rev[k], n, &res);
        if (rv == ES_OK) {
            if (res.duplicate || res.first_revision != w->rev[k] ||
                res.last_position != res.first_position + n - 1) {
                rel_fail("writer %u: %s-%u at %" PRIu64 " x%u acknowledged as revision %" PRIu64
                         " duplicate=%d",
                         w->no, PREFIX, s, w->rev[k], n, res.first_revision, res.duplicate);
            }
            ack a = {s, n, w->rev[k], res.first_position};
            push_ack(w, &a);
            w->rev[k] += n;
            w->events_acked += n;
            appended += n;
            full_in_a_row = 0;
            continue;
        }
        if (rv != ES_ERR_STORE_FULL || !w->until_full) {
            rel_fail("writer %u: append to %s-%u at revision %" PRIu64 " x%u: %s (%s)", w->no,
                     PREFIX, s, w->rev[k], n, es_errname(rv), es_client_errmsg(c));
        }
        w->full_refusals++;
        /* Nothing of the refused append may be visible. */
        char name[32];
        snprintf(name, sizeof name, "%s-%u", PREFIX, s);
        es_stream_info info;
        es_err irv = es_stream_info_get(c, name, &info);
        uint64_t next = irv == ES_OK ? info.last_revision + 1 : 0;
        if ((irv != ES_OK && irv != ES_ERR_NOT_FOUND) || next != w->rev[k]) {
            rel_fail("writer %u: after STORE_FULL for %s revisions %" PRIu64 "..%" PRIu64
                     " the stream reads %s, next revision %" PRIu64 " (PARTLY VISIBLE)",
                     w->no, name, w->rev[k], w->rev[k] + n - 1, es_errname(irv), next);
        }
        if (++full_in_a_row >= 5) {
            break;
        }
    }
    es_client_destroy(c);
    return NULL;
}

static void run_writers(writer *ws, const char *address, bool until_full, uint64_t quota)
{
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        ws[i].address = address;
        ws[i].until_full = until_full;
        ws[i].quota = quota;
        if (pthread_create(&ws[i].thread, NULL, writer_main, &ws[i]) != 0) {
            rel_fail("pthread_create");
        }
    }
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        pthread_join(ws[i].thread, NULL);
    }
}

/* Walk the whole log; it must hold exactly the acknowledged events. */
static uint64_t verify(const esd_proc *e, writer *ws, uint64_t salt, const char *when)
{
    es_client *c = rel_client(e->address, 30000);
    rel_walk wk;
    rel_walk_init(&wk, N_STREAMS);
    char why[512];
    es_err rv = rel_walk_log(&wk, c, PREFIX, salt, MAX_DATA, why, sizeof why);
    if (rv != ES_OK) {
        rel_fail("%s: reading the log: %s", when, why);
    }
    uint64_t acked = 0;
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        for (size_t j = 0; j < ws[i].n_acks; j++) {
            const ack *a = &ws[i].acks[j];
            acked += a->n;
            for (uint32_t x = 0; x < a->n; x++) {
                uint64_t pos = a->first_pos + x;
                if (pos > wk.head || wk.pos_stream[pos] != a->stream ||
                    wk.pos_rev[pos] != a->first_rev + x) {
                    rel_fail("%s: LOST ACKNOWLEDGED EVENT %s-%u revision %" PRIu64
                             " (position %" PRIu64 ", head %" PRIu64 ")",
                             when, PREFIX, a->stream, a->first_rev + x, pos, wk.head);
                }
            }
        }
    }
    if (wk.head != acked) {
        rel_fail("%s: the log holds %" PRIu64 " events but %" PRIu64
                 " were acknowledged (a refused append is visible)",
                 when, wk.head, acked);
    }
    es_stats st;
    rv = es_stats_get(c, &st);
    if (rv != ES_OK || st.head_position != wk.head) {
        rel_fail("%s: stats: %s, head %" PRIu64 " (walk: %" PRIu64 ")", when, es_errname(rv),
                 st.head_position, wk.head);
    }
    rel_walk_finish(&wk);
    es_client_destroy(c);
    return acked;
}

static void check_offline(const char *dir, const char *out, const char *when)
{
    const char *a[] = {"db", "check", dir, NULL};
    int cst = h_esctl(a, out, 120000);
    if (cst != 0) {
        char b[128];
        h_dump_tail(out, 30);
        rel_fail("%s: esctl db check: %s", when,
                 cst < 0 ? "did not finish" : h_status_str(cst, b, sizeof b));
    }
}

static void stop_clean(esd_proc *e, const char *when)
{
    int st;
    char b[128];
    if (esd_stop(e, SIGTERM, 10000, &st, NULL) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        h_dump_tail(e->log_file, 20);
        rel_fail("%s: esd did not exit 0 on SIGTERM: %s", when, h_status_str(st, b, sizeof b));
    }
}

/* What an early exit (rel_fail) must undo: the tmpfs mount of this cycle. */
static char mounted[320];

static void unmount_at_exit(void)
{
    if (mounted[0]) {
        umount2(mounted, MNT_DETACH);
        mounted[0] = '\0';
    }
}

static void one_cycle(bool disk, uint64_t cy, rel_rng *rng, uint64_t *events_total,
                      uint64_t *refusals_total)
{
    esd_proc e;
    char b[128];
    if (esd_init(&e, NULL) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    char out[400];
    snprintf(out, sizeof out, "%s/check.out", e.dir);
    if (disk) {
        if (mkdir(e.data_dir, 0700) != 0) {
            rel_fail("mkdir %s: %s", e.data_dir, strerror(errno));
        }
        if (mount("tmpfs", e.data_dir, "tmpfs", 0, "size=4m,mode=0700") != 0) {
            int err = errno;
            esd_destroy(&e);
            rel_skip("cannot mount a 4 MiB tmpfs (%s): the disk-full case needs "
                     "CAP_SYS_ADMIN (run as root); the map-full case still runs",
                     strerror(err));
        }
        snprintf(mounted, sizeof mounted, "%s", e.data_dir);
        /* A journal ring that leaves the 4 MiB tmpfs to the log. */
        e.args[0] = "--journal-size";
        e.args[1] = "64K";
        e.args[2] = NULL;
    } else {
        e.args[0] = "--map-size";
        e.args[1] = "2M";
        e.args[2] = NULL;
    }
    uint64_t salt = rel_rand(rng);
    writer ws[N_WRITERS];
    memset(ws, 0, sizeof ws);
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        ws[i].no = i;
        ws[i].salt = salt;
        ws[i].rng.s = rel_rand(rng);
    }
    if (esd_start(&e, 20000) != 0) {
        rel_fail("esd did not start: %s", h_status_str(e.status, b, sizeof b));
    }
    run_writers(ws, e.address, true, 0);
    uint64_t refusals = 0;
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        refusals += ws[i].full_refusals;
    }
    if (!esd_alive(&e)) {
        h_dump_tail(e.log_file, 20);
        rel_fail("esd died when the store filled up: %s", h_status_str(e.status, b, sizeof b));
    }
    uint64_t acked = verify(&e, ws, salt, "store full");
    if (cy == 1) {
        rel_log("%s full after %" PRIu64 " events; %" PRIu64
                " appends refused with STORE_FULL, none visible; reads served",
                disk ? "disk" : "map", acked, refusals);
    }

    if (disk) {
        /* Room comes back under the running server. */
        if (mount("tmpfs", e.data_dir, "tmpfs", MS_REMOUNT, "size=64m,mode=0700") != 0) {
            rel_fail("remounting the tmpfs larger: %s", strerror(errno));
        }
        run_writers(ws, e.address, false, 200);
        acked = verify(&e, ws, salt, "disk space back (same esd)");
        stop_clean(&e, "disk space back");
        check_offline(e.data_dir, out, "disk space back");
        if (esd_start(&e, 20000) != 0) {
            rel_fail("esd did not restart: %s", h_status_str(e.status, b, sizeof b));
        }
        acked = verify(&e, ws, salt, "restart after disk full");
    } else {
        stop_clean(&e, "map full");
        check_offline(e.data_dir, out, "map full");
        e.args[1] = "64M";
        if (esd_start(&e, 20000) != 0) {
            rel_fail("esd did not restart with a bigger map: %s",
                     h_status_str(e.status, b, sizeof b));
        }
        verify(&e, ws, salt, "restart with a bigger map");
        run_writers(ws, e.address, false, 200);
        acked = verify(&e, ws, salt, "appending after the map grew");
    }
    stop_clean(&e, "end of cycle");
    check_offline(e.data_dir, out, "end of cycle");
    *events_total += acked;
    *refusals_total += refusals;
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        free(ws[i].acks);
    }
    if (disk) {
        unmount_at_exit();
    }
    esd_destroy(&e);
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"disk", "cycles", NULL};
    uint64_t val[] = {0, 1};
    rel_args(argc, argv, "test_full", names, val);
    bool disk = val[0] != 0;
    atexit(unmount_at_exit);
    rel_rng rng = {rel_seed()};
    uint64_t events = 0, refusals = 0;
    int64_t t0 = h_now_ms();
    for (uint64_t cy = 1; cy <= val[1]; cy++) {
        one_cycle(disk, cy, &rng, &events, &refusals);
        if (cy % 10 == 0) {
            rel_log("cycle %" PRIu64 "/%" PRIu64, cy, val[1]);
        }
    }
    rel_log("PASS %s: %" PRIu64 " cycles in %.1f s; %" PRIu64 " STORE_FULL refusals, none "
            "acknowledged or visible; %" PRIu64 " events verified; appends resumed every time",
            disk ? "disk full" : "map full", val[1], (double)(h_now_ms() - t0) / 1000.0, refusals,
            events);
    return 0;
}

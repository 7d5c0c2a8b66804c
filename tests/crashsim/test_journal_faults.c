/*
 * test_journal_faults — the journal's error paths, end to end: esd runs
 * under the crash simulator's shim with one system call armed to fail
 * (shim.c, CRASHSIM_FAULTS), a client appends through the public library,
 * and the test checks what the client is told, what a running esd serves,
 * and what a restart recovers.
 *
 *   --case 1  the journal's fdatasync fails (EIO, writer thread)
 *   --case 2  a checkpoint's fdatasync of data.mdb fails (EIO, checkpoint thread)
 *   --case 3  the journal's write fails (ENOSPC, writer thread)
 *   --case 4  LMDB's commit fails after the entry is durable (a page write to
 *             data.mdb fails with ENOSPC, writer thread): the entry is unwritten
 *   --case 5  a checkpoint's write of its record into the journal fails (EIO)
 *   --case 6  a checkpoint's fdatasync of its record fails (EIO): the record
 *             stays in the page cache, and the restart reads it
 *   --case 7  LMDB's commit fails writing its meta page (ENOSPC, writer
 *             thread), after the entry is durable: LMDB refuses every later
 *             transaction until a restart; the entry is unwritten
 *   --case 8  the checkpoint thread's fdatasync of the journal fails after a
 *             consumer group's acks were written as an entry without a sync
 *             of its own (the timer's sync, or a checkpoint record's)
 *
 * Design notes
 * ------------
 * Each case: esd (--sync full, the journal) starts under the shim, with
 * CRASHSIM_FAULTS naming a file in the test's directory; the client makes
 * --appends appends of 1-3 events to 4 streams, each with the exact expected
 * revision, contents derived from (stream, revision) (rel.h). Then the test
 * writes the fault line and goes on appending:
 *
 *   8     a group over the whole log and one member (a second connection)
 *         are made before the fault; after it the member takes every event
 *         and acks it (answered: the entry was written), and no append
 *         follows, so the checkpoint thread's sync meets the fault (an ack
 *         after it gets ES_ERR_IO: the acks answered before count); the test
 *         waits for the fault to fire, then goes on as case 1. After the
 *         SIGKILL the restart still has the answered acks (the page cache
 *         held the entries): a new member's first batch has none of them.
 *   1, 2, 5, 6  the append that meets the fault (2, 5, 6: the first one to
 *         fail after the checkpoint thread met it; the appends before it
 *         are acknowledged and count) gets ES_ERR_IO, and so do the next
 *         appends and a snapshot save: the journal is broken until a
 *         restart. The running esd serves exactly the acknowledged events.
 *   3, 4  the append gets ES_ERR_STORE_FULL; the same append sent again
 *         succeeds at the positions the failed one would have had, and
 *         later appends too (case 3: the next entry is written where the
 *         failed one was; case 4: the entry of the failed commit is not
 *         replayed).
 *   7     the append gets ES_ERR_STORE_FULL, then appends, a snapshot save
 *         and a read get ES_ERR_IO (LMDB's fatal error) until a restart.
 *
 * The fault file is gone once the fault fired (the shim removes it): a
 * case whose fault never fired fails rather than passing vacuously. esd is
 * then killed with SIGKILL, so that the restart (without the shim) replays
 * the journal from the last checkpoint, and the whole log is walked: every
 * acknowledged event at its acknowledged position with its bytes, nothing
 * else (head = acknowledged events: nothing of a failed append is
 * replayed). The failed append (cases 1, 2, 5, 6, 7), sent again after the
 * restart, is new, not a duplicate, at the next position; SIGTERM ends esd
 * with exit 0 and `esctl db check` passes.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "es/group.h"
#include "rel.h"
#include "support.h"

#define N_STREAMS  4u
#define MAX_EVENTS 3u
#define MAX_DATA   300u
#define PREFIX     "jf"
#define MAX_ACKS   200000u

typedef struct ack {
    uint32_t stream;
    uint64_t first_rev;
    uint32_t n;
    uint64_t first_pos;
} ack;

typedef struct run {
    es_client *c;
    uint64_t salt;
    uint64_t next[N_STREAMS]; /* next revision per stream */
    uint64_t head;            /* acknowledged events = the last acknowledged position */
    ack *acks;
    size_t n_acks;
} run;

static es_err append_one(run *r, uint32_t s, uint32_t n, es_append_result *res)
{
    rel_ev evs[MAX_EVENTS];
    es_event e[MAX_EVENTS];
    uint64_t rev = r->next[s];
    for (uint32_t i = 0; i < n; i++) {
        rel_ev_make(&evs[i], r->salt, s, rev + i, MAX_DATA);
        rel_ev_to_event(&evs[i], &e[i]);
    }
    es_expected ex = {rev == 0 ? ES_EXPECT_NO_STREAM : ES_EXPECT_EXACT, rev == 0 ? 0 : rev - 1};
    char name[32];
    snprintf(name, sizeof name, "%s-%u", PREFIX, s);
    memset(res, 0, sizeof *res);
    return es_stream_append(r->c, name, ex, e, n, res);
}

/* Record an acknowledged append and check what it says. */
static void acked(run *r, uint32_t s, uint32_t n, const es_append_result *res, const char *when)
{
    REL_CHECK(res->synced, "%s: an acknowledgement with synced = false", when);
    REL_CHECK(!res->duplicate, "%s: a new append reported as a duplicate", when);
    REL_CHECK(res->first_position == r->head + 1,
              "%s: acknowledged at position %" PRIu64 ", expected %" PRIu64, when,
              res->first_position, r->head + 1);
    REL_CHECK(r->n_acks < MAX_ACKS, "too many appends");
    r->acks[r->n_acks++] = (ack){s, r->next[s], n, res->first_position};
    r->next[s] += n;
    r->head += n;
}

/* One acknowledged append to a random stream. */
static void append_ok(run *r, rel_rng *rng, const char *when)
{
    uint32_t s = (uint32_t)rel_range(rng, 0, N_STREAMS - 1);
    uint32_t n = (uint32_t)rel_range(rng, 1, MAX_EVENTS);
    es_append_result res;
    es_err rv = append_one(r, s, n, &res);
    REL_CHECK(rv == ES_OK, "%s: append: %s", when, es_strerror(rv));
    acked(r, s, n, &res, when);
}

/* The whole log holds exactly the acknowledged events, each where it was acknowledged. */
static void verify(const char *address, const run *r, const char *when)
{
    es_client *c = rel_client(address, 30000);
    REL_CHECK(c, "%s: cannot connect", when);
    rel_walk w;
    rel_walk_init(&w, N_STREAMS);
    char why[512];
    es_err rv = rel_walk_log(&w, c, PREFIX, r->salt, MAX_DATA, why, sizeof why);
    REL_CHECK(rv == ES_OK, "%s: reading the log: %s (%s)", when, es_strerror(rv), why);
    for (size_t i = 0; i < r->n_acks; i++) {
        const ack *a = &r->acks[i];
        for (uint32_t k = 0; k < a->n; k++) {
            uint64_t pos = rel_walk_pos(&w, a->stream, a->first_rev + k);
            REL_CHECK(pos == a->first_pos + k,
                      "%s: LOST ACKNOWLEDGED EVENT %s-%u revision %" PRIu64
                      " (acknowledged at position %" PRIu64 ", found at %" PRIu64 ")",
                      when, PREFIX, a->stream, a->first_rev + k, a->first_pos + k, pos);
        }
    }
    REL_CHECK(w.head == r->head,
              "%s: the log ends at position %" PRIu64 " but %" PRIu64
              " events were acknowledged (a failed append was stored)",
              when, w.head, r->head);
    rel_walk_finish(&w);
    es_client_destroy(c);
}

static void arm(const char *path, const char *line)
{
    FILE *f = fopen(path, "w");
    REL_CHECK(f && fputs(line, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

#define GROUP "jf-group"

/* Case 8: the positions whose ack was answered. */
static bool answered[MAX_EVENTS * 2000];

/* Case 8: the member takes and acks every event up to r->head, or until an
 * ack fails because the fault fired meanwhile (the journal is broken).
 * @return the acks answered. */
static uint64_t ack_all(es_group_member *m, const run *r, const char *fault_path)
{
    uint64_t done = 0;
    while (done < r->head) {
        es_recorded_event *evs;
        size_t n = 0;
        es_err rv = es_group_next(m, 30000, &evs, &n);
        REL_CHECK(rv == ES_OK && n > 0, "the member got nothing: %s", es_strerror(rv));
        uint64_t pos[1024];
        REL_CHECK(n <= 1024, "a batch of %zu events", n);
        for (size_t i = 0; i < n; i++) {
            pos[i] = evs[i].position;
        }
        rv = es_group_ack(m, pos, n);
        if (rv == ES_ERR_IO && !exists(fault_path)) {
            break; /* the sync of the earlier acks failed: the journal is broken */
        }
        REL_CHECK(rv == ES_OK, "ack: %s", es_strerror(rv));
        for (size_t i = 0; i < n; i++) {
            REL_CHECK(pos[i] < sizeof answered, "position %" PRIu64 " out of range", pos[i]);
            answered[pos[i]] = true;
        }
        done += n;
    }
    return done;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"case", "appends", NULL};
    uint64_t val[] = {1, 30};
    rel_args(argc, argv, "test_journal_faults", names, val);
    uint64_t which = val[0];
    REL_CHECK(which >= 1 && which <= 8, "--case 1..8");
    bool broken = which != 3 && which != 4; /* the journal refuses everything after the fault */
    bool group = which == 8;
    bool in_checkpoint = which == 2 || which == 5 || which == 6;
    bool lmdb_fatal = which == 7; /* LMDB refuses every transaction, reads too */
    if (h_sanitized()) {
        rel_skip("the shim is preloaded into esd, which a sanitizer runtime must come before");
    }
    const char *shim = getenv("CRASHSIM_SHIM");
    REL_CHECK(shim, "CRASHSIM_SHIM is not set (the shim's path)");
    static const char *const faults[] = {
        NULL,
        "sync journal EIO esd-writer 0\n",
        "sync data.mdb EIO esd-checkpoint 0\n",
        "write journal ENOSPC esd-writer 0\n",
        /* LMDB's meta pages are 0 and 1; its commit writes its other pages first */
        "write data.mdb ENOSPC esd-writer 8192\n",
        "write journal EIO esd-checkpoint 0\n",
        "sync journal EIO esd-checkpoint 0\n",
        /* the meta pages: 0..8191 */
        "write data.mdb ENOSPC esd-writer 0 8192\n",
        "sync journal EIO esd-checkpoint 0\n",
    };
    static const char *const what[] = {NULL,
                                       "journal fdatasync fails",
                                       "checkpoint fdatasync of data.mdb fails",
                                       "journal write fails",
                                       "LMDB commit fails after the entry",
                                       "checkpoint record write fails",
                                       "checkpoint record fdatasync fails",
                                       "LMDB's meta page write fails",
                                       "a sync of unsynced group acks fails"};

    rel_rng rng = {rel_seed()};
    run r = {.salt = rel_rand(&rng)};
    r.acks = calloc(MAX_ACKS, sizeof *r.acks);
    REL_CHECK(r.acks, "out of memory");
    const char *args[] = {"--sync", "full", "--sync-method", "journal", NULL};
    esd_proc e;
    REL_CHECK(esd_init(&e, args) == 0, "cannot make a temporary directory");
    REL_CHECK(mkdir(e.data_dir, 0700) == 0, "mkdir %s", e.data_dir);
    char fault_path[400];
    snprintf(fault_path, sizeof fault_path, "%s/fault", e.dir);
    setenv("CRASHSIM_DIR", e.data_dir, 1);
    setenv("CRASHSIM_FAULTS", fault_path, 1);
    setenv("LD_PRELOAD", shim, 1);
    int rc = esd_start(&e, 30000);
    unsetenv("LD_PRELOAD");
    unsetenv("CRASHSIM_FAULTS");
    unsetenv("CRASHSIM_DIR");
    REL_CHECK(rc == 0, "esd did not start under the shim");
    r.c = rel_client(e.address, 30000);
    REL_CHECK(r.c, "cannot connect");
    es_client *gc = NULL;
    es_group_member *gm = NULL;
    if (group) {
        es_group_settings gset;
        es_group_settings_init(&gset);
        es_err grv = es_group_create(r.c, GROUP, ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &gset);
        REL_CHECK(grv == ES_OK, "create the group: %s", es_strerror(grv));
        gc = rel_client(e.address, 30000);
        REL_CHECK(gc, "cannot connect");
        grv = es_group_join(gc, GROUP, 0, "jf", &gm);
        REL_CHECK(grv == ES_OK, "join the group: %s", es_strerror(grv));
    }
    for (uint64_t i = 0; i < val[1]; i++) {
        append_ok(&r, &rng, "before the fault");
    }
    rel_log("case %" PRIu64 " (%s): %zu appends (%" PRIu64 " events) acknowledged before the fault",
            which, what[which], r.n_acks, r.head);

    arm(fault_path, faults[which]);
    uint32_t fs = (uint32_t)rel_range(&rng, 0, N_STREAMS - 1);
    uint32_t fn = (uint32_t)rel_range(&rng, 1, MAX_EVENTS);
    es_append_result res;
    es_err rv;
    if (group) {
        uint64_t n_acked = ack_all(gm, &r, fault_path);
        REL_CHECK(n_acked > 0, "no ack was answered before the fault fired");
        /* No append follows: the timer (0.1 s) or a checkpoint syncs. */
        for (int i = 0; i < 60000 && exists(fault_path); i++) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        rel_log("the member's acks of %" PRIu64 " of %" PRIu64
                " events were answered before the sync failed",
                n_acked, r.head);
        rv = append_one(&r, fs, fn, &res);
    } else if (in_checkpoint) {
        /* The checkpoint thread meets the fault within a second of
         * appending (CKPT_INTERVAL); appends acknowledged until then count. */
        for (;;) {
            rv = append_one(&r, fs, fn, &res);
            if (rv != ES_OK) {
                break;
            }
            acked(&r, fs, fn, &res, "before the checkpoint failed");
            fs = (uint32_t)rel_range(&rng, 0, N_STREAMS - 1);
            fn = (uint32_t)rel_range(&rng, 1, MAX_EVENTS);
        }
    } else {
        rv = append_one(&r, fs, fn, &res);
    }
    REL_CHECK(!exists(fault_path), "the fault never fired (append: %s)", es_strerror(rv));
    es_err want = broken && !lmdb_fatal ? ES_ERR_IO : ES_ERR_STORE_FULL;
    REL_CHECK(rv == want, "the append that met the fault: %s, expected %s", es_strerror(rv),
              es_strerror(want));
    rel_log("the append that met the fault was refused: %s", es_strerror(rv));

    if (broken) {
        for (int i = 0; i < 3; i++) {
            es_append_result r2;
            uint32_t s = (uint32_t)rel_range(&rng, 0, N_STREAMS - 1);
            es_err rv2 = append_one(&r, s, 1, &r2);
            REL_CHECK(rv2 == ES_ERR_IO, "an append after the fault: %s, expected %s (broken)",
                      es_strerror(rv2), es_strerror(ES_ERR_IO));
        }
        char name[32];
        snprintf(name, sizeof name, "%s-%u", PREFIX, r.acks[0].stream);
        rv = es_snapshot_save(r.c, name, 0, 1, "state", 5);
        REL_CHECK(rv == ES_ERR_IO, "a snapshot save after the fault: %s, expected %s",
                  es_strerror(rv), es_strerror(ES_ERR_IO));
        es_snapshot snap;
        rv = es_snapshot_load(r.c, name, &snap);
        if (lmdb_fatal) {
            REL_CHECK(rv == ES_ERR_IO, "a read after LMDB's fatal error: %s, expected %s",
                      es_strerror(rv), es_strerror(ES_ERR_IO));
            rel_log("later appends, a snapshot save and a read refused with %s",
                    es_strerror(ES_ERR_IO));
        } else {
            REL_CHECK(rv == ES_ERR_NOT_FOUND, "the refused snapshot was stored (%s)",
                      es_strerror(rv));
            verify(e.address, &r, "the running esd, journal broken");
            rel_log("later appends and a snapshot save refused with %s; reads serve the "
                    "acknowledged events",
                    es_strerror(ES_ERR_IO));
        }
    } else {
        rv = append_one(&r, fs, fn, &res);
        REL_CHECK(rv == ES_OK, "the failed append sent again: %s", es_strerror(rv));
        acked(&r, fs, fn, &res, "the failed append sent again");
        for (int i = 0; i < 5; i++) {
            append_ok(&r, &rng, "after the fault");
        }
        verify(e.address, &r, "the running esd after the fault");
        rel_log("the same append sent again was stored at position %" PRIu64, res.first_position);
    }
    es_client_destroy(r.c);
    es_group_leave(gm);
    es_client_destroy(gc);
    int status;
    esd_stop(&e, SIGKILL, 10000, &status, NULL);

    REL_CHECK(esd_start(&e, 60000) == 0, "esd did not start again after the fault");
    verify(e.address, &r, "after the restart");
    r.c = rel_client(e.address, 30000);
    REL_CHECK(r.c, "cannot connect");
    if (broken) {
        rv = append_one(&r, fs, fn, &res);
        REL_CHECK(rv == ES_OK, "the failed append sent after the restart: %s", es_strerror(rv));
        acked(&r, fs, fn, &res, "the failed append sent after the restart");
    }
    append_ok(&r, &rng, "after the restart");
    if (group) {
        /* The acks survived: a new member's first batch starts above them. */
        gc = rel_client(e.address, 30000);
        REL_CHECK(gc, "cannot connect");
        rv = es_group_join(gc, GROUP, 0, "jf", &gm);
        REL_CHECK(rv == ES_OK, "join after the restart: %s", es_strerror(rv));
        es_recorded_event *evs;
        size_t n = 0;
        rv = es_group_next(gm, 30000, &evs, &n);
        REL_CHECK(rv == ES_OK && n > 0, "the member got nothing after the restart: %s",
                  es_strerror(rv));
        for (size_t i = 0; i < n; i++) {
            REL_CHECK(evs[i].position >= sizeof answered || !answered[evs[i].position],
                      "position %" PRIu64 " delivered again after SIGKILL although its ack was "
                      "answered",
                      evs[i].position);
        }
        rel_log("after SIGKILL no acked event came again (first batch: %zu events)", n);
        es_group_leave(gm);
        es_client_destroy(gc);
    }
    es_client_destroy(r.c);
    verify(e.address, &r, "after the restart and more appends");
    REL_CHECK(esd_stop(&e, SIGTERM, 20000, &status, NULL) == 0 && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0,
              "esd did not exit 0 on SIGTERM");
    const char *a[] = {"db", "check", e.data_dir, NULL};
    char check_out[400];
    snprintf(check_out, sizeof check_out, "%s/check.out", e.dir);
    if (h_esctl(a, check_out, 60000) != 0) {
        h_dump_tail(check_out, 10);
        rel_fail("esctl db check failed");
    }
    rel_log("after SIGKILL and a restart: %" PRIu64 " acknowledged events, all at their "
            "positions, nothing of the failed append; esctl db check passes",
            r.head);
    esd_destroy(&e);
    free(r.acks);
    return 0;
}

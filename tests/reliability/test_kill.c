/*
 * test_kill — the kill loop (kill -9 while writers append) and the kill
 * retry (kill between commit and reply, retried with the same event ids).
 *
 *   test_kill --mode 1 --cycles 50      kill loop (suite reliability); 1,000 in long
 *   test_kill --mode 3 --cycles 50      kill retry (suite reliability); 500 in long
 *
 * Design notes
 * ------------
 * esd runs with its default durable sync on one data directory for the
 * whole run. Each cycle, 8 writer threads (one client each) append to 64
 * streams; writer w owns streams 8w..8w+7 and is their only writer, so it
 * always knows the revision to expect. An event's id, type and data are
 * derived from (stream, revision) (rel.h), which makes every stored byte
 * checkable and makes a retry carry the same ids as the original.
 *
 * Every acknowledgement is recorded (stream, first revision, count, first
 * position, fingerprint of the payloads). After a random delay the server
 * is SIGKILLed in the middle of the load; each writer's call that was in
 * flight then fails with CLOSED (or TIMEOUT/CONNECTION) and is recorded as
 * "unknown outcome". With esd down, `esctl db check` must pass. esd is
 * restarted on the same directory and the log written since the last
 * verified position is walked (rel_walk_log: gapless positions from 1,
 * contiguous revisions from 0, every byte as appended). Then:
 *
 *   - every acknowledgement of the cycle is at its acknowledged positions
 *     and revisions;
 *   - every unknown-outcome append of the cycle is either wholly absent
 *     (the stream ends before its first revision) or wholly present once
 *     (the stream ends exactly at its last revision) — never in part;
 *   - kill loop: writers start the next cycle from the revisions they re-read
 *     with es_stream_info_get (which must agree with the walk);
 *   - kill retry: each unknown-outcome append is retried first, with the same ids
 *     and the same expectation (EXACT or ANY, chosen at random per append:
 *     ANY is the case where only idempotency prevents a second copy). If it
 *     had been stored, the retry must answer duplicate = true with the
 *     positions found in the log; if not, it must be stored now, once. A
 *     second walk confirms nothing was stored twice (a second copy would
 *     appear at the wrong revision with the wrong bytes).
 *
 * Every 100 cycles and at the end the whole log is walked again from
 * position 1, and the final stop is a SIGTERM that must exit 0.
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

#define N_WRITERS          8u
#define STREAMS_PER_WRITER 8u
#define N_STREAMS          (N_WRITERS * STREAMS_PER_WRITER)
#define MAX_EVENTS         4u
#define MAX_DATA           200u
#define PREFIX             "kill"
#define FULL_WALK_EVERY    100u

typedef struct ack {
    uint32_t stream;
    uint32_t n;
    uint64_t first_rev;
    uint64_t first_pos;
    uint64_t fingerprint;
    bool any; /* appended with ES_EXPECT_ANY */
} ack;

typedef struct ack_log {
    ack *v;
    size_t len, cap;
} ack_log;

static void ack_push(ack_log *l, const ack *a)
{
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        ack *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            rel_fail("out of memory");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->len++] = *a;
}

typedef struct writer {
    uint32_t no;
    int mode;
    uint64_t salt;
    const char *address;
    rel_rng rng;
    uint64_t rev[STREAMS_PER_WRITER]; /* next revision of each owned stream */
    ack_log acks;                     /* every acknowledgement, all cycles */
    size_t cycle_first_ack;           /* index of the first ack of this cycle */
    bool has_unknown;                 /* an append in flight at the kill */
    ack unknown;
    es_err unknown_rv;
    _Atomic uint64_t *cycle_acks;
    pthread_t thread;
} writer;

static uint64_t payload_fingerprint(uint64_t salt, uint32_t s, uint64_t r, uint32_t n)
{
    uint64_t h = 0;
    rel_ev ev;
    for (uint32_t i = 0; i < n; i++) {
        rel_ev_make(&ev, salt, s, r + i, MAX_DATA);
        h = h * 31 + (rel_hash(ev.data, ev.data_len) + rel_hash(ev.id, sizeof ev.id));
    }
    return h;
}

static void stream_name(uint32_t s, char *out, size_t cap)
{
    snprintf(out, cap, "%s-%u", PREFIX, s);
}

/*
 * Append n events (s, r..r+n-1) with the given expectation.
 * @return the client's code; res filled on ES_OK.
 */
static es_err append_range(es_client *c, uint64_t salt, uint32_t s, uint64_t r, uint32_t n,
                           bool any, es_append_result *res)
{
    rel_ev evs[MAX_EVENTS];
    es_event e[MAX_EVENTS];
    for (uint32_t i = 0; i < n; i++) {
        rel_ev_make(&evs[i], salt, s, r + i, MAX_DATA);
        rel_ev_to_event(&evs[i], &e[i]);
    }
    es_expected ex;
    if (any) {
        ex.kind = ES_EXPECT_ANY;
        ex.revision = 0;
    } else if (r == 0) {
        ex.kind = ES_EXPECT_NO_STREAM;
        ex.revision = 0;
    } else {
        ex.kind = ES_EXPECT_EXACT;
        ex.revision = r - 1;
    }
    char name[32];
    stream_name(s, name, sizeof name);
    return es_stream_append(c, name, ex, e, n, res);
}

static bool unknown_outcome(es_err rv)
{
    return rv == ES_ERR_CLOSED || rv == ES_ERR_TIMEOUT || rv == ES_ERR_CONNECTION;
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    es_client *c = rel_client(w->address, 10000);
    w->has_unknown = false;
    /* w->rev holds the revisions the main thread re-read from the server
     * (es_stream_info_get) after the last restart. */
    for (;;) {
        uint32_t k = (uint32_t)rel_range(&w->rng, 0, STREAMS_PER_WRITER - 1);
        uint32_t s = w->no * STREAMS_PER_WRITER + k;
        uint32_t n = (uint32_t)rel_range(&w->rng, 1, MAX_EVENTS);
        bool any = w->mode == 3 && (rel_rand(&w->rng) & 1);
        es_append_result res;
        es_err rv = append_range(c, w->salt, s, w->rev[k], n, any, &res);
        if (rv == ES_OK) {
            if (res.first_revision != w->rev[k] || res.last_revision != w->rev[k] + n - 1 ||
                res.last_position != res.first_position + n - 1 || res.duplicate || !res.synced) {
                rel_fail("writer %u: append to %s-%u at %" PRIu64 " x%u acknowledged as "
                         "revisions %" PRIu64 "..%" PRIu64 " positions %" PRIu64 "..%" PRIu64
                         " duplicate=%d synced=%d",
                         w->no, PREFIX, s, w->rev[k], n, res.first_revision, res.last_revision,
                         res.first_position, res.last_position, res.duplicate, res.synced);
            }
            ack a = {
                s,  n, w->rev[k], res.first_position, payload_fingerprint(w->salt, s, w->rev[k], n),
                any};
            ack_push(&w->acks, &a);
            w->rev[k] += n;
            atomic_fetch_add(w->cycle_acks, 1);
            continue;
        }
        if (unknown_outcome(rv)) {
            w->has_unknown = true;
            w->unknown = (ack){s, n, w->rev[k], 0, 0, any};
            w->unknown_rv = rv;
            break;
        }
        rel_fail("writer %u: append to %s-%u at revision %" PRIu64 " x%u: %s (%s)", w->no, PREFIX,
                 s, w->rev[k], n, es_errname(rv), es_client_errmsg(c));
    }
    es_client_destroy(c);
    return NULL;
}

/* Check the acks of this cycle against the walk. */
static void check_acks(const rel_walk *wk, const writer *w)
{
    for (size_t i = w->cycle_first_ack; i < w->acks.len; i++) {
        const ack *a = &w->acks.v[i];
        for (uint32_t j = 0; j < a->n; j++) {
            uint64_t pos = a->first_pos + j;
            if (pos > wk->head || wk->pos_stream[pos] != a->stream ||
                wk->pos_rev[pos] != a->first_rev + j) {
                rel_fail("LOST ACKNOWLEDGED EVENT: %s-%u revision %" PRIu64
                         " acknowledged at position %" PRIu64 " but the log (head %" PRIu64 ") %s",
                         PREFIX, a->stream, a->first_rev + j, pos, wk->head,
                         pos > wk->head ? "ends before it" : "holds another event there");
            }
        }
        uint64_t h = 0;
        for (uint32_t j = 0; j < a->n; j++) {
            h = h * 31 + wk->pos_hash[a->first_pos + j];
        }
        if (h != a->fingerprint) {
            rel_fail("acknowledged %s-%u revisions %" PRIu64 "..%" PRIu64 " at positions %" PRIu64
                     "..: the bytes read back differ from the bytes appended",
                     PREFIX, a->stream, a->first_rev, a->first_rev + a->n - 1, a->first_pos);
        }
    }
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"mode", "cycles", "max-delay-ms", NULL};
    uint64_t val[] = {1, 50, 200};
    rel_args(argc, argv, "test_kill", names, val);
    int mode = (int)val[0];
    uint64_t cycles = val[1];
    uint64_t max_delay = val[2];
    if (mode != 1 && mode != 3) {
        rel_fail("--mode must be 1 (kill loop) or 3 (kill retry)");
    }
    rel_rng rng = {rel_seed()};
    uint64_t salt = rel_rand(&rng);

    esd_proc e;
    if (esd_init(&e, NULL) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    char check_out[400];
    snprintf(check_out, sizeof check_out, "%s/check.out", e.dir);

    _Atomic uint64_t cycle_acks = 0;
    writer *ws = calloc(N_WRITERS, sizeof *ws);
    if (!ws) {
        rel_fail("out of memory");
    }
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        ws[i].no = i;
        ws[i].mode = mode;
        ws[i].salt = salt;
        ws[i].rng.s = rel_rand(&rng);
        ws[i].cycle_acks = &cycle_acks;
    }
    rel_walk wk;
    rel_walk_init(&wk, N_STREAMS);
    char why[512];
    int st;
    uint64_t unknown_absent = 0, unknown_present = 0, retry_dup = 0, retry_new = 0;
    uint64_t total_acks = 0, checks_beside = 0;
    int64_t t0 = h_now_ms(), load_ms = 0, restart_ms = 0, check_ms = 0, verify_ms = 0;

    if (esd_start(&e, 20000) != 0) {
        rel_fail("esd did not start (%s)", h_status_str(e.status, why, sizeof why));
    }
    for (uint64_t cy = 1; cy <= cycles; cy++) {
        /* ---- load, then SIGKILL at a random moment ---- */
        int64_t tl = h_now_ms();
        atomic_store(&cycle_acks, 0);
        for (uint32_t i = 0; i < N_WRITERS; i++) {
            ws[i].address = e.address;
            ws[i].cycle_first_ack = ws[i].acks.len;
            if (pthread_create(&ws[i].thread, NULL, writer_main, &ws[i]) != 0) {
                rel_fail("pthread_create");
            }
        }
        /* The kill lands while appends flow: after the first acknowledgement
         * of the cycle, plus a random delay. */
        int64_t deadline = h_now_ms() + 20000;
        while (atomic_load(&cycle_acks) == 0) {
            if (h_now_ms() > deadline || !esd_alive(&e)) {
                h_dump_tail(e.log_file, 20);
                rel_fail("cycle %" PRIu64 ": no acknowledgement within 20 s (esd %s)", cy,
                         e.pid ? "running" : h_status_str(e.status, why, sizeof why));
            }
            h_sleep_ms(1);
        }
        bool beside = cy % 10 == 0;
        if (beside) {
            /* esctl db check beside the running, loaded esd. */
            const char *a[] = {"db", "check", e.data_dir, NULL};
            int cst = h_esctl(a, check_out, 120000);
            if (cst != 0) {
                h_dump_tail(check_out, 30);
                rel_fail("cycle %" PRIu64 ": esctl db check beside esd under load: %s", cy,
                         cst < 0 ? "did not finish" : h_status_str(cst, why, sizeof why));
            }
            checks_beside++;
        }
        h_sleep_ms((int)rel_range(&rng, 0, max_delay));
        if (!esd_alive(&e)) {
            h_dump_tail(e.log_file, 20);
            rel_fail("cycle %" PRIu64 ": esd died by itself: %s", cy,
                     h_status_str(e.status, why, sizeof why));
        }
        esd_stop(&e, SIGKILL, 10000, &st, NULL);
        for (uint32_t i = 0; i < N_WRITERS; i++) {
            pthread_join(ws[i].thread, NULL);
        }
        uint64_t acks_now = atomic_load(&cycle_acks);
        total_acks += acks_now;
        load_ms += h_now_ms() - tl;

        /* ---- offline check with esd down ---- */
        int64_t tc = h_now_ms();
        const char *a[] = {"db", "check", e.data_dir, NULL};
        int cst = h_esctl(a, check_out, 120000);
        if (cst != 0) {
            h_dump_tail(check_out, 30);
            rel_fail("cycle %" PRIu64 ": esctl db check after SIGKILL: %s (data dir kept: %s)", cy,
                     cst < 0 ? "did not finish" : h_status_str(cst, why, sizeof why), e.data_dir);
        }
        check_ms += h_now_ms() - tc;

        /* ---- restart and verify ---- */
        int64_t tr = h_now_ms();
        if (esd_start(&e, 20000) != 0) {
            rel_fail("cycle %" PRIu64 ": esd did not restart after SIGKILL (%s)", cy,
                     h_status_str(e.status, why, sizeof why));
        }
        restart_ms += h_now_ms() - tr;
        int64_t tv = h_now_ms();
        es_client *c = rel_client(e.address, 30000);
        es_err rv = rel_walk_log(&wk, c, PREFIX, salt, MAX_DATA, why, sizeof why);
        if (rv != ES_OK) {
            rel_fail("cycle %" PRIu64 ": log after restart: %s", cy, why);
        }
        for (uint32_t i = 0; i < N_WRITERS; i++) {
            writer *w = &ws[i];
            check_acks(&wk, w);
            if (!w->has_unknown) {
                continue;
            }
            const ack *u = &w->unknown;
            uint64_t k = u->stream % STREAMS_PER_WRITER;
            uint64_t next = wk.next_rev[u->stream];
            bool present;
            if (next == u->first_rev) {
                present = false;
                unknown_absent++;
            } else if (next == u->first_rev + u->n) {
                present = true;
                unknown_present++;
            } else {
                rel_fail("cycle %" PRIu64 ": append in flight at the kill (%s-%u revisions "
                         "%" PRIu64 "..%" PRIu64 ", %s) is PARTLY stored: the stream ends at "
                         "revision %" PRIu64,
                         cy, PREFIX, u->stream, u->first_rev, u->first_rev + u->n - 1,
                         es_errname(w->unknown_rv), next - 1);
            }
            if (mode == 3) {
                es_append_result res;
                rv = append_range(c, salt, u->stream, u->first_rev, u->n, u->any, &res);
                if (rv != ES_OK) {
                    rel_fail("cycle %" PRIu64 ": retry of %s-%u revisions %" PRIu64 "..%" PRIu64
                             " (%s, %s before the retry): %s (%s)",
                             cy, PREFIX, u->stream, u->first_rev, u->first_rev + u->n - 1,
                             u->any ? "ANY" : "EXACT", present ? "stored" : "not stored",
                             es_errname(rv), es_client_errmsg(c));
                }
                if (present) {
                    uint64_t pos = rel_walk_pos(&wk, u->stream, u->first_rev);
                    if (!res.duplicate || res.first_position != pos ||
                        res.last_position != pos + u->n - 1 || res.first_revision != u->first_rev ||
                        res.last_revision != u->first_rev + u->n - 1) {
                        rel_fail("cycle %" PRIu64 ": retry of a stored append (%s-%u revisions "
                                 "%" PRIu64 "..%" PRIu64 " at positions %" PRIu64 "..%" PRIu64
                                 ", %s) answered duplicate=%d revisions %" PRIu64 "..%" PRIu64
                                 " positions %" PRIu64 "..%" PRIu64,
                                 cy, PREFIX, u->stream, u->first_rev, u->first_rev + u->n - 1, pos,
                                 pos + u->n - 1, u->any ? "ANY" : "EXACT", res.duplicate,
                                 res.first_revision, res.last_revision, res.first_position,
                                 res.last_position);
                    }
                    retry_dup++;
                } else {
                    if (res.duplicate || res.first_revision != u->first_rev ||
                        res.last_revision != u->first_rev + u->n - 1) {
                        rel_fail("cycle %" PRIu64 ": retry of an append that was not stored "
                                 "(%s-%u revisions %" PRIu64 "..%" PRIu64 ") answered "
                                 "duplicate=%d revisions %" PRIu64 "..%" PRIu64,
                                 cy, PREFIX, u->stream, u->first_rev, u->first_rev + u->n - 1,
                                 res.duplicate, res.first_revision, res.last_revision);
                    }
                    ack na = {u->stream,
                              u->n,
                              u->first_rev,
                              res.first_position,
                              payload_fingerprint(salt, u->stream, u->first_rev, u->n),
                              u->any};
                    ack_push(&w->acks, &na);
                    retry_new++;
                }
                /* A second retry of the same ids is a duplicate in any case. */
                es_append_result again;
                rv = append_range(c, salt, u->stream, u->first_rev, u->n, u->any, &again);
                uint64_t pos =
                    present ? rel_walk_pos(&wk, u->stream, u->first_rev) : res.first_position;
                if (rv != ES_OK || !again.duplicate || again.first_position != pos) {
                    rel_fail("cycle %" PRIu64 ": second retry of %s-%u revisions %" PRIu64
                             "..: %s duplicate=%d first position %" PRIu64 " (want %" PRIu64 ")",
                             cy, PREFIX, u->stream, u->first_rev, es_errname(rv), again.duplicate,
                             again.first_position, pos);
                }
                w->rev[k] = u->first_rev + u->n;
            }
        }
        if (mode == 3) {
            /* Nothing may have been stored twice: walk what the retries added. */
            rv = rel_walk_log(&wk, c, PREFIX, salt, MAX_DATA, why, sizeof why);
            if (rv != ES_OK) {
                rel_fail("cycle %" PRIu64 ": log after the retries: %s", cy, why);
            }
            for (uint32_t i = 0; i < N_WRITERS; i++) {
                check_acks(&wk, &ws[i]);
            }
        }
        /* Writers continue from the revisions they re-read from the server. */
        for (uint32_t s = 0; s < N_STREAMS; s++) {
            char name[32];
            stream_name(s, name, sizeof name);
            es_stream_info info;
            rv = es_stream_info_get(c, name, &info);
            uint64_t next = rv == ES_OK ? info.last_revision + 1 : 0;
            if ((rv != ES_OK && rv != ES_ERR_NOT_FOUND) || next != wk.next_rev[s]) {
                rel_fail("cycle %" PRIu64 ": stream info of %s: %s, next revision %" PRIu64
                         ", the log walk says %" PRIu64,
                         cy, name, es_errname(rv), next, wk.next_rev[s]);
            }
            ws[s / STREAMS_PER_WRITER].rev[s % STREAMS_PER_WRITER] = next;
        }
        if (cy % FULL_WALK_EVERY == 0 || cy == cycles) {
            rel_walk full;
            rel_walk_init(&full, N_STREAMS);
            rv = rel_walk_log(&full, c, PREFIX, salt, MAX_DATA, why, sizeof why);
            if (rv != ES_OK || full.head != wk.head) {
                rel_fail("cycle %" PRIu64 ": full walk from position 1: %s (head %" PRIu64
                         ", expected %" PRIu64 ")",
                         cy, rv != ES_OK ? why : "ok", full.head, wk.head);
            }
            for (uint32_t i = 0; i < N_WRITERS; i++) {
                size_t keep = ws[i].cycle_first_ack;
                ws[i].cycle_first_ack = 0;
                check_acks(&full, &ws[i]);
                ws[i].cycle_first_ack = keep;
            }
            rel_walk_finish(&full);
            rel_log("cycle %" PRIu64 "/%" PRIu64 ": full walk ok, %" PRIu64 " events", cy, cycles,
                    wk.head);
        }
        es_client_destroy(c);
        verify_ms += h_now_ms() - tv;
        if (cy % 10 == 0 && cy != cycles) {
            rel_log("cycle %" PRIu64 "/%" PRIu64 ": head %" PRIu64 ", acks %" PRIu64, cy, cycles,
                    wk.head, total_acks);
        }
    }
    if (esd_stop(&e, SIGTERM, 10000, &st, NULL) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        rel_fail("esd did not exit 0 on SIGTERM: %s", h_status_str(st, why, sizeof why));
    }
    const char *a[] = {"db", "check", e.data_dir, NULL};
    int cst = h_esctl(a, check_out, 120000);
    if (cst != 0) {
        h_dump_tail(check_out, 30);
        rel_fail("final esctl db check: %s", h_status_str(cst, why, sizeof why));
    }
    rel_log("PASS T%d: %" PRIu64 " SIGKILL cycles in %.1f s; %" PRIu64
            " events verified byte for byte (gapless, contiguous); %" PRIu64
            " acknowledgements all present; in flight at the kills: %" PRIu64 " absent, %" PRIu64
            " present once%s",
            mode, cycles, (double)(h_now_ms() - t0) / 1000.0, wk.head, total_acks, unknown_absent,
            unknown_present, mode == 1 ? "" : ";");
    if (mode == 3 && cycles >= 20 && retry_dup == 0) {
        rel_fail("no kill landed between a commit and its reply in %" PRIu64
                 " cycles: the retry path was never exercised (try another seed)",
                 cycles);
    }
    if (mode == 3) {
        rel_log("kill retry: retries with the same ids: %" PRIu64
                " duplicate=true with the original "
                "positions (committed, reply lost), %" PRIu64 " stored new, 0 second copies",
                retry_dup, retry_new);
    }
    rel_log("time: load %.1f s, db check %.1f s (+%" PRIu64 " beside esd), restart %.1f s, "
            "verify %.1f s",
            (double)load_ms / 1000.0, (double)check_ms / 1000.0, checks_beside,
            (double)restart_ms / 1000.0, (double)verify_ms / 1000.0);
    rel_walk_finish(&wk);
    for (uint32_t i = 0; i < N_WRITERS; i++) {
        free(ws[i].acks.v);
    }
    free(ws);
    esd_destroy(&e);
    return 0;
}

/*
 * test_scavenge_kill — kill -9 of esd while its scavenger removes events.
 *
 *   test_scavenge_kill --kills 5      (suite reliability)
 *   test_scavenge_kill --kills 50     (suite long)
 *
 * Design notes
 * ------------
 * esd (--scavenge-slice 10, so a scavenge takes many slices) gets 16
 * streams of 2,000 events each, contents derived from (stream, revision)
 * as in rel.h. Then half the streams are deleted and the other half get
 * max_count 100: 31,200 events for the scavenger to remove. esd is killed
 * with SIGKILL at a random moment (0..150 ms after it was seen at work:
 * `esctl db stat` reports fewer unreclaimed events than before), --kills
 * times, and restarted each time. After each restart, and again once the
 * scavenger has finished: `esctl db check` passes (holes explained by the
 * lifecycle, every index consistent: the store is never half-scavenged);
 * every retained event (the last 100 revisions of each max-count stream)
 * is there, byte for byte as appended; the deleted streams are NOT_FOUND;
 * and a retried append of a removed event is recognised (duplicate),
 * nothing written. At the end no removed event is left unreclaimed.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rel.h"
#include "support.h"

#define N_STREAMS  16u
#define PER_STREAM 2000u
#define KEEP       100u
#define MAX_DATA   300u
#define PREFIX     "sk"

static uint64_t salt;

static void stream_name(uint32_t s, char *out, size_t cap)
{
    snprintf(out, cap, PREFIX "-%u", s);
}

/* events_unreclaimed from `esctl --json db stat`. */
static uint64_t unreclaimed(const esd_proc *e, const char *out)
{
    const char *a[] = {"--json", "db", "stat", e->data_dir, NULL};
    if (h_esctl(a, out, 60000) != 0) {
        h_dump_tail(out, 20);
        rel_fail("esctl db stat failed");
    }
    FILE *f = fopen(out, "r");
    char buf[4096] = {0};
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    buf[n] = 0;
    const char *p = strstr(buf, "\"events_unreclaimed\"");
    if (!p || !(p = strchr(p, ':'))) {
        rel_fail("esctl db stat: no events_unreclaimed in: %s", buf);
    }
    return strtoull(p + 1, NULL, 10);
}

static void verify(const esd_proc *e, const char *out, const char *when)
{
    const char *a[] = {"db", "check", e->data_dir, NULL};
    if (h_esctl(a, out, 120000) != 0) {
        h_dump_tail(out, 30);
        rel_fail("%s: esctl db check found defects", when);
    }
    es_client *c = rel_client(e->address, 30000);
    for (uint32_t s = 0; s < N_STREAMS; s++) {
        char name[32];
        stream_name(s, name, sizeof name);
        es_read_iter *it;
        if (es_read_stream(c, name, NULL, &it) != ES_OK) {
            rel_fail("%s: read %s", when, name);
        }
        const es_recorded_event *ev;
        uint64_t want = PER_STREAM - KEEP, got = 0;
        es_err rv;
        while ((rv = es_read_next(it, &ev)) == ES_OK && ev) {
            rel_ev x;
            rel_ev_make(&x, salt, s, want, MAX_DATA);
            if (ev->revision != want || !rel_ev_equal(&x, ev)) {
                rel_fail("%s: %s revision %" PRIu64
                         " is not the event appended there (want %" PRIu64 ")",
                         when, name, ev->revision, want);
            }
            want++;
            got++;
        }
        es_read_destroy(it);
        if (s < N_STREAMS / 2) {
            if (rv != ES_ERR_NOT_FOUND) {
                rel_fail("%s: deleted %s: %s, expected NOT_FOUND", when, name, es_strerror(rv));
            }
        } else if (rv != ES_OK || got != KEEP) {
            rel_fail("%s: %s: %s, %" PRIu64 " of its %u retained events", when, name,
                     es_strerror(rv), got, KEEP);
        }
    }
    /* A retried append of revision 0 of a max-count stream (removed, or
     * about to be): recognised, nothing written. */
    char name[32];
    stream_name(N_STREAMS / 2, name, sizeof name);
    rel_ev x;
    es_event ev;
    rel_ev_make(&x, salt, N_STREAMS / 2, 0, MAX_DATA);
    rel_ev_to_event(&x, &ev);
    es_append_result res;
    es_err rv = es_stream_append(c, name, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, &res);
    if (rv != ES_OK || !res.duplicate) {
        rel_fail("%s: retry of a removed event: %s, duplicate %d", when, es_strerror(rv),
                 rv == ES_OK && res.duplicate);
    }
    es_client_destroy(c);
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"kills", NULL};
    uint64_t val[] = {5};
    rel_args(argc, argv, "test_scavenge_kill", names, val);
    rel_rng rng = {rel_seed()};
    salt = rel_rand(&rng);
    esd_proc e;
    static const char *const args[] = {
        "--sync", "none", "--scavenge-slice", "10", "--scavenge-interval", "10", NULL};
    if (esd_init(&e, args) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    char out[400], why[200];
    snprintf(out, sizeof out, "%s/esctl.out", e.dir);
    if (esd_start(&e, 20000) != 0) {
        rel_fail("esd did not start: %s", h_status_str(e.status, why, sizeof why));
    }
    es_client *c = rel_client(e.address, 30000);
    for (uint32_t s = 0; s < N_STREAMS; s++) {
        char name[32];
        stream_name(s, name, sizeof name);
        for (uint64_t r = 0; r < PER_STREAM; r += 100) {
            static rel_ev evs[100];
            es_event ev[100];
            for (uint32_t i = 0; i < 100; i++) {
                rel_ev_make(&evs[i], salt, s, r + i, MAX_DATA);
                rel_ev_to_event(&evs[i], &ev[i]);
            }
            es_err rv = es_stream_append(c, name, (es_expected){ES_EXPECT_ANY, 0}, ev, 100, NULL);
            if (rv != ES_OK) {
                rel_fail("append to %s: %s", name, es_strerror(rv));
            }
        }
    }
    for (uint32_t s = 0; s < N_STREAMS; s++) {
        char name[32];
        stream_name(s, name, sizeof name);
        es_err rv =
            s < N_STREAMS / 2
                ? es_stream_delete(c, name, (es_expected){ES_EXPECT_ANY, 0}, NULL)
                : es_stream_meta_set(c, name, (es_expected){ES_EXPECT_ANY, 0}, 0, KEEP, 0, NULL);
        if (rv != ES_OK) {
            rel_fail("lifecycle of %s: %s", name, es_strerror(rv));
        }
    }
    es_client_destroy(c);
    rel_log("%u events appended, %u to be removed by the scavenger", N_STREAMS * PER_STREAM,
            N_STREAMS / 2 * PER_STREAM + N_STREAMS / 2 * (PER_STREAM - KEEP));

    uint64_t kills = 0;
    for (uint64_t k = 0; k < val[0]; k++) {
        uint64_t before = unreclaimed(&e, out);
        if (before == 0) {
            break; /* finished: nothing left to interrupt */
        }
        int64_t deadline = h_now_ms() + 60000;
        while (unreclaimed(&e, out) == before) {
            if (h_now_ms() > deadline) {
                rel_fail("the scavenger made no progress in 60 s (%" PRIu64 " left)", before);
            }
        }
        h_sleep_ms((int)rel_range(&rng, 0, 150));
        int st;
        if (esd_stop(&e, SIGKILL, 10000, &st, NULL) != 0) {
            rel_fail("kill -9");
        }
        kills++;
        const char *a[] = {"db", "check", e.data_dir, NULL};
        if (h_esctl(a, out, 120000) != 0) {
            h_dump_tail(out, 30);
            rel_fail("after kill %" PRIu64 ": esctl db check found defects", kills);
        }
        if (esd_start(&e, 20000) != 0) {
            rel_fail("esd did not restart: %s", h_status_str(e.status, why, sizeof why));
        }
        char when[64];
        snprintf(when, sizeof when, "after kill %" PRIu64, kills);
        verify(&e, out, when);
        rel_log("kill %" PRIu64 " with %" PRIu64 " events unreclaimed: check clean, every "
                "retained event present",
                kills, before);
    }
    int64_t deadline = h_now_ms() + 120000;
    uint64_t left;
    while ((left = unreclaimed(&e, out)) != 0) {
        if (h_now_ms() > deadline) {
            rel_fail("the scavenger did not finish in 120 s (%" PRIu64 " left)", left);
        }
        h_sleep_ms(50);
    }
    verify(&e, out, "at the end");
    rel_log("%" PRIu64 " kills -9 during the scavenge; at the end nothing unreclaimed, check "
            "clean, every retained event present",
            kills);
    int st;
    if (esd_stop(&e, SIGTERM, 10000, &st, NULL) != 0 || st != 0) {
        rel_fail("esd stop");
    }
    esd_destroy(&e);
    rel_log("PASS");
    return 0;
}

/*
 * test_damage — damage: bit flips and truncation of the data file,
 * offline.
 *
 *   test_damage --trials 200     (suite reliability)
 *   test_damage --trials 5000    (suite long)
 *
 * Design notes
 * ------------
 * A healthy store is written once through store.h (3,000 events in 24
 * streams over many commits, contents derived from (stream, revision) as in
 * rel.h; the map of position -> (stream, revision) is kept). Each trial
 * copies its data.mdb (and key file) into a fresh directory and damages the copy in one of
 * these ways, chosen from the trial's own seed:
 *
 *   0 flip one random bit anywhere in the file
 *   1 flip 2..16 random bits anywhere
 *   2 flip 1..8 bits inside one random page
 *   3 truncate to a random length
 *   4 truncate to a random page boundary
 *   5 overwrite one random page with random bytes
 *   6 overwrite one random page with zeros
 *
 * on odd trials, and on even trials one bit at a chosen place:
 *
 *   7 the meta record of one of the two meta pages
 *   8 the stored next-stream counter's value
 *   9 the nodes (keys and values) of a random leaf page of any database:
 *     an index entry, a stream record, a record's bytes
 *
 * Then `esctl db check DIR` runs, esd is started on the copy and the whole
 * log is read through the client, forward over the global log and stream
 * by stream. Then one append of each kind is made (an existing stream with
 * ANY and with EXACT its stored last revision, a new stream with
 * NO_STREAM, a transaction of STREAM_EXISTS + NO_STREAM) and the touched
 * streams and the whole log are read again. The pass criterion, per trial:
 *
 *   - no crash: neither esctl nor esd dies of a signal, nor hangs;
 *   - no corrupt record served as valid: every event the server hands out
 *     is byte for byte the one stored at that position, stream and
 *     revision. Refusing to open, ES_ERR_CORRUPT and other read errors are
 *     all acceptable answers to damage;
 *   - no acknowledged append landed elsewhere: it is served at the stream,
 *     revision and position its acknowledgement gave (or the read answers
 *     an error), no stored event changed, and a refused append wrote
 *     nothing. Refusing the append is an acceptable answer.
 *
 * Also counted and printed (not failures): damage that left every answer
 * intact (flips in free space or slack), reads that ended early without an
 * error (e.g. LMDB fell back to its older meta page: an older, consistent
 * state), and trials where `esctl db check` passed but a read failed.
 *
 * The healthy store is encrypted and written through the journal (esd's
 * defaults; --journal 0 writes it with LMDB alone, the layout the
 * regressions were found on), and its key file and journal are copied
 * beside each damaged data.mdb, undamaged. A run of 100 trials or
 * more fails if esd refused more than 60 % of the copies: then the reads and
 * appends did not run, and the trials proved only that esd refuses.
 *
 * A failing trial prints its number, seed and damage; rerun it alone with
 * --seed S --first-trial N --trials 1. The damaged copy of the first
 * failing trial is kept (its path is printed).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel.h"
#include "support.h"
#include "store.h"

#define PREFIX     "dmg"
#define N_STREAMS  24u
#define N_EVENTS   3000u
#define PER_COMMIT 60u
#define MAX_DATA   300u
#define PAGE       4096u

static uint64_t salt;
/* 0: the chosen places leave the meta records alone. */
static uint64_t meta_flips = 1;
/* 1: the healthy store is written through the journal, as esd writes by
 * default, and the journal is copied too; 0: LMDB alone (the page layout
 * the regressions were found on). */
static bool with_journal = true;
static uint32_t orig_stream[N_EVENTS + 1];
static uint64_t orig_rev[N_EVENTS + 1];

/* Write the healthy store; remember where every event went. */
static void make_store(const char *dir)
{
    store_options o = {.path = dir, .sync = with_journal}; /* sync: the journal */
    store *s = NULL;
    char msg[256] = "";
    es_err rv = store_open(&o, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        rel_fail("store_open %s: %s %s", dir, es_errname(rv), msg);
    }
    uint64_t next_rev[N_STREAMS] = {0};
    static rel_ev ev[PER_COMMIT];
    static store_event_in in[PER_COMMIT];
    static store_append_in ap[PER_COMMIT];
    static store_append_result res[PER_COMMIT];
    static store_request req[PER_COMMIT];
    static char names[PER_COMMIT][16];
    rel_rng g = {salt};
    uint64_t pos = 0;
    for (uint32_t done = 0; done < N_EVENTS; done += PER_COMMIT) {
        for (uint32_t i = 0; i < PER_COMMIT; i++) {
            uint32_t st = (uint32_t)rel_range(&g, 0, N_STREAMS - 1);
            uint64_t r = next_rev[st]++;
            rel_ev_make(&ev[i], salt, st, r, MAX_DATA);
            snprintf(names[i], sizeof names[i], "%s-%u", PREFIX, st);
            in[i] = (store_event_in){.id = ev[i].id,
                                     .type = (const uint8_t *)ev[i].type,
                                     .type_len = strlen(ev[i].type),
                                     .data = ev[i].data,
                                     .data_len = ev[i].data_len};
            ap[i] = (store_append_in){.stream = (const uint8_t *)names[i],
                                      .stream_len = strlen(names[i]),
                                      .expect = STORE_EXPECT_ANY,
                                      .events = &in[i],
                                      .n_events = 1};
            req[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
            pos++;
            orig_stream[pos] = st;
            orig_rev[pos] = r;
        }
        rv = store_append_batch(s, req, PER_COMMIT);
        for (uint32_t i = 0; rv == ES_OK && i < PER_COMMIT; i++) {
            if (req[i].rv != ES_OK || res[i].first_position != pos - PER_COMMIT + 1 + i) {
                rv = req[i].rv != ES_OK ? req[i].rv : ES_ERR_INTERNAL;
            }
        }
        if (rv != ES_OK) {
            rel_fail("writing the healthy store: %s", es_errname(rv));
        }
    }
    store_close(s);
}

/*
 * The healthy store is encrypted (the default), so its key file goes with
 * every copy: without it esd refuses the store before reading a page, and
 * the trial would test nothing. So does its journal, whose checkpoint
 * record holds a checked copy of a meta page: with it esd finds a meta
 * page whose transaction id a flipped bit left consecutive with the other
 * page's (LMDB alone would open the older state and reuse the positions of
 * the newest commit). Both files are left undamaged.
 */
static int copy_keys(const char *from_dir, const char *to_dir)
{
    static const char *const names[] = {"keys.esk", "journal"};
    for (size_t i = 0; i < (with_journal ? 2u : 1u); i++) {
        char from[400], to[400];
        snprintf(from, sizeof from, "%s/%s", from_dir, names[i]);
        snprintf(to, sizeof to, "%s/%s", to_dir, names[i]);
        if (h_copy_file(from, to) != 0) {
            return -1;
        }
    }
    return 0;
}

typedef struct trial_result {
    bool refused;           /* esd would not open it */
    char refused_why[200];  /* ... the last line it printed */
    bool check_failed;      /* esctl db check exited 1 */
    bool read_error;        /* some read ended in an error */
    bool corrupt_error;     /* ... ES_ERR_CORRUPT among them */
    bool short_read;        /* ended early without an error */
    uint64_t served;        /* events served (all checked) */
    uint64_t trial;         /* its number (in) */
    uint64_t appends_acked; /* of the appends after the reads */
    bool writes_refused;    /* /readyz: the store refuses writes after damage */
} trial_result;

static const char *const damage_names[] = {
    "flip 1 bit",
    "flip 2..16 bits",
    "flip bits in one page",
    "truncate",
    "truncate at a page boundary",
    "random page",
    "zeroed page",
    "flip 1 bit in a meta page's record",
    "flip 1 bit in the next-stream counter",
    "flip 1 bit in a leaf page's nodes",
};

/* A leaf page (LMDB's P_LEAF flag at offset 10, no P_META/P_OVERFLOW). */
static bool is_leaf(int fd, uint64_t page, uint16_t *upper)
{
    uint8_t h[16];
    if (pread(fd, h, sizeof h, (off_t)(page * PAGE)) != (ssize_t)sizeof h) {
        return false;
    }
    uint16_t flags = (uint16_t)(h[10] | h[11] << 8);
    *upper = (uint16_t)(h[14] | h[15] << 8);
    return (flags & 0x02) && !(flags & 0x0c) && *upper >= 16 && *upper < PAGE;
}

/* The file offset of the next_stream counter's value (0: not found). */
static uint64_t counter_offset(int fd, uint64_t size)
{
    static uint8_t buf[1 << 20];
    for (uint64_t off = 0; off < size; off += sizeof buf - 32) {
        ssize_t n = pread(fd, buf, sizeof buf, (off_t)off);
        if (n <= 0) {
            break;
        }
        uint8_t *hit = memmem(buf, (size_t)n, "next_stream", 11);
        if (hit && hit - buf + 11 + 8 <= n) {
            return off + (uint64_t)(hit - buf) + 11;
        }
    }
    return 0;
}

/* Damage the file; describe what was done. @return 0 or -1. */
static int damage(const char *path, rel_rng *g, bool targeted, char *desc, size_t cap)
{
    int fd = open(path, O_RDWR);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 2 * (off_t)PAGE) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size;
    uint64_t pages = size / PAGE;
    int kind = targeted ? (meta_flips ? 7 + (int)rel_range(g, 0, 2) : 8 + (int)rel_range(g, 0, 1))
                        : (int)rel_range(g, 0, 6);
    int n = snprintf(desc, cap, "%s:", damage_names[kind]);
    size_t used = n > 0 ? (size_t)n : 0;
    int rc = 0;
    if (kind >= 7) {
        uint64_t off = 0;
        if (kind == 7) { /* the MDB_meta record after the 16-byte page header */
            off = rel_range(g, 0, 1) * PAGE + 16 + rel_range(g, 0, 135);
        } else if (kind == 8) {
            off = counter_offset(fd, size);
            off += off ? rel_range(g, 0, 7) : 0;
        } else {
            uint16_t upper = 0;
            for (int tries = 0; tries < 1000 && !off; tries++) {
                uint64_t page = rel_range(g, 2, pages - 1);
                if (is_leaf(fd, page, &upper)) {
                    off = page * PAGE + rel_range(g, upper, PAGE - 1);
                }
            }
        }
        uint8_t b;
        int bit = (int)rel_range(g, 0, 7);
        if (off == 0 || pread(fd, &b, 1, (off_t)off) != 1) {
            rc = -1;
        } else {
            b ^= (uint8_t)(1u << bit);
            rc = pwrite(fd, &b, 1, (off_t)off) == 1 ? 0 : -1;
        }
        snprintf(desc + used, cap > used ? cap - used : 0, " %" PRIu64 ".%d(page %" PRIu64 ")", off,
                 bit, off / PAGE);
    } else if (kind <= 2) {
        int flips = kind == 0 ? 1 : (int)rel_range(g, kind == 1 ? 2 : 1, kind == 1 ? 16 : 8);
        uint64_t page = rel_range(g, 0, pages - 1);
        for (int i = 0; i < flips; i++) {
            uint64_t off =
                kind == 2 ? page * PAGE + rel_range(g, 0, PAGE - 1) : rel_range(g, 0, size - 1);
            uint8_t b;
            if (pread(fd, &b, 1, (off_t)off) != 1) {
                rc = -1;
                break;
            }
            int bit = (int)rel_range(g, 0, 7);
            b ^= (uint8_t)(1u << bit);
            if (pwrite(fd, &b, 1, (off_t)off) != 1) {
                rc = -1;
                break;
            }
            if (used < cap) {
                n = snprintf(desc + used, cap - used, " %" PRIu64 ".%d(page %" PRIu64 ")", off, bit,
                             off / PAGE);
                used += n > 0 ? (size_t)n : 0;
            }
        }
    } else if (kind <= 4) {
        uint64_t len = kind == 3 ? rel_range(g, 0, size - 1) : rel_range(g, 0, pages - 1) * PAGE;
        rc = ftruncate(fd, (off_t)len);
        snprintf(desc + used, cap > used ? cap - used : 0, " %" PRIu64 " of %" PRIu64 " bytes", len,
                 size);
    } else {
        uint64_t page = rel_range(g, 0, pages - 1);
        uint8_t buf[PAGE];
        for (size_t i = 0; i < PAGE; i++) {
            buf[i] = kind == 5 ? (uint8_t)rel_rand(g) : 0;
        }
        if (pwrite(fd, buf, PAGE, (off_t)(page * PAGE)) != (ssize_t)PAGE) {
            rc = -1;
        }
        snprintf(desc + used, cap > used ? cap - used : 0, " page %" PRIu64 " of %" PRIu64, page,
                 pages);
    }
    if (close(fd) != 0) {
        rc = -1;
    }
    return rc;
}

/* The last non-empty line of a file (what LMDB printed before aborting). */
static void last_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    char line[400];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0]) {
            snprintf(out, cap, "%s", line);
        }
    }
    fclose(f);
}

/* The events a trial appended after its reads (see append_trial). */
#define N_APPENDED 5
typedef struct appended {
    char stream[32];
    uint8_t id[ES_UUID_BYTES];
    char data[64];
    es_err rv;         /* what the append (or its transaction) answered */
    uint64_t revision; /* when rv == ES_OK */
    uint64_t position;
} appended;
static appended app[N_APPENDED];
static size_t n_app;

/* A served event past the stored log must be one the trial appended, at
 * the revision and position its acknowledgement gave. */
static bool appended_ok(const es_recorded_event *ev, char *why, size_t cap)
{
    for (size_t i = 0; i < n_app; i++) {
        const appended *a = &app[i];
        if (memcmp(a->id, ev->id, ES_UUID_BYTES) != 0) {
            continue;
        }
        if (strcmp(a->stream, ev->stream) != 0 || ev->data_len != strlen(a->data) ||
            memcmp(ev->data, a->data, ev->data_len) != 0) {
            snprintf(why, cap, "the event appended to %s served as %s at position %" PRIu64,
                     a->stream, ev->stream, ev->position);
            return false;
        }
        if (a->rv == ES_OK && (ev->revision != a->revision || ev->position != a->position)) {
            snprintf(why, cap,
                     "the append to %s acknowledged revision %" PRIu64 " position %" PRIu64
                     " but is served at revision %" PRIu64 " position %" PRIu64,
                     a->stream, a->revision, a->position, ev->revision, ev->position);
            return false;
        }
        if (a->rv != ES_OK && a->rv != ES_ERR_CLOSED && a->rv != ES_ERR_TIMEOUT) {
            snprintf(why, cap, "the append to %s answered %s but is served at position %" PRIu64,
                     a->stream, es_errname(a->rv), ev->position);
            return false;
        }
        return true;
    }
    snprintf(why, cap, "an event at position %" PRIu64 " in %s that nobody appended", ev->position,
             ev->stream);
    return false;
}

/* The served event must be the original one at its position. */
static bool served_ok(const es_recorded_event *ev, char *why, size_t cap)
{
    if (ev->position > N_EVENTS) {
        return appended_ok(ev, why, cap);
    }
    if (ev->position == 0) {
        snprintf(why, cap, "an event at position %" PRIu64 " (the log has 1..%u)", ev->position,
                 N_EVENTS);
        return false;
    }
    uint32_t s = orig_stream[ev->position];
    uint64_t r = orig_rev[ev->position];
    char name[32];
    snprintf(name, sizeof name, "%s-%u", PREFIX, s);
    rel_ev want;
    rel_ev_make(&want, salt, s, r, MAX_DATA);
    if (strcmp(ev->stream, name) != 0 || ev->revision != r || !rel_ev_equal(&want, ev)) {
        snprintf(why, cap,
                 "position %" PRIu64 " served as %s revision %" PRIu64
                 " (%zu data bytes) but %s revision %" PRIu64 " was stored there",
                 ev->position, ev->stream, ev->revision, ev->data_len, name, r);
        return false;
    }
    return true;
}

/* Drain an iterator, checking every event. @return false on a bad event (why set). */
static bool drain(es_read_iter *it, trial_result *tr, uint64_t *count, es_err *rv_out, char *why,
                  size_t cap)
{
    for (;;) {
        const es_recorded_event *ev = NULL;
        es_err rv = es_read_next(it, &ev);
        if (rv != ES_OK) {
            *rv_out = rv;
            tr->read_error = true;
            if (rv == ES_ERR_CORRUPT) {
                tr->corrupt_error = true;
            }
            return true;
        }
        if (!ev) {
            *rv_out = ES_OK;
            return true;
        }
        if (!served_ok(ev, why, cap)) {
            return false;
        }
        (*count)++;
        tr->served++;
    }
}

/*
 * One trial. @return NULL when it passed, else a description of the
 * failure (static buffer).
 */
static const char *serve_trial(esd_proc *e, trial_result *tr);

/*
 * One trial: esctl db check, then esd and the reads (also after a check
 * that crashed, to know whether esd does too).
 * @return NULL when it passed, else a description of the failure.
 */
static const char *run_trial(esd_proc *e, const char *check_out, trial_result *tr)
{
    static char fail[1500];
    char b[128];
    uint64_t trial = tr->trial;
    memset(tr, 0, sizeof *tr);
    tr->trial = trial;
    const char *a[] = {"db", "check", e->data_dir, NULL};
    int cst = h_esctl(a, check_out, 60000);
    const char *check_fail = NULL;
    if (cst < 0) {
        check_fail = "esctl db check hung (killed after 60 s)";
    } else if (WIFSIGNALED(cst)) {
        check_fail = "esctl db check CRASHED";
    } else {
        tr->check_failed = WEXITSTATUS(cst) != 0;
    }
    const char *esd_fail = serve_trial(e, tr);
    if (!check_fail && !esd_fail) {
        return NULL;
    }
    char last[300] = "";
    if (check_fail && cst >= 0) {
        last_line(check_out, last, sizeof last);
    }
    snprintf(fail, sizeof fail, "%s%s%s%s%s%s%s", check_fail ? check_fail : "",
             check_fail && cst >= 0 ? ": " : "",
             check_fail && cst >= 0 ? h_status_str(cst, b, sizeof b) : "",
             last[0] ? ", last output: " : "", last, check_fail && esd_fail ? "; " : "",
             esd_fail ? esd_fail : (check_fail ? "; esd and its reads: no failure" : ""));
    return fail;
}

/* Remember an append's events and outcome for appended_ok. */
static void note_append(const char *stream, const es_event *ev, es_err rv,
                        const es_append_result *res)
{
    appended *a = &app[n_app++];
    snprintf(a->stream, sizeof a->stream, "%s", stream);
    memcpy(a->id, ev->id, ES_UUID_BYTES);
    snprintf(a->data, sizeof a->data, "%.*s", (int)ev->data_len, (const char *)ev->data);
    a->rv = rv;
    a->revision = rv == ES_OK ? res->first_revision : 0;
    a->position = rv == ES_OK ? res->first_position : 0;
}

/* The stream's original events and its acknowledged appends, read back by
 * stream: each checked by served_ok; an acknowledged append must be there.
 * @return false on a bad event or a missing acknowledged one (why set). */
static bool stream_after_appends(es_client *c, const char *stream, trial_result *tr, char *why,
                                 size_t cap)
{
    es_read_iter *it = NULL;
    if (es_read_stream(c, stream, NULL, &it) != ES_OK) {
        rel_fail("es_read_stream");
    }
    uint64_t count = 0;
    es_err rv = ES_OK;
    bool ok = drain(it, tr, &count, &rv, why, cap);
    es_read_destroy(it);
    if (!ok || rv != ES_OK) {
        return ok; /* an error answer is acceptable; a wrong event is not */
    }
    for (size_t i = 0; i < n_app; i++) {
        if (app[i].rv == ES_OK && strcmp(app[i].stream, stream) == 0 && app[i].revision >= count) {
            snprintf(why, cap,
                     "the append to %s acknowledged revision %" PRIu64 " but the stream ends "
                     "at %" PRIu64 " events without an error",
                     stream, app[i].revision, count);
            return false;
        }
    }
    return true;
}

/*
 * One append of each kind on the damaged store, after its reads: to an
 * existing stream with ANY, with EXACT (its stored last revision), to a new
 * stream (NO_STREAM), and a transaction (STREAM_EXISTS + NO_STREAM). Any
 * answer is acceptable; what is not: an acknowledged event that is not at
 * its stream, revision and position, a stored event disturbed, or an event
 * written although the append was refused. Checked by reading the touched
 * streams and the whole log again. @return NULL or a failure.
 */
static const char *append_trial(es_client *c, uint64_t trial, trial_result *tr)
{
    static char fail[600];
    char why[400];
    n_app = 0;
    char data[N_APPENDED][64];
    es_event ev[N_APPENDED];
    for (size_t i = 0; i < N_APPENDED; i++) {
        snprintf(data[i], sizeof data[i], "appended in trial %" PRIu64 " #%zu", trial, i);
        ev[i] = (es_event){.type = "Appended", .data = data[i], .data_len = strlen(data[i])};
    }
    uint64_t last1 = 0; /* the stored last revision of dmg-1 */
    for (uint32_t p = 1; p <= N_EVENTS; p++) {
        last1 = orig_stream[p] == 1 ? orig_rev[p] : last1;
    }
    char fresh[32], fresh_tx[32];
    snprintf(fresh, sizeof fresh, "%s-fresh", PREFIX);
    snprintf(fresh_tx, sizeof fresh_tx, "%s-fresh-tx", PREFIX);
    es_append_result res[2];
    es_err rv = es_stream_append(c, PREFIX "-0", (es_expected){ES_EXPECT_ANY, 0}, &ev[0], 1, res);
    note_append(PREFIX "-0", &ev[0], rv, res);
    rv = es_stream_append(c, PREFIX "-1", (es_expected){ES_EXPECT_EXACT, last1}, &ev[1], 1, res);
    note_append(PREFIX "-1", &ev[1], rv, res);
    rv = es_stream_append(c, fresh, (es_expected){ES_EXPECT_NO_STREAM, 0}, &ev[2], 1, res);
    note_append(fresh, &ev[2], rv, res);
    es_append_req tx[2] = {
        {PREFIX "-2", {ES_EXPECT_STREAM_EXISTS, 0}, &ev[3], 1},
        {fresh_tx, {ES_EXPECT_NO_STREAM, 0}, &ev[4], 1},
    };
    rv = es_txn_commit(c, tx, 2, res);
    note_append(PREFIX "-2", &ev[3], rv, &res[0]);
    note_append(fresh_tx, &ev[4], rv, &res[1]);
    for (size_t i = 0; i < n_app; i++) {
        tr->appends_acked += app[i].rv == ES_OK;
    }
    const char *streams[] = {PREFIX "-0", PREFIX "-1", PREFIX "-2", fresh, fresh_tx};
    for (size_t i = 0; i < sizeof streams / sizeof *streams; i++) {
        if (!stream_after_appends(c, streams[i], tr, why, sizeof why)) {
            snprintf(fail, sizeof fail, "APPEND LANDED WRONG (%s): %s", streams[i], why);
            return fail;
        }
    }
    es_read_iter *it = NULL;
    if (es_read_all(c, NULL, &it) != ES_OK) {
        rel_fail("es_read_all");
    }
    uint64_t count = 0;
    bool ok = drain(it, tr, &count, &rv, why, sizeof why);
    es_read_destroy(it);
    if (!ok) {
        snprintf(fail, sizeof fail, "APPEND LANDED WRONG (global log): %s", why);
        return fail;
    }
    return NULL;
}

/*
 * After the appends: /readyz answers 200, or 503 "writes refused" when a
 * write met damage, and then a new append must answer CORRUPT (the store
 * refuses every write until restart) while reads were served above.
 * @return NULL or a failure.
 */
static const char *readiness_trial(esd_proc *e, es_client *c, trial_result *tr)
{
    static char fail[300];
    uint16_t mport = esd_metrics_port(e, 5000);
    int code = 0;
    char *body = NULL;
    if (!mport || h_http(mport, "GET", "/readyz", &code, &body) != 0) {
        free(body);
        return esd_alive(e) ? "no answer from /readyz" : NULL;
    }
    bool refused = code == 503 && body && strstr(body, "writes refused");
    free(body);
    if (!refused) {
        if (code != 200) {
            snprintf(fail, sizeof fail, "/readyz answered %d", code);
            return fail;
        }
        return NULL;
    }
    tr->writes_refused = true;
    es_event ev = {.type = "Probe", .data = "p", .data_len = 1};
    es_append_result res;
    es_err rv =
        es_stream_append(c, PREFIX "-probe", (es_expected){ES_EXPECT_NO_STREAM, 0}, &ev, 1, &res);
    if (rv != ES_ERR_CORRUPT) {
        snprintf(fail, sizeof fail, "/readyz said writes are refused, but an append answered %s",
                 es_errname(rv));
        return fail;
    }
    return NULL;
}

/* Start esd on the damaged copy and read everything. @return NULL or a failure. */
static const char *serve_trial(esd_proc *e, trial_result *tr)
{
    static char fail[700];
    char b[128], why[400];
    int st = 0;
    if (esd_start(e, 20000) != 0) {
        if (e->status == 0) {
            snprintf(fail, sizeof fail, "esd neither started nor exited within 20 s");
            return fail;
        }
        if (WIFSIGNALED(e->status)) {
            last_line(e->log_file, why, sizeof why);
            snprintf(fail, sizeof fail, "esd CRASHED at start: %s, last output: %s",
                     h_status_str(e->status, b, sizeof b), why);
            return fail;
        }
        tr->refused = true;
        last_line(e->log_file, tr->refused_why, sizeof tr->refused_why);
        return NULL;
    }
    es_client *c = rel_client(e->address, 20000);
    const char *bad = NULL;
    es_err rv = ES_OK;
    uint64_t count = 0;
    es_read_iter *it = NULL;
    if (es_read_all(c, NULL, &it) != ES_OK) {
        rel_fail("es_read_all");
    }
    if (!drain(it, tr, &count, &rv, why, sizeof why)) {
        bad = "global log";
    } else if (rv == ES_OK && count < N_EVENTS) {
        tr->short_read = true;
    }
    es_read_destroy(it);
    if (rv != ES_OK) {
        esd_alive(e); /* a read error may be esd dying: then no more reads */
    }
    for (uint32_t s = 0; !bad && s < N_STREAMS && e->pid; s++) {
        char name[32];
        snprintf(name, sizeof name, "%s-%u", PREFIX, s);
        if (es_read_stream(c, name, NULL, &it) != ES_OK) {
            rel_fail("es_read_stream");
        }
        count = 0;
        if (!drain(it, tr, &count, &rv, why, sizeof why)) {
            bad = name;
        }
        es_read_destroy(it);
        if (rv != ES_OK && !esd_alive(e)) {
            break;
        }
    }
    const char *append_fail = NULL;
    if (!bad && e->pid && esd_alive(e)) {
        append_fail = append_trial(c, tr->trial, tr);
    }
    if (!bad && !append_fail && e->pid && esd_alive(e)) {
        append_fail = readiness_trial(e, c, tr);
    }
    es_client_destroy(c);
    if (bad) {
        snprintf(fail, sizeof fail, "CORRUPT RECORD SERVED AS VALID (%s): %s", bad, why);
        return fail;
    }
    if (append_fail) {
        return append_fail;
    }
    if (!e->pid || !esd_alive(e)) {
        if (WIFSIGNALED(e->status)) {
            last_line(e->log_file, why, sizeof why);
            snprintf(fail, sizeof fail, "esd CRASHED while serving reads: %s, last output: %s",
                     h_status_str(e->status, b, sizeof b), why);
            return fail;
        }
        snprintf(fail, sizeof fail, "esd exited while serving reads: %s",
                 h_status_str(e->status, b, sizeof b));
        return fail;
    }
    if (esd_stop(e, SIGTERM, 10000, &st, NULL) != 0) {
        snprintf(fail, sizeof fail, "esd did not stop within 10 s of SIGTERM");
        return fail;
    }
    if (WIFSIGNALED(st)) {
        last_line(e->log_file, why, sizeof why);
        snprintf(fail, sizeof fail, "esd CRASHED (found at SIGTERM): %s, last output: %s",
                 h_status_str(st, b, sizeof b), why);
        return fail;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    /* --meta-flips 0 leaves the meta records out of the chosen places. */
    static const char *const names[] = {"trials",  "first-trial",           "meta-flips",
                                        "journal", "expect-writes-refused", NULL};
    uint64_t val[] = {20, 1, 1, 1, 0};
    rel_args(argc, argv, "test_damage", names, val);
    meta_flips = val[2];
    with_journal = val[3] != 0;
    rel_rng rng = {rel_seed()};
    salt = rel_rand(&rng);
    int64_t t0 = h_now_ms();

    char base[256], healthy[300], healthy_file[320], out[320];
    if (h_mkdtemp("esd-damage", base, sizeof base) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    snprintf(healthy, sizeof healthy, "%s/healthy", base);
    snprintf(healthy_file, sizeof healthy_file, "%s/data.mdb", healthy);
    snprintf(out, sizeof out, "%s/check.out", base);
    make_store(healthy);
    {
        const char *a[] = {"db", "check", healthy, NULL};
        int cst = h_esctl(a, out, 60000);
        if (cst != 0) {
            h_dump_tail(out, 20);
            rel_fail("esctl db check of the healthy store failed");
        }
    }
    struct stat hst;
    stat(healthy_file, &hst);
    rel_log("healthy store: %u events in %u streams, data.mdb %lld bytes (%lld pages)", N_EVENTS,
            N_STREAMS, (long long)hst.st_size, (long long)hst.st_size / PAGE);

    uint64_t n_refused = 0, n_check = 0, n_corrupt = 0, n_err = 0, n_short = 0, n_intact = 0;
    uint64_t n_check_missed = 0, served = 0, failures = 0, acked = 0, n_wrefused = 0;
    uint64_t per_kind[10] = {0};
    bool kept = false;
    for (uint64_t t = val[1]; t < val[1] + val[0]; t++) {
        esd_proc e;
        if (esd_init(&e, NULL) != 0) {
            rel_fail("cannot make a temporary directory");
        }
        e.args[0] = "--metrics-listen";
        e.args[1] = "127.0.0.1:0";
        e.args[2] = NULL;
        e.quiet = true; /* refusing a damaged store is an expected outcome */
        char file[400], desc[600];
        snprintf(file, sizeof file, "%s/data.mdb", e.data_dir);
        if (mkdir(e.data_dir, 0700) != 0 || h_copy_file(healthy_file, file) != 0 ||
            copy_keys(healthy, e.data_dir) != 0) {
            rel_fail("copying the healthy store: %s", strerror(errno));
        }
        /* Odd trials: damage anywhere (the regressions above replay odd
         * trials); even trials: at chosen places. */
        bool targeted = t % 2 == 0;
        rel_rng g = {rel_mix(rel_seed() ^ rel_mix(t))};
        rel_rng peek = g;
        per_kind[targeted ? (meta_flips ? 7 + rel_range(&peek, 0, 2) : 8 + rel_range(&peek, 0, 1))
                          : rel_range(&peek, 0, 6)]++;
        if (damage(file, &g, targeted, desc, sizeof desc) != 0) {
            rel_fail("trial %" PRIu64 ": cannot damage the copy", t);
        }
        trial_result tr = {.trial = t};
        const char *f = run_trial(&e, out, &tr);
        if (f) {
            failures++;
            fprintf(stderr, "trial %" PRIu64 " (seed %" PRIu64 ", damage %s): %s\n", t, rel_seed(),
                    desc, f);
            if (!kept) {
                esd_stop(&e, SIGKILL, 5000, NULL, NULL);
                fprintf(stderr,
                        "  damaged copy kept in %s (rerun: --seed %" PRIu64
                        " --first-trial %" PRIu64 " --trials 1)\n",
                        e.data_dir, rel_seed(), t);
                kept = true;
                continue;
            }
        } else {
            n_refused += tr.refused;
            n_wrefused += tr.writes_refused;
            n_check += tr.check_failed;
            n_corrupt += tr.corrupt_error;
            n_err += tr.read_error && !tr.corrupt_error;
            n_short += tr.short_read;
            served += tr.served;
            acked += tr.appends_acked;
            bool intact = !tr.refused && !tr.check_failed && !tr.read_error && !tr.short_read;
            n_intact += intact;
            n_check_missed += !tr.check_failed && (tr.read_error || tr.short_read);
            if (val[0] <= 50) {
                rel_log("trial %" PRIu64 ": %s -> %s%s%s%s%s%s%s", t, desc,
                        tr.check_failed ? "check found damage" : "check clean",
                        tr.refused ? "; esd refused to open: " : "",
                        tr.refused ? tr.refused_why : "", tr.refused ? "" : "",
                        tr.corrupt_error ? "; reads: CORRUPT"
                        : tr.read_error  ? "; reads: error"
                                         : "",
                        tr.short_read ? "; reads ended early without error" : "",
                        intact ? "; nothing affected" : "");
            }
        }
        esd_destroy(&e);
        if (val[0] > 50 && (t - val[1] + 1) % 100 == 0) {
            rel_log("%" PRIu64 "/%" PRIu64 " trials, %" PRIu64 " failed", t - val[1] + 1, val[0],
                    failures);
        }
    }
    rel_log("%" PRIu64 " trials in %.1f s (%" PRIu64 " 1-bit, %" PRIu64 " multi-bit, %" PRIu64
            " in-page flips, %" PRIu64 " truncations, %" PRIu64 " at page boundary, %" PRIu64
            " random pages, %" PRIu64 " zeroed pages; chosen places: %" PRIu64 " meta, %" PRIu64
            " counter, %" PRIu64 " leaf nodes)",
            val[0], (double)(h_now_ms() - t0) / 1000.0, per_kind[0], per_kind[1], per_kind[2],
            per_kind[3], per_kind[4], per_kind[5], per_kind[6], per_kind[7], per_kind[8],
            per_kind[9]);
    rel_log(
        "outcomes: esd refused to open %" PRIu64 "; db check found damage %" PRIu64
        "; reads answered CORRUPT %" PRIu64 ", another error %" PRIu64
        "; ended early without an error %" PRIu64 "; check clean but reads affected %" PRIu64
        "; nothing affected %" PRIu64 "; %" PRIu64 " events served, all byte-identical; %" PRIu64
        " appends acknowledged, each found at its stream, revision and position; writes "
        "refused after damage met inside one %" PRIu64 " (each: /readyz 503, an append CORRUPT)",
        n_refused, n_check, n_corrupt, n_err, n_short, n_check_missed, n_intact, served, acked,
        n_wrefused);
    if (failures) {
        rel_fail("%" PRIu64 " of %" PRIu64 " trials crashed, hung or served a corrupt record "
                 "(details above)",
                 failures, val[0]);
    }
    /* The premise: most damage leaves a store esd opens, so the reads and
     * appends above ran. A run where esd refused nearly every copy (as it
     * did when the copies lacked the key file) has tested only the refusal. */
    if (val[0] >= 100 && n_refused * 10 > val[0] * 6) {
        rel_fail("esd refused %" PRIu64 " of %" PRIu64 " damaged copies: the trials did not "
                 "reach the reads and appends (last refusal above)",
                 n_refused, val[0]);
    }
    if (n_wrefused < val[4]) {
        rel_fail("writes were refused after damage in %" PRIu64
                 " trials, expected at least %" PRIu64,
                 n_wrefused, val[4]);
    }
    h_rm_rf(base);
    rel_log("PASS damage: no crash, no corrupt record served as valid, no append landed wrong");
    return 0;
}

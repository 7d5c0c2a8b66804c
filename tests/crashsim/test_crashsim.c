/*
 * test_crashsim — power losses simulated at many points of a durable
 * append workload; every state must open (or be refused cleanly) and keep
 * every acknowledged append.
 *
 *   test_crashsim --states 120 --rules 0     ext4-like rules (suites crashsim, reliability)
 *   test_crashsim --states 120 --rules 1     POSIX rules
 *   test_crashsim --method 1                 esd --sync-method lmdb (0: journal, the
 *                                            default; 2: nometasync)
 *   test_crashsim --states 40 --unsafe 1     esd --sync none: a loss MUST be found
 *   test_crashsim --dirsync-fails 1          a failing directory fsync stops the start
 *   test_crashsim --groups 1 --rules 1       with a consumer group acking (crashsim-groups)
 *   (suite long: --states 2000)
 *
 * Design notes
 * ------------
 * Recording: esd starts with --sync full (--sync-method as --method says;
 * the journal with a 16 KiB ring, so that checkpoints, and with 100
 * appends a wrap of the ring, fall inside the workload) under the shim (LD_PRELOAD,
 * CRASHSIM_DIR = its data directory, created beforehand, CRASHSIM_LOG), and
 * one client makes --appends appends of 1-3 events to 8 streams, each with
 * the exact expected revision. After each acknowledgement the size of the
 * log is taken: every record the commit needed was written before esd
 * replied (the shim records inside the call), so "acknowledged at record
 * k" (the records in that size) is never earlier than the truth, and an
 * append counts as required at a cut only when k <= cut. Event contents
 * derive from (stream, revision) (rel.h), so every stored byte is checked.
 *
 * Each state: a cut (3/8 uniform over the log, 1/8 before the first
 * acknowledgement, where the files are created, and half within two
 * records of an acknowledgement, where the interesting orders are) and a
 * seed; the
 * materialiser (materialise.h) writes the state into a fresh directory and
 * esd (without the shim) starts on it:
 *
 *   - it exits with a status (not a signal) and says "cannot open the
 *     store" with the reason: a refusal, allowed only when no acknowledged
 *     append is required;
 *   - or it serves: the whole log is walked (gapless positions, contiguous
 *     revisions, bytes as appended: no garbage), every required append is
 *     at its acknowledged positions, SIGTERM ends it with exit 0, and
 *     `esctl db check` passes on the directory.
 *
 * --groups 1 adds a consumer group over the whole log (created before the
 * first append) and one member on a second connection: after each append
 * it takes the next batch and acknowledges it (every 8th event parked
 * instead), then reads the group's committed checkpoint; each answer is
 * "acknowledged at record k" as above. A batch of acks and parks is a
 * journal entry written without an fdatasync of its own: it is durable
 * from the first fdatasync of the journal file after it (the next append
 * entry's, a checkpoint record's, or the 0.1 s timer's), so with the
 * journal a settlement or checkpoint answered at record k is required from
 * the first journal sync at a record >= k on (a conservative bound: that
 * sync came after the entry's write). In every state that serves, with
 * the creation required: the group exists, its checkpoint is at least
 * every required checkpoint, and a new member drains it: every event
 * above the checkpoint that was never settled comes, and no event whose
 * settlement is required comes again (after a restart nothing is in
 * flight). A kill -9 (no power loss) loses no answered settlement at all:
 * the property test of tests/groups checks that.
 *
 * --unsafe 1 records esd with --sync none (MDB_NOSYNC: nothing is ever
 * synced) and treats its acknowledgements as required anyway: the test then
 * passes only when some state lost an acknowledged append (or was found
 * damaged by `esctl db check`), proving the simulator can find a loss.
 *
 * --dirsync-fails 1 starts esd under the shim with fsync of the data
 * directory failing (CRASHSIM_FAIL_DIRSYNC), then with fsync of its parent
 * failing while esd creates the data directory: esd must refuse to start,
 * saying so, rather than serve a store whose names may not survive.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "es/group.h"
#include "log.h"
#include "materialise.h"
#include "rel.h"
#include "support.h"

#define N_STREAMS  8u
#define MAX_EVENTS 3u
#define MAX_DATA   300u
#define PREFIX     "cs"
/* A small ring: checkpoints every ~4 KiB of entries and wraps of the ring
 * fall inside the recorded workload. */
#define JOURNAL_SIZE "16K"

typedef struct ack {
    uint32_t stream;
    uint64_t first_rev;
    uint32_t n;
    uint64_t first_pos;
    uint64_t log_bytes;
    size_t record; /* acknowledged by this record count */
} ack;

#define GROUP "cs-group"

/* What the recorded member settled. */
typedef struct gstate {
    bool on;
    size_t created;     /* the creation acknowledged at this record count */
    size_t *settled;    /* by position: the record its ack or park was answered at */
    size_t cap;         /* positions 1..cap - 1 */
    uint64_t *cps;      /* committed checkpoints read, in order */
    size_t *cp_records; /* ... and the record each was read at */
    size_t n_cps;
    uint64_t log_bytes_created;
    uint64_t *settled_bytes; /* by position: log size when answered */
    uint64_t *cp_bytes;
    size_t *durable;    /* by position: the record count from which the settlement is
                           durable (the first journal sync after its answer) */
    size_t *cp_durable; /* ... of each checkpoint read */
} gstate;

static gstate grp;
static uint64_t grp_states, grp_settled_checked, grp_delivered, grp_window;

/* The record count from which what was written before record count k is
 * durable with the journal: up to and including the first fdatasync of the
 * journal file at a record >= k (SIZE_MAX: none came). Without a journal
 * (LMDB's own synced commits) an answer is durable when it is given: k. */
static size_t journal_durable_from(const cs_log *log, size_t k)
{
    uint64_t inos[8];
    size_t n_inos = 0;
    for (size_t i = 0; i < log->n; i++) {
        cs_hdr h;
        memcpy(&h, log->buf + log->off[i], sizeof h);
        const char *name = (const char *)log->buf + log->off[i] + sizeof h;
        if (h.type == CS_CREATE && n_inos < 8 &&
            ((h.len == 7 && !memcmp(name, "journal", 7)) ||
             (h.len == 11 && !memcmp(name, "journal.new", 11)))) {
            inos[n_inos++] = h.ino;
        }
    }
    if (n_inos == 0) {
        return k;
    }
    for (size_t i = k; i < log->n; i++) {
        cs_hdr h;
        memcpy(&h, log->buf + log->off[i], sizeof h);
        for (size_t j = 0; h.type == CS_SYNC && j < n_inos; j++) {
            if (h.ino == inos[j]) {
                return i + 1;
            }
        }
    }
    return SIZE_MAX;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* True when esd's log, since its last start, holds needle. */
static bool last_start_says(const char *log_path, const char *needle)
{
    FILE *f = fopen(log_path, "r");
    if (!f) {
        return false;
    }
    bool found = false;
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "==== start", 10)) {
            found = false;
        } else if (strstr(line, needle)) {
            found = true;
        }
    }
    fclose(f);
    return found;
}

static es_err append_one(es_client *c, uint64_t salt, uint32_t s, uint64_t r, uint32_t n,
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

/*
 * esd whose directory fsync fails must not start: the data directory's own
 * (parent false: it exists, esd creates the files in it), or its parent's
 * (parent true: esd creates the data directory).
 */
static void dirsync_fails(bool parent)
{
    const char *args[] = {"--sync", "full", NULL};
    esd_proc e;
    REL_CHECK(esd_init(&e, args) == 0, "cannot make a temporary directory");
    if (!parent) {
        REL_CHECK(mkdir(e.data_dir, 0700) == 0, "mkdir %s", e.data_dir);
    }
    char log_path[400];
    snprintf(log_path, sizeof log_path, "%s/ops.log", e.dir);
    e.quiet = true;
    setenv("CRASHSIM_DIR", parent ? e.dir : e.data_dir, 1);
    setenv("CRASHSIM_LOG", log_path, 1);
    setenv("CRASHSIM_FAIL_DIRSYNC", "1", 1);
    setenv("LD_PRELOAD", getenv("CRASHSIM_SHIM"), 1);
    int rc = esd_start(&e, 30000);
    unsetenv("LD_PRELOAD");
    unsetenv("CRASHSIM_FAIL_DIRSYNC");
    unsetenv("CRASHSIM_DIR");
    unsetenv("CRASHSIM_LOG");
    char buf[64];
    const char *which = parent ? "the parent of the data directory" : "the data directory";
    REL_CHECK(rc != 0, "esd started although the fsync of %s failed", which);
    REL_CHECK(e.status != 0 && WIFEXITED(e.status) && WEXITSTATUS(e.status) != 0,
              "esd did not exit with an error status (%s)",
              h_status_str(e.status, buf, sizeof buf));
    if (!last_start_says(e.log_file, "cannot fsync the directory")) {
        h_dump_tail(e.log_file, 10);
        rel_fail("esd's log does not name the failed fsync of %s", which);
    }
    rel_log("esd refused to start when the fsync of %s failed", which);
    esd_destroy(&e);
}

/* The recorded member's turn after append i: one batch settled (acked,
 * every 8th position parked), then the committed checkpoint read. */
static void member_step(es_group_member *gm, es_client *c, const char *log_path, uint64_t i)
{
    es_recorded_event *evs;
    size_t ne = 0;
    es_err rv = es_group_next(gm, 20000, &evs, &ne);
    REL_CHECK(rv == ES_OK && ne > 0, "append %" PRIu64 ": the member got nothing: %s", i,
              es_strerror(rv));
    uint64_t acked[MAX_EVENTS * N_STREAMS + 1], parked[MAX_EVENTS * N_STREAMS + 1];
    size_t na = 0, np = 0;
    for (size_t k = 0; k < ne; k++) {
        uint64_t pos = evs[k].position;
        REL_CHECK(pos > 0 && pos < grp.cap, "position %" PRIu64 " out of range", pos);
        REL_CHECK(grp.settled[pos] == SIZE_MAX, "position %" PRIu64 " delivered after its ack",
                  pos);
        if (pos % 8 == 0) {
            parked[np++] = pos;
        } else {
            acked[na++] = pos;
        }
        if (na + np == sizeof acked / sizeof acked[0]) {
            break;
        }
    }
    if (na) {
        rv = es_group_ack(gm, acked, na);
        REL_CHECK(rv == ES_OK, "ack: %s", es_strerror(rv));
    }
    if (np) {
        rv = es_group_nack(gm, parked, np, ES_NACK_PARK, "crashsim");
        REL_CHECK(rv == ES_OK, "park: %s", es_strerror(rv));
    }
    uint64_t bytes = file_size(log_path);
    for (size_t k = 0; k < na; k++) {
        grp.settled[acked[k]] = 0;
        grp.settled_bytes[acked[k]] = bytes;
    }
    for (size_t k = 0; k < np; k++) {
        grp.settled[parked[k]] = 0;
        grp.settled_bytes[parked[k]] = bytes;
    }
    es_group_info info;
    rv = es_group_info_get(c, GROUP, &info);
    REL_CHECK(rv == ES_OK, "group info: %s", es_strerror(rv));
    grp.cps[grp.n_cps] = info.checkpoint;
    grp.cp_bytes[grp.n_cps++] = file_size(log_path);
}

/*
 * The group in a served state (design notes, --groups). @return false when
 * an acknowledged settlement or checkpoint was lost (first_loss says how).
 */
static bool group_check(es_client *c, size_t cut, const char *where, char *first_loss,
                        size_t loss_len)
{
    if (grp.created > cut) {
        return true; /* its creation was never acknowledged */
    }
    es_group_info info;
    es_err rv = es_group_info_get(c, GROUP, &info);
    if (rv != ES_OK) {
        snprintf(first_loss, loss_len, "%s: the group is gone: %s", where, es_strerror(rv));
        return false;
    }
    for (size_t i = 0; i < grp.n_cps; i++) {
        if (grp.cp_durable[i] <= cut && grp.cps[i] > info.checkpoint) {
            snprintf(first_loss, loss_len,
                     "%s: the group's checkpoint %" PRIu64 " is below %" PRIu64
                     " (read at record %zu)",
                     where, info.checkpoint, grp.cps[i], grp.cp_records[i]);
            return false;
        }
    }
    uint64_t head = info.head_position;
    REL_CHECK(head < grp.cap, "%s: head %" PRIu64 " beyond the recorded log", where, head);
    grp_states++;
    bool window = false;
    for (uint64_t p = 1; p < grp.cap; p++) {
        grp_settled_checked += grp.durable[p] <= cut;
        window |= grp.settled[p] <= cut && grp.durable[p] > cut;
    }
    grp_window += window;
    bool *got = calloc(grp.cap, sizeof *got);
    REL_CHECK(got, "out of memory");
    es_group_member *m;
    rv = es_group_join(c, GROUP, 0, "check", &m);
    REL_CHECK(rv == ES_OK, "%s: join: %s", where, es_strerror(rv));
    bool ok = true;
    for (;;) {
        /* Done when every event above the checkpoint never settled came. */
        uint64_t missing = 0;
        for (uint64_t p = info.checkpoint + 1; p <= head && !missing; p++) {
            if (!got[p] && grp.settled[p] == SIZE_MAX) {
                missing = p;
            }
        }
        if (!missing) {
            break;
        }
        es_recorded_event *evs;
        size_t ne = 0;
        rv = es_group_next(m, 20000, &evs, &ne);
        REL_CHECK(rv == ES_OK, "%s: next: %s", where, es_strerror(rv));
        if (ne == 0) {
            snprintf(first_loss, loss_len,
                     "%s: position %" PRIu64 " (never settled) is not delivered", where, missing);
            ok = false;
            break;
        }
        uint64_t pos[MAX_EVENTS * N_STREAMS + 64];
        size_t np = 0;
        for (size_t k = 0; k < ne && np < sizeof pos / sizeof pos[0]; k++) {
            uint64_t p = evs[k].position;
            REL_CHECK(p > info.checkpoint && p <= head,
                      "%s: position %" PRIu64 " delivered, outside %" PRIu64 "..%" PRIu64, where, p,
                      info.checkpoint + 1, head);
            if (grp.durable[p] <= cut && ok) {
                snprintf(first_loss, loss_len,
                         "%s: position %" PRIu64 " delivered again although its settlement was "
                         "answered at record %zu and durable from record %zu",
                         where, p, grp.settled[p], grp.durable[p]);
                ok = false;
            }
            got[p] = true;
            pos[np++] = p;
            grp_delivered++;
        }
        rv = es_group_ack(m, pos, np);
        REL_CHECK(rv == ES_OK, "%s: ack: %s", where, es_strerror(rv));
        if (!ok) {
            break;
        }
    }
    es_group_leave(m);
    free(got);
    return ok;
}

/* Record the workload; returns the number of acknowledgements in *acks. */
static const char *sync_method = "journal";

static size_t record_run(const char *log_path, bool unsafe, uint64_t appends, uint64_t salt,
                         rel_rng *rng, ack **out)
{
    const char *args[] = {"--sync",    unsafe ? "none" : "full", "--sync-method",
                          sync_method, "--journal-size",         JOURNAL_SIZE,
                          NULL};
    esd_proc e;
    REL_CHECK(esd_init(&e, args) == 0, "cannot make a temporary directory");
    REL_CHECK(mkdir(e.data_dir, 0700) == 0, "mkdir %s", e.data_dir);
    const char *shim = getenv("CRASHSIM_SHIM");
    REL_CHECK(shim, "CRASHSIM_SHIM is not set (the shim's path)");
    setenv("CRASHSIM_DIR", e.data_dir, 1);
    setenv("CRASHSIM_LOG", log_path, 1);
    setenv("LD_PRELOAD", shim, 1);
    int rc = esd_start(&e, 30000);
    unsetenv("LD_PRELOAD");
    unsetenv("CRASHSIM_DIR");
    unsetenv("CRASHSIM_LOG");
    REL_CHECK(rc == 0, "esd did not start under the shim");
    es_client *c = rel_client(e.address, 20000);
    REL_CHECK(c, "cannot connect");
    es_client *gc = NULL;
    es_group_member *gm = NULL;
    if (grp.on) {
        es_group_settings gset;
        es_group_settings_init(&gset);
        es_err grv = es_group_create(c, GROUP, ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &gset);
        REL_CHECK(grv == ES_OK, "create the group: %s", es_strerror(grv));
        grp.log_bytes_created = file_size(log_path);
        gc = rel_client(e.address, 20000);
        REL_CHECK(gc, "cannot connect the member");
        grv = es_group_join(gc, GROUP, 0, "crashsim", &gm);
        REL_CHECK(grv == ES_OK, "join the group: %s", es_strerror(grv));
        grp.cap = appends * MAX_EVENTS + 2;
        grp.settled = calloc(grp.cap, sizeof *grp.settled);
        grp.settled_bytes = calloc(grp.cap, sizeof *grp.settled_bytes);
        grp.durable = calloc(grp.cap, sizeof *grp.durable);
        grp.cp_durable = calloc(appends, sizeof *grp.cp_durable);
        grp.cps = calloc(appends, sizeof *grp.cps);
        grp.cp_records = calloc(appends, sizeof *grp.cp_records);
        grp.cp_bytes = calloc(appends, sizeof *grp.cp_bytes);
        REL_CHECK(grp.settled && grp.settled_bytes && grp.cps && grp.cp_records && grp.cp_bytes &&
                      grp.durable && grp.cp_durable,
                  "out of memory");
        for (size_t i = 0; i < grp.cap; i++) {
            grp.settled[i] = SIZE_MAX;
        }
    }
    ack *acks = calloc(appends, sizeof *acks);
    uint64_t next[N_STREAMS] = {0};
    REL_CHECK(acks, "out of memory");
    size_t n = 0;
    for (uint64_t i = 0; i < appends; i++) {
        uint32_t s = (uint32_t)rel_range(rng, 0, N_STREAMS - 1);
        uint32_t k = (uint32_t)rel_range(rng, 1, MAX_EVENTS);
        es_append_result res;
        es_err rv = append_one(c, salt, s, next[s], k, &res);
        REL_CHECK(rv == ES_OK, "append %" PRIu64 ": %s", i, es_strerror(rv));
        REL_CHECK(res.synced == !unsafe, "append %" PRIu64 ": synced = %d", i, res.synced);
        acks[n++] = (ack){s, next[s], k, res.first_position, file_size(log_path), 0};
        next[s] += k;
        if (gm) {
            member_step(gm, c, log_path, i);
        }
    }
    es_group_leave(gm);
    if (gc) {
        es_client_destroy(gc);
    }
    es_client_destroy(c);
    esd_end(&e, 10000);
    *out = acks;
    return n;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"states",        "rules",  "unsafe", "appends",
                                        "dirsync-fails", "method", "groups", NULL};
    uint64_t val[] = {120, 0, 0, 40, 0, 0, 0};
    rel_args(argc, argv, "test_crashsim", names, val);
    static const char *const methods[] = {"journal", "lmdb", "nometasync"};
    REL_CHECK(val[5] < 3, "--method: 0 journal, 1 lmdb, 2 nometasync");
    sync_method = methods[val[5]];
    uint64_t states = val[0], appends = val[3];
    grp.on = val[6] != 0;
    cs_rules rules = val[1] ? CS_RULES_POSIX : CS_RULES_EXT4;
    bool unsafe = val[2] != 0;
    if (h_sanitized()) {
        rel_skip("the shim is preloaded into esd, which a sanitizer runtime must come before");
    }
    REL_CHECK(getenv("CRASHSIM_SHIM"), "CRASHSIM_SHIM is not set (the shim's path)");
    if (val[4]) {
        dirsync_fails(false);
        dirsync_fails(true);
        return 0;
    }
    rel_rng rng = {rel_seed()};
    uint64_t salt = rel_rand(&rng);
    char root[256], log_path[320], err[512], why[512];
    REL_CHECK(h_mkdtemp("crashsim", root, sizeof root) == 0, "mkdtemp");
    snprintf(log_path, sizeof log_path, "%s/ops.log", root);

    int64_t t0 = h_now_ms();
    ack *acks;
    size_t n_acks = record_run(log_path, unsafe, appends, salt, &rng, &acks);
    cs_log log;
    REL_CHECK(cs_log_load(&log, log_path, err, sizeof err) == 0, "%s", err);
    for (size_t i = 0; i < n_acks; i++) {
        acks[i].record = cs_log_records_in(&log, acks[i].log_bytes);
    }
    /* Cut points near the group's answers too. */
    size_t *near = calloc(n_acks + 2 * grp.cap + grp.n_cps + 1, sizeof *near);
    size_t n_near = 0;
    REL_CHECK(near, "out of memory");
    for (size_t i = 0; i < n_acks; i++) {
        near[n_near++] = acks[i].record;
    }
    if (grp.on) {
        grp.created = cs_log_records_in(&log, grp.log_bytes_created);
        for (size_t p = 0; p < grp.cap; p++) {
            grp.durable[p] = SIZE_MAX;
            if (grp.settled[p] != SIZE_MAX) {
                grp.settled[p] = cs_log_records_in(&log, grp.settled_bytes[p]);
                grp.durable[p] = journal_durable_from(&log, grp.settled[p]);
                near[n_near++] = grp.settled[p];
                if (grp.durable[p] != SIZE_MAX) {
                    near[n_near++] = grp.durable[p]; /* where it becomes required */
                }
            }
        }
        for (size_t i = 0; i < grp.n_cps; i++) {
            grp.cp_records[i] = cs_log_records_in(&log, grp.cp_bytes[i]);
            grp.cp_durable[i] = journal_durable_from(&log, grp.cp_records[i]);
        }
    }
    rel_log("recorded %zu appends, %zu log records (%zu bytes), rules %s%s", n_acks, log.n, log.len,
            rules == CS_RULES_POSIX ? "posix" : "ext4", unsafe ? ", esd --sync none" : "");

    const char *args[] = {"--sync",     "full", "--sync-method", sync_method, "--journal-size",
                          JOURNAL_SIZE, NULL};
    esd_proc e;
    REL_CHECK(esd_init(&e, args) == 0, "cannot make a temporary directory");
    e.quiet = true;
    uint64_t served = 0, refused = 0, lost_states = 0, checked_acks = 0;
    uint64_t pend_pages = 0, kept_pages = 0, pend_ops = 0, kept_ops = 0;
    char first_loss[512] = "";
    for (uint64_t t = 0; t < states; t++) {
        size_t cut;
        uint64_t pick = rel_range(&rng, 0, 7);
        if (n_acks == 0 || pick < 3) {
            cut = (size_t)rel_range(&rng, 0, log.n);
        } else if (pick == 3) {
            /* creating the store: before the first acknowledgement */
            cut = (size_t)rel_range(&rng, 0, acks[0].record);
        } else {
            size_t a = near[rel_range(&rng, 0, n_near - 1)];
            int64_t d = (int64_t)rel_range(&rng, 0, 4) - 2;
            cut = (int64_t)a + d < 0 ? 0 : (size_t)((int64_t)a + d);
            cut = cut > log.n ? log.n : cut;
        }
        uint64_t seed = rel_rand(&rng);
        h_rm_rf(e.data_dir);
        REL_CHECK(mkdir(e.data_dir, 0700) == 0, "mkdir %s", e.data_dir);
        cs_state_stats st;
        REL_CHECK(cs_materialise(&log, cut, rules, seed, e.data_dir, &st, err, sizeof err) == 0,
                  "state %" PRIu64 ": %s", t, err);
        pend_pages += st.pending_pages;
        kept_pages += st.kept_pages;
        pend_ops += st.pending_ops;
        kept_ops += st.kept_ops;
        size_t required = 0;
        for (size_t i = 0; i < n_acks; i++) {
            required += acks[i].record <= cut;
        }
        char where[160];
        snprintf(where, sizeof where,
                 "state %" PRIu64 " (cut %zu of %zu, seed %" PRIu64 ", %zu appends required)", t,
                 cut, log.n, seed, required);

        if (esd_start(&e, 30000) != 0) {
            if (e.status == 0 || WIFSIGNALED(e.status)) {
                h_dump_tail(e.log_file, 20);
                rel_fail("%s: esd did not start and did not exit cleanly (%s)", where,
                         h_status_str(e.status, why, sizeof why));
            }
            if (!last_start_says(e.log_file, "msg=\"cannot open the store\"")) {
                h_dump_tail(e.log_file, 20);
                rel_fail("%s: esd exited (%s) without saying why", where,
                         h_status_str(e.status, why, sizeof why));
            }
            refused++;
            if (required) {
                lost_states++;
                if (!unsafe) {
                    h_dump_tail(e.log_file, 10);
                    rel_fail("%s: esd refused the state, losing acknowledged appends", where);
                }
                if (!first_loss[0]) {
                    snprintf(first_loss, sizeof first_loss, "%s: refused", where);
                }
            }
            continue;
        }
        served++;
        es_client *c = rel_client(e.address, 20000);
        REL_CHECK(c, "%s: cannot connect", where);
        rel_walk w;
        rel_walk_init(&w, N_STREAMS);
        es_err rv = rel_walk_log(&w, c, PREFIX, salt, MAX_DATA, why, sizeof why);
        REL_CHECK(rv == ES_OK || (unsafe && rv == ES_ERR_CORRUPT), "%s: log walk: %s (%s)", where,
                  es_strerror(rv), rv == ES_ERR_CORRUPT ? why : "");
        bool lost = rv != ES_OK;
        for (size_t i = 0; i < n_acks && !lost; i++) {
            if (acks[i].record > cut) {
                continue;
            }
            checked_acks++;
            for (uint32_t k = 0; k < acks[i].n; k++) {
                uint64_t pos = rel_walk_pos(&w, acks[i].stream, acks[i].first_rev + k);
                if (pos != acks[i].first_pos + k) {
                    lost = true;
                    if (!first_loss[0]) {
                        snprintf(first_loss, sizeof first_loss,
                                 "%s: %s-%u revision %" PRIu64 " acknowledged at position %" PRIu64
                                 " (record %zu), found at %" PRIu64,
                                 where, PREFIX, acks[i].stream, acks[i].first_rev + k,
                                 acks[i].first_pos + k, acks[i].record, pos);
                    }
                }
            }
        }
        rel_walk_finish(&w);
        if (grp.on && !lost && !group_check(c, cut, where, first_loss, sizeof first_loss)) {
            lost = true;
        }
        es_client_destroy(c);
        lost_states += lost;
        REL_CHECK(unsafe || !lost, "%s", first_loss);
        int status;
        REL_CHECK(esd_stop(&e, SIGTERM, 20000, &status, NULL) == 0 && WIFEXITED(status) &&
                      WEXITSTATUS(status) == 0,
                  "%s: esd did not exit 0 on SIGTERM", where);
        const char *a[] = {"db", "check", e.data_dir, NULL};
        char check_out[400];
        snprintf(check_out, sizeof check_out, "%s/check.out", e.dir);
        int cst = h_esctl(a, check_out, 60000);
        if (cst != 0 && unsafe) {
            /* damage found: the unsafe variant is caught here as well */
            lost_states += !lost;
            if (!first_loss[0]) {
                snprintf(first_loss, sizeof first_loss, "%s: esctl db check found damage", where);
            }
        } else if (cst != 0) {
            h_dump_tail(check_out, 10);
            rel_fail("%s: esctl db check failed (%d)", where, cst);
        }
    }
    int64_t ms = h_now_ms() - t0;
    rel_log("%" PRIu64 " states: %" PRIu64 " served, %" PRIu64 " refused cleanly, %" PRIu64
            " lost an acknowledged append or failed the check; %" PRIu64
            " acknowledged appends checked; "
            "%" PRIu64 " of %" PRIu64 " pending page writes kept, %" PRIu64 " of %" PRIu64
            " entry operations; %.1f s",
            states, served, refused, lost_states, checked_acks, kept_pages, pend_pages, kept_ops,
            pend_ops, (double)ms / 1000.0);
    if (grp.on) {
        rel_log("group: %" PRIu64 " states checked, %" PRIu64
                " answered acks and parks required, %" PRIu64
                " events delivered after restarts; %" PRIu64
                " states cut between an answer and the journal sync that made it durable",
                grp_states, grp_settled_checked, grp_delivered, grp_window);
    }
    esd_destroy(&e);
    cs_log_free(&log);
    free(acks);
    free(near);
    free(grp.settled);
    free(grp.settled_bytes);
    free(grp.durable);
    free(grp.cp_durable);
    free(grp.cps);
    free(grp.cp_records);
    free(grp.cp_bytes);
    h_rm_rf(root);
    if (unsafe) {
        REL_CHECK(lost_states > 0,
                  "the simulator found no lost acknowledgement with esd --sync none");
        rel_log("as expected, a loss was found: %s", first_loss);
    }
    return 0;
}

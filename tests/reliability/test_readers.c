/*
 * test_readers — stale readers. Processes that hold a read
 * transaction are killed with SIGKILL, over and over; their LMDB reader
 * slots stay taken (nobody released them) until someone runs
 * mdb_reader_check. The promise: neither esd nor another process opening
 * the store ever fails because the reader table is full of dead readers.
 *
 *   test_readers --kills 50 --max-readers 8     (suite reliability)
 *   test_readers --kills 500 --max-readers 8    (suite long)
 *
 * Design notes
 * ------------
 * The size of LMDB's reader table is fixed by whoever creates the lock
 * file. To make "full" reachable in a few kills, this program first runs a
 * copy of itself ("create" role) that creates the store through store.h
 * with store_options.max_readers = M, reopens it read-only (a writable
 * open owns the directory, and esd must own it) and keeps it open while
 * esd starts on the same directory, so esd adopts the M-slot table (checked through
 * es_stats_get: readers_max == M).
 *
 * Each round then starts M - 1 copies in the "hold" role (esd's journal
 * keeps one slot for its checkpoint's pin): each opens the store
 * read-only through store.h and stops inside a store_read_all visitor —
 * a read transaction held open — and says so on a pipe. All M slots are
 * now taken. The holders are SIGKILLed at once: M - 1 stale slots. Rounds
 * alternate:
 *
 *   A: esd is asked first (read the log, stats through the client): it
 *      must serve them although every slot is held by a dead process;
 *   B: another process opens first (`esctl db stat DIR`, whose store_open
 *      runs mdb_reader_check): it must succeed; then esd must serve too.
 *
 * The next round's holders must also all get their slots. At the end esd
 * exits 0 on SIGTERM and `esctl db check` is clean.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel.h"
#include "support.h"
#include "store.h"

#define PREFIX    "rd"
#define N_STREAMS 4u

/* ------------------------------------------------------------ child roles -- */

static int hold_visit(void *ctx, const store_record *rec)
{
    (void)ctx;
    (void)rec;
    /* The read transaction is open: say so, then wait for SIGKILL. */
    if (write(1, "held\n", 5) != 5) {
        _exit(3);
    }
    for (;;) {
        pause();
    }
    return 0;
}

static int role_hold(const char *dir)
{
    store_options o = {.path = dir, .read_only = true};
    store *s = NULL;
    char msg[256] = "";
    es_err rv = store_open(&o, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        dprintf(1, "open %s %s\n", es_errname(rv), msg);
        return 1;
    }
    store_page page;
    rv = store_read_all(s, NULL, 1, false, 1, hold_visit, NULL, &page);
    dprintf(1, "read %s\n", es_errname(rv));
    store_close(s);
    return 1;
}

static int role_create(const char *dir, uint32_t max_readers)
{
    store_options o = {.path = dir, .max_readers = max_readers, .sync = false};
    store *s = NULL;
    char msg[256] = "";
    es_err rv = store_open(&o, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        dprintf(1, "open %s %s\n", es_errname(rv), msg);
        return 1;
    }
    /* A few events, so that holders have a record to stop at. */
    rel_ev ev[N_STREAMS];
    store_event_in in[N_STREAMS];
    store_append_in ap[N_STREAMS];
    store_append_result res[N_STREAMS];
    store_request req[N_STREAMS];
    char names[N_STREAMS][16];
    for (uint32_t i = 0; i < N_STREAMS; i++) {
        rel_ev_make(&ev[i], 11, i, 0, 64);
        snprintf(names[i], sizeof names[i], "%s-%u", PREFIX, i);
        in[i] = (store_event_in){.id = ev[i].id,
                                 .type = (const uint8_t *)ev[i].type,
                                 .type_len = strlen(ev[i].type),
                                 .data = ev[i].data,
                                 .data_len = ev[i].data_len};
        ap[i] = (store_append_in){.stream = (const uint8_t *)names[i],
                                  .stream_len = strlen(names[i]),
                                  .expect = STORE_EXPECT_NO_STREAM,
                                  .events = &in[i],
                                  .n_events = 1};
        req[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
    }
    rv = store_append_batch(s, req, N_STREAMS);
    if (rv != ES_OK || req[0].rv != ES_OK) {
        dprintf(1, "append %s\n", es_errname(rv != ES_OK ? rv : req[0].rv));
        store_close(s);
        return 1;
    }
    /* Hand the directory over (one writer owns it: esd), keeping the
     * environment and its M-slot lock file open as a reader. */
    store_close(s);
    o.read_only = true;
    s = NULL;
    rv = store_open(&o, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        dprintf(1, "reopen %s %s\n", es_errname(rv), msg);
        return 1;
    }
    dprintf(1, "ready\n");
    /* Keep the environment (and its lock file) open until told to go. */
    char c;
    while (read(0, &c, 1) > 0) {
    }
    store_close(s);
    return 0;
}

/* ----------------------------------------------------------------- parent -- */

typedef struct child {
    pid_t pid;
    int out; /* its stdout */
    int in;  /* its stdin (create role), -1 otherwise */
} child;

static child spawn_role(const char *role, const char *dir, const char *arg)
{
    int o[2], i[2];
    if (pipe2(o, O_CLOEXEC) != 0 || pipe2(i, O_CLOEXEC) != 0) {
        rel_fail("pipe: %s", strerror(errno));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rel_fail("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        dup2(o[1], 1);
        dup2(i[0], 0);
        close(o[0]);
        close(o[1]);
        close(i[0]);
        close(i[1]);
        char *argv[] = {(char *)"test_readers", (char *)role, (char *)dir, (char *)arg, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(o[1]);
    close(i[0]);
    return (child){pid, o[0], i[1]};
}

/* Wait for one line from the child; it must be `want`. */
static void expect_line(child *c, const char *want, const char *what)
{
    char buf[300];
    size_t n = 0;
    int64_t deadline = h_now_ms() + 20000;
    while (n < sizeof buf - 1) {
        int left = (int)(deadline - h_now_ms());
        struct pollfd p = {c->out, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) <= 0) {
            rel_fail("%s: no answer within 20 s", what);
        }
        ssize_t r = read(c->out, buf + n, 1);
        if (r <= 0) {
            break;
        }
        if (buf[n] == '\n') {
            break;
        }
        n++;
    }
    buf[n] = '\0';
    if (strcmp(buf, want) != 0) {
        rel_fail("%s: said \"%s\" instead of \"%s\"", what, buf, want);
    }
}

/* Ask esd to read the whole log and its stats; both must succeed. */
static void esd_serves(const esd_proc *e, uint32_t max_readers, uint64_t round, const char *when)
{
    es_client *c = rel_client(e->address, 10000);
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    if (rv != ES_OK) {
        rel_fail("round %" PRIu64 " (%s): esd stats with %u dead readers holding slots: %s (%s)",
                 round, when, max_readers, es_errname(rv), es_client_errmsg(c));
    }
    rel_walk wk;
    rel_walk_init(&wk, N_STREAMS);
    char why[300];
    rv = rel_walk_log(&wk, c, PREFIX, 11, 64, why, sizeof why);
    if (rv != ES_OK || wk.head != N_STREAMS) {
        rel_fail("round %" PRIu64 " (%s): esd read with %u dead readers holding slots: %s", round,
                 when, max_readers, rv != ES_OK ? why : "wrong number of events");
    }
    rel_walk_finish(&wk);
    es_client_destroy(c);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "hold")) {
        return role_hold(argv[2]);
    }
    if (argc == 4 && !strcmp(argv[1], "create")) {
        return role_create(argv[2], (uint32_t)strtoul(argv[3], NULL, 10));
    }
    static const char *const names[] = {"kills", "max-readers", NULL};
    uint64_t val[] = {50, 8};
    rel_args(argc, argv, "test_readers", names, val);
    uint64_t kills_wanted = val[0];
    uint32_t m = (uint32_t)val[1];
    if (m < 2 || m > 64) {
        rel_fail("--max-readers must be in 2..64");
    }
    char marg[16];
    snprintf(marg, sizeof marg, "%u", m);
    int64_t t0 = h_now_ms();

    esd_proc e;
    if (esd_init(&e, NULL) != 0) {
        rel_fail("cannot make a temporary directory");
    }
    char out[400], why[128];
    snprintf(out, sizeof out, "%s/esctl.out", e.dir);
    int st;

    child creator = spawn_role("create", e.data_dir, marg);
    expect_line(&creator, "ready", "the creating process");
    if (esd_start(&e, 20000) != 0) {
        rel_fail("esd did not start beside the creating process: %s",
                 h_status_str(e.status, why, sizeof why));
    }
    close(creator.in);
    if (waitpid(creator.pid, &st, 0) != creator.pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
        rel_fail("the creating process: %s", h_status_str(st, why, sizeof why));
    }
    close(creator.out);

    es_client *c = rel_client(e.address, 10000);
    es_stats stats;
    es_err rv = es_stats_get(c, &stats);
    es_client_destroy(c);
    if (rv != ES_OK || stats.readers_max != m) {
        rel_fail("esd stats: %s, readers_max %u (want %u: the test needs the small table)",
                 es_errname(rv), stats.readers_max, m);
    }

    child *holders = calloc(m, sizeof *holders);
    if (!holders) {
        rel_fail("out of memory");
    }
    uint64_t kills = 0, round = 0, rounds_a = 0, rounds_b = 0;
    while (kills < kills_wanted) {
        round++;
        /* esd's journal keeps one slot for its checkpoint's pin: the
         * holders take every other one. */
        for (uint32_t i = 0; i < m - 1; i++) {
            holders[i] = spawn_role("hold", e.data_dir, "-");
            char what[64];
            snprintf(what, sizeof what, "round %" PRIu64 " reader %u", round, i + 1);
            expect_line(&holders[i], "held", what);
        }
        /* Every slot is held now. */
        for (uint32_t i = 0; i < m - 1; i++) {
            kill(holders[i].pid, SIGKILL);
        }
        for (uint32_t i = 0; i < m - 1; i++) {
            if (waitpid(holders[i].pid, &st, 0) != holders[i].pid || !WIFSIGNALED(st)) {
                rel_fail("round %" PRIu64 ": reader %u: %s", round, i + 1,
                         h_status_str(st, why, sizeof why));
            }
            close(holders[i].out);
            close(holders[i].in);
            kills++;
        }
        if (!esd_alive(&e)) {
            rel_fail("esd died: %s", h_status_str(e.status, why, sizeof why));
        }
        if (round % 2 == 1) {
            rounds_a++;
            esd_serves(&e, m, round, "esd first");
        } else {
            rounds_b++;
            const char *a[] = {"db", "stat", e.data_dir, NULL};
            int cst = h_esctl(a, out, 30000);
            if (cst != 0) {
                h_dump_tail(out, 10);
                rel_fail("round %" PRIu64 ": esctl db stat with %u dead readers: %s", round, m,
                         cst < 0 ? "did not finish" : h_status_str(cst, why, sizeof why));
            }
            esd_serves(&e, m, round, "after another open");
        }
    }
    free(holders);
    if (esd_stop(&e, SIGTERM, 10000, &st, NULL) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        rel_fail("esd did not exit 0 on SIGTERM: %s", h_status_str(st, why, sizeof why));
    }
    const char *a[] = {"db", "check", e.data_dir, NULL};
    int cst = h_esctl(a, out, 60000);
    if (cst != 0) {
        h_dump_tail(out, 20);
        rel_fail("esctl db check: %s", h_status_str(cst, why, sizeof why));
    }
    rel_log("PASS stale readers: %" PRIu64 " readers killed holding a read transaction (%" PRIu64
            " rounds filling all %u slots: %" PRIu64 " with esd asked first, %" PRIu64
            " with another open first) in %.1f s; no open or read failed",
            kills, round, m, rounds_a, rounds_b, (double)(h_now_ms() - t0) / 1000.0);
    esd_destroy(&e);
    return 0;
}

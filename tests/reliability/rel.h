/*
 * rel — what the reliability tests (TESTPLAN T1, T3, T9/T10, T11, T17, T22,
 * T26) share: start, kill and restart the real esd on one data directory,
 * run esctl, derive event contents from (stream, revision) so that stored
 * bytes can be verified without keeping them, and walk the whole log through
 * libesclient checking the store's promises.
 *
 * Design notes
 * ------------
 * Every test is a plain program (exit 0 pass, 1 fail, 77 skip) whose figure
 * (cycles, trials, seconds) comes from its command line, so the suite
 * "reliability" and the suite "long" run the same executable with other
 * numbers. Randomness comes from one seed, printed at the start and
 * settable with --seed (or REL_SEED), so a failing run can be repeated.
 *
 * esd is spawned with fork/exec from the main thread, on 127.0.0.1:0 with a
 * port file, its output in a log file beside the data directory; the child
 * gets PR_SET_PDEATHSIG so that a test killed by its timeout leaves no
 * server behind. Every wait is a poll with a deadline; nothing sleeps to
 * synchronise. Binaries come from ESD_BIN and ESCTL_BIN (set by meson).
 *
 * Contents: an event at (stream s, revision r) of a run with salt k has
 * id, type and data that are pure functions of (k, s, r) (rel_ev_make), so
 * an event is correct exactly when it equals what rel_ev_make gives for the
 * stream and revision it was found at. Stream ids are "<prefix>-<s>".
 *
 * Only rel_fail() (1), rel_skip() (77) and a usage error in rel_args() (2)
 * exit; every other helper returns a status.
 */
#ifndef ES_REL_H
#define ES_REL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "es/client.h"

/* ------------------------------------------------------------- reporting -- */

/** @brief Print "FAIL: ..." with the seed and exit 1 (any thread). */
void rel_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/** @brief Print a line prefixed with the test name and elapsed time. */
void rel_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** @brief Exit 77 (meson: skipped) with a reason. */
void rel_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define REL_CHECK(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rel_fail(__VA_ARGS__);                                                                 \
        }                                                                                          \
    } while (0)

/* --------------------------------------------------------- command line -- */

/**
 * @brief Parse "--NAME VALUE" pairs into the named numbers; "--seed N" is
 *        always known. Unknown options are a usage error (exit 2).
 * @param names NULL-terminated list of option names without the dashes
 * @param[in,out] values one per name; defaults on entry
 */
void rel_args(int argc, char **argv, const char *test_name, const char *const *names,
              uint64_t *values);

/** @brief The seed of this run (after rel_args). */
uint64_t rel_seed(void);

/* ------------------------------------------------------------------ time -- */

int64_t rel_now_ms(void);
int64_t rel_now_us(void);
/** @brief Sleep (for pacing a workload, never to synchronise). */
void rel_sleep_ms(int ms);

/* ---------------------------------------------------------------- random -- */

/** A splitmix64 generator; one per thread. */
typedef struct rel_rng {
    uint64_t s;
} rel_rng;

uint64_t rel_mix(uint64_t x);
uint64_t rel_rand(rel_rng *r);
/** @brief Uniform in [lo, hi]. */
uint64_t rel_range(rel_rng *r, uint64_t lo, uint64_t hi);

/* ------------------------------------------------------------ file system -- */

/** @brief A fresh directory under $TMPDIR (default /tmp) named esd-rel-TAG-XXXXXX. */
int rel_mkdtemp(const char *tag, char *out, size_t cap);

/** @brief rm -rf path (does not cross into mounted file systems). */
void rel_rm_rf(const char *path);

/** @brief Copy one file. @return 0 or -1. */
int rel_copy_file(const char *from, const char *to);

/* ------------------------------------------------------------- processes -- */

/**
 * @brief Run a program and wait at most timeout_ms for it.
 * @param argv NULL-terminated
 * @param out_path file receiving stdout+stderr (NULL: /dev/null)
 * @param[out] status the wait status
 * @return 0 when it exited (see *status); -1 on spawn failure or timeout
 *         (then it was killed with SIGKILL and reaped).
 */
int rel_run(char *const *argv, const char *out_path, int timeout_ms, int *status);

/** @brief "exit N" / "killed by signal N (NAME)" for a wait status. */
const char *rel_status_str(int status, char *buf, size_t cap);

/** @brief Print the last lines of a file to stderr (diagnostics). */
void rel_dump_tail(const char *path, int lines);

/** An esd process on a data directory that outlives restarts. */
typedef struct rel_esd {
    pid_t pid; /* 0 when not running */
    uint16_t port;
    char base[256];     /* the test's temporary directory */
    char data_dir[320]; /* base/data, or set by the caller before rel_esd_start */
    char port_file[320];
    char log_file[320];
    char address[64];     /* "127.0.0.1:PORT" while running */
    const char *args[16]; /* extra arguments (borrowed), NULL-terminated */
    int starts;
} rel_esd;

/** @brief Make base (a fresh temporary directory) and the paths in it. @return 0 or -1. */
int rel_esd_init(rel_esd *e, const char *tag);

/**
 * @brief Start esd on the data directory, wait for its port file.
 * @return 0; -1 when it exited or gave no port within timeout_ms (its exit
 *         status in *status when it exited, else 0; log tail printed).
 */
int rel_esd_start(rel_esd *e, int timeout_ms, int *status);

/**
 * @brief Send sig and reap esd within timeout_ms.
 * @return 0 and the wait status in *status; -1 on timeout (then SIGKILLed,
 *         reaped, and -1 still returned).
 */
int rel_esd_stop(rel_esd *e, int sig, int timeout_ms, int *status);

/** @brief True while esd runs (reaps it when it exited; status then in *status). */
bool rel_esd_alive(rel_esd *e, int *status);

/** @brief Kill esd if running, remove base. */
void rel_esd_destroy(rel_esd *e);

/** @brief VmRSS/RssAnon/... of /proc/PID/status in kB; -1 if absent. */
long rel_proc_kb(pid_t pid, const char *field);

/**
 * @brief Run esctl with args, its output (replacing the file) in out_path.
 * @return the wait status (0 = exit 0), or -1 when it could not run / timed out.
 */
int rel_esctl(const char *const *args, const char *out_path, int timeout_ms);

/* --------------------------------------------------------------- clients -- */

/**
 * @brief A client for tests: short timeouts, one connection attempt per call,
 *        no circuit breaker (a dead server must show at once, not after
 *        backoff).
 */
es_client *rel_client(const char *address, uint32_t request_timeout_ms);

/* --------------------------------------------------------------- content -- */

#define REL_MAX_DATA 600u

/** The content of the event at (stream, revision) in a run with a salt. */
typedef struct rel_ev {
    uint8_t id[ES_UUID_BYTES];
    char type[16];
    uint8_t data[REL_MAX_DATA];
    size_t data_len;
} rel_ev;

/**
 * @brief Derive the event at (s, r).
 * @param max_data data length is drawn from [16, max_data] (<= REL_MAX_DATA)
 */
void rel_ev_make(rel_ev *ev, uint64_t salt, uint32_t s, uint64_t r, size_t max_data);

/** @brief Fill an es_event pointing into ev. */
void rel_ev_to_event(rel_ev *ev, es_event *out);

/** @brief True when a recorded event has exactly the derived id, type and data. */
bool rel_ev_equal(const rel_ev *ev, const es_recorded_event *rec);

/** @brief FNV-1a of bytes (payload fingerprints in acknowledgement logs). */
uint64_t rel_hash(const void *p, size_t n);

/**
 * @brief The stream number in "<prefix>-<n>".
 * @return the number, or -1 when the name is not of that form.
 */
long rel_stream_no(const char *prefix, const char *name);

/* ------------------------------------------------------------- log walks -- */

/** What a walk of the whole log found, per stream. */
typedef struct rel_walk {
    uint32_t n_streams;
    uint64_t *next_rev; /* per stream: revisions seen are 0..next_rev-1 */
    uint64_t head;      /* last position seen */
    uint64_t events;    /* events walked in this call */
    /* position -> (stream, revision), for checking acknowledgements */
    uint32_t *pos_stream;
    uint64_t *pos_rev;
    uint64_t *pos_hash; /* rel_hash(data) + rel_hash(id) of what was read */
    uint64_t pos_cap;
    /* (stream, revision) -> position */
    uint64_t **rev_pos;
    uint64_t *rev_cap;
} rel_walk;

/** @brief The position of (s, r) seen by the walk; 0 when not seen. */
uint64_t rel_walk_pos(const rel_walk *w, uint32_t s, uint64_t r);

void rel_walk_init(rel_walk *w, uint32_t n_streams);
void rel_walk_finish(rel_walk *w);

/**
 * @brief Read the global log from w->head + 1 to its end through the client
 *        and check every event: stream named "<prefix>-<s>" with s <
 *        n_streams; position = previous + 1 (gapless from 1); revision =
 *        next expected revision of its stream (contiguous from 0); id, type
 *        and data equal to rel_ev_make(salt, s, r). Updates w.
 * @param[out] why a description of the first violation
 * @return ES_OK when everything holds; ES_ERR_CORRUPT when a check failed
 *         (see why); another error when the read itself failed.
 */
es_err rel_walk_log(rel_walk *w, es_client *c, const char *prefix, uint64_t salt, size_t max_data,
                    char *why, size_t why_len);

#endif

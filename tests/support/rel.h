/*
 * rel — plain test programs (the reliability, nats, operations and security
 * suites): report, fail with the seed, skip; the figures from the command
 * line; seeded randomness; clients for tests; event contents derived from
 * (stream, revision) so that stored bytes can be verified without keeping
 * them; and a walk of the whole log through libesclient checking the
 * store's promises. esd itself is started with esd_proc.h.
 *
 * Design notes
 * ------------
 * Every test is a plain program (exit 0 pass, 1 fail, 77 skip) whose figure
 * (cycles, trials, seconds) comes from its command line, so the suite
 * "reliability" and the suite "long" run the same executable with other
 * numbers. Randomness comes from one seed, printed at the start and
 * settable with --seed (or REL_SEED), so a failing run can be repeated.
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
#include "esd_proc.h"

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

/* ---------------------------------------------------------------- random -- */

/** A splitmix64 generator; one per thread. */
typedef struct rel_rng {
    uint64_t s;
} rel_rng;

uint64_t rel_mix(uint64_t x);
uint64_t rel_rand(rel_rng *r);
/** @brief Uniform in [lo, hi]. */
uint64_t rel_range(rel_rng *r, uint64_t lo, uint64_t hi);

/* --------------------------------------------------------------- clients -- */

/**
 * @brief A connected client that rides out a short outage: requests time
 *        out after 20 s, 5 reconnection attempts with a 5-50 ms backoff, no
 *        circuit breaker.
 * @return the client, or NULL (the reason printed on stderr).
 */
es_client *h_client(const char *address, const char *name);

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

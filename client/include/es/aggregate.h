/**
 * @file es/aggregate.h
 * @brief Aggregates on top of libesclient: rebuild state from a stream,
 *        decide, append with the loaded revision as expectation, retry on
 *        conflict; snapshots; decisions over several aggregates committed
 *        in one transaction.
 *
 * An aggregate is the state folded from the events of one stream. The
 * caller describes a kind of aggregate with callbacks (es_agg_ops) and
 * binds it to a client with es_agg_create(); the handle (es_agg) then
 *
 *  - loads an aggregate: the latest snapshot of the stream, if there is one
 *    of the right state format, then the events after it, each folded into
 *    caller-owned state by apply(); es_agg_load() says which revision the
 *    state reflects and how many events were replayed;
 *  - executes a command: load, call decide() (which emits new events or
 *    refuses with a message), append the events with the loaded revision as
 *    an exact expectation (ES_EXPECT_NO_STREAM for a stream with no
 *    events). On ES_ERR_WRONG_EXPECTED_REVISION it waits (exponential
 *    backoff with full jitter), folds the events that arrived meanwhile and
 *    decides again, at most max_attempts times. A refusal is returned as
 *    ES_ERR_REFUSED with the decide function's message;
 *  - executes a command over two or more aggregates (the transfer between
 *    two accounts): every aggregate is loaded, one decide function sees all
 *    the states, and the events of all of them are appended in one
 *    es_txn_commit(), each append with its own aggregate's loaded revision
 *    as expectation: all or nothing, and a concurrent change to any of them
 *    makes the whole decision start again;
 *  - saves snapshots every snapshot_every events (after a command that
 *    crosses the mark) or on demand (es_agg_snapshot()), tagged with the
 *    revision they reflect and with ops.state_format. A snapshot in another
 *    format (an older encoding of the state), or one that decode() rejects,
 *    is ignored and the stream is replayed from the start: a snapshot is an
 *    optimisation, never a source of truth.
 *
 * The retry loop is the cure for the race of a naive money transfer (read,
 * check the balance, append, with nothing stopping a concurrent withdrawal
 * in between) and the transaction the cure for its missing atomicity (two
 * appends, the second of which may never happen).
 *
 * Design notes
 * ------------
 * - State is opaque to the library: ops.state_size bytes of caller memory
 *   (or memory the library allocates for a command), initialised by
 *   ops.init, changed only by ops.apply and ops.decode, released by
 *   ops.finish. decide() gets it const: the same state is caught up after a
 *   conflict by folding only the newer events, never rebuilt from scratch.
 * - Events are applied in revision order and their revisions are checked
 *   to be contiguous: a state is exactly the fold of revisions 0..R.
 * - Every event of one command carries the same correlation id, drawn when
 *   the command starts, so the events of a transfer can be told apart in
 *   the global log.
 * - After a lost connection (ES_ERR_CLOSED, ES_ERR_TIMEOUT) the same
 *   append is sent again with the same event ids: the server answers a
 *   retry of an append it already stored with its original result
 *   (duplicate), and checks ids before expectations, so a command is never
 *   applied twice.
 * - The state a command leaves (state_out) and the state a snapshot stores
 *   are built from the events as the server recorded them (read back after
 *   the append), so they are byte-for-byte what a replay would fold.
 *
 * @note Threads: an es_agg uses its client, so the client's rule applies:
 *   one thread at a time for the client and every es_agg bound to it.
 * @note The library is the separate library libesaggregate (pkg-config
 *   esaggregate), linked with libesclient; only es_agg_* symbols are
 *   exported.
 */
#ifndef ES_AGGREGATE_H
#define ES_AGGREGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/client.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define ES_AGG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ES_AGG_PRINTF(f, a)
#endif

/** Largest number of aggregates in one es_agg_execute_many(). */
#define ES_AGG_MAX_TARGETS 64u
/** Largest number of events one decision may emit for one aggregate. */
#define ES_AGG_MAX_EVENTS 10000u
/** Bytes of a refusal message, with its NUL (longer ones are truncated). */
#define ES_AGG_MESSAGE_BYTES 512u

/* ============================================================== decisions == */

/**
 * What a decide function produced: new events for each aggregate, or a
 * refusal with a reason code and a message; opaque. The library passes one
 * to every decide call; tests of decide functions create their own with
 * es_agg_decision_create() and inspect it.
 */
typedef struct es_agg_decision es_agg_decision;

/**
 * @brief Create an empty decision for n aggregates (index 0..n-1).
 * @param[in] n aggregates, 1..ES_AGG_MAX_TARGETS
 * @param[out] out the decision, freed with es_agg_decision_destroy()
 * @return ES_OK;
 *   ES_ERR_INVALID_ARGUMENT: out is NULL or n is out of range;
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_agg_decision_create(size_t n, es_agg_decision **out);

/** @brief Free a decision and the events it holds. Accepts NULL. */
ES_API void es_agg_decision_destroy(es_agg_decision *d);

/**
 * @brief Forget every event and the refusal (the decision is empty again).
 */
ES_API void es_agg_decision_reset(es_agg_decision *d);

/**
 * @brief Emit a new event for aggregate `index`.
 * @param[in] index which aggregate (0 for a single one; for
 *   es_agg_execute_many() the index into its targets)
 * @param[in] type the event type, 1..256 bytes of UTF-8 (copied)
 * @param[in] content_type e.g. "application/json", or NULL (copied)
 * @param[in] data the payload, len bytes (copied); may be NULL when len is 0
 * @return ES_OK;
 *   ES_ERR_INVALID_ARGUMENT: d or type is NULL, index is out of range,
 *     data is NULL with len > 0, content_type is longer than 256 bytes, or
 *     the decision was already refused;
 *   ES_ERR_INVALID_EVENT_TYPE: type is empty or longer than 256 bytes (the
 *     server checks the rest of the rules at append time);
 *   ES_ERR_TOO_MANY_EVENTS: ES_AGG_MAX_EVENTS already emitted for index;
 *   ES_ERR_NO_MEMORY (the decision is unchanged).
 */
ES_API es_err es_agg_emit(es_agg_decision *d, size_t index, const char *type,
                          const char *content_type, const void *data, size_t len);

/**
 * @brief Refuse the command: no event is appended to any aggregate.
 *
 * Events emitted before are dropped. A second refusal replaces the first.
 * Meant to be returned by the decide function:
 * `return es_agg_refuse(d, NO_FUNDS, "balance %lld < %lld", b, a);`
 * @param[in] reason a code of the caller's choosing (0 if none), given back
 *   by es_agg_refusal_reason()
 * @param[in] fmt printf format of the message (truncated to
 *   ES_AGG_MESSAGE_BYTES - 1 bytes)
 * @return ES_ERR_REFUSED (always; ES_ERR_INVALID_ARGUMENT when d is NULL).
 */
ES_API es_err es_agg_refuse(es_agg_decision *d, int reason, const char *fmt, ...)
    ES_AGG_PRINTF(3, 4);

/**
 * @brief Whether the decision is a refusal.
 * @param[out] reason the refusal's reason (may be NULL)
 * @param[out] message its message, owned by the decision and valid until it
 *   is reset or destroyed (may be NULL)
 */
ES_API bool es_agg_decision_refused(const es_agg_decision *d, int *reason, const char **message);

/**
 * @brief The events emitted for aggregate `index`, in order.
 * @param[out] n their number (0 for a bad index or a refused decision)
 * @return the array (type, content_type, data, data_len filled; ids not yet
 *   assigned), owned by the decision and valid until it is changed, reset
 *   or destroyed; NULL when *n is 0.
 */
ES_API const es_event *es_agg_decision_events(const es_agg_decision *d, size_t index, size_t *n);

/* ============================================================ aggregates == */

/**
 * The callbacks that make a kind of aggregate. `ctx` is the pointer given
 * to es_agg_create(). Callbacks must not call the library on the same
 * client (they run in the middle of its calls).
 */
typedef struct es_agg_ops {
    /** Bytes of one state (> 0): what the library allocates for a command
     *  and what the caller provides to es_agg_load(). */
    size_t state_size;

    /** The version of the snapshot encoding of encode/decode. A snapshot
     *  saved with another number is ignored. */
    uint32_t state_format;

    /**
     * Make `state` the state of an aggregate with no events. Required.
     * @return ES_OK, or an error (ES_ERR_NO_MEMORY) returned to the caller;
     *   on error nothing is left to release.
     */
    es_err (*init)(void *ctx, void *state);

    /** Release what init/apply/decode allocated inside state. May be NULL
     *  when a state owns nothing. */
    void (*finish)(void *ctx, void *state);

    /**
     * Fold one recorded event into state. Required. It should accept every
     * event its decide functions emit and refuse anything it does not
     * understand (an unknown type, a payload it cannot parse, a history
     * that breaks an invariant): the error stops the load and is returned
     * to the caller, whose state is then released.
     * @param[in] ev the event; valid during the call only
     * @return ES_OK, or an error (conventionally ES_ERR_MALFORMED).
     */
    es_err (*apply)(void *ctx, void *state, const es_recorded_event *ev);

    /**
     * Encode state for a snapshot. NULL (with decode NULL) disables
     * snapshots for this kind of aggregate.
     * @param[out] data a buffer from malloc() that the library releases with
     *   free(); *len its length (0 allowed)
     * @return ES_OK, or an error (the snapshot is then not saved).
     */
    es_err (*encode)(void *ctx, const void *state, void **data, size_t *len);

    /**
     * Decode a snapshot of ops.state_format into state, which the library
     * has just initialised with init. Must validate what it reads: on error
     * the library releases state, initialises it again and replays the
     * stream from the start instead.
     */
    es_err (*decode)(void *ctx, void *state, const void *data, size_t len);
} es_agg_ops;

/**
 * Decide on one aggregate. Must be a pure function of state and command:
 * it may be called several times for one command (once per attempt).
 * @param[in] state the state at the loaded revision (const: do not change it)
 * @param[in] command the caller's command, passed through untouched
 * @param[in,out] d emit events with es_agg_emit(d, 0, ...), or refuse with
 *   es_agg_refuse(); emitting nothing is a command with no effect
 * @return ES_OK; ES_ERR_REFUSED after es_agg_refuse(); any other error
 *   stops the command and is returned to the caller.
 */
typedef es_err (*es_agg_decide_fn)(const void *state, const void *command, es_agg_decision *d);

/**
 * Decide on several aggregates at once (es_agg_execute_many()).
 * @param[in] states n states, in the order of the targets
 * @param[in,out] d emit with the index of the target each event is for
 * @return as es_agg_decide_fn.
 */
typedef es_err (*es_agg_decide_many_fn)(const void *const *states, size_t n, const void *command,
                                        es_agg_decision *d);

/** A kind of aggregate bound to a client; opaque. */
typedef struct es_agg es_agg;

/** Options of an es_agg. Initialise with es_agg_options_init(). */
typedef struct es_agg_options {
    /** Decide-and-append attempts of one command (>= 1). After this many
     *  conflicts the command fails with ES_ERR_WRONG_EXPECTED_REVISION.
     *  Default 16. */
    uint32_t max_attempts;
    /** Backoff after the first conflict: a delay drawn uniformly from
     *  [0, backoff_initial_ms]; the window doubles with every further
     *  conflict of the command. 0 retries at once. Default 2. */
    uint32_t backoff_initial_ms;
    /** Ceiling of the backoff window. Default 100. */
    uint32_t backoff_max_ms;
    /** Save a snapshot after a command once this many events have been
     *  appended to the stream since the snapshot the command loaded (or
     *  since the start). 0: only on demand. Ignored without encode/decode.
     *  Default 100. */
    uint32_t snapshot_every;
    /** Start loads from the latest snapshot (when encode/decode are set).
     *  false: always replay from revision 0 (to check snapshots against a
     *  full replay). Default true. */
    bool read_snapshots;
    /** Events per read request; 0 = the server's page size. Default 0. */
    uint32_t page_size;
} es_agg_options;

/** @brief Fill options with the defaults (see each field). */
ES_API void es_agg_options_init(es_agg_options *opts);

/**
 * @brief Create an aggregate handle for one kind of aggregate on a client.
 * @param[in] c the client; borrowed: it must outlive the handle
 * @param[in] ops the callbacks; copied
 * @param[in] ctx passed to every callback of ops
 * @param[in] opts options (copied), or NULL for the defaults
 * @param[out] out the handle, freed with es_agg_destroy()
 * @return ES_OK;
 *   ES_ERR_INVALID_ARGUMENT: c, ops or out is NULL, ops.init or ops.apply
 *     is missing, state_size is 0, only one of encode/decode is set, or
 *     max_attempts is 0, or backoff_initial_ms > backoff_max_ms;
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_agg_create(es_client *c, const es_agg_ops *ops, void *ctx,
                            const es_agg_options *opts, es_agg **out);

/** @brief Free a handle (not its client). Accepts NULL. */
ES_API void es_agg_destroy(es_agg *a);

/** @brief The client the handle was created with. */
ES_API es_client *es_agg_client(const es_agg *a);

/**
 * @brief A human explanation of the last failed call on this handle: for
 *        ES_ERR_REFUSED exactly the decide function's message.
 * @return a NUL-terminated string owned by the handle ("" when nothing
 *   failed yet); valid until the next call on the handle.
 */
ES_API const char *es_agg_errmsg(const es_agg *a);

/**
 * @brief The reason code of the last refusal (see es_agg_refuse()); 0 when
 *        the last call was not refused.
 */
ES_API int es_agg_refusal_reason(const es_agg *a);

/**
 * @brief Release a state filled by es_agg_load() or es_agg_execute()
 *        (calls ops.finish). Accepts NULL state.
 */
ES_API void es_agg_state_finish(es_agg *a, void *state);

/* ================================================================= load == */

/** What es_agg_load() found. */
typedef struct es_agg_load_info {
    /** The stream has events. When false the state is init's and revision 0
     *  means nothing. */
    bool exists;
    /** The last revision folded into the state. */
    uint64_t revision;
    /** The load started from a snapshot... */
    bool from_snapshot;
    /** ...which reflected this revision. */
    uint64_t snapshot_revision;
    /** A snapshot was found but not used: another state format, a corrupt
     *  record, or decode() refused it. */
    bool snapshot_ignored;
    /** Events folded by apply() (not counting the snapshot). */
    uint64_t replayed;
} es_agg_load_info;

/**
 * @brief Load an aggregate: the latest snapshot if usable, then every
 *        later event, folded into state.
 * @param[in] stream the stream id
 * @param[out] state ops.state_size bytes of caller memory, uninitialised;
 *   on ES_OK it holds the state and must be released with
 *   es_agg_state_finish(); on error nothing is left to release
 * @param[out] info what was loaded (may be NULL)
 * @return ES_OK (also for a stream with no events: info->exists = false);
 *   ES_ERR_INVALID_ARGUMENT: a or state is NULL;
 *   ES_ERR_INVALID_STREAM_ID: stream is not a valid stream id;
 *   ES_ERR_MALFORMED: the server sent events out of revision order;
 *   the errors of ops.init and ops.apply (es_agg_errmsg() names the stream
 *     and revision of the event apply refused);
 *   ES_ERR_CLOSED, ES_ERR_TIMEOUT: the connection kept failing while
 *     reading (a read is resumed twice before giving up); call again;
 *   ES_ERR_NO_MEMORY; ES_ERR_PERMISSION_DENIED; the connection errors of
 *     es_client_connect().
 */
ES_API es_err es_agg_load(es_agg *a, const char *stream, void *state, es_agg_load_info *info);

/* ============================================================== execute == */

/** The outcome of a command. */
typedef struct es_agg_result {
    /** es_agg_execute(): the stream's last revision after the command (the
     *  loaded one when nothing was appended); es_agg_execute_many(): that
     *  of targets[0] (each target has its own). */
    uint64_t revision;
    /** Whether that stream has events (false only when nothing was
     *  appended to a stream that had none). */
    bool exists;
    /** Events appended, over all aggregates. */
    size_t n_events;
    /** Decide calls made (1 + conflicts met, unless retries ran out). */
    uint32_t attempts;
    /** ES_ERR_WRONG_EXPECTED_REVISION replies met. */
    uint32_t conflicts;
    /** The append was answered as an already stored retry (after a lost
     *  connection): the command took effect exactly once. */
    bool duplicate;
    /** Snapshots saved after the command. */
    uint32_t snapshots_saved;
} es_agg_result;

/**
 * @brief Execute a command on one aggregate: load, decide, append with the
 *        loaded revision as expectation, retrying on conflict.
 * @param[in] stream the stream id
 * @param[in] decide the decision (see es_agg_decide_fn)
 * @param[in] command passed to decide untouched
 * @param[out] state_out NULL, or ops.state_size bytes of caller memory,
 *   uninitialised: on ES_OK it holds the state right after the command (at
 *   res->revision) and must be released with es_agg_state_finish(); on
 *   error nothing is left to release
 * @param[out] res the outcome (may be NULL); filled also on errors, as far
 *   as the command went
 * @return ES_OK (the events, if any, are stored);
 *   ES_ERR_REFUSED: decide refused; es_agg_errmsg() is its message and
 *     es_agg_refusal_reason() its reason; nothing was appended;
 *   ES_ERR_WRONG_EXPECTED_REVISION: every one of max_attempts attempts met
 *     a concurrent change; nothing was appended; es_client_conflicts() on
 *     the client lists the last one's checks; retry later;
 *   ES_ERR_CLOSED, ES_ERR_TIMEOUT, ES_ERR_CONNECTION, ES_ERR_CIRCUIT_OPEN:
 *     the connection failed and resending did not settle it: the command
 *     may or may not have been stored (load again to see);
 *   ES_ERR_IDEMPOTENCY_CONFLICT: the server holds some of the events' ids
 *     elsewhere (should not happen: the ids are fresh UUIDs);
 *   the errors of es_agg_load() (before anything was appended);
 *   any error decide returned other than ES_ERR_REFUSED;
 *   the append errors of es_stream_append() (ES_ERR_INVALID_EVENT_TYPE,
 *     ES_ERR_TOO_LARGE, ES_ERR_TOO_MANY_EVENTS, ES_ERR_STORE_FULL,
 *     ES_ERR_READ_ONLY, ES_ERR_FOLLOWER, ES_ERR_PERMISSION_DENIED, ...):
 *     nothing was stored;
 *   ES_ERR_NO_MEMORY.
 *   When the command was stored but building state_out afterwards failed,
 *   the return is ES_OK only if state_out is NULL; otherwise the error of
 *   the read, with res->n_events > 0 telling that the command took effect.
 * @note A failed automatic snapshot does not fail the command (the next
 *   command tries again); res->snapshots_saved says what was saved.
 */
ES_API es_err es_agg_execute(es_agg *a, const char *stream, es_agg_decide_fn decide,
                             const void *command, void *state_out, es_agg_result *res);

/** One aggregate of es_agg_execute_many(). */
typedef struct es_agg_target {
    /** in: its kind; every target's handle must share one client */
    es_agg *agg;
    /** in: its stream id; the streams of one command must differ */
    const char *stream;
    /** in: NULL, or caller memory for the state after the command (as
     *  es_agg_execute()'s state_out) */
    void *state_out;
    /** out: its last revision after the command, and whether it exists */
    uint64_t revision;
    bool exists;
    /** out: events appended to it */
    size_t n_events;
} es_agg_target;

/**
 * @brief Execute a command over n aggregates: load each, decide once over
 *        all the states, append every aggregate's events in one
 *        transaction, each with its own loaded revision as expectation.
 *
 * Aggregates for which the decision has no event are not part of the
 * transaction, so nothing checks that they did not change: a decision
 * that depends on an aggregate should append to it.
 * Retries, backoff and automatic snapshots follow the options of
 * targets[0].agg; errmsg and refusal are set on targets[0].agg.
 * @param[in,out] targets n targets (see es_agg_target)
 * @param[in] n 1..ES_AGG_MAX_TARGETS
 * @return the codes of es_agg_execute(), plus ES_ERR_INVALID_ARGUMENT:
 *   targets is NULL, n is out of range, a target has no handle, the
 *   handles use different clients, or two targets name the same stream.
 */
ES_API es_err es_agg_execute_many(es_agg_target *targets, size_t n, es_agg_decide_many_fn decide,
                                  const void *command, es_agg_result *res);

/* ============================================================ snapshots == */

/**
 * @brief Save a snapshot now: load the aggregate (from its latest snapshot)
 *        and store its state at the loaded revision.
 * @param[out] revision the revision the snapshot reflects (may be NULL)
 * @param[out] saved false when the latest snapshot was already current
 *   and nothing was written (may be NULL)
 * @return ES_OK;
 *   ES_ERR_INVALID_ARGUMENT: the kind has no encode/decode;
 *   ES_ERR_NOT_FOUND: the stream has no events;
 *   the errors of es_agg_load(); the errors of ops.encode;
 *   the errors of es_snapshot_save() (ES_ERR_TOO_LARGE, ES_ERR_STORE_FULL,
 *     ES_ERR_CLOSED, ES_ERR_TIMEOUT, ...).
 */
ES_API es_err es_agg_snapshot(es_agg *a, const char *stream, uint64_t *revision, bool *saved);

/* ================================================================ stats == */

/** Counters of a handle since its creation (commands run through it, and
 *  for es_agg_execute_many() through targets[0].agg). */
typedef struct es_agg_stats {
    uint64_t commands;          /**< es_agg_execute/_many calls */
    uint64_t succeeded;         /**< commands that returned ES_OK */
    uint64_t refused;           /**< commands refused by decide */
    uint64_t attempts;          /**< decide calls */
    uint64_t conflicts;         /**< ES_ERR_WRONG_EXPECTED_REVISION replies */
    uint64_t exhausted;         /**< commands that ran out of attempts */
    uint64_t resends;           /**< appends resent after a lost connection */
    uint64_t loads;             /**< aggregates loaded (by load, execute, snapshot) */
    uint64_t replayed;          /**< events folded by apply */
    uint64_t snapshots_used;    /**< loads that started from a snapshot */
    uint64_t snapshots_ignored; /**< snapshots found but not used */
    uint64_t snapshots_saved;
    uint64_t snapshot_failures; /**< automatic snapshots that could not be saved */
} es_agg_stats;

/** @brief Copy the handle's counters. */
ES_API void es_agg_stats_get(const es_agg *a, es_agg_stats *st);

#ifdef __cplusplus
}
#endif

#endif

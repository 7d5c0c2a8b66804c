/**
 * @file es/projector.h
 * @brief libesprojector: exactly-once CQRS read models in a local LMDB
 *        environment, fed by an esd subscription.
 *
 * A projector owns one LMDB environment (a directory) that holds the read
 * model's named databases and the projector's own record: the checkpoint
 * (the last applied position, or revision for a one-stream projection),
 * the id of the store it was built from and the subscription it follows.
 *
 * It subscribes strictly after its checkpoint and, for every batch that
 * arrives, opens ONE write transaction, calls the apply function for each
 * event with that transaction, stores the new checkpoint in the same
 * transaction and commits. The read model and the checkpoint therefore move
 * together: after a crash at any moment the environment holds either the
 * whole batch and its checkpoint or neither, and the subscription resumes
 * after the checkpoint — every event is applied exactly once, none is
 * skipped. When the apply function or the commit fails, the transaction is
 * aborted and the batch is not acknowledged to the subscription (the batch
 * callback returns nonzero), so it is delivered again later.
 *
 * Design notes
 * ------------
 * - The checkpoint in LMDB is the only truth. After any failure (refused
 *   batch, dropped subscription) the projector resubscribes after it, and
 *   es_projector_apply_batch() skips events at or below it, so a
 *   redelivery can never be applied twice whatever the transport does.
 * - For ES_SUB_STREAM the numbers are gapless (revisions): a batch that
 *   does not continue exactly at checkpoint + 1 is refused with
 *   ES_ERR_CORRUPT rather than applied with a hole. ES_SUB_ALL and the
 *   filtered subscriptions (category, type, prefix) only require strictly
 *   increasing positions: the log has holes where deleted or expired events
 *   are left out (docs/lifecycle.md).
 * - Durability: by default MDB_NOMETASYNC — a machine crash may undo the
 *   last commits, but never tears one, and the checkpoint is undone with
 *   them, so the batches are simply applied again. ES_PROJECTOR_SYNC_NONE
 *   (MDB_NOSYNC) is for tests and benchmarks: a machine crash can then
 *   corrupt the environment, which es_projector_rebuild() cures.
 * - A read model is derived data: es_projector_rebuild() empties every
 *   database of the read model and the checkpoint in one transaction, and
 *   the projection starts again from the first event.
 * - Lag = server head − checkpoint. The head is refreshed with
 *   es_stats_get() on the projector's own connection (at most every
 *   head_refresh_ms) and raised by every delivered event and caught-up
 *   notification. For a filtered subscription the "checkpoint" used for the
 *   lag is the furthest point known to be scanned, since events outside the
 *   filter never reach the projector: the caught-up position, and, while
 *   caught up, a head just refreshed that a quiet poll then followed (live
 *   events are pushed as they commit). The lag is a monitoring figure;
 *   nothing that is applied depends on it.
 *
 * @note Threads: es_projector_run()/es_projector_step() and
 *   es_projector_apply_batch(), es_projector_rebuild() belong to one thread
 *   at a time (the projector thread). es_projector_status(),
 *   es_projector_checkpoint(), es_projector_stop(),
 *   es_projector_request_rebuild(), es_projector_env() and
 *   es_projector_dbi() may be called from any thread. Other threads read
 *   the read model with their own read-only transactions on
 *   es_projector_env() (the environment is opened with MDB_NOTLS, so a
 *   read transaction is not tied to its thread); they must never write.
 * @note Names and ownership as in es/client.h: es_projector_create() and
 *   es_projector_destroy() (which accepts NULL), es_projector_options_init()
 *   for the options in the caller's memory.
 * @note The library is libesprojector (pkg-config esprojector), linked with
 *   libesclient and liblmdb; only es_projector_* symbols are exported.
 */
#ifndef ES_PROJECTOR_H
#define ES_PROJECTOR_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/client.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Largest number of named databases a read model may declare. */
#define ES_PROJECTOR_MAX_DBS 32u
/** Name of the projector's own database inside the environment (reserved). */
#define ES_PROJECTOR_META_DB "$es_projector"
/** Default LMDB map size: 1 GiB (address space; the file grows as needed). */
#define ES_PROJECTOR_DEFAULT_MAP_SIZE ((size_t)1 << 30)

/** A projector; opaque. */
typedef struct es_projector es_projector;

/** One named database of the read model. */
typedef struct es_projector_db {
    const char *name;   /**< 1..255 bytes, not starting with '$'; copied */
    unsigned int flags; /**< mdb_dbi_open flags (MDB_DUPSORT, ...); MDB_CREATE is implied */
} es_projector_db;

/**
 * Applies one event to the read model, inside the batch's write
 * transaction.
 * @param ctx the options' ctx
 * @param txn the batch's write transaction: use it for every read and write
 *   of the read model; never commit or abort it (the projector does)
 * @param ev the event; it and everything it points to are valid during the
 *   call only
 * @return ES_OK to go on; any other code aborts the whole batch (nothing of
 *   it is kept, the checkpoint does not move) and the batch is delivered
 *   again later. Return ES_OK for events the read model chooses to ignore
 *   (unknown types, payloads it cannot use): an error for such an event
 *   would stop the projection at it forever. Translate LMDB results with
 *   es_projector_err_from_mdb().
 */
typedef es_err (*es_projector_apply_fn)(void *ctx, MDB_txn *txn, const es_recorded_event *ev);

/**
 * A stream lifecycle change: an event of the reserved stream "$lifecycle"
 * (docs/lifecycle.md), decoded. It carries the stream's whole lifecycle
 * state after the change.
 */
typedef struct es_projector_lifecycle {
    const char *type;   /**< "$stream-deleted", "$stream-tombstoned" or "$stream-metadata" */
    const char *stream; /**< the stream changed, NUL-terminated (valid during the call) */
    bool tombstoned;    /**< never written or read again */
    bool metadata_set;  /**< metadata was set at least once */
    uint64_t metadata_revision;
    uint64_t deleted_before;                        /**< revisions below are deleted (0: none) */
    uint64_t truncate_before, max_count, max_age_s; /**< 0: no limit */
} es_projector_lifecycle;

/**
 * Called, when set, instead of the apply function for each event of
 * "$lifecycle" (they reach a projector that follows ES_SUB_ALL or the
 * prefix "$"), in the batch's transaction: a read model drops or trims
 * what the change removed (e.g. an account whose stream was deleted).
 * Return values as for es_projector_apply_fn. An event of "$lifecycle"
 * whose data does not decode is not passed (and not an error).
 */
typedef es_err (*es_projector_lifecycle_fn)(void *ctx, MDB_txn *txn,
                                            const es_projector_lifecycle *change,
                                            const es_recorded_event *ev);

/** How commits of the read model reach the disk. */
typedef enum es_projector_sync {
    /** MDB_NOMETASYNC (default): a machine crash may undo the last commits
     *  (and their checkpoint) but never corrupts; one fsync per batch. */
    ES_PROJECTOR_SYNC_META = 0,
    /** Full LMDB durability: two fsyncs per batch. */
    ES_PROJECTOR_SYNC_FULL = 1,
    /** MDB_NOSYNC: no fsync; a machine crash may corrupt (rebuild then).
     *  For tests and benchmarks. Killing the process is still safe. */
    ES_PROJECTOR_SYNC_NONE = 2,
} es_projector_sync;

/** Options of a projector. Initialise with es_projector_options_init(). */
typedef struct es_projector_options {
    /** The environment's directory, created if missing (required). */
    const char *dir;
    /** LMDB map size in bytes; 0 = ES_PROJECTOR_DEFAULT_MAP_SIZE. */
    size_t map_size;
    es_projector_sync sync;

    /** The read model's databases (0..ES_PROJECTOR_MAX_DBS), opened (and
     *  created) by es_projector_create(); es_projector_dbi(p, i) gives the
     *  handle of dbs[i]. es_projector_rebuild() empties all of them. */
    const es_projector_db *dbs;
    size_t n_dbs;

    /** Called for each event (required). */
    es_projector_apply_fn apply;
    void *ctx;
    /** Optional: called for lifecycle changes instead of apply (same ctx). */
    es_projector_lifecycle_fn lifecycle;

    /** What to follow: ES_SUB_ALL (default), ES_SUB_CATEGORY,
     *  ES_SUB_EVENT_TYPE, ES_SUB_STREAM_PREFIX or ES_SUB_STREAM. The
     *  environment remembers it; opening it with another target or name is
     *  refused (ES_ERR_INCOMPATIBLE_STORE) until it is rebuilt. */
    es_sub_target target;
    const char *name; /**< the category, type, prefix or stream; NULL for ES_SUB_ALL */
    /** Events per pushed batch (= per write transaction); 0 = the server's default. */
    uint32_t batch_size;

    /** The connection used by es_projector_run()/es_projector_step(); NULL =
     *  es_client_options_init() defaults. Copied by es_projector_create(). */
    const es_client_options *client;
    /** Least interval between two head refreshes (es_stats_get); 0 = 1000 ms. */
    uint32_t head_refresh_ms;

    /** Consume from NATS JetStream instead of esd: the server URLs
     *  (comma-separated) and the stream an `esd --relay-nats` writes
     *  (docs/replication.md). NULL (default) = subscribe to esd through
     *  `client`. The checkpoint is the position, as with esd, stored in the
     *  read model's transaction: the same exactly-once guarantee. Targets:
     *  ES_SUB_ALL, ES_SUB_CATEGORY, ES_SUB_EVENT_TYPE, ES_SUB_STREAM_PREFIX
     *  (filtered by the projector); ES_SUB_STREAM is refused. */
    const char *nats_url;
    const char *nats_stream;

    /** Optional: receives an explanation when es_projector_create() fails
     *  (NUL-terminated, truncated to errmsg_len). */
    char *errmsg;
    size_t errmsg_len;
} es_projector_options;

/** A consistent-enough view of a projector's progress (each field is read atomically). */
typedef struct es_projector_status {
    uint64_t checkpoint;        /**< last applied position (revision for ES_SUB_STREAM) */
    bool has_checkpoint;        /**< false before the first applied event */
    uint64_t head;              /**< the server's head as last seen (0 = not seen yet); for
                                     ES_SUB_STREAM the stream's event count (last revision + 1) */
    uint64_t lag;               /**< head − checkpoint (see the design notes); 0 when unknown */
    bool caught_up;             /**< the current subscription delivered its history */
    bool connected;             /**< a subscription is open */
    uint64_t events_applied;    /**< since es_projector_create() */
    uint64_t events_skipped;    /**< redelivered events at or below the checkpoint */
    uint64_t batches_committed; /**< since es_projector_create() */
    uint64_t batches_failed;    /**< aborted: apply or commit failure */
    uint64_t rebuilds;          /**< since es_projector_create() */
    es_err last_error;          /**< of the last failed batch or step; ES_OK once a later poll or
                                     commit succeeded */
    char last_error_msg[256];   /**< its explanation, NUL-terminated */
} es_projector_status;

/* ============================================================ lifecycle == */

/**
 * @brief Fill options with the defaults: ES_SUB_ALL, ES_PROJECTOR_SYNC_META,
 *        map size ES_PROJECTOR_DEFAULT_MAP_SIZE, no databases, no apply
 *        function (which the caller must set), dir NULL.
 * @param[out] opts the options to initialise
 */
ES_API void es_projector_options_init(es_projector_options *opts);

/**
 * @brief Create a projector: open (creating if needed) the environment and
 *        the read model's databases, and load the checkpoint. No network
 *        I/O.
 * @param[in] opts options; strings and arrays are copied. dir is created
 *   if missing (its parent must exist).
 * @param[out] out the projector, to be freed with es_projector_destroy()
 * @return ES_OK;
 *   ES_ERR_INVALID_ARGUMENT: opts/out/dir/apply missing, too many or
 *     invalid database names, a target without a name (or a name for
 *     ES_SUB_ALL), or an unusable client address;
 *   ES_ERR_INCOMPATIBLE_STORE: the environment belongs to another
 *     projection (another target or name) or has an unknown format, or the
 *     directory is not an LMDB environment: rebuild or use another dir;
 *   ES_ERR_BUSY: the environment is locked or its reader table is full;
 *   ES_ERR_CORRUPT: LMDB found the file damaged;
 *   ES_ERR_STORE_FULL: the map is too small even for the databases;
 *   ES_ERR_IO: the directory cannot be created or opened (errno kept);
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_projector_create(const es_projector_options *opts, es_projector **out);

/**
 * @brief Close the subscription, the connection and the environment, and
 *        free the projector. Accepts NULL.
 * @note No other thread may still use the projector or hold a read
 *   transaction on its environment.
 */
ES_API void es_projector_destroy(es_projector *p);

/**
 * @brief The LMDB environment, for read-only transactions of query code.
 * @return borrowed; valid until es_projector_destroy().
 */
ES_API MDB_env *es_projector_env(const es_projector *p);

/**
 * @brief The handle of the read model's database opts.dbs[index].
 * @return the handle; 0 (LMDB's main database, never a read model's) when
 *   index is out of range. Valid until es_projector_destroy().
 */
ES_API MDB_dbi es_projector_dbi(const es_projector *p, size_t index);

/**
 * @brief Translate an LMDB (or errno) result into an es_err — the one
 *        mapping of the library, for apply functions and query code.
 * @return ES_OK for MDB_SUCCESS; ES_ERR_NOT_FOUND for MDB_NOTFOUND;
 *   ES_ERR_STORE_FULL for MDB_MAP_FULL, ENOSPC, EDQUOT; ES_ERR_CORRUPT for
 *   MDB_CORRUPTED, MDB_PAGE_NOTFOUND; ES_ERR_INCOMPATIBLE_STORE for
 *   MDB_INVALID, MDB_VERSION_MISMATCH, MDB_INCOMPATIBLE; ES_ERR_TOO_LARGE
 *   for MDB_TXN_FULL, MDB_BAD_VALSIZE; ES_ERR_BUSY for MDB_READERS_FULL,
 *   EAGAIN/EBUSY (lock held); ES_ERR_NO_MEMORY for ENOMEM;
 *   ES_ERR_INVALID_ARGUMENT for EINVAL; ES_ERR_IO otherwise.
 */
ES_API es_err es_projector_err_from_mdb(int rc);

/* ============================================================== applying == */

/**
 * @brief Apply a batch of events exactly once: one write transaction, the
 *        apply function for each event after the checkpoint, the new
 *        checkpoint, one commit.
 *
 * This is what the subscription's batch callback does; it is public so that
 * events can also be fed from other sources (a read of the log, a test).
 * Events at or below the checkpoint are skipped (counted in
 * events_skipped); when all are, nothing is written.
 * @param[in] events n events in increasing order (positions; revisions for
 *   ES_SUB_STREAM); borrowed for the call
 * @return ES_OK (the batch is committed, or was entirely old);
 *   ES_ERR_CORRUPT: the numbers are not increasing, or (ES_SUB_ALL,
 *     ES_SUB_STREAM) the batch does not start right after the checkpoint: a
 *     gap would be applied; nothing written;
 *   the apply function's code: it failed; nothing of the batch is kept;
 *   ES_ERR_STORE_FULL: the map is full (raise map_size or rebuild);
 *   ES_ERR_IO, ES_ERR_CORRUPT, ES_ERR_BUSY, ES_ERR_TOO_LARGE: LMDB failed;
 *     nothing of the batch is kept, the checkpoint did not move.
 *   The explanation is in es_projector_status().last_error_msg.
 */
ES_API es_err es_projector_apply_batch(es_projector *p, const es_recorded_event *events, size_t n);

/**
 * @brief The committed checkpoint (any thread).
 * @param[out] has false before the first applied event (may be NULL)
 */
ES_API uint64_t es_projector_checkpoint(const es_projector *p, bool *has);

/**
 * @brief The checkpoint as stored in a transaction's snapshot: what the
 *        read model seen through txn reflects (query threads use it so that
 *        a reply and its checkpoint come from the same state).
 * @param[in] txn a transaction on es_projector_env() (read-only or not)
 * @param[out] last the checkpoint (0 when has is false)
 * @param[out] has false before the first applied event (may be NULL)
 * @return ES_OK; ES_ERR_CORRUPT (missing or damaged record); LMDB errors.
 */
ES_API es_err es_projector_checkpoint_txn(const es_projector *p, MDB_txn *txn, uint64_t *last,
                                          bool *has);

/**
 * @brief Rebuild from zero: empty every database of the read model, forget
 *        the checkpoint and the store id, in one transaction; an open
 *        subscription is closed (the next step subscribes from the start).
 * @return ES_OK; the LMDB errors of es_projector_apply_batch() (then
 *   nothing changed).
 * @note From the projector thread, or while no thread runs the projector.
 *   Other threads use es_projector_request_rebuild().
 */
ES_API es_err es_projector_rebuild(es_projector *p);

/**
 * @brief Ask the running projector to rebuild before its next batch (any
 *        thread). es_projector_run()/es_projector_step() carry it out.
 */
ES_API void es_projector_request_rebuild(es_projector *p);

/* =============================================================== running == */

/**
 * @brief One step of the projection: subscribe after the checkpoint if no
 *        subscription is open (checking the server's store id against the
 *        one the read model was built from), refresh the head when due,
 *        then wait up to timeout_ms for pushes and apply them.
 * @param timeout_ms passed to es_sub_poll() (0 = only what has arrived)
 * @return ES_OK (applied something or waited quietly);
 *   ES_ERR_CONNECTION, ES_ERR_CLOSED, ES_ERR_TIMEOUT, ES_ERR_CIRCUIT_OPEN,
 *     ES_ERR_MALFORMED, ES_ERR_NO_MEMORY, ES_ERR_SHUTTING_DOWN, ES_ERR_BUSY:
 *     transient; call again (after a pause): the projection resumes after
 *     the checkpoint;
 *   a batch failure (see es_projector_apply_batch()): the subscription was
 *     closed and the next step resubscribes after the checkpoint, so the
 *     batch comes again;
 *   ES_ERR_INCOMPATIBLE_STORE: the server is another store than the one the
 *     read model was built from, or its head is below the checkpoint
 *     (events lost on the server): rebuild;
 *   ES_ERR_UNAUTHENTICATED, ES_ERR_PERMISSION_DENIED,
 *     ES_ERR_INVALID_ARGUMENT, ES_ERR_INVALID_STREAM_ID: the subscription
 *     cannot be made; retrying will not help;
 *   another server reason when it dropped the subscription (closed; the
 *     next step resubscribes).
 */
ES_API es_err es_projector_step(es_projector *p, int timeout_ms);

/**
 * @brief Run the projection until es_projector_stop(): steps, with backoff
 *        (exponential with full jitter, 50 ms up to 5 s) after transient
 *        errors and batch failures.
 * @return ES_OK after es_projector_stop(); a permanent error of
 *   es_projector_step() (ES_ERR_INCOMPATIBLE_STORE, ES_ERR_UNAUTHENTICATED,
 *   ES_ERR_PERMISSION_DENIED, ES_ERR_INVALID_ARGUMENT,
 *   ES_ERR_INVALID_STREAM_ID, ES_ERR_STORE_FULL). Every other failure —
 *   including a batch the apply function refuses — is retried with the
 *   backoff and shows in es_projector_status_get().
 * @note Stops within about 200 ms of es_projector_stop() while connected;
 *   a call that is reconnecting or waiting for a reply first runs into the
 *   client's limits (connect_timeout_ms × reconnect_attempts plus backoff,
 *   request_timeout_ms), so a service that must stop promptly sets them low
 *   (e.g. reconnect_attempts = 1): this loop does its own backoff.
 */
ES_API es_err es_projector_run(es_projector *p);

/** @brief Make es_projector_run() return (any thread, async-signal-safe). */
ES_API void es_projector_stop(es_projector *p);

/** @brief Progress and counters (any thread). @param[out] st filled in */
ES_API void es_projector_status_get(const es_projector *p, es_projector_status *st);

#ifdef __cplusplus
}
#endif

#endif

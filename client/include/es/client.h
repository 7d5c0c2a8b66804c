/**
 * @file es/client.h
 * @brief libesclient: the C client library of the esd event store.
 *
 * A client (es_client) is one TCP connection to esd speaking the es.v1
 * protocol (proto/es/v1/es.proto), plus the policy that keeps it usable:
 *
 *  - The connection is opened lazily (or by es_client_connect) and the
 *    Hello handshake is done at once; the server's limits (frame size,
 *    events per append, page size, requests in flight) are then enforced
 *    on the client side too, so oversized requests fail before they are
 *    sent.
 *  - When the connection is lost, the requests in flight at that moment
 *    fail with ES_ERR_CLOSED, and the next call reconnects, retrying with
 *    exponential backoff and full jitter (delay drawn uniformly from
 *    [0, min(max, initial * 2^attempt)]).
 *  - A circuit breaker counts consecutive failed connection attempts. After
 *    breaker_threshold of them every call fails at once with
 *    ES_ERR_CIRCUIT_OPEN, without touching the network, until
 *    breaker_reset_ms have passed; then one call makes a single trial
 *    attempt (half-open) which closes the circuit on success or re-opens it
 *    on failure.
 *  - Appends are idempotent when retried with the same event ids. Events
 *    passed without an id get a time-ordered random UUID (version 7)
 *    written back into the caller's es_event, so calling again with the same array after
 *    ES_ERR_CLOSED or ES_ERR_TIMEOUT is safe: the server answers a retry of
 *    an append it already stored with the original result and
 *    duplicate = true.
 *
 * Names and ownership, the same in every es/ header: an object the library
 * allocates comes from es_<thing>_create() (or from the call that opens it:
 * es_read_stream(), es_subscribe()) and is freed by es_<thing>_destroy(),
 * which accepts NULL; a structure in the caller's memory is filled by
 * es_<thing>_init() (or by the call that loads it: es_snapshot_load()) and
 * what it holds is released by es_<thing>_finish(). No other call frees:
 * es_client_disconnect() drops the connection and keeps the client.
 *
 * Every function that can fail returns an es_err (es/err.h); results travel
 * through out-parameters. After a failure, es_client_errmsg() explains it and
 * es_client_conflicts() lists the failed expectation checks of an
 * ES_ERR_WRONG_EXPECTED_REVISION.
 *
 * Strings (stream ids, event types, content types, names) are NUL-terminated
 * UTF-8; stream ids and event types are 1..256 bytes without control
 * characters, and stream ids starting with '$' are reserved for the store.
 * Event data and metadata are arbitrary bytes with a length.
 *
 * @note Threads: an es_client, and every iterator opened on it, must be used
 *   by one thread at a time (calls are blocking, with poll() timeouts). Use
 *   one client per thread, or serialise calls with your own lock. Different
 *   clients are independent.
 * @note Signals: the library never raises SIGPIPE (it sends with
 *   MSG_NOSIGNAL) and retries system calls interrupted by signals.
 */
#ifndef ES_CLIENT_H
#define ES_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define ES_API __attribute__((visibility("default")))
#else
#define ES_API
#endif

/** The protocol version this library speaks (es.v1). */
#define ES_PROTOCOL_VERSION 1u
/** Bytes in an event id (a UUID). */
#define ES_UUID_BYTES 16u
/** Characters of a formatted UUID, without the terminating NUL. */
#define ES_UUID_STRLEN 36u
/** The project's default port (esd listens on it unless told otherwise). */
#define ES_DEFAULT_PORT 7400
/** The default server address of the tools and of es_client_options_init. */
#define ES_DEFAULT_ADDRESS "127.0.0.1:7400"
/** "From the end": a read backward from here starts at the last event. */
#define ES_READ_END UINT64_MAX

/* ================================================================ client == */

/** A connection to esd; opaque. */
typedef struct es_client es_client;

/**
 * Options of a client. Initialise with es_client_options_init(), then set
 * the fields you need. Strings are copied by es_client_create(); the
 * structure can be discarded afterwards.
 */
typedef struct es_client_options {
    /** "HOST:PORT", "[IPv6]:PORT" or "HOST" (port ES_DEFAULT_PORT). */
    const char *address;
    /** Name the client announces in the Hello (logged by the server). */
    const char *client_name;
    /** Credentials sent in the Hello; NULL/0 for none. */
    const char *user;
    const uint8_t *token;
    size_t token_len;

    /** Limit on one connection attempt: TCP connect plus Hello. Default 5000. */
    uint32_t connect_timeout_ms;
    /** Limit on waiting for one reply (and on sending one request). Default 30000. */
    uint32_t request_timeout_ms;

    /** Connection attempts made by one call before it gives up (>= 1). Default 4. */
    uint32_t reconnect_attempts;
    /** Backoff before the 2nd attempt: a delay in [0, initial]. Default 100. */
    uint32_t backoff_initial_ms;
    /** Ceiling of the backoff window. Default 5000. */
    uint32_t backoff_max_ms;

    /** Consecutive failed connection attempts that open the circuit; 0 disables
     *  the breaker. Default 5. */
    uint32_t breaker_threshold;
    /** How long the circuit stays open before a half-open trial. Default 10000. */
    uint32_t breaker_reset_ms;

    /** Cap on a received frame body; 0 = the server's max_frame_bytes (or 16 MiB
     *  before the Hello), never above 64 MiB. */
    uint32_t max_frame_bytes;
    /** Cap on requests in flight; 0 = the server's max_in_flight (64 if it
     *  states none). Never above the server's limit. */
    uint32_t max_in_flight;
    /** Cap on handles of es_stream_append_send not yet collected. Default 4096. */
    uint32_t max_pending;

    /** TLS 1.2 or newer instead of plain TCP. The server's certificate is
     *  verified against the trust store (tls_ca_file, else the system's) and
     *  its name against tls_server_name (else the host of address). Default
     *  false. */
    bool tls;
    /** A PEM file of the CA certificates to trust instead of the system's;
     *  implies tls. NULL: the system's trust store. */
    const char *tls_ca_file;
    /** The name the certificate must carry (also sent as SNI); NULL: the host
     *  of address. An IP address is matched against the certificate's IP
     *  entries. */
    const char *tls_server_name;
    /** Skip the verification of the certificate and name: the connection is
     *  encrypted but anyone on the path can impersonate the server. For
     *  tests only. */
    bool tls_insecure;
} es_client_options;

/**
 * @brief Fill options with the defaults (see each field).
 * @param[out] opts the options to initialise
 */
ES_API void es_client_options_init(es_client_options *opts);

/**
 * @brief Create a client. No I/O: the connection is made by
 *        es_client_connect() or by the first call that needs it.
 * @param[in] opts options; copied
 * @param[out] out the client, to be freed with es_client_destroy()
 * @return ES_OK;
 *   ES_ERR_INVALID_ARGUMENT: opts or out is NULL, the address cannot be
 *     parsed, or a numeric option is out of range (fix the options);
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_client_create(const es_client_options *opts, es_client **out);

/**
 * @brief Connect and do the Hello handshake now (if not connected yet).
 *
 * Makes up to reconnect_attempts attempts with backoff, subject to the
 * circuit breaker. Every other call does the same implicitly when the
 * client is not connected.
 * @return ES_OK (also when already connected);
 *   ES_ERR_CONNECTION: every attempt failed (refused, unreachable, timed out,
 *     or the connection dropped during the Hello); retry later;
 *   ES_ERR_CIRCUIT_OPEN: the breaker is open; nothing was attempted; retry
 *     after breaker_reset_ms;
 *   ES_ERR_UNAUTHENTICATED, ES_ERR_PERMISSION_DENIED: the server refused the
 *     credentials; retrying will not help;
 *   ES_ERR_UNSUPPORTED_VERSION: the server does not speak es.v1;
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_client_connect(es_client *c);

/**
 * @brief Drop the connection (if any) and keep the client: requests in
 *        flight fail with ES_ERR_CLOSED and the next call reconnects.
 *        Accepts NULL. Free the client with es_client_destroy().
 */
ES_API void es_client_disconnect(es_client *c);

/**
 * @brief Close the connection and free the client. Accepts NULL.
 * @note Every iterator opened on the client must be destroyed first.
 *   Handles of es_stream_append_send that were not collected are dropped.
 *   Subscriptions still open are detached: their es_sub_poll() then
 *   returns ES_ERR_CLOSED and es_sub_destroy() only frees them.
 */
ES_API void es_client_destroy(es_client *c);

/**
 * @brief Whether the client currently holds a connection that completed the
 *        Hello (a connection lost but not yet noticed still counts).
 */
ES_API bool es_client_connected(const es_client *c);

/**
 * @brief A human explanation of the last failed call on this client.
 * @return a NUL-terminated string owned by the client ("" when nothing
 *   failed yet); valid until the next call on the client.
 */
ES_API const char *es_client_errmsg(const es_client *c);

/** Kinds of expectation on a stream's state (ExpectedKind on the wire). */
typedef enum es_expected_kind {
    ES_EXPECT_ANY = 0,           /**< no check */
    ES_EXPECT_NO_STREAM = 1,     /**< the stream must not exist yet */
    ES_EXPECT_STREAM_EXISTS = 2, /**< the stream must have at least one event */
    ES_EXPECT_EXACT = 3,         /**< the stream's last revision must equal revision */
} es_expected_kind;

/** An expectation: { ES_EXPECT_EXACT, 41 } means "the last revision is 41". */
typedef struct es_expected {
    es_expected_kind kind;
    uint64_t revision; /**< ES_EXPECT_EXACT only */
} es_expected;

/** One failed expectation check, as reported by the server. */
typedef struct es_conflict {
    const char *stream;       /**< NUL-terminated, owned by the client */
    es_expected expected;     /**< what the request expected */
    bool actual_exists;       /**< whether the stream existed */
    uint64_t actual_revision; /**< its last revision, when it existed */
} es_conflict;

/**
 * @brief The failed checks of the last call that returned
 *        ES_ERR_WRONG_EXPECTED_REVISION: every one, not only the first.
 * @param[out] n the number of entries (0 when the last failure was not a
 *   conflict)
 * @return the array, owned by the client and valid until the next call on
 *   the client; NULL when *n is 0.
 */
ES_API const es_conflict *es_client_conflicts(const es_client *c, size_t *n);

/** Sync mode of the server (SyncMode on the wire). */
typedef enum es_sync_mode {
    ES_SYNC_FULL = 0, /**< every acknowledged commit was fsynced */
    ES_SYNC_NONE = 1, /**< commits are not synced: a crash can lose them */
} es_sync_mode;

/** Limits the server stated in its HelloOk (0 = not stated). */
typedef struct es_limits {
    uint32_t max_frame_bytes;
    uint32_t max_events_per_append;
    uint32_t max_event_bytes;
    uint32_t max_page_size;
    uint32_t max_in_flight;
    uint32_t max_appends_per_transaction;
} es_limits;

/** What the server said in its HelloOk. */
typedef struct es_server_info {
    uint32_t protocol_version;
    char server_version[64]; /**< NUL-terminated, truncated if longer */
    char role[32];           /**< NUL-terminated, truncated if longer */
    es_limits limits;
    es_sync_mode sync_mode;
    uint8_t store_id[ES_UUID_BYTES];
    size_t store_id_len; /**< 16, or 0 when the server sent none */
} es_server_info;

/**
 * @brief The server's Hello reply of the last successful handshake.
 * @param[out] info filled with a copy
 * @return ES_OK; ES_ERR_NOT_FOUND: no handshake succeeded yet (call
 *   es_client_connect() first).
 */
ES_API es_err es_client_server_info(const es_client *c, es_server_info *info);

/** State of the circuit breaker. */
typedef enum es_breaker_state {
    ES_BREAKER_CLOSED = 0,    /**< connection attempts allowed */
    ES_BREAKER_OPEN = 1,      /**< calls fail fast with ES_ERR_CIRCUIT_OPEN */
    ES_BREAKER_HALF_OPEN = 2, /**< the next attempt is the trial */
} es_breaker_state;

/** @brief The breaker's state (OPEN is reported until a call moves it on). */
ES_API es_breaker_state es_client_breaker_state(const es_client *c);

/**
 * @brief Round trip to the server (a Ping echoed as a Pong).
 * @param[out] rtt_us the round-trip time in microseconds (may be NULL)
 * @return ES_OK; the connection errors of es_client_connect();
 *   ES_ERR_CLOSED: the connection was lost (the next call reconnects);
 *   ES_ERR_TIMEOUT: no reply within request_timeout_ms (the connection is
 *     dropped, since it can no longer be trusted);
 *   ES_ERR_MALFORMED: the reply did not match the request (a server bug).
 */
ES_API es_err es_client_ping(es_client *c, uint64_t *rtt_us);

/* ================================================================ events == */

/**
 * An event proposed for appending. Pointers are borrowed for the call.
 * id/has_id are in/out: when has_id is false the library generates a random
 * UUIDv7, stores it in id and sets has_id, so that passing the same array
 * again is an idempotent retry.
 */
typedef struct es_event {
    uint8_t id[ES_UUID_BYTES];
    bool has_id;
    const char *type; /**< required */
    const void *data; /**< may be NULL when data_len is 0 */
    size_t data_len;
    const void *metadata; /**< may be NULL when metadata_len is 0 */
    size_t metadata_len;
    const char *content_type;      /**< optional, e.g. "application/json" */
    const uint8_t *correlation_id; /**< optional, ES_UUID_BYTES bytes */
    const uint8_t *causation_id;   /**< optional, ES_UUID_BYTES bytes */
} es_event;

/** The outcome of one successful append. */
typedef struct es_append_result {
    uint64_t first_revision, last_revision; /**< revisions of the events */
    uint64_t first_position, last_position; /**< global positions */
    bool duplicate;                         /**< an idempotent retry: nothing new was stored */
    bool synced;                            /**< the commit was fsynced before the reply */
} es_append_result;

/** One append of a transaction. */
typedef struct es_append_req {
    const char *stream;
    es_expected expected;
    es_event *events; /**< ids are filled in as for es_stream_append() */
    size_t n_events;
} es_append_req;

/**
 * @brief Append events to one stream, all or nothing, if the stream is in
 *        the expected state.
 * @param[in] stream the stream id
 * @param[in] expected the expectation (checked by the server atomically)
 * @param[in,out] events n_events >= 1 events; missing ids are generated and
 *   written back (see es_event)
 * @param[out] res the result (may be NULL)
 * @return ES_OK;
 *   ES_ERR_WRONG_EXPECTED_REVISION: the stream was not in the expected
 *     state; es_client_conflicts() gives the actual one: reload and decide
 *     again;
 *   ES_ERR_IDEMPOTENCY_CONFLICT: some event ids are already stored elsewhere,
 *     only partly, or with other content (type, data, metadata, content
 *     type, correlation or causation id): nothing was written; use fresh
 *     ids for new events;
 *   ES_ERR_INVALID_STREAM_ID, ES_ERR_RESERVED_STREAM,
 *   ES_ERR_INVALID_EVENT_TYPE, ES_ERR_INVALID_EVENT_ID,
 *   ES_ERR_INVALID_ARGUMENT, ES_ERR_TOO_MANY_EVENTS, ES_ERR_TOO_LARGE: the
 *     request breaks a rule or a server limit (checked before sending where
 *     the limits are known); nothing was stored;
 *   ES_ERR_CLOSED, ES_ERR_TIMEOUT: the outcome is unknown; retry with the
 *     same events (their ids make the retry idempotent);
 *   ES_ERR_STORE_FULL, ES_ERR_READ_ONLY, ES_ERR_SHUTTING_DOWN, ES_ERR_BUSY,
 *   ES_ERR_IO: the server could not store it; nothing was stored;
 *   ES_ERR_FOLLOWER: the server is a read-only follower (esd
 *     --follow-nats): send writes to the primary; nothing was stored;
 *   ES_ERR_PERMISSION_DENIED; the connection errors of es_client_connect().
 */
ES_API es_err es_stream_append(es_client *c, const char *stream, es_expected expected,
                               es_event *events, size_t n_events, es_append_result *res);

/**
 * @brief Send an append without waiting for its result (pipelining).
 *
 * When the number of requests in flight has reached the cap (the server's
 * max_in_flight), this call first waits for replies to arrive.
 * @param[out] handle the handle to pass to es_stream_append_wait() or
 *   es_stream_append_discard(); handles are never reused by a client
 * @return ES_OK (sent); the argument and limit errors of
 *   es_stream_append() (nothing sent); ES_ERR_TOO_MANY_REQUESTS: max_pending
 *   handles are not collected yet (collect some); ES_ERR_CLOSED,
 *   ES_ERR_TIMEOUT (the send failed; the outcome is unknown); the connection
 *   errors of es_client_connect().
 * @note The events are encoded before the call returns; the caller may
 *   reuse their memory at once.
 */
ES_API es_err es_stream_append_send(es_client *c, const char *stream, es_expected expected,
                                    es_event *events, size_t n_events, uint64_t *handle);

/**
 * @brief Collect the result of an append sent by es_stream_append_send(),
 *        waiting for it if needed. Results may be collected in any order;
 *        replies that arrive meanwhile are kept for their handles.
 * @param[out] res the result (may be NULL)
 * @return the codes of es_stream_append() for that append, plus
 *   ES_ERR_NOT_FOUND: unknown or already collected handle. The conflict
 *   details and message of a failed append are available through
 *   es_client_conflicts()/es_client_errmsg() after this call.
 *   ES_ERR_TIMEOUT: no reply within request_timeout_ms of sending (the
 *   connection is dropped, other requests in flight fail with CLOSED).
 */
ES_API es_err es_stream_append_wait(es_client *c, uint64_t handle, es_append_result *res);

/**
 * @brief Forget a handle: its result is thrown away when it arrives.
 * @return ES_OK; ES_ERR_NOT_FOUND: unknown or already collected handle.
 */
ES_API es_err es_stream_append_discard(es_client *c, uint64_t handle);

/** @brief Requests sent and not answered yet. */
ES_API uint32_t es_client_in_flight(const es_client *c);

/**
 * @brief Appends to several streams, each with its own expectation, all or
 *        nothing (the transfer between two accounts).
 * @param[in,out] appends n_appends >= 1 appends (ids filled in as for
 *   es_stream_append())
 * @param[out] results n_appends entries, in the order of the appends (may be
 *   NULL)
 * @return the codes of es_stream_append(). On
 *   ES_ERR_WRONG_EXPECTED_REVISION es_client_conflicts() lists every append
 *   whose check failed, not only the first. ES_ERR_TOO_MANY_REQUESTS is not
 *   returned; too many appends give ES_ERR_INVALID_ARGUMENT.
 */
ES_API es_err es_txn_commit(es_client *c, es_append_req *appends, size_t n_appends,
                            es_append_result *results);

/* ================================================================= reads == */

/** A stored event, as delivered by es_read_next(). */
typedef struct es_recorded_event {
    const char *stream; /**< NUL-terminated */
    uint64_t revision;
    uint64_t position;
    uint8_t id[ES_UUID_BYTES];
    const char *type;    /**< NUL-terminated */
    const uint8_t *data; /**< data_len bytes (not NUL-terminated) */
    size_t data_len;
    const uint8_t *metadata; /**< metadata_len bytes */
    size_t metadata_len;
    const char *content_type;      /**< NUL-terminated, "" when none */
    const uint8_t *correlation_id; /**< ES_UUID_BYTES bytes, or NULL */
    const uint8_t *causation_id;   /**< ES_UUID_BYTES bytes, or NULL */
    uint64_t recorded_at_us;       /**< server clock, microseconds since the epoch */
} es_recorded_event;

/** A filter of es_read_all(). */
typedef enum es_filter_kind {
    ES_FILTER_NONE = 0,
    ES_FILTER_STREAM_PREFIX = 1, /**< streams whose id starts with name */
    ES_FILTER_CATEGORY = 2,      /**< streams "<name>-..." */
    ES_FILTER_EVENT_TYPE = 3,    /**< events of type name */
} es_filter_kind;

/** Options of a read. Zero-initialise ({0}) for "forward from the start, all". */
typedef struct es_read_options {
    /** First revision (stream) or position (all), inclusive. Backward:
     *  ES_READ_END = from the last event. */
    uint64_t from;
    bool backward;
    /** Total events to deliver; 0 = no limit. */
    uint64_t max_count;
    /** Events per request; 0 = the server's max_page_size. */
    uint32_t page_size;
    /** es_read_all() only. */
    es_filter_kind filter;
    const char *filter_name; /**< copied */
} es_read_options;

/** An iterator over events, hiding the paging; opaque. */
typedef struct es_read_iter es_read_iter;

/**
 * @brief Open an iterator over one stream. No I/O until es_read_next().
 * @param[in] stream the stream id (copied); '$' streams are allowed
 * @param[in] opts options (NULL: forward from revision 0, all events)
 * @param[out] out the iterator, to be freed with es_read_destroy()
 * @return ES_OK; ES_ERR_INVALID_STREAM_ID; ES_ERR_NO_MEMORY.
 */
ES_API es_err es_read_stream(es_client *c, const char *stream, const es_read_options *opts,
                             es_read_iter **out);

/**
 * @brief Open an iterator over the global log (positions), optionally
 *        filtered. No I/O until es_read_next().
 * @param[in] opts options (NULL: forward from the first event, all events)
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (a filter without a valid name);
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_read_all(es_client *c, const es_read_options *opts, es_read_iter **out);

/**
 * @brief The next event, fetching the next page when needed.
 * @param[out] ev the event, or NULL at the end (no more events, or max_count
 *   delivered)
 * @return ES_OK (check *ev);
 *   ES_ERR_NOT_FOUND: the stream does not exist (stream reads);
 *   ES_ERR_CLOSED, ES_ERR_TIMEOUT: the page could not be fetched; calling
 *     again reconnects and resumes where the iterator stopped;
 *   ES_ERR_MALFORMED: the server sent more events than asked for, or an
 *     event that breaks the rules (the page is dropped);
 *   ES_ERR_TOO_LARGE: a page exceeded max_frame_bytes: use a smaller
 *     page_size; ES_ERR_PERMISSION_DENIED; the connection errors of
 *     es_client_connect().
 * @note *ev and every pointer in it are owned by the iterator and valid
 *   until the next es_read_next() or es_read_destroy() on it.
 */
ES_API es_err es_read_next(es_read_iter *it, const es_recorded_event **ev);

/** @brief The server's last position when the latest page was read (0 before). */
ES_API uint64_t es_read_head(const es_read_iter *it);

/** @brief Free an iterator; accepts NULL. Call it before es_client_destroy()
 *  of its client (it hands its page buffer back to the client). */
ES_API void es_read_destroy(es_read_iter *it);

/* =============================================================== streams == */

/** A stream's record. */
typedef struct es_stream_info {
    const char *stream; /**< NUL-terminated; see the function for its lifetime */
    uint64_t last_revision;
    uint64_t event_count;
    uint64_t first_position, last_position;
    uint64_t created_us, updated_us;
} es_stream_info;

/**
 * @brief The record of one stream.
 * @param[out] info filled in; info->stream points at the caller's stream
 *   argument
 * @return ES_OK; ES_ERR_NOT_FOUND: no such stream; ES_ERR_INVALID_STREAM_ID;
 *   ES_ERR_CLOSED, ES_ERR_TIMEOUT; the connection errors of
 *   es_client_connect().
 */
ES_API es_err es_stream_info_get(es_client *c, const char *stream, es_stream_info *info);

/** Visitor of es_stream_list(): return 0 to continue, nonzero to stop. */
typedef int (*es_stream_visit_fn)(void *ctx, const es_stream_info *info);

/**
 * @brief List streams in id order, paging as needed.
 * @param[in] prefix only ids starting with it (NULL or "" for all)
 * @param[in] after start after this id (NULL or "" from the first)
 * @param[in] limit streams to visit at most; 0 = all
 * @param[in] visit called for each stream; info and info->stream are valid
 *   during the call only
 * @param[out] more set when streams follow the last one visited (may be NULL)
 * @return ES_OK (also when the visitor stopped); ES_ERR_INVALID_ARGUMENT;
 *   ES_ERR_MALFORMED (more streams than asked for); ES_ERR_CLOSED,
 *   ES_ERR_TIMEOUT; the connection errors of es_client_connect().
 */
ES_API es_err es_stream_list(es_client *c, const char *prefix, const char *after, uint64_t limit,
                             es_stream_visit_fn visit, void *ctx, bool *more);

/* ============================================================= snapshots == */

/** A loaded snapshot (caller memory: release with es_snapshot_finish()). */
typedef struct es_snapshot {
    uint64_t revision;     /**< the stream revision the state reflects */
    uint32_t state_format; /**< the caller's version of the encoding */
    uint64_t saved_at_us;
    uint8_t *data; /**< owned by the structure */
    size_t data_len;
} es_snapshot;

/**
 * @brief Store the snapshot of a stream (replacing an older one).
 * @return ES_OK; ES_ERR_NOT_FOUND (no such stream);
 *   ES_ERR_INVALID_ARGUMENT (revision beyond the stream's last);
 *   ES_ERR_INVALID_STREAM_ID; ES_ERR_TOO_LARGE; ES_ERR_STORE_FULL;
 *   ES_ERR_CLOSED, ES_ERR_TIMEOUT (unknown outcome; saving again is
 *   harmless); the connection errors of es_client_connect().
 */
ES_API es_err es_snapshot_save(es_client *c, const char *stream, uint64_t revision,
                               uint32_t state_format, const void *data, size_t data_len);

/**
 * @brief Load the latest snapshot of a stream.
 * @param[out] snap filled in; release with es_snapshot_finish()
 * @return ES_OK; ES_ERR_NOT_FOUND (no snapshot); ES_ERR_INVALID_STREAM_ID;
 *   ES_ERR_NO_MEMORY; ES_ERR_CLOSED, ES_ERR_TIMEOUT; the connection errors
 *   of es_client_connect(). On error *snap is zeroed.
 */
ES_API es_err es_snapshot_load(es_client *c, const char *stream, es_snapshot *snap);

/** @brief Release the memory of a loaded snapshot; accepts NULL. */
ES_API void es_snapshot_finish(es_snapshot *snap);

/* ============================================================= lifecycle == */

/*
 * A stream's lifecycle (docs/lifecycle.md). Soft delete hides a stream's
 * events; an append recreates it, its revisions continuing after the
 * deleted ones (ES_EXPECT_NO_STREAM and ES_EXPECT_ANY succeed, and
 * ES_EXPECT_EXACT with the last deleted revision). A tombstone is final:
 * appends, snapshot saves and reads get ES_ERR_STREAM_DELETED. Metadata
 * limits what reads serve, at once.
 */

/** A stream's lifecycle state. */
typedef struct es_stream_meta {
    bool exists;                /**< metadata was ever set */
    uint64_t metadata_revision; /**< 0 for the first set */
    uint64_t truncate_before;   /**< revisions below are not served (0: none) */
    uint64_t max_count;         /**< only the last max_count are served (0: no limit) */
    uint64_t max_age_s;         /**< only younger events are served (0: no limit) */
    bool deleted;               /**< soft-deleted, nothing appended since */
    uint64_t deleted_before;    /**< revisions below were deleted */
} es_stream_meta;

/** The longest max_age_s a server accepts: 100 years. */
#define ES_MAX_AGE_S (100ull * 366u * 24u * 3600u)

/**
 * @brief Soft-delete a stream (needs the write role).
 * @param expected checked against the stream as for an append
 * @param[out] last_revision the last revision deleted (may be NULL)
 * @return ES_OK (also when it was deleted already); ES_ERR_NOT_FOUND (never
 *   existed); ES_ERR_STREAM_DELETED (tombstoned); ES_ERR_WRONG_EXPECTED_REVISION;
 *   ES_ERR_INVALID_STREAM_ID; ES_ERR_RESERVED_STREAM; ES_ERR_PERMISSION_DENIED;
 *   ES_ERR_FOLLOWER; the connection errors of es_client_connect().
 */
ES_API es_err es_stream_delete(es_client *c, const char *stream, es_expected expected,
                               uint64_t *last_revision);

/**
 * @brief Tombstone a stream: it can never be written or read again (needs
 *        the admin role). Cannot be undone.
 * @return as es_stream_delete(); tombstoning again is ES_OK.
 */
ES_API es_err es_stream_tombstone(es_client *c, const char *stream, es_expected expected,
                                  uint64_t *last_revision);

/**
 * @brief Set a stream's retention (needs the write role); every field
 *        replaces the stored one.
 * @param expected the metadata revision expected (ES_EXPECT_NO_STREAM: none
 *        set yet)
 * @param[out] out the state stored (may be NULL)
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (truncate_before beyond the last
 *   revision + 1, max_age_s above ES_MAX_AGE_S); ES_ERR_WRONG_EXPECTED_REVISION;
 *   ES_ERR_NOT_FOUND; ES_ERR_STREAM_DELETED; ES_ERR_RESERVED_STREAM;
 *   ES_ERR_INVALID_STREAM_ID; the connection errors of es_client_connect().
 */
ES_API es_err es_stream_meta_set(es_client *c, const char *stream, es_expected expected,
                                 uint64_t truncate_before, uint64_t max_count, uint64_t max_age_s,
                                 es_stream_meta *out);

/**
 * @brief A stream's lifecycle state.
 * @return ES_OK; ES_ERR_NOT_FOUND; ES_ERR_STREAM_DELETED; ES_ERR_INVALID_STREAM_ID;
 *   ES_ERR_RESERVED_STREAM; the connection errors of es_client_connect().
 */
ES_API es_err es_stream_meta_get(es_client *c, const char *stream, es_stream_meta *out);

/* =============================================================== erasure == */

/*
 * Erasure by crypto-shredding (docs/erasure.md). An encrypted store seals
 * each stream's data and metadata with a key of its own, or of its data
 * subject; erasure destroys the key, so the data cannot be read again from
 * any copy holding only ciphertext (backups included). Reads and appends of
 * an erased stream get ES_ERR_ERASED. Positions, ids, types and times stay.
 */

/** The outcome of an erasure. */
typedef struct es_erased {
    uint64_t erased_at_us; /**< when it was erased (the first time) */
    bool already;          /**< erased before: nothing changed */
    uint64_t streams;      /**< streams erased with it (1 for a stream) */
} es_erased;

/**
 * @brief Append to a stream of a data subject: a new stream is sealed with
 *        the subject's key (created with the subject's first stream); an
 *        existing stream must already belong to the subject.
 * @return as es_stream_append(); ES_ERR_INVALID_ARGUMENT (another subject's
 *   stream, a stream without a subject, a store without encryption, a
 *   subject id that is not 1..256 bytes of UTF-8 without control
 *   characters); ES_ERR_ERASED (the subject was erased).
 */
ES_API es_err es_stream_append_subject(es_client *c, const char *stream, const char *subject,
                                       es_expected expected, es_event *events, size_t n_events,
                                       es_append_result *res);

/**
 * @brief Erase a stream (needs the admin role). Cannot be undone.
 * @param expected the confirmation: ES_EXPECT_EXACT with the stream's last
 *   revision, or ES_EXPECT_STREAM_EXISTS; ES_EXPECT_ANY only with force
 * @param[out] out the outcome (may be NULL)
 * @return ES_OK (also when erased already); ES_ERR_NOT_FOUND;
 *   ES_ERR_NOT_ERASABLE (stored in plain); ES_ERR_WRONG_EXPECTED_REVISION;
 *   ES_ERR_INVALID_ARGUMENT (no confirmation; the stream belongs to a
 *   subject: erase the subject); ES_ERR_STREAM_DELETED; ES_ERR_PERMISSION_DENIED;
 *   ES_ERR_FOLLOWER; ES_ERR_INVALID_STREAM_ID; ES_ERR_RESERVED_STREAM; the
 *   connection errors of es_client_connect().
 */
ES_API es_err es_stream_erase(es_client *c, const char *stream, es_expected expected, bool force,
                              es_erased *out);

/**
 * @brief Erase every stream of a data subject at once (needs the admin
 *        role). Cannot be undone; the call is its own confirmation.
 * @return ES_OK (also when erased already); ES_ERR_NOT_FOUND (no stream was
 *   ever appended with this subject); ES_ERR_INVALID_ARGUMENT;
 *   ES_ERR_PERMISSION_DENIED; ES_ERR_FOLLOWER; the connection errors.
 */
ES_API es_err es_subject_erase(es_client *c, const char *subject, es_erased *out);

/* ================================================================= stats == */

/** Server statistics. */
typedef struct es_stats {
    uint8_t store_id[ES_UUID_BYTES];
    uint64_t head_position;
    uint64_t stream_count;
    uint64_t event_count;
    uint64_t map_size, map_used;
    uint32_t readers_used, readers_max;
    uint64_t uptime_us;
    uint32_t connections;
    uint32_t subscriptions;
    uint64_t commits;
    uint64_t appends_ok, appends_failed;
    uint64_t events_appended;
    es_sync_mode sync_mode;
    double mean_commit_batch;
    uint32_t max_commit_batch;
    /* Replication (docs/replication.md); zero when off. */
    bool relay_on;                 /* esd --relay-nats */
    uint64_t relay_acked_position; /* highest position JetStream acknowledged */
    uint64_t relay_lag;            /* head_position - relay_acked_position */
    bool follower;                 /* esd --follow-nats: a read-only replica */
    uint64_t follower_pending;     /* stream messages not yet fetched */
    bool follower_halted;          /* a message was refused: consuming stopped */
} es_stats;

/**
 * @brief Fetch the server's statistics.
 * @return ES_OK; ES_ERR_CLOSED, ES_ERR_TIMEOUT; ES_ERR_PERMISSION_DENIED; the
 *   connection errors of es_client_connect().
 */
ES_API es_err es_stats_get(es_client *c, es_stats *st);

/* ========================================================= subscriptions == */

/**
 * Subscriptions: history first, then a caught-up notification, then live
 * events, pushed by the server over the client's connection. The library
 * remembers the last event it delivered; when the connection is lost, the
 * next es_sub_poll() reconnects (backoff and breaker as for any call) and
 * resubscribes strictly after that point, so the callback sees every
 * event exactly once and in order, also across reconnects.
 *
 * Callbacks run only inside es_sub_poll() of their subscription, never
 * inside another call that happens to read the connection: pushes read by
 * other calls (an append waiting for its reply, another subscription's
 * poll) are queued on their subscription. A callback may call the other
 * functions of the client (append, read, es_client_disconnect(), ...), but
 * not es_sub_poll() or es_sub_destroy() of its own subscription, nor
 * es_client_destroy().
 *
 * Memory is bounded: a push is a frame, capped like any frame, and holds
 * at most the batch asked for; a subscription queues at most 4 MiB of
 * pushes beyond one frame. When a subscription that is not polled fills
 * its queue, it stops queueing, and its next poll delivers what it holds
 * and then resubscribes after the last event delivered (nothing is lost,
 * nothing repeated).
 *
 * @note A subscription uses its client's connection; while one is open the
 *   same client may still send other requests (their replies and the
 *   pushes are told apart by request id), but only from the thread that
 *   polls the subscription. Several subscriptions may share a client: poll
 *   each of them.
 * @note A subscription is tied to the store it was opened on: if a
 *   reconnect finds a server with another store id, the subscription is
 *   closed with ES_ERR_INCOMPATIBLE_STORE.
 */

/** What to subscribe to. */
typedef enum es_sub_target {
    ES_SUB_ALL = 0,           /**< the whole log; name unused */
    ES_SUB_STREAM = 1,        /**< one stream; positions are revisions */
    ES_SUB_CATEGORY = 2,      /**< streams "<name>-..." */
    ES_SUB_EVENT_TYPE = 3,    /**< events of type name */
    ES_SUB_STREAM_PREFIX = 4, /**< streams whose id starts with name */
} es_sub_target;

/** Where to start. */
typedef enum es_sub_start {
    ES_SUB_FROM_START = 0, /**< the first event */
    ES_SUB_FROM_END = 1,   /**< only events committed after subscribing (for
                                ES_SUB_STREAM: after the stream's last revision,
                                read just before subscribing) */
    ES_SUB_AFTER = 2,      /**< strictly after `after` (a revision for ES_SUB_STREAM,
                                a position otherwise; 0 included: from the first
                                event use ES_SUB_FROM_START) */
} es_sub_start;

/** Options of es_subscribe(). Zero-initialise, then set what you need. */
typedef struct es_sub_options {
    es_sub_target target;
    const char *name; /**< copied; NULL (or "") for ES_SUB_ALL */
    es_sub_start start;
    uint64_t after;      /**< ES_SUB_AFTER only */
    uint32_t batch_size; /**< events per push; 0 = the server's default */
} es_sub_options;

/** A subscription; opaque. */
typedef struct es_subscription es_subscription;

/**
 * Called with each batch of events, in order (one push of the server, at
 * most batch_size events). The events and everything they point to are
 * valid only during the call.
 * @return 0 when the whole batch was consumed (the library then counts it
 *   as delivered); nonzero to stop: es_sub_poll() returns ES_ERR_REFUSED,
 *   the batch is NOT counted as delivered, and a later poll or a new
 *   subscription resumes with it.
 */
typedef int (*es_sub_batch_fn)(void *ctx, const es_recorded_event *events, size_t n);

/**
 * Called once per (re)subscription when the history is delivered and live
 * events begin. position: the head of the log the server had read to (a
 * global position, also for ES_SUB_STREAM).
 */
typedef void (*es_sub_caught_up_fn)(void *ctx, uint64_t position);

/**
 * @brief Open a subscription on the client's connection.
 * @param[in] c the client (it connects if needed)
 * @param[in] opts target, start point, batch size
 * @param on_batch required; on_caught_up optional; ctx passed to both
 * @param[out] out the subscription, to be ended with es_sub_destroy()
 * @return ES_OK (the server confirmed it; nothing is delivered until
 *   es_sub_poll());
 *   ES_ERR_INVALID_ARGUMENT (bad target/name, or a start beyond the end);
 *   ES_ERR_INVALID_STREAM_ID; ES_ERR_TOO_MANY_REQUESTS (too many
 *   subscriptions on the connection); the connection errors of any call
 *   (ES_ERR_CONNECTION, ES_ERR_CIRCUIT_OPEN, ES_ERR_TIMEOUT, ES_ERR_CLOSED);
 *   ES_ERR_NO_MEMORY.
 */
ES_API es_err es_subscribe(es_client *c, const es_sub_options *opts, es_sub_batch_fn on_batch,
                           es_sub_caught_up_fn on_caught_up, void *ctx, es_subscription **out);

/**
 * @brief Wait up to timeout_ms for pushes and deliver them to the callbacks.
 *
 * Returns as soon as something was delivered (every push queued at that
 * moment is delivered), or when the time is up. Reconnecting and
 * resubscribing happen inside this call.
 * @param timeout_ms 0 = only what has arrived; -1 = until something arrives
 * @return ES_OK (delivered something or timed out quietly);
 *   ES_ERR_REFUSED (the callback asked to stop);
 *   ES_ERR_CLOSED / ES_ERR_TIMEOUT / ES_ERR_CONNECTION / ES_ERR_CIRCUIT_OPEN
 *     (the connection is gone and could not be remade this time — call
 *     again to retry, the position is kept);
 *   ES_ERR_MALFORMED (the server pushed something invalid: it was dropped,
 *     and the next poll resubscribes after the last delivered event);
 *   ES_ERR_NO_MEMORY (call again);
 *   ES_ERR_TOO_LARGE (a frame exceeded the client's max_frame_bytes and the
 *     connection was dropped: the next poll resubscribes with half the
 *     batch size; if one event alone is too large, the subscription is
 *     closed with this code);
 *   the server's reason (e.g. ES_ERR_CORRUPT) when it dropped the
 *   subscription (SubscriptionDropped; es_client_errmsg() says why), or the
 *   error that refused a resubscription for good (e.g.
 *   ES_ERR_INVALID_ARGUMENT, ES_ERR_INCOMPATIBLE_STORE): the subscription
 *   is then closed and every later poll returns the same code;
 *   ES_ERR_CLOSED without a message once the client was destroyed.
 */
ES_API es_err es_sub_poll(es_subscription *sub, int timeout_ms);

/**
 * @brief The last delivered point: a revision for ES_SUB_STREAM, a
 *        position otherwise. Before any delivery: the start point (`after`
 *        for ES_SUB_AFTER; for ES_SUB_FROM_END the head seen when
 *        subscribing, or the stream's last revision for ES_SUB_STREAM).
 * @param[out] has false when nothing was delivered and the start was
 *             ES_SUB_FROM_START (or ES_SUB_FROM_END on a stream that did
 *             not exist yet); may be NULL
 */
ES_API uint64_t es_sub_last(const es_subscription *sub, bool *has);

/** @brief True once the subscription has caught up at least once. */
ES_API bool es_sub_caught_up(const es_subscription *sub);

/**
 * @brief Unsubscribe (best effort, if connected; the reply is not waited
 *        for) and free; pushes still queued are discarded. Accepts NULL.
 */
ES_API void es_sub_destroy(es_subscription *sub);

/* ================================================================== uuid == */

/**
 * @brief A version 7 UUID: Unix time in ms, then 74 bits from the kernel's CSPRNG.
 * @return ES_OK; ES_ERR_IO when no randomness is available.
 */
ES_API es_err es_uuid_generate(uint8_t out[ES_UUID_BYTES]);

/** @brief Format as "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" plus a NUL. */
ES_API void es_uuid_format(const uint8_t id[ES_UUID_BYTES], char out[ES_UUID_STRLEN + 1]);

/**
 * @brief Parse the 36-character form (either case).
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT.
 */
ES_API es_err es_uuid_parse(const char *s, uint8_t out[ES_UUID_BYTES]);

#ifdef __cplusplus
}
#endif

#endif

/*
 * internal — the inside of an es_client, shared by the client's modules:
 *
 *   client.c  options, lifetime, last-error state, public getters
 *   call.c    the request engine: connect + Hello with backoff and the
 *             breaker, submit (id, limits, in-flight cap), wait, and the
 *             dispatch of every received frame to its request
 *   conn.c    the socket: connect with a timeout, poll()-driven sending and
 *             receiving, frame assembly with the cap checked on the header
 *   ops.c     appends, transactions, stream info/list, snapshots, stats, ping
 *   read.c    the paging iterators
 *   subscribe.c  subscriptions: push queues, delivery, resubscription
 *   group.c   consumer groups: management calls, members (join, next,
 *             ack, nack) with their push queues and rejoin
 *   uuid.c    UUID (version 7) generation, formatting and parsing
 *
 * Arrows mean "may call": ops/read/subscribe → call → conn → call's frame
 * dispatch (cl_on_frame, the one upward edge, made explicit here), which
 * hands pushes to subscribe.c (cl_sub_on_push: it only queues, never calls
 * back into the application or sends).
 *
 * Design notes: one connection, blocking calls with poll() deadlines, no
 * threads. A request is registered in the pending table (ptable) before it
 * is sent; every frame received, whichever call happens to be reading,
 * completes the entry with its id, so pipelined replies arriving in any
 * order reach their owners. Push frames (subscription events, caught-up,
 * dropped) carry the id of the Subscribe request and are queued on the
 * subscription opened by it (subscribe.c), whichever call read them; they
 * reach the application's callbacks only in es_sub_poll().
 */
#ifndef ES_CLIENT_INTERNAL_H
#define ES_CLIENT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es.pb-c.h"
#include "es/client.h"
#include "ptable.h"
#include "resil.h"

#define CL_ERRMSG_BYTES 512
/* A reply that is not a page (append result, error, info, stats...) is
 * small: anything larger is a protocol violation. */
#define CL_SMALL_REPLY_CAP (64u * 1024u)
/* Cap on the fields of one event inside a page (11 are defined); more is a
 * decoding bomb (protobuf-c allocates for every unknown field). */
#define CL_MAX_EVENT_FIELDS  64u
#define CL_DEFAULT_IN_FLIGHT 64u
#define CL_DEFAULT_PAGE      1000u
#define CL_RX_CHUNK          16384u
/* Bytes of pushes a subscription may hold undelivered (beyond one frame)
 * before it stops queueing and resubscribes later (subscribe.c). */
#define CL_SUB_QUEUE_BYTES (4u * 1024u * 1024u)

/** Receive state: the frame being assembled. */
typedef struct cl_rx {
    uint8_t hdr[4];
    uint32_t hdr_have;
    uint8_t *body; /* allocated only after the header passed the cap check */
    uint32_t body_len, body_have;
    uint32_t body_cap; /* bytes allocated at body (>= body_len: a reused buffer) */
    uint8_t chunk[CL_RX_CHUNK];
} cl_rx;

/** Hooks for tests: the breaker's clock and the backoff's sleep. */
typedef uint64_t (*cl_clock_fn)(void *ctx);
typedef void (*cl_sleep_fn)(void *ctx, uint64_t us);

struct ssl_st;
struct ssl_ctx_st;

struct es_client {
    /* One spare frame buffer (see cl_buf_get): a reply page of a megabyte
     * is not allocated, faulted in and handed back to the kernel each time. */
    uint8_t *spare;
    uint32_t spare_cap;
    /* options, with the strings copied */
    es_client_options opts;
    char *address, *client_name, *user;
    uint8_t *token;
    char *tls_ca_file, *tls_server_name;
    char host[256], port[16];

    /* connection */
    int fd;                     /* -1: none */
    struct ssl_st *ssl;         /* opts.tls: the session on fd */
    struct ssl_ctx_st *tls_ctx; /* opts.tls: made at the first connection */
    bool ready;                 /* Hello done */
    cl_rx rx;
    uint32_t send_cap, recv_cap, inflight_cap;
    es_server_info info;
    bool have_info;
    char notice[256]; /* the server's last connection-level error (id 0) */
    uint64_t epoch;   /* connections greeted so far: a subscription opened on
                         an older one is gone with it */

    /* requests */
    uint64_t next_id;
    ptable pending;
    uint32_t in_flight;   /* entries PENDING_WAITING */
    uint32_t uncollected; /* async append handles not collected/discarded */

    /* subscriptions opened on this client (subscribe.c) */
    es_subscription *subs;
    struct es_group_member *members; /* consumer-group members (group.c) */
    uint32_t sub_queue_cap;          /* CL_SUB_QUEUE_BYTES; tests lower it */

    /* resilience */
    breaker br;
    uint64_t rng;
    cl_clock_fn clock;
    cl_sleep_fn sleep;
    void *hook_ctx;

    /* counters (tests, diagnostics) */
    uint64_t connect_attempts;
    uint64_t replies_dropped;
    uint64_t pushes_dropped;

    /* the last failure */
    char errmsg[CL_ERRMSG_BYTES];
    es_conflict *conflicts;
    size_t n_conflicts;
};

/* ---- client.c -- */

/** @brief Record a failure (message only, conflicts cleared); @return rv. */
es_err cl_fail(es_client *c, es_err rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** @brief Forget the conflicts of the previous failure. */
void cl_clear_conflicts(es_client *c);
/** @brief Monotonic clock in microseconds (real, for I/O deadlines). */
uint64_t cl_mono_us(void);
/** @brief Replace the breaker's clock and the backoff's sleep (tests). */
void cl_set_hooks(es_client *c, cl_clock_fn clock, cl_sleep_fn sleep_fn, void *ctx);

/* ---- call.c -- */

/** @brief Connected and greeted, or reconnect (backoff, breaker). */
es_err cl_ensure(es_client *c);

/**
 * @brief Register and send a request (its id is assigned here).
 * @param max_items cap on the reply's repeated elements
 * @param reply_cap cap on the reply's body bytes
 * @param[out] id the request id
 * @return ES_OK; ES_ERR_TOO_LARGE (not sent); ES_ERR_CLOSED, ES_ERR_TIMEOUT
 *   (connection dropped); ES_ERR_NO_MEMORY. On error no entry remains.
 */
es_err cl_submit(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
                 uint64_t *id);

/**
 * @brief Wait for a request's reply and take it out of the table.
 * @param[out] resp the reply (free with cl_resp_free), never an Error: an
 *   Error reply is turned into its code, message and conflicts
 * @return ES_OK; the server's error code; ES_ERR_CLOSED, ES_ERR_TIMEOUT,
 *   ES_ERR_MALFORMED, ES_ERR_TOO_LARGE; ES_ERR_NOT_FOUND (unknown id).
 */
es_err cl_wait(es_client *c, uint64_t id, Es__V1__Response **resp);

/** @brief cl_ensure + cl_submit + cl_wait. */
es_err cl_call(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
               Es__V1__Response **resp);

/**
 * @brief cl_submit for a read whose ReadResult is to come back as its wire
 *        bytes (checked against the byte cap), collected with cl_wait_read
 *        and decoded lazily by the caller with cl_parse_event instead of
 *        being unpacked into a message per event (the caller counts the
 *        events against max_items).
 */
es_err cl_submit_read(es_client *c, Es__V1__Request *req, uint32_t max_items, uint32_t reply_cap,
                      uint64_t *id);

/** A read reply kept as bytes: the frame buffer and the ReadResult in it. */
typedef struct cl_page {
    uint8_t *buf; /* give back with cl_buf_put(c, buf, cap) */
    uint32_t cap;
    const uint8_t *data; /* the ReadResult's bytes, inside buf */
    uint32_t len;
} cl_page;

/**
 * @brief Wait for a read sent by cl_submit_read.
 * @return as cl_wait.
 */
es_err cl_wait_read(es_client *c, uint64_t id, cl_page *page);

/** @brief Nobody will collect this request: drop its reply (now or on arrival). */
void cl_abandon(es_client *c, uint64_t id);

void cl_resp_free(Es__V1__Response *resp);

/**
 * @brief A buffer of at least `need` bytes: the client's spare one when it
 *        is large enough, else a new one. *cap is its size.
 */
uint8_t *cl_buf_get(es_client *c, uint32_t need, uint32_t *cap);

/** @brief Give a buffer back: kept as the spare when larger than the spare. */
void cl_buf_put(es_client *c, uint8_t *buf, uint32_t cap);

/** @brief Free what a completed entry holds (unpacked reply or raw bytes). */
void cl_pending_release(es_client *c, pending *e);

/* ---- event.c -- */

/**
 * @brief Decode one RecordedEvent (fields as in es.proto; last one wins;
 *        unknown fields skipped). The stream, type and content type are
 *        copied NUL-terminated to *sp (advanced; room for the event's bytes
 *        plus three NULs is enough); data, metadata and the ids point into
 *        the message.
 * @return false when the event is invalid (an id of the wrong size, a
 *   missing or overlong name, a NUL in a name, a field of the wrong type).
 */
bool cl_parse_event(const uint8_t *p, size_t len, es_recorded_event *e, char **sp);

/**
 * @brief Handle one complete received frame (called by conn.c). The
 *        frame buffer (cap bytes) stays the caller's unless *taken is set
 *        (a read page kept as bytes by its request).
 * @return ES_OK; an error when the frame stream can no longer be trusted
 *   (the connection is then dropped with that reason).
 */
es_err cl_on_frame(es_client *c, uint8_t *body, uint32_t len, uint32_t cap, bool *taken);

/* ---- subscribe.c -- */

/**
 * @brief A push (EventsBatch, CaughtUp, SubscriptionDropped) arrived for
 *        request id: queue it on its subscription (bounded), or drop it
 *        when no subscription waits for it. Never calls the application,
 *        never sends: it runs inside whichever call is reading.
 * @param kind the Response kind (ES__V1__RESPONSE__KIND_EVENTS, ...)
 * @param data, len the bytes of the push message (the oneof field's value)
 */
void cl_sub_on_push(es_client *c, uint64_t id, uint32_t kind, const uint8_t *data, size_t len);

/** @brief The client is being destroyed: detach its subscriptions. */
void cl_subs_detach(es_client *c);

/* ---- group.c -- */

/** @brief A consumer-group push (GroupEvents, GroupLeft) for join id `id`:
 *  queued on its member, or dropped. Never calls the application. */
void cl_group_on_push(es_client *c, uint64_t id, uint32_t kind, const uint8_t *data, size_t len);
/** @brief The client is being destroyed: detach its members. */
void cl_groups_detach(es_client *c);

/* ---- conn.c -- */

/** @brief Free the TLS context (es_client_destroy). */
void conn_tls_free(es_client *c);

/** @brief Resolve and connect (no Hello) before a deadline; sets c->fd
 *  (and, with opts.tls, c->ssl after the TLS handshake). */
es_err conn_open(es_client *c, uint64_t deadline_us);

/**
 * @brief Close the connection: every request in flight completes with
 *        reason; abandoned entries are freed.
 */
void conn_drop(es_client *c, es_err reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * @brief Send bytes, reading (and dispatching) replies meanwhile so that
 *        neither side blocks the other.
 * @return ES_OK; ES_ERR_TIMEOUT or ES_ERR_CLOSED (the connection was dropped).
 */
es_err conn_send(es_client *c, const uint8_t *buf, size_t len, uint64_t deadline_us);

/**
 * @brief Wait up to a deadline for input and process what arrived.
 * @return ES_OK (something may have completed: look again);
 *   ES_ERR_TIMEOUT (deadline passed, connection kept); the reason the
 *   connection was dropped.
 */
es_err conn_pump(es_client *c, uint64_t deadline_us);

#endif

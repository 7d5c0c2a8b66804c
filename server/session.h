/*
 * session — one connection's protocol state, shared by the handler (which
 * owns it) and the subscription registry. The network layer embeds a
 * session in each connection and supplies the two I/O callbacks.
 */
#ifndef ES_SESSION_H
#define ES_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "server.h"

/** Appends bytes to the connection's output; callers write whole frames. */
typedef void (*session_send_fn)(void *io, const void *data, size_t len);
/**
 * Appends len bytes of a malloc'd block to the connection's output and
 * takes ownership of it (freed once sent). @return false when it did not
 * (the caller still owns data and sends a copy).
 */
typedef bool (*session_send_owned_fn)(void *io, void *data, size_t len);
/** Bytes queued in the connection's output and not yet sent. */
typedef size_t (*session_outlen_fn)(void *io);

struct reply_shared;
/**
 * Appends a shared payload's bytes to the connection's output by reference
 * (no copy) and takes one reference to it (reply_shared_release once sent).
 * @return false when it did not (no reference taken; the caller sends a copy).
 */
typedef bool (*session_send_shared_fn)(void *io, struct reply_shared *sh);
/**
 * Bytes the connection may still produce under the server's memory budget:
 * SIZE_MAX while the server is below it; at it, what is left of the
 * connection's share, or 0 when none is left (the connection is then
 * paused: session.paused_output, resumed by the network layer).
 */
typedef size_t (*session_room_fn)(void *io);

struct sub;

typedef struct session {
    server_ctx *srv;
    uint64_t conn_id;
    void *io;
    session_send_fn send;
    session_outlen_fn outlen;
    session_send_owned_fn send_owned; /* NULL: every reply is copied by send */
    bool hello_done;                  /* a hello succeeded: requests are served */
    bool auth_failed;                 /* a hello was refused: requests get UNAUTHENTICATED */
    auth_role role;                   /* what this connection may do (after the hello) */
    char user[AUTH_NAME_MAX + 1];     /* the authenticated user ("" without auth) */
    char peer_addr[48];               /* the peer's address without port ("" in tests) */
    uint32_t denials;                 /* requests refused for the role (log throttling) */
    /* the request being handled (handler_on_frame), for its latency */
    uint64_t req_t0_us;
    uint64_t req_id;
    int req_kind;
    bool req_deferred;       /* queued for the writer: timed when it completes */
    bool dead;               /* the transport is gone: replies are dropped */
    uint32_t in_flight;      /* requests queued for the writer */
    uint64_t *in_flight_ids; /* max_in_flight entries */
    uint64_t pending_bytes;  /* frame bytes held by queued requests */
    bool paused_output;      /* the memory budget paused this connection's output */
    struct sub *subs;        /* this connection's subscriptions */
    uint32_t n_subs;
    struct member *gmembers; /* this connection's consumer-group memberships (groups.c) */
    /* NULL: shared payloads (reply_shared) are copied by send */
    session_send_shared_fn send_shared;
    /* NULL: no memory budget (pages and batches are cut only by their caps) */
    session_room_fn room;
} session;

#endif

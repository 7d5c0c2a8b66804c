/*
 * handler — one connection's protocol state, request decoding, validation
 * and dispatch, with no I/O of its own.
 *
 * Design notes: the network layer hands over whole frame bodies and a
 * `send` function; the handler decodes (protobuf-c, under an allocation
 * budget so a small frame cannot explode into a huge message), checks the
 * session rules (hello first, request ids unique while in flight, in-flight
 * cap), authenticates the hello (auth.h) and checks every later request
 * against the connection's role (the matrix is at required_role in
 * handler.c), validates every field the decoder does not (UTF-8 names, id sizes,
 * enum values, counts), answers reads directly from the store, and queues
 * appends, transactions and snapshot saves for the writer. Replies to
 * queued requests are built when the writer's completion comes back on the
 * loop thread (handler_complete), and only if the session is still alive.
 *
 * Authentication: before a hello has succeeded nothing else is served —
 * every other request, of any kind, known or not, pipelined behind the
 * hello or not, gets HANDSHAKE_REQUIRED, or UNAUTHENTICATED once a hello
 * was refused. A refused hello may be retried on the same connection until
 * the peer address, its IPv6 /64 or all addresses together have used up
 * their failure budget (auth_limiter.h); then handler_on_frame returns
 * ES_ERR_CLOSED. A hello whose user name holds a NUL or a control
 * character (checked on the wire bytes: a C string would stop at the NUL)
 * gets INVALID_ARGUMENT before any check. Failures are logged with the
 * connection, the peer address and the (sanitised) user name, never with
 * the token.
 *
 * Request ids: id 0 is reserved for errors that answer no request, so a
 * request carrying it (a hello included) is refused under id 0, and a
 * request reusing an id in flight (or an open subscription's) is refused
 * under id 0 too: the request holding the id keeps the only reply with it.
 * docs/protocol.md is the specification these rules are part of.
 *
 * Read replies are assembled from stored record bytes (the store keeps the
 * wire encoding of es.v1.RecordedEvent) without decoding them, and each
 * page is cut to fit the frame cap.
 */
#ifndef ES_HANDLER_H
#define ES_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"
#include "session.h"
#include "writer.h"

/**
 * @brief Initialise a session (caller memory).
 * @return ES_OK; ES_ERR_NO_MEMORY.
 */
es_err session_init(session *s, server_ctx *srv, uint64_t conn_id, void *io, session_send_fn send,
                    session_outlen_fn outlen);

/** @brief Drop the session's subscriptions and release what session_init
 *  allocated. No request may be in flight. */
void session_finish(session *s);

/**
 * @brief Handle one frame body.
 * @return ES_OK to go on reading; ES_ERR_CLOSED when the connection should
 *   be closed after its output is flushed (an error reply has been queued).
 */
es_err handler_on_frame(session *s, const uint8_t *body, size_t len);

/**
 * @brief Finish a job the writer completed: reply (unless the session is
 *        dead), update counters, free the job.
 * @return the job's session, so the caller can free a dead one whose last
 *   request just came back (session->in_flight == 0).
 */
session *handler_complete(write_job *job);

/** @brief "append", "read_stream", ... for an Es__V1__Request__KindCase
 *  ("unknown" otherwise). Static storage. */
const char *handler_kind_name(int kind);

#endif

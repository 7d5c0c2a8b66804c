/**
 * @file es/err.h
 * @brief The one error enum of esd: wire, server and client library.
 *
 * The numbers are stable and equal to es.v1.ErrorCode on the wire
 * (proto/es/v1/es.proto); tests/unit/test_err.c keeps the two tables equal.
 * Every function of the project that can fail returns an es_err; results
 * travel through out-parameters.
 */
#ifndef ES_ERR_H
#define ES_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, number, message). NAME matches ERROR_CODE_<NAME> in es.proto. */
#define ES_ERR_TABLE(X)                                                                            \
    X(OK, 0, "success")                                                                            \
    X(INTERNAL, 1, "internal error")                                                               \
    X(INVALID_ARGUMENT, 2, "invalid argument")                                                     \
    X(INVALID_STREAM_ID, 3, "invalid stream id")                                                   \
    X(INVALID_EVENT_TYPE, 4, "invalid event type")                                                 \
    X(INVALID_EVENT_ID, 5, "invalid event id")                                                     \
    X(RESERVED_STREAM, 6, "stream ids starting with '$' are reserved")                             \
    X(TOO_LARGE, 7, "too large")                                                                   \
    X(TOO_MANY_EVENTS, 8, "too many events")                                                       \
    X(WRONG_EXPECTED_REVISION, 9, "wrong expected revision")                                       \
    X(IDEMPOTENCY_CONFLICT, 10,                                                                    \
      "event ids already stored elsewhere, partly or with other content")                          \
    X(NOT_FOUND, 11, "not found")                                                                  \
    X(STORE_FULL, 12, "store full")                                                                \
    X(CORRUPT, 13, "corrupt data")                                                                 \
    X(IO, 14, "input/output error")                                                                \
    X(NO_MEMORY, 15, "out of memory")                                                              \
    X(INCOMPATIBLE_STORE, 16, "incompatible or foreign data directory")                            \
    X(MALFORMED, 17, "malformed message")                                                          \
    X(UNKNOWN_REQUEST, 18, "unknown request kind")                                                 \
    X(UNSUPPORTED_VERSION, 19, "unsupported protocol version")                                     \
    X(HANDSHAKE_REQUIRED, 20, "hello required first")                                              \
    X(UNAUTHENTICATED, 21, "authentication failed")                                                \
    X(PERMISSION_DENIED, 22, "permission denied")                                                  \
    X(TOO_MANY_REQUESTS, 23, "too many requests in flight")                                        \
    X(DUPLICATE_REQUEST_ID, 24, "request id already in flight")                                    \
    X(SUBSCRIPTION_NOT_FOUND, 25, "no such subscription")                                          \
    X(TIMEOUT, 26, "timed out")                                                                    \
    X(CONNECTION, 27, "cannot connect")                                                            \
    X(CLOSED, 28, "connection closed")                                                             \
    X(SHUTTING_DOWN, 29, "server shutting down")                                                   \
    X(READ_ONLY, 30, "store is read-only")                                                         \
    X(CIRCUIT_OPEN, 31, "circuit breaker open")                                                    \
    X(REFUSED, 32, "command refused")                                                              \
    X(BUSY, 33, "busy")                                                                            \
    X(FOLLOWER, 34, "read-only follower: write to the primary")                                    \
    X(SLOW_CONSUMER, 35, "subscriber too slow: dropped to keep the server within its memory")      \
    X(STREAM_DELETED, 36, "stream deleted (tombstoned)")                                           \
    X(ERASED, 40, "erased: the data key of the stream or subject was destroyed")                   \
    X(NOT_ERASABLE, 41,                                                                            \
      "stored in plain (encryption was off when it was created): cannot be erased")                \
    X(GROUP_NOT_FOUND, 42, "no such consumer group")                                               \
    X(GROUP_EXISTS, 43, "consumer group already exists")                                           \
    X(NOT_IN_FLIGHT, 44, "position not in flight with this member")                                \
    X(ALREADY_JOINED, 45, "already a member of this group on this connection")

typedef enum es_err {
#define ES_ERR_ENUM_(name, num, msg) ES_ERR_##name = num,
    ES_ERR_TABLE(ES_ERR_ENUM_)
#undef ES_ERR_ENUM_
} es_err;

/** ES_OK is the spelling used in code; it equals ES_ERR_OK. */
#define ES_OK ES_ERR_OK

/**
 * @brief A human message for an error code.
 * @return a static string; never NULL ("unknown error" for numbers outside
 *         the table).
 */
const char *es_strerror(es_err err);

/**
 * @brief The symbolic name of an error code ("WRONG_EXPECTED_REVISION").
 * @return a static string; never NULL ("UNKNOWN" outside the table).
 */
const char *es_errname(es_err err);

#ifdef __cplusplus
}
#endif

#endif

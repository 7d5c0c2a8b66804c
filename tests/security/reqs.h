/*
 * reqs — one valid request of every kind (the auth tests walk them all):
 * what the security tests send before the hello, after a refused hello and
 * with each role.
 */
#ifndef ES_TEST_SECURITY_REQS_H
#define ES_TEST_SECURITY_REQS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es.pb-c.h"

/** Storage for one request and everything it points to. */
typedef struct sec_req {
    Es__V1__Request req;
    Es__V1__Append app;
    Es__V1__Append *apps[1];
    Es__V1__Transaction txn;
    Es__V1__ProposedEvent ev;
    Es__V1__ProposedEvent *evs[1];
    Es__V1__ReadStream rs;
    Es__V1__ReadAll ra;
    Es__V1__Subscribe sub;
    Es__V1__Unsubscribe unsub;
    Es__V1__StreamInfoRequest info;
    Es__V1__ListStreams list;
    Es__V1__SaveSnapshot save;
    Es__V1__LoadSnapshot load;
    Es__V1__StatsRequest stats;
    Es__V1__Ping ping;
    Es__V1__Hello hello;
    Es__V1__DeleteStream del;
    Es__V1__TombstoneStream tomb;
    Es__V1__SetStreamMetadata setmeta;
    Es__V1__GetStreamMetadata getmeta;
    Es__V1__EraseStream erase;
    Es__V1__EraseSubject erase_subject;
} sec_req;

/** Every request kind but the hello, in wire order. */
extern const Es__V1__Request__KindCase sec_kinds[];
extern const size_t sec_n_kinds;

/** @brief True for the kinds that write (append, transaction, save_snapshot,
 *         delete_stream, set_stream_metadata, tombstone_stream). */
bool sec_kind_writes(Es__V1__Request__KindCase k);

/** @brief True for the kinds only the admin role may send (tombstone_stream,
 *         erase_stream, erase_subject). */
bool sec_kind_admin(Es__V1__Request__KindCase k);

/**
 * @brief Build a valid request of the kind on stream "sec-1".
 * @return &r->req
 */
Es__V1__Request *sec_request(sec_req *r, Es__V1__Request__KindCase kind, uint64_t id);

/** @brief A hello with the user (may be NULL) and token (may be NULL). */
Es__V1__Request *sec_hello(sec_req *r, uint64_t id, const char *user, const char *token);

/**
 * @brief The frame (4-byte length + body) of a request, appended to buf.
 * @return the new length, or 0 when it does not fit in cap.
 */
size_t sec_frame(const Es__V1__Request *req, uint8_t *buf, size_t len, size_t cap);

#endif

/*
 * reply — building and sending responses, and the allocation hooks of the
 * request path.
 *
 * Design notes: replies are whole frames handed to session->send. Small
 * replies are packed with protobuf-c; pages of events are assembled from
 * stored record bytes (the wire encoding of es.v1.RecordedEvent) with the
 * pbwire primitives, never decoded and re-encoded, and cut to fit one frame.
 * A page sent to many sessions (one subscription batch for every
 * subscription at the same position) is a reply_shared: encoded once,
 * reference counted, with only each session's frame head written for it;
 * a view (reply_shared_view) sends its tail to a session that already had
 * its first records.
 * At the server's memory budget a page is also cut to what the session
 * may still hold (reply_session_budget).
 *
 * Every allocation on the request path (protobuf-c decoding included) goes
 * through reply_malloc/reply_calloc or reply_pb_allocator, so the
 * allocation-failure tests (test_handler.c) can fail the Nth one. Decoding
 * runs under a budget: a frame within the cap can still declare millions
 * of empty repeated elements, each costing a pointer and a struct; above
 * the budget the decode fails with TOO_LARGE instead of growing.
 */
#ifndef ES_REPLY_H
#define ES_REPLY_H

/* Pages at least this large go to the connection without a copy. */
#define REPLY_OWNED_MIN (64u * 1024u)

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es.pb-c.h"
#include "session.h"
#include "store.h"

/** The allocator for every unpack and its free_unpacked. */
extern ProtobufCAllocator reply_pb_allocator;

void *reply_malloc(size_t n);
void *reply_calloc(size_t n, size_t size);

/** @brief Fail the Nth allocation from now on the calling thread (0 = never). */
void reply_fail_alloc_after(uint64_t n);

/** @brief How many allocations were failed by injection on this thread, ever. */
uint64_t reply_injected_failures(void);

/** @brief True when an allocation failed (injected or real) since the last
 *  call; clears the flag. */
bool reply_alloc_failed_take(void);

/** @brief Start a decode budget of `bytes` on this thread. */
void reply_budget_begin(size_t bytes);
/** @brief End it; @return true when an allocation was refused for the budget. */
bool reply_budget_end(void);

typedef struct bytebuf {
    uint8_t *p;
    size_t len, cap;
} bytebuf;

/** @return false when out of memory (the buffer is unchanged). */
bool bb_reserve(bytebuf *b, size_t extra);
void bb_free(bytebuf *b);

/** @brief Pack and send a Response frame (dropped if the session is dead). */
void reply_send(session *s, Es__V1__Response *r);

/**
 * @brief Send Response{id, <field>: inner} where inner is already encoded.
 * @note A large inner buffer may be handed over to the connection without a
 *   copy (session.send_owned): inner is then left empty. Callers bb_free it
 *   either way.
 */
void reply_send_wrapped(session *s, uint64_t id, uint32_t field, bytebuf *inner);

/**
 * A payload encoded once and sent to many connections (the same batch of
 * events to every subscription of one target at one cursor): reference
 * counted, each connection that sends it by reference holds one. Loop
 * thread only (no atomics: every evbuffer is freed there).
 */
typedef struct reply_shared {
    uint32_t refs;
    size_t len;
    uint8_t *p; /* len bytes, malloc'd; freed with the last reference */
    /* A view (reply_shared_view): p points into parent's bytes, which it
     * holds a reference to instead of owning any. NULL otherwise. */
    struct reply_shared *parent;
} reply_shared;

/* Shared payloads shorter than this are copied into each connection's
 * output (a reference costs a chain of its own, ~80 bytes, and a callback). */
#define REPLY_SHARED_REF_MIN 1024u

/**
 * @brief Wrap inner's bytes (taken over: inner is left empty) in a shared
 *        payload holding one reference, the caller's.
 * @return the payload; NULL when out of memory (inner unchanged).
 */
reply_shared *reply_shared_create(bytebuf *inner);
/**
 * @brief A payload made of parent's bytes from offset `off` on (a batch
 *        whose first records another subscription has already had): no
 *        copy; the view holds one reference to parent until its last
 *        reference is dropped. off < parent->len.
 * @return the view holding one reference, the caller's; NULL when out of
 *         memory.
 */
reply_shared *reply_shared_view(reply_shared *parent, size_t off);
/** @brief Drop one reference; the last frees the payload. NULL is ignored. */
void reply_shared_release(reply_shared *sh);

/**
 * @brief Send Response{id, <field>: sh's bytes}: the small head (frame
 *        length, id, field header) is written for this session, the bytes
 *        themselves go by reference when the session can take them
 *        (session.send_shared, REPLY_SHARED_REF_MIN bytes at least), else
 *        by copy. The caller keeps its own reference.
 */
void reply_send_shared(session *s, uint64_t id, uint32_t field, reply_shared *sh);

/** @brief Send an Error response; message NULL = es_strerror(code). */
void reply_send_error(session *s, uint64_t id, es_err code, const char *message);

/** Accumulates stored records as `repeated RecordedEvent events = 1`. */
typedef struct page_ctx {
    bytebuf buf;
    size_t budget; /* bytes; a page stops before the record that would pass it */
    bool oom;
} page_ctx;

/** A store_visit_fn for page_ctx. */
int page_visit(void *ctx, const store_record *rec);

/* A read page is produced in one go on the loop thread: at most this many
 * bytes of records (one record always fits, up to the frame cap), so that
 * one page costs a bounded slice of a loop turn and of the memory budget. */
#define REPLY_PAGE_BYTES (1024u * 1024u)

/** @brief The byte budget of one page: REPLY_PAGE_BYTES, within the frame cap. */
size_t reply_page_budget(const server_config *cfg);

/**
 * @brief The byte budget of one page or batch for this session: want, cut
 *        to what the server's memory budget leaves it (session.room), so
 *        that at the budget a connection overshoots its share by one record
 *        at most, not by a whole page (a page always takes its first
 *        record). @return at least 1.
 */
size_t reply_session_budget(const session *s, size_t want);

#endif

/*
 * subs — catch-up subscriptions: history first, then a caught-up marker,
 * then live events, all read from the log.
 *
 * Design notes
 * ------------
 * A subscription is a cursor (a position, or a revision for a one-stream
 * subscription) plus a target (one stream, a category, an event type, a
 * stream prefix, or the whole log). There is no in-memory copy of new
 * events and no separate live path: after every commit the registry reads
 * the new records' stream ids and types once, and *marks* dirty only the
 * subscriptions whose target one of them matches, through an index by
 * target (subs.c draws it), so a commit costs O(events + matching
 * subscriptions) and an idle subscription that matches nothing costs
 * nothing (Redis's blocked.c habit: writes mark, readers are served once
 * per loop turn). A delivery pass reads each dirty
 * subscription's next batch from LMDB — in a fresh, short read transaction
 * — and pushes it, if and only if its connection's unsent output is below
 * the low-water mark (half of max_output_bytes). Catch-up and live are the
 * same code, so the switch between them can have neither a gap nor a
 * duplicate; a slow subscriber costs at most one batch of memory beyond
 * that mark and simply falls behind. One batch read per subscription per
 * pass, of at most SUBS_BATCH_BYTES, keeps one busy subscriber from
 * starving the others and the loop. Subscriptions of one target share
 * the batches a pass read: one at the same cursor gets the whole batch,
 * one whose cursor falls inside it the batch from there on, encoded once
 * and sent to each by reference with only its own frame head written for
 * it; a subscription behind the others reads only up to where their
 * batches begin and then takes those (subs.c, "Shared batches"). So a
 * thousand caught-up subscribers to the whole log cost one read per
 * commit, not a thousand, and scattered ones behind it one read of each
 * stretch of the log per pass. A session whose output is paused by the
 * server's memory budget (session.paused_output) gets nothing until it
 * is resumed; subs_drop_slow drops its subscriptions with SLOW_CONSUMER.
 *
 * The caught-up marker is sent once, the first time a read reaches the head
 * of the log as it was in that read's transaction.
 *
 * Pushes are Responses carrying the id of the Subscribe request: events
 * (EventsBatch), caught_up (CaughtUp), dropped (SubscriptionDropped, after
 * which the subscription is gone).
 */
#ifndef ES_SUBS_H
#define ES_SUBS_H

#include <stdbool.h>
#include <stdint.h>

#include "es.pb-c.h"
#include "session.h"

#define SUBS_MAX_PER_SESSION 64u
#define SUBS_DEFAULT_BATCH   256u
/* Subscriptions that read the store per delivery pass (one pass per loop
 * turn); those served from a batch the pass already read are counted
 * apart (subs.c). */
#define SUBS_PER_PASS 64u
/* Bytes of one pushed batch at most (a slice of loop time, not a frame). */
#define SUBS_BATCH_BYTES (1024u * 1024u)

typedef struct subs subs;

/** @return ES_OK; ES_ERR_NO_MEMORY. */
es_err subs_create(server_ctx *srv, subs **out);
/** @brief Free the registry; every session must have dropped its subscriptions. */
void subs_destroy(subs *r);

/** @brief Open a subscription (replies SubscribeOk or an Error itself). */
void subs_subscribe(session *s, uint64_t id, const Es__V1__Subscribe *req);
/** @brief Close one (replies UnsubscribeOk or SUBSCRIPTION_NOT_FOUND). */
void subs_unsubscribe(session *s, uint64_t id, uint64_t sub_id);
/** @brief True when the session has a subscription opened with this id. */
bool subs_has(const session *s, uint64_t id);
/** @brief Drop every subscription of a session (connection closing). */
void subs_drop_session(session *s);
/**
 * @brief Drop every subscription of a session, each with a
 *        SubscriptionDropped push carrying reason and message (e.g.
 *        ES_ERR_SLOW_CONSUMER).
 */
void subs_drop_all(session *s, es_err reason, const char *message);

/**
 * @brief New events were committed: mark dirty the subscriptions that the
 *        records after the last call match (every subscription when more
 *        than a few thousand records arrived at once).
 */
void subs_on_commit(subs *r);
/** @brief The session's output drained below the low-water mark. */
void subs_on_writable(session *s);

/** How far subscriptions are behind the head (metrics). */
typedef struct subs_lag_stats {
    uint64_t max;    /* positions, over subscriptions to the log */
    uint64_t sum;    /* positions, over subscriptions to the log */
    uint64_t behind; /* subscriptions (of any kind) not caught up to the head */
} subs_lag_stats;

/**
 * @brief Lag of the open subscriptions against head. A subscription to the
 *        log (all, category, type, prefix) is `head - cursor + 1` positions
 *        behind (an upper bound: positions its filter skips count too); a
 *        subscription to one stream counts in `behind` only, when it has
 *        not sent its caught-up marker yet.
 */
void subs_lag(const subs *r, uint64_t head, subs_lag_stats *out);

/**
 * @brief One delivery pass: at most one batch read per dirty subscription
 *        whose connection has room (and a few more that the pass read for
 *        others), for SUBS_PER_PASS store reads at most (and a bounded
 *        number of shared batches and bytes, subs.c).
 * @return true when work remains for another pass.
 */
bool subs_deliver(subs *r);

/**
 * @brief Batches delivered, ever: read from the store for a subscription
 *        (from_store), or sent from one a pass had already read for
 *        another subscription of the same target (shared: the whole batch,
 *        or its part from the subscription's cursor on).
 */
void subs_batch_stats(const subs *r, uint64_t *from_store, uint64_t *shared);

#endif

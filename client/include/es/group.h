/**
 * @file es/group.h
 * @brief Consumer groups in libesclient: manage groups, and consume one as
 *        a member (join, next batch, ack, nack) with reconnection.
 *
 * A consumer group is a server-side cursor over a target of the log that
 * several members share: each event goes to one member at a time, at most
 * one event of a stream is in flight at a time (per-stream order), an event
 * not acknowledged in time or whose member left is delivered again, and
 * after max_retries it is parked. docs/groups.md has the semantics.
 *
 * Threads: as es/client.h: one thread per es_client.
 */
#ifndef ES_GROUP_H
#define ES_GROUP_H

#include "es/client.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What a group reads (the subscription targets). */
typedef enum es_group_target {
    ES_GROUP_ALL = 0,
    ES_GROUP_STREAM = 1,
    ES_GROUP_CATEGORY = 2,
    ES_GROUP_TYPE = 3,
    ES_GROUP_PREFIX = 4,
} es_group_target;

/** Where a new group starts. */
typedef enum es_group_start {
    ES_GROUP_FROM_START = 0, /**< from the first event */
    ES_GROUP_FROM_END = 1,   /**< only events appended after the creation */
    ES_GROUP_AFTER = 2,      /**< events strictly after a position */
} es_group_start;

/** A group's settings. es_group_settings_init gives the defaults. */
typedef struct es_group_settings {
    uint32_t ack_timeout_ms; /**< 100..3,600,000 (default 30,000) */
    uint32_t max_retries;    /**< deliveries after the first before parking (default 10) */
    uint32_t max_in_flight;  /**< per member, 1..10,000 (default 1,000) */
    bool park_blocks;        /**< a parked event holds its stream until replayed */
} es_group_settings;

ES_API void es_group_settings_init(es_group_settings *s);

/**
 * @brief Create a group (admin role).
 * @param target_name the stream, category, type or prefix (NULL for ES_GROUP_ALL)
 * @param after the position for ES_GROUP_AFTER
 * @param settings NULL: the defaults
 * @return ES_OK; ES_ERR_GROUP_EXISTS; ES_ERR_INVALID_ARGUMENT (a bad name,
 *   target or setting, a start beyond the head); ES_ERR_PERMISSION_DENIED;
 *   ES_ERR_FOLLOWER; the errors of any call.
 */
ES_API es_err es_group_create(es_client *c, const char *name, es_group_target target,
                              const char *target_name, es_group_start start, uint64_t after,
                              const es_group_settings *settings);

/** @brief Replace a group's settings (admin). @return ES_OK; ES_ERR_GROUP_NOT_FOUND; ... */
ES_API es_err es_group_update(es_client *c, const char *name, const es_group_settings *settings);

/** @brief Delete a group, its checkpoint and parked events (admin); its
 *  members get ES_ERR_GROUP_NOT_FOUND. @return ES_OK; ES_ERR_GROUP_NOT_FOUND; ... */
ES_API es_err es_group_delete(es_client *c, const char *name);

/** A group's state. */
typedef struct es_group_info {
    char name[256 + 1];
    es_group_target target;
    char target_name[256 + 1];
    es_group_settings settings;
    uint64_t checkpoint; /**< every matching event at or below it is done */
    uint32_t members;
    uint32_t in_flight;
    uint64_t parked;
    uint64_t acked;   /**< since the server started */
    uint64_t retries; /**< since the server started */
    uint64_t lag;     /**< head_position - checkpoint */
    uint64_t head_position;
} es_group_info;

/** @return ES_OK; ES_ERR_GROUP_NOT_FOUND; ... */
ES_API es_err es_group_info_get(es_client *c, const char *name, es_group_info *out);

/**
 * @brief Every group. *out is malloc'd (free() it), *n entries.
 * @return ES_OK; ES_ERR_NO_MEMORY; ...
 */
ES_API es_err es_group_list(es_client *c, es_group_info **out, size_t *n);

/** A parked event. */
typedef struct es_group_parked {
    uint64_t position;
    char stream[256 + 1];
    uint32_t attempts;
    char reason[257];
    uint64_t parked_at_us;
} es_group_parked;

/**
 * @brief A page of parked events with positions after `after` (limit 0:
 *        100; at most 1,000). *out malloc'd (free() it).
 * @return ES_OK; ES_ERR_GROUP_NOT_FOUND; ...
 */
ES_API es_err es_group_parked_list(es_client *c, const char *name, uint64_t after, uint32_t limit,
                                   es_group_parked **out, size_t *n, bool *more);

/** @brief Deliver the parked events again (admin); *count (may be NULL) says how many. */
ES_API es_err es_group_replay_parked(es_client *c, const char *name, uint32_t *count);

/** What a nack asks for. */
typedef enum es_nack_action {
    ES_NACK_RETRY = 0, /**< deliver again (counts against max_retries) */
    ES_NACK_PARK = 1,  /**< park now */
    ES_NACK_SKIP = 2,  /**< done, without processing */
} es_nack_action;

typedef struct es_group_member es_group_member;

/**
 * @brief Join a group as a member (read role or above).
 * @param max_in_flight 0: the group's; at most the group's
 * @param consumer a label shown in logs (may be NULL)
 * @return ES_OK; ES_ERR_GROUP_NOT_FOUND; ES_ERR_ALREADY_JOINED (this
 *   client is a member of it already); ...
 * @note The membership belongs to the connection. When the connection
 *   drops, the server gives the member's events in flight to others (or
 *   to this member again); es_group_next reconnects and joins again, and
 *   acks for events received before are refused with ES_ERR_NOT_IN_FLIGHT.
 */
ES_API es_err es_group_join(es_client *c, const char *name, uint32_t max_in_flight,
                            const char *consumer, es_group_member **out);

/**
 * @brief Wait up to timeout_ms (-1: forever) for the next batch of events.
 * @param[out] events the batch (at most one event of any stream), valid
 *   until the next es_group_next or es_group_leave of this member
 * @param[out] n events in it (0 on a timeout)
 * @return ES_OK (n may be 0); ES_ERR_GROUP_NOT_FOUND (the group was
 *   deleted); the connection errors after a failed rejoin.
 * @note A queued batch whose events the server took back meanwhile (their
 *   ack timeout passed while the application was busy) is not handed out:
 *   the server's GroupRevoked push drops them here first (es_group_revoked).
 */
ES_API es_err es_group_next(es_group_member *m, int timeout_ms, es_recorded_event **events,
                            size_t *n);

/**
 * @brief Acknowledge events by position, all or none: answered after the
 *        server stored it (an acknowledged event is not delivered again,
 *        kill -9 of the server included).
 * @return ES_OK; ES_ERR_NOT_IN_FLIGHT (a position is not in flight with
 *   this member: nothing was acknowledged); ES_ERR_INVALID_ARGUMENT; ...
 */
ES_API es_err es_group_ack(es_group_member *m, const uint64_t *positions, size_t n);

/** @brief Nack events (all or none). @return as es_group_ack. */
ES_API es_err es_group_nack(es_group_member *m, const uint64_t *positions, size_t n,
                            es_nack_action action, const char *reason);

/**
 * @brief What the server took back from this member before the library
 *        handed it out: GroupRevoked pushes received, and the queued events
 *        they dropped (an ack timeout that passed while the application
 *        was busy with an earlier batch). Counted since es_group_join.
 *        Either pointer may be NULL.
 */
ES_API void es_group_revoked(const es_group_member *m, uint64_t *pushes, uint64_t *dropped);

/** @brief Leave the group (best effort) and free the member. Accepts NULL. */
ES_API void es_group_leave(es_group_member *m);

#ifdef __cplusplus
}
#endif

#endif

/*
 * groups — consumer groups: competing consumers over one target of the
 * log, with per-stream order, acknowledgements, retries and parking.
 *
 * Design notes
 * ------------
 * Everything here runs on the loop thread. A group reads its target (the
 * whole log, a stream, a category, an event type or a stream prefix) from
 * the log like a subscription does (store_read_all, in bounded batches,
 * woken by the same commit notification as subs.c), into a *window*: the
 * matching events above the checkpoint that are not done yet, in position
 * order, at most GROUPS_WINDOW_EVENTS of them and GROUPS_WINDOW_BYTES of
 * record bytes (the window then stops reading: memory is bounded whatever
 * the consumers do).
 *
 * Per-stream order: each stream of the window has a queue of its pending
 * events and at most ONE event in flight. A stream with nothing in flight
 * (and not held by a parked event, see below) is *ready*; a delivery pass
 * hands ready streams' first events to the members with free in-flight
 * slots, round-robin, in batches (GroupEvents pushes). So no later event of
 * a stream is handed to anyone while an earlier one is in flight, and the
 * streams spread dynamically over whichever members have room: no fixed
 * assignment, hence nothing to rebalance when members join or leave.
 *
 * An ack, skip or park *settles* the event: its member's slot is free at
 * once, but its stream stays held until the job that stores the change
 * committed; only then does the stream's next event go out. Otherwise a
 * kill -9 between the two could deliver revision r + 1 and, after the
 * restart, r again (its ack lost with the crash): order across crashes.
 *
 * An event in flight ends in one of these ways:
 *   ack            done;
 *   nack skip      done (recorded like an ack);
 *   nack park      parked now;
 *   nack retry, the ack timeout, or its member leaving (disconnect):
 *                  back to the FRONT of its stream's queue, so it is
 *                  delivered again before any later event of its stream;
 *                  once it has been delivered more than 1 + max_retries
 *                  times it is parked instead, with the reason.
 * When the ack timeout (groups_tick) or an Unsubscribe takes events back
 * from a member whose connection stays, the member is told: one
 * GroupRevoked push per member per sweep with the positions, queued on its
 * connection before the events can be pushed to anyone else. A nack retry
 * of an event whose ack timeout passed at this member before revokes it
 * too: the member may have nacked the copy it handed out then, while the
 * redelivery to it, which the nack settles, waits in its library. The client
 * library drops them from the batches it has not handed out yet, so a slow
 * member never starts an event that another member may have acknowledged
 * meanwhile (events handed out stay with the application; their ack is
 * then NOT_IN_FLIGHT). A disconnected member needs no push; a deleted
 * group's members get GroupLeft instead.
 *
 * A parked event is done for the checkpoint. With park_blocks off (the
 * default) its stream's later events flow; with park_blocks on, the stream
 * waits until the event is replayed (ReplayParked) and acked.
 *
 * The checkpoint is the position below which every matching event is done
 * (acked, skipped or parked). Acks, parks and checkpoint moves are gathered
 * and written by ONE writer job at a time (store_group_apply, one write
 * transaction for all groups): whatever arrives while a job runs goes into
 * the next one, so a burst of acks costs one commit (with the journal, one
 * journal entry synced by the appends' fdatasync, a checkpoint's or a
 * 0.1 s timer's; server/store/groups.c). An Ack or Nack is answered
 * (GroupDone) only after the job holding it committed: an answered ack
 * survives kill -9 (and a power loss once synced; GroupDone.synced says
 * whether it was already). The events done above the checkpoint are stored
 * too, so a restart neither redelivers an acked event nor waits for one.
 * A checkpoint moved by acks goes with the next job; moves with no ack
 * (events of the log that the target does not match) are written at most
 * once a second (groups_tick). GroupInfo, GroupJoined and the metrics
 * report the committed checkpoint, so the one a client sees never moves
 * backwards, kill -9 included.
 *
 * A follower has no consumer groups (their state is not part of the
 * replicated log): requests get ES_ERR_FOLLOWER.
 */
#ifndef ES_GROUPS_H
#define ES_GROUPS_H

#include <stdbool.h>
#include <stdint.h>

#include "es.pb-c.h"
#include "session.h"
#include "writer.h"

#define GROUPS_WINDOW_EVENTS      65536u
#define GROUPS_WINDOW_BYTES       (32u * 1024u * 1024u)
#define GROUPS_MAX                1024u  /* groups per server */
#define GROUPS_MAX_MEMBERS        256u   /* members per group */
#define GROUPS_MAX_IN_FLIGHT      10000u /* per member */
#define GROUPS_DEFAULT_IN_FLIGHT  1000u
#define GROUPS_DEFAULT_TIMEOUT_MS 30000u
#define GROUPS_DEFAULT_RETRIES    10u
#define GROUPS_MAX_RETRIES        1000u
#define GROUPS_MIN_TIMEOUT_MS     100u
#define GROUPS_MAX_TIMEOUT_MS     3600000u
#define GROUPS_PARKED_PAGE        100u
#define GROUPS_PARKED_PAGE_MAX    1000u
#define GROUPS_REVOKE_MAX         GROUPS_MAX_IN_FLIGHT /* positions in one GroupRevoked */

typedef struct groups groups;

/** @brief Load every stored group. @return ES_OK; ES_ERR_NO_MEMORY; store errors. */
es_err groups_create(server_ctx *srv, groups **out);
/** @brief Free everything; sessions must have left. Accepts NULL. */
void groups_destroy(groups *gs);

/** @brief True for the request kinds this module serves. */
bool groups_is_request(int kind);
/** @brief The least role for a group request kind (admin manages, read consumes). */
auth_role groups_required_role(int kind);
/**
 * @brief Serve one group request (replies itself, now or after the commit
 *        that holds it). msg stays the caller's.
 */
void groups_request(session *s, uint64_t id, const Es__V1__Request *msg);

/** @brief True when the session's membership was opened with this id (0: any). */
bool groups_has(const session *s, uint64_t id);
/** @brief Leave the membership opened with join_id (replies UnsubscribeOk). */
void groups_leave(session *s, uint64_t id, uint64_t join_id);
/** @brief The connection is going: its memberships end, their events go back. */
void groups_drop_session(session *s);

/** @brief The session's output drained: its memberships may take more. */
void groups_on_writable(session *s);
/** @brief New events were committed: groups with room read on. */
void groups_on_commit(groups *gs);
/**
 * @brief One delivery pass over every group.
 * @return true when work remains for another pass.
 */
bool groups_deliver(groups *gs);
/** @brief Ack timeouts and the periodic checkpoint write; call a few times a second. */
void groups_tick(groups *gs);
/** @brief A group job (WRITE_JOB_GROUP) came back from the writer: reply, free. */
void groups_complete(groups *gs, write_job *job);

/**
 * @brief Replace the clock of the ack timeouts (tests; NULL: the monotonic
 *        clock). now returns microseconds.
 */
void groups_set_clock(groups *gs, uint64_t (*now)(void *ctx), void *ctx);

/** Per-group figures for the metrics page. */
typedef struct groups_stat {
    const uint8_t *name; /* borrowed until the next loop turn */
    size_t name_len;
    uint32_t members, in_flight;
    uint64_t acked, retries, parked, lag, checkpoint;
} groups_stat;

/** @brief Visit every group's figures. */
void groups_stats(groups *gs, void (*visit)(void *ctx, const groups_stat *st), void *ctx);

/** One member of a group, for the web console's group page. */
typedef struct groups_member_stat {
    const char *consumer; /* the JoinGroup label ("" when none); borrowed for the visit */
    const char *user;     /* the member connection's user ("" without authentication) */
    const char *peer;     /* its peer address ("" when unknown) */
    uint64_t conn_id;
    uint64_t join_id; /* the id of its JoinGroup request */
    uint32_t in_flight, max_in_flight;
} groups_member_stat;

/**
 * @brief Visit the members of the group `name` (newest first), on the loop
 *        thread; visit must not call into groups.
 * @return ES_OK; ES_ERR_GROUP_NOT_FOUND (no such group, or it is being deleted).
 */
es_err groups_members(groups *gs, const uint8_t *name, size_t name_len,
                      void (*visit)(void *ctx, const groups_member_stat *m), void *ctx);

#endif

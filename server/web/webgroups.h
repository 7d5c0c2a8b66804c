/*
 * webgroups — the web console's consumer-group calls: the list of groups,
 * one group with its members, a group's parked events (paged), and the
 * admin actions delete and replay parked.
 *
 * Design notes
 * ------------
 * The console does not do again what a group request does: each call goes
 * through groups_request(), as a TCP client's does, from an in-process
 * session (session.h) whose send callback decodes the Response frames
 * instead of writing them to a socket. The web thus gets the checks,
 * errors and effects of the protocol and of esctl, and groups.c needs one
 * accessor only, groups_members(), for what GroupState does not carry (the
 * members and their events in flight).
 *
 * List, info, parked and replay are answered before groups_request()
 * returns; a delete is answered from groups_complete(), once the writer
 * committed it (as on the TCP port). So a call lives on the heap until its
 * answer: webgroups_start() either returns the answer at once, or hands
 * back the pending call, whose `done` callback runs later on the loop
 * thread. The callback runs inside the groups' reply path, so the call is
 * freed afterwards (webgroups_free, from the owner's next timer tick), not
 * in the callback. When the HTTP client goes first, webgroups_abandon()
 * detaches the session from the groups (groups_drop_session: the stored
 * answer then goes to nobody) and frees it.
 *
 * Roles are web.c's: the table of the TCP port (groups_required_role):
 * list, info and parked for read, delete and replay for admin. Everything
 * runs on the loop thread.
 *
 * A parked event's revision and type are not kept with it: each one of a
 * page is read from the log at its position (one short read), and null
 * when the log no longer serves it (its stream deleted, truncated or
 * erased since).
 */
#ifndef ES_WEBGROUPS_H
#define ES_WEBGROUPS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"
#include "webapi.h"

#define WEBGROUPS_PARKED_PAGE 50u  /* parked events per page by default */
#define WEBGROUPS_PARKED_MAX  200u /* and at most */

typedef enum webgroups_op {
    WEBGROUPS_LIST = 0, /* every group */
    WEBGROUPS_INFO,     /* one group, with its members */
    WEBGROUPS_PARKED,   /* a page of its parked events */
    WEBGROUPS_DELETE,   /* delete it (answered after the commit) */
    WEBGROUPS_REPLAY,   /* deliver its parked events again */
} webgroups_op;

typedef struct webgroups_call webgroups_call;

/**
 * The answer of a pending call: status and body (owned by the callee).
 * Must not free the call (webgroups_free, later).
 */
typedef void (*webgroups_done_fn)(webgroups_call *c, void *owner, int status, json_t *body);

/** What a call asks; name borrowed for webgroups_start only. */
typedef struct webgroups_args {
    webgroups_op op;
    const uint8_t *name; /* the group (not for LIST) */
    size_t name_len;
    uint64_t after; /* PARKED: positions after this one */
    uint32_t limit; /* PARKED: 0 = WEBGROUPS_PARKED_PAGE; capped at WEBGROUPS_PARKED_MAX */
} webgroups_args;

/**
 * @brief Make a group call through groups_request().
 * @param[out] pending NULL when answered now; else the call, answered later
 *   through done(pending, owner, ...)
 * @param[out] out the body when answered now (owned by the caller)
 * @return the HTTP status when answered now: 200; 400 (a bad name); 404 (no
 *   such group); 409 (a follower: groups are the primary's); 500, 503; or 0
 *   when pending.
 */
int webgroups_start(server_ctx *srv, const webgroups_args *a, webgroups_done_fn done, void *owner,
                    webgroups_call **pending, json_t **out);

/**
 * The GET calls, answered at once (webapi.h's endpoint convention):
 *   list    GET /api/groups
 *   group   GET /api/group?name=G
 *   parked  GET /api/group/parked?name=G&after=POS&limit=N
 * @return 200; 400; 404; 409 (a follower); 500. *out owned by the caller.
 */
int webgroups_list(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);
int webgroups_group(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);
int webgroups_parked(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);

/** @brief The owner gives up a pending call: nothing will be answered. */
void webgroups_abandon(webgroups_call *c);

/** @brief Free a call after its done callback ran. Accepts NULL. */
void webgroups_free(webgroups_call *c);

#endif

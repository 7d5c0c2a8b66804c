#include "webgroups.h"

#include <stdlib.h>
#include <string.h>

#include "es.pb-c.h"
#include "frame.h"
#include "groups.h"
#include "record.h"
#include "session.h"
#include "store.h"
#include "validate.h"
#include "webapi.h"

/* Design notes in webgroups.h. */

/* The most reply bytes a call keeps: a list of GROUPS_MAX groups or a page
 * of GROUPS_PARKED_PAGE_MAX parked events is far below it. */
#define CAPTURE_MAX (8u * 1024u * 1024u)

struct webgroups_call {
    session sess; /* the in-process session groups_request answers to */
    server_ctx *srv;
    webgroups_op op;
    uint8_t name[ES_MAX_NAME_BYTES];
    size_t name_len;
    /* the reply frame(s) as sent */
    uint8_t *buf;
    size_t len, cap;
    bool overflow;
    Es__V1__Response *resp; /* the first whole frame, decoded */
    /* set once webgroups_start returned without an answer */
    webgroups_done_fn done;
    void *owner;
};

static int answer(webgroups_call *c, json_t **out);

/* ------------------------------------------------------------ session -- */

/* The session's send: the reply frames of groups_request, kept and decoded;
 * a pending call is answered as soon as its frame is whole. */
static void capture(void *io, const void *data, size_t len)
{
    webgroups_call *c = io;
    if (c->resp || c->overflow) {
        return; /* one answer per call */
    }
    if (c->len + len > CAPTURE_MAX) {
        c->overflow = true;
    } else {
        if (c->len + len > c->cap) {
            size_t nc = c->cap ? c->cap : 4096;
            while (nc < c->len + len) {
                nc *= 2;
            }
            uint8_t *p = realloc(c->buf, nc);
            if (p) {
                c->buf = p;
                c->cap = nc;
            } else {
                c->overflow = true; /* answered as a failure below */
            }
        }
    }
    if (!c->overflow) {
        memcpy(c->buf + c->len, data, len);
        c->len += len;
        const uint8_t *body = NULL;
        uint32_t body_len = 0;
        size_t consumed = 0;
        if (frame_next(c->buf, c->len, CAPTURE_MAX, &body, &body_len, &consumed) != ES_OK) {
            c->overflow = true;
        } else if (body) {
            c->resp = es__v1__response__unpack(NULL, body_len, body);
            c->overflow = c->resp == NULL;
        }
    }
    if ((c->resp || c->overflow) && c->done) {
        json_t *out = NULL;
        int status = answer(c, &out);
        c->sess.dead = true; /* nothing more reaches it */
        c->done(c, c->owner, status, out);
    }
}

static size_t no_output(void *io)
{
    (void)io;
    return 0;
}

/* ------------------------------------------------------------ answers -- */

/* Names are UTF-8 by the groups' rules; labels and reasons may be cut
 * inside a character or be any bytes (protobuf-c does not check strings). */
static json_t *jname(const uint8_t *p, size_t len)
{
    return webapi_text_json(p, len);
}

static json_t *jstr(const char *s)
{
    return webapi_text_json((const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
}

static const char *target_name(int t)
{
    static const char *const names[] = {"all", "stream", "category", "type", "prefix"};
    return t >= 0 && t < 5 ? names[t] : "unknown";
}

static json_t *group_json(const Es__V1__GroupState *g)
{
    const Es__V1__GroupSettings *set = g->settings;
    json_t *jset =
        set ? json_pack("{s:I,s:I,s:I,s:b}", "ack_timeout_ms", (json_int_t)set->ack_timeout_ms,
                        "max_retries", (json_int_t)set->max_retries, "max_in_flight",
                        (json_int_t)set->max_in_flight, "park_blocks", set->park_blocks)
            : json_null();
    return json_pack(
        "{s:o,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "name",
        jname(g->name.data, g->name.len), "target", target_name((int)g->target), "target_name",
        g->target_name.len ? jname(g->target_name.data, g->target_name.len) : json_null(),
        "checkpoint", (json_int_t)g->checkpoint, "head", (json_int_t)g->head_position, "lag",
        (json_int_t)g->lag, "members", (json_int_t)g->members, "in_flight",
        (json_int_t)g->in_flight, "parked", (json_int_t)g->parked, "acked", (json_int_t)g->acked,
        "retries", (json_int_t)g->retries, "settings", jset);
}

static int cmp_group(const void *a, const void *b)
{
    const Es__V1__GroupState *x = *(Es__V1__GroupState *const *)a;
    const Es__V1__GroupState *y = *(Es__V1__GroupState *const *)b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.data, y->name.data, n);
    return c ? c : (x->name.len > y->name.len) - (x->name.len < y->name.len);
}

typedef struct members_ctx {
    json_t *arr;
    bool oom;
} members_ctx;

static void member_visit(void *ctx, const groups_member_stat *m)
{
    members_ctx *mc = ctx;
    json_t *j = json_pack("{s:o,s:o,s:o,s:I,s:I,s:I,s:I}", "consumer", jstr(m->consumer), "user",
                          jstr(m->user), "peer", jstr(m->peer), "connection",
                          (json_int_t)m->conn_id, "join_id", (json_int_t)m->join_id, "in_flight",
                          (json_int_t)m->in_flight, "max_in_flight", (json_int_t)m->max_in_flight);
    if (!j || json_array_append_new(mc->arr, j) != 0) {
        mc->oom = true;
    }
}

typedef struct found_ctx {
    uint64_t want;
    bool found;
    uint64_t revision;
    json_t *type;
} found_ctx;

static int found_visit(void *vctx, const store_record *rec)
{
    found_ctx *f = vctx;
    es_record e;
    if (rec->position == f->want && es_record_parse(rec->bytes, rec->len, 0, &e) == ES_OK) {
        f->found = true;
        f->revision = e.revision;
        f->type = jname(e.type.p, e.type.len);
    }
    return 1;
}

/* One parked event, with its revision and type when the log still serves it. */
static json_t *parked_json(server_ctx *srv, const Es__V1__ParkedEvent *p)
{
    found_ctx f = {.want = p->position};
    store_page page;
    if (store_read_all(srv->st, NULL, p->position, false, 1, found_visit, &f, &page) != ES_OK) {
        f.found = false;
    }
    json_t *j =
        json_pack("{s:I,s:o,s:o,s:o,s:I,s:o,s:I}", "position", (json_int_t)p->position, "stream",
                  jname(p->stream.data, p->stream.len), "revision",
                  f.found ? json_integer((json_int_t)f.revision) : json_null(), "type",
                  f.found && f.type ? f.type : json_null(), "attempts", (json_int_t)p->attempts,
                  "reason", jstr(p->reason), "parked_at_us", (json_int_t)p->parked_at_us);
    return j;
}

static int fail(json_t **out, int status, const char *msg)
{
    *out = webapi_error(msg);
    return status;
}

static int error_status(es_err code)
{
    switch (code) {
    case ES_ERR_GROUP_NOT_FOUND:
        return 404;
    case ES_ERR_INVALID_ARGUMENT:
        return 400;
    case ES_ERR_FOLLOWER:
    case ES_ERR_READ_ONLY:
        return 409;
    case ES_ERR_SHUTTING_DOWN:
    case ES_ERR_TOO_MANY_REQUESTS:
        return 503;
    case ES_ERR_STORE_FULL:
        return 507;
    default:
        return 500;
    }
}

/* The call's reply as the HTTP status and body. */
static int answer(webgroups_call *c, json_t **out)
{
    const Es__V1__Response *r = c->resp;
    if (!r) {
        return fail(out, 500, c->overflow ? "the group reply did not decode" : "no group reply");
    }
    if (r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
        es_err code = (es_err)r->error->code;
        if (code == ES_ERR_GROUP_NOT_FOUND) {
            return fail(out, 404, "no such consumer group");
        }
        const char *msg =
            r->error->message && *r->error->message ? r->error->message : es_strerror(code);
        return fail(out, error_status(code), msg);
    }
    json_t *name = c->op == WEBGROUPS_LIST ? NULL : jname(c->name, c->name_len);
    switch (c->op) {
    case WEBGROUPS_LIST: {
        if (r->kind_case != ES__V1__RESPONSE__KIND_GROUPS) {
            break;
        }
        const Es__V1__GroupList *l = r->groups;
        qsort(l->groups, l->n_groups, sizeof *l->groups, cmp_group);
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < l->n_groups; i++) {
            if (json_array_append_new(arr, group_json(l->groups[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        *out =
            arr ? json_pack("{s:o,s:I}", "groups", arr, "head", (json_int_t)store_head(c->srv->st))
                : NULL;
        return *out ? 200 : fail(out, 500, "out of memory");
    }
    case WEBGROUPS_INFO: {
        if (r->kind_case != ES__V1__RESPONSE__KIND_GROUP_STATE) {
            break;
        }
        json_decref(name);
        members_ctx mc = {.arr = json_array()};
        es_err rv = mc.arr ? groups_members(c->srv->groups, c->name, c->name_len, member_visit, &mc)
                           : ES_ERR_NO_MEMORY;
        json_t *g = group_json(r->group_state);
        if (rv != ES_OK || mc.oom || !g || json_object_set_new(g, "member_list", mc.arr) != 0) {
            json_decref(g);
            json_decref(mc.arr);
            return fail(out, rv == ES_ERR_GROUP_NOT_FOUND ? 404 : 500,
                        rv == ES_ERR_GROUP_NOT_FOUND ? "no such consumer group" : "out of memory");
        }
        *out = g;
        return 200;
    }
    case WEBGROUPS_PARKED: {
        if (r->kind_case != ES__V1__RESPONSE__KIND_PARKED) {
            break;
        }
        const Es__V1__ParkedList *l = r->parked;
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < l->n_events; i++) {
            if (json_array_append_new(arr, parked_json(c->srv, l->events[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        json_t *next = l->more && l->n_events
                           ? json_integer((json_int_t)l->events[l->n_events - 1]->position)
                           : json_null();
        *out = arr ? json_pack("{s:o,s:o,s:b,s:o}", "group", name, "events", arr, "more", l->more,
                               "next_after", next)
                   : NULL;
        if (!arr) {
            json_decref(name);
            json_decref(next);
        }
        return *out ? 200 : fail(out, 500, "out of memory");
    }
    case WEBGROUPS_DELETE:
    case WEBGROUPS_REPLAY:
        if (r->kind_case != ES__V1__RESPONSE__KIND_GROUP_DONE) {
            break;
        }
        *out = c->op == WEBGROUPS_DELETE ? json_pack("{s:o,s:b,s:b}", "group", name, "deleted", 1,
                                                     "synced", r->group_done->synced)
                                         : json_pack("{s:o,s:I}", "group", name, "replayed",
                                                     (json_int_t)r->group_done->count);
        return *out ? 200 : fail(out, 500, "out of memory");
    }
    json_decref(name);
    return fail(out, 500, "an unexpected group reply");
}

/* --------------------------------------------------------------- calls -- */

static void call_free(webgroups_call *c)
{
    if (c->resp) {
        es__v1__response__free_unpacked(c->resp, NULL);
    }
    free(c->buf);
    free(c);
}

int webgroups_start(server_ctx *srv, const webgroups_args *a, webgroups_done_fn done, void *owner,
                    webgroups_call **pending, json_t **out)
{
    *pending = NULL;
    *out = NULL;
    if (a->op != WEBGROUPS_LIST && es_validate_name(a->name, a->name_len) != ES_OK) {
        return fail(out, 400,
                    "name: a group name is 1..256 bytes of UTF-8 without control characters");
    }
    webgroups_call *c = calloc(1, sizeof *c);
    if (!c) {
        return fail(out, 500, "out of memory");
    }
    c->srv = srv;
    c->op = a->op;
    if (a->op != WEBGROUPS_LIST) {
        memcpy(c->name, a->name, a->name_len);
        c->name_len = a->name_len;
    }
    c->sess.srv = srv;
    c->sess.io = c;
    c->sess.send = capture;
    c->sess.outlen = no_output;
    c->sess.hello_done = true;
    c->sess.role = AUTH_ROLE_ADMIN; /* web.c checked the role of the web session */
    snprintf(c->sess.peer_addr, sizeof c->sess.peer_addr, "web console");

    ProtobufCBinaryData name = {c->name_len, c->name};
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    Es__V1__ListGroups list = ES__V1__LIST_GROUPS__INIT;
    Es__V1__GroupInfoRequest info = ES__V1__GROUP_INFO_REQUEST__INIT;
    Es__V1__ListParked parked = ES__V1__LIST_PARKED__INIT;
    Es__V1__DeleteGroup del = ES__V1__DELETE_GROUP__INIT;
    Es__V1__ReplayParked replay = ES__V1__REPLAY_PARKED__INIT;
    req.id = 1;
    switch (a->op) {
    case WEBGROUPS_LIST:
        req.kind_case = ES__V1__REQUEST__KIND_LIST_GROUPS;
        req.list_groups = &list;
        break;
    case WEBGROUPS_INFO:
        info.name = name;
        req.kind_case = ES__V1__REQUEST__KIND_GROUP_INFO;
        req.group_info = &info;
        break;
    case WEBGROUPS_PARKED:
        parked.name = name;
        parked.after = a->after;
        parked.limit = a->limit == 0                     ? WEBGROUPS_PARKED_PAGE
                       : a->limit > WEBGROUPS_PARKED_MAX ? WEBGROUPS_PARKED_MAX
                                                         : a->limit;
        req.kind_case = ES__V1__REQUEST__KIND_LIST_PARKED;
        req.list_parked = &parked;
        break;
    case WEBGROUPS_DELETE:
        del.name = name;
        req.kind_case = ES__V1__REQUEST__KIND_DELETE_GROUP;
        req.delete_group = &del;
        break;
    case WEBGROUPS_REPLAY:
        replay.name = name;
        req.kind_case = ES__V1__REQUEST__KIND_REPLAY_PARKED;
        req.replay_parked = &replay;
        break;
    }
    groups_request(&c->sess, req.id, &req);
    if (c->resp || c->overflow) {
        int status = answer(c, out);
        call_free(c);
        return status;
    }
    /* Answered after a commit (delete): the session stays until then. */
    c->done = done;
    c->owner = owner;
    *pending = c;
    return 0;
}

void webgroups_abandon(webgroups_call *c)
{
    if (!c) {
        return;
    }
    c->sess.dead = true;
    groups_drop_session(&c->sess);
    call_free(c);
}

void webgroups_free(webgroups_call *c)
{
    if (c) {
        call_free(c);
    }
}

/* ---------------------------------------------------------- GET calls -- */

/* A call that never waits for a commit: answered before start returns. */
static int get_call(server_ctx *srv, const webgroups_args *a, json_t **out)
{
    webgroups_call *pending = NULL;
    int status = webgroups_start(srv, a, NULL, NULL, &pending, out);
    if (pending) {
        webgroups_abandon(pending);
        json_decref(*out);
        return fail(out, 500, "the group call was not answered");
    }
    return status;
}

static int name_arg(webapi_param_fn param, void *ctx, webgroups_args *a)
{
    const char *name = param(ctx, "name");
    if (!name) {
        return -1;
    }
    a->name = (const uint8_t *)name;
    a->name_len = strlen(name);
    return 0;
}

int webgroups_list(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    (void)param;
    (void)ctx;
    webgroups_args a = {.op = WEBGROUPS_LIST};
    return get_call(srv, &a, out);
}

int webgroups_group(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    webgroups_args a = {.op = WEBGROUPS_INFO};
    if (name_arg(param, ctx, &a) != 0) {
        return fail(out, 400, "name: a group name is needed");
    }
    return get_call(srv, &a, out);
}

int webgroups_parked(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    webgroups_args a = {.op = WEBGROUPS_PARKED};
    uint64_t limit;
    if (name_arg(param, ctx, &a) != 0) {
        return fail(out, 400, "name: a group name is needed");
    }
    if (webapi_param_u64(param, ctx, "after", 0, &a.after) != 0 ||
        webapi_param_u64(param, ctx, "limit", WEBGROUPS_PARKED_PAGE, &limit) != 0 || limit == 0) {
        return fail(out, 400, "after must be a position, limit a number from 1");
    }
    a.limit = limit > WEBGROUPS_PARKED_MAX ? WEBGROUPS_PARKED_MAX : (uint32_t)limit;
    return get_call(srv, &a, out);
}

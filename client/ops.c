/*
 * ops — the operations of the client that are one request and one reply:
 * appends (synchronous and pipelined), transactions, stream info and
 * listing, snapshots, stats and ping.
 *
 * Design notes: every request is validated here with the same rules the
 * server applies (proto/validate.h) and, once a Hello has told them, the
 * server's limits, so that a request that cannot succeed is refused
 * without a round trip. The server checks everything again.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"
#include "validate.h"

/* --------------------------------------------------------------- appends -- */

/* The protobuf form of one append, pointing into the caller's events. */
typedef struct append_msg {
    Es__V1__Append app;
    Es__V1__Expected exp;
    Es__V1__ProposedEvent *ev;
    Es__V1__ProposedEvent **evp;
} append_msg;

static void append_msg_finish(append_msg *m)
{
    cl_free(m->ev);
    cl_free(m->evp);
    m->ev = NULL;
    m->evp = NULL;
}

static es_err check_append(es_client *c, const char *stream, es_expected expected,
                           const es_event *events, size_t n)
{
    if (stream == NULL) {
        return cl_fail(c, ES_ERR_INVALID_STREAM_ID, "no stream id");
    }
    es_err rv = es_validate_stream_id((const uint8_t *)stream, strlen(stream), false);
    if (rv != ES_OK) {
        return cl_fail(c, rv, "stream id \"%.64s\": %s", stream, es_strerror(rv));
    }
    if ((unsigned)expected.kind > ES_EXPECT_EXACT) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "unknown expectation kind %d",
                       (int)expected.kind);
    }
    if (events == NULL || n == 0) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "an append needs at least one event");
    }
    const es_limits *lim = &c->info.limits;
    if (c->have_info && lim->max_events_per_append != 0 && n > lim->max_events_per_append) {
        return cl_fail(c, ES_ERR_TOO_MANY_EVENTS, "%zu events in one append; the server takes %u",
                       n, lim->max_events_per_append);
    }
    for (size_t i = 0; i < n; i++) {
        const es_event *e = &events[i];
        if (e->type == NULL ||
            es_validate_event_type((const uint8_t *)e->type, strlen(e->type)) != ES_OK) {
            return cl_fail(c, ES_ERR_INVALID_EVENT_TYPE, "event %zu: invalid event type", i);
        }
        if ((e->data == NULL && e->data_len > 0) || (e->metadata == NULL && e->metadata_len > 0)) {
            return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "event %zu: NULL data with a length", i);
        }
        if (e->content_type != NULL && e->content_type[0] != '\0' &&
            es_validate_name((const uint8_t *)e->content_type, strlen(e->content_type)) != ES_OK) {
            return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "event %zu: invalid content type", i);
        }
        if (c->have_info && lim->max_event_bytes != 0 &&
            (e->data_len > lim->max_event_bytes ||
             e->metadata_len > lim->max_event_bytes - e->data_len)) {
            return cl_fail(c, ES_ERR_TOO_LARGE,
                           "event %zu: %zu bytes of data and metadata; the server takes %u", i,
                           e->data_len + e->metadata_len, lim->max_event_bytes);
        }
    }
    return ES_OK;
}

/* Validate, assign missing ids (written back to the caller's events), and
 * build the protobuf form. */
static es_err append_build(es_client *c, const char *stream, es_expected expected, es_event *events,
                           size_t n, append_msg *m)
{
    memset(m, 0, sizeof(*m));
    es_err rv = check_append(c, stream, expected, events, n);
    if (rv != ES_OK) {
        return rv;
    }
    for (size_t i = 0; i < n; i++) {
        if (!events[i].has_id) {
            rv = es_uuid_generate(events[i].id);
            if (rv != ES_OK) {
                return cl_fail(c, rv, "no randomness for an event id");
            }
            events[i].has_id = true;
        }
    }
    m->ev = cl_calloc(n, sizeof(*m->ev));
    m->evp = cl_calloc(n, sizeof(*m->evp));
    if (m->ev == NULL || m->evp == NULL) {
        append_msg_finish(m);
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for %zu events", n);
    }
    es__v1__append__init(&m->app);
    es__v1__expected__init(&m->exp);
    m->exp.kind = (Es__V1__ExpectedKind)expected.kind;
    m->exp.revision = expected.kind == ES_EXPECT_EXACT ? expected.revision : 0;
    m->app.stream.data = (uint8_t *)stream;
    m->app.stream.len = strlen(stream);
    m->app.expected = &m->exp;
    m->app.n_events = n;
    m->app.events = m->evp;
    for (size_t i = 0; i < n; i++) {
        const es_event *e = &events[i];
        Es__V1__ProposedEvent *pe = &m->ev[i];
        es__v1__proposed_event__init(pe);
        pe->id.data = (uint8_t *)e->id;
        pe->id.len = ES_UUID_BYTES;
        pe->type.data = (uint8_t *)e->type;
        pe->type.len = strlen(e->type);
        pe->data.data = (uint8_t *)e->data;
        pe->data.len = e->data_len;
        pe->metadata.data = (uint8_t *)e->metadata;
        pe->metadata.len = e->metadata_len;
        if (e->content_type != NULL) {
            pe->content_type.data = (uint8_t *)e->content_type;
            pe->content_type.len = strlen(e->content_type);
        }
        if (e->correlation_id != NULL) {
            pe->correlation_id.data = (uint8_t *)e->correlation_id;
            pe->correlation_id.len = ES_UUID_BYTES;
        }
        if (e->causation_id != NULL) {
            pe->causation_id.data = (uint8_t *)e->causation_id;
            pe->causation_id.len = ES_UUID_BYTES;
        }
        m->evp[i] = pe;
    }
    return ES_OK;
}

static void result_from(es_append_result *res, const Es__V1__AppendResult *r, bool synced)
{
    res->first_revision = r->first_revision;
    res->last_revision = r->last_revision;
    res->first_position = r->first_position;
    res->last_position = r->last_position;
    res->duplicate = r->duplicate;
    res->synced = r->synced || synced;
}

static es_err append_send_subject(es_client *c, const char *stream, const char *subject,
                                  es_expected expected, es_event *events, size_t n, bool async,
                                  uint64_t *id)
{
    append_msg m;
    es_err rv = append_build(c, stream, expected, events, n, &m);
    if (rv != ES_OK) {
        return rv;
    }
    if (subject != NULL) {
        m.app.subject.data = (uint8_t *)subject;
        m.app.subject.len = strlen(subject);
    }
    rv = cl_ensure(c);
    if (rv == ES_OK && async && c->uncollected >= c->opts.max_pending) {
        rv =
            cl_fail(c, ES_ERR_TOO_MANY_REQUESTS,
                    "%u append handles not collected yet: collect or discard some", c->uncollected);
    }
    if (rv == ES_OK) {
        Es__V1__Request req = ES__V1__REQUEST__INIT;
        req.kind_case = ES__V1__REQUEST__KIND_APPEND;
        req.append = &m.app;
        rv = cl_submit(c, &req, 1, CL_SMALL_REPLY_CAP, id);
    }
    append_msg_finish(&m);
    if (rv == ES_OK && async) {
        c->uncollected++;
    }
    return rv;
}

static es_err append_send(es_client *c, const char *stream, es_expected expected, es_event *events,
                          size_t n, bool async, uint64_t *id)
{
    return append_send_subject(c, stream, NULL, expected, events, n, async, id);
}

static es_err append_collect(es_client *c, uint64_t id, es_append_result *res)
{
    Es__V1__Response *resp = NULL;
    es_err rv = cl_wait(c, id, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    if (res != NULL) {
        result_from(res, resp->append, false);
    }
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_stream_append(es_client *c, const char *stream, es_expected expected, es_event *events,
                        size_t n_events, es_append_result *res)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    uint64_t id = 0;
    es_err rv = append_send(c, stream, expected, events, n_events, false, &id);
    if (rv != ES_OK) {
        return rv;
    }
    return append_collect(c, id, res);
}

es_err es_stream_append_subject(es_client *c, const char *stream, const char *subject,
                                es_expected expected, es_event *events, size_t n_events,
                                es_append_result *res)
{
    if (c == NULL || subject == NULL ||
        es_validate_name((const uint8_t *)subject, strlen(subject)) != ES_OK) {
        return c ? cl_fail(c, ES_ERR_INVALID_ARGUMENT, "invalid subject id")
                 : ES_ERR_INVALID_ARGUMENT;
    }
    uint64_t id = 0;
    es_err rv = append_send_subject(c, stream, subject, expected, events, n_events, false, &id);
    if (rv != ES_OK) {
        return rv;
    }
    return append_collect(c, id, res);
}

es_err es_stream_append_send(es_client *c, const char *stream, es_expected expected,
                             es_event *events, size_t n_events, uint64_t *handle)
{
    if (c == NULL || handle == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    return append_send(c, stream, expected, events, n_events, true, handle);
}

/* The entry of an uncollected append handle, or NULL. */
static pending *async_entry(es_client *c, uint64_t handle)
{
    pending *e = ptable_get(&c->pending, handle);
    if (e == NULL || e->kind != ES__V1__REQUEST__KIND_APPEND || e->abandoned) {
        return NULL;
    }
    return e;
}

es_err es_stream_append_wait(es_client *c, uint64_t handle, es_append_result *res)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (async_entry(c, handle) == NULL) {
        return cl_fail(c, ES_ERR_NOT_FOUND, "unknown or already collected handle %llu",
                       (unsigned long long)handle);
    }
    c->uncollected--;
    return append_collect(c, handle, res);
}

es_err es_stream_append_discard(es_client *c, uint64_t handle)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    pending *e = async_entry(c, handle);
    if (e == NULL) {
        return cl_fail(c, ES_ERR_NOT_FOUND, "unknown or already collected handle %llu",
                       (unsigned long long)handle);
    }
    c->uncollected--;
    if (e->state == PENDING_DONE) {
        cl_pending_release(c, e);
        ptable_del(&c->pending, handle);
    } else {
        e->abandoned = true;
    }
    return ES_OK;
}

/* ---------------------------------------------------------- transactions -- */

es_err es_txn_commit(es_client *c, es_append_req *appends, size_t n_appends,
                     es_append_result *results)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (appends == NULL || n_appends == 0) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "a transaction needs at least one append");
    }
    uint32_t max = c->have_info ? c->info.limits.max_appends_per_transaction : 0;
    if ((max != 0 && n_appends > max) || n_appends > UINT32_MAX) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT,
                       "%zu appends in one transaction; the server "
                       "takes %u",
                       n_appends, max);
    }
    append_msg *msgs = cl_calloc(n_appends, sizeof(*msgs));
    Es__V1__Append **apps = cl_calloc(n_appends, sizeof(*apps));
    es_err rv = ES_OK;
    size_t built = 0;
    if (msgs == NULL || apps == NULL) {
        rv = cl_fail(c, ES_ERR_NO_MEMORY, "no memory for %zu appends", n_appends);
        goto out_free;
    }
    for (; built < n_appends; built++) {
        const es_append_req *a = &appends[built];
        rv = append_build(c, a->stream, a->expected, a->events, a->n_events, &msgs[built]);
        if (rv != ES_OK) {
            char msg[CL_ERRMSG_BYTES];
            snprintf(msg, sizeof(msg), "%s", c->errmsg);
            cl_fail(c, rv, "append %zu: %s", built, msg);
            goto out_free;
        }
        apps[built] = &msgs[built].app;
    }

    Es__V1__Transaction txn = ES__V1__TRANSACTION__INIT;
    txn.n_appends = n_appends;
    txn.appends = apps;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_TRANSACTION;
    req.transaction = &txn;
    Es__V1__Response *resp = NULL;
    uint32_t cap = CL_SMALL_REPLY_CAP + (uint32_t)(n_appends > 65536 ? 65536 : n_appends) * 1024u;
    rv = cl_call(c, &req, (uint32_t)n_appends, cap, &resp);
    if (rv == ES_OK) {
        const Es__V1__TransactionResult *tr = resp->transaction;
        if (tr->n_results != n_appends) {
            rv = cl_fail(c, ES_ERR_MALFORMED, "%zu results for %zu appends", tr->n_results,
                         n_appends);
        } else if (results != NULL) {
            for (size_t i = 0; i < n_appends; i++) {
                result_from(&results[i], tr->results[i], tr->synced);
            }
        }
        cl_resp_free(resp);
    }

out_free:
    for (size_t i = 0; msgs != NULL && i < built; i++) {
        append_msg_finish(&msgs[i]);
    }
    cl_free(apps);
    cl_free(msgs);
    return rv;
}

/* --------------------------------------------------------------- streams -- */

static es_err check_stream(es_client *c, const char *stream)
{
    if (stream == NULL ||
        es_validate_stream_id((const uint8_t *)stream, strlen(stream), true) != ES_OK) {
        return cl_fail(c, ES_ERR_INVALID_STREAM_ID, "invalid stream id");
    }
    return ES_OK;
}

static void info_from(es_stream_info *info, const Es__V1__StreamInfo *si)
{
    info->last_revision = si->last_revision;
    info->event_count = si->event_count;
    info->first_position = si->first_position;
    info->last_position = si->last_position;
    info->created_us = si->created_us;
    info->updated_us = si->updated_us;
}

es_err es_stream_info_get(es_client *c, const char *stream, es_stream_info *info)
{
    if (c == NULL || info == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    memset(info, 0, sizeof(*info));
    es_err rv = check_stream(c, stream);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__StreamInfoRequest sir = ES__V1__STREAM_INFO_REQUEST__INIT;
    sir.stream.data = (uint8_t *)stream;
    sir.stream.len = strlen(stream);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_STREAM_INFO;
    req.stream_info = &sir;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    info_from(info, resp->stream_info);
    info->stream = stream;
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_stream_list(es_client *c, const char *prefix, const char *after, uint64_t limit,
                      es_stream_visit_fn visit, void *ctx, bool *more)
{
    if (c == NULL || visit == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (more != NULL) {
        *more = false;
    }
    size_t plen = prefix ? strlen(prefix) : 0;
    size_t alen = after ? strlen(after) : 0;
    if (plen > ES_MAX_NAME_BYTES || alen > ES_MAX_NAME_BYTES) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "prefix or start id longer than %u bytes",
                       ES_MAX_NAME_BYTES);
    }
    char cursor[ES_MAX_NAME_BYTES + 1];
    memcpy(cursor, after ? after : "", alen + 1);
    char name[ES_MAX_NAME_BYTES + 1];
    uint64_t left = limit;

    for (;;) {
        es_err rv = cl_ensure(c);
        if (rv != ES_OK) {
            return rv;
        }
        uint32_t page =
            c->info.limits.max_page_size ? c->info.limits.max_page_size : CL_DEFAULT_PAGE;
        if (limit != 0 && left < page) {
            page = (uint32_t)left;
        }
        Es__V1__ListStreams ls = ES__V1__LIST_STREAMS__INIT;
        ls.prefix.data = (uint8_t *)prefix;
        ls.prefix.len = plen;
        ls.after.data = (uint8_t *)cursor;
        ls.after.len = strlen(cursor);
        ls.limit = page;
        Es__V1__Request req = ES__V1__REQUEST__INIT;
        req.kind_case = ES__V1__REQUEST__KIND_LIST_STREAMS;
        req.list_streams = &ls;
        Es__V1__Response *resp = NULL;
        rv = cl_call(c, &req, page, c->recv_cap, &resp);
        if (rv != ES_OK) {
            return rv;
        }
        const Es__V1__StreamList *sl = resp->streams;
        for (size_t i = 0; i < sl->n_streams; i++) {
            const Es__V1__StreamInfo *si = sl->streams[i];
            if (si->stream.len == 0 || si->stream.len > ES_MAX_NAME_BYTES) {
                cl_resp_free(resp);
                return cl_fail(c, ES_ERR_MALFORMED, "the server listed an invalid stream id");
            }
            memcpy(name, si->stream.data, si->stream.len);
            name[si->stream.len] = '\0';
            es_stream_info info;
            info_from(&info, si);
            info.stream = name;
            if (visit(ctx, &info) != 0) {
                if (more != NULL) {
                    *more = i + 1 < sl->n_streams || sl->more;
                }
                cl_resp_free(resp);
                return ES_OK;
            }
            memcpy(cursor, name, si->stream.len + 1);
        }
        bool server_more = sl->more;
        size_t got = sl->n_streams;
        cl_resp_free(resp);
        if (limit != 0) {
            left -= got;
        }
        if (!server_more) {
            return ES_OK;
        }
        if (got == 0) {
            return cl_fail(c, ES_ERR_MALFORMED,
                           "the server said more streams follow but sent none");
        }
        if (limit != 0 && left == 0) {
            if (more != NULL) {
                *more = true;
            }
            return ES_OK;
        }
    }
}

/* ------------------------------------------------------------- snapshots -- */

es_err es_snapshot_save(es_client *c, const char *stream, uint64_t revision, uint32_t state_format,
                        const void *data, size_t data_len)
{
    if (c == NULL || (data == NULL && data_len > 0)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_stream(c, stream);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__SaveSnapshot ss = ES__V1__SAVE_SNAPSHOT__INIT;
    ss.stream.data = (uint8_t *)stream;
    ss.stream.len = strlen(stream);
    ss.revision = revision;
    ss.state_format = state_format;
    ss.data.data = (uint8_t *)data;
    ss.data.len = data_len;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_SAVE_SNAPSHOT;
    req.save_snapshot = &ss;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    cl_resp_free(resp);
    return rv;
}

es_err es_snapshot_load(es_client *c, const char *stream, es_snapshot *snap)
{
    if (c == NULL || snap == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    memset(snap, 0, sizeof(*snap));
    es_err rv = check_stream(c, stream);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__LoadSnapshot ls = ES__V1__LOAD_SNAPSHOT__INIT;
    ls.stream.data = (uint8_t *)stream;
    ls.stream.len = strlen(stream);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_LOAD_SNAPSHOT;
    req.load_snapshot = &ls;
    /* Connect first: the reply cap (recv_cap) comes from the server's Hello
     * and is 0 on a client that never connected. */
    rv = cl_ensure(c);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, c->recv_cap, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    const Es__V1__Snapshot *s = resp->snapshot;
    snap->data = cl_malloc(s->data.len);
    if (snap->data == NULL) {
        cl_resp_free(resp);
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for a snapshot of %zu bytes", s->data.len);
    }
    if (s->data.len > 0) {
        memcpy(snap->data, s->data.data, s->data.len);
    }
    snap->data_len = s->data.len;
    snap->revision = s->revision;
    snap->state_format = s->state_format;
    snap->saved_at_us = s->saved_at_us;
    cl_resp_free(resp);
    return ES_OK;
}

void es_snapshot_finish(es_snapshot *snap)
{
    if (snap != NULL) {
        cl_free(snap->data);
        memset(snap, 0, sizeof(*snap));
    }
}

/* ----------------------------------------------------------- stats, ping -- */

es_err es_stats_get(es_client *c, es_stats *st)
{
    if (c == NULL || st == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    memset(st, 0, sizeof(*st));
    Es__V1__StatsRequest sr = ES__V1__STATS_REQUEST__INIT;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_STATS;
    req.stats = &sr;
    Es__V1__Response *resp = NULL;
    es_err rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    const Es__V1__Stats *s = resp->stats;
    if (s->store_id.len == ES_UUID_BYTES) {
        memcpy(st->store_id, s->store_id.data, ES_UUID_BYTES);
    }
    st->head_position = s->head_position;
    st->stream_count = s->stream_count;
    st->event_count = s->event_count;
    st->map_size = s->map_size;
    st->map_used = s->map_used;
    st->readers_used = s->readers_used;
    st->readers_max = s->readers_max;
    st->uptime_us = s->uptime_us;
    st->connections = s->connections;
    st->subscriptions = s->subscriptions;
    st->commits = s->commits;
    st->appends_ok = s->appends_ok;
    st->appends_failed = s->appends_failed;
    st->events_appended = s->events_appended;
    st->sync_mode = s->sync_mode == ES__V1__SYNC_MODE__SYNC_MODE_NONE ? ES_SYNC_NONE : ES_SYNC_FULL;
    st->mean_commit_batch = s->mean_commit_batch;
    st->max_commit_batch = s->max_commit_batch;
    st->relay_on = s->relay_on;
    st->relay_acked_position = s->relay_acked_position;
    st->relay_lag = s->relay_lag;
    st->follower = s->follower;
    st->follower_pending = s->follower_pending;
    st->follower_halted = s->follower_halted;
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_client_ping(es_client *c, uint64_t *rtt_us)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = cl_ensure(c);
    if (rv != ES_OK) {
        return rv;
    }
    uint64_t start = cl_mono_us();
    uint8_t payload[8];
    memcpy(payload, &start, sizeof(payload));
    Es__V1__Ping ping = ES__V1__PING__INIT;
    ping.payload.data = payload;
    ping.payload.len = sizeof(payload);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_PING;
    req.ping = &ping;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    bool echoed = resp->pong->payload.len == sizeof(payload) &&
                  memcmp(resp->pong->payload.data, payload, sizeof(payload)) == 0;
    cl_resp_free(resp);
    if (!echoed) {
        return cl_fail(c, ES_ERR_MALFORMED, "the pong did not echo the ping's payload");
    }
    if (rtt_us != NULL) {
        *rtt_us = cl_mono_us() - start;
    }
    return ES_OK;
}

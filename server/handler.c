#include "handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "auth.h"
#include "auth_limiter.h"
#include "es.pb-c.h"
#include "follow.h"
#include "frame.h"
#include "pbwire.h"
#include "relay.h"
#include "reply.h"
#include "subs.h"
#include "groups.h"
#include "validate.h"

/* Decoding budget: fixed room for structs plus twice the frame (bytes fields
 * are copied). Far above any legitimate request within the caps. */
#define DECODE_BUDGET_FIXED (32u * 1024u * 1024u)

/* --------------------------------------------------------------- session -- */

es_err session_init(session *s, server_ctx *srv, uint64_t conn_id, void *io, session_send_fn send,
                    session_outlen_fn outlen)
{
    memset(s, 0, sizeof *s);
    s->srv = srv;
    s->conn_id = conn_id;
    s->io = io;
    s->send = send;
    s->outlen = outlen;
    s->in_flight_ids =
        calloc(srv->cfg->max_in_flight ? srv->cfg->max_in_flight : 1, sizeof *s->in_flight_ids);
    return s->in_flight_ids ? ES_OK : ES_ERR_NO_MEMORY;
}

void session_finish(session *s)
{
    subs_drop_session(s);
    groups_drop_session(s);
    free(s->in_flight_ids);
    s->in_flight_ids = NULL;
}

static bool id_in_flight(const session *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->in_flight; i++) {
        if (s->in_flight_ids[i] == id) {
            return true;
        }
    }
    return false;
}

static void id_release(session *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->in_flight; i++) {
        if (s->in_flight_ids[i] == id) {
            s->in_flight_ids[i] = s->in_flight_ids[--s->in_flight];
            return;
        }
    }
}

/* ------------------------------------------------------------ validation -- */

static es_err check_stream(const ProtobufCBinaryData *b)
{
    return es_validate_stream_id(b->data, b->len, false);
}

static es_err check_expected(const Es__V1__Expected *e)
{
    if (e && (unsigned)e->kind > ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

static bool is_nil_id(const uint8_t id[ES_EVENT_ID_BYTES])
{
    for (size_t i = 0; i < ES_EVENT_ID_BYTES; i++) {
        if (id[i]) {
            return false;
        }
    }
    return true;
}

/* Validate one Append; msg receives a human reason. */
static es_err check_append(const server_config *cfg, const Es__V1__Append *a, const char **why)
{
    es_err rv = check_stream(&a->stream);
    if (rv != ES_OK) {
        *why = rv == ES_ERR_RESERVED_STREAM ? "stream ids starting with '$' are reserved"
                                            : "stream id must be 1..256 bytes of UTF-8 without "
                                              "control characters";
        return rv;
    }
    if (check_expected(a->expected) != ES_OK) {
        *why = "unknown expected-revision kind";
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (a->n_events == 0) {
        *why = "an append needs at least one event";
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (a->n_events > cfg->max_events_per_append) {
        *why = "more events than the server accepts in one append";
        return ES_ERR_TOO_MANY_EVENTS;
    }
    for (size_t i = 0; i < a->n_events; i++) {
        const Es__V1__ProposedEvent *e = a->events[i];
        if (e->id.len != 0 && e->id.len != ES_EVENT_ID_BYTES) {
            *why = "event ids are 16 bytes";
            return ES_ERR_INVALID_EVENT_ID;
        }
        /* The nil UUID is what a zeroed buffer holds: taken as an id it
         * would make unrelated events retries of each other. */
        if (e->id.len == ES_EVENT_ID_BYTES && is_nil_id(e->id.data)) {
            *why = "the all-zero event id is not an id: leave the id empty for one from the server";
            return ES_ERR_INVALID_EVENT_ID;
        }
        if (es_validate_event_type(e->type.data, e->type.len) != ES_OK) {
            *why = "event type must be 1..256 bytes of UTF-8 without control characters";
            return ES_ERR_INVALID_EVENT_TYPE;
        }
        if (e->data.len + e->metadata.len > cfg->max_event_bytes) {
            *why = "event data and metadata exceed the server's event size cap";
            return ES_ERR_TOO_LARGE;
        }
        if (e->content_type.len && es_validate_name(e->content_type.data, e->content_type.len)) {
            *why = "content type must be 1..256 bytes of UTF-8 without control characters";
            return ES_ERR_INVALID_ARGUMENT;
        }
        if ((e->correlation_id.len && e->correlation_id.len != ES_EVENT_ID_BYTES) ||
            (e->causation_id.len && e->causation_id.len != ES_EVENT_ID_BYTES)) {
            *why = "correlation and causation ids are 16 bytes";
            return ES_ERR_INVALID_ARGUMENT;
        }
    }
    return ES_OK;
}

/* ------------------------------------------------------------- timings -- */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Slow-request lines are limited to SLOW_LOG_PER_S a second (the rest are
 * counted and summed up in the next line), so that an overloaded server
 * does not also drown its log. */
#define SLOW_LOG_PER_S 20

static void log_slow(session *s, int kind, uint64_t id, uint64_t us, uint64_t now)
{
    static uint64_t window_s, in_window, suppressed;
    if (now / 1000000u != window_s) {
        if (suppressed) {
            log_msg(LOG_INFO, "slow requests not logged", "count=%llu",
                    (unsigned long long)suppressed);
        }
        window_s = now / 1000000u;
        in_window = suppressed = 0;
    }
    if (in_window++ >= SLOW_LOG_PER_S) {
        suppressed++;
        return;
    }
    log_msg(LOG_INFO, "slow request", "conn=%llu id=%llu request=%s duration_ms=%.3f",
            (unsigned long long)s->conn_id, (unsigned long long)id, handler_kind_name(kind),
            (double)us / 1000.0);
}

/* A request was answered: its latency by kind, and a line if slow. */
static void request_done(session *s, int kind, uint64_t id, uint64_t t0_us)
{
    uint64_t now = mono_us();
    uint64_t us = now > t0_us ? now - t0_us : 0;
    loopstats *m = &s->srv->metrics;
    hist_observe(&m->request_us[loopstats_kind_index(kind)], &hist_latency_us, us);
    uint32_t slow_ms = s->srv->cfg->slow_request_ms;
    if (slow_ms && us >= (uint64_t)slow_ms * 1000u) {
        m->slow_requests++;
        log_slow(s, kind, id, us, now);
    }
}

/* Events and data bytes of an append or transaction request. */
static void append_size(const Es__V1__Request *msg, uint64_t *events, uint64_t *bytes)
{
    *events = *bytes = 0;
    Es__V1__Append *const *apps = NULL;
    size_t n = 0;
    if (msg->kind_case == ES__V1__REQUEST__KIND_APPEND && msg->append) {
        apps = &msg->append;
        n = 1;
    } else if (msg->kind_case == ES__V1__REQUEST__KIND_TRANSACTION && msg->transaction) {
        apps = msg->transaction->appends;
        n = msg->transaction->n_appends;
    }
    for (size_t i = 0; i < n; i++) {
        *events += apps[i]->n_events;
        for (size_t j = 0; j < apps[i]->n_events; j++) {
            *bytes += apps[i]->events[j]->data.len + apps[i]->events[j]->metadata.len;
        }
    }
}

/* An append or transaction that ended before reaching the writer. */
static void note_append_refused(session *s, const Es__V1__Request *msg, es_err rv)
{
    if (msg->kind_case != ES__V1__REQUEST__KIND_APPEND &&
        msg->kind_case != ES__V1__REQUEST__KIND_TRANSACTION) {
        return;
    }
    uint64_t events, bytes;
    append_size(msg, &events, &bytes);
    loopstats_append(&s->srv->metrics, rv, events, bytes);
}

/* --------------------------------------------------------------- appends -- */

typedef struct pending {
    write_job job;
    session *sess;
    uint64_t id;
    uint64_t t0_us; /* arrival, for the latency metric */
    bool is_txn;
    size_t body_len;
    Es__V1__Request *msg;
    store_append_in *appends;
    store_event_in *events;
    store_append_result *results;
    uint8_t *ids; /* server-assigned event ids */
} pending;

static void pending_free(pending *p)
{
    if (!p) {
        return;
    }
    es__v1__request__free_unpacked(p->msg, &reply_pb_allocator);
    free(p->appends);
    free(p->events);
    free(p->results);
    free(p->ids);
    free(p);
}

/* A version 7 UUID (RFC 9562): time first, so ids assigned by the server
 * keep the event-id index append-mostly, like the client library's. */
static void uuid_v7(uint8_t out[16])
{
    if (getrandom(out, 16, 0) != 16) {
        /* getrandom on Linux does not fail for 16 bytes once the pool is
         * initialised; fall back to a weaker source rather than an id of 0s */
        for (int i = 0; i < 16; i++) {
            out[i] = (uint8_t)random();
        }
    }
    uint64_t ms = store_now_us() / 1000u;
    for (int i = 0; i < 6; i++) {
        out[i] = (uint8_t)(ms >> (40 - 8 * i));
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x70);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

static store_expect map_expect(const Es__V1__Expected *e, uint64_t *rev)
{
    *rev = e ? e->revision : 0;
    if (!e) {
        return STORE_EXPECT_ANY;
    }
    switch (e->kind) {
    case ES__V1__EXPECTED_KIND__EXPECTED_KIND_NO_STREAM:
        return STORE_EXPECT_NO_STREAM;
    case ES__V1__EXPECTED_KIND__EXPECTED_KIND_STREAM_EXISTS:
        return STORE_EXPECT_STREAM_EXISTS;
    case ES__V1__EXPECTED_KIND__EXPECTED_KIND_EXACT:
        return STORE_EXPECT_EXACT;
    default:
        return STORE_EXPECT_ANY;
    }
}

/* Takes ownership of msg in every case. */
static es_err submit_appends(session *s, Es__V1__Request *msg, Es__V1__Append **appends, size_t n,
                             bool is_txn, size_t body_len)
{
    const server_config *cfg = s->srv->cfg;
    uint64_t id = msg->id;
    pending *p = reply_calloc(1, sizeof *p);
    if (!p) {
        note_append_refused(s, msg, ES_ERR_NO_MEMORY);
        es__v1__request__free_unpacked(msg, &reply_pb_allocator);
        reply_send_error(s, id, ES_ERR_NO_MEMORY, NULL);
        return ES_OK;
    }
    p->msg = msg;
    p->sess = s;
    p->id = id;
    p->t0_us = s->req_t0_us;
    p->is_txn = is_txn;
    p->body_len = body_len;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += appends[i]->n_events;
    }
    p->appends = reply_calloc(n, sizeof *p->appends);
    p->results = reply_calloc(n, sizeof *p->results);
    p->events = reply_calloc(total, sizeof *p->events);
    p->ids = reply_malloc(total * ES_EVENT_ID_BYTES);
    if (!p->appends || !p->results || !p->events || !p->ids) {
        note_append_refused(s, msg, ES_ERR_NO_MEMORY);
        pending_free(p);
        reply_send_error(s, id, ES_ERR_NO_MEMORY, NULL);
        return ES_OK;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const Es__V1__Append *a = appends[i];
        store_append_in *sa = &p->appends[i];
        sa->stream = a->stream.data;
        sa->stream_len = a->stream.len;
        sa->subject = a->subject.data;
        sa->subject_len = a->subject.len;
        sa->expect = map_expect(a->expected, &sa->revision);
        sa->events = &p->events[k];
        sa->n_events = a->n_events;
        for (size_t j = 0; j < a->n_events; j++, k++) {
            const Es__V1__ProposedEvent *e = a->events[j];
            store_event_in *se = &p->events[k];
            if (e->id.len == ES_EVENT_ID_BYTES) {
                se->id = e->id.data;
            } else {
                uuid_v7(p->ids + k * ES_EVENT_ID_BYTES);
                se->id = p->ids + k * ES_EVENT_ID_BYTES;
            }
            se->type = e->type.data;
            se->type_len = e->type.len;
            se->data = e->data.data;
            se->data_len = e->data.len;
            se->metadata = e->metadata.data;
            se->metadata_len = e->metadata.len;
            se->content_type = e->content_type.data;
            se->content_type_len = e->content_type.len;
            se->correlation_id = e->correlation_id.data;
            se->correlation_id_len = e->correlation_id.len;
            se->causation_id = e->causation_id.data;
            se->causation_id_len = e->causation_id.len;
        }
    }
    (void)cfg;
    p->job.kind = WRITE_JOB_APPEND;
    p->job.req.appends = p->appends;
    p->job.req.n_appends = n;
    p->job.req.results = p->results;
    p->job.owner = p;
    es_err rv = writer_submit(s->srv->w, &p->job);
    if (rv != ES_OK) {
        note_append_refused(s, msg, rv);
        pending_free(p);
        reply_send_error(s, id, rv, NULL);
        return ES_OK;
    }
    s->in_flight_ids[s->in_flight++] = id;
    s->pending_bytes += body_len;
    s->req_deferred = true; /* answered (and timed) by handler_complete */
    return ES_OK;
}

static void fill_append_result(Es__V1__AppendResult *out, const store_append_result *r, bool synced)
{
    out->first_revision = r->first_revision;
    out->last_revision = r->last_revision;
    out->first_position = r->first_position;
    out->last_position = r->last_position;
    out->duplicate = r->duplicate;
    out->synced = synced;
}

static void reply_append_error(session *s, pending *p)
{
    es_err rv = p->job.req.rv;
    size_t n = p->job.req.n_appends;
    Es__V1__Error err = ES__V1__ERROR__INIT;
    err.code = (Es__V1__ErrorCode)rv;
    char msg[160];
    snprintf(msg, sizeof msg, "%s", es_strerror(rv));
    err.message = msg;
    Es__V1__FailedCheck *checks = NULL;
    Es__V1__FailedCheck **check_ptrs = NULL;
    Es__V1__Expected *exps = NULL;
    Es__V1__StreamState *states = NULL;
    if (rv == ES_ERR_WRONG_EXPECTED_REVISION) {
        checks = reply_calloc(n, sizeof *checks);
        check_ptrs = reply_calloc(n, sizeof *check_ptrs);
        exps = reply_calloc(n, sizeof *exps);
        states = reply_calloc(n, sizeof *states);
        if (checks && check_ptrs && exps && states) {
            size_t nc = 0;
            for (size_t i = 0; i < n; i++) {
                const store_append_result *r = &p->results[i];
                if (r->rv != ES_ERR_WRONG_EXPECTED_REVISION) {
                    continue;
                }
                const store_append_in *a = &p->appends[i];
                es__v1__failed_check__init(&checks[nc]);
                es__v1__expected__init(&exps[nc]);
                es__v1__stream_state__init(&states[nc]);
                checks[nc].stream.data = (uint8_t *)a->stream;
                checks[nc].stream.len = a->stream_len;
                exps[nc].kind = (Es__V1__ExpectedKind)a->expect;
                exps[nc].revision = a->expect == STORE_EXPECT_EXACT ? a->revision : 0;
                states[nc].exists = r->actual_exists;
                states[nc].revision = r->actual_revision;
                checks[nc].expected = &exps[nc];
                checks[nc].actual = &states[nc];
                check_ptrs[nc] = &checks[nc];
                nc++;
            }
            err.n_conflicts = nc;
            err.conflicts = check_ptrs;
            if (nc == 1) {
                const store_append_result *r = NULL;
                for (size_t i = 0; i < n; i++) {
                    if (p->results[i].rv == ES_ERR_WRONG_EXPECTED_REVISION) {
                        r = &p->results[i];
                    }
                }
                if (r && r->actual_exists) {
                    snprintf(msg, sizeof msg, "wrong expected revision: stream is at revision %llu",
                             (unsigned long long)r->actual_revision);
                } else {
                    snprintf(msg, sizeof msg, "wrong expected revision: stream does not exist");
                }
            } else {
                snprintf(msg, sizeof msg, "wrong expected revision: %zu checks failed", nc);
            }
        }
    }
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = p->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_ERROR;
    resp.error = &err;
    reply_send(s, &resp);
    free(checks);
    free(check_ptrs);
    free(exps);
    free(states);
}

static void reply_append_ok(session *s, pending *p)
{
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = p->id;
    bool synced = p->job.req.synced;
    if (!p->is_txn) {
        Es__V1__AppendResult ar = ES__V1__APPEND_RESULT__INIT;
        fill_append_result(&ar, &p->results[0], synced);
        resp.kind_case = ES__V1__RESPONSE__KIND_APPEND;
        resp.append = &ar;
        reply_send(s, &resp);
        return;
    }
    size_t n = p->job.req.n_appends;
    Es__V1__AppendResult *ars = reply_calloc(n, sizeof *ars);
    Es__V1__AppendResult **ptrs = reply_calloc(n, sizeof *ptrs);
    if (!ars || !ptrs) {
        free(ars);
        free(ptrs);
        /* Committed but cannot say so: the client retries with the same ids
         * and gets the result as a duplicate. */
        reply_send_error(s, p->id, ES_ERR_NO_MEMORY, "committed; no memory for the reply, retry");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        es__v1__append_result__init(&ars[i]);
        fill_append_result(&ars[i], &p->results[i], synced);
        ptrs[i] = &ars[i];
    }
    Es__V1__TransactionResult tr = ES__V1__TRANSACTION_RESULT__INIT;
    tr.n_results = n;
    tr.results = ptrs;
    tr.synced = synced;
    resp.kind_case = ES__V1__RESPONSE__KIND_TRANSACTION;
    resp.transaction = &tr;
    reply_send(s, &resp);
    free(ars);
    free(ptrs);
}

typedef struct snap_pending {
    write_job job;
    session *sess;
    uint64_t id;
    uint64_t t0_us;
    size_t body_len;
    Es__V1__Request *msg;
} snap_pending;

static void life_to_pb(Es__V1__StreamMetadata *out, const uint8_t *stream, size_t len,
                       const store_stream_life *l, uint64_t last_revision)
{
    es__v1__stream_metadata__init(out);
    out->stream.data = (uint8_t *)stream;
    out->stream.len = len;
    out->exists = l->meta_set;
    out->metadata_revision = l->meta_revision;
    out->truncate_before = l->truncate_before;
    out->max_count = l->max_count;
    out->max_age_s = l->max_age_s;
    out->deleted = last_revision < l->deleted_before;
    out->deleted_before = l->deleted_before;
}

/* The reply to a lifecycle change done by the writer. */
static void reply_life(session *s, uint64_t id, const write_job *job)
{
    const store_life_op *op = &job->life;
    if (job->life_rv == ES_ERR_WRONG_EXPECTED_REVISION) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: %s %s", es_strerror(job->life_rv),
                 op->kind == STORE_LIFE_SET_META ? "metadata" : "stream",
                 op->actual_exists ? "found at revision" : "not found; last revision");
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof msg - n, " %llu", (unsigned long long)op->actual_revision);
        reply_send_error(s, id, job->life_rv, msg);
        return;
    }
    if (job->life_rv != ES_OK) {
        reply_send_error(s, id, job->life_rv,
                         job->life_rv == ES_ERR_NOT_FOUND ? "no such stream" : NULL);
        return;
    }
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    Es__V1__StreamDeleted del = ES__V1__STREAM_DELETED__INIT;
    Es__V1__StreamMetadata md;
    if (op->kind == STORE_LIFE_SET_META) {
        life_to_pb(&md, op->stream, op->stream_len, &op->life, op->last_revision);
        resp.kind_case = ES__V1__RESPONSE__KIND_STREAM_METADATA;
        resp.stream_metadata = &md;
    } else {
        del.last_revision = op->last_revision;
        del.synced = op->synced;
        resp.kind_case = ES__V1__RESPONSE__KIND_STREAM_DELETED;
        resp.stream_deleted = &del;
    }
    reply_send(s, &resp);
}

/* The reply to an erasure done by the writer. */
static void reply_erase(session *s, uint64_t id, const write_job *job)
{
    const store_erase_op *op = &job->erase;
    es_err rv = job->erase_rv;
    if (rv != ES_OK) {
        char msg[160];
        const char *why = NULL;
        if (rv == ES_ERR_WRONG_EXPECTED_REVISION) {
            snprintf(msg, sizeof msg, "%s: stream found at revision %llu", es_strerror(rv),
                     (unsigned long long)op->actual_revision);
            why = msg;
        } else if (rv == ES_ERR_NOT_FOUND) {
            why = op->kind == STORE_ERASE_SUBJECT ? "no such subject" : "no such stream";
        } else if (rv == ES_ERR_INVALID_ARGUMENT && op->kind == STORE_ERASE_STREAM &&
                   op->streams > 1) {
            snprintf(msg, sizeof msg,
                     "the stream shares its data key with %llu streams (a data subject's): "
                     "erasing it alone would erase them all",
                     (unsigned long long)op->streams);
            why = msg;
        } else if (rv == ES_ERR_INVALID_ARGUMENT && op->kind == STORE_ERASE_STREAM) {
            why = "the stream belongs to a data subject: erase the subject";
        }
        reply_send_error(s, id, rv, why);
        return;
    }
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    Es__V1__Erased er = ES__V1__ERASED__INIT;
    er.erased_at_us = op->erased_at_us;
    er.already = op->already;
    er.streams = op->streams;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_ERASED;
    resp.erased = &er;
    reply_send(s, &resp);
}

session *handler_complete(write_job *job)
{
    if (job->kind == WRITE_JOB_SNAPSHOT || job->kind == WRITE_JOB_LIFE ||
        job->kind == WRITE_JOB_ERASE) {
        snap_pending *sp = job->owner;
        session *s = sp->sess;
        id_release(s, sp->id);
        s->pending_bytes -= sp->body_len;
        if (job->kind == WRITE_JOB_LIFE) {
            reply_life(s, sp->id, job);
        } else if (job->kind == WRITE_JOB_ERASE) {
            reply_erase(s, sp->id, job);
        } else if (job->snapshot.rv == ES_OK) {
            Es__V1__SnapshotSaved saved = ES__V1__SNAPSHOT_SAVED__INIT;
            Es__V1__Response resp = ES__V1__RESPONSE__INIT;
            resp.id = sp->id;
            resp.kind_case = ES__V1__RESPONSE__KIND_SNAPSHOT_SAVED;
            resp.snapshot_saved = &saved;
            reply_send(s, &resp);
        } else {
            reply_send_error(s, sp->id, job->snapshot.rv, NULL);
        }
        request_done(s, (int)sp->msg->kind_case, sp->id, sp->t0_us);
        es__v1__request__free_unpacked(sp->msg, &reply_pb_allocator);
        free(sp);
        return s;
    }
    pending *p = job->owner;
    session *s = p->sess;
    id_release(s, p->id);
    s->pending_bytes -= p->body_len;
    if (p->job.req.rv == ES_OK) {
        s->srv->counters.appends_ok++;
        for (size_t i = 0; i < p->job.req.n_appends; i++) {
            if (!p->results[i].duplicate) {
                s->srv->counters.events_appended += p->appends[i].n_events;
            }
        }
        reply_append_ok(s, p);
    } else {
        s->srv->counters.appends_failed++;
        reply_append_error(s, p);
    }
    uint64_t events = 0, bytes = 0;
    for (size_t i = 0; i < p->job.req.n_appends; i++) {
        events += p->appends[i].n_events;
        for (size_t j = 0; j < p->appends[i].n_events; j++) {
            bytes += p->appends[i].events[j].data_len + p->appends[i].events[j].metadata_len;
        }
    }
    loopstats_append(&s->srv->metrics, p->job.req.rv, events, bytes);
    request_done(s, p->is_txn ? ES__V1__REQUEST__KIND_TRANSACTION : ES__V1__REQUEST__KIND_APPEND,
                 p->id, p->t0_us);
    pending_free(p);
    return s;
}

/* ----------------------------------------------------------------- reads -- */

static uint32_t clamp_limit(const server_config *cfg, uint32_t limit)
{
    return (limit == 0 || limit > cfg->max_page) ? cfg->max_page : limit;
}

static void finish_page(session *s, uint64_t id, page_ctx *pc, es_err rv, const store_page *pg)
{
    if (rv == ES_OK && pc->oom) {
        rv = ES_ERR_NO_MEMORY;
    }
    if (rv != ES_OK) {
        bb_free(&pc->buf);
        reply_send_error(s, id, rv,
                         rv == ES_ERR_CORRUPT
                             ? "a stored record failed its checksum; run esctl db check"
                             : NULL);
        return;
    }
    if (!bb_reserve(&pc->buf, 3 * (PBW_VARINT_MAX + 1))) {
        bb_free(&pc->buf);
        reply_send_error(s, id, ES_ERR_NO_MEMORY, NULL);
        return;
    }
    uint8_t *p = pc->buf.p;
    size_t n = pc->buf.len;
    if (pg->next) {
        n += pbw_put_varint_field(p + n, 2, pg->next);
    }
    if (pg->end) {
        n += pbw_put_varint_field(p + n, 3, 1);
    }
    if (pg->head) {
        n += pbw_put_varint_field(p + n, 4, pg->head);
    }
    pc->buf.len = n;
    reply_send_wrapped(s, id, ES__V1__RESPONSE__KIND_READ, &pc->buf);
    bb_free(&pc->buf);
}

static void do_read_stream(session *s, uint64_t id, const Es__V1__ReadStream *r)
{
    es_err rv = es_validate_stream_id(r->stream.data, r->stream.len, true);
    if (rv != ES_OK) {
        reply_send_error(s, id, ES_ERR_INVALID_STREAM_ID, NULL);
        return;
    }
    page_ctx pc = {.budget = reply_session_budget(s, reply_page_budget(s->srv->cfg))};
    store_page pg;
    rv = store_read_stream(s->srv->st, r->stream.data, r->stream.len, r->from_revision, r->backward,
                           clamp_limit(s->srv->cfg, r->limit), page_visit, &pc, &pg);
    finish_page(s, id, &pc, rv, &pg);
}

static void do_read_all(session *s, uint64_t id, const Es__V1__ReadAll *r)
{
    store_filter f = {STORE_FILTER_NONE, NULL, 0};
    if (r->filter) {
        int set = 0;
        if (r->filter->stream_prefix.len) {
            f.kind = STORE_FILTER_STREAM_PREFIX;
            f.name = r->filter->stream_prefix.data;
            f.name_len = r->filter->stream_prefix.len;
            set++;
        }
        if (r->filter->category.len) {
            f.kind = STORE_FILTER_CATEGORY;
            f.name = r->filter->category.data;
            f.name_len = r->filter->category.len;
            set++;
        }
        if (r->filter->event_type.len) {
            f.kind = STORE_FILTER_EVENT_TYPE;
            f.name = r->filter->event_type.data;
            f.name_len = r->filter->event_type.len;
            set++;
        }
        if (set > 1) {
            reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT, "at most one filter at a time");
            return;
        }
        if (set && es_validate_name(f.name, f.name_len) != ES_OK) {
            reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT,
                             "filter must be 1..256 bytes of UTF-8 without control characters");
            return;
        }
    }
    page_ctx pc = {.budget = reply_session_budget(s, reply_page_budget(s->srv->cfg))};
    store_page pg;
    es_err rv = store_read_all(s->srv->st, &f, r->from_position, r->backward,
                               clamp_limit(s->srv->cfg, r->limit), page_visit, &pc, &pg);
    finish_page(s, id, &pc, rv, &pg);
}

static void info_to_pb(Es__V1__StreamInfo *out, const uint8_t *name, size_t len,
                       const store_stream_info *si)
{
    es__v1__stream_info__init(out);
    out->stream.data = (uint8_t *)name;
    out->stream.len = len;
    out->last_revision = si->last_revision;
    out->event_count = si->event_count;
    out->first_position = si->first_position;
    out->last_position = si->last_position;
    out->created_us = si->created_us;
    out->updated_us = si->updated_us;
}

static void do_stream_info(session *s, uint64_t id, const Es__V1__StreamInfoRequest *r)
{
    store_stream_info si;
    es_err rv = store_stream_info_get(s->srv->st, r->stream.data, r->stream.len, &si);
    if (rv != ES_OK) {
        reply_send_error(s, id, rv, rv == ES_ERR_NOT_FOUND ? "no such stream" : NULL);
        return;
    }
    Es__V1__StreamInfo info;
    info_to_pb(&info, r->stream.data, r->stream.len, &si);
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_STREAM_INFO;
    resp.stream_info = &info;
    reply_send(s, &resp);
}

typedef struct list_ctx {
    bytebuf buf;
    bool oom;
} list_ctx;

static int list_visit(void *ctx, const uint8_t *name, size_t len, const store_stream_info *si)
{
    list_ctx *lc = ctx;
    Es__V1__StreamInfo info;
    info_to_pb(&info, name, len, si);
    size_t sz = es__v1__stream_info__get_packed_size(&info);
    if (!bb_reserve(&lc->buf, sz + 2 * PBW_VARINT_MAX)) {
        lc->oom = true;
        return 1;
    }
    lc->buf.len += pbw_put_len_header(lc->buf.p + lc->buf.len, 1, sz);
    lc->buf.len += es__v1__stream_info__pack(&info, lc->buf.p + lc->buf.len);
    return 0;
}

static void do_list_streams(session *s, uint64_t id, const Es__V1__ListStreams *r)
{
    list_ctx lc = {0};
    bool more = false;
    uint32_t limit = r->limit == 0 || r->limit > 1000 ? 1000 : r->limit;
    es_err rv = store_list_streams(s->srv->st, r->prefix.data, r->prefix.len, r->after.data,
                                   r->after.len, limit, list_visit, &lc, &more);
    if (rv == ES_OK && lc.oom) {
        rv = ES_ERR_NO_MEMORY;
    }
    if (rv == ES_OK && !bb_reserve(&lc.buf, 2)) {
        rv = ES_ERR_NO_MEMORY;
    }
    if (rv != ES_OK) {
        bb_free(&lc.buf);
        reply_send_error(s, id, rv, NULL);
        return;
    }
    if (more) {
        lc.buf.len += pbw_put_varint_field(lc.buf.p + lc.buf.len, 2, 1);
    }
    reply_send_wrapped(s, id, ES__V1__RESPONSE__KIND_STREAMS, &lc.buf);
    bb_free(&lc.buf);
}

static void do_load_snapshot(session *s, uint64_t id, const Es__V1__LoadSnapshot *r)
{
    store_snapshot snap;
    es_err rv = store_load_snapshot(s->srv->st, r->stream.data, r->stream.len, &snap);
    if (rv != ES_OK) {
        reply_send_error(s, id, rv, rv == ES_ERR_NOT_FOUND ? "no snapshot for this stream" : NULL);
        return;
    }
    Es__V1__Snapshot sn = ES__V1__SNAPSHOT__INIT;
    sn.stream = r->stream;
    sn.revision = snap.revision;
    sn.state_format = snap.state_format;
    sn.data.data = snap.data;
    sn.data.len = snap.data_len;
    sn.saved_at_us = snap.saved_at_us;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_SNAPSHOT;
    resp.snapshot = &sn;
    reply_send(s, &resp);
    free(snap.data);
}

static void do_stats(session *s, uint64_t id)
{
    store_stats st;
    es_err rv = store_stats_get(s->srv->st, &st);
    if (rv != ES_OK) {
        reply_send_error(s, id, rv, NULL);
        return;
    }
    writer_stats ws;
    writer_get_stats(s->srv->w, &ws);
    Es__V1__Stats out = ES__V1__STATS__INIT;
    out.store_id.data = st.store_id;
    out.store_id.len = STORE_ID_BYTES;
    out.head_position = st.head_position;
    out.stream_count = st.stream_count;
    out.event_count = st.event_count;
    out.map_size = st.map_size;
    out.map_used = st.map_used;
    out.readers_used = st.readers_used;
    out.readers_max = st.readers_max;
    out.uptime_us = store_now_us() - s->srv->start_us;
    out.connections = s->srv->counters.connections;
    out.subscriptions = s->srv->counters.subscriptions;
    out.commits = ws.commits;
    out.appends_ok = s->srv->counters.appends_ok;
    out.appends_failed = s->srv->counters.appends_failed;
    out.events_appended = s->srv->counters.events_appended;
    out.sync_mode = st.sync ? ES__V1__SYNC_MODE__SYNC_MODE_FULL : ES__V1__SYNC_MODE__SYNC_MODE_NONE;
    out.mean_commit_batch = ws.commits ? (double)ws.requests / (double)ws.commits : 0.0;
    out.max_commit_batch = ws.max_batch;
    if (s->srv->relay) {
        relay_stats rs;
        relay_get_stats(s->srv->relay, &rs);
        out.relay_on = true;
        out.relay_acked_position = rs.acked_position;
        out.relay_lag =
            st.head_position > rs.acked_position ? st.head_position - rs.acked_position : 0;
    }
    if (s->srv->follow) {
        follow_stats fs;
        follow_get_stats(s->srv->follow, &fs);
        out.follower = true;
        out.follower_pending = fs.pending;
        out.follower_halted = fs.halted;
    }
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_STATS;
    resp.stats = &out;
    reply_send(s, &resp);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A peer-supplied name made safe for a log line: only the characters a
 * user name may have, at most AUTH_NAME_MAX of them. */
static void log_safe_name(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in && in[i] && o + 4 < cap; i++) {
        char c = in[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == '-';
        if (i == AUTH_NAME_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        out[o++] = ok ? c : '?';
    }
    out[o] = '\0';
}

/*
 * The user names a hello may carry: no NUL and no control character. A
 * protobuf string is decoded into a C string, so "billing\0x" would read as
 * "billing": the check is made on the wire bytes of every user field of
 * every hello field in the frame (protobuf merges repeated ones).
 * @return true when every user field is acceptable.
 */
#define REQUEST_HELLO_FIELD 10 /* es.v1.Request.hello */
#define HELLO_USER_FIELD    3  /* es.v1.Hello.user */

static bool hello_user_ok(const uint8_t *body, size_t len)
{
    const uint8_t *pos = body, *end = body + len;
    pbw_field f;
    while (pbw_next(&pos, end, &f) == ES_OK) {
        if (f.number != REQUEST_HELLO_FIELD || f.wire != PBW_WIRE_LEN) {
            continue;
        }
        const uint8_t *hp = f.data, *hend = f.data + f.len;
        pbw_field u;
        while (pbw_next(&hp, hend, &u) == ES_OK) {
            if (u.number != HELLO_USER_FIELD || u.wire != PBW_WIRE_LEN) {
                continue;
            }
            for (size_t i = 0; i < u.len; i++) {
                if (u.data[i] < 0x20 || u.data[i] == 0x7f) {
                    return false;
                }
            }
        }
    }
    return true;
}

/*
 * Check the hello's credentials (when the server has an auth file), within
 * the failed-login limits (auth_limiter.h).
 * @return ES_OK when authenticated (s->role set); ES_ERR_UNAUTHENTICATED
 *   when refused and the connection may go on (the error has been sent);
 *   ES_ERR_CLOSED when refused and the peer has used up its failures.
 */
static es_err authenticate(session *s, uint64_t id, const Es__V1__Hello *h)
{
    server_ctx *srv = s->srv;
    if (!srv->auth) {
        s->role = AUTH_ROLE_ADMIN;
        s->user[0] = '\0';
        return ES_OK;
    }
    const char *addr = s->peer_addr[0] ? s->peer_addr : "local";
    const char *user = h->user ? h->user : "";
    size_t user_len = strlen(user);
    uint64_t now = mono_ms();
    auth_verdict v = AUTH_CHECK;
    if (srv->limiter) {
        v = auth_limiter_admit(srv->limiter, addr, (const uint8_t *)user, user_len, now);
    }
    if (v >= AUTH_REFUSE_ADDRESS) {
        s->auth_failed = true;
        /* A flood must not flood the log too: one line a second at most,
         * with the number left out since (the metrics count every one). */
        static uint64_t last_log_ms, unlogged;
        if (last_log_ms == 0 || now - last_log_ms >= 1000) {
            log_msg(LOG_WARN, "authentication refused: too many failures; closing",
                    "conn=%llu peer=%s limit=%s unlogged_before=%llu",
                    (unsigned long long)s->conn_id, addr, auth_verdict_name(v),
                    (unsigned long long)unlogged);
            last_log_ms = now;
            unlogged = 0;
        } else {
            unlogged++;
        }
        reply_send_error(s, id, ES_ERR_UNAUTHENTICATED,
                         v == AUTH_REFUSE_ADDRESS
                             ? "too many failed authentications from this address; try again later"
                         : v == AUTH_REFUSE_NETWORK
                             ? "too many failed authentications from this network; try again later"
                             : "too many failed authentications; try again later");
        return ES_ERR_CLOSED;
    }
    auth_role role;
    char name[AUTH_NAME_MAX + 1];
    if (auth_check(srv->auth, (const uint8_t *)user, user_len, h->token.data, h->token.len, &role,
                   name)) {
        s->role = role;
        memcpy(s->user, name, sizeof s->user);
        if (srv->limiter) {
            auth_limiter_succeed(srv->limiter, addr, name, now);
        }
        return ES_OK;
    }
    srv->counters.auth_failures++;
    s->auth_failed = true;
    char who[AUTH_NAME_MAX + 8];
    log_safe_name(user, who, sizeof who);
    bool more = !srv->limiter ||
                auth_limiter_fail(srv->limiter, addr, (const uint8_t *)user, user_len, now);
    /* Never the token: only whether one was sent. */
    log_msg(LOG_WARN, "authentication failed", "conn=%llu peer=%s user=\"%s\" reason=\"%s\"%s%s",
            (unsigned long long)s->conn_id, addr, who,
            h->token.len == 0 ? "no token" : "unknown user or wrong token",
            v == AUTH_CHECK_TRUSTED ? " trusted=ended" : "", more ? "" : " action=close");
    reply_send_error(s, id, ES_ERR_UNAUTHENTICATED,
                     h->token.len == 0 ? "this server needs credentials: a token in the hello"
                                       : "unknown user or wrong token");
    return more ? ES_ERR_UNAUTHENTICATED : ES_ERR_CLOSED;
}

static es_err do_hello(session *s, uint64_t id, const Es__V1__Hello *h, const uint8_t *body,
                       size_t len)
{
    const server_config *cfg = s->srv->cfg;
    if (s->hello_done) {
        reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT, "hello already done on this connection");
        return ES_OK;
    }
    if (!hello_user_ok(body, len)) {
        /* A malformed name, not a guess: refused before any credential
         * check, and the connection stays (it may send a proper hello). */
        s->auth_failed = s->srv->auth != NULL;
        log_msg(LOG_INFO, "hello refused: user name with a NUL or control character",
                "conn=%llu peer=%s", (unsigned long long)s->conn_id,
                s->peer_addr[0] ? s->peer_addr : "local");
        reply_send_error(s, id, ES_ERR_INVALID_ARGUMENT,
                         "user name contains a NUL byte or a control character");
        return ES_OK;
    }
    if (h->protocol_version != ESD_PROTOCOL_VERSION) {
        char msg[96];
        snprintf(msg, sizeof msg, "protocol version %u not supported; this server speaks %u",
                 h->protocol_version, ESD_PROTOCOL_VERSION);
        reply_send_error(s, id, ES_ERR_UNSUPPORTED_VERSION, msg);
        return ES_OK;
    }
    es_err rv = authenticate(s, id, h);
    if (rv != ES_OK) {
        return rv == ES_ERR_CLOSED ? ES_ERR_CLOSED : ES_OK;
    }
    if (s->srv->auth) {
        log_msg(LOG_DEBUG, "authenticated", "conn=%llu user=%s role=%s",
                (unsigned long long)s->conn_id, s->user, auth_role_name(s->role));
    }
    s->auth_failed = false;
    s->hello_done = true;
    Es__V1__Limits lim = ES__V1__LIMITS__INIT;
    lim.max_frame_bytes = cfg->max_frame_bytes;
    lim.max_events_per_append = cfg->max_events_per_append;
    lim.max_event_bytes = cfg->max_event_bytes;
    lim.max_page_size = cfg->max_page;
    lim.max_in_flight = cfg->max_in_flight;
    lim.max_appends_per_transaction = STORE_MAX_APPENDS_PER_TXN;
    Es__V1__HelloOk ok = ES__V1__HELLO_OK__INIT;
    ok.protocol_version = ESD_PROTOCOL_VERSION;
    ok.server_version = (char *)ESD_VERSION;
    ok.limits = &lim;
    ok.sync_mode =
        cfg->sync ? ES__V1__SYNC_MODE__SYNC_MODE_FULL : ES__V1__SYNC_MODE__SYNC_MODE_NONE;
    ok.store_id.data = (uint8_t *)store_id(s->srv->st);
    ok.store_id.len = STORE_ID_BYTES;
    ok.role = (char *)auth_role_name(s->role);
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_HELLO;
    resp.hello = &ok;
    reply_send(s, &resp);
    return ES_OK;
}

/* Takes ownership of msg. */
static es_err submit_snapshot(session *s, Es__V1__Request *msg, size_t body_len)
{
    const Es__V1__SaveSnapshot *r = msg->save_snapshot;
    uint64_t id = msg->id;
    es_err rv = es_validate_stream_id(r->stream.data, r->stream.len, false);
    if (rv == ES_OK && r->data.len > s->srv->cfg->max_event_bytes) {
        rv = ES_ERR_TOO_LARGE;
    }
    if (rv != ES_OK) {
        es__v1__request__free_unpacked(msg, &reply_pb_allocator);
        reply_send_error(s, id, rv, NULL);
        return ES_OK;
    }
    snap_pending *sp = reply_calloc(1, sizeof *sp);
    if (!sp) {
        es__v1__request__free_unpacked(msg, &reply_pb_allocator);
        reply_send_error(s, id, ES_ERR_NO_MEMORY, NULL);
        return ES_OK;
    }
    sp->sess = s;
    sp->id = id;
    sp->t0_us = s->req_t0_us;
    sp->msg = msg;
    sp->body_len = body_len;
    sp->job.kind = WRITE_JOB_SNAPSHOT;
    sp->job.owner = sp;
    sp->job.snapshot.stream = r->stream.data;
    sp->job.snapshot.stream_len = r->stream.len;
    sp->job.snapshot.revision = r->revision;
    sp->job.snapshot.state_format = r->state_format;
    sp->job.snapshot.data = r->data.data;
    sp->job.snapshot.data_len = r->data.len;
    rv = writer_submit(s->srv->w, &sp->job);
    if (rv != ES_OK) {
        es__v1__request__free_unpacked(msg, &reply_pb_allocator);
        free(sp);
        reply_send_error(s, id, rv, NULL);
        return ES_OK;
    }
    s->in_flight_ids[s->in_flight++] = id;
    s->pending_bytes += body_len;
    s->req_deferred = true;
    return ES_OK;
}

static es_err refuse_request(session *s, Es__V1__Request *msg, es_err rv, const char *why);

/*
 * DeleteStream, TombstoneStream, SetStreamMetadata: checked here (stream id,
 * '$' streams, expectation kind, durations), done by the writer. Takes msg.
 */
static es_err submit_life(session *s, Es__V1__Request *msg, size_t body_len)
{
    uint64_t id = msg->id;
    store_life_op op;
    memset(&op, 0, sizeof op);
    const ProtobufCBinaryData *stream;
    const Es__V1__Expected *exp;
    switch (msg->kind_case) {
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
        op.kind = STORE_LIFE_DELETE;
        stream = &msg->delete_stream->stream;
        exp = msg->delete_stream->expected;
        break;
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM:
        op.kind = STORE_LIFE_TOMBSTONE;
        stream = &msg->tombstone_stream->stream;
        exp = msg->tombstone_stream->expected;
        break;
    default:
        op.kind = STORE_LIFE_SET_META;
        stream = &msg->set_stream_metadata->stream;
        exp = msg->set_stream_metadata->expected_metadata_revision;
        op.truncate_before = msg->set_stream_metadata->truncate_before;
        op.max_count = msg->set_stream_metadata->max_count;
        op.max_age_s = msg->set_stream_metadata->max_age_s;
        break;
    }
    es_err rv = check_stream(stream);
    const char *why = NULL;
    if (rv == ES_ERR_RESERVED_STREAM) {
        why = "streams starting with '$' belong to the store: they have no lifecycle";
    } else if (rv == ES_OK && check_expected(exp) != ES_OK) {
        rv = ES_ERR_INVALID_ARGUMENT;
        why = "unknown expectation kind";
    } else if (rv == ES_OK && op.max_age_s > STORE_MAX_AGE_S) {
        rv = ES_ERR_INVALID_ARGUMENT;
        why = "max_age_s above 100 years";
    }
    if (rv != ES_OK) {
        return refuse_request(s, msg, rv, why);
    }
    op.stream = stream->data;
    op.stream_len = stream->len;
    op.expect = map_expect(exp, &op.revision);
    snap_pending *sp = reply_calloc(1, sizeof *sp);
    if (!sp) {
        return refuse_request(s, msg, ES_ERR_NO_MEMORY, NULL);
    }
    sp->sess = s;
    sp->id = id;
    sp->t0_us = s->req_t0_us;
    sp->msg = msg;
    sp->body_len = body_len;
    sp->job.kind = WRITE_JOB_LIFE;
    sp->job.owner = sp;
    sp->job.life = op;
    rv = writer_submit(s->srv->w, &sp->job);
    if (rv != ES_OK) {
        free(sp);
        return refuse_request(s, msg, rv, NULL);
    }
    s->in_flight_ids[s->in_flight++] = id;
    s->pending_bytes += body_len;
    s->req_deferred = true;
    return ES_OK;
}

/*
 * EraseStream, EraseSubject: the name and the confirmation checked here,
 * the erasure done by the writer (store_erase). Takes msg.
 */
static es_err submit_erase(session *s, Es__V1__Request *msg, size_t body_len)
{
    store_erase_op op;
    memset(&op, 0, sizeof op);
    es_err rv = ES_OK;
    const char *why = NULL;
    bool force;
    if (msg->kind_case == ES__V1__REQUEST__KIND_ERASE_STREAM) {
        const Es__V1__EraseStream *r = msg->erase_stream;
        op.kind = STORE_ERASE_STREAM;
        op.name = r->stream.data;
        op.name_len = r->stream.len;
        force = r->force;
        rv = check_stream(&r->stream);
        if (rv == ES_OK && check_expected(r->expected) != ES_OK) {
            rv = ES_ERR_INVALID_ARGUMENT;
            why = "unknown expectation kind";
        }
        op.expect = map_expect(r->expected, &op.revision);
        if (rv == ES_OK && op.expect == STORE_EXPECT_NO_STREAM) {
            rv = ES_ERR_INVALID_ARGUMENT;
            why = "an erasure expects the stream to exist";
        }
        if (rv == ES_OK && !force && op.expect == STORE_EXPECT_ANY) {
            rv = ES_ERR_INVALID_ARGUMENT;
            why = "an erasure cannot be undone: confirm it with an expected revision or force";
        }
    } else {
        const Es__V1__EraseSubject *r = msg->erase_subject;
        op.kind = STORE_ERASE_SUBJECT;
        op.name = r->subject.data;
        op.name_len = r->subject.len;
        op.expect = STORE_EXPECT_ANY;
        if (es_validate_name(op.name, op.name_len) != ES_OK) {
            rv = ES_ERR_INVALID_ARGUMENT;
            why = "a subject id is 1..256 bytes of UTF-8 without control characters";
        } else if (!r->force) {
            rv = ES_ERR_INVALID_ARGUMENT;
            why = "an erasure cannot be undone: confirm it with force";
        }
    }
    if (rv != ES_OK) {
        return refuse_request(s, msg, rv, why);
    }
    snap_pending *sp = reply_calloc(1, sizeof *sp);
    if (!sp) {
        return refuse_request(s, msg, ES_ERR_NO_MEMORY, NULL);
    }
    sp->sess = s;
    sp->id = msg->id;
    sp->t0_us = s->req_t0_us;
    sp->msg = msg;
    sp->body_len = body_len;
    sp->job.kind = WRITE_JOB_ERASE;
    sp->job.owner = sp;
    sp->job.erase = op;
    rv = writer_submit(s->srv->w, &sp->job);
    if (rv != ES_OK) {
        free(sp);
        return refuse_request(s, msg, rv, NULL);
    }
    s->in_flight_ids[s->in_flight++] = msg->id;
    s->pending_bytes += body_len;
    s->req_deferred = true;
    return ES_OK;
}

static void do_get_stream_metadata(session *s, uint64_t id, const Es__V1__GetStreamMetadata *r)
{
    /* The same id rules as the lifecycle writes: a '$'-stream has no
     * lifecycle, and is refused rather than reported missing. */
    es_err rv = check_stream(&r->stream);
    if (rv != ES_OK) {
        reply_send_error(
            s, id, rv,
            rv == ES_ERR_RESERVED_STREAM
                ? "streams starting with '$' belong to the store: they have no lifecycle"
                : NULL);
        return;
    }
    store_stream_life l;
    uint64_t last = 0;
    rv = store_stream_life_get(s->srv->st, r->stream.data, r->stream.len, &l, &last);
    if (rv != ES_OK) {
        reply_send_error(s, id, rv, rv == ES_ERR_NOT_FOUND ? "no such stream" : NULL);
        return;
    }
    Es__V1__StreamMetadata md;
    life_to_pb(&md, r->stream.data, r->stream.len, &l, last);
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_STREAM_METADATA;
    resp.stream_metadata = &md;
    reply_send(s, &resp);
}

/* -------------------------------------------------------------- dispatch -- */

/*
 * Who may send what: the least role for each request kind.
 *
 *   request kind                                         read  write  admin
 *   hello (always first; checks the credentials)          yes   yes    yes
 *   ping, read_stream, read_all, stream_info,
 *   list_streams, load_snapshot, subscribe,
 *   unsubscribe, stats                                    yes   yes    yes
 *   get_stream_metadata                                   yes   yes    yes
 *   append, transaction, save_snapshot,
 *   delete_stream, set_stream_metadata                     -    yes    yes
 *   tombstone_stream, erase_stream, erase_subject
 *   (cannot be undone)                                     -     -     yes
 *   any kind this table does not know                      -     -     yes
 *
 * stats is open to readers because projectors read the head position from
 * it. Without an auth file every connection is admin.
 */
static auth_role required_role(Es__V1__Request__KindCase k)
{
    switch (k) {
    case ES__V1__REQUEST__KIND_PING:
    case ES__V1__REQUEST__KIND_READ_STREAM:
    case ES__V1__REQUEST__KIND_READ_ALL:
    case ES__V1__REQUEST__KIND_STREAM_INFO:
    case ES__V1__REQUEST__KIND_LIST_STREAMS:
    case ES__V1__REQUEST__KIND_LOAD_SNAPSHOT:
    case ES__V1__REQUEST__KIND_SUBSCRIBE:
    case ES__V1__REQUEST__KIND_UNSUBSCRIBE:
    case ES__V1__REQUEST__KIND_STATS:
    case ES__V1__REQUEST__KIND_GET_STREAM_METADATA:
        return AUTH_ROLE_READ;
    case ES__V1__REQUEST__KIND_APPEND:
    case ES__V1__REQUEST__KIND_TRANSACTION:
    case ES__V1__REQUEST__KIND_SAVE_SNAPSHOT:
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
    case ES__V1__REQUEST__KIND_SET_STREAM_METADATA:
        return AUTH_ROLE_WRITE;
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM: /* cannot be undone */
    case ES__V1__REQUEST__KIND_ERASE_STREAM:
    case ES__V1__REQUEST__KIND_ERASE_SUBJECT:
        return AUTH_ROLE_ADMIN;
    default:
        /* Consumer groups: admin manages, read consumes (groups.c). */
        return groups_is_request((int)k) ? groups_required_role((int)k) : AUTH_ROLE_ADMIN;
    }
}

const char *handler_kind_name(int kind)
{
    switch ((Es__V1__Request__KindCase)kind) {
    case ES__V1__REQUEST__KIND_HELLO:
        return "hello";
    case ES__V1__REQUEST__KIND_APPEND:
        return "append";
    case ES__V1__REQUEST__KIND_TRANSACTION:
        return "transaction";
    case ES__V1__REQUEST__KIND_READ_STREAM:
        return "read_stream";
    case ES__V1__REQUEST__KIND_READ_ALL:
        return "read_all";
    case ES__V1__REQUEST__KIND_SUBSCRIBE:
        return "subscribe";
    case ES__V1__REQUEST__KIND_UNSUBSCRIBE:
        return "unsubscribe";
    case ES__V1__REQUEST__KIND_STREAM_INFO:
        return "stream_info";
    case ES__V1__REQUEST__KIND_LIST_STREAMS:
        return "list_streams";
    case ES__V1__REQUEST__KIND_SAVE_SNAPSHOT:
        return "save_snapshot";
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
        return "delete_stream";
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM:
        return "tombstone_stream";
    case ES__V1__REQUEST__KIND_SET_STREAM_METADATA:
        return "set_stream_metadata";
    case ES__V1__REQUEST__KIND_GET_STREAM_METADATA:
        return "get_stream_metadata";
    case ES__V1__REQUEST__KIND_ERASE_STREAM:
        return "erase_stream";
    case ES__V1__REQUEST__KIND_ERASE_SUBJECT:
        return "erase_subject";
    case ES__V1__REQUEST__KIND_LOAD_SNAPSHOT:
        return "load_snapshot";
    case ES__V1__REQUEST__KIND_STATS:
        return "stats";
    case ES__V1__REQUEST__KIND_PING:
        return "ping";
    case ES__V1__REQUEST__KIND_CREATE_GROUP:
        return "create_group";
    case ES__V1__REQUEST__KIND_UPDATE_GROUP:
        return "update_group";
    case ES__V1__REQUEST__KIND_DELETE_GROUP:
        return "delete_group";
    case ES__V1__REQUEST__KIND_LIST_GROUPS:
        return "list_groups";
    case ES__V1__REQUEST__KIND_GROUP_INFO:
        return "group_info";
    case ES__V1__REQUEST__KIND_JOIN_GROUP:
        return "join_group";
    case ES__V1__REQUEST__KIND_GROUP_ACK:
        return "group_ack";
    case ES__V1__REQUEST__KIND_GROUP_NACK:
        return "group_nack";
    case ES__V1__REQUEST__KIND_LIST_PARKED:
        return "list_parked";
    case ES__V1__REQUEST__KIND_REPLAY_PARKED:
        return "replay_parked";
    default:
        return "unknown";
    }
}

/* A request refused before it reached the writer or a reader: counted,
 * freed, answered with rv. Takes msg. */
static es_err refuse_request(session *s, Es__V1__Request *msg, es_err rv, const char *why)
{
    uint64_t id = msg->id;
    note_append_refused(s, msg, rv);
    es__v1__request__free_unpacked(msg, &reply_pb_allocator);
    reply_send_error(s, id, rv, why);
    return ES_OK;
}

/* The requests that go to the writer (appends, transactions, snapshot
 * saves), once the connection may send them: the per-connection limit on
 * requests in flight, then the checks that need no store, then submission.
 * Takes msg: freed here on a refusal, or by the submitted job. */
static es_err dispatch_write(session *s, Es__V1__Request *msg, size_t len)
{
    const server_config *cfg = s->srv->cfg;
    if (s->in_flight >= cfg->max_in_flight) {
        return refuse_request(s, msg, ES_ERR_TOO_MANY_REQUESTS,
                              "too many requests in flight on this connection; wait for replies");
    }
    if (msg->kind_case == ES__V1__REQUEST__KIND_SAVE_SNAPSHOT) {
        return submit_snapshot(s, msg, len);
    }
    if (msg->kind_case == ES__V1__REQUEST__KIND_DELETE_STREAM ||
        msg->kind_case == ES__V1__REQUEST__KIND_TOMBSTONE_STREAM ||
        msg->kind_case == ES__V1__REQUEST__KIND_SET_STREAM_METADATA) {
        return submit_life(s, msg, len);
    }
    if (msg->kind_case == ES__V1__REQUEST__KIND_ERASE_STREAM ||
        msg->kind_case == ES__V1__REQUEST__KIND_ERASE_SUBJECT) {
        return submit_erase(s, msg, len);
    }
    Es__V1__Append **appends;
    size_t n;
    bool is_txn = msg->kind_case == ES__V1__REQUEST__KIND_TRANSACTION;
    if (is_txn) {
        appends = msg->transaction->appends;
        n = msg->transaction->n_appends;
        if (n == 0) {
            return refuse_request(s, msg, ES_ERR_INVALID_ARGUMENT,
                                  "a transaction needs at least one append");
        }
        if (n > STORE_MAX_APPENDS_PER_TXN) {
            return refuse_request(s, msg, ES_ERR_TOO_MANY_EVENTS,
                                  "more appends than the server accepts in one transaction");
        }
    } else {
        appends = &msg->append;
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        es_err rv = check_append(cfg, appends[i], &why);
        if (rv != ES_OK) {
            return refuse_request(s, msg, rv, why);
        }
    }
    return submit_appends(s, msg, appends, n, is_txn, len);
}

static es_err dispatch_frame(session *s, const uint8_t *body, size_t len)
{
    reply_budget_begin(DECODE_BUDGET_FIXED + 2 * len);
    Es__V1__Request *msg = es__v1__request__unpack(&reply_pb_allocator, len, body);
    bool budget_blown = reply_budget_end();
    if (!msg) {
        /* The frame boundary is intact, so the connection can go on; the id
         * is recovered when the bytes allow it. */
        uint64_t id = 0;
        pbw_find_varint(body, len, 1, &id);
        if (reply_alloc_failed_take()) {
            reply_send_error(s, id, ES_ERR_NO_MEMORY, "out of memory decoding the request");
        } else if (budget_blown) {
            reply_send_error(s, id, ES_ERR_TOO_LARGE,
                             "message decodes to more memory than the server allows");
        } else {
            reply_send_error(s, id, ES_ERR_MALFORMED, "not a valid es.v1.Request");
        }
        return ES_OK;
    }
    uint64_t id = msg->id;
    es_err rv = ES_OK;
    const char *why = NULL;
    char why_buf[128];
    s->req_kind = (int)msg->kind_case;
    s->req_id = id;

    /* Id 0 is reserved for errors that answer no request (a bad frame, a
     * reused id): a request that carries it is refused, hello included. */
    if (id == 0) {
        rv = ES_ERR_INVALID_ARGUMENT;
        why = "request id 0 is reserved: use ids from 1";
        goto out_reply_error;
    }

    if (msg->kind_case == ES__V1__REQUEST__KIND_HELLO) {
        rv = do_hello(s, id, msg->hello, body, len);
        es__v1__request__free_unpacked(msg, &reply_pb_allocator);
        return rv;
    }
    /* Nothing but a hello is served before a hello succeeded, whatever the
     * kind, known or not. */
    if (!s->hello_done) {
        if (s->auth_failed) {
            rv = ES_ERR_UNAUTHENTICATED;
            why = "authentication failed on this connection: nothing is served";
        } else {
            rv = ES_ERR_HANDSHAKE_REQUIRED;
            why = "the first request on a connection must be a hello";
        }
        goto out_reply_error;
    }
    if (msg->kind_case == ES__V1__REQUEST__KIND__NOT_SET) {
        rv = ES_ERR_UNKNOWN_REQUEST;
        why = "request kind not set or unknown to this server";
        goto out_reply_error;
    }
    if (s->role < required_role(msg->kind_case)) {
        s->srv->counters.permission_denied++;
        snprintf(why_buf, sizeof why_buf, "role '%s' may not send %s requests",
                 auth_role_name(s->role), handler_kind_name((int)msg->kind_case));
        /* The first refusal on a connection at info, the rest at debug: a
         * misconfigured client must not flood the log. */
        log_msg(s->denials++ == 0 ? LOG_INFO : LOG_DEBUG, "permission denied",
                "conn=%llu user=%s role=%s request=%s", (unsigned long long)s->conn_id, s->user,
                auth_role_name(s->role), handler_kind_name((int)msg->kind_case));
        rv = ES_ERR_PERMISSION_DENIED;
        why = why_buf;
        goto out_reply_error;
    }
    if (s->srv->shutting_down) {
        rv = ES_ERR_SHUTTING_DOWN;
        goto out_reply_error;
    }
    if (id_in_flight(s, id) || subs_has(s, id) || groups_has(s, id)) {
        /* Answered with id 0: the id belongs to the request in flight,
         * whose own reply must stay the only one that carries it. */
        snprintf(why_buf, sizeof why_buf,
                 "request id %llu is still in flight on this connection: request not served",
                 (unsigned long long)id);
        note_append_refused(s, msg, ES_ERR_DUPLICATE_REQUEST_ID);
        es__v1__request__free_unpacked(msg, &reply_pb_allocator);
        reply_send_error(s, 0, ES_ERR_DUPLICATE_REQUEST_ID, why_buf);
        return ES_OK;
    }

    switch (msg->kind_case) {
    case ES__V1__REQUEST__KIND_APPEND:
    case ES__V1__REQUEST__KIND_TRANSACTION:
    case ES__V1__REQUEST__KIND_SAVE_SNAPSHOT:
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM:
    case ES__V1__REQUEST__KIND_SET_STREAM_METADATA:
    case ES__V1__REQUEST__KIND_ERASE_STREAM:
    case ES__V1__REQUEST__KIND_ERASE_SUBJECT:
        return dispatch_write(s, msg, len);
    case ES__V1__REQUEST__KIND_GET_STREAM_METADATA:
        do_get_stream_metadata(s, id, msg->get_stream_metadata);
        break;
    case ES__V1__REQUEST__KIND_READ_STREAM:
        do_read_stream(s, id, msg->read_stream);
        break;
    case ES__V1__REQUEST__KIND_READ_ALL:
        do_read_all(s, id, msg->read_all);
        break;
    case ES__V1__REQUEST__KIND_STREAM_INFO:
        do_stream_info(s, id, msg->stream_info);
        break;
    case ES__V1__REQUEST__KIND_LIST_STREAMS:
        do_list_streams(s, id, msg->list_streams);
        break;
    case ES__V1__REQUEST__KIND_LOAD_SNAPSHOT:
        do_load_snapshot(s, id, msg->load_snapshot);
        break;
    case ES__V1__REQUEST__KIND_STATS:
        do_stats(s, id);
        break;
    case ES__V1__REQUEST__KIND_PING: {
        Es__V1__Pong pong = ES__V1__PONG__INIT;
        pong.payload = msg->ping->payload;
        Es__V1__Response resp = ES__V1__RESPONSE__INIT;
        resp.id = id;
        resp.kind_case = ES__V1__RESPONSE__KIND_PONG;
        resp.pong = &pong;
        reply_send(s, &resp);
        break;
    }
    case ES__V1__REQUEST__KIND_SUBSCRIBE: {
        const Es__V1__Subscribe *sub = msg->subscribe;
        if ((sub->from_start && sub->from_end) ||
            ((sub->from_start || sub->from_end) && sub->after != 0)) {
            rv = ES_ERR_INVALID_ARGUMENT;
            why = "give one start: from_start, from_end or after";
            goto out_reply_error;
        }
        subs_subscribe(s, id, sub);
        break;
    }
    case ES__V1__REQUEST__KIND_UNSUBSCRIBE:
        if (groups_has(s, msg->unsubscribe->subscription_id) &&
            msg->unsubscribe->subscription_id != 0) {
            groups_leave(s, id, msg->unsubscribe->subscription_id); /* a group membership */
        } else {
            subs_unsubscribe(s, id, msg->unsubscribe->subscription_id);
        }
        break;
    default:
        if (groups_is_request((int)msg->kind_case)) {
            groups_request(s, id, msg);
            break;
        }
        rv = ES_ERR_UNKNOWN_REQUEST;
        goto out_reply_error;
    }
    es__v1__request__free_unpacked(msg, &reply_pb_allocator);
    return ES_OK;

out_reply_error:
    return refuse_request(s, msg, rv, why);
}

es_err handler_on_frame(session *s, const uint8_t *body, size_t len)
{
    s->req_t0_us = mono_us();
    s->req_deferred = false;
    s->req_kind = 0;
    s->req_id = 0;
    es_err rv = dispatch_frame(s, body, len);
    if (!s->req_deferred) {
        request_done(s, s->req_kind, s->req_id, s->req_t0_us);
    }
    return rv;
}

#include "webapi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "follow.h"
#include "bytes.h"
#include "relay.h"
#include "subs.h"
#include "validate.h"

json_t *webapi_error(const char *msg)
{
    return json_pack("{s:s}", "error", msg);
}

static int fail(json_t **out, int status, const char *msg)
{
    *out = webapi_error(msg);
    return status;
}

/* 32 hex digits, dashes anywhere ignored. */
int webapi_parse_uuid(const char *s, uint8_t out[16])
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s == '-') {
            continue;
        }
        int v = hexval(*s);
        if (v < 0 || n >= 32) {
            return -1;
        }
        out[n / 2] = (uint8_t)(n % 2 ? (out[n / 2] | v) : v << 4);
        n++;
    }
    return n == 32 ? 0 : -1;
}

/* ------------------------------------------------------------- encoding -- */

json_t *webapi_text_json(const uint8_t *b, size_t len)
{
    if (es_utf8_valid(b, len)) {
        return json_stringn((const char *)b, len);
    }
    char *tmp = malloc(len * 4 + 1);
    if (!tmp) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\') {
            tmp[o++] = (char)b[i];
        } else {
            o += (size_t)snprintf(tmp + o, 5, "\\x%02x", b[i]);
        }
    }
    json_t *j = json_stringn(tmp, o);
    free(tmp);
    return j;
}

static json_t *jbytes(const uint8_t *b, size_t len)
{
    return webapi_text_json(b, len);
}

static json_t *juuid(const uint8_t *b, size_t len)
{
    if (len != 16) {
        return len ? jbytes(b, len) : json_null();
    }
    char s[37];
    snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return json_string(s);
}

/* {"encoding", "text", "bytes", "truncated"}: data or metadata. */
static json_t *jpayload(const uint8_t *b, size_t len, size_t max)
{
    bool utf8 = es_utf8_valid(b, len);
    size_t keep = len;
    if (keep > max) {
        keep = max;
        /* never cut inside a UTF-8 sequence */
        while (utf8 && keep > 0 && (b[keep] & 0xc0) == 0x80) {
            keep--;
        }
    }
    json_t *text;
    if (utf8) {
        text = json_stringn((const char *)b, keep);
    } else {
        char *hex = malloc(keep * 2 + 1);
        if (!hex) {
            return NULL;
        }
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < keep; i++) {
            hex[2 * i] = digits[b[i] >> 4];
            hex[2 * i + 1] = digits[b[i] & 15];
        }
        text = json_stringn(hex, keep * 2);
        free(hex);
    }
    if (!text) {
        return NULL;
    }
    return json_pack("{s:s,s:o,s:I,s:b}", "encoding", utf8 ? "utf8" : "hex", "text", text, "bytes",
                     (json_int_t)len, "truncated", keep < len);
}

json_t *webapi_event_json(const uint8_t *rec, size_t len, size_t max_data)
{
    es_record e;
    if (es_record_parse(rec, len, 0, &e) != ES_OK) {
        return NULL;
    }
    json_t *j = json_object();
    json_t *data = jpayload(e.data.p, e.data.len, max_data);
    json_t *meta = e.metadata.len ? jpayload(e.metadata.p, e.metadata.len, max_data) : json_null();
    if (!j || !data || !meta ||
        json_object_set_new(j, "position", json_integer((json_int_t)e.position)) ||
        json_object_set_new(j, "revision", json_integer((json_int_t)e.revision)) ||
        json_object_set_new(j, "stream", jbytes(e.stream.p, e.stream.len)) ||
        json_object_set_new(j, "id", juuid(e.id.p, e.id.len)) ||
        json_object_set_new(j, "type", jbytes(e.type.p, e.type.len)) ||
        json_object_set_new(j, "recorded_at_us", json_integer((json_int_t)e.recorded_at_us)) ||
        json_object_set_new(j, "content_type",
                            e.content_type.len ? jbytes(e.content_type.p, e.content_type.len)
                                               : json_null()) ||
        json_object_set_new(j, "correlation_id", juuid(e.correlation_id.p, e.correlation_id.len)) ||
        json_object_set_new(j, "causation_id", juuid(e.causation_id.p, e.causation_id.len))) {
        json_decref(j);
        json_decref(data);
        json_decref(meta);
        return NULL;
    }
    json_object_set_new(j, "data", data);
    json_object_set_new(j, "metadata", meta);
    return j;
}

json_t *webapi_life_json(const store_stream_life *l, uint64_t last_revision)
{
    return json_pack("{s:b,s:b,s:I,s:b,s:o,s:I,s:I,s:I}", "tombstoned", l->tombstoned, "deleted",
                     !l->tombstoned && last_revision < l->deleted_before, "deleted_before",
                     (json_int_t)l->deleted_before, "metadata_set", l->meta_set,
                     "metadata_revision",
                     l->meta_set ? json_integer((json_int_t)l->meta_revision) : json_null(),
                     "truncate_before", (json_int_t)l->truncate_before, "max_count",
                     (json_int_t)l->max_count, "max_age_s", (json_int_t)l->max_age_s);
}

/* ----------------------------------------------------------- parameters -- */

int webapi_param_u64(webapi_param_fn param, void *ctx, const char *name, uint64_t def,
                     uint64_t *out)
{
    const char *v = param(ctx, name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    uint64_t n = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10) {
            return -1;
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *out = n;
    return 0;
}

static int param_limit(webapi_param_fn param, void *ctx, uint32_t def, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (webapi_param_u64(param, ctx, "limit", def, &v) != 0 || v == 0) {
        return -1;
    }
    *out = v > max ? max : (uint32_t)v;
    return 0;
}

int webapi_filter(webapi_param_fn param, void *ctx, store_filter *f)
{
    static const struct {
        const char *name;
        store_filter_kind kind;
    } kinds[] = {{"category", STORE_FILTER_CATEGORY},
                 {"type", STORE_FILTER_EVENT_TYPE},
                 {"prefix", STORE_FILTER_STREAM_PREFIX}};
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *v = param(ctx, kinds[i].name);
        if (!v) {
            continue;
        }
        if (f->kind != STORE_FILTER_NONE || !*v || strlen(v) > ES_MAX_NAME_BYTES) {
            return -1;
        }
        f->kind = kinds[i].kind;
        f->name = (const uint8_t *)v;
        f->name_len = strlen(v);
    }
    return 0;
}

/* ------------------------------------------------------------- overview -- */

void webapi_series_sample(webapi_series *ser, server_ctx *srv, uint64_t now_ms)
{
    writer_stats ws;
    writer_get_stats(srv->w, &ws);
    webapi_sample *s = &ser->s[ser->next];
    s->at_ms = now_ms ? now_ms : 1;
    s->appends = srv->counters.appends_ok + srv->counters.appends_failed;
    s->events = srv->counters.events_appended;
    s->commits = ws.commits;
    s->requests = ws.requests;
    s->commit_us_sum = ws.commit_us.sum;
    ser->next = (ser->next + 1) % WEBAPI_SERIES_LEN;
}

static const webapi_sample *sample_at(const webapi_series *ser, size_t back)
{
    const webapi_sample *s =
        &ser->s[(ser->next + WEBAPI_SERIES_LEN - 1 - back) % WEBAPI_SERIES_LEN];
    return s->at_ms ? s : NULL;
}

/* The least bucket bound below which q of the observations fall (0 when none). */
static uint64_t hist_quantile(const hist *h, const hist_spec *spec, double q)
{
    if (h->count == 0) {
        return 0;
    }
    uint64_t want = (uint64_t)((double)h->count * q + 0.5), seen = 0;
    for (size_t i = 0; i < spec->n; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            return spec->bounds[i];
        }
    }
    return spec->bounds[spec->n - 1];
}

int webapi_overview(server_ctx *srv, const webapi_series *ser, json_t **out)
{
    store_stats st;
    if (store_stats_get(srv->st, &st) != ES_OK) {
        return fail(out, 500, "cannot read the store's statistics");
    }
    writer_stats ws;
    writer_get_stats(srv->w, &ws);
    subs_lag_stats lag = {0};
    if (srv->subs) {
        subs_lag(srv->subs, st.head_position, &lag);
    }
    /* Rates per second between consecutive samples, oldest first. */
    json_t *t = json_array(), *appends = json_array(), *events = json_array();
    const webapi_sample *newest = sample_at(ser, 0);
    for (size_t back = WEBAPI_SERIES_LEN - 1; back > 0 && newest; back--) {
        const webapi_sample *a = sample_at(ser, back), *b = sample_at(ser, back - 1);
        if (!a || !b || b->at_ms <= a->at_ms) {
            continue;
        }
        double dt = (double)(b->at_ms - a->at_ms) / 1000.0;
        json_array_append_new(t, json_integer(-(json_int_t)(newest->at_ms - b->at_ms) / 1000));
        json_array_append_new(appends, json_real((double)(b->appends - a->appends) / dt));
        json_array_append_new(events, json_real((double)(b->events - a->events) / dt));
    }
    /* Commit batch and latency over the last minute (or what there is of it). */
    double batch = 0, latency_us = 0;
    const webapi_sample *old = NULL;
    for (size_t back = 60; back > 0 && !old; back--) {
        old = sample_at(ser, back);
    }
    if (newest && old && newest->commits > old->commits) {
        double commits = (double)(newest->commits - old->commits);
        batch = (double)(newest->requests - old->requests) / commits;
        latency_us = (double)(newest->commit_us_sum - old->commit_us_sum) / commits;
    }
    char sid[2 * STORE_ID_BYTES + 1];
    for (size_t i = 0; i < STORE_ID_BYTES; i++) {
        snprintf(sid + 2 * i, 3, "%02x", st.store_id[i]);
    }
    json_t *jrelay = json_null(), *jfollow = json_null();
    if (srv->relay) {
        relay_stats rs;
        relay_get_stats(srv->relay, &rs);
        jrelay = json_pack("{s:b,s:b,s:I,s:I,s:I,s:I}", "connected", rs.connected, "resumed",
                           rs.resumed, "acked_position", (json_int_t)rs.acked_position, "lag",
                           (json_int_t)(st.head_position > rs.acked_position
                                            ? st.head_position - rs.acked_position
                                            : 0),
                           "published", (json_int_t)rs.published, "errors", (json_int_t)rs.errors);
    }
    if (srv->follow) {
        follow_stats fs;
        follow_get_stats(srv->follow, &fs);
        jfollow = json_pack("{s:b,s:b,s:I,s:I,s:I}", "connected", fs.connected, "halted", fs.halted,
                            "imported", (json_int_t)fs.imported, "pending", (json_int_t)fs.pending,
                            "upstream_position", (json_int_t)fs.upstream_position);
    }
    *out = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:i,s:b,"
                     "s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
                     "s:{s:f,s:f,s:I,s:I,s:I},"
                     "s:{s:o,s:o,s:o},s:o,s:o}",
                     "version", ESD_VERSION, "role", srv->follow ? "follower" : "primary",
                     "store_id", sid, "head", (json_int_t)st.head_position, "streams",
                     (json_int_t)st.stream_count, "events", (json_int_t)st.event_count, "map_size",
                     (json_int_t)st.map_size, "map_used", (json_int_t)st.map_used, "uptime_s",
                     (json_int_t)((store_now_us() - srv->start_us) / 1000000u), "readers_used",
                     (int)st.readers_used, "readers_max", (int)st.readers_max, "sync", st.sync,
                     "connections", (json_int_t)srv->counters.connections, "subscriptions",
                     (json_int_t)srv->counters.subscriptions, "subscriptions_behind",
                     (json_int_t)lag.behind, "subscription_lag_max", (json_int_t)lag.max,
                     "appends_ok", (json_int_t)srv->counters.appends_ok, "appends_failed",
                     (json_int_t)srv->counters.appends_failed, "events_appended",
                     (json_int_t)srv->counters.events_appended, "commits", "batch_avg", batch,
                     "latency_avg_us", latency_us, "latency_p99_us",
                     (json_int_t)hist_quantile(&ws.commit_us, &hist_latency_us, 0.99), "total",
                     (json_int_t)ws.commits, "max_batch", (json_int_t)ws.max_batch, "series", "t_s",
                     t, "appends_per_s", appends, "events_per_s", events, "relay", jrelay, "follow",
                     jfollow);
    return *out ? 200 : fail(out, 500, "out of memory");
}

/* -------------------------------------------------------------- streams -- */

typedef struct list_ctx {
    json_t *arr;
    json_t *last;
    bool oom;
} list_ctx;

static int stream_visit(void *vctx, const uint8_t *name, size_t name_len,
                        const store_stream_info *info)
{
    list_ctx *c = vctx;
    json_t *j =
        json_pack("{s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "id", jbytes(name, name_len), "event_count",
                  (json_int_t)info->event_count, "last_revision", (json_int_t)info->last_revision,
                  "first_position", (json_int_t)info->first_position, "last_position",
                  (json_int_t)info->last_position, "created_us", (json_int_t)info->created_us,
                  "updated_us", (json_int_t)info->updated_us);
    if (!j || json_array_append_new(c->arr, j) != 0) {
        c->oom = true;
        return 1;
    }
    c->last = json_object_get(j, "id");
    return 0;
}

int webapi_streams(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    const char *prefix = param(ctx, "prefix");
    const char *after = param(ctx, "after");
    uint32_t limit;
    if (param_limit(param, ctx, 50, WEBAPI_STREAMS_MAX, &limit) != 0) {
        return fail(out, 400, "limit must be a number from 1");
    }
    if ((prefix && strlen(prefix) > ES_MAX_NAME_BYTES) ||
        (after && strlen(after) > ES_MAX_NAME_BYTES)) {
        return fail(out, 400, "prefix and after are stream ids: at most 256 bytes");
    }
    list_ctx c = {.arr = json_array()};
    bool more = false;
    es_err rv = c.arr
                    ? store_list_streams(srv->st, (const uint8_t *)prefix,
                                         prefix ? strlen(prefix) : 0, (const uint8_t *)after,
                                         after ? strlen(after) : 0, limit, stream_visit, &c, &more)
                    : ES_ERR_NO_MEMORY;
    if (rv != ES_OK || c.oom) {
        json_decref(c.arr);
        return fail(out, 500, rv != ES_OK ? es_strerror(rv) : "out of memory");
    }
    json_t *next = more && c.last ? json_incref(c.last) : json_null();
    *out = json_pack("{s:o,s:b,s:o}", "streams", c.arr, "more", more, "next_after", next);
    return *out ? 200 : fail(out, 500, "out of memory");
}

/* --------------------------------------------------------------- events -- */

typedef struct events_ctx {
    server_ctx *srv;
    json_t *arr;
    size_t max_data;
    bool bad;
} events_ctx;

static int event_visit(void *vctx, const store_record *rec)
{
    events_ctx *c = vctx;
    json_t *j = webapi_event_json(rec->bytes, rec->len, c->max_data);
    if (!j || json_array_append_new(c->arr, j) != 0) {
        c->bad = true;
        return 1;
    }
    return 0;
}

static int pos_visit(void *vctx, const store_record *rec)
{
    *(uint64_t *)vctx = rec->position;
    return 1;
}

/*
 * "<name>_position": the position of the event an id field names, found
 * through the event-id index, or null when no served event has that id
 * (the page then shows "not found" instead of a link). Absent when the
 * field is.
 */
static void link_id(server_ctx *srv, json_t *ev, const char *field, const char *name)
{
    uint8_t id[16];
    const char *v = json_string_value(json_object_get(ev, field));
    if (!v || webapi_parse_uuid(v, id) != 0) {
        return;
    }
    uint64_t pos = 0;
    es_err rv = store_read_event_by_id(srv->st, id, pos_visit, &pos);
    json_object_set_new(ev, name, rv == ES_OK ? json_integer((json_int_t)pos) : json_null());
}

void webapi_link_ids(server_ctx *srv, json_t *ev)
{
    link_id(srv, ev, "correlation_id", "correlation_position");
    link_id(srv, ev, "causation_id", "causation_position");
}

/* {"events": [...], "next": N|null, "head": N} after a read. */
static int events_reply(es_err rv, events_ctx *c, const store_page *page, json_t *extra,
                        json_t **out)
{
    if (rv != ES_OK || c->bad) {
        json_decref(c->arr);
        json_decref(extra);
        if (rv == ES_ERR_NOT_FOUND) {
            return fail(out, 404, "no such stream");
        }
        if (rv == ES_ERR_INVALID_ARGUMENT || rv == ES_ERR_INVALID_STREAM_ID) {
            return fail(out, 400, es_strerror(rv));
        }
        return fail(out, 500, rv != ES_OK ? es_strerror(rv) : "a record did not decode");
    }
    size_t i;
    json_t *ev;
    json_array_foreach(c->arr, i, ev)
    {
        webapi_link_ids(c->srv, ev);
    }
    *out = extra ? extra : json_object();
    if (!*out || json_object_set_new(*out, "events", c->arr) ||
        json_object_set_new(*out, "next",
                            page->end ? json_null() : json_integer((json_int_t)page->next)) ||
        json_object_set_new(*out, "head", json_integer((json_int_t)page->head))) {
        json_decref(*out);
        return fail(out, 500, "out of memory");
    }
    return 200;
}

int webapi_stream(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    const char *id = param(ctx, "id");
    uint64_t from;
    uint32_t limit;
    if (!id || !*id || strlen(id) > ES_MAX_NAME_BYTES) {
        return fail(out, 400, "id: a stream id is needed");
    }
    if (webapi_param_u64(param, ctx, "from", UINT64_MAX, &from) != 0 ||
        param_limit(param, ctx, 20, WEBAPI_EVENTS_MAX, &limit) != 0) {
        return fail(out, 400, "from and limit must be numbers");
    }
    /* The lifecycle first: a deleted or tombstoned stream still has a page
     * (its state, no events), only one that never existed is 404. */
    store_stream_life life;
    uint64_t last = 0;
    es_err rv = store_stream_life_get(srv->st, (const uint8_t *)id, strlen(id), &life, &last);
    bool has_life = rv != ES_ERR_RESERVED_STREAM; /* the store's own streams have none */
    if (rv == ES_ERR_STREAM_DELETED) {
        memset(&life, 0, sizeof life);
        life.tombstoned = true;
    } else if (!has_life) {
        rv = ES_OK;
    } else if (rv == ES_ERR_NOT_FOUND) {
        return fail(out, 404, "no such stream");
    } else if (rv != ES_OK) {
        return fail(out, rv == ES_ERR_INVALID_STREAM_ID ? 400 : 500, es_strerror(rv));
    }
    json_t *jlife = has_life ? webapi_life_json(&life, last) : json_null();
    store_stream_info info;
    rv = store_stream_info_get(srv->st, (const uint8_t *)id, strlen(id), &info);
    if (rv == ES_ERR_NOT_FOUND || rv == ES_ERR_STREAM_DELETED) {
        /* deleted (nothing appended since) or tombstoned: nothing to read */
        *out =
            json_pack("{s:o,s:o,s:o,s:[],s:n,s:I}", "stream",
                      jbytes((const uint8_t *)id, strlen(id)), "life", jlife, "info",
                      rv == ES_ERR_NOT_FOUND ? json_pack("{s:I,s:I}", "event_count", (json_int_t)0,
                                                         "last_revision", (json_int_t)last)
                                             : json_null(),
                      "events", "next", "head", (json_int_t)store_head(srv->st));
        return *out ? 200 : fail(out, 500, "out of memory");
    }
    if (rv != ES_OK) {
        json_decref(jlife);
        return fail(out, rv == ES_ERR_INVALID_STREAM_ID ? 400 : 500, es_strerror(rv));
    }
    json_t *extra = json_pack(
        "{s:o,s:o,s:{s:I,s:I,s:I,s:I}}", "stream", jbytes((const uint8_t *)id, strlen(id)), "life",
        jlife, "info", "event_count", (json_int_t)info.event_count, "last_revision",
        (json_int_t)info.last_revision, "created_us", (json_int_t)info.created_us, "updated_us",
        (json_int_t)info.updated_us);
    events_ctx c = {.srv = srv, .arr = json_array(), .max_data = WEBAPI_LIST_DATA_MAX};
    store_page page = {0};
    rv = c.arr ? store_read_stream(srv->st, (const uint8_t *)id, strlen(id), from, true, limit,
                                   event_visit, &c, &page)
               : ES_ERR_NO_MEMORY;
    return events_reply(rv, &c, &page, extra, out);
}

int webapi_log(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    store_filter f;
    uint64_t from;
    uint32_t limit;
    if (webapi_filter(param, ctx, &f) != 0) {
        return fail(out, 400, "give at most one of category, type, prefix, not empty");
    }
    const char *dir = param(ctx, "dir");
    bool forward = dir && !strcmp(dir, "forward");
    if ((dir && !forward && strcmp(dir, "backward")) ||
        webapi_param_u64(param, ctx, "from", forward ? 1 : UINT64_MAX, &from) != 0 ||
        param_limit(param, ctx, 50, WEBAPI_EVENTS_MAX, &limit) != 0) {
        return fail(out, 400, "from and limit must be numbers, dir forward or backward");
    }
    events_ctx c = {.srv = srv, .arr = json_array(), .max_data = WEBAPI_LIST_DATA_MAX};
    store_page page = {0};
    es_err rv = c.arr ? store_read_all(srv->st, &f, from, !forward, limit, event_visit, &c, &page)
                      : ES_ERR_NO_MEMORY;
    return events_reply(rv, &c, &page, NULL, out);
}

typedef struct find_ctx {
    json_t *found;
} find_ctx;

static int find_visit(void *vctx, const store_record *rec)
{
    find_ctx *c = vctx;
    c->found = webapi_event_json(rec->bytes, rec->len, SIZE_MAX);
    return 1;
}

int webapi_event(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out)
{
    const char *id = param(ctx, "id");
    uint64_t pos;
    if (webapi_param_u64(param, ctx, "position", 0, &pos) != 0 || (pos == 0 && !id) ||
        (pos && id)) {
        return fail(out, 400, "give position (a number from 1) or id (an event id)");
    }
    if (pos) {
        events_ctx c = {.srv = srv, .arr = json_array(), .max_data = SIZE_MAX};
        store_page page = {0};
        es_err rv = c.arr ? store_read_all(srv->st, NULL, pos, false, 1, event_visit, &c, &page)
                          : ES_ERR_NO_MEMORY;
        json_t *e = json_array_get(c.arr, 0);
        if (rv != ES_OK || c.bad) {
            json_decref(c.arr);
            return fail(out, 500, rv != ES_OK ? es_strerror(rv) : "a record did not decode");
        }
        if (!e || json_integer_value(json_object_get(e, "position")) != (json_int_t)pos) {
            json_decref(c.arr);
            return fail(out, 404, "no event at that position");
        }
        *out = json_incref(e);
        json_decref(c.arr);
        webapi_link_ids(srv, *out);
        return 200;
    }
    uint8_t uuid[16];
    if (webapi_parse_uuid(id, uuid) != 0) {
        return fail(out, 400, "id: 32 hex digits (dashes allowed)");
    }
    find_ctx c = {0};
    es_err rv = store_read_event_by_id(srv->st, uuid, find_visit, &c);
    if (rv == ES_ERR_NOT_FOUND) {
        return fail(out, 404, "no event has this id (or its stream no longer serves it)");
    }
    if (rv == ES_ERR_ERASED) {
        return fail(out, 410, "this event's stream was erased");
    }
    if (rv != ES_OK || !c.found) {
        json_decref(c.found);
        return fail(out, 500, rv != ES_OK ? es_strerror(rv) : "a record did not decode");
    }
    *out = c.found;
    webapi_link_ids(srv, *out);
    return 200;
}

/*
 * http.c — the query side of es-account-view (see http.h).
 *
 * Design notes: every request is answered inside its evhttp callback with
 * one short LMDB read transaction, opened and closed there (never held
 * across a return to the loop), so a query sees one committed state of the
 * read model — accounts, totals and checkpoint of the same batch. The
 * projector thread writes meanwhile; LMDB readers never block it nor wait
 * for it. Parameters are checked strictly: anything that is not a plain
 * decimal number in range is a 400 rather than a guess.
 */
#include "http.h"

#include <sys/queue.h> /* before libevent's headers: TAILQ_* */

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_PER_PAGE     1000u
#define DEFAULT_PER_PAGE 20u
#define MAX_PAGE         1000000000u

struct av_http {
    struct evhttp *http;
    es_projector *proj;
    const av_model *model;
};

/* -------------------------------------------------------------- replies -- */

static void reply_json(struct evhttp_request *req, int code, const char *reason, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct evbuffer *buf = s ? evbuffer_new() : NULL;
    if (!buf || evbuffer_add(buf, s, strlen(s)) != 0 || evbuffer_add(buf, "\n", 1) != 0) {
        if (buf) {
            evbuffer_free(buf);
        }
        free(s);
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    free(s);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

static void reply_error(struct evhttp_request *req, int code, const char *error,
                        const char *message)
{
    const char *reason = code == 400   ? "Bad Request"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                         : code == 503 ? "Service Unavailable"
                                       : "Internal Server Error";
    json_t *body = json_pack("{s:s, s:s}", "error", error, "message", message);
    reply_json(req, code, reason, body);
}

static void reply_store_error(struct evhttp_request *req, es_err err)
{
    char msg[128];
    snprintf(msg, sizeof msg, "read model: %s", es_strerror(err));
    if (err == ES_ERR_BUSY) {
        reply_error(req, 503, "busy", msg);
    } else {
        reply_error(req, 500, "internal", msg);
    }
}

/* A JSON string of len bytes; null when they are not UTF-8. */
static json_t *string_or_null(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    return j ? j : json_null();
}

static json_t *account_json(const av_account *a)
{
    char when[32];
    av_format_time(a->updated_us, when);
    return json_pack("{s:o, s:o, s:I, s:I, s:s}", "id", string_or_null(a->id, strlen(a->id)),
                     "owner", string_or_null(a->owner, a->owner_len), "balance",
                     (json_int_t)a->balance, "revision", (json_int_t)a->revision, "updated_at",
                     when);
}

static es_err read_begin(const av_http *h, MDB_txn **txn)
{
    int rc = mdb_txn_begin(es_projector_env(h->proj), NULL, MDB_RDONLY, txn);
    return es_projector_err_from_mdb(rc);
}

/* ------------------------------------------------------------ parameters -- */

/* A plain decimal number (no sign, no spaces) of at most 18 digits. */
static bool parse_number(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 18) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* ------------------------------------------------------------- handlers -- */

static void get_account(av_http *h, struct evhttp_request *req, const char *raw_id)
{
    if (!*raw_id || strchr(raw_id, '/')) {
        reply_error(req, 404, "not_found", "no such path");
        return;
    }
    size_t len = 0;
    char *id = evhttp_uridecode(raw_id, 0, &len);
    if (!id) {
        reply_error(req, 400, "bad_request", "the account id is not a valid URI component");
        return;
    }
    if (len != strlen(id) || !av_valid_id(id)) {
        free(id);
        reply_error(req, 400, "bad_request", "the account id must be 1..248 bytes without NUL");
        return;
    }
    MDB_txn *txn;
    es_err err = read_begin(h, &txn);
    if (err != ES_OK) {
        free(id);
        reply_store_error(req, err);
        return;
    }
    av_account a;
    err = av_get(h->model, txn, id, &a);
    if (err == ES_OK) {
        json_t *body = account_json(&a);
        mdb_txn_abort(txn);
        reply_json(req, 200, "OK", body);
    } else if (err == ES_ERR_NOT_FOUND) {
        mdb_txn_abort(txn);
        char msg[AV_MAX_ID + 32];
        snprintf(msg, sizeof msg, "no account %s", id);
        json_t *body = json_pack("{s:s, s:s, s:o}", "error", "not_found", "message", "", "id",
                                 string_or_null(id, len));
        if (body) {
            json_object_set_new(body, "message", string_or_null(msg, strlen(msg)));
        }
        reply_json(req, 404, "Not Found", body);
    } else {
        mdb_txn_abort(txn);
        reply_store_error(req, err);
    }
    free(id);
}

typedef struct list_ctx {
    json_t *array;
    bool failed;
} list_ctx;

static int add_account(void *ctx, const av_account *a)
{
    list_ctx *lc = ctx;
    json_t *j = account_json(a);
    if (!j || json_array_append_new(lc->array, j) != 0) {
        lc->failed = true;
        return 1;
    }
    return 0;
}

static void list_accounts(av_http *h, struct evhttp_request *req, const char *query)
{
    struct evkeyvalq params;
    TAILQ_INIT(&params);
    if (query && evhttp_parse_query_str(query, &params) != 0) {
        evhttp_clear_headers(&params);
        reply_error(req, 400, "bad_request", "malformed query string");
        return;
    }
    av_query q = {.page = 1, .per_page = DEFAULT_PER_PAGE};
    const char *s;
    const char *bad = NULL;
    if ((s = evhttp_find_header(&params, "page")) &&
        (!parse_number(s, &q.page) || q.page < 1 || q.page > MAX_PAGE)) {
        bad = "page must be an integer from 1 to 1000000000";
    } else if ((s = evhttp_find_header(&params, "per_page")) &&
               (!parse_number(s, &q.per_page) || q.per_page < 1 || q.per_page > MAX_PER_PAGE)) {
        bad = "per_page must be an integer from 1 to 1000";
    } else if ((s = evhttp_find_header(&params, "min_balance"))) {
        uint64_t v;
        if (!parse_number(s, &v)) {
            bad = "min_balance must be a non-negative integer";
        } else {
            q.has_min_balance = true;
            q.min_balance = (int64_t)v;
        }
    }
    if (bad) {
        evhttp_clear_headers(&params);
        reply_error(req, 400, "bad_request", bad);
        return;
    }
    q.owner = evhttp_find_header(&params, "owner");

    MDB_txn *txn;
    es_err err = read_begin(h, &txn);
    if (err != ES_OK) {
        evhttp_clear_headers(&params);
        reply_store_error(req, err);
        return;
    }
    list_ctx lc = {.array = json_array()};
    uint64_t total = 0;
    err = lc.array ? av_list(h->model, txn, &q, add_account, &lc, &total) : ES_ERR_NO_MEMORY;
    mdb_txn_abort(txn);
    evhttp_clear_headers(&params);
    if (err == ES_OK && lc.failed) {
        err = ES_ERR_NO_MEMORY;
    }
    if (err != ES_OK) {
        json_decref(lc.array);
        reply_store_error(req, err);
        return;
    }
    json_t *body =
        json_pack("{s:o, s:I, s:I, s:I}", "accounts", lc.array, "page", (json_int_t)q.page,
                  "per_page", (json_int_t)q.per_page, "total", (json_int_t)total);
    reply_json(req, 200, "OK", body);
}

static void get_stats(av_http *h, struct evhttp_request *req)
{
    MDB_txn *txn;
    es_err err = read_begin(h, &txn);
    if (err != ES_OK) {
        reply_store_error(req, err);
        return;
    }
    /* Totals and checkpoint from one snapshot: they always agree. */
    av_totals t;
    uint64_t checkpoint = 0;
    err = av_totals_get(h->model, txn, &t);
    if (err == ES_OK) {
        err = es_projector_checkpoint_txn(h->proj, txn, &checkpoint, NULL);
    }
    mdb_txn_abort(txn);
    if (err != ES_OK) {
        reply_store_error(req, err);
        return;
    }
    es_projector_status st;
    es_projector_status_get(h->proj, &st);
    /* The status is read after the snapshot, so its checkpoint may be newer
     * by a batch or two: count those as lag of this reply. */
    uint64_t lag = st.lag + (st.checkpoint > checkpoint ? st.checkpoint - checkpoint : 0);
    json_t *body = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:I, s:I}", "checkpoint",
        (json_int_t)checkpoint, "head", (json_int_t)st.head, "lag", (json_int_t)lag, "accounts",
        (json_int_t)t.accounts, "total_balance", (json_int_t)t.total_balance, "events",
        (json_int_t)t.events, "skipped_events", (json_int_t)t.skipped, "caught_up", st.caught_up,
        "connected", st.connected, "batches", (json_int_t)st.batches_committed, "failed_batches",
        (json_int_t)st.batches_failed, "rebuilds", (json_int_t)st.rebuilds);
    if (body) {
        json_object_set_new(body, "error",
                            st.last_error == ES_OK
                                ? json_null()
                                : string_or_null(st.last_error_msg, strlen(st.last_error_msg)));
    }
    reply_json(req, 200, "OK", body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    av_http *h = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        reply_error(req, 405, "method_not_allowed", "only GET is served");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!path || !*path) {
        path = "/";
    }
    static const char accounts_slash[] = "/accounts/";
    if (!strcmp(path, "/stats")) {
        get_stats(h, req);
    } else if (!strcmp(path, "/accounts")) {
        list_accounts(h, req, query);
    } else if (!strncmp(path, accounts_slash, sizeof accounts_slash - 1)) {
        get_account(h, req, path + sizeof accounts_slash - 1);
    } else {
        reply_error(req, 404, "not_found", "no such path (try /accounts, /accounts/ID, /stats)");
    }
}

/* -------------------------------------------------------------- server -- */

es_err av_http_start(struct event_base *base, const char *host, uint16_t port, es_projector *p,
                     const av_model *m, av_http **out, uint16_t *bound_port, char *errmsg,
                     size_t errmsg_len)
{
    av_http *h = calloc(1, sizeof *h);
    if (!h) {
        return ES_ERR_NO_MEMORY;
    }
    h->proj = p;
    h->model = m;
    if (!(h->http = evhttp_new(base))) {
        free(h);
        return ES_ERR_NO_MEMORY;
    }
    /* Every method reaches on_request, which answers 405 in JSON. */
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(h->http, 16 * 1024);
    evhttp_set_max_body_size(h->http, 64 * 1024);
    evhttp_set_timeout(h->http, 30);
    evhttp_set_gencb(h->http, on_request, h);
    errno = 0;
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(h->http, host, port);
    if (!bs) {
        snprintf(errmsg, errmsg_len, "cannot listen on %s:%u: %s", host, (unsigned)port,
                 errno ? strerror(errno) : "bind failed");
        evhttp_free(h->http);
        free(h);
        return ES_ERR_CONNECTION;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *bound_port = port;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    *out = h;
    return ES_OK;
}

void av_http_free(av_http *h)
{
    if (!h) {
        return;
    }
    evhttp_free(h->http);
    free(h);
}

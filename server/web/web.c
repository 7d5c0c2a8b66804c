#include "web.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "auth.h"
#include "auth_limiter.h"
#include "validate.h"
#include "web_assets.h"
#include "webapi.h"
#include "webgroups.h"
#include "websess.h"
#include "writer.h"

#define COOKIE_NAME "esd_session"

typedef struct tail tail;
typedef struct webconn webconn;
typedef struct qreq qreq;
typedef struct webjob webjob;
typedef struct gcall gcall;

/* A connection, from its first request until libevent closes it. */
struct webconn {
    web *w;
    webconn *prev, *next;
    struct evhttp_connection *evcon;
    tail *tail; /* the live tail it carries, if any */
};

/* A request waiting for its turn (see "Slices" in web.h). */
struct qreq {
    qreq *next;
    webconn *wc;
    struct evhttp_request *req;
};

/* A lifecycle change in the writer's hands. */
struct webjob {
    write_job job;
    web *w;
    webjob *prev, *next;
    webconn *wc; /* NULL once the connection went: nobody to answer */
    struct evhttp_request *req;
    char user[AUTH_NAME_MAX + 1];
    uint8_t stream[ES_MAX_NAME_BYTES];
};

/* A consumer-group change (delete) waiting for its commit (webgroups.h). */
struct gcall {
    web *w;
    gcall *next;
    webgroups_call *call;
    webconn *wc; /* NULL once answered */
    struct evhttp_request *req;
    webgroups_op op;
    char user[AUTH_NAME_MAX + 1];
    char group[AUTH_NAME_MAX + 1]; /* for the log line, made safe */
};

struct tail {
    web *w;
    tail *next;
    webconn *wc;
    uint64_t tick; /* the last tick it was pumped in */
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    websess *sess; /* NULL without authentication */
    uint32_t sess_gen;
    uint64_t next_pos;
    store_filter filter;
    char name[ES_MAX_NAME_BYTES + 1]; /* the filter's value */
    uint64_t last_write_ms;
};

struct web {
    server_ctx *srv;
    struct event_base *base;
    struct evhttp *http;
    SSL_CTX *tls;
    struct event *tick;
    websess_table sessions;
    webapi_series series;
    uint64_t last_sample_ms;
    tail *tails;
    size_t n_tails;
    webconn *conns;
    size_t n_conns;
    uint64_t conns_refused;
    qreq *q_head, *q_tail;
    size_t q_len;
    webjob *jobs;
    gcall *gcalls;          /* group changes waiting for their answer */
    gcall *gcalls_done;     /* answered: freed at the next tick */
    struct event *work;     /* a zero timer: the next slice */
    uint64_t tick_no;       /* tails are pumped once per tick */
    uint64_t next_slice_us; /* no slice before (monotonic): the loop's rest */
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t mono_ms(void)
{
    return mono_us() / 1000u;
}

/* A peer-supplied name made safe for a log line. */
static void safe_name(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; in && *in && o + 1 < cap && o < AUTH_NAME_MAX; in++) {
        char c = *in;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == '-';
        out[o++] = ok ? c : '?';
    }
    out[o] = '\0';
}

/* --------------------------------------------------------------- replies -- */

static void common_headers(web *w, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                      "connect-src 'self'; base-uri 'none'; form-action 'self'; "
                      "frame-ancestors 'none'");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    if (w->tls) {
        evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
    }
}

static void send_body(web *w, struct evhttp_request *req, int code, const char *ctype,
                      const void *body, size_t len, const char *cache)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(b, body, len);
    common_headers(w, req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", cache);
    evhttp_send_reply(req, code, NULL, b);
    evbuffer_free(b);
}

/* Send a JSON body (taking the reference). */
static void send_json(web *w, struct evhttp_request *req, int code, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    send_body(w, req, code, "application/json; charset=utf-8", text, strlen(text), "no-store");
    free(text);
}

static void send_error(web *w, struct evhttp_request *req, int code, const char *msg)
{
    send_json(w, req, code, webapi_error(msg));
}

/* ------------------------------------------------------------- sessions -- */

/* The value of the session cookie in the request, copied into out. */
static bool cookie_value(struct evhttp_request *req, char *out, size_t cap)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Cookie");
    const size_t nl = strlen(COOKIE_NAME);
    while (h && *h) {
        while (*h == ' ' || *h == ';') {
            h++;
        }
        const char *end = strchr(h, ';');
        size_t len = end ? (size_t)(end - h) : strlen(h);
        if (len > nl && !strncmp(h, COOKIE_NAME, nl) && h[nl] == '=') {
            size_t vl = len - nl - 1;
            if (vl >= cap) {
                return false;
            }
            memcpy(out, h + nl + 1, vl);
            out[vl] = '\0';
            return true;
        }
        h = end;
    }
    return false;
}

static websess *session_of(web *w, struct evhttp_request *req)
{
    char v[WEBSESS_ID_HEX + 2];
    if (!cookie_value(req, v, sizeof v)) {
        return NULL;
    }
    websess *s = websess_find(&w->sessions, v, mono_ms());
    OPENSSL_cleanse(v, sizeof v);
    return s;
}

static void set_cookie(web *w, struct evhttp_request *req, const char *value)
{
    char c[256];
    snprintf(c, sizeof c, "%s=%s; Path=/; HttpOnly; SameSite=Strict%s%s", COOKIE_NAME, value,
             w->tls ? "; Secure" : "", *value ? "" : "; Max-Age=0");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Set-Cookie", c);
    OPENSSL_cleanse(c, sizeof c);
}

static json_t *session_json(web *w, const websess *s)
{
    return json_pack("{s:s,s:s,s:s,s:b,s:b,s:i,s:b,s:b}", "user", s->user, "role",
                     auth_role_name(s->role), "csrf", s->csrf, "auth", w->srv->auth != NULL, "tls",
                     w->tls != NULL, "idle_timeout_s", (int)(WEBSESS_IDLE_MS / 1000), "admin",
                     s->role >= AUTH_ROLE_ADMIN, "write", s->role >= AUTH_ROLE_WRITE);
}

/* -------------------------------------------------------------- queries -- */

static const char *query_param(void *ctx, const char *name)
{
    return evhttp_find_header((struct evkeyvalq *)ctx, name);
}

/* The request body as a JSON object (NULL when it is not one). */
static json_t *body_json(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0 || len > WEB_MAX_BODY) {
        return NULL;
    }
    char buf[WEB_MAX_BODY];
    evbuffer_copyout(in, buf, len);
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    OPENSSL_cleanse(buf, sizeof buf);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* POST rules before anything is read: JSON content type, same origin. */
static bool post_allowed(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(h, "Content-Type");
    if (!ct || strncmp(ct, "application/json", 16) != 0) {
        return false;
    }
    const char *origin = evhttp_find_header(h, "Origin");
    const char *host = evhttp_find_header(h, "Host");
    if (origin) {
        const char *p = strstr(origin, "://");
        if (!host || !p || strcmp(p + 3, host) != 0) {
            return false;
        }
    }
    return true;
}

static bool csrf_ok(struct evhttp_request *req, const websess *s)
{
    const char *t = evhttp_find_header(evhttp_request_get_input_headers(req), "X-CSRF-Token");
    return t && strlen(t) == WEBSESS_ID_HEX && CRYPTO_memcmp(t, s->csrf, WEBSESS_ID_HEX) == 0;
}

/*
 * Without an auth file the API answers anyone who reaches the loopback
 * port. A page of another site that gets its host name to resolve to
 * 127.0.0.1 (DNS rebinding) would be same-origin with the console in the
 * browser's eyes; its requests still carry its own host name in Host. So
 * without authentication only a loopback Host (an IP literal or
 * "localhost", with any port) is served. With authentication the session
 * cookie, bound to the console's own host name, is what protects it.
 */
static bool host_is_loopback(struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    if (!h) {
        return false;
    }
    char host[128];
    size_t n = strlen(h);
    if (n >= sizeof host) {
        return false;
    }
    memcpy(host, h, n + 1);
    char *port = host[0] == '[' ? strstr(host, "]:") : strrchr(host, ':');
    if (port) {
        port[host[0] == '[' ? 1 : 0] = '\0';
    }
    if (!strcmp(host, "localhost") || !strcmp(host, "[::1]")) {
        return true;
    }
    unsigned a, b, c, d;
    char extra;
    return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256;
}

static void peer_of(struct evhttp_request *req, char *out, size_t cap)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &port);
    snprintf(out, cap, "%s", addr ? addr : "?");
}

/* ---------------------------------------------------------------- login -- */

static void do_login(web *w, struct evhttp_request *req)
{
    server_ctx *srv = w->srv;
    if (!srv->auth) {
        send_error(w, req, 400, "this server has no --auth-file: no login is needed");
        return;
    }
    char peer[64];
    peer_of(req, peer, sizeof peer);
    uint64_t now = mono_ms();
    json_t *body = body_json(req);
    const char *user = body ? json_string_value(json_object_get(body, "user")) : NULL;
    json_t *tok = body ? json_object_get(body, "token") : NULL;
    const char *token = json_string_value(tok);
    size_t token_len = json_string_length(tok);
    if (!user || !token || strlen(user) > AUTH_NAME_MAX || token_len > AUTH_TOKEN_MAX) {
        if (token) {
            OPENSSL_cleanse((char *)token, token_len);
        }
        json_decref(body);
        send_error(w, req, 400, "send {\"user\": NAME, \"token\": TOKEN}");
        return;
    }
    /* The same limiter as the Hello: refused unchecked once a budget is spent
     * (unless this user logged in from this address before). */
    if (srv->limiter) {
        auth_verdict v =
            auth_limiter_admit(srv->limiter, peer, (const uint8_t *)user, strlen(user), now);
        if (v != AUTH_CHECK && v != AUTH_CHECK_TRUSTED) {
            OPENSSL_cleanse((char *)token, token_len);
            json_decref(body);
            srv->counters.auth_failures++;
            log_msg(LOG_WARN, "web login refused: too many failed logins", "peer=%s limit=%s", peer,
                    auth_verdict_name(v));
            send_error(w, req, 429, "too many failed logins; try again later");
            return;
        }
    }
    auth_role role = AUTH_ROLE_NONE;
    char name[AUTH_NAME_MAX + 1];
    bool ok = auth_check(srv->auth, (const uint8_t *)user, strlen(user), (const uint8_t *)token,
                         token_len, &role, name);
    OPENSSL_cleanse((char *)token, token_len);
    char who[AUTH_NAME_MAX + 8];
    safe_name(user, who, sizeof who);
    if (srv->limiter) {
        if (ok) {
            auth_limiter_succeed(srv->limiter, peer, name, now);
        } else {
            (void)auth_limiter_fail(srv->limiter, peer, (const uint8_t *)user, strlen(user), now);
        }
    }
    json_decref(body);
    if (!ok) {
        srv->counters.auth_failures++;
        log_msg(LOG_WARN, "web login failed", "peer=%s user=\"%s\"", peer, who);
        send_error(w, req, 401, "unknown user or wrong token");
        return;
    }
    websess *old = session_of(w, req);
    if (old) {
        websess_end(old);
    }
    char cookie[WEBSESS_ID_HEX + 1];
    websess *s = NULL;
    if (websess_open(&w->sessions, name, role, now, cookie, &s) != ES_OK) {
        send_error(w, req, 500, "no randomness for a session id");
        return;
    }
    set_cookie(w, req, cookie);
    OPENSSL_cleanse(cookie, sizeof cookie);
    log_msg(LOG_INFO, "web login", "peer=%s user=%s role=%s", peer, name, auth_role_name(role));
    send_json(w, req, 200, session_json(w, s));
}

/* ------------------------------------------------------------ admin -- */

static void do_sessions_list(web *w, struct evhttp_request *req, const websess *me)
{
    uint64_t now = mono_ms();
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < WEBSESS_MAX; i++) {
        const websess *s = &w->sessions.slots[i];
        if (!websess_alive(s, now)) {
            continue;
        }
        char handle[32];
        snprintf(handle, sizeof handle, "%zu.%u", i, s->gen);
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I,s:I,s:b}", "handle", handle, "user",
                                             s->user, "role", auth_role_name(s->role), "age_s",
                                             (json_int_t)((now - s->created_ms) / 1000), "idle_s",
                                             (json_int_t)((now - s->last_ms) / 1000), "current",
                                             s == me));
    }
    send_json(w, req, 200, json_pack("{s:o}", "sessions", arr));
}

static void do_sessions_end(web *w, struct evhttp_request *req, const websess *me)
{
    json_t *body = body_json(req);
    const char *handle = body ? json_string_value(json_object_get(body, "handle")) : NULL;
    unsigned long slot = 0, gen = 0;
    char extra;
    if (!handle || sscanf(handle, "%lu.%lu%c", &slot, &gen, &extra) != 2) {
        json_decref(body);
        send_error(w, req, 400, "send {\"handle\": \"SLOT.GENERATION\"} from GET /api/sessions");
        return;
    }
    json_decref(body);
    if (!websess_end_slot(&w->sessions, slot, (uint32_t)gen, mono_ms())) {
        send_error(w, req, 404, "no such session (it may have ended already)");
        return;
    }
    log_msg(LOG_INFO, "web session ended by an admin", "admin=%s slot=%lu", me ? me->user : "",
            slot);
    send_json(w, req, 200, json_pack("{s:b}", "ended", 1));
}

/* ------------------------------------------------------------ lifecycle -- */

/* A non-negative JSON integer member; @return 0, or -1 when it is something
 * else (absent: def, unless required). */
static int body_u64(json_t *body, const char *name, bool required, uint64_t def, uint64_t *out)
{
    json_t *v = json_object_get(body, name);
    if (!v) {
        *out = def;
        return required ? -1 : 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* The writer finished a change (loop thread, net.c's completion hook). */
static void life_done(write_job *job)
{
    webjob *j = job->owner;
    web *w = j->w;
    if (w) {
        if (j->prev) {
            j->prev->next = j->next;
        } else {
            w->jobs = j->next;
        }
        if (j->next) {
            j->next->prev = j->prev;
        }
    }
    const store_life_op *op = &job->life;
    es_err rv = job->life_rv;
    static const char *const names[] = {"delete", "tombstone", "set metadata"};
    const char *what = names[op->kind <= STORE_LIFE_SET_META ? op->kind : 0];
    if (w && rv == ES_OK) {
        log_msg(LOG_INFO, "web stream lifecycle change", "user=%s change=%s revision=%llu", j->user,
                what, (unsigned long long)op->last_revision);
    }
    if (!w || !j->req) {
        free(j); /* the client went, or the console stopped: nobody to answer */
        return;
    }
    struct evhttp_request *req = j->req;
    json_t *out = NULL;
    int code = 200;
    if (rv == ES_OK) {
        out =
            json_pack("{s:s%,s:s,s:I,s:b,s:o}", "stream", (const char *)op->stream, op->stream_len,
                      "change", what, "last_revision", (json_int_t)op->last_revision, "synced",
                      op->synced, "life", webapi_life_json(&op->life, op->last_revision));
    } else if (rv == ES_ERR_WRONG_EXPECTED_REVISION) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s: the %s is at %s%llu now, not at the revision expected",
                 es_strerror(rv), op->kind == STORE_LIFE_SET_META ? "metadata" : "stream",
                 op->actual_exists ? "revision " : "(none; last revision) ",
                 (unsigned long long)op->actual_revision);
        code = 409;
        out = json_pack("{s:s,s:b,s:I}", "error", msg, "actual_exists", op->actual_exists,
                        "actual_revision", (json_int_t)op->actual_revision);
    } else {
        code = rv == ES_ERR_NOT_FOUND        ? 404
               : rv == ES_ERR_STREAM_DELETED ? 410
               : rv == ES_ERR_INVALID_ARGUMENT || rv == ES_ERR_INVALID_STREAM_ID ||
                       rv == ES_ERR_RESERVED_STREAM
                   ? 400
               : rv == ES_ERR_FOLLOWER || rv == ES_ERR_READ_ONLY ? 409
               : rv == ES_ERR_STORE_FULL                         ? 507
                                                                 : 500;
        out = webapi_error(rv == ES_ERR_NOT_FOUND        ? "no such stream"
                           : rv == ES_ERR_STREAM_DELETED ? "the stream is tombstoned"
                                                         : es_strerror(rv));
    }
    free(j);
    send_json(w, req, code, out);
}

/*
 * POST /api/stream/delete, /api/stream/tombstone: {"stream": ID,
 * "expected_revision": N}; POST /api/stream/metadata: {"stream": ID,
 * "expected_metadata_revision": N or null (none set yet), "truncate_before",
 * "max_count", "max_age_s" (absent: 0, no limit)}. The expectation is
 * always explicit: the page sends what it showed, so a change made by
 * someone else in between is refused (409) rather than overwritten.
 * Checked here, done by the writer (store_life_apply), answered by
 * life_done.
 */
static void do_life(web *w, webconn *wc, struct evhttp_request *req, const websess *s,
                    const char *op_name)
{
    store_life_op op;
    memset(&op, 0, sizeof op);
    if (!strcmp(op_name, "delete")) {
        op.kind = STORE_LIFE_DELETE;
    } else if (!strcmp(op_name, "tombstone")) {
        op.kind = STORE_LIFE_TOMBSTONE;
    } else {
        op.kind = STORE_LIFE_SET_META;
    }
    json_t *body = body_json(req);
    json_t *jstream = body ? json_object_get(body, "stream") : NULL;
    const char *stream = json_string_value(jstream);
    size_t stream_len = json_string_length(jstream);
    const char *why = NULL;
    if (!stream || es_validate_stream_id((const uint8_t *)stream, stream_len, true) != ES_OK) {
        why = "stream: a stream id is needed";
    } else if (stream[0] == '$') {
        why = "streams starting with '$' belong to the store: they have no lifecycle";
    } else if (op.kind != STORE_LIFE_SET_META) {
        op.expect = STORE_EXPECT_EXACT;
        if (body_u64(body, "expected_revision", true, 0, &op.revision) != 0) {
            why = "expected_revision: the stream's last revision, as the page showed it";
        }
    } else {
        json_t *e = json_object_get(body, "expected_metadata_revision");
        op.expect = json_is_null(e) ? STORE_EXPECT_NO_STREAM : STORE_EXPECT_EXACT;
        if (!e || (!json_is_null(e) &&
                   body_u64(body, "expected_metadata_revision", true, 0, &op.revision) != 0)) {
            why = "expected_metadata_revision: the metadata revision shown, or null when none "
                  "was set";
        } else if (body_u64(body, "truncate_before", false, 0, &op.truncate_before) != 0 ||
                   body_u64(body, "max_count", false, 0, &op.max_count) != 0 ||
                   body_u64(body, "max_age_s", false, 0, &op.max_age_s) != 0) {
            why = "truncate_before, max_count and max_age_s are numbers from 0 (0: no limit)";
        } else if (op.max_age_s > STORE_MAX_AGE_S) {
            why = "max_age_s above 100 years";
        }
    }
    if (why) {
        json_decref(body);
        send_error(w, req, 400, why);
        return;
    }
    webjob *j = calloc(1, sizeof *j);
    if (!j) {
        json_decref(body);
        send_error(w, req, 500, "out of memory");
        return;
    }
    memcpy(j->stream, stream, stream_len);
    json_decref(body);
    op.stream = j->stream;
    op.stream_len = stream_len;
    j->w = w;
    j->wc = wc;
    j->req = req;
    snprintf(j->user, sizeof j->user, "%s", s ? s->user : "");
    j->job.kind = WRITE_JOB_LIFE;
    j->job.owner = j;
    j->job.complete = life_done;
    j->job.life = op;
    es_err rv = writer_submit(w->srv->w, &j->job);
    if (rv != ES_OK) {
        free(j);
        send_error(w, req, 503, es_strerror(rv));
        return;
    }
    j->next = w->jobs;
    if (w->jobs) {
        w->jobs->prev = j;
    }
    w->jobs = j;
}

/* ------------------------------------------------------ consumer groups -- */

static void drop_req(struct evhttp_request *req);

static void group_log(const gcall *g, int code, json_t *out)
{
    if (code != 200) {
        return;
    }
    if (g->op == WEBGROUPS_DELETE) {
        log_msg(LOG_INFO, "web consumer group change", "user=%s change=delete group=\"%s\"",
                g->user, g->group);
    } else {
        log_msg(LOG_INFO, "web consumer group change",
                "user=%s change=replay-parked group=\"%s\" replayed=%lld", g->user, g->group,
                (long long)json_integer_value(json_object_get(out, "replayed")));
    }
}

/* A pending group change was answered (from groups_complete, after its
 * commit): answer the client, and free the call at the next tick. */
static void group_done(webgroups_call *c, void *owner, int code, json_t *out)
{
    (void)c;
    gcall *g = owner;
    web *w = g->w;
    for (gcall **pp = &w->gcalls; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    g->next = w->gcalls_done;
    w->gcalls_done = g;
    group_log(g, code, out);
    struct evhttp_request *req = g->req;
    g->wc = NULL;
    g->req = NULL;
    send_json(w, req, code, out);
}

/*
 * POST /api/group/delete and /api/group/replay: {"name": GROUP}. Made
 * through groups_request (webgroups.h): a replay is answered at once, a
 * delete once the writer committed it.
 */
static void do_group(web *w, webconn *wc, struct evhttp_request *req, const websess *s,
                     webgroups_op op)
{
    json_t *body = body_json(req);
    json_t *jname = body ? json_object_get(body, "name") : NULL;
    if (!json_is_string(jname)) {
        json_decref(body);
        send_error(w, req, 400, "send {\"name\": GROUP}");
        return;
    }
    gcall *g = calloc(1, sizeof *g);
    if (!g) {
        json_decref(body);
        send_error(w, req, 500, "out of memory");
        return;
    }
    g->w = w;
    g->op = op;
    snprintf(g->user, sizeof g->user, "%s", s ? s->user : "");
    safe_name(json_string_value(jname), g->group, sizeof g->group);
    webgroups_args a = {.op = op,
                        .name = (const uint8_t *)json_string_value(jname),
                        .name_len = json_string_length(jname)};
    webgroups_call *pending = NULL;
    json_t *out = NULL;
    int code = webgroups_start(w->srv, &a, group_done, g, &pending, &out);
    json_decref(body);
    if (!pending) {
        group_log(g, code, out);
        free(g);
        send_json(w, req, code, out);
        return;
    }
    g->call = pending;
    g->wc = wc;
    g->req = req;
    g->next = w->gcalls;
    w->gcalls = g;
}

/* Calls that were answered: their sessions are no longer in any groups
 * reply path now (a tick later). */
static void gcalls_reap(web *w)
{
    while (w->gcalls_done) {
        gcall *g = w->gcalls_done;
        w->gcalls_done = g->next;
        webgroups_free(g->call);
        free(g);
    }
}

/* The client of pending calls went (or the console stops): nobody to answer. */
static void gcalls_abandon(web *w, const webconn *wc)
{
    gcall **pp = &w->gcalls;
    while (*pp) {
        gcall *g = *pp;
        if (wc && g->wc != wc) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        /* made all the same (or refused by the store): said without the outcome */
        log_msg(LOG_INFO, "web consumer group change left unanswered: its client went",
                "user=%s change=%s group=\"%s\"", g->user,
                g->op == WEBGROUPS_DELETE ? "delete" : "replay-parked", g->group);
        drop_req(g->req);
        webgroups_abandon(g->call);
        free(g);
    }
}

/* ----------------------------------------------------------------- tail -- */

static void tail_unlink(tail *t)
{
    web *w = t->w;
    for (tail **p = &w->tails; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            w->n_tails--;
            break;
        }
    }
}

/* We end it (session over, shutdown): the last chunk, and the connection
 * goes back to serving requests (or closes: conn_closed). */
static void tail_end(tail *t)
{
    tail_unlink(t);
    t->wc->tail = NULL;
    struct evhttp_request *req = t->req;
    free(t);
    evhttp_send_reply_end(req);
}

typedef struct tail_ctx {
    struct evbuffer *out;
    uint64_t last;
    bool bad;
} tail_ctx;

static int tail_visit(void *vctx, const store_record *rec)
{
    tail_ctx *c = vctx;
    json_t *j = webapi_event_json(rec->bytes, rec->len, WEBAPI_LIST_DATA_MAX);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        c->bad = true;
        return 1;
    }
    /* JSON_COMPACT output has no raw newline: one data line. */
    evbuffer_add_printf(c->out, "id: %llu\nevent: event\ndata: %s\n\n",
                        (unsigned long long)rec->position, text);
    free(text);
    c->last = rec->position;
    return 0;
}

static void tail_pump(tail *t, uint64_t head, uint64_t now)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(t->evcon);
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > WEB_TAIL_BUFFER) {
        return; /* the client is behind: wait until it drains */
    }
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        return;
    }
    if (head >= t->next_pos) {
        tail_ctx c = {.out = out};
        store_page page = {0};
        const store_filter *f = t->filter.kind == STORE_FILTER_NONE ? NULL : &t->filter;
        es_err rv = store_read_all(t->w->srv->st, f, t->next_pos, false, WEB_TAIL_BATCH, tail_visit,
                                   &c, &page);
        if (rv == ES_OK && !c.bad) {
            if (page.end) {
                uint64_t n = page.head + 1;
                t->next_pos = c.last + 1 > n ? c.last + 1 : n;
            } else if (page.next > t->next_pos) {
                t->next_pos = page.next;
            }
        }
    }
    if (evbuffer_get_length(out) == 0 && now - t->last_write_ms >= WEB_HEARTBEAT_MS) {
        evbuffer_add_printf(out, ": heartbeat\n\n");
    }
    if (evbuffer_get_length(out) > 0) {
        t->last_write_ms = now;
        evhttp_send_reply_chunk(t->req, out); /* t may be gone after it (a TLS write error) */
    }
    evbuffer_free(out);
}

static void do_tail(web *w, webconn *wc, struct evhttp_request *req, websess *s,
                    struct evkeyvalq *q)
{
    if (w->n_tails >= WEB_MAX_TAILS) {
        send_error(w, req, 503, "too many live tails on this server");
        return;
    }
    tail *t = calloc(1, sizeof *t);
    if (!t) {
        send_error(w, req, 500, "out of memory");
        return;
    }
    if (webapi_filter(query_param, q, &t->filter) != 0) {
        free(t);
        send_error(w, req, 400, "give at most one of category, type, prefix, not empty");
        return;
    }
    if (t->filter.kind != STORE_FILTER_NONE) {
        memcpy(t->name, t->filter.name, t->filter.name_len);
        t->name[t->filter.name_len] = '\0';
        t->filter.name = (const uint8_t *)t->name;
    }
    uint64_t head = store_head(w->srv->st);
    const char *from = evhttp_find_header(q, "from");
    t->next_pos = head + 1;
    if (from && *from) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(from, &end, 10);
        if (errno || *end || v == 0) {
            free(t);
            send_error(w, req, 400, "from must be a position from 1");
            return;
        }
        t->next_pos = v <= head ? (uint64_t)v : head + 1;
    }
    t->w = w;
    t->req = req;
    t->evcon = evhttp_request_get_connection(req);
    t->sess = s;
    t->sess_gen = s ? s->gen : 0;
    t->last_write_ms = mono_ms();
    common_headers(w, req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply_start(req, 200, "OK");
    t->wc = wc;
    wc->tail = t;
    t->tick = w->tick_no;
    t->next = w->tails;
    w->tails = t;
    w->n_tails++;
    struct evbuffer *b = evbuffer_new();
    if (b) {
        evbuffer_add_printf(b, "retry: 1000\n: tail from %llu\n\n",
                            (unsigned long long)t->next_pos);
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
    }
}

/* The next slice: at once, or when the rest owed for the last one is over. */
static void schedule_work(web *w)
{
    if (evtimer_pending(w->work, NULL)) {
        return;
    }
    uint64_t now = mono_us();
    uint64_t wait = w->next_slice_us > now ? w->next_slice_us - now : 0;
    struct timeval tv = {(time_t)(wait / 1000000u), (suseconds_t)(wait % 1000000u)};
    evtimer_add(w->work, &tv);
}

/* Every WEB_TICK_MS: a sample a second, tails of ended sessions ended, and
 * every tail due for a pump in the next slices. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    web *w = arg;
    uint64_t now = mono_ms();
    gcalls_reap(w);
    if (now - w->last_sample_ms >= 1000) {
        webapi_series_sample(&w->series, w->srv, now);
        w->last_sample_ms = now;
    }
    tail *t = w->tails;
    while (t) {
        tail *next = t->next;
        bool alive = !w->srv->shutting_down &&
                     (!t->sess || (t->sess->gen == t->sess_gen && websess_alive(t->sess, now)));
        if (!alive) {
            tail_end(t);
        }
        t = next;
    }
    w->tick_no++;
    if (w->tails) {
        schedule_work(w);
    }
}

/* --------------------------------------------------------------- routing -- */

/*
 * Who may call what: the least role for each call, as on the TCP port
 * (handler.c) for the same operation.
 *
 *   call                                             read  write  admin
 *   GET session, overview, streams, stream, log,
 *       event, tail                                   yes   yes    yes
 *   POST logout                                       yes   yes    yes
 *   POST stream/delete, stream/metadata                -    yes    yes
 *   POST stream/tombstone (cannot be undone)           -     -     yes
 *   GET sessions, POST sessions/end                    -     -     yes
 *   GET groups, group, group/parked                   yes   yes    yes
 *   POST group/delete, group/replay                    -     -     yes
 *
 * The group calls follow groups_required_role (groups.c): looking is read,
 * managing (delete, replay parked) is admin.
 */
typedef enum route_kind {
    R_READ,       /* GET, read role */
    R_ADMIN_GET,  /* GET, admin role */
    R_POST_ANY,   /* POST, any session */
    R_POST_WRITE, /* POST, write role */
    R_POST_ADMIN, /* POST, admin role */
} route_kind;

typedef int (*api_fn)(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);

static void api(web *w, webconn *wc, struct evhttp_request *req, const char *path,
                struct evkeyvalq *q)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool post = cmd == EVHTTP_REQ_POST;
    if (!strcmp(path, "/api/login")) {
        if (!post) {
            send_error(w, req, 405, "POST only");
        } else if (!post_allowed(req)) {
            send_error(w, req, 403, "POST needs Content-Type: application/json, same origin");
        } else {
            do_login(w, req);
        }
        return;
    }
    static const struct {
        const char *path;
        route_kind kind;
        api_fn fn;
    } routes[] = {
        {"/api/session", R_READ, NULL},
        {"/api/overview", R_READ, NULL},
        {"/api/streams", R_READ, webapi_streams},
        {"/api/stream", R_READ, webapi_stream},
        {"/api/log", R_READ, webapi_log},
        {"/api/event", R_READ, webapi_event},
        {"/api/tail", R_READ, NULL},
        {"/api/groups", R_READ, webgroups_list},
        {"/api/group", R_READ, webgroups_group},
        {"/api/group/parked", R_READ, webgroups_parked},
        {"/api/sessions", R_ADMIN_GET, NULL},
        {"/api/logout", R_POST_ANY, NULL},
        {"/api/sessions/end", R_POST_ADMIN, NULL},
        {"/api/stream/delete", R_POST_WRITE, NULL},
        {"/api/stream/metadata", R_POST_WRITE, NULL},
        {"/api/stream/tombstone", R_POST_ADMIN, NULL},
        {"/api/group/delete", R_POST_ADMIN, NULL},
        {"/api/group/replay", R_POST_ADMIN, NULL},
    };
    size_t i = 0;
    while (i < sizeof routes / sizeof routes[0] && strcmp(routes[i].path, path) != 0) {
        i++;
    }
    if (i == sizeof routes / sizeof routes[0]) {
        send_error(w, req, 404, "no such API call");
        return;
    }
    route_kind kind = routes[i].kind;
    bool wants_post = kind == R_POST_ANY || kind == R_POST_WRITE || kind == R_POST_ADMIN;
    if (post != wants_post) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          wants_post ? "POST" : "GET, HEAD");
        send_error(w, req, 405, wants_post ? "POST only" : "GET only");
        return;
    }
    server_ctx *srv = w->srv;
    if (!srv->auth && !host_is_loopback(req)) {
        send_error(w, req, 403, "without authentication only a loopback Host is served");
        return;
    }
    websess *s = session_of(w, req);
    if (!s && !strcmp(path, "/api/session") && !srv->auth) {
        char cookie[WEBSESS_ID_HEX + 1];
        if (websess_open(&w->sessions, "", AUTH_ROLE_ADMIN, mono_ms(), cookie, &s) != ES_OK) {
            send_error(w, req, 500, "no randomness for a session id");
            return;
        }
        set_cookie(w, req, cookie);
        OPENSSL_cleanse(cookie, sizeof cookie);
    }
    /* Without an auth file a GET needs no session (every caller is admin). */
    if (!s && (srv->auth || wants_post)) {
        send_error(w, req, 401, "log in first");
        return;
    }
    auth_role role = s ? s->role : AUTH_ROLE_ADMIN;
    if (wants_post) {
        if (!post_allowed(req) || !csrf_ok(req, s)) {
            srv->counters.permission_denied++;
            send_error(w, req, 403,
                       "a change needs Content-Type: application/json, the same origin and the "
                       "session's X-CSRF-Token");
            return;
        }
    }
    auth_role need = (kind == R_ADMIN_GET || kind == R_POST_ADMIN) ? AUTH_ROLE_ADMIN
                     : kind == R_POST_WRITE                        ? AUTH_ROLE_WRITE
                     : kind == R_READ                              ? AUTH_ROLE_READ
                                                                   : AUTH_ROLE_NONE;
    if (role < need) {
        srv->counters.permission_denied++;
        log_msg(LOG_INFO, "web permission denied", "user=%s role=%s call=%s", s ? s->user : "",
                auth_role_name(role), path);
        send_error(w, req, 403, "your role may not make this call");
        return;
    }
    json_t *out = NULL;
    int code = 200;
    if (routes[i].fn) {
        code = routes[i].fn(srv, query_param, q, &out);
    } else if (!strcmp(path, "/api/session")) {
        out = session_json(w, s);
    } else if (!strcmp(path, "/api/overview")) {
        code = webapi_overview(srv, &w->series, &out);
        if (code == 200) {
            json_object_set_new(out, "web_sessions",
                                json_integer((json_int_t)websess_count(&w->sessions, mono_ms())));
            json_object_set_new(out, "web_tails", json_integer((json_int_t)w->n_tails));
            json_object_set_new(out, "web_connections", json_integer((json_int_t)w->n_conns));
            json_object_set_new(out, "web_connections_refused",
                                json_integer((json_int_t)w->conns_refused));
        }
    } else if (!strcmp(path, "/api/tail")) {
        do_tail(w, wc, req, s, q);
        return;
    } else if (!strcmp(path, "/api/group/delete")) {
        do_group(w, wc, req, s, WEBGROUPS_DELETE);
        return;
    } else if (!strcmp(path, "/api/group/replay")) {
        do_group(w, wc, req, s, WEBGROUPS_REPLAY);
        return;
    } else if (!strncmp(path, "/api/stream/", 12)) {
        do_life(w, wc, req, s, path + 12);
        return;
    } else if (!strcmp(path, "/api/sessions")) {
        do_sessions_list(w, req, s);
        return;
    } else if (!strcmp(path, "/api/sessions/end")) {
        do_sessions_end(w, req, s);
        return;
    } else if (!strcmp(path, "/api/logout")) {
        websess_end(s);
        set_cookie(w, req, "");
        out = json_pack("{s:b}", "logged_out", 1);
    }
    send_json(w, req, code, out);
}

static void asset(web *w, struct evhttp_request *req, const char *name)
{
    for (size_t i = 0; i < web_assets_count; i++) {
        if (!strcmp(web_assets[i].name, name)) {
            send_body(w, req, 200, web_assets[i].type, web_assets[i].data, web_assets[i].len,
                      "no-cache");
            return;
        }
    }
    send_error(w, req, 404, "no such file");
}

/* An API request's turn has come. */
static void serve_api(web *w, webconn *wc, struct evhttp_request *req)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    const char *qs = evhttp_uri_get_query(uri);
    if (qs && evhttp_parse_query_str(qs, &q) != 0) {
        send_error(w, req, 400, "bad query string");
        return;
    }
    api(w, wc, req, evhttp_uri_get_path(uri), &q);
    evhttp_clear_headers(&q);
}

/*
 * The connection is going away (the client went, a timeout, an error, a
 * reply with "Connection: close", or web_stop). A request of it that was
 * not answered yet is either freed with the connection or, when libevent
 * detached it (its connection is NULL: the client went while the reply was
 * open or not yet sent), left to us to free.
 */
static void drop_req(struct evhttp_request *req)
{
    if (evhttp_request_get_connection(req) == NULL) {
        evhttp_request_free(req);
    }
}

static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    webconn *wc = arg;
    web *w = wc->w;
    if (wc->tail) {
        tail *t = wc->tail;
        tail_unlink(t);
        drop_req(t->req);
        free(t);
    }
    qreq **p = &w->q_head;
    w->q_tail = NULL;
    while (*p) {
        qreq *q = *p;
        if (q->wc == wc) {
            *p = q->next;
            w->q_len--;
            drop_req(q->req);
            free(q);
        } else {
            w->q_tail = q;
            p = &q->next;
        }
    }
    for (webjob *j = w->jobs; j; j = j->next) {
        if (j->wc == wc) {
            drop_req(j->req);
            j->wc = NULL;
            j->req = NULL;
        }
    }
    gcalls_abandon(w, wc);
    if (wc->prev) {
        wc->prev->next = wc->next;
    } else {
        w->conns = wc->next;
    }
    if (wc->next) {
        wc->next->prev = wc->prev;
    }
    w->n_conns--;
    free(wc);
}

/* The connection of a request: known, newly counted, or NULL when the
 * console has its cap of connections (or no memory for one more). */
static webconn *conn_of(web *w, struct evhttp_connection *evcon)
{
    for (webconn *wc = w->conns; wc; wc = wc->next) {
        if (wc->evcon == evcon) {
            return wc;
        }
    }
    if (w->n_conns >= w->srv->cfg->http_max_conns) {
        return NULL;
    }
    webconn *wc = calloc(1, sizeof *wc);
    if (!wc) {
        return NULL;
    }
    wc->w = w;
    wc->evcon = evcon;
    wc->next = w->conns;
    if (w->conns) {
        w->conns->prev = wc;
    }
    w->conns = wc;
    w->n_conns++;
    evhttp_connection_set_closecb(evcon, conn_closed, wc);
    return wc;
}

/*
 * One slice of the console's work, on a timer: the tails due in this tick,
 * then queued requests, until WEB_SLICE_US have gone (at least one request
 * per slice). What is left waits for a later loop turn, after libevent has
 * looked at every socket again and after a rest of WEB_REST_RATIO times the
 * slice (design notes in web.h).
 */
static void work_cb(evutil_socket_t fd, short what, void *arg)
{
    web *w = arg;
    uint64_t t0 = mono_us();
    uint64_t head = store_head(w->srv->st);
    bool more = false;
    tail *next;
    for (tail *t = w->tails; t; t = next) {
        next = t->next; /* a failed write may end t's connection, and t */
        if (t->tick == w->tick_no) {
            continue;
        }
        if (mono_us() - t0 >= WEB_SLICE_US) {
            more = true;
            break;
        }
        t->tick = w->tick_no;
        tail_pump(t, head, t0 / 1000u);
    }
    while (w->q_head && !more) {
        qreq *q = w->q_head;
        w->q_head = q->next;
        if (!w->q_head) {
            w->q_tail = NULL;
        }
        w->q_len--;
        serve_api(w, q->wc, q->req);
        free(q);
        more = mono_us() - t0 >= WEB_SLICE_US;
    }
    uint64_t t1 = mono_us();
    w->next_slice_us = t1 + (t1 - t0) * WEB_REST_RATIO;
    if (w->q_head || more) {
        schedule_work(w);
    }
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    web *w = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    webconn *wc = conn_of(w, evhttp_request_get_connection(req));
    if (!wc) {
        w->conns_refused++;
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        send_error(w, req, 503, "too many connections to the web console; try again later");
        return;
    }
    if (!path) {
        send_error(w, req, 400, "bad request");
        return;
    }
    if (!strncmp(path, "/api/", 5)) {
        qreq *q = calloc(1, sizeof *q);
        if (!q || w->q_len >= WEB_MAX_QUEUE) {
            free(q);
            send_error(w, req, 503, "the web console is busy; try again later");
            return;
        }
        q->wc = wc;
        q->req = req;
        if (w->q_tail) {
            w->q_tail->next = q;
        } else {
            w->q_head = q;
        }
        w->q_tail = q;
        w->q_len++;
        schedule_work(w);
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        send_error(w, req, 405, "GET only");
        return;
    }
    if (!strcmp(path, "/healthz")) {
        send_body(w, req, 200, "text/plain; charset=utf-8", "ok\n", 3, "no-store");
    } else if (!strcmp(path, "/readyz")) {
        const char *body;
        int status = server_readiness(w->srv, &body);
        send_body(w, req, status, "text/plain; charset=utf-8", body, strlen(body), "no-store");
    } else if (!strcmp(path, "/")) {
        asset(w, req, "index.html");
    } else if (!strncmp(path, "/assets/", 8)) {
        /* names are looked up in the embedded table, never on disk */
        asset(w, req, path + 8);
    } else {
        send_error(w, req, 404, "no such page");
    }
}

/* ---------------------------------------------------------------- start -- */

static struct bufferevent *tls_bev_cb(struct event_base *base, void *arg)
{
    web *w = arg;
    SSL *ssl = SSL_new(w->tls);
    if (!ssl) {
        return NULL;
    }
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static bool loopback_host(const char *host)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        return false;
    }
    bool all = true;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            uint32_t v = ntohl(((const struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr);
            all = all && (v >> 24) == 127;
        } else if (a->ai_family == AF_INET6) {
            all =
                all && IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
        } else {
            all = false;
        }
    }
    freeaddrinfo(res);
    return all;
}

es_err web_start(struct event_base *base, server_ctx *srv, SSL_CTX *tls, web **out, char *msg,
                 size_t msg_len)
{
    *out = NULL;
    const char *spec = srv->cfg->http_listen;
    const char *colon = strrchr(spec, ':');
    char host[256];
    char *end = NULL;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    size_t hl = colon ? (size_t)(colon - spec) : 0;
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (!colon || hl == 0 || hl >= sizeof host || !end || *end || colon[1] == '\0' ||
        port > 65535) {
        snprintf(msg, msg_len, "bad http-listen address '%s' (expected HOST:PORT)",
                 srv->cfg->http_listen);
        return ES_ERR_INVALID_ARGUMENT;
    }
    memcpy(host, spec, hl);
    host[hl] = '\0';
    if (!srv->auth && !srv->cfg->insecure && !loopback_host(host)) {
        snprintf(msg, msg_len,
                 "refusing to serve the web console on %s without authentication: give "
                 "--auth-file FILE, or --insecure to let anyone who can reach it read everything",
                 srv->cfg->http_listen);
        return ES_ERR_INVALID_ARGUMENT;
    }
    web *w = calloc(1, sizeof *w);
    if (!w) {
        return ES_ERR_NO_MEMORY;
    }
    w->srv = srv;
    w->base = base;
    w->tls = tls;
    websess_init(&w->sessions);
    w->http = evhttp_new(base);
    w->tick = event_new(base, -1, EV_PERSIST, tick_cb, w);
    w->work = evtimer_new(base, work_cb, w);
    if (!w->http || !w->tick || !w->work) {
        web_stop(w);
        return ES_ERR_NO_MEMORY;
    }
    evhttp_set_timeout(w->http, WEB_TIMEOUT_S);
    evhttp_set_max_headers_size(w->http, WEB_MAX_HEADERS);
    evhttp_set_max_body_size(w->http, WEB_MAX_BODY);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_gencb(w->http, request_cb, w);
    if (tls) {
        evhttp_set_bevcb(w->http, tls_bev_cb, w);
    }
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(w->http, host, (uint16_t)port);
    if (!bs) {
        snprintf(msg, msg_len, "cannot listen on %s (web console): %s", srv->cfg->http_listen,
                 strerror(errno));
        web_stop(w);
        return ES_ERR_IO;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int bound_port = 0;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&bound, &blen) == 0) {
        bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                       : ((struct sockaddr_in *)&bound)->sin_port);
    }
    struct timeval tv = {0, WEB_TICK_MS * 1000};
    event_add(w->tick, &tv);
    w->last_sample_ms = mono_ms();
    webapi_series_sample(&w->series, srv, w->last_sample_ms);
    log_msg(LOG_INFO, "web console listening", "addr=%s:%d tls=%s auth=%s", host, bound_port,
            tls ? "on" : "off", srv->auth ? "on" : "off");
    *out = w;
    return ES_OK;
}

void web_stop(web *w)
{
    if (!w) {
        return;
    }
    while (w->tails) {
        tail_end(w->tails);
    }
    if (w->tick) {
        event_free(w->tick);
    }
    if (w->http) {
        evhttp_free(w->http); /* every connection: conn_closed frees its records */
    }
    if (w->work) {
        event_free(w->work);
    }
    for (webjob *j = w->jobs; j; j = j->next) {
        j->w = NULL; /* life_done frees it without answering */
    }
    gcalls_abandon(w, NULL); /* each connection's went with it: none, normally */
    gcalls_reap(w);
    websess_finish(&w->sessions);
    free(w);
}

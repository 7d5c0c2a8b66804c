/*
 * Metrics under load: esd --metrics-listen serves Prometheus text
 * while 4 writers append (some with wrong expectations), a reader reads
 * and a subscription is open; the test scrapes /metrics repeatedly during
 * the load and parses every scrape strictly:
 *
 *  - every line is a `# HELP`, a `# TYPE` or a sample `name{labels} value`
 *    with a valid metric name, well-formed labels and a number;
 *  - every sample belongs to a family declared before it, once;
 *  - histograms: buckets cumulative and non-decreasing in `le`, the +Inf
 *    bucket equal to _count;
 *  - counters never go down from one scrape to the next;
 *  - after the load: appends by result match what the clients saw
 *    (ok and WRONG_EXPECTED_REVISION), events and bytes add up, the
 *    commit batch histogram counts every commit, the append latency
 *    histogram counts every append, head position and subscriptions match;
 *  - /healthz and /readyz answer 200; other paths 404, POST refused.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "es/client.h"
#include "rel.h"
#include "support.h"

#define WRITERS     4
#define EVENT_BYTES 100

/* ------------------------------------------------------------- HTTP GET -- */

/* One request; the status in *status, the body (malloc'ed) returned. A
 * chunked reply fails (evhttp sends Content-Length for complete replies). */
static char *http(uint16_t port, const char *method, const char *path, int *status)
{
    char *body = NULL;
    REL_CHECK(h_http(port, method, path, status, &body) == 0,
              "%s %s on port %u: no complete, unchunked HTTP answer", method, path, (unsigned)port);
    return body;
}

/* ------------------------------------------------------------ the parser -- */

#define MAX_SAMPLES  4096
#define MAX_FAMILIES 256

typedef struct sample {
    char key[256]; /* name{labels} as written */
    char name[128];
    char le[128];   /* the le label of a bucket, "" otherwise */
    char rest[224]; /* the other labels, for grouping buckets */
    double value;
} sample;

typedef struct family {
    char name[128];
    char type[16];
    bool help;
} family;

typedef struct scrape {
    sample s[MAX_SAMPLES];
    size_t n;
    family f[MAX_FAMILIES];
    size_t nf;
} scrape;

static bool name_ok(const char *s, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

static family *find_family(scrape *sc, const char *name)
{
    for (size_t i = 0; i < sc->nf; i++) {
        if (!strcmp(sc->f[i].name, name)) {
            return &sc->f[i];
        }
    }
    return NULL;
}

/* The family a sample name belongs to (histograms: _bucket/_sum/_count). */
static family *family_of(scrape *sc, const char *name)
{
    family *f = find_family(sc, name);
    if (f) {
        return f;
    }
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t nl = strlen(name), sl = strlen(suffixes[i]);
        if (nl > sl && !strcmp(name + nl - sl, suffixes[i])) {
            char base[128];
            snprintf(base, sizeof base, "%.*s", (int)(nl - sl), name);
            f = find_family(sc, base);
            if (f && !strcmp(f->type, "histogram")) {
                return f;
            }
        }
    }
    return NULL;
}

/* Parse `{a="x",b="y"}` at p; le separated out. @return the end or NULL. */
static const char *parse_labels(const char *p, sample *s)
{
    size_t rl = 0;
    p++; /* { */
    while (*p != '}') {
        const char *k = p;
        while (*p && *p != '=') {
            p++;
        }
        if (*p != '=' || !name_ok(k, (size_t)(p - k)) || p[1] != '"') {
            return NULL;
        }
        size_t kl = (size_t)(p - k);
        p += 2;
        char val[128];
        size_t vl = 0;
        while (*p && *p != '"') {
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n') {
                    return NULL;
                }
            }
            if (vl + 1 < sizeof val) {
                val[vl++] = *p;
            }
            p++;
        }
        if (*p != '"') {
            return NULL;
        }
        val[vl] = '\0';
        p++;
        if (kl == 2 && !strncmp(k, "le", 2)) {
            snprintf(s->le, sizeof s->le, "%s", val);
        } else {
            rl += (size_t)snprintf(s->rest + rl, sizeof s->rest - rl, "%.*s=%s;", (int)kl, k, val);
        }
        if (*p == ',') {
            p++;
        } else if (*p != '}') {
            return NULL;
        }
    }
    return p + 1;
}

static void parse_scrape(const char *text, scrape *sc)
{
    memset(sc, 0, sizeof *sc);
    const char *line = text;
    unsigned lineno = 0;
    while (*line) {
        lineno++;
        const char *end = strchr(line, '\n');
        REL_CHECK(end != NULL, "line %u does not end with a newline", lineno);
        size_t len = (size_t)(end - line);
        char l[1024];
        REL_CHECK(len < sizeof l, "line %u too long", lineno);
        memcpy(l, line, len);
        l[len] = '\0';
        line = end + 1;
        if (l[0] == '#') {
            char what[8], name[128];
            int off = 0;
            REL_CHECK(sscanf(l, "# %7s %127s %n", what, name, &off) == 2, "bad comment: %s", l);
            REL_CHECK(name_ok(name, strlen(name)), "bad family name %s", name);
            family *f = find_family(sc, name);
            if (!f) {
                REL_CHECK(sc->nf < MAX_FAMILIES, "too many families");
                f = &sc->f[sc->nf++];
                snprintf(f->name, sizeof f->name, "%s", name);
            }
            if (!strcmp(what, "HELP")) {
                REL_CHECK(!f->help, "two HELP lines for %s", name);
                f->help = true;
            } else if (!strcmp(what, "TYPE")) {
                REL_CHECK(!f->type[0], "two TYPE lines for %s", name);
                const char *t = l + off;
                REL_CHECK(!strcmp(t, "counter") || !strcmp(t, "gauge") || !strcmp(t, "histogram"),
                          "type %s of %s", t, name);
                snprintf(f->type, sizeof f->type, "%s", t);
            } else {
                rel_fail("unknown comment %s", l);
            }
            continue;
        }
        REL_CHECK(len > 0, "empty line %u", lineno);
        REL_CHECK(sc->n < MAX_SAMPLES, "too many samples");
        sample *s = &sc->s[sc->n];
        memset(s, 0, sizeof *s);
        const char *p = l;
        while (*p && *p != '{' && *p != ' ') {
            p++;
        }
        REL_CHECK(name_ok(l, (size_t)(p - l)), "bad sample name in: %s", l);
        snprintf(s->name, sizeof s->name, "%.*s", (int)(p - l), l);
        if (*p == '{') {
            p = parse_labels(p, s);
            REL_CHECK(p != NULL, "bad labels in: %s", l);
        }
        snprintf(s->key, sizeof s->key, "%.*s", (int)(p - l), l);
        REL_CHECK(*p == ' ', "no value in: %s", l);
        char *vend;
        s->value = strtod(p + 1, &vend);
        REL_CHECK(vend != p + 1 && *vend == '\0', "bad value in: %s", l);
        family *f = family_of(sc, s->name);
        REL_CHECK(f && f->type[0] && f->help, "sample %s without HELP and TYPE before it", s->name);
        if (!strcmp(f->type, "counter")) {
            REL_CHECK(s->value >= 0, "negative counter %s", s->key);
        }
        sc->n++;
    }
    REL_CHECK(sc->n > 0, "no samples");
}

static const sample *get(const scrape *sc, const char *key)
{
    for (size_t i = 0; i < sc->n; i++) {
        if (!strcmp(sc->s[i].key, key)) {
            return &sc->s[i];
        }
    }
    return NULL;
}

static double value_of(const scrape *sc, const char *key)
{
    const sample *s = get(sc, key);
    REL_CHECK(s != NULL, "no sample %s", key);
    return s->value;
}

static double value_or0(const scrape *sc, const char *key)
{
    const sample *s = get(sc, key);
    return s ? s->value : 0;
}

/* Every histogram: cumulative buckets, +Inf = _count. */
static void check_histograms(const scrape *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        const sample *b = &sc->s[i];
        size_t nl = strlen(b->name);
        if (nl < 7 || strcmp(b->name + nl - 7, "_bucket") != 0 || strcmp(b->le, "+Inf") != 0) {
            continue;
        }
        /* walk this series' buckets (same name and other labels) */
        double prev = -1, prev_le = -INFINITY;
        for (size_t j = 0; j < sc->n; j++) {
            const sample *x = &sc->s[j];
            if (strcmp(x->name, b->name) != 0 || strcmp(x->rest, b->rest) != 0) {
                continue;
            }
            double le = !strcmp(x->le, "+Inf") ? INFINITY : strtod(x->le, NULL);
            REL_CHECK(le > prev_le, "%s: le not increasing", x->key);
            REL_CHECK(x->value >= prev, "%s: buckets not cumulative", x->key);
            prev = x->value;
            prev_le = le;
        }
        char count_key[256];
        snprintf(count_key, sizeof count_key, "%.*s_count", (int)(nl - 7), b->name);
        /* the _count sample carries the same other labels */
        bool found = false;
        for (size_t j = 0; j < sc->n; j++) {
            const sample *x = &sc->s[j];
            if (!strcmp(x->name, count_key) && !strcmp(x->rest, b->rest)) {
                REL_CHECK(x->value == b->value, "%s: +Inf %g != _count %g", b->key, b->value,
                          x->value);
                found = true;
            }
        }
        REL_CHECK(found, "%s without _count", b->key);
    }
}

/* Counters (and histogram parts) of `later` are >= those of `earlier`. */
static void check_monotonic(const scrape *earlier, const scrape *later)
{
    for (size_t i = 0; i < earlier->n; i++) {
        const sample *a = &earlier->s[i];
        family *f = family_of((scrape *)earlier, a->name);
        if (!f || !strcmp(f->type, "gauge")) {
            continue;
        }
        const sample *b = get(later, a->key);
        REL_CHECK(b != NULL, "%s disappeared", a->key);
        REL_CHECK(b->value >= a->value, "%s went down: %g -> %g", a->key, a->value, b->value);
    }
}

/* ---------------------------------------------------------------- load -- */

typedef struct load {
    const char *address;
    atomic_bool stop;
    atomic_uint_fast64_t ok, conflicts, events, bytes, other;
} load;

typedef struct writer_arg {
    load *l;
    unsigned index;
} writer_arg;

static void *writer_main(void *arg)
{
    writer_arg *w = arg;
    load *l = w->l;
    es_client *c = rel_client(l->address, 10000);
    char stream[32], data[EVENT_BYTES];
    memset(data, 'x', sizeof data);
    unsigned i = 0;
    while (!atomic_load(&l->stop)) {
        snprintf(stream, sizeof stream, "m-%u-%u", w->index, i % 8);
        es_event ev[2] = {{.type = "MetricsTested", .data = data, .data_len = sizeof data},
                          {.type = "MetricsTested", .data = data, .data_len = sizeof data}};
        size_t n = 1 + i % 2;
        /* every 5th append expects the stream not to exist: a conflict
         * once it does */
        es_expected x = {i % 5 == 4 ? ES_EXPECT_NO_STREAM : ES_EXPECT_ANY, 0};
        es_err rv = es_stream_append(c, stream, x, ev, n, NULL);
        if (rv == ES_OK) {
            atomic_fetch_add(&l->ok, 1);
            atomic_fetch_add(&l->events, n);
            atomic_fetch_add(&l->bytes, n * sizeof data);
        } else if (rv == ES_ERR_WRONG_EXPECTED_REVISION) {
            atomic_fetch_add(&l->conflicts, 1);
        } else {
            atomic_fetch_add(&l->other, 1);
        }
        i++;
    }
    es_client_destroy(c);
    return NULL;
}

static void *reader_main(void *arg)
{
    load *l = arg;
    es_client *c = rel_client(l->address, 10000);
    while (!atomic_load(&l->stop)) {
        es_read_iter *it = NULL;
        es_read_options ro = {0};
        if (es_read_all(c, &ro, &it) == ES_OK) {
            const es_recorded_event *ev;
            int k = 0;
            while (k++ < 200 && es_read_next(it, &ev) == ES_OK && ev != NULL) {
            }
            es_read_destroy(it);
        }
        es_client_ping(c, NULL);
    }
    es_client_destroy(c);
    return NULL;
}

static int on_batch(void *ctx, const es_recorded_event *events, size_t n)
{
    (void)ctx;
    (void)events;
    (void)n;
    return 0;
}

int main(int argc, char **argv)
{
    const char *const names[] = {"seconds", NULL};
    uint64_t values[] = {3};
    rel_args(argc, argv, "metrics", names, values);
    esd_proc e;
    REL_CHECK(esd_init(&e, NULL) == 0, "temporary directory");
    e.args[0] = "--metrics-listen";
    e.args[1] = "127.0.0.1:0";
    e.args[2] = "--sync";
    e.args[3] = "none";
    e.args[4] = NULL;
    int st;
    REL_CHECK(esd_start(&e, 10000) == 0, "esd did not start");
    uint16_t mport = esd_metrics_port(&e, 10000);
    REL_CHECK(mport != 0, "no 'metrics listening' line in %s", e.log_file);
    rel_log("esd on %s, metrics on port %u", e.address, mport);

    int code;
    char *body = http(mport, "GET", "/healthz", &code);
    REL_CHECK(code == 200 && !strcmp(body, "ok\n"), "/healthz: %d %s", code, body);
    free(body);
    body = http(mport, "GET", "/readyz", &code);
    REL_CHECK(code == 200, "/readyz: %d", code);
    free(body);
    body = http(mport, "GET", "/nothing", &code);
    REL_CHECK(code == 404, "/nothing: %d", code);
    free(body);
    body = http(mport, "POST", "/metrics", &code);
    REL_CHECK(code == 405 || code == 501, "POST /metrics: %d", code);
    free(body);

    /* a subscription that stays open through the load */
    es_client *subc = rel_client(e.address, 10000);
    es_sub_options so = {.target = ES_SUB_CATEGORY, .name = "m-0", .start = ES_SUB_FROM_START};
    es_subscription *sub = NULL;
    REL_CHECK(es_subscribe(subc, &so, on_batch, NULL, NULL, &sub) == ES_OK, "subscribe: %s",
              es_client_errmsg(subc));

    load l = {.address = e.address};
    pthread_t th[WRITERS + 1];
    writer_arg wa[WRITERS];
    for (unsigned i = 0; i < WRITERS; i++) {
        wa[i] = (writer_arg){&l, i};
        pthread_create(&th[i], NULL, writer_main, &wa[i]);
    }
    pthread_create(&th[WRITERS], NULL, reader_main, &l);

    static scrape a, b;
    scrape *prev = &a, *cur = &b;
    unsigned scrapes = 0;
    int64_t end = h_now_ms() + (int64_t)values[0] * 1000;
    while (h_now_ms() < end || scrapes < 5) {
        body = http(mport, "GET", "/metrics", &code);
        REL_CHECK(code == 200, "/metrics: %d", code);
        parse_scrape(body, cur);
        free(body);
        check_histograms(cur);
        if (scrapes > 0) {
            check_monotonic(prev, cur);
        }
        scrape *t = prev;
        prev = cur;
        cur = t;
        scrapes++;
        es_sub_poll(sub, 0);
        h_sleep_ms(50); /* pacing the scrapes, not synchronising */
    }
    const scrape *during = prev;
    double during_ok = value_of(during, "esd_append_requests_total{result=\"ok\"}");
    atomic_store(&l.stop, true);
    for (unsigned i = 0; i <= WRITERS; i++) {
        pthread_join(th[i], NULL);
    }
    REL_CHECK(atomic_load(&l.other) == 0, "%llu appends failed unexpectedly",
              (unsigned long long)atomic_load(&l.other));
    REL_CHECK(during_ok > 0, "no appends counted during the load");

    /* quiet: the final scrape must match the clients' own counts exactly */
    body = http(mport, "GET", "/metrics", &code);
    parse_scrape(body, cur);
    free(body);
    check_histograms(cur);
    check_monotonic(prev, cur);
    const scrape *fin = cur;
    uint64_t ok = atomic_load(&l.ok), conflicts = atomic_load(&l.conflicts);
    REL_CHECK(value_of(fin, "esd_append_requests_total{result=\"ok\"}") == (double)ok,
              "ok appends: metrics %g, clients %llu",
              value_of(fin, "esd_append_requests_total{result=\"ok\"}"), (unsigned long long)ok);
    REL_CHECK(conflicts > 0, "no conflicts provoked");
    REL_CHECK(value_or0(fin, "esd_append_requests_total{result=\"WRONG_EXPECTED_REVISION\"}") ==
                  (double)conflicts,
              "conflicts: metrics %g, clients %llu",
              value_or0(fin, "esd_append_requests_total{result=\"WRONG_EXPECTED_REVISION\"}"),
              (unsigned long long)conflicts);
    REL_CHECK(value_of(fin, "esd_append_events_total{result=\"ok\"}") ==
                  (double)atomic_load(&l.events),
              "events");
    REL_CHECK(value_of(fin, "esd_append_bytes_total{result=\"ok\"}") ==
                  (double)atomic_load(&l.bytes),
              "bytes");
    REL_CHECK(value_of(fin, "esd_request_duration_seconds_count{kind=\"append\"}") ==
                  (double)(ok + conflicts),
              "append latency count %g, appends %llu",
              value_of(fin, "esd_request_duration_seconds_count{kind=\"append\"}"),
              (unsigned long long)(ok + conflicts));
    REL_CHECK(value_of(fin, "esd_request_duration_seconds_count{kind=\"read_all\"}") > 0,
              "no read_all latency");
    REL_CHECK(value_of(fin, "esd_request_duration_seconds_count{kind=\"subscribe\"}") == 1,
              "subscribe latency");
    double commits = value_of(fin, "esd_commits_total");
    REL_CHECK(commits > 0 && value_of(fin, "esd_commit_batch_requests_count") == commits &&
                  value_of(fin, "esd_commit_duration_seconds_count") == commits &&
                  value_of(fin, "esd_commit_sync_duration_seconds_count") == commits &&
                  value_of(fin, "esd_commit_sync_duration_seconds_sum") <=
                      value_of(fin, "esd_commit_duration_seconds_sum"),
              "commit histograms do not count every commit");
    REL_CHECK(value_of(fin, "esd_commit_batch_requests_sum") == (double)(ok + conflicts),
              "batch sum %g != appends %llu", value_of(fin, "esd_commit_batch_requests_sum"),
              (unsigned long long)(ok + conflicts));
    es_stats stats;
    es_client *c = rel_client(e.address, 10000);
    REL_CHECK(es_stats_get(c, &stats) == ES_OK, "stats");
    es_client_destroy(c);
    REL_CHECK(value_of(fin, "esd_head_position") == (double)stats.head_position, "head %g != %llu",
              value_of(fin, "esd_head_position"), (unsigned long long)stats.head_position);
    REL_CHECK(value_of(fin, "esd_subscriptions") == 1, "subscriptions gauge");
    REL_CHECK(get(fin, "esd_subscription_lag_max_positions") != NULL, "no lag gauge");
    REL_CHECK(value_of(fin, "esd_store_map_used_bytes") > 0 &&
                  value_of(fin, "esd_store_file_bytes") > 0,
              "store size gauges");
    REL_CHECK(value_of(fin, "esd_connections_accepted_total") >= WRITERS + 2, "connections");
    rel_log("%u scrapes parsed during the load; %llu appends, %llu conflicts, %g commits "
            "(mean batch %.2f)",
            scrapes, (unsigned long long)ok, (unsigned long long)conflicts, commits,
            (double)(ok + conflicts) / commits);

    es_sub_destroy(sub);
    es_client_destroy(subc);
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, &st, NULL) == 0, "stop");

    /* a metrics address that is taken: esd refuses to start */
    char taken[32];
    snprintf(taken, sizeof taken, "127.0.0.1:%u", (unsigned)e.port);
    int blocker = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REL_CHECK(bind(blocker, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(blocker, 1) == 0,
              "blocker");
    socklen_t sl = sizeof sa;
    getsockname(blocker, (struct sockaddr *)&sa, &sl);
    snprintf(taken, sizeof taken, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    e.args[1] = taken;
    REL_CHECK(esd_start(&e, 10000) != 0, "esd started with its metrics port taken");
    close(blocker);
    esd_destroy(&e);
    rel_log("PASS");
    return 0;
}

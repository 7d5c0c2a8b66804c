/*
 * esbench — load generator and benchmark for esd, on libesclient.
 *
 *   esbench [-s HOST:PORT] WORKLOAD [options]
 *
 * Without -s it starts its own esd (next to this binary, or --esd PATH) in
 * a temporary directory on a free loopback port, durable unless --sync none,
 * and stops and removes it at the end.
 *
 * Workloads
 *   append       N connections (split over --threads threads, each driving
 *                its share with one append in flight per connection), append
 *                --batch events per request to random streams out of
 *                --streams for --duration seconds (expected any, or exact with
 *                the revision each thread tracks; conflicts are counted and
 *                retried).
 *   read-stream  write one stream of --events events, then replay it.
 *   read-all     write --events events over --streams streams, then read the
 *                whole log.
 *   subscribe    write --events events, then time a subscription from the
 *                start up to its caught-up notification (catch-up events/s),
 *                then follow it live for --duration seconds while
 *                --connections appenders write (live events/s, append ->
 *                delivery latency).
 *   latency      --connections appenders for --duration seconds, one
 *                subscriber from the end: latency = delivery time - send
 *                time of each event, the send time carried in its data.
 *   fanout       --idle-subs subscriptions to categories that receive
 *                nothing (64 per connection) and --matching-subs
 *                subscriptions to the whole log (64 per connection, all
 *                polled by one thread), then the append workload for
 *                --duration seconds; reports append throughput and
 *                latency as append does, plus events delivered to the
 *                matching subscriptions and how long they took to reach
 *                the head after the appenders stopped, and esd's and
 *                esbench's own CPU per delivered event over the whole run
 *                (user and system time). --rate paces the appends (per
 *                second, over all connections). Compare with
 *                --idle-subs 0 for the cost of idle subscriptions.
 *   group        a consumer group of --consumers members (default 4, one
 *                thread and connection each) over the whole log: fill a
 *                backlog of --events events (default 1,000,000, one event
 *                per stream in turn over --streams streams, in
 *                transactions), time the members acknowledging all of it
 *                (batched acks: one per received batch), then append
 *                stamped events at --rate per second (default 1,000) for
 *                --duration seconds and measure append -> delivery to a
 *                member.
 *
 * For the subscription workloads the appenders stamp each event's data with
 * the monotonic time just before the append is sent (a JSON string of
 * --event-size bytes, at least 22: a quote, 20 digits of microseconds,
 * padding, a quote); the subscriber, in the same process and so on the same
 * clock, subtracts it from the time its callback sees the event.
 *
 * Latencies go into a log-linear histogram (1/16 of a power of two
 * resolution, about 6 %); percentiles are read from it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "es/client.h"
#include "es/group.h"
#include "token.h"

/* ------------------------------------------------------------- histogram -- */

#define HIST_SUB     16
#define HIST_BUCKETS (64 * HIST_SUB)

typedef struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count;
} hist;

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    unsigned msb = 63 - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 4; /* keep 4 bits below the msb: 16 sub-buckets */
    unsigned sub = (unsigned)((v >> shift) & (HIST_SUB - 1));
    return (msb - 3) * HIST_SUB + sub;
}

static uint64_t hist_value(unsigned idx)
{
    if (idx < HIST_SUB) {
        return idx;
    }
    unsigned msb = idx / HIST_SUB + 3;
    unsigned sub = idx % HIST_SUB;
    unsigned shift = msb - 4;
    /* the middle of the bucket */
    return ((uint64_t)(HIST_SUB + sub) << shift) + ((1ull << shift) >> 1);
}

static void hist_add(hist *h, uint64_t v)
{
    unsigned i = hist_index(v);
    if (i >= HIST_BUCKETS) {
        i = HIST_BUCKETS - 1;
    }
    h->n[i]++;
    h->count++;
}

static void hist_merge(hist *into, const hist *h)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        into->n[i] += h->n[i];
    }
    into->count += h->count;
}

static uint64_t hist_pct(const hist *h, double p)
{
    if (!h->count) {
        return 0;
    }
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (want == 0) {
        want = 1;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= want) {
            return hist_value(i);
        }
    }
    return hist_value(HIST_BUCKETS - 1);
}

/* ----------------------------------------------------------------- setup -- */

typedef enum workload {
    W_APPEND,
    W_READ_STREAM,
    W_READ_ALL,
    W_SUBSCRIBE,
    W_LATENCY,
    W_FANOUT,
    W_GROUP
} workload;

typedef struct config {
    const char *server;
    const char *esd_path;
    workload w;
    const char *wname;
    unsigned connections;
    unsigned threads; /* appender threads; the connections are split over them */
    unsigned batch;
    unsigned streams;
    uint64_t events;
    unsigned event_size;
    bool exact;
    double duration;
    bool sync;
    bool json;
    bool stamp;             /* appenders write their send time into the data */
    uint64_t idle_subs;     /* fanout: subscriptions that match nothing */
    uint64_t matching_subs; /* fanout: subscriptions to the whole log */
    bool events_set;        /* --events given */
    unsigned consumers;     /* group: members */
    unsigned rate;          /* group: live appends per second */
    bool rate_set;          /* --rate given: fanout paces its appends to it */
    const char *user;       /* --user, else $ES_USER */
    const char *token_file; /* --token-file (see token.h) */
    tool_tls tls;           /* --tls, --tls-ca, --tls-insecure */
    tool_token token;
    char address[128];
} config;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: esbench [-s HOST:PORT] WORKLOAD [options]\n"
                 "\n"
                 "Workloads: append, read-stream, read-all, subscribe, latency, fanout, group\n"
                 "\n"
                 "Options:\n"
                 "  -s, --server HOST:PORT  benchmark a running esd (default: start one in a\n"
                 "                          temporary directory, stopped at the end)\n"
                 "  --connections N         client connections, one append in flight on each\n"
                 "                          (default 1)\n"
                 "  --threads N             appender threads the connections are split over\n"
                 "                          (default 2, at most one per connection)\n"
                 "  --batch N               events per append request (default 1)\n"
                 "  --streams N             streams appended to at random (default 10000)\n"
                 "  --events N              events written for read/subscribe workloads\n"
                 "                          (default 100000)\n"
                 "  --event-size BYTES      data bytes per event (default 200)\n"
                 "  --expected any|exact    expectation of appends (default any)\n"
                 "  --duration SECONDS      length of timed phases (default 10)\n"
                 "  --sync full|none        durability of the esd esbench starts (default full)\n"
                 "  --esd PATH              the esd binary to start (default: beside esbench)\n"
                 "  --idle-subs N           fanout: subscriptions matching nothing (default\n"
                 "                          20000)\n"
                 "  --matching-subs N       fanout: subscriptions to the whole log (default 0)\n"
                 "  --consumers N           group: members of the group (default 4)\n"
                 "  --rate N                group: live appends per second (default 1000);\n"
                 "                          fanout: appends per second over all connections\n"
                 "                          (default: as fast as they go)\n"
                 "  --json                  print one JSON object\n"
                 "  --user NAME             user for the hello (default $ES_USER)\n"
                 "  --token-file FILE       token for the hello (default $ES_TOKEN_FILE, else\n"
                 "                          the token in $ES_TOKEN)\n"
                 "  --tls                   TLS, verifying the server against the system's CAs\n"
                 "  --tls-ca FILE           TLS, verifying the server against the CAs in FILE\n"
                 "  --tls-insecure          TLS without verifying the server (tests only)\n"
                 "  -h, --help              this help\n"
                 "\n"
                 "Exit status: 0 done, 1 the benchmark failed, 2 usage, 3 cannot connect.\n");
}

static bool parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* ------------------------------------------------------- the esd we start -- */

static pid_t esd_pid;
static char esd_dir[256];

static int rmtree(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

static void stop_esd(void)
{
    if (esd_pid > 0) {
        kill(esd_pid, SIGTERM);
        int st;
        waitpid(esd_pid, &st, 0);
        esd_pid = 0;
    }
    if (esd_dir[0]) {
        rmtree(esd_dir);
        esd_dir[0] = 0;
    }
}

static const char *find_esd(const char *argv0, char *buf, size_t len)
{
    const char *slash = strrchr(argv0, '/');
    if (slash) {
        snprintf(buf, len, "%.*s/../server/esd", (int)(slash - argv0), argv0);
        if (access(buf, X_OK) == 0) {
            return buf;
        }
        snprintf(buf, len, "%.*s/esd", (int)(slash - argv0), argv0);
        if (access(buf, X_OK) == 0) {
            return buf;
        }
    }
    return "esd";
}

static int start_esd(config *cfg, const char *argv0)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(esd_dir, sizeof esd_dir, "%s/esbench-XXXXXX", tmp);
    if (!mkdtemp(esd_dir)) {
        perror("esbench: mkdtemp");
        return -1;
    }
    char data[300], port_file[300], path_buf[PATH_MAX];
    snprintf(data, sizeof data, "%s/data", esd_dir);
    snprintf(port_file, sizeof port_file, "%s/port", esd_dir);
    const char *esd = cfg->esd_path ? cfg->esd_path : find_esd(argv0, path_buf, sizeof path_buf);
    esd_pid = fork();
    if (esd_pid < 0) {
        perror("esbench: fork");
        return -1;
    }
    if (esd_pid == 0) {
        /* Our esd must not outlive us, whatever ends us. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        char log[300];
        snprintf(log, sizeof log, "%s/esd.log", esd_dir);
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execlp(esd, esd, "--listen", "127.0.0.1:0", "--port-file", port_file, "--data-dir", data,
               "--sync", cfg->sync ? "full" : "none", "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            unsigned port = 0;
            int n = fscanf(f, "%u", &port);
            fclose(f);
            if (n == 1 && port) {
                snprintf(cfg->address, sizeof cfg->address, "127.0.0.1:%u", port);
                return 0;
            }
        }
        int st;
        if (waitpid(esd_pid, &st, WNOHANG) == esd_pid) {
            fprintf(stderr, "esbench: %s exited at start (see its log in %s)\n", esd, esd_dir);
            esd_pid = 0;
            return -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "esbench: %s did not start listening within 10 s\n", esd);
    return -1;
}

static es_err connect_client(const config *cfg, es_client **out)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = cfg->address;
    o.client_name = "esbench";
    o.max_in_flight = 0;
    o.user = cfg->user;
    tool_tls_apply(&cfg->tls, &o, "esbench");
    if (cfg->token.len > 0) {
        o.token = cfg->token.bytes;
        o.token_len = cfg->token.len;
    }
    es_err rv = es_client_create(&o, out); /* copies the token */
    if (rv != ES_OK) {
        return rv;
    }
    rv = es_client_connect(*out);
    if (rv != ES_OK) {
        fprintf(stderr, "esbench: cannot connect to %s: %s\n", cfg->address,
                es_client_errmsg(*out));
        es_client_destroy(*out);
        *out = NULL;
    }
    return rv;
}

/* ---------------------------------------------------------------- append -- */

/* One connection of an appender thread: at most one append in flight. */
typedef struct conn_slot {
    es_client *c;
    uint64_t handle;
    uint64_t t0;  /* send time */
    unsigned sn;  /* stream number of the append in flight */
    bool pending; /* an append was sent and is not collected yet */
} conn_slot;

typedef struct worker {
    pthread_t th;
    const config *cfg;
    unsigned index;
    unsigned first, count; /* the connections this thread drives */
    uint64_t seed;
    hist lat;
    uint64_t requests, events, conflicts, errors;
    es_err fatal;
    uint64_t *revs; /* exact mode: known last revision + 1 per stream (0 = unknown) */
} worker;

static _Atomic bool stop_flag;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Bytes of a stamped event's data: a quote, 20 digits, a quote at least. */
#define STAMP_MIN_BYTES 22u

static void stamp_payload(uint8_t *p, size_t len, uint64_t t)
{
    char digits[24];
    snprintf(digits, sizeof digits, "%020" PRIu64, t);
    p[0] = '"';
    memcpy(p + 1, digits, 20);
    p[len - 1] = '"';
}

/* The send time of a stamped event; 0 when the data carries none. */
static uint64_t parse_stamp(const uint8_t *p, size_t len)
{
    if (len < STAMP_MIN_BYTES || p[0] != '"') {
        return 0;
    }
    uint64_t t = 0;
    for (unsigned i = 1; i <= 20; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        t = t * 10 + (uint64_t)(p[i] - '0');
    }
    return t;
}

/* fanout --rate: appends are due at pace_t0 + k / rate, k counted over
 * every appender thread. */
static _Atomic uint64_t pace_sent;
static uint64_t pace_t0;

static void pace_wait(const config *cfg)
{
    uint64_t k = atomic_fetch_add(&pace_sent, 1);
    uint64_t due = pace_t0 + k * 1000000u / cfg->rate;
    for (uint64_t now = now_us(); now < due && !atomic_load(&stop_flag); now = now_us()) {
        uint64_t wait = due - now < 10000 ? due - now : 10000; /* stop is looked at */
        struct timespec ts = {0, (long)(wait * 1000)};
        nanosleep(&ts, NULL);
    }
}

/* Send the next append on a slot (a random stream; the events in evs, the
 * payload stamped when asked). @return ES_OK or the error of the send. */
static es_err slot_send(worker *w, conn_slot *s, es_event *evs, uint8_t *payload, size_t size)
{
    const config *cfg = w->cfg;
    if (cfg->w == W_FANOUT && cfg->rate_set) {
        pace_wait(cfg);
    }
    s->sn = (unsigned)(xorshift(&w->seed) % cfg->streams);
    char stream[48];
    snprintf(stream, sizeof stream, "bench-%u", s->sn);
    es_expected exp = {ES_EXPECT_ANY, 0};
    if (cfg->exact) {
        exp.kind = w->revs[s->sn] ? ES_EXPECT_EXACT : ES_EXPECT_NO_STREAM;
        exp.revision = w->revs[s->sn] ? w->revs[s->sn] - 1 : 0;
    }
    for (unsigned i = 0; i < cfg->batch; i++) {
        evs[i].has_id = false; /* the library assigns fresh ids on every send */
    }
    s->t0 = now_us();
    if (cfg->stamp) {
        stamp_payload(payload, size, s->t0);
    }
    es_err rv = es_stream_append_send(s->c, stream, exp, evs, cfg->batch, &s->handle);
    s->pending = rv == ES_OK;
    return rv;
}

/* Collect a slot's append and count it. @return false when the connection
 * is gone (w->fatal set). */
static bool slot_collect(worker *w, conn_slot *s)
{
    const config *cfg = w->cfg;
    es_append_result res;
    es_err rv = es_stream_append_wait(s->c, s->handle, &res);
    s->pending = false;
    if (rv == ES_OK) {
        hist_add(&w->lat, now_us() - s->t0);
        w->requests++;
        w->events += cfg->batch;
        if (cfg->exact) {
            w->revs[s->sn] = res.last_revision + 1;
        }
        return true;
    }
    if (rv == ES_ERR_WRONG_EXPECTED_REVISION) {
        w->conflicts++;
        size_t n;
        const es_conflict *cf = es_client_conflicts(s->c, &n);
        if (n == 1) {
            w->revs[s->sn] = cf[0].actual_exists ? cf[0].actual_revision + 1 : 0;
        }
        return true;
    }
    w->errors++;
    if (rv == ES_ERR_CONNECTION || rv == ES_ERR_CIRCUIT_OPEN || rv == ES_ERR_CLOSED ||
        rv == ES_ERR_TIMEOUT) {
        w->fatal = rv;
        return false;
    }
    return true;
}

/*
 * An appender thread drives its connections like an event loop would: one
 * append in flight on each, the next sent on a connection as soon as its
 * reply is collected (in connection order; a reply that arrives early waits
 * in its client). Latency is send -> collected, so it includes the time the
 * thread spent on the connections before it (conservative).
 */
static void *append_main(void *arg)
{
    worker *w = arg;
    const config *cfg = w->cfg;
    size_t size = cfg->event_size;
    if (cfg->stamp && size < STAMP_MIN_BYTES) {
        size = STAMP_MIN_BYTES;
    }
    uint8_t *payload = malloc(size ? size : 1);
    es_event *evs = calloc(cfg->batch, sizeof *evs);
    conn_slot *slots = calloc(w->count, sizeof *slots);
    if (!payload || !evs || !slots) {
        w->fatal = ES_ERR_NO_MEMORY;
        goto out;
    }
    memset(payload, 'x', size);
    if (size >= 2) {
        payload[0] = '"';
        payload[size - 1] = '"';
    }
    for (unsigned i = 0; i < cfg->batch; i++) {
        evs[i].type = "BenchEvent";
        evs[i].data = payload;
        evs[i].data_len = size;
    }
    for (unsigned i = 0; i < w->count; i++) {
        w->fatal = connect_client(cfg, &slots[i].c);
        if (w->fatal != ES_OK) {
            goto out;
        }
    }
    for (unsigned i = 0; i < w->count; i++) {
        es_err rv = slot_send(w, &slots[i], evs, payload, size);
        if (rv != ES_OK) {
            w->fatal = rv;
            goto out;
        }
    }
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        for (unsigned i = 0; i < w->count; i++) {
            if (!slot_collect(w, &slots[i])) {
                goto out;
            }
            if (atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
                break;
            }
            es_err rv = slot_send(w, &slots[i], evs, payload, size);
            if (rv != ES_OK) {
                w->fatal = rv;
                goto out;
            }
        }
    }
    /* Collect what is still in flight so every stored event is counted. */
    for (unsigned i = 0; i < w->count; i++) {
        if (slots[i].pending && !slot_collect(w, &slots[i])) {
            break;
        }
    }
out:
    if (slots) {
        for (unsigned i = 0; i < w->count; i++) {
            es_client_destroy(slots[i].c);
        }
    }
    free(slots);
    free(payload);
    free(evs);
    return NULL;
}

typedef struct result {
    double seconds;
    uint64_t events, requests, conflicts, errors;
    uint64_t bytes;
    hist lat;
    double mean_batch;
    uint32_t max_batch;
    uint64_t commits;
    /* subscribe, latency: the live phase */
    double live_seconds;
    uint64_t live_events;  /* stamped events delivered */
    uint64_t appended;     /* events the appenders stored meanwhile */
    uint64_t order_errors; /* deliveries out of order or repeated */
    /* fanout */
    uint64_t idle_subs, idle_conns, matching_subs, matching_conns;
    uint64_t delivered;   /* events delivered to the matching subscriptions */
    double drain_seconds; /* appenders stopped -> every matching one at the head */
    bool drained;         /* they all reached it (within 60 s) */
    double server_cpu_s;  /* esd CPU time during the timed phase (-1: unknown) */
    /* fanout, from the appenders' start to the end of the drain: esd's CPU
     * (user, system; -1: unknown) and this process's (appenders, poller) */
    double server_user_s, server_sys_s;
    double client_user_s, client_sys_s;
} result;

/* Appender threads, started and stopped around a timed phase. */
typedef struct appenders {
    worker *ws;
    unsigned n;
} appenders;

static int appenders_start(const config *cfg, appenders *a)
{
    a->n = cfg->threads < cfg->connections ? cfg->threads : cfg->connections;
    a->ws = calloc(a->n, sizeof *a->ws);
    if (!a->ws) {
        return 1;
    }
    atomic_store(&stop_flag, false);
    for (unsigned i = 0; i < a->n; i++) {
        a->ws[i].cfg = cfg;
        a->ws[i].index = i;
        a->ws[i].first = i * cfg->connections / a->n;
        a->ws[i].count = (i + 1) * cfg->connections / a->n - a->ws[i].first;
        a->ws[i].seed = 0x9e3779b97f4a7c15ull * (i + 1) ^ (uint64_t)now_us();
        if (cfg->exact) {
            a->ws[i].revs = calloc(cfg->streams, sizeof *a->ws[i].revs);
        }
        pthread_create(&a->ws[i].th, NULL, append_main, &a->ws[i]);
    }
    return 0;
}

/* Stop and join the appenders; their counts and append latencies go into
 * out (when not NULL). @return 0, or the exit status of a failure. */
static int appenders_stop(appenders *a, result *out)
{
    atomic_store(&stop_flag, true);
    int rc = 0;
    for (unsigned i = 0; i < a->n; i++) {
        pthread_join(a->ws[i].th, NULL);
    }
    for (unsigned i = 0; i < a->n; i++) {
        if (a->ws[i].fatal != ES_OK) {
            fprintf(stderr, "esbench: connection %u failed: %s\n", i, es_strerror(a->ws[i].fatal));
            rc = a->ws[i].fatal == ES_ERR_CONNECTION ? 3 : 1;
        }
        if (out) {
            out->events += a->ws[i].events;
            out->requests += a->ws[i].requests;
            out->conflicts += a->ws[i].conflicts;
            out->errors += a->ws[i].errors;
            hist_merge(&out->lat, &a->ws[i].lat);
        }
        free(a->ws[i].revs);
    }
    free(a->ws);
    a->ws = NULL;
    return rc;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int run_append(const config *cfg, result *out)
{
    es_client *c;
    es_stats before = {0}, after = {0};
    if (connect_client(cfg, &c) != ES_OK) {
        return 3;
    }
    es_stats_get(c, &before);
    appenders a;
    if (appenders_start(cfg, &a) != 0) {
        es_client_destroy(c);
        return 1;
    }
    uint64_t t0 = now_us();
    sleep_s(cfg->duration);
    memset(out, 0, sizeof *out);
    int rc = appenders_stop(&a, out);
    uint64_t t1 = now_us();
    out->seconds = (double)(t1 - t0) / 1e6;
    out->bytes = out->events * cfg->event_size;
    if (es_stats_get(c, &after) == ES_OK && after.commits > before.commits) {
        out->commits = after.commits - before.commits;
        out->mean_batch = (double)(after.appends_ok + after.appends_failed - before.appends_ok -
                                   before.appends_failed) /
                          (double)out->commits;
        out->max_batch = after.max_commit_batch;
    }
    es_client_destroy(c);
    return rc;
}

/* ------------------------------------------------------------------ reads -- */

/* Write `events` events (pipelined, batches of 100) to one stream or round
 * robin over `streams`. */
static int fill(const config *cfg, es_client *c, const char *single_stream)
{
    uint8_t *payload = malloc(cfg->event_size ? cfg->event_size : 1);
    if (!payload) {
        return 1;
    }
    memset(payload, 'y', cfg->event_size);
    enum { BATCH = 100, WINDOW = 32 };
    es_event evs[BATCH];
    uint64_t handles[WINDOW];
    unsigned inflight = 0;
    uint64_t written = 0;
    unsigned sn = 0;
    int rc = 0;
    while (written < cfg->events || inflight) {
        if (written < cfg->events && inflight < WINDOW) {
            size_t n = cfg->events - written < BATCH ? (size_t)(cfg->events - written) : BATCH;
            for (size_t i = 0; i < n; i++) {
                memset(&evs[i], 0, sizeof evs[i]);
                evs[i].type = "BenchEvent";
                evs[i].data = payload;
                evs[i].data_len = cfg->event_size;
            }
            char stream[48];
            if (single_stream) {
                snprintf(stream, sizeof stream, "%s", single_stream);
            } else {
                snprintf(stream, sizeof stream, "bench-%u", sn++ % cfg->streams);
            }
            es_expected any = {ES_EXPECT_ANY, 0};
            es_err rv = es_stream_append_send(c, stream, any, evs, n, &handles[inflight]);
            if (rv != ES_OK) {
                fprintf(stderr, "esbench: fill: %s\n", es_client_errmsg(c));
                rc = 1;
                break;
            }
            inflight++;
            written += n;
            continue;
        }
        es_append_result res;
        es_err rv = es_stream_append_wait(c, handles[0], &res);
        memmove(handles, handles + 1, (inflight - 1) * sizeof handles[0]);
        inflight--;
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: fill: %s\n", es_client_errmsg(c));
            rc = 1;
            break;
        }
    }
    free(payload);
    return rc;
}

static int run_read(const config *cfg, bool all, result *out)
{
    es_client *c;
    if (connect_client(cfg, &c) != ES_OK) {
        return 3;
    }
    char stream[64];
    snprintf(stream, sizeof stream, "replay-%llu", (unsigned long long)now_us());
    int rc = fill(cfg, c, all ? NULL : stream);
    if (rc) {
        es_client_destroy(c);
        return rc;
    }
    memset(out, 0, sizeof *out);
    /* Several replays within --duration; the median-free total is reported. */
    uint64_t t0 = now_us();
    uint64_t deadline = t0 + (uint64_t)(cfg->duration * 1e6);
    do {
        es_read_options ro = {0};
        es_read_iter *it;
        uint64_t r0 = now_us();
        es_err rv = all ? es_read_all(c, &ro, &it) : es_read_stream(c, stream, &ro, &it);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: read: %s\n", es_client_errmsg(c));
            rc = 1;
            break;
        }
        const es_recorded_event *ev;
        uint64_t n = 0;
        while ((rv = es_read_next(it, &ev)) == ES_OK && ev != NULL) {
            n++;
            out->bytes += ev->data_len;
        }
        es_read_destroy(it);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: read: %s\n", es_strerror(rv));
            rc = 1;
            break;
        }
        hist_add(&out->lat, now_us() - r0);
        out->events += n;
        out->requests++;
    } while (now_us() < deadline);
    out->seconds = (double)(now_us() - t0) / 1e6;
    es_client_destroy(c);
    return rc;
}

/* --------------------------------------------------------- subscriptions -- */

/* Events per push asked for by the subscriber: with 200-byte events, pushes
 * of about 250 KB. Measured on this machine, 256 to 1024 events per push
 * catch up several times faster than 4096 (pushes of 1 MB and more). */
#define SUB_BATCH 1024u

/* What the subscriber of subscribe/latency saw. */
typedef struct sub_seen {
    uint64_t events, bytes;
    uint64_t last; /* last position delivered */
    bool has_last;
    uint64_t order_errors;
    bool caught_up;
    uint64_t caught_up_us;
    bool live;        /* measure stamped events */
    uint64_t stamped; /* stamped events delivered while live */
    hist lat;         /* their append -> delivery latency */
} sub_seen;

static int seen_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    sub_seen *ss = ctx;
    uint64_t now = now_us();
    for (size_t i = 0; i < n; i++) {
        const es_recorded_event *e = &evs[i];
        if (ss->has_last && e->position != ss->last + 1) {
            ss->order_errors++;
        }
        ss->last = e->position;
        ss->has_last = true;
        ss->bytes += e->data_len;
        if (ss->live) {
            uint64_t t = parse_stamp(e->data, e->data_len);
            if (t != 0 && t <= now) {
                hist_add(&ss->lat, now - t);
                ss->stamped++;
            }
        }
    }
    ss->events += n;
    return 0;
}

static void seen_caught_up(void *ctx, uint64_t position)
{
    sub_seen *ss = ctx;
    if (!ss->caught_up) {
        ss->caught_up = true;
        ss->caught_up_us = now_us();
    }
}

static es_err sub_open(const config *cfg, es_client *c, es_sub_start start, sub_seen *ss,
                       es_subscription **out)
{
    es_server_info info;
    es_sub_options so = {.target = ES_SUB_ALL, .start = start, .batch_size = SUB_BATCH};
    if (es_client_server_info(c, &info) == ES_OK && info.limits.max_page_size != 0 &&
        info.limits.max_page_size < SUB_BATCH) {
        so.batch_size = info.limits.max_page_size;
    }
    if (start == ES_SUB_FROM_END) {
        ss->live = true;
    }
    es_err rv = es_subscribe(c, &so, seen_batch, seen_caught_up, ss, out);
    if (rv != ES_OK) {
        fprintf(stderr, "esbench: subscribe: %s\n", es_client_errmsg(c));
    }
    return rv;
}

/* Poll until `until` (monotonic us); @return 0 or 1 (the subscription failed). */
static int sub_follow(es_client *c, es_subscription *sub, uint64_t until)
{
    while (now_us() < until) {
        uint64_t left_ms = (until - now_us()) / 1000;
        es_err rv = es_sub_poll(sub, left_ms > 100 ? 100 : (int)left_ms);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: subscription: %s\n", es_client_errmsg(c));
            return 1;
        }
    }
    return 0;
}

/* After the appenders stopped: poll until the subscriber has the head (at
 * most 10 s). */
static int sub_drain(const config *cfg, es_client *c, es_subscription *sub, sub_seen *ss)
{
    es_stats st;
    if (es_stats_get(c, &st) != ES_OK) {
        fprintf(stderr, "esbench: stats: %s\n", es_client_errmsg(c));
        return 1;
    }
    uint64_t until = now_us() + 10000000u;
    while ((!ss->has_last || ss->last < st.head_position) && now_us() < until) {
        es_err rv = es_sub_poll(sub, 100);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: subscription: %s\n", es_client_errmsg(c));
            return 1;
        }
    }
    if (!ss->has_last || ss->last < st.head_position) {
        fprintf(stderr, "esbench: the subscriber did not reach the head (%" PRIu64 ") in 10 s\n",
                st.head_position);
        return 1;
    }
    return 0;
}

static int run_subscribe(const config *cfg, result *out)
{
    memset(out, 0, sizeof *out);
    es_client *c, *sc;
    if (connect_client(cfg, &c) != ES_OK) {
        return 3;
    }
    int rc = fill(cfg, c, NULL);
    if (rc) {
        es_client_destroy(c);
        return rc;
    }
    if (connect_client(cfg, &sc) != ES_OK) {
        es_client_destroy(c);
        return 3;
    }
    sub_seen *ss = calloc(1, sizeof *ss);
    es_subscription *sub = NULL;
    if (!ss) {
        rc = 1;
        goto out;
    }

    /* Catch-up: from the first event to the caught-up notification. */
    uint64_t t0 = now_us();
    if (sub_open(cfg, sc, ES_SUB_FROM_START, ss, &sub) != ES_OK) {
        rc = 1;
        goto out;
    }
    while (!ss->caught_up) {
        es_err rv = es_sub_poll(sub, 1000);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: subscription: %s\n", es_client_errmsg(sc));
            rc = 1;
            goto out;
        }
    }
    out->events = ss->events;
    out->bytes = ss->bytes;
    out->seconds = (double)(ss->caught_up_us - t0) / 1e6;
    out->requests = 1;

    /* Live: the appenders write, the subscriber follows. */
    ss->live = true;
    uint64_t live0 = ss->events;
    appenders a;
    if (appenders_start(cfg, &a) != 0) {
        rc = 1;
        goto out;
    }
    uint64_t l0 = now_us();
    rc = sub_follow(sc, sub, l0 + (uint64_t)(cfg->duration * 1e6));
    result ar;
    memset(&ar, 0, sizeof ar);
    int arc = appenders_stop(&a, &ar);
    rc = rc ? rc : arc;
    if (rc == 0) {
        rc = sub_drain(cfg, c, sub, ss);
    }
    out->live_seconds = (double)(now_us() - l0) / 1e6;
    out->live_events = ss->events - live0;
    out->appended = ar.events;
    out->errors = ar.errors;
    out->order_errors = ss->order_errors;
    out->lat = ss->lat;
out:
    es_sub_destroy(sub);
    free(ss);
    es_client_destroy(sc);
    es_client_destroy(c);
    return rc;
}

static int run_latency(const config *cfg, result *out)
{
    memset(out, 0, sizeof *out);
    es_client *c, *sc;
    if (connect_client(cfg, &c) != ES_OK) {
        return 3;
    }
    if (connect_client(cfg, &sc) != ES_OK) {
        es_client_destroy(c);
        return 3;
    }
    int rc = 0;
    sub_seen *ss = calloc(1, sizeof *ss);
    es_subscription *sub = NULL;
    if (!ss || sub_open(cfg, sc, ES_SUB_FROM_END, ss, &sub) != ES_OK) {
        rc = 1;
        goto out;
    }
    appenders a;
    if (appenders_start(cfg, &a) != 0) {
        rc = 1;
        goto out;
    }
    uint64_t t0 = now_us();
    rc = sub_follow(sc, sub, t0 + (uint64_t)(cfg->duration * 1e6));
    result ar;
    memset(&ar, 0, sizeof ar);
    int arc = appenders_stop(&a, &ar);
    rc = rc ? rc : arc;
    if (rc == 0) {
        rc = sub_drain(cfg, c, sub, ss);
    }
    out->seconds = (double)(now_us() - t0) / 1e6;
    out->events = ss->stamped;
    out->bytes = ss->bytes;
    out->requests = ar.requests;
    out->errors = ar.errors;
    out->conflicts = ar.conflicts;
    out->appended = ar.events;
    out->live_events = ss->events;
    out->live_seconds = out->seconds;
    out->order_errors = ss->order_errors;
    out->lat = ss->lat;
out:
    es_sub_destroy(sub);
    free(ss);
    es_client_destroy(sc);
    es_client_destroy(c);
    return rc;
}

/* ---------------------------------------------------------------- fanout -- */

#define FANOUT_PER_CONN 64u /* the server's subscriptions per connection */

/* Subscriptions held open during a fanout run. */
typedef struct fanout_set {
    es_client **conns;
    unsigned n_conns;
    es_subscription **subs;
    sub_seen *seen; /* matching only: one per subscription */
    uint64_t n_subs;
} fanout_set;

static int ignore_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    (void)ctx;
    (void)evs;
    (void)n;
    return 0;
}

/* Open n subscriptions, FANOUT_PER_CONN per connection: to categories that
 * receive nothing ("idle<i>"), or to the whole log from its end. */
static int fanout_open(const config *cfg, uint64_t n, bool matching, fanout_set *fs)
{
    memset(fs, 0, sizeof *fs);
    fs->n_conns = (unsigned)((n + FANOUT_PER_CONN - 1) / FANOUT_PER_CONN);
    fs->conns = calloc(fs->n_conns ? fs->n_conns : 1, sizeof *fs->conns);
    fs->subs = calloc(n ? n : 1, sizeof *fs->subs);
    fs->seen = matching ? calloc(n ? n : 1, sizeof *fs->seen) : NULL;
    if (!fs->conns || !fs->subs || (matching && !fs->seen)) {
        return 1;
    }
    for (uint64_t i = 0; i < n; i++) {
        es_client *c;
        if (i % FANOUT_PER_CONN == 0) {
            if (connect_client(cfg, &fs->conns[i / FANOUT_PER_CONN]) != ES_OK) {
                return 3;
            }
        }
        c = fs->conns[i / FANOUT_PER_CONN];
        char name[32];
        snprintf(name, sizeof name, "idle%" PRIu64, i);
        es_sub_options so = {.target = matching ? ES_SUB_ALL : ES_SUB_CATEGORY,
                             .name = matching ? NULL : name,
                             .start = ES_SUB_FROM_END,
                             .batch_size = SUB_BATCH};
        es_err rv =
            matching ? es_subscribe(c, &so, seen_batch, seen_caught_up, &fs->seen[i], &fs->subs[i])
                     : es_subscribe(c, &so, ignore_batch, NULL, NULL, &fs->subs[i]);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: subscribe %" PRIu64 ": %s\n", i, es_client_errmsg(c));
            return 1;
        }
        fs->n_subs++;
    }
    return 0;
}

static void fanout_close(fanout_set *fs)
{
    for (uint64_t i = 0; i < fs->n_subs; i++) {
        es_sub_destroy(fs->subs[i]);
    }
    for (unsigned i = 0; i < fs->n_conns; i++) {
        es_client_destroy(fs->conns[i]);
    }
    free(fs->conns);
    free(fs->subs);
    free(fs->seen);
    memset(fs, 0, sizeof *fs);
}

/* One pass over the matching subscriptions. @return events delivered, or
 * UINT64_MAX when one failed. */
static uint64_t fanout_poll(fanout_set *fs)
{
    uint64_t before = 0, after = 0;
    for (uint64_t i = 0; i < fs->n_subs; i++) {
        before += fs->seen[i].events;
        if (es_sub_poll(fs->subs[i], 0) != ES_OK) {
            return UINT64_MAX;
        }
        after += fs->seen[i].events;
    }
    return after - before;
}

typedef struct fanout_poller {
    pthread_t th;
    fanout_set *fs;
    _Atomic bool stop;
    bool failed;
} fanout_poller;

static void *fanout_poll_main(void *arg)
{
    fanout_poller *p = arg;
    while (!atomic_load(&p->stop)) {
        uint64_t got = fanout_poll(p->fs);
        if (got == UINT64_MAX) {
            p->failed = true;
            return NULL;
        }
        if (got == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Every matching subscription has delivered up to head (they began at head0). */
static bool fanout_at(const fanout_set *fs, uint64_t head0, uint64_t head)
{
    for (uint64_t i = 0; i < fs->n_subs; i++) {
        uint64_t last = fs->seen[i].has_last ? fs->seen[i].last : head0;
        if (last < head) {
            return false;
        }
    }
    return true;
}

/* CPU seconds (user, system) of the esd esbench started; -1 without one. */
static void esd_cpu_split(double *user, double *sys)
{
    *user = *sys = -1;
    if (esd_pid <= 0) {
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)esd_pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after the command name */
    unsigned long long ut = 0, st = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return;
    }
    *user = (double)ut / (double)sysconf(_SC_CLK_TCK);
    *sys = (double)st / (double)sysconf(_SC_CLK_TCK);
}

static double esd_cpu_s(void)
{
    double u, s;
    esd_cpu_split(&u, &s);
    return u >= 0 ? u + s : -1;
}

static void self_cpu(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int run_fanout(const config *cfg, result *out)
{
    memset(out, 0, sizeof *out);
    fanout_set idle, match;
    fanout_poller poller = {.fs = &match};
    bool polling = false;
    es_client *c = NULL;
    es_stats before = {0}, after = {0};
    int rc = fanout_open(cfg, cfg->idle_subs, false, &idle);
    if (rc == 0) {
        rc = fanout_open(cfg, cfg->matching_subs, true, &match);
    }
    if (rc == 0 && connect_client(cfg, &c) != ES_OK) {
        rc = 3;
    }
    if (rc) {
        goto out;
    }
    es_stats_get(c, &before);
    uint64_t head0 = before.head_position;
    if (match.n_subs) {
        pthread_create(&poller.th, NULL, fanout_poll_main, &poller);
        polling = true;
    }
    appenders a;
    double su0, ss0, cu0, cs0;
    esd_cpu_split(&su0, &ss0);
    self_cpu(&cu0, &cs0);
    pace_t0 = now_us();
    if (appenders_start(cfg, &a) != 0) {
        rc = 1;
        goto out;
    }
    double cpu0 = esd_cpu_s();
    uint64_t t0 = now_us();
    sleep_s(cfg->duration);
    rc = appenders_stop(&a, out);
    uint64_t t1 = now_us();
    double cpu1 = esd_cpu_s();
    out->server_cpu_s = cpu0 >= 0 && cpu1 >= cpu0 ? cpu1 - cpu0 : -1;
    out->seconds = (double)(t1 - t0) / 1e6;
    out->bytes = out->events * cfg->event_size;
    if (es_stats_get(c, &after) == ES_OK && after.commits > before.commits) {
        out->commits = after.commits - before.commits;
        out->mean_batch = (double)(after.appends_ok + after.appends_failed - before.appends_ok -
                                   before.appends_failed) /
                          (double)out->commits;
        out->max_batch = after.max_commit_batch;
    }
    if (polling) {
        /* Drain: every matching subscription up to the head (60 s at most). */
        uint64_t head = after.head_position;
        while (!fanout_at(&match, head0, head) && now_us() - t1 < 60000000u && !poller.failed) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        out->drained = fanout_at(&match, head0, head);
        out->drain_seconds = (double)(now_us() - t1) / 1e6;
        atomic_store(&poller.stop, true);
        pthread_join(poller.th, NULL);
        polling = false;
        double su1, ss1, cu1, cs1;
        esd_cpu_split(&su1, &ss1);
        self_cpu(&cu1, &cs1);
        out->server_user_s = su0 >= 0 && su1 >= 0 ? su1 - su0 : -1;
        out->server_sys_s = su0 >= 0 && su1 >= 0 ? ss1 - ss0 : -1;
        out->client_user_s = cu1 - cu0;
        out->client_sys_s = cs1 - cs0;
        for (uint64_t i = 0; i < match.n_subs; i++) {
            out->delivered += match.seen[i].events;
            out->order_errors += match.seen[i].order_errors;
        }
        if (poller.failed) {
            fprintf(stderr, "esbench: a matching subscription failed\n");
            rc = rc ? rc : 1;
        } else if (!out->drained) {
            fprintf(stderr,
                    "esbench: the matching subscriptions did not reach the head (%" PRIu64
                    ") within 60 s\n",
                    head);
            rc = rc ? rc : 1;
        }
    }
out:
    if (polling) {
        atomic_store(&poller.stop, true);
        pthread_join(poller.th, NULL);
    }
    out->idle_subs = idle.n_subs;
    out->idle_conns = idle.n_conns;
    out->matching_subs = match.n_subs;
    out->matching_conns = match.n_conns;
    es_client_destroy(c);
    fanout_close(&match);
    fanout_close(&idle);
    return rc;
}

/* ------------------------------------------------------------------ group -- */

#define GROUP_MAX_CONSUMERS    64u
#define GROUPS_BENCH_MAX_BATCH 10000u
#define GROUP_FILL_TXN         500u

/* The backlog: one event per stream in turn, GROUP_FILL_TXN appends per
 * transaction, so that consecutive events belong to different streams. */
static int group_fill(const config *cfg, es_client *c)
{
    uint8_t *payload = malloc(cfg->event_size ? cfg->event_size : 1);
    es_event *evs = calloc(GROUP_FILL_TXN, sizeof *evs);
    es_append_req *reqs = calloc(GROUP_FILL_TXN, sizeof *reqs);
    char(*names)[32] = calloc(GROUP_FILL_TXN, sizeof *names);
    int rc = 0;
    if (!payload || !evs || !reqs || !names) {
        rc = 1;
        goto out;
    }
    memset(payload, 'y', cfg->event_size);
    uint64_t written = 0, sn = 0;
    while (written < cfg->events) {
        size_t n = cfg->events - written < GROUP_FILL_TXN ? (size_t)(cfg->events - written)
                                                          : GROUP_FILL_TXN;
        for (size_t i = 0; i < n; i++) {
            memset(&evs[i], 0, sizeof evs[i]);
            evs[i].type = "BenchEvent";
            evs[i].data = payload;
            evs[i].data_len = cfg->event_size;
            snprintf(names[i], sizeof names[i], "gbench-%" PRIu64, sn++ % cfg->streams);
            reqs[i].stream = names[i];
            reqs[i].expected = (es_expected){ES_EXPECT_ANY, 0};
            reqs[i].events = &evs[i];
            reqs[i].n_events = 1;
        }
        /* A stream twice in one transaction is fine: each append sees the
         * earlier ones. */
        es_err rv = n == 1 ? es_stream_append(c, names[0], reqs[0].expected, evs, 1, NULL)
                           : es_txn_commit(c, reqs, n, NULL);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: fill: %s\n", es_client_errmsg(c));
            rc = 1;
            goto out;
        }
        written += n;
    }
out:
    free(payload);
    free(evs);
    free(reqs);
    free(names);
    return rc;
}

typedef struct gworker {
    const config *cfg;
    const char *group;
    pthread_t th;
    _Atomic uint64_t *acked_total;
    _Atomic bool *live;
    hist lat; /* live: append -> delivery */
    uint64_t stamped;
    int rc;
} gworker;

static void *group_main(void *arg)
{
    gworker *w = arg;
    es_client *c = NULL;
    es_group_member *m = NULL;
    uint64_t *pos = malloc(GROUPS_BENCH_MAX_BATCH * sizeof *pos);
    if (!pos || connect_client(w->cfg, &c) != ES_OK) {
        w->rc = 3;
        goto out;
    }
    if (es_group_join(c, w->group, 1000, "esbench", &m) != ES_OK) {
        fprintf(stderr, "esbench: join: %s\n", es_client_errmsg(c));
        w->rc = 1;
        goto out;
    }
    while (!atomic_load(&stop_flag)) {
        es_recorded_event *evs;
        size_t n = 0;
        es_err rv = es_group_next(m, 100, &evs, &n);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: group: %s\n", es_client_errmsg(c));
            w->rc = 1;
            break;
        }
        if (n == 0) {
            continue;
        }
        bool live = atomic_load(w->live);
        uint64_t now = now_us();
        size_t k = 0;
        for (size_t i = 0; i < n && k < GROUPS_BENCH_MAX_BATCH; i++) {
            if (live) {
                uint64_t t = parse_stamp(evs[i].data, evs[i].data_len);
                if (t != 0 && t <= now) {
                    hist_add(&w->lat, now - t);
                    w->stamped++;
                }
            }
            pos[k++] = evs[i].position;
        }
        rv = es_group_ack(m, pos, k);
        if (rv != ES_OK) {
            fprintf(stderr, "esbench: ack: %s\n", es_client_errmsg(c));
            w->rc = 1;
            break;
        }
        atomic_fetch_add(w->acked_total, k);
    }
out:
    es_group_leave(m);
    es_client_destroy(c);
    free(pos);
    return NULL;
}

/* Wait until the members acked `want` events (at most max_s seconds). */
static bool group_wait(_Atomic uint64_t *acked, uint64_t want, double max_s)
{
    uint64_t until = now_us() + (uint64_t)(max_s * 1e6);
    while (atomic_load(acked) < want && now_us() < until) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(acked) >= want;
}

/* Appends of one stamped event at cfg->rate per second for cfg->duration
 * seconds, sent without waiting (a window of replies in flight).
 * @return events appended, or UINT64_MAX on an error. */
static uint64_t group_live_append(const config *cfg, es_client *c)
{
    enum { WINDOW = 256 };
    uint64_t handles[WINDOW];
    unsigned inflight = 0;
    size_t size = cfg->event_size < STAMP_MIN_BYTES ? STAMP_MIN_BYTES : cfg->event_size;
    uint8_t *payload = malloc(size);
    if (!payload) {
        return UINT64_MAX;
    }
    memset(payload, ' ', size);
    uint64_t t0 = now_us();
    uint64_t n_total = (uint64_t)(cfg->duration * cfg->rate);
    uint64_t sent = 0, seed = t0 | 1;
    bool failed = false;
    while ((sent < n_total || inflight) && !failed) {
        if (sent < n_total && inflight < WINDOW) {
            uint64_t due = t0 + sent * 1000000u / cfg->rate;
            uint64_t now = now_us();
            if (now < due) {
                if (inflight) {
                    /* Collect what is done meanwhile, without waiting. */
                    es_append_result res;
                    if (es_stream_append_wait(c, handles[0], &res) != ES_OK) {
                        failed = true;
                    }
                    memmove(handles, handles + 1, (inflight - 1) * sizeof handles[0]);
                    inflight--;
                    continue;
                }
                struct timespec ts = {0, (long)(due - now) * 1000};
                nanosleep(&ts, NULL);
                continue;
            }
            stamp_payload(payload, size, now_us());
            es_event ev;
            memset(&ev, 0, sizeof ev);
            ev.type = "BenchLive";
            ev.data = payload;
            ev.data_len = size;
            char stream[48];
            snprintf(stream, sizeof stream, "gbench-%" PRIu64, xorshift(&seed) % cfg->streams);
            if (es_stream_append_send(c, stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1,
                                      &handles[inflight]) != ES_OK) {
                failed = true;
                break;
            }
            inflight++;
            sent++;
            continue;
        }
        es_append_result res;
        if (es_stream_append_wait(c, handles[0], &res) != ES_OK) {
            failed = true;
        }
        memmove(handles, handles + 1, (inflight - 1) * sizeof handles[0]);
        inflight--;
    }
    if (failed) {
        fprintf(stderr, "esbench: live append: %s\n", es_client_errmsg(c));
    }
    free(payload);
    return failed ? UINT64_MAX : sent;
}

static int run_group(const config *cfg, result *out)
{
    memset(out, 0, sizeof *out);
    es_client *c;
    if (connect_client(cfg, &c) != ES_OK) {
        return 3;
    }
    int rc = group_fill(cfg, c);
    if (rc) {
        es_client_destroy(c);
        return rc;
    }
    char group[64];
    snprintf(group, sizeof group, "bench-%" PRIu64, now_us());
    es_group_settings set;
    es_group_settings_init(&set);
    set.ack_timeout_ms = 60000;
    if (es_group_create(c, group, ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set) != ES_OK) {
        fprintf(stderr, "esbench: group create: %s\n", es_client_errmsg(c));
        es_client_destroy(c);
        return 1;
    }
    es_stats st;
    if (es_stats_get(c, &st) != ES_OK) {
        fprintf(stderr, "esbench: stats: %s\n", es_client_errmsg(c));
        es_client_destroy(c);
        return 1;
    }
    uint64_t backlog = st.head_position; /* the whole log, earlier runs' events included */
    _Atomic uint64_t acked = 0;
    _Atomic bool live = false;
    gworker ws[GROUP_MAX_CONSUMERS];
    memset(ws, 0, sizeof ws);
    atomic_store(&stop_flag, false);
    uint64_t t0 = now_us();
    for (unsigned i = 0; i < cfg->consumers; i++) {
        ws[i].cfg = cfg;
        ws[i].group = group;
        ws[i].acked_total = &acked;
        ws[i].live = &live;
        pthread_create(&ws[i].th, NULL, group_main, &ws[i]);
    }
    bool done = group_wait(&acked, backlog, 600);
    uint64_t t1 = now_us();
    out->events = atomic_load(&acked);
    out->seconds = (double)(t1 - t0) / 1e6;
    out->bytes = out->events * cfg->event_size;
    out->requests = cfg->consumers;
    if (!done) {
        fprintf(stderr, "esbench: the group acked %" PRIu64 " of %" PRIu64 " events in 600 s\n",
                out->events, backlog);
        rc = 1;
    }
    if (rc == 0 && cfg->duration > 0) {
        atomic_store(&live, true);
        uint64_t l0 = now_us();
        uint64_t sent = group_live_append(cfg, c);
        if (sent == UINT64_MAX) {
            rc = 1;
        } else {
            out->appended = sent;
            if (!group_wait(&acked, backlog + sent, 30)) {
                fprintf(stderr, "esbench: the live events were not all acked in 30 s\n");
                rc = 1;
            }
        }
        out->live_seconds = (double)(now_us() - l0) / 1e6;
    }
    atomic_store(&stop_flag, true);
    for (unsigned i = 0; i < cfg->consumers; i++) {
        pthread_join(ws[i].th, NULL);
        hist_merge(&out->lat, &ws[i].lat);
        out->live_events += ws[i].stamped;
        rc = rc ? rc : ws[i].rc;
    }
    es_client_destroy(c);
    return rc;
}

/* ----------------------------------------------------------------- report -- */

static void report(const config *cfg, const result *r)
{
    double eps = r->seconds > 0 ? (double)r->events / r->seconds : 0;
    double mbs = r->seconds > 0 ? (double)r->bytes / r->seconds / 1e6 : 0;
    uint64_t p50 = hist_pct(&r->lat, 50), p99 = hist_pct(&r->lat, 99),
             p999 = hist_pct(&r->lat, 99.9);
    if (cfg->json) {
        printf("{\"workload\":\"%s\",\"connections\":%u,\"threads\":%u,\"batch\":%u,\"streams\":%u,"
               "\"events\":%" PRIu64 ",\"event_size\":%u,\"expected\":\"%s\",\"duration\":%.3f,"
               "\"sync\":\"%s\",\"events_total\":%" PRIu64 ",\"requests\":%" PRIu64
               ",\"conflicts\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"events_per_sec\":%.1f,"
               "\"mb_per_sec\":%.2f,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
               ",\"p999_us\":%" PRIu64 ",\"commits\":%" PRIu64 ",\"mean_commit_batch\":%.2f",
               cfg->wname, cfg->connections, cfg->threads, cfg->batch, cfg->streams, cfg->events,
               cfg->event_size, cfg->exact ? "exact" : "any", r->seconds,
               cfg->sync ? "full" : "none", r->events, r->requests, r->conflicts, r->errors, eps,
               mbs, p50, p99, p999, r->commits, r->mean_batch);
        if (cfg->w == W_SUBSCRIBE || cfg->w == W_LATENCY || cfg->w == W_GROUP) {
            /* The live phase's figures, after the common keys. */
            printf(",\"live_seconds\":%.3f,\"live_events\":%" PRIu64
                   ",\"live_events_per_sec\":%.1f,\"appended\":%" PRIu64
                   ",\"order_errors\":%" PRIu64,
                   r->live_seconds, r->live_events,
                   r->live_seconds > 0 ? (double)r->live_events / r->live_seconds : 0, r->appended,
                   r->order_errors);
        }
        if (cfg->w == W_FANOUT) {
            printf(",\"idle_subs\":%" PRIu64 ",\"idle_connections\":%" PRIu64
                   ",\"matching_subs\":%" PRIu64 ",\"matching_connections\":%" PRIu64
                   ",\"delivered\":%" PRIu64
                   ",\"delivered_per_sec\":%.1f,\"expected_delivered\":%" PRIu64
                   ",\"drain_seconds\":%.3f,\"order_errors\":%" PRIu64
                   ",\"server_cpu_s\":%.2f,\"server_cpu_us_per_event\":%.1f",
                   r->idle_subs, r->idle_conns, r->matching_subs, r->matching_conns, r->delivered,
                   r->seconds > 0 ? (double)r->delivered / r->seconds : 0,
                   r->events * r->matching_subs, r->drain_seconds, r->order_errors, r->server_cpu_s,
                   r->events && r->server_cpu_s >= 0 ? r->server_cpu_s * 1e6 / (double)r->events
                                                     : -1.0);
            if (r->delivered) {
                /* Whole run (appending and draining), per delivered event. */
                double d = (double)r->delivered;
                printf(",\"rate\":%u,\"server_user_s\":%.2f,\"server_sys_s\":%.2f"
                       ",\"client_user_s\":%.2f,\"client_sys_s\":%.2f"
                       ",\"server_ns_per_delivery\":%.0f,\"client_ns_per_delivery\":%.0f",
                       cfg->rate_set ? cfg->rate : 0, r->server_user_s, r->server_sys_s,
                       r->client_user_s, r->client_sys_s,
                       r->server_user_s >= 0 ? (r->server_user_s + r->server_sys_s) * 1e9 / d
                                             : -1.0,
                       (r->client_user_s + r->client_sys_s) * 1e9 / d);
            }
        }
        printf("}\n");
        return;
    }
    if (cfg->w == W_FANOUT) {
        printf("subscriptions %" PRIu64 " idle over %" PRIu64 " connections, %" PRIu64
               " matching over %" PRIu64 "\n",
               r->idle_subs, r->idle_conns, r->matching_subs, r->matching_conns);
        if (r->server_cpu_s >= 0 && r->events) {
            printf("esd cpu      %.2f s, %.1f us per appended event\n", r->server_cpu_s,
                   r->server_cpu_s * 1e6 / (double)r->events);
        }
        if (r->matching_subs) {
            printf("delivered    %" PRIu64 " of %" PRIu64
                   " events (%.0f/s), at the head %.3f s after "
                   "the appenders stopped\n",
                   r->delivered, r->events * r->matching_subs,
                   r->seconds > 0 ? (double)r->delivered / r->seconds : 0, r->drain_seconds);
            if (r->delivered) {
                double d = (double)r->delivered;
                printf("cpu          per delivered event, appending and draining: esd %.0f ns "
                       "(user %.2f s, system %.2f s), esbench %.0f ns (user %.2f s, system %.2f "
                       "s)\n",
                       r->server_user_s >= 0 ? (r->server_user_s + r->server_sys_s) * 1e9 / d
                                             : -1.0,
                       r->server_user_s, r->server_sys_s,
                       (r->client_user_s + r->client_sys_s) * 1e9 / d, r->client_user_s,
                       r->client_sys_s);
            }
        }
    }
    printf("workload     %s (%u connection%s, batch %u, %u-byte events, %s, sync %s)\n", cfg->wname,
           cfg->connections, cfg->connections == 1 ? "" : "s", cfg->batch, cfg->event_size,
           cfg->exact ? "exact" : "any", cfg->sync ? "full" : "none");
    if (cfg->w == W_GROUP) {
        printf("group        %u members, %" PRIu64 " events acked in %.2f s (catch-up, batched "
               "acks)\n",
               cfg->consumers, r->events, r->seconds);
        printf("events/s     %.0f\n", eps);
        printf("live         %" PRIu64 " appended at %u/s over %.2f s; %" PRIu64 " delivered\n",
               r->appended, cfg->rate, r->live_seconds, r->live_events);
        printf("%-12s p50 %" PRIu64 " us, p99 %" PRIu64 " us, p999 %" PRIu64 " us (%" PRIu64
               " events)\n",
               "append->delivery", p50, p99, p999, r->lat.count);
        return;
    }
    if (cfg->w == W_SUBSCRIBE || cfg->w == W_LATENCY) {
        const char *what = cfg->w == W_SUBSCRIBE ? "catch-up" : "delivered";
        printf("events       %" PRIu64 " in %.2f s (%s)\n", r->events, r->seconds, what);
        printf("events/s     %.0f\n", eps);
        printf("MB/s         %.2f\n", mbs);
        printf("live         %" PRIu64 " events delivered in %.2f s (%.0f/s) while %u connection%s "
               "appended %" PRIu64 "\n",
               r->live_events, r->live_seconds,
               r->live_seconds > 0 ? (double)r->live_events / r->live_seconds : 0, cfg->connections,
               cfg->connections == 1 ? "" : "s", r->appended);
        printf("%-12s p50 %" PRIu64 " us, p99 %" PRIu64 " us, p999 %" PRIu64 " us (%" PRIu64
               " events)\n",
               "append->delivery", p50, p99, p999, r->lat.count);
        if (r->order_errors) {
            printf("ORDER ERRORS %" PRIu64 " (events out of order or repeated)\n", r->order_errors);
        }
        return;
    }
    printf("events       %" PRIu64 " in %.2f s\n", r->events, r->seconds);
    printf("events/s     %.0f\n", eps);
    printf("MB/s         %.2f\n", mbs);
    printf("%-12s p50 %" PRIu64 " us, p99 %" PRIu64 " us, p999 %" PRIu64 " us\n",
           cfg->w == W_APPEND || cfg->w == W_FANOUT ? "latency" : "per replay", p50, p99, p999);
    if (cfg->w == W_APPEND || cfg->w == W_FANOUT) {
        printf("requests     %" PRIu64 " ok, %" PRIu64 " conflicts, %" PRIu64 " errors\n",
               r->requests, r->conflicts, r->errors);
        if (r->commits) {
            printf("commits      %" PRIu64 ", mean batch %.2f requests, max %u\n", r->commits,
                   r->mean_batch, r->max_batch);
        }
    }
}

/* Thousands of connections (fanout) need descriptors: the soft limit up to
 * the hard one, for esbench and the esd it starts. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    raise_nofile();
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"connections", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},
        {"streams", required_argument, NULL, 'S'},
        {"events", required_argument, NULL, 'e'},
        {"event-size", required_argument, NULL, 'z'},
        {"expected", required_argument, NULL, 'x'},
        {"duration", required_argument, NULL, 'd'},
        {"sync", required_argument, NULL, 'y'},
        {"esd", required_argument, NULL, 'E'},
        {"json", no_argument, NULL, 'j'},
        {"idle-subs", required_argument, NULL, 'N'},
        {"matching-subs", required_argument, NULL, 'M'},
        {"consumers", required_argument, NULL, 'G'},
        {"rate", required_argument, NULL, 'R'},
        {"user", required_argument, NULL, 'U'},
        {"token-file", required_argument, NULL, 'T'},
        {"tls", no_argument, NULL, 'L'},
        {"tls-ca", required_argument, NULL, 'A'},
        {"tls-insecure", no_argument, NULL, 'I'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    config cfg = {.connections = 1,
                  .threads = 2,
                  .batch = 1,
                  .streams = 10000,
                  .events = 100000,
                  .event_size = 200,
                  .duration = 10,
                  .idle_subs = 20000,
                  .consumers = 4,
                  .rate = 1000,
                  .sync = true};
    int ch;
    uint64_t v;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (ch) {
        case 's':
            cfg.server = optarg;
            break;
        case 'c':
            ok = parse_uint(optarg, 1, 4096, &v);
            cfg.connections = (unsigned)v;
            break;
        case 't':
            ok = parse_uint(optarg, 1, 4096, &v);
            cfg.threads = (unsigned)v;
            break;
        case 'b':
            ok = parse_uint(optarg, 1, 10000, &v);
            cfg.batch = (unsigned)v;
            break;
        case 'S':
            ok = parse_uint(optarg, 1, 100000000, &v);
            cfg.streams = (unsigned)v;
            break;
        case 'e':
            ok = parse_uint(optarg, 1, UINT64_MAX / 2, &cfg.events);
            cfg.events_set = true;
            break;
        case 'G':
            ok = parse_uint(optarg, 1, GROUP_MAX_CONSUMERS, &v);
            cfg.consumers = (unsigned)v;
            break;
        case 'R':
            ok = parse_uint(optarg, 1, 1000000, &v);
            cfg.rate = (unsigned)v;
            cfg.rate_set = true;
            break;
        case 'z':
            ok = parse_uint(optarg, 0, 8u << 20, &v);
            cfg.event_size = (unsigned)v;
            break;
        case 'x':
            ok = !strcmp(optarg, "any") || !strcmp(optarg, "exact");
            cfg.exact = !strcmp(optarg, "exact");
            break;
        case 'd': {
            char *end;
            cfg.duration = strtod(optarg, &end);
            ok = *end == '\0' && cfg.duration > 0 && cfg.duration <= 86400;
            break;
        }
        case 'y':
            ok = !strcmp(optarg, "full") || !strcmp(optarg, "none");
            cfg.sync = !strcmp(optarg, "full");
            break;
        case 'E':
            cfg.esd_path = optarg;
            break;
        case 'j':
            cfg.json = true;
            break;
        case 'N':
            ok = parse_uint(optarg, 0, 1000000, &cfg.idle_subs);
            break;
        case 'M':
            ok = parse_uint(optarg, 0, 100000, &cfg.matching_subs);
            break;
        case 'U':
            cfg.user = optarg;
            break;
        case 'T':
            cfg.token_file = optarg;
            break;
        case 'L':
            cfg.tls.tls = true;
            break;
        case 'A':
            cfg.tls.ca_file = optarg;
            break;
        case 'I':
            cfg.tls.insecure = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "esbench: bad option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "esbench: invalid value '%s' for %s\n", optarg, argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    cfg.wname = argv[optind];
    cfg.stamp = false;
    if (!cfg.user) {
        cfg.user = getenv("ES_USER");
    }
    if (tool_token_load(&cfg.token, cfg.token_file, "esbench") != 0) {
        return 2;
    }
    if (!strcmp(cfg.wname, "append")) {
        cfg.w = W_APPEND;
    } else if (!strcmp(cfg.wname, "read-stream")) {
        cfg.w = W_READ_STREAM;
    } else if (!strcmp(cfg.wname, "read-all")) {
        cfg.w = W_READ_ALL;
    } else if (!strcmp(cfg.wname, "subscribe")) {
        cfg.w = W_SUBSCRIBE;
        cfg.stamp = true;
    } else if (!strcmp(cfg.wname, "latency")) {
        cfg.w = W_LATENCY;
        cfg.stamp = true;
    } else if (!strcmp(cfg.wname, "fanout")) {
        cfg.w = W_FANOUT;
    } else if (!strcmp(cfg.wname, "group")) {
        cfg.w = W_GROUP;
        cfg.stamp = true;
        if (!cfg.events_set) {
            cfg.events = 1000000;
        }
    } else {
        fprintf(stderr, "esbench: unknown workload '%s'\n", cfg.wname);
        return 2;
    }
    if (cfg.server) {
        snprintf(cfg.address, sizeof cfg.address, "%s", cfg.server);
    } else if (start_esd(&cfg, argv[0]) != 0) {
        stop_esd();
        return 3;
    }
    signal(SIGPIPE, SIG_IGN);
    result r;
    memset(&r, 0, sizeof r);
    int rc = 1;
    switch (cfg.w) {
    case W_APPEND:
        rc = run_append(&cfg, &r);
        break;
    case W_READ_STREAM:
        rc = run_read(&cfg, false, &r);
        break;
    case W_READ_ALL:
        rc = run_read(&cfg, true, &r);
        break;
    case W_SUBSCRIBE:
        rc = run_subscribe(&cfg, &r);
        break;
    case W_LATENCY:
        rc = run_latency(&cfg, &r);
        break;
    case W_FANOUT:
        rc = run_fanout(&cfg, &r);
        break;
    case W_GROUP:
        rc = run_group(&cfg, &r);
        break;
    }
    if (rc == 0 && r.order_errors) {
        rc = 1; /* reported below: a delivery out of order is a bug */
    }
    if (rc == 0 || r.order_errors || (cfg.w == W_FANOUT && r.events)) {
        report(&cfg, &r); /* fanout: also when the subscribers fell behind */
    }
    stop_esd();
    return rc;
}

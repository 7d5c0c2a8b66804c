/*
 * store_bench — storage-level throughput of the event log engine (store.h),
 * without the network, the protocol or the server's threads.
 *
 * Design notes: each measurement runs on a fresh store in its own temporary
 * directory (removed afterwards unless --keep), so the runs do not inherit
 * each other's B-tree shape. Appends go to streams picked at random out of
 * --streams with expectation `any`, in batches of --batch events, in two
 * shapes: "1x100" = one store_append_batch call holding one request of 100
 * events (one append of many events, as a client's multi-event append),
 * "100x1" = one call holding 100 single-event requests (a group commit of
 * many clients' appends). Each shape runs with sync off (MDB_NOSYNC) and
 * with sync on (an fsync per commit, i.e. per batch); the sync-on count is
 * --sync-events (by default the same as --events; lower it on a disk with
 * a slow fsync) and is printed. The replay measurement appends --replay
 * events to one stream and reads it back forward with store_read_stream in pages (--page, capped by
 * the store) with a visitor that touches every record; a second line also
 * decodes each record with protobuf-c, as a client rehydrating an aggregate
 * would. Timing is CLOCK_MONOTONIC around the measured calls only (event
 * ids and stream names are prepared before each call but inside the timed
 * loop; that cost is small against a commit). One line per measurement:
 *
 *   append sync=off shape=1x100 events=1000000 batches=10000 secs=… events/s=…
 *   replay events=100000 page=4096 secs=… events/s=…
 *   read category events=100000 pages=… secs=… events/s=…
 *
 * The "read category" and "read type" lines read the replayed events again
 * through the category and the event-type index (store_read_all).
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "es.pb-c.h"
#include "es/err.h"
#include "store.h"

typedef struct bench_opts {
    uint64_t events;      /* appends with sync off */
    uint64_t sync_events; /* appends with sync on; UINT64_MAX = as events */
    uint32_t batch;       /* events per store_append_batch call */
    uint32_t streams;     /* streams picked from at random */
    uint32_t size;        /* bytes of data per event */
    uint64_t replay;      /* events in the replayed stream */
    uint32_t page;        /* page size of the replay */
    const char *tmp;      /* parent of the temporary directories */
    bool keep;
    const char *only; /* run only measurements whose label contains this */
    bool no_encrypt;
} bench_opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: reproducible stream picks. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static store *open_fresh(const bench_opts *o, bool sync, char *dir, size_t dir_len)
{
    snprintf(dir, dir_len, "%s/store_bench.XXXXXX", o->tmp);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "store_bench: mkdtemp %s: %s\n", dir, strerror(errno));
        exit(1);
    }
    store_options so = {.path = dir, .sync = sync, .no_encrypt = o->no_encrypt};
    store *s;
    char msg[512] = "";
    es_err rv = store_open(&so, &s, msg, sizeof msg);
    if (rv != ES_OK) {
        fprintf(stderr, "store_bench: store_open %s: %s: %s\n", dir, es_errname(rv), msg);
        exit(1);
    }
    return s;
}

static void close_fresh(const bench_opts *o, store *s, const char *dir)
{
    store_close(s);
    if (!o->keep) {
        rm_rf(dir);
    }
}

/* Event ids ordered by creation, as libesclient's UUIDv7 ids are: the run
 * and the event number big-endian, so the id index grows at its right edge. */
static void set_id(uint8_t id[16], uint64_t run, uint64_t n)
{
    for (int i = 0; i < 8; i++) {
        id[i] = (uint8_t)(run >> (56 - 8 * i));
        id[8 + i] = (uint8_t)(n >> (56 - 8 * i));
    }
}

static bool want(const bench_opts *o, const char *label)
{
    return !o->only || strstr(label, o->only) != NULL;
}

/*
 * Append `total` events in calls of o->batch events: either one request of
 * o->batch events (one_request) or o->batch requests of one event each.
 */
static void bench_append(const bench_opts *o, bool sync, bool one_request, uint64_t total)
{
    char label[64];
    if (one_request) {
        snprintf(label, sizeof label, "append sync=%s shape=1x%u", sync ? "on" : "off", o->batch);
    } else {
        snprintf(label, sizeof label, "append sync=%s shape=%ux1", sync ? "on" : "off", o->batch);
    }
    if (!want(o, label) || total == 0) {
        return;
    }
    char dir[4096];
    store *s = open_fresh(o, sync, dir, sizeof dir);
    uint32_t b = o->batch;
    uint8_t *payload = malloc(o->size ? o->size : 1);
    uint8_t(*ids)[16] = calloc(b, sizeof *ids);
    char(*names)[24] = calloc(b, sizeof *names);
    store_event_in *ev = calloc(b, sizeof *ev);
    store_append_in *ap = calloc(b, sizeof *ap);
    store_append_result *res = calloc(b, sizeof *res);
    store_request *reqs = calloc(b, sizeof *reqs);
    if (!payload || !ids || !names || !ev || !ap || !res || !reqs) {
        fprintf(stderr, "store_bench: out of memory\n");
        exit(1);
    }
    for (uint32_t i = 0; i < o->size; i++) {
        payload[i] = (uint8_t)(i * 131 + 7);
    }
    for (uint32_t i = 0; i < b; i++) {
        ev[i] = (store_event_in){
            .id = ids[i],
            .type = (const uint8_t *)"BenchEvent",
            .type_len = 10,
            .data = payload,
            .data_len = o->size,
        };
    }
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ (sync ? 1 : 0) ^ (one_request ? 2 : 0);
    uint64_t run = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    uint64_t done = 0, calls = 0;
    double t0 = now_s();
    while (done < total) {
        uint32_t n = total - done < b ? (uint32_t)(total - done) : b;
        for (uint32_t i = 0; i < n; i++) {
            set_id(ids[i], run, done + i);
        }
        size_t nreq;
        if (one_request) {
            snprintf(names[0], sizeof names[0], "bench-%" PRIu64, rng_next(&rng) % o->streams);
            ap[0] = (store_append_in){.stream = (const uint8_t *)names[0],
                                      .stream_len = strlen(names[0]),
                                      .expect = STORE_EXPECT_ANY,
                                      .events = ev,
                                      .n_events = n};
            reqs[0] = (store_request){.appends = &ap[0], .n_appends = 1, .results = &res[0]};
            nreq = 1;
        } else {
            for (uint32_t i = 0; i < n; i++) {
                snprintf(names[i], sizeof names[i], "bench-%" PRIu64, rng_next(&rng) % o->streams);
                ap[i] = (store_append_in){.stream = (const uint8_t *)names[i],
                                          .stream_len = strlen(names[i]),
                                          .expect = STORE_EXPECT_ANY,
                                          .events = &ev[i],
                                          .n_events = 1};
                reqs[i] = (store_request){.appends = &ap[i], .n_appends = 1, .results = &res[i]};
            }
            nreq = n;
        }
        es_err rv = store_append_batch(s, reqs, nreq);
        if (rv != ES_OK) {
            fprintf(stderr, "store_bench: store_append_batch: %s\n", es_errname(rv));
            exit(1);
        }
        for (size_t i = 0; i < nreq; i++) {
            if (reqs[i].rv != ES_OK) {
                fprintf(stderr, "store_bench: request: %s\n", es_errname(reqs[i].rv));
                exit(1);
            }
        }
        done += n;
        calls++;
    }
    double secs = now_s() - t0;
    if (store_head(s) != total) {
        fprintf(stderr, "store_bench: head %" PRIu64 ", expected %" PRIu64 "\n", store_head(s),
                total);
        exit(1);
    }
    store_stats st;
    store_stats_get(s, &st);
    printf("%s events=%" PRIu64 " batches=%" PRIu64 " streams=%" PRIu64
           " size=%u secs=%.3f events/s=%.0f batches/s=%.0f file_mb=%.1f\n",
           label, total, calls, st.stream_count, o->size, secs, (double)total / secs,
           (double)calls / secs, (double)st.map_used / 1e6);
    fflush(stdout);
    close_fresh(o, s, dir);
    free(payload);
    free(ids);
    free(names);
    free(ev);
    free(ap);
    free(res);
    free(reqs);
}

typedef struct replay_ctx {
    uint64_t n;
    uint64_t bytes;
    uint64_t next_rev;
    bool decode;
    bool bad;
} replay_ctx;

static int replay_visit(void *ctx, const store_record *rec)
{
    replay_ctx *c = ctx;
    c->n++;
    c->bytes += rec->len + rec->bytes[0] + rec->bytes[rec->len - 1];
    if (c->decode) {
        Es__V1__RecordedEvent *e = es__v1__recorded_event__unpack(NULL, rec->len, rec->bytes);
        if (!e || e->revision != c->next_rev) {
            c->bad = true;
        }
        c->next_rev++;
        es__v1__recorded_event__free_unpacked(e, NULL);
    }
    return 0;
}

static void bench_replay(const bench_opts *o)
{
    if (!want(o, "replay") || o->replay == 0) {
        return;
    }
    char dir[4096];
    store *s = open_fresh(o, false, dir, sizeof dir);
    uint8_t *payload = malloc(o->size ? o->size : 1);
    enum { CHUNK = 1000 };
    uint8_t(*ids)[16] = calloc(CHUNK, sizeof *ids);
    store_event_in *ev = calloc(CHUNK, sizeof *ev);
    if (!payload || !ids || !ev) {
        fprintf(stderr, "store_bench: out of memory\n");
        exit(1);
    }
    memset(payload, 'r', o->size);
    uint64_t run = (uint64_t)time(NULL) ^ 0xabcdef;
    for (uint64_t done = 0; done < o->replay;) {
        uint32_t n = o->replay - done < CHUNK ? (uint32_t)(o->replay - done) : CHUNK;
        for (uint32_t i = 0; i < n; i++) {
            set_id(ids[i], run, done + i);
            ev[i] = (store_event_in){.id = ids[i],
                                     .type = (const uint8_t *)"BenchEvent",
                                     .type_len = 10,
                                     .data = payload,
                                     .data_len = o->size};
        }
        store_append_in a = {.stream = (const uint8_t *)"replay-1",
                             .stream_len = 8,
                             .expect = STORE_EXPECT_ANY,
                             .events = ev,
                             .n_events = n};
        store_append_result r;
        store_request q = {.appends = &a, .n_appends = 1, .results = &r};
        if (store_append_batch(s, &q, 1) != ES_OK || q.rv != ES_OK) {
            fprintf(stderr, "store_bench: replay fill failed: %s\n", es_errname(q.rv));
            exit(1);
        }
        done += n;
    }
    for (int decode = 0; decode <= 1; decode++) {
        replay_ctx c = {.decode = decode};
        uint64_t from = 0, pages = 0;
        double t0 = now_s();
        for (;;) {
            store_page pg;
            es_err rv = store_read_stream(s, (const uint8_t *)"replay-1", 8, from, false, o->page,
                                          replay_visit, &c, &pg);
            if (rv != ES_OK) {
                fprintf(stderr, "store_bench: store_read_stream: %s\n", es_errname(rv));
                exit(1);
            }
            pages++;
            if (pg.end) {
                break;
            }
            from = pg.next;
        }
        double secs = now_s() - t0;
        if (c.n != o->replay || c.bad) {
            fprintf(stderr, "store_bench: replay read %" PRIu64 " of %" PRIu64 "%s\n", c.n,
                    o->replay, c.bad ? " (bad record)" : "");
            exit(1);
        }
        printf("replay%s events=%" PRIu64 " page=%u pages=%" PRIu64
               " secs=%.3f events/s=%.0f MB/s=%.1f\n",
               decode ? "+decode" : "", c.n, o->page ? o->page : STORE_DEFAULT_MAX_PAGE, pages,
               secs, (double)c.n / secs, (double)c.bytes / secs / 1e6);
        fflush(stdout);
    }
    /* Filtered reads of the same events: by category ("replay") and by
     * event type, each record fetched through its index entry. */
    static const struct {
        const char *label;
        store_filter f;
    } filters[] = {
        {"category", {STORE_FILTER_CATEGORY, (const uint8_t *)"replay", 6}},
        {"type", {STORE_FILTER_EVENT_TYPE, (const uint8_t *)"BenchEvent", 10}},
    };
    for (size_t fi = 0; fi < sizeof filters / sizeof filters[0]; fi++) {
        replay_ctx c = {.decode = false};
        uint64_t from = 0, pages = 0;
        double t0 = now_s();
        for (;;) {
            store_page pg;
            es_err rv =
                store_read_all(s, &filters[fi].f, from, false, o->page, replay_visit, &c, &pg);
            if (rv != ES_OK) {
                fprintf(stderr, "store_bench: store_read_all: %s\n", es_errname(rv));
                exit(1);
            }
            pages++;
            if (pg.end) {
                break;
            }
            from = pg.next;
        }
        double secs = now_s() - t0;
        if (c.n != o->replay) {
            fprintf(stderr, "store_bench: %s read %" PRIu64 " of %" PRIu64 "\n", filters[fi].label,
                    c.n, o->replay);
            exit(1);
        }
        printf("read %s events=%" PRIu64 " pages=%" PRIu64 " secs=%.3f events/s=%.0f\n",
               filters[fi].label, c.n, pages, secs, (double)c.n / secs);
        fflush(stdout);
    }
    close_fresh(o, s, dir);
    free(payload);
    free(ids);
    free(ev);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: store_bench [options]\n"
                 "  --events N       events appended per sync-off measurement (1000000)\n"
                 "  --sync-events N  events appended per sync-on measurement (as --events;\n"
                 "                   each batch is one fsync: lower it on slow disks)\n"
                 "  --batch N        events per store_append_batch call (100)\n"
                 "  --streams N      streams picked from at random (10000)\n"
                 "  --size N         data bytes per event (200)\n"
                 "  --replay N       events in the replayed stream (100000)\n"
                 "  --page N         replay page size, capped by the store (0 = the cap)\n"
                 "  --only WORD      run only measurements whose label contains WORD\n"
                 "                   (e.g. replay, sync=on, 100x1)\n"
                 "  --dir PATH       parent of the temporary stores ($TMPDIR or /tmp)\n"
                 "  --keep           keep the stores\n"
                 "  --no-encryption  stores without encryption at rest\n");
}

static uint64_t parse_u64(const char *flag, const char *v, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v ? v : "", &end, 10);
    if (!v || errno || *end || end == v || x > max) {
        fprintf(stderr, "store_bench: bad value for %s: %s\n", flag, v ? v : "(missing)");
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    bench_opts o = {
        .events = 1000000,
        .sync_events = UINT64_MAX,
        .batch = 100,
        .streams = 10000,
        .size = 200,
        .replay = 100000,
        .page = 0,
        .tmp = tmp && *tmp ? tmp : "/tmp",
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--events")) {
            o.events = parse_u64(a, v, UINT64_MAX);
            i++;
        } else if (!strcmp(a, "--sync-events")) {
            o.sync_events = parse_u64(a, v, UINT64_MAX);
            i++;
        } else if (!strcmp(a, "--batch")) {
            o.batch = (uint32_t)parse_u64(a, v, STORE_DEFAULT_MAX_EVENTS_PER_APPEND);
            i++;
        } else if (!strcmp(a, "--streams")) {
            o.streams = (uint32_t)parse_u64(a, v, UINT32_MAX);
            i++;
        } else if (!strcmp(a, "--size")) {
            o.size = (uint32_t)parse_u64(a, v, STORE_DEFAULT_MAX_EVENT_BYTES);
            i++;
        } else if (!strcmp(a, "--replay")) {
            o.replay = parse_u64(a, v, UINT64_MAX);
            i++;
        } else if (!strcmp(a, "--page")) {
            o.page = (uint32_t)parse_u64(a, v, UINT32_MAX);
            i++;
        } else if (!strcmp(a, "--only")) {
            if (!v) {
                usage(stderr);
                return 2;
            }
            o.only = v;
            i++;
        } else if (!strcmp(a, "--dir")) {
            if (!v) {
                usage(stderr);
                return 2;
            }
            o.tmp = v;
            i++;
        } else if (!strcmp(a, "--keep")) {
            o.keep = true;
        } else if (!strcmp(a, "--no-encryption")) {
            o.no_encrypt = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (o.batch == 0 || o.streams == 0) {
        fprintf(stderr, "store_bench: --batch and --streams must be > 0\n");
        return 2;
    }
    bench_append(&o, false, true, o.events);
    bench_append(&o, false, false, o.events);
    if (o.sync_events == UINT64_MAX) {
        o.sync_events = o.events;
    }
    bench_append(&o, true, true, o.sync_events);
    bench_append(&o, true, false, o.sync_events);
    bench_replay(&o);
    return 0;
}

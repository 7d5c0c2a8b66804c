/*
 * scavenge_bench — how much of a store the scavenger gives back: appends
 * --events events to --streams streams, lets retention (max_count, a tenth
 * of each stream) make 90 % of them unreadable, scavenges in slices of
 * --slice steps, and prints the pages in use before and after, the time
 * the scavenge took, its slices' durations, and the size of a compacted
 * backup.
 *
 * Design notes: a fresh store in a temporary directory (removed unless
 * --keep), sync off (the figures are about space; the slices' latency with
 * sync on is what esbench measures beside esd). "Used" pages are the data
 * file's pages minus LMDB's free list (store_pages_get): the pages that
 * hold records and indexes, including the ones the scavenge has not
 * reclaimed yet. The file itself does not shrink: its free pages are
 * reused by later writes, which the last line shows by appending
 * --refill events after the scavenge. Output, one line each:
 *
 *   appended events=… streams=… secs=… pages used=… free=… total=…
 *   retention events_unserved=… pages_unreclaimed=…
 *   scavenge slices=… removed=… bytes=… secs=… slice_p50_us=… slice_p99_us=… slice_max_us=…
 *   after pages used=… free=… total=… used_ratio=…%
 *   backup data.mdb bytes=… (compacted) vs file bytes=…
 *   refill events=… pages total=… (grew by …)
 */
#include <ftw.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void die(const char *what, es_err rv)
{
    fprintf(stderr, "scavenge_bench: %s: %s\n", what, es_strerror(rv));
    exit(1);
}

static uint64_t id_counter;

/* Append n events to stream number `s`, 100 per request, 10 requests a commit. */
static void append_round(store *st, uint64_t streams, uint64_t total, size_t data_len)
{
    enum { PER = 100, REQS = 10 };
    static uint8_t ids[REQS][PER][16];
    static store_event_in ev[REQS][PER];
    static store_append_in ap[REQS];
    static store_request rq[REQS];
    static store_append_result res[REQS];
    static char names[REQS][32];
    uint8_t *data = calloc(1, data_len ? data_len : 1);
    memset(data, 'x', data_len);
    uint64_t done = 0, next_stream = 0;
    while (done < total) {
        size_t nr = 0;
        for (; nr < REQS && done < total; nr++) {
            size_t k = total - done < PER ? (size_t)(total - done) : PER;
            for (size_t i = 0; i < k; i++) {
                uint64_t n = ++id_counter;
                memset(ids[nr][i], 0, 16);
                memcpy(ids[nr][i], &n, sizeof n);
                ids[nr][i][15] = 0x5c;
                ev[nr][i] = (store_event_in){.id = ids[nr][i],
                                             .type = (const uint8_t *)"Deposited",
                                             .type_len = 9,
                                             .data = data,
                                             .data_len = data_len};
            }
            snprintf(names[nr], sizeof names[nr], "acct-%" PRIu64, next_stream++ % streams);
            ap[nr] = (store_append_in){.stream = (const uint8_t *)names[nr],
                                       .stream_len = strlen(names[nr]),
                                       .expect = STORE_EXPECT_ANY,
                                       .events = ev[nr],
                                       .n_events = k};
            rq[nr] = (store_request){.appends = &ap[nr], .n_appends = 1, .results = &res[nr]};
            done += k;
        }
        es_err rv = store_append_batch(st, rq, nr);
        if (rv != ES_OK) {
            die("append", rv);
        }
        for (size_t i = 0; i < nr; i++) {
            if (rq[i].rv != ES_OK) {
                die("append", rq[i].rv);
            }
        }
    }
    free(data);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t events = 1000000, streams = 1000, refill = 100000;
    uint32_t slice = 1000;
    size_t data_len = 100;
    bool keep = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            events = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--streams") && i + 1 < argc) {
            streams = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--slice") && i + 1 < argc) {
            slice = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            data_len = strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--refill") && i + 1 < argc) {
            refill = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--keep")) {
            keep = true;
        } else {
            fprintf(stderr, "usage: scavenge_bench [--events N] [--streams N] [--slice STEPS] "
                            "[--data BYTES] [--refill N] [--keep]\n");
            return 2;
        }
    }
    if (streams == 0 || events < streams || slice == 0) {
        fprintf(stderr, "scavenge_bench: need --events >= --streams > 0 and --slice > 0\n");
        return 2;
    }
    char root[] = "/tmp/scavenge_bench.XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    char path[256], bdir[256];
    snprintf(path, sizeof path, "%s/db", root);
    snprintf(bdir, sizeof bdir, "%s/backup", root);
    store_options o = {.path = path, .sync = false};
    store *st;
    char msg[256];
    es_err rv = store_open(&o, &st, msg, sizeof msg);
    if (rv != ES_OK) {
        fprintf(stderr, "scavenge_bench: open: %s\n", msg);
        return 1;
    }

    uint64_t t0 = mono_us();
    append_round(st, streams, events, data_len);
    double secs = (double)(mono_us() - t0) / 1e6;
    store_pages p0;
    if ((rv = store_pages_get(st, &p0)) != ES_OK) {
        die("pages", rv);
    }
    printf("appended events=%" PRIu64 " streams=%" PRIu64 " secs=%.2f pages used=%" PRIu64
           " free=%" PRIu64 " total=%" PRIu64 "\n",
           events, streams, secs, p0.total - p0.free, p0.free, p0.total);

    for (uint64_t s = 0; s < streams; s++) {
        char name[32];
        snprintf(name, sizeof name, "acct-%" PRIu64, s);
        uint64_t per = events / streams + (s < events % streams);
        store_life_op op = {.kind = STORE_LIFE_SET_META,
                            .stream = (const uint8_t *)name,
                            .stream_len = strlen(name),
                            .expect = STORE_EXPECT_ANY,
                            .max_count = per / 10 ? per / 10 : 1};
        if ((rv = store_life_apply(st, &op)) != ES_OK) {
            die("set max_count", rv);
        }
    }
    store_pages p1;
    if ((rv = store_pages_get(st, &p1)) != ES_OK) {
        die("pages", rv);
    }
    printf("retention events_unserved=%" PRIu64 " pages_unreclaimed=%" PRIu64 "\n",
           p1.unreclaimed_events, p1.unreclaimed);

    size_t cap = 1024, n = 0;
    uint64_t *durs = malloc(cap * sizeof *durs);
    uint64_t removed = 0, bytes = 0;
    store_scavenge_result r;
    t0 = mono_us();
    do {
        uint64_t s0 = mono_us();
        if ((rv = store_scavenge_slice(st, slice, &r)) != ES_OK) {
            die("scavenge", rv);
        }
        if (n == cap) {
            cap *= 2;
            durs = realloc(durs, cap * sizeof *durs);
        }
        durs[n++] = mono_us() - s0;
        removed += r.events_removed;
        bytes += r.bytes_reclaimed;
    } while (r.more);
    secs = (double)(mono_us() - t0) / 1e6;
    qsort(durs, n, sizeof *durs, cmp_u64);
    printf("scavenge slices=%zu removed=%" PRIu64 " bytes=%" PRIu64
           " secs=%.2f slice_p50_us=%" PRIu64 " slice_p99_us=%" PRIu64 " slice_max_us=%" PRIu64
           "\n",
           n, removed, bytes, secs, durs[n / 2], durs[n * 99 / 100], durs[n - 1]);
    free(durs);

    store_pages p2;
    if ((rv = store_pages_get(st, &p2)) != ES_OK) {
        die("pages", rv);
    }
    uint64_t used0 = p1.total - p1.free, used2 = p2.total - p2.free;
    printf("after pages used=%" PRIu64 " free=%" PRIu64 " total=%" PRIu64 " used_ratio=%.1f%%\n",
           used2, p2.free, p2.total, 100.0 * (double)used2 / (double)(used0 ? used0 : 1));

    if ((rv = store_backup(st, bdir)) != ES_OK) {
        die("backup", rv);
    }
    char f1[300], f2[300];
    snprintf(f1, sizeof f1, "%s/data.mdb", bdir);
    snprintf(f2, sizeof f2, "%s/data.mdb", path);
    struct stat b1, b2;
    if (stat(f1, &b1) == 0 && stat(f2, &b2) == 0) {
        printf("backup data.mdb bytes=%lld (compacted) vs file bytes=%lld (%.1f%%)\n",
               (long long)b1.st_size, (long long)b2.st_size,
               100.0 * (double)b1.st_size / (double)(b2.st_size ? b2.st_size : 1));
    }

    append_round(st, streams, refill, data_len);
    store_pages p3;
    if ((rv = store_pages_get(st, &p3)) != ES_OK) {
        die("pages", rv);
    }
    printf("refill events=%" PRIu64 " pages total=%" PRIu64 " (grew by %" PRIu64 ")\n", refill,
           p3.total, p3.total - p2.total);
    store_close(st);
    if (!keep) {
        nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    } else {
        printf("kept %s\n", root);
    }
    return 0;
}

/* rel — plain test programs, clients, derived contents, log walks; see rel.h. */
#include "rel.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *test_name = "rel";
static uint64_t seed;
static int64_t start_ms;

/* ------------------------------------------------------------- reporting -- */

void rel_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: FAIL (seed %" PRIu64 "): ", test_name, seed);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    fflush(stdout);
    exit(1);
}

void rel_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: SKIP: ", test_name);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
    exit(77);
}

void rel_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("[%s +%.1fs] ", test_name, (double)(h_now_ms() - start_ms) / 1000.0);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
}

/* --------------------------------------------------------- command line -- */

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s) {
        return false;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) {
        return false;
    }
    *out = v;
    return true;
}

void rel_args(int argc, char **argv, const char *name, const char *const *names, uint64_t *values)
{
    test_name = name;
    start_ms = h_now_ms();
    const char *env_seed = getenv("REL_SEED");
    if (!env_seed || !parse_u64(env_seed, &seed)) {
        seed = (uint64_t)h_now_us() ^ ((uint64_t)getpid() << 32);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            goto usage;
        }
        a += 2;
        const char *v = argv[++i];
        if (!strcmp(a, "seed")) {
            if (!parse_u64(v, &seed)) {
                goto usage;
            }
            continue;
        }
        bool known = false;
        for (size_t k = 0; names && names[k]; k++) {
            if (!strcmp(a, names[k])) {
                if (!parse_u64(v, &values[k])) {
                    goto usage;
                }
                known = true;
                break;
            }
        }
        if (!known) {
            goto usage;
        }
    }
    printf("[%s] seed %" PRIu64 " (repeat with --seed %" PRIu64 ")", name, seed, seed);
    for (size_t k = 0; names && names[k]; k++) {
        printf(" --%s %" PRIu64, names[k], values[k]);
    }
    putchar('\n');
    fflush(stdout);
    return;
usage:
    fprintf(stderr, "usage: %s [--seed N]", argv[0]);
    for (size_t k = 0; names && names[k]; k++) {
        fprintf(stderr, " [--%s N]", names[k]);
    }
    fputc('\n', stderr);
    exit(2);
}

uint64_t rel_seed(void)
{
    return seed;
}

/* ---------------------------------------------------------------- random -- */

uint64_t rel_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t rel_rand(rel_rng *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return rel_mix(r->s);
}

uint64_t rel_range(rel_rng *r, uint64_t lo, uint64_t hi)
{
    if (hi <= lo) {
        return lo;
    }
    return lo + rel_rand(r) % (hi - lo + 1);
}

/* --------------------------------------------------------------- clients -- */

es_client *h_client(const char *address, const char *name)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = address;
    o.client_name = name;
    o.request_timeout_ms = 20000;
    o.reconnect_attempts = 5;
    o.backoff_initial_ms = 5;
    o.backoff_max_ms = 50;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    if (es_client_create(&o, &c) != ES_OK) {
        fprintf(stderr, "h_client: es_client_create failed\n");
        return NULL;
    }
    es_err rv = es_client_connect(c);
    if (rv != ES_OK) {
        fprintf(stderr, "h_client: connect to %s: %s\n", address, es_client_errmsg(c));
        es_client_destroy(c);
        return NULL;
    }
    return c;
}

es_client *rel_client(const char *address, uint32_t request_timeout_ms)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = address;
    o.client_name = "esd-reliability";
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = request_timeout_ms;
    o.reconnect_attempts = 1;
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 1;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    es_err rv = es_client_create(&o, &c);
    if (rv != ES_OK) {
        rel_fail("es_client_create(%s): %s", address, es_strerror(rv));
    }
    return c;
}

/* --------------------------------------------------------------- content -- */

void rel_ev_make(rel_ev *ev, uint64_t salt, uint32_t s, uint64_t r, size_t max_data)
{
    if (max_data > REL_MAX_DATA) {
        max_data = REL_MAX_DATA;
    }
    if (max_data < 16) {
        max_data = 16;
    }
    rel_rng g = {rel_mix(salt ^ rel_mix(((uint64_t)s << 40) ^ r))};
    uint64_t a = rel_rand(&g), b = rel_rand(&g);
    memcpy(ev->id, &a, 8);
    memcpy(ev->id + 8, &b, 8);
    ev->id[6] = (uint8_t)((ev->id[6] & 0x0f) | 0x40); /* a version 4 UUID */
    ev->id[8] = (uint8_t)((ev->id[8] & 0x3f) | 0x80);
    snprintf(ev->type, sizeof ev->type, "Ev%u", (unsigned)(r % 5));
    ev->data_len = (size_t)rel_range(&g, 16, max_data);
    int n = snprintf((char *)ev->data, ev->data_len, "s=%u r=%" PRIu64 ";", s, r);
    size_t off = n > 0 ? (size_t)n : 0;
    if (off > ev->data_len) {
        off = ev->data_len;
    }
    for (size_t i = off; i < ev->data_len; i++) {
        size_t k = (i - off) & 7;
        if (k == 0) {
            a = rel_rand(&g);
        }
        ev->data[i] = (uint8_t)(a >> (8 * k));
    }
}

void rel_ev_to_event(rel_ev *ev, es_event *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->id, ev->id, ES_UUID_BYTES);
    out->has_id = true;
    out->type = ev->type;
    out->data = ev->data;
    out->data_len = ev->data_len;
}

bool rel_ev_equal(const rel_ev *ev, const es_recorded_event *rec)
{
    return !memcmp(ev->id, rec->id, ES_UUID_BYTES) && !strcmp(ev->type, rec->type) &&
           rec->data_len == ev->data_len && !memcmp(ev->data, rec->data, ev->data_len) &&
           rec->metadata_len == 0;
}

uint64_t rel_hash(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

long rel_stream_no(const char *prefix, const char *name)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] != '-' || !name[pl + 1]) {
        return -1;
    }
    const char *d = name + pl + 1;
    long v = 0;
    for (; *d; d++) {
        if (*d < '0' || *d > '9' || v > 100000000) {
            return -1;
        }
        v = v * 10 + (*d - '0');
    }
    return v;
}

/* ------------------------------------------------------------- log walks -- */

void rel_walk_init(rel_walk *w, uint32_t n_streams)
{
    memset(w, 0, sizeof *w);
    w->n_streams = n_streams;
    w->next_rev = calloc(n_streams, sizeof *w->next_rev);
    w->rev_pos = calloc(n_streams, sizeof *w->rev_pos);
    w->rev_cap = calloc(n_streams, sizeof *w->rev_cap);
    if (!w->next_rev || !w->rev_pos || !w->rev_cap) {
        rel_fail("out of memory");
    }
}

void rel_walk_finish(rel_walk *w)
{
    for (uint32_t s = 0; w->rev_pos && s < w->n_streams; s++) {
        free(w->rev_pos[s]);
    }
    free(w->rev_pos);
    free(w->rev_cap);
    free(w->next_rev);
    free(w->pos_stream);
    free(w->pos_rev);
    free(w->pos_hash);
    memset(w, 0, sizeof *w);
}

static void walk_remember(rel_walk *w, uint64_t pos, uint32_t s, uint64_t r, uint64_t h)
{
    if (pos >= w->pos_cap) {
        uint64_t cap = w->pos_cap ? w->pos_cap * 2 : 4096;
        while (cap <= pos) {
            cap *= 2;
        }
        uint32_t *ps = realloc(w->pos_stream, cap * sizeof *ps);
        if (ps) {
            w->pos_stream = ps;
        }
        uint64_t *pr = ps ? realloc(w->pos_rev, cap * sizeof *pr) : NULL;
        if (pr) {
            w->pos_rev = pr;
        }
        uint64_t *ph = pr ? realloc(w->pos_hash, cap * sizeof *ph) : NULL;
        if (!ph) {
            rel_fail("out of memory");
        }
        w->pos_hash = ph;
        w->pos_cap = cap;
    }
    w->pos_stream[pos] = s;
    w->pos_rev[pos] = r;
    w->pos_hash[pos] = h;
    if (r >= w->rev_cap[s]) {
        uint64_t cap = w->rev_cap[s] ? w->rev_cap[s] * 2 : 256;
        while (cap <= r) {
            cap *= 2;
        }
        uint64_t *rp = realloc(w->rev_pos[s], cap * sizeof *rp);
        if (!rp) {
            rel_fail("out of memory");
        }
        w->rev_pos[s] = rp;
        w->rev_cap[s] = cap;
    }
    w->rev_pos[s][r] = pos;
}

uint64_t rel_walk_pos(const rel_walk *w, uint32_t s, uint64_t r)
{
    if (s >= w->n_streams || r >= w->next_rev[s]) {
        return 0;
    }
    return w->rev_pos[s][r];
}

es_err rel_walk_log(rel_walk *w, es_client *c, const char *prefix, uint64_t salt, size_t max_data,
                    char *why, size_t why_len)
{
    es_read_options ro = {0};
    ro.from = w->head + 1;
    es_read_iter *it = NULL;
    es_err rv = es_read_all(c, &ro, &it);
    if (rv != ES_OK) {
        snprintf(why, why_len, "es_read_all: %s", es_strerror(rv));
        return rv;
    }
    w->events = 0;
    rel_ev want;
    for (;;) {
        const es_recorded_event *ev = NULL;
        rv = es_read_next(it, &ev);
        if (rv != ES_OK) {
            snprintf(why, why_len, "es_read_next after position %" PRIu64 ": %s (%s)", w->head,
                     es_strerror(rv), es_client_errmsg(c));
            break;
        }
        if (!ev) {
            break;
        }
        if (ev->position != w->head + 1) {
            snprintf(why, why_len, "position %" PRIu64 " follows %" PRIu64 " (gap or disorder)",
                     ev->position, w->head);
            rv = ES_ERR_CORRUPT;
            break;
        }
        long s = rel_stream_no(prefix, ev->stream);
        if (s < 0 || (uint32_t)s >= w->n_streams) {
            snprintf(why, why_len, "position %" PRIu64 ": unexpected stream \"%s\"", ev->position,
                     ev->stream);
            rv = ES_ERR_CORRUPT;
            break;
        }
        if (ev->revision != w->next_rev[s]) {
            snprintf(why, why_len,
                     "position %" PRIu64 ": stream %s revision %" PRIu64 ", expected %" PRIu64
                     " (revisions not contiguous)",
                     ev->position, ev->stream, ev->revision, w->next_rev[s]);
            rv = ES_ERR_CORRUPT;
            break;
        }
        rel_ev_make(&want, salt, (uint32_t)s, ev->revision, max_data);
        if (!rel_ev_equal(&want, ev)) {
            snprintf(why, why_len,
                     "position %" PRIu64 ": stream %s revision %" PRIu64
                     ": bytes differ from what was appended (type %s, %zu data bytes)",
                     ev->position, ev->stream, ev->revision, ev->type, ev->data_len);
            rv = ES_ERR_CORRUPT;
            break;
        }
        walk_remember(w, ev->position, (uint32_t)s, ev->revision,
                      rel_hash(ev->data, ev->data_len) + rel_hash(ev->id, ES_UUID_BYTES));
        w->next_rev[s]++;
        w->head = ev->position;
        w->events++;
    }
    es_read_destroy(it);
    return rv;
}

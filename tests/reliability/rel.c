/* rel — shared code of the reliability tests; see rel.h. */
#include "rel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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
    printf("[%s +%.1fs] ", test_name, (double)(rel_now_ms() - start_ms) / 1000.0);
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
    start_ms = rel_now_ms();
    const char *env_seed = getenv("REL_SEED");
    if (!env_seed || !parse_u64(env_seed, &seed)) {
        seed = (uint64_t)rel_now_us() ^ ((uint64_t)getpid() << 32);
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

/* ------------------------------------------------------------------ time -- */

int64_t rel_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t rel_now_ms(void)
{
    return rel_now_us() / 1000;
}

void rel_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
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

/* ------------------------------------------------------------ file system -- */

int rel_mkdtemp(const char *tag, char *out, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) {
        tmp = "/tmp";
    }
    int n = snprintf(out, cap, "%s/esd-rel-%s-XXXXXX", tmp, tag);
    if (n < 0 || (size_t)n >= cap || !mkdtemp(out)) {
        return -1;
    }
    return 0;
}

static void rm_rf_at(const char *path, dev_t dev)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        if (st.st_dev != dev) {
            return; /* a mount point: leave it to its owner */
        }
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
                    continue;
                }
                char sub[1024];
                int n = snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                if (n > 0 && (size_t)n < sizeof sub) {
                    rm_rf_at(sub, dev);
                }
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

void rel_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        rm_rf_at(path, st.st_dev);
    }
}

int rel_copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = n < 0 ? -1 : 0;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                rc = -1;
                goto done;
            }
            off += w;
        }
    }
done:
    close(in);
    if (close(out) != 0) {
        rc = -1;
    }
    return rc;
}

/* ------------------------------------------------------------- processes -- */

static pid_t spawn(char *const *argv, const char *out_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        int fd = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            if (fd > 2) {
                close(fd);
            }
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) {
            dup2(nul, 0);
            if (nul > 0) {
                close(nul);
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Reap pid within timeout_ms (polling). @return 0 reaped; -1 timeout. */
static int reap(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = rel_now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        if (rel_now_ms() >= deadline) {
            return -1;
        }
        rel_sleep_ms(2);
    }
}

int rel_run(char *const *argv, const char *out_path, int timeout_ms, int *status)
{
    pid_t pid = spawn(argv, out_path);
    if (pid < 0) {
        return -1;
    }
    if (reap(pid, timeout_ms, status) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, status, 0);
        return -1;
    }
    return 0;
}

const char *rel_status_str(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status)) {
        snprintf(buf, cap, "exit %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, cap, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        snprintf(buf, cap, "status 0x%x", (unsigned)status);
    }
    return buf;
}

void rel_dump_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    char **ring = calloc((size_t)lines, sizeof *ring);
    if (!ring) {
        fclose(f);
        return;
    }
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        free(ring[n % lines]);
        ring[n % lines] = strdup(line);
        n++;
    }
    fclose(f);
    fprintf(stderr, "---- last lines of %s ----\n", path);
    for (int i = n > lines ? n - lines : 0; i < n; i++) {
        fputs(ring[i % lines] ? ring[i % lines] : "", stderr);
    }
    fprintf(stderr, "----\n");
    for (int i = 0; i < lines; i++) {
        free(ring[i]);
    }
    free(ring);
}

int rel_esd_init(rel_esd *e, const char *tag)
{
    memset(e, 0, sizeof *e);
    if (rel_mkdtemp(tag, e->base, sizeof e->base) != 0) {
        return -1;
    }
    snprintf(e->data_dir, sizeof e->data_dir, "%s/data", e->base);
    snprintf(e->port_file, sizeof e->port_file, "%s/port", e->base);
    snprintf(e->log_file, sizeof e->log_file, "%s/esd.log", e->base);
    return 0;
}

/* The port in the port file, 0 while it is not (completely) written. */
static uint16_t read_port(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    char buf[32] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n == 0 || buf[n - 1] != '\n') {
        return 0;
    }
    unsigned long v = strtoul(buf, NULL, 10);
    return v > 0 && v < 65536 ? (uint16_t)v : 0;
}

int rel_esd_start(rel_esd *e, int timeout_ms, int *status)
{
    const char *bin = getenv("ESD_BIN");
    if (!bin) {
        rel_fail("ESD_BIN is not set");
    }
    if (status) {
        *status = 0;
    }
    unlink(e->port_file);
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)bin;
    argv[n++] = (char *)"--listen";
    argv[n++] = (char *)"127.0.0.1:0";
    argv[n++] = (char *)"--port-file";
    argv[n++] = e->port_file;
    argv[n++] = (char *)"--data-dir";
    argv[n++] = e->data_dir;
    for (int i = 0; e->args[i] && n < 38; i++) {
        argv[n++] = (char *)e->args[i];
    }
    argv[n] = NULL;
    FILE *lf = fopen(e->log_file, "a");
    if (lf) {
        fprintf(lf, "==== start %d ====\n", e->starts + 1);
        fclose(lf);
    }
    e->pid = spawn(argv, e->log_file);
    if (e->pid < 0) {
        e->pid = 0;
        return -1;
    }
    e->starts++;
    int64_t deadline = rel_now_ms() + timeout_ms;
    for (;;) {
        uint16_t p = read_port(e->port_file);
        if (p) {
            e->port = p;
            snprintf(e->address, sizeof e->address, "127.0.0.1:%u", (unsigned)p);
            return 0;
        }
        int st;
        pid_t r = waitpid(e->pid, &st, WNOHANG);
        if (r == e->pid) {
            e->pid = 0;
            if (status) {
                *status = st;
            }
            return -1;
        }
        if (rel_now_ms() >= deadline) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, &st, 0);
            e->pid = 0;
            rel_dump_tail(e->log_file, 20);
            return -1;
        }
        rel_sleep_ms(2);
    }
}

int rel_esd_stop(rel_esd *e, int sig, int timeout_ms, int *status)
{
    int st = 0;
    if (!e->pid) {
        if (status) {
            *status = 0;
        }
        return 0;
    }
    kill(e->pid, sig);
    int rc = reap(e->pid, timeout_ms, &st);
    if (rc != 0) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, &st, 0);
    }
    e->pid = 0;
    e->port = 0;
    if (status) {
        *status = st;
    }
    return rc;
}

bool rel_esd_alive(rel_esd *e, int *status)
{
    if (!e->pid) {
        return false;
    }
    int st;
    if (waitpid(e->pid, &st, WNOHANG) == e->pid) {
        e->pid = 0;
        if (status) {
            *status = st;
        }
        return false;
    }
    return true;
}

void rel_esd_destroy(rel_esd *e)
{
    if (e->pid) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
        e->pid = 0;
    }
    if (e->base[0] && !getenv("REL_KEEP")) {
        rel_rm_rf(e->base);
    }
}

long rel_proc_kb(pid_t pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    char line[256];
    size_t fl = strlen(field);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

int rel_esctl(const char *const *args, const char *out_path, int timeout_ms)
{
    const char *bin = getenv("ESCTL_BIN");
    if (!bin) {
        rel_fail("ESCTL_BIN is not set");
    }
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)bin;
    for (int i = 0; args[i] && n < 15; i++) {
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    if (out_path) {
        unlink(out_path); /* only this run's output in it */
    }
    int st;
    if (rel_run(argv, out_path, timeout_ms, &st) != 0) {
        return -1;
    }
    return st;
}

/* --------------------------------------------------------------- clients -- */

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

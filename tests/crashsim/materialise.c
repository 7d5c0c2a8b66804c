/*
 * materialise.c — replay of a crash simulator log up to a cut, and one
 * drawn crash state written out (the model is in materialise.h).
 */
#include "materialise.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define PAGE      4096u
#define MAX_FILES 64u
#define NAME_MAX_ 255u

typedef struct piece {
    uint64_t off;
    uint64_t len;
    const uint8_t *data;
} piece;

typedef struct inode {
    uint64_t ino;
    uint8_t *cur;
    uint64_t cur_size, cur_cap;
    uint8_t *dur;
    uint64_t dur_size, dur_cap;
    piece *pend;
    size_t n_pend, cap_pend;
} inode;

typedef struct entry {
    char name[NAME_MAX_ + 1];
    uint64_t ino;
} entry;

typedef struct dirstate {
    entry e[MAX_FILES];
    size_t n;
} dirstate;

typedef struct replay {
    inode in[MAX_FILES];
    size_t n_in;
    dirstate cur, dur;
    const cs_hdr **ops; /* pending entry operations */
    size_t n_ops, cap_ops;
    char *err;
    size_t err_len;
} replay;

static uint64_t cs_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t cs_below(uint64_t *s, uint64_t n)
{
    return n ? cs_rand(s) % n : 0;
}

static int fail(replay *r, const char *what)
{
    snprintf(r->err, r->err_len, "%s", what);
    return -1;
}

/* ------------------------------------------------------------------ log -- */

int cs_log_load(cs_log *log, const char *path, char *err, size_t err_len)
{
    memset(log, 0, sizeof *log);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !(log->buf = malloc((size_t)st.st_size + 1)) ||
        fread(log->buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        snprintf(err, err_len, "cannot read %s", path);
        fclose(f);
        cs_log_free(log);
        return -1;
    }
    fclose(f);
    log->len = (size_t)st.st_size;
    size_t cap = 0;
    for (size_t p = 0; p + sizeof(cs_hdr) <= log->len;) {
        cs_hdr h;
        memcpy(&h, log->buf + p, sizeof h);
        if (p + sizeof h + h.len > log->len) {
            break;
        }
        if (log->n == cap) {
            cap = cap ? cap * 2 : 256;
            size_t *o = realloc(log->off, cap * sizeof *o);
            if (!o) {
                snprintf(err, err_len, "out of memory");
                cs_log_free(log);
                return -1;
            }
            log->off = o;
        }
        log->off[log->n++] = p;
        p += sizeof h + h.len;
    }
    return 0;
}

void cs_log_free(cs_log *log)
{
    free(log->buf);
    free(log->off);
    memset(log, 0, sizeof *log);
}

size_t cs_log_records_in(const cs_log *log, uint64_t bytes)
{
    size_t n = 0;
    while (n < log->n) {
        cs_hdr h;
        memcpy(&h, log->buf + log->off[n], sizeof h);
        if (log->off[n] + sizeof h + h.len > bytes) {
            break;
        }
        n++;
    }
    return n;
}

/* --------------------------------------------------------------- inodes -- */

static inode *inode_get(replay *r, uint64_t ino, bool create)
{
    for (size_t i = 0; i < r->n_in; i++) {
        if (r->in[i].ino == ino) {
            return &r->in[i];
        }
    }
    if (!create || r->n_in == MAX_FILES) {
        return NULL;
    }
    inode *in = &r->in[r->n_in++];
    memset(in, 0, sizeof *in);
    in->ino = ino;
    return in;
}

static int grow(uint8_t **buf, uint64_t *cap, uint64_t need)
{
    if (need <= *cap) {
        return 0;
    }
    uint64_t c = *cap ? *cap : 65536;
    while (c < need) {
        c *= 2;
    }
    uint8_t *b = realloc(*buf, c);
    if (!b) {
        return -1;
    }
    memset(b + *cap, 0, c - *cap);
    *buf = b;
    *cap = c;
    return 0;
}

static int put_bytes(uint8_t **buf, uint64_t *size, uint64_t *cap, uint64_t off,
                     const uint8_t *data, uint64_t len)
{
    if (grow(buf, cap, off + len) != 0) {
        return -1;
    }
    memcpy(*buf + off, data, len);
    if (off + len > *size) {
        *size = off + len;
    }
    return 0;
}

static int pend_add(inode *in, piece p)
{
    if (in->n_pend == in->cap_pend) {
        size_t c = in->cap_pend ? in->cap_pend * 2 : 64;
        piece *np = realloc(in->pend, c * sizeof *np);
        if (!np) {
            return -1;
        }
        in->pend = np;
        in->cap_pend = c;
    }
    in->pend[in->n_pend++] = p;
    return 0;
}

/* Remove [off, off+len) from the pending pieces (it is durable now, or cut off). */
static int pend_clip(inode *in, uint64_t off, uint64_t len)
{
    size_t n = in->n_pend;
    for (size_t i = 0; i < n; i++) {
        piece p = in->pend[i];
        uint64_t a = off, b = off + len, pa = p.off, pb = p.off + p.len;
        if (pb <= a || pa >= b || p.len == 0) {
            continue;
        }
        in->pend[i].len = 0; /* dropped; the parts outside survive below */
        if (pa < a) {
            if (pend_add(in, (piece){pa, a - pa, p.data}) != 0) {
                return -1;
            }
        }
        if (pb > b) {
            if (pend_add(in, (piece){b, pb - b, p.data + (b - pa)}) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int inode_sync(inode *in)
{
    if (grow(&in->dur, &in->dur_cap, in->cur_size) != 0) {
        return -1;
    }
    memcpy(in->dur, in->cur, in->cur_size);
    in->dur_size = in->cur_size;
    in->n_pend = 0;
    return 0;
}

/* ---------------------------------------------------------- directories -- */

static entry *dir_find(dirstate *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++) {
        if (!strcmp(d->e[i].name, name)) {
            return &d->e[i];
        }
    }
    return NULL;
}

static void dir_remove(dirstate *d, const char *name)
{
    entry *e = dir_find(d, name);
    if (e) {
        *e = d->e[--d->n];
    }
}

static int dir_apply(dirstate *d, const cs_hdr *h)
{
    const char *p = (const char *)(h + 1);
    char a[NAME_MAX_ + 1], b[NAME_MAX_ + 1];
    size_t la = strnlen(p, h->len);
    if (la > NAME_MAX_) {
        return -1;
    }
    memcpy(a, p, la);
    a[la] = '\0';
    switch (h->type) {
    case CS_CREATE:
        dir_remove(d, a);
        if (d->n == MAX_FILES) {
            return -1;
        }
        snprintf(d->e[d->n].name, sizeof d->e[d->n].name, "%s", a);
        d->e[d->n++].ino = h->ino;
        return 0;
    case CS_UNLINK:
        dir_remove(d, a);
        return 0;
    case CS_RENAME: {
        size_t lb = h->len - la - 1;
        if (la + 1 > h->len || lb > NAME_MAX_) {
            return -1;
        }
        memcpy(b, p + la + 1, lb);
        b[lb] = '\0';
        entry *e = dir_find(d, a);
        if (!e) {
            return -1;
        }
        uint64_t ino = e->ino;
        dir_remove(d, a);
        dir_remove(d, b);
        snprintf(d->e[d->n].name, sizeof d->e[d->n].name, "%s", b);
        d->e[d->n++].ino = ino;
        return 0;
    }
    default:
        return -1;
    }
}

/* Every metadata operation so far becomes durable (a journal commit). */
static void metadata_commit(replay *r)
{
    r->dur = r->cur;
    r->n_ops = 0;
    for (size_t i = 0; i < r->n_in; i++) {
        inode *in = &r->in[i];
        if (in->dur_size != in->cur_size && grow(&in->dur, &in->dur_cap, in->cur_size) == 0) {
            in->dur_size = in->cur_size; /* the size; the bytes stay pending */
        }
    }
}

/* ---------------------------------------------------------------- replay -- */

static int step(replay *r, const cs_hdr *h, cs_rules rules)
{
    const uint8_t *data = (const uint8_t *)(h + 1);
    inode *in;
    switch (h->type) {
    case CS_CREATE:
        if (h->ino == 0) {
            return fail(r, "a file moved into the directory from elsewhere: not modelled");
        }
        if (!inode_get(r, h->ino, true)) {
            return fail(r, "too many files");
        }
        __attribute__((fallthrough)); /* a created name is entered like the others */
    case CS_RENAME:
    case CS_UNLINK:
        if (dir_apply(&r->cur, h) != 0) {
            return fail(r, "a bad entry operation");
        }
        if (r->n_ops == r->cap_ops) {
            size_t c = r->cap_ops ? r->cap_ops * 2 : 16;
            const cs_hdr **o = realloc(r->ops, c * sizeof *o);
            if (!o) {
                return fail(r, "out of memory");
            }
            r->ops = o;
            r->cap_ops = c;
        }
        r->ops[r->n_ops++] = h;
        return 0;
    case CS_WRITE:
        if (!(in = inode_get(r, h->ino, false))) {
            return fail(r, "a write to a file the log never created");
        }
        if (put_bytes(&in->cur, &in->cur_size, &in->cur_cap, h->a, data, h->len) != 0) {
            return fail(r, "out of memory");
        }
        if (h->b) {
            /* O_DSYNC: these bytes (and the size they need) are durable. */
            if (pend_clip(in, h->a, h->len) != 0 ||
                put_bytes(&in->dur, &in->dur_size, &in->dur_cap, h->a, data, h->len) != 0) {
                return fail(r, "out of memory");
            }
            if (rules == CS_RULES_EXT4) {
                metadata_commit(r);
            }
            return 0;
        }
        return pend_add(in, (piece){h->a, h->len, data}) == 0 ? 0 : fail(r, "out of memory");
    case CS_SYNC:
        if (!(in = inode_get(r, h->ino, false))) {
            return fail(r, "a sync of a file the log never created");
        }
        if (rules == CS_RULES_EXT4) {
            metadata_commit(r);
        }
        return inode_sync(in) == 0 ? 0 : fail(r, "out of memory");
    case CS_TRUNC:
        if (!(in = inode_get(r, h->ino, false))) {
            return fail(r, "a truncation of a file the log never created");
        }
        if (grow(&in->cur, &in->cur_cap, h->a) != 0) {
            return fail(r, "out of memory");
        }
        if (h->a < in->cur_size) {
            memset(in->cur + h->a, 0, in->cur_size - h->a);
            if (pend_clip(in, h->a, UINT64_MAX - h->a) != 0) {
                return fail(r, "out of memory");
            }
        }
        in->cur_size = h->a;
        return 0;
    case CS_DIRSYNC:
        if (rules == CS_RULES_EXT4) {
            metadata_commit(r);
        } else {
            r->dur = r->cur;
            r->n_ops = 0;
        }
        return 0;
    default:
        return fail(r, "an unknown record type");
    }
}

/* The content of one inode in the crash state, drawn with *rng. */
static int draw_file(inode *in, int mode, uint64_t *rng, uint8_t **out, uint64_t *out_size,
                     cs_state_stats *st)
{
    uint64_t size = in->dur_size, cap = 0;
    uint8_t *buf = NULL;
    if (grow(&buf, &cap, size + 1) != 0) {
        return -1;
    }
    memcpy(buf, in->dur, in->dur_size);
    uint64_t pages = 0;
    for (size_t i = 0; i < in->n_pend; i++) {
        if (in->pend[i].len && (in->pend[i].off + in->pend[i].len + PAGE - 1) / PAGE > pages) {
            pages = (in->pend[i].off + in->pend[i].len + PAGE - 1) / PAGE;
        }
    }
    uint32_t *count = calloc(pages + 1, sizeof *count);
    uint32_t *keep = calloc(pages + 1, sizeof *keep);
    uint32_t *seen = calloc(pages + 1, sizeof *seen);
    if (!count || !keep || !seen) {
        free(count);
        free(keep);
        free(seen);
        free(buf);
        return -1;
    }
    for (size_t i = 0; i < in->n_pend; i++) {
        piece p = in->pend[i];
        for (uint64_t pg = p.off / PAGE; p.len && pg * PAGE < p.off + p.len; pg++) {
            count[pg]++;
        }
    }
    for (uint64_t pg = 0; pg < pages; pg++) {
        keep[pg] = mode == 0 ? 0 : mode == 1 ? count[pg] : (uint32_t)cs_below(rng, count[pg] + 1u);
        st->pending_pages += count[pg];
        st->kept_pages += keep[pg];
    }
    int rc = 0;
    for (size_t i = 0; i < in->n_pend && rc == 0; i++) {
        piece p = in->pend[i];
        for (uint64_t pg = p.off / PAGE; p.len && pg * PAGE < p.off + p.len; pg++) {
            if (seen[pg]++ >= keep[pg]) {
                continue;
            }
            uint64_t a = p.off > pg * PAGE ? p.off : pg * PAGE;
            uint64_t b = p.off + p.len < (pg + 1) * PAGE ? p.off + p.len : (pg + 1) * PAGE;
            rc = put_bytes(&buf, &size, &cap, a, p.data + (a - p.off), b - a);
        }
    }
    free(count);
    free(keep);
    free(seen);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_size = size;
    return 0;
}

static int write_file(const char *dir, const char *name, const uint8_t *buf, uint64_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -1;
    }
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, buf + done, size - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (uint64_t)n;
    }
    return close(fd);
}

int cs_materialise(const cs_log *log, size_t cut, cs_rules rules, uint64_t seed, const char *dir,
                   cs_state_stats *stats, char *err, size_t err_len)
{
    replay *r = calloc(1, sizeof *r);
    cs_state_stats st = {0};
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    r->err = err;
    r->err_len = err_len;
    int rc = 0;
    if (cut > log->n) {
        cut = log->n;
    }
    for (size_t i = 0; i < cut && rc == 0; i++) {
        rc = step(r, (const cs_hdr *)(const void *)(log->buf + log->off[i]), rules);
    }
    uint64_t rng = seed;
    int mode = (int)cs_below(&rng, 4); /* 0: nothing pending, 1: all, else drawn */
    if (rc == 0) {
        dirstate d = r->dur;
        size_t k = mode == 0 ? 0 : mode == 1 ? r->n_ops : (size_t)cs_below(&rng, r->n_ops + 1);
        st.pending_ops = r->n_ops;
        st.kept_ops = k;
        for (size_t i = 0; i < k && rc == 0; i++) {
            rc = dir_apply(&d, r->ops[i]) == 0 ? 0 : fail(r, "a bad entry operation");
        }
        for (size_t i = 0; i < d.n && rc == 0; i++) {
            inode *in = inode_get(r, d.e[i].ino, false);
            uint8_t *buf = NULL;
            uint64_t size = 0;
            if (!in || draw_file(in, mode, &rng, &buf, &size, &st) != 0) {
                rc = fail(r, "out of memory");
            } else if (write_file(dir, d.e[i].name, buf, size) != 0) {
                snprintf(err, err_len, "cannot write %s/%s: %s", dir, d.e[i].name, strerror(errno));
                rc = -1;
            }
            free(buf);
        }
    }
    for (size_t i = 0; i < r->n_in; i++) {
        free(r->in[i].cur);
        free(r->in[i].dur);
        free(r->in[i].pend);
    }
    free(r->ops);
    free(r);
    if (stats) {
        *stats = st;
    }
    return rc;
}

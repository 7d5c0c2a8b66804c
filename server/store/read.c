/*
 * read.c — the store's read path: streams, the log (whole, by category, by
 * event type, by stream prefix), stream info and listings, snapshot loads,
 * and the guard that keeps a damaged data file from ending the process.
 *
 * Design notes
 * ============
 *
 * Every read opens a short read-only transaction and ends it before
 * returning (MDB_NOTLS: any thread may read; nothing is held across a
 * return to the event loop). Records are handed to the caller's visitor in
 * place, as the packed wire bytes after their CRC was checked, borrowed
 * until the visitor returns.
 *
 * A record reached through an index is what the index promised, or it is
 * not served: through stream_revs it carries the stream and the revision
 * asked for, through categories or types that category or type, and the
 * position of its key. The check compares the bytes it expects in place,
 * in the layout the store writes (want_holds_fast: ~40 instructions per
 * record); a record that does not match them is decoded (es_record_head,
 * else es_record_parse, lenient) and judged on its fields, so another
 * layout is served and damage is refused. A full parse for every record
 * cost ~1,000 instructions, about as much as the rest of a read; decoding
 * the head ~200, 15 % of a replay. A record that is
 * not what the index promised is refused
 * with ES_ERR_CORRUPT, logged with the index and the position, and counted
 * (store_damage, store_index_mismatches): a damaged index must not hand out
 * another stream's events as if they were the ones asked for. A stream's
 * tail record is checked the same way when its record is looked up
 * (store_stream_lookup), so a damaged stream number is found before any
 * read or append uses it. Whole-log reads go by position and check the CRC.
 *
 * The read guard. LMDB has no page checksums: a damaged B-tree page is
 * found by its internal assertions, which abort() after calling the assert
 * hook. The record CRC catches damage inside records; the hook turns damage
 * in LMDB's own pages into a clear message and a distinct exit status
 * instead of a crash. A damaged page can also point LMDB outside the file,
 * and reading the map there raises SIGBUS (past the end of the file) or
 * SIGSEGV. Reads survive both: each read function arms a thread-local guard
 * (READ_GUARD, a sigsetjmp) right after opening its read transaction, and
 * the hook or the fault handler jumps back to it, so the read ends with
 * ES_ERR_CORRUPT instead of the process. A fault while the caller's visitor
 * runs is not the file's and gets the default action, so real bugs still
 * crash loudly. Read transactions change nothing shared but their reader
 * slot, which store_read_end releases; a cursor open at the jump is leaked
 * (a few hundred bytes per damaged read). Outside a guarded read (the
 * writer, open) the process cannot go on -- LMDB's state is undefined after
 * an assertion -- and exits with STORE_EXIT_DAMAGED. A fault there ends
 * the same way: the functions that open or write the store enter the fatal
 * scope (STORE_FATAL_SCOPE), and a SIGSEGV or SIGBUS met inside it outside a
 * guarded read writes the damage message and exits with STORE_EXIT_DAMAGED,
 * so a damaged page that makes LMDB dereference a wild pointer while the
 * store opens (reading its meta database, say) is a refusal with a reason,
 * not a crash. The message names the signal: the same exit would follow a
 * bug in the write path, and `esctl db check` tells the two apart.
 *
 * The write guard. An append batch and a scavenger slice first build their
 * write transaction, reading the tree, and only then write the journal and
 * commit. The building part is guarded as a read is (WRITE_GUARD_ARM): a
 * fault or an assertion there fails the batch with ES_ERR_CORRUPT, and
 * from then on every write is refused with ES_ERR_CORRUPT
 * (store_write_begin) while reads go on: nothing of the transaction reached
 * the journal or the file (its dirty pages are malloc'd), but it cannot be
 * aborted safely (LMDB's abort frees what the interrupted call left half
 * built) and it holds the writer lock, so it is abandoned. A restart on
 * the same damage refuses writes again at the first one that meets it.
 * The journal write and the commit stay in the fatal scope.
 *
 * Only the guarded functions are compiled with GCC's -Wclobbered off
 * (STORE_GUARDED_BEGIN/END): after the jump only `txn` is used, and it never
 * changes after the setjmp; GCC cannot see that the other locals are dead
 * on that path.
 */
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "crc32c.h"
#include "internal.h"
#include "pbwire.h"
#include "validate.h"

/* ------------------------------------------------------------ the guard -- */

_Thread_local sigjmp_buf *store_read_guard;
_Thread_local bool store_in_visitor;

void store_on_lmdb_assert(MDB_env *env, const char *msg)
{
    (void)env;
    if (store_read_guard) {
        sigjmp_buf *jb = store_read_guard;
        store_read_guard = NULL;
        siglongjmp(*jb, 1);
    }
    char line[512];
    int n = snprintf(line, sizeof line,
                     "fatal: the store's data file is damaged (LMDB: %s); run esctl db check "
                     "and restore from a backup\n",
                     msg);
    if (n > 0) {
        ssize_t wr = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line);
        (void)wr;
    }
    _exit(STORE_EXIT_DAMAGED);
}

_Thread_local unsigned store_fatal_depth;

es_err store_write_damaged(store *s, const char *what)
{
    /* The transaction is left as the fault left it, never aborted: LMDB's
     * abort frees what the interrupted call was building (a free() of a
     * damaged pointer, seen). It holds the writer lock, so no later write
     * may begin: store_write_begin refuses them all. */
    store_write_guard_off();
    atomic_store(&s->write_damaged, true);
    char line[256];
    snprintf(line, sizeof line,
             "store damaged: %s; this write and every later one refused as CORRUPT until esd "
             "restarts (reads go on; run esctl db check)",
             what);
    return store_damage_line(s, line);
}

bool store_writes_refused(store *s)
{
    return atomic_load(&s->write_damaged);
}

int store_write_begin(store *s, MDB_txn **txn)
{
    if (atomic_load(&s->write_damaged)) {
        *txn = NULL;
        return MDB_CORRUPTED;
    }
    return mdb_txn_begin(s->env, NULL, 0, txn);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (store_read_guard && !store_in_visitor) {
        sigjmp_buf *jb = store_read_guard;
        store_read_guard = NULL;
        siglongjmp(*jb, 2);
    }
    if (store_fatal_depth && !store_in_visitor) {
        static const char segv[] =
            "fatal: SIGSEGV while opening or writing the store: its data file is probably "
            "damaged (LMDB has no page checksums); run esctl db check and restore from a backup\n";
        static const char bus[] =
            "fatal: SIGBUS while opening or writing the store: its data file is probably "
            "damaged or truncated; run esctl db check and restore from a backup\n";
        const char *m = sig == SIGBUS ? bus : segv;
        size_t n = sig == SIGBUS ? sizeof bus - 1 : sizeof segv - 1;
        ssize_t wr = write(STDERR_FILENO, m, n);
        (void)wr;
        _exit(STORE_EXIT_DAMAGED);
    }
    signal(sig, SIG_DFL); /* returning re-runs the access: default action */
}

static void install_fault_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
}

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

void store_guard_install(void)
{
    pthread_once(&fault_once, install_fault_handlers);
}

void store_read_end(MDB_txn *txn)
{
    store_read_guard = NULL;
    store_in_visitor = false;
    mdb_txn_abort(txn);
}

/* A reader table full of slots left by dead processes is cleared and the
 * transaction tried again, instead of failing until the periodic check. */
es_err store_read_txn(store *s, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_READERS_FULL) {
        int dead = 0;
        if (mdb_reader_check(s->env, &dead) == 0 && dead > 0) {
            rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
        }
    }
    return es_err_from_mdb(rc);
}

/* ------------------------------------------------------------------ reads -- */

static uint32_t page_limit(uint32_t limit)
{
    return (limit == 0 || limit > STORE_DEFAULT_MAX_PAGE) ? STORE_DEFAULT_MAX_PAGE : limit;
}

/*
 * Records fetched by position in order (a stream's revisions, a category's
 * or type's entries): a cursor on `events` that steps to the neighbouring
 * record when the wanted position is the next (or, backward, the previous)
 * one, and seeks otherwise. A stream written in batches has runs of
 * consecutive positions, and each step saves a B-tree descent per record.
 */
typedef struct pos_reader {
    MDB_cursor *cur; /* NULL: plain lookups */
    uint64_t at;     /* the position the cursor is on; 0: not positioned */
} pos_reader;

static void pos_reader_open(pos_reader *pr, const store *s, MDB_txn *txn)
{
    pr->at = 0;
    if (mdb_cursor_open(txn, s->events, &pr->cur) != MDB_SUCCESS) {
        pr->cur = NULL;
    }
}

static void pos_reader_close(pos_reader *pr)
{
    if (pr->cur) {
        mdb_cursor_close(pr->cur);
    }
}

static int pos_reader_get(const store *s, MDB_txn *txn, pos_reader *pr, uint64_t pos, MDB_val *v)
{
    uint8_t pkey[8];
    put_u64be(pkey, pos);
    MDB_val k = {8, pkey};
    if (!pr->cur) {
        return mdb_get(txn, s->events, &k, v);
    }
    int rc = MDB_NOTFOUND;
    if (pr->at != 0 && (pos == pr->at + 1 || pos + 1 == pr->at)) {
        MDB_val nk;
        rc = mdb_cursor_get(pr->cur, &nk, v, pos > pr->at ? MDB_NEXT : MDB_PREV);
        if (rc == MDB_SUCCESS && (nk.mv_size != 8 || get_u64be(nk.mv_data) != pos)) {
            rc = MDB_NOTFOUND; /* not adjacent after all: seek below */
        }
    }
    if (rc != MDB_SUCCESS) {
        k.mv_size = 8;
        k.mv_data = pkey;
        rc = mdb_cursor_get(pr->cur, &k, v, MDB_SET_KEY);
    }
    pr->at = rc == MDB_SUCCESS ? pos : 0;
    return rc;
}

/*
 * What an index entry promises about the record it points at: the stream
 * and revision (stream_revs), the category or the event type. A record that
 * is not what was asked is never handed out (see the design notes).
 */
typedef struct index_want {
    const char *index;      /* for the log line */
    store_filter_kind kind; /* STREAM_PREFIX stands for "this exact stream" */
    const uint8_t *name;
    size_t len;
    uint64_t revision;  /* kind == stream: set before each record */
    bool name_has_dash; /* a category name with '-' never matches (decided the slow way) */
} index_want;

static bool want_holds(const index_want *w, const es_record *r)
{
    switch (w->kind) {
    case STORE_FILTER_CATEGORY:
        return es_category_len(r->stream.p, r->stream.len) == w->len &&
               (w->len == 0 || !memcmp(r->stream.p, w->name, w->len));
    case STORE_FILTER_EVENT_TYPE:
        return es_slice_eq(r->type, w->name, w->len);
    default:
        return es_slice_eq(r->stream, w->name, w->len) && r->revision == w->revision;
    }
}

/*
 * The check's fast path, for records in the layout the store writes:
 * stream (length below 128), revision (absent when 0), position, id (16
 * bytes), type, each tag one byte. The expected bytes are compared in place
 * (the stream or category name, the revision and position as varints, the
 * type) instead of decoding the head: ~200 instructions per record became
 * ~40, a tenth of a replay's cost per record. true only when the bytes prove
 * the promise; false sends the record through the decoding check, which
 * decides (any other layout, a category name with a '-', damage).
 */
#define TAG(field, wire) ((uint8_t)((field) << 3 | (wire)))

static size_t put_varint(uint8_t *b, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    return n;
}

static bool want_holds_fast(const index_want *w, const uint8_t *p, size_t len, uint64_t pos)
{
    const uint8_t *end = p + len;
    if (len < 2 || p[0] != TAG(ES_RECORD_F_STREAM, PBW_WIRE_LEN) || p[1] >= 0x80 ||
        p[1] > len - 2) {
        return false;
    }
    const uint8_t *name = p + 2;
    size_t name_len = p[1];
    const uint8_t *q = name + name_len;
    uint8_t want[2 * 11];
    size_t n = 0;
    if (w->kind == STORE_FILTER_STREAM_PREFIX) {
        if (name_len != w->len || memcmp(name, w->name, name_len) != 0) {
            return false;
        }
        if (w->revision) {
            want[n++] = TAG(ES_RECORD_F_REVISION, PBW_WIRE_VARINT);
            n += put_varint(want + n, w->revision);
        }
    } else {
        if (w->kind == STORE_FILTER_CATEGORY &&
            !(name_len >= w->len && memcmp(name, w->name, w->len) == 0 &&
              (name_len == w->len || name[w->len] == '-') && !w->name_has_dash)) {
            return false;
        }
        if (q < end && *q == TAG(ES_RECORD_F_REVISION, PBW_WIRE_VARINT)) {
            for (q++; q < end && (*q & 0x80); q++) {
            }
            if (q >= end) {
                return false;
            }
            q++; /* past the varint's last byte */
        }
    }
    want[n++] = TAG(ES_RECORD_F_POSITION, PBW_WIRE_VARINT);
    n += put_varint(want + n, pos);
    if ((size_t)(end - q) < n || memcmp(q, want, n) != 0) {
        return false;
    }
    if (w->kind != STORE_FILTER_EVENT_TYPE) {
        return true;
    }
    q += n; /* the id, then the type */
    return (size_t)(end - q) >= 2 + ES_RECORD_ID_BYTES + 2 + w->len && w->len < 0x80 &&
           q[0] == TAG(ES_RECORD_F_ID, PBW_WIRE_LEN) && q[1] == ES_RECORD_ID_BYTES &&
           q[18] == TAG(ES_RECORD_F_TYPE, PBW_WIRE_LEN) && q[19] == w->len &&
           memcmp(q + 20, w->name, w->len) == 0;
}

/* Visit the record at pos: refused as damage unless it is what its index
 * promised (want), skipped unless the lifecycle filter serves it (*served). */
static es_err visit_position(store *s, MDB_txn *txn, pos_reader *pr, uint64_t pos,
                             const index_want *want, store_life_filter *lf, store_visit_fn visit,
                             void *ctx, int *verdict, bool *served)
{
    *verdict = 0;
    MDB_val v;
    int rc = pos_reader_get(s, txn, pr, pos, &v);
    if (rc) {
        return rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : es_err_from_mdb(rc); /* index points nowhere */
    }
    store_record rec = {.position = pos};
    es_err rv = store_record_open(&v, &rec.bytes, &rec.len);
    if (rv != ES_OK) {
        return rv;
    }
    es_record r;
    if (want_holds_fast(want, rec.bytes, rec.len, pos)) {
        /* as promised */
    } else if (!es_record_head(rec.bytes, rec.len, &r) &&
               es_record_parse(rec.bytes, rec.len, 0, &r) != ES_OK) {
        return ES_ERR_CORRUPT; /* the CRC held: written wrong, not an index's fault */
    } else if (r.position != pos || !want_holds(want, &r)) {
        return store_damage(s, want->index, pos,
                            "the record it points at is another stream's, revision's, category's "
                            "or type's");
    }
    rv = store_life_filter_pass(lf, rec.bytes, rec.len, served);
    if (rv != ES_OK || !*served) {
        return rv;
    }
    rv = store_record_plain(s, &v, &rec.bytes, &rec.len);
    if (rv == ES_ERR_ERASED) {
        *served = false; /* erased while this read ran */
        return ES_OK;
    }
    if (rv != ES_OK) {
        return rv;
    }
    store_in_visitor = true;
    *verdict = visit(ctx, &rec);
    store_in_visitor = false;
    return ES_OK;
}

STORE_GUARDED_BEGIN
es_err store_read_stream(store *s, const uint8_t *stream, size_t stream_len, uint64_t from,
                         bool backward, uint32_t limit, store_visit_fn visit, void *ctx,
                         store_page *page)
{
    memset(page, 0, sizeof *page);
    page->next = from;
    if (es_validate_stream_id(stream, stream_len, true) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    limit = page_limit(limit);
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    page->head = store_last_position(txn, s->events);
    store_stream_info si;
    rv = store_stream_lookup(txn, s, stream, stream_len, &si);
    store_stream_life life;
    if (rv == ES_OK) {
        rv = store_life_get(txn, s, si.number, &life);
    }
    /* The stream's own window: revisions outside it are never visited, the
     * age is checked per record (only when max_age is set). */
    store_life_filter lf;
    memset(&lf, 0, sizeof lf);
    if (rv == ES_OK) {
        store_life_view(&life, si.last_revision, store_now_us(), &lf.window);
        if (lf.window.tombstoned) {
            rv = ES_ERR_STREAM_DELETED;
        } else if (lf.window.deleted) {
            rv = ES_ERR_NOT_FOUND;
        } else {
            rv = store_crypt_stream_state(s, txn, si.number);
        }
        lf.active = lf.window.min_recorded_us != 0;
        lf.cached = true;
        memcpy(lf.stream, stream, stream_len);
        lf.stream_len = stream_len;
    }
    if (rv != ES_OK) {
        goto out_abort_txn;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->stream_revs, &cur);
    if (rc) {
        rv = es_err_from_mdb(rc);
        goto out_abort_txn;
    }
    pos_reader pr;
    pos_reader_open(&pr, s, txn);
    uint64_t rev;
    uint64_t first = lf.window.first_revision;
    {
        /* Revisions below the lowest stored one were scavenged (always a
         * prefix, scavenge.c; the last revision is always stored). */
        uint8_t lkey[16];
        put_u64be(lkey, si.number);
        put_u64be(lkey + 8, first);
        MDB_val lk = {16, lkey}, lv;
        rc = mdb_cursor_get(cur, &lk, &lv, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS && lk.mv_size == 16 && get_u64be(lk.mv_data) == si.number) {
            first = get_u64be((uint8_t *)lk.mv_data + 8);
        }
    }
    if (backward) {
        if (from > si.last_revision) {
            from = si.last_revision;
        }
        if (from < first) {
            page->end = true;
            page->next = 0;
            goto out_close_cursor;
        }
        rev = from;
    } else {
        if (from < first) {
            from = first;
        }
        if (from > si.last_revision) {
            page->end = true;
            page->next = from;
            goto out_close_cursor;
        }
        rev = from;
    }
    uint8_t key[16];
    put_u64be(key, si.number);
    put_u64be(key + 8, rev);
    MDB_val k = {16, key};
    MDB_val v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    int verdict = 0;
    index_want want = {"stream_revs", STORE_FILTER_STREAM_PREFIX, stream, stream_len, 0, false};
    while (rc == MDB_SUCCESS) {
        if (k.mv_size != 16 || v.mv_size != 8 || get_u64be(k.mv_data) != si.number ||
            get_u64be((uint8_t *)k.mv_data + 8) != rev) {
            rv = ES_ERR_CORRUPT;
            break;
        }
        bool served;
        want.revision = rev;
        rv = visit_position(s, txn, &pr, get_u64be(v.mv_data), &want, &lf, visit, ctx, &verdict,
                            &served);
        if (rv != ES_OK) {
            break;
        }
        if (verdict < 0) {
            page->next = rev;
            break;
        }
        page->returned += served;
        if (backward) {
            if (rev == first) {
                page->end = true;
                page->next = 0;
                break;
            }
            rev--;
        } else {
            rev++;
            if (rev > si.last_revision) {
                page->end = true;
                page->next = rev;
                break;
            }
        }
        page->next = rev;
        if (verdict > 0 || page->returned >= limit) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, backward ? MDB_PREV : MDB_NEXT);
    }
    if (rv == ES_OK && rc != MDB_SUCCESS) {
        rv = ES_ERR_CORRUPT; /* the stream record promises more revisions */
    }
out_close_cursor:
    pos_reader_close(&pr);
    mdb_cursor_close(cur);
out_abort_txn:
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

/* Position a cursor on an index "name\0pos" for a read from `from`. */
static int index_seek(MDB_cursor *cur, const uint8_t *name, size_t len, uint64_t from,
                      bool backward, MDB_val *k)
{
    uint8_t key[ES_MAX_NAME_BYTES + 9];
    k->mv_size = store_name_pos_key(key, name, len, from);
    k->mv_data = key;
    MDB_val v;
    int rc = mdb_cursor_get(cur, k, &v, MDB_SET_RANGE);
    if (!backward) {
        return rc;
    }
    if (rc == MDB_NOTFOUND) {
        return mdb_cursor_get(cur, k, &v, MDB_LAST);
    }
    if (rc) {
        return rc;
    }
    if (k->mv_size != len + 9 || memcmp(k->mv_data, name, len) != 0 ||
        ((uint8_t *)k->mv_data)[len] != 0 || get_u64be((uint8_t *)k->mv_data + len + 1) > from) {
        return mdb_cursor_get(cur, k, &v, MDB_PREV);
    }
    return rc;
}

/* One store_read_all call: what both of its walks need. */
typedef struct read_all_walk {
    const store_filter *filter;
    uint64_t from;
    bool backward;
    uint32_t limit;
    store_visit_fn visit;
    void *ctx;
    store_page *page;
    store_life_filter *life;
} read_all_walk;

/*
 * After the record at `pos`: move page->next past it and say whether the
 * walk goes on (*rc = MDB_NOTFOUND when a backward walk passed position 1).
 */
static bool walk_advance(const read_all_walk *w, uint64_t pos, int verdict, uint32_t scanned,
                         int *rc)
{
    store_page *page = w->page;
    if (w->backward) {
        page->next = pos - 1;
        if (pos <= 1) {
            *rc = MDB_NOTFOUND;
            return false;
        }
    } else {
        page->next = pos + 1;
    }
    return verdict <= 0 && page->returned < w->limit && scanned < STORE_READ_ALL_SCAN_LIMIT;
}

/* The end of a walk: the cursor's last code says whether the page is the end. */
static es_err walk_finish(const read_all_walk *w, es_err rv, int rc)
{
    if (rv != ES_OK) {
        return rv;
    }
    if (rc == MDB_NOTFOUND) {
        w->page->end = true;
    } else if (rc != MDB_SUCCESS) {
        return es_err_from_mdb(rc);
    } else if (!w->backward && w->page->next > w->page->head) {
        w->page->end = true;
    }
    return ES_OK;
}

/*
 * A category or event-type read: walk the index range "name\0..." from
 * `from` and fetch each record by its position. Never scans the log.
 */
static es_err read_all_indexed(store *s, MDB_txn *txn, const read_all_walk *w)
{
    const store_filter *filter = w->filter;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, filter->kind == STORE_FILTER_CATEGORY ? s->categories : s->types,
                             &cur);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    MDB_val k, v;
    rc = index_seek(cur, filter->name, filter->name_len, w->from, w->backward, &k);
    pos_reader pr;
    pos_reader_open(&pr, s, txn);
    es_err rv = ES_OK;
    int verdict = 0;
    uint32_t scanned = 0; /* records hidden by the lifecycle */
    size_t n = filter->name_len;
    index_want want = {filter->kind == STORE_FILTER_CATEGORY ? "categories" : "types",
                       filter->kind,
                       filter->name,
                       n,
                       0,
                       memchr(filter->name, '-', n) != NULL};
    while (rc == MDB_SUCCESS) {
        if (k.mv_size != n + 9 || memcmp(k.mv_data, filter->name, n) != 0 ||
            ((uint8_t *)k.mv_data)[n] != 0) {
            rc = MDB_NOTFOUND; /* left this name's range */
            break;
        }
        uint64_t pos = get_u64be((uint8_t *)k.mv_data + n + 1);
        bool served;
        rv = visit_position(s, txn, &pr, pos, &want, w->life, w->visit, w->ctx, &verdict, &served);
        if (rv != ES_OK) {
            break;
        }
        if (verdict < 0) {
            w->page->next = pos;
            break;
        }
        w->page->returned += served;
        scanned += !served;
        if (!walk_advance(w, pos, verdict, scanned, &rc)) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, w->backward ? MDB_PREV : MDB_NEXT);
    }
    pos_reader_close(&pr);
    mdb_cursor_close(cur);
    return walk_finish(w, rv, rc);
}

/*
 * The whole log, or the streams with a prefix: walk `events` itself. A
 * prefix read looks at each record's stream id and stops after
 * STORE_READ_ALL_SCAN_LIMIT records looked at, matching or not.
 */
static es_err read_all_log(store *s, MDB_txn *txn, const read_all_walk *w)
{
    const store_filter *filter = w->filter;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->events, &cur);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    uint8_t pkey[8];
    put_u64be(pkey, w->from);
    MDB_val k = {8, pkey}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (w->backward) {
        if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        } else if (rc == MDB_SUCCESS && get_u64be(k.mv_data) > w->from) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
        }
    }
    es_err rv = ES_OK;
    uint32_t scanned = 0;
    int verdict = 0;
    while (rc == MDB_SUCCESS) {
        if (k.mv_size != 8) {
            rv = ES_ERR_CORRUPT;
            break;
        }
        uint64_t pos = get_u64be(k.mv_data);
        store_record rec = {.position = pos};
        rv = store_record_open(&v, &rec.bytes, &rec.len);
        if (rv != ES_OK) {
            break;
        }
        bool match = true;
        if (filter->kind == STORE_FILTER_STREAM_PREFIX) {
            es_record r;
            if (es_record_parse(rec.bytes, rec.len, 0, &r) != ES_OK) {
                rv = ES_ERR_CORRUPT;
                break;
            }
            match = r.stream.len >= filter->name_len &&
                    !memcmp(r.stream.p, filter->name, filter->name_len);
            scanned++;
        }
        if (match) {
            bool served;
            rv = store_life_filter_pass(w->life, rec.bytes, rec.len, &served);
            if (rv != ES_OK) {
                break;
            }
            match = served;
            scanned += !served && filter->kind != STORE_FILTER_STREAM_PREFIX;
        }
        if (match && filter->kind != STORE_FILTER_STORED) {
            /* An erased stream's events are holes, as deleted ones are. The
             * log as stored keeps them sealed and in place (the relay). */
            rv = store_record_plain(w->life->s, &v, &rec.bytes, &rec.len);
            if (rv == ES_ERR_ERASED) {
                rv = ES_OK;
                match = false;
                scanned++;
            } else if (rv != ES_OK) {
                break;
            }
        }
        if (match) {
            store_in_visitor = true;
            verdict = w->visit(w->ctx, &rec);
            store_in_visitor = false;
            if (verdict < 0) {
                w->page->next = pos;
                break;
            }
            w->page->returned++;
        }
        if (!walk_advance(w, pos, verdict, scanned, &rc)) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, w->backward ? MDB_PREV : MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return walk_finish(w, rv, rc);
}

STORE_GUARDED_BEGIN
es_err store_read_all(store *s, const store_filter *filter, uint64_t from, bool backward,
                      uint32_t limit, store_visit_fn visit, void *ctx, store_page *page)
{
    static const store_filter none = {STORE_FILTER_NONE, NULL, 0};
    if (!filter) {
        filter = &none;
    }
    memset(page, 0, sizeof *page);
    page->next = from;
    bool indexed = filter->kind == STORE_FILTER_CATEGORY || filter->kind == STORE_FILTER_EVENT_TYPE;
    if (filter->kind > STORE_FILTER_STORED ||
        (filter->kind != STORE_FILTER_NONE && filter->kind != STORE_FILTER_STORED &&
         (!filter->name || filter->name_len == 0 || filter->name_len > ES_MAX_NAME_BYTES)) ||
        (indexed && es_validate_name(filter->name, filter->name_len) != ES_OK)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (!backward && from == 0) {
        from = 1;
    }
    store_life_filter lf;
    read_all_walk w = {filter, from, backward, page_limit(limit), visit, ctx, page, &lf};
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    store_life_filter_open(&lf, s, txn);
    if (filter->kind == STORE_FILTER_STORED) {
        lf.active = false; /* everything passes */
    }
    page->head = store_last_position(txn, s->events);
    rv = indexed ? read_all_indexed(s, txn, &w) : read_all_log(s, txn, &w);
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

STORE_GUARDED_BEGIN
es_err store_event_id_at(store *s, uint64_t position, uint8_t id[16])
{
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    uint8_t pkey[8];
    put_u64be(pkey, position);
    MDB_val k = {8, pkey}, v;
    int rc = mdb_get(txn, s->events, &k, &v);
    es_record r;
    if (rc != MDB_SUCCESS) {
        rv = es_err_from_mdb(rc);
    } else if ((rv = store_record_parse(&v, &r)) == ES_OK) {
        memcpy(id, r.id.p, ES_RECORD_ID_BYTES);
    }
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

/*
 * One event by its id, through event_ids (id -> stream number, revision,
 * position): a get and a record read, whatever the size of the log. The
 * record must be what the index promised (that id, at that position and
 * revision), or it is damage; one that the stream's lifecycle hides is
 * NOT_FOUND, as reads never serve it.
 */
STORE_GUARDED_BEGIN
es_err store_read_event_by_id(store *s, const uint8_t id[16], store_visit_fn visit, void *ctx)
{
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_val ik = {16, (void *)id}, iv, v;
    int rc = mdb_get(txn, s->event_ids, &ik, &iv);
    if (rc != MDB_SUCCESS) {
        rv = rc == MDB_NOTFOUND ? ES_ERR_NOT_FOUND : es_err_from_mdb(rc);
        goto out_end_txn;
    }
    if (iv.mv_size != 24) {
        rv = store_damage(s, "event_ids", 0, "an entry is not 24 bytes");
        goto out_end_txn;
    }
    uint64_t rev = get_u64be((const uint8_t *)iv.mv_data + 8);
    uint64_t pos = get_u64be((const uint8_t *)iv.mv_data + 16);
    uint8_t pkey[8];
    put_u64be(pkey, pos);
    MDB_val pk = {8, pkey};
    rc = mdb_get(txn, s->events, &pk, &v);
    if (rc != MDB_SUCCESS) {
        rv = rc == MDB_NOTFOUND ? store_damage(s, "event_ids", pos, "it points at no record")
                                : es_err_from_mdb(rc);
        goto out_end_txn;
    }
    store_record rec = {.position = pos};
    es_record r;
    if ((rv = store_record_open(&v, &rec.bytes, &rec.len)) != ES_OK) {
        goto out_end_txn;
    }
    if (es_record_parse(rec.bytes, rec.len, 0, &r) != ES_OK) {
        rv = ES_ERR_CORRUPT; /* the CRC held: written wrong */
        goto out_end_txn;
    }
    if (r.position != pos || r.revision != rev || !es_slice_eq(r.id, id, 16)) {
        rv = store_damage(s, "event_ids", pos, "the record it points at has another id");
        goto out_end_txn;
    }
    store_life_filter lf;
    bool served = false;
    store_life_filter_open(&lf, s, txn);
    if ((rv = store_life_filter_pass(&lf, rec.bytes, rec.len, &served)) != ES_OK) {
        goto out_end_txn;
    }
    if (!served) {
        rv = ES_ERR_NOT_FOUND;
        goto out_end_txn;
    }
    if ((rv = store_record_plain(s, &v, &rec.bytes, &rec.len)) != ES_OK) {
        goto out_end_txn; /* ES_ERR_ERASED: its key was destroyed */
    }
    store_in_visitor = true;
    (void)visit(ctx, &rec);
    store_in_visitor = false;
out_end_txn:
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

/*
 * A stream as reads see it: ES_ERR_STREAM_DELETED (tombstoned),
 * ES_ERR_NOT_FOUND (soft-deleted, nothing appended since), or ES_OK with
 * event_count the revisions that truncation and max_count leave (max_age
 * is not counted: it would need a walk).
 */
static es_err life_hides(MDB_txn *txn, const store *s, store_stream_info *si)
{
    store_stream_life life;
    es_err rv = store_life_get(txn, s, si->number, &life);
    if (rv != ES_OK) {
        return rv;
    }
    store_life_window w;
    store_life_view(&life, si->last_revision, 0, &w);
    if (w.tombstoned) {
        return ES_ERR_STREAM_DELETED;
    }
    if (w.deleted) {
        return ES_ERR_NOT_FOUND;
    }
    si->event_count =
        w.first_revision > si->last_revision ? 0 : si->last_revision + 1 - w.first_revision;
    return ES_OK;
}

STORE_GUARDED_BEGIN
es_err store_stream_info_get(store *s, const uint8_t *stream, size_t stream_len,
                             store_stream_info *info)
{
    if (es_validate_stream_id(stream, stream_len, true) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    rv = store_stream_lookup(txn, s, stream, stream_len, info);
    if (rv == ES_OK) {
        rv = life_hides(txn, s, info);
    }
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

STORE_GUARDED_BEGIN
es_err store_list_streams(store *s, const uint8_t *prefix, size_t prefix_len, const uint8_t *after,
                          size_t after_len, uint32_t limit, store_stream_visit_fn visit, void *ctx,
                          bool *more)
{
    *more = false;
    if (prefix_len > ES_MAX_NAME_BYTES || after_len > ES_MAX_NAME_BYTES) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    limit = page_limit(limit);
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->streams, &cur);
    if (rc) {
        store_read_end(txn);
        return es_err_from_mdb(rc);
    }
    MDB_val k, v;
    /* Start after `after` only when it sorts at or past the prefix; an
     * `after` below the prefix range would walk every stream in between. */
    bool use_after = after_len > 0;
    if (use_after && prefix_len) {
        int c = memcmp(after, prefix, after_len < prefix_len ? after_len : prefix_len);
        use_after = c > 0 || (c == 0 && after_len >= prefix_len);
    }
    if (use_after) {
        k.mv_size = after_len;
        k.mv_data = (void *)after;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS && k.mv_size == after_len && !memcmp(k.mv_data, after, after_len)) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
    } else if (prefix_len) {
        k.mv_size = prefix_len;
        k.mv_data = (void *)prefix;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    uint32_t n = 0;
    while (rc == MDB_SUCCESS) {
        if (prefix_len && (k.mv_size < prefix_len || memcmp(k.mv_data, prefix, prefix_len))) {
            if (memcmp(k.mv_data, prefix, k.mv_size < prefix_len ? k.mv_size : prefix_len) > 0) {
                break; /* past the prefix range */
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if (n >= limit) {
            *more = true;
            break;
        }
        store_stream_info si;
        rv = store_stream_lookup(txn, s, k.mv_data, k.mv_size, &si);
        if (rv == ES_OK) {
            rv = life_hides(txn, s, &si);
            if (rv == ES_ERR_STREAM_DELETED || rv == ES_ERR_NOT_FOUND) {
                rv = ES_OK; /* deleted streams are not listed */
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
                continue;
            }
        }
        if (rv != ES_OK) {
            break;
        }
        n++;
        store_in_visitor = true;
        int stop = visit(ctx, k.mv_data, k.mv_size, &si);
        store_in_visitor = false;
        if (stop) {
            /* The visitor stopped: say whether anything follows. */
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            *more = rc == MDB_SUCCESS && (!prefix_len || (k.mv_size >= prefix_len &&
                                                          !memcmp(k.mv_data, prefix, prefix_len)));
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rv == ES_OK && rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        rv = es_err_from_mdb(rc);
    }
    mdb_cursor_close(cur);
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

STORE_GUARDED_BEGIN
es_err store_load_snapshot(store *s, const uint8_t *stream, size_t stream_len, store_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    if (es_validate_stream_id(stream, stream_len, true) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_val k = {stream_len, (void *)stream};
    MDB_val v;
    int rc = mdb_get(txn, s->snapshots, &k, &v);
    if (rc) {
        store_read_end(txn);
        return es_err_from_mdb(rc);
    }
    /* A snapshot of a tombstoned stream is STREAM_DELETED; one that folds
     * soft-deleted events is gone with them (a recreated stream starts
     * afresh). Truncation and retention keep it: a snapshot is what lets
     * a stream's old events go. */
    store_stream_info si;
    store_stream_life life;
    rv = store_stream_lookup(txn, s, stream, stream_len, &si);
    if (rv == ES_OK) {
        rv = store_life_get(txn, s, si.number, &life);
    }
    if (rv == ES_OK && life.tombstoned) {
        rv = ES_ERR_STREAM_DELETED;
    } else if (rv == ES_OK && v.mv_size >= SNAPSHOT_HEADER_BYTES &&
               get_u64le((const uint8_t *)v.mv_data + 8) < life.deleted_before) {
        rv = ES_ERR_NOT_FOUND;
    }
    bool sealed = false;
    uint8_t key[STORE_KEY_BYTES];
    uint64_t slot;
    if (rv == ES_OK) {
        rv = store_crypt_snapshot_key(s, txn, si.number, &sealed, key, &slot);
    }
    if (rv != ES_OK) {
        store_read_end(txn);
        return rv;
    }
    const uint8_t *p = v.mv_data;
    size_t overhead = sealed ? STORE_SEAL_OVERHEAD : 0;
    if (v.mv_size < SNAPSHOT_HEADER_BYTES + overhead ||
        crc32c(0, p + 4, v.mv_size - 4) != get_u32le(p)) {
        store_read_end(txn);
        return ES_ERR_CORRUPT;
    }
    snap->state_format = get_u32le(p + 4);
    snap->revision = get_u64le(p + 8);
    snap->saved_at_us = get_u64le(p + 16);
    snap->data_len = v.mv_size - SNAPSHOT_HEADER_BYTES - overhead;
    snap->data = malloc(snap->data_len ? snap->data_len : 1);
    if (!snap->data) {
        store_read_end(txn);
        return ES_ERR_NO_MEMORY;
    }
    if (sealed) {
        static const uint8_t zero_id[ES_EVENT_ID_BYTES];
        rv = store_unseal(key, p + SNAPSHOT_HEADER_BYTES, v.mv_size - SNAPSHOT_HEADER_BYTES,
                          si.number, zero_id, snap->data);
        memset(key, 0, sizeof key);
        if (rv != ES_OK) {
            free(snap->data);
            snap->data = NULL;
            store_read_end(txn);
            return rv;
        }
    } else {
        memcpy(snap->data, p + SNAPSHOT_HEADER_BYTES, snap->data_len);
    }
    store_read_end(txn);
    return ES_OK;
}
STORE_GUARDED_END

/*
 * scavenge.c — the scavenger: removes what deletion and retention made
 * unreadable, in bounded slices; the store's clock; page counts.
 *
 * Design notes
 * ============
 *
 * What is removed. For each stream with a lifecycle value (stream_life),
 * the events that reads no longer serve (store_life_view at the store's
 * clock): their record in `events` and their `stream_revs`, `categories`
 * and `types` entries, and a snapshot that only a read of deleted events
 * could use (the stream tombstoned, or the snapshot folds soft-deleted
 * revisions). Removal is always a prefix of the stream's revisions: the
 * walk goes up from the lowest revision still stored and stops at the
 * first event served, so the revisions a stream keeps are contiguous and a
 * hole in the log is always the removed prefix of some stream (store_check
 * counts on it). Two things are never removed:
 *   - a stream's last event (record and index entries), even when it is
 *     not served: the stream's last revision, last position and updated
 *     time are read from it (open.c), so revisions continue after a
 *     deleted stream's and a recreating append's EXACT still holds. It
 *     stays unreadable like before; at most one such event per stream.
 *   - the knowledge of its event id: a retried append of a removed
 *     event's id is still recognised. Its `event_ids` entry (16-byte key,
 *     24-byte value, and LMDB's 8-byte node header: about 80 bytes of page
 *     an event, at B-tree fill) is replaced by a 64-bit digest of the id
 *     in `removed_ids` (a DUPFIXED table: 8 bytes an event, no header),
 *     which is what lets a scavenged store shrink to a fraction. The
 *     digest is a fixed 64-bit mix of the id's two halves; two ids share
 *     one with a chance of n / 2^64 for n removed ids (a collision makes
 *     an append of the new id a duplicate, nothing written). What a digest
 *     cannot give back is the original answer: a retried append all of
 *     whose ids are removed is answered as a duplicate with revisions and
 *     positions 0, and it is not checked against the stream or the content
 *     (write.c).
 * The `$lifecycle` stream has no lifecycle value and is never scavenged.
 *
 * The horizon. A relaying esd sets it to the last position JetStream
 * acknowledged (store_scavenge_horizon_set): events beyond it are not
 * removed yet, so the relay -- which publishes every stored record, served
 * or not -- never meets a hole, and a follower gets the same log and
 * applies the same lifecycle records. Positions rise with revisions, so
 * stopping there still removes a prefix of each stream.
 *
 * Slices. store_scavenge_slice does at most `budget` steps (a stream
 * visited or an event examined) in one write transaction and commits; the
 * stream number to resume from is kept in meta "scavenge_next" in the same
 * transaction. The writer thread runs one slice between group commits
 * while there is work, and one per interval when idle (the max-age timer:
 * nothing has to ask). A kill -9 loses at most the slice in progress, whole
 * (LMDB's commit is atomic), so the store is never half-scavenged: every
 * removed event has all its entries gone, every kept one all present.
 * LMDB puts the freed pages on its free list at commit and reuses them for
 * later writes; the file does not shrink (a backup, MDB_CP_COMPACT, is a
 * compacted copy).
 *
 * The clock. Record times (recorded_at) and max-age windows come from
 * store_now_us. A wall clock stepped backwards would stamp new events too
 * early, and once corrected they would look older than they are: max-age
 * would remove them early. So the clock never runs backwards: it is the
 * wall clock, or, while the wall clock is behind, the last wall-clock
 * reading plus the monotonic time elapsed since. Its high-water mark is
 * persisted (meta "clock_hw", written by the slices) and is the clock's
 * floor after a restart. A wall clock stepped forwards cannot be told from
 * time passing: max-age then removes early, as any time-based retention
 * would. store_clock_hook replaces both clocks for tests.
 */
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "internal.h"
#include "validate.h"

/* ------------------------------------------------------------ the clock -- */

static uint64_t clock_real_default(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t clock_mono_default(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static pthread_mutex_t clock_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t (*clock_real)(void) = clock_real_default;
static uint64_t (*clock_mono)(void) = clock_mono_default;
static bool clock_anchored;
static uint64_t anchor_real, anchor_mono; /* the clock read anchor_real at anchor_mono */

uint64_t store_now_us(void)
{
    pthread_mutex_lock(&clock_mu);
    uint64_t real = clock_real(), mono = clock_mono();
    uint64_t since = clock_anchored ? anchor_real + (mono - anchor_mono) : 0;
    uint64_t now;
    if (!clock_anchored || real >= since) {
        anchor_real = now = real;
        anchor_mono = mono;
        clock_anchored = true;
    } else {
        now = since; /* the wall clock went back: carry on from where it was */
    }
    pthread_mutex_unlock(&clock_mu);
    return now;
}

void store_clock_floor(uint64_t hw_us)
{
    pthread_mutex_lock(&clock_mu);
    uint64_t mono = clock_mono();
    uint64_t since = clock_anchored ? anchor_real + (mono - anchor_mono) : 0;
    if (hw_us > since && hw_us > clock_real()) {
        anchor_real = hw_us;
        anchor_mono = mono;
        clock_anchored = true;
    }
    pthread_mutex_unlock(&clock_mu);
}

void store_clock_hook(uint64_t (*real_us)(void), uint64_t (*mono_us)(void))
{
    pthread_mutex_lock(&clock_mu);
    clock_real = real_us ? real_us : clock_real_default;
    clock_mono = mono_us ? mono_us : clock_mono_default;
    clock_anchored = false;
    pthread_mutex_unlock(&clock_mu);
}

/* ------------------------------------------------------ removed event ids -- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

void store_removed_id_digest(const uint8_t id[ES_EVENT_ID_BYTES], uint8_t key[1], uint8_t val[8])
{
    uint64_t a = get_u64le(id), b = get_u64le(id + 8);
    uint64_t h = mix64(a ^ mix64(b ^ 0x9e3779b97f4a7c15ull));
    key[0] = (uint8_t)(mix64(h) >> 56); /* the bucket: another function of h */
    put_u64be(val, h);
}

int store_removed_id_find(MDB_txn *txn, const store *s, const uint8_t id[ES_EVENT_ID_BYTES])
{
    if (!s->has_removed_ids) {
        return MDB_NOTFOUND;
    }
    uint8_t key[1], val[8];
    store_removed_id_digest(id, key, val);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->removed_ids, &cur);
    if (rc) {
        return rc;
    }
    MDB_val k = {1, key}, v = {8, val};
    rc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH);
    mdb_cursor_close(cur);
    return rc;
}

/* ------------------------------------------------------------- the walk -- */

#define CLOCK_HW_EVERY_US (60u * 1000000u) /* persist the clock at least this often */

typedef struct scav {
    store *s;
    MDB_txn *txn;
    bool dry; /* count, remove nothing */
    uint64_t now_us;
    uint64_t steps_left;
    store_scavenge_result *out;
} scav;

/* The last stream_revs entry of stream `number`. @return an LMDB code. */
static int scav_tail(scav *c, uint64_t number, uint64_t *last_rev, uint64_t *last_pos)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->txn, c->s->stream_revs, &cur);
    if (rc) {
        return rc;
    }
    uint8_t key[16];
    put_u64be(key, number);
    put_u64be(key + 8, UINT64_MAX);
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    } else if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    if (rc == MDB_SUCCESS &&
        (k.mv_size != 16 || v.mv_size != 8 || get_u64be(k.mv_data) != number)) {
        rc = MDB_CORRUPTED; /* a lifecycle value of a stream without events */
    }
    if (rc == MDB_SUCCESS) {
        *last_rev = get_u64be((const uint8_t *)k.mv_data + 8);
        *last_pos = get_u64be(v.mv_data);
    }
    mdb_cursor_close(cur);
    return rc;
}

/* The lowest stream_revs entry of `number` at or above `from`. */
static int scav_next_rev(scav *c, uint64_t number, uint64_t from, uint64_t *rev, uint64_t *pos)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->txn, c->s->stream_revs, &cur);
    if (rc) {
        return rc;
    }
    uint8_t key[16];
    put_u64be(key, number);
    put_u64be(key + 8, from);
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && (k.mv_size != 16 || v.mv_size != 8)) {
        rc = MDB_CORRUPTED;
    }
    if (rc == MDB_SUCCESS && get_u64be(k.mv_data) != number) {
        rc = MDB_NOTFOUND;
    }
    if (rc == MDB_SUCCESS) {
        *rev = get_u64be((const uint8_t *)k.mv_data + 8);
        *pos = get_u64be(v.mv_data);
    }
    mdb_cursor_close(cur);
    return rc;
}

static int del_key(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t len)
{
    MDB_val k = {len, (void *)key};
    return mdb_del(txn, dbi, &k, NULL);
}

/* Remove one event: its record and its stream, category and type entries. */
static int scav_remove(scav *c, uint64_t number, uint64_t rev, const MDB_val *recv,
                       const es_record *r, uint64_t pos)
{
    /* The keys are built before any delete: the record's slices borrow
     * from a page that the deletes may change. */
    uint8_t ckey[ES_MAX_NAME_BYTES + 9], tkey[ES_MAX_NAME_BYTES + 9];
    size_t cat_len = es_category_len(r->stream.p, r->stream.len);
    size_t ck = store_name_pos_key(ckey, r->stream.p, cat_len, pos);
    size_t tk = store_name_pos_key(tkey, r->type.p, r->type.len, pos);
    uint8_t id[ES_EVENT_ID_BYTES];
    if (r->id.len != ES_EVENT_ID_BYTES) {
        return MDB_CORRUPTED;
    }
    memcpy(id, r->id.p, ES_EVENT_ID_BYTES);
    c->out->events_removed++;
    /* record, stream_revs, categories, types, and event_ids less the digest */
    c->out->bytes_reclaimed += recv->mv_size + 8 + 16 + 8 + ck + tk + 16 + 24 - 8;
    if (c->dry) {
        return 0;
    }
    uint8_t dkey[1], dval[8];
    store_removed_id_digest(id, dkey, dval);
    MDB_val dk = {1, dkey}, dv = {8, dval};
    int rc = mdb_put(c->txn, c->s->removed_ids, &dk, &dv, MDB_NODUPDATA);
    if (rc == MDB_KEYEXIST) {
        rc = 0; /* two removed ids with one digest: one entry serves both */
    }
    if (rc == 0) {
        rc = del_key(c->txn, c->s->event_ids, id, ES_EVENT_ID_BYTES);
    }
    if (rc == 0) {
        rc = del_key(c->txn, c->s->categories, ckey, ck);
    }
    if (rc == 0) {
        rc = del_key(c->txn, c->s->types, tkey, tk);
    }
    uint8_t pkey[8];
    put_u64be(pkey, pos);
    if (rc == 0) {
        rc = del_key(c->txn, c->s->events, pkey, 8);
    }
    if (rc == 0) {
        uint8_t rkey[16];
        put_u64be(rkey, number);
        put_u64be(rkey + 8, rev);
        rc = del_key(c->txn, c->s->stream_revs, rkey, 16);
    }
    return rc;
}

/* A snapshot that only a read of deleted events could use. */
static int scav_snapshot(scav *c, const store_stream_life *l, uint64_t last_pos)
{
    uint8_t pkey[8];
    put_u64be(pkey, last_pos);
    MDB_val k = {8, pkey}, v;
    int rc = mdb_get(c->txn, c->s->events, &k, &v);
    if (rc) {
        return rc;
    }
    es_record r;
    if (store_record_parse(&v, &r) != ES_OK) {
        return MDB_CORRUPTED;
    }
    uint8_t name[ES_MAX_NAME_BYTES];
    size_t name_len = r.stream.len;
    memcpy(name, r.stream.p, name_len);
    MDB_val sk = {name_len, name}, sv;
    rc = mdb_get(c->txn, c->s->snapshots, &sk, &sv);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc) {
        return rc;
    }
    if (sv.mv_size < SNAPSHOT_HEADER_BYTES) {
        return MDB_CORRUPTED;
    }
    uint64_t snap_rev = get_u64le((const uint8_t *)sv.mv_data + 8);
    if (!l->tombstoned && snap_rev >= l->deleted_before) {
        return 0;
    }
    c->out->snapshots_removed++;
    return c->dry ? 0 : mdb_del(c->txn, c->s->snapshots, &sk, NULL);
}

/* Scavenge one stream; *done false when the steps ran out inside it. */
static int scav_stream(scav *c, uint64_t number, const store_stream_life *l, bool *done)
{
    *done = false;
    uint64_t last_rev, last_pos;
    int rc = scav_tail(c, number, &last_rev, &last_pos);
    if (rc) {
        return rc;
    }
    store_life_window w;
    store_life_view(l, last_rev, c->now_us, &w);
    uint64_t from = 0;
    for (;;) {
        if (c->steps_left == 0) {
            return 0;
        }
        c->steps_left--;
        uint64_t rev, pos;
        rc = scav_next_rev(c, number, from, &rev, &pos);
        if (rc == MDB_NOTFOUND || (rc == 0 && rev >= last_rev)) {
            break; /* the last event is kept */
        }
        if (rc) {
            return rc;
        }
        uint8_t pkey[8];
        put_u64be(pkey, pos);
        MDB_val k = {8, pkey}, v;
        rc = mdb_get(c->txn, c->s->events, &k, &v);
        if (rc) {
            return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
        }
        es_record r;
        if (store_record_parse(&v, &r) != ES_OK || r.revision != rev || r.position != pos) {
            return MDB_CORRUPTED;
        }
        if (store_life_serves(&w, rev, r.recorded_at_us) ||
            pos > atomic_load(&c->s->scavenge_horizon)) {
            break; /* served, or not yet relayed */
        }
        rc = scav_remove(c, number, rev, &v, &r, pos);
        if (rc) {
            return rc;
        }
        from = rev + 1;
    }
    *done = true;
    return l->tombstoned || l->deleted_before > 0 ? scav_snapshot(c, l, last_pos) : 0;
}

/* Walk stream_life from stream number `start`; *next where to resume. */
static int scav_walk(scav *c, uint64_t start, uint64_t *next)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->txn, c->s->life, &cur);
    if (rc) {
        return rc;
    }
    uint8_t key[8];
    put_u64be(key, start);
    MDB_val k = {8, key}, v;
    *next = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            rc = MDB_CORRUPTED;
            break;
        }
        uint64_t number = get_u64be(k.mv_data);
        store_stream_life l;
        if (store_life_get(c->txn, c->s, number, &l) != ES_OK) {
            rc = MDB_CORRUPTED;
            break;
        }
        bool done;
        /* Other databases change under the cursor's feet; stream_life does not. */
        rc = scav_stream(c, number, &l, &done);
        if (rc) {
            break;
        }
        if (!done) {
            *next = number;
            c->out->more = true;
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        c->out->pass_done = true;
        rc = 0;
    }
    return rc;
}

STORE_GUARDED_BEGIN
es_err store_scavenge_slice(store *s, uint32_t budget, store_scavenge_result *out)
{
    STORE_FATAL_SCOPE;
    WRITE_GUARD_DECLARE;
    memset(out, 0, sizeof *out);
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (!s->has_life || !s->has_removed_ids) {
        out->pass_done = true;
        return ES_OK;
    }
    MDB_txn *txn;
    int rc = store_write_begin(s, &txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    if (sigsetjmp(write_jb_, 1) != 0) {
        memset(out, 0, sizeof *out);
        return store_write_damaged(s, "a page the scavenger read");
    }
    WRITE_GUARD_ARM();
    scav c = {s, txn, false, store_now_us(), budget ? budget : 1, out};
    uint64_t start = 0, hw = 0;
    MDB_val v;
    if (store_meta_get(txn, s->meta, "scavenge_next", &v) == 0 && v.mv_size == 8) {
        start = get_u64le(v.mv_data);
    }
    if (store_meta_get(txn, s->meta, "clock_hw", &v) == 0 && v.mv_size == 8) {
        hw = get_u64le(v.mv_data);
    }
    uint64_t next;
    rc = scav_walk(&c, start, &next);
    bool write_hw = c.now_us > hw && (out->events_removed || c.now_us - hw >= CLOCK_HW_EVERY_US);
    if (rc == 0 && next != start) {
        uint8_t buf[8];
        put_u64le(buf, next);
        rc = store_meta_put(txn, s->meta, "scavenge_next", buf, 8);
    }
    if (rc == 0 && write_hw) {
        uint8_t buf[8];
        put_u64le(buf, c.now_us);
        rc = store_meta_put(txn, s->meta, "clock_hw", buf, 8);
    }
    if (rc) {
        mdb_txn_abort(txn);
        memset(out, 0, sizeof *out);
        return rc == MDB_CORRUPTED ? store_damage(s, "stream_revs", 0, "a page the scavenger read")
                                   : es_err_from_mdb(rc);
    }
    store_write_guard_off();
    if (next == start && !write_hw && out->events_removed == 0 && out->snapshots_removed == 0) {
        mdb_txn_abort(txn); /* nothing changed: no commit, no sync */
        return ES_OK;
    }
    rc = mdb_txn_commit(txn);
    if (rc) {
        memset(out, 0, sizeof *out);
        return store_commit_err(s, rc);
    }
    return ES_OK;
}
STORE_GUARDED_END

void store_scavenge_horizon_set(store *s, uint64_t position)
{
    atomic_store(&s->scavenge_horizon, position);
}

/* ----------------------------------------------------------- page counts -- */

STORE_GUARDED_BEGIN
es_err store_pages_get(store *s, store_pages *p)
{
    memset(p, 0, sizeof *p);
    MDB_envinfo info;
    MDB_stat est;
    if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &est)) {
        return ES_ERR_IO;
    }
    p->page_size = est.ms_psize;
    p->total = (uint64_t)info.me_last_pgno + 1;
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    /* The free list (database 0): each value is a list of page numbers
     * whose first word is its length. */
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, 0, &cur);
    if (rc == 0) {
        MDB_val k, v;
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
            if (v.mv_size >= sizeof(size_t)) {
                size_t n;
                memcpy(&n, v.mv_data, sizeof n);
                p->free += n;
            }
        }
        mdb_cursor_close(cur);
    }
    /* The walk counts what a slice would remove, with nothing removed. */
    store_scavenge_result res;
    memset(&res, 0, sizeof res);
    scav c = {s, txn, true, store_now_us(), UINT64_MAX, &res};
    uint64_t next;
    rc = s->has_life ? scav_walk(&c, 0, &next) : 0;
    store_read_end(txn);
    if (rc) {
        return rc == MDB_CORRUPTED ? ES_ERR_CORRUPT : es_err_from_mdb(rc);
    }
    p->unreclaimed_events = res.events_removed;
    p->unreclaimed_bytes = res.bytes_reclaimed;
    p->unreclaimed = (res.bytes_reclaimed + p->page_size - 1) / p->page_size;
    p->live = p->total > p->free + p->unreclaimed ? p->total - p->free - p->unreclaimed : 0;
    return ES_OK;
}
STORE_GUARDED_END

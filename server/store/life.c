/*
 * life.c — a stream's lifecycle: soft delete, tombstone and retention
 * metadata (truncate_before, max_count, max_age_s).
 *
 * Design notes
 * ============
 *
 * A lifecycle change removes nothing: it writes one value in `stream_life`
 * (layout drawn in open.c), and every read decides from it which events it
 * may serve. So a change takes effect at once and is all or nothing,
 * positions stay as assigned, and a retried append of a deleted event's id
 * is still found in event_ids and answered as a duplicate. The scavenger
 * (scavenge.c) removes the unserved events later, in its own transactions.
 *
 * Every change that changes something also appends a record to
 * STORE_LIFE_STREAM in the same transaction (store.h: its type names the
 * operation, its data is the new 48-byte value and the stream id), so that
 * subscriptions, the relay and followers see it in the log's order. A
 * follower importing such a record puts the value it carries
 * (store_life_import): the last record of a stream is its whole state, and
 * store_check compares the two. A repeated delete or tombstone writes no
 * record.
 *
 * Visibility of the event at revision r of a stream whose last revision is
 * L (store_life_view): served iff the stream is not tombstoned, and
 *   r >= deleted_before, r >= truncate_before, r > L - max_count (when
 *   max_count != 0), and recorded_at >= now - max_age_s (when max_age_s != 0).
 * A clock that went backwards serves more, never less.
 *
 * Soft delete sets deleted_before = L + 1. A stream whose last revision is
 * below deleted_before "does not exist" for reads and listings (NOT_FOUND)
 * and for an append's expectation: NO_STREAM and ANY succeed, and so does
 * EXACT L (the last revision, deleted or not), STREAM_EXISTS fails. The
 * append gets revision L + 1: revisions never restart, so an aggregate's
 * old events are never mistaken for new ones. Deleting a deleted stream is
 * ES_OK and changes nothing.
 *
 * Tombstone additionally sets a flag that nothing clears: appends,
 * transactions, snapshot saves and further metadata get
 * ES_ERR_STREAM_DELETED, and so do reads of the stream (never NOT_FOUND, so
 * a client can tell "deleted" from "never existed"). Tombstoning again is
 * ES_OK.
 *
 * Metadata has its own revision: 0 for the first set, +1 for each further
 * one, checked like a stream revision (NO_STREAM: none set yet).
 *
 * Only a stream that exists (has had an event) has a lifecycle: the
 * operations on an unknown stream are ES_ERR_NOT_FOUND.
 */
#include <lmdb.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>

#include "bytes.h"
#include "internal.h"
#include "validate.h"

#define LIFE_TOMBSTONED 1u
#define LIFE_META_SET   2u

void store_life_encode(uint8_t out[STREAM_LIFE_BYTES], const store_stream_life *l)
{
    uint64_t flags = (l->tombstoned ? LIFE_TOMBSTONED : 0) | (l->meta_set ? LIFE_META_SET : 0);
    put_u64le(out, flags);
    put_u64le(out + 8, l->meta_revision);
    put_u64le(out + 16, l->deleted_before);
    put_u64le(out + 24, l->truncate_before);
    put_u64le(out + 32, l->max_count);
    put_u64le(out + 40, l->max_age_s);
}

static void life_decode(const MDB_val *v, store_stream_life *l)
{
    const uint8_t *p = v->mv_data;
    uint64_t flags = get_u64le(p);
    memset(l, 0, sizeof *l);
    l->tombstoned = (flags & LIFE_TOMBSTONED) != 0;
    l->meta_set = (flags & LIFE_META_SET) != 0;
    l->meta_revision = get_u64le(p + 8);
    l->deleted_before = get_u64le(p + 16);
    l->truncate_before = get_u64le(p + 24);
    l->max_count = get_u64le(p + 32);
    l->max_age_s = get_u64le(p + 40);
}

es_err store_life_get(MDB_txn *txn, const store *s, uint64_t number, store_stream_life *l)
{
    memset(l, 0, sizeof *l);
    if (!s->has_life) {
        return ES_OK;
    }
    uint8_t key[8];
    put_u64be(key, number);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, s->life, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return ES_OK;
    }
    if (rc) {
        return es_err_from_mdb(rc);
    }
    if (v.mv_size != STREAM_LIFE_BYTES) {
        return ES_ERR_CORRUPT;
    }
    life_decode(&v, l);
    return ES_OK;
}

void store_life_view(const store_stream_life *l, uint64_t last_revision, uint64_t now_us,
                     store_life_window *w)
{
    w->tombstoned = l->tombstoned;
    w->deleted = last_revision < l->deleted_before;
    uint64_t first = l->deleted_before;
    if (l->truncate_before > first) {
        first = l->truncate_before;
    }
    if (l->max_count != 0 && last_revision >= l->max_count &&
        last_revision + 1 - l->max_count > first) {
        first = last_revision + 1 - l->max_count;
    }
    w->first_revision = first;
    uint64_t age_us = l->max_age_s * 1000000u; /* max_age_s <= STORE_MAX_AGE_S: no overflow */
    w->min_recorded_us = (l->max_age_s != 0 && now_us > age_us) ? now_us - age_us : 0;
}

bool store_life_serves(const store_life_window *w, uint64_t revision, uint64_t recorded_at_us)
{
    return !w->tombstoned && revision >= w->first_revision && recorded_at_us >= w->min_recorded_us;
}

/* ------------------------------------------------------------ the filter -- */

void store_life_filter_open(store_life_filter *f, store *s, MDB_txn *txn)
{
    memset(f, 0, sizeof *f);
    f->s = s;
    f->txn = txn;
    f->now_us = store_now_us();
    MDB_stat st;
    f->active = s->has_life && mdb_stat(txn, s->life, &st) == 0 && st.ms_entries != 0;
}

es_err store_life_filter_pass(store_life_filter *f, const uint8_t *bytes, size_t len, bool *pass)
{
    *pass = true;
    if (!f->active) {
        return ES_OK;
    }
    es_record r;
    if (es_record_parse(bytes, len, 0, &r) != ES_OK) {
        return ES_ERR_CORRUPT;
    }
    if (!f->cached || f->stream_len != r.stream.len ||
        memcmp(f->stream, r.stream.p, r.stream.len)) {
        store_stream_info si;
        es_err rv = store_stream_lookup(f->txn, f->s, r.stream.p, r.stream.len, &si);
        if (rv != ES_OK) {
            return rv == ES_ERR_NOT_FOUND ? ES_ERR_CORRUPT : rv; /* a record without its stream */
        }
        store_stream_life l;
        rv = store_life_get(f->txn, f->s, si.number, &l);
        if (rv != ES_OK) {
            return rv;
        }
        store_life_view(&l, si.last_revision, f->now_us, &f->window);
        memcpy(f->stream, r.stream.p, r.stream.len);
        f->stream_len = r.stream.len;
        f->cached = true;
    }
    *pass = store_life_serves(&f->window, r.revision, r.recorded_at_us);
    return ES_OK;
}

/* ----------------------------------------------------------- operations -- */

static bool expect_holds(store_expect e, uint64_t want, bool exists, uint64_t actual)
{
    switch (e) {
    case STORE_EXPECT_ANY:
        return true;
    case STORE_EXPECT_NO_STREAM:
        return !exists;
    case STORE_EXPECT_STREAM_EXISTS:
        return exists;
    case STORE_EXPECT_EXACT:
        return exists && actual == want;
    }
    return false;
}

/* The checks and the new state of one operation; nothing written. */
static es_err life_plan(store_life_op *op, const store_stream_info *si, store_stream_life *l,
                        bool *changed)
{
    *changed = false;
    if (l->tombstoned) {
        return op->kind == STORE_LIFE_TOMBSTONE ? ES_OK : ES_ERR_STREAM_DELETED;
    }
    bool live = si->last_revision >= l->deleted_before;
    switch (op->kind) {
    case STORE_LIFE_DELETE:
    case STORE_LIFE_TOMBSTONE:
        /* Expectations as for an append; a deleted stream counts as absent
         * but EXACT its last revision still holds. */
        if (!(op->expect == STORE_EXPECT_EXACT
                  ? si->last_revision == op->revision
                  : expect_holds(op->expect, op->revision, live, si->last_revision))) {
            op->actual_exists = live;
            op->actual_revision = si->last_revision;
            return ES_ERR_WRONG_EXPECTED_REVISION;
        }
        if (op->kind == STORE_LIFE_TOMBSTONE) {
            l->tombstoned = true;
            *changed = true;
        }
        if (live) {
            l->deleted_before = si->last_revision + 1;
            *changed = true;
        }
        return ES_OK;
    case STORE_LIFE_SET_META:
        if (!expect_holds(op->expect, op->revision, l->meta_set, l->meta_revision)) {
            op->actual_exists = l->meta_set;
            op->actual_revision = l->meta_revision;
            return ES_ERR_WRONG_EXPECTED_REVISION;
        }
        if (op->truncate_before > si->last_revision + 1 || op->max_age_s > STORE_MAX_AGE_S) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        l->meta_revision = l->meta_set ? l->meta_revision + 1 : 0;
        l->meta_set = true;
        l->truncate_before = op->truncate_before;
        l->max_count = op->max_count;
        l->max_age_s = op->max_age_s;
        *changed = true;
        return ES_OK;
    }
    return ES_ERR_INVALID_ARGUMENT;
}

es_err store_life_append(store *s, MDB_txn *txn, const char *type, const uint8_t *data,
                         size_t data_len, const uint8_t *metadata, size_t metadata_len,
                         uint64_t *head)
{
    uint8_t id[ES_EVENT_ID_BYTES];
    if (getrandom(id, sizeof id, 0) != (ssize_t)sizeof id) {
        return ES_ERR_IO;
    }
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* a version-4 UUID, as clients make */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
    store_event_in e = {
        .id = id,
        .type = (const uint8_t *)type,
        .type_len = strlen(type),
        .data = data,
        .data_len = data_len,
        .metadata = metadata,
        .metadata_len = metadata_len,
    };
    store_append_in a = {
        .stream = (const uint8_t *)STORE_LIFE_STREAM,
        .stream_len = strlen(STORE_LIFE_STREAM),
        .expect = STORE_EXPECT_ANY,
        .events = &e,
        .n_events = 1,
        .allow_reserved = true,
    };
    return store_append_own(s, txn, &a, head);
}

/* The record of a change in STORE_LIFE_STREAM, in the change's transaction:
 * data = the new stream_life value | the stream id (layout in open.c). */
static es_err life_record_write(store *s, MDB_txn *txn, const store_life_op *op,
                                const uint8_t val[STREAM_LIFE_BYTES], uint64_t *head)
{
    static const char *const types[] = {STORE_LIFE_TYPE_DELETED, STORE_LIFE_TYPE_TOMBSTONED,
                                        STORE_LIFE_TYPE_METADATA};
    uint8_t data[STREAM_LIFE_BYTES + ES_MAX_NAME_BYTES];
    memcpy(data, val, STREAM_LIFE_BYTES);
    memcpy(data + STREAM_LIFE_BYTES, op->stream, op->stream_len);
    return store_life_append(s, txn, types[op->kind], data, STREAM_LIFE_BYTES + op->stream_len,
                             NULL, 0, head);
}

es_err store_life_record_decode(const uint8_t *data, size_t len, store_stream_life *l,
                                const uint8_t **stream, size_t *stream_len)
{
    if (len <= STREAM_LIFE_BYTES || len > STREAM_LIFE_BYTES + ES_MAX_NAME_BYTES) {
        return ES_ERR_MALFORMED;
    }
    MDB_val v = {STREAM_LIFE_BYTES, (void *)data};
    life_decode(&v, l);
    *stream = data + STREAM_LIFE_BYTES;
    *stream_len = len - STREAM_LIFE_BYTES;
    if (es_validate_stream_id(*stream, *stream_len, false) != ES_OK) {
        return ES_ERR_MALFORMED;
    }
    return ES_OK;
}

es_err store_life_import(store *s, MDB_txn *txn, const es_record *r)
{
    store_stream_life l;
    const uint8_t *stream;
    size_t stream_len;
    if (store_life_record_decode(r->data.p, r->data.len, &l, &stream, &stream_len) != ES_OK) {
        return ES_ERR_MALFORMED;
    }
    store_stream_info si;
    es_err rv = store_stream_lookup(txn, s, stream, stream_len, &si);
    if (rv != ES_OK) {
        return rv == ES_ERR_NOT_FOUND ? ES_ERR_MALFORMED : rv; /* a change of no stream */
    }
    uint8_t key[8], val[STREAM_LIFE_BYTES];
    put_u64be(key, si.number);
    store_life_encode(val, &l);
    MDB_val k = {8, key}, v = {STREAM_LIFE_BYTES, val};
    return es_err_from_mdb(mdb_put(txn, s->life, &k, &v, 0));
}

es_err store_life_apply(store *s, store_life_op *op)
{
    STORE_FATAL_SCOPE;
    op->actual_exists = false;
    op->actual_revision = 0;
    op->synced = false;
    op->last_revision = 0;
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (s->follower) {
        return ES_ERR_FOLLOWER;
    }
    es_err rv = es_validate_stream_id(op->stream, op->stream_len, false);
    if (rv != ES_OK) {
        return rv;
    }
    if (op->kind > STORE_LIFE_SET_META || op->expect > STORE_EXPECT_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    MDB_txn *txn;
    int rc = store_write_begin(s, &txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    store_stream_info si;
    rv = store_stream_lookup(txn, s, op->stream, op->stream_len, &si);
    store_stream_life l;
    if (rv == ES_OK) {
        rv = store_life_get(txn, s, si.number, &l);
    }
    bool changed = false;
    if (rv == ES_OK) {
        rv = life_plan(op, &si, &l, &changed);
    }
    if (rv != ES_OK || !changed) {
        mdb_txn_abort(txn);
        if (rv == ES_OK) {
            op->life = l;
            op->last_revision = si.last_revision;
        }
        return rv;
    }
    uint8_t key[8], val[STREAM_LIFE_BYTES];
    put_u64be(key, si.number);
    store_life_encode(val, &l);
    MDB_val k = {8, key}, v = {STREAM_LIFE_BYTES, val};
    rc = mdb_put(txn, s->life, &k, &v, 0);
    if (rc) {
        mdb_txn_abort(txn);
        return es_err_from_mdb(rc);
    }
    uint64_t head = 0;
    rv = life_record_write(s, txn, op, val, &head);
    if (rv != ES_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    rv = store_commit_durable(s, txn);
    if (rv != ES_OK) {
        return rv;
    }
    atomic_store(&s->head, head);
    op->life = l;
    op->last_revision = si.last_revision;
    op->synced = s->sync;
    return ES_OK;
}

STORE_GUARDED_BEGIN
es_err store_stream_life_get(store *s, const uint8_t *stream, size_t stream_len,
                             store_stream_life *out, uint64_t *last_revision)
{
    memset(out, 0, sizeof *out);
    es_err rv = es_validate_stream_id(stream, stream_len, true);
    if (rv != ES_OK) {
        return rv;
    }
    MDB_txn *txn;
    rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    store_stream_info si;
    rv = store_stream_lookup(txn, s, stream, stream_len, &si);
    if (rv == ES_OK) {
        rv = store_life_get(txn, s, si.number, out);
    }
    if (rv == ES_OK && out->tombstoned) {
        rv = ES_ERR_STREAM_DELETED;
    }
    if (rv == ES_OK && last_revision) {
        *last_revision = si.last_revision;
    }
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

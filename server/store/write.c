/*
 * write.c — the store's write path: appends, imports, snapshot saves.
 *
 * Design notes
 * ============
 *
 * Group commit: store_append_batch runs every request of a batch in one
 * write transaction. Each request is first checked (validation,
 * idempotency, expectations) against the transaction's state, which
 * includes the earlier requests of the batch; only a request that passes
 * every check is written, so a failing request leaves nothing behind. When
 * a write hits MDB_MAP_FULL the transaction is unusable: it is aborted,
 * that request is marked STORE_FULL, and the batch is redone without it
 * (at most once per request). A failed commit fails every request; one
 * that failed for want of disk space (ENOSPC, EDQUOT, EFBIG, or the EIO that
 * LMDB makes of a short write on a full file system: see commit_err) is
 * STORE_FULL, and the next batch succeeds once there is room again.
 * mdb_txn_commit frees the transaction even on failure: it is never
 * aborted afterwards.
 *
 * Nothing is overwritten. Every index insert of a new event or stream is
 * MDB_NOOVERWRITE (index_insert) and the log is MDB_APPEND: an entry that
 * is already there means a damaged counter or index (a stream number handed
 * out twice would otherwise rewrite another stream's history), so the
 * insert fails with MDB_CORRUPTED, which aborts the whole batch as
 * ES_ERR_CORRUPT with nothing written, logged and counted (store_damage).
 * Idempotency reads the event-id index and accepts its entry only when the
 * record it points at has that id, stream, revision and position. An id
 * not there may be one of an event the scavenger removed: those are known
 * by a digest (removed_ids, scavenge.c), and a retry all of whose ids are
 * removed is a duplicate with revisions and positions 0 (not checked
 * against stream or content: both are gone).
 *
 * Durability: with the journal (journal.c), store_append_batch writes the
 * batch's new `events` values as one journal entry and fdatasyncs it just
 * before the commit, which then does not sync; other write transactions
 * (snapshot saves, lifecycle changes) commit through store_commit_durable.
 * Without it, LMDB's commit syncs (or, --sync none, nothing does).
 *
 * Imports (a follower, esd --follow-nats): store_import_batch writes
 * records that a primary already positioned, byte for byte, in one write
 * transaction per batch, all or nothing. The same indexes are written as
 * by an append; the checks differ: position must be head + 1, revision the
 * stream's next one, the event id new. A sealed record (data and
 * metadata in field 12) is stored sealed, with its header's sealed flag; a
 * new stream is bound to the key slot its first event names, and an
 * erasure record destroys the store's copy of that key after the commit
 * (erase.c). A store opened as a follower
 * refuses appends and snapshot saves (ES_ERR_FOLLOWER), so its importing
 * thread is its only writer.
 */
#include <errno.h>
#include <lmdb.h>
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "crc32c.h"
#include "internal.h"
#include "pbwire.h"
#include "validate.h"

/* ---------------------------------------------------------------- appends -- */

static es_err validate_append(const store *s, const store_append_in *a)
{
    es_err rv = es_validate_stream_id(a->stream, a->stream_len, a->allow_reserved);
    if (rv != ES_OK) {
        return rv;
    }
    if (a->n_events == 0) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (a->n_events > s->max_events_per_append) {
        return ES_ERR_TOO_MANY_EVENTS;
    }
    if (a->expect > STORE_EXPECT_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < a->n_events; i++) {
        const store_event_in *e = &a->events[i];
        if (!e->id) {
            return ES_ERR_INVALID_EVENT_ID;
        }
        rv = es_validate_event_type(e->type, e->type_len);
        if (rv != ES_OK) {
            return rv;
        }
        if (e->data_len > s->max_event_bytes || e->metadata_len > s->max_event_bytes ||
            e->data_len + e->metadata_len > s->max_event_bytes) {
            return ES_ERR_TOO_LARGE;
        }
        if (e->content_type_len &&
            es_validate_name(e->content_type, e->content_type_len) != ES_OK) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        if ((e->correlation_id_len != 0 && e->correlation_id_len != ES_EVENT_ID_BYTES) ||
            (e->causation_id_len != 0 && e->causation_id_len != ES_EVENT_ID_BYTES)) {
            return ES_ERR_INVALID_ARGUMENT;
        }
    }
    return ES_OK;
}

static int id_cmp(const void *a, const void *b)
{
    return memcmp(*(const uint8_t *const *)a, *(const uint8_t *const *)b, ES_EVENT_ID_BYTES);
}

static es_err validate_request(const store *s, const store_request *r)
{
    if (r->n_appends == 0 || r->n_appends > STORE_MAX_APPENDS_PER_TXN || !r->appends) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < r->n_appends; i++) {
        es_err rv = validate_append(s, &r->appends[i]);
        if (rv != ES_OK) {
            return rv;
        }
    }
    /* One stream at most once per transaction: quadratic in the appends,
     * bounded by STORE_MAX_APPENDS_PER_TXN. */
    for (size_t i = 0; i < r->n_appends; i++) {
        const store_append_in *a = &r->appends[i];
        for (size_t j = i + 1; j < r->n_appends; j++) {
            const store_append_in *b = &r->appends[j];
            if (a->stream_len == b->stream_len && !memcmp(a->stream, b->stream, a->stream_len)) {
                return ES_ERR_INVALID_ARGUMENT;
            }
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < r->n_appends; i++) {
        total += r->appends[i].n_events;
    }
    if (total > 1) {
        /* Event ids unique in the request: sort pointers to them and compare
         * neighbours, O(n log n). Comparing every pair is quadratic in the
         * events of a transaction (up to 1024 appends of 10,000): one large
         * request would stall the writer, and every client, for minutes. */
        const uint8_t **ids = malloc(total * sizeof *ids);
        if (!ids) {
            return ES_ERR_NO_MEMORY;
        }
        size_t k = 0;
        for (size_t i = 0; i < r->n_appends; i++) {
            for (size_t e = 0; e < r->appends[i].n_events; e++) {
                ids[k++] = r->appends[i].events[e].id;
            }
        }
        qsort(ids, total, sizeof *ids, id_cmp);
        es_err rv = ES_OK;
        for (size_t i = 1; i < total; i++) {
            if (!memcmp(ids[i - 1], ids[i], ES_EVENT_ID_BYTES)) {
                rv = ES_ERR_INVALID_EVENT_ID;
                break;
            }
        }
        free(ids);
        return rv;
    }
    return ES_OK;
}

typedef struct batch_state {
    MDB_txn *txn;
    uint64_t next_position;
    uint64_t next_stream;
    bool next_stream_dirty;
    uint64_t now_us;
    bool erasure; /* an import recorded an erasure: keys to destroy after the commit */
} batch_state;

/* State of one append found by the check phase. */
typedef struct append_plan {
    bool exists;  /* a stream record: revisions continue after si.last_revision */
    bool deleted; /* soft-deleted, nothing appended since: absent for expectations */
    store_stream_info si;
    store_key_plan key; /* its data key (erase.c) */
} append_plan;

/*
 * Whether the record stored at `pos` (found through the event-id index at
 * `rev` of the append's stream) holds what `e` would write: the same
 * type, data, metadata, content type, correlation and causation id. A
 * retry must carry the same content as the original; the same ids with
 * other content are another request, refused rather than silently dropped.
 * @return ES_OK (*same set); ES_ERR_CORRUPT; LMDB errors.
 */
static es_err stored_content_same(store *s, MDB_txn *txn, const store_append_in *a, uint64_t rev,
                                  uint64_t pos, const store_event_in *e, bool *same)
{
    uint8_t pkey[8];
    put_u64be(pkey, pos);
    MDB_val k = {8, pkey}, v;
    int rc = mdb_get(txn, s->events, &k, &v);
    if (rc != MDB_SUCCESS) {
        return rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : es_err_from_mdb(rc);
    }
    es_record r;
    const uint8_t *payload;
    size_t plen;
    es_err rv = store_record_open_plain(s, &v, &payload, &plen);
    if (rv == ES_OK && es_record_parse(payload, plen, 0, &r) != ES_OK) {
        rv = ES_ERR_CORRUPT;
    }
    if (rv != ES_OK) {
        return rv;
    }
    /* The event-id index promised this id, stream, revision and position. */
    if (!es_slice_eq(r.id, e->id, ES_EVENT_ID_BYTES) ||
        !es_slice_eq(r.stream, a->stream, a->stream_len) || r.revision != rev ||
        r.position != pos) {
        return store_damage(s, "event_ids", pos,
                            "the record it points at has another id, stream or revision");
    }
    *same = es_slice_eq(r.type, e->type, e->type_len) &&
            es_slice_eq(r.data, e->data, e->data_len) &&
            es_slice_eq(r.metadata, e->metadata, e->metadata_len) &&
            es_slice_eq(r.content_type, e->content_type, e->content_type_len) &&
            es_slice_eq(r.correlation_id, e->correlation_id, e->correlation_id_len) &&
            es_slice_eq(r.causation_id, e->causation_id, e->causation_id_len);
    return ES_OK;
}

/*
 * Idempotency: are the append's ids already stored?
 * @return ES_OK with *dup = false (none stored) or true (all stored in this
 *   stream at consecutive revisions, each with the same content: result
 *   filled); ES_ERR_IDEMPOTENCY_CONFLICT (some stored, stored elsewhere or
 *   at other revisions, or stored with other content); other errors from
 *   LMDB.
 */
static es_err check_idempotency(store *s, batch_state *b, const store_append_in *a,
                                const append_plan *plan, bool *dup, store_append_result *res)
{
    *dup = false;
    size_t found = 0, removed = 0;
    uint64_t first_rev = 0;
    for (size_t i = 0; i < a->n_events; i++) {
        MDB_val k = {ES_EVENT_ID_BYTES, (void *)a->events[i].id};
        MDB_val v;
        int rc = mdb_get(b->txn, s->event_ids, &k, &v);
        if (rc == MDB_NOTFOUND) {
            /* Removed by the scavenger? Known by its digest only (scavenge.c). */
            rc = store_removed_id_find(b->txn, s, a->events[i].id);
            if (rc == MDB_SUCCESS) {
                if (found != 0) {
                    return ES_ERR_IDEMPOTENCY_CONFLICT; /* removal is a prefix */
                }
                removed++;
            } else if (rc != MDB_NOTFOUND) {
                return es_err_from_mdb(rc);
            }
            continue;
        }
        if (rc) {
            return es_err_from_mdb(rc);
        }
        if (v.mv_size != 24) {
            return ES_ERR_CORRUPT;
        }
        uint64_t num = get_u64be(v.mv_data);
        uint64_t rev = get_u64be((uint8_t *)v.mv_data + 8);
        uint64_t pos = get_u64be((uint8_t *)v.mv_data + 16);
        if (!plan->exists || num != plan->si.number) {
            return ES_ERR_IDEMPOTENCY_CONFLICT;
        }
        if (found + removed != i) {
            return ES_ERR_IDEMPOTENCY_CONFLICT; /* an earlier id was not stored */
        }
        if (found == 0) {
            first_rev = rev - i; /* i ids before it were removed */
            res->first_position = removed ? 0 : pos;
            if (rev < i) {
                return ES_ERR_IDEMPOTENCY_CONFLICT;
            }
        } else if (rev != first_rev + i) {
            return ES_ERR_IDEMPOTENCY_CONFLICT;
        }
        bool same = false;
        es_err crv = stored_content_same(s, b->txn, a, rev, pos, &a->events[i], &same);
        if (crv != ES_OK) {
            return crv;
        }
        if (!same) {
            return ES_ERR_IDEMPOTENCY_CONFLICT;
        }
        res->last_position = pos;
        found++;
    }
    if (found + removed == 0) {
        return ES_OK;
    }
    if (found + removed != a->n_events) {
        return ES_ERR_IDEMPOTENCY_CONFLICT;
    }
    *dup = true;
    if (found == 0) {
        /* Every event was removed: recognised, but its answer is gone. */
        first_rev = 0;
        res->first_position = res->last_position = 0;
    }
    res->first_revision = first_rev;
    res->last_revision = found ? first_rev + a->n_events - 1 : 0;
    res->duplicate = true;
    return ES_OK;
}

static bool expectation_holds(const store_append_in *a, const append_plan *p)
{
    switch (a->expect) {
    case STORE_EXPECT_ANY:
        return true;
    case STORE_EXPECT_NO_STREAM:
        return !p->exists || p->deleted;
    case STORE_EXPECT_STREAM_EXISTS:
        return p->exists && !p->deleted;
    case STORE_EXPECT_EXACT: /* a deleted stream's last revision still holds (life.c) */
        return p->exists && p->si.last_revision == a->revision;
    }
    return false;
}

/* Size of the packed RecordedEvent for one event. */
static size_t len_field(uint32_t field, size_t len)
{
    return len ? pbw_len_header_len(field, len) + len : 0;
}

static size_t varint_field(uint32_t field, uint64_t v)
{
    return v ? pbw_varint_len((uint64_t)field << 3) + pbw_varint_len(v) : 0;
}

static size_t put_len_field(uint8_t *p, uint32_t field, const uint8_t *data, size_t len)
{
    if (!len) {
        return 0;
    }
    size_t n = pbw_put_len_header(p, field, len);
    memcpy(p + n, data, len);
    return n + len;
}

static size_t put_varint_field(uint8_t *p, uint32_t field, uint64_t v)
{
    return v ? pbw_put_varint_field(p, field, v) : 0;
}

/* The sealed field's plaintext: data (6) and metadata (7), as in a plain record. */
static size_t inner_size(const store_event_in *e)
{
    return len_field(ES_RECORD_F_DATA, e->data_len) +
           len_field(ES_RECORD_F_METADATA, e->metadata_len);
}

/* Size of the packed RecordedEvent for one event, sealed or plain (the
 * layouts are drawn in erase.c). */
static size_t record_size(const store_append_in *a, const store_event_in *e, uint64_t rev,
                          uint64_t pos, uint64_t now, bool sealed)
{
    size_t body =
        sealed ? len_field(ES_RECORD_F_SEALED, STORE_SEAL_OVERHEAD + inner_size(e)) : inner_size(e);
    return len_field(ES_RECORD_F_STREAM, a->stream_len) + varint_field(ES_RECORD_F_REVISION, rev) +
           varint_field(ES_RECORD_F_POSITION, pos) + len_field(ES_RECORD_F_ID, ES_EVENT_ID_BYTES) +
           len_field(ES_RECORD_F_TYPE, e->type_len) + body +
           len_field(ES_RECORD_F_CONTENT_TYPE, e->content_type_len) +
           len_field(ES_RECORD_F_CORRELATION_ID, e->correlation_id_len) +
           len_field(ES_RECORD_F_CAUSATION_ID, e->causation_id_len) +
           varint_field(ES_RECORD_F_RECORDED_AT_US, now);
}

/* Write the record; with a key, data and metadata go sealed into field 12,
 * last. @return its length, or 0 when sealing failed. */
static size_t record_write(uint8_t *p, const store_append_in *a, const store_event_in *e,
                           uint64_t rev, uint64_t pos, uint64_t now, const uint8_t *key,
                           uint64_t slot)
{
    size_t n = 0;
    n += put_len_field(p + n, ES_RECORD_F_STREAM, a->stream, a->stream_len);
    n += put_varint_field(p + n, ES_RECORD_F_REVISION, rev);
    n += put_varint_field(p + n, ES_RECORD_F_POSITION, pos);
    n += put_len_field(p + n, ES_RECORD_F_ID, e->id, ES_EVENT_ID_BYTES);
    n += put_len_field(p + n, ES_RECORD_F_TYPE, e->type, e->type_len);
    if (!key) {
        n += put_len_field(p + n, ES_RECORD_F_DATA, e->data, e->data_len);
        n += put_len_field(p + n, ES_RECORD_F_METADATA, e->metadata, e->metadata_len);
    }
    n += put_len_field(p + n, ES_RECORD_F_CONTENT_TYPE, e->content_type, e->content_type_len);
    n += put_len_field(p + n, ES_RECORD_F_CORRELATION_ID, e->correlation_id, e->correlation_id_len);
    n += put_len_field(p + n, ES_RECORD_F_CAUSATION_ID, e->causation_id, e->causation_id_len);
    n += put_varint_field(p + n, ES_RECORD_F_RECORDED_AT_US, now);
    if (key) {
        size_t inner = inner_size(e);
        n += pbw_put_len_header(p + n, ES_RECORD_F_SEALED, STORE_SEAL_OVERHEAD + inner);
        uint8_t *sealed = p + n;
        size_t m = STORE_SEAL_HEADER;
        m += put_len_field(sealed + m, ES_RECORD_F_DATA, e->data, e->data_len);
        m += put_len_field(sealed + m, ES_RECORD_F_METADATA, e->metadata, e->metadata_len);
        if (store_seal(key, slot, pos, e->id, sealed, inner) != ES_OK) {
            return 0;
        }
        n += STORE_SEAL_OVERHEAD + inner;
    }
    return n;
}

/*
 * An index insert for a new event or stream: the key must be new. An entry
 * that is already there means the counter or an index is damaged; replacing
 * it would rewrite another stream's history, so the insert is refused,
 * logged and counted, and MDB_CORRUPTED aborts the whole transaction.
 */
static int index_insert(store *s, MDB_txn *txn, MDB_dbi dbi, const char *index, MDB_val *k,
                        MDB_val *v, uint64_t pos)
{
    int rc = mdb_put(txn, dbi, k, v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        store_damage(s, index, pos, "an insert for a new event met an existing entry");
        return MDB_CORRUPTED;
    }
    return rc;
}

/* Write the events of one append and their index entries (dkey: seal them). */
static int write_events(store *s, batch_state *b, const store_append_in *a, append_plan *plan,
                        const uint8_t *dkey)
{
    int rc;
    store_stream_info *si = &plan->si;
    uint64_t first_rev = si->event_count;
    uint8_t key[ES_MAX_NAME_BYTES + 9];
    uint8_t val[24];
    size_t cat_len = es_category_len(a->stream, a->stream_len);
    for (size_t i = 0; i < a->n_events; i++) {
        const store_event_in *e = &a->events[i];
        uint64_t rev = first_rev + i;
        uint64_t pos = b->next_position++;
        uint8_t pkey[8];
        put_u64be(pkey, pos);
        size_t plen = record_size(a, e, rev, pos, b->now_us, dkey != NULL);
        MDB_val k = {8, pkey};
        MDB_val v = {RECORD_HEADER_BYTES + plen, NULL};
        rc = mdb_put(b->txn, s->events, &k, &v, MDB_APPEND | MDB_RESERVE);
        if (rc) {
            return rc;
        }
        uint8_t *rec = v.mv_data;
        size_t written = record_write(rec + RECORD_HEADER_BYTES, a, e, rev, pos, b->now_us, dkey,
                                      plan->key.slot);
        if (written != plen) {
            return EIO;
        }
        rec[0] = RECORD_VERSION;
        rec[1] = dkey ? RECORD_FLAG_SEALED : 0;
        rec[2] = rec[3] = 0;
        put_u32le(rec + 4, crc32c(0, rec + RECORD_HEADER_BYTES, plen));

        /* stream_revs */
        put_u64be(key, si->number);
        put_u64be(key + 8, rev);
        MDB_val rk = {16, key};
        MDB_val rv = {8, pkey};
        rc = index_insert(s, b->txn, s->stream_revs, "stream_revs", &rk, &rv, pos);
        if (rc) {
            return rc;
        }
        /* event_ids */
        put_u64be(val, si->number);
        put_u64be(val + 8, rev);
        put_u64be(val + 16, pos);
        MDB_val ik = {ES_EVENT_ID_BYTES, (void *)e->id};
        MDB_val iv = {24, val};
        rc = index_insert(s, b->txn, s->event_ids, "event_ids", &ik, &iv, pos);
        if (rc) {
            return rc;
        }
        /* categories, types */
        MDB_val empty = {0, NULL};
        MDB_val ck = {store_name_pos_key(key, a->stream, cat_len, pos), key};
        rc = index_insert(s, b->txn, s->categories, "categories", &ck, &empty, pos);
        if (rc) {
            return rc;
        }
        MDB_val tk = {store_name_pos_key(key, e->type, e->type_len, pos), key};
        rc = index_insert(s, b->txn, s->types, "types", &tk, &empty, pos);
        if (rc) {
            return rc;
        }
    }
    return MDB_SUCCESS;
}

/* Write one append whose checks passed. Returns an LMDB code. */
static int write_append(store *s, batch_state *b, const store_append_in *a, append_plan *plan,
                        store_append_result *res)
{
    int rc;
    store_stream_info *si = &plan->si;
    if (!plan->exists) {
        memset(si, 0, sizeof *si);
        si->number = b->next_stream++;
        b->next_stream_dirty = true;
        si->created_us = b->now_us;
    }
    uint64_t first_rev = si->event_count;
    uint64_t first_pos = b->next_position;
    rc = store_crypt_bind(s, b->txn, a, si->number, &plan->key);
    if (rc) {
        return rc;
    }
    uint8_t dkey[STORE_KEY_BYTES];
    if (plan->key.sealed && !store_keys_get(&s->keys, plan->key.slot, dkey)) {
        return EIO; /* checked live by the check phase, in this transaction */
    }
    rc = write_events(s, b, a, plan, plan->key.sealed ? dkey : NULL);
    OPENSSL_cleanse(dkey, sizeof dkey);
    if (rc) {
        return rc;
    }
    if (!plan->exists) {
        si->first_position = first_pos;
    }
    si->event_count += a->n_events;
    si->last_revision = si->event_count - 1;
    si->last_position = b->next_position - 1;
    si->updated_us = b->now_us;
    if (!plan->exists) {
        /* Only a new stream writes its record (see the key layout). */
        plan->exists = true;
        uint8_t sbuf[STREAM_RECORD_BYTES];
        store_stream_encode(sbuf, si);
        MDB_val sk = {a->stream_len, (void *)a->stream};
        MDB_val sv = {STREAM_RECORD_BYTES, sbuf};
        rc = index_insert(s, b->txn, s->streams, "streams", &sk, &sv, first_pos);
        if (rc) {
            return rc;
        }
    }
    res->first_revision = first_rev;
    res->last_revision = si->last_revision;
    res->first_position = first_pos;
    res->last_position = si->last_position;
    res->duplicate = false;
    return MDB_SUCCESS;
}

/*
 * Check and, if every check passes, write one request.
 * @return an LMDB code for failures that poison the transaction (then the
 *   caller aborts and retries without this request); otherwise 0 with r->rv
 *   set to the request's outcome.
 */
static int apply_request(store *s, batch_state *b, store_request *r)
{
    for (size_t i = 0; i < r->n_appends; i++) {
        memset(&r->results[i], 0, sizeof r->results[i]);
    }
    es_err rv = validate_request(s, r);
    if (rv != ES_OK) {
        for (size_t i = 0; i < r->n_appends; i++) {
            r->results[i].rv = rv;
        }
        r->rv = rv;
        return 0;
    }
    /* Check phase: nothing is written until every append passes. */
    append_plan plans_small[8];
    append_plan *plans = plans_small;
    if (r->n_appends > 8) {
        plans = calloc(r->n_appends, sizeof *plans);
        if (!plans) {
            r->rv = ES_ERR_NO_MEMORY;
            return 0;
        }
    }
    bool failed_check = false;
    size_t n_dup = 0;
    rv = ES_OK;
    for (size_t i = 0; i < r->n_appends && rv == ES_OK; i++) {
        const store_append_in *a = &r->appends[i];
        store_append_result *res = &r->results[i];
        es_err lrv = store_stream_lookup(b->txn, s, a->stream, a->stream_len, &plans[i].si);
        if (lrv == ES_ERR_NOT_FOUND) {
            plans[i].exists = false;
        } else if (lrv != ES_OK) {
            res->rv = lrv;
            rv = lrv;
            break;
        } else {
            plans[i].exists = true;
        }
        plans[i].deleted = false;
        if (plans[i].exists) {
            store_stream_life life;
            lrv = store_life_get(b->txn, s, plans[i].si.number, &life);
            if (lrv == ES_OK && life.tombstoned) {
                lrv = ES_ERR_STREAM_DELETED;
                res->rv = lrv;
            }
            if (lrv != ES_OK) {
                rv = lrv;
                break;
            }
            plans[i].deleted = plans[i].si.last_revision < life.deleted_before;
        }
        lrv = store_crypt_plan(s, b->txn, a, plans[i].exists, plans[i].si.number, &plans[i].key);
        if (lrv != ES_OK) {
            res->rv = lrv;
            rv = lrv;
            break;
        }
        bool dup;
        lrv = check_idempotency(s, b, a, &plans[i], &dup, res);
        if (lrv != ES_OK) {
            res->rv = lrv;
            rv = lrv;
            break;
        }
        if (dup) {
            n_dup++;
            continue;
        }
        if (!expectation_holds(a, &plans[i])) {
            res->rv = ES_ERR_WRONG_EXPECTED_REVISION;
            res->actual_exists = plans[i].exists && !plans[i].deleted;
            res->actual_revision = plans[i].exists ? plans[i].si.last_revision : 0;
            failed_check = true;
        }
    }
    if (rv == ES_OK && failed_check) {
        rv = ES_ERR_WRONG_EXPECTED_REVISION;
    }
    if (rv == ES_OK && n_dup != 0 && n_dup != r->n_appends) {
        /* A transaction partly stored already: neither a retry nor new. */
        rv = ES_ERR_IDEMPOTENCY_CONFLICT;
    }
    int rc = 0;
    if (rv == ES_OK && n_dup == 0) {
        for (size_t i = 0; i < r->n_appends; i++) {
            rc = write_append(s, b, &r->appends[i], &plans[i], &r->results[i]);
            if (rc) {
                break;
            }
        }
    }
    if (plans != plans_small) {
        free(plans);
    }
    r->rv = rv;
    if (rv != ES_OK) {
        /* Report a clean slate for the appends that did not fail themselves. */
        for (size_t i = 0; i < r->n_appends; i++) {
            if (r->results[i].rv == ES_OK) {
                r->results[i].first_revision = r->results[i].last_revision = 0;
                r->results[i].first_position = r->results[i].last_position = 0;
                r->results[i].duplicate = false;
            }
        }
    }
    return rc;
}

static void fail_all(store_request *reqs, size_t n, es_err rv)
{
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].rv == ES_OK) {
            reqs[i].rv = rv;
            for (size_t j = 0; j < reqs[i].n_appends; j++) {
                reqs[i].results[j].rv = rv;
            }
        }
    }
}

uint64_t store_last_commit_call_us(const store *s)
{
    return s->last_commit_call_us;
}

STORE_GUARDED_BEGIN
es_err store_append_batch(store *s, store_request *reqs, size_t n_reqs)
{
    STORE_FATAL_SCOPE;
    WRITE_GUARD_DECLARE;
    s->last_commit_call_us = 0;
    if (s->read_only) {
        for (size_t i = 0; i < n_reqs; i++) {
            reqs[i].rv = ES_ERR_READ_ONLY;
        }
        return ES_ERR_READ_ONLY;
    }
    if (s->follower) {
        for (size_t i = 0; i < n_reqs; i++) {
            reqs[i].rv = ES_ERR_FOLLOWER;
            for (size_t j = 0; reqs[i].results && j < reqs[i].n_appends; j++) {
                memset(&reqs[i].results[j], 0, sizeof reqs[i].results[j]);
                reqs[i].results[j].rv = ES_ERR_FOLLOWER;
            }
        }
        return ES_ERR_FOLLOWER;
    }
    for (size_t i = 0; i < n_reqs; i++) {
        reqs[i].rv = ES_OK;
        reqs[i].synced = false;
    }
    if (sigsetjmp(write_jb_, 1) != 0) {
        /* Damage met while building the batch (only reqs and n_reqs, never
         * changed, are used here). */
        es_err drv = store_write_damaged(s, "a page an append batch read");
        fail_all(reqs, n_reqs, drv);
        return drv;
    }
    /* Requests excluded by an earlier attempt keep rv = STORE_FULL or
     * TOO_LARGE and are skipped; every other request is redone from scratch. */
    for (;;) {
        batch_state b = {0};
        int rc = store_write_begin(s, &b.txn);
        if (rc) {
            fail_all(reqs, n_reqs, es_err_from_mdb(rc));
            return es_err_from_mdb(rc);
        }
        WRITE_GUARD_ARM();
        MDB_val v;
        rc = store_meta_get(b.txn, s->meta, "next_stream", &v);
        if (rc || v.mv_size != 8) {
            store_write_guard_off();
            mdb_txn_abort(b.txn);
            fail_all(reqs, n_reqs, rc ? es_err_from_mdb(rc) : ES_ERR_CORRUPT);
            return rc ? es_err_from_mdb(rc) : ES_ERR_CORRUPT;
        }
        b.next_stream = get_u64le(v.mv_data);
        b.next_position = store_last_position(b.txn, s->events) + 1;
        b.now_us = store_now_us();
        uint64_t first_pos = b.next_position;

        size_t poisoned = n_reqs;
        for (size_t i = 0; i < n_reqs; i++) {
            if (reqs[i].rv == ES_ERR_STORE_FULL || reqs[i].rv == ES_ERR_TOO_LARGE) {
                if (reqs[i].results && reqs[i].n_appends && reqs[i].results[0].rv == reqs[i].rv) {
                    continue; /* excluded by an earlier attempt */
                }
            }
            rc = apply_request(s, &b, &reqs[i]);
            if (rc) {
                poisoned = i;
                break;
            }
        }
        if (poisoned == n_reqs && b.next_stream_dirty) {
            uint8_t nbuf[8];
            put_u64le(nbuf, b.next_stream);
            rc = store_meta_put(b.txn, s->meta, "next_stream", nbuf, 8);
            if (rc) {
                store_write_guard_off();
                mdb_txn_abort(b.txn);
                fail_all(reqs, n_reqs, es_err_from_mdb(rc));
                return es_err_from_mdb(rc);
            }
        }
        if (poisoned < n_reqs) {
            store_write_guard_off();
            mdb_txn_abort(b.txn);
            es_err prv = es_err_from_mdb(rc);
            if (prv != ES_ERR_STORE_FULL && prv != ES_ERR_TOO_LARGE) {
                fail_all(reqs, n_reqs, prv);
                return prv;
            }
            store_request *r = &reqs[poisoned];
            r->rv = prv;
            for (size_t j = 0; j < r->n_appends; j++) {
                r->results[j].rv = prv;
            }
            /* Reset the outcome of the others: they are redone. */
            for (size_t i = 0; i < n_reqs; i++) {
                bool excluded =
                    (reqs[i].rv == ES_ERR_STORE_FULL || reqs[i].rv == ES_ERR_TOO_LARGE) &&
                    reqs[i].n_appends && reqs[i].results[0].rv == reqs[i].rv;
                if (!excluded) {
                    reqs[i].rv = ES_OK;
                }
            }
            continue;
        }
        store_write_guard_off(); /* the journal and the commit: damage is fatal there */
        uint64_t head = b.next_position - 1;
        struct timespec c0, c1;
        clock_gettime(CLOCK_MONOTONIC, &c0);
        /* With the journal: the batch's records are made durable in the
         * journal first, then LMDB commits without a sync (journal.c). */
        bool journaled = false;
        if (s->jr && head >= first_pos) {
            es_err jrv = journal_write_batch(s, b.txn, first_pos, head, &journaled);
            if (jrv != ES_OK) {
                mdb_txn_abort(b.txn);
                for (size_t i = 0; i < n_reqs; i++) {
                    reqs[i].rv = ES_OK;
                }
                fail_all(reqs, n_reqs, jrv);
                return jrv;
            }
        }
        rc = mdb_txn_commit(b.txn); /* frees the txn, also on failure */
        es_err crv = rc ? store_commit_err(s, rc) : ES_OK;
        if (rc && journaled) {
            journal_unwrite(s); /* not replayed: its requests fail */
        }
        if (!rc) {
            atomic_store(&s->head, head);
            if (s->jr && head >= first_pos && !journaled) {
                crv = journal_checkpoint_sync(s); /* too big for the ring */
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &c1);
        s->last_commit_call_us = (uint64_t)(c1.tv_sec - c0.tv_sec) * 1000000u +
                                 (uint64_t)(c1.tv_nsec / 1000) - (uint64_t)(c0.tv_nsec / 1000);
        if (crv != ES_OK) {
            for (size_t i = 0; i < n_reqs; i++) {
                reqs[i].rv = ES_OK; /* so that fail_all overwrites every outcome */
            }
            fail_all(reqs, n_reqs, crv);
            return crv;
        }
        for (size_t i = 0; i < n_reqs; i++) {
            reqs[i].synced = s->sync;
        }
        if (s->jr) {
            journal_committed(s);
        }
        return ES_OK;
    }
}
STORE_GUARDED_END

/*
 * An append by the store itself inside a write transaction the caller
 * opened (the lifecycle records of life.c): the same checks and indexes as
 * a client's append, committed or aborted with the caller's transaction.
 * @return ES_OK (*head the new last position); the append's refusal; LMDB
 *   errors (the transaction must then be aborted).
 */
es_err store_append_own(store *s, MDB_txn *txn, const store_append_in *a, uint64_t *head)
{
    batch_state b = {0};
    b.txn = txn;
    MDB_val v;
    int rc = store_meta_get(txn, s->meta, "next_stream", &v);
    if (rc || v.mv_size != 8) {
        return rc ? es_err_from_mdb(rc) : ES_ERR_CORRUPT;
    }
    b.next_stream = get_u64le(v.mv_data);
    b.next_position = store_last_position(txn, s->events) + 1;
    b.now_us = store_now_us();
    store_append_result res;
    store_request r = {.appends = a, .n_appends = 1, .results = &res};
    rc = apply_request(s, &b, &r);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    if (r.rv != ES_OK) {
        return r.rv;
    }
    if (b.next_stream_dirty) {
        uint8_t nbuf[8];
        put_u64le(nbuf, b.next_stream);
        rc = store_meta_put(txn, s->meta, "next_stream", nbuf, 8);
        if (rc) {
            return es_err_from_mdb(rc);
        }
    }
    *head = b.next_position - 1;
    return ES_OK;
}

/* --------------------------------------------------------------- imports -- */

/* Decode strictly: the fields of es.v1.RecordedEvent, each of its wire type
 * and at most once, nothing else -- the bytes are stored as they are. */
static es_err import_decode(const uint8_t *buf, size_t len, es_record *r, char *msg, size_t msg_len)
{
    if (es_record_parse(buf, len, ES_RECORD_STRICT, r) != ES_OK) {
        store_set_msg(msg, msg_len, "%s",
                      "the record is not valid protobuf, lacks a stream id, type, position or "
                      "16-byte id, or has an unexpected, repeated or mistyped field");
        return ES_ERR_MALFORMED;
    }
    return ES_OK;
}

static es_err import_validate(const store *s, const es_record *r, char *msg, size_t msg_len)
{
    if (es_validate_stream_id(r->stream.p, r->stream.len, true) != ES_OK) {
        store_set_msg(msg, msg_len, "%s", "invalid stream id");
        return ES_ERR_INVALID_STREAM_ID;
    }
    if (es_validate_event_type(r->type.p, r->type.len) != ES_OK) {
        store_set_msg(msg, msg_len, "%s", "invalid event type");
        return ES_ERR_INVALID_EVENT_TYPE;
    }
    /* es_record_parse checked the id, correlation and causation id sizes. */
    if (r->content_type.len && es_validate_name(r->content_type.p, r->content_type.len) != ES_OK) {
        store_set_msg(msg, msg_len, "%s", "invalid content type");
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (r->data.len + r->metadata.len > s->max_event_bytes) {
        store_set_msg(msg, msg_len, "data + metadata of %zu bytes exceed max-event-bytes %u",
                      r->data.len + r->metadata.len, s->max_event_bytes);
        return ES_ERR_TOO_LARGE;
    }
    return ES_OK;
}

/* Check one decoded record against the transaction's state and write it.
 * @return ES_OK or the refusal; *rc an LMDB code when a write failed. */
static es_err import_one(store *s, batch_state *b, const es_record *r, const uint8_t *hdr,
                         const uint8_t *bytes, size_t len, char *msg, size_t msg_len, int *rc)
{
    *rc = 0;
    if (r->position != b->next_position) {
        store_set_msg(msg, msg_len, "position %llu does not follow the head %llu",
                      (unsigned long long)r->position, (unsigned long long)(b->next_position - 1));
        return ES_ERR_WRONG_EXPECTED_REVISION;
    }
    store_stream_info si;
    es_err rv = store_stream_lookup(b->txn, s, r->stream.p, r->stream.len, &si);
    bool exists = rv == ES_OK;
    if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
        return rv;
    }
    uint64_t next_rev = exists ? si.event_count : 0;
    if (r->revision != next_rev) {
        store_set_msg(
            msg, msg_len, "revision %llu of stream '%.*s' at position %llu: expected %llu",
            (unsigned long long)r->revision, (int)r->stream.len, (const char *)r->stream.p,
            (unsigned long long)r->position, (unsigned long long)next_rev);
        return ES_ERR_WRONG_EXPECTED_REVISION;
    }
    MDB_val ik = {ES_EVENT_ID_BYTES, (void *)r->id.p};
    MDB_val iv;
    int grc = mdb_get(b->txn, s->event_ids, &ik, &iv);
    if (grc == MDB_SUCCESS) {
        store_set_msg(msg, msg_len, "the event id at position %llu is already stored",
                      (unsigned long long)r->position);
        return ES_ERR_IDEMPOTENCY_CONFLICT;
    }
    if (grc != MDB_NOTFOUND) {
        return es_err_from_mdb(grc);
    }
    if (!exists) {
        memset(&si, 0, sizeof si);
        si.number = b->next_stream++;
        b->next_stream_dirty = true;
        si.created_us = r->recorded_at_us;
        si.first_position = r->position;
    }
    if (!hdr) {
        /* A sealed record stays sealed: its key comes apart (erase.c). */
        rv = store_crypt_import(s, b->txn, r, bytes, len, exists, si.number, msg, msg_len);
        if (rv != ES_OK) {
            return rv;
        }
    }
    uint64_t pos = b->next_position++;
    uint8_t pkey[8];
    put_u64be(pkey, pos);
    MDB_val k = {8, pkey};
    MDB_val v = {RECORD_HEADER_BYTES + len, NULL};
    if ((*rc = mdb_put(b->txn, s->events, &k, &v, MDB_APPEND | MDB_RESERVE)) != 0) {
        return es_err_from_mdb(*rc);
    }
    uint8_t *rec = v.mv_data;
    memcpy(rec + RECORD_HEADER_BYTES, bytes, len);
    if (hdr) {
        memcpy(rec, hdr, RECORD_HEADER_BYTES); /* a replayed value: stored as it was */
    } else {
        rec[0] = RECORD_VERSION;
        rec[1] = r->sealed.len != 0 ? RECORD_FLAG_SEALED : 0;
        rec[2] = rec[3] = 0;
        put_u32le(rec + 4, crc32c(0, rec + RECORD_HEADER_BYTES, len));
    }

    uint8_t key[ES_MAX_NAME_BYTES + 9];
    uint8_t val[24];
    put_u64be(key, si.number);
    put_u64be(key + 8, r->revision);
    MDB_val rk = {16, key};
    MDB_val rvv = {8, pkey};
    if ((*rc = index_insert(s, b->txn, s->stream_revs, "stream_revs", &rk, &rvv, pos)) != 0) {
        return es_err_from_mdb(*rc);
    }
    put_u64be(val, si.number);
    put_u64be(val + 8, r->revision);
    put_u64be(val + 16, pos);
    iv = (MDB_val){24, val};
    if ((*rc = index_insert(s, b->txn, s->event_ids, "event_ids", &ik, &iv, pos)) != 0) {
        return es_err_from_mdb(*rc);
    }
    MDB_val empty = {0, NULL};
    size_t cat_len = es_category_len(r->stream.p, r->stream.len);
    MDB_val ck = {store_name_pos_key(key, r->stream.p, cat_len, pos), key};
    if ((*rc = index_insert(s, b->txn, s->categories, "categories", &ck, &empty, pos)) != 0) {
        return es_err_from_mdb(*rc);
    }
    MDB_val tk = {store_name_pos_key(key, r->type.p, r->type.len, pos), key};
    if ((*rc = index_insert(s, b->txn, s->types, "types", &tk, &empty, pos)) != 0) {
        return es_err_from_mdb(*rc);
    }
    if (!exists) {
        /* Written once, at creation (format 2: the count and last position
         * are read from stream_revs, the updated time from the record). */
        uint8_t sbuf[STREAM_RECORD_BYTES];
        store_stream_encode(sbuf, &si);
        MDB_val sk = {r->stream.len, (void *)r->stream.p};
        MDB_val sv = {STREAM_RECORD_BYTES, sbuf};
        if ((*rc = index_insert(s, b->txn, s->streams, "streams", &sk, &sv, pos)) != 0) {
            return es_err_from_mdb(*rc);
        }
    }
    if (es_slice_eq(r->stream, (const uint8_t *)STORE_LIFE_STREAM, strlen(STORE_LIFE_STREAM))) {
        /* A lifecycle change or an erasure: the follower applies it as its
         * primary did. */
        bool erasure = false;
        es_err erv = store_erase_import(s, b->txn, r, &erasure);
        if (erasure || erv != ES_OK) {
            if (erv == ES_ERR_MALFORMED) {
                store_set_msg(msg, msg_len, "erasure record at position %llu: bad data",
                              (unsigned long long)pos);
            }
            b->erasure = b->erasure || erasure;
            return erv;
        }
        es_err lrv = store_life_import(s, b->txn, r);
        if (lrv == ES_ERR_MALFORMED) {
            store_set_msg(msg, msg_len, "lifecycle record at position %llu: bad data",
                          (unsigned long long)pos);
        }
        return lrv;
    }
    return ES_OK;
}

/*
 * One write transaction of records. Imports (replay false) decode strictly
 * and validate; a replay (the journal's records, full stored values
 * written by this store before a crash) checks each value's header and CRC
 * and decodes leniently, as reads do, and stores the value unchanged.
 * Both check positions, revisions and ids against the state.
 */
static es_err import_records(store *s, const store_import_in *recs, size_t n, bool replay,
                             size_t *bad, char *msg, size_t msg_len)
{
    STORE_FATAL_SCOPE;
    batch_state b = {0};
    int rc = store_write_begin(s, &b.txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    MDB_val v;
    rc = store_meta_get(b.txn, s->meta, "next_stream", &v);
    if (rc || v.mv_size != 8) {
        mdb_txn_abort(b.txn);
        return rc ? es_err_from_mdb(rc) : ES_ERR_CORRUPT;
    }
    b.next_stream = get_u64le(v.mv_data);
    b.next_position = store_last_position(b.txn, s->events) + 1;
    es_err rv = ES_OK;
    for (size_t i = 0; i < n && rv == ES_OK; i++) {
        es_record r;
        const uint8_t *hdr = NULL;
        const uint8_t *bytes = recs[i].record;
        size_t len = recs[i].len;
        if (replay) {
            MDB_val rv_val = {recs[i].len, (void *)recs[i].record};
            rv = store_record_open(&rv_val, &bytes, &len);
            if (rv == ES_OK && es_record_parse(bytes, len, 0, &r) != ES_OK) {
                rv = ES_ERR_CORRUPT;
            }
            if (rv != ES_OK) {
                store_set_msg(msg, msg_len, "%s", "a record fails its CRC or does not decode");
            }
            hdr = recs[i].record;
        } else {
            rv = import_decode(bytes, len, &r, msg, msg_len);
            if (rv == ES_OK) {
                rv = import_validate(s, &r, msg, msg_len);
            }
        }
        if (rv == ES_OK) {
            rv = import_one(s, &b, &r, hdr, bytes, len, msg, msg_len, &rc);
        }
        if (rv != ES_OK && rc == 0) {
            *bad = i;
        }
    }
    if (rv == ES_OK && b.next_stream_dirty) {
        uint8_t nbuf[8];
        put_u64le(nbuf, b.next_stream);
        rc = store_meta_put(b.txn, s->meta, "next_stream", nbuf, 8);
        rv = es_err_from_mdb(rc);
    }
    if (rv != ES_OK) {
        mdb_txn_abort(b.txn);
        return rv;
    }
    uint64_t head = b.next_position - 1;
    rc = mdb_txn_commit(b.txn); /* frees the txn, also on failure */
    if (rc) {
        return store_commit_err(s, rc);
    }
    atomic_store(&s->head, head);
    /* An imported erasure destroys this store's copy of the key now; a
     * crash before that leaves it recorded, and the next open destroys it. */
    return b.erasure ? store_crypt_recover(s) : ES_OK;
}

es_err store_import_batch(store *s, const store_import_in *recs, size_t n, size_t *bad, char *msg,
                          size_t msg_len)
{
    *bad = n;
    store_set_msg(msg, msg_len, "%s", "");
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (n == 0 || n > STORE_MAX_IMPORT_BATCH) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    return import_records(s, recs, n, false, bad, msg, msg_len);
}

es_err store_replay_records(store *s, const store_import_in *values, size_t n, size_t *bad,
                            char *msg, size_t msg_len)
{
    *bad = n;
    store_set_msg(msg, msg_len, "%s", "");
    return n ? import_records(s, values, n, true, bad, msg, msg_len) : ES_OK;
}

/* -------------------------------------------------------------- snapshots -- */

es_err store_save_snapshot(store *s, const uint8_t *stream, size_t stream_len, uint64_t revision,
                           uint32_t state_format, const uint8_t *data, size_t data_len)
{
    STORE_FATAL_SCOPE;
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (s->follower) {
        return ES_ERR_FOLLOWER;
    }
    if (es_validate_stream_id(stream, stream_len, true) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    if (data_len > STORE_MAX_SNAPSHOT_BYTES) {
        return ES_ERR_TOO_LARGE;
    }
    MDB_txn *txn;
    int rc = store_write_begin(s, &txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    store_stream_info si;
    es_err rv = store_stream_lookup(txn, s, stream, stream_len, &si);
    store_stream_life life;
    if (rv == ES_OK) {
        rv = store_life_get(txn, s, si.number, &life);
    }
    if (rv == ES_OK && life.tombstoned) {
        rv = ES_ERR_STREAM_DELETED;
    }
    if (rv != ES_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    if (revision > si.last_revision) {
        mdb_txn_abort(txn);
        return ES_ERR_INVALID_ARGUMENT;
    }
    bool sealed;
    uint8_t key[STORE_KEY_BYTES];
    uint64_t slot;
    rv = store_crypt_snapshot_key(s, txn, si.number, &sealed, key, &slot);
    if (rv != ES_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    MDB_val k = {stream_len, (void *)stream};
    MDB_val v;
    /* Keep a newer snapshot of the same format: concurrent savers must not
     * replace a later state with an earlier one. */
    if (mdb_get(txn, s->snapshots, &k, &v) == 0 && v.mv_size >= SNAPSHOT_HEADER_BYTES &&
        get_u32le((uint8_t *)v.mv_data + 4) == state_format &&
        get_u64le((uint8_t *)v.mv_data + 8) > revision) {
        mdb_txn_abort(txn);
        return ES_OK;
    }
    size_t stored_len = data_len + (sealed ? STORE_SEAL_OVERHEAD : 0);
    v.mv_size = SNAPSHOT_HEADER_BYTES + stored_len;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->snapshots, &k, &v, MDB_RESERVE);
    if (rc) {
        OPENSSL_cleanse(key, sizeof key);
        mdb_txn_abort(txn);
        return es_err_from_mdb(rc);
    }
    uint8_t *p = v.mv_data;
    put_u32le(p + 4, state_format);
    put_u64le(p + 8, revision);
    put_u64le(p + 16, store_now_us());
    uint8_t *d = p + SNAPSHOT_HEADER_BYTES + (sealed ? STORE_SEAL_HEADER : 0);
    if (data_len) {
        memcpy(d, data, data_len);
    }
    if (sealed) {
        static const uint8_t zero_id[ES_EVENT_ID_BYTES];
        rv = store_seal(key, slot, si.number, zero_id, p + SNAPSHOT_HEADER_BYTES, data_len);
        OPENSSL_cleanse(key, sizeof key);
        if (rv != ES_OK) {
            mdb_txn_abort(txn);
            return rv;
        }
    }
    put_u32le(p, crc32c(0, p + 4, SNAPSHOT_HEADER_BYTES - 4 + stored_len));
    return store_commit_durable(s, txn);
}

/*
 * erase.c — encryption at rest and erasure by crypto-shredding: which key
 * seals which stream, subjects, store_erase and its recovery at open.
 *
 * Design notes
 * ============
 *
 * Deleting a stream is not erasure: LMDB is copy-on-write, so the bytes of
 * a deleted event stay in freed pages until they are reused, and backups
 * and followers hold their own copies. So an encrypted store (the default
 * for a new store; meta "encrypt" = 1, chosen at creation, never changed)
 * seals every event's data and metadata with a key of its own stream, or
 * of the stream's data subject, and erasure destroys that key in the key
 * store (keys.c), which is overwritten in place. Every copy that holds only
 * ciphertext is then erased at once: the log's live and freed pages, every
 * backup of data.mdb, old or new.
 *
 * What stays readable, on purpose: the event's position, stream id,
 * revision, event id, type, content type, correlation and causation ids and
 * recorded-at time are not sealed. An auditor can see that a stream had
 * events and when they were written and erased; indexes keep working on
 * them; and a reader of the whole log sees holes where erased events were,
 * as for deleted ones. Personal data belongs in data and metadata, never in
 * stream ids or event types (docs/erasure.md says so).
 *
 * A sealed record keeps the wire layout the store writes (proto/record.h)
 * with fields 6 and 7 replaced by field 12, last:
 *
 *   12 sealed: +-----+---------+-----------+=================================+--------+
 *              | ver | slot u64| nonce (12)| AES-256-GCM( field 6 | field 7 ) |tag (16)|
 *              | u8  |   LE    |           |   (their protobuf encoding)     |        |
 *              +-----+---------+-----------+=================================+--------+
 *
 * and the record header's flags byte has RECORD_FLAG_SEALED. The flag is
 * outside the record's CRC, so each side of it is checked against the
 * record: a flagged record without a well-formed field 12 fails to open
 * (ES_ERR_CORRUPT), and a plain record in a store with keys must not hold
 * field 12 (store_record_plain), else a damaged flag would serve a sealed
 * event as one without data. A read opens
 * it into a per-thread buffer as exactly the bytes an unencrypted store
 * would have stored: fields 1-5, 6 and 7, then 8-11.
 *
 * Tables (created at open, no format change; a store that has none is
 * plain):
 *
 *   stream_keys  stream no u64 BE -> slot u64 LE | flags u64 LE (1: the
 *                subject's key). Written once, when the stream is created
 *                (an append to an existing stream dirties no page here).
 *                Streams created while encryption was off have none and
 *                stay plain (ES_ERR_NOT_ERASABLE), and so do the store's
 *                own $-streams (the lifecycle records: stream states that
 *                db check, followers and projectors read without keys).
 *   subjects     subject id -> slot u64 LE
 *   slot_subjects slot u64 BE -> subject id: the reverse of subjects,
 *                written in the same transaction (the stream's creation
 *                that makes the subject, or a follower's key import), so
 *                that the relay can name a key's subject. A store written
 *                before this table has none: it is filled once at open
 *                from subjects (an empty slot_subjects beside a non-empty
 *                subjects is only that case); a read-only open of such a
 *                store goes without it.
 *   erased_keys  slot u64 BE -> erased_at_us u64 LE | kind u64 LE (0 stream,
 *                1 subject, 2 erased before a follower copied it)
 *
 * Named LMDB tables in use: 17 of the 32 mdb_env_set_maxdbs allows (meta,
 * events, streams, stream_revs, event_ids, categories, types, snapshots,
 * removed_ids, stream_life, groups, group_done, group_parked, stream_keys,
 * subjects, slot_subjects, erased_keys).
 *
 * Erasure in one durable step. store_erase writes the erased_keys entry
 * and commits it, synced (mdb_env_sync when the store runs without sync),
 * and only then overwrites the key's slot and syncs the key store. A crash
 * before the commit: nothing happened (the key lives, the stream reads as
 * before). A crash after it: the erasure is recorded, reads already refuse
 * the stream (they check erased_keys as well as the slot), and the next
 * open destroys every key listed in erased_keys that is still live
 * (store_crypt_recover) before serving anything. So a kill -9 leaves an
 * erasure completed or not started, never half. A stream whose slot is
 * zero without an erased_keys entry (a backup restored with a key store
 * newer than its data) reads as erased too.
 *
 * The same transaction appends an erasure record to STORE_LIFE_STREAM
 * (layout in store.h), so that the erasure has a place in the log's order:
 * the relay carries it (and removes the key from the JetStream keys stream
 * before it: relay.h), and a follower that imports it writes the same
 * erased_keys entry and destroys its copy of the key after the commit
 * (store_erase_import, then store_crypt_recover) — a crash in between
 * leaves the entry, and the next open finishes it, as here. An auditor
 * reading $lifecycle sees what was erased and when.
 *
 * Followers. A follower stores sealed records as they are
 * (store_crypt_import binds a new stream to the slot its first event
 * names) and gets the keys apart, at the same slot numbers
 * (store_keys_import, before the records are imported; relay.h and
 * follow.h say how they travel). A key the primary destroyed before the
 * follower copied it arrives as a marker and is recorded in erased_keys
 * (kind 2, time 0): that slot is never written. The key message of a
 * subject's slot names the subject (relay.h); store_keys_import binds it
 * (subjects and slot_subjects, validated: a malformed or conflicting
 * subject is ES_ERR_MALFORMED, and the follower halts), and the streams
 * bound to that slot afterwards get the subject flag. So a follower
 * promoted to primary knows its subjects as the primary did: `subject
 * erase` erases all a subject's streams, an append naming the subject
 * binds to it, and a stream of a subject cannot be erased alone. The
 * follower itself never appends or erases on its own. A key copied from a
 * relay older than the subject header leaves its streams with flags 0 and
 * no subject: promoted, the store still refuses to erase a stream whose
 * slot is bound to other streams too (a subject's: erasing it would erase
 * them all), but cannot erase that subject by name.
 *
 * A subject's streams share its key, so erasing the subject is one key and
 * is atomic across its streams by construction. A stream bound to a
 * subject cannot be erased alone (that would destroy the subject's key):
 * ES_ERR_INVALID_ARGUMENT.
 *
 * Snapshots of a sealed stream are sealed with its key too (the stream
 * number as the position, a zero id in the additional data), so the
 * erasure reaches them the same way.
 */
#include <errno.h>
#include <lmdb.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "internal.h"
#include "pbwire.h"

#define KEY_FLAG_SUBJECT 1u

_Static_assert(STORE_SUBJECT_MAX == ES_MAX_NAME_BYTES, "a subject id is a name");

/* ------------------------------------------------------------------ open -- */

/* A slot's reverse entry: slot u64 BE -> subject id. */
static int slot_subject_put(store *s, MDB_txn *txn, uint64_t slot, const uint8_t *name, size_t len)
{
    uint8_t kb[8];
    put_u64be(kb, slot);
    MDB_val k = {8, kb}, v = {len, (void *)name};
    return mdb_put(txn, s->slot_subjects, &k, &v, 0);
}

/* slot_subjects, created at open; a store written before it has subjects
 * and no reverse entries: filled once from subjects (an empty table beside
 * a non-empty subjects is only that case, as both are written in one
 * transaction since). */
static int slot_subjects_open(store *s, MDB_txn *txn, unsigned flags)
{
    int rc = mdb_dbi_open(txn, "slot_subjects", flags, &s->slot_subjects);
    if (rc == MDB_NOTFOUND && s->read_only) {
        return 0; /* read as it is: no subject is relayed from it */
    }
    if (rc) {
        return rc;
    }
    s->has_slot_subjects = true;
    if (s->read_only) {
        return 0;
    }
    MDB_stat rs, ss;
    rc = mdb_stat(txn, s->slot_subjects, &rs);
    if (rc == 0) {
        rc = mdb_stat(txn, s->subjects, &ss);
    }
    if (rc || rs.ms_entries != 0 || ss.ms_entries == 0) {
        return rc;
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, s->subjects, &cur);
    if (rc) {
        return rc;
    }
    MDB_val k, v;
    int prc = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && prc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        /* A damaged entry is left to the reads that meet it (subject_get
         * answers ES_ERR_CORRUPT): the store still opens. */
        if (v.mv_size == 8 && k.mv_size != 0 && k.mv_size <= STORE_SUBJECT_MAX) {
            prc = slot_subject_put(s, txn, get_u64le(v.mv_data), k.mv_data, k.mv_size);
        }
    }
    mdb_cursor_close(cur);
    return prc ? prc : rc == MDB_NOTFOUND ? 0 : rc;
}

es_err store_crypt_open(store *s, MDB_txn *txn, const char *dir, bool created, bool want_encrypt,
                        char *msg, size_t msg_len)
{
    s->keys.fd = -1;
    unsigned flags = s->read_only ? 0 : MDB_CREATE;
    int rc = mdb_dbi_open(txn, "stream_keys", flags, &s->stream_keys);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "subjects", flags, &s->subjects);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "erased_keys", flags, &s->erased_keys);
    }
    if (rc == MDB_NOTFOUND && s->read_only) {
        return ES_OK; /* a store from before encryption, read as it is */
    }
    if (rc) {
        store_set_msg(msg, msg_len, "%s: cannot open the key tables: %s", dir, mdb_strerror(rc));
        return es_err_from_mdb(rc);
    }
    s->has_keys = true;
    rc = slot_subjects_open(s, txn, flags);
    if (rc) {
        store_set_msg(msg, msg_len, "%s: cannot open the table slot_subjects: %s", dir,
                      mdb_strerror(rc));
        return es_err_from_mdb(rc);
    }
    MDB_val v;
    if (created && want_encrypt) {
        uint8_t one = 1;
        rc = store_meta_put(txn, s->meta, "encrypt", &one, 1);
        if (rc) {
            return es_err_from_mdb(rc);
        }
    }
    rc = store_meta_get(txn, s->meta, "encrypt", &v);
    if (rc == MDB_NOTFOUND) {
        return ES_OK; /* plain */
    }
    if (rc) {
        return es_err_from_mdb(rc);
    }
    s->encrypt = v.mv_size == 1 && *(const uint8_t *)v.mv_data == 1;
    if (!s->encrypt) {
        return ES_OK;
    }
    return store_keys_open(&s->keys, dir, s->id, created, s->read_only, s->sync, msg, msg_len);
}

es_err store_crypt_recover(store *s)
{
    STORE_FATAL_SCOPE;
    if (!s->has_keys || s->keys.fd < 0 || s->read_only) {
        return ES_OK;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, s->erased_keys, &cur);
    if (rc) {
        mdb_txn_abort(txn);
        return es_err_from_mdb(rc);
    }
    es_err rv = ES_OK;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && rv == ES_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            continue;
        }
        uint64_t slot = get_u64be(k.mv_data);
        /* Live, or half-zeroed by a torn erasure: not yet all zeros. */
        if (!store_keys_blank(&s->keys, slot)) {
            rv = store_keys_destroy(&s->keys, slot);
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rv;
}

bool store_encrypted(const store *s)
{
    return s->encrypt;
}

/* ---------------------------------------------------------------- writes -- */

/* A stream's key entry; @return ES_OK, ES_ERR_NOT_FOUND (a plain stream). */
static es_err stream_key_get(store *s, MDB_txn *txn, uint64_t number, uint64_t *slot,
                             uint64_t *flags)
{
    if (!s->has_keys) {
        return ES_ERR_NOT_FOUND;
    }
    uint8_t kb[8];
    put_u64be(kb, number);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(txn, s->stream_keys, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return ES_ERR_NOT_FOUND;
    }
    if (rc) {
        return es_err_from_mdb(rc);
    }
    if (v.mv_size != 16) {
        return ES_ERR_CORRUPT;
    }
    *slot = get_u64le(v.mv_data);
    *flags = get_u64le((const uint8_t *)v.mv_data + 8);
    return ES_OK;
}

/* Whether a slot's key was destroyed or its erasure recorded. */
static es_err slot_erased(store *s, MDB_txn *txn, uint64_t slot, bool *erased)
{
    uint8_t kb[8];
    put_u64be(kb, slot);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(txn, s->erased_keys, &k, &v);
    if (rc == 0) {
        *erased = true;
        return ES_OK;
    }
    if (rc != MDB_NOTFOUND) {
        return es_err_from_mdb(rc);
    }
    bool live = s->keys.fd >= 0 && store_keys_live(&s->keys, slot);
    if (s->keys.fd >= 0 && !live && !store_keys_blank(&s->keys, slot)) {
        return ES_ERR_CORRUPT; /* neither a key nor zeros, and no erasure recorded */
    }
    *erased = !live;
    return ES_OK;
}

static es_err subject_get(store *s, MDB_txn *txn, const uint8_t *name, size_t len, uint64_t *slot)
{
    MDB_val k = {len, (void *)name}, v;
    int rc = mdb_get(txn, s->subjects, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return ES_ERR_NOT_FOUND;
    }
    if (rc) {
        return es_err_from_mdb(rc);
    }
    if (v.mv_size != 8) {
        return ES_ERR_CORRUPT;
    }
    *slot = get_u64le(v.mv_data);
    return ES_OK;
}

/* The subject a slot is bound to; @return ES_OK (*len set, name may be
 * NULL), ES_ERR_NOT_FOUND (none, or no table). */
static es_err slot_subject_get(store *s, MDB_txn *txn, uint64_t slot, uint8_t *name, size_t *len)
{
    if (!s->has_slot_subjects) {
        return ES_ERR_NOT_FOUND;
    }
    uint8_t kb[8];
    put_u64be(kb, slot);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(txn, s->slot_subjects, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return ES_ERR_NOT_FOUND;
    }
    if (rc) {
        return es_err_from_mdb(rc);
    }
    if (v.mv_size == 0 || v.mv_size > STORE_SUBJECT_MAX) {
        return ES_ERR_CORRUPT;
    }
    if (name) {
        memcpy(name, v.mv_data, v.mv_size);
    }
    *len = v.mv_size;
    return ES_OK;
}

es_err store_crypt_plan(store *s, MDB_txn *txn, const store_append_in *a, bool exists,
                        uint64_t number, store_key_plan *kp)
{
    memset(kp, 0, sizeof *kp);
    if (a->subject_len != 0 &&
        (!s->encrypt || es_validate_name(a->subject, a->subject_len) != ES_OK)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    uint64_t subject_slot = 0;
    bool subject_known = false;
    if (a->subject_len != 0) {
        es_err rv = subject_get(s, txn, a->subject, a->subject_len, &subject_slot);
        if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
            return rv;
        }
        subject_known = rv == ES_OK;
    }
    if (exists) {
        uint64_t flags = 0;
        es_err rv = stream_key_get(s, txn, number, &kp->slot, &flags);
        if (rv == ES_ERR_NOT_FOUND) {
            /* A plain stream stays plain; it has no subject to match. */
            return a->subject_len != 0 ? ES_ERR_INVALID_ARGUMENT : ES_OK;
        }
        if (rv != ES_OK) {
            return rv;
        }
        /* The subject's slot is what makes a stream the subject's (a
         * follower's streams bound before it knew the subject carry no
         * flag). */
        if (a->subject_len != 0 && (!subject_known || subject_slot != kp->slot)) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        kp->sealed = true;
        kp->subject = (flags & KEY_FLAG_SUBJECT) || a->subject_len != 0;
    } else {
        /* The store's own $-streams (the lifecycle records) carry stream
         * states, not personal data, and are read by db check, followers
         * and projectors without keys: never sealed. */
        if (!s->encrypt || (a->stream_len != 0 && a->stream[0] == '$')) {
            return a->subject_len != 0 ? ES_ERR_INVALID_ARGUMENT : ES_OK;
        }
        kp->sealed = true;
        kp->bind = true;
        kp->subject = a->subject_len != 0;
        if (kp->subject && subject_known) {
            kp->slot = subject_slot;
        } else {
            kp->new_key = true;
            kp->new_subject = kp->subject;
            return ES_OK;
        }
    }
    bool erased;
    es_err rv = slot_erased(s, txn, kp->slot, &erased);
    if (rv == ES_OK && erased) {
        rv = ES_ERR_ERASED;
    }
    return rv;
}

int store_crypt_bind(store *s, MDB_txn *txn, const store_append_in *a, uint64_t number,
                     store_key_plan *kp)
{
    if (!kp->sealed || !kp->bind) {
        return 0; /* plain, or bound when it was created: nothing to write */
    }
    if (kp->new_subject) {
        /* An earlier append of the same transaction may have created it. */
        es_err rv = subject_get(s, txn, a->subject, a->subject_len, &kp->slot);
        if (rv == ES_OK) {
            kp->new_key = kp->new_subject = false;
        } else if (rv != ES_ERR_NOT_FOUND) {
            return rv == ES_ERR_CORRUPT ? MDB_CORRUPTED : EIO;
        }
    }
    if (kp->new_key) {
        es_err rv = store_keys_take(&s->keys, &kp->slot);
        if (rv != ES_OK) {
            return rv == ES_ERR_STORE_FULL ? MDB_MAP_FULL : EIO;
        }
        kp->new_key = false;
        if (kp->new_subject) {
            uint8_t sv[8];
            put_u64le(sv, kp->slot);
            MDB_val k = {a->subject_len, (void *)a->subject}, v = {8, sv};
            int rc = mdb_put(txn, s->subjects, &k, &v, MDB_NOOVERWRITE);
            if (rc == 0) {
                rc = slot_subject_put(s, txn, kp->slot, a->subject, a->subject_len);
            }
            if (rc) {
                return rc;
            }
            kp->new_subject = false;
        }
    }
    uint8_t kb[8], vb[16];
    put_u64be(kb, number);
    put_u64le(vb, kp->slot);
    put_u64le(vb + 8, kp->subject ? KEY_FLAG_SUBJECT : 0);
    MDB_val k = {8, kb}, v = {16, vb};
    int rc = mdb_put(txn, s->stream_keys, &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        return MDB_CORRUPTED; /* a new stream's number already has a key: a damaged counter */
    }
    kp->bind = false;
    return rc;
}

/* ----------------------------------------------------------------- reads -- */

bool store_record_sealed(const MDB_val *v)
{
    return v->mv_size > 1 && (((const uint8_t *)v->mv_data)[1] & RECORD_FLAG_SEALED);
}

/* The per-thread buffer of opened records (freed when the thread ends). */
typedef struct plain_buf {
    uint8_t *p;
    size_t cap;
} plain_buf;

static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static _Thread_local plain_buf *tl_buf; /* this thread's, once made */

static void buf_free(void *b)
{
    plain_buf *pb = b;
    if (pb) {
        OPENSSL_cleanse(pb->p, pb->cap);
        free(pb->p);
        free(pb);
    }
    tl_buf = NULL;
}

static void buf_key_create(void)
{
    (void)pthread_key_create(&buf_key, buf_free);
}

static uint8_t *thread_buf(size_t need)
{
    plain_buf *pb = tl_buf;
    if (pb && pb->cap >= need) {
        return pb->p;
    }
    pthread_once(&buf_once, buf_key_create);
    if (!pb) {
        pb = calloc(1, sizeof *pb);
        if (!pb || pthread_setspecific(buf_key, pb) != 0) {
            free(pb);
            return NULL;
        }
        tl_buf = pb;
    }
    if (pb->cap < need) {
        size_t cap = need < 4096 ? 4096 : need;
        uint8_t *p = malloc(cap);
        if (!p) {
            return NULL;
        }
        if (pb->p) {
            OPENSSL_cleanse(pb->p, pb->cap);
        }
        free(pb->p);
        pb->p = p;
        pb->cap = cap;
    }
    return pb->p;
}

/* One field of a record's tail, pbw_next's answer for the shapes the store
 * writes taken inline (every replayed record passes here): a one-byte tag,
 * then a varint (skipped: its value is not needed) or a length of one or
 * two bytes. Anything else is left to pbw_next. */
static es_err tail_next(const uint8_t **pos, const uint8_t *end, pbw_field *f)
{
    const uint8_t *p = *pos;
    size_t room = (size_t)(end - p);
    if (room >= 2 && p[0] < 0x80 && (p[0] >> 3) != 0) {
        f->number = p[0] >> 3;
        f->wire = p[0] & 7;
        f->data = NULL;
        f->len = 0;
        f->varint = 0;
        if (f->wire == PBW_WIRE_VARINT) {
            for (size_t i = 1; i < room && i <= PBW_VARINT_MAX; i++) {
                if (!(p[i] & 0x80)) {
                    if (i == PBW_VARINT_MAX && p[i] > 1) {
                        break; /* more than 64 bits */
                    }
                    *pos = p + i + 1;
                    return ES_OK;
                }
            }
        } else if (f->wire == PBW_WIRE_LEN) {
            size_t n = p[1], hdr = 2;
            if (n >= 0x80) {
                if (room < 3 || p[2] >= 0x80) {
                    return pbw_next(pos, end, f);
                }
                n = (n & 0x7f) | (size_t)p[2] << 7;
                hdr = 3;
            }
            if (n <= room - hdr) {
                f->data = p + hdr;
                f->len = n;
                *pos = p + hdr + n;
                return ES_OK;
            }
        }
    }
    return pbw_next(pos, end, f);
}

/*
 * The sealed record's parts: its head (fields 1-5, es_record_head), then a
 * walk of the fields after the type to field 12, which must be last. Only
 * records the store wrote are sealed (their CRC held), so the head is in
 * the store's layout; anything else is CORRUPT.
 */
static es_err sealed_parts(const uint8_t *bytes, size_t len, es_record *r)
{
    if (!es_record_head(bytes, len, r)) {
        return ES_ERR_CORRUPT;
    }
    const uint8_t *p = r->type.p + r->type.len, *end = bytes + len;
    pbw_field f;
    memset(&r->sealed, 0, sizeof r->sealed);
    r->data.len = r->metadata.len = 0;
    es_err rv;
    while ((rv = tail_next(&p, end, &f)) == ES_OK) {
        if (f.number == ES_RECORD_F_SEALED && f.wire == PBW_WIRE_LEN) {
            r->sealed.p = f.data;
            r->sealed.len = f.len;
        } else if (r->sealed.len != 0 || f.number == ES_RECORD_F_DATA ||
                   f.number == ES_RECORD_F_METADATA) {
            return ES_ERR_CORRUPT; /* field 12 last; no plain data beside it */
        }
    }
    return rv == ES_ERR_NOT_FOUND && r->sealed.len != 0 ? ES_OK : ES_ERR_CORRUPT;
}

es_err store_record_unseal(store *s, const uint8_t *bytes, size_t len, const uint8_t **out,
                           size_t *out_len)
{
    es_record r;
    if (sealed_parts(bytes, len, &r) != ES_OK) {
        return ES_ERR_CORRUPT;
    }
    if (r.sealed.len < STORE_SEAL_OVERHEAD) {
        return ES_ERR_CORRUPT;
    }
    /* The record as a plain store writes it, byte for byte: fields 1-5,
     * the opened fields 6 and 7, then 8-11 (readers and clients take the
     * layout the store writes on their fast paths). */
    size_t field_hdr = 1 + pbw_varint_len(r.sealed.len);
    size_t head = (size_t)(r.type.p + r.type.len - bytes);
    if ((size_t)(r.sealed.p - bytes) < field_hdr + head) {
        return ES_ERR_CORRUPT; /* not the layout the store writes */
    }
    size_t tail = (size_t)(r.sealed.p - bytes) - field_hdr - head;
    size_t plain = r.sealed.len - STORE_SEAL_OVERHEAD;
    uint8_t *buf = thread_buf(head + plain + tail);
    if (!buf) {
        return ES_ERR_NO_MEMORY;
    }
    /* The key is the one of the slot the record names, checked live in the
     * key store for every record (keys.c, "sealing"). */
    es_err rv =
        store_keys_unseal(&s->keys, r.sealed.p, r.sealed.len, r.position, r.id.p, buf + head);
    if (rv != ES_OK) {
        return rv;
    }
    memcpy(buf, bytes, head);
    memcpy(buf + head + plain, bytes + head, tail);
    *out = buf;
    *out_len = head + plain + tail;
    return ES_OK;
}

es_err store_record_plain(store *s, const MDB_val *v, const uint8_t **payload, size_t *len)
{
    if (!store_record_sealed(v)) {
        /* The flag is outside the CRC: a record flagged plain that holds a
         * sealed field lost its flag to damage, and would be served without
         * its data. Only a store with keys holds sealed records. */
        if (s->keys.fd >= 0 && !es_record_lacks(*payload, *len, ES_RECORD_F_SEALED)) {
            return ES_ERR_CORRUPT;
        }
        return ES_OK;
    }
    if (s->keys.fd < 0) {
        return ES_ERR_ERASED; /* a sealed record and no key store: unreadable */
    }
    return store_record_unseal(s, *payload, *len, payload, len);
}

es_err store_record_open_plain(store *s, const MDB_val *v, const uint8_t **payload, size_t *len)
{
    es_err rv = store_record_open(v, payload, len);
    return rv == ES_OK ? store_record_plain(s, v, payload, len) : rv;
}

es_err store_crypt_stream_state(store *s, MDB_txn *txn, uint64_t number)
{
    uint64_t slot, flags;
    es_err rv = stream_key_get(s, txn, number, &slot, &flags);
    if (rv == ES_ERR_NOT_FOUND) {
        return ES_OK;
    }
    if (rv != ES_OK) {
        return rv;
    }
    bool erased;
    rv = slot_erased(s, txn, slot, &erased);
    return rv == ES_OK && erased ? ES_ERR_ERASED : rv;
}

es_err store_crypt_snapshot_key(store *s, MDB_txn *txn, uint64_t number, bool *sealed,
                                uint8_t key[STORE_KEY_BYTES], uint64_t *slot)
{
    uint64_t flags;
    *sealed = false;
    es_err rv = stream_key_get(s, txn, number, slot, &flags);
    if (rv == ES_ERR_NOT_FOUND) {
        return ES_OK;
    }
    if (rv != ES_OK) {
        return rv;
    }
    bool erased;
    rv = slot_erased(s, txn, *slot, &erased);
    if (rv != ES_OK) {
        return rv;
    }
    if (erased) {
        return ES_ERR_ERASED;
    }
    if (!store_keys_get(&s->keys, *slot, key)) {
        return store_keys_missing(&s->keys, *slot);
    }
    *sealed = true;
    return ES_OK;
}

/* ----------------------------------------------------------------- erase -- */

/* Streams bound to a slot (a walk of stream_keys: erasure is rare). */
static es_err count_bound(store *s, MDB_txn *txn, uint64_t slot, uint64_t *n)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->stream_keys, &cur);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    MDB_val k, v;
    *n = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size == 16 && get_u64le(v.mv_data) == slot) {
            (*n)++;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? ES_OK : es_err_from_mdb(rc);
}

/* The checks of a stream erasure; *slot set on ES_OK. */
static es_err erase_stream_check(store *s, MDB_txn *txn, store_erase_op *op, uint64_t *slot)
{
    es_err rv = es_validate_stream_id(op->name, op->name_len, true);
    if (rv != ES_OK) {
        return rv;
    }
    if (op->name[0] == '$') {
        return ES_ERR_RESERVED_STREAM;
    }
    if (op->expect != STORE_EXPECT_ANY && op->expect != STORE_EXPECT_STREAM_EXISTS &&
        op->expect != STORE_EXPECT_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    store_stream_info si;
    rv = store_stream_lookup(txn, s, op->name, op->name_len, &si);
    if (rv != ES_OK) {
        return rv;
    }
    store_stream_life life;
    rv = store_life_get(txn, s, si.number, &life);
    if (rv != ES_OK) {
        return rv;
    }
    if (life.tombstoned) {
        return ES_ERR_STREAM_DELETED;
    }
    uint64_t flags;
    rv = stream_key_get(s, txn, si.number, slot, &flags);
    if (rv == ES_ERR_NOT_FOUND) {
        return ES_ERR_NOT_ERASABLE;
    }
    if (rv != ES_OK) {
        return rv;
    }
    size_t sl;
    rv = slot_subject_get(s, txn, *slot, NULL, &sl);
    if ((flags & KEY_FLAG_SUBJECT) || rv == ES_OK) {
        return ES_ERR_INVALID_ARGUMENT; /* the subject's key */
    }
    if (rv != ES_ERR_NOT_FOUND) {
        return rv;
    }
    /* A follower that copied a subject's key without its subject (from a
     * relay older than the subject header) binds the subject's streams to
     * the slot with flags 0, and keeps that when it is promoted: a slot
     * bound to more than one stream is a subject's, and erasing one of
     * them alone would erase the others too. */
    uint64_t bound;
    rv = count_bound(s, txn, *slot, &bound);
    if (rv != ES_OK) {
        return rv;
    }
    if (bound > 1) {
        op->streams = bound; /* for the refusal's message */
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (op->expect == STORE_EXPECT_EXACT && op->revision != si.last_revision) {
        op->actual_exists = true;
        op->actual_revision = si.last_revision;
        return ES_ERR_WRONG_EXPECTED_REVISION;
    }
    return ES_OK;
}

/* The erasure's record in STORE_LIFE_STREAM, in its transaction (layout in
 * store.h): the relay carries it to followers, which destroy their copy of
 * the key when they import it. */
static es_err erase_record_write(store *s, MDB_txn *txn, const store_erase_op *op, uint64_t slot,
                                 uint64_t *head)
{
    uint8_t data[STORE_ERASE_RECORD_BYTES];
    put_u64le(data, slot);
    put_u64le(data + 8, op->erased_at_us);
    const char *type =
        op->kind == STORE_ERASE_SUBJECT ? STORE_ERASE_TYPE_SUBJECT : STORE_ERASE_TYPE_STREAM;
    return store_life_append(s, txn, type, data, sizeof data, op->name, op->name_len, head);
}

es_err store_erase(store *s, store_erase_op *op)
{
    STORE_FATAL_SCOPE;
    op->erased_at_us = 0;
    op->already = false;
    op->streams = 0;
    op->actual_exists = false;
    op->actual_revision = 0;
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (s->follower) {
        return ES_ERR_FOLLOWER;
    }
    if (!op->name || op->name_len == 0 ||
        (op->kind != STORE_ERASE_STREAM && op->kind != STORE_ERASE_SUBJECT)) {
        return op->kind == STORE_ERASE_STREAM ? ES_ERR_INVALID_STREAM_ID : ES_ERR_INVALID_ARGUMENT;
    }
    if (op->kind == STORE_ERASE_SUBJECT && es_validate_name(op->name, op->name_len) != ES_OK) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (!s->has_keys) {
        return op->kind == STORE_ERASE_STREAM ? ES_ERR_NOT_ERASABLE : ES_ERR_NOT_FOUND;
    }
    MDB_txn *txn;
    int rc = store_write_begin(s, &txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    uint64_t slot = 0;
    es_err rv;
    if (op->kind == STORE_ERASE_STREAM) {
        op->streams = 1;
        rv = erase_stream_check(s, txn, op, &slot);
    } else {
        rv = subject_get(s, txn, op->name, op->name_len, &slot);
        if (rv == ES_OK) {
            rv = count_bound(s, txn, slot, &op->streams);
        }
    }
    if (rv != ES_OK) {
        goto out_abort_txn;
    }
    uint8_t kb[8], vb[16];
    put_u64be(kb, slot);
    MDB_val k = {8, kb}, v;
    rc = mdb_get(txn, s->erased_keys, &k, &v);
    if (rc == 0 && v.mv_size == 16) {
        op->already = true;
        op->erased_at_us = get_u64le(v.mv_data);
        mdb_txn_abort(txn);
        /* Recorded before: make sure the key is gone (a failed destroy). */
        return store_keys_blank(&s->keys, slot) ? ES_OK : store_keys_destroy(&s->keys, slot);
    }
    if (rc != MDB_NOTFOUND) {
        rv = es_err_from_mdb(rc);
        goto out_abort_txn;
    }
    op->erased_at_us = store_now_us();
    put_u64le(vb, op->erased_at_us);
    put_u64le(vb + 8, op->kind == STORE_ERASE_SUBJECT ? 1 : 0);
    v.mv_size = 16;
    v.mv_data = vb;
    rc = mdb_put(txn, s->erased_keys, &k, &v, 0);
    if (rc) {
        rv = es_err_from_mdb(rc);
        goto out_abort_txn;
    }
    uint64_t head = 0;
    rv = erase_record_write(s, txn, op, slot, &head);
    if (rv != ES_OK) {
        goto out_abort_txn;
    }
    rv = store_commit_durable(s, txn); /* the journal's checkpoint, when it runs */
    if (rv != ES_OK) {
        return rv;
    }
    atomic_store(&s->head, head);
    if (!s->sync && mdb_env_sync(s->env, 1) != 0) {
        return ES_ERR_IO; /* recorded or not: the next open finishes it if it was */
    }
    return store_keys_destroy(&s->keys, slot);

out_abort_txn:
    mdb_txn_abort(txn);
    return rv;
}

/* ------------------------------------------- replication: relay, follower -- */

bool store_erase_record(const uint8_t *rec, size_t len, uint64_t *slot, uint64_t *erased_at_us)
{
    es_record r;
    if (es_record_parse(rec, len, 0, &r) != ES_OK ||
        !es_slice_eq(r.stream, (const uint8_t *)STORE_LIFE_STREAM, strlen(STORE_LIFE_STREAM)) ||
        !(es_slice_eq(r.type, (const uint8_t *)STORE_ERASE_TYPE_STREAM,
                      strlen(STORE_ERASE_TYPE_STREAM)) ||
          es_slice_eq(r.type, (const uint8_t *)STORE_ERASE_TYPE_SUBJECT,
                      strlen(STORE_ERASE_TYPE_SUBJECT))) ||
        r.data.len != STORE_ERASE_RECORD_BYTES) {
        return false;
    }
    *slot = get_u64le(r.data.p);
    *erased_at_us = get_u64le(r.data.p + 8);
    return true;
}

bool store_record_key_slot(const uint8_t *rec, size_t len, uint64_t *slot)
{
    es_record r;
    return es_record_parse(rec, len, 0, &r) == ES_OK && r.sealed.len != 0 &&
           store_seal_slot(r.sealed.p, r.sealed.len, slot);
}

STORE_GUARDED_BEGIN
es_err store_key_export(store *s, uint64_t slot, store_key_state *state,
                        uint8_t key[STORE_DATA_KEY_BYTES])
{
    *state = STORE_KEY_ABSENT;
    if (!s->has_keys || s->keys.fd < 0) {
        return ES_ERR_NOT_ERASABLE;
    }
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    uint8_t kb[8];
    put_u64be(kb, slot);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(txn, s->erased_keys, &k, &v);
    if (rc == 0) {
        *state = STORE_KEY_ERASED;
    } else if (rc != MDB_NOTFOUND) {
        rv = es_err_from_mdb(rc);
    } else if (store_keys_get(&s->keys, slot, key)) {
        *state = STORE_KEY_LIVE;
    } else if (!s->follower && slot != 0 && slot < atomic_load(&s->keys.end)) {
        /* A primary wrote every slot of its pools: a zero one was destroyed.
         * A follower's may be a hole where no key was copied yet. */
        *state = STORE_KEY_ERASED;
    }
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

STORE_GUARDED_BEGIN
es_err store_key_subject(store *s, uint64_t slot, uint8_t out[STORE_SUBJECT_MAX], size_t *len)
{
    *len = 0;
    if (!s->has_slot_subjects) {
        return ES_ERR_NOT_FOUND;
    }
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    rv = slot_subject_get(s, txn, slot, out, len);
    store_read_end(txn);
    return rv;
}
STORE_GUARDED_END

/* A copied key's subject: bound to the slot as on the primary (subjects and
 * slot_subjects), in the import's transaction. Bound before to the same
 * slot: nothing to write. @return ES_OK; ES_ERR_MALFORMED (not a name, or
 * bound to another slot, or the slot to another subject); LMDB errors. */
static es_err import_subject(store *s, MDB_txn *txn, const store_key_in *k, bool *wrote)
{
    if (k->subject_len == 0) {
        return ES_OK;
    }
    if (k->subject_len > STORE_SUBJECT_MAX ||
        es_validate_name(k->subject, k->subject_len) != ES_OK || !s->has_slot_subjects) {
        return ES_ERR_MALFORMED;
    }
    uint64_t bound;
    es_err rv = subject_get(s, txn, k->subject, k->subject_len, &bound);
    if (rv == ES_OK) {
        return bound == k->slot ? ES_OK : ES_ERR_MALFORMED;
    }
    if (rv != ES_ERR_NOT_FOUND) {
        return rv;
    }
    size_t other;
    rv = slot_subject_get(s, txn, k->slot, NULL, &other);
    if (rv != ES_ERR_NOT_FOUND) {
        return rv == ES_OK ? ES_ERR_MALFORMED : rv;
    }
    uint8_t sv[8];
    put_u64le(sv, k->slot);
    MDB_val key = {k->subject_len, (void *)k->subject}, v = {8, sv};
    int rc = mdb_put(txn, s->subjects, &key, &v, MDB_NOOVERWRITE);
    if (rc == 0) {
        rc = slot_subject_put(s, txn, k->slot, k->subject, k->subject_len);
    }
    if (rc == 0) {
        *wrote = true;
    }
    return es_err_from_mdb(rc);
}

es_err store_keys_import(store *s, const store_key_in *keys, size_t n)
{
    STORE_FATAL_SCOPE;
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (!s->has_keys || s->keys.fd < 0) {
        return ES_ERR_NOT_ERASABLE;
    }
    MDB_txn *txn;
    int rc = store_write_begin(s, &txn);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    es_err rv = ES_OK;
    uint64_t top = 0;
    bool wrote = false, marked = false;
    for (size_t i = 0; i < n && rv == ES_OK; i++) {
        uint64_t slot = keys[i].slot;
        uint8_t kb[8], vb[16];
        put_u64be(kb, slot);
        MDB_val k = {8, kb}, v;
        rc = mdb_get(txn, s->erased_keys, &k, &v);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            rv = es_err_from_mdb(rc);
            break;
        }
        rv = import_subject(s, txn, &keys[i], &marked);
        if (rv != ES_OK) {
            break;
        }
        if (rc == 0) {
            continue; /* erased here: never written again */
        }
        if (keys[i].erased) {
            /* Destroyed on the primary before this store copied it: record
             * it, so that reads answer ERASED and no copy is ever written. */
            put_u64le(vb, 0);
            put_u64le(vb + 8, 2);
            v = (MDB_val){16, vb};
            rc = mdb_put(txn, s->erased_keys, &k, &v, 0);
            rv = es_err_from_mdb(rc);
            marked = true;
            continue;
        }
        uint8_t held[STORE_KEY_BYTES];
        if (store_keys_get(&s->keys, slot, held)) {
            bool same = CRYPTO_memcmp(held, keys[i].key, STORE_KEY_BYTES) == 0;
            OPENSSL_cleanse(held, sizeof held);
            if (!same) {
                rv = ES_ERR_CORRUPT; /* another store's key at this slot */
            }
            continue;
        }
        rv = store_keys_put(&s->keys, slot, keys[i].key);
        wrote = rv == ES_OK || wrote;
        if (slot + 1 > top) {
            top = slot + 1;
        }
    }
    if (rv == ES_OK && wrote) {
        rv = store_keys_publish(&s->keys, top); /* synced before any record needs them */
    }
    if (rv != ES_OK || !marked) {
        mdb_txn_abort(txn);
        return rv;
    }
    rc = mdb_txn_commit(txn);
    return rc ? store_commit_err(s, rc) : ES_OK;
}

/* The largest sealed field a record may bring: data and metadata within
 * max_event_bytes, their two field headers, the seal's overhead. */
#define IMPORT_SEALED_SLACK 32u

es_err store_crypt_import(store *s, MDB_txn *txn, const es_record *r, const uint8_t *bytes,
                          size_t len, bool exists, uint64_t number, char *msg, size_t msg_len)
{
    if (r->sealed.len == 0) {
        return ES_OK;
    }
    if (!s->has_keys || s->keys.fd < 0) {
        store_set_msg(msg, msg_len, "%s",
                      "a sealed event, and this store has no key store: a follower of an "
                      "encrypted primary must be created with encryption on (the default)");
        return ES_ERR_NOT_ERASABLE;
    }
    es_record parts;
    uint64_t slot = 0;
    if (sealed_parts(bytes, len, &parts) != ES_OK ||
        !store_seal_slot(parts.sealed.p, parts.sealed.len, &slot) || slot == 0 ||
        parts.sealed.len > (size_t)s->max_event_bytes + STORE_SEAL_OVERHEAD + IMPORT_SEALED_SLACK) {
        store_set_msg(msg, msg_len, "%s",
                      "a sealed event that is not in the store's layout, names no key slot, or "
                      "exceeds max-event-bytes");
        return ES_ERR_MALFORMED;
    }
    uint64_t bound, flags;
    es_err rv = exists ? stream_key_get(s, txn, number, &bound, &flags) : ES_ERR_NOT_FOUND;
    if (rv == ES_OK) {
        if (bound != slot) {
            store_set_msg(msg, msg_len, "%s", "a sealed event names another key than its stream's");
            return ES_ERR_MALFORMED;
        }
        return ES_OK;
    }
    if (rv != ES_ERR_NOT_FOUND) {
        return rv;
    }
    if (exists) {
        store_set_msg(msg, msg_len, "%s", "a sealed event in a stream stored in plain");
        return ES_ERR_MALFORMED;
    }
    /* A new stream: bound to the key its first event names, and the
     * subject's when the key came with one (store_keys_import, before the
     * records): as the primary bound it, for a promotion. */
    size_t sl;
    rv = slot_subject_get(s, txn, slot, NULL, &sl);
    if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
        return rv;
    }
    uint8_t kb[8], vb[16];
    put_u64be(kb, number);
    put_u64le(vb, slot);
    put_u64le(vb + 8, rv == ES_OK ? KEY_FLAG_SUBJECT : 0);
    MDB_val k = {8, kb}, v = {16, vb};
    return es_err_from_mdb(mdb_put(txn, s->stream_keys, &k, &v, 0));
}

es_err store_erase_import(store *s, MDB_txn *txn, const es_record *r, bool *erasure)
{
    *erasure = false;
    bool subject = es_slice_eq(r->type, (const uint8_t *)STORE_ERASE_TYPE_SUBJECT,
                               strlen(STORE_ERASE_TYPE_SUBJECT));
    if (!subject && !es_slice_eq(r->type, (const uint8_t *)STORE_ERASE_TYPE_STREAM,
                                 strlen(STORE_ERASE_TYPE_STREAM))) {
        return ES_OK; /* not an erasure */
    }
    *erasure = true;
    if (r->data.len != STORE_ERASE_RECORD_BYTES) {
        return ES_ERR_MALFORMED;
    }
    if (!s->has_keys) {
        return ES_OK;
    }
    uint8_t kb[8], vb[16];
    put_u64be(kb, get_u64le(r->data.p));
    put_u64le(vb, get_u64le(r->data.p + 8));
    put_u64le(vb + 8, subject ? 1 : 0);
    MDB_val k = {8, kb}, v = {16, vb};
    return es_err_from_mdb(mdb_put(txn, s->erased_keys, &k, &v, 0));
}

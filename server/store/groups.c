/*
 * groups.c — the stored state of consumer groups: each group's definition
 * and checkpoint, the events done above the checkpoint, and its parked
 * events. The state machine that uses it runs on the loop thread
 * (server/groups.c); this file only stores what it is told.
 *
 * Design notes
 * ============
 *
 * Tables (integers in keys big-endian, in values little-endian):
 *
 *   groups        group name (1..256 bytes) -> definition:
 *                 +--------+------------+------------+------------+
 *                 | number | checkpoint | created_us | ack_timeout|
 *                 | u64    | u64        | u64        | u32 (ms)   |
 *                 +--------+-----------+-------------+--------+--------+-----------+=============+
 *                 | max_retries u32 | max_in_flight u32 | flags u8 | target u8 | tn_len u16 |
 * target name |
 *                 +-----------------+-------------------+----------+-----------+------------+=============+
 *                 flags bit 0: park_blocks. The number interns the name in
 *                 the two tables below; meta "next_group" holds the next one.
 *
 *   group_done    number u64 BE | from u64 BE -> to u64 LE
 *                 events above the checkpoint acked or skipped, a run of
 *                 consecutive positions from..to (inclusive) per entry: a
 *                 member's batch of acks is mostly one run. When the
 *                 checkpoint moves, the entries at or below it are removed
 *                 and one that straddles it is cut to start above it.
 *
 *   group_parked  number u64 BE | position u64 BE ->
 *                 attempts u32 | parked_at_us u64 | stream_len u16 | stream
 *                 | reason_len u16 | reason
 *
 * Every change arrives as a batch of ops in one write transaction
 * (store_group_apply, called by the writer thread), so one commit carries
 * all the acks gathered while the previous one ran: the checkpoint moves
 * with the writer's transactions, never with an fsync per ack. A group's
 * checkpoint is never lowered here, whatever the caller says.
 *
 * Durability. With the journal (journal.c), a batch of FLUSH ops only
 * (acks, skips, parks, unparks, checkpoint moves: nearly every batch) is
 * written as one journal group entry, the ops that applied encoded as
 * below, WITHOUT an fdatasync of its own; LMDB then commits without a
 * sync. The entry is durable with the next fdatasync of the journal: the
 * appends' entry of the same writer batch (the writer applies group jobs
 * first and answers them before writing the appends: server/writer.h), a
 * checkpoint's, or the journal's timer (within 0.1 s). *synced says
 * whether that happened already (store_group_synced: with the journal,
 * almost never at the answer). A kill -9 loses none of it; a power loss at
 * most the last 0.1 s of group entries, whose events are then delivered
 * again (at-least-once), never a later entry without them. Recovery
 * replays the entry (store_group_replay) in sequence with the append
 * entries; journal.c's design notes say why the replay gives the same
 * state and why a lost group entry takes every later entry with it. A
 * batch holding a create, update or delete commits and then makes a
 * checkpoint (store_commit_durable): those use the clock and the group
 * counter, and are rare. Without the journal, LMDB's own synced commit.
 *
 * The tables are created at open without a format bump: a store written
 * before them simply has no groups, and a read-only open of such a store
 * (has_groups false) lists none.
 */
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "internal.h"

#define GROUP_FIXED_BYTES  46u /* up to the target name */
#define PARKED_FIXED_BYTES 14u

int store_groups_open(store *s, MDB_txn *txn, unsigned flags)
{
    int rc = mdb_dbi_open(txn, "groups", flags, &s->groups);
    if (rc == MDB_NOTFOUND && !(flags & MDB_CREATE)) {
        s->has_groups = false;
        return 0;
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "group_done", flags, &s->group_done);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "group_parked", flags, &s->group_parked);
    }
    s->has_groups = rc == 0;
    return rc;
}

static size_t def_encode(uint8_t *out, const store_group_def *d)
{
    put_u64le(out, d->number);
    put_u64le(out + 8, d->checkpoint);
    put_u64le(out + 16, d->created_us);
    put_u32le(out + 24, d->ack_timeout_ms);
    put_u32le(out + 28, d->max_retries);
    put_u32le(out + 32, d->max_in_flight);
    out[36] = d->park_blocks ? 1 : 0;
    out[37] = d->target;
    out[38] = (uint8_t)(d->target_name_len & 0xff);
    out[39] = (uint8_t)(d->target_name_len >> 8);
    memset(out + 40, 0, GROUP_FIXED_BYTES - 40);
    memcpy(out + GROUP_FIXED_BYTES, d->target_name, d->target_name_len);
    return GROUP_FIXED_BYTES + d->target_name_len;
}

static es_err def_decode(const MDB_val *k, const MDB_val *v, store_group_def *d)
{
    const uint8_t *p = v->mv_data;
    if (k->mv_size == 0 || k->mv_size > sizeof d->name || v->mv_size < GROUP_FIXED_BYTES) {
        return ES_ERR_CORRUPT;
    }
    memset(d, 0, sizeof *d);
    d->name_len = k->mv_size;
    memcpy(d->name, k->mv_data, k->mv_size);
    d->number = get_u64le(p);
    d->checkpoint = get_u64le(p + 8);
    d->created_us = get_u64le(p + 16);
    d->ack_timeout_ms = get_u32le(p + 24);
    d->max_retries = get_u32le(p + 28);
    d->max_in_flight = get_u32le(p + 32);
    d->park_blocks = p[36] & 1;
    d->target = p[37];
    d->target_name_len = (size_t)p[38] | (size_t)p[39] << 8;
    if (d->target_name_len > sizeof d->target_name ||
        v->mv_size != GROUP_FIXED_BYTES + d->target_name_len) {
        return ES_ERR_CORRUPT;
    }
    memcpy(d->target_name, p + GROUP_FIXED_BYTES, d->target_name_len);
    return ES_OK;
}

static void pair_key(uint8_t key[16], uint64_t number, uint64_t pos)
{
    put_u64be(key, number);
    put_u64be(key + 8, pos);
}

/* Delete every key number|pos with pos <= upto (all of them: UINT64_MAX). */
static int delete_range(MDB_txn *txn, MDB_dbi dbi, uint64_t number, uint64_t upto)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) {
        return rc;
    }
    uint8_t key[16];
    pair_key(key, number, 0);
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size != 16 || get_u64be(k.mv_data) != number ||
            get_u64be((const uint8_t *)k.mv_data + 8) > upto) {
            break;
        }
        rc = mdb_cursor_del(cur, 0);
        if (rc) {
            break;
        }
        /* Seek again rather than rely on where a delete leaves the cursor. */
        k.mv_size = 16;
        k.mv_data = key;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Remove the done ranges at or below cp; a range reaching above it is cut
 * to start at cp + 1. */
static int trim_done(MDB_txn *txn, MDB_dbi dbi, uint64_t number, uint64_t cp)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) {
        return rc;
    }
    uint8_t key[16];
    for (;;) {
        pair_key(key, number, 0);
        MDB_val k = {16, key}, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc || k.mv_size != 16 || get_u64be(k.mv_data) != number ||
            get_u64be((const uint8_t *)k.mv_data + 8) > cp) {
            break;
        }
        uint64_t to = v.mv_size == 8 ? get_u64le(v.mv_data) : 0;
        rc = mdb_cursor_del(cur, 0);
        if (rc) {
            break;
        }
        if (to > cp) {
            uint8_t nk[16], val[8];
            pair_key(nk, number, cp + 1);
            put_u64le(val, to);
            MDB_val k2 = {16, nk}, v2 = {8, val};
            rc = mdb_put(txn, dbi, &k2, &v2, 0);
            break; /* every later range starts above cp */
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int next_group_number(store *s, MDB_txn *txn, uint64_t *out)
{
    MDB_val v;
    int rc = store_meta_get(txn, s->meta, "next_group", &v);
    uint64_t next = 1;
    if (rc == 0 && v.mv_size == 8) {
        next = get_u64le(v.mv_data);
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        return rc;
    }
    uint8_t buf[8];
    put_u64le(buf, next + 1);
    rc = store_meta_put(txn, s->meta, "next_group", buf, 8);
    *out = next;
    return rc;
}

/* Look a group up by name: 0 and *d filled; MDB_NOTFOUND; another LMDB code.
 * A record that does not decode is -1 (corrupt). */
static int group_get(store *s, MDB_txn *txn, const uint8_t *name, size_t len, store_group_def *d)
{
    MDB_val k = {len, (void *)name}, v;
    int rc = mdb_get(txn, s->groups, &k, &v);
    if (rc) {
        return rc;
    }
    return def_decode(&k, &v, d) == ES_OK ? 0 : -1;
}

static int group_put(store *s, MDB_txn *txn, const store_group_def *d)
{
    uint8_t buf[GROUP_FIXED_BYTES + 256];
    size_t n = def_encode(buf, d);
    MDB_val k = {d->name_len, (void *)d->name}, v = {n, buf};
    return mdb_put(txn, s->groups, &k, &v, 0);
}

/* One op; an LMDB failure is returned (it fails the transaction), a refusal
 * of this op alone goes to op->rv. */
static int apply_one(store *s, MDB_txn *txn, store_group_op *op)
{
    store_group_def cur;
    op->rv = ES_OK;
    if (op->def.name_len == 0 || op->def.name_len > sizeof op->def.name ||
        op->def.target_name_len > sizeof op->def.target_name) {
        op->rv = ES_ERR_INVALID_ARGUMENT;
        return 0;
    }
    int rc = group_get(s, txn, op->def.name, op->def.name_len, &cur);
    if (rc == -1) {
        op->rv = ES_ERR_CORRUPT;
        return 0;
    }
    if (rc && rc != MDB_NOTFOUND) {
        return rc;
    }
    bool exists = rc == 0;
    if (op->kind == STORE_GROUP_CREATE) {
        if (exists) {
            op->rv = ES_ERR_GROUP_EXISTS;
            return 0;
        }
        rc = next_group_number(s, txn, &op->def.number);
        if (rc == 0) {
            op->def.created_us = store_now_us();
            rc = group_put(s, txn, &op->def);
        }
        return rc;
    }
    /* The others need the same group: a number that differs means the
     * group was deleted and created again since the op was made. */
    if (!exists || (op->def.number && op->def.number != cur.number)) {
        op->rv = ES_ERR_GROUP_NOT_FOUND;
        return 0;
    }
    switch (op->kind) {
    case STORE_GROUP_UPDATE:
        cur.ack_timeout_ms = op->def.ack_timeout_ms;
        cur.max_retries = op->def.max_retries;
        cur.max_in_flight = op->def.max_in_flight;
        cur.park_blocks = op->def.park_blocks;
        op->def = cur;
        return group_put(s, txn, &cur);
    case STORE_GROUP_DELETE:
        rc = delete_range(txn, s->group_done, cur.number, UINT64_MAX);
        if (rc == 0) {
            rc = delete_range(txn, s->group_parked, cur.number, UINT64_MAX);
        }
        if (rc == 0) {
            MDB_val k = {cur.name_len, cur.name};
            rc = mdb_del(txn, s->groups, &k, NULL);
        }
        return rc;
    case STORE_GROUP_FLUSH:
        break;
    default:
        op->rv = ES_ERR_INVALID_ARGUMENT;
        return 0;
    }
    uint64_t cp = op->checkpoint > cur.checkpoint ? op->checkpoint : cur.checkpoint;
    uint8_t key[16];
    for (size_t i = 0; i < op->n_done;) {
        uint64_t from = op->done[i], to = from;
        i++;
        while (i < op->n_done && op->done[i] == to + 1) {
            to = op->done[i++];
        }
        if (to <= cp) {
            continue;
        }
        from = from <= cp ? cp + 1 : from;
        uint8_t val[8];
        put_u64le(val, to);
        pair_key(key, cur.number, from);
        MDB_val k = {16, key}, v = {8, val};
        rc = mdb_put(txn, s->group_done, &k, &v, 0);
        if (rc) {
            return rc;
        }
    }
    if (cp > cur.checkpoint) {
        rc = trim_done(txn, s->group_done, cur.number, cp);
        if (rc) {
            return rc;
        }
        cur.checkpoint = cp;
        rc = group_put(s, txn, &cur);
        if (rc) {
            return rc;
        }
    }
    for (size_t i = 0; i < op->n_unparks; i++) {
        pair_key(key, cur.number, op->unparks[i]);
        MDB_val k = {16, key};
        rc = mdb_del(txn, s->group_parked, &k, NULL);
        if (rc && rc != MDB_NOTFOUND) {
            return rc;
        }
    }
    for (size_t i = 0; i < op->n_parks; i++) {
        const store_group_parked *p = &op->parks[i];
        size_t slen = p->stream_len > 256 ? 256 : p->stream_len;
        size_t rlen =
            p->reason_len > STORE_GROUP_REASON_MAX ? STORE_GROUP_REASON_MAX : p->reason_len;
        uint8_t val[PARKED_FIXED_BYTES + 256 + 2 + STORE_GROUP_REASON_MAX];
        put_u32le(val, p->attempts);
        put_u64le(val + 4, p->parked_at_us);
        val[12] = (uint8_t)(slen & 0xff);
        val[13] = (uint8_t)(slen >> 8);
        memcpy(val + 14, p->stream, slen);
        val[14 + slen] = (uint8_t)(rlen & 0xff);
        val[15 + slen] = (uint8_t)(rlen >> 8);
        if (rlen) {
            memcpy(val + 16 + slen, p->reason, rlen);
        }
        pair_key(key, cur.number, p->position);
        MDB_val k = {16, key}, v = {16 + slen + rlen, val};
        rc = mdb_put(txn, s->group_parked, &k, &v, 0);
        if (rc) {
            return rc;
        }
    }
    op->def = cur;
    return 0;
}

/* ------------------------------------------------ the journal's group ops -- */

/*
 * A FLUSH op in a journal group entry (integers little-endian):
 *
 *   name_len u16 | name | number u64 | checkpoint u64 | n_done u32 |
 *   n_unparks u32 | n_parks u32 | done u64 x n_done | unparks u64 x
 *   n_unparks | per park: position u64 | attempts u32 | parked_at_us u64 |
 *   stream_len u16 | stream | reason_len u16 | reason
 *
 * Only ops that applied are written, with the number of the group they
 * applied to, so replaying them on the same state applies each again.
 */
#define OP_FIXED   30u
#define PARK_FIXED 24u

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static size_t get_u16(const uint8_t *p)
{
    return (size_t)p[0] | (size_t)p[1] << 8;
}

static size_t park_stream_len(const store_group_parked *p)
{
    return p->stream_len > 256 ? 256 : p->stream_len;
}

static size_t park_reason_len(const store_group_parked *p)
{
    return p->reason_len > STORE_GROUP_REASON_MAX ? STORE_GROUP_REASON_MAX : p->reason_len;
}

static size_t op_encoded_len(const store_group_op *op)
{
    size_t n = OP_FIXED + op->def.name_len + 8 * (op->n_done + op->n_unparks);
    for (size_t i = 0; i < op->n_parks; i++) {
        n += PARK_FIXED + park_stream_len(&op->parks[i]) + park_reason_len(&op->parks[i]);
    }
    return n;
}

static uint8_t *op_encode(uint8_t *p, const store_group_op *op)
{
    put_u16(p, (uint16_t)op->def.name_len);
    memcpy(p + 2, op->def.name, op->def.name_len);
    p += 2 + op->def.name_len;
    put_u64le(p, op->def.number);
    put_u64le(p + 8, op->checkpoint);
    put_u32le(p + 16, (uint32_t)op->n_done);
    put_u32le(p + 20, (uint32_t)op->n_unparks);
    put_u32le(p + 24, (uint32_t)op->n_parks);
    p += 28;
    for (size_t i = 0; i < op->n_done; i++, p += 8) {
        put_u64le(p, op->done[i]);
    }
    for (size_t i = 0; i < op->n_unparks; i++, p += 8) {
        put_u64le(p, op->unparks[i]);
    }
    for (size_t i = 0; i < op->n_parks; i++) {
        const store_group_parked *k = &op->parks[i];
        size_t slen = park_stream_len(k), rlen = park_reason_len(k);
        put_u64le(p, k->position);
        put_u32le(p + 8, k->attempts);
        put_u64le(p + 12, k->parked_at_us);
        put_u16(p + 20, (uint16_t)slen);
        memcpy(p + 22, k->stream, slen);
        p += 22 + slen;
        put_u16(p, (uint16_t)rlen);
        if (rlen) {
            memcpy(p + 2, k->reason, rlen);
        }
        p += 2 + rlen;
    }
    return p;
}

/* The decoded ops of one entry; arrays malloc'd, names and parks' strings
 * pointing into the entry's bytes. */
typedef struct decoded_ops {
    store_group_op *ops;
    uint64_t *u64s; /* every op's done and unparks */
    store_group_parked *parks;
    size_t n;
} decoded_ops;

static void decoded_free(decoded_ops *d)
{
    free(d->ops);
    free(d->u64s);
    free(d->parks);
}

/* Bounds-checked reader over an entry's bytes. */
typedef struct rd {
    const uint8_t *p, *end;
} rd;

static const uint8_t *rd_take(rd *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        return NULL;
    }
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

static es_err ops_decode(const uint8_t *buf, size_t len, uint32_t count, decoded_ops *d,
                         const char **why)
{
    memset(d, 0, sizeof d[0]);
    /* Every op takes OP_FIXED bytes at least, every position 8, every park
     * PARK_FIXED: the counts are capped by the entry's length before any
     * allocation. */
    if (count == 0 || count > len / OP_FIXED) {
        *why = "an op count that does not fit the entry";
        return ES_ERR_CORRUPT;
    }
    d->ops = calloc(count, sizeof *d->ops);
    d->u64s = calloc(len / 8 + 1, sizeof *d->u64s);
    d->parks = calloc(len / PARK_FIXED + 1, sizeof *d->parks);
    if (!d->ops || !d->u64s || !d->parks) {
        decoded_free(d);
        return ES_ERR_NO_MEMORY;
    }
    rd r = {buf, buf + len};
    size_t nu = 0, np = 0;
    for (uint32_t i = 0; i < count; i++) {
        store_group_op *op = &d->ops[i];
        const uint8_t *h = rd_take(&r, 2);
        size_t name_len = h ? get_u16(h) : 0;
        const uint8_t *name = h ? rd_take(&r, name_len) : NULL;
        const uint8_t *f = name ? rd_take(&r, 28) : NULL;
        if (!f || name_len == 0 || name_len > sizeof op->def.name) {
            *why = "an op's name does not decode";
            decoded_free(d);
            return ES_ERR_CORRUPT;
        }
        op->kind = STORE_GROUP_FLUSH;
        memcpy(op->def.name, name, name_len);
        op->def.name_len = name_len;
        op->def.number = get_u64le(f);
        op->checkpoint = get_u64le(f + 8);
        uint32_t nd = get_u32le(f + 16), nun = get_u32le(f + 20), npk = get_u32le(f + 24);
        if ((size_t)(r.end - r.p) / 8 < (size_t)nd + nun) {
            *why = "more positions than the entry holds";
            decoded_free(d);
            return ES_ERR_CORRUPT;
        }
        op->done = d->u64s + nu;
        op->n_done = nd;
        for (uint32_t k = 0; k < nd; k++) {
            d->u64s[nu++] = get_u64le(rd_take(&r, 8));
        }
        op->unparks = d->u64s + nu;
        op->n_unparks = nun;
        for (uint32_t k = 0; k < nun; k++) {
            d->u64s[nu++] = get_u64le(rd_take(&r, 8));
        }
        if ((size_t)(r.end - r.p) / PARK_FIXED < npk) {
            *why = "more parks than the entry holds";
            decoded_free(d);
            return ES_ERR_CORRUPT;
        }
        op->parks = d->parks + np;
        op->n_parks = npk;
        for (uint32_t k = 0; k < npk; k++) {
            store_group_parked *pk = &d->parks[np++];
            const uint8_t *ph = rd_take(&r, 22);
            size_t slen = ph ? get_u16(ph + 20) : 0;
            const uint8_t *st = ph ? rd_take(&r, slen) : NULL;
            const uint8_t *rh = st ? rd_take(&r, 2) : NULL;
            size_t rlen = rh ? get_u16(rh) : 0;
            const uint8_t *rs = rh ? rd_take(&r, rlen) : NULL;
            if (!rs || slen > 256 || rlen > STORE_GROUP_REASON_MAX) {
                *why = "a park does not decode";
                decoded_free(d);
                return ES_ERR_CORRUPT;
            }
            pk->position = get_u64le(ph);
            pk->attempts = get_u32le(ph + 8);
            pk->parked_at_us = get_u64le(ph + 12);
            pk->stream = st;
            pk->stream_len = slen;
            pk->reason = (const char *)rs;
            pk->reason_len = rlen;
        }
    }
    if (r.p != r.end) {
        *why = "bytes left after the last op";
        decoded_free(d);
        return ES_ERR_CORRUPT;
    }
    d->n = count;
    return ES_OK;
}

es_err store_group_replay(store *s, const uint8_t *ops, size_t len, uint32_t count, char *msg,
                          size_t msg_len)
{
    STORE_FATAL_SCOPE;
    const char *why = "";
    decoded_ops d;
    es_err rv = ops_decode(ops, len, count, &d, &why);
    if (rv != ES_OK) {
        store_set_msg(msg, msg_len, "%s", why);
        return rv;
    }
    MDB_txn *txn;
    int rc = store_write_begin(s, &txn);
    for (size_t i = 0; i < d.n && rc == 0; i++) {
        rc = apply_one(s, txn, &d.ops[i]);
        if (rc == 0 && d.ops[i].rv != ES_OK) {
            store_set_msg(msg, msg_len, "op %zu refused: %s", i, es_strerror(d.ops[i].rv));
            rv = ES_ERR_CORRUPT;
            break;
        }
    }
    if (rc) {
        store_set_msg(msg, msg_len, "%s", mdb_strerror(rc));
        rv = es_err_from_mdb(rc);
    }
    if (txn && rv == ES_OK) {
        rc = mdb_txn_commit(txn);
        rv = rc ? store_commit_err(s, rc) : ES_OK;
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    decoded_free(&d);
    return rv;
}

/*
 * Commit a transaction of FLUSH ops through the journal: the ops that
 * applied written as one group entry (no fdatasync of its own: design
 * notes), then LMDB committed without a sync (as store_append_batch does
 * with its records). Takes txn.
 */
static es_err commit_journaled(store *s, MDB_txn *txn, const store_group_op *ops, size_t n)
{
    size_t len = 0;
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].rv == ES_OK) {
            len += op_encoded_len(&ops[i]);
            count++;
        }
    }
    if (count == 0) {
        /* Every op refused: nothing was written. */
        int rc = mdb_txn_commit(txn);
        return rc ? store_commit_err(s, rc) : ES_OK;
    }
    uint8_t *buf = malloc(len);
    if (!buf) {
        mdb_txn_abort(txn);
        return ES_ERR_NO_MEMORY;
    }
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].rv == ES_OK) {
            p = op_encode(p, &ops[i]);
        }
    }
    if ((size_t)(p - buf) != len) {
        free(buf);
        mdb_txn_abort(txn);
        return ES_ERR_INTERNAL;
    }
    bool written = false;
    es_err rv = journal_write_groups(s, buf, len, count, &written);
    free(buf);
    if (rv != ES_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    int rc = mdb_txn_commit(txn); /* frees the txn, also on failure */
    if (rc) {
        if (written) {
            journal_unwrite(s); /* not replayed: the ops fail */
        }
        return store_commit_err(s, rc);
    }
    if (!written) {
        return journal_checkpoint_sync(s); /* too big for the ring */
    }
    journal_committed(s);
    return ES_OK;
}

es_err store_group_apply(store *s, store_group_op *ops, size_t n, bool *synced)
{
    STORE_FATAL_SCOPE;
    *synced = false;
    es_err rv = ES_OK;
    if (s->read_only) {
        rv = ES_ERR_READ_ONLY;
    } else if (s->follower) {
        rv = ES_ERR_FOLLOWER;
    } else if (!s->has_groups) {
        rv = ES_ERR_INTERNAL;
    }
    MDB_txn *txn = NULL;
    if (rv == ES_OK) {
        int rc = store_write_begin(s, &txn);
        rv = es_err_from_mdb(rc);
    }
    for (size_t i = 0; i < n && rv == ES_OK; i++) {
        int rc = apply_one(s, txn, &ops[i]);
        if (rc) {
            rv = es_err_from_mdb(rc);
        }
    }
    bool flush_only = true;
    for (size_t i = 0; i < n; i++) {
        flush_only = flush_only && ops[i].kind == STORE_GROUP_FLUSH;
    }
    if (rv == ES_OK && s->jr && flush_only) {
        /* Acks, parks, unparks and checkpoint moves: one journal entry,
         * synced with the next append's entry (design notes). */
        rv = commit_journaled(s, txn, ops, n);
    } else if (rv == ES_OK) {
        /* Create, update, delete (rare): commit, then a checkpoint. */
        rv = store_commit_durable(s, txn);
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    if (rv != ES_OK) {
        for (size_t i = 0; i < n; i++) {
            ops[i].rv = rv;
        }
        return rv;
    }
    *synced = store_group_synced(s);
    return ES_OK;
}

bool store_group_synced(store *s)
{
    return s->sync && !(s->jr && journal_unsynced(s));
}

STORE_GUARDED_BEGIN

es_err store_group_list(store *s, store_group_visit_fn visit, void *ctx)
{
    if (!s->has_groups) {
        return ES_OK;
    }
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->groups, &cur);
    MDB_val k, v;
    if (rc == 0) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (rc == 0) {
            store_group_def d;
            rv = def_decode(&k, &v, &d);
            if (rv != ES_OK || visit(ctx, &d) != 0) {
                break;
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    store_read_end(txn);
    if (rv != ES_OK) {
        return rv;
    }
    return rc == MDB_NOTFOUND ? ES_OK : es_err_from_mdb(rc);
}

/* Walk number|pos keys above `after`; each visit gets the key's position and
 * value. At most limit (0: all). */
typedef int (*pair_visit_fn)(void *ctx, uint64_t pos, const MDB_val *v);

static es_err walk_pairs(store *s, MDB_dbi dbi, uint64_t number, uint64_t after, uint32_t limit,
                         pair_visit_fn visit, void *ctx, bool *more)
{
    if (more) {
        *more = false;
    }
    if (!s->has_groups) {
        return ES_OK;
    }
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc == 0) {
        uint8_t key[16];
        pair_key(key, number, after == UINT64_MAX ? after : after + 1);
        MDB_val k = {16, key}, v;
        uint32_t n = 0;
        rc = after == UINT64_MAX ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (rc == 0) {
            if (k.mv_size != 16 || get_u64be(k.mv_data) != number) {
                break;
            }
            if (limit && n == limit) {
                if (more) {
                    *more = true;
                }
                break;
            }
            n++;
            int stop = visit(ctx, get_u64be((const uint8_t *)k.mv_data + 8), &v);
            if (stop < 0) {
                rv = ES_ERR_CORRUPT;
                break;
            }
            if (stop > 0) {
                break;
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    store_read_end(txn);
    if (rv != ES_OK) {
        return rv;
    }
    return rc == MDB_NOTFOUND ? ES_OK : es_err_from_mdb(rc);
}

STORE_GUARDED_END

typedef struct done_ctx {
    store_group_done_fn fn;
    void *ctx;
} done_ctx;

static int done_visit(void *ctx, uint64_t pos, const MDB_val *v)
{
    done_ctx *d = ctx;
    if (v->mv_size != 8 || get_u64le(v->mv_data) < pos) {
        return -1;
    }
    return d->fn(d->ctx, pos, get_u64le(v->mv_data)) ? 1 : 0;
}

es_err store_group_done(store *s, uint64_t number, store_group_done_fn visit, void *ctx)
{
    done_ctx d = {visit, ctx};
    return walk_pairs(s, s->group_done, number, 0, 0, done_visit, &d, NULL);
}

typedef struct parked_ctx {
    store_group_parked_fn fn;
    void *ctx;
} parked_ctx;

static int parked_visit(void *ctx, uint64_t pos, const MDB_val *v)
{
    parked_ctx *pc = ctx;
    const uint8_t *p = v->mv_data;
    if (v->mv_size < 16) {
        return -1;
    }
    store_group_parked rec = {.position = pos};
    rec.attempts = get_u32le(p);
    rec.parked_at_us = get_u64le(p + 4);
    rec.stream_len = (size_t)p[12] | (size_t)p[13] << 8;
    if (v->mv_size < 16 + rec.stream_len) {
        return -1;
    }
    rec.stream = p + 14;
    rec.reason_len = (size_t)p[14 + rec.stream_len] | (size_t)p[15 + rec.stream_len] << 8;
    if (v->mv_size != 16 + rec.stream_len + rec.reason_len) {
        return -1;
    }
    rec.reason = (const char *)p + 16 + rec.stream_len;
    return pc->fn(pc->ctx, &rec) ? 1 : 0;
}

es_err store_group_parked_list(store *s, uint64_t number, uint64_t after, uint32_t limit,
                               store_group_parked_fn visit, void *ctx, bool *more)
{
    parked_ctx pc = {visit, ctx};
    return walk_pairs(s, s->group_parked, number, after, limit, parked_visit, &pc, more);
}

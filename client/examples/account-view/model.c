/*
 * model.c — the account read models (see model.h for the folding rules).
 *
 * Design notes
 * ============
 *
 * Key layout (all in the projector's LMDB environment):
 *
 *   accounts   account key -> account record
 *              account key: +------+-----+-----------+   numeric id: 1..19
 *                           | 0x00 | len | digits    |   digits, no leading
 *                           +------+-----+-----------+   zero ("0" allowed)
 *                           +------+------------------+
 *                           | 0x01 | id bytes         |  any other id
 *                           +------+------------------+
 *              so that memcmp order is "numeric ids by value, then the
 *              rest in byte order" ("2" before "10", as people expect).
 *
 *              account record (little-endian):
 *              +----------+---------+------------+----------+-------+-----------+-------+
 *              | revision | balance | updated_us | position | flags | owner_len | owner |
 *              |   u64    |   i64   |    u64     |   u64    |  u32  |    u32    | bytes |
 *              +----------+---------+------------+----------+-------+-----------+-------+
 *              flags: 1 = opened (an AccountOpened was folded)
 *
 *   by_owner   (MDB_DUPSORT) 'o' | owner (first 400 bytes) -> account key
 *              The duplicates sort by account key, so an owner's accounts
 *              come out in id order. Owners longer than 400 bytes share
 *              a key with others of the same prefix; queries compare the
 *              full owner from the record. ('o' keeps the key non-empty.)
 *
 *   totals     "totals" -> accounts u64 | total_balance i64 | events u64 |
 *              skipped u64
 *
 * Everything an event changes (record, owner index, totals) is written in
 * the projector's batch transaction, so /stats and the accounts always
 * agree with each other and with the checkpoint.
 */
#include "model.h"

#include "bytes.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECORD_HEADER      48u
#define FLAG_OPENED        1u
#define OWNER_KEY_MAX      400u
#define KEY_MAX            (2u + AV_MAX_ID)
#define TOTALS_BYTES       32u
#define NUMERIC_MAX_DIGITS 19u

static const char TOTALS_KEY[] = "totals";

const es_projector_db av_dbs[AV_N_DBS] = {
    [AV_DB_ACCOUNTS] = {"accounts", 0},
    [AV_DB_BY_OWNER] = {"by_owner", MDB_DUPSORT},
    [AV_DB_TOTALS] = {"totals", 0},
};

void av_model_init(av_model *m, const es_projector *p)
{
    m->accounts = es_projector_dbi(p, AV_DB_ACCOUNTS);
    m->by_owner = es_projector_dbi(p, AV_DB_BY_OWNER);
    m->totals = es_projector_dbi(p, AV_DB_TOTALS);
}

/* ------------------------------------------------------------ encoding -- */

bool av_valid_id(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    return len >= 1 && len <= AV_MAX_ID;
}

static bool numeric_id(const char *id, size_t len)
{
    if (len == 0 || len > NUMERIC_MAX_DIGITS || (id[0] == '0' && len > 1)) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (id[i] < '0' || id[i] > '9') {
            return false;
        }
    }
    return true;
}

/* The account key of an id of len bytes; returns its length. */
static size_t make_key(const char *id, size_t len, uint8_t key[KEY_MAX])
{
    if (numeric_id(id, len)) {
        key[0] = 0x00;
        key[1] = (uint8_t)len;
        memcpy(key + 2, id, len);
        return 2 + len;
    }
    key[0] = 0x01;
    memcpy(key + 1, id, len);
    return 1 + len;
}

static bool key_to_id(const MDB_val *k, char id[AV_MAX_ID + 1])
{
    const uint8_t *b = k->mv_data;
    size_t off = k->mv_size >= 2 && b[0] == 0x00 ? 2 : 1;
    if (k->mv_size <= off || k->mv_size - off > AV_MAX_ID || b[0] > 0x01) {
        return false;
    }
    memcpy(id, b + off, k->mv_size - off);
    id[k->mv_size - off] = '\0';
    return true;
}

/* Decode a record; the owner stays in the record's memory. */
static bool decode_record(const MDB_val *v, av_account *a)
{
    const uint8_t *b = v->mv_data;
    if (v->mv_size < RECORD_HEADER) {
        return false;
    }
    size_t owner_len = get_u32le(b + 44);
    if (v->mv_size != RECORD_HEADER + owner_len) {
        return false;
    }
    a->revision = get_u64le(b);
    a->balance = (int64_t)get_u64le(b + 8);
    a->updated_us = get_u64le(b + 16);
    a->position = get_u64le(b + 24);
    a->opened = (get_u32le(b + 40) & FLAG_OPENED) != 0;
    a->owner_len = owner_len;
    a->owner = (const char *)b + RECORD_HEADER;
    return true;
}

static size_t owner_key(const char *owner, size_t len, uint8_t key[1 + OWNER_KEY_MAX])
{
    size_t n = len > OWNER_KEY_MAX ? OWNER_KEY_MAX : len;
    key[0] = 'o';
    memcpy(key + 1, owner, n);
    return 1 + n;
}

/* --------------------------------------------------------------- totals -- */

es_err av_totals_get(const av_model *m, MDB_txn *txn, av_totals *out)
{
    memset(out, 0, sizeof *out);
    MDB_val k = {.mv_size = sizeof TOTALS_KEY - 1, .mv_data = (void *)TOTALS_KEY}, v;
    int rc = mdb_get(txn, m->totals, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return ES_OK;
    }
    if (rc != MDB_SUCCESS) {
        return es_projector_err_from_mdb(rc);
    }
    if (v.mv_size != TOTALS_BYTES) {
        return ES_ERR_CORRUPT;
    }
    const uint8_t *b = v.mv_data;
    out->accounts = get_u64le(b);
    out->total_balance = (int64_t)get_u64le(b + 8);
    out->events = get_u64le(b + 16);
    out->skipped = get_u64le(b + 24);
    return ES_OK;
}

static int put_totals(const av_model *m, MDB_txn *txn, const av_totals *t)
{
    uint8_t b[TOTALS_BYTES];
    put_u64le(b, t->accounts);
    put_u64le(b + 8, (uint64_t)t->total_balance);
    put_u64le(b + 16, t->events);
    put_u64le(b + 24, t->skipped);
    MDB_val k = {.mv_size = sizeof TOTALS_KEY - 1, .mv_data = (void *)TOTALS_KEY};
    MDB_val v = {.mv_size = sizeof b, .mv_data = b};
    return mdb_put(txn, m->totals, &k, &v, 0);
}

/* ----------------------------------------------------------------- fold -- */

typedef enum { EV_OTHER, EV_OPENED, EV_DEPOSITED, EV_WITHDRAWN } ev_kind;

static ev_kind kind_of(const char *type)
{
    if (!strcmp(type, "AccountOpened")) {
        return EV_OPENED;
    }
    if (!strcmp(type, "MoneyDeposited")) {
        return EV_DEPOSITED;
    }
    if (!strcmp(type, "MoneyWithdrawn")) {
        return EV_WITHDRAWN;
    }
    return EV_OTHER;
}

/*
 * The payload of a known event: the owner (copied to *owner, malloc'd) or
 * the amount. Returns false when the payload is unusable.
 */
static bool parse_payload(const es_recorded_event *ev, ev_kind kind, char **owner,
                          size_t *owner_len, int64_t *amount)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)ev->data, ev->data_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return false;
    }
    bool ok = false;
    if (kind == EV_OPENED) {
        json_t *o = json_object_get(root, "owner");
        if (json_is_string(o)) {
            *owner_len = json_string_length(o);
            *owner = malloc(*owner_len + 1);
            if (*owner) {
                memcpy(*owner, json_string_value(o), *owner_len + 1);
                ok = true;
            }
        }
    } else {
        json_t *a = json_object_get(root, "amount");
        if (json_is_integer(a) && json_integer_value(a) > 0) {
            *amount = (int64_t)json_integer_value(a);
            ok = true;
        }
    }
    json_decref(root);
    return ok;
}

static es_err write_record(const av_model *m, MDB_txn *txn, const uint8_t *key, size_t key_len,
                           const av_account *a)
{
    size_t len = RECORD_HEADER + a->owner_len;
    uint8_t *b = malloc(len);
    if (!b) {
        return ES_ERR_NO_MEMORY;
    }
    put_u64le(b, a->revision);
    put_u64le(b + 8, (uint64_t)a->balance);
    put_u64le(b + 16, a->updated_us);
    put_u64le(b + 24, a->position);
    put_u32le(b + 32, 0);
    put_u32le(b + 36, 0);
    put_u32le(b + 40, a->opened ? FLAG_OPENED : 0);
    put_u32le(b + 44, (uint32_t)a->owner_len);
    if (a->owner_len) {
        memcpy(b + RECORD_HEADER, a->owner, a->owner_len);
    }
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key}, v = {.mv_size = len, .mv_data = b};
    int rc = mdb_put(txn, m->accounts, &k, &v, 0);
    free(b);
    return es_projector_err_from_mdb(rc);
}

static es_err index_owner(const av_model *m, MDB_txn *txn, const char *owner, size_t owner_len,
                          const uint8_t *key, size_t key_len, bool add)
{
    uint8_t ok[1 + OWNER_KEY_MAX];
    MDB_val k = {.mv_size = owner_key(owner, owner_len, ok), .mv_data = ok};
    MDB_val v = {.mv_size = key_len, .mv_data = (void *)key};
    int rc =
        add ? mdb_put(txn, m->by_owner, &k, &v, MDB_NODUPDATA) : mdb_del(txn, m->by_owner, &k, &v);
    if (rc == MDB_KEYEXIST || rc == MDB_NOTFOUND) {
        rc = MDB_SUCCESS;
    }
    return es_projector_err_from_mdb(rc);
}

es_err av_apply(void *ctx, MDB_txn *txn, const es_recorded_event *ev)
{
    const av_model *m = ctx;
    static const char prefix[] = AV_CATEGORY "-";
    size_t plen = sizeof prefix - 1;
    if (strncmp(ev->stream, prefix, plen) != 0 || !av_valid_id(ev->stream + plen)) {
        return ES_OK; /* not an account stream */
    }
    const char *id = ev->stream + plen;
    uint8_t key[KEY_MAX];
    size_t key_len = make_key(id, strlen(id), key);

    av_totals t;
    es_err err = av_totals_get(m, txn, &t);
    if (err != ES_OK) {
        return err;
    }
    t.events++;

    av_account a;
    char *old_owner = NULL; /* copy: the record's memory goes away at mdb_put */
    MDB_val k = {.mv_size = key_len, .mv_data = key}, v;
    int rc = mdb_get(txn, m->accounts, &k, &v);
    bool exists = rc == MDB_SUCCESS;
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return es_projector_err_from_mdb(rc);
    }
    if (exists) {
        if (!decode_record(&v, &a)) {
            return ES_ERR_CORRUPT;
        }
        if (a.owner_len && !(old_owner = malloc(a.owner_len))) {
            return ES_ERR_NO_MEMORY;
        }
        if (a.owner_len) {
            memcpy(old_owner, a.owner, a.owner_len);
        }
        a.owner = old_owner;
    } else {
        memset(&a, 0, sizeof a);
        a.owner = "";
    }
    size_t old_owner_len = exists ? a.owner_len : 0;

    ev_kind kind = kind_of(ev->type);
    char *new_owner = NULL;
    size_t new_owner_len = 0;
    int64_t amount = 0;
    bool changed = false, creates = false, reindex = false;
    if (kind != EV_OTHER) {
        if (!parse_payload(ev, kind, &new_owner, &new_owner_len, &amount)) {
            t.skipped++;
        } else if (kind == EV_OPENED) {
            a.opened = true;
            a.owner = new_owner;
            a.owner_len = new_owner_len;
            reindex = !exists || old_owner_len != new_owner_len ||
                      memcmp(old_owner ? old_owner : "", new_owner, new_owner_len) != 0;
            changed = creates = true;
        } else {
            int64_t nb, nt;
            int64_t delta = kind == EV_DEPOSITED ? amount : -amount;
            if (__builtin_add_overflow(a.balance, delta, &nb) ||
                __builtin_add_overflow(t.total_balance, delta, &nt)) {
                t.skipped++;
            } else {
                a.balance = nb;
                t.total_balance = nt;
                changed = creates = true;
            }
        }
    }
    if (exists || creates) {
        a.revision = ev->revision;
        a.position = ev->position;
        a.updated_us = ev->recorded_at_us;
        changed = true;
    }
    if (changed) {
        if (!exists) {
            t.accounts++;
        }
        if ((err = write_record(m, txn, key, key_len, &a)) != ES_OK) {
            goto out_free;
        }
        if (reindex && exists &&
            (err = index_owner(m, txn, old_owner ? old_owner : "", old_owner_len, key, key_len,
                               false)) != ES_OK) {
            goto out_free;
        }
        if ((reindex || !exists) &&
            (err = index_owner(m, txn, a.owner, a.owner_len, key, key_len, true)) != ES_OK) {
            goto out_free;
        }
    }
    err = es_projector_err_from_mdb(put_totals(m, txn, &t));

out_free:
    free(new_owner);
    free(old_owner);
    return err;
}

es_err av_lifecycle(void *ctx, MDB_txn *txn, const es_projector_lifecycle *change,
                    const es_recorded_event *ev)
{
    const av_model *m = ctx;
    (void)ev;
    static const char prefix[] = AV_CATEGORY "-";
    size_t plen = sizeof prefix - 1;
    if (strncmp(change->stream, prefix, plen) != 0 || !av_valid_id(change->stream + plen)) {
        return ES_OK; /* not an account stream */
    }
    if (strcmp(change->type, "$stream-deleted") != 0 &&
        strcmp(change->type, "$stream-tombstoned") != 0) {
        return ES_OK; /* retention: the folded state stays */
    }
    const char *id = change->stream + plen;
    uint8_t key[KEY_MAX];
    size_t key_len = make_key(id, strlen(id), key);
    MDB_val k = {.mv_size = key_len, .mv_data = key}, v;
    int rc = mdb_get(txn, m->accounts, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return ES_OK; /* never seen, or dropped already */
    }
    if (rc != MDB_SUCCESS) {
        return es_projector_err_from_mdb(rc);
    }
    av_account a;
    if (!decode_record(&v, &a)) {
        return ES_ERR_CORRUPT;
    }
    char *owner = NULL; /* copy: the record's memory goes away at mdb_del */
    if (a.owner_len && !(owner = malloc(a.owner_len))) {
        return ES_ERR_NO_MEMORY;
    }
    if (a.owner_len) {
        memcpy(owner, a.owner, a.owner_len);
    }
    size_t owner_len = a.owner_len;
    av_totals t;
    es_err err = av_totals_get(m, txn, &t);
    if (err == ES_OK) {
        t.accounts--;
        t.total_balance -= a.balance;
        rc = mdb_del(txn, m->accounts, &k, NULL);
        err = es_projector_err_from_mdb(rc);
    }
    if (err == ES_OK) {
        err = index_owner(m, txn, owner ? owner : "", owner_len, key, key_len, false);
    }
    if (err == ES_OK) {
        err = es_projector_err_from_mdb(put_totals(m, txn, &t));
    }
    free(owner);
    return err;
}

/* -------------------------------------------------------------- queries -- */

es_err av_get(const av_model *m, MDB_txn *txn, const char *id, av_account *out)
{
    if (!av_valid_id(id)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    uint8_t key[KEY_MAX];
    MDB_val k = {.mv_size = make_key(id, strlen(id), key), .mv_data = key}, v;
    int rc = mdb_get(txn, m->accounts, &k, &v);
    if (rc != MDB_SUCCESS) {
        return es_projector_err_from_mdb(rc);
    }
    if (!decode_record(&v, out)) {
        return ES_ERR_CORRUPT;
    }
    snprintf(out->id, sizeof out->id, "%s", id);
    return ES_OK;
}

static bool matches(const av_query *q, const av_account *a)
{
    if (q->owner &&
        (a->owner_len != strlen(q->owner) || memcmp(a->owner, q->owner, a->owner_len) != 0)) {
        return false;
    }
    return !q->has_min_balance || a->balance >= q->min_balance;
}

es_err av_list(const av_model *m, MDB_txn *txn, const av_query *q, av_visit_fn visit, void *ctx,
               uint64_t *total)
{
    *total = 0;
    uint64_t per_page = q->per_page ? q->per_page : 1;
    uint64_t from = (q->page ? q->page - 1 : 0) * per_page;
    MDB_cursor *cur;
    MDB_dbi dbi = q->owner ? m->by_owner : m->accounts;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != MDB_SUCCESS) {
        return es_projector_err_from_mdb(rc);
    }
    MDB_val k, v;
    uint8_t okey[1 + OWNER_KEY_MAX];
    if (q->owner) {
        k.mv_size = owner_key(q->owner, strlen(q->owner), okey);
        k.mv_data = okey;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    es_err err = ES_OK;
    bool stopped = false;
    for (; rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, q->owner ? MDB_NEXT_DUP : MDB_NEXT)) {
        av_account a;
        MDB_val rk = k, rv = v;
        if (q->owner) {
            /* v is an account key: fetch the record. */
            rk = v;
            int grc = mdb_get(txn, m->accounts, &rk, &rv);
            if (grc != MDB_SUCCESS) {
                err = grc == MDB_NOTFOUND ? ES_ERR_CORRUPT : es_projector_err_from_mdb(grc);
                break;
            }
        }
        if (!decode_record(&rv, &a) || !key_to_id(&rk, a.id)) {
            err = ES_ERR_CORRUPT;
            break;
        }
        if (!matches(q, &a)) {
            continue;
        }
        uint64_t index = (*total)++;
        if (!stopped && index >= from && index - from < per_page) {
            stopped = visit(ctx, &a) != 0;
        }
    }
    if (err == ES_OK && rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        err = es_projector_err_from_mdb(rc);
    }
    mdb_cursor_close(cur);
    return err;
}

void av_format_time(uint64_t us, char out[32])
{
    time_t secs = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06uZ", (unsigned)(us % 1000000u));
}

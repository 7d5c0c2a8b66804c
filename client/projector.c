/*
 * projector.c — exactly-once read models in a local LMDB environment, fed
 * by an esd subscription (es/projector.h).
 *
 * Design notes
 * ============
 *
 * The exactly-once argument is one LMDB property: a write transaction is
 * all or nothing. Each batch is applied in one write transaction that also
 * stores the new checkpoint, so the read model and the checkpoint can never
 * disagree, whatever kills the process and whenever. Everything else only
 * has to make sure that events come back after a failure (the subscription
 * resumes strictly after the checkpoint read from LMDB) and that a
 * redelivered event is not applied again (events at or below the
 * checkpoint are skipped before the transaction starts).
 *
 * Layout of the projector's own database ES_PROJECTOR_META_DB, beside the
 * read model's named databases in the same environment:
 *
 *   "format"     -> u32 LE       PROJECTOR_FORMAT (1)
 *   "checkpoint" -> +----------------+-----+
 *                   | last u64 LE    | has |   has = 0: nothing applied yet
 *                   +----------------+-----+   (9 bytes)
 *   "target"     -> u32 LE es_sub_target | name bytes (may be empty)
 *   "store_id"   -> 16 bytes, the esd store the read model was built from
 *                   (absent until the first subscription; removed by a
 *                   rebuild)
 *
 * Threads: the projector thread owns the client, the subscription and every
 * write transaction. Other threads only read atomics (checkpoint, head,
 * counters), set the stop and rebuild flags, or take the error message
 * under err_lock. The environment is opened with MDB_NOTLS so that query
 * threads can run read transactions alongside.
 *
 * The source is an esd subscription, or (options nats_url/nats_stream) the
 * JetStream stream an esd relay writes (projector_nats.h): the same
 * checkpoint, the same transaction, the same argument.
 *
 * A batch the projector refuses makes es_sub_poll() return ES_ERR_REFUSED;
 * the subscription is then destroyed and made again after the LMDB
 * checkpoint on the next step, rather than trusting the library's own idea
 * of what was delivered: the checkpoint is the only truth.
 *
 * Besides the server's store, this is the one code that includes
 * lmdb.h (through es/projector.h, whose apply functions get an MDB_txn).
 * LMDB codes become es_err through the store's own translation,
 * es_err_from_mdb (proto/mdb_err.h), behind es_projector_err_from_mdb.
 */
#include "es/projector.h"

#include "bytes.h"
#include "mdb_err.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "projector_nats.h"

#define PROJECTOR_FORMAT        1u
#define CHECKPOINT_BYTES        9
#define DEFAULT_HEAD_REFRESH_MS 1000u
#define BACKOFF_MIN_MS          50u
#define BACKOFF_MAX_MS          5000u
#define RUN_POLL_MS             200

struct es_projector {
    MDB_env *env;
    MDB_dbi meta;
    MDB_dbi dbs[ES_PROJECTOR_MAX_DBS];
    size_t n_dbs;

    es_projector_apply_fn apply;
    es_projector_lifecycle_fn lifecycle;
    void *ctx;
    es_sub_target target;
    char *name; /* NULL for ES_SUB_ALL */
    uint32_t batch_size;
    uint32_t head_refresh_ms;

    /* Projector thread only. */
    es_client *client;
    es_subscription *sub;
    pnats *nats; /* opts->nats_url: JetStream instead of sub */
    es_err batch_err;
    int64_t head_refreshed_ms; /* monotonic; 0 = never */
    uint64_t refreshed_head;   /* the head the last refresh returned */
    uint64_t batches_seen;     /* batch callbacks so far */
    unsigned int seed;

    /* Shared with other threads. */
    _Atomic uint64_t checkpoint;
    atomic_bool has_checkpoint;
    _Atomic uint64_t head;
    _Atomic uint64_t scanned; /* caught-up position of the current subscription */
    atomic_bool caught_up;
    atomic_bool connected;
    _Atomic uint64_t events_applied, events_skipped, batches_committed, batches_failed, rebuilds;
    atomic_bool stop;
    atomic_bool rebuild_requested;
    atomic_bool has_error;

    pthread_mutex_t err_lock;
    es_err last_error;
    char last_error_msg[256];
};

/* ------------------------------------------------------------ utilities -- */

es_err es_projector_err_from_mdb(int rc)
{
    return es_err_from_mdb(rc); /* the store's translation (proto/mdb_err.h) */
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static MDB_val val_of(const void *data, size_t len)
{
    MDB_val v = {.mv_size = len, .mv_data = (void *)data};
    return v;
}

static MDB_val key_of(const char *s)
{
    return val_of(s, strlen(s));
}

__attribute__((format(printf, 3, 4))) static void set_error(es_projector *p, es_err rc,
                                                            const char *fmt, ...)
{
    pthread_mutex_lock(&p->err_lock);
    p->last_error = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->last_error_msg, sizeof p->last_error_msg, fmt, ap);
    va_end(ap);
    atomic_store(&p->has_error, true);
    pthread_mutex_unlock(&p->err_lock);
}

static void clear_error(es_projector *p)
{
    if (!atomic_load(&p->has_error)) {
        return;
    }
    pthread_mutex_lock(&p->err_lock);
    p->last_error = ES_OK;
    p->last_error_msg[0] = '\0';
    atomic_store(&p->has_error, false);
    pthread_mutex_unlock(&p->err_lock);
}

__attribute__((format(printf, 2, 3))) static void open_msg(const es_projector_options *opts,
                                                           const char *fmt, ...)
{
    if (!opts || !opts->errmsg || opts->errmsg_len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(opts->errmsg, opts->errmsg_len, fmt, ap);
    va_end(ap);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static void raise_head(es_projector *p, uint64_t v)
{
    uint64_t cur = atomic_load(&p->head);
    while (v > cur && !atomic_compare_exchange_weak(&p->head, &cur, v)) {
    }
}

/* The number an event is ordered by: a revision for a one-stream projection. */
static uint64_t event_key(const es_projector *p, const es_recorded_event *ev)
{
    return p->target == ES_SUB_STREAM ? ev->revision : ev->position;
}

static bool gapless(es_sub_target t)
{
    return t == ES_SUB_STREAM; /* the log has holes where events were deleted */
}

/* ----------------------------------------------------------- meta record -- */

static int put_checkpoint(es_projector *p, MDB_txn *txn, uint64_t last, bool has)
{
    uint8_t buf[CHECKPOINT_BYTES];
    put_u64le(buf, has ? last : 0);
    buf[8] = has ? 1 : 0;
    MDB_val k = key_of("checkpoint"), v = val_of(buf, sizeof buf);
    return mdb_put(txn, p->meta, &k, &v, 0);
}

/* The "target" record: u32 LE target | name. */
static int put_target(es_projector *p, MDB_txn *txn)
{
    size_t name_len = p->name ? strlen(p->name) : 0;
    uint8_t *buf = malloc(4 + name_len);
    if (!buf) {
        return ENOMEM;
    }
    put_u32le(buf, (uint32_t)p->target);
    if (name_len) {
        memcpy(buf + 4, p->name, name_len);
    }
    MDB_val k = key_of("target"), v = val_of(buf, 4 + name_len);
    int rc = mdb_put(txn, p->meta, &k, &v, 0);
    free(buf);
    return rc;
}

static bool target_matches(const es_projector *p, const MDB_val *v)
{
    size_t name_len = p->name ? strlen(p->name) : 0;
    if (v->mv_size != 4 + name_len) {
        return false;
    }
    const uint8_t *b = v->mv_data;
    return get_u32le(b) == (uint32_t)p->target &&
           (name_len == 0 || memcmp(b + 4, p->name, name_len) == 0);
}

static const char *target_name(es_sub_target t)
{
    switch (t) {
    case ES_SUB_ALL:
        return "all";
    case ES_SUB_STREAM:
        return "stream";
    case ES_SUB_CATEGORY:
        return "category";
    case ES_SUB_EVENT_TYPE:
        return "type";
    case ES_SUB_STREAM_PREFIX:
        return "prefix";
    }
    return "?";
}

/*
 * Create or check the projector's record inside the open transaction:
 * format, target and checkpoint.
 */
static es_err init_meta(es_projector *p, MDB_txn *txn, const es_projector_options *opts)
{
    MDB_val k = key_of("format"), v;
    int rc = mdb_get(txn, p->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        uint8_t fmt[4];
        put_u32le(fmt, PROJECTOR_FORMAT);
        v = val_of(fmt, sizeof fmt);
        if ((rc = mdb_put(txn, p->meta, &k, &v, 0)) != MDB_SUCCESS ||
            (rc = put_target(p, txn)) != MDB_SUCCESS ||
            (rc = put_checkpoint(p, txn, 0, false)) != MDB_SUCCESS) {
            open_msg(opts, "cannot initialise the projector record: %s", mdb_strerror(rc));
            return es_projector_err_from_mdb(rc);
        }
        return ES_OK;
    }
    if (rc != MDB_SUCCESS) {
        open_msg(opts, "cannot read the projector record: %s", mdb_strerror(rc));
        return es_projector_err_from_mdb(rc);
    }
    if (v.mv_size != 4 || get_u32le(v.mv_data) != PROJECTOR_FORMAT) {
        open_msg(opts, "%s: unknown projector format", opts->dir);
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    k = key_of("target");
    rc = mdb_get(txn, p->meta, &k, &v);
    if (rc != MDB_SUCCESS || !target_matches(p, &v)) {
        open_msg(opts,
                 "%s holds a read model of another subscription (not %s%s%s): rebuild it or "
                 "use another directory",
                 opts->dir, target_name(p->target), p->name ? " " : "", p->name ? p->name : "");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    k = key_of("checkpoint");
    rc = mdb_get(txn, p->meta, &k, &v);
    if (rc != MDB_SUCCESS || v.mv_size != CHECKPOINT_BYTES) {
        open_msg(opts, "%s: missing or damaged checkpoint", opts->dir);
        return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? ES_ERR_CORRUPT
                                                       : es_projector_err_from_mdb(rc);
    }
    const uint8_t *b = v.mv_data;
    atomic_store(&p->checkpoint, get_u64le(b));
    atomic_store(&p->has_checkpoint, b[8] != 0);
    return ES_OK;
}

/* ------------------------------------------------------------ lifecycle -- */

void es_projector_options_init(es_projector_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->target = ES_SUB_ALL;
    opts->sync = ES_PROJECTOR_SYNC_META;
    opts->map_size = ES_PROJECTOR_DEFAULT_MAP_SIZE;
}

static bool valid_db_name(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    return len >= 1 && len <= 255 && name[0] != '$';
}

static es_err check_options(const es_projector_options *opts)
{
    if (!opts->dir || !*opts->dir || !opts->apply) {
        open_msg(opts, "dir and apply are required");
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (opts->n_dbs > ES_PROJECTOR_MAX_DBS || (opts->n_dbs > 0 && !opts->dbs)) {
        open_msg(opts, "at most %u databases", ES_PROJECTOR_MAX_DBS);
        return ES_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < opts->n_dbs; i++) {
        if (!valid_db_name(opts->dbs[i].name)) {
            open_msg(opts, "database name %zu: 1..255 bytes, not starting with '$'", i);
            return ES_ERR_INVALID_ARGUMENT;
        }
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(opts->dbs[i].name, opts->dbs[j].name)) {
                open_msg(opts, "database %s declared twice", opts->dbs[i].name);
                return ES_ERR_INVALID_ARGUMENT;
            }
        }
    }
    switch (opts->target) {
    case ES_SUB_ALL:
        if (opts->name && *opts->name) {
            open_msg(opts, "a name is meaningless for the whole log");
            return ES_ERR_INVALID_ARGUMENT;
        }
        break;
    case ES_SUB_STREAM:
    case ES_SUB_CATEGORY:
    case ES_SUB_EVENT_TYPE:
    case ES_SUB_STREAM_PREFIX:
        if (!opts->name || !*opts->name || strlen(opts->name) > 256) {
            open_msg(opts, "the %s target needs a name of 1..256 bytes", target_name(opts->target));
            return ES_ERR_INVALID_ARGUMENT;
        }
        break;
    default:
        open_msg(opts, "unknown target %d", (int)opts->target);
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

es_err es_projector_create(const es_projector_options *opts, es_projector **out)
{
    if (!opts || !out) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    es_err err = check_options(opts);
    if (err != ES_OK) {
        return err;
    }
    es_projector *p = calloc(1, sizeof *p);
    if (!p) {
        return ES_ERR_NO_MEMORY;
    }
    pthread_mutex_init(&p->err_lock, NULL);
    p->apply = opts->apply;
    p->lifecycle = opts->lifecycle;
    p->ctx = opts->ctx;
    p->target = opts->target;
    p->batch_size = opts->batch_size;
    p->head_refresh_ms = opts->head_refresh_ms ? opts->head_refresh_ms : DEFAULT_HEAD_REFRESH_MS;
    p->seed = (unsigned int)now_ms() ^ (unsigned int)getpid();
    p->n_dbs = opts->n_dbs;
    if (opts->target != ES_SUB_ALL && !(p->name = strdup(opts->name))) {
        err = ES_ERR_NO_MEMORY;
        goto out_free;
    }

    if (opts->nats_url) {
        if (!opts->nats_stream || opts->target == ES_SUB_STREAM) {
            open_msg(opts, "%s",
                     "nats_url needs nats_stream, and a target other than ES_SUB_STREAM");
            err = ES_ERR_INVALID_ARGUMENT;
            goto out_free;
        }
        if ((err = pnats_create(opts->nats_url, opts->nats_stream, opts->target, p->name,
                                &p->nats)) != ES_OK) {
            goto out_free;
        }
    }
    es_client_options copts;
    if (opts->client) {
        copts = *opts->client;
    } else {
        es_client_options_init(&copts);
    }
    if (!copts.client_name) {
        copts.client_name = "es-projector";
    }
    if ((err = es_client_create(&copts, &p->client)) != ES_OK) {
        open_msg(opts, "client options: %s", es_strerror(err));
        goto out_free;
    }

    if (mkdir(opts->dir, 0700) != 0 && errno != EEXIST) {
        open_msg(opts, "mkdir %s: %s", opts->dir, strerror(errno));
        err = ES_ERR_IO;
        goto out_destroy_client;
    }
    int rc = mdb_env_create(&p->env);
    if (rc != MDB_SUCCESS) {
        err = es_projector_err_from_mdb(rc);
        goto out_destroy_client;
    }
    unsigned int flags = MDB_NOTLS;
    if (opts->sync == ES_PROJECTOR_SYNC_META) {
        flags |= MDB_NOMETASYNC;
    } else if (opts->sync == ES_PROJECTOR_SYNC_NONE) {
        flags |= MDB_NOSYNC;
    }
    size_t map_size = opts->map_size ? opts->map_size : ES_PROJECTOR_DEFAULT_MAP_SIZE;
    if ((rc = mdb_env_set_maxdbs(p->env, (MDB_dbi)(opts->n_dbs + 1))) != MDB_SUCCESS ||
        (rc = mdb_env_set_mapsize(p->env, map_size)) != MDB_SUCCESS ||
        (rc = mdb_env_open(p->env, opts->dir, flags, 0600)) != MDB_SUCCESS) {
        open_msg(opts, "cannot open the LMDB environment %s: %s", opts->dir, mdb_strerror(rc));
        err = es_projector_err_from_mdb(rc);
        goto out_close_env;
    }
    int dead = 0;
    mdb_reader_check(p->env, &dead);

    MDB_txn *txn;
    if ((rc = mdb_txn_begin(p->env, NULL, 0, &txn)) != MDB_SUCCESS) {
        open_msg(opts, "cannot begin a transaction: %s", mdb_strerror(rc));
        err = es_projector_err_from_mdb(rc);
        goto out_close_env;
    }
    if ((rc = mdb_dbi_open(txn, ES_PROJECTOR_META_DB, MDB_CREATE, &p->meta)) != MDB_SUCCESS) {
        open_msg(opts, "cannot open the projector database: %s", mdb_strerror(rc));
        err = es_projector_err_from_mdb(rc);
        goto out_abort_txn;
    }
    if ((err = init_meta(p, txn, opts)) != ES_OK) {
        goto out_abort_txn;
    }
    for (size_t i = 0; i < opts->n_dbs; i++) {
        rc = mdb_dbi_open(txn, opts->dbs[i].name, opts->dbs[i].flags | MDB_CREATE, &p->dbs[i]);
        if (rc != MDB_SUCCESS) {
            open_msg(opts, "cannot open database %s: %s", opts->dbs[i].name, mdb_strerror(rc));
            err =
                rc == MDB_INCOMPATIBLE ? ES_ERR_INCOMPATIBLE_STORE : es_projector_err_from_mdb(rc);
            goto out_abort_txn;
        }
    }
    if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS) {
        open_msg(opts, "cannot commit: %s", mdb_strerror(rc));
        err = es_projector_err_from_mdb(rc);
        goto out_close_env;
    }
    *out = p;
    return ES_OK;

out_abort_txn:
    mdb_txn_abort(txn);
out_close_env:
    mdb_env_close(p->env);
out_destroy_client:
    es_client_destroy(p->client);
out_free:
    pnats_destroy(p->nats);
    free(p->name);
    pthread_mutex_destroy(&p->err_lock);
    free(p);
    return err;
}

void es_projector_destroy(es_projector *p)
{
    if (!p) {
        return;
    }
    es_sub_destroy(p->sub);
    pnats_destroy(p->nats);
    es_client_destroy(p->client);
    mdb_env_close(p->env);
    free(p->name);
    pthread_mutex_destroy(&p->err_lock);
    free(p);
}

MDB_env *es_projector_env(const es_projector *p)
{
    return p->env;
}

MDB_dbi es_projector_dbi(const es_projector *p, size_t index)
{
    return index < p->n_dbs ? p->dbs[index] : 0;
}

uint64_t es_projector_checkpoint(const es_projector *p, bool *has)
{
    if (has) {
        *has = atomic_load(&p->has_checkpoint);
    }
    return atomic_load(&p->checkpoint);
}

es_err es_projector_checkpoint_txn(const es_projector *p, MDB_txn *txn, uint64_t *last, bool *has)
{
    MDB_val k = key_of("checkpoint"), v;
    int rc = mdb_get(txn, p->meta, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == MDB_SUCCESS && v.mv_size != CHECKPOINT_BYTES)) {
        return ES_ERR_CORRUPT;
    }
    if (rc != MDB_SUCCESS) {
        return es_projector_err_from_mdb(rc);
    }
    const uint8_t *b = v.mv_data;
    *last = get_u64le(b);
    if (has) {
        *has = b[8] != 0;
    }
    return ES_OK;
}

/* ------------------------------------------------------------- applying -- */

/*
 * Checks before anything is written: skip what is at or below the
 * checkpoint, then require increasing numbers — consecutive ones where the
 * numbering is gapless.
 */
static es_err check_batch(es_projector *p, const es_recorded_event *events, size_t n, size_t *first)
{
    bool has = atomic_load(&p->has_checkpoint);
    uint64_t last = atomic_load(&p->checkpoint);
    size_t i = 0;
    while (has && i < n && event_key(p, &events[i]) <= last) {
        i++;
    }
    *first = i;
    for (; i < n; i++) {
        uint64_t k = event_key(p, &events[i]);
        if (gapless(p->target)) {
            uint64_t want = has ? last + 1 : (p->target == ES_SUB_STREAM ? 0 : 1);
            if (k != want) {
                set_error(p, ES_ERR_CORRUPT,
                          "gap: expected %s %" PRIu64 ", got %" PRIu64 " (batch refused)",
                          p->target == ES_SUB_STREAM ? "revision" : "position", want, k);
                return ES_ERR_CORRUPT;
            }
        } else if (has && k <= last) {
            set_error(p, ES_ERR_CORRUPT,
                      "positions not increasing: %" PRIu64 " after %" PRIu64 " (batch refused)", k,
                      last);
            return ES_ERR_CORRUPT;
        }
        last = k;
        has = true;
    }
    return ES_OK;
}

/* The data of a "$lifecycle" event: six u64 little-endian (flags: 1
 * tombstoned, 2 metadata set; metadata revision; deleted_before;
 * truncate_before; max_count; max_age_s), then the stream id. */
#define LIFECYCLE_STATE_BYTES 48u

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* One event: a lifecycle change to the lifecycle hook when there is one,
 * anything else to apply. */
static es_err apply_one(es_projector *p, MDB_txn *txn, const es_recorded_event *ev)
{
    if (!p->lifecycle || strcmp(ev->stream, "$lifecycle") != 0) {
        return p->apply(p->ctx, txn, ev);
    }
    char name[257];
    size_t len = ev->data_len - LIFECYCLE_STATE_BYTES;
    if (ev->data_len <= LIFECYCLE_STATE_BYTES || len >= sizeof name ||
        memchr(ev->data + LIFECYCLE_STATE_BYTES, 0, len)) {
        return ES_OK; /* not a change this library knows */
    }
    memcpy(name, ev->data + LIFECYCLE_STATE_BYTES, len);
    name[len] = 0;
    const uint8_t *d = ev->data;
    uint64_t flags = le64(d);
    es_projector_lifecycle ch = {
        .type = ev->type,
        .stream = name,
        .tombstoned = (flags & 1u) != 0,
        .metadata_set = (flags & 2u) != 0,
        .metadata_revision = le64(d + 8),
        .deleted_before = le64(d + 16),
        .truncate_before = le64(d + 24),
        .max_count = le64(d + 32),
        .max_age_s = le64(d + 40),
    };
    return p->lifecycle(p->ctx, txn, &ch, ev);
}

es_err es_projector_apply_batch(es_projector *p, const es_recorded_event *events, size_t n)
{
    if (!p || (n > 0 && !events)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    size_t first;
    es_err err = check_batch(p, events, n, &first);
    if (err != ES_OK) {
        atomic_fetch_add(&p->batches_failed, 1);
        return err;
    }
    atomic_fetch_add(&p->events_skipped, first);
    if (first == n) {
        return ES_OK;
    }

    MDB_txn *txn;
    int rc = mdb_txn_begin(p->env, NULL, 0, &txn);
    if (rc != MDB_SUCCESS) {
        set_error(p, es_projector_err_from_mdb(rc), "cannot begin a write transaction: %s",
                  mdb_strerror(rc));
        atomic_fetch_add(&p->batches_failed, 1);
        return es_projector_err_from_mdb(rc);
    }
    for (size_t i = first; i < n; i++) {
        err = apply_one(p, txn, &events[i]);
        if (err != ES_OK) {
            set_error(p, err, "apply failed at %s %" PRIu64 " (%s, %s): %s; batch not applied",
                      p->target == ES_SUB_STREAM ? "revision" : "position",
                      event_key(p, &events[i]), events[i].stream, events[i].type, es_strerror(err));
            goto out_abort_txn;
        }
    }
    uint64_t last = event_key(p, &events[n - 1]);
    if ((rc = put_checkpoint(p, txn, last, true)) != MDB_SUCCESS) {
        err = es_projector_err_from_mdb(rc);
        set_error(p, err, "cannot store the checkpoint: %s", mdb_strerror(rc));
        goto out_abort_txn;
    }
    /* mdb_txn_commit frees the transaction even when it fails. */
    if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS) {
        err = es_projector_err_from_mdb(rc);
        set_error(p, err, "commit failed: %s; batch not applied", mdb_strerror(rc));
        atomic_fetch_add(&p->batches_failed, 1);
        return err;
    }
    atomic_store(&p->checkpoint, last);
    atomic_store(&p->has_checkpoint, true);
    atomic_fetch_add(&p->events_applied, n - first);
    atomic_fetch_add(&p->batches_committed, 1);
    raise_head(p, p->target == ES_SUB_STREAM ? last + 1 : last);
    clear_error(p);
    return ES_OK;

out_abort_txn:
    mdb_txn_abort(txn);
    atomic_fetch_add(&p->batches_failed, 1);
    return err;
}

static void drop_subscription(es_projector *p)
{
    es_sub_destroy(p->sub);
    p->sub = NULL;
    if (p->nats) {
        pnats_reset(p->nats);
    }
    atomic_store(&p->connected, false);
    atomic_store(&p->caught_up, false);
}

es_err es_projector_rebuild(es_projector *p)
{
    drop_subscription(p);
    MDB_txn *txn;
    int rc = mdb_txn_begin(p->env, NULL, 0, &txn);
    if (rc != MDB_SUCCESS) {
        goto out_fail;
    }
    for (size_t i = 0; i < p->n_dbs; i++) {
        if ((rc = mdb_drop(txn, p->dbs[i], 0)) != MDB_SUCCESS) {
            goto out_abort_txn;
        }
    }
    MDB_val k = key_of("store_id");
    rc = mdb_del(txn, p->meta, &k, NULL);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        goto out_abort_txn;
    }
    if ((rc = put_checkpoint(p, txn, 0, false)) != MDB_SUCCESS) {
        goto out_abort_txn;
    }
    if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS) {
        goto out_fail;
    }
    atomic_store(&p->checkpoint, 0);
    atomic_store(&p->has_checkpoint, false);
    atomic_store(&p->scanned, 0);
    atomic_fetch_add(&p->rebuilds, 1);
    clear_error(p);
    return ES_OK;

out_abort_txn:
    mdb_txn_abort(txn);
out_fail:
    set_error(p, es_projector_err_from_mdb(rc), "rebuild failed: %s", mdb_strerror(rc));
    return es_projector_err_from_mdb(rc);
}

void es_projector_request_rebuild(es_projector *p)
{
    atomic_store(&p->rebuild_requested, true);
}

/* -------------------------------------------------------------- running -- */

static int on_batch(void *ctx, const es_recorded_event *events, size_t n)
{
    es_projector *p = ctx;
    p->batches_seen++;
    p->batch_err = es_projector_apply_batch(p, events, n);
    return p->batch_err != ES_OK;
}

static void on_caught_up(void *ctx, uint64_t position)
{
    es_projector *p = ctx;
    atomic_store(&p->caught_up, true);
    if (p->target != ES_SUB_STREAM) {
        uint64_t cur = atomic_load(&p->scanned);
        while (position > cur && !atomic_compare_exchange_weak(&p->scanned, &cur, position)) {
        }
        raise_head(p, position);
    }
}

/* The head, in the numbering of the checkpoint (revisions for a stream). */
static es_err refresh_head(es_projector *p)
{
    if (p->target == ES_SUB_STREAM) {
        es_stream_info info;
        es_err err = es_stream_info_get(p->client, p->name, &info);
        if (err == ES_OK) {
            raise_head(p, info.last_revision + 1);
        }
        return err == ES_ERR_NOT_FOUND ? ES_OK : err;
    }
    es_stats st;
    es_err err = es_stats_get(p->client, &st);
    if (err == ES_OK) {
        raise_head(p, st.head_position);
        p->refreshed_head = st.head_position;
    }
    return err;
}

/*
 * The server must be the store the read model was built from, and still
 * hold everything up to the checkpoint. The store id is recorded at the
 * first subscription (and forgotten by a rebuild).
 */
static es_err check_store(es_projector *p)
{
    es_server_info info;
    es_err err = es_client_server_info(p->client, &info);
    if (err != ES_OK || info.store_id_len != ES_UUID_BYTES) {
        return ES_OK; /* an old server that sends no id: nothing to compare */
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(p->env, NULL, 0, &txn);
    if (rc != MDB_SUCCESS) {
        goto out_fail;
    }
    MDB_val k = key_of("store_id"), v;
    rc = mdb_get(txn, p->meta, &k, &v);
    if (rc == MDB_SUCCESS) {
        bool same = v.mv_size == ES_UUID_BYTES && !memcmp(v.mv_data, info.store_id, ES_UUID_BYTES);
        mdb_txn_abort(txn);
        if (!same) {
            char id[ES_UUID_STRLEN + 1];
            es_uuid_format(info.store_id, id);
            set_error(p, ES_ERR_INCOMPATIBLE_STORE,
                      "the read model was built from another store than %s: rebuild it", id);
            return ES_ERR_INCOMPATIBLE_STORE;
        }
        return ES_OK;
    }
    if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        goto out_fail;
    }
    v = val_of(info.store_id, ES_UUID_BYTES);
    if ((rc = mdb_put(txn, p->meta, &k, &v, 0)) != MDB_SUCCESS) {
        mdb_txn_abort(txn);
        goto out_fail;
    }
    if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS) {
        goto out_fail;
    }
    return ES_OK;

out_fail:
    set_error(p, es_projector_err_from_mdb(rc), "cannot record the store id: %s", mdb_strerror(rc));
    return es_projector_err_from_mdb(rc);
}

/* The client's explanation of its last failure, or the code's message. */
static const char *reason(const es_projector *p, es_err err)
{
    const char *m = es_client_errmsg(p->client);
    return m && *m ? m : es_strerror(err);
}

static es_err subscribe_now(es_projector *p)
{
    es_err err = es_client_connect(p->client);
    if (err != ES_OK) {
        set_error(p, err, "connect: %s", reason(p, err));
        return err;
    }
    if ((err = check_store(p)) != ES_OK) {
        return err;
    }
    bool has = atomic_load(&p->has_checkpoint);
    uint64_t cp = atomic_load(&p->checkpoint);
    if ((err = refresh_head(p)) != ES_OK) {
        set_error(p, err, "head: %s", reason(p, err));
        return err;
    }
    p->head_refreshed_ms = now_ms();
    if (has && p->target != ES_SUB_STREAM && cp > atomic_load(&p->head)) {
        set_error(p, ES_ERR_INCOMPATIBLE_STORE,
                  "checkpoint %" PRIu64 " is beyond the server's head %" PRIu64
                  " (events lost on the server?): rebuild the read model",
                  cp, atomic_load(&p->head));
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    es_sub_options so = {
        .target = p->target,
        .name = p->name,
        .start = has ? ES_SUB_AFTER : ES_SUB_FROM_START,
        .after = has ? cp : 0,
        .batch_size = p->batch_size,
    };
    atomic_store(&p->caught_up, false);
    atomic_store(&p->scanned, has ? cp : 0);
    err = es_subscribe(p->client, &so, on_batch, on_caught_up, p, &p->sub);
    if (err != ES_OK) {
        p->sub = NULL;
        if (err == ES_ERR_INVALID_ARGUMENT && has) {
            set_error(p, ES_ERR_INCOMPATIBLE_STORE,
                      "the server refused to resume after %" PRIu64 " (%s): rebuild the read "
                      "model",
                      cp, reason(p, err));
            return ES_ERR_INCOMPATIBLE_STORE;
        }
        set_error(p, err, "subscribe: %s", reason(p, err));
        return err;
    }
    atomic_store(&p->connected, true);
    return ES_OK;
}

/* One step from JetStream: fetch after the checkpoint, apply, commit, and
 * only then acknowledge (projector_nats.h). */
static es_err step_nats(es_projector *p, int timeout_ms)
{
    bool has;
    uint64_t after = es_projector_checkpoint(p, &has);
    const es_recorded_event *evs = NULL;
    size_t n = 0;
    uint64_t scanned = 0, head = 0;
    char msg[256] = "";
    es_err err = pnats_fetch(p->nats, has ? after : 0, p->batch_size, timeout_ms, &evs, &n,
                             &scanned, &head, msg, sizeof msg);
    if (err != ES_OK) {
        atomic_store(&p->connected, false);
        atomic_store(&p->caught_up, false);
        set_error(p, err, "JetStream: %s", msg);
        return err;
    }
    atomic_store(&p->connected, true);
    raise_head(p, head);
    if (n > 0) {
        p->batches_seen++;
        err = es_projector_apply_batch(p, evs, n);
        if (err != ES_OK) {
            pnats_reset(p->nats); /* the batch comes again after the checkpoint */
            return err;
        }
    }
    if (scanned) {
        uint64_t cur = atomic_load(&p->scanned);
        while (scanned > cur && !atomic_compare_exchange_weak(&p->scanned, &cur, scanned)) {
        }
        pnats_ack(p->nats);
    }
    atomic_store(&p->caught_up, head != 0 ? scanned >= head : n == 0);
    clear_error(p);
    return ES_OK;
}

es_err es_projector_step(es_projector *p, int timeout_ms)
{
    bool refreshed = false;
    if (atomic_exchange(&p->rebuild_requested, false)) {
        es_err err = es_projector_rebuild(p);
        if (err != ES_OK) {
            return err;
        }
    }
    if (p->nats) {
        return step_nats(p, timeout_ms);
    }
    if (!p->sub) {
        es_err err = subscribe_now(p);
        if (err != ES_OK) {
            return err;
        }
    } else if (now_ms() - p->head_refreshed_ms >= (int64_t)p->head_refresh_ms) {
        /* Best effort: a failure shows up in the poll below. */
        if (refresh_head(p) == ES_OK) {
            p->head_refreshed_ms = now_ms();
            refreshed = true;
        }
    }
    uint64_t batches_before = p->batches_seen;
    p->batch_err = ES_OK;
    es_err err = es_sub_poll(p->sub, timeout_ms);
    switch (err) {
    case ES_OK:
        /*
         * Filtered and caught up, the head just read, then a quiet wait:
         * whatever matched up to that head has been delivered (live events
         * are pushed as they commit), so count the head as scanned. Only
         * the lag figure depends on this, never what is applied.
         */
        if (refreshed && timeout_ms > 0 && p->batches_seen == batches_before &&
            !gapless(p->target) && atomic_load(&p->caught_up)) {
            uint64_t cur = atomic_load(&p->scanned);
            while (p->refreshed_head > cur &&
                   !atomic_compare_exchange_weak(&p->scanned, &cur, p->refreshed_head)) {
            }
        }
        clear_error(p); /* the status shows the current health */
        return ES_OK;
    case ES_ERR_REFUSED:
        /* Our own refusal: resubscribe after the LMDB checkpoint. */
        drop_subscription(p);
        return p->batch_err != ES_OK ? p->batch_err : ES_ERR_INTERNAL;
    case ES_ERR_CLOSED:
    case ES_ERR_CONNECTION:
    case ES_ERR_CIRCUIT_OPEN:
    case ES_ERR_TIMEOUT:
    case ES_ERR_MALFORMED:
    case ES_ERR_NO_MEMORY:
        /* The library keeps the subscription and resumes it on the next poll. */
        atomic_store(&p->caught_up, false);
        set_error(p, err, "subscription: %s", reason(p, err));
        return err;
    default:
        set_error(p, err, "subscription dropped: %s", reason(p, err));
        drop_subscription(p);
        return err;
    }
}

static bool permanent(es_err err)
{
    switch (err) {
    case ES_ERR_INCOMPATIBLE_STORE:
    case ES_ERR_UNAUTHENTICATED:
    case ES_ERR_PERMISSION_DENIED:
    case ES_ERR_INVALID_ARGUMENT:
    case ES_ERR_INVALID_STREAM_ID:
    case ES_ERR_STORE_FULL:
    case ES_ERR_UNSUPPORTED_VERSION:
        return true;
    default:
        return false;
    }
}

/* Sleep up to ms, waking early when stopped. */
static void pause_ms(es_projector *p, uint32_t ms)
{
    int64_t end = now_ms() + ms;
    while (!atomic_load(&p->stop)) {
        int64_t left = end - now_ms();
        if (left <= 0) {
            break;
        }
        poll(NULL, 0, left > 50 ? 50 : (int)left);
    }
}

es_err es_projector_run(es_projector *p)
{
    uint32_t backoff = BACKOFF_MIN_MS;
    while (!atomic_load(&p->stop)) {
        es_err err = es_projector_step(p, RUN_POLL_MS);
        if (err == ES_OK) {
            backoff = BACKOFF_MIN_MS;
            continue;
        }
        if (permanent(err)) {
            return err;
        }
        pause_ms(p, (uint32_t)(rand_r(&p->seed) % (backoff + 1)));
        backoff = backoff >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : backoff * 2;
    }
    atomic_store(&p->stop, false);
    return ES_OK;
}

void es_projector_stop(es_projector *p)
{
    atomic_store(&p->stop, true);
}

void es_projector_status_get(const es_projector *p, es_projector_status *st)
{
    memset(st, 0, sizeof *st);
    st->checkpoint = atomic_load(&p->checkpoint);
    st->has_checkpoint = atomic_load(&p->has_checkpoint);
    st->head = atomic_load(&p->head);
    st->caught_up = atomic_load(&p->caught_up);
    st->connected = atomic_load(&p->connected);
    st->events_applied = atomic_load(&p->events_applied);
    st->events_skipped = atomic_load(&p->events_skipped);
    st->batches_committed = atomic_load(&p->batches_committed);
    st->batches_failed = atomic_load(&p->batches_failed);
    st->rebuilds = atomic_load(&p->rebuilds);
    uint64_t done;
    if (p->target == ES_SUB_STREAM) {
        /* Counted in events: head is the stream's last revision + 1. */
        done = st->has_checkpoint ? st->checkpoint + 1 : 0;
    } else {
        done = st->has_checkpoint ? st->checkpoint : 0;
        if (!gapless(p->target)) {
            done = max_u64(done, atomic_load(&p->scanned));
        }
    }
    st->lag = st->head > done ? st->head - done : 0;
    pthread_mutex_t *lock = (pthread_mutex_t *)&p->err_lock;
    pthread_mutex_lock(lock);
    st->last_error = p->last_error;
    memcpy(st->last_error_msg, p->last_error_msg, sizeof st->last_error_msg);
    pthread_mutex_unlock(lock);
}

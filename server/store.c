/*
 * store.c — the event log engine on LMDB.
 *
 * Design notes
 * ============
 *
 * One LMDB environment per data directory, named databases inside it. The
 * writer thread is the only one that opens write transactions; readers open
 * a short read-only transaction inside each call and close it before
 * returning (MDB_NOTLS, so any thread may read, and nothing is held across a
 * return to the event loop). No MDB_WRITEMAP: with it a full disk is a
 * SIGBUS instead of an error. `sync = false` sets MDB_NOSYNC, and every
 * acknowledgement says so (store_request.synced). A directory refused as
 * INCOMPATIBLE_STORE is left as it was found: a lock.mdb that the failed
 * open created is removed again.
 *
 * Key layout (all integers in keys are big-endian so that memcmp order is
 * numeric order; values are little-endian):
 *
 *   meta        "magic"       -> "esd-store" (9 bytes)
 *               "format"      -> u32      STORE_FORMAT_VERSION
 *               "store_id"    -> 16 bytes random
 *               "created_us"  -> u64
 *               "next_stream" -> u64      next interned stream number
 *
 *   events      +-------------------+      +----+-----+--------+----------+======================+
 *               | position  u64 BE  |  ->  | ver|flags|reserved|crc32c LE | es.v1.RecordedEvent  |
 *               +-------------------+      | u8 | u8  |  u16   |   u32    | (packed, wire bytes) |
 *                                          +----+-----+--------+----------+======================+
 *               Positions start at 1 and are gapless: one writer, one
 *               position per event, assigned inside the write transaction.
 *               The CRC covers the packed record; reads verify it and never
 *               hand out a record that fails. The record is the wire
 *               encoding, so a read copies it straight into a reply.
 *
 *   streams     stream id (1..256 bytes) -> stream record, 32 bytes:
 *               number u64 | first_pos u64 | created_us u64 | flags u64
 *               (number = interned id used below; flags 0). Written once,
 *               when the stream is created: the count, last revision and
 *               last position are read from the stream's last stream_revs
 *               entry, the updated time from that event's record. So an
 *               append to an existing stream dirties one random leaf page
 *               (its stream_revs page), not two: with random streams the
 *               bytes written per commit fell by a third (format 2).
 *
 *   stream_revs +------------------+-----------------+      +----------------+
 *               | stream no u64 BE | revision u64 BE |  ->  | position u64 BE|
 *               +------------------+-----------------+      +----------------+
 *               Fixed 16-byte keys: no prefix collisions between streams,
 *               and revision 255 sorts before 256 (big-endian).
 *
 *   event_ids   event id (16) -> stream no u64 BE | revision u64 BE | position u64 BE
 *               Permanent idempotency: a retried append is recognised by
 *               its ids forever, not for a time window.
 *
 *   categories  category bytes | 0x00 | position u64 BE -> (empty)
 *               (the category of "-x" is empty: its key starts with 0x00)
 *   types       event type bytes | 0x00 | position u64 BE -> (empty)
 *               Names never contain NUL (validate.h), so the 0x00 separator
 *               makes "acc" and "account" distinct ranges; filtered reads
 *               walk one range and never scan the log.
 *
 *   snapshots   stream id -> crc32c u32 | state_format u32 | revision u64 |
 *               saved_at_us u64 | data     (CRC over everything after it)
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
 * Imports (a follower, esd --follow-nats): store_import_batch writes
 * records that a primary already positioned, byte for byte, in one write
 * transaction per batch, all or nothing. The same indexes are written as
 * by an append; the checks differ: position must be head + 1, revision the
 * stream's next one, the event id new. A store opened as a follower
 * refuses appends and snapshot saves (ES_ERR_FOLLOWER), so its importing
 * thread is its only writer.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "crc32c.h"
#include "pbwire.h"
#include "validate.h"

#define STORE_MAGIC              "esd-store"
#define STORE_MAGIC_LEN          9
#define RECORD_HEADER_BYTES      8
#define RECORD_VERSION           1
#define STREAM_RECORD_BYTES      32
#define SNAPSHOT_HEADER_BYTES    24
#define STORE_MAX_SNAPSHOT_BYTES (16u * 1024u * 1024u)
#define CHECK_LOG_MAX_LINES      50

struct store {
    MDB_env *env;
    MDB_dbi meta, events, streams, stream_revs, event_ids, categories, types, snapshots;
    bool sync;
    bool read_only;
    bool follower;
    uint32_t max_events_per_append;
    uint32_t max_event_bytes;
    uint8_t id[STORE_ID_BYTES];
    uint32_t format;
    uint64_t created_us;
    _Atomic uint64_t head;        /* last committed position */
    uint64_t last_commit_call_us; /* writer thread: time in mdb_txn_commit */
};

/* ------------------------------------------------------------ utilities -- */

static es_err map_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return ES_OK;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG: /* the file may not grow (file system or RLIMIT_FSIZE limit) */
        return ES_ERR_STORE_FULL;
    case MDB_NOTFOUND:
        return ES_ERR_NOT_FOUND;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return ES_ERR_CORRUPT;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
        return ES_ERR_INCOMPATIBLE_STORE;
    case MDB_TXN_FULL:
    case MDB_BAD_VALSIZE:
        return ES_ERR_TOO_LARGE;
    case ENOMEM:
        return ES_ERR_NO_MEMORY;
    case MDB_READERS_FULL:
        return ES_ERR_BUSY;
    default:
        return ES_ERR_IO;
    }
}

/*
 * The outcome of a failed mdb_txn_commit. LMDB reports a short write -- the
 * file system filled up in the middle of writing the pages -- as EIO ("short
 * write, filesystem full?"), and a full disk usually shows up that way
 * rather than as ENOSPC. Tell it from other I/O errors by asking what room
 * is left: under 1 MiB free on the file system, or the file within 1 MiB of
 * the process's file-size limit, is a full store.
 */
#define FULL_MARGIN_BYTES (1u << 20)

static es_err commit_err(const store *s, int rc)
{
    if (rc != EIO) {
        return map_err(rc);
    }
    int fd;
    struct stat st;
    struct statvfs vfs;
    struct rlimit rl;
    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0) {
        return ES_ERR_IO;
    }
    if (fstatvfs(fd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < FULL_MARGIN_BYTES) {
        return ES_ERR_STORE_FULL;
    }
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)st.st_size + FULL_MARGIN_BYTES > (uint64_t)rl.rlim_cur) {
        return ES_ERR_STORE_FULL;
    }
    return ES_ERR_IO;
}

uint64_t store_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

__attribute__((format(printf, 3, 4))) static void set_msg(char *msg, size_t msg_len,
                                                          const char *fmt, ...)
{
    if (msg && msg_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msg_len, fmt, ap);
        va_end(ap);
    }
}

/* Stream record <-> struct (the fields written at creation). */
static void stream_encode(uint8_t out[STREAM_RECORD_BYTES], const store_stream_info *si)
{
    put_u64le(out, si->number);
    put_u64le(out + 8, si->first_position);
    put_u64le(out + 16, si->created_us);
    put_u64le(out + 24, 0);
}

static es_err stream_decode(const MDB_val *v, store_stream_info *si)
{
    if (v->mv_size != STREAM_RECORD_BYTES) {
        return ES_ERR_CORRUPT;
    }
    const uint8_t *p = v->mv_data;
    memset(si, 0, sizeof *si);
    si->number = get_u64le(p);
    si->first_position = get_u64le(p + 8);
    si->created_us = get_u64le(p + 16);
    return ES_OK;
}

/* Fill a decoded stream's count, last revision and last position from the
 * last stream_revs entry of its number (a stream has at least one event). */
static es_err stream_tail(MDB_txn *txn, const store *s, store_stream_info *si)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->stream_revs, &cur);
    if (rc) {
        return map_err(rc);
    }
    uint8_t key[16];
    put_u64be(key, si->number);
    put_u64be(key + 8, UINT64_MAX); /* past every revision of the stream */
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    } else if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    es_err rv = ES_OK;
    if (rc != MDB_SUCCESS) {
        rv = rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : map_err(rc);
    } else if (k.mv_size != 16 || v.mv_size != 8 || get_u64be(k.mv_data) != si->number) {
        rv = ES_ERR_CORRUPT; /* a stream record without index entries */
    } else {
        si->last_revision = get_u64be((const uint8_t *)k.mv_data + 8);
        si->event_count = si->last_revision + 1;
        si->last_position = get_u64be(v.mv_data);
    }
    mdb_cursor_close(cur);
    return rv;
}

static es_err record_open(const MDB_val *v, const uint8_t **payload, size_t *len);

/* A stream's record and tail (count, last revision, last position). */
static es_err stream_lookup(MDB_txn *txn, const store *s, const uint8_t *stream, size_t len,
                            store_stream_info *si)
{
    MDB_val k = {len, (void *)stream};
    MDB_val v;
    int rc = mdb_get(txn, s->streams, &k, &v);
    if (rc != MDB_SUCCESS) {
        return map_err(rc);
    }
    es_err rv = stream_decode(&v, si);
    return rv == ES_OK ? stream_tail(txn, s, si) : rv;
}

/* updated_us of a stream whose tail is known: the recorded time of its
 * last event (field 11 of the record). */
static es_err stream_updated(MDB_txn *txn, const store *s, store_stream_info *si)
{
    uint8_t key[8];
    put_u64be(key, si->last_position);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, s->events, &k, &v);
    if (rc != MDB_SUCCESS) {
        return rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : map_err(rc);
    }
    const uint8_t *rec;
    size_t len;
    es_err rv = record_open(&v, &rec, &len);
    if (rv == ES_OK) {
        si->updated_us = 0;
        pbw_find_varint(rec, len, 11, &si->updated_us);
    }
    return rv;
}

/* Verify a stored record's header and CRC; on success point at the payload. */
static es_err record_open(const MDB_val *v, const uint8_t **payload, size_t *len)
{
    if (v->mv_size < RECORD_HEADER_BYTES) {
        return ES_ERR_CORRUPT;
    }
    const uint8_t *p = v->mv_data;
    if (p[0] != RECORD_VERSION) {
        return ES_ERR_CORRUPT;
    }
    size_t n = v->mv_size - RECORD_HEADER_BYTES;
    if (crc32c(0, p + RECORD_HEADER_BYTES, n) != get_u32le(p + 4)) {
        return ES_ERR_CORRUPT;
    }
    *payload = p + RECORD_HEADER_BYTES;
    *len = n;
    return ES_OK;
}

/* ------------------------------------------------------------ open/close -- */

static es_err check_directory(const char *path, bool read_only, char *msg, size_t msg_len)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT) {
            set_msg(msg, msg_len, "cannot stat %s: %s", path, strerror(errno));
            return ES_ERR_IO;
        }
        if (read_only) {
            set_msg(msg, msg_len, "%s: %s", path, "no such directory");
            return ES_ERR_NOT_FOUND;
        }
        if (mkdir(path, 0700) != 0) {
            set_msg(msg, msg_len, "cannot create %s: %s", path, strerror(errno));
            return ES_ERR_IO;
        }
        return ES_OK;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_msg(msg, msg_len, "%s: %s", path, "not a directory");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    DIR *d = opendir(path);
    if (!d) {
        set_msg(msg, msg_len, "cannot open %s: %s", path, strerror(errno));
        return ES_ERR_IO;
    }
    bool has_data = false;
    bool foreign = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, "lock.mdb")) {
            continue;
        }
        if (!strcmp(de->d_name, "data.mdb")) {
            has_data = true;
        } else {
            foreign = true;
        }
    }
    closedir(d);
    if (!has_data && foreign) {
        set_msg(msg, msg_len, "%s: %s", path,
                "directory is not empty and holds no esd store; refusing to use it");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (!has_data && read_only) {
        set_msg(msg, msg_len, "%s: %s", path, "no esd store here");
        return ES_ERR_NOT_FOUND;
    }
    if (has_data) {
        /* LMDB would take an empty data.mdb for a new environment: a store
         * truncated to nothing would come back empty, with a new store id,
         * and hand out positions from 1 again. */
        char data_path[4096];
        int n = snprintf(data_path, sizeof data_path, "%s/data.mdb", path);
        if (n > 0 && (size_t)n < sizeof data_path && stat(data_path, &st) == 0 && st.st_size == 0) {
            set_msg(msg, msg_len, "%s: %s", path,
                    "data.mdb is empty (truncated?); refusing to create a new store over it");
            return ES_ERR_INCOMPATIBLE_STORE;
        }
    }
    return ES_OK;
}

static int meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    return mdb_get(txn, dbi, &k, v);
}

static int meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t len)
{
    MDB_val k = {strlen(key), (void *)key};
    MDB_val v = {len, (void *)data};
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int meta_init(store *s, MDB_txn *txn)
{
    uint32_t format = STORE_FORMAT_VERSION;
    uint8_t fbuf[4], cbuf[8], nbuf[8];
    put_u32le(fbuf, format);
    s->created_us = store_now_us();
    put_u64le(cbuf, s->created_us);
    put_u64le(nbuf, 1);
    if (getrandom(s->id, sizeof s->id, 0) != (ssize_t)sizeof s->id) {
        return EIO;
    }
    s->format = format;
    int rc = meta_put(txn, s->meta, "magic", STORE_MAGIC, STORE_MAGIC_LEN);
    if (!rc) {
        rc = meta_put(txn, s->meta, "format", fbuf, 4);
    }
    if (!rc) {
        rc = meta_put(txn, s->meta, "store_id", s->id, STORE_ID_BYTES);
    }
    if (!rc) {
        rc = meta_put(txn, s->meta, "created_us", cbuf, 8);
    }
    if (!rc) {
        rc = meta_put(txn, s->meta, "next_stream", nbuf, 8);
    }
    return rc;
}

static es_err meta_load(store *s, MDB_txn *txn, char *msg, size_t msg_len, const char *path)
{
    MDB_val v;
    if (meta_get(txn, s->meta, "magic", &v) != 0 || v.mv_size != STORE_MAGIC_LEN ||
        memcmp(v.mv_data, STORE_MAGIC, STORE_MAGIC_LEN) != 0) {
        set_msg(msg, msg_len, "%s: %s", path, "not an esd store (no esd meta record)");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (meta_get(txn, s->meta, "format", &v) != 0 || v.mv_size != 4) {
        set_msg(msg, msg_len, "%s: %s", path, "esd meta record without a format version");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    s->format = get_u32le(v.mv_data);
    if (s->format != STORE_FORMAT_VERSION) {
        set_msg(msg, msg_len, "%s: store format %u, this esd reads format %u", path, s->format,
                STORE_FORMAT_VERSION);
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (meta_get(txn, s->meta, "store_id", &v) != 0 || v.mv_size != STORE_ID_BYTES) {
        set_msg(msg, msg_len, "%s: %s", path, "esd meta record without a store id");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    memcpy(s->id, v.mv_data, STORE_ID_BYTES);
    if (meta_get(txn, s->meta, "created_us", &v) == 0 && v.mv_size == 8) {
        s->created_us = get_u64le(v.mv_data);
    }
    return ES_OK;
}

static int open_dbis(store *s, MDB_txn *txn, unsigned flags)
{
    struct {
        const char *name;
        MDB_dbi *dbi;
    } t[] = {
        {"events", &s->events},           {"streams", &s->streams},
        {"stream_revs", &s->stream_revs}, {"event_ids", &s->event_ids},
        {"categories", &s->categories},   {"types", &s->types},
        {"snapshots", &s->snapshots},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int rc = mdb_dbi_open(txn, t[i].name, flags, t[i].dbi);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static uint64_t last_position(MDB_txn *txn, MDB_dbi events)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t head = 0;
    if (mdb_cursor_open(txn, events, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
            head = get_u64be(k.mv_data);
        }
        mdb_cursor_close(cur);
    }
    return head;
}

/*
 * A data file shorter than the pages its meta page says are in use (a
 * truncated copy, a disk that lost the tail) would be a SIGBUS at the first
 * read of a missing page: refuse it before any read. The meta page is read
 * first, the file size after it, so a writer growing the file meanwhile
 * cannot make a sound file look short.
 */
static es_err check_file_size(MDB_env *env, const char *path, char *msg, size_t msg_len)
{
    MDB_envinfo info;
    MDB_stat est;
    int fd;
    struct stat st;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &est) != 0 ||
        mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &st) != 0) {
        set_msg(msg, msg_len, "%s: %s", path, "cannot read the size of the data file");
        return ES_ERR_IO;
    }
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
    if ((uint64_t)st.st_size < need) {
        set_msg(msg, msg_len, "%s: data file is %llu bytes, its pages need %llu: truncated", path,
                (unsigned long long)st.st_size, (unsigned long long)need);
        return ES_ERR_CORRUPT;
    }
    return ES_OK;
}

/*
 * LMDB has no page checksums: a damaged B-tree page is found by its
 * internal assertions, which abort() after calling this hook. The record
 * CRC catches damage inside records; this turns damage in LMDB's own pages
 * into a clear message and a distinct exit status instead of a crash. The
 * process cannot go on: LMDB's state is undefined after the assertion.
 */
static _Thread_local sigjmp_buf *read_guard;
static _Thread_local bool in_visitor; /* caller code runs: faults are not LMDB's */

static void on_lmdb_assert(MDB_env *env, const char *msg)
{
    (void)env;
    if (read_guard) {
        sigjmp_buf *jb = read_guard;
        read_guard = NULL;
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

/*
 * A damaged page can also point LMDB outside the file, and reading the map
 * there raises SIGBUS (past the end of the file) or SIGSEGV. During a
 * guarded read, outside the caller's visitor, such a fault is the damaged
 * file's: the handler jumps back to the guard like an assertion does. Any
 * other fault gets the default action, so real bugs still crash loudly.
 */
static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (read_guard && !in_visitor) {
        sigjmp_buf *jb = read_guard;
        read_guard = NULL;
        siglongjmp(*jb, 2);
    }
    signal(sig, SIG_DFL); /* returning re-runs the access: default action */
}

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

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

es_err store_open(const store_options *opts, store **out, char *msg, size_t msg_len)
{
    *out = NULL;
    if (!opts || !opts->path) {
        set_msg(msg, msg_len, "%s%s", "no data directory given", "");
        return ES_ERR_INVALID_ARGUMENT;
    }
    pthread_once(&fault_once, install_fault_handlers);
    es_err rv = check_directory(opts->path, opts->read_only, msg, msg_len);
    if (rv != ES_OK) {
        return rv;
    }
    store *s = calloc(1, sizeof *s);
    if (!s) {
        return ES_ERR_NO_MEMORY;
    }
    s->sync = opts->sync;
    s->read_only = opts->read_only;
    s->follower = opts->follower;
    s->max_events_per_append = opts->max_events_per_append ? opts->max_events_per_append
                                                           : STORE_DEFAULT_MAX_EVENTS_PER_APPEND;
    s->max_event_bytes =
        opts->max_event_bytes ? opts->max_event_bytes : STORE_DEFAULT_MAX_EVENT_BYTES;

    /* LMDB creates lock.mdb on open, also when it then refuses the data
     * file: remember whether it was there, so that a refused directory is
     * left as it was found. */
    char lock_path[4096];
    int lp_len = snprintf(lock_path, sizeof lock_path, "%s/lock.mdb", opts->path);
    bool lock_created = lp_len > 0 && (size_t)lp_len < sizeof lock_path &&
                        access(lock_path, F_OK) != 0 && errno == ENOENT;
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (opts->read_only) {
        flags |= MDB_RDONLY;
    } else if (!opts->sync) {
        flags |= MDB_NOSYNC;
    }
    /* The default map is large address space, not disk. Where the process
     * may not reserve that much (an address-space rlimit, ThreadSanitizer's
     * memory layout: ENOMEM; valgrind: EINVAL), the default halves down to 1 GiB; the size in use
     * is in store_stats. An explicit map_size is used as given or fails. */
    uint64_t map_size = opts->map_size;
    bool default_size = map_size == 0;
    if (default_size) {
        map_size = sizeof(size_t) >= 8 ? STORE_DEFAULT_MAP_SIZE_64 : STORE_DEFAULT_MAP_SIZE_32;
    }
    int rc;
    for (;;) {
        rc = mdb_env_create(&s->env);
        if (rc) {
            free(s);
            return map_err(rc);
        }
        mdb_env_set_mapsize(s->env, (size_t)map_size);
        mdb_env_set_maxdbs(s->env, 16);
        mdb_env_set_assert(s->env, on_lmdb_assert);
        if (opts->max_readers) {
            mdb_env_set_maxreaders(s->env, opts->max_readers);
        }
        rc = mdb_env_open(s->env, opts->path, flags, 0600);
        if ((rc == ENOMEM || rc == EINVAL) && default_size && map_size > (1ull << 30)) {
            mdb_env_close(s->env);
            s->env = NULL;
            map_size /= 2;
            continue;
        }
        break;
    }
    if (rc) {
        rv = map_err(rc);
        set_msg(msg, msg_len, "cannot open the store in %s: %s", opts->path, mdb_strerror(rc));
        goto out_close_env;
    }
    rv = check_file_size(s->env, opts->path, msg, msg_len);
    if (rv != ES_OK) {
        goto out_close_env;
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead);

    MDB_txn *txn;
    rc = mdb_txn_begin(s->env, NULL, opts->read_only ? MDB_RDONLY : 0, &txn);
    if (rc) {
        rv = map_err(rc);
        set_msg(msg, msg_len, "cannot read the store in %s: %s", opts->path, mdb_strerror(rc));
        goto out_close_env;
    }
    rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
    if (rc == MDB_NOTFOUND && !opts->read_only) {
        /* Only a brand-new, empty environment may be initialised. */
        MDB_stat mst;
        MDB_dbi main_dbi;
        if (mdb_dbi_open(txn, NULL, 0, &main_dbi) != 0 || mdb_stat(txn, main_dbi, &mst) != 0 ||
            mst.ms_entries != 0) {
            set_msg(msg, msg_len, "%s: %s", opts->path,
                    "an LMDB environment that is not an esd store; refusing to use it");
            rv = ES_ERR_INCOMPATIBLE_STORE;
            goto out_abort_txn;
        }
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
        if (!rc) {
            rc = meta_init(s, txn);
        }
        if (!rc) {
            rc = open_dbis(s, txn, MDB_CREATE);
        }
        if (rc) {
            rv = map_err(rc);
            set_msg(msg, msg_len, "cannot initialise the store in %s: %s", opts->path,
                    mdb_strerror(rc));
            goto out_abort_txn;
        }
    } else if (rc) {
        rv = rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE ? ES_ERR_INCOMPATIBLE_STORE : map_err(rc);
        set_msg(msg, msg_len, "%s: %s", opts->path, "not an esd store (no meta database)");
        goto out_abort_txn;
    } else {
        rv = meta_load(s, txn, msg, msg_len, opts->path);
        if (rv != ES_OK) {
            goto out_abort_txn;
        }
        rc = open_dbis(s, txn, opts->read_only ? 0 : MDB_CREATE);
        if (rc) {
            rv = rc == MDB_NOTFOUND ? ES_ERR_INCOMPATIBLE_STORE : map_err(rc);
            set_msg(msg, msg_len, "%s: %s", opts->path, "esd store with missing databases");
            goto out_abort_txn;
        }
    }
    atomic_store(&s->head, last_position(txn, s->events));
    rc = mdb_txn_commit(txn);
    if (rc) {
        rv = map_err(rc);
        set_msg(msg, msg_len, "cannot open the store in %s: %s", opts->path, mdb_strerror(rc));
        goto out_close_env;
    }
    *out = s;
    return ES_OK;

out_abort_txn:
    mdb_txn_abort(txn);
out_close_env:
    mdb_env_close(s->env);
    if (rv == ES_ERR_INCOMPATIBLE_STORE && lock_created) {
        unlink(lock_path); /* ours: nothing else can have used a foreign dir */
    }
    free(s);
    return rv;
}

void store_close(store *s)
{
    if (!s) {
        return;
    }
    mdb_env_close(s->env);
    free(s);
}

uint64_t store_head(store *s)
{
    return atomic_load(&s->head);
}

const uint8_t *store_id(const store *s)
{
    return s->id;
}

int store_reader_check(store *s)
{
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    return dead;
}

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
} batch_state;

/* State of one append found by the check phase. */
typedef struct append_plan {
    bool exists;
    store_stream_info si;
} append_plan;

/*
 * Idempotency: are the append's ids already stored?
 * @return ES_OK with *dup = false (none stored) or true (all stored in this
 *   stream at consecutive revisions: result filled); ES_ERR_IDEMPOTENCY_CONFLICT;
 *   other errors from LMDB.
 */
static es_err check_idempotency(store *s, batch_state *b, const store_append_in *a,
                                const append_plan *plan, bool *dup, store_append_result *res)
{
    *dup = false;
    size_t found = 0;
    uint64_t first_rev = 0;
    for (size_t i = 0; i < a->n_events; i++) {
        MDB_val k = {ES_EVENT_ID_BYTES, (void *)a->events[i].id};
        MDB_val v;
        int rc = mdb_get(b->txn, s->event_ids, &k, &v);
        if (rc == MDB_NOTFOUND) {
            continue;
        }
        if (rc) {
            return map_err(rc);
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
        if (found != i) {
            return ES_ERR_IDEMPOTENCY_CONFLICT; /* an earlier id was not stored */
        }
        if (i == 0) {
            first_rev = rev;
            res->first_position = pos;
        } else if (rev != first_rev + i) {
            return ES_ERR_IDEMPOTENCY_CONFLICT;
        }
        res->last_position = pos;
        found++;
    }
    if (found == 0) {
        return ES_OK;
    }
    if (found != a->n_events) {
        return ES_ERR_IDEMPOTENCY_CONFLICT;
    }
    *dup = true;
    res->first_revision = first_rev;
    res->last_revision = first_rev + a->n_events - 1;
    res->duplicate = true;
    return ES_OK;
}

static bool expectation_holds(const store_append_in *a, const append_plan *p)
{
    switch (a->expect) {
    case STORE_EXPECT_ANY:
        return true;
    case STORE_EXPECT_NO_STREAM:
        return !p->exists;
    case STORE_EXPECT_STREAM_EXISTS:
        return p->exists;
    case STORE_EXPECT_EXACT:
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

static size_t record_size(const store_append_in *a, const store_event_in *e, uint64_t rev,
                          uint64_t pos, uint64_t now)
{
    return len_field(1, a->stream_len) + varint_field(2, rev) + varint_field(3, pos) +
           len_field(4, ES_EVENT_ID_BYTES) + len_field(5, e->type_len) + len_field(6, e->data_len) +
           len_field(7, e->metadata_len) + len_field(8, e->content_type_len) +
           len_field(9, e->correlation_id_len) + len_field(10, e->causation_id_len) +
           varint_field(11, now);
}

static size_t record_write(uint8_t *p, const store_append_in *a, const store_event_in *e,
                           uint64_t rev, uint64_t pos, uint64_t now)
{
    size_t n = 0;
    n += put_len_field(p + n, 1, a->stream, a->stream_len);
    n += put_varint_field(p + n, 2, rev);
    n += put_varint_field(p + n, 3, pos);
    n += put_len_field(p + n, 4, e->id, ES_EVENT_ID_BYTES);
    n += put_len_field(p + n, 5, e->type, e->type_len);
    n += put_len_field(p + n, 6, e->data, e->data_len);
    n += put_len_field(p + n, 7, e->metadata, e->metadata_len);
    n += put_len_field(p + n, 8, e->content_type, e->content_type_len);
    n += put_len_field(p + n, 9, e->correlation_id, e->correlation_id_len);
    n += put_len_field(p + n, 10, e->causation_id, e->causation_id_len);
    n += put_varint_field(p + n, 11, now);
    return n;
}

/* name | 0x00 | position BE, for the category and type indexes. */
static size_t name_pos_key(uint8_t *key, const uint8_t *name, size_t len, uint64_t pos)
{
    memcpy(key, name, len);
    key[len] = 0;
    put_u64be(key + len + 1, pos);
    return len + 9;
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
    uint8_t key[ES_MAX_NAME_BYTES + 9];
    uint8_t val[24];
    size_t cat_len = es_category_len(a->stream, a->stream_len);
    for (size_t i = 0; i < a->n_events; i++) {
        const store_event_in *e = &a->events[i];
        uint64_t rev = first_rev + i;
        uint64_t pos = b->next_position++;
        uint8_t pkey[8];
        put_u64be(pkey, pos);
        size_t plen = record_size(a, e, rev, pos, b->now_us);
        MDB_val k = {8, pkey};
        MDB_val v = {RECORD_HEADER_BYTES + plen, NULL};
        rc = mdb_put(b->txn, s->events, &k, &v, MDB_APPEND | MDB_RESERVE);
        if (rc) {
            return rc;
        }
        uint8_t *rec = v.mv_data;
        size_t written = record_write(rec + RECORD_HEADER_BYTES, a, e, rev, pos, b->now_us);
        if (written != plen) {
            return EIO;
        }
        rec[0] = RECORD_VERSION;
        rec[1] = 0;
        rec[2] = rec[3] = 0;
        put_u32le(rec + 4, crc32c(0, rec + RECORD_HEADER_BYTES, plen));

        /* stream_revs */
        put_u64be(key, si->number);
        put_u64be(key + 8, rev);
        MDB_val rk = {16, key};
        MDB_val rv = {8, pkey};
        rc = mdb_put(b->txn, s->stream_revs, &rk, &rv, 0);
        if (rc) {
            return rc;
        }
        /* event_ids */
        put_u64be(val, si->number);
        put_u64be(val + 8, rev);
        put_u64be(val + 16, pos);
        MDB_val ik = {ES_EVENT_ID_BYTES, (void *)e->id};
        MDB_val iv = {24, val};
        rc = mdb_put(b->txn, s->event_ids, &ik, &iv, 0);
        if (rc) {
            return rc;
        }
        /* categories, types */
        MDB_val empty = {0, NULL};
        MDB_val ck = {name_pos_key(key, a->stream, cat_len, pos), key};
        rc = mdb_put(b->txn, s->categories, &ck, &empty, 0);
        if (rc) {
            return rc;
        }
        MDB_val tk = {name_pos_key(key, e->type, e->type_len, pos), key};
        rc = mdb_put(b->txn, s->types, &tk, &empty, 0);
        if (rc) {
            return rc;
        }
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
        stream_encode(sbuf, si);
        MDB_val sk = {a->stream_len, (void *)a->stream};
        MDB_val sv = {STREAM_RECORD_BYTES, sbuf};
        rc = mdb_put(b->txn, s->streams, &sk, &sv, 0);
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
        es_err lrv = stream_lookup(b->txn, s, a->stream, a->stream_len, &plans[i].si);
        if (lrv == ES_ERR_NOT_FOUND) {
            plans[i].exists = false;
        } else if (lrv != ES_OK) {
            rv = lrv;
            break;
        } else {
            plans[i].exists = true;
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
            res->actual_exists = plans[i].exists;
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

es_err store_append_batch(store *s, store_request *reqs, size_t n_reqs)
{
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
    /* Requests excluded by an earlier attempt keep rv = STORE_FULL or
     * TOO_LARGE and are skipped; every other request is redone from scratch. */
    for (;;) {
        batch_state b = {0};
        int rc = mdb_txn_begin(s->env, NULL, 0, &b.txn);
        if (rc) {
            fail_all(reqs, n_reqs, map_err(rc));
            return map_err(rc);
        }
        MDB_val v;
        rc = meta_get(b.txn, s->meta, "next_stream", &v);
        if (rc || v.mv_size != 8) {
            mdb_txn_abort(b.txn);
            fail_all(reqs, n_reqs, rc ? map_err(rc) : ES_ERR_CORRUPT);
            return rc ? map_err(rc) : ES_ERR_CORRUPT;
        }
        b.next_stream = get_u64le(v.mv_data);
        b.next_position = last_position(b.txn, s->events) + 1;
        b.now_us = store_now_us();

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
            rc = meta_put(b.txn, s->meta, "next_stream", nbuf, 8);
            if (rc) {
                mdb_txn_abort(b.txn);
                fail_all(reqs, n_reqs, map_err(rc));
                return map_err(rc);
            }
        }
        if (poisoned < n_reqs) {
            mdb_txn_abort(b.txn);
            es_err prv = map_err(rc);
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
        uint64_t head = b.next_position - 1;
        struct timespec c0, c1;
        clock_gettime(CLOCK_MONOTONIC, &c0);
        rc = mdb_txn_commit(b.txn); /* frees the txn, also on failure */
        clock_gettime(CLOCK_MONOTONIC, &c1);
        s->last_commit_call_us = (uint64_t)(c1.tv_sec - c0.tv_sec) * 1000000u +
                                 (uint64_t)(c1.tv_nsec / 1000) - (uint64_t)(c0.tv_nsec / 1000);
        if (rc) {
            for (size_t i = 0; i < n_reqs; i++) {
                reqs[i].rv = ES_OK; /* so that fail_all overwrites every outcome */
            }
            es_err crv = commit_err(s, rc);
            fail_all(reqs, n_reqs, crv);
            return crv;
        }
        atomic_store(&s->head, head);
        for (size_t i = 0; i < n_reqs; i++) {
            reqs[i].synced = s->sync;
        }
        return ES_OK;
    }
}

/* --------------------------------------------------------------- imports -- */

/* The fields of a RecordedEvent that an import checks and indexes. */
typedef struct import_rec {
    const uint8_t *stream, *id, *type, *content_type, *corr, *caus;
    size_t stream_len, id_len, type_len, content_type_len, corr_len, caus_len;
    size_t data_len, metadata_len;
    uint64_t revision, position, recorded_at_us;
} import_rec;

/* Decode strictly: the fields 1..11 of es.v1.RecordedEvent, each of its
 * wire type and at most once, nothing else. */
static es_err import_decode(const uint8_t *buf, size_t len, import_rec *r, char *msg,
                            size_t msg_len)
{
    memset(r, 0, sizeof *r);
    const uint8_t *p = buf, *end = buf + len;
    uint32_t seen = 0;
    pbw_field f;
    es_err rv;
    while ((rv = pbw_next(&p, end, &f)) == ES_OK) {
        bool is_len = f.number != 2 && f.number != 3 && f.number != 11;
        if (f.number < 1 || f.number > 11 || f.wire != (is_len ? PBW_WIRE_LEN : PBW_WIRE_VARINT) ||
            (seen & (1u << f.number))) {
            set_msg(msg, msg_len, "unexpected, repeated or mistyped field %u in the record",
                    f.number);
            return ES_ERR_MALFORMED;
        }
        seen |= 1u << f.number;
        switch (f.number) {
        case 1:
            r->stream = f.data;
            r->stream_len = f.len;
            break;
        case 2:
            r->revision = f.varint;
            break;
        case 3:
            r->position = f.varint;
            break;
        case 4:
            r->id = f.data;
            r->id_len = f.len;
            break;
        case 5:
            r->type = f.data;
            r->type_len = f.len;
            break;
        case 6:
            r->data_len = f.len;
            break;
        case 7:
            r->metadata_len = f.len;
            break;
        case 8:
            r->content_type = f.data;
            r->content_type_len = f.len;
            break;
        case 9:
            r->corr = f.data;
            r->corr_len = f.len;
            break;
        case 10:
            r->caus = f.data;
            r->caus_len = f.len;
            break;
        default:
            r->recorded_at_us = f.varint;
            break;
        }
    }
    if (rv != ES_ERR_NOT_FOUND) {
        set_msg(msg, msg_len, "%s", "the record is not valid protobuf");
        return ES_ERR_MALFORMED;
    }
    if (!r->stream || !r->type || r->position == 0 || r->id_len != ES_EVENT_ID_BYTES) {
        set_msg(msg, msg_len, "%s", "the record lacks a stream id, type, position or 16-byte id");
        return ES_ERR_MALFORMED;
    }
    return ES_OK;
}

static es_err import_validate(const store *s, const import_rec *r, char *msg, size_t msg_len)
{
    if (es_validate_stream_id(r->stream, r->stream_len, true) != ES_OK) {
        set_msg(msg, msg_len, "%s", "invalid stream id");
        return ES_ERR_INVALID_STREAM_ID;
    }
    if (es_validate_event_type(r->type, r->type_len) != ES_OK) {
        set_msg(msg, msg_len, "%s", "invalid event type");
        return ES_ERR_INVALID_EVENT_TYPE;
    }
    if ((r->content_type && es_validate_name(r->content_type, r->content_type_len) != ES_OK) ||
        (r->corr && r->corr_len != ES_EVENT_ID_BYTES) ||
        (r->caus && r->caus_len != ES_EVENT_ID_BYTES)) {
        set_msg(msg, msg_len, "%s", "invalid content type, correlation or causation id");
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (r->data_len + r->metadata_len > s->max_event_bytes) {
        set_msg(msg, msg_len, "data + metadata of %zu bytes exceed max-event-bytes %u",
                r->data_len + r->metadata_len, s->max_event_bytes);
        return ES_ERR_TOO_LARGE;
    }
    return ES_OK;
}

/* Check one decoded record against the transaction's state and write it.
 * @return ES_OK or the refusal; *rc an LMDB code when a write failed. */
static es_err import_one(store *s, batch_state *b, const import_rec *r, const uint8_t *bytes,
                         size_t len, char *msg, size_t msg_len, int *rc)
{
    *rc = 0;
    if (r->position != b->next_position) {
        set_msg(msg, msg_len, "position %llu does not follow the head %llu",
                (unsigned long long)r->position, (unsigned long long)(b->next_position - 1));
        return ES_ERR_WRONG_EXPECTED_REVISION;
    }
    store_stream_info si;
    es_err rv = stream_lookup(b->txn, s, r->stream, r->stream_len, &si);
    bool exists = rv == ES_OK;
    if (rv != ES_OK && rv != ES_ERR_NOT_FOUND) {
        return rv;
    }
    uint64_t next_rev = exists ? si.event_count : 0;
    if (r->revision != next_rev) {
        set_msg(msg, msg_len, "revision %llu of stream '%.*s' at position %llu: expected %llu",
                (unsigned long long)r->revision, (int)r->stream_len, (const char *)r->stream,
                (unsigned long long)r->position, (unsigned long long)next_rev);
        return ES_ERR_WRONG_EXPECTED_REVISION;
    }
    MDB_val ik = {ES_EVENT_ID_BYTES, (void *)r->id};
    MDB_val iv;
    int grc = mdb_get(b->txn, s->event_ids, &ik, &iv);
    if (grc == MDB_SUCCESS) {
        set_msg(msg, msg_len, "the event id at position %llu is already stored",
                (unsigned long long)r->position);
        return ES_ERR_IDEMPOTENCY_CONFLICT;
    }
    if (grc != MDB_NOTFOUND) {
        return map_err(grc);
    }
    if (!exists) {
        memset(&si, 0, sizeof si);
        si.number = b->next_stream++;
        b->next_stream_dirty = true;
        si.created_us = r->recorded_at_us;
        si.first_position = r->position;
    }
    uint64_t pos = b->next_position++;
    uint8_t pkey[8];
    put_u64be(pkey, pos);
    MDB_val k = {8, pkey};
    MDB_val v = {RECORD_HEADER_BYTES + len, NULL};
    if ((*rc = mdb_put(b->txn, s->events, &k, &v, MDB_APPEND | MDB_RESERVE)) != 0) {
        return map_err(*rc);
    }
    uint8_t *rec = v.mv_data;
    memcpy(rec + RECORD_HEADER_BYTES, bytes, len);
    rec[0] = RECORD_VERSION;
    rec[1] = 0;
    rec[2] = rec[3] = 0;
    put_u32le(rec + 4, crc32c(0, rec + RECORD_HEADER_BYTES, len));

    uint8_t key[ES_MAX_NAME_BYTES + 9];
    uint8_t val[24];
    put_u64be(key, si.number);
    put_u64be(key + 8, r->revision);
    MDB_val rk = {16, key};
    MDB_val rvv = {8, pkey};
    if ((*rc = mdb_put(b->txn, s->stream_revs, &rk, &rvv, 0)) != 0) {
        return map_err(*rc);
    }
    put_u64be(val, si.number);
    put_u64be(val + 8, r->revision);
    put_u64be(val + 16, pos);
    iv = (MDB_val){24, val};
    if ((*rc = mdb_put(b->txn, s->event_ids, &ik, &iv, 0)) != 0) {
        return map_err(*rc);
    }
    MDB_val empty = {0, NULL};
    size_t cat_len = es_category_len(r->stream, r->stream_len);
    MDB_val ck = {name_pos_key(key, r->stream, cat_len, pos), key};
    if ((*rc = mdb_put(b->txn, s->categories, &ck, &empty, 0)) != 0) {
        return map_err(*rc);
    }
    MDB_val tk = {name_pos_key(key, r->type, r->type_len, pos), key};
    if ((*rc = mdb_put(b->txn, s->types, &tk, &empty, 0)) != 0) {
        return map_err(*rc);
    }
    if (!exists) {
        /* Written once, at creation (format 2: the count and last position
         * are read from stream_revs, the updated time from the record). */
        uint8_t sbuf[STREAM_RECORD_BYTES];
        stream_encode(sbuf, &si);
        MDB_val sk = {r->stream_len, (void *)r->stream};
        MDB_val sv = {STREAM_RECORD_BYTES, sbuf};
        if ((*rc = mdb_put(b->txn, s->streams, &sk, &sv, 0)) != 0) {
            return map_err(*rc);
        }
    }
    return ES_OK;
}

es_err store_import_batch(store *s, const store_import_in *recs, size_t n, size_t *bad, char *msg,
                          size_t msg_len)
{
    *bad = n;
    set_msg(msg, msg_len, "%s", "");
    if (s->read_only) {
        return ES_ERR_READ_ONLY;
    }
    if (n == 0 || n > STORE_MAX_IMPORT_BATCH) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    batch_state b = {0};
    int rc = mdb_txn_begin(s->env, NULL, 0, &b.txn);
    if (rc) {
        return map_err(rc);
    }
    MDB_val v;
    rc = meta_get(b.txn, s->meta, "next_stream", &v);
    if (rc || v.mv_size != 8) {
        mdb_txn_abort(b.txn);
        return rc ? map_err(rc) : ES_ERR_CORRUPT;
    }
    b.next_stream = get_u64le(v.mv_data);
    b.next_position = last_position(b.txn, s->events) + 1;
    es_err rv = ES_OK;
    for (size_t i = 0; i < n && rv == ES_OK; i++) {
        import_rec r;
        rv = import_decode(recs[i].record, recs[i].len, &r, msg, msg_len);
        if (rv == ES_OK) {
            rv = import_validate(s, &r, msg, msg_len);
        }
        if (rv == ES_OK) {
            rv = import_one(s, &b, &r, recs[i].record, recs[i].len, msg, msg_len, &rc);
        }
        if (rv != ES_OK && rc == 0) {
            *bad = i;
        }
    }
    if (rv == ES_OK && b.next_stream_dirty) {
        uint8_t nbuf[8];
        put_u64le(nbuf, b.next_stream);
        rc = meta_put(b.txn, s->meta, "next_stream", nbuf, 8);
        rv = map_err(rc);
    }
    if (rv != ES_OK) {
        mdb_txn_abort(b.txn);
        return rv;
    }
    uint64_t head = b.next_position - 1;
    rc = mdb_txn_commit(b.txn); /* frees the txn, also on failure */
    if (rc) {
        return commit_err(s, rc);
    }
    atomic_store(&s->head, head);
    return ES_OK;
}

/* ------------------------------------------------------------------ reads -- */

static uint32_t page_limit(uint32_t limit)
{
    return (limit == 0 || limit > STORE_DEFAULT_MAX_PAGE) ? STORE_DEFAULT_MAX_PAGE : limit;
}

/*
 * Reads survive damage in LMDB's own pages: each read function arms a
 * thread-local guard (READ_GUARD, a setjmp) right after opening its read
 * transaction, and on_lmdb_assert jumps back to it, so the read ends with
 * ES_ERR_CORRUPT instead of the process. Read transactions change nothing
 * shared but their reader slot, which read_end releases; a cursor open at
 * the jump is leaked (a few hundred bytes per damaged read). Outside a
 * guarded read (the writer, open) the process still ends, see above.
 */

#define READ_GUARD(txn)                                                                            \
    sigjmp_buf guard_jb_;                                                                          \
    if (sigsetjmp(guard_jb_, 1) != 0) {                                                            \
        read_end(txn);                                                                             \
        return ES_ERR_CORRUPT;                                                                     \
    }                                                                                              \
    read_guard = &guard_jb_

/* After the jump only `txn` is used, and it is never changed after the
 * setjmp; GCC's -Wclobbered cannot see that the other locals are dead on
 * that path. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wclobbered"
#endif

static void read_end(MDB_txn *txn)
{
    read_guard = NULL;
    in_visitor = false;
    mdb_txn_abort(txn);
}

/* A reader table full of slots left by dead processes is cleared and the
 * transaction tried again, instead of failing until the periodic check. */
static es_err read_txn(store *s, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_READERS_FULL) {
        int dead = 0;
        if (mdb_reader_check(s->env, &dead) == 0 && dead > 0) {
            rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
        }
    }
    return map_err(rc);
}

/* Fetch, verify and visit the record at a position. *stop set by the visitor. */
/* Visit one record; *verdict is the visitor's answer (see store_visit_fn). */
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

static es_err visit_position(store *s, MDB_txn *txn, pos_reader *pr, uint64_t pos,
                             store_visit_fn visit, void *ctx, int *verdict)
{
    MDB_val v;
    int rc = pos_reader_get(s, txn, pr, pos, &v);
    if (rc) {
        return rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : map_err(rc); /* index points nowhere */
    }
    store_record rec = {.position = pos};
    es_err rv = record_open(&v, &rec.bytes, &rec.len);
    if (rv != ES_OK) {
        return rv;
    }
    in_visitor = true;
    *verdict = visit(ctx, &rec);
    in_visitor = false;
    return ES_OK;
}

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
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    page->head = last_position(txn, s->events);
    store_stream_info si;
    rv = stream_lookup(txn, s, stream, stream_len, &si);
    if (rv != ES_OK) {
        goto out_abort_txn;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->stream_revs, &cur);
    if (rc) {
        rv = map_err(rc);
        goto out_abort_txn;
    }
    pos_reader pr;
    pos_reader_open(&pr, s, txn);
    uint64_t rev;
    if (backward) {
        if (from > si.last_revision) {
            from = si.last_revision;
        }
        rev = from;
    } else {
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
    while (rc == MDB_SUCCESS) {
        if (k.mv_size != 16 || v.mv_size != 8 || get_u64be(k.mv_data) != si.number ||
            get_u64be((uint8_t *)k.mv_data + 8) != rev) {
            rv = ES_ERR_CORRUPT;
            break;
        }
        rv = visit_position(s, txn, &pr, get_u64be(v.mv_data), visit, ctx, &verdict);
        if (rv != ES_OK) {
            break;
        }
        if (verdict < 0) {
            page->next = rev;
            break;
        }
        page->returned++;
        if (backward) {
            if (rev == 0) {
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
    read_end(txn);
    return rv;
}

/* Position a cursor on an index "name\0pos" for a read from `from`. */
static int index_seek(MDB_cursor *cur, const uint8_t *name, size_t len, uint64_t from,
                      bool backward, MDB_val *k)
{
    uint8_t key[ES_MAX_NAME_BYTES + 9];
    k->mv_size = name_pos_key(key, name, len, from);
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
    if (filter->kind > STORE_FILTER_EVENT_TYPE ||
        (filter->kind != STORE_FILTER_NONE &&
         (!filter->name || filter->name_len == 0 || filter->name_len > ES_MAX_NAME_BYTES)) ||
        (indexed && es_validate_name(filter->name, filter->name_len) != ES_OK)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (!backward && from == 0) {
        from = 1;
    }
    limit = page_limit(limit);
    MDB_txn *txn;
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    page->head = last_position(txn, s->events);
    MDB_cursor *cur;
    MDB_dbi dbi = filter->kind == STORE_FILTER_CATEGORY     ? s->categories
                  : filter->kind == STORE_FILTER_EVENT_TYPE ? s->types
                                                            : s->events;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) {
        read_end(txn);
        return map_err(rc);
    }
    MDB_val k, v;
    uint8_t pkey[8];
    if (indexed) {
        rc = index_seek(cur, filter->name, filter->name_len, from, backward, &k);
    } else {
        put_u64be(pkey, from);
        k.mv_size = 8;
        k.mv_data = pkey;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (backward) {
            if (rc == MDB_NOTFOUND) {
                rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
            } else if (rc == MDB_SUCCESS && get_u64be(k.mv_data) > from) {
                rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
            }
        }
    }
    pos_reader pr = {NULL, 0};
    if (indexed) {
        pos_reader_open(&pr, s, txn);
    }
    uint32_t scanned = 0;
    int verdict = 0;
    while (rc == MDB_SUCCESS) {
        uint64_t pos;
        if (indexed) {
            size_t n = filter->name_len;
            if (k.mv_size != n + 9 || memcmp(k.mv_data, filter->name, n) != 0 ||
                ((uint8_t *)k.mv_data)[n] != 0) {
                rc = MDB_NOTFOUND; /* left this name's range */
                break;
            }
            pos = get_u64be((uint8_t *)k.mv_data + n + 1);
            rv = visit_position(s, txn, &pr, pos, visit, ctx, &verdict);
            if (rv != ES_OK) {
                break;
            }
            if (verdict < 0) {
                page->next = pos;
                break;
            }
            page->returned++;
        } else {
            if (k.mv_size != 8) {
                rv = ES_ERR_CORRUPT;
                break;
            }
            pos = get_u64be(k.mv_data);
            store_record rec = {.position = pos};
            rv = record_open(&v, &rec.bytes, &rec.len);
            if (rv != ES_OK) {
                break;
            }
            bool match = true;
            if (filter->kind == STORE_FILTER_STREAM_PREFIX) {
                const uint8_t *sid;
                size_t sid_len;
                if (pbw_find_bytes(rec.bytes, rec.len, 1, &sid, &sid_len) != ES_OK) {
                    rv = ES_ERR_CORRUPT;
                    break;
                }
                match = sid_len >= filter->name_len && !memcmp(sid, filter->name, filter->name_len);
                scanned++;
            }
            if (match) {
                in_visitor = true;
                verdict = visit(ctx, &rec);
                in_visitor = false;
                if (verdict < 0) {
                    page->next = pos;
                    break;
                }
                page->returned++;
            }
        }
        if (backward) {
            page->next = pos - 1;
            if (pos <= 1) {
                rc = MDB_NOTFOUND;
                break;
            }
        } else {
            page->next = pos + 1;
        }
        if (verdict > 0 || page->returned >= limit || scanned >= STORE_READ_ALL_SCAN_LIMIT) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, backward ? MDB_PREV : MDB_NEXT);
    }
    if (rv == ES_OK) {
        if (rc == MDB_NOTFOUND) {
            page->end = true;
        } else if (rc != MDB_SUCCESS) {
            rv = map_err(rc);
        } else if (!backward && page->next > page->head) {
            page->end = true;
        }
    }
    pos_reader_close(&pr);
    mdb_cursor_close(cur);
    read_end(txn);
    return rv;
}

es_err store_event_id_at(store *s, uint64_t position, uint8_t id[16])
{
    MDB_txn *txn;
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    uint8_t pkey[8];
    put_u64be(pkey, position);
    MDB_val k = {8, pkey}, v;
    int rc = mdb_get(txn, s->events, &k, &v);
    const uint8_t *rec, *eid;
    size_t len, eid_len;
    if (rc != MDB_SUCCESS) {
        rv = map_err(rc);
    } else if ((rv = record_open(&v, &rec, &len)) == ES_OK) {
        if (pbw_find_bytes(rec, len, 4, &eid, &eid_len) != ES_OK || eid_len != ES_EVENT_ID_BYTES) {
            rv = ES_ERR_CORRUPT;
        } else {
            memcpy(id, eid, ES_EVENT_ID_BYTES);
        }
    }
    read_end(txn);
    return rv;
}

es_err store_stream_info_get(store *s, const uint8_t *stream, size_t stream_len,
                             store_stream_info *info)
{
    if (es_validate_stream_id(stream, stream_len, true) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    MDB_txn *txn;
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    rv = stream_lookup(txn, s, stream, stream_len, info);
    if (rv == ES_OK) {
        rv = stream_updated(txn, s, info);
    }
    read_end(txn);
    return rv;
}

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
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->streams, &cur);
    if (rc) {
        read_end(txn);
        return map_err(rc);
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
        rv = stream_decode(&v, &si);
        if (rv == ES_OK) {
            rv = stream_tail(txn, s, &si);
        }
        if (rv == ES_OK) {
            rv = stream_updated(txn, s, &si);
        }
        if (rv != ES_OK) {
            break;
        }
        n++;
        in_visitor = true;
        int stop = visit(ctx, k.mv_data, k.mv_size, &si);
        in_visitor = false;
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
        rv = map_err(rc);
    }
    mdb_cursor_close(cur);
    read_end(txn);
    return rv;
}

/* -------------------------------------------------------------- snapshots -- */

es_err store_save_snapshot(store *s, const uint8_t *stream, size_t stream_len, uint64_t revision,
                           uint32_t state_format, const uint8_t *data, size_t data_len)
{
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
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) {
        return map_err(rc);
    }
    store_stream_info si;
    es_err rv = stream_lookup(txn, s, stream, stream_len, &si);
    if (rv != ES_OK) {
        mdb_txn_abort(txn);
        return rv;
    }
    if (revision > si.last_revision) {
        mdb_txn_abort(txn);
        return ES_ERR_INVALID_ARGUMENT;
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
    v.mv_size = SNAPSHOT_HEADER_BYTES + data_len;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->snapshots, &k, &v, MDB_RESERVE);
    if (rc) {
        mdb_txn_abort(txn);
        return map_err(rc);
    }
    uint8_t *p = v.mv_data;
    put_u32le(p + 4, state_format);
    put_u64le(p + 8, revision);
    put_u64le(p + 16, store_now_us());
    if (data_len) {
        memcpy(p + SNAPSHOT_HEADER_BYTES, data, data_len);
    }
    put_u32le(p, crc32c(0, p + 4, SNAPSHOT_HEADER_BYTES - 4 + data_len));
    rc = mdb_txn_commit(txn);
    return rc ? commit_err(s, rc) : ES_OK;
}

es_err store_load_snapshot(store *s, const uint8_t *stream, size_t stream_len, store_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    if (es_validate_stream_id(stream, stream_len, true) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    MDB_txn *txn;
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_val k = {stream_len, (void *)stream};
    MDB_val v;
    int rc = mdb_get(txn, s->snapshots, &k, &v);
    if (rc) {
        read_end(txn);
        return map_err(rc);
    }
    const uint8_t *p = v.mv_data;
    if (v.mv_size < SNAPSHOT_HEADER_BYTES || crc32c(0, p + 4, v.mv_size - 4) != get_u32le(p)) {
        read_end(txn);
        return ES_ERR_CORRUPT;
    }
    snap->state_format = get_u32le(p + 4);
    snap->revision = get_u64le(p + 8);
    snap->saved_at_us = get_u64le(p + 16);
    snap->data_len = v.mv_size - SNAPSHOT_HEADER_BYTES;
    snap->data = malloc(snap->data_len ? snap->data_len : 1);
    if (!snap->data) {
        read_end(txn);
        return ES_ERR_NO_MEMORY;
    }
    memcpy(snap->data, p + SNAPSHOT_HEADER_BYTES, snap->data_len);
    read_end(txn);
    return ES_OK;
}

/* ---------------------------------------------------------- housekeeping -- */

es_err store_stats_get(store *s, store_stats *st)
{
    memset(st, 0, sizeof *st);
    memcpy(st->store_id, s->id, STORE_ID_BYTES);
    st->format_version = s->format;
    st->created_us = s->created_us;
    st->sync = s->sync;
    MDB_envinfo info;
    MDB_stat est;
    if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &est)) {
        return ES_ERR_IO;
    }
    st->map_size = info.me_mapsize;
    st->map_used = (uint64_t)(info.me_last_pgno + 1) * est.ms_psize;
    st->readers_used = info.me_numreaders;
    st->readers_max = info.me_maxreaders;
    MDB_txn *txn;
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_stat ms;
    if (mdb_stat(txn, s->events, &ms) == 0) {
        st->event_count = ms.ms_entries;
    }
    if (mdb_stat(txn, s->streams, &ms) == 0) {
        st->stream_count = ms.ms_entries;
    }
    st->head_position = last_position(txn, s->events);
    read_end(txn);
    return ES_OK;
}

typedef struct check_ctx {
    store_check_report *r;
    store_check_log_fn log;
    void *log_ctx;
    unsigned lines;
} check_ctx;

static void defect(check_ctx *c, uint64_t pos, const char *what, uint64_t a, uint64_t b)
{
    if (pos && !c->r->first_bad_position) {
        c->r->first_bad_position = pos;
    }
    if (c->log && c->lines < CHECK_LOG_MAX_LINES) {
        char line[256];
        snprintf(line, sizeof line, "position %llu: %s (%llu, %llu)", (unsigned long long)pos, what,
                 (unsigned long long)a, (unsigned long long)b);
        in_visitor = true;
        c->log(c->log_ctx, line);
        in_visitor = false;
    }
    c->lines++;
}

static bool index_has(MDB_txn *txn, MDB_dbi dbi, const uint8_t *name, size_t len, uint64_t pos)
{
    uint8_t key[ES_MAX_NAME_BYTES + 9];
    if (len > ES_MAX_NAME_BYTES) {
        return false; /* len 0 is the empty category of "-x" */
    }
    MDB_val k = {name_pos_key(key, name, len, pos), key};
    MDB_val v;
    return mdb_get(txn, dbi, &k, &v) == 0;
}

static uint64_t db_entries(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat ms;
    return mdb_stat(txn, dbi, &ms) == 0 ? ms.ms_entries : 0;
}

es_err store_check(store *s, store_check_report *report, store_check_log_fn log, void *ctx)
{
    memset(report, 0, sizeof *report);
    check_ctx c = {report, log, ctx, 0};
    MDB_txn *txn;
    es_err rv = read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->events, &cur);
    if (rc) {
        read_end(txn);
        return map_err(rc);
    }
    MDB_val k, v;
    uint64_t expect = 1;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        report->events_checked++;
        uint64_t pos = k.mv_size == 8 ? get_u64be(k.mv_data) : 0;
        if (pos != expect) {
            report->position_gaps++;
            defect(&c, pos, "position gap: expected, found", expect, pos);
        }
        expect = pos + 1;
        const uint8_t *rec;
        size_t len;
        if (record_open(&v, &rec, &len) != ES_OK) {
            report->crc_errors++;
            defect(&c, pos, "record fails its checksum", 0, 0);
            continue;
        }
        const uint8_t *sid, *eid, *type;
        size_t sid_len, eid_len, type_len;
        uint64_t rpos = 0, rrev = 0;
        if (pbw_find_bytes(rec, len, 1, &sid, &sid_len) != ES_OK ||
            pbw_find_bytes(rec, len, 4, &eid, &eid_len) != ES_OK ||
            pbw_find_bytes(rec, len, 5, &type, &type_len) != ES_OK ||
            pbw_find_varint(rec, len, 3, &rpos) != ES_OK || eid_len != ES_EVENT_ID_BYTES) {
            report->crc_errors++;
            defect(&c, pos, "record does not decode", 0, 0);
            continue;
        }
        pbw_find_varint(rec, len, 2, &rrev); /* absent = revision 0 */
        if (rpos != pos) {
            report->index_errors++;
            defect(&c, pos, "record holds another position", rpos, pos);
        }
        store_stream_info si;
        if (stream_lookup(txn, s, sid, sid_len, &si) != ES_OK) {
            report->revision_errors++;
            defect(&c, pos, "record of a stream without a stream record", rrev, 0);
            continue;
        }
        uint8_t rkey[16];
        put_u64be(rkey, si.number);
        put_u64be(rkey + 8, rrev);
        MDB_val rk = {16, rkey}, rv2;
        if (mdb_get(txn, s->stream_revs, &rk, &rv2) != 0 || rv2.mv_size != 8 ||
            get_u64be(rv2.mv_data) != pos) {
            report->revision_errors++;
            defect(&c, pos, "stream index does not point at the record (revision, stream no)", rrev,
                   si.number);
        }
        MDB_val ik = {ES_EVENT_ID_BYTES, (void *)eid}, iv;
        if (mdb_get(txn, s->event_ids, &ik, &iv) != 0 || iv.mv_size != 24 ||
            get_u64be(iv.mv_data) != si.number || get_u64be((uint8_t *)iv.mv_data + 8) != rrev ||
            get_u64be((uint8_t *)iv.mv_data + 16) != pos) {
            report->index_errors++;
            defect(&c, pos, "event-id index mismatch", 0, 0);
        }
        if (!index_has(txn, s->categories, sid, es_category_len(sid, sid_len), pos)) {
            report->index_errors++;
            defect(&c, pos, "category index entry missing", 0, 0);
        }
        if (!index_has(txn, s->types, type, type_len, pos)) {
            report->index_errors++;
            defect(&c, pos, "event-type index entry missing", 0, 0);
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        read_end(txn);
        return map_err(rc);
    }

    /* Streams: revisions 0..count-1 present, positions increasing, and the
     * first position of the stream record right (the count and last
     * position are read from this index, so they agree by construction). */
    rc = mdb_cursor_open(txn, s->streams, &cur);
    if (rc) {
        read_end(txn);
        return map_err(rc);
    }
    uint64_t revs_total = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        report->streams_checked++;
        store_stream_info si;
        if (stream_decode(&v, &si) != ES_OK) {
            report->revision_errors++;
            defect(&c, 0, "undecodable stream record", 0, 0);
            continue;
        }
        MDB_cursor *rcur;
        if (mdb_cursor_open(txn, s->stream_revs, &rcur) != 0) {
            break;
        }
        uint8_t rkey[16];
        put_u64be(rkey, si.number);
        put_u64be(rkey + 8, 0);
        MDB_val rk = {16, rkey}, rval;
        uint64_t rev = 0, prev_pos = 0, first = 0;
        int rrc;
        for (rrc = mdb_cursor_get(rcur, &rk, &rval, MDB_SET_RANGE);
             rrc == 0 && rk.mv_size == 16 && get_u64be(rk.mv_data) == si.number;
             rrc = mdb_cursor_get(rcur, &rk, &rval, MDB_NEXT)) {
            uint64_t r = get_u64be((uint8_t *)rk.mv_data + 8);
            uint64_t p = rval.mv_size == 8 ? get_u64be(rval.mv_data) : 0;
            if (r != rev || p <= prev_pos) {
                report->revision_errors++;
                defect(&c, p, "revisions not contiguous or positions not increasing", r, rev);
            }
            if (rev == 0) {
                first = p;
            }
            prev_pos = p;
            rev = r + 1;
            revs_total++;
        }
        mdb_cursor_close(rcur);
        if (rev == 0 || first != si.first_position) {
            report->revision_errors++;
            defect(&c, first, "stream record disagrees with its index (first position, revisions)",
                   si.first_position, rev);
        }
    }
    mdb_cursor_close(cur);
    uint64_t n = report->events_checked;
    if (revs_total != n || db_entries(txn, s->event_ids) != n ||
        db_entries(txn, s->categories) != n || db_entries(txn, s->types) != n) {
        report->index_errors++;
        defect(&c, 0, "index sizes differ from the log (stream index, event ids)", revs_total,
               db_entries(txn, s->event_ids));
    }
    read_end(txn);
    if (report->crc_errors || report->position_gaps || report->revision_errors ||
        report->index_errors) {
        return ES_ERR_CORRUPT;
    }
    return ES_OK;
}

es_err store_backup(store *s, const char *dest_dir)
{
    struct stat st;
    if (stat(dest_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        DIR *d = opendir(dest_dir);
        if (!d) {
            return ES_ERR_IO;
        }
        struct dirent *de;
        bool empty = true;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                empty = false;
            }
        }
        closedir(d);
        if (!empty) {
            return ES_ERR_INVALID_ARGUMENT;
        }
    } else if (mkdir(dest_dir, 0700) != 0) {
        return ES_ERR_IO;
    }
    return map_err(mdb_env_copy2(s->env, dest_dir, MDB_CP_COMPACT));
}

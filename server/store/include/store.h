/*
 * store — the event log engine: an LMDB environment holding the log, its
 * indexes, stream records and snapshots (server/store/). The only server
 * module that includes lmdb.h; its key layout is drawn at the top of
 * server/store/open.c, and internal.h lists the store's files.
 *
 * Threads: one writer thread calls store_append_batch and
 * store_save_snapshot (in a follower, one importing thread calls
 * store_import_batch instead); any thread may call the read functions at the same
 * time (each opens, uses and closes its own short read transaction inside
 * the call). Pointers handed to visitor callbacks are borrowed from LMDB and
 * valid only during the callback.
 *
 * Errors: every function returns an es_err. LMDB and errno codes are
 * translated once, at the store's boundary, by es_err_from_mdb
 * (proto/mdb_err.h, shared with the projector: MDB_MAP_FULL and ENOSPC ->
 * ES_ERR_STORE_FULL, MDB_CORRUPTED -> ES_ERR_CORRUPT, other I/O ->
 * ES_ERR_IO); a record failing its CRC is ES_ERR_CORRUPT, and a failed
 * commit's EIO on a full disk ES_ERR_STORE_FULL.
 */
#ifndef ES_STORE_H
#define ES_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

typedef struct store store;

/** Format version written in the meta record; a store with another is refused. */
#define STORE_FORMAT_VERSION                3u /* 2: write-once stream records; 3: stream_life */
#define STORE_ID_BYTES                      16u
#define STORE_DEFAULT_MAP_SIZE_64           (1ull << 40) /* 1 TiB of address space, sparse */
#define STORE_DEFAULT_MAP_SIZE_32           (1ull << 30)
#define STORE_DEFAULT_MAX_EVENTS_PER_APPEND 10000u
#define STORE_DEFAULT_MAX_EVENT_BYTES       (8u * 1024u * 1024u)
#define STORE_DEFAULT_MAX_PAGE              4096u
#define STORE_MAX_APPENDS_PER_TXN           1024u
#define STORE_READ_ALL_SCAN_LIMIT           100000u /* records examined per filtered page */

/**
 * Exit status of a process whose store turned out to be structurally
 * damaged while in use (an LMDB page fails LMDB's own checks): the store
 * prints why on stderr and exits with this status instead of aborting.
 */
#define STORE_EXIT_DAMAGED 70

/** How a durable store (sync = true) makes an acknowledged append durable. */
typedef enum store_sync_method {
    STORE_SYNC_JOURNAL = 0, /* one journal write + fdatasync per group commit;
                               LMDB synced at checkpoints (server/store/journal.c) */
    STORE_SYNC_LMDB,        /* LMDB's commit: data pages synced, then the meta page */
    STORE_SYNC_NOMETASYNC,  /* the measured alternative: MDB_NOMETASYNC, one sync per commit
                               (its data pages and the previous meta); the writer holds
                               replies until the next commit's sync or store_flush */
} store_sync_method;

#define STORE_DEFAULT_JOURNAL_BYTES (64ull << 20) /* the journal's ring */
#define STORE_MIN_JOURNAL_BYTES     (16ull << 10)

/** A sink for lines the store logs (index damage met by a read or a write). */
typedef void (*store_log_fn)(void *ctx, const char *line);

typedef struct store_options {
    const char *path;               /* data directory; created when missing */
    uint64_t map_size;              /* 0 = the default for the platform (halved down to
                                       1 GiB where the process cannot reserve it) */
    bool sync;                      /* fsync every commit (durable); false = MDB_NOSYNC */
    bool read_only;                 /* open read-only (esctl db stat/check, safe beside esd) */
    uint32_t max_events_per_append; /* 0 = default */
    uint32_t max_event_bytes;       /* data + metadata of one event; 0 = default */
    uint32_t max_readers;           /* 0 = 126 (LMDB's default) */
    bool follower;                  /* a replica: appends and snapshot saves are refused with
                                       ES_ERR_FOLLOWER; events arrive through store_import_batch */
    store_log_fn damage_log;        /* index damage found while serving (NULL: stderr) */
    void *damage_log_ctx;
    bool no_encrypt;               /* a NEW store keeps events in plain (an existing store
                                      keeps the choice it was created with) */
    store_sync_method sync_method; /* with sync, not read_only, not follower */
    uint64_t journal_bytes;        /* the journal's ring (0: STORE_DEFAULT_JOURNAL_BYTES) */
} store_options;

/**
 * @brief Open (creating if needed) the store in a data directory.
 * @param[in] opts options; opts->path must be set
 * @param[out] out the store, to be closed with store_close
 * @param[out] msg a human explanation on failure (may be NULL)
 * @param msg_len size of msg
 * @return ES_OK;
 *   ES_ERR_INCOMPATIBLE_STORE: the directory holds something that is not an
 *     esd store (foreign files, an LMDB without our meta record) or a store
 *     of another format version — nothing was changed; or an encrypted
 *     store's key store (keys.esk) is missing or another store's;
 *   ES_ERR_IO: the directory cannot be created or opened (see msg);
 *   ES_ERR_NOT_FOUND: read_only and no store there;
 *   ES_ERR_BUSY: (not read_only) another process owns the directory (a
 *     running esd holds its esd.lock); msg names its pid;
 *   ES_ERR_STORE_FULL: no room on the file system for lock.mdb or esd.lock
 *     (msg says which);
 *   ES_ERR_CORRUPT: the data file is shorter than its pages, or (not
 *     read_only) the next-stream counter is not above every stream number
 *     in use -- new streams would be written into old ones' histories;
 *   ES_ERR_NO_MEMORY.
 * @note Clears stale reader slots (mdb_reader_check) at open.
 */
es_err store_open(const store_options *opts, store **out, char *msg, size_t msg_len);

/**
 * @brief How many times an index led a read or a write to a record that is
 *        not what the index promised (another stream, revision, category,
 *        type, id or position), or an index insert met an existing entry.
 *        Each was refused with ES_ERR_CORRUPT and logged.
 */
uint64_t store_index_mismatches(store *s);

/**
 * @brief Whether the store refuses every write (ES_ERR_CORRUPT) since it met
 *        damage while building one; reads go on. Until the store is closed.
 */
bool store_writes_refused(store *s);

/**
 * @brief Whether a running process owns a data directory: a writable
 *        store_open holds an exclusive lock on DIR/esd.lock, which also
 *        holds its pid, until store_close or the process's end (kill -9
 *        included: the kernel drops the lock). Asks without taking the lock.
 * @param[out] pid the owner's pid as written in esd.lock (0: unreadable)
 * @return true when the lock is held (by any process, this one included).
 */
bool store_dir_owned(const char *dir, long *pid);

/** @brief Close the store; accepts NULL. No transaction may be in use. */
void store_close(store *s);

/* ---------------------------------------------------------------- appends -- */

typedef enum store_expect {
    STORE_EXPECT_ANY = 0,
    STORE_EXPECT_NO_STREAM = 1,
    STORE_EXPECT_STREAM_EXISTS = 2,
    STORE_EXPECT_EXACT = 3,
} store_expect;

/** One proposed event. All pointers are borrowed for the call. */
typedef struct store_event_in {
    const uint8_t *id; /* exactly 16 bytes (callers assign missing ids) */
    const uint8_t *type;
    size_t type_len;
    const uint8_t *data;
    size_t data_len;
    const uint8_t *metadata;
    size_t metadata_len;
    const uint8_t *content_type; /* optional */
    size_t content_type_len;
    const uint8_t *correlation_id; /* optional, 0 or 16 bytes */
    size_t correlation_id_len;
    const uint8_t *causation_id; /* optional, 0 or 16 bytes */
    size_t causation_id_len;
} store_event_in;

/** The outcome of one append (one stream) inside a batch. */
typedef struct store_append_result {
    es_err rv;
    uint64_t first_revision, last_revision;
    uint64_t first_position, last_position;
    bool duplicate; /* idempotent retry: the original result, nothing stored */
    /* When a check failed: the state the stream was found in. */
    bool actual_exists;
    uint64_t actual_revision;
} store_append_result;

/** One append to one stream. */
typedef struct store_append_in {
    const uint8_t *stream;
    size_t stream_len;
    store_expect expect;
    uint64_t revision; /* STORE_EXPECT_EXACT only */
    const store_event_in *events;
    size_t n_events;
    bool allow_reserved;    /* '$' streams: only the store's own writers */
    const uint8_t *subject; /* optional data subject (erase.c): a new stream is sealed
                               with the subject's key; an existing one must have it */
    size_t subject_len;
} store_append_in;

/**
 * A request of a batch: a single append (n_appends == 1) or a multi-stream
 * transaction (n_appends > 1), all or nothing.
 */
typedef struct store_request {
    const store_append_in *appends;
    size_t n_appends;
    /* Results, filled by store_append_batch. */
    es_err rv;                    /* the request's outcome */
    store_append_result *results; /* caller-provided, n_appends entries */
    bool synced;                  /* the commit was fsynced */
} store_request;

/**
 * @brief Append a batch of requests in one write transaction (group commit).
 *
 * Each request is checked against its expectations on the state that
 * includes the earlier requests of the same batch. A request that fails a
 * check (or validation, or does not fit in the map) fails alone, with
 * nothing of it written; the others commit. A failed commit fails them all.
 *
 * Per request, rv is one of: ES_OK (results filled; duplicate set for an
 * idempotent retry); ES_ERR_WRONG_EXPECTED_REVISION (every append whose
 * check failed has that rv and actual_exists/actual_revision; the others
 * have ES_OK but nothing was written); ES_ERR_IDEMPOTENCY_CONFLICT (event
 * ids already stored in another stream, at other revisions, or only some of
 * them); ES_ERR_STREAM_DELETED (the stream was tombstoned; a soft-deleted
 * stream is recreated: expectations in server/store/life.c);
 * ES_ERR_ERASED (the stream's or its subject's key was destroyed); a
 * subject that is not the stream's, or one given to a store without
 * encryption, is ES_ERR_INVALID_ARGUMENT (server/store/erase.c);
 * ES_ERR_INVALID_STREAM_ID, ES_ERR_RESERVED_STREAM,
 * ES_ERR_INVALID_EVENT_TYPE, ES_ERR_INVALID_EVENT_ID, ES_ERR_TOO_LARGE,
 * ES_ERR_TOO_MANY_EVENTS, ES_ERR_INVALID_ARGUMENT (validation: nothing
 * written); ES_ERR_STORE_FULL (map or disk full); ES_ERR_IO,
 * ES_ERR_CORRUPT, ES_ERR_NO_MEMORY.
 *
 * @return ES_OK when the batch was processed (look at each request's rv),
 *   or the error that failed the whole batch (also set in every rv);
 *   ES_ERR_READ_ONLY (opened read_only) and ES_ERR_FOLLOWER (opened as a
 *   follower) fail every request.
 * @note Writer thread only.
 */
es_err store_append_batch(store *s, store_request *reqs, size_t n_reqs);

/**
 * @brief Microseconds the last store_append_batch spent in LMDB's commit
 *        call: writing the dirty pages and, with sync, its two fsyncs (data
 *        pages, then the meta page). 0 when no commit was made. Writer
 *        thread only.
 */
uint64_t store_last_commit_call_us(const store *s);

/**
 * @brief The event id of the record at a position (its CRC verified).
 * @return ES_OK; ES_ERR_NOT_FOUND (no such position); ES_ERR_CORRUPT;
 *   ES_ERR_IO.
 */
es_err store_event_id_at(store *s, uint64_t position, uint8_t id[16]);

/* ---------------------------------------------------------------- imports -- */

/** Most records in one store_import_batch call (one write transaction). */
#define STORE_MAX_IMPORT_BATCH 4096u

/**
 * @brief Import events that another store already positioned (a follower
 *        copying a primary), in one write transaction, all or nothing.
 *
 * Each record is a packed es.v1.RecordedEvent exactly as the primary stored
 * and served it; it is stored byte for byte (so reads from the copy are
 * identical), with the CRC computed here. Checked, in this order, against
 * the state that includes the earlier records of the batch:
 *   - the record decodes: known fields only, each of its wire type, at
 *     most once; stream id, event id (16 bytes), type and position present;
 *   - stream id, type and content type valid (validate.h), correlation and
 *     causation ids 0 or 16 bytes, data + metadata within max_event_bytes;
 *   - position == head + 1 (no gap, no repeat);
 *   - revision == the stream's next revision (0 for a new stream);
 *   - the event id is not stored yet;
 *   - a sealed record (data and metadata in field 12) is in the store's
 *     layout, names a key slot (the stream's, for an existing stream) and
 *     fits max_event_bytes; it is stored sealed, and needs an encrypted
 *     store (its key comes through store_keys_import).
 * Stream records take their created/updated times from the records'
 * recorded_at, so stream info equals the primary's. A lifecycle record is
 * applied (store_life_import); an erasure record is recorded, and the
 * store's copy of its key destroyed after the commit.
 *
 * @param recs n records (pointers borrowed for the call)
 * @param n 1..STORE_MAX_IMPORT_BATCH
 * @param[out] bad index of the record refused (when not ES_OK and a record
 *   was at fault; n otherwise)
 * @param[out] msg why, for a log line (may be NULL)
 * @return ES_OK (all imported and committed; store_head() moved);
 *   ES_ERR_MALFORMED (a record does not decode as described);
 *   ES_ERR_INVALID_STREAM_ID, ES_ERR_INVALID_EVENT_TYPE,
 *   ES_ERR_INVALID_ARGUMENT, ES_ERR_TOO_LARGE (validation);
 *   ES_ERR_WRONG_EXPECTED_REVISION (position or revision out of sequence);
 *   ES_ERR_IDEMPOTENCY_CONFLICT (event id already stored);
 *   ES_ERR_NOT_ERASABLE (a sealed record, and this store has no key
 *   store); ES_ERR_READ_ONLY; ES_ERR_STORE_FULL; ES_ERR_IO;
 *   ES_ERR_NO_MEMORY. Nothing of the batch is stored unless ES_OK, except
 *   that ES_ERR_IO after the commit means the batch is stored and an
 *   erasure's key could not be overwritten yet (the next open does it).
 * @note One writer at a time: in a follower the importing thread is the only
 *   one that writes (appends and snapshot saves are refused).
 */
typedef struct store_import_in {
    const uint8_t *record;
    size_t len;
} store_import_in;

es_err store_import_batch(store *s, const store_import_in *recs, size_t n, size_t *bad, char *msg,
                          size_t msg_len);

/* ------------------------------------------------------------------ reads -- */

/** A stored event, borrowed from LMDB for the duration of a visit. */
typedef struct store_record {
    uint64_t position;
    const uint8_t *bytes; /* a packed es.v1.RecordedEvent, CRC already checked */
    size_t len;
} store_record;

/**
 * Visitor: return 0 to continue; > 0 to stop after this record (it counts as
 * delivered); < 0 to stop before it (it does not count, and page->next
 * points at it: e.g. a reply that has no room left). It must not call back
 * into the store.
 */
typedef int (*store_visit_fn)(void *ctx, const store_record *rec);

typedef struct store_page {
    uint64_t next;     /* the next revision / position to read from */
    bool end;          /* nothing more in this direction (at the time of reading) */
    uint64_t head;     /* last position at the time of reading */
    uint32_t returned; /* records delivered */
} store_page;

/**
 * @brief Read a stream forward or backward from a revision (inclusive).
 * @param from for backward reads, UINT64_MAX means the last revision
 * @param limit capped at STORE_DEFAULT_MAX_PAGE; 0 means that cap
 * Events outside the stream's lifecycle window (deleted, truncated, beyond
 * max_count or max_age) are never visited, here or in store_read_all.
 * @return ES_OK (an empty page when from is past the end);
 *   ES_ERR_NOT_FOUND: the stream does not exist (or was soft-deleted and
 *   not appended to since); ES_ERR_STREAM_DELETED: it was tombstoned;
 *   ES_ERR_ERASED: its data key was destroyed (store_erase; store_read_all
 *   skips such events, as it skips deleted ones);
 *   ES_ERR_INVALID_STREAM_ID; ES_ERR_CORRUPT (a record failed its CRC: it
 *   is never handed to the visitor); ES_ERR_IO.
 */
es_err store_read_stream(store *s, const uint8_t *stream, size_t stream_len, uint64_t from,
                         bool backward, uint32_t limit, store_visit_fn visit, void *ctx,
                         store_page *page);

typedef enum store_filter_kind {
    STORE_FILTER_NONE = 0,
    STORE_FILTER_STREAM_PREFIX,
    STORE_FILTER_CATEGORY,   /* through the category index, never a scan */
    STORE_FILTER_EVENT_TYPE, /* through the event-type index, never a scan */
    STORE_FILTER_STORED,     /* the whole log as stored, events that reads no longer
                                serve included (the relay: followers apply the same
                                lifecycle records), sealed records as they are
                                (never opened, also when erased); no name */
} store_filter_kind;

typedef struct store_filter {
    store_filter_kind kind;
    const uint8_t *name;
    size_t name_len;
} store_filter;

/**
 * @brief Read the global log forward or backward from a position (inclusive).
 * @param from 0 or 1 = the first event forward; UINT64_MAX = the head backward
 * @param limit as store_read_stream
 * A prefix filter walks the log and examines at most
 * STORE_READ_ALL_SCAN_LIMIT records per call: a page may hold fewer than
 * limit records with end == false; continue from page->next.
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (bad filter); ES_ERR_CORRUPT; ES_ERR_IO.
 */
es_err store_read_all(store *s, const store_filter *filter, uint64_t from, bool backward,
                      uint32_t limit, store_visit_fn visit, void *ctx, store_page *page);

/**
 * @brief Visit the event with an id, found through the event-id index (one
 *        lookup, not a walk of the log).
 * @param visit called once with the record (its return value is ignored)
 * @return ES_OK (visited); ES_ERR_NOT_FOUND (no event has that id, or the
 *   stream's lifecycle hides it: deleted, truncated, beyond max_count or
 *   max_age, tombstoned); ES_ERR_CORRUPT (a record failed its CRC, or the
 *   index entry leads to a record with another id: logged and counted as
 *   in store_index_mismatches); ES_ERR_ERASED (its stream's key was
 *   destroyed); ES_ERR_IO.
 */
es_err store_read_event_by_id(store *s, const uint8_t id[16], store_visit_fn visit, void *ctx);

/** Plain-C view of a stream record. */
typedef struct store_stream_info {
    uint64_t number; /* interned stream number */
    uint64_t last_revision;
    uint64_t event_count;
    uint64_t first_position, last_position;
    uint64_t created_us, updated_us;
} store_stream_info;

/** event_count leaves out truncated and deleted revisions; soft-deleted
 *  streams are NOT_FOUND, tombstoned ones STREAM_DELETED, and neither is
 *  listed by store_list_streams.
 *  @return ES_OK; ES_ERR_NOT_FOUND; ES_ERR_STREAM_DELETED;
 *  ES_ERR_INVALID_STREAM_ID; ES_ERR_IO. */
es_err store_stream_info_get(store *s, const uint8_t *stream, size_t stream_len,
                             store_stream_info *info);

/**
 * Visitor for store_list_streams; name borrowed for the call.
 * Return 0 to continue, nonzero to stop.
 */
typedef int (*store_stream_visit_fn)(void *ctx, const uint8_t *name, size_t name_len,
                                     const store_stream_info *info);

/**
 * @brief List streams in id order, optionally with a prefix, after a given id.
 * @param[out] more set when more streams follow the last one visited
 * @return ES_OK; ES_ERR_IO.
 */
es_err store_list_streams(store *s, const uint8_t *prefix, size_t prefix_len, const uint8_t *after,
                          size_t after_len, uint32_t limit, store_stream_visit_fn visit, void *ctx,
                          bool *more);

/* -------------------------------------------------------------- lifecycle -- */

/* Design notes in server/store/life.c. */

/**
 * Every lifecycle change is also a record, appended in the change's write
 * transaction to this reserved stream, so that subscriptions, the NATS
 * relay, followers and read models see it in the log's order. Its type
 * names the operation; its data is the stream's new lifecycle state, 48
 * bytes (u64 little-endian: flags (1 tombstoned, 2 metadata set), metadata
 * revision, deleted_before, truncate_before, max_count, max_age_s),
 * followed by the stream id. A follower importing one applies that state.
 */
#define STORE_LIFE_STREAM          "$lifecycle"
#define STORE_LIFE_TYPE_DELETED    "$stream-deleted"
#define STORE_LIFE_TYPE_TOMBSTONED "$stream-tombstoned"
#define STORE_LIFE_TYPE_METADATA   "$stream-metadata"

/** Longest max_age_s accepted: 100 years. */
#define STORE_MAX_AGE_S (100ull * 366u * 24u * 3600u)

/** A stream's lifecycle state (all zero: never deleted, no metadata). */
typedef struct store_stream_life {
    bool tombstoned;
    bool meta_set;           /* metadata was set at least once */
    uint64_t meta_revision;  /* when meta_set: 0 for the first set */
    uint64_t deleted_before; /* soft delete: revisions below are not served */
    uint64_t truncate_before;
    uint64_t max_count; /* 0: no limit */
    uint64_t max_age_s; /* 0: no limit */
} store_stream_life;

typedef enum store_life_kind {
    STORE_LIFE_DELETE = 0,
    STORE_LIFE_TOMBSTONE,
    STORE_LIFE_SET_META,
} store_life_kind;

/** One lifecycle operation; pointers borrowed for the call. */
typedef struct store_life_op {
    store_life_kind kind;
    const uint8_t *stream;
    size_t stream_len;
    store_expect expect; /* the stream's revision (delete, tombstone) or the
                            metadata revision (set_meta) */
    uint64_t revision;   /* STORE_EXPECT_EXACT only */
    uint64_t truncate_before, max_count, max_age_s; /* STORE_LIFE_SET_META */
    /* Results. */
    store_stream_life life; /* the state stored (ES_OK) */
    uint64_t last_revision; /* the stream's last revision (ES_OK) */
    bool actual_exists;     /* ES_ERR_WRONG_EXPECTED_REVISION: what was found */
    uint64_t actual_revision;
    bool synced;
} store_life_op;

/**
 * @brief Delete, tombstone, or set the retention metadata of a stream, in
 *        one write transaction.
 * @return ES_OK (also for deleting a deleted or tombstoning a tombstoned
 *   stream: nothing changes); ES_ERR_NOT_FOUND (the stream never existed);
 *   ES_ERR_STREAM_DELETED (tombstoned: delete and set_meta);
 *   ES_ERR_WRONG_EXPECTED_REVISION (actual_* set); ES_ERR_INVALID_STREAM_ID;
 *   ES_ERR_RESERVED_STREAM ('$' streams have no lifecycle);
 *   ES_ERR_INVALID_ARGUMENT (truncate_before beyond the last revision + 1,
 *   max_age_s above STORE_MAX_AGE_S, a bad kind or expectation);
 *   ES_ERR_READ_ONLY; ES_ERR_FOLLOWER; ES_ERR_STORE_FULL; ES_ERR_IO.
 *   Nothing is changed unless ES_OK.
 * @note Writer thread only.
 */
es_err store_life_apply(store *s, store_life_op *op);

/**
 * @brief A stream's lifecycle state and (optional) its last revision.
 * @return ES_OK; ES_ERR_NOT_FOUND (never existed); ES_ERR_STREAM_DELETED
 *   (tombstoned); ES_ERR_INVALID_STREAM_ID; ES_ERR_CORRUPT; ES_ERR_IO.
 */
es_err store_stream_life_get(store *s, const uint8_t *stream, size_t stream_len,
                             store_stream_life *out, uint64_t *last_revision);

/**
 * @brief Decode the data of a lifecycle record.
 * @param[out] stream the stream it changes, borrowed from data
 * @return ES_OK; ES_ERR_MALFORMED.
 */
es_err store_life_record_decode(const uint8_t *data, size_t len, store_stream_life *l,
                                const uint8_t **stream, size_t *stream_len);

/* ------------------------------------------------------------ scavenger -- */

/* Design notes in server/store/scavenge.c. */

/** The outcome of one scavenger slice. */
typedef struct store_scavenge_result {
    uint64_t events_removed;
    uint64_t bytes_reclaimed; /* keys and values of the entries removed */
    uint64_t snapshots_removed;
    bool more;      /* the budget ran out: there may be more to remove */
    bool pass_done; /* every stream with a lifecycle was visited */
} store_scavenge_result;

/**
 * @brief Remove, in one write transaction of at most `budget` steps (a
 *        stream visited or an event examined), the events that deletion
 *        and retention made unreadable, with their index entries; resume
 *        where the last slice stopped.
 * @return ES_OK (nothing committed when nothing changed); ES_ERR_READ_ONLY;
 *   ES_ERR_CORRUPT (through store_damage); ES_ERR_STORE_FULL; ES_ERR_IO.
 *   On an error nothing of the slice is kept.
 * @note Writer thread only (a follower may call it beside its importer:
 *   LMDB runs one write transaction at a time).
 */
es_err store_scavenge_slice(store *s, uint32_t budget, store_scavenge_result *out);

/**
 * @brief The scavenger removes no event at a position above this one
 *        (default: no limit). The relay sets it to the last position
 *        JetStream acknowledged, so that it never meets a hole. Any thread.
 */
void store_scavenge_horizon_set(store *s, uint64_t position);

/** Pages of the data file, by use. */
typedef struct store_pages {
    uint64_t page_size;
    uint64_t total;       /* pages in use by the file (up to the last one written) */
    uint64_t free;        /* on LMDB's free list, reused by later writes */
    uint64_t unreclaimed; /* estimated: the bytes of events not served but still
                             stored, in pages (rounded up) */
    uint64_t live;        /* total - free - unreclaimed */
    uint64_t unreclaimed_events, unreclaimed_bytes;
} store_pages;

/** @brief Count the pages (a read transaction; safe beside esd).
 *  @return ES_OK; ES_ERR_CORRUPT; ES_ERR_IO. */
es_err store_pages_get(store *s, store_pages *p);

/**
 * @brief Tests only: replace the wall clock and the monotonic clock the
 *        store's clock is made of (NULL: the system's). Process-wide.
 */
void store_clock_hook(uint64_t (*real_us)(void), uint64_t (*mono_us)(void));
/* ---------------------------------------------------------------- erasure -- */

/* Design notes in server/store/erase.c. */

typedef enum store_erase_kind {
    STORE_ERASE_STREAM = 0,
    STORE_ERASE_SUBJECT,
} store_erase_kind;

/** One erasure; pointers borrowed for the call. */
typedef struct store_erase_op {
    store_erase_kind kind;
    const uint8_t *name; /* the stream id or the subject id */
    size_t name_len;
    store_expect expect; /* streams: ANY, STREAM_EXISTS or EXACT (revision) */
    uint64_t revision;
    /* Results. */
    uint64_t erased_at_us; /* when the key was destroyed (the first time) */
    bool already;          /* it was erased before: nothing changed */
    uint64_t streams;      /* subject: streams bound to it; a stream refused
                              because its key is shared: the streams sharing it */
    bool actual_exists;    /* ES_ERR_WRONG_EXPECTED_REVISION */
    uint64_t actual_revision;
} store_erase_op;

/**
 * @brief Erase a stream or a data subject: destroy its data key and mark it
 *        erased, durably, whatever the store's sync mode. Its events' data
 *        and metadata (and its snapshot) can no longer be read from any
 *        copy that holds only their ciphertext; reads of the stream (of
 *        every stream of the subject) answer ES_ERR_ERASED, appends too.
 * @return ES_OK (also when already erased: op->already);
 *   ES_ERR_NOT_FOUND (no such stream or subject);
 *   ES_ERR_NOT_ERASABLE (the stream's events are stored in plain: it was
 *   created while encryption was off);
 *   ES_ERR_INVALID_ARGUMENT (the stream belongs to a subject: erase the
 *   subject; or its key is bound to other streams too, as on a promoted
 *   follower that copied a subject's key without its subject (from a
 *   relay older than the subject header): op->streams says how many; a
 *   bad name; a bad expectation);
 *   ES_ERR_WRONG_EXPECTED_REVISION (actual_* set); ES_ERR_INVALID_STREAM_ID;
 *   ES_ERR_RESERVED_STREAM; ES_ERR_STREAM_DELETED (tombstoned);
 *   ES_ERR_READ_ONLY; ES_ERR_FOLLOWER; ES_ERR_STORE_FULL; ES_ERR_IO.
 *   A failure after the commit (the key's overwrite) is ES_ERR_IO: the
 *   erasure is recorded and the key is destroyed at the next open.
 * @note Writer thread only.
 */
es_err store_erase(store *s, store_erase_op *op);

/** @brief Whether new streams of this store are encrypted. */
bool store_encrypted(const store *s);

/*
 * Erasure records and key copies (erase.c): what the relay and a follower
 * need so that an erasure reaches them too.
 *
 * Every erasure that changes something also appends a record to
 * STORE_LIFE_STREAM in its transaction: type STORE_ERASE_TYPE_STREAM or
 * STORE_ERASE_TYPE_SUBJECT, data = the key's slot u64 LE | erased_at_us
 * u64 LE (16 bytes: shorter than a lifecycle state, so that a reader that
 * knows only those skips or refuses it), metadata = the stream or subject
 * id. A follower importing one records the erasure and destroys its copy
 * of the key.
 */
#define STORE_ERASE_TYPE_STREAM  "$stream-erased"
#define STORE_ERASE_TYPE_SUBJECT "$subject-erased"
#define STORE_ERASE_RECORD_BYTES 16u
#define STORE_DATA_KEY_BYTES     32u

/**
 * @brief Whether a record (a packed RecordedEvent, as stored or relayed) is
 *        an erasure record; its slot and time when it is.
 */
bool store_erase_record(const uint8_t *rec, size_t len, uint64_t *slot, uint64_t *erased_at_us);

/**
 * @brief Whether a record (as stored or relayed) has its data and metadata
 *        sealed; *slot is then the slot of its key.
 */
bool store_record_key_slot(const uint8_t *rec, size_t len, uint64_t *slot);

/** A key slot as this store holds it. */
typedef enum store_key_state {
    STORE_KEY_ABSENT = 0, /* never written here (a follower has not copied it yet) */
    STORE_KEY_LIVE,
    STORE_KEY_ERASED, /* destroyed, or its erasure recorded */
} store_key_state;

/**
 * @brief A copy of a live data key (for the relay), or its state.
 * @param[out] key the key when *state is STORE_KEY_LIVE (cleanse after use)
 * @return ES_OK; ES_ERR_NOT_ERASABLE (a store without a key store); LMDB
 *   errors as es_err.
 */
es_err store_key_export(store *s, uint64_t slot, store_key_state *state,
                        uint8_t key[STORE_DATA_KEY_BYTES]);

/** The longest data subject id (the store's name cap, ES_MAX_NAME_BYTES). */
#define STORE_SUBJECT_MAX 256u

/**
 * @brief The data subject a slot's key belongs to, for the relay's key
 *        message (a subject's streams share its key).
 * @param out room for STORE_SUBJECT_MAX bytes; *len set on ES_OK
 * @return ES_OK; ES_ERR_NOT_FOUND (the key of one stream, or a store
 *   without the table); LMDB errors as es_err.
 */
es_err store_key_subject(store *s, uint64_t slot, uint8_t out[STORE_SUBJECT_MAX], size_t *len);

/** One key copied from a primary (a follower). */
typedef struct store_key_in {
    uint64_t slot;
    bool erased; /* the primary had destroyed it: nothing is written */
    uint8_t key[STORE_DATA_KEY_BYTES];
    size_t subject_len; /* 0: the key of one stream; else the data subject's id */
    uint8_t subject[STORE_SUBJECT_MAX];
} store_key_in;

/**
 * @brief Write keys copied from a primary into this store's key store at
 *        the same slots, and sync it (one fdatasync), before the records
 *        that need them are imported. A slot whose erasure this store
 *        recorded is never written again; a slot that holds another live
 *        key is refused. A key with a subject (live or erased) also binds
 *        the subject to the slot, as on the primary (subjects and
 *        slot_subjects, erase.c), in the same call: streams bound to the
 *        slot later are the subject's.
 * @return ES_OK; ES_ERR_NOT_ERASABLE (this store has no key store: it was
 *   created with encryption off); ES_ERR_CORRUPT (another key at a slot,
 *   slot 0 or beyond the key store's limit); ES_ERR_MALFORMED (a subject
 *   id that is not a valid name, or a subject already bound to another
 *   slot, or a slot bound to another subject); ES_ERR_IO;
 *   ES_ERR_STORE_FULL.
 * @note The importing thread only (a follower's only writer).
 */
es_err store_keys_import(store *s, const store_key_in *keys, size_t n);

/* -------------------------------------------------------------- snapshots -- */

/**
 * @brief Store the latest snapshot of a stream. It replaces the stored one
 *        unless that one has the same state_format and a higher revision
 *        (then nothing changes and ES_OK is returned: a concurrent saver
 *        never replaces a later state with an earlier one).
 * @return ES_OK; ES_ERR_INVALID_STREAM_ID; ES_ERR_NOT_FOUND (no such stream);
 *   ES_ERR_STREAM_DELETED (tombstoned); ES_ERR_ERASED (sealed with a
 *   destroyed key);
 *   ES_ERR_INVALID_ARGUMENT (revision beyond the stream's last revision);
 *   ES_ERR_TOO_LARGE; ES_ERR_STORE_FULL; ES_ERR_IO; ES_ERR_READ_ONLY;
 *   ES_ERR_FOLLOWER (opened as a follower).
 * @note Writer thread only (it opens a write transaction).
 */
es_err store_save_snapshot(store *s, const uint8_t *stream, size_t stream_len, uint64_t revision,
                           uint32_t state_format, const uint8_t *data, size_t data_len);

typedef struct store_snapshot {
    uint64_t revision;
    uint32_t state_format;
    uint64_t saved_at_us;
    uint8_t *data; /* malloc'd copy, owned by the caller: free() it */
    size_t data_len;
} store_snapshot;

/** A snapshot folding soft-deleted events is NOT_FOUND (server/store/life.c).
 *  @return ES_OK; ES_ERR_NOT_FOUND; ES_ERR_STREAM_DELETED (tombstoned);
 *  ES_ERR_ERASED (the stream's key was destroyed);
 *  ES_ERR_CORRUPT; ES_ERR_NO_MEMORY; ES_ERR_IO. */
es_err store_load_snapshot(store *s, const uint8_t *stream, size_t stream_len,
                           store_snapshot *snap);

/* -------------------------------------------------------- consumer groups -- */

/* Design notes and the tables' layout in server/store/groups.c. */

/** Longest reason kept with a parked event. */
#define STORE_GROUP_REASON_MAX 256u

/** A consumer group's stored definition and checkpoint. */
typedef struct store_group_def {
    uint64_t number; /* interned, assigned by STORE_GROUP_CREATE */
    uint8_t name[256];
    size_t name_len;
    uint8_t target; /* es.v1.SubscribeTarget: 0 all, 1 stream, 2 category, 3 type, 4 prefix */
    uint8_t target_name[256];
    size_t target_name_len;
    uint32_t ack_timeout_ms;
    uint32_t max_retries;
    uint32_t max_in_flight;
    bool park_blocks;
    uint64_t checkpoint; /* every matching event at or below it is done */
    uint64_t created_us;
} store_group_def;

/** A parked event as stored. */
typedef struct store_group_parked {
    uint64_t position;
    uint32_t attempts;
    uint64_t parked_at_us;
    const uint8_t *stream; /* borrowed: valid for the visit only */
    size_t stream_len;
    const char *reason; /* not NUL-terminated */
    size_t reason_len;
} store_group_parked;

typedef enum store_group_kind {
    STORE_GROUP_CREATE = 0, /* def: stored, its number assigned */
    STORE_GROUP_UPDATE,     /* def's settings replace the stored ones (target, checkpoint kept) */
    STORE_GROUP_DELETE,     /* the group, its acks and its parked events */
    STORE_GROUP_FLUSH,      /* checkpoint, acks above it, parks, unparks */
} store_group_kind;

/** One change of a consumer group; pointers borrowed for the call. */
typedef struct store_group_op {
    store_group_kind kind;
    store_group_def def;  /* CREATE/UPDATE: in full; DELETE/FLUSH: name (and number) */
    uint64_t checkpoint;  /* FLUSH: the new checkpoint (never lowered) */
    const uint64_t *done; /* FLUSH: positions above the checkpoint acked or skipped, ascending
                             (runs of consecutive positions are stored as one range) */
    size_t n_done;
    const store_group_parked *parks; /* FLUSH: events parked (replaces a stored one) */
    size_t n_parks;
    const uint64_t *unparks; /* FLUSH: parked events replayed and acked */
    size_t n_unparks;
    es_err rv; /* result of this op */
} store_group_op;

/**
 * @brief Apply group changes in ONE write transaction (one commit; with the
 *        journal, a batch of FLUSH ops is one journal entry written without
 *        an fdatasync of its own, made durable by the next append's
 *        fdatasync, the next checkpoint or within 0.1 s by a timer).
 * Per op rv: ES_OK; ES_ERR_GROUP_EXISTS (create); ES_ERR_GROUP_NOT_FOUND
 * (update, delete, flush of a deleted group: nothing of it is written);
 * ES_ERR_INVALID_ARGUMENT (a name or target name too long).
 * @return ES_OK (committed: look at each rv) or the error that failed the
 *   whole transaction (ES_ERR_READ_ONLY, ES_ERR_FOLLOWER, ES_ERR_STORE_FULL,
 *   ES_ERR_IO), also set in every rv; *synced says whether it is on disk
 *   already (false for a journaled FLUSH batch until a later sync:
 *   store_group_synced). Either way it survives a kill -9 of esd.
 * @note Writer thread only.
 */
es_err store_group_apply(store *s, store_group_op *ops, size_t n, bool *synced);

/**
 * @brief Whether every group change applied so far is on disk (survives a
 *        power loss): false with --sync none, and while a journaled FLUSH
 *        batch waits for a sync (the next append's fdatasync, a
 *        checkpoint's or the journal's timer makes it durable).
 */
bool store_group_synced(store *s);

typedef int (*store_group_visit_fn)(void *ctx, const store_group_def *def);
/** @brief Every stored group, in name order. @return ES_OK; ES_ERR_CORRUPT; ES_ERR_IO. */
es_err store_group_list(store *s, store_group_visit_fn visit, void *ctx);

typedef int (*store_group_done_fn)(void *ctx, uint64_t from, uint64_t to);
/** @brief The positions above a group's checkpoint already done (acked or
 *  skipped), as ranges from..to (inclusive) in order. @return ES_OK;
 *  ES_ERR_CORRUPT; ES_ERR_IO. */
es_err store_group_done(store *s, uint64_t number, store_group_done_fn visit, void *ctx);

typedef int (*store_group_parked_fn)(void *ctx, const store_group_parked *p);
/**
 * @brief A group's parked events with positions above `after`, in order,
 *        at most `limit` (0: all); *more (may be NULL) says whether more follow.
 * @return ES_OK; ES_ERR_CORRUPT; ES_ERR_IO.
 */
es_err store_group_parked_list(store *s, uint64_t number, uint64_t after, uint32_t limit,
                               store_group_parked_fn visit, void *ctx, bool *more);

/* ---------------------------------------------------------- housekeeping -- */

typedef struct store_stats {
    uint8_t store_id[STORE_ID_BYTES];
    uint32_t format_version;
    uint64_t created_us;
    uint64_t head_position;
    uint64_t stream_count;
    uint64_t event_count;
    uint64_t map_size;
    uint64_t map_used;
    uint32_t readers_used, readers_max;
    bool sync;
} store_stats;

/** @return ES_OK; ES_ERR_IO. */
es_err store_stats_get(store *s, store_stats *st);

/** The journal's figures (journal.c); all zero when there is no journal. */
typedef struct store_journal_stats {
    bool enabled;
    bool broken;         /* a journal write or checkpoint failed: appends fail until restart */
    bool meta_restored;  /* the start put data.mdb's meta pages back to the checkpoint */
    uint64_t ring_bytes; /* size of the journal's ring */
    uint64_t bytes;      /* entry bytes written since the start */
    uint64_t syncs;      /* fdatasyncs: one per append entry, two per checkpoint, one per
                            timer sync of group entries */
    uint64_t entries;    /* entries written (one per group commit with new events, one per
                            batch of group changes) */
    uint64_t unsynced_entries; /* group entries written without their own fdatasync */
    uint64_t timer_syncs;      /* fdatasyncs made for them by the timer (no later sync came) */
    uint64_t checkpoints;      /* made since the start (the first at the start included) */
    uint64_t checkpoint_last_us, checkpoint_max_us, checkpoint_total_us;
    uint64_t lag_events; /* events applied to LMDB, not yet in a durable checkpoint */
    uint64_t replayed_entries, replayed_events; /* at the start */
    uint64_t recovery_us;                       /* the start's replay and first checkpoint */
} store_journal_stats;

/**
 * @brief Whether replies must wait for a later sync (STORE_SYNC_NOMETASYNC):
 *        a commit leaves its meta page unsynced until the next commit's data
 *        sync or store_flush.
 */
bool store_sync_deferred(const store *s);

/** @brief Sync everything committed (mdb_env_sync); writer thread. @return ES_OK; ES_ERR_IO. */
es_err store_flush(store *s);

/** @brief The journal's figures; any thread. */
void store_journal_stats_get(store *s, store_journal_stats *st);

/** @brief The last committed position (0 for an empty store). */
uint64_t store_head(store *s);

/** @brief The store id (16 bytes, valid while the store is open). */
const uint8_t *store_id(const store *s);

/** @brief Clear reader slots of dead processes; @return slots cleared. */
int store_reader_check(store *s);

typedef struct store_check_report {
    uint64_t events_checked;
    uint64_t streams_checked;
    uint64_t crc_errors;
    uint64_t position_gaps;
    uint64_t revision_errors;    /* non-contiguous revisions or bad stream index */
    uint64_t index_errors;       /* event-id, category or type index mismatches */
    uint64_t first_bad_position; /* 0 if none */
    uint64_t events_removed;     /* positions the scavenger emptied (not defects) */
} store_check_report;

/** Optional sink for human-readable defect descriptions. */
typedef void (*store_check_log_fn)(void *ctx, const char *line);

/**
 * @brief Verify the whole store: every record's CRC, positions gapless from 1,
 *        revisions contiguous, every index consistent with the log.
 * Runs in one read transaction (a consistent view, safe beside a writer).
 * @return ES_OK when clean; ES_ERR_CORRUPT when any defect was found (see
 *   the report); ES_ERR_IO.
 */
es_err store_check(store *s, store_check_report *report, store_check_log_fn log, void *ctx);

/**
 * @brief Write a consistent, compacted copy of the store to an empty or new
 *        directory (LMDB's mdb_env_copyfd2 with MDB_CP_COMPACT) as
 *        DEST/data.mdb, mode 0600: written under a temporary name, fsynced,
 *        renamed, the directory fsynced; an encrypted store's key store is
 *        copied after it as DEST/keys.esk (docs/erasure.md). On failure
 *        nothing is left behind (a directory it created is removed too).
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (destination not empty or not a
 *   directory); ES_ERR_STORE_FULL (no room at the destination); ES_ERR_IO.
 */
es_err store_backup(store *s, const char *dest_dir);

/** @brief Current time in microseconds since the epoch (the store's clock). */
uint64_t store_now_us(void);

#endif

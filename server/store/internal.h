/*
 * internal.h — what the store's own files share, and nothing outside
 * server/store/ includes: the store struct, the on-disk layout constants,
 * the codecs of the layout's values, and the read guard.
 *
 * The files of the store, each with its design notes at the top:
 *
 *   open.c    the key layout (drawn there), opening and closing, meta,
 *             stream records, record headers, error translation, one
 *             owner per data directory (esd.lock), lock.mdb's reservation,
 *             store_damage (index damage: logged, counted, CORRUPT)
 *   write.c   appends (group commit, idempotency), imports, snapshot saves
 *   read.c    reads of streams, of the log, listings, snapshot loads; the
 *             guard that turns damage in LMDB's pages into ES_ERR_CORRUPT;
 *             the check that a record is what its index promised
 *   check.c   statistics, store_check, backups
 *   life.c    delete, tombstone, retention metadata; what reads may serve
 *   keys.c    the key store file (keys.esk), AES-256-GCM seal and unseal
 *   erase.c   encryption at rest of streams and subjects, their key tables,
 *             erasure (crypto-shredding) and its recovery at open
 *   groups.c  consumer groups: definitions, checkpoints, acks, parked events
 *   journal.c the durable append path: one journal write and fdatasync per
 *             group commit, LMDB synced at checkpoints, recovery after a
 *             crash or a power loss (the argument is in its design notes)
 *
 * Ownership words as in store.h. Every function here that returns an int
 * returns an LMDB code; every es_err has already been translated.
 */
#ifndef ES_STORE_INTERNAL_H
#define ES_STORE_INTERNAL_H

#include <lmdb.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_err.h"
#include "record.h"
#include "store.h"
#include "validate.h"

#define STORE_MAGIC              "esd-store"
#define STORE_MAGIC_LEN          9
#define RECORD_HEADER_BYTES      8
#define RECORD_VERSION           1
#define STREAM_RECORD_BYTES      32
#define STREAM_LIFE_BYTES        48
#define STORE_FORMAT_UPGRADABLE  2u /* store_open upgrades it to STORE_FORMAT_VERSION */
#define SNAPSHOT_HEADER_BYTES    24
#define STORE_MAX_SNAPSHOT_BYTES (16u * 1024u * 1024u)

/* ---------------------------------------------------------------- keys.c -- */

#define STORE_KEYS_FILE      "keys.esk"
#define STORE_KEY_BYTES      32u
#define STORE_KEY_SLOT_BYTES 64u
#define STORE_SEAL_VERSION   1u
#define STORE_SEAL_NONCE     12u
#define STORE_SEAL_TAG       16u
#define STORE_SEAL_HEADER    (1u + 8u + STORE_SEAL_NONCE) /* version | slot u64 LE | nonce */
#define STORE_SEAL_OVERHEAD  (STORE_SEAL_HEADER + STORE_SEAL_TAG)
#define RECORD_FLAG_SEALED   1u /* record header flags: data and metadata are in field 12 */

/** The key store of an encrypted store (design notes in keys.c). */
typedef struct store_keys {
    int fd; /* -1: none (an unencrypted store) */
    uint8_t *map;
    size_t map_len;
    _Atomic uint64_t end; /* slots in the file (readers look below it) */
    uint64_t next;        /* writer: the next unused slot of the pool */
    uint64_t gen;         /* unique per open in this process, never 0 (keys.c "sealing") */
    bool sync;
} store_keys;

/**
 * @brief Open (or with create, create and sync) DIR/keys.esk of store `id`.
 * @return ES_OK; ES_ERR_INCOMPATIBLE_STORE (missing, or another store's);
 *   ES_ERR_CORRUPT; ES_ERR_IO; ES_ERR_STORE_FULL; ES_ERR_NO_MEMORY.
 */
es_err store_keys_open(store_keys *k, const char *dir, const uint8_t id[STORE_ID_BYTES],
                       bool create, bool read_only, bool sync, char *msg, size_t msg_len);
void store_keys_close(store_keys *k);
/** @brief A fresh, synced key's slot (writer only). */
es_err store_keys_take(store_keys *k, uint64_t *slot);
/** @brief Copy a live key out; false when the slot is destroyed or unknown. */
bool store_keys_get(const store_keys *k, uint64_t slot, uint8_t key[STORE_KEY_BYTES]);
bool store_keys_live(const store_keys *k, uint64_t slot);
/**
 * @brief Why store_keys_get found no key: ES_ERR_ERASED for a slot of zeros
 *        (destroyed) or past the end, ES_ERR_CORRUPT for a slot that is
 *        neither zeros nor a key that passes its CRC (damage: an erasure's
 *        torn write is finished at the next open before anything is read).
 */
es_err store_keys_missing(const store_keys *k, uint64_t slot);
/** @brief Whether a slot is all zeros (destroyed or never used) or past the end. */
bool store_keys_blank(const store_keys *k, uint64_t slot);
/** @brief Whether a slot still carries the live marker (no CRC check: for a
 *         key already checked once, slots never being reused). */
bool store_keys_marked_live(const store_keys *k, uint64_t slot);
/** @brief Overwrite a slot with zeros and fdatasync (writer only). */
es_err store_keys_destroy(store_keys *k, uint64_t slot);
/** @brief Copy the key file to a new file (0600, fsynced). */
es_err store_keys_copy(const store_keys *k, const char *dest_path);
/** @brief Write a key copied from a primary at its slot, not synced yet
 *         (a follower's importing thread). @return ES_OK; ES_ERR_CORRUPT
 *         (slot 0 or beyond the limit); ES_ERR_IO; ES_ERR_STORE_FULL. */
es_err store_keys_put(store_keys *k, uint64_t slot, const uint8_t key[STORE_KEY_BYTES]);
/** @brief Sync what store_keys_put wrote, then let readers see the slots
 *         below top. */
es_err store_keys_publish(store_keys *k, uint64_t top);

/**
 * @brief Seal plain_len bytes in place: out holds the header's room, then
 *        the plaintext, then STORE_SEAL_TAG bytes of room.
 */
es_err store_seal(const uint8_t key[STORE_KEY_BYTES], uint64_t slot, uint64_t position,
                  const uint8_t *id, uint8_t *out, size_t plain_len);
/** @brief The slot named by a sealed field; false when it is not one. */
bool store_seal_slot(const uint8_t *sealed, size_t len, uint64_t *slot);
/** @brief Open a sealed field into out (len - STORE_SEAL_OVERHEAD bytes).
 *  @return ES_OK; ES_ERR_CORRUPT (wrong key, tampered, misshapen). */
es_err store_unseal(const uint8_t key[STORE_KEY_BYTES], const uint8_t *sealed, size_t len,
                    uint64_t position, const uint8_t *id, uint8_t *out);
/**
 * @brief Open a sealed field into out (len - STORE_SEAL_OVERHEAD bytes) with
 *        the key of the slot it names, from k.
 * @note  The thread keeps the key it last set by its key store and slot, so
 *        consecutive records of one key read and set no key; the slot's live
 *        marker is still checked for every record (keys.c "sealing").
 * @return ES_OK; ES_ERR_ERASED (the slot's key is destroyed, damaged or not
 *   in k); ES_ERR_CORRUPT (tampered, misshapen, or sealed with another key);
 *   ES_ERR_NO_MEMORY; ES_ERR_INTERNAL (libcrypto refused the key).
 */
es_err store_keys_unseal(const store_keys *k, const uint8_t *sealed, size_t len, uint64_t position,
                         const uint8_t *id, uint8_t *out);
typedef struct journal journal;

struct store {
    MDB_env *env;
    journal *jr; /* the journal (journal.c); NULL: LMDB syncs each commit, or nothing is synced */
    MDB_dbi meta, events, streams, stream_revs, event_ids, categories, types, snapshots;
    MDB_dbi life; /* stream_life */
    MDB_dbi removed_ids;
    bool has_removed_ids; /* false: a store opened read-only that never had one */
    MDB_dbi groups, group_done, group_parked; /* groups.c */
    bool has_groups;                          /* false: a read-only store written before groups */
    bool has_life; /* false: a read-only format-2 store, which has none */
    bool sync;
    bool deferred; /* STORE_SYNC_NOMETASYNC (store_sync_deferred) */
    bool read_only;
    bool follower;
    uint32_t max_events_per_append;
    uint32_t max_event_bytes;
    uint8_t id[STORE_ID_BYTES];
    uint32_t format;
    uint64_t created_us;
    _Atomic uint64_t head;             /* last committed position */
    _Atomic uint64_t index_mismatches; /* store_damage calls (store_index_mismatches) */
    _Atomic bool write_damaged;        /* damage met inside a write: writes refused */
    int owner_fd;                      /* esd.lock, locked (writable opens); -1: none */
    store_log_fn damage_log;           /* NULL: stderr */
    void *damage_log_ctx;
    uint64_t last_commit_call_us;      /* writer thread: time in mdb_txn_commit */
    _Atomic uint64_t scavenge_horizon; /* the scavenger leaves later positions (relay) */
    /* Encryption at rest (erase.c). */
    bool encrypt;                               /* new streams get a data key */
    bool has_keys;                              /* the key tables exist */
    MDB_dbi stream_keys, subjects, erased_keys; /* when has_keys */
    MDB_dbi slot_subjects;                      /* when has_slot_subjects */
    bool has_slot_subjects; /* false: a read-only store written before the table */
    store_keys keys;        /* keys.fd >= 0 when encrypt */
};

/* ---------------------------------------------------------------- open.c -- */

/**
 * @brief The outcome of a failed mdb_txn_commit: a short write on a full
 *        file system (EIO) is ES_ERR_STORE_FULL, other codes as es_err_from_mdb.
 */
es_err store_commit_err(const store *s, int rc);

/** @brief snprintf into an optional message buffer (msg may be NULL). */
__attribute__((format(printf, 3, 4))) void store_set_msg(char *msg, size_t msg_len, const char *fmt,
                                                         ...);

/** @brief A meta value by its key; @return an LMDB code. */
int store_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v);

/** @brief Write a meta value; @return an LMDB code. */
int store_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t len);

/** @brief The last position in `events` (0: the log is empty). */
uint64_t store_last_position(MDB_txn *txn, MDB_dbi events);

/**
 * @brief Report an index that promised what its record is not (or an index
 *        insert that met an existing entry): count it, log the index and
 *        the position.
 * @return ES_ERR_CORRUPT, for the caller to return.
 */
es_err store_damage(store *s, const char *index, uint64_t pos, const char *what);

/** @brief store_damage with the whole log line given. @return ES_ERR_CORRUPT. */
es_err store_damage_line(store *s, const char *line);

/**
 * @brief The stored next-stream counter and the highest stream number in
 *        use (the first half of the last stream_revs key; 0: none).
 * @return ES_OK; ES_ERR_CORRUPT (no counter, or one of the wrong size);
 *         LMDB errors. The counter is sound when *next > *highest.
 */
es_err store_next_stream_get(MDB_txn *txn, const store *s, uint64_t *next, uint64_t *highest);

/** @brief A stream record's bytes from the fields written at creation. */
void store_stream_encode(uint8_t out[STREAM_RECORD_BYTES], const store_stream_info *si);

/** @brief A stream record's fields; @return ES_OK or ES_ERR_CORRUPT. */
es_err store_stream_decode(const MDB_val *v, store_stream_info *si);

/**
 * @brief Fill a decoded stream's count, last revision and last position from
 *        its last stream_revs entry.
 * @return ES_OK; ES_ERR_CORRUPT (no index entries); LMDB errors.
 */
es_err store_stream_tail(MDB_txn *txn, const store *s, store_stream_info *si);

/**
 * @brief A stream's record and tail, with updated_us. The tail's record is
 *        read and must be this stream's, at the last revision and position
 *        (a damaged stream record or index would otherwise lead reads and
 *        appends into another stream).
 * @return ES_OK; ES_ERR_NOT_FOUND (no such stream); ES_ERR_CORRUPT (through
 *         store_damage when the tail is another stream's); LMDB errors.
 */
es_err store_stream_lookup(MDB_txn *txn, store *s, const uint8_t *stream, size_t len,
                           store_stream_info *si);

/**
 * @brief Verify a stored record's header and CRC.
 * @param[out] payload the packed RecordedEvent, borrowed from the value (valid
 *             while the transaction is)
 * @return ES_OK; ES_ERR_CORRUPT.
 */
es_err store_record_open(const MDB_val *v, const uint8_t **payload, size_t *len);

/**
 * @brief Verify a stored record and parse it (es_record_parse, lenient).
 * @return ES_OK; ES_ERR_CORRUPT (bad header or CRC, or a record that does
 *         not decode: the CRC was right, so the store wrote it wrong).
 */
es_err store_record_parse(const MDB_val *v, es_record *r);

/** @brief name | 0x00 | position BE into key (room for ES_MAX_NAME_BYTES + 9):
 *         a key of the category and type indexes; @return its length. */
size_t store_name_pos_key(uint8_t *key, const uint8_t *name, size_t len, uint64_t pos);

/**
 * @brief Commit a write transaction that is not an append (snapshot saves,
 *        lifecycle changes) so that it is durable when this returns: with
 *        the journal, commit and then checkpoint; otherwise LMDB's commit.
 * @return ES_OK; the commit's error (store_commit_err); ES_ERR_IO (the
 *         journal is broken: nothing committed, the transaction aborted;
 *         or the checkpoint failed: the change is applied but not known
 *         durable).
 */
es_err store_commit_durable(store *s, MDB_txn *txn);
/**
 * @brief Append one record to STORE_LIFE_STREAM in txn (a lifecycle change
 *        or an erasure: the relay carries it to followers), with a fresh
 *        version-4 id. @param head the store's head, moved past it.
 */
es_err store_life_append(store *s, MDB_txn *txn, const char *type, const uint8_t *data,
                         size_t data_len, const uint8_t *metadata, size_t metadata_len,
                         uint64_t *head);

/* -------------------------------------------------------------- write.c -- */

/**
 * @brief Replay stored values (header, CRC and record, as the store wrote
 *        them to `events`) in one write transaction, each stored unchanged
 *        with its indexes; positions, revisions and ids are checked as for
 *        an import. Used by journal recovery.
 * @return ES_OK; ES_ERR_CORRUPT (a value fails its CRC or does not decode);
 *         the import errors (msg says why, *bad the value at fault).
 */
es_err store_replay_records(store *s, const store_import_in *values, size_t n, size_t *bad,
                            char *msg, size_t msg_len);

/* -------------------------------------------------------------- groups.c -- */

/**
 * @brief Apply a journal group entry's ops again (count ops, encoded as
 *        drawn in groups.c) in one write transaction. Used by journal
 *        recovery; every op must apply as it did when it was journaled.
 * @return ES_OK; ES_ERR_CORRUPT (the bytes do not decode, or an op is
 *         refused: msg says which); ES_ERR_NO_MEMORY; LMDB's errors.
 */
es_err store_group_replay(store *s, const uint8_t *ops, size_t len, uint32_t count, char *msg,
                          size_t msg_len);

/* ------------------------------------------------------------- journal.c -- */

/**
 * @brief Before LMDB opens DIR: read DIR/journal if there is one and put
 *        data.mdb's meta pages back to its last durable checkpoint (design
 *        notes in journal.c).
 * @return ES_OK (*out set; no journal yet is not an error); ES_ERR_CORRUPT
 *         (journal or data file damaged or mismatched: msg says which);
 *         ES_ERR_IO; ES_ERR_NO_MEMORY.
 */
es_err journal_prepare(const char *dir, uint64_t ring_bytes, journal **out, char *msg,
                       size_t msg_len);

/** @brief Free a journal that was prepared but never started; accepts NULL. */
void journal_free(journal *j);

/** @brief Right after mdb_env_open: pin the checkpoint's state (a read txn). */
es_err journal_pin(store *s, char *msg, size_t msg_len);

/**
 * @brief After the open transaction: switch LMDB to MDB_NOSYNC, replay the
 *        journal (or create it), make the first checkpoint, start the
 *        checkpoint thread.
 */
es_err journal_start(store *s, char *msg, size_t msg_len);

/**
 * @brief Write the events at positions first..last of the open write
 *        transaction as one entry and fdatasync it (writer thread).
 * @param[out] written false when the batch is too big for the ring (the
 *        caller commits and calls journal_checkpoint_sync instead)
 * @return ES_OK; ES_ERR_IO (the journal is broken from now on);
 *         ES_ERR_CORRUPT; ES_ERR_NO_MEMORY.
 */
es_err journal_write_batch(store *s, MDB_txn *txn, uint64_t first, uint64_t last, bool *written);

/**
 * @brief Write a batch of consumer-group ops (count ops, encoded as drawn
 *        in groups.c) as one group entry, WITHOUT an fdatasync (writer
 *        thread, inside the write transaction that applied them): the next
 *        append entry's sync, the next checkpoint, or the timer within
 *        LAZY_SYNC_US makes it durable (journal.c, design notes).
 * @param[out] written false when the batch is too big for the ring (the
 *        caller commits and calls journal_checkpoint_sync instead)
 * @return ES_OK; ES_ERR_IO (the journal is broken from now on);
 *         ES_ERR_STORE_FULL; ES_ERR_NO_MEMORY.
 */
es_err journal_write_groups(store *s, const uint8_t *ops, size_t len, uint32_t count,
                            bool *written);

/** @brief Cancel the entry just written (its commit failed). */
void journal_unwrite(store *s);

/** @brief True once a journal or checkpoint sync failed: nothing may commit until a restart. */
bool journal_broken(store *s);

/** @brief True while an entry written without an fdatasync is not known durable. */
bool journal_unsynced(store *s);

/** @brief After a commit: start a checkpoint in the background when due. */
void journal_committed(store *s);

/** @brief Make a checkpoint now, waiting for it (writer thread). */
es_err journal_checkpoint_sync(store *s);

/** @brief Stop the thread, checkpoint what is left, free; accepts no journal. */
void journal_close(store *s);

/** @brief The journal's figures (all zero without a journal). */
void journal_stats(store *s, store_journal_stats *st);

/* ---------------------------------------------------------------- life.c -- */

/** What of a stream reads may serve (store_life_view). */
typedef struct store_life_window {
    bool tombstoned;
    bool deleted;            /* soft-deleted, nothing appended since */
    uint64_t first_revision; /* lower revisions are not served */
    uint64_t min_recorded_us;
} store_life_window;

/** @brief The stream_life value of a stream number (all zero when none). */
es_err store_life_get(MDB_txn *txn, const store *s, uint64_t number, store_stream_life *l);

void store_life_encode(uint8_t out[STREAM_LIFE_BYTES], const store_stream_life *l);

/** @brief The window of a stream with this state and last revision at now_us. */
void store_life_view(const store_stream_life *l, uint64_t last_revision, uint64_t now_us,
                     store_life_window *w);

/** @brief Whether an event of the window's stream may be served. */
bool store_life_serves(const store_life_window *w, uint64_t revision, uint64_t recorded_at_us);

/*
 * Per-record visibility for walks over many streams (read-all): a one-stream
 * cache of the last window. Inactive (everything passes, nothing parsed)
 * when stream_life is empty.
 */
typedef struct store_life_filter {
    store *s;
    MDB_txn *txn;
    uint64_t now_us;
    bool active;
    bool cached;
    uint8_t stream[ES_MAX_NAME_BYTES];
    size_t stream_len;
    store_life_window window;
} store_life_filter;

void store_life_filter_open(store_life_filter *f, store *s, MDB_txn *txn);

/** @return ES_OK (*pass set); ES_ERR_CORRUPT; LMDB errors. */
es_err store_life_filter_pass(store_life_filter *f, const uint8_t *bytes, size_t len, bool *pass);

/** @brief Apply a lifecycle record being imported (a follower): the
 *         stream_life value it carries, in the import's transaction.
 *  @return ES_OK; ES_ERR_MALFORMED (bad data, or a stream not stored);
 *  LMDB errors. */
es_err store_life_import(store *s, MDB_txn *txn, const es_record *r);

/* ---------------------------------------------------------------- write.c -- */

/** @brief An append by the store itself in the caller's write transaction
 *         (the lifecycle records); *head the new last position. */
es_err store_append_own(store *s, MDB_txn *txn, const store_append_in *a, uint64_t *head);

/* ------------------------------------------------------------- scavenge.c -- */

/** @brief The removed_ids key (1 byte) and value (8 bytes) of an event id. */
void store_removed_id_digest(const uint8_t id[ES_EVENT_ID_BYTES], uint8_t key[1], uint8_t val[8]);

/** @brief Whether an id is among the scavenged ones; @return an LMDB code
 *  (0 found, MDB_NOTFOUND not). */
int store_removed_id_find(MDB_txn *txn, const store *s, const uint8_t id[ES_EVENT_ID_BYTES]);

/** @brief Set the clock's floor from the persisted high-water mark. */
void store_clock_floor(uint64_t hw_us);

/* --------------------------------------------------------------- erase.c -- */

/**
 * @brief At open, inside the opening transaction: the meta "encrypt" flag
 *        (set from want_encrypt when the store is new), the key tables, the
 *        key store. @return ES_OK or an error with msg set.
 */
es_err store_crypt_open(store *s, MDB_txn *txn, const char *dir, bool created, bool want_encrypt,
                        char *msg, size_t msg_len);

/** @brief After the opening commit: finish erasures a crash interrupted. */
es_err store_crypt_recover(store *s);

/** The key of one append's stream, found by the check phase. */
typedef struct store_key_plan {
    bool sealed;  /* the stream's events are sealed */
    bool bind;    /* a new stream: its stream_keys entry is written */
    bool new_key; /* it needs a key of its own (or its new subject's) */
    bool subject; /* the key is a subject's */
    bool new_subject;
    uint64_t slot; /* when sealed and not new_key */
} store_key_plan;

/**
 * @brief The check phase of an append: the stream's key (or that it gets
 *        one), its subject binding.
 * @return ES_OK; ES_ERR_ERASED (the stream's or subject's key was
 *   destroyed); ES_ERR_INVALID_ARGUMENT (a subject that differs from the
 *   stream's, or a subject on a store without encryption); LMDB errors as es_err.
 */
es_err store_crypt_plan(store *s, MDB_txn *txn, const store_append_in *a, bool exists,
                        uint64_t number, store_key_plan *kp);

/** @brief The write phase: bind a new stream to its key. @return an LMDB code. */
int store_crypt_bind(store *s, MDB_txn *txn, const store_append_in *a, uint64_t number,
                     store_key_plan *kp);

/** @brief Whether a stored record (header and payload) is sealed. */
bool store_record_sealed(const MDB_val *v);

/**
 * @brief The plain record of a sealed one, in a per-thread buffer valid
 *        until the next call on this thread.
 * @return ES_OK (*out, *out_len set); ES_ERR_ERASED (its key is destroyed);
 *   ES_ERR_CORRUPT; ES_ERR_NO_MEMORY.
 */
es_err store_record_unseal(store *s, const uint8_t *bytes, size_t len, const uint8_t **out,
                           size_t *out_len);

/**
 * @brief The plain record of one already opened by store_record_open: in,
 *        *payload and *len are its payload; out, the plain record (the same
 *        when it is not sealed, else as store_record_unseal).
 * @return ES_OK; ES_ERR_ERASED; ES_ERR_CORRUPT; ES_ERR_NO_MEMORY.
 */
es_err store_record_plain(store *s, const MDB_val *v, const uint8_t **payload, size_t *len);

/**
 * @brief store_record_open, and a sealed record opened (store_record_unseal):
 *        the payload is always the plain record.
 * @return ES_OK; ES_ERR_ERASED; ES_ERR_CORRUPT; ES_ERR_NO_MEMORY.
 */
es_err store_record_open_plain(store *s, const MDB_val *v, const uint8_t **payload, size_t *len);

/**
 * @brief An import's sealed record (a follower): checks its layout and size,
 *        and binds a new stream to the key its first event names.
 * @return ES_OK (also for a plain record); ES_ERR_NOT_ERASABLE (this store
 *   has no key store); ES_ERR_MALFORMED (msg says why); LMDB errors.
 */
es_err store_crypt_import(store *s, MDB_txn *txn, const es_record *r, const uint8_t *bytes,
                          size_t len, bool exists, uint64_t number, char *msg, size_t msg_len);

/**
 * @brief An imported lifecycle record that is an erasure (*erasure set):
 *        its erased_keys entry, in the import's transaction. The caller
 *        destroys the key after the commit (store_crypt_recover).
 * @return ES_OK; ES_ERR_MALFORMED; LMDB errors.
 */
es_err store_erase_import(store *s, MDB_txn *txn, const es_record *r, bool *erasure);

/** @brief Whether a stream's key was destroyed (ES_OK: not; ES_ERR_ERASED: it was). */
es_err store_crypt_stream_state(store *s, MDB_txn *txn, uint64_t number);

/**
 * @brief The key of a stream's snapshots: *sealed false for a plain stream.
 * @return ES_OK; ES_ERR_ERASED; ES_ERR_CORRUPT; LMDB errors as es_err.
 */
es_err store_crypt_snapshot_key(store *s, MDB_txn *txn, uint64_t number, bool *sealed,
                                uint8_t key[STORE_KEY_BYTES], uint64_t *slot);
/* -------------------------------------------------------------- groups.c -- */

/** @brief Open (with MDB_CREATE: create) the group tables; a read-only open
 *  of a store without them sets has_groups false. @return an LMDB code. */
int store_groups_open(store *s, MDB_txn *txn, unsigned flags);

/* ---------------------------------------------------------------- read.c -- */

/*
 * The read guard (design notes in read.c). store_read_guard is armed by
 * READ_GUARD in each read function; store_in_visitor is set while caller
 * code (a visitor, a log callback) runs, whose faults are not LMDB's.
 */
extern _Thread_local sigjmp_buf *store_read_guard;
extern _Thread_local bool store_in_visitor;

/** @brief The LMDB assertion hook: back to the guard, or exit(STORE_EXIT_DAMAGED). */
void store_on_lmdb_assert(MDB_env *env, const char *msg);

/*
 * The fatal scope (design notes in read.c): while a thread is inside a
 * function that opens the store or writes it, a SIGSEGV or SIGBUS outside a
 * guarded read ends the process with STORE_EXIT_DAMAGED and the damage
 * message, as LMDB's assertions do there. STORE_FATAL_SCOPE at the top of
 * such a function enters it; leaving the function, by any return, leaves it.
 */
extern _Thread_local unsigned store_fatal_depth;

static inline unsigned store_fatal_enter(void)
{
    return store_fatal_depth++;
}

static inline void store_fatal_leave(const unsigned *prev)
{
    store_fatal_depth = *prev;
}

#define STORE_FATAL_SCOPE                                                                          \
    unsigned store_fatal_prev_ __attribute__((cleanup(store_fatal_leave), unused)) =               \
        store_fatal_enter()

/** @brief Install the SIGBUS/SIGSEGV handlers of the guard (once per process). */
void store_guard_install(void);

/** @brief Begin a read-only transaction, clearing stale reader slots once. */
es_err store_read_txn(store *s, MDB_txn **txn);

/** @brief Disarm the guard and abort the read transaction. */
void store_read_end(MDB_txn *txn);

/*
 * Arm the guard right after store_read_txn: damage met inside LMDB ends the
 * enclosing function with ES_ERR_CORRUPT. Only `txn` may be used after the
 * jump, so it must not change after the setjmp. A function that uses it is
 * inside STORE_GUARDED_BEGIN/END (GCC's -Wclobbered cannot see that the
 * other locals are dead on the jump's path).
 */
#define READ_GUARD(txn)                                                                            \
    sigjmp_buf guard_jb_;                                                                          \
    if (sigsetjmp(guard_jb_, 1) != 0) {                                                            \
        store_read_end(txn);                                                                       \
        return ES_ERR_CORRUPT;                                                                     \
    }                                                                                              \
    store_read_guard = &guard_jb_

/*
 * The write guard: READ_GUARD for the part of a write transaction that
 * only builds it, before anything reaches the journal or the data file.
 * Damage met there (a fault or an LMDB assertion) jumps back to the
 * function, which calls store_write_damaged: the damage is logged and
 * counted, every later write is refused, and the function answers
 * ES_ERR_CORRUPT;
 * the server goes on serving reads. WRITE_GUARD_DECLARE gives the function its
 * jump buffer (write_jb_, for its sigsetjmp) and disarms the guard on every
 * return; WRITE_GUARD_ARM() arms it after the transaction began;
 * store_write_guard_off disarms it before the journal write or the commit,
 * where damage stays fatal (STORE_FATAL_SCOPE).
 */
static inline void store_write_guard_off(void)
{
    store_read_guard = NULL;
}

static inline void store_write_guard_cleanup(sigjmp_buf **unused)
{
    (void)unused;
    store_write_guard_off();
}

#define WRITE_GUARD_DECLARE                                                                        \
    sigjmp_buf write_jb_;                                                                          \
    sigjmp_buf *write_jbp_ __attribute__((cleanup(store_write_guard_cleanup), unused)) = &write_jb_

#define WRITE_GUARD_ARM() (store_read_guard = write_jbp_)

/** @brief After the write guard's jump: refuse writes from now on, log, ES_ERR_CORRUPT. */
es_err store_write_damaged(store *s, const char *what);

/**
 * @brief Begin a write transaction: mdb_txn_begin, or MDB_CORRUPTED once
 *        damage was met inside a write (store_write_damaged).
 */
int store_write_begin(store *s, MDB_txn **txn);

#if defined(__GNUC__) && !defined(__clang__)
#define STORE_GUARDED_BEGIN                                                                        \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wclobbered\"")
#define STORE_GUARDED_END _Pragma("GCC diagnostic pop")
#else
#define STORE_GUARDED_BEGIN
#define STORE_GUARDED_END
#endif

#endif

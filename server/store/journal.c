/*
 * journal.c — the durable append path: one sequential write and one
 * fdatasync per group commit, with the log still kept in LMDB.
 *
 * Design notes
 * ============
 *
 * What is on disk when an append is acknowledged. store_append_batch builds
 * its write transaction as before; then, before the commit, the values it
 * wrote to `events` (positions first..last, read back from the transaction:
 * the exact bytes the store's one encoder produced for LMDB, header and CRC
 * included) are written as ONE journal entry into preallocated space of
 * DIR/journal and fdatasynced; then the transaction is committed with
 * MDB_NOSYNC (pages handed to the kernel, no sync) and the requests are
 * answered with synced = true. Every acknowledged event is therefore either
 * in the journal, synced, or in the LMDB state of a checkpoint, synced.
 * Of appends, nothing but records goes into the journal (no client request,
 * no stream record, no counter): whatever the encoder does to a record, the
 * journal holds the same.
 *
 * Group entries. The other kind of entry holds a batch of consumer-group
 * ops (acks, skips, parks, unparks and checkpoint moves: the FLUSH ops of
 * store_group_apply, server/store/groups.c), written the same way inside
 * the write transaction that applied them, which then commits without a
 * sync, but WITHOUT an fdatasync of its own: it is answered once written
 * (synced = false; the writer hands group jobs back before the same
 * batch's appends are written, server/writer.h). It becomes durable with
 * the next fdatasync of the journal file, which writes back every page of
 * the file written before the call: the next append entry's (usually the
 * same writer batch's, right after), a checkpoint record's, or the
 * timer's: the checkpoint thread fdatasyncs the journal when an entry
 * written without a sync stayed uncovered (lazy_sync: every such entry is
 * durable within 2 * LAZY_SYNC_US = 0.1 s of its write).
 * A kill -9 loses nothing of it (the bytes are in the page cache, which a
 * restart reads); a power loss may lose the group entries of the last
 * 0.1 s, whose acks are then delivered again: at-least-once allows
 * that, and since every later entry is lost with them (below), no later
 * ack of their streams survives either, so per-stream order holds.
 * Counters: writes (entry writes ever made) and synced_writes (how many of
 * them a completed sync covered, the count read before the sync call).
 * Recovery replays both kinds in sequence order.
 * Replaying a group entry gives what its transaction gave because the ops
 * are deterministic given the group tables' prior state: a FLUSH op reads
 * and writes only the groups, group_done and group_parked tables (no clock:
 * a park's time travels in the op; no counter); only the ops that applied
 * are written, each with the number of the group it applied to; and those
 * tables are changed only by store_group_apply, whose other ops (create,
 * update, delete: a clock and the group counter) commit through a
 * checkpoint before they are answered. So at replay the tables hold the
 * checkpoint's state plus the earlier group entries, exactly the state the
 * ops first met (append entries do not touch them).
 *
 * Checkpoints. Between checkpoints LMDB is never synced, so after a power
 * loss its file may hold any mix of the pages written since: its meta pages
 * may name pages that never reached the disk. A checkpoint makes one LMDB
 * state durable and remembers how to get back to it:
 *
 *   1. (writer thread, between transactions) pin: a read transaction on
 *      the last committed state C (txnid c), a copy of C's meta page (the
 *      first META_COPY bytes of page c % 2, read back from the file and
 *      checked: LMDB's magic, txnid c, its last page), and the journal's
 *      write position at that moment;
 *   2. (checkpoint thread) fdatasync data.mdb: every page of C and its meta
 *      were written before 1, so they are now durable;
 *   3. write the checkpoint record into the slot gen % 2 of the journal
 *      (gen, store id, the meta copy, the journal position and the entry
 *      sequence number where replay starts) and fdatasync the journal;
 *   4. only then release the previous checkpoint's pin.
 *
 * Why recovery is right after a power loss. (a) The pages of C are never
 * overwritten while C may still be needed: LMDB reuses a page freed by
 * transaction f only when every reader is past f (mdb_find_oldest), and the
 * pin is a reader at c; every page of C that a later transaction replaced
 * was freed by some f > c. C's pages stay pinned until the NEXT checkpoint's
 * record is durable (step 4 after step 3), so at every instant the durable
 * checkpoint record names a state whose pages are intact on disk. (b) C's
 * meta page itself is overwritten by transaction c + 2 (LMDB alternates its
 * two meta pages), so recovery does not trust either meta page: before
 * LMDB opens the file, if page c % 2 is not byte for byte the copy, or the
 * other page is not a valid meta older than c, both are rewritten from the
 * copy (each with its own page number) and fdatasynced, and lock.mdb is
 * removed (its reader table and txnid describe the lost states; LMDB
 * rebuilds it). Pages past C's last page are free space to LMDB, whatever
 * they hold. (c) Every event acknowledged after C is in a journal entry
 * that was durable before its acknowledgement, with a sequence number and
 * logical offset at or after the checkpoint's: recovery pins C again and
 * replays entries from the checkpoint's position in order, each checked
 * (magic, its own logical offset, the next sequence number, CRC) and
 * applied as a write transaction that checks positions (head + 1), stream
 * revisions and event ids, storing each value unchanged; it stops at the
 * first entry that fails a check. Nothing after a damaged entry was ever
 * acknowledged as durable: an entry is written only after the previous
 * one's write returned (and, for an append entry, its fdatasync), so every
 * fdatasync of the journal made the entries before it durable as a whole.
 * A damaged entry therefore saw no completed journal sync after its write:
 * it and every entry after it are unsynced, i.e. an append entry whose
 * requests were never answered, or a group entry answered synced = false,
 * which a power loss may take (above). Replaying the prefix before it
 * gives a state the server went through (group ops touch only the group
 * tables; append entries never do). Then a
 * checkpoint makes the result durable before the first request is served.
 * A process crash (kill -9) is handled the same way: the later metas are
 * discarded, and the journal brings the same events back.
 *
 * The journal file: two checkpoint slots (4 KiB each, CRC, alternating:
 * a torn slot write leaves the other), then a ring of ring_bytes written
 * with zeros when the file is created (overwriting written blocks costs a
 * data flush only; appending or writing unwritten extents costs a metadata
 * flush too). Entries never wrap: one that does not fit before the ring's
 * end starts at the next lap. Room is what lies past the durable
 * checkpoint's position; a checkpoint starts when a quarter of the ring or
 * CKPT_INTERVAL_US has passed, and a writer that finds no room waits for it
 * (or makes one). A batch too big for half the ring is committed and then
 * checkpointed at once (LMDB's own two syncs).
 *
 * The checkpoint thread also runs the timer of unsynced group entries (a
 * timed wait on its condition variable, CLOCK_MONOTONIC); a failed timer
 * fdatasync breaks the journal like a failed append sync.
 *
 * Other writes (snapshot saves, lifecycle changes, group admin ops) commit
 * through store_commit_durable: commit, then a checkpoint, before their
 * answer. A failed journal write fails its batch (ENOSPC, EDQUOT, EFBIG:
 * STORE_FULL) and the next entry goes to the same place. A failed
 * fdatasync, or a failed checkpoint, leaves the journal broken: every later
 * append, and every commit through store_commit_durable, fails with
 * ES_ERR_IO before anything is committed, until esd restarts and recovers
 * (the kernel may have dropped the pages that failed, so nothing written
 * since can be trusted to be on disk). The entry whose fdatasync failed is
 * unwritten (its header zeroed, best effort): a restart without a power
 * loss reads the page cache, which still holds it, and must not replay a
 * batch whose requests failed. A failed LMDB commit after a durable entry
 * unwrites the entry (header zeroed and synced) for the same reason. A
 * checkpoint that fails after data.mdb's sync (its record's write or sync)
 * may still leave its record readable; that is safe: its state's pages were
 * synced, and the previous checkpoint's pin, still held, keeps every page
 * freed since then from reuse. The crash simulator's shim injects each of
 * these failures (tests/crashsim, journal-fault-*).
 *
 * Only a durable primary uses the journal (sync full, not read-only, not a
 * follower, STORE_SYNC_JOURNAL). Read-only opens (esctl db stat, check,
 * backup) see LMDB as it is: beside a running esd that is everything
 * committed; after a crash, start esd first so that it recovers.
 * The layout of LMDB's meta page used here (LP64: page header 16 bytes,
 * magic at 16, last page at 136, txnid at 144) is checked against
 * mdb_env_info at every checkpoint; a mismatch refuses the journal.
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "crc32c.h"
#include "internal.h"

#define JOURNAL_FILE     "journal"
#define SLOT_BYTES       4096u
#define RING_OFF         (2u * SLOT_BYTES)
#define SLOT_MAGIC       0x534a5345u /* "ESJS" */
#define ENTRY_MAGIC      0x454a5345u /* "ESJE" */
#define GROUP_MAGIC      0x474a5345u /* "ESJG": a batch of group ops */
#define JOURNAL_VERSION  1u
#define ENTRY_HDR        40u
#define META_COPY        256u
#define META_MAGIC_OFF   16u
#define META_LASTPG_OFF  136u
#define META_TXNID_OFF   144u
#define LMDB_META_MAGIC  0xBEEFC0DEu
#define CKPT_INTERVAL_US 1000000u
#define LAZY_SYNC_US     50000u /* an unsynced group entry is durable within twice this */
#define ZERO_CHUNK       (1u << 20)

/* Slot layout (little-endian): magic u32 | crc u32 (over 8..SLOT_BYTES) |
 * version u32 | psize u32 | gen u64 | seq u64 | lofs u64 | txnid u64 |
 * head u64 | ring u64 | store id 16 | meta copy at 128, META_COPY bytes. */
#define SL_VERSION 8
#define SL_PSIZE   12
#define SL_GEN     16
#define SL_SEQ     24
#define SL_LOFS    32
#define SL_TXNID   40
#define SL_HEAD    48
#define SL_RING    56
#define SL_ID      64
#define SL_META    128

/* Entry layout: magic u32 | crc u32 (over 8..end of payload) | seq u64 |
 * lofs u64 | first position u64 | payload bytes u32 | records u32, then
 * per record: length u32 | the stored value. A group entry (GROUP_MAGIC)
 * has the same header with first position 0 and records the number of
 * ops; its payload is laid out in server/store/groups.c. */

typedef struct ckpt {
    MDB_txn *pin; /* read transaction on the checkpoint's state */
    uint64_t gen, seq, lofs, txnid, head;
    uint8_t meta[META_COPY];
    uint64_t t0_us;
} ckpt;

struct journal {
    char dir[4096];
    int fd;
    uint64_t ring;
    uint32_t psize;
    bool found;   /* a valid checkpoint was read at open */
    ckpt durable; /* the last checkpoint whose record is on disk */
    ckpt pending; /* being made by the thread (in_flight) */
    /* writer thread */
    uint64_t lofs, seq; /* where the next entry goes */
    uint64_t last_lofs; /* the last entry's position (for unwrite) */
    uint64_t last_len;
    uint64_t since_ckpt_us; /* monotonic time of the last checkpoint start */
    uint8_t *buf;
    size_t buf_cap;
    /* shared with the thread */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool in_flight, stopping;
    /* Group entries written without an fdatasync (design notes): entry
     * writes ever made (never decremented, unwrite included), how many of
     * them are known durable, since when (monotonic us, 0: not armed) the
     * checkpoint thread's timer runs, and the writes it waits for (mu). */
    _Atomic uint64_t writes, synced_writes;
    _Atomic uint64_t lazy_since_us;
    uint64_t lazy_target;
    _Atomic bool broken;
    _Atomic uint64_t durable_lofs, durable_head;
    /* statistics */
    _Atomic uint64_t bytes, syncs, entries, checkpoints, ckpt_last_us, ckpt_max_us, ckpt_total_us;
    _Atomic uint64_t lazy_entries, lazy_syncs;
    _Atomic uint64_t replayed_entries, replayed_events, recovery_us, restored;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Every entry write counted in w (read before the fdatasync that made it
 * durable) is on disk: raise synced_writes to w (any thread). */
static void mark_synced(journal *j, uint64_t w)
{
    uint64_t cur = atomic_load(&j->synced_writes);
    while (cur < w && !atomic_compare_exchange_weak(&j->synced_writes, &cur, w)) {
    }
}

static bool full_pwrite(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return true;
}

static bool full_pread(int fd, void *p, size_t n, uint64_t off)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = pread(fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return true;
}

static bool join(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    return n > 0 && (size_t)n < len;
}

/* ---------------------------------------------------------------- slots -- */

static bool slot_read(int fd, unsigned i, uint8_t page[SLOT_BYTES])
{
    if (!full_pread(fd, page, SLOT_BYTES, (uint64_t)i * SLOT_BYTES)) {
        return false;
    }
    return get_u32le(page) == SLOT_MAGIC && get_u32le(page + SL_VERSION) == JOURNAL_VERSION &&
           get_u32le(page + 4) == crc32c(0, page + 8, SLOT_BYTES - 8);
}

static void slot_decode(const uint8_t *page, ckpt *c, uint64_t *ring, uint32_t *psize)
{
    memset(c, 0, sizeof *c);
    c->gen = get_u64le(page + SL_GEN);
    c->seq = get_u64le(page + SL_SEQ);
    c->lofs = get_u64le(page + SL_LOFS);
    c->txnid = get_u64le(page + SL_TXNID);
    c->head = get_u64le(page + SL_HEAD);
    memcpy(c->meta, page + SL_META, META_COPY);
    *ring = get_u64le(page + SL_RING);
    *psize = get_u32le(page + SL_PSIZE);
}

static void slot_encode(uint8_t page[SLOT_BYTES], const journal *j, const ckpt *c,
                        const uint8_t id[STORE_ID_BYTES])
{
    memset(page, 0, SLOT_BYTES);
    put_u32le(page, SLOT_MAGIC);
    put_u32le(page + SL_VERSION, JOURNAL_VERSION);
    put_u32le(page + SL_PSIZE, j->psize);
    put_u64le(page + SL_GEN, c->gen);
    put_u64le(page + SL_SEQ, c->seq);
    put_u64le(page + SL_LOFS, c->lofs);
    put_u64le(page + SL_TXNID, c->txnid);
    put_u64le(page + SL_HEAD, c->head);
    put_u64le(page + SL_RING, j->ring);
    memcpy(page + SL_ID, id, STORE_ID_BYTES);
    memcpy(page + SL_META, c->meta, META_COPY);
    put_u32le(page + 4, crc32c(0, page + 8, SLOT_BYTES - 8));
}

/* ------------------------------------------------------ meta restoration -- */

static bool meta_valid(const uint8_t *m)
{
    return get_u32le(m + META_MAGIC_OFF) == LMDB_META_MAGIC;
}

/*
 * Put data.mdb's meta pages back to the checkpoint's (design notes, (b)).
 * @return ES_OK (*rewritten says whether anything was written);
 *   ES_ERR_CORRUPT (data.mdb is missing, or older than the checkpoint);
 *   ES_ERR_IO.
 */
static es_err meta_restore(journal *j, bool *rewritten, char *msg, size_t msg_len)
{
    *rewritten = false;
    char p[4200];
    if (!join(p, sizeof p, j->dir, "data.mdb")) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    int fd = open(p, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        store_set_msg(msg, msg_len,
                      "%s: the journal has a checkpoint but data.mdb cannot be opened (%s): "
                      "the store's data file is lost",
                      j->dir, strerror(errno));
        return ES_ERR_CORRUPT;
    }
    const ckpt *c = &j->durable;
    uint8_t cur[2][META_COPY];
    bool ok = full_pread(fd, cur[0], META_COPY, 0) && full_pread(fd, cur[1], META_COPY, j->psize);
    if (!ok) {
        store_set_msg(msg, msg_len, "%s: data.mdb is shorter than its meta pages", j->dir);
        close(fd);
        return ES_ERR_CORRUPT;
    }
    unsigned mine = (unsigned)(c->txnid % 2);
    uint64_t t0 = meta_valid(cur[0]) ? get_u64le(cur[0] + META_TXNID_OFF) : 0;
    uint64_t t1 = meta_valid(cur[1]) ? get_u64le(cur[1] + META_TXNID_OFF) : 0;
    if ((t0 > t1 ? t0 : t1) < c->txnid) {
        store_set_msg(msg, msg_len,
                      "%s: data.mdb (transaction %llu) is older than the journal's checkpoint "
                      "(transaction %llu): not the data file the journal belongs to",
                      j->dir, (unsigned long long)(t0 > t1 ? t0 : t1),
                      (unsigned long long)c->txnid);
        close(fd);
        return ES_ERR_CORRUPT;
    }
    uint8_t want[2][META_COPY];
    for (unsigned i = 0; i < 2; i++) {
        memcpy(want[i], c->meta, META_COPY);
        put_u64le(want[i], i); /* mp_pgno */
    }
    uint64_t other = mine ? t0 : t1;
    bool same =
        !memcmp(cur[mine], want[mine], META_COPY) && meta_valid(cur[1 - mine]) && other < c->txnid;
    es_err rv = ES_OK;
    if (!same) {
        if (!full_pwrite(fd, want[0], META_COPY, 0) ||
            !full_pwrite(fd, want[1], META_COPY, j->psize) || fdatasync(fd) != 0) {
            store_set_msg(msg, msg_len, "%s: cannot restore data.mdb's meta pages: %s", j->dir,
                          strerror(errno));
            rv = ES_ERR_IO;
        } else {
            *rewritten = true;
        }
    }
    close(fd);
    if (rv == ES_OK && *rewritten) {
        /* Its reader table and txnid describe the states just discarded. */
        if (join(p, sizeof p, j->dir, "lock.mdb")) {
            unlink(p);
        }
    }
    return rv;
}

/* ----------------------------------------------------------------- open -- */

es_err journal_prepare(const char *dir, uint64_t ring_bytes, journal **out, char *msg,
                       size_t msg_len)
{
    *out = NULL;
    if (sizeof(size_t) != 8) {
        store_set_msg(msg, msg_len, "%s",
                      "the journal needs a 64-bit build (use --sync-method lmdb)");
        return ES_ERR_INVALID_ARGUMENT;
    }
    journal *j = calloc(1, sizeof *j);
    if (!j) {
        return ES_ERR_NO_MEMORY;
    }
    j->fd = -1;
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    j->ring = ring_bytes ? ring_bytes : STORE_DEFAULT_JOURNAL_BYTES;
    j->ring &= ~(uint64_t)4095;
    if (j->ring < STORE_MIN_JOURNAL_BYTES) {
        j->ring = STORE_MIN_JOURNAL_BYTES;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the timer of unsynced entries */
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    char p[4200];
    if (!join(p, sizeof p, dir, JOURNAL_FILE)) {
        free(j);
        return ES_ERR_INVALID_ARGUMENT;
    }
    int fd = open(p, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        *out = j; /* none yet: created by journal_start */
        return ES_OK;
    }
    j->fd = fd;
    uint8_t page[2][SLOT_BYTES];
    bool ok0 = slot_read(fd, 0, page[0]);
    bool ok1 = slot_read(fd, 1, page[1]);
    if (!ok0 && !ok1) {
        /* No checkpoint ever became durable: the file was being created,
         * and nothing was acknowledged through it. It is made anew. */
        *out = j;
        return ES_OK;
    }
    unsigned best = ok0 && ok1
                        ? (get_u64le(page[1] + SL_GEN) > get_u64le(page[0] + SL_GEN) ? 1u : 0u)
                        : (ok1 ? 1u : 0u);
    slot_decode(page[best], &j->durable, &j->ring, &j->psize);
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < RING_OFF + j->ring || j->psize < 512 ||
        j->psize > 65536) {
        store_set_msg(msg, msg_len, "%s: the journal is shorter than its ring, or damaged", p);
        journal_free(j);
        return ES_ERR_CORRUPT;
    }
    j->found = true;
    bool rewritten;
    es_err rv = meta_restore(j, &rewritten, msg, msg_len);
    if (rv != ES_OK) {
        journal_free(j);
        return rv;
    }
    atomic_store(&j->restored, rewritten ? 1 : 0);
    *out = j;
    return ES_OK;
}

void journal_free(journal *j)
{
    if (!j) {
        return;
    }
    if (j->fd >= 0) {
        close(j->fd);
    }
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->buf);
    free(j);
}

es_err journal_pin(store *s, char *msg, size_t msg_len)
{
    journal *j = s->jr;
    if (!j->found) {
        return ES_OK;
    }
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &j->durable.pin);
    if (rc) {
        store_set_msg(msg, msg_len, "%s: cannot pin the checkpoint: %s", j->dir, mdb_strerror(rc));
        return es_err_from_mdb(rc);
    }
    if ((uint64_t)mdb_txn_id(j->durable.pin) != j->durable.txnid) {
        store_set_msg(msg, msg_len,
                      "%s: LMDB opened transaction %llu, the journal's checkpoint is %llu", j->dir,
                      (unsigned long long)mdb_txn_id(j->durable.pin),
                      (unsigned long long)j->durable.txnid);
        mdb_txn_abort(j->durable.pin);
        j->durable.pin = NULL;
        return ES_ERR_CORRUPT;
    }
    return ES_OK;
}

/* ----------------------------------------------------------- checkpoints -- */

/* Step 1 (writer thread, no write transaction committed meanwhile). */
static es_err ckpt_begin(store *s, ckpt *c)
{
    journal *j = s->jr;
    memset(c, 0, sizeof *c);
    c->t0_us = mono_us();
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &c->pin);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    MDB_envinfo info;
    int fd;
    c->txnid = (uint64_t)mdb_txn_id(c->pin);
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_get_fd(s->env, &fd) != 0 ||
        (uint64_t)info.me_last_txnid != c->txnid ||
        !full_pread(fd, c->meta, META_COPY, (c->txnid % 2) * j->psize) || !meta_valid(c->meta) ||
        get_u64le(c->meta + META_TXNID_OFF) != c->txnid ||
        get_u64le(c->meta + META_LASTPG_OFF) != (uint64_t)info.me_last_pgno) {
        mdb_txn_abort(c->pin);
        c->pin = NULL;
        return ES_ERR_IO;
    }
    c->gen = j->durable.gen + 1;
    c->seq = j->seq;
    c->lofs = j->lofs;
    c->head = store_head(s);
    j->since_ckpt_us = c->t0_us;
    return ES_OK;
}

/* Steps 2-4 (any thread). Consumes c. */
static es_err ckpt_finish(store *s, ckpt *c)
{
    journal *j = s->jr;
    int rc = mdb_env_sync(s->env, 1);
    es_err rv = ES_OK;
    if (rc) {
        rv = es_err_from_mdb(rc);
    } else {
        uint8_t page[SLOT_BYTES];
        slot_encode(page, j, c, s->id);
        uint64_t w = atomic_load(&j->writes); /* written before the sync: made durable */
        if (!full_pwrite(j->fd, page, SLOT_BYTES, (c->gen % 2) * SLOT_BYTES) ||
            fdatasync(j->fd) != 0) {
            rv = ES_ERR_IO;
        } else {
            mark_synced(j, w);
        }
    }
    if (rv != ES_OK) {
        atomic_store(&j->broken, true);
        mdb_txn_abort(c->pin);
        c->pin = NULL;
        return rv;
    }
    uint64_t dt = mono_us() - c->t0_us;
    pthread_mutex_lock(&j->mu);
    MDB_txn *old = j->durable.pin;
    j->durable = *c;
    c->pin = NULL;
    atomic_store(&j->durable_lofs, j->durable.lofs);
    atomic_store(&j->durable_head, j->durable.head);
    pthread_mutex_unlock(&j->mu);
    if (old) {
        mdb_txn_abort(old);
    }
    atomic_fetch_add(&j->checkpoints, 1);
    atomic_fetch_add(&j->syncs, 2);
    atomic_store(&j->ckpt_last_us, dt);
    atomic_fetch_add(&j->ckpt_total_us, dt);
    if (dt > atomic_load(&j->ckpt_max_us)) {
        atomic_store(&j->ckpt_max_us, dt);
    }
    return ES_OK;
}

/*
 * The timer of unsynced group entries (design notes), LAZY_SYNC_US after
 * it was armed for the writes up to lazy_target: when no later entry's or
 * checkpoint's sync made those durable meanwhile, one fdatasync of the
 * journal; then it is armed again for whatever is still unsynced (younger
 * entries), or disarmed. Every entry is durable within 2 * LAZY_SYNC_US
 * of its write, and under appends (whose syncs cover the group entries)
 * the timer syncs nothing. Called and returns with j->mu held (checkpoint
 * thread). lazy_since_us is cleared BEFORE writes is read, and the writer
 * counts its write before it reads lazy_since_us: an entry written
 * meanwhile is either seen here or arms the timer itself (entry_write).
 */
static void lazy_sync(journal *j)
{
    if (atomic_load(&j->synced_writes) < j->lazy_target && !atomic_load(&j->broken)) {
        uint64_t w = atomic_load(&j->writes);
        pthread_mutex_unlock(&j->mu);
        int rc = fdatasync(j->fd);
        pthread_mutex_lock(&j->mu);
        if (rc != 0) {
            /* As a failed append sync: nothing written since the last
             * good sync can be trusted to be on disk. */
            atomic_store(&j->broken, true);
            atomic_store(&j->lazy_since_us, 0);
            return;
        }
        mark_synced(j, w);
        atomic_fetch_add(&j->syncs, 1);
        atomic_fetch_add(&j->lazy_syncs, 1);
    }
    atomic_store(&j->lazy_since_us, 0);
    uint64_t w = atomic_load(&j->writes);
    if (w > atomic_load(&j->synced_writes) && !atomic_load(&j->broken)) {
        j->lazy_target = w;
        atomic_store(&j->lazy_since_us, mono_us());
    }
}

static void *ckpt_thread(void *arg)
{
    store *s = arg;
    journal *j = s->jr;
    prctl(PR_SET_NAME, "esd-checkpoint", 0, 0, 0); /* top -H, fault injection */
    /* glibc gives a thread its malloc arena at its first malloc or free,
     * mapping 128 MiB of address space for a moment: done here, at start,
     * not at the first checkpoint, esd's address space settles before it
     * serves (VmPeak then says what requests cost). */
    void *volatile warm = malloc(1); /* volatile: not optimised away */
    free(warm);
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->in_flight && !j->stopping) {
            uint64_t since = atomic_load(&j->lazy_since_us);
            if (!since) {
                pthread_cond_wait(&j->cv, &j->mu);
                continue;
            }
            uint64_t due = since + LAZY_SYNC_US;
            if (mono_us() < due) {
                struct timespec ts = {(time_t)(due / 1000000u), (long)(due % 1000000u) * 1000};
                pthread_cond_timedwait(&j->cv, &j->mu, &ts);
                continue;
            }
            lazy_sync(j);
        }
        if (!j->in_flight) {
            break;
        }
        ckpt c = j->pending;
        pthread_mutex_unlock(&j->mu);
        ckpt_finish(s, &c);
        pthread_mutex_lock(&j->mu);
        j->in_flight = false;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static void wait_idle(journal *j)
{
    pthread_mutex_lock(&j->mu);
    while (j->in_flight) {
        pthread_cond_wait(&j->cv, &j->mu);
    }
    pthread_mutex_unlock(&j->mu);
}

es_err journal_checkpoint_sync(store *s)
{
    journal *j = s->jr;
    if (atomic_load(&j->broken)) {
        return ES_ERR_IO;
    }
    wait_idle(j);
    ckpt c;
    es_err rv = ckpt_begin(s, &c);
    if (rv != ES_OK) {
        atomic_store(&j->broken, true);
        return rv;
    }
    return ckpt_finish(s, &c);
}

void journal_committed(store *s)
{
    journal *j = s->jr;
    uint64_t used = j->lofs - atomic_load(&j->durable_lofs);
    if (used == 0 || atomic_load(&j->broken)) {
        return;
    }
    if (used < j->ring / 4 && mono_us() - j->since_ckpt_us < CKPT_INTERVAL_US) {
        return;
    }
    pthread_mutex_lock(&j->mu);
    bool busy = j->in_flight;
    pthread_mutex_unlock(&j->mu);
    if (busy) {
        return;
    }
    ckpt c;
    if (ckpt_begin(s, &c) != ES_OK) {
        atomic_store(&j->broken, true);
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->pending = c;
    j->in_flight = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* -------------------------------------------------------------- entries -- */

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

static bool buf_room(journal *j, size_t need)
{
    if (need <= j->buf_cap) {
        return true;
    }
    size_t cap = j->buf_cap ? j->buf_cap : 65536;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t *b = realloc(j->buf, cap);
    if (!b) {
        return false;
    }
    j->buf = b;
    j->buf_cap = cap;
    return true;
}

/* Where an entry of n bytes starts when the next one is at lofs. */
static uint64_t entry_place(const journal *j, uint64_t lofs, uint64_t n)
{
    uint64_t phys = lofs % j->ring;
    return phys + n > j->ring ? lofs + (j->ring - phys) : lofs;
}

/*
 * Write the entry whose payload is in j->buf from ENTRY_HDR to n (its
 * header is filled here): room past the durable checkpoint, one write, and
 * with sync one fdatasync (which makes every earlier entry durable too).
 * Without sync (group entries) the entry waits for the next sync: a later
 * entry's, a checkpoint's, or the timer's (lazy_sync). Both kinds of entry
 * (events, group ops) end here.
 */
static es_err entry_write(store *s, uint32_t magic, uint64_t first, size_t n, uint32_t count,
                          bool sync, bool *written)
{
    journal *j = s->jr;
    uint64_t len = pad8(n);
    if (!buf_room(j, (size_t)len)) {
        return ES_ERR_NO_MEMORY;
    }
    memset(j->buf + n, 0, (size_t)(len - n));
    /* Room: the ring past the durable checkpoint's position. */
    uint64_t at = entry_place(j, j->lofs, len);
    while (at + len - atomic_load(&j->durable_lofs) > j->ring) {
        pthread_mutex_lock(&j->mu);
        bool busy = j->in_flight;
        pthread_mutex_unlock(&j->mu);
        if (busy) {
            wait_idle(j);
        } else {
            es_err rv = journal_checkpoint_sync(s);
            if (rv != ES_OK) {
                return rv;
            }
        }
        if (atomic_load(&j->broken)) {
            return ES_ERR_IO;
        }
    }
    uint8_t *h = j->buf;
    put_u32le(h, magic);
    put_u64le(h + 8, j->seq);
    put_u64le(h + 16, at);
    put_u64le(h + 24, first);
    put_u32le(h + 32, (uint32_t)(n - ENTRY_HDR));
    put_u32le(h + 36, count);
    put_u32le(h + 4, crc32c(0, h + 8, n - 8));
    if (!full_pwrite(j->fd, h, (size_t)len, RING_OFF + at % j->ring)) {
        /* Nothing after the last durable entry counts: the next entry is
         * written at the same place. A file-size limit or quota refuses
         * like a full disk. */
        return errno == ENOSPC || errno == EDQUOT || errno == EFBIG ? ES_ERR_STORE_FULL : ES_ERR_IO;
    }
    uint64_t w = atomic_fetch_add(&j->writes, 1) + 1; /* this entry included */
    if (sync && fdatasync(j->fd) != 0) {
        /* The entry may still reach the disk (or sit in the page cache,
         * where a restart would read it): its header is zeroed so that it
         * is not replayed; its requests fail. Best effort: the journal is
         * broken from here on whatever this does. */
        atomic_store(&j->broken, true);
        uint8_t zero[ENTRY_HDR] = {0};
        if (full_pwrite(j->fd, zero, sizeof zero, RING_OFF + at % j->ring)) {
            (void)fdatasync(j->fd);
        }
        return ES_ERR_IO;
    }
    j->last_lofs = at;
    j->last_len = len;
    j->lofs = at + len;
    j->seq++;
    atomic_fetch_add(&j->bytes, len);
    atomic_fetch_add(&j->entries, 1);
    *written = true;
    if (sync) {
        mark_synced(j, w);
        atomic_fetch_add(&j->syncs, 1);
        return ES_OK;
    }
    atomic_fetch_add(&j->lazy_entries, 1);
    if (atomic_load(&j->lazy_since_us) == 0) {
        /* Start the timer (lazy_sync says why this order is safe). */
        pthread_mutex_lock(&j->mu);
        if (atomic_load(&j->lazy_since_us) == 0) {
            j->lazy_target = w;
            atomic_store(&j->lazy_since_us, mono_us());
            pthread_cond_broadcast(&j->cv);
        }
        pthread_mutex_unlock(&j->mu);
    }
    return ES_OK;
}

es_err journal_write_batch(store *s, MDB_txn *txn, uint64_t first, uint64_t last, bool *written)
{
    journal *j = s->jr;
    *written = false;
    if (atomic_load(&j->broken)) {
        return ES_ERR_IO;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->events, &cur);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    uint8_t kb[8];
    put_u64be(kb, first);
    MDB_val k = {8, kb}, v;
    size_t n = ENTRY_HDR;
    uint32_t count = 0;
    uint64_t limit = j->ring / 2;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    es_err rv = ES_OK;
    while (rc == 0) {
        if (k.mv_size != 8 || get_u64be(k.mv_data) != first + count) {
            rv = ES_ERR_CORRUPT;
            break;
        }
        if (n + 4 + v.mv_size > limit) {
            mdb_cursor_close(cur);
            return ES_OK; /* too big for the ring: the caller checkpoints instead */
        }
        if (!buf_room(j, n + 4 + v.mv_size)) {
            rv = ES_ERR_NO_MEMORY;
            break;
        }
        put_u32le(j->buf + n, (uint32_t)v.mv_size);
        memcpy(j->buf + n + 4, v.mv_data, v.mv_size);
        n += 4 + v.mv_size;
        count++;
        if (first + count > last) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rv == ES_OK && (rc != 0 || first + count != last + 1)) {
        rv = rc && rc != MDB_NOTFOUND ? es_err_from_mdb(rc) : ES_ERR_CORRUPT;
    }
    if (rv != ES_OK) {
        return rv;
    }
    return entry_write(s, ENTRY_MAGIC, first, n, count, true, written);
}

bool journal_broken(store *s)
{
    return atomic_load(&s->jr->broken);
}

bool journal_unsynced(store *s)
{
    journal *j = s->jr;
    return atomic_load(&j->writes) > atomic_load(&j->synced_writes);
}

es_err journal_write_groups(store *s, const uint8_t *ops, size_t len, uint32_t count, bool *written)
{
    journal *j = s->jr;
    *written = false;
    if (atomic_load(&j->broken)) {
        return ES_ERR_IO;
    }
    size_t n = ENTRY_HDR + len;
    if (n > j->ring / 2 || len > UINT32_MAX) {
        return ES_OK; /* too big for the ring: the caller checkpoints instead */
    }
    if (!buf_room(j, (size_t)pad8(n))) {
        return ES_ERR_NO_MEMORY;
    }
    memcpy(j->buf + ENTRY_HDR, ops, len);
    return entry_write(s, GROUP_MAGIC, 0, n, count, false, written);
}

void journal_unwrite(store *s)
{
    journal *j = s->jr;
    uint8_t zero[ENTRY_HDR] = {0};
    uint64_t w = atomic_load(&j->writes);
    if (!full_pwrite(j->fd, zero, sizeof zero, RING_OFF + j->last_lofs % j->ring) ||
        fdatasync(j->fd) != 0) {
        atomic_store(&j->broken, true);
        return;
    }
    mark_synced(j, w);
    j->lofs = j->last_lofs;
    j->seq--;
}

/* ------------------------------------------------------------ recovery -- */

/* Read the entry expected at lofs (or at the next lap). @return its length
 * (0: none, the end of the journal); *at where it starts. */
static uint64_t entry_read(journal *j, uint64_t lofs, uint64_t seq, uint64_t *at)
{
    for (int lap = 0; lap < 2; lap++) {
        uint64_t phys = lofs % j->ring;
        if (lap == 1) {
            if (phys == 0) {
                return 0;
            }
            lofs += j->ring - phys;
            phys = 0;
        }
        if (phys + ENTRY_HDR > j->ring) {
            continue;
        }
        uint8_t h[ENTRY_HDR];
        if (!full_pread(j->fd, h, ENTRY_HDR, RING_OFF + phys) ||
            (get_u32le(h) != ENTRY_MAGIC && get_u32le(h) != GROUP_MAGIC) ||
            get_u64le(h + 8) != seq || get_u64le(h + 16) != lofs) {
            continue;
        }
        uint64_t n = ENTRY_HDR + (uint64_t)get_u32le(h + 32);
        if (phys + n > j->ring || n > j->ring / 2 || !buf_room(j, (size_t)n)) {
            continue;
        }
        memcpy(j->buf, h, ENTRY_HDR);
        if (!full_pread(j->fd, j->buf + ENTRY_HDR, (size_t)(n - ENTRY_HDR),
                        RING_OFF + phys + ENTRY_HDR) ||
            crc32c(0, j->buf + 8, (size_t)(n - 8)) != get_u32le(h + 4)) {
            continue;
        }
        *at = lofs;
        return n;
    }
    return 0;
}

/* A group entry, read into j->buf (n bytes): its ops applied again. */
static es_err replay_groups(store *s, uint64_t seq, uint64_t n, char *msg, size_t msg_len)
{
    journal *j = s->jr;
    char why[256] = "";
    es_err rv = store_group_replay(s, j->buf + ENTRY_HDR, (size_t)(n - ENTRY_HDR),
                                   get_u32le(j->buf + 36), why, sizeof why);
    if (rv != ES_OK) {
        store_set_msg(msg, msg_len,
                      "%s: journal entry %llu (consumer group state) cannot be replayed: %s (%s)",
                      j->dir, (unsigned long long)seq, es_strerror(rv), why);
        return rv;
    }
    atomic_fetch_add(&j->replayed_entries, 1);
    return ES_OK;
}

static es_err replay(store *s, char *msg, size_t msg_len)
{
    journal *j = s->jr;
    uint64_t lofs = j->durable.lofs;
    uint64_t seq = j->durable.seq;
    store_import_in *recs = NULL;
    size_t recs_cap = 0;
    es_err rv = ES_OK;
    for (;;) {
        uint64_t at;
        uint64_t n = entry_read(j, lofs, seq, &at);
        if (n == 0) {
            break;
        }
        uint32_t count = get_u32le(j->buf + 36);
        uint64_t first = get_u64le(j->buf + 24);
        if (get_u32le(j->buf) == GROUP_MAGIC) {
            rv = replay_groups(s, seq, n, msg, msg_len);
            if (rv != ES_OK) {
                break;
            }
            lofs = at + n + (pad8(n) - n);
            seq++;
            continue;
        }
        if (count > recs_cap) {
            store_import_in *r = realloc(recs, count * sizeof *r);
            if (!r) {
                rv = ES_ERR_NO_MEMORY;
                break;
            }
            recs = r;
            recs_cap = count;
        }
        size_t p = ENTRY_HDR;
        bool ok = count > 0;
        for (uint32_t i = 0; i < count && ok; i++) {
            if (p + 4 > n) {
                ok = false;
                break;
            }
            uint32_t len = get_u32le(j->buf + p);
            if (p + 4 + len > n) {
                ok = false;
                break;
            }
            recs[i] = (store_import_in){j->buf + p + 4, len};
            p += 4 + len;
        }
        size_t bad;
        char why[256];
        if (ok && first != store_head(s) + 1) {
            ok = false;
        }
        if (!ok) {
            store_set_msg(msg, msg_len,
                          "%s: journal entry %llu (position %llu) does not follow the store's "
                          "head %llu: the store is damaged",
                          j->dir, (unsigned long long)seq, (unsigned long long)first,
                          (unsigned long long)store_head(s));
            rv = ES_ERR_CORRUPT;
            break;
        }
        rv = store_replay_records(s, recs, count, &bad, why, sizeof why);
        if (rv != ES_OK) {
            store_set_msg(msg, msg_len,
                          "%s: journal entry %llu (positions %llu..%llu) cannot be replayed: "
                          "%s (%s)",
                          j->dir, (unsigned long long)seq, (unsigned long long)first,
                          (unsigned long long)(first + count - 1), es_strerror(rv), why);
            break;
        }
        atomic_fetch_add(&j->replayed_entries, 1);
        atomic_fetch_add(&j->replayed_events, count);
        lofs = at + n + (pad8(n) - n);
        seq++;
    }
    free(recs);
    j->lofs = lofs;
    j->seq = seq;
    return rv;
}

/* A new journal file: the ring written with zeros, synced, its name too. */
static es_err create_file(journal *j, char *msg, size_t msg_len)
{
    char p[4200], tmp[4200];
    if (!join(p, sizeof p, j->dir, JOURNAL_FILE) || !join(tmp, sizeof tmp, j->dir, "journal.new")) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_set_msg(msg, msg_len, "cannot create %s: %s", tmp, strerror(errno));
        return ES_ERR_IO;
    }
    uint8_t *zero = calloc(1, ZERO_CHUNK);
    es_err rv = zero ? ES_OK : ES_ERR_NO_MEMORY;
    for (uint64_t off = 0; rv == ES_OK && off < RING_OFF + j->ring; off += ZERO_CHUNK) {
        uint64_t left = RING_OFF + j->ring - off;
        if (!full_pwrite(fd, zero, left < ZERO_CHUNK ? (size_t)left : ZERO_CHUNK, off)) {
            rv = errno == ENOSPC || errno == EDQUOT ? ES_ERR_STORE_FULL : ES_ERR_IO;
        }
    }
    free(zero);
    if (rv == ES_OK && fdatasync(fd) != 0) {
        rv = ES_ERR_IO;
    }
    if (rv == ES_OK && rename(tmp, p) != 0) {
        rv = ES_ERR_IO;
    }
    if (rv != ES_OK) {
        store_set_msg(msg, msg_len, "cannot write the journal %s (%llu bytes): %s", p,
                      (unsigned long long)(RING_OFF + j->ring), strerror(errno));
        close(fd);
        unlink(tmp);
        return rv;
    }
    int dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        store_set_msg(msg, msg_len, "cannot fsync the directory %s: %s", j->dir, strerror(errno));
        if (dfd >= 0) {
            close(dfd);
        }
        close(fd);
        return ES_ERR_IO;
    }
    close(dfd);
    j->fd = fd;
    j->lofs = 0;
    j->seq = 1;
    j->durable.gen = 0;
    return ES_OK;
}

es_err journal_start(store *s, char *msg, size_t msg_len)
{
    journal *j = s->jr;
    uint64_t t0 = mono_us();
    MDB_stat est;
    if (mdb_env_stat(s->env, &est) != 0) {
        return ES_ERR_IO;
    }
    if (j->found && j->psize != est.ms_psize) {
        store_set_msg(msg, msg_len, "%s: the journal's page size %u is not LMDB's %u", j->dir,
                      j->psize, est.ms_psize);
        return ES_ERR_CORRUPT;
    }
    j->psize = est.ms_psize;
    int rc = mdb_env_set_flags(s->env, MDB_NOSYNC, 1);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    es_err rv;
    if (j->found) {
        if (!buf_room(j, 65536)) {
            return ES_ERR_NO_MEMORY;
        }
        rv = replay(s, msg, msg_len);
    } else {
        rv = create_file(j, msg, msg_len);
    }
    if (rv == ES_OK) {
        rv = journal_checkpoint_sync(s);
        if (rv != ES_OK) {
            store_set_msg(msg, msg_len, "%s: the first checkpoint failed: %s", j->dir,
                          es_strerror(rv));
        }
    }
    if (rv != ES_OK) {
        return rv;
    }
    atomic_store(&j->recovery_us, mono_us() - t0);
    if (pthread_create(&j->thread, NULL, ckpt_thread, s) != 0) {
        return ES_ERR_INTERNAL;
    }
    j->thread_started = true;
    return ES_OK;
}

void journal_close(store *s)
{
    journal *j = s->jr;
    if (!j) {
        return;
    }
    if (j->thread_started) {
        pthread_mutex_lock(&j->mu);
        j->stopping = true;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
        /* A clean stop leaves nothing to replay. */
        if (j->lofs != atomic_load(&j->durable_lofs) && !atomic_load(&j->broken)) {
            journal_checkpoint_sync(s);
        }
    }
    if (j->pending.pin && j->in_flight) {
        mdb_txn_abort(j->pending.pin);
    }
    if (j->durable.pin) {
        mdb_txn_abort(j->durable.pin);
    }
    journal_free(j);
    s->jr = NULL;
}

void journal_stats(store *s, store_journal_stats *st)
{
    journal *j = s->jr;
    memset(st, 0, sizeof *st);
    if (!j) {
        return;
    }
    st->enabled = true;
    st->ring_bytes = j->ring;
    st->bytes = atomic_load(&j->bytes);
    st->syncs = atomic_load(&j->syncs);
    st->entries = atomic_load(&j->entries);
    st->checkpoints = atomic_load(&j->checkpoints);
    st->checkpoint_last_us = atomic_load(&j->ckpt_last_us);
    st->checkpoint_max_us = atomic_load(&j->ckpt_max_us);
    st->checkpoint_total_us = atomic_load(&j->ckpt_total_us);
    st->unsynced_entries = atomic_load(&j->lazy_entries);
    st->timer_syncs = atomic_load(&j->lazy_syncs);
    uint64_t head = store_head(s), dh = atomic_load(&j->durable_head);
    st->lag_events = head > dh ? head - dh : 0;
    st->replayed_entries = atomic_load(&j->replayed_entries);
    st->replayed_events = atomic_load(&j->replayed_events);
    st->recovery_us = atomic_load(&j->recovery_us);
    st->meta_restored = atomic_load(&j->restored) != 0;
    st->broken = atomic_load(&j->broken);
}

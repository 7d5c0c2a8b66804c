/*
 * follow — esd --follow-nats: a read-only replica store kept up from the
 * JetStream stream that a primary's relay writes (relay.h).
 *
 * Design notes
 * ------------
 * The follower has the same positions, revisions and event ids as the
 * primary, because it stores the primary's records byte for byte
 * (store_import_batch); its store id is its own. It serves reads and
 * subscriptions like any esd; appends, transactions and snapshot saves are
 * refused with ES_ERR_FOLLOWER by the store itself (store_options.follower),
 * so the follow thread is the store's only writer.
 *
 * The follow thread has its own libnats connection. It reads the stream
 * through an ephemeral pull consumer that starts at stream sequence
 * head + 1 (the relay publishes position p as sequence p of a stream it
 * created), acknowledges with AckAll once a fetched batch is committed, and
 * imports each fetched batch (up to FOLLOW_BATCH messages) in one LMDB write
 * transaction. After each commit it writes the eventfd import_fd, which
 * the loop thread watches (net.c) to wake subscriptions exactly as after a
 * group commit: subscribers of a follower see imported events live.
 *
 * Every message is checked before anything is imported; these caps and
 * checks hold whatever the peer sends:
 *   - payload at most max_event_bytes + FOLLOW_ENVELOPE_BYTES;
 *   - headers Es-Position, Es-Stream, Es-Revision, Es-Event-Id and
 *     Es-Crc32c present, each of bounded length and strict syntax; position,
 *     revision and event id equal to what the payload (a packed
 *     es.v1.RecordedEvent) says (Es-Stream is not compared: NATS may trim
 *     blanks around a header value, and a stream id may have them);
 *   - the payload's CRC32C equals Es-Crc32c;
 *   - then store_import_batch: position = head + 1, revision = the
 *     stream's next, event id new, names valid.
 * A message that fails is logged with its stream sequence and why, and the
 * follower stops consuming (it keeps serving what it has): a gap, a
 * repeat or garbage is never imported, and a human decides what to do. A
 * message at or below the head (a redelivery) is skipped.
 *
 * Connection failures, a missing stream, a consumer lost in a leader
 * election: the thread drops the consumer, waits (backoff 100 ms to 5 s)
 * and creates a new one at head + 1; so it does when fetches come back
 * empty for FOLLOW_STALL_FETCHES in a row while the stream info says there
 * is more (a consumer stuck on a replica that is catching up). Lag:
 * NumPending of the last message fetched (messages in the stream after
 * it), refreshed from the stream info while idle.
 *
 * Encrypted primaries (relay.h, "Encrypted stores"): sealed records are
 * imported sealed, byte for byte, and their keys come from the relay's keys
 * stream (STREAM_KEYS, subject PREFIX_keys.<slot>). Before a batch is
 * imported, every key slot its sealed records name that this store does not
 * hold yet is read from there (js_GetLastMsg) and written into this store's
 * own keys.esk at the same slot, synced (store_keys_import); an erased
 * marker is recorded as an erasure. A key message with Es-Key-Subject (a
 * data subject's key) binds the subject to the slot in the same call, and
 * the streams the records then bind to that slot are the subject's: so a
 * promoted follower erases a subject, and takes appends naming it, as the
 * primary does. A key that is not there yet cuts the
 * batch before the record that needs it; the rest is consumed again after
 * a backoff (the relay publishes a key before its first record, so this
 * only lasts while the keys stream is unreachable or was removed). An
 * erasure record makes the store destroy its copy of the key (overwritten
 * in place, synced) once the batch commits, and a restart finishes it if a
 * crash came between (store_crypt_recover): reads of the stream answer
 * ERASED. A follower created with encryption off has no key store and halts
 * at the first sealed record, saying so. A message of the keys stream that
 * is not a key of its slot, or whose Es-Key-Subject is not the hex of a
 * valid subject id (or names a subject bound here to another slot, or a
 * slot bound to another subject), halts the follower too.
 *
 * Promotion is manual: stop the follower, start esd on the same data
 * directory without --follow-nats; it is then a primary (docs/replication.md).
 */
#ifndef ES_FOLLOW_H
#define ES_FOLLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

#define FOLLOW_BATCH          1024u
#define FOLLOW_ENVELOPE_BYTES (64u * 1024u) /* record fields beyond data and metadata */
#define FOLLOW_FETCH_WAIT_MS  500
#define FOLLOW_STALL_FETCHES  6 /* empty fetches before the stream is asked */

typedef struct follow follow;

typedef struct follow_stats {
    bool connected;             /* the NATS connection is up and a consumer exists */
    bool halted;                /* a message was refused: consuming stopped (see the log) */
    uint64_t imported;          /* events imported since start */
    uint64_t pending;           /* messages in the stream after the last one fetched */
    uint64_t upstream_position; /* position of the last message fetched */
} follow_stats;

/**
 * @brief Start the follow thread (cfg->follow_nats must be set).
 * @param st a store opened with store_options.follower
 * @param import_fd an eventfd written after each import commit
 * @return ES_OK; ES_ERR_NO_MEMORY; ES_ERR_INTERNAL (thread).
 */
es_err follow_start(store *st, const server_config *cfg, int import_fd, follow **out);

/** @brief Stop the thread and free the follower; accepts NULL. */
void follow_stop(follow *f);

/** @brief Figures for metrics and stats; any thread. */
void follow_get_stats(follow *f, follow_stats *out);

#endif

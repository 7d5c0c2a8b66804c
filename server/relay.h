/*
 * relay — esd --relay-nats: an ordered, gap-free copy of the log in a NATS
 * JetStream stream, for followers (follow.h), projectors and other readers
 * on other machines.
 *
 * Design notes
 * ------------
 * esd stays the source of truth: the relay only reads what is committed.
 * It runs in its own thread with its own libnats connection, reads the log
 * through store_read_all in position order (short read transactions,
 * records copied out before anything is published), and never touches the
 * writer, the loop thread or a connection. A slow or absent NATS makes the
 * relay lag; appends, their fsync and their acknowledgements are unchanged.
 *
 * One message per event, in position order:
 *
 *   subject  PREFIX.<category>.<stream id>   each part escaped as a token
 *   payload  the packed es.v1.RecordedEvent, byte for byte as stored
 *            (sealed records sealed: see "Encrypted stores" below)
 *   headers  Nats-Msg-Id                <store id hex>:<position>
 *            Nats-Expected-Last-Msg-Id  the previous message's id (chained)
 *            Nats-Expected-Last-Sequence 0, on the first message of an
 *                                       empty stream instead
 *            Es-Position, Es-Stream, Es-Revision, Es-Type, Es-Event-Id
 *            (8-4-4-4-12 hex), Es-Crc32c (8 hex digits, of the payload)
 *
 * The chained expectation makes JetStream itself refuse a message that is
 * not the successor of the stream's last one: the copy can be neither
 * reordered nor gapped, whatever fails. The message id deduplicates a
 * message published twice within the stream's duplicate window.
 *
 * Token escaping (relay_subject_token): a NATS subject token may not hold
 * '.', '*', '>', whitespace, or be empty. Bytes A-Z a-z 0-9 - _ ~ = : @ + ,
 * ! ; stay as they are; every other byte (also '%', '$', '/', and each byte
 * of a non-ASCII character) becomes %XX (upper-case hex). An empty token
 * (the category of "-x") is "%00": NUL never occurs in a name. So
 * "acme.orders-7" is es.acme%2Eorders.acme%2Eorders-7, and consumers filter
 * a category with PREFIX.<escaped category>.>.
 *
 * Flow: async publishes with at most RELAY_MAX_IN_FLIGHT unacknowledged
 * (libnats' PublishAsync.MaxPending); acknowledgements move the acked
 * position (metrics: relay lag = head - acked). On any failure (a refused
 * or timed-out publish, a lost connection, a leader election) the relay
 * drops what is in flight, waits (exponential backoff, 100 ms to 5 s), and
 * resumes: it reads the stream's last message, takes its Es-Position and
 * message id, checks that this store holds the same event at that
 * position, and goes on from the next position. The same resume runs at
 * start, so a restart of esd (also after kill -9) neither repeats nor skips
 * an event. A stream that is missing is created (file storage, the
 * configured replicas, subjects PREFIX.>); one that holds a position this
 * store does not have, or another event there, is a different history: the
 * relay logs it and retries with backoff, publishing nothing.
 *
 * New events are noticed by polling store_head() every RELAY_POLL_MS while
 * caught up (an atomic load): no hook into the writer.
 *
 * Encrypted stores: the log is read as stored (STORE_FILTER_STORED), so a
 * sealed record is published sealed — data and metadata in field 12,
 * AES-256-GCM under its stream's or subject's key — and never in plain;
 * the relay never opens a record. Erased streams' records are relayed too
 * (still sealed): positions stay gapless. Followers need the keys, which
 * travel apart, in a second JetStream stream of their own:
 *
 *   stream   STREAM_KEYS (RELAY_KEYS_STREAM_SUFFIX), subjects
 *            PREFIX_keys.> (RELAY_KEYS_SUBJECT_SUFFIX), file storage, the
 *            same replicas, no limits; created when missing
 *   message  subject PREFIX_keys.<slot>, payload the 32-byte key, headers
 *            Es-Key-Slot, Es-Store (the store id in hex); or the erased
 *            marker: no payload, Es-Key-Erased: 1. Either has
 *            Es-Key-Subject when the slot is a data subject's key: the
 *            subject id (at most STORE_SUBJECT_MAX bytes) in lower-case
 *            hex, so that any name is a safe header value. The relay reads
 *            it from the store's slot_subjects (erase.c); a follower binds
 *            the subject to the slot when it imports the key, so that,
 *            promoted, it erases and appends to the subject as the primary
 *            does (follow.h). A slot's message published by a relay older
 *            than this header stays as it is (one message per slot): its
 *            subject is not known to followers that copy it.
 *
 * Why a stream apart: the events stream's sequence is the position (the
 * follower and the chained expectation depend on it), and a key must be
 * removable on its own, securely, which a message among the events is not
 * by anything a consumer could rely on. Why per slot: a key is shared by
 * every stream of a subject, and the slot is what a sealed record names.
 *
 * Before publishing the first record (since the last resume) sealed with a slot, the
 * relay publishes that slot's message synchronously, with ExpectNoMessage
 * (Nats-Expected-Last-Subject-Sequence 0): JetStream stores at most one
 * message per slot whatever the restarts, and a refusal means it is there
 * (compared with the store's key: another key is another store's stream,
 * and the relay stops as for another history). So a follower never sees a
 * record before its key. A key destroyed before it was relayed is published
 * as the erased marker.
 *
 * An erasure is an erasure record in the log (store.h). Before publishing
 * it, the relay reads the slot's message, removes it with js_EraseMsg
 * (STREAM.MSG.DELETE without no_erase: nats-server overwrites the message's
 * bytes in its block file with random data and syncs, where a plain delete
 * only marks it deleted), then publishes the erased marker. All three are
 * synchronous and idempotent, and the erasure record is published only
 * after them: an erasure record in the events stream means the key is gone
 * from the keys stream. After that, the keys stream holds no key of an
 * erased stream, and the events stream only its ciphertext.
 *
 * Operators must restrict who may read STREAM_KEYS (NATS permissions on
 * PREFIX_keys.> and on the stream's API): with the keys, the events
 * stream's data reads in plain, as it did before encryption reached it.
 * Plain stores (created with encryption off) relay as before: no keys
 * stream.
 */
#ifndef ES_RELAY_H
#define ES_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

#define RELAY_MAX_IN_FLIGHT       1024u
#define RELAY_BATCH               256u /* events read per read transaction */
#define RELAY_POLL_MS             5
#define RELAY_KEYS_STREAM_SUFFIX  "_KEYS"
#define RELAY_KEYS_SUBJECT_SUFFIX "_keys"
#define RELAY_KEYS_SENT_MAX       (2u * 1024u * 1024u) /* bitmap bytes: 2^24 slots */
/* Es-Key-Subject: a subject id (at most STORE_SUBJECT_MAX bytes) in hex. */
#define RELAY_KEY_SUBJECT_HEX_MAX (2u * STORE_SUBJECT_MAX + 1u)
/* The longest escaped token: every byte of a 256-byte name as %XX. */
#define RELAY_TOKEN_MAX (3u * 256u + 1u)

typedef struct relay relay;

typedef struct relay_stats {
    bool connected;          /* the NATS connection is up */
    bool resumed;            /* the resume point is known (the relay publishes) */
    uint64_t acked_position; /* highest position JetStream acknowledged */
    uint64_t published;      /* messages acknowledged since start */
    uint64_t errors;         /* failures that made the relay resume */
} relay_stats;

/**
 * @brief Start the relay thread (cfg->relay_nats must be set).
 * @param cfg borrowed: must outlive the relay
 * @return ES_OK; ES_ERR_NO_MEMORY; ES_ERR_INTERNAL (thread). Connection
 *   problems are not errors here: the thread retries and logs them.
 */
es_err relay_start(store *st, const server_config *cfg, relay **out);

/**
 * @brief Stop the thread (waits at most ~2 s for acknowledgements in
 *        flight) and free the relay; accepts NULL.
 */
void relay_stop(relay *r);

/** @brief Figures for metrics and stats; any thread. */
void relay_get_stats(relay *r, relay_stats *out);

/**
 * @brief Escape a name into one NATS subject token (see the notes).
 * @param out room for RELAY_TOKEN_MAX bytes (for len <= 256); NUL-terminated
 * @return the token's length, or 0 when it does not fit in cap
 */
size_t relay_subject_token(const uint8_t *name, size_t len, char *out, size_t cap);

#endif

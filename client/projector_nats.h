/*
 * projector_nats — the projector's other source: the JetStream stream an
 * esd relay writes (docs/replication.md), instead of an esd
 * subscription. Internal to libesprojector.
 *
 * Design notes
 * ------------
 * The exactly-once argument of projector.c is unchanged: the checkpoint is
 * the last applied position, stored in the read model's transaction; a
 * batch is fetched after it, applied and committed with it, and only then
 * acknowledged to JetStream. The consumer is an ephemeral pull consumer
 * from stream sequence checkpoint + 1 (the relay publishes position p as
 * sequence p), acknowledged with AckAll; it is dropped after any failure
 * (pnats_reset) and made again after the LMDB checkpoint, which is the only
 * truth — acknowledgements only spare JetStream redeliveries.
 *
 * Each message is checked before it is handed over: payload within
 * PNATS_MAX_PAYLOAD, Es-Crc32c and Es-Position present and equal to the
 * payload's checksum and position; the payload (a packed
 * es.v1.RecordedEvent) is decoded here with a small bounds-checked reader.
 * A message that fails makes the fetch fail with ES_ERR_MALFORMED (the
 * projector reports it and retries; it never skips it). A matching event
 * whose data and metadata are sealed (an encrypted store's event: the
 * relay carries it as stored, and only esd holds its key) makes the fetch
 * fail with ES_ERR_INVALID_ARGUMENT in the same way: applying it without its
 * data would build a wrong read model. Filters (category,
 * event type, stream prefix) are applied to the decoded events; the events
 * they leave out still advance what was scanned (the lag figure).
 */
#ifndef ES_PROJECTOR_NATS_H
#define ES_PROJECTOR_NATS_H

#include <stddef.h>
#include <stdint.h>

#include "es/client.h"

#define PNATS_MAX_PAYLOAD (64u * 1024u * 1024u)

typedef struct pnats pnats;

/**
 * @brief Prepare a JetStream source (no I/O).
 * @param urls comma-separated NATS URLs; stream the relay's stream
 * @param target ES_SUB_ALL, ES_SUB_CATEGORY, ES_SUB_EVENT_TYPE or
 *   ES_SUB_STREAM_PREFIX (name: the filter; copied)
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (ES_SUB_STREAM); ES_ERR_NO_MEMORY.
 */
es_err pnats_create(const char *urls, const char *stream, es_sub_target target, const char *name,
                    pnats **out);

/** @brief Close the consumer and the connection; accepts NULL. */
void pnats_destroy(pnats *n);

/**
 * @brief The next events after position `after` that match the filter.
 * @param max at most this many messages are fetched
 * @param[out] evs, n the matching events (n may be 0), valid until the
 *   next call on n
 * @param[out] scanned the position of the last message fetched (0: none)
 * @param[out] head the stream's last position as far as known (0: unknown)
 * @return ES_OK (also when nothing came within timeout_ms);
 *   ES_ERR_CONNECTION (cannot connect or no consumer: retry later);
 *   ES_ERR_MALFORMED (a message failed its checks: see msg);
 *   ES_ERR_NO_MEMORY.
 */
es_err pnats_fetch(pnats *n, uint64_t after, uint32_t max, int timeout_ms,
                   const es_recorded_event **evs, size_t *count, uint64_t *scanned, uint64_t *head,
                   char *msg, size_t msg_len);

/** @brief The fetched batch was committed: acknowledge it to JetStream. */
void pnats_ack(pnats *n);

/** @brief Drop the consumer: the next fetch starts after its `after`. */
void pnats_reset(pnats *n);

#endif

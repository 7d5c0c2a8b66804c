/*
 * loopstats — the figures the loop thread keeps about requests and
 * connections: request latencies by kind, appends, events and bytes by
 * result, connections accepted and refused, TLS failures, slow requests.
 * A leaf below the handler and the network layer, which count into it,
 * and the Prometheus page (metrics.h), which reads it.
 *
 * Design notes: plain integers, no atomics. Only the loop thread writes or
 * reads them (the HTTP scrape runs on the loop thread too). The writer
 * thread's figures are atomic histograms of its own (writer.h).
 */
#ifndef ES_LOOPSTATS_H
#define ES_LOOPSTATS_H

#include <stddef.h>
#include <stdint.h>

#include "es/err.h"
#include "histogram.h"

/* Request kinds by index: 0 = not decodable / unknown, 1.. = the
 * Es__V1__Request__KindCase values 10.. (hello = 1, ..., ping = 13), then
 * the lifecycle kinds 30..33 (14..17). */
#define LOOPSTATS_KINDS   18
#define LOOPSTATS_RESULTS 64 /* es_err codes are below this */

/** The loop thread's figures. Zero-initialised is ready to use. */
typedef struct loopstats {
    hist request_us[LOOPSTATS_KINDS];            /* by loopstats_kind_index (hist_latency_us) */
    uint64_t append_requests[LOOPSTATS_RESULTS]; /* appends and transactions, by es_err */
    uint64_t append_events[LOOPSTATS_RESULTS];
    uint64_t append_bytes[LOOPSTATS_RESULTS]; /* data + metadata */
    uint64_t connections_total;
    uint64_t connections_refused;
    uint64_t slow_requests;
    uint64_t tls_handshake_failures;
    uint64_t tls_plaintext_refused; /* plaintext clients on the TLS port */
    uint64_t prehello_closed;       /* oldest connection without a hello closed (per-source cap) */
} loopstats;

/** @brief The index of a request kind (Es__V1__Request__KindCase) for request_us. */
size_t loopstats_kind_index(int kind_case);

/** @brief The request kind of an index of request_us (0 for index 0). */
int loopstats_index_kind(size_t index);

/** @brief Count one append or transaction request that ended with rv
 *         (codes at or above LOOPSTATS_RESULTS count as ES_ERR_INTERNAL). */
void loopstats_append(loopstats *m, es_err rv, uint64_t events, uint64_t bytes);

#endif

/*
 * metrics — esd's counters and histograms, and their Prometheus text
 * exposition. No libevent and no I/O of its own: the network layer serves
 * the text over HTTP (net.c, esd --metrics-listen), and tests render it
 * into memory.
 *
 * Design notes
 * ------------
 * Two kinds of state, by thread:
 *
 *  - loop-thread figures (metrics, in server_ctx): requests and their
 *    latency by kind, appends/events/bytes by result, connections,
 *    authentication failures. Plain integers: only the loop thread writes
 *    or reads them (the HTTP scrape runs on the loop thread too).
 *  - writer-thread figures (ahist, inside the writer): commit batch sizes
 *    and commit durations, observed by the writer thread with relaxed
 *    atomics and copied out by writer_get_stats. The writer never calls
 *    into libevent or takes a lock for them.
 *
 * Histograms keep per-bucket (not cumulative) counts; the exposition
 * accumulates them into Prometheus' `le` buckets. Latencies are kept in
 * microseconds and exposed in seconds. Gauges that live elsewhere (head
 * position, store and map size, readers, subscriptions and their lag) are
 * read at scrape time from the store, the writer and the subscription
 * registry, and the relay's and follower's figures from their threads'
 * atomics (relay.h, follow.h).
 *
 * The exposition format is version 0.0.4 of the text format: `# HELP`,
 * `# TYPE`, then samples; every family has the `esd_` prefix.
 */
#ifndef ES_METRICS_H
#define ES_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "es/err.h"

#define HIST_MAX_BUCKETS 24
/* Request kinds by index: 0 = not decodable / unknown, 1.. = the
 * Es__V1__Request__KindCase values 10.. (hello = 1, ..., ping = 13). */
#define METRICS_KINDS   14
#define METRICS_RESULTS 64 /* es_err codes are below this */

/** Bucket bounds (upper, inclusive) in the unit of the observations. */
typedef struct hist_spec {
    const uint64_t *bounds;
    size_t n; /* bounds; the +Inf bucket is implied */
} hist_spec;

extern const hist_spec hist_latency_us; /* 50 us .. 10 s */
extern const hist_spec hist_batch;      /* 1 .. 1024 requests */

/** A histogram written by one thread and read by the same thread. */
typedef struct hist {
    uint64_t buckets[HIST_MAX_BUCKETS + 1];
    uint64_t count;
    uint64_t sum;
} hist;

/** A histogram written by one thread and read by another (relaxed atomics). */
typedef struct ahist {
    _Atomic uint64_t buckets[HIST_MAX_BUCKETS + 1];
    _Atomic uint64_t count;
    _Atomic uint64_t sum;
} ahist;

void hist_observe(hist *h, const hist_spec *spec, uint64_t v);
void ahist_observe(ahist *h, const hist_spec *spec, uint64_t v);
/** @brief A plain copy of an atomic histogram (each field read once). */
void ahist_read(const ahist *h, hist *out);

/** The loop thread's figures. Zero-initialised is ready to use. */
typedef struct metrics {
    hist request_us[METRICS_KINDS];
    uint64_t append_requests[METRICS_RESULTS]; /* appends and transactions, by es_err */
    uint64_t append_events[METRICS_RESULTS];
    uint64_t append_bytes[METRICS_RESULTS]; /* data + metadata */
    uint64_t connections_total;
    uint64_t connections_refused;
    uint64_t slow_requests;
    uint64_t tls_handshake_failures;
    uint64_t tls_plaintext_refused; /* plaintext clients on the TLS port */
    uint64_t prehello_closed;       /* oldest connection without a hello closed (per-source cap) */
} metrics;

/** @brief The index of a request kind (Es__V1__Request__KindCase) for request_us. */
size_t metrics_kind_index(int kind_case);

/** @brief Count one append or transaction request that ended with rv. */
void metrics_append(metrics *m, es_err rv, uint64_t events, uint64_t bytes);

struct server_ctx;

/**
 * @brief Write the Prometheus text of everything esd knows.
 * @note Loop thread: reads the loop's figures, the writer's (atomics), the
 *   store's statistics (one short read transaction) and the subscriptions.
 */
void metrics_render(FILE *out, struct server_ctx *srv);

#endif

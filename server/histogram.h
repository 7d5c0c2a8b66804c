/*
 * histogram — fixed-bucket histograms, the one primitive behind esd's
 * latency and batch-size figures. A leaf: no other server header, no I/O.
 *
 * Design notes
 * ------------
 * Two flavours, by thread:
 *
 *  - hist: written and read by one thread (the loop thread's request
 *    latencies, loopstats.h). Plain integers.
 *  - ahist: written by one thread and read by another (the writer thread's
 *    commit batch sizes and durations, writer.h). Relaxed atomics: the
 *    writer never takes a lock or calls into libevent for them, and the
 *    reader copies one out with ahist_read.
 *
 * Buckets keep per-bucket (not cumulative) counts; the Prometheus
 * exposition (metrics.c) accumulates them into `le` buckets. Bounds are
 * upper and inclusive, in the unit of the observations; the bucket after
 * the last bound is +Inf.
 */
#ifndef ES_HISTOGRAM_H
#define ES_HISTOGRAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_MAX_BUCKETS 24

/** Bucket bounds (upper, inclusive) in the unit of the observations. */
typedef struct hist_spec {
    const uint64_t *bounds;
    size_t n; /* bounds (at most HIST_MAX_BUCKETS); the +Inf bucket is implied */
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

/** @brief Count one observation v in the bucket spec puts it in. */
void hist_observe(hist *h, const hist_spec *spec, uint64_t v);
/** @brief As hist_observe; any one writer thread, relaxed atomics. */
void ahist_observe(ahist *h, const hist_spec *spec, uint64_t v);
/** @brief A plain copy of an atomic histogram (each field read once). */
void ahist_read(const ahist *h, hist *out);

#endif

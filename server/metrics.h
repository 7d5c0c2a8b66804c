/*
 * metrics — esd's Prometheus text exposition: the top of the server, which
 * reads every other module's figures and writes them as one page. No
 * libevent and no I/O of its own: the network layer serves the text over
 * HTTP (net.c, esd --metrics-listen), and tests render it into memory.
 * Nothing below includes this header; the figures themselves live below
 * (histogram.h, loopstats.h, and each module's *_stats).
 *
 * Design notes
 * ------------
 * Where each figure comes from, by thread:
 *
 *  - loop-thread figures (loopstats, in server_ctx): requests and their
 *    latency by kind, appends/events/bytes by result, connections,
 *    authentication failures. Plain integers: only the loop thread writes
 *    or reads them (the HTTP scrape runs on the loop thread too).
 *  - writer-thread figures (ahist, inside the writer): commit batch sizes
 *    and commit durations, observed by the writer thread with relaxed
 *    atomics and copied out by writer_get_stats.
 *
 * Histograms keep per-bucket (not cumulative) counts (histogram.h); the
 * exposition accumulates them into Prometheus' `le` buckets. Latencies are
 * kept in microseconds and exposed in seconds. Gauges that live elsewhere
 * (head position, store and map size, readers, subscriptions and their
 * lag) are read at scrape time from the store, the writer and the
 * subscription registry, and the relay's and follower's figures from their
 * threads' atomics (relay.h, follow.h).
 *
 * The exposition format is version 0.0.4 of the text format: `# HELP`,
 * `# TYPE`, then samples; every family has the `esd_` prefix.
 */
#ifndef ES_METRICS_H
#define ES_METRICS_H

#include <stdio.h>

struct server_ctx;

/**
 * @brief Write the Prometheus text of everything esd knows.
 * @note Loop thread: reads the loop's figures, the writer's (atomics), the
 *   store's statistics (one short read transaction) and the subscriptions.
 */
void metrics_render(FILE *out, struct server_ctx *srv);

#endif

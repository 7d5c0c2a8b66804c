/*
 * scale_util — what the scale tests share beyond the integration harness:
 * subscribe requests, the descriptor limit, RSS without the LMDB map, and
 * whether the long variant runs (SCALE_LONG=1, set by the "long" suite).
 */
#ifndef ES_TEST_SCALE_UTIL_H
#define ES_TEST_SCALE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "support.h"

/** Where a subscription starts. */
enum { SC_FROM_START = 0, SC_FROM_END = 1 };

/** @brief Append a framed Subscribe (target: an Es__V1__SubscribeTarget). */
void sc_put_subscribe(hbuf *b, uint64_t id, int target, const char *name, int start);

/** @brief Raise this process's descriptor soft limit to at least want (up to the hard
 *  limit). @return the soft limit now. */
unsigned long sc_raise_nofile(unsigned long want);

/**
 * @brief esd's anonymous RSS in kB (RssAnon: heap and buffers, without the
 *        LMDB map, whose pages are file-backed); -1 if unknown.
 */
long sc_rss_anon_kb(pid_t pid);

/** @brief True when the long variant runs (SCALE_LONG=1). */
bool sc_long(void);

/**
 * @brief Read and discard every frame that arrives within quiet_ms of the
 *        previous one. @return frames read; -1 when the peer closed.
 */
int sc_drain(int fd, int quiet_ms);

/**
 * @brief One sample of esd's /metrics on port, by its name and labels as
 *        written (e.g. `esd_subscription_batches_total{source="store"}`).
 * @return its value; -1 when the scrape failed or has no such sample.
 */
double sc_metric(uint16_t port, const char *key);

#endif

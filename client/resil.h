/*
 * resil — the resilience policy of the client: exponential backoff with
 * full jitter, and a circuit breaker.
 *
 * Design notes: pure functions over plain state and a caller-supplied clock
 * and random number, so the policy is tested without sockets or sleeping.
 *
 * Backoff ("full jitter", as in AWS's architecture note): the delay before
 * retry number k (k = 0 for the first retry) is uniform in
 * [0, min(max, initial * 2^k)]. Unlike a delay scaled by a random factor
 * around 1 (0.5..1.5, say), this spreads a herd of clients over the whole window, and it never
 * exceeds the ceiling.
 *
 * Breaker: counts consecutive failed connection attempts (a request that
 * fails on a healthy connection is the server's answer, not a failure of
 * the connection). CLOSED → OPEN after `threshold` failures; OPEN refuses
 * every attempt until reset_us have passed since it opened; then it admits
 * exactly one trial (HALF_OPEN): success closes it, failure re-opens it for
 * another reset_us. One trial call rather than several, since one
 * successful handshake proves the server is back. A threshold of 0 disables
 * the breaker.
 */
#ifndef ES_CLIENT_RESIL_H
#define ES_CLIENT_RESIL_H

#include <stdbool.h>
#include <stdint.h>

#include "es/client.h"

typedef struct breaker {
    uint32_t threshold;
    uint64_t reset_us;
    uint32_t failures; /* consecutive failed attempts */
    es_breaker_state state;
    uint64_t opened_at_us;
} breaker;

void breaker_init(breaker *b, uint32_t threshold, uint64_t reset_us);

/**
 * @brief May a connection attempt be made now? Moves OPEN to HALF_OPEN once
 *        the reset delay has passed (that attempt is the trial).
 * @param[out] wait_us when refused, the time left until the trial (may be NULL)
 */
bool breaker_allow(breaker *b, uint64_t now_us, uint64_t *wait_us);

/** @brief A connection attempt succeeded: CLOSED, count reset. */
void breaker_on_success(breaker *b);

/**
 * @brief A connection attempt failed.
 * @return true when the circuit is now OPEN (opened or re-opened).
 */
bool breaker_on_failure(breaker *b, uint64_t now_us);

/**
 * @brief The full-jitter delay before retry number attempt (0-based).
 * @param rnd a uniformly random 64-bit number
 */
uint64_t backoff_delay_us(uint64_t initial_us, uint64_t max_us, uint32_t attempt, uint64_t rnd);

/** @brief splitmix64: the next pseudo-random number of a state. */
uint64_t rng_next(uint64_t *state);

#endif

#include "resil.h"

void breaker_init(breaker *b, uint32_t threshold, uint64_t reset_us)
{
    b->threshold = threshold;
    b->reset_us = reset_us;
    b->failures = 0;
    b->state = ES_BREAKER_CLOSED;
    b->opened_at_us = 0;
}

bool breaker_allow(breaker *b, uint64_t now_us, uint64_t *wait_us)
{
    if (b->state != ES_BREAKER_OPEN) {
        return true;
    }
    uint64_t until = b->opened_at_us + b->reset_us;
    if (until < b->opened_at_us) {
        until = UINT64_MAX;
    }
    if (now_us >= until) {
        b->state = ES_BREAKER_HALF_OPEN;
        return true;
    }
    if (wait_us != NULL) {
        *wait_us = until - now_us;
    }
    return false;
}

void breaker_on_success(breaker *b)
{
    b->failures = 0;
    b->state = ES_BREAKER_CLOSED;
}

bool breaker_on_failure(breaker *b, uint64_t now_us)
{
    if (b->failures < UINT32_MAX) {
        b->failures++;
    }
    if (b->threshold == 0) {
        return false;
    }
    if (b->state == ES_BREAKER_HALF_OPEN || b->failures >= b->threshold) {
        b->state = ES_BREAKER_OPEN;
        b->opened_at_us = now_us;
        return true;
    }
    return false;
}

uint64_t backoff_delay_us(uint64_t initial_us, uint64_t max_us, uint32_t attempt, uint64_t rnd)
{
    uint64_t window = initial_us;
    for (uint32_t i = 0; i < attempt && window < max_us; i++) {
        window = window > UINT64_MAX / 2 ? UINT64_MAX : window * 2;
    }
    if (window > max_us) {
        window = max_us;
    }
    if (window == UINT64_MAX) {
        return rnd;
    }
    return rnd % (window + 1);
}

uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

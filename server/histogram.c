#include "histogram.h"

static const uint64_t latency_bounds[] = {
    50,    100,    250,    500,    1000,    2500,    5000,    10000,    25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

const hist_spec hist_latency_us = {latency_bounds,
                                   sizeof latency_bounds / sizeof latency_bounds[0]};
const hist_spec hist_batch = {batch_bounds, sizeof batch_bounds / sizeof batch_bounds[0]};

_Static_assert(sizeof latency_bounds / sizeof latency_bounds[0] <= HIST_MAX_BUCKETS, "buckets");
_Static_assert(sizeof batch_bounds / sizeof batch_bounds[0] <= HIST_MAX_BUCKETS, "buckets");

static size_t bucket_of(const hist_spec *spec, uint64_t v)
{
    size_t i = 0;
    while (i < spec->n && v > spec->bounds[i]) {
        i++;
    }
    return i; /* spec->n is +Inf */
}

void hist_observe(hist *h, const hist_spec *spec, uint64_t v)
{
    h->buckets[bucket_of(spec, v)]++;
    h->count++;
    h->sum += v;
}

void ahist_observe(ahist *h, const hist_spec *spec, uint64_t v)
{
    atomic_fetch_add_explicit(&h->buckets[bucket_of(spec, v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void ahist_read(const ahist *h, hist *out)
{
    /* Buckets first and the count last, so a reader racing a writer sees
     * at most a count that trails the buckets: the +Inf bucket is derived
     * from the buckets (never below them), _count from the same sum. */
    uint64_t total = 0;
    for (size_t i = 0; i <= HIST_MAX_BUCKETS; i++) {
        out->buckets[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += out->buckets[i];
    }
    out->sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    out->count = total;
}

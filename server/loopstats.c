#include "loopstats.h"

/* Kinds 10..22 at 1..13, the lifecycle kinds 30..33 at 14..17. */
size_t loopstats_kind_index(int kind_case)
{
    if (kind_case >= 10 && kind_case <= 22) {
        return (size_t)(kind_case - 9);
    }
    if (kind_case >= 30 && kind_case <= 33) {
        return (size_t)(kind_case - 16);
    }
    return 0;
}

int loopstats_index_kind(size_t index)
{
    if (index >= 1 && index <= 13) {
        return (int)index + 9;
    }
    if (index >= 14 && index < LOOPSTATS_KINDS) {
        return (int)index + 16;
    }
    return 0;
}

void loopstats_append(loopstats *m, es_err rv, uint64_t events, uint64_t bytes)
{
    size_t r = (unsigned)rv < LOOPSTATS_RESULTS ? (size_t)rv : ES_ERR_INTERNAL;
    m->append_requests[r]++;
    m->append_events[r] += events;
    m->append_bytes[r] += bytes;
}

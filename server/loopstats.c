#include "loopstats.h"

size_t loopstats_kind_index(int kind_case)
{
    return kind_case >= 10 && kind_case < 10 + LOOPSTATS_KINDS - 1 ? (size_t)(kind_case - 9) : 0;
}

void loopstats_append(loopstats *m, es_err rv, uint64_t events, uint64_t bytes)
{
    size_t r = (unsigned)rv < LOOPSTATS_RESULTS ? (size_t)rv : ES_ERR_INTERNAL;
    m->append_requests[r]++;
    m->append_events[r] += events;
    m->append_bytes[r] += bytes;
}

#include "prehello.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "auth_limiter.h"

typedef struct prehello_src {
    struct prehello_src *chain; /* the next source of the same bucket */
    auth_key k;
    uint32_t n;
    prehello_link *oldest, *newest;
} prehello_src;

struct prehello {
    uint32_t cap;
    uint64_t seed;
    size_t count;
    prehello_src *buckets[PREHELLO_BUCKETS];
};

prehello *prehello_create(uint32_t cap)
{
    prehello *p = calloc(1, sizeof *p);
    if (!p) {
        return NULL;
    }
    if (getrandom(&p->seed, sizeof p->seed, 0) != (ssize_t)sizeof p->seed) {
        free(p);
        return NULL;
    }
    p->cap = cap;
    return p;
}

void prehello_destroy(prehello *p)
{
    if (!p) {
        return;
    }
    for (size_t i = 0; i < PREHELLO_BUCKETS; i++) {
        while (p->buckets[i]) {
            prehello_src *s = p->buckets[i];
            p->buckets[i] = s->chain;
            free(s);
        }
    }
    free(p);
}

static size_t bucket_of(const prehello *p, const auth_key *k)
{
    uint64_t h = p->seed ^ 1469598103934665603ull;
    const uint8_t *b = (const uint8_t *)k;
    for (size_t i = 0; i < sizeof *k; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)(h % PREHELLO_BUCKETS);
}

prehello_link *prehello_add(prehello *p, const char *addr, prehello_link *link)
{
    memset(link, 0, sizeof *link);
    auth_key a, net;
    auth_key_parse(addr, &a, &net);
    const auth_key *k = net.kind ? &net : &a;
    size_t bi = bucket_of(p, k);
    prehello_src *s = p->buckets[bi];
    while (s && memcmp(&s->k, k, sizeof *k) != 0) {
        s = s->chain;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            return NULL;
        }
        s->k = *k;
        s->chain = p->buckets[bi];
        p->buckets[bi] = s;
    }
    link->src = s;
    link->prev = s->newest;
    if (s->newest) {
        s->newest->next = link;
    } else {
        s->oldest = link;
    }
    s->newest = link;
    s->n++;
    p->count++;
    return p->cap && s->n > p->cap ? s->oldest : NULL;
}

void prehello_remove(prehello *p, prehello_link *link)
{
    prehello_src *s = link->src;
    if (!s) {
        return;
    }
    if (link->prev) {
        link->prev->next = link->next;
    } else {
        s->oldest = link->next;
    }
    if (link->next) {
        link->next->prev = link->prev;
    } else {
        s->newest = link->prev;
    }
    memset(link, 0, sizeof *link);
    s->n--;
    p->count--;
    if (s->n == 0) {
        prehello_src **pp = &p->buckets[bucket_of(p, &s->k)];
        while (*pp != s) {
            pp = &(*pp)->chain;
        }
        *pp = s->chain;
        free(s);
    }
}

size_t prehello_count(const prehello *p)
{
    return p ? p->count : 0;
}

/*
 * prehello — connections that have not completed their hello, counted per
 * source (an IPv4 address, or an IPv6 /64), so that one source cannot hold
 * every connection slot with connections that never authenticate.
 *
 * Design notes
 * ------------
 * Each connection embeds a prehello_link; the network layer adds it when
 * the connection is accepted and removes it when the hello succeeds or
 * the connection closes. When a source has more than `cap` such
 * connections, prehello_add names the OLDEST of them for the caller to
 * close, not the new one: a flood of idle or failing connections from an
 * address then keeps cycling through its own slots, while a real client
 * at the same address (a NAT, a shared host) that connects and says hello
 * at once gets through; refusing the newest would lock it out for as long
 * as the flood lasts.
 *
 * Sources are kept in a chained hash table of PREHELLO_BUCKETS heads, with
 * a random per-process seed (so addresses cannot be chosen to collide); a
 * source exists only while it has a connection, so memory is bounded by
 * the number of connections. No libevent; loop thread only.
 */
#ifndef ES_PREHELLO_H
#define ES_PREHELLO_H

#include <stddef.h>
#include <stdint.h>

#define PREHELLO_BUCKETS 1024

struct prehello_src;

/** Embedded in each connection; zero-initialised = not tracked. */
typedef struct prehello_link {
    struct prehello_link *prev, *next; /* the same source's, oldest first */
    struct prehello_src *src;          /* NULL: not tracked */
} prehello_link;

typedef struct prehello prehello;

/**
 * @param cap connections without a hello per source (0 = no cap)
 * @return the table, or NULL when out of memory.
 */
prehello *prehello_create(uint32_t cap);

/** @brief Free the table and every source. Accepts NULL. Links left are dangling. */
void prehello_destroy(prehello *p);

/**
 * @brief Track a new connection of the address addr (as inet_ntop writes it).
 * @return NULL; or, when the source now has more than cap connections, the
 *   link of its oldest one, which the caller closes (and so removes). Out
 *   of memory, the connection is simply not tracked.
 */
prehello_link *prehello_add(prehello *p, const char *addr, prehello_link *link);

/** @brief Stop tracking a connection (its hello succeeded, or it closed). Idempotent. */
void prehello_remove(prehello *p, prehello_link *link);

/** @brief Connections tracked now (all sources). */
size_t prehello_count(const prehello *p);

#endif

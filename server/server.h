/*
 * server.h — the running state of one esd instance, as seen by the handler
 * and the network layer: its configuration (config.h), the store, the
 * writer, the subscriptions, and the loop thread's figures. Deliberately
 * small: it is not a header that everything includes (the store, the
 * writer, the options, the relay and the follower do not).
 */
#ifndef ES_SERVER_H
#define ES_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "loopstats.h"
#include "store.h"
#include "writer.h"

typedef struct server_counters {
    uint64_t appends_ok;
    uint64_t appends_failed;
    uint64_t events_appended;
    uint32_t connections;
    uint32_t subscriptions;
    uint64_t auth_failures;
    uint64_t permission_denied;
} server_counters;

struct subs;
struct groups;
struct relay;
struct follow;
struct auth;
struct auth_limiter;

typedef struct server_ctx {
    const server_config *cfg;
    store *st;
    writer *w;
    struct subs *subs;
    struct groups *groups; /* consumer groups (groups.h) */
    struct relay *relay;   /* NULL unless --relay-nats */
    struct follow *follow; /* NULL unless --follow-nats */
    /* With follow: an eventfd the follower writes after each import
     * commit, so that net wakes the subscriptions (as after a group commit). */
    int import_fd;
    struct auth *auth;            /* NULL: authentication off, every client is admin */
    struct auth_limiter *limiter; /* failed hellos per peer address (NULL: no limit) */
    /* Asks the loop for a subscription delivery pass (set by net). */
    void (*kick)(void *kick_ctx);
    void *kick_ctx;
    uint64_t start_us;
    server_counters counters; /* loop thread only */
    loopstats metrics;        /* loop thread only (loopstats.h); read by metrics.h */
    bool shutting_down;
} server_ctx;

/*
 * What /readyz answers (both HTTP listeners): ready, or not while esd is
 * shutting down or its store refuses every write after meeting damage
 * inside one (reads are still served then; the log says what was met).
 * @return the HTTP status, 200 or 503; *body its text.
 */
static inline int server_readiness(const server_ctx *srv, const char **body)
{
    if (srv->shutting_down) {
        *body = "shutting down\n";
        return 503;
    }
    if (srv->st && store_writes_refused(srv->st)) {
        *body = "store damaged: writes refused until restart\n";
        return 503;
    }
    *body = "ready\n";
    return 200;
}

#endif

/*
 * server.h — the configuration and shared state of one esd instance, as
 * seen by the handler and the network layer. Deliberately small: it is not
 * a header that everything includes (the store and writer do not).
 */
#ifndef ES_SERVER_H
#define ES_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "writer.h"

#define ESD_VERSION          "0.1.0"
#define ESD_PROTOCOL_VERSION 1u
#define ESD_DEFAULT_PORT     7400

typedef struct server_config {
    const char *listen;   /* HOST:PORT */
    const char *data_dir; /* default: ./esd-data */
    bool sync;
    uint64_t map_size;
    uint32_t max_frame_bytes;
    uint32_t max_connections;
    uint32_t idle_timeout_s;          /* 0 = none */
    uint32_t handshake_timeout_s;     /* hello must arrive within this */
    uint32_t frame_timeout_s;         /* an incomplete frame must complete within this */
    uint32_t max_in_flight;           /* requests queued for the writer per connection */
    uint32_t max_output_bytes;        /* stop reading a client above this much unsent output */
    uint64_t max_pending_bytes;       /* request bytes held for the writer per connection */
    uint64_t max_memory;              /* all connections' output, queued requests, read-ahead */
    uint32_t slow_consumer_timeout_s; /* paused by max_memory this long: subscriber dropped */
    uint32_t max_events_per_append;
    uint32_t max_event_bytes;
    uint32_t max_page;
    uint32_t max_batch; /* requests per group commit */
    log_level log_level;
    const char *auth_file;      /* NULL: no authentication (loopback only unless insecure) */
    bool insecure;              /* serve without authentication on any address */
    uint32_t auth_failures;     /* failed hellos per peer address at once (refilled 1/s) */
    const char *metrics_listen; /* HOST:PORT of the Prometheus endpoint, NULL = none */
    uint32_t slow_request_ms;   /* log requests slower than this (0 = never) */
    const char *tls_cert;       /* PEM certificate chain: serve TLS only (NULL: plaintext) */
    const char *tls_key;        /* PEM private key of tls_cert */
    const char *relay_nats;     /* NATS URL(s) to relay the log to (NULL: no relay) */
    const char *relay_stream;   /* the JetStream stream the relay writes (default "esd") */
    const char *relay_subject;  /* subject prefix of relayed events (default "es") */
    uint32_t relay_replicas;    /* replicas of the stream when the relay creates it */
    const char *follow_nats;    /* NATS URL(s): be a read-only follower (NULL: a primary) */
    const char *follow_stream;  /* the JetStream stream the follower copies (default "esd") */
} server_config;

/** @brief Fill a config with the defaults. */
void server_config_defaults(server_config *cfg);

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
struct relay;
struct follow;
struct auth;
struct auth_limiter;

typedef struct server_ctx {
    const server_config *cfg;
    store *st;
    writer *w;
    struct subs *subs;
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
    metrics metrics;          /* loop thread only (metrics.h) */
    bool shutting_down;
} server_ctx;

#endif

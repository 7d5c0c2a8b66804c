/*
 * config — the configuration of one esd instance: every setting the
 * options (command line, --config file, environment) can give, and their
 * defaults. A leaf: the option parser fills it, and the relay, the
 * follower, the handler and the network layer read it, without pulling in
 * the writer or the store (server.h holds the running state).
 *
 * Ownership: strings are borrowed from argv, the environment or the
 * options' copies of the --config file (options.h); they live as long as
 * the esd_options that was parsed.
 */
#ifndef ES_CONFIG_H
#define ES_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

#define ESD_VERSION          "0.1.0"
#define ESD_PROTOCOL_VERSION 1u
#define ESD_DEFAULT_PORT     7400

typedef struct server_config {
    const char *listen;   /* HOST:PORT */
    const char *data_dir; /* default: ./esd-data */
    bool sync;
    bool no_encrypt;         /* a new store is created without encryption at rest */
    const char *sync_method; /* "journal", "lmdb" or "nometasync" (options_parse checks) */
    uint64_t journal_bytes;  /* the journal's ring */
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
    uint32_t max_batch;            /* requests per group commit */
    uint32_t scavenge_slice;       /* steps per scavenger slice; 0: off */
    uint32_t scavenge_interval_ms; /* the scavenger's idle timer */
    log_level log_level;
    const char *auth_file;      /* NULL: no authentication (loopback only unless insecure) */
    bool insecure;              /* serve without authentication on any address */
    uint32_t auth_failures;     /* failed hellos per peer address at once (refilled 1/s) */
    uint32_t auth_global_rate;  /* failed hellos per second over all addresses (0 = none) */
    uint32_t max_prehello;      /* connections per address (IPv6: /64) before their hello */
    const char *metrics_listen; /* HOST:PORT of the Prometheus endpoint, NULL = none */
    const char *http_listen;    /* HOST:PORT of the web console, NULL = none */
    uint32_t http_max_conns;    /* web console connections; beyond, 503 and close */
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

/**
 * @brief Fill a config with the defaults: the limits are those of the
 *        modules that enforce them (frame.h, store.h, auth.h).
 */
void server_config_defaults(server_config *cfg);

#endif

/*
 * natsh — what the nats suite's tests share: nats-server processes on
 * loopback ports in a temporary directory (one node, or a 3-node JetStream
 * cluster), and reading a relayed JetStream stream back.
 *
 * Design notes
 * ------------
 * Tests skip (exit 77, with the reason) only when nats-server is not
 * installed (tools/dev.sh installs it). Ports are picked free by the
 * kernel (bind to port 0, read it, close) just before a node starts; a
 * node is spawned with PR_SET_PDEATHSIG so a test killed by its timeout
 * leaves no server behind. Readiness is a poll with a deadline (the
 * JetStream account info answers once the meta leader is elected), never
 * a sleep.
 */
#ifndef ES_NATSH_H
#define ES_NATSH_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "support.h"

#define NATSH_MAX_NODES 3

typedef struct natsh_node {
    char name[16];
    uint16_t client_port, cluster_port;
    char conf[512];
    char log[512];
    char store_dir[512];
    pid_t pid;
} natsh_node;

typedef struct natsh_cluster {
    int n;
    char base[256];
    natsh_node nodes[NATSH_MAX_NODES];
    char urls[256]; /* every node's client URL, comma-separated */
} natsh_cluster;

/** @brief Skip the test (exit 77) when nats-server is not installed. */
void natsh_require_server(void);

/**
 * @brief Start n (1 or 3) JetStream nodes under base and wait until
 *        JetStream answers; fails the test (rel_fail) on error.
 */
void natsh_start(natsh_cluster *c, int n, const char *base);

/** @brief Start node i again (same ports and store) after natsh_kill; wait until it answers. */
void natsh_restart(natsh_cluster *c, int i);

/** @brief SIGKILL node i and reap it. */
void natsh_kill(natsh_cluster *c, int i);

/** @brief Stop every node. */
void natsh_stop(natsh_cluster *c);

/** @brief The node index whose server name is `name`, or -1. */
int natsh_node_by_name(const natsh_cluster *c, const char *name);

/** @brief Connect to the cluster with a JetStream context; fails the test on error. */
void natsh_connect(const natsh_cluster *c, natsConnection **nc, jsCtx **js);

/**
 * @brief Read the whole stream from sequence 1 and check that message i
 *        (1-based) has Es-Position i, Nats-Msg-Id "<store hex>:i", and a
 *        payload matching its Es-Crc32c; that there are exactly `expect`
 *        messages. Fails the test (rel_fail) otherwise.
 * @param store_hex the relaying store's id in hex (32 chars)
 */
void natsh_verify_copy(jsCtx *js, const char *stream, const char *store_hex, uint64_t expect);

/** @brief The stream's current leader's server name ("" if unknown). */
void natsh_stream_leader(jsCtx *js, const char *stream, char *out, size_t cap);

/**
 * @brief The value of an unlabelled sample in esd's /metrics (esd started
 *        with --metrics-listen 127.0.0.1:0; the port is read from the last
 *        "metrics listening" line of its log). -1 when absent.
 */
double natsh_metric(const esd_proc *e, const char *name);

#endif

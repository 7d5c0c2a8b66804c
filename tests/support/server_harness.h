/*
 * server_harness — a real store, writer thread and subscription registry
 * around one in-memory session, for tests and fuzz targets that drive the
 * handler without sockets. Replies land in a byte buffer and are decoded
 * frame by frame. Consumer groups (groups.h) are there too: their writer
 * jobs are completed by harness_drain, their pushes sent by harness_deliver.
 */
#ifndef ES_SERVER_HARNESS_H
#define ES_SERVER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es.pb-c.h"
#include "handler.h"
#include "server.h"
#include "subs.h"

typedef struct harness {
    char dir[128];
    server_config cfg;
    server_ctx srv;
    session sess;
    uint8_t *out;
    size_t out_len, out_cap, out_pos;
    bool out_oom;
} harness;

/** @brief Open a store in a fresh temporary directory (under dir_base, e.g. /dev/shm). */
int harness_init(harness *h, const char *dir_base);
/** @brief Stop everything and remove the directory. */
void harness_finish(harness *h);

/** @brief cmocka fixtures: *state is a harness of its own under /tmp. */
int harness_setup(void **state);
int harness_teardown(void **state);

/** @brief Pack a request and hand it to the handler as one frame body. */
es_err harness_send(harness *h, const Es__V1__Request *req);
/** @brief Hand raw bytes to the handler as one frame body. */
es_err harness_send_raw(harness *h, const uint8_t *body, size_t len);
/** @brief Wait for the writer and finish every completed job. */
void harness_drain(harness *h);
/** @brief Deliver subscriptions and group events until nothing is left to do. */
void harness_deliver(harness *h);
/** @brief The next reply, or NULL; free with es__v1__response__free_unpacked(r, NULL). */
Es__V1__Response *harness_next(harness *h);
/** @brief Drop every reply not read yet. */
void harness_clear(harness *h);

/** @brief Build and send Hello{1}. */
es_err harness_hello(harness *h, uint64_t id);

#endif

/*
 * it — what the account integration tests share on top of the test-support
 * library (esd_init/esd_start/esd_stop/esd_destroy: the real esd on port 0
 * in a temporary directory): clients of libesclient on that port, and
 * running the es-account binary with its output captured.
 *
 * The es-account binary comes from ES_ACCOUNT_BIN, esd from ESD_BIN (both
 * set by tests/account/meson.build). Nothing here calls cmocka, so worker
 * threads may use it; the tests assert on what it returns.
 */
#ifndef ES_TEST_ACCOUNT_IT_H
#define ES_TEST_ACCOUNT_IT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check_rv.h"
#include "es/aggregate.h"
#include "support.h"

/** @brief A client of 127.0.0.1:port, connected. @return NULL on failure. */
es_client *it_client(uint16_t port);

/** The outcome of one es-account run. */
typedef struct it_run {
    int status; /* exit status, or -1 when it did not exit normally */
    char out[65536];
    char err[8192];
} it_run;

/**
 * @brief Run es-account with the arguments (NULL-terminated), stdin from
 *        /dev/null, at most 30 s. `server` ("127.0.0.1:PORT") is put in
 *        ES_SERVER for the child when not NULL (ES_SERVER is removed
 *        otherwise).
 * @return 0; -1 when it could not be run (see stderr).
 */
int it_cli(it_run *r, const char *server, const char *const *argv);

/** @brief "127.0.0.1:PORT" into buf (at least 32 bytes). */
void it_addr(uint16_t port, char *buf);

#endif

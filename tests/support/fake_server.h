/*
 * fake_server — a tiny esd stand-in for the client library's unit tests: a
 * thread with a listening socket on 127.0.0.1, port 0, that runs a script
 * once per accepted connection. Scripts speak frames built with the
 * generated protobuf-c code (srv_recv, srv_send, srv_hello, ...), so a test
 * drives the real client code over a real socket and can answer, refuse,
 * stall or cut a connection at any point.
 *
 * Design notes
 * ------------
 * The server thread never calls cmocka (it is not thread-safe): a script
 * records failed checks with SRV_CHECK, and fake_stop() fails the test
 * when there were any (with the first one's file, line and condition).
 * Accepted sockets get 5 s send and receive timeouts, so a script waiting
 * for a client that never writes ends instead of hanging the test.
 * fake_start/fake_stop assert with cmocka and run on the test's thread.
 */
#ifndef ES_TEST_FAKE_SERVER_H
#define ES_TEST_FAKE_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es.pb-c.h"

typedef struct fake fake;

/** Runs once per accepted connection (conn_no counts from 1); fd is closed after it. */
typedef void (*script_fn)(fake *f, int fd, unsigned conn_no);

enum { MODE_UP = 0, MODE_DOWN = 1 };

struct fake {
    int lfd;
    int wake[2];
    pthread_t th;
    char addr[64]; /* "127.0.0.1:PORT" */
    script_fn script;
    void *ctx; /* the script's */
    atomic_uint accepts;
    atomic_int mode; /* MODE_DOWN: accept and close at once */
    atomic_uint errors;
    char errmsg[256];
    /* announced in the HelloOk (defaults set by fake_init) */
    uint32_t hello_version;     /* 1 */
    uint32_t max_in_flight;     /* 16 */
    uint32_t max_frame_bytes;   /* 0 */
    uint32_t max_event_bytes;   /* 1 MiB */
    uint32_t max_page_size;     /* 100 */
    Es__V1__SyncMode sync_mode; /* none */
    const char *role;           /* "leader"; NULL: left out */
    uint8_t store_tag;          /* added to the last byte of FAKE_STORE_ID */
    /* observed by scripts */
    atomic_uint max_unanswered;
};

/** The store id announced (with store_tag 0). */
extern const uint8_t FAKE_STORE_ID[16];

#define SRV_CHECK(f, cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (atomic_fetch_add(&(f)->errors, 1) == 0) {                                          \
                snprintf((f)->errmsg, sizeof((f)->errmsg), "%s:%d: %s", __FILE__, __LINE__,        \
                         #cond);                                                                   \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/** @brief Listen on 127.0.0.1:0 and set the defaults; the thread is not started yet. */
void fake_init(fake *f, script_fn script, void *ctx);

/** @brief Start the server thread (after fake_init and any change of the defaults). */
void fake_run(fake *f);

/** @brief fake_init + fake_run. */
void fake_start(fake *f, script_fn script, void *ctx);

/** @brief Stop the thread, close the socket; fail the test if a script check failed. */
void fake_stop(fake *f);

/** @brief Read exactly n bytes. @return false at EOF, on error or timeout. */
bool srv_read_full(int fd, void *buf, size_t n);

/** @brief Write all n bytes. @return false when the peer is gone. */
bool srv_write_full(int fd, const void *buf, size_t n);

/** @brief The next request, or NULL at EOF or on a bad frame (free with srv_free). */
Es__V1__Request *srv_recv(int fd);

void srv_free(Es__V1__Request *r);

/** @brief Send one framed response. @return false when the peer is gone. */
bool srv_send(int fd, const Es__V1__Response *resp);

/** @brief Read the Hello and answer HelloOk with f's figures; false when the client went away. */
bool srv_hello(fake *f, int fd);

/** @brief An AppendResult of n events from first_rev / first_pos. */
bool srv_append_ok(int fd, uint64_t id, uint64_t first_rev, uint64_t n, uint64_t first_pos);

/** @brief An Error response. */
bool srv_error(int fd, uint64_t id, Es__V1__ErrorCode code, const char *msg);

/** @brief Wait for the client to close. @return the requests received meanwhile. */
unsigned srv_drain(int fd);

#endif

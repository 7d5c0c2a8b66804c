/*
 * frames — talking to esd with raw frames: a byte buffer with protobuf
 * wire-format builders (hbuf_*) for malformed input, framed requests built
 * with the generated protobuf-c code (h_put_*), and blocking-with-deadline
 * socket helpers that receive and decode responses (h_recv, h_call, ...).
 * Also a tiny HTTP/1.0 client for the HTTP endpoints of esd and of the
 * read-model example.
 *
 * Design notes
 * ------------
 * The wire protocol is a 4-byte big-endian length and one es.v1.Request /
 * es.v1.Response; the tests send exactly the bytes they mean to, including
 * malformed ones. Every wait is a poll() with a deadline; nothing sleeps to
 * synchronise. Functions here never call cmocka (several are used from
 * worker threads): they return a status and the tests assert on it.
 */
#ifndef ES_TEST_FRAMES_H
#define ES_TEST_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "es.pb-c.h"
#include "es/err.h"

/* ------------------------------------------------------------ byte buffer -- */

/** A growable byte buffer (frames to send). Aborts on allocation failure. */
typedef struct hbuf {
    uint8_t *p;
    size_t len, cap;
} hbuf;

void hbuf_put(hbuf *b, const void *data, size_t len);
void hbuf_put_byte(hbuf *b, uint8_t v);
void hbuf_put_varint(hbuf *b, uint64_t v);
/** A protobuf tag: (field << 3) | wire. */
void hbuf_put_tag(hbuf *b, uint32_t field, uint32_t wire);
/** A length-delimited field: tag, length, bytes. */
void hbuf_put_lenfield(hbuf *b, uint32_t field, const void *data, size_t len);
/** A 4-byte big-endian frame header. */
void hbuf_put_header(hbuf *b, uint32_t len);
/** A whole frame around body. */
void hbuf_put_frame(hbuf *b, const void *body, size_t len);
void hbuf_free(hbuf *b);

/* ------------------------------------------------------------ connections -- */

enum {
    H_OK = 0,
    H_TIMEOUT = 1,  /* nothing (or not enough) arrived before the deadline */
    H_CLOSED = 2,   /* the peer closed (EOF or reset) */
    H_BADFRAME = 3, /* bytes arrived that are not a valid Response frame */
    H_ERR = 4,      /* a local error (errno set) */
};

/** @brief Connect to 127.0.0.1:port (blocking connect, TCP_NODELAY). @return fd or -1. */
int h_connect(uint16_t port);

/** @brief Like h_connect with a small receive buffer set before connecting. */
int h_connect_rcvbuf(uint16_t port, int rcvbuf);

/** @brief Send all bytes, waiting at most timeout_ms. @return H_OK, H_TIMEOUT, H_CLOSED, H_ERR. */
int h_send_all(int fd, const void *data, size_t len, int timeout_ms);

/**
 * @brief Send bytes without blocking as far as the socket accepts them.
 * @return bytes sent (0 when the socket is full); -1 when the peer is gone.
 */
ssize_t h_send_some(int fd, const void *data, size_t len);

/** @brief Append one framed Request to b. */
void h_put_req(hbuf *b, const Es__V1__Request *req);

/** @brief Send one framed Request. @return as h_send_all. */
int h_send_req(int fd, const Es__V1__Request *req, int timeout_ms);

/**
 * @brief Receive one Response frame.
 * @param timeout_ms how long to wait for the frame to start; nothing is
 *        consumed on H_TIMEOUT. Once it has started, the rest of the frame
 *        may take up to max(timeout_ms, 10 s).
 * @param[out] out the unpacked response (free with h_resp_free), NULL unless H_OK
 * @param[out] body_len the body length of the frame (may be NULL)
 * @return H_OK; H_TIMEOUT; H_CLOSED (EOF before a whole frame); H_BADFRAME.
 */
int h_recv(int fd, int timeout_ms, Es__V1__Response **out, size_t *body_len);

/**
 * @brief Receive one Response frame on a socket whose SO_RCVTIMEO was set
 *        with h_set_recv_timeout: two blocking recv() calls, no poll (for
 *        request/response loops where syscalls per request matter).
 * @return as h_recv (H_TIMEOUT when SO_RCVTIMEO expired).
 */
int h_recv_blocking(int fd, Es__V1__Response **out);

/** @brief Set SO_RCVTIMEO. @return 0 or -1. */
int h_set_recv_timeout(int fd, int timeout_ms);

/**
 * @brief Wait for the peer to close, discarding frames that arrive.
 * @param[out] frames number of whole frames discarded (may be NULL)
 * @return H_CLOSED; H_TIMEOUT.
 */
int h_wait_closed(int fd, int timeout_ms, int *frames);

void h_resp_free(Es__V1__Response *r);

/** @brief Send a request and receive one reply (NULL on timeout or close). */
Es__V1__Response *h_call(int fd, const Es__V1__Request *req, int timeout_ms);

/** @brief Hello with protocol version 1 (5 s at most). @return true when HelloOk came back. */
bool h_hello(int fd);

/** @brief Connect and hello. @return fd or -1. */
int h_open(uint16_t port);

/** @brief A fresh connection does hello + ping. */
bool h_server_ok(uint16_t port);

/** @brief Stats head_position over a fresh connection; UINT64_MAX on failure. */
uint64_t h_head(uint16_t port);

/* -------------------------------------------------------- request builders -- */

/** A proposed event. Lengths of 0 with a non-NULL pointer mean strlen. */
typedef struct h_ev {
    const void *id; /* NULL: the server assigns one */
    size_t id_len;
    const char *type; /* NULL: "Test" */
    size_t type_len;
    const void *data;
    size_t data_len;
    const void *meta;
    size_t meta_len;
} h_ev;

#define H_NO_EXPECTED (-1)

/** One append. */
typedef struct h_app {
    const char *stream; /* stream_len 0: strlen */
    size_t stream_len;
    int kind; /* an ExpectedKind value, or H_NO_EXPECTED to leave Expected out */
    uint64_t rev;
    const h_ev *evs; /* NULL: n events {type "Test", data "x"} with server ids */
    size_t n;
} h_app;

void h_put_append(hbuf *b, uint64_t id, const h_app *a);
void h_put_txn(hbuf *b, uint64_t id, const h_app *apps, size_t n);
void h_put_ping(hbuf *b, uint64_t id, const void *payload, size_t len);
void h_put_hello(hbuf *b, uint64_t id, uint32_t version);
void h_put_stats(hbuf *b, uint64_t id);
void h_put_read_stream(hbuf *b, uint64_t id, const char *stream, size_t stream_len, uint64_t from,
                       bool backward, uint32_t limit);
void h_put_read_all(hbuf *b, uint64_t id, uint64_t from, bool backward, uint32_t limit,
                    const char *prefix, const char *category, const char *type);

/** @brief Send b's bytes, then reset b. @return as h_send_all. */
int h_flush(int fd, hbuf *b, int timeout_ms);

/** @brief Append and wait for its reply (NULL on timeout/close). */
Es__V1__Response *h_append(int fd, uint64_t id, const h_app *a, int timeout_ms);

/** @brief The error code of a response: ES_OK when it is not an error. */
es_err h_code(const Es__V1__Response *r);

/** @brief A short description of a response for failure messages (static buffer). */
const char *h_describe(const Es__V1__Response *r);

/** @brief Fill 16 bytes with a unique test event id (counter + tag). */
void h_make_id(uint8_t out[16], uint32_t tag, uint64_t n);

/* ------------------------------------------------------------------- HTTP -- */

/**
 * @brief One HTTP/1.0 request to 127.0.0.1:port (Connection: close), the
 *        whole answer read until the peer closes (at most 16 MiB, 10 s per
 *        read).
 * @param method "GET", "POST", ...
 * @param[out] status the HTTP status code
 * @param[out] body the body, malloc'd and NUL-terminated (free it)
 * @return 0; -1 (connect or I/O failure, malformed reply, or a chunked
 *         reply, which is not decoded here).
 */
int h_http(uint16_t port, const char *method, const char *path, int *status, char **body);

#endif

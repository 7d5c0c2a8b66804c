/*
 * frame — the wire framing: a 4-byte big-endian body length, then the body
 * (one protobuf message).
 *
 *   +--------+--------+--------+--------+=====================+
 *   |  length (u32, big-endian, 1..cap) |  body: length bytes |
 *   +--------+--------+--------+--------+=====================+
 *
 * Design notes: pure functions over bytes, no I/O and no allocation, so they
 * can be fuzzed and used by server and client alike. The length is checked
 * against the cap on the header alone, before any caller allocates room for
 * the body (nng's TCP transport does the same). A length of 0 is malformed:
 * every valid message has at least a kind.
 */
#ifndef ES_FRAME_H
#define ES_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

#define FRAME_HEADER_BYTES 4
/** The default cap on a frame body: 16 MiB. */
#define FRAME_DEFAULT_MAX_BODY (16u * 1024u * 1024u)
/** No configuration may raise the cap above 64 MiB (EventStoreDB's package cap). */
#define FRAME_HARD_MAX_BODY (64u * 1024u * 1024u)

/**
 * @brief Parse a frame header.
 * @param[in] hdr the 4 header bytes
 * @param[in] max_body the cap on the body length
 * @param[out] body_len the declared body length, set only on ES_OK
 * @return ES_OK; ES_ERR_MALFORMED for a length of 0; ES_ERR_TOO_LARGE when the
 *         length exceeds max_body. After an error the byte stream can no
 *         longer be trusted: the connection should be closed.
 */
es_err frame_parse_header(const uint8_t hdr[FRAME_HEADER_BYTES], uint32_t max_body,
                          uint32_t *body_len);

/** @brief Write the header for a body of body_len bytes. */
void frame_write_header(uint8_t hdr[FRAME_HEADER_BYTES], uint32_t body_len);

/**
 * @brief Find the next complete frame at the start of a buffer.
 * @param[in] buf, len the bytes received so far
 * @param[in] max_body the cap on the body length
 * @param[out] body set to the body inside buf when a whole frame is there,
 *             NULL when more bytes are needed
 * @param[out] body_len the body length (valid when *body != NULL)
 * @param[out] consumed header + body bytes to drop after use (0 when
 *             more bytes are needed)
 * @return ES_OK (complete or incomplete); the errors of frame_parse_header.
 */
es_err frame_next(const uint8_t *buf, size_t len, uint32_t max_body, const uint8_t **body,
                  uint32_t *body_len, size_t *consumed);

#endif

/*
 * validate — the rules for names that the wire carries as bytes.
 *
 * Design notes: protobuf-c does not check UTF-8, so stream ids, event types
 * and content types travel as `bytes` and are checked here, by the server on
 * receipt and by the store before every write, and by the client library
 * before sending. One set of rules (docs/protocol.md states them for clients):
 *   stream id:  1..256 bytes, valid UTF-8 (no overlongs, no surrogates, no
 *               code point above U+10FFFF), no NUL, no C0/C1 control
 *               character or DEL; ids starting with '$' are reserved.
 *   event type: the same, without the '$' rule.
 *   category:   the part of a stream id before the first '-' (the whole id
 *               when it has none).
 */
#ifndef ES_VALIDATE_H
#define ES_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

#define ES_MAX_NAME_BYTES 256u
#define ES_EVENT_ID_BYTES 16u

/** @brief True when s[0..len) is well-formed UTF-8 (RFC 3629). */
bool es_utf8_valid(const uint8_t *s, size_t len);

/**
 * @brief Check a name (stream id or event type) for length and characters.
 * @return ES_OK or ES_ERR_INVALID_ARGUMENT.
 */
es_err es_validate_name(const uint8_t *s, size_t len);

/**
 * @brief Check a stream id.
 * @param allow_reserved accept ids starting with '$'
 * @return ES_OK; ES_ERR_INVALID_STREAM_ID; ES_ERR_RESERVED_STREAM.
 */
es_err es_validate_stream_id(const uint8_t *s, size_t len, bool allow_reserved);

/** @return ES_OK or ES_ERR_INVALID_EVENT_TYPE. */
es_err es_validate_event_type(const uint8_t *s, size_t len);

/** @brief Length of the category prefix of a (valid) stream id. */
size_t es_category_len(const uint8_t *stream, size_t len);

#endif

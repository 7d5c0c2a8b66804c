/*
 * pbwire — the few protobuf wire-format primitives that esd handles itself.
 *
 * Design notes: stored records are packed es.v1.RecordedEvent messages, and
 * read replies are assembled by copying stored bytes into a Response instead
 * of decoding and re-encoding every event. That needs varints and
 * length-delimited headers (encoding) and a scanner of top-level fields
 * (decoding a few fields of a record without protobuf-c's allocations). All
 * pure functions over bytes, bounds-checked, fuzzable.
 */
#ifndef ES_PBWIRE_H
#define ES_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

#define PBW_VARINT_MAX 10

enum {
    PBW_WIRE_VARINT = 0,
    PBW_WIRE_I64 = 1,
    PBW_WIRE_LEN = 2,
    PBW_WIRE_I32 = 5,
};

/** @brief Bytes needed to encode v as a varint (1..10). */
size_t pbw_varint_len(uint64_t v);

/** @brief Encode v at p (room for PBW_VARINT_MAX bytes); @return bytes written. */
size_t pbw_put_varint(uint8_t *p, uint64_t v);

/** @brief Bytes of a length-delimited field header (tag + length). */
size_t pbw_len_header_len(uint32_t field, size_t len);

/** @brief Write a length-delimited field header; @return bytes written. */
size_t pbw_put_len_header(uint8_t *p, uint32_t field, size_t len);

/** @brief Write a varint field (tag + value); @return bytes written. */
size_t pbw_put_varint_field(uint8_t *p, uint32_t field, uint64_t v);

typedef struct pbw_field {
    uint32_t number;
    uint8_t wire;
    uint64_t varint;     /* PBW_WIRE_VARINT, I64, I32: the value */
    const uint8_t *data; /* PBW_WIRE_LEN: borrowed from the scanned buffer */
    size_t len;
} pbw_field;

/**
 * @brief Read the next top-level field.
 * @param[in,out] pos the read position, advanced past the field
 * @param[in] end one past the last byte
 * @param[out] f the field; f->data borrows from the buffer
 * @return ES_OK; ES_ERR_NOT_FOUND at the end of the buffer; ES_ERR_MALFORMED
 *         for a bad tag, field number 0, wire type 3/4/6/7, a varint over 10
 *         bytes, or a length past the end.
 */
es_err pbw_next(const uint8_t **pos, const uint8_t *end, pbw_field *f);

/**
 * @brief The last occurrence of a length-delimited field (protobuf's "last
 *        one wins").
 * @return ES_OK; ES_ERR_NOT_FOUND (then *data = NULL, *len = 0);
 *         ES_ERR_MALFORMED.
 */
es_err pbw_find_bytes(const uint8_t *buf, size_t len, uint32_t number, const uint8_t **data,
                      size_t *data_len);

/** @brief The last occurrence of a varint field. Errors as pbw_find_bytes. */
es_err pbw_find_varint(const uint8_t *buf, size_t len, uint32_t number, uint64_t *value);

#endif

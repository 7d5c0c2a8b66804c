/*
 * record — the one decoder of a stored event: a packed es.v1.RecordedEvent
 * as the store keeps it, a read reply carries it, the relay publishes it
 * and a follower imports it.
 *
 * Design notes: a record is decoded in place, never unpacked by protobuf-c:
 * no allocation per event, and every byte field is a slice borrowed from
 * the buffer. The field numbers are named here once (ES_RECORD_F_*) and a
 * unit test (tests/unit/test_record.c) checks every one of
 * them, and its wire type, against the descriptor protobuf-c generates from
 * es.proto, so a field added to the schema fails that test until it is
 * added here. Two modes: the lenient one takes what protobuf would (the
 * last occurrence of a field wins, unknown fields are skipped, so a reader
 * keeps working when a newer writer adds a field); ES_RECORD_STRICT is for
 * bytes that are about to be stored as they are (a follower's import) and
 * refuses unknown and repeated fields too. Both refuse a known field of the
 * wrong wire type and a record without the fields every stored event has.
 */
#ifndef ES_RECORD_H
#define ES_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

/* Field numbers of es.v1.RecordedEvent (proto/es/v1/es.proto). */
enum {
    ES_RECORD_F_STREAM = 1,          /* bytes */
    ES_RECORD_F_REVISION = 2,        /* uint64 */
    ES_RECORD_F_POSITION = 3,        /* uint64 */
    ES_RECORD_F_ID = 4,              /* bytes, 16 */
    ES_RECORD_F_TYPE = 5,            /* bytes */
    ES_RECORD_F_DATA = 6,            /* bytes */
    ES_RECORD_F_METADATA = 7,        /* bytes */
    ES_RECORD_F_CONTENT_TYPE = 8,    /* bytes */
    ES_RECORD_F_CORRELATION_ID = 9,  /* bytes, 0 or 16 */
    ES_RECORD_F_CAUSATION_ID = 10,   /* bytes, 0 or 16 */
    ES_RECORD_F_RECORDED_AT_US = 11, /* uint64 */
    ES_RECORD_F_SEALED = 12,         /* bytes: data and metadata, encrypted (store only) */
    ES_RECORD_F_LAST = 12,
};

#define ES_RECORD_ID_BYTES 16u

/* es_record_parse flags. */
#define ES_RECORD_STRICT 1u /* no unknown field, none twice */

/* A byte field: a slice of the parsed buffer (len 0: absent or empty). */
typedef struct es_slice {
    const uint8_t *p;
    size_t len;
} es_slice;

/* A parsed record. Every slice borrows from the buffer given to the parse
 * and lives as long as it does; absent varints are 0, absent bytes empty. */
typedef struct es_record {
    es_slice stream, id, type, data, metadata, content_type, correlation_id, causation_id, sealed;
    uint64_t revision, position, recorded_at_us;
} es_record;

/**
 * @brief Parse a packed es.v1.RecordedEvent.
 * @param[in] buf the record's bytes (borrowed by *out)
 * @param[in] len their length
 * @param[in] flags 0 or ES_RECORD_STRICT
 * @param[out] out the fields, slices into buf
 * @return ES_OK when the record decodes and has what every stored event has:
 *         a non-empty stream and type, a 16-byte id, a position of at least
 *         1, a correlation and causation id each empty or 16 bytes.
 *         ES_ERR_MALFORMED otherwise: not protobuf, a known field of the
 *         wrong wire type, one of the above missing or misshapen, or (with
 *         ES_RECORD_STRICT) an unknown or repeated field.
 */
es_err es_record_parse(const uint8_t *buf, size_t len, unsigned flags, es_record *out);

/**
 * @brief The head of a record in the layout the store writes: stream (1),
 *        revision (2, absent when 0), position (3), id (4), type (5), first
 *        and in this order. Fills those five fields (the others are left as
 *        they were) in a few dozen instructions, against ~1,000 for a full
 *        parse: the store's reads check every record they reach through an
 *        index against what the index promised.
 * @return true when the record starts so, with a non-empty stream and
 *         type, a 16-byte id and a position of at least 1; false for any
 *         other layout (then use es_record_parse). Only for records whose
 *         CRC held: those were written by the store or imported after a
 *         strict parse, so no field comes twice and the head is what a full
 *         parse would find.
 */
bool es_record_head(const uint8_t *buf, size_t len, es_record *out);

/**
 * @brief Whether a record decodes as protobuf without the given field: a
 *        walk of its tags (no other check), for a record whose header says
 *        what it must not hold (a plain record and the sealed field).
 * @return false when the field is there or the bytes do not decode.
 */
bool es_record_lacks(const uint8_t *buf, size_t len, uint32_t number);

/** @brief Whether two slices hold the same bytes. */
bool es_slice_eq(es_slice a, const uint8_t *p, size_t len);

#endif

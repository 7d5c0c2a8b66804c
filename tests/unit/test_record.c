/*
 * test_record — the one decoder of a stored es.v1.RecordedEvent
 * (proto/record.h): its field numbers against the descriptor protobuf-c
 * generates from es.proto, and what it accepts and refuses.
 *
 * Design notes: protobuf-c is the reference. Records are packed with it and
 * parsed with es_record_parse, and every slice must hold what was packed.
 * Malformed records are built byte by byte with pbwire, each a copy of
 * exactly the right length on the heap, so the sanitizer builds catch an
 * over-read. Every refusal a caller depends on (a wrong wire type, a missing
 * id, a repeated field in strict mode) has its own case.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "es.pb-c.h"
#include "es/err.h"
#include "pbwire.h"
#include "record.h"

#define assert_rv(expected, expr)                                                                  \
    do {                                                                                           \
        es_err want_ = (expected);                                                                 \
        es_err got_ = (expr);                                                                      \
        if (got_ != want_) {                                                                       \
            fail_msg("%s: got %s (%s), expected %s (%s)", #expr, es_errname(got_),                 \
                     es_strerror(got_), es_errname(want_), es_strerror(want_));                    \
        }                                                                                          \
    } while (0)

#define U8(s) ((uint8_t *)(s))

static const uint8_t ID[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t CORR[16] = {0xc0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xc0};
static const uint8_t CAUS[16] = {0xca, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xca};

/* ------------------------------------------------------ field numbers -- */

static void expect_field(const char *name, unsigned number, ProtobufCType type)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field_by_name(&es__v1__recorded_event__descriptor, name);
    if (!fd) {
        fail_msg("es.v1.RecordedEvent has no field '%s'", name);
    }
    if (fd->id != number || fd->type != type || fd->label != PROTOBUF_C_LABEL_NONE) {
        fail_msg("field '%s': es.proto says number %u type %d, record.h %u type %d", name, fd->id,
                 (int)fd->type, number, (int)type);
    }
}

static void test_field_numbers_match_the_schema(void **state)
{
    (void)state;
    expect_field("stream", ES_RECORD_F_STREAM, PROTOBUF_C_TYPE_BYTES);
    expect_field("revision", ES_RECORD_F_REVISION, PROTOBUF_C_TYPE_UINT64);
    expect_field("position", ES_RECORD_F_POSITION, PROTOBUF_C_TYPE_UINT64);
    expect_field("id", ES_RECORD_F_ID, PROTOBUF_C_TYPE_BYTES);
    expect_field("type", ES_RECORD_F_TYPE, PROTOBUF_C_TYPE_BYTES);
    expect_field("data", ES_RECORD_F_DATA, PROTOBUF_C_TYPE_BYTES);
    expect_field("metadata", ES_RECORD_F_METADATA, PROTOBUF_C_TYPE_BYTES);
    expect_field("content_type", ES_RECORD_F_CONTENT_TYPE, PROTOBUF_C_TYPE_BYTES);
    expect_field("correlation_id", ES_RECORD_F_CORRELATION_ID, PROTOBUF_C_TYPE_BYTES);
    expect_field("causation_id", ES_RECORD_F_CAUSATION_ID, PROTOBUF_C_TYPE_BYTES);
    expect_field("sealed", ES_RECORD_F_SEALED, PROTOBUF_C_TYPE_BYTES);
    expect_field("recorded_at_us", ES_RECORD_F_RECORDED_AT_US, PROTOBUF_C_TYPE_UINT64);
    /* A field added to es.proto must be added to record.h (and here). */
    assert_int_equal(es__v1__recorded_event__descriptor.n_fields, 12);
    assert_int_equal(ES_RECORD_F_LAST, 12);
}

/* ---------------------------------------------------------- round trip -- */

/* A packed record on the heap, exactly its length; free() it. */
static uint8_t *pack(const Es__V1__RecordedEvent *e, size_t *len)
{
    *len = es__v1__recorded_event__get_packed_size(e);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(es__v1__recorded_event__pack(e, buf), *len);
    return buf;
}

static Es__V1__RecordedEvent full_event(void)
{
    Es__V1__RecordedEvent e = ES__V1__RECORDED_EVENT__INIT;
    e.stream = (ProtobufCBinaryData){9, U8("account-1")};
    e.revision = 300;
    e.position = 1ull << 40;
    e.id = (ProtobufCBinaryData){16, (uint8_t *)ID};
    e.type = (ProtobufCBinaryData){9, U8("Deposited")};
    e.data = (ProtobufCBinaryData){5, U8("{\"a\"}")};
    e.metadata = (ProtobufCBinaryData){4, U8("meta")};
    e.content_type = (ProtobufCBinaryData){16, U8("application/json")};
    e.correlation_id = (ProtobufCBinaryData){16, (uint8_t *)CORR};
    e.causation_id = (ProtobufCBinaryData){16, (uint8_t *)CAUS};
    e.recorded_at_us = 1700000000123456ull;
    return e;
}

static void test_parse_every_field(void **state)
{
    (void)state;
    Es__V1__RecordedEvent e = full_event();
    size_t len;
    uint8_t *buf = pack(&e, &len);
    for (unsigned flags = 0; flags <= ES_RECORD_STRICT; flags++) {
        es_record r;
        assert_rv(ES_OK, es_record_parse(buf, len, flags, &r));
        assert_true(es_slice_eq(r.stream, U8("account-1"), 9));
        assert_true(es_slice_eq(r.id, ID, 16));
        assert_true(es_slice_eq(r.type, U8("Deposited"), 9));
        assert_true(es_slice_eq(r.data, U8("{\"a\"}"), 5));
        assert_true(es_slice_eq(r.metadata, U8("meta"), 4));
        assert_true(es_slice_eq(r.content_type, U8("application/json"), 16));
        assert_true(es_slice_eq(r.correlation_id, CORR, 16));
        assert_true(es_slice_eq(r.causation_id, CAUS, 16));
        assert_int_equal(r.revision, 300);
        assert_int_equal(r.position, 1ull << 40);
        assert_int_equal(r.recorded_at_us, 1700000000123456ull);
        /* Slices borrow from the buffer: no copies. */
        assert_true(r.stream.p >= buf && r.stream.p + r.stream.len <= buf + len);
        assert_true(r.data.p >= buf && r.data.p + r.data.len <= buf + len);
    }
    free(buf);
}

static void test_parse_minimal_record(void **state)
{
    (void)state;
    Es__V1__RecordedEvent e = ES__V1__RECORDED_EVENT__INIT;
    e.stream = (ProtobufCBinaryData){1, U8("s")};
    e.position = 1;
    e.id = (ProtobufCBinaryData){16, (uint8_t *)ID};
    e.type = (ProtobufCBinaryData){1, U8("T")};
    size_t len;
    uint8_t *buf = pack(&e, &len);
    es_record r;
    assert_rv(ES_OK, es_record_parse(buf, len, ES_RECORD_STRICT, &r));
    assert_int_equal(r.revision, 0); /* absent: revision 0 */
    assert_int_equal(r.data.len, 0);
    assert_int_equal(r.metadata.len, 0);
    assert_int_equal(r.content_type.len, 0);
    assert_int_equal(r.correlation_id.len, 0);
    assert_int_equal(r.causation_id.len, 0);
    assert_int_equal(r.recorded_at_us, 0);
    free(buf);
}

/* ------------------------------------------------------ hand-made bytes -- */

typedef struct rbuf {
    uint8_t b[512];
    size_t n;
} rbuf;

static void put_bytes(rbuf *r, uint32_t field, const void *p, size_t len)
{
    r->n += pbw_put_len_header(r->b + r->n, field, len);
    memcpy(r->b + r->n, p, len);
    r->n += len;
}

static void put_varint(rbuf *r, uint32_t field, uint64_t v)
{
    r->n += pbw_put_varint_field(r->b + r->n, field, v);
}

/* The required fields of a record, then whatever the case adds. */
static void base(rbuf *r)
{
    r->n = 0;
    put_bytes(r, ES_RECORD_F_STREAM, "s-1", 3);
    put_varint(r, ES_RECORD_F_POSITION, 7);
    put_bytes(r, ES_RECORD_F_ID, ID, 16);
    put_bytes(r, ES_RECORD_F_TYPE, "T", 1);
}

/* The copy the last parse read; its slices live until the next parse. */
static uint8_t *parsed;

/* Parse an exact heap copy of r. */
static es_err parse(const rbuf *r, unsigned flags, es_record *out)
{
    free(parsed);
    parsed = malloc(r->n ? r->n : 1);
    assert_non_null(parsed);
    memcpy(parsed, r->b, r->n);
    return es_record_parse(parsed, r->n, flags, out);
}

static int free_parsed(void **state)
{
    (void)state;
    free(parsed);
    parsed = NULL;
    return 0;
}

static void test_unknown_and_repeated_fields(void **state)
{
    (void)state;
    rbuf r;
    es_record rec;
    /* An unknown field (a newer writer's) is skipped, unless strict. */
    base(&r);
    put_bytes(&r, 12, "new", 3);
    put_varint(&r, 99, 5);
    assert_rv(ES_OK, parse(&r, 0, &rec));
    assert_true(es_slice_eq(rec.stream, U8("s-1"), 3));
    assert_rv(ES_ERR_MALFORMED, parse(&r, ES_RECORD_STRICT, &rec));
    /* Fixed-width unknown fields too. */
    base(&r);
    uint8_t i64[9] = {(uint8_t)((13u << 3) | PBW_WIRE_I64)};
    memcpy(r.b + r.n, i64, sizeof i64);
    r.n += sizeof i64;
    assert_rv(ES_OK, parse(&r, 0, &rec));
    assert_rv(ES_ERR_MALFORMED, parse(&r, ES_RECORD_STRICT, &rec));
    /* A repeated field: the last one wins, unless strict. */
    base(&r);
    put_bytes(&r, ES_RECORD_F_TYPE, "Later", 5);
    put_varint(&r, ES_RECORD_F_POSITION, 8);
    assert_rv(ES_OK, parse(&r, 0, &rec));
    assert_true(es_slice_eq(rec.type, U8("Later"), 5));
    assert_int_equal(rec.position, 8);
    assert_rv(ES_ERR_MALFORMED, parse(&r, ES_RECORD_STRICT, &rec));
}

static void test_refused_records(void **state)
{
    (void)state;
    rbuf r;
    es_record rec;
    for (unsigned flags = 0; flags <= ES_RECORD_STRICT; flags++) {
        /* A known field of the wrong wire type. */
        base(&r);
        put_bytes(&r, ES_RECORD_F_REVISION, "x", 1);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        base(&r);
        put_varint(&r, ES_RECORD_F_DATA, 1);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        /* Each required field missing or misshapen. */
        r.n = 0;
        put_varint(&r, ES_RECORD_F_POSITION, 7);
        put_bytes(&r, ES_RECORD_F_ID, ID, 16);
        put_bytes(&r, ES_RECORD_F_TYPE, "T", 1);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec)); /* no stream */
        r.n = 0;
        put_bytes(&r, ES_RECORD_F_STREAM, "s-1", 3);
        put_bytes(&r, ES_RECORD_F_ID, ID, 16);
        put_bytes(&r, ES_RECORD_F_TYPE, "T", 1);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec)); /* no position */
        r.n = 0;
        put_bytes(&r, ES_RECORD_F_STREAM, "s-1", 3);
        put_varint(&r, ES_RECORD_F_POSITION, 7);
        put_bytes(&r, ES_RECORD_F_ID, ID, 15);
        put_bytes(&r, ES_RECORD_F_TYPE, "T", 1);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec)); /* 15-byte id */
        r.n = 0;
        put_bytes(&r, ES_RECORD_F_STREAM, "s-1", 3);
        put_varint(&r, ES_RECORD_F_POSITION, 7);
        put_bytes(&r, ES_RECORD_F_ID, ID, 16);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec)); /* no type */
        base(&r);
        put_bytes(&r, ES_RECORD_F_CORRELATION_ID, ID, 8);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        base(&r);
        static const uint8_t id17[17] = {1};
        put_bytes(&r, ES_RECORD_F_CAUSATION_ID, id17, sizeof id17);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        /* Not protobuf: every proper prefix of a good record that cuts a
         * field, a length past the end, wire type 3. */
        base(&r);
        size_t full = r.n;
        for (size_t n = 1; n < full; n++) {
            rbuf cut = r;
            cut.n = n;
            assert_rv(ES_ERR_MALFORMED, parse(&cut, flags, &rec));
        }
        base(&r);
        r.b[r.n++] = (uint8_t)((ES_RECORD_F_DATA << 3) | PBW_WIRE_LEN);
        r.b[r.n++] = 100;
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        base(&r);
        r.b[r.n++] = (uint8_t)((14u << 3) | 3);
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        r.n = 0;
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec)); /* empty */
        /* A tag or a length prefix over 5 bytes (zero-padded), which
         * protobuf-c refuses: an unknown field's tag in 6 bytes, then the
         * data field's length in 6 bytes. The fuzzer found the first. */
        base(&r);
        static const uint8_t long_tag[] = {0xe0, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01};
        memcpy(r.b + r.n, long_tag, sizeof long_tag);
        r.n += sizeof long_tag;
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        assert_null(es__v1__recorded_event__unpack(NULL, r.n, r.b));
        base(&r);
        static const uint8_t long_len[] = {
            (ES_RECORD_F_DATA << 3) | PBW_WIRE_LEN, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 'x'};
        memcpy(r.b + r.n, long_len, sizeof long_len);
        r.n += sizeof long_len;
        assert_rv(ES_ERR_MALFORMED, parse(&r, flags, &rec));
        assert_null(es__v1__recorded_event__unpack(NULL, r.n, r.b));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_numbers_match_the_schema),
        cmocka_unit_test(test_parse_every_field),
        cmocka_unit_test(test_parse_minimal_record),
        cmocka_unit_test_teardown(test_unknown_and_repeated_fields, free_parsed),
        cmocka_unit_test_teardown(test_refused_records, free_parsed),
    };
    return cmocka_run_group_tests_name("record", tests, NULL, NULL);
}

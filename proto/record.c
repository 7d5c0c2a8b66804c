/*
 * record — the one decoder of a stored es.v1.RecordedEvent (see record.h).
 */
#include "record.h"

#include <stdbool.h>
#include <string.h>

#include "pbwire.h"

static bool is_varint_field(uint32_t number)
{
    return number == ES_RECORD_F_REVISION || number == ES_RECORD_F_POSITION ||
           number == ES_RECORD_F_RECORDED_AT_US;
}

static es_slice *slice_of(es_record *r, uint32_t number)
{
    switch (number) {
    case ES_RECORD_F_STREAM:
        return &r->stream;
    case ES_RECORD_F_ID:
        return &r->id;
    case ES_RECORD_F_TYPE:
        return &r->type;
    case ES_RECORD_F_DATA:
        return &r->data;
    case ES_RECORD_F_METADATA:
        return &r->metadata;
    case ES_RECORD_F_CONTENT_TYPE:
        return &r->content_type;
    case ES_RECORD_F_CORRELATION_ID:
        return &r->correlation_id;
    case ES_RECORD_F_CAUSATION_ID:
        return &r->causation_id;
    case ES_RECORD_F_SEALED:
        return &r->sealed;
    default:
        return NULL;
    }
}

static uint64_t *varint_of(es_record *r, uint32_t number)
{
    switch (number) {
    case ES_RECORD_F_REVISION:
        return &r->revision;
    case ES_RECORD_F_POSITION:
        return &r->position;
    default:
        return &r->recorded_at_us;
    }
}

es_err es_record_parse(const uint8_t *buf, size_t len, unsigned flags, es_record *out)
{
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf, *end = buf + len;
    uint32_t seen = 0;
    pbw_field f;
    es_err rv;
    while ((rv = pbw_next(&p, end, &f)) == ES_OK) {
        if (f.number > ES_RECORD_F_LAST) {
            if (flags & ES_RECORD_STRICT) {
                return ES_ERR_MALFORMED;
            }
            continue;
        }
        bool varint = is_varint_field(f.number);
        if (f.wire != (varint ? PBW_WIRE_VARINT : PBW_WIRE_LEN)) {
            return ES_ERR_MALFORMED;
        }
        if ((flags & ES_RECORD_STRICT) && (seen & (1u << f.number))) {
            return ES_ERR_MALFORMED;
        }
        seen |= 1u << f.number;
        if (varint) {
            *varint_of(out, f.number) = f.varint;
        } else {
            es_slice *s = slice_of(out, f.number);
            s->p = f.data;
            s->len = f.len;
        }
    }
    if (rv != ES_ERR_NOT_FOUND) {
        return ES_ERR_MALFORMED;
    }
    if (out->stream.len == 0 || out->type.len == 0 || out->id.len != ES_RECORD_ID_BYTES ||
        out->position == 0 ||
        (out->correlation_id.len != 0 && out->correlation_id.len != ES_RECORD_ID_BYTES) ||
        (out->causation_id.len != 0 && out->causation_id.len != ES_RECORD_ID_BYTES)) {
        return ES_ERR_MALFORMED;
    }
    return ES_OK;
}

bool es_record_lacks(const uint8_t *buf, size_t len, uint32_t number)
{
    const uint8_t *p = buf, *end = buf + len;
    pbw_field f;
    es_err rv;
    while ((rv = pbw_next(&p, end, &f)) == ES_OK) {
        if (f.number == number) {
            return false;
        }
    }
    return rv == ES_ERR_NOT_FOUND;
}

/* A field's tag byte (field numbers below 16). */
#define HEAD_TAG(field, wire) ((uint8_t)((field) << 3 | (wire)))

static const uint8_t *head_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    if (p < end && *p < 0x80) { /* one byte: lengths, small numbers */
        *v = *p;
        return p + 1;
    }
    uint64_t x = 0;
    for (unsigned sh = 0; p < end && sh < 64; sh += 7) {
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) {
            *v = x;
            return p;
        }
    }
    return NULL;
}

static const uint8_t *head_bytes(const uint8_t *p, const uint8_t *end, uint8_t tag, es_slice *out)
{
    uint64_t n;
    if (p >= end || *p != tag || !(p = head_varint(p + 1, end, &n)) || n > (uint64_t)(end - p)) {
        return NULL;
    }
    out->p = p;
    out->len = (size_t)n;
    return p + n;
}

bool es_record_head(const uint8_t *p, size_t len, es_record *r)
{
    const uint8_t *end = p + len;
    r->revision = 0;
    if (!(p = head_bytes(p, end, HEAD_TAG(ES_RECORD_F_STREAM, PBW_WIRE_LEN), &r->stream))) {
        return false;
    }
    if (p < end && *p == HEAD_TAG(ES_RECORD_F_REVISION, PBW_WIRE_VARINT) &&
        !(p = head_varint(p + 1, end, &r->revision))) {
        return false;
    }
    if (p >= end || *p != HEAD_TAG(ES_RECORD_F_POSITION, PBW_WIRE_VARINT) ||
        !(p = head_varint(p + 1, end, &r->position))) {
        return false;
    }
    if (!(p = head_bytes(p, end, HEAD_TAG(ES_RECORD_F_ID, PBW_WIRE_LEN), &r->id)) ||
        !head_bytes(p, end, HEAD_TAG(ES_RECORD_F_TYPE, PBW_WIRE_LEN), &r->type)) {
        return false;
    }
    return r->stream.len != 0 && r->id.len == ES_RECORD_ID_BYTES && r->type.len != 0 &&
           r->position != 0;
}

bool es_slice_eq(es_slice a, const uint8_t *p, size_t len)
{
    return a.len == len && (len == 0 || memcmp(a.p, p, len) == 0);
}

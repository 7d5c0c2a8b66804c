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

bool es_slice_eq(es_slice a, const uint8_t *p, size_t len)
{
    return a.len == len && (len == 0 || memcmp(a.p, p, len) == 0);
}

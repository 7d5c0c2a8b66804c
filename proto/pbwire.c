#include "pbwire.h"

size_t pbw_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t pbw_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t pbw_len_header_len(uint32_t field, size_t len)
{
    return pbw_varint_len(((uint64_t)field << 3) | PBW_WIRE_LEN) + pbw_varint_len(len);
}

size_t pbw_put_len_header(uint8_t *p, uint32_t field, size_t len)
{
    size_t n = pbw_put_varint(p, ((uint64_t)field << 3) | PBW_WIRE_LEN);
    return n + pbw_put_varint(p + n, len);
}

size_t pbw_put_varint_field(uint8_t *p, uint32_t field, uint64_t v)
{
    size_t n = pbw_put_varint(p, ((uint64_t)field << 3) | PBW_WIRE_VARINT);
    return n + pbw_put_varint(p + n, v);
}

static es_err get_varint_slow(const uint8_t **pos, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pos;
    uint64_t v = 0;
    for (unsigned i = 0; i < PBW_VARINT_MAX; i++) {
        if (p >= end) {
            return ES_ERR_MALFORMED;
        }
        uint8_t b = *p++;
        if (i == 9 && b > 1) {
            return ES_ERR_MALFORMED; /* more than 64 bits */
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pos = p;
            *out = v;
            return ES_OK;
        }
    }
    return ES_ERR_MALFORMED;
}

/* Tags and most lengths are one byte: that case inline, the rest above. */
static inline es_err get_varint(const uint8_t **pos, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pos;
    if (p < end && !(*p & 0x80)) {
        *out = *p;
        *pos = p + 1;
        return ES_OK;
    }
    return get_varint_slow(pos, end, out);
}

es_err pbw_next(const uint8_t **pos, const uint8_t *end, pbw_field *f)
{
    if (*pos >= end) {
        return ES_ERR_NOT_FOUND;
    }
    /* A tag and a length prefix take at most 5 bytes, as protobuf-c reads
     * them: a longer (zero-padded) encoding is refused here too, so that
     * this reader and protobuf-c never disagree about a buffer. */
    const uint8_t *tag_start = *pos;
    uint64_t tag;
    if (get_varint(pos, end, &tag) != ES_OK || *pos - tag_start > 5 || (tag >> 3) == 0 ||
        (tag >> 3) > 0x1fffffff) {
        return ES_ERR_MALFORMED;
    }
    f->number = (uint32_t)(tag >> 3);
    f->wire = (uint8_t)(tag & 7);
    f->data = NULL;
    f->len = 0;
    f->varint = 0;
    switch (f->wire) {
    case PBW_WIRE_VARINT:
        return get_varint(pos, end, &f->varint);
    case PBW_WIRE_I64:
    case PBW_WIRE_I32: {
        size_t n = f->wire == PBW_WIRE_I64 ? 8 : 4;
        if ((size_t)(end - *pos) < n) {
            return ES_ERR_MALFORMED;
        }
        for (size_t i = 0; i < n; i++) {
            f->varint |= (uint64_t)(*pos)[i] << (8 * i);
        }
        *pos += n;
        return ES_OK;
    }
    case PBW_WIRE_LEN: {
        const uint8_t *len_start = *pos;
        uint64_t len;
        if (get_varint(pos, end, &len) != ES_OK || *pos - len_start > 5 ||
            len > (uint64_t)(end - *pos)) {
            return ES_ERR_MALFORMED;
        }
        f->data = *pos;
        f->len = (size_t)len;
        *pos += len;
        return ES_OK;
    }
    default:
        return ES_ERR_MALFORMED; /* groups (3, 4) and reserved types (6, 7) */
    }
}

static es_err find_field(const uint8_t *buf, size_t len, uint32_t number, uint8_t wire,
                         pbw_field *found)
{
    const uint8_t *pos = buf;
    const uint8_t *end = buf + len;
    es_err result = ES_ERR_NOT_FOUND;
    pbw_field f;
    for (;;) {
        es_err rv = pbw_next(&pos, end, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            return result;
        }
        if (rv != ES_OK) {
            return rv;
        }
        if (f.number == number) {
            if (f.wire != wire) {
                return ES_ERR_MALFORMED;
            }
            *found = f;
            result = ES_OK;
        }
    }
}

es_err pbw_find_bytes(const uint8_t *buf, size_t len, uint32_t number, const uint8_t **data,
                      size_t *data_len)
{
    pbw_field f;
    es_err rv = find_field(buf, len, number, PBW_WIRE_LEN, &f);
    *data = rv == ES_OK ? f.data : NULL;
    *data_len = rv == ES_OK ? f.len : 0;
    return rv;
}

es_err pbw_find_varint(const uint8_t *buf, size_t len, uint32_t number, uint64_t *value)
{
    pbw_field f;
    es_err rv = find_field(buf, len, number, PBW_WIRE_VARINT, &f);
    if (rv == ES_OK) {
        *value = f.varint;
    }
    return rv;
}

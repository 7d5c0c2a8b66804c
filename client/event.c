/*
 * event — the decoder of RecordedEvent wire bytes shared by reads
 * (read.c) and subscriptions (subscribe.c).
 *
 * Design notes: events are decoded in place with the pbwire primitives,
 * never unpacked by protobuf-c: no allocation per event, data and metadata
 * point into the received page, and only the three names are copied (they
 * must be NUL-terminated for the caller). The page was checked before
 * (call.c/subscribe.c: byte cap, event count, fields per event), so a
 * decode here is bounded by the event's own bytes.
 */
#include <string.h>

#include "internal.h"
#include "pbwire.h"
#include "validate.h"

/* A name field as a NUL-terminated string in the caller's string buffer;
 * false when it is too long, holds a NUL, or is required and empty. */
static bool take_name(const uint8_t *p, size_t len, bool required, char **sp, const char **out)
{
    if ((required && len == 0) || len > ES_MAX_NAME_BYTES ||
        (len > 0 && memchr(p, '\0', len) != NULL)) {
        return false;
    }
    char *d = *sp;
    if (len > 0) {
        memcpy(d, p, len);
    }
    d[len] = '\0';
    *sp = d + len + 1;
    *out = d;
    return true;
}

bool cl_parse_event(const uint8_t *p, size_t len, es_recorded_event *e, char **sp)
{
    const uint8_t *end = p + len;
    const uint8_t *stream = NULL, *type = NULL, *ctype = NULL;
    size_t stream_len = 0, type_len = 0, ctype_len = 0;
    const uint8_t *id = NULL, *corr = NULL, *caus = NULL;
    size_t id_len = 0, corr_len = 0, caus_len = 0;
    memset(e, 0, sizeof(*e));
    for (;;) {
        pbw_field f;
        es_err rv = pbw_next(&p, end, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            break;
        }
        if (rv != ES_OK) {
            return false;
        }
        bool varint = f.number == 2 || f.number == 3 || f.number == 11;
        if (f.number >= 1 && f.number <= 11 &&
            f.wire != (varint ? PBW_WIRE_VARINT : PBW_WIRE_LEN)) {
            return false;
        }
        switch (f.number) {
        case 1:
            stream = f.data;
            stream_len = f.len;
            break;
        case 2:
            e->revision = f.varint;
            break;
        case 3:
            e->position = f.varint;
            break;
        case 4:
            id = f.data;
            id_len = f.len;
            break;
        case 5:
            type = f.data;
            type_len = f.len;
            break;
        case 6:
            e->data = f.len > 0 ? f.data : NULL;
            e->data_len = f.len;
            break;
        case 7:
            e->metadata = f.len > 0 ? f.data : NULL;
            e->metadata_len = f.len;
            break;
        case 8:
            ctype = f.data;
            ctype_len = f.len;
            break;
        case 9:
            corr = f.data;
            corr_len = f.len;
            break;
        case 10:
            caus = f.data;
            caus_len = f.len;
            break;
        case 11:
            e->recorded_at_us = f.varint;
            break;
        default:
            break;
        }
    }
    if (id_len != ES_UUID_BYTES || (corr_len != 0 && corr_len != ES_UUID_BYTES) ||
        (caus_len != 0 && caus_len != ES_UUID_BYTES)) {
        return false;
    }
    if (!take_name(stream, stream_len, true, sp, &e->stream) ||
        !take_name(type, type_len, true, sp, &e->type) ||
        !take_name(ctype, ctype_len, false, sp, &e->content_type)) {
        return false;
    }
    memcpy(e->id, id, ES_UUID_BYTES);
    e->correlation_id = corr_len ? corr : NULL;
    e->causation_id = caus_len ? caus : NULL;
    return true;
}

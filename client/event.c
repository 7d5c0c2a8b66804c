/*
 * event — the decoder of RecordedEvent wire bytes shared by reads
 * (read.c) and subscriptions (subscribe.c).
 *
 * Design notes: events are decoded in place by the one record decoder
 * (proto/record.h), never unpacked by protobuf-c: no allocation per event,
 * data and metadata point into the received page, and only the three names
 * are copied (they must be NUL-terminated for the caller). The page was checked before
 * (call.c/subscribe.c: byte cap, event count, fields per event), so a
 * decode here is bounded by the event's own bytes.
 */
#include <string.h>

#include "internal.h"
#include "record.h"
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
    es_record r;
    memset(e, 0, sizeof(*e));
    if (es_record_parse(p, len, 0, &r) != ES_OK) {
        return false;
    }
    if (!take_name(r.stream.p, r.stream.len, true, sp, &e->stream) ||
        !take_name(r.type.p, r.type.len, true, sp, &e->type) ||
        !take_name(r.content_type.p, r.content_type.len, false, sp, &e->content_type)) {
        return false;
    }
    e->revision = r.revision;
    e->position = r.position;
    e->recorded_at_us = r.recorded_at_us;
    e->data = r.data.len > 0 ? r.data.p : NULL;
    e->data_len = r.data.len;
    e->metadata = r.metadata.len > 0 ? r.metadata.p : NULL;
    e->metadata_len = r.metadata.len;
    memcpy(e->id, r.id.p, ES_UUID_BYTES);
    e->correlation_id = r.correlation_id.len ? r.correlation_id.p : NULL;
    e->causation_id = r.causation_id.len ? r.causation_id.p : NULL;
    return true;
}

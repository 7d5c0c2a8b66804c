/*
 * libFuzzer target: the one decoder of a stored record (proto/record.h),
 * in both modes, with protobuf-c as the reference. A record the decoder
 * accepts must unpack with protobuf-c to the same fields (lenient mode is
 * protobuf's "last one wins"); strict acceptance implies lenient acceptance
 * with the same result; every slice lies inside the input; and what is
 * accepted has the shape es_record_parse promises. The input is copied to
 * a heap buffer of exactly its size, so ASan sees any over-read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "es.pb-c.h"
#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_slice(es_slice s, const uint8_t *buf, size_t size)
{
    if (s.len && (s.p < buf || s.p + s.len > buf + size)) {
        abort();
    }
}

static void check_same(es_slice s, ProtobufCBinaryData b)
{
    if (s.len != b.len || (s.len && memcmp(s.p, b.data, s.len) != 0)) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        return 0;
    }
    memcpy(buf, data, size);
    es_record lenient, strict;
    es_err lrv = es_record_parse(buf, size, 0, &lenient);
    es_err srv = es_record_parse(buf, size, ES_RECORD_STRICT, &strict);
    if ((lrv != ES_OK && lrv != ES_ERR_MALFORMED) || (srv != ES_OK && srv != ES_ERR_MALFORMED)) {
        abort();
    }
    if (srv == ES_OK && (lrv != ES_OK || memcmp(&lenient, &strict, sizeof strict) != 0)) {
        abort();
    }
    if (lrv == ES_OK) {
        const es_slice all[] = {lenient.stream,         lenient.id,          lenient.type,
                                lenient.data,           lenient.metadata,    lenient.content_type,
                                lenient.correlation_id, lenient.causation_id};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
            check_slice(all[i], buf, size);
        }
        if (lenient.stream.len == 0 || lenient.type.len == 0 ||
            lenient.id.len != ES_RECORD_ID_BYTES || lenient.position == 0 ||
            (lenient.correlation_id.len != 0 && lenient.correlation_id.len != 16) ||
            (lenient.causation_id.len != 0 && lenient.causation_id.len != 16)) {
            abort();
        }
        Es__V1__RecordedEvent *e = es__v1__recorded_event__unpack(NULL, size, buf);
        if (!e) {
            abort(); /* accepted here, refused by the reference */
        }
        check_same(lenient.stream, e->stream);
        check_same(lenient.id, e->id);
        check_same(lenient.type, e->type);
        check_same(lenient.data, e->data);
        check_same(lenient.metadata, e->metadata);
        check_same(lenient.content_type, e->content_type);
        check_same(lenient.correlation_id, e->correlation_id);
        check_same(lenient.causation_id, e->causation_id);
        if (lenient.revision != e->revision || lenient.position != e->position ||
            lenient.recorded_at_us != e->recorded_at_us) {
            abort();
        }
        es__v1__recorded_event__free_unpacked(e, NULL);
    }
    free(buf);
    return 0;
}

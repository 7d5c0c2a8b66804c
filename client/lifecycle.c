/*
 * lifecycle.c — es_stream_delete, es_stream_tombstone, es_stream_meta_set,
 * es_stream_meta_get: one request, one reply each (semantics in
 * docs/lifecycle.md). The ids are checked here as the server would, so a
 * bad one never costs a round trip.
 */
#include <string.h>

#include "es.pb-c.h"
#include "internal.h"
#include "validate.h"

static es_err check_lifecycle_stream(es_client *c, const char *stream)
{
    if (stream == NULL) {
        return cl_fail(c, ES_ERR_INVALID_STREAM_ID, "invalid stream id");
    }
    es_err rv = es_validate_stream_id((const uint8_t *)stream, strlen(stream), false);
    if (rv == ES_ERR_RESERVED_STREAM) {
        return cl_fail(c, rv, "streams starting with '$' have no lifecycle");
    }
    if (rv != ES_OK) {
        return cl_fail(c, rv, "invalid stream id");
    }
    return ES_OK;
}

static es_err delete_call(es_client *c, const char *stream, es_expected expected,
                          uint64_t *last_revision, bool tombstone)
{
    if (last_revision != NULL) {
        *last_revision = 0;
    }
    if (c == NULL || (unsigned)expected.kind > ES_EXPECT_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_lifecycle_stream(c, stream);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__Expected exp = ES__V1__EXPECTED__INIT;
    exp.kind = (Es__V1__ExpectedKind)expected.kind;
    exp.revision = expected.kind == ES_EXPECT_EXACT ? expected.revision : 0;
    ProtobufCBinaryData sb = {strlen(stream), (uint8_t *)stream};
    Es__V1__DeleteStream del = ES__V1__DELETE_STREAM__INIT;
    Es__V1__TombstoneStream tomb = ES__V1__TOMBSTONE_STREAM__INIT;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    if (tombstone) {
        tomb.stream = sb;
        tomb.expected = &exp;
        req.kind_case = ES__V1__REQUEST__KIND_TOMBSTONE_STREAM;
        req.tombstone_stream = &tomb;
    } else {
        del.stream = sb;
        del.expected = &exp;
        req.kind_case = ES__V1__REQUEST__KIND_DELETE_STREAM;
        req.delete_stream = &del;
    }
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    if (last_revision != NULL) {
        *last_revision = resp->stream_deleted->last_revision;
    }
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_stream_delete(es_client *c, const char *stream, es_expected expected,
                        uint64_t *last_revision)
{
    return delete_call(c, stream, expected, last_revision, false);
}

es_err es_stream_tombstone(es_client *c, const char *stream, es_expected expected,
                           uint64_t *last_revision)
{
    return delete_call(c, stream, expected, last_revision, true);
}

static void meta_from(es_stream_meta *out, const Es__V1__StreamMetadata *m)
{
    out->exists = m->exists;
    out->metadata_revision = m->metadata_revision;
    out->truncate_before = m->truncate_before;
    out->max_count = m->max_count;
    out->max_age_s = m->max_age_s;
    out->deleted = m->deleted;
    out->deleted_before = m->deleted_before;
}

es_err es_stream_meta_set(es_client *c, const char *stream, es_expected expected,
                          uint64_t truncate_before, uint64_t max_count, uint64_t max_age_s,
                          es_stream_meta *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    if (c == NULL || (unsigned)expected.kind > ES_EXPECT_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = check_lifecycle_stream(c, stream);
    if (rv != ES_OK) {
        return rv;
    }
    if (max_age_s > ES_MAX_AGE_S) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "max_age_s above 100 years");
    }
    Es__V1__Expected exp = ES__V1__EXPECTED__INIT;
    exp.kind = (Es__V1__ExpectedKind)expected.kind;
    exp.revision = expected.kind == ES_EXPECT_EXACT ? expected.revision : 0;
    Es__V1__SetStreamMetadata sm = ES__V1__SET_STREAM_METADATA__INIT;
    sm.stream.data = (uint8_t *)stream;
    sm.stream.len = strlen(stream);
    sm.expected_metadata_revision = &exp;
    sm.truncate_before = truncate_before;
    sm.max_count = max_count;
    sm.max_age_s = max_age_s;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_SET_STREAM_METADATA;
    req.set_stream_metadata = &sm;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    if (out != NULL) {
        meta_from(out, resp->stream_metadata);
    }
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_stream_meta_get(es_client *c, const char *stream, es_stream_meta *out)
{
    if (c == NULL || out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    memset(out, 0, sizeof(*out));
    es_err rv = check_lifecycle_stream(c, stream);
    if (rv != ES_OK) {
        return rv;
    }
    Es__V1__GetStreamMetadata gm = ES__V1__GET_STREAM_METADATA__INIT;
    gm.stream.data = (uint8_t *)stream;
    gm.stream.len = strlen(stream);
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_GET_STREAM_METADATA;
    req.get_stream_metadata = &gm;
    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    meta_from(out, resp->stream_metadata);
    cl_resp_free(resp);
    return ES_OK;
}

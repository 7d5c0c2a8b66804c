/*
 * erase.c — es_stream_erase, es_subject_erase: one request, one reply each
 * (semantics in docs/erasure.md). Names are checked here as the server
 * would, so a bad one never costs a round trip; the confirmation is checked
 * by the server.
 */
#include <string.h>

#include "es.pb-c.h"
#include "internal.h"
#include "validate.h"

static es_err erase_call(es_client *c, Es__V1__Request *req, es_erased *out)
{
    Es__V1__Response *resp = NULL;
    es_err rv = cl_call(c, req, 0, CL_SMALL_REPLY_CAP, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    if (out != NULL) {
        out->erased_at_us = resp->erased->erased_at_us;
        out->already = resp->erased->already;
        out->streams = resp->erased->streams;
    }
    cl_resp_free(resp);
    return ES_OK;
}

es_err es_stream_erase(es_client *c, const char *stream, es_expected expected, bool force,
                       es_erased *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    if (c == NULL || (unsigned)expected.kind > ES_EXPECT_EXACT) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (stream == NULL) {
        return cl_fail(c, ES_ERR_INVALID_STREAM_ID, "invalid stream id");
    }
    es_err rv = es_validate_stream_id((const uint8_t *)stream, strlen(stream), false);
    if (rv != ES_OK) {
        return cl_fail(c, rv,
                       rv == ES_ERR_RESERVED_STREAM
                           ? "streams starting with '$' belong to the store"
                           : "invalid stream id");
    }
    Es__V1__Expected exp = ES__V1__EXPECTED__INIT;
    exp.kind = (Es__V1__ExpectedKind)expected.kind;
    exp.revision = expected.kind == ES_EXPECT_EXACT ? expected.revision : 0;
    Es__V1__EraseStream er = ES__V1__ERASE_STREAM__INIT;
    er.stream.data = (uint8_t *)stream;
    er.stream.len = strlen(stream);
    er.expected = &exp;
    er.force = force;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_ERASE_STREAM;
    req.erase_stream = &er;
    return erase_call(c, &req, out);
}

es_err es_subject_erase(es_client *c, const char *subject, es_erased *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (subject == NULL || es_validate_name((const uint8_t *)subject, strlen(subject)) != ES_OK) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "invalid subject id");
    }
    Es__V1__EraseSubject er = ES__V1__ERASE_SUBJECT__INIT;
    er.subject.data = (uint8_t *)subject;
    er.subject.len = strlen(subject);
    er.force = true;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.kind_case = ES__V1__REQUEST__KIND_ERASE_SUBJECT;
    req.erase_subject = &er;
    return erase_call(c, &req, out);
}

/*
 * read — iterators over a stream or the global log that hide the paging.
 *
 * Design notes: an iterator holds at most one page (one decoded reply) at
 * a time, and the page holds at most the number of events it asked for:
 * the count is checked on the wire before decoding (call.c), so a server
 * cannot make the client allocate more than one frame's worth. The event
 * handed out points into that page and stays valid until the next call.
 * The iterator remembers where the next page starts; when fetching fails
 * (connection lost, timeout) the caller may call es_read_next again and it
 * reconnects and resumes from there.
 */
#include <string.h>

#include "alloc.h"
#include "internal.h"
#include "validate.h"

struct es_read_iter {
    es_client *c;
    bool all;
    char *stream; /* stream reads */
    es_filter_kind filter;
    char *filter_name; /* read-all with a filter */
    uint64_t next;     /* where the next page starts */
    bool backward;
    bool unlimited;
    uint64_t left; /* events still to deliver, unless unlimited */
    uint32_t page_size;
    bool end;
    uint64_t head;

    Es__V1__Response *page;
    size_t idx;

    es_recorded_event cur;
    char cur_stream[ES_MAX_NAME_BYTES + 1];
    char cur_type[ES_MAX_NAME_BYTES + 1];
    char cur_ctype[ES_MAX_NAME_BYTES + 1];
};

static es_err open_iter(es_client *c, const es_read_options *opts, bool all, es_read_iter **out)
{
    es_read_iter *it = cl_calloc(1, sizeof(*it));
    if (it == NULL) {
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for an iterator");
    }
    it->c = c;
    it->all = all;
    if (opts != NULL) {
        it->next = opts->from;
        it->backward = opts->backward;
        it->unlimited = opts->max_count == 0;
        it->left = opts->max_count;
        it->page_size = opts->page_size;
    } else {
        it->unlimited = true;
    }
    *out = it;
    return ES_OK;
}

es_err es_read_stream(es_client *c, const char *stream, const es_read_options *opts,
                      es_read_iter **out)
{
    if (c == NULL || out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (stream == NULL ||
        es_validate_stream_id((const uint8_t *)stream, strlen(stream), true) != ES_OK) {
        return cl_fail(c, ES_ERR_INVALID_STREAM_ID, "invalid stream id");
    }
    es_read_iter *it = NULL;
    es_err rv = open_iter(c, opts, false, &it);
    if (rv != ES_OK) {
        return rv;
    }
    it->stream = cl_strndup(stream, strlen(stream));
    if (it->stream == NULL) {
        es_read_destroy(it);
        return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for an iterator");
    }
    *out = it;
    return ES_OK;
}

es_err es_read_all(es_client *c, const es_read_options *opts, es_read_iter **out)
{
    if (c == NULL || out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    es_filter_kind fk = opts != NULL ? opts->filter : ES_FILTER_NONE;
    if ((unsigned)fk > ES_FILTER_EVENT_TYPE) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "unknown filter kind %d", (int)fk);
    }
    if (fk != ES_FILTER_NONE &&
        (opts->filter_name == NULL || es_validate_name((const uint8_t *)opts->filter_name,
                                                       strlen(opts->filter_name)) != ES_OK)) {
        return cl_fail(c, ES_ERR_INVALID_ARGUMENT, "a filter needs a valid name");
    }
    es_read_iter *it = NULL;
    es_err rv = open_iter(c, opts, true, &it);
    if (rv != ES_OK) {
        return rv;
    }
    it->filter = fk;
    if (fk != ES_FILTER_NONE) {
        it->filter_name = cl_strndup(opts->filter_name, strlen(opts->filter_name));
        if (it->filter_name == NULL) {
            es_read_destroy(it);
            return cl_fail(c, ES_ERR_NO_MEMORY, "no memory for an iterator");
        }
    }
    *out = it;
    return ES_OK;
}

void es_read_destroy(es_read_iter *it)
{
    if (it == NULL) {
        return;
    }
    cl_resp_free(it->page);
    cl_free(it->stream);
    cl_free(it->filter_name);
    cl_free(it);
}

uint64_t es_read_head(const es_read_iter *it)
{
    return it != NULL ? it->head : 0;
}

/* Copy a name into a NUL-terminated buffer; false when it does not fit or
 * holds a NUL (a server bug). */
static bool copy_name(char *dst, const ProtobufCBinaryData *b, bool required)
{
    if ((required && b->len == 0) || b->len > ES_MAX_NAME_BYTES ||
        (b->len > 0 && memchr(b->data, '\0', b->len) != NULL)) {
        return false;
    }
    if (b->len > 0) {
        memcpy(dst, b->data, b->len);
    }
    dst[b->len] = '\0';
    return true;
}

static es_err convert(es_read_iter *it, const Es__V1__RecordedEvent *r)
{
    es_recorded_event *e = &it->cur;
    memset(e, 0, sizeof(*e));
    if (!copy_name(it->cur_stream, &r->stream, true) || !copy_name(it->cur_type, &r->type, true) ||
        !copy_name(it->cur_ctype, &r->content_type, false) || r->id.len != ES_UUID_BYTES ||
        (r->correlation_id.len != 0 && r->correlation_id.len != ES_UUID_BYTES) ||
        (r->causation_id.len != 0 && r->causation_id.len != ES_UUID_BYTES)) {
        return cl_fail(it->c, ES_ERR_MALFORMED, "the server sent an invalid event at position %llu",
                       (unsigned long long)r->position);
    }
    e->stream = it->cur_stream;
    e->revision = r->revision;
    e->position = r->position;
    memcpy(e->id, r->id.data, ES_UUID_BYTES);
    e->type = it->cur_type;
    e->data = r->data.data;
    e->data_len = r->data.len;
    e->metadata = r->metadata.data;
    e->metadata_len = r->metadata.len;
    e->content_type = it->cur_ctype;
    e->correlation_id = r->correlation_id.len ? r->correlation_id.data : NULL;
    e->causation_id = r->causation_id.len ? r->causation_id.data : NULL;
    e->recorded_at_us = r->recorded_at_us;
    return ES_OK;
}

static es_err fetch_page(es_read_iter *it)
{
    es_client *c = it->c;
    es_err rv = cl_ensure(c);
    if (rv != ES_OK) {
        return rv;
    }
    uint32_t limit = it->page_size;
    if (limit == 0) {
        limit = c->info.limits.max_page_size ? c->info.limits.max_page_size : CL_DEFAULT_PAGE;
    }
    if (c->info.limits.max_page_size != 0 && limit > c->info.limits.max_page_size) {
        limit = c->info.limits.max_page_size;
    }
    if (!it->unlimited && it->left < limit) {
        limit = (uint32_t)it->left;
    }

    Es__V1__Request req = ES__V1__REQUEST__INIT;
    Es__V1__ReadStream rs = ES__V1__READ_STREAM__INIT;
    Es__V1__ReadAll ra = ES__V1__READ_ALL__INIT;
    Es__V1__Filter f = ES__V1__FILTER__INIT;
    if (it->all) {
        ra.from_position = it->next;
        ra.backward = it->backward;
        ra.limit = limit;
        if (it->filter != ES_FILTER_NONE) {
            ProtobufCBinaryData name = {strlen(it->filter_name), (uint8_t *)it->filter_name};
            if (it->filter == ES_FILTER_STREAM_PREFIX) {
                f.stream_prefix = name;
            } else if (it->filter == ES_FILTER_CATEGORY) {
                f.category = name;
            } else {
                f.event_type = name;
            }
            ra.filter = &f;
        }
        req.kind_case = ES__V1__REQUEST__KIND_READ_ALL;
        req.read_all = &ra;
    } else {
        rs.stream.data = (uint8_t *)it->stream;
        rs.stream.len = strlen(it->stream);
        rs.from_revision = it->next;
        rs.backward = it->backward;
        rs.limit = limit;
        req.kind_case = ES__V1__REQUEST__KIND_READ_STREAM;
        req.read_stream = &rs;
    }

    Es__V1__Response *resp = NULL;
    rv = cl_call(c, &req, limit, c->recv_cap, &resp);
    if (rv != ES_OK) {
        return rv;
    }
    const Es__V1__ReadResult *rr = resp->read;
    if (rr->n_events == 0 && !rr->end_of_stream && rr->next == it->next) {
        /* A page that neither delivers nor moves on would loop forever. */
        cl_resp_free(resp);
        return cl_fail(c, ES_ERR_MALFORMED, "the server's page made no progress");
    }
    it->page = resp;
    it->idx = 0;
    it->next = rr->next;
    it->end = rr->end_of_stream;
    it->head = rr->head_position;
    return ES_OK;
}

es_err es_read_next(es_read_iter *it, const es_recorded_event **ev)
{
    if (it == NULL || ev == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *ev = NULL;
    for (;;) {
        if (!it->unlimited && it->left == 0) {
            return ES_OK;
        }
        if (it->page != NULL && it->idx < it->page->read->n_events) {
            es_err rv = convert(it, it->page->read->events[it->idx]);
            if (rv != ES_OK) {
                /* Drop the page; calling again resumes after it. */
                cl_resp_free(it->page);
                it->page = NULL;
                return rv;
            }
            it->idx++;
            if (!it->unlimited) {
                it->left--;
            }
            *ev = &it->cur;
            return ES_OK;
        }
        if (it->page != NULL) {
            cl_resp_free(it->page);
            it->page = NULL;
        }
        if (it->end) {
            return ES_OK;
        }
        es_err rv = fetch_page(it);
        if (rv != ES_OK) {
            return rv;
        }
    }
}

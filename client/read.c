/*
 * read — iterators over a stream or the global log that hide the paging.
 *
 * Design notes: an iterator holds at most one page at a time, and the page
 * holds at most the number of events it asked for: the count is checked on
 * the wire before anything else (call.c), so a server cannot make the
 * client allocate more than one frame's worth. The page is kept as the
 * ReadResult's wire bytes (cl_call_read) and each event is decoded in
 * place when es_read_next reaches it (cl_parse_event: no allocation per
 * event). While a page is consumed the request for the next one is already
 * out (read-ahead), so the server builds page N+1 while the caller works on
 * page N; an iterator holds at most two pages. The event handed out points into that page and stays
 * valid until the next call. The iterator remembers where the next page starts; when fetching fails
 * (connection lost, timeout) the caller may call es_read_next again and it
 * reconnects and resumes from there.
 */
#include <string.h>

#include "alloc.h"
#include "internal.h"
#include "pbwire.h"
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

    cl_page page; /* page.buf NULL: no page */
    bool ahead;   /* the request for the page after this one is out */
    uint64_t ahead_id;
    uint32_t ahead_limit;
    const uint8_t *rp, *rend; /* where the page's next event is looked for */

    es_recorded_event cur;
    char cur_strs[3 * (ES_MAX_NAME_BYTES + 1)]; /* stream, type, content type */
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
    if (it->ahead) {
        cl_abandon(it->c, it->ahead_id);
    }
    cl_buf_put(it->c, it->page.buf, it->page.cap);
    cl_free(it->stream);
    cl_free(it->filter_name);
    cl_free(it);
}

uint64_t es_read_head(const es_read_iter *it)
{
    return it != NULL ? it->head : 0;
}

/* Send the request for the page that starts at `from`, asking for at most
 * `left` events unless the iterator is unlimited. */
static es_err send_page_request(es_read_iter *it, uint64_t from, uint64_t left, uint64_t *id,
                                uint32_t *limit_out)
{
    es_client *c = it->c;
    uint32_t limit = it->page_size;
    if (limit == 0) {
        limit = c->info.limits.max_page_size ? c->info.limits.max_page_size : CL_DEFAULT_PAGE;
    }
    if (c->info.limits.max_page_size != 0 && limit > c->info.limits.max_page_size) {
        limit = c->info.limits.max_page_size;
    }
    if (!it->unlimited && left < limit) {
        limit = (uint32_t)left;
    }

    Es__V1__Request req = ES__V1__REQUEST__INIT;
    Es__V1__ReadStream rs = ES__V1__READ_STREAM__INIT;
    Es__V1__ReadAll ra = ES__V1__READ_ALL__INIT;
    Es__V1__Filter f = ES__V1__FILTER__INIT;
    if (it->all) {
        ra.from_position = from;
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
        rs.from_revision = from;
        rs.backward = it->backward;
        rs.limit = limit;
        req.kind_case = ES__V1__REQUEST__KIND_READ_STREAM;
        req.read_stream = &rs;
    }
    *limit_out = limit;
    return cl_submit_read(c, &req, limit, c->recv_cap, id);
}

static es_err fetch_page(es_read_iter *it)
{
    es_client *c = it->c;
    uint64_t id;
    uint32_t limit;
    es_err rv;
    if (it->ahead) {
        /* Asked for while the previous page was being consumed. */
        it->ahead = false;
        id = it->ahead_id;
        limit = it->ahead_limit;
    } else {
        rv = cl_ensure(c);
        if (rv != ES_OK) {
            return rv;
        }
        rv = send_page_request(it, it->next, it->left, &id, &limit);
        if (rv != ES_OK) {
            return rv;
        }
    }
    cl_page pg;
    rv = cl_wait_read(c, id, &pg);
    if (rv != ES_OK) {
        return rv;
    }
    /* ReadResult: events = 1, next = 2, end_of_stream = 3, head_position =
     * 4 (last one wins); the events are decoded one by one later. */
    uint64_t n_events = 0, next = 0, end = 0, head = 0;
    const uint8_t *p = pg.data, *pend = pg.data + pg.len;
    for (;;) {
        pbw_field fl;
        rv = pbw_next(&p, pend, &fl);
        if (rv == ES_ERR_NOT_FOUND) {
            break;
        }
        bool varint = fl.number >= 2 && fl.number <= 4;
        if (rv != ES_OK || (fl.number >= 1 && fl.number <= 4 &&
                            fl.wire != (varint ? PBW_WIRE_VARINT : PBW_WIRE_LEN))) {
            cl_buf_put(c, pg.buf, pg.cap);
            return cl_fail(c, ES_ERR_MALFORMED, "the server's page does not decode");
        }
        if (fl.number == 1) {
            n_events++;
        } else if (fl.number == 2) {
            next = fl.varint;
        } else if (fl.number == 3) {
            end = fl.varint;
        } else if (fl.number == 4) {
            head = fl.varint;
        }
    }
    if (n_events > limit) {
        cl_buf_put(c, pg.buf, pg.cap);
        return cl_fail(c, ES_ERR_MALFORMED, "the server sent %llu events for a page of %u",
                       (unsigned long long)n_events, limit);
    }
    if (n_events == 0 && !end && next == it->next) {
        /* A page that neither delivers nor moves on would loop forever. */
        cl_buf_put(c, pg.buf, pg.cap);
        return cl_fail(c, ES_ERR_MALFORMED, "the server's page made no progress");
    }
    it->page = pg;
    it->rp = pg.data;
    it->rend = pg.data + pg.len;
    it->next = next;
    it->end = end != 0;
    it->head = head;
    /* Read ahead: ask for the next page now, so the server builds it while
     * this one is consumed (at most two pages per iterator). A failure to
     * send is not reported here: the next fetch sends again and says why. */
    uint64_t left = it->unlimited ? 0 : it->left - n_events;
    if (!it->end && (it->unlimited || left > 0) && c->fd >= 0 &&
        send_page_request(it, it->next, left, &it->ahead_id, &it->ahead_limit) == ES_OK) {
        it->ahead = true;
    }
    return ES_OK;
}

/* The page's next event into it->cur. @return ES_OK with *found false at
 * the end of the page; ES_ERR_MALFORMED for an invalid event. */
static es_err page_next(es_read_iter *it, bool *found)
{
    *found = false;
    for (;;) {
        pbw_field f;
        es_err rv = pbw_next(&it->rp, it->rend, &f);
        if (rv == ES_ERR_NOT_FOUND) {
            return ES_OK;
        }
        if (rv != ES_OK) {
            break;
        }
        if (f.number != 1) {
            continue;
        }
        char *sp = it->cur_strs;
        if (!cl_parse_event(f.data, f.len, &it->cur, &sp)) {
            break;
        }
        *found = true;
        return ES_OK;
    }
    return cl_fail(it->c, ES_ERR_MALFORMED, "the server sent an invalid event in a page");
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
        if (it->page.buf != NULL) {
            bool found;
            es_err rv = page_next(it, &found);
            if (rv != ES_OK) {
                /* Drop the page; calling again resumes after it. */
                cl_buf_put(it->c, it->page.buf, it->page.cap);
                it->page.buf = NULL;
                return rv;
            }
            if (found) {
                if (!it->unlimited) {
                    it->left--;
                }
                *ev = &it->cur;
                return ES_OK;
            }
            cl_buf_put(it->c, it->page.buf, it->page.cap);
            it->page.buf = NULL;
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

#include "reqs.h"

#include <string.h>

#include "frame.h"

#define STREAM "sec-1"

const Es__V1__Request__KindCase sec_kinds[] = {
    ES__V1__REQUEST__KIND_APPEND,
    ES__V1__REQUEST__KIND_TRANSACTION,
    ES__V1__REQUEST__KIND_READ_STREAM,
    ES__V1__REQUEST__KIND_READ_ALL,
    ES__V1__REQUEST__KIND_SUBSCRIBE,
    ES__V1__REQUEST__KIND_UNSUBSCRIBE,
    ES__V1__REQUEST__KIND_STREAM_INFO,
    ES__V1__REQUEST__KIND_LIST_STREAMS,
    ES__V1__REQUEST__KIND_SAVE_SNAPSHOT,
    ES__V1__REQUEST__KIND_LOAD_SNAPSHOT,
    ES__V1__REQUEST__KIND_STATS,
    ES__V1__REQUEST__KIND_PING,
    ES__V1__REQUEST__KIND_DELETE_STREAM,
    ES__V1__REQUEST__KIND_TOMBSTONE_STREAM,
    ES__V1__REQUEST__KIND_SET_STREAM_METADATA,
    ES__V1__REQUEST__KIND_GET_STREAM_METADATA,
    ES__V1__REQUEST__KIND_ERASE_STREAM,
    ES__V1__REQUEST__KIND_ERASE_SUBJECT,
};
const size_t sec_n_kinds = sizeof sec_kinds / sizeof sec_kinds[0];

bool sec_kind_writes(Es__V1__Request__KindCase k)
{
    return k == ES__V1__REQUEST__KIND_APPEND || k == ES__V1__REQUEST__KIND_TRANSACTION ||
           k == ES__V1__REQUEST__KIND_SAVE_SNAPSHOT || k == ES__V1__REQUEST__KIND_DELETE_STREAM ||
           k == ES__V1__REQUEST__KIND_SET_STREAM_METADATA || sec_kind_admin(k);
}

bool sec_kind_admin(Es__V1__Request__KindCase k)
{
    return k == ES__V1__REQUEST__KIND_TOMBSTONE_STREAM || k == ES__V1__REQUEST__KIND_ERASE_STREAM ||
           k == ES__V1__REQUEST__KIND_ERASE_SUBJECT;
}

static ProtobufCBinaryData bytes_of(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

Es__V1__Request *sec_request(sec_req *r, Es__V1__Request__KindCase kind, uint64_t id)
{
    memset(r, 0, sizeof *r);
    es__v1__request__init(&r->req);
    r->req.id = id;
    r->req.kind_case = kind;
    es__v1__proposed_event__init(&r->ev);
    r->ev.type = bytes_of("SecTested");
    r->ev.data = bytes_of("{}");
    r->evs[0] = &r->ev;
    es__v1__append__init(&r->app);
    r->app.stream = bytes_of(STREAM);
    r->app.n_events = 1;
    r->app.events = r->evs;
    r->apps[0] = &r->app;
    switch (kind) {
    case ES__V1__REQUEST__KIND_APPEND:
        r->req.append = &r->app;
        break;
    case ES__V1__REQUEST__KIND_TRANSACTION:
        es__v1__transaction__init(&r->txn);
        r->txn.n_appends = 1;
        r->txn.appends = r->apps;
        r->req.transaction = &r->txn;
        break;
    case ES__V1__REQUEST__KIND_READ_STREAM:
        es__v1__read_stream__init(&r->rs);
        r->rs.stream = bytes_of(STREAM);
        r->req.read_stream = &r->rs;
        break;
    case ES__V1__REQUEST__KIND_READ_ALL:
        es__v1__read_all__init(&r->ra);
        r->req.read_all = &r->ra;
        break;
    case ES__V1__REQUEST__KIND_SUBSCRIBE:
        es__v1__subscribe__init(&r->sub);
        r->sub.from_end = true;
        r->req.subscribe = &r->sub;
        break;
    case ES__V1__REQUEST__KIND_UNSUBSCRIBE:
        es__v1__unsubscribe__init(&r->unsub);
        r->unsub.subscription_id = 424242;
        r->req.unsubscribe = &r->unsub;
        break;
    case ES__V1__REQUEST__KIND_STREAM_INFO:
        es__v1__stream_info_request__init(&r->info);
        r->info.stream = bytes_of(STREAM);
        r->req.stream_info = &r->info;
        break;
    case ES__V1__REQUEST__KIND_LIST_STREAMS:
        es__v1__list_streams__init(&r->list);
        r->req.list_streams = &r->list;
        break;
    case ES__V1__REQUEST__KIND_SAVE_SNAPSHOT:
        es__v1__save_snapshot__init(&r->save);
        r->save.stream = bytes_of(STREAM);
        r->save.data = bytes_of("state");
        r->req.save_snapshot = &r->save;
        break;
    case ES__V1__REQUEST__KIND_LOAD_SNAPSHOT:
        es__v1__load_snapshot__init(&r->load);
        r->load.stream = bytes_of(STREAM);
        r->req.load_snapshot = &r->load;
        break;
    case ES__V1__REQUEST__KIND_STATS:
        es__v1__stats_request__init(&r->stats);
        r->req.stats = &r->stats;
        break;
    case ES__V1__REQUEST__KIND_PING:
        es__v1__ping__init(&r->ping);
        r->req.ping = &r->ping;
        break;
    case ES__V1__REQUEST__KIND_DELETE_STREAM:
        es__v1__delete_stream__init(&r->del);
        r->del.stream = bytes_of(STREAM);
        r->req.delete_stream = &r->del;
        break;
    case ES__V1__REQUEST__KIND_TOMBSTONE_STREAM:
        es__v1__tombstone_stream__init(&r->tomb);
        r->tomb.stream = bytes_of(STREAM);
        r->req.tombstone_stream = &r->tomb;
        break;
    case ES__V1__REQUEST__KIND_SET_STREAM_METADATA:
        es__v1__set_stream_metadata__init(&r->setmeta);
        r->setmeta.stream = bytes_of(STREAM);
        r->setmeta.max_count = 10;
        r->req.set_stream_metadata = &r->setmeta;
        break;
    case ES__V1__REQUEST__KIND_GET_STREAM_METADATA:
        es__v1__get_stream_metadata__init(&r->getmeta);
        r->getmeta.stream = bytes_of(STREAM);
        r->req.get_stream_metadata = &r->getmeta;
        break;
    case ES__V1__REQUEST__KIND_ERASE_STREAM:
        es__v1__erase_stream__init(&r->erase);
        r->erase.stream = bytes_of(STREAM);
        r->erase.force = true;
        r->req.erase_stream = &r->erase;
        break;
    case ES__V1__REQUEST__KIND_ERASE_SUBJECT:
        es__v1__erase_subject__init(&r->erase_subject);
        r->erase_subject.subject = bytes_of("sec-subject");
        r->erase_subject.force = true;
        r->req.erase_subject = &r->erase_subject;
        break;
    default:
        break;
    }
    return &r->req;
}

Es__V1__Request *sec_hello(sec_req *r, uint64_t id, const char *user, const char *token)
{
    memset(r, 0, sizeof *r);
    es__v1__request__init(&r->req);
    es__v1__hello__init(&r->hello);
    r->hello.protocol_version = 1;
    r->hello.client_name = (char *)"sec-test";
    r->hello.user = (char *)(user ? user : "");
    if (token) {
        r->hello.token = bytes_of(token);
    }
    r->req.id = id;
    r->req.kind_case = ES__V1__REQUEST__KIND_HELLO;
    r->req.hello = &r->hello;
    return &r->req;
}

size_t sec_frame(const Es__V1__Request *req, uint8_t *buf, size_t len, size_t cap)
{
    size_t n = es__v1__request__get_packed_size(req);
    if (len + FRAME_HEADER_BYTES + n > cap) {
        return 0;
    }
    frame_write_header(buf + len, (uint32_t)n);
    es__v1__request__pack(req, buf + len + FRAME_HEADER_BYTES);
    return len + FRAME_HEADER_BYTES + n;
}

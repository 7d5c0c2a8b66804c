/*
 * projector_nats.c — JetStream as the projector's source. The design notes
 * are in projector_nats.h.
 */
#include "projector_nats.h"

#include <nats/nats.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "natsconn.h"
#include "record.h"
#include "validate.h"

#define FETCH_MAX   1024
#define API_WAIT_MS 2000

struct pnats {
    char *urls, *stream, *name;
    es_sub_target target;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    char subject[128];
    natsMsgList list; /* the last fetch, kept until the next call */
    natsMsg *ack;     /* its last message, to acknowledge once committed */
    es_recorded_event evs[FETCH_MAX];
    char *strings; /* NUL-terminated copies of the events' names */
    size_t strings_cap;
};

es_err pnats_create(const char *urls, const char *stream, es_sub_target target, const char *name,
                    pnats **out)
{
    if (!urls || !stream || target == ES_SUB_STREAM) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    pnats *n = calloc(1, sizeof *n);
    if (!n) {
        return ES_ERR_NO_MEMORY;
    }
    n->urls = strdup(urls);
    n->stream = strdup(stream);
    n->name = name ? strdup(name) : NULL;
    n->target = target;
    if (!n->urls || !n->stream || (name && !n->name)) {
        pnats_destroy(n);
        return ES_ERR_NO_MEMORY;
    }
    *out = n;
    return ES_OK;
}

static void drop_list(pnats *n)
{
    natsMsgList_Destroy(&n->list);
    memset(&n->list, 0, sizeof n->list);
    n->ack = NULL;
}

void pnats_reset(pnats *n)
{
    drop_list(n);
    if (n->sub) {
        natsSubscription_Unsubscribe(n->sub);
        natsSubscription_Destroy(n->sub);
        n->sub = NULL;
    }
}

void pnats_destroy(pnats *n)
{
    if (!n) {
        return;
    }
    pnats_reset(n);
    jsCtx_Destroy(n->js);
    natsConnection_Destroy(n->nc);
    free(n->strings);
    free(n->urls);
    free(n->stream);
    free(n->name);
    free(n);
}

void pnats_ack(pnats *n)
{
    if (n->ack) {
        natsMsg_Ack(n->ack, NULL); /* AckAll: everything up to it */
        n->ack = NULL;
    }
}

/* ------------------------------------------------------------- decoding -- */

/* The event of a record (es_record_parse, lenient: a newer relay's extra
 * fields are skipped), with the names checked as the client's reads do:
 * at most ES_MAX_NAME_BYTES, no NUL. The names are copied out later. */
static bool decode(const uint8_t *p, size_t len, es_recorded_event *e, es_slice *stream,
                   es_slice *type, es_slice *ctype, bool *sealed)
{
    es_record r;
    memset(e, 0, sizeof *e);
    if (es_record_parse(p, len, 0, &r) != ES_OK || r.stream.len > ES_MAX_NAME_BYTES ||
        r.type.len > ES_MAX_NAME_BYTES || r.content_type.len > ES_MAX_NAME_BYTES ||
        memchr(r.stream.p, 0, r.stream.len) || memchr(r.type.p, 0, r.type.len) ||
        (r.content_type.len && memchr(r.content_type.p, 0, r.content_type.len))) {
        return false;
    }
    *stream = r.stream;
    *type = r.type;
    *ctype = r.content_type;
    *sealed = r.sealed.len > 0;
    e->revision = r.revision;
    e->position = r.position;
    e->recorded_at_us = r.recorded_at_us;
    e->data = r.data.len ? r.data.p : NULL;
    e->data_len = r.data.len;
    e->metadata = r.metadata.len ? r.metadata.p : NULL;
    e->metadata_len = r.metadata.len;
    memcpy(e->id, r.id.p, ES_UUID_BYTES);
    e->correlation_id = r.correlation_id.len ? r.correlation_id.p : NULL;
    e->causation_id = r.causation_id.len ? r.causation_id.p : NULL;
    return true;
}

static bool matches(const pnats *n, es_slice stream, es_slice type)
{
    size_t nl = n->name ? strlen(n->name) : 0;
    switch (n->target) {
    case ES_SUB_CATEGORY: {
        const uint8_t *dash = memchr(stream.p, '-', stream.len);
        size_t cat = dash ? (size_t)(dash - stream.p) : stream.len;
        return dash && cat == nl && !memcmp(stream.p, n->name, nl);
    }
    case ES_SUB_EVENT_TYPE:
        return type.len == nl && !memcmp(type.p, n->name, nl);
    case ES_SUB_STREAM_PREFIX:
        return stream.len >= nl && !memcmp(stream.p, n->name, nl);
    default:
        return true;
    }
}

/* ------------------------------------------------------------- fetching -- */

static es_err ensure_consumer(pnats *n, uint64_t after, char *msg, size_t msg_len)
{
    if (!n->nc) {
        natsStatus s = natsconn_connect(n->urls, "es-projector", NULL, NULL, NULL, &n->nc);
        if (s == NATS_OK) {
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = API_WAIT_MS;
            s = natsConnection_JetStream(&n->js, n->nc, &jo);
        }
        if (s != NATS_OK) {
            snprintf(msg, msg_len, "cannot connect to NATS at %s: %s", n->urls, natsconn_err(s));
            jsCtx_Destroy(n->js);
            natsConnection_Destroy(n->nc);
            n->js = NULL;
            n->nc = NULL;
            return ES_ERR_CONNECTION;
        }
    }
    if (n->sub) {
        return ES_OK;
    }
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, n->js, n->stream, NULL, NULL);
    if (s != NATS_OK) {
        snprintf(msg, msg_len, "no JetStream stream %s: %s", n->stream, natsconn_err(s));
        return ES_ERR_CONNECTION;
    }
    bool ok = si->Config && si->Config->SubjectsLen == 1 && si->Config->Subjects[0] &&
              strlen(si->Config->Subjects[0]) < sizeof n->subject;
    if (ok) {
        snprintf(n->subject, sizeof n->subject, "%s", si->Config->Subjects[0]);
    }
    jsStreamInfo_Destroy(si);
    if (!ok) {
        snprintf(msg, msg_len, "stream %s is not an esd relay's (one subject PREFIX.>)", n->stream);
        return ES_ERR_CONNECTION;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = n->stream;
    so.ManualAck = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = after + 1;
    so.Config.AckPolicy = js_AckAll;
    so.Config.MaxAckPending = 4 * FETCH_MAX;
    so.Config.InactiveThreshold = 30ll * 1000000000ll;
    s = js_PullSubscribe(&n->sub, n->js, n->subject, NULL, NULL, &so, NULL);
    if (s != NATS_OK) {
        snprintf(msg, msg_len, "cannot create a consumer on %s: %s", n->stream, natsconn_err(s));
        n->sub = NULL;
        return ES_ERR_CONNECTION;
    }
    return ES_OK;
}

es_err pnats_fetch(pnats *n, uint64_t after, uint32_t max, int timeout_ms,
                   const es_recorded_event **evs, size_t *count, uint64_t *scanned, uint64_t *head,
                   char *msg, size_t msg_len)
{
    *count = 0;
    *scanned = 0;
    *head = 0;
    drop_list(n);
    es_err rv = ensure_consumer(n, after, msg, msg_len);
    if (rv != ES_OK) {
        return rv;
    }
    int batch = max == 0 || max > FETCH_MAX ? FETCH_MAX : (int)max;
    natsStatus s =
        natsSubscription_Fetch(&n->list, n->sub, batch, timeout_ms > 0 ? timeout_ms : 1, NULL);
    if (n->list.Count == 0) {
        if (s == NATS_TIMEOUT) {
            return ES_OK;
        }
        snprintf(msg, msg_len, "fetch from %s: %s", n->stream, natsconn_err(s));
        pnats_reset(n);
        return ES_ERR_CONNECTION;
    }
    /* Names are copied NUL-terminated: at most 3 x 257 bytes per event. */
    size_t need = (size_t)n->list.Count * 3 * 257;
    if (need > n->strings_cap) {
        char *ns = realloc(n->strings, need);
        if (!ns) {
            pnats_reset(n);
            return ES_ERR_NO_MEMORY;
        }
        n->strings = ns;
        n->strings_cap = need;
    }
    char *sp = n->strings;
    size_t k = 0;
    for (int i = 0; i < n->list.Count; i++) {
        natsMsg *m = n->list.Msgs[i];
        const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
        int len = natsMsg_GetDataLength(m);
        const char *hpos = NULL, *hcrc = NULL;
        natsMsgHeader_Get(m, "Es-Position", &hpos);
        natsMsgHeader_Get(m, "Es-Crc32c", &hcrc);
        uint64_t pos;
        uint32_t crc;
        es_recorded_event *e = &n->evs[k];
        es_slice stream, type, ctype;
        bool sealed = false;
        if (len <= 0 || !data || (size_t)len > PNATS_MAX_PAYLOAD ||
            !natsconn_parse_u64(hpos, &pos) || !natsconn_parse_crc(hcrc, &crc) ||
            crc32c(0, data, (size_t)len) != crc ||
            !decode(data, (size_t)len, e, &stream, &type, &ctype, &sealed) || e->position != pos) {
            snprintf(msg, msg_len,
                     "message after position %llu of stream %s is not a valid esd event "
                     "(size, Es-Position, Es-Crc32c or payload)",
                     (unsigned long long)(*scanned ? *scanned : after), n->stream);
            pnats_reset(n);
            *count = 0;
            return ES_ERR_MALFORMED;
        }
        *scanned = pos;
        if (pos <= after || !matches(n, stream, type)) {
            continue; /* a redelivery, or filtered out */
        }
        if (sealed) {
            /* Encrypted at rest: the relay carries its data and metadata
             * sealed, and only esd holds the key. Applying it without them
             * would build a wrong read model, so the projection stops here. */
            snprintf(msg, msg_len,
                     "the event at position %llu (stream %.*s) is encrypted at rest: its data "
                     "and metadata are sealed in JetStream; project from esd or a follower, "
                     "or keep such streams in a store run with --no-encryption",
                     (unsigned long long)pos, (int)stream.len, (const char *)stream.p);
            pnats_reset(n);
            *count = 0;
            return ES_ERR_INVALID_ARGUMENT;
        }
        es_slice names[3] = {stream, type, ctype};
        const char **dst[3] = {&e->stream, &e->type, &e->content_type};
        for (int j = 0; j < 3; j++) {
            if (names[j].len > 0) {
                memcpy(sp, names[j].p, names[j].len);
            }
            sp[names[j].len] = '\0';
            *dst[j] = sp;
            sp += names[j].len + 1;
        }
        k++;
    }
    n->ack = n->list.Msgs[n->list.Count - 1];
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, n->ack) == NATS_OK) {
        *head = *scanned + meta->NumPending;
        jsMsgMetaData_Destroy(meta);
    }
    *evs = n->evs;
    *count = k;
    return ES_OK;
}

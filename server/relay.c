/*
 * relay.c — the JetStream relay thread. The design notes are in relay.h.
 */
#include "relay.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "log.h"
#include "natsconn.h"
#include "record.h"
#include "stopper.h"
#include "validate.h"

#define BACKOFF_MIN_MS  100
#define BACKOFF_MAX_MS  5000
#define PUB_MAX_WAIT_MS 2000
#define STALL_WAIT_MS   2000
#define API_WAIT_MS     2000
#define BATCH_MAX_BYTES (8u * 1024u * 1024u)
#define MSG_ID_MAX      (2u * STORE_ID_BYTES + 1u + 20u + 1u)
#define SUBJECT_MAX     (64u + 2u * RELAY_TOKEN_MAX + 2u)

struct relay {
    store *st;
    const server_config *cfg;
    pthread_t thread;
    stopper stop; /* set by the stopping thread */
    char store_hex[2 * STORE_ID_BYTES + 1];
    natsConnection *nc;
    jsCtx *js;
    bool js_used; /* js has made an async publish (see drop_in_flight) */
    /* set by the acknowledgement callback (a libnats thread) */
    _Atomic bool failed;
    _Atomic uint64_t acked, published, errors;
    _Atomic bool connected, resumed;
    char keys_stream[96];  /* RELAY_KEYS_STREAM_SUFFIX after the stream's name */
    char keys_subject[96]; /* RELAY_KEYS_SUBJECT_SUFFIX after the subject prefix */
    uint8_t *keys_sent;    /* bitmap of slots known to be in the keys stream */
    size_t keys_sent_bytes;
    /* one batch of records copied out of a read transaction */
    uint8_t *buf;
    size_t buf_len, buf_cap;
    size_t n_recs;
    struct {
        uint64_t position;
        size_t off, len;
    } recs[RELAY_BATCH];
};

/* ------------------------------------------------------------- escaping -- */

static bool token_byte_ok(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("-_~=:@+,!;", c) != NULL;
}

size_t relay_subject_token(const uint8_t *name, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    if (len == 0) {
        if (cap < 4) {
            return 0;
        }
        memcpy(out, "%00", 4);
        return 3;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = name[i];
        if (c != 0 && token_byte_ok(c)) {
            if (n + 2 > cap) {
                return 0;
            }
            out[n++] = (char)c;
        } else {
            if (n + 4 > cap) {
                return 0;
            }
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
    return n;
}

/* ------------------------------------------------------------- helpers -- */

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ------------------------------------------------------- acknowledgements -- */

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    relay *r = closure;
    if (pa) {
        const char *v = NULL;
        uint64_t pos;
        if (natsMsgHeader_Get(msg, "Es-Position", &v) == NATS_OK && natsconn_parse_u64(v, &pos)) {
            uint64_t cur = atomic_load(&r->acked);
            while (pos > cur && !atomic_compare_exchange_weak(&r->acked, &cur, pos)) {
            }
            /* The scavenger may remove what JetStream holds (followers). */
            store_scavenge_horizon_set(r->st, atomic_load(&r->acked));
        }
        atomic_fetch_add(&r->published, 1);
    } else if (pae) {
        /* The first failure of a run is logged; the chained expectation makes
         * every later message of that run fail too. */
        bool was = atomic_exchange(&r->failed, true);
        if (!was) {
            const char *v = NULL;
            natsMsgHeader_Get(msg, "Es-Position", &v);
            log_msg(LOG_WARN, "relay: JetStream refused or lost a publish; resuming",
                    "position=%s error=\"%s\" js_code=%d", v ? v : "?",
                    pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), (int)pae->ErrCode);
        }
    }
    natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------ connection -- */

static void disconnected_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    relay *r = closure;
    atomic_store(&r->connected, false);
    atomic_store(&r->failed, true);
}

static void reconnected_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    relay *r = closure;
    atomic_store(&r->connected, true);
}

static void disconnect(relay *r)
{
    if (r->js) {
        jsCtx_Destroy(r->js);
        r->js = NULL;
    }
    r->js_used = false;
    if (r->nc) {
        natsConnection_Destroy(r->nc);
        r->nc = NULL;
    }
    atomic_store(&r->connected, false);
}

static es_err connect_nats(relay *r)
{
    natsStatus s = natsconn_connect(r->cfg->relay_nats, "esd-relay", disconnected_cb,
                                    reconnected_cb, r, &r->nc);
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "relay: cannot connect to NATS", "url=%s error=\"%s\"",
                r->cfg->relay_nats, natsconn_err(s));
        disconnect(r);
        return ES_ERR_CONNECTION;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = API_WAIT_MS;
    jo.PublishAsync.MaxPending = RELAY_MAX_IN_FLIGHT;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = r;
    jo.PublishAsync.StallWait = STALL_WAIT_MS;
    s = natsConnection_JetStream(&r->js, r->nc, &jo);
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "relay: no JetStream context", "error=\"%s\"", natsconn_err(s));
        disconnect(r);
        return ES_ERR_CONNECTION;
    }
    atomic_store(&r->connected, true);
    log_msg(LOG_INFO, "relay: connected to NATS", "url=%s stream=%s", r->cfg->relay_nats,
            r->cfg->relay_stream);
    return ES_OK;
}

/* ---------------------------------------------------------------- resume -- */

/*
 * Make sure the JetStream stream `name` exists (created when missing with
 * subjects PREFIX.>, file storage, --relay-replicas, no limits: a limit
 * would drop events or keys followers need, and not securely); `what`
 * names it in the log. @return its info through *out (the caller destroys
 * it).
 */
static es_err ensure_js_stream(relay *r, const char *name, const char *prefix, const char *what,
                               jsStreamInfo **out)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, r->js, name, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        char subject[128];
        snprintf(subject, sizeof subject, "%s.>", prefix);
        const char *subjects[] = {subject};
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = name;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Storage = js_FileStorage;
        sc.Replicas = r->cfg->relay_replicas;
        s = js_AddStream(&si, r->js, &sc, NULL, &jerr);
        if (s != NATS_OK) {
            char msg[80];
            snprintf(msg, sizeof msg, "relay: cannot create the %s", what);
            log_msg(LOG_WARN, msg, "stream=%s subjects=%s replicas=%u error=\"%s\" js_code=%d",
                    name, subject, r->cfg->relay_replicas, natsconn_err(s), (int)jerr);
            return ES_ERR_CONNECTION;
        }
        char msg[80];
        snprintf(msg, sizeof msg, "relay: created the %s", what);
        log_msg(LOG_INFO, msg, "stream=%s subjects=%s replicas=%u", name, subject,
                r->cfg->relay_replicas);
    } else if (s != NATS_OK) {
        char msg[80];
        snprintf(msg, sizeof msg, "relay: cannot read the %s's state", what);
        log_msg(LOG_WARN, msg, "stream=%s error=\"%s\" js_code=%d", name, natsconn_err(s),
                (int)jerr);
        return ES_ERR_CONNECTION;
    }
    *out = si;
    return ES_OK;
}

/* Make sure the events stream exists; @return its last sequence and its
 * message count. */
static es_err ensure_stream(relay *r, uint64_t *last_seq, uint64_t *n_msgs)
{
    jsStreamInfo *si;
    es_err rv =
        ensure_js_stream(r, r->cfg->relay_stream, r->cfg->relay_subject, "JetStream stream", &si);
    if (rv != ES_OK) {
        return rv;
    }
    *last_seq = si->State.LastSeq;
    *n_msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return ES_OK;
}

/* Make sure the keys stream exists (subjects KEYS_SUBJECT.>). */
static es_err ensure_keys_stream(relay *r)
{
    jsStreamInfo *si;
    es_err rv = ensure_js_stream(r, r->keys_stream, r->keys_subject, "keys stream", &si);
    if (rv == ES_OK) {
        jsStreamInfo_Destroy(si);
    }
    return rv;
}

/* ------------------------------------------------------------------ keys -- */

static bool key_sent(const relay *r, uint64_t slot)
{
    return slot / 8 < r->keys_sent_bytes && (r->keys_sent[slot / 8] & (1u << (slot % 8)));
}

static void key_mark_sent(relay *r, uint64_t slot)
{
    if (slot / 8 >= r->keys_sent_bytes) {
        size_t n = r->keys_sent_bytes ? r->keys_sent_bytes : 4096;
        while (slot / 8 >= n && n < RELAY_KEYS_SENT_MAX) {
            n *= 2;
        }
        if (slot / 8 >= n) {
            return; /* beyond the bitmap: asked again next time, still idempotent */
        }
        uint8_t *nb = realloc(r->keys_sent, n);
        if (!nb) {
            return;
        }
        memset(nb + r->keys_sent_bytes, 0, n - r->keys_sent_bytes);
        r->keys_sent = nb;
        r->keys_sent_bytes = n;
    }
    r->keys_sent[slot / 8] |= (uint8_t)(1u << (slot % 8));
}

/* The Es-Key-Subject header's value: the data subject of a slot's key, in
 * lower-case hex ("" when the key is one stream's). @return ES_OK (also
 * for none); LMDB errors as es_err (logged). */
static es_err key_subject_hex(relay *r, uint64_t slot, char out[RELAY_KEY_SUBJECT_HEX_MAX])
{
    uint8_t name[STORE_SUBJECT_MAX];
    size_t len = 0;
    out[0] = '\0';
    es_err rv = store_key_subject(r->st, slot, name, &len);
    if (rv == ES_ERR_NOT_FOUND) {
        return ES_OK;
    }
    if (rv != ES_OK) {
        log_msg(LOG_ERROR, "relay: cannot read a key's subject", "slot=%" PRIu64 " error=%s", slot,
                es_errname(rv));
        return rv;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[name[i] >> 4];
        out[2 * i + 1] = hex[name[i] & 15];
    }
    out[2 * len] = '\0';
    return ES_OK;
}

/* Publish one message of the keys stream, waiting for JetStream's answer:
 * the key itself (key != NULL) or the erased marker, with the slot's
 * subject (subject_hex, "" for none). ExpectNoMessage makes it idempotent
 * without a window: a slot's subject holds one message at most.
 * @return ES_OK (stored, or the subject had a message: *existed). */
static es_err key_publish(relay *r, uint64_t slot, const uint8_t *key, const char *subject_hex,
                          bool *existed)
{
    char subject[128], msg_id[MSG_ID_MAX + 16], num[24];
    snprintf(subject, sizeof subject, "%s.%" PRIu64, r->keys_subject, slot);
    snprintf(msg_id, sizeof msg_id, "%s:%s:%" PRIu64, r->store_hex, key ? "key" : "erased", slot);
    snprintf(num, sizeof num, "%" PRIu64, slot);
    *existed = false;
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, key ? (const char *)key : NULL,
                                  key ? (int)STORE_DATA_KEY_BYTES : 0);
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Key-Slot", num);
    }
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Store", r->store_hex);
    }
    if (s == NATS_OK && !key) {
        s = natsMsgHeader_Set(m, "Es-Key-Erased", "1");
    }
    if (s == NATS_OK && subject_hex[0] != '\0') {
        s = natsMsgHeader_Set(m, "Es-Key-Subject", subject_hex);
    }
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msg_id;
        po.ExpectNoMessage = true;
        po.MaxWait = PUB_MAX_WAIT_MS;
        s = js_PublishMsg(&pa, r->js, m, &po, &jerr);
    }
    if (m) {
        /* the key's bytes were copied into the message */
        int len = natsMsg_GetDataLength(m);
        if (len > 0) {
            OPENSSL_cleanse((void *)natsMsg_GetData(m), (size_t)len);
        }
        natsMsg_Destroy(m);
    }
    jsPubAck_Destroy(pa);
    if (s == NATS_OK) {
        return ES_OK;
    }
    if (jerr == JSStreamWrongLastSequenceErr) {
        *existed = true;
        return ES_OK;
    }
    log_msg(LOG_WARN, "relay: cannot publish to the keys stream",
            "stream=%s slot=%" PRIu64 " error=\"%s\" js_code=%d", r->keys_stream, slot,
            natsconn_err(s), (int)jerr);
    return ES_ERR_CONNECTION;
}

/* The keys stream's message of a slot: NULL when it has none. */
static es_err key_msg_get(relay *r, uint64_t slot, natsMsg **out)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.%" PRIu64, r->keys_subject, slot);
    jsErrCode jerr = 0;
    *out = NULL;
    natsStatus s = js_GetLastMsg(out, r->js, r->keys_stream, subject, NULL, &jerr);
    if (s == NATS_OK) {
        return ES_OK;
    }
    *out = NULL;
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        return ES_OK;
    }
    log_msg(LOG_WARN, "relay: cannot read the keys stream",
            "stream=%s slot=%" PRIu64 " error=\"%s\" js_code=%d", r->keys_stream, slot,
            natsconn_err(s), (int)jerr);
    return ES_ERR_CONNECTION;
}

/*
 * Before the first record sealed with a slot's key (since the last resume of the
 * relay): the key in the keys stream, or the erased marker when the key
 * was destroyed before it was relayed. Synchronous, so that a follower
 * never sees a record before the key it needs.
 * @return ES_OK; ES_ERR_CONNECTION (resume); ES_ERR_CORRUPT (the keys
 *   stream holds another key at that slot: logged).
 */
static es_err key_ensure(relay *r, uint64_t slot)
{
    if (key_sent(r, slot)) {
        return ES_OK;
    }
    uint8_t key[STORE_DATA_KEY_BYTES];
    store_key_state state;
    es_err rv = store_key_export(r->st, slot, &state, key);
    if (rv != ES_OK) {
        log_msg(LOG_ERROR, "relay: cannot read a data key", "slot=%" PRIu64 " error=%s", slot,
                es_errname(rv));
        return rv;
    }
    bool live = state == STORE_KEY_LIVE, existed = false;
    char subject_hex[RELAY_KEY_SUBJECT_HEX_MAX];
    rv = key_subject_hex(r, slot, subject_hex);
    if (rv == ES_OK) {
        rv = key_publish(r, slot, live ? key : NULL, subject_hex, &existed);
    }
    if (rv == ES_OK && existed && live) {
        natsMsg *m = NULL;
        rv = key_msg_get(r, slot, &m);
        if (rv == ES_OK && m) {
            const char *erased = NULL;
            bool same = natsMsgHeader_Get(m, "Es-Key-Erased", &erased) != NATS_OK &&
                        natsMsg_GetDataLength(m) == (int)STORE_DATA_KEY_BYTES &&
                        CRYPTO_memcmp(natsMsg_GetData(m), key, STORE_DATA_KEY_BYTES) == 0;
            if (!same) {
                log_msg(LOG_ERROR,
                        "relay: the keys stream holds another key at a slot of this store: it "
                        "belongs to another store; nothing is published",
                        "stream=%s slot=%" PRIu64, r->keys_stream, slot);
                rv = ES_ERR_CORRUPT;
            }
        }
        natsMsg_Destroy(m);
    }
    OPENSSL_cleanse(key, sizeof key);
    if (rv == ES_OK) {
        key_mark_sent(r, slot);
    }
    return rv;
}

/*
 * An erasure record is about to be relayed: the slot's key leaves the keys
 * stream first, by a secure erase (STREAM.MSG.DELETE without no_erase: the
 * server overwrites the message in its block file), and the erased marker
 * takes its place. Idempotent: a relay that resumes before the erasure
 * record was stored does it again and finds the marker.
 * @return ES_OK; ES_ERR_CONNECTION.
 */
static es_err key_erase(relay *r, uint64_t slot)
{
    natsMsg *m = NULL;
    es_err rv = key_msg_get(r, slot, &m);
    if (rv != ES_OK) {
        return rv;
    }
    const char *erased = NULL;
    if (m && natsMsgHeader_Get(m, "Es-Key-Erased", &erased) == NATS_OK) {
        natsMsg_Destroy(m);
        return ES_OK; /* done before */
    }
    if (m) {
        uint64_t seq = natsMsg_GetSequence(m);
        natsMsg_Destroy(m);
        jsErrCode jerr = 0;
        natsStatus s = js_EraseMsg(r->js, r->keys_stream, seq, NULL, &jerr);
        if (s != NATS_OK) {
            log_msg(LOG_WARN, "relay: cannot erase a key from the keys stream",
                    "stream=%s slot=%" PRIu64 " seq=%" PRIu64 " error=\"%s\" js_code=%d",
                    r->keys_stream, slot, seq, natsconn_err(s), (int)jerr);
            return ES_ERR_CONNECTION;
        }
        log_msg(LOG_INFO, "relay: erased a key from the keys stream",
                "stream=%s slot=%" PRIu64 " seq=%" PRIu64, r->keys_stream, slot, seq);
    }
    bool existed;
    char subject_hex[RELAY_KEY_SUBJECT_HEX_MAX];
    rv = key_subject_hex(r, slot, subject_hex);
    if (rv == ES_OK) {
        rv = key_publish(r, slot, NULL, subject_hex, &existed);
    }
    if (rv == ES_OK) {
        key_mark_sent(r, slot);
    }
    return rv;
}

/*
 * Where to go on: the successor of the stream's last message.
 * @return ES_OK with *next and prev (the last message id, "" for an empty
 *   stream); ES_ERR_CONNECTION (try again later); ES_ERR_CORRUPT (the stream
 *   holds another history: logged).
 */
static es_err resume_point(relay *r, uint64_t *next, char *prev, size_t prev_cap)
{
    uint64_t last_seq = 0, n_msgs = 0;
    es_err rv = ensure_stream(r, &last_seq, &n_msgs);
    if (rv == ES_OK && store_encrypted(r->st)) {
        rv = ensure_keys_stream(r);
    }
    if (rv != ES_OK) {
        return rv;
    }
    if (last_seq == 0) {
        *next = 1;
        prev[0] = '\0';
        return ES_OK;
    }
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(&m, r->js, r->cfg->relay_stream, last_seq, NULL, &jerr);
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "relay: cannot read the stream's last message",
                "stream=%s seq=%" PRIu64 " messages=%" PRIu64 " error=\"%s\" js_code=%d",
                r->cfg->relay_stream, last_seq, n_msgs, natsconn_err(s), (int)jerr);
        return ES_ERR_CONNECTION;
    }
    const char *pos_s = NULL, *id_s = NULL, *ev_s = NULL;
    natsMsgHeader_Get(m, "Es-Position", &pos_s);
    natsMsgHeader_Get(m, "Nats-Msg-Id", &id_s);
    natsMsgHeader_Get(m, "Es-Event-Id", &ev_s);
    uint64_t pos = 0;
    rv = ES_OK;
    if (!natsconn_parse_u64(pos_s, &pos) || pos == 0 || !id_s || strlen(id_s) >= prev_cap ||
        !ev_s) {
        log_msg(LOG_ERROR,
                "relay: the stream's last message is not an esd event (no Es-Position, "
                "Nats-Msg-Id or Es-Event-Id): relay into an esd stream of its own",
                "stream=%s seq=%" PRIu64, r->cfg->relay_stream, last_seq);
        rv = ES_ERR_CORRUPT;
    }
    uint64_t head = store_head(r->st);
    if (rv == ES_OK && pos > head) {
        log_msg(LOG_ERROR,
                "relay: the JetStream stream is ahead of this store: it holds another "
                "store's log, or this store lost events; nothing is published",
                "stream=%s stream_position=%" PRIu64 " head=%" PRIu64, r->cfg->relay_stream, pos,
                head);
        rv = ES_ERR_CORRUPT;
    }
    if (rv == ES_OK) {
        uint8_t my_id[ES_EVENT_ID_BYTES];
        es_err rrv = store_event_id_at(r->st, pos, my_id);
        char mine[37] = "?";
        if (rrv == ES_OK) {
            natsconn_format_uuid(my_id, mine);
        }
        if (rrv != ES_OK || strcmp(mine, ev_s) != 0) {
            log_msg(LOG_ERROR,
                    "relay: the JetStream stream holds another event at its last position: "
                    "it is not this store's log; nothing is published",
                    "stream=%s position=%" PRIu64 " stream_event=%s store_event=%s",
                    r->cfg->relay_stream, pos, ev_s, mine);
            rv = ES_ERR_CORRUPT;
        }
    }
    if (rv == ES_OK) {
        *next = pos + 1;
        snprintf(prev, prev_cap, "%s", id_s);
    }
    natsMsg_Destroy(m);
    return rv;
}

/* ------------------------------------------------------------ publishing -- */

static int copy_visit(void *ctx, const store_record *rec)
{
    relay *r = ctx;
    if (r->n_recs == RELAY_BATCH || (r->n_recs > 0 && r->buf_len + rec->len > BATCH_MAX_BYTES)) {
        return -1; /* the next batch starts here */
    }
    if (r->buf_len + rec->len > r->buf_cap) {
        size_t cap = r->buf_cap ? r->buf_cap : 64 * 1024;
        while (cap < r->buf_len + rec->len) {
            cap *= 2;
        }
        uint8_t *nb = realloc(r->buf, cap);
        if (!nb) {
            return -1;
        }
        r->buf = nb;
        r->buf_cap = cap;
    }
    memcpy(r->buf + r->buf_len, rec->bytes, rec->len);
    r->recs[r->n_recs].position = rec->position;
    r->recs[r->n_recs].off = r->buf_len;
    r->recs[r->n_recs].len = rec->len;
    r->buf_len += rec->len;
    r->n_recs++;
    return 0;
}

/* Build the message of one record. @return NATS_OK or an error (logged). */
static natsStatus make_msg(relay *r, const uint8_t *rec, size_t len, uint64_t position,
                           natsMsg **out, char *msg_id)
{
    es_record er;
    if (es_record_parse(rec, len, 0, &er) != ES_OK || er.stream.len > ES_MAX_NAME_BYTES ||
        er.type.len > ES_MAX_NAME_BYTES) {
        log_msg(LOG_ERROR, "relay: a stored record does not decode", "position=%" PRIu64, position);
        return NATS_ERR;
    }
    const uint8_t *stream = er.stream.p, *type = er.type.p, *id = er.id.p;
    size_t stream_len = er.stream.len, type_len = er.type.len;
    uint64_t revision = er.revision;
    char subject[SUBJECT_MAX];
    char cat_tok[RELAY_TOKEN_MAX], stream_tok[RELAY_TOKEN_MAX];
    size_t cat_len = es_category_len(stream, stream_len);
    if (!relay_subject_token(stream, cat_len, cat_tok, sizeof cat_tok) ||
        !relay_subject_token(stream, stream_len, stream_tok, sizeof stream_tok)) {
        return NATS_ERR;
    }
    snprintf(subject, sizeof subject, "%s.%s.%s", r->cfg->relay_subject, cat_tok, stream_tok);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)rec, (int)len);
    char num[24], uuid[37], crc[9];
    char sname[ES_MAX_NAME_BYTES + 1], tname[ES_MAX_NAME_BYTES + 1];
    memcpy(sname, stream, stream_len);
    sname[stream_len] = '\0';
    memcpy(tname, type, type_len);
    tname[type_len] = '\0';
    snprintf(num, sizeof num, "%" PRIu64, position);
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Position", num);
    }
    snprintf(num, sizeof num, "%" PRIu64, revision);
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Revision", num);
    }
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Stream", sname);
    }
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Type", tname);
    }
    natsconn_format_uuid(id, uuid);
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Event-Id", uuid);
    }
    snprintf(crc, sizeof crc, "%08x", crc32c(0, rec, len));
    if (s == NATS_OK) {
        s = natsMsgHeader_Set(m, "Es-Crc32c", crc);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return s;
    }
    snprintf(msg_id, MSG_ID_MAX, "%s:%" PRIu64, r->store_hex, position);
    *out = m;
    return NATS_OK;
}

/* Drop what is in flight after a failure: its acknowledgements no longer
 * matter (the resume reads the stream itself). libnats 3.4.1 crashes in
 * js_PublishAsyncGetPendingList on a context that never published
 * asynchronously, hence js_used. */
static void drop_in_flight(relay *r)
{
    natsMsgList pending = {0};
    if (r->js && r->js_used && js_PublishAsyncGetPendingList(&pending, r->js) == NATS_OK) {
        natsMsgList_Destroy(&pending);
    }
}

/* Publish from *next on until a failure or stop. */
static void publish_run(relay *r, uint64_t next, char *prev)
{
    uint64_t last_log_us = 0;
    while (!atomic_load(&r->failed)) {
        if (next > store_head(r->st)) {
            if (stopper_wait_ms(&r->stop, RELAY_POLL_MS)) {
                return;
            }
            continue;
        }
        if (stopper_is_set(&r->stop)) {
            return;
        }
        r->n_recs = 0;
        r->buf_len = 0;
        store_page page;
        /* Every stored record, served or not: a follower applies the
         * lifecycle records itself and must hold what its primary holds. */
        static const store_filter stored = {STORE_FILTER_STORED, NULL, 0};
        es_err rv = store_read_all(r->st, &stored, next, false, RELAY_BATCH, copy_visit, r, &page);
        if (rv != ES_OK || r->n_recs == 0) {
            uint64_t now = store_now_us();
            if (now - last_log_us > 10000000u) {
                log_msg(LOG_ERROR, "relay: cannot read the log", "position=%" PRIu64 " error=%s",
                        next, es_errname(rv));
                last_log_us = now;
            }
            if (stopper_wait_ms(&r->stop, BACKOFF_MAX_MS)) {
                return;
            }
            continue;
        }
        for (size_t i = 0; i < r->n_recs; i++) {
            if (r->recs[i].position != next) {
                log_msg(LOG_ERROR, "relay: the log skips a position",
                        "expected=%" PRIu64 " found=%" PRIu64, next, r->recs[i].position);
                atomic_store(&r->failed, true);
                return;
            }
            const uint8_t *rec = r->buf + r->recs[i].off;
            size_t rec_len = r->recs[i].len;
            uint64_t slot, at;
            es_err krv = ES_OK;
            if (store_record_key_slot(rec, rec_len, &slot)) {
                krv = key_ensure(r, slot);
            } else if (store_erase_record(rec, rec_len, &slot, &at)) {
                krv = key_erase(r, slot);
            }
            if (krv != ES_OK) {
                atomic_store(&r->failed, true);
                return;
            }
            char msg_id[MSG_ID_MAX];
            natsMsg *m = NULL;
            natsStatus s = make_msg(r, rec, rec_len, next, &m, msg_id);
            if (s == NATS_OK && prev[0] == '\0') {
                s = natsMsgHeader_Set(m, "Nats-Expected-Last-Sequence", "0");
            }
            if (s == NATS_OK) {
                jsPubOptions po;
                jsPubOptions_Init(&po);
                po.MsgId = msg_id;
                po.ExpectLastMsgId = prev[0] ? prev : NULL;
                po.MaxWait = PUB_MAX_WAIT_MS;
                s = js_PublishMsgAsync(r->js, &m, &po);
                r->js_used = true;
            }
            natsMsg_Destroy(m); /* NULL when the library took it */
            if (s != NATS_OK) {
                if (!atomic_exchange(&r->failed, true)) {
                    log_msg(LOG_WARN, "relay: publish failed; resuming",
                            "position=%" PRIu64 " error=\"%s\"", next, natsconn_err(s));
                }
                return;
            }
            snprintf(prev, MSG_ID_MAX, "%s", msg_id);
            next++;
        }
    }
}

static void *relay_main(void *arg)
{
    relay *r = arg;
    int backoff = BACKOFF_MIN_MS;
    while (!stopper_is_set(&r->stop)) {
        if (!r->nc && connect_nats(r) != ES_OK) {
            if (stopper_wait_ms(&r->stop, backoff)) {
                break;
            }
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        atomic_store(&r->failed, false);
        uint64_t next = 0;
        char prev[MSG_ID_MAX];
        es_err rv = resume_point(r, &next, prev, sizeof prev);
        if (rv != ES_OK) {
            atomic_store(&r->resumed, false);
            if (stopper_wait_ms(&r->stop, rv == ES_ERR_CORRUPT ? BACKOFF_MAX_MS : backoff)) {
                break;
            }
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        if (next > 1) {
            uint64_t cur = atomic_load(&r->acked);
            while (next - 1 > cur && !atomic_compare_exchange_weak(&r->acked, &cur, next - 1)) {
            }
            store_scavenge_horizon_set(r->st, atomic_load(&r->acked));
        }
        /* What the keys stream holds is asked again after every resume (an
         * operator may have removed or recreated the streams meanwhile). */
        if (r->keys_sent) {
            memset(r->keys_sent, 0, r->keys_sent_bytes);
        }
        atomic_store(&r->resumed, true);
        log_msg(LOG_INFO, "relay: publishing", "stream=%s from_position=%" PRIu64 " head=%" PRIu64,
                r->cfg->relay_stream, next, store_head(r->st));
        uint64_t errors_before = atomic_load(&r->errors);
        publish_run(r, next, prev);
        if (stopper_is_set(&r->stop)) {
            break;
        }
        atomic_store(&r->resumed, false);
        atomic_fetch_add(&r->errors, 1);
        drop_in_flight(r);
        /* A run that got somewhere restarts the backoff. */
        if (atomic_load(&r->acked) >= next) {
            backoff = BACKOFF_MIN_MS;
        }
        (void)errors_before;
        if (stopper_wait_ms(&r->stop, backoff)) {
            break;
        }
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    if (r->js && r->js_used) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 2000;
        js_PublishAsyncComplete(r->js, &po);
        drop_in_flight(r);
    }
    disconnect(r);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle -- */

es_err relay_start(store *st, const server_config *cfg, relay **out)
{
    relay *r = calloc(1, sizeof *r);
    if (!r) {
        return ES_ERR_NO_MEMORY;
    }
    r->st = st;
    r->cfg = cfg;
    hex_of(store_id(st), STORE_ID_BYTES, r->store_hex);
    snprintf(r->keys_stream, sizeof r->keys_stream, "%s%s", cfg->relay_stream,
             RELAY_KEYS_STREAM_SUFFIX);
    snprintf(r->keys_subject, sizeof r->keys_subject, "%s%s", cfg->relay_subject,
             RELAY_KEYS_SUBJECT_SUFFIX);
    stopper_init(&r->stop);
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        stopper_destroy(&r->stop);
        free(r);
        return ES_ERR_INTERNAL;
    }
    log_msg(LOG_INFO, "relay on", "url=%s stream=%s subject=%s.> replicas=%u", cfg->relay_nats,
            cfg->relay_stream, cfg->relay_subject, cfg->relay_replicas);
    *out = r;
    return ES_OK;
}

void relay_stop(relay *r)
{
    if (!r) {
        return;
    }
    stopper_stop(&r->stop);
    pthread_join(r->thread, NULL);
    stopper_destroy(&r->stop);
    free(r->buf);
    free(r->keys_sent);
    free(r);
    nats_Close();
}

void relay_get_stats(relay *r, relay_stats *out)
{
    out->connected = atomic_load(&r->connected);
    out->resumed = atomic_load(&r->resumed);
    out->acked_position = atomic_load(&r->acked);
    out->published = atomic_load(&r->published);
    out->errors = atomic_load(&r->errors);
}

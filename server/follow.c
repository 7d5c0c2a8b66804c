/*
 * follow.c — the follower's thread: JetStream -> store_import_batch. The
 * design notes are in follow.h.
 */
#include "follow.h"

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
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "natsconn.h"
#include "record.h"
#include "relay.h"
#include "stopper.h"
#include "validate.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define API_WAIT_MS    5000
#define SUBJECT_CAP    128
#define INACTIVE_NS    (30ll * 1000000000ll)
#define ACK_WAIT_NS    (30ll * 1000000000ll)

struct follow {
    store *st;
    const server_config *cfg;
    int fd;
    pthread_t thread;
    stopper stop; /* set by the stopping thread */
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    _Atomic bool connected, halted;
    _Atomic uint64_t imported, pending, upstream;
    uint64_t last_seq; /* stream sequence of the last message fetched */
    int empty_fetches; /* in a row */
    store_import_in recs[FOLLOW_BATCH];
    uint64_t seqs[FOLLOW_BATCH];
    char keys_stream[96];  /* the stream's name and RELAY_KEYS_STREAM_SUFFIX */
    char keys_subject[96]; /* the stream's subject prefix and RELAY_KEYS_SUBJECT_SUFFIX */
    store_key_in keys[FOLLOW_BATCH];
    uint64_t key_wait_log_us; /* last "waiting for a key" log line */
};

/* ------------------------------------------------------------- helpers -- */

/* ---------------------------------------------------------------- checks -- */

/*
 * Check one message against its caps and its own headers.
 * @return true with *pos; false with why.
 */
static bool check_msg(follow *f, natsMsg *m, uint64_t *pos, char *why, size_t why_len)
{
    const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    size_t cap = (size_t)f->cfg->max_event_bytes + FOLLOW_ENVELOPE_BYTES;
    if (len <= 0 || !data || (size_t)len > cap) {
        snprintf(why, why_len,
                 "payload of %d bytes (allowed 1..%zu: raise --max-event-bytes to at least the "
                 "primary's)",
                 len, cap);
        return false;
    }
    const char *hpos = NULL, *hrev = NULL, *hstream = NULL, *hid = NULL, *hcrc = NULL;
    natsMsgHeader_Get(m, "Es-Position", &hpos);
    natsMsgHeader_Get(m, "Es-Revision", &hrev);
    natsMsgHeader_Get(m, "Es-Stream", &hstream);
    natsMsgHeader_Get(m, "Es-Event-Id", &hid);
    natsMsgHeader_Get(m, "Es-Crc32c", &hcrc);
    uint64_t rev;
    uint8_t id[16];
    uint32_t crc;
    if (!natsconn_parse_u64(hpos, pos) || *pos == 0) {
        snprintf(why, why_len, "%s", "missing or garbled Es-Position header");
        return false;
    }
    if (!natsconn_parse_u64(hrev, &rev)) {
        snprintf(why, why_len, "%s", "missing or garbled Es-Revision header");
        return false;
    }
    if (!hstream || strlen(hstream) == 0 || strlen(hstream) > ES_MAX_NAME_BYTES) {
        snprintf(why, why_len, "%s", "missing or oversized Es-Stream header");
        return false;
    }
    if (!natsconn_parse_uuid(hid, id)) {
        snprintf(why, why_len, "%s", "missing or garbled Es-Event-Id header");
        return false;
    }
    if (!natsconn_parse_crc(hcrc, &crc)) {
        snprintf(why, why_len, "%s", "missing or garbled Es-Crc32c header");
        return false;
    }
    if (crc32c(0, data, (size_t)len) != crc) {
        snprintf(why, why_len, "%s", "the payload fails its Es-Crc32c checksum");
        return false;
    }
    es_record r;
    if (es_record_parse(data, (size_t)len, 0, &r) != ES_OK) {
        snprintf(why, why_len, "%s", "the payload is not an es.v1.RecordedEvent");
        return false;
    }
    /* Es-Stream is not compared: NATS may trim the blanks around a header
     * value, and a stream id may begin or end with one. The payload is
     * what is stored, under its checksum. */
    if (r.position != *pos || r.revision != rev || !es_slice_eq(r.id, id, ES_RECORD_ID_BYTES)) {
        snprintf(why, why_len, "%s",
                 "the headers (position, revision, event id) disagree with the payload");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------ connection -- */

static void drop_sub(follow *f)
{
    if (f->sub) {
        natsSubscription_Unsubscribe(f->sub);
        natsSubscription_Destroy(f->sub);
        f->sub = NULL;
    }
}

static void disconnect(follow *f)
{
    drop_sub(f);
    if (f->js) {
        jsCtx_Destroy(f->js);
        f->js = NULL;
    }
    if (f->nc) {
        natsConnection_Destroy(f->nc);
        f->nc = NULL;
    }
    atomic_store(&f->connected, false);
}

static es_err connect_nats(follow *f)
{
    natsStatus s = natsconn_connect(f->cfg->follow_nats, "esd-follower", NULL, NULL, NULL, &f->nc);
    if (s == NATS_OK) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = API_WAIT_MS;
        s = natsConnection_JetStream(&f->js, f->nc, &jo);
    }
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "follower: cannot connect to NATS", "url=%s error=\"%s\"",
                f->cfg->follow_nats, natsconn_err(s));
        disconnect(f);
        return ES_ERR_CONNECTION;
    }
    log_msg(LOG_INFO, "follower: connected to NATS", "url=%s stream=%s", f->cfg->follow_nats,
            f->cfg->follow_stream);
    return ES_OK;
}

/*
 * Is this store a copy of that stream? The message at sequence = head must
 * be our last event (when the stream still has it at that sequence).
 * @return false when it is certainly another history (logged).
 */
static bool same_history(follow *f, uint64_t head)
{
    if (head == 0) {
        return true;
    }
    natsMsg *m = NULL;
    if (js_GetMsg(&m, f->js, f->cfg->follow_stream, head, NULL, NULL) != NATS_OK) {
        return true; /* not there (limits, purge): the import checks still hold */
    }
    const char *hpos = NULL, *hid = NULL;
    natsMsgHeader_Get(m, "Es-Position", &hpos);
    natsMsgHeader_Get(m, "Es-Event-Id", &hid);
    uint64_t pos = 0;
    uint8_t id[16];
    bool ok = true;
    if (natsconn_parse_u64(hpos, &pos) && pos == head && natsconn_parse_uuid(hid, id)) {
        uint8_t mine[ES_EVENT_ID_BYTES];
        if (store_event_id_at(f->st, head, mine) != ES_OK || memcmp(mine, id, 16) != 0) {
            log_msg(LOG_ERROR,
                    "follower: this store is not a copy of the JetStream stream (another event "
                    "at its head); consuming stopped",
                    "stream=%s position=%" PRIu64 " stream_event=%s", f->cfg->follow_stream, head,
                    hid);
            ok = false;
        }
    }
    natsMsg_Destroy(m);
    return ok;
}

static es_err subscribe_from(follow *f, uint64_t start)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, f->js, f->cfg->follow_stream, NULL, &jerr);
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "follower: cannot read the JetStream stream (waiting for it)",
                "stream=%s error=\"%s\" js_code=%d", f->cfg->follow_stream, natsconn_err(s),
                (int)jerr);
        return ES_ERR_CONNECTION;
    }
    char subject[SUBJECT_CAP] = "";
    if (si->Config && si->Config->SubjectsLen >= 1 && si->Config->Subjects[0] &&
        strlen(si->Config->Subjects[0]) < sizeof subject) {
        snprintf(subject, sizeof subject, "%s", si->Config->Subjects[0]);
    }
    bool one_subject = si->Config && si->Config->SubjectsLen == 1;
    jsStreamInfo_Destroy(si);
    size_t sl = strlen(subject);
    if (!subject[0] || !one_subject || sl < 3 || strcmp(subject + sl - 2, ".>") != 0) {
        log_msg(LOG_ERROR, "follower: the stream is not an esd relay's (one subject PREFIX.>)",
                "stream=%s", f->cfg->follow_stream);
        return ES_ERR_INVALID_ARGUMENT;
    }
    snprintf(f->keys_subject, sizeof f->keys_subject, "%.*s%s", (int)(sl - 2), subject,
             RELAY_KEYS_SUBJECT_SUFFIX);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = f->cfg->follow_stream;
    so.ManualAck = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = start;
    so.Config.AckPolicy = js_AckAll;
    so.Config.AckWait = ACK_WAIT_NS;
    so.Config.MaxAckPending = 4 * FOLLOW_BATCH;
    so.Config.InactiveThreshold = INACTIVE_NS;
    s = js_PullSubscribe(&f->sub, f->js, subject, NULL, NULL, &so, &jerr);
    if (s != NATS_OK) {
        log_msg(LOG_WARN, "follower: cannot create the consumer",
                "stream=%s error=\"%s\" js_code=%d", f->cfg->follow_stream, natsconn_err(s),
                (int)jerr);
        f->sub = NULL;
        return ES_ERR_CONNECTION;
    }
    atomic_store(&f->connected, true);
    f->last_seq = start - 1;
    f->empty_fetches = 0;
    log_msg(LOG_INFO, "follower: consuming", "stream=%s from_sequence=%" PRIu64,
            f->cfg->follow_stream, start);
    return ES_OK;
}

/* ---------------------------------------------------------------- import -- */

static void halt(follow *f, uint64_t seq, const char *what, const char *why)
{
    log_msg(LOG_ERROR, "follower: refusing a message of the JetStream stream; consuming stopped",
            "stream=%s seq=%" PRIu64 " head=%" PRIu64 " error=%s detail=\"%s\"",
            f->cfg->follow_stream, seq, store_head(f->st), what, why);
    atomic_store(&f->halted, true);
}

/* ------------------------------------------------------------------ keys -- */

/* The outcome of looking for a key in the keys stream. */
typedef enum key_fetch {
    KEY_FETCHED,  /* the key, or the erased marker */
    KEY_MISSING,  /* no message for the slot (yet) */
    KEY_RETRY,    /* a connection or API failure */
    KEY_MALFORMED /* a message that is not a key of this slot (why set) */
} key_fetch;

/* Es-Key-Subject's value (lower-case hex of a subject id, relay.h) into
 * k->subject. @return false when it is not that, or not a valid name. */
static bool key_subject_parse(const char *hex, store_key_in *k)
{
    size_t n = strlen(hex);
    if (n == 0 || n % 2 != 0 || n / 2 > STORE_SUBJECT_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = hex[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                            : 16u;
        if (d == 16u) {
            return false;
        }
        if (i % 2 == 0) {
            k->subject[i / 2] = (uint8_t)(d << 4);
        } else {
            k->subject[i / 2] |= (uint8_t)d;
        }
    }
    k->subject_len = n / 2;
    return es_validate_name(k->subject, k->subject_len) == ES_OK;
}

static key_fetch key_fetch_one(follow *f, store_key_in *k, char *why, size_t why_len)
{
    char subject[128];
    snprintf(subject, sizeof subject, "%s.%" PRIu64, f->keys_subject, k->slot);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, f->js, f->keys_stream, subject, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSStreamNotFoundErr) {
        natsMsg_Destroy(m);
        return KEY_MISSING;
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        log_msg(LOG_WARN, "follower: cannot read the keys stream",
                "stream=%s slot=%" PRIu64 " error=\"%s\" js_code=%d", f->keys_stream, k->slot,
                natsconn_err(s), (int)jerr);
        return KEY_RETRY;
    }
    const char *hslot = NULL, *herased = NULL, *hsubject = NULL;
    natsMsgHeader_Get(m, "Es-Key-Slot", &hslot);
    bool erased = natsMsgHeader_Get(m, "Es-Key-Erased", &herased) == NATS_OK;
    bool has_subject = natsMsgHeader_Get(m, "Es-Key-Subject", &hsubject) == NATS_OK;
    k->subject_len = 0;
    uint64_t slot = 0;
    int len = natsMsg_GetDataLength(m);
    key_fetch rv = KEY_FETCHED;
    if (!natsconn_parse_u64(hslot, &slot) || slot != k->slot) {
        snprintf(why, why_len,
                 "the keys stream's message for slot %" PRIu64 " has no or another Es-Key-Slot",
                 k->slot);
        rv = KEY_MALFORMED;
    } else if (erased ? len != 0 : len != (int)STORE_DATA_KEY_BYTES) {
        snprintf(why, why_len,
                 "the keys stream's message for slot %" PRIu64
                 " is neither a %u-byte key nor the erased marker",
                 k->slot, STORE_DATA_KEY_BYTES);
        rv = KEY_MALFORMED;
    } else if (has_subject && !key_subject_parse(hsubject, k)) {
        snprintf(why, why_len,
                 "the keys stream's message for slot %" PRIu64
                 " has an Es-Key-Subject that is not the hex of a subject id of at most %u bytes",
                 k->slot, STORE_SUBJECT_MAX);
        rv = KEY_MALFORMED;
    } else {
        k->erased = erased;
        if (!erased) {
            memcpy(k->key, natsMsg_GetData(m), STORE_DATA_KEY_BYTES);
        }
    }
    if (len > 0) {
        OPENSSL_cleanse((void *)natsMsg_GetData(m), (size_t)len);
    }
    natsMsg_Destroy(m);
    return rv;
}

/*
 * The keys the records recs[0..*n) need and this store lacks, fetched from
 * the keys stream and written (synced) before the records are imported. A
 * key not there yet (or a failure) cuts the batch before the first record
 * that needs it: *n shrinks.
 * @return KEY_FETCHED (every key of recs[0..*n) is in the store);
 *   KEY_MISSING, KEY_RETRY (*n may be less: import those, then consume
 *   again later); KEY_MALFORMED (halt: why says which).
 */
static key_fetch keys_for_batch(follow *f, size_t *n, char *why, size_t why_len)
{
    size_t nk = 0;
    key_fetch out = KEY_FETCHED;
    size_t i = 0;
    uint64_t seen = 0; /* the previous record's slot, already looked at */
    for (; i < *n && out == KEY_FETCHED; i++) {
        uint64_t slot;
        if (!store_record_key_slot(f->recs[i].record, f->recs[i].len, &slot) || slot == seen) {
            continue;
        }
        seen = slot;
        store_key_state st;
        uint8_t tmp[STORE_DATA_KEY_BYTES];
        es_err rv = store_key_export(f->st, slot, &st, tmp);
        OPENSSL_cleanse(tmp, sizeof tmp);
        if (rv == ES_ERR_NOT_ERASABLE) {
            break; /* a plain follower: the import refuses the record, and says why */
        }
        if (rv != ES_OK || st != STORE_KEY_ABSENT) {
            continue; /* held, or erased here (a failed read: the import tells) */
        }
        bool listed = false;
        for (size_t j = 0; j < nk && !listed; j++) {
            listed = f->keys[j].slot == slot;
        }
        if (listed) {
            continue;
        }
        f->keys[nk].slot = slot;
        out = key_fetch_one(f, &f->keys[nk], why, why_len);
        if (out == KEY_FETCHED) {
            nk++;
        } else if (out != KEY_MALFORMED) {
            *n = i; /* import what precedes the record */
        }
    }
    if (nk > 0) {
        es_err rv = store_keys_import(f->st, f->keys, nk);
        OPENSSL_cleanse(f->keys, nk * sizeof f->keys[0]);
        if (rv == ES_ERR_MALFORMED) {
            snprintf(why, why_len,
                     "cannot write the keys: a subject in the keys stream is bound to another "
                     "slot here, or its slot to another subject");
            return KEY_MALFORMED;
        }
        if (rv != ES_OK) {
            snprintf(why, why_len, "cannot write the keys: %s", es_errname(rv));
            return KEY_MALFORMED;
        }
    }
    if (out == KEY_MISSING) {
        uint64_t now = store_now_us();
        if (now - f->key_wait_log_us > 10000000u) {
            log_msg(LOG_WARN,
                    "follower: waiting for a data key in the keys stream (the primary's relay "
                    "publishes it before the records that need it)",
                    "stream=%s subject_prefix=%s", f->keys_stream, f->keys_subject);
            f->key_wait_log_us = now;
        }
    }
    return out;
}

/* Check and import one fetched batch. @return false when the consumer must
 * be made again (a key the records need is not there yet). */
static bool import_list(follow *f, natsMsgList *list)
{
    uint64_t head = store_head(f->st);
    size_t n = 0;
    char why[256];
    bool bad = false;
    uint64_t bad_seq = 0;
    jsMsgMetaData *last_meta = NULL;
    /* Never more than asked for: under load libnats 3.4.1 was seen (under
     * AddressSanitizer) to report more messages than the batch it was given,
     * past the end of its own array. What lies beyond is not read; it is not
     * acknowledged either, so JetStream delivers it again. */
    int count = list->Count;
    if (count > (int)FOLLOW_BATCH) {
        log_msg(LOG_WARN, "follower: a fetch returned more messages than asked for",
                "stream=%s count=%d batch=%u", f->cfg->follow_stream, count, FOLLOW_BATCH);
        count = (int)FOLLOW_BATCH;
    }
    for (int i = 0; i < count && !bad; i++) {
        natsMsg *m = list->Msgs[i];
        jsMsgMetaData *meta = NULL;
        uint64_t seq = 0;
        if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
            seq = meta->Sequence.Stream;
            f->last_seq = seq;
            jsMsgMetaData_Destroy(last_meta);
            last_meta = meta;
        }
        uint64_t pos;
        if (!check_msg(f, m, &pos, why, sizeof why)) {
            bad = true;
            bad_seq = seq;
            break;
        }
        atomic_store(&f->upstream, pos);
        if (pos <= head) {
            continue; /* a redelivery of what is stored */
        }
        f->recs[n].record = (const uint8_t *)natsMsg_GetData(m);
        f->recs[n].len = (size_t)natsMsg_GetDataLength(m);
        f->seqs[n] = seq;
        n++;
    }
    size_t whole = n;
    key_fetch kf = KEY_FETCHED;
    if (n > 0) {
        char kwhy[256];
        kf = keys_for_batch(f, &n, kwhy, sizeof kwhy);
        if (kf == KEY_MALFORMED) {
            halt(f, f->seqs[0], "KEYS", kwhy);
            jsMsgMetaData_Destroy(last_meta);
            return true;
        }
    }
    if (n > 0) {
        size_t at = n;
        char msg[256];
        es_err rv = store_import_batch(f->st, f->recs, n, &at, msg, sizeof msg);
        if (rv != ES_OK) {
            halt(f, at < n ? f->seqs[at] : 0, es_errname(rv), msg);
            jsMsgMetaData_Destroy(last_meta);
            return true;
        }
        atomic_fetch_add(&f->imported, n);
        uint64_t one = 1;
        ssize_t wr = write(f->fd, &one, sizeof one);
        (void)wr; /* an eventfd write only fails at a count near 2^64 */
    }
    if (n < whole) {
        /* Not acknowledged: the next consumer starts at the new head. */
        jsMsgMetaData_Destroy(last_meta);
        return false;
    }
    if (bad) {
        halt(f, bad_seq, "MALFORMED", why);
    } else if (list->Count > 0) {
        natsMsg_Ack(list->Msgs[list->Count - 1], NULL); /* AckAll: everything up to it */
        if (last_meta) {
            atomic_store(&f->pending, last_meta->NumPending);
        }
    }
    jsMsgMetaData_Destroy(last_meta);
    return true;
}

/*
 * After FOLLOW_STALL_FETCHES empty fetches in a row: does the stream hold
 * messages after the last one fetched? Then the consumer is stuck (one
 * placed on a replica still catching up after a restart can stop
 * delivering) and a new one is made. Also keeps the pending figure true.
 */
static bool consumer_stalled(follow *f)
{
    if (++f->empty_fetches < FOLLOW_STALL_FETCHES) {
        return false;
    }
    f->empty_fetches = 0;
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, f->js, f->cfg->follow_stream, NULL, NULL) != NATS_OK) {
        return false; /* the next fetch tells */
    }
    uint64_t last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    atomic_store(&f->pending, last > f->last_seq ? last - f->last_seq : 0);
    if (last > f->last_seq) {
        log_msg(LOG_WARN, "follower: the consumer delivers nothing while the stream has more",
                "stream=%s last_fetched_seq=%" PRIu64 " stream_last_seq=%" PRIu64,
                f->cfg->follow_stream, f->last_seq, last);
        return true;
    }
    return false;
}

static void *follow_main(void *arg)
{
    follow *f = arg;
    int backoff = BACKOFF_MIN_MS;
    bool checked = false;
    while (!stopper_is_set(&f->stop)) {
        if (atomic_load(&f->halted)) {
            drop_sub(f);
            atomic_store(&f->connected, false);
            if (stopper_wait_ms(&f->stop, 1000)) {
                break;
            }
            continue;
        }
        if (!f->nc && connect_nats(f) != ES_OK) {
            if (stopper_wait_ms(&f->stop, backoff)) {
                break;
            }
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        if (!f->sub) {
            uint64_t head = store_head(f->st);
            if (!checked) {
                if (!same_history(f, head)) {
                    atomic_store(&f->halted, true);
                    continue;
                }
                checked = true;
            }
            if (subscribe_from(f, head + 1) != ES_OK) {
                if (stopper_wait_ms(&f->stop, backoff)) {
                    break;
                }
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
        }
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s =
            natsSubscription_Fetch(&list, f->sub, FOLLOW_BATCH, FOLLOW_FETCH_WAIT_MS, &jerr);
        if (list.Count > 0) {
            f->empty_fetches = 0;
            bool whole = import_list(f, &list);
            natsMsgList_Destroy(&list);
            if (whole) {
                backoff = BACKOFF_MIN_MS;
                continue;
            }
            /* A record's key is not in the keys stream yet: consume again
             * from the head after a while. */
            drop_sub(f);
            atomic_store(&f->connected, false);
            if (stopper_wait_ms(&f->stop, backoff)) {
                break;
            }
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        natsMsgList_Destroy(&list);
        if (s == NATS_TIMEOUT && !consumer_stalled(f)) {
            continue;
        }
        log_msg(LOG_WARN, "follower: fetch failed or stalled; consuming again from the head",
                "stream=%s error=\"%s\" js_code=%d", f->cfg->follow_stream, natsconn_err(s),
                (int)jerr);
        drop_sub(f);
        atomic_store(&f->connected, false);
        if (stopper_wait_ms(&f->stop, backoff)) {
            break;
        }
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    disconnect(f);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle -- */

es_err follow_start(store *st, const server_config *cfg, int import_fd, follow **out)
{
    follow *f = calloc(1, sizeof *f);
    if (!f) {
        return ES_ERR_NO_MEMORY;
    }
    f->st = st;
    f->cfg = cfg;
    f->fd = import_fd;
    snprintf(f->keys_stream, sizeof f->keys_stream, "%s%s", cfg->follow_stream,
             RELAY_KEYS_STREAM_SUFFIX);
    stopper_init(&f->stop);
    if (pthread_create(&f->thread, NULL, follow_main, f) != 0) {
        stopper_destroy(&f->stop);
        free(f);
        return ES_ERR_INTERNAL;
    }
    log_msg(LOG_INFO, "follower on: appends, transactions and snapshot saves are refused",
            "url=%s stream=%s", cfg->follow_nats, cfg->follow_stream);
    *out = f;
    return ES_OK;
}

void follow_stop(follow *f)
{
    if (!f) {
        return;
    }
    stopper_stop(&f->stop);
    pthread_join(f->thread, NULL);
    stopper_destroy(&f->stop);
    free(f);
    nats_Close();
}

void follow_get_stats(follow *f, follow_stats *out)
{
    out->connected = atomic_load(&f->connected);
    out->halted = atomic_load(&f->halted);
    out->imported = atomic_load(&f->imported);
    out->pending = atomic_load(&f->pending);
    out->upstream_position = atomic_load(&f->upstream);
}

/*
 * ptable — the table of requests a client has sent and not yet handed back
 * to the caller, keyed by request id.
 *
 * Design notes: open addressing with linear probing and backward-shift
 * deletion (no tombstones), so lookups stay short however many requests
 * come and go. Request ids are never 0 (0 marks an empty slot). Entries
 * move when the table grows or an entry is deleted: never keep a pointer to
 * an entry across ptable_add or ptable_del.
 */
#ifndef ES_CLIENT_PTABLE_H
#define ES_CLIENT_PTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es.pb-c.h"
#include "es/err.h"

typedef enum pending_state {
    PENDING_WAITING = 0, /* sent, no reply yet: counts as in flight */
    PENDING_DONE = 1,    /* reply (resp) or local failure (err) recorded */
} pending_state;

typedef struct pending {
    uint64_t id;        /* 0: empty slot */
    uint32_t kind;      /* Es__V1__Request__KindCase of the request */
    uint8_t state;      /* pending_state */
    bool abandoned;     /* nobody will collect it: drop the reply on arrival */
    uint32_t max_items; /* cap on the repeated elements of the reply */
    uint32_t reply_cap; /* cap on the reply's body bytes */
    uint64_t deadline_us;
    es_err err;                /* PENDING_DONE without resp: the local failure */
    Es__V1__Response *resp;    /* PENDING_DONE: the reply, owned by the entry */
    bool want_raw;             /* a Read reply is kept as bytes (raw), not unpacked */
    uint8_t *raw;              /* PENDING_DONE, want_raw: the reply frame (a cl_buf_get buffer) */
    uint32_t raw_cap;          /* its size */
    uint32_t raw_off, raw_len; /* where the ReadResult's bytes are in it */
} pending;

typedef struct ptable {
    pending *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
} ptable;

/** @brief The entry of an id, or NULL. */
pending *ptable_get(ptable *t, uint64_t id);

/**
 * @brief Add a zeroed entry for a new id (not present).
 * @return ES_OK with *out set; ES_ERR_NO_MEMORY.
 */
es_err ptable_add(ptable *t, uint64_t id, pending **out);

/** @brief Remove an entry (the caller frees its reply first). */
void ptable_del(ptable *t, uint64_t id);

/** @brief Free the table's memory (the entries' replies are the caller's). */
void ptable_finish(ptable *t);

#endif

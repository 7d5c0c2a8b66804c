/*
 * websess — the web console's login sessions: a fixed-size table of who is
 * logged in, with what role, until when. Pure (no libevent, no I/O): the
 * clock is passed in, so tests can drive expiry.
 *
 * Design notes
 * ------------
 * A session is named by a 32-byte random id (OpenSSL's RAND_bytes), sent to
 * the browser once, as 64 hex digits in an HttpOnly cookie. The table keeps
 * only the SHA-256 of the id and compares digests with CRYPTO_memcmp over
 * every slot, so neither memory nor timing gives an id away. Each session
 * also has a CSRF token (32 random bytes, hex), which the page reads from
 * GET /api/session and sends back in an X-CSRF-Token header on every call
 * that changes something; a request another site makes the browser send
 * carries the cookie (were it not SameSite=Strict) but cannot know the token.
 *
 * A session ends at logout, when an admin ends it, after WEBSESS_IDLE_MS
 * without a request, or WEBSESS_MAX_AGE_MS after login, whichever comes
 * first. The table holds WEBSESS_MAX sessions: a new login takes a free or
 * expired slot, or else the one least recently used (logging in needs valid
 * credentials, so only a user can push another out, never an anonymous
 * peer). Each slot has a generation number, bumped when it is reused, so
 * an admin's "end session <slot>.<generation>" never ends a later session
 * that happens to sit in the same slot.
 */
#ifndef ES_WEBSESS_H
#define ES_WEBSESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "es/err.h"

#define WEBSESS_MAX        256u
#define WEBSESS_IDLE_MS    (30u * 60u * 1000u)       /* 30 minutes without a request */
#define WEBSESS_MAX_AGE_MS (12u * 60u * 60u * 1000u) /* 12 hours after login */
#define WEBSESS_ID_HEX     64u                       /* cookie value: 32 bytes in hex */

typedef struct websess {
    bool used;
    uint8_t id_hash[32];           /* SHA-256 of the id */
    char csrf[WEBSESS_ID_HEX + 1]; /* the session's CSRF token */
    char user[AUTH_NAME_MAX + 1];  /* "" without authentication */
    auth_role role;
    uint64_t created_ms, last_ms; /* monotonic */
    uint32_t gen;                 /* bumped at each reuse of the slot */
} websess;

typedef struct websess_table {
    websess slots[WEBSESS_MAX];
    uint32_t next_gen;
} websess_table;

/** @brief An empty table (caller memory). */
void websess_init(websess_table *t);

/** @brief End every session, wiping the table. */
void websess_finish(websess_table *t);

/**
 * @brief Open a session.
 * @param user borrowed, NUL-terminated, at most AUTH_NAME_MAX bytes
 * @param[out] cookie the session id to send the browser, WEBSESS_ID_HEX hex
 *   digits and a NUL (the only copy of the id: the table keeps its digest)
 * @param[out] out the session (valid until it ends)
 * @return ES_OK; ES_ERR_INTERNAL (no randomness from OpenSSL).
 */
es_err websess_open(websess_table *t, const char *user, auth_role role, uint64_t now_ms,
                    char cookie[WEBSESS_ID_HEX + 1], websess **out);

/**
 * @brief The live session a cookie names, its last use set to now.
 * @param cookie the cookie value (any bytes; NULL allowed)
 * @return the session, or NULL (unknown, malformed, or expired: an expired
 *   session found here is ended).
 */
websess *websess_find(websess_table *t, const char *cookie, uint64_t now_ms);

/** @brief End a session (logout). */
void websess_end(websess *s);

/** @brief Slot index of a session in its table. */
size_t websess_slot(const websess_table *t, const websess *s);

/**
 * @brief End the session in a slot if it still has that generation.
 * @return true when a session was ended.
 */
bool websess_end_slot(websess_table *t, size_t slot, uint32_t gen, uint64_t now_ms);

/** @brief Live (unexpired) sessions. */
size_t websess_count(websess_table *t, uint64_t now_ms);

/** @brief Whether a session is still alive at now_ms (not ended, not expired). */
bool websess_alive(const websess *s, uint64_t now_ms);

#endif

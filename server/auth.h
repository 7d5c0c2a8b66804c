/*
 * auth — who may connect and what they may do: the credentials file, the
 * check of a hello's credentials, roles, and the rate limit on failures.
 * No I/O besides reading the file once at start; no libevent.
 *
 * Design notes
 * ------------
 * The file (esd --auth-file FILE) holds one user a line:
 *
 *     # NAME   ROLE   SECRET
 *     alice    admin  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *     reports  read   s3cr3t-t0ken-of-at-least-a-few-bytes
 *
 * Fields are separated by spaces or tabs; a `#` at the start of a field
 * starts a comment that runs to the end of the line; blank lines are
 * ignored. NAME is 1..64 bytes of [A-Za-z0-9._@-], unique in the file.
 * ROLE is `read`, `write` or `admin`. SECRET is either the token itself
 * (1..1024 bytes, no whitespace, not starting with `#`) or `sha256:` and
 * the 64 hex digits of the SHA-256 of the token, so the file need not
 * hold the token at all (`printf %s TOKEN | sha256sum`). Tokens must be
 * unique too (two users with one token could not be told apart when a
 * client sends no user name). The file must be a regular file that neither
 * group nor others may read, write or execute (mode 0600 or 0400), as ssh
 * does for private keys: esd refuses to start otherwise.
 *
 * Only SHA-256 digests are kept in memory: a literal token is hashed when
 * the file is read and the line buffer wiped. A presented token is hashed
 * too and compared with every entry's digest with CRYPTO_memcmp, and the
 * name with a constant-time comparison as well, over every entry without an
 * early exit: the time taken tells nothing about which part was wrong or
 * which user exists. A hello without a user name matches the entry whose
 * token it carries (API-key style); a hello with one must match both.
 *
 * Roles are ordered: read < write < admin. The matrix of request kinds to
 * the least role that may send them lives in the handler (it owns the
 * request kinds); this module only orders and names the roles.
 *
 * Failures are rate-limited per peer address (not per connection, so a
 * client cannot reset its budget by reconnecting) with a token bucket:
 * `burst` failures at once (esd --auth-failures, default
 * AUTH_FAIL_BURST), then one more every AUTH_FAIL_REFILL_MS. A peer whose bucket is empty is
 * refused before its credentials are even checked, and its connection closed. The table of buckets
 * is fixed-size (AUTH_LIMITER_SLOTS): a new address takes a slot whose bucket is full again (it
 * holds no information) or, failing that, the least recently used one, so memory stays bounded
 * whatever the number of addresses; an attacker with very many addresses can only evict buckets,
 * which costs it the same as starting fresh.
 */
#ifndef ES_AUTH_H
#define ES_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

#define AUTH_NAME_MAX       64
#define AUTH_TOKEN_MAX      1024
#define AUTH_FAIL_BURST     10
#define AUTH_FAIL_REFILL_MS 1000
#define AUTH_LIMITER_SLOTS  4096

typedef enum auth_role {
    AUTH_ROLE_NONE = 0, /* not authenticated */
    AUTH_ROLE_READ = 1,
    AUTH_ROLE_WRITE = 2,
    AUTH_ROLE_ADMIN = 3,
} auth_role;

/** @brief "read", "write", "admin", or "none". Static storage. */
const char *auth_role_name(auth_role r);

typedef struct auth auth;

/**
 * @brief Read and check the credentials file.
 * @param path the file; its mode must deny group and others every access
 * @param[out] out the table; free with auth_destroy
 * @param[out] msg why it was refused (never contains a secret)
 * @return ES_OK; ES_ERR_IO (cannot open or stat: msg says why);
 *   ES_ERR_PERMISSION_DENIED (group or others have access, or not a regular
 *   file); ES_ERR_INVALID_ARGUMENT (a bad line: msg gives its number and
 *   what is wrong; an empty file is refused too); ES_ERR_NO_MEMORY.
 */
es_err auth_load(const char *path, auth **out, char *msg, size_t msg_len);

/** @brief Free the table (wiping the digests). Accepts NULL. */
void auth_destroy(auth *a);

/** @brief Number of users in the table. */
size_t auth_count(const auth *a);

/**
 * @brief Check a hello's credentials.
 * @param user the name sent (not NUL-terminated; user_len 0 = none sent)
 * @param token the token sent (token_len 0 = none)
 * @param[out] role the user's role on success, AUTH_ROLE_NONE otherwise
 * @param[out] name the matched user's name (NUL-terminated, at least
 *   AUTH_NAME_MAX + 1 bytes), "" on failure
 * @return true when the credentials match an entry. Runs in time that
 *   depends only on the table's size and token_len.
 */
bool auth_check(const auth *a, const uint8_t *user, size_t user_len, const uint8_t *token,
                size_t token_len, auth_role *role, char *name);

/**
 * @brief SHA-256 of bytes (for tests and tools).
 * @return ES_OK; ES_ERR_INTERNAL when libcrypto fails.
 */
es_err auth_sha256(const void *data, size_t len, uint8_t out[32]);

/* ------------------------------------------------------------- limiter -- */

typedef struct auth_limiter auth_limiter;

/**
 * @param burst failures an address may have at once (>= 1)
 * @return the limiter, or NULL when out of memory.
 */
auth_limiter *auth_limiter_create(uint32_t burst);
void auth_limiter_destroy(auth_limiter *l);

/**
 * @brief May this address try to authenticate now?
 * @param addr the peer's address without its port (NUL-terminated)
 * @param now_ms a monotonic clock in milliseconds
 * @return true when its bucket holds at least one token.
 */
bool auth_limiter_allow(auth_limiter *l, const char *addr, uint64_t now_ms);

/**
 * @brief Record one failure of this address (takes one token).
 * @return true when the address may still try again; false when its
 *   bucket is now empty (the caller closes the connection).
 */
bool auth_limiter_fail(auth_limiter *l, const char *addr, uint64_t now_ms);

#endif

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
 * does for private keys: esd refuses to start otherwise. A FIFO, directory
 * or device is refused without being read (regfile.h: it is opened
 * non-blocking and checked on the descriptor). A NUL byte or a control
 * character other than tab and carriage return anywhere in a line makes
 * that line invalid: like every invalid line, it stops the start with a
 * message naming the line (lines are split by length, so a NUL cannot
 * silently end the file early).
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
 * Failed hellos are limited per address, per IPv6 network and over all
 * addresses by auth_limiter.h.
 */
#ifndef ES_AUTH_H
#define ES_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/err.h"

#define AUTH_NAME_MAX  64
#define AUTH_TOKEN_MAX 1024

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
 *   file: a FIFO is refused without blocking); ES_ERR_INVALID_ARGUMENT (a bad
 *   line, a NUL or control byte included: msg gives its number and what is
 *   wrong; an empty file is refused too); ES_ERR_NO_MEMORY.
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

#endif

#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "regfile.h"

#define DIGEST_BYTES   32
#define LINE_MAX_BYTES 4096
#define FILE_MAX_BYTES (16u * 1024u * 1024u)

typedef struct auth_entry {
    char name[AUTH_NAME_MAX + 1];
    size_t name_len;
    auth_role role;
    uint8_t digest[DIGEST_BYTES];
} auth_entry;

struct auth {
    auth_entry *entries;
    size_t n;
};

const char *auth_role_name(auth_role r)
{
    switch (r) {
    case AUTH_ROLE_READ:
        return "read";
    case AUTH_ROLE_WRITE:
        return "write";
    case AUTH_ROLE_ADMIN:
        return "admin";
    default:
        return "none";
    }
}

es_err auth_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int outlen = 0;
    if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) != 1 || outlen != DIGEST_BYTES) {
        return ES_ERR_INTERNAL;
    }
    return ES_OK;
}

static void wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

/* ---------------------------------------------------------------- parsing -- */

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > AUTH_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool parse_role(const char *s, size_t n, auth_role *out)
{
    static const struct {
        const char *name;
        auth_role role;
    } roles[] = {{"read", AUTH_ROLE_READ}, {"write", AUTH_ROLE_WRITE}, {"admin", AUTH_ROLE_ADMIN}};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        if (strlen(roles[i].name) == n && !memcmp(roles[i].name, s, n)) {
            *out = roles[i].role;
            return true;
        }
    }
    return false;
}

/* SECRET: "sha256:" + 64 hex digits, or the token itself. */
static const char *parse_secret(const char *s, size_t n, uint8_t digest[DIGEST_BYTES])
{
    static const char prefix[] = "sha256:";
    size_t pl = sizeof prefix - 1;
    if (n >= pl && !memcmp(s, prefix, pl)) {
        if (n - pl != 2 * DIGEST_BYTES) {
            return "a sha256: secret needs exactly 64 hex digits";
        }
        for (size_t i = 0; i < DIGEST_BYTES; i++) {
            int hi = hexval(s[pl + 2 * i]), lo = hexval(s[pl + 2 * i + 1]);
            if (hi < 0 || lo < 0) {
                return "a sha256: secret needs exactly 64 hex digits";
            }
            digest[i] = (uint8_t)(hi << 4 | lo);
        }
        return NULL;
    }
    if (n > AUTH_TOKEN_MAX) {
        return "token longer than 1024 bytes";
    }
    if (auth_sha256(s, n, digest) != ES_OK) {
        return "cannot hash the token (libcrypto failed)";
    }
    return NULL;
}

/* Split a line into at most 4 fields (the 4th only to detect extras). */
static size_t split(char *line, const char **f, size_t *fl, size_t max)
{
    size_t nf = 0;
    char *p = line;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r') {
            p++;
        }
        if (!*p || *p == '#') {
            break;
        }
        char *start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r') {
            p++;
        }
        if (nf < max) {
            f[nf] = start;
            fl[nf] = (size_t)(p - start);
        }
        nf++;
    }
    return nf;
}

static es_err parse_line(auth *a, char *line, unsigned lineno, char *msg, size_t msg_len)
{
    const char *f[4];
    size_t fl[4];
    size_t nf = split(line, f, fl, 4);
    if (nf == 0) {
        return ES_OK;
    }
    if (nf != 3) {
        snprintf(msg, msg_len, "line %u: expected NAME ROLE SECRET, found %zu field%s", lineno, nf,
                 nf == 1 ? "" : "s");
        return ES_ERR_INVALID_ARGUMENT;
    }
    auth_entry e;
    memset(&e, 0, sizeof e);
    if (!name_ok(f[0], fl[0])) {
        snprintf(msg, msg_len, "line %u: a user name is 1..64 characters of A-Z a-z 0-9 . _ @ -",
                 lineno);
        return ES_ERR_INVALID_ARGUMENT;
    }
    memcpy(e.name, f[0], fl[0]);
    e.name_len = fl[0];
    if (!parse_role(f[1], fl[1], &e.role)) {
        snprintf(msg, msg_len, "line %u: role must be read, write or admin", lineno);
        return ES_ERR_INVALID_ARGUMENT;
    }
    const char *why = parse_secret(f[2], fl[2], e.digest);
    if (why) {
        snprintf(msg, msg_len, "line %u: %s", lineno, why);
        return ES_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (a->entries[i].name_len == e.name_len &&
            !memcmp(a->entries[i].name, e.name, e.name_len)) {
            snprintf(msg, msg_len, "line %u: user '%s' appears twice", lineno, e.name);
            wipe(&e, sizeof e);
            return ES_ERR_INVALID_ARGUMENT;
        }
        if (!memcmp(a->entries[i].digest, e.digest, DIGEST_BYTES)) {
            snprintf(msg, msg_len, "line %u: user '%s' has the same token as '%s'", lineno, e.name,
                     a->entries[i].name);
            wipe(&e, sizeof e);
            return ES_ERR_INVALID_ARGUMENT;
        }
    }
    auth_entry *grown = realloc(a->entries, (a->n + 1) * sizeof *grown);
    if (!grown) {
        wipe(&e, sizeof e);
        return ES_ERR_NO_MEMORY;
    }
    a->entries = grown;
    a->entries[a->n++] = e;
    wipe(&e, sizeof e);
    return ES_OK;
}

/* Read the whole file through the descriptor that was checked. */
static es_err slurp(int fd, size_t size, char **out, size_t *out_len, char *msg, size_t msg_len,
                    const char *path)
{
    char *buf = malloc(size + 1);
    if (!buf) {
        return ES_ERR_NO_MEMORY;
    }
    size_t have = 0;
    while (have < size) {
        ssize_t r = read(fd, buf + have, size - have);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            snprintf(msg, msg_len, "cannot read %s: %s", path, strerror(errno));
            wipe(buf, size + 1);
            free(buf);
            return ES_ERR_IO;
        }
        if (r == 0) {
            break;
        }
        have += (size_t)r;
    }
    buf[have] = '\0';
    *out = buf;
    *out_len = have;
    return ES_OK;
}

/* The first byte of a line that no valid line holds: NUL, or a control
 * character other than tab and carriage return (the separators); NULL
 * when there is none. */
static const char *bad_byte(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
            return p + i;
        }
    }
    return NULL;
}

es_err auth_load(const char *path, auth **out, char *msg, size_t msg_len)
{
    *out = NULL;
    int fd;
    es_err orv = regfile_open(path, "the auth file", &fd, msg, msg_len);
    if (orv != ES_OK) {
        return orv == ES_ERR_INVALID_ARGUMENT ? ES_ERR_PERMISSION_DENIED : orv;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(msg, msg_len, "cannot stat the auth file %s: %s", path, strerror(errno));
        close(fd);
        return ES_ERR_IO;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(msg, msg_len,
                 "the auth file %s has mode %04o: group and others must have no access "
                 "(chmod 600 %s)",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return ES_ERR_PERMISSION_DENIED;
    }
    if ((uint64_t)st.st_size > FILE_MAX_BYTES) {
        snprintf(msg, msg_len, "the auth file %s is larger than 16 MiB", path);
        close(fd);
        return ES_ERR_INVALID_ARGUMENT;
    }
    char *text = NULL;
    size_t size = (size_t)st.st_size;
    size_t len = 0;
    es_err rv = slurp(fd, size, &text, &len, msg, msg_len, path);
    close(fd);
    if (rv != ES_OK) {
        return rv;
    }
    auth *a = calloc(1, sizeof *a);
    if (!a) {
        wipe(text, size + 1);
        free(text);
        return ES_ERR_NO_MEMORY;
    }
    /* The text may hold NUL bytes: lines are found by length, not as C
     * strings, and a NUL is an error of its line (read as a C string, it
     * would silently end the file there and drop every user after it). */
    unsigned lineno = 0;
    size_t at = 0;
    while (at < len && rv == ES_OK) {
        lineno++;
        char *p = text + at;
        char *nl = memchr(p, '\n', len - at);
        size_t n = nl ? (size_t)(nl - p) : len - at;
        at += n + (nl ? 1 : 0);
        if (n > LINE_MAX_BYTES) {
            snprintf(msg, msg_len, "%s: line %u is longer than %u bytes", path, lineno,
                     LINE_MAX_BYTES);
            rv = ES_ERR_INVALID_ARGUMENT;
            break;
        }
        p[n] = '\0';
        char why[256] = "";
        const char *bad = bad_byte(p, n);
        if (bad) {
            snprintf(msg, msg_len, "%s: line %u: %s at column %zu", path, lineno,
                     *bad == '\0' ? "a NUL byte" : "a control character", (size_t)(bad - p) + 1);
            rv = ES_ERR_INVALID_ARGUMENT;
            break;
        }
        rv = parse_line(a, p, lineno, why, sizeof why);
        if (rv == ES_ERR_INVALID_ARGUMENT) {
            snprintf(msg, msg_len, "%s: %s", path, why);
        }
    }
    wipe(text, size + 1);
    free(text);
    if (rv == ES_OK && a->n == 0) {
        snprintf(msg, msg_len, "%s: no users (every connection would be refused)", path);
        rv = ES_ERR_INVALID_ARGUMENT;
    }
    if (rv != ES_OK) {
        auth_destroy(a);
        return rv;
    }
    *out = a;
    return ES_OK;
}

void auth_destroy(auth *a)
{
    if (!a) {
        return;
    }
    if (a->entries) {
        wipe(a->entries, a->n * sizeof *a->entries);
        free(a->entries);
    }
    free(a);
}

size_t auth_count(const auth *a)
{
    return a ? a->n : 0;
}

/* ----------------------------------------------------------------- check -- */

/* 1 when the name (padded to AUTH_NAME_MAX) equals the entry's, in time
 * independent of where they differ. */
static unsigned name_eq(const auth_entry *e, const uint8_t *user, size_t user_len)
{
    uint8_t pad[AUTH_NAME_MAX];
    memset(pad, 0, sizeof pad);
    size_t n = user_len > AUTH_NAME_MAX ? AUTH_NAME_MAX : user_len;
    memcpy(pad, user, n);
    uint8_t mine[AUTH_NAME_MAX];
    memset(mine, 0, sizeof mine);
    memcpy(mine, e->name, e->name_len);
    unsigned same = CRYPTO_memcmp(pad, mine, AUTH_NAME_MAX) == 0;
    return same & (unsigned)(user_len == e->name_len);
}

bool auth_check(const auth *a, const uint8_t *user, size_t user_len, const uint8_t *token,
                size_t token_len, auth_role *role, char *name)
{
    *role = AUTH_ROLE_NONE;
    name[0] = '\0';
    if (!a || token_len == 0 || token_len > AUTH_TOKEN_MAX) {
        return false;
    }
    uint8_t digest[DIGEST_BYTES];
    if (auth_sha256(token, token_len, digest) != ES_OK) {
        return false;
    }
    size_t found = SIZE_MAX;
    for (size_t i = 0; i < a->n; i++) {
        const auth_entry *e = &a->entries[i];
        unsigned tok = CRYPTO_memcmp(digest, e->digest, DIGEST_BYTES) == 0;
        unsigned nm = user_len == 0 ? 1u : name_eq(e, user, user_len);
        if (tok & nm) {
            found = i; /* tokens are unique: at most one entry matches */
        }
    }
    wipe(digest, sizeof digest);
    if (found == SIZE_MAX) {
        return false;
    }
    *role = a->entries[found].role;
    memcpy(name, a->entries[found].name, a->entries[found].name_len + 1);
    return true;
}

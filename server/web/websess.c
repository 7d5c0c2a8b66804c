#include "websess.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

static bool sha256(const uint8_t *b, size_t n, uint8_t out[32])
{
    return EVP_Digest(b, n, out, NULL, EVP_sha256(), NULL) == 1;
}

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void websess_init(websess_table *t)
{
    memset(t, 0, sizeof *t);
}

void websess_finish(websess_table *t)
{
    OPENSSL_cleanse(t, sizeof *t);
}

bool websess_alive(const websess *s, uint64_t now_ms)
{
    return s->used && now_ms - s->last_ms < WEBSESS_IDLE_MS &&
           now_ms - s->created_ms < WEBSESS_MAX_AGE_MS;
}

void websess_end(websess *s)
{
    uint32_t gen = s->gen;
    OPENSSL_cleanse(s, sizeof *s);
    s->gen = gen;
}

es_err websess_open(websess_table *t, const char *user, auth_role role, uint64_t now_ms,
                    char cookie[WEBSESS_ID_HEX + 1], websess **out)
{
    websess *slot = NULL;
    for (size_t i = 0; i < WEBSESS_MAX && !slot; i++) {
        if (!websess_alive(&t->slots[i], now_ms)) {
            slot = &t->slots[i];
        }
    }
    if (!slot) { /* full: the least recently used gives way */
        slot = &t->slots[0];
        for (size_t i = 1; i < WEBSESS_MAX; i++) {
            if (t->slots[i].last_ms < slot->last_ms) {
                slot = &t->slots[i];
            }
        }
    }
    uint8_t id[32], csrf[32];
    if (RAND_bytes(id, sizeof id) != 1 || RAND_bytes(csrf, sizeof csrf) != 1) {
        return ES_ERR_INTERNAL;
    }
    websess_end(slot);
    if (!sha256(id, sizeof id, slot->id_hash)) {
        OPENSSL_cleanse(id, sizeof id);
        return ES_ERR_INTERNAL;
    }
    to_hex(id, sizeof id, cookie);
    to_hex(csrf, sizeof csrf, slot->csrf);
    OPENSSL_cleanse(id, sizeof id);
    OPENSSL_cleanse(csrf, sizeof csrf);
    snprintf(slot->user, sizeof slot->user, "%s", user);
    slot->role = role;
    slot->created_ms = slot->last_ms = now_ms;
    slot->gen = ++t->next_gen;
    slot->used = true;
    *out = slot;
    return ES_OK;
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

websess *websess_find(websess_table *t, const char *cookie, uint64_t now_ms)
{
    if (!cookie || strlen(cookie) != WEBSESS_ID_HEX) {
        return NULL;
    }
    uint8_t id[32], hash[32];
    for (size_t i = 0; i < sizeof id; i++) {
        int hi = unhex(cookie[2 * i]), lo = unhex(cookie[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return NULL;
        }
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    bool ok = sha256(id, sizeof id, hash);
    OPENSSL_cleanse(id, sizeof id);
    if (!ok) {
        return NULL;
    }
    /* Every slot is compared, without an early exit. */
    websess *found = NULL;
    for (size_t i = 0; i < WEBSESS_MAX; i++) {
        websess *s = &t->slots[i];
        if (CRYPTO_memcmp(s->id_hash, hash, sizeof hash) == 0 && s->used) {
            found = s;
        }
    }
    if (!found) {
        return NULL;
    }
    if (!websess_alive(found, now_ms)) {
        websess_end(found);
        return NULL;
    }
    found->last_ms = now_ms;
    return found;
}

size_t websess_slot(const websess_table *t, const websess *s)
{
    return (size_t)(s - t->slots);
}

bool websess_end_slot(websess_table *t, size_t slot, uint32_t gen, uint64_t now_ms)
{
    if (slot >= WEBSESS_MAX) {
        return false;
    }
    websess *s = &t->slots[slot];
    if (!websess_alive(s, now_ms) || s->gen != gen) {
        return false;
    }
    websess_end(s);
    return true;
}

size_t websess_count(websess_table *t, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < WEBSESS_MAX; i++) {
        n += websess_alive(&t->slots[i], now_ms);
    }
    return n;
}

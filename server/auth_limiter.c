#include "auth_limiter.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "auth.h"

/* ------------------------------------------------------------------ keys -- */

enum key_kind {
    KEY_FREE = 0,
    KEY_V4 = 1,    /* an IPv4 address (or an IPv4-mapped IPv6 one) */
    KEY_V6 = 2,    /* an IPv6 address */
    KEY_NET64 = 3, /* an IPv6 /64 */
    KEY_OTHER = 4, /* an address string that is neither: its first 16 bytes */
};

void auth_key_parse(const char *s, auth_key *addr, auth_key *net)
{
    memset(addr, 0, sizeof *addr);
    memset(net, 0, sizeof *net);
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, s, &a4) == 1) {
        addr->kind = KEY_V4;
        memcpy(addr->b, &a4, 4);
    } else if (inet_pton(AF_INET6, s, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            addr->kind = KEY_V4;
            memcpy(addr->b, a6.s6_addr + 12, 4);
        } else {
            addr->kind = KEY_V6;
            memcpy(addr->b, a6.s6_addr, 16);
            net->kind = KEY_NET64;
            memcpy(net->b, a6.s6_addr, 8);
        }
    } else {
        addr->kind = KEY_OTHER;
        size_t n = strnlen(s, sizeof addr->b);
        memcpy(addr->b, s, n);
    }
}

static bool key_eq(const auth_key *a, const auth_key *b)
{
    return a->kind == b->kind && !memcmp(a->b, b->b, sizeof a->b);
}

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    /* FNV alone keeps low bits weak for short keys: finish with a mix. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* --------------------------------------------------------------- buckets -- */

typedef struct bucket {
    auth_key k; /* kind KEY_FREE = free */
    double tokens;
    uint64_t updated_ms;
} bucket;

typedef struct trust {
    auth_key addr; /* kind KEY_FREE = free */
    uint8_t user_len;
    char user[AUTH_NAME_MAX];
    uint64_t ok_ms; /* last success */
} trust;

struct auth_limiter {
    double burst; /* per address; a network gets AUTH_NET_FACTOR times */
    double global_rate;
    double global_tokens;
    uint64_t global_ms;
    uint64_t seed;
    uint64_t refused[3];
    uint64_t trusted;
    bucket slots[AUTH_LIMITER_SLOTS];
    trust pairs[AUTH_TRUST_SLOTS];
};

const char *auth_verdict_name(auth_verdict v)
{
    switch (v) {
    case AUTH_REFUSE_ADDRESS:
        return "address";
    case AUTH_REFUSE_NETWORK:
        return "network";
    case AUTH_REFUSE_GLOBAL:
        return "global";
    default:
        return "";
    }
}

auth_limiter *auth_limiter_create(const auth_limits *lim)
{
    auth_limiter *l = calloc(1, sizeof *l);
    if (!l) {
        return NULL;
    }
    if (getrandom(&l->seed, sizeof l->seed, 0) != (ssize_t)sizeof l->seed) {
        free(l);
        return NULL;
    }
    l->burst = lim->burst ? lim->burst : 1;
    l->global_rate = lim->global_rate;
    l->global_tokens = l->global_rate;
    return l;
}

void auth_limiter_destroy(auth_limiter *l)
{
    free(l);
}

static double burst_of(const auth_limiter *l, const auth_key *k)
{
    return k->kind == KEY_NET64 ? l->burst * AUTH_NET_FACTOR : l->burst;
}

static double level(const auth_limiter *l, const bucket *b, uint64_t now_ms)
{
    double cap = burst_of(l, &b->k);
    double per_ms = (b->k.kind == KEY_NET64 ? AUTH_NET_FACTOR : 1.0) / AUTH_FAIL_REFILL_MS;
    double t = b->tokens;
    if (now_ms > b->updated_ms) {
        t += (double)(now_ms - b->updated_ms) * per_ms;
    }
    return t > cap ? cap : t;
}

/* The key's bucket, refilled to now; create = false returns NULL for an
 * unknown key (a full bucket, as far as the caller is concerned). */
static bucket *find(auth_limiter *l, const auth_key *k, uint64_t now_ms, bool create)
{
    size_t h = (size_t)(hash_bytes(l->seed, k, sizeof *k) % AUTH_LIMITER_SLOTS);
    bucket *victim = NULL;
    for (size_t i = 0; i < AUTH_LIMITER_PROBE; i++) {
        bucket *b = &l->slots[(h + i) % AUTH_LIMITER_SLOTS];
        if (b->k.kind != KEY_FREE && key_eq(&b->k, k)) {
            b->tokens = level(l, b, now_ms);
            b->updated_ms = now_ms;
            return b;
        }
        /* For a new key: a free slot, then a bucket that is full again,
         * then the one touched longest ago. */
        if (victim && victim->k.kind == KEY_FREE) {
            continue;
        }
        if (!victim || b->k.kind == KEY_FREE) {
            victim = b;
            continue;
        }
        if (level(l, victim, now_ms) >= burst_of(l, &victim->k)) {
            continue;
        }
        if (level(l, b, now_ms) >= burst_of(l, &b->k) || b->updated_ms < victim->updated_ms) {
            victim = b;
        }
    }
    if (!create || !victim) {
        return NULL;
    }
    victim->k = *k;
    victim->tokens = burst_of(l, k);
    victim->updated_ms = now_ms;
    return victim;
}

static double global_level(auth_limiter *l, uint64_t now_ms)
{
    if (now_ms > l->global_ms) {
        l->global_tokens += (double)(now_ms - l->global_ms) * l->global_rate / 1000.0;
        if (l->global_tokens > l->global_rate) {
            l->global_tokens = l->global_rate;
        }
        l->global_ms = now_ms;
    }
    return l->global_tokens;
}

/* ----------------------------------------------------------------- trust -- */

static size_t trust_home(const auth_limiter *l, const auth_key *addr, const uint8_t *user,
                         size_t user_len)
{
    uint64_t h = hash_bytes(l->seed, addr, sizeof *addr);
    return (size_t)(hash_bytes(h, user, user_len) % AUTH_TRUST_SLOTS);
}

static bool trust_live(const trust *t, uint64_t now_ms)
{
    return t->addr.kind != KEY_FREE && now_ms - t->ok_ms < AUTH_TRUST_MS;
}

static trust *trust_find(auth_limiter *l, const auth_key *addr, const uint8_t *user,
                         size_t user_len)
{
    if (user_len == 0 || user_len > AUTH_NAME_MAX) {
        return NULL;
    }
    size_t h = trust_home(l, addr, user, user_len);
    for (size_t i = 0; i < AUTH_LIMITER_PROBE; i++) {
        trust *t = &l->pairs[(h + i) % AUTH_TRUST_SLOTS];
        if (t->addr.kind != KEY_FREE && key_eq(&t->addr, addr) && t->user_len == user_len &&
            !memcmp(t->user, user, user_len)) {
            return t;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------- api -- */

auth_verdict auth_limiter_admit(auth_limiter *l, const char *addr, const uint8_t *user,
                                size_t user_len, uint64_t now_ms)
{
    auth_key a, net;
    auth_key_parse(addr, &a, &net);
    auth_verdict v = AUTH_CHECK;
    bucket *b = find(l, &a, now_ms, false);
    if (b && b->tokens < 1.0) {
        v = AUTH_REFUSE_ADDRESS;
    } else if (net.kind != KEY_FREE && (b = find(l, &net, now_ms, false)) && b->tokens < 1.0) {
        v = AUTH_REFUSE_NETWORK;
    } else if (l->global_rate > 0 && global_level(l, now_ms) < 1.0) {
        v = AUTH_REFUSE_GLOBAL;
    }
    if (v == AUTH_CHECK) {
        return v;
    }
    trust *t = trust_find(l, &a, user, user_len);
    if (t && trust_live(t, now_ms)) {
        l->trusted++;
        return AUTH_CHECK_TRUSTED;
    }
    l->refused[v - AUTH_REFUSE_ADDRESS]++;
    return v;
}

bool auth_limiter_fail(auth_limiter *l, const char *addr, const uint8_t *user, size_t user_len,
                       uint64_t now_ms)
{
    auth_key a, net;
    auth_key_parse(addr, &a, &net);
    trust *t = trust_find(l, &a, user, user_len);
    if (t) {
        memset(t, 0, sizeof *t);
    }
    bool more = true;
    bucket *b = find(l, &a, now_ms, true);
    if (b) {
        b->tokens = b->tokens >= 1.0 ? b->tokens - 1.0 : 0.0;
        more = more && b->tokens >= 1.0;
    }
    if (net.kind != KEY_FREE && (b = find(l, &net, now_ms, true)) != NULL) {
        b->tokens = b->tokens >= 1.0 ? b->tokens - 1.0 : 0.0;
        more = more && b->tokens >= 1.0;
    }
    if (l->global_rate > 0) {
        double g = global_level(l, now_ms);
        l->global_tokens = g >= 1.0 ? g - 1.0 : 0.0;
        more = more && l->global_tokens >= 1.0;
    }
    return more;
}

void auth_limiter_succeed(auth_limiter *l, const char *addr, const char *user, uint64_t now_ms)
{
    size_t user_len = strlen(user);
    if (user_len == 0 || user_len > AUTH_NAME_MAX) {
        return;
    }
    auth_key a, net;
    auth_key_parse(addr, &a, &net);
    trust *t = trust_find(l, &a, (const uint8_t *)user, user_len);
    if (!t) {
        size_t h = trust_home(l, &a, (const uint8_t *)user, user_len);
        for (size_t i = 0; i < AUTH_LIMITER_PROBE; i++) {
            trust *c = &l->pairs[(h + i) % AUTH_TRUST_SLOTS];
            if (!trust_live(c, now_ms)) {
                t = c;
                break;
            }
            if (!t || c->ok_ms < t->ok_ms) {
                t = c;
            }
        }
        memset(t, 0, sizeof *t);
        t->addr = a;
        t->user_len = (uint8_t)user_len;
        memcpy(t->user, user, user_len);
    }
    t->ok_ms = now_ms;
}

void auth_limiter_stats_get(const auth_limiter *l, uint64_t now_ms, auth_limiter_stats *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->refused, l->refused, sizeof out->refused);
    out->trusted = l->trusted;
    for (size_t i = 0; i < AUTH_LIMITER_SLOTS; i++) {
        const bucket *b = &l->slots[i];
        if (b->k.kind != KEY_FREE && level(l, b, now_ms) < 1.0) {
            if (b->k.kind == KEY_NET64) {
                out->limited_nets++;
            } else {
                out->limited_addrs++;
            }
        }
    }
    if (l->global_rate > 0) {
        double g = l->global_tokens;
        if (now_ms > l->global_ms) {
            g += (double)(now_ms - l->global_ms) * l->global_rate / 1000.0;
        }
        out->global_limited = g < 1.0;
    }
    for (size_t i = 0; i < AUTH_TRUST_SLOTS; i++) {
        out->trusted_pairs += trust_live(&l->pairs[i], now_ms);
    }
}

static uint64_t now_ms_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void auth_limiter_render(FILE *out, const auth_limiter *l)
{
    if (!l) {
        return;
    }
    auth_limiter_stats st;
    auth_limiter_stats_get(l, now_ms_mono(), &st);
    fprintf(out,
            "# HELP esd_auth_refused_total Hellos refused without a credential check because a "
            "failed-login limit was reached, by limit (address, IPv6 /64 network, global).\n"
            "# TYPE esd_auth_refused_total counter\n"
            "esd_auth_refused_total{limit=\"address\"} %llu\n"
            "esd_auth_refused_total{limit=\"network\"} %llu\n"
            "esd_auth_refused_total{limit=\"global\"} %llu\n",
            (unsigned long long)st.refused[0], (unsigned long long)st.refused[1],
            (unsigned long long)st.refused[2]);
    fprintf(out,
            "# HELP esd_auth_trusted_total Hellos checked although a limit was reached, because "
            "their user had logged in from the same address and not failed since.\n"
            "# TYPE esd_auth_trusted_total counter\n"
            "esd_auth_trusted_total %llu\n",
            (unsigned long long)st.trusted);
    fprintf(out,
            "# HELP esd_auth_limited_sources Addresses and IPv6 /64 networks whose failed-login "
            "budget is spent now.\n"
            "# TYPE esd_auth_limited_sources gauge\n"
            "esd_auth_limited_sources{kind=\"address\"} %u\n"
            "esd_auth_limited_sources{kind=\"network\"} %u\n",
            st.limited_addrs, st.limited_nets);
    fprintf(out,
            "# HELP esd_auth_global_limited 1 while the failed-login budget of all addresses "
            "together is spent.\n"
            "# TYPE esd_auth_global_limited gauge\n"
            "esd_auth_global_limited %d\n",
            st.global_limited ? 1 : 0);
    fprintf(out,
            "# HELP esd_auth_trusted_pairs (address, user) pairs with a recent successful login.\n"
            "# TYPE esd_auth_trusted_pairs gauge\n"
            "esd_auth_trusted_pairs %u\n",
            st.trusted_pairs);
}

/*
 * auth_limiter — how many failed hellos esd checks, per address, per IPv6
 * network and over all addresses. No I/O, no libevent; the caller passes
 * a monotonic clock in milliseconds, so tests drive time.
 *
 * Design notes
 * ------------
 * Guessing a token costs one failed hello. Failures are counted in token
 * buckets (a bucket holds up to `burst` failures and refills continuously):
 *
 *   address  each peer address (IPv4 or IPv6): burst = esd --auth-failures
 *            (default AUTH_FAIL_BURST), one more every AUTH_FAIL_REFILL_MS.
 *            Per address and not per connection, so reconnecting does not
 *            reset it. An IPv4-mapped IPv6 address counts as its IPv4
 *            address.
 *   network  each IPv6 /64 (one host usually owns a whole /64, so counting
 *            IPv6 addresses alone would give it 2^64 budgets): AUTH_NET_FACTOR
 *            times the address's burst and refill, as a /64 may hold a few
 *            hosts.
 *   global   all addresses together: esd --auth-failures-global per second,
 *            burst one second's worth (0 turns it off). This bounds what an
 *            attacker with many addresses or networks gets: without it, 200
 *            loopback addresses made 3,704 guesses a second.
 *
 * A hello whose address, network or the global bucket is empty is refused
 * without its credentials being checked, and its connection closed.
 *
 * Limits count failures, never successes, and a success must not be
 * blocked merely because others fail at the same address (a NAT, a shared
 * host): a hello that names a user who logged in successfully from this
 * exact address within AUTH_TRUST_MS, and has not failed from it since, is
 * checked even when a limit is reached ("trusted"). Nothing is given
 * away: a wrong token for that user ends the trust (and counts as a
 * failure), so an attacker at the same address who knows the user's name
 * gains at most one check per success of the real client. A hello without
 * a user name is never trusted (it could match any user). A client that has
 * never logged in from an address that is being flooded is refused like
 * the flood until the address's budget refills: nothing else tells it apart.
 *
 * Memory is fixed at creation: AUTH_LIMITER_SLOTS buckets and
 * AUTH_TRUST_SLOTS trusted pairs, in open-addressed tables probed
 * AUTH_LIMITER_PROBE slots from a hash with a random per-process seed (so
 * addresses cannot be chosen to collide). A new address takes a free slot,
 * else a bucket that is full again (it holds no information), else the one
 * touched longest ago; an attacker with very many addresses can only evict
 * buckets, which is what starting fresh gives it anyway, and the global
 * bucket bounds the total. A new trusted pair takes a free or expired slot,
 * else the oldest.
 *
 * Loop thread only: no locks.
 */
#ifndef ES_AUTH_LIMITER_H
#define ES_AUTH_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AUTH_FAIL_BURST     10
#define AUTH_FAIL_REFILL_MS 1000
#define AUTH_NET_FACTOR     4
#define AUTH_GLOBAL_RATE    50
#define AUTH_LIMITER_SLOTS  4096
#define AUTH_TRUST_SLOTS    1024
#define AUTH_LIMITER_PROBE  8
#define AUTH_TRUST_MS       (24ull * 3600u * 1000u)

/** A peer address as a fixed-size key (kind 0 = none). */
typedef struct auth_key {
    uint8_t kind;
    uint8_t b[16];
} auth_key;

/**
 * @brief The key of an address (as inet_ntop writes it) and, for IPv6, of
 *        its /64 (net->kind 0 otherwise). An IPv4-mapped IPv6 address is
 *        its IPv4 address; a string that is no address (e.g. "local") is
 *        one opaque key.
 */
void auth_key_parse(const char *addr_str, auth_key *addr, auth_key *net);

typedef struct auth_limits {
    uint32_t burst;       /* failures one address may make at once (>= 1) */
    uint32_t global_rate; /* failures per second over all addresses; 0 = no global limit */
} auth_limits;

typedef enum auth_verdict {
    AUTH_CHECK = 0,      /* no limit reached: check the credentials */
    AUTH_CHECK_TRUSTED,  /* a limit is reached, but the user logged in from here: check */
    AUTH_REFUSE_ADDRESS, /* the address's failure budget is spent: refuse unchecked */
    AUTH_REFUSE_NETWORK, /* the IPv6 /64's budget is spent */
    AUTH_REFUSE_GLOBAL,  /* the global budget is spent */
} auth_verdict;

/** @brief "address", "network" or "global" for a refusal; "" otherwise. Static. */
const char *auth_verdict_name(auth_verdict v);

typedef struct auth_limiter auth_limiter;

/**
 * @brief Create a limiter (fixed memory, see the design notes).
 * @return the limiter, or NULL when out of memory or the seed cannot be drawn.
 */
auth_limiter *auth_limiter_create(const auth_limits *lim);

/** @brief Free a limiter. Accepts NULL. */
void auth_limiter_destroy(auth_limiter *l);

/**
 * @brief May a hello from this address, naming this user, be checked now?
 * @param addr the peer's address without its port, as inet_ntop writes it
 *   (NUL-terminated; anything else, such as "local", is one opaque address)
 * @param user the user name the hello carries (not NUL-terminated; user_len
 *   0 = none)
 * @param now_ms a monotonic clock in milliseconds
 * @return AUTH_CHECK or AUTH_CHECK_TRUSTED: check the credentials, then call
 *   auth_limiter_fail or auth_limiter_succeed; AUTH_REFUSE_*: refuse without
 *   checking (counted in the metrics) and close the connection.
 */
auth_verdict auth_limiter_admit(auth_limiter *l, const char *addr, const uint8_t *user,
                                size_t user_len, uint64_t now_ms);

/**
 * @brief Record one failed hello: takes one failure from the address's,
 *        the network's and the global budget, and ends the trust of
 *        (address, user).
 * @return true when the address may try again at once; false when a budget
 *   is now spent (the caller closes the connection).
 */
bool auth_limiter_fail(auth_limiter *l, const char *addr, const uint8_t *user, size_t user_len,
                       uint64_t now_ms);

/**
 * @brief Record a successful hello of user (the name that matched) from
 *        addr: the pair is trusted for AUTH_TRUST_MS from now.
 */
void auth_limiter_succeed(auth_limiter *l, const char *addr, const char *user, uint64_t now_ms);

typedef struct auth_limiter_stats {
    uint64_t refused[3];    /* refusals unchecked: address, network, global */
    uint64_t trusted;       /* hellos checked through trust while a limit was reached */
    uint32_t limited_addrs; /* addresses whose budget is spent now */
    uint32_t limited_nets;  /* IPv6 /64 networks whose budget is spent now */
    bool global_limited;    /* the global budget is spent now */
    uint32_t trusted_pairs; /* (address, user) pairs trusted now */
} auth_limiter_stats;

/** @brief The limiter's figures at now_ms (a scan of its fixed tables). */
void auth_limiter_stats_get(const auth_limiter *l, uint64_t now_ms, auth_limiter_stats *out);

/**
 * @brief Write the limiter's Prometheus families (esd_auth_refused_total,
 *        esd_auth_trusted_total, esd_auth_limited_sources,
 *        esd_auth_global_limited, esd_auth_trusted_pairs). l NULL (no
 *        --auth-file) writes nothing.
 */
void auth_limiter_render(FILE *out, const auth_limiter *l);

#endif

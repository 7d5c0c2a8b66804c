/*
 * uuid — time-ordered random (version 7) event ids and their text form.
 *
 * Design notes: a millisecond timestamp followed by 74 bits from
 * getrandom(2), the kernel's CSPRNG, so that independent clients never
 * collide and the store's id index stays append-mostly; /dev/urandom is the fallback for
 * kernels without the system call. The random bytes are drawn 1 KiB at a
 * time into a per-thread buffer (one system call per ~100 ids instead of
 * one per id); a fork invalidates every buffer (pthread_atfork bumps a
 * generation), so parent and child never hand out the same bytes. Retries are idempotent only
 * because the id of an event is fixed once, before its first send (es_event.has_id).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "es/client.h"

static es_err fill_random(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)r;
    }
    if (got == n) {
        return ES_OK;
    }
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ES_ERR_IO;
    }
    got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    return got == n ? ES_OK : ES_ERR_IO;
}

#define RANDOM_POOL_BYTES 1024u

static atomic_uint fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* n random bytes from this thread's pool, refilled from the kernel. */
static es_err take_random(uint8_t *out, size_t n)
{
    static _Thread_local uint8_t pool[RANDOM_POOL_BYTES];
    static _Thread_local size_t left;
    static _Thread_local unsigned gen;
    pthread_once(&atfork_once, register_atfork);
    unsigned now_gen = atomic_load(&fork_generation);
    if (gen != now_gen) {
        left = 0; /* a forked child: never reuse the parent's bytes */
        gen = now_gen;
    }
    if (left < n) {
        es_err rv = fill_random(pool, sizeof pool);
        if (rv != ES_OK) {
            left = 0;
            return rv;
        }
        left = sizeof pool;
    }
    memcpy(out, pool + sizeof pool - left, n);
    memset(pool + sizeof pool - left, 0, n); /* hand each byte out once */
    left -= n;
    return ES_OK;
}

es_err es_uuid_generate(uint8_t out[ES_UUID_BYTES])
{
    es_err rv = take_random(out, ES_UUID_BYTES);
    if (rv != ES_OK) {
        return rv;
    }
    /* Version 7 (RFC 9562): 48 bits of Unix time in milliseconds first,
     * then 74 random bits. Ids made close in time sort close together, so
     * the store's event-id index grows at its right edge instead of
     * dirtying a random B-tree page per event. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int i = 0; i < 6; i++) {
        out[i] = (uint8_t)(ms >> (40 - 8 * i));
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x70); /* version 7 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* variant 10 (RFC 9562) */
    return ES_OK;
}

void es_uuid_format(const uint8_t id[ES_UUID_BYTES], char out[ES_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < ES_UUID_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 0x0f];
    }
    out[o] = '\0';
}

es_err es_uuid_parse(const char *s, uint8_t out[ES_UUID_BYTES])
{
    if (s == NULL || strlen(s) != ES_UUID_STRLEN) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    uint8_t tmp[ES_UUID_BYTES];
    size_t b = 0;
    for (size_t i = 0; i < ES_UUID_STRLEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return ES_ERR_INVALID_ARGUMENT;
            }
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        tmp[b++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    memcpy(out, tmp, ES_UUID_BYTES);
    return ES_OK;
}

/*
 * client — options, lifetime and the last-failure state of an es_client.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "frame.h"
#include "internal.h"

uint64_t cl_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t default_clock(void *ctx)
{
    (void)ctx;
    return cl_mono_us();
}

static void default_sleep(void *ctx, uint64_t us)
{
    (void)ctx;
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000u),
                          .tv_nsec = (long)(us % 1000000u) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void cl_set_hooks(es_client *c, cl_clock_fn clock, cl_sleep_fn sleep_fn, void *ctx)
{
    c->clock = clock ? clock : default_clock;
    c->sleep = sleep_fn ? sleep_fn : default_sleep;
    c->hook_ctx = ctx;
}

void cl_clear_conflicts(es_client *c)
{
    for (size_t i = 0; i < c->n_conflicts; i++) {
        cl_free((char *)c->conflicts[i].stream);
    }
    cl_free(c->conflicts);
    c->conflicts = NULL;
    c->n_conflicts = 0;
}

es_err cl_fail(es_client *c, es_err rv, const char *fmt, ...)
{
    char msg[CL_ERRMSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memcpy(c->errmsg, msg, sizeof(msg));
    cl_clear_conflicts(c);
    return rv;
}

void es_client_options_init(es_client_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->address = ES_DEFAULT_ADDRESS;
    opts->client_name = "libesclient";
    opts->connect_timeout_ms = 5000;
    opts->request_timeout_ms = 30000;
    opts->reconnect_attempts = 4;
    opts->backoff_initial_ms = 100;
    opts->backoff_max_ms = 5000;
    opts->breaker_threshold = 5;
    opts->breaker_reset_ms = 10000;
    opts->max_pending = 4096;
}

/* Split "HOST:PORT", "[V6]:PORT", "HOST" or a bare IPv6 literal. */
static es_err parse_address(const char *addr, char *host, size_t host_cap, char *port,
                            size_t port_cap)
{
    const char *h = addr;
    size_t hlen;
    const char *p = NULL;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        h = addr + 1;
        hlen = (size_t)(close - h);
        if (close[1] == ':') {
            p = close + 2;
        } else if (close[1] != '\0') {
            return ES_ERR_INVALID_ARGUMENT;
        }
    } else {
        const char *colon = strchr(addr, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            hlen = (size_t)(colon - addr);
            p = colon + 1;
        } else {
            hlen = strlen(addr); /* no port, or a bare IPv6 literal */
        }
    }
    if (hlen == 0 || hlen >= host_cap) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (p == NULL) {
        snprintf(port, port_cap, "%d", ES_DEFAULT_PORT);
        return ES_OK;
    }
    char *endp = NULL;
    errno = 0;
    unsigned long v = strtoul(p, &endp, 10);
    if (*p == '\0' || *endp != '\0' || errno != 0 || v == 0 || v > 65535) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    snprintf(port, port_cap, "%lu", v);
    return ES_OK;
}

static char *dup_opt(const char *s, bool *failed)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = cl_strndup(s, strlen(s));
    if (d == NULL) {
        *failed = true;
    }
    return d;
}

es_err es_client_create(const es_client_options *opts, es_client **out)
{
    if (out == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (opts == NULL || opts->address == NULL || (opts->token == NULL && opts->token_len > 0) ||
        opts->connect_timeout_ms == 0 || opts->request_timeout_ms == 0 ||
        opts->backoff_max_ms < opts->backoff_initial_ms ||
        opts->max_frame_bytes > FRAME_HARD_MAX_BODY || opts->token_len > CL_SMALL_REPLY_CAP) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_client *c = cl_calloc(1, sizeof(*c));
    if (c == NULL) {
        return ES_ERR_NO_MEMORY;
    }
    c->fd = -1;
    c->opts = *opts;
    c->sub_queue_cap = CL_SUB_QUEUE_BYTES;
    if (parse_address(opts->address, c->host, sizeof(c->host), c->port, sizeof(c->port)) != ES_OK) {
        cl_free(c);
        return ES_ERR_INVALID_ARGUMENT;
    }
    bool failed = false;
    c->address = dup_opt(opts->address, &failed);
    c->client_name = dup_opt(opts->client_name, &failed);
    c->user = dup_opt(opts->user, &failed);
    c->tls_ca_file = dup_opt(opts->tls_ca_file, &failed);
    c->tls_server_name = dup_opt(opts->tls_server_name, &failed);
    if (opts->token_len > 0) {
        c->token = cl_malloc(opts->token_len);
        if (c->token == NULL) {
            failed = true;
        } else {
            memcpy(c->token, opts->token, opts->token_len);
        }
    }
    if (failed) {
        es_client_destroy(c);
        return ES_ERR_NO_MEMORY;
    }
    /* The copies own the strings now; the caller's pointers are not kept. */
    c->opts.address = c->address;
    c->opts.client_name = c->client_name;
    c->opts.user = c->user;
    c->opts.token = c->token;
    c->opts.tls_ca_file = c->tls_ca_file;
    c->opts.tls_server_name = c->tls_server_name;
    if (c->opts.tls_ca_file != NULL) {
        c->opts.tls = true;
    }
    if (c->opts.reconnect_attempts == 0) {
        c->opts.reconnect_attempts = 1;
    }
    if (c->opts.max_pending == 0) {
        c->opts.max_pending = 4096;
    }
    breaker_init(&c->br, opts->breaker_threshold, (uint64_t)opts->breaker_reset_ms * 1000);
    uint8_t seed[ES_UUID_BYTES];
    if (es_uuid_generate(seed) == ES_OK) {
        memcpy(&c->rng, seed, sizeof(c->rng));
    } else {
        c->rng = cl_mono_us() ^ (uint64_t)(uintptr_t)c;
    }
    cl_set_hooks(c, NULL, NULL, NULL);
    *out = c;
    return ES_OK;
}

es_err es_client_connect(es_client *c)
{
    if (c == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    return cl_ensure(c);
}

void es_client_disconnect(es_client *c)
{
    if (c != NULL && c->fd >= 0) {
        conn_drop(c, ES_ERR_CLOSED, "connection closed by the application");
    }
}

void es_client_destroy(es_client *c)
{
    if (c == NULL) {
        return;
    }
    es_client_disconnect(c);
    cl_subs_detach(c);
    cl_groups_detach(c);
    for (size_t i = 0; i < c->pending.cap; i++) {
        if (c->pending.slots[i].id != 0) {
            cl_resp_free(c->pending.slots[i].resp);
        }
    }
    ptable_finish(&c->pending);
    cl_clear_conflicts(c);
    cl_free(c->spare);
    cl_free(c->address);
    cl_free(c->client_name);
    cl_free(c->user);
    cl_free(c->tls_ca_file);
    cl_free(c->tls_server_name);
    conn_tls_free(c);
    if (c->token != NULL) {
        /* Credentials do not linger in freed memory. */
        volatile uint8_t *t = c->token;
        for (size_t i = 0; i < c->opts.token_len; i++) {
            t[i] = 0;
        }
        cl_free(c->token);
    }
    cl_free(c);
}

bool es_client_connected(const es_client *c)
{
    return c != NULL && c->ready && c->fd >= 0;
}

const char *es_client_errmsg(const es_client *c)
{
    return c != NULL ? c->errmsg : "no client";
}

const es_conflict *es_client_conflicts(const es_client *c, size_t *n)
{
    if (c == NULL || c->n_conflicts == 0) {
        if (n != NULL) {
            *n = 0;
        }
        return NULL;
    }
    if (n != NULL) {
        *n = c->n_conflicts;
    }
    return c->conflicts;
}

es_err es_client_server_info(const es_client *c, es_server_info *info)
{
    if (c == NULL || info == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (!c->have_info) {
        return ES_ERR_NOT_FOUND;
    }
    *info = c->info;
    return ES_OK;
}

es_breaker_state es_client_breaker_state(const es_client *c)
{
    return c != NULL ? c->br.state : ES_BREAKER_CLOSED;
}

uint32_t es_client_in_flight(const es_client *c)
{
    return c != NULL ? c->in_flight : 0;
}

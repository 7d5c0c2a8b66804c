/*
 * Misuse without sockets: odd files given as the auth file, the config or
 * the TLS certificate (a FIFO must be refused, not waited on), NUL and
 * control bytes in the auth file, user names with NUL or control
 * characters in a hello, and the failed-login limiter (per address, per
 * IPv6 /64, global; trusted users keep logging in; fixed memory).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "auth_limiter.h"
#include "options.h"
#include "regfile.h"
#include "reqs.h"
#include "server_harness.h"
#include "tls.h"

#define T_ADMIN   "admin-token-0123456789"
#define T_BILLING "billing-token-abcdefgh"

static char dir[] = "/tmp/esd-misuse-test-XXXXXX";

static const char *path_of(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static const char *write_bytes(const char *name, const void *data, size_t len, mode_t mode)
{
    const char *path = path_of(name);
    unlink(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static const char *make_fifo(const char *name, mode_t mode)
{
    const char *path = path_of(name);
    unlink(path);
    assert_int_equal(mkfifo(path, mode), 0);
    return path;
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ odd files -- */

/* A FIFO with no writer: a blocking open would never return. */
static void test_regfile_refuses_odd_files(void **state)
{
    (void)state;
    char msg[512] = "";
    int fd = -1;
    assert_int_equal(regfile_open(make_fifo("fifo", 0600), "the thing", &fd, msg, sizeof msg),
                     ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(fd, -1);
    assert_non_null(strstr(msg, "a FIFO"));
    assert_non_null(strstr(msg, "the thing"));
    assert_int_equal(regfile_open(dir, "the thing", &fd, msg, sizeof msg), ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "a directory"));
    assert_int_equal(regfile_open("/dev/null", "the thing", &fd, msg, sizeof msg),
                     ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "a character device"));
    assert_int_equal(regfile_check(path_of("missing"), "the thing", msg, sizeof msg), ES_ERR_IO);
    assert_non_null(strstr(msg, strerror(ENOENT)));
    /* a regular file opens, and reads block normally (O_NONBLOCK is off) */
    const char *p = write_bytes("plain", "abc", 3, 0600);
    assert_int_equal(regfile_open(p, "the thing", &fd, msg, sizeof msg), ES_OK);
    char buf[8];
    assert_int_equal(read(fd, buf, sizeof buf), 3);
    close(fd);
}

static void test_auth_file_fifo(void **state)
{
    (void)state;
    auth *a = NULL;
    char msg[512] = "";
    assert_int_equal(auth_load(make_fifo("users-fifo", 0600), &a, msg, sizeof msg),
                     ES_ERR_PERMISSION_DENIED);
    assert_null(a);
    assert_non_null(strstr(msg, "a FIFO"));
    assert_int_equal(auth_load(dir, &a, msg, sizeof msg), ES_ERR_PERMISSION_DENIED);
    assert_non_null(strstr(msg, "a directory"));
}

static void expect_bad_line(const void *text, size_t len, unsigned line, const char *what)
{
    auth *a = (auth *)1;
    char msg[512] = "";
    es_err rv = auth_load(write_bytes("users", text, len, 0600), &a, msg, sizeof msg);
    if (rv != ES_ERR_INVALID_ARGUMENT) {
        fail_msg("got %s (%s), want INVALID_ARGUMENT", es_errname(rv), msg);
    }
    assert_null(a);
    char want[32];
    snprintf(want, sizeof want, "line %u", line);
    if (!strstr(msg, want) || !strstr(msg, what)) {
        fail_msg("message \"%s\" does not name %s and \"%s\"", msg, want, what);
    }
    assert_null(strstr(msg, T_BILLING)); /* never the secret */
}

static void test_auth_file_nul_and_controls(void **state)
{
    (void)state;
    /* a NUL inside a line: before, the file silently ended there */
    static const char nul_mid[] = "admin admin " T_ADMIN "\nbil\0ling write " T_BILLING "\n";
    expect_bad_line(nul_mid, sizeof nul_mid - 1, 2, "NUL");
    /* a NUL at the start of a line, then more users */
    static const char nul_start[] = "admin admin " T_ADMIN "\n\0\nbilling write " T_BILLING "\n";
    expect_bad_line(nul_start, sizeof nul_start - 1, 2, "NUL");
    /* a NUL in the token itself */
    static const char nul_tok[] = "# users\nbilling write billing-token\0abcdefgh\n";
    expect_bad_line(nul_tok, sizeof nul_tok - 1, 2, "NUL");
    /* control characters other than tab and CR */
    static const char ctl[] = "admin admin " T_ADMIN "\n\n\nbilling write billing\x01token\n";
    expect_bad_line(ctl, sizeof ctl - 1, 4, "control character");
    static const char del[] = "bill\x7fing write " T_BILLING "\n";
    expect_bad_line(del, sizeof del - 1, 1, "control character");
    static const char esc[] = "# \x1b[2J a comment is no exception\nbilling write " T_BILLING "\n";
    expect_bad_line(esc, sizeof esc - 1, 1, "control character");
    /* tabs and CRLF line ends stay valid, as does a last line without \n */
    static const char ok[] = "admin\tadmin\t" T_ADMIN "\r\nbilling write " T_BILLING;
    auth *a = NULL;
    char msg[512] = "";
    assert_int_equal(auth_load(write_bytes("users", ok, sizeof ok - 1, 0600), &a, msg, sizeof msg),
                     ES_OK);
    assert_int_equal(auth_count(a), 2);
    auth_destroy(a);
}

static void test_config_fifo(void **state)
{
    (void)state;
    const char *fifo = make_fifo("esd.conf", 0600);
    char *argv[] = {(char *)"esd", (char *)"--config", (char *)fifo, NULL};
    esd_options opts;
    char msg[512] = "";
    assert_int_equal(options_parse(3, argv, &opts, msg, sizeof msg), ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "a FIFO"));
    options_finish(&opts);
    char *argv2[] = {(char *)"esd", (char *)"--config", dir, NULL};
    assert_int_equal(options_parse(3, argv2, &opts, msg, sizeof msg), ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "a directory"));
    options_finish(&opts);
}

static void test_tls_files_fifo(void **state)
{
    (void)state;
    const char *fifo = make_fifo("cert.pem", 0600);
    char cert[256];
    snprintf(cert, sizeof cert, "%s", fifo);
    const char *key = write_bytes("key.pem", "not a key\n", 10, 0600);
    SSL_CTX *ctx = NULL;
    char msg[512] = "";
    assert_int_equal(tls_server_ctx(cert, key, &ctx, msg, sizeof msg), ES_ERR_INVALID_ARGUMENT);
    assert_null(ctx);
    assert_non_null(strstr(msg, "TLS certificate"));
    assert_non_null(strstr(msg, "a FIFO"));
    /* the key as a FIFO: the certificate must be a regular file to get there */
    const char *regular = write_bytes("cert2.pem", "x\n", 2, 0600);
    snprintf(cert, sizeof cert, "%s", regular);
    const char *kfifo = make_fifo("key-fifo.pem", 0600);
    assert_int_equal(tls_server_ctx(cert, kfifo, &ctx, msg, sizeof msg), ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "TLS key"));
}

/* --------------------------------------------------- hello user names -- */

typedef struct fixture {
    harness h;
    auth *a;
} fixture;

static int setup_auth(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || harness_init(&f->h, "/tmp") != 0) {
        free(f);
        return -1;
    }
    static const char users[] = "admin admin " T_ADMIN "\nbilling write " T_BILLING "\n";
    char msg[512];
    if (auth_load(write_bytes("users", users, sizeof users - 1, 0600), &f->a, msg, sizeof msg) !=
        ES_OK) {
        return -1;
    }
    f->h.srv.auth = f->a;
    f->h.srv.limiter = auth_limiter_create(&(auth_limits){.burst = 1000});
    snprintf(f->h.sess.peer_addr, sizeof f->h.sess.peer_addr, "127.0.0.1");
    *state = f;
    return 0;
}

static int teardown_auth(void **state)
{
    fixture *f = *state;
    auth_limiter_destroy(f->h.srv.limiter);
    harness_finish(&f->h);
    auth_destroy(f->a);
    free(f);
    return 0;
}

/* Request{id, hello{protocol_version 1, user, token}} with the user's raw bytes. */
static size_t hello_bytes(uint8_t *p, uint64_t id, const void *user, size_t user_len,
                          const char *token)
{
    uint8_t inner[512];
    size_t n = 0;
    inner[n++] = 0x08; /* protocol_version */
    inner[n++] = 1;
    inner[n++] = 0x1a; /* user */
    inner[n++] = (uint8_t)user_len;
    memcpy(inner + n, user, user_len);
    n += user_len;
    size_t tl = strlen(token);
    inner[n++] = 0x22; /* token */
    inner[n++] = (uint8_t)tl;
    memcpy(inner + n, token, tl);
    n += tl;
    size_t m = 0;
    p[m++] = 0x08; /* id */
    p[m++] = (uint8_t)id;
    p[m++] = 0x52; /* hello = 10, length-delimited */
    p[m++] = (uint8_t)n;
    memcpy(p + m, inner, n);
    return m + n;
}

static Es__V1__Response *next_reply(harness *h, uint64_t id)
{
    harness_drain(h);
    Es__V1__Response *r = harness_next(h);
    assert_non_null(r);
    assert_int_equal(r->id, id);
    return r;
}

static void expect_code(harness *h, uint64_t id, es_err code)
{
    Es__V1__Response *r = next_reply(h, id);
    es_err got = r->kind_case == ES__V1__RESPONSE__KIND_ERROR ? (es_err)r->error->code : ES_OK;
    if (got != code) {
        fail_msg("request %llu: expected %s, got %s", (unsigned long long)id, es_errname(code),
                 es_errname(got));
    }
    es__v1__response__free_unpacked(r, NULL);
}

static void test_hello_user_nul(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    uint8_t buf[600];
    /* "billing\0x" with billing's token: before, it logged in as billing */
    size_t n = hello_bytes(buf, 1, "billing\0x", 9, T_BILLING);
    assert_int_equal(harness_send_raw(h, buf, n), ES_OK);
    expect_code(h, 1, ES_ERR_INVALID_ARGUMENT);
    assert_false(h->sess.hello_done);
    /* a trailing NUL, and control characters */
    n = hello_bytes(buf, 2, "billing\0", 8, T_BILLING);
    assert_int_equal(harness_send_raw(h, buf, n), ES_OK);
    expect_code(h, 2, ES_ERR_INVALID_ARGUMENT);
    static const char *const ctl[] = {"bill\ning", "billing\r", "\x1b[31mbilling", "bil\tling",
                                      "billing\x7f"};
    for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++) {
        n = hello_bytes(buf, (uint64_t)(3 + i), ctl[i], strlen(ctl[i]), T_BILLING);
        assert_int_equal(harness_send_raw(h, buf, n), ES_OK);
        expect_code(h, 3 + i, ES_ERR_INVALID_ARGUMENT);
        assert_false(h->sess.hello_done);
    }
    /* requests are still refused, then a proper hello on the same connection works */
    sec_req r;
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_PING, 20)), ES_OK);
    expect_code(h, 20, ES_ERR_UNAUTHENTICATED);
    n = hello_bytes(buf, 21, "billing", 7, T_BILLING);
    assert_int_equal(harness_send_raw(h, buf, n), ES_OK);
    Es__V1__Response *resp = next_reply(h, 21);
    assert_int_equal(resp->kind_case, ES__V1__RESPONSE__KIND_HELLO);
    assert_string_equal(resp->hello->role, "write");
    es__v1__response__free_unpacked(resp, NULL);
    assert_string_equal(h->sess.user, "billing");
}

/* Protobuf merges a hello field sent twice: a NUL in either is refused. */
static void test_hello_user_nul_in_merged_hello(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    uint8_t a[300], b[300], both[600];
    size_t na = hello_bytes(a, 1, "billing\0x", 9, T_BILLING);
    size_t nb = hello_bytes(b, 1, "billing", 7, T_BILLING);
    memcpy(both, a, na);
    memcpy(both + na, b + 2, nb - 2); /* the second hello field, without a second id */
    assert_int_equal(harness_send_raw(h, both, na + nb - 2), ES_OK);
    expect_code(h, 1, ES_ERR_INVALID_ARGUMENT);
    assert_false(h->sess.hello_done);
}

/* Without an auth file the user is not used, but a malformed one is refused all the same. */
static void test_hello_user_nul_without_auth(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    h->srv.auth = NULL;
    uint8_t buf[300];
    size_t n = hello_bytes(buf, 1, "x\0y", 3, "t");
    assert_int_equal(harness_send_raw(h, buf, n), ES_OK);
    expect_code(h, 1, ES_ERR_INVALID_ARGUMENT);
    n = hello_bytes(buf, 2, "xy", 2, "t");
    assert_int_equal(harness_send_raw(h, buf, n), ES_OK);
    expect_code(h, 2, ES_OK);
}

/* ---------------------------------------------------------------- limiter -- */

#define T0 1000000u

static const uint8_t *U(const char *s)
{
    return (const uint8_t *)s;
}

static void test_limiter_per_address(void **state)
{
    (void)state;
    auth_limiter *l = auth_limiter_create(&(auth_limits){.burst = 3});
    assert_non_null(l);
    uint64_t t = T0;
    assert_int_equal(auth_limiter_admit(l, "10.0.0.1", NULL, 0, t), AUTH_CHECK);
    assert_true(auth_limiter_fail(l, "10.0.0.1", NULL, 0, t));
    assert_true(auth_limiter_fail(l, "10.0.0.1", NULL, 0, t));
    assert_false(auth_limiter_fail(l, "10.0.0.1", NULL, 0, t)); /* the third empties it */
    assert_int_equal(auth_limiter_admit(l, "10.0.0.1", NULL, 0, t), AUTH_REFUSE_ADDRESS);
    assert_int_equal(auth_limiter_admit(l, "10.0.0.1", U("admin"), 5, t + AUTH_FAIL_REFILL_MS - 1),
                     AUTH_REFUSE_ADDRESS);
    /* another address is not affected; an IPv4-mapped IPv6 address is the IPv4 one */
    assert_int_equal(auth_limiter_admit(l, "10.0.0.2", NULL, 0, t), AUTH_CHECK);
    assert_int_equal(auth_limiter_admit(l, "::ffff:10.0.0.1", NULL, 0, t), AUTH_REFUSE_ADDRESS);
    /* one refill: one more try */
    assert_int_equal(auth_limiter_admit(l, "10.0.0.1", NULL, 0, t + AUTH_FAIL_REFILL_MS),
                     AUTH_CHECK);
    assert_false(auth_limiter_fail(l, "10.0.0.1", NULL, 0, t + AUTH_FAIL_REFILL_MS));
    assert_int_equal(auth_limiter_admit(l, "10.0.0.1", NULL, 0, t + AUTH_FAIL_REFILL_MS),
                     AUTH_REFUSE_ADDRESS);
    auth_limiter_stats st;
    auth_limiter_stats_get(l, t + AUTH_FAIL_REFILL_MS, &st);
    assert_int_equal(st.refused[0], 4);
    assert_int_equal(st.limited_addrs, 1);
    assert_int_equal(st.limited_nets, 0);
    auth_limiter_destroy(l);
    auth_limiter_destroy(NULL);
}

/* One host owns a whole /64: its addresses share the network's budget. */
static void test_limiter_ipv6_network(void **state)
{
    (void)state;
    auth_limiter *l = auth_limiter_create(&(auth_limits){.burst = 2});
    uint64_t t = T0;
    char addr[64];
    unsigned fails = 0;
    for (unsigned i = 1; fails < 2 * AUTH_NET_FACTOR; i++) {
        snprintf(addr, sizeof addr, "2001:db8:0:7::%x", i);
        assert_int_equal(auth_limiter_admit(l, addr, NULL, 0, t), AUTH_CHECK);
        auth_limiter_fail(l, addr, NULL, 0, t);
        fails++;
    }
    /* a fresh address of that /64 is refused for the network ... */
    assert_int_equal(auth_limiter_admit(l, "2001:db8:0:7:ffff::1", NULL, 0, t),
                     AUTH_REFUSE_NETWORK);
    /* ... a neighbouring /64 is not */
    assert_int_equal(auth_limiter_admit(l, "2001:db8:0:8::1", NULL, 0, t), AUTH_CHECK);
    /* and one address alone spends its own budget first */
    assert_true(auth_limiter_fail(l, "2001:db8:0:9::1", NULL, 0, t));
    assert_false(auth_limiter_fail(l, "2001:db8:0:9::1", NULL, 0, t));
    assert_int_equal(auth_limiter_admit(l, "2001:db8:0:9::1", NULL, 0, t), AUTH_REFUSE_ADDRESS);
    assert_int_equal(auth_limiter_admit(l, "2001:db8:0:9::2", NULL, 0, t), AUTH_CHECK);
    auth_limiter_stats st;
    auth_limiter_stats_get(l, t, &st);
    assert_int_equal(st.limited_nets, 1);
    assert_int_equal(st.refused[1], 1);
    /* the network refills AUTH_NET_FACTOR per second */
    assert_int_equal(auth_limiter_admit(l, "2001:db8:0:7:ffff::1", NULL, 0,
                                        t + AUTH_FAIL_REFILL_MS / AUTH_NET_FACTOR),
                     AUTH_CHECK);
    auth_limiter_destroy(l);
}

/* Many addresses: the global budget bounds them all together. */
static void test_limiter_global(void **state)
{
    (void)state;
    auth_limiter *l = auth_limiter_create(&(auth_limits){.burst = 10, .global_rate = 5});
    uint64_t t = T0;
    char addr[48];
    for (unsigned i = 0; i < 5; i++) {
        snprintf(addr, sizeof addr, "10.1.0.%u", i);
        assert_int_equal(auth_limiter_admit(l, addr, NULL, 0, t), AUTH_CHECK);
        assert_int_equal(auth_limiter_fail(l, addr, NULL, 0, t), i < 4);
    }
    assert_int_equal(auth_limiter_admit(l, "10.1.0.99", NULL, 0, t), AUTH_REFUSE_GLOBAL);
    auth_limiter_stats st;
    auth_limiter_stats_get(l, t, &st);
    assert_true(st.global_limited);
    assert_int_equal(st.refused[2], 1);
    /* 1/5 s later: one more check for anyone */
    assert_int_equal(auth_limiter_admit(l, "10.1.0.99", NULL, 0, t + 200), AUTH_CHECK);
    /* without a global limit, the same is never refused */
    auth_limiter *free_l = auth_limiter_create(&(auth_limits){.burst = 10});
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(addr, sizeof addr, "10.2.%u.%u", i / 256, i % 256);
        assert_int_equal(auth_limiter_admit(free_l, addr, NULL, 0, t), AUTH_CHECK);
        auth_limiter_fail(free_l, addr, NULL, 0, t);
    }
    auth_limiter_destroy(free_l);
    auth_limiter_destroy(l);
}

/* Failures at an address do not lock out a user who logged in from it. */
static void test_limiter_trusted(void **state)
{
    (void)state;
    auth_limiter *l = auth_limiter_create(&(auth_limits){.burst = 2, .global_rate = 3});
    uint64_t t = T0;
    const char *a = "192.0.2.7";
    assert_int_equal(auth_limiter_admit(l, a, U("billing"), 7, t), AUTH_CHECK);
    auth_limiter_succeed(l, a, "billing", t);
    /* a flood of failures from the same address, naming other users or none */
    auth_limiter_fail(l, a, U("mallory"), 7, t);
    auth_limiter_fail(l, a, NULL, 0, t);
    assert_int_equal(auth_limiter_admit(l, a, U("mallory"), 7, t), AUTH_REFUSE_ADDRESS);
    assert_int_equal(auth_limiter_admit(l, a, NULL, 0, t), AUTH_REFUSE_ADDRESS);
    /* billing is still checked, again and again */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(auth_limiter_admit(l, a, U("billing"), 7, t + (uint64_t)i),
                         AUTH_CHECK_TRUSTED);
        auth_limiter_succeed(l, a, "billing", t + (uint64_t)i);
    }
    /* the global budget spent by other addresses does not stop it either */
    auth_limiter_fail(l, "192.0.2.8", NULL, 0, t + 10);
    auth_limiter_fail(l, "192.0.2.9", NULL, 0, t + 10);
    assert_int_equal(auth_limiter_admit(l, "192.0.2.10", NULL, 0, t + 10), AUTH_REFUSE_GLOBAL);
    assert_int_equal(auth_limiter_admit(l, a, U("billing"), 7, t + 10), AUTH_CHECK_TRUSTED);
    /* trust is per address: the same user elsewhere is limited like anyone */
    assert_int_equal(auth_limiter_admit(l, "192.0.2.10", U("billing"), 7, t + 10),
                     AUTH_REFUSE_GLOBAL);
    /* a prefix or an extension of the name is another name */
    assert_int_equal(auth_limiter_admit(l, a, U("billin"), 6, t + 10), AUTH_REFUSE_ADDRESS);
    assert_int_equal(auth_limiter_admit(l, a, U("billing2"), 8, t + 10), AUTH_REFUSE_ADDRESS);
    /* a wrong token naming billing ends the trust: no free guesses */
    assert_false(auth_limiter_fail(l, a, U("billing"), 7, t + 10));
    assert_int_equal(auth_limiter_admit(l, a, U("billing"), 7, t + 10), AUTH_REFUSE_ADDRESS);
    auth_limiter_stats st;
    auth_limiter_stats_get(l, t + 10, &st);
    assert_int_equal(st.trusted, 11);
    assert_int_equal(st.trusted_pairs, 0);
    /* trust expires */
    auth_limiter_succeed(l, "192.0.2.20", "admin", t);
    auth_limiter_fail(l, "192.0.2.20", NULL, 0, t + AUTH_TRUST_MS);
    auth_limiter_fail(l, "192.0.2.20", NULL, 0, t + AUTH_TRUST_MS);
    assert_int_equal(auth_limiter_admit(l, "192.0.2.20", U("admin"), 5, t + AUTH_TRUST_MS),
                     AUTH_REFUSE_ADDRESS);
    auth_limiter_destroy(l);
}

/* Memory is fixed: a flood of addresses evicts buckets, each new address
 * starts with a full budget, and the tables never grow. */
static void test_limiter_bounded(void **state)
{
    (void)state;
    auth_limiter *l = auth_limiter_create(&(auth_limits){.burst = 3});
    uint64_t t = T0;
    char addr[64];
    for (unsigned i = 0; i < 3 * AUTH_LIMITER_SLOTS; i++) {
        snprintf(addr, sizeof addr, "192.168.%u.%u", i / 256, i % 256);
        assert_int_equal(auth_limiter_admit(l, addr, NULL, 0, t), AUTH_CHECK);
        auth_limiter_fail(l, addr, NULL, 0, t);
        snprintf(addr, sizeof addr, "2001:db8:%x::1", i);
        auth_limiter_succeed(l, addr, "admin", t);
    }
    auth_limiter_stats st;
    auth_limiter_stats_get(l, t, &st);
    assert_true(st.trusted_pairs <= AUTH_TRUST_SLOTS);
    assert_int_equal(auth_limiter_admit(l, "172.16.0.1", NULL, 0, t), AUTH_CHECK);
    auth_limiter_destroy(l);
}

static void test_limiter_render(void **state)
{
    (void)state;
    auth_limiter *l = auth_limiter_create(&(auth_limits){.burst = 1, .global_rate = 100});
    auth_limiter_fail(l, "10.9.9.9", NULL, 0, T0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    auth_limiter_render(f, l);
    auth_limiter_render(f, NULL);
    fclose(f);
    static const char *const families[] = {"esd_auth_refused_total{limit=\"address\"}",
                                           "esd_auth_refused_total{limit=\"network\"}",
                                           "esd_auth_refused_total{limit=\"global\"}",
                                           "esd_auth_trusted_total",
                                           "esd_auth_limited_sources{kind=\"address\"}",
                                           "esd_auth_global_limited",
                                           "esd_auth_trusted_pairs"};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (!strstr(text, families[i])) {
            fail_msg("no %s in:\n%s", families[i], text);
        }
    }
    free(text);
    auth_limiter_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regfile_refuses_odd_files),
        cmocka_unit_test(test_auth_file_fifo),
        cmocka_unit_test(test_auth_file_nul_and_controls),
        cmocka_unit_test(test_config_fifo),
        cmocka_unit_test(test_tls_files_fifo),
        cmocka_unit_test_setup_teardown(test_hello_user_nul, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_hello_user_nul_in_merged_hello, setup_auth,
                                        teardown_auth),
        cmocka_unit_test_setup_teardown(test_hello_user_nul_without_auth, setup_auth,
                                        teardown_auth),
        cmocka_unit_test(test_limiter_per_address),
        cmocka_unit_test(test_limiter_ipv6_network),
        cmocka_unit_test(test_limiter_global),
        cmocka_unit_test(test_limiter_trusted),
        cmocka_unit_test(test_limiter_bounded),
        cmocka_unit_test(test_limiter_render),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

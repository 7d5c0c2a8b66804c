/*
 * Authentication and roles without sockets (the unit half of auth-tcp): the
 * credentials file and its refusals, the credential check, the handler's
 * failure limit (the limiter itself: test_misuse.c), and the handler's rules on a real store behind
 * one in-memory session — every request kind before the hello and after a refused one, every write
 * kind with read-only credentials, each role's hello.
 */
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
#include "reqs.h"
#include "server_harness.h"

#define T_ADMIN  "admin-token-0123456789"
#define T_WRITER "writer-token-abcdef"
#define T_READER "reader-token-zyxwvu"
/* sha256("writer-token-abcdef"), computed in setup to keep one truth */

static char dir[] = "/tmp/esd-auth-test-XXXXXX";

static void hexdigest(const char *token, char out[65])
{
    uint8_t d[32];
    assert_int_equal(auth_sha256(token, strlen(token), d), ES_OK);
    for (int i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

/* Write a file with the given mode; returns its path (static buffer). */
static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static const char *good_file(void)
{
    static char text[1024];
    char hex[65];
    hexdigest(T_WRITER, hex);
    snprintf(text, sizeof text,
             "# esd users\n"
             "\n"
             "admin   admin  " T_ADMIN "   # the operator\n"
             "\twriter\twrite\tsha256:%s\n"
             "reader read " T_READER "\r\n"
             "   # an indented comment\n",
             hex);
    return write_file("users", text, 0600);
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

/* ------------------------------------------------------------------ file -- */

static void test_load_good(void **state)
{
    (void)state;
    auth *a = NULL;
    char msg[512] = "";
    assert_int_equal(auth_load(good_file(), &a, msg, sizeof msg), ES_OK);
    assert_int_equal(auth_count(a), 3);
    auth_role role;
    char name[AUTH_NAME_MAX + 1];
    /* user + token */
    assert_true(auth_check(a, (const uint8_t *)"admin", 5, (const uint8_t *)T_ADMIN,
                           strlen(T_ADMIN), &role, name));
    assert_int_equal(role, AUTH_ROLE_ADMIN);
    assert_string_equal(name, "admin");
    /* a sha256: entry */
    assert_true(auth_check(a, (const uint8_t *)"writer", 6, (const uint8_t *)T_WRITER,
                           strlen(T_WRITER), &role, name));
    assert_int_equal(role, AUTH_ROLE_WRITE);
    /* token alone (no user name) */
    assert_true(auth_check(a, NULL, 0, (const uint8_t *)T_READER, strlen(T_READER), &role, name));
    assert_int_equal(role, AUTH_ROLE_READ);
    assert_string_equal(name, "reader");
    /* wrong token, right user */
    assert_false(auth_check(a, (const uint8_t *)"admin", 5, (const uint8_t *)T_READER,
                            strlen(T_READER), &role, name));
    assert_int_equal(role, AUTH_ROLE_NONE);
    assert_string_equal(name, "");
    /* right token, other user's name */
    assert_false(auth_check(a, (const uint8_t *)"reader", 6, (const uint8_t *)T_ADMIN,
                            strlen(T_ADMIN), &role, name));
    /* unknown user */
    assert_false(auth_check(a, (const uint8_t *)"mallory", 7, (const uint8_t *)T_ADMIN,
                            strlen(T_ADMIN), &role, name));
    /* a name that is a prefix of a real one, and one longer than any */
    assert_false(auth_check(a, (const uint8_t *)"admi", 4, (const uint8_t *)T_ADMIN,
                            strlen(T_ADMIN), &role, name));
    char longname[200];
    memset(longname, 'a', sizeof longname);
    memcpy(longname, "admin", 5);
    assert_false(auth_check(a, (const uint8_t *)longname, sizeof longname, (const uint8_t *)T_ADMIN,
                            strlen(T_ADMIN), &role, name));
    /* empty token, with and without a user */
    assert_false(auth_check(a, (const uint8_t *)"admin", 5, NULL, 0, &role, name));
    assert_false(auth_check(a, NULL, 0, NULL, 0, &role, name));
    /* the digest itself is not the token */
    char hex[65];
    hexdigest(T_WRITER, hex);
    char sha[80];
    snprintf(sha, sizeof sha, "sha256:%s", hex);
    assert_false(auth_check(a, NULL, 0, (const uint8_t *)sha, strlen(sha), &role, name));
    assert_false(auth_check(a, NULL, 0, (const uint8_t *)hex, strlen(hex), &role, name));
    /* a token with the right prefix and a byte more */
    assert_false(
        auth_check(a, NULL, 0, (const uint8_t *)T_ADMIN "x", strlen(T_ADMIN) + 1, &role, name));
    auth_destroy(a);
    auth_destroy(NULL);
}

/* Each refusal, with its code; the message never contains the secret. */
static void expect_refusal(const char *text, mode_t mode, es_err want, const char *secret)
{
    auth *a = (auth *)1;
    char msg[512] = "";
    es_err rv = auth_load(write_file("bad", text, mode), &a, msg, sizeof msg);
    if (rv != want) {
        fail_msg("file \"%s\" mode %o: got %s (%s), want %s", text, (unsigned)mode, es_errname(rv),
                 msg, es_errname(want));
    }
    assert_null(a);
    assert_true(msg[0] != '\0');
    if (secret) {
        assert_null(strstr(msg, secret));
    }
}

static void test_load_refusals(void **state)
{
    (void)state;
    const char *ok = "u read " T_READER "\n";
    expect_refusal(ok, 0640, ES_ERR_PERMISSION_DENIED, T_READER);
    expect_refusal(ok, 0604, ES_ERR_PERMISSION_DENIED, T_READER);
    expect_refusal(ok, 0644, ES_ERR_PERMISSION_DENIED, T_READER);
    expect_refusal(ok, 0620, ES_ERR_PERMISSION_DENIED, T_READER);
    expect_refusal(ok, 0601, ES_ERR_PERMISSION_DENIED, T_READER);
    expect_refusal("", 0600, ES_ERR_INVALID_ARGUMENT, NULL);
    expect_refusal("# nobody\n\n", 0600, ES_ERR_INVALID_ARGUMENT, NULL);
    expect_refusal("u reader " T_READER "\n", 0600, ES_ERR_INVALID_ARGUMENT, T_READER);
    expect_refusal("u read\n", 0600, ES_ERR_INVALID_ARGUMENT, NULL);
    expect_refusal("u read " T_READER " extra\n", 0600, ES_ERR_INVALID_ARGUMENT, T_READER);
    expect_refusal("u:x read " T_READER "\n", 0600, ES_ERR_INVALID_ARGUMENT, T_READER);
    expect_refusal("u read sha256:abcd\n", 0600, ES_ERR_INVALID_ARGUMENT, NULL);
    expect_refusal("u read sha256:"
                   "zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n",
                   0600, ES_ERR_INVALID_ARGUMENT, NULL);
    expect_refusal("u read " T_READER "\nu write " T_WRITER "\n", 0600, ES_ERR_INVALID_ARGUMENT,
                   T_WRITER);
    expect_refusal("u read " T_READER "\nv write " T_READER "\n", 0600, ES_ERR_INVALID_ARGUMENT,
                   T_READER);
    /* the same token once literally and once as its digest */
    char text[256], hex[65];
    hexdigest(T_READER, hex);
    snprintf(text, sizeof text, "u read " T_READER "\nv admin sha256:%s\n", hex);
    expect_refusal(text, 0600, ES_ERR_INVALID_ARGUMENT, T_READER);
    /* a line too long, a token too long */
    char big[6000];
    memset(big, 'x', sizeof big);
    memcpy(big, "u read ", 7);
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    expect_refusal(big, 0600, ES_ERR_INVALID_ARGUMENT, NULL);
    big[2000] = '\n';
    big[2001] = '\0';
    expect_refusal(big, 0600, ES_ERR_INVALID_ARGUMENT, NULL);
    /* not a regular file, and no file at all */
    auth *a = NULL;
    char msg[512];
    assert_int_equal(auth_load(dir, &a, msg, sizeof msg), ES_ERR_PERMISSION_DENIED);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    assert_int_equal(auth_load(missing, &a, msg, sizeof msg), ES_ERR_IO);
    assert_null(a);
    /* 0400 is fine */
    assert_int_equal(auth_load(write_file("ro", ok, 0400), &a, msg, sizeof msg), ES_OK);
    auth_destroy(a);
}

/* --------------------------------------------------------------- handler -- */

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
    char msg[512];
    if (auth_load(good_file(), &f->a, msg, sizeof msg) != ES_OK) {
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

static Es__V1__Response *next_reply(harness *h, uint64_t id)
{
    harness_drain(h);
    Es__V1__Response *r = harness_next(h);
    assert_non_null(r);
    assert_int_equal(r->id, id);
    return r;
}

static void expect_error(harness *h, uint64_t id, es_err code)
{
    Es__V1__Response *r = next_reply(h, id);
    if (r->kind_case != ES__V1__RESPONSE__KIND_ERROR) {
        fail_msg("request %llu: expected %s, got reply kind %d", (unsigned long long)id,
                 es_errname(code), r->kind_case);
    }
    if ((es_err)r->error->code != code) {
        fail_msg("request %llu: expected %s, got %s (%s)", (unsigned long long)id, es_errname(code),
                 es_errname((es_err)r->error->code), r->error->message);
    }
    es__v1__response__free_unpacked(r, NULL);
}

static void expect_ok(harness *h, uint64_t id)
{
    Es__V1__Response *r = next_reply(h, id);
    if (r->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
        fail_msg("request %llu: error %s (%s)", (unsigned long long)id,
                 es_errname((es_err)r->error->code), r->error->message);
    }
    es__v1__response__free_unpacked(r, NULL);
}

static void hello_as(harness *h, uint64_t id, const char *user, const char *token,
                     const char *want_role)
{
    sec_req r;
    assert_int_equal(harness_send(h, sec_hello(&r, id, user, token)), ES_OK);
    Es__V1__Response *resp = next_reply(h, id);
    if (resp->kind_case != ES__V1__RESPONSE__KIND_HELLO) {
        fail_msg("hello as %s: %s", user ? user : "(token only)",
                 resp->kind_case == ES__V1__RESPONSE__KIND_ERROR ? resp->error->message : "?");
    }
    assert_string_equal(resp->hello->role, want_role);
    es__v1__response__free_unpacked(resp, NULL);
}

/* Every kind, and a request with no kind, before any hello. */
static void test_nothing_before_hello(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    sec_req r;
    uint64_t id = 100;
    for (size_t i = 0; i < sec_n_kinds; i++, id++) {
        assert_int_equal(harness_send(h, sec_request(&r, sec_kinds[i], id)), ES_OK);
        expect_error(h, id, ES_ERR_HANDSHAKE_REQUIRED);
    }
    const uint8_t only_id[] = {0x08, 0x07};
    assert_int_equal(harness_send_raw(h, only_id, sizeof only_id), ES_OK);
    expect_error(h, 7, ES_ERR_HANDSHAKE_REQUIRED);
    assert_int_equal(h->sess.n_subs, 0);
    assert_int_equal(store_head(h->srv.st), 0);
    /* and then the hello works */
    hello_as(h, 1, "admin", T_ADMIN, "admin");
}

/* Wrong and empty credentials: refused, and nothing served afterwards
 * until a hello succeeds. */
static void test_refused_hello(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    sec_req r;
    const char *bad[][2] = {
        {"admin", T_READER},  {"admin", "wrong"}, {"admin", NULL},     {NULL, NULL}, {"", ""},
        {"mallory", T_ADMIN}, {NULL, "nope"},     {"reader", T_ADMIN},
    };
    uint64_t id = 10;
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        assert_int_equal(harness_send(h, sec_hello(&r, id, bad[b][0], bad[b][1])), ES_OK);
        expect_error(h, id, ES_ERR_UNAUTHENTICATED);
        id++;
        for (size_t i = 0; i < sec_n_kinds; i++, id++) {
            assert_int_equal(harness_send(h, sec_request(&r, sec_kinds[i], id)), ES_OK);
            expect_error(h, id, ES_ERR_UNAUTHENTICATED);
        }
    }
    assert_int_equal(store_head(h->srv.st), 0);
    assert_int_equal(h->srv.counters.auth_failures, sizeof bad / sizeof bad[0]);
    hello_as(h, 1, NULL, T_WRITER, "write");
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_APPEND, 2)), ES_OK);
    expect_ok(h, 2);
    assert_int_equal(store_head(h->srv.st), 1);
}

/* Read-only credentials: every write refused, every read served. */
static void test_read_role(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    sec_req r;
    hello_as(h, 1, "reader", T_READER, "read");
    uint64_t id = 10;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sec_n_kinds; i++, id++) {
            Es__V1__Request__KindCase k = sec_kinds[i];
            assert_int_equal(harness_send(h, sec_request(&r, k, id)), ES_OK);
            harness_drain(h);
            harness_deliver(h);
            if (sec_kind_writes(k)) {
                expect_error(h, id, ES_ERR_PERMISSION_DENIED);
                continue;
            }
            Es__V1__Response *resp = next_reply(h, id);
            /* served: a result, or a typed error that is not about rights */
            if (resp->kind_case == ES__V1__RESPONSE__KIND_ERROR) {
                es_err code = (es_err)resp->error->code;
                assert_true(code != ES_ERR_PERMISSION_DENIED && code != ES_ERR_UNAUTHENTICATED &&
                            code != ES_ERR_HANDSHAKE_REQUIRED);
            }
            es__v1__response__free_unpacked(resp, NULL);
            harness_clear(h); /* subscription pushes */
        }
    }
    assert_int_equal(store_head(h->srv.st), 0);
    size_t writing = 0;
    for (size_t i = 0; i < sec_n_kinds; i++) {
        writing += sec_kind_writes(sec_kinds[i]);
    }
    assert_int_equal(writing, 8);
    assert_int_equal(h->srv.counters.permission_denied, 50 * writing);
}

static void test_write_and_admin_roles(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    sec_req r;
    hello_as(h, 1, "writer", T_WRITER, "write");
    uint64_t id = 10;
    for (size_t i = 0; i < sec_n_kinds; i++, id++) {
        assert_int_equal(harness_send(h, sec_request(&r, sec_kinds[i], id)), ES_OK);
        harness_drain(h);
        Es__V1__Response *resp = next_reply(h, id);
        /* The writer may do all but tombstone and erase (admin only); the delete
         * (wire order: after the writes) succeeds. */
        bool denied = resp->kind_case == ES__V1__RESPONSE__KIND_ERROR &&
                      resp->error->code == ES__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
        assert_int_equal(denied, sec_kind_admin(sec_kinds[i]));
        if (sec_kinds[i] == ES__V1__REQUEST__KIND_DELETE_STREAM) {
            assert_int_equal(resp->kind_case, ES__V1__RESPONSE__KIND_STREAM_DELETED);
        }
        es__v1__response__free_unpacked(resp, NULL);
        harness_clear(h);
    }
    /* The append and the transaction, and the $lifecycle records of the
     * metadata set and the delete (the tombstone and the two erasures were
     * refused). */
    assert_int_equal(store_head(h->srv.st), 4);
    assert_int_equal(h->srv.counters.permission_denied, 3);
}

/* The admin may tombstone; nothing can write the stream afterwards. */
static void test_admin_may_tombstone(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    sec_req r;
    hello_as(h, 100, "admin", T_ADMIN, "admin");
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_APPEND, 103)), ES_OK);
    harness_drain(h);
    es__v1__response__free_unpacked(next_reply(h, 103), NULL);
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_TOMBSTONE_STREAM, 101)),
                     ES_OK);
    harness_drain(h);
    Es__V1__Response *resp = next_reply(h, 101);
    assert_int_equal(resp->kind_case, ES__V1__RESPONSE__KIND_STREAM_DELETED);
    es__v1__response__free_unpacked(resp, NULL);
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_APPEND, 102)), ES_OK);
    harness_drain(h);
    expect_error(h, 102, ES_ERR_STREAM_DELETED);
}

/* The admin may erase a stream; it then reads as ERASED. An erasure
 * without its confirmation is refused, an unknown subject is NOT_FOUND. */
static void test_admin_may_erase(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    sec_req r;
    hello_as(h, 200, "admin", T_ADMIN, "admin");
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_APPEND, 201)), ES_OK);
    harness_drain(h);
    es__v1__response__free_unpacked(next_reply(h, 201), NULL);
    Es__V1__Request *q = sec_request(&r, ES__V1__REQUEST__KIND_ERASE_STREAM, 202);
    q->erase_stream->force = false; /* no confirmation */
    assert_int_equal(harness_send(h, q), ES_OK);
    harness_drain(h);
    expect_error(h, 202, ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_ERASE_STREAM, 203)),
                     ES_OK);
    harness_drain(h);
    Es__V1__Response *resp = next_reply(h, 203);
    assert_int_equal(resp->kind_case, ES__V1__RESPONSE__KIND_ERASED);
    assert_false(resp->erased->already);
    assert_int_equal(resp->erased->streams, 1);
    es__v1__response__free_unpacked(resp, NULL);
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_READ_STREAM, 204)),
                     ES_OK);
    harness_drain(h);
    expect_error(h, 204, ES_ERR_ERASED);
    assert_int_equal(harness_send(h, sec_request(&r, ES__V1__REQUEST__KIND_ERASE_SUBJECT, 205)),
                     ES_OK);
    harness_drain(h);
    expect_error(h, 205, ES_ERR_NOT_FOUND);
}

/* The failure budget: at the limit the handler asks for a close, and a
 * correct hello from that address is refused until the bucket refills. */
static void test_failure_limit(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    auth_limiter_destroy(h->srv.limiter);
    h->srv.limiter = auth_limiter_create(&(auth_limits){.burst = 4});
    sec_req r;
    for (uint64_t id = 1; id <= 3; id++) {
        assert_int_equal(harness_send(h, sec_hello(&r, id, "admin", "wrong")), ES_OK);
        expect_error(h, id, ES_ERR_UNAUTHENTICATED);
    }
    assert_int_equal(harness_send(h, sec_hello(&r, 4, "admin", "wrong")), ES_ERR_CLOSED);
    expect_error(h, 4, ES_ERR_UNAUTHENTICATED);
    /* a new connection from the same address, with the right token */
    assert_int_equal(harness_send(h, sec_hello(&r, 5, "admin", T_ADMIN)), ES_ERR_CLOSED);
    expect_error(h, 5, ES_ERR_UNAUTHENTICATED);
    assert_false(h->sess.hello_done);
    /* another address is served */
    snprintf(h->sess.peer_addr, sizeof h->sess.peer_addr, "127.0.0.2");
    hello_as(h, 6, "admin", T_ADMIN, "admin");
}

/* Without an auth file every connection is admin, credentials or not. */
static void test_no_auth_is_admin(void **state)
{
    fixture *f = *state;
    harness *h = &f->h;
    h->srv.auth = NULL;
    hello_as(h, 1, "whoever", "whatever", "admin");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_good),
        cmocka_unit_test(test_load_refusals),
        cmocka_unit_test_setup_teardown(test_nothing_before_hello, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_refused_hello, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_read_role, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_write_and_admin_roles, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_admin_may_tombstone, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_admin_may_erase, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_failure_limit, setup_auth, teardown_auth),
        cmocka_unit_test_setup_teardown(test_no_auth_is_admin, setup_auth, teardown_auth),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

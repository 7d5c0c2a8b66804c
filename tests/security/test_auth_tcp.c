/*
 * test_auth_tcp — authentication against the real esd over TCP.
 *
 *   1. every request kind before the hello, each on a fresh connection;
 *   2. requests pipelined with hellos in one write: before any hello,
 *      after a refused one, after a read-only one;
 *   3. wrong and empty credentials through libesclient;
 *   4. read-only credentials writing: 1,000 appends, 100 transactions, 100
 *      snapshot saves, all refused; the head does not move;
 *   5. esctl with --token-file, $ES_TOKEN_FILE and $ES_TOKEN;
 *   6. the failure budget: pipelined wrong hellos beyond it close the
 *      connection, and the address is refused until its bucket refills;
 *   7. refusals at start: an auth file that others may read; a public
 *      listen address without --auth-file (and --insecure allowing it);
 *   and throughout: no token ever appears in esd's log or esctl's output.
 *
 * Pass: 100 % of the requests that must be refused are refused with the
 * right code; nothing is written by them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "es/client.h"
#include "rel.h"
#include "support.h"
#include "reqs.h"

#define T_ADMIN  "sec-admin-Zq8uP1vR7cLm"
#define T_WRITER "sec-writer-Hk3nW9xB2dTe"
#define T_READER "sec-reader-Jy6gF4sA0pQo"

static const char *const all_tokens[] = {T_ADMIN, T_WRITER, T_READER};

/* ------------------------------------------------------------ raw socket -- */

static int raw_connect(uint16_t port)
{
    int fd = h_connect(port);
    REL_CHECK(fd >= 0, "connect: %s", strerror(errno));
    return fd;
}

static void raw_write(int fd, const uint8_t *buf, size_t len)
{
    int r = h_send_all(fd, buf, len, 5000);
    REL_CHECK(r == H_OK, "send: %s", r == H_CLOSED ? "closed" : strerror(errno));
}

static void raw_send(int fd, const Es__V1__Request *req)
{
    int r = h_send_req(fd, req, 5000);
    REL_CHECK(r == H_OK, "send: %s", r == H_CLOSED ? "closed" : strerror(errno));
}

/* The next reply; NULL at EOF. Fails the test on a timeout (5 s) or a bad frame. */
static Es__V1__Response *raw_next(int fd)
{
    Es__V1__Response *resp = NULL;
    int r = h_recv(fd, 5000, &resp, NULL);
    REL_CHECK(r != H_TIMEOUT, "no reply within 5 s");
    REL_CHECK(r != H_BADFRAME, "undecodable reply or bad reply length");
    REL_CHECK(r == H_OK || r == H_CLOSED, "recv: %s", strerror(errno));
    return resp;
}

/* The next reply that is not a subscription push. */
static Es__V1__Response *raw_next_reply(int fd)
{
    for (;;) {
        Es__V1__Response *r = raw_next(fd);
        if (!r || (r->kind_case != ES__V1__RESPONSE__KIND_EVENTS &&
                   r->kind_case != ES__V1__RESPONSE__KIND_CAUGHT_UP &&
                   r->kind_case != ES__V1__RESPONSE__KIND_DROPPED)) {
            return r;
        }
        es__v1__response__free_unpacked(r, NULL);
    }
}

static void expect_code(Es__V1__Response *r, uint64_t id, es_err want, const char *what)
{
    REL_CHECK(r != NULL, "%s: connection closed instead of a reply to %llu", what,
              (unsigned long long)id);
    REL_CHECK(r->id == id, "%s: reply to %llu, expected %llu", what, (unsigned long long)r->id,
              (unsigned long long)id);
    es_err got = h_code(r);
    REL_CHECK(got == want, "%s: request %llu got %s (%s), want %s", what, (unsigned long long)id,
              es_errname(got), got ? r->error->message : "", es_errname(want));
    es__v1__response__free_unpacked(r, NULL);
}

/* A reply to a request that must be served: anything but a refusal. */
static void expect_served(Es__V1__Response *r, uint64_t id, const char *what)
{
    REL_CHECK(r != NULL && r->id == id, "%s: no reply to %llu", what, (unsigned long long)id);
    es_err got = h_code(r);
    REL_CHECK(got != ES_ERR_PERMISSION_DENIED && got != ES_ERR_UNAUTHENTICATED &&
                  got != ES_ERR_HANDSHAKE_REQUIRED,
              "%s: request %llu refused: %s", what, (unsigned long long)id, es_errname(got));
    es__v1__response__free_unpacked(r, NULL);
}

/* --------------------------------------------------------------- helpers -- */

static es_client *client_as(const char *address, const char *user, const char *token)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = address;
    o.client_name = "auth-tcp";
    o.user = user;
    if (token) {
        o.token = (const uint8_t *)token;
        o.token_len = strlen(token);
    }
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = 10000;
    o.reconnect_attempts = 1;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    REL_CHECK(es_client_create(&o, &c) == ES_OK, "es_client_create");
    return c;
}

static uint64_t head_of(const char *address)
{
    es_client *c = client_as(address, "admin", T_ADMIN);
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    REL_CHECK(rv == ES_OK, "stats as admin: %s (%s)", es_strerror(rv), es_client_errmsg(c));
    es_client_destroy(c);
    return st.head_position;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    unlink(path);
    FILE *f = fopen(path, "w");
    REL_CHECK(f != NULL, "fopen %s", path);
    fputs(text, f);
    fclose(f);
    REL_CHECK(chmod(path, mode) == 0, "chmod");
}

/* Fail when any token occurs in the file. */
static void check_no_tokens(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    static char buf[8 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < sizeof all_tokens / sizeof all_tokens[0]; i++) {
        REL_CHECK(strstr(buf, all_tokens[i]) == NULL, "a token appears in %s", path);
    }
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    static char buf[8 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* ----------------------------------------------------------------- parts -- */

static void part_before_hello(esd_proc *e)
{
    sec_req r;
    for (size_t i = 0; i < sec_n_kinds; i++) {
        int fd = raw_connect(e->port);
        raw_send(fd, sec_request(&r, sec_kinds[i], 100 + i));
        expect_code(raw_next_reply(fd), 100 + i, ES_ERR_HANDSHAKE_REQUIRED, "before hello");
        /* the connection still takes a hello */
        raw_send(fd, sec_hello(&r, 1, "admin", T_ADMIN));
        expect_code(raw_next_reply(fd), 1, ES_OK, "hello after a refused request");
        close(fd);
    }
    REL_CHECK(head_of(e->address) == 0, "something was written before a hello");
    rel_log("1: %zu request kinds before the hello: all HANDSHAKE_REQUIRED", sec_n_kinds);
}

static void part_pipelined(esd_proc *e)
{
    static uint8_t buf[1 << 16];
    size_t len = 0;
    sec_req r;
    uint64_t id = 1000;
    /* [every kind] [bad hello] [every kind] [reader hello] [every kind] */
    for (size_t i = 0; i < sec_n_kinds; i++) {
        len = sec_frame(sec_request(&r, sec_kinds[i], id++), buf, len, sizeof buf);
    }
    len = sec_frame(sec_hello(&r, id++, "admin", T_READER), buf, len, sizeof buf);
    for (size_t i = 0; i < sec_n_kinds; i++) {
        len = sec_frame(sec_request(&r, sec_kinds[i], id++), buf, len, sizeof buf);
    }
    len = sec_frame(sec_hello(&r, id++, "reader", T_READER), buf, len, sizeof buf);
    for (size_t i = 0; i < sec_n_kinds; i++) {
        len = sec_frame(sec_request(&r, sec_kinds[i], id++), buf, len, sizeof buf);
    }
    REL_CHECK(len > 0, "pipeline does not fit");
    int fd = raw_connect(e->port);
    raw_write(fd, buf, len); /* one write: the server sees it all at once */
    id = 1000;
    unsigned refused = 0;
    for (size_t i = 0; i < sec_n_kinds; i++, refused++) {
        expect_code(raw_next_reply(fd), id++, ES_ERR_HANDSHAKE_REQUIRED, "pipelined before hello");
    }
    expect_code(raw_next_reply(fd), id++, ES_ERR_UNAUTHENTICATED, "wrong token in pipeline");
    for (size_t i = 0; i < sec_n_kinds; i++, refused++) {
        expect_code(raw_next_reply(fd), id++, ES_ERR_UNAUTHENTICATED,
                    "pipelined after a refused hello");
    }
    Es__V1__Response *h = raw_next_reply(fd);
    REL_CHECK(h && h->kind_case == ES__V1__RESPONSE__KIND_HELLO && !strcmp(h->hello->role, "read"),
              "reader hello in pipeline: not a read-role HelloOk");
    es__v1__response__free_unpacked(h, NULL);
    id++;
    for (size_t i = 0; i < sec_n_kinds; i++, id++) {
        if (sec_kind_writes(sec_kinds[i])) {
            expect_code(raw_next_reply(fd), id, ES_ERR_PERMISSION_DENIED, "reader writing");
            refused++;
        } else {
            expect_served(raw_next_reply(fd), id, "reader reading");
        }
    }
    close(fd);
    REL_CHECK(head_of(e->address) == 0, "a pipelined request was written");
    rel_log("2: pipelined: %u of %u refused as required, reads served after the reader hello",
            refused, refused);
}

static void part_bad_credentials(esd_proc *e)
{
    const char *bad[][2] = {
        {"admin", T_READER}, {"admin", "not-a-token"}, {"admin", NULL},      {NULL, NULL},
        {"nobody", T_ADMIN}, {NULL, "not-a-token"},    {"reader", T_WRITER},
    };
    size_t n = sizeof bad / sizeof bad[0];
    for (size_t i = 0; i < n; i++) {
        es_client *c = client_as(e->address, bad[i][0], bad[i][1]);
        es_err rv = es_client_connect(c);
        REL_CHECK(rv == ES_ERR_UNAUTHENTICATED, "credentials #%zu: connect gave %s, want %s", i,
                  es_errname(rv), es_errname(ES_ERR_UNAUTHENTICATED));
        rv = es_client_ping(c, NULL);
        REL_CHECK(rv == ES_ERR_UNAUTHENTICATED, "credentials #%zu: ping gave %s", i,
                  es_errname(rv));
        es_client_destroy(c);
    }
    const char *good[][3] = {
        {"admin", T_ADMIN, "admin"},
        {"writer", T_WRITER, "write"},
        {NULL, T_READER, "read"},
    };
    for (size_t i = 0; i < 3; i++) {
        es_client *c = client_as(e->address, good[i][0], good[i][1]);
        REL_CHECK(es_client_connect(c) == ES_OK, "good credentials #%zu refused: %s", i,
                  es_client_errmsg(c));
        es_server_info info;
        REL_CHECK(es_client_server_info(c, &info) == ES_OK, "server info");
        REL_CHECK(!strcmp(info.role, good[i][2]), "role %s, want %s", info.role, good[i][2]);
        es_client_destroy(c);
    }
    rel_log("3: %zu wrong or empty credentials refused; 3 roles announced", n);
}

static void part_reader_writes(esd_proc *e)
{
    es_client *c = client_as(e->address, "reader", T_READER);
    unsigned attempts = 0, refused = 0;
    char data[32];
    for (unsigned i = 0; i < 1000; i++) {
        es_event ev = {.type = "AtcWritten", .data = data};
        ev.data_len = (size_t)snprintf(data, sizeof data, "{\"i\":%u}", i);
        char stream[32];
        snprintf(stream, sizeof stream, "atc-%u", i % 10);
        es_err rv = es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL);
        attempts++;
        refused += rv == ES_ERR_PERMISSION_DENIED;
    }
    for (unsigned i = 0; i < 100; i++) {
        es_event ev1 = {.type = "AtcWritten", .data = "{}", .data_len = 2};
        es_event ev2 = ev1;
        es_append_req reqs[2] = {
            {"atc-a", {ES_EXPECT_ANY, 0}, &ev1, 1},
            {"atc-b", {ES_EXPECT_ANY, 0}, &ev2, 1},
        };
        es_err rv = es_txn_commit(c, reqs, 2, NULL);
        attempts++;
        refused += rv == ES_ERR_PERMISSION_DENIED;
        rv = es_snapshot_save(c, "atc-a", 0, 1, "s", 1);
        attempts++;
        refused += rv == ES_ERR_PERMISSION_DENIED;
    }
    REL_CHECK(refused == attempts, "reader writes: %u of %u refused", refused, attempts);
    /* reads are served */
    es_stats st;
    REL_CHECK(es_stats_get(c, &st) == ES_OK, "reader stats: %s", es_client_errmsg(c));
    REL_CHECK(es_client_ping(c, NULL) == ES_OK, "reader ping");
    es_client_destroy(c);
    REL_CHECK(head_of(e->address) == 0, "a refused write was stored");

    c = client_as(e->address, "writer", T_WRITER);
    for (unsigned i = 0; i < 100; i++) {
        es_event ev = {.type = "AtcWritten", .data = "{}", .data_len = 2};
        es_err rv = es_stream_append(c, "atc-w", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL);
        REL_CHECK(rv == ES_OK, "writer append: %s", es_client_errmsg(c));
    }
    es_client_destroy(c);
    REL_CHECK(head_of(e->address) == 100, "writer's appends not all stored");
    rel_log("4: read-only credentials: %u of %u writes refused (100%%); writer stored 100", refused,
            attempts);
}

static int esctl_run(esd_proc *e, const char *out, const char *const *args)
{
    const char *argv[16];
    int n = 0;
    argv[n++] = "-s";
    argv[n++] = e->address;
    for (int i = 0; args[i] && n < 15; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return h_esctl(argv, out, 20000);
}

static void part_esctl(esd_proc *e)
{
    char tf_reader[400], tf_writer[400], tf_bad[400], out[400];
    snprintf(tf_reader, sizeof tf_reader, "%s/reader.token", e->dir);
    snprintf(tf_writer, sizeof tf_writer, "%s/writer.token", e->dir);
    snprintf(tf_bad, sizeof tf_bad, "%s/bad.token", e->dir);
    snprintf(out, sizeof out, "%s/esctl.out", e->dir);
    write_text(tf_reader, T_READER "\n", 0600);
    write_text(tf_writer, T_WRITER, 0600);
    write_text(tf_bad, "nope\n", 0600);
    unsetenv("ES_TOKEN");
    unsetenv("ES_TOKEN_FILE");
    unsetenv("ES_USER");

    int st = esctl_run(e, out, (const char *const[]){"ping", "--token-file", tf_reader, NULL});
    REL_CHECK(st == 0, "esctl ping --token-file reader: status %d", st);
    st = esctl_run(
        e, out,
        (const char *const[]){"--token-file", tf_reader, "append", "atc-c", "T", "{}", NULL});
    REL_CHECK(st != 0 && st != -1, "esctl append as reader succeeded");
    REL_CHECK(file_has(out, "permission") || file_has(out, "PERMISSION"),
              "esctl append as reader: no permission error in its output");
    st = esctl_run(e, out, (const char *const[]){"ping", NULL});
    REL_CHECK(st != 0, "esctl ping without a token succeeded");
    st = esctl_run(e, out, (const char *const[]){"ping", "--token-file", tf_bad, NULL});
    REL_CHECK(st != 0, "esctl ping with a bad token succeeded");
    setenv("ES_TOKEN_FILE", tf_writer, 1);
    st = esctl_run(e, out, (const char *const[]){"append", "atc-c", "T", "{}", NULL});
    REL_CHECK(st == 0, "esctl append with $ES_TOKEN_FILE (writer): status %d", st);
    unsetenv("ES_TOKEN_FILE");
    setenv("ES_TOKEN", T_WRITER, 1);
    setenv("ES_USER", "writer", 1);
    st = esctl_run(e, out, (const char *const[]){"append", "atc-c", "T", "{}", NULL});
    REL_CHECK(st == 0, "esctl append with $ES_TOKEN (writer): status %d", st);
    unsetenv("ES_TOKEN");
    unsetenv("ES_USER");
    check_no_tokens(out);
    REL_CHECK(head_of(e->address) == 102, "esctl appends not stored as expected");
    rel_log("5: esctl --token-file, $ES_TOKEN_FILE and $ES_TOKEN work; reader refused");
}

static void part_rate_limit(esd_proc *e)
{
    /* esd runs with --auth-failures 3 */
    static uint8_t buf[8192];
    size_t len = 0;
    sec_req r;
    for (uint64_t id = 1; id <= 6; id++) {
        len = sec_frame(sec_hello(&r, id, "admin", "wrong-token"), buf, len, sizeof buf);
    }
    int fd = raw_connect(e->port);
    raw_write(fd, buf, len);
    unsigned refused = 0;
    Es__V1__Response *resp;
    while ((resp = raw_next(fd)) != NULL) {
        REL_CHECK(h_code(resp) == ES_ERR_UNAUTHENTICATED, "wrong hello: %s",
                  es_errname(h_code(resp)));
        es__v1__response__free_unpacked(resp, NULL);
        refused++;
    }
    close(fd);
    REL_CHECK(refused >= 3 && refused < 6, "%u replies before the close (budget 3)", refused);
    /* the right token from the same address: refused while the bucket is empty */
    fd = raw_connect(e->port);
    raw_send(fd, sec_hello(&r, 1, "admin", T_ADMIN));
    expect_code(raw_next(fd), 1, ES_ERR_UNAUTHENTICATED, "right token while rate-limited");
    REL_CHECK(raw_next(fd) == NULL, "rate-limited connection not closed");
    close(fd);
    /* and served again once it refills (one per second) */
    int64_t deadline = h_now_ms() + 5000;
    bool ok = false;
    while (!ok && h_now_ms() < deadline) {
        fd = raw_connect(e->port);
        raw_send(fd, sec_hello(&r, 1, "admin", T_ADMIN));
        resp = raw_next(fd);
        ok = resp && h_code(resp) == ES_OK;
        if (resp) {
            es__v1__response__free_unpacked(resp, NULL);
        }
        close(fd);
        if (!ok) {
            h_sleep_ms(200); /* pacing the retries, not synchronising */
        }
    }
    REL_CHECK(ok, "the right token was still refused 5 s after the failures");
    REL_CHECK(file_has(e->log_file, "too many failures"), "rate limit not logged");
    rel_log("6: %u wrong hellos answered then closed; address refused, then served again", refused);
}

static void part_start_refusals(esd_proc *e, const char *users)
{
    int st;
    /* an auth file that others can read */
    REL_CHECK(chmod(users, 0644) == 0, "chmod");
    e->args[0] = "--auth-file";
    e->args[1] = users;
    e->args[2] = NULL;
    REL_CHECK(esd_start(e, 10000) != 0, "esd started with a world-readable auth file");
    REL_CHECK(file_has(e->log_file, "chmod 600"), "no hint about the mode in the log");
    REL_CHECK(chmod(users, 0600) == 0, "chmod");
    /* a public address without --auth-file */
    e->args[0] = "--listen";
    e->args[1] = "0.0.0.0:0";
    e->args[2] = NULL;
    REL_CHECK(esd_start(e, 10000) != 0, "esd served 0.0.0.0 without authentication");
    REL_CHECK(file_has(e->log_file, "refusing to listen"), "no reason for refusing 0.0.0.0");
    /* ... unless --insecure */
    e->args[2] = "--insecure";
    e->args[3] = NULL;
    REL_CHECK(esd_start(e, 10000) == 0, "esd --insecure did not start");
    REL_CHECK(file_has(e->log_file, "--insecure"), "no warning about --insecure");
    REL_CHECK(esd_stop(e, SIGTERM, 10000, &e->status, NULL) == 0, "stop");
    /* loopback without --auth-file: served, with a warning */
    e->args[0] = NULL;
    REL_CHECK(esd_start(e, 10000) == 0, "esd on loopback did not start");
    REL_CHECK(file_has(e->log_file, "authentication off"), "no warning about authentication");
    es_client *c = client_as(e->address, NULL, NULL);
    es_server_info info;
    REL_CHECK(es_client_connect(c) == ES_OK && es_client_server_info(c, &info) == ES_OK,
              "no-auth connect");
    REL_CHECK(!strcmp(info.role, "admin"), "no-auth role %s", info.role);
    es_client_destroy(c);
    REL_CHECK(esd_stop(e, SIGTERM, 10000, &st, NULL) == 0, "stop");
    rel_log("7: world-readable auth file and public address without auth refused at start");
}

int main(int argc, char **argv)
{
    rel_args(argc, argv, "auth-tcp", NULL, NULL);
    esd_proc e;
    REL_CHECK(esd_init(&e, NULL) == 0, "temporary directory");
    char users[400];
    snprintf(users, sizeof users, "%s/users", e.dir);
    uint8_t d[32];
    REL_CHECK(auth_sha256(T_WRITER, strlen(T_WRITER), d) == ES_OK, "sha256");
    char text[512];
    int n = snprintf(text, sizeof text,
                     "# test users\nadmin admin " T_ADMIN "\nreader read " T_READER
                     "\nwriter write sha256:");
    for (int i = 0; i < 32; i++) {
        n += snprintf(text + n, sizeof text - (size_t)n, "%02x", d[i]);
    }
    snprintf(text + n, sizeof text - (size_t)n, "\n");
    write_text(users, text, 0600);

    e.args[0] = "--auth-file";
    e.args[1] = users;
    e.args[2] = "--log-level";
    e.args[3] = "debug";
    e.args[4] = "--auth-failures";
    e.args[5] = "1000";
    e.args[6] = NULL;
    int st;
    REL_CHECK(esd_start(&e, 10000) == 0, "esd did not start");
    part_before_hello(&e);
    part_pipelined(&e);
    part_bad_credentials(&e);
    part_reader_writes(&e);
    part_esctl(&e);
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, &st, NULL) == 0, "esd did not stop");
    REL_CHECK(file_has(e.log_file, "authentication failed"), "failures are not logged");

    e.args[5] = "3";
    REL_CHECK(esd_start(&e, 10000) == 0, "esd did not restart");
    part_rate_limit(&e);
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, &e.status, NULL) == 0, "esd did not stop");

    part_start_refusals(&e, users);
    check_no_tokens(e.log_file);
    rel_log("no token in esd's log (%s)", e.log_file);
    esd_destroy(&e);
    rel_log("PASS");
    return 0;
}

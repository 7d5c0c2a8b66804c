/*
 * TLS against the real esd, with certificates made by the
 * openssl command at the start (skipped when it is missing):
 *
 *  - a good certificate: the client verifies it through its CA file, by IP
 *    address and by name; hello with credentials, appends, a transaction,
 *    2,000 events of 3 KB and a 2 MiB event written and read back
 *    (frames across many TLS records), 500 pipelined appends, a
 *    subscription; esctl with --tls-ca;
 *  - refusals: a client trusting another CA, a name the certificate does
 *    not carry, the system trust store (esctl --tls) — refused by default;
 *    --tls-insecure connects anyway;
 *  - plaintext to the TLS port: an es.v1 REFUSED frame in plaintext
 *    ("requires TLS") and a close, through the library and raw; a TLS
 *    client on a plaintext port fails cleanly; a TLS 1.1 client is refused;
 *  - start refusals: --tls-cert without --tls-key, a key that does not
 *    match the certificate;
 *  - esd stays up throughout, and no token appears in its log.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "es.pb-c.h"
#include "es/client.h"
#include "rel.h"
#include "support.h"

#define TOKEN "tls-test-token-Qw3rTy9"

static char dir[256];

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Run openssl ($OPENSSL_BIN, set by meson) with the arguments; the test is
 * skipped without it. */
static void openssl(const char *const *args)
{
    const char *bin = getenv("OPENSSL_BIN");
    if (!bin || !*bin) {
        rel_skip("no openssl command to make certificates");
    }
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)bin;
    for (int i = 0; args[i] && n < 31; i++) {
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    char log[400];
    path_of(log, sizeof log, "openssl.log");
    int st;
    if (h_run(argv, log, 30000, &st) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
            rel_skip("no openssl command to make certificates");
        }
        h_dump_tail(log, 10);
        rel_fail("openssl %s failed", args[0]);
    }
}

static void make_ca(const char *name)
{
    char key[400], crt[400], subj[64];
    snprintf(subj, sizeof subj, "/CN=esd test %s", name);
    char kf[64], cf[64];
    snprintf(kf, sizeof kf, "%s.key", name);
    snprintf(cf, sizeof cf, "%s.crt", name);
    path_of(key, sizeof key, kf);
    path_of(crt, sizeof crt, cf);
    openssl((const char *const[]){"req", "-x509", "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                                  "-days", "2", "-subj", subj, NULL});
}

static void make_certs(void)
{
    make_ca("ca");
    make_ca("other-ca");
    char key[400], csr[400], crt[400], ext[400], cakey[400], cacrt[400], okey[400];
    path_of(key, sizeof key, "srv.key");
    path_of(csr, sizeof csr, "srv.csr");
    path_of(crt, sizeof crt, "srv.crt");
    path_of(ext, sizeof ext, "ext.cnf");
    path_of(cakey, sizeof cakey, "ca.key");
    path_of(cacrt, sizeof cacrt, "ca.crt");
    path_of(okey, sizeof okey, "other.key");
    openssl((const char *const[]){"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                  "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost",
                                  NULL});
    FILE *f = fopen(ext, "w");
    REL_CHECK(f != NULL, "ext.cnf");
    fputs("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
          "extendedKeyUsage=serverAuth\n",
          f);
    fclose(f);
    openssl((const char *const[]){"x509", "-req", "-in", csr, "-CA", cacrt, "-CAkey", cakey,
                                  "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext,
                                  NULL});
    openssl((const char *const[]){"genpkey", "-algorithm", "EC", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-out", okey, NULL});
}

static es_client *tls_client(const char *address, const char *ca, const char *name, bool insecure,
                             bool tls)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = address;
    o.client_name = "tls-test";
    o.token = (const uint8_t *)TOKEN;
    o.token_len = strlen(TOKEN);
    o.tls = tls;
    o.tls_ca_file = ca;
    o.tls_server_name = name;
    o.tls_insecure = insecure;
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = 30000;
    o.reconnect_attempts = 1;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    REL_CHECK(es_client_create(&o, &c) == ES_OK, "es_client_create");
    return c;
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    static char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* ------------------------------------------------------------- the good -- */

static int count_batch(void *ctx, const es_recorded_event *events, size_t n)
{
    (void)events;
    *(size_t *)ctx += n;
    return 0;
}

static void part_good(esd_proc *e, const char *ca)
{
    char byname[64];
    snprintf(byname, sizeof byname, "localhost:%u", (unsigned)e->port);
    /* by IP (checked against the IP entry) and by name */
    const char *addrs[] = {e->address, byname};
    for (int i = 0; i < 2; i++) {
        es_client *c = tls_client(addrs[i], ca, NULL, false, true);
        es_err rv = es_client_connect(c);
        REL_CHECK(rv == ES_OK, "connect %s with the CA: %s", addrs[i], es_client_errmsg(c));
        es_server_info info;
        REL_CHECK(es_client_server_info(c, &info) == ES_OK && !strcmp(info.role, "write"),
                  "hello over TLS");
        es_client_destroy(c);
    }
    es_client *c = tls_client(e->address, ca, NULL, false, true);
    /* many mid-size events, read back in pages that span many records */
    static char data[3000];
    memset(data, 'd', sizeof data);
    for (unsigned i = 0; i < 2000; i += 20) {
        es_event ev[20];
        for (int k = 0; k < 20; k++) {
            ev[k] = (es_event){.type = "TlsTested", .data = data, .data_len = sizeof data};
        }
        es_err rv = es_stream_append(c, "tls-1", (es_expected){ES_EXPECT_ANY, 0}, ev, 20, NULL);
        REL_CHECK(rv == ES_OK, "append over TLS: %s", es_client_errmsg(c));
    }
    /* one large event: a frame across ~130 TLS records, both ways */
    size_t big_len = 2u << 20;
    char *big = malloc(big_len);
    REL_CHECK(big != NULL, "malloc");
    for (size_t i = 0; i < big_len; i++) {
        big[i] = (char)('a' + i % 26);
    }
    es_event bev = {.type = "TlsBig", .data = big, .data_len = big_len};
    es_append_result res;
    REL_CHECK(es_stream_append(c, "tls-big", (es_expected){ES_EXPECT_NO_STREAM, 0}, &bev, 1,
                               &res) == ES_OK,
              "big append: %s", es_client_errmsg(c));
    /* a transaction */
    es_event t1 = {.type = "TlsTxn", .data = "{}", .data_len = 2};
    es_event t2 = t1;
    es_append_req txn[2] = {{"tls-a", {ES_EXPECT_NO_STREAM, 0}, &t1, 1},
                            {"tls-b", {ES_EXPECT_NO_STREAM, 0}, &t2, 1}};
    REL_CHECK(es_txn_commit(c, txn, 2, NULL) == ES_OK, "transaction: %s", es_client_errmsg(c));
    /* 500 pipelined appends */
    uint64_t handles[500];
    for (unsigned i = 0; i < 500; i++) {
        es_event ev = {.type = "TlsPipelined", .data = data, .data_len = 100};
        REL_CHECK(es_stream_append_send(c, "tls-p", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1,
                                        &handles[i]) == ES_OK,
                  "append_send: %s", es_client_errmsg(c));
    }
    for (unsigned i = 0; i < 500; i++) {
        REL_CHECK(es_stream_append_wait(c, handles[i], NULL) == ES_OK, "append_wait: %s",
                  es_client_errmsg(c));
    }
    /* read everything back */
    es_read_options ro;
    memset(&ro, 0, sizeof ro);
    es_read_iter *it = NULL;
    REL_CHECK(es_read_stream(c, "tls-1", &ro, &it) == ES_OK, "read_stream");
    const es_recorded_event *ev;
    size_t n = 0;
    es_err rv;
    while ((rv = es_read_next(it, &ev)) == ES_OK && ev != NULL) {
        REL_CHECK(ev->data_len == sizeof data && !memcmp(ev->data, data, sizeof data),
                  "event %zu differs", n);
        n++;
    }
    REL_CHECK(n == 2000, "read %zu of 2000 events (%s)", n, es_strerror(rv));
    es_read_destroy(it);
    REL_CHECK(es_read_stream(c, "tls-big", &ro, &it) == ES_OK && es_read_next(it, &ev) == ES_OK &&
                  ev != NULL,
              "read big");
    REL_CHECK(ev->data_len == big_len && !memcmp(ev->data, big, big_len), "big event differs");
    es_read_destroy(it);
    free(big);
    /* a subscription from the start, caught up over TLS */
    size_t got = 0;
    es_sub_options so = {.target = ES_SUB_STREAM, .name = "tls-1", .start = ES_SUB_FROM_START};
    es_subscription *sub = NULL;
    REL_CHECK(es_subscribe(c, &so, count_batch, NULL, &got, &sub) == ES_OK, "subscribe: %s",
              es_client_errmsg(c));
    int64_t deadline = h_now_ms() + 20000;
    while (got < 2000 && h_now_ms() < deadline) {
        REL_CHECK(es_sub_poll(sub, 1000) == ES_OK, "sub_poll: %s", es_client_errmsg(c));
    }
    REL_CHECK(got == 2000, "subscription delivered %zu of 2000", got);
    es_sub_destroy(sub);
    es_client_destroy(c);

    char out[400];
    path_of(out, sizeof out, "esctl.out");
    setenv("ES_TOKEN", TOKEN, 1);
    int st = h_esctl((const char *const[]){"-s", e->address, "--tls-ca", ca, "read", "tls-a", NULL},
                     out, 20000);
    REL_CHECK(st == 0 && file_has(out, "TlsTxn"), "esctl --tls-ca read: status %d", st);
    /* es-account through the same options */
    const char *acct = getenv("ES_ACCOUNT_BIN");
    if (acct && *acct) {
        char *argv[] = {(char *)acct,         (char *)"-s",
                        (char *)e->address,   (char *)"--tls-ca",
                        (char *)ca,           (char *)"open",
                        (char *)"tls-acct-1", (char *)"--owner",
                        (char *)"Ada",        NULL};
        REL_CHECK(h_run(argv, out, 20000, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "es-account --tls-ca open failed");
    }
    st = h_esctl((const char *const[]){"-s", e->address, "--tls", "ping", NULL}, out, 20000);
    REL_CHECK(st != 0 && file_has(out, "not trusted"),
              "esctl --tls (system CAs) accepted a test CA: status %d", st);
    unsetenv("ES_TOKEN");
    rel_log("good certificate: by IP and name; 2,000 x 3 KB and a 2 MiB event written and read "
            "back, a transaction, 500 pipelined appends, a subscription, esctl and es-account "
            "--tls-ca");
}

/* ------------------------------------------------------------ refusals -- */

static void expect_refused(const char *address, const char *ca, const char *name,
                           const char *needle, const char *what)
{
    es_client *c = tls_client(address, ca, name, false, true);
    es_err rv = es_client_connect(c);
    REL_CHECK(rv != ES_OK, "%s: connected", what);
    REL_CHECK(strstr(es_client_errmsg(c), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              es_client_errmsg(c), needle);
    es_client_destroy(c);
}

static void part_refusals(esd_proc *e, const char *other_ca, const char *ca)
{
    expect_refused(e->address, other_ca, NULL, "not trusted", "another CA");
    expect_refused(e->address, ca, "db.example.com", "hostname mismatch", "a wrong name");
    char missing[400];
    path_of(missing, sizeof missing, "no-such-ca.crt");
    expect_refused(e->address, missing, NULL, "cannot load the CA", "a missing CA file");
    es_client *c = tls_client(e->address, other_ca, NULL, true, true);
    REL_CHECK(es_client_connect(c) == ES_OK, "--tls-insecure did not connect: %s",
              es_client_errmsg(c));
    REL_CHECK(es_client_ping(c, NULL) == ES_OK, "ping insecure");
    es_client_destroy(c);
    rel_log("another CA, a wrong name, a missing CA file refused; insecure connects");
}

/* --------------------------------------------------------- plaintext -- */

static void part_plaintext(esd_proc *e)
{
    /* the library without TLS */
    es_client *c = tls_client(e->address, NULL, NULL, false, false);
    es_err rv = es_client_connect(c);
    REL_CHECK(rv != ES_OK, "plaintext client connected to the TLS port");
    REL_CHECK(strstr(es_client_errmsg(c), "requires TLS") != NULL,
              "plaintext client: message \"%s\" does not say TLS is required", es_client_errmsg(c));
    es_client_destroy(c);
    /* raw: a plaintext hello gets a plaintext REFUSED frame, then EOF */
    int fd = h_connect(e->port);
    REL_CHECK(fd >= 0, "connect");
    hbuf hello = {0};
    h_put_hello(&hello, 1, 1);
    REL_CHECK(h_flush(fd, &hello, 5000) == H_OK, "send");
    hbuf_free(&hello);
    Es__V1__Response *resp = NULL;
    int rv_recv = h_recv(fd, 5000, &resp, NULL);
    REL_CHECK(rv_recv == H_OK, "no frame before the close (%d)", rv_recv);
    REL_CHECK(resp->kind_case == ES__V1__RESPONSE__KIND_ERROR &&
                  resp->error->code == ES__V1__ERROR_CODE__ERROR_CODE_REFUSED,
              "not a REFUSED error frame");
    REL_CHECK(h_wait_closed(fd, 5000, NULL) == H_CLOSED, "the connection stayed open");
    close(fd);
    es__v1__response__free_unpacked(resp, NULL);

    /* a TLS 1.1 client */
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    fd = h_connect(e->port);
    REL_CHECK(fd >= 0, "connect");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    REL_CHECK(SSL_connect(ssl) != 1, "a TLS 1.1 handshake succeeded");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    ERR_clear_error();
    rel_log("plaintext on the TLS port refused with a REFUSED frame; TLS 1.1 refused");
}

int main(int argc, char **argv)
{
    rel_args(argc, argv, "tls", NULL, NULL);
    esd_proc e;
    REL_CHECK(esd_init(&e, NULL) == 0, "temporary directory");
    snprintf(dir, sizeof dir, "%s", e.dir);
    make_certs();
    char cert[400], key[400], ca[400], other_ca[400], other_key[400], users[400];
    path_of(cert, sizeof cert, "srv.crt");
    path_of(key, sizeof key, "srv.key");
    path_of(ca, sizeof ca, "ca.crt");
    path_of(other_ca, sizeof other_ca, "other-ca.crt");
    path_of(other_key, sizeof other_key, "other.key");
    path_of(users, sizeof users, "users");
    FILE *f = fopen(users, "w");
    fputs("tester write " TOKEN "\n", f);
    fclose(f);
    chmod(users, 0600);

    int st;
    /* start refusals */
    e.args[0] = "--tls-cert";
    e.args[1] = cert;
    e.args[2] = NULL;
    REL_CHECK(esd_start(&e, 10000) != 0 && WIFEXITED(e.status) && WEXITSTATUS(e.status) == 2,
              "esd started with --tls-cert and no --tls-key");
    e.args[2] = "--tls-key";
    e.args[3] = other_key;
    e.args[4] = NULL;
    REL_CHECK(esd_start(&e, 10000) != 0, "esd started with a key of another certificate");
    REL_CHECK(file_has(e.log_file, "does not match"), "no reason for the mismatched key");

    e.args[3] = key;
    e.args[4] = "--auth-file";
    e.args[5] = users;
    e.args[6] = "--log-level";
    e.args[7] = "debug";
    e.args[8] = NULL;
    REL_CHECK(esd_start(&e, 10000) == 0, "esd with TLS did not start");
    REL_CHECK(file_has(e.log_file, "tls=on"), "no tls=on at start");
    part_good(&e, ca);
    part_refusals(&e, other_ca, ca);
    part_plaintext(&e);
    /* still serving */
    es_client *c = tls_client(e.address, ca, NULL, false, true);
    REL_CHECK(es_client_ping(c, NULL) == ES_OK, "esd does not serve after the refusals: %s",
              es_client_errmsg(c));
    es_client_destroy(c);
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, &st, NULL) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "esd did not stop cleanly");
    REL_CHECK(file_has(e.log_file, "TLS handshake failed") &&
                  file_has(e.log_file, "plaintext on the TLS port"),
              "refusals not logged");
    REL_CHECK(!file_has(e.log_file, TOKEN), "the token appears in esd's log");

    /* a TLS client on a plaintext port fails cleanly, the server goes on */
    e.args[0] = NULL;
    REL_CHECK(esd_start(&e, 10000) == 0, "plaintext esd did not start");
    c = tls_client(e.address, ca, NULL, false, true);
    REL_CHECK(es_client_connect(c) == ES_ERR_CONNECTION, "TLS to a plaintext port: %s",
              es_client_errmsg(c));
    es_client_destroy(c);
    c = tls_client(e.address, NULL, NULL, false, false);
    REL_CHECK(es_client_ping(c, NULL) == ES_OK, "plaintext esd down after a TLS client");
    es_client_destroy(c);
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, &st, NULL) == 0, "stop");
    rel_log("a TLS client on a plaintext port fails cleanly");
    esd_destroy(&e);
    rel_log("PASS");
    return 0;
}

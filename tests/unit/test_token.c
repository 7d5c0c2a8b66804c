/*
 * test_token — where the command-line programs find the token of the hello
 * and their TLS settings (client/tool/token.h): --token-file before
 * $ES_TOKEN_FILE before $ES_TOKEN, whitespace around a file's token
 * stripped, an empty, missing or oversized token refused, and the TLS
 * choices completed from $ES_TLS and $ES_TLS_CA.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "es/client.h"
#include "token.h"

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/es-test-token-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/token", f->dir);
    unsetenv("ES_TOKEN_FILE");
    unsetenv("ES_TOKEN");
    unsetenv("ES_TLS");
    unsetenv("ES_TLS_CA");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

static void test_file_stripped(void **state)
{
    fixture *f = *state;
    write_file(f->path, "  s3cret\n", 9);
    setenv("ES_TOKEN", "from-env", 1); /* a file, when named, wins */
    tool_token tok;
    assert_int_equal(tool_token_load(&tok, f->path, "test"), 0);
    assert_int_equal(tok.len, 6);
    assert_memory_equal(tok.bytes, "s3cret", 6);
    tool_token_wipe(&tok);
    assert_int_equal(tok.len, 0);
    assert_int_equal(tok.bytes[0], 0);
}

static void test_env_order(void **state)
{
    fixture *f = *state;
    tool_token tok;
    assert_int_equal(tool_token_load(&tok, NULL, "test"), 0);
    assert_int_equal(tok.len, 0); /* nothing set: no token, not an error */

    setenv("ES_TOKEN", "from-env", 1);
    assert_int_equal(tool_token_load(&tok, NULL, "test"), 0);
    assert_int_equal(tok.len, 8);
    assert_memory_equal(tok.bytes, "from-env", 8);

    write_file(f->path, "from-file", 9);
    setenv("ES_TOKEN_FILE", f->path, 1); /* $ES_TOKEN_FILE before $ES_TOKEN */
    assert_int_equal(tool_token_load(&tok, "", "test"), 0);
    assert_int_equal(tok.len, 9);
    assert_memory_equal(tok.bytes, "from-file", 9);
}

static void test_refused(void **state)
{
    fixture *f = *state;
    tool_token tok;
    assert_int_equal(tool_token_load(&tok, f->path, "test"), -1); /* missing file */

    write_file(f->path, " \n\t", 3);
    assert_int_equal(tool_token_load(&tok, f->path, "test"), -1); /* empty */

    static char big[TOKEN_MAX_BYTES + 2];
    memset(big, 'x', sizeof big);
    write_file(f->path, big, TOKEN_MAX_BYTES + 1);
    assert_int_equal(tool_token_load(&tok, f->path, "test"), -1); /* too long */
    write_file(f->path, big, TOKEN_MAX_BYTES);
    assert_int_equal(tool_token_load(&tok, f->path, "test"), 0); /* just fits */
    assert_int_equal(tok.len, TOKEN_MAX_BYTES);

    big[TOKEN_MAX_BYTES + 1] = '\0';
    setenv("ES_TOKEN", big, 1);
    assert_int_equal(tool_token_load(&tok, NULL, "test"), -1); /* $ES_TOKEN too long */
}

static void test_tls_apply(void **state)
{
    (void)state;
    es_client_options o;
    tool_tls none = {0};
    es_client_options_init(&o);
    tool_tls_apply(&none, &o, "test");
    assert_false(o.tls);
    assert_null(o.tls_ca_file);

    setenv("ES_TLS", "1", 1);
    tool_tls_apply(&none, &o, "test");
    assert_true(o.tls);
    assert_null(o.tls_ca_file);
    unsetenv("ES_TLS");

    setenv("ES_TLS_CA", "/env/ca.pem", 1); /* a CA file implies TLS */
    tool_tls_apply(&none, &o, "test");
    assert_true(o.tls);
    assert_string_equal(o.tls_ca_file, "/env/ca.pem");

    tool_tls flags = {.ca_file = "/flag/ca.pem", .server_name = "esd.example"};
    tool_tls_apply(&flags, &o, "test"); /* the flag before the environment */
    assert_string_equal(o.tls_ca_file, "/flag/ca.pem");
    assert_string_equal(o.tls_server_name, "esd.example");
    assert_false(o.tls_insecure);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_stripped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_apply, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * esd's configuration (server/options.c): every option settable as a flag,
 * a file key and an ESD_* variable; the precedence flag > environment >
 * file > default; errors that name where the bad value came from;
 * --print-config output that reads back as the same configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "options.h"

static char dir[] = "/tmp/esd-options-test-XXXXXX";

extern char **environ;

/* Remove every ESD_* variable (the test runner may set some). */
static void clear_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            if (!strncmp(*e, "ESD_", 4)) {
                const char *eq = strchr(*e, '=');
                size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
                if (n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        }
        if (!name[0]) {
            return;
        }
        unsetenv(name);
    }
}

static const char *conf(const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/esd.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Parse a NULL-terminated argument list (without argv[0]). */
static es_err parse(esd_options *o, char *msg, size_t len, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"esd";
    va_list ap;
    va_start(ap, len);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 31) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    msg[0] = '\0';
    return options_parse(argc, argv, o, msg, len);
}

static void check_value(const esd_options *o, const char *name, const char *want)
{
    char got[512];
    assert_true(options_value(o, name, got, sizeof got));
    if (strcmp(got, want) != 0) {
        fail_msg("%s = '%s', want '%s'", name, got, want);
    }
}

static int origin_of(const char *name, const esd_options *o)
{
    size_t n;
    const options_info *t = options_table(&n);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(t[i].name, name)) {
            return o->origin[i];
        }
    }
    fail_msg("no option %s", name);
    return -1;
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_defaults(void **state)
{
    (void)state;
    esd_options o;
    char msg[512];
    assert_int_equal(parse(&o, msg, sizeof msg, NULL), ES_OK);
    server_config d;
    server_config_defaults(&d);
    assert_string_equal(o.cfg.listen, d.listen);
    assert_int_equal(o.cfg.max_page, d.max_page);
    assert_int_equal(o.cfg.sync, true);
    assert_null(o.cfg.auth_file);
    assert_null(o.config_file);
    size_t n;
    options_table(&n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(o.origin[i], OPT_FROM_DEFAULT);
    }
    options_finish(&o);
}

/* Every option, in each of the three places, with its sample value. */
static void test_every_option_everywhere(void **state)
{
    (void)state;
    size_t n;
    const options_info *t = options_table(&n);
    assert_true(n >= 19);
    char msg[512], text[512], flag[512];
    for (size_t i = 0; i < n; i++) {
        esd_options o;
        /* tls-cert and tls-key go together: the other one as a flag */
        const char *pair = !strcmp(t[i].name, "tls-cert")  ? "--tls-key=/k"
                           : !strcmp(t[i].name, "tls-key") ? "--tls-cert=/c"
                                                           : NULL;
        /* file, with the dashed and the underscored spelling */
        for (int us = 0; us < 2; us++) {
            char key[64];
            snprintf(key, sizeof key, "%s", t[i].name);
            for (char *p = key; us && *p; p++) {
                *p = *p == '-' ? '_' : *p;
            }
            snprintf(text, sizeof text, "# sample\n\n%s = %s\n", key, t[i].sample);
            if (parse(&o, msg, sizeof msg, "--config", conf(text), pair, NULL) != ES_OK) {
                fail_msg("file %s: %s", key, msg);
            }
            check_value(&o, t[i].name, t[i].sample);
            assert_int_equal(origin_of(t[i].name, &o), OPT_FROM_FILE);
            assert_int_equal(o.line[i], 3);
            options_finish(&o);
        }
        /* environment */
        assert_string_equal(strncmp(t[i].env, "ESD_", 4) ? "" : "ESD_", "ESD_");
        setenv(t[i].env, t[i].sample, 1);
        if (parse(&o, msg, sizeof msg, pair, NULL) != ES_OK) {
            fail_msg("$%s: %s", t[i].env, msg);
        }
        check_value(&o, t[i].name, t[i].sample);
        assert_int_equal(origin_of(t[i].name, &o), OPT_FROM_ENV);
        options_finish(&o);
        unsetenv(t[i].env);
        /* flag */
        snprintf(flag, sizeof flag, "--%s=%s", t[i].name, t[i].sample);
        if (parse(&o, msg, sizeof msg, flag, pair, NULL) != ES_OK) {
            fail_msg("%s: %s", flag, msg);
        }
        check_value(&o, t[i].name, t[i].sample);
        assert_int_equal(origin_of(t[i].name, &o), OPT_FROM_FLAG);
        options_finish(&o);
    }
}

static void test_precedence(void **state)
{
    (void)state;
    esd_options o;
    char msg[512];
    const char *file = conf("listen = 127.0.0.1:1001\nmax-page = 11\nsync = none\n");
    setenv("ESD_LISTEN", "127.0.0.1:1002", 1);
    setenv("ESD_MAX_PAGE", "12", 1);
    /* flag > env > file */
    assert_int_equal(
        parse(&o, msg, sizeof msg, "--config", file, "--listen", "127.0.0.1:1003", NULL), ES_OK);
    check_value(&o, "listen", "127.0.0.1:1003");
    check_value(&o, "max-page", "12");
    check_value(&o, "sync", "none");
    check_value(&o, "max-connections", "1024");
    assert_int_equal(origin_of("listen", &o), OPT_FROM_FLAG);
    assert_int_equal(origin_of("max-page", &o), OPT_FROM_ENV);
    assert_int_equal(origin_of("sync", &o), OPT_FROM_FILE);
    assert_int_equal(origin_of("max-connections", &o), OPT_FROM_DEFAULT);
    options_finish(&o);
    /* env > file */
    assert_int_equal(parse(&o, msg, sizeof msg, "--config", file, NULL), ES_OK);
    check_value(&o, "listen", "127.0.0.1:1002");
    options_finish(&o);
    /* file > default; an empty variable counts as unset */
    unsetenv("ESD_LISTEN");
    setenv("ESD_MAX_PAGE", "", 1);
    assert_int_equal(parse(&o, msg, sizeof msg, "--config", file, NULL), ES_OK);
    check_value(&o, "listen", "127.0.0.1:1001");
    check_value(&o, "max-page", "11");
    options_finish(&o);
    unsetenv("ESD_MAX_PAGE");
    /* the flag wins wherever it stands on the line, and the last flag counts */
    assert_int_equal(
        parse(&o, msg, sizeof msg, "--max-page", "5", "--config", file, "--max-page", "6", NULL),
        ES_OK);
    check_value(&o, "max-page", "6");
    options_finish(&o);
    /* $ESD_CONFIG names the file; --config beats it */
    setenv("ESD_CONFIG", file, 1);
    assert_int_equal(parse(&o, msg, sizeof msg, NULL), ES_OK);
    check_value(&o, "listen", "127.0.0.1:1001");
    assert_string_equal(o.config_file, file);
    options_finish(&o);
    char other[300];
    snprintf(other, sizeof other, "%s/other.conf", dir);
    FILE *f = fopen(other, "w");
    fputs("listen = 127.0.0.1:1004\n", f);
    fclose(f);
    assert_int_equal(parse(&o, msg, sizeof msg, "--config", other, NULL), ES_OK);
    check_value(&o, "listen", "127.0.0.1:1004");
    options_finish(&o);
    unsetenv("ESD_CONFIG");
}

static void test_booleans(void **state)
{
    (void)state;
    esd_options o;
    char msg[512];
    const char *yes[] = {"true", "yes", "on", "1", "TRUE"};
    for (size_t i = 0; i < 5; i++) {
        setenv("ESD_INSECURE", yes[i], 1);
        assert_int_equal(parse(&o, msg, sizeof msg, NULL), ES_OK);
        assert_true(o.cfg.insecure);
        options_finish(&o);
    }
    /* the flag turns it off again */
    assert_int_equal(parse(&o, msg, sizeof msg, "--insecure=false", NULL), ES_OK);
    assert_false(o.cfg.insecure);
    assert_int_equal(origin_of("insecure", &o), OPT_FROM_FLAG);
    options_finish(&o);
    unsetenv("ESD_INSECURE");
    assert_int_equal(parse(&o, msg, sizeof msg, "--insecure", NULL), ES_OK);
    assert_true(o.cfg.insecure);
    options_finish(&o);
    assert_int_equal(parse(&o, msg, sizeof msg, "--config", conf("insecure = off\n"), NULL), ES_OK);
    assert_false(o.cfg.insecure);
    options_finish(&o);
    assert_int_equal(parse(&o, msg, sizeof msg, "--insecure=maybe", NULL), ES_ERR_INVALID_ARGUMENT);
    options_finish(&o);
}

/* Each error names the option and where the value came from. */
static void check_error(es_err want, const char *needle, ...)
{
    esd_options o;
    char msg[512] = "";
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)"esd";
    va_list ap;
    va_start(ap, needle);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 15) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    es_err rv = options_parse(argc, argv, &o, msg, sizeof msg);
    options_finish(&o);
    if (rv != want || !strstr(msg, needle)) {
        fail_msg("got %s \"%s\", want %s containing \"%s\"", es_errname(rv), msg, es_errname(want),
                 needle);
    }
}

static void test_errors(void **state)
{
    (void)state;
    char where[300];
    const char *file = conf("listen = 127.0.0.1:1\n\nmax_pages = 3\n");
    snprintf(where, sizeof where, "%s:3: unknown key 'max_pages'", file);
    check_error(ES_ERR_INVALID_ARGUMENT, where, "--config", file, NULL);
    file = conf("# c\nmax-page = 0\n");
    snprintf(where, sizeof where, "%s:2: invalid value '0' for max-page", file);
    check_error(ES_ERR_INVALID_ARGUMENT, where, "--config", file, NULL);
    file = conf("[esd]\nlisten = 127.0.0.1:1\n");
    check_error(ES_ERR_INVALID_ARGUMENT, "sections are not used", "--config", file, NULL);
    file = conf("listen = 127.0.0.1:1\njust words\n");
    snprintf(where, sizeof where, "%s:2:", file);
    check_error(ES_ERR_INVALID_ARGUMENT, where, "--config", file, NULL);
    file = conf("sync = sometimes\n");
    check_error(ES_ERR_INVALID_ARGUMENT, "for sync", "--config", file, NULL);
    /* a value keeps ';' and '#': no inline comments */
    esd_options o;
    char msg[512];
    assert_int_equal(parse(&o, msg, sizeof msg, "--config", conf("data-dir = /srv/a;b#c\n"), NULL),
                     ES_OK);
    assert_string_equal(o.cfg.data_dir, "/srv/a;b#c");
    options_finish(&o);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.conf", dir);
    check_error(ES_ERR_IO, "none.conf", "--config", missing, NULL);
    setenv("ESD_MAX_CONNECTIONS", "lots", 1);
    check_error(ES_ERR_INVALID_ARGUMENT, "$ESD_MAX_CONNECTIONS", NULL);
    unsetenv("ESD_MAX_CONNECTIONS");
    check_error(ES_ERR_INVALID_ARGUMENT, "--max-page", "--max-page", "0", NULL);
    check_error(ES_ERR_INVALID_ARGUMENT, "unknown option", "--no-such-option", NULL);
    check_error(ES_ERR_INVALID_ARGUMENT, "needs a value", "--listen", NULL);
    check_error(ES_ERR_INVALID_ARGUMENT, "unexpected argument", "stray", NULL);
    check_error(ES_ERR_INVALID_ARGUMENT, "map-size", "--map-size", "4K", NULL);
    check_error(ES_ERR_INVALID_ARGUMENT, "needs tls-key", "--tls-cert", "/c", NULL);
    setenv("ESD_TLS_KEY", "/k", 1);
    check_error(ES_ERR_INVALID_ARGUMENT, "tls-key (from $ESD_TLS_KEY) needs tls-cert", NULL);
    unsetenv("ESD_TLS_KEY");
    /* a cross-check names the origin of the value it refuses */
    setenv("ESD_MAX_EVENT_BYTES", "32M", 1);
    check_error(ES_ERR_INVALID_ARGUMENT, "$ESD_MAX_EVENT_BYTES", NULL);
    unsetenv("ESD_MAX_EVENT_BYTES");
    /* variables that name no option are reported, not fatal */
    setenv("ESD_LISTN", "x", 1);
    assert_int_equal(parse(&o, msg, sizeof msg, NULL), ES_OK);
    assert_non_null(strstr(o.unknown_env, "ESD_LISTN"));
    options_finish(&o);
    unsetenv("ESD_LISTN");
}

/* --print-config shows origins and reads back as the same configuration. */
static void test_print_round_trip(void **state)
{
    (void)state;
    esd_options o;
    char msg[512];
    const char *file = conf("listen = 127.0.0.1:1001\nmax-frame-bytes = 1M\n");
    setenv("ESD_MAX_PAGE", "200", 1);
    assert_int_equal(parse(&o, msg, sizeof msg, "--config", file, "--print-config", "--sync",
                           "none", "--auth-file", "/etc/esd/users", NULL),
                     ES_OK);
    unsetenv("ESD_MAX_PAGE");
    assert_true(o.print_config);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    options_print(f, &o);
    fclose(f);
    assert_non_null(strstr(out, "# from $ESD_MAX_PAGE\nmax-page = 200\n"));
    assert_non_null(strstr(out, "# from --sync\nsync = none\n"));
    assert_non_null(strstr(out, "(listen)\nlisten = 127.0.0.1:1001\n"));
    assert_non_null(strstr(out, "max-event-bytes = "));
    assert_non_null(strstr(out, "# port-file = (not set)\n"));
    assert_non_null(strstr(out, "max-connections = 1024\n"));
    /* read the output back as a file: the same values */
    esd_options again;
    assert_int_equal(parse(&again, msg, sizeof msg, "--config", conf(out), NULL), ES_OK);
    size_t n;
    const options_info *t = options_table(&n);
    for (size_t i = 0; i < n; i++) {
        char a[512], b[512];
        options_value(&o, t[i].name, a, sizeof a);
        options_value(&again, t[i].name, b, sizeof b);
        if (strcmp(a, b) != 0) {
            fail_msg("%s: printed %s, read back %s", t[i].name, a, b);
        }
    }
    options_finish(&again);
    options_finish(&o);
    free(out);
}

/* The replication options: defaults, names JetStream accepts, exclusivity. */
static void test_replication_options(void **state)
{
    (void)state;
    esd_options o;
    char msg[512];
    assert_int_equal(parse(&o, msg, sizeof msg, NULL), ES_OK);
    assert_null(o.cfg.relay_nats);
    assert_null(o.cfg.follow_nats);
    assert_string_equal(o.cfg.relay_stream, "esd");
    assert_string_equal(o.cfg.relay_subject, "es");
    assert_string_equal(o.cfg.follow_stream, "esd");
    assert_int_equal(o.cfg.relay_replicas, 1);
    options_finish(&o);
    assert_int_equal(parse(&o, msg, sizeof msg, "--relay-nats=nats://a:1", "--relay-subject=x.y-z",
                           "--relay-replicas=3", NULL),
                     ES_OK);
    assert_int_equal(o.cfg.relay_replicas, 3);
    options_finish(&o);
    assert_int_equal(
        parse(&o, msg, sizeof msg, "--relay-nats=nats://a:1", "--follow-nats=nats://b:1", NULL),
        ES_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "cannot be combined"));
    options_finish(&o);
    static const char *const bad[] = {
        "--relay-stream=a.b", "--follow-stream=a*", "--relay-subject=a..b",
        "--relay-subject=.a", "--relay-subject=a.", "--relay-subject=a.>",
        "--relay-stream=a b", "--relay-replicas=0", "--relay-replicas=6"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(&o, msg, sizeof msg, bad[i], NULL) != ES_ERR_INVALID_ARGUMENT) {
            fail_msg("%s was accepted", bad[i]);
        }
        options_finish(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_option_everywhere),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_replication_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

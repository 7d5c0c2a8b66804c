/*
 * test_start_refusals — the real esd refuses odd files at start, at once
 * and with a message: a FIFO (with no writer: opening it for reading the
 * usual way would block for ever) or a directory given as --auth-file,
 * --config, --tls-cert or --tls-key, and an auth file with a NUL byte or a
 * control character (the message names the line).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"

static char g_dir[] = "/tmp/esd-start-refusals-XXXXXX";

static const char *path_of(const char *name)
{
    static char paths[8][300];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 300, "%s/%s", g_dir, name);
    return p;
}

static bool log_has(const esd_proc *e, const char *what)
{
    FILE *f = fopen(e->log_file, "r");
    if (!f) {
        return false;
    }
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        found = strstr(line, what) != NULL;
    }
    fclose(f);
    return found;
}

/* esd must exit on its own at start (the harness reaps it: e.pid 0), not
 * hang until the harness's deadline, with a log line holding every string
 * of want. */
static void expect_refusal(const char *const *args, const char *const *want)
{
    esd_proc e;
    assert_int_equal(esd_init(&e, args), 0);
    assert_int_not_equal(esd_start(&e, 10000), 0);
    if (e.pid != 0) {
        esd_destroy(&e);
        fail_msg("esd %s %s did not exit: it hangs", args[0], args[1]);
    }
    for (size_t i = 0; want[i]; i++) {
        if (!log_has(&e, want[i])) {
            esd_dump_log(&e);
            fail_msg("no \"%s\" in esd's output", want[i]);
        }
    }
    esd_destroy(&e);
}

static void test_fifos_and_directories(void **state)
{
    (void)state;
    const char *fifo = path_of("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    expect_refusal((const char *const[]){"--auth-file", fifo, NULL},
                   (const char *const[]){"the auth file", "is a FIFO", NULL});
    expect_refusal((const char *const[]){"--auth-file", g_dir, NULL},
                   (const char *const[]){"is a directory", NULL});
    expect_refusal((const char *const[]){"--config", fifo, NULL},
                   (const char *const[]){"the configuration file", "is a FIFO", NULL});
    const char *key = path_of("key.pem");
    FILE *f = fopen(key, "w");
    assert_non_null(f);
    fputs("not a key\n", f);
    fclose(f);
    expect_refusal((const char *const[]){"--tls-cert", fifo, "--tls-key", key, NULL},
                   (const char *const[]){"the TLS certificate", "is a FIFO", NULL});
    expect_refusal((const char *const[]){"--tls-cert", key, "--tls-key", fifo, NULL},
                   (const char *const[]){"the TLS key", "is a FIFO", NULL});
}

static void test_auth_file_nul(void **state)
{
    (void)state;
    const char *users = path_of("users");
    static const char text[] = "admin admin admin-token-0123456789\n"
                               "billing write billing-\0token-abcdefgh\n"
                               "reader read reader-token-zyxwvu\n";
    FILE *f = fopen(users, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
    fclose(f);
    assert_int_equal(chmod(users, 0600), 0);
    expect_refusal((const char *const[]){"--auth-file", users, NULL},
                   (const char *const[]){"line 2", "NUL", NULL});
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifos_and_directories),
        cmocka_unit_test(test_auth_file_nul),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

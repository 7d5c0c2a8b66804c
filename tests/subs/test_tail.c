/*
 * test_tail — esctl tail against the real esd: follows like tail -f (the
 * history asked for, then what is appended afterwards), one JSON object
 * per event with --json, the rows of esctl read otherwise, and exits with
 * status 0 on SIGINT and SIGTERM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel.h"
#include "support.h"

static esd_proc esd;

/* esd without fsync and with warnings only in its log (plus a test's own arguments). */
static const char *const esd_args[] = {"--sync", "none", "--log-level", "warn", NULL};

/* A running esctl with its stdout (and stderr) in a pipe. */
typedef struct proc {
    pid_t pid;
    int out; /* read end of stdout */
    int err; /* read end of stderr */
    char buf[16384];
    size_t len;
} proc;

static void spawn(proc *p, const char *const *args)
{
    const char *bin = getenv("ESCTL_BIN");
    assert_non_null(bin);
    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "-s";
    argv[n++] = esd.address;
    for (int i = 0; args[i] != NULL; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    int o[2], e[2];
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    assert_int_equal(pipe2(e, O_CLOEXEC), 0);
    memset(p, 0, sizeof(*p));
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        /* A failed test must not leave an esctl retrying forever. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(o[1], 1);
        dup2(e[1], 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    p->out = o[0];
    p->err = e[0];
}

/* Read stdout until it holds `lines` lines (5 s at most). */
static void wait_lines(proc *p, int lines)
{
    uint64_t deadline = (uint64_t)h_now_us() + 5000000u;
    for (;;) {
        int have = 0;
        for (size_t i = 0; i < p->len; i++) {
            have += p->buf[i] == '\n';
        }
        if (have >= lines) {
            return;
        }
        uint64_t now = (uint64_t)h_now_us();
        if (now >= deadline) {
            fail_msg("esctl printed %d lines, want %d:\n%.*s", have, lines, (int)p->len, p->buf);
        }
        struct pollfd pfd = {.fd = p->out, .events = POLLIN};
        if (poll(&pfd, 1, (int)((deadline - now) / 1000) + 1) <= 0) {
            continue;
        }
        ssize_t r = read(p->out, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
        if (r <= 0) {
            fail_msg("esctl closed its output after:\n%.*s", (int)p->len, p->buf);
        }
        p->len += (size_t)r;
        p->buf[p->len] = '\0';
    }
}

/* The n-th line (0-based) of what was read. */
static const char *line_at(proc *p, int n, char *out, size_t cap)
{
    const char *s = p->buf;
    for (int i = 0; i < n; i++) {
        s = strchr(s, '\n');
        assert_non_null(s);
        s++;
    }
    const char *e = strchr(s, '\n');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    snprintf(out, cap, "%.*s", (int)len, s);
    return out;
}

/* Signal it and wait for its exit status (5 s at most). */
static int stop(proc *p, int sig)
{
    kill(p->pid, sig);
    uint64_t deadline = (uint64_t)h_now_us() + 5000000u;
    int st = 0;
    while (waitpid(p->pid, &st, WNOHANG) != p->pid) {
        if ((uint64_t)h_now_us() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            fail_msg("esctl did not exit within 5 s of signal %d", sig);
        }
        poll(NULL, 0, 5);
    }
    close(p->out);
    close(p->err);
    return st;
}

static void append(es_client *c, const char *stream, const char *type, const char *json)
{
    es_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.data = json;
    ev.data_len = strlen(json);
    ev.content_type = "application/json";
    es_err rv = es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL);
    if (rv != ES_OK) {
        fail_msg("append: %s", es_client_errmsg(c));
    }
}

static int run_status(const char *const *args)
{
    proc p;
    spawn(&p, args);
    int st = 0;
    waitpid(p.pid, &st, 0);
    close(p.out);
    close(p.err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_tail(void **state)
{
    assert_int_equal(esd_launch(&esd, esd_args, NULL, 10000), 0);
    es_client *c = h_client(esd.address, "tail-test");
    assert_non_null(c);
    append(c, "acct-1", "Opened", "{\"owner\":\"ann\"}");
    append(c, "other-1", "Noise", "{}");
    append(c, "acct-1", "Deposited", "{\"amount\":5}");

    /* Usage. */
    const char *const help[] = {"tail", "--help", NULL};
    assert_int_equal(run_status(help), 0);
    const char *const none[] = {"tail", NULL};
    assert_int_equal(run_status(none), 2);
    const char *const two[] = {"tail", "acct-1", "--all", NULL};
    assert_int_equal(run_status(two), 2);

    /* --json, a category from the start: the history, then live events. */
    proc j;
    const char *const jargs[] = {"tail", "--category", "acct", "--from-start", "--json", NULL};
    spawn(&j, jargs);
    wait_lines(&j, 2);
    char line[1024];
    line_at(&j, 0, line, sizeof(line));
    assert_non_null(strstr(line, "\"stream\":\"acct-1\""));
    assert_non_null(strstr(line, "\"position\":1,"));
    assert_non_null(strstr(line, "\"data\":{\"owner\":\"ann\"}"));
    line_at(&j, 1, line, sizeof(line));
    assert_non_null(strstr(line, "\"position\":3,"));
    assert_non_null(strstr(line, "\"type\":\"Deposited\""));

    /* A stream from the end, human rows. */
    proc h;
    const char *const hargs[] = {"tail", "acct-1", NULL};
    spawn(&h, hargs);
    /* The whole log after position 2. */
    proc a;
    const char *const aargs[] = {"tail", "--all", "--after", "2", NULL};
    spawn(&a, aargs);
    wait_lines(&a, 2); /* header + position 3 */

    /* esctl tail acct-1 has subscribed once it is in the server's count. */
    for (int i = 0; i < 500; i++) {
        es_stats st;
        assert_int_equal(es_stats_get(c, &st), ES_OK);
        if (st.subscriptions >= 3) {
            break;
        }
        poll(NULL, 0, 10);
    }
    append(c, "other-2", "Noise", "{}");
    append(c, "acct-1", "Withdrawn", "{\"amount\":2}");

    wait_lines(&j, 3);
    line_at(&j, 2, line, sizeof(line));
    assert_non_null(strstr(line, "\"position\":5,"));
    assert_non_null(strstr(line, "\"revision\":2,"));
    int nl = 0;
    for (size_t i = 0; i < j.len; i++) {
        nl += j.buf[i] == '\n';
    }
    assert_int_equal(nl, 3); /* other-2 is not in the category */

    wait_lines(&h, 2);
    line_at(&h, 0, line, sizeof(line));
    assert_non_null(strstr(line, "REVISION"));
    assert_non_null(strstr(line, "POSITION"));
    line_at(&h, 1, line, sizeof(line));
    assert_true(strncmp(line, "2 ", 2) == 0); /* revision 2 only: from the end */
    assert_non_null(strstr(line, "Withdrawn"));
    assert_non_null(strstr(line, "{\"amount\":2}"));

    wait_lines(&a, 4);
    line_at(&a, 0, line, sizeof(line));
    assert_true(strncmp(line, "POSITION", 8) == 0);
    line_at(&a, 1, line, sizeof(line));
    assert_true(strncmp(line, "3 ", 2) == 0);
    line_at(&a, 2, line, sizeof(line));
    assert_true(strncmp(line, "4 ", 2) == 0);
    assert_non_null(strstr(line, "other-2"));
    line_at(&a, 3, line, sizeof(line));
    assert_true(strncmp(line, "5 ", 2) == 0);

    int st = stop(&j, SIGINT);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    st = stop(&h, SIGTERM);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    st = stop(&a, SIGINT);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);

    /* A start beyond the end is refused: exit 1. */
    const char *const beyond[] = {"tail", "--all", "--after", "99", NULL};
    assert_int_equal(run_status(beyond), 1);

    es_client_destroy(c);
    esd_end(&esd, 10000);
}

/* Whatever happened in the test: no esd or temporary directory is left. */
static int teardown(void **state)
{
    esd_end(&esd, 10000);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_tail, teardown),
    };
    return cmocka_run_group_tests_name("subs_tail", tests, NULL, NULL);
}

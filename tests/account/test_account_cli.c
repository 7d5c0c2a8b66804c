/*
 * test_account_cli — every es-account command and refusal through the real
 * binary against the real esd: exit codes (0 done, 1 refused, 2 usage,
 * 3 cannot connect), messages on stderr, human and --json output, --help
 * on every command, strict amounts, the int64 edge, snapshots every N
 * events (and an older snapshot format ignored, not trusted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "it.h"

static esd_proc esd;
static char addr[32];
static es_client *cl;

static int setup(void **state)
{
    static const char *const args[] = {"--sync", "none", NULL};
    if (esd_init(&esd, args) != 0 || esd_start(&esd, 10000) != 0) {
        return -1;
    }
    it_addr(esd.port, addr);
    cl = it_client(esd.port);
    return cl ? 0 : -1;
}

static int teardown(void **state)
{
    es_client_destroy(cl);
    int rc = esd_stop(&esd, SIGTERM, 5000, NULL, NULL);
    esd_destroy(&esd);
    return rc;
}

/* Run es-account with ES_SERVER set to our esd; check the exit status. */
#define RUN(r, want, ...)                                                                          \
    do {                                                                                           \
        const char *const argv_[] = {__VA_ARGS__, NULL};                                           \
        assert_int_equal(it_cli((r), addr, argv_), 0);                                             \
        if ((r)->status != (want)) {                                                               \
            fail_msg("es-account %s: exit %d, want %d\nstdout: %s\nstderr: %s", argv_[0],          \
                     (r)->status, (want), (r)->out, (r)->err);                                     \
        }                                                                                          \
    } while (0)

/* The one JSON object of a text (first line). */
static json_t *json_of(const char *text)
{
    json_error_t err;
    json_t *o = json_loads(text, JSON_DISABLE_EOF_CHECK, &err);
    if (o == NULL) {
        fail_msg("not JSON: %s (%s)", text, err.text);
    }
    return o;
}

static json_int_t jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        fail_msg("no integer \"%s\"", key);
    }
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) {
        fail_msg("no string \"%s\"", key);
    }
    return json_string_value(v);
}

static it_run r; /* large: not on the stack */

/* ---------------------------------------------------------------- usage -- */

static void test_help_everywhere(void **state)
{
    RUN(&r, 0, "--help");
    assert_non_null(strstr(r.out, "usage: es-account"));
    static const char *cmds[] = {"open",    "deposit", "withdraw", "transfer",
                                 "balance", "history", "snapshot"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "usage: es-account %s", cmds[i]);
        RUN(&r, 0, cmds[i], "--help");
        assert_non_null(strstr(r.out, want));
        RUN(&r, 0, "help", cmds[i]);
        assert_non_null(strstr(r.out, want));
        RUN(&r, 0, cmds[i], "-h");
        assert_non_null(strstr(r.out, want));
    }
    RUN(&r, 0, "help");
    assert_non_null(strstr(r.out, "transfer FROM TO AMOUNT"));
    assert_non_null(strstr(r.out, "Exit status"));
}

static void test_usage_errors(void **state)
{
    /* Arguments are checked before connecting: exit 2 every time, and
     * nothing is written. */
    static const char *const cases[][6] = {
        {NULL},
        {"frobnicate", NULL},
        {"help", "frobnicate", NULL},
        {"open", "42", NULL},                     /* --owner missing */
        {"open", "42", "--owner", "", NULL},      /* empty owner */
        {"open", "--owner", "A", NULL},           /* id missing */
        {"open", "bad id", "--owner", "A", NULL}, /* bad id */
        {"deposit", "42", NULL},                  /* amount missing */
        {"deposit", "42", "1.5", NULL},
        {"deposit", "42", "-3", NULL},
        {"deposit", "42", "0", NULL},
        {"deposit", "42", "abc", NULL},
        {"deposit", "42", "9223372036854775808", NULL},
        {"withdraw", "42", "+1", NULL},
        {"withdraw", "42", "01", NULL},
        {"transfer", "1", "2", NULL},
        {"transfer", "1", "2", "1e3", NULL},
        {"transfer", "1", "a/b", "5", NULL},
        {"balance", NULL},
        {"balance", "1", "2", NULL},                  /* extra argument */
        {"deposit", "42", "5", "--owner", NULL},      /* missing value */
        {"deposit", "42", "5", "--owner", "A", NULL}, /* an option of open only */
        {"balance", "42", "--frob", NULL},
        {"balance", "42", "--snapshot-every", "x", NULL},
        {"balance", "42", "-s", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(it_cli(&r, addr, cases[i]), 0);
        if (r.status != 2) {
            fail_msg("case %zu (%s %s): exit %d, want 2\nstderr: %s", i,
                     cases[i][0] ? cases[i][0] : "", cases[i][0] && cases[i][1] ? cases[i][1] : "",
                     r.status, r.err);
        }
        assert_true(strlen(r.err) > 0);
    }
    es_stream_info info;
    CHECK_RV(es_stream_info_get(cl, "account-42", &info), ES_ERR_NOT_FOUND);
    RUN(&r, 2, "deposit", "42", "-3");
    assert_non_null(strstr(r.err, "bad amount \"-3\""));
    RUN(&r, 2, "deposit", "42", "9223372036854775808");
    assert_non_null(strstr(r.err, "positive integer"));
}

static void test_cannot_connect(void **state)
{
    /* A port nobody listens on: run an esd, note its port, stop it. */
    esd_proc dead;
    assert_int_equal(esd_init(&dead, NULL), 0);
    assert_int_equal(esd_start(&dead, 10000), 0);
    char dead_addr[32];
    it_addr(dead.port, dead_addr);
    assert_int_equal(esd_stop(&dead, SIGTERM, 5000, NULL, NULL), 0);
    esd_destroy(&dead);

    const char *const a1[] = {"balance", "42", NULL};
    assert_int_equal(it_cli(&r, dead_addr, a1), 0); /* through ES_SERVER */
    assert_int_equal(r.status, 3);
    assert_non_null(strstr(r.err, "cannot connect"));
    const char *const a2[] = {"-s", dead_addr, "deposit", "42", "5", "--json", NULL};
    assert_int_equal(it_cli(&r, addr, a2), 0); /* -s wins over ES_SERVER */
    assert_int_equal(r.status, 3);
    json_t *o = json_of(r.err);
    assert_string_equal(jstr(o, "error"), "CONNECTION");
    json_decref(o);
    char opt[64];
    snprintf(opt, sizeof(opt), "--server=%s", dead_addr);
    const char *const a3[] = {"balance", "42", opt, NULL};
    assert_int_equal(it_cli(&r, addr, a3), 0);
    assert_int_equal(r.status, 3);
}

/* ------------------------------------------------------------- commands -- */

static void test_open_deposit_withdraw(void **state)
{
    RUN(&r, 0, "open", "c1", "--owner", "Alice");
    assert_string_equal(r.out, "opened account c1 for Alice (revision 0)\n");
    RUN(&r, 1, "open", "c1", "--owner", "Bob");
    assert_string_equal(r.err, "es-account: refused: account c1 is already open (owner Alice)\n");
    RUN(&r, 1, "open", "c1", "--owner", "Bob", "--json");
    json_t *o = json_of(r.err);
    assert_string_equal(jstr(o, "error"), "refused");
    assert_string_equal(jstr(o, "reason"), "already_open");
    json_decref(o);
    assert_string_equal(r.out, "");

    RUN(&r, 0, "deposit", "c1", "1500");
    assert_string_equal(r.out, "deposited 1500 to account c1: balance 1500 (revision 1)\n");
    RUN(&r, 0, "--json", "withdraw", "c1", "200");
    o = json_of(r.out);
    assert_string_equal(jstr(o, "id"), "c1");
    assert_int_equal(jint(o, "amount"), 200);
    assert_int_equal(jint(o, "balance"), 1300);
    assert_int_equal(jint(o, "revision"), 2);
    json_decref(o);
    RUN(&r, 1, "withdraw", "c1", "1301");
    assert_string_equal(r.err,
                        "es-account: refused: insufficient funds: account c1 has 1300, cannot "
                        "withdraw 1301\n");
    RUN(&r, 1, "withdraw", "c1", "1301", "--json");
    o = json_of(r.err);
    assert_string_equal(jstr(o, "reason"), "insufficient_funds");
    json_decref(o);
    RUN(&r, 0, "withdraw", "c1", "1300"); /* to exactly 0 */
    assert_non_null(strstr(r.out, "balance 0 "));

    /* Nothing happens to an account that is not open. */
    RUN(&r, 1, "deposit", "nobody", "5");
    assert_string_equal(r.err, "es-account: refused: account nobody is not open\n");
    RUN(&r, 1, "withdraw", "nobody", "5", "--json");
    o = json_of(r.err);
    assert_string_equal(jstr(o, "reason"), "not_open");
    json_decref(o);
    es_stream_info info;
    CHECK_RV(es_stream_info_get(cl, "account-nobody", &info), ES_ERR_NOT_FOUND);
}

static void test_int64_edge(void **state)
{
    RUN(&r, 0, "open", "edge", "--owner", "Rich");
    RUN(&r, 0, "deposit", "edge", "9223372036854775807");
    assert_non_null(strstr(r.out, "balance 9223372036854775807"));
    RUN(&r, 1, "deposit", "edge", "1", "--json");
    json_t *o = json_of(r.err);
    assert_string_equal(jstr(o, "reason"), "overflow");
    json_decref(o);
    /* A transfer into the full account: refused, FROM keeps its money. */
    RUN(&r, 0, "open", "edge2", "--owner", "Poor");
    RUN(&r, 0, "deposit", "edge2", "10");
    RUN(&r, 1, "transfer", "edge2", "edge", "1");
    assert_non_null(strstr(r.err, "overflow"));
    RUN(&r, 0, "balance", "edge2", "--json");
    o = json_of(r.out);
    assert_int_equal(jint(o, "balance"), 10);
    assert_int_equal(jint(o, "revision"), 1);
    json_decref(o);
    RUN(&r, 0, "withdraw", "edge", "9223372036854775807");
    assert_non_null(strstr(r.out, "balance 0 "));
}

static void test_transfer(void **state)
{
    RUN(&r, 0, "open", "t1", "--owner", "Alice");
    RUN(&r, 0, "open", "t2", "--owner", "Bob");
    RUN(&r, 0, "deposit", "t1", "1000");
    RUN(&r, 0, "transfer", "t1", "t2", "300");
    assert_string_equal(r.out, "transferred 300 from account t1 to account t2\n"
                               "  t1: balance 700 (revision 2)\n"
                               "  t2: balance 300 (revision 1)\n");
    RUN(&r, 0, "transfer", "t2", "t1", "100", "--json");
    json_t *o = json_of(r.out);
    assert_string_equal(jstr(o, "from"), "t2");
    assert_string_equal(jstr(o, "to"), "t1");
    assert_int_equal(jint(o, "amount"), 100);
    assert_int_equal(jint(o, "from_balance"), 200);
    assert_int_equal(jint(o, "to_balance"), 800);
    assert_int_equal(jint(o, "from_revision"), 2);
    assert_int_equal(jint(o, "to_revision"), 3);
    json_decref(o);

    RUN(&r, 1, "transfer", "t1", "t1", "5");
    assert_string_equal(r.err, "es-account: refused: cannot transfer from account t1 to itself\n");
    RUN(&r, 1, "transfer", "t1", "t1", "5", "--json");
    o = json_of(r.err);
    assert_string_equal(jstr(o, "reason"), "same_account");
    json_decref(o);
    RUN(&r, 1, "transfer", "t1", "t9", "5");
    assert_string_equal(r.err, "es-account: refused: account t9 is not open\n");
    RUN(&r, 1, "transfer", "t9", "t1", "5");
    assert_string_equal(r.err, "es-account: refused: account t9 is not open\n");
    RUN(&r, 1, "transfer", "t1", "t2", "801");
    assert_non_null(strstr(r.err, "insufficient funds: account t1 has 800"));
    /* None of the refusals wrote anything. */
    es_stream_info info;
    CHECK_RV(es_stream_info_get(cl, "account-t1", &info), ES_OK);
    assert_int_equal(info.last_revision, 3);
    CHECK_RV(es_stream_info_get(cl, "account-t2", &info), ES_OK);
    assert_int_equal(info.last_revision, 2);
    CHECK_RV(es_stream_info_get(cl, "account-t9", &info), ES_ERR_NOT_FOUND);
}

static void test_balance_and_history(void **state)
{
    RUN(&r, 0, "open", "h1", "--owner", "Zoë Ångström");
    RUN(&r, 0, "deposit", "h1", "500");
    RUN(&r, 0, "withdraw", "h1", "120");
    RUN(&r, 0, "balance", "h1");
    assert_string_equal(r.out,
                        "account h1 (owner Zoë Ångström): balance 380, revision 2, replayed 3 "
                        "events\n");
    RUN(&r, 0, "balance", "h1", "--json");
    json_t *o = json_of(r.out);
    assert_int_equal(json_object_size(o), 5);
    assert_string_equal(jstr(o, "id"), "h1");
    assert_string_equal(jstr(o, "owner"), "Zoë Ångström");
    assert_int_equal(jint(o, "balance"), 380);
    assert_int_equal(jint(o, "revision"), 2);
    assert_int_equal(jint(o, "replayed"), 3);
    json_decref(o);
    RUN(&r, 1, "balance", "h-none");
    assert_string_equal(r.err, "es-account: refused: account h-none is not open\n");
    RUN(&r, 1, "balance", "h-none", "--json");
    o = json_of(r.err);
    assert_string_equal(jstr(o, "reason"), "not_open");
    json_decref(o);

    RUN(&r, 0, "history", "h1");
    /* Header + 3 events. */
    int lines = 0;
    for (const char *p = r.out; *p; p++) {
        lines += *p == '\n';
    }
    assert_int_equal(lines, 4);
    assert_non_null(strstr(r.out, "AccountOpened"));
    assert_non_null(strstr(r.out, "+500"));
    assert_non_null(strstr(r.out, "-120"));
    assert_non_null(strstr(r.out, "owner Zoë Ångström"));
    RUN(&r, 0, "history", "h1", "--json");
    const char *line = r.out;
    int64_t balances[3] = {0, 500, 380};
    for (int i = 0; i < 3; i++) {
        o = json_of(line);
        assert_int_equal(jint(o, "revision"), i);
        assert_int_equal(jint(o, "balance"), balances[i]);
        assert_non_null(json_object_get(o, "recorded_at"));
        json_decref(o);
        line = strchr(line, '\n') + 1;
    }
    assert_string_equal(line, "");
    RUN(&r, 1, "history", "h-none");
    assert_string_equal(r.err, "es-account: refused: account h-none is not open\n");
}

static void test_snapshots(void **state)
{
    RUN(&r, 0, "open", "s1", "--owner", "Snap", "--snapshot-every", "5");
    for (int i = 0; i < 12; i++) {
        RUN(&r, 0, "deposit", "s1", "10", "--snapshot-every", "5");
    }
    /* 13 events (revisions 0..12); snapshots saved at 4 and 9. */
    RUN(&r, 0, "balance", "s1");
    assert_string_equal(r.out, "account s1 (owner Snap): balance 120, revision 12, replayed 3 "
                               "events after the snapshot at revision 9\n");
    RUN(&r, 0, "balance", "s1", "--json");
    json_t *o = json_of(r.out);
    assert_int_equal(jint(o, "revision"), 12);
    assert_int_equal(jint(o, "replayed"), 3);
    assert_int_equal(jint(o, "balance"), 120);
    json_decref(o);

    RUN(&r, 0, "snapshot", "s1");
    assert_string_equal(r.out, "snapshot of account s1 saved at revision 12\n");
    RUN(&r, 0, "snapshot", "s1", "--json");
    o = json_of(r.out);
    assert_int_equal(jint(o, "revision"), 12);
    assert_true(json_is_false(json_object_get(o, "saved")));
    json_decref(o);
    RUN(&r, 0, "balance", "s1", "--json");
    o = json_of(r.out);
    assert_int_equal(jint(o, "replayed"), 0);
    assert_int_equal(jint(o, "balance"), 120);
    json_decref(o);
    RUN(&r, 1, "snapshot", "s-none");
    assert_string_equal(r.err, "es-account: refused: account s-none is not open\n");

    /* An older state format claiming a fortune is ignored, not trusted. */
    const char *lie = "{\"balance\":999999,\"open\":true,\"owner\":\"Snap\"}";
    CHECK_RV(es_snapshot_save(cl, "account-s1", 12, ACCOUNT_STATE_FORMAT - 1, lie, strlen(lie)),
             ES_OK);
    RUN(&r, 0, "balance", "s1");
    assert_string_equal(r.out, "account s1 (owner Snap): balance 120, revision 12, replayed 13 "
                               "events (a snapshot of another format was ignored)\n");

    /* --snapshot-every 0: never automatically. */
    RUN(&r, 0, "open", "s2", "--owner", "NoSnap", "--snapshot-every", "0");
    for (int i = 0; i < 6; i++) {
        RUN(&r, 0, "deposit", "s2", "1", "--snapshot-every=0");
    }
    RUN(&r, 0, "balance", "s2", "--json");
    o = json_of(r.out);
    assert_int_equal(jint(o, "replayed"), 7);
    json_decref(o);
    es_snapshot snap;
    CHECK_RV(es_snapshot_load(cl, "account-s2", &snap), ES_ERR_NOT_FOUND);
}

static void test_foreign_event(void **state)
{
    RUN(&r, 0, "open", "f1", "--owner", "F");
    es_event ev = {.type = "MoneyDeposited", .data = "{\"amount\":-5}", .data_len = 13};
    CHECK_RV(es_stream_append(cl, "account-f1", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL),
             ES_OK);
    RUN(&r, 1, "balance", "f1");
    assert_non_null(strstr(r.err, "revision 1"));
    RUN(&r, 1, "deposit", "f1", "5");
    RUN(&r, 1, "history", "f1");
    assert_non_null(strstr(r.err, "not a valid account event"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_everywhere),     cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_cannot_connect),      cmocka_unit_test(test_open_deposit_withdraw),
        cmocka_unit_test(test_int64_edge),          cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_balance_and_history), cmocka_unit_test(test_snapshots),
        cmocka_unit_test(test_foreign_event),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

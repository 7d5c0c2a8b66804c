/*
 * test_account — the account example's domain without a server: every
 * refusal of every decision, the int64 edge (overflow refused on deposit,
 * the whole range usable), the fold (and its refusal of histories that
 * break an invariant), snapshots' encoding, and the strict parsing of
 * amounts, ids and owners.
 *
 * Decide functions run on a decision of the test's own (es/aggregate.h
 * makes that possible); emitted events are turned into recorded events and
 * folded, so decide and apply are checked against each other.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"

#include "check_rv.h"

/* ------------------------------------------------------------- helpers -- */

static account open_account(const char *owner, int64_t balance)
{
    account a;
    memset(&a, 0, sizeof(a));
    a.open = true;
    snprintf(a.owner, sizeof(a.owner), "%s", owner);
    a.balance = balance;
    return a;
}

/* A recorded event with the given type and payload (revision n). */
static es_recorded_event recorded(const char *type, const char *data, uint64_t rev)
{
    es_recorded_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.stream = "account-t";
    ev.revision = rev;
    ev.type = type;
    ev.data = (const uint8_t *)data;
    ev.data_len = data ? strlen(data) : 0;
    ev.content_type = "application/json";
    return ev;
}

/* Fold every event the decision emitted for index into acc. */
static es_err fold_decision(const es_agg_decision *d, size_t index, account *acc)
{
    size_t n = 0;
    const es_event *ev = es_agg_decision_events(d, index, &n);
    for (size_t i = 0; i < n; i++) {
        es_recorded_event r;
        memset(&r, 0, sizeof(r));
        r.stream = "account-t";
        r.type = ev[i].type;
        r.data = ev[i].data;
        r.data_len = ev[i].data_len;
        r.content_type = ev[i].content_type;
        es_err rv = account_apply(NULL, acc, &r);
        if (rv != ES_OK) {
            return rv;
        }
    }
    return ES_OK;
}

/* Run account_decide; return its code and, for a refusal, its reason. */
static es_err decide1(const account *acc, account_cmd cmd, es_agg_decision *d, int *reason)
{
    es_agg_decision_reset(d);
    es_err rv = account_decide(acc, &cmd, d);
    *reason = 0;
    es_agg_decision_refused(d, reason, NULL);
    return rv;
}

static es_err decide2(const account *from, const account *to, account_cmd cmd, es_agg_decision *d,
                      int *reason)
{
    es_agg_decision_reset(d);
    const void *states[2] = {from, to};
    es_err rv = account_decide_transfer(states, 2, &cmd, d);
    *reason = 0;
    es_agg_decision_refused(d, reason, NULL);
    return rv;
}

static const char *refusal_message(const es_agg_decision *d)
{
    const char *m = "";
    es_agg_decision_refused(d, NULL, &m);
    return m;
}

/* ------------------------------------------------------------- parsing -- */

static void test_parse_amount(void **state)
{
    int64_t v = 0;
    assert_true(account_parse_amount("1", &v));
    assert_int_equal(v, 1);
    assert_true(account_parse_amount("1000", &v));
    assert_int_equal(v, 1000);
    assert_true(account_parse_amount("9223372036854775807", &v));
    assert_true(v == INT64_MAX);
    static const char *bad[] = {
        "",
        "0",
        "-3",
        "+1",
        "1.5",
        "abc",
        "1e3",
        " 1",
        "1 ",
        "01",
        "0x10",
        "12a",
        "-0",
        "1,0",
        "９",
        "9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        if (account_parse_amount(bad[i], &v)) {
            fail_msg("amount \"%s\" was accepted", bad[i]);
        }
        assert_int_equal(v, 42);
    }
    assert_false(account_parse_amount(NULL, &v));
}

static void test_valid_id_and_stream(void **state)
{
    assert_true(account_valid_id("42"));
    assert_true(account_valid_id("a-b_c.D9"));
    char id[ACCOUNT_ID_MAX + 2];
    memset(id, 'x', ACCOUNT_ID_MAX);
    id[ACCOUNT_ID_MAX] = '\0';
    assert_true(account_valid_id(id));
    char stream[ACCOUNT_STREAM_BYTES];
    assert_true(account_stream(id, stream));
    assert_int_equal(strlen(stream), strlen("account-") + ACCOUNT_ID_MAX);
    id[ACCOUNT_ID_MAX] = 'x';
    id[ACCOUNT_ID_MAX + 1] = '\0';
    assert_false(account_valid_id(id));
    assert_false(account_stream(id, stream));
    assert_false(account_valid_id(""));
    assert_false(account_valid_id(NULL));
    assert_false(account_valid_id("a b"));
    assert_false(account_valid_id("a/b"));
    assert_false(account_valid_id("$all"));
    assert_false(account_valid_id("é"));
    assert_true(account_stream("42", stream));
    assert_string_equal(stream, "account-42");
}

static void test_valid_owner(void **state)
{
    assert_true(account_valid_owner("Alice"));
    assert_true(account_valid_owner("Zoë Ångström"));
    assert_true(account_valid_owner("山田 太郎"));
    assert_true(account_valid_owner("\xf0\x9f\x92\xb0")); /* U+1F4B0 */
    char name[ACCOUNT_OWNER_MAX + 2];
    memset(name, 'n', ACCOUNT_OWNER_MAX);
    name[ACCOUNT_OWNER_MAX] = '\0';
    assert_true(account_valid_owner(name));
    name[ACCOUNT_OWNER_MAX] = 'n';
    name[ACCOUNT_OWNER_MAX + 1] = '\0';
    assert_false(account_valid_owner(name));
    static const char *bad[] = {
        "",
        "tab\there",
        "nl\n",
        "del\x7f",
        "c1\xc2\x85",       /* U+0085 */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xff",             /* not UTF-8 */
        "cut\xe5\xb1",      /* truncated sequence */
        "\x80",             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (account_valid_owner(bad[i])) {
            fail_msg("owner #%zu was accepted", i);
        }
    }
    assert_false(account_valid_owner(NULL));
}

static void test_refusal_names(void **state)
{
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_NOT_OPEN), "not_open");
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_ALREADY_OPEN), "already_open");
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_INSUFFICIENT_FUNDS),
                        "insufficient_funds");
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_OVERFLOW), "overflow");
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_SAME_ACCOUNT), "same_account");
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_BAD_AMOUNT), "bad_amount");
    assert_string_equal(account_refusal_name(ACCOUNT_REFUSED_BAD_OWNER), "bad_owner");
    assert_string_equal(account_refusal_name(999), "refused");
}

/* ------------------------------------------------------------ decisions -- */

static void test_open(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    account acc;
    memset(&acc, 0, sizeof(acc));
    int reason;
    account_cmd cmd = {.kind = ACCOUNT_CMD_OPEN, .id = "42", .owner = "Alice"};
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_OK);
    size_t n;
    const es_event *ev = es_agg_decision_events(d, 0, &n);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].type, "AccountOpened");
    assert_string_equal(ev[0].content_type, "application/json");
    assert_int_equal(ev[0].data_len, strlen("{\"owner\":\"Alice\"}"));
    assert_memory_equal(ev[0].data, "{\"owner\":\"Alice\"}", ev[0].data_len);
    CHECK_RV(fold_decision(d, 0, &acc), ES_OK);
    assert_true(acc.open);
    assert_string_equal(acc.owner, "Alice");
    assert_int_equal(acc.balance, 0);

    /* An account opens once. */
    cmd.owner = "Mallory";
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_ALREADY_OPEN);
    assert_non_null(strstr(refusal_message(d), "already open"));

    /* A bad owner is refused by the decision too (API callers). */
    account fresh;
    memset(&fresh, 0, sizeof(fresh));
    cmd.owner = "bad\nname";
    CHECK_RV(decide1(&fresh, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_OWNER);
    cmd.owner = NULL;
    CHECK_RV(decide1(&fresh, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_OWNER);
    es_agg_decision_destroy(d);
}

static void test_deposit(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    int reason;
    account closed;
    memset(&closed, 0, sizeof(closed));
    account_cmd cmd = {.kind = ACCOUNT_CMD_DEPOSIT, .id = "42", .amount = 500};
    CHECK_RV(decide1(&closed, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_NOT_OPEN);
    assert_string_equal(refusal_message(d), "account 42 is not open");

    account acc = open_account("Alice", 1000);
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_OK);
    size_t n;
    const es_event *ev = es_agg_decision_events(d, 0, &n);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].type, "MoneyDeposited");
    assert_memory_equal(ev[0].data, "{\"amount\":500}", ev[0].data_len);
    CHECK_RV(fold_decision(d, 0, &acc), ES_OK);
    assert_int_equal(acc.balance, 1500);

    cmd.amount = 0;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_AMOUNT);
    cmd.amount = -5;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_AMOUNT);
    cmd.amount = INT64_MIN;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_AMOUNT);
    es_agg_decision_destroy(d);
}

static void test_deposit_int64_edge(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    int reason;
    account_cmd cmd = {.kind = ACCOUNT_CMD_DEPOSIT, .id = "42"};

    /* Exactly up to INT64_MAX is fine... */
    account acc = open_account("A", INT64_MAX - 5);
    cmd.amount = 5;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_OK);
    CHECK_RV(fold_decision(d, 0, &acc), ES_OK);
    assert_true(acc.balance == INT64_MAX);

    /* ...one more is refused, never wrapped. */
    cmd.amount = 1;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_OVERFLOW);
    assert_non_null(strstr(refusal_message(d), "overflow"));
    acc = open_account("A", INT64_MAX - 5);
    cmd.amount = 6;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_OVERFLOW);
    acc = open_account("A", 1);
    cmd.amount = INT64_MAX;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_OVERFLOW);

    /* The largest deposit into an empty account. */
    acc = open_account("A", 0);
    cmd.amount = INT64_MAX;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_OK);
    size_t n;
    const es_event *ev = es_agg_decision_events(d, 0, &n);
    assert_memory_equal(ev[0].data, "{\"amount\":9223372036854775807}", ev[0].data_len);
    CHECK_RV(fold_decision(d, 0, &acc), ES_OK);
    assert_true(acc.balance == INT64_MAX);
    es_agg_decision_destroy(d);
}

static void test_withdraw(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(1, &d), ES_OK);
    int reason;
    account closed;
    memset(&closed, 0, sizeof(closed));
    account_cmd cmd = {.kind = ACCOUNT_CMD_WITHDRAW, .id = "7", .amount = 1};
    CHECK_RV(decide1(&closed, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_NOT_OPEN);

    account acc = open_account("Bob", 100);
    cmd.amount = 101;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_INSUFFICIENT_FUNDS);
    assert_string_equal(refusal_message(d),
                        "insufficient funds: account 7 has 100, cannot withdraw 101");
    /* The whole balance can go; the balance never goes below 0. */
    cmd.amount = 100;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_OK);
    size_t n;
    const es_event *ev = es_agg_decision_events(d, 0, &n);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].type, "MoneyWithdrawn");
    CHECK_RV(fold_decision(d, 0, &acc), ES_OK);
    assert_int_equal(acc.balance, 0);
    cmd.amount = 1;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_INSUFFICIENT_FUNDS);
    cmd.amount = 0;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_AMOUNT);

    /* INT64_MAX out of INT64_MAX. */
    acc = open_account("Bob", INT64_MAX);
    cmd.amount = INT64_MAX;
    CHECK_RV(decide1(&acc, cmd, d, &reason), ES_OK);
    CHECK_RV(fold_decision(d, 0, &acc), ES_OK);
    assert_int_equal(acc.balance, 0);
    es_agg_decision_destroy(d);
}

static void test_transfer(void **state)
{
    es_agg_decision *d = NULL;
    CHECK_RV(es_agg_decision_create(2, &d), ES_OK);
    int reason;
    account from = open_account("A", 1000), to = open_account("B", 50);
    account closed;
    memset(&closed, 0, sizeof(closed));
    account_cmd cmd = {.kind = ACCOUNT_CMD_TRANSFER, .id = "1", .to = "2", .amount = 300};

    CHECK_RV(decide2(&from, &to, cmd, d, &reason), ES_OK);
    size_t n0, n1;
    const es_event *e0 = es_agg_decision_events(d, 0, &n0);
    const es_event *e1 = es_agg_decision_events(d, 1, &n1);
    assert_int_equal(n0, 1);
    assert_int_equal(n1, 1);
    assert_string_equal(e0[0].type, "MoneyWithdrawn");
    assert_string_equal(e1[0].type, "MoneyDeposited");
    assert_memory_equal(e0[0].data, "{\"amount\":300}", e0[0].data_len);
    assert_memory_equal(e1[0].data, "{\"amount\":300}", e1[0].data_len);
    CHECK_RV(fold_decision(d, 0, &from), ES_OK);
    CHECK_RV(fold_decision(d, 1, &to), ES_OK);
    assert_int_equal(from.balance, 700);
    assert_int_equal(to.balance, 350);

    /* Every refusal. */
    account_cmd self = cmd;
    self.to = "1";
    CHECK_RV(decide2(&from, &from, self, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_SAME_ACCOUNT);
    assert_string_equal(refusal_message(d), "cannot transfer from account 1 to itself");
    /* ...also when decided on the one account (how es-account runs it). */
    es_agg_decision *d1 = NULL;
    CHECK_RV(es_agg_decision_create(1, &d1), ES_OK);
    CHECK_RV(decide1(&from, self, d1, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_SAME_ACCOUNT);
    CHECK_RV(decide1(&from, cmd, d1, &reason), ES_ERR_INVALID_ARGUMENT);
    es_agg_decision_destroy(d1);

    CHECK_RV(decide2(&closed, &to, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_NOT_OPEN);
    assert_string_equal(refusal_message(d), "account 1 is not open");
    CHECK_RV(decide2(&from, &closed, cmd, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_NOT_OPEN);
    assert_string_equal(refusal_message(d), "account 2 is not open");
    account_cmd big = cmd;
    big.amount = 701;
    CHECK_RV(decide2(&from, &to, big, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_INSUFFICIENT_FUNDS);
    big.amount = 0;
    CHECK_RV(decide2(&from, &to, big, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_AMOUNT);
    big.amount = -1;
    CHECK_RV(decide2(&from, &to, big, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_BAD_AMOUNT);
    /* TO at the int64 edge: refused, and FROM keeps its money. */
    account rich = open_account("R", INT64_MAX - 10);
    big.amount = 11;
    CHECK_RV(decide2(&from, &rich, big, d, &reason), ES_ERR_REFUSED);
    assert_int_equal(reason, ACCOUNT_REFUSED_OVERFLOW);
    size_t n;
    assert_null(es_agg_decision_events(d, 0, &n));
    big.amount = 10;
    CHECK_RV(decide2(&from, &rich, big, d, &reason), ES_OK);

    /* Not a transfer, or not two states. */
    account_cmd dep = {.kind = ACCOUNT_CMD_DEPOSIT, .id = "1", .amount = 1};
    CHECK_RV(decide2(&from, &to, dep, d, &reason), ES_ERR_INVALID_ARGUMENT);
    const void *one[1] = {&from};
    CHECK_RV(account_decide_transfer(one, 1, &cmd, d), ES_ERR_INVALID_ARGUMENT);
    es_agg_decision_destroy(d);
}

/* ----------------------------------------------------------------- fold -- */

static void test_apply_history(void **state)
{
    account acc;
    memset(&acc, 0, sizeof(acc));
    es_recorded_event evs[] = {
        recorded("AccountOpened", "{\"owner\":\"Alice\"}", 0),
        recorded("MoneyDeposited", "{\"amount\":1000}", 1),
        recorded("MoneyWithdrawn", "{\"amount\":300}", 2),
        recorded("MoneyDeposited", "{\"amount\":5, \"note\":\"extra members are ignored\"}", 3),
    };
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
        CHECK_RV(account_apply(NULL, &acc, &evs[i]), ES_OK);
    }
    assert_true(acc.open);
    assert_string_equal(acc.owner, "Alice");
    assert_int_equal(acc.balance, 705);
    int64_t amount = 0;
    assert_true(account_event_amount(&evs[2], &amount));
    assert_int_equal(amount, 300);
    assert_false(account_event_amount(&evs[0], &amount));
}

/* Histories that break an invariant, or payloads that are not the event's
 * JSON: the fold refuses them rather than compute a wrong balance. */
static void test_apply_refuses(void **state)
{
    struct {
        account start;
        es_recorded_event ev;
    } cases[] = {
        {{0}, recorded("MoneyDeposited", "{\"amount\":5}", 0)},                    /* not open */
        {{0}, recorded("MoneyWithdrawn", "{\"amount\":5}", 0)},                    /* not open */
        {open_account("A", 0), recorded("AccountOpened", "{\"owner\":\"B\"}", 1)}, /* twice */
        {{0}, recorded("AccountOpened", "{}", 0)},
        {{0}, recorded("AccountOpened", "{\"owner\":5}", 0)},
        {{0}, recorded("AccountOpened", "{\"owner\":\"\"}", 0)},
        {{0}, recorded("AccountOpened", "{\"owner\":\"a\\u0001\"}", 0)},
        {open_account("A", 10), recorded("MoneyWithdrawn", "{\"amount\":11}", 1)}, /* overdraft */
        {open_account("A", INT64_MAX), recorded("MoneyDeposited", "{\"amount\":1}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "{\"amount\":0}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "{\"amount\":-1}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "{\"amount\":1.5}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "{\"amount\":\"5\"}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "{\"amount\":9223372036854775808}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "{\"amount\":1,\"amount\":2}", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "[5]", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", "not json", 1)},
        {open_account("A", 10), recorded("MoneyDeposited", NULL, 1)},
        {open_account("A", 10), recorded("AccountClosed", "{}", 1)}, /* unknown type */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        account acc = cases[i].start;
        account before = acc;
        es_err rv = account_apply(NULL, &acc, &cases[i].ev);
        if (rv != ES_ERR_MALFORMED) {
            fail_msg("case %zu (%s %s): %s, want MALFORMED", i, cases[i].ev.type,
                     cases[i].ev.data ? (const char *)cases[i].ev.data : "(none)", es_errname(rv));
        }
        assert_memory_equal(&acc, &before, sizeof(acc));
    }
}

/* ------------------------------------------------------------ snapshots -- */

static void test_snapshot_roundtrip(void **state)
{
    account acc = open_account("Zoë", INT64_MAX);
    void *data = NULL;
    size_t len = 0;
    CHECK_RV(account_ops.encode(NULL, &acc, &data, &len), ES_OK);
    assert_int_equal(account_ops.state_format, ACCOUNT_STATE_FORMAT);
    assert_int_equal(account_ops.state_size, sizeof(account));
    account back;
    CHECK_RV(account_ops.init(NULL, &back), ES_OK);
    assert_false(back.open);
    CHECK_RV(account_ops.decode(NULL, &back, data, len), ES_OK);
    assert_true(back.open);
    assert_string_equal(back.owner, "Zoë");
    assert_true(back.balance == INT64_MAX);
    free(data);
}

static void test_snapshot_decode_rejects(void **state)
{
    static const char *bad[] = {
        "",
        "null",
        "[]",
        "{\"open\":true,\"owner\":\"A\"}",
        "{\"open\":true,\"balance\":1}",
        "{\"owner\":\"A\",\"balance\":1}",
        "{\"open\":1,\"owner\":\"A\",\"balance\":1}",
        "{\"open\":true,\"owner\":\"A\",\"balance\":-1}",
        "{\"open\":true,\"owner\":\"A\",\"balance\":1.5}",
        "{\"open\":true,\"owner\":\"\",\"balance\":1}",
        "{\"open\":false,\"owner\":\"\",\"balance\":1}",
        "{\"open\":true,\"owner\":\"A\",\"balance\":9223372036854775808}",
        "{\"open\":true,\"owner\":\"A\",\"owner\":\"B\",\"balance\":1}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        account acc;
        account_ops.init(NULL, &acc);
        if (account_ops.decode(NULL, &acc, bad[i], strlen(bad[i])) != ES_ERR_MALFORMED) {
            fail_msg("snapshot %s was accepted", bad[i]);
        }
    }
    account acc;
    account_ops.init(NULL, &acc);
    CHECK_RV(account_ops.decode(NULL, &acc, NULL, 0), ES_ERR_MALFORMED);
    const char *closed = "{\"open\":false,\"owner\":\"\",\"balance\":0}";
    CHECK_RV(account_ops.decode(NULL, &acc, closed, strlen(closed)), ES_OK);
    assert_false(acc.open);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_amount),
        cmocka_unit_test(test_valid_id_and_stream),
        cmocka_unit_test(test_valid_owner),
        cmocka_unit_test(test_refusal_names),
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_deposit),
        cmocka_unit_test(test_deposit_int64_edge),
        cmocka_unit_test(test_withdraw),
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_apply_history),
        cmocka_unit_test(test_apply_refuses),
        cmocka_unit_test(test_snapshot_roundtrip),
        cmocka_unit_test(test_snapshot_decode_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

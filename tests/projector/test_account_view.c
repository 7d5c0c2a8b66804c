/*
 * test_account_view.c — es-account-view against the real esd.
 *
 * The bank run: a writer thread opens RAW_ACCOUNTS accounts and streams
 * deposits and transfers (MoneyWithdrawn + MoneyDeposited in one
 * es_txn_commit, exact expectations) into esd, a second one drives
 * AGG_ACCOUNTS more through the account example's aggregate (es-account's
 * deposit, withdraw and transfer commands), while the main thread
 * SIGKILLs es-account-view at random moments KILLS times and restarts it on
 * the same read model. After each restart, /stats must show a read model
 * whose folded-event count equals its checkpoint (every event of the log is
 * an account event, so anything applied twice or skipped shows). At the
 * end, when the view has caught up with the server's head, every account
 * from GET /accounts/ID must equal a fresh fold of its stream read through
 * libesclient, the account example's rehydration (es_agg_load) and the
 * raw writer's own bookkeeping, and /stats must agree
 * with the sums. Then the HTTP queries and their error cases, a clean
 * SIGTERM, and a --rebuild that must give the same answers.
 */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "account.h"
#include "es/aggregate.h"
#include "es/client.h"
#include "support.h"

#define RAW_ACCOUNTS 40 /* ids 1..40: written with raw appends and transactions */
#define AGG_ACCOUNTS 10 /* ids 41..50: written by the account example's aggregate */
#define ACCOUNTS     (RAW_ACCOUNTS + AGG_ACCOUNTS)
#define AGG_OWNER    "agg-owner"
#define KILLS        10
#define OWNERS       5

/* The raw writer's books of one account. */
typedef struct book {
    int64_t balance;
    uint64_t next_rev; /* revision of the next event */
    char owner[32];
} book;

typedef struct fixture {
    esd_proc esd;
    esd_proc view; /* es-account-view, its read model in view.data_dir */
    es_client *c;

    pthread_t writer;
    atomic_bool stop_writer;
    book acc[RAW_ACCOUNTS + 1]; /* 1-based ids; owned by the writer until joined */
    uint64_t deposits, transfers;
    es_err writer_err;
    char writer_msg[256];

    pthread_t agg_writer;
    uint64_t agg_commands, agg_refusals;
    es_err agg_err;
    char agg_msg[256];
} fixture;

static es_client *make_client(uint16_t port)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    es_client_options co;
    es_client_options_init(&co);
    co.address = addr;
    es_client *c = NULL;
    if (es_client_create(&co, &c) != ES_OK) {
        return NULL;
    }
    return c;
}

/* ---------------------------------------------------------------- writer -- */

/* An event whose data is {"amount": v}. */
static void set_event(es_event *e, const char *type, char *buf, size_t len, long long v)
{
    memset(e, 0, sizeof *e);
    e->type = type;
    e->content_type = "application/json";
    int n = snprintf(buf, len, "{\"amount\":%lld}", v);
    e->data = buf;
    e->data_len = (size_t)n;
}

/* Retry an append or a transaction after a lost connection: same ids, idempotent. */
static es_err commit(es_client *c, es_append_req *reqs, size_t n)
{
    es_err err;
    for (int attempt = 0; attempt < 5; attempt++) {
        err = es_txn_commit(c, reqs, n, NULL);
        if (err != ES_ERR_CLOSED && err != ES_ERR_TIMEOUT) {
            return err;
        }
    }
    return err;
}

static void *writer_main(void *arg)
{
    fixture *f = arg;
    es_client *c = make_client(f->esd.port);
    unsigned seed = 777;
    es_err err = ES_OK;
    char stream_a[32], stream_b[32], data_a[64], data_b[64];
    es_event ea, eb;
    for (int i = 1; i <= RAW_ACCOUNTS && err == ES_OK; i++) {
        snprintf(stream_a, sizeof stream_a, "account-%d", i);
        snprintf(f->acc[i].owner, sizeof f->acc[i].owner, "owner-%d", i % OWNERS);
        memset(&ea, 0, sizeof ea);
        ea.type = "AccountOpened";
        ea.content_type = "application/json";
        int n = snprintf(data_a, sizeof data_a, "{\"owner\":\"%s\"}", f->acc[i].owner);
        ea.data = data_a;
        ea.data_len = (size_t)n;
        set_event(&eb, "MoneyDeposited", data_b, sizeof data_b, 1000);
        es_event evs[2] = {ea, eb};
        es_append_req r = {stream_a, {ES_EXPECT_NO_STREAM, 0}, evs, 2};
        err = commit(c, &r, 1);
        f->acc[i].balance = 1000;
        f->acc[i].next_rev = 2;
        f->deposits++;
    }
    while (err == ES_OK && !atomic_load(&f->stop_writer)) {
        int a = 1 + (int)(rand_r(&seed) % RAW_ACCOUNTS);
        snprintf(stream_a, sizeof stream_a, "account-%d", a);
        if (rand_r(&seed) % 10 < 5) {
            long long amount = 1 + rand_r(&seed) % 500;
            set_event(&ea, "MoneyDeposited", data_a, sizeof data_a, amount);
            es_append_req r = {stream_a, {ES_EXPECT_EXACT, f->acc[a].next_rev - 1}, &ea, 1};
            if ((err = commit(c, &r, 1)) == ES_OK) {
                f->acc[a].balance += amount;
                f->acc[a].next_rev++;
                f->deposits++;
            }
            continue;
        }
        int b = 1 + (int)(rand_r(&seed) % RAW_ACCOUNTS);
        if (b == a || f->acc[a].balance == 0) {
            continue;
        }
        snprintf(stream_b, sizeof stream_b, "account-%d", b);
        long long amount = 1 + (long long)(rand_r(&seed) % (unsigned)f->acc[a].balance);
        set_event(&ea, "MoneyWithdrawn", data_a, sizeof data_a, amount);
        set_event(&eb, "MoneyDeposited", data_b, sizeof data_b, amount);
        es_append_req r[2] = {
            {stream_a, {ES_EXPECT_EXACT, f->acc[a].next_rev - 1}, &ea, 1},
            {stream_b, {ES_EXPECT_EXACT, f->acc[b].next_rev - 1}, &eb, 1},
        };
        if ((err = commit(c, r, 2)) == ES_OK) {
            f->acc[a].balance -= amount;
            f->acc[b].balance += amount;
            f->acc[a].next_rev++;
            f->acc[b].next_rev++;
            f->transfers++;
        }
    }
    f->writer_err = err;
    if (err != ES_OK) {
        snprintf(f->writer_msg, sizeof f->writer_msg, "%s", es_client_errmsg(c));
    }
    es_client_destroy(c);
    return NULL;
}

/*
 * The second writer: the account example's write side (es_agg with
 * account_ops: load, decide, append with the loaded revision, retry on
 * conflict; transfers through account_transfer in one transaction) on
 * accounts 41..50. Refusals (insufficient funds) are part of the game.
 */
static void *agg_writer_main(void *arg)
{
    fixture *f = arg;
    es_client *c = make_client(f->esd.port);
    es_agg *agg = NULL;
    /* Connect first: es_snapshot_load() (the first call of a load) on a client
     * that never connected fails with ES_ERR_MALFORMED (client/ops.c takes
     * c->recv_cap, still 0, as the reply cap before cl_call connects). */
    es_err err = c ? es_client_connect(c) : ES_ERR_NO_MEMORY;
    if (err == ES_OK) {
        err = es_agg_create(c, &account_ops, NULL, NULL, &agg);
    }
    unsigned seed = 99;
    char id[16], to[16], stream[ACCOUNT_STREAM_BYTES];
    for (int i = RAW_ACCOUNTS + 1; i <= ACCOUNTS && err == ES_OK; i++) {
        snprintf(id, sizeof id, "%d", i);
        account_stream(id, stream);
        account_cmd open = {.kind = ACCOUNT_CMD_OPEN, .id = id, .owner = AGG_OWNER};
        account_cmd dep = {.kind = ACCOUNT_CMD_DEPOSIT, .id = id, .amount = 1000};
        if ((err = es_agg_execute(agg, stream, account_decide, &open, NULL, NULL)) == ES_OK) {
            err = es_agg_execute(agg, stream, account_decide, &dep, NULL, NULL);
        }
        f->agg_commands += 2;
    }
    while (err == ES_OK && !atomic_load(&f->stop_writer)) {
        int a = RAW_ACCOUNTS + 1 + (int)(rand_r(&seed) % AGG_ACCOUNTS);
        int b = RAW_ACCOUNTS + 1 + (int)(rand_r(&seed) % AGG_ACCOUNTS);
        int64_t amount = 1 + (int64_t)(rand_r(&seed) % 800);
        snprintf(id, sizeof id, "%d", a);
        snprintf(to, sizeof to, "%d", b);
        unsigned kind = rand_r(&seed) % 3;
        if (kind == 0) {
            account_stream(id, stream);
            account_cmd cmd = {.kind = ACCOUNT_CMD_DEPOSIT, .id = id, .amount = amount};
            err = es_agg_execute(agg, stream, account_decide, &cmd, NULL, NULL);
        } else if (kind == 1) {
            account_stream(id, stream);
            account_cmd cmd = {.kind = ACCOUNT_CMD_WITHDRAW, .id = id, .amount = amount};
            err = es_agg_execute(agg, stream, account_decide, &cmd, NULL, NULL);
        } else {
            err = account_transfer(agg, id, to, amount, NULL, NULL, NULL, NULL);
        }
        f->agg_commands++;
        if (err == ES_ERR_REFUSED) {
            f->agg_refusals++;
            err = ES_OK;
        }
    }
    f->agg_err = err;
    if (err != ES_OK) {
        snprintf(f->agg_msg, sizeof f->agg_msg, "%s", agg ? es_agg_errmsg(agg) : "no client");
    }
    es_agg_destroy(agg);
    es_client_destroy(c);
    return NULL;
}

/* ------------------------------------------------------------------ http -- */

static json_t *get_json(fixture *f, const char *path, int want_status)
{
    int status = 0;
    char *body = NULL;
    if (h_http(f->view.port, "GET", path, &status, &body) != 0) {
        esd_dump_log(&f->view);
        fail_msg("GET %s: no reply", path);
    }
    if (status != want_status) {
        fail_msg("GET %s: status %d, want %d: %s", path, status, want_status, body);
    }
    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    if (!j) {
        fail_msg("GET %s: not JSON (%s): %s", path, jerr.text, body);
    }
    free(body);
    return j;
}

static long long jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        fail_msg("field %s missing or not an integer", key);
    }
    return json_integer_value(v);
}

static void expect_error(fixture *f, const char *method, const char *path, int want_status)
{
    int status = 0;
    char *body = NULL;
    assert_int_equal(h_http(f->view.port, method, path, &status, &body), 0);
    if (status != want_status) {
        fail_msg("%s %s: status %d, want %d: %s", method, path, status, want_status, body);
    }
    json_t *j = json_loads(body, 0, NULL);
    if (!j || !json_is_string(json_object_get(j, "error")) ||
        !json_is_string(json_object_get(j, "message"))) {
        fail_msg("%s %s: not a JSON error: %s", method, path, body);
    }
    json_decref(j);
    free(body);
}

/* Wait until /stats shows checkpoint == head of the server. */
static json_t *wait_caught_up(fixture *f, uint64_t head, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        json_t *st = get_json(f, "/stats", 200);
        if ((uint64_t)jint(st, "checkpoint") == head && jint(st, "lag") == 0) {
            return st;
        }
        if (h_now_ms() > end) {
            fail_msg("view not caught up: checkpoint %lld head %lld lag %lld, server head %llu",
                     jint(st, "checkpoint"), jint(st, "head"), jint(st, "lag"),
                     (unsigned long long)head);
        }
        json_decref(st);
        h_sleep_ms(20);
    }
}

/* ------------------------------------------------------------------ fold -- */

typedef struct folded {
    char owner[64];
    int64_t balance;
    uint64_t revision;
    uint64_t events;
} folded;

/* A fresh fold of account-<id> through libesclient (the rehydration). */
static void fold_stream(es_client *c, int id, folded *out)
{
    memset(out, 0, sizeof *out);
    char stream[32];
    snprintf(stream, sizeof stream, "account-%d", id);
    es_read_iter *it;
    assert_int_equal(es_read_stream(c, stream, NULL, &it), ES_OK);
    const es_recorded_event *ev;
    for (;;) {
        es_err err = es_read_next(it, &ev);
        if (err != ES_OK) {
            fail_msg("read %s: %s", stream, es_strerror(err));
        }
        if (!ev) {
            break;
        }
        json_t *j = json_loadb((const char *)ev->data, ev->data_len, 0, NULL);
        assert_non_null(j);
        if (!strcmp(ev->type, "AccountOpened")) {
            snprintf(out->owner, sizeof out->owner, "%s",
                     json_string_value(json_object_get(j, "owner")));
        } else if (!strcmp(ev->type, "MoneyDeposited")) {
            out->balance += json_integer_value(json_object_get(j, "amount"));
        } else if (!strcmp(ev->type, "MoneyWithdrawn")) {
            out->balance -= json_integer_value(json_object_get(j, "amount"));
        }
        json_decref(j);
        assert_int_equal(ev->revision, out->events);
        out->revision = ev->revision;
        out->events++;
    }
    es_read_destroy(it);
}

/*
 * Every account from HTTP equals a fresh fold of its stream, the account
 * example's rehydration (es_agg_load with account_ops) and, for the raw
 * writer's accounts, its books. balances[i] receives the balance.
 */
static void verify_accounts(fixture *f, int64_t *sum, int64_t balances[ACCOUNTS + 1])
{
    *sum = 0;
    es_agg_options ao;
    es_agg_options_init(&ao);
    ao.read_snapshots = false; /* a full replay, not a snapshot */
    es_agg *agg = NULL;
    assert_int_equal(es_agg_create(f->c, &account_ops, NULL, &ao, &agg), ES_OK);
    for (int i = 1; i <= ACCOUNTS; i++) {
        folded fo;
        fold_stream(f->c, i, &fo);
        char idbuf[16], stream[ACCOUNT_STREAM_BYTES];
        snprintf(idbuf, sizeof idbuf, "%d", i);
        account_stream(idbuf, stream);
        account st;
        es_agg_load_info info;
        assert_int_equal(es_agg_load(agg, stream, &st, &info), ES_OK);
        char path[64];
        snprintf(path, sizeof path, "/accounts/%d", i);
        json_t *a = get_json(f, path, 200);
        assert_string_equal(json_string_value(json_object_get(a, "id")), idbuf);
        assert_string_equal(json_string_value(json_object_get(a, "owner")), fo.owner);
        assert_string_equal(st.owner, fo.owner);
        if (jint(a, "balance") != fo.balance || st.balance != fo.balance ||
            (i <= RAW_ACCOUNTS && fo.balance != f->acc[i].balance)) {
            fail_msg("account %d: view %lld, fold %lld, rehydrated %lld, books %lld", i,
                     jint(a, "balance"), (long long)fo.balance, (long long)st.balance,
                     i <= RAW_ACCOUNTS ? (long long)f->acc[i].balance : -1LL);
        }
        assert_int_equal(jint(a, "revision"), fo.revision);
        assert_true(info.exists);
        assert_int_equal(info.revision, fo.revision);
        if (i <= RAW_ACCOUNTS) {
            assert_string_equal(fo.owner, f->acc[i].owner);
            assert_int_equal(fo.revision + 1, f->acc[i].next_rev);
        } else {
            assert_string_equal(fo.owner, AGG_OWNER);
        }
        assert_true(json_is_string(json_object_get(a, "updated_at")));
        es_agg_state_finish(agg, &st);
        balances[i] = fo.balance;
        *sum += fo.balance;
        json_decref(a);
    }
    es_agg_destroy(agg);
}

static uint64_t server_head(fixture *f)
{
    es_stats st;
    assert_int_equal(es_stats_get(f->c, &st), ES_OK);
    return st.head_position;
}

/* -------------------------------------------------------------- fixture -- */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const char *const esd_args[] = {"--sync", "none", NULL};
    if (esd_init(&f->esd, esd_args) != 0 || esd_start(&f->esd, 10000) != 0) {
        return -1;
    }
    const char *const view_args[] = {"-s", f->esd.address, NULL};
    if (esd_init(&f->view, view_args) != 0) {
        return -1;
    }
    f->view.bin_env = "VIEW_BIN";
    f->c = make_client(f->esd.port);
    *state = f;
    return f->c ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    esd_destroy(&f->view);
    es_client_destroy(f->c);
    esd_end(&f->esd, 5000);
    free(f);
    return 0;
}

/* es-account-view against esd on port 0, its read model kept across
 * restarts; extra is one more argument for this start (e.g. "--rebuild") or
 * NULL. */
static int view_start(fixture *f, const char *extra)
{
    f->view.args[2] = NULL; /* after -s ADDRESS */
    const char *const more[] = {extra, NULL};
    if (esd_add_args(&f->view, more) != 0) {
        return -1;
    }
    return esd_start(&f->view, 10000);
}

/* ---------------------------------------------------------------- tests -- */

static void test_bank_run_with_kills(void **state)
{
    fixture *f = *state;
    assert_int_equal(view_start(f, NULL), 0);
    assert_int_equal(pthread_create(&f->writer, NULL, writer_main, f), 0);
    assert_int_equal(pthread_create(&f->agg_writer, NULL, agg_writer_main, f), 0);

    unsigned seed = 4242;
    int kills = 0;
    int64_t run_start = h_now_ms();
    for (; kills < KILLS; kills++) {
        /* a random moment: 50..700 ms after the (re)start, events streaming in */
        h_sleep_ms(50 + (int)(rand_r(&seed) % 650));
        int status = 0;
        esd_stop(&f->view, SIGKILL, 5000, &status, NULL);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        assert_int_equal(view_start(f, NULL), 0);
        /* whatever the moment of death: the read model equals its checkpoint */
        json_t *st = get_json(f, "/stats", 200);
        if (jint(st, "events") != jint(st, "checkpoint")) {
            fail_msg("after kill %d: %lld events folded at checkpoint %lld", kills + 1,
                     jint(st, "events"), jint(st, "checkpoint"));
        }
        json_decref(st);
    }
    atomic_store(&f->stop_writer, true);
    pthread_join(f->writer, NULL);
    pthread_join(f->agg_writer, NULL);
    if (f->writer_err != ES_OK) {
        fail_msg("writer: %s (%s)", es_strerror(f->writer_err), f->writer_msg);
    }
    if (f->agg_err != ES_OK) {
        fail_msg("aggregate writer: %s (%s)", es_strerror(f->agg_err), f->agg_msg);
    }
    uint64_t head = server_head(f);
    int64_t t0 = h_now_ms();
    json_t *st = wait_caught_up(f, head, 60000);
    print_message("bank run: %llu deposits, %llu transfers, %llu events in %lld ms, %d SIGKILLs "
                  "of the view; caught up %lld ms after the writer stopped\n",
                  (unsigned long long)f->deposits, (unsigned long long)f->transfers,
                  (unsigned long long)head, (long long)(t0 - run_start), kills,
                  (long long)(h_now_ms() - t0));
    print_message("aggregate writer: %llu commands (%llu refused)\n",
                  (unsigned long long)f->agg_commands, (unsigned long long)f->agg_refusals);
    assert_true(f->transfers > 100);
    assert_true(f->agg_commands > 100);

    int64_t sum;
    int64_t balances[ACCOUNTS + 1];
    verify_accounts(f, &sum, balances);
    assert_int_equal(jint(st, "accounts"), ACCOUNTS);
    assert_int_equal(jint(st, "total_balance"), sum);
    assert_int_equal(jint(st, "events"), head); /* each event of the log folded exactly once */
    assert_int_equal(jint(st, "skipped_events"), 0);
    assert_int_equal(jint(st, "head"), head);
    assert_true(json_is_true(json_object_get(st, "caught_up")));
    assert_true(json_is_null(json_object_get(st, "error")));
    json_decref(st);

    /* ---- list queries ---- */
    json_t *l = get_json(f, "/accounts?per_page=1000", 200);
    assert_int_equal(jint(l, "total"), ACCOUNTS);
    assert_int_equal(jint(l, "page"), 1);
    assert_int_equal(jint(l, "per_page"), 1000);
    json_t *arr = json_object_get(l, "accounts");
    assert_int_equal(json_array_size(arr), ACCOUNTS);
    for (size_t i = 0; i < ACCOUNTS; i++) {
        char idbuf[16];
        snprintf(idbuf, sizeof idbuf, "%zu", i + 1); /* numeric ids in numeric order */
        assert_string_equal(json_string_value(json_object_get(json_array_get(arr, i), "id")),
                            idbuf);
    }
    json_decref(l);
    l = get_json(f, "/accounts?page=8&per_page=7", 200); /* 50 = 7 x 7 + 1 */
    assert_int_equal(json_array_size(json_object_get(l, "accounts")), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(l, "accounts"), 0), "id")),
        "50");
    json_decref(l);
    l = get_json(f, "/accounts", 200); /* defaults */
    assert_int_equal(jint(l, "per_page"), 20);
    assert_int_equal(json_array_size(json_object_get(l, "accounts")), 20);
    json_decref(l);
    l = get_json(f, "/accounts?owner=owner-3&per_page=1000", 200);
    assert_int_equal(jint(l, "total"), RAW_ACCOUNTS / OWNERS);
    json_decref(l);
    l = get_json(f, "/accounts?owner=" AGG_OWNER, 200);
    assert_int_equal(jint(l, "total"), AGG_ACCOUNTS);
    json_decref(l);
    int64_t threshold = 1000;
    int want = 0;
    for (int i = 1; i <= ACCOUNTS; i++) {
        want += balances[i] >= threshold;
    }
    l = get_json(f, "/accounts?min_balance=1000&per_page=1000", 200);
    assert_int_equal(jint(l, "total"), want);
    json_decref(l);
    l = get_json(f, "/accounts?owner=nobody", 200);
    assert_int_equal(jint(l, "total"), 0);
    json_decref(l);

    /* ---- errors ---- */
    expect_error(f, "GET", "/accounts/99999", 404);
    expect_error(f, "GET", "/accounts/", 404);
    expect_error(f, "GET", "/accounts/1/x", 404);
    expect_error(f, "GET", "/nope", 404);
    expect_error(f, "GET", "/", 404);
    expect_error(f, "GET", "/accounts?page=abc", 400);
    expect_error(f, "GET", "/accounts?page=0", 400);
    expect_error(f, "GET", "/accounts?page=-1", 400);
    expect_error(f, "GET", "/accounts?per_page=0", 400);
    expect_error(f, "GET", "/accounts?per_page=1001", 400);
    expect_error(f, "GET", "/accounts?per_page=1e3", 400);
    expect_error(f, "GET", "/accounts?min_balance=-1", 400);
    expect_error(f, "GET", "/accounts?min_balance=x", 400);
    expect_error(f, "POST", "/accounts", 405);
    expect_error(f, "DELETE", "/accounts/1", 405);

    /* ---- clean stop ---- */
    int status = 0;
    int64_t s0 = h_now_ms();
    assert_int_equal(esd_stop(&f->view, SIGTERM, 5000, &status, NULL), 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    print_message("SIGTERM: exit 0 after %lld ms\n", (long long)(h_now_ms() - s0));

    /* ---- rebuild from zero gives the same read model ---- */
    assert_int_equal(view_start(f, "--rebuild"), 0);
    int64_t r0 = h_now_ms();
    st = wait_caught_up(f, head, 60000);
    int64_t rms = h_now_ms() - r0;
    print_message("rebuild through es-account-view: %llu events in %lld ms = %.0f events/s\n",
                  (unsigned long long)head, (long long)rms,
                  (double)head * 1000.0 / (double)(rms ? rms : 1));
    assert_int_equal(jint(st, "events"), head);
    assert_int_equal(jint(st, "total_balance"), sum);
    assert_int_equal(jint(st, "rebuilds"), 1);
    json_decref(st);
    int64_t sum2;
    verify_accounts(f, &sum2, balances);
    assert_int_equal(sum2, sum);

    /* ---- esd gone: queries still served, /stats says so, SIGTERM still prompt ---- */
    assert_int_equal(esd_stop(&f->esd, SIGTERM, 5000, NULL, NULL), 0);
    int64_t gone = h_now_ms();
    json_t *j = NULL;
    do {
        json_decref(j);
        h_sleep_ms(50);
        j = get_json(f, "/stats", 200);
    } while (json_is_null(json_object_get(j, "error")) && h_now_ms() - gone < 10000);
    assert_true(json_is_string(json_object_get(j, "error")));
    assert_false(json_is_true(json_object_get(j, "caught_up")));
    assert_int_equal(jint(j, "events"), head);
    json_decref(j);
    j = get_json(f, "/accounts/1", 200);
    json_decref(j);
    s0 = h_now_ms();
    assert_int_equal(esd_stop(&f->view, SIGTERM, 5000, &status, NULL), 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    print_message("SIGTERM with esd down: exit 0 after %lld ms\n", (long long)(h_now_ms() - s0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bank_run_with_kills, setup, teardown),
    };
    return cmocka_run_group_tests_name("account_view", tests, NULL, NULL);
}

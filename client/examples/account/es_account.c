/*
 * es-account — the bank-account example of esd: accounts as event-sourced
 * aggregates (es/aggregate.h), transfers as two-stream transactions.
 *
 *   es-account [-s HOST:PORT] [--json] [--snapshot-every N] COMMAND ARGS
 *
 * Exit status: 0 done; 1 refused (or failed), with the reason on stderr;
 * 2 usage error; 3 cannot connect to the server.
 *
 * Design notes: options are accepted anywhere on the line (before or after
 * the command and its arguments); an argument that starts with '-' and a
 * digit is an argument, not an option, so `withdraw 42 -3` is rejected as
 * an amount with a clear message. Arguments are checked before connecting,
 * so a usage error never waits for a server. The connection is made
 * explicitly first, so that "cannot connect" (3) is told apart from a
 * refusal or a failed operation (1). With --json, results are one JSON
 * object per line on stdout and errors one JSON object on stderr.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "account.h"
#include "token.h"

enum {
    EXIT_DONE = 0,
    EXIT_REFUSED = 1,
    EXIT_USAGE = 2,
    EXIT_CONNECT = 3,
};

#define MAX_POS 4

typedef struct cli {
    const char *server;
    const char *user;       /* --user, else $ES_USER */
    const char *token_file; /* --token-file (token.h) */
    tool_tls tls;           /* --tls, --tls-ca, --tls-server-name, --tls-insecure */
    bool json;
    bool help;
    uint32_t snapshot_every;
    const char *owner;
    const char *cmd;
    const char *pos[MAX_POS];
    int npos;
} cli;

typedef struct command {
    const char *name;
    const char *args;
    int npos;
    const char *summary;
    const char *help;
    int (*run)(cli *x, es_agg *a);
} command;

static const char GLOBAL_HELP[] =
    "Options (anywhere on the line):\n"
    "  -s, --server HOST:PORT  the server (default $ES_SERVER, else " ES_DEFAULT_ADDRESS ")\n"
    "      --user NAME         user for the hello (default $ES_USER)\n"
    "      --token-file FILE   token for the hello (default $ES_TOKEN_FILE, else the\n"
    "                          token in $ES_TOKEN)\n"
    "      --tls               TLS, verifying the server against the system's CAs\n"
    "                          (default: on when $ES_TLS is 1)\n"
    "      --tls-ca FILE       TLS, verifying the server against the CAs in FILE\n"
    "                          (default $ES_TLS_CA)\n"
    "      --tls-server-name N the name the server's certificate must carry\n"
    "      --tls-insecure      TLS without verifying the server (tests only)\n"
    "      --json              results as one JSON object per line, errors as JSON on stderr\n"
    "      --snapshot-every N  save a snapshot once N events follow the last one\n"
    "                          (default 100; 0: never automatically)\n"
    "  -h, --help              help\n"
    "\n"
    "Exit status: 0 done, 1 refused or failed (reason on stderr), 2 usage error,\n"
    "3 cannot connect.\n";

/* ------------------------------------------------------------- output -- */

static void print_json(json_t *o, FILE *f)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s != NULL) {
        fprintf(f, "%s\n", s);
        free(s);
    }
    json_decref(o);
}

/* A refusal or a failure of an operation: exit 1. */
static int report(const cli *x, es_agg *a, es_err rv, const char *what)
{
    const char *msg = es_agg_errmsg(a);
    if (msg == NULL || *msg == '\0') {
        msg = es_strerror(rv);
    }
    if (x->json) {
        json_t *o = json_object();
        if (rv == ES_ERR_REFUSED) {
            json_object_set_new(o, "error", json_string("refused"));
            json_object_set_new(o, "reason",
                                json_string(account_refusal_name(es_agg_refusal_reason(a))));
        } else {
            json_object_set_new(o, "error", json_string(es_errname(rv)));
        }
        json_object_set_new(o, "message", json_string(msg));
        print_json(o, stderr);
    } else if (rv == ES_ERR_REFUSED) {
        fprintf(stderr, "es-account: refused: %s\n", msg);
    } else {
        fprintf(stderr, "es-account: %s failed: %s (%s)\n", what, msg, es_errname(rv));
    }
    return EXIT_REFUSED;
}

/* An account that does not exist or is not open, for commands that only
 * read: the same refusal as the decisions give. */
static int refuse_not_open(const cli *x, const char *id)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "account %s is not open", id);
    if (x->json) {
        print_json(json_pack("{s:s, s:s, s:s}", "error", "refused", "reason",
                             account_refusal_name(ACCOUNT_REFUSED_NOT_OPEN), "message", msg),
                   stderr);
    } else {
        fprintf(stderr, "es-account: refused: %s\n", msg);
    }
    return EXIT_REFUSED;
}

/* "2024-05-01T12:00:00.123456Z" */
static void format_time(uint64_t us, char *out, size_t cap)
{
    time_t secs = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%06uZ", base, (unsigned)(us % 1000000u));
}

/* ----------------------------------------------------------- commands -- */

static int cmd_open(cli *x, es_agg *a)
{
    const char *id = x->pos[0];
    char stream[ACCOUNT_STREAM_BYTES];
    account_stream(id, stream);
    account_cmd cmd = {.kind = ACCOUNT_CMD_OPEN, .id = id, .owner = x->owner};
    account after;
    es_agg_result res;
    es_err rv = es_agg_execute(a, stream, account_decide, &cmd, &after, &res);
    if (rv != ES_OK) {
        return report(x, a, rv, "open");
    }
    if (x->json) {
        print_json(json_pack("{s:s, s:s, s:I, s:I}", "id", id, "owner", after.owner, "balance",
                             (json_int_t)after.balance, "revision", (json_int_t)res.revision),
                   stdout);
    } else {
        printf("opened account %s for %s (revision %" PRIu64 ")\n", id, after.owner, res.revision);
    }
    return EXIT_DONE;
}

static int cmd_deposit_withdraw(cli *x, es_agg *a, account_cmd_kind kind)
{
    const char *id = x->pos[0];
    char stream[ACCOUNT_STREAM_BYTES];
    account_stream(id, stream);
    account_cmd cmd = {.kind = kind, .id = id};
    account_parse_amount(x->pos[1], &cmd.amount);
    account after;
    es_agg_result res;
    bool dep = kind == ACCOUNT_CMD_DEPOSIT;
    es_err rv = es_agg_execute(a, stream, account_decide, &cmd, &after, &res);
    if (rv != ES_OK) {
        return report(x, a, rv, dep ? "deposit" : "withdraw");
    }
    if (x->json) {
        print_json(json_pack("{s:s, s:I, s:I, s:I}", "id", id, "amount", (json_int_t)cmd.amount,
                             "balance", (json_int_t)after.balance, "revision",
                             (json_int_t)res.revision),
                   stdout);
    } else {
        printf("%s %" PRId64 " %s account %s: balance %" PRId64 " (revision %" PRIu64 ")\n",
               dep ? "deposited" : "withdrew", cmd.amount, dep ? "to" : "from", id, after.balance,
               res.revision);
    }
    return EXIT_DONE;
}

static int cmd_deposit(cli *x, es_agg *a)
{
    return cmd_deposit_withdraw(x, a, ACCOUNT_CMD_DEPOSIT);
}

static int cmd_withdraw(cli *x, es_agg *a)
{
    return cmd_deposit_withdraw(x, a, ACCOUNT_CMD_WITHDRAW);
}

static int cmd_transfer(cli *x, es_agg *a)
{
    const char *from = x->pos[0], *to = x->pos[1];
    int64_t amount = 0;
    account_parse_amount(x->pos[2], &amount);
    account fa, ta;
    es_agg_target t[2];
    es_agg_result res;
    es_err rv = account_transfer(a, from, to, amount, &fa, &ta, t, &res);
    if (rv != ES_OK) {
        return report(x, a, rv, "transfer");
    }
    if (x->json) {
        print_json(json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "from", from, "to", to,
                             "amount", (json_int_t)amount, "from_balance", (json_int_t)fa.balance,
                             "to_balance", (json_int_t)ta.balance, "from_revision",
                             (json_int_t)t[0].revision, "to_revision", (json_int_t)t[1].revision),
                   stdout);
    } else {
        printf("transferred %" PRId64 " from account %s to account %s\n", amount, from, to);
        printf("  %s: balance %" PRId64 " (revision %" PRIu64 ")\n", from, fa.balance,
               t[0].revision);
        printf("  %s: balance %" PRId64 " (revision %" PRIu64 ")\n", to, ta.balance, t[1].revision);
    }
    return EXIT_DONE;
}

static int cmd_balance(cli *x, es_agg *a)
{
    const char *id = x->pos[0];
    char stream[ACCOUNT_STREAM_BYTES];
    account_stream(id, stream);
    account acc;
    es_agg_load_info info;
    es_err rv = es_agg_load(a, stream, &acc, &info);
    if (rv != ES_OK) {
        return report(x, a, rv, "balance");
    }
    es_agg_state_finish(a, &acc);
    if (!acc.open) {
        return refuse_not_open(x, id);
    }
    if (x->json) {
        print_json(json_pack("{s:s, s:s, s:I, s:I, s:I}", "id", id, "owner", acc.owner, "balance",
                             (json_int_t)acc.balance, "revision", (json_int_t)info.revision,
                             "replayed", (json_int_t)info.replayed),
                   stdout);
    } else {
        printf("account %s (owner %s): balance %" PRId64 ", revision %" PRIu64 ", replayed %" PRIu64
               " event%s",
               id, acc.owner, acc.balance, info.revision, info.replayed,
               info.replayed == 1 ? "" : "s");
        if (info.from_snapshot) {
            printf(" after the snapshot at revision %" PRIu64, info.snapshot_revision);
        } else if (info.snapshot_ignored) {
            printf(" (a snapshot of another format was ignored)");
        }
        printf("\n");
    }
    return EXIT_DONE;
}

static int cmd_history(cli *x, es_agg *a)
{
    const char *id = x->pos[0];
    char stream[ACCOUNT_STREAM_BYTES];
    account_stream(id, stream);
    es_client *c = es_agg_client(a);
    es_read_iter *it = NULL;
    es_err rv = es_read_stream(c, stream, NULL, &it);
    account acc;
    memset(&acc, 0, sizeof(acc));
    uint64_t n = 0;
    while (rv == ES_OK) {
        const es_recorded_event *ev = NULL;
        rv = es_read_next(it, &ev);
        if (rv != ES_OK || ev == NULL) {
            break;
        }
        rv = account_apply(NULL, &acc, ev);
        if (rv != ES_OK) {
            fprintf(stderr,
                    "es-account: %s revision %" PRIu64 " (%s) is not a valid account event\n",
                    stream, ev->revision, ev->type);
            es_read_destroy(it);
            return EXIT_REFUSED;
        }
        char when[48];
        format_time(ev->recorded_at_us, when, sizeof(when));
        int64_t amount = 0;
        bool has_amount = account_event_amount(ev, &amount);
        if (x->json) {
            json_t *o = json_pack("{s:I, s:I, s:s}", "revision", (json_int_t)ev->revision,
                                  "position", (json_int_t)ev->position, "type", ev->type);
            if (has_amount) {
                json_object_set_new(o, "amount", json_integer((json_int_t)amount));
            } else {
                json_object_set_new(o, "owner", json_string(acc.owner));
            }
            json_object_set_new(o, "balance", json_integer((json_int_t)acc.balance));
            json_object_set_new(o, "recorded_at", json_string(when));
            print_json(o, stdout);
        } else {
            if (n == 0) {
                printf("%-8s %-15s %14s %14s  %s\n", "REVISION", "TYPE", "AMOUNT", "BALANCE",
                       "RECORDED AT");
            }
            char amt[32];
            if (has_amount) {
                snprintf(amt, sizeof(amt), "%s%" PRId64,
                         strcmp(ev->type, ACCOUNT_WITHDRAWN) == 0 ? "-" : "+", amount);
            } else {
                snprintf(amt, sizeof(amt), "-");
            }
            printf("%-8" PRIu64 " %-15s %14s %14" PRId64 "  %s", ev->revision, ev->type, amt,
                   acc.balance, when);
            if (!has_amount) {
                printf("  owner %s", acc.owner);
            }
            printf("\n");
        }
        n++;
    }
    es_read_destroy(it);
    if (rv == ES_ERR_NOT_FOUND) {
        return refuse_not_open(x, id);
    }
    if (rv != ES_OK) {
        const char *m = es_client_errmsg(c);
        if (x->json) {
            print_json(json_pack("{s:s, s:s}", "error", es_errname(rv), "message",
                                 (m && *m) ? m : es_strerror(rv)),
                       stderr);
        } else {
            fprintf(stderr, "es-account: history failed: %s (%s)\n",
                    (m && *m) ? m : es_strerror(rv), es_errname(rv));
        }
        return EXIT_REFUSED;
    }
    return EXIT_DONE;
}

static int cmd_snapshot(cli *x, es_agg *a)
{
    const char *id = x->pos[0];
    char stream[ACCOUNT_STREAM_BYTES];
    account_stream(id, stream);
    uint64_t rev = 0;
    bool saved = false;
    es_err rv = es_agg_snapshot(a, stream, &rev, &saved);
    if (rv == ES_ERR_NOT_FOUND) {
        return refuse_not_open(x, id);
    }
    if (rv != ES_OK) {
        return report(x, a, rv, "snapshot");
    }
    if (x->json) {
        print_json(
            json_pack("{s:s, s:I, s:b}", "id", id, "revision", (json_int_t)rev, "saved", saved),
            stdout);
    } else if (saved) {
        printf("snapshot of account %s saved at revision %" PRIu64 "\n", id, rev);
    } else {
        printf("snapshot of account %s already current at revision %" PRIu64 "\n", id, rev);
    }
    return EXIT_DONE;
}

static const command COMMANDS[] = {
    {"open", "ID --owner NAME", 1, "open an account",
     "Open account ID for NAME (AccountOpened). Refused when it is already open.\n", cmd_open},
    {"deposit", "ID AMOUNT", 2, "deposit into an account",
     "Deposit AMOUNT (a positive integer, in minor units) into account ID\n"
     "(MoneyDeposited). Refused when the account is not open or the balance would\n"
     "overflow.\n",
     cmd_deposit},
    {"withdraw", "ID AMOUNT", 2, "withdraw from an account (no overdraft)",
     "Withdraw AMOUNT from account ID (MoneyWithdrawn). Refused when the account is\n"
     "not open or has less than AMOUNT (no overdraft).\n",
     cmd_withdraw},
    {"transfer", "FROM TO AMOUNT", 3, "move money between accounts, atomically",
     "Move AMOUNT from account FROM to account TO: MoneyWithdrawn on FROM and\n"
     "MoneyDeposited on TO, appended in one transaction that expects both accounts\n"
     "at the revisions the decision was made on (retried on a concurrent change).\n"
     "Refused when either is not open, FROM has less than AMOUNT, TO would\n"
     "overflow, or FROM is TO.\n",
     cmd_transfer},
    {"balance", "ID", 1, "balance, revision, events replayed",
     "The balance of account ID, rebuilt by replaying its events (after its latest\n"
     "snapshot when there is one): prints the balance, the revision it reflects and\n"
     "how many events were replayed. --json: {\"id\",\"owner\",\"balance\",\"revision\",\n"
     "\"replayed\"}.\n",
     cmd_balance},
    {"history", "ID", 1, "events with the running balance",
     "Every event of account ID with the running balance (a full replay).\n", cmd_history},
    {"snapshot", "ID", 1, "save a snapshot now",
     "Save a snapshot of account ID now (they are also saved every\n"
     "--snapshot-every events by the commands that write).\n",
     cmd_snapshot},
};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static void usage_main(FILE *f)
{
    fprintf(f, "usage: es-account [-s HOST:PORT] [--json] COMMAND ARGS\n\n"
               "The bank-account example of esd: each account is the stream account-ID,\n"
               "rebuilt from its events; a transfer is one transaction over two streams.\n\n"
               "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", COMMANDS[i].name, COMMANDS[i].args);
        fprintf(f, "  %-26s %s\n", left, COMMANDS[i].summary);
    }
    fprintf(f, "  %-26s %s\n\n", "help [COMMAND]", "help on a command");
    fprintf(f,
            "IDs: 1..%d characters of A-Z a-z 0-9 _ . -; amounts: positive integers in\n"
            "minor units (1..9223372036854775807).\n\n%s",
            ACCOUNT_ID_MAX, GLOBAL_HELP);
}

static void usage_cmd(FILE *f, const command *c)
{
    fprintf(f, "usage: es-account %s %s\n\n%s\n%s", c->name, c->args, c->help, GLOBAL_HELP);
}

__attribute__((format(printf, 2, 3))) static int usage_error(const command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "es-account: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (c != NULL) {
        fprintf(stderr, "usage: es-account %s %s\n", c->name, c->args);
    }
    fprintf(stderr, "(es-account --help for more)\n");
    return EXIT_USAGE;
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(COMMANDS[i].name, name) == 0) {
            return &COMMANDS[i];
        }
    }
    return NULL;
}

/* An option with a value: "--name VALUE" or "--name=VALUE" (or "-s VALUE").
 * @return 1 matched (value set), 0 not this option, -1 missing value. */
static int opt_value(int argc, char **argv, int *i, const char *lng, const char *shrt,
                     const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(lng);
    if (strncmp(a, lng, n) == 0 && a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (strcmp(a, lng) != 0 && (shrt == NULL || strcmp(a, shrt) != 0)) {
        return 0;
    }
    if (*i + 1 >= argc) {
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

/* @return -1 to go on, or an exit status. */
static int parse(cli *x, int argc, char **argv, const command **cmdp)
{
    bool only_pos = false;
    bool extra = false;
    const char *extra_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_opt = !only_pos && a[0] == '-' && a[1] != '\0' && !(a[1] >= '0' && a[1] <= '9');
        if (is_opt) {
            const char *v = NULL;
            int m;
            if (strcmp(a, "--") == 0) {
                only_pos = true;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                x->help = true;
            } else if (strcmp(a, "--tls") == 0) {
                x->tls.tls = true;
            } else if (strcmp(a, "--tls-insecure") == 0) {
                x->tls.insecure = true;
            } else if ((m = opt_value(argc, argv, &i, "--tls-ca", NULL, &v)) != 0) {
                if (m < 0) {
                    return usage_error(NULL, "%s needs a FILE", a);
                }
                x->tls.ca_file = v;
            } else if ((m = opt_value(argc, argv, &i, "--tls-server-name", NULL, &v)) != 0) {
                if (m < 0) {
                    return usage_error(NULL, "%s needs a NAME", a);
                }
                x->tls.server_name = v;
            } else if (strcmp(a, "--json") == 0) {
                x->json = true;
            } else if ((m = opt_value(argc, argv, &i, "--server", "-s", &v)) != 0) {
                if (m < 0) {
                    return usage_error(NULL, "%s needs HOST:PORT", a);
                }
                x->server = v;
            } else if ((m = opt_value(argc, argv, &i, "--user", NULL, &v)) != 0) {
                if (m < 0) {
                    return usage_error(NULL, "%s needs a NAME", a);
                }
                x->user = v;
            } else if ((m = opt_value(argc, argv, &i, "--token-file", NULL, &v)) != 0) {
                if (m < 0) {
                    return usage_error(NULL, "%s needs a FILE", a);
                }
                x->token_file = v;
            } else if ((m = opt_value(argc, argv, &i, "--owner", NULL, &v)) != 0) {
                if (m < 0) {
                    return usage_error(NULL, "%s needs a NAME", a);
                }
                x->owner = v;
            } else if ((m = opt_value(argc, argv, &i, "--snapshot-every", NULL, &v)) != 0) {
                int64_t n = 0;
                if (m < 0) {
                    return usage_error(NULL, "%s needs a number", a);
                }
                if (strcmp(v, "0") == 0) {
                    x->snapshot_every = 0;
                } else if (!account_parse_amount(v, &n) || n > UINT32_MAX) {
                    return usage_error(NULL, "--snapshot-every wants 0..4294967295, not \"%s\"", v);
                } else {
                    x->snapshot_every = (uint32_t)n;
                }
            } else {
                return usage_error(NULL, "unknown option %s", a);
            }
            continue;
        }
        if (x->cmd == NULL) {
            x->cmd = a;
        } else if (x->npos < MAX_POS) {
            x->pos[x->npos++] = a;
        } else if (!extra) {
            extra = true;
            extra_arg = a;
        }
    }
    if (x->cmd == NULL) {
        if (x->help) {
            usage_main(stdout);
            return EXIT_DONE;
        }
        usage_main(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(x->cmd, "help") == 0) {
        if (x->npos == 0) {
            usage_main(stdout);
            return EXIT_DONE;
        }
        const command *c = find_command(x->pos[0]);
        if (c == NULL) {
            return usage_error(NULL, "no command \"%s\"", x->pos[0]);
        }
        usage_cmd(stdout, c);
        return EXIT_DONE;
    }
    const command *c = find_command(x->cmd);
    if (c == NULL) {
        return usage_error(NULL, "unknown command \"%s\"", x->cmd);
    }
    if (x->help) {
        usage_cmd(stdout, c);
        return EXIT_DONE;
    }
    if (extra || x->npos > c->npos) {
        return usage_error(c, "unexpected argument \"%s\"", extra ? extra_arg : x->pos[c->npos]);
    }
    if (x->npos < c->npos) {
        return usage_error(c, "missing argument");
    }
    if (x->owner != NULL && strcmp(c->name, "open") != 0) {
        return usage_error(c, "--owner is an option of open only");
    }
    /* Account ids: every positional of these commands except amounts. */
    int ids = strcmp(c->name, "transfer") == 0 ? 2 : 1;
    for (int i = 0; i < ids; i++) {
        if (!account_valid_id(x->pos[i])) {
            return usage_error(c, "bad account id \"%s\" (1..64 of A-Z a-z 0-9 _ . -)", x->pos[i]);
        }
    }
    if (c->npos > ids) {
        int64_t amount;
        const char *s = x->pos[c->npos - 1];
        if (!account_parse_amount(s, &amount)) {
            return usage_error(
                c, "bad amount \"%s\": a positive integer in minor units (1..9223372036854775807)",
                s);
        }
    }
    if (strcmp(c->name, "open") == 0) {
        if (x->owner == NULL) {
            return usage_error(c, "open needs --owner NAME");
        }
        if (!account_valid_owner(x->owner)) {
            return usage_error(c,
                               "bad owner \"%s\": 1..200 bytes of UTF-8 without control "
                               "characters",
                               x->owner);
        }
    }
    *cmdp = c;
    return -1;
}

int main(int argc, char **argv)
{
    cli x;
    memset(&x, 0, sizeof(x));
    x.snapshot_every = 100;
    const command *c = NULL;
    int rc = parse(&x, argc, argv, &c);
    if (rc >= 0) {
        return rc;
    }
    if (x.server == NULL) {
        x.server = getenv("ES_SERVER");
    }
    if (x.server == NULL || *x.server == '\0') {
        x.server = ES_DEFAULT_ADDRESS;
    }

    es_client_options o;
    es_client_options_init(&o);
    o.address = x.server;
    o.client_name = "es-account";
    o.connect_timeout_ms = 3000;
    o.reconnect_attempts = 2;
    o.breaker_threshold = 0;
    o.user = x.user ? x.user : getenv("ES_USER");
    tool_tls_apply(&x.tls, &o, "es-account");
    static tool_token tok; /* es_client_create copies it */
    if (tool_token_load(&tok, x.token_file, "es-account") != 0) {
        return EXIT_USAGE;
    }
    if (tok.len > 0) {
        o.token = tok.bytes;
        o.token_len = tok.len;
    }
    es_client *cl = NULL;
    es_err rv = es_client_create(&o, &cl);
    tool_token_wipe(&tok);
    if (rv != ES_OK) {
        return usage_error(NULL, "bad server address \"%s\"", x.server);
    }
    rv = es_client_connect(cl);
    if (rv != ES_OK) {
        const char *m = es_client_errmsg(cl);
        if (x.json) {
            print_json(json_pack("{s:s, s:s, s:s}", "error", es_errname(rv), "server", x.server,
                                 "message", (m && *m) ? m : es_strerror(rv)),
                       stderr);
        } else {
            /* The client's message names the address already. */
            if (m != NULL && *m != '\0') {
                fprintf(stderr, "es-account: %s\n", m);
            } else {
                fprintf(stderr, "es-account: cannot connect to %s: %s\n", x.server,
                        es_strerror(rv));
            }
        }
        es_client_destroy(cl);
        return EXIT_CONNECT;
    }
    es_agg_options ao;
    es_agg_options_init(&ao);
    ao.snapshot_every = x.snapshot_every;
    es_agg *a = NULL;
    rv = es_agg_create(cl, &account_ops, NULL, &ao, &a);
    if (rv != ES_OK) {
        fprintf(stderr, "es-account: %s\n", es_strerror(rv));
        es_client_destroy(cl);
        return EXIT_REFUSED;
    }
    rc = c->run(&x, a);
    es_agg_destroy(a);
    es_client_destroy(cl);
    return rc;
}

/*
 * esctl — inspect and drive an esd event store from the shell.
 *
 *   esctl [-s HOST:PORT] [--json] COMMAND [ARGS] [OPTIONS]
 *
 * Commands talking to esd (through libesclient): ping, stats, append,
 * read, read-all, streams, info, tail (a subscription followed until
 * SIGINT/SIGTERM). Offline commands on a data directory
 * (through the store library, read-only): db stat, db check, db backup.
 *
 * Design notes: global options are accepted before and after the command.
 * The server address comes from -s, else $ES_SERVER, else
 * ES_DEFAULT_ADDRESS. Credentials come from --user/$ES_USER and from
 * --token-file, $ES_TOKEN_FILE or $ES_TOKEN (token.h): the token itself is
 * never taken from the command line, where `ps` would show it. The connection is made explicitly
 * first, so that "cannot connect" (exit 3) is told apart from a failed operation (exit 1).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "es/group.h"
#include "esctl.h"
#include "token.h"

#define MAX_INPUT_BYTES (64u * 1024u * 1024u)

enum {
    OPT_JSON = 0x100,
    OPT_USER,
    OPT_TOKEN_FILE,
    OPT_TLS,
    OPT_TLS_CA,
    OPT_TLS_INSECURE,
    OPT_TLS_NAME,
    OPT_TIMEOUT,
    OPT_EXPECTED,
    OPT_ID,
    OPT_METADATA,
    OPT_CONTENT_TYPE,
    OPT_FROM,
    OPT_BACKWARD,
    OPT_LIMIT,
    OPT_AFTER,
    OPT_CATEGORY,
    OPT_TYPE,
    OPT_PREFIX,
    OPT_ALL,
    OPT_FROM_START,
    OPT_FORCE,
    OPT_MAX_COUNT,
    OPT_MAX_AGE,
    OPT_TRUNCATE_BEFORE,
    /* esctl group */
    OPT_G_STREAM,
    OPT_FROM_END,
    OPT_ACK_TIMEOUT,
    OPT_MAX_RETRIES,
    OPT_MAX_IN_FLIGHT,
    OPT_PARK_BLOCKS,
};

#define GLOBAL_LONGOPTS                                                                            \
    {"server", required_argument, NULL, 's'}, {"json", no_argument, NULL, OPT_JSON},               \
        {"user", required_argument, NULL, OPT_USER},                                               \
        {"token-file", required_argument, NULL, OPT_TOKEN_FILE},                                   \
        {"tls", no_argument, NULL, OPT_TLS}, {"tls-ca", required_argument, NULL, OPT_TLS_CA},      \
        {"tls-insecure", no_argument, NULL, OPT_TLS_INSECURE},                                     \
        {"tls-server-name", required_argument, NULL, OPT_TLS_NAME},                                \
        {"timeout", required_argument, NULL, OPT_TIMEOUT},                                         \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

static const char *user_name;
static const char *token_file;
static tool_tls tls_opts;

static const char GLOBAL_HELP[] =
    "Global options (before or after the command):\n"
    "  -s, --server HOST:PORT  the server (default $ES_SERVER, else " ES_DEFAULT_ADDRESS ")\n"
    "      --json              one JSON object per line\n"
    "      --user NAME         user for the handshake (default $ES_USER)\n"
    "      --token-file FILE   token for the handshake (default $ES_TOKEN_FILE, else\n"
    "                          the token in $ES_TOKEN)\n"
    "      --tls               TLS, verifying the server against the system's CAs\n"
    "                          (default: on when $ES_TLS is 1)\n"
    "      --tls-ca FILE       TLS, verifying the server against the CAs in FILE\n"
    "                          (default $ES_TLS_CA)\n"
    "      --tls-server-name N the name the server's certificate must carry\n"
    "                          (default: the host of --server)\n"
    "      --tls-insecure      TLS without verifying the server (tests only)\n"
    "      --timeout MS        request timeout in milliseconds (default 30000)\n"
    "  -h, --help              this help\n";

static void usage_main(FILE *f)
{
    fprintf(f,
            "usage: esctl [-s HOST:PORT] [--json] COMMAND [ARGS] [OPTIONS]\n"
            "\n"
            "Commands:\n"
            "  ping                          round trip to the server\n"
            "  stats                         server statistics\n"
            "  append STREAM TYPE DATA       append one event (DATA: JSON text, @FILE or -)\n"
            "  read STREAM                   events of a stream\n"
            "  read-all                      events of the global log\n"
            "  streams                       list streams\n"
            "  info STREAM                   a stream's record\n"
            "  stream delete STREAM          soft-delete a stream (--expected REV)\n"
            "  stream tombstone STREAM       delete for ever (--expected REV or --force)\n"
            "  stream erase STREAM           destroy its data key: erased from every copy\n"
            "                                (--expected REV or --force; admin role)\n"
            "  subject erase ID --force      erase every stream of a data subject\n"
            "  stream meta STREAM            show or set retention (--max-count,\n"
            "                                --max-age, --truncate-before)\n"
            "  tail [STREAM | --all | ...]   follow new events as they are appended (tail -f)\n"
            "  group create NAME TARGET      a consumer group (--all, --stream S, --category C,\n"
            "                                --type T or --prefix P; settings: esctl help group)\n"
            "  group list|info|delete NAME   consumer groups\n"
            "  group parked|replay-parked NAME  a group's parked events: list, deliver again\n"
            "  db stat DIR                   offline: statistics of a data directory\n"
            "  db check DIR                  offline: verify a data directory\n"
            "  db backup DIR DEST            offline: consistent compacted copy\n"
            "  help [COMMAND]                help on a command\n"
            "\n"
            "%s"
            "\n"
            "Exit status: 0 ok, 1 the operation failed, 2 usage error, 3 cannot connect.\n",
            GLOBAL_HELP);
}

/* ------------------------------------------------------------- helpers -- */

bool parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* A global option met while parsing a command's options. @return true
 * when it was one (and handled). */
static bool global_opt(esctl *x, int opt, const char *arg, int *rc)
{
    uint64_t v;
    switch (opt) {
    case 's':
        x->server = arg;
        return true;
    case OPT_JSON:
        x->json = true;
        return true;
    case OPT_USER:
        user_name = arg;
        return true;
    case OPT_TOKEN_FILE:
        token_file = arg;
        return true;
    case OPT_TLS:
        tls_opts.tls = true;
        return true;
    case OPT_TLS_CA:
        tls_opts.ca_file = arg;
        return true;
    case OPT_TLS_INSECURE:
        tls_opts.insecure = true;
        return true;
    case OPT_TLS_NAME:
        tls_opts.server_name = arg;
        return true;
    case OPT_TIMEOUT:
        if (!parse_u64(arg, &v) || v == 0 || v > UINT32_MAX) {
            fprintf(stderr, "esctl: --timeout wants milliseconds > 0\n");
            *rc = EXIT_USAGE;
        } else {
            x->timeout_ms = (uint32_t)v;
        }
        return true;
    default:
        return false;
    }
}

/* A usage error: the message, then ": arg" when arg is set. */
static int usage_error(const char *usage, const char *msg, const char *arg)
{
    if (arg != NULL) {
        fprintf(stderr, "esctl: %s: %s\n", msg, arg);
    } else {
        fprintf(stderr, "esctl: %s\n", msg);
    }
    fprintf(stderr, "usage: %s\n(esctl --help for more)\n", usage);
    return EXIT_USAGE;
}

static int help(const char *usage, const char *details)
{
    printf("usage: %s\n\n%s\n%s", usage, details, GLOBAL_HELP);
    return EXIT_OK;
}

/* Connect (exit 3 on failure). */
static int open_client(const esctl *x, es_client **out)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = x->server;
    o.client_name = "esctl";
    o.user = user_name ? user_name : getenv("ES_USER");
    static tool_token tok; /* lives as long as the process; the client copies it */
    if (tool_token_load(&tok, token_file, "esctl") != 0) {
        return EXIT_USAGE;
    }
    if (tok.len > 0) {
        o.token = tok.bytes;
        o.token_len = tok.len;
    }
    tool_tls_apply(&tls_opts, &o, "esctl");
    o.connect_timeout_ms = 3000;
    o.request_timeout_ms = x->timeout_ms ? x->timeout_ms : 30000;
    o.reconnect_attempts = 2;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    es_err rv = es_client_create(&o, &c);
    tool_token_wipe(&tok);
    if (rv != ES_OK) {
        fprintf(stderr, "esctl: bad server address \"%s\": %s\n", x->server, es_strerror(rv));
        return rv == ES_ERR_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_FAILED;
    }
    rv = es_client_connect(c);
    if (rv != ES_OK) {
        out_error(x, c, rv, "connect");
        es_client_destroy(c);
        return EXIT_CONNECT;
    }
    *out = c;
    return EXIT_OK;
}

/* Parse options shared by every command: returns -1 to go on, or an exit
 * code. `handle` deals with the command's own options. */
typedef int (*opt_handler)(void *ctx, int opt, const char *arg);

static int parse_opts(esctl *x, int argc, char **argv, const struct option *longopts,
                      opt_handler handle, void *ctx, const char *usage, const char *details)
{
    optind = 0;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+s:h", longopts, NULL)) != -1) {
        int rc = -1;
        if (opt == 'h') {
            return help(usage, details);
        }
        if (opt == '?' || opt == ':') {
            return usage_error(usage, "bad option or missing value", argv[optind - 1]);
        }
        if (global_opt(x, opt, optarg, &rc)) {
            if (rc >= 0) {
                return rc;
            }
            continue;
        }
        rc = handle ? handle(ctx, opt, optarg) : EXIT_USAGE;
        if (rc == EXIT_USAGE) {
            const char *name = "?";
            for (const struct option *o = longopts; o->name != NULL; o++) {
                if (o->val == opt) {
                    name = o->name;
                }
            }
            char msg[64];
            snprintf(msg, sizeof(msg), "bad value for --%s", name);
            return usage_error(usage, msg, optarg);
        }
        if (rc >= 0) {
            return rc;
        }
    }
    return -1;
}

/* Options may follow positional arguments: collect the positionals after
 * option parsing (getopt_long with "+" stops at the first one, so parse in
 * rounds). */
static int parse_cmd(esctl *x, int argc, char **argv, const struct option *longopts,
                     opt_handler handle, void *ctx, const char *usage, const char *details,
                     char **pos, int npos_min, int npos_max, int *npos)
{
    *npos = 0;
    int i = 1;
    while (i < argc) {
        /* Parse the options from argv[i - 1] on (argv[i - 1] plays argv[0]). */
        int rc =
            parse_opts(x, argc - (i - 1), argv + (i - 1), longopts, handle, ctx, usage, details);
        if (rc >= 0) {
            return rc;
        }
        i += optind - 1;
        if (i >= argc) {
            break;
        }
        if (*npos >= npos_max) {
            return usage_error(usage, "unexpected argument", argv[i]);
        }
        pos[(*npos)++] = argv[i];
        i++;
    }
    if (*npos < npos_min) {
        return usage_error(usage, "missing argument", NULL);
    }
    return -1;
}

static int no_opts(void *ctx, int opt, const char *arg)
{
    return EXIT_USAGE;
}

/* ---------------------------------------------------------------- ping -- */

static int cmd_ping(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};
    const char *usage = "esctl ping";
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, no_opts, NULL, usage,
                       "Round trip to the server; prints the time and what the server announced.\n",
                       NULL, 0, 0, &npos);
    if (rc >= 0) {
        return rc;
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    uint64_t rtt = 0;
    es_err rv = es_client_ping(c, &rtt);
    if (rv != ES_OK) {
        out_error(x, c, rv, "ping");
        es_client_destroy(c);
        return EXIT_FAILED;
    }
    es_server_info info;
    es_client_server_info(c, &info);
    json_t *o = json_object();
    json_object_set_new(o, "server", json_string(x->server));
    json_object_set_new(o, "rtt_us", json_integer((json_int_t)rtt));
    json_object_set_new(o, "server_version", json_string(info.server_version));
    json_object_set_new(o, "protocol_version", json_integer(info.protocol_version));
    if (info.role[0] != '\0') {
        json_object_set_new(o, "role", json_string(info.role));
    }
    json_object_set_new(o, "sync_mode",
                        json_string(info.sync_mode == ES_SYNC_NONE ? "none" : "full"));
    if (info.store_id_len == ES_UUID_BYTES) {
        char id[ES_UUID_STRLEN + 1];
        es_uuid_format(info.store_id, id);
        json_object_set_new(o, "store_id", json_string(id));
    }
    json_t *lim = json_object();
    json_object_set_new(lim, "max_frame_bytes", json_integer(info.limits.max_frame_bytes));
    json_object_set_new(lim, "max_events_per_append",
                        json_integer(info.limits.max_events_per_append));
    json_object_set_new(lim, "max_event_bytes", json_integer(info.limits.max_event_bytes));
    json_object_set_new(lim, "max_page_size", json_integer(info.limits.max_page_size));
    json_object_set_new(lim, "max_in_flight", json_integer(info.limits.max_in_flight));
    json_object_set_new(lim, "max_appends_per_transaction",
                        json_integer(info.limits.max_appends_per_transaction));
    json_object_set_new(o, "limits", lim);
    out_object(x, o);
    es_client_destroy(c);
    return EXIT_OK;
}

/* --------------------------------------------------------------- stats -- */

static int cmd_stats(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};
    const char *usage = "esctl stats";
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, no_opts, NULL, usage,
                       "The server's statistics: the store, its map, commits and appends.\n", NULL,
                       0, 0, &npos);
    if (rc >= 0) {
        return rc;
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    if (rv != ES_OK) {
        out_error(x, c, rv, "stats");
        es_client_destroy(c);
        return EXIT_FAILED;
    }
    char id[ES_UUID_STRLEN + 1];
    es_uuid_format(st.store_id, id);
    json_t *o = json_object();
    json_object_set_new(o, "store_id", json_string(id));
    json_object_set_new(o, "head_position", json_integer((json_int_t)st.head_position));
    json_object_set_new(o, "stream_count", json_integer((json_int_t)st.stream_count));
    json_object_set_new(o, "event_count", json_integer((json_int_t)st.event_count));
    json_object_set_new(o, "map_size", json_integer((json_int_t)st.map_size));
    json_object_set_new(o, "map_used", json_integer((json_int_t)st.map_used));
    json_object_set_new(o, "readers_used", json_integer(st.readers_used));
    json_object_set_new(o, "readers_max", json_integer(st.readers_max));
    json_object_set_new(o, "uptime_us", json_integer((json_int_t)st.uptime_us));
    json_object_set_new(o, "connections", json_integer(st.connections));
    json_object_set_new(o, "subscriptions", json_integer(st.subscriptions));
    json_object_set_new(o, "commits", json_integer((json_int_t)st.commits));
    json_object_set_new(o, "appends_ok", json_integer((json_int_t)st.appends_ok));
    json_object_set_new(o, "appends_failed", json_integer((json_int_t)st.appends_failed));
    json_object_set_new(o, "events_appended", json_integer((json_int_t)st.events_appended));
    json_object_set_new(o, "sync_mode",
                        json_string(st.sync_mode == ES_SYNC_NONE ? "none" : "full"));
    json_object_set_new(o, "mean_commit_batch", json_real(st.mean_commit_batch));
    json_object_set_new(o, "max_commit_batch", json_integer(st.max_commit_batch));
    if (st.relay_on) {
        json_object_set_new(o, "relay_acked_position",
                            json_integer((json_int_t)st.relay_acked_position));
        json_object_set_new(o, "relay_lag", json_integer((json_int_t)st.relay_lag));
    }
    if (st.follower) {
        json_object_set_new(o, "follower", json_true());
        json_object_set_new(o, "follower_pending", json_integer((json_int_t)st.follower_pending));
        json_object_set_new(o, "follower_halted", json_boolean(st.follower_halted));
    }
    out_object(x, o);
    es_client_destroy(c);
    return EXIT_OK;
}

/* -------------------------------------------------------------- append -- */

typedef struct append_opts {
    es_expected expected;
    bool has_id;
    uint8_t id[ES_UUID_BYTES];
    const char *metadata;
    const char *content_type;
} append_opts;

static int append_opt(void *ctx, int opt, const char *arg)
{
    append_opts *a = ctx;
    switch (opt) {
    case OPT_EXPECTED:
        if (strcmp(arg, "any") == 0) {
            a->expected = (es_expected){ES_EXPECT_ANY, 0};
        } else if (strcmp(arg, "no-stream") == 0) {
            a->expected = (es_expected){ES_EXPECT_NO_STREAM, 0};
        } else if (strcmp(arg, "exists") == 0) {
            a->expected = (es_expected){ES_EXPECT_STREAM_EXISTS, 0};
        } else {
            uint64_t n;
            if (!parse_u64(arg, &n)) {
                return EXIT_USAGE;
            }
            a->expected = (es_expected){ES_EXPECT_EXACT, n};
        }
        return -1;
    case OPT_ID:
        if (es_uuid_parse(arg, a->id) != ES_OK) {
            return EXIT_USAGE;
        }
        a->has_id = true;
        return -1;
    case OPT_METADATA:
        a->metadata = arg;
        return -1;
    case OPT_CONTENT_TYPE:
        a->content_type = arg;
        return -1;
    default:
        return EXIT_USAGE;
    }
}

/* Read all of a stream (file or stdin), at most MAX_INPUT_BYTES. */
static int read_input(FILE *f, const char *name, uint8_t **out, size_t *len)
{
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        fprintf(stderr, "esctl: out of memory\n");
        return EXIT_FAILED;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_INPUT_BYTES) {
                free(buf);
                fprintf(stderr, "esctl: %s: more than %u bytes\n", name, MAX_INPUT_BYTES);
                return EXIT_FAILED;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                fprintf(stderr, "esctl: out of memory\n");
                return EXIT_FAILED;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                int e = errno;
                free(buf);
                fprintf(stderr, "esctl: %s: %s\n", name, strerror(e));
                return EXIT_FAILED;
            }
            break;
        }
    }
    *out = buf;
    *len = n;
    return EXIT_OK;
}

static bool is_json(const uint8_t *p, size_t len)
{
    json_error_t err;
    json_t *v = json_loadb((const char *)p, len, JSON_DECODE_ANY, &err);
    json_decref(v);
    return v != NULL;
}

static int cmd_append(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS,
                                       {"expected", required_argument, NULL, OPT_EXPECTED},
                                       {"id", required_argument, NULL, OPT_ID},
                                       {"metadata", required_argument, NULL, OPT_METADATA},
                                       {"content-type", required_argument, NULL, OPT_CONTENT_TYPE},
                                       {NULL, 0, NULL, 0}};
    const char *usage = "esctl append STREAM TYPE DATA [--expected any|no-stream|exists|N] "
                        "[--id UUID] [--metadata JSON] [--content-type CT]";
    const char *details =
        "Append one event to STREAM and print its revision and position.\n"
        "\n"
        "  DATA                  JSON text; @FILE for the bytes of a file; - for stdin\n"
        "  --expected E          any (default), no-stream, exists, or the stream's last\n"
        "                        revision N; a mismatch fails with both revisions (exit 1)\n"
        "  --id UUID             the event id (default: a new UUIDv7); repeating an\n"
        "                        append with the same id is idempotent\n"
        "  --metadata JSON       event metadata (JSON text)\n"
        "  --content-type CT     default application/json when DATA is JSON, else\n"
        "                        application/octet-stream\n";
    append_opts ao;
    memset(&ao, 0, sizeof(ao));
    char *pos[3];
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, append_opt, &ao, usage, details, pos, 3, 3, &npos);
    if (rc >= 0) {
        return rc;
    }
    const char *stream = pos[0], *type = pos[1], *data_arg = pos[2];

    uint8_t *data = NULL;
    size_t data_len = 0;
    bool owned = false;
    if (strcmp(data_arg, "-") == 0) {
        if ((rc = read_input(stdin, "stdin", &data, &data_len)) != EXIT_OK) {
            return rc;
        }
        owned = true;
    } else if (data_arg[0] == '@') {
        FILE *f = fopen(data_arg + 1, "rb");
        if (f == NULL) {
            fprintf(stderr, "esctl: %s: %s\n", data_arg + 1, strerror(errno));
            return EXIT_FAILED;
        }
        rc = read_input(f, data_arg + 1, &data, &data_len);
        fclose(f);
        if (rc != EXIT_OK) {
            return rc;
        }
        owned = true;
    } else {
        data = (uint8_t *)data_arg;
        data_len = strlen(data_arg);
        if (!is_json(data, data_len)) {
            return usage_error(usage, "DATA is not valid JSON (use @FILE or - for other bytes)",
                               NULL);
        }
    }
    if (ao.metadata != NULL && !is_json((const uint8_t *)ao.metadata, strlen(ao.metadata))) {
        if (owned) {
            free(data);
        }
        return usage_error(usage, "--metadata is not valid JSON", NULL);
    }

    es_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.data = data;
    ev.data_len = data_len;
    ev.metadata = ao.metadata;
    ev.metadata_len = ao.metadata ? strlen(ao.metadata) : 0;
    ev.content_type = ao.content_type           ? ao.content_type
                      : is_json(data, data_len) ? "application/json"
                                                : "application/octet-stream";
    if (ao.has_id) {
        memcpy(ev.id, ao.id, ES_UUID_BYTES);
        ev.has_id = true;
    }

    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        if (owned) {
            free(data);
        }
        return rc;
    }
    es_append_result res;
    es_err rv = es_stream_append(c, stream, ao.expected, &ev, 1, &res);
    if (owned) {
        free(data);
    }
    if (rv != ES_OK) {
        out_error(x, c, rv, "append");
        es_client_destroy(c);
        return rv == ES_ERR_INVALID_STREAM_ID || rv == ES_ERR_INVALID_EVENT_TYPE ||
                       rv == ES_ERR_RESERVED_STREAM
                   ? EXIT_USAGE
                   : EXIT_FAILED;
    }
    char id[ES_UUID_STRLEN + 1];
    es_uuid_format(ev.id, id);
    if (x->json) {
        json_t *o = json_object();
        json_object_set_new(o, "stream", json_string(stream));
        json_object_set_new(o, "revision", json_integer((json_int_t)res.first_revision));
        json_object_set_new(o, "position", json_integer((json_int_t)res.first_position));
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "duplicate", json_boolean(res.duplicate));
        json_object_set_new(o, "synced", json_boolean(res.synced));
        out_json_line(o);
    } else {
        printf("appended to %s: revision %llu, position %llu, id %s%s%s\n", stream,
               (unsigned long long)res.first_revision, (unsigned long long)res.first_position, id,
               res.duplicate ? " (duplicate: already stored)" : "",
               res.synced ? "" : " (not synced to disk)");
    }
    es_client_destroy(c);
    return EXIT_OK;
}

/* ---------------------------------------------------------------- read -- */

typedef struct read_opts {
    es_read_options ro;
    bool has_from;
    uint64_t after;
    bool has_after;
    int filters;
} read_opts;

static int read_opt(void *ctx, int opt, const char *arg)
{
    read_opts *r = ctx;
    uint64_t v;
    switch (opt) {
    case OPT_FROM:
        if (!parse_u64(arg, &v)) {
            return EXIT_USAGE;
        }
        r->ro.from = v;
        r->has_from = true;
        return -1;
    case OPT_AFTER:
        if (!parse_u64(arg, &v)) {
            return EXIT_USAGE;
        }
        r->after = v;
        r->has_after = true;
        return -1;
    case OPT_BACKWARD:
        r->ro.backward = true;
        return -1;
    case OPT_LIMIT:
        if (!parse_u64(arg, &v) || v == 0) {
            return EXIT_USAGE;
        }
        r->ro.max_count = v;
        return -1;
    case OPT_CATEGORY:
        r->ro.filter = ES_FILTER_CATEGORY;
        r->ro.filter_name = arg;
        r->filters++;
        return -1;
    case OPT_TYPE:
        r->ro.filter = ES_FILTER_EVENT_TYPE;
        r->ro.filter_name = arg;
        r->filters++;
        return -1;
    case OPT_PREFIX:
        r->ro.filter = ES_FILTER_STREAM_PREFIX;
        r->ro.filter_name = arg;
        r->filters++;
        return -1;
    default:
        return EXIT_USAGE;
    }
}

static const char *const H_STREAM[] = {"REVISION", "POSITION", "RECORDED AT", "TYPE", "DATA"};
static const char *const H_ALL[] = {"POSITION",    "STREAM", "REVISION",
                                    "RECORDED AT", "TYPE",   "DATA"};

/* A table for events of one stream (all = false) or of the global log. */
static out_table *events_table(bool all)
{
    return all ? out_table_create(H_ALL, 6) : out_table_create(H_STREAM, 5);
}

/* One event: a JSON line, or a row of t. */
static void print_event(const esctl *x, out_table *t, const es_recorded_event *ev, bool all)
{
    if (x->json) {
        out_json_line(out_event_json(ev));
        return;
    }
    char rev[24], pos[24], when[40];
    snprintf(rev, sizeof(rev), "%llu", (unsigned long long)ev->revision);
    snprintf(pos, sizeof(pos), "%llu", (unsigned long long)ev->position);
    out_time(ev->recorded_at_us, when, sizeof(when));
    char *data = out_bytes_text(ev->data, ev->data_len);
    if (all) {
        const char *cells[6] = {pos, ev->stream, rev, when, ev->type, data};
        out_table_row(t, cells);
    } else {
        const char *cells[5] = {rev, pos, when, ev->type, data};
        out_table_row(t, cells);
    }
    free(data);
}

static int print_events(esctl *x, es_client *c, es_read_iter *it, bool all)
{
    out_table *t = NULL;
    if (!x->json) {
        t = events_table(all);
        if (t == NULL) {
            fprintf(stderr, "esctl: out of memory\n");
            return EXIT_FAILED;
        }
    }
    int rc = EXIT_OK;
    uint64_t n = 0;
    for (;;) {
        const es_recorded_event *ev = NULL;
        es_err rv = es_read_next(it, &ev);
        if (rv != ES_OK) {
            out_table_finish(t);
            t = NULL;
            out_error(x, c, rv, rv == ES_ERR_NOT_FOUND ? "read: no such stream" : "read");
            rc = EXIT_FAILED;
            break;
        }
        if (ev == NULL) {
            break;
        }
        n++;
        print_event(x, t, ev, all);
    }
    out_table_finish(t);
    if (rc == EXIT_OK && n == 0 && !x->json) {
        fprintf(stderr, "(no events)\n");
    }
    return rc;
}

static int cmd_read(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS,
                                       {"from", required_argument, NULL, OPT_FROM},
                                       {"backward", no_argument, NULL, OPT_BACKWARD},
                                       {"limit", required_argument, NULL, OPT_LIMIT},
                                       {NULL, 0, NULL, 0}};
    const char *usage = "esctl read STREAM [--from N] [--backward] [--limit N]";
    const char *details = "Print the events of STREAM in revision order.\n"
                          "\n"
                          "  --from N      first revision (default 0; with --backward, the last)\n"
                          "  --backward    newest first\n"
                          "  --limit N     at most N events (default all)\n";
    read_opts r;
    memset(&r, 0, sizeof(r));
    char *pos[1];
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, read_opt, &r, usage, details, pos, 1, 1, &npos);
    if (rc >= 0) {
        return rc;
    }
    if (r.ro.backward && !r.has_from) {
        r.ro.from = ES_READ_END;
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    es_read_iter *it = NULL;
    es_err rv = es_read_stream(c, pos[0], &r.ro, &it);
    if (rv != ES_OK) {
        out_error(x, c, rv, "read");
        es_client_destroy(c);
        return EXIT_USAGE;
    }
    rc = print_events(x, c, it, false);
    es_read_destroy(it);
    es_client_destroy(c);
    return rc;
}

static int cmd_read_all(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS,
                                       {"after", required_argument, NULL, OPT_AFTER},
                                       {"backward", no_argument, NULL, OPT_BACKWARD},
                                       {"limit", required_argument, NULL, OPT_LIMIT},
                                       {"category", required_argument, NULL, OPT_CATEGORY},
                                       {"type", required_argument, NULL, OPT_TYPE},
                                       {"prefix", required_argument, NULL, OPT_PREFIX},
                                       {NULL, 0, NULL, 0}};
    const char *usage = "esctl read-all [--after POS] [--backward] [--limit N] "
                        "[--category C | --type T | --prefix P]";
    const char *details =
        "Print the events of the global log in position order.\n"
        "\n"
        "  --after POS     start after this position (default 0: from the first event);\n"
        "                  with --backward, start before it (default: from the last)\n"
        "  --backward      newest first\n"
        "  --limit N       at most N events (default all)\n"
        "  --category C    only streams \"C-...\"\n"
        "  --type T        only events of type T\n"
        "  --prefix P      only streams whose id starts with P\n";
    read_opts r;
    memset(&r, 0, sizeof(r));
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, read_opt, &r, usage, details, NULL, 0, 0, &npos);
    if (rc >= 0) {
        return rc;
    }
    if (r.filters > 1) {
        return usage_error(usage, "at most one of --category, --type, --prefix", NULL);
    }
    if (r.ro.backward) {
        if (r.has_after && r.after == 0) {
            return usage_error(usage, "nothing lies before position 0", NULL);
        }
        r.ro.from = r.has_after ? r.after - 1 : ES_READ_END;
        if (r.has_after && r.after == 1) {
            return EXIT_OK; /* nothing before the first event */
        }
    } else {
        if (r.has_after && r.after == UINT64_MAX) {
            return EXIT_OK;
        }
        r.ro.from = r.has_after ? r.after + 1 : 0;
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    es_read_iter *it = NULL;
    es_err rv = es_read_all(c, &r.ro, &it);
    if (rv != ES_OK) {
        out_error(x, c, rv, "read-all");
        es_client_destroy(c);
        return EXIT_USAGE;
    }
    rc = print_events(x, c, it, true);
    es_read_destroy(it);
    es_client_destroy(c);
    return rc;
}

/* ---------------------------------------------------------------- tail -- */

static volatile sig_atomic_t tail_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    tail_stop = 1;
}

typedef struct tail_opts {
    es_sub_options so;
    int targets; /* --all, --category, --type, --prefix given */
    bool has_after;
    bool from_start;
} tail_opts;

static int tail_opt(void *ctx, int opt, const char *arg)
{
    tail_opts *t = ctx;
    switch (opt) {
    case OPT_ALL:
        t->so.target = ES_SUB_ALL;
        t->so.name = NULL;
        t->targets++;
        return -1;
    case OPT_CATEGORY:
        t->so.target = ES_SUB_CATEGORY;
        t->so.name = arg;
        t->targets++;
        return -1;
    case OPT_TYPE:
        t->so.target = ES_SUB_EVENT_TYPE;
        t->so.name = arg;
        t->targets++;
        return -1;
    case OPT_PREFIX:
        t->so.target = ES_SUB_STREAM_PREFIX;
        t->so.name = arg;
        t->targets++;
        return -1;
    case OPT_AFTER:
        if (!parse_u64(arg, &t->so.after)) {
            return EXIT_USAGE;
        }
        t->has_after = true;
        return -1;
    case OPT_FROM_START:
        t->from_start = true;
        return -1;
    default:
        return EXIT_USAGE;
    }
}

typedef struct tail_ctx {
    const esctl *x;
    out_table *t;
    bool all;
    bool told_caught_up;
} tail_ctx;

static int tail_batch(void *ctx, const es_recorded_event *evs, size_t n)
{
    tail_ctx *tc = ctx;
    for (size_t i = 0; i < n; i++) {
        print_event(tc->x, tc->t, &evs[i], tc->all);
    }
    out_table_flush(tc->t);
    fflush(stdout);
    return 0;
}

static void tail_caught_up(void *ctx, uint64_t position)
{
    tail_ctx *tc = ctx;
    if (!tc->x->json && !tc->told_caught_up) {
        fprintf(stderr, "(caught up at position %llu; following, Ctrl-C to stop)\n",
                (unsigned long long)position);
    }
    tc->told_caught_up = true;
}

/* A pause of about ms milliseconds that a stop signal cuts short. */
static void tail_pause(int ms)
{
    for (int i = 0; i < ms / 50 && !tail_stop; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static bool connection_error(es_err rv)
{
    return rv == ES_ERR_CLOSED || rv == ES_ERR_TIMEOUT || rv == ES_ERR_CONNECTION ||
           rv == ES_ERR_CIRCUIT_OPEN || rv == ES_ERR_SHUTTING_DOWN;
}

static int cmd_tail(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS,
                                       {"all", no_argument, NULL, OPT_ALL},
                                       {"category", required_argument, NULL, OPT_CATEGORY},
                                       {"type", required_argument, NULL, OPT_TYPE},
                                       {"prefix", required_argument, NULL, OPT_PREFIX},
                                       {"after", required_argument, NULL, OPT_AFTER},
                                       {"from-start", no_argument, NULL, OPT_FROM_START},
                                       {NULL, 0, NULL, 0}};
    const char *usage = "esctl tail [STREAM | --all | --category C | --type T | --prefix P] "
                        "[--after POS | --from-start] [--json]";
    const char *details =
        "Follow events as they are appended, like tail -f, until interrupted\n"
        "(SIGINT or SIGTERM: exit status 0). The rows are those of `esctl read`\n"
        "(STREAM) or `esctl read-all` (the others); --json prints one object per\n"
        "event line. A lost connection is remade, and the events resume right\n"
        "after the last one printed: none is missed or printed twice.\n"
        "\n"
        "  STREAM          the events of one stream\n"
        "  --all           the whole log\n"
        "  --category C    streams \"C-...\"\n"
        "  --type T        events of type T\n"
        "  --prefix P      streams whose id starts with P\n"
        "  --after POS     first print what follows POS (a position; a revision for\n"
        "                  STREAM), then follow; default: only new events\n"
        "  --from-start    first print everything from the first event, then follow\n";
    tail_opts to;
    memset(&to, 0, sizeof(to));
    char *pos[1];
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, tail_opt, &to, usage, details, pos, 0, 1, &npos);
    if (rc >= 0) {
        return rc;
    }
    if (to.targets + npos != 1) {
        return usage_error(usage,
                           to.targets + npos == 0
                               ? "what to follow: STREAM, --all, --category, --type or --prefix"
                               : "only one of STREAM, --all, --category, --type, --prefix",
                           NULL);
    }
    if (to.has_after && to.from_start) {
        return usage_error(usage, "--after and --from-start exclude each other", NULL);
    }
    if (npos == 1) {
        to.so.target = ES_SUB_STREAM;
        to.so.name = pos[0];
    }
    to.so.start = to.from_start ? ES_SUB_FROM_START : to.has_after ? ES_SUB_AFTER : ES_SUB_FROM_END;

    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    tail_ctx tc = {.x = x, .all = to.so.target != ES_SUB_STREAM};
    if (!x->json) {
        tc.t = events_table(tc.all);
        if (tc.t == NULL) {
            fprintf(stderr, "esctl: out of memory\n");
            es_client_destroy(c);
            return EXIT_FAILED;
        }
    }
    /* No SA_RESTART: a signal only sets the flag, which the poll loop
     * checks at least every TAIL_POLL_MS. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    es_subscription *sub = NULL;
    es_err rv = es_subscribe(c, &to.so, tail_batch, tail_caught_up, &tc, &sub);
    if (rv != ES_OK) {
        out_error(x, c, rv, "tail");
        out_table_finish(tc.t);
        es_client_destroy(c);
        return rv == ES_ERR_INVALID_STREAM_ID ? EXIT_USAGE
               : connection_error(rv)         ? EXIT_CONNECT
                                              : EXIT_FAILED;
    }
    enum { TAIL_POLL_MS = 200 };
    bool lost = false;
    rc = EXIT_OK;
    while (!tail_stop) {
        rv = es_sub_poll(sub, TAIL_POLL_MS);
        if (rv == ES_OK) {
            if (lost && es_client_connected(c)) {
                if (!x->json) {
                    fprintf(stderr, "esctl: tail: connected again\n");
                }
                lost = false;
            }
            continue;
        }
        if (connection_error(rv)) {
            /* The subscription keeps its place: the next poll reconnects
             * and resumes right after the last event printed. */
            if (!lost) {
                out_error(x, c, rv, "tail: connection lost, retrying");
                lost = true;
            }
            tail_pause(1000);
            continue;
        }
        out_error(x, c, rv, "tail");
        rc = EXIT_FAILED;
        break;
    }
    es_sub_destroy(sub);
    out_table_finish(tc.t);
    es_client_destroy(c);
    return rc;
}

/* ------------------------------------------------------- streams, info -- */

static json_t *stream_json(const es_stream_info *si)
{
    char t[40];
    json_t *o = json_object();
    json_object_set_new(o, "stream", json_string(si->stream));
    json_object_set_new(o, "last_revision", json_integer((json_int_t)si->last_revision));
    json_object_set_new(o, "event_count", json_integer((json_int_t)si->event_count));
    json_object_set_new(o, "first_position", json_integer((json_int_t)si->first_position));
    json_object_set_new(o, "last_position", json_integer((json_int_t)si->last_position));
    out_time(si->created_us, t, sizeof(t));
    json_object_set_new(o, "created_at", json_string(t));
    out_time(si->updated_us, t, sizeof(t));
    json_object_set_new(o, "updated_at", json_string(t));
    return o;
}

typedef struct list_ctx {
    const esctl *x;
    out_table *t;
    uint64_t n;
} list_ctx;

static int visit_stream(void *ctx, const es_stream_info *si)
{
    list_ctx *lc = ctx;
    lc->n++;
    if (lc->x->json) {
        out_json_line(stream_json(si));
        return 0;
    }
    char ev[24], rev[24], fp[24], lp[24], upd[40];
    snprintf(ev, sizeof(ev), "%llu", (unsigned long long)si->event_count);
    snprintf(rev, sizeof(rev), "%llu", (unsigned long long)si->last_revision);
    snprintf(fp, sizeof(fp), "%llu", (unsigned long long)si->first_position);
    snprintf(lp, sizeof(lp), "%llu", (unsigned long long)si->last_position);
    out_time(si->updated_us, upd, sizeof(upd));
    const char *cells[6] = {si->stream, ev, rev, fp, lp, upd};
    out_table_row(lc->t, cells);
    return 0;
}

typedef struct streams_opts {
    const char *prefix;
    const char *after;
    uint64_t limit;
} streams_opts;

static int streams_opt(void *ctx, int opt, const char *arg)
{
    streams_opts *s = ctx;
    switch (opt) {
    case OPT_PREFIX:
        s->prefix = arg;
        return -1;
    case OPT_AFTER:
        s->after = arg;
        return -1;
    case OPT_LIMIT:
        return parse_u64(arg, &s->limit) && s->limit > 0 ? -1 : EXIT_USAGE;
    default:
        return EXIT_USAGE;
    }
}

static int cmd_streams(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS,
                                       {"prefix", required_argument, NULL, OPT_PREFIX},
                                       {"after", required_argument, NULL, OPT_AFTER},
                                       {"limit", required_argument, NULL, OPT_LIMIT},
                                       {NULL, 0, NULL, 0}};
    const char *usage = "esctl streams [--prefix P] [--after STREAM] [--limit N]";
    const char *details = "List streams in id order.\n"
                          "\n"
                          "  --prefix P        only ids starting with P\n"
                          "  --after STREAM    continue after this id\n"
                          "  --limit N         at most N streams (default all)\n";
    streams_opts so;
    memset(&so, 0, sizeof(so));
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, streams_opt, &so, usage, details, NULL, 0, 0, &npos);
    if (rc >= 0) {
        return rc;
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    static const char *const hdr[] = {"STREAM",    "EVENTS",   "LAST REV",
                                      "FIRST POS", "LAST POS", "UPDATED"};
    list_ctx lc = {.x = x};
    if (!x->json) {
        lc.t = out_table_create(hdr, 6);
    }
    bool more = false;
    es_err rv = es_stream_list(c, so.prefix, so.after, so.limit, visit_stream, &lc, &more);
    out_table_finish(lc.t);
    if (rv != ES_OK) {
        out_error(x, c, rv, "streams");
        es_client_destroy(c);
        return EXIT_FAILED;
    }
    if (!x->json && lc.n == 0) {
        fprintf(stderr, "(no streams)\n");
    } else if (!x->json && more) {
        fprintf(stderr, "(more streams follow: --after and --limit page through them)\n");
    }
    es_client_destroy(c);
    return EXIT_OK;
}

static int cmd_info(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};
    const char *usage = "esctl info STREAM";
    char *pos[1];
    int npos;
    int rc =
        parse_cmd(x, argc, argv, lo, no_opts, NULL, usage,
                  "The record of one stream: revisions, positions, times.\n", pos, 1, 1, &npos);
    if (rc >= 0) {
        return rc;
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    es_stream_info si;
    es_err rv = es_stream_info_get(c, pos[0], &si);
    if (rv != ES_OK) {
        out_error(x, c, rv, rv == ES_ERR_NOT_FOUND ? "info: no such stream" : "info");
        es_client_destroy(c);
        return rv == ES_ERR_INVALID_STREAM_ID ? EXIT_USAGE : EXIT_FAILED;
    }
    out_object(x, stream_json(&si));
    es_client_destroy(c);
    return EXIT_OK;
}

/* -------------------------------------------------------------- stream -- */

typedef struct stream_opts {
    bool has_expected, force;
    uint64_t expected;
    bool has_max_count, has_max_age, has_truncate;
    uint64_t max_count, max_age_s, truncate_before;
} stream_opts;

/*
 * A duration: N (seconds) or N followed by s, m, h or d; 0 means no limit.
 * Negative or above 100 years: refused.
 */
static bool parse_duration(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0) {
        return false;
    }
    uint64_t unit = 1;
    if (*end != '\0') {
        switch (*end) {
        case 's':
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return false;
        }
        if (end[1] != '\0') {
            return false;
        }
    }
    if (v > ES_MAX_AGE_S / unit) {
        return false;
    }
    *out = v * unit;
    return true;
}

static int stream_opt(void *ctx, int opt, const char *arg)
{
    stream_opts *so = ctx;
    switch (opt) {
    case OPT_EXPECTED:
        so->has_expected = true;
        return parse_u64(arg, &so->expected) ? -1 : EXIT_USAGE;
    case OPT_FORCE:
        so->force = true;
        return -1;
    case OPT_MAX_COUNT:
        so->has_max_count = true;
        return parse_u64(arg, &so->max_count) ? -1 : EXIT_USAGE;
    case OPT_MAX_AGE:
        so->has_max_age = true;
        if (!parse_duration(arg, &so->max_age_s)) {
            fprintf(stderr,
                    "esctl: --max-age: a duration such as 90, 30s, 15m, 2h or 7d "
                    "(at most 100 years), not \"%s\"\n",
                    arg);
            return EXIT_USAGE;
        }
        return -1;
    case OPT_TRUNCATE_BEFORE:
        so->has_truncate = true;
        return parse_u64(arg, &so->truncate_before) ? -1 : EXIT_USAGE;
    default:
        return EXIT_USAGE;
    }
}

static json_t *meta_json(const char *stream, const es_stream_meta *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "stream", json_string(stream));
    json_object_set_new(o, "metadata_set", json_boolean(m->exists));
    if (m->exists) {
        json_object_set_new(o, "metadata_revision", json_integer((json_int_t)m->metadata_revision));
    }
    json_object_set_new(o, "truncate_before", json_integer((json_int_t)m->truncate_before));
    json_object_set_new(o, "max_count", json_integer((json_int_t)m->max_count));
    json_object_set_new(o, "max_age_s", json_integer((json_int_t)m->max_age_s));
    json_object_set_new(o, "deleted", json_boolean(m->deleted));
    json_object_set_new(o, "deleted_before", json_integer((json_int_t)m->deleted_before));
    return o;
}

/* Show the metadata, or change the fields given (the others kept), checked
 * against the metadata revision just read: a concurrent change is refused. */
static int stream_meta(esctl *x, es_client *c, const char *stream, const stream_opts *so)
{
    es_stream_meta m;
    es_err rv = es_stream_meta_get(c, stream, &m);
    if (rv == ES_OK && (so->has_max_count || so->has_max_age || so->has_truncate)) {
        es_expected exp = {ES_EXPECT_NO_STREAM, 0};
        if (m.exists) {
            exp.kind = ES_EXPECT_EXACT;
            exp.revision = m.metadata_revision;
        }
        rv = es_stream_meta_set(c, stream, exp,
                                so->has_truncate ? so->truncate_before : m.truncate_before,
                                so->has_max_count ? so->max_count : m.max_count,
                                so->has_max_age ? so->max_age_s : m.max_age_s, &m);
    }
    if (rv != ES_OK) {
        out_error(x, c, rv, rv == ES_ERR_NOT_FOUND ? "stream meta: no such stream" : "stream meta");
        return rv == ES_ERR_INVALID_STREAM_ID || rv == ES_ERR_RESERVED_STREAM ? EXIT_USAGE
                                                                              : EXIT_FAILED;
    }
    out_object(x, meta_json(stream, &m));
    return EXIT_OK;
}

/* The outcome of an erasure as JSON. */
static json_t *erased_json(const char *kind, const char *name, const es_erased *e)
{
    json_t *o = json_object();
    json_object_set_new(o, kind, json_string(name));
    json_object_set_new(o, "erased", json_true());
    json_object_set_new(o, "already", json_boolean(e->already));
    json_object_set_new(o, "erased_at_us", json_integer((json_int_t)e->erased_at_us));
    json_object_set_new(o, "streams", json_integer((json_int_t)e->streams));
    return o;
}

static int stream_erase(esctl *x, es_client *c, const char *stream, es_expected exp, bool force)
{
    es_erased e;
    es_err rv = es_stream_erase(c, stream, exp, force, &e);
    if (rv != ES_OK) {
        out_error(x, c, rv, rv == ES_ERR_NOT_FOUND ? "no such stream" : "erase");
        return rv == ES_ERR_INVALID_STREAM_ID || rv == ES_ERR_RESERVED_STREAM ? EXIT_USAGE
                                                                              : EXIT_FAILED;
    }
    out_object(x, erased_json("stream", stream, &e));
    return EXIT_OK;
}

static int cmd_subject(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {
        GLOBAL_LONGOPTS, {"force", no_argument, NULL, OPT_FORCE}, {NULL, 0, NULL, 0}};
    const char *usage = "esctl subject erase ID --force";
    const char *details =
        "A data subject: the streams appended with its id (docs/erasure.md).\n"
        "\n"
        "  erase       destroy the subject's data key: every stream of the subject\n"
        "              is erased at once, from every copy (admin role)\n"
        "  --force     the confirmation (an erasure cannot be undone)\n";
    stream_opts so;
    memset(&so, 0, sizeof(so));
    char *pos[2];
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, stream_opt, &so, usage, details, pos, 2, 2, &npos);
    if (rc >= 0) {
        return rc;
    }
    if (strcmp(pos[0], "erase") != 0) {
        return usage_error(usage, "unknown subject subcommand", pos[0]);
    }
    if (!so.force) {
        return usage_error(usage, "an erasure cannot be undone: give --force", NULL);
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    es_erased e;
    es_err rv = es_subject_erase(c, pos[1], &e);
    if (rv != ES_OK) {
        out_error(x, c, rv, rv == ES_ERR_NOT_FOUND ? "no such subject" : "erase");
        es_client_destroy(c);
        return rv == ES_ERR_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_FAILED;
    }
    out_object(x, erased_json("subject", pos[1], &e));
    es_client_destroy(c);
    return EXIT_OK;
}

static int cmd_stream(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {
        GLOBAL_LONGOPTS,
        {"expected", required_argument, NULL, OPT_EXPECTED},
        {"force", no_argument, NULL, OPT_FORCE},
        {"max-count", required_argument, NULL, OPT_MAX_COUNT},
        {"max-age", required_argument, NULL, OPT_MAX_AGE},
        {"truncate-before", required_argument, NULL, OPT_TRUNCATE_BEFORE},
        {NULL, 0, NULL, 0}};
    const char *usage = "esctl stream delete STREAM [--expected REV]\n"
                        "       esctl stream tombstone STREAM --expected REV|--force\n"
                        "       esctl stream erase STREAM --expected REV|--force\n"
                        "       esctl stream meta STREAM [--max-count N] [--max-age DURATION] "
                        "[--truncate-before REV]";
    const char *details =
        "A stream's lifecycle.\n"
        "\n"
        "  delete      hide the stream's events; an append recreates it, its\n"
        "              revisions continuing after the deleted ones\n"
        "  tombstone   delete for ever: no append or read again (admin role)\n"
        "  erase       destroy the stream's data key: its events' data and metadata\n"
        "              can never be read again, from any copy (docs/erasure.md;\n"
        "              admin role); reads and appends then fail with ERASED\n"
        "  meta        show the retention, or set the fields given:\n"
        "  --max-count N           serve only the last N events (0: no limit)\n"
        "  --max-age DURATION      serve only younger events: 90, 30s, 15m, 2h, 7d\n"
        "                          (0: no limit)\n"
        "  --truncate-before REV   serve no revision below REV\n"
        "  --expected REV          the stream's last revision must be REV\n"
        "  --force                 tombstone or erase without an expected revision\n";
    stream_opts so;
    memset(&so, 0, sizeof(so));
    char *pos[2];
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, stream_opt, &so, usage, details, pos, 2, 2, &npos);
    if (rc >= 0) {
        return rc;
    }
    const char *sub = pos[0];
    const char *stream = pos[1];
    bool is_meta = strcmp(sub, "meta") == 0;
    bool is_delete = strcmp(sub, "delete") == 0;
    bool is_tomb = strcmp(sub, "tombstone") == 0;
    bool is_erase = strcmp(sub, "erase") == 0;
    if (!is_meta && !is_delete && !is_tomb && !is_erase) {
        return usage_error(usage, "unknown stream subcommand", sub);
    }
    if (!is_meta && (so.has_max_count || so.has_max_age || so.has_truncate)) {
        return usage_error(usage, "retention options belong to \"stream meta\"", NULL);
    }
    if (!is_tomb && !is_erase && so.force) {
        return usage_error(usage, "--force belongs to \"stream tombstone\" and \"stream erase\"",
                           NULL);
    }
    if (is_erase && so.has_expected == so.force) {
        return usage_error(usage, "an erasure cannot be undone: give --expected REV or --force",
                           NULL);
    }
    if (is_meta && so.has_expected) {
        return usage_error(usage, "\"stream meta\" checks the metadata revision itself", NULL);
    }
    if (is_tomb && so.has_expected == so.force) {
        return usage_error(usage, "a tombstone cannot be undone: give --expected REV or --force",
                           NULL);
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    if (is_meta) {
        rc = stream_meta(x, c, stream, &so);
        es_client_destroy(c);
        return rc;
    }
    es_expected exp = {ES_EXPECT_ANY, 0};
    if (so.has_expected) {
        exp.kind = ES_EXPECT_EXACT;
        exp.revision = so.expected;
    }
    if (is_erase) {
        rc = stream_erase(x, c, stream, exp, so.force);
        es_client_destroy(c);
        return rc;
    }
    uint64_t last = 0;
    es_err rv = is_tomb ? es_stream_tombstone(c, stream, exp, &last)
                        : es_stream_delete(c, stream, exp, &last);
    if (rv != ES_OK) {
        out_error(x, c, rv, rv == ES_ERR_NOT_FOUND ? "no such stream" : sub);
        es_client_destroy(c);
        return rv == ES_ERR_INVALID_STREAM_ID || rv == ES_ERR_RESERVED_STREAM ? EXIT_USAGE
                                                                              : EXIT_FAILED;
    }
    json_t *o = json_object();
    json_object_set_new(o, "stream", json_string(stream));
    json_object_set_new(o, is_tomb ? "tombstoned" : "deleted", json_true());
    json_object_set_new(o, "last_revision", json_integer((json_int_t)last));
    out_object(x, o);
    es_client_destroy(c);
    return EXIT_OK;
}

/* --------------------------------------------------------------- group -- */

typedef struct group_opts {
    int n_targets;
    es_group_target target;
    const char *target_name;
    int n_starts;
    es_group_start start;
    uint64_t after;
    es_group_settings set;
    bool has_setting;
    bool has_timeout, has_retries, has_in_flight;
    uint64_t limit;
} group_opts;

static int group_u32(const char *arg, const char *what, uint32_t *out)
{
    uint64_t v;
    if (!parse_u64(arg, &v) || v > UINT32_MAX) {
        fprintf(stderr, "esctl: %s: a number, not \"%s\"\n", what, arg);
        return EXIT_USAGE;
    }
    *out = (uint32_t)v;
    return -1;
}

static int group_opt(void *ctx, int opt, const char *arg)
{
    group_opts *go = ctx;
    switch (opt) {
    case OPT_ALL:
        go->n_targets++;
        go->target = ES_GROUP_ALL;
        return -1;
    case OPT_G_STREAM:
    case OPT_CATEGORY:
    case OPT_TYPE:
    case OPT_PREFIX:
        go->n_targets++;
        go->target = opt == OPT_G_STREAM   ? ES_GROUP_STREAM
                     : opt == OPT_CATEGORY ? ES_GROUP_CATEGORY
                     : opt == OPT_TYPE     ? ES_GROUP_TYPE
                                           : ES_GROUP_PREFIX;
        go->target_name = arg;
        return -1;
    case OPT_FROM_START:
    case OPT_FROM_END:
        go->n_starts++;
        go->start = opt == OPT_FROM_START ? ES_GROUP_FROM_START : ES_GROUP_FROM_END;
        return -1;
    case OPT_AFTER:
        go->n_starts++;
        go->start = ES_GROUP_AFTER;
        return parse_u64(arg, &go->after) ? -1 : EXIT_USAGE;
    case OPT_ACK_TIMEOUT:
        go->has_setting = go->has_timeout = true;
        return group_u32(arg, "--ack-timeout-ms", &go->set.ack_timeout_ms);
    case OPT_MAX_RETRIES:
        go->has_setting = go->has_retries = true;
        return group_u32(arg, "--max-retries", &go->set.max_retries);
    case OPT_MAX_IN_FLIGHT:
        go->has_setting = go->has_in_flight = true;
        return group_u32(arg, "--max-in-flight", &go->set.max_in_flight);
    case OPT_PARK_BLOCKS:
        go->has_setting = true;
        go->set.park_blocks = true;
        return -1;
    case OPT_LIMIT:
        return parse_u64(arg, &go->limit) ? -1 : EXIT_USAGE;
    default:
        return EXIT_USAGE;
    }
}

static const char *group_target_name(es_group_target t)
{
    switch (t) {
    case ES_GROUP_ALL:
        return "all";
    case ES_GROUP_STREAM:
        return "stream";
    case ES_GROUP_CATEGORY:
        return "category";
    case ES_GROUP_TYPE:
        return "type";
    case ES_GROUP_PREFIX:
        return "prefix";
    }
    return "unknown";
}

static json_t *group_json(const es_group_info *g)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(g->name));
    json_object_set_new(o, "target", json_string(group_target_name(g->target)));
    json_object_set_new(o, "target_name", json_string(g->target_name));
    json_object_set_new(o, "checkpoint", json_integer((json_int_t)g->checkpoint));
    json_object_set_new(o, "head_position", json_integer((json_int_t)g->head_position));
    json_object_set_new(o, "lag", json_integer((json_int_t)g->lag));
    json_object_set_new(o, "members", json_integer(g->members));
    json_object_set_new(o, "in_flight", json_integer(g->in_flight));
    json_object_set_new(o, "parked", json_integer((json_int_t)g->parked));
    json_object_set_new(o, "acked", json_integer((json_int_t)g->acked));
    json_object_set_new(o, "retries", json_integer((json_int_t)g->retries));
    json_object_set_new(o, "ack_timeout_ms", json_integer(g->settings.ack_timeout_ms));
    json_object_set_new(o, "max_retries", json_integer(g->settings.max_retries));
    json_object_set_new(o, "max_in_flight", json_integer(g->settings.max_in_flight));
    json_object_set_new(o, "park_blocks", json_boolean(g->settings.park_blocks));
    return o;
}

static int group_list(esctl *x, es_client *c)
{
    es_group_info *list = NULL;
    size_t n = 0;
    es_err rv = es_group_list(c, &list, &n);
    if (rv != ES_OK) {
        out_error(x, c, rv, "group list");
        return EXIT_FAILED;
    }
    if (x->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(a, group_json(&list[i]));
        }
        out_json_line(a);
    } else {
        static const char *const hdr[] = {"NAME",    "TARGET",    "CHECKPOINT", "LAG",
                                          "MEMBERS", "IN_FLIGHT", "PARKED"};
        out_table *t = out_table_create(hdr, 7);
        for (size_t i = 0; i < n; i++) {
            char target[300], cp[24], lag[24], mem[12], fl[12], pk[24];
            snprintf(target, sizeof target, "%s%s%s", group_target_name(list[i].target),
                     list[i].target_name[0] ? ":" : "", list[i].target_name);
            snprintf(cp, sizeof cp, "%llu", (unsigned long long)list[i].checkpoint);
            snprintf(lag, sizeof lag, "%llu", (unsigned long long)list[i].lag);
            snprintf(mem, sizeof mem, "%u", list[i].members);
            snprintf(fl, sizeof fl, "%u", list[i].in_flight);
            snprintf(pk, sizeof pk, "%llu", (unsigned long long)list[i].parked);
            const char *row[] = {list[i].name, target, cp, lag, mem, fl, pk};
            out_table_row(t, row);
        }
        out_table_finish(t);
    }
    free(list);
    return EXIT_OK;
}

static int group_parked(esctl *x, es_client *c, const char *name, uint64_t limit)
{
    uint64_t after = 0;
    uint64_t shown = 0;
    json_t *arr = x->json ? json_array() : NULL;
    out_table *t = NULL;
    if (!x->json) {
        static const char *const hdr[] = {"POSITION", "STREAM", "ATTEMPTS", "PARKED_AT", "REASON"};
        t = out_table_create(hdr, 5);
    }
    for (;;) {
        es_group_parked *p = NULL;
        size_t n = 0;
        bool more = false;
        es_err rv = es_group_parked_list(c, name, after, 1000, &p, &n, &more);
        if (rv != ES_OK) {
            out_error(x, c, rv, "group parked");
            json_decref(arr);
            if (t) {
                out_table_finish(t);
            }
            return EXIT_FAILED;
        }
        for (size_t i = 0; i < n && (limit == 0 || shown < limit); i++, shown++) {
            char ts[40];
            out_time(p[i].parked_at_us, ts, sizeof ts);
            if (arr) {
                json_t *o = json_object();
                json_object_set_new(o, "position", json_integer((json_int_t)p[i].position));
                json_object_set_new(o, "stream", json_string(p[i].stream));
                json_object_set_new(o, "attempts", json_integer(p[i].attempts));
                json_object_set_new(o, "parked_at", json_string(ts));
                json_object_set_new(o, "reason", json_string(p[i].reason));
                json_array_append_new(arr, o);
            } else {
                char pos[24], att[12];
                snprintf(pos, sizeof pos, "%llu", (unsigned long long)p[i].position);
                snprintf(att, sizeof att, "%u", p[i].attempts);
                const char *row[] = {pos, p[i].stream, att, ts, p[i].reason};
                out_table_row(t, row);
            }
            after = p[i].position;
        }
        free(p);
        if (!more || (limit && shown >= limit)) {
            break;
        }
    }
    if (arr) {
        out_json_line(arr);
    } else {
        out_table_finish(t);
    }
    return EXIT_OK;
}

static int cmd_group(esctl *x, int argc, char **argv)
{
    static const struct option lo[] = {
        GLOBAL_LONGOPTS,
        {"all", no_argument, NULL, OPT_ALL},
        {"stream", required_argument, NULL, OPT_G_STREAM},
        {"category", required_argument, NULL, OPT_CATEGORY},
        {"type", required_argument, NULL, OPT_TYPE},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"from-start", no_argument, NULL, OPT_FROM_START},
        {"from-end", no_argument, NULL, OPT_FROM_END},
        {"after", required_argument, NULL, OPT_AFTER},
        {"ack-timeout-ms", required_argument, NULL, OPT_ACK_TIMEOUT},
        {"max-retries", required_argument, NULL, OPT_MAX_RETRIES},
        {"max-in-flight", required_argument, NULL, OPT_MAX_IN_FLIGHT},
        {"park-blocks", no_argument, NULL, OPT_PARK_BLOCKS},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {NULL, 0, NULL, 0}};
    const char *usage =
        "esctl group create NAME (--all|--stream S|--category C|--type T|--prefix P)\n"
        "                  [--from-start|--from-end|--after POS] [SETTINGS]\n"
        "       esctl group update NAME SETTINGS\n"
        "       esctl group list | info NAME | delete NAME\n"
        "       esctl group parked NAME [--limit N] | replay-parked NAME";
    const char *details =
        "Consumer groups: members share a target's events, one event of a stream\n"
        "in flight at a time; unacknowledged events come again, and after\n"
        "--max-retries they are parked (docs/groups.md).\n"
        "\n"
        "  create          a new group (admin role); the start defaults to --from-start\n"
        "  update          replace its settings (admin)\n"
        "  list, info      the groups: checkpoint, lag, members, in flight, parked\n"
        "  delete          the group, its checkpoint and parked events (admin)\n"
        "  parked          its parked events with their reasons\n"
        "  replay-parked   deliver the parked events again (admin)\n"
        "\n"
        "SETTINGS:\n"
        "  --ack-timeout-ms N   redeliver what is not acked within N ms (default 30000)\n"
        "  --max-retries N      park after N redeliveries (default 10)\n"
        "  --max-in-flight N    events out with one member at most (default 1000)\n"
        "  --park-blocks        a parked event holds its stream until replayed\n";
    group_opts go;
    memset(&go, 0, sizeof go);
    es_group_settings_init(&go.set);
    char *pos[2];
    int npos;
    int rc = parse_cmd(x, argc, argv, lo, group_opt, &go, usage, details, pos, 1, 2, &npos);
    if (rc >= 0) {
        return rc;
    }
    const char *sub = pos[0];
    const char *name = npos > 1 ? pos[1] : NULL;
    bool is_list = strcmp(sub, "list") == 0;
    bool is_create = strcmp(sub, "create") == 0;
    bool is_update = strcmp(sub, "update") == 0;
    if (!is_list && !is_create && !is_update && strcmp(sub, "info") != 0 &&
        strcmp(sub, "delete") != 0 && strcmp(sub, "parked") != 0 &&
        strcmp(sub, "replay-parked") != 0) {
        return usage_error(usage, "unknown group subcommand", sub);
    }
    if (is_list != (name == NULL)) {
        return usage_error(usage, is_list ? "\"group list\" takes no name" : "missing group name",
                           NULL);
    }
    if (!is_create && (go.n_targets || go.n_starts)) {
        return usage_error(usage, "targets and starts belong to \"group create\"", NULL);
    }
    if (!is_create && !is_update && go.has_setting) {
        return usage_error(usage, "settings belong to \"group create\" and \"group update\"", NULL);
    }
    if (is_create && go.n_targets != 1) {
        return usage_error(
            usage, "give one target: --all, --stream, --category, --type or --prefix", NULL);
    }
    if (go.n_starts > 1) {
        return usage_error(usage, "give one start: --from-start, --from-end or --after", NULL);
    }
    es_client *c = NULL;
    if ((rc = open_client(x, &c)) != EXIT_OK) {
        return rc;
    }
    es_err rv = ES_OK;
    if (is_list) {
        rc = group_list(x, c);
        es_client_destroy(c);
        return rc;
    }
    if (strcmp(sub, "parked") == 0) {
        rc = group_parked(x, c, name, go.limit);
        es_client_destroy(c);
        return rc;
    }
    json_t *o = NULL;
    if (is_create || is_update || strcmp(sub, "info") == 0) {
        if (is_create) {
            rv = es_group_create(c, name, go.target, go.target_name,
                                 go.n_starts ? go.start : ES_GROUP_FROM_START, go.after, &go.set);
        } else if (is_update) {
            /* The settings not given keep their values. */
            es_group_info cur;
            rv = es_group_info_get(c, name, &cur);
            if (rv == ES_OK) {
                es_group_settings set = cur.settings;
                set.ack_timeout_ms = go.has_timeout ? go.set.ack_timeout_ms : set.ack_timeout_ms;
                set.max_retries = go.has_retries ? go.set.max_retries : set.max_retries;
                set.max_in_flight = go.has_in_flight ? go.set.max_in_flight : set.max_in_flight;
                set.park_blocks = go.set.park_blocks || set.park_blocks;
                rv = es_group_update(c, name, &set);
            }
        }
        es_group_info info;
        if (rv == ES_OK) {
            rv = es_group_info_get(c, name, &info);
        }
        if (rv == ES_OK) {
            o = group_json(&info);
        }
    } else if (strcmp(sub, "delete") == 0) {
        rv = es_group_delete(c, name);
        if (rv == ES_OK) {
            o = json_object();
            json_object_set_new(o, "name", json_string(name));
            json_object_set_new(o, "deleted", json_true());
        }
    } else {
        uint32_t count = 0;
        rv = es_group_replay_parked(c, name, &count);
        if (rv == ES_OK) {
            o = json_object();
            json_object_set_new(o, "name", json_string(name));
            json_object_set_new(o, "replayed", json_integer(count));
        }
    }
    if (rv != ES_OK) {
        out_error(x, c, rv, rv == ES_ERR_GROUP_NOT_FOUND ? "no such group" : sub);
        es_client_destroy(c);
        return rv == ES_ERR_INVALID_ARGUMENT || rv == ES_ERR_INVALID_STREAM_ID ||
                       rv == ES_ERR_RESERVED_STREAM
                   ? EXIT_USAGE
                   : EXIT_FAILED;
    }
    out_object(x, o);
    es_client_destroy(c);
    return EXIT_OK;
}

/* ---------------------------------------------------------------- main -- */

typedef struct command {
    const char *name;
    int (*run)(esctl *x, int argc, char **argv);
} command;

static const command COMMANDS[] = {
    {"ping", cmd_ping},     {"stats", cmd_stats},       {"append", cmd_append},
    {"read", cmd_read},     {"read-all", cmd_read_all}, {"streams", cmd_streams},
    {"info", cmd_info},     {"tail", cmd_tail},         {"db", cmd_db},
    {"stream", cmd_stream}, {"subject", cmd_subject},   {"stream", cmd_stream},
    {"group", cmd_group},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++) {
        if (strcmp(COMMANDS[i].name, name) == 0) {
            return &COMMANDS[i];
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    esctl x = {.server = getenv("ES_SERVER")};
    if (x.server == NULL || x.server[0] == '\0') {
        x.server = ES_DEFAULT_ADDRESS;
    }
    static const struct option lo[] = {GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+s:h", lo, NULL)) != -1) {
        int rc = -1;
        if (opt == 'h') {
            usage_main(stdout);
            return EXIT_OK;
        }
        if (opt == '?' || opt == ':' || !global_opt(&x, opt, optarg, &rc)) {
            fprintf(stderr, "esctl: bad option or missing value: %s\n", argv[optind - 1]);
            usage_main(stderr);
            return EXIT_USAGE;
        }
        if (rc >= 0) {
            return rc;
        }
    }
    if (optind >= argc) {
        usage_main(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        if (optind + 1 >= argc) {
            usage_main(stdout);
            return EXIT_OK;
        }
        const command *cmd = find_command(argv[optind + 1]);
        if (cmd == NULL) {
            fprintf(stderr, "esctl: unknown command \"%s\"\n", argv[optind + 1]);
            return EXIT_USAGE;
        }
        char *hargv[3] = {argv[optind + 1], (char *)"--help", NULL};
        return cmd->run(&x, 2, hargv);
    }
    const command *cmd = find_command(name);
    if (cmd == NULL) {
        fprintf(stderr, "esctl: unknown command \"%s\"\n", name);
        usage_main(stderr);
        return EXIT_USAGE;
    }
    int rc = cmd->run(&x, argc - optind, argv + optind);
    if (fflush(stdout) != 0 && rc == EXIT_OK) {
        rc = EXIT_FAILED;
    }
    return rc;
}

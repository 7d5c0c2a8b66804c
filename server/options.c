#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "auth_limiter.h"
#include "frame.h"
#include "regfile.h"
#include "store.h" /* the limits' defaults (STORE_DEFAULT_*) */

/* ------------------------------------------------------------- the table -- */

typedef enum opt_type {
    T_STR,    /* const char *; empty allowed unless min = 1 */
    T_BOOL,   /* bool */
    T_U32,    /* uint32_t, a plain number (size suffixes accepted) */
    T_SIZE32, /* uint32_t, printed with a size suffix */
    T_SIZE64, /* uint64_t, printed with a size suffix; 0 allowed */
    T_SYNC,   /* bool: full (true) or none */
    T_LEVEL,  /* log_level */
} opt_type;

typedef struct opt_def {
    options_info pub;
    opt_type type;
    size_t off; /* in esd_options */
    uint64_t min, max;
    bool secret; /* never printed (no option holds a secret today: the
                  * credentials live in the --auth-file, named by path) */
    const char *help;
} opt_def;

#define CFG(field) offsetof(esd_options, cfg.field)

/* Help lines: the first after the flag, the others indented to it. */
/* clang-format off */
static const opt_def defs[] = {
    {{"listen", NULL, "HOST:PORT", "0.0.0.0:7500"}, T_STR, CFG(listen), 1, 0, false,
     "address to listen on (default 127.0.0.1:7400;\n"
     "port 0 picks a free port, logged at start)"},
    {{"data-dir", NULL, "DIR", "/var/lib/esd"}, T_STR, CFG(data_dir), 1, 0, false,
     "data directory, created if missing (default ./esd-data)"},
    {{"sync", NULL, "full|none", "none"}, T_SYNC, CFG(sync), 0, 0, false,
     "full: every acknowledged commit is fsynced (default);\n"
     "none: no fsync, a crash can lose acknowledged events"},
    {{"no-encryption", NULL, NULL, "true"}, T_BOOL, CFG(no_encrypt), 0, 0, false,
     "a NEW store keeps events in plain, so they cannot be\n"
     "erased (default: sealed with per-stream keys;\n"
     "docs/erasure.md); an existing store keeps its choice"},
    {{"sync-method", NULL, "journal|lmdb|nometasync", "lmdb"}, T_STR, CFG(sync_method), 1, 0,
     false,
     "with --sync full: journal (default): one journal write\n"
     "and fdatasync per group commit, LMDB synced at\n"
     "checkpoints; lmdb: LMDB's commit syncs twice;\n"
     "nometasync: one sync per commit, replies held for\n"
     "the next (measured, not recommended)"},
    {{"journal-size", NULL, "SIZE", "256M"}, T_SIZE64, CFG(journal_bytes), 16u * 1024u,
     1ull << 40, false, "the journal's ring, written once at creation\n(default 64M)"},
    {{"map-size", NULL, "SIZE", "64G"}, T_SIZE64, CFG(map_size), 0, UINT64_MAX, false,
     "LMDB map size, at least 1M, e.g. 64G (default 0:\n"
     "the store's default, 1T on 64-bit)"},
    {{"max-frame-bytes", NULL, "SIZE", "1M"}, T_SIZE32, CFG(max_frame_bytes), 1024,
     FRAME_HARD_MAX_BODY, false, "largest frame accepted (default 16M, at most 64M)"},
    {{"max-connections", NULL, "N", "10"}, T_U32, CFG(max_connections), 1, 1000000, false,
     "connections served at once (default 1024)"},
    {{"idle-timeout", NULL, "SECONDS", "60"}, T_U32, CFG(idle_timeout_s), 0, 86400u * 365u, false,
     "close connections silent this long (default 300,\n"
     "0 = never)"},
    {{"handshake-timeout", NULL, "SECONDS", "5"}, T_U32, CFG(handshake_timeout_s), 1, 3600, false,
     "the hello must succeed within this (default 10)"},
    {{"frame-timeout", NULL, "SECONDS", "5"}, T_U32, CFG(frame_timeout_s), 1, 3600, false,
     "a started frame must complete within this (default 30)"},
    {{"max-in-flight", NULL, "N", "64"}, T_U32, CFG(max_in_flight), 1, 65536, false,
     "queued writes per connection (default 1024)"},
    {{"max-output-bytes", NULL, "SIZE", "32M"}, T_SIZE32, CFG(max_output_bytes), 4096, 1u << 30,
     false,
     "unsent replies per connection before reading stops\n"
     "(default 16M, never below --max-frame-bytes)"},
    {{"max-memory", NULL, "SIZE", "2G"}, T_SIZE64, CFG(max_memory), 0, UINT64_MAX, false,
     "memory for all connections' unsent output, queued\n"
     "requests and read-ahead; at it, the connections\n"
     "holding the most are paused (default 0: a quarter of\n"
     "the RAM, at least 64M; logged at start)"},
    {{"slow-consumer-timeout", NULL, "SECONDS", "10"}, T_U32, CFG(slow_consumer_timeout_s), 1,
     86400, false,
     "a subscriber paused by --max-memory this long is\n"
     "dropped (SLOW_CONSUMER), then closed once its output\n"
     "is sent or 30 s later (default 30)"},
    {{"max-events-per-append", NULL, "N", "100"}, T_U32, CFG(max_events_per_append), 1, 1000000,
     false, "events in one append (default 10000)"},
    {{"max-event-bytes", NULL, "SIZE", "64K"}, T_SIZE32, CFG(max_event_bytes), 1,
     FRAME_HARD_MAX_BODY, false, "data + metadata of one event (default 8M)"},
    {{"max-page", NULL, "N", "100"}, T_U32, CFG(max_page), 1, STORE_DEFAULT_MAX_PAGE, false,
     "events per read page (default 4096)"},
    {{"scavenge-slice", NULL, "N", "250"}, T_U32, CFG(scavenge_slice), 0, 1000000, false,
     "steps of one scavenger slice, run between group\n"
     "commits: events examined or removed (default 250,\n"
     "0 = no scavenger: nothing deleted is reclaimed)"},
    {{"scavenge-interval", NULL, "MS", "1000"}, T_U32, CFG(scavenge_interval_ms), 10, 3600000,
     false, "the scavenger's timer when idle, which applies\n"
     "max-age retention (default 1000)"},
    {{"auth-file", NULL, "FILE", "/etc/esd/users"}, T_STR, CFG(auth_file), 1, 0, false,
     "users, roles and tokens (NAME ROLE SECRET a line;\n"
     "mode 0600); without it esd serves only loopback"},
    {{"insecure", NULL, NULL, "true"}, T_BOOL, CFG(insecure), 0, 0, false,
     "without --auth-file, listen on any address anyway"},
    {{"auth-failures", NULL, "N", "3"}, T_U32, CFG(auth_failures), 1, 1000000, false,
     "failed hellos one address may make at once; one more\n"
     "each second; beyond, its connections are closed\n"
     "(default 10)"},
    {{"auth-failures-global", NULL, "N", "20"}, T_U32, CFG(auth_global_rate), 0, 1000000,
     false,
     "failed hellos per second over all addresses (also\n"
     "the burst); beyond, hellos are refused unchecked\n"
     "but for users that logged in from the same address\n"
     "(default 50, 0 = no global limit)"},
    {{"max-prehello", NULL, "N", "16"}, T_U32, CFG(max_prehello), 1, 1000000, false,
     "connections from one address (IPv6: one /64) that\n"
     "have not completed the hello; a new one beyond\n"
     "closes the oldest (default 256)"},
    {{"tls-cert", NULL, "FILE", "/etc/esd/tls/cert.pem"}, T_STR, CFG(tls_cert), 1, 0, false,
     "serve TLS (1.2 or newer) only, with this PEM\n"
     "certificate chain (needs --tls-key)"},
    {{"tls-key", NULL, "FILE", "/etc/esd/tls/key.pem"}, T_STR, CFG(tls_key), 1, 0, false,
     "the PEM private key of --tls-cert"},
    {{"metrics-listen", NULL, "HOST:PORT", "127.0.0.1:9400"}, T_STR, CFG(metrics_listen), 1, 0,
     false,
     "serve Prometheus metrics at http://HOST:PORT/metrics,\n"
     "and /healthz and /readyz (default: off)"},
    {{"http-listen", NULL, "HOST:PORT", "127.0.0.1:9401"}, T_STR, CFG(http_listen), 1, 0,
     false,
     "serve the web console and its JSON API at\n"
     "http(s)://HOST:PORT/ (default: off)"},
    {{"http-max-connections", NULL, "N", "64"}, T_U32, CFG(http_max_conns), 1, 1000000,
     false,
     "web console connections at once; a new one beyond\n"
     "gets 503 and is closed (default 256)"},
    {{"slow-request-ms", NULL, "MS", "250"}, T_U32, CFG(slow_request_ms), 0, 3600000, false,
     "log requests that take longer (default 1000, 0 = never)"},
    {{"relay-nats", NULL, "URL", "nats://nats.example:4222"}, T_STR, CFG(relay_nats), 1, 0, false,
     "relay every committed event, in position order, to a\n"
     "NATS JetStream stream at URL (several: comma-\n"
     "separated); default: off"},
    {{"relay-stream", NULL, "NAME", "orders"}, T_STR, CFG(relay_stream), 1, 0, false,
     "the JetStream stream of --relay-nats, created when\n"
     "missing (default esd)"},
    {{"relay-subject", NULL, "PREFIX", "shop.es"}, T_STR, CFG(relay_subject), 1, 0, false,
     "subject prefix of relayed events: PREFIX.<category>.\n"
     "<stream id> (default es)"},
    {{"relay-replicas", NULL, "N", "3"}, T_U32, CFG(relay_replicas), 1, 5, false,
     "replicas of the stream the relay creates (default 1)"},
    {{"follow-nats", NULL, "URL", "nats://nats.example:4222"}, T_STR, CFG(follow_nats), 1, 0, false,
     "be a read-only follower: copy the JetStream stream\n"
     "--follow-stream at URL into this store (default: off)"},
    {{"follow-stream", NULL, "NAME", "orders"}, T_STR, CFG(follow_stream), 1, 0, false,
     "the JetStream stream a follower copies (default esd)"},
    {{"port-file", NULL, "FILE", "/run/esd/port"}, T_STR, offsetof(esd_options, port_file), 1, 0,
     false, "write the bound port to FILE once listening"},
    {{"log-level", NULL, "LEVEL", "debug"}, T_LEVEL, CFG(log_level), 0, 0, false,
     "debug, info, warn or error (default info)"},
};
/* clang-format on */

#define N_DEFS (sizeof defs / sizeof defs[0])

_Static_assert(N_DEFS <= OPTIONS_MAX, "raise OPTIONS_MAX");

static char env_names[N_DEFS][48];
static options_info pub[N_DEFS];

static void table_init(void)
{
    if (pub[0].name) {
        return;
    }
    for (size_t i = 0; i < N_DEFS; i++) {
        char *e = env_names[i];
        size_t n = (size_t)snprintf(e, sizeof env_names[i], "ESD_%s", defs[i].pub.name);
        for (size_t k = 4; k < n; k++) {
            e[k] = e[k] == '-' ? '_' : (char)toupper((unsigned char)e[k]);
        }
        pub[i] = defs[i].pub;
        pub[i].env = e;
    }
}

const options_info *options_table(size_t *n)
{
    table_init();
    *n = N_DEFS;
    return pub;
}

/* The entry for a flag or file key ('_' and '-' alike), or -1. */
static int find_def(const char *name)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        const char *a = defs[i].pub.name, *b = name;
        while (*a && (*a == *b || (*a == '-' && *b == '_'))) {
            a++;
            b++;
        }
        if (!*a && !*b) {
            return (int)i;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------- values -- */

bool options_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-') {
        return false;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return false;
    }
    uint64_t mul = 1;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K':
            mul = 1ull << 10;
            break;
        case 'm':
        case 'M':
            mul = 1ull << 20;
            break;
        case 'g':
        case 'G':
            mul = 1ull << 30;
            break;
        case 't':
        case 'T':
            mul = 1ull << 40;
            break;
        default:
            return false;
        }
        if (end[1] != '\0' && !(end[1] == 'i' && end[2] == 'B' && end[3] == '\0') &&
            !(end[1] == 'B' && end[2] == '\0')) {
            return false;
        }
    }
    if (v > UINT64_MAX / mul) {
        return false;
    }
    *out = v * mul;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return true;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Set one option from text. value points to storage that outlives opts. */
static bool set_value(esd_options *o, const opt_def *d, const char *value)
{
    void *p = (char *)o + d->off;
    uint64_t v;
    switch (d->type) {
    case T_STR:
        if (d->min > 0 && value[0] == '\0') {
            return false;
        }
        *(const char **)p = value;
        return true;
    case T_BOOL:
        return parse_bool(value, (bool *)p);
    case T_U32:
    case T_SIZE32:
        if (!options_parse_size(value, &v) || v < d->min || v > d->max) {
            return false;
        }
        *(uint32_t *)p = (uint32_t)v;
        return true;
    case T_SIZE64:
        if (!options_parse_size(value, &v) || v < d->min || v > d->max) {
            return false;
        }
        *(uint64_t *)p = v;
        return true;
    case T_SYNC:
        if (strcmp(value, "full") != 0 && strcmp(value, "none") != 0) {
            return false;
        }
        *(bool *)p = !strcmp(value, "full");
        return true;
    case T_LEVEL:
        return log_parse_level(value, (log_level *)p);
    }
    return false;
}

static void format_size(uint64_t v, char *buf, size_t len)
{
    static const char suffix[] = "KMGT";
    int k = -1;
    while (v != 0 && k < 3 && v % 1024 == 0) {
        v /= 1024;
        k++;
    }
    if (k < 0) {
        snprintf(buf, len, "%llu", (unsigned long long)v);
    } else {
        snprintf(buf, len, "%llu%c", (unsigned long long)v, suffix[k]);
    }
}

static void format_value(const esd_options *o, const opt_def *d, char *buf, size_t len)
{
    const void *p = (const char *)o + d->off;
    switch (d->type) {
    case T_STR: {
        const char *s = *(const char *const *)p;
        snprintf(buf, len, "%s", s ? s : "");
        break;
    }
    case T_BOOL:
        snprintf(buf, len, "%s", *(const bool *)p ? "true" : "false");
        break;
    case T_U32:
        snprintf(buf, len, "%u", *(const uint32_t *)p);
        break;
    case T_SIZE32:
        format_size(*(const uint32_t *)p, buf, len);
        break;
    case T_SIZE64:
        format_size(*(const uint64_t *)p, buf, len);
        break;
    case T_SYNC:
        snprintf(buf, len, "%s", *(const bool *)p ? "full" : "none");
        break;
    case T_LEVEL: {
        static const char *const names[] = {"debug", "info", "warn", "error"};
        int l = (int)*(const log_level *)p;
        snprintf(buf, len, "%s", l >= 0 && l < 4 ? names[l] : "?");
        break;
    }
    }
}

bool options_value(const esd_options *opts, const char *name, char *buf, size_t len)
{
    int i = find_def(name);
    if (i < 0) {
        return false;
    }
    format_value(opts, &defs[i], buf, len);
    return true;
}

/* --------------------------------------------------------------- layers -- */

typedef struct file_ctx {
    esd_options *o;
    FILE *f;
    uint32_t line;
    char *msg;
    size_t msg_len;
    es_err rv;
} file_ctx;

/* fgets that counts lines, so the handler knows where it is. */
static char *counting_reader(char *str, int num, void *stream)
{
    file_ctx *fc = stream;
    char *r = fgets(str, num, fc->f);
    if (r) {
        size_t n = strlen(r);
        /* inih reads a long line in several calls: count its end only */
        if (n > 0 && r[n - 1] == '\n') {
            fc->line++;
        } else if (feof(fc->f)) {
            fc->line++;
        }
    }
    return r;
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
    file_ctx *fc = user;
    esd_options *o = fc->o;
    /* fc->line counts the line just read; a value on the last line without
     * a newline has been counted too. */
    uint32_t line = fc->line;
    if (section && section[0]) {
        snprintf(fc->msg, fc->msg_len, "%s:%u: sections are not used (found [%s])", o->config_file,
                 line, section);
        fc->rv = ES_ERR_INVALID_ARGUMENT;
        return 0;
    }
    int i = find_def(name);
    if (i < 0) {
        snprintf(fc->msg, fc->msg_len, "%s:%u: unknown key '%s'", o->config_file, line, name);
        fc->rv = ES_ERR_INVALID_ARGUMENT;
        return 0;
    }
    if (!value) {
        snprintf(fc->msg, fc->msg_len, "%s:%u: '%s' needs '= VALUE'", o->config_file, line, name);
        fc->rv = ES_ERR_INVALID_ARGUMENT;
        return 0;
    }
    char *copy = strdup(value);
    if (!copy) {
        fc->rv = ES_ERR_NO_MEMORY;
        return 0;
    }
    free(o->owned[i]); /* a key given twice: the last one counts */
    o->owned[i] = copy;
    if (!set_value(o, &defs[i], copy)) {
        snprintf(fc->msg, fc->msg_len, "%s:%u: invalid value '%s' for %s", o->config_file, line,
                 defs[i].secret ? "<redacted>" : value, name);
        fc->rv = ES_ERR_INVALID_ARGUMENT;
        return 0;
    }
    o->origin[i] = OPT_FROM_FILE;
    o->line[i] = line;
    return 1;
}

static es_err read_file(esd_options *o, char *msg, size_t msg_len)
{
    int fd;
    es_err orv = regfile_open(o->config_file, "the configuration file", &fd, msg, msg_len);
    if (orv != ES_OK) {
        return orv;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        snprintf(msg, msg_len, "cannot read the configuration file %s: %s", o->config_file,
                 strerror(errno));
        close(fd);
        return ES_ERR_IO;
    }
    /* libinih's switches (Debian builds it with them as variables). */
    ini_allow_multiline = false;
    ini_allow_inline_comments = false;
    ini_stop_on_first_error = true;
    ini_allow_no_value = true; /* so that "key" alone gets our message */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 64 * 1024;
    file_ctx fc = {.o = o, .f = f, .msg = msg, .msg_len = msg_len, .rv = ES_OK};
    int r = ini_parse_stream(counting_reader, &fc, file_handler, &fc);
    fclose(f);
    if (fc.rv != ES_OK) {
        return fc.rv;
    }
    if (r == -2) {
        return ES_ERR_NO_MEMORY;
    }
    if (r != 0) {
        snprintf(msg, msg_len, "%s:%d: expected 'key = value'", o->config_file, r);
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

static es_err read_env(esd_options *o, char *msg, size_t msg_len)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        const char *v = getenv(env_names[i]);
        if (!v || !*v) {
            continue;
        }
        if (!set_value(o, &defs[i], v)) {
            snprintf(msg, msg_len, "invalid value '%s' in $%s", defs[i].secret ? "<redacted>" : v,
                     env_names[i]);
            return ES_ERR_INVALID_ARGUMENT;
        }
        o->origin[i] = OPT_FROM_ENV;
    }
    /* Variables that look like ours but name nothing: a typo, most likely. */
    extern char **environ;
    size_t used = 0;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "ESD_", 4) != 0) {
            continue;
        }
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        bool known = n == strlen("ESD_CONFIG") && !strncmp(*e, "ESD_CONFIG", n);
        for (size_t i = 0; !known && i < N_DEFS; i++) {
            known = strlen(env_names[i]) == n && !strncmp(env_names[i], *e, n);
        }
        if (!known && used + n + 2 < sizeof o->unknown_env) {
            if (used) {
                o->unknown_env[used++] = ',';
            }
            memcpy(o->unknown_env + used, *e, n);
            used += n;
            o->unknown_env[used] = '\0';
        }
    }
    return ES_OK;
}

/* ----------------------------------------------------------- the command -- */

enum {
    OPT_CONFIG = 1000,
    OPT_PRINT_CONFIG,
    OPT_VERSION,
};

static void build_longopts(struct option *lo)
{
    size_t n = 0;
    for (size_t i = 0; i < N_DEFS; i++, n++) {
        lo[n].name = defs[i].pub.name;
        lo[n].has_arg = defs[i].type == T_BOOL ? optional_argument : required_argument;
        lo[n].flag = NULL;
        lo[n].val = (int)(i + 1);
    }
    lo[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    lo[n++] = (struct option){"print-config", no_argument, NULL, OPT_PRINT_CONFIG};
    lo[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    lo[n++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n] = (struct option){NULL, 0, NULL, 0};
}

/* One getopt pass. apply = false: only --config, --help, --version,
 * --print-config, and the syntax of everything; apply = true: the rest. */
static es_err scan_argv(int argc, char **argv, esd_options *o, const struct option *lo, bool apply,
                        char *msg, size_t msg_len)
{
    optind = 0; /* GNU: start over, reinitialising */
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        const char *a = optarg;
        switch (ch) {
        case 'h':
            o->help = 1;
            continue;
        case OPT_CONFIG:
            if (!apply) {
                o->config_file = a;
            }
            continue;
        case OPT_PRINT_CONFIG:
            o->print_config = 1;
            continue;
        case OPT_VERSION:
            o->version = 1;
            continue;
        case ':':
            snprintf(msg, msg_len, "option %s needs a value", argv[optind - 1]);
            return ES_ERR_INVALID_ARGUMENT;
        case '?':
            snprintf(msg, msg_len, "unknown option %s", argv[optind - 1]);
            return ES_ERR_INVALID_ARGUMENT;
        default:
            break;
        }
        if (ch < 1 || (size_t)ch > N_DEFS) {
            snprintf(msg, msg_len, "unknown option %s", argv[optind - 1]);
            return ES_ERR_INVALID_ARGUMENT;
        }
        if (!apply) {
            continue;
        }
        const opt_def *d = &defs[ch - 1];
        if (d->type == T_BOOL && !a) {
            a = "true";
        }
        if (!set_value(o, d, a)) {
            snprintf(msg, msg_len, "invalid value '%s' for --%s", d->secret ? "<redacted>" : a,
                     d->pub.name);
            return ES_ERR_INVALID_ARGUMENT;
        }
        o->origin[ch - 1] = OPT_FROM_FLAG;
    }
    if (optind < argc) {
        snprintf(msg, msg_len, "unexpected argument '%s'", argv[optind]);
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

/* "--max-page", "$ESD_MAX_PAGE" or "FILE:LINE (max-page)" for messages. */
static void origin_of(const esd_options *o, size_t i, char *buf, size_t len)
{
    switch ((opt_origin)o->origin[i]) {
    case OPT_FROM_FLAG:
        snprintf(buf, len, "--%s", defs[i].pub.name);
        break;
    case OPT_FROM_ENV:
        snprintf(buf, len, "$%s", env_names[i]);
        break;
    case OPT_FROM_FILE:
        snprintf(buf, len, "%s:%u (%s)", o->config_file, o->line[i], defs[i].pub.name);
        break;
    default:
        snprintf(buf, len, "the default %s", defs[i].pub.name);
        break;
    }
}

/* A JetStream stream name, or (dots = true) a subject prefix of such
 * tokens: no wildcards, whitespace or empty tokens. */
static bool nats_name_ok(const char *s, bool dots)
{
    size_t n = strlen(s), token = 0;
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (dots && ch == '.') {
            if (token == 0) {
                return false;
            }
            token = 0;
            continue;
        }
        if (!isalnum((unsigned char)ch) && ch != '_' && ch != '-') {
            return false;
        }
        token++;
    }
    return token > 0;
}

es_err options_parse(int argc, char **argv, esd_options *opts, char *msg, size_t msg_len)
{
    table_init();
    memset(opts, 0, sizeof *opts);
    server_config_defaults(&opts->cfg);
    server_config *cfg = &opts->cfg;
    struct option lo[N_DEFS + 5];
    build_longopts(lo);

    es_err rv = scan_argv(argc, argv, opts, lo, false, msg, msg_len);
    if (rv != ES_OK || opts->help || opts->version) {
        return rv;
    }
    if (!opts->config_file) {
        const char *c = getenv("ESD_CONFIG");
        opts->config_file = c && *c ? c : NULL;
    }
    if (opts->config_file && (rv = read_file(opts, msg, msg_len)) != ES_OK) {
        return rv;
    }
    if ((rv = read_env(opts, msg, msg_len)) != ES_OK) {
        return rv;
    }
    if ((rv = scan_argv(argc, argv, opts, lo, true, msg, msg_len)) != ES_OK) {
        return rv;
    }

    if (cfg->map_size != 0 && cfg->map_size < (1u << 20)) {
        char where[256];
        origin_of(opts, (size_t)find_def("map-size"), where, sizeof where);
        snprintf(msg, msg_len, "map-size (from %s) must be 0 (the default) or at least 1M", where);
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (strcmp(cfg->sync_method, "journal") != 0 && strcmp(cfg->sync_method, "lmdb") != 0 &&
        strcmp(cfg->sync_method, "nometasync") != 0) {
        char where[256];
        origin_of(opts, (size_t)find_def("sync-method"), where, sizeof where);
        snprintf(msg, msg_len, "sync-method (from %s) must be journal, lmdb or nometasync", where);
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (!cfg->tls_cert != !cfg->tls_key) {
        char where[256];
        origin_of(opts, (size_t)find_def(cfg->tls_cert ? "tls-cert" : "tls-key"), where,
                  sizeof where);
        snprintf(msg, msg_len, "%s (from %s) needs %s too", cfg->tls_cert ? "tls-cert" : "tls-key",
                 where, cfg->tls_cert ? "tls-key" : "tls-cert");
        return ES_ERR_INVALID_ARGUMENT;
    }
    if (cfg->relay_nats && cfg->follow_nats) {
        snprintf(msg, msg_len,
                 "relay-nats and follow-nats cannot be combined: a follower "
                 "copies a stream, a primary relays to one");
        return ES_ERR_INVALID_ARGUMENT;
    }
    static const char *const names[] = {"relay-stream", "follow-stream", "relay-subject"};
    const char *values[] = {cfg->relay_stream, cfg->follow_stream, cfg->relay_subject};
    for (size_t i = 0; i < 3; i++) {
        if (!nats_name_ok(values[i], i == 2)) {
            char where[256];
            origin_of(opts, (size_t)find_def(names[i]), where, sizeof where);
            snprintf(msg, msg_len, "%s '%s' (from %s): use 1..64 of A-Z a-z 0-9 _ -%s", names[i],
                     values[i], where, i == 2 ? " in dot-separated tokens" : "");
            return ES_ERR_INVALID_ARGUMENT;
        }
    }
    /* One event (plus its envelope) must always fit in one reply frame. */
    uint32_t room = cfg->max_frame_bytes - 4096;
    if (cfg->max_event_bytes > room) {
        int ev = find_def("max-event-bytes");
        if (opts->origin[ev] != OPT_FROM_DEFAULT) {
            char where[256];
            origin_of(opts, (size_t)ev, where, sizeof where);
            snprintf(msg, msg_len,
                     "max-event-bytes %u (from %s) does not fit in a frame of max-frame-bytes %u "
                     "(it must be at most %u)",
                     cfg->max_event_bytes, where, cfg->max_frame_bytes, room);
            return ES_ERR_INVALID_ARGUMENT;
        }
        cfg->max_event_bytes = room;
    }
    if (cfg->max_output_bytes < cfg->max_frame_bytes) {
        cfg->max_output_bytes = cfg->max_frame_bytes;
    }
    if (cfg->max_memory == 0) {
        cfg->max_memory = options_default_max_memory();
    } else if (cfg->max_memory < OPTIONS_MIN_MAX_MEMORY) {
        char where[256];
        origin_of(opts, (size_t)find_def("max-memory"), where, sizeof where);
        snprintf(msg, msg_len, "max-memory (from %s) must be 0 (the default) or at least 16M",
                 where);
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

uint64_t options_default_max_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    uint64_t v = ram / 4;
    return v < (64u << 20) ? (64u << 20) : v;
}

void options_finish(esd_options *opts)
{
    for (size_t i = 0; i < OPTIONS_MAX; i++) {
        free(opts->owned[i]);
        opts->owned[i] = NULL;
    }
}

/* ------------------------------------------------------------------ help -- */

void options_usage(FILE *out)
{
    table_init();
    fprintf(out, "Usage: esd [OPTIONS]\n"
                 "\n"
                 "esd, the event store daemon: an append-only event log in LMDB, served over\n"
                 "length-prefixed protobuf (es.v1) on TCP.\n"
                 "\n"
                 "Options (each also a key of the --config file and an ESD_* variable):\n");
    for (size_t i = 0; i < N_DEFS; i++) {
        const opt_def *d = &defs[i];
        char flag[64];
        if (d->pub.arg) {
            snprintf(flag, sizeof flag, "--%s %s", d->pub.name, d->pub.arg);
        } else {
            snprintf(flag, sizeof flag, "--%s", d->pub.name);
        }
        const char *h = d->help;
        bool first = true;
        while (*h) {
            const char *nl = strchr(h, '\n');
            int n = nl ? (int)(nl - h) : (int)strlen(h);
            if (first && strlen(flag) > 24) {
                fprintf(out, "  %s\n", flag);
                first = false;
            }
            fprintf(out, "  %-24s  %.*s\n", first ? flag : "", n, h);
            first = false;
            h += n + (nl ? 1 : 0);
        }
    }
    fprintf(out, "\n"
                 "  --config FILE             read 'key = value' lines from FILE (default\n"
                 "                            $ESD_CONFIG); keys are the option names above\n"
                 "  --print-config            print the effective configuration and exit\n"
                 "  --version                 print the version and exit\n"
                 "  -h, --help                show this help\n"
                 "\n"
                 "Precedence: flag > ESD_* environment variable (ESD_LISTEN, ESD_MAX_PAGE, ...)\n"
                 "> configuration file > default.\n"
                 "\n"
                 "Signals: SIGTERM and SIGINT stop accepting, finish the commits and replies in\n"
                 "flight (at most 5 s), close the store and exit 0.\n");
}

void options_print(FILE *out, const esd_options *opts)
{
    table_init();
    fprintf(out, "# esd %s: effective configuration\n", ESD_VERSION);
    fprintf(out, "# precedence: flag > ESD_* environment > configuration file > default\n");
    if (opts->config_file) {
        fprintf(out, "# configuration file: %s\n", opts->config_file);
    }
    for (size_t i = 0; i < N_DEFS; i++) {
        const opt_def *d = &defs[i];
        char value[4096];
        format_value(opts, d, value, sizeof value);
        if (d->secret && value[0]) {
            snprintf(value, sizeof value, "<redacted>");
        }
        if (opts->origin[i] != OPT_FROM_DEFAULT) {
            char where[300];
            origin_of(opts, i, where, sizeof where);
            fprintf(out, "# from %s\n", where);
        }
        if (value[0] == '\0') {
            fprintf(out, "# %s = (not set)\n", d->pub.name);
        } else {
            fprintf(out, "%s = %s\n", d->pub.name, value);
        }
    }
}

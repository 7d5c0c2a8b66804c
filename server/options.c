#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "frame.h"

void server_config_defaults(server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = "127.0.0.1:7400";
    cfg->data_dir = "esd-data";
    cfg->sync = true;
    cfg->map_size = 0;
    cfg->max_frame_bytes = FRAME_DEFAULT_MAX_BODY;
    cfg->max_connections = 1024;
    cfg->idle_timeout_s = 300;
    cfg->handshake_timeout_s = 10;
    cfg->frame_timeout_s = 30;
    cfg->max_in_flight = 1024;
    cfg->max_output_bytes = FRAME_DEFAULT_MAX_BODY;
    cfg->max_pending_bytes = 64ull * 1024u * 1024u;
    cfg->max_events_per_append = STORE_DEFAULT_MAX_EVENTS_PER_APPEND;
    cfg->max_event_bytes = STORE_DEFAULT_MAX_EVENT_BYTES;
    cfg->max_page = STORE_DEFAULT_MAX_PAGE;
    cfg->max_batch = 1024;
    cfg->log_level = LOG_INFO;
    cfg->auth_failures = AUTH_FAIL_BURST;
}

void options_usage(FILE *out)
{
    fprintf(
        out,
        "Usage: esd [OPTIONS]\n"
        "\n"
        "esd, the event store daemon: an append-only event log in LMDB, served over\n"
        "length-prefixed protobuf (es.v1) on TCP.\n"
        "\n"
        "Options:\n"
        "  --listen HOST:PORT        address to listen on (default 127.0.0.1:7400;\n"
        "                            port 0 picks a free port, logged at start)\n"
        "  --data-dir DIR            data directory, created if missing (default ./esd-data)\n"
        "  --sync full|none          full: every acknowledged commit is fsynced (default);\n"
        "                            none: no fsync, a crash can lose acknowledged events\n"
        "  --map-size SIZE           LMDB map size, e.g. 64G (default 1T on 64-bit)\n"
        "  --max-frame-bytes N       largest frame accepted (default 16M, at most 64M)\n"
        "  --max-connections N       connections served at once (default 1024)\n"
        "  --idle-timeout SECONDS    close connections silent this long (default 300, 0 = never)\n"
        "  --handshake-timeout SECS  the hello must arrive within this (default 10)\n"
        "  --frame-timeout SECONDS   a started frame must complete within this (default 30)\n"
        "  --max-in-flight N         queued writes per connection (default 1024)\n"
        "  --max-output-bytes SIZE   unsent replies per connection before reading stops\n"
        "                            (default 16M, never below --max-frame-bytes)\n"
        "  --max-events-per-append N (default 10000)\n"
        "  --max-event-bytes SIZE    data + metadata of one event (default 8M)\n"
        "  --max-page N              events per read page (default 4096)\n"
        "  --auth-file FILE          users, roles and tokens (NAME ROLE SECRET a line;\n"
        "                            mode 0600); without it esd serves only loopback\n"
        "  --insecure                without --auth-file, listen on any address anyway\n"
        "  --auth-failures N         failed hellos one address may make at once; one more\n"
        "                            each second; beyond, its connections are closed\n"
        "                            (default 10)\n"
        "  --port-file FILE          write the bound port to FILE once listening\n"
        "  --log-level LEVEL         debug, info, warn or error (default info)\n"
        "  -h, --help                show this help\n"
        "\n"
        "Signals: SIGTERM and SIGINT stop accepting, finish the commits and replies in\n"
        "flight (at most 5 s), close the store and exit 0.\n");
}

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

static bool parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (!options_parse_size(s, &v) || v < min || v > max) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

enum {
    OPT_LISTEN = 256,
    OPT_DATA_DIR,
    OPT_SYNC,
    OPT_MAP_SIZE,
    OPT_MAX_FRAME,
    OPT_MAX_CONN,
    OPT_IDLE,
    OPT_HANDSHAKE,
    OPT_FRAME_TIMEOUT,
    OPT_IN_FLIGHT,
    OPT_OUTPUT,
    OPT_EVENTS,
    OPT_EVENT_BYTES,
    OPT_PAGE,
    OPT_PORT_FILE,
    OPT_LOG_LEVEL,
    OPT_AUTH_FILE,
    OPT_INSECURE,
    OPT_AUTH_FAILURES,
};

es_err options_parse(int argc, char **argv, esd_options *opts, char *msg, size_t msg_len)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"sync", required_argument, NULL, OPT_SYNC},
        {"map-size", required_argument, NULL, OPT_MAP_SIZE},
        {"max-frame-bytes", required_argument, NULL, OPT_MAX_FRAME},
        {"max-connections", required_argument, NULL, OPT_MAX_CONN},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
        {"frame-timeout", required_argument, NULL, OPT_FRAME_TIMEOUT},
        {"max-in-flight", required_argument, NULL, OPT_IN_FLIGHT},
        {"max-output-bytes", required_argument, NULL, OPT_OUTPUT},
        {"max-events-per-append", required_argument, NULL, OPT_EVENTS},
        {"max-event-bytes", required_argument, NULL, OPT_EVENT_BYTES},
        {"max-page", required_argument, NULL, OPT_PAGE},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"auth-file", required_argument, NULL, OPT_AUTH_FILE},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"auth-failures", required_argument, NULL, OPT_AUTH_FAILURES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(opts, 0, sizeof *opts);
    server_config_defaults(&opts->cfg);
    server_config *cfg = &opts->cfg;
    bool event_bytes_set = false;
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        const char *a = optarg;
        bool ok = true;
        switch (ch) {
        case OPT_LISTEN:
            cfg->listen = a;
            break;
        case OPT_DATA_DIR:
            ok = a[0] != '\0';
            cfg->data_dir = a;
            break;
        case OPT_SYNC:
            ok = !strcmp(a, "full") || !strcmp(a, "none");
            cfg->sync = !strcmp(a, "full");
            break;
        case OPT_MAP_SIZE:
            ok = options_parse_size(a, &cfg->map_size) && cfg->map_size >= (1u << 20);
            break;
        case OPT_MAX_FRAME:
            ok = parse_u32(a, 1024, FRAME_HARD_MAX_BODY, &cfg->max_frame_bytes);
            break;
        case OPT_MAX_CONN:
            ok = parse_u32(a, 1, 1000000, &cfg->max_connections);
            break;
        case OPT_IDLE:
            ok = parse_u32(a, 0, 86400 * 365, &cfg->idle_timeout_s);
            break;
        case OPT_HANDSHAKE:
            ok = parse_u32(a, 1, 3600, &cfg->handshake_timeout_s);
            break;
        case OPT_FRAME_TIMEOUT:
            ok = parse_u32(a, 1, 3600, &cfg->frame_timeout_s);
            break;
        case OPT_IN_FLIGHT:
            ok = parse_u32(a, 1, 65536, &cfg->max_in_flight);
            break;
        case OPT_OUTPUT:
            ok = parse_u32(a, 4096, 1u << 30, &cfg->max_output_bytes);
            break;
        case OPT_EVENTS:
            ok = parse_u32(a, 1, 1000000, &cfg->max_events_per_append);
            break;
        case OPT_EVENT_BYTES:
            ok = parse_u32(a, 1, FRAME_HARD_MAX_BODY, &cfg->max_event_bytes);
            event_bytes_set = true;
            break;
        case OPT_PAGE:
            ok = parse_u32(a, 1, STORE_DEFAULT_MAX_PAGE, &cfg->max_page);
            break;
        case OPT_PORT_FILE:
            opts->port_file = a;
            break;
        case OPT_LOG_LEVEL:
            ok = log_parse_level(a, &cfg->log_level);
            break;
        case OPT_AUTH_FILE:
            ok = a[0] != '\0';
            cfg->auth_file = a;
            break;
        case OPT_INSECURE:
            cfg->insecure = true;
            break;
        case OPT_AUTH_FAILURES:
            ok = parse_u32(a, 1, 1000000, &cfg->auth_failures);
            break;
        case 'h':
            opts->help = 1;
            return ES_OK;
        case ':':
            snprintf(msg, msg_len, "option %s needs a value", argv[optind - 1]);
            return ES_ERR_INVALID_ARGUMENT;
        default:
            snprintf(msg, msg_len, "unknown option %s", argv[optind - 1]);
            return ES_ERR_INVALID_ARGUMENT;
        }
        if (!ok) {
            snprintf(msg, msg_len, "invalid value '%s' for %s", a, argv[optind - 1]);
            return ES_ERR_INVALID_ARGUMENT;
        }
    }
    if (optind < argc) {
        snprintf(msg, msg_len, "unexpected argument '%s'", argv[optind]);
        return ES_ERR_INVALID_ARGUMENT;
    }
    /* One event (plus its envelope) must always fit in one reply frame. */
    uint32_t room = cfg->max_frame_bytes - 4096;
    if (cfg->max_event_bytes > room) {
        if (event_bytes_set) {
            snprintf(msg, msg_len,
                     "--max-event-bytes %u does not fit in a frame of --max-frame-bytes %u "
                     "(it must be at most %u)",
                     cfg->max_event_bytes, cfg->max_frame_bytes, room);
            return ES_ERR_INVALID_ARGUMENT;
        }
        cfg->max_event_bytes = room;
    }
    if (cfg->max_output_bytes < cfg->max_frame_bytes) {
        cfg->max_output_bytes = cfg->max_frame_bytes;
    }
    return ES_OK;
}

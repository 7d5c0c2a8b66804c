/*
 * es-account-view — the account read models of the bank example, served
 * over HTTP JSON.
 *
 *   es-account-view [-s HOST:PORT] [--listen HOST:PORT] [--data-dir DIR]
 *                   [--port-file FILE] [--rebuild] [--no-sync]
 *
 * Design notes
 * ------------
 * One process, two threads. The projector thread runs es_projector_run():
 * it follows the whole log of esd (so that it sees the lifecycle records
 * too: a deleted account is dropped) and folds every account event into the
 * read model (model.c) in the projector's LMDB environment, one write
 * transaction per batch together with the checkpoint — exactly once,
 * whenever the process is killed. The main thread runs libevent: evhttp
 * answers the queries (http.c) from short read transactions on the same
 * environment (MDB_NOTLS), and SIGTERM/SIGINT, caught as libevent signal
 * events, stop the loop; the projector is then stopped and joined, and the
 * environment closed. The signals are blocked in the projector thread so
 * that only the loop sees them.
 *
 * A permanent projection error (another store behind the address, a full
 * map) does not stop the queries: the read model stays readable as it
 * was, /stats shows the error, and the projector retries every 10 s.
 */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "model.h"
#include "token.h"

#define RETRY_PERMANENT_MS 10000

static const char USAGE[] =
    "Usage: es-account-view [OPTIONS]\n"
    "\n"
    "Keeps the account read models of the esd bank example in a local LMDB\n"
    "environment (exactly once, resuming from its checkpoint) and serves them\n"
    "over HTTP JSON:\n"
    "  GET /accounts/ID\n"
    "  GET /accounts?page=1&per_page=20&owner=NAME&min_balance=N\n"
    "  GET /stats\n"
    "\n"
    "Options:\n"
    "  -s, --server HOST:PORT  esd (default $ES_SERVER, else " ES_DEFAULT_ADDRESS ")\n"
    "      --listen HOST:PORT  HTTP address (default 127.0.0.1:8080; port 0 picks a\n"
    "                          free port, logged at start)\n"
    "      --port-file FILE    write the bound HTTP port to FILE once listening\n"
    "      --data-dir DIR      the read model's LMDB environment (default\n"
    "                          ./account-view-data, created if missing)\n"
    "      --map-size MIB      LMDB map size in MiB (default 1024)\n"
    "      --rebuild           empty the read model and rebuild it from the first event\n"
    "      --no-sync           do not fsync read-model commits (tests, benchmarks)\n"
    "      --user NAME         user for esd's hello (default $ES_USER)\n"
    "      --token-file FILE   token for esd's hello (default $ES_TOKEN_FILE, else the\n"
    "                          token in $ES_TOKEN)\n"
    "      --tls               TLS to esd, verified against the system's CAs\n"
    "                          (default: on when $ES_TLS is 1)\n"
    "      --tls-ca FILE       TLS to esd, verified against the CAs in FILE\n"
    "                          (default $ES_TLS_CA)\n"
    "      --tls-server-name N the name esd's certificate must carry\n"
    "      --tls-insecure      TLS without verifying esd (tests only)\n"
    "  -h, --help              this help\n"
    "\n"
    "SIGTERM and SIGINT stop the service cleanly (exit 0).\n";

typedef struct options {
    const char *server;
    const char *listen;
    const char *port_file;
    const char *data_dir;
    size_t map_mib;
    bool rebuild;
    bool no_sync;
    const char *user;
    const char *token_file;
    tool_tls tls;
} options;

typedef struct app {
    es_projector *proj;
    av_model model;
    atomic_bool stopping;
    struct event_base *base;
} app;

/* ------------------------------------------------------------------ log -- */

__attribute__((format(printf, 2, 3))) static void logmsg(const char *level, const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ts=%s.%03ldZ level=%s prog=es-account-view %s\n", when, ts.tv_nsec / 1000000,
            level, msg);
}

/* ------------------------------------------------------------ projector -- */

static void *projector_main(void *arg)
{
    app *a = arg;
    while (!atomic_load(&a->stopping)) {
        es_err err = es_projector_run(a->proj);
        if (err == ES_OK) {
            break;
        }
        es_projector_status st;
        es_projector_status_get(a->proj, &st);
        logmsg("error", "msg=\"projection stopped\" err=%s detail=\"%s\" retry_in_ms=%d",
               es_errname(err), st.last_error_msg, RETRY_PERMANENT_MS);
        for (int waited = 0; waited < RETRY_PERMANENT_MS && !atomic_load(&a->stopping);
             waited += 100) {
            struct timespec d = {0, 100 * 1000000L};
            nanosleep(&d, NULL);
        }
    }
    return NULL;
}

/* -------------------------------------------------------------- signals -- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    app *a = arg;
    logmsg("info", "msg=\"stopping\" signal=%d", (int)sig);
    atomic_store(&a->stopping, true);
    es_projector_stop(a->proj);
    event_base_loopexit(a->base, NULL);
}

/* -------------------------------------------------------------- options -- */

static bool split_host_port(const char *s, char *host, size_t host_len, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) {
        return false;
    }
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= host_len) {
        return false;
    }
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p > 65535) {
        return false;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return true;
}

static int parse_options(int argc, char **argv, options *o)
{
    enum {
        OPT_LISTEN = 0x100,
        OPT_PORT_FILE,
        OPT_DATA_DIR,
        OPT_MAP,
        OPT_REBUILD,
        OPT_NO_SYNC,
        OPT_USER,
        OPT_TOKEN_FILE,
        OPT_TLS,
        OPT_TLS_CA,
        OPT_TLS_NAME,
        OPT_TLS_INSECURE
    };
    static const struct option lo[] = {
        {"server", required_argument, NULL, 's'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"map-size", required_argument, NULL, OPT_MAP},
        {"rebuild", no_argument, NULL, OPT_REBUILD},
        {"no-sync", no_argument, NULL, OPT_NO_SYNC},
        {"user", required_argument, NULL, OPT_USER},
        {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
        {"tls", no_argument, NULL, OPT_TLS},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-server-name", required_argument, NULL, OPT_TLS_NAME},
        {"tls-insecure", no_argument, NULL, OPT_TLS_INSECURE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv("ES_SERVER");
    o->server = env && *env ? env : ES_DEFAULT_ADDRESS;
    o->listen = "127.0.0.1:8080";
    o->data_dir = "account-view-data";
    o->map_mib = 1024;
    int opt;
    while ((opt = getopt_long(argc, argv, "s:h", lo, NULL)) != -1) {
        switch (opt) {
        case 's':
            o->server = optarg;
            break;
        case OPT_LISTEN:
            o->listen = optarg;
            break;
        case OPT_PORT_FILE:
            o->port_file = optarg;
            break;
        case OPT_DATA_DIR:
            o->data_dir = optarg;
            break;
        case OPT_MAP: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || v == 0 || v > (1ull << 24)) {
                fprintf(stderr, "es-account-view: --map-size: a number of MiB from 1\n");
                return 2;
            }
            o->map_mib = (size_t)v;
            break;
        }
        case OPT_REBUILD:
            o->rebuild = true;
            break;
        case OPT_NO_SYNC:
            o->no_sync = true;
            break;
        case OPT_USER:
            o->user = optarg;
            break;
        case OPT_TOKEN_FILE:
            o->token_file = optarg;
            break;
        case OPT_TLS:
            o->tls.tls = true;
            break;
        case OPT_TLS_CA:
            o->tls.ca_file = optarg;
            break;
        case OPT_TLS_NAME:
            o->tls.server_name = optarg;
            break;
        case OPT_TLS_INSECURE:
            o->tls.insecure = true;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        default:
            fputs(USAGE, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "es-account-view: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    return -1;
}

static int write_port_file(const char *path, uint16_t port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        return -1;
    }
    fprintf(f, "%u\n", (unsigned)port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- main -- */

int main(int argc, char **argv)
{
    options o = {0};
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0) {
        return rc;
    }
    char host[256];
    uint16_t port;
    if (!split_host_port(o.listen, host, sizeof host, &port)) {
        fprintf(stderr, "es-account-view: --listen %s: expected HOST:PORT\n", o.listen);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    app a = {0};
    es_client_options copts;
    es_client_options_init(&copts);
    copts.address = o.server;
    copts.client_name = "es-account-view";
    copts.user = o.user ? o.user : getenv("ES_USER");
    tool_tls_apply(&o.tls, &copts, "es-account-view");
    static tool_token tok; /* the projector's client copies it */
    if (tool_token_load(&tok, o.token_file, "es-account-view") != 0) {
        return 2;
    }
    if (tok.len > 0) {
        copts.token = tok.bytes;
        copts.token_len = tok.len;
    }
    /* The projector loop backs off by itself and checks for a stop between
     * attempts: keep each call short so that SIGTERM is served promptly
     * even while esd is unreachable. */
    copts.reconnect_attempts = 1;
    copts.connect_timeout_ms = 2000;
    copts.request_timeout_ms = 10000;
    es_projector_options popts;
    es_projector_options_init(&popts);
    char perr[512] = "";
    popts.dir = o.data_dir;
    popts.map_size = o.map_mib << 20;
    popts.sync = o.no_sync ? ES_PROJECTOR_SYNC_NONE : ES_PROJECTOR_SYNC_META;
    popts.dbs = av_dbs;
    popts.n_dbs = AV_N_DBS;
    popts.apply = av_apply;
    popts.lifecycle = av_lifecycle; /* drops deleted accounts */
    popts.ctx = &a.model;
    /* The whole log, not the category: the lifecycle records ($lifecycle)
     * are not in it; av_apply keeps the account streams. */
    popts.target = ES_SUB_ALL;
    popts.client = &copts;
    popts.errmsg = perr;
    popts.errmsg_len = sizeof perr;
    es_err err = es_projector_create(&popts, &a.proj);
    if (err != ES_OK) {
        logmsg("error", "msg=\"cannot open the read model\" err=%s detail=\"%s\"", es_errname(err),
               perr);
        return 1;
    }
    av_model_init(&a.model, a.proj);
    if (o.rebuild) {
        if ((err = es_projector_rebuild(a.proj)) != ES_OK) {
            logmsg("error", "msg=\"rebuild failed\" err=%s", es_errname(err));
            es_projector_destroy(a.proj);
            return 1;
        }
        logmsg("info", "msg=\"read model emptied; rebuilding from the first event\"");
    }
    bool has;
    uint64_t cp = es_projector_checkpoint(a.proj, &has);

    int status = 1;
    a.base = event_base_new();
    if (!a.base) {
        logmsg("error", "msg=\"event_base_new failed\"");
        goto out_close;
    }
    av_http *http = NULL;
    uint16_t bound;
    char herr[512] = "";
    if ((err = av_http_start(a.base, host, port, a.proj, &a.model, &http, &bound, herr,
                             sizeof herr)) != ES_OK) {
        logmsg("error", "msg=\"%s\"", herr[0] ? herr : es_strerror(err));
        goto out_free_base;
    }
    if (o.port_file && write_port_file(o.port_file, bound) != 0) {
        logmsg("error", "msg=\"cannot write the port file\" path=%s", o.port_file);
        goto out_free_http;
    }
    struct event *sigterm = evsignal_new(a.base, SIGTERM, on_signal, &a);
    struct event *sigint = evsignal_new(a.base, SIGINT, on_signal, &a);
    if (!sigterm || !sigint || event_add(sigterm, NULL) != 0 || event_add(sigint, NULL) != 0) {
        logmsg("error", "msg=\"cannot install signal handlers\"");
        goto out_free_signals;
    }

    /* The projector thread must not take the signals meant for the loop. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t thread;
    int prc = pthread_create(&thread, NULL, projector_main, &a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        logmsg("error", "msg=\"cannot start the projector thread\" errno=%d", prc);
        goto out_free_signals;
    }
    logmsg("info", "msg=\"listening\" addr=%s:%u port=%u server=%s data_dir=%s checkpoint=%llu%s",
           host, (unsigned)bound, (unsigned)bound, o.server, o.data_dir, (unsigned long long)cp,
           has ? "" : " (empty read model)");

    event_base_dispatch(a.base);

    atomic_store(&a.stopping, true);
    es_projector_stop(a.proj);
    pthread_join(thread, NULL);
    es_projector_status st;
    es_projector_status_get(a.proj, &st);
    logmsg("info", "msg=\"stopped\" checkpoint=%llu events_applied=%llu batches=%llu",
           (unsigned long long)st.checkpoint, (unsigned long long)st.events_applied,
           (unsigned long long)st.batches_committed);
    status = 0;

out_free_signals:
    if (sigterm) {
        event_free(sigterm);
    }
    if (sigint) {
        event_free(sigint);
    }
out_free_http:
    av_http_free(http);
out_free_base:
    event_base_free(a.base);
out_close:
    es_projector_destroy(a.proj);
    return status;
}

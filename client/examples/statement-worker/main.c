/*
 * es-statement-worker — an account-statement worker of a consumer group.
 *
 *   es-statement-worker [-s HOST:PORT] [--group NAME] [--name LABEL]
 *                       [--create] [--max N] [--fail-every N]
 *
 * Run it as N processes: they join the same group over the category
 * "account" (created by the first one started with --create), share the
 * accounts between them, and each prints one statement line per event it
 * handles, acknowledging every batch with one ack. The group keeps the
 * events of each account in order: no two workers ever work on the same
 * account at the same time, so a statement line of revision r of an
 * account is always printed after the one of r - 1, whichever worker
 * printed it. Kill one (kill -9): the events it held come again, to the
 * others (docs/groups.md has the walkthrough).
 *
 * --max N stops after N events; --fail-every N nacks every Nth event
 * (retry) to show redelivery.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/client.h"
#include "es/group.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *server = getenv("ES_SERVER") ? getenv("ES_SERVER") : "127.0.0.1:2113";
    const char *group = "statements";
    const char *name = "worker";
    bool create = false;
    uint64_t max = 0, fail_every = 0;
    static const struct option lo[] = {
        {"server", required_argument, NULL, 's'}, {"group", required_argument, NULL, 'g'},
        {"name", required_argument, NULL, 'n'},   {"create", no_argument, NULL, 'c'},
        {"max", required_argument, NULL, 'm'},    {"fail-every", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "s:h", lo, NULL)) != -1) {
        switch (ch) {
        case 's':
            server = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'c':
            create = true;
            break;
        case 'm':
            max = strtoull(optarg, NULL, 10);
            break;
        case 'f':
            fail_every = strtoull(optarg, NULL, 10);
            break;
        case 'h':
            printf("usage: es-statement-worker [-s HOST:PORT] [--group NAME] [--name LABEL] "
                   "[--create] [--max N] [--fail-every N]\n");
            return 0;
        default:
            fprintf(stderr, "es-statement-worker: bad option (--help)\n");
            return 2;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    es_client_options o;
    es_client_options_init(&o);
    o.address = server;
    o.client_name = name;
    o.user = getenv("ES_USER");
    es_client *c = NULL;
    if (es_client_create(&o, &c) != ES_OK || es_client_connect(c) != ES_OK) {
        fprintf(stderr, "es-statement-worker: cannot connect to %s: %s\n", server,
                c ? es_client_errmsg(c) : "bad address");
        es_client_destroy(c);
        return 3;
    }
    if (create) {
        es_err rv =
            es_group_create(c, group, ES_GROUP_CATEGORY, "account", ES_GROUP_FROM_START, 0, NULL);
        if (rv != ES_OK && rv != ES_ERR_GROUP_EXISTS) {
            fprintf(stderr, "es-statement-worker: create %s: %s\n", group, es_client_errmsg(c));
            es_client_destroy(c);
            return 1;
        }
    }
    es_group_member *m = NULL;
    if (es_group_join(c, group, 100, name, &m) != ES_OK) {
        fprintf(stderr, "es-statement-worker: join %s: %s\n", group, es_client_errmsg(c));
        es_client_destroy(c);
        return 1;
    }
    uint64_t handled = 0, seen = 0;
    int status = 0;
    while (!stop && (max == 0 || handled < max)) {
        es_recorded_event *evs;
        size_t n = 0;
        es_err rv = es_group_next(m, 500, &evs, &n);
        if (rv != ES_OK) {
            fprintf(stderr, "es-statement-worker: %s\n", es_client_errmsg(c));
            status = 1;
            break;
        }
        uint64_t acks[100], retry[100];
        size_t n_acks = 0, n_retry = 0;
        for (size_t i = 0; i < n && n_acks + n_retry < 100; i++) {
            seen++;
            if (fail_every && seen % fail_every == 0) {
                retry[n_retry++] = evs[i].position;
                continue;
            }
            /* The statement line: the account, its revision, what happened. */
            printf("%s %s rev %" PRIu64 " %s %.*s\n", name, evs[i].stream, evs[i].revision,
                   evs[i].type, (int)evs[i].data_len, (const char *)evs[i].data);
            acks[n_acks++] = evs[i].position;
        }
        fflush(stdout);
        if (n_retry) {
            es_group_nack(m, retry, n_retry, ES_NACK_RETRY, "statement printer busy");
        }
        if (n_acks && es_group_ack(m, acks, n_acks) == ES_OK) {
            handled += n_acks;
        }
    }
    fprintf(stderr, "%s: %" PRIu64 " events handled\n", name, handled);
    es_group_leave(m);
    es_client_destroy(c);
    return status;
}

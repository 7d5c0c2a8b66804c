/* esd: parse, wire, run, shut down in order. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "auth.h"
#include "auth_limiter.h"
#include "follow.h"
#include "handler.h"
#include "net.h"
#include "options.h"
#include "relay.h"
#include "server.h"
#include "store.h"
#include "subs.h"
#include "groups.h"
#include "writer.h"

/* Read pages and pushes are built in buffers of up to a frame (1-8 MiB)
 * that are freed once written. glibc would hand such blocks back to the
 * kernel and fault them in again on the next page (measured: ~100,000 page
 * faults and half of esd's CPU time as system time while replaying a
 * stream). Keep blocks up to 64 MiB in the heap and do not trim it below
 * that: memory stays bounded by the peak the other caps allow. */
static void tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

/* The store's report of an index that led to the wrong record: what,
 * where (index and position); the count is esd_store_index_mismatches_total. */
static void log_store_damage(void *ctx, const char *line)
{
    (void)ctx;
    log_msg(LOG_ERROR, "store damage", "detail=\"%s\"", line);
}

/*
 * Start-up builds the parts in order (authentication, store, subscriptions,
 * the follower's eventfd, writer, relay, follower, network) and shutdown
 * takes them down in reverse through one chain of labels, each named after
 * what it undoes; a failure jumps to the label of the last part built. One
 * exception to the reverse order: the network layer is destroyed after the
 * writer stops, since jobs the writer finishes after the loop has stopped
 * belong to its connections and go back to it (net_destroy).
 */
int main(int argc, char **argv)
{
    tune_malloc();
    esd_options opts;
    char msg[512] = "";
    int status = 1;
    if (options_parse(argc, argv, &opts, msg, sizeof msg) != ES_OK) {
        fprintf(stderr, "esd: %s\nTry 'esd --help'.\n", msg);
        status = 2;
        goto out_finish_options;
    }
    if (opts.help || opts.version || opts.print_config) {
        if (opts.help) {
            options_usage(stdout);
        } else if (opts.version) {
            printf("esd %s (protocol es.v%u)\n", ESD_VERSION, ESD_PROTOCOL_VERSION);
        } else {
            options_print(stdout, &opts);
        }
        status = 0;
        goto out_finish_options;
    }
    server_config *cfg = &opts.cfg;
    log_set_level(cfg->log_level);
    if (opts.config_file) {
        log_msg(LOG_INFO, "configuration read", "config=%s", opts.config_file);
    }
    if (opts.unknown_env[0]) {
        log_msg(LOG_WARN, "ignoring environment variables that name no option", "vars=%s",
                opts.unknown_env);
    }

    auth *users = NULL;
    auth_limiter *limiter = NULL;
    server_ctx srv = {.cfg = cfg, .import_fd = -1};
    net *n = NULL;
    write_job *leftover = NULL;
    if (cfg->auth_file) {
        es_err arv = auth_load(cfg->auth_file, &users, msg, sizeof msg);
        if (arv != ES_OK) {
            log_msg(LOG_ERROR, "cannot use the auth file", "error=%s detail=\"%s\"",
                    es_errname(arv), msg);
            goto out_finish_options;
        }
        auth_limits lim = {.burst = cfg->auth_failures, .global_rate = cfg->auth_global_rate};
        limiter = auth_limiter_create(&lim);
        if (!limiter) {
            goto out_destroy_auth;
        }
        log_msg(LOG_INFO, "authentication on", "auth_file=%s users=%zu", cfg->auth_file,
                auth_count(users));
    } else if (cfg->insecure) {
        log_msg(LOG_WARN,
                "authentication off and --insecure: anyone who can reach the listen address "
                "can read and write",
                "listen=%s", cfg->listen);
    } else {
        log_msg(LOG_WARN,
                "authentication off (no --auth-file): every client is admin; serving loopback "
                "only",
                "listen=%s", cfg->listen);
    }
    srv.auth = users;
    srv.limiter = limiter;

    store_options so = {
        .path = cfg->data_dir,
        .map_size = cfg->map_size,
        .sync = cfg->sync,
        .no_encrypt = cfg->no_encrypt,
        .max_events_per_append = cfg->max_events_per_append,
        .max_event_bytes = cfg->max_event_bytes,
        .follower = cfg->follow_nats != NULL,
        .damage_log = log_store_damage,
        .sync_method = !strcmp(cfg->sync_method, "lmdb")         ? STORE_SYNC_LMDB
                       : !strcmp(cfg->sync_method, "nometasync") ? STORE_SYNC_NOMETASYNC
                                                                 : STORE_SYNC_JOURNAL,
        .journal_bytes = cfg->journal_bytes,
    };
    srv.start_us = store_now_us();
    es_err rv = store_open(&so, &srv.st, msg, sizeof msg);
    if (rv != ES_OK) {
        log_msg(LOG_ERROR, "cannot open the store", "error=%s detail=\"%s\"", es_errname(rv), msg);
        goto out_destroy_auth;
    }
    store_stats st;
    store_stats_get(srv.st, &st);
    log_msg(LOG_INFO, "store open",
            "data_dir=%s head=%llu streams=%llu sync=%s sync_method=%s map_size=%llu",
            cfg->data_dir, (unsigned long long)st.head_position,
            (unsigned long long)st.stream_count, cfg->sync ? "full" : "none",
            !cfg->sync         ? "none"
            : cfg->follow_nats ? "lmdb"
                               : cfg->sync_method,
            (unsigned long long)st.map_size);
    if (!cfg->sync) {
        log_msg(LOG_WARN, "sync is off: acknowledged events can be lost in a crash", NULL);
    }
    store_journal_stats js;
    store_journal_stats_get(srv.st, &js);
    if (js.enabled) {
        log_msg(LOG_INFO, "journal recovered",
                "entries_replayed=%llu events_replayed=%llu meta_restored=%s recovery_ms=%.1f "
                "ring_bytes=%llu",
                (unsigned long long)js.replayed_entries, (unsigned long long)js.replayed_events,
                js.meta_restored ? "yes" : "no", (double)js.recovery_us / 1000.0,
                (unsigned long long)js.ring_bytes);
    }
    rv = subs_create(&srv, &srv.subs);
    if (rv != ES_OK) {
        goto out_close_store;
    }
    rv = groups_create(&srv, &srv.groups);
    if (rv != ES_OK) {
        log_msg(LOG_ERROR, "cannot load the consumer groups", "error=%s", es_errname(rv));
        goto out_destroy_subs;
    }
    /* Replication: a relay reads the store in its own thread; a follower
     * imports in its own thread and wakes the subscriptions through
     * import_fd. */
    if (cfg->follow_nats) {
        srv.import_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (srv.import_fd < 0) {
            log_msg(LOG_ERROR, "cannot start the follower thread", NULL);
            goto out_destroy_subs;
        }
    }
    if (cfg->relay_nats) {
        store_scavenge_horizon_set(srv.st, 0); /* raised as JetStream acknowledges (relay.c) */
    }
    rv = writer_start(srv.st, cfg->max_batch, &srv.w);
    if (rv != ES_OK) {
        log_msg(LOG_ERROR, "cannot start the writer thread", "error=%s", es_errname(rv));
        goto out_close_import_fd;
    }
    writer_scavenge_set(srv.w, cfg->scavenge_slice, cfg->scavenge_interval_ms);
    if (cfg->relay_nats && relay_start(srv.st, cfg, &srv.relay) != ES_OK) {
        log_msg(LOG_ERROR, "cannot start the relay thread", NULL);
        goto out_stop_writer;
    }
    if (cfg->follow_nats && follow_start(srv.st, cfg, srv.import_fd, &srv.follow) != ES_OK) {
        log_msg(LOG_ERROR, "cannot start the follower thread", NULL);
        goto out_stop_relay;
    }
    rv = net_create(&srv, opts.port_file, &n, msg, sizeof msg);
    if (rv != ES_OK) {
        log_msg(LOG_ERROR, "cannot start the server", "error=%s detail=\"%s\"", es_errname(rv),
                msg);
        goto out_stop_follow;
    }
    net_run(n);
    status = 0;
out_stop_follow:
    follow_stop(srv.follow);
out_stop_relay:
    relay_stop(srv.relay);
out_stop_writer:
    writer_stop(srv.w, &leftover);
    net_destroy(n, leftover); /* n is NULL when the network never started: nothing was submitted */
out_close_import_fd:
    if (srv.import_fd >= 0) {
        close(srv.import_fd);
    }
out_destroy_subs:
    groups_destroy(srv.groups);
    subs_destroy(srv.subs);
out_close_store:
    store_close(srv.st);
out_destroy_auth:
    auth_limiter_destroy(limiter);
    auth_destroy(users);
    if (status == 0) {
        log_msg(LOG_INFO, "stopped", NULL);
    }
out_finish_options:
    options_finish(&opts);
    return status;
}

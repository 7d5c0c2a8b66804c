#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "auth_limiter.h"
#include "follow.h"
#include "groups.h"
#include "handler.h"
#include "relay.h"
#include "server.h"
#include "store.h"
#include "subs.h"
#include "writer.h"

/* ------------------------------------------------------------ exposition -- */

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(FILE *out, const char *name, const char *help, double v)
{
    family(out, name, "gauge", help);
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        fprintf(out, "%s %.0f\n", name, v); /* integers exactly, without exponent */
    } else {
        fprintf(out, "%s %.9g\n", name, v);
    }
}

static void counter(FILE *out, const char *name, const char *help, uint64_t v)
{
    family(out, name, "counter", help);
    fprintf(out, "%s %llu\n", name, (unsigned long long)v);
}

/* The samples of one histogram; labels ("kind=\"x\"") may be "". scale
 * turns the observation unit into the exposed one (1e-6: us -> s). */
static void hist_samples(FILE *out, const char *name, const char *labels, const hist_spec *spec,
                         const hist *h, double scale)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < spec->n; i++) {
        cum += h->buckets[i];
        fprintf(out, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", name, labels, sep,
                (double)spec->bounds[i] * scale, (unsigned long long)cum);
    }
    cum += h->buckets[spec->n];
    fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    if (labels[0]) {
        fprintf(out, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, (double)h->sum * scale,
                name, labels, (unsigned long long)cum);
    } else {
        fprintf(out, "%s_sum %.9g\n%s_count %llu\n", name, (double)h->sum * scale, name,
                (unsigned long long)cum);
    }
}

static const char *result_name(size_t r)
{
    return r == 0 ? "ok" : es_errname((es_err)r);
}

/* Consumer groups: one sample per group and figure, labelled group="NAME"
 * (the name escaped as Prometheus wants: backslash, quote). */
typedef struct group_metrics {
    FILE *out;
    int field;
} group_metrics;

static void group_sample(void *ctx, const groups_stat *st)
{
    group_metrics *gm = ctx;
    static const char *const names[] = {"esd_group_members",
                                        "esd_group_in_flight",
                                        "esd_group_acked_total",
                                        "esd_group_redeliveries_total",
                                        "esd_group_parked",
                                        "esd_group_lag_events",
                                        "esd_group_checkpoint_position"};
    uint64_t v[] = {st->members, st->in_flight, st->acked,     st->retries,
                    st->parked,  st->lag,       st->checkpoint};
    fprintf(gm->out, "%s{group=\"", names[gm->field]);
    for (size_t i = 0; i < st->name_len; i++) {
        uint8_t ch = st->name[i];
        if (ch == '\\' || ch == '"') {
            fputc('\\', gm->out);
        }
        fputc(ch, gm->out);
    }
    fprintf(gm->out, "\"} %llu\n", (unsigned long long)v[gm->field]);
}

static void group_families(FILE *out, struct groups *gs)
{
    static const struct {
        const char *name, *type, *help;
    } f[] = {
        {"esd_group_members", "gauge", "Members of a consumer group."},
        {"esd_group_in_flight", "gauge", "Events out with a group's members, not yet acked."},
        {"esd_group_acked_total", "counter",
         "Events a group's members acknowledged (or skipped) since the server started; its rate "
         "is acked per second."},
        {"esd_group_redeliveries_total", "counter",
         "Events a group delivered again (nack, ack timeout, member gone) since the start."},
        {"esd_group_parked", "gauge", "Events a group has parked now."},
        {"esd_group_lag_events", "gauge",
         "Head position minus a group's checkpoint (an upper bound of the events it has left)."},
        {"esd_group_checkpoint_position", "gauge",
         "A group's checkpoint: every matching event at or below it is done."},
    };
    for (int i = 0; i < (int)(sizeof f / sizeof f[0]); i++) {
        family(out, f[i].name, f[i].type, f[i].help);
        group_metrics gm = {out, i};
        groups_stats(gs, group_sample, &gm);
    }
}

static void by_result(FILE *out, const char *name, const char *help, const uint64_t *v)
{
    family(out, name, "counter", help);
    /* "ok" always, so that a rate over it exists from the first scrape */
    fprintf(out, "%s{result=\"ok\"} %llu\n", name, (unsigned long long)v[0]);
    for (size_t r = 1; r < LOOPSTATS_RESULTS; r++) {
        if (v[r]) {
            fprintf(out, "%s{result=\"%s\"} %llu\n", name, result_name(r),
                    (unsigned long long)v[r]);
        }
    }
}

void metrics_render(FILE *out, server_ctx *srv)
{
    const loopstats *m = &srv->metrics;
    const server_counters *c = &srv->counters;

    family(out, "esd_build_info", "gauge", "Version of esd and of its protocol.");
    fprintf(out, "esd_build_info{version=\"%s\",protocol=\"es.v%u\"} 1\n", ESD_VERSION,
            ESD_PROTOCOL_VERSION);
    gauge(out, "esd_uptime_seconds", "Seconds since esd started.",
          (double)(store_now_us() - srv->start_us) / 1e6);
    gauge(out, "esd_ready", "1 while esd serves requests, 0 once it is shutting down.",
          srv->shutting_down ? 0 : 1);

    /* connections and sessions */
    gauge(out, "esd_connections", "Open client connections.", c->connections);
    counter(out, "esd_connections_accepted_total", "Client connections accepted.",
            m->connections_total);
    counter(out, "esd_connections_refused_total",
            "Client connections refused at accept (connection limit, shutdown).",
            m->connections_refused);
    counter(out, "esd_tls_handshake_failures_total", "TLS handshakes that failed.",
            m->tls_handshake_failures);
    counter(out, "esd_tls_plaintext_refused_total",
            "Plaintext connections refused on the TLS port.", m->tls_plaintext_refused);
    counter(out, "esd_auth_failures_total", "Hellos refused for their credentials.",
            c->auth_failures);
    counter(out, "esd_permission_denied_total", "Requests refused for the connection's role.",
            c->permission_denied);
    counter(out, "esd_prehello_closed_total",
            "Connections closed because their address (IPv6: /64) had more than --max-prehello "
            "connections without a completed hello (the oldest is closed).",
            m->prehello_closed);
    auth_limiter_render(out, srv->limiter);

    /* appends */
    by_result(out, "esd_append_requests_total",
              "Append and transaction requests, by result (ok or the error code).",
              m->append_requests);
    by_result(out, "esd_append_events_total",
              "Events in append and transaction requests, by result.", m->append_events);
    by_result(out, "esd_append_bytes_total",
              "Data and metadata bytes in append and transaction requests, by result.",
              m->append_bytes);

    /* the writer */
    writer_stats ws;
    writer_get_stats(srv->w, &ws);
    counter(out, "esd_commits_total", "Group commits (LMDB write transactions) of appends.",
            ws.commits);
    family(out, "esd_commit_batch_requests", "histogram",
           "Append and transaction requests per group commit.");
    hist_samples(out, "esd_commit_batch_requests", "", &hist_batch, &ws.batch, 1.0);
    family(out, "esd_commit_duration_seconds", "histogram",
           "Duration of one group commit in the writer thread: checks, writes, LMDB commit "
           "and, with sync full, its fsync.");
    hist_samples(out, "esd_commit_duration_seconds", "", &hist_latency_us, &ws.commit_us, 1e-6);
    family(out, "esd_commit_sync_duration_seconds", "histogram",
           "Of each group commit, the durable part: with the journal, the entry's write and "
           "fdatasync and LMDB's commit without a sync; with --sync-method lmdb, LMDB's "
           "commit call and its two fsyncs (data pages, then the meta page).");
    hist_samples(out, "esd_commit_sync_duration_seconds", "", &hist_latency_us, &ws.sync_us, 1e-6);
    gauge(out, "esd_writer_queue", "Write jobs submitted and not yet completed.",
          (double)writer_pending(srv->w));
    counter(out, "esd_scavenge_slices_total",
            "Scavenger slices run by the writer thread between group commits.", ws.scavenge_slices);
    counter(out, "esd_scavenge_events_removed_total",
            "Events removed by the scavenger (deleted, truncated or expired).", ws.events_removed);
    counter(out, "esd_scavenge_bytes_reclaimed_total",
            "Bytes of records and index entries removed by the scavenger.", ws.bytes_reclaimed);
    gauge(out, "esd_scavenge_lag_seconds",
          "How long the scavenger has had work left (0: caught up).",
          (double)ws.scavenge_lag_us / 1e6);
    counter(out, "esd_scavenge_errors_total", "Scavenger slices that failed (retried later).",
            ws.scavenge_errors);

    /* the journal (--sync full, --sync-method journal) */
    store_journal_stats js;
    store_journal_stats_get(srv->st, &js);
    if (js.enabled) {
        counter(out, "esd_journal_bytes_total",
                "Bytes of journal entries written (one entry per group commit with new events).",
                js.bytes);
        counter(out, "esd_journal_entries_total", "Journal entries written.", js.entries);
        counter(out, "esd_journal_syncs_total",
                "fdatasync calls of the durable path: one per append entry, two per checkpoint "
                "(data.mdb, then the journal's checkpoint record), one per timer sync of "
                "consumer-group entries.",
                js.syncs);
        counter(out, "esd_journal_unsynced_entries_total",
                "Consumer-group entries written without their own fdatasync (made durable by "
                "the next append's, the next checkpoint's, or the timer's).",
                js.unsynced_entries);
        counter(out, "esd_journal_timer_syncs_total",
                "fdatasyncs the timer made for consumer-group entries no later sync covered "
                "within 0.1 s.",
                js.timer_syncs);
        counter(out, "esd_checkpoints_total", "Checkpoints made since the start.", js.checkpoints);
        gauge(out, "esd_checkpoint_last_duration_seconds",
              "Duration of the last checkpoint (pin, data.mdb fdatasync, record, sync).",
              (double)js.checkpoint_last_us / 1e6);
        gauge(out, "esd_checkpoint_max_duration_seconds", "Longest checkpoint since the start.",
              (double)js.checkpoint_max_us / 1e6);
        gauge(out, "esd_checkpoint_lag_events",
              "Events applied to LMDB but not yet in a durable checkpoint (replayed from the "
              "journal after a crash).",
              (double)js.lag_events);
        gauge(out, "esd_journal_replayed_entries",
              "Journal entries replayed at the start (recovery).", (double)js.replayed_entries);
        gauge(out, "esd_recovery_duration_seconds",
              "Time of the start's journal recovery: replay and the first checkpoint.",
              (double)js.recovery_us / 1e6);
        gauge(out, "esd_journal_broken",
              "1 once a journal write or checkpoint failed: appends fail until a restart.",
              js.broken ? 1 : 0);
    }

    /* requests */
    family(out, "esd_request_duration_seconds", "histogram",
           "Time from a request's arrival to its reply, by request kind.");
    for (size_t k = 0; k < LOOPSTATS_KINDS; k++) {
        if (m->request_us[k].count == 0 && k == 0) {
            continue;
        }
        char labels[64];
        snprintf(labels, sizeof labels, "kind=\"%s\"",
                 k == 0 ? "unknown" : handler_kind_name(loopstats_index_kind(k)));
        hist_samples(out, "esd_request_duration_seconds", labels, &hist_latency_us,
                     &m->request_us[k], 1e-6);
    }
    counter(out, "esd_slow_requests_total", "Requests slower than --slow-request-ms.",
            m->slow_requests);

    /* subscriptions */
    uint64_t head = store_head(srv->st);
    subs_lag_stats lag = {0};
    if (srv->subs) {
        subs_lag(srv->subs, head, &lag);
    }
    gauge(out, "esd_subscriptions", "Open subscriptions.", c->subscriptions);
    gauge(out, "esd_subscription_lag_max_positions",
          "Largest distance in log positions between the head and a subscription's next "
          "event (subscriptions to the log, a category, a type or a prefix).",
          (double)lag.max);
    gauge(out, "esd_subscription_lag_sum_positions",
          "Sum of those distances over the subscriptions to the log.", (double)lag.sum);
    gauge(out, "esd_subscriptions_behind", "Subscriptions that have not delivered up to the head.",
          (double)lag.behind);

    if (srv->groups) {
        group_families(out, srv->groups);
    }

    /* the store */
    counter(out, "esd_store_index_mismatches_total",
            "Reads and writes refused as CORRUPT because an index led to a record that is not "
            "what it promised (or an insert met an existing entry).",
            store_index_mismatches(srv->st));
    gauge(out, "esd_store_writes_refused",
          "1 while the store refuses every write after meeting damage inside one (until "
          "restart; reads go on), else 0.",
          store_writes_refused(srv->st) ? 1.0 : 0.0);
    store_stats st;
    if (store_stats_get(srv->st, &st) == ES_OK) {
        gauge(out, "esd_head_position", "The last committed global position.",
              (double)st.head_position);
        gauge(out, "esd_streams", "Streams in the store.", (double)st.stream_count);
        gauge(out, "esd_events", "Events in the store.", (double)st.event_count);
        gauge(out, "esd_store_map_size_bytes", "LMDB map size.", (double)st.map_size);
        gauge(out, "esd_store_map_used_bytes", "LMDB map in use (pages of the last transaction).",
              (double)st.map_used);
        gauge(out, "esd_store_map_used_ratio", "map_used / map_size.",
              st.map_size ? (double)st.map_used / (double)st.map_size : 0.0);
        gauge(out, "esd_store_readers", "LMDB reader slots in use.", st.readers_used);
        gauge(out, "esd_store_readers_max", "LMDB reader slots.", st.readers_max);
        gauge(out, "esd_sync_full", "1 when every commit is fsynced (--sync full).",
              st.sync ? 1 : 0);
    }
    /* replication */
    if (srv->relay) {
        relay_stats rs;
        relay_get_stats(srv->relay, &rs);
        gauge(out, "esd_relay_connected", "1 while the relay's NATS connection is up.",
              rs.connected ? 1 : 0);
        gauge(out, "esd_relay_publishing",
              "1 while the relay knows where the JetStream stream ends and publishes.",
              rs.resumed ? 1 : 0);
        gauge(out, "esd_relay_acked_position",
              "Highest log position JetStream acknowledged to the relay.",
              (double)rs.acked_position);
        gauge(out, "esd_relay_lag_positions",
              "Head position minus the highest position JetStream acknowledged.",
              (double)(head > rs.acked_position ? head - rs.acked_position : 0));
        counter(out, "esd_relay_published_total", "Events JetStream acknowledged to the relay.",
                rs.published);
        counter(out, "esd_relay_errors_total",
                "Relay failures (refused or lost publishes, lost connections) that made it "
                "resume from the stream's last message.",
                rs.errors);
    }
    if (srv->follow) {
        follow_stats fs;
        follow_get_stats(srv->follow, &fs);
        gauge(out, "esd_follower_connected", "1 while the follower has a JetStream consumer.",
              fs.connected ? 1 : 0);
        gauge(out, "esd_follower_halted",
              "1 when the follower refused a message and stopped consuming (see the log).",
              fs.halted ? 1 : 0);
        gauge(out, "esd_follower_pending_messages",
              "Messages in the JetStream stream after the last one the follower fetched.",
              (double)fs.pending);
        gauge(out, "esd_follower_upstream_position",
              "Position of the last message the follower fetched.", (double)fs.upstream_position);
        counter(out, "esd_follower_imported_total", "Events the follower imported.", fs.imported);
    }
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", srv->cfg->data_dir);
    if (stat(path, &sb) == 0) {
        gauge(out, "esd_store_file_bytes", "Size of the data file (data.mdb).", (double)sb.st_size);
        gauge(out, "esd_store_disk_bytes", "Disk space taken by the data file.",
              (double)sb.st_blocks * 512.0);
    }
}

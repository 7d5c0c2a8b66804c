/*
 * esctl_db — the offline commands on a data directory, through store.h:
 *
 *   esctl db stat DIR          statistics (store id, head, counts, map)
 *   esctl db check DIR         verify every record and index; exit 1 on any defect
 *   esctl db backup DIR DEST   consistent compacted copy into an empty DEST
 *
 * Design notes: the store is opened read-only, which LMDB allows beside a
 * running esd (readers never block the writer), so these commands are safe
 * on a live data directory. Nothing here talks to the server. stat and
 * check say on stderr when an esd owns the directory (its esd.lock is
 * held: store_dir_owned) -- what they show is a moment of a store that
 * keeps changing; backup refuses a destination that an esd owns, naming
 * its pid, rather than write beside it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esctl.h"
#include "store.h"

static int db_usage(FILE *f)
{
    fprintf(f, "usage: esctl db stat DIR\n"
               "       esctl db check DIR\n"
               "       esctl db backup DIR DEST\n"
               "\n"
               "Offline commands on a data directory, opened read-only (safe beside a running\n"
               "esd):\n"
               "  stat DIR          store id, format, head position, counts, map usage\n"
               "  check DIR         verify every record's checksum, gapless positions,\n"
               "                    contiguous revisions and every index; prints a summary\n"
               "                    and exits 1 on any defect\n"
               "  backup DIR DEST   write a consistent, compacted copy to DEST (new or empty)\n"
               "\n"
               "Options: --json (one JSON object per line), -h/--help.\n");
    return f == stdout ? EXIT_OK : EXIT_USAGE;
}

static int open_store(const esctl *x, const char *dir, store **out)
{
    store_options o;
    memset(&o, 0, sizeof(o));
    o.path = dir;
    o.read_only = true;
    char msg[256] = "";
    es_err rv = store_open(&o, out, msg, sizeof(msg));
    if (rv != ES_OK) {
        if (x->json) {
            json_t *e = json_object();
            json_object_set_new(e, "error", json_string(es_errname(rv)));
            json_object_set_new(e, "code", json_integer(rv));
            json_object_set_new(e, "message", json_string(msg[0] ? msg : es_strerror(rv)));
            char *s = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (s != NULL) {
                fprintf(stderr, "%s\n", s);
            }
            free(s);
            json_decref(e);
        } else {
            fprintf(stderr, "esctl: cannot open the store in %s: %s (%s)\n", dir,
                    msg[0] ? msg : es_strerror(rv), es_errname(rv));
        }
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

/* A note for the read-only commands on a directory that esd is using. */
static void note_owner(const char *dir)
{
    long pid;
    if (store_dir_owned(dir, &pid)) {
        fprintf(stderr,
                "esctl: note: esd (pid %ld) is running on %s; what follows may be stale by the "
                "time you read it\n",
                pid, dir);
    }
}

static int db_stat(const esctl *x, const char *dir)
{
    store *s = NULL;
    note_owner(dir);
    int rc = open_store(x, dir, &s);
    if (rc != EXIT_OK) {
        return rc;
    }
    store_stats st;
    es_err rv = store_stats_get(s, &st);
    if (rv != ES_OK) {
        fprintf(stderr, "esctl: db stat %s: %s\n", dir, es_strerror(rv));
        store_close(s);
        return EXIT_FAILED;
    }
    char id[ES_UUID_STRLEN + 1], created[40];
    es_uuid_format(st.store_id, id);
    out_time(st.created_us, created, sizeof(created));
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(dir));
    json_object_set_new(o, "store_id", json_string(id));
    json_object_set_new(o, "format_version", json_integer(st.format_version));
    json_object_set_new(o, "created_at", json_string(created));
    json_object_set_new(o, "head_position", json_integer((json_int_t)st.head_position));
    json_object_set_new(o, "stream_count", json_integer((json_int_t)st.stream_count));
    json_object_set_new(o, "event_count", json_integer((json_int_t)st.event_count));
    json_object_set_new(o, "map_size", json_integer((json_int_t)st.map_size));
    json_object_set_new(o, "map_used", json_integer((json_int_t)st.map_used));
    json_object_set_new(o, "readers_used", json_integer(st.readers_used));
    json_object_set_new(o, "readers_max", json_integer(st.readers_max));
    /* Pages by use: live, removed but not yet reclaimed by the scavenger
     * (an estimate from the bytes of the events reads no longer serve),
     * and free (on LMDB's free list, reused by later writes). */
    store_pages pg;
    rv = store_pages_get(s, &pg);
    if (rv != ES_OK) {
        fprintf(stderr, "esctl: db stat %s: pages: %s\n", dir, es_strerror(rv));
        json_decref(o);
        store_close(s);
        return EXIT_FAILED;
    }
    json_object_set_new(o, "page_size", json_integer((json_int_t)pg.page_size));
    json_object_set_new(o, "pages_total", json_integer((json_int_t)pg.total));
    json_object_set_new(o, "pages_live", json_integer((json_int_t)pg.live));
    json_object_set_new(o, "pages_unreclaimed", json_integer((json_int_t)pg.unreclaimed));
    json_object_set_new(o, "pages_free", json_integer((json_int_t)pg.free));
    json_object_set_new(o, "events_unreclaimed", json_integer((json_int_t)pg.unreclaimed_events));
    out_object(x, o);
    store_close(s);
    return EXIT_OK;
}

typedef struct check_ctx {
    const esctl *x;
    uint64_t lines;
} check_ctx;

static void check_log(void *ctx, const char *line)
{
    check_ctx *cc = ctx;
    cc->lines++;
    if (cc->x->json) {
        json_t *o = json_object();
        json_object_set_new(o, "defect", json_string(line));
        out_json_line(o);
    } else {
        printf("defect: %s\n", line);
    }
}

static int db_check(const esctl *x, const char *dir)
{
    store *s = NULL;
    note_owner(dir);
    int rc = open_store(x, dir, &s);
    if (rc != EXIT_OK) {
        return rc;
    }
    store_check_report r;
    memset(&r, 0, sizeof(r));
    check_ctx cc = {.x = x};
    es_err rv = store_check(s, &r, check_log, &cc);
    store_close(s);
    if (rv != ES_OK && rv != ES_ERR_CORRUPT) {
        fprintf(stderr, "esctl: db check %s: %s (%s)\n", dir, es_strerror(rv), es_errname(rv));
        return EXIT_FAILED;
    }
    uint64_t defects = r.crc_errors + r.position_gaps + r.revision_errors + r.index_errors;
    bool ok = rv == ES_OK && defects == 0;
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(dir));
    json_object_set_new(o, "ok", json_boolean(ok));
    json_object_set_new(o, "events_checked", json_integer((json_int_t)r.events_checked));
    json_object_set_new(o, "streams_checked", json_integer((json_int_t)r.streams_checked));
    json_object_set_new(o, "crc_errors", json_integer((json_int_t)r.crc_errors));
    json_object_set_new(o, "position_gaps", json_integer((json_int_t)r.position_gaps));
    json_object_set_new(o, "revision_errors", json_integer((json_int_t)r.revision_errors));
    json_object_set_new(o, "index_errors", json_integer((json_int_t)r.index_errors));
    json_object_set_new(o, "first_bad_position", json_integer((json_int_t)r.first_bad_position));
    json_object_set_new(o, "events_removed", json_integer((json_int_t)r.events_removed));
    if (x->json) {
        out_json_line(o);
    } else {
        json_decref(o);
        printf("%s: %s: %llu events in %llu streams checked; %llu CRC errors, %llu position "
               "gaps, %llu revision errors, %llu index errors",
               dir, ok ? "ok" : "DEFECTS FOUND", (unsigned long long)r.events_checked,
               (unsigned long long)r.streams_checked, (unsigned long long)r.crc_errors,
               (unsigned long long)r.position_gaps, (unsigned long long)r.revision_errors,
               (unsigned long long)r.index_errors);
        if (r.first_bad_position != 0) {
            printf("; first bad position %llu", (unsigned long long)r.first_bad_position);
        }
        if (r.events_removed != 0) {
            printf("; %llu positions emptied by the scavenger",
                   (unsigned long long)r.events_removed);
        }
        printf("\n");
    }
    return ok ? EXIT_OK : EXIT_FAILED;
}

static int db_backup(const esctl *x, const char *dir, const char *dest)
{
    store *s = NULL;
    long pid;
    if (store_dir_owned(dest, &pid)) {
        fprintf(stderr,
                "esctl: db backup %s to %s: %s is in use by esd (pid %ld); refusing to write "
                "there\n",
                dir, dest, dest, pid);
        return EXIT_FAILED;
    }
    int rc = open_store(x, dir, &s);
    if (rc != EXIT_OK) {
        return rc;
    }
    es_err rv = store_backup(s, dest);
    store_close(s);
    if (rv != ES_OK) {
        fprintf(stderr, "esctl: db backup %s to %s: %s (%s)%s\n", dir, dest, es_strerror(rv),
                es_errname(rv),
                rv == ES_ERR_INVALID_ARGUMENT ? "; the destination must be new or empty"
                : rv == ES_ERR_STORE_FULL     ? "; no room at the destination (nothing left there)"
                                              : "");
        return EXIT_FAILED;
    }
    if (x->json) {
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(dir));
        json_object_set_new(o, "backup", json_string(dest));
        json_object_set_new(o, "ok", json_true());
        out_json_line(o);
    } else {
        printf("backup of %s written to %s\n", dir, dest);
    }
    return EXIT_OK;
}

int cmd_db(esctl *x, int argc, char **argv)
{
    /* Arguments after "db": the subcommand, its operands, and the global
     * options wherever they are. */
    const char *pos[4];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            return db_usage(stdout);
        }
        if (strcmp(a, "--json") == 0) {
            x->json = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "esctl: db: unknown option %s\n", a);
            return db_usage(stderr);
        } else if (npos < 4) {
            pos[npos++] = a;
        } else {
            fprintf(stderr, "esctl: db: too many arguments\n");
            return db_usage(stderr);
        }
    }
    if (npos == 2 && strcmp(pos[0], "stat") == 0) {
        return db_stat(x, pos[1]);
    }
    if (npos == 2 && strcmp(pos[0], "check") == 0) {
        return db_check(x, pos[1]);
    }
    if (npos == 3 && strcmp(pos[0], "backup") == 0) {
        return db_backup(x, pos[1], pos[2]);
    }
    fprintf(stderr, "esctl: db: bad subcommand or arguments\n");
    return db_usage(stderr);
}

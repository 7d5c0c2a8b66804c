/*
 * check.c — the store's housekeeping: statistics, store_check (every record
 * against its CRC and every index, and every index against the log), and
 * backups.
 *
 * Design notes: store_check walks the whole log in one read transaction
 * under the read guard (see read.c), so damage in LMDB's own pages ends it
 * with ES_ERR_CORRUPT rather than ending the process; damage it finds in
 * records and indexes is counted by kind and the first CHECK_LOG_MAX_LINES
 * defects are described through the caller's log callback; the next-stream
 * counter is checked against the highest stream number in use. A backup is
 * LMDB's compacting copy (mdb_env_copyfd2 with MDB_CP_COMPACT) into an
 * empty or new directory: consistent without stopping writers. It is
 * written to a temporary name in the destination (mode 0600 whatever the
 * umask), fsynced, renamed to data.mdb and the directory fsynced, so a
 * data.mdb there is always a whole backup; on any error the temporary file
 * (and a directory the backup created) is removed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "internal.h"
#include "validate.h"

#define CHECK_LOG_MAX_LINES 50

/* ---------------------------------------------------------- housekeeping -- */

STORE_GUARDED_BEGIN
es_err store_stats_get(store *s, store_stats *st)
{
    memset(st, 0, sizeof *st);
    memcpy(st->store_id, s->id, STORE_ID_BYTES);
    st->format_version = s->format;
    st->created_us = s->created_us;
    st->sync = s->sync;
    MDB_envinfo info;
    MDB_stat est;
    if (mdb_env_info(s->env, &info) || mdb_env_stat(s->env, &est)) {
        return ES_ERR_IO;
    }
    st->map_size = info.me_mapsize;
    st->map_used = (uint64_t)(info.me_last_pgno + 1) * est.ms_psize;
    st->readers_used = info.me_numreaders;
    st->readers_max = info.me_maxreaders;
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_stat ms;
    if (mdb_stat(txn, s->events, &ms) == 0) {
        st->event_count = ms.ms_entries;
    }
    if (mdb_stat(txn, s->streams, &ms) == 0) {
        st->stream_count = ms.ms_entries;
    }
    st->head_position = store_last_position(txn, s->events);
    store_read_end(txn);
    return ES_OK;
}
STORE_GUARDED_END

typedef struct check_ctx {
    store_check_report *r;
    store_check_log_fn log;
    void *log_ctx;
    unsigned lines;
} check_ctx;

static void defect(check_ctx *c, uint64_t pos, const char *what, uint64_t a, uint64_t b)
{
    if (pos && !c->r->first_bad_position) {
        c->r->first_bad_position = pos;
    }
    if (c->log && c->lines < CHECK_LOG_MAX_LINES) {
        char line[256];
        snprintf(line, sizeof line, "position %llu: %s (%llu, %llu)", (unsigned long long)pos, what,
                 (unsigned long long)a, (unsigned long long)b);
        store_in_visitor = true;
        c->log(c->log_ctx, line);
        store_in_visitor = false;
    }
    c->lines++;
}

static bool index_has(MDB_txn *txn, MDB_dbi dbi, const uint8_t *name, size_t len, uint64_t pos)
{
    uint8_t key[ES_MAX_NAME_BYTES + 9];
    if (len > ES_MAX_NAME_BYTES) {
        return false; /* len 0 is the empty category of "-x" */
    }
    MDB_val k = {store_name_pos_key(key, name, len, pos), key};
    MDB_val v;
    return mdb_get(txn, dbi, &k, &v) == 0;
}

static uint64_t db_entries(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat ms;
    return mdb_stat(txn, dbi, &ms) == 0 ? ms.ms_entries : 0;
}

/*
 * Whether the scavenger may have removed revisions below `lo` of a stream:
 * only a stream with a lifecycle state is ever scavenged. Which revisions
 * it removed cannot be checked against today's state: a limit lowered
 * after a scavenge serves from the lowest revision still stored, and
 * max-age windows depended on the clock at the time (scavenge.c).
 */
static bool removal_allowed(MDB_txn *txn, store *s, uint64_t number)
{
    uint8_t key[8];
    put_u64be(key, number);
    MDB_val k = {8, key}, v;
    return s->has_life && mdb_get(txn, s->life, &k, &v) == 0;
}

typedef struct life_seen {
    uint64_t number, revision; /* the stream changed; the record's revision */
    uint8_t value[STREAM_LIFE_BYTES];
} life_seen;

static int life_seen_cmp(const void *a, const void *b)
{
    const life_seen *x = a, *y = b;
    if (x->number != y->number) {
        return x->number < y->number ? -1 : 1;
    }
    return x->revision < y->revision ? 1 : (x->revision > y->revision ? -1 : 0); /* newest first */
}

/*
 * stream_life against the lifecycle records: for every stream that a
 * record changed, its stored value is the one the last record carries.
 * (Values set before lifecycle records existed have no record.)
 */
static void life_check(check_ctx *c, MDB_txn *txn, store *s)
{
    store_stream_info ls;
    MDB_val sk = {strlen(STORE_LIFE_STREAM), (void *)STORE_LIFE_STREAM}, sv;
    if (mdb_get(txn, s->streams, &sk, &sv) != 0 || store_stream_decode(&sv, &ls) != ES_OK) {
        return; /* no record yet */
    }
    size_t cap = 64, n = 0;
    life_seen *seen = malloc(cap * sizeof *seen);
    MDB_cursor *rcur;
    if (!seen || mdb_cursor_open(txn, s->stream_revs, &rcur) != 0) {
        free(seen);
        c->r->index_errors++;
        defect(c, 0, "lifecycle records not checked (no memory)", 0, 0);
        return;
    }
    uint8_t rkey[16];
    put_u64be(rkey, ls.number);
    put_u64be(rkey + 8, 0);
    MDB_val rk = {16, rkey}, rv;
    for (int rc = mdb_cursor_get(rcur, &rk, &rv, MDB_SET_RANGE);
         rc == 0 && rk.mv_size == 16 && get_u64be(rk.mv_data) == ls.number && rv.mv_size == 8;
         rc = mdb_cursor_get(rcur, &rk, &rv, MDB_NEXT)) {
        uint8_t pkey[8];
        memcpy(pkey, rv.mv_data, 8);
        MDB_val pk = {8, pkey}, pv;
        es_record r;
        store_stream_life l;
        const uint8_t *sid;
        size_t sid_len;
        store_stream_info si;
        MDB_val tk, tv;
        uint64_t erased_slot, erased_at;
        if (mdb_get(txn, s->events, &pk, &pv) == 0 && store_record_parse(&pv, &r) == ES_OK &&
            store_erase_record((const uint8_t *)pv.mv_data + RECORD_HEADER_BYTES,
                               pv.mv_size - RECORD_HEADER_BYTES, &erased_slot, &erased_at)) {
            continue; /* an erasure: no lifecycle state */
        }
        if (mdb_get(txn, s->events, &pk, &pv) != 0 || store_record_parse(&pv, &r) != ES_OK ||
            store_life_record_decode(r.data.p, r.data.len, &l, &sid, &sid_len) != ES_OK ||
            (tk = (MDB_val){sid_len, (void *)sid}, mdb_get(txn, s->streams, &tk, &tv)) != 0 ||
            store_stream_decode(&tv, &si) != ES_OK) {
            c->r->index_errors++;
            defect(c, get_u64be(pkey), "lifecycle record unreadable or of no stream", 0, 0);
            continue;
        }
        if (n == cap) {
            life_seen *more = realloc(seen, 2 * cap * sizeof *seen);
            if (!more) {
                break;
            }
            seen = more;
            cap *= 2;
        }
        seen[n].number = si.number;
        seen[n].revision = r.revision;
        store_life_encode(seen[n].value, &l);
        n++;
    }
    mdb_cursor_close(rcur);
    qsort(seen, n, sizeof *seen, life_seen_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && seen[i].number == seen[i - 1].number) {
            continue; /* an older change of the same stream */
        }
        uint8_t key[8];
        put_u64be(key, seen[i].number);
        MDB_val k = {8, key}, v;
        if (mdb_get(txn, s->life, &k, &v) != 0 || v.mv_size != STREAM_LIFE_BYTES ||
            memcmp(v.mv_data, seen[i].value, STREAM_LIFE_BYTES) != 0) {
            c->r->index_errors++;
            defect(c, 0, "stream_life differs from the last lifecycle record (stream no, record)",
                   seen[i].number, seen[i].revision);
        }
    }
    free(seen);
}

STORE_GUARDED_BEGIN
es_err store_check(store *s, store_check_report *report, store_check_log_fn log, void *ctx)
{
    memset(report, 0, sizeof *report);
    check_ctx c = {report, log, ctx, 0};
    MDB_txn *txn;
    es_err rv = store_read_txn(s, &txn);
    if (rv != ES_OK) {
        return rv;
    }
    READ_GUARD(txn);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->events, &cur);
    if (rc) {
        store_read_end(txn);
        return es_err_from_mdb(rc);
    }
    MDB_val k, v;
    uint64_t expect = 1, holes = 0, first_hole = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        report->events_checked++;
        uint64_t pos = k.mv_size == 8 ? get_u64be(k.mv_data) : 0;
        if (pos < expect) {
            report->position_gaps++;
            defect(&c, pos, "position out of order: expected, found", expect, pos);
        } else {
            holes += pos - expect; /* removed by the scavenger, or a gap: see below */
            if (pos != expect && !first_hole) {
                first_hole = expect;
            }
        }
        expect = pos + 1;
        const uint8_t *rec;
        size_t len;
        if (store_record_open(&v, &rec, &len) != ES_OK) {
            report->crc_errors++;
            defect(&c, pos, "record fails its checksum", 0, 0);
            continue;
        }
        es_record r;
        if (es_record_parse(rec, len, 0, &r) != ES_OK) {
            report->crc_errors++;
            defect(&c, pos, "record does not decode", 0, 0);
            continue;
        }
        if ((r.sealed.len != 0) != store_record_sealed(&v)) {
            report->crc_errors++;
            defect(&c, pos, "record's sealed flag does not match its fields", 0, 0);
            continue;
        }
        const uint8_t *sid = r.stream.p, *eid = r.id.p, *type = r.type.p;
        size_t sid_len = r.stream.len, type_len = r.type.len;
        uint64_t rpos = r.position, rrev = r.revision;
        if (rpos != pos) {
            report->index_errors++;
            defect(&c, pos, "record holds another position", rpos, pos);
        }
        store_stream_info si;
        MDB_val sk = {sid_len, (void *)sid}, sv;
        if (mdb_get(txn, s->streams, &sk, &sv) != 0 || store_stream_decode(&sv, &si) != ES_OK) {
            report->revision_errors++;
            defect(&c, pos, "record of a stream without a stream record", rrev, 0);
            continue;
        }
        uint8_t rkey[16];
        put_u64be(rkey, si.number);
        put_u64be(rkey + 8, rrev);
        MDB_val rk = {16, rkey}, rv2;
        if (mdb_get(txn, s->stream_revs, &rk, &rv2) != 0 || rv2.mv_size != 8 ||
            get_u64be(rv2.mv_data) != pos) {
            report->revision_errors++;
            defect(&c, pos, "stream index does not point at the record (revision, stream no)", rrev,
                   si.number);
        }
        MDB_val ik = {ES_EVENT_ID_BYTES, (void *)eid}, iv;
        if (mdb_get(txn, s->event_ids, &ik, &iv) != 0 || iv.mv_size != 24 ||
            get_u64be(iv.mv_data) != si.number || get_u64be((uint8_t *)iv.mv_data + 8) != rrev ||
            get_u64be((uint8_t *)iv.mv_data + 16) != pos) {
            report->index_errors++;
            defect(&c, pos, "event-id index mismatch", 0, 0);
        }
        if (!index_has(txn, s->categories, sid, es_category_len(sid, sid_len), pos)) {
            report->index_errors++;
            defect(&c, pos, "category index entry missing", 0, 0);
        }
        if (!index_has(txn, s->types, type, type_len, pos)) {
            report->index_errors++;
            defect(&c, pos, "event-type index entry missing", 0, 0);
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        store_read_end(txn);
        return es_err_from_mdb(rc);
    }

    /* Streams: revisions 0..count-1 present, positions increasing, and the
     * first position of the stream record right (the count and last
     * position are read from this index, so they agree by construction). */
    rc = mdb_cursor_open(txn, s->streams, &cur);
    if (rc) {
        store_read_end(txn);
        return es_err_from_mdb(rc);
    }
    uint64_t revs_total = 0, removed_total = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        report->streams_checked++;
        store_stream_info si;
        if (store_stream_decode(&v, &si) != ES_OK) {
            report->revision_errors++;
            defect(&c, 0, "undecodable stream record", 0, 0);
            continue;
        }
        MDB_cursor *rcur;
        if (mdb_cursor_open(txn, s->stream_revs, &rcur) != 0) {
            break;
        }
        uint8_t rkey[16];
        put_u64be(rkey, si.number);
        put_u64be(rkey + 8, 0);
        MDB_val rk = {16, rkey}, rval;
        uint64_t rev = 0, prev_pos = 0, first = 0, lo = 0;
        bool seen = false;
        int rrc;
        for (rrc = mdb_cursor_get(rcur, &rk, &rval, MDB_SET_RANGE);
             rrc == 0 && rk.mv_size == 16 && get_u64be(rk.mv_data) == si.number;
             rrc = mdb_cursor_get(rcur, &rk, &rval, MDB_NEXT)) {
            uint64_t r = get_u64be((uint8_t *)rk.mv_data + 8);
            uint64_t p = rval.mv_size == 8 ? get_u64be(rval.mv_data) : 0;
            if (!seen) {
                /* The scavenger removes a prefix of a stream's revisions. */
                seen = true;
                lo = rev = r;
            }
            if (r != rev || p <= prev_pos) {
                report->revision_errors++;
                defect(&c, p, "revisions not contiguous or positions not increasing", r, rev);
            }
            if (r == lo) {
                first = p;
            }
            prev_pos = p;
            rev = r + 1;
            revs_total++;
        }
        mdb_cursor_close(rcur);
        if (!seen || (lo == 0 && first != si.first_position)) {
            report->revision_errors++;
            defect(&c, first, "stream record disagrees with its index (first position, revisions)",
                   si.first_position, rev);
        }
        if (seen && lo > 0 && !removal_allowed(txn, s, si.number)) {
            report->revision_errors++;
            defect(&c, first,
                   "revisions missing from a stream that has no lifecycle (lowest, stream no)", lo,
                   si.number);
        }
        removed_total += lo;
    }
    mdb_cursor_close(cur);
    /* The counter must be above every stream number in use, or the next
     * new stream collides with an old one (appends refuse that as CORRUPT;
     * a writable open refuses the store). */
    uint64_t next_stream, highest;
    if (store_next_stream_get(txn, s, &next_stream, &highest) != ES_OK || next_stream <= highest) {
        report->index_errors++;
        defect(&c, 0, "next-stream counter not above the highest stream number (counter, highest)",
               next_stream, highest);
    }
    report->events_removed = holes;
    if (holes != removed_total) {
        /* Every hole in the log must be a scavenged prefix of some stream. */
        report->position_gaps++;
        defect(&c, first_hole,
               "positions missing that no stream's removal explains (missing, removed)", holes,
               removed_total);
    }
    uint64_t n = report->events_checked;
    if (revs_total != n || db_entries(txn, s->event_ids) != n ||
        (s->has_removed_ids && db_entries(txn, s->removed_ids) > holes) ||
        db_entries(txn, s->categories) != n || db_entries(txn, s->types) != n) {
        report->index_errors++;
        defect(&c, 0, "index sizes differ from the log (stream index, event ids)", revs_total,
               db_entries(txn, s->event_ids));
    }
    if (s->has_life) {
        life_check(&c, txn, s);
    }
    store_read_end(txn);
    if (report->crc_errors || report->position_gaps || report->revision_errors ||
        report->index_errors) {
        return ES_ERR_CORRUPT;
    }
    return ES_OK;
}
STORE_GUARDED_END

es_err store_backup(store *s, const char *dest_dir)
{
    struct stat st;
    bool made_dir = false;
    if (stat(dest_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        DIR *d = opendir(dest_dir);
        if (!d) {
            return ES_ERR_IO;
        }
        struct dirent *de;
        bool empty = true;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                empty = false;
            }
        }
        closedir(d);
        if (!empty) {
            return ES_ERR_INVALID_ARGUMENT;
        }
    } else if (mkdir(dest_dir, 0700) != 0) {
        return ES_ERR_IO;
    } else {
        made_dir = true;
    }
    char tmp[4096], final[4096];
    int n1 = snprintf(tmp, sizeof tmp, "%s/.data.mdb.XXXXXX", dest_dir);
    int n2 = snprintf(final, sizeof final, "%s/data.mdb", dest_dir);
    if (n1 <= 0 || (size_t)n1 >= sizeof tmp || n2 <= 0 || (size_t)n2 >= sizeof final) {
        if (made_dir) {
            rmdir(dest_dir);
        }
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv = ES_OK;
    int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600, whatever the umask */
    if (fd < 0) {
        rv = errno == ENOSPC || errno == EDQUOT ? ES_ERR_STORE_FULL : ES_ERR_IO;
        goto out_remove_dir;
    }
    int rc = fchmod(fd, 0600) != 0 ? errno : 0;
    if (rc == 0) {
        rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = errno;
    }
    if (rc == 0 && rename(tmp, final) != 0) {
        rc = errno;
    }
    if (rc != 0) {
        rv = rc == EIO ? ES_ERR_IO : es_err_from_mdb(rc);
        goto out_remove_tmp;
    }
    /* An encrypted store's key store goes beside it, copied after the data:
     * slots are only ever added or zeroed, so the copy holds every key the
     * data refers to that was not erased before the copy ended
     * (docs/erasure.md: which key store to restore with). */
    if (s->keys.fd >= 0) {
        char keys[4096];
        int n3 = snprintf(keys, sizeof keys, "%s/%s", dest_dir, STORE_KEYS_FILE);
        rv = n3 > 0 && (size_t)n3 < sizeof keys ? store_keys_copy(&s->keys, keys)
                                                : ES_ERR_INVALID_ARGUMENT;
        if (rv != ES_OK) {
            unlink(final);
            goto out_remove_dir;
        }
    }
    /* The renames are durable once the directory is. */
    int dfd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rv = ES_ERR_IO;
    }
    if (dfd >= 0) {
        close(dfd);
    }
    if (rv != ES_OK) {
        unlink(final);
        if (s->keys.fd >= 0) {
            char keys[4096];
            snprintf(keys, sizeof keys, "%s/%s", dest_dir, STORE_KEYS_FILE);
            unlink(keys);
        }
        goto out_remove_dir;
    }
    return ES_OK;

out_remove_tmp:
    unlink(tmp);
out_remove_dir:
    if (made_dir) {
        rmdir(dest_dir);
    }
    return rv;
}

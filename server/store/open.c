/*
 * open.c — the event log engine on LMDB: its key layout, opening and
 * closing a data directory, and the codecs of the layout's values.
 *
 * Design notes
 * ============
 *
 * One LMDB environment per data directory, named databases inside it. The
 * writer thread is the only one that opens write transactions; readers open
 * a short read-only transaction inside each call and close it before
 * returning (MDB_NOTLS, so any thread may read, and nothing is held across a
 * return to the event loop). No MDB_WRITEMAP: with it a full disk is a
 * SIGBUS instead of an error. `sync = false` sets MDB_NOSYNC, and every
 * acknowledgement says so (store_request.synced). A directory refused as
 * INCOMPATIBLE_STORE is left as it was found: a lock.mdb (or esd.lock)
 * that the failed open created is removed again.
 *
 * One owner per data directory. A writable open takes an exclusive OFD lock
 * (fcntl F_OFD_SETLK) on DIR/esd.lock and writes its pid there; a second
 * writable open -- another esd, or this process again -- finds the lock
 * held and is refused with ES_ERR_BUSY naming that pid. The kernel drops
 * the lock when the descriptor is closed or the process ends, kill -9
 * included, so a stale esd.lock never blocks a restart (its pid is then
 * only history). Read-only opens (esctl db stat/check/backup) take no lock
 * and may run beside esd; store_dir_owned lets them say so.
 *
 * A full file system. LMDB sizes lock.mdb with ftruncate and then writes
 * its reader table through a shared map: on a full file system that write
 * is a SIGBUS, not an error. So lock.mdb is created first and its blocks
 * reserved with posix_fallocate, at exactly the size LMDB gives it
 * (LOCK_FILE_BYTES: a bigger file would be read as more reader slots); no
 * room is ES_ERR_STORE_FULL with the reason. A unit test pins the size
 * against the LMDB in use. The data file is written with write(2) (no
 * MDB_WRITEMAP), so a full disk there is an error code already.
 *
 * LMDB's meta pages are checked before LMDB maps the file
 * (check_meta_pages): LMDB trusts the page size they carry, and a damaged
 * one is a SIGBUS on first access instead of an error.
 *
 * Names are durable too. An fdatasync of data.mdb makes its bytes durable
 * but, by POSIX, not its name: a new file's directory entry survives a
 * power loss only once the directory itself is fsynced (ext4's journal
 * happens to commit it with the file's sync; other file systems need not).
 * So a durable open (sync, not read-only) fsyncs the data directory after
 * LMDB created data.mdb and lock.mdb and the first commit is on disk, and
 * fsyncs the parent after creating the data directory; both happen before
 * the first request is served, so no acknowledgement precedes them. A
 * failure is an I/O error and the store is not opened. The removal of a
 * lock.mdb left by a refused open is not synced: a lock.mdb coming back
 * after a power loss is harmless (it holds no data and is rebuilt). The
 * crash simulator (tests/crashsim) finds the missing directory sync under
 * its POSIX rules.
 *
 * Key layout (all integers in keys are big-endian so that memcmp order is
 * numeric order; values are little-endian):
 *
 *   meta        "magic"       -> "esd-store" (9 bytes)
 *               "format"      -> u32      STORE_FORMAT_VERSION
 *               "store_id"    -> 16 bytes random
 *               "created_us"  -> u64
 *               "next_stream" -> u64      next interned stream number
               "scavenge_next" -> u64    stream number the scavenger resumes at
               "clock_hw"    -> u64      high-water mark of the store's clock
                                         (both optional; scavenge.c)
 *
 *   events      +-------------------+      +----+-----+--------+----------+======================+
 *               | position  u64 BE  |  ->  | ver|flags|reserved|crc32c LE | es.v1.RecordedEvent  |
 *               +-------------------+      | u8 | u8  |  u16   |   u32    | (packed, wire bytes) |
 *                                          +----+-----+--------+----------+======================+
 *               Positions start at 1 and are gapless: one writer, one
 *               position per event, assigned inside the write transaction.
 *               The CRC covers the packed record; reads verify it and never
 *               hand out a record that fails. The record is the wire
 *               encoding, so a read copies it straight into a reply;
 *               proto/record.h names its fields and is its one decoder.
 *
 *   streams     stream id (1..256 bytes) -> stream record, 32 bytes:
 *               number u64 | first_pos u64 | created_us u64 | flags u64
 *               (number = interned id used below; flags 0). Written once,
 *               when the stream is created: the count, last revision and
 *               last position are read from the stream's last stream_revs
 *               entry, the updated time from that event's record. So an
 *               append to an existing stream dirties one random leaf page
 *               (its stream_revs page), not two: with random streams the
 *               bytes written per commit fell by a third (format 2).
 *
 *   stream_revs +------------------+-----------------+      +----------------+
 *               | stream no u64 BE | revision u64 BE |  ->  | position u64 BE|
 *               +------------------+-----------------+      +----------------+
 *               Fixed 16-byte keys: no prefix collisions between streams,
 *               and revision 255 sorts before 256 (big-endian).
 *
 *   event_ids   event id (16) -> stream no u64 BE | revision u64 BE | position u64 BE
 *               Permanent idempotency: a retried append is recognised by
 *               its ids forever, not for a time window. A retry is a
 *               duplicate only when every id is stored, in this stream, at
 *               consecutive revisions, with the same content (type, data,
 *               metadata, content type, correlation and causation id);
 *               anything else is IDEMPOTENCY_CONFLICT and writes nothing.
 *
 *   categories  category bytes | 0x00 | position u64 BE -> (empty)
 *               (the category of "-x" is empty: its key starts with 0x00)
 *   types       event type bytes | 0x00 | position u64 BE -> (empty)
 *               Names never contain NUL (validate.h), so the 0x00 separator
 *               makes "acc" and "account" distinct ranges; filtered reads
 *               walk one range and never scan the log.
 *
 *   snapshots   stream id -> crc32c u32 | state_format u32 | revision u64 |
 *               saved_at_us u64 | data     (CRC over everything after it)
 *
 *   removed_ids digest bucket u8 -> digest u64 (MDB_DUPSORT | MDB_DUPFIXED)
 *               The event ids of events the scavenger removed, as a 64-bit
 *               digest (scavenge.c): idempotency after removal at 8 bytes an
 *               event instead of event_ids' 40. Created at a writable open.
 *
 *   stream_life stream no u64 BE -> 48 bytes (format 3):
 *               flags u64 (1 tombstoned, 2 metadata set) | metadata revision
 *               u64 | deleted_before u64 | truncate_before u64 | max_count
 *               u64 | max_age_s u64
 *               Only streams that were deleted or given metadata have one;
 *               reads serve what it allows (design notes in life.c).
 *
 * Formats: 3 added stream_life. A format-2 store opened for writing is
 * upgraded in place by store_open (the empty database created, "format"
 * set to 3, in the opening transaction); opened read-only it is read as
 * it is, with nothing deleted. An older esd refuses a format-3 store, so
 * it can never serve events that were deleted.
 *
 * The rest of the store (write path, read path, checks) is in the files
 * listed in internal.h, each with its own design notes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "crc32c.h"
#include "internal.h"

/* ------------------------------------------------------------ utilities -- */

/*
 * The outcome of a failed mdb_txn_commit. LMDB reports a short write -- the
 * file system filled up in the middle of writing the pages -- as EIO ("short
 * write, filesystem full?"), and a full disk usually shows up that way
 * rather than as ENOSPC. Tell it from other I/O errors by asking what room
 * is left: under 1 MiB free on the file system, or the file within 1 MiB of
 * the process's file-size limit, is a full store.
 */
#define FULL_MARGIN_BYTES (1u << 20)

es_err store_commit_err(const store *s, int rc)
{
    if (rc != EIO) {
        return es_err_from_mdb(rc);
    }
    int fd;
    struct stat st;
    struct statvfs vfs;
    struct rlimit rl;
    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0) {
        return ES_ERR_IO;
    }
    if (fstatvfs(fd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < FULL_MARGIN_BYTES) {
        return ES_ERR_STORE_FULL;
    }
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)st.st_size + FULL_MARGIN_BYTES > (uint64_t)rl.rlim_cur) {
        return ES_ERR_STORE_FULL;
    }
    return ES_ERR_IO;
}

void store_set_msg(char *msg, size_t msg_len, const char *fmt, ...)
{
    if (msg && msg_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msg_len, fmt, ap);
        va_end(ap);
    }
}

void store_stream_encode(uint8_t out[STREAM_RECORD_BYTES], const store_stream_info *si)
{
    put_u64le(out, si->number);
    put_u64le(out + 8, si->first_position);
    put_u64le(out + 16, si->created_us);
    put_u64le(out + 24, 0);
}

es_err store_stream_decode(const MDB_val *v, store_stream_info *si)
{
    if (v->mv_size != STREAM_RECORD_BYTES) {
        return ES_ERR_CORRUPT;
    }
    const uint8_t *p = v->mv_data;
    memset(si, 0, sizeof *si);
    si->number = get_u64le(p);
    si->first_position = get_u64le(p + 8);
    si->created_us = get_u64le(p + 16);
    return ES_OK;
}

es_err store_stream_tail(MDB_txn *txn, const store *s, store_stream_info *si)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->stream_revs, &cur);
    if (rc) {
        return es_err_from_mdb(rc);
    }
    uint8_t key[16];
    put_u64be(key, si->number);
    put_u64be(key + 8, UINT64_MAX); /* past every revision of the stream */
    MDB_val k = {16, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    } else if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    es_err rv = ES_OK;
    if (rc != MDB_SUCCESS) {
        rv = rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : es_err_from_mdb(rc);
    } else if (k.mv_size != 16 || v.mv_size != 8 || get_u64be(k.mv_data) != si->number) {
        rv = ES_ERR_CORRUPT; /* a stream record without index entries */
    } else {
        si->last_revision = get_u64be((const uint8_t *)k.mv_data + 8);
        si->event_count = si->last_revision + 1;
        si->last_position = get_u64be(v.mv_data);
    }
    mdb_cursor_close(cur);
    return rv;
}

es_err store_stream_lookup(MDB_txn *txn, store *s, const uint8_t *stream, size_t len,
                           store_stream_info *si)
{
    MDB_val k = {len, (void *)stream};
    MDB_val v;
    int rc = mdb_get(txn, s->streams, &k, &v);
    if (rc != MDB_SUCCESS) {
        return es_err_from_mdb(rc);
    }
    es_err rv = store_stream_decode(&v, si);
    if (rv == ES_OK) {
        rv = store_stream_tail(txn, s, si);
    }
    if (rv != ES_OK) {
        return rv;
    }
    /* The tail must be this stream's: a stream number damaged into another
     * stream's would otherwise serve and extend that stream's history. */
    uint8_t key[8];
    put_u64be(key, si->last_position);
    MDB_val pk = {8, key}, pv;
    rc = mdb_get(txn, s->events, &pk, &pv);
    if (rc != MDB_SUCCESS) {
        return rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : es_err_from_mdb(rc);
    }
    es_record r;
    rv = store_record_parse(&pv, &r);
    if (rv != ES_OK) {
        return rv;
    }
    if (!es_slice_eq(r.stream, stream, len) || r.revision != si->last_revision ||
        r.position != si->last_position) {
        return store_damage(s, "streams/stream_revs", si->last_position,
                            "the stream's last record is another stream's or revision");
    }
    si->updated_us = r.recorded_at_us;
    return ES_OK;
}

es_err store_damage(store *s, const char *index, uint64_t pos, const char *what)
{
    char line[256];
    snprintf(line, sizeof line,
             "store damaged: index %s, position %llu: %s; refused as CORRUPT (run esctl db check)",
             index, (unsigned long long)pos, what);
    return store_damage_line(s, line);
}

es_err store_damage_line(store *s, const char *line)
{
    atomic_fetch_add(&s->index_mismatches, 1);
    if (s->damage_log) {
        bool in_visitor = store_in_visitor;
        store_in_visitor = true; /* the caller's code: its faults are its own */
        s->damage_log(s->damage_log_ctx, line);
        store_in_visitor = in_visitor;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    return ES_ERR_CORRUPT;
}

uint64_t store_index_mismatches(store *s)
{
    return atomic_load(&s->index_mismatches);
}

es_err store_next_stream_get(MDB_txn *txn, const store *s, uint64_t *next, uint64_t *highest)
{
    *next = *highest = 0;
    MDB_val v;
    int rc = store_meta_get(txn, s->meta, "next_stream", &v);
    if (rc != MDB_SUCCESS) {
        return rc == MDB_NOTFOUND ? ES_ERR_CORRUPT : es_err_from_mdb(rc);
    }
    if (v.mv_size != 8) {
        return ES_ERR_CORRUPT;
    }
    *next = get_u64le(v.mv_data);
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, s->stream_revs, &cur);
    if (rc != MDB_SUCCESS) {
        return es_err_from_mdb(rc);
    }
    MDB_val k;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == MDB_SUCCESS) {
        if (k.mv_size != 16) {
            return ES_ERR_CORRUPT;
        }
        *highest = get_u64be(k.mv_data);
    } else if (rc != MDB_NOTFOUND) {
        return es_err_from_mdb(rc);
    }
    return ES_OK;
}

es_err store_record_open(const MDB_val *v, const uint8_t **payload, size_t *len)
{
    if (v->mv_size < RECORD_HEADER_BYTES) {
        return ES_ERR_CORRUPT;
    }
    const uint8_t *p = v->mv_data;
    if (p[0] != RECORD_VERSION || (p[1] & ~RECORD_FLAG_SEALED) || p[2] || p[3]) {
        return ES_ERR_CORRUPT; /* a header the store never writes */
    }
    size_t n = v->mv_size - RECORD_HEADER_BYTES;
    if (crc32c(0, p + RECORD_HEADER_BYTES, n) != get_u32le(p + 4)) {
        return ES_ERR_CORRUPT;
    }
    *payload = p + RECORD_HEADER_BYTES;
    *len = n;
    return ES_OK;
}

es_err store_record_parse(const MDB_val *v, es_record *r)
{
    const uint8_t *payload;
    size_t len;
    es_err rv = store_record_open(v, &payload, &len);
    if (rv != ES_OK) {
        return rv;
    }
    return es_record_parse(payload, len, 0, r) == ES_OK ? ES_OK : ES_ERR_CORRUPT;
}

size_t store_name_pos_key(uint8_t *key, const uint8_t *name, size_t len, uint64_t pos)
{
    memcpy(key, name, len);
    key[len] = 0;
    put_u64be(key + len + 1, pos);
    return len + 9;
}

/* ------------------------------------------------------------ open/close -- */

/* fsync a directory, so that the names created in it survive a power loss. */
static es_err sync_directory(const char *path, char *msg, size_t msg_len)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        store_set_msg(msg, msg_len, "cannot open the directory %s: %s", path, strerror(errno));
        return ES_ERR_IO;
    }
    if (fsync(fd) != 0) {
        store_set_msg(msg, msg_len, "cannot fsync the directory %s: %s", path, strerror(errno));
        close(fd);
        return ES_ERR_IO;
    }
    close(fd);
    return ES_OK;
}

/* The directory that holds path ("." when path names no directory). */
static void parent_of(const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') { /* "a/b/" is "a/b" */
        out[--n] = '\0';
    }
    char *slash = strrchr(out, '/');
    if (!slash) {
        snprintf(out, cap, "%s", ".");
    } else if (slash == out) {
        out[1] = '\0'; /* "/a": "/" */
    } else {
        *slash = '\0';
    }
}

/* ------------------------------------------------------------ ownership -- */

#define OWNER_FILE "esd.lock"

/* The pid written in an esd.lock (0: none or unreadable). */
static long owner_pid_read(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) {
        return 0;
    }
    buf[n] = 0;
    long pid = strtol(buf, NULL, 10);
    return pid > 0 ? pid : 0;
}

static bool path_join(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    return n > 0 && (size_t)n < len;
}

bool store_dir_owned(const char *dir, long *pid)
{
    *pid = 0;
    char p[4096];
    if (!path_join(p, sizeof p, dir, OWNER_FILE)) {
        return false;
    }
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return false;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    bool owned = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    if (owned) {
        *pid = owner_pid_read(fd);
    }
    close(fd);
    return owned;
}

/* Take the directory: lock esd.lock (created if missing) and write our pid. */
static es_err owner_take(const char *path, int *fd_out, bool *created, char *msg, size_t msg_len)
{
    *fd_out = -1;
    char p[4096];
    if (!path_join(p, sizeof p, path, OWNER_FILE)) {
        store_set_msg(msg, msg_len, "%s: %s", path, "path too long");
        return ES_ERR_INVALID_ARGUMENT;
    }
    *created = access(p, F_OK) != 0 && errno == ENOENT;
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        store_set_msg(msg, msg_len, "cannot open %s: %s", p, strerror(errno));
        return ES_ERR_IO;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno;
        long pid = owner_pid_read(fd);
        close(fd);
        if (e == EAGAIN || e == EACCES) {
            store_set_msg(msg, msg_len,
                          "%s is in use by another esd (pid %ld holds %s); one esd per data "
                          "directory",
                          path, pid, OWNER_FILE);
            return ES_ERR_BUSY;
        }
        store_set_msg(msg, msg_len, "cannot lock %s: %s", p, strerror(e));
        return ES_ERR_IO;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    /* Over the old pid, then cut: an existing file needs no new block. */
    if (pwrite(fd, buf, (size_t)n, 0) != n || ftruncate(fd, n) != 0) {
        int e = errno;
        close(fd);
        store_set_msg(msg, msg_len, "cannot write %s: %s", p, strerror(e));
        return e == ENOSPC || e == EDQUOT ? ES_ERR_STORE_FULL : ES_ERR_IO;
    }
    *fd_out = fd;
    return ES_OK;
}

/*
 * LMDB 0.9's lock file: a 192-byte header and one 64-byte slot per reader
 * after the first (on Linux, with its POSIX mutexes). test_store_open pins
 * it against the library in use.
 */
#define LOCK_FILE_BYTES(readers) (192u + ((readers)-1u) * 64u)

/* Reserve lock.mdb's blocks before LMDB maps it (see the design notes). */
static es_err lock_file_reserve(const char *path, unsigned readers, char *msg, size_t msg_len)
{
    char p[4096];
    if (!path_join(p, sizeof p, path, "lock.mdb")) {
        return ES_OK; /* LMDB reports it */
    }
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == ENOSPC || errno == EDQUOT) {
            store_set_msg(msg, msg_len, "cannot create %s: %s", p, strerror(errno));
            return ES_ERR_STORE_FULL;
        }
        return ES_OK; /* a read-only medium, no permission: LMDB decides */
    }
    struct stat st;
    int rc = fstat(fd, &st) != 0 ? errno : 0;
    off_t want = (off_t)LOCK_FILE_BYTES(readers);
    if (rc == 0) {
        /* An existing file keeps its size (LMDB reads its slot count from
         * it); only its holes are filled. */
        rc = posix_fallocate(fd, 0, st.st_size > 0 ? st.st_size : want);
    }
    close(fd);
    if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG) {
        store_set_msg(msg, msg_len, "no room for %s (%s): free space on its file system", p,
                      strerror(rc));
        return ES_ERR_STORE_FULL;
    }
    return ES_OK; /* other codes (EOPNOTSUPP...): nothing to reserve */
}

static es_err check_directory(const char *path, bool read_only, bool sync, char *msg,
                              size_t msg_len)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT) {
            store_set_msg(msg, msg_len, "cannot stat %s: %s", path, strerror(errno));
            return ES_ERR_IO;
        }
        if (read_only) {
            store_set_msg(msg, msg_len, "%s: %s", path, "no such directory");
            return ES_ERR_NOT_FOUND;
        }
        if (mkdir(path, 0700) != 0) {
            store_set_msg(msg, msg_len, "cannot create %s: %s", path, strerror(errno));
            return ES_ERR_IO;
        }
        char parent[4096];
        parent_of(path, parent, sizeof parent);
        return sync ? sync_directory(parent, msg, msg_len) : ES_OK;
    }
    if (!S_ISDIR(st.st_mode)) {
        store_set_msg(msg, msg_len, "%s: %s", path, "not a directory");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    DIR *d = opendir(path);
    if (!d) {
        store_set_msg(msg, msg_len, "cannot open %s: %s", path, strerror(errno));
        return ES_ERR_IO;
    }
    bool has_data = false;
    bool foreign = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(de->d_name, "lock.mdb") || !strcmp(de->d_name, OWNER_FILE) ||
            !strcmp(de->d_name, "journal.new")) {
            continue;
        }
        if (!strcmp(de->d_name, "data.mdb") || !strcmp(de->d_name, "journal")) {
            has_data = true; /* a journal without data.mdb is refused by journal_prepare */
        } else {
            foreign = true;
        }
    }
    closedir(d);
    if (!has_data && foreign) {
        store_set_msg(msg, msg_len, "%s: %s", path,
                      "directory is not empty and holds no esd store; refusing to use it");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (!has_data && read_only) {
        store_set_msg(msg, msg_len, "%s: %s", path, "no esd store here");
        return ES_ERR_NOT_FOUND;
    }
    if (has_data) {
        /* LMDB would take an empty data.mdb for a new environment: a store
         * truncated to nothing would come back empty, with a new store id,
         * and hand out positions from 1 again. */
        char data_path[4096];
        int n = snprintf(data_path, sizeof data_path, "%s/data.mdb", path);
        if (n > 0 && (size_t)n < sizeof data_path && stat(data_path, &st) == 0 && st.st_size == 0) {
            store_set_msg(msg, msg_len, "%s: %s", path,
                          "data.mdb is empty (truncated?); refusing to create a new store over it");
            return ES_ERR_INCOMPATIBLE_STORE;
        }
    }
    return ES_OK;
}

int store_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    return mdb_get(txn, dbi, &k, v);
}

int store_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t len)
{
    MDB_val k = {strlen(key), (void *)key};
    MDB_val v = {len, (void *)data};
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int meta_init(store *s, MDB_txn *txn)
{
    uint32_t format = STORE_FORMAT_VERSION;
    uint8_t fbuf[4], cbuf[8], nbuf[8];
    put_u32le(fbuf, format);
    s->created_us = store_now_us();
    put_u64le(cbuf, s->created_us);
    put_u64le(nbuf, 1);
    if (getrandom(s->id, sizeof s->id, 0) != (ssize_t)sizeof s->id) {
        return EIO;
    }
    s->format = format;
    int rc = store_meta_put(txn, s->meta, "magic", STORE_MAGIC, STORE_MAGIC_LEN);
    if (!rc) {
        rc = store_meta_put(txn, s->meta, "format", fbuf, 4);
    }
    if (!rc) {
        rc = store_meta_put(txn, s->meta, "store_id", s->id, STORE_ID_BYTES);
    }
    if (!rc) {
        rc = store_meta_put(txn, s->meta, "created_us", cbuf, 8);
    }
    if (!rc) {
        rc = store_meta_put(txn, s->meta, "next_stream", nbuf, 8);
    }
    return rc;
}

static es_err meta_load(store *s, MDB_txn *txn, char *msg, size_t msg_len, const char *path)
{
    MDB_val v;
    if (store_meta_get(txn, s->meta, "magic", &v) != 0 || v.mv_size != STORE_MAGIC_LEN ||
        memcmp(v.mv_data, STORE_MAGIC, STORE_MAGIC_LEN) != 0) {
        store_set_msg(msg, msg_len, "%s: %s", path, "not an esd store (no esd meta record)");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (store_meta_get(txn, s->meta, "format", &v) != 0 || v.mv_size != 4) {
        store_set_msg(msg, msg_len, "%s: %s", path, "esd meta record without a format version");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    s->format = get_u32le(v.mv_data);
    if (s->format != STORE_FORMAT_VERSION && s->format != STORE_FORMAT_UPGRADABLE) {
        store_set_msg(msg, msg_len, "%s: store format %u, this esd reads format %u", path,
                      s->format, STORE_FORMAT_VERSION);
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (store_meta_get(txn, s->meta, "store_id", &v) != 0 || v.mv_size != STORE_ID_BYTES) {
        store_set_msg(msg, msg_len, "%s: %s", path, "esd meta record without a store id");
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    memcpy(s->id, v.mv_data, STORE_ID_BYTES);
    if (store_meta_get(txn, s->meta, "created_us", &v) == 0 && v.mv_size == 8) {
        s->created_us = get_u64le(v.mv_data);
    }
    if (store_meta_get(txn, s->meta, "clock_hw", &v) == 0 && v.mv_size == 8) {
        store_clock_floor(get_u64le(v.mv_data)); /* the clock never runs back (scavenge.c) */
    }
    return ES_OK;
}

static int open_dbis(store *s, MDB_txn *txn, unsigned flags)
{
    struct {
        const char *name;
        MDB_dbi *dbi;
    } t[] = {
        {"events", &s->events},           {"streams", &s->streams},
        {"stream_revs", &s->stream_revs}, {"event_ids", &s->event_ids},
        {"categories", &s->categories},   {"types", &s->types},
        {"snapshots", &s->snapshots},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int rc = mdb_dbi_open(txn, t[i].name, flags, t[i].dbi);
        if (rc) {
            return rc;
        }
    }
    /* removed_ids: the digests of the ids of scavenged events (scavenge.c),
     * created at the first writable open; missing in a store no esd with a
     * scavenger has written, which has removed nothing. */
    int drc = mdb_dbi_open(txn, "removed_ids", flags | MDB_DUPSORT | MDB_DUPFIXED, &s->removed_ids);
    s->has_removed_ids = drc == 0;
    if (drc && drc != MDB_NOTFOUND) {
        return drc;
    }
    int rc = store_groups_open(s, txn, flags);
    if (rc) {
        return rc;
    }
    /* stream_life: missing only in a format-2 store opened read-only. */
    rc = mdb_dbi_open(txn, "stream_life", flags, &s->life);
    s->has_life = rc == 0;
    if (rc == MDB_NOTFOUND && s->format == STORE_FORMAT_UPGRADABLE && !(flags & MDB_CREATE)) {
        return 0;
    }
    if (rc == 0 && s->format == STORE_FORMAT_UPGRADABLE && (flags & MDB_CREATE)) {
        uint8_t fbuf[4];
        put_u32le(fbuf, STORE_FORMAT_VERSION);
        rc = store_meta_put(txn, s->meta, "format", fbuf, 4);
        if (rc == 0) {
            s->format = STORE_FORMAT_VERSION; /* upgraded: committed with the open */
        }
    }
    return rc;
}

uint64_t store_last_position(MDB_txn *txn, MDB_dbi events)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t head = 0;
    if (mdb_cursor_open(txn, events, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
            head = get_u64be(k.mv_data);
        }
        mdb_cursor_close(cur);
    }
    return head;
}

/*
 * A data file shorter than the pages its meta page says are in use (a
 * truncated copy, a disk that lost the tail) would be a SIGBUS at the first
 * read of a missing page: refuse it before any read. The meta page is read
 * first, the file size after it, so a writer growing the file meanwhile
 * cannot make a sound file look short.
 */
/*
 * LMDB's two meta pages, checked before LMDB maps the file. LMDB takes its
 * page size from the meta page it picks (the one with the higher txnid) and
 * finds the second meta page at the first one's page size, trusting both:
 * one flipped bit in a page-size field and its first access outside the
 * file is a SIGBUS, before any call returns an error. So each meta page
 * must carry the meta flag, LMDB's magic and data version, and a page size
 * that is a power of two between 512 and 64 KiB, the same in both; and the
 * file must hold both pages. A missing or empty data.mdb is a new store.
 *
 * Their transaction ids too. LMDB writes commit t's meta to page t % 2, so
 * the two pages hold consecutive ids, the even one in page 0 (both 0 before
 * the first commit; a compacting copy writes 0 and 1; the journal's
 * recovery writes one checkpoint's meta into both, so equal ids are
 * accepted when the two records are identical apart from the page number). A flipped bit in the
 * older page's id makes LMDB pick it as the newer: the store opens one
 * commit back without a word, and the next append reuses the positions of
 * events that were acknowledged (the damage suite found it). Anything else
 * is refused. (A store written with --sync none that lost power may have
 * lost meta writes out of order; it is refused too, and is restored from a
 * backup or a follower, as its docs say.)
 *
 * Layout (LMDB 0.9, 64-bit): a 16-byte page header (flags u16 at 10), then
 * MDB_meta: magic u32 at 16, version u32 at 20, the free database's md_pad
 * (the page size) u32 at 40, mm_txnid u64 at 144.
 */
#define LMDB_META_MAGIC   0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define LMDB_P_META       0x08u

static es_err meta_page_check(const uint8_t *p, unsigned which, uint32_t *psize, char *why,
                              size_t why_len)
{
    uint16_t flags = (uint16_t)(p[10] | p[11] << 8);
    uint32_t magic = get_u32le(p + 16), version = get_u32le(p + 20);
    *psize = get_u32le(p + 40);
    if (!(flags & LMDB_P_META) || magic != LMDB_META_MAGIC) {
        snprintf(why, why_len, "meta page %u is not an LMDB meta page (flags 0x%x, magic 0x%08x)",
                 which, flags, magic);
        /* page 0 not LMDB's: a foreign file rather than a damaged store */
        return which == 0 ? ES_ERR_INCOMPATIBLE_STORE : ES_ERR_CORRUPT;
    }
    if (version != LMDB_DATA_VERSION) {
        snprintf(why, why_len, "meta page %u has LMDB data version %u (this esd reads %u)", which,
                 version, LMDB_DATA_VERSION);
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (*psize < 512 || *psize > 65536 || (*psize & (*psize - 1)) != 0) {
        snprintf(why, why_len, "meta page %u has an impossible page size %u", which, *psize);
        return ES_ERR_CORRUPT;
    }
    return ES_OK;
}

static es_err check_meta_pages(const char *path, char *msg, size_t msg_len)
{
    char file[4096];
    if (!path_join(file, sizeof file, path, "data.mdb")) {
        store_set_msg(msg, msg_len, "%s: %s", path, "path too long");
        return ES_ERR_INVALID_ARGUMENT;
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ES_OK; /* a new store, or an error LMDB reports itself */
    }
    struct stat st;
    uint8_t page[160], page0[160];
    uint32_t ps0 = 0, ps1 = 0;
    uint64_t t0 = 0, t1 = 0;
    char why[160] = "";
    es_err rv = ES_OK;
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        goto out_close;
    }
    if (st.st_size < (off_t)sizeof page ||
        pread(fd, page, sizeof page, 0) != (ssize_t)sizeof page) {
        snprintf(why, sizeof why, "the file is %lld bytes, too short for a meta page",
                 (long long)st.st_size);
        rv = ES_ERR_INCOMPATIBLE_STORE; /* not an LMDB file, as LMDB says too */
        goto out_close;
    }
    rv = meta_page_check(page, 0, &ps0, why, sizeof why);
    t0 = get_u64le(page + 144);
    memcpy(page0, page, sizeof page0);
    if (rv != ES_OK) {
        goto out_close;
    }
    if (st.st_size < 2 * (off_t)ps0 || pread(fd, page, sizeof page, ps0) != (ssize_t)sizeof page) {
        snprintf(why, sizeof why, "the file is %lld bytes, too short for two %u-byte meta pages",
                 (long long)st.st_size, ps0);
        rv = ES_ERR_CORRUPT;
        goto out_close;
    }
    rv = meta_page_check(page, 1, &ps1, why, sizeof why);
    if (rv == ES_OK && ps1 != ps0) {
        snprintf(why, sizeof why, "the meta pages disagree on the page size (%u and %u)", ps0, ps1);
        rv = ES_ERR_CORRUPT;
    }
    t1 = get_u64le(page + 144);
    /* Equal ids: both pages written from one copy (the journal's recovery
     * restores a checkpoint's meta into both), never a flipped bit alone. */
    bool same_copy = t0 == t1 && memcmp(page0 + 8, page + 8, 152 - 8) == 0;
    if (rv == ES_OK && !(t0 == 0 && t1 == 0) && !same_copy &&
        (t0 % 2 != 0 || t1 % 2 != 1 || (t0 > t1 ? t0 - t1 : t1 - t0) != 1)) {
        snprintf(why, sizeof why,
                 "the meta pages' transaction ids %llu and %llu are not consecutive (one of them "
                 "is damaged: LMDB would open an older state and write over the newer one)",
                 (unsigned long long)t0, (unsigned long long)t1);
        rv = ES_ERR_CORRUPT;
    }
out_close:
    close(fd);
    if (rv != ES_OK) {
        store_set_msg(msg, msg_len, "%s: %s; refusing to open it: %s", file, why,
                      rv == ES_ERR_INCOMPATIBLE_STORE
                          ? "not an LMDB data file this esd can read"
                          : "the data file is damaged, restore it from a backup");
    }
    return rv;
}

static es_err check_file_size(MDB_env *env, const char *path, char *msg, size_t msg_len)
{
    MDB_envinfo info;
    MDB_stat est;
    int fd;
    struct stat st;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &est) != 0 ||
        mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &st) != 0) {
        store_set_msg(msg, msg_len, "%s: %s", path, "cannot read the size of the data file");
        return ES_ERR_IO;
    }
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
    if ((uint64_t)st.st_size < need) {
        store_set_msg(msg, msg_len, "%s: data file is %llu bytes, its pages need %llu: truncated",
                      path, (unsigned long long)st.st_size, (unsigned long long)need);
        return ES_ERR_CORRUPT;
    }
    return ES_OK;
}

es_err store_open(const store_options *opts, store **out, char *msg, size_t msg_len)
{
    STORE_FATAL_SCOPE;
    *out = NULL;
    if (!opts || !opts->path) {
        store_set_msg(msg, msg_len, "%s%s", "no data directory given", "");
        return ES_ERR_INVALID_ARGUMENT;
    }
    store_guard_install();
    es_err rv = check_directory(opts->path, opts->read_only, opts->sync, msg, msg_len);
    if (rv != ES_OK) {
        return rv;
    }
    store *s = calloc(1, sizeof *s);
    if (!s) {
        return ES_ERR_NO_MEMORY;
    }
    s->sync = opts->sync;
    atomic_store(&s->scavenge_horizon, UINT64_MAX); /* no limit until one is set */
    s->read_only = opts->read_only;
    s->follower = opts->follower;
    s->damage_log = opts->damage_log;
    s->damage_log_ctx = opts->damage_log_ctx;
    s->owner_fd = -1;
    s->keys.fd = -1;
    bool owner_created = false;
    bool created_keys = false;
    if (!opts->read_only) {
        rv = owner_take(opts->path, &s->owner_fd, &owner_created, msg, msg_len);
        if (rv != ES_OK) {
            free(s);
            return rv;
        }
    }
    s->max_events_per_append = opts->max_events_per_append ? opts->max_events_per_append
                                                           : STORE_DEFAULT_MAX_EVENTS_PER_APPEND;
    s->max_event_bytes =
        opts->max_event_bytes ? opts->max_event_bytes : STORE_DEFAULT_MAX_EVENT_BYTES;

    /* LMDB creates lock.mdb on open, also when it then refuses the data
     * file: remember whether it was there, so that a refused directory is
     * left as it was found. */
    char lock_path[4096];
    int lp_len = snprintf(lock_path, sizeof lock_path, "%s/lock.mdb", opts->path);
    bool lock_created = lp_len > 0 && (size_t)lp_len < sizeof lock_path &&
                        access(lock_path, F_OK) != 0 && errno == ENOENT;
    bool use_journal = opts->sync && !opts->read_only && !opts->follower &&
                       opts->sync_method == STORE_SYNC_JOURNAL;
    if (use_journal) {
        rv = journal_prepare(opts->path, opts->journal_bytes, &s->jr, msg, msg_len);
        if (rv != ES_OK) {
            goto out_release_owner;
        }
    }
    rv = check_meta_pages(opts->path, msg, msg_len);
    if (rv != ES_OK) {
        goto out_release_owner;
    }
    rv = lock_file_reserve(opts->path, opts->max_readers ? opts->max_readers : 126, msg, msg_len);
    if (rv != ES_OK) {
        goto out_release_owner;
    }
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (opts->read_only) {
        flags |= MDB_RDONLY;
    } else if (!opts->sync) {
        flags |= MDB_NOSYNC;
    } else if (opts->sync_method == STORE_SYNC_NOMETASYNC && !opts->follower) {
        flags |= MDB_NOMETASYNC;
        s->deferred = true;
    }
    /* The default map is large address space, not disk. Where the process
     * may not reserve that much (an address-space rlimit, ThreadSanitizer's
     * memory layout: ENOMEM; valgrind: EINVAL), the default halves down to 1 GiB; the size in use
     * is in store_stats. An explicit map_size is used as given or fails. */
    uint64_t map_size = opts->map_size;
    bool default_size = map_size == 0;
    if (default_size) {
        map_size = sizeof(size_t) >= 8 ? STORE_DEFAULT_MAP_SIZE_64 : STORE_DEFAULT_MAP_SIZE_32;
    }
    int rc;
    for (;;) {
        rc = mdb_env_create(&s->env);
        if (rc) {
            rv = es_err_from_mdb(rc);
            goto out_release_owner;
        }
        mdb_env_set_mapsize(s->env, (size_t)map_size);
        mdb_env_set_maxdbs(s->env, 32);
        mdb_env_set_assert(s->env, store_on_lmdb_assert);
        if (opts->max_readers) {
            mdb_env_set_maxreaders(s->env, opts->max_readers);
        }
        rc = mdb_env_open(s->env, opts->path, flags, 0600);
        if ((rc == ENOMEM || rc == EINVAL) && default_size && map_size > (1ull << 30)) {
            mdb_env_close(s->env);
            s->env = NULL;
            map_size /= 2;
            continue;
        }
        break;
    }
    if (rc) {
        rv = es_err_from_mdb(rc);
        store_set_msg(msg, msg_len, "cannot open the store in %s: %s", opts->path,
                      mdb_strerror(rc));
        goto out_close_env;
    }
    rv = check_file_size(s->env, opts->path, msg, msg_len);
    if (rv != ES_OK) {
        goto out_close_env;
    }
    if (s->jr) {
        rv = journal_pin(s, msg, msg_len); /* before any write transaction */
        if (rv != ES_OK) {
            goto out_close_env;
        }
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead);

    MDB_txn *txn;
    rc = mdb_txn_begin(s->env, NULL, opts->read_only ? MDB_RDONLY : 0, &txn);
    if (rc) {
        rv = es_err_from_mdb(rc);
        store_set_msg(msg, msg_len, "cannot read the store in %s: %s", opts->path,
                      mdb_strerror(rc));
        goto out_close_env;
    }
    rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
    if (rc == MDB_NOTFOUND && !opts->read_only) {
        /* Only a brand-new, empty environment may be initialised. */
        MDB_stat mst;
        MDB_dbi main_dbi;
        if (mdb_dbi_open(txn, NULL, 0, &main_dbi) != 0 || mdb_stat(txn, main_dbi, &mst) != 0 ||
            mst.ms_entries != 0) {
            store_set_msg(msg, msg_len, "%s: %s", opts->path,
                          "an LMDB environment that is not an esd store; refusing to use it");
            rv = ES_ERR_INCOMPATIBLE_STORE;
            goto out_abort_txn;
        }
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
        if (!rc) {
            rc = meta_init(s, txn);
        }
        if (!rc) {
            rc = open_dbis(s, txn, MDB_CREATE);
        }
        if (rc) {
            rv = es_err_from_mdb(rc);
            store_set_msg(msg, msg_len, "cannot initialise the store in %s: %s", opts->path,
                          mdb_strerror(rc));
            goto out_abort_txn;
        }
        rv = store_crypt_open(s, txn, opts->path, true, !opts->no_encrypt, msg, msg_len);
        if (rv != ES_OK) {
            goto out_abort_txn;
        }
        created_keys = s->keys.fd >= 0;
    } else if (rc) {
        rv = rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE ? ES_ERR_INCOMPATIBLE_STORE
                                                          : es_err_from_mdb(rc);
        store_set_msg(msg, msg_len, "%s: %s", opts->path, "not an esd store (no meta database)");
        goto out_abort_txn;
    } else {
        rv = meta_load(s, txn, msg, msg_len, opts->path);
        if (rv != ES_OK) {
            goto out_abort_txn;
        }
        rc = open_dbis(s, txn, opts->read_only ? 0 : MDB_CREATE);
        if (rc) {
            rv = rc == MDB_NOTFOUND ? ES_ERR_INCOMPATIBLE_STORE : es_err_from_mdb(rc);
            store_set_msg(msg, msg_len, "%s: %s", opts->path, "esd store with missing databases");
            goto out_abort_txn;
        }
        /* A writer hands out stream numbers from the counter: one at or
         * below a number in use would put a new stream's events under an
         * old stream (the inserts would collide and fail, but every new
         * stream would). Read-only opens leave the verdict to store_check. */
        uint64_t next, highest;
        rv = store_next_stream_get(txn, s, &next, &highest);
        if (rv == ES_OK && !opts->read_only && next <= highest) {
            rv = ES_ERR_CORRUPT;
        }
        if (rv != ES_OK && !opts->read_only) {
            store_set_msg(msg, msg_len,
                          "%s: the next-stream counter (%llu) is not above the highest stream "
                          "number in use (%llu): the store is damaged; run esctl db check",
                          opts->path, (unsigned long long)next, (unsigned long long)highest);
            goto out_abort_txn;
        }
        rv = store_crypt_open(s, txn, opts->path, false, false, msg, msg_len);
        if (rv != ES_OK) {
            goto out_abort_txn;
        }
    }
    atomic_store(&s->head, store_last_position(txn, s->events));
    rc = mdb_txn_commit(txn);
    if (rc) {
        rv = es_err_from_mdb(rc);
        store_set_msg(msg, msg_len, "cannot open the store in %s: %s", opts->path,
                      mdb_strerror(rc));
        goto out_close_keys;
    }
    /* Erasures a crash interrupted are finished before anything is served. */
    rv = store_crypt_recover(s);
    if (rv != ES_OK) {
        store_set_msg(msg, msg_len, "%s: cannot finish an interrupted erasure: %s", opts->path,
                      es_strerror(rv));
        goto out_close_keys;
    }
    if (opts->sync && !opts->read_only) {
        rv = sync_directory(opts->path, msg, msg_len);
        if (rv != ES_OK) {
            goto out_close_keys;
        }
    }
    if (s->jr) {
        rv = journal_start(s, msg, msg_len);
        if (rv != ES_OK) {
            goto out_close_env;
        }
    }
    *out = s;
    return ES_OK;

out_abort_txn:
    mdb_txn_abort(txn);
out_close_keys:
    store_keys_close(&s->keys);
    if (created_keys) {
        char kp[4096];
        if (path_join(kp, sizeof kp, opts->path, STORE_KEYS_FILE)) {
            unlink(kp); /* the opening transaction that referred to it is gone */
        }
    }
out_close_env:
    journal_close(s); /* its pins, before the environment */
    mdb_env_close(s->env);
out_release_owner:
    journal_free(s->jr); /* prepared, never started (NULL after journal_close) */
    if (rv == ES_ERR_INCOMPATIBLE_STORE && lock_created) {
        unlink(lock_path); /* ours: nothing else can have used a foreign dir */
    }
    if (s->owner_fd >= 0) {
        char p[4096];
        if (rv == ES_ERR_INCOMPATIBLE_STORE && owner_created &&
            path_join(p, sizeof p, opts->path, OWNER_FILE)) {
            unlink(p);
        }
        close(s->owner_fd);
    }
    free(s);
    return rv;
}

void store_close(store *s)
{
    if (!s) {
        return;
    }
    journal_close(s); /* a last checkpoint: a clean stop leaves nothing to replay */
    mdb_env_close(s->env);
    store_keys_close(&s->keys);
    if (s->owner_fd >= 0) {
        close(s->owner_fd); /* the lock goes with it */
    }
    free(s);
}

es_err store_commit_durable(store *s, MDB_txn *txn)
{
    if (s->jr && journal_broken(s)) {
        mdb_txn_abort(txn); /* nothing may commit until a restart recovers */
        return ES_ERR_IO;
    }
    int rc = mdb_txn_commit(txn); /* frees the txn, also on failure */
    if (rc) {
        return store_commit_err(s, rc);
    }
    if (s->deferred) {
        return store_flush(s);
    }
    return s->jr ? journal_checkpoint_sync(s) : ES_OK;
}

bool store_sync_deferred(const store *s)
{
    return s->deferred;
}

es_err store_flush(store *s)
{
    int rc = mdb_env_sync(s->env, 1);
    return rc ? es_err_from_mdb(rc) : ES_OK;
}

void store_journal_stats_get(store *s, store_journal_stats *st)
{
    journal_stats(s, st);
}

uint64_t store_head(store *s)
{
    return atomic_load(&s->head);
}

const uint8_t *store_id(const store *s)
{
    return s->id;
}

int store_reader_check(store *s)
{
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    return dead;
}

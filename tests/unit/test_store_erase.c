/*
 * test_store_erase — encryption at rest and erasure by crypto-shredding in
 * the store: what reaches the disk, what reads, appends and snapshots see
 * after an erasure of a stream or of a data subject, backups taken before
 * and after, a kill -9 on either side of the erasure's commit, bad input.
 *
 * Design notes: "gone" is shown the way an attacker with the files would
 * look: a byte search of every file of a directory for a marker string
 * carried in the events' data and metadata. In an encrypted store the
 * marker is never on disk, so the erasure itself is shown by restoring
 * copies of the data taken before it: with the key store as it is after
 * the erasure they serve ERASED, with a key store copied before it they
 * still read (which is what docs/erasure.md tells operators about key
 * store copies). The kill -9 cases run the erasure in a child process that
 * SIGKILLs itself at the chosen point (through -Wl,--wrap of
 * mdb_txn_commit and store_keys_destroy); the parent then opens the store
 * as a restarted esd would.
 */
#include "store_fixture.h"

#include "record.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crc32c.h"

/* ---------------------------------------------------------- fault hooks -- */

/* 0: off; 1: SIGKILL in the next mdb_txn_commit (before it); 2: SIGKILL in
 * the next key destruction (after the erasure's commit). */
static int kill_point;

int __real_mdb_txn_commit(MDB_txn *txn);
int __wrap_mdb_txn_commit(MDB_txn *txn);
int __wrap_mdb_txn_commit(MDB_txn *txn)
{
    if (kill_point == 1) {
        raise(SIGKILL);
    }
    return __real_mdb_txn_commit(txn);
}

struct store_keys;
es_err __real_store_keys_destroy(struct store_keys *k, uint64_t slot);
es_err __wrap_store_keys_destroy(struct store_keys *k, uint64_t slot);
es_err __wrap_store_keys_destroy(struct store_keys *k, uint64_t slot)
{
    if (kill_point == 2) {
        raise(SIGKILL);
    }
    return __real_store_keys_destroy(k, slot);
}

/* ------------------------------------------------------------- helpers -- */

#define MARK      "MARKER-7f3a9c-personal"
#define META_MARK "MARKER-7f3a9c-metadata"
#define CTRL_MARK "CONTROL-51be02-keep"

/* The key store's slot size and batch (server/store/keys.c). */
#define STORE_KEY_SLOT_TEST 64u

/* Occurrences of s in every regular file under dir (recursively). */
static size_t count_in_dir(const char *dir, const char *s)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0, sl = strlen(s);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (de->d_type == DT_DIR) {
            n += count_in_dir(p, s);
            continue;
        }
        size_t len;
        uint8_t *b = read_file(p, &len);
        for (size_t i = 0; b && i + sl <= len; i++) {
            n += memcmp(b + i, s, sl) == 0;
        }
        free(b);
    }
    closedir(d);
    return n;
}

/* Append n events whose data and metadata carry the markers, to s. */
static es_err put_to(fx *f, store *s, const char *stream, const char *subject, const char *data,
                     const char *meta, size_t n)
{
    store_event_in ev[4];
    uint8_t ids[4][16];
    assert_true(n <= 4);
    memset(ev, 0, sizeof ev);
    for (size_t i = 0; i < n; i++) {
        set_id(ids[i], f->next_id++);
        ev[i].id = ids[i];
        ev[i].type = U8("Registered");
        ev[i].type_len = 10;
        ev[i].data = U8(data);
        ev[i].data_len = strlen(data);
        ev[i].metadata = U8(meta);
        ev[i].metadata_len = strlen(meta);
    }
    store_append_in a = {.stream = U8(stream),
                         .stream_len = strlen(stream),
                         .expect = STORE_EXPECT_ANY,
                         .events = ev,
                         .n_events = n};
    if (subject) {
        a.subject = U8(subject);
        a.subject_len = strlen(subject);
    }
    store_append_result res;
    return append_one(s, &a, &res);
}

static es_err put(fx *f, const char *stream, const char *subject, const char *data,
                  const char *meta, size_t n)
{
    return put_to(f, f->s, stream, subject, data, meta, n);
}

static es_err erase(store *s, store_erase_kind kind, const char *name, store_expect ex,
                    uint64_t rev, store_erase_op *op)
{
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->name = U8(name);
    op->name_len = strlen(name);
    op->expect = ex;
    op->revision = rev;
    return store_erase(s, op);
}

static int nop_visit(void *ctx, const store_record *rec)
{
    (void)ctx;
    (void)rec;
    return 0;
}

static es_err read_rv(store *s, const char *stream)
{
    store_page pg;
    return store_read_stream(s, U8(stream), strlen(stream), 0, false, 0, nop_visit, NULL, &pg);
}

/* The data of revision 0 of a stream equals want. */
static void assert_reads(store *s, const char *stream, const char *want, const char *meta)
{
    coll c = {0};
    read_stream_all(s, stream, 10, &c);
    assert_true(c.n >= 1);
    assert_true(bin_is_str(c.ev[0]->data, want));
    assert_true(bin_is_str(c.ev[0]->metadata, meta));
    coll_free(&c);
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    uint8_t *b = read_file(from, &len);
    assert_non_null(b);
    write_file(to, b, len);
    free(b);
}

/* A fresh data directory made of a data.mdb and a keys.esk. */
static void restore(const char *dir, const char *data_from, const char *keys_from)
{
    char p[1024];
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    copy_file(data_from, p);
    snprintf(p, sizeof p, "%s/keys.esk", dir);
    copy_file(keys_from, p);
}

/* --------------------------------------------------------------- tests -- */

static void test_data_and_metadata_never_reach_the_disk_in_plain(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_true(store_encrypted(f->s));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 3));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    uint8_t snap[] = "snapshot " MARK;
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("person-1"), 8, 2, 1, snap, sizeof snap));
    fx_reopen(f);
    assert_int_equal(count_in_dir(f->path, "MARKER-7f3a9c"), 0);
    assert_int_equal(count_in_dir(f->path, CTRL_MARK), 0);
    /* ... and every read path opens it. */
    assert_reads(f->s, "person-1", MARK, META_MARK);
    coll c = {0};
    read_all_fwd(f->s, NULL, 2, &c);
    assert_int_equal(c.n, 4);
    assert_true(bin_is_str(c.ev[3]->data, CTRL_MARK));
    coll_free(&c);
    store_snapshot sn;
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("person-1"), 8, &sn));
    assert_int_equal(sn.data_len, sizeof snap);
    assert_memory_equal(sn.data, snap, sizeof snap);
    free(sn.data);
    /* A retried append is still recognised through the sealed records. */
    f->next_id -= 1;
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    assert_int_equal(last_rev(f->s, "ctrl-1"), 0);
    assert_check_clean(f->s);
}

static void test_a_plain_store_keeps_the_marker_and_cannot_erase(void **state)
{
    fx *f = *state;
    store_options o = {.path = f->path, .map_size = TEST_MAP_SIZE, .no_encrypt = true};
    f->s = open_opts(&o);
    assert_false(store_encrypted(f->s));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    store_close(f->s);
    f->s = NULL;
    assert_true(count_in_dir(f->path, CTRL_MARK) >= 2);
    /* The choice is the store's: reopening without no_encrypt keeps it. */
    fx_open(f);
    assert_false(store_encrypted(f->s));
    store_erase_op op;
    assert_rv(ES_ERR_NOT_ERASABLE,
              erase(f->s, STORE_ERASE_STREAM, "ctrl-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT, put(f, "ctrl-2", "alice", "x", "y", 1));
    assert_false(stream_exists(f->s, "ctrl-2"));
}

static void test_erase_stream_refuses_reads_appends_and_snapshots(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    assert_rv(ES_OK, store_save_snapshot(f->s, U8("person-1"), 8, 1, 1, U8("s"), 1));
    store_erase_op op;
    assert_rv(ES_ERR_WRONG_EXPECTED_REVISION,
              erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_EXACT, 0, &op));
    assert_true(op.actual_exists);
    assert_int_equal(op.actual_revision, 1);
    assert_rv(ES_OK, read_rv(f->s, "person-1")); /* a failed check changed nothing */
    uint64_t before = store_now_us();
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_EXACT, 1, &op));
    assert_false(op.already);
    assert_int_equal(op.streams, 1);
    assert_true(op.erased_at_us >= before);
    uint64_t at = op.erased_at_us;

    assert_rv(ES_ERR_ERASED, read_rv(f->s, "person-1"));
    assert_rv(ES_ERR_ERASED, put(f, "person-1", NULL, "again", "again", 1));
    store_snapshot sn;
    assert_rv(ES_ERR_ERASED, store_load_snapshot(f->s, U8("person-1"), 8, &sn));
    assert_rv(ES_ERR_ERASED, store_save_snapshot(f->s, U8("person-1"), 8, 1, 1, U8("s"), 1));
    /* The log keeps the positions; readers of it see holes, and the
     * erasure's own record (what the relay carries to followers). */
    coll c = {0};
    read_all_fwd(f->s, NULL, 10, &c);
    assert_int_equal(c.n, 2);
    assert_true(bin_is_str(c.ev[0]->stream, "ctrl-1"));
    assert_true(bin_is_str(c.ev[1]->stream, STORE_LIFE_STREAM));
    assert_true(bin_is_str(c.ev[1]->type, STORE_ERASE_TYPE_STREAM));
    assert_true(bin_is_str(c.ev[1]->metadata, "person-1"));
    assert_int_equal(c.ev[1]->data.len, STORE_ERASE_RECORD_BYTES);
    coll_free(&c);
    assert_int_equal(store_head(f->s), 4);
    assert_reads(f->s, "ctrl-1", CTRL_MARK, CTRL_MARK);

    /* Again: nothing changes, the first time is reported. */
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    assert_true(op.already);
    assert_int_equal(op.erased_at_us, at);
    fx_reopen(f);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "person-1"));
    assert_check_clean(f->s);
}

static void test_copies_taken_before_the_erasure_serve_erased_with_the_new_key_store(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    char pre[600], post[600], p1[1024], p2[1024], r[600];
    snprintf(pre, sizeof pre, "%s/pre", f->root);
    snprintf(post, sizeof post, "%s/post", f->root);
    assert_rv(ES_OK, store_backup(f->s, pre));
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, store_backup(f->s, post));
    assert_int_equal(count_in_dir(post, "MARKER-7f3a9c"), 0);

    /* The pre-erasure data with the key store as it is now: erased. */
    snprintf(p1, sizeof p1, "%s/data.mdb", pre);
    snprintf(p2, sizeof p2, "%s/keys.esk", post);
    snprintf(r, sizeof r, "%s/restored", f->root);
    restore(r, p1, p2);
    store *rs = open_at(r, TEST_MAP_SIZE, false, false);
    assert_rv(ES_ERR_ERASED, read_rv(rs, "person-1"));
    assert_reads(rs, "ctrl-1", CTRL_MARK, CTRL_MARK);
    /* New streams of the restored store never take a key the primary used. */
    store_close(rs);

    /* The live key store works the same way for an old copy of the data. */
    char live_keys[1024], r2[1024];
    snprintf(live_keys, sizeof live_keys, "%s/keys.esk", f->path);
    snprintf(r2, sizeof r2, "%s/restored-live", f->root);
    restore(r2, p1, live_keys);
    rs = open_at(r2, TEST_MAP_SIZE, false, true);
    assert_rv(ES_ERR_ERASED, read_rv(rs, "person-1"));
    store_close(rs);

    /* A key store copied before the erasure still opens the old data: such
     * copies must be replaced (docs/erasure.md). */
    char r3[1024];
    snprintf(p2, sizeof p2, "%s/keys.esk", pre);
    snprintf(r3, sizeof r3, "%s/restored-old-keys", f->root);
    restore(r3, p1, p2);
    rs = open_at(r3, TEST_MAP_SIZE, false, true);
    assert_reads(rs, "person-1", MARK, META_MARK);
    store_close(rs);
}

static void test_erase_subject_erases_all_its_streams_at_once(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "account-1", "alice", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "profile-1", "alice", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "account-2", "bob", CTRL_MARK, CTRL_MARK, 1));
    /* An existing stream keeps its subject. */
    assert_rv(ES_OK, put(f, "account-1", "alice", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "account-1", NULL, MARK, META_MARK, 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, put(f, "account-1", "bob", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "account-3", NULL, "x", "y", 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, put(f, "account-3", "alice", "x", "y", 1));
    /* One transaction creating two streams of a new subject: one key. */
    store_event_in ev[2];
    uint8_t ids[2][16];
    memset(ev, 0, sizeof ev);
    for (int i = 0; i < 2; i++) {
        set_id(ids[i], f->next_id++);
        ev[i].id = ids[i];
        ev[i].type = U8("Opened");
        ev[i].type_len = 6;
        ev[i].data = U8(MARK);
        ev[i].data_len = strlen(MARK);
    }
    store_append_in ap[2] = {
        {.stream = U8("account-9"),
         .stream_len = 9,
         .events = &ev[0],
         .n_events = 1,
         .subject = U8("carol"),
         .subject_len = 5},
        {.stream = U8("profile-9"),
         .stream_len = 9,
         .events = &ev[1],
         .n_events = 1,
         .subject = U8("carol"),
         .subject_len = 5},
    };
    store_append_result rs[2];
    store_request rq = {.appends = ap, .n_appends = 2, .results = rs};
    assert_rv(ES_OK, store_append_batch(f->s, &rq, 1));
    assert_rv(ES_OK, rq.rv);
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_SUBJECT, "carol", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.streams, 2);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "account-9"));
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "profile-9"));
    /* Its streams go with the subject, never alone. */
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(f->s, STORE_ERASE_STREAM, "account-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_SUBJECT, "alice", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.streams, 2);
    assert_false(op.already);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "account-1"));
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "profile-1"));
    assert_reads(f->s, "account-2", CTRL_MARK, CTRL_MARK);
    /* A new stream of an erased subject is refused. */
    assert_rv(ES_ERR_ERASED, put(f, "profile-2", "alice", "x", "y", 1));
    assert_false(stream_exists(f->s, "profile-2"));
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_SUBJECT, "alice", STORE_EXPECT_ANY, 0, &op));
    assert_true(op.already);
    fx_reopen(f);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "profile-1"));
    assert_check_clean(f->s);
}

static void test_bad_input(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    store_erase_op op;
    assert_rv(ES_ERR_NOT_FOUND,
              erase(f->s, STORE_ERASE_STREAM, "nobody", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_NOT_FOUND,
              erase(f->s, STORE_ERASE_SUBJECT, "nobody", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_RESERVED_STREAM,
              erase(f->s, STORE_ERASE_STREAM, "$sys", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_STREAM_ID,
              erase(f->s, STORE_ERASE_STREAM, "", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_STREAM_ID,
              erase(f->s, STORE_ERASE_STREAM, "bad\nid", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(f->s, STORE_ERASE_SUBJECT, "bad\x01", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_NO_STREAM, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(f->s, STORE_ERASE_STREAM, "person-1", (store_expect)9, 0, &op));
    op.kind = (store_erase_kind)7;
    assert_rv(ES_ERR_INVALID_ARGUMENT, store_erase(f->s, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT, put(f, "person-2", "bad\x01subject", "x", "y", 1));
    assert_false(stream_exists(f->s, "person-2"));
    /* A tombstoned stream is not erased by name any more. */
    store_life_op lo = {.kind = STORE_LIFE_TOMBSTONE, .stream = U8("person-1"), .stream_len = 8};
    assert_rv(ES_OK, store_life_apply(f->s, &lo));
    assert_rv(ES_ERR_STREAM_DELETED,
              erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    store_close(f->s);
    f->s = NULL;

    /* Read-only opens and followers do not erase. */
    store *ro = open_at(f->path, TEST_MAP_SIZE, false, true);
    assert_rv(ES_ERR_READ_ONLY, erase(ro, STORE_ERASE_SUBJECT, "x", STORE_EXPECT_ANY, 0, &op));
    store_close(ro);
    store_options fo = {.path = f->path, .map_size = TEST_MAP_SIZE, .follower = true};
    store *fs = open_opts(&fo);
    assert_rv(ES_ERR_FOLLOWER, erase(fs, STORE_ERASE_SUBJECT, "x", STORE_EXPECT_ANY, 0, &op));
    store_close(fs);

    /* Without its key store an encrypted store does not open; with another
     * store's, neither. */
    char keys[1024], saved[1024], msg[512];
    snprintf(keys, sizeof keys, "%s/keys.esk", f->path);
    snprintf(saved, sizeof saved, "%s/keys.saved", f->root);
    assert_int_equal(rename(keys, saved), 0);
    store *s = NULL;
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(f->path, TEST_MAP_SIZE, false, false, &s, msg, sizeof msg));
    assert_non_null(strstr(msg, "keys.esk"));
    char other[600], other_keys[1024];
    snprintf(other, sizeof other, "%s/other", f->root);
    store_close(open_at(other, TEST_MAP_SIZE, false, false));
    snprintf(other_keys, sizeof other_keys, "%s/keys.esk", other);
    copy_file(other_keys, keys);
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(f->path, TEST_MAP_SIZE, false, false, &s, msg, sizeof msg));
    assert_int_equal(rename(saved, keys), 0);
    /* A new store never overwrites a keys.esk it finds. */
    char fresh[600], stray[1024];
    snprintf(fresh, sizeof fresh, "%s/fresh", f->root);
    assert_int_equal(mkdir(fresh, 0700), 0);
    snprintf(stray, sizeof stray, "%s/keys.esk", fresh);
    copy_file(keys, stray);
    assert_rv(ES_ERR_INCOMPATIBLE_STORE,
              try_open(fresh, TEST_MAP_SIZE, false, false, &s, msg, sizeof msg));
    size_t l1, l2;
    uint8_t *b1 = read_file(keys, &l1), *b2 = read_file(stray, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);
    fx_open(f);
    assert_rv(ES_ERR_STREAM_DELETED, read_rv(f->s, "person-1"));
}

/* A file size limit that the key store's next batch of keys does not fit
 * under: the append of a new stream is STORE_FULL with nothing written,
 * appends to streams that have keys go on, and new streams work again once
 * there is room. In a child: the limit is the process's. */
static int key_store_full_child(fx *f)
{
    signal(SIGXFSZ, SIG_IGN);
    f->s = open_at(f->path, TEST_MAP_SIZE, false, false);
    if (put(f, "person-1", NULL, "x", "y", 1) != ES_OK) {
        return 1;
    }
    store_close(f->s);
    f->s = open_at(f->path, TEST_MAP_SIZE, false, false); /* a new batch starts at the end */
    struct stat st;
    char keys[1024];
    snprintf(keys, sizeof keys, "%s/keys.esk", f->path);
    if (stat(keys, &st) != 0) {
        return 2;
    }
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    /* Room for data.mdb's growth by a small append, none for a batch of keys. */
    struct stat dst;
    char data[1024];
    snprintf(data, sizeof data, "%s/data.mdb", f->path);
    if (stat(data, &dst) != 0) {
        return 3;
    }
    rlim_t biggest = (rlim_t)(dst.st_size > st.st_size ? dst.st_size : st.st_size);
    lim.rlim_cur = biggest + 64u * 1024u;
    if (lim.rlim_cur >= (rlim_t)st.st_size + 4096u * STORE_KEY_SLOT_TEST) {
        return 4; /* the data file is larger than a batch: the test cannot separate them */
    }
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
        return 5;
    }
    uint64_t head = store_head(f->s);
    if (put(f, "person-2", NULL, "x", "y", 1) != ES_ERR_STORE_FULL) {
        return 6;
    }
    if (store_head(f->s) != head || stream_exists(f->s, "person-2")) {
        return 7;
    }
    if (put(f, "person-1", NULL, "x", "y", 1) != ES_OK) {
        return 8;
    }
    if (setrlimit(RLIMIT_FSIZE, &old) != 0 || put(f, "person-2", NULL, "x", "y", 1) != ES_OK) {
        return 9;
    }
    store_close(f->s);
    f->s = NULL;
    return 0;
}

static void test_a_full_key_store_refuses_new_streams_only(void **state)
{
    fx *f = *state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(key_store_full_child(f));
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail_msg("child: %s %d", WIFEXITED(st) ? "failed at step" : "killed by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
}

/* Run an erasure in a child that SIGKILLs itself at `point`. */
static void erase_killed_at(fx *f, int point)
{
    store_close(f->s);
    f->s = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store *s = open_at(f->path, TEST_MAP_SIZE, true, false);
        store_erase_op op;
        kill_point = point;
        erase(s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op);
        _exit(0); /* not reached */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static void test_kill_during_erase_leaves_it_done_or_not_started(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    char keys[1024], before[1024];
    snprintf(keys, sizeof keys, "%s/keys.esk", f->path);
    snprintf(before, sizeof before, "%s/keys.before", f->root);
    copy_file(keys, before);

    /* Killed before the commit: not started. */
    erase_killed_at(f, 1);
    fx_open(f);
    assert_reads(f->s, "person-1", MARK, META_MARK);

    /* Killed after the commit, before the key was overwritten: the key is
     * still in the file, and the next open finishes the erasure. */
    erase_killed_at(f, 2);
    size_t l1, l2;
    uint8_t *k1 = read_file(before, &l1);
    uint8_t *k2 = read_file(keys, &l2);
    assert_true(l2 >= 128 && l1 >= 128);
    assert_memory_equal(k1 + 64, k2 + 64, 64); /* slot 1 still holds the key */
    free(k2);
    fx_open(f);
    k2 = read_file(keys, &l2);
    static const uint8_t zero[64];
    assert_memory_equal(k2 + 64, zero, 64); /* destroyed by the open */
    free(k1);
    free(k2);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "person-1"));
}

/* ------------------------------------------------------- the key cache -- */

/*
 * A reading thread keeps the key it last used (keys.c, "sealing"): these
 * show that it never serves one stream's key for another's record, nor a
 * destroyed key, nor one store's key for another store with the same id,
 * and that a record sealed with a nonce of another writer, or tampered
 * with, is still checked as a whole.
 */

/* The data of revision rev of a stream, read alone (one record). */
static es_err read_one(store *s, const char *stream, uint64_t rev, char *data, size_t cap)
{
    coll c = {0};
    store_page pg;
    es_err rv =
        store_read_stream(s, U8(stream), strlen(stream), rev, false, 1, coll_visit, &c, &pg);
    if (rv == ES_OK) {
        assert_int_equal(c.n, 1);
        assert_true(c.ev[0]->data.len < cap);
        memcpy(data, c.ev[0]->data.data, c.ev[0]->data.len);
        data[c.ev[0]->data.len] = 0;
    }
    coll_free(&c);
    return rv;
}

static void assert_one(store *s, const char *stream, uint64_t rev, const char *want)
{
    char got[128];
    assert_rv(ES_OK, read_one(s, stream, rev, got, sizeof got));
    assert_string_equal(got, want);
}

typedef struct put_job {
    fx *f;
    const char *stream, *data;
    es_err rv;
} put_job;

static void *put_thread(void *arg)
{
    put_job *j = arg;
    j->rv = put(j->f, j->stream, NULL, j->data, "m", 1);
    return NULL;
}

/* Append one event from a thread of its own: its nonces have another
 * random prefix than this thread's (keys.c). */
static void put_other_thread(fx *f, const char *stream, const char *data)
{
    put_job j = {f, stream, data, ES_ERR_INTERNAL};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, put_thread, &j), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_rv(ES_OK, j.rv);
}

static void test_interleaved_keys_and_writers_read_right_in_one_pass(void **state)
{
    fx *f = *state;
    fx_open(f);
    /* Positions 1..8: two streams with keys of their own and a subject's
     * stream, interleaved; some sealed by another thread. */
    assert_rv(ES_OK, put(f, "person-a", NULL, "a0", "m", 1));
    assert_rv(ES_OK, put(f, "person-b", NULL, "b0", "m", 1));
    assert_rv(ES_OK, put(f, "person-c", "carol", "c0", "m", 1));
    put_other_thread(f, "person-a", "a1");
    assert_rv(ES_OK, put(f, "person-a", NULL, "a2", "m", 1));
    put_other_thread(f, "person-b", "b1");
    assert_rv(ES_OK, put(f, "person-c", "carol", "c1", "m", 1));
    assert_rv(ES_OK, put(f, "person-b", NULL, "b2", "m", 1));
    /* A record whose sealed field's length takes two bytes. */
    char big[301];
    memset(big, 'z', 300);
    big[300] = 0;
    assert_rv(ES_OK, put(f, "person-a", NULL, big, "m", 1));
    const char *const want[] = {"a0", "b0", "c0", "a1", "a2", "b1", "c1", "b2", big};
    for (int pass = 0; pass < 2; pass++) {
        coll c = {0};
        read_all_fwd(f->s, NULL, pass == 0 ? 100 : 3, &c);
        assert_int_equal(c.n, ARRAY_LEN(want));
        for (size_t i = 0; i < c.n; i++) {
            assert_true(bin_is_str(c.ev[i]->data, want[i]));
        }
        coll_free(&c);
    }
    /* Streams read alone, in an order that changes key at every record. */
    assert_one(f->s, "person-a", 1, "a1");
    assert_one(f->s, "person-b", 1, "b1");
    assert_one(f->s, "person-a", 2, "a2");
    assert_one(f->s, "person-c", 1, "c1");
    assert_one(f->s, "person-a", 0, "a0");
    coll c = {0};
    read_stream_all(f->s, "person-a", 10, &c);
    assert_int_equal(c.n, 4);
    assert_true(bin_is_str(c.ev[3]->data, big));
    coll_free(&c);
}

static void test_an_erased_key_is_not_served_from_a_readers_cache(void **state)
{
    fx *f = *state;
    fx_open(f);
    uint64_t first_id = f->next_id;
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 3));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    /* This thread has just opened person-1's records with its key. */
    coll c = {0};
    read_all_fwd(f->s, NULL, 100, &c);
    assert_int_equal(c.n, 5);
    assert_true(bin_is_str(c.ev[4]->data, MARK));
    coll_free(&c);
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    /* The log's readers see holes at once: no record is opened with the key
     * this thread held; the erasure's own record follows. */
    read_all_fwd(f->s, NULL, 100, &c);
    assert_int_equal(c.n, 2);
    assert_true(bin_is_str(c.ev[0]->data, CTRL_MARK));
    assert_true(bin_is_str(c.ev[1]->type, STORE_ERASE_TYPE_STREAM));
    coll_free(&c);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "person-1"));
    uint8_t id[16];
    set_id(id, first_id);
    assert_rv(ES_ERR_ERASED, store_read_event_by_id(f->s, id, nop_visit, NULL));
    assert_reads(f->s, "ctrl-1", CTRL_MARK, CTRL_MARK);
}

/* A copy of a store opened beside it has its id and its slot numbers; the
 * new streams of each take the same slot, with keys of their own. */
static void test_two_stores_with_one_id_open_each_record_with_its_own_key(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, "old", "m", 1));
    char copy[600];
    snprintf(copy, sizeof copy, "%s/copy", f->root);
    assert_rv(ES_OK, store_backup(f->s, copy));
    fx_reopen(f); /* its next keys come after the copy's end, as the copy's do */
    store *cs = open_at(copy, TEST_MAP_SIZE, false, false);
    assert_rv(ES_OK, put(f, "person-p", NULL, "primary", "m", 1));
    assert_rv(ES_OK, put_to(f, cs, "person-c", NULL, "copy", "m", 1));
    for (int i = 0; i < 3; i++) {
        assert_one(f->s, "person-p", 0, "primary");
        assert_one(cs, "person-c", 0, "copy");
        assert_one(cs, "person-1", 0, "old");
        assert_one(f->s, "person-1", 0, "old");
    }
    store_close(cs);
}

/* Flip one bit at offset off of the record at pos, with its CRC made right
 * again, as someone who can write the file would (the store is closed). */
static void reseal_flip(const char *path, uint64_t pos, size_t off)
{
    MDB_env *env = raw_env(path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    uint8_t key[8];
    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)(pos >> (8 * (7 - i)));
    }
    MDB_val k = {8, key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_true(off < v.mv_size && (off < 4 || off >= 8)); /* never the CRC itself */
    uint8_t *b = malloc(v.mv_size);
    assert_non_null(b);
    memcpy(b, v.mv_data, v.mv_size);
    b[off] ^= 0x01;
    uint32_t crc = crc32c(0, b + 8, v.mv_size - 8);
    for (int i = 0; i < 4; i++) {
        b[4 + i] = (uint8_t)(crc >> (8 * i));
    }
    MDB_val nv = {v.mv_size, b};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    free(b);
    mdb_env_close(env);
}

/* The record at pos of a closed store, copied into out; its size. */
static size_t raw_record(const char *path, uint64_t pos, uint8_t *out, size_t cap)
{
    MDB_env *env = raw_env(path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    uint8_t key[8];
    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)(pos >> (8 * (7 - i)));
    }
    MDB_val k = {8, key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    size_t n = v.mv_size;
    assert_true(n <= cap);
    memcpy(out, v.mv_data, n);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

/* Where an event id is in a stored record. */
static size_t id_offset(const uint8_t *rec, size_t len, const uint8_t id[16])
{
    for (size_t i = 0; i + 16 <= len; i++) {
        if (!memcmp(rec + i, id, 16)) {
            return i;
        }
    }
    fail_msg("the event id is not in the record");
    return 0;
}

static void test_a_tampered_sealed_record_reads_corrupt(void **state)
{
    fx *f = *state;
    fx_open(f);
    /* Positions 1..13, revisions 0..12 of one stream (a stream's reads
     * check its last record: that one stays whole); data "dd", metadata
     * "m": the sealed field (last, its length in one byte) is 37 + (2 + 2)
     * + (2 + 1) bytes: version, slot, nonce (4 fixed bytes, 8 invocation
     * bytes), the ciphertext, the tag. */
    uint64_t first_id = f->next_id;
    for (int i = 0; i < 13; i++) {
        assert_rv(ES_OK, put(f, "person-1", NULL, "dd", "m", 1));
    }
    store_close(f->s);
    f->s = NULL;
    uint8_t rec[512], id[16];
    size_t size = raw_record(f->path, 10, rec, sizeof rec);
    set_id(id, first_id + 9);
    size_t sealed = size - (37 + 4 + 3);
    const size_t at[] = {
        sealed + 9 + 1,               /* position 2: the nonce's fixed part */
        sealed + 9 + 8,               /* position 4: its invocation part */
        size - 16 - 2,                /* position 6: the ciphertext */
        size - 3,                     /* position 8: the tag */
        id_offset(rec, size, id) + 7, /* position 10: the event id (additional data) */
        sealed - 1,                   /* position 12: the sealed field's length */
    };
    for (size_t i = 0; i < ARRAY_LEN(at); i++) {
        assert_int_equal(raw_record(f->path, 2 + 2 * i, rec, sizeof rec), size);
        assert_int_equal(rec[sealed], 1); /* the sealed field's version byte */
        reseal_flip(f->path, 2 + 2 * i, at[i]);
    }
    fx_open(f);
    for (uint64_t rev = 0; rev < 13; rev++) {
        char got[16];
        es_err rv = read_one(f->s, "person-1", rev, got, sizeof got);
        if (rev % 2 == 1) {
            assert_rv(ES_ERR_CORRUPT, rv);
        } else {
            assert_rv(ES_OK, rv);
            assert_string_equal(got, "dd");
        }
    }
    /* A whole read stops at the first one. */
    coll c = {0};
    store_page pg;
    assert_rv(ES_ERR_CORRUPT,
              store_read_stream(f->s, U8("person-1"), 8, 0, false, 0, coll_visit, &c, &pg));
    coll_free(&c);
}

/*
 * A record's header flags are outside its CRC: a cleared sealed flag must
 * not serve the event as one without data, and a flag or reserved bit the
 * store never writes is damage too.
 */
static void test_a_damaged_record_header_reads_corrupt(void **state)
{
    fx *f = *state;
    fx_open(f);
    for (int i = 0; i < 4; i++) {
        assert_rv(ES_OK, put(f, "person-1", NULL, "dd", "m", 1));
    }
    store_close(f->s);
    f->s = NULL;
    uint8_t rec[512];
    raw_record(f->path, 1, rec, sizeof rec);
    assert_int_equal(rec[1], 1); /* sealed */
    reseal_flip(f->path, 1, 1);  /* revision 0: the sealed flag cleared */
    reseal_flip(f->path, 3, 2);  /* revision 2: a reserved bit set */
    fx_open(f);
    for (uint64_t rev = 0; rev < 4; rev++) {
        char got[16];
        es_err rv = read_one(f->s, "person-1", rev, got, sizeof got);
        if (rev % 2 == 0) {
            assert_rv(ES_ERR_CORRUPT, rv);
        } else {
            assert_rv(ES_OK, rv);
            assert_string_equal(got, "dd");
        }
    }
    store_check_report rep;
    assert_rv(ES_ERR_CORRUPT, store_check(f->s, &rep, NULL, NULL));
}

/*
 * A key slot that is neither a key passing its CRC nor zeros is damage
 * (CORRUPT), not an erasure; a slot of zeros without a recorded erasure
 * (a key store newer than its data) reads as erased.
 */
static void test_a_damaged_key_slot_reads_corrupt_and_a_zeroed_one_erased(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    store_close(f->s);
    f->s = NULL;
    char keys[1024];
    snprintf(keys, sizeof keys, "%s/keys.esk", f->path);
    size_t len;
    uint8_t *k = read_file(keys, &len);
    assert_true(len >= 128);
    k[64 + 8 + 3] ^= 0x10; /* slot 1 (the stream's): a bit of its key */
    write_file(keys, k, len);
    fx_open(f);
    assert_rv(ES_ERR_CORRUPT, read_rv(f->s, "person-1"));
    store_close(f->s);
    f->s = NULL;
    memset(k + 64, 0, 64);
    write_file(keys, k, len);
    free(k);
    fx_open(f);
    assert_rv(ES_ERR_ERASED, read_rv(f->s, "person-1"));
}

/* ------------------------------------------------------------ followers -- */

/* What the relay publishes: every record as stored, in position order. */
typedef struct stored_log {
    uint8_t *buf;
    size_t len, n;
    size_t off[64], rlen[64];
} stored_log;

static int stored_visit(void *ctx, const store_record *rec)
{
    stored_log *l = ctx;
    assert_true(l->n < 64);
    uint8_t *nb = realloc(l->buf, l->len + rec->len);
    assert_non_null(nb);
    l->buf = nb;
    memcpy(l->buf + l->len, rec->bytes, rec->len);
    l->off[l->n] = l->len;
    l->rlen[l->n] = rec->len;
    l->len += rec->len;
    l->n++;
    return 0;
}

static void stored_read(store *s, uint64_t from, stored_log *l)
{
    static const store_filter stored = {STORE_FILTER_STORED, NULL, 0};
    memset(l, 0, sizeof *l);
    store_page pg;
    assert_rv(ES_OK, store_read_all(s, &stored, from, false, 64, stored_visit, l, &pg));
}

/* Whether follow_up carries each key's subject, as the relay does (false:
 * as a relay older than the subject header did). */
static bool relay_subjects = true;

/* Copy up to max records from position `from` of the primary into the
 * follower as the relay and the follow thread do: each record's key
 * first, with its subject, then the records. */
static void follow_up_n(store *primary, store *follower, uint64_t from, size_t max)
{
    stored_log l;
    stored_read(primary, from, &l);
    if (l.n > max) {
        l.n = max;
    }
    store_import_in in[64];
    for (size_t i = 0; i < l.n; i++) {
        in[i].record = l.buf + l.off[i];
        in[i].len = l.rlen[i];
        uint64_t slot;
        if (store_record_key_slot(in[i].record, in[i].len, &slot)) {
            store_key_in k = {.slot = slot};
            store_key_state st;
            assert_rv(ES_OK, store_key_export(primary, slot, &st, k.key));
            k.erased = st != STORE_KEY_LIVE;
            es_err srv = store_key_subject(primary, slot, k.subject, &k.subject_len);
            assert_true(srv == ES_OK || srv == ES_ERR_NOT_FOUND);
            if (!relay_subjects) {
                k.subject_len = 0;
            }
            assert_rv(ES_OK, store_keys_import(follower, &k, 1));
        }
    }
    size_t bad;
    char msg[200];
    if (l.n > 0) {
        es_err rv = store_import_batch(follower, in, l.n, &bad, msg, sizeof msg);
        if (rv != ES_OK) {
            fail_msg("import: %s: %s", es_errname(rv), msg);
        }
    }
    free(l.buf);
}

static void follow_up(store *primary, store *follower, uint64_t from)
{
    follow_up_n(primary, follower, from, SIZE_MAX);
}

static store *open_follower(fx *f, const char *name, bool no_encrypt)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", f->root, name);
    store_options o = {
        .path = path, .map_size = TEST_MAP_SIZE, .follower = true, .no_encrypt = no_encrypt};
    return open_opts(&o);
}

static void test_a_follower_stores_sealed_records_and_applies_erasures(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    /* The relay's view is the stored bytes: sealed, no marker in plain. */
    stored_log l;
    stored_read(f->s, 1, &l);
    assert_int_equal(l.n, 5);
    assert_null(memmem(l.buf, l.len, "MARKER-7f3a9c", 13));
    assert_null(memmem(l.buf, l.len, CTRL_MARK, strlen(CTRL_MARK)));
    free(l.buf);

    store *b = open_follower(f, "follower", false);
    follow_up(f->s, b, 1);
    assert_reads(b, "person-1", MARK, META_MARK);
    assert_reads(b, "orders-7", MARK, META_MARK);
    assert_reads(b, "ctrl-1", CTRL_MARK, CTRL_MARK);
    assert_check_clean(b);
    char bdir[900], bkeys[1024];
    snprintf(bdir, sizeof bdir, "%s/follower", f->root);
    snprintf(bkeys, sizeof bkeys, "%s/keys.esk", bdir);
    assert_int_equal(count_in_dir(bdir, "MARKER-7f3a9c"), 0);

    /* Erasures on the primary reach the follower as records. */
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    size_t klen;
    uint8_t *before = read_file(bkeys, &klen);
    follow_up(f->s, b, 6);
    assert_int_equal(store_head(b), store_head(f->s));
    assert_rv(ES_ERR_ERASED, read_rv(b, "person-1"));
    assert_rv(ES_ERR_ERASED, read_rv(b, "profile-7"));
    assert_rv(ES_ERR_ERASED, read_rv(b, "orders-7"));
    assert_reads(b, "ctrl-1", CTRL_MARK, CTRL_MARK);
    /* The follower's copies of the two keys are zeros now, the control's not. */
    size_t klen2;
    uint8_t *after = read_file(bkeys, &klen2);
    static const uint8_t zero[64];
    assert_true(klen >= 4 * 64 && klen2 == klen);
    assert_memory_not_equal(before + 64, zero, 64);
    assert_memory_equal(after + 64, zero, 64);      /* person-1: slot 1 */
    assert_memory_equal(after + 128, zero, 64);     /* subject-7: slot 2 */
    assert_memory_not_equal(after + 192, zero, 64); /* ctrl-1: slot 3 */
    free(before);
    free(after);
    assert_check_clean(b);
    store_close(b);
    /* A restart keeps it. */
    b = open_follower(f, "follower", false);
    assert_rv(ES_ERR_ERASED, read_rv(b, "person-1"));
    assert_reads(b, "ctrl-1", CTRL_MARK, CTRL_MARK);
    store_close(b);
}

/* A follower that copied the keys without their subjects (from a relay
 * older than the subject header) does not know which slots are subjects'.
 * Promoted, it must still refuse to erase one stream of a subject alone:
 * the key is the subject's, and the other streams would go with it. A
 * stream with a key of its own erases as on the primary. */
static void test_a_promoted_follower_refuses_to_erase_one_stream_of_a_subject(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 2));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    store *b = open_follower(f, "follower", false);
    relay_subjects = false;
    follow_up(f->s, b, 1);
    relay_subjects = true;
    store_close(b);
    char path[1024];
    snprintf(path, sizeof path, "%s/follower", f->root);
    store_options o = {.path = path, .map_size = TEST_MAP_SIZE};
    b = open_opts(&o); /* promoted: a primary on the follower's directory */
    store_erase_op op;
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(b, STORE_ERASE_STREAM, "orders-7", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.streams, 2); /* the refusal says how many share the key */
    assert_reads(b, "orders-7", MARK, META_MARK);
    assert_reads(b, "profile-7", MARK, META_MARK);
    assert_rv(ES_OK, erase(b, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.streams, 1);
    assert_rv(ES_ERR_ERASED, read_rv(b, "person-1"));
    assert_reads(b, "profile-7", MARK, META_MARK);
    assert_check_clean(b);
    store_close(b);
}

/* The primary names each subject's slot (what the relay puts in the key
 * message's Es-Key-Subject); a stream's own key has none. */
static void test_a_key_names_its_subject(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 1));
    uint8_t name[STORE_SUBJECT_MAX];
    size_t len = 99;
    assert_rv(ES_ERR_NOT_FOUND, store_key_subject(f->s, 1, name, &len));
    assert_rv(ES_OK, store_key_subject(f->s, 2, name, &len));
    assert_int_equal(len, 9);
    assert_memory_equal(name, "subject-7", 9);
    assert_rv(ES_ERR_NOT_FOUND, store_key_subject(f->s, 3, name, &len)); /* never made */
    /* Erased, the subject is still named (the erased marker carries it). */
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, store_key_subject(f->s, 2, name, &len));
    assert_memory_equal(name, "subject-7", 9);
    assert_check_clean(f->s);
}

/* A store written before slot_subjects has subjects and no reverse
 * entries: the next open fills them from subjects. */
static void test_an_older_store_gets_its_slot_subjects_at_open(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "profile-8", "subject-8", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    store_close(f->s);
    f->s = NULL;
    /* Empty the table, as in a store from before it. */
    MDB_env *env = raw_env(f->path);
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "slot_subjects", 0, &dbi), 0);
    assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    /* A damaged subjects entry is skipped: the store still opens. */
    raw_put(f->path, "subjects", "subject-bad", 11, "abc", 3);
    fx_open(f);
    uint8_t name[STORE_SUBJECT_MAX];
    size_t len;
    assert_rv(ES_OK, store_key_subject(f->s, 1, name, &len));
    assert_int_equal(len, 9);
    assert_memory_equal(name, "subject-7", 9);
    assert_rv(ES_OK, store_key_subject(f->s, 2, name, &len));
    assert_memory_equal(name, "subject-8", 9);
    assert_rv(ES_ERR_NOT_FOUND, store_key_subject(f->s, 3, name, &len));
    assert_rv(ES_ERR_CORRUPT, put(f, "profile-x", "subject-bad", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 1));
    store_close(f->s);
    f->s = NULL;
    /* Filled once: a later open finds it full and leaves it. */
    raw_del(f->path, "slot_subjects", "\0\0\0\0\0\0\0\2", 8);
    fx_open(f);
    assert_rv(ES_ERR_NOT_FOUND, store_key_subject(f->s, 2, name, &len));
    assert_rv(ES_OK, store_key_subject(f->s, 1, name, &len));
}

/* The key messages carry the subjects: a follower binds them, and promoted
 * it erases a subject by name (all its streams, as on the primary), binds
 * appends naming the subject to it, and still refuses to erase one of the
 * subject's streams alone, even a subject's only stream. */
static void test_a_promoted_follower_erases_a_subject_by_name(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 2));
    assert_rv(ES_OK, put(f, "profile-9", "subject-9", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    store *b = open_follower(f, "follower", false);
    follow_up(f->s, b, 1);
    /* A follower does not erase on its own. */
    store_erase_op op;
    assert_rv(ES_ERR_FOLLOWER,
              erase(b, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    store_close(b);
    char path[1024];
    snprintf(path, sizeof path, "%s/follower", f->root);
    store_options o = {.path = path, .map_size = TEST_MAP_SIZE};
    b = open_opts(&o); /* promoted */
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(b, STORE_ERASE_STREAM, "orders-7", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(b, STORE_ERASE_STREAM, "profile-9", STORE_EXPECT_ANY, 0, &op));
    /* Appends naming the subject: to its streams, and a new one bound to it. */
    assert_rv(ES_OK, put_to(f, b, "orders-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put_to(f, b, "cart-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, put_to(f, b, "orders-7", "subject-9", MARK, META_MARK, 1));
    assert_rv(ES_ERR_INVALID_ARGUMENT, put_to(f, b, "person-1", "subject-7", MARK, META_MARK, 1));
    assert_reads(b, "cart-7", MARK, META_MARK);
    assert_rv(ES_OK, erase(b, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    assert_false(op.already);
    assert_int_equal(op.streams, 3);
    assert_rv(ES_ERR_ERASED, read_rv(b, "profile-7"));
    assert_rv(ES_ERR_ERASED, read_rv(b, "orders-7"));
    assert_rv(ES_ERR_ERASED, read_rv(b, "cart-7"));
    assert_rv(ES_ERR_ERASED, put_to(f, b, "new-7", "subject-7", MARK, META_MARK, 1));
    assert_reads(b, "profile-9", MARK, META_MARK);
    assert_reads(b, "person-1", MARK, META_MARK);
    assert_reads(b, "ctrl-1", CTRL_MARK, CTRL_MARK);
    assert_rv(ES_OK, erase(b, STORE_ERASE_SUBJECT, "subject-9", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.streams, 1);
    assert_rv(ES_ERR_ERASED, read_rv(b, "profile-9"));
    assert_rv(ES_OK, erase(b, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_ERR_NOT_FOUND,
              erase(b, STORE_ERASE_SUBJECT, "subject-0", STORE_EXPECT_ANY, 0, &op));
    assert_check_clean(b);
    store_close(b);
}

/* A subject erased on the primary before the follower copied its key:
 * the erased marker names it, so the promoted store knows the subject as
 * erased. */
static void test_a_follower_joining_after_a_subject_erasure_knows_the_subject(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 1));
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    store *b = open_follower(f, "follower", false);
    follow_up(f->s, b, 1);
    assert_rv(ES_ERR_ERASED, read_rv(b, "orders-7"));
    store_close(b);
    char path[1024];
    snprintf(path, sizeof path, "%s/follower", f->root);
    store_options o = {.path = path, .map_size = TEST_MAP_SIZE};
    b = open_opts(&o);
    assert_rv(ES_OK, erase(b, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    assert_true(op.already);
    assert_int_equal(op.streams, 2);
    assert_rv(ES_ERR_ERASED, put_to(f, b, "new-7", "subject-7", MARK, META_MARK, 1));
    assert_check_clean(b);
    store_close(b);
}

/* A subject learned after its streams were bound (their keys were copied
 * without it, then offered again with it): promoted, the store takes
 * appends naming the subject to those streams and erases them by name. */
static void test_a_subject_learned_after_its_streams_were_bound(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "orders-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    store *b = open_follower(f, "follower", false);
    relay_subjects = false;
    follow_up(f->s, b, 1);
    relay_subjects = true;
    store_key_in k = {.slot = 1};
    store_key_state st;
    assert_rv(ES_OK, store_key_export(f->s, 1, &st, k.key));
    assert_rv(ES_OK, store_key_subject(f->s, 1, k.subject, &k.subject_len));
    assert_rv(ES_OK, store_keys_import(b, &k, 1));
    store_close(b);
    char path[1024];
    snprintf(path, sizeof path, "%s/follower", f->root);
    store_options o = {.path = path, .map_size = TEST_MAP_SIZE};
    b = open_opts(&o);
    assert_rv(ES_OK, put_to(f, b, "orders-7", "subject-7", MARK, META_MARK, 1));
    store_erase_op op;
    assert_rv(ES_ERR_INVALID_ARGUMENT,
              erase(b, STORE_ERASE_STREAM, "orders-7", STORE_EXPECT_ANY, 0, &op));
    assert_rv(ES_OK, erase(b, STORE_ERASE_SUBJECT, "subject-7", STORE_EXPECT_ANY, 0, &op));
    assert_int_equal(op.streams, 2);
    assert_rv(ES_ERR_ERASED, read_rv(b, "profile-7"));
    assert_rv(ES_ERR_ERASED, read_rv(b, "orders-7"));
    assert_reads(b, "person-1", MARK, META_MARK);
    assert_check_clean(b);
    store_close(b);
}

/* A key message's subject is checked: a name that is not valid, a subject
 * the follower binds to another slot, a slot bound to another subject. */
static void test_follower_subject_errors(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "profile-7", "subject-7", MARK, META_MARK, 1));
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    store *b = open_follower(f, "follower", false);
    follow_up(f->s, b, 1);
    store_key_in k = {.slot = 3};
    memset(k.key, 0x33, sizeof k.key);
    memcpy(k.subject, "bad\x01", 4);
    k.subject_len = 4;
    assert_rv(ES_ERR_MALFORMED, store_keys_import(b, &k, 1));
    k.subject_len = STORE_SUBJECT_MAX + 1;
    assert_rv(ES_ERR_MALFORMED, store_keys_import(b, &k, 1));
    memcpy(k.subject, "subject-7", 9); /* bound to slot 1 here */
    k.subject_len = 9;
    assert_rv(ES_ERR_MALFORMED, store_keys_import(b, &k, 1));
    k.slot = 1; /* bound to subject-7 */
    memcpy(k.subject, "subject-8", 9);
    assert_rv(ES_ERR_MALFORMED, store_keys_import(b, &k, 1));
    /* Nothing of the refused imports was written. */
    uint8_t name[STORE_SUBJECT_MAX];
    size_t len;
    assert_rv(ES_ERR_NOT_FOUND, store_key_subject(b, 3, name, &len));
    store_key_state st;
    assert_rv(ES_OK, store_key_export(b, 3, &st, k.key));
    assert_int_equal(st, STORE_KEY_ABSENT);
    /* The same binding again: accepted, nothing changes. */
    assert_rv(ES_OK, store_key_export(f->s, 1, &st, k.key));
    memcpy(k.subject, "subject-7", 9);
    assert_rv(ES_OK, store_keys_import(b, &k, 1));
    assert_rv(ES_OK, store_key_subject(b, 1, name, &len));
    assert_memory_equal(name, "subject-7", 9);
    assert_reads(b, "profile-7", MARK, META_MARK);
    assert_check_clean(b);
    store_close(b);
}

static void test_a_follower_joining_after_an_erasure(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    assert_rv(ES_OK, put(f, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1));
    store_erase_op op;
    assert_rv(ES_OK, erase(f->s, STORE_ERASE_STREAM, "person-1", STORE_EXPECT_ANY, 0, &op));
    /* The key was destroyed before it was copied: the relay sends the
     * erased marker, the follower records it and never holds the key. */
    store_key_in k = {.slot = 1};
    store_key_state st;
    assert_rv(ES_OK, store_key_export(f->s, 1, &st, k.key));
    assert_int_equal(st, STORE_KEY_ERASED);
    store *b = open_follower(f, "follower", false);
    follow_up(f->s, b, 1);
    assert_rv(ES_ERR_ERASED, read_rv(b, "person-1"));
    assert_reads(b, "ctrl-1", CTRL_MARK, CTRL_MARK);
    /* A key offered later for an erased slot is never written. */
    memset(k.key, 0x5a, sizeof k.key);
    k.erased = false;
    assert_rv(ES_OK, store_keys_import(b, &k, 1));
    assert_rv(ES_ERR_ERASED, read_rv(b, "person-1"));
    assert_rv(ES_OK, store_key_export(b, 1, &st, k.key));
    assert_int_equal(st, STORE_KEY_ERASED);
    assert_check_clean(b);
    store_close(b);
}

static void test_follower_key_errors(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 1));
    /* Another key at a slot already holding one: refused. */
    store *b = open_follower(f, "follower", false);
    follow_up(f->s, b, 1);
    store_key_in k = {.slot = 1};
    memset(k.key, 0x11, sizeof k.key);
    assert_rv(ES_ERR_CORRUPT, store_keys_import(b, &k, 1));
    k.slot = 0;
    assert_rv(ES_ERR_CORRUPT, store_keys_import(b, &k, 1));
    assert_reads(b, "person-1", MARK, META_MARK);
    store_close(b);
    /* A plain follower can hold no key: sealed records are refused. */
    store *p = open_follower(f, "plain", true);
    k.slot = 1;
    assert_rv(ES_ERR_NOT_ERASABLE, store_keys_import(p, &k, 1));
    store_key_state st;
    assert_rv(ES_ERR_NOT_ERASABLE, store_key_export(p, 1, &st, k.key));
    stored_log l;
    stored_read(f->s, 1, &l);
    store_import_in in = {l.buf + l.off[0], l.rlen[0]};
    size_t bad;
    char msg[200];
    assert_rv(ES_ERR_NOT_ERASABLE, store_import_batch(p, &in, 1, &bad, msg, sizeof msg));
    assert_int_equal(bad, 0);
    assert_non_null(strstr(msg, "encryption"));
    assert_int_equal(store_head(p), 0);
    /* A sealed field that is not the store's layout: refused. */
    store *c = open_follower(f, "other", false);
    uint8_t *bent = malloc(l.rlen[0]);
    assert_non_null(bent);
    memcpy(bent, l.buf + l.off[0], l.rlen[0]);
    uint64_t slot;
    assert_true(store_record_key_slot(bent, l.rlen[0], &slot));
    es_record r;
    assert_rv(ES_OK, es_record_parse(bent, l.rlen[0], 0, &r));
    assert_true(r.sealed.len > 0);
    bent[r.sealed.p - bent] = 9; /* the seal's version */
    in.record = bent;
    assert_rv(ES_ERR_MALFORMED, store_import_batch(c, &in, 1, &bad, msg, sizeof msg));
    free(bent);
    free(l.buf);
    store_close(c);
    store_close(p);
}

/* Import one record (a copy) into a store; @return the import's outcome. */
static es_err import_one_rec(store *b, const uint8_t *rec, size_t len, char *msg, size_t cap)
{
    store_import_in in = {rec, len};
    size_t bad;
    return store_import_batch(b, &in, 1, &bad, msg, cap);
}

/* A follower's key store that cannot grow: the copy of a key is
 * STORE_FULL, nothing is written, and the same copy works once there is
 * room. In a child: the file size limit is the process's. */
static int follower_keys_full_child(fx *f)
{
    signal(SIGXFSZ, SIG_IGN);
    store *b = open_follower(f, "follower", false);
    char keys[1024];
    snprintf(keys, sizeof keys, "%s/follower/keys.esk", f->root);
    struct stat st;
    if (stat(keys, &st) != 0) {
        return 1;
    }
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 1024u * 1024u;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
        return 2;
    }
    /* A slot 4 MiB past the end of the file. */
    store_key_in k = {.slot = (uint64_t)st.st_size / 64u + 65536u};
    memset(k.key, 0x42, sizeof k.key);
    if (store_keys_import(b, &k, 1) != ES_ERR_STORE_FULL) {
        return 3;
    }
    store_key_state ks;
    if (store_key_export(b, k.slot, &ks, k.key) != ES_OK || ks != STORE_KEY_ABSENT) {
        return 4;
    }
    memset(k.key, 0x42, sizeof k.key);
    if (setrlimit(RLIMIT_FSIZE, &old) != 0 || store_keys_import(b, &k, 1) != ES_OK) {
        return 5;
    }
    if (store_key_export(b, k.slot, &ks, k.key) != ES_OK || ks != STORE_KEY_LIVE ||
        k.key[0] != 0x42) {
        return 6;
    }
    store_close(b);
    return 0;
}

static void test_a_follower_key_store_that_cannot_grow(void **state)
{
    fx *f = *state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(follower_keys_full_child(f));
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail_msg("child: %s %d", WIFEXITED(st) ? "failed at step" : "killed by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
}

static void test_follower_refuses_sealed_records_that_do_not_fit(void **state)
{
    fx *f = *state;
    fx_open(f);
    assert_rv(ES_OK, put(f, "person-1", NULL, MARK, META_MARK, 2));
    stored_log l;
    stored_read(f->s, 1, &l);
    assert_int_equal(l.n, 2);
    store *b = open_follower(f, "follower", false);
    char msg[200];
    /* Revision 1 naming another slot than its stream's. */
    follow_up_n(f->s, b, 1, 1);
    uint8_t *bent = malloc(l.rlen[1]);
    assert_non_null(bent);
    memcpy(bent, l.buf + l.off[1], l.rlen[1]);
    es_record r;
    assert_rv(ES_OK, es_record_parse(bent, l.rlen[1], 0, &r));
    bent[r.sealed.p - bent + 1] = 2; /* slot u64 LE after the version */
    assert_rv(ES_ERR_MALFORMED, import_one_rec(b, bent, l.rlen[1], msg, sizeof msg));
    assert_non_null(strstr(msg, "another key"));
    assert_int_equal(store_head(b), 1);
    free(bent);
    store_close(b);

    /* A sealed event in a stream the follower stores in plain: its first
     * event came from a plain store. */
    store *primary = f->s;
    char ppath[1024];
    snprintf(ppath, sizeof ppath, "%s/plain", f->root);
    store_options o = {.path = ppath, .map_size = TEST_MAP_SIZE, .no_encrypt = true};
    f->s = open_opts(&o);
    f->next_id += 100;
    assert_rv(ES_OK, put(f, "person-1", NULL, "plain", "plain", 1));
    stored_log pl;
    stored_read(f->s, 1, &pl);
    /* ... and an erasure record whose data is not 16 bytes. */
    uint8_t id[16];
    set_id(id, f->next_id++);
    store_event_in e = {.id = id,
                        .type = U8(STORE_ERASE_TYPE_STREAM),
                        .type_len = strlen(STORE_ERASE_TYPE_STREAM),
                        .data = U8("short"),
                        .data_len = 5};
    store_append_in a = {.stream = U8(STORE_LIFE_STREAM),
                         .stream_len = strlen(STORE_LIFE_STREAM),
                         .expect = STORE_EXPECT_ANY,
                         .events = &e,
                         .n_events = 1,
                         .allow_reserved = true};
    store_append_result res;
    assert_rv(ES_OK, append_one(f->s, &a, &res));
    stored_log pl2;
    stored_read(f->s, 2, &pl2);
    store_close(f->s);
    f->s = primary;
    b = open_follower(f, "follower2", false);
    assert_rv(ES_OK, import_one_rec(b, pl.buf + pl.off[0], pl.rlen[0], msg, sizeof msg));
    assert_rv(ES_ERR_MALFORMED, import_one_rec(b, l.buf + l.off[1], l.rlen[1], msg, sizeof msg));
    assert_non_null(strstr(msg, "stored in plain"));
    assert_rv(ES_ERR_MALFORMED,
              import_one_rec(b, pl2.buf + pl2.off[0], pl2.rlen[0], msg, sizeof msg));
    assert_non_null(strstr(msg, "erasure record"));
    assert_int_equal(store_head(b), 1);
    assert_check_clean(b);
    store_close(b);
    free(pl.buf);
    free(pl2.buf);
    free(l.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_data_and_metadata_never_reach_the_disk_in_plain),
        T(test_a_plain_store_keeps_the_marker_and_cannot_erase),
        T(test_erase_stream_refuses_reads_appends_and_snapshots),
        T(test_copies_taken_before_the_erasure_serve_erased_with_the_new_key_store),
        T(test_erase_subject_erases_all_its_streams_at_once),
        T(test_bad_input),
        T(test_kill_during_erase_leaves_it_done_or_not_started),
        T(test_a_full_key_store_refuses_new_streams_only),
        T(test_interleaved_keys_and_writers_read_right_in_one_pass),
        T(test_an_erased_key_is_not_served_from_a_readers_cache),
        T(test_two_stores_with_one_id_open_each_record_with_its_own_key),
        T(test_a_tampered_sealed_record_reads_corrupt),
        T(test_a_damaged_record_header_reads_corrupt),
        T(test_a_damaged_key_slot_reads_corrupt_and_a_zeroed_one_erased),
        T(test_a_follower_stores_sealed_records_and_applies_erasures),
        T(test_a_follower_joining_after_an_erasure),
        T(test_a_promoted_follower_refuses_to_erase_one_stream_of_a_subject),
        T(test_a_key_names_its_subject),
        T(test_an_older_store_gets_its_slot_subjects_at_open),
        T(test_a_promoted_follower_erases_a_subject_by_name),
        T(test_a_follower_joining_after_a_subject_erasure_knows_the_subject),
        T(test_follower_subject_errors),
        T(test_a_subject_learned_after_its_streams_were_bound),
        T(test_follower_key_errors),
        T(test_follower_refuses_sealed_records_that_do_not_fit),
        T(test_a_follower_key_store_that_cannot_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

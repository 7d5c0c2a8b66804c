/*
 * test_store_journal — the durable append path (server/store/journal.c):
 * what a crashed process left is brought back by the next open, a clean
 * close leaves nothing to replay, writes that are not appends are durable
 * through a checkpoint, and a journal that does not belong to its data file
 * (or lost it) is refused with a message naming the damage.
 *
 * A crash is a forked child that opens the store, writes and _exits without
 * closing it: its LMDB commits (never synced) and journal entries are in
 * the page cache, LMDB's meta pages are later than the last checkpoint, so
 * the next open must restore the checkpoint's meta and replay the entries.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store_fixture.h"

#define RING (64u * 1024u)

static store *jopen(const char *path)
{
    store_options o = {.path = path,
                       .map_size = TEST_MAP_SIZE,
                       .sync = true,
                       .sync_method = STORE_SYNC_JOURNAL,
                       .journal_bytes = RING};
    return open_opts(&o);
}

static es_err jtry(const char *path, char *msg, size_t len)
{
    store_options o = {.path = path,
                       .map_size = TEST_MAP_SIZE,
                       .sync = true,
                       .sync_method = STORE_SYNC_JOURNAL,
                       .journal_bytes = RING};
    store *s = NULL;
    es_err rv = store_open(&o, &s, msg, len);
    store_close(s);
    return rv;
}

/* In a child: open, append n events to each of k streams (one append each),
 * optionally save a snapshot and delete a stream, then _exit without a close. */
static void crash_child(fx *f, int streams, int per_stream, bool extra)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store *s = jopen(f->path);
        for (int k = 0; k < streams; k++) {
            char name[32];
            snprintf(name, sizeof name, "j-%d", k);
            evset e;
            evset_make(&e, f, (size_t)per_stream, "T");
            store_append_result res;
            if (append_ev(s, name, STORE_EXPECT_ANY, 0, &e, &res) != ES_OK) {
                _exit(2);
            }
            evset_free(&e);
        }
        if (extra) {
            if (store_save_snapshot(s, U8("j-0"), 3, 0, 7, U8("state"), 5) != ES_OK) {
                _exit(3);
            }
            store_life_op op = {.kind = STORE_LIFE_TOMBSTONE, .stream = U8("j-1"), .stream_len = 3};
            if (store_life_apply(s, &op) != ES_OK || !op.synced) {
                _exit(4);
            }
        }
        _exit(0); /* no store_close: no last checkpoint */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The ids the child used: keep the parent's counter past them. */
    f->next_id += (uint64_t)streams * (uint64_t)per_stream;
}

static void test_clean_close_replays_nothing(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    store_journal_stats js;
    store_journal_stats_get(f->s, &js);
    assert_true(js.enabled);
    assert_int_equal(js.checkpoints, 1); /* the first, at open */
    add(f, "a", 3);
    add(f, "b", 2);
    store_journal_stats_get(f->s, &js);
    assert_int_equal(js.entries, 2);
    assert_int_equal(js.syncs, 2 + 2); /* one per entry, two for the checkpoint */
    store_close(f->s);
    f->s = jopen(f->path);
    store_journal_stats_get(f->s, &js);
    assert_int_equal(js.replayed_entries, 0);
    assert_false(js.meta_restored);
    assert_int_equal(store_head(f->s), 5);
    assert_check_clean(f->s);
}

static void test_crash_is_replayed(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    add(f, "before", 2);
    store_close(f->s);
    f->s = NULL;
    crash_child(f, 20, 3, false);
    f->s = jopen(f->path);
    store_journal_stats js;
    store_journal_stats_get(f->s, &js);
    assert_true(js.meta_restored);
    assert_true(js.replayed_entries >= 1);
    assert_int_equal(store_head(f->s), 2 + 60);
    for (int k = 0; k < 20; k++) {
        char name[32];
        snprintf(name, sizeof name, "j-%d", k);
        assert_int_equal(last_rev(f->s, name), 2);
    }
    assert_check_clean(f->s);
    /* Appends go on from there, and the next open replays nothing new. */
    add(f, "after", 1);
    store_close(f->s);
    f->s = jopen(f->path);
    store_journal_stats_get(f->s, &js);
    assert_int_equal(js.replayed_entries, 0);
    assert_int_equal(store_head(f->s), 63);
    assert_check_clean(f->s);
}

static void test_crash_wraps_the_ring(void **state)
{
    fx *f = *state;
    /* 700 entries of ~140 bytes: the 64 KiB ring wraps and checkpoints run. */
    crash_child(f, 700, 1, false);
    f->s = jopen(f->path);
    assert_int_equal(store_head(f->s), 700);
    assert_check_clean(f->s);
}

static void test_snapshot_and_lifecycle_survive(void **state)
{
    fx *f = *state;
    crash_child(f, 3, 1, true);
    f->s = jopen(f->path);
    store_snapshot snap;
    assert_rv(ES_OK, store_load_snapshot(f->s, U8("j-0"), 3, &snap));
    assert_int_equal(snap.state_format, 7);
    free(snap.data);
    store_stream_info info;
    assert_rv(ES_ERR_STREAM_DELETED, store_stream_info_get(f->s, U8("j-1"), 3, &info));
    assert_check_clean(f->s);
}

static void test_torn_last_entry_is_dropped(void **state)
{
    fx *f = *state;
    crash_child(f, 5, 2, false);
    /* Damage the last entry's payload, as a write that never reached the
     * disk whole: its batch was never acknowledged, so it is dropped. */
    char p[700];
    snprintf(p, sizeof p, "%s/journal", f->path);
    size_t len;
    uint8_t *j = read_file(p, &len);
    assert_non_null(j);
    size_t last = 0;
    for (size_t off = 8192; off + 8 <= len; off += 8) {
        if (!memcmp(j + off, "ESJE", 4)) {
            last = off;
        }
    }
    assert_true(last > 0);
    j[last + 60] ^= 0x55;
    write_file(p, j, len);
    free(j);
    f->s = jopen(f->path);
    assert_int_equal(store_head(f->s), 8); /* the fifth append's 2 events are gone */
    assert_int_equal(last_rev(f->s, "j-3"), 1);
    assert_false(stream_exists(f->s, "j-4"));
    assert_check_clean(f->s);
}

static void test_journal_without_its_data_is_refused(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    add(f, "a", 1);
    store_close(f->s);
    f->s = NULL;
    char p[700];
    snprintf(p, sizeof p, "%s/data.mdb", f->path);
    assert_int_equal(unlink(p), 0);
    char msg[512] = "";
    assert_rv(ES_ERR_CORRUPT, jtry(f->path, msg, sizeof msg));
    assert_non_null(strstr(msg, "data.mdb cannot be opened"));
}

static void test_journal_of_a_later_store_is_refused(void **state)
{
    fx *f = *state;
    /* Store A, then a copy of its data.mdb taken early, then more commits
     * and checkpoints in A: A's journal with the early copy is a mismatch. */
    f->s = jopen(f->path);
    add(f, "a", 1);
    store_close(f->s);
    f->s = NULL;
    char p[700], q[700];
    snprintf(p, sizeof p, "%s/data.mdb", f->path);
    size_t len;
    uint8_t *early = read_file(p, &len);
    assert_non_null(early);
    f->s = jopen(f->path);
    for (int i = 0; i < 5; i++) {
        add(f, "a", 1);
        store_close(f->s);
        f->s = jopen(f->path);
    }
    store_close(f->s);
    f->s = NULL;
    snprintf(q, sizeof q, "%s/lock.mdb", f->path);
    unlink(q);
    write_file(p, early, len);
    free(early);
    char msg[512] = "";
    assert_rv(ES_ERR_CORRUPT, jtry(f->path, msg, sizeof msg));
    assert_non_null(strstr(msg, "older than the journal's checkpoint"));
}

static void test_lmdb_method_has_no_journal(void **state)
{
    fx *f = *state;
    store_options o = {
        .path = f->path, .map_size = TEST_MAP_SIZE, .sync = true, .sync_method = STORE_SYNC_LMDB};
    f->s = open_opts(&o);
    store_journal_stats js;
    store_journal_stats_get(f->s, &js);
    assert_false(js.enabled);
    store_append_result r = add(f, "a", 1);
    (void)r;
    char p[700];
    snprintf(p, sizeof p, "%s/journal", f->path);
    struct stat st;
    assert_int_not_equal(stat(p, &st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_clean_close_replays_nothing),
        T(test_crash_is_replayed),
        T(test_crash_wraps_the_ring),
        T(test_snapshot_and_lifecycle_survive),
        T(test_torn_last_entry_is_dropped),
        T(test_journal_without_its_data_is_refused),
        T(test_journal_of_a_later_store_is_refused),
        T(test_lmdb_method_has_no_journal),
    };
    return cmocka_run_group_tests_name("store_journal", tests, NULL, NULL);
}

/*
 * test_store_group_journal — consumer-group state through the journal
 * (server/store/groups.c, journal.c): a batch of acks, parks, unparks and
 * checkpoint moves costs one journal entry and no fdatasync of its own, not
 * a checkpoint; the next append's fdatasync makes it durable (the store
 * then says synced), and without appends the journal's timer does; what a
 * crashed process committed that way is replayed by the
 * next open, in sequence with the appends around it; a batch too big for
 * the ring is made durable by a checkpoint instead; create, update and
 * delete still checkpoint; and a group entry that does not decode or does
 * not apply is refused by the replay with a message.
 *
 * A crash is a forked child that writes and _exits without closing the
 * store (as in test_store_journal): its commits were never synced, so only
 * the journal brings them back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
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

static void create_group(store *s, const char *name)
{
    store_group_op op = {.kind = STORE_GROUP_CREATE};
    op.def.name_len = strlen(name);
    memcpy(op.def.name, name, op.def.name_len);
    op.def.ack_timeout_ms = 1000;
    op.def.max_retries = 3;
    op.def.max_in_flight = 10;
    bool synced;
    assert_rv(ES_OK, store_group_apply(s, &op, 1, &synced));
    assert_rv(ES_OK, op.rv);
    assert_true(synced);
}

static store_group_op flush_op(const char *name, uint64_t cp, const uint64_t *done, size_t n_done)
{
    store_group_op op = {.kind = STORE_GROUP_FLUSH, .checkpoint = cp};
    op.def.name_len = strlen(name);
    memcpy(op.def.name, name, op.def.name_len);
    op.done = done;
    op.n_done = n_done;
    return op;
}

typedef struct seen {
    uint64_t cp;
    uint64_t from[8], to[8];
    size_t n_done;
    uint64_t parked[256];
    char reason[256][64];
    char stream[256][64];
    size_t n_parked;
} seen;

static int def_visit(void *ctx, const store_group_def *d)
{
    seen *s = ctx;
    if (d->name_len == 1 && d->name[0] == 'g') {
        s->cp = d->checkpoint;
    }
    return 0;
}

static int done_visit(void *ctx, uint64_t from, uint64_t to)
{
    seen *s = ctx;
    assert_true(s->n_done < 8);
    s->from[s->n_done] = from;
    s->to[s->n_done++] = to;
    return 0;
}

static int parked_visit(void *ctx, const store_group_parked *p)
{
    seen *s = ctx;
    assert_true(s->n_parked < 256);
    s->parked[s->n_parked] = p->position;
    snprintf(s->reason[s->n_parked], 64, "%.*s", (int)p->reason_len, p->reason);
    snprintf(s->stream[s->n_parked], 64, "%.*s", (int)p->stream_len, (const char *)p->stream);
    s->n_parked++;
    return 0;
}

/* Group "g" as stored (its number is 1: the first group created). */
static seen look(store *s)
{
    seen out;
    memset(&out, 0, sizeof out);
    assert_rv(ES_OK, store_group_list(s, def_visit, &out));
    assert_rv(ES_OK, store_group_done(s, 1, done_visit, &out));
    assert_rv(ES_OK, store_group_parked_list(s, 1, 0, 0, parked_visit, &out, NULL));
    return out;
}

static void test_acks_cost_no_sync(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    add(f, "a-1", 10);
    create_group(f->s, "g");
    assert_true(store_group_synced(f->s));
    store_journal_stats before, after;
    store_journal_stats_get(f->s, &before);
    uint64_t done[] = {5, 6, 7};
    store_group_op op = flush_op("g", 2, done, 3);
    bool synced;
    assert_rv(ES_OK, store_group_apply(f->s, &op, 1, &synced));
    assert_rv(ES_OK, op.rv);
    store_journal_stats_get(f->s, &after);
    assert_int_equal(after.entries, before.entries + 1);
    assert_int_equal(after.unsynced_entries, before.unsynced_entries + 1);
    /* No fdatasync of its own (the timer's, 0.1 s later, if this thread
     * was descheduled that long: only then may the store say synced). */
    uint64_t timer = after.timer_syncs - before.timer_syncs;
    assert_int_equal(after.syncs, before.syncs + timer);
    assert_true(!synced || timer > 0);
    assert_int_equal(after.checkpoints, before.checkpoints);
    /* The next append's entry is fdatasynced, and the group entry before
     * it in the same file with it. */
    add(f, "a-2", 1);
    assert_true(store_group_synced(f->s));
    store_journal_stats_get(f->s, &after);
    /* Create, update and delete keep the checkpoint. */
    store_group_op up = {.kind = STORE_GROUP_UPDATE};
    up.def.name_len = 1;
    up.def.name[0] = 'g';
    up.def.ack_timeout_ms = 2000;
    up.def.max_retries = 1;
    up.def.max_in_flight = 5;
    assert_rv(ES_OK, store_group_apply(f->s, &up, 1, &synced));
    assert_true(synced);
    store_journal_stats_get(f->s, &before);
    assert_int_equal(before.checkpoints, after.checkpoints + 1);
    assert_int_equal(before.entries, after.entries);
    seen s = look(f->s);
    assert_int_equal(s.cp, 2);
    assert_int_equal(s.n_done, 1);
    assert_int_equal(s.from[0], 5);
    assert_int_equal(s.to[0], 7);
}

/* In a child: group "g" created (checkpointed), then batches journaled
 * between appends, then _exit without a close. */
static void crash_child(fx *f, bool big)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store *s = jopen(f->path);
        f->s = s; /* for add() */
        create_group(s, "g");
        bool synced;
        uint64_t d1[] = {3, 4, 8};
        store_group_op op = flush_op("g", 1, d1, 3);
        store_group_parked pk[2] = {
            {.position = 6,
             .attempts = 4,
             .parked_at_us = 77,
             .stream = U8("s-6"),
             .stream_len = 3,
             .reason = "poison",
             .reason_len = 6},
            {.position = 9,
             .attempts = 1,
             .parked_at_us = 78,
             .stream = U8("s-9"),
             .stream_len = 3,
             .reason = "parked",
             .reason_len = 6},
        };
        op.parks = pk;
        op.n_parks = 2;
        if (store_group_apply(s, &op, 1, &synced) != ES_OK || op.rv != ES_OK) {
            _exit(2);
        }
        store_append_result r = add(f, "between", 2);
        (void)r;
        /* The checkpoint passes 4; 9 is replayed and acked (unparked). */
        uint64_t unparks[] = {9};
        uint64_t d2[] = {10};
        store_group_op op2 = flush_op("g", 4, d2, 1);
        op2.unparks = unparks;
        op2.n_unparks = 1;
        /* One op of the batch for a group that does not exist: refused,
         * not journaled, the other applies. */
        store_group_op ops[2] = {flush_op("nope", 9, NULL, 0), op2};
        if (store_group_apply(s, ops, 2, &synced) != ES_OK || ops[0].rv != ES_ERR_GROUP_NOT_FOUND ||
            ops[1].rv != ES_OK) {
            _exit(3);
        }
        if (big) {
            /* More than half the ring: committed, then a checkpoint. */
            static store_group_parked many[200];
            static char reason[STORE_GROUP_REASON_MAX];
            memset(reason, 'r', sizeof reason);
            for (size_t i = 0; i < 200; i++) {
                many[i] = (store_group_parked){.position = 1000 + i,
                                               .attempts = 2,
                                               .stream = U8("big"),
                                               .stream_len = 3,
                                               .reason = reason,
                                               .reason_len = sizeof reason};
            }
            store_group_op op3 = flush_op("g", 4, NULL, 0);
            op3.parks = many;
            op3.n_parks = 200;
            store_journal_stats a, b;
            store_journal_stats_get(s, &a);
            if (store_group_apply(s, &op3, 1, &synced) != ES_OK || op3.rv != ES_OK) {
                _exit(4);
            }
            store_journal_stats_get(s, &b);
            if (b.entries != a.entries || b.checkpoints != a.checkpoints + 1) {
                _exit(5);
            }
        }
        _exit(0); /* no store_close: no last checkpoint */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    f->next_id += 2;
}

static void test_crash_replays_group_entries(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    add(f, "before", 2);
    store_close(f->s);
    f->s = NULL;
    crash_child(f, false);
    f->s = jopen(f->path);
    store_journal_stats js;
    store_journal_stats_get(f->s, &js);
    assert_true(js.meta_restored);
    assert_int_equal(js.replayed_entries, 3); /* group, append, group */
    assert_int_equal(js.replayed_events, 2);
    assert_int_equal(store_head(f->s), 4);
    seen s = look(f->s);
    assert_int_equal(s.cp, 4);
    /* 3 and 4 at or below the checkpoint: gone; 8 and 10 kept. */
    assert_int_equal(s.n_done, 2);
    assert_int_equal(s.from[0], 8);
    assert_int_equal(s.to[0], 8);
    assert_int_equal(s.from[1], 10);
    assert_int_equal(s.to[1], 10);
    assert_int_equal(s.n_parked, 1);
    assert_int_equal(s.parked[0], 6);
    assert_string_equal(s.reason[0], "poison");
    assert_string_equal(s.stream[0], "s-6");
    assert_check_clean(f->s);
    /* A clean close then leaves nothing to replay. */
    store_close(f->s);
    f->s = jopen(f->path);
    store_journal_stats_get(f->s, &js);
    assert_int_equal(js.replayed_entries, 0);
    assert_int_equal(look(f->s).cp, 4);
}

/* Without appends after it, the checkpoint thread's timer syncs the group
 * entry (within 0.1 s; waited for here up to 60 s, not timed). */
static void test_timer_syncs_group_entry(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    add(f, "a-1", 4);
    create_group(f->s, "g");
    store_journal_stats before, after;
    store_journal_stats_get(f->s, &before);
    uint64_t done[] = {2};
    store_group_op op = flush_op("g", 1, done, 1);
    bool synced;
    assert_rv(ES_OK, store_group_apply(f->s, &op, 1, &synced));
    assert_rv(ES_OK, op.rv);
    for (int i = 0; i < 6000 && !store_group_synced(f->s); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(store_group_synced(f->s));
    store_journal_stats_get(f->s, &after);
    /* Its own sync, or a periodic checkpoint's that came first. */
    assert_true(after.timer_syncs == before.timer_syncs + 1 ||
                after.checkpoints > before.checkpoints);
    assert_int_equal(after.entries, before.entries + 1);
    seen s = look(f->s);
    assert_int_equal(s.cp, 1);
    assert_int_equal(s.n_done, 1);
}

static void test_too_big_batch_checkpoints(void **state)
{
    fx *f = *state;
    crash_child(f, true);
    f->s = jopen(f->path);
    seen s = look(f->s);
    assert_int_equal(s.cp, 4);
    assert_int_equal(s.n_parked, 201); /* 6 and the 200 */
    assert_int_equal(s.parked[1], 1000);
    assert_string_equal(s.stream[200], "big");
}

static void test_replay_refuses_bad_entries(void **state)
{
    fx *f = *state;
    f->s = jopen(f->path);
    create_group(f->s, "g");
    char msg[256];
    /* A good entry: name "g", number 1, checkpoint 3, one done (5). */
    uint8_t e[64];
    memset(e, 0, sizeof e);
    size_t n = 0;
    e[n++] = 1;
    e[n++] = 0;
    e[n++] = 'g';
    e[n++] = 1; /* number, little-endian u64 */
    n += 7;
    e[n++] = 3; /* checkpoint */
    n += 7;
    e[n++] = 1; /* n_done */
    n += 3;
    n += 4; /* n_unparks */
    n += 4; /* n_parks */
    e[n++] = 5;
    n += 7;
    assert_rv(ES_ERR_CORRUPT, store_group_replay(f->s, e, n, 0, msg, sizeof msg));
    assert_rv(ES_ERR_CORRUPT, store_group_replay(f->s, e, n, 2, msg, sizeof msg));
    assert_rv(ES_ERR_CORRUPT, store_group_replay(f->s, e, n - 1, 1, msg, sizeof msg));
    assert_non_null(strstr(msg, "positions"));
    assert_rv(ES_ERR_CORRUPT, store_group_replay(f->s, e, n + 1, 1, msg, sizeof msg));
    assert_non_null(strstr(msg, "left"));
    e[3] = 2; /* a group number that is not g's: the op is refused */
    assert_rv(ES_ERR_CORRUPT, store_group_replay(f->s, e, n, 1, msg, sizeof msg));
    assert_non_null(strstr(msg, "refused"));
    assert_int_equal(look(f->s).cp, 0); /* nothing applied */
    e[3] = 1;
    assert_rv(ES_OK, store_group_replay(f->s, e, n, 1, msg, sizeof msg));
    seen s = look(f->s);
    assert_int_equal(s.cp, 3);
    assert_int_equal(s.n_done, 1);
    assert_int_equal(s.from[0], 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_acks_cost_no_sync),           T(test_timer_syncs_group_entry),
        T(test_crash_replays_group_entries), T(test_too_big_batch_checkpoints),
        T(test_replay_refuses_bad_entries),
    };
    return cmocka_run_group_tests_name("store_group_journal", tests, NULL, NULL);
}

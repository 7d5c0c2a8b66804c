/*
 * test_groups — consumer groups against the real esd, through libesclient.
 *
 *   basic        two members share three streams: every event once, each
 *                stream's events in revision order, checkpoint at the head
 *   bad_input    typed errors for unknown groups, duplicate creates and
 *                joins, absurd settings, acks of unknown positions and of
 *                another member's events -- and nothing changed by them
 *   retry_park   nack retry redelivers before the stream's next event;
 *                past max_retries the event is parked (listed with its
 *                reason) and the stream flows on; replay delivers it again
 *   park_blocks  with park_blocks the stream waits for its parked event
 *   timeout      an event not acked within the ack timeout comes again
 *   disconnect   a member's events go to another member when it leaves;
 *                after a lost connection the library joins again and the
 *                held event comes again
 *   slow_member  a member busy with one batch past the ack timeout while its
 *                next batch waits in the library: the server takes both
 *                back and another member acks them; the slow member's
 *                next batch never holds them (the GroupRevoked push), and
 *                its late ack of the one it had is NOT_IN_FLIGHT
 *   revoke_left  a member that leaves with events in flight: the
 *                GroupRevoked that follows reaches a client that no longer
 *                has the member, which goes on working
 *   restart      acked events are not delivered again after SIGTERM and
 *                after kill -9; the checkpoint never moves backwards
 *   roles        admin manages; read and write consume and look; read and
 *                write may not manage (PERMISSION_DENIED); per-group
 *                figures on the metrics page
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include "es/group.h"
#include "rel.h"
#include "support.h"

static esd_proc esd;
static const char *const esd_args[] = {"--log-level", "warn", NULL};

static void append_n(es_client *c, const char *stream, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        char data[64];
        int len = snprintf(data, sizeof data, "{\"i\":%u}", i);
        es_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = "Tick";
        ev.data = data;
        ev.data_len = (size_t)len;
        es_err rv = es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, &ev, 1, NULL);
        assert_int_equal(rv, ES_OK);
    }
}

static es_client *start(void)
{
    assert_int_equal(esd_launch(&esd, esd_args, NULL, 10000), 0);
    es_client *c = h_client(esd.address, "groups");
    assert_non_null(c);
    return c;
}

/* The next non-empty batch within a generous deadline (not a timing
 * assertion: a failure means the event never came). */
static size_t next_batch(es_group_member *m, es_recorded_event **evs)
{
    int64_t deadline = h_now_ms() + 20000;
    size_t n = 0;
    while (n == 0 && h_now_ms() < deadline) {
        es_err rv = es_group_next(m, 200, evs, &n);
        assert_int_equal(rv, ES_OK);
    }
    return n;
}

/* The group's (committed) checkpoint reaches want: it is stored by the job
 * after the acks' own, so a reader may see it a commit later. */
static void wait_checkpoint(es_client *c, const char *name, uint64_t want)
{
    int64_t deadline = h_now_ms() + 20000;
    es_group_info info;
    do {
        assert_int_equal(es_group_info_get(c, name, &info), ES_OK);
        if (info.checkpoint >= want) {
            break;
        }
        h_sleep_ms(10);
    } while (h_now_ms() < deadline);
    assert_int_equal(info.checkpoint, want);
}

/* ------------------------------------------------------------------ basic -- */

static void test_basic(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "acct-1", 20);
    append_n(c, "acct-2", 20);
    append_n(c, "other-1", 5);
    append_n(c, "acct-3", 20);
    es_group_settings set;
    es_group_settings_init(&set);
    es_err crv =
        es_group_create(c, "stmt", ES_GROUP_CATEGORY, "acct", ES_GROUP_FROM_START, 0, &set);
    if (crv != ES_OK) {
        fprintf(stderr, "create: %s\n", es_client_errmsg(c));
    }
    assert_int_equal(crv, ES_OK);

    es_client *c2 = h_client(esd.address, "groups-2");
    assert_non_null(c2);
    es_group_member *m1 = NULL, *m2 = NULL;
    assert_int_equal(es_group_join(c, "stmt", 4, "m1", &m1), ES_OK);
    assert_int_equal(es_group_join(c2, "stmt", 4, "m2", &m2), ES_OK);
    uint64_t next_rev[4] = {0};
    unsigned got = 0, from[2] = {0};
    int64_t deadline = h_now_ms() + 30000;
    while (got < 60 && h_now_ms() < deadline) {
        for (int k = 0; k < 2; k++) {
            es_group_member *m = k ? m2 : m1;
            es_recorded_event *evs;
            size_t n = 0;
            assert_int_equal(es_group_next(m, 20, &evs, &n), ES_OK);
            uint64_t pos[64];
            assert_true(n <= 4);
            for (size_t i = 0; i < n; i++) {
                int s = evs[i].stream[5] - '0';
                assert_int_equal(strncmp(evs[i].stream, "acct-", 5), 0);
                for (size_t j = 0; j < i; j++) {
                    assert_string_not_equal(evs[i].stream, evs[j].stream); /* one per stream */
                }
                assert_int_equal(evs[i].revision, next_rev[s]);
                next_rev[s]++;
                pos[i] = evs[i].position;
            }
            if (n) {
                es_err arv = es_group_ack(m, pos, n);
                if (arv != ES_OK) {
                    fprintf(stderr, "ack: %s\n", es_client_errmsg(k ? c2 : c));
                }
                assert_int_equal(arv, ES_OK);
                got += (unsigned)n;
                from[k] += (unsigned)n;
            }
        }
    }
    assert_int_equal(got, 60);
    assert_true(from[0] > 0 && from[1] > 0);
    wait_checkpoint(c, "stmt", 65);
    es_group_info info;
    assert_int_equal(es_group_info_get(c, "stmt", &info), ES_OK);
    assert_int_equal(info.lag, 0);
    assert_int_equal(info.acked, 60);
    assert_int_equal(info.members, 2);
    assert_int_equal(info.in_flight, 0);
    assert_string_equal(info.target_name, "acct");
    es_group_info *list = NULL;
    size_t nl = 0;
    assert_int_equal(es_group_list(c, &list, &nl), ES_OK);
    assert_int_equal(nl, 1);
    assert_string_equal(list[0].name, "stmt");
    free(list);
    es_group_leave(m1);
    es_group_leave(m2);
    assert_int_equal(es_group_delete(c, "stmt"), ES_OK);
    assert_int_equal(es_group_info_get(c, "stmt", &info), ES_ERR_GROUP_NOT_FOUND);
    es_client_destroy(c2);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* -------------------------------------------------------------- bad input -- */

static void test_bad_input(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "s-1", 3);
    es_group_settings set;
    es_group_settings_init(&set);
    assert_int_equal(es_group_create(c, "g", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    assert_int_equal(es_group_create(c, "g", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                     ES_ERR_GROUP_EXISTS);
    es_group_info info;
    assert_int_equal(es_group_info_get(c, "nope", &info), ES_ERR_GROUP_NOT_FOUND);
    assert_int_equal(es_group_delete(c, "nope"), ES_ERR_GROUP_NOT_FOUND);
    assert_int_equal(es_group_update(c, "nope", &set), ES_ERR_GROUP_NOT_FOUND);
    assert_int_equal(es_group_replay_parked(c, "nope", NULL), ES_ERR_GROUP_NOT_FOUND);
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "nope", 0, NULL, &m), ES_ERR_GROUP_NOT_FOUND);
    assert_null(m);

    /* Absurd settings and starts. */
    es_group_settings bad = set;
    bad.ack_timeout_ms = 1;
    assert_int_equal(es_group_create(c, "b", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &bad),
                     ES_ERR_INVALID_ARGUMENT);
    bad = set;
    bad.max_retries = 5000;
    assert_int_equal(es_group_update(c, "g", &bad), ES_ERR_INVALID_ARGUMENT);
    bad = set;
    bad.max_in_flight = 20000;
    assert_int_equal(es_group_create(c, "b", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &bad),
                     ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(es_group_create(c, "b", ES_GROUP_ALL, NULL, ES_GROUP_AFTER, 99, &set),
                     ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(es_group_create(c, "b", ES_GROUP_ALL, "x", ES_GROUP_FROM_START, 0, &set),
                     ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(es_group_create(c, "b", ES_GROUP_STREAM, "$bad", ES_GROUP_FROM_START, 0, &set),
                     ES_ERR_RESERVED_STREAM);
    assert_int_equal(es_group_create(c, "b", 9, "x", ES_GROUP_FROM_START, 0, &set),
                     ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(
        es_group_create(c, "bad\x01name", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
        ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(es_group_create(c, "", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                     ES_ERR_INVALID_ARGUMENT);
    es_group_info *list = NULL;
    size_t nl = 0;
    assert_int_equal(es_group_list(c, &list, &nl), ES_OK);
    assert_int_equal(nl, 1); /* none of the refused ones exists */
    free(list);

    /* Duplicate join on one connection. */
    assert_int_equal(es_group_join(c, "g", 1, "a", &m), ES_OK);
    es_group_member *dup = NULL;
    assert_int_equal(es_group_join(c, "g", 1, "a2", &dup), ES_ERR_ALREADY_JOINED);
    assert_null(dup);

    /* Acks of unknown positions and of another member's events. */
    es_client *c2 = h_client(esd.address, "groups-other");
    assert_non_null(c2);
    es_group_member *other = NULL;
    assert_int_equal(es_group_join(c2, "g", 1, "b", &other), ES_OK);
    es_recorded_event *evs;
    size_t n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    uint64_t mine = evs[0].position;
    uint64_t unknown = 12345;
    assert_int_equal(es_group_ack(m, &unknown, 1), ES_ERR_NOT_IN_FLIGHT);
    uint64_t pair[2] = {mine, unknown};
    assert_int_equal(es_group_ack(m, pair, 2), ES_ERR_NOT_IN_FLIGHT); /* all or nothing */
    assert_int_equal(es_group_ack(other, &mine, 1), ES_ERR_NOT_IN_FLIGHT);
    assert_int_equal(es_group_nack(other, &mine, 1, ES_NACK_PARK, "x"), ES_ERR_NOT_IN_FLIGHT);
    assert_int_equal(es_group_nack(m, &mine, 1, 7, "x"), ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(es_group_ack(m, NULL, 0), ES_ERR_INVALID_ARGUMENT);
    assert_int_equal(es_group_info_get(c, "g", &info), ES_OK);
    assert_int_equal(info.acked, 0);
    assert_int_equal(info.parked, 0);
    assert_int_equal(info.in_flight, 1);
    /* Nothing changed: the owner still acks it. */
    assert_int_equal(es_group_ack(m, &mine, 1), ES_OK);
    assert_int_equal(es_group_ack(m, &mine, 1), ES_ERR_NOT_IN_FLIGHT); /* acked already */
    es_group_leave(other);
    es_group_leave(m);
    es_client_destroy(c2);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* ------------------------------------------------------------ retry, park -- */

static void test_retry_park(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "p-1", 2);
    es_group_settings set;
    es_group_settings_init(&set);
    set.max_retries = 1;
    assert_int_equal(es_group_create(c, "rp", ES_GROUP_STREAM, "p-1", ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "rp", 10, "m", &m), ES_OK);
    es_recorded_event *evs;
    /* Delivery 1 and the retry: revision 0, and never revision 1 with it. */
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t n = next_batch(m, &evs);
        assert_int_equal(n, 1);
        assert_int_equal(evs[0].revision, 0);
        uint64_t p = evs[0].position;
        assert_int_equal(es_group_nack(m, &p, 1, ES_NACK_RETRY, "try again"), ES_OK);
    }
    /* Past max_retries: parked; the stream flows on. */
    size_t n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].revision, 1);
    uint64_t p1 = evs[0].position;
    assert_int_equal(es_group_ack(m, &p1, 1), ES_OK);
    es_group_parked *parked = NULL;
    size_t np = 0;
    bool more = true;
    assert_int_equal(es_group_parked_list(c, "rp", 0, 0, &parked, &np, &more), ES_OK);
    assert_int_equal(np, 1);
    assert_false(more);
    assert_int_equal(parked[0].position, 1);
    assert_string_equal(parked[0].stream, "p-1");
    assert_string_equal(parked[0].reason, "try again");
    assert_int_equal(parked[0].attempts, 2);
    free(parked);
    wait_checkpoint(c, "rp", 2); /* a parked event is done for the checkpoint */
    es_group_info info;
    assert_int_equal(es_group_info_get(c, "rp", &info), ES_OK);
    assert_int_equal(info.parked, 1);
    assert_int_equal(info.retries, 1);

    /* Replay: delivered again; acked, it leaves the parked list. */
    uint32_t count = 0;
    assert_int_equal(es_group_replay_parked(c, "rp", &count), ES_OK);
    assert_int_equal(count, 1);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].revision, 0);
    uint64_t p0 = evs[0].position;
    assert_int_equal(es_group_ack(m, &p0, 1), ES_OK);
    assert_int_equal(es_group_parked_list(c, "rp", 0, 0, &parked, &np, &more), ES_OK);
    assert_int_equal(np, 0);
    free(parked);
    assert_int_equal(es_group_info_get(c, "rp", &info), ES_OK);
    assert_int_equal(info.parked, 0);

    /* Park and skip on request. */
    append_n(c, "p-1", 2);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    uint64_t p = evs[0].position;
    assert_int_equal(es_group_nack(m, &p, 1, ES_NACK_PARK, "poison"), ES_OK);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    p = evs[0].position;
    assert_int_equal(es_group_nack(m, &p, 1, ES_NACK_SKIP, NULL), ES_OK);
    wait_checkpoint(c, "rp", 4);
    assert_int_equal(es_group_info_get(c, "rp", &info), ES_OK);
    assert_int_equal(info.parked, 1);
    es_group_leave(m);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* ------------------------------------------------------------ park_blocks -- */

static void test_park_blocks(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "k-1", 2);
    es_group_settings set;
    es_group_settings_init(&set);
    set.park_blocks = true;
    assert_int_equal(es_group_create(c, "pb", ES_GROUP_CATEGORY, "k", ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "pb", 10, "m", &m), ES_OK);
    es_recorded_event *evs;
    size_t n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    uint64_t p = evs[0].position;
    assert_int_equal(es_group_nack(m, &p, 1, ES_NACK_PARK, "hold"), ES_OK);
    /* Another stream flows; k-1 waits. */
    append_n(c, "k-2", 1);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_string_equal(evs[0].stream, "k-2");
    p = evs[0].position;
    assert_int_equal(es_group_ack(m, &p, 1), ES_OK);
    es_group_info info;
    assert_int_equal(es_group_info_get(c, "pb", &info), ES_OK);
    assert_int_equal(info.in_flight, 0); /* k-1's revision 1 is held back */
    assert_int_equal(es_group_replay_parked(c, "pb", NULL), ES_OK);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_string_equal(evs[0].stream, "k-1");
    assert_int_equal(evs[0].revision, 0);
    p = evs[0].position;
    assert_int_equal(es_group_ack(m, &p, 1), ES_OK);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].revision, 1);
    es_group_leave(m);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* ---------------------------------------------------- timeout, disconnect -- */

static void test_timeout(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "t-1", 2);
    es_group_settings set;
    es_group_settings_init(&set);
    set.ack_timeout_ms = 200;
    assert_int_equal(es_group_create(c, "to", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "to", 10, "m", &m), ES_OK);
    es_recorded_event *evs;
    size_t n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    uint64_t first = evs[0].position;
    /* Not acked: it comes again, before revision 1. */
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].position, first);
    assert_int_equal(es_group_ack(m, &first, 1), ES_OK);
    n = next_batch(m, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].revision, 1);
    es_group_info info;
    assert_int_equal(es_group_info_get(c, "to", &info), ES_OK);
    assert_true(info.retries >= 1);
    es_group_leave(m);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

static void test_disconnect(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "d-1", 1);
    assert_int_equal(es_group_create(c, "dc", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, NULL),
                     ES_OK);
    es_client *c1 = h_client(esd.address, "first");
    assert_non_null(c1);
    es_group_member *m1 = NULL, *m2 = NULL;
    assert_int_equal(es_group_join(c1, "dc", 10, "first", &m1), ES_OK);
    es_recorded_event *evs;
    size_t n = next_batch(m1, &evs);
    assert_int_equal(n, 1);
    uint64_t p = evs[0].position;
    assert_int_equal(es_group_join(c, "dc", 10, "second", &m2), ES_OK);
    es_group_leave(m1);
    es_client_destroy(c1); /* the connection ends: its event goes back */
    n = next_batch(m2, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].position, p);
    assert_int_equal(es_group_ack(m2, &p, 1), ES_OK);

    /* The library rejoins after a lost connection: the event held then
     * comes again, and the old delivery's ack is refused. */
    append_n(c, "d-1", 1);
    n = next_batch(m2, &evs);
    assert_int_equal(n, 1);
    uint64_t held = evs[0].position;
    es_client_disconnect(c);
    assert_int_equal(es_group_ack(m2, &held, 1), ES_ERR_NOT_IN_FLIGHT);
    n = next_batch(m2, &evs); /* reconnects and joins again */
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].position, held);
    assert_int_equal(es_group_ack(m2, &held, 1), ES_OK);
    es_group_leave(m2);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* ------------------------------------------------------------ slow member -- */

/* The group's figures once in_flight reaches want (20 s at most). */
static es_group_info wait_in_flight(es_client *c, const char *name, uint32_t want)
{
    int64_t deadline = h_now_ms() + 20000;
    es_group_info info;
    for (;;) {
        assert_int_equal(es_group_info_get(c, name, &info), ES_OK);
        if (info.in_flight == want || h_now_ms() >= deadline) {
            break;
        }
        h_sleep_ms(10);
    }
    assert_int_equal(info.in_flight, want);
    return info;
}

static void test_slow_member(void **state)
{
    (void)state;
    es_client *c = start();
    es_group_settings set;
    es_group_settings_init(&set);
    set.ack_timeout_ms = 300;
    set.max_retries = 1000; /* timeouts here are the point: never parked */
    assert_int_equal(es_group_create(c, "slow", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    es_client *ca = h_client(esd.address, "slow-a");
    es_client *cb = h_client(esd.address, "slow-b");
    assert_non_null(ca);
    assert_non_null(cb);
    es_group_member *a = NULL, *b = NULL;
    assert_int_equal(es_group_join(ca, "slow", 10, "a", &a), ES_OK);

    /* a's application takes a first batch ... */
    append_n(c, "slow-1", 1);
    es_recorded_event *evs;
    size_t n = next_batch(a, &evs);
    assert_int_equal(n, 1);
    uint64_t p1 = evs[0].position;
    /* ... and the server pushes a second one (a is its only member),
     * which waits in a's library: a is busy and does not read. */
    append_n(c, "slow-2", 1);
    es_group_info info = wait_in_flight(c, "slow", 2);
    uint64_t p2 = info.head_position;
    assert_int_not_equal(p1, p2);

    /* a stays busy past the ack timeout: both events are taken back and
     * come to b (maybe after going round a again), which acks them. */
    assert_int_equal(es_group_join(cb, "slow", 10, "b", &b), ES_OK);
    bool acked1 = false, acked2 = false;
    while (!acked1 || !acked2) {
        n = next_batch(b, &evs);
        assert_true(n >= 1);
        for (size_t i = 0; i < n; i++) {
            uint64_t p = evs[i].position;
            assert_true(p == p1 || p == p2);
            es_err rv = es_group_ack(b, &p, 1);
            /* Refused only if b itself was slower than the ack timeout:
             * it comes again. */
            assert_true(rv == ES_OK || rv == ES_ERR_NOT_IN_FLIGHT);
            if (rv == ES_OK) {
                acked1 |= p == p1;
                acked2 |= p == p2;
            }
        }
    }
    es_group_leave(b);

    /* a's late ack of the event it had is refused; its queued second batch
     * is gone: the next batch a's application gets is the new event only. */
    assert_int_equal(es_group_ack(a, &p1, 1), ES_ERR_NOT_IN_FLIGHT);
    append_n(c, "slow-2", 1);
    assert_int_equal(es_group_info_get(c, "slow", &info), ES_OK);
    uint64_t p3 = info.head_position;
    n = next_batch(a, &evs);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].position, p3);
    assert_int_equal(evs[0].revision, 1);
    assert_int_equal(es_group_ack(a, &p3, 1), ES_OK);
    uint64_t pushes = 0, dropped = 0;
    es_group_revoked(a, &pushes, &dropped);
    assert_true(pushes >= 1);
    assert_true(dropped >= 1); /* p2, at least once */
    wait_checkpoint(c, "slow", p3);
    es_group_leave(a);
    es_client_destroy(ca);
    es_client_destroy(cb);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

static void test_revoke_left(void **state)
{
    (void)state;
    es_client *c = start();
    append_n(c, "left-1", 1);
    assert_int_equal(es_group_create(c, "left", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, NULL),
                     ES_OK);
    es_client *ca = h_client(esd.address, "left-a");
    assert_non_null(ca);
    es_group_member *a = NULL;
    assert_int_equal(es_group_join(ca, "left", 10, "a", &a), ES_OK);
    es_recorded_event *evs;
    assert_int_equal(next_batch(a, &evs), 1);
    uint64_t p = evs[0].position;
    es_group_leave(a); /* with p in flight: the server names it in a GroupRevoked */
    /* The client reads that push for a member it no longer has and goes
     * on; the event is back with the group, and comes to a new member. */
    wait_in_flight(ca, "left", 0);
    assert_int_equal(es_client_ping(ca, NULL), ES_OK);
    assert_int_equal(es_group_join(ca, "left", 10, "a2", &a), ES_OK);
    assert_int_equal(next_batch(a, &evs), 1);
    assert_int_equal(evs[0].position, p);
    assert_int_equal(es_group_ack(a, &p, 1), ES_OK);
    es_group_leave(a);
    es_client_destroy(ca);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* ---------------------------------------------------------------- restart -- */

/* Consume up to `want` events, acking them; record what was acked. */
static void consume(es_group_member *m, unsigned want, uint8_t *acked, uint64_t max_pos)
{
    unsigned got = 0;
    while (got < want) {
        es_recorded_event *evs;
        size_t n = next_batch(m, &evs);
        assert_true(n > 0);
        uint64_t pos[64];
        size_t k = 0;
        for (size_t i = 0; i < n && got < want; i++, got++) {
            assert_true(evs[i].position <= max_pos);
            assert_int_equal(acked[evs[i].position], 0); /* never after its ack */
            pos[k++] = evs[i].position;
        }
        if (k < n) {
            uint64_t rest[64];
            for (size_t i = k; i < n; i++) {
                rest[i - k] = evs[i].position;
            }
            assert_int_equal(es_group_nack(m, rest, n - k, ES_NACK_RETRY, NULL), ES_OK);
        }
        assert_int_equal(es_group_ack(m, pos, k), ES_OK);
        for (size_t i = 0; i < k; i++) {
            acked[pos[i]] = 1;
        }
    }
}

static void test_restart(void **state)
{
    (void)state;
    es_client *c = start();
    for (int s = 0; s < 10; s++) {
        char name[32];
        snprintf(name, sizeof name, "r-%d", s);
        append_n(c, name, 30);
    }
    es_group_settings set;
    es_group_settings_init(&set);
    set.max_retries = 100;
    assert_int_equal(es_group_create(c, "rs", ES_GROUP_CATEGORY, "r", ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    uint8_t acked[301] = {0};
    uint64_t last_cp = 0;
    for (int round = 0; round < 3; round++) {
        es_group_member *m = NULL;
        assert_int_equal(es_group_join(c, "rs", 8, "m", &m), ES_OK);
        consume(m, 60, acked, 300);
        es_group_info info;
        assert_int_equal(es_group_info_get(c, "rs", &info), ES_OK);
        assert_true(info.checkpoint >= last_cp);
        es_group_leave(m);
        es_client_destroy(c);
        /* SIGTERM, then kill -9, then SIGTERM. */
        assert_int_equal(esd_stop(&esd, round == 1 ? SIGKILL : SIGTERM, 10000, NULL, NULL), 0);
        assert_int_equal(esd_start(&esd, 10000), 0);
        c = h_client(esd.address, "groups-restarted");
        assert_non_null(c);
        es_group_info after;
        assert_int_equal(es_group_info_get(c, "rs", &after), ES_OK);
        assert_true(after.checkpoint >= last_cp);
        last_cp = after.checkpoint;
    }
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "rs", 8, "m", &m), ES_OK);
    consume(m, 120, acked, 300); /* the rest, none of them acked before */
    wait_checkpoint(c, "rs", 300);
    for (uint64_t p = 1; p <= 300; p++) {
        assert_int_equal(acked[p], 1);
    }
    es_group_leave(m);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

/* ------------------------------------------------------------------ roles -- */

#define T_ADMIN  "grp-admin-Zq8uP1vR7cLm"
#define T_WRITER "grp-writer-Hk3nW9xB2dTe"
#define T_READER "grp-reader-Jy6gF4sA0pQo"

static es_client *client_as(const char *user, const char *token)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = esd.address;
    o.client_name = user;
    o.user = user;
    o.token = (const uint8_t *)token;
    o.token_len = strlen(token);
    o.reconnect_attempts = 1;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    assert_int_equal(es_client_create(&o, &c), ES_OK);
    assert_int_equal(es_client_connect(c), ES_OK);
    return c;
}

static void test_roles(void **state)
{
    (void)state;
    assert_int_equal(esd_init(&esd, esd_args), 0);
    char users[400];
    snprintf(users, sizeof users, "%s/users", esd.dir);
    FILE *f = fopen(users, "w");
    assert_non_null(f);
    fprintf(f, "admin admin " T_ADMIN "\nwriter write " T_WRITER "\nreader read " T_READER "\n");
    fclose(f);
    assert_int_equal(chmod(users, 0600), 0);
    const char *const more[] = {
        "--auth-file", users, "--metrics-listen", "127.0.0.1:0", "--log-level", "info", NULL};
    assert_int_equal(esd_add_args(&esd, more), 0);
    assert_int_equal(esd_start(&esd, 10000), 0);
    es_client *admin = client_as("admin", T_ADMIN);
    es_client *writer = client_as("writer", T_WRITER);
    es_client *reader = client_as("reader", T_READER);
    append_n(admin, "role-1", 2);
    es_group_settings set;
    es_group_settings_init(&set);
    for (int k = 0; k < 2; k++) {
        es_client *c = k ? writer : reader;
        assert_int_equal(es_group_create(c, "r", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                         ES_ERR_PERMISSION_DENIED);
    }
    assert_int_equal(es_group_create(admin, "r", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, &set),
                     ES_OK);
    for (int k = 0; k < 2; k++) {
        es_client *c = k ? writer : reader;
        assert_int_equal(es_group_update(c, "r", &set), ES_ERR_PERMISSION_DENIED);
        assert_int_equal(es_group_delete(c, "r"), ES_ERR_PERMISSION_DENIED);
        assert_int_equal(es_group_replay_parked(c, "r", NULL), ES_ERR_PERMISSION_DENIED);
        es_group_info info;
        assert_int_equal(es_group_info_get(c, "r", &info), ES_OK);
        es_group_parked *p = NULL;
        size_t np = 0;
        assert_int_equal(es_group_parked_list(c, "r", 0, 0, &p, &np, NULL), ES_OK);
        free(p);
    }
    /* Both consume: a reader and a writer member each ack an event. */
    es_group_member *mr = NULL, *mw = NULL;
    assert_int_equal(es_group_join(reader, "r", 1, "reader", &mr), ES_OK);
    es_recorded_event *evs;
    size_t n = next_batch(mr, &evs);
    assert_int_equal(n, 1);
    uint64_t p = evs[0].position;
    assert_int_equal(es_group_ack(mr, &p, 1), ES_OK);
    es_group_leave(mr);
    assert_int_equal(es_group_join(writer, "r", 1, "writer", &mw), ES_OK);
    n = next_batch(mw, &evs);
    assert_int_equal(n, 1);
    p = evs[0].position;
    assert_int_equal(es_group_ack(mw, &p, 1), ES_OK);
    wait_checkpoint(admin, "r", 2);
    es_group_info info;
    assert_int_equal(es_group_info_get(admin, "r", &info), ES_OK);
    assert_int_equal(info.acked, 2);

    /* The metrics page has the group's figures. */
    uint16_t mport = esd_metrics_port(&esd, 10000);
    assert_true(mport != 0);
    int code = 0;
    char *body = NULL;
    assert_int_equal(h_http(mport, "GET", "/metrics", &code, &body), 0);
    assert_int_equal(code, 200);
    assert_non_null(strstr(body, "esd_group_acked_total{group=\"r\"} 2"));
    assert_non_null(strstr(body, "esd_group_members{group=\"r\"} 1"));
    assert_non_null(strstr(body, "esd_group_lag_events{group=\"r\"} 0"));
    free(body);
    es_group_leave(mw);
    es_client_destroy(admin);
    es_client_destroy(writer);
    es_client_destroy(reader);
    assert_int_equal(esd_finish(&esd, 10000), 0);
}

static int teardown(void **state)
{
    (void)state;
    esd_end(&esd, 10000);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_basic, teardown),
        cmocka_unit_test_teardown(test_bad_input, teardown),
        cmocka_unit_test_teardown(test_retry_park, teardown),
        cmocka_unit_test_teardown(test_park_blocks, teardown),
        cmocka_unit_test_teardown(test_timeout, teardown),
        cmocka_unit_test_teardown(test_disconnect, teardown),
        cmocka_unit_test_teardown(test_slow_member, teardown),
        cmocka_unit_test_teardown(test_revoke_left, teardown),
        cmocka_unit_test_teardown(test_restart, teardown),
        cmocka_unit_test_teardown(test_roles, teardown),
    };
    return cmocka_run_group_tests_name("groups", tests, NULL, NULL);
}

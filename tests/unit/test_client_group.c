/*
 * test_client_group — libesclient's group member across a lost connection
 * (client/group.c), against the fake server:
 *
 *   stale_batch  a batch pushed just before the server closed the
 *                connection is still queued in the client when the
 *                application asks for the next batch: it is NOT handed
 *                out (the server took those events back when the
 *                connection ended, and may have given them to another
 *                member already); the member joins again on a new
 *                connection and the batch pushed there comes out.
 *
 *   revoked     GroupRevoked pushes: the revoked events are dropped from
 *               the batches queued in the client (one event out of a
 *               batch, a whole batch), not from the batch already handed
 *               out (its ack answers NOT_IN_FLIGHT) nor from a push that
 *               came after the revoke (the same position delivered anew);
 *               a GroupRevoked that does not decode drops every queued
 *               batch (they come again after their ack timeout); one for
 *               a member that left is dropped, and the client goes on.
 *
 * The script of the first connection closes it only after the client has
 * the push queued (es_group_join read it with the join's reply, or the
 * test's wait for the close); the test waits for that close with a
 * deadline, never a sleep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "es/client.h"
#include "es/group.h"
#include "fake_server.h"
#include "internal.h"

typedef struct script_ctx {
    atomic_int first_closed;
    atomic_uint acks_second; /* positions acked on the second connection */
    uint64_t acked_pos;
} script_ctx;

/* One GroupEvents push of n events at the given positions, each of its own
 * stream ("s-POS", revision 0). */
static bool push_batch(int fd, uint64_t join_id, const uint64_t *pos, size_t n)
{
    Es__V1__RecordedEvent ev[8];
    Es__V1__RecordedEvent *evs[8];
    char names[8][16];
    uint8_t ids[8][16];
    if (n > 8) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        es__v1__recorded_event__init(&ev[i]);
        int len = snprintf(names[i], sizeof names[i], "s-%u", (unsigned)pos[i]);
        ev[i].stream.data = (uint8_t *)names[i];
        ev[i].stream.len = (size_t)len;
        ev[i].revision = 0;
        ev[i].position = pos[i];
        memset(ids[i], 0, sizeof ids[i]);
        ids[i][15] = (uint8_t)pos[i];
        ev[i].id.data = ids[i];
        ev[i].id.len = 16;
        ev[i].type.data = (uint8_t *)"T";
        ev[i].type.len = 1;
        evs[i] = &ev[i];
    }
    Es__V1__GroupEvents ge = ES__V1__GROUP_EVENTS__INIT;
    ge.n_events = n;
    ge.events = evs;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = join_id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_EVENTS;
    resp.group_events = &ge;
    return srv_send(fd, &resp);
}

static bool push_one(int fd, uint64_t join_id, uint64_t pos)
{
    return push_batch(fd, join_id, &pos, 1);
}

/* A GroupDone (synced) answering request id. */
static bool send_done(int fd, uint64_t id, uint32_t count)
{
    Es__V1__GroupDone d = ES__V1__GROUP_DONE__INIT;
    d.synced = true;
    d.count = count;
    Es__V1__Response ok = ES__V1__RESPONSE__INIT;
    ok.id = id;
    ok.kind_case = ES__V1__RESPONSE__KIND_GROUP_DONE;
    ok.group_done = &d;
    return srv_send(fd, &ok);
}

/* The hello, then the JoinGroup, answered (max in flight 10).
 * @return its id, or 0 when either went wrong. */
static uint64_t srv_join(fake *f, int fd)
{
    if (!srv_hello(f, fd)) {
        return 0;
    }
    Es__V1__Request *r = srv_recv(fd);
    SRV_CHECK(f, r && r->kind_case == ES__V1__REQUEST__KIND_JOIN_GROUP);
    if (!r || r->kind_case != ES__V1__REQUEST__KIND_JOIN_GROUP) {
        srv_free(r);
        return 0;
    }
    uint64_t join_id = r->id;
    srv_free(r);
    Es__V1__GroupJoined j = ES__V1__GROUP_JOINED__INIT;
    j.max_in_flight = 10;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = join_id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_JOINED;
    resp.group_joined = &j;
    SRV_CHECK(f, srv_send(fd, &resp));
    return join_id;
}

/* Each connection: hello, the JoinGroup answered and one event pushed
 * (position 7 on the first, 9 on the second). The first then closes; the
 * second answers acks until the client goes. */
static void script_stale(fake *f, int fd, unsigned conn_no)
{
    script_ctx *sc = f->ctx;
    uint64_t join_id = srv_join(f, fd);
    if (!join_id) {
        return;
    }
    Es__V1__Request *r;
    /* Reply and push back to back, so the client reads both together. */
    SRV_CHECK(f, push_one(fd, join_id, conn_no == 1 ? 7 : 9));
    if (conn_no == 1) {
        shutdown(fd, SHUT_RDWR);
        atomic_store(&sc->first_closed, 1);
        return;
    }
    while ((r = srv_recv(fd)) != NULL) {
        if (r->kind_case == ES__V1__REQUEST__KIND_GROUP_ACK && r->group_ack->n_positions == 1) {
            sc->acked_pos = r->group_ack->positions[0];
            atomic_fetch_add(&sc->acks_second, 1);
            SRV_CHECK(f, send_done(fd, r->id, 1));
        }
        srv_free(r);
    }
}

static uint64_t now_us(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void no_sleep(void *ctx, uint64_t us)
{
    (void)ctx;
    (void)us; /* the backoff before reconnecting: not waited for here */
}

static void test_stale_batch(void **state)
{
    (void)state;
    script_ctx sc = {0};
    fake f;
    fake_start(&f, script_stale, &sc);
    es_client_options o;
    es_client_options_init(&o);
    o.address = f.addr;
    es_client *c = NULL;
    assert_int_equal(es_client_create(&o, &c), ES_OK);
    cl_set_hooks(c, now_us, no_sleep, NULL);
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "g", 0, NULL, &m), ES_OK);
    for (int i = 0; i < 10000 && !atomic_load(&sc.first_closed); i++) {
        poll(NULL, 0, 1); /* waiting for a condition, with a deadline (10 s) */
    }
    assert_true(atomic_load(&sc.first_closed));
    es_recorded_event *evs = NULL;
    size_t n = 0;
    assert_int_equal(es_group_next(m, 5000, &evs, &n), ES_OK);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].position, 9); /* never 7: that one was taken back */
    assert_int_equal(es_group_ack(m, &evs[0].position, 1), ES_OK);
    assert_int_equal(atomic_load(&sc.acks_second), 1);
    assert_int_equal(sc.acked_pos, 9);
    es_group_leave(m);
    es_client_destroy(c);
    fake_stop(&f);
    assert_true(atomic_load(&f.accepts) >= 2);
}

/* ---------------------------------------------------------------- revoked -- */

static bool send_revoked(int fd, uint64_t join_id, const uint64_t *pos, size_t n)
{
    Es__V1__GroupRevoked r = ES__V1__GROUP_REVOKED__INIT;
    r.name.data = (uint8_t *)"g";
    r.name.len = 1;
    r.positions = (uint64_t *)pos;
    r.n_positions = n;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = join_id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_REVOKED;
    resp.group_revoked = &r;
    return srv_send(fd, &resp);
}

/* The next request, which must be a GroupAck of exactly pos; NULL otherwise. */
static Es__V1__Request *recv_ack_of(fake *f, int fd, uint64_t pos)
{
    Es__V1__Request *r = srv_recv(fd);
    bool ok = r && r->kind_case == ES__V1__REQUEST__KIND_GROUP_ACK &&
              r->group_ack->n_positions == 1 && r->group_ack->positions[0] == pos;
    SRV_CHECK(f, ok);
    if (!ok) {
        srv_free(r);
        return NULL;
    }
    return r;
}

/*
 * One connection:
 *   join answered, then pushes [7], [8 10], [11];
 *   ack 7 -> GroupRevoked {11, 7, 8} (unsorted), push [8] (delivered anew
 *            after the revoke), then NOT_IN_FLIGHT for the ack;
 *   ack 10, ack 8 -> done; after the ack of 8: push [12], a GroupRevoked
 *            that does not decode, push [13], then done;
 *   ack 13 -> done;
 *   Unsubscribe -> a GroupRevoked {13} for the membership just left, and
 *            the reply; then pings are answered.
 */
static void script_revoked(fake *f, int fd, unsigned conn_no)
{
    (void)conn_no;
    uint64_t join_id = srv_join(f, fd);
    if (!join_id) {
        return;
    }
    Es__V1__Request *r;
    SRV_CHECK(f, push_batch(fd, join_id, (const uint64_t[]){7}, 1));
    SRV_CHECK(f, push_batch(fd, join_id, (const uint64_t[]){8, 10}, 2));
    SRV_CHECK(f, push_batch(fd, join_id, (const uint64_t[]){11}, 1));

    if ((r = recv_ack_of(f, fd, 7)) == NULL) {
        return;
    }
    SRV_CHECK(f, send_revoked(fd, join_id, (const uint64_t[]){11, 7, 8}, 3));
    SRV_CHECK(f, push_one(fd, join_id, 8));
    SRV_CHECK(f, srv_error(fd, r->id, ES__V1__ERROR_CODE__ERROR_CODE_NOT_IN_FLIGHT, "taken back"));
    srv_free(r);

    if ((r = recv_ack_of(f, fd, 10)) == NULL) {
        return;
    }
    SRV_CHECK(f, send_done(fd, r->id, 1));
    srv_free(r);
    if ((r = recv_ack_of(f, fd, 8)) == NULL) {
        return;
    }
    SRV_CHECK(f, push_one(fd, join_id, 12));
    /* A Response {id, group_revoked = 62: {positions: 5 bytes announced, 1 there}}. */
    uint8_t bad[] = {0, 0, 0, 0, 0x08, (uint8_t)join_id, 0xf2, 0x03, 0x03, 0x12, 0x05, 0x01};
    bad[3] = (uint8_t)(sizeof bad - 4);
    SRV_CHECK(f, join_id < 128 && srv_write_full(fd, bad, sizeof bad));
    SRV_CHECK(f, push_one(fd, join_id, 13));
    SRV_CHECK(f, send_done(fd, r->id, 1));
    srv_free(r);
    if ((r = recv_ack_of(f, fd, 13)) == NULL) {
        return;
    }
    SRV_CHECK(f, send_done(fd, r->id, 1));
    srv_free(r);

    r = srv_recv(fd);
    SRV_CHECK(f, r && r->kind_case == ES__V1__REQUEST__KIND_UNSUBSCRIBE &&
                     r->unsubscribe->subscription_id == join_id);
    if (r) {
        SRV_CHECK(f, send_revoked(fd, join_id, (const uint64_t[]){13}, 1));
        Es__V1__UnsubscribeOk uo = ES__V1__UNSUBSCRIBE_OK__INIT;
        Es__V1__Response u = ES__V1__RESPONSE__INIT;
        u.id = r->id;
        u.kind_case = ES__V1__RESPONSE__KIND_UNSUBSCRIBED;
        u.unsubscribed = &uo;
        SRV_CHECK(f, srv_send(fd, &u));
        srv_free(r);
    }
    while ((r = srv_recv(fd)) != NULL) {
        Es__V1__Pong pong = ES__V1__PONG__INIT;
        if (r->kind_case == ES__V1__REQUEST__KIND_PING) {
            pong.payload = r->ping->payload;
        }
        Es__V1__Response p = ES__V1__RESPONSE__INIT;
        p.id = r->id;
        p.kind_case = ES__V1__RESPONSE__KIND_PONG;
        p.pong = &pong;
        SRV_CHECK(f, r->kind_case == ES__V1__REQUEST__KIND_PING && srv_send(fd, &p));
        srv_free(r);
    }
}

/* The next batch: exactly one event, at want. */
static void expect_batch(es_group_member *m, uint64_t want)
{
    es_recorded_event *evs = NULL;
    size_t n = 0;
    assert_int_equal(es_group_next(m, 5000, &evs, &n), ES_OK);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].position, want);
}

static void test_revoked(void **state)
{
    (void)state;
    fake f;
    fake_start(&f, script_revoked, NULL);
    es_client_options o;
    es_client_options_init(&o);
    o.address = f.addr;
    es_client *c = NULL;
    assert_int_equal(es_client_create(&o, &c), ES_OK);
    es_group_member *m = NULL;
    assert_int_equal(es_group_join(c, "g", 0, NULL, &m), ES_OK);

    expect_batch(m, 7); /* handed out before the revoke */
    uint64_t p = 7;
    assert_int_equal(es_group_ack(m, &p, 1), ES_ERR_NOT_IN_FLIGHT);
    /* [8 10] lost 8, [11] is gone, the [8] pushed after the revoke stays. */
    expect_batch(m, 10);
    p = 10;
    assert_int_equal(es_group_ack(m, &p, 1), ES_OK);
    expect_batch(m, 8);
    p = 8;
    assert_int_equal(es_group_ack(m, &p, 1), ES_OK);
    /* The undecodable revoke dropped [12]. */
    expect_batch(m, 13);
    uint64_t pushes = 0, dropped = 0;
    es_group_revoked(m, &pushes, &dropped);
    assert_int_equal(pushes, 2);
    assert_int_equal(dropped, 2); /* 8 out of [8 10], and [11] */
    p = 13;
    assert_int_equal(es_group_ack(m, &p, 1), ES_OK);
    /* Nothing else is queued. */
    es_recorded_event *evs = NULL;
    size_t n = 7;
    assert_int_equal(es_group_next(m, 0, &evs, &n), ES_OK);
    assert_int_equal(n, 0);

    /* A revoke for the membership just left: dropped, the client goes on. */
    uint64_t before = c->pushes_dropped;
    es_group_leave(m);
    assert_int_equal(es_client_ping(c, NULL), ES_OK);
    assert_int_equal(c->pushes_dropped, before + 1);
    es_group_revoked(NULL, &pushes, &dropped);
    assert_int_equal(pushes + dropped, 0);
    es_client_destroy(c);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stale_batch),
        cmocka_unit_test(test_revoked),
    };
    return cmocka_run_group_tests_name("client_group", tests, NULL, NULL);
}

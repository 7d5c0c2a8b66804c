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

static bool push_one(int fd, uint64_t join_id, uint64_t pos)
{
    Es__V1__RecordedEvent ev = ES__V1__RECORDED_EVENT__INIT;
    ev.stream.data = (uint8_t *)"s-1";
    ev.stream.len = 3;
    ev.revision = pos - 1;
    ev.position = pos;
    uint8_t id[16] = {0};
    id[15] = (uint8_t)pos;
    ev.id.data = id;
    ev.id.len = 16;
    ev.type.data = (uint8_t *)"T";
    ev.type.len = 1;
    Es__V1__RecordedEvent *evs[1] = {&ev};
    Es__V1__GroupEvents ge = ES__V1__GROUP_EVENTS__INIT;
    ge.n_events = 1;
    ge.events = evs;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = join_id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_EVENTS;
    resp.group_events = &ge;
    return srv_send(fd, &resp);
}

/* Each connection: hello, the JoinGroup answered and one event pushed
 * (position 7 on the first, 9 on the second). The first then closes; the
 * second answers acks until the client goes. */
static void script_stale(fake *f, int fd, unsigned conn_no)
{
    script_ctx *sc = f->ctx;
    if (!srv_hello(f, fd)) {
        return;
    }
    Es__V1__Request *r = srv_recv(fd);
    SRV_CHECK(f, r && r->kind_case == ES__V1__REQUEST__KIND_JOIN_GROUP);
    if (!r || r->kind_case != ES__V1__REQUEST__KIND_JOIN_GROUP) {
        srv_free(r);
        return;
    }
    uint64_t join_id = r->id;
    srv_free(r);
    Es__V1__GroupJoined j = ES__V1__GROUP_JOINED__INIT;
    j.max_in_flight = 10;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = join_id;
    resp.kind_case = ES__V1__RESPONSE__KIND_GROUP_JOINED;
    resp.group_joined = &j;
    /* Reply and push in one go, so the client reads both together. */
    SRV_CHECK(f, srv_send(fd, &resp));
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
            Es__V1__GroupDone d = ES__V1__GROUP_DONE__INIT;
            d.synced = true;
            d.count = 1;
            Es__V1__Response ok = ES__V1__RESPONSE__INIT;
            ok.id = r->id;
            ok.kind_case = ES__V1__RESPONSE__KIND_GROUP_DONE;
            ok.group_done = &d;
            SRV_CHECK(f, srv_send(fd, &ok));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stale_batch),
    };
    return cmocka_run_group_tests_name("client_group", tests, NULL, NULL);
}

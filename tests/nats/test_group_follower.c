/*
 * test_group_follower — a follower serves no consumer groups: every group
 * request kind gets FOLLOWER, and nothing else on the connection changes.
 *
 * Design notes
 * ------------
 * One JetStream node. A primary relays 20 events and has a group "g" with
 * a member that acked one event; a follower copies the events. Group state
 * is not part of the relayed log, so the follower has none: on one raw
 * connection to it (the requests are built as frames, so that acks and
 * nacks can name a join id the follower never gave) each of CreateGroup,
 * UpdateGroup, DeleteGroup, ListGroups, GroupInfo, JoinGroup, GroupAck,
 * GroupNack, ListParked and ReplayParked is answered with FOLLOWER under
 * its own request id, for the primary's group name and for an unknown one.
 * After them the same connection still pings, the follower's head is
 * unchanged, and the primary's group has its one ack and nothing parked.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "es/group.h"
#include "natsh.h"
#include "rel.h"
#include "support.h"

#define STREAM "GF"
#define N0     20u

static es_stats stats_of(const char *address)
{
    es_client *c = rel_client(address, 10000);
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    es_client_destroy(c);
    REL_CHECK(rv == ES_OK, "stats: %s", es_strerror(rv));
    return st;
}

/* Every group request kind, for the group `name`. */
static void refused_all(int fd, const char *name, uint64_t *next_id)
{
    ProtobufCBinaryData nm = {strlen(name), (uint8_t *)name};
    Es__V1__GroupSettings set = ES__V1__GROUP_SETTINGS__INIT;
    set.max_retries = 3;
    set.ack_timeout_ms = 1000;
    set.max_in_flight = 10;
    Es__V1__CreateGroup cg = ES__V1__CREATE_GROUP__INIT;
    cg.name = nm;
    cg.from_start = true;
    cg.settings = &set;
    Es__V1__UpdateGroup ug = ES__V1__UPDATE_GROUP__INIT;
    ug.name = nm;
    ug.settings = &set;
    Es__V1__DeleteGroup dg = ES__V1__DELETE_GROUP__INIT;
    dg.name = nm;
    Es__V1__ListGroups lg = ES__V1__LIST_GROUPS__INIT;
    Es__V1__GroupInfoRequest gi = ES__V1__GROUP_INFO_REQUEST__INIT;
    gi.name = nm;
    Es__V1__JoinGroup jg = ES__V1__JOIN_GROUP__INIT;
    jg.name = nm;
    uint64_t positions[2] = {1, 2};
    Es__V1__GroupAck ga = ES__V1__GROUP_ACK__INIT;
    ga.join_id = 1;
    ga.n_positions = 2;
    ga.positions = positions;
    Es__V1__GroupNack gn = ES__V1__GROUP_NACK__INIT;
    gn.join_id = 1;
    gn.n_positions = 2;
    gn.positions = positions;
    gn.action = ES__V1__NACK_ACTION__NACK_ACTION_PARK;
    Es__V1__ListParked lp = ES__V1__LIST_PARKED__INIT;
    lp.name = nm;
    Es__V1__ReplayParked rp = ES__V1__REPLAY_PARKED__INIT;
    rp.name = nm;

    Es__V1__Request reqs[10];
    for (size_t i = 0; i < 10; i++) {
        es__v1__request__init(&reqs[i]);
    }
    reqs[0].kind_case = ES__V1__REQUEST__KIND_CREATE_GROUP;
    reqs[0].create_group = &cg;
    reqs[1].kind_case = ES__V1__REQUEST__KIND_UPDATE_GROUP;
    reqs[1].update_group = &ug;
    reqs[2].kind_case = ES__V1__REQUEST__KIND_DELETE_GROUP;
    reqs[2].delete_group = &dg;
    reqs[3].kind_case = ES__V1__REQUEST__KIND_LIST_GROUPS;
    reqs[3].list_groups = &lg;
    reqs[4].kind_case = ES__V1__REQUEST__KIND_GROUP_INFO;
    reqs[4].group_info = &gi;
    reqs[5].kind_case = ES__V1__REQUEST__KIND_JOIN_GROUP;
    reqs[5].join_group = &jg;
    reqs[6].kind_case = ES__V1__REQUEST__KIND_GROUP_ACK;
    reqs[6].group_ack = &ga;
    reqs[7].kind_case = ES__V1__REQUEST__KIND_GROUP_NACK;
    reqs[7].group_nack = &gn;
    reqs[8].kind_case = ES__V1__REQUEST__KIND_LIST_PARKED;
    reqs[8].list_parked = &lp;
    reqs[9].kind_case = ES__V1__REQUEST__KIND_REPLAY_PARKED;
    reqs[9].replay_parked = &rp;
    for (size_t i = 0; i < 10; i++) {
        reqs[i].id = (*next_id)++;
        Es__V1__Response *r = h_call(fd, &reqs[i], 10000);
        REL_CHECK(r, "request kind %d (%s): no reply", (int)reqs[i].kind_case, name);
        REL_CHECK(r->id == reqs[i].id,
                  "request kind %d (%s): reply for id %" PRIu64 ", not %" PRIu64,
                  (int)reqs[i].kind_case, name, r->id, reqs[i].id);
        REL_CHECK(r->kind_case == ES__V1__RESPONSE__KIND_ERROR &&
                      r->error->code == ES__V1__ERROR_CODE__ERROR_CODE_FOLLOWER,
                  "request kind %d (%s): not refused with FOLLOWER (response kind %d, code %d)",
                  (int)reqs[i].kind_case, name, (int)r->kind_case,
                  r->kind_case == ES__V1__RESPONSE__KIND_ERROR ? (int)r->error->code : 0);
        h_resp_free(r);
    }
}

int main(int argc, char **argv)
{
    static const char *const names[] = {NULL};
    rel_args(argc, argv, "test_group_follower", names, NULL);
    natsh_require_server();
    esd_proc p, f;
    if (esd_init(&p, NULL) != 0 || esd_init(&f, NULL) != 0) {
        rel_fail("cannot make temporary directories");
    }
    natsh_cluster c;
    natsh_start(&c, 1, p.dir);

    const char *relay_args[] = {"--relay-nats", c.urls, "--relay-stream", STREAM, NULL};
    memcpy(p.args, relay_args, sizeof relay_args);
    REL_CHECK(esd_start(&p, 10000) == 0, "primary did not start");
    es_client *pc = rel_client(p.address, 10000);
    for (uint32_t i = 0; i < N0; i++) {
        es_event e = {.type = "T", .data = "{}", .data_len = 2};
        es_err rv = es_stream_append(pc, i % 2 ? "a-1" : "b-1", (es_expected){ES_EXPECT_ANY, 0}, &e,
                                     1, NULL);
        REL_CHECK(rv == ES_OK, "append: %s", es_strerror(rv));
    }
    es_err rv = es_group_create(pc, "g", ES_GROUP_ALL, NULL, ES_GROUP_FROM_START, 0, NULL);
    REL_CHECK(rv == ES_OK, "create the group on the primary: %s", es_strerror(rv));
    es_client *mc = rel_client(p.address, 10000);
    es_group_member *m;
    rv = es_group_join(mc, "g", 0, "primary-member", &m);
    REL_CHECK(rv == ES_OK, "join on the primary: %s", es_strerror(rv));
    es_recorded_event *evs;
    size_t n = 0;
    rv = es_group_next(m, 10000, &evs, &n);
    REL_CHECK(rv == ES_OK && n > 0, "the primary's member got nothing: %s", es_strerror(rv));
    uint64_t first = evs[0].position;
    rv = es_group_ack(m, &first, 1);
    REL_CHECK(rv == ES_OK, "ack on the primary: %s", es_strerror(rv));
    es_group_leave(m);
    es_client_destroy(mc);
    es_group_info before;
    rv = es_group_info_get(pc, "g", &before);
    REL_CHECK(rv == ES_OK && before.acked == 1, "group info on the primary: %s", es_strerror(rv));
    int64_t deadline = h_now_ms() + 30000;
    while (stats_of(p.address).relay_acked_position < N0) {
        REL_CHECK(h_now_ms() < deadline, "relay did not finish");
        h_sleep_ms(20);
    }

    const char *follow_args[] = {"--follow-nats", c.urls, "--follow-stream", STREAM, NULL};
    memcpy(f.args, follow_args, sizeof follow_args);
    REL_CHECK(esd_start(&f, 10000) == 0, "follower did not start");
    deadline = h_now_ms() + 30000;
    while (stats_of(f.address).head_position < N0) {
        REL_CHECK(h_now_ms() < deadline, "follower did not catch up");
        h_sleep_ms(20);
    }

    int fd = h_open(f.port);
    REL_CHECK(fd >= 0, "cannot connect to the follower");
    uint64_t next_id = 10;
    refused_all(fd, "g", &next_id);
    refused_all(fd, "unknown", &next_id);
    Es__V1__Ping ping = ES__V1__PING__INIT;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = next_id++;
    req.kind_case = ES__V1__REQUEST__KIND_PING;
    req.ping = &ping;
    Es__V1__Response *r = h_call(fd, &req, 10000);
    REL_CHECK(r && r->id == req.id && r->kind_case != ES__V1__RESPONSE__KIND_ERROR,
              "the connection does not ping after the refusals");
    h_resp_free(r);
    close(fd);
    REL_CHECK(stats_of(f.address).head_position == N0, "the follower's head moved");
    rel_log("a follower refused all 10 group request kinds with FOLLOWER, twice");

    es_group_info after;
    rv = es_group_info_get(pc, "g", &after);
    REL_CHECK(rv == ES_OK && after.acked == 1 && after.parked == 0 && after.members == 0,
              "the primary's group changed: %s (acked %" PRIu64 ", parked %" PRIu64 ")",
              es_strerror(rv), after.acked, after.parked);
    es_client_destroy(pc);
    int status;
    REL_CHECK(esd_stop(&f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    REL_CHECK(esd_stop(&p, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "primary stop");
    natsh_stop(&c);
    esd_destroy(&f);
    esd_destroy(&p);
    return 0;
}

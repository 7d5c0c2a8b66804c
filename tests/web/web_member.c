/*
 * web_member — a consumer-group member for the web console's tests,
 * through the public client library:
 *
 *   web_member ADDRESS GROUP park COUNT [REASON]   nack COUNT events with park
 *   web_member ADDRESS GROUP ack COUNT             ack COUNT events
 *   web_member ADDRESS GROUP hold COUNT            take COUNT events and keep
 *                                                  them in flight until stdin
 *                                                  closes
 *
 * It joins as the consumer "web-member-MODE", prints "parked N", "acked N"
 * or "holding N" on stdout once done (hold: then waits for stdin's end),
 * and leaves. Credentials from $ES_USER and $ES_TOKEN (as for esctl). Exit
 * status 0; 1 with the error on stderr, or when no event came for 30 s.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/client.h"
#include "es/group.h"

#define BATCH 1000

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6 ||
        (strcmp(argv[3], "park") && strcmp(argv[3], "ack") && strcmp(argv[3], "hold"))) {
        fprintf(stderr, "usage: web_member ADDRESS GROUP park|ack|hold COUNT [REASON]\n");
        return 2;
    }
    const char *mode = argv[3];
    long count = atol(argv[4]);
    const char *reason = argc == 6 ? argv[5] : "parked by web_member";
    es_client_options o;
    es_client_options_init(&o);
    o.address = argv[1];
    o.user = getenv("ES_USER");
    const char *tok = getenv("ES_TOKEN");
    if (tok) {
        o.token = (const uint8_t *)tok;
        o.token_len = strlen(tok);
    }
    es_client *c = NULL;
    es_err rv = es_client_create(&o, &c);
    if (rv != ES_OK || (rv = es_client_connect(c)) != ES_OK) {
        fprintf(stderr, "web_member: connect: %s\n", es_strerror(rv));
        es_client_destroy(c);
        return 1;
    }
    char label[32];
    snprintf(label, sizeof label, "web-member-%s", mode);
    uint32_t max_in_flight =
        !strcmp(mode, "hold") && count > 0 && count < BATCH ? (uint32_t)count : BATCH;
    es_group_member *m = NULL;
    if ((rv = es_group_join(c, argv[2], max_in_flight, label, &m)) != ES_OK) {
        fprintf(stderr, "web_member: join %s: %s\n", argv[2], es_client_errmsg(c));
        es_client_destroy(c);
        return 1;
    }
    static uint64_t pos[BATCH];
    long done = 0;
    int idle_ms = 0, status = 0;
    while (done < count) {
        es_recorded_event *evs;
        size_t n = 0;
        if ((rv = es_group_next(m, 500, &evs, &n)) != ES_OK) {
            fprintf(stderr, "web_member: next: %s\n", es_client_errmsg(c));
            status = 1;
            break;
        }
        if (n == 0) {
            idle_ms += 500;
            if (idle_ms >= 30000) {
                fprintf(stderr, "web_member: no event for 30 s (%ld of %ld)\n", done, count);
                status = 1;
                break;
            }
            continue;
        }
        idle_ms = 0;
        size_t k = 0;
        for (size_t i = 0; i < n && k < BATCH && done + (long)k < count; i++) {
            pos[k++] = evs[i].position;
        }
        if (!strcmp(mode, "park")) {
            rv = es_group_nack(m, pos, k, ES_NACK_PARK, reason);
        } else if (!strcmp(mode, "ack")) {
            rv = es_group_ack(m, pos, k);
        }
        if (rv != ES_OK) {
            fprintf(stderr, "web_member: %s: %s\n", mode, es_client_errmsg(c));
            status = 1;
            break;
        }
        done += (long)k;
    }
    if (status == 0) {
        printf("%s %ld\n",
               !strcmp(mode, "park")  ? "parked"
               : !strcmp(mode, "ack") ? "acked"
                                      : "holding",
               done);
        fflush(stdout);
        if (!strcmp(mode, "hold")) {
            while (getchar() != EOF) {
            }
        }
    }
    es_group_leave(m);
    es_client_destroy(c);
    return status;
}

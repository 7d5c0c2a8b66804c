/*
 * web_seed — fills an esd for the web console's tests, through the public
 * client library:
 *
 *   web_seed ADDRESS STREAMS
 *
 * writes STREAMS streams "load-00000".. (one event each, in transactions of
 * 500 appends), then the stream "needle-orders-42" with three events (the
 * second caused by the first, all three with the first's id as correlation
 * id), the stream "orphan-orders-7" with one event whose causation id names
 * no stored event (5a5a5a5a-5a5a-405a-9a5a-5a5a5a5a5a5a), and prints
 * "needle-orders-42 FIRST_ID" on stdout. Credentials come
 * from $ES_USER and $ES_TOKEN (as for esctl). Exit status 0, or 1 with the
 * error on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/client.h"

#define TXN 500

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: web_seed ADDRESS STREAMS\n");
        return 2;
    }
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
        fprintf(stderr, "web_seed: connect: %s\n", es_strerror(rv));
        es_client_destroy(c);
        return 1;
    }
    const es_expected any = {ES_EXPECT_ANY, 0};
    long n = atol(argv[2]);
    static char names[TXN][32];
    static es_event evs[TXN];
    static es_append_req reqs[TXN];
    for (long base = 0; base < n; base += TXN) {
        size_t k = 0;
        for (long i = base; i < n && i < base + TXN; i++, k++) {
            snprintf(names[k], sizeof names[k], "load-%05ld", i);
            memset(&evs[k], 0, sizeof evs[k]);
            evs[k].type = "Seeded";
            evs[k].data = "{\"seed\":true}";
            evs[k].data_len = 13;
            evs[k].content_type = "application/json";
            reqs[k] = (es_append_req){
                .stream = names[k], .expected = any, .events = &evs[k], .n_events = 1};
        }
        rv = es_txn_commit(c, reqs, k, NULL);
        if (rv != ES_OK) {
            fprintf(stderr, "web_seed: transaction: %s (%s)\n", es_strerror(rv),
                    es_client_errmsg(c));
            es_client_destroy(c);
            return 1;
        }
    }
    es_event first = {.type = "OrderPlaced",
                      .data = "{\"order\":42,\"lines\":[{\"sku\":\"A-1\",\"qty\":2}]}",
                      .content_type = "application/json"};
    first.data_len = strlen(first.data);
    rv = es_stream_append(c, "needle-orders-42", any, &first, 1, NULL);
    es_event second = {.type = "OrderPaid",
                       .data = "{\"order\":42,\"amount\":\"19.90\"}",
                       .content_type = "application/json",
                       .correlation_id = first.id,
                       .causation_id = first.id};
    second.data_len = strlen(second.data);
    static const uint8_t raw[] = {0x00, 0xff, 0xfe, 0x41, 0x42, 0x0a, 0x80};
    es_event third = {.type = "BinaryBlob",
                      .data = raw,
                      .data_len = sizeof raw,
                      .content_type = "application/octet-stream",
                      .correlation_id = first.id};
    if (rv == ES_OK) {
        rv = es_stream_append(c, "needle-orders-42", any, &second, 1, NULL);
    }
    if (rv == ES_OK) {
        rv = es_stream_append(c, "needle-orders-42", any, &third, 1, NULL);
    }
    /* An event whose causation id names no stored event: the console shows
     * "not found" instead of a link. */
    static const uint8_t nowhere[16] = {0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x40, 0x5a,
                                        0x9a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a};
    es_event orphan = {.type = "OrderRefunded",
                       .data = "{\"order\":7}",
                       .content_type = "application/json",
                       .correlation_id = first.id,
                       .causation_id = nowhere};
    orphan.data_len = strlen(orphan.data);
    if (rv == ES_OK) {
        rv = es_stream_append(c, "orphan-orders-7", any, &orphan, 1, NULL);
    }
    if (rv != ES_OK) {
        fprintf(stderr, "web_seed: append: %s\n", es_strerror(rv));
        es_client_destroy(c);
        return 1;
    }
    char id[ES_UUID_STRLEN + 1];
    es_uuid_format(first.id, id);
    printf("needle-orders-42 %s\n", id);
    es_client_destroy(c);
    return 0;
}

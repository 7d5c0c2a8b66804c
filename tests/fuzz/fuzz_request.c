/*
 * libFuzzer target: one frame body -> decode -> validate -> dispatch ->
 * (writer) -> reply, on a session that has done its hello, against a real
 * store in /dev/shm. Every reply must itself decode as a Response.
 */
#include <stdint.h>
#include <stdlib.h>

#include "server_harness.h"

static harness h;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (harness_init(&h, "/dev/shm") != 0 && harness_init(&h, "/tmp") != 0) {
        abort();
    }
    harness_hello(&h, 1);
    harness_clear(&h);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > h.cfg.max_frame_bytes) {
        return 0;
    }
    harness_send_raw(&h, data, size);
    harness_drain(&h);
    harness_deliver(&h);
    Es__V1__Response *r;
    while (h.out_len > h.out_pos) {
        r = harness_next(&h);
        if (!r) {
            abort(); /* the server produced a reply that does not decode */
        }
        es__v1__response__free_unpacked(r, NULL);
    }
    harness_clear(&h);
    return 0;
}

/*
 * libFuzzer target: a byte stream cut into frames exactly as the network
 * layer does (frame_next with the cap), fed in order into ONE fresh session
 * (no implicit hello), with the writer's completions processed after each
 * frame. A header over the cap or of length 0 ends the stream, as the
 * server closes the connection there.
 */
#include <stdint.h>
#include <stdlib.h>

#include "frame.h"
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
    h.cfg.max_frame_bytes = 1u << 20;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    session_finish(&h.sess);
    if (session_init(&h.sess, &h.srv, 2, &h, h.sess.send, h.sess.outlen) != ES_OK) {
        abort();
    }
    size_t off = 0;
    while (off < size) {
        const uint8_t *body;
        uint32_t blen;
        size_t used;
        if (frame_next(data + off, size - off, h.cfg.max_frame_bytes, &body, &blen, &used) !=
                ES_OK ||
            !body) {
            break;
        }
        harness_send_raw(&h, body, blen);
        harness_drain(&h);
        harness_deliver(&h);
        off += used;
    }
    while (h.out_len > h.out_pos) {
        Es__V1__Response *r = harness_next(&h);
        if (!r) {
            abort();
        }
        es__v1__response__free_unpacked(r, NULL);
    }
    harness_clear(&h);
    return 0;
}

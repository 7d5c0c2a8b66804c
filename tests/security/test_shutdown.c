/*
 * test_shutdown — a graceful shutdown never resets a connection that holds
 * replies: a client pipelines appends without reading until esd stops
 * reading it (its input is then unread in esd's socket), esd gets SIGTERM,
 * and only then does the client read. Every trial must end with every
 * reply delivered and a FIN (recv returns 0), never a reset (ECONNRESET):
 * closing a socket with unread input makes the kernel send a reset and
 * drop what it had not sent yet, and a peer's stack may discard replies it
 * received but the application had not read. And the replies must account
 * for the store: after a restart, the head equals the appends acknowledged.
 *
 * Repeated SHUTDOWN_TRIALS times (the defect showed in about half of the
 * trials). Every wait is a poll() with a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define SHUTDOWN_TRIALS 30
#define APPENDS         4000
/* No byte for this long while the socket is full: esd has stopped reading. */
#define STALL_MS 300

typedef struct outcome {
    unsigned ok;     /* append replies with success */
    unsigned errors; /* error replies (e.g. SHUTTING_DOWN) */
    bool fin;        /* the stream ended with recv() == 0 */
    int err;         /* errno when it ended with an error */
} outcome;

/* Read frames until the connection ends; count the replies. */
static int read_to_end(int fd, outcome *o)
{
    static uint8_t buf[1 << 20];
    size_t have = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 10000);
        if (pr == 0) {
            return -1; /* neither FIN nor reset within 10 s */
        }
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
        if (r == 0) {
            o->fin = true;
            break;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            o->err = errno;
            break;
        }
        have += (size_t)r;
        size_t at = 0;
        while (have - at >= 4) {
            uint32_t len = (uint32_t)buf[at] << 24 | (uint32_t)buf[at + 1] << 16 |
                           (uint32_t)buf[at + 2] << 8 | buf[at + 3];
            if (have - at - 4 < len) {
                break;
            }
            Es__V1__Response *resp = es__v1__response__unpack(NULL, len, buf + at + 4);
            if (!resp) {
                return -2;
            }
            if (h_code(resp) == ES_OK && resp->kind_case == ES__V1__RESPONSE__KIND_APPEND) {
                o->ok++;
            } else {
                o->errors++;
            }
            es__v1__response__free_unpacked(resp, NULL);
            at += 4 + len;
        }
        memmove(buf, buf + at, have - at);
        have -= at;
    }
    return have == 0 ? 0 : -3; /* a frame cut by the end */
}

/* Send the appends without reading until esd stops taking them. @return bytes sent. */
static size_t pipeline_until_stalled(int fd, const hbuf *b)
{
    size_t sent = 0;
    while (sent < b->len) {
        ssize_t n = h_send_some(fd, b->p + sent, b->len - sent);
        assert_true(n >= 0);
        sent += (size_t)n;
        if (n == 0) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, STALL_MS) == 0) {
                break; /* esd holds unread input and unsent replies */
            }
        }
    }
    return sent;
}

static void one_trial(esd_proc *e, int trial, const hbuf *reqs, unsigned *resets)
{
    assert_int_equal(esd_start(e, 10000), 0);
    uint64_t head0 = h_head(e->port);
    assert_true(head0 != UINT64_MAX);
    int fd = h_connect_rcvbuf(e->port, 4096);
    assert_true(fd >= 0);
    assert_true(h_hello(fd));
    size_t sent = pipeline_until_stalled(fd, reqs);
    assert_true(sent > 0);
    /* SIGTERM while the replies wait for the client, then read them */
    assert_int_equal(kill(e->pid, SIGTERM), 0);
    outcome o = {0};
    int rv = read_to_end(fd, &o);
    close(fd);
    int status = 0;
    /* wait for the exit (signal 0: a second SIGTERM could reach esd after it
     * has restored the default action on its way out) */
    assert_int_equal(esd_stop(e, 0, 10000, &status, NULL), 0);
    if (rv != 0) {
        fail_msg("trial %d: reading the replies failed (%d)", trial, rv);
    }
    if (!o.fin) {
        (*resets)++;
        printf("trial %2d: the connection ended with %s after %u replies, not with a FIN\n", trial,
               strerror(o.err), o.ok + o.errors);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        esd_dump_log(e);
        fail_msg("trial %d: esd ended with wait status %#x, not exit 0", trial, status);
    }
    /* every acknowledged append is stored, and every stored one was acknowledged */
    assert_int_equal(esd_start(e, 10000), 0);
    uint64_t head = h_head(e->port);
    assert_int_equal(esd_stop(e, SIGTERM, 10000, NULL, NULL), 0);
    if (head - head0 != o.ok) {
        fail_msg("trial %d: %u appends acknowledged, %llu stored", trial, o.ok,
                 (unsigned long long)(head - head0));
    }
    assert_true(o.ok > 0);
    printf("trial %2d: %zu bytes pipelined, %u acknowledged, %u refused, %s\n", trial, sent, o.ok,
           o.errors, o.fin ? "FIN" : "reset");
}

static void test_sigterm_with_unread_replies(void **state)
{
    (void)state;
    static const char *const args[] = {
        "--sync", "none", "--max-output-bytes", "4096", "--max-frame-bytes", "1024", NULL};
    esd_proc e;
    assert_int_equal(esd_init(&e, args), 0);
    hbuf reqs = {0};
    for (uint64_t id = 1; id <= APPENDS; id++) {
        h_app a = {.stream = "shutdown-1", .kind = H_NO_EXPECTED, .n = 1};
        h_put_append(&reqs, id, &a);
    }
    unsigned resets = 0;
    for (int t = 1; t <= SHUTDOWN_TRIALS; t++) {
        one_trial(&e, t, &reqs, &resets);
    }
    printf("%u of %d trials ended with a reset\n", resets, SHUTDOWN_TRIALS);
    assert_int_equal(resets, 0);
    assert_false(esd_log_has_sanitizer_report(&e));
    hbuf_free(&reqs);
    esd_destroy(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_with_unread_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* fake_server — the client unit tests' stand-in for esd; see fake_server.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The protocol's hard cap on a frame. */
#define FAKE_MAX_FRAME (64u << 20)

const uint8_t FAKE_STORE_ID[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static void *fake_main(void *arg)
{
    fake *f = arg;
    unsigned n = 0;
    for (;;) {
        struct pollfd p[2] = {{.fd = f->lfd, .events = POLLIN},
                              {.fd = f->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (p[1].revents) {
            break;
        }
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        atomic_fetch_add(&f->accepts, 1);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (atomic_load(&f->mode) == MODE_UP && f->script != NULL) {
            f->script(f, fd, ++n);
        }
        close(fd);
    }
    return NULL;
}

void fake_init(fake *f, script_fn script, void *ctx)
{
    memset(f, 0, sizeof(*f));
    f->script = script;
    f->ctx = ctx;
    f->hello_version = 1;
    f->max_in_flight = 16;
    f->max_event_bytes = 1u << 20;
    f->max_page_size = 100;
    f->sync_mode = ES__V1__SYNC_MODE__SYNC_MODE_NONE;
    f->role = "leader";
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", ntohs(sa.sin_port));
    assert_int_equal(pipe(f->wake), 0);
}

void fake_run(fake *f)
{
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

void fake_start(fake *f, script_fn script, void *ctx)
{
    fake_init(f, script, ctx);
    fake_run(f);
}

void fake_stop(fake *f)
{
    ssize_t w = write(f->wake[1], "x", 1);
    (void)w;
    pthread_join(f->th, NULL);
    close(f->lfd);
    close(f->wake[0]);
    close(f->wake[1]);
    if (atomic_load(&f->errors) != 0) {
        fail_msg("fake server: %u failed checks, first: %s", atomic_load(&f->errors), f->errmsg);
    }
}

bool srv_read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        n -= (size_t)r;
    }
    return true;
}

bool srv_write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

Es__V1__Request *srv_recv(int fd)
{
    uint8_t hdr[4];
    if (!srv_read_full(fd, hdr, 4)) {
        return NULL;
    }
    uint32_t len =
        ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    if (len == 0 || len > FAKE_MAX_FRAME) {
        return NULL;
    }
    uint8_t *body = malloc(len);
    if (body == NULL || !srv_read_full(fd, body, len)) {
        free(body);
        return NULL;
    }
    Es__V1__Request *r = es__v1__request__unpack(NULL, len, body);
    free(body);
    return r;
}

void srv_free(Es__V1__Request *r)
{
    if (r != NULL) {
        es__v1__request__free_unpacked(r, NULL);
    }
}

bool srv_send(int fd, const Es__V1__Response *resp)
{
    size_t len = es__v1__response__get_packed_size(resp);
    uint8_t *buf = malloc(4 + len);
    if (buf == NULL) {
        return false;
    }
    buf[0] = (uint8_t)(len >> 24);
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    es__v1__response__pack(resp, buf + 4);
    bool ok = srv_write_full(fd, buf, 4 + len);
    free(buf);
    return ok;
}

bool srv_hello(fake *f, int fd)
{
    Es__V1__Request *req = srv_recv(fd);
    if (req == NULL) {
        return false;
    }
    SRV_CHECK(f, req->kind_case == ES__V1__REQUEST__KIND_HELLO);
    SRV_CHECK(f, req->id != 0);
    uint8_t store_id[16];
    memcpy(store_id, FAKE_STORE_ID, 16);
    store_id[15] = (uint8_t)(store_id[15] + f->store_tag);
    Es__V1__Limits lim = ES__V1__LIMITS__INIT;
    lim.max_frame_bytes = f->max_frame_bytes;
    lim.max_events_per_append = 100;
    lim.max_event_bytes = f->max_event_bytes;
    lim.max_page_size = f->max_page_size;
    lim.max_in_flight = f->max_in_flight;
    lim.max_appends_per_transaction = 16;
    Es__V1__HelloOk ok = ES__V1__HELLO_OK__INIT;
    ok.protocol_version = f->hello_version;
    ok.server_version = (char *)"fake-0.1";
    ok.limits = &lim;
    ok.sync_mode = f->sync_mode;
    ok.store_id.data = store_id;
    ok.store_id.len = 16;
    if (f->role != NULL) {
        ok.role = (char *)f->role;
    }
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = req->id;
    resp.kind_case = ES__V1__RESPONSE__KIND_HELLO;
    resp.hello = &ok;
    srv_free(req);
    return srv_send(fd, &resp);
}

bool srv_append_ok(int fd, uint64_t id, uint64_t first_rev, uint64_t n, uint64_t first_pos)
{
    Es__V1__AppendResult ar = ES__V1__APPEND_RESULT__INIT;
    ar.first_revision = first_rev;
    ar.last_revision = first_rev + n - 1;
    ar.first_position = first_pos;
    ar.last_position = first_pos + n - 1;
    ar.synced = true;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_APPEND;
    resp.append = &ar;
    return srv_send(fd, &resp);
}

bool srv_error(int fd, uint64_t id, Es__V1__ErrorCode code, const char *msg)
{
    Es__V1__Error err = ES__V1__ERROR__INIT;
    err.code = code;
    err.message = (char *)msg;
    Es__V1__Response resp = ES__V1__RESPONSE__INIT;
    resp.id = id;
    resp.kind_case = ES__V1__RESPONSE__KIND_ERROR;
    resp.error = &err;
    return srv_send(fd, &resp);
}

unsigned srv_drain(int fd)
{
    unsigned n = 0;
    Es__V1__Request *r;
    while ((r = srv_recv(fd)) != NULL) {
        srv_free(r);
        n++;
    }
    return n;
}

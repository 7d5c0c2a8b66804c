#include "server_harness.h"

#include <dirent.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "groups.h"
#include "options.h"

static void sink_send(void *io, const void *data, size_t len)
{
    harness *h = io;
    if (h->out_len + len > h->out_cap) {
        size_t cap = h->out_cap ? h->out_cap * 2 : 65536;
        while (cap < h->out_len + len) {
            cap *= 2;
        }
        uint8_t *p = realloc(h->out, cap);
        if (!p) {
            h->out_oom = true;
            return;
        }
        h->out = p;
        h->out_cap = cap;
    }
    memcpy(h->out + h->out_len, data, len);
    h->out_len += len;
}

static size_t sink_outlen(void *io)
{
    harness *h = io;
    return h->out_len - h->out_pos;
}

int harness_init(harness *h, const char *dir_base)
{
    memset(h, 0, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "%s/esd-harness-XXXXXX", dir_base ? dir_base : "/tmp");
    if (!mkdtemp(h->dir)) {
        return -1;
    }
    server_config_defaults(&h->cfg);
    h->cfg.sync = false;
    h->cfg.max_in_flight = 64;
    h->cfg.map_size = 256u << 20;
    store_options so = {.path = h->dir, .map_size = h->cfg.map_size, .sync = false};
    char msg[256];
    if (store_open(&so, &h->srv.st, msg, sizeof msg) != ES_OK) {
        return -1;
    }
    h->srv.cfg = &h->cfg;
    h->srv.start_us = store_now_us();
    if (subs_create(&h->srv, &h->srv.subs) != ES_OK ||
        groups_create(&h->srv, &h->srv.groups) != ES_OK ||
        writer_start(h->srv.st, 0, &h->srv.w) != ES_OK) {
        return -1;
    }
    return session_init(&h->sess, &h->srv, 1, h, sink_send, sink_outlen) == ES_OK ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void harness_finish(harness *h)
{
    harness_drain(h);
    session_finish(&h->sess);
    write_job *left = NULL;
    writer_stop(h->srv.w, &left);
    while (left) {
        write_job *next = left->next;
        if (left->kind == WRITE_JOB_GROUP) {
            groups_complete(h->srv.groups, left);
        } else {
            handler_complete(left);
        }
        left = next;
    }
    groups_destroy(h->srv.groups);
    subs_destroy(h->srv.subs);
    store_close(h->srv.st);
    free(h->out);
    nftw(h->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

es_err harness_send_raw(harness *h, const uint8_t *body, size_t len)
{
    return handler_on_frame(&h->sess, body, len);
}

es_err harness_send(harness *h, const Es__V1__Request *req)
{
    size_t n = es__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        return ES_ERR_NO_MEMORY;
    }
    es__v1__request__pack(req, buf);
    es_err rv = handler_on_frame(&h->sess, buf, n);
    free(buf);
    return rv;
}

void harness_drain(harness *h)
{
    while (writer_pending(h->srv.w) > 0) {
        struct pollfd pfd = {writer_fd(h->srv.w), POLLIN, 0};
        poll(&pfd, 1, 1000);
        write_job *list = writer_take_completed(h->srv.w);
        bool any = list != NULL;
        while (list) {
            write_job *next = list->next;
            if (list->kind == WRITE_JOB_GROUP) {
                groups_complete(h->srv.groups, list);
            } else {
                handler_complete(list);
            }
            list = next;
        }
        if (any) {
            subs_on_commit(h->srv.subs);
            groups_on_commit(h->srv.groups);
        }
    }
}

void harness_deliver(harness *h)
{
    for (int i = 0; i < 100000; i++) {
        bool more = groups_deliver(h->srv.groups);
        if (!subs_deliver(h->srv.subs) && !more) {
            break;
        }
    }
}

Es__V1__Response *harness_next(harness *h)
{
    const uint8_t *body;
    uint32_t blen;
    size_t used;
    if (frame_next(h->out + h->out_pos, h->out_len - h->out_pos, FRAME_HARD_MAX_BODY, &body, &blen,
                   &used) != ES_OK ||
        !body) {
        return NULL;
    }
    h->out_pos += used;
    if (h->out_pos == h->out_len) {
        h->out_pos = h->out_len = 0;
    }
    return es__v1__response__unpack(NULL, blen, body);
}

void harness_clear(harness *h)
{
    h->out_pos = h->out_len = 0;
}

es_err harness_hello(harness *h, uint64_t id)
{
    Es__V1__Hello hello = ES__V1__HELLO__INIT;
    hello.protocol_version = 1;
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = id;
    req.kind_case = ES__V1__REQUEST__KIND_HELLO;
    req.hello = &hello;
    return harness_send(h, &req);
}

int harness_setup(void **state)
{
    harness *h = malloc(sizeof *h);
    if (!h || harness_init(h, "/tmp") != 0) {
        free(h);
        return -1;
    }
    *state = h;
    return 0;
}

int harness_teardown(void **state)
{
    harness *h = *state;
    harness_finish(h);
    free(h);
    return 0;
}

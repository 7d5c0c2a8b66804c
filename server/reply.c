#include "reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "pbwire.h"

/* ------------------------------------------------------------ allocation -- */

static _Thread_local size_t budget_left;
static _Thread_local bool budget_on;
static _Thread_local bool budget_blown;
static _Thread_local uint64_t fail_after;
static _Thread_local uint64_t alloc_count;

void reply_fail_alloc_after(uint64_t n)
{
    fail_after = n;
    alloc_count = 0;
}

static _Thread_local bool alloc_failed;
static _Thread_local uint64_t injected_total;

static bool injected_failure(void)
{
    if (fail_after && ++alloc_count >= fail_after) {
        alloc_failed = true;
        injected_total++;
        return true;
    }
    return false;
}

uint64_t reply_injected_failures(void)
{
    return injected_total;
}

bool reply_alloc_failed_take(void)
{
    bool f = alloc_failed;
    alloc_failed = false;
    return f;
}

void *reply_malloc(size_t n)
{
    return injected_failure() ? NULL : malloc(n ? n : 1);
}

void *reply_calloc(size_t n, size_t size)
{
    return injected_failure() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    if (injected_failure()) {
        return NULL;
    }
    if (budget_on) {
        if (size > budget_left) {
            budget_blown = true;
            return NULL;
        }
        budget_left -= size;
    }
    void *p = malloc(size ? size : 1);
    if (!p) {
        alloc_failed = true;
    }
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    free(p);
}

ProtobufCAllocator reply_pb_allocator = {pb_alloc, pb_free, NULL};

void reply_budget_begin(size_t bytes)
{
    budget_on = true;
    budget_blown = false;
    budget_left = bytes;
}

bool reply_budget_end(void)
{
    budget_on = false;
    return budget_blown;
}

/* --------------------------------------------------------------- replies -- */

bool bb_reserve(bytebuf *b, size_t extra)
{
    if (b->len + extra <= b->cap) {
        return true;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    uint8_t *p = injected_failure() ? NULL : realloc(b->p, cap);
    if (!p) {
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void bb_free(bytebuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void reply_send(session *s, Es__V1__Response *r)
{
    if (s->dead) {
        return;
    }
    size_t size = es__v1__response__get_packed_size(r);
    uint8_t small[512];
    uint8_t *buf =
        size + FRAME_HEADER_BYTES <= sizeof small ? small : reply_malloc(size + FRAME_HEADER_BYTES);
    if (!buf) {
        if (r->kind_case != ES__V1__RESPONSE__KIND_ERROR) {
            reply_send_error(s, r->id, ES_ERR_NO_MEMORY, "no memory for the reply");
        }
        return;
    }
    frame_write_header(buf, (uint32_t)size);
    es__v1__response__pack(r, buf + FRAME_HEADER_BYTES);
    s->send(s->io, buf, size + FRAME_HEADER_BYTES);
    if (buf != small) {
        free(buf);
    }
}

/* The head of Response{id, <field>: <len bytes>}: frame length, the id
 * field, the header of the length-delimited field (protobuf lets a
 * message be the concatenation of its encoded fields). */
static void send_wrapped_head(session *s, uint64_t id, uint32_t field, size_t len)
{
    uint8_t prefix[FRAME_HEADER_BYTES + 2 * PBW_VARINT_MAX + 2 * PBW_VARINT_MAX];
    size_t n = FRAME_HEADER_BYTES;
    if (id) {
        n += pbw_put_varint_field(prefix + n, 1, id);
    }
    n += pbw_put_len_header(prefix + n, field, len);
    frame_write_header(prefix, (uint32_t)(n - FRAME_HEADER_BYTES + len));
    s->send(s->io, prefix, n);
}

/* Send Response{id, <field>: <inner bytes>} where inner is already encoded. */
void reply_send_wrapped(session *s, uint64_t id, uint32_t field, bytebuf *inner)
{
    if (s->dead) {
        return;
    }
    send_wrapped_head(s, id, field, inner->len);
    if (inner->len >= REPLY_OWNED_MIN && s->send_owned) {
        /* Hand the page over as it is: no second copy of it, and the
         * connection holds exactly its length (shrunk in place). */
        uint8_t *p = inner->cap > inner->len ? realloc(inner->p, inner->len) : inner->p;
        if (p) {
            inner->p = p;
            inner->cap = inner->len;
        }
        if (s->send_owned(s->io, inner->p, inner->len)) {
            inner->p = NULL;
            inner->len = inner->cap = 0;
            return;
        }
    }
    if (inner->len) {
        s->send(s->io, inner->p, inner->len);
    }
}

reply_shared *reply_shared_create(bytebuf *inner)
{
    reply_shared *sh = reply_malloc(sizeof *sh);
    if (!sh) {
        return NULL;
    }
    /* Held for as long as the slowest connection holding it: exactly its
     * length (shrunk in place), not the capacity it grew to. */
    if (inner->cap > inner->len && inner->len > 0) {
        uint8_t *p = realloc(inner->p, inner->len);
        if (p) {
            inner->p = p;
            inner->cap = inner->len;
        }
    }
    sh->refs = 1;
    sh->len = inner->len;
    sh->p = inner->p;
    sh->parent = NULL;
    inner->p = NULL;
    inner->len = inner->cap = 0;
    return sh;
}

reply_shared *reply_shared_view(reply_shared *parent, size_t off)
{
    reply_shared *sh = reply_malloc(sizeof *sh);
    if (!sh) {
        return NULL;
    }
    parent->refs++;
    sh->refs = 1;
    sh->len = parent->len - off;
    sh->p = parent->p + off;
    sh->parent = parent;
    return sh;
}

void reply_shared_release(reply_shared *sh)
{
    if (sh && --sh->refs == 0) {
        if (sh->parent) {
            reply_shared_release(sh->parent);
        } else {
            free(sh->p);
        }
        free(sh);
    }
}

void reply_send_shared(session *s, uint64_t id, uint32_t field, reply_shared *sh)
{
    if (s->dead) {
        return;
    }
    send_wrapped_head(s, id, field, sh->len);
    if (sh->len >= REPLY_SHARED_REF_MIN && s->send_shared && s->send_shared(s->io, sh)) {
        return;
    }
    if (sh->len) {
        s->send(s->io, sh->p, sh->len);
    }
}

void reply_send_error(session *s, uint64_t id, es_err code, const char *message)
{
    Es__V1__Error err = ES__V1__ERROR__INIT;
    err.code = (Es__V1__ErrorCode)code;
    err.message = (char *)(message ? message : es_strerror(code));
    Es__V1__Response r = ES__V1__RESPONSE__INIT;
    r.id = id;
    r.kind_case = ES__V1__RESPONSE__KIND_ERROR;
    r.error = &err;
    reply_send(s, &r);
}

int page_visit(void *ctx, const store_record *rec)
{
    page_ctx *pc = ctx;
    size_t need = pbw_len_header_len(1, rec->len) + rec->len;
    if (pc->buf.len + need > pc->budget && pc->buf.len > 0) {
        return -1; /* no room: the next page starts here */
    }
    if (!bb_reserve(&pc->buf, need)) {
        pc->oom = true;
        return -1;
    }
    pc->buf.len += pbw_put_len_header(pc->buf.p + pc->buf.len, 1, rec->len);
    memcpy(pc->buf.p + pc->buf.len, rec->bytes, rec->len);
    pc->buf.len += rec->len;
    return 0;
}

size_t reply_page_budget(const server_config *cfg)
{
    size_t frame = cfg->max_frame_bytes - 1024;
    return frame < REPLY_PAGE_BYTES ? frame : REPLY_PAGE_BYTES;
}

size_t reply_session_budget(const session *s, size_t want)
{
    size_t room = s->room ? s->room(s->io) : SIZE_MAX;
    size_t b = room < want ? room : want;
    return b ? b : 1;
}

/*
 * test_proto — the pure byte-level modules of proto/: frame, crc32c,
 * validate, pbwire.
 *
 * Design notes: every input here is something a peer can send, so the cases
 * follow the malformed-input catalogue (tests/integration/test_malformed.c)
 * and the frame length prefixes of tests/integration/test_limits.c. Buffers
 * that the code under test must not read past are heap copies of exactly the
 * right length, so the sanitizer pass of tools/dev.sh catches over-reads.
 * Random inputs come from a fixed-seed generator: a failure reproduces.
 * protobuf-c is the reference for the wire format: pbwire must read what it
 * writes and write what it reads, and its unpacks go through cmocka's
 * allocator so a leak fails the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "es.pb-c.h"
#include "es/err.h"
#include "frame.h"
#include "pbwire.h"
#include "validate.h"

/* Assert an es_err, naming both codes on failure. */
#define assert_rv(expected, expr)                                                                  \
    do {                                                                                           \
        es_err want_ = (expected);                                                                 \
        es_err got_ = (expr);                                                                      \
        if (got_ != want_) {                                                                       \
            fail_msg("%s: got %s (%s), expected %s (%s)", #expr, es_errname(got_),                 \
                     es_strerror(got_), es_errname(want_), es_strerror(want_));                    \
        }                                                                                          \
    } while (0)

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- helpers -- */

/* splitmix64: a fixed seed per test, so every failure reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void rng_fill(uint64_t *s, uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)rng_next(s);
    }
}

/* A heap copy of exactly len bytes (at least one byte is allocated). */
static uint8_t *exact_copy(const void *src, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    if (len) {
        memcpy(p, src, len);
    }
    return p;
}

static void *cm_alloc(void *data, size_t size)
{
    (void)data;
    return test_malloc(size);
}

static void cm_free(void *data, void *ptr)
{
    (void)data;
    test_free(ptr);
}

static ProtobufCAllocator cm_allocator = {cm_alloc, cm_free, NULL};

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)(uintptr_t)s};
    return b;
}

/* Pack with protobuf-c into a buffer of exactly the packed size. */
static uint8_t *pack_recorded(const Es__V1__RecordedEvent *ev, size_t *len)
{
    *len = es__v1__recorded_event__get_packed_size(ev);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(es__v1__recorded_event__pack(ev, buf), *len);
    return buf;
}

/* ------------------------------------------------------------------ frame -- */

#define CAP FRAME_DEFAULT_MAX_BODY

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_frame_length_zero(void **state)
{
    (void)state;
    uint8_t hdr[FRAME_HEADER_BYTES] = {0, 0, 0, 0};
    uint32_t len = 0xdeadbeef;
    assert_rv(ES_ERR_MALFORMED, frame_parse_header(hdr, CAP, &len));
    assert_int_equal(len, 0xdeadbeef); /* set only on ES_OK */
    assert_rv(ES_ERR_MALFORMED, frame_parse_header(hdr, UINT32_MAX, &len));
}

static void test_frame_too_large(void **state)
{
    (void)state;
    const uint32_t lens[] = {CAP + 1,     CAP * 2,     FRAME_HARD_MAX_BODY, FRAME_HARD_MAX_BODY + 1,
                             0x7fffffffu, 0x80000000u, 0xfffffffeu,         0xffffffffu};
    uint8_t hdr[FRAME_HEADER_BYTES];
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
        uint32_t len = 0xdeadbeef;
        be32(hdr, lens[i]);
        assert_rv(ES_ERR_TOO_LARGE, frame_parse_header(hdr, CAP, &len));
        assert_int_equal(len, 0xdeadbeef);
    }
    /* The hard cap as the limit. */
    uint32_t len;
    be32(hdr, FRAME_HARD_MAX_BODY + 1);
    assert_rv(ES_ERR_TOO_LARGE, frame_parse_header(hdr, FRAME_HARD_MAX_BODY, &len));
    be32(hdr, 0xffffffffu);
    assert_rv(ES_ERR_TOO_LARGE, frame_parse_header(hdr, FRAME_HARD_MAX_BODY, &len));
    /* A tiny cap. */
    be32(hdr, 11);
    assert_rv(ES_ERR_TOO_LARGE, frame_parse_header(hdr, 10, &len));
}

static void test_frame_within_cap(void **state)
{
    (void)state;
    const uint32_t lens[] = {1, 2, 255, 256, 65535, 65536, CAP - 1, CAP};
    uint8_t hdr[FRAME_HEADER_BYTES];
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
        uint32_t len = 0;
        be32(hdr, lens[i]);
        assert_rv(ES_OK, frame_parse_header(hdr, CAP, &len));
        assert_int_equal(len, lens[i]);
    }
    uint32_t len = 0;
    be32(hdr, 10);
    assert_rv(ES_OK, frame_parse_header(hdr, 10, &len));
    assert_int_equal(len, 10);
    be32(hdr, FRAME_HARD_MAX_BODY);
    assert_rv(ES_OK, frame_parse_header(hdr, FRAME_HARD_MAX_BODY, &len));
    assert_int_equal(len, FRAME_HARD_MAX_BODY);
}

static void test_frame_header_round_trip(void **state)
{
    (void)state;
    uint8_t hdr[FRAME_HEADER_BYTES];
    frame_write_header(hdr, 0x01020304u);
    const uint8_t want[] = {0x01, 0x02, 0x03, 0x04};
    assert_memory_equal(hdr, want, sizeof want); /* big-endian */

    const uint32_t lens[] = {1,           0x7f,        0x80,        0xff,       0x100,
                             0xffff,      0x10000,     0xabcdef,    CAP,        FRAME_HARD_MAX_BODY,
                             0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu};
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
        uint32_t len = 0;
        uint8_t ref[FRAME_HEADER_BYTES];
        frame_write_header(hdr, lens[i]);
        be32(ref, lens[i]);
        assert_memory_equal(hdr, ref, sizeof ref);
        assert_rv(ES_OK, frame_parse_header(hdr, UINT32_MAX, &len));
        assert_int_equal(len, lens[i]);
    }
}

/* Two frames back to back: "hello" and 300 bytes of a pattern. */
#define BODY_A      "hello"
#define BODY_A_LEN  5u
#define BODY_B_LEN  300u
#define FRAME_A_LEN (FRAME_HEADER_BYTES + BODY_A_LEN)
#define STREAM_LEN  (FRAME_A_LEN + FRAME_HEADER_BYTES + BODY_B_LEN)

static void make_stream(uint8_t out[STREAM_LEN])
{
    frame_write_header(out, BODY_A_LEN);
    memcpy(out + FRAME_HEADER_BYTES, BODY_A, BODY_A_LEN);
    frame_write_header(out + FRAME_A_LEN, BODY_B_LEN);
    for (size_t i = 0; i < BODY_B_LEN; i++) {
        out[FRAME_A_LEN + FRAME_HEADER_BYTES + i] = (uint8_t)(i * 7 + 1);
    }
}

/* frame_next on a heap copy of exactly len bytes of src. */
static es_err next_exact(const uint8_t *src, size_t len, uint32_t cap, bool *complete,
                         size_t *body_off, uint32_t *body_len, size_t *consumed)
{
    uint8_t *buf = exact_copy(src, len);
    const uint8_t *body = (const uint8_t *)"sentinel";
    *consumed = 12345;
    es_err rv = frame_next(buf, len, cap, &body, body_len, consumed);
    *complete = body != NULL;
    *body_off = body ? (size_t)(body - buf) : 0;
    free(buf);
    return rv;
}

static void test_frame_next_incomplete(void **state)
{
    (void)state;
    uint8_t s[STREAM_LEN];
    make_stream(s);
    bool complete;
    size_t off, consumed;
    uint32_t blen;

    /* 0..3 header bytes, header only, half a body, one byte short. */
    const size_t cuts[] = {
        0, 1, 2, 3, FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + BODY_A_LEN / 2, FRAME_A_LEN - 1};
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
        assert_rv(ES_OK, next_exact(s, cuts[i], CAP, &complete, &off, &blen, &consumed));
        assert_false(complete);
        assert_int_equal(consumed, 0);
    }
    /* The same for the second, longer frame. */
    const size_t cuts_b[] = {1, 3, FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + BODY_B_LEN / 2,
                             FRAME_HEADER_BYTES + BODY_B_LEN - 1};
    for (size_t i = 0; i < ARRAY_LEN(cuts_b); i++) {
        assert_rv(ES_OK,
                  next_exact(s + FRAME_A_LEN, cuts_b[i], CAP, &complete, &off, &blen, &consumed));
        assert_false(complete);
        assert_int_equal(consumed, 0);
    }
}

static void test_frame_next_bad_header(void **state)
{
    (void)state;
    bool complete;
    size_t off, consumed;
    uint32_t blen;
    uint8_t h[FRAME_HEADER_BYTES + 1] = {0, 0, 0, 0, 'x'};

    assert_rv(ES_ERR_MALFORMED, next_exact(h, sizeof h, CAP, &complete, &off, &blen, &consumed));
    assert_false(complete);
    assert_int_equal(consumed, 0);

    /* Too large is known from the header alone, before any body byte. */
    const uint32_t big[] = {CAP + 1, 0x7fffffffu, 0xffffffffu};
    for (size_t i = 0; i < ARRAY_LEN(big); i++) {
        be32(h, big[i]);
        assert_rv(ES_OK, next_exact(h, 3, CAP, &complete, &off, &blen, &consumed));
        assert_false(complete);
        assert_rv(ES_ERR_TOO_LARGE,
                  next_exact(h, FRAME_HEADER_BYTES, CAP, &complete, &off, &blen, &consumed));
        assert_false(complete);
        assert_int_equal(consumed, 0);
    }

    /* "Declare 4 MiB, send 1 byte": wait under a 16 MiB cap, refuse under 1 MiB. */
    be32(h, 4u << 20);
    assert_rv(ES_OK, next_exact(h, sizeof h, CAP, &complete, &off, &blen, &consumed));
    assert_false(complete);
    assert_rv(ES_ERR_TOO_LARGE,
              next_exact(h, sizeof h, 1u << 20, &complete, &off, &blen, &consumed));
}

static void test_frame_next_one_frame(void **state)
{
    (void)state;
    uint8_t s[STREAM_LEN];
    make_stream(s);
    uint8_t *buf = exact_copy(s, FRAME_A_LEN);
    const uint8_t *body = NULL;
    uint32_t blen = 0;
    size_t consumed = 0;
    assert_rv(ES_OK, frame_next(buf, FRAME_A_LEN, CAP, &body, &blen, &consumed));
    assert_ptr_equal(body, buf + FRAME_HEADER_BYTES);
    assert_int_equal(blen, BODY_A_LEN);
    assert_int_equal(consumed, FRAME_A_LEN);
    assert_memory_equal(body, BODY_A, BODY_A_LEN);
    free(buf);

    /* A body of exactly the cap. */
    const uint32_t cap = 64;
    uint8_t f[FRAME_HEADER_BYTES + 64];
    frame_write_header(f, cap);
    memset(f + FRAME_HEADER_BYTES, 'z', cap);
    buf = exact_copy(f, sizeof f);
    assert_rv(ES_OK, frame_next(buf, sizeof f, cap, &body, &blen, &consumed));
    assert_ptr_equal(body, buf + FRAME_HEADER_BYTES);
    assert_int_equal(blen, cap);
    assert_int_equal(consumed, sizeof f);
    free(buf);
}

static void test_frame_next_two_frames(void **state)
{
    (void)state;
    uint8_t s[STREAM_LEN];
    make_stream(s);
    uint8_t *buf = exact_copy(s, STREAM_LEN);
    const uint8_t *body = NULL;
    uint32_t blen = 0;
    size_t consumed = 0;

    assert_rv(ES_OK, frame_next(buf, STREAM_LEN, CAP, &body, &blen, &consumed));
    assert_ptr_equal(body, buf + FRAME_HEADER_BYTES);
    assert_int_equal(blen, BODY_A_LEN);
    assert_int_equal(consumed, FRAME_A_LEN);

    size_t at = consumed;
    assert_rv(ES_OK, frame_next(buf + at, STREAM_LEN - at, CAP, &body, &blen, &consumed));
    assert_ptr_equal(body, buf + at + FRAME_HEADER_BYTES);
    assert_int_equal(blen, BODY_B_LEN);
    assert_int_equal(consumed, FRAME_HEADER_BYTES + BODY_B_LEN);
    for (size_t i = 0; i < BODY_B_LEN; i++) {
        assert_int_equal(body[i], (uint8_t)(i * 7 + 1));
    }
    at += consumed;
    assert_int_equal(at, STREAM_LEN);
    assert_rv(ES_OK, frame_next(buf + at, 0, CAP, &body, &blen, &consumed));
    assert_null(body);
    assert_int_equal(consumed, 0);
    free(buf);

    /* A good frame followed by a length-0 header: the first is still delivered. */
    uint8_t bad[FRAME_A_LEN + FRAME_HEADER_BYTES];
    memcpy(bad, s, FRAME_A_LEN);
    memset(bad + FRAME_A_LEN, 0, FRAME_HEADER_BYTES);
    buf = exact_copy(bad, sizeof bad);
    assert_rv(ES_OK, frame_next(buf, sizeof bad, CAP, &body, &blen, &consumed));
    assert_int_equal(consumed, FRAME_A_LEN);
    assert_rv(ES_ERR_MALFORMED,
              frame_next(buf + consumed, sizeof bad - consumed, CAP, &body, &blen, &consumed));
    free(buf);
}

/* Every prefix of the two-frame stream, as if it arrived one byte at a time. */
static void test_frame_next_every_prefix(void **state)
{
    (void)state;
    uint8_t s[STREAM_LEN];
    make_stream(s);
    for (size_t n = 0; n <= STREAM_LEN; n++) {
        uint8_t *buf = exact_copy(s, n);
        size_t at = 0;
        unsigned frames = 0;
        for (;;) {
            const uint8_t *body;
            uint32_t blen;
            size_t consumed;
            assert_rv(ES_OK, frame_next(buf + at, n - at, CAP, &body, &blen, &consumed));
            if (body == NULL) {
                assert_int_equal(consumed, 0);
                break;
            }
            assert_int_equal(consumed, FRAME_HEADER_BYTES + (size_t)blen);
            at += consumed;
            frames++;
        }
        unsigned want = (n >= FRAME_A_LEN) + (n >= STREAM_LEN);
        assert_int_equal(frames, want);
        assert_int_equal(at, want == 0 ? 0 : want == 1 ? FRAME_A_LEN : STREAM_LEN);
        free(buf);
    }
}

/* ----------------------------------------------------------------- crc32c -- */

/* The definition, one bit at a time: independent of both implementations. */
static uint32_t crc32c_ref(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
        }
    }
    return ~crc;
}

static void test_crc32c_vectors(void **state)
{
    (void)state;
    const char *check = "123456789";
    assert_int_equal(crc32c(0, check, 9), 0xe3069283u);
    assert_int_equal(crc32c_sw(0, check, 9), 0xe3069283u);
    assert_int_equal(crc32c_ref(0, (const uint8_t *)check, 9), 0xe3069283u);

    assert_int_equal(crc32c(0, "", 0), 0);
    assert_int_equal(crc32c_sw(0, "", 0), 0);
    assert_int_equal(crc32c(0x12345678u, "", 0), 0x12345678u);

    /* RFC 3720 (iSCSI), appendix B.4. */
    uint8_t v[32];
    memset(v, 0, sizeof v);
    assert_int_equal(crc32c(0, v, sizeof v), 0x8a9136aau);
    assert_int_equal(crc32c_sw(0, v, sizeof v), 0x8a9136aau);
    memset(v, 0xff, sizeof v);
    assert_int_equal(crc32c(0, v, sizeof v), 0x62a8ab43u);
    assert_int_equal(crc32c_sw(0, v, sizeof v), 0x62a8ab43u);
    for (size_t i = 0; i < sizeof v; i++) {
        v[i] = (uint8_t)i;
    }
    assert_int_equal(crc32c(0, v, sizeof v), 0x46dd794eu);
    assert_int_equal(crc32c_sw(0, v, sizeof v), 0x46dd794eu);
    for (size_t i = 0; i < sizeof v; i++) {
        v[i] = (uint8_t)(31 - i);
    }
    assert_int_equal(crc32c(0, v, sizeof v), 0x113fdb5cu);
    assert_int_equal(crc32c_sw(0, v, sizeof v), 0x113fdb5cu);
}

#define CRC_BUF (65536 + 64)
static _Alignas(64) uint8_t crc_buf[CRC_BUF];

/* Hardware (when the CPU has it) and software agree, at every alignment. */
static void test_crc32c_hw_sw_agree(void **state)
{
    (void)state;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("sse4.2")) {
        print_message("no SSE4.2: crc32c() runs the software path, comparison is trivial\n");
    }
#endif
    uint64_t seed = 1;
    rng_fill(&seed, crc_buf, sizeof crc_buf);
    const size_t big[] = {511, 512, 513, 1023, 1024, 4095, 4096, 4097, 65535, 65536};
    for (size_t align = 0; align < 16; align++) {
        for (size_t len = 0; len <= 300; len++) {
            const uint8_t *p = crc_buf + align;
            uint32_t seedcrc = (uint32_t)rng_next(&seed);
            uint32_t want = crc32c_ref(0, p, len);
            assert_int_equal(crc32c(0, p, len), want);
            assert_int_equal(crc32c_sw(0, p, len), want);
            want = crc32c_ref(seedcrc, p, len);
            assert_int_equal(crc32c(seedcrc, p, len), want);
            assert_int_equal(crc32c_sw(seedcrc, p, len), want);
        }
        for (size_t i = 0; i < ARRAY_LEN(big); i++) {
            const uint8_t *p = crc_buf + align;
            uint32_t want = crc32c_ref(0, p, big[i]);
            assert_int_equal(crc32c(0, p, big[i]), want);
            assert_int_equal(crc32c_sw(0, p, big[i]), want);
        }
    }
    /* Fresh random contents, random lengths and offsets. */
    for (int i = 0; i < 200; i++) {
        rng_fill(&seed, crc_buf, 4096 + 64);
        size_t off = rng_next(&seed) % 64;
        size_t len = rng_next(&seed) % 4097;
        assert_int_equal(crc32c(0, crc_buf + off, len), crc32c_sw(0, crc_buf + off, len));
    }
}

static void test_crc32c_incremental(void **state)
{
    (void)state;
    uint64_t seed = 2;
    uint8_t buf[257];
    rng_fill(&seed, buf, sizeof buf);
    const size_t n = sizeof buf;
    const uint32_t whole = crc32c(0, buf, n);
    assert_int_equal(whole, crc32c_ref(0, buf, n));
    for (size_t k = 0; k <= n; k++) {
        assert_int_equal(crc32c(crc32c(0, buf, k), buf + k, n - k), whole);
        assert_int_equal(crc32c_sw(crc32c_sw(0, buf, k), buf + k, n - k), whole);
        /* The two implementations continue each other's values. */
        assert_int_equal(crc32c_sw(crc32c(0, buf, k), buf + k, n - k), whole);
        assert_int_equal(crc32c(crc32c_sw(0, buf, k), buf + k, n - k), whole);
    }
    /* Many pieces of random sizes. */
    for (int round = 0; round < 100; round++) {
        uint32_t crc = 0;
        size_t at = 0;
        while (at < n) {
            size_t piece = rng_next(&seed) % 20;
            if (piece > n - at) {
                piece = n - at;
            }
            crc = crc32c(crc, buf + at, piece);
            at += piece;
        }
        assert_int_equal(crc, whole);
    }
}

/* --------------------------------------------------------------- validate -- */

typedef struct bytes_case {
    const char *bytes;
    size_t len;
    const char *what;
} bytes_case;

#define BC(lit, what)                                                                              \
    {                                                                                              \
        lit, sizeof(lit) - 1, what                                                                 \
    }

static const bytes_case bad_utf8[] = {
    BC("\x80", "lone continuation byte"),
    BC("\xc0\xaf", "overlong '/' (C0 AF)"),
    BC("\xed\xa0\x80", "surrogate U+D800"),
    BC("\xf4\x90\x80\x80", "above U+10FFFF"),
    BC("\xe2\x82", "truncated 3-byte sequence"),
    BC("\xc1\xbf", "overlong C1 lead"),
    BC("\xe0\x80\xaf", "overlong 3-byte '/'"),
    BC("\xf0\x80\x80\xaf", "overlong 4-byte '/'"),
    BC("\xed\xbf\xbf", "surrogate U+DFFF"),
    BC("\xf5\x80\x80\x80", "F5 lead"),
    BC("\xff", "FF"),
    BC("\xfe", "FE"),
    BC("\xc3", "truncated 2-byte sequence"),
    BC("\xf0\x9f\x98", "truncated 4-byte sequence"),
    BC("\xc3\x28", "bad continuation byte"),
    BC("\xbf\xbf", "two continuation bytes"),
};

static const bytes_case good_utf8[] = {
    BC("\xc3\xa9", "U+00E9"),
    BC("\xe2\x82\xac", "U+20AC"),
    BC("\xf0\x9f\x98\x80", "U+1F600"),
    BC("\xf4\x8f\xbf\xbf", "U+10FFFF"),
    BC("\xef\xbf\xbd", "U+FFFD"),
    BC("\xe0\xa0\x80", "U+0800"),
    BC("\xf0\x90\x80\x80", "U+10000"),
    BC("\xed\x9f\xbf", "U+D7FF"),
    BC("\xee\x80\x80", "U+E000"),
    BC("\xc2\xa0", "U+00A0, the first character after C1"),
    BC("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "CJK"),
};

static const bytes_case controls_utf8[] = {
    BC("\xc2\x80", "U+0080"),
    BC("\xc2\x85", "U+0085 NEL"),
    BC("\xc2\x9f", "U+009F"),
};

/* prefix + bytes + suffix into out (heap, exact length); returns the length. */
static size_t wrap(uint8_t **out, const char *prefix, const char *bytes, size_t len,
                   const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    size_t n = pl + len + sl;
    *out = malloc(n ? n : 1);
    assert_non_null(*out);
    memcpy(*out, prefix, pl);
    memcpy(*out + pl, bytes, len);
    memcpy(*out + pl + len, suffix, sl);
    return n;
}

/* Check one name in every position, as stream id (both modes) and type. */
static void expect_name(const char *bytes, size_t len, bool valid, const char *what)
{
    static const char *const around[][2] = {{"", ""}, {"ab", ""}, {"", "cd"}, {"ab", "cd"}};
    for (size_t i = 0; i < ARRAY_LEN(around); i++) {
        uint8_t *s;
        size_t n = wrap(&s, around[i][0], bytes, len, around[i][1]);
        es_err sid = es_validate_stream_id(s, n, false);
        es_err sid_r = es_validate_stream_id(s, n, true);
        es_err type = es_validate_event_type(s, n);
        es_err name = es_validate_name(s, n);
        free(s);
        es_err want_sid = valid ? ES_OK : ES_ERR_INVALID_STREAM_ID;
        es_err want_type = valid ? ES_OK : ES_ERR_INVALID_EVENT_TYPE;
        es_err want_name = valid ? ES_OK : ES_ERR_INVALID_ARGUMENT;
        if (sid != want_sid || sid_r != want_sid || type != want_type || name != want_name) {
            fail_msg("%s between \"%s\" and \"%s\": stream id %s/%s, type %s, name %s; "
                     "expected %s",
                     what, around[i][0], around[i][1], es_errname(sid), es_errname(sid_r),
                     es_errname(type), es_errname(name), valid ? "all OK" : "all invalid");
        }
    }
}

static void test_utf8(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(bad_utf8); i++) {
        const bytes_case *c = &bad_utf8[i];
        if (es_utf8_valid((const uint8_t *)c->bytes, c->len)) {
            fail_msg("es_utf8_valid accepts %s", c->what);
        }
        expect_name(c->bytes, c->len, false, c->what);
    }
    for (size_t i = 0; i < ARRAY_LEN(good_utf8); i++) {
        const bytes_case *c = &good_utf8[i];
        if (!es_utf8_valid((const uint8_t *)c->bytes, c->len)) {
            fail_msg("es_utf8_valid rejects %s", c->what);
        }
        expect_name(c->bytes, c->len, true, c->what);
    }
    assert_true(es_utf8_valid((const uint8_t *)"", 0));
    assert_true(es_utf8_valid((const uint8_t *)"plain ascii", 11));
    /* Invalid bytes in a '$' id are invalid, not merely reserved. */
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id((const uint8_t *)"$\x80", 2, false));
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id((const uint8_t *)"$\x80", 2, true));
}

static void test_controls(void **state)
{
    (void)state;
    char c[1];
    for (int b = 0x00; b < 0x20; b++) {
        c[0] = (char)b;
        expect_name(c, 1, false, "C0 control");
    }
    c[0] = 0x7f;
    expect_name(c, 1, false, "DEL");
    for (size_t i = 0; i < ARRAY_LEN(controls_utf8); i++) {
        const bytes_case *cc = &controls_utf8[i];
        /* Well-formed UTF-8, but a C1 control: the name rules reject it. */
        assert_true(es_utf8_valid((const uint8_t *)cc->bytes, cc->len));
        expect_name(cc->bytes, cc->len, false, cc->what);
    }
    /* Printable ASCII, space included, is fine. */
    for (int b = 0x20; b < 0x7f; b++) {
        c[0] = (char)b;
        if (b != '$') {
            expect_name(c, 1, true, "printable ASCII");
        }
    }
}

static void test_embedded_nul(void **state)
{
    (void)state;
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id((const uint8_t *)"ab\0cd", 5, false));
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id((const uint8_t *)"\0abc", 4, false));
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id((const uint8_t *)"abc\0", 4, false));
    assert_rv(ES_ERR_INVALID_EVENT_TYPE, es_validate_event_type((const uint8_t *)"ab\0cd", 5));
    assert_rv(ES_ERR_INVALID_EVENT_TYPE, es_validate_event_type((const uint8_t *)"\0", 1));
}

static void test_name_lengths(void **state)
{
    (void)state;
    uint8_t *big = malloc(65536);
    assert_non_null(big);
    memset(big, 'a', 65536);

    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(big, 0, false));
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(NULL, 0, false));
    assert_rv(ES_ERR_INVALID_EVENT_TYPE, es_validate_event_type(big, 0));
    assert_rv(ES_ERR_INVALID_ARGUMENT, es_validate_name(big, 0));
    assert_rv(ES_ERR_INVALID_ARGUMENT, es_validate_name(NULL, 5));

    const size_t ok[] = {1, 2, 255, ES_MAX_NAME_BYTES};
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        uint8_t *s = exact_copy(big, ok[i]);
        assert_rv(ES_OK, es_validate_stream_id(s, ok[i], false));
        assert_rv(ES_OK, es_validate_event_type(s, ok[i]));
        free(s);
    }
    assert_int_equal(ES_MAX_NAME_BYTES, 256);
    const size_t too_long[] = {ES_MAX_NAME_BYTES + 1, 512, 4096, 65536};
    for (size_t i = 0; i < ARRAY_LEN(too_long); i++) {
        assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(big, too_long[i], false));
        assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(big, too_long[i], true));
        assert_rv(ES_ERR_INVALID_EVENT_TYPE, es_validate_event_type(big, too_long[i]));
    }

    /* The cap counts bytes, not characters. */
    for (size_t i = 0; i < 128; i++) {
        memcpy(big + 2 * i, "\xc3\xa9", 2);
    }
    assert_rv(ES_OK, es_validate_stream_id(big, 256, false)); /* 128 x U+00E9 */
    assert_rv(ES_OK, es_validate_event_type(big, 256));
    big[256] = 'a';
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(big, 257, false));
    assert_rv(ES_ERR_INVALID_EVENT_TYPE, es_validate_event_type(big, 257));
    /* 255 ASCII bytes then a 2-byte character: 257 bytes. */
    memset(big, 'a', 255);
    memcpy(big + 255, "\xc3\xa9", 2);
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(big, 257, false));
    /* Cut at 256 inside that character: truncated UTF-8. */
    assert_rv(ES_ERR_INVALID_STREAM_ID, es_validate_stream_id(big, 256, false));
    free(big);
}

static void test_reserved(void **state)
{
    (void)state;
    const char *reserved[] = {"$", "$all", "$$x", "$ce-account", "$\xc3\xa9"};
    for (size_t i = 0; i < ARRAY_LEN(reserved); i++) {
        const uint8_t *s = (const uint8_t *)reserved[i];
        size_t n = strlen(reserved[i]);
        assert_rv(ES_ERR_RESERVED_STREAM, es_validate_stream_id(s, n, false));
        assert_rv(ES_OK, es_validate_stream_id(s, n, true));
        /* Event types have no '$' rule. */
        assert_rv(ES_OK, es_validate_event_type(s, n));
        assert_rv(ES_OK, es_validate_name(s, n));
    }
    const char *allowed[] = {"a$", "account-$1", " $", "price:$5"};
    for (size_t i = 0; i < ARRAY_LEN(allowed); i++) {
        const uint8_t *s = (const uint8_t *)allowed[i];
        assert_rv(ES_OK, es_validate_stream_id(s, strlen(allowed[i]), false));
    }
}

static void test_valid_names(void **state)
{
    (void)state;
    const char *ok[] = {
        "account-42",
        "a",
        "Order.Placed",
        "konto-\xc3\xbc",
        "\xe6\x97\xa5\xe6\x9c\xac-1",
        "emoji-\xf0\x9f\x98\x80",
        "with space",
        "slash/and:colon",
    };
    for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
        const uint8_t *s = (const uint8_t *)ok[i];
        size_t n = strlen(ok[i]);
        assert_rv(ES_OK, es_validate_stream_id(s, n, false));
        assert_rv(ES_OK, es_validate_event_type(s, n));
    }
}

static void test_category(void **state)
{
    (void)state;
    const struct {
        const char *id;
        size_t len;
        size_t cat;
    } cases[] = {
        {"account-42", 10, 7},    {"account", 7, 7},    {"account-", 8, 7},   {"-42", 3, 0},
        {"a-b-c", 5, 1},          {"x", 1, 1},          {"account-42", 7, 7}, {"ab-cd", 2, 2},
        {"konto-\xc3\xbc", 8, 5}, {"\xc3\xbc-1", 4, 2},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *s = exact_copy(cases[i].id, cases[i].len);
        assert_int_equal(es_category_len(s, cases[i].len), cases[i].cat);
        free(s);
    }
}

/* ----------------------------------------------------------------- pbwire -- */

static const uint64_t varints[] = {
    0,
    1,
    127,
    128,
    255,
    256,
    300,
    16383,
    16384,
    2097151,
    2097152,
    UINT32_MAX,
    (uint64_t)UINT32_MAX + 1,
    (uint64_t)1 << 35,
    (uint64_t)1 << 56,
    ((uint64_t)1 << 63) - 1,
    (uint64_t)1 << 63,
    UINT64_MAX - 1,
    UINT64_MAX,
};

static size_t varint_len_by_bits(uint64_t v)
{
    size_t bits = 0;
    while (v) {
        bits++;
        v >>= 1;
    }
    return bits == 0 ? 1 : (bits + 6) / 7;
}

static void test_varint_encoding(void **state)
{
    (void)state;
    uint8_t b[PBW_VARINT_MAX + 1];
    const struct {
        uint64_t v;
        size_t n;
        uint8_t bytes[PBW_VARINT_MAX];
    } known[] = {
        {0, 1, {0x00}},
        {127, 1, {0x7f}},
        {128, 2, {0x80, 0x01}},
        {300, 2, {0xac, 0x02}},
        {(uint64_t)1 << 63, 10, {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
        {UINT64_MAX, 10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
    };
    for (size_t i = 0; i < ARRAY_LEN(known); i++) {
        memset(b, 0xaa, sizeof b);
        assert_int_equal(pbw_put_varint(b, known[i].v), known[i].n);
        assert_memory_equal(b, known[i].bytes, known[i].n);
        assert_int_equal(b[known[i].n], 0xaa); /* nothing written past the end */
        assert_int_equal(pbw_varint_len(known[i].v), known[i].n);
    }
    for (size_t i = 0; i < ARRAY_LEN(varints); i++) {
        size_t n = pbw_put_varint(b, varints[i]);
        assert_int_equal(n, pbw_varint_len(varints[i]));
        assert_int_equal(n, varint_len_by_bits(varints[i]));
        assert_in_range(n, 1, PBW_VARINT_MAX);
    }
}

/* Write a varint field, read it back with pbw_next and pbw_find_varint. */
static void test_varint_round_trip(void **state)
{
    (void)state;
    const uint32_t fields[] = {1, 2, 15, 16, 2047, 2048, 0x1fffffff};
    for (size_t f = 0; f < ARRAY_LEN(fields); f++) {
        for (size_t i = 0; i < ARRAY_LEN(varints); i++) {
            uint8_t tmp[2 * PBW_VARINT_MAX];
            size_t n = pbw_put_varint_field(tmp, fields[f], varints[i]);
            uint8_t *buf = exact_copy(tmp, n);
            const uint8_t *pos = buf;
            pbw_field fl;
            assert_rv(ES_OK, pbw_next(&pos, buf + n, &fl));
            assert_int_equal(fl.number, fields[f]);
            assert_int_equal(fl.wire, PBW_WIRE_VARINT);
            assert_true(fl.varint == varints[i]);
            assert_ptr_equal(pos, buf + n);
            assert_rv(ES_ERR_NOT_FOUND, pbw_next(&pos, buf + n, &fl));

            uint64_t v = ~varints[i];
            assert_rv(ES_OK, pbw_find_varint(buf, n, fields[f], &v));
            assert_true(v == varints[i]);
            free(buf);
        }
    }
}

/* pbwire writes exactly what protobuf-c writes. */
static void test_pbwire_matches_protobuf_c(void **state)
{
    (void)state;
    uint8_t ours[64];
    for (size_t i = 0; i < ARRAY_LEN(varints); i++) {
        Es__V1__RecordedEvent ev = ES__V1__RECORDED_EVENT__INIT;
        ev.revision = varints[i];
        size_t len;
        uint8_t *theirs = pack_recorded(&ev, &len);
        if (varints[i] == 0) {
            assert_int_equal(len, 0); /* proto3 leaves defaults out */
        } else {
            size_t n = pbw_put_varint_field(ours, 2, varints[i]);
            assert_int_equal(n, len);
            assert_memory_equal(ours, theirs, n);
        }
        free(theirs);
    }
    /* Length-delimited fields, with 1- and 2-byte lengths. */
    const size_t lens[] = {1, 5, 127, 128, 300, 20000};
    uint8_t *payload = malloc(20000);
    assert_non_null(payload);
    memset(payload, 'p', 20000);
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
        Es__V1__RecordedEvent ev = ES__V1__RECORDED_EVENT__INIT;
        ev.causation_id.data = payload;
        ev.causation_id.len = lens[i];
        size_t len;
        uint8_t *theirs = pack_recorded(&ev, &len);
        size_t n = pbw_put_len_header(ours, 10, lens[i]);
        assert_int_equal(n, pbw_len_header_len(10, lens[i]));
        assert_int_equal(n + lens[i], len);
        assert_memory_equal(ours, theirs, n);
        assert_memory_equal(theirs + n, payload, lens[i]);
        free(theirs);
    }
    free(payload);
    /* A two-byte tag: Stats.sync_mode is field 16. */
    Es__V1__Stats st = ES__V1__STATS__INIT;
    st.sync_mode = ES__V1__SYNC_MODE__SYNC_MODE_NONE;
    size_t len = es__v1__stats__get_packed_size(&st);
    assert_true(len <= sizeof ours);
    uint8_t theirs[64];
    assert_int_equal(es__v1__stats__pack(&st, theirs), len);
    size_t n = pbw_put_varint_field(ours, 16, ES__V1__SYNC_MODE__SYNC_MODE_NONE);
    assert_int_equal(n, len);
    assert_memory_equal(ours, theirs, n);
    /* Header length helper agrees with the writer. */
    const struct {
        uint32_t field;
        size_t len;
    } hl[] = {{1, 0}, {1, 127}, {1, 128}, {15, 300}, {16, 300}, {0x1fffffff, (size_t)1 << 20}};
    for (size_t i = 0; i < ARRAY_LEN(hl); i++) {
        assert_int_equal(pbw_put_len_header(ours, hl[i].field, hl[i].len),
                         pbw_len_header_len(hl[i].field, hl[i].len));
    }
}

static void test_pbw_fixed_width(void **state)
{
    (void)state;
    /* I32 and I64 values are little-endian. */
    const uint8_t i32[] = {0x0d, 0x01, 0x02, 0x03, 0x04};
    const uint8_t i64[] = {0x11, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    uint8_t *buf = exact_copy(i32, sizeof i32);
    const uint8_t *pos = buf;
    pbw_field f;
    assert_rv(ES_OK, pbw_next(&pos, buf + sizeof i32, &f));
    assert_int_equal(f.number, 1);
    assert_int_equal(f.wire, PBW_WIRE_I32);
    assert_int_equal(f.varint, 0x04030201u);
    assert_ptr_equal(pos, buf + sizeof i32);
    assert_rv(ES_ERR_MALFORMED, pbw_next(&(const uint8_t *){buf}, buf + sizeof i32 - 1, &f));
    free(buf);

    buf = exact_copy(i64, sizeof i64);
    pos = buf;
    assert_rv(ES_OK, pbw_next(&pos, buf + sizeof i64, &f));
    assert_int_equal(f.number, 2);
    assert_int_equal(f.wire, PBW_WIRE_I64);
    assert_true(f.varint == 0x0807060504030201u);
    assert_rv(ES_ERR_MALFORMED, pbw_next(&(const uint8_t *){buf}, buf + sizeof i64 - 1, &f));
    free(buf);

    /* A double from protobuf-c (Stats.mean_commit_batch, field 17). */
    Es__V1__Stats st = ES__V1__STATS__INIT;
    st.mean_commit_batch = 2.5;
    uint8_t packed[32];
    size_t len = es__v1__stats__pack(&st, packed);
    pos = packed;
    assert_rv(ES_OK, pbw_next(&pos, packed + len, &f));
    assert_int_equal(f.number, 17);
    assert_int_equal(f.wire, PBW_WIRE_I64);
    double d;
    memcpy(&d, &f.varint, sizeof d);
    assert_true(d == 2.5);
}

/* Scan a hand-made buffer: every scanner entry point must say MALFORMED. */
static void expect_malformed(const uint8_t *bytes, size_t len, const char *what)
{
    uint8_t *buf = exact_copy(bytes, len);
    const uint8_t *pos = buf;
    pbw_field f;
    es_err rv = ES_OK;
    while (rv == ES_OK) {
        rv = pbw_next(&pos, buf + len, &f);
    }
    if (rv != ES_ERR_MALFORMED) {
        fail_msg("pbw_next on %s: %s, expected MALFORMED", what, es_errname(rv));
    }
    const uint32_t numbers[] = {1, 2, 5};
    for (size_t i = 0; i < ARRAY_LEN(numbers); i++) {
        const uint8_t *data = buf;
        size_t dlen = 99;
        uint64_t v;
        rv = pbw_find_bytes(buf, len, numbers[i], &data, &dlen);
        if (rv != ES_ERR_MALFORMED) {
            fail_msg("pbw_find_bytes(%u) on %s: %s", numbers[i], what, es_errname(rv));
        }
        assert_null(data);
        assert_int_equal(dlen, 0);
        rv = pbw_find_varint(buf, len, numbers[i], &v);
        if (rv != ES_ERR_MALFORMED) {
            fail_msg("pbw_find_varint(%u) on %s: %s", numbers[i], what, es_errname(rv));
        }
    }
    free(buf);
}

#define EXPECT_MALFORMED(what, ...)                                                                \
    do {                                                                                           \
        const uint8_t b_[] = {__VA_ARGS__};                                                        \
        expect_malformed(b_, sizeof b_, what);                                                     \
    } while (0)

static void test_pbw_malformed(void **state)
{
    (void)state;
    /* Varints. */
    EXPECT_MALFORMED("an 11-byte varint value", 0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                     0x80, 0x80, 0x80, 0x01);
    EXPECT_MALFORMED("an 11-byte tag", 0x88, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                     0x00);
    EXPECT_MALFORMED("a 10-byte varint over 64 bits", 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                     0xff, 0xff, 0xff, 0x02);
    EXPECT_MALFORMED("a varint cut short", 0x08, 0x80);
    EXPECT_MALFORMED("a varint field with no value", 0x08);
    EXPECT_MALFORMED("a tag cut short", 0x80);
    /* Tag 0 and field number 0 under every wire type. */
    EXPECT_MALFORMED("tag 0", 0x00);
    EXPECT_MALFORMED("tag 0 with a value", 0x00, 0x01);
    EXPECT_MALFORMED("tag 0, non-minimal", 0x80, 0x00);
    for (uint8_t wire = 0; wire < 8; wire++) {
        uint8_t b[] = {wire, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
        expect_malformed(b, sizeof b, "field number 0");
    }
    /* Wire types 3, 4 (groups), 6, 7 (reserved). */
    const uint8_t bad_wire[] = {3, 4, 6, 7};
    for (size_t i = 0; i < ARRAY_LEN(bad_wire); i++) {
        uint8_t b[] = {
            (uint8_t)((1 << 3) | bad_wire[i]), 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
        expect_malformed(b, sizeof b, "wire type 3/4/6/7");
        uint8_t after[] = {0x08, 0x01, (uint8_t)((2 << 3) | bad_wire[i]), 0x00};
        expect_malformed(after, sizeof after, "wire type 3/4/6/7 after a good field");
    }
    /* Field numbers above 2^29 - 1. */
    EXPECT_MALFORMED("field number 2^29", 0x80, 0x80, 0x80, 0x80, 0x10, 0x00);
    EXPECT_MALFORMED("field number 2^32", 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00);
    /* Lengths past the end. */
    EXPECT_MALFORMED("length 5, 4 bytes left", 0x0a, 0x05, 'a', 'b', 'c', 'd');
    EXPECT_MALFORMED("length 1, nothing left", 0x0a, 0x01);
    EXPECT_MALFORMED("length missing", 0x0a);
    EXPECT_MALFORMED("length 2^63", 0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                     0x01, 'x');
    EXPECT_MALFORMED("length UINT64_MAX", 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                     0xff, 0x01, 'x');
    EXPECT_MALFORMED("length past the end after a good field", 0x0a, 0x01, 'a', 0x12, 0x03, 'b');
    /* Fixed-width values cut short. */
    EXPECT_MALFORMED("I64 with 7 bytes", 0x09, 1, 2, 3, 4, 5, 6, 7);
    EXPECT_MALFORMED("I32 with 3 bytes", 0x0d, 1, 2, 3);
}

static void test_pbw_edges_ok(void **state)
{
    (void)state;
    pbw_field f;
    const uint8_t *pos;
    /* Empty buffer: nothing there. */
    uint8_t *buf = exact_copy("", 0);
    pos = buf;
    assert_rv(ES_ERR_NOT_FOUND, pbw_next(&pos, buf, &f));
    const uint8_t *data = buf;
    size_t dlen = 99;
    uint64_t v = 7;
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_bytes(buf, 0, 1, &data, &dlen));
    assert_null(data);
    assert_int_equal(dlen, 0);
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_varint(buf, 0, 1, &v));
    free(buf);

    /* The largest field number, and a length-0 field. */
    const uint8_t maxfield[] = {0xf8, 0xff, 0xff, 0xff, 0x0f, 0x2a, 0x0a, 0x00};
    buf = exact_copy(maxfield, sizeof maxfield);
    assert_rv(ES_OK, pbw_find_varint(buf, sizeof maxfield, 0x1fffffff, &v));
    assert_int_equal(v, 42);
    assert_rv(ES_OK, pbw_find_bytes(buf, sizeof maxfield, 1, &data, &dlen));
    assert_int_equal(dlen, 0);
    assert_ptr_equal(data, buf + sizeof maxfield);
    free(buf);

    /* A 10-byte varint at the 64-bit limit is fine. */
    const uint8_t max10[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    buf = exact_copy(max10, sizeof max10);
    assert_rv(ES_OK, pbw_find_varint(buf, sizeof max10, 1, &v));
    assert_true(v == UINT64_MAX);
    free(buf);
}

static Es__V1__RecordedEvent full_event(void)
{
    Es__V1__RecordedEvent ev = ES__V1__RECORDED_EVENT__INIT;
    ev.stream = bin("account-42");
    ev.revision = 41;
    ev.position = (uint64_t)1 << 40;
    ev.id = bin("0123456789abcdef");
    ev.type = bin("Deposited");
    ev.data = bin("{\"amount\":100}");
    ev.metadata = bin("{\"user\":\"ann\"}");
    ev.content_type = bin("application/json");
    ev.correlation_id = bin("fedcba9876543210");
    ev.causation_id = bin("ABCDEFGHIJKLMNOP");
    ev.recorded_at_us = 1700000000000000u;
    return ev;
}

static void expect_bytes(const uint8_t *buf, size_t len, uint32_t number, ProtobufCBinaryData want)
{
    const uint8_t *data = NULL;
    size_t dlen = 0;
    assert_rv(ES_OK, pbw_find_bytes(buf, len, number, &data, &dlen));
    assert_int_equal(dlen, want.len);
    assert_true(data >= buf && data + dlen <= buf + len); /* borrowed from buf */
    assert_memory_equal(data, want.data, want.len);
}

static void expect_varint(const uint8_t *buf, size_t len, uint32_t number, uint64_t want)
{
    uint64_t v = ~want;
    assert_rv(ES_OK, pbw_find_varint(buf, len, number, &v));
    assert_true(v == want);
}

static void test_pbw_find_recorded_event(void **state)
{
    (void)state;
    Es__V1__RecordedEvent ev = full_event();
    size_t len;
    uint8_t *buf = pack_recorded(&ev, &len);

    expect_bytes(buf, len, 1, ev.stream);
    expect_varint(buf, len, 2, ev.revision);
    expect_varint(buf, len, 3, ev.position);
    expect_bytes(buf, len, 4, ev.id);
    expect_bytes(buf, len, 5, ev.type);
    expect_bytes(buf, len, 6, ev.data);
    expect_bytes(buf, len, 7, ev.metadata);
    expect_bytes(buf, len, 8, ev.content_type);
    expect_bytes(buf, len, 9, ev.correlation_id);
    expect_bytes(buf, len, 10, ev.causation_id);
    expect_varint(buf, len, 11, ev.recorded_at_us);

    /* Absent numbers. */
    const uint8_t *data = buf;
    size_t dlen = 99;
    uint64_t v;
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_bytes(buf, len, 12, &data, &dlen));
    assert_null(data);
    assert_int_equal(dlen, 0);
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_varint(buf, len, 99, &v));
    /* A present number under the wrong wire type is malformed, not absent. */
    assert_rv(ES_ERR_MALFORMED, pbw_find_varint(buf, len, 1, &v));
    assert_rv(ES_ERR_MALFORMED, pbw_find_bytes(buf, len, 2, &data, &dlen));

    /* Every field is seen exactly once by pbw_next. */
    const uint8_t *pos = buf;
    pbw_field f;
    unsigned seen = 0;
    es_err rv;
    while ((rv = pbw_next(&pos, buf + len, &f)) == ES_OK) {
        assert_int_equal(f.number, seen + 1);
        seen++;
    }
    assert_rv(ES_ERR_NOT_FOUND, rv);
    assert_int_equal(seen, 11);
    free(buf);

    /* Defaults are not on the wire, so they are not found. */
    Es__V1__RecordedEvent sparse = ES__V1__RECORDED_EVENT__INIT;
    sparse.stream = bin("s");
    sparse.position = 1;
    buf = pack_recorded(&sparse, &len);
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_bytes(buf, len, 7, &data, &dlen));
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_varint(buf, len, 2, &v));
    assert_rv(ES_ERR_NOT_FOUND, pbw_find_varint(buf, len, 11, &v));
    expect_bytes(buf, len, 1, sparse.stream);
    expect_varint(buf, len, 3, 1);
    free(buf);
}

/* Concatenated messages merge: the last occurrence wins, as in protobuf-c. */
static void test_pbw_last_wins(void **state)
{
    (void)state;
    Es__V1__RecordedEvent first = full_event();
    Es__V1__RecordedEvent second = ES__V1__RECORDED_EVENT__INIT;
    second.stream = bin("account-43");
    second.revision = 7;
    second.type = bin("Withdrawn");

    size_t l1, l2;
    uint8_t *p1 = pack_recorded(&first, &l1);
    uint8_t *p2 = pack_recorded(&second, &l2);
    uint8_t *buf = malloc(l1 + l2);
    assert_non_null(buf);
    memcpy(buf, p1, l1);
    memcpy(buf + l1, p2, l2);
    size_t len = l1 + l2;

    expect_bytes(buf, len, 1, second.stream);
    expect_varint(buf, len, 2, second.revision);
    expect_bytes(buf, len, 5, second.type);
    /* Set only in the first: still there. */
    expect_bytes(buf, len, 6, first.data);
    expect_varint(buf, len, 3, first.position);

    /* protobuf-c reads the same. */
    Es__V1__RecordedEvent *ev = es__v1__recorded_event__unpack(&cm_allocator, len, buf);
    assert_non_null(ev);
    assert_int_equal(ev->stream.len, second.stream.len);
    assert_memory_equal(ev->stream.data, second.stream.data, second.stream.len);
    assert_true(ev->revision == second.revision);
    assert_true(ev->position == first.position);
    assert_memory_equal(ev->type.data, second.type.data, second.type.len);
    es__v1__recorded_event__free_unpacked(ev, &cm_allocator);

    /* A varint given twice by hand. */
    uint8_t twice[2 * 2 * PBW_VARINT_MAX];
    size_t n = pbw_put_varint_field(twice, 3, 5);
    n += pbw_put_varint_field(twice + n, 3, UINT64_MAX);
    expect_varint(twice, n, 3, UINT64_MAX);

    free(buf);
    free(p2);
    free(p1);
}

/* Random events: pbwire and protobuf-c agree on every field. */
static void test_pbw_random_events(void **state)
{
    (void)state;
    uint64_t seed = 3;
    enum { MAXB = 300 };
    static uint8_t pool[10][MAXB];
    for (int round = 0; round < 500; round++) {
        Es__V1__RecordedEvent ev = ES__V1__RECORDED_EVENT__INIT;
        ProtobufCBinaryData *b[] = {&ev.stream,         &ev.id,          &ev.type,
                                    &ev.data,           &ev.metadata,    &ev.content_type,
                                    &ev.correlation_id, &ev.causation_id};
        const uint32_t bnum[] = {1, 4, 5, 6, 7, 8, 9, 10};
        for (size_t i = 0; i < ARRAY_LEN(b); i++) {
            b[i]->len = (size_t)(rng_next(&seed) % (MAXB + 1));
            if (rng_next(&seed) % 4 == 0) {
                b[i]->len = 0;
            }
            rng_fill(&seed, pool[i], b[i]->len);
            b[i]->data = pool[i];
        }
        uint64_t *u[] = {&ev.revision, &ev.position, &ev.recorded_at_us};
        const uint32_t unum[] = {2, 3, 11};
        for (size_t i = 0; i < ARRAY_LEN(u); i++) {
            unsigned bits = (unsigned)(rng_next(&seed) % 65);
            *u[i] = bits == 0 ? 0 : rng_next(&seed) >> (64 - bits);
        }
        size_t len;
        uint8_t *buf = pack_recorded(&ev, &len);
        for (size_t i = 0; i < ARRAY_LEN(b); i++) {
            if (b[i]->len == 0) {
                const uint8_t *data;
                size_t dlen;
                assert_rv(ES_ERR_NOT_FOUND, pbw_find_bytes(buf, len, bnum[i], &data, &dlen));
            } else {
                expect_bytes(buf, len, bnum[i], *b[i]);
            }
        }
        for (size_t i = 0; i < ARRAY_LEN(u); i++) {
            if (*u[i] == 0) {
                uint64_t v;
                assert_rv(ES_ERR_NOT_FOUND, pbw_find_varint(buf, len, unum[i], &v));
            } else {
                expect_varint(buf, len, unum[i], *u[i]);
            }
        }
        /* Every strict prefix is either whole fields or malformed. */
        if (round < 50) {
            for (size_t cut = 0; cut < len; cut++) {
                uint8_t *pre = exact_copy(buf, cut);
                const uint8_t *pos = pre;
                pbw_field f;
                es_err rv;
                while ((rv = pbw_next(&pos, pre + cut, &f)) == ES_OK) {
                    assert_true(pos <= pre + cut);
                }
                assert_true(rv == ES_ERR_NOT_FOUND || rv == ES_ERR_MALFORMED);
                free(pre);
            }
        }
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_length_zero),
        cmocka_unit_test(test_frame_too_large),
        cmocka_unit_test(test_frame_within_cap),
        cmocka_unit_test(test_frame_header_round_trip),
        cmocka_unit_test(test_frame_next_incomplete),
        cmocka_unit_test(test_frame_next_bad_header),
        cmocka_unit_test(test_frame_next_one_frame),
        cmocka_unit_test(test_frame_next_two_frames),
        cmocka_unit_test(test_frame_next_every_prefix),
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_crc32c_hw_sw_agree),
        cmocka_unit_test(test_crc32c_incremental),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_controls),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_name_lengths),
        cmocka_unit_test(test_reserved),
        cmocka_unit_test(test_valid_names),
        cmocka_unit_test(test_category),
        cmocka_unit_test(test_varint_encoding),
        cmocka_unit_test(test_varint_round_trip),
        cmocka_unit_test(test_pbwire_matches_protobuf_c),
        cmocka_unit_test(test_pbw_fixed_width),
        cmocka_unit_test(test_pbw_malformed),
        cmocka_unit_test(test_pbw_edges_ok),
        cmocka_unit_test(test_pbw_find_recorded_event),
        cmocka_unit_test(test_pbw_last_wins),
        cmocka_unit_test(test_pbw_random_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

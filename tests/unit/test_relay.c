/*
 * test_relay — the relay's subject-token escaping (server/relay.h) and the
 * header parsers shared with the follower (natsconn/natsconn.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "natsconn.h"
#include "relay.h"

static void check_token(const char *name, const char *want)
{
    char out[RELAY_TOKEN_MAX];
    size_t n = relay_subject_token((const uint8_t *)name, strlen(name), out, sizeof out);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void test_tokens(void **state)
{
    (void)state;
    check_token("account", "account");
    check_token("account-42", "account-42");
    check_token("acme.orders", "acme%2Eorders");
    check_token("a b*c>d", "a%20b%2Ac%3Ed");
    check_token("", "%00");
    check_token("100%", "100%25");
    check_token("$x/y", "%24x%2Fy");
    check_token("caf\xc3\xa9", "caf%C3%A9");
    check_token("a\tb", "a%09b");
    check_token("-_~=:@+,!;", "-_~=:@+,!;");
    /* the longest name fits in RELAY_TOKEN_MAX */
    char name[257];
    memset(name, '.', 256);
    name[256] = '\0';
    char out[RELAY_TOKEN_MAX];
    assert_int_equal(relay_subject_token((const uint8_t *)name, 256, out, sizeof out), 768);
    /* too small a buffer: 0, never an overflow */
    assert_int_equal(relay_subject_token((const uint8_t *)"abc", 3, out, 3), 0);
    assert_int_equal(relay_subject_token((const uint8_t *)".", 1, out, 3), 0);
}

static void test_parsers(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(natsconn_parse_u64("0", &v) && v == 0);
    assert_true(natsconn_parse_u64("18446744073709551615", &v) && v == UINT64_MAX);
    assert_false(natsconn_parse_u64("18446744073709551616", &v));
    assert_false(natsconn_parse_u64("", &v));
    assert_false(natsconn_parse_u64(NULL, &v));
    assert_false(natsconn_parse_u64("12a", &v));
    assert_false(natsconn_parse_u64("-1", &v));
    assert_false(natsconn_parse_u64(" 1", &v));
    uint8_t id[16], back[16];
    char s[37];
    for (int i = 0; i < 16; i++) {
        id[i] = (uint8_t)(i * 17);
    }
    natsconn_format_uuid(id, s);
    assert_string_equal(s, "00112233-4455-6677-8899-aabbccddeeff");
    assert_true(natsconn_parse_uuid(s, back));
    assert_memory_equal(id, back, 16);
    assert_true(natsconn_parse_uuid("00112233-4455-6677-8899-AABBCCDDEEFF", back));
    assert_false(natsconn_parse_uuid("00112233-4455-6677-8899-aabbccddeef", back));
    assert_false(natsconn_parse_uuid("00112233x4455-6677-8899-aabbccddeeff", back));
    assert_false(natsconn_parse_uuid("0011223g-4455-6677-8899-aabbccddeeff", back));
    uint32_t crc;
    assert_true(natsconn_parse_crc("deadBEEF", &crc) && crc == 0xdeadbeefu);
    assert_false(natsconn_parse_crc("deadbee", &crc));
    assert_false(natsconn_parse_crc("deadbeefa", &crc));
    assert_false(natsconn_parse_crc("deadbeeg", &crc));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_parsers),
    };
    return cmocka_run_group_tests_name("relay", tests, NULL, NULL);
}

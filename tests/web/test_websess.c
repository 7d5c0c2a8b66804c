/*
 * Unit tests of the web console's session table (server/web/websess.c):
 * ids that find their session and nothing else, expiry when idle and by
 * age, logout, an admin's end by slot and generation, and the table's cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "websess.h"

static websess_table t;

static void test_open_find(void **state)
{
    websess_init(&t);
    char cookie[WEBSESS_ID_HEX + 1];
    websess *s = NULL;
    assert_int_equal(websess_open(&t, "alice", AUTH_ROLE_ADMIN, 1000, cookie, &s), ES_OK);
    assert_int_equal(strlen(cookie), WEBSESS_ID_HEX);
    assert_string_equal(s->user, "alice");
    assert_int_equal(strlen(s->csrf), WEBSESS_ID_HEX);
    assert_string_not_equal(s->csrf, cookie);
    assert_ptr_equal(websess_find(&t, cookie, 2000), s);
    /* the table keeps no copy of the id */
    assert_null(memmem(&t, sizeof t, cookie, WEBSESS_ID_HEX));
    char other[WEBSESS_ID_HEX + 1];
    memcpy(other, cookie, sizeof other);
    other[0] = other[0] == '0' ? '1' : '0';
    assert_null(websess_find(&t, other, 2000));
    assert_null(websess_find(&t, "", 2000));
    assert_null(websess_find(&t, NULL, 2000));
    other[5] = 'Z';
    assert_null(websess_find(&t, other, 2000));
    assert_null(websess_find(&t, "00", 2000));
    websess_finish(&t);
}

static void test_expiry(void **state)
{
    websess_init(&t);
    char cookie[WEBSESS_ID_HEX + 1];
    websess *s = NULL;
    assert_int_equal(websess_open(&t, "bob", AUTH_ROLE_READ, 1000, cookie, &s), ES_OK);
    /* each use moves the idle deadline */
    uint64_t now = 1000;
    for (int i = 0; i < 3; i++) {
        now += WEBSESS_IDLE_MS - 1;
        assert_ptr_equal(websess_find(&t, cookie, now), s);
    }
    now += WEBSESS_IDLE_MS;
    assert_null(websess_find(&t, cookie, now));
    assert_int_equal(websess_count(&t, now), 0);

    /* used all along, it still ends at its maximum age */
    assert_int_equal(websess_open(&t, "bob", AUTH_ROLE_READ, 0, cookie, &s), ES_OK);
    for (now = 0; now + WEBSESS_IDLE_MS / 2 < WEBSESS_MAX_AGE_MS; now += WEBSESS_IDLE_MS / 2) {
        assert_non_null(websess_find(&t, cookie, now));
    }
    assert_null(websess_find(&t, cookie, WEBSESS_MAX_AGE_MS));
    websess_finish(&t);
}

static void test_end(void **state)
{
    websess_init(&t);
    char c1[WEBSESS_ID_HEX + 1], c2[WEBSESS_ID_HEX + 1], c3[WEBSESS_ID_HEX + 1];
    websess *s1 = NULL, *s2 = NULL, *s3 = NULL;
    assert_int_equal(websess_open(&t, "a", AUTH_ROLE_ADMIN, 10, c1, &s1), ES_OK);
    assert_int_equal(websess_open(&t, "b", AUTH_ROLE_READ, 10, c2, &s2), ES_OK);
    websess_end(s1); /* logout */
    assert_null(websess_find(&t, c1, 11));
    assert_ptr_equal(websess_find(&t, c2, 11), s2);

    size_t slot = websess_slot(&t, s2);
    uint32_t gen = s2->gen;
    assert_false(websess_end_slot(&t, slot, gen + 1, 12)); /* another generation */
    assert_false(websess_end_slot(&t, WEBSESS_MAX, gen, 12));
    assert_true(websess_end_slot(&t, slot, gen, 12));
    assert_null(websess_find(&t, c2, 13));
    assert_false(websess_end_slot(&t, slot, gen, 13)); /* ended already */

    /* a later session in the same slot is not ended by the old handle */
    assert_int_equal(websess_open(&t, "c", AUTH_ROLE_READ, 14, c3, &s3), ES_OK);
    if (websess_slot(&t, s3) == slot) {
        assert_false(websess_end_slot(&t, slot, gen, 15));
    }
    assert_ptr_equal(websess_find(&t, c3, 15), s3);
    websess_finish(&t);
}

static void test_cap(void **state)
{
    websess_init(&t);
    static char cookies[WEBSESS_MAX + 1][WEBSESS_ID_HEX + 1];
    websess *s = NULL;
    for (uint64_t i = 0; i < WEBSESS_MAX; i++) {
        assert_int_equal(websess_open(&t, "u", AUTH_ROLE_READ, 100 + i, cookies[i], &s), ES_OK);
    }
    assert_int_equal(websess_count(&t, 1000), WEBSESS_MAX);
    /* session 0 is used again: session 1 is now the least recently used */
    assert_non_null(websess_find(&t, cookies[0], 1000));
    assert_int_equal(websess_open(&t, "v", AUTH_ROLE_READ, 1001, cookies[WEBSESS_MAX], &s), ES_OK);
    assert_int_equal(websess_count(&t, 1001), WEBSESS_MAX);
    assert_null(websess_find(&t, cookies[1], 1002));
    assert_non_null(websess_find(&t, cookies[0], 1002));
    assert_non_null(websess_find(&t, cookies[2], 1002));
    assert_non_null(websess_find(&t, cookies[WEBSESS_MAX], 1002));
    websess_finish(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_find),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_end),
        cmocka_unit_test(test_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

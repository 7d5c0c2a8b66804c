/*
 * test_err — the C error table (ES_ERR_TABLE in es/err.h) and the wire enum
 * (es.v1.ErrorCode in es.proto) must stay one table.
 *
 * Design notes: the proto side is read through the enum descriptor that
 * protoc-c generates, never through the ES__V1__ERROR_CODE__* constants, so
 * an entry added to one side only makes a test fail with a message naming
 * the entry instead of breaking the build. Both directions are walked: every
 * C entry must exist on the wire with the same number, and every wire value
 * must exist in C with the same name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "es.pb-c.h"
#include "es/err.h"

#define WIRE_PREFIX "ERROR_CODE_"

typedef struct c_entry {
    const char *name;
    int number;
    const char *message;
} c_entry;

static const c_entry c_table[] = {
#define C_ENTRY_(name, num, msg) {#name, num, msg},
    ES_ERR_TABLE(C_ENTRY_)
#undef C_ENTRY_
};

#define C_COUNT (sizeof(c_table) / sizeof(c_table[0]))

static const ProtobufCEnumDescriptor *wire(void)
{
    return &es__v1__error_code__descriptor;
}

static const c_entry *c_find_number(int number)
{
    for (size_t i = 0; i < C_COUNT; i++) {
        if (c_table[i].number == number) {
            return &c_table[i];
        }
    }
    return NULL;
}

static void test_descriptor_is_error_code(void **state)
{
    (void)state;
    assert_int_equal(wire()->magic, PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC);
    assert_string_equal(wire()->name, "es.v1.ErrorCode");
}

static void test_same_count(void **state)
{
    (void)state;
    if (wire()->n_values != C_COUNT) {
        fail_msg("es.v1.ErrorCode has %u values, ES_ERR_TABLE has %zu entries: add the missing "
                 "one to the other side",
                 wire()->n_values, C_COUNT);
    }
}

/* Every C entry is on the wire, under ERROR_CODE_<NAME>, with its number. */
static void test_c_entries_on_wire(void **state)
{
    (void)state;
    char wire_name[128];
    for (size_t i = 0; i < C_COUNT; i++) {
        const c_entry *e = &c_table[i];
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(wire(), e->number);
        if (v == NULL) {
            fail_msg("ES_ERR_%s = %d has no value in es.v1.ErrorCode", e->name, e->number);
        }
        int n = snprintf(wire_name, sizeof wire_name, WIRE_PREFIX "%s", e->name);
        assert_true(n > 0 && (size_t)n < sizeof wire_name);
        if (strcmp(v->name, wire_name) != 0) {
            fail_msg("number %d: C says %s, the wire says %s", e->number, wire_name, v->name);
        }
        const ProtobufCEnumValue *by_name =
            protobuf_c_enum_descriptor_get_value_by_name(wire(), wire_name);
        if (by_name == NULL || by_name->value != e->number) {
            fail_msg("%s: C number %d, wire number %d", wire_name, e->number,
                     by_name ? by_name->value : -1);
        }
    }
}

/* Every wire value is in C, with the same name and number. */
static void test_wire_values_in_c(void **state)
{
    (void)state;
    const size_t plen = strlen(WIRE_PREFIX);
    for (unsigned i = 0; i < wire()->n_values; i++) {
        const ProtobufCEnumValue *v = &wire()->values[i];
        if (strncmp(v->name, WIRE_PREFIX, plen) != 0) {
            fail_msg("wire value %s does not start with " WIRE_PREFIX, v->name);
        }
        const c_entry *e = c_find_number(v->value);
        if (e == NULL) {
            fail_msg("%s = %d has no entry in ES_ERR_TABLE", v->name, v->value);
        }
        if (strcmp(v->name + plen, e->name) != 0) {
            fail_msg("number %d: the wire says %s, C says ES_ERR_%s", v->value, v->name, e->name);
        }
        assert_string_equal(es_errname((es_err)v->value), v->name + plen);
    }
}

/* Numbers are unique in C (the wire has a check of its own in protoc). */
static void test_c_numbers_unique(void **state)
{
    (void)state;
    for (size_t i = 0; i < C_COUNT; i++) {
        assert_true(c_table[i].number >= 0);
        for (size_t k = i + 1; k < C_COUNT; k++) {
            if (c_table[i].number == c_table[k].number) {
                fail_msg("ES_ERR_%s and ES_ERR_%s share number %d", c_table[i].name,
                         c_table[k].name, c_table[i].number);
            }
        }
    }
}

static void test_ok_is_zero(void **state)
{
    (void)state;
    assert_int_equal(ES_OK, 0);
    assert_int_equal(ES_ERR_OK, 0);
    assert_string_equal(es_errname(ES_OK), "OK");
}

static void test_strerror_in_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < C_COUNT; i++) {
        es_err err = (es_err)c_table[i].number;
        const char *msg = es_strerror(err);
        assert_non_null(msg);
        assert_true(msg[0] != '\0');
        assert_string_equal(msg, c_table[i].message);
        assert_string_not_equal(msg, "unknown error");

        const char *name = es_errname(err);
        assert_non_null(name);
        assert_string_equal(name, c_table[i].name);
    }
    assert_string_equal(es_strerror(ES_ERR_WRONG_EXPECTED_REVISION), "wrong expected revision");
    assert_string_equal(es_errname(ES_ERR_WRONG_EXPECTED_REVISION), "WRONG_EXPECTED_REVISION");
    assert_string_equal(es_errname(ES_ERR_STORE_FULL), "STORE_FULL");
}

static void test_outside_table(void **state)
{
    (void)state;
    int max = 0;
    for (size_t i = 0; i < C_COUNT; i++) {
        if (c_table[i].number > max) {
            max = c_table[i].number;
        }
    }
    const int outside[] = {max + 1, max + 2, 100, 1000, 65536, INT_MAX, -1, INT_MIN};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        assert_null(c_find_number(outside[i]));
        es_err err = (es_err)outside[i];
        const char *msg = es_strerror(err);
        assert_non_null(msg);
        assert_string_equal(msg, "unknown error");
        const char *name = es_errname(err);
        assert_non_null(name);
        assert_string_equal(name, "UNKNOWN");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor_is_error_code), cmocka_unit_test(test_same_count),
        cmocka_unit_test(test_c_entries_on_wire),        cmocka_unit_test(test_wire_values_in_c),
        cmocka_unit_test(test_c_numbers_unique),         cmocka_unit_test(test_ok_is_zero),
        cmocka_unit_test(test_strerror_in_table),        cmocka_unit_test(test_outside_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * check_rv — the cmocka assertion on an es_err that the tests of the
 * libraries share: on a mismatch the message names the expression, what it
 * returned (name and text) and what was wanted. Include after <cmocka.h>.
 */
#ifndef ES_TEST_CHECK_RV_H
#define ES_TEST_CHECK_RV_H

#include "es/err.h"

#define CHECK_RV(expr, want)                                                                       \
    do {                                                                                           \
        es_err rv_ = (expr);                                                                       \
        if (rv_ != (want)) {                                                                       \
            fail_msg("%s = %s (%s), want %s", #expr, es_errname(rv_), es_strerror(rv_),            \
                     es_errname(want));                                                            \
        }                                                                                          \
    } while (0)

#endif

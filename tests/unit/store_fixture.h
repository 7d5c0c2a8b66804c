/*
 * store_fixture — what the store's unit tests share: a fresh store in a
 * temporary directory per test, events with counter-made ids, appends,
 * collectors of what reads hand out, the "nothing written" comparison, and
 * raw LMDB access for making damage.
 *
 * Design notes: every test runs in a fresh temporary directory (mkdtemp
 * under $TMPDIR or /tmp, removed afterwards) with its own store. Reads are
 * checked by decoding what the store hands out (packed es.v1.RecordedEvent)
 * with protobuf-c and comparing every field with what was appended. "Nothing
 * written" is proven by comparing the head, the event and stream counts and
 * the state of the streams involved before and after. Damage (a flipped
 * byte, a wrong format version, a foreign LMDB environment) is made with
 * LMDB directly, as a faulty disk or another program would.
 * Event ids come from a per-test counter, so every run is the same.
 */
#ifndef ES_TEST_STORE_FIXTURE_H
#define ES_TEST_STORE_FIXTURE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <lmdb.h>
#include <stdbool.h>

#include "es.pb-c.h"
#include "es/err.h"
#include "store.h"

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

#define ARRAY_LEN(a)  (sizeof(a) / sizeof((a)[0]))
#define U8(s)         ((const uint8_t *)(s))
#define TEST_MAP_SIZE (1ull << 30)

typedef struct fx {
    char root[512]; /* the temporary directory */
    char path[600]; /* root/db: the data directory */
    store *s;
    uint64_t next_id; /* event id counter */
} fx;

typedef struct evset {
    size_t n;
    store_event_in *in;
    uint8_t (*ids)[16];
    char (*data)[40];
} evset;

typedef struct coll {
    size_t n, cap;
    Es__V1__RecordedEvent **ev;
    size_t stop_after; /* 0 = never stop */
} coll;

typedef struct state_snap {
    uint64_t head, events, streams;
} state_snap;

/* What store_list_streams hands out, up to 64 streams. */
typedef struct list_coll {
    char names[64][300];
    store_stream_info info[64];
    size_t n;
    size_t stop_after;
} list_coll;

/* Every test: cmocka setup and teardown of a fresh fx. */
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

void rm_rf(const char *path);
int fx_setup(void **state);
int fx_teardown(void **state);
es_err try_open(const char *path, uint64_t map_size, bool sync, bool ro, store **out, char *msg,
                size_t msg_len);
store *open_opts(const store_options *o);
store *open_at(const char *path, uint64_t map_size, bool sync, bool ro);
void fx_open(fx *f);
void fx_reopen(fx *f);
void set_id(uint8_t id[16], uint64_t n);
void evset_make(evset *e, fx *f, size_t n, const char *type);
void evset_free(evset *e);
store_append_in mk_append(const char *stream, store_expect ex, uint64_t rev, const evset *e);
es_err append_one(store *s, const store_append_in *a, store_append_result *res);
es_err append_ev(store *s, const char *stream, store_expect ex, uint64_t rev, const evset *e,
                 store_append_result *res);
store_append_result add(fx *f, const char *stream, size_t n);
int coll_visit(void *ctx, const store_record *rec);
void coll_free(coll *c);
bool bin_is(ProtobufCBinaryData b, const void *p, size_t len);
bool bin_is_str(ProtobufCBinaryData b, const char *s);
void read_stream_all(store *s, const char *stream, uint32_t page_size, coll *c);
void read_all_fwd(store *s, const store_filter *flt, uint32_t page_size, coll *c);
int count_visit(void *ctx, const store_record *rec);
state_snap snap_state(store *s);
void assert_same_state(store *s, state_snap before);
void check_log_print(void *ctx, const char *line);
void assert_check_clean(store *s);
bool stream_exists(store *s, const char *stream);
uint64_t last_rev(store *s, const char *stream);
MDB_env *raw_env(const char *path);
void raw_put(const char *path, const char *db, const void *key, size_t klen, const void *val,
             size_t vlen);
void raw_del(const char *path, const char *db, const void *key, size_t klen);
void raw_flip_record_byte(const char *path, uint64_t pos, size_t offset);
void write_file(const char *path, const void *data, size_t len);
uint8_t *read_file(const char *path, size_t *len);
void dir_listing(const char *path, char *buf, size_t len);
int list_visit(void *ctx, const uint8_t *name, size_t len, const store_stream_info *info);

#endif

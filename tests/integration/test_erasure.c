/*
 * test_erasure — erasure through a real esd, libesclient and esctl: events
 * carrying a marker in data and metadata, a backup before the erasure, the
 * erasure of a stream and of a data subject, a backup after it, and the
 * pre-erasure backup restored into a fresh esd with the key store of the
 * post-erasure backup.
 *
 * Design notes: "gone" is a byte search of every file of a directory for
 * the marker, as someone holding the files would look. The encrypted store
 * never writes the marker in plain, so the erasure is proven by the copies
 * of the data taken before it: restored, they serve ERASED; the control
 * stream still reads. A plain store (--no-encryption) is the counter-proof
 * that the search finds the marker where it is on disk.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "es/client.h"
#include "support.h"

#define MARK      "MARKER-e41d07-personal-data"
#define META_MARK "MARKER-e41d07-personal-metadata"
#define CTRL_MARK "CONTROL-93ab11-keep"

#define CHECK_RV(c, expected, expr)                                                                \
    do {                                                                                           \
        es_err want_ = (expected), got_ = (expr);                                                  \
        if (got_ != want_) {                                                                       \
            fail_msg("%s: got %s, expected %s (%s)", #expr, es_errname(got_), es_errname(want_),   \
                     es_client_errmsg(c));                                                         \
        }                                                                                          \
    } while (0)

/* Occurrences of s in every regular file under dir (recursively). */
static size_t count_in_dir(const char *dir, const char *s)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0, sl = strlen(s);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            n += count_in_dir(p, s);
            continue;
        }
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        char *b = malloc((size_t)st.st_size + 1);
        assert_non_null(b);
        size_t len = fread(b, 1, (size_t)st.st_size, f);
        fclose(f);
        for (size_t i = 0; i + sl <= len; i++) {
            n += memcmp(b + i, s, sl) == 0;
        }
        free(b);
    }
    closedir(d);
    return n;
}

static es_client *connect_to(const esd_proc *e)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = e->address;
    o.client_name = "test-erasure";
    es_client *c = NULL;
    assert_int_equal(es_client_create(&o, &c), ES_OK);
    return c;
}

static void put(es_client *c, const char *stream, const char *subject, const char *data,
                const char *meta)
{
    es_event ev = {.type = "Registered",
                   .data = data,
                   .data_len = strlen(data),
                   .metadata = meta,
                   .metadata_len = strlen(meta)};
    es_append_result res;
    es_expected any = {ES_EXPECT_ANY, 0};
    if (subject) {
        CHECK_RV(c, ES_OK, es_stream_append_subject(c, stream, subject, any, &ev, 1, &res));
    } else {
        CHECK_RV(c, ES_OK, es_stream_append(c, stream, any, &ev, 1, &res));
    }
}

static es_err read_first(es_client *c, const char *stream, char *data, size_t cap)
{
    es_read_iter *rd = NULL;
    es_err rv = es_read_stream(c, stream, NULL, &rd);
    if (rv != ES_OK) {
        return rv;
    }
    const es_recorded_event *ev = NULL;
    rv = es_read_next(rd, &ev);
    if (rv == ES_OK && !ev) {
        rv = ES_ERR_NOT_FOUND;
    }
    if (rv == ES_OK && data) {
        size_t n = ev->data_len < cap - 1 ? ev->data_len : cap - 1;
        memcpy(data, ev->data, n);
        data[n] = '\0';
    }
    es_read_destroy(rd);
    return rv;
}

static int esctl(const char *out, const char *const *args)
{
    int st = h_esctl(args, out, 60000);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool file_has(const char *path, const char *s)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, s) != NULL;
}

static void erasure_reaches_the_store_and_old_backups(void **state)
{
    (void)state;
    esd_proc e;
    assert_int_equal(esd_init(&e, NULL), 0);
    assert_int_equal(esd_start(&e, 20000), 0);
    es_client *c = connect_to(&e);
    put(c, "person-1", NULL, MARK, META_MARK);
    put(c, "person-1", NULL, MARK, META_MARK);
    put(c, "account-7", "alice", MARK, META_MARK);
    put(c, "profile-7", "alice", MARK, META_MARK);
    put(c, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK);
    assert_int_equal(es_snapshot_save(c, "person-1", 1, 1, MARK, strlen(MARK)), ES_OK);

    char out[512], pre[512], post[512];
    snprintf(out, sizeof out, "%s/esctl.out", e.dir);
    snprintf(pre, sizeof pre, "%s/backup-pre", e.dir);
    snprintf(post, sizeof post, "%s/backup-post", e.dir);
    const char *bk_pre[] = {"db", "backup", e.data_dir, pre, NULL};
    assert_int_equal(esctl(out, bk_pre), 0);

    /* Confirmation required; the wrong revision changes nothing. */
    const char *bare[] = {"-s", e.address, "stream", "erase", "person-1", NULL};
    assert_int_equal(esctl(out, bare), 2);
    const char *wrong[] = {"-s", e.address, "stream", "erase", "person-1", "--expected", "0", NULL};
    assert_int_equal(esctl(out, wrong), 1);
    assert_true(file_has(out, "WRONG_EXPECTED_REVISION"));
    char data[128];
    CHECK_RV(c, ES_OK, read_first(c, "person-1", data, sizeof data));
    assert_string_equal(data, MARK);

    const char *right[] = {"-s",       e.address,    "--json", "stream", "erase",
                           "person-1", "--expected", "1",      NULL};
    assert_int_equal(esctl(out, right), 0);
    assert_true(file_has(out, "\"erased\": true") || file_has(out, "\"erased\":true"));
    const char *subj_bare[] = {"-s", e.address, "subject", "erase", "alice", NULL};
    assert_int_equal(esctl(out, subj_bare), 2);
    const char *subj[] = {"-s", e.address, "subject", "erase", "alice", "--force", NULL};
    assert_int_equal(esctl(out, subj), 0);
    const char *rd[] = {"-s", e.address, "read", "account-7", NULL};
    assert_int_equal(esctl(out, rd), 1);
    assert_true(file_has(out, "ERASED"));

    CHECK_RV(c, ES_ERR_ERASED, read_first(c, "person-1", NULL, 0));
    CHECK_RV(c, ES_ERR_ERASED, read_first(c, "profile-7", NULL, 0));
    CHECK_RV(c, ES_OK, read_first(c, "ctrl-1", data, sizeof data));
    assert_string_equal(data, CTRL_MARK);
    es_snapshot snap;
    CHECK_RV(c, ES_ERR_ERASED, es_snapshot_load(c, "person-1", &snap));

    const char *bk_post[] = {"db", "backup", e.data_dir, post, NULL};
    assert_int_equal(esctl(out, bk_post), 0);
    es_client_destroy(c);
    int st;
    assert_int_equal(esd_stop(&e, SIGTERM, 20000, &st, NULL), 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* No file of the primary or of either backup holds the marker. */
    assert_int_equal(count_in_dir(e.data_dir, "MARKER-e41d07"), 0);
    assert_int_equal(count_in_dir(pre, "MARKER-e41d07"), 0);
    assert_int_equal(count_in_dir(post, "MARKER-e41d07"), 0);

    /* The pre-erasure backup, restored with the key store as it is now. */
    esd_proc r;
    assert_int_equal(esd_init(&r, NULL), 0);
    assert_int_equal(mkdir(r.data_dir, 0700), 0);
    char from[700], to[700];
    snprintf(from, sizeof from, "%s/data.mdb", pre);
    snprintf(to, sizeof to, "%s/data.mdb", r.data_dir);
    assert_int_equal(h_copy_file(from, to), 0);
    snprintf(from, sizeof from, "%s/keys.esk", post);
    snprintf(to, sizeof to, "%s/keys.esk", r.data_dir);
    assert_int_equal(h_copy_file(from, to), 0);
    assert_int_equal(esd_start(&r, 20000), 0);
    c = connect_to(&r);
    CHECK_RV(c, ES_ERR_ERASED, read_first(c, "person-1", NULL, 0));
    CHECK_RV(c, ES_ERR_ERASED, read_first(c, "account-7", NULL, 0));
    CHECK_RV(c, ES_ERR_ERASED, es_snapshot_load(c, "person-1", &snap));
    CHECK_RV(c, ES_OK, read_first(c, "ctrl-1", data, sizeof data));
    assert_string_equal(data, CTRL_MARK);
    es_client_destroy(c);
    assert_int_equal(esd_finish(&r, 20000), 0);
    esd_destroy(&r);
    esd_destroy(&e);
}

/* The counter-proof: without encryption the search finds the marker, and
 * such a stream cannot be erased. */
static void a_plain_store_is_searchable_and_not_erasable(void **state)
{
    (void)state;
    esd_proc e;
    const char *args[] = {"--no-encryption", NULL};
    assert_int_equal(esd_init(&e, args), 0);
    assert_int_equal(esd_start(&e, 20000), 0);
    es_client *c = connect_to(&e);
    put(c, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK);
    es_erased er;
    CHECK_RV(c, ES_ERR_NOT_ERASABLE,
             es_stream_erase(c, "ctrl-1", (es_expected){ES_EXPECT_ANY, 0}, true, &er));
    es_event ev = {.type = "T", .data = "x", .data_len = 1};
    es_append_result res;
    CHECK_RV(c, ES_ERR_INVALID_ARGUMENT,
             es_stream_append_subject(c, "ctrl-2", "alice", (es_expected){ES_EXPECT_ANY, 0}, &ev, 1,
                                      &res));
    CHECK_RV(c, ES_ERR_INVALID_ARGUMENT, es_subject_erase(c, "bad\001id", &er));
    es_client_destroy(c);
    int st;
    assert_int_equal(esd_stop(&e, SIGTERM, 20000, &st, NULL), 0);
    assert_true(count_in_dir(e.data_dir, CTRL_MARK) >= 2);
    esd_destroy(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(erasure_reaches_the_store_and_old_backups),
        cmocka_unit_test(a_plain_store_is_searchable_and_not_erasable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

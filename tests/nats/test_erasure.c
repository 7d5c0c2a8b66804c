/*
 * test_erasure — an erasure on the primary reaches the JetStream copy and
 * the follower: after it and the catch-up, the erased data is in no file of
 * the primary's data directory, of the follower's, or of nats-server's
 * store directory.
 *
 * Design notes
 * ------------
 * "Gone" is shown as an attacker holding the files would look: a byte
 * search of every file of each directory. One JetStream node. An encrypted
 * primary (the default) relays to stream E; a follower copies it. Events
 * carrying a marker in data and metadata go to a stream of their own
 * (person-1) and to two streams of one data subject (subject-7); a control
 * stream (ctrl-1) carries another marker. Once the follower reads them all
 * (with the keys the relay published in E_KEYS), the test keeps the three
 * keys from E_KEYS, erases person-1 and subject-7 on the primary, and
 * waits until the relay and the follower are past the erasure records.
 * Then the follower answers ERASED for the erased streams and still reads
 * the control stream, also after a restart; and after every process has
 * stopped (nats-server flushed), the markers are found 0 times in the three
 * directories and the erased keys' bytes 0 times, while the control key is
 * found in each (the search finds what is there). A plain primary
 * (--no-encryption) relaying to stream PL with its own follower shows the
 * same search finding its marker in all three places: without encryption,
 * nothing of this holds. In between, the refusals of the keys stream are
 * exercised (keys_refused), and a subject bound before a promotion of the
 * follower is erased by name on the promoted store (promoted_subject).
 */
#include <dirent.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "natsh.h"
#include "rel.h"
#include "support.h"

#define MARK       "MARKER-e4c1d7-person"
#define META_MARK  "MARKER-e4c1d7-meta"
#define SUBJ_MARK  "MARKER-e4c1d7-subject"
#define CTRL_MARK  "CONTROL-9b27aa-keep"
#define PLAIN_MARK "PLAINMARK-31f0c2-seen"
#define WAIT_MS    60000

/* Occurrences of needle in every regular file under dir (recursively). */
static size_t count_in_dir(const char *dir, const void *needle, size_t nlen)
{
    DIR *d = opendir(dir);
    REL_CHECK(d != NULL, "cannot open %s", dir);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (de->d_type == DT_DIR) {
            n += count_in_dir(p, needle, nlen);
            continue;
        }
        if (de->d_type != DT_REG) {
            continue;
        }
        FILE *f = fopen(p, "rb");
        if (!f) {
            continue;
        }
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *b = len > 0 ? malloc((size_t)len) : NULL;
        if (b && fread(b, 1, (size_t)len, f) == (size_t)len) {
            for (long i = 0; i + (long)nlen <= len; i++) {
                n += memcmp(b + i, needle, nlen) == 0;
            }
        }
        free(b);
        fclose(f);
    }
    closedir(d);
    return n;
}

static size_t count_str(const char *dir, const char *s)
{
    return count_in_dir(dir, s, strlen(s));
}

static es_stats stats_of(const char *address)
{
    es_client *c = rel_client(address, 10000);
    es_stats st;
    es_err rv = es_stats_get(c, &st);
    es_client_destroy(c);
    REL_CHECK(rv == ES_OK, "stats: %s", es_strerror(rv));
    return st;
}

static void append(es_client *c, const char *stream, const char *subject, const char *data,
                   const char *meta, int n)
{
    for (int i = 0; i < n; i++) {
        es_event e = {.type = "Registered",
                      .data = data,
                      .data_len = strlen(data),
                      .metadata = meta,
                      .metadata_len = strlen(meta)};
        es_err rv = subject
                        ? es_stream_append_subject(c, stream, subject,
                                                   (es_expected){ES_EXPECT_ANY, 0}, &e, 1, NULL)
                        : es_stream_append(c, stream, (es_expected){ES_EXPECT_ANY, 0}, &e, 1, NULL);
        REL_CHECK(rv == ES_OK, "append to %s: %s", stream, es_strerror(rv));
    }
}

/* The first event of a stream: ES_OK with its data and metadata in out
 * ("data|meta"), or the error of the read. */
static es_err read_first(const char *address, const char *stream, char *out, size_t cap)
{
    es_client *c = rel_client(address, 10000);
    es_read_iter *it = NULL;
    es_err rv = es_read_stream(c, stream, NULL, &it);
    const es_recorded_event *ev = NULL;
    if (rv == ES_OK) {
        rv = es_read_next(it, &ev);
    }
    if (rv == ES_OK && !ev) {
        rv = ES_ERR_NOT_FOUND;
    }
    if (rv == ES_OK) {
        snprintf(out, cap, "%.*s|%.*s", (int)ev->data_len, (const char *)ev->data,
                 (int)ev->metadata_len, (const char *)ev->metadata);
    }
    es_read_destroy(it);
    es_client_destroy(c);
    return rv;
}

static void expect_reads(const char *address, const char *stream, const char *data,
                         const char *meta)
{
    char got[256], want[256];
    es_err rv = read_first(address, stream, got, sizeof got);
    REL_CHECK(rv == ES_OK, "read %s: %s", stream, es_strerror(rv));
    snprintf(want, sizeof want, "%s|%s", data, meta);
    REL_CHECK(strcmp(got, want) == 0, "read %s: '%s', expected '%s'", stream, got, want);
}

static void expect_erased(const char *address, const char *stream)
{
    char got[256];
    es_err rv = read_first(address, stream, got, sizeof got);
    REL_CHECK(rv == ES_ERR_ERASED, "read %s on %s: %s, expected ERASED", stream, address,
              es_strerror(rv));
}

/* Wait until the relay acknowledged the primary's head and the follower
 * imported it. */
static void wait_caught_up(const esd_proc *p, const esd_proc *f)
{
    uint64_t head = stats_of(p->address).head_position;
    int64_t deadline = h_now_ms() + WAIT_MS;
    es_stats st;
    while ((st = stats_of(p->address)).relay_acked_position < head) {
        REL_CHECK(h_now_ms() < deadline, "relay stuck at %" PRIu64 " of %" PRIu64,
                  st.relay_acked_position, head);
        h_sleep_ms(20);
    }
    while ((st = stats_of(f->address)).head_position < head) {
        REL_CHECK(!st.follower_halted, "the follower halted (see %s)", f->log_file);
        REL_CHECK(h_now_ms() < deadline, "follower stuck at %" PRIu64 " of %" PRIu64,
                  st.head_position, head);
        h_sleep_ms(20);
    }
}

/* Every key of the keys stream, by slot (1..3). */
static void keys_of(jsCtx *js, uint8_t keys[4][32])
{
    for (int slot = 1; slot <= 3; slot++) {
        char subject[64];
        snprintf(subject, sizeof subject, "es_keys.%d", slot);
        natsMsg *m = NULL;
        natsStatus s = js_GetLastMsg(&m, js, "E_KEYS", subject, NULL, NULL);
        REL_CHECK(s == NATS_OK && natsMsg_GetDataLength(m) == 32, "no key for slot %d in E_KEYS",
                  slot);
        memcpy(keys[slot], natsMsg_GetData(m), 32);
        natsMsg_Destroy(m);
    }
}

static bool log_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

static void wait_log(const char *path, const char *needle)
{
    int64_t deadline = h_now_ms() + WAIT_MS;
    while (!log_has(path, needle)) {
        REL_CHECK(h_now_ms() < deadline, "no log line '%s' in %s", needle, path);
        h_sleep_ms(20);
    }
}

/* Publish a message of the keys stream by hand (subject_hex: an
 * Es-Key-Subject header, or NULL); @return its sequence. */
static uint64_t key_put_subject(jsCtx *js, uint64_t slot, const void *payload, int len,
                                const char *subject_hex)
{
    char subject[64], num[24];
    snprintf(subject, sizeof subject, "es_keys.%" PRIu64, slot);
    snprintf(num, sizeof num, "%" PRIu64, slot);
    natsMsg *m = NULL;
    natsMsg_Create(&m, subject, NULL, payload, len);
    natsMsgHeader_Set(m, "Es-Key-Slot", num);
    if (subject_hex) {
        natsMsgHeader_Set(m, "Es-Key-Subject", subject_hex);
    }
    jsPubAck *pa = NULL;
    natsStatus s = js_PublishMsg(&pa, js, m, NULL, NULL);
    REL_CHECK(s == NATS_OK, "publish to E_KEYS: %s", natsStatus_GetText(s));
    uint64_t seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    return seq;
}

static uint64_t key_put(jsCtx *js, uint64_t slot, const void *payload, int len)
{
    return key_put_subject(js, slot, payload, len, NULL);
}

/*
 * What the relay and the follower refuse in the keys stream. Slot 4 is the
 * next new stream's (three were taken, in order). A foreign key at that
 * slot stops the relay until it is removed; a follower that finds no key
 * imports up to the event that needs it and waits (not halted); a key
 * message of the wrong size halts it, and so does the right key with an
 * Es-Key-Subject that is not the hex of a subject id; with the right key
 * back, it catches up.
 */
static void keys_refused(esd_proc *p, esd_proc *f, jsCtx *js)
{
    int status;
    REL_CHECK(esd_stop(f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    uint8_t foreign[32];
    memset(foreign, 0xa5, sizeof foreign);
    uint64_t seq = key_put(js, 4, foreign, 32);
    es_client *pc = rel_client(p->address, 10000);
    append(pc, "late-1", NULL, CTRL_MARK, CTRL_MARK, 1);
    es_client_destroy(pc);
    uint64_t head = stats_of(p->address).head_position;
    wait_log(p->log_file, "another key at a slot");
    REL_CHECK(stats_of(p->address).relay_acked_position < head,
              "the relay published past a foreign key");
    REL_CHECK(js_DeleteMsg(js, "E_KEYS", seq, NULL, NULL) == NATS_OK, "delete the foreign key");
    int64_t deadline = h_now_ms() + WAIT_MS;
    while (stats_of(p->address).relay_acked_position < head) {
        REL_CHECK(h_now_ms() < deadline, "the relay did not resume");
        h_sleep_ms(20);
    }
    rel_log("a foreign key at a slot stopped the relay until it was removed");

    natsMsg *m = NULL;
    REL_CHECK(js_GetLastMsg(&m, js, "E_KEYS", "es_keys.4", NULL, NULL) == NATS_OK &&
                  natsMsg_GetDataLength(m) == 32,
              "the relay did not publish slot 4");
    uint8_t key4[32];
    memcpy(key4, natsMsg_GetData(m), 32);
    REL_CHECK(memcmp(key4, foreign, 32) != 0, "slot 4 holds the foreign key");
    REL_CHECK(js_EraseMsg(js, "E_KEYS", natsMsg_GetSequence(m), NULL, NULL) == NATS_OK,
              "remove slot 4");
    natsMsg_Destroy(m);
    REL_CHECK(esd_start(f, 10000) == 0, "follower did not start");
    wait_log(f->log_file, "waiting for a data key");
    es_stats st = stats_of(f->address);
    REL_CHECK(!st.follower_halted && st.head_position == head - 1,
              "without its key: head %" PRIu64 " (want %" PRIu64 "), halted %d", st.head_position,
              head - 1, (int)st.follower_halted);
    seq = key_put(js, 4, "short", 5);
    deadline = h_now_ms() + WAIT_MS;
    while (!(st = stats_of(f->address)).follower_halted) {
        REL_CHECK(h_now_ms() < deadline, "a malformed key did not halt the follower");
        h_sleep_ms(20);
    }
    REL_CHECK(st.head_position == head - 1 && log_has(f->log_file, "neither a 32-byte key"),
              "halted at %" PRIu64 " without saying why", st.head_position);
    REL_CHECK(esd_stop(f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    REL_CHECK(js_DeleteMsg(js, "E_KEYS", seq, NULL, NULL) == NATS_OK, "delete the bad key");
    seq = key_put_subject(js, 4, key4, 32, "7a7"); /* odd length: not hex of a name */
    REL_CHECK(esd_start(f, 10000) == 0, "follower did not start");
    deadline = h_now_ms() + WAIT_MS;
    while (!(st = stats_of(f->address)).follower_halted) {
        REL_CHECK(h_now_ms() < deadline, "a malformed Es-Key-Subject did not halt the follower");
        h_sleep_ms(20);
    }
    REL_CHECK(st.head_position == head - 1 && log_has(f->log_file, "has an Es-Key-Subject that"),
              "halted at %" PRIu64 " without saying why", st.head_position);
    REL_CHECK(esd_stop(f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    REL_CHECK(js_EraseMsg(js, "E_KEYS", seq, NULL, NULL) == NATS_OK, "remove the bad subject");
    key_put(js, 4, key4, 32);
    REL_CHECK(esd_start(f, 10000) == 0, "follower did not start");
    wait_caught_up(p, f);
    expect_reads(f->address, "late-1", CTRL_MARK, CTRL_MARK);
    rel_log("a missing key made the follower wait, a malformed one (or its subject) halted it");
}

/*
 * A subject bound before a promotion. Its key message names the subject
 * (Es-Key-Subject, the id in hex); the follower, promoted to primary (esd
 * on its data directory without --follow-nats), erases it by name with
 * esctl as the primary would: all its streams, also one appended to after
 * the promotion; one stream of it alone is refused. The subject's key is
 * then gone from the promoted store's directory (and still in the
 * primary's, where it was not erased: the search is not blind). Slot 5 is
 * the subject's (four were taken before, in order). @param key5 the
 * subject's key, for the final search.
 */
static void promoted_subject(esd_proc *p, esd_proc *f, jsCtx *js, uint8_t key5[32])
{
    es_client *pc = rel_client(p->address, 10000);
    append(pc, "profile-9", "subject-9", SUBJ_MARK, META_MARK, 1);
    append(pc, "orders-9", "subject-9", SUBJ_MARK, META_MARK, 2);
    es_client_destroy(pc);
    wait_caught_up(p, f);
    expect_reads(f->address, "orders-9", SUBJ_MARK, META_MARK);
    natsMsg *m = NULL;
    REL_CHECK(js_GetLastMsg(&m, js, "E_KEYS", "es_keys.5", NULL, NULL) == NATS_OK &&
                  natsMsg_GetDataLength(m) == 32,
              "no key for slot 5 in E_KEYS");
    const char *hsub = NULL;
    REL_CHECK(natsMsgHeader_Get(m, "Es-Key-Subject", &hsub) == NATS_OK &&
                  strcmp(hsub, "7375626a6563742d39") == 0, /* "subject-9" */
              "slot 5: Es-Key-Subject is '%s', expected the hex of subject-9",
              hsub ? hsub : "(none)");
    memcpy(key5, natsMsg_GetData(m), 32);
    natsMsg_Destroy(m);
    REL_CHECK(js_GetLastMsg(&m, js, "E_KEYS", "es_keys.3", NULL, NULL) == NATS_OK,
              "no key for slot 3");
    REL_CHECK(natsMsgHeader_Get(m, "Es-Key-Subject", &hsub) != NATS_OK,
              "a stream's own key names a subject");
    natsMsg_Destroy(m);

    int status;
    REL_CHECK(esd_stop(f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    f->args[0] = NULL; /* promoted: a primary on the follower's data directory */
    REL_CHECK(esd_start(f, 10000) == 0, "the promoted follower did not start");
    char out[512];
    snprintf(out, sizeof out, "%s/esctl.out", f->dir);
    const char *one[] = {"-s", f->address, "stream", "erase", "orders-9", "--force", NULL};
    int ws = h_esctl(one, out, 30000);
    REL_CHECK(ws > 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 1 && log_has(out, "INVALID_ARGUMENT"),
              "the promoted store erased one stream of a subject alone (see %s)", out);
    expect_reads(f->address, "orders-9", SUBJ_MARK, META_MARK);
    es_client *fc = rel_client(f->address, 10000);
    append(fc, "cart-9", "subject-9", SUBJ_MARK, META_MARK, 1);
    append(fc, "orders-9", "subject-9", SUBJ_MARK, META_MARK, 1);
    es_client_destroy(fc);
    const char *subj[] = {"-s",    f->address,  "--json",  "subject",
                          "erase", "subject-9", "--force", NULL};
    REL_CHECK(h_esctl(subj, out, 30000) == 0,
              "esctl subject erase subject-9 failed on the promoted store (see %s)", out);
    REL_CHECK(log_has(out, "\"streams\": 3") || log_has(out, "\"streams\":3"),
              "subject-9: not 3 streams erased (see %s)", out);
    expect_erased(f->address, "profile-9");
    expect_erased(f->address, "orders-9");
    expect_erased(f->address, "cart-9");
    expect_reads(f->address, "ctrl-1", CTRL_MARK, CTRL_MARK);
    expect_reads(p->address, "orders-9", SUBJ_MARK, META_MARK);
    rel_log("promoted, the follower erased subject-9 by name: 3 streams");
}

int main(int argc, char **argv)
{
    static const char *const names[] = {NULL};
    rel_args(argc, argv, "test_erasure", names, NULL);
    natsh_require_server();
    esd_proc p, f, pp, pf;
    if (esd_init(&p, NULL) != 0 || esd_init(&f, NULL) != 0 || esd_init(&pp, NULL) != 0 ||
        esd_init(&pf, NULL) != 0) {
        rel_fail("cannot make temporary directories");
    }
    natsh_cluster c;
    natsh_start(&c, 1, p.dir);
    natsConnection *nc;
    jsCtx *js;
    natsh_connect(&c, &nc, &js);
    const char *nats_dir = c.nodes[0].store_dir;

    const char *relay_args[] = {"--relay-nats", c.urls, "--relay-stream", "E", NULL};
    memcpy(p.args, relay_args, sizeof relay_args);
    const char *follow_args[] = {"--follow-nats", c.urls, "--follow-stream", "E", NULL};
    memcpy(f.args, follow_args, sizeof follow_args);
    REL_CHECK(esd_start(&p, 10000) == 0, "primary did not start");
    REL_CHECK(esd_start(&f, 10000) == 0, "follower did not start");

    es_client *pc = rel_client(p.address, 10000);
    append(pc, "person-1", NULL, MARK, META_MARK, 3);
    append(pc, "profile-7", "subject-7", SUBJ_MARK, META_MARK, 2);
    append(pc, "orders-7", "subject-7", SUBJ_MARK, META_MARK, 1);
    append(pc, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 2);
    wait_caught_up(&p, &f);
    expect_reads(f.address, "person-1", MARK, META_MARK);
    expect_reads(f.address, "orders-7", SUBJ_MARK, META_MARK);
    expect_reads(f.address, "ctrl-1", CTRL_MARK, CTRL_MARK);
    rel_log("the follower reads the sealed copies with the relayed keys");
    uint8_t keys[4][32];
    keys_of(js, keys);

    es_erased er;
    es_err rv = es_stream_erase(pc, "person-1", (es_expected){ES_EXPECT_ANY, 0}, true, &er);
    REL_CHECK(rv == ES_OK, "erase person-1: %s", es_strerror(rv));
    rv = es_subject_erase(pc, "subject-7", &er);
    REL_CHECK(rv == ES_OK, "erase subject-7: %s", es_strerror(rv));
    append(pc, "ctrl-1", NULL, CTRL_MARK, CTRL_MARK, 1); /* the log goes on */
    es_client_destroy(pc);
    wait_caught_up(&p, &f);
    expect_erased(p.address, "person-1");
    expect_erased(f.address, "person-1");
    expect_erased(f.address, "profile-7");
    expect_erased(f.address, "orders-7");
    expect_reads(f.address, "ctrl-1", CTRL_MARK, CTRL_MARK);
    /* The keys stream: markers in place of the erased keys. */
    for (int slot = 1; slot <= 2; slot++) {
        char subject[64];
        snprintf(subject, sizeof subject, "es_keys.%d", slot);
        natsMsg *m = NULL;
        REL_CHECK(js_GetLastMsg(&m, js, "E_KEYS", subject, NULL, NULL) == NATS_OK,
                  "no message for slot %d", slot);
        const char *v = NULL;
        REL_CHECK(natsMsgHeader_Get(m, "Es-Key-Erased", &v) == NATS_OK &&
                      natsMsg_GetDataLength(m) == 0,
                  "slot %d: not the erased marker", slot);
        natsMsg_Destroy(m);
    }
    rel_log("erased on the follower; the keys stream holds markers for the erased keys");

    /* A restart of the follower keeps it. */
    int status;
    REL_CHECK(esd_stop(&f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    REL_CHECK(esd_start(&f, 10000) == 0, "follower did not start again");
    expect_erased(f.address, "person-1");
    expect_erased(f.address, "orders-7");
    expect_reads(f.address, "ctrl-1", CTRL_MARK, CTRL_MARK);
    REL_CHECK(!stats_of(f.address).follower_halted, "the follower halted after its restart");

    keys_refused(&p, &f, js);
    uint8_t key5[32];
    promoted_subject(&p, &f, js, key5);

    /* The plain pair: the same search finds what is stored in plain. */
    const char *prelay_args[] = {"--relay-nats",    c.urls, "--relay-stream",  "PL",
                                 "--relay-subject", "pl",   "--no-encryption", NULL};
    memcpy(pp.args, prelay_args, sizeof prelay_args);
    const char *pfollow_args[] = {"--follow-nats",   c.urls, "--follow-stream", "PL",
                                  "--no-encryption", NULL};
    memcpy(pf.args, pfollow_args, sizeof pfollow_args);
    REL_CHECK(esd_start(&pp, 10000) == 0, "plain primary did not start");
    REL_CHECK(esd_start(&pf, 10000) == 0, "plain follower did not start");
    es_client *ppc = rel_client(pp.address, 10000);
    append(ppc, "plain-1", NULL, PLAIN_MARK, PLAIN_MARK, 2);
    es_client_destroy(ppc);
    wait_caught_up(&pp, &pf);
    expect_reads(pf.address, "plain-1", PLAIN_MARK, PLAIN_MARK);

    REL_CHECK(esd_stop(&f, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "follower stop");
    REL_CHECK(esd_stop(&p, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "primary stop");
    REL_CHECK(esd_stop(&pf, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "stop");
    REL_CHECK(esd_stop(&pp, SIGTERM, 10000, &status, NULL) == 0 && status == 0, "stop");
    const char *check[] = {"db", "check", f.data_dir, NULL};
    char out[512];
    snprintf(out, sizeof out, "%s/check.out", f.dir);
    REL_CHECK(h_esctl(check, out, 60000) == 0, "esctl db check of the follower failed");
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsh_stop(&c); /* nats-server flushes its blocks */

    const char *dirs[] = {p.data_dir, f.data_dir, nats_dir};
    const char *what[] = {"primary", "follower", "nats-server"};
    for (int i = 0; i < 3; i++) {
        size_t m = count_str(dirs[i], "MARKER-e4c1d7");
        size_t k1 = count_in_dir(dirs[i], keys[1], 32);
        size_t k2 = count_in_dir(dirs[i], keys[2], 32);
        size_t k3 = count_in_dir(dirs[i], keys[3], 32);
        rel_log("%s: erased markers %zu, erased keys %zu + %zu, control key %zu", what[i], m, k1,
                k2, k3);
        REL_CHECK(m == 0, "%s: the erased marker is still in %s", what[i], dirs[i]);
        REL_CHECK(k1 == 0 && k2 == 0, "%s: an erased key is still in %s", what[i], dirs[i]);
        REL_CHECK(k3 >= 1, "%s: the control key is not found in %s: the search is blind", what[i],
                  dirs[i]);
        REL_CHECK(count_str(dirs[i], CTRL_MARK) == 0, "%s: the control marker is in plain",
                  what[i]);
    }
    /* subject-9: erased on the promoted follower only. */
    size_t k5p = count_in_dir(p.data_dir, key5, 32), k5f = count_in_dir(f.data_dir, key5, 32);
    rel_log("subject-9's key: primary %zu, promoted follower %zu", k5p, k5f);
    REL_CHECK(k5f == 0, "subject-9's key is still in the promoted store's %s", f.data_dir);
    REL_CHECK(k5p >= 1, "subject-9's key is not found in the primary's %s: the search is blind",
              p.data_dir);
    const char *pdirs[] = {pp.data_dir, pf.data_dir, nats_dir};
    for (int i = 0; i < 3; i++) {
        size_t m = count_str(pdirs[i], PLAIN_MARK);
        rel_log("plain %s: marker %zu", what[i], m);
        REL_CHECK(m >= 1, "plain %s: the marker is not found: the search is blind", what[i]);
    }

    nats_Close();
    esd_destroy(&pf);
    esd_destroy(&pp);
    esd_destroy(&f);
    esd_destroy(&p);
    rel_log("PASS");
    return 0;
}

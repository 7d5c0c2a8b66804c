/*
 * esctl_out — how esctl prints.
 *
 * Design notes: every command builds its result as jansson values; --json
 * prints each as one compact line (key order preserved), human output
 * prints the same values as aligned text. Tables are printed in chunks of
 * OUT_CHUNK rows so that reading a long log keeps memory bounded; a column
 * only ever widens, so the chunks stay aligned unless a later value is
 * wider than every earlier one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esctl.h"

#define OUT_CHUNK 256

void out_time(uint64_t us, char *out, size_t cap)
{
    time_t secs = (time_t)(us / 1000000u);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, cap, "?");
        return;
    }
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%06uZ", base, (unsigned)(us % 1000000u));
}

char *out_base64(const uint8_t *p, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t olen = 4 * ((len + 2) / 3);
    char *o = malloc(olen + 1);
    if (o == NULL) {
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= p[i + 2];
        }
        o[j++] = tbl[(v >> 18) & 63];
        o[j++] = tbl[(v >> 12) & 63];
        o[j++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        o[j++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    o[j] = '\0';
    return o;
}

json_t *out_bytes_value(const uint8_t *p, size_t len, bool *is_json)
{
    *is_json = false;
    if (len == 0) {
        return NULL;
    }
    json_error_t err;
    json_t *v = json_loadb((const char *)p, len, JSON_DECODE_ANY, &err);
    if (v != NULL) {
        *is_json = true;
        return v;
    }
    char *b = out_base64(p, len);
    v = b ? json_string(b) : NULL;
    free(b);
    return v;
}

char *out_bytes_text(const uint8_t *p, size_t len)
{
    bool is_json = false;
    json_t *v = out_bytes_value(p, len, &is_json);
    if (v == NULL) {
        return strdup("");
    }
    char *s;
    if (is_json) {
        s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    } else {
        const char *b = json_string_value(v);
        size_t n = strlen(b) + sizeof("base64:");
        s = malloc(n);
        if (s != NULL) {
            snprintf(s, n, "base64:%s", b);
        }
    }
    json_decref(v);
    return s;
}

static void set_bytes(json_t *o, const char *key, const char *enc_key, const uint8_t *p, size_t len)
{
    bool is_json = false;
    json_t *v = out_bytes_value(p, len, &is_json);
    json_object_set_new(o, key, v ? v : json_null());
    if (v != NULL && !is_json) {
        json_object_set_new(o, enc_key, json_string("base64"));
    }
}

json_t *out_event_json(const es_recorded_event *ev)
{
    char id[ES_UUID_STRLEN + 1];
    char t[40];
    json_t *o = json_object();
    json_object_set_new(o, "stream", json_string(ev->stream));
    json_object_set_new(o, "revision", json_integer((json_int_t)ev->revision));
    json_object_set_new(o, "position", json_integer((json_int_t)ev->position));
    es_uuid_format(ev->id, id);
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "type", json_string(ev->type));
    if (ev->content_type[0] != '\0') {
        json_object_set_new(o, "content_type", json_string(ev->content_type));
    }
    set_bytes(o, "data", "data_encoding", ev->data, ev->data_len);
    set_bytes(o, "metadata", "metadata_encoding", ev->metadata, ev->metadata_len);
    if (ev->correlation_id != NULL) {
        es_uuid_format(ev->correlation_id, id);
        json_object_set_new(o, "correlation_id", json_string(id));
    }
    if (ev->causation_id != NULL) {
        es_uuid_format(ev->causation_id, id);
        json_object_set_new(o, "causation_id", json_string(id));
    }
    out_time(ev->recorded_at_us, t, sizeof(t));
    json_object_set_new(o, "recorded_at", json_string(t));
    return o;
}

void out_json_line(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (s != NULL) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    json_decref(v);
}

static char *value_text(const json_t *v)
{
    if (json_is_string(v)) {
        return strdup(json_string_value(v));
    }
    if (json_is_null(v)) {
        return strdup("-");
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}

void out_kv(const json_t *obj)
{
    size_t w = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strlen(key) > w) {
            w = strlen(key);
        }
    }
    json_object_foreach((json_t *)obj, key, v)
    {
        char *s = value_text(v);
        printf("%-*s  %s\n", (int)w, key, s ? s : "?");
        free(s);
    }
}

void out_object(const esctl *x, json_t *obj)
{
    if (x->json) {
        out_json_line(obj);
    } else {
        out_kv(obj);
        json_decref(obj);
    }
}

struct out_table {
    size_t ncols;
    const char *const *headers;
    size_t *width;
    char **cells; /* OUT_CHUNK * ncols */
    size_t rows;
    bool header_done;
};

out_table *out_table_create(const char *const *headers, size_t ncols)
{
    out_table *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->ncols = ncols;
    t->headers = headers;
    t->width = calloc(ncols, sizeof(*t->width));
    t->cells = calloc(OUT_CHUNK * ncols, sizeof(*t->cells));
    if (t->width == NULL || t->cells == NULL) {
        free(t->width);
        free(t->cells);
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < ncols; i++) {
        t->width[i] = strlen(headers[i]);
    }
    return t;
}

static void print_row(const out_table *t, const char *const *cells)
{
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = cells[i] ? cells[i] : "";
        if (i + 1 == t->ncols) {
            printf("%s\n", s);
        } else {
            printf("%-*s  ", (int)t->width[i], s);
        }
    }
}

static void flush(out_table *t)
{
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            size_t n = s ? strlen(s) : 0;
            if (n > t->width[i]) {
                t->width[i] = n;
            }
        }
    }
    if (!t->header_done && t->rows > 0) {
        print_row(t, t->headers);
        t->header_done = true;
    }
    for (size_t r = 0; r < t->rows; r++) {
        print_row(t, (const char *const *)&t->cells[r * t->ncols]);
        for (size_t i = 0; i < t->ncols; i++) {
            free(t->cells[r * t->ncols + i]);
            t->cells[r * t->ncols + i] = NULL;
        }
    }
    t->rows = 0;
}

void out_table_row(out_table *t, const char *const *cells)
{
    if (t->rows == OUT_CHUNK) {
        flush(t);
    }
    for (size_t i = 0; i < t->ncols; i++) {
        t->cells[t->rows * t->ncols + i] = strdup(cells[i] ? cells[i] : "");
    }
    t->rows++;
}

void out_table_flush(out_table *t)
{
    if (t != NULL) {
        flush(t);
    }
}

void out_table_finish(out_table *t)
{
    if (t == NULL) {
        return;
    }
    flush(t);
    free(t->width);
    free(t->cells);
    free(t);
}

static const char *expected_text(es_expected e, char *buf, size_t cap)
{
    switch (e.kind) {
    case ES_EXPECT_ANY:
        return "any";
    case ES_EXPECT_NO_STREAM:
        return "no stream";
    case ES_EXPECT_STREAM_EXISTS:
        return "stream exists";
    case ES_EXPECT_EXACT:
        snprintf(buf, cap, "revision %llu", (unsigned long long)e.revision);
        return buf;
    }
    return "?";
}

void out_error(const esctl *x, es_client *c, es_err rv, const char *what)
{
    const char *msg = c ? es_client_errmsg(c) : "";
    if (msg == NULL || msg[0] == '\0') {
        msg = es_strerror(rv);
    }
    size_t n = 0;
    const es_conflict *cs = c ? es_client_conflicts(c, &n) : NULL;
    if (x->json) {
        json_t *o = json_object();
        json_object_set_new(o, "error", json_string(es_errname(rv)));
        json_object_set_new(o, "code", json_integer(rv));
        json_object_set_new(o, "message", json_string(msg));
        if (n > 0) {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++) {
                json_t *co = json_object();
                char buf[48];
                json_object_set_new(co, "stream", json_string(cs[i].stream));
                json_object_set_new(co, "expected",
                                    json_string(expected_text(cs[i].expected, buf, sizeof(buf))));
                if (cs[i].expected.kind == ES_EXPECT_EXACT) {
                    json_object_set_new(co, "expected_revision",
                                        json_integer((json_int_t)cs[i].expected.revision));
                }
                json_object_set_new(co, "actual_exists", json_boolean(cs[i].actual_exists));
                if (cs[i].actual_exists) {
                    json_object_set_new(co, "actual_revision",
                                        json_integer((json_int_t)cs[i].actual_revision));
                }
                json_array_append_new(arr, co);
            }
            json_object_set_new(o, "conflicts", arr);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s != NULL) {
            fprintf(stderr, "%s\n", s);
            free(s);
        }
        json_decref(o);
        return;
    }
    fprintf(stderr, "esctl: %s: %s (%s)\n", what, msg, es_errname(rv));
    for (size_t i = 0; i < n; i++) {
        char buf[48];
        if (cs[i].actual_exists) {
            fprintf(stderr, "esctl: conflict on %s: expected %s, actual revision %llu\n",
                    cs[i].stream, expected_text(cs[i].expected, buf, sizeof(buf)),
                    (unsigned long long)cs[i].actual_revision);
        } else {
            fprintf(stderr, "esctl: conflict on %s: expected %s, actual: no stream\n", cs[i].stream,
                    expected_text(cs[i].expected, buf, sizeof(buf)));
        }
    }
}

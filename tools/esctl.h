/*
 * esctl — shared declarations of the esctl modules:
 *
 *   esctl.c      main, global options, the commands that talk to esd
 *   esctl_db.c   the offline `db` commands (through store.h)
 *   esctl_out.c  output: one JSON object per line (--json) or aligned
 *                human text; event data as JSON when it is JSON, else
 *                base64; times as RFC 3339 UTC with microseconds
 *
 * Exit status: 0 ok; 1 the operation failed; 2 usage error; 3 cannot
 * connect to the server.
 */
#ifndef ESCTL_H
#define ESCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "es/client.h"

enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_CONNECT = 3,
};

typedef struct esctl {
    const char *server;
    bool json;
    uint32_t timeout_ms;
} esctl;

/* ---- esctl_out.c -- */

/** @brief "2024-05-01T12:00:00.123456Z" (out: at least 32 bytes). */
void out_time(uint64_t us, char *out, size_t cap);

/** @brief Base64 (RFC 4648, padded) of bytes; malloc'd, or NULL. */
char *out_base64(const uint8_t *p, size_t len);

/**
 * @brief Bytes as a JSON value when they are a JSON text, otherwise as a
 *        base64 string; NULL for no bytes.
 * @param[out] is_json whether the value is the parsed JSON
 */
json_t *out_bytes_value(const uint8_t *p, size_t len, bool *is_json);

/** @brief A compact one-line rendering of bytes for tables (malloc'd). */
char *out_bytes_text(const uint8_t *p, size_t len);

/** @brief A JSON object for an event, with every field. */
json_t *out_event_json(const es_recorded_event *ev);

/** @brief Print one JSON value on one line of stdout; takes the reference. */
void out_json_line(json_t *v);

/** @brief Print an object as aligned "key  value" lines (human output). */
void out_kv(const json_t *obj);

/** @brief Print an object as JSON (--json) or aligned lines; takes the reference. */
void out_object(const esctl *x, json_t *obj);

/** A table printed in aligned columns, in chunks so that memory stays bounded. */
typedef struct out_table out_table;

out_table *out_table_create(const char *const *headers, size_t ncols);
/** @brief Add a row; the cells are copied. */
void out_table_row(out_table *t, const char *const *cells);
/** @brief Print the rows buffered so far (a table that follows a live feed). */
void out_table_flush(out_table *t);
/** @brief Print what is buffered and free the table. */
void out_table_finish(out_table *t);

/** @brief Report a failed call (human text or a JSON object on stderr). */
void out_error(const esctl *x, es_client *c, es_err rv, const char *what);

/* ---- esctl_db.c -- */

int cmd_db(esctl *x, int argc, char **argv);

/* ---- esctl.c -- */

/** @brief Parse a decimal u64 (digits only). */
bool parse_u64(const char *s, uint64_t *out);

#endif

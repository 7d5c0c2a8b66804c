/*
 * webapi — the read side of the web console's JSON API: the store, the
 * writer's and the loop's figures turned into jansson values. No libevent:
 * web.c parses the request and sends the reply; the functions here take the
 * decoded query and return an HTTP status with a JSON body, so they can be
 * tested without sockets.
 *
 * Design notes
 * ------------
 * Reads go through store.h only, on the loop thread, each a short read
 * transaction inside one store call; a page is capped (WEBAPI_*_MAX) so no
 * call holds the loop for long. Stream ids and event types are valid UTF-8
 * by the store's rules and go out as JSON strings. Event data and metadata
 * are any bytes: valid UTF-8 goes out as a string ("encoding": "utf8"),
 * anything else as hex ("encoding": "hex"); in lists both are cut after
 * WEBAPI_LIST_DATA_MAX bytes ("truncated": true, "bytes" gives the whole
 * size) and GET /api/event returns the whole. The page renders these only
 * as text. The API is described for scripts in docs/web.md.
 */
#ifndef ES_WEBAPI_H
#define ES_WEBAPI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define WEBAPI_STREAMS_MAX   500u  /* streams per page */
#define WEBAPI_EVENTS_MAX    200u  /* events per page */
#define WEBAPI_LIST_DATA_MAX 2048u /* bytes of data/metadata shown per event in lists */
#define WEBAPI_SERIES_LEN    300u  /* one sample a second: five minutes */

/** One sample of the counters, taken once a second on the loop thread. */
typedef struct webapi_sample {
    uint64_t at_ms; /* monotonic; 0 = no sample */
    uint64_t appends, events, commits, requests, commit_us_sum;
} webapi_sample;

typedef struct webapi_series {
    webapi_sample s[WEBAPI_SERIES_LEN];
    size_t next; /* index of the next sample to write */
} webapi_series;

/** @brief Take a sample of srv's counters into the ring. Loop thread. */
void webapi_series_sample(webapi_series *ser, server_ctx *srv, uint64_t now_ms);

/** A query's parameters, as web.c decoded them (NULL when absent). */
typedef const char *(*webapi_param_fn)(void *ctx, const char *name);

/**
 * Each endpoint: @return the HTTP status (200, 400, 404, 500) and *out the
 * body (an object with "error" when not 200), owned by the caller.
 */
int webapi_overview(server_ctx *srv, const webapi_series *ser, json_t **out);
int webapi_streams(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);
int webapi_stream(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);
int webapi_log(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);
int webapi_event(server_ctx *srv, webapi_param_fn param, void *ctx, json_t **out);

/**
 * @brief The JSON of one stored record (a packed es.v1.RecordedEvent).
 * @param max_data bytes of data and of metadata kept (SIZE_MAX: all)
 * @return the object, or NULL when the record does not decode or memory ran out.
 */
json_t *webapi_event_json(const uint8_t *rec, size_t len, size_t max_data);

/**
 * @brief Parse a filter from the parameters "category", "type", "prefix"
 *        (at most one) into a store filter borrowing the parameter.
 * @return 0; -1 when more than one is given or a value is empty.
 */
struct store_filter;
int webapi_filter(webapi_param_fn param, void *ctx, struct store_filter *f);

/**
 * @brief Add "correlation_position" and "causation_position" to an event's
 *        JSON: where the event its id field names is (store_read_event_by_id,
 *        one index lookup each), or null when no event served has that id.
 *        Left out when the event has no such id.
 */
void webapi_link_ids(server_ctx *srv, json_t *ev);

/** @brief 32 hex digits (dashes anywhere ignored) into 16 bytes; @return 0, or -1. */
int webapi_parse_uuid(const char *s, uint8_t out[16]);

/**
 * @brief A stream's lifecycle state as JSON: tombstoned, deleted,
 *        deleted_before, metadata_set, metadata_revision (null when never
 *        set), truncate_before, max_count, max_age_s (0: no limit).
 */
struct store_stream_life;
json_t *webapi_life_json(const struct store_stream_life *l, uint64_t last_revision);

/**
 * @brief Peer-given bytes as a JSON string: valid UTF-8 as it is, anything
 *        else with each byte outside printable ASCII (and the backslash) as
 *        \xNN (never lossy). @return NULL when memory ran out.
 */
json_t *webapi_text_json(const uint8_t *b, size_t len);

/**
 * @brief An unsigned decimal query parameter: def when absent or empty.
 * @return 0, or -1 when it is not a decimal number that fits 64 bits.
 */
int webapi_param_u64(webapi_param_fn param, void *ctx, const char *name, uint64_t def,
                     uint64_t *out);

/** @brief {"error": msg} */
json_t *webapi_error(const char *msg);

#endif

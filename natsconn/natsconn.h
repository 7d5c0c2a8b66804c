/*
 * natsconn — what the server's relay and follower and the client's
 * projector share about NATS: opening a connection from a URL option, and
 * the strict parsers of the header values they exchange (server/relay.h
 * documents the message format). Below both the server and the client: it
 * includes nothing of either.
 *
 * Design notes: the URL option may list several servers, comma-separated
 * (any node of a cluster will do; libnats learns the others and fails
 * over). libnats' natsOptions_SetURL takes one URL, so the list is split
 * here and handed to natsOptions_SetServers. Connections reconnect forever
 * (every 250 ms); the callers notice failures through their own calls.
 */
#ifndef ES_NATSCONN_H
#define ES_NATSCONN_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NATSCONN_MAX_URLS 16

/**
 * @brief Connect to the servers in urls (comma-separated).
 * @param name the client name the server shows (e.g. "esd-relay")
 * @param disconnected, reconnected optional callbacks (closure: ctx)
 * @return NATS_OK with *nc; otherwise the libnats status (nothing to free).
 */
natsStatus natsconn_connect(const char *urls, const char *name, natsConnectionHandler disconnected,
                            natsConnectionHandler reconnected, void *ctx, natsConnection **nc);

/** @brief The last libnats error text, or the status' text. */
const char *natsconn_err(natsStatus s);

/** @brief Strict decimal u64 of 1..20 digits. */
bool natsconn_parse_u64(const char *s, uint64_t *out);

/** @brief 8-4-4-4-12 hex (either case) -> 16 bytes. */
bool natsconn_parse_uuid(const char *s, uint8_t out[16]);

/** @brief 16 bytes -> 8-4-4-4-12 lower-case hex. */
void natsconn_format_uuid(const uint8_t id[16], char out[37]);

/** @brief Exactly 8 hex digits -> u32. */
bool natsconn_parse_crc(const char *s, uint32_t *out);

#endif

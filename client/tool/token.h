/*
 * token — where the command-line programs (esctl, esbench, es-account,
 * es-account-view) get the token for the hello: --token-file FILE, else
 * $ES_TOKEN_FILE, else $ES_TOKEN; and their TLS settings. An internal
 * library of client/ (client/tool/meson.build), not libesclient's API.
 *
 * Design notes: a token is never taken from a command-line argument, where
 * `ps` would show it. A token file holds the token and at most a trailing
 * newline (a file written by `echo` works); surrounding whitespace is
 * stripped. A file that group or others may read gets a warning on stderr,
 * not a refusal: the server refuses its own credentials file in that case,
 * but a client file is the user's business.
 */
#ifndef ES_CLIENT_TOOL_TOKEN_H
#define ES_CLIENT_TOOL_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/client.h"

#define TOKEN_MAX_BYTES 1024

typedef struct tool_token {
    uint8_t bytes[TOKEN_MAX_BYTES];
    size_t len; /* 0: no token */
} tool_token;

/**
 * @brief Find the token: token_file (when not NULL), $ES_TOKEN_FILE, then
 *        $ES_TOKEN; none of them set leaves tok->len 0.
 * @param prog the program name for the warning and error messages
 * @return 0; -1 when a file could not be read, was empty or too long (the
 *         message is on stderr).
 */
int tool_token_load(tool_token *tok, const char *token_file, const char *prog);

/** @brief Wipe the token. */
void tool_token_wipe(tool_token *tok);

/** The TLS choices of a command line (--tls, --tls-ca, --tls-server-name,
 *  --tls-insecure). */
typedef struct tool_tls {
    bool tls;
    bool insecure;
    const char *ca_file;
    const char *server_name;
} tool_tls;

/**
 * @brief Set the TLS fields of client options: from t, else $ES_TLS_CA (a
 *        CA file, implies TLS) and $ES_TLS=1 (TLS with the system's CAs).
 *        --tls-insecure prints a warning on stderr.
 * @note The strings are borrowed: t's and the environment's.
 */
void tool_tls_apply(const tool_tls *t, es_client_options *o, const char *prog);

#endif

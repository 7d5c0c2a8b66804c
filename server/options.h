/*
 * options — esd's command line: defaults, parsing, validation, --help.
 * Kept out of main.c so that main stays thin and the rules are testable.
 */
#ifndef ES_OPTIONS_H
#define ES_OPTIONS_H

#include <stdio.h>

#include "server.h"

typedef struct esd_options {
    server_config cfg;
    const char *port_file; /* write the bound port here (tests, supervisors) */
    int help;              /* --help was given */
} esd_options;

/**
 * @brief Parse argv into opts (defaults first).
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT with a message in msg.
 */
es_err options_parse(int argc, char **argv, esd_options *opts, char *msg, size_t msg_len);

/** @brief Print the usage text. */
void options_usage(FILE *out);

/**
 * @brief Parse a size with an optional K, M, G or T suffix (powers of 1024).
 * @return true on success.
 */
bool options_parse_size(const char *s, uint64_t *out);

#endif

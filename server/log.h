/*
 * log — one line per event on stderr, logfmt:
 *   ts=2026-11-28T02:30:00.123456Z level=info msg="listening" addr=127.0.0.1:7400
 * Thread-safe (one fprintf per line). Fields are preformatted by the caller
 * as `key=value` pairs; values with spaces are the caller's to quote.
 */
#ifndef ES_LOG_H
#define ES_LOG_H

#include <stdbool.h>

typedef enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
} log_level;

void log_set_level(log_level level);
bool log_enabled(log_level level);
/** @brief Parse "debug", "info", "warn" or "error". */
bool log_parse_level(const char *s, log_level *out);

/** @brief Log msg with optional printf-formatted fields (may be NULL). */
__attribute__((format(printf, 3, 4))) void log_msg(log_level level, const char *msg,
                                                   const char *fields_fmt, ...);

#endif

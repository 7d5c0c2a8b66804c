#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int min_level = LOG_INFO;
static const char *names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level)
{
    atomic_store(&min_level, (int)level);
}

bool log_enabled(log_level level)
{
    return (int)level >= atomic_load(&min_level);
}

bool log_parse_level(const char *s, log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, names[i])) {
            *out = (log_level)i;
            return true;
        }
    }
    return false;
}

void log_msg(log_level level, const char *msg, const char *fields_fmt, ...)
{
    if (!log_enabled(level)) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char fields[768] = "";
    if (fields_fmt) {
        va_list ap;
        va_start(ap, fields_fmt);
        fields[0] = ' ';
        vsnprintf(fields + 1, sizeof fields - 1, fields_fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ level=%s msg=\"%s\"%s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000, names[level], msg, fields);
}

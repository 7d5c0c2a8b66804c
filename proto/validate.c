#include "validate.h"

#include <string.h>

bool es_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        uint32_t min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false; /* continuation byte, overlong lead C0/C1, or F5..FF */
        }
        if (len - i - 1 < n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

es_err es_validate_name(const uint8_t *s, size_t len)
{
    if (s == NULL || len == 0 || len > ES_MAX_NAME_BYTES) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return ES_ERR_INVALID_ARGUMENT;
        }
        /* C1 controls U+0080..U+009F are encoded C2 80..C2 9F. */
        if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f) {
            return ES_ERR_INVALID_ARGUMENT;
        }
    }
    if (!es_utf8_valid(s, len)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_OK;
}

es_err es_validate_stream_id(const uint8_t *s, size_t len, bool allow_reserved)
{
    if (es_validate_name(s, len) != ES_OK) {
        return ES_ERR_INVALID_STREAM_ID;
    }
    if (s[0] == '$' && !allow_reserved) {
        return ES_ERR_RESERVED_STREAM;
    }
    return ES_OK;
}

es_err es_validate_event_type(const uint8_t *s, size_t len)
{
    return es_validate_name(s, len) == ES_OK ? ES_OK : ES_ERR_INVALID_EVENT_TYPE;
}

size_t es_category_len(const uint8_t *stream, size_t len)
{
    const uint8_t *dash = memchr(stream, '-', len);
    return dash ? (size_t)(dash - stream) : len;
}

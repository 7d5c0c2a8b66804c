#include "frame.h"

es_err frame_parse_header(const uint8_t hdr[FRAME_HEADER_BYTES], uint32_t max_body,
                          uint32_t *body_len)
{
    uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) |
                   (uint32_t)hdr[3];
    if (len == 0) {
        return ES_ERR_MALFORMED;
    }
    if (len > max_body) {
        return ES_ERR_TOO_LARGE;
    }
    *body_len = len;
    return ES_OK;
}

void frame_write_header(uint8_t hdr[FRAME_HEADER_BYTES], uint32_t body_len)
{
    hdr[0] = (uint8_t)(body_len >> 24);
    hdr[1] = (uint8_t)(body_len >> 16);
    hdr[2] = (uint8_t)(body_len >> 8);
    hdr[3] = (uint8_t)body_len;
}

es_err frame_next(const uint8_t *buf, size_t len, uint32_t max_body, const uint8_t **body,
                  uint32_t *body_len, size_t *consumed)
{
    *body = NULL;
    *consumed = 0;
    if (len < FRAME_HEADER_BYTES) {
        return ES_OK;
    }
    uint32_t blen;
    es_err rv = frame_parse_header(buf, max_body, &blen);
    if (rv != ES_OK) {
        return rv;
    }
    if (len - FRAME_HEADER_BYTES < blen) {
        return ES_OK;
    }
    *body = buf + FRAME_HEADER_BYTES;
    *body_len = blen;
    *consumed = FRAME_HEADER_BYTES + (size_t)blen;
    return ES_OK;
}

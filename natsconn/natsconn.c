#include "natsconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

natsStatus natsconn_connect(const char *urls, const char *name, natsConnectionHandler disconnected,
                            natsConnectionHandler reconnected, void *ctx, natsConnection **nc)
{
    char *copy = strdup(urls);
    if (!copy) {
        return NATS_NO_MEMORY;
    }
    const char *list[NATSCONN_MAX_URLS];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t && n < NATSCONN_MAX_URLS;
         t = strtok_r(NULL, ", ", &save)) {
        list[n++] = t;
    }
    natsOptions *o = NULL;
    natsStatus s = n > 0 ? natsOptions_Create(&o) : NATS_INVALID_ARG;
    if (s == NATS_OK) {
        s = natsOptions_SetServers(o, list, n);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetName(o, name);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxReconnect(o, -1);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetReconnectWait(o, 250);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(o, 2000);
    }
    if (s == NATS_OK && disconnected) {
        s = natsOptions_SetDisconnectedCB(o, disconnected, ctx);
    }
    if (s == NATS_OK && reconnected) {
        s = natsOptions_SetReconnectedCB(o, reconnected, ctx);
    }
    if (s == NATS_OK) {
        s = natsConnection_Connect(nc, o);
    }
    natsOptions_Destroy(o);
    free(copy);
    return s;
}

const char *natsconn_err(natsStatus s)
{
    const char *last = nats_GetLastError(NULL);
    return last && *last ? last : natsStatus_GetText(s);
}

bool natsconn_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20) {
        return false;
    }
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

bool natsconn_parse_uuid(const char *s, uint8_t out[16])
{
    if (!s || strlen(s) != 36) {
        return false;
    }
    size_t k = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return false;
            }
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return true;
}

void natsconn_format_uuid(const uint8_t id[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[k++] = '-';
        }
        out[k++] = hex[id[i] >> 4];
        out[k++] = hex[id[i] & 15];
    }
    out[k] = '\0';
}

bool natsconn_parse_crc(const char *s, uint32_t *out)
{
    if (!s || strlen(s) != 8) {
        return false;
    }
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        int h = hexval(s[i]);
        if (h < 0) {
            return false;
        }
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return true;
}

/*
 * http.h — the query side of es-account-view: HTTP JSON over libevent's
 * evhttp, answered from LMDB read transactions on the projector's
 * environment.
 *
 *   GET /accounts/ID   {"id","owner","balance","revision","updated_at"}
 *   GET /accounts?page=1&per_page=20&owner=NAME&min_balance=N
 *                      {"accounts":[...],"page","per_page","total"}
 *   GET /stats         {"checkpoint","head","lag","accounts","total_balance",...}
 *
 * Errors are JSON too: {"error": CODE, "message": TEXT} with 400 (bad
 * parameter), 404 (unknown account or path), 405 (method), 500, 503.
 */
#ifndef AV_HTTP_H
#define AV_HTTP_H

#include <event2/event.h>
#include <stdint.h>

#include "model.h"

typedef struct av_http av_http;

/**
 * @brief Listen on host:port (port 0: any free port) and serve the queries
 *        from base's loop.
 * @param[in] p the projector (its environment and status); borrowed
 * @param[in] m the model's handles; borrowed
 * @param[out] out the server, freed with av_http_free()
 * @param[out] bound_port the port actually bound
 * @return ES_OK; ES_ERR_CONNECTION (cannot bind: errmsg says why);
 *   ES_ERR_NO_MEMORY.
 */
es_err av_http_start(struct event_base *base, const char *host, uint16_t port, es_projector *p,
                     const av_model *m, av_http **out, uint16_t *bound_port, char *errmsg,
                     size_t errmsg_len);

/** @brief Stop listening, drop connections, free. Accepts NULL. */
void av_http_free(av_http *h);

#endif

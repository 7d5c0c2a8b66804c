/*
 * web — esd's web console: an HTTP(S) listener (esd --http-listen) on the
 * loop's event base that serves the embedded pages (server/web/assets/),
 * the JSON API they use (webapi.h; described in docs/web.md), a live tail
 * of the log as server-sent events, and the login sessions (websess.h).
 *
 * Design notes
 * ------------
 * Its own listener, not the --metrics-listen one: the metrics endpoint is
 * plain HTTP without credentials, made for a scraper on a private network,
 * while the console carries sessions and must follow the TCP port's rules
 * (TLS with the same --tls-cert/--tls-key, loopback only without an auth
 * file unless --insecure). Keeping two evhttp servers leaves /metrics
 * exactly as it was; /healthz and /readyz are answered on both, without a
 * login, so a load balancer in front of the console can probe it.
 *
 * Everything runs on the loop thread (evhttp callbacks and two timers),
 * like net.c, so the loop's figures are read without locks; store reads
 * are short read transactions inside single store.h calls. Changes
 * (stream delete, tombstone, metadata) go to the writer as WRITE_JOB_LIFE
 * jobs whose completion hook (write_job.complete, called by net.c) answers
 * the request; a job whose client went is freed unanswered. Consumer-group
 * calls go through groups_request() from an in-process session
 * (webgroups.h); a group delete is answered once its commit is done, and
 * one whose client went is detached from the groups and freed.
 *
 * Slices. The console shares the loop thread with the TCP port, so a burst
 * of console requests must not hold the port's requests up. evhttp parses a
 * request and hands it over; an API request is then only queued, and a
 * timer serves the queue (and pumps the live tails) in slices of
 * WEB_SLICE_US at most (one request at least), with a rest of
 * WEB_REST_RATIO times the slice's length before the next: a console loaded
 * without pause takes at most a ninth of the loop thread for its calls
 * (600 to 1,000 requests a second on the 2-core development machine, 3 to 5
 * times what 100 open overview pages ask), a TCP request waits behind one
 * slice at most, and the loop thread stays idle often enough for the kernel
 * to run it at once when a TCP request arrives. A ratio of 3 let the
 * console take 2,600 requests a second and the appends' p99 grow fivefold;
 * at 8 it did not grow (tests/web/web_bench.py).
 * Unloaded, a request is served on the next loop turn. The queue holds
 * WEB_MAX_QUEUE requests (503 beyond); a request of a connection that
 * closes while it waits is dropped with it. Measured with
 * tests/web/web_bench.py (docs/web.md has the figures).
 *
 * Connections are counted from their first request until libevent closes
 * them (the close callback): beyond cfg->http_max_conns
 * (--http-max-connections) the first request of a new one is answered 503
 * with "Connection: close", and libevent closes it once the reply is sent.
 * libevent 2.1's evhttp has no cap of its own (2.2 adds
 * evhttp_set_max_connections) and no hook at accept time that would also
 * count connections that never send a request: those are closed after
 * WEB_TIMEOUT_S, and the process's descriptor limit holds.
 *
 * Security, per request:
 *   - without --auth-file every caller is admin (as on the TCP port), and
 *     GET /api/session hands out an anonymous session whose only use is
 *     the CSRF token;
 *   - with it, every /api/ call but login and session needs the session
 *     cookie (401 otherwise), and the session's role must be at least the
 *     call's (403): read for every GET, admin for the session admin calls
 *     and the consumer-group changes (delete, replay parked);
 *   - every POST needs Content-Type application/json (a cross-site form
 *     cannot send it without a CORS preflight, which is never granted), an
 *     Origin, when sent, equal to the Host, and, except login, the
 *     session's CSRF token in X-CSRF-Token (403 otherwise);
 *   - login failures count against the TCP port's per-address limiter;
 *   - no secret in a URL (login is a POST body) or a log line (the token,
 *     the cookie and the CSRF token are never logged);
 *   - caps: header block WEB_MAX_HEADERS, body WEB_MAX_BODY, WEBSESS_MAX
 *     sessions, WEB_MAX_TAILS live tails, each page of a listing capped
 *     (webapi.h); a tail whose client does not read (over WEB_TAIL_BUFFER
 *     unsent) is skipped until it drains. Connections idle for
 *     WEB_TIMEOUT_S are closed, and at most --http-max-connections are
 *     served at once (above).
 *   - every reply carries a Content-Security-Policy allowing only the
 *     console's own scripts and styles, nosniff, no framing, no referrer.
 *
 * The live tail: each tail remembers the next position it owes its client;
 * every WEB_TICK_MS each tail is due for one pump in the next slices: one
 * bounded read from there (with the tail's filter) when the head has
 * moved, sent as SSE messages. A tail ends with its session (logout,
 * expiry). Events in the tail carry no correlation positions (the pages
 * look such an id up when it is clicked).
 */
#ifndef ES_WEB_H
#define ES_WEB_H

#include <event2/event.h>
#include <openssl/ssl.h>

#include "server.h"

#define WEB_MAX_HEADERS  8192u
#define WEB_MAX_BODY     4096u
#define WEB_MAX_TAILS    64u
#define WEB_TAIL_BUFFER  (1024u * 1024u)
#define WEB_TAIL_BATCH   200u
#define WEB_TICK_MS      200u
#define WEB_TIMEOUT_S    30
#define WEB_HEARTBEAT_MS 5000u
#define WEB_SLICE_US     1000u /* console work per loop turn (see "Slices") */
#define WEB_REST_RATIO   8u    /* rest after a slice, in slices: at most 1/9 of the loop */
#define WEB_MAX_QUEUE    4096u /* API requests waiting for their turn */

typedef struct web web;

/**
 * @brief Listen on cfg->http_listen and serve the console.
 * @param tls the TCP port's TLS context (NULL: plain HTTP); borrowed, must
 *   outlive the web server
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (bad address, or not loopback
 *   without --auth-file and without --insecure: msg says why); ES_ERR_IO
 *   (cannot listen); ES_ERR_NO_MEMORY.
 */
es_err web_start(struct event_base *base, server_ctx *srv, SSL_CTX *tls, web **out, char *msg,
                 size_t msg_len);

/** @brief Close every connection and free; accepts NULL. Loop thread. */
void web_stop(web *w);

#endif

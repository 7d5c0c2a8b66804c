/*
 * net — the only module that touches libevent: the listener, connections,
 * framing on the byte stream, per-connection bounds and timers, the
 * writer's completion wake-up (and a follower's import wake-up, which wakes
 * the subscriptions in the same way), signals, and the orderly shutdown.
 *
 * Design notes
 * ------------
 * Reading: a frame is taken from the input buffer only when complete; its
 * header is checked against the cap first (frame_next), so a declared
 * length is never allocated before its bytes have arrived, and the input
 * buffer itself is capped by a read high-water mark of one frame. Before
 * the hello the cap is 64 KiB (a hello is about 1 KiB), for the header and
 * for the input buffer alike: a peer without credentials makes esd hold at
 * most that. A read takes what the socket holds (FIONREAD), up to 1 MiB,
 * into the buffer's free tail first (libevent's evbuffer_read takes 4 KiB
 * per call: 4,096 callbacks for a 16 MiB frame). A header
 * over the cap, or of length 0, gets a typed error and the connection is
 * closed after the reply is flushed: the byte stream can no longer be
 * trusted. A malformed body inside a well-formed frame gets a typed error
 * and the connection goes on.
 *
 * Bounds per connection: unsent output above max_output_bytes, or request
 * bytes queued for the writer above max_pending_bytes, stop reading from
 * that client until it drains (a client that does not read its replies
 * stalls only itself). A partial frame must complete within
 * frame_timeout_s of the previous frame (slowloris; the clock stops while
 * the server itself is not reading), the hello must arrive within
 * handshake_timeout_s, and a connection that sends nothing for
 * idle_timeout_s is closed. Connections beyond max_connections get a BUSY
 * error frame and are closed at once; when accept fails for lack of file
 * descriptors the listener pauses for 100 ms instead of spinning.
 *
 * A FIN from the client (half-close) stops reading only: its complete
 * requests are answered, queued ones finished and flushed, then the
 * connection is closed.
 *
 * Fairness: at most 64 frames, or 4 MiB of replies, are taken from one
 * connection per loop turn; the rest waits for the next turn (a zero
 * timer, so after the sockets are polled: libevent would run an
 * event_active from a callback in the same turn), so a deep pipeline of
 * large reads does not stall the other connections. A read
 * page holds at most 1 MiB of records and a subscription batch at most
 * 1 MiB (reply.h, subs.h), so one reply is a bounded slice of a turn.
 *
 * Memory budget (cfg->max_memory, net.c "memory budget" tells how): all
 * connections' unsent output, read-ahead and queued request bytes are
 * counted exactly as they change; at the budget, a connection holding
 * more than an equal share produces nothing more (no reading, no
 * requests taken, no subscription delivery) until it drains, and a
 * subscriber that stays so past slow_consumer_timeout_s is dropped with
 * SLOW_CONSUMER and closed. Everyone else is served as usual. At the
 * budget, pages and batches are cut to what is left of a connection's
 * share (session.room), and stop for everyone at 1.5x the budget (shares
 * given out as connections arrived would otherwise add up to several
 * budgets). A batch shared by many subscriptions (session.send_shared)
 * is counted in every buffer that refers to it. Large pages
 * go to the output buffer without a copy (session.send_owned), and small
 * replies are placed with evbuffer_reserve_space, never evbuffer_add,
 * which after a large chain allocates one as large again for any length.
 * Freed buffers go back to the system (malloc_trim) once the memory in
 * use has fallen well below its peak and stayed there for a second.
 *
 * Fleets: at start esd raises its descriptor soft limit to the hard limit
 * and logs how many connections it can take ("capacity"). An idle
 * connection costs about 10 KiB (measured; 8 KiB of it the in-flight id
 * table of max_in_flight entries).
 *
 * Output: replies are appended to the connection's buffer and flushed to
 * the socket at the end of every callback (one write per connection per
 * loop turn); a write event is registered only when the socket is full.
 *
 * Exposure: without an auth file (srv->auth NULL) the listener binds only
 * to a loopback address (127.0.0.0/8, ::1) unless cfg->insecure; any other
 * address is refused at start. Each connection's peer address (without its
 * port) is handed to the session for the per-address failure budget.
 *
 * TLS (cfg->tls_cert): every connection is TLS 1.2+, and OpenSSL runs
 * each session directly on the connection's non-blocking socket — SSL_read
 * into c->in, SSL_write from c->out — rather than through libevent's
 * OpenSSL bufferevents. The connection core is built on raw events and two
 * evbuffers so that a loop turn's replies leave in one write and write
 * events exist only while a socket is full; bufferevents bring their own
 * buffering, watermarks and write scheduling, and would have made TLS
 * connections a second, different code path. With OpenSSL under the two
 * transport functions, everything above them (framing, budgets,
 * backpressure, the flush list, fairness, half-close) is one code for
 * plaintext and TLS. The price is handled in the transport section of
 * net.c: WANT_READ/WANT_WRITE (a write interest while OpenSSL waits for
 * the socket), an SSL_write repeated with its original length, and bytes
 * OpenSSL holds that no socket event will announce (SSL_has_pending: the
 * read event is activated by hand). A first byte that cannot begin a TLS
 * record is a plaintext client: it gets a plaintext REFUSED frame and a
 * close. The handshake counts against the hello deadline.
 *
 * Metrics (cfg->metrics_listen): an evhttp server on the same event base
 * serves /metrics (metrics.h renders the text), /healthz and /readyz; its
 * callbacks run on the loop thread like everything else, so the loop's
 * figures need no locks, and it never touches client connections.
 *
 * Web console (cfg->http_listen): web/web.h runs its own evhttp server on
 * the same event base, with the TCP port's TLS context and exposure rules;
 * net only starts and stops it.
 *
 * Lifetime: a connection whose client goes away while requests are queued
 * for the writer is closed at once (socket freed) but its struct stays, as
 * a zombie, until the last completion comes back; the writer never sees a
 * connection at all.
 *
 * Connections that have not completed their hello are capped per source
 * (an IPv4 address or an IPv6 /64, max_prehello): one more closes the
 * source's oldest (prehello.h says why the oldest).
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting and reading; finish the commits
 * in flight and flush their replies (at most 5 s); end each connection with
 * shutdown(SHUT_WR) after its last reply and drain its input before the
 * close, so that no connection is reset (net.c, "Shutdown"); then leave
 * the loop.
 */
#ifndef ES_NET_H
#define ES_NET_H

#include "server.h"

typedef struct net net;

/**
 * @brief Create the event loop and bind the listener (cfg->listen).
 * @param port_file when not NULL, the bound port is written there
 * @return ES_OK; ES_ERR_INVALID_ARGUMENT (bad address, or not loopback
 *   without authentication and without --insecure); ES_ERR_IO (bind
 *   failed: msg says why); ES_ERR_NO_MEMORY.
 */
es_err net_create(server_ctx *srv, const char *port_file, net **out, char *msg, size_t msg_len);

/** @brief Run until a shutdown signal has been handled. */
void net_run(net *n);

/**
 * @brief Free everything; jobs the stopped writer left completed are
 *        finished (their sessions are gone by then).
 */
void net_destroy(net *n, write_job *leftover);

#endif

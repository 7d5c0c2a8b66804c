/*
 * tls — the server's OpenSSL context: certificate, key and protocol
 * settings (TLS 1.2 or newer). The records themselves are read and written
 * by net.c on its raw sockets; this module holds what is not per
 * connection. No libevent.
 *
 * Design notes: see net.h for why esd drives OpenSSL on its own
 * non-blocking sockets rather than through libevent's OpenSSL bufferevents.
 * The context refuses TLS 1.0 and 1.1, renegotiation and compression;
 * cipher suites are OpenSSL's defaults for the system's security level.
 */
#ifndef ES_TLS_H
#define ES_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "es/err.h"

/**
 * @brief Build the server context from a PEM certificate chain and key.
 * @param[out] out the context; free with SSL_CTX_free
 * @param[out] msg why it failed (file names and OpenSSL's reason)
 * @return ES_OK; ES_ERR_IO (a file cannot be read or parsed);
 *   ES_ERR_INVALID_ARGUMENT (the key does not match the certificate, or
 *   a file is not a regular file: a FIFO is refused, never opened for
 *   reading, see regfile.h); ES_ERR_NO_MEMORY.
 */
es_err tls_server_ctx(const char *cert_file, const char *key_file, SSL_CTX **out, char *msg,
                      size_t msg_len);

/** @brief The first error of OpenSSL's queue as text ("" when none); clears the queue. */
void tls_error_string(char *buf, size_t len);

/** @brief "TLSv1.3 TLS_AES_256_GCM_SHA384" for a connection. */
void tls_describe(const SSL *ssl, char *buf, size_t len);

#endif

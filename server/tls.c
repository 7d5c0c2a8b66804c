#include "tls.h"

#include <stdbool.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>

#include "regfile.h"

void tls_error_string(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, len, "%s", "");
    } else {
        ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
}

void tls_describe(const SSL *ssl, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

es_err tls_server_ctx(const char *cert_file, const char *key_file, SSL_CTX **out, char *msg,
                      size_t msg_len)
{
    *out = NULL;
    char why[256];
    /* OpenSSL opens the files by name and would block on a FIFO. */
    es_err rv = regfile_check(cert_file, "the TLS certificate", msg, msg_len);
    if (rv == ES_OK) {
        rv = regfile_check(key_file, "the TLS key", msg, msg_len);
    }
    if (rv != ES_OK) {
        return rv;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        return ES_ERR_NO_MEMORY;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_error_string(why, sizeof why);
        snprintf(msg, msg_len, "cannot use the TLS certificate %s: %s", cert_file, why);
        SSL_CTX_free(ctx);
        return ES_ERR_IO;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
        tls_error_string(why, sizeof why);
        if (mismatch) {
            snprintf(msg, msg_len, "the TLS key %s does not match the certificate %s", key_file,
                     cert_file);
            SSL_CTX_free(ctx);
            return ES_ERR_INVALID_ARGUMENT;
        }
        snprintf(msg, msg_len, "cannot use the TLS key %s: %s", key_file, why);
        SSL_CTX_free(ctx);
        return ES_ERR_IO;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_error_string(why, sizeof why);
        snprintf(msg, msg_len, "the TLS key %s does not match the certificate %s: %s", key_file,
                 cert_file, why);
        SSL_CTX_free(ctx);
        return ES_ERR_INVALID_ARGUMENT;
    }
    *out = ctx;
    return ES_OK;
}

#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int load_file(tool_token *tok, const char *path, const char *prog)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "%s: cannot open the token file %s: %s\n", prog, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH))) {
        fprintf(stderr, "%s: warning: the token file %s can be read by group or others\n", prog,
                path);
    }
    uint8_t buf[TOKEN_MAX_BYTES + 64];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            fprintf(stderr, "%s: cannot read the token file %s: %s\n", prog, path, strerror(errno));
            close(fd);
            memset(buf, 0, sizeof buf);
            return -1;
        }
        if (r == 0 || have + (size_t)r == sizeof buf) {
            have += (size_t)r;
            break;
        }
        have += (size_t)r;
    }
    close(fd);
    size_t start = 0, end = have;
    while (start < end && is_space(buf[start])) {
        start++;
    }
    while (end > start && is_space(buf[end - 1])) {
        end--;
    }
    int rc = 0;
    if (end == start) {
        fprintf(stderr, "%s: the token file %s is empty\n", prog, path);
        rc = -1;
    } else if (end - start > TOKEN_MAX_BYTES || have == sizeof buf) {
        fprintf(stderr, "%s: the token in %s is longer than %u bytes\n", prog, path,
                TOKEN_MAX_BYTES);
        rc = -1;
    } else {
        memcpy(tok->bytes, buf + start, end - start);
        tok->len = end - start;
    }
    memset(buf, 0, sizeof buf);
    return rc;
}

int tool_token_load(tool_token *tok, const char *token_file, const char *prog)
{
    tok->len = 0;
    if (token_file == NULL || token_file[0] == '\0') {
        token_file = getenv("ES_TOKEN_FILE");
    }
    if (token_file != NULL && token_file[0] != '\0') {
        return load_file(tok, token_file, prog);
    }
    const char *env = getenv("ES_TOKEN");
    if (env != NULL && env[0] != '\0') {
        size_t n = strlen(env);
        if (n > TOKEN_MAX_BYTES) {
            fprintf(stderr, "%s: $ES_TOKEN is longer than %u bytes\n", prog, TOKEN_MAX_BYTES);
            return -1;
        }
        memcpy(tok->bytes, env, n);
        tok->len = n;
    }
    return 0;
}

void tool_tls_apply(const tool_tls *t, es_client_options *o, const char *prog)
{
    const char *env_tls = getenv("ES_TLS");
    const char *ca = t->ca_file ? t->ca_file : getenv("ES_TLS_CA");
    if (ca != NULL && *ca == '\0') {
        ca = NULL;
    }
    o->tls = t->tls || t->insecure || ca != NULL || (env_tls != NULL && !strcmp(env_tls, "1"));
    o->tls_ca_file = ca;
    o->tls_server_name = t->server_name;
    o->tls_insecure = t->insecure;
    static bool warned; /* once per process, not once per connection */
    if (t->insecure && !warned) {
        warned = true;
        fprintf(stderr,
                "%s: warning: --tls-insecure: the server's certificate is not verified; anyone "
                "on the path can impersonate it\n",
                prog);
    }
}

void tool_token_wipe(tool_token *tok)
{
    volatile uint8_t *p = tok->bytes;
    for (size_t i = 0; i < sizeof tok->bytes; i++) {
        p[i] = 0;
    }
    tok->len = 0;
}

#include "it.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void it_addr(uint16_t port, char *buf)
{
    snprintf(buf, 32, "127.0.0.1:%u", (unsigned)port);
}

es_client *it_client(uint16_t port)
{
    char addr[32];
    it_addr(port, addr);
    es_client_options o;
    es_client_options_init(&o);
    o.address = addr;
    o.client_name = "account-it";
    es_client *c = NULL;
    if (es_client_create(&o, &c) != ES_OK) {
        return NULL;
    }
    es_err rv = es_client_connect(c);
    if (rv != ES_OK) {
        fprintf(stderr, "it: connect to %s: %s\n", addr, es_client_errmsg(c));
        es_client_destroy(c);
        return NULL;
    }
    return c;
}

/* Read what is available from fd into buf (keeping a NUL); false at EOF. */
static bool drain(int fd, char *buf, size_t cap, size_t *len)
{
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return true;
    }
    if (n <= 0) {
        return false;
    }
    size_t room = cap - 1 - *len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(buf + *len, tmp, take);
    *len += take;
    buf[*len] = '\0';
    return true;
}

int it_cli(it_run *r, const char *server, const char *const *argv)
{
    memset(r, 0, sizeof(*r));
    r->status = -1;
    const char *bin = getenv("ES_ACCOUNT_BIN");
    if (bin == NULL || *bin == '\0') {
        fprintf(stderr, "it: ES_ACCOUNT_BIN is not set (run through meson test)\n");
        return -1;
    }
    const char *args[64];
    size_t n = 0;
    args[n++] = bin;
    for (size_t i = 0; argv[i] != NULL && n < 63; i++) {
        args[n++] = argv[i];
    }
    args[n] = NULL;

    /* The environment without ES_SERVER, plus ours. */
    char envbuf[64];
    const char *env[512];
    size_t ne = 0;
    for (char **e = environ; *e != NULL && ne < 510; e++) {
        if (strncmp(*e, "ES_SERVER=", 10) != 0) {
            env[ne++] = *e;
        }
    }
    if (server != NULL) {
        snprintf(envbuf, sizeof(envbuf), "ES_SERVER=%s", server);
        env[ne++] = envbuf;
    }
    env[ne] = NULL;

    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) {
        return -1;
    }
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, (char *const *)args, (char *const *)env);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        fprintf(stderr, "it: spawn %s: %s\n", bin, strerror(rc));
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    size_t lo = 0, le = 0;
    bool open_o = true, open_e = true;
    int64_t deadline = h_now_ms() + 30000;
    while ((open_o || open_e) && h_now_ms() < deadline) {
        struct pollfd p[2] = {{open_o ? po[0] : -1, POLLIN, 0}, {open_e ? pe[0] : -1, POLLIN, 0}};
        if (poll(p, 2, 1000) < 0 && errno != EINTR) {
            break;
        }
        if (open_o && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            open_o = drain(po[0], r->out, sizeof(r->out), &lo);
        }
        if (open_e && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            open_e = drain(pe[0], r->err, sizeof(r->err), &le);
        }
    }
    close(po[0]);
    close(pe[0]);
    if (open_o || open_e) {
        kill(pid, SIGKILL);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return 0;
}

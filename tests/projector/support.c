#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (16u * 1024u * 1024u)

int64_t t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void t_pause_ms(int ms)
{
    poll(NULL, 0, ms);
}

int t_mkdtemp(char *out, size_t len, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, len, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    return mkdtemp(out) ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void t_rm_rf(const char *dir)
{
    if (dir && *dir) {
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static pid_t spawn(const char *const argv[], const char *log_file)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    int fd = open(log_file, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static bool alive(child *c)
{
    if (c->pid <= 0) {
        return false;
    }
    int st;
    pid_t r = waitpid(c->pid, &st, WNOHANG);
    if (r == c->pid) {
        c->pid = 0;
        return false;
    }
    return true;
}

static int wait_port(child *c, int timeout_ms)
{
    int64_t end = t_now_ms() + timeout_ms;
    while (t_now_ms() < end) {
        FILE *f = fopen(c->port_file, "r");
        if (f) {
            unsigned port = 0;
            int n = fscanf(f, "%u", &port);
            fclose(f);
            if (n == 1 && port > 0 && port < 65536) {
                c->port = (uint16_t)port;
                return 0;
            }
        }
        if (!alive(c)) {
            return -1;
        }
        t_pause_ms(5);
    }
    return -1;
}

int t_esd_start(child *c, const char *dir, int timeout_ms)
{
    const char *bin = getenv("ESD_BIN");
    if (!bin) {
        fprintf(stderr, "ESD_BIN is not set\n");
        return -1;
    }
    char data[320];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(c->port_file, sizeof c->port_file, "%s/esd.port", dir);
    snprintf(c->log_file, sizeof c->log_file, "%s/esd.log", dir);
    unlink(c->port_file);
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)c->port);
    const char *argv[] = {bin,          "--listen", listen,   "--port-file", c->port_file,
                          "--data-dir", data,       "--sync", "none",        NULL};
    c->pid = spawn(argv, c->log_file);
    if (c->pid < 0 || wait_port(c, timeout_ms) != 0) {
        t_child_dump_log(c);
        return -1;
    }
    return 0;
}

int t_view_start(child *c, const char *dir, uint16_t server_port, const char *data_dir,
                 const char *extra, int timeout_ms)
{
    const char *bin = getenv("VIEW_BIN");
    if (!bin) {
        fprintf(stderr, "VIEW_BIN is not set\n");
        return -1;
    }
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%u", (unsigned)server_port);
    snprintf(c->port_file, sizeof c->port_file, "%s/view.port", dir);
    snprintf(c->log_file, sizeof c->log_file, "%s/view.log", dir);
    unlink(c->port_file);
    const char *argv[] = {bin,           "-s",          server,       "--listen",
                          "127.0.0.1:0", "--port-file", c->port_file, "--data-dir",
                          data_dir,      extra,         NULL};
    c->pid = spawn(argv, c->log_file);
    if (c->pid < 0 || wait_port(c, timeout_ms) != 0) {
        t_child_dump_log(c);
        return -1;
    }
    return 0;
}

int t_child_stop(child *c, int sig, int timeout_ms, int *status)
{
    if (c->pid <= 0) {
        return 0;
    }
    kill(c->pid, sig);
    int64_t end = t_now_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid) {
            break;
        }
        if (t_now_ms() >= end) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
            c->pid = 0;
            if (status) {
                *status = st;
            }
            return -1;
        }
        t_pause_ms(5);
    }
    c->pid = 0;
    if (status) {
        *status = st;
    }
    return 0;
}

void t_child_dump_log(const child *c)
{
    FILE *f = fopen(c->log_file, "r");
    if (!f) {
        return;
    }
    char line[1024];
    char ring[30][1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        snprintf(ring[n % 30], sizeof ring[0], "%s", line);
        n++;
    }
    fclose(f);
    fprintf(stderr, "---- %s (last lines) ----\n", c->log_file);
    for (int i = n > 30 ? n - 30 : 0; i < n; i++) {
        fputs(ring[i % 30], stderr);
    }
}

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int t_http(uint16_t port, const char *method, const char *path, int *status, char **body)
{
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[2048];
    int n =
        snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    if (n < 0 || (size_t)n >= sizeof req || send_all(fd, req, (size_t)n) != 0) {
        close(fd);
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= MAX_BODY) {
                break;
            }
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int code = 0;
    char *hdr_end = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1 || !hdr_end) {
        free(buf);
        return -1;
    }
    *status = code;
    *body = strdup(hdr_end + 4);
    free(buf);
    return 0;
}

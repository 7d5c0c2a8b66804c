#include "subs_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ----------------------------------------------------------------- time -- */

uint64_t sh_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A pause while polling a condition (never to synchronise). */
static void pause_ms(int ms)
{
    poll(NULL, 0, ms);
}

/* ------------------------------------------------------------------ esd -- */

static int read_port(const char *path, uint16_t *port)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char line[32] = "";
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (!ok || strchr(line, '\n') == NULL) {
        return -1; /* not completely written yet */
    }
    long v = strtol(line, NULL, 10);
    if (v <= 0 || v > 65535) {
        return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

void sh_esd_dump_log(const sh_esd *e)
{
    FILE *f = fopen(e->log_file, "r");
    if (f == NULL) {
        return;
    }
    char line[512];
    fprintf(stderr, "---- esd log (%s) ----\n", e->log_file);
    while (fgets(line, sizeof(line), f) != NULL) {
        fputs(line, stderr);
    }
    fclose(f);
}

int sh_esd_start(sh_esd *e, const char *const *extra)
{
    memset(e, 0, sizeof(*e));
    const char *bin = getenv("ESD_BIN");
    if (bin == NULL || *bin == '\0') {
        fprintf(stderr, "harness: ESD_BIN is not set (run through meson test)\n");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(e->dir, sizeof(e->dir), "%s/esd-subs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(e->dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
        e->dir[0] = '\0';
        return -1;
    }
    snprintf(e->port_file, sizeof(e->port_file), "%s/port", e->dir);
    snprintf(e->data_dir, sizeof(e->data_dir), "%s/data", e->dir);
    snprintf(e->log_file, sizeof(e->log_file), "%s/esd.log", e->dir);
    const char *argv[SH_MAX_ARGS + 16];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--data-dir";
    argv[n++] = e->data_dir;
    argv[n++] = "--port-file";
    argv[n++] = e->port_file;
    argv[n++] = "--sync";
    argv[n++] = "none";
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    for (int i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (i >= SH_MAX_ARGS) {
            return -1;
        }
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    int logfd = open(e->log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(125);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        dup2(logfd, 1);
        dup2(logfd, 2);
        close_range(3, ~0u, 0);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(logfd);
    e->pid = pid;
    uint64_t deadline = sh_now_us() + 10000000u;
    while (sh_now_us() < deadline) {
        if (read_port(e->port_file, &e->port) == 0) {
            snprintf(e->address, sizeof(e->address), "127.0.0.1:%u", e->port);
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            e->pid = 0;
            fprintf(stderr, "harness: esd exited at start (status 0x%x)\n", st);
            sh_esd_dump_log(e);
            return -1;
        }
        pause_ms(2);
    }
    fprintf(stderr, "harness: no port from esd within 10 s\n");
    sh_esd_dump_log(e);
    return -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void sh_esd_destroy(sh_esd *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGTERM);
        uint64_t deadline = sh_now_us() + 10000000u;
        int st;
        while (waitpid(e->pid, &st, WNOHANG) != e->pid) {
            if (sh_now_us() > deadline) {
                kill(e->pid, SIGKILL);
                waitpid(e->pid, &st, 0);
                break;
            }
            pause_ms(2);
        }
        e->pid = 0;
    }
    if (e->dir[0] != '\0') {
        nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        e->dir[0] = '\0';
    }
}

/* --------------------------------------------------------------- /proc -- */

long sh_proc_kb(pid_t pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long v = -1;
    size_t flen = strlen(field);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, flen) == 0) {
            v = strtol(line + flen, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

long long sh_proc_cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: fields count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL) {
        return -1;
    }
    unsigned long long ut = 0, st = 0;
    /* After ')': state (3), then fields 4..13, utime (14), stime (15). */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return -1;
    }
    return (long long)(ut + st);
}

long long sh_proc_wait_us(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL) {
        return -1;
    }
    long long total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char file[sizeof(path) + sizeof(de->d_name) + 16];
        snprintf(file, sizeof(file), "%s/%s/schedstat", path, de->d_name);
        FILE *f = fopen(file, "r");
        if (f == NULL) {
            continue;
        }
        unsigned long long run = 0, wait = 0;
        if (fscanf(f, "%llu %llu", &run, &wait) == 2) {
            total += (long long)(wait / 1000u);
        }
        fclose(f);
    }
    closedir(d);
    return total;
}

/* -------------------------------------------------------------- clients -- */

es_client *sh_client(const sh_esd *e, const char *name)
{
    es_client_options o;
    es_client_options_init(&o);
    o.address = e->address;
    o.client_name = name;
    o.request_timeout_ms = 20000;
    o.reconnect_attempts = 5;
    o.backoff_initial_ms = 5;
    o.backoff_max_ms = 50;
    o.breaker_threshold = 0;
    es_client *c = NULL;
    if (es_client_create(&o, &c) != ES_OK) {
        fprintf(stderr, "harness: es_client_create failed\n");
        return NULL;
    }
    es_err rv = es_client_connect(c);
    if (rv != ES_OK) {
        fprintf(stderr, "harness: connect: %s\n", es_client_errmsg(c));
        es_client_destroy(c);
        return NULL;
    }
    return c;
}

/* ----------------------------------------------------------- raw frames -- */

int sh_raw_connect(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

int sh_raw_send(int fd, const Es__V1__Request *req)
{
    size_t len = es__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(4 + len);
    if (buf == NULL) {
        return -1;
    }
    buf[0] = (uint8_t)(len >> 24);
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    es__v1__request__pack(req, buf + 4);
    size_t off = 0;
    int rc = 0;
    while (off < 4 + len) {
        ssize_t w = send(fd, buf + off, 4 + len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rc = -1;
            break;
        }
        off += (size_t)w;
    }
    free(buf);
    return rc;
}

/* Receive exactly n bytes before the deadline. */
static int recv_n(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
    while (n > 0) {
        uint64_t now = sh_now_us();
        if (now >= deadline) {
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)((deadline - now + 999) / 1000));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        ssize_t got = recv(fd, p, n, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (got <= 0) {
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

Es__V1__Response *sh_raw_recv(int fd, int timeout_ms)
{
    uint64_t deadline = sh_now_us() + (uint64_t)timeout_ms * 1000u;
    uint8_t hdr[4];
    if (recv_n(fd, hdr, 4, deadline) != 0) {
        return NULL;
    }
    uint32_t len =
        ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    if (len == 0 || len > (64u << 20)) {
        return NULL;
    }
    uint8_t *body = malloc(len);
    if (body == NULL || recv_n(fd, body, len, deadline) != 0) {
        free(body);
        return NULL;
    }
    Es__V1__Response *r = es__v1__response__unpack(NULL, len, body);
    free(body);
    return r;
}

int sh_raw_hello(int fd)
{
    Es__V1__Hello h = ES__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.client_name = (char *)"raw-test";
    Es__V1__Request req = ES__V1__REQUEST__INIT;
    req.id = 1;
    req.kind_case = ES__V1__REQUEST__KIND_HELLO;
    req.hello = &h;
    if (sh_raw_send(fd, &req) != 0) {
        return -1;
    }
    Es__V1__Response *r = sh_raw_recv(fd, 5000);
    int rc = r != NULL && r->id == 1 && r->kind_case == ES__V1__RESPONSE__KIND_HELLO ? 0 : -1;
    if (r != NULL) {
        es__v1__response__free_unpacked(r, NULL);
    }
    return rc;
}

/* -------------------------------------------------------------- helpers -- */

void sh_u64s_push(sh_u64s *a, uint64_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        uint64_t *v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) {
            abort();
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

void sh_u64s_free(sh_u64s *a)
{
    free(a->v);
    memset(a, 0, sizeof(*a));
}

uint64_t sh_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

#include "scale_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "es.pb-c.h"

void sc_put_subscribe(hbuf *b, uint64_t id, int target, const char *name, int start)
{
    Es__V1__Subscribe s = ES__V1__SUBSCRIBE__INIT;
    s.target = (Es__V1__SubscribeTarget)target;
    if (name) {
        s.name.data = (uint8_t *)name;
        s.name.len = strlen(name);
    }
    s.from_start = start == SC_FROM_START;
    s.from_end = start == SC_FROM_END;
    Es__V1__Request r = ES__V1__REQUEST__INIT;
    r.id = id;
    r.kind_case = ES__V1__REQUEST__KIND_SUBSCRIBE;
    r.subscribe = &s;
    h_put_req(b, &r);
}

unsigned long sc_raise_nofile(unsigned long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (unsigned long)rl.rlim_cur;
}

long sc_rss_anon_kb(pid_t pid)
{
    return h_proc_status_kb(pid, "RssAnon:");
}

bool sc_long(void)
{
    const char *v = getenv("SCALE_LONG");
    return v && !strcmp(v, "1");
}

int sc_drain(int fd, int quiet_ms)
{
    int n = 0;
    for (;;) {
        Es__V1__Response *r = NULL;
        int rv = h_recv(fd, quiet_ms, &r, NULL);
        if (rv == H_TIMEOUT) {
            return n;
        }
        if (rv != H_OK) {
            return -1;
        }
        h_resp_free(r);
        n++;
    }
}

double sc_metric(uint16_t port, const char *key)
{
    int status = 0;
    char *body = NULL;
    if (h_http(port, "GET", "/metrics", &status, &body) != 0 || status != 200) {
        free(body);
        return -1;
    }
    double v = -1;
    size_t kl = strlen(key);
    for (const char *line = body; line && *line; line = strchr(line, '\n')) {
        line += *line == '\n';
        if (!strncmp(line, key, kl) && line[kl] == ' ') {
            v = strtod(line + kl + 1, NULL);
            break;
        }
    }
    free(body);
    return v;
}

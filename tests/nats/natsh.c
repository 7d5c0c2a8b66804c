#include "natsh.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crc32c.h"
#include "rel.h"
#include "support.h"

static const char *server_bin(void)
{
    const char *b = getenv("NATS_SERVER_BIN");
    return b && *b ? b : "nats-server";
}

void natsh_require_server(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", server_bin());
    if (system(cmd) != 0) {
        rel_skip("nats-server is not installed (apt-get install nats-server; tools/dev.sh "
                 "installs it)");
    }
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        rel_fail("cannot find a free port");
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void spawn_node(natsh_node *nd)
{
    pid_t pid = fork();
    if (pid < 0) {
        rel_fail("fork failed");
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp(server_bin(), server_bin(), "-c", nd->conf, (char *)NULL);
        _exit(127);
    }
    nd->pid = pid;
}

static void write_conf(natsh_cluster *c, int i)
{
    natsh_node *nd = &c->nodes[i];
    FILE *f = fopen(nd->conf, "w");
    if (!f) {
        rel_fail("cannot write %s", nd->conf);
    }
    fprintf(f,
            "server_name: %s\nlisten: 127.0.0.1:%u\n"
            "jetstream { store_dir: \"%s\", max_memory_store: 64MB, max_file_store: 2GB }\n",
            nd->name, (unsigned)nd->client_port, nd->store_dir);
    if (c->n > 1) {
        fprintf(f, "cluster {\n  name: esdtest\n  listen: 127.0.0.1:%u\n  routes: [\n",
                (unsigned)nd->cluster_port);
        for (int k = 0; k < c->n; k++) {
            if (k != i) {
                fprintf(f, "    nats-route://127.0.0.1:%u\n", (unsigned)c->nodes[k].cluster_port);
            }
        }
        fprintf(f, "  ]\n}\n");
    }
    fclose(f);
}

static bool js_ready(const char *url)
{
    natsConnection *nc = NULL;
    natsOptions *o = NULL;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, url);
    natsOptions_SetTimeout(o, 1000);
    natsOptions_SetMaxReconnect(o, 0);
    bool ok = false;
    if (natsConnection_Connect(&nc, o) == NATS_OK) {
        jsCtx *js = NULL;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 1000;
        if (natsConnection_JetStream(&js, nc, &jo) == NATS_OK) {
            jsAccountInfo *ai = NULL;
            if (js_GetAccountInfo(&ai, js, NULL, NULL) == NATS_OK) {
                ok = true;
                jsAccountInfo_Destroy(ai);
            }
            jsCtx_Destroy(js);
        }
        natsConnection_Destroy(nc);
    }
    natsOptions_Destroy(o);
    return ok;
}

static void wait_ready(natsh_cluster *c, int i)
{
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%u", (unsigned)c->nodes[i].client_port);
    int64_t deadline = h_now_ms() + 60000;
    while (!js_ready(url)) {
        int st;
        if (waitpid(c->nodes[i].pid, &st, WNOHANG) == c->nodes[i].pid) {
            h_dump_tail(c->nodes[i].log, 20);
            rel_fail("nats-server %s exited", c->nodes[i].name);
        }
        if (h_now_ms() > deadline) {
            h_dump_tail(c->nodes[i].log, 20);
            rel_fail("JetStream on %s not ready within 60 s", c->nodes[i].name);
        }
        h_sleep_ms(100);
    }
}

void natsh_start(natsh_cluster *c, int n, const char *base)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    snprintf(c->base, sizeof c->base, "%s", base);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        natsh_node *nd = &c->nodes[i];
        snprintf(nd->name, sizeof nd->name, "n%d", i + 1);
        nd->client_port = free_port();
        nd->cluster_port = free_port();
        snprintf(nd->conf, sizeof nd->conf, "%s/%s.conf", base, nd->name);
        snprintf(nd->log, sizeof nd->log, "%s/%s.log", base, nd->name);
        snprintf(nd->store_dir, sizeof nd->store_dir, "%s/%s-js", base, nd->name);
        used += (size_t)snprintf(c->urls + used, sizeof c->urls - used, "%snats://127.0.0.1:%u",
                                 i ? "," : "", (unsigned)nd->client_port);
    }
    for (int i = 0; i < n; i++) {
        write_conf(c, i);
        spawn_node(&c->nodes[i]);
    }
    for (int i = 0; i < n; i++) {
        wait_ready(c, i);
    }
}

void natsh_restart(natsh_cluster *c, int i)
{
    spawn_node(&c->nodes[i]);
    wait_ready(c, i);
}

void natsh_kill(natsh_cluster *c, int i)
{
    if (c->nodes[i].pid > 0) {
        kill(c->nodes[i].pid, SIGKILL);
        waitpid(c->nodes[i].pid, NULL, 0);
        c->nodes[i].pid = 0;
    }
}

void natsh_stop(natsh_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid > 0) {
            kill(c->nodes[i].pid, SIGTERM);
        }
    }
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid > 0) {
            waitpid(c->nodes[i].pid, NULL, 0);
            c->nodes[i].pid = 0;
        }
    }
}

int natsh_node_by_name(const natsh_cluster *c, const char *name)
{
    for (int i = 0; i < c->n; i++) {
        if (!strcmp(c->nodes[i].name, name)) {
            return i;
        }
    }
    return -1;
}

void natsh_connect(const natsh_cluster *c, natsConnection **nc, jsCtx **js)
{
    natsOptions *o = NULL;
    natsOptions_Create(&o);
    char urls[NATSH_MAX_NODES][64];
    const char *list[NATSH_MAX_NODES];
    for (int i = 0; i < c->n; i++) {
        snprintf(urls[i], sizeof urls[i], "nats://127.0.0.1:%u", (unsigned)c->nodes[i].client_port);
        list[i] = urls[i];
    }
    natsOptions_SetServers(o, list, c->n);
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 100);
    natsStatus s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        rel_fail("cannot connect to NATS at %s: %s", c->urls, natsStatus_GetText(s));
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    if (natsConnection_JetStream(js, *nc, &jo) != NATS_OK) {
        rel_fail("no JetStream context");
    }
}

void natsh_stream_leader(jsCtx *js, const char *stream, char *out, size_t cap)
{
    out[0] = '\0';
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK) {
        if (si->Cluster && si->Cluster->Leader) {
            snprintf(out, cap, "%s", si->Cluster->Leader);
        }
        jsStreamInfo_Destroy(si);
    }
}

static uint64_t header_u64(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v) {
        return UINT64_MAX;
    }
    return strtoull(v, NULL, 10);
}

void natsh_verify_copy(jsCtx *js, const char *stream, const char *store_hex, uint64_t expect)
{
    /* Just after a node restart the stream info may come from a replica
     * that is still catching up (seen: 64,735 of 100,000 three seconds after
     * the restart, the full count a moment later): ask until the count is
     * right or 60 s have passed. Every message is read and checked below. */
    uint64_t msgs = 0, first = 0, last = 0;
    int64_t deadline = h_now_ms() + 60000;
    for (;;) {
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK) {
            msgs = si->State.Msgs;
            first = si->State.FirstSeq;
            last = si->State.LastSeq;
            jsStreamInfo_Destroy(si);
            if (msgs == expect && first == 1 && last == expect) {
                break;
            }
        }
        if (h_now_ms() > deadline) {
            break;
        }
        h_sleep_ms(200);
    }
    REL_CHECK(msgs == expect && first == 1 && last == expect,
              "the copy holds %" PRIu64 " messages (sequences %" PRIu64 "..%" PRIu64
              "), expected exactly %" PRIu64,
              msgs, first, last, expect);
    char subject[64];
    jsStreamInfo *si2 = NULL;
    js_GetStreamInfo(&si2, js, stream, NULL, NULL);
    snprintf(subject, sizeof subject, "%s", si2->Config->Subjects[0]);
    jsStreamInfo_Destroy(si2);
    natsSubscription *sub = NULL;
    uint64_t next = 1;
    int64_t last_progress = h_now_ms();
    deadline = h_now_ms() + 120000;
    while (next <= expect) {
        if (!sub) {
            /* A consumer from `next`; made again when it stalls (a consumer
             * placed on a replica that is still catching up after a
             * restart can stop delivering). */
            jsSubOptions so;
            jsSubOptions_Init(&so);
            so.Stream = stream;
            so.ManualAck = true;
            so.Config.DeliverPolicy = js_DeliverByStartSequence;
            so.Config.OptStartSeq = next;
            so.Config.AckPolicy = js_AckAll;
            so.Config.MaxAckPending = 20000;
            natsStatus s = js_PullSubscribe(&sub, js, subject, NULL, NULL, &so, NULL);
            if (s != NATS_OK) {
                REL_CHECK(h_now_ms() < deadline, "pull subscribe: %s", natsStatus_GetText(s));
                sub = NULL;
                h_sleep_ms(200);
                continue;
            }
            last_progress = h_now_ms();
        }
        natsMsgList list = {0};
        natsStatus s = natsSubscription_Fetch(&list, sub, 1000, 1000, NULL);
        if (list.Count == 0) {
            REL_CHECK(h_now_ms() < deadline, "reading the copy stalled at %" PRIu64 ": %s", next,
                      natsStatus_GetText(s));
            if (h_now_ms() - last_progress > 3000) {
                rel_log("reading the copy: no message for 3 s at %" PRIu64 "; new consumer", next);
                natsSubscription_Unsubscribe(sub);
                natsSubscription_Destroy(sub);
                sub = NULL;
            }
            continue;
        }
        last_progress = h_now_ms();
        for (int i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            uint64_t pos = header_u64(m, "Es-Position");
            REL_CHECK(pos == next, "message %" PRIu64 " of the copy holds position %" PRIu64, next,
                      pos);
            const char *id = NULL, *crc = NULL;
            natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
            natsMsgHeader_Get(m, "Es-Crc32c", &crc);
            char want[64];
            snprintf(want, sizeof want, "%s:%" PRIu64, store_hex, pos);
            REL_CHECK(id && !strcmp(id, want), "message %" PRIu64 " has id %s, expected %s", next,
                      id ? id : "(none)", want);
            char got[9];
            snprintf(
                got, sizeof got, "%08x",
                crc32c(0, (const uint8_t *)natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m)));
            REL_CHECK(crc && !strcmp(crc, got), "message %" PRIu64 " fails its Es-Crc32c", next);
            next++;
        }
        natsMsg_Ack(list.Msgs[list.Count - 1], NULL);
        natsMsgList_Destroy(&list);
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
}

/* The port of the last "metrics listening addr=HOST:PORT" line. */
double natsh_metric(const esd_proc *e, const char *name)
{
    uint16_t port = esd_metrics_port(e, 0);
    REL_CHECK(port != 0, "no 'metrics listening' line in %s", e->log_file);
    int status = 0;
    char *buf = NULL;
    REL_CHECK(h_http(port, "GET", "/metrics", &status, &buf) == 0 && status == 200,
              "GET /metrics on port %u: no answer or status %d", (unsigned)port, status);
    size_t nl = strlen(name);
    double v = -1.0;
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (!strncmp(l, name, nl) && l[nl] == ' ') {
            v = strtod(l + nl + 1, NULL);
            break;
        }
    }
    free(buf);
    return v;
}

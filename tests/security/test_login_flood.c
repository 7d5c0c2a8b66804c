/*
 * test_login_flood — failed-login limits against the real esd, with client
 * sockets bound to several loopback addresses (127.0.0.2 and up: Linux
 * routes all of 127/8 to lo):
 *
 *  - many addresses: 200 addresses guessing tokens together get no more
 *    checks than the global budget allows (burst + rate x elapsed time);
 *  - one address flooding: a client at another address, never seen
 *    before, logs in every time;
 *  - one address flooding, with a flood of idle connections from it too:
 *    a client at the SAME address that logged in before keeps logging in
 *    every time (limits count failures, not successes), while a user who
 *    never logged in from there is refused like the flood, and the flood's
 *    own checked guesses stay within the address's budget.
 *
 * The figures (guesses per second, legit successes) are printed. The only
 * bounds involving time are upper bounds on guesses computed from the
 * measured elapsed time, which a slow machine can only loosen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"
#include "reqs.h"

#define T_ADMIN   "admin-token-0123456789"
#define T_BILLING "billing-token-abcdefgh"

#define BURST        10 /* --auth-failures */
#define GLOBAL_RATE  50 /* --auth-failures-global */
#define N_ADDRS      200
#define ROUNDS       15
#define MAX_ROUNDS   200
#define ATTACK_MS    3000
#define LEGIT_LOGINS 100

static char g_dir[] = "/tmp/esd-login-flood-XXXXXX";
static char g_users[300];
static esd_proc g_esd;

/* A TCP connection from 127.0.0.<host> to esd. */
static int connect_from(unsigned host)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in me = {0};
    me.sin_family = AF_INET;
    me.sin_addr.s_addr = htonl(0x7f000000u | host);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(g_esd.port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) != 0 ||
        connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

enum outcome { LOGGED_IN, CHECKED_WRONG, LIMITED, BROKEN };

/* One hello on a fresh connection from 127.0.0.<host>. */
static enum outcome try_login(unsigned host, const char *user, const char *token)
{
    int fd = connect_from(host);
    if (fd < 0) {
        return BROKEN;
    }
    sec_req r;
    enum outcome o = BROKEN;
    Es__V1__Response *resp = NULL;
    if (h_send_req(fd, sec_hello(&r, 1, user, token), 5000) == H_OK &&
        h_recv(fd, 5000, &resp, NULL) == H_OK) {
        if (resp->kind_case == ES__V1__RESPONSE__KIND_HELLO) {
            o = LOGGED_IN;
        } else if (h_code(resp) == ES_ERR_UNAUTHENTICATED) {
            o = strstr(resp->error->message, "too many") ? LIMITED : CHECKED_WRONG;
        }
    }
    h_resp_free(resp);
    close(fd);
    return o;
}

static int start(const char *max_prehello)
{
    if (!g_users[0]) {
        if (!mkdtemp(g_dir)) {
            return -1;
        }
        snprintf(g_users, sizeof g_users, "%s/users", g_dir);
        FILE *f = fopen(g_users, "w");
        if (!f) {
            return -1;
        }
        fputs("admin admin " T_ADMIN "\nbilling write " T_BILLING "\n", f);
        fclose(f);
        chmod(g_users, 0600);
    }
    static const char *args[] = {"--auth-file",
                                 g_users,
                                 "--auth-failures",
                                 "10",
                                 "--auth-failures-global",
                                 "50",
                                 "--max-prehello",
                                 NULL,
                                 "--log-level",
                                 "error",
                                 NULL};
    args[7] = max_prehello;
    if (esd_init(&g_esd, args) != 0) {
        return -1;
    }
    return esd_start(&g_esd, 10000);
}

static int teardown(void **state)
{
    (void)state;
    return esd_finish(&g_esd, 10000);
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(g_users);
    rmdir(g_dir);
    return 0;
}

/* ------------------------------------------------------- many addresses -- */

static int setup_default(void **state)
{
    (void)state;
    return start("256");
}

static void test_many_addresses(void **state)
{
    (void)state;
    /* is 127.0.0.2 usable here? (it is on Linux: all of 127/8 is local) */
    int probe = connect_from(2);
    if (probe < 0) {
        skip();
    }
    close(probe);
    unsigned checked = 0, limited = 0, broken = 0;
    int64_t t0 = h_now_ms();
    /* at least ROUNDS rounds and, to show the steady rate beyond the
     * burst, at least ATTACK_MS of attack (a loop bound, not an assertion) */
    unsigned rounds = 0;
    for (; rounds < MAX_ROUNDS && (rounds < ROUNDS || h_now_ms() - t0 < ATTACK_MS); rounds++) {
        for (unsigned i = 0; i < N_ADDRS; i++) {
            switch (try_login(2 + i, "admin", "a-wrong-guess")) {
            case CHECKED_WRONG:
                checked++;
                break;
            case LIMITED:
                limited++;
                break;
            case LOGGED_IN:
                fail_msg("a wrong token logged in");
                break;
            case BROKEN:
                broken++;
                break;
            }
        }
    }
    double secs = (double)(h_now_ms() - t0) / 1000.0;
    print_message("    %u addresses x %u attempts in %.2f s: %u tokens checked (%.0f guesses/s), "
                  "%u refused unchecked\n",
                  N_ADDRS, rounds, secs, checked, checked / secs, limited);
    assert_int_equal(broken, 0);
    /* the global budget: its burst plus its rate over the time taken */
    double bound = GLOBAL_RATE + GLOBAL_RATE * secs + 1;
    if ((double)checked > bound) {
        fail_msg("%u guesses checked in %.2f s; the global limit allows %.0f", checked, secs,
                 bound);
    }
    assert_true(limited > 0);
    assert_true(checked > 0);
}

/* ---------------------------------------------------------------- floods -- */

typedef struct flood {
    unsigned host;
    const char *user; /* the user the guesses name (NULL: none) */
    atomic_bool stop;
    atomic_uint checked, limited, broken;
} flood;

static void *flood_main(void *arg)
{
    flood *f = arg;
    while (!atomic_load(&f->stop)) {
        switch (try_login(f->host, f->user, "a-wrong-guess")) {
        case CHECKED_WRONG:
            atomic_fetch_add(&f->checked, 1);
            break;
        case LIMITED:
            atomic_fetch_add(&f->limited, 1);
            break;
        case LOGGED_IN:
            break; /* impossible; the checked count would tell */
        case BROKEN:
            atomic_fetch_add(&f->broken, 1);
            break;
        }
    }
    return NULL;
}

/* A client at another address, never seen before, logs in every time. */
static void test_other_address_during_flood(void **state)
{
    (void)state;
    int probe = connect_from(2);
    if (probe < 0) {
        skip();
    }
    close(probe);
    flood f = {.host = 2, .user = NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flood_main, &f), 0);
    /* wait until the flood has spent its address's budget */
    int64_t deadline = h_now_ms() + 10000;
    while (atomic_load(&f.limited) == 0 && h_now_ms() < deadline) {
        poll(NULL, 0, 10);
    }
    unsigned ok = 0;
    for (int i = 0; i < LEGIT_LOGINS; i++) {
        ok += try_login(3, "billing", T_BILLING) == LOGGED_IN;
    }
    atomic_store(&f.stop, true);
    pthread_join(th, NULL);
    print_message("    flood from 127.0.0.2: %u guesses checked, %u refused unchecked; "
                  "127.0.0.3 logged in %u of %d times\n",
                  atomic_load(&f.checked), atomic_load(&f.limited), ok, LEGIT_LOGINS);
    assert_true(atomic_load(&f.limited) > 0);
    assert_int_equal(ok, LEGIT_LOGINS);
}

static int setup_small_prehello(void **state)
{
    (void)state;
    return start("16");
}

#define IDLE_CONNS 40

/*
 * The same address: idle connections beyond --max-prehello and a flood of
 * wrong tokens from 127.0.0.4; billing, who logged in from 127.0.0.4
 * before, logs in every time; admin, who never did, is refused.
 */
static void test_same_address_during_flood(void **state)
{
    (void)state;
    int probe = connect_from(4);
    if (probe < 0) {
        skip();
    }
    close(probe);
    assert_int_equal(try_login(4, "billing", T_BILLING), LOGGED_IN);
    /* idle connections from the address, more than --max-prehello 16: the
     * oldest are closed by esd as new ones come */
    int idle[IDLE_CONNS];
    for (int i = 0; i < IDLE_CONNS; i++) {
        idle[i] = connect_from(4);
        assert_true(idle[i] >= 0);
    }
    int closed = 0;
    for (int i = 0; i < IDLE_CONNS; i++) {
        closed += h_wait_closed(idle[i], i < IDLE_CONNS - 16 ? 5000 : 0, NULL) == H_CLOSED;
    }
    assert_int_equal(closed, IDLE_CONNS - 16);
    flood f = {.host = 4, .user = "admin"};
    pthread_t th;
    int64_t t0 = h_now_ms();
    assert_int_equal(pthread_create(&th, NULL, flood_main, &f), 0);
    int64_t deadline = h_now_ms() + 10000;
    while (atomic_load(&f.limited) == 0 && h_now_ms() < deadline) {
        poll(NULL, 0, 10);
    }
    unsigned ok = 0, admin_refused = 0, admin_in = 0;
    for (int i = 0; i < LEGIT_LOGINS; i++) {
        ok += try_login(4, "billing", T_BILLING) == LOGGED_IN;
        if (i % 10 == 0) {
            enum outcome o = try_login(4, "admin", T_ADMIN);
            admin_refused += o == LIMITED;
            admin_in += o == LOGGED_IN; /* only when it came first after a refill */
        }
    }
    atomic_store(&f.stop, true);
    pthread_join(th, NULL);
    double secs = (double)(h_now_ms() - t0) / 1000.0;
    unsigned checked = atomic_load(&f.checked);
    print_message("    flood from 127.0.0.4 (and %d idle connections): %u guesses checked, %u "
                  "refused unchecked in %.2f s; billing logged in %u of %d times; admin "
                  "(never logged in from there) refused %u of %d times\n",
                  IDLE_CONNS, checked, atomic_load(&f.limited), secs, ok, LEGIT_LOGINS,
                  admin_refused, LEGIT_LOGINS / 10);
    for (int i = 0; i < IDLE_CONNS; i++) {
        close(idle[i]);
    }
    assert_int_equal(atomic_load(&f.broken), 0);
    assert_int_equal(ok, LEGIT_LOGINS);
    assert_true(admin_refused > 0);
    /* the flood's guesses stay within the address's budget (one refill a
     * second), plus one for each time admin got in and so became trusted */
    double bound = BURST + secs + 1 + admin_in;
    if ((double)checked > bound) {
        fail_msg("%u guesses from one address in %.2f s; its budget allows %.0f", checked, secs,
                 bound);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_addresses, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_other_address_during_flood, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_same_address_during_flood, setup_small_prehello,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}

/*
 * subs_harness — what the subscription integration tests share: the real
 * esd (and esctl) started in a temporary directory on port 0, clients of
 * the public library, raw frames for a peer that misbehaves on purpose,
 * and /proc figures of the server.
 *
 * Design notes: the binaries come from the ESD_BIN and ESCTL_BIN
 * environment variables, set by tests/subs/meson.build. Every wait is a
 * poll() with a deadline; nothing sleeps to synchronise (the only pauses
 * are while polling a condition, e.g. the port file). A started esd gets
 * PR_SET_PDEATHSIG, so a test that crashes does not leave it running.
 * Functions here never call cmocka (several run on worker threads); they
 * return a status and the tests assert on it.
 */
#ifndef ES_SUBS_HARNESS_H
#define ES_SUBS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "es.pb-c.h"
#include "es/client.h"

#define SH_MAX_ARGS 24

/** An esd of a test. */
typedef struct sh_esd {
    pid_t pid;     /* 0 when not running */
    char dir[256]; /* the temporary directory, removed by sh_esd_destroy */
    char port_file[320];
    char data_dir[320];
    char log_file[320];
    uint16_t port;
    char address[32]; /* "127.0.0.1:PORT" */
} sh_esd;

/**
 * @brief Make a temporary directory and start esd in it on 127.0.0.1:0
 *        with --sync none, --log-level warn and the extra arguments (a
 *        NULL-terminated list, may be NULL); wait for its port.
 * @return 0; -1 (the reason and esd's log are printed on stderr).
 */
int sh_esd_start(sh_esd *e, const char *const *extra);

/** @brief Stop esd (SIGTERM, then SIGKILL after 10 s) and remove its directory. */
void sh_esd_destroy(sh_esd *e);

/** @brief Print the tail of esd's log on stderr. */
void sh_esd_dump_log(const sh_esd *e);

/** @brief A "Field:  N kB" line of /proc/PID/status in kB; -1 if absent. */
long sh_proc_kb(pid_t pid, const char *field);

/** @brief utime + stime of a process in clock ticks (sysconf(_SC_CLK_TCK)); -1 on error. */
long long sh_proc_cpu_ticks(pid_t pid);

/**
 * @brief Time the threads of a process spent runnable but waiting for a CPU
 *        (sum of /proc/PID/task/x/schedstat's second field), in
 *        microseconds; -1 on error. Rising in a window means the machine,
 *        not the process, was busy.
 */
long long sh_proc_wait_us(pid_t pid);

/** @brief Monotonic clock in microseconds. */
uint64_t sh_now_us(void);

/**
 * @brief A client of the library for esd (connected).
 * @return the client, or NULL (the reason printed on stderr).
 */
es_client *sh_client(const sh_esd *e, const char *name);

/* ----------------------------------------------------------- raw frames -- */

/** @brief Connect with SO_RCVBUF set before connecting (0: default). @return fd or -1. */
int sh_raw_connect(uint16_t port, int rcvbuf);

/** @brief Send one framed Request (blocking, 5 s). @return 0 or -1. */
int sh_raw_send(int fd, const Es__V1__Request *req);

/**
 * @brief Receive one Response (free with es__v1__response__free_unpacked
 *        and a NULL allocator).
 * @return the response; NULL on timeout, close or a bad frame.
 */
Es__V1__Response *sh_raw_recv(int fd, int timeout_ms);

/** @brief Hello, then wait for the HelloOk. @return 0 or -1. */
int sh_raw_hello(int fd);

/* ------------------------------------------------------------- helpers -- */

/** A growable array of u64 (aborts when out of memory: test code). */
typedef struct sh_u64s {
    uint64_t *v;
    size_t n, cap;
} sh_u64s;

void sh_u64s_push(sh_u64s *a, uint64_t x);
void sh_u64s_free(sh_u64s *a);

/** @brief xorshift64* step (seed must not be 0). */
uint64_t sh_rand(uint64_t *state);

#endif

/*
 * support.h — what the projector integration tests share: temporary
 * directories, the real esd and es-account-view as child processes on port
 * 0 (ports read from their --port-file), and a tiny blocking HTTP/1.0 GET
 * over a raw socket.
 *
 * Binaries come from ESD_BIN and VIEW_BIN (set by tests/projector/meson.build).
 * Every wait polls with a deadline; nothing sleeps to synchronise. These
 * functions never call cmocka: they return a status the tests assert on.
 */
#ifndef ES_TEST_PROJECTOR_SUPPORT_H
#define ES_TEST_PROJECTOR_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** A child process started with its output in a log file. */
typedef struct child {
    pid_t pid; /* 0 when not running */
    uint16_t port;
    char port_file[320];
    char log_file[320];
} child;

/** @brief Monotonic milliseconds. */
int64_t t_now_ms(void);

/** @brief Wait ms milliseconds (for pacing, never for synchronisation). */
void t_pause_ms(int ms);

/** @brief mkdtemp under $TMPDIR (or /tmp). @return 0 or -1. */
int t_mkdtemp(char *out, size_t len, const char *tag);

/** @brief rm -rf. */
void t_rm_rf(const char *dir);

/**
 * @brief Start esd in dir (data in dir/data) on 127.0.0.1:0 with
 *        --sync none, and wait for its port. When c->port is already set
 *        (a restart), esd listens on that port again.
 * @return 0; -1 (the log is printed to stderr).
 */
int t_esd_start(child *c, const char *dir, int timeout_ms);

/**
 * @brief Start es-account-view against server "127.0.0.1:PORT" with its
 *        read model in data_dir, HTTP on port 0, log in dir; extra is one
 *        more argument (e.g. "--rebuild") or NULL.
 * @return 0; -1.
 */
int t_view_start(child *c, const char *dir, uint16_t server_port, const char *data_dir,
                 const char *extra, int timeout_ms);

/**
 * @brief Send sig and wait for the exit (SIGKILL after timeout_ms).
 * @param[out] status the wait status (may be NULL)
 * @return 0 exited within the time; -1 it had to be killed.
 */
int t_child_stop(child *c, int sig, int timeout_ms, int *status);

/** @brief Print the last lines of the child's log to stderr. */
void t_child_dump_log(const child *c);

/**
 * @brief GET path from 127.0.0.1:port (HTTP/1.0, Connection: close).
 * @param[out] status the HTTP status
 * @param[out] body the body, malloc'd and NUL-terminated (free it)
 * @return 0; -1 (connect or I/O failure, malformed reply).
 */
int t_http(uint16_t port, const char *method, const char *path, int *status, char **body);

#endif

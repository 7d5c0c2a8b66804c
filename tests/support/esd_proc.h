/*
 * esd_proc — the real esd (or another server program of the tree) as a
 * child process of a test: started in a temporary directory on a free port,
 * stopped with a signal and an exit status, looked at through /proc; plus
 * running short-lived programs (esctl) with a timeout, temporary
 * directories, and the clock.
 *
 * Design notes
 * ------------
 * esd listens on 127.0.0.1:0 and writes the port the kernel gave it to
 * --port-file; esd_start polls that file (a whole line) with a deadline, so
 * no test uses a fixed port and nothing sleeps to synchronise (the only
 * pauses are between polls of a condition). The binary comes from an
 * environment variable set by meson (ESD_BIN; another one, e.g. VIEW_BIN,
 * for the other servers). stdout and stderr go to a log file in the
 * temporary directory, whose tail is printed when something goes wrong;
 * each start writes a "==== start N ====" line to it first. The child gets
 * PR_SET_PDEATHSIG (a test killed by its timeout leaves no server behind),
 * so start processes from the thread that will outlive them (the main
 * thread). Descriptors of the test process are closed in the child (fd
 * counts, RLIMIT_NOFILE, and peers that would never see a close).
 *
 * The directory outlives restarts: stop and start again on the same data
 * (and, with listen_port, on the same port). ESD_KEEP=1 keeps it at the end.
 *
 * Functions here never call cmocka (several are used from worker threads
 * or from plain programs); they return a status and the tests assert on it.
 */
#ifndef ES_TEST_ESD_PROC_H
#define ES_TEST_ESD_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------------ esd -- */

#define H_MAX_ARGS 40

typedef struct esd_proc {
    pid_t pid;          /* 0 when not running */
    char dir[256];      /* the temporary directory (owned: removed by esd_destroy) */
    char data_dir[320]; /* dir/data; the caller may point it elsewhere before esd_start */
    char port_file[320];
    char log_file[320];
    uint16_t port;
    char address[32];             /* "127.0.0.1:PORT" once started */
    const char *args[H_MAX_ARGS]; /* extra arguments (borrowed) up to the first NULL; a
                                     test may change them between starts */
    unsigned long nofile;         /* RLIMIT_NOFILE for the child; 0 = inherit */
    const char *bin_env;          /* environment variable naming the program; NULL: ESD_BIN */
    uint16_t listen_port;         /* 0: a free port; else listen on this one (a restart in place) */
    bool quiet;                   /* exits are expected: no diagnostics on stderr when it exits */
    int status; /* wait status of the last exit reaped; 0 if killed by esd_start */
    int starts; /* how many times it was started */
} esd_proc;

/**
 * @brief Prepare an esd_proc: make its temporary directory and remember the
 *        extra arguments (a NULL-terminated list of borrowed strings, may be
 *        NULL).
 * @return 0; -1 (mkdtemp failed or too many arguments).
 */
int esd_init(esd_proc *e, const char *const *args);

/**
 * @brief Append extra arguments (NULL-terminated, borrowed) to those given
 *        to esd_init. @return 0; -1 (too many).
 */
int esd_add_args(esd_proc *e, const char *const *args);

/**
 * @brief esd_init with two argument lists (e.g. a suite's defaults and a
 *        test's own; either may be NULL), then esd_start.
 * @return 0; -1 (as esd_init or esd_start).
 */
int esd_launch(esd_proc *e, const char *const *args, const char *const *more, int timeout_ms);

/**
 * @brief Start the program: `$BIN --listen 127.0.0.1:P --data-dir DATA
 *        --port-file FILE ARGS...` (P = listen_port, 0 by default), and wait
 *        (polling, at most timeout_ms) for the port file.
 * @return 0; -1 (spawn failed, it exited: status in e->status, or no port in
 *         time: then it is killed and e->status is 0). Unless e->quiet, the
 *         reason and the log tail are printed to stderr.
 */
int esd_start(esd_proc *e, int timeout_ms);

/**
 * @brief Send sig and wait at most timeout_ms for esd to exit.
 * @param[out] status the wait status (may be NULL; also in e->status)
 * @param[out] elapsed_ms how long the exit took (may be NULL)
 * @return 0 when esd exited and was reaped; -1 when it was not running, or
 *         on timeout (it is then killed with SIGKILL and reaped, and -1
 *         still returned).
 */
int esd_stop(esd_proc *e, int sig, int timeout_ms, int *status, int *elapsed_ms);

/** @brief True while esd is running (reaps it when it has exited: status in e->status). */
bool esd_alive(esd_proc *e);

/**
 * @brief The orderly end of a test: SIGTERM, exit 0 within timeout_ms, no
 *        sanitizer report (ASan/UBSan/LSan) in esd's log; then esd_destroy.
 * @return 0; -1 (the reason and the log tail are printed to stderr).
 */
int esd_finish(esd_proc *e, int timeout_ms);

/**
 * @brief The end of a test that does not judge how esd ends: SIGTERM, SIGKILL
 *        after timeout_ms, then esd_destroy. Safe to call twice.
 */
void esd_end(esd_proc *e, int timeout_ms);

/** @brief True when esd's log holds a sanitizer report. */
bool esd_log_has_sanitizer_report(const esd_proc *e);

/** @brief Kill esd if running, reap it, remove the temporary directory. */
void esd_destroy(esd_proc *e);

/** @brief Print the tail of esd's log to stderr (for failure diagnostics). */
void esd_dump_log(const esd_proc *e);

/**
 * @brief The port of esd's --metrics-listen 127.0.0.1:0, from the last
 *        "metrics listening" line of its log, waiting (polling) at most
 *        timeout_ms for one. @return the port; 0 when there is none.
 */
uint16_t esd_metrics_port(const esd_proc *e, int timeout_ms);

/* -------------------------------------------------------------- programs -- */

/**
 * @brief Run a program and wait at most timeout_ms for it.
 * @param argv NULL-terminated; argv[0] is the path
 * @param out_path file receiving stdout+stderr, appended (NULL: /dev/null)
 * @param[out] status the wait status
 * @return 0 when it exited (see *status); -1 on spawn failure or timeout
 *         (then it was killed with SIGKILL and reaped).
 */
int h_run(char *const *argv, const char *out_path, int timeout_ms, int *status);

/**
 * @brief Run esctl ($ESCTL_BIN) with args (NULL-terminated), its output
 *        (replacing the file) in out_path (NULL: discarded).
 * @return the wait status (0 = exit 0), or -1 when it could not run / timed out.
 */
int h_esctl(const char *const *args, const char *out_path, int timeout_ms);

/** @brief "exit N" / "killed by signal N (NAME)" for a wait status. */
const char *h_status_str(int status, char *buf, size_t cap);

/** @brief Print the last lines of a file to stderr (diagnostics). */
void h_dump_tail(const char *path, int lines);

/* ----------------------------------------------------------- file system -- */

/** @brief A fresh directory $TMPDIR/TAG-XXXXXX (default /tmp). @return 0 or -1. */
int h_mkdtemp(const char *tag, char *out, size_t cap);

/** @brief rm -rf path (does not cross into mounted file systems). */
void h_rm_rf(const char *path);

/** @brief Copy one file. @return 0 or -1. */
int h_copy_file(const char *from, const char *to);

/* --------------------------------------------------------------- /proc -- */

/**
 * @brief A "Name:  N kB" field of /proc/PID/status, in kB; -1 if absent.
 * @param field the name, with or without the colon ("VmRSS:" or "VmRSS")
 */
long h_proc_status_kb(pid_t pid, const char *field);

/** @brief Reset the peak RSS (VmHWM) of a process (/proc/PID/clear_refs). @return 0 or -1. */
int h_proc_reset_hwm(pid_t pid);

/** @brief utime + stime of a process, in clock ticks; -1 on error. */
long long h_proc_cpu_ticks(pid_t pid);

/**
 * @brief Time the threads of a process spent runnable but waiting for a CPU
 *        (sum of /proc/PID/task/x/schedstat's second field), in
 *        microseconds; -1 on error. Rising in a window means the machine,
 *        not the process, was busy.
 */
long long h_proc_wait_us(pid_t pid);

/** @brief Number of open file descriptors of a process; -1 on error. */
int h_proc_fd_count(pid_t pid);

/**
 * @brief True when esd was built with sanitizers (ESD_SANITIZED, set by
 *        meson from b_sanitize): RSS figures are then meaningless (ASan's
 *        quarantine and shadow memory) and memory bounds are not asserted.
 */
bool h_sanitized(void);

/* ------------------------------------------------------------------ time -- */

/** @brief Monotonic clock in milliseconds. */
int64_t h_now_ms(void);

/** @brief Monotonic clock in microseconds. */
int64_t h_now_us(void);

/** @brief Sleep (for pacing a workload or between polls, never to synchronise). */
void h_sleep_ms(int ms);

#endif

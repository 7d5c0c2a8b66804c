/*
 * test_datadir — who may use a data directory, and a full file system
 * around it: the real esd and esctl.
 *
 *   test_datadir --rounds 1      (suite reliability)
 *   test_datadir --rounds 20     (suite long)
 *
 * Design notes
 * ------------
 * Ownership: an esd runs on a directory; a second esd on it must exit 1 at
 * once with a message naming the first one's pid; `esctl db backup` into
 * it must refuse naming the pid; `esctl db stat` and `db check` work and
 * say that esd is running. After kill -9 the directory is free again: esd
 * restarts on it at once (the kernel dropped the lock), and the second esd
 * is refused naming the new pid. After SIGTERM the note is gone.
 *
 * Full file system: a stopped store's data.mdb is copied, without its
 * lock.mdb (with its esd.lock and its key store keys.esk), onto a tmpfs that is then filled to the
 * last byte. esd, `esctl
 * db stat` and `esctl db check` must each exit 1 with a message naming
 * lock.mdb -- not die of SIGBUS when LMDB maps a lock file it could not
 * allocate. Then the tmpfs is given room: esd starts and serves the store.
 * Needs root for the mount (exit 77 otherwise).
 *
 * Backups: `esctl db backup` into an existing empty directory writes
 * data.mdb and keys.esk with mode 0600 and nothing else; into a full tmpfs it exits
 * non-zero and leaves no data.mdb and no temporary file behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel.h"
#include "support.h"

/* The tmpfs mounted by this run (unmounted at exit, also on failure). */
static char mounted[400];

static void unmount_at_exit(void)
{
    if (mounted[0]) {
        umount2(mounted, MNT_DETACH);
        mounted[0] = '\0';
    }
}

/* A file's first bytes as a string (empty when unreadable). */
static void slurp(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static bool file_has(const char *path, const char *what)
{
    static char buf[1 << 16];
    slurp(path, buf, sizeof buf);
    return strstr(buf, what) != NULL;
}

static bool exited_with(int st, int code)
{
    return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == code;
}

/* Fill the file system of dir to the last byte. */
static void fill_up(const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/filler", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REL_CHECK(fd >= 0, "open %s: %s", p, strerror(errno));
    static char chunk[65536];
    for (size_t sz = sizeof chunk; sz >= 1; sz /= 2) {
        while (write(fd, chunk, sz) == (ssize_t)sz) {
        }
    }
    close(fd);
}

/* ------------------------------------------------------------- ownership -- */

static void round_owner(uint64_t round)
{
    esd_proc a, b;
    char st_buf[128], pidtxt[32], out[400];
    REL_CHECK(esd_init(&a, NULL) == 0 && esd_init(&b, NULL) == 0, "cannot make temporary dirs");
    snprintf(out, sizeof out, "%s/esctl.out", a.dir);
    REL_CHECK(esd_start(&a, 20000) == 0, "esd did not start");
    for (int life = 0; life < 2; life++) {
        snprintf(pidtxt, sizeof pidtxt, "pid %ld", (long)a.pid);
        /* A second esd on the same directory. */
        snprintf(b.data_dir, sizeof b.data_dir, "%s", a.data_dir);
        b.quiet = true;
        REL_CHECK(esd_start(&b, 20000) != 0, "a second esd started on a directory in use");
        if (!exited_with(b.status, 1) || !file_has(b.log_file, pidtxt)) {
            h_dump_tail(b.log_file, 10);
            rel_fail("second esd: %s, expected exit 1 naming %s",
                     h_status_str(b.status, st_buf, sizeof st_buf), pidtxt);
        }
        REL_CHECK(esd_alive(&a), "the first esd died when a second one tried its directory");

        /* Offline commands beside it. */
        const char *stat_args[] = {"db", "stat", a.data_dir, NULL};
        int st = h_esctl(stat_args, out, 60000);
        if (!exited_with(st, 0) || !file_has(out, "is running") || !file_has(out, pidtxt)) {
            h_dump_tail(out, 10);
            rel_fail("esctl db stat beside esd: %s, expected exit 0 and a note naming %s",
                     h_status_str(st, st_buf, sizeof st_buf), pidtxt);
        }
        const char *backup_args[] = {"db", "backup", a.data_dir, a.data_dir, NULL};
        st = h_esctl(backup_args, out, 60000);
        if (exited_with(st, 0) || st < 0 || !file_has(out, pidtxt)) {
            h_dump_tail(out, 10);
            rel_fail("esctl db backup into a directory in use: %s, expected a refusal naming %s",
                     h_status_str(st, st_buf, sizeof st_buf), pidtxt);
        }
        if (life == 0) {
            /* kill -9: no stale lock may block the restart. */
            REL_CHECK(esd_stop(&a, SIGKILL, 10000, NULL, NULL) == 0, "esd did not die of SIGKILL");
            REL_CHECK(esd_start(&a, 20000) == 0, "esd did not restart after kill -9");
        }
    }
    REL_CHECK(esd_stop(&a, SIGTERM, 10000, NULL, NULL) == 0, "esd did not stop on SIGTERM");
    const char *stat_args[] = {"db", "stat", a.data_dir, NULL};
    int st = h_esctl(stat_args, out, 60000);
    REL_CHECK(exited_with(st, 0) && !file_has(out, "is running"),
              "esctl db stat after esd stopped: %s, or it still says esd is running",
              h_status_str(st, st_buf, sizeof st_buf));
    if (round == 1) {
        rel_log("ownership: second esd refused naming the owner's pid; backup into it refused; "
                "stat notes the owner; restart after kill -9 at once");
    }
    esd_destroy(&b);
    esd_destroy(&a);
}

/* ----------------------------------------------------------- full disk -- */

static void round_full_lock(uint64_t round)
{
    esd_proc e;
    char st_buf[128], out[400], full[300], p[600];
    /* A journal ring that fits the 1 MiB tmpfs once there is room again. */
    const char *esd_args[] = {"--journal-size", "64K", NULL};
    REL_CHECK(esd_init(&e, esd_args) == 0, "cannot make a temporary directory");
    snprintf(out, sizeof out, "%s/esctl.out", e.dir);
    REL_CHECK(esd_start(&e, 20000) == 0, "esd did not start");
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, NULL, NULL) == 0, "esd did not stop");
    snprintf(full, sizeof full, "%s/full", e.dir);
    REL_CHECK(mkdir(full, 0700) == 0, "mkdir %s: %s", full, strerror(errno));
    if (mount("tmpfs", full, "tmpfs", 0, "size=1m,mode=0700") != 0) {
        int err = errno;
        esd_destroy(&e);
        rel_skip("cannot mount a 1 MiB tmpfs (%s): the full-disk cases need CAP_SYS_ADMIN",
                 strerror(err));
    }
    snprintf(mounted, sizeof mounted, "%s", full);
    char from[600];
    snprintf(from, sizeof from, "%s/data.mdb", e.data_dir);
    snprintf(p, sizeof p, "%s/data.mdb", full);
    REL_CHECK(h_copy_file(from, p) == 0, "cannot copy data.mdb");
    /* esd.lock as a stopped esd leaves it: only lock.mdb is missing. */
    snprintf(from, sizeof from, "%s/esd.lock", e.data_dir);
    snprintf(p, sizeof p, "%s/esd.lock", full);
    REL_CHECK(h_copy_file(from, p) == 0, "cannot copy esd.lock");
    /* The key store of an encrypted store (the default) travels with it. */
    snprintf(from, sizeof from, "%s/keys.esk", e.data_dir);
    snprintf(p, sizeof p, "%s/keys.esk", full);
    REL_CHECK(h_copy_file(from, p) == 0, "cannot copy keys.esk");
    fill_up(full);

    /* esd */
    snprintf(e.data_dir, sizeof e.data_dir, "%s", full);
    e.quiet = true;
    REL_CHECK(esd_start(&e, 20000) != 0, "esd started on a full file system");
    if (!exited_with(e.status, 1) || !file_has(e.log_file, "lock.mdb")) {
        h_dump_tail(e.log_file, 10);
        rel_fail("esd on a full file system: %s, expected exit 1 naming lock.mdb",
                 h_status_str(e.status, st_buf, sizeof st_buf));
    }
    /* esctl db stat, db check */
    static const char *const cmds[] = {"stat", "check"};
    for (size_t i = 0; i < 2; i++) {
        const char *args[] = {"db", cmds[i], full, NULL};
        int st = h_esctl(args, out, 60000);
        if (!exited_with(st, 1) || !file_has(out, "lock.mdb")) {
            h_dump_tail(out, 10);
            rel_fail("esctl db %s on a full file system: %s, expected exit 1 naming lock.mdb",
                     cmds[i], h_status_str(st, st_buf, sizeof st_buf));
        }
    }
    /* Room again: the store opens and is sound. */
    snprintf(p, sizeof p, "%s/filler", full);
    REL_CHECK(unlink(p) == 0, "unlink filler: %s", strerror(errno));
    const char *args[] = {"db", "check", full, NULL};
    int st = h_esctl(args, out, 60000);
    if (!exited_with(st, 0)) {
        h_dump_tail(out, 10);
        rel_fail("esctl db check with room again: %s", h_status_str(st, st_buf, sizeof st_buf));
    }
    REL_CHECK(esd_start(&e, 20000) == 0, "esd did not start with room again");
    REL_CHECK(esd_stop(&e, SIGTERM, 10000, NULL, NULL) == 0, "esd did not stop");
    unmount_at_exit();
    if (round == 1) {
        rel_log("full disk: esd, esctl db stat and db check exit 1 naming lock.mdb; with room "
                "again all open the store");
    }
    esd_destroy(&e);
}

/* -------------------------------------------------------------- backups -- */

static size_t dir_entries(const char *dir, char *names, size_t cap)
{
    names[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) {
        return 0;
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            n++;
            size_t l = strlen(names);
            snprintf(names + l, cap - l, "%s ", de->d_name);
        }
    }
    closedir(d);
    return n;
}

static void round_backup(uint64_t round)
{
    esd_proc e;
    char st_buf[128], out[400], dest[400], names[512], p[600];
    REL_CHECK(esd_init(&e, NULL) == 0, "cannot make a temporary directory");
    snprintf(out, sizeof out, "%s/esctl.out", e.dir);
    REL_CHECK(esd_start(&e, 20000) == 0, "esd did not start");
    es_client *c = rel_client(e.address, 10000);
    REL_CHECK(c != NULL, "cannot connect");
    for (uint32_t i = 0; i < 400; i++) { /* ~250 KiB of events */
        rel_ev ev;
        rel_ev_make(&ev, round, i % 8, i / 8, REL_MAX_DATA);
        es_event evt;
        rel_ev_to_event(&ev, &evt);
        char stream[32];
        snprintf(stream, sizeof stream, "bk-%u", i % 8);
        es_expected ex = {ES_EXPECT_ANY, 0};
        es_append_result r;
        REL_CHECK(es_stream_append(c, stream, ex, &evt, 1, &r) == ES_OK, "append failed: %s",
                  es_client_errmsg(c));
    }
    es_client_destroy(c);

    /* An existing, empty destination; a umask that would make it 0644. */
    snprintf(dest, sizeof dest, "%s/bk", e.dir);
    REL_CHECK(mkdir(dest, 0755) == 0, "mkdir %s: %s", dest, strerror(errno));
    mode_t old = umask(022);
    const char *args[] = {"db", "backup", e.data_dir, dest, NULL};
    int st = h_esctl(args, out, 60000);
    umask(old);
    if (!exited_with(st, 0)) {
        h_dump_tail(out, 10);
        rel_fail("esctl db backup: %s", h_status_str(st, st_buf, sizeof st_buf));
    }
    snprintf(p, sizeof p, "%s/data.mdb", dest);
    struct stat sb;
    REL_CHECK(stat(p, &sb) == 0 && (sb.st_mode & 07777) == 0600,
              "backup data.mdb mode %o, expected 0600", (unsigned)(sb.st_mode & 07777));
    snprintf(p, sizeof p, "%s/keys.esk", dest);
    REL_CHECK(stat(p, &sb) == 0 && (sb.st_mode & 07777) == 0600,
              "backup keys.esk mode %o, expected 0600", (unsigned)(sb.st_mode & 07777));
    REL_CHECK(dir_entries(dest, names, sizeof names) == 2, "backup directory holds: %s", names);
    snprintf(p, sizeof p, "%s/data.mdb", dest);
    REL_CHECK(stat(p, &sb) == 0, "stat %s", p);
    off_t backup_bytes = sb.st_size;

    /* A full destination: a tmpfs with less room than the backup needs. */
    char full[300];
    snprintf(full, sizeof full, "%s/full", e.dir);
    REL_CHECK(mkdir(full, 0700) == 0, "mkdir %s: %s", full, strerror(errno));
    if (mount("tmpfs", full, "tmpfs", 0, "size=1m,mode=0700") != 0) {
        int err = errno;
        esd_end(&e, 10000);
        rel_skip("cannot mount a 1 MiB tmpfs (%s): the full-disk cases need CAP_SYS_ADMIN",
                 strerror(err));
    }
    snprintf(mounted, sizeof mounted, "%s", full);
    snprintf(dest, sizeof dest, "%s/sub", full);
    REL_CHECK(mkdir(dest, 0700) == 0, "mkdir %s: %s", dest, strerror(errno));
    fill_up(full);
    snprintf(p, sizeof p, "%s/filler", full);
    struct stat fs;
    REL_CHECK(stat(p, &fs) == 0 && fs.st_size > backup_bytes / 2, "filler too small");
    REL_CHECK(truncate(p, fs.st_size - backup_bytes / 2) == 0, "truncate: %s", strerror(errno));
    static const char *const dests[] = {"sub", "new"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(dest, sizeof dest, "%s/%s", full, dests[i]);
        const char *bargs[] = {"db", "backup", e.data_dir, dest, NULL};
        st = h_esctl(bargs, out, 60000);
        if (st < 0 || exited_with(st, 0) || !WIFEXITED(st)) {
            h_dump_tail(out, 10);
            rel_fail("esctl db backup into a full file system (%s): %s, expected a non-zero exit",
                     dests[i], h_status_str(st, st_buf, sizeof st_buf));
        }
        size_t left = dir_entries(full, names, sizeof names);
        REL_CHECK(left == 2 && strstr(names, "filler") && strstr(names, "sub"),
                  "after a failed backup into %s the file system holds: %s", dests[i], names);
        char sub[400];
        snprintf(sub, sizeof sub, "%s/sub", full);
        REL_CHECK(dir_entries(sub, names, sizeof names) == 0, "%s holds: %s", sub, names);
    }
    unmount_at_exit();
    if (round == 1) {
        rel_log("backups: data.mdb and keys.esk 0600 under umask 022, nothing else; into a full "
                "file system "
                "a non-zero exit and nothing left (backup %lld bytes, room for half)",
                (long long)backup_bytes);
    }
    REL_CHECK(esd_finish(&e, 10000) == 0, "esd did not finish cleanly");
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"rounds", NULL};
    uint64_t val[] = {1};
    rel_args(argc, argv, "test_datadir", names, val);
    atexit(unmount_at_exit);
    int64_t t0 = h_now_ms();
    for (uint64_t r = 1; r <= val[0]; r++) {
        round_owner(r);
        round_full_lock(r);
        round_backup(r);
    }
    rel_log("PASS: %" PRIu64 " rounds in %.1f s", val[0], (double)(h_now_ms() - t0) / 1000.0);
    return 0;
}

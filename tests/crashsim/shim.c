/*
 * shim.c — the crash simulator's recorder: an LD_PRELOAD library that
 * writes every change made to the files of one directory to a log
 * (log.h), for the materialiser to replay up to a chosen cut.
 *
 *   CRASHSIM_DIR=/path/to/data CRASHSIM_LOG=/path/to/log LD_PRELOAD=.../libcrashsim_shim.so esd ...
 *
 * Design notes
 * ------------
 * Interposed (found with strace on esd and LMDB): open/open64/openat/
 * openat64/creat/creat64 (new names, O_TRUNC, O_DSYNC descriptors, the
 * directory's own descriptor), close, write/writev (at the descriptor's
 * offset: LMDB writes a commit's pages with lseek + writev), pwrite/
 * pwrite64/pwritev/pwritev64 (the meta page through its O_DSYNC
 * descriptor), fsync/fdatasync/sync_file_range, ftruncate/ftruncate64,
 * rename/renameat, unlink/unlinkat. mmap and msync are not interposed
 * (dlsym itself may map memory): esd opens LMDB without MDB_WRITEMAP, so
 * nothing of data.mdb is written through a mapping; LMDB maps lock.mdb
 * writable and shared, whose contents do not matter after a power loss
 * (the first process to open the environment rebuilds them). A store that
 * wrote its data through a mapping would look to the simulator as if it
 * wrote nothing, and fail its checks.
 *
 * One mutex is held across each interposed operation on a watched file and
 * its record, so the log's order is the order in which the operations took
 * effect, and a record is in the log before the call returns (before esd
 * can send an acknowledgement that depends on it). Operations on other
 * files pass straight through. Without CRASHSIM_DIR and CRASHSIM_LOG the
 * shim does nothing. CRASHSIM_FAIL_DIRSYNC=1 makes an fsync of the
 * directory fail with EIO (the error path of esd's directory sync).
 *
 * Fault injection: CRASHSIM_FAULTS names a file (outside the watched
 * directory; CRASHSIM_LOG is then optional) that a test writes to arm ONE
 * fault, as one line
 *
 *   OP FILE ERRNO THREAD MINOFF [MAXOFF]   e.g.  "sync journal EIO esd-writer 0"
 *
 * OP is `sync` (fsync, fdatasync) or `write` (write, writev, pwrite,
 * pwritev at an offset >= MINOFF, and < MAXOFF when given); FILE a name in the watched directory;
 * ERRNO `EIO`, `ENOSPC` or `EDQUOT`; THREAD the name (prctl PR_SET_NAME)
 * of the calling thread, or `*` for any. The first matching operation
 * fails with that errno without touching the file (a failed sync syncs
 * nothing, a failed write writes nothing) and the shim removes the fault
 * file, which tells the test the fault fired. The file is read before every
 * operation on a watched file while it exists: for tests, not benchmarks.
 */
/* The plain and the 64-bit names are interposed separately (glibc would
 * otherwise redirect one to the other); off_t is 64 bits on LP64 anyway. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

#define MAX_FD 4096

typedef struct fd_info {
    bool file;  /* a regular file directly in the watched directory */
    bool dir;   /* the watched directory itself */
    bool dsync; /* O_SYNC or O_DSYNC */
    uint64_t ino;
    char name[64]; /* its name in the directory (fault matching; renames followed) */
} fd_info;

static pthread_mutex_t cs_lock = PTHREAD_MUTEX_INITIALIZER;
static fd_info fds[MAX_FD];
static char watch[PATH_MAX];
static int log_fd = -1;
static bool fail_dirsync;     /* CRASHSIM_FAIL_DIRSYNC=1: fsync of the directory fails (EIO) */
static char faults[PATH_MAX]; /* CRASHSIM_FAULTS: the fault file ("" when none) */

#define REAL(name) real_##name
#define DECL_REAL(ret, name, ...)                                                                  \
    static ret (*real_##name)(__VA_ARGS__);                                                        \
    static ret (*get_##name(void))(__VA_ARGS__)                                                    \
    {                                                                                              \
        if (!real_##name) {                                                                        \
            real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name);                            \
        }                                                                                          \
        return real_##name;                                                                        \
    }

DECL_REAL(int, open, const char *, int, ...)
DECL_REAL(int, openat, int, const char *, int, ...)
DECL_REAL(int, close, int)
DECL_REAL(ssize_t, write, int, const void *, size_t)
DECL_REAL(ssize_t, writev, int, const struct iovec *, int)
DECL_REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
DECL_REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
DECL_REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t)
DECL_REAL(ssize_t, pwritev64, int, const struct iovec *, int, off_t)
DECL_REAL(int, fsync, int)
DECL_REAL(int, fdatasync, int)
DECL_REAL(int, sync_file_range, int, off_t, off_t, unsigned int)
DECL_REAL(int, ftruncate, int, off_t)
DECL_REAL(int, ftruncate64, int, off_t)
DECL_REAL(int, rename, const char *, const char *)
DECL_REAL(int, renameat, int, const char *, int, const char *)
DECL_REAL(int, unlink, const char *)
DECL_REAL(int, unlinkat, int, const char *, int)

__attribute__((constructor)) static void cs_init(void)
{
    const char *d = getenv("CRASHSIM_DIR");
    const char *l = getenv("CRASHSIM_LOG");
    const char *flt = getenv("CRASHSIM_FAULTS");
    if (!d || (!l && !flt) || !realpath(d, watch)) {
        watch[0] = '\0';
        return;
    }
    const char *f = getenv("CRASHSIM_FAIL_DIRSYNC");
    fail_dirsync = f && !strcmp(f, "1");
    if (flt) {
        snprintf(faults, sizeof faults, "%s", flt);
    }
    if (!l) {
        return;
    }
    log_fd = get_open()(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        fprintf(stderr, "crashsim: cannot open %s: %s\n", l, strerror(errno));
        abort();
    }
}

static void cs_record(uint32_t type, uint64_t ino, uint64_t a, uint64_t b, const void *p1,
                      size_t n1, const void *p2, size_t n2)
{
    if (log_fd < 0) {
        return; /* faults only */
    }
    cs_hdr h = {type, (uint32_t)(n1 + n2), ino, a, b};
    struct iovec iov[3] = {{&h, sizeof h}, {(void *)p1, n1}, {(void *)p2, n2}};
    size_t want = sizeof h + n1 + n2;
    ssize_t n = get_writev()(log_fd, iov, 3);
    if (n < 0 || (size_t)n != want) {
        fprintf(stderr, "crashsim: log write failed\n");
        abort();
    }
}

/*
 * Where does (dirfd, path) point? 1: a name directly in the watched
 * directory (its last component in *name); 2: the directory itself; 0:
 * elsewhere.
 */
static int cs_classify(int dirfd, const char *path, const char **name)
{
    if (!watch[0] || !path) {
        return 0;
    }
    char full[PATH_MAX * 2];
    if (path[0] == '/') {
        snprintf(full, sizeof full, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) {
                return 0;
            }
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n < 0) {
                return 0;
            }
            base[n] = '\0';
        }
        snprintf(full, sizeof full, "%s/%s", base, path);
    }
    char resolved[PATH_MAX];
    if (realpath(full, resolved) && !strcmp(resolved, watch)) {
        return 2;
    }
    const char *slash = strrchr(path, '/');
    const char *last = slash ? slash + 1 : path;
    char *fslash = strrchr(full, '/');
    if (!*last || !strcmp(last, ".") || !strcmp(last, "..")) {
        return 0;
    }
    *fslash = '\0';
    if (!realpath(full[0] ? full : "/", resolved) || strcmp(resolved, watch)) {
        return 0;
    }
    *name = last;
    return 1;
}

static int cs_open(int dirfd, const char *path, int flags, mode_t mode, bool at)
{
    const char *name = NULL;
    int kind = cs_classify(dirfd, path, &name);
    if (kind == 0) {
        return at ? get_openat()(dirfd, path, flags, mode) : get_open()(path, flags, mode);
    }
    pthread_mutex_lock(&cs_lock);
    struct stat before;
    bool existed = fstatat(dirfd, path, &before, 0) == 0;
    int fd = at ? get_openat()(dirfd, path, flags, mode) : get_open()(path, flags, mode);
    int saved = errno;
    struct stat st;
    if (fd >= 0 && fd < MAX_FD && fstat(fd, &st) == 0) {
        fd_info *f = &fds[fd];
        memset(f, 0, sizeof *f);
        if (kind == 2 && S_ISDIR(st.st_mode)) {
            f->dir = true;
        } else if (kind == 1 && S_ISREG(st.st_mode)) {
            f->file = true;
            f->ino = (uint64_t)st.st_ino;
            f->dsync = (flags & (O_SYNC | O_DSYNC)) != 0;
            snprintf(f->name, sizeof f->name, "%s", name);
            if (!existed) {
                cs_record(CS_CREATE, f->ino, 0, 0, name, strlen(name), NULL, 0);
            } else if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY) {
                cs_record(CS_TRUNC, f->ino, 0, 0, NULL, 0, NULL, 0);
            }
        }
    }
    pthread_mutex_unlock(&cs_lock);
    errno = saved;
    return fd;
}

static mode_t cs_mode(int flags, va_list ap)
{
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = cs_mode(flags, ap);
    va_end(ap);
    return cs_open(AT_FDCWD, path, flags, m, false);
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = cs_mode(flags, ap);
    va_end(ap);
    return cs_open(AT_FDCWD, path, flags, m, false);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = cs_mode(flags, ap);
    va_end(ap);
    return cs_open(dirfd, path, flags, m, true);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = cs_mode(flags, ap);
    va_end(ap);
    return cs_open(dirfd, path, flags, m, true);
}

int creat(const char *path, mode_t mode)
{
    return cs_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, false);
}

int creat64(const char *path, mode_t mode)
{
    return cs_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, false);
}

static bool watched(int fd)
{
    return fd >= 0 && fd < MAX_FD && (fds[fd].file || fds[fd].dir);
}

int close(int fd)
{
    if (!watched(fd)) {
        return get_close()(fd);
    }
    pthread_mutex_lock(&cs_lock);
    memset(&fds[fd], 0, sizeof fds[fd]);
    int rc = get_close()(fd);
    pthread_mutex_unlock(&cs_lock);
    return rc;
}

/*
 * The errno to fail this operation with (0: none), from the armed fault
 * (design notes); the lock held. op: "sync" or "write"; off: a write's
 * offset.
 */
static int cs_fault(int fd, const char *op, uint64_t off)
{
    if (!faults[0]) {
        return 0;
    }
    int ffd = get_open()(faults, O_RDONLY | O_CLOEXEC);
    if (ffd < 0) {
        return 0; /* not armed */
    }
    char line[256];
    ssize_t n = read(ffd, line, sizeof line - 1);
    get_close()(ffd);
    if (n <= 0) {
        return 0;
    }
    line[n] = '\0';
    char w_op[16], w_file[64], w_err[16], w_thread[32];
    unsigned long long minoff, maxoff = ~0ull;
    int got = sscanf(line, "%15s %63s %15s %31s %llu %llu", w_op, w_file, w_err, w_thread, &minoff,
                     &maxoff);
    if (got != 5 && got != 6) {
        fprintf(stderr, "crashsim: bad fault line in %s: %s\n", faults, line);
        abort();
    }
    char me[32] = "";
    prctl(PR_GET_NAME, me, 0, 0, 0);
    if (strcmp(w_op, op) || strcmp(w_file, fds[fd].name) || off < minoff || off >= maxoff ||
        (strcmp(w_thread, "*") && strcmp(w_thread, me))) {
        return 0;
    }
    int e = !strcmp(w_err, "ENOSPC") ? ENOSPC : !strcmp(w_err, "EDQUOT") ? EDQUOT : EIO;
    get_unlink()(faults); /* fired: the test sees the file gone */
    return e;
}

/* Record n bytes of iov written at off (the lock held). */
static void cs_record_write(int fd, const struct iovec *iov, int cnt, size_t n, off_t off)
{
    if (n == 0) {
        return;
    }
    uint8_t *buf = malloc(n);
    if (!buf) {
        fprintf(stderr, "crashsim: out of memory\n");
        abort();
    }
    size_t got = 0;
    for (int i = 0; i < cnt && got < n; i++) {
        size_t k = iov[i].iov_len < n - got ? iov[i].iov_len : n - got;
        memcpy(buf + got, iov[i].iov_base, k);
        got += k;
    }
    cs_record(CS_WRITE, fds[fd].ino, (uint64_t)off, fds[fd].dsync, buf, n, NULL, 0);
    free(buf);
}

static ssize_t cs_writev_at(int fd, const struct iovec *iov, int cnt, off_t off, bool positioned)
{
    pthread_mutex_lock(&cs_lock);
    off_t at = positioned ? off : lseek(fd, 0, SEEK_CUR);
    int fault = cs_fault(fd, "write", at < 0 ? 0 : (uint64_t)at);
    if (fault) {
        pthread_mutex_unlock(&cs_lock);
        errno = fault;
        return -1;
    }
    ssize_t n = positioned ? get_pwritev()(fd, iov, cnt, off) : get_writev()(fd, iov, cnt);
    int saved = errno;
    if (n > 0 && at >= 0) {
        cs_record_write(fd, iov, cnt, (size_t)n, at);
    }
    pthread_mutex_unlock(&cs_lock);
    errno = saved;
    return n;
}

ssize_t write(int fd, const void *buf, size_t len)
{
    if (!watched(fd) || !fds[fd].file) {
        return get_write()(fd, buf, len);
    }
    struct iovec v = {(void *)buf, len};
    return cs_writev_at(fd, &v, 1, 0, false);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (!watched(fd) || !fds[fd].file) {
        return get_writev()(fd, iov, cnt);
    }
    return cs_writev_at(fd, iov, cnt, 0, false);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (!watched(fd) || !fds[fd].file) {
        return get_pwrite()(fd, buf, len, off);
    }
    struct iovec v = {(void *)buf, len};
    return cs_writev_at(fd, &v, 1, off, true);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    if (!watched(fd) || !fds[fd].file) {
        return get_pwrite64()(fd, buf, len, off);
    }
    struct iovec v = {(void *)buf, len};
    return cs_writev_at(fd, &v, 1, off, true);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (!watched(fd) || !fds[fd].file) {
        return get_pwritev()(fd, iov, cnt, off);
    }
    return cs_writev_at(fd, iov, cnt, off, true);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (!watched(fd) || !fds[fd].file) {
        return get_pwritev64()(fd, iov, cnt, off);
    }
    return cs_writev_at(fd, iov, cnt, off, true);
}

static int cs_sync(int fd, int (*fn)(int))
{
    if (!watched(fd)) {
        return fn(fd);
    }
    if (fds[fd].dir && fail_dirsync) {
        errno = EIO;
        return -1;
    }
    pthread_mutex_lock(&cs_lock);
    int fault = fds[fd].file ? cs_fault(fd, "sync", 0) : 0;
    if (fault) {
        pthread_mutex_unlock(&cs_lock);
        errno = fault;
        return -1;
    }
    int rc = fn(fd);
    int saved = errno;
    if (rc == 0) {
        if (fds[fd].dir) {
            cs_record(CS_DIRSYNC, 0, 0, 0, NULL, 0, NULL, 0);
        } else {
            cs_record(CS_SYNC, fds[fd].ino, 0, 0, NULL, 0, NULL, 0);
        }
    }
    pthread_mutex_unlock(&cs_lock);
    errno = saved;
    return rc;
}

int fsync(int fd)
{
    return cs_sync(fd, get_fsync());
}

int fdatasync(int fd)
{
    return cs_sync(fd, get_fdatasync());
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    /* Not a durability point (no metadata, no device cache flush): passed
     * through and not recorded, so a store relying on it fails the test. */
    return get_sync_file_range()(fd, off, n, flags);
}

static int cs_truncate(int fd, off_t len, int (*fn)(int, off_t))
{
    if (!watched(fd) || !fds[fd].file) {
        return fn(fd, len);
    }
    pthread_mutex_lock(&cs_lock);
    int rc = fn(fd, len);
    int saved = errno;
    if (rc == 0) {
        cs_record(CS_TRUNC, fds[fd].ino, (uint64_t)len, 0, NULL, 0, NULL, 0);
    }
    pthread_mutex_unlock(&cs_lock);
    errno = saved;
    return rc;
}

int ftruncate(int fd, off_t len)
{
    return cs_truncate(fd, len, get_ftruncate());
}

int ftruncate64(int fd, off_t len)
{
    return cs_truncate(fd, len, get_ftruncate64());
}

static int cs_rename(int ofd, const char *from, int nfd, const char *to, bool at)
{
    const char *fname = NULL, *tname = NULL;
    int k1 = cs_classify(ofd, from, &fname);
    int k2 = cs_classify(nfd, to, &tname);
    if (k1 != 1 && k2 != 1) {
        return at ? get_renameat()(ofd, from, nfd, to) : get_rename()(from, to);
    }
    pthread_mutex_lock(&cs_lock);
    int rc = at ? get_renameat()(ofd, from, nfd, to) : get_rename()(from, to);
    int saved = errno;
    if (rc == 0) {
        if (k1 == 1 && k2 == 1) {
            cs_record(CS_RENAME, 0, 0, 0, fname, strlen(fname) + 1, tname, strlen(tname));
            for (int i = 0; i < MAX_FD; i++) { /* open descriptors go by the new name */
                if (fds[i].file && !strcmp(fds[i].name, fname)) {
                    snprintf(fds[i].name, sizeof fds[i].name, "%s", tname);
                }
            }
        } else if (k1 == 1) {
            cs_record(CS_UNLINK, 0, 0, 0, fname, strlen(fname), NULL, 0);
        } else {
            /* A file moved in from elsewhere: not modelled (its contents
             * were never recorded); the materialiser refuses the log. */
            cs_record(CS_CREATE, 0, 0, 0, tname, strlen(tname), NULL, 0);
        }
    }
    pthread_mutex_unlock(&cs_lock);
    errno = saved;
    return rc;
}

int rename(const char *from, const char *to)
{
    return cs_rename(AT_FDCWD, from, AT_FDCWD, to, false);
}

int renameat(int ofd, const char *from, int nfd, const char *to)
{
    return cs_rename(ofd, from, nfd, to, true);
}

static int cs_unlink(int dirfd, const char *path, int flags, bool at)
{
    const char *name = NULL;
    if (cs_classify(dirfd, path, &name) != 1) {
        return at ? get_unlinkat()(dirfd, path, flags) : get_unlink()(path);
    }
    pthread_mutex_lock(&cs_lock);
    int rc = at ? get_unlinkat()(dirfd, path, flags) : get_unlink()(path);
    int saved = errno;
    if (rc == 0) {
        cs_record(CS_UNLINK, 0, 0, 0, name, strlen(name), NULL, 0);
    }
    pthread_mutex_unlock(&cs_lock);
    errno = saved;
    return rc;
}

int unlink(const char *path)
{
    return cs_unlink(AT_FDCWD, path, 0, false);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    return cs_unlink(dirfd, path, flags, true);
}

#include "regfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m)) {
        return "a directory";
    }
    if (S_ISFIFO(m)) {
        return "a FIFO";
    }
    if (S_ISCHR(m)) {
        return "a character device";
    }
    if (S_ISBLK(m)) {
        return "a block device";
    }
    if (S_ISSOCK(m)) {
        return "a socket";
    }
    return "not a regular file";
}

es_err regfile_open(const char *path, const char *what, int *fd, char *msg, size_t msg_len)
{
    *fd = -1;
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (f < 0) {
        snprintf(msg, msg_len, "cannot open %s %s: %s", what, path, strerror(errno));
        return ES_ERR_IO;
    }
    struct stat st;
    if (fstat(f, &st) != 0) {
        snprintf(msg, msg_len, "cannot stat %s %s: %s", what, path, strerror(errno));
        close(f);
        return ES_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, msg_len, "%s %s is %s: give a regular file", what, path, kind_of(st.st_mode));
        close(f);
        return ES_ERR_INVALID_ARGUMENT;
    }
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        snprintf(msg, msg_len, "cannot read %s %s: %s", what, path, strerror(errno));
        close(f);
        return ES_ERR_IO;
    }
    *fd = f;
    return ES_OK;
}

es_err regfile_check(const char *path, const char *what, char *msg, size_t msg_len)
{
    int fd;
    es_err rv = regfile_open(path, what, &fd, msg, msg_len);
    if (rv == ES_OK) {
        close(fd);
    }
    return rv;
}

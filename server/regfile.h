/*
 * regfile — open a file that esd reads at start (the --config file, the
 * --auth-file, the TLS certificate and key) and insist that it is a
 * regular file.
 *
 * Design notes
 * ------------
 * A FIFO, a directory or a device given by mistake must be refused with a
 * message, not read: open(2) of a FIFO without a writer blocks for ever,
 * a character device can produce endless bytes, a directory fails later
 * with an obscure error. The file is therefore opened with O_NONBLOCK
 * (which makes open of a FIFO return at once and has no effect on a
 * regular file), checked with fstat(2) on that same descriptor — so what
 * was checked is what is read: no window between a stat and an open — and
 * only then switched back to blocking reads.
 *
 * Callers that hand a path to a library instead of a descriptor (OpenSSL
 * opens the certificate and key by name) check the path with
 * regfile_check first; a file swapped for a FIFO between the check and
 * the library's open needs write access to its directory, i.e. to esd's
 * configuration, which is no attack, and the check exists for mistakes.
 */
#ifndef ES_REGFILE_H
#define ES_REGFILE_H

#include <stddef.h>

#include "es/err.h"

/**
 * @brief Open a regular file for reading.
 * @param path the file
 * @param what what it is, for the message ("the auth file")
 * @param[out] fd the descriptor (blocking, close-on-exec); the caller closes it
 * @param[out] msg why it was refused
 * @return ES_OK; ES_ERR_IO (cannot open or stat it: msg has errno's text);
 *   ES_ERR_INVALID_ARGUMENT (not a regular file: msg says what it is).
 */
es_err regfile_open(const char *path, const char *what, int *fd, char *msg, size_t msg_len);

/**
 * @brief Check that a path names a regular file that can be opened for
 *        reading (regfile_open, then close).
 * @return as regfile_open.
 */
es_err regfile_check(const char *path, const char *what, char *msg, size_t msg_len);

#endif

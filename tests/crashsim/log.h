/*
 * log.h — the crash simulator's record log: what the shim (shim.c) writes
 * and the materialiser (materialise.c) reads.
 *
 * Design notes
 * ------------
 * One record per operation on a file of the watched directory, appended
 * (O_APPEND, one write() per record) after the operation returned
 * successfully, in the order the operations happened (the shim holds one
 * lock across the operation and its record). A record is a fixed header
 * followed by `len` payload bytes:
 *
 *   u32 type | u32 len | u64 ino | u64 a | u64 b | payload
 *
 *   CREATE  a new name in the directory for inode ino; payload = the name
 *   WRITE   bytes written to ino at offset a; b = 1 when the descriptor was
 *           O_SYNC/O_DSYNC (durable on return); payload = the bytes
 *   SYNC    fsync/fdatasync (or sync_file_range/msync) of ino
 *   TRUNC   ftruncate of ino to size a
 *   RENAME  payload = "from\0to"
 *   UNLINK  payload = the name
 *   DIRSYNC fsync/fdatasync of the directory itself
 *
 * Only the names directly in the watched directory are followed; the
 * directory's own entry in its parent is outside the model (the tests
 * create it beforehand). Integers are in host order: the log is read on the
 * machine that wrote it.
 */
#ifndef ES_CRASHSIM_LOG_H
#define ES_CRASHSIM_LOG_H

#include <stdint.h>

enum {
    CS_CREATE = 1,
    CS_WRITE = 2,
    CS_SYNC = 3,
    CS_TRUNC = 4,
    CS_RENAME = 5,
    CS_UNLINK = 6,
    CS_DIRSYNC = 7,
};

typedef struct cs_hdr {
    uint32_t type;
    uint32_t len;
    uint64_t ino;
    uint64_t a;
    uint64_t b;
} cs_hdr;

#endif

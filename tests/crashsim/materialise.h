/*
 * materialise.h — the crash simulator's replay: from a log written by the
 * shim (log.h) and a cut point, the files a power loss at that cut could
 * leave in the directory.
 *
 * Design notes
 * ------------
 * A cut is a record count: the crash happens after the first `cut` records
 * took effect and before the next one. The replay keeps, per inode, the
 * content the file system has promised (durable) and the writes since
 * (pending), and for the directory the durable entries and the entry
 * operations since (create, rename, unlink). At the cut a crash state is
 * drawn from a seed:
 *
 *   data     every file starts from its durable content; each 4 KiB page
 *            touched by pending writes takes one of the states it passed
 *            through since (none, some or all of the writes to it, in the
 *            order they were made: a page reaches the disk as a whole, from
 *            the page cache, at any moment), each page drawn on its own, so
 *            pages of one write may survive without their neighbours (torn
 *            writes) and later writes without earlier ones (reordering).
 *            The size grows to the end of the last surviving write.
 *   entries  the durable entries plus a prefix of the pending entry
 *            operations (the file system applies them in order).
 *
 * One draw in four keeps nothing pending, one in four everything, the rest
 * choose per page and per prefix, so both ends are tried often.
 *
 * What is durable follows one of two rule sets:
 *
 *   POSIX  fsync/fdatasync of a file (or a write through an O_SYNC/O_DSYNC
 *          descriptor, for its own bytes) makes the file's data and size
 *          durable, never its name: a new, renamed or removed name is
 *          durable only after an fsync of the directory.
 *   EXT4   ext4 with its journal (data=ordered, the default): in addition,
 *          all metadata goes through one ordered journal, and any fsync or
 *          fdatasync (or O_DSYNC write) commits it, so every entry
 *          operation and size change made before any sync is durable
 *          after it. Data is not: the pending writes of the other files
 *          stay pending.
 */
#ifndef ES_CRASHSIM_MATERIALISE_H
#define ES_CRASHSIM_MATERIALISE_H

#include <stddef.h>
#include <stdint.h>

typedef enum cs_rules { CS_RULES_EXT4 = 0, CS_RULES_POSIX = 1 } cs_rules;

typedef struct cs_log {
    uint8_t *buf;
    size_t len;
    size_t *off; /* start of each record */
    size_t n;    /* complete records */
} cs_log;

/** What one crash state kept. */
typedef struct cs_state_stats {
    uint64_t pending_pages; /* (page, write) pieces not yet durable at the cut */
    uint64_t kept_pages;    /* of which the state kept */
    uint64_t pending_ops;   /* entry operations not yet durable */
    uint64_t kept_ops;
} cs_state_stats;

/** @brief Read a whole log. @return 0; -1 (err says why). */
int cs_log_load(cs_log *log, const char *path, char *err, size_t err_len);
void cs_log_free(cs_log *log);

/** @brief The number of complete records in the first `bytes` bytes of the log. */
size_t cs_log_records_in(const cs_log *log, uint64_t bytes);

/**
 * @brief Write the files of one crash state at `cut` into dir (which must
 *        exist and be empty).
 * @return 0; -1 (a log the model does not cover, or an I/O error: err says why).
 */
int cs_materialise(const cs_log *log, size_t cut, cs_rules rules, uint64_t seed, const char *dir,
                   cs_state_stats *stats, char *err, size_t err_len);

#endif

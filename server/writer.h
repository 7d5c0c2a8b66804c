/*
 * writer — the single writer thread and its group commit.
 *
 * Design notes: the loop thread submits jobs (appends, transactions,
 * snapshot saves); the writer thread takes every job queued at that moment,
 * runs all appends of them through ONE store_append_batch (one LMDB write
 * transaction, one fsync), and hands the finished jobs back through a
 * completion list, waking the loop thread by writing to an eventfd. The
 * writer never touches a connection or libevent: a job carries only its own
 * data, and the loop thread decides what to do with the result (the
 * connection may be gone by then). Whatever arrives during a commit goes
 * into the next one: natural batching, no timers.
 *
 * Consumer-group jobs of a batch are applied BEFORE its appends, and
 * handed back at once (except with nometasync, whose replies wait for a
 * sync): an ack is answered without waiting for the appends' journal
 * write and fdatasync. With the journal a batch of group changes is an
 * entry written without an fdatasync of its own (server/store/groups.c):
 * it is answered synced = false, and the appends' entry that follows it
 * in the same file is fdatasynced right after, which makes the group
 * entry durable too. A kill -9 loses none of it (written and committed
 * before the hand-back). The group changes do not depend on the appends
 * of the same batch (acks name events committed earlier), so either
 * order is a valid one.
 *
 * The scavenger (writer_scavenge_set; server/store/scavenge.c) is the one
 * other thing the writer thread does: one slice, in its own transaction,
 * after a batch's completions are handed back, while there is work left
 * (at most a ninth of the thread's time while appends are queued), and on
 * a timer when idle (the max-age timer: a timed wait on the condition
 * variable, CLOCK_MONOTONIC).
 *
 * Figures (writer_get_stats): counters and two histograms — requests per
 * commit and the duration of each group commit — kept with relaxed
 * atomics by the writer thread (histogram.h) and read by the loop thread
 * for the Prometheus page (metrics.c).
 *
 * Ownership: writer_submit takes the job only when it returns ES_OK; the
 * loop thread gets it back from writer_take_completed and frees it.
 */
#ifndef ES_WRITER_H
#define ES_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"
#include "store.h"

typedef enum write_job_kind {
    WRITE_JOB_APPEND = 0, /* one store_request: append or transaction */
    WRITE_JOB_SNAPSHOT,
    WRITE_JOB_LIFE,  /* delete, tombstone, stream metadata: store_life_apply */
    WRITE_JOB_ERASE, /* erase a stream or a subject: store_erase */
    WRITE_JOB_GROUP, /* consumer-group changes: store_group_apply (groups.c owns the job) */
} write_job_kind;

typedef struct write_job {
    struct write_job *next;
    write_job_kind kind;
    store_request req; /* WRITE_JOB_APPEND: appends/results owned by the submitter */
    struct {
        const uint8_t *stream;
        size_t stream_len;
        uint64_t revision;
        uint32_t state_format;
        const uint8_t *data;
        size_t data_len;
        es_err rv;
    } snapshot;         /* WRITE_JOB_SNAPSHOT */
    store_life_op life; /* WRITE_JOB_LIFE: pointers borrowed from the submitter */
    es_err life_rv;
    store_erase_op erase; /* WRITE_JOB_ERASE: pointers borrowed from the submitter */
    es_err erase_rv;
    struct {
        store_group_op *ops; /* owned by the submitter */
        size_t n;
        es_err rv;
        bool synced;
    } group;     /* WRITE_JOB_GROUP */
    void *owner; /* opaque to the writer */
    /* When set, the loop thread hands the finished job to this instead of
     * handler_complete (the web console's changes: web/web.c). */
    void (*complete)(struct write_job *job);
} write_job;

typedef struct writer writer;

typedef struct writer_stats {
    uint64_t commits;
    uint64_t requests;
    uint32_t max_batch;
    hist batch;     /* requests per commit (hist_batch) */
    hist commit_us; /* duration of store_append_batch (hist_latency_us) */
    hist sync_us;   /* of which LMDB's commit call: page writes + fsyncs */
    /* The scavenger (store_scavenge_slice, run by the writer thread). */
    uint64_t scavenge_slices;
    uint64_t events_removed;
    uint64_t bytes_reclaimed;
    uint64_t scavenge_lag_us; /* how long there has been work left (0: none) */
    uint64_t scavenge_errors;
} writer_stats;

/**
 * @brief Run the scavenger in the writer thread: one slice of `slice` steps
 *        after each group commit while there is work left, and one every
 *        `interval_ms` when idle (the max-age timer). slice 0: off (the
 *        default). Any thread, any time.
 */
void writer_scavenge_set(writer *w, uint32_t slice, uint32_t interval_ms);

/**
 * @brief Start the writer thread.
 * @param max_batch the most requests in one commit (0 = 1024)
 * @return ES_OK; ES_ERR_NO_MEMORY; ES_ERR_INTERNAL (thread or eventfd).
 */
es_err writer_start(store *st, uint32_t max_batch, writer **out);

/** @brief The eventfd the loop thread watches for completions. */
int writer_fd(const writer *w);

/**
 * @brief Queue a job. Ownership passes to the writer only on ES_OK.
 * @return ES_OK; ES_ERR_SHUTTING_DOWN after writer_stop began.
 */
es_err writer_submit(writer *w, write_job *job);

/**
 * @brief Take every completed job, in completion order (a list through
 *        ->next); clears the eventfd. Loop thread only.
 */
write_job *writer_take_completed(writer *w);

/** @brief Jobs submitted and not yet taken back. */
size_t writer_pending(writer *w);

void writer_get_stats(writer *w, writer_stats *out);

/**
 * @brief Finish every queued job, stop the thread, and free the writer.
 *        Completed jobs not yet taken are returned through *leftover (may
 *        be NULL to free nothing: the caller must then have taken them).
 */
void writer_stop(writer *w, write_job **leftover);

#endif

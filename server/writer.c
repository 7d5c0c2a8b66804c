#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct writer {
    store *st;
    uint32_t max_batch;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    write_job *queue_head, *queue_tail;
    write_job *done_head, *done_tail;
    write_job *held_head, *held_tail; /* writer thread: replies waiting for a sync */
    size_t pending;                   /* submitted, not yet taken back */
    bool stopping;
    int efd;
    store_request *reqs; /* scratch for one batch, max_batch entries */
    write_job **batch;
    _Atomic uint64_t commits, requests;
    _Atomic uint32_t max_seen;
    ahist batch_hist, commit_hist, sync_hist;
    /* The scavenger's hook (store_scavenge_slice). */
    _Atomic uint32_t scav_slice, scav_interval_ms;
    bool scav_more;         /* writer thread: the last slice stopped on its budget */
    uint64_t scav_due;      /* writer thread: monotonic us of the next idle slice */
    uint64_t scav_busy;     /* writer thread: since when there is work left (0: none) */
    uint64_t scav_share_at; /* writer thread: no slice under load before this */
    uint64_t last_batch_us; /* writer thread: when the last batch was handed back */
    _Atomic uint64_t scav_slices, scav_removed, scav_bytes, scav_lag_us, scav_errors;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* While appends come (a batch in the last WRITER_QUIET_US), a slice may run
 * only after WRITER_SCAVENGE_SHARE times the last one's duration has
 * passed: the scavenger takes at most a 1/(1 + share) part of the writer
 * thread's time, and a commit waits for at most one slice. This holds also
 * when the queue is empty for a moment between a commit and the clients'
 * next appends (a closed loop of clients empties it after every commit). A
 * writer without appends for WRITER_QUIET_US runs slices back to back. */
#define WRITER_SCAVENGE_SHARE 8u
#define WRITER_QUIET_US       50000u

/* When the next slice may run (monotonic us); UINT64_MAX: never (off). */
static uint64_t scav_next_at(const writer *w, uint64_t now)
{
    if (atomic_load(&w->scav_slice) == 0) {
        return UINT64_MAX;
    }
    uint64_t at = w->scav_more ? now : w->scav_due;
    if (now - w->last_batch_us < WRITER_QUIET_US && at < w->scav_share_at) {
        at = w->scav_share_at;
    }
    return at;
}

/* One scavenger slice when one is due. */
static void writer_scavenge(writer *w)
{
    uint32_t slice = atomic_load(&w->scav_slice);
    uint64_t now = mono_us();
    if (scav_next_at(w, now) > now) {
        return;
    }
    store_scavenge_result r;
    es_err srv = store_scavenge_slice(w->st, slice, &r);
    uint64_t end = mono_us();
    w->scav_share_at = end + WRITER_SCAVENGE_SHARE * (end - now);
    if (srv != ES_OK) {
        atomic_fetch_add(&w->scav_errors, 1);
        r.more = false; /* try again at the next tick */
    }
    atomic_fetch_add(&w->scav_slices, 1);
    atomic_fetch_add(&w->scav_removed, r.events_removed);
    atomic_fetch_add(&w->scav_bytes, r.bytes_reclaimed);
    w->scav_more = r.more;
    if (r.more && !w->scav_busy) {
        w->scav_busy = now;
    } else if (!r.more) {
        w->scav_busy = 0;
        w->scav_due = now + (uint64_t)atomic_load(&w->scav_interval_ms) * 1000u;
    }
    atomic_store(&w->scav_lag_us, w->scav_busy ? end - w->scav_busy : 0);
}

/* Wait for jobs; with the scavenger on, wake for its slices too. */
static void writer_wait(writer *w)
{
    while (!w->queue_head && !w->stopping) {
        uint64_t now = mono_us();
        uint64_t at = scav_next_at(w, now);
        if (at == UINT64_MAX) {
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        if (at <= now) {
            pthread_mutex_unlock(&w->mu);
            writer_scavenge(w);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t deadline =
            (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u + (at - now);
        ts.tv_sec = (time_t)(deadline / 1000000u);
        ts.tv_nsec = (long)(deadline % 1000000u) * 1000;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
}

void writer_scavenge_set(writer *w, uint32_t slice, uint32_t interval_ms)
{
    atomic_store(&w->scav_interval_ms, interval_ms ? interval_ms : 1000);
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->scav_slice, slice);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Hand finished jobs first..last (linked) back to the loop thread. */
static void writer_hand_back(writer *w, write_job *first, write_job *last)
{
    pthread_mutex_lock(&w->mu);
    if (w->done_tail) {
        w->done_tail->next = first;
    } else {
        w->done_head = first;
    }
    w->done_tail = last;
    pthread_mutex_unlock(&w->mu);
    uint64_t one = 1;
    ssize_t wr = write(w->efd, &one, sizeof one);
    (void)wr; /* an eventfd write only fails at a count near 2^64 */
}

/*
 * The batch's group jobs, applied, handed back before its appends are
 * written and synced (writer.h): they are taken out of w->batch[0..*n)
 * and of the list *first..*last, which keep the other jobs in order.
 */
static void hand_back_groups(writer *w, size_t *n, write_job **first, write_job **last)
{
    write_job *g_first = NULL, *g_last = NULL, *r_first = NULL, *r_last = NULL;
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        write_job *j = w->batch[i];
        j->next = NULL;
        if (j->kind == WRITE_JOB_GROUP) {
            if (g_last) {
                g_last->next = j;
            } else {
                g_first = j;
            }
            g_last = j;
            continue;
        }
        if (r_last) {
            r_last->next = j;
        } else {
            r_first = j;
        }
        r_last = j;
        w->batch[kept++] = j;
    }
    *n = kept;
    *first = r_first;
    *last = r_last;
    if (g_first) {
        writer_hand_back(w, g_first, g_last); /* the loop thread owns them from here */
    }
}

/*
 * --sync-method nometasync: a commit syncs its data pages (and with them
 * the previous commit's meta page) but not its own meta page. A batch's
 * replies are held until a later commit that wrote something has synced,
 * or, when no request is waiting, until store_flush. On return *first..*last
 * is what may be answered now (NULL: nothing).
 */
static void hold_replies(writer *w, write_job **first, write_job **last, size_t nreq)
{
    bool wrote = false;
    for (size_t i = 0; i < nreq; i++) {
        if (w->reqs[i].rv == ES_OK) {
            for (size_t k = 0; k < w->reqs[i].n_appends; k++) {
                wrote |= !w->reqs[i].results[k].duplicate;
            }
        }
    }
    pthread_mutex_lock(&w->mu);
    bool idle = w->queue_head == NULL;
    pthread_mutex_unlock(&w->mu);
    write_job *rel_head = w->held_head, *rel_tail = w->held_tail;
    w->held_head = w->held_tail = NULL;
    if (idle || !wrote) {
        es_err rv = store_flush(w->st); /* this batch's meta too */
        for (write_job *j = *first; j; j = j->next) {
            if (rv != ES_OK && j->kind == WRITE_JOB_APPEND) {
                j->req.synced = false;
            }
        }
        if (rel_tail) {
            rel_tail->next = *first;
            *first = rel_head;
        }
        return;
    }
    w->held_head = *first;
    w->held_tail = *last;
    *first = rel_head;
    *last = rel_tail;
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    /* Named for top -H, perf, and the crash simulator's fault injection,
     * which fails a chosen thread's operations. */
    prctl(PR_SET_NAME, "esd-writer", 0, 0, 0);
    /* The thread's malloc arena (128 MiB of address space for a moment) is
     * made now, not at the first scavenger slice or append a second later:
     * esd's address space settles before it serves. */
    void *volatile warm = malloc(1); /* volatile: not optimised away */
    free(warm);
    for (;;) {
        pthread_mutex_lock(&w->mu);
        writer_wait(w);
        if (!w->queue_head && w->stopping) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        /* Take up to max_batch jobs. */
        size_t n = 0;
        write_job *first = w->queue_head;
        write_job *last = NULL;
        for (write_job *j = first; j && n < w->max_batch; j = j->next) {
            w->batch[n++] = j;
            last = j;
        }
        w->queue_head = last->next;
        if (!w->queue_head) {
            w->queue_tail = NULL;
        }
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);

        size_t nreq = 0, ngroup = 0;
        for (size_t i = 0; i < n; i++) {
            write_job *j = w->batch[i];
            if (j->kind == WRITE_JOB_APPEND) {
                w->reqs[nreq++] = j->req;
            } else if (j->kind == WRITE_JOB_GROUP) {
                /* Before the appends: their entry's fdatasync then makes
                 * the group entry durable too (writer.h). */
                j->group.rv = store_group_apply(w->st, j->group.ops, j->group.n, &j->group.synced);
                ngroup++;
            }
        }
        if (ngroup && nreq && !store_sync_deferred(w->st)) {
            hand_back_groups(w, &n, &first, &last);
        }
        if (nreq) {
            uint64_t t0 = mono_us();
            store_append_batch(w->st, w->reqs, nreq);
            ahist_observe(&w->commit_hist, &hist_latency_us, mono_us() - t0);
            ahist_observe(&w->sync_hist, &hist_latency_us, store_last_commit_call_us(w->st));
            ahist_observe(&w->batch_hist, &hist_batch, nreq);
            atomic_fetch_add(&w->commits, 1);
            atomic_fetch_add(&w->requests, nreq);
            if (nreq > atomic_load(&w->max_seen)) {
                atomic_store(&w->max_seen, (uint32_t)nreq);
            }
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            write_job *j = w->batch[i];
            if (j->kind == WRITE_JOB_APPEND) {
                j->req = w->reqs[k++]; /* results were written through the pointers */
            } else if (j->kind == WRITE_JOB_LIFE) {
                j->life_rv = store_life_apply(w->st, &j->life);
            } else if (j->kind == WRITE_JOB_ERASE) {
                j->erase_rv = store_erase(w->st, &j->erase);
            } else if (j->kind == WRITE_JOB_GROUP) {
                /* applied above */
            } else {
                j->snapshot.rv = store_save_snapshot(
                    w->st, j->snapshot.stream, j->snapshot.stream_len, j->snapshot.revision,
                    j->snapshot.state_format, j->snapshot.data, j->snapshot.data_len);
            }
        }
        if (store_sync_deferred(w->st)) {
            hold_replies(w, &first, &last, nreq);
            if (!first) {
                continue;
            }
        }
        writer_hand_back(w, first, last);
        w->last_batch_us = mono_us();
        writer_scavenge(w);
    }
}

es_err writer_start(store *st, uint32_t max_batch, writer **out)
{
    writer *w = calloc(1, sizeof *w);
    if (!w) {
        return ES_ERR_NO_MEMORY;
    }
    w->st = st;
    w->max_batch = max_batch ? max_batch : 1024;
    w->reqs = calloc(w->max_batch, sizeof *w->reqs);
    w->batch = calloc(w->max_batch, sizeof *w->batch);
    if (!w->reqs || !w->batch) {
        goto out_free;
    }
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        goto out_free;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the scavenger's timer */
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        close(w->efd);
        goto out_free;
    }
    *out = w;
    return ES_OK;
out_free:
    free(w->reqs);
    free(w->batch);
    free(w);
    return ES_ERR_INTERNAL;
}

int writer_fd(const writer *w)
{
    return w->efd;
}

es_err writer_submit(writer *w, write_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        return ES_ERR_SHUTTING_DOWN;
    }
    if (w->queue_tail) {
        w->queue_tail->next = job;
    } else {
        w->queue_head = job;
    }
    w->queue_tail = job;
    w->pending++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return ES_OK;
}

write_job *writer_take_completed(writer *w)
{
    uint64_t cnt;
    ssize_t rd = read(w->efd, &cnt, sizeof cnt);
    (void)rd; /* EAGAIN when nothing was signalled: fine */
    pthread_mutex_lock(&w->mu);
    write_job *list = w->done_head;
    w->done_head = w->done_tail = NULL;
    for (write_job *j = list; j; j = j->next) {
        w->pending--;
    }
    pthread_mutex_unlock(&w->mu);
    return list;
}

size_t writer_pending(writer *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->pending;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void writer_get_stats(writer *w, writer_stats *out)
{
    out->commits = atomic_load(&w->commits);
    out->requests = atomic_load(&w->requests);
    out->max_batch = atomic_load(&w->max_seen);
    ahist_read(&w->batch_hist, &out->batch);
    ahist_read(&w->commit_hist, &out->commit_us);
    ahist_read(&w->sync_hist, &out->sync_us);
    out->scavenge_slices = atomic_load(&w->scav_slices);
    out->events_removed = atomic_load(&w->scav_removed);
    out->bytes_reclaimed = atomic_load(&w->scav_bytes);
    out->scavenge_lag_us = atomic_load(&w->scav_lag_us);
    out->scavenge_errors = atomic_load(&w->scav_errors);
}

void writer_stop(writer *w, write_job **leftover)
{
    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    write_job *list = w->done_head;
    if (leftover) {
        *leftover = list;
    }
    close(w->efd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->reqs);
    free(w->batch);
    free(w);
}

#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
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
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
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
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->queue_head && !w->stopping) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
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

        size_t nreq = 0;
        for (size_t i = 0; i < n; i++) {
            if (w->batch[i]->kind == WRITE_JOB_APPEND) {
                w->reqs[nreq++] = w->batch[i]->req;
            }
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
    pthread_cond_init(&w->cv, NULL);
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

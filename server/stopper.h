/*
 * stopper — the stop flag of a background thread (the relay, the follower):
 * set once by the stopping thread, polled by the worker, and a sleep that
 * ends early when it is set. Header-only.
 */
#ifndef ES_STOPPER_H
#define ES_STOPPER_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

typedef struct stopper {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping; /* under mu */
} stopper;

static inline void stopper_init(stopper *s)
{
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->stopping = false;
}

static inline void stopper_destroy(stopper *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* Set the flag and wake a sleeper. */
static inline void stopper_stop(stopper *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static inline bool stopper_is_set(stopper *s)
{
    pthread_mutex_lock(&s->mu);
    bool v = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Sleep ms unless stopped meanwhile; @return true when stopping. */
static inline bool stopper_wait_ms(stopper *s, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    bool v = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return v;
}

#endif

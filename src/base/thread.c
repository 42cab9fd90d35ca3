/* Threads the library starts. */
#include <pthread.h>
#include <signal.h>

#include "base.h"

void vmig_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *m, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, m, &ts);
}

int vmig_thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg)
{
    /* Block every signal in the new thread (it inherits the mask of its
     * creator): process signals belong to the application's threads, not
     * to ours, whose blocking socket calls would otherwise fail with EINTR
     * wherever the kernel happens to deliver them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0 && name) {
        char n[16]; /* the kernel keeps 15 bytes */
        size_t len = strnlen(name, sizeof(n) - 1);
        memcpy(n, name, len);
        n[len] = 0;
        pthread_setname_np(*t, n); /* cosmetic (top, perf): failure is harmless */
    }
    return rc;
}

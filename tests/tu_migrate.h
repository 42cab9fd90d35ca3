/*
 * The two-thread pattern of the end-to-end tests: a destination session
 * runs vmig_incoming_run() on one thread while a source runs vmig_migrate()
 * on another. Include after <vmig/vmig.h> and testutil.h.
 */
#ifndef VMIG_TU_MIGRATE_H
#define VMIG_TU_MIGRATE_H

#include <sys/mman.h>

typedef struct tu_side {
    vmig_session *s;
    const char *uri; /* source: where to migrate */
    int rc;
    vmig_error err;
    int done; /* atomic: set when the call has returned */
} tu_side;

static inline void *tu_run_src(void *p)
{
    tu_side *x = p;
    x->rc = vmig_migrate(x->s, x->uri, &x->err);
    __atomic_store_n(&x->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static inline void *tu_run_dst(void *p)
{
    tu_side *x = p;
    x->rc = vmig_incoming_run(x->s, &x->err);
    __atomic_store_n(&x->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Fresh private anonymous memory (never touched), or the test stops. */
static inline void *tu_map(uint64_t len)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED, "mmap %llu", (unsigned long long)len);
    return m;
}

#endif

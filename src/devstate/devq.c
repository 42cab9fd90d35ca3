/*
 * One device's chunk queue (devq.h). Held chunks live in an open-addressing
 * table keyed by index (linear probing, backward-shift deletion), so that
 * finding chunk `next`, spotting a duplicate and removing are O(1) whatever
 * the arrival order. Each held chunk costs its length plus ENTRY_COST bytes
 * against the limit, so that a flood of tiny chunks is bounded too.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "devq.h"

#define ENTRY_COST 64u
#define NO_LAST    UINT64_MAX

typedef struct devq_entry {
    void *buf;
    size_t len;
    uint32_t index;
    bool used, last;
} devq_entry;

struct vmig_devq {
    char name[96];
    uint64_t limit;
    pthread_mutex_t mu;
    pthread_cond_t arrived; /* get() waits: chunk `next` or an error */
    pthread_cond_t space;   /* put() waits: room, its turn, or an error */
    devq_entry *tab;
    uint32_t cap, count; /* cap: a power of two */
    uint64_t held, held_max;
    uint32_t next;     /* the index the load thread takes next */
    uint32_t received; /* chunks put so far */
    uint64_t last;     /* index of the chunk marked last, or NO_LAST */
    int code;          /* first error (0: none) */
    char msg[VMIG_ERROR_MSG_MAX];
};

static uint32_t slot_of(const vmig_devq *q, uint32_t index)
{
    return (index * 2654435761u) & (q->cap - 1);
}

static devq_entry *find(vmig_devq *q, uint32_t index)
{
    for (uint32_t i = slot_of(q, index);; i = (i + 1) & (q->cap - 1)) {
        if (!q->tab[i].used)
            return NULL;
        if (q->tab[i].index == index)
            return &q->tab[i];
    }
}

static int grow(vmig_devq *q)
{
    uint32_t ncap = q->cap * 2;
    devq_entry *nt = calloc(ncap, sizeof(*nt));
    if (!nt)
        return VMIG_ENOMEM;
    devq_entry *old = q->tab;
    uint32_t ocap = q->cap;
    q->tab = nt;
    q->cap = ncap;
    for (uint32_t i = 0; i < ocap; i++) {
        if (!old[i].used)
            continue;
        uint32_t j = slot_of(q, old[i].index);
        while (nt[j].used)
            j = (j + 1) & (ncap - 1);
        nt[j] = old[i];
    }
    free(old);
    return 0;
}

static int insert(vmig_devq *q, uint32_t index, void *buf, size_t len, bool last)
{
    if (2 * (q->count + 1) > q->cap && grow(q))
        return VMIG_ENOMEM;
    uint32_t i = slot_of(q, index);
    while (q->tab[i].used)
        i = (i + 1) & (q->cap - 1);
    q->tab[i] = (devq_entry){.buf = buf, .len = len, .index = index, .used = true, .last = last};
    q->count++;
    q->received++;
    q->held += len + ENTRY_COST;
    if (q->held > q->held_max)
        q->held_max = q->held;
    return 0;
}

/* Removes *e, shifting back the entries of its probe run. */
static void erase(vmig_devq *q, devq_entry *e)
{
    uint32_t i = (uint32_t)(e - q->tab);
    q->held -= q->tab[i].len + ENTRY_COST;
    q->tab[i].used = false;
    q->count--;
    for (uint32_t j = (i + 1) & (q->cap - 1); q->tab[j].used; j = (j + 1) & (q->cap - 1)) {
        uint32_t home = slot_of(q, q->tab[j].index);
        /* Entry j may move to the hole at i when its home is not in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        q->tab[i] = q->tab[j];
        q->tab[j].used = false;
        i = j;
    }
}

int vmig_devq_create(const char *name, uint64_t limit, vmig_devq **out, vmig_error *err)
{
    if (!out || limit == 0)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_devq_create: invalid arguments");
    *out = NULL;
    vmig_devq *q = calloc(1, sizeof(*q));
    if (q)
        q->tab = calloc(16, sizeof(*q->tab));
    if (!q || !q->tab) {
        free(q);
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the queue of device %s",
                              name ? name : "?");
    }
    snprintf(q->name, sizeof(q->name), "%s", name ? name : "?");
    q->cap = 16;
    q->limit = limit;
    q->last = NO_LAST;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->arrived, NULL);
    pthread_cond_init(&q->space, NULL);
    *out = q;
    return 0;
}

void vmig_devq_free(vmig_devq *q)
{
    if (!q)
        return;
    for (uint32_t i = 0; i < q->cap; i++)
        if (q->tab[i].used)
            free(q->tab[i].buf);
    free(q->tab);
    pthread_cond_destroy(&q->space);
    pthread_cond_destroy(&q->arrived);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* Under mu: record the first error and wake everybody. */
static int fail_locked(vmig_devq *q, int code, const char *fmt, ...) VMIG_PRINTF(3, 4);
static int fail_locked(vmig_devq *q, int code, const char *fmt, ...)
{
    if (!q->code) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(q->msg, sizeof(q->msg), fmt, ap);
        va_end(ap);
        q->code = code;
    }
    pthread_cond_broadcast(&q->arrived);
    pthread_cond_broadcast(&q->space);
    return q->code;
}

void vmig_devq_fail(vmig_devq *q, int code, const char *msg)
{
    pthread_mutex_lock(&q->mu);
    fail_locked(q, code ? code : VMIG_EIO, "%s", msg ? msg : "device state failed");
    pthread_mutex_unlock(&q->mu);
}

static int error_out(vmig_devq *q, vmig_error *err)
{
    return vmig_error_set(err, q->code, "%s", q->msg);
}

/* Under mu: is chunk (index, last) consistent with what came before? */
static int check_index(vmig_devq *q, uint32_t index, bool last)
{
    if (index >= VMIG_DEVQ_MAX_CHUNKS)
        return fail_locked(q, VMIG_EPROTO, "device %s: chunk index %u beyond the limit of %u",
                           q->name, index, VMIG_DEVQ_MAX_CHUNKS - 1);
    if (index < q->next || find(q, index))
        return fail_locked(q, VMIG_EPROTO, "device %s: chunk %u received twice", q->name, index);
    if (q->last != NO_LAST && index > q->last)
        return fail_locked(q, VMIG_EPROTO, "device %s: chunk %u after the last chunk (%llu)",
                           q->name, index, (unsigned long long)q->last);
    if (last && q->last != NO_LAST)
        return fail_locked(q, VMIG_EPROTO,
                           "device %s: chunk %u marked last, but chunk %llu was already", q->name,
                           index, (unsigned long long)q->last);
    if (last)
        for (uint32_t i = 0; i < q->cap; i++)
            if (q->tab[i].used && q->tab[i].index > index)
                return fail_locked(q, VMIG_EPROTO,
                                   "device %s: chunk %u marked last, but chunk %u came before it",
                                   q->name, index, q->tab[i].index);
    return 0;
}

int vmig_devq_put(vmig_devq *q, uint32_t index, void *buf, size_t len, bool last, vmig_error *err)
{
    pthread_mutex_lock(&q->mu);
    int rc;
    /* Out of turn and no room: wait for the load thread (or for the turn).
     * The checks run again after every wait, right before the insertion:
     * another channel may have delivered the same index, or a last chunk,
     * meanwhile. */
    for (;;) {
        rc = q->code ? q->code : check_index(q, index, last);
        if (rc || index == q->next || q->held + len + ENTRY_COST <= q->limit)
            break;
        pthread_cond_wait(&q->space, &q->mu);
    }
    if (!rc && last)
        q->last = index;
    if (!rc && insert(q, index, buf, len, last))
        rc = fail_locked(q, VMIG_ENOMEM, "device %s: out of memory holding chunk %u", q->name,
                         index);
    if (!rc) {
        if (index == q->next)
            pthread_cond_signal(&q->arrived);
        buf = NULL;
    } else {
        error_out(q, err);
    }
    pthread_mutex_unlock(&q->mu);
    free(buf);
    return rc;
}

int vmig_devq_get(vmig_devq *q, void **buf, size_t *len, bool *last, vmig_error *err)
{
    *buf = NULL;
    *len = 0;
    *last = false;
    pthread_mutex_lock(&q->mu);
    devq_entry *e = NULL;
    for (;;) {
        if (q->code) {
            int rc = error_out(q, err);
            pthread_mutex_unlock(&q->mu);
            return rc;
        }
        if (q->last != NO_LAST && q->next > q->last) {
            pthread_mutex_unlock(&q->mu);
            return VMIG_ENOENT;
        }
        if ((e = find(q, q->next)) != NULL)
            break;
        pthread_cond_wait(&q->arrived, &q->mu);
    }
    *buf = e->buf;
    *len = e->len;
    *last = e->last;
    erase(q, e);
    q->next++;
    /* Wake the channels that wait when one of them may hold the chunk in
     * turn (it is not here), or once half the room is free: not at every
     * chunk, which would wake them all to find that one chunk's room and
     * go back to sleep while the load thread waits for a core. */
    if (!find(q, q->next) || q->held <= q->limit / 2)
        pthread_cond_broadcast(&q->space);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int vmig_devq_close(vmig_devq *q, vmig_error *err)
{
    pthread_mutex_lock(&q->mu);
    if (!q->code && q->last == NO_LAST)
        fail_locked(q, VMIG_EPROTO,
                    "device %s: the source finished after %u chunk(s) without the last one",
                    q->name, q->received);
    else if (!q->code && q->received != q->last + 1)
        fail_locked(q, VMIG_EPROTO,
                    "device %s: the source finished, but %llu of the %llu chunks never arrived",
                    q->name, (unsigned long long)(q->last + 1 - q->received),
                    (unsigned long long)(q->last + 1));
    int rc = q->code ? error_out(q, err) : 0;
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void vmig_devq_stats(vmig_devq *q, uint64_t *held, uint64_t *held_max, uint32_t *taken)
{
    pthread_mutex_lock(&q->mu);
    if (held)
        *held = q->held;
    if (held_max)
        *held_max = q->held_max;
    if (taken)
        *taken = q->next;
    pthread_mutex_unlock(&q->mu);
}

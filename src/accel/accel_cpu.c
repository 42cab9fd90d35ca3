/*
 * The cpu backend: the SIMD zero check, on the channel thread, inside
 * submit(). Every batch is complete when submit() returns.
 */
#include <stdio.h>
#include <stdlib.h>

#include "accel.h"

typedef struct cpu_dev {
    vmig_accel_cpu_fn fn;
} cpu_dev;

typedef struct cpu_batch {
    uint32_t cap;
    uint8_t res[]; /* enum vmig_accel_job per job */
} cpu_batch;

static int cpu_open(const vmig_accel_conf *conf, void **dev, vmig_error *err)
{
    cpu_dev *d = calloc(1, sizeof(*d));
    if (!d)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the cpu engine");
    d->fn = conf->cpu;
    *dev = d;
    return 0;
}

static void cpu_close(void *dev)
{
    free(dev);
}

static void cpu_describe(void *dev, char *buf, size_t len)
{
    (void)dev;
    snprintf(buf, len, "cpu (inline on the channel threads)");
}

static int cpu_batch_create(void *dev, uint32_t chan, uint32_t cap, void **batch, vmig_error *err)
{
    (void)dev;
    (void)chan;
    cpu_batch *b = calloc(1, sizeof(*b) + cap);
    if (!b)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate a batch of %u jobs", cap);
    b->cap = cap;
    *batch = b;
    return 0;
}

static void cpu_batch_free(void *dev, void *batch)
{
    (void)dev;
    free(batch);
}

static int cpu_submit(void *dev, void *batch, const void *const *bufs, uint32_t n, uint32_t len)
{
    cpu_dev *d = dev;
    cpu_batch *b = batch;
    for (uint32_t i = 0; i < n; i++)
        b->res[i] = d->fn(bufs[i], len) ? VMIG_ACCEL_JOB_ZERO : VMIG_ACCEL_JOB_NONZERO;
    return 0;
}

static enum vmig_accel_job cpu_job(void *batch, uint32_t i, uint32_t *bytes_done)
{
    cpu_batch *b = batch;
    *bytes_done = 0;
    return (enum vmig_accel_job)b->res[i];
}

static bool cpu_done(void *dev, void *batch, int *dev_error)
{
    (void)dev;
    (void)batch;
    *dev_error = 0;
    return true;
}

const vmig_accel_ops vmig_accel_cpu_ops = {
    .name = "cpu",
    .inline_only = true,
    .open = cpu_open,
    .close = cpu_close,
    .describe = cpu_describe,
    .batch_create = cpu_batch_create,
    .batch_free = cpu_batch_free,
    .submit = cpu_submit,
    .job = cpu_job,
    .done = cpu_done,
};

/*
 * Offload engines for page checks ("is this page all zero?"; later memmove
 * and CRC), behind one ops table, and the channel-side machinery that every
 * engine shares: pipelined submission, the hybrid CPU fallback and the
 * statistics.
 *
 *   session   vmig_accel_open()      one device (or CPU) for every channel
 *   channel   vmig_accel_chan_*()    its own batches, on its own thread:
 *
 *     start(next packet) ──▶ device works ──────────────▶ records written
 *     finish(this packet):  poll; while the device is behind, the channel
 *                           thread checks pages itself from the batch's
 *                           tail; every page gets exactly one answer
 *
 * Backends (accel_cpu.c, accel_dsa.c): cpu (the SIMD check, inline), dsa
 * (Intel DSA work queues through the idxd driver's portals) and dsa-model
 * (the same descriptors consumed by a software model of the device,
 * dsa_model.h). This layer sees only buffers: it knows nothing of
 * sessions, blocks or sockets.
 */
#ifndef VMIG_ACCEL_H
#define VMIG_ACCEL_H

#include "../base/base.h"

/* What a backend says about one job. */
enum vmig_accel_job {
    VMIG_ACCEL_JOB_PENDING = 0, /* not answered yet */
    VMIG_ACCEL_JOB_ZERO,        /* every byte is zero */
    VMIG_ACCEL_JOB_NONZERO,     /* a byte is not */
    VMIG_ACCEL_JOB_PARTIAL,     /* a page fault stopped it after *bytes_done
                                 * bytes, all zero: the rest is unknown */
    VMIG_ACCEL_JOB_FAILED,      /* no answer: the CPU checks the whole page */
};

typedef bool (*vmig_accel_cpu_fn)(const void *buf, size_t len);

typedef struct vmig_accel_conf {
    /* accel-path: the queues of this backend, separated by blanks or
     * commas ("dsa:/dev/dsa/wq0.0 dsa:/dev/dsa/wq1.0", "model:depth=64");
     * NULL or "": the backend's default (dsa: the first usable queue). */
    const char *path;
    uint32_t channels; /* channel engines that will be created */
    uint32_t max_jobs; /* jobs per batch: pages per packet */
    uint32_t len;      /* bytes per job: the page size */
    vmig_accel_cpu_fn cpu;
} vmig_accel_conf;

/*
 * A backend. The session opens one device for all channels on the caller's
 * thread before the channel threads start, and closes it after they are
 * joined and every batch is freed. Batches belong to one channel thread:
 * batch_create, submit, job, done and batch_free are called by that thread
 * only. Every hook but open may assume valid arguments.
 */
typedef struct vmig_accel_ops {
    const char *name; /* "cpu", "dsa", "dsa-model" */
    /* The backend needs no device thread of its own: submit answers every
     * job before it returns, and start() is not worth calling ahead. */
    bool inline_only;
    /* Open the device; *dev may be left NULL by a backend that needs none.
     * VMIG_ENOTSUP with the reason when this machine or build cannot. */
    int (*open)(const vmig_accel_conf *conf, void **dev, vmig_error *err);
    void (*close)(void *dev);
    /* One line: what is in use ("DSA wq0.0 (dedicated, 128 entries)"). */
    void (*describe)(void *dev, char *buf, size_t len);
    /* Channel `chan`'s batch of up to cap jobs (the backend picks that
     * channel's queue). */
    int (*batch_create)(void *dev, uint32_t chan, uint32_t cap, void **batch, vmig_error *err);
    /* Never called while the device may still write the batch. */
    void (*batch_free)(void *dev, void *batch);
    /* Start checking bufs[0..n) of len bytes (1 <= n <= cap). 0: accepted;
     * VMIG_EAGAIN: the queue is full, nothing was submitted; VMIG_EIO: the
     * device cannot take work (the caller stops using it). */
    int (*submit)(void *dev, void *batch, const void *const *bufs, uint32_t n, uint32_t len);
    /* Job i's answer so far; *bytes_done for PARTIAL. */
    enum vmig_accel_job (*job)(void *batch, uint32_t i, uint32_t *bytes_done);
    /* The device will not touch the batch again (its last record is
     * written). Once true, *dev_error is non-zero (the status) when the
     * device reported an error of its own, not a page fault: the caller
     * then stops using it. Called until it returns true, then not again
     * for that submission. */
    bool (*done)(void *dev, void *batch, int *dev_error);
    /* CPU time the device's own threads spent (a model's); 0 for hardware. */
    uint64_t (*device_cpu_ns)(void *dev);
} vmig_accel_ops;

/* The registry: cpu, dsa, dsa-model (NULL-terminated). */
extern const vmig_accel_ops *const vmig_accel_backends[];
const vmig_accel_ops *vmig_accel_find(const char *name);

/* Counters of a session (relaxed atomics; readable while it runs). */
typedef struct vmig_accel_counters {
    uint64_t batches;    /* batches the device accepted */
    uint64_t dev_pages;  /* pages the device answered */
    uint64_t cpu_pages;  /* pages the channel threads checked */
    uint64_t tail_pages; /* of those, taken from the tail of a batch the
                          * device was behind on */
    uint64_t faults;     /* pages the device stopped at a page fault */
    uint64_t untouched;  /* never touched (pagemap, before submission or at
                          * a fault): zero without reading */
    uint64_t retries;    /* submissions the queue refused (full) */
    uint64_t fallbacks;  /* packets checked on the CPU whole: queue still full
                          * after the retries, no free batch, device failed */
    uint64_t late;       /* batches still running when the CPU had answered
                          * every page (their memory is reclaimed later) */
} vmig_accel_counters;

typedef struct vmig_accel vmig_accel;
typedef struct vmig_accel_chan vmig_accel_chan;

/* Submissions refused by a full queue before the packet goes to the CPU. */
#define VMIG_ACCEL_MAX_RETRY 32u
/* Packets a channel hands to the device ahead of the one it finishes (its
 * queue holds up to 3 more), and batches per channel: the one being
 * finished, those ahead, and late ones. */
#define VMIG_ACCEL_AHEAD 1u
#define VMIG_ACCEL_SLOTS 6u

/* Open backend `ops` (caller thread). */
int vmig_accel_open(const vmig_accel_ops *ops, const vmig_accel_conf *conf, vmig_accel **out,
                    vmig_error *err);
/* After every channel engine is freed. NULL: no-op. */
void vmig_accel_close(vmig_accel *a);
/* The backend answers inside submit (cpu): nothing runs ahead. */
bool vmig_accel_inline(const vmig_accel *a);
void vmig_accel_describe(const vmig_accel *a, char *buf, size_t len);
void vmig_accel_counters_get(const vmig_accel *a, vmig_accel_counters *out);
uint64_t vmig_accel_device_cpu_ns(const vmig_accel *a);
/* The device failed: the sentence saying so (set once), else NULL. */
const char *vmig_accel_failure(const vmig_accel *a);

/* A channel's engine, used by that channel's thread only. */
int vmig_accel_chan_create(vmig_accel *a, uint32_t chan, vmig_accel_chan **out, vmig_error *err);
/* Waits (at most about a second) for batches the device still holds;
 * a batch it never completes is leaked rather than freed under it. */
void vmig_accel_chan_free(vmig_accel_chan *c);

/*
 * Hand the pages of packet `tag` to the device ahead of need. Never blocks
 * for long: a full queue is retried VMIG_ACCEL_MAX_RETRY times, then the
 * packet is left to the CPU. A no-op for inline backends, once the device
 * has failed, and while the device is behind (a late batch of this
 * channel still runs). `untouched_zero`: the pages are private anonymous
 * memory, where a page that was never touched reads as zero: such pages
 * (found in /proc/self/pagemap, or by a fault) are answered without
 * reading them, and are not given to the device (see accel.c).
 */
void vmig_accel_chan_start(vmig_accel_chan *c, uint64_t tag, const void *const *bufs, uint32_t n,
                           uint32_t len, bool untouched_zero);

/*
 * zero[i] = 1 when bufs[i] (len bytes) is all zero, else 0, for packet
 * `tag` (started before or not; `untouched_zero` as above).
 */
void vmig_accel_chan_finish(vmig_accel_chan *c, uint64_t tag, const void *const *bufs, uint32_t n,
                            uint32_t len, bool untouched_zero, uint8_t *zero);

#endif /* VMIG_ACCEL_H */

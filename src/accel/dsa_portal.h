/*
 * The low layer of the Intel DSA hardware path: finding the work queues the
 * idxd driver offers to applications, and writing descriptors (idxd.h) to
 * a queue's portal.
 *
 * Discovery reads sysfs (Documentation/ABI/stable/sysfs-driver-dma-idxd):
 *
 *   /sys/bus/dsa/devices/dsa0/             a DSA device (iax1/: an IAA one)
 *   /sys/bus/dsa/devices/wq0.0/mode        "dedicated" | "shared"
 *                             /state       "enabled" | "disabled" | ...
 *                             /type        "user" | "kernel" | "none"
 *                             /size        entries in the queue
 *                             /max_batch_size      (absent before Linux
 *                             /max_transfer_size    5.10: the device's)
 *   /dev/dsa/wq0.0                         the queue's character device
 *
 * DSA and IAA devices share the bus and one numbering (dsa0, iax1, dsa2):
 * the queues of a device that has an iax<N> entry are not DSA queues and
 * are left out.
 *
 * A portal is the queue's 4 KiB submission page, mapped from its device
 * node. A dedicated queue (one process at a time) takes MOVDIR64B, a
 * posted 64-byte store that the device cannot refuse: a descriptor written
 * to a full dedicated queue is dropped. A shared queue takes ENQCMD, which
 * reports whether the device accepted the descriptor.
 *
 * Threads: vmig_dsa_portal_submit() may be called by any number of threads
 * at once (both instructions are single atomic 64-byte writes to the
 * device); discovery, open and free by one thread, and free only when no
 * submit is running and the device no longer writes any record of this
 * process's descriptors.
 *
 * Ownership: discovery fills caller-owned vmig_dsa_wq_info records, which
 * hold no resources. vmig_dsa_portal_open() returns a portal that owns the
 * open device node and the mapping; vmig_dsa_portal_free() releases both.
 * Descriptors, the memory they point at and their completion records stay
 * the caller's (idxd.h): the portal copies a descriptor when it writes it.
 */
#ifndef VMIG_DSA_PORTAL_H
#define VMIG_DSA_PORTAL_H

#include "idxd.h"

#if VMIG_HAVE_IDXD_H

#define VMIG_DSA_SYSFS_ROOT "/sys/bus/dsa/devices"

/* One work queue as sysfs describes it. Unreadable or absent text
 * attributes leave their flag false; unreadable, absent or malformed
 * numbers read 0, except that a queue without max_batch_size or
 * max_transfer_size (kernels before 5.10) gets its device's. */
typedef struct vmig_dsa_wq_info {
    char name[32];      /* "wq0.0" */
    char dev_path[64];  /* "/dev/dsa/wq0.0" */
    bool dedicated;     /* mode is "dedicated" (else shared) */
    bool enabled;       /* state is "enabled" and mode is "dedicated" or
                         * "shared": a queue whose mode cannot be read is
                         * not offered, vmig could not tell which
                         * instruction it takes */
    bool user;          /* type is "user": open to applications */
    uint32_t size;      /* entries: descriptors it holds at once */
    uint32_t max_batch; /* descriptors per batch; 0: no batches */
    uint64_t max_xfer;  /* bytes per descriptor; 0: unknown */
    int device;         /* dsa0 -> 0 */
} vmig_dsa_wq_info;

/* A queue vmig can submit to. */
static inline bool vmig_dsa_wq_usable(const vmig_dsa_wq_info *wq)
{
    return wq->enabled && wq->user && wq->size >= 1;
}

/*
 * List the DSA work queues under sysfs_root (NULL: VMIG_DSA_SYSFS_ROOT),
 * ordered by device, then queue number (wq0.2 before wq0.10), unusable
 * ones included with their flags as they are. *n = the number of queues
 * found, of which the first min(*n, max) are written to out (out may be
 * NULL when max is 0). An absent root is no queue, not an error;
 * VMIG_EIO when the root exists but cannot be listed.
 */
int vmig_dsa_wq_discover(const char *sysfs_root, vmig_dsa_wq_info *out, uint32_t max, uint32_t *n,
                         vmig_error *err);

/*
 * One usable queue. path: "/dev/dsa/wqX.Y" or "wqX.Y" names it; NULL takes
 * the first usable queue in discovery order, a dedicated one before any
 * shared one. Fails with VMIG_EINVAL for a path of another form,
 * VMIG_ENOENT for a named queue that is absent, VMIG_ENOTSUP for one that
 * cannot be used (disabled, a kernel queue, an IAA queue, ...) or when no
 * queue is usable, VMIG_EIO when sysfs cannot be read; the sentence says
 * why, queue by queue.
 */
int vmig_dsa_wq_find(const char *sysfs_root, const char *path, vmig_dsa_wq_info *out,
                     vmig_error *err);

/* CPUID.(EAX=7,ECX=0):ECX bit 28 and bit 29; false on other CPUs. */
bool vmig_cpu_has_movdir64b(void);
bool vmig_cpu_has_enqcmd(void);

typedef struct vmig_dsa_portal vmig_dsa_portal;

/*
 * Open wq->dev_path and map its portal. VMIG_ENOTSUP when the CPU lacks the
 * instruction the queue needs (dedicated: MOVDIR64B, shared: ENQCMD), when
 * this build is not for x86-64, or when the device node may not be opened;
 * VMIG_ENOENT when it does not exist; VMIG_EAGAIN when a dedicated queue is
 * already open in another process.
 */
int vmig_dsa_portal_open(const vmig_dsa_wq_info *wq, vmig_dsa_portal **out, vmig_error *err);
/* Unmap and close. NULL: no-op. */
void vmig_dsa_portal_free(vmig_dsa_portal *p);

/*
 * Write the 64-byte descriptor d to the device, after a store fence: the
 * descriptor, the batch's descriptor list, the completion records it
 * clears and the buffers written before the call are visible to the device
 * first.
 *
 * Dedicated queue: always 0. The device cannot refuse, and silently drops
 * a descriptor that finds the queue full, so the caller keeps the number
 * of descriptors submitted and not yet completed at most
 * vmig_dsa_portal_size() (a batch counts as one, its jobs do not).
 *
 * Shared queue: 0 when the device accepted the descriptor, VMIG_EAGAIN
 * when it refused it (full, or busy with other clients): nothing was
 * queued, retry or do the work on the CPU.
 *
 * VMIG_ENOTSUP on builds not for x86-64.
 */
int vmig_dsa_portal_submit(vmig_dsa_portal *p, const struct dsa_hw_desc *d);

bool vmig_dsa_portal_dedicated(const vmig_dsa_portal *p);
uint32_t vmig_dsa_portal_size(const vmig_dsa_portal *p);
uint32_t vmig_dsa_portal_max_batch(const vmig_dsa_portal *p);

#endif /* VMIG_HAVE_IDXD_H */
#endif /* VMIG_DSA_PORTAL_H */

/*
 * A software model of one DSA work queue (idxd.h has the descriptors), so
 * that the whole DSA path except the portal write runs and is tested on any
 * machine.
 *
 * It behaves as the device does, as far as vmig can see:
 *   - submit() is the portal: it copies the 64-byte descriptor into the
 *     queue (as MOVDIR64B / ENQCMD do) or returns VMIG_EAGAIN when the queue
 *     already holds wq_size descriptors (ENQCMD's "retry");
 *   - a thread of its own takes descriptors in order, waits latency_ns per
 *     descriptor, reads the batch's descriptor list and the pages through
 *     the addresses in the descriptors (shared virtual memory), and writes
 *     each completion record as the specification says: the fields first,
 *     the status byte last with a release store;
 *   - Compare Pattern over a page that is not resident (mincore: never
 *     touched, or swapped out) stops there with DSA_COMP_PAGE_FAULT_NOBOF,
 *     bytes_completed and fault_addr set, as a device without
 *     block-on-fault does; a batch in which any job did not
 *     succeed (a fault included) completes with DSA_COMP_BATCH_FAIL, one
 *     whose descriptor list cannot be read with DSA_COMP_BATCH_PAGE_FAULT
 *     (Intel DML's status table; accel-config's DSA tests): the per-job
 *     records say which jobs need the CPU;
 *   - invalid descriptors (bad opcode, flags, count 0 or 1 in a batch, count
 *     beyond the maximum, misaligned list) complete with the matching error
 *     status;
 *   - injected faults, deterministic and counted from creation: every
 *     full_every-th submit finds the queue full, every fault_every-th job
 *     faults at half its length, after error_after jobs every descriptor
 *     completes with DSA_COMP_HW_ERR1 (a device that died), and with
 *     reorder the jobs of a batch complete last-to-first.
 */
#ifndef VMIG_DSA_MODEL_H
#define VMIG_DSA_MODEL_H

#include "idxd.h"

#if VMIG_HAVE_IDXD_H

struct vmig_dsa_model_counters {
    uint64_t submits, full, descriptors, batches, jobs, faults, errors; /* relaxed atomics */
};

typedef struct vmig_dsa_model_params {
    uint32_t wq_size;    /* descriptors the queue holds (0: 128) */
    uint32_t max_batch;  /* the device's maximum batch size (0: 1024) */
    uint64_t latency_ns; /* time per descriptor (0: none) */
    uint32_t full_every; /* 0: never */
    uint32_t fault_every;
    uint64_t error_after; /* 0: never */
    bool reorder;
    bool ignore_residency;                    /* treat every page as resident */
    struct vmig_dsa_model_counters *counters; /* optional */
} vmig_dsa_model_params;

typedef struct vmig_dsa_model vmig_dsa_model;

/* Starts the model's thread. */
int vmig_dsa_model_create(const vmig_dsa_model_params *p, vmig_dsa_model **out, vmig_error *err);
/* Stops the thread after it has completed every queued descriptor. NULL:
 * no-op. */
void vmig_dsa_model_free(vmig_dsa_model *m);
/* The portal write. Thread-safe. 0, or VMIG_EAGAIN when the queue is full. */
int vmig_dsa_model_submit(vmig_dsa_model *m, const struct dsa_hw_desc *d);
/* CPU time the model's thread has used so far (what the device's work
 * costs here; a real device costs the host none of it). Thread-safe. */
uint64_t vmig_dsa_model_cpu_ns(const vmig_dsa_model *m);

#endif /* VMIG_HAVE_IDXD_H */
#endif /* VMIG_DSA_MODEL_H */

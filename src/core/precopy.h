/*
 * The convergence policy of live pre-copy: estimates (bandwidth, dirty rate,
 * expected downtime), the switchover decision and the vCPU throttle. Pure
 * arithmetic on the figures of each pass, so that unit tests can drive it
 * with a model of a link and a guest (tests/unit/test_precopy.c).
 *
 *   pass k sent ──▶ dirty-log sync ──▶ vmig_precopy_step() ──▶ NEXT:   pass k+1
 *                                                         ├─▶ SWITCH: stop the VM
 *                                                         ├─▶ FORCE:  stop anyway
 *                                                         └─▶ FAIL:   VM runs on
 */
#ifndef VMIG_PRECOPY_H
#define VMIG_PRECOPY_H

#include "../base/base.h"

/* The figures of one pass, measured by the source loop. */
typedef struct vmig_pass_sample {
    uint32_t pass;        /* the pass that ended, from 1 */
    uint64_t wire_bytes;  /* bytes the channels wrote during the pass */
    uint64_t pass_ns;     /* first page queued to the last channel's SYNC written */
    uint64_t dirty_bytes; /* dirty bytes the sync after the pass found */
    uint64_t interval_ns; /* time the sync covers: since the previous sync (or log start) */
    uint64_t sync_ns;     /* duration of that sync */
    uint64_t elapsed_ns;  /* since the migration started */
    /* A rate probe early in the pass (0 when the pass was too short): the
     * dirty bytes a sync found probe_ns after the previous sync. Over a
     * short time few pages are written twice, so this rate is closer to
     * the VM's than the whole pass's, which saturates on a hot set. */
    uint64_t probe_bytes, probe_ns;
    /* Device state the switchover will still send (save_iterate's
     * estimates, or pending()): part of the expected downtime, though no
     * pass can shrink it. */
    uint64_t dev_bytes;
} vmig_pass_sample;

enum vmig_pc_verdict {
    VMIG_PC_NEXT = 0,   /* send another pass */
    VMIG_PC_SWITCH = 1, /* the expected downtime fits: switch over */
    VMIG_PC_FORCE = 2,  /* a limit was reached and on-limit=switch */
    VMIG_PC_FAIL = 3,   /* a limit was reached and on-limit=fail */
};

typedef struct vmig_precopy {
    /* configuration, from vmig_params */
    uint64_t downtime_limit_ns, max_time_ns, link_cap;
    uint32_t max_passes, on_limit, policy, t_initial, t_step, t_max, stall_passes;
    /* estimates after the last step */
    uint64_t bandwidth;  /* bytes/s */
    uint64_t dirty_rate; /* bytes/s, over the pass */
    uint64_t probe_rate; /* bytes/s, the pass's probe (0: none) */
    uint64_t remaining;  /* bytes */
    uint64_t expected_ns;
    uint32_t throttle; /* percent, what the VM should be set to */
    /* state */
    uint64_t best_remaining;    /* smallest remaining so far (stall detection) */
    uint32_t stalls;            /* passes in a row that did not shrink it */
    uint32_t high_rate;         /* ladder: passes in a row with dirty rate > bandwidth / 2 */
    uint64_t win_bytes, win_ns; /* bandwidth window not yet folded in */
} vmig_precopy;

void vmig_precopy_init(vmig_precopy *pc, const vmig_params *p);

/*
 * Take the figures of a pass; update the estimates and pc->throttle, and
 * say what to do next. On FAIL and FORCE, `why` (may be NULL) receives a
 * sentence ("after 12 passes, 812 MiB still dirty: expected downtime 4100
 * ms > limit 300 ms (max-time 60000 ms reached)").
 */
enum vmig_pc_verdict vmig_precopy_step(vmig_precopy *pc, const vmig_pass_sample *smp, char *why,
                                       size_t whylen);

#endif /* VMIG_PRECOPY_H */

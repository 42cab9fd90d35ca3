/* Convergence policy of live pre-copy (see precopy.h). */
#include <stdio.h>

#include "precopy.h"

/* The bandwidth estimate folds in passes once they add up to this much
 * time: a pass of a few pages is all latency and would understate it. */
#define BW_WINDOW_NS 50000000ull
/* Before any measurement (and when a link carried nothing). */
#define BW_DEFAULT (1ull << 30)
/* Adaptive throttle: aim for the dirty rate to be this share of the bandwidth,
 * so that each pass is about half the previous one. */
#define ADAPTIVE_TARGET 0.5
/* A pass "progresses" when it brings the remaining bytes below this share
 * of the best so far. */
#define PROGRESS 0.95

void vmig_precopy_init(vmig_precopy *pc, const vmig_params *p)
{
    memset(pc, 0, sizeof(*pc));
    pc->downtime_limit_ns = (uint64_t)p->downtime_limit_ms * 1000000ull;
    pc->max_time_ns = (uint64_t)p->max_time_ms * 1000000ull;
    pc->link_cap = p->max_bandwidth;
    pc->max_passes = p->max_passes;
    pc->on_limit = p->on_limit;
    pc->policy = p->throttle;
    pc->t_initial = p->throttle_initial;
    pc->t_step = p->throttle_step;
    pc->t_max = p->throttle_max;
    pc->stall_passes = p->stall_passes;
    pc->best_remaining = UINT64_MAX;
}

static void update_bandwidth(vmig_precopy *pc, const vmig_pass_sample *smp)
{
    pc->win_bytes += smp->wire_bytes;
    pc->win_ns += smp->pass_ns;
    if (pc->win_ns >= BW_WINDOW_NS || pc->bandwidth == 0) {
        if (pc->win_ns && pc->win_bytes)
            pc->bandwidth = (uint64_t)((double)pc->win_bytes * 1e9 / (double)pc->win_ns);
        if (pc->win_ns >= BW_WINDOW_NS)
            pc->win_bytes = pc->win_ns = 0;
    }
    if (pc->bandwidth == 0)
        pc->bandwidth = pc->link_cap ? pc->link_cap : BW_DEFAULT;
    if (pc->link_cap && pc->bandwidth > pc->link_cap)
        pc->bandwidth = pc->link_cap;
}

static uint32_t clamp_throttle(const vmig_precopy *pc, uint64_t t)
{
    return (uint32_t)VMIG_MIN(t, (uint64_t)pc->t_max);
}

static void ladder_step(vmig_precopy *pc)
{
    pc->throttle = clamp_throttle(pc, pc->throttle ? (uint64_t)pc->throttle + pc->t_step
                                                   : (uint64_t)pc->t_initial);
}

static void update_throttle(vmig_precopy *pc, bool stalled)
{
    double rate = (double)pc->dirty_rate, bw = (double)pc->bandwidth;
    switch (pc->policy) {
    case VMIG_THROTTLE_LADDER:
        /* QEMU's auto-converge: two passes in a row that dirtied more than
         * half of what they sent trigger a step. */
        if (rate > bw / 2) {
            if (++pc->high_rate >= 2) {
                pc->high_rate = 0;
                ladder_step(pc);
            }
        } else {
            pc->high_rate = 0;
        }
        break;
    case VMIG_THROTTLE_ADAPTIVE:
        if (pc->probe_rate > rate) /* the less saturated measure of the two */
            rate = (double)pc->probe_rate;
        if (rate > ADAPTIVE_TARGET * bw && pc->throttle < pc->t_max) {
            /* The rate was measured under the current throttle; the VM
             * unthrottled would dirty rate / (1 - t). Pick the t that
             * brings it to the target at once, never lower than now. */
            double free_rate = rate / (1.0 - pc->throttle / 100.0);
            double need = 100.0 * (1.0 - ADAPTIVE_TARGET * bw / free_rate);
            uint64_t t = need <= 0 ? 0 : (uint64_t)need + 1; /* rounded up */
            if (t > pc->throttle)
                pc->throttle = clamp_throttle(pc, t);
        }
        if (stalled) /* the model was wrong (bursty guest): one ladder step on top */
            ladder_step(pc);
        break;
    default:
        break;
    }
}

enum vmig_pc_verdict vmig_precopy_step(vmig_precopy *pc, const vmig_pass_sample *smp, char *why,
                                       size_t whylen)
{
    update_bandwidth(pc, smp);
    pc->remaining = smp->dirty_bytes;
    pc->dirty_rate = smp->interval_ns
                         ? (uint64_t)((double)smp->dirty_bytes * 1e9 / (double)smp->interval_ns)
                         : 0;
    pc->probe_rate =
        smp->probe_ns ? (uint64_t)((double)smp->probe_bytes * 1e9 / (double)smp->probe_ns) : 0;
    pc->expected_ns =
        (uint64_t)((double)(pc->remaining + smp->dev_bytes) * 1e9 / (double)pc->bandwidth) +
        smp->sync_ns;
    if (pc->remaining == 0 || pc->expected_ns <= pc->downtime_limit_ns)
        return VMIG_PC_SWITCH;

    bool stalled = false;
    if ((double)pc->remaining < PROGRESS * (double)pc->best_remaining) {
        pc->best_remaining = pc->remaining;
        pc->stalls = 0;
    } else if (++pc->stalls >= pc->stall_passes) {
        pc->stalls = 0;
        stalled = true;
    }
    bool throttle_spent = pc->policy == VMIG_THROTTLE_OFF || pc->throttle >= pc->t_max;
    const char *limit = NULL;
    char lbuf[64];
    if (pc->max_passes && smp->pass >= pc->max_passes) {
        snprintf(lbuf, sizeof(lbuf), "max-passes %u reached", pc->max_passes);
        limit = lbuf;
    } else if (pc->max_time_ns && smp->elapsed_ns >= pc->max_time_ns) {
        snprintf(lbuf, sizeof(lbuf), "max-time %llu ms reached",
                 (unsigned long long)(pc->max_time_ns / 1000000));
        limit = lbuf;
    } else if (stalled && throttle_spent) {
        snprintf(lbuf, sizeof(lbuf), "no progress over %u passes%s", pc->stall_passes,
                 pc->policy == VMIG_THROTTLE_OFF ? " with throttle off"
                                                 : " at the highest throttle");
        limit = lbuf;
    }
    if (limit) {
        char dev[96] = "";
        if (smp->dev_bytes)
            snprintf(dev, sizeof(dev), " and %.1f MiB of device state to send once stopped",
                     (double)smp->dev_bytes / 1048576.0);
        if (why)
            snprintf(why, whylen,
                     "after %u passes, %.1f MiB still dirty%s (dirty rate %.1f MB/s, bandwidth "
                     "%.1f MB/s): expected downtime %llu ms > limit %llu ms (%s)",
                     smp->pass, (double)pc->remaining / 1048576.0, dev,
                     (double)pc->dirty_rate / 1e6, (double)pc->bandwidth / 1e6,
                     (unsigned long long)(pc->expected_ns / 1000000),
                     (unsigned long long)(pc->downtime_limit_ns / 1000000), limit);
        return pc->on_limit == VMIG_ON_LIMIT_SWITCH ? VMIG_PC_FORCE : VMIG_PC_FAIL;
    }
    update_throttle(pc, stalled);
    return VMIG_PC_NEXT;
}

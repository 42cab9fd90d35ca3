/* compression=auto: the epoch controller of adapt.h. */
#include "adapt.h"

/* Weight of a new epoch in the cost of a policy that was also in force in
 * the epoch before. A trial after an absence replaces the old cost: that
 * one describes the link and the content as they were then. */
#define ALPHA 0.5

/* Order in which never-measured candidates are tried: none first (it is the
 * reference and costs no CPU), then the cheapest encoders. */
static const uint32_t warmup_order[] = {VMIG_CODEC_NONE, VMIG_CODEC_LZ4, VMIG_CODEC_DEFLATE_PAGE,
                                        VMIG_CODEC_ZSTD, VMIG_CODEC_ZLIB};

/*
 * An epoch's length: a full one for the best policy, half for a trial of
 * another and a quarter for a candidate's first trial (which the warm-up
 * makes for every one, whatever it costs). After a change of policy,
 * packets begun in the first eighth are not counted: the socket buffers
 * still hold the previous policy's data and the channels finish packets
 * they began under it.
 */
static void start_epoch(vmig_auto *a, uint64_t now, bool changed, bool trial)
{
    uint64_t len = a->epoch_ns;
    if (a->cost[a->cur] < 0)
        len /= 4;
    else if (trial)
        len /= 2;
    a->t_start = now + (changed ? len / 8 : 0);
    a->t_end = a->t_start + len;
    a->bytes = a->busy = 0;
    a->npkt = 0;
    a->lim_ok = a->limits && !a->limits(a->limits_arg, &a->lim_busy, &a->lim_rwnd);
}

void vmig_auto_set_limits(vmig_auto *a, vmig_auto_limits_fn fn, void *arg)
{
    a->limits = fn;
    a->limits_arg = arg;
    a->lim_ok = fn && !fn(arg, &a->lim_busy, &a->lim_rwnd);
}

/* The receiver's share of the epoch that ends: < 0 when unknown. */
static double recv_share(const vmig_auto *a)
{
    uint64_t busy, rwnd;
    if (!a->lim_ok || a->limits(a->limits_arg, &busy, &rwnd) || busy <= a->lim_busy ||
        rwnd < a->lim_rwnd)
        return -1;
    double s = (double)(rwnd - a->lim_rwnd) / (double)(busy - a->lim_busy);
    return s > 1 ? 1 : s;
}

void vmig_auto_init(vmig_auto *a, uint32_t mask, uint64_t epoch_ns, uint64_t now)
{
    memset(a, 0, sizeof(*a));
    a->mask = (mask | 1u << VMIG_CODEC_NONE) & ((1u << VMIG_CODEC_COUNT) - 1);
    a->epoch_ns = epoch_ns ? epoch_ns : VMIG_AUTO_EPOCH_NS;
    for (uint32_t c = 0; c < VMIG_CODEC_COUNT; c++)
        a->cost[c] = a->recv_share[c] = -1;
    a->cur = a->prev = VMIG_CODEC_NONE;
    start_epoch(a, now, false, false);
}

double vmig_auto_cost(const vmig_auto *a, uint32_t codec)
{
    if (codec >= VMIG_CODEC_COUNT || !(a->mask & 1u << codec))
        return -1;
    return a->cost[codec];
}

static bool recv_bound(const vmig_auto *a, uint32_t c)
{
    return a->recv_share[c] >= VMIG_AUTO_RECV_BOUND;
}

/* The policy for the next epoch, from what was measured so far; *trial: it
 * is not the cheapest. */
static uint32_t next_policy(const vmig_auto *a, bool *trial)
{
    *trial = true;
    /* Raw pages and the receiver is the limit: every codec only adds decode
     * work there, so none, whatever the (noisy) costs say; codecs are
     * re-tried rarely and are not even warmed up. */
    bool raw_recv_bound = a->cost[VMIG_CODEC_NONE] >= 0 && recv_bound(a, VMIG_CODEC_NONE);
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(warmup_order) && !raw_recv_bound; i++) {
        uint32_t c = warmup_order[i];
        if ((a->mask & 1u << c) && a->cost[c] < 0)
            return c;
    }
    uint32_t best = VMIG_CODEC_NONE;
    for (uint32_t c = 1; c < VMIG_CODEC_COUNT && !raw_recv_bound; c++)
        if ((a->mask & 1u << c) && a->cost[c] >= 0 && a->cost[c] < a->cost[best])
            best = c;
    /* The most overdue other candidate gets the epoch, if one is due. */
    uint32_t pick = best;
    double overdue = 0;
    for (uint32_t c = 0; c < VMIG_CODEC_COUNT; c++) {
        if (c == best || !(a->mask & 1u << c))
            continue;
        double interval = VMIG_AUTO_EXPLORE_MAX;
        if (raw_recv_bound) {
            /* codecs: EXPLORE_MAX */
        } else if (c == VMIG_CODEC_NONE && recv_bound(a, best)) {
            interval = VMIG_AUTO_EXPLORE_MIN; /* the receiver limits the codec: try raw soon */
        } else if (a->cost[c] >= 0 && a->cost[best] > 0) {
            double rel = a->cost[c] / a->cost[best];
            interval = VMIG_AUTO_EXPLORE_MIN + VMIG_AUTO_EXPLORE_SLOPE * (rel - 1);
            if (interval > VMIG_AUTO_EXPLORE_MAX)
                interval = VMIG_AUTO_EXPLORE_MAX;
        }
        double late = (double)(a->nepoch - a->last[c]) / interval;
        if (late >= 1 && late > overdue) {
            overdue = late;
            pick = c;
        }
    }
    *trial = pick != best;
    return pick;
}

bool vmig_auto_observe(vmig_auto *a, uint32_t policy, uint64_t bytes, uint64_t t_begin,
                       uint64_t now)
{
    if (policy == a->cur && t_begin >= a->t_start && now >= t_begin && bytes > 0) {
        a->bytes += bytes;
        a->busy += now - t_begin;
        a->npkt++;
    }
    if (now < a->t_end || a->npkt < VMIG_AUTO_EPOCH_PKTS)
        return false;

    uint32_t c = a->cur;
    double sample = (double)a->busy / (double)a->bytes;
    bool fresh = a->cost[c] < 0 || a->prev != c;
    a->cost[c] = fresh ? sample : a->cost[c] + ALPHA * (sample - a->cost[c]);
    double rs = recv_share(a);
    if (rs >= 0)
        a->recv_share[c] =
            fresh || a->recv_share[c] < 0 ? rs : a->recv_share[c] + ALPHA * (rs - a->recv_share[c]);
    a->prev = c;
    a->epochs_in[c]++;
    a->last[c] = a->nepoch;
    a->nepoch++;
    bool trial;
    uint32_t next = next_policy(a, &trial);
    bool changed = next != c;
    if (changed) {
        a->switches++;
        __atomic_store_n(&a->cur, next, __ATOMIC_RELAXED);
    }
    a->last[next] = a->nepoch;
    start_epoch(a, now, changed, trial);
    return changed;
}

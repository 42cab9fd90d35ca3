/*
 * compression=auto: which codec the channels use, chosen by measuring what
 * each one actually costs end to end (docs/design.md "Adaptive
 * compression" has the model and its reasons).
 *
 * One vmig_auto per session, shared by the source's channels under a lock
 * the caller holds around observe(); policy() may be read without it. Pure
 * arithmetic on the times it is given: no clock, no I/O, so the unit test
 * drives it with synthetic links and CPUs.
 *
 * The measure is channel time per byte of page data: for every RAM packet,
 * the time from choosing its codec to the end of its write (probe, encode,
 * pacing, the write waiting for the link or the receiver), summed over all
 * channels, divided by the page bytes it carried. With every channel busy,
 * the policy with the lowest channel time per byte moves the data fastest,
 * whatever the bottleneck is: the link (writes wait), the sender's CPU
 * (encodes wait for a core) or the receiver's (its socket fills). Idle
 * channels add nothing, so pauses between passes do not count.
 *
 * Time is cut into epochs (100 ms in the engine). An epoch measures the
 * policy in force; at its end the next one is chosen: every candidate once
 * at the start (none first), then the cheapest, with each other candidate
 * tried again for one epoch every 12 + 100 * (cost / best - 1) epochs
 * (at most 128), so a codec 40 % worse costs about 0.8 % of the time and
 * one within 1 % of the best is re-measured every 12 epochs.
 */
#ifndef VMIG_ADAPT_H
#define VMIG_ADAPT_H

#include "../base/base.h"

/* Epochs between two trials of a candidate: EXPLORE_MIN + EXPLORE_SLOPE *
 * (cost / best - 1), at most EXPLORE_MAX. */
#define VMIG_AUTO_EXPLORE_MIN   12
#define VMIG_AUTO_EXPLORE_SLOPE 100
#define VMIG_AUTO_EXPLORE_MAX   128
/* Packets an epoch needs before it can end (an idle epoch does not). */
#define VMIG_AUTO_EPOCH_PKTS 4
/* The engine's epoch. */
#define VMIG_AUTO_EPOCH_NS (100 * 1000 * 1000ull)
/* When the receiver held TCP back (receive window) for at least this share
 * of the time it had data in flight while pages went raw, the receiver,
 * not the link, is the limit, and every codec only adds decode work there:
 * none is kept whatever the costs say, codecs are re-tried only every
 * EXPLORE_MAX epochs (none's own epochs show when the limit moves to the
 * link). When a codec's epochs show the receiver as the limit, none is
 * re-tried within EXPLORE_MIN epochs. */
#define VMIG_AUTO_RECV_BOUND 0.25
/* A packet whose pages the probe flags at least this share of is sent raw
 * whatever the policy (no codec would gain on it). */
#define VMIG_AUTO_RANDOM_SHARE 0.9

/* Codecs auto may choose from, before intersecting with what is built here
 * and what the destination decodes: none, lz4, zstd, deflate-page. zlib is
 * left out: at every level it is slower than zstd for a worse ratio. */
#define VMIG_AUTO_CANDIDATES                                                                       \
    ((1u << VMIG_CODEC_NONE) | (1u << VMIG_CODEC_LZ4) | (1u << VMIG_CODEC_ZSTD) |                  \
     (1u << VMIG_CODEC_DEFLATE_PAGE))

/* Cumulative TCP time with data in flight and time held back by the
 * receiver's window, in us, summed over the channels (vmig_conn_tcp_limits);
 * non-zero when unknown. */
typedef int (*vmig_auto_limits_fn)(void *arg, uint64_t *busy_us, uint64_t *rwnd_us);

typedef struct vmig_auto {
    uint32_t mask;                        /* candidates, bit (1 << id); none always included */
    uint32_t cur;                         /* the policy in force (atomic store, relaxed load) */
    uint32_t prev;                        /* the policy of the epoch that ended last */
    uint64_t epoch_ns;                    /* length of an epoch */
    uint64_t t_start;                     /* packets begun before this are not counted */
    uint64_t t_end;                       /* the epoch may end at a packet done after this */
    uint64_t bytes;                       /* page bytes counted in this epoch */
    uint64_t busy;                        /* channel ns counted in this epoch */
    uint32_t npkt;                        /* packets counted in this epoch */
    uint64_t nepoch;                      /* epochs ended so far */
    uint64_t switches;                    /* policy changes so far */
    double cost[VMIG_CODEC_COUNT];        /* channel ns per page byte; < 0 unknown */
    uint64_t last[VMIG_CODEC_COUNT];      /* epoch at which it was last in force */
    uint64_t epochs_in[VMIG_CODEC_COUNT]; /* epochs each policy was in force */
    /* The receiver's share of the limits (see VMIG_AUTO_RECV_BOUND). */
    vmig_auto_limits_fn limits;
    void *limits_arg;
    bool lim_ok; /* lim_* hold the epoch's start */
    uint64_t lim_busy, lim_rwnd;
    double recv_share[VMIG_CODEC_COUNT]; /* rwnd-limited / busy; < 0 unknown */
} vmig_auto;

void vmig_auto_init(vmig_auto *a, uint32_t mask, uint64_t epoch_ns, uint64_t now);

/* Where the controller reads the TCP limits at each epoch's end (optional;
 * without it the receiver rule never applies). */
void vmig_auto_set_limits(vmig_auto *a, vmig_auto_limits_fn fn, void *arg);

/* The policy for a packet begun now. */
static inline uint32_t vmig_auto_policy(const vmig_auto *a)
{
    return __atomic_load_n(&a->cur, __ATOMIC_RELAXED);
}

/*
 * One RAM packet sent while `policy` was in force (the value policy()
 * returned when it began at t_begin; its pages may still have gone raw):
 * `bytes` of page data, done at `now`. Ends the epoch when it is due and
 * picks the next policy; true when the policy changed.
 */
bool vmig_auto_observe(vmig_auto *a, uint32_t policy, uint64_t bytes, uint64_t t_begin,
                       uint64_t now);

/* The measured cost of `codec` in channel ns per page byte; < 0 while it is
 * unknown or not a candidate. For tests and statistics. */
double vmig_auto_cost(const vmig_auto *a, uint32_t codec);

#endif /* VMIG_ADAPT_H */

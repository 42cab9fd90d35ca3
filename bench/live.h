/*
 * The synthetic live workload: writer threads that dirty a memory image at a
 * chosen rate while it migrates, standing in for the vCPUs of a VM. The tests
 * and benchmarks use it to exercise live pre-copy without a VMM, and to prove
 * afterwards that memory is what it must be (vmig_live_check()).
 *
 * A write stores one 64-bit stamp in the first 8 bytes of one 4 KiB page of
 * the hot set and leaves bytes 8..4095 alone, so every page is at all times
 * "the original page, with the last stamp written to it (if any) in front":
 *
 *   image:    | cold | hot set [hot_off, hot_off + hot_len)        | cold |
 *   hot page:        0    1    2    3    4    5    6 ...
 *   owner (W = 3):   w0   w1   w2   w0   w1   w2   w0 ...   (hot index % W)
 *   page:     [ stamp (8 bytes) | original bytes 8..4095 ]
 *   stamp:    bits 63..48 = writer + 1 (1..64), bits 47..0 = that writer's
 *             write counter (from 1): unique over the workload, never zero
 *
 * Each writer owns the hot pages whose index within the hot set is congruent
 * to its number modulo W, so no page is written by two threads, and records
 * the stamp of each write in its own table right after writing the page.
 * With those tables the check can tell, for every page, exactly which bytes
 * it must hold once the writers are paused.
 *
 * Target pages: with probability redirty_pct/100 a writer re-writes one of
 * the last 64 pages it picked at random (its working set; it starts doing so
 * once it has picked 64), otherwise a page of its share drawn uniformly at
 * random. redirty_pct = 100 thus confines each writer to at most 64 pages.
 *
 * Rate: a token bucket per writer (rate / W each; a write counts as 4096
 * bytes) that fills only while the writer is running, with a burst of at most
 * 50 ms of writes (at least 64) so that a writer that lost the CPU catches up
 * without flooding. Throttle: a duty cycle over VMIG_LIVE_PERIOD_NS in which a
 * writer runs (100 - pct) % and sleeps the rest, without accruing tokens.
 * Pause: a handshake; vmig_live_pause() returns once every writer has
 * acknowledged and will not write again before vmig_live_resume().
 *
 * Writer threads are named "vmig-live<w>" and block every signal except the
 * synchronous fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP): the
 * kernel delivers those to the faulting thread even when blocked, by killing
 * the process, so leaving them open keeps a fault handler (for instance a
 * write-protection dirty tracker) working in the writers.
 *
 * The writers write with plain stores, as vCPUs do: a migration reading the
 * image at the same time races with them by design (the engine's dirty
 * tracking, not the memory model, is what makes the copy right). Under
 * ThreadSanitizer that one store is not instrumented (guest writes in a real
 * VMM are invisible to it too), so live migration tests stay TSan-clean; the
 * stamp tables, counters and handshake are instrumented as usual.
 *
 * Dependencies: libc and pthreads only. Functions return 0 or a negative
 * errno. No global state: any number of workloads may run in one process, on
 * different images. One controlling thread at a time is expected, but every
 * control function is thread-safe.
 */
#ifndef VMIG_BENCH_LIVE_H
#define VMIG_BENCH_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMIG_LIVE_PAGE_SIZE   4096u     /* the granule of writes and of the hot set */
#define VMIG_LIVE_WRITERS_MAX 64u       /* writers per workload */
#define VMIG_LIVE_PERIOD_NS   10000000u /* throttle duty-cycle period (10 ms) */
#define VMIG_LIVE_RING        64u       /* redirty working set, pages per writer */

struct vmig_live_params {
    unsigned writers;          /* 1..64, default 2 */
    uint64_t rate;             /* bytes/s dirtied over all writers; 0 = as fast as possible */
    uint64_t hot_off, hot_len; /* hot set, bytes, 4096-aligned; hot_len 0 = from hot_off to the
                                  end; must hold at least `writers` pages */
    unsigned redirty_pct;      /* 0..100, default 0 */
    uint64_t seed;             /* default 1 */
};

/* Sets *p to the defaults: 2 writers, unlimited rate, the whole image hot,
 * no redirtying, seed 1. */
void vmig_live_params_default(struct vmig_live_params *p);

/*
 * A snapshot of the counters. The counters are read one by one without
 * stopping the writers, so while they run the snapshot is consistent only to
 * within one batch (64 writes) per writer; after vmig_live_pause() it is exact.
 */
struct vmig_live_stats {
    uint64_t writes, bytes; /* page writes so far over all writers; bytes = writes * 4096 */
    uint64_t run_ns;        /* time the writers have been running (throttle sleeps included,
                               paused time excluded), since creation */
    unsigned throttle_pct;  /* current throttle, 0..99 */
    bool paused;            /* between vmig_live_pause() and vmig_live_resume() */
    double mbps;            /* bytes / run_ns * 1e3: the average dirty rate, MB/s (1e6) */
    /* Addition: the per-writer split (writes = the sum of these). */
    unsigned writers;                              /* number of writers */
    uint64_t writer_writes[VMIG_LIVE_WRITERS_MAX]; /* [w] for w < writers; the rest 0 */
};

typedef struct vmig_live vmig_live;

/*
 * Creates a workload over mem[0, len) (len a non-zero multiple of 4096; mem
 * stays the caller's and must outlive the workload) and starts its writers at
 * once, running, or parked as if paused when start_paused. p NULL means the
 * defaults. Returns 0 and *out, or -EINVAL (bad parameters: writers outside
 * 1..64, an unaligned or out-of-range hot set, a hot set of fewer pages than
 * writers, redirty_pct beyond 100), -ENOMEM, or the error of pthread_create
 * (negated) if a writer cannot be started. *out is NULL on error.
 */
int vmig_live_create(vmig_live **out, uint8_t *mem, uint64_t len, const struct vmig_live_params *p,
                     bool start_paused);

/* Stops and joins the writers (paused or not) and frees l; NULL is a no-op.
 * The image keeps what was written to it. */
void vmig_live_free(vmig_live *l);

/* Sets the throttle to pct (0..99; larger values are taken as 99). Takes
 * effect within one period; the effective rate is about rate*(100-pct)/100
 * (with rate 0, the writers run (100-pct) % of the time). */
void vmig_live_throttle(vmig_live *l, unsigned pct);

/* Stops the writers: returns once every writer has stopped writing and will
 * not write again until vmig_live_resume(). Writers notice the request within
 * 64 writes or 1 ms. Pausing a paused workload does nothing. The caller's
 * thread then sees every write (the handshake is a mutex), so it may read the
 * image and run the checks. */
void vmig_live_pause(vmig_live *l);

/* Lets the writers go on; does nothing unless paused. */
void vmig_live_resume(vmig_live *l);

/* Fills *st with a snapshot of the counters; from any thread, at any time. */
void vmig_live_stats(vmig_live *l, struct vmig_live_stats *st);

/*
 * Checks the image against the stamps and orig, the image as it was when the
 * workload was created (or NULL: then only the stamps are checked). For every
 * page: if a writer stamped it, its first 8 bytes must be the last stamp
 * written and bytes 8..4095 must equal orig's; otherwise the whole page must
 * equal orig's. Requires the workload to be paused, and is to be called from
 * the thread that paused it or one synchronised with it. Returns 0; -EIO with
 * a sentence naming the first bad page, the byte and what was found and
 * expected ("image page 12 (offset 0xc000): ..."); or -EBUSY if the writers
 * are running. msg (len bytes, NUL-terminated; may be NULL) is "" on success.
 */
int vmig_live_check(const vmig_live *l, const uint8_t *orig, char *msg, size_t len);

/* Like vmig_live_check(), for another buffer `copy` of the image's length
 * (e.g. the destination's memory after switchover), checked against the same
 * stamps and orig; messages name the page as "copy page N". */
int vmig_live_check_copy(const vmig_live *l, const uint8_t *orig, const uint8_t *copy, char *msg,
                         size_t len);

#endif

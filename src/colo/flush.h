/*
 * The COLO secondary's RAM-cache flush: at each committed checkpoint, copy
 * every page the checkpoint dirtied from the RAM cache into the VM's RAM,
 * on N threads.
 *
 *   dirty bitmap  |0000|1111|1111|1111|0000|0000|0001|0000|   (words of 64 pages)
 *   threads        \___ thread 0 ___/ \______ thread 1 _____/
 *                  split at word boundaries so that each gets about the
 *                  same number of dirty pages (not the same address range:
 *                  dirty pages cluster), so no two threads share a word
 *
 * Each thread copies the runs of contiguous dirty pages of its words with
 * one copy each (non-temporal stores on x86-64) and clears the words. A thread count of 1 is the
 * single-threaded flush (the baseline QEMU's colo_flush_ram_cache is).
 *
 * Pure memory work: buffers and bitmaps in, no sessions, no I/O. The
 * flusher owns its worker threads (created once, reused by every flush).
 */
#ifndef VMIG_COLO_FLUSH_H
#define VMIG_COLO_FLUSH_H

#include "../base/base.h"

#define VMIG_FLUSH_MAX_THREADS 64

/* One block of guest RAM and its cache, page for page. */
typedef struct vmig_flush_region {
    uint8_t *ram;         /* where the pages go: the VM's memory */
    const uint8_t *cache; /* where they come from: the RAM cache, same layout */
    uint64_t *dirty;      /* one bit per page, LSB-first in 64-bit words; cleared by the flush */
    uint64_t npages;      /* bits past npages in the last word are ignored (and kept) */
    uint32_t page_size;
} vmig_flush_region;

typedef struct vmig_flush_stats {
    uint64_t pages; /* pages copied */
    uint64_t runs;  /* memcpy calls (runs of contiguous dirty pages) */
    uint64_t ns;    /* wall time of the flush */
    uint32_t threads;
    bool stream;                                   /* non-temporal stores */
    uint64_t thread_pages[VMIG_FLUSH_MAX_THREADS]; /* pages each thread copied */
} vmig_flush_stats;

typedef struct vmig_flusher vmig_flusher;

/* `nthreads` 1..VMIG_FLUSH_MAX_THREADS, or 0 for the number of online
 * CPUs; the caller's thread is one of them (nthreads - 1 are started). */
int vmig_flusher_create(uint32_t nthreads, vmig_flusher **out, vmig_error *err);
/* Stops the threads. NULL: no-op. */
void vmig_flusher_free(vmig_flusher *f);
uint32_t vmig_flusher_threads(const vmig_flusher *f);
/* Copy with non-temporal stores (the default on x86-64: the flushed pages
 * bypass the cache) or with memcpy. Returns what is in force (false where
 * the CPU has none). */
bool vmig_flusher_set_stream(vmig_flusher *f, bool on);

/*
 * Copy the dirty pages of `n` regions and clear their bits; returns when
 * every thread is done. One flush at a time per flusher (the caller's
 * thread takes part). `st` may be NULL. 0, or VMIG_EINVAL for a region
 * that is not well formed.
 */
int vmig_flusher_run(vmig_flusher *f, const vmig_flush_region *r, uint32_t n, vmig_flush_stats *st,
                     vmig_error *err);

#endif /* VMIG_COLO_FLUSH_H */

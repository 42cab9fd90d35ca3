/*
 * Dirty-page tracking for iterative pre-copy: which pages of memory that
 * this process owns were written since the last look.
 *
 * Built on userfaultfd write-protection, in one of two ways chosen at run
 * time:
 *
 *   WP_ASYNC  (Linux 6.7+) the kernel resolves write faults by itself
 *             (UFFD_FEATURE_WP_ASYNC): a write costs one minor fault and no
 *             user round trip. A sync is one PAGEMAP_SCAN walk over the
 *             region's page tables that returns the written pages and
 *             write-protects them again, atomically under the page table
 *             lock.
 *   WP_SYNC   (Linux 5.7+, x86-64) a handler thread receives each write
 *             fault, records the page and un-protects it, which wakes the
 *             writer: a write costs two context switches and two ioctls.
 *             A sync re-protects the recorded pages.
 *
 * What is tracked: writes through the registered mappings of anonymous
 * private memory, anonymous shared memory and shmem/memfd (/dev/shm)
 * files, by user code and by the kernel on the process's behalf (read(2)
 * into tracked memory, get_user_pages() users such as KVM).
 * Pages that were never touched are protected too (UFFD_FEATURE_WP_UNPOPULATED
 * and the shmem pte markers), so a first write to a hole is seen.
 *
 * Not tracked, and not detected:
 *   - writes to the same shmem file through another mapping or through
 *     write(2) on its descriptor (tracking is per page table, not per page);
 *   - WP_SYNC only: anonymous private pages dropped while tracking
 *     (MADV_DONTNEED, MADV_FREE): the kernel drops the protection with the
 *     page, so neither the drop nor later writes there are seen. WP_ASYNC
 *     reports such pages as written (their content changed) and protects
 *     them again; shmem keeps its protection (seen on Linux 6.18);
 *   - a region unmapped or remapped while tracked (WP_ASYNC: the next
 *     sync fails with VMIG_EIO; WP_SYNC: not detected);
 *   - other file mappings: WP_SYNC refuses them (VMIG_ENOTSUP); WP_ASYNC
 *     accepts and tracks them (seen with ext4, not covered by the tests);
 *     hugetlbfs is not supported (the sync handler un-protects 4 KiB).
 *
 * Threads: one thread at a time calls add, start, sync and stop on a
 * tracker (the migration thread); any threads may write the memory at any
 * time. In WP_SYNC mode a write to a protected page sleeps until the
 * handler thread has served it, and the handler waits while a sync
 * re-protects pages: writers stall for the length of a sync at worst.
 *
 * A region may belong to one tracker only: the kernel refuses a second
 * userfaultfd on the same range (EBUSY), reported as VMIG_EEXIST.
 */
#ifndef VMIG_DIRTY_H
#define VMIG_DIRTY_H

#include "../base/base.h"

typedef struct vmig_tracker vmig_tracker;

enum vmig_tracker_kind {
    VMIG_TRACKER_AUTO = 0,     /* create: WP_ASYNC if it works here, else WP_SYNC */
    VMIG_TRACKER_WP_ASYNC = 1, /* UFFD_FEATURE_WP_ASYNC + PAGEMAP_SCAN */
    VMIG_TRACKER_WP_SYNC = 2,  /* write faults resolved by a handler thread */
};

/*
 * 0 when this kernel supports `kind` for this process; else VMIG_ENOTSUP
 * (or the errno's code) with a sentence saying what is missing: no
 * userfaultfd in the kernel, not permitted (vm.unprivileged_userfaultfd,
 * seccomp), no UFFD_FEATURE_WP_ASYNC or PAGEMAP_SCAN, no write-protect
 * support. AUTO: 0 when either kind works. Opens and closes a userfaultfd
 * and, for WP_ASYNC, /proc/self/pagemap; keeps nothing.
 */
int vmig_tracker_probe(enum vmig_tracker_kind kind, vmig_error *err);

/*
 * Create a tracker of `kind`; AUTO tries WP_ASYNC, then WP_SYNC (the
 * sentence then names why each failed). The tracker owns a userfaultfd
 * (and for WP_ASYNC a descriptor of /proc/self/pagemap and a 96 KiB scan
 * vector); no thread runs before vmig_tracker_start().
 *
 * WP_SYNC needs a userfaultfd that also takes faults raised in kernel
 * mode, so it does not use UFFD_USER_MODE_ONLY: with that flag, a system
 * call writing into a protected page fails with EFAULT instead of
 * waiting for the handler. Such a userfaultfd needs CAP_SYS_PTRACE,
 * vm.unprivileged_userfaultfd = 1, or read-write access to
 * /dev/userfaultfd (tried in this order). WP_ASYNC is content with a
 * user-mode-only one (the kernel resolves its faults before that check).
 */
int vmig_tracker_create(vmig_tracker **out, enum vmig_tracker_kind kind, vmig_error *err);

/* Stop (see vmig_tracker_stop) and free. NULL is a no-op. */
void vmig_tracker_free(vmig_tracker *t);

/* WP_ASYNC or WP_SYNC: the kind actually in use (never AUTO). */
enum vmig_tracker_kind vmig_tracker_kind_of(const vmig_tracker *t);

/* Static description of the kind in use:
 * "userfaultfd write-protect, asynchronous (PAGEMAP_SCAN)" or
 * "userfaultfd write-protect, synchronous (fault handler thread)". */
const char *vmig_tracker_name(const vmig_tracker *t);

/*
 * Register the region [host, host + length) before start. `host` is
 * 4096-aligned, `length` a non-zero multiple of `page_size`, `page_size` a
 * power of two from 4096 to 1 GiB: the block's page. Dirtiness is
 * reported per block page: a block page is dirty when any 4 KiB page in
 * it was written. The range must be mapped, must not overlap another
 * region of this tracker (VMIG_EEXIST) and must not be registered with
 * another userfaultfd, such as another tracker's (VMIG_EEXIST, the
 * kernel's EBUSY). Registration does not protect anything yet.
 * Returns the region index (0, 1, ... in the order of the calls) or a
 * negative code. VMIG_ESTATE after start or stop.
 */
int vmig_tracker_add(vmig_tracker *t, void *host, uint64_t length, uint32_t page_size,
                     vmig_error *err);

/*
 * Start: write-protect every region (WP_SYNC: start the "vmig-wp" handler
 * thread first). From the return on, every write to a region is recorded;
 * pages written before are not reported. Once per tracker: VMIG_ESTATE
 * when started or stopped already. On failure the tracker is stopped:
 * nothing stays protected or registered.
 */
int vmig_tracker_start(vmig_tracker *t, vmig_error *err);

/*
 * OR into `bitmap` (one bit per block page of region `i`, LSB-first in
 * 64-bit words, ceil(npages / 64) words; bits beyond npages are left
 * alone) the pages written since start or the previous sync of this
 * region, and re-arm them: a write that lands after a page was reported
 * is reported by a later sync. A write that races with the sync is
 * reported by this sync or by the next one, never lost; the caller reads
 * a reported page after this call returns. *ndirty (may be NULL)
 * receives how many bits this call turned from 0 to 1 in `bitmap`.
 * Called on one thread at a time per tracker (the migration thread);
 * writers keep running meanwhile (WP_SYNC: a writer whose fault arrives
 * during the sync waits for it). Errors (VMIG_EINVAL bad index,
 * VMIG_ESTATE not started or stopped, VMIG_EIO the kernel refused a
 * scan or a re-protection, or the handler thread met an error) mean that
 * tracking is no longer reliable: stop, and send everything.
 */
int vmig_tracker_sync(vmig_tracker *t, uint32_t i, uint64_t *bitmap, uint64_t *ndirty,
                      vmig_error *err);

/*
 * Stop tracking: join the handler thread, un-protect and unregister every
 * region and close the userfaultfd. On return the memory is writable,
 * its content untouched, and no writer waits on a fault. Idempotent; a
 * stopped tracker cannot be started again (create a new one).
 */
void vmig_tracker_stop(vmig_tracker *t);

/*
 * Statistics, readable from any thread at any time: write faults handled
 * by the WP_SYNC handler thread (0 for WP_ASYNC, whose faults the kernel
 * resolves unseen) and the total time spent in vmig_tracker_sync (ns).
 * Either pointer may be NULL.
 */
void vmig_tracker_stats(const vmig_tracker *t, uint64_t *faults, uint64_t *sync_ns);

#endif /* VMIG_DIRTY_H */

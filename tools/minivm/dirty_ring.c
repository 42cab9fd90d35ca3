/*
 * The KVM dirty ring (KVM_CAP_DIRTY_LOG_RING), minivm's alternative to the
 * per-slot dirty bitmap of KVM_GET_DIRTY_LOG.
 *
 * Each vCPU has a ring of struct kvm_dirty_gfn {flags, slot, offset},
 * mmap'd from its fd at page KVM_DIRTY_LOG_PAGE_OFFSET. When the vCPU
 * dirties a page of a slot with KVM_MEM_LOG_DIRTY_PAGES (a write fault on
 * a write-protected page, a PML buffer flushed at a VM exit, or a write
 * KVM emulates), KVM fills the entry at its dirty_index and publishes it
 * by setting KVM_DIRTY_GFN_F_DIRTY last (store-release):
 *
 *      index & (ring_entries - 1)
 *     +-------+-------+-------+-------+-------+-------+
 *     |   0   |   0   | DIRTY | DIRTY | (KVM  |   0   |
 *     |       |       |       |       | busy) |       |
 *     +-------+-------+-------+-------+-------+-------+
 *                      ^ring_next      ^KVM's dirty_index
 *                      (= KVM's reset_index after each reset)
 *
 *   0 --KVM push--> DIRTY --harvest--> RESET --KVM_RESET_DIRTY_RINGS--> 0
 *
 * A harvest (under vm->ring_lock) walks each ring from ring_next while the
 * flags, read with load-acquire, have DIRTY; it records (slot, offset) in
 * that slot's pending bitmap, stores RESET (store-release) and advances.
 * Then KVM_RESET_DIRTY_RINGS frees the RESET entries and write-protects
 * their pages again. Harvests happen in dirty_sync (which then moves the
 * slot's pending bits into vmig's bitmap), on KVM_EXIT_DIRTY_RING_FULL
 * (KVM's soft limit: the ring size less 64 + PML-buffer entries; that
 * vCPU's thread harvests and runs on) and every MINIVM_RING_REAP_NS in a
 * reaper thread while logging is on (see overflow below).
 *
 * Why no write is lost. A write to page P after log_start either finds P
 * write-protected (or its PML dirty bit clear) and so produces an entry,
 * or finds P writable because an earlier entry for P has not been reset
 * yet. An entry is harvested (1) before vmig reads P: its bit lands in
 * pending and from there in the next dirty_sync's bitmap, and vmig reads P
 * only after that dirty_sync returns, so every write to P up to the reset,
 * which happens inside the harvest, is in what vmig reads; writes after
 * the reset make a new entry. (2) Entries KVM has reserved but not yet
 * published (DIRTY clear: slot/offset being written, or still in the PML
 * buffer) stop the walk; ring_next stays on them and a later harvest takes
 * them. This only delays a page by a sync, never drops it: each push
 * happens inside KVM_RUN of the vCPU that wrote, and the PML buffer is
 * flushed into the ring at every VM exit, so once the vCPUs are paused
 * (vmig's stop hook, before its last dirty_sync) every entry is published
 * and the last harvest sees all of them. (3) pending is cleared only by
 * dirty_sync (into vmig's bitmap) and by log_start (pass 1 reads every page
 * after it) and log_stop (nothing is migrated after it).
 *
 * Overflow. KVM checks the soft limit only between guest entries, and the
 * 64 reserved entries are meant to cover one exit. Under PVM (and any KVM
 * that emulates the write) one emulated `rep stosq` batch pushes an entry
 * per 8-byte store, up to 1024, so a nearly full ring is overrun: KVM
 * WARNs in kvm_dirty_ring_push and overwrites unharvested entries, and
 * ring_next no longer matches KVM's indexes. The reaper keeps rings far
 * from full so this is rare; when it happens anyway a harvest detects it
 * (a walk of a whole ring, a non-zero entry behind ring_next after the
 * reset, or DIRTY entries ahead of a free one at ring_next), realigns
 * ring_next with KVM (marking a gap RESET so that KVM's reset_index moves
 * over it, or stepping back over unreset entries), and sets ring_resync:
 * the next dirty_sync write-protects every slot again (logging off and on)
 * and reports every page dirty, so the entries that were lost cost a
 * resend of all RAM, not a page.
 *
 * If KVM_RESET_DIRTY_RINGS fails (but for EINTR, retried), the harvested
 * pages stay writable and later writes to them would go unlogged:
 * ring_failed makes every later dirty_sync, so the migration, fail.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "minivm.h"

/*
 * Default entries per vCPU: 65536 (1 MiB), KVM's maximum (less if the
 * kernel answers less). QEMU suggests 4096 to start with, which suits
 * KVM with EPT and PML (576 reserved entries, one entry per page fault).
 * But KVM pushes an entry per emulated store, and PVM (the nested KVM
 * minivm is measured on) emulates the guest's `rep stosq` into
 * write-protected pages: up to 1024 entries between two checks of the
 * soft limit, against 64 reserved. With 4096 entries that overran the
 * ring 8..30 times per migration (each a resync of all RAM at best, a
 * failed migration when the ring stayed out of step, see overflow above);
 * with 65536 and the 5 ms reaper, never in our runs. 1 MiB per vCPU
 * (4 at most) is cheap, and a harvest costs per entry taken, not per
 * ring size (but for the gap check's scan at dirty_sync).
 */
#define MINIVM_RING_DEFAULT_ENTRIES 65536u
#define MINIVM_RING_REAP_NS         5000000ull /* reaper period: 5 ms */
#define MINIVM_RING_RESET_TRIES     100        /* KVM_RESET_DIRTY_RINGS on EINTR */

static uint64_t ring_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int minivm_dirty_ring_enable(struct minivm *vm, uint32_t entries)
{
    if (vm->nvcpus) {
        fprintf(stderr, "minivm: the dirty ring must be enabled before the vCPUs are created\n");
        return -1;
    }
    if (vm->dirty_mode == MINIVM_DIRTY_RING) {
        fprintf(stderr, "minivm: the dirty ring is already enabled\n");
        return -1;
    }
    if (entries & (entries - 1)) {
        fprintf(stderr, "minivm: dirty ring of %u entries: must be a power of two\n", entries);
        return -1;
    }
    /* Both caps answer the maximum ring size in bytes; ACQ_REL is the
     * same ring with the acquire/release contract spelled out. */
    int cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
    int max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap);
    if (max <= 0) {
        cap = KVM_CAP_DIRTY_LOG_RING;
        max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap);
    }
    if (max <= 0) {
        fprintf(stderr, "minivm: this kernel's KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)\n");
        return -1;
    }
    if (entries == 0) {
        entries = MINIVM_RING_DEFAULT_ENTRIES;
        /* The largest power of two KVM takes, when less. */
        while (entries > 256 && (uint64_t)entries * sizeof(struct kvm_dirty_gfn) > (uint64_t)max)
            entries /= 2;
    }
    uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
    long pg = sysconf(_SC_PAGESIZE);
    if (bytes > (uint64_t)max || bytes < (uint64_t)pg) {
        fprintf(stderr,
                "minivm: dirty ring of %u entries (%llu bytes): KVM takes %llu..%d bytes "
                "(%llu..%llu entries)\n",
                entries, (unsigned long long)bytes, (unsigned long long)pg, max,
                (unsigned long long)pg / sizeof(struct kvm_dirty_gfn),
                (unsigned long long)max / sizeof(struct kvm_dirty_gfn));
        return -1;
    }
    /* No manual protect with the ring: KVM_CLEAR_DIRTY_LOG needs the bitmap
     * the ring replaces, and with INITIALLY_SET turning logging on would
     * write-protect nothing, so no write would reach the ring. minivm_vm_open
     * enabled it; arguments 0 turn it off again. */
    if (vm->manual_protect) {
        struct kvm_enable_cap off = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2};
        if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &off) < 0) {
            fprintf(stderr, "minivm: turning manual dirty-log protect off: %s\n", strerror(errno));
            return -1;
        }
        vm->manual_protect = false;
    }
    struct kvm_enable_cap ec = {.cap = (uint32_t)cap};
    ec.args[0] = bytes;
    if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec) < 0) {
        int e = errno;
        fprintf(stderr, "minivm: enabling a dirty ring of %u entries: %s%s\n", entries, strerror(e),
                e == EINVAL ? " (fewer entries than KVM reserves, vCPUs already exist, "
                              "or already enabled)"
                            : "");
        return -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&vm->ring_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&vm->ring_lock, NULL);
    vm->ring_entries = entries;
    vm->ring_acq_rel = cap == KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
    vm->dirty_mode = MINIVM_DIRTY_RING;
    return 0;
}

int minivm_dirty_ring_map(struct minivm *vm, struct minivm_vcpu *v)
{
    if (vm->dirty_mode != MINIVM_DIRTY_RING)
        return 0;
    size_t bytes = (size_t)vm->ring_entries * sizeof(struct kvm_dirty_gfn);
    off_t off = (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, off);
    if (p == MAP_FAILED) {
        fprintf(stderr, "minivm: mmap dirty ring of vCPU %u: %s\n", v->index, strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&vm->ring_lock);
    v->ring = p;
    v->ring_next = 0;
    pthread_mutex_unlock(&vm->ring_lock);
    return 0;
}

static uint32_t gfn_flags(const struct kvm_dirty_gfn *g)
{
    return __atomic_load_n(&g->flags, __ATOMIC_ACQUIRE);
}

static void gfn_mark_reset(struct kvm_dirty_gfn *g)
{
    __atomic_store_n(&g->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
}

static void overflow(struct minivm *vm, unsigned i, const char *how)
{
    if (vm->ring_stats.overflows++ == 0)
        fprintf(stderr,
                "minivm: the dirty ring of vCPU %u overflowed (%s): KVM pushed past its "
                "reserve and lost entries; re-protecting all RAM, every page is sent again\n",
                i, how);
    vm->ring_resync = true;
}

/* One entry KVM published: into its slot's pending bitmap, or dropped. */
static void record(struct minivm *vm, unsigned i, uint32_t idx, uint32_t slot, uint64_t offset,
                   bool keep)
{
    struct minivm_ring_stats *st = &vm->ring_stats;
    /* slot is (address space << 16) | slot id; minivm has no SMM space. */
    if (slot >= MINIVM_NSLOTS || !vm->slot[slot].host ||
        offset >= vm->slot[slot].size / MINIVM_PAGE) {
        if (st->bad_entries++ == 0)
            fprintf(stderr,
                    "minivm: dirty ring of vCPU %u, entry %u: slot 0x%x offset 0x%llx is no "
                    "page of slot 0 or 1 (dropped; counted in bad_entries)\n",
                    i, idx, slot, (unsigned long long)offset);
    } else if (keep && vm->ring_pending[slot]) {
        vm->ring_pending[slot][offset / 64] |= 1ull << (offset % 64);
    } else {
        st->discarded++;
    }
}

/*
 * Take vCPU i's published entries from ring_next on. Entries still marked
 * RESET (only after a rewind) were taken before and are stepped over.
 * Returns the entries taken; a walk of the whole ring is an overflow.
 */
static uint32_t walk(struct minivm *vm, unsigned i, bool keep)
{
    struct minivm_vcpu *v = &vm->vcpu[i];
    uint32_t mask = vm->ring_entries - 1, got = 0, k;
    for (k = 0; k < vm->ring_entries; k++) {
        struct kvm_dirty_gfn *g = &v->ring[v->ring_next & mask];
        uint32_t flags = gfn_flags(g);
        if (flags & KVM_DIRTY_GFN_F_DIRTY) {
            record(vm, i, v->ring_next & mask, g->slot, g->offset, keep);
            gfn_mark_reset(g);
            got++;
        } else if (!(flags & KVM_DIRTY_GFN_F_RESET)) {
            break; /* free, or not published yet: a later harvest takes it */
        }
        v->ring_next++;
    }
    if (k == vm->ring_entries)
        overflow(vm, i, "a whole ring was dirty");
    return got;
}

/*
 * ring_next is on a free entry: if published entries follow, KVM's
 * reset_index is here but its dirty_index ran past a gap of entries it
 * overwrote and we reset (see overflow above). Mark the gap RESET, so that
 * KVM's reset moves over it, and go on from its end. Returns true when it
 * found a gap.
 */
static bool fix_gap(struct minivm *vm, unsigned i)
{
    struct minivm_vcpu *v = &vm->vcpu[i];
    uint32_t mask = vm->ring_entries - 1, j;
    if (gfn_flags(&v->ring[v->ring_next & mask]))
        return false;
    for (j = 1; j < vm->ring_entries; j++)
        if (gfn_flags(&v->ring[(v->ring_next + j) & mask]) & KVM_DIRTY_GFN_F_DIRTY)
            break;
    /* Pushes are in order: with entry next + j published (acquire), a push
     * at ring_next would be visible by now. */
    if (j == vm->ring_entries || gfn_flags(&v->ring[v->ring_next & mask]))
        return false;
    for (uint32_t k = 0; k < j; k++)
        gfn_mark_reset(&v->ring[(v->ring_next + k) & mask]);
    v->ring_next += j;
    overflow(vm, i, "published entries after a gap");
    return true;
}

/* After a reset every entry behind ring_next is free. One that is not
 * means KVM's reset_index stopped behind us at an entry it overwrote:
 * step back to the oldest such entry. Returns true when it stepped. */
static bool fix_behind(struct minivm *vm, unsigned i)
{
    struct minivm_vcpu *v = &vm->vcpu[i];
    uint32_t mask = vm->ring_entries - 1;
    if (!gfn_flags(&v->ring[(v->ring_next - 1) & mask]))
        return false;
    uint32_t p = v->ring_next - 1;
    for (uint32_t k = 1; k + 1 < vm->ring_entries && gfn_flags(&v->ring[(p - 1) & mask]); k++)
        p--;
    v->ring_next = p;
    overflow(vm, i, "entries behind the harvest index not reset");
    return true;
}

static int reset_rings(struct minivm *vm)
{
    for (int t = 0; t < MINIVM_RING_RESET_TRIES; t++) {
        vm->ring_stats.resets++;
        /* Returns the entries reset; EINTR (a kick signal pending on this
         * vCPU thread) may come after part of the work: call again. */
        if (ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) >= 0)
            return 0;
        if (errno != EINTR)
            break;
    }
    fprintf(stderr, "minivm: KVM_RESET_DIRTY_RINGS: %s\n", strerror(errno));
    vm->ring_failed = true;
    return -1;
}

/*
 * Harvest every vCPU's ring and reset them (see the top of the file).
 * `keep`: record the pages in the pending bitmaps (when they exist) rather
 * than drop them. `check`: also look for a gap at ring_next, which costs
 * a scan of each ring (dirty_sync and ring-full exits). Caller holds
 * ring_lock. 0, or -1 when the log cannot be trusted any more.
 */
static int harvest_locked(struct minivm *vm, bool keep, bool check)
{
    struct minivm_ring_stats *st = &vm->ring_stats;
    uint64_t t0 = ring_now_ns();
    int rc = 0;
    /* A realignment needs another walk and reset; needing one after that
     * means KVM's indexes are where we cannot see them. */
    bool again = false;
    for (int round = 0; round < 3; round++) {
        uint64_t got = 0;
        bool marked = again; /* after a rewind: RESET entries to reset */
        for (unsigned i = 0; i < vm->nvcpus; i++) {
            if (!vm->vcpu[i].ring)
                continue;
            got += walk(vm, i, keep);
            if (check && fix_gap(vm, i)) {
                marked = true;
                got += walk(vm, i, keep);
            }
        }
        st->entries += got;
        if ((got || marked) && reset_rings(vm)) {
            rc = -1;
            break;
        }
        again = false;
        for (unsigned i = 0; i < vm->nvcpus; i++)
            if (vm->vcpu[i].ring && fix_behind(vm, i))
                again = true;
        if (!again)
            break;
    }
    if (again && !vm->ring_failed) {
        fprintf(stderr, "minivm: a dirty ring is out of step with KVM after an overflow: the "
                        "dirty log cannot be trusted (a bigger ring avoids overflows)\n");
        vm->ring_failed = true;
    }
    uint64_t dt = ring_now_ns() - t0;
    st->harvests++;
    st->harvest_ns += dt;
    if (dt > st->harvest_max_ns)
        st->harvest_max_ns = dt;
    return rc || vm->ring_failed ? -1 : 0;
}

int minivm_dirty_ring_full(struct minivm_vcpu *v)
{
    struct minivm *vm = v->vm;
    if (vm->dirty_mode != MINIVM_DIRTY_RING)
        return -1;
    pthread_mutex_lock(&vm->ring_lock);
    uint64_t t0 = ring_now_ns();
    vm->ring_stats.full_exits++;
    int rc = harvest_locked(vm, true, true);
    vm->ring_stats.full_ns += ring_now_ns() - t0;
    pthread_mutex_unlock(&vm->ring_lock);
    return rc;
}

static void *reaper_main(void *arg)
{
    struct minivm *vm = arg;
    pthread_mutex_lock(&vm->ring_lock);
    while (!vm->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + MINIVM_RING_REAP_NS;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&vm->ring_cond, &vm->ring_lock, &ts);
        if (vm->reaper_stop)
            break;
        vm->ring_stats.reaps++;
        harvest_locked(vm, true, false); /* a failure sticks in ring_failed */
    }
    pthread_mutex_unlock(&vm->ring_lock);
    return NULL;
}

static void reaper_stop(struct minivm *vm)
{
    if (!vm->reaper_on)
        return;
    pthread_mutex_lock(&vm->ring_lock);
    vm->reaper_stop = true;
    pthread_cond_broadcast(&vm->ring_cond);
    pthread_mutex_unlock(&vm->ring_lock);
    pthread_join(vm->reaper, NULL);
    vm->reaper_on = false;
}

int minivm_dirty_ring_log_set(struct minivm *vm, bool on)
{
    if (vm->dirty_mode != MINIVM_DIRTY_RING)
        return 0;
    if (!on)
        reaper_stop(vm);
    int rc = 0;
    pthread_mutex_lock(&vm->ring_lock);
    if (harvest_locked(vm, false, true))
        rc = -1;
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        size_t words = (size_t)(vm->slot[n].size / MINIVM_PAGE + 63) / 64;
        if (on && !vm->ring_pending[n] && words) {
            vm->ring_pending[n] = calloc(words, sizeof(uint64_t));
            if (!vm->ring_pending[n]) {
                fprintf(stderr, "minivm: no memory for the dirty-ring bitmap of slot %u\n", n);
                rc = -1;
            }
        } else if (vm->ring_pending[n]) {
            memset(vm->ring_pending[n], 0, words * sizeof(uint64_t));
        }
    }
    /* Logging starts with every page write-protected and pass 1 reads
     * them all: nothing from before matters. */
    vm->ring_resync = false;
    if (on)
        vm->ring_failed = false;
    pthread_mutex_unlock(&vm->ring_lock);
    if (on && !rc && !vm->reaper_on) {
        vm->reaper_stop = false;
        if (pthread_create(&vm->reaper, NULL, reaper_main, vm) == 0)
            vm->reaper_on = true;
        else
            fprintf(stderr, "minivm: no dirty-ring reaper thread: ring-full exits only\n");
    }
    return rc;
}

/* After an overflow: write-protect everything again, then call every page
 * dirty (vmig reads them after this dirty_sync returns). */
static int resync_locked(struct minivm *vm)
{
    if (minivm_dirty_log_rearm(vm))
        return -1;
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        uint64_t npages = vm->slot[n].size / MINIVM_PAGE;
        if (!vm->ring_pending[n])
            continue;
        memset(vm->ring_pending[n], 0xff, npages / 64 * sizeof(uint64_t));
        if (npages % 64)
            vm->ring_pending[n][npages / 64] = (1ull << (npages % 64)) - 1;
    }
    vm->ring_resync = false;
    vm->ring_stats.resyncs++;
    return 0;
}

int minivm_dirty_ring_sync_slot(struct minivm *vm, unsigned n, uint64_t *bitmap, uint64_t npages)
{
    if (vm->dirty_mode != MINIVM_DIRTY_RING || n >= MINIVM_NSLOTS)
        return -1;
    pthread_mutex_lock(&vm->ring_lock);
    int rc = harvest_locked(vm, true, true);
    if (!rc && vm->ring_resync)
        rc = resync_locked(vm);
    uint64_t *p = vm->ring_pending[n];
    if (!p) {
        fprintf(stderr, "minivm: dirty sync of slot %u before dirty logging was on\n", n);
        rc = -1;
    } else {
        for (uint64_t w = 0; w < (npages + 63) / 64; w++) {
            bitmap[w] |= p[w];
            p[w] = 0;
        }
    }
    pthread_mutex_unlock(&vm->ring_lock);
    return rc;
}

void minivm_dirty_ring_stats(struct minivm *vm, struct minivm_ring_stats *out)
{
    if (vm->dirty_mode != MINIVM_DIRTY_RING) {
        memset(out, 0, sizeof(*out));
        return;
    }
    pthread_mutex_lock(&vm->ring_lock);
    *out = vm->ring_stats;
    pthread_mutex_unlock(&vm->ring_lock);
}

void minivm_dirty_ring_close(struct minivm *vm)
{
    if (vm->dirty_mode != MINIVM_DIRTY_RING)
        return;
    reaper_stop(vm);
    size_t bytes = (size_t)vm->ring_entries * sizeof(struct kvm_dirty_gfn);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        if (vm->vcpu[i].ring)
            munmap(vm->vcpu[i].ring, bytes);
        vm->vcpu[i].ring = NULL;
    }
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        free(vm->ring_pending[n]);
        vm->ring_pending[n] = NULL;
    }
    pthread_cond_destroy(&vm->ring_cond);
    pthread_mutex_destroy(&vm->ring_lock);
    vm->dirty_mode = MINIVM_DIRTY_BITMAP;
}

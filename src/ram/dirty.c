/*
 * Dirty-page tracking with userfaultfd write-protection; see dirty.h.
 *
 * Both kinds register every region with UFFDIO_REGISTER_MODE_WP only (no
 * MISSING mode: a first touch of a hole is an ordinary fault, never a
 * message) and write-protect it with UFFDIO_WRITEPROTECT at start. Holes
 * are protected too: for anonymous memory UFFD_FEATURE_WP_UNPOPULATED makes
 * the kernel put a uffd-wp pte marker in every empty pte, and shmem always
 * uses markers (UFFD_FEATURE_WP_HUGETLBFS_SHMEM). The kernel keeps the
 * protection in the pte when a read fault maps a page there (the zero page,
 * a page-cache page), so reads never count as writes.
 *
 * WP_ASYNC: a write to a protected pte clears its uffd-wp bit in the fault
 * path and goes on. A sync asks PAGEMAP_SCAN for the ptes of the region
 * without the bit (PAGE_IS_WRITTEN), with PM_SCAN_WP_MATCHING so that the
 * kernel sets the bit again on each page it reports, under the same page
 * table lock: no write can fall between "reported" and "re-armed".
 * PM_SCAN_CHECK_WPASYNC makes the scan fail (EPERM) instead of reporting
 * nothing on a range that is not registered in async mode.
 *
 * WP_SYNC: the writer sleeps in the kernel until the handler thread has
 * read its fault message, set the page's bit in the region's 4 KiB bitmap
 * (`written`) and un-protected that page (which wakes it). A sync collects
 * the bits and re-protects those pages. Both hold `lock` across their two
 * steps. Without it:
 *
 *   handler: bit p = 1
 *                          sync: report p, bit p = 0, protect p
 *   handler: unprotect p                (p is writable but not recorded)
 *   writer:  writes p again             (no fault: this write is lost)
 *
 * With it, a fault is either handled before the sync (reported now, page
 * re-protected) or after it (reported by the next sync). A write that
 * lands between the sync's collection and its re-protection of a page is
 * in the page when the caller reads it after the sync: not lost either.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dirty.h"

/* ---- UAPI that Debian 12's headers (Linux 6.1) do not have yet ---- */

#ifndef UFFD_USER_MODE_ONLY /* Linux 5.11 */
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM /* Linux 5.19 */
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1u << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED /* Linux 6.4 */
#define UFFD_FEATURE_WP_UNPOPULATED (1u << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC /* Linux 6.7 */
#define UFFD_FEATURE_WP_ASYNC (1u << 15)
#endif
#ifndef USERFAULTFD_IOC_NEW /* /dev/userfaultfd, Linux 6.1 */
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#ifndef PAGEMAP_SCAN /* Linux 6.7, include/uapi/linux/fs.h */
struct page_region {
    __u64 start; /* [start, end) in bytes */
    __u64 end;
    __u64 categories; /* PAGE_IS_* of these pages, filtered by return_mask */
};

struct pm_scan_arg {
    __u64 size;  /* sizeof(struct pm_scan_arg) */
    __u64 flags; /* PM_SCAN_* */
    __u64 start; /* page-aligned range to walk */
    __u64 end;
    __u64 walk_end; /* out: where the walk stopped (end, or earlier when vec is full) */
    __u64 vec;      /* struct page_region[vec_len] */
    __u64 vec_len;
    __u64 max_pages; /* 0: no limit */
    __u64 category_inverted;
    __u64 category_mask;
    __u64 category_anyof_mask;
    __u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN   (1 << 1)
#define PAGE_IS_FILE      (1 << 2)
#define PAGE_IS_PRESENT   (1 << 3)
#define PAGE_IS_SWAPPED   (1 << 4)
#define PAGE_IS_PFNZERO   (1 << 5)
#define PAGE_IS_HUGE      (1 << 6)

#define PM_SCAN_WP_MATCHING   (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

#define SMALL_PAGE  4096u /* the protection granule: x86-64 base pages */
#define SMALL_SHIFT 12
#define SCAN_VEC    4096 /* page_region entries per PAGEMAP_SCAN call */
#define MSG_BATCH   64   /* uffd messages per read() in the handler */

typedef struct dirty_region {
    uint8_t *host;
    uint64_t length;
    uint64_t npages; /* block pages */
    uint32_t page_size;
    uint32_t shift;    /* log2(page_size) */
    uint64_t *written; /* WP_SYNC: one bit per 4 KiB page, under t->lock */
} dirty_region;

struct vmig_tracker {
    enum vmig_tracker_kind kind; /* WP_ASYNC or WP_SYNC */
    int uffd;
    uint64_t features; /* enabled by UFFDIO_API */
    bool started, stopped;

    dirty_region *regions;
    uint32_t nregions, cap;

    /* WP_ASYNC */
    int pagemap_fd;
    struct page_region *vec; /* SCAN_VEC entries */

    /* WP_SYNC */
    pthread_t thread;
    bool thread_running;
    int stop_fd;            /* eventfd: wakes the handler's poll() to exit */
    uint32_t *order;        /* region indices by address, for the handler's lookup */
    pthread_mutex_t lock;   /* written[] of every region, handler_err */
    vmig_error handler_err; /* first error of the handler thread */

    /* Counters, read by vmig_tracker_stats() from any thread. */
    uint64_t faults;
    uint64_t sync_ns;
};

static const char *const kind_names[] = {
    [VMIG_TRACKER_AUTO] = "automatic",
    [VMIG_TRACKER_WP_ASYNC] = "userfaultfd write-protect, asynchronous (PAGEMAP_SCAN)",
    [VMIG_TRACKER_WP_SYNC] = "userfaultfd write-protect, synchronous (fault handler thread)",
};

/* The code for an errno from the kernel's side of things. */
static int code_of_errno(int e)
{
    switch (e) {
    case ENOMEM:
        return VMIG_ENOMEM;
    case EINVAL:
        return VMIG_EINVAL;
    case EBUSY:
    case EEXIST:
        return VMIG_EEXIST;
    case ENOENT:
        return VMIG_ENOENT;
    case ENOSYS:
    case ENOTTY:
    case EOPNOTSUPP:
    case EPERM:
    case EACCES:
        return VMIG_ENOTSUP;
    default:
        return VMIG_EIO;
    }
}

/* ---- opening a userfaultfd ---- */

/*
 * A new userfaultfd, O_CLOEXEC | O_NONBLOCK; for WP_ASYNC user-mode-only
 * when the kernel knows the flag. Tried: the system call, then
 * /dev/userfaultfd (whose file permissions replace the capability check).
 */
static int uffd_open(bool user_mode_only, vmig_error *err)
{
    int flags = O_CLOEXEC | O_NONBLOCK | (user_mode_only ? UFFD_USER_MODE_ONLY : 0);
    int fd = (int)syscall(SYS_userfaultfd, flags);
    if (fd < 0 && errno == EINVAL && user_mode_only) { /* before Linux 5.11 */
        flags &= ~UFFD_USER_MODE_ONLY;
        fd = (int)syscall(SYS_userfaultfd, flags);
    }
    if (fd >= 0)
        return fd;
    int e = errno;
    if (e == ENOSYS)
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "this kernel has no userfaultfd (built without CONFIG_USERFAULTFD, "
                              "or a seccomp filter hides the system call)");
    if (e == EPERM) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
            close(dev);
            if (fd >= 0)
                return fd;
        }
        if (user_mode_only)
            return vmig_error_set(err, VMIG_ENOTSUP,
                                  "userfaultfd is not permitted for this process (a seccomp "
                                  "filter, as in containers, or a security module refuses it; "
                                  "read-write access to /dev/userfaultfd would do)");
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "userfaultfd is not permitted for this process: one that also "
                              "handles faults raised in kernel mode needs CAP_SYS_PTRACE, sysctl "
                              "vm.unprivileged_userfaultfd = 1 or read-write access to "
                              "/dev/userfaultfd (or a seccomp filter, as in containers, refuses "
                              "the system call)");
    }
    return vmig_error_set(err, code_of_errno(e), "userfaultfd: %s", strerror(e));
}

/* What the kernel offers: UFFDIO_API with no feature requested reports them all. */
static int uffd_supported(bool user_mode_only, uint64_t *features, vmig_error *err)
{
    int fd = uffd_open(user_mode_only, err);
    if (fd < 0)
        return fd;
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    int rc = ioctl(fd, UFFDIO_API, &api);
    int e = errno;
    close(fd);
    if (rc < 0)
        return vmig_error_set(err, code_of_errno(e), "UFFDIO_API: %s", strerror(e));
    *features = api.features;
    return 0;
}

/*
 * The features a kind needs (`need`) and would use when offered (`want`),
 * checked against what the kernel supports. 0 or VMIG_ENOTSUP naming the
 * first missing one.
 */
static int kind_features(enum vmig_tracker_kind kind, uint64_t have, uint64_t *request,
                         vmig_error *err)
{
    if (!(have & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "this kernel has no userfaultfd write-protection "
                              "(UFFD_FEATURE_PAGEFAULT_FLAG_WP: Linux 5.7 or later, "
                              "CONFIG_HAVE_ARCH_USERFAULTFD_WP)");
    uint64_t want = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED |
                    UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
    if (kind == VMIG_TRACKER_WP_ASYNC) {
        if (!(have & UFFD_FEATURE_WP_ASYNC))
            return vmig_error_set(err, VMIG_ENOTSUP,
                                  "this kernel lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7 or later)");
        want |= UFFD_FEATURE_WP_ASYNC;
    }
    *request = want & have;
    return 0;
}

/* PAGEMAP_SCAN is there when an empty scan succeeds. */
static int pagemap_open(vmig_error *err)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return vmig_error_set(err, code_of_errno(e), "/proc/self/pagemap: %s", strerror(e));
    }
    struct pm_scan_arg a = {.size = sizeof(a)};
    if (ioctl(fd, PAGEMAP_SCAN, &a) < 0) {
        int e = errno;
        close(fd);
        if (e == ENOTTY || e == EINVAL)
            return vmig_error_set(err, VMIG_ENOTSUP,
                                  "this kernel lacks the PAGEMAP_SCAN ioctl (Linux 6.7 or later)");
        return vmig_error_set(err, code_of_errno(e), "PAGEMAP_SCAN: %s", strerror(e));
    }
    return fd;
}

/* ---- probe, create, free ---- */

static int probe_kind(enum vmig_tracker_kind kind, vmig_error *err)
{
    uint64_t have = 0, request = 0;
    if (sysconf(_SC_PAGESIZE) != SMALL_PAGE)
        return vmig_error_set(err, VMIG_ENOTSUP, "the dirty tracker needs 4 KiB base pages");
    int rc = uffd_supported(kind == VMIG_TRACKER_WP_ASYNC, &have, err);
    if (rc == 0)
        rc = kind_features(kind, have, &request, err);
    if (rc == 0 && kind == VMIG_TRACKER_WP_ASYNC) {
        int fd = pagemap_open(err);
        if (fd < 0)
            return fd;
        close(fd);
    }
    return rc;
}

/* Run `fn` for async, then sync; a failure of both names both reasons. */
static int either_kind(int (*fn)(enum vmig_tracker_kind, void *, vmig_error *), void *arg,
                       vmig_error *err)
{
    vmig_error ea = {0}, es = {0};
    int rc = fn(VMIG_TRACKER_WP_ASYNC, arg, &ea);
    if (rc == 0)
        return 0;
    rc = fn(VMIG_TRACKER_WP_SYNC, arg, &es);
    if (rc == 0)
        return 0;
    return vmig_error_set(err, rc,
                          "no dirty-page tracker works here: asynchronous: %s; "
                          "synchronous: %s",
                          ea.msg, es.msg);
}

static int probe_cb(enum vmig_tracker_kind kind, void *arg, vmig_error *err)
{
    (void)arg;
    return probe_kind(kind, err);
}

int vmig_tracker_probe(enum vmig_tracker_kind kind, vmig_error *err)
{
    switch (kind) {
    case VMIG_TRACKER_AUTO:
        return either_kind(probe_cb, NULL, err);
    case VMIG_TRACKER_WP_ASYNC:
    case VMIG_TRACKER_WP_SYNC:
        return probe_kind(kind, err);
    }
    return vmig_error_set(err, VMIG_EINVAL, "unknown dirty tracker kind %d", (int)kind);
}

static int create_kind(enum vmig_tracker_kind kind, vmig_tracker **out, vmig_error *err)
{
    if (sysconf(_SC_PAGESIZE) != SMALL_PAGE)
        return vmig_error_set(err, VMIG_ENOTSUP, "the dirty tracker needs 4 KiB base pages");
    uint64_t have = 0, request = 0;
    bool umo = kind == VMIG_TRACKER_WP_ASYNC;
    int rc = uffd_supported(umo, &have, err);
    if (rc < 0)
        return rc;
    rc = kind_features(kind, have, &request, err);
    if (rc < 0)
        return rc;

    vmig_tracker *t = calloc(1, sizeof(*t));
    if (!t)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a dirty tracker");
    t->kind = kind;
    t->uffd = t->pagemap_fd = t->stop_fd = -1;
    pthread_mutex_init(&t->lock, NULL);

    t->uffd = uffd_open(umo, err);
    if (t->uffd < 0) {
        rc = t->uffd;
        goto fail;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = request};
    if (ioctl(t->uffd, UFFDIO_API, &api) < 0) {
        int e = errno;
        rc = vmig_error_set(err, code_of_errno(e), "UFFDIO_API with features 0x%llx: %s",
                            (unsigned long long)request, strerror(e));
        goto fail;
    }
    t->features = request;
    if (kind == VMIG_TRACKER_WP_ASYNC) {
        t->pagemap_fd = pagemap_open(err);
        if (t->pagemap_fd < 0) {
            rc = t->pagemap_fd;
            goto fail;
        }
        t->vec = malloc(SCAN_VEC * sizeof(*t->vec));
        if (!t->vec) {
            rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for the PAGEMAP_SCAN vector");
            goto fail;
        }
    }
    *out = t;
    return 0;
fail:
    vmig_tracker_free(t);
    return rc;
}

static int create_cb(enum vmig_tracker_kind kind, void *arg, vmig_error *err)
{
    return create_kind(kind, arg, err);
}

int vmig_tracker_create(vmig_tracker **out, enum vmig_tracker_kind kind, vmig_error *err)
{
    *out = NULL;
    switch (kind) {
    case VMIG_TRACKER_AUTO:
        return either_kind(create_cb, out, err);
    case VMIG_TRACKER_WP_ASYNC:
    case VMIG_TRACKER_WP_SYNC:
        return create_kind(kind, out, err);
    }
    return vmig_error_set(err, VMIG_EINVAL, "unknown dirty tracker kind %d", (int)kind);
}

void vmig_tracker_free(vmig_tracker *t)
{
    if (!t)
        return;
    vmig_tracker_stop(t); /* closes uffd and stop_fd */
    if (t->pagemap_fd >= 0)
        close(t->pagemap_fd);
    for (uint32_t i = 0; i < t->nregions; i++)
        free(t->regions[i].written);
    free(t->regions);
    free(t->order);
    free(t->vec);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

enum vmig_tracker_kind vmig_tracker_kind_of(const vmig_tracker *t)
{
    return t->kind;
}

const char *vmig_tracker_name(const vmig_tracker *t)
{
    return t ? kind_names[t->kind] : "none";
}

/* ---- regions ---- */

/* (Un)protect [addr, addr + len); mode 0 also wakes the writers waiting there. */
static int uffd_protect(int uffd, uint64_t addr, uint64_t len, bool wp)
{
    struct uffdio_writeprotect w = {
        .range = {.start = addr, .len = len},
        .mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    for (int tries = 0;; tries++) {
        if (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0)
            return 0;
        /* EAGAIN: the address space is changing under a fork or remap
         * event; it settles quickly. */
        if ((errno != EAGAIN && errno != EINTR) || tries == 1000)
            return -errno;
        sched_yield();
    }
}

int vmig_tracker_add(vmig_tracker *t, void *host, uint64_t length, uint32_t page_size,
                     vmig_error *err)
{
    uintptr_t a = (uintptr_t)host;
    if (t->started || t->stopped)
        return vmig_error_set(err, VMIG_ESTATE, "dirty tracker: regions are added before start");
    if (!vmig_is_pow2(page_size) || page_size < SMALL_PAGE || page_size > (1u << 30))
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty tracker: page size %u is not a power of two from 4096 to "
                              "1 GiB",
                              page_size);
    if (!host || a % SMALL_PAGE)
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty tracker: region address %p is not 4096-byte aligned", host);
    if (!length || length % page_size)
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty tracker: region length 0x%llx at %p is not a non-zero "
                              "multiple of its page size %u",
                              (unsigned long long)length, host, page_size);
    if (length > UINTPTR_MAX - a)
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty tracker: region at %p of length 0x%llx wraps around", host,
                              (unsigned long long)length);
    if (t->nregions == INT32_MAX)
        return vmig_error_set(err, VMIG_EINVAL, "dirty tracker: too many regions");
    for (uint32_t i = 0; i < t->nregions; i++) {
        const dirty_region *r = &t->regions[i];
        if ((uintptr_t)r->host < a + length && a < (uintptr_t)r->host + r->length)
            return vmig_error_set(err, VMIG_EEXIST,
                                  "dirty tracker: region [%p, +0x%llx) overlaps region %u "
                                  "[%p, +0x%llx) of this tracker",
                                  host, (unsigned long long)length, i, (void *)r->host,
                                  (unsigned long long)r->length);
    }
    if (t->nregions == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 8;
        dirty_region *n = realloc(t->regions, cap * sizeof(*n));
        if (!n)
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for dirty tracker regions");
        t->regions = n;
        t->cap = cap;
    }
    /* UFFDIO_REGISTER accepts a range with holes as long as one vma is in
     * it (seen on Linux 6.18), and UFFDIO_WRITEPROTECT then fails with ENOENT.
     * msync() walks the vmas only and says ENOMEM at the first gap. */
    if (msync(host, length, MS_ASYNC) < 0 && errno == ENOMEM)
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty tracker: region [%p, +0x%llx) is not entirely mapped", host,
                              (unsigned long long)length);
    dirty_region r = {
        .host = host,
        .length = length,
        .npages = length / page_size,
        .page_size = page_size,
        .shift = (uint32_t)__builtin_ctz(page_size),
    };
    if (t->kind == VMIG_TRACKER_WP_SYNC) {
        uint64_t small = length >> SMALL_SHIFT;
        r.written = calloc((size_t)((small + 63) / 64), sizeof(uint64_t));
        if (!r.written)
            return vmig_error_set(err, VMIG_ENOMEM,
                                  "out of memory for the dirty bitmap of a region of 0x%llx bytes",
                                  (unsigned long long)length);
    }

    struct uffdio_register reg = {
        .range = {.start = a, .len = length},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(t->uffd, UFFDIO_REGISTER, &reg) < 0) {
        int e = errno;
        free(r.written);
        switch (e) {
        case EBUSY:
            return vmig_error_set(err, VMIG_EEXIST,
                                  "dirty tracker: region [%p, +0x%llx) is already registered with "
                                  "another userfaultfd (another dirty tracker, or one of the "
                                  "application's): a region can be tracked by one tracker only",
                                  host, (unsigned long long)length);
        case ENOMEM:
            return vmig_error_set(err, VMIG_EINVAL,
                                  "dirty tracker: region [%p, +0x%llx) is not entirely mapped",
                                  host, (unsigned long long)length);
        case EINVAL:
        case EPERM:
            return vmig_error_set(
                err, VMIG_ENOTSUP,
                "dirty tracker: the kernel cannot write-protect region [%p, +0x%llx) (%s): "
                "supported are anonymous private and shared memory and writable shmem/memfd "
                "mappings%s",
                host, (unsigned long long)length, strerror(e),
                (t->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
                    ? ""
                    : "; shared ones need UFFD_FEATURE_WP_HUGETLBFS_SHMEM (Linux 5.19 or "
                      "later), which this kernel lacks");
        default:
            return vmig_error_set(err, code_of_errno(e),
                                  "dirty tracker: UFFDIO_REGISTER of [%p, +0x%llx): %s", host,
                                  (unsigned long long)length, strerror(e));
        }
    }
    if (!(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT))) {
        struct uffdio_range rg = {.start = a, .len = length};
        ioctl(t->uffd, UFFDIO_UNREGISTER, &rg);
        free(r.written);
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "dirty tracker: the kernel offers no UFFDIO_WRITEPROTECT on region "
                              "[%p, +0x%llx)",
                              host, (unsigned long long)length);
    }
    t->regions[t->nregions] = r;
    return (int)t->nregions++;
}

/* ---- the WP_SYNC fault handler ---- */

/* The region holding addr, or NULL; `order` is sorted by address. */
static dirty_region *region_of(vmig_tracker *t, uint64_t addr)
{
    uint32_t lo = 0, hi = t->nregions;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        dirty_region *r = &t->regions[t->order[mid]];
        if (addr < (uintptr_t)r->host)
            hi = mid;
        else if (addr - (uintptr_t)r->host >= r->length)
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

/* Record the handler's first error (`e`: an errno or 0); the next sync
 * returns it. */
static void handler_fail(vmig_tracker *t, int e, const char *fmt, ...) VMIG_PRINTF(3, 4);
static void handler_fail(vmig_tracker *t, int e, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&t->lock);
    vmig_error_set(&t->handler_err, VMIG_EIO, "dirty tracker handler: %s%s%s", what, e ? ": " : "",
                   e ? strerror(e) : "");
    pthread_mutex_unlock(&t->lock);
}

static void handle_msg(vmig_tracker *t, const struct uffd_msg *m)
{
    if (m->event != UFFD_EVENT_PAGEFAULT) { /* no event feature is enabled */
        handler_fail(t, 0, "unexpected userfaultfd event 0x%x", m->event);
        return;
    }
    uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(SMALL_PAGE - 1);
    if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
        /* Cannot happen: no region is registered for missing faults. */
        handler_fail(t, 0, "missing-page fault (not a write-protect fault) at 0x%llx",
                     (unsigned long long)addr);
        return;
    }
    pthread_mutex_lock(&t->lock);
    dirty_region *r = region_of(t, addr);
    if (r) {
        uint64_t p = (addr - (uintptr_t)r->host) >> SMALL_SHIFT;
        r->written[p / 64] |= 1ull << (p % 64);
    }
    /* Counted before the wake, so a writer that resumes sees its fault in
     * vmig_tracker_stats(). */
    __atomic_fetch_add(&t->faults, 1, __ATOMIC_RELAXED);
    /* Un-protect and wake the writer, still under the lock (see the top). */
    int rc = uffd_protect(t->uffd, addr, SMALL_PAGE, false);
    pthread_mutex_unlock(&t->lock);
    if (!r)
        handler_fail(t, 0, "write fault outside every region at 0x%llx", (unsigned long long)addr);
    if (rc < 0)
        handler_fail(t, -rc, "cannot un-protect the page at 0x%llx", (unsigned long long)addr);
}

static void *handler_main(void *arg)
{
    vmig_tracker *t = arg;
    struct uffd_msg msgs[MSG_BATCH];
    struct pollfd fds[2] = {{.fd = t->uffd, .events = POLLIN},
                            {.fd = t->stop_fd, .events = POLLIN}};
    for (;;) {
        ssize_t n = read(t->uffd, msgs, sizeof(msgs));
        if (n > 0) {
            for (size_t k = 0; k < (size_t)n / sizeof(msgs[0]); k++)
                handle_msg(t, &msgs[k]);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            handler_fail(t, errno, "reading the userfaultfd");
            return NULL; /* stop() still wakes every writer */
        }
        /* Queue empty: wait for a fault or for stop(). A fault that
         * arrives together with the stop request is left to stop(), whose
         * un-protection wakes its writer. */
        if (poll(fds, 2, -1) < 0 && errno != EINTR) {
            handler_fail(t, errno, "poll on the userfaultfd");
            return NULL;
        }
        if (fds[1].revents)
            return NULL;
    }
}

static int cmp_region(const void *a, const void *b, void *arg)
{
    const dirty_region *rs = arg;
    uintptr_t x = (uintptr_t)rs[*(const uint32_t *)a].host;
    uintptr_t y = (uintptr_t)rs[*(const uint32_t *)b].host;
    return x < y ? -1 : x > y;
}

/* ---- start, sync, stop ---- */

/* Without WP_UNPOPULATED the kernel leaves empty anonymous ptes without a
 * marker: a first write there would be an ordinary, unseen fault. Mapping
 * the zero page (read faults) gives those ptes something to protect. */
static void populate_read(const dirty_region *r)
{
    if (madvise(r->host, r->length, MADV_POPULATE_READ) == 0)
        return;
    for (uint64_t off = 0; off < r->length; off += SMALL_PAGE) /* before Linux 5.14 */
        (void)*(volatile const uint8_t *)(r->host + off);
}

int vmig_tracker_start(vmig_tracker *t, vmig_error *err)
{
    if (t->started || t->stopped)
        return vmig_error_set(err, VMIG_ESTATE, "dirty tracker: already %s",
                              t->stopped ? "stopped" : "started");
    if (t->kind == VMIG_TRACKER_WP_SYNC) {
        t->order = malloc((t->nregions ? t->nregions : 1) * sizeof(*t->order));
        if (!t->order) {
            vmig_tracker_stop(t);
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for the dirty tracker");
        }
        for (uint32_t i = 0; i < t->nregions; i++)
            t->order[i] = i;
        qsort_r(t->order, t->nregions, sizeof(*t->order), cmp_region, t->regions);
        t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (t->stop_fd < 0) {
            int e = errno;
            vmig_tracker_stop(t);
            return vmig_error_set(err, code_of_errno(e), "dirty tracker: eventfd: %s", strerror(e));
        }
        int rc = vmig_thread_start(&t->thread, "vmig-wp", handler_main, t);
        if (rc) {
            vmig_tracker_stop(t);
            return vmig_error_set(err, VMIG_ENOMEM, "dirty tracker: cannot start its thread: %s",
                                  strerror(rc));
        }
        t->thread_running = true;
        if (!(t->features & UFFD_FEATURE_WP_UNPOPULATED))
            for (uint32_t i = 0; i < t->nregions; i++)
                populate_read(&t->regions[i]);
    }
    t->started = true; /* from here on stop() undoes whatever was done */
    for (uint32_t i = 0; i < t->nregions; i++) {
        dirty_region *r = &t->regions[i];
        int rc = uffd_protect(t->uffd, (uintptr_t)r->host, r->length, true);
        if (rc < 0) {
            vmig_tracker_stop(t);
            return vmig_error_set(err, code_of_errno(-rc),
                                  "dirty tracker: cannot write-protect region %u [%p, +0x%llx): %s",
                                  i, (void *)r->host, (unsigned long long)r->length, strerror(-rc));
        }
    }
    return 0;
}

/* Set bits first..last of bm; returns how many were clear. */
static uint64_t bits_set_range(uint64_t *bm, uint64_t first, uint64_t last)
{
    uint64_t fresh = 0;
    uint64_t w = first / 64, lw = last / 64;
    for (; w <= lw; w++) {
        uint64_t mask = ~0ull;
        if (w == first / 64)
            mask &= ~0ull << (first % 64);
        if (w == lw)
            mask &= ~0ull >> (63 - last % 64);
        fresh += (uint64_t)__builtin_popcountll(mask & ~bm[w]);
        bm[w] |= mask;
    }
    return fresh;
}

static int sync_async(vmig_tracker *t, const dirty_region *r, uint64_t *bitmap, uint64_t *fresh,
                      vmig_error *err)
{
    uint64_t base = (uintptr_t)r->host, end = base + r->length;
    struct pm_scan_arg a = {
        .size = sizeof(a),
        .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        .end = end,
        .vec = (uintptr_t)t->vec,
        .vec_len = SCAN_VEC,
        .category_mask = PAGE_IS_WRITTEN,
        .return_mask = PAGE_IS_WRITTEN,
    };
    for (uint64_t start = base; start < end;) {
        a.start = start;
        a.walk_end = 0;
        int n = ioctl(t->pagemap_fd, PAGEMAP_SCAN, &a);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            return vmig_error_set(err, VMIG_EIO,
                                  "dirty tracker: PAGEMAP_SCAN of [0x%llx, 0x%llx): %s%s",
                                  (unsigned long long)start, (unsigned long long)end, strerror(e),
                                  e == EPERM ? " (part of the range is no longer registered: "
                                               "unmapped or remapped?)"
                                             : "");
        }
        for (int k = 0; k < n; k++) {
            const struct page_region *pr = &t->vec[k];
            *fresh += bits_set_range(bitmap, (pr->start - base) >> r->shift,
                                     (pr->end - 1 - base) >> r->shift);
        }
        if (a.walk_end <= start || a.walk_end > end)
            return vmig_error_set(err, VMIG_EIO,
                                  "dirty tracker: PAGEMAP_SCAN from 0x%llx ended at 0x%llx",
                                  (unsigned long long)start, (unsigned long long)a.walk_end);
        start = a.walk_end;
    }
    return 0;
}

/*
 * Re-protecting costs about 1.5 us per UFFDIO_WRITEPROTECT (most of it the
 * TLB flush) against some 60 ns per page walked: runs of written pages
 * closer than this many pages are re-protected by one call that also
 * covers the gap. The pages in the gap have no bit, so they are
 * protected already (the handler sets the bit before it un-protects),
 * and protecting them again changes nothing.
 */
#define REPROTECT_GAP 32

typedef struct sync_walk {
    uint64_t run, run_end; /* the current run of written 4 KiB pages */
    uint64_t wp, wp_end;   /* the range to re-protect, runs joined across small gaps */
    uint64_t fresh;
    int rc;
} sync_walk;

static void walk_protect(vmig_tracker *t, dirty_region *r, sync_walk *s, vmig_error *err)
{
    uint64_t addr = (uintptr_t)r->host + (s->wp << SMALL_SHIFT);
    uint64_t len = (s->wp_end - s->wp) << SMALL_SHIFT;
    int e = uffd_protect(t->uffd, addr, len, true);
    if (e < 0 && s->rc == 0) /* go on: re-protect what can be */
        s->rc =
            vmig_error_set(err, VMIG_EIO, "dirty tracker: cannot re-protect [0x%llx, +0x%llx): %s",
                           (unsigned long long)addr, (unsigned long long)len, strerror(-e));
}

/* The run [run, run_end) is complete: report it, and queue its re-protection. */
static void walk_run(vmig_tracker *t, dirty_region *r, sync_walk *s, uint64_t *bitmap,
                     vmig_error *err)
{
    uint32_t sub = r->shift - SMALL_SHIFT; /* log2(4 KiB pages per block page) */
    s->fresh += bits_set_range(bitmap, s->run >> sub, (s->run_end - 1) >> sub);
    if (s->wp_end > s->wp && s->run - s->wp_end < REPROTECT_GAP) {
        s->wp_end = s->run_end;
        return;
    }
    if (s->wp_end > s->wp)
        walk_protect(t, r, s, err);
    s->wp = s->run;
    s->wp_end = s->run_end;
}

/* Under t->lock: report and clear r->written, and re-protect those pages. */
static int sync_sync(vmig_tracker *t, dirty_region *r, uint64_t *bitmap, uint64_t *fresh,
                     vmig_error *err)
{
    uint64_t words = ((r->length >> SMALL_SHIFT) + 63) / 64;
    sync_walk s = {0}; /* all ranges empty */
    for (uint64_t w = 0; w < words; w++) {
        uint64_t bits = r->written[w];
        if (!bits)
            continue;
        r->written[w] = 0;
        while (bits) {
            uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (p == s.run_end && s.run_end > s.run) {
                s.run_end++;
                continue;
            }
            if (s.run_end > s.run)
                walk_run(t, r, &s, bitmap, err);
            s.run = p;
            s.run_end = p + 1;
        }
    }
    if (s.run_end > s.run)
        walk_run(t, r, &s, bitmap, err);
    if (s.wp_end > s.wp)
        walk_protect(t, r, &s, err);
    *fresh += s.fresh;
    return s.rc;
}

int vmig_tracker_sync(vmig_tracker *t, uint32_t i, uint64_t *bitmap, uint64_t *ndirty,
                      vmig_error *err)
{
    uint64_t fresh = 0;
    if (ndirty)
        *ndirty = 0;
    if (!t->started || t->stopped)
        return vmig_error_set(err, VMIG_ESTATE, "dirty tracker: sync while %s",
                              t->stopped ? "stopped" : "not started");
    if (i >= t->nregions)
        return vmig_error_set(err, VMIG_EINVAL, "dirty tracker: no region %u (%u registered)", i,
                              t->nregions);
    uint64_t t0 = vmig_now_ns();
    dirty_region *r = &t->regions[i];
    int rc;
    if (t->kind == VMIG_TRACKER_WP_ASYNC) {
        rc = sync_async(t, r, bitmap, &fresh, err);
    } else {
        pthread_mutex_lock(&t->lock);
        rc = vmig_error_copy(err, &t->handler_err);
        if (rc == 0)
            rc = sync_sync(t, r, bitmap, &fresh, err);
        pthread_mutex_unlock(&t->lock);
    }
    if (ndirty)
        *ndirty = fresh;
    __atomic_fetch_add(&t->sync_ns, vmig_now_ns() - t0, __ATOMIC_RELAXED);
    return rc;
}

void vmig_tracker_stop(vmig_tracker *t)
{
    if (!t || t->stopped)
        return;
    t->stopped = true;
    if (t->thread_running) {
        uint64_t one = 1;
        ssize_t n = write(t->stop_fd, &one, sizeof(one));
        (void)n; /* an eventfd counter cannot overflow from one write */
        pthread_join(t->thread, NULL);
        t->thread_running = false;
    }
    if (t->uffd < 0)
        return;
    for (uint32_t i = 0; i < t->nregions; i++) {
        dirty_region *r = &t->regions[i];
        struct uffdio_range rg = {.start = (uintptr_t)r->host, .len = r->length};
        /* Unregistering clears the protection and wakes every waiting
         * writer since Linux 6.1 (commit f369b07c8614); WP_ASYNC needs 6.7.
         * WP_SYNC may run on older kernels: un-protect first (which wakes
         * the writers whose fault was never handled). Failures (region
         * unmapped meanwhile) leave nothing to undo. */
        if (t->started && t->kind == VMIG_TRACKER_WP_SYNC)
            uffd_protect(t->uffd, rg.start, rg.len, false);
        ioctl(t->uffd, UFFDIO_UNREGISTER, &rg);
    }
    close(t->uffd);
    t->uffd = -1;
    if (t->stop_fd >= 0) {
        close(t->stop_fd);
        t->stop_fd = -1;
    }
}

void vmig_tracker_stats(const vmig_tracker *t, uint64_t *faults, uint64_t *sync_ns)
{
    if (faults)
        *faults = __atomic_load_n(&t->faults, __ATOMIC_RELAXED);
    if (sync_ns)
        *sync_ns = __atomic_load_n(&t->sync_ns, __ATOMIC_RELAXED);
}

/*
 * DSA work queue discovery and portals (dsa_portal.h).
 *
 * Discovery takes each wq<dev>.<queue> entry under the sysfs root that is a
 * directory (in sysfs, a link to one) and not a queue of an IAA device, and
 * reads its attributes with one open and one read each, as the kernel
 * prints them: a word or a decimal number and a newline. Why a queue cannot
 * be used is worked out once, in probe_wq(), as a phrase that follows "is"
 * ("disabled", "not a user queue (type 'kernel')"), so that the listing and
 * the errors of vmig_dsa_wq_find() say the same thing. The first reason in
 * the order state, type, mode, size is the one given.
 *
 * Sources: the attribute names and values are those of the kernel's idxd
 * driver (drivers/dma/idxd/sysfs.c: mode "dedicated"/"shared", state
 * "disabled"/"enabled"/"locked"/"unknown", type "none"/"kernel"/"user",
 * numbers "%u\n"/"%llu\n"); the device node name is cdev.c's
 * "<dsa|iax>/wq<dev>.<queue>", and its mmap() takes one page at offset 0
 * (the limited portal). IAA devices (iax<N>) share the dsa bus and the
 * device numbering (one ida in init.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsa_portal.h"

#if VMIG_HAVE_IDXD_H

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define PORTAL_SIZE 4096u
#define DEV_DSA     "/dev/dsa/"
#define WHY_MAX     160

/* ---- names and numbers ---- */

/* A decimal number as the kernel prints one: digits only, no leading zero,
 * at most max. Advances *s past the digits. */
static bool parse_decimal(const char **s, uint64_t max, uint64_t *out)
{
    const char *p = *s;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *s = p;
    *out = v;
    return true;
}

/* "wq<dev>.<queue>", nothing more; both numbers fit an int (the kernel's). */
static bool parse_wq_name(const char *name, uint32_t *dev, uint32_t *queue)
{
    const char *p = name;
    uint64_t d, q;
    if (strncmp(p, "wq", 2) != 0)
        return false;
    p += 2;
    if (!parse_decimal(&p, INT32_MAX, &d) || *p++ != '.' || !parse_decimal(&p, INT32_MAX, &q) || *p)
        return false;
    *dev = (uint32_t)d;
    *queue = (uint32_t)q;
    return true;
}

/* An attribute's text for a message: at most 24 printable bytes. */
static const char *printable(const char *s, char *buf, size_t size)
{
    size_t i = 0;
    for (; s[i] && i < 24 && i + 4 < size; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = 0;
    return buf;
}

/* ---- attributes ---- */

/* A directory whose attributes are read; fd < 0: every read fails with err. */
struct attr_dir {
    int fd;
    int err;
};

static void attr_dir_open(struct attr_dir *d, int atfd, const char *name)
{
    d->fd = openat(atfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    d->err = d->fd < 0 ? errno : 0;
}

static void attr_dir_close(struct attr_dir *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
}

/* Read attribute `attr` into buf (NUL-terminated, the trailing newline
 * removed). 0, or the errno value: ENOENT when it is absent. */
static int read_attr(const struct attr_dir *d, const char *attr, char *buf, size_t size)
{
    buf[0] = 0;
    if (d->fd < 0)
        return d->err;
    int fd = openat(d->fd, attr, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t r;
    do
        r = read(fd, buf, size - 1);
    while (r < 0 && errno == EINTR);
    int e = r < 0 ? errno : 0;
    close(fd);
    if (e)
        return e;
    buf[r] = 0;
    if (r > 0 && buf[r - 1] == '\n')
        buf[r - 1] = 0;
    return 0;
}

#define ATTR_MALFORMED (-1)

/* A numeric attribute: 0 and *v, an errno value, or ATTR_MALFORMED (text
 * holds what was read). */
static int number_attr(const struct attr_dir *d, const char *attr, uint64_t max, uint64_t *v,
                       char *text, size_t size)
{
    *v = 0;
    int e = read_attr(d, attr, text, size);
    if (e)
        return e;
    const char *p = text;
    uint64_t x;
    if (!parse_decimal(&p, max, &x) || *p)
        return ATTR_MALFORMED;
    *v = x;
    return 0;
}

/* A limit of the queue; absent (kernels before 5.10), the device's. */
static uint64_t limit_attr(const struct attr_dir *wq, const struct attr_dir *dev, const char *attr,
                           uint64_t max)
{
    char text[64];
    uint64_t v;
    int e = number_attr(wq, attr, max, &v, text, sizeof(text));
    if (e == ENOENT)
        e = number_attr(dev, attr, max, &v, text, sizeof(text));
    return e == 0 ? v : 0;
}

/* ---- one queue ---- */

struct wq_probe {
    vmig_dsa_wq_info info;
    uint32_t queue;
    char why[WHY_MAX]; /* "": usable; else why not, to follow "is" */
};

static void VMIG_PRINTF(2, 3) set_why(struct wq_probe *p, const char *fmt, ...)
{
    if (p->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof(p->why), fmt, ap);
    va_end(ap);
}

/* The reason for an attribute that could not be read (errno e). */
static void why_unreadable(struct wq_probe *p, const char *attr, int e)
{
    if (e == ENOENT)
        set_why(p, "unusable (no %s attribute)", attr);
    else
        set_why(p, "unusable (%s: %s)", attr, strerror(e));
}

/* A word attribute; false (and the reason, if it is the first) when it
 * cannot be read. */
static bool text_attr(struct wq_probe *p, const struct attr_dir *d, const char *attr, char *buf,
                      size_t size)
{
    int e = read_attr(d, attr, buf, size);
    if (e)
        why_unreadable(p, attr, e);
    return e == 0;
}

static void probe_wq(int rootfd, const char *name, uint32_t dev, uint32_t queue, struct wq_probe *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->info.name, sizeof(p->info.name), "%s", name);
    snprintf(p->info.dev_path, sizeof(p->info.dev_path), DEV_DSA "%s", name);
    p->info.device = (int)dev;
    p->queue = queue;

    struct attr_dir wd, dd;
    char devname[32], text[64], shown[32];
    snprintf(devname, sizeof(devname), "dsa%u", dev);
    attr_dir_open(&wd, rootfd, name);
    attr_dir_open(&dd, rootfd, devname);

    bool state_on = false, mode_known = false;
    if (text_attr(p, &wd, "state", text, sizeof(text))) {
        state_on = strcmp(text, "enabled") == 0;
        if (strcmp(text, "disabled") == 0)
            set_why(p, "disabled");
        else if (!state_on)
            set_why(p, "not enabled (state '%s')", printable(text, shown, sizeof(shown)));
    }
    if (text_attr(p, &wd, "type", text, sizeof(text))) {
        p->info.user = strcmp(text, "user") == 0;
        if (!p->info.user)
            set_why(p, "not a user queue (type '%s')", printable(text, shown, sizeof(shown)));
    }
    if (text_attr(p, &wd, "mode", text, sizeof(text))) {
        p->info.dedicated = strcmp(text, "dedicated") == 0;
        mode_known = p->info.dedicated || strcmp(text, "shared") == 0;
        if (!mode_known)
            set_why(p, "unusable (mode '%s' is neither dedicated nor shared)",
                    printable(text, shown, sizeof(shown)));
    }
    p->info.enabled = state_on && mode_known;

    uint64_t size;
    int e = number_attr(&wd, "size", UINT32_MAX, &size, text, sizeof(text));
    if (e == ATTR_MALFORMED)
        set_why(p, "unusable (bad size '%s')", printable(text, shown, sizeof(shown)));
    else if (e)
        why_unreadable(p, "size", e);
    else if (size == 0)
        set_why(p, "unusable (size 0)");
    p->info.size = (uint32_t)size;
    p->info.max_batch = (uint32_t)limit_attr(&wd, &dd, "max_batch_size", UINT32_MAX);
    p->info.max_xfer = limit_attr(&wd, &dd, "max_transfer_size", UINT64_MAX);
    attr_dir_close(&wd);
    attr_dir_close(&dd);
}

static bool is_dir_at(int atfd, const char *name)
{
    struct stat st;
    return fstatat(atfd, name, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

static bool is_iaa_device(int rootfd, uint32_t dev)
{
    char name[32];
    snprintf(name, sizeof(name), "iax%u", dev);
    return is_dir_at(rootfd, name);
}

/* ---- every queue ---- */

struct wq_list {
    struct wq_probe *q;
    uint32_t n;
    bool root_absent;
};

static int cmp_probe(const void *a, const void *b)
{
    const struct wq_probe *x = a, *y = b;
    if (x->info.device != y->info.device)
        return x->info.device < y->info.device ? -1 : 1;
    return x->queue < y->queue ? -1 : x->queue > y->queue;
}

static int list_wqs(const char *root, struct wq_list *l, vmig_error *err)
{
    memset(l, 0, sizeof(*l));
    DIR *dir = opendir(root);
    if (!dir) {
        if (errno == ENOENT) {
            l->root_absent = true;
            return 0;
        }
        return vmig_error_set(err, VMIG_EIO, "cannot list DSA devices in %s: %s", root,
                              strerror(errno));
    }
    int rootfd = dirfd(dir), rc = 0;
    uint32_t cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            if (errno)
                rc = vmig_error_set(err, VMIG_EIO, "cannot list DSA devices in %s: %s", root,
                                    strerror(errno));
            break;
        }
        uint32_t dev, queue;
        if (!parse_wq_name(de->d_name, &dev, &queue) || !is_dir_at(rootfd, de->d_name) ||
            is_iaa_device(rootfd, dev))
            continue;
        if (l->n == cap) {
            uint32_t ncap = cap ? 2 * cap : 16;
            struct wq_probe *q = realloc(l->q, ncap * sizeof(*q));
            if (!q) {
                rc = vmig_error_set(err, VMIG_ENOMEM, "cannot list DSA work queues: out of memory");
                break;
            }
            l->q = q;
            cap = ncap;
        }
        probe_wq(rootfd, de->d_name, dev, queue, &l->q[l->n++]);
    }
    closedir(dir);
    if (rc) {
        free(l->q);
        l->q = NULL;
        l->n = 0;
        return rc;
    }
    if (l->n > 1)
        qsort(l->q, l->n, sizeof(*l->q), cmp_probe);
    return 0;
}

int vmig_dsa_wq_discover(const char *sysfs_root, vmig_dsa_wq_info *out, uint32_t max, uint32_t *n,
                         vmig_error *err)
{
    if (!n || (max && !out))
        return vmig_error_set(err, VMIG_EINVAL, "vmig_dsa_wq_discover: no output array or count");
    *n = 0;
    struct wq_list l;
    int rc = list_wqs(sysfs_root ? sysfs_root : VMIG_DSA_SYSFS_ROOT, &l, err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < l.n && i < max; i++)
        out[i] = l.q[i].info;
    *n = l.n;
    free(l.q);
    return 0;
}

/* ---- choosing one ---- */

static int find_named(const char *root, const char *path, vmig_dsa_wq_info *out, vmig_error *err)
{
    const char *name = strncmp(path, DEV_DSA, strlen(DEV_DSA)) == 0 ? path + strlen(DEV_DSA) : path;
    uint32_t dev, queue;
    if (!parse_wq_name(name, &dev, &queue))
        return vmig_error_set(
            err, VMIG_EINVAL,
            "'%s' does not name a DSA work queue (expected " DEV_DSA "wqX.Y or wqX.Y)", path);
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0 && errno != ENOENT)
        return vmig_error_set(err, VMIG_EIO, "cannot read %s: %s", root, strerror(errno));
    struct stat st;
    int rc = 0;
    if (rootfd < 0 || fstatat(rootfd, name, &st, 0) != 0) {
        int e = rootfd < 0 ? ENOENT : errno;
        if (e == ENOENT)
            rc = vmig_error_set(err, VMIG_ENOENT, "no DSA work queue %s (%s/%s absent)", name, root,
                                name);
        else
            rc = vmig_error_set(err, VMIG_EIO, "cannot look up %s/%s: %s", root, name, strerror(e));
    } else if (!S_ISDIR(st.st_mode)) {
        rc = vmig_error_set(err, VMIG_ENOENT, "no DSA work queue %s (%s/%s is not a directory)",
                            name, root, name);
    } else if (is_iaa_device(rootfd, dev)) {
        rc =
            vmig_error_set(err, VMIG_ENOTSUP,
                           "%s is a queue of the IAA device iax%u, not of a DSA device", name, dev);
    } else {
        struct wq_probe p;
        probe_wq(rootfd, name, dev, queue, &p);
        if (p.why[0])
            rc = vmig_error_set(err, VMIG_ENOTSUP, "DSA work queue %s is %s", name, p.why);
        else
            *out = p.info;
    }
    if (rootfd >= 0)
        close(rootfd);
    return rc;
}

/* "no usable DSA work queue (3 found: wq0.0 disabled, ...)", cut with
 * ", ..." to fit a message. */
static int explain_none(const char *root, const struct wq_list *l, vmig_error *err)
{
    if (l->root_absent)
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "no usable DSA work queue (%s absent: no idxd driver or no DSA "
                              "device)",
                              root);
    if (l->n == 0)
        return vmig_error_set(err, VMIG_ENOTSUP, "no usable DSA work queue (none under %s)", root);
    static const char more[] = ", ...";
    char list[400];
    size_t len = 0;
    list[0] = 0;
    for (uint32_t i = 0; i < l->n; i++) {
        char item[WHY_MAX + 48];
        int k =
            snprintf(item, sizeof(item), "%s%s %s", i ? ", " : "", l->q[i].info.name, l->q[i].why);
        if (len + (size_t)k + sizeof(more) > sizeof(list)) {
            memcpy(list + len, more, sizeof(more));
            break;
        }
        memcpy(list + len, item, (size_t)k + 1);
        len += (size_t)k;
    }
    return vmig_error_set(err, VMIG_ENOTSUP, "no usable DSA work queue (%u found: %s)", l->n, list);
}

int vmig_dsa_wq_find(const char *sysfs_root, const char *path, vmig_dsa_wq_info *out,
                     vmig_error *err)
{
    if (!out)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_dsa_wq_find: no output pointer");
    memset(out, 0, sizeof(*out));
    const char *root = sysfs_root ? sysfs_root : VMIG_DSA_SYSFS_ROOT;
    if (path)
        return find_named(root, path, out, err);
    struct wq_list l;
    int rc = list_wqs(root, &l, err);
    if (rc)
        return rc;
    const struct wq_probe *pick = NULL;
    for (uint32_t i = 0; i < l.n; i++) {
        const struct wq_probe *p = &l.q[i];
        if (p->why[0] || (pick && !p->info.dedicated))
            continue;
        pick = p;
        if (p->info.dedicated)
            break;
    }
    if (pick)
        *out = pick->info;
    else
        rc = explain_none(root, &l, err);
    free(l.q);
    return rc;
}

/* ---- the CPU ---- */

#if defined(__x86_64__)

#define CPUID7_ECX_MOVDIR64B (1u << 28)
#define CPUID7_ECX_ENQCMD    (1u << 29)

static unsigned cpuid7_ecx(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return c;
}

bool vmig_cpu_has_movdir64b(void)
{
    return (cpuid7_ecx() & CPUID7_ECX_MOVDIR64B) != 0;
}

bool vmig_cpu_has_enqcmd(void)
{
    return (cpuid7_ecx() & CPUID7_ECX_ENQCMD) != 0;
}

#else

bool vmig_cpu_has_movdir64b(void)
{
    return false;
}

bool vmig_cpu_has_enqcmd(void)
{
    return false;
}

#endif

/* ---- portals ---- */

struct vmig_dsa_portal {
    void *portal; /* PORTAL_SIZE bytes, write-only */
    int fd;
    bool dedicated;
    uint32_t size, max_batch;
};

#if defined(__x86_64__)

static int open_error(const vmig_dsa_wq_info *wq, int e, vmig_error *err)
{
    switch (e) {
    case ENOENT:
        return vmig_error_set(err, VMIG_ENOENT,
                              "cannot open %s: no such device node (is %s enabled as a user "
                              "queue?)",
                              wq->dev_path, wq->name);
    case EACCES:
    case EPERM:
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "cannot open %s: %s (its owner must grant this user read and "
                              "write access)",
                              wq->dev_path, strerror(e));
    case EBUSY:
        return vmig_error_set(err, VMIG_EAGAIN,
                              "cannot open %s: the dedicated queue %s is already open (it takes "
                              "one client at a time)",
                              wq->dev_path, wq->name);
    default:
        return vmig_error_set(err, VMIG_EIO, "cannot open %s: %s", wq->dev_path, strerror(e));
    }
}

#endif

int vmig_dsa_portal_open(const vmig_dsa_wq_info *wq, vmig_dsa_portal **out, vmig_error *err)
{
    if (!out)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_dsa_portal_open: no output pointer");
    *out = NULL;
    if (!wq || !wq->dev_path[0])
        return vmig_error_set(err, VMIG_EINVAL, "vmig_dsa_portal_open: no work queue");
#if defined(__x86_64__)
    if (wq->dedicated && !vmig_cpu_has_movdir64b())
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "DSA work queue %s is dedicated and takes MOVDIR64B, which this "
                              "CPU lacks (CPUID.(EAX=7,ECX=0):ECX bit 28)",
                              wq->name);
    if (!wq->dedicated && !vmig_cpu_has_enqcmd())
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "DSA work queue %s is shared and takes ENQCMD, which this CPU "
                              "lacks (CPUID.(EAX=7,ECX=0):ECX bit 29)",
                              wq->name);
    int fd = open(wq->dev_path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return open_error(wq, errno, err);
    void *m = mmap(NULL, PORTAL_SIZE, PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        close(fd);
        return vmig_error_set(err, VMIG_EIO, "cannot map the portal of %s: %s", wq->dev_path,
                              strerror(e));
    }
    vmig_dsa_portal *p = calloc(1, sizeof(*p));
    if (!p) {
        munmap(m, PORTAL_SIZE);
        close(fd);
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the portal of %s", wq->dev_path);
    }
    p->portal = m;
    p->fd = fd;
    p->dedicated = wq->dedicated;
    p->size = wq->size;
    p->max_batch = wq->max_batch;
    *out = p;
    return 0;
#else
    return vmig_error_set(err, VMIG_ENOTSUP,
                          "DSA work queue %s: DSA portals are not built for this CPU (x86-64 "
                          "only)",
                          wq->name);
#endif
}

void vmig_dsa_portal_free(vmig_dsa_portal *p)
{
    if (!p)
        return;
    munmap(p->portal, PORTAL_SIZE);
    close(p->fd);
    free(p);
}

/* The 64 bytes the instructions move, as one operand the compiler sees. */
struct desc_bytes {
    uint8_t b[64];
};

int vmig_dsa_portal_submit(vmig_dsa_portal *p, const struct dsa_hw_desc *d)
{
#if defined(__x86_64__)
    struct desc_bytes *dst = p->portal;
    const struct desc_bytes *src = (const void *)d;
    /* Neither instruction is ordered after older stores to write-back
     * memory (the SDM, MOVDIR64B and ENQCMD): the fence makes the
     * descriptor, its list, its cleared records and the buffers visible to
     * the device before it can read them. The "memory" clobber keeps the
     * compiler from moving those stores past it. */
    __asm__ __volatile__("sfence" ::: "memory");
    if (p->dedicated) {
        /* movdir64b (%rdx), %rax: 66 0F 38 F8 /r, ModRM 02 (reg rax =
         * destination, r/m [rdx] = source). Bytes rather than the mnemonic,
         * for assemblers older than binutils 2.31. */
        __asm__ __volatile__(".byte 0x66, 0x0f, 0x38, 0xf8, 0x02"
                             : "+m"(*dst)
                             : "m"(*src), "a"(dst), "d"(src)
                             : "memory");
        return 0;
    }
    /* enqcmd (%rdx), %rax: F2 0F 38 F8 /r, same operands; ZF = 1 when the
     * device answered "retry" (nothing was queued). */
    uint8_t retry;
    __asm__ __volatile__(".byte 0xf2, 0x0f, 0x38, 0xf8, 0x02\n\tsetz %0"
                         : "=qm"(retry), "+m"(*dst)
                         : "m"(*src), "a"(dst), "d"(src)
                         : "cc", "memory");
    return retry ? VMIG_EAGAIN : 0;
#else
    (void)p;
    (void)d;
    return VMIG_ENOTSUP;
#endif
}

bool vmig_dsa_portal_dedicated(const vmig_dsa_portal *p)
{
    return p->dedicated;
}

uint32_t vmig_dsa_portal_size(const vmig_dsa_portal *p)
{
    return p->size;
}

uint32_t vmig_dsa_portal_max_batch(const vmig_dsa_portal *p)
{
    return p->max_batch;
}

#endif /* VMIG_HAVE_IDXD_H */

/*
 * The dsa and dsa-model backends. Both build the same batches (idxd.h) and
 * read the same completion records; they differ only in where the head
 * descriptor goes: a work queue's portal (dsa_portal.h: MOVDIR64B or
 * ENQCMD) or the model's submission ring (dsa_model.h).
 *
 * Queues: accel-path lists one or more; channel i uses queue i % n.
 * A dedicated queue cannot refuse a descriptor, so the submitters keep its
 * occupancy themselves (one credit per outstanding head descriptor, back
 * when its record is written) and treat "no credit" as the full queue a
 * shared queue reports through ENQCMD.
 */
#include <stdio.h>
#include <stdlib.h>

#include "accel.h"
#include "dsa_model.h"
#include "dsa_portal.h"

#if VMIG_HAVE_IDXD_H

#define DSA_MAX_QUEUES 16u

typedef struct dsa_queue {
    vmig_dsa_portal *portal; /* dsa */
    vmig_dsa_model *model;   /* dsa-model */
    bool dedicated;
    uint32_t size;
    uint32_t inflight; /* atomic: credits taken (dedicated) */
    char name[32];
} dsa_queue;

typedef struct dsa_dev {
    bool model;
    uint32_t nq;
    uint32_t max_batch; /* the smallest of the queues' */
    dsa_queue q[DSA_MAX_QUEUES];
    char desc[160];
} dsa_dev;

typedef struct dsa_batch {
    vmig_idxd_batch *b;
    dsa_queue *q;
    bool credit; /* holds one of q's credits */
} dsa_batch;

static void dsa_close(void *dev)
{
    dsa_dev *d = dev;
    if (!d)
        return;
    for (uint32_t i = 0; i < d->nq; i++) {
        vmig_dsa_model_free(d->q[i].model);
        vmig_dsa_portal_free(d->q[i].portal);
    }
    free(d);
}

/* The next entry of a blank- or comma-separated list, into buf. */
static const char *next_entry(const char *s, char *buf, size_t len)
{
    while (*s == ' ' || *s == ',' || *s == '\t')
        s++;
    if (!*s)
        return NULL;
    size_t k = 0;
    while (s[k] && s[k] != ' ' && s[k] != ',' && s[k] != '\t')
        k++;
    snprintf(buf, len, "%.*s", (int)k, s);
    return s + k;
}

/* ---- dsa-model: "model:depth=64;latency=2us;..." ---- */

static int parse_ns(const char *v, uint64_t *out)
{
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v)
        return -1;
    uint64_t mul = !strcmp(end, "ns") || !*end ? 1
                   : !strcmp(end, "us")        ? 1000
                   : !strcmp(end, "ms")        ? 1000000
                                               : 0;
    if (!mul || x > UINT64_MAX / mul)
        return -1;
    *out = x * mul;
    return 0;
}

static int parse_u64(const char *v, uint64_t *out)
{
    char *end;
    if (!*v || *v == '-')
        return -1;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end)
        return -1;
    *out = x;
    return 0;
}

/* Model options are separated by ':' or ';' inside one accel-path entry,
 * since blanks and commas separate the entries. */
static int parse_model(const char *entry, vmig_dsa_model_params *p, vmig_error *err)
{
    memset(p, 0, sizeof(*p));
    if (strncmp(entry, "model", 5))
        goto bad;
    const char *s = entry + 5;
    if (*s == ':')
        s++;
    else if (*s)
        goto bad;
    while (*s) {
        char opt[64];
        size_t k = strcspn(s, ":;");
        snprintf(opt, sizeof(opt), "%.*s", (int)k, s);
        s += k + (s[k] != 0);
        char *eq = strchr(opt, '=');
        const char *val = eq ? eq + 1 : "1";
        if (eq)
            *eq = 0;
        uint64_t v = 0;
        int bad = 0;
        if (!strcmp(opt, "latency"))
            bad = parse_ns(val, &p->latency_ns);
        else if ((bad = parse_u64(val, &v)) != 0)
            ;
        else if (!strcmp(opt, "depth") && v >= 1 && v <= 65536)
            p->wq_size = (uint32_t)v;
        else if (!strcmp(opt, "max-batch") && v >= 2 && v <= VMIG_IDXD_MAX_BATCH)
            p->max_batch = (uint32_t)v;
        else if (!strcmp(opt, "full-every") && v <= UINT32_MAX)
            p->full_every = (uint32_t)v;
        else if (!strcmp(opt, "fault-every") && v <= UINT32_MAX)
            p->fault_every = (uint32_t)v;
        else if (!strcmp(opt, "error-after"))
            p->error_after = v;
        else if (!strcmp(opt, "reorder") && v <= 1)
            p->reorder = v;
        else if (!strcmp(opt, "residency") && v <= 1)
            p->ignore_residency = !v;
        else
            bad = 1;
        if (bad)
            return vmig_error_set(
                err, VMIG_EINVAL,
                "accel-path '%s': bad model option '%s%s%s' (depth=1..65536, max-batch=2..%u, "
                "latency=N[ns|us|ms], full-every=N, fault-every=N, error-after=N, reorder=0|1, "
                "residency=0|1)",
                entry, opt, eq ? "=" : "", eq ? val : "", VMIG_IDXD_MAX_BATCH);
    }
    return 0;
bad:
    return vmig_error_set(err, VMIG_EINVAL,
                          "accel-path '%s' is not a model queue (model or model:OPTIONS)", entry);
}

/* The next queue of d, or NULL (with the error) when accel-path names too
 * many. */
static dsa_queue *queue_next(dsa_dev *d, vmig_error *err)
{
    if (d->nq == DSA_MAX_QUEUES) {
        vmig_error_set(err, VMIG_EINVAL, "accel-path names more than %u queues", DSA_MAX_QUEUES);
        return NULL;
    }
    return &d->q[d->nq];
}

/* The end of either open: a packet must fit in one batch of every queue. */
static int open_done(dsa_dev *d, const vmig_accel_conf *conf, int rc, int code, const char *what,
                     void **out, vmig_error *err)
{
    if (!rc && conf->max_jobs > d->max_batch)
        rc = vmig_error_set(err, code, "packet-pages %u exceeds the %s's max batch of %u",
                            conf->max_jobs, what, d->max_batch);
    if (rc) {
        dsa_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

static int model_open(const vmig_accel_conf *conf, void **out, vmig_error *err)
{
    dsa_dev *d = calloc(1, sizeof(*d));
    if (!d)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the dsa-model engine");
    d->model = true;
    d->max_batch = VMIG_IDXD_MAX_BATCH;
    const char *path = conf->path && *conf->path ? conf->path : "model";
    char entry[256];
    int rc = 0;
    for (const char *s = path; (s = next_entry(s, entry, sizeof(entry))) != NULL;) {
        dsa_queue *q = queue_next(d, err);
        vmig_dsa_model_params p;
        if (!q) {
            rc = VMIG_EINVAL;
            break;
        }
        if ((rc = parse_model(entry, &p, err)) != 0 ||
            (rc = vmig_dsa_model_create(&p, &q->model, err)) != 0)
            break;
        d->nq++;
        q->size = p.wq_size ? p.wq_size : 128;
        snprintf(q->name, sizeof(q->name), "model%u", d->nq - 1);
        uint32_t mb = p.max_batch ? p.max_batch : VMIG_IDXD_MAX_BATCH;
        d->max_batch = VMIG_MIN(d->max_batch, mb);
        if (d->nq == 1)
            snprintf(d->desc, sizeof(d->desc),
                     "dsa-model (software DSA: depth %u, max batch %u, latency %llu ns%s%s)",
                     q->size, mb, (unsigned long long)p.latency_ns,
                     p.full_every || p.fault_every || p.error_after ? ", faults injected" : "",
                     p.reorder ? ", reordering" : "");
    }
    if (!rc && d->nq > 1) {
        size_t l = strlen(d->desc);
        snprintf(d->desc + (l ? l - 1 : 0), sizeof(d->desc) - (l ? l - 1 : 0), "; %u queues)",
                 d->nq);
    }
    return open_done(d, conf, rc, VMIG_EINVAL, "model queue", out, err);
}

static uint64_t model_cpu_ns(void *dev)
{
    dsa_dev *d = dev;
    uint64_t t = 0;
    for (uint32_t i = 0; i < d->nq; i++)
        t += vmig_dsa_model_cpu_ns(d->q[i].model);
    return t;
}

/* ---- dsa: work queues of the idxd driver ---- */

/* Opens work queue `wq` ("/dev/dsa/wqD.Q", "wqD.Q"; NULL: the first usable
 * one) as d's next queue. */
static int hw_add(dsa_dev *d, const char *wq, vmig_error *err)
{
    dsa_queue *q = queue_next(d, err);
    if (!q)
        return VMIG_EINVAL;
    vmig_dsa_wq_info info;
    int rc = vmig_dsa_wq_find(NULL, wq, &info, err);
    if (!rc)
        rc = vmig_dsa_portal_open(&info, &q->portal, err);
    if (rc)
        return rc;
    d->nq++;
    q->dedicated = vmig_dsa_portal_dedicated(q->portal);
    q->size = vmig_dsa_portal_size(q->portal);
    snprintf(q->name, sizeof(q->name), "%s", info.name);
    uint32_t mb = vmig_dsa_portal_max_batch(q->portal);
    d->max_batch = VMIG_MIN(d->max_batch, mb ? mb : VMIG_IDXD_MAX_BATCH);
    size_t l = strlen(d->desc);
    snprintf(d->desc + l, sizeof(d->desc) - l, "%s%s (%s, %u entries)", l ? ", " : "DSA ", q->name,
             q->dedicated ? "dedicated" : "shared", q->size);
    if (q->size == 0)
        return vmig_error_set(err, VMIG_ENOTSUP, "DSA work queue %s has size 0", q->name);
    return 0;
}

static int hw_open(const vmig_accel_conf *conf, void **out, vmig_error *err)
{
    dsa_dev *d = calloc(1, sizeof(*d));
    if (!d)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the dsa engine");
    d->max_batch = VMIG_IDXD_MAX_BATCH;
    int rc = 0;
    if (!conf->path || !*conf->path) {
        rc = hw_add(d, NULL, err);
    } else {
        char entry[256];
        for (const char *s = conf->path; !rc && (s = next_entry(s, entry, sizeof(entry)));) {
            if (!strncmp(entry, "model", 5))
                rc = vmig_error_set(err, VMIG_EINVAL,
                                    "accel-path '%s' is a model queue: use accel=dsa-model", entry);
            else
                rc = hw_add(d, strncmp(entry, "dsa:", 4) ? entry : entry + 4, err);
        }
    }
    return open_done(d, conf, rc, VMIG_ENOTSUP, "DSA work queue", out, err);
}

/* ---- shared by both ---- */

static void dsa_describe(void *dev, char *buf, size_t len)
{
    snprintf(buf, len, "%s", ((dsa_dev *)dev)->desc);
}

static int dsa_batch_create(void *dev, uint32_t chan, uint32_t cap, void **out, vmig_error *err)
{
    dsa_dev *d = dev;
    dsa_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate a DSA batch");
    int rc = vmig_idxd_batch_create(cap, &b->b, err);
    if (rc) {
        free(b);
        return rc;
    }
    b->q = &d->q[chan % d->nq];
    *out = b;
    return 0;
}

static void dsa_batch_free(void *dev, void *batch)
{
    (void)dev;
    dsa_batch *b = batch;
    vmig_idxd_batch_free(b->b);
    free(b);
}

static int dsa_submit(void *dev, void *batch, const void *const *bufs, uint32_t n, uint32_t len)
{
    (void)dev;
    dsa_batch *b = batch;
    dsa_queue *q = b->q;
    if (q->dedicated) {
        if (__atomic_fetch_add(&q->inflight, 1, __ATOMIC_ACQ_REL) >= q->size) {
            __atomic_fetch_sub(&q->inflight, 1, __ATOMIC_ACQ_REL);
            return VMIG_EAGAIN;
        }
        b->credit = true;
    }
    vmig_idxd_batch_prepare(b->b, bufs, n, len);
    const struct dsa_hw_desc *head = vmig_idxd_batch_head(b->b);
    int rc =
        q->model ? vmig_dsa_model_submit(q->model, head) : vmig_dsa_portal_submit(q->portal, head);
    if (rc && b->credit) {
        __atomic_fetch_sub(&q->inflight, 1, __ATOMIC_ACQ_REL);
        b->credit = false;
    }
    return rc == 0 || rc == VMIG_EAGAIN ? rc : VMIG_EIO;
}

static enum vmig_accel_job dsa_job(void *batch, uint32_t i, uint32_t *bytes_done)
{
    dsa_batch *b = batch;
    switch (vmig_idxd_job_state(b->b, i, bytes_done)) {
    case VMIG_IDXD_PENDING:
        return VMIG_ACCEL_JOB_PENDING;
    case VMIG_IDXD_ZERO:
        return VMIG_ACCEL_JOB_ZERO;
    case VMIG_IDXD_NONZERO:
        return VMIG_ACCEL_JOB_NONZERO;
    case VMIG_IDXD_PARTIAL:
        return VMIG_ACCEL_JOB_PARTIAL;
    default:
        return VMIG_ACCEL_JOB_FAILED;
    }
}

/* Statuses that say something about the job, not about the device. */
static bool benign(uint8_t st)
{
    return st == DSA_COMP_NONE || st == DSA_COMP_SUCCESS || st == DSA_COMP_PAGE_FAULT_NOBOF ||
           st == DSA_COMP_BATCH_FAIL || st == DSA_COMP_BATCH_PAGE_FAULT;
}

static bool dsa_done(void *dev, void *batch, int *dev_error)
{
    (void)dev;
    dsa_batch *b = batch;
    *dev_error = 0;
    if (!vmig_idxd_batch_done(b->b))
        return false;
    if (b->credit) {
        __atomic_fetch_sub(&b->q->inflight, 1, __ATOMIC_ACQ_REL);
        b->credit = false;
    }
    uint8_t st = vmig_idxd_batch_status(b->b);
    if (!benign(st)) {
        *dev_error = st;
    } else if (st == DSA_COMP_BATCH_FAIL) {
        for (uint32_t i = 0; i < b->b->n && !*dev_error; i++) {
            uint8_t js =
                __atomic_load_n(&b->b->comp[i].status, __ATOMIC_ACQUIRE) & DSA_COMP_STATUS_MASK;
            if (!benign(js))
                *dev_error = js;
        }
    }
    return true;
}

#define DSA_COMMON                                                                                 \
    .close = dsa_close, .describe = dsa_describe, .batch_create = dsa_batch_create,                \
    .batch_free = dsa_batch_free, .submit = dsa_submit, .job = dsa_job, .done = dsa_done

const vmig_accel_ops vmig_accel_dsa_ops = {.name = "dsa", .open = hw_open, DSA_COMMON};
const vmig_accel_ops vmig_accel_dsa_model_ops = {
    .name = "dsa-model", .open = model_open, .device_cpu_ns = model_cpu_ns, DSA_COMMON};

#else /* !VMIG_HAVE_IDXD_H */

static int not_built(const vmig_accel_conf *conf, void **dev, vmig_error *err)
{
    (void)conf;
    (void)dev;
    return vmig_error_set(err, VMIG_ENOTSUP,
                          "DSA: not built (<linux/idxd.h> was not found at build time)");
}

const vmig_accel_ops vmig_accel_dsa_ops = {.name = "dsa", .open = not_built};
const vmig_accel_ops vmig_accel_dsa_model_ops = {.name = "dsa-model", .open = not_built};

#endif

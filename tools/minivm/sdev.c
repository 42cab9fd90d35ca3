/*
 * The synthetic device of `minivm run --device-state SIZE` (guest_abi.h):
 * a buffer like a GPU's memory, changed by the guest's port commands,
 * migrated as device state through vmig_device_register.
 *
 * Its state, as save_final writes it (little-endian):
 *
 *   0        8      16         20        24      32               1056          1072
 *   +--------+------+----------+---------+-------+----------------+-------------+------ - -
 *   |MVSDEV01| size | nregions | nselect | cmds  | seed[256] (u32)| select[4]   | buffer
 *   +--------+------+----------+---------+-------+----------------+-------------+------ - -
 *
 * The destination takes the header first, checks it against its own
 * device (same size), then copies the buffer into place as chunks come.
 * A COLO secondary loads the whole state again at every checkpoint (vmig
 * stages a checkpoint's chunks and loads them only once it is complete,
 * so each load overwrites a consistent state with the next one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "minivm.h"

#define SDEV_MAGIC   "MVSDEV01"
#define SDEV_HDR_LEN MINIVM_SDEV_HDR_LEN
_Static_assert(MINIVM_SDEV_HDR_LEN == 32u + 4u * MINIVM_DEV_REGIONS + 4u * MINIVM_MAX_VCPUS,
               "the header's layout");

struct minivm_sdev {
    uint8_t *buf;
    uint64_t size, region_words;
    pthread_mutex_t lock; /* the vCPUs' port accesses */
    uint32_t seed[MINIVM_DEV_REGIONS];
    uint32_t select[MINIVM_MAX_VCPUS];
    uint64_t cmds;
    /* destination: the state as it arrives, and why it was refused */
    uint8_t hdr[SDEV_HDR_LEN];
    uint64_t got;   /* bytes of the current load */
    uint64_t loads; /* loads completed */
    char why[256];
};

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void fill_region(struct minivm_sdev *d, uint32_t r, uint32_t seed)
{
    uint64_t *w = (uint64_t *)(d->buf + r * d->region_words * 8);
    for (uint64_t k = 0; k < d->region_words; k++)
        w[k] = minivm_dev_word(r, seed, k);
}

int minivm_sdev_create(uint64_t size, bool fill, struct minivm_sdev **out)
{
    if (size == 0 || size % ((uint64_t)MINIVM_DEV_REGIONS * MINIVM_PAGE) ||
        size / MINIVM_DEV_REGIONS / 8 > (1u << MINIVM_DEV_WORD_BITS))
        return -1;
    struct minivm_sdev *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    d->buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (d->buf == MAP_FAILED) {
        free(d);
        return -1;
    }
    d->size = size;
    d->region_words = size / MINIVM_DEV_REGIONS / 8;
    pthread_mutex_init(&d->lock, NULL);
    for (uint32_t r = 0; fill && r < MINIVM_DEV_REGIONS; r++)
        fill_region(d, r, 0);
    *out = d;
    return 0;
}

void minivm_sdev_free(struct minivm_sdev *d)
{
    if (!d)
        return;
    munmap(d->buf, d->size);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

uint64_t minivm_sdev_size(const struct minivm_sdev *d)
{
    return d->size;
}

uint64_t minivm_sdev_region_words(const struct minivm_sdev *d)
{
    return d->region_words;
}

int minivm_sdev_prefault(struct minivm_sdev *d)
{
    return madvise(d->buf, d->size, 23 /* MADV_POPULATE_WRITE */);
}

bool minivm_sdev_io(struct minivm_sdev *d, unsigned vcpu, uint16_t port, bool out, uint32_t *val)
{
    if (port < MINIVM_PORT_DEV_REWRITE || port > MINIVM_PORT_DEV_HI || vcpu >= MINIVM_MAX_VCPUS)
        return false;
    pthread_mutex_lock(&d->lock);
    if (out && port == MINIVM_PORT_DEV_REWRITE) {
        uint32_t r = *val >> 24, seed = *val & MINIVM_DEV_SEED_MASK;
        if (r < MINIVM_DEV_REGIONS) {
            fill_region(d, r, seed);
            d->seed[r] = seed;
            d->cmds++;
        }
    } else if (out && port == MINIVM_PORT_DEV_SELECT) {
        d->select[vcpu] = *val;
    } else if (!out && (port == MINIVM_PORT_DEV_LO || port == MINIVM_PORT_DEV_HI)) {
        uint32_t r = d->select[vcpu] >> MINIVM_DEV_WORD_BITS;
        uint64_t k = d->select[vcpu] & ((1u << MINIVM_DEV_WORD_BITS) - 1);
        *val = 0xffffffffu;
        if (r < MINIVM_DEV_REGIONS && k < d->region_words) {
            uint64_t w;
            memcpy(&w, d->buf + (r * d->region_words + k) * 8, 8);
            *val = (uint32_t)(port == MINIVM_PORT_DEV_LO ? w : w >> 32);
        }
    } else if (!out) {
        *val = 0xffffffffu;
    }
    pthread_mutex_unlock(&d->lock);
    return true;
}

/* ---- migration: vmig_device_ops ---- */

static uint64_t sdev_pending(void *opaque)
{
    struct minivm_sdev *d = opaque;
    return SDEV_HDR_LEN + d->size;
}

void minivm_sdev_header(const struct minivm_sdev *d, uint8_t h[MINIVM_SDEV_HDR_LEN])
{
    memcpy(h, SDEV_MAGIC, 8);
    put_le(h + 8, d->size, 8);
    put_le(h + 16, MINIVM_DEV_REGIONS, 4);
    put_le(h + 20, MINIVM_MAX_VCPUS, 4);
    put_le(h + 24, d->cmds, 8);
    for (uint32_t r = 0; r < MINIVM_DEV_REGIONS; r++)
        put_le(h + 32 + 4 * r, d->seed[r], 4);
    for (uint32_t v = 0; v < MINIVM_MAX_VCPUS; v++)
        put_le(h + 32 + 4 * MINIVM_DEV_REGIONS + 4 * v, d->select[v], 4);
}

/* The VM is stopped: header, then the whole buffer (vmig cuts the chunks
 * and sends them straight from it: nothing changes it until the migration
 * is over, whatever its outcome). */
static int sdev_save(void *opaque, vmig_devstate_out *out)
{
    struct minivm_sdev *d = opaque;
    uint8_t h[SDEV_HDR_LEN];
    minivm_sdev_header(d, h);
    int rc = vmig_devstate_write(out, h, sizeof(h));
    return rc ? rc : vmig_devstate_write_ref(out, d->buf, d->size);
}

static int sdev_header(struct minivm_sdev *d)
{
    const uint8_t *h = d->hdr;
    if (memcmp(h, SDEV_MAGIC, 8)) {
        snprintf(d->why, sizeof(d->why), "bad magic");
        return VMIG_EPROTO;
    }
    uint64_t size = get_le(h + 8, 8);
    if (size != d->size || get_le(h + 16, 4) != MINIVM_DEV_REGIONS ||
        get_le(h + 20, 4) != MINIVM_MAX_VCPUS) {
        snprintf(d->why, sizeof(d->why),
                 "the source's device holds %llu bytes in %llu regions, this one %llu bytes "
                 "(--device-state)",
                 (unsigned long long)size, (unsigned long long)get_le(h + 16, 4),
                 (unsigned long long)d->size);
        return VMIG_EINVAL;
    }
    d->cmds = get_le(h + 24, 8);
    for (uint32_t r = 0; r < MINIVM_DEV_REGIONS; r++) {
        d->seed[r] = (uint32_t)get_le(h + 32 + 4 * r, 4);
        if (d->seed[r] > MINIVM_DEV_SEED_MASK) {
            snprintf(d->why, sizeof(d->why), "region %u has seed 0x%x, beyond 24 bits", r,
                     d->seed[r]);
            return VMIG_EPROTO;
        }
    }
    for (uint32_t v = 0; v < MINIVM_MAX_VCPUS; v++)
        d->select[v] = (uint32_t)get_le(h + 32 + 4 * MINIVM_DEV_REGIONS + 4 * v, 4);
    return 0;
}

/* On vmig's load thread for this device: bytes in order. */
static int sdev_load(void *opaque, const void *buf, size_t len)
{
    struct minivm_sdev *d = opaque;
    const uint8_t *p = buf;
    if (d->got < SDEV_HDR_LEN) {
        size_t n = len < SDEV_HDR_LEN - d->got ? len : SDEV_HDR_LEN - d->got;
        memcpy(d->hdr + d->got, p, n);
        d->got += n;
        p += n;
        len -= n;
        if (d->got == SDEV_HDR_LEN) {
            int rc = sdev_header(d);
            if (rc)
                return rc;
        }
    }
    if (len > SDEV_HDR_LEN + d->size - d->got) {
        snprintf(d->why, sizeof(d->why), "more than the %llu bytes of the device",
                 (unsigned long long)d->size);
        return VMIG_EPROTO;
    }
    if (len)
        memcpy(d->buf + (d->got - SDEV_HDR_LEN), p, len);
    d->got += len;
    return 0;
}

/* The end of one load. The next one (a secondary loads the state at every
 * checkpoint) starts again from the header. */
static int sdev_load_done(void *opaque)
{
    struct minivm_sdev *d = opaque;
    uint64_t got = d->got;
    d->got = 0;
    if (got != SDEV_HDR_LEN + d->size) {
        snprintf(d->why, sizeof(d->why), "%llu of %llu bytes arrived", (unsigned long long)got,
                 (unsigned long long)(SDEV_HDR_LEN + d->size));
        return VMIG_EPROTO;
    }
    d->loads++;
    return 0;
}

const vmig_device_ops minivm_sdev_ops = {
    .pending = sdev_pending,
    .save_final = sdev_save,
    .load_chunk = sdev_load,
    .load_done = sdev_load_done,
};

void minivm_sdev_reset_load(struct minivm_sdev *d)
{
    d->got = 0;
    d->why[0] = 0;
}

uint64_t minivm_sdev_loads(const struct minivm_sdev *d)
{
    return d->loads;
}

const char *minivm_sdev_refusal(const struct minivm_sdev *d)
{
    return d->why;
}

int minivm_sdev_verify(struct minivm_sdev *d, const struct minivm_config *c, uint64_t *cmds,
                       char *msg, size_t msglen)
{
    *cmds = d->cmds;
    for (uint32_t r = 0; r < MINIVM_DEV_REGIONS; r++) {
        const uint64_t *w = (const uint64_t *)(d->buf + r * d->region_words * 8);
        for (uint64_t k = 0; k < d->region_words; k++)
            if (w[k] != minivm_dev_word(r, d->seed[r], k)) {
                snprintf(msg, msglen,
                         "device region %u (seed 0x%x), word %llu: 0x%016llx, expected 0x%016llx",
                         r, d->seed[r], (unsigned long long)k, (unsigned long long)w[k],
                         (unsigned long long)minivm_dev_word(r, d->seed[r], k));
                return -1;
            }
        /* The guest's own record of its commands (migrated as RAM) must
         * agree, except for a rewrite that was in flight at the stop. */
        if (c && c->dev_busy != r + 1 && c->dev_seed[r] != d->seed[r]) {
            snprintf(msg, msglen,
                     "device region %u holds seed 0x%x, but the guest's last command for it "
                     "gave 0x%x",
                     r, d->seed[r], c->dev_seed[r]);
            return -1;
        }
    }
    return 0;
}

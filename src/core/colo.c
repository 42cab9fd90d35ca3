/*
 * Continuous checkpoints (COLO-style), the parts both sides share and the
 * secondary's side (docs/colo.md). The primary's loop is in source.c,
 * next to the passes it reuses.
 *
 * Secondary, after the data channels are up:
 *
 *   checkpoint 0   the initial live migration, straight into RAM (device
 *                  state streamed to the load threads), ends with CKPT 0:
 *                  every channel past its pass, counts and digests of all
 *                  memory checked, device loads done -> ACK 0
 *   checkpoint N   pages of later passes land in the RAM cache (their bits
 *                  in ckpt_dirty), DEV chunks are staged; at CKPT N, once
 *                  every channel is past its pass: counts, digests of the
 *                  checkpoint's pages, every device's chunks present -> flush
 *                  the cache into RAM (flush.h), load the staged state -> ACK N
 *
 * Nothing of checkpoint N touches RAM or a device before it is whole and
 * checked, so a checkpoint cut short is dropped and RAM and devices hold
 * N - 1. Once the commit starts it runs to the end whatever happens to the
 * primary: every byte it needs is here.
 *
 * Liveness: after checkpoint 0 each side's heartbeat thread writes a
 * HEARTBEAT every heartbeat-timeout / 4; a side that hears nothing for
 * heartbeat-timeout, or whose control connection closes, counts the peer
 * as gone. A data channel that breaks is confirmed on the control channel
 * first: a primary that is still there says why (ERROR) and the secondary
 * does not take over.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "../colo/flush.h"
#include "../ram/digest.h"
#include "session.h"

/* Chunks one device may stage per checkpoint. */
#define STAGE_MAX_CHUNKS 65536u

int vmig_colo_ctl_write(vmig_session *s, unsigned type, const uint8_t *payload, uint32_t len,
                        vmig_error *err)
{
    pthread_mutex_lock(&s->ctl_wlock);
    int rc = vmig_ctl_write(s->control, type, payload, len, err);
    pthread_mutex_unlock(&s->ctl_wlock);
    return rc;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* heartbeat                                                           */

/* Bytes the channels have written so far. */
static uint64_t channel_bytes(vmig_session *s)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->nch; i++)
        n += __atomic_load_n(&s->ch[i].st_bytes, __ATOMIC_RELAXED);
    return n;
}

/*
 * The primary's watchdog: while a checkpoint is sent the VM is paused and
 * nobody reads the control channel, so a secondary that stopped reading
 * (stopped, its host hung) would hold the VM until a write times out. A
 * checkpoint whose channels move no byte for heartbeat-timeout ends the
 * protection instead; the VM resumes.
 */
static void watch_sending(vmig_session *s, uint64_t now, uint64_t *last_bytes, uint64_t *since)
{
    uint64_t sending = __atomic_load_n(&s->colo_sending, __ATOMIC_ACQUIRE);
    uint64_t bytes = channel_bytes(s);
    if (!sending || bytes != *last_bytes) {
        *last_bytes = bytes;
        *since = now;
        return;
    }
    if (now - *since < (uint64_t)s->p.heartbeat_timeout_ms * 1000000ull || vmig_session_aborted(s))
        return;
    vmig_session_failf(s, VMIG_ETIMEDOUT,
                       "%s: the channels moved no byte of checkpoint %llu for %u ms "
                       "(heartbeat-timeout)",
                       s->control->peer, (unsigned long long)(sending - 1),
                       s->p.heartbeat_timeout_ms);
    vmig_session_shutdown_conns(s, false);
}

static void *hb_main(void *arg)
{
    vmig_session *s = arg;
    uint64_t interval = (uint64_t)s->p.heartbeat_timeout_ms * 1000000ull / 4;
    uint64_t next = vmig_now_ns() + interval, last_bytes = 0, since = vmig_now_ns();
    while (!__atomic_load_n(&s->hb_stop, __ATOMIC_ACQUIRE)) {
        uint64_t now = vmig_now_ns();
        if (s->role == VMIG_ROLE_SOURCE)
            watch_sending(s, now, &last_bytes, &since);
        if (now >= next) {
            /* A failed write is the main thread's to find (its reads fail too). */
            if (vmig_colo_ctl_write(s, VMIG_CTL_HEARTBEAT, NULL, 0, NULL))
                break;
            next = now + interval;
            continue;
        }
        sleep_ns(VMIG_MIN(next - now, 10000000ull));
    }
    return NULL;
}

int vmig_colo_hb_start(vmig_session *s, vmig_error *err)
{
    __atomic_store_n(&s->hb_stop, 0, __ATOMIC_RELEASE);
    if (vmig_thread_start(&s->hb_thread, "vmig-heartbeat", hb_main, s))
        return vmig_error_set(err, VMIG_ENOMEM, "cannot start the heartbeat thread");
    s->hb_started = true;
    return 0;
}

void vmig_colo_hb_stop(vmig_session *s)
{
    if (!s->hb_started)
        return;
    __atomic_store_n(&s->hb_stop, 1, __ATOMIC_RELEASE);
    pthread_join(s->hb_thread, NULL);
    s->hb_started = false;
}

int vmig_colo_read(vmig_session *s, uint32_t mask, unsigned expect, uint64_t until, uint64_t *heard,
                   bool on_abort, unsigned *type, uint8_t **payload, uint32_t *len, vmig_error *err)
{
    uint64_t hb = (uint64_t)s->p.heartbeat_timeout_ms * 1000000ull;
    *payload = NULL;
    *len = 0;
    for (;;) {
        uint64_t now = vmig_now_ns();
        if (heard && now - *heard > hb)
            return vmig_error_set(err, VMIG_ETIMEDOUT,
                                  "%s: nothing heard for %u ms (heartbeat-timeout)",
                                  s->control->peer, s->p.heartbeat_timeout_ms);
        if (until && now >= until)
            return VMIG_EAGAIN;
        if (on_abort && vmig_session_aborted(s)) {
            pthread_mutex_lock(&s->lock);
            int code = vmig_error_copy(err, &s->err);
            pthread_mutex_unlock(&s->lock);
            return code ? code : VMIG_ECANCELED;
        }
        uint64_t wait = 20000000ull;
        if (until)
            wait = VMIG_MIN(wait, until - now);
        int r = s->control->ops->wait_readable(s->control, (int)((wait + 999999) / 1000000));
        if (r < 0 && r != -EINTR)
            return vmig_error_set(err, VMIG_EIO, "%s: poll: %s", s->control->peer, strerror(-r));
        if (r <= 0)
            continue;
        int rc = vmig_ctl_read_mask(s->control, mask | 1u << VMIG_CTL_HEARTBEAT, expect, type,
                                    payload, len, err);
        if (rc)
            return rc;
        if (heard)
            *heard = vmig_now_ns();
        if (*type != VMIG_CTL_HEARTBEAT)
            return 0;
        free(*payload);
        *payload = NULL;
    }
}

/* ------------------------------------------------------------------ */
/* digests, cache, staging                                             */

void vmig_colo_digests(vmig_session *s, bool dest, uint8_t (*dg)[16])
{
    for (uint32_t i = 0; i < s->nblocks; i++) {
        const vmig_block *b = &s->blocks[i];
        const uint64_t *map = dest ? b->ckpt_dirty : b->dirty;
        vmig_digest d = {0, 0};
        for (uint64_t w = 0; b->page_hash && map && w < (b->npages + 63) / 64; w++)
            for (uint64_t m = __atomic_load_n(&map[w], __ATOMIC_RELAXED); m; m &= m - 1) {
                uint64_t pg = w * 64 + (uint64_t)__builtin_ctzll(m);
                vmig_digest_add(&d, pg, __atomic_load_n(&b->page_hash[pg], __ATOMIC_RELAXED));
            }
        vmig_digest_to_bytes(&d, dg[i]);
    }
}

int vmig_colo_dest_alloc(vmig_session *s, vmig_error *err)
{
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        /* Reserved, not populated: only pages checkpoints write cost memory. */
        void *m = mmap(NULL, b->length, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return vmig_error_set(err, VMIG_ENOMEM, "block '%s': no RAM cache of %llu bytes: %s",
                                  b->name, (unsigned long long)b->length, strerror(errno));
        b->cache = m;
        b->ckpt_dirty = calloc((b->npages + 63) / 64, sizeof(uint64_t));
        if (!b->ckpt_dirty)
            return vmig_error_set(err, VMIG_ENOMEM, "block '%s': no memory for its cache bitmap",
                                  b->name);
    }
    for (uint32_t i = 0; i < s->ndevs; i++)
        s->devs[i].stage_last = UINT32_MAX;
    int rc = vmig_flusher_create(s->p.flush_threads, &s->flusher, err);
    if (!rc)
        __atomic_store_n(&s->st_flush_threads, vmig_flusher_threads(s->flusher), __ATOMIC_RELAXED);
    return rc;
}

/* Give back every staged chunk (under s->lock or with the channels joined). */
static void stage_drop(vmig_session *s)
{
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        for (uint32_t k = 0; k < d->stage_n; k++) {
            vmig_dev_buf_put(s, d->stage[k]);
            d->stage[k] = NULL;
            d->stage_len[k] = 0;
        }
        d->stage_n = 0;
        d->stage_last = UINT32_MAX;
    }
    s->colo_stage_bytes = 0;
}

void vmig_colo_end_run(vmig_session *s)
{
    vmig_colo_hb_stop(s);
    stage_drop(s);
    for (uint32_t i = 0; i < s->ndevs; i++) {
        free(s->devs[i].stage);
        free(s->devs[i].stage_len);
        s->devs[i].stage = NULL;
        s->devs[i].stage_len = NULL;
        s->devs[i].stage_cap = 0;
    }
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        if (b->cache)
            munmap(b->cache, b->length);
        b->cache = NULL;
        free(b->ckpt_dirty);
        b->ckpt_dirty = NULL;
    }
    vmig_flusher_free(s->flusher);
    s->flusher = NULL;
    __atomic_store_n(&s->colo_base_pass, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&s->colo_request, 0, __ATOMIC_RELEASE);
}

int vmig_colo_stage(vmig_session *s, vmig_dev *d, uint32_t chunk, bool last, void *buf,
                    uint32_t len, vmig_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (chunk >= STAGE_MAX_CHUNKS)
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "device '%s' instance %u: chunk %u of a checkpoint (at most %u)", d->id,
                            d->instance, chunk, STAGE_MAX_CHUNKS);
    else if (d->stage_last != UINT32_MAX && (chunk > d->stage_last || last))
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "device '%s' instance %u: chunk %u%s after the last chunk (%u) of "
                            "the checkpoint",
                            d->id, d->instance, chunk, last ? " marked last" : "", d->stage_last);
    else if (last && d->stage_n > chunk + 1)
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "device '%s' instance %u: chunk %u marked last, but chunk %u arrived",
                            d->id, d->instance, chunk, d->stage_n - 1);
    else if (s->colo_stage_bytes + len > s->p.devstate_buffer)
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "a checkpoint's device state exceeds devstate-buffer (%llu bytes)",
                            (unsigned long long)s->p.devstate_buffer);
    if (!rc && chunk >= d->stage_cap) {
        uint32_t cap = d->stage_cap ? d->stage_cap : 16;
        while (cap <= chunk)
            cap *= 2;
        cap = VMIG_MIN(cap, STAGE_MAX_CHUNKS);
        void **ns = realloc(d->stage, cap * sizeof(void *));
        if (ns)
            d->stage = ns;
        uint32_t *nl = ns ? realloc(d->stage_len, cap * sizeof(uint32_t)) : NULL;
        if (nl)
            d->stage_len = nl;
        if (!ns || !nl) {
            rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for a checkpoint's device chunks");
        } else {
            for (uint32_t k = d->stage_cap; k < cap; k++) {
                d->stage[k] = NULL;
                d->stage_len[k] = 0;
            }
            d->stage_cap = cap;
        }
    }
    if (!rc && d->stage[chunk])
        rc = vmig_error_set(err, VMIG_EPROTO, "device '%s' instance %u: chunk %u arrived twice",
                            d->id, d->instance, chunk);
    if (!rc) {
        d->stage[chunk] = buf;
        d->stage_len[chunk] = len;
        d->stage_n = VMIG_MAX(d->stage_n, chunk + 1);
        if (last)
            d->stage_last = chunk;
        s->colo_stage_bytes += len;
        buf = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    vmig_dev_buf_put(s, buf);
    return rc;
}

/* Every device sent its whole state for the checkpoint (channels joined
 * at its barrier, so no chunk is being staged). */
static int stage_complete(vmig_session *s, uint64_t id, vmig_error *err)
{
    for (uint32_t i = 0; i < s->ndevs; i++) {
        const vmig_dev *d = &s->devs[i];
        if (d->stage_last == UINT32_MAX)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "checkpoint %llu: device '%s' instance %u sent %u chunk(s) "
                                  "without the last one",
                                  (unsigned long long)id, d->id, d->instance, d->stage_n);
        for (uint32_t k = 0; k <= d->stage_last; k++)
            if (!d->stage[k])
                return vmig_error_set(err, VMIG_EPROTO,
                                      "checkpoint %llu: device '%s' instance %u: chunk %u is "
                                      "missing (last is %u)",
                                      (unsigned long long)id, d->id, d->instance, k, d->stage_last);
    }
    return 0;
}

/* Load every device's staged chunks in order. A device that refuses
 * leaves the secondary without a consistent state. */
static int stage_load(vmig_session *s, uint64_t id, vmig_error *err)
{
    uint64_t t0 = vmig_now_ns();
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        for (uint32_t k = 0; k <= d->stage_last; k++) {
            int rc =
                d->stage_len[k] ? d->ops.load_chunk(d->opaque, d->stage[k], d->stage_len[k]) : 0;
            if (!rc && k == d->stage_last && d->ops.load_done)
                rc = d->ops.load_done(d->opaque);
            if (rc)
                return vmig_error_set(err, rc < 0 ? rc : VMIG_EIO,
                                      "checkpoint %llu: device '%s' instance %u refused its "
                                      "state (%s); this secondary holds no consistent VM now",
                                      (unsigned long long)id, d->id, d->instance,
                                      vmig_strerror(rc));
            vmig_stat_add(&s->st_dev_bytes, d->stage_len[k]);
            vmig_stat_add(&s->st_dev_chunks, 1);
        }
    }
    vmig_stat_add(&s->st_dev_load_ns, vmig_now_ns() - t0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* secondary                                                           */

static void emit(vmig_session *s, uint32_t type, uint64_t id, uint64_t commit_ns, uint64_t bytes,
                 const char *msg)
{
    if (!s->event_cb)
        return;
    vmig_event ev = {.type = type,
                     .pass = __atomic_load_n(&s->st_pass, __ATOMIC_RELAXED),
                     .checkpoint = id,
                     .commit_ns = commit_ns,
                     .ckpt_bytes = bytes,
                     .message = msg};
    s->event_cb(s->event_opaque, s, &ev);
}

/* Wait until every channel has finished `pass` (its SYNC barrier). */
static int wait_pass(vmig_session *s, uint64_t id, uint32_t pass, vmig_error *err)
{
    uint32_t limit_ms = VMIG_MAX(s->p.heartbeat_timeout_ms, s->p.connect_timeout_ms);
    uint64_t deadline = vmig_now_ns() + (uint64_t)limit_ms * 1000000ull;
    pthread_mutex_lock(&s->lock);
    while (s->barrier_pass < pass && !vmig_session_aborted(s) && vmig_now_ns() < deadline)
        vmig_cond_wait_ms(&s->barrier_cv, &s->lock, 5);
    uint32_t got = s->barrier_pass;
    pthread_mutex_unlock(&s->lock);
    /* A checkpoint whose pass is all here counts, even if a channel broke
     * after it. */
    if (got == pass)
        return 0;
    if (got > pass)
        return vmig_error_set(err, VMIG_EPROTO,
                              "CKPT %llu names pass %u, but the channels already finished pass %u",
                              (unsigned long long)id, pass, got);
    if (vmig_session_aborted(s)) {
        pthread_mutex_lock(&s->lock);
        int code = vmig_error_copy(err, &s->err);
        pthread_mutex_unlock(&s->lock);
        return code ? code : VMIG_ECANCELED;
    }
    return vmig_error_set(err, VMIG_EPROTO,
                          "CKPT %llu: the channels did not finish its pass %u within %u ms (they "
                          "are at pass %u)",
                          (unsigned long long)id, pass, limit_ms, got);
}

/* Counts and digests of a checkpoint; all: of all memory (checkpoint 0). */
static int check_ckpt(vmig_session *s, const vmig_wire_ckpt *c, bool all, vmig_error *err)
{
    uint64_t packets = __atomic_load_n(&s->st_packets, __ATOMIC_RELAXED);
    uint64_t normal = __atomic_load_n(&s->st_normal, __ATOMIC_RELAXED);
    uint64_t zero = __atomic_load_n(&s->st_zero, __ATOMIC_RELAXED);
    if (c->end.packets != packets || c->end.normal_pages != normal || c->end.zero_pages != zero)
        return vmig_error_set(err, VMIG_EVERIFY,
                              "checkpoint %llu: source sent %llu packets (%llu normal, %llu zero "
                              "pages), %llu packets (%llu normal, %llu zero pages) arrived",
                              (unsigned long long)c->id, (unsigned long long)c->end.packets,
                              (unsigned long long)c->end.normal_pages,
                              (unsigned long long)c->end.zero_pages, (unsigned long long)packets,
                              (unsigned long long)normal, (unsigned long long)zero);
    if (s->p.verify == VMIG_VERIFY_OFF)
        return 0;
    uint64_t t0 = vmig_now_ns();
    uint8_t(*mine)[16] = calloc(s->nblocks, 16);
    if (!mine)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for digests");
    if (all) {
        for (uint32_t i = 0; i < s->nblocks; i++) {
            vmig_block *b = &s->blocks[i];
            vmig_digest d = s->p.verify == VMIG_VERIFY_FULL ? vmig_block_digest_memory(b, s->nch)
                                                            : vmig_block_digest_hashes(b, true);
            vmig_digest_to_bytes(&d, mine[i]);
        }
    } else {
        vmig_colo_digests(s, true, mine);
    }
    int rc = 0;
    for (uint32_t i = 0; i < s->nblocks && !rc; i++)
        if (memcmp(mine[i], c->end.digests[s->blocks[i].hello_index], 16))
            rc = vmig_error_set(err, VMIG_EVERIFY,
                                "checkpoint %llu, block '%s': digest of the %s does not match "
                                "the primary's",
                                (unsigned long long)c->id, s->blocks[i].name,
                                all ? "received memory" : "checkpoint's pages");
    free(mine);
    vmig_stat_add(&s->st_verify_ns, vmig_now_ns() - t0);
    return rc;
}

static void stat_max(uint64_t *ctr, uint64_t v)
{
    uint64_t cur = __atomic_load_n(ctr, __ATOMIC_RELAXED);
    while (v > cur &&
           !__atomic_compare_exchange_n(ctr, &cur, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* Commit a checkpoint after 0: flush its pages, load its device state. */
static int commit(vmig_session *s, uint64_t id, uint64_t *bytes, vmig_error *err)
{
    vmig_flush_region r[VMIG_WIRE_MAX_BLOCKS];
    *bytes = 0;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        uint64_t pages = 0;
        for (uint64_t w = 0; w < (b->npages + 63) / 64; w++)
            pages += (uint64_t)__builtin_popcountll(b->ckpt_dirty[w]);
        *bytes += pages << b->page_shift;
        r[i] = (vmig_flush_region){.ram = b->host,
                                   .cache = b->cache,
                                   .dirty = b->ckpt_dirty,
                                   .npages = b->npages,
                                   .page_size = b->page_size};
    }
    emit(s, VMIG_EVENT_CKPT_FLUSH, id, 0, *bytes, NULL);
    vmig_flush_stats st;
    int rc = vmig_flusher_run(s->flusher, r, s->nblocks, &st, err);
    if (rc)
        return rc;
    __atomic_store_n(&s->st_ckpt_flush_ns, st.ns, __ATOMIC_RELAXED);
    emit(s, VMIG_EVENT_CKPT_LOAD, id, 0, 0, NULL);
    rc = stage_load(s, id, err);
    stage_drop(s);
    return rc;
}

/* After a failure with the primary maybe gone: is it? A primary that is
 * still there says why on the control channel (ERROR, returned as the
 * error); one that is gone closes it or falls silent. Returns 0 (gone). */
static int confirm_gone(vmig_session *s, vmig_error *err)
{
    uint64_t heard = vmig_now_ns();
    for (;;) {
        unsigned type;
        uint8_t *payload;
        uint32_t len;
        vmig_error e = {0};
        int rc = vmig_colo_read(s, 1u << VMIG_CTL_ERROR | 1u << VMIG_CTL_CKPT, VMIG_CTL_ERROR, 0,
                                &heard, false, &type, &payload, &len, &e);
        if (rc)
            return rc == VMIG_EPROTO ? vmig_error_copy(err, &e) : 0;
        if (type == VMIG_CTL_CKPT) { /* a checkpoint that cannot complete any more */
            free(payload);
            continue;
        }
        vmig_wire_status st;
        rc = vmig_wire_status_decode(payload, len, true, &st, &e);
        free(payload);
        if (rc)
            return vmig_error_copy(err, &e);
        return vmig_error_set(
            err, st.status == VMIG_ECANCELED ? VMIG_ECANCELED : VMIG_EPEER, "the primary %s: %s",
            st.status == VMIG_ECANCELED ? "ended the protection" : "stopped protecting", st.msg);
    }
}

static void join_channels(vmig_session *s)
{
    for (uint32_t i = 0; i < s->nch; i++)
        if (s->ch[i].thread_started) {
            pthread_join(s->ch[i].thread, NULL);
            s->ch[i].thread_started = false;
        }
}

int vmig_colo_dest_loop(vmig_session *s, vmig_error *err)
{
    uint64_t next = 0, heard = vmig_now_ns();
    bool committed = false, from_control = false;
    uint32_t last_pass = 0;
    uint8_t(*dg)[16] = calloc(s->nblocks, 16);
    if (!dg)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for digests");
    vmig_error e = {0};
    int rc;
    for (;;) {
        unsigned type;
        uint8_t *payload;
        uint32_t len;
        from_control = true;
        /* The primary's heartbeats run from the start: silence before
         * checkpoint 0 too means it is gone (nothing to take over yet). */
        rc = vmig_colo_read(s, 1u << VMIG_CTL_CKPT | 1u << VMIG_CTL_ERROR, VMIG_CTL_CKPT, 0, &heard,
                            true, &type, &payload, &len, &e);
        if (rc) {
            /* An abort is a channel's failure (or a cancel), not the control channel's. */
            from_control = !vmig_session_aborted(s);
            break;
        }
        if (type == VMIG_CTL_ERROR) {
            vmig_wire_status st;
            rc = vmig_wire_status_decode(payload, len, true, &st, &e);
            free(payload);
            if (!rc)
                rc = vmig_error_set(&e, st.status == VMIG_ECANCELED ? VMIG_ECANCELED : VMIG_EPEER,
                                    "the primary %s: %s",
                                    st.status == VMIG_ECANCELED ? "ended the protection"
                                                                : "stopped protecting",
                                    st.msg);
            goto out;
        }
        vmig_wire_ckpt c = {.end = {.digests = dg}};
        rc = vmig_wire_ckpt_decode(payload, len, &c, s->nblocks, &e);
        free(payload);
        if (!rc && c.id != next)
            rc = vmig_error_set(&e, VMIG_EPROTO, "CKPT %llu, expected checkpoint %llu",
                                (unsigned long long)c.id, (unsigned long long)next);
        if (!rc && c.pass <= last_pass)
            rc = vmig_error_set(&e, VMIG_EPROTO, "CKPT %llu: pass %u is not after pass %u",
                                (unsigned long long)c.id, c.pass, last_pass);
        if (rc)
            goto out;
        uint64_t t0 = vmig_now_ns();
        from_control = false;
        if ((rc = wait_pass(s, c.id, c.pass, &e)))
            break; /* a channel broke before the checkpoint was whole */
        uint64_t bytes = 0;
        if ((rc = check_ckpt(s, &c, c.id == 0, &e)))
            goto out;
        if (c.id == 0) {
            if ((rc = vmig_dev_dest_finish(s, &e)))
                goto out;
            bytes = s->total_bytes;
            __atomic_store_n(&s->colo_base_pass, c.pass, __ATOMIC_RELEASE);
            __atomic_store_n(&s->state, VMIG_STATE_CHECKPOINTING, __ATOMIC_RELEASE);
        } else {
            if ((rc = stage_complete(s, c.id, &e)) || (rc = commit(s, c.id, &bytes, &e)))
                goto out;
            uint64_t dt = vmig_now_ns() - t0;
            vmig_stat_add(&s->st_ckpts, 1);
            __atomic_store_n(&s->st_ckpt_bytes, bytes, __ATOMIC_RELAXED);
            __atomic_store_n(&s->st_ckpt_commit_ns, dt, __ATOMIC_RELAXED);
            stat_max(&s->st_ckpt_commit_max_ns, dt);
        }
        committed = true;
        last_pass = c.pass;
        next = c.id + 1;
        uint8_t ack[VMIG_ACK_LEN];
        vmig_wire_ack_encode(c.id, ack);
        from_control = true;
        if ((rc = vmig_colo_ctl_write(s, VMIG_CTL_ACK, ack, sizeof(ack), &e)))
            break;
        if (c.id == 0 && (rc = vmig_colo_hb_start(s, &e)))
            goto out;
        heard = vmig_now_ns();
        emit(s, VMIG_EVENT_CHECKPOINT, c.id, vmig_now_ns() - t0, bytes, NULL);
    }
    /* The primary may be gone: it must be, and a checkpoint committed, to take over. */
    if (__atomic_load_n(&s->canceled, __ATOMIC_ACQUIRE) ||
        (rc != VMIG_ECONN && rc != VMIG_ETIMEDOUT && rc != VMIG_EIO))
        goto out;
    if (!committed) {
        vmig_error why = e;
        e = (vmig_error){0};
        rc =
            vmig_error_set(&e, rc,
                           "the primary was lost before checkpoint 0 was complete: nothing to take "
                           "over (%s)",
                           why.msg);
        goto out;
    }
    vmig_error why = e;
    if (!from_control) {
        vmig_error pe = {0};
        int prc = confirm_gone(s, &pe);
        if (prc) {
            e = pe;
            rc = prc;
            goto out;
        }
    }
    /* Failover: stop the channels, drop what the last checkpoint left. */
    vmig_colo_hb_stop(s);
    if (!vmig_session_aborted(s))
        vmig_session_failf(s, VMIG_ECONN, "the primary is gone");
    vmig_session_shutdown_conns(s, true);
    join_channels(s);
    bool partial = s->colo_stage_bytes != 0;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        for (uint64_t w = 0; w < (b->npages + 63) / 64; w++) {
            partial |= b->ckpt_dirty[w] != 0;
            b->ckpt_dirty[w] = 0;
        }
    }
    stage_drop(s);
    __atomic_store_n(&s->st_ckpt_discarded, partial ? 1u : 0u, __ATOMIC_RELAXED);
    pthread_mutex_lock(&s->lock);
    s->err.code = 0;
    s->err.msg[0] = 0;
    pthread_mutex_unlock(&s->lock);
    char msg[VMIG_ERROR_MSG_MAX + 160];
    snprintf(msg, sizeof(msg), "the primary is gone (%s): running checkpoint %llu%s", why.msg,
             (unsigned long long)(next - 1),
             partial ? "; the checkpoint in flight was discarded" : "");
    emit(s, VMIG_EVENT_FAILOVER, next - 1, 0, 0, msg);
    free(dg);
    return 0;
out:
    vmig_colo_hb_stop(s);
    free(dg);
    return vmig_error_copy(err, &e);
}

/* Session lifetime, RAM blocks, errors, pacing and statistics. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include "../ram/digest.h"
#include "../ram/dirty.h"
#include "session.h"

int vmig_session_create(vmig_session **out, enum vmig_role role, const vmig_params *params,
                        vmig_error *err)
{
    if (!out || (role != VMIG_ROLE_SOURCE && role != VMIG_ROLE_DEST))
        return vmig_error_set(err, VMIG_EINVAL, "vmig_session_create: bad arguments");
    vmig_params p;
    if (params) {
        p = *params;
        int rc = vmig_params_check(&p, err);
        if (rc)
            return rc;
    } else {
        vmig_params_init(&p);
    }
    vmig_session *s = calloc(1, sizeof(*s));
    if (!s)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a session");
    s->role = role;
    s->p = p;
    s->zero = vmig_zero_best();
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->rate_lock, NULL);
    pthread_mutex_init(&s->auto_lock, NULL);
    pthread_mutex_init(&s->dev_pool_lock, NULL);
    pthread_mutex_init(&s->ctl_wlock, NULL);
    pthread_cond_init(&s->space, NULL);
    pthread_cond_init(&s->barrier_cv, NULL);
    pthread_cond_init(&s->resume_cv, NULL);
    for (int i = 0; i < VMIG_MAX_CHANNELS; i++) {
        s->ch[i].s = s;
        s->ch[i].id = (uint32_t)i;
        pthread_cond_init(&s->ch[i].work, NULL);
    }
    s->state = VMIG_STATE_NEW;
    vmig_fault_from_env(s);
    *out = s;
    return 0;
}

void vmig_session_free(vmig_session *s)
{
    if (!s)
        return;
    vmig_session_reset_run(s);
    vmig_listener_close(s->listener);
    for (uint32_t i = 0; i < s->nblocks; i++) {
        free(s->blocks[i].page_hash);
        free(s->blocks[i].received);
        free(s->blocks[i].resident);
        free(s->blocks[i].dirty);
        free(s->blocks[i].dirty_new);
        free(s->blocks[i].carry);
    }
    free(s->blocks);
    free(s->devs);
    for (int i = 0; i < VMIG_MAX_CHANNELS; i++)
        pthread_cond_destroy(&s->ch[i].work);
    pthread_cond_destroy(&s->space);
    pthread_cond_destroy(&s->barrier_cv);
    pthread_cond_destroy(&s->resume_cv);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->rate_lock);
    pthread_mutex_destroy(&s->auto_lock);
    pthread_mutex_destroy(&s->dev_pool_lock);
    pthread_mutex_destroy(&s->ctl_wlock);
    free(s);
}

static bool running(vmig_session *s)
{
    uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    return st == VMIG_STATE_SETUP || st == VMIG_STATE_ACTIVE || st == VMIG_STATE_VERIFYING ||
           st == VMIG_STATE_CHECKPOINTING;
}

int vmig_ram_add(vmig_session *s, const char *name, void *host, uint64_t length, uint32_t page_size,
                 unsigned flags, vmig_error *err)
{
    if (!s || !name)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_ram_add: NULL argument");
    if (running(s) && s->role == VMIG_ROLE_SOURCE)
        return vmig_error_set(err, VMIG_ESTATE, "block '%s': cannot add RAM while migrating", name);
    size_t nl = strnlen(name, VMIG_BLOCK_NAME_MAX + 1);
    if (nl == 0 || nl > VMIG_BLOCK_NAME_MAX)
        return vmig_error_set(err, VMIG_EINVAL, "block name must be 1..%d bytes",
                              VMIG_BLOCK_NAME_MAX);
    if (page_size == 0)
        page_size = 4096;
    if (!vmig_is_pow2(page_size) || page_size < VMIG_WIRE_MIN_PAGE_SIZE ||
        page_size > VMIG_WIRE_MAX_PAGE_SIZE)
        return vmig_error_set(err, VMIG_EINVAL,
                              "block '%s': page size %u is not a power of two in 4096..2 MiB", name,
                              page_size);
    if ((uint64_t)page_size * s->p.packet_pages > VMIG_WIRE_MAX_PAYLOAD)
        return vmig_error_set(err, VMIG_EINVAL,
                              "block '%s': page size %u x packet-pages %u exceeds the %u-byte "
                              "packet payload limit",
                              name, page_size, s->p.packet_pages, VMIG_WIRE_MAX_PAYLOAD);
    if (!host || length == 0 || length % page_size || (uintptr_t)host % VMIG_WIRE_MIN_PAGE_SIZE ||
        length > VMIG_WIRE_MAX_BLOCK_LEN)
        return vmig_error_set(err, VMIG_EINVAL,
                              "block '%s': length %llu must be a non-zero multiple of the page "
                              "size %u (at most 2^48) and host %p 4096-byte aligned",
                              name, (unsigned long long)length, page_size, host);
    if (flags & ~VMIG_RAM_ZEROED)
        return vmig_error_set(err, VMIG_EINVAL, "block '%s': unknown flags 0x%x", name, flags);
    if (vmig_block_find(s, name, NULL))
        return vmig_error_set(err, VMIG_EEXIST, "block '%s' is already registered", name);
    if (s->nblocks >= VMIG_WIRE_MAX_BLOCKS)
        return vmig_error_set(err, VMIG_EINVAL, "too many blocks (limit %d)", VMIG_WIRE_MAX_BLOCKS);
    if (s->nblocks == s->blocks_cap) {
        uint32_t cap = s->blocks_cap ? s->blocks_cap * 2 : 8;
        vmig_block *nb = realloc(s->blocks, sizeof(*nb) * cap);
        if (!nb)
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for block '%s'", name);
        s->blocks = nb;
        s->blocks_cap = cap;
    }
    vmig_block *b = &s->blocks[s->nblocks];
    memset(b, 0, sizeof(*b));
    memcpy(b->name, name, nl);
    b->host = host;
    b->length = length;
    b->page_size = page_size;
    b->page_shift = (uint32_t)__builtin_ctz(page_size);
    b->flags = flags;
    b->npages = length / page_size;
    s->nblocks++;
    return 0;
}

vmig_block *vmig_block_find(vmig_session *s, const char *name, uint32_t *hint)
{
    if (hint && *hint < s->nblocks && !strcmp(s->blocks[*hint].name, name))
        return &s->blocks[*hint];
    for (uint32_t i = 0; i < s->nblocks; i++) {
        if (!strcmp(s->blocks[i].name, name)) {
            if (hint)
                *hint = i;
            return &s->blocks[i];
        }
    }
    return NULL;
}

int vmig_set_vm_ops(vmig_session *s, const vmig_vm_ops *ops, void *opaque)
{
    if (!s)
        return VMIG_EINVAL;
    if (running(s))
        return VMIG_ESTATE;
    if (ops)
        s->ops = *ops;
    else
        memset(&s->ops, 0, sizeof(s->ops));
    s->ops_opaque = opaque;
    return 0;
}

int vmig_set_event_cb(vmig_session *s, vmig_event_cb cb, void *opaque)
{
    if (!s)
        return VMIG_EINVAL;
    if (running(s))
        return VMIG_ESTATE;
    s->event_cb = cb;
    s->event_opaque = opaque;
    return 0;
}

int vmig_dirty_track_probe(uint32_t mode, vmig_error *err)
{
    switch (mode) {
    case VMIG_DIRTY_WP:
        return vmig_tracker_probe(VMIG_TRACKER_AUTO, err);
    case VMIG_DIRTY_WP_ASYNC:
        return vmig_tracker_probe(VMIG_TRACKER_WP_ASYNC, err);
    case VMIG_DIRTY_WP_SYNC:
        return vmig_tracker_probe(VMIG_TRACKER_WP_SYNC, err);
    default:
        return vmig_error_set(err, VMIG_EINVAL, "dirty-track %s is not a built-in tracker",
                              vmig_dirty_track_name(mode));
    }
}

int vmig_incoming_set_block_cb(vmig_session *s, vmig_block_cb cb, void *opaque)
{
    if (!s || s->role != VMIG_ROLE_DEST)
        return VMIG_EINVAL;
    s->block_cb = cb;
    s->block_cb_opaque = opaque;
    return 0;
}

/*
 * Which pages of a destination block are resident already (a VMM that
 * preallocated its RAM, a file reused in place)? One mincore() pass over
 * the block at setup, so that prefault=ahead populates only the others:
 * populating resident pages costs a page-table walk per run for nothing.
 * Works in the system's base pages; a block page counts as resident when
 * its first base page is. If mincore fails, everything counts as absent
 * (populated as before: slower, never wrong).
 */
static void block_scan_resident(vmig_block *b)
{
    enum { CHUNK = 65536 }; /* base pages per mincore() call */
    static const size_t base = 4096;
    unsigned char vec[CHUNK];
    uint64_t nbase = b->length / base, per = b->page_size / base;
    for (uint64_t first = 0; first < nbase; first += CHUNK) {
        uint64_t n = VMIG_MIN((uint64_t)CHUNK, nbase - first);
        if (mincore(b->host + first * base, n * base, vec))
            return;
        for (uint64_t k = 0; k < n; k += per) {
            uint64_t pg = (first + k) / per;
            if (vec[k] & 1)
                b->resident[pg >> 6] |= 1ull << (pg & 63);
        }
    }
}

int vmig_session_alloc_block_state(vmig_session *s, bool dest, vmig_error *err)
{
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        free(b->page_hash);
        free(b->received);
        free(b->resident);
        b->page_hash = NULL;
        b->received = NULL;
        b->resident = NULL;
        if (s->p.verify == VMIG_VERIFY_ON) {
            b->page_hash = malloc(sizeof(uint64_t) * b->npages);
            if (!b->page_hash)
                return vmig_error_set(err, VMIG_ENOMEM, "block '%s': no memory for page hashes",
                                      b->name);
            /* Source: 0 marks "never sent", which cannot match the
             * destination. Destination: fresh zeroed memory holds zero pages. */
            uint64_t init =
                dest && (b->flags & VMIG_RAM_ZEROED) ? vmig_zero_page_hash(b->page_size) : 0;
            for (uint64_t p = 0; p < b->npages; p++)
                b->page_hash[p] = init;
        }
        if (dest) {
            b->received = calloc((b->npages + 63) / 64, sizeof(uint64_t));
            if (!b->received)
                return vmig_error_set(err, VMIG_ENOMEM, "block '%s': no memory for its bitmap",
                                      b->name);
            if (s->p.prefault == VMIG_PREFAULT_AHEAD) {
                b->resident = calloc((b->npages + 63) / 64, sizeof(uint64_t));
                if (!b->resident)
                    return vmig_error_set(err, VMIG_ENOMEM, "block '%s': no memory for its bitmap",
                                          b->name);
                block_scan_resident(b);
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* errors and cancellation                                             */

void vmig_session_shutdown_conns(vmig_session *s, bool control)
{
    /* Under the lock: the caller thread may be installing a connection that
     * it has just accepted or connected. */
    pthread_mutex_lock(&s->lock);
    if (control)
        vmig_conn_shutdown(s->control);
    for (uint32_t i = 0; i < s->nch; i++)
        vmig_conn_shutdown(s->ch[i].conn);
    pthread_mutex_unlock(&s->lock);
}

static void wake_all(vmig_session *s)
{
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->space);
    pthread_cond_broadcast(&s->barrier_cv);
    pthread_cond_broadcast(&s->resume_cv);
    __atomic_store_n(&s->acc_stop, 1, __ATOMIC_RELEASE); /* no more resumes */
    for (uint32_t i = 0; i < VMIG_MAX_CHANNELS; i++)
        pthread_cond_broadcast(&s->ch[i].work);
    pthread_mutex_unlock(&s->lock);
}

void vmig_session_fail(vmig_session *s, const vmig_error *e)
{
    pthread_mutex_lock(&s->lock);
    if (__atomic_load_n(&s->canceled, __ATOMIC_ACQUIRE) && s->err.code == 0)
        vmig_error_set(&s->err, VMIG_ECANCELED, "migration canceled");
    vmig_error_copy(&s->err, e);
    vmig_error first = s->err;
    pthread_mutex_unlock(&s->lock);
    __atomic_store_n(&s->abort, 1, __ATOMIC_RELEASE);
    wake_all(s);
    vmig_dev_fail_all(s, &first);
}

int vmig_session_failf(vmig_session *s, int code, const char *fmt, ...)
{
    vmig_error e = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    e.code = code;
    vmig_session_fail(s, &e);
    return code;
}

void vmig_cancel(vmig_session *s)
{
    if (!s)
        return;
    __atomic_store_n(&s->canceled, 1, __ATOMIC_RELEASE);
    if (running(s)) {
        vmig_session_failf(s, VMIG_ECANCELED, "migration canceled");
        /* Make blocked socket calls return; connections are closed only
         * by the thread that runs the migration, after joining. A primary
         * of continuous checkpoints keeps its control channel: it must
         * tell the secondary not to take over. */
        vmig_session_shutdown_conns(
            s, !(__atomic_load_n(&s->colo, __ATOMIC_ACQUIRE) && s->role == VMIG_ROLE_SOURCE));
    }
}

/* An ERROR frame on c (the caller serializes writes). */
static void write_error(vmig_conn *c, int code, const char *msg)
{
    uint8_t buf[VMIG_CTL_HDR_LEN + 8 + VMIG_WIRE_MAX_MSG + VMIG_CTL_TRAILER_LEN];
    char m[VMIG_WIRE_MAX_MSG + 1];
    snprintf(m, sizeof(m), "%s", msg);
    int n = vmig_wire_status_encode(code < 0 ? code : VMIG_EPEER, m, buf + VMIG_CTL_HDR_LEN,
                                    sizeof(buf) - VMIG_CTL_HDR_LEN - VMIG_CTL_TRAILER_LEN);
    if (n < 0)
        return;
    size_t len = vmig_wire_ctl_frame(buf, VMIG_CTL_ERROR, (uint32_t)n);
    vmig_conn_write_all(c, buf, len, "ERROR", NULL);
}

void vmig_control_send_error(vmig_session *s, int code, const char *msg)
{
    if (!s->control)
        return;
    pthread_mutex_lock(&s->ctl_wlock);
    write_error(s->control, code, msg);
    pthread_mutex_unlock(&s->ctl_wlock);
}

/* A destination with TLS and a source without: the source's handshake and
 * HELLO came in the clear. Answer in the clear, as a plain destination
 * would, so that the source says why too: read what it sent (closing on
 * unread bytes would reset the connection before it reads the answer),
 * then an ERROR frame. */
static void refuse_plain_source(vmig_conn *c)
{
    uint8_t sink[4096];
    for (int i = 0; i < 16 && c->ops->wait_readable(c, 200) == 1; i++) {
        struct iovec v = {sink, sizeof(sink)};
        if (c->ops->readv(c, &v, 1) <= 0)
            break;
    }
    write_error(c, VMIG_EAUTH, "the destination requires TLS: set tls (and tls-creds) here too");
}

void vmig_session_reset_run(vmig_session *s)
{
    if (s->role == VMIG_ROLE_SOURCE)
        vmig_source_accel_end(s);
    vmig_colo_end_run(s);
    vmig_dev_end_run(s);
    for (uint32_t i = 0; i < VMIG_MAX_CHANNELS; i++) {
        vmig_channel *c = &s->ch[i];
        vmig_conn_close(c->conn);
        c->conn = NULL;
        free(c->hdr);
        free(c->iov);
        free(c->offsets);
        free(c->zbufs);
        free(c->zbufs_next);
        free(c->zres);
        c->hdr = NULL;
        c->iov = NULL;
        c->offsets = NULL;
        c->zbufs = c->zbufs_next = NULL;
        c->zres = NULL;
        for (int j = 0; j < VMIG_QUEUE_DEPTH; j++) {
            free(c->jobs[j].offsets);
            c->jobs[j].offsets = NULL;
        }
        vmig_channel_codec_reset(c);
        free(c->cbuf);
        free(c->pages);
        c->cbuf = NULL;
        c->cbuf_cap = 0;
        c->pages = NULL;
        c->head = c->count = 0;
        c->last_seq = 0;
        c->synced_pass = 0;
        c->fin = false;
        c->thread_started = false;
        vmig_resume_free(c);
        c->exited = false;
    }
    s->resume = false;
    __atomic_store_n(&s->acc_stop, 0, __ATOMIC_RELAXED);
    vmig_conn_close(s->control);
    s->control = NULL;
    s->nch = 0;
    vmig_tls_free(s->tls); /* after every connection that used it */
    s->tls = NULL;
}

int vmig_session_tls_begin(vmig_session *s, vmig_error *err)
{
    if (s->p.tls == VMIG_TLS_MODE_OFF) {
        /* Credentials without tls=: the user meant TLS; never go in the
         * clear silently. */
        const char *set = s->p.tls_creds[0]          ? "tls-creds"
                          : s->p.tls_authz[0]        ? "tls-authz"
                          : s->p.tls_psk_identity[0] ? "tls-psk-identity"
                          : s->p.tls_hostname[0]     ? "tls-hostname"
                          : s->p.tls_priority[0]     ? "tls-priority"
                                                     : NULL;
        if (set)
            return vmig_error_set(err, VMIG_EINVAL,
                                  "%s is set but tls is off: set tls=x509 or tls=psk (or drop %s)",
                                  set, set);
        return 0;
    }
    if (s->tls)
        return 0;
    vmig_tls_config cfg = {.mode = s->p.tls,
                           .creds = s->p.tls_creds,
                           .authz = s->p.tls_authz,
                           .psk_identity = s->p.tls_psk_identity,
                           .priority = s->p.tls_priority,
                           .ktls = s->p.tls_ktls,
                           .gnutls_records = s->p.tls_records == VMIG_TLS_RECORDS_GNUTLS};
    return vmig_tls_create(&s->tls, &cfg, s->role == VMIG_ROLE_DEST, err);
}

int vmig_session_tls_wrap(vmig_session *s, vmig_conn **c, const char *hostname, vmig_error *err)
{
    if (!s->tls)
        return 0;
    if (s->role == VMIG_ROLE_DEST &&
        vmig_tls_peer_is_plain((*c)->fd, (int)s->p.connect_timeout_ms)) {
        refuse_plain_source(*c);
        return vmig_error_set(err, VMIG_EAUTH,
                              "%s: the source does not speak TLS (it sent its handshake in the "
                              "clear): set tls on both sides",
                              (*c)->peer);
    }
    int rc = vmig_tls_handshake(s->tls, c, hostname, (int)s->p.connect_timeout_ms, err);
    if (rc)
        return rc;
    char desc[64];
    bool ktls;
    vmig_conn_tls_info(*c, desc, sizeof(desc), &ktls);
    pthread_mutex_lock(&s->lock);
    if (!s->tls_desc[0])
        memcpy(s->tls_desc, desc, sizeof(desc));
    s->st_tls_conns++;
    s->st_tls_ktls += ktls;
    if (!ktls && !s->tls_ktls_why[0])
        vmig_tls_ktls_why_not(s->tls_ktls_why, sizeof(s->tls_ktls_why));
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Start statistics and state for a new run. vmig_stats_get() may run on
 * another thread meanwhile: what it reads atomically is reset with atomic
 * stores, what it reads under the lock is reset under the lock. */
static void run_begin(vmig_session *s)
{
#define Z(x) __atomic_store_n(&(x), 0, __ATOMIC_RELAXED)
    pthread_mutex_lock(&s->lock);
    s->err.code = 0;
    s->err.msg[0] = 0;
    s->deflate_desc[0] = 0;
    s->tls_desc[0] = s->tls_ktls_why[0] = 0;
    s->st_tls_conns = s->st_tls_ktls = 0;
    memset(&s->st_accel, 0, sizeof(s->st_accel));
    pthread_mutex_unlock(&s->lock);
    __atomic_store_n(&s->abort, 0, __ATOMIC_RELEASE);
    s->barrier_count = 0;
    s->barrier_gen = 0;
    s->rate_next_ns = 0;
    Z(s->st_wire_bytes), Z(s->st_ram_bytes), Z(s->st_normal), Z(s->st_zero), Z(s->st_packets);
    Z(s->st_verify_ns), Z(s->st_caller_cpu_ns);
    Z(s->st_pass), Z(s->st_throttle), Z(s->st_throttle_max), Z(s->st_forced);
    Z(s->st_dirty_pages), Z(s->st_remaining), Z(s->st_dirty_rate), Z(s->st_bandwidth);
    Z(s->st_expected_ns), Z(s->st_downtime_ns), Z(s->st_sync_ns);
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++) {
        vmig_codec_stats *cs = &s->st_codec[k];
        Z(cs->packets), Z(cs->pages), Z(cs->in_bytes), Z(cs->out_bytes), Z(cs->ns);
    }
    Z(s->st_dev_chunks), Z(s->st_dev_bytes), Z(s->st_dev_iter_bytes), Z(s->st_dev_save_ns);
    Z(s->st_dev_load_ns), Z(s->st_dev_held_max), Z(s->st_dev_cpu_ns);
    s->barrier_pass = 0;
    Z(s->st_ckpts), Z(s->st_ckpt_bytes), Z(s->st_ckpt_pause_ns), Z(s->st_ckpt_pause_max_ns);
    Z(s->st_ckpt_pause_total_ns), Z(s->st_ckpt_commit_ns), Z(s->st_ckpt_commit_max_ns);
    Z(s->st_ckpt_flush_ns), Z(s->st_ckpt_discarded), Z(s->st_flush_threads);
    Z(s->st_reconnects), Z(s->st_resent_packets), Z(s->st_resent_bytes), Z(s->st_window_waits);
    Z(s->colo_request);
    s->accel_noticed = false;
    s->dest_codecs = 1u << VMIG_CODEC_NONE;
    s->auto_mask = 1u << VMIG_CODEC_NONE;
    s->pages_volatile = 0;
    __atomic_store_n(&s->dirty_mode, VMIG_DIRTY_NONE, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < VMIG_MAX_CHANNELS; i++) {
        vmig_channel *c = &s->ch[i];
        Z(c->st_bytes), Z(c->st_packets), Z(c->st_busy_ns), Z(c->st_cpu_ns);
        c->fault_pkts = 0; /* a fault's packet counts from each run's start */
    }
    Z(s->alloc_calls);
    uint64_t total = 0;
    for (uint32_t i = 0; i < s->nblocks; i++)
        total += s->blocks[i].length;
    __atomic_store_n(&s->total_bytes, total, __ATOMIC_RELAXED);
    __atomic_store_n(&s->start_ns, vmig_now_ns(), __ATOMIC_RELAXED);
    Z(s->end_ns);
    s->caller_cpu_start = vmig_thread_cpu_ns();
    __atomic_store_n(&s->state, VMIG_STATE_SETUP, __ATOMIC_RELEASE);
#undef Z
}

int vmig_session_finish(vmig_session *s, int rc, vmig_error *err)
{
    pthread_mutex_lock(&s->lock);
    if (rc && s->err.code == 0)
        vmig_error_set(&s->err, rc, "%s", vmig_strerror(rc));
    if (s->err.code && __atomic_load_n(&s->canceled, __ATOMIC_ACQUIRE) &&
        s->err.code != VMIG_ECANCELED) {
        /* A cancel makes the sockets fail: report the cancel, not the echo. */
        s->err.code = VMIG_ECANCELED;
        snprintf(s->err.msg, sizeof(s->err.msg), "migration canceled");
    }
    rc = s->err.code;
    pthread_mutex_unlock(&s->lock);
    vmig_error_copy(err, &s->err);
    __atomic_store_n(&s->st_caller_cpu_ns, vmig_thread_cpu_ns() - s->caller_cpu_start,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->end_ns, vmig_now_ns(), __ATOMIC_RELEASE);
    __atomic_store_n(&s->state,
                     rc == 0                ? VMIG_STATE_COMPLETED
                     : rc == VMIG_ECANCELED ? VMIG_STATE_CANCELED
                                            : VMIG_STATE_FAILED,
                     __ATOMIC_RELEASE);
    return rc;
}

/* ------------------------------------------------------------------ */
/* entry points                                                        */

int vmig_migrate(vmig_session *s, const char *uri, vmig_error *err)
{
    if (!s || !uri)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_migrate: NULL argument");
    if (s->role != VMIG_ROLE_SOURCE)
        return vmig_error_set(err, VMIG_ESTATE, "vmig_migrate needs a source session");
    if (running(s))
        return vmig_error_set(err, VMIG_ESTATE, "a migration is already running");
    if (s->nblocks == 0)
        return vmig_error_set(err, VMIG_EINVAL, "no RAM block registered");
    if (getrandom(s->uuid, sizeof(s->uuid), 0) != sizeof(s->uuid))
        return vmig_error_set(err, VMIG_EIO, "getrandom: %s", strerror(errno));
    __atomic_store_n(&s->canceled, 0, __ATOMIC_RELEASE);
    run_begin(s);
    int rc = vmig_source_run(s, uri);
    rc = vmig_session_finish(s, rc, err);
    vmig_session_reset_run(s);
    vmig_source_accel_notice(s);
    if (s->event_cb) {
        vmig_event ev = {.type = VMIG_EVENT_DONE,
                         .pass = __atomic_load_n(&s->st_pass, __ATOMIC_RELAXED),
                         .remaining_bytes = __atomic_load_n(&s->st_remaining, __ATOMIC_RELAXED),
                         .result = rc};
        s->event_cb(s->event_opaque, s, &ev);
    }
    return rc;
}

int vmig_incoming_listen(vmig_session *s, const char *uri, vmig_error *err)
{
    if (!s || !uri)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_incoming_listen: NULL argument");
    if (s->role != VMIG_ROLE_DEST)
        return vmig_error_set(err, VMIG_ESTATE, "vmig_incoming_listen needs a destination session");
    if (s->listener)
        return vmig_error_set(err, VMIG_ESTATE, "already listening");
    return vmig_listen(uri, &s->listener, err);
}

int vmig_incoming_uri(vmig_session *s, char *buf, size_t len)
{
    if (!s || !s->listener || !buf || !len)
        return VMIG_ESTATE;
    s->listener->ops->uri(s->listener, buf, len);
    return 0;
}

int vmig_colo_primary(vmig_session *s, const char *uri, vmig_error *err)
{
    if (!s || s->role != VMIG_ROLE_SOURCE)
        return vmig_error_set(err, VMIG_ESTATE, "vmig_colo_primary needs a source session");
    s->colo_protected = false;
    __atomic_store_n(&s->colo, true, __ATOMIC_RELEASE);
    int rc = vmig_migrate(s, uri, err);
    __atomic_store_n(&s->colo, false, __ATOMIC_RELEASE);
    /* vmig_migrate returns 0 only after a switchover, which this mode never does. */
    if (rc == 0)
        rc = vmig_error_set(err, VMIG_EIO, "continuous checkpoints ended without a reason");
    else if (rc != VMIG_ECANCELED && err) {
        vmig_error why = *err;
        *err = (vmig_error){0};
        if (s->colo_protected)
            vmig_error_set(err, rc, "the secondary is lost, the VM runs on here unprotected: %s",
                           why.msg);
        else
            vmig_error_set(err, rc,
                           "no protection: the secondary did not take checkpoint 0; the VM runs "
                           "on here: %s",
                           why.msg);
    }
    return rc;
}

int vmig_colo_checkpoint_request(vmig_session *s)
{
    if (!s || s->role != VMIG_ROLE_SOURCE ||
        __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != VMIG_STATE_CHECKPOINTING)
        return VMIG_ESTATE;
    __atomic_store_n(&s->colo_request, 1, __ATOMIC_RELEASE);
    return 0;
}

int vmig_colo_secondary(vmig_session *s, vmig_error *err)
{
    if (!s || s->role != VMIG_ROLE_DEST)
        return vmig_error_set(err, VMIG_ESTATE, "vmig_colo_secondary needs a destination session");
    __atomic_store_n(&s->colo, true, __ATOMIC_RELEASE);
    int rc = vmig_incoming_run(s, err);
    __atomic_store_n(&s->colo, false, __ATOMIC_RELEASE);
    return rc;
}

int vmig_incoming_run(vmig_session *s, vmig_error *err)
{
    if (!s)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_incoming_run: NULL session");
    if (s->role != VMIG_ROLE_DEST || !s->listener)
        return vmig_error_set(err, VMIG_ESTATE,
                              "vmig_incoming_run needs a destination session that listens");
    if (running(s))
        return vmig_error_set(err, VMIG_ESTATE, "an incoming migration is already running");
    __atomic_store_n(&s->canceled, 0, __ATOMIC_RELEASE);
    run_begin(s);
    int rc = vmig_dest_run(s);
    rc = vmig_session_finish(s, rc, err);
    vmig_session_reset_run(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* pacing                                                              */

void vmig_rate_wait(vmig_session *s, uint64_t bytes)
{
    uint64_t rate = s->p.max_bandwidth;
    if (!rate)
        return;
    /* A virtual clock: each send reserves bytes/rate seconds after the
     * previous reservation. An idle link may bank at most 10 ms of credit,
     * so the rate holds over any window longer than that. */
    uint64_t cost = (uint64_t)((double)bytes * 1e9 / (double)rate);
    pthread_mutex_lock(&s->rate_lock);
    uint64_t now = vmig_now_ns();
    uint64_t slot = s->rate_next_ns;
    if (slot + 10000000ull < now)
        slot = now - 10000000ull;
    s->rate_next_ns = slot + cost;
    pthread_mutex_unlock(&s->rate_lock);
    while (slot > now && !vmig_session_aborted(s)) {
        uint64_t d = VMIG_MIN(slot - now, 50000000ull); /* re-check abort every 50 ms */
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
        now = vmig_now_ns();
    }
}

/* ------------------------------------------------------------------ */
/* statistics                                                          */

const char *vmig_state_name(uint32_t state)
{
    static const char *const names[] = {"new",       "setup",  "active",   "verifying",
                                        "completed", "failed", "canceled", "checkpointing"};
    return state < VMIG_ARRAY_SIZE(names) ? names[state] : "unknown";
}

int vmig_stats_get(vmig_session *s, vmig_stats *o)
{
    if (!s || !o)
        return VMIG_EINVAL;
    memset(o, 0, sizeof(*o));
#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
    o->state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    o->channels = LD(s->p.channels);
    uint64_t end = __atomic_load_n(&s->end_ns, __ATOMIC_ACQUIRE);
    if (o->state != VMIG_STATE_NEW)
        o->elapsed_ns = (end ? end : vmig_now_ns()) - LD(s->start_ns);
    o->total_bytes = LD(s->total_bytes);
    o->normal_pages = LD(s->st_normal);
    o->zero_pages = LD(s->st_zero);
    o->packets = LD(s->st_packets);
    o->wire_bytes = LD(s->st_wire_bytes);
    o->verify_ns = LD(s->st_verify_ns);
    /* Page counts are in each block's page size; blocks of one session
     * usually share it, so convert with the per-packet accounting instead. */
    o->cpu_ns = LD(s->st_caller_cpu_ns);
    if (!end && (o->state == VMIG_STATE_ACTIVE || o->state == VMIG_STATE_VERIFYING)) {
        struct timespec ts;
        if (clock_gettime(s->caller_clock, &ts) == 0)
            o->cpu_ns =
                (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - s->caller_cpu_start;
    }
    for (uint32_t i = 0; i < o->channels && i < VMIG_MAX_CHANNELS; i++) {
        o->ch[i].bytes = LD(s->ch[i].st_bytes);
        o->ch[i].packets = LD(s->ch[i].st_packets);
        o->ch[i].busy_ns = LD(s->ch[i].st_busy_ns);
        o->ch[i].cpu_ns = LD(s->ch[i].st_cpu_ns);
        o->cpu_ns += LD(s->ch[i].st_cpu_ns);
    }
    if (s->role == VMIG_ROLE_SOURCE)
        vmig_source_accel_stats(s, &o->accel);
    o->cpu_ns += o->accel.device_cpu_ns;
    o->cpu_ns += LD(s->st_dev_cpu_ns);
    o->ram_bytes = LD(s->st_ram_bytes);
    o->dirty_track = LD(s->dirty_mode);
    o->pass = LD(s->st_pass);
    o->dirty_pages = LD(s->st_dirty_pages);
    o->remaining_bytes = LD(s->st_remaining);
    o->dirty_rate = LD(s->st_dirty_rate);
    o->bandwidth = LD(s->st_bandwidth);
    o->expected_downtime_ns = LD(s->st_expected_ns);
    o->throttle_pct = LD(s->st_throttle);
    o->throttle_max_pct = LD(s->st_throttle_max);
    o->downtime_ns = LD(s->st_downtime_ns);
    o->sync_ns = LD(s->st_sync_ns);
    o->forced = LD(s->st_forced);
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++) {
        o->codec[k].packets = LD(s->st_codec[k].packets);
        o->codec[k].pages = LD(s->st_codec[k].pages);
        o->codec[k].in_bytes = LD(s->st_codec[k].in_bytes);
        o->codec[k].out_bytes = LD(s->st_codec[k].out_bytes);
        o->codec[k].ns = LD(s->st_codec[k].ns);
    }
    o->devices = s->ndevs;
    o->dev_path = LD(s->dev_path);
    o->dev_chunks = (uint32_t)LD(s->st_dev_chunks);
    o->dev_bytes = LD(s->st_dev_bytes);
    o->dev_iter_bytes = LD(s->st_dev_iter_bytes);
    o->dev_save_ns = LD(s->st_dev_save_ns);
    o->dev_load_ns = LD(s->st_dev_load_ns);
    o->dev_held_max = LD(s->st_dev_held_max);
    o->checkpoints = LD(s->st_ckpts);
    o->ckpt_last_bytes = LD(s->st_ckpt_bytes);
    o->ckpt_pause_ns = LD(s->st_ckpt_pause_ns);
    o->ckpt_pause_max_ns = LD(s->st_ckpt_pause_max_ns);
    o->ckpt_pause_total_ns = LD(s->st_ckpt_pause_total_ns);
    o->ckpt_commit_ns = LD(s->st_ckpt_commit_ns);
    o->ckpt_commit_max_ns = LD(s->st_ckpt_commit_max_ns);
    o->ckpt_flush_ns = LD(s->st_ckpt_flush_ns);
    o->flush_threads = LD(s->st_flush_threads);
    o->ckpt_discarded = LD(s->st_ckpt_discarded);
    o->faults_fired = (uint32_t)LD(s->st_faults);
    o->reconnects = (uint32_t)LD(s->st_reconnects);
    o->resent_packets = LD(s->st_resent_packets);
    o->window_waits = LD(s->st_window_waits);
    o->resent_bytes = LD(s->st_resent_bytes);
    pthread_mutex_lock(&s->lock);
    memcpy(o->deflate_path, s->deflate_desc, sizeof(o->deflate_path));
    memcpy(o->tls, s->tls_desc, sizeof(o->tls));
    o->tls_conns = s->st_tls_conns;
    o->tls_ktls_conns = s->st_tls_ktls;
    memcpy(o->tls_ktls_why, s->tls_ktls_why, sizeof(o->tls_ktls_why));
    pthread_mutex_unlock(&s->lock);
    if (o->elapsed_ns)
        o->mbps = (double)o->wire_bytes * 1e3 / (double)o->elapsed_ns;
#undef LD
    return 0;
}

/* ------------------------------------------------------------------ */
/* block digests                                                       */

typedef struct digest_job {
    const vmig_block *b;
    uint64_t next_chunk; /* atomic */
    pthread_mutex_t lock;
    vmig_digest sum;
} digest_job;

#define DIGEST_CHUNK_PAGES 4096u

static void digest_sum(vmig_digest *acc, const vmig_digest *d)
{
    uint64_t lo = acc->lo + d->lo;
    acc->hi += d->hi + (lo < acc->lo);
    acc->lo = lo;
}

static void *digest_worker(void *arg)
{
    digest_job *j = arg;
    const vmig_block *b = j->b;
    vmig_digest part = {0, 0};
    for (;;) {
        uint64_t c = __atomic_fetch_add(&j->next_chunk, 1, __ATOMIC_RELAXED);
        uint64_t first = c * DIGEST_CHUNK_PAGES;
        if (first >= b->npages)
            break;
        uint64_t last = VMIG_MIN(first + DIGEST_CHUNK_PAGES, b->npages);
        for (uint64_t i = first; i < last; i++)
            vmig_digest_add(&part, i, vmig_page_hash(b->host + (i << b->page_shift), b->page_size));
    }
    pthread_mutex_lock(&j->lock);
    digest_sum(&j->sum, &part);
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

vmig_digest vmig_block_digest_memory(const vmig_block *b, uint32_t nthreads)
{
    digest_job j = {.b = b};
    pthread_mutex_init(&j.lock, NULL);
    pthread_t th[VMIG_MAX_CHANNELS];
    uint32_t started = 0;
    nthreads = VMIG_MAX(1, VMIG_MIN(nthreads, VMIG_MAX_CHANNELS));
    for (uint32_t i = 1; i < nthreads; i++)
        if (vmig_thread_start(&th[started], "vmig-digest", digest_worker, &j) == 0)
            started++;
    digest_worker(&j); /* the caller works too, so no thread is also fine */
    for (uint32_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&j.lock);
    return j.sum;
}

vmig_digest vmig_block_digest_hashes(const vmig_block *b, bool dest)
{
    vmig_digest d = {0, 0};
    bool unknown = dest && !(b->flags & VMIG_RAM_ZEROED);
    for (uint64_t i = 0; i < b->npages; i++) {
        uint64_t h = b->page_hash[i];
        /* Memory of unknown content that received nothing: its real bytes count. */
        if (unknown && !(b->received[i >> 6] & (1ull << (i & 63))))
            h = vmig_page_hash(b->host + (i << b->page_shift), b->page_size);
        vmig_digest_add(&d, i, h);
    }
    return d;
}

/* ------------------------------------------------------------------ */
/* compression helpers                                                 */

void vmig_channel_codec_reset(vmig_channel *c)
{
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++) {
        const vmig_codec_ops *ops = vmig_codec_get(k);
        if (c->codec_ctx[k])
            (c->s->role == VMIG_ROLE_DEST ? ops->dec_free : ops->enc_free)(c->codec_ctx[k]);
        c->codec_ctx[k] = NULL;
    }
}

int vmig_channel_codec_ctx(vmig_channel *c, uint32_t codec, bool dest, void **ctx, vmig_error *err)
{
    if (c->codec_ctx[codec]) {
        *ctx = c->codec_ctx[codec];
        return 0;
    }
    vmig_session *s = c->s;
    const vmig_codec_ops *ops = vmig_codec_get(codec);
    if (ops->missing)
        return vmig_error_set(err, VMIG_ENOTSUP, "%s: %s", ops->name, ops->missing);
    uint32_t max_ps = VMIG_WIRE_MIN_PAGE_SIZE;
    for (uint32_t i = 0; i < s->nblocks; i++)
        max_ps = VMIG_MAX(max_ps, s->blocks[i].page_size);
    vmig_codec_cfg cfg = {
        .level = codec == VMIG_CODEC_ZLIB ? s->p.zlib_level : s->p.zstd_level,
        .max_pages = s->p.packet_pages,
        .max_page_size = max_ps,
        .deflate_path = s->p.deflate_path,
    };
    int rc = (dest ? ops->dec_create : ops->enc_create)(&cfg, &c->codec_ctx[codec], err);
    if (rc)
        return rc;
    if (ops->describe && codec == VMIG_CODEC_DEFLATE_PAGE) {
        const char *d = ops->describe(c->codec_ctx[codec]);
        pthread_mutex_lock(&s->lock);
        if (d && !s->deflate_desc[0])
            snprintf(s->deflate_desc, sizeof(s->deflate_desc), "%s", d);
        pthread_mutex_unlock(&s->lock);
    }
    *ctx = c->codec_ctx[codec];
    return 0;
}

int vmig_channel_cbuf(vmig_channel *c, size_t len, vmig_error *err)
{
    if (len <= c->cbuf_cap)
        return 0;
    free(c->cbuf);
    c->cbuf_cap = 0;
    if (!(c->cbuf = malloc(len)))
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a %zu-byte payload buffer", len);
    c->cbuf_cap = len;
    return 0;
}

void vmig_codec_stat(vmig_session *s, uint32_t codec, uint32_t pages, uint64_t in, uint64_t out,
                     uint64_t ns)
{
    vmig_codec_stats *st = &s->st_codec[codec];
    vmig_stat_add(&st->packets, 1);
    vmig_stat_add(&st->pages, pages);
    vmig_stat_add(&st->in_bytes, in);
    vmig_stat_add(&st->out_bytes, out);
    vmig_stat_add(&st->ns, ns);
}

/*
 * Source side: the producer (caller thread) walks the blocks and hands
 * packet descriptors to channel threads, which find zero pages, hash and
 * send. No page data is copied in user space: each normal page goes from
 * guest memory to the socket through the iovec.
 *
 *   producer ──job──▶ ch[i].jobs (ring of VMIG_QUEUE_DEPTH) ──▶ ch[i] thread
 *      │  picks the channel with the fewest queued jobs              │
 *      └─ SYNC and FIN go to every channel, after its RAM jobs ───────┘
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "../ram/digest.h"
#include "session.h"

/* ------------------------------------------------------------------ */
/* channel thread                                                      */

/*
 * Stable partition of offs[0..n) into normal pages (kept in place, in
 * order, so contiguous pages still merge into one iovec) followed by zero
 * pages. `scratch` holds n entries. Returns the number of normal pages.
 */
static uint32_t partition_zero(const vmig_session *s, const vmig_block *b, uint64_t *offs,
                               uint32_t n, uint64_t *scratch)
{
    vmig_zero_fn is_zero = s->zero->fn;
    uint32_t nn = 0, nz = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (is_zero(b->host + offs[i], b->page_size))
            scratch[nz++] = offs[i];
        else
            offs[nn++] = offs[i];
    }
    memcpy(offs + nn, scratch, sizeof(uint64_t) * nz);
    return nn;
}

static int send_ram(vmig_channel *c, vmig_job *job, vmig_error *err)
{
    vmig_session *s = c->s;
    vmig_block *b = &s->blocks[job->block];
    uint64_t *offs = job->offsets;
    uint32_t n = job->npages;
    uint32_t nn = n;
    /* Memory the guest never touched reads as zero but is not mapped yet:
     * one populate call maps the whole packet's holes (the kernel's zero
     * page) instead of a read fault per page. Costs a page-table walk
     * when everything is mapped already. A failure only means faults. */
    madvise(b->host + offs[0], (size_t)(offs[n - 1] - offs[0]) + b->page_size, MADV_POPULATE_READ);
    if (job->classified)
        nn = job->nnormal;
    else if (s->p.zero_detect == VMIG_ZERO_CHANNEL)
        nn = partition_zero(s, b, offs, n, c->offsets);

    if (b->page_hash) {
        for (uint32_t i = 0; i < nn; i++)
            b->page_hash[offs[i] >> b->page_shift] =
                vmig_page_hash(b->host + offs[i], b->page_size);
        for (uint32_t i = nn; i < n; i++)
            b->page_hash[offs[i] >> b->page_shift] = b->zero_hash;
    }

    vmig_pkt_hdr h = {
        .type = VMIG_PKT_RAM,
        .seq = job->seq,
        .pass = job->pass,
        .page_size = b->page_size,
        .normal = nn,
        .zero = n - nn,
    };
    memcpy(h.block, b->name, sizeof(b->name));
    size_t hlen = vmig_wire_pkt_encode(&h, offs, c->hdr);

    /* iov[0] = header + offsets; then one entry per run of contiguous pages. */
    struct iovec *iov = c->iov;
    int niov = 1;
    iov[0].iov_base = c->hdr;
    iov[0].iov_len = hlen;
    for (uint32_t i = 0; i < nn; i++) {
        uint8_t *p = b->host + offs[i];
        if (niov > 1 && (uint8_t *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == p) {
            iov[niov - 1].iov_len += b->page_size;
        } else {
            iov[niov].iov_base = p;
            iov[niov].iov_len = b->page_size;
            niov++;
        }
    }
    uint64_t bytes = hlen + (uint64_t)nn * b->page_size;
    vmig_rate_wait(s, bytes);
    int rc = vmig_conn_write_full(c->conn, iov, niov, "a RAM packet", err);
    if (rc)
        return rc;
    vmig_stat_add(&c->st_bytes, bytes);
    vmig_stat_add(&c->st_packets, 1);
    vmig_stat_add(&s->st_wire_bytes, bytes);
    vmig_stat_add(&s->st_packets, 1);
    vmig_stat_add(&s->st_normal, nn);
    vmig_stat_add(&s->st_zero, n - nn);
    vmig_stat_add(&s->st_ram_bytes, (uint64_t)n * b->page_size);
    return 0;
}

static int send_marker(vmig_channel *c, vmig_job *job, vmig_error *err)
{
    vmig_pkt_hdr h = {
        .type = job->type == VMIG_JOB_SYNC ? VMIG_PKT_SYNC : VMIG_PKT_FIN,
        .seq = job->seq,
        .pass = job->pass,
    };
    size_t hlen = vmig_wire_pkt_encode(&h, NULL, c->hdr);
    vmig_rate_wait(c->s, hlen);
    int rc = vmig_conn_write_all(c->conn, c->hdr, hlen, job->type == VMIG_JOB_SYNC ? "SYNC" : "FIN",
                                 err);
    if (!rc) {
        vmig_stat_add(&c->st_bytes, hlen);
        vmig_stat_add(&c->s->st_wire_bytes, hlen);
    }
    return rc;
}

static void *src_channel_main(void *arg)
{
    vmig_channel *c = arg;
    vmig_session *s = c->s;
    uint64_t cpu0 = vmig_thread_cpu_ns();
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (c->count == 0 && !vmig_session_aborted(s))
            pthread_cond_wait(&c->work, &s->lock);
        if (vmig_session_aborted(s)) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        vmig_job *job = &c->jobs[c->head];
        pthread_mutex_unlock(&s->lock);

        uint64_t t0 = vmig_now_ns();
        vmig_error e = {0};
        int rc = job->type == VMIG_JOB_RAM ? send_ram(c, job, &e) : send_marker(c, job, &e);
        uint8_t type = job->type;
        vmig_stat_add(&c->st_busy_ns, vmig_now_ns() - t0);
        __atomic_store_n(&c->st_cpu_ns, vmig_thread_cpu_ns() - cpu0, __ATOMIC_RELAXED);
        if (rc) {
            char where[64];
            snprintf(where, sizeof(where), "channel %u: ", c->id);
            memmove(e.msg + strlen(where), e.msg, sizeof(e.msg) - strlen(where) - 1);
            memcpy(e.msg, where, strlen(where));
            e.msg[sizeof(e.msg) - 1] = 0;
            vmig_session_fail(s, &e);
            vmig_session_shutdown_conns(s, false);
            break;
        }
        pthread_mutex_lock(&s->lock);
        c->head = (c->head + 1) % VMIG_QUEUE_DEPTH;
        c->count--;
        pthread_cond_signal(&s->space);
        pthread_mutex_unlock(&s->lock);
        if (type == VMIG_JOB_FIN)
            break;
    }
    __atomic_store_n(&c->st_cpu_ns, vmig_thread_cpu_ns() - cpu0, __ATOMIC_RELAXED);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* producer                                                            */

/* Take a free slot: on channel `only` if >= 0, else on the least loaded
 * channel. Returns NULL on abort. Called without the lock. */
static vmig_job *slot_get(vmig_session *s, int only, uint32_t *rr, vmig_channel **out)
{
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (vmig_session_aborted(s)) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        vmig_channel *best = NULL;
        if (only >= 0) {
            if (s->ch[only].count < VMIG_QUEUE_DEPTH)
                best = &s->ch[only];
        } else {
            for (uint32_t k = 0; k < s->nch; k++) {
                vmig_channel *c = &s->ch[(*rr + k) % s->nch];
                if (c->count < VMIG_QUEUE_DEPTH && (!best || c->count < best->count))
                    best = c;
            }
        }
        if (best) {
            *rr = (best->id + 1) % s->nch;
            *out = best;
            vmig_job *j = &best->jobs[(best->head + best->count) % VMIG_QUEUE_DEPTH];
            pthread_mutex_unlock(&s->lock);
            return j;
        }
        pthread_cond_wait(&s->space, &s->lock);
    }
}

static void slot_push(vmig_session *s, vmig_channel *c)
{
    pthread_mutex_lock(&s->lock);
    c->count++;
    pthread_cond_signal(&c->work);
    pthread_mutex_unlock(&s->lock);
}

static int produce_pass(vmig_session *s, uint32_t pass, uint64_t *seq, uint64_t *scratch)
{
    uint32_t rr = 0;
    for (uint32_t bi = 0; bi < s->nblocks; bi++) {
        vmig_block *b = &s->blocks[bi];
        uint64_t step = (uint64_t)s->p.packet_pages * b->page_size;
        for (uint64_t off = 0; off < b->length; off += step) {
            vmig_channel *c;
            vmig_job *j = slot_get(s, -1, &rr, &c);
            if (!j)
                return VMIG_ECANCELED;
            uint32_t n = (uint32_t)(VMIG_MIN(step, b->length - off) >> b->page_shift);
            j->type = VMIG_JOB_RAM;
            j->block = bi;
            j->pass = pass;
            j->npages = n;
            j->seq = ++*seq;
            for (uint32_t k = 0; k < n; k++)
                j->offsets[k] = off + ((uint64_t)k << b->page_shift);
            j->classified = s->p.zero_detect == VMIG_ZERO_MAIN;
            if (j->classified)
                j->nnormal = partition_zero(s, b, j->offsets, n, scratch);
            slot_push(s, c);
        }
    }
    return 0;
}

static int push_markers(vmig_session *s, uint8_t type, uint32_t pass, uint64_t *seq)
{
    uint32_t rr = 0;
    for (uint32_t i = 0; i < s->nch; i++) {
        vmig_channel *c;
        vmig_job *j = slot_get(s, (int)i, &rr, &c);
        if (!j)
            return VMIG_ECANCELED;
        j->type = type;
        j->pass = pass;
        j->npages = 0;
        j->seq = ++*seq;
        slot_push(s, c);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* setup, control and the run                                          */

static int alloc_channels(vmig_session *s, vmig_error *err)
{
    uint32_t pp = s->p.packet_pages;
    for (uint32_t i = 0; i < s->nch; i++) {
        vmig_channel *c = &s->ch[i];
        c->hdr = malloc(VMIG_PKT_HDR_LEN + 8 * (size_t)pp);
        c->iov = malloc(sizeof(struct iovec) * (pp + 1));
        c->offsets = malloc(sizeof(uint64_t) * pp);
        bool ok = c->hdr && c->iov && c->offsets;
        for (int j = 0; j < VMIG_QUEUE_DEPTH && ok; j++)
            ok = (c->jobs[j].offsets = malloc(sizeof(uint64_t) * pp)) != NULL;
        if (!ok)
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for channel %u buffers", i);
    }
    return 0;
}

static int send_hello(vmig_session *s, vmig_error *err)
{
    vmig_wire_block *wb = calloc(s->nblocks, sizeof(*wb));
    size_t cap = 32 + (size_t)s->nblocks * (2 + VMIG_BLOCK_NAME_MAX + 12);
    uint8_t *buf = malloc(cap);
    int rc = 0;
    if (!wb || !buf) {
        rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for HELLO");
        goto out;
    }
    for (uint32_t i = 0; i < s->nblocks; i++) {
        memcpy(wb[i].name, s->blocks[i].name, sizeof(wb[i].name));
        wb[i].length = s->blocks[i].length;
        wb[i].page_size = s->blocks[i].page_size;
    }
    vmig_wire_hello h = {
        .packet_pages = s->p.packet_pages,
        .channels = (uint16_t)s->nch,
        .zero_detect = (uint8_t)s->p.zero_detect,
        .verify = (uint8_t)s->p.verify,
        .nblocks = s->nblocks,
        .blocks = wb,
    };
    int n = vmig_wire_hello_encode(&h, buf, cap);
    if (n < 0) {
        rc = vmig_error_set(err, VMIG_EINVAL, "HELLO does not fit in %zu bytes", cap);
        goto out;
    }
    rc = vmig_ctl_write(s->control, VMIG_CTL_HELLO, buf, (uint32_t)n, err);
out:
    free(wb);
    free(buf);
    return rc;
}

static int connect_channel(vmig_session *s, const char *uri, uint8_t kind, uint32_t id,
                           vmig_conn **out, vmig_error *err)
{
    int rc = vmig_connect(uri, (int)s->p.connect_timeout_ms, out, err);
    if (rc)
        return rc;
    vmig_wire_hs hs = {.kind = kind, .channel_id = (uint16_t)id, .channel_count = (uint16_t)s->nch};
    memcpy(hs.uuid, s->uuid, 16);
    uint8_t raw[VMIG_HS_LEN];
    vmig_wire_hs_encode(&hs, raw);
    return vmig_conn_write_all(*out, raw, sizeof(raw), "the handshake", err);
}

static int send_end_and_wait(vmig_session *s, vmig_error *err)
{
    uint8_t(*dg)[16] = calloc(s->nblocks, 16);
    size_t cap = 4 + 16 * (size_t)s->nblocks + 24;
    uint8_t *buf = malloc(cap);
    int rc = 0;
    if (!dg || !buf) {
        rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for END");
        goto out;
    }
    uint64_t t0 = vmig_now_ns();
    for (uint32_t i = 0; i < s->nblocks && s->p.verify != VMIG_VERIFY_OFF; i++) {
        vmig_digest d = s->p.verify == VMIG_VERIFY_FULL
                            ? vmig_block_digest_memory(&s->blocks[i], s->nch)
                            : vmig_block_digest_hashes(&s->blocks[i], false);
        vmig_digest_to_bytes(&d, dg[i]);
    }
    if (s->p.verify != VMIG_VERIFY_OFF)
        vmig_stat_add(&s->st_verify_ns, vmig_now_ns() - t0);
    vmig_wire_end e = {
        .nblocks = s->nblocks,
        .digests = dg,
        .packets = __atomic_load_n(&s->st_packets, __ATOMIC_RELAXED),
        .normal_pages = __atomic_load_n(&s->st_normal, __ATOMIC_RELAXED),
        .zero_pages = __atomic_load_n(&s->st_zero, __ATOMIC_RELAXED),
    };
    int n = vmig_wire_end_encode(&e, buf, cap);
    if (n < 0) {
        rc = vmig_error_set(err, VMIG_EINVAL, "END does not fit");
        goto out;
    }
    rc = vmig_ctl_write(s->control, VMIG_CTL_END, buf, (uint32_t)n, err);
    if (rc)
        goto out;
    uint8_t *payload;
    uint32_t plen;
    rc = vmig_ctl_read_session(s, VMIG_CTL_RESULT, &payload, &plen, -1, err);
    if (rc)
        goto out;
    vmig_wire_status st;
    rc = vmig_wire_status_decode(payload, plen, false, &st, err);
    free(payload);
    if (!rc && st.status != 0)
        rc = vmig_error_set(err, VMIG_EPEER, "destination refused the migration: %s (%s)", st.msg,
                            vmig_strerror(st.status));
out:
    free(dg);
    free(buf);
    return rc;
}

int vmig_source_run(vmig_session *s, const char *uri)
{
    vmig_error e = {0};
    int rc;
    s->nch = s->p.channels;
    pthread_getcpuclockid(pthread_self(), &s->caller_clock);
    uint64_t *scratch = malloc(sizeof(uint64_t) * s->p.packet_pages);
    if (!scratch) {
        rc = vmig_error_set(&e, VMIG_ENOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < s->nblocks; i++)
        s->blocks[i].zero_hash = vmig_zero_page_hash(s->blocks[i].page_size);
    if ((rc = alloc_channels(s, &e)) || (rc = vmig_session_alloc_block_state(s, false, &e)))
        goto fail;

    /* Control channel: handshake, HELLO, then READY (or the destination's reason). */
    vmig_conn *ctl;
    if ((rc = connect_channel(s, uri, VMIG_CH_CONTROL, 0, &ctl, &e)))
        goto fail;
    pthread_mutex_lock(&s->lock);
    s->control = ctl;
    pthread_mutex_unlock(&s->lock);
    if ((rc = send_hello(s, &e)))
        goto fail;
    uint8_t *payload;
    uint32_t plen;
    /* A listener that never accepts us (busy with another migration, a
     * stuck process) still completes the TCP handshake from its backlog:
     * READY bounds the wait. */
    if ((rc = vmig_ctl_read_session(s, VMIG_CTL_READY, &payload, &plen,
                                    (int)s->p.connect_timeout_ms, &e)))
        goto fail;
    free(payload);

    for (uint32_t i = 0; i < s->nch; i++) {
        vmig_conn *dc;
        if ((rc = connect_channel(s, uri, VMIG_CH_DATA, i, &dc, &e)))
            goto fail;
        pthread_mutex_lock(&s->lock);
        s->ch[i].conn = dc;
        pthread_mutex_unlock(&s->lock);
    }
    if (vmig_session_aborted(s)) {
        rc = VMIG_ECANCELED;
        goto fail;
    }
    __atomic_store_n(&s->state, VMIG_STATE_ACTIVE, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < s->nch; i++) {
        char name[32];
        snprintf(name, sizeof(name), "vmig-send%u", i); /* as QEMU's multifdsend_N */
        if (vmig_thread_start(&s->ch[i].thread, name, src_channel_main, &s->ch[i])) {
            rc = vmig_error_set(&e, VMIG_ENOMEM, "cannot start channel thread %u", i);
            vmig_session_fail(s, &e);
            break;
        }
        s->ch[i].thread_started = true;
    }

    uint64_t seq = 0;
    if (!rc)
        rc = produce_pass(s, 1, &seq, scratch);
    if (!rc)
        rc = push_markers(s, VMIG_JOB_SYNC, 1, &seq);
    if (!rc)
        rc = push_markers(s, VMIG_JOB_FIN, 1, &seq);
    for (uint32_t i = 0; i < s->nch; i++)
        if (s->ch[i].thread_started) {
            pthread_join(s->ch[i].thread, NULL);
            s->ch[i].thread_started = false; /* the failure path joins the rest */
        }
    if (vmig_session_aborted(s)) {
        rc = s->err.code ? s->err.code : VMIG_ECANCELED;
        goto fail;
    }
    __atomic_store_n(&s->state, VMIG_STATE_VERIFYING, __ATOMIC_RELEASE);
    if ((rc = send_end_and_wait(s, &e)))
        goto fail;
    free(scratch);
    return 0;

fail:
    free(scratch);
    if (e.code)
        vmig_session_fail(s, &e);
    else
        vmig_session_failf(s, rc ? rc : VMIG_EIO, "migration failed");
    vmig_session_shutdown_conns(s, false);
    for (uint32_t i = 0; i < s->nch; i++)
        if (s->ch[i].thread_started) {
            pthread_join(s->ch[i].thread, NULL);
            s->ch[i].thread_started = false;
        }
    /* A broken channel is often the destination refusing a packet: it says
     * why on the control channel. Otherwise tell it why we stop. */
    vmig_session_take_peer_error(s, 1000);
    pthread_mutex_lock(&s->lock);
    vmig_error why = s->err;
    pthread_mutex_unlock(&s->lock);
    if (why.code != VMIG_EPEER)
        vmig_control_send_error(s, why.code, why.msg);
    return why.code;
}

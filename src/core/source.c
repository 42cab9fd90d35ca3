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
#include <sys/socket.h>

#include "../ram/digest.h"
#include "../ram/dirty.h"
#include "../ram/vma.h"
#include "precopy.h"
#include "session.h"

/* ------------------------------------------------------------------ */
/* channel thread                                                      */

/*
 * Stable partition of offs[0..n) into normal pages (kept in place, in
 * order, so contiguous pages still merge into one iovec) followed by the
 * pages whose zero[i] is set. `scratch` holds n entries. Returns the
 * number of normal pages.
 */
static uint32_t partition_flags(uint64_t *offs, uint32_t n, const uint8_t *zero, uint64_t *scratch)
{
    uint32_t nn = 0, nz = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (zero[i])
            scratch[nz++] = offs[i];
        else
            offs[nn++] = offs[i];
    }
    memcpy(offs + nn, scratch, sizeof(uint64_t) * nz);
    return nn;
}

/* zero-page-detection=main: the producer checks the pages itself. */
static uint32_t partition_zero(const vmig_session *s, const vmig_block *b, uint64_t *offs,
                               uint32_t n, uint64_t *scratch)
{
    uint8_t zero[VMIG_WIRE_MAX_PACKET_PAGES];
    for (uint32_t i = 0; i < n; i++)
        zero[i] = s->zero->fn(b->host + offs[i], b->page_size);
    return partition_flags(offs, n, zero, scratch);
}

/* The page addresses of job j, into bufs. */
static void job_bufs(const vmig_session *s, const vmig_job *j, const void **bufs)
{
    const vmig_block *b = &s->blocks[j->block];
    for (uint32_t i = 0; i < j->npages; i++)
        bufs[i] = b->host + j->offsets[i];
}

/*
 * zero-page-detection=channel, through the channel's engine (accel.h): the
 * answers of the batch started for this packet, or of the CPU for what the
 * device has not answered. ahead[0..nahead) are the jobs queued after this one: their
 * batches go to the device first (those not started yet), so that the
 * device works on them while this packet is being finished and sent.
 */
static uint32_t partition_accel(vmig_channel *c, const vmig_job *job, vmig_job *const *ahead,
                                uint32_t nahead, uint64_t *offs, uint32_t n, uint64_t *scratch)
{
    vmig_session *s = c->s;
    const vmig_block *b = &s->blocks[job->block];
    for (uint32_t k = 0; k < nahead; k++) {
        const vmig_block *nb = &s->blocks[ahead[k]->block];
        job_bufs(s, ahead[k], c->zbufs_next);
        vmig_accel_chan_start(c->accel, ahead[k]->seq, c->zbufs_next, ahead[k]->npages,
                              nb->page_size, nb->anon_private);
    }
    job_bufs(s, job, c->zbufs);
    vmig_accel_chan_finish(c->accel, job->seq, c->zbufs, n, b->page_size, b->anon_private, c->zres);
    return partition_flags(offs, n, c->zres, scratch);
}

/*
 * The codec of a packet with nn normal pages: the fixed one, or under auto
 * the policy in force (*policy), unless the probe finds the packet random
 * (then raw). Not probed when the policy is none, nor for deflate-page,
 * which probes each page itself and sends the random ones raw.
 */
static uint32_t pick_codec(vmig_channel *c, const vmig_block *b, const uint64_t *offs, uint32_t nn,
                           uint32_t *policy)
{
    vmig_session *s = c->s;
    if (nn == 0)
        return VMIG_CODEC_NONE;
    if (s->p.compression != VMIG_COMPRESSION_AUTO)
        return s->p.compression;
    uint32_t p = vmig_auto_policy(&s->autoc);
    *policy = p;
    if (p == VMIG_CODEC_NONE || p == VMIG_CODEC_DEFLATE_PAGE)
        return p;
    uint32_t f = 0;
    for (uint32_t i = 0; i < nn; i++)
        f += vmig_codec_probe_incompressible(b->host + offs[i], b->page_size);
    return f >= VMIG_AUTO_RANDOM_SHARE * nn ? VMIG_CODEC_NONE : p;
}

/* Compress the packet's normal pages into c->cbuf; *out: payload bytes. */
static int encode_pages(vmig_channel *c, const vmig_block *b, uint32_t codec, const uint64_t *offs,
                        uint32_t nn, uint64_t *out, uint64_t *enc_ns, vmig_error *err)
{
    vmig_session *s = c->s;
    const vmig_codec_ops *ops = vmig_codec_get(codec);
    void *ctx;
    int rc = vmig_channel_codec_ctx(c, codec, false, &ctx, err);
    if (!rc)
        rc = vmig_channel_cbuf(c, vmig_wire_codec_bound((uint64_t)nn * b->page_size), err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < nn; i++)
        c->pages[i] = b->host + offs[i];
    unsigned flags = __atomic_load_n(&s->pages_volatile, __ATOMIC_RELAXED) ? VMIG_ENC_VOLATILE : 0;
    size_t olen = 0;
    uint64_t t0 = vmig_now_ns();
    rc = ops->encode(ctx, c->pages, nn, b->page_size, flags, c->cbuf, c->cbuf_cap, &olen, err);
    *enc_ns = vmig_now_ns() - t0;
    if (rc)
        return rc;
    /* The wire bound is what every destination accepts: a codec that went
     * beyond it is a bug here, reported as one rather than sent. */
    if (olen < 1 || olen > vmig_wire_codec_bound((uint64_t)nn * b->page_size))
        return vmig_error_set(
            err, VMIG_EIO, "%s produced %zu bytes for %u pages (bound %llu)", ops->name, olen, nn,
            (unsigned long long)vmig_wire_codec_bound((uint64_t)nn * b->page_size));
    *out = olen;
    return 0;
}

static int send_ram(vmig_channel *c, vmig_job *job, vmig_job *const *ahead, uint32_t nahead,
                    vmig_error *err)
{
    vmig_session *s = c->s;
    vmig_block *b = &s->blocks[job->block];
    uint64_t *offs = job->offsets;
    uint32_t n = job->npages;
    uint32_t nn = n;
    /* Memory the guest never touched reads as zero but is not mapped yet:
     * one populate call maps the whole packet's holes (the kernel's zero
     * page) instead of a read fault per page. Costs a page-table walk
     * when everything is mapped already. A failure only means faults.
     * Not with a device: it reports such a page as a fault, which answers
     * it without mapping anything (accel.c). */
    bool device = c->accel && !vmig_accel_inline(s->accel);
    if (!device)
        madvise(b->host + offs[0], (size_t)(offs[n - 1] - offs[0]) + b->page_size,
                MADV_POPULATE_READ);
    if (job->classified)
        nn = job->nnormal;
    else if (c->accel) /* zero-page-detection=channel (accel_setup) */
        nn = partition_accel(c, job, ahead, device ? nahead : 0, offs, n, c->offsets);

    if (b->page_hash) {
        for (uint32_t i = 0; i < nn; i++)
            b->page_hash[offs[i] >> b->page_shift] =
                vmig_page_hash(b->host + offs[i], b->page_size);
        for (uint32_t i = nn; i < n; i++)
            b->page_hash[offs[i] >> b->page_shift] = b->zero_hash;
    }

    uint32_t policy = VMIG_CODEC_NONE;
    uint64_t t_pick = vmig_now_ns();
    uint32_t codec = pick_codec(c, b, offs, nn, &policy);
    uint64_t in = (uint64_t)nn * b->page_size, out = in, enc_ns = 0;
    vmig_pkt_hdr h = {
        .type = VMIG_PKT_RAM,
        .flags = (uint16_t)codec,
        .seq = job->seq,
        .pass = job->pass,
        .page_size = b->page_size,
        .normal = nn,
        .zero = n - nn,
    };
    memcpy(h.block, b->name, sizeof(b->name));
    struct iovec *iov = c->iov;
    int niov = 1;
    if (codec != VMIG_CODEC_NONE) {
        int rc = encode_pages(c, b, codec, offs, nn, &out, &enc_ns, err);
        if (rc)
            return rc;
        h.payload_len = (uint32_t)out;
        iov[1].iov_base = c->cbuf;
        iov[1].iov_len = out;
        niov = 2;
    }
    size_t hlen = vmig_wire_pkt_encode(&h, offs, c->hdr);

    /* iov[0] = header + offsets; then the payload: the compressed bytes, or
     * one entry per run of contiguous pages. */
    iov[0].iov_base = c->hdr;
    iov[0].iov_len = hlen;
    for (uint32_t i = 0; i < nn && codec == VMIG_CODEC_NONE; i++) {
        uint8_t *p = b->host + offs[i];
        if (niov > 1 && (uint8_t *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == p) {
            iov[niov - 1].iov_len += b->page_size;
        } else {
            iov[niov].iov_base = p;
            iov[niov].iov_len = b->page_size;
            niov++;
        }
    }
    uint64_t bytes = hlen + out;
    int rc = vmig_fault_packet(c, c->hdr, hlen, err);
    if (rc)
        return rc;
    vmig_rate_wait(s, bytes);
    rc = vmig_conn_write_full(c->conn, iov, niov, "a RAM packet", err);
    if (rc)
        return rc;
    if (s->p.compression == VMIG_COMPRESSION_AUTO && s->auto_mask != 1u << VMIG_CODEC_NONE &&
        nn > 0) {
        uint64_t now = vmig_now_ns();
        pthread_mutex_lock(&s->auto_lock);
        vmig_auto_observe(&s->autoc, policy, in, t_pick, now);
        pthread_mutex_unlock(&s->auto_lock);
    }
    vmig_codec_stat(s, codec, nn, in, nn ? out : 0, enc_ns);
    vmig_stat_add(&c->st_bytes, bytes);
    vmig_stat_add(&s->st_wire_bytes, bytes);
    c->last_nn = nn;
    if (c->resending) /* counted once, at its first write (resend() adjusts) */
        return 0;
    vmig_stat_add(&c->st_packets, 1);
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

/* ------------------------------------------------------------------ */
/* resume=on: the window of unacknowledged packets                     */

static int connect_channel(vmig_session *s, const char *uri, uint8_t kind, uint8_t flags,
                           uint32_t id, vmig_conn **out, vmig_error *err);

/* One packet written and not acknowledged yet: what it takes to write it
 * again from memory (RAM: the pages are read anew), and whether its first
 * write was counted in the statistics (a write that failed half way was
 * not). */
typedef struct vmig_sent {
    uint8_t type; /* VMIG_JOB_* */
    bool counted;
    uint32_t block, pass, npages, nnormal;
    uint64_t seq;
    uint64_t *offsets;
} vmig_sent;

bool vmig_resume_retryable(int code)
{
    return code == VMIG_ECONN || code == VMIG_EIO || code == VMIG_ETIMEDOUT;
}

/* Whether the failure rc of channel c is worth a reconnection. */
static bool can_resume(vmig_channel *c, int rc)
{
    return rc && vmig_resume_retryable(rc) && !c->peer_spoke && !vmig_session_aborted(c->s);
}

static vmig_sent *win_at(vmig_channel *c, uint32_t i)
{
    return &c->win[(c->win_head + i) % c->s->p.resume_window];
}

static int win_alloc(vmig_session *s, vmig_channel *c, vmig_error *err)
{
    /* One block for every entry's offsets: 1 MiB at the default packet size
     * and window. */
    uint32_t n = s->p.resume_window;
    c->win = calloc(n, sizeof(*c->win));
    uint64_t *offs = c->win ? malloc(sizeof(uint64_t) * s->p.packet_pages * n) : NULL;
    if (!offs)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for channel %u's window", c->id);
    for (uint32_t i = 0; i < n; i++)
        c->win[i].offsets = offs + (size_t)i * s->p.packet_pages;
    return 0;
}

void vmig_resume_free(vmig_channel *c)
{
    if (c->win)
        free(c->win[0].offsets);
    free(c->win);
    c->win = NULL;
    c->win_head = c->win_count = 0;
    c->acked = c->sent_seq = c->landed = 0;
    c->since_ack = 0;
    c->peer_spoke = false;
    vmig_conn_close(c->pending);
    c->pending = NULL;
}

static void win_trim(vmig_channel *c)
{
    while (c->win_count && win_at(c, 0)->seq <= c->acked) {
        c->win_head = (c->win_head + 1) % c->s->p.resume_window;
        c->win_count--;
    }
}

/* An acknowledgement: bytes, then the sequence against what this channel
 * has written and what was acknowledged before. */
static int ack_read(vmig_channel *c, vmig_error *err)
{
    uint8_t b[VMIG_CHACK_LEN];
    uint64_t seq;
    int rc = vmig_conn_read_all(c->conn, b, sizeof(b), "an acknowledgement", err);
    if (!rc)
        rc = vmig_wire_chack_decode(b, &seq, err);
    if (rc)
        return rc;
    if (seq < c->acked || seq > c->sent_seq)
        return vmig_error_set(err, VMIG_EPROTO,
                              "acknowledgement of packet %llu, but this channel has written up "
                              "to packet %llu and had packets up to %llu acknowledged",
                              (unsigned long long)seq, (unsigned long long)c->sent_seq,
                              (unsigned long long)c->acked);
    c->acked = seq;
    win_trim(c);
    return 0;
}

/* Wait up to timeout_ms for c to be readable, in slices: a migration that
 * failed meanwhile, or a destination that has said something on the
 * control channel (an ERROR frame: it gave up), ends the wait. 1 readable,
 * 0 timed out, or a VMIG_E* code with err set. */
static int ack_wait(vmig_channel *c, int timeout_ms, vmig_error *err)
{
    vmig_session *s = c->s;
    for (int left = timeout_ms;;) {
        int slice = VMIG_MIN(left, 100);
        int r = c->conn->ops->wait_readable(c->conn, slice);
        if (r < 0)
            return vmig_error_set(err, VMIG_ECONN, "%s: waiting for acknowledgements: %s",
                                  c->conn->peer, strerror(-r));
        if (r != 0 || left <= 0)
            return r;
        left -= slice;
        if (vmig_session_aborted(s))
            return vmig_error_set(err, VMIG_ECANCELED, "the migration failed meanwhile");
        if (s->control && s->control->ops->wait_readable(s->control, 0) == 1) {
            /* its ERROR frame replaces this error (take_peer_error) */
            c->peer_spoke = true;
            return vmig_error_set(err, VMIG_ECONN,
                                  "the destination wrote on the control channel while this "
                                  "channel waited for an acknowledgement (it has given up)");
        }
        if (left <= 0)
            return 0;
    }
}

/* Read the acknowledgements that are there; wait up to timeout_ms for the
 * first when timeout_ms > 0. */
static int ack_drain(vmig_channel *c, int timeout_ms, vmig_error *err)
{
    for (;;) {
        int r = ack_wait(c, timeout_ms, err);
        if (r < 0)
            return r;
        if (r == 0)
            return timeout_ms > 0
                       ? vmig_error_set(err, VMIG_ETIMEDOUT, "%s: no acknowledgement for %d ms",
                                        c->conn->peer, timeout_ms)
                       : 0;
        int rc = ack_read(c, err);
        if (rc)
            return rc;
        timeout_ms = 0;
    }
}

static int send_ram(vmig_channel *c, vmig_job *job, vmig_job *const *ahead, uint32_t nahead,
                    vmig_error *err);
static int send_marker(vmig_channel *c, vmig_job *job, vmig_error *err);

/* Write every packet of the window again, in order, on the new connection. */
static int resend(vmig_channel *c, vmig_error *err)
{
    vmig_session *s = c->s;
    for (uint32_t i = 0; i < c->win_count; i++) {
        vmig_sent *w = win_at(c, i);
        if (w->type == VMIG_JOB_DEV)
            return vmig_error_set(err, VMIG_ENOTSUP,
                                  "packet %llu, a device-state chunk, was not acknowledged: "
                                  "resume writes RAM packets and markers again, not device "
                                  "state (set devstate-path=control to make it resumable)",
                                  (unsigned long long)w->seq);
        vmig_job j = {.type = w->type,
                      .block = w->block,
                      .pass = w->pass,
                      .npages = w->npages,
                      .seq = w->seq,
                      .offsets = w->offsets};
        uint64_t b0 = __atomic_load_n(&c->st_bytes, __ATOMIC_RELAXED);
        c->resending = w->counted;
        int rc = w->type == VMIG_JOB_RAM ? send_ram(c, &j, NULL, 0, err) : send_marker(c, &j, err);
        c->resending = false;
        if (rc)
            return rc;
        if (w->type == VMIG_JOB_RAM && w->counted && c->last_nn != w->nnormal) {
            /* The pages were read anew: a page zero then may not be now. */
            vmig_stat_add(&s->st_normal, (uint64_t)c->last_nn - w->nnormal);
            vmig_stat_add(&s->st_zero, (uint64_t)w->nnormal - c->last_nn);
        }
        w->nnormal = c->last_nn;
        w->counted = true;
        vmig_stat_add(&s->st_resent_packets, 1);
        vmig_stat_add(&s->st_resent_bytes, __atomic_load_n(&c->st_bytes, __ATOMIC_RELAXED) - b0);
    }
    return 0;
}

/*
 * The connection broke (err says how): connect again with a RESUME
 * handshake, learn from the destination's first acknowledgement which
 * packets landed, write the others again. Attempts go on for
 * connect-timeout; a protocol error or a refusal ends them at once.
 */
static int reconnect(vmig_channel *c, vmig_error *err)
{
    vmig_session *s = c->s;
    char cause[sizeof(err->msg)];
    snprintf(cause, sizeof(cause), "%s", err->msg);
    uint64_t deadline = vmig_now_ns() + (uint64_t)s->p.connect_timeout_ms * 1000000ull;
    vmig_error e = {0};
    int rc;
    for (;;) {
        if (vmig_session_aborted(s))
            return VMIG_ECANCELED;
        pthread_mutex_lock(&s->lock);
        vmig_conn *old = c->conn;
        c->conn = NULL;
        pthread_mutex_unlock(&s->lock);
        vmig_conn_close(old); /* the destination sees it end */
        vmig_conn *nc = NULL;
        e = (vmig_error){0};
        rc = connect_channel(s, s->uri, VMIG_CH_DATA, VMIG_HS_F_RESUME, c->id, &nc, &e);
        if (nc) {
            pthread_mutex_lock(&s->lock);
            c->conn = nc;
            pthread_mutex_unlock(&s->lock);
            if (vmig_session_aborted(s)) /* a shutdown_conns that missed it */
                vmig_conn_shutdown(nc);
        }
        if (!rc)
            rc = ack_drain(c, (int)s->p.connect_timeout_ms, &e);
        if (!rc) {
            /* Connected again: counted as the destination counts it, once
             * its acknowledgement is through (a resend that breaks makes
             * another). Stream codecs start over on a new connection, as
             * the destination's decoders do. */
            vmig_stat_add(&s->st_reconnects, 1);
            vmig_channel_codec_reset(c);
            rc = resend(c, &e);
        }
        if (!rc)
            return 0;
        if (!can_resume(c, rc) || vmig_now_ns() >= deadline)
            break;
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    if (vmig_session_aborted(s))
        return VMIG_ECANCELED;
    *err = (vmig_error){0};
    return vmig_error_set(err, rc, "connection lost (%s); resume failed: %s", cause, e.msg);
}

/* Before a job's first write: room in the window (acknowledgements are
 * waited for, connect-timeout at most), then its entry. */
static int win_push(vmig_channel *c, const vmig_job *job, vmig_error *err)
{
    vmig_session *s = c->s;
    int rc = 0;
    if (c->win_count == s->p.resume_window)
        vmig_stat_add(&s->st_window_waits, 1);
    while (c->win_count == s->p.resume_window) {
        rc = ack_drain(c, (int)s->p.connect_timeout_ms, err);
        if (can_resume(c, rc))
            rc = reconnect(c, err);
        if (rc)
            return rc;
    }
    vmig_sent *w = win_at(c, c->win_count++);
    *w = (vmig_sent){.type = job->type,
                     .block = job->block,
                     .pass = job->pass,
                     .npages = job->npages,
                     .seq = job->seq,
                     .offsets = w->offsets};
    if (job->type == VMIG_JOB_RAM) {
        /* Classified jobs keep their normal pages first: the same set. */
        memcpy(w->offsets, job->offsets, sizeof(uint64_t) * job->npages);
    }
    c->sent_seq = job->seq;
    return 0;
}

/* After a job's write (rc its result): a broken connection is resumed
 * (which writes this job again too); then the acknowledgements that
 * arrived are read, and FIN waits for its own. */
static int after_write(vmig_channel *c, const vmig_job *job, int rc, vmig_error *err)
{
    vmig_session *s = c->s;
    if (!rc && c->win_count && win_at(c, c->win_count - 1)->seq == job->seq) {
        win_at(c, c->win_count - 1)->counted = true;
        win_at(c, c->win_count - 1)->nnormal = c->last_nn;
    } else if (can_resume(c, rc)) {
        rc = reconnect(c, err);
    }
    bool fin = job->type == VMIG_JOB_FIN;
    while (!rc) {
        if (fin && c->acked >= job->seq)
            return 0;
        rc = ack_drain(c, fin ? (int)s->p.connect_timeout_ms : 0, err);
        if (!rc && !fin)
            return 0;
        if (can_resume(c, rc))
            rc = reconnect(c, err);
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
        /* The producer filled the slots after it before it counted them and
         * leaves them alone until this thread frees them: readable without
         * the lock. The RAM jobs right behind this one are its look-ahead. */
        vmig_job *ahead[VMIG_ACCEL_AHEAD] = {NULL};
        uint32_t nahead = 0;
        while (nahead < VMIG_ACCEL_AHEAD && nahead + 1 < c->count) {
            vmig_job *j = &c->jobs[(c->head + 1 + nahead) % VMIG_QUEUE_DEPTH];
            if (j->type != VMIG_JOB_RAM || j->classified)
                break;
            ahead[nahead++] = j;
        }
        pthread_mutex_unlock(&s->lock);

        uint64_t t0 = vmig_now_ns();
        vmig_error e = {0};
        int rc = s->resume ? win_push(c, job, &e) : 0;
        if (!rc)
            rc = job->type == VMIG_JOB_RAM   ? send_ram(c, job, ahead, nahead, &e)
                 : job->type == VMIG_JOB_DEV ? vmig_dev_send_job(c, job, &e)
                                             : send_marker(c, job, &e);
        if (s->resume)
            rc = after_write(c, job, rc, &e);
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
        if (type == VMIG_JOB_SYNC)
            c->sent_pass = job->pass;
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

vmig_job *vmig_source_slot_get(vmig_session *s, uint32_t *rr, vmig_channel **out)
{
    return slot_get(s, -1, rr, out);
}

void vmig_source_slot_push(vmig_session *s, vmig_channel *c)
{
    slot_push(s, c);
}

/*
 * The packer fills one job at a time with page offsets of one block and
 * hands it to the least loaded channel when it is full, when the block
 * changes, or at the end of a pass.
 */
typedef struct packer {
    vmig_session *s;
    uint32_t pass;
    uint64_t *seq;
    uint64_t *scratch; /* zero-detect=main: partition scratch */
    uint32_t rr;
    vmig_channel *c;
    vmig_job *j;
    /* Called after each packet is queued (the rate probe), may be NULL. */
    void (*tick)(void *ctx);
    void *tick_ctx;
} packer;

static void pk_flush(packer *pk)
{
    vmig_job *j = pk->j;
    if (!j)
        return;
    vmig_session *s = pk->s;
    j->seq = ++*pk->seq;
    j->classified = s->p.zero_detect == VMIG_ZERO_MAIN;
    if (j->classified)
        j->nnormal = partition_zero(s, &s->blocks[j->block], j->offsets, j->npages, pk->scratch);
    slot_push(s, pk->c);
    pk->j = NULL;
    if (pk->tick)
        pk->tick(pk->tick_ctx);
}

static int pk_add(packer *pk, uint32_t bi, uint64_t off)
{
    if (pk->j && (pk->j->block != bi || pk->j->npages == pk->s->p.packet_pages))
        pk_flush(pk);
    if (!pk->j) {
        vmig_job *j = slot_get(pk->s, -1, &pk->rr, &pk->c);
        if (!j)
            return VMIG_ECANCELED;
        j->type = VMIG_JOB_RAM;
        j->block = bi;
        j->pass = pk->pass;
        j->npages = 0;
        pk->j = j;
    }
    pk->j->offsets[pk->j->npages++] = off;
    return 0;
}

/* Pass 1: every page of every block. */
static int produce_all(packer *pk)
{
    vmig_session *s = pk->s;
    for (uint32_t bi = 0; bi < s->nblocks; bi++) {
        vmig_block *b = &s->blocks[bi];
        for (uint64_t off = 0; off < b->length; off += b->page_size)
            if (pk_add(pk, bi, off))
                return VMIG_ECANCELED;
    }
    pk_flush(pk);
    return 0;
}

/* Later passes: the pages in the blocks' dirty bitmaps. */
static int produce_dirty(packer *pk)
{
    vmig_session *s = pk->s;
    for (uint32_t bi = 0; bi < s->nblocks; bi++) {
        vmig_block *b = &s->blocks[bi];
        for (uint64_t w = 0; w < (b->npages + 63) / 64; w++) {
            for (uint64_t m = b->dirty[w]; m; m &= m - 1) {
                uint64_t pg = w * 64 + (uint64_t)__builtin_ctzll(m);
                if (pk_add(pk, bi, pg << b->page_shift))
                    return VMIG_ECANCELED;
            }
        }
    }
    pk_flush(pk);
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

/* Wait until every channel has written SYNC of `pass`. */
static int wait_drained(vmig_session *s, uint32_t pass)
{
    pthread_mutex_lock(&s->lock);
    for (;;) {
        bool all = true;
        for (uint32_t i = 0; i < s->nch && all; i++)
            all = s->ch[i].sent_pass >= pass;
        if (all || vmig_session_aborted(s))
            break;
        pthread_cond_wait(&s->space, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return vmig_session_aborted(s) ? VMIG_ECANCELED : 0;
}

/* ------------------------------------------------------------------ */
/* setup, control and the run                                          */

static int alloc_channels(vmig_session *s, vmig_error *err)
{
    uint32_t pp = s->p.packet_pages;
    for (uint32_t i = 0; i < s->nch; i++) {
        vmig_channel *c = &s->ch[i];
        c->hdr = vmig_fault_alloc(s) ? NULL : malloc(VMIG_PKT_HDR_LEN + 8 * (size_t)pp);
        c->iov = malloc(sizeof(struct iovec) * (pp + 1));
        c->offsets = malloc(sizeof(uint64_t) * pp);
        c->pages = malloc(sizeof(uint8_t *) * pp);
        c->zbufs = malloc(sizeof(void *) * pp);
        c->zbufs_next = malloc(sizeof(void *) * pp);
        c->zres = malloc(pp);
        bool ok =
            c->hdr && c->iov && c->offsets && c->pages && c->zbufs && c->zbufs_next && c->zres;
        for (int j = 0; j < VMIG_QUEUE_DEPTH && ok; j++)
            ok = (c->jobs[j].offsets = malloc(sizeof(uint64_t) * pp)) != NULL;
        if (!ok)
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for channel %u buffers", i);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* zero-page detection offload                                         */

/* The engine of this run (zero-page-detection=channel) and one per
 * channel. accel=auto opens DSA when it can and says why not otherwise;
 * a backend asked for by name that cannot open fails the migration before
 * it starts. The engine checks pages of the first block's size; packets of
 * blocks with another page size go to the CPU (counted as fallbacks). */
static int accel_setup(vmig_session *s, vmig_error *err)
{
    if (s->p.zero_detect != VMIG_ZERO_CHANNEL)
        return 0;
    vmig_accel_conf conf = {
        .path = s->p.accel_path,
        .channels = s->nch,
        .max_jobs = s->p.packet_pages,
        .len = s->blocks[0].page_size,
        .cpu = s->zero->fn,
    };
    char note[sizeof(s->st_accel.note)] = "";
    vmig_accel *a = NULL;
    vmig_error e = {0};
    if (s->p.accel == VMIG_ACCEL_AUTO) {
        if (vmig_accel_open(vmig_accel_find("dsa"), &conf, &a, &e))
            snprintf(note, sizeof(note), "accel=auto: %.200s; the CPU checks zero pages", e.msg);
        int rc = a ? 0 : vmig_accel_open(vmig_accel_find("cpu"), &conf, &a, err);
        if (rc)
            return rc;
    } else {
        const char *name = vmig_accel_kind_name(s->p.accel);
        int rc = vmig_accel_open(vmig_accel_find(name), &conf, &a, &e);
        if (rc)
            return vmig_error_set(err, rc, "accel=%s: %s", name, e.msg);
    }
    char engine[sizeof(s->st_accel.engine)];
    if (vmig_accel_inline(a))
        snprintf(engine, sizeof(engine), "cpu (%s, inline on the channel threads)", s->zero->name);
    else
        vmig_accel_describe(a, engine, sizeof(engine));
    pthread_mutex_lock(&s->lock);
    s->accel = a;
    snprintf(s->st_accel.engine, sizeof(s->st_accel.engine), "%s", engine);
    snprintf(s->st_accel.note, sizeof(s->st_accel.note), "%s", note);
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; i < s->nblocks; i++)
        s->blocks[i].anon_private =
            !vmig_accel_inline(a) && vmig_vma_private_anon(s->blocks[i].host, s->blocks[i].length);
    for (uint32_t i = 0; i < s->nch; i++) {
        int rc = vmig_accel_chan_create(a, i, &s->ch[i].accel, &e);
        if (rc)
            return vmig_error_set(err, rc, "channel %u: %s", i, e.msg);
    }
    return 0;
}

static void accel_fill(vmig_accel *a, vmig_accel_stats *o)
{
    vmig_accel_counters k;
    vmig_accel_counters_get(a, &k);
    o->batches = k.batches;
    o->dev_pages = k.dev_pages;
    o->cpu_pages = k.cpu_pages;
    o->tail_pages = k.tail_pages;
    o->faults = k.faults;
    o->untouched = k.untouched;
    o->retries = k.retries;
    o->fallbacks = k.fallbacks;
    o->late = k.late;
    o->device_cpu_ns = vmig_accel_device_cpu_ns(a);
    const char *why = vmig_accel_failure(a);
    if (why) {
        o->failed = 1;
        snprintf(o->note, sizeof(o->note), "%s", why);
    }
}

void vmig_source_accel_stats(vmig_session *s, vmig_accel_stats *o)
{
    pthread_mutex_lock(&s->lock);
    *o = s->st_accel;
    if (s->accel)
        accel_fill(s->accel, o);
    pthread_mutex_unlock(&s->lock);
}

void vmig_source_accel_end(vmig_session *s)
{
    pthread_mutex_lock(&s->lock);
    vmig_accel *a = s->accel;
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; i < VMIG_MAX_CHANNELS; i++) {
        vmig_accel_chan_free(s->ch[i].accel); /* reclaims late batches */
        s->ch[i].accel = NULL;
    }
    if (!a)
        return;
    pthread_mutex_lock(&s->lock);
    accel_fill(a, &s->st_accel);
    s->accel = NULL;
    pthread_mutex_unlock(&s->lock);
    vmig_accel_close(a);
}

void vmig_source_accel_notice(vmig_session *s)
{
    if (!s->event_cb || s->accel_noticed)
        return;
    vmig_accel_stats st;
    vmig_source_accel_stats(s, &st);
    if (!st.failed)
        return;
    s->accel_noticed = true;
    vmig_event ev = {.type = VMIG_EVENT_NOTICE,
                     .pass = __atomic_load_n(&s->st_pass, __ATOMIC_RELAXED),
                     .message = st.note};
    s->event_cb(s->event_opaque, s, &ev);
}

/* auto's view of what held TCP back, summed over the data channels. */
static int auto_tcp_limits(void *arg, uint64_t *busy_us, uint64_t *rwnd_us)
{
    vmig_session *s = arg;
    *busy_us = *rwnd_us = 0;
    for (uint32_t i = 0; i < s->nch; i++) {
        uint64_t b, r;
        if (!s->ch[i].conn || vmig_conn_tcp_limits(s->ch[i].conn, &b, &r))
            return VMIG_ENOTSUP;
        *busy_us += b;
        *rwnd_us += r;
    }
    return 0;
}

/* After READY: the fixed codec must be one the destination decodes; auto
 * picks among the candidates both sides have. */
static int choose_codecs(vmig_session *s, vmig_error *err)
{
    uint32_t c = s->p.compression;
    if (c != VMIG_COMPRESSION_AUTO && !(s->dest_codecs & 1u << c))
        return vmig_error_set(err, VMIG_ENOTSUP,
                              "compression %s: the destination cannot decode it (it was built "
                              "without it); use compression=auto or a codec it has",
                              vmig_codec_name(c));
    s->auto_mask = VMIG_AUTO_CANDIDATES & vmig_codec_built_mask() & s->dest_codecs;
    /* A destination on this host without a pacing limit: the "link" is a
     * memory copy made by the same CPUs that would compress and decompress,
     * so no codec can win (a blocked write there means waiting for the
     * receiver's CPU, which compression only loads more). */
    if (s->p.max_bandwidth == 0 && vmig_conn_is_local(s->control))
        s->auto_mask = 1u << VMIG_CODEC_NONE;
    return 0;
}

static int send_hello(vmig_session *s, uint32_t features, vmig_error *err)
{
    vmig_wire_block *wb = calloc(s->nblocks, sizeof(*wb));
    vmig_wire_device *wd = calloc(s->ndevs ? s->ndevs : 1, sizeof(*wd));
    size_t cap = 32 + (size_t)s->nblocks * (2 + VMIG_BLOCK_NAME_MAX + 12) +
                 (size_t)s->ndevs * (2 + VMIG_DEVICE_ID_MAX + 4);
    uint8_t *buf = malloc(cap);
    int rc = 0;
    if (!wb || !wd || !buf) {
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
        .features = features,
        .nblocks = s->nblocks,
        .blocks = wb,
    };
    for (uint32_t i = 0; i < s->ndevs; i++) {
        memcpy(wd[i].id, s->devs[i].id, sizeof(wd[i].id));
        wd[i].instance = s->devs[i].instance;
    }
    if (s->ndevs) {
        h.features |= VMIG_HELLO_F_DEVICES;
        h.dev_path = (uint8_t)s->dev_path;
        h.dev_chunk = s->dev_chunk;
        h.ndevices = s->ndevs;
        h.devices = wd;
    }
    int n = vmig_wire_hello_encode(&h, buf, cap);
    if (n < 0) {
        rc = vmig_error_set(err, VMIG_EINVAL, "HELLO does not fit in %zu bytes", cap);
        goto out;
    }
    rc = vmig_ctl_write(s->control, VMIG_CTL_HELLO, buf, (uint32_t)n, err);
out:
    free(wb);
    free(wd);
    free(buf);
    return rc;
}

static int connect_channel(vmig_session *s, const char *uri, uint8_t kind, uint8_t flags,
                           uint32_t id, vmig_conn **out, vmig_error *err)
{
    int rc = vmig_connect(uri, (int)s->p.connect_timeout_ms, out, err);
    if (rc)
        return rc;
    /* A destination that takes no data for connect-timeout (stopped, wedged)
     * must not hold a live VM's migration forever: the write times out. */
    struct timeval tv = {(time_t)(s->p.connect_timeout_ms / 1000),
                         (suseconds_t)(s->p.connect_timeout_ms % 1000) * 1000};
    if ((*out)->fd >= 0)
        setsockopt((*out)->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    /* ... and one whose host died must not either while we wait for its
     * answers (RESULT, acknowledgements). */
    vmig_conn_keepalive(*out, s->p.connect_timeout_ms);
    if (s->tls) {
        char host[256];
        const char *name = s->p.tls_hostname[0]                     ? s->p.tls_hostname
                           : vmig_uri_host(uri, host, sizeof(host)) ? host
                                                                    : NULL;
        if ((rc = vmig_session_tls_wrap(s, out, name, err))) {
            vmig_conn_close(*out);
            *out = NULL;
            return rc;
        }
    }
    vmig_wire_hs hs = {.kind = kind,
                       .flags = flags,
                       .channel_id = (uint16_t)id,
                       .channel_count = (uint16_t)s->nch};
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
    /* The VM is stopped now: a destination that does not answer must not
     * hold it forever. It verifies up to all its memory first (verify=full),
     * hence a second per GiB on top of connect-timeout. */
    int timeout = (int)VMIG_MIN((uint64_t)INT32_MAX,
                                (uint64_t)s->p.connect_timeout_ms + 1000 * (s->total_bytes >> 30));
    rc = vmig_ctl_read_session(s, VMIG_CTL_RESULT, &payload, &plen, timeout, err);
    if (rc)
        goto out;
    vmig_wire_status st;
    rc = vmig_wire_status_decode(payload, plen, false, &st, err);
    free(payload);
    if (!rc && st.status != 0)
        rc = vmig_error_set(err, VMIG_EPEER, "destination refused the migration: %s (%s)", st.msg,
                            vmig_strerror(st.status));
    /* The last point of return: a cancel until here resumes the VM. */
    if (!rc && vmig_session_aborted(s))
        rc = VMIG_ECANCELED;
    if (!rc)
        rc = vmig_ctl_write(s->control, VMIG_CTL_COMMIT, NULL, 0, err);
out:
    free(dg);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* live pre-copy                                                       */

/* What the run did to the VM, so that the failure path can undo it. */
typedef struct live {
    vmig_precopy pc;
    bool logging;      /* log_start returned 0 or the tracker started */
    bool stopped;      /* stop was called */
    uint32_t throttle; /* last value given to the throttle hook */
    uint64_t t_stop, last_sync;
    /* The rate probe of the current pass: when it is due (0: none), and what it found. */
    uint64_t probe_at, probe_bytes, probe_ns;
    int probe_rc;
    vmig_error probe_err;
} live;

static void emit(vmig_session *s, uint32_t type, const live *L, uint32_t pass, int result)
{
    if (!s->event_cb)
        return;
    vmig_source_accel_notice(s);
    vmig_event ev = {
        .type = type,
        .pass = pass,
        .remaining_bytes = L->pc.remaining,
        .dirty_rate = L->pc.dirty_rate,
        .bandwidth = L->pc.bandwidth,
        .expected_downtime_ns = L->pc.expected_ns,
        .throttle_pct = L->throttle,
        .result = result,
    };
    s->event_cb(s->event_opaque, s, &ev);
}

static void set_throttle(vmig_session *s, live *L, uint32_t pct, uint32_t pass)
{
    if (pct == L->throttle || !s->ops.throttle)
        return;
    L->throttle = pct;
    s->ops.throttle(s->ops_opaque, pct);
    __atomic_store_n(&s->st_throttle, pct, __ATOMIC_RELAXED);
    if (pct > __atomic_load_n(&s->st_throttle_max, __ATOMIC_RELAXED))
        __atomic_store_n(&s->st_throttle_max, pct, __ATOMIC_RELAXED);
    emit(s, VMIG_EVENT_THROTTLE, L, pass, 0);
}

/* When a migration ends, either way: the VM is not throttled any more. */
static void unthrottle(vmig_session *s, const live *L)
{
    if (L->throttle && s->ops.throttle)
        s->ops.throttle(s->ops_opaque, 0);
    __atomic_store_n(&s->st_throttle, 0, __ATOMIC_RELAXED);
}

/* Resolve dirty-track and prepare the tracker and the bitmaps; nothing is
 * tracked yet (dirty_start does that, just before pass 1). */
static int dirty_setup(vmig_session *s, vmig_error *err)
{
    uint32_t mode = s->p.dirty_track;
    if (mode == VMIG_DIRTY_AUTO)
        mode = s->ops.dirty_sync ? VMIG_DIRTY_CALLBACK : VMIG_DIRTY_NONE;
    if (mode == VMIG_DIRTY_CALLBACK && !s->ops.dirty_sync)
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty-track callback needs a dirty_sync hook (vmig_set_vm_ops)");
    __atomic_store_n(&s->dirty_mode, mode, __ATOMIC_RELAXED);
    if (mode == VMIG_DIRTY_NONE && s->colo)
        return vmig_error_set(err, VMIG_EINVAL,
                              "continuous checkpoints need dirty tracking (dirty-track, or the "
                              "VM's dirty_sync hook)");
    if (mode == VMIG_DIRTY_NONE)
        return 0;
    /* Without a way to stop the writers, the last pass could miss writes. */
    if (!s->ops.stop)
        return vmig_error_set(err, VMIG_EINVAL,
                              "dirty-track %s: live migration needs the VM's stop hook "
                              "(vmig_set_vm_ops)",
                              vmig_dirty_track_name(mode));
    if (mode != VMIG_DIRTY_CALLBACK) {
        enum vmig_tracker_kind kind = mode == VMIG_DIRTY_WP_ASYNC  ? VMIG_TRACKER_WP_ASYNC
                                      : mode == VMIG_DIRTY_WP_SYNC ? VMIG_TRACKER_WP_SYNC
                                                                   : VMIG_TRACKER_AUTO;
        int rc = vmig_tracker_create(&s->tracker, kind, err);
        if (rc)
            return rc;
        __atomic_store_n(&s->dirty_mode,
                         vmig_tracker_kind_of(s->tracker) == VMIG_TRACKER_WP_ASYNC
                             ? VMIG_DIRTY_WP_ASYNC
                             : VMIG_DIRTY_WP_SYNC,
                         __ATOMIC_RELAXED);
        for (uint32_t i = 0; i < s->nblocks; i++) {
            vmig_block *b = &s->blocks[i];
            rc = vmig_tracker_add(s->tracker, b->host, b->length, b->page_size, err);
            if (rc < 0)
                return rc;
            b->track_idx = (uint32_t)rc;
        }
    }
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        size_t words = (b->npages + 63) / 64;
        free(b->dirty);
        free(b->dirty_new);
        free(b->carry);
        b->dirty = calloc(words, sizeof(uint64_t));
        b->dirty_new = calloc(words, sizeof(uint64_t));
        b->carry = calloc(words, sizeof(uint64_t));
        if (!b->dirty || !b->dirty_new || !b->carry)
            return vmig_error_set(err, VMIG_ENOMEM, "block '%s': no memory for its dirty bitmap",
                                  b->name);
    }
    return 0;
}

static int dirty_start(vmig_session *s, live *L, vmig_error *err)
{
    int rc = 0;
    if (s->tracker)
        rc = vmig_tracker_start(s->tracker, err);
    else if (s->ops.log_start && (rc = s->ops.log_start(s->ops_opaque)))
        rc = vmig_error_set(err, rc < 0 ? rc : VMIG_EIO, "the VM's log_start hook failed (%s)",
                            vmig_strerror(rc));
    L->logging = rc == 0;
    L->last_sync = vmig_now_ns();
    return rc;
}

static void dirty_end(vmig_session *s, live *L)
{
    if (s->tracker) {
        vmig_tracker_free(s->tracker);
        s->tracker = NULL;
    } else if (L->logging && s->ops.log_stop) {
        s->ops.log_stop(s->ops_opaque);
    }
    L->logging = false;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        free(s->blocks[i].dirty);
        free(s->blocks[i].dirty_new);
        free(s->blocks[i].carry);
        s->blocks[i].dirty = s->blocks[i].dirty_new = s->blocks[i].carry = NULL;
    }
}

/*
 * Sync the dirty log of every block:
 *   SYNC_REPLACE     after a pass whose pages are all queued: b->dirty = the
 *                    new pages and those the probes of the pass collected;
 *   SYNC_ACCUMULATE  after stop: added to the pages of the sync that decided
 *                    to stop (which are not sent yet);
 *   SYNC_PROBE       early in a long pass, to measure the dirty rate over a
 *                    short time (over a whole pass, pages written twice count
 *                    once, and a hot set that is all dirty hides the rate):
 *                    the pages go to b->carry, sent in the next pass.
 * Returns the dirty bytes now in the bitmaps (PROBE: those the probe found).
 */
enum sync_mode { SYNC_REPLACE, SYNC_ACCUMULATE, SYNC_PROBE };

static int dirty_sync(vmig_session *s, enum sync_mode mode, uint64_t *dirty_bytes, vmig_error *err)
{
    uint64_t t0 = vmig_now_ns(), bytes = 0, found = 0;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        size_t words = (b->npages + 63) / 64;
        memset(b->dirty_new, 0, words * sizeof(uint64_t));
        int rc;
        if (s->tracker) {
            rc = vmig_tracker_sync(s->tracker, b->track_idx, b->dirty_new, NULL, err);
        } else {
            rc = s->ops.dirty_sync(s->ops_opaque, i, b->name, b->dirty_new, b->npages);
            if (rc)
                rc = vmig_error_set(err, rc < 0 ? rc : VMIG_EIO,
                                    "the VM's dirty_sync hook failed for block '%s' (%s)", b->name,
                                    vmig_strerror(rc));
        }
        if (rc)
            return rc;
        if (b->npages % 64) /* bits past the end are the hook's noise */
            b->dirty_new[words - 1] &= (1ull << (b->npages % 64)) - 1;
        uint64_t pages = 0, *dn = b->dirty_new, *d = b->dirty, *c = b->carry;
        for (size_t w = 0; w < words; w++) {
            uint64_t n = (uint64_t)__builtin_popcountll(dn[w]);
            found += n;
            if (mode == SYNC_PROBE) {
                c[w] |= dn[w];
                pages += n;
                continue;
            }
            d[w] = (mode == SYNC_ACCUMULATE ? d[w] : 0) | dn[w] | c[w];
            c[w] = 0;
            pages += (uint64_t)__builtin_popcountll(d[w]);
        }
        bytes += pages << b->page_shift;
    }
    vmig_stat_add(&s->st_dirty_pages, found);
    vmig_stat_add(&s->st_sync_ns, vmig_now_ns() - t0);
    *dirty_bytes = bytes;
    return 0;
}

/* Probe ahead of a pass: PROBE_AFTER after it starts, if it lasts that long. */
#define PROBE_AFTER_NS 200000000ull

typedef struct probe_ctx {
    vmig_session *s;
    live *L;
} probe_ctx;

static void probe_tick(void *arg)
{
    probe_ctx *p = arg;
    live *L = p->L;
    if (!L->probe_at || L->probe_rc || vmig_now_ns() < L->probe_at)
        return;
    L->probe_at = 0;
    uint64_t bytes;
    L->probe_rc = dirty_sync(p->s, SYNC_PROBE, &bytes, &L->probe_err);
    if (L->probe_rc) {
        vmig_session_fail(p->s, &L->probe_err); /* the producer sees abort */
        return;
    }
    uint64_t now = vmig_now_ns();
    L->probe_bytes = bytes;
    L->probe_ns = now - L->last_sync;
}

static int vm_stop(vmig_session *s, live *L, vmig_error *err)
{
    L->t_stop = vmig_now_ns();
    if (!s->ops.stop)
        return 0;
    L->stopped = true; /* a stop that failed halfway is undone by resume too */
    int rc = s->ops.stop(s->ops_opaque);
    if (rc)
        return vmig_error_set(err, rc < 0 ? rc : VMIG_EIO, "the VM's stop hook failed (%s)",
                              vmig_strerror(rc));
    return 0;
}

static void publish(vmig_session *s, const live *L, uint32_t pass)
{
    __atomic_store_n(&s->st_pass, pass, __ATOMIC_RELAXED);
    __atomic_store_n(&s->st_remaining, L->pc.remaining, __ATOMIC_RELAXED);
    __atomic_store_n(&s->st_dirty_rate, L->pc.dirty_rate, __ATOMIC_RELAXED);
    __atomic_store_n(&s->st_bandwidth, L->pc.bandwidth, __ATOMIC_RELAXED);
    __atomic_store_n(&s->st_expected_ns, L->pc.expected_ns, __ATOMIC_RELAXED);
}

/*
 * After the RAM jobs of a pass are queued: the devices' save_iterate
 * (the VM runs) or, once it is stopped, save_final, whose chunks then go
 * out with the last RAM pass. On the control path save_final waits until
 * the channels are done (vmig_source_run).
 */
static int dev_after_pass(vmig_session *s, bool final, uint32_t pass, uint64_t *seq,
                          vmig_error *err)
{
    if (!s->ndevs || (final && s->dev_path == VMIG_DEVSTATE_CONTROL))
        return 0;
    return vmig_dev_save(s, final, pass, seq, err);
}

/*
 * Every pass up to FIN. Pass 1 sends all pages; after each pass the dirty
 * log is synced and the policy decides: another pass of the dirty pages,
 * or stop the VM, sync once more and send the rest as the last pass. Each
 * pass ends with SYNC on every channel (the destination's barrier).
 */
static int run_passes(vmig_session *s, live *L, uint64_t *scratch, uint64_t *seq_out,
                      uint32_t *pass_out, vmig_error *err)
{
    uint64_t seq = 0;
    uint32_t pass = 1;
    bool tracked = __atomic_load_n(&s->dirty_mode, __ATOMIC_RELAXED) != VMIG_DIRTY_NONE;
    /* Until the VM stops, the pages being compressed may change under the codec. */
    __atomic_store_n(&s->pages_volatile, tracked, __ATOMIC_RELAXED);
    int rc = tracked ? dirty_start(s, L, err) : vm_stop(s, L, err);
    if (rc)
        return rc;
    probe_ctx pctx = {.s = s, .L = L};
    packer pk = {.s = s, .pass = 1, .seq = &seq, .scratch = scratch};
    if (tracked) {
        pk.tick = probe_tick;
        pk.tick_ctx = &pctx;
    }
    uint64_t t_pass = vmig_now_ns(), wire0 = 0;
    L->probe_at = t_pass + PROBE_AFTER_NS;
    publish(s, L, 1);
    if ((rc = produce_all(&pk)) || (rc = dev_after_pass(s, !tracked, 1, &seq, err)) ||
        (rc = push_markers(s, VMIG_JOB_SYNC, 1, &seq)))
        return L->probe_rc ? vmig_error_copy(err, &L->probe_err) : rc;
    while (tracked) {
        if ((rc = wait_drained(s, pass)))
            return rc;
        L->probe_at = 0;
        uint64_t t_end = vmig_now_ns();
        uint64_t wire = __atomic_load_n(&s->st_wire_bytes, __ATOMIC_RELAXED);
        uint64_t dirty;
        if ((rc = dirty_sync(s, SYNC_REPLACE, &dirty, err)))
            return rc;
        uint64_t t_synced = vmig_now_ns();
        vmig_pass_sample smp = {
            .pass = pass,
            .wire_bytes = wire - wire0,
            .pass_ns = t_end - t_pass,
            .dirty_bytes = dirty,
            .interval_ns = t_synced - L->last_sync,
            .sync_ns = t_synced - t_end,
            .elapsed_ns = t_synced - s->start_ns,
            .probe_bytes = L->probe_bytes,
            .probe_ns = L->probe_ns,
            .dev_bytes = vmig_dev_pending(s),
        };
        L->last_sync = t_synced;
        L->probe_bytes = L->probe_ns = 0;
        char why[VMIG_ERROR_MSG_MAX - 64];
        enum vmig_pc_verdict v = vmig_precopy_step(&L->pc, &smp, why, sizeof(why));
        publish(s, L, pass);
        emit(s, VMIG_EVENT_PASS, L, pass, 0);
        if (v == VMIG_PC_FAIL)
            return vmig_error_set(err, VMIG_ETIMEDOUT, "live migration did not converge: %s", why);
        if (v == VMIG_PC_NEXT) {
            set_throttle(s, L, L->pc.throttle, pass);
            pass++;
            pk.pass = pass;
            t_pass = vmig_now_ns();
            L->probe_at = t_pass + PROBE_AFTER_NS;
            wire0 = __atomic_load_n(&s->st_wire_bytes, __ATOMIC_RELAXED);
            if ((rc = produce_dirty(&pk)) || (rc = dev_after_pass(s, false, pass, &seq, err)) ||
                (rc = push_markers(s, VMIG_JOB_SYNC, pass, &seq)))
                return L->probe_rc ? vmig_error_copy(err, &L->probe_err) : rc;
            continue;
        }
        if (v == VMIG_PC_FORCE)
            __atomic_store_n(&s->st_forced, 1, __ATOMIC_RELAXED);
        emit(s, VMIG_EVENT_SWITCHOVER, L, pass, 0);
        pk.tick = NULL; /* nothing to measure once the VM stops */
        if ((rc = vm_stop(s, L, err)) || (rc = dirty_sync(s, SYNC_ACCUMULATE, &dirty, err)))
            return rc;
        /* Packets of earlier passes still queued read the stopped VM too. */
        __atomic_store_n(&s->pages_volatile, 0, __ATOMIC_RELAXED);
        L->pc.remaining = dirty;
        pass++;
        pk.pass = pass;
        publish(s, L, pass);
        if ((rc = produce_dirty(&pk)) || (rc = dev_after_pass(s, true, pass, &seq, err)) ||
            (rc = push_markers(s, VMIG_JOB_SYNC, pass, &seq)))
            return rc;
        break;
    }
    *seq_out = seq;
    *pass_out = pass;
    /* Continuous checkpoints: the channels stay open for the next ones. */
    return s->colo ? 0 : push_markers(s, VMIG_JOB_FIN, pass, &seq);
}

static int send_devstate(vmig_session *s, vmig_error *err)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = s->ops.save_state(s->ops_opaque, &buf, &len);
    if (rc) {
        free(buf);
        return vmig_error_set(err, rc < 0 ? rc : VMIG_EIO, "the VM's save_state hook failed (%s)",
                              vmig_strerror(rc));
    }
    if (len > VMIG_WIRE_MAX_CTL_PAYLOAD || (len && !buf)) {
        free(buf);
        return vmig_error_set(err, VMIG_EINVAL,
                              "the VM's save_state hook gave %zu bytes (limit %u, buffer %s)", len,
                              VMIG_WIRE_MAX_CTL_PAYLOAD, buf ? "set" : "NULL");
    }
    rc = vmig_ctl_write(s->control, VMIG_CTL_DEVSTATE, buf, (uint32_t)len, err);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* continuous checkpoints (primary)                                    */

static void colo_emit(vmig_session *s, uint64_t id, uint32_t pass, uint64_t pause, uint64_t commit,
                      uint64_t bytes)
{
    if (!s->event_cb)
        return;
    vmig_event ev = {.type = VMIG_EVENT_CHECKPOINT,
                     .pass = pass,
                     .checkpoint = id,
                     .pause_ns = pause,
                     .commit_ns = commit,
                     .ckpt_bytes = bytes};
    s->event_cb(s->event_opaque, s, &ev);
}

static void colo_stat_max(uint64_t *ctr, uint64_t v)
{
    if (v > __atomic_load_n(ctr, __ATOMIC_RELAXED))
        __atomic_store_n(ctr, v, __ATOMIC_RELAXED); /* one writer: this thread */
}

/* CKPT `id` of `pass` with digests dg, then wait for its ACK. `heard`
 * NULL: no heartbeat yet (checkpoint 0), wait at most timeout_ms. */
static int colo_commit(vmig_session *s, uint64_t id, uint32_t pass, uint8_t (*dg)[16],
                       uint64_t *heard, int timeout_ms, vmig_error *err)
{
    size_t cap = VMIG_CKPT_FIXED + 4 + 16 * (size_t)s->nblocks + 24;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for CKPT");
    vmig_wire_ckpt c = {.id = id,
                        .pass = pass,
                        .end = {.nblocks = s->nblocks,
                                .digests = dg,
                                .packets = __atomic_load_n(&s->st_packets, __ATOMIC_RELAXED),
                                .normal_pages = __atomic_load_n(&s->st_normal, __ATOMIC_RELAXED),
                                .zero_pages = __atomic_load_n(&s->st_zero, __ATOMIC_RELAXED)}};
    int n = vmig_wire_ckpt_encode(&c, buf, cap);
    int rc = n < 0 ? vmig_error_set(err, VMIG_EINVAL, "CKPT does not fit")
                   : vmig_colo_ctl_write(s, VMIG_CTL_CKPT, buf, (uint32_t)n, err);
    free(buf);
    if (rc)
        return rc;
    uint64_t until = heard ? 0 : vmig_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    unsigned type;
    uint8_t *payload;
    uint32_t len;
    rc = vmig_colo_read(s, 1u << VMIG_CTL_ACK, VMIG_CTL_ACK, until, heard, true, &type, &payload,
                        &len, err);
    if (rc == VMIG_EAGAIN)
        return vmig_error_set(err, VMIG_ETIMEDOUT, "no ACK of checkpoint %llu within %d ms",
                              (unsigned long long)id, timeout_ms);
    if (rc)
        return rc;
    uint64_t got;
    rc = vmig_wire_ack_decode(payload, len, &got, err);
    free(payload);
    if (!rc && got != id)
        rc = vmig_error_set(err, VMIG_EPROTO, "ACK of checkpoint %llu, expected %llu",
                            (unsigned long long)got, (unsigned long long)id);
    return rc;
}

/* Resume the VM after a checkpoint's pause; returns the pause. */
static uint64_t colo_resume(vmig_session *s, live *L)
{
    if (L->stopped && s->ops.resume)
        s->ops.resume(s->ops_opaque);
    L->stopped = false;
    return vmig_now_ns() - L->t_stop;
}

/*
 * After the initial passes (the VM stopped, its last pass and SYNC
 * queued): checkpoint 0, then one checkpoint per period (or request)
 * until the protection ends. Always returns an error: VMIG_ECANCELED or
 * why the secondary is lost. The VM runs between checkpoints.
 */
static int colo_run(vmig_session *s, live *L, uint64_t *scratch, uint64_t seq, uint32_t pass,
                    vmig_error *err)
{
    uint8_t(*dg)[16] = calloc(s->nblocks, 16);
    if (!dg)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for digests");
    __atomic_store_n(&s->colo_sending, 1, __ATOMIC_RELEASE); /* checkpoint 0's last pass */
    int rc = wait_drained(s, pass);
    __atomic_store_n(&s->colo_sending, 0, __ATOMIC_RELEASE);
    if (rc)
        goto out;
    /* Checkpoint 0: digests of all memory, as at the end of a migration. */
    for (uint32_t i = 0; i < s->nblocks && s->p.verify != VMIG_VERIFY_OFF; i++) {
        vmig_digest d = s->p.verify == VMIG_VERIFY_FULL
                            ? vmig_block_digest_memory(&s->blocks[i], s->nch)
                            : vmig_block_digest_hashes(&s->blocks[i], false);
        vmig_digest_to_bytes(&d, dg[i]);
    }
    uint64_t pause = colo_resume(s, L);
    __atomic_store_n(&s->st_downtime_ns, pause, __ATOMIC_RELAXED);
    set_throttle(s, L, 0, pass);
    int timeout = (int)VMIG_MIN((uint64_t)INT32_MAX,
                                (uint64_t)s->p.connect_timeout_ms + 1000 * (s->total_bytes >> 30));
    uint64_t t_ack = vmig_now_ns();
    if ((rc = colo_commit(s, 0, pass, dg, NULL, timeout, err)))
        goto out;
    s->colo_protected = true;
    __atomic_store_n(&s->state, VMIG_STATE_CHECKPOINTING, __ATOMIC_RELEASE);
    colo_emit(s, 0, pass, pause, vmig_now_ns() - t_ack, s->total_bytes);

    uint64_t heard = vmig_now_ns(), last_start = heard;
    uint64_t period = (uint64_t)s->p.checkpoint_period_ms * 1000000ull;
    for (uint64_t id = 1;; id++) {
        /* Between checkpoints: heartbeats in, until the period (start to
         * start) is over. */
        uint64_t due = period ? last_start + period : UINT64_MAX;
        for (;;) {
            if (__atomic_exchange_n(&s->colo_request, 0, __ATOMIC_ACQ_REL))
                break;
            uint64_t now = vmig_now_ns();
            if (now >= due)
                break;
            unsigned type;
            uint8_t *payload;
            uint32_t len;
            rc = vmig_colo_read(s, 0, VMIG_CTL_HEARTBEAT, VMIG_MIN(due, now + 20000000ull), &heard,
                                true, &type, &payload, &len, err);
            free(payload);
            if (rc != VMIG_EAGAIN)
                goto out; /* no frame but HEARTBEAT is expected: rc != 0 */
        }
        /* The checkpoint: pause, sync, send, resume. */
        uint64_t dirty;
        if ((rc = vm_stop(s, L, err)) || (rc = dirty_sync(s, SYNC_REPLACE, &dirty, err)))
            goto out;
        last_start = L->t_stop;
        __atomic_store_n(&s->colo_sending, id + 1, __ATOMIC_RELEASE);
        pass++;
        packer pk = {.s = s, .pass = pass, .seq = &seq, .scratch = scratch};
        for (uint32_t i = 0; i < s->ndevs; i++)
            s->devs[i].next_chunk = 0;
        if ((rc = produce_dirty(&pk)) ||
            (s->ndevs && (rc = vmig_dev_save(s, true, pass, &seq, err))) ||
            (rc = push_markers(s, VMIG_JOB_SYNC, pass, &seq)) || (rc = wait_drained(s, pass)))
            goto out;
        __atomic_store_n(&s->colo_sending, 0, __ATOMIC_RELEASE);
        vmig_colo_digests(s, false, dg);
        pause = colo_resume(s, L);
        __atomic_store_n(&s->st_ckpt_pause_ns, pause, __ATOMIC_RELAXED);
        colo_stat_max(&s->st_ckpt_pause_max_ns, pause);
        vmig_stat_add(&s->st_ckpt_pause_total_ns, pause);
        __atomic_store_n(&s->st_pass, pass, __ATOMIC_RELAXED);
        t_ack = vmig_now_ns();
        if ((rc = colo_commit(s, id, pass, dg, &heard, 0, err)))
            goto out;
        uint64_t ack = vmig_now_ns() - t_ack;
        vmig_stat_add(&s->st_ckpts, 1);
        __atomic_store_n(&s->st_ckpt_bytes, dirty, __ATOMIC_RELAXED);
        __atomic_store_n(&s->st_ckpt_commit_ns, ack, __ATOMIC_RELAXED);
        colo_stat_max(&s->st_ckpt_commit_max_ns, ack);
        colo_emit(s, id, pass, pause, ack, dirty);
    }
out:
    vmig_colo_hb_stop(s);
    __atomic_store_n(&s->colo_sending, 0, __ATOMIC_RELEASE);
    free(dg);
    if (!rc)
        rc = vmig_error_set(err, VMIG_EIO, "continuous checkpoints stopped");
    return rc;
}

int vmig_source_run(vmig_session *s, const char *uri)
{
    vmig_error e = {0};
    live L = {0};
    uint64_t *scratch = NULL;
    int rc;
    s->nch = s->p.channels;
    __atomic_store_n(&s->dev_path, s->p.devstate_path, __ATOMIC_RELAXED); /* stats read it */
    s->dev_chunk =
        s->dev_path == VMIG_DEVSTATE_CONTROL
            ? VMIG_MIN(s->p.devstate_chunk, VMIG_WIRE_MAX_CTL_PAYLOAD - VMIG_DEVCHUNK_HDR_LEN)
            : s->p.devstate_chunk;
    pthread_getcpuclockid(pthread_self(), &s->caller_clock);
    vmig_precopy_init(&L.pc, &s->p);
    if (s->colo && (s->ops.save_state || (s->ndevs && s->dev_path == VMIG_DEVSTATE_CONTROL))) {
        rc = vmig_error_set(&e, VMIG_EINVAL,
                            "continuous checkpoints send device state over the data channels: "
                            "%s",
                            s->ops.save_state ? "the save_state hook is not supported "
                                                "(register a device instead)"
                                              : "devstate-path=control is not supported");
        goto fail;
    }
    s->resume = s->p.resume != 0;
    snprintf(s->uri, sizeof(s->uri), "%s", uri);
    if (s->resume && s->colo) {
        rc = vmig_error_set(&e, VMIG_EINVAL,
                            "resume is for migrations; continuous checkpoints recover from a "
                            "broken channel by the next checkpoint or a failover");
        goto fail;
    }
    if (s->resume && strlen(uri) >= sizeof(s->uri)) {
        rc = vmig_error_set(&e, VMIG_EINVAL, "resume: the URI is longer than %zu bytes",
                            sizeof(s->uri) - 1);
        goto fail;
    }
    if (!s->ops.throttle)
        L.pc.policy = VMIG_THROTTLE_OFF; /* nothing to turn: stalls end by on-limit */
    scratch = malloc(sizeof(uint64_t) * s->p.packet_pages);
    if (!scratch) {
        rc = vmig_error_set(&e, VMIG_ENOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < s->nblocks; i++)
        s->blocks[i].zero_hash = vmig_zero_page_hash(s->blocks[i].page_size);
    if (s->p.compression != VMIG_COMPRESSION_AUTO &&
        (rc = vmig_codec_available(s->p.compression, &e)))
        goto fail;
    /* The offload engine before any connection: a device asked for that
     * cannot be used fails the migration before the peer hears of it. */
    if ((rc = vmig_session_tls_begin(s, &e)) || (rc = alloc_channels(s, &e)) ||
        (rc = vmig_session_alloc_block_state(s, false, &e)) || (rc = accel_setup(s, &e)) ||
        (rc = dirty_setup(s, &e)) ||
        (s->ndevs && (rc = vmig_dev_pool_fill(s, s->nch * (VMIG_QUEUE_DEPTH + 1) + 2, &e))))
        goto fail;

    /* Control channel: handshake, HELLO, then READY (or the destination's reason). */
    vmig_conn *ctl;
    if ((rc = connect_channel(s, uri, VMIG_CH_CONTROL, 0, 0, &ctl, &e)))
        goto fail;
    pthread_mutex_lock(&s->lock);
    s->control = ctl;
    pthread_mutex_unlock(&s->lock);
    if ((rc = send_hello(s,
                         (s->ops.save_state ? VMIG_HELLO_F_DEVSTATE : 0) |
                             (s->colo ? VMIG_HELLO_F_COLO : 0) |
                             (s->resume ? VMIG_HELLO_F_RESUME : 0),
                         &e)))
        goto fail;
    uint8_t *payload;
    uint32_t plen;
    /* A listener that never accepts us (busy with another migration, a
     * stuck process) still completes the TCP handshake from its backlog:
     * READY bounds the wait. */
    if ((rc = vmig_ctl_read_session(s, VMIG_CTL_READY, &payload, &plen,
                                    (int)s->p.connect_timeout_ms, &e)))
        goto fail;
    rc = vmig_wire_ready_decode(payload, plen, &s->dest_codecs, &e);
    free(payload);
    if (rc || (rc = choose_codecs(s, &e)))
        goto fail;

    for (uint32_t i = 0; i < s->nch; i++) {
        vmig_conn *dc;
        if ((s->resume && (rc = win_alloc(s, &s->ch[i], &e))) ||
            (rc = connect_channel(s, uri, VMIG_CH_DATA, 0, i, &dc, &e)))
            goto fail;
        pthread_mutex_lock(&s->lock);
        s->ch[i].conn = dc;
        pthread_mutex_unlock(&s->lock);
    }
    /* A primary's heartbeats start with checkpoint 0, so that a secondary
     * can tell a silent primary from a long initial migration. */
    if (s->colo && (rc = vmig_colo_hb_start(s, &e)))
        goto fail;
    if (vmig_session_aborted(s)) {
        rc = VMIG_ECANCELED;
        goto fail;
    }
    /* auto starts with the channels (its first epoch reads their TCP state). */
    vmig_auto_init(&s->autoc, s->auto_mask, VMIG_AUTO_EPOCH_NS, vmig_now_ns());
    vmig_auto_set_limits(&s->autoc, auto_tcp_limits, s);
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
    uint32_t pass = 0;
    if (!rc)
        rc = run_passes(s, &L, scratch, &seq, &pass, &e);
    if (!rc && s->colo)
        rc = colo_run(s, &L, scratch, seq, pass, &e); /* returns when the protection ends */
    if (rc && e.code)
        vmig_session_fail(s, &e); /* wakes the channel threads */
    for (uint32_t i = 0; i < s->nch; i++)
        if (s->ch[i].thread_started) {
            pthread_join(s->ch[i].thread, NULL);
            s->ch[i].thread_started = false; /* the failure path joins the rest */
        }
    if (vmig_session_aborted(s)) {
        rc = s->err.code ? s->err.code : VMIG_ECANCELED;
        goto fail;
    }
    vmig_dev_drop_jobs(s);
    __atomic_store_n(&s->state, VMIG_STATE_VERIFYING, __ATOMIC_RELEASE);
    if (s->ndevs && s->dev_path == VMIG_DEVSTATE_CONTROL &&
        (rc = vmig_dev_save(s, true, 0, NULL, &e)))
        goto fail;
    if (s->ops.save_state && (rc = send_devstate(s, &e)))
        goto fail;
    if ((rc = send_end_and_wait(s, &e)))
        goto fail;
    __atomic_store_n(&s->st_downtime_ns, vmig_now_ns() - L.t_stop, __ATOMIC_RELAXED);
    dirty_end(s, &L);
    /* The stopped source is left unthrottled too, in case its VMM runs it
     * again (throttle-max keeps what the migration needed). */
    unthrottle(s, &L);
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
    vmig_dev_drop_jobs(s);
    /* The VM goes on where it was: unthrottled, running, its memory as it
     * was (vmig only read it). */
    dirty_end(s, &L);
    unthrottle(s, &L);
    if (L.stopped && s->ops.resume)
        s->ops.resume(s->ops_opaque);
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

/*
 * Destination side. The caller thread accepts the control channel, checks
 * HELLO against the registered blocks, answers READY, accepts the data
 * channels (starting each one's thread at once), then waits for END and
 * gives the verdict. Channel threads read every packet straight into the
 * blocks: header and offsets first (validated), then the payload with one
 * readv whose iovecs point at the destination pages.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "../ram/digest.h"
#include "session.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* ------------------------------------------------------------------ */
/* channel thread                                                      */

static inline bool bit_test_set(uint64_t *map, uint64_t i)
{
    uint64_t m = 1ull << (i & 63);
    return __atomic_fetch_or(&map[i >> 6], m, __ATOMIC_RELAXED) & m;
}

/*
 * Barrier at SYNC: no channel goes on to a later pass until every channel
 * has finished this one. Returns false on abort.
 */
static bool barrier_wait(vmig_session *s, uint32_t pass)
{
    pthread_mutex_lock(&s->lock);
    uint64_t gen = s->barrier_gen;
    if (++s->barrier_count == s->nch) {
        s->barrier_count = 0;
        s->barrier_gen++;
        s->barrier_pass = pass;
        pthread_cond_broadcast(&s->barrier_cv);
    } else {
        while (s->barrier_gen == gen && !vmig_session_aborted(s))
            pthread_cond_wait(&s->barrier_cv, &s->lock);
    }
    bool ok = !vmig_session_aborted(s);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static inline bool bit_test(const uint64_t *map, uint64_t i)
{
    return __atomic_load_n(&map[i >> 6], __ATOMIC_RELAXED) & (1ull << (i & 63));
}

/*
 * prefault=ahead: populate the packet's normal pages that are not resident
 * before reading into them, one MADV_POPULATE_WRITE per run of contiguous
 * absent pages instead of a fault per page. The payload waits in the
 * socket meanwhile. Failure is harmless (the read faults the pages in), so
 * it is not checked.
 */
static void populate_ahead(vmig_block *b, const uint64_t *offs, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        uint64_t first = offs[i] >> b->page_shift;
        if (bit_test(b->resident, first)) {
            i++;
            continue;
        }
        uint32_t j = i + 1;
        while (j < n && offs[j] == offs[j - 1] + b->page_size &&
               !bit_test(b->resident, offs[j] >> b->page_shift))
            j++;
        madvise(b->host + offs[i], (size_t)(j - i) << b->page_shift, MADV_POPULATE_WRITE);
        for (uint32_t k = i; k < j; k++)
            bit_test_set(b->resident, offs[k] >> b->page_shift);
        i = j;
    }
}

/*
 * A compressed payload: read it whole into the channel's buffer (its length
 * was bounded by the header check), then decode it straight into the
 * destination pages. The decoder fills every page exactly or fails.
 */
static int recv_compressed(vmig_channel *c, const vmig_pkt_hdr *h, vmig_block *b, uint8_t *base,
                           uint32_t codec, vmig_error *err)
{
    vmig_session *s = c->s;
    const vmig_codec_ops *ops = vmig_codec_get(codec);
    if (ops->missing)
        return vmig_error_set(err, VMIG_EPROTO,
                              "packet %llu: codec %s, which this destination cannot decode (%s) "
                              "and did not announce in READY",
                              (unsigned long long)h->seq, ops->name, ops->missing);
    void *ctx;
    int rc = vmig_channel_codec_ctx(c, codec, true, &ctx, err);
    if (!rc)
        rc = vmig_channel_cbuf(c, h->payload_len, err);
    if (!rc)
        rc = vmig_conn_read_all(c->conn, c->cbuf, h->payload_len, "compressed page data", err);
    if (rc)
        return rc;
    const uint64_t *offs = c->offsets;
    for (uint32_t i = 0; i < h->normal; i++)
        c->pages[i] = base + offs[i];
    if (b->resident && base == b->host)
        populate_ahead(b, offs, h->normal);
    uint64_t t0 = vmig_now_ns();
    vmig_error e = {0};
    rc = ops->decode(ctx, c->cbuf, h->payload_len, c->pages, h->normal, b->page_size, &e);
    if (rc)
        return vmig_error_set(err, rc, "packet %llu (block '%s', %u pages): %s",
                              (unsigned long long)h->seq, b->name, h->normal, e.msg);
    vmig_codec_stat(s, codec, h->normal, (uint64_t)h->normal * b->page_size, h->payload_len,
                    vmig_now_ns() - t0);
    return 0;
}

static int recv_ram(vmig_channel *c, const vmig_pkt_hdr *h, uint32_t *hint, vmig_error *err)
{
    vmig_session *s = c->s;
    if (h->pass != c->synced_pass + 1)
        return vmig_error_set(err, VMIG_EPROTO,
                              "packet %llu: pass %u, expected %u (a page of a finished pass)",
                              (unsigned long long)h->seq, h->pass, c->synced_pass + 1);
    vmig_block *b = vmig_block_find(s, h->block, hint);
    if (!b)
        return vmig_error_set(err, VMIG_EPROTO, "packet %llu: unknown block '%s'",
                              (unsigned long long)h->seq, h->block);
    if (h->page_size != b->page_size)
        return vmig_error_set(err, VMIG_EPROTO, "packet %llu: page size %u, but block '%s' has %u",
                              (unsigned long long)h->seq, h->page_size, b->name, b->page_size);
    uint32_t n = h->normal + h->zero;
    uint8_t *raw = c->hdr + VMIG_PKT_HDR_LEN;
    int rc = vmig_conn_read_all(c->conn, raw, (size_t)n * 8, "packet offsets", err);
    if (rc)
        return rc;
    rc = vmig_wire_pkt_decode_offsets(h, c->hdr, raw, b->length, c->offsets, err);
    if (rc)
        return rc;
    const uint64_t *offs = c->offsets;
    /* Continuous checkpoints: after checkpoint 0, pages go to the cache. */
    bool cached = false;
    uint8_t *base = s->colo ? vmig_colo_base(s, b, h->pass, &cached) : b->host;
    uint32_t codec = vmig_pkt_codec(h);
    if (codec != VMIG_CODEC_NONE) {
        if ((rc = recv_compressed(c, h, b, base, codec, err)))
            return rc;
        goto landed;
    }

    struct iovec *iov = c->iov;
    int niov = 0;
    for (uint32_t i = 0; i < h->normal; i++) {
        uint8_t *p = base + offs[i];
        if (niov > 0 && (uint8_t *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == p) {
            iov[niov - 1].iov_len += b->page_size;
        } else {
            iov[niov].iov_base = p;
            iov[niov].iov_len = b->page_size;
            niov++;
        }
    }
    if (niov) {
        if (b->resident && !cached)
            populate_ahead(b, offs, h->normal);
        rc = vmig_conn_read_full(c->conn, iov, niov, "page data", err);
        if (rc)
            return rc;
    }
    vmig_codec_stat(s, VMIG_CODEC_NONE, h->normal, h->payload_len, h->payload_len, 0);
landed:
    for (uint32_t i = 0; i < h->normal; i++) {
        uint64_t idx = offs[i] >> b->page_shift;
        bit_test_set(b->received, idx);
        if (cached)
            bit_test_set(b->ckpt_dirty, idx);
        if (b->page_hash)
            __atomic_store_n(&b->page_hash[idx], vmig_page_hash(base + offs[i], b->page_size),
                             __ATOMIC_RELAXED);
    }
    bool zeroed = (b->flags & VMIG_RAM_ZEROED) && !cached;
    for (uint32_t i = h->normal; i < n; i++) {
        uint64_t idx = offs[i] >> b->page_shift;
        uint8_t *p = base + offs[i];
        bool seen = bit_test_set(b->received, idx);
        /* A zero page of a checkpoint is flushed like any other (a page
         * left out of the cache's bitmap would keep its old content). */
        if (cached)
            bit_test_set(b->ckpt_dirty, idx);
        /* Fresh zeroed memory: a page never written is left alone (no fault,
         * no RSS). Otherwise clear the page only if it is not zero already. */
        if (zeroed ? seen : !s->zero->fn(p, b->page_size))
            memset(p, 0, b->page_size);
        if (b->page_hash)
            __atomic_store_n(&b->page_hash[idx], b->zero_hash, __ATOMIC_RELAXED);
    }
    uint64_t bytes = VMIG_PKT_HDR_LEN + (uint64_t)n * 8 + h->payload_len;
    vmig_stat_add(&c->st_bytes, bytes);
    vmig_stat_add(&c->st_packets, 1);
    vmig_stat_add(&s->st_wire_bytes, bytes);
    vmig_stat_add(&s->st_packets, 1);
    vmig_stat_add(&s->st_normal, h->normal);
    vmig_stat_add(&s->st_zero, h->zero);
    vmig_stat_add(&s->st_ram_bytes, (uint64_t)n * b->page_size);
    return 0;
}

static int recv_packet(vmig_channel *c, uint32_t *hint, vmig_error *err)
{
    vmig_session *s = c->s;
    vmig_pkt_hdr h;
    int rc = vmig_conn_read_all(c->conn, c->hdr, VMIG_PKT_HDR_LEN, "a packet header", err);
    if (!rc)
        rc = vmig_fault_packet(c, c->hdr, VMIG_PKT_HDR_LEN, err);
    if (rc)
        return rc;
    rc = vmig_wire_pkt_decode_hdr(c->hdr, &h, s->p.packet_pages, err);
    if (rc)
        return rc;
    if (h.seq <= c->last_seq)
        return vmig_error_set(err, VMIG_EPROTO,
                              "packet sequence %llu after %llu: sequence numbers must increase",
                              (unsigned long long)h.seq, (unsigned long long)c->last_seq);
    c->last_seq = h.seq;
    switch (h.type) {
    case VMIG_PKT_RAM:
        return recv_ram(c, &h, hint, err);
    case VMIG_PKT_SYNC:
        if (h.pass != c->synced_pass + 1)
            return vmig_error_set(err, VMIG_EPROTO, "SYNC of pass %u, expected pass %u", h.pass,
                                  c->synced_pass + 1);
        rc = vmig_wire_pkt_decode_offsets(&h, c->hdr, NULL, 0, c->offsets, err);
        if (rc)
            return rc;
        vmig_stat_add(&c->st_bytes, VMIG_PKT_HDR_LEN);
        vmig_stat_add(&s->st_wire_bytes, VMIG_PKT_HDR_LEN);
        if (!barrier_wait(s, h.pass))
            return VMIG_ECANCELED;
        c->synced_pass = h.pass;
        if (c->id == 0)
            __atomic_store_n(&s->st_pass, h.pass, __ATOMIC_RELAXED);
        return 0;
    case VMIG_PKT_DEV:
        return vmig_dev_recv_packet(c, &h, err);
    default: /* VMIG_PKT_FIN, the only type left after decode_hdr */
        if (c->synced_pass == 0 || h.pass != c->synced_pass)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "FIN of pass %u, but the last SYNC was of "
                                  "pass %u",
                                  h.pass, c->synced_pass);
        rc = vmig_wire_pkt_decode_offsets(&h, c->hdr, NULL, 0, c->offsets, err);
        if (rc)
            return rc;
        vmig_stat_add(&c->st_bytes, VMIG_PKT_HDR_LEN);
        vmig_stat_add(&s->st_wire_bytes, VMIG_PKT_HDR_LEN);
        c->fin = true;
        return 0;
    }
}

/* ------------------------------------------------------------------ */
/* resume=on                                                           */

static int write_ack(vmig_channel *c, vmig_error *err)
{
    uint8_t b[VMIG_CHACK_LEN];
    vmig_wire_chack_encode(c->landed, b);
    c->since_ack = 0;
    return vmig_conn_write_all(c->conn, b, sizeof(b), "an acknowledgement", err);
}

/* A packet landed whole: acknowledge every VMIG_CHACK_EVERY packets and
 * each marker (the source waits for FIN's). */
static int landed(vmig_channel *c, bool marker, vmig_error *err)
{
    c->landed = c->last_seq;
    if (marker || ++c->since_ack >= VMIG_CHACK_EVERY)
        return write_ack(c, err);
    return 0;
}

/*
 * The connection broke (err says how): wait for the source to connect
 * again (the accept thread hands the connection over), tell it the last
 * packet that landed whole, and go on reading. The source tries for
 * connect-timeout after it notices, which may take it connect-timeout
 * (a write that makes no progress) plus keepalive's 5 s.
 */
static int resume_wait(vmig_channel *c, vmig_error *err)
{
    vmig_session *s = c->s;
    char cause[sizeof(err->msg)];
    snprintf(cause, sizeof(cause), "%s", err->msg);
    uint64_t wait_ms = 2ull * s->p.connect_timeout_ms + 5000;
    for (;;) {
        uint64_t deadline = vmig_now_ns() + wait_ms * 1000000ull;
        pthread_mutex_lock(&s->lock);
        while (!c->pending && !vmig_session_aborted(s) && vmig_now_ns() < deadline)
            vmig_cond_wait_ms(&s->resume_cv, &s->lock, 100);
        vmig_conn *nc = vmig_session_aborted(s) ? NULL : c->pending, *old = NULL;
        if (nc) {
            c->pending = NULL;
            old = c->conn;
            c->conn = nc;
        }
        pthread_mutex_unlock(&s->lock);
        if (vmig_session_aborted(s))
            return VMIG_ECANCELED;
        *err = (vmig_error){0};
        if (!nc)
            return vmig_error_set(err, VMIG_ECONN,
                                  "connection lost (%s); the source did not resume it within "
                                  "%llu ms",
                                  cause, (unsigned long long)wait_ms);
        vmig_conn_close(old);
        vmig_channel_codec_reset(c);
        c->last_seq = c->landed; /* what follows starts after it */
        int rc = write_ack(c, err);
        if (!rc) {
            vmig_stat_add(&s->st_reconnects, 1);
            return 0;
        }
        if (!vmig_resume_retryable(rc))
            return rc;
        snprintf(cause, sizeof(cause), "%s", err->msg);
    }
}

static void *dst_channel_main(void *arg)
{
    vmig_channel *c = arg;
    vmig_session *s = c->s;
    uint64_t cpu0 = vmig_thread_cpu_ns();
    uint32_t hint = 0;
    while (!c->fin && !vmig_session_aborted(s)) {
        uint64_t t0 = vmig_now_ns();
        vmig_error e = {0};
        uint32_t synced = c->synced_pass;
        int rc = recv_packet(c, &hint, &e);
        if (!rc && s->resume)
            rc = landed(c, c->fin || c->synced_pass != synced, &e);
        if (rc && s->resume && vmig_resume_retryable(rc) && !vmig_session_aborted(s))
            rc = resume_wait(c, &e);
        vmig_stat_add(&c->st_busy_ns, vmig_now_ns() - t0);
        __atomic_store_n(&c->st_cpu_ns, vmig_thread_cpu_ns() - cpu0, __ATOMIC_RELAXED);
        if (rc) {
            if (!vmig_session_aborted(s))
                vmig_session_failf(s, rc, "channel %u: %s", c->id,
                                   e.code ? e.msg : vmig_strerror(rc));
            vmig_session_shutdown_conns(s, false);
            break;
        }
    }
    pthread_mutex_lock(&s->lock);
    c->exited = true;
    pthread_mutex_unlock(&s->lock);
    __atomic_store_n(&c->st_cpu_ns, vmig_thread_cpu_ns() - cpu0, __ATOMIC_RELAXED);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

static int read_handshake(vmig_session *s, vmig_conn *c, vmig_wire_hs *hs, vmig_error *err)
{
    /* A source whose host died or whose link stays down is given up
     * connect-timeout + 5 s after its last packet, as it gives us up. */
    vmig_conn_keepalive(c, s->p.connect_timeout_ms);
    /* A peer that connects and stays silent must not hold us forever. */
    struct timeval tv = {(time_t)(s->p.connect_timeout_ms / 1000),
                         (suseconds_t)(s->p.connect_timeout_ms % 1000) * 1000};
    if (c->fd >= 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    uint8_t raw[VMIG_HS_LEN];
    int rc = vmig_conn_read_all(c, raw, sizeof(raw), "the handshake", err);
    if (!rc && !s->tls && raw[0] == 0x16 && raw[1] == 0x03) /* a TLS handshake record */
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "%s: the source speaks TLS and this side does not: set tls here too",
                            c->peer);
    else if (!rc)
        rc = vmig_wire_hs_decode(raw, hs, err);
    struct timeval zero = {0, 0};
    if (c->fd >= 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof(zero));
    return rc;
}

/* Match HELLO's blocks against the registered ones (asking the callback for
 * unknown names), both ways. */
static int check_blocks(vmig_session *s, const vmig_wire_hello *h, vmig_error *err)
{
    for (uint32_t i = 0; i < h->nblocks; i++) {
        const vmig_wire_block *wb = &h->blocks[i];
        vmig_block *b = vmig_block_find(s, wb->name, NULL);
        if (!b && s->block_cb) {
            int rc = s->block_cb(s->block_cb_opaque, s, wb->name, wb->length, wb->page_size);
            if (rc)
                return vmig_error_set(err, rc < 0 ? rc : VMIG_EINVAL,
                                      "block '%s' (%llu bytes): refused by the application (%s)",
                                      wb->name, (unsigned long long)wb->length, vmig_strerror(rc));
            b = vmig_block_find(s, wb->name, NULL);
        }
        if (!b)
            return vmig_error_set(err, VMIG_ENOENT,
                                  "source block '%s' (%llu bytes) is not registered here", wb->name,
                                  (unsigned long long)wb->length);
        if (b->length != wb->length || b->page_size != wb->page_size)
            return vmig_error_set(err, VMIG_EINVAL,
                                  "block '%s': source has %llu bytes in %u-byte pages, "
                                  "destination %llu bytes in %u-byte pages",
                                  wb->name, (unsigned long long)wb->length, wb->page_size,
                                  (unsigned long long)b->length, b->page_size);
    }
    if (s->nblocks != h->nblocks) {
        for (uint32_t i = 0; i < s->nblocks; i++) {
            bool found = false;
            for (uint32_t k = 0; k < h->nblocks && !found; k++)
                found = !strcmp(h->blocks[k].name, s->blocks[i].name);
            if (!found)
                return vmig_error_set(err, VMIG_ENOENT,
                                      "destination block '%s' is not sent by the source",
                                      s->blocks[i].name);
        }
    }
    return 0;
}

static int alloc_channels(vmig_session *s, vmig_error *err)
{
    uint32_t pp = s->p.packet_pages;
    for (uint32_t i = 0; i < s->nch; i++) {
        vmig_channel *c = &s->ch[i];
        c->hdr = vmig_fault_alloc(s) ? NULL : malloc(VMIG_PKT_HDR_LEN + 8 * (size_t)pp);
        c->iov = malloc(sizeof(struct iovec) * pp);
        c->offsets = malloc(sizeof(uint64_t) * pp);
        c->pages = malloc(sizeof(uint8_t *) * pp);
        if (!c->hdr || !c->iov || !c->offsets || !c->pages)
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for channel %u buffers", i);
    }
    return 0;
}

/*
 * Accept connections until the control channel arrives; returns its
 * handshake. A well-formed data-channel handshake before any control
 * channel is a leftover of an earlier attempt (a source that failed before
 * this listener accepted all its channels leaves them in the backlog): it
 * is closed and the wait goes on. Anything malformed refuses the run.
 */
static int accept_control(vmig_session *s, vmig_wire_hs *hs, vmig_error *err)
{
    for (;;) {
        vmig_conn *c;
        int rc = s->listener->ops->accept(s->listener, -1, &s->abort, &c, err);
        if (rc)
            return rc;
        if ((rc = vmig_session_tls_wrap(s, &c, NULL, err))) {
            vmig_conn_close(c);
            /* a leftover of an earlier attempt (see above) whose source
             * has gone cannot finish a TLS handshake: wait on */
            if (rc == VMIG_ECONN && !vmig_session_aborted(s) && err) {
                err->code = 0;
                err->msg[0] = 0;
                continue;
            }
            return rc;
        }
        rc = read_handshake(s, c, hs, err);
        if (rc == 0 && hs->kind == VMIG_CH_CONTROL) {
            pthread_mutex_lock(&s->lock);
            s->control = c;
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
        vmig_conn_close(c);
        if (rc)
            return rc;
    }
}

/* A reconnected channel for ch (resume=on): it becomes the channel's
 * pending connection, and the one the thread may still be reading is shut
 * down (the source has given it up). A channel whose thread is done (its
 * FIN landed, the acknowledgement was lost) is answered here. */
static void hand_over(vmig_session *s, vmig_channel *ch, vmig_conn *c)
{
    pthread_mutex_lock(&s->lock);
    vmig_conn *older = ch->pending;
    bool done = ch->exited;
    /* A thread that is done answers no more: the accept thread answers
     * for it when it ended with its channel's FIN (the source missed the
     * last acknowledgement), and not when it failed or the migration did
     * (the source learns why on the control channel). */
    bool answer = done && ch->fin && !vmig_session_aborted(s);
    ch->pending = done ? NULL : c;
    if (!done)
        vmig_conn_shutdown(ch->conn);
    pthread_cond_broadcast(&s->resume_cv);
    uint64_t landed_seq = done ? ch->landed : 0; /* the thread's last write came before exited */
    pthread_mutex_unlock(&s->lock);
    vmig_conn_close(older);
    if (answer) {
        uint8_t b[VMIG_CHACK_LEN];
        vmig_wire_chack_encode(landed_seq, b);
        vmig_error e = {0};
        vmig_conn_write_all(c, b, sizeof(b), "an acknowledgement", &e);
    }
    if (done) /* nobody takes it */
        vmig_conn_close(c);
}

/* The handshake of a reconnecting channel: this session's, resume set. */
static int check_resume_hs(vmig_session *s, const vmig_wire_hs *hs, const vmig_conn *c,
                           vmig_error *err)
{
    if (hs->kind != VMIG_CH_DATA || !(hs->flags & VMIG_HS_F_RESUME))
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s: a %s handshake during the migration (only a data channel "
                              "resuming may connect now)",
                              c->peer, hs->kind == VMIG_CH_DATA ? "data channel" : "control");
    if (memcmp(hs->uuid, s->uuid, 16))
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s: channel %u resumes another migration (session id differs)",
                              c->peer, hs->channel_id);
    if (hs->channel_count != s->nch || hs->channel_id >= s->nch)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s: resuming channel %u of %u, but this migration has %u channels",
                              c->peer, hs->channel_id, hs->channel_count, s->nch);
    return 0;
}

/* The accept thread of resume=on: reconnected channels, until stopped. A
 * connection that is not one is refused (closed) and counted; the
 * migration goes on. */
static void *acc_main(void *arg)
{
    vmig_session *s = arg;
    while (!__atomic_load_n(&s->acc_stop, __ATOMIC_ACQUIRE) && !vmig_session_aborted(s)) {
        vmig_conn *c;
        vmig_error e = {0};
        int rc = s->listener->ops->accept(s->listener, -1, &s->acc_stop, &c, &e);
        if (rc == VMIG_ECANCELED)
            break;
        if (rc) {
            struct timespec ts = {0, 50000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        vmig_wire_hs hs;
        if ((rc = vmig_session_tls_wrap(s, &c, NULL, &e))) {
            vmig_conn_close(c);
            continue;
        }
        rc = read_handshake(s, c, &hs, &e);
        if (!rc)
            rc = check_resume_hs(s, &hs, c, &e);
        if (rc) {
            vmig_conn_close(c);
            continue;
        }
        hand_over(s, &s->ch[hs.channel_id], c);
    }
    return NULL;
}

int vmig_resume_accept_start(vmig_session *s, vmig_error *err)
{
    __atomic_store_n(&s->acc_stop, 0, __ATOMIC_RELEASE);
    if (vmig_thread_start(&s->acc_thread, "vmig-resume", acc_main, s))
        return vmig_error_set(err, VMIG_ENOMEM, "cannot start the thread that accepts resumes");
    s->acc_started = true;
    return 0;
}

void vmig_resume_accept_stop(vmig_session *s)
{
    if (!s->acc_started)
        return;
    __atomic_store_n(&s->acc_stop, 1, __ATOMIC_RELEASE);
    pthread_join(s->acc_thread, NULL);
    s->acc_started = false;
}

static int accept_data_channels(vmig_session *s, const vmig_wire_hs *ctl, vmig_error *err)
{
    uint32_t connected = 0;
    while (connected < s->nch) {
        vmig_conn *c;
        int rc =
            s->listener->ops->accept(s->listener, (int)s->p.connect_timeout_ms, &s->abort, &c, err);
        if (rc)
            return rc;
        vmig_wire_hs hs;
        if ((rc = vmig_session_tls_wrap(s, &c, NULL, err))) {
            vmig_conn_close(c);
            return rc;
        }
        rc = read_handshake(s, c, &hs, err);
        if (!rc && hs.kind != VMIG_CH_DATA)
            rc = vmig_error_set(err, VMIG_EPROTO, "%s: a second control channel", c->peer);
        if (!rc && memcmp(hs.uuid, ctl->uuid, 16))
            rc = vmig_error_set(err, VMIG_EPROTO,
                                "%s: channel %u belongs to another migration (session id differs)",
                                c->peer, hs.channel_id);
        if (!rc && hs.channel_count != ctl->channel_count)
            rc = vmig_error_set(err, VMIG_EPROTO,
                                "%s: channel %u says %u channels, the control channel said %u",
                                c->peer, hs.channel_id, hs.channel_count, ctl->channel_count);
        if (!rc && hs.channel_id >= s->nch)
            rc = vmig_error_set(err, VMIG_EPROTO, "%s: channel id %u is not below the count %u",
                                c->peer, hs.channel_id, s->nch);
        if (!rc && s->resume && (hs.flags & VMIG_HS_F_RESUME) && s->ch[hs.channel_id].conn) {
            /* broken before the others were accepted: resumed at once */
            hand_over(s, &s->ch[hs.channel_id], c);
            continue;
        }
        if (!rc && (hs.flags & VMIG_HS_F_RESUME))
            rc = vmig_error_set(err, VMIG_EPROTO, "%s: channel %u resumes, but %s", c->peer,
                                hs.channel_id,
                                s->resume ? "it was never connected"
                                          : "the source did not announce resume in HELLO");
        if (!rc && s->ch[hs.channel_id].conn)
            rc = vmig_error_set(err, VMIG_EPROTO, "%s: channel id %u is already connected", c->peer,
                                hs.channel_id);
        if (rc) {
            vmig_conn_close(c);
            return rc;
        }
        vmig_channel *ch = &s->ch[hs.channel_id];
        pthread_mutex_lock(&s->lock);
        ch->conn = c;
        pthread_mutex_unlock(&s->lock);
        char name[32];
        snprintf(name, sizeof(name), "vmig-recv%u", hs.channel_id);
        if (vmig_thread_start(&ch->thread, name, dst_channel_main, ch))
            return vmig_error_set(err, VMIG_ENOMEM, "cannot start channel thread %u",
                                  hs.channel_id);
        ch->thread_started = true;
        connected++;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* verdict                                                             */

static int check_end(vmig_session *s, const uint8_t *payload, uint32_t plen, vmig_error *err)
{
    uint8_t(*dg)[16] = calloc(s->nblocks, 16);
    if (!dg)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for END");
    vmig_wire_end e = {.digests = dg};
    int rc = vmig_wire_end_decode(payload, plen, &e, s->nblocks, err);
    if (rc)
        goto out;
    for (uint32_t i = 0; i < s->nch; i++)
        if (!s->ch[i].fin) {
            rc = vmig_error_set(err, VMIG_EPROTO, "END before FIN on channel %u", i);
            goto out;
        }
    uint64_t packets = __atomic_load_n(&s->st_packets, __ATOMIC_RELAXED);
    uint64_t normal = __atomic_load_n(&s->st_normal, __ATOMIC_RELAXED);
    uint64_t zero = __atomic_load_n(&s->st_zero, __ATOMIC_RELAXED);
    if (e.packets != packets || e.normal_pages != normal || e.zero_pages != zero) {
        rc = vmig_error_set(err, VMIG_EVERIFY,
                            "source sent %llu packets (%llu normal, %llu zero pages), "
                            "%llu packets (%llu normal, %llu zero pages) arrived",
                            (unsigned long long)e.packets, (unsigned long long)e.normal_pages,
                            (unsigned long long)e.zero_pages, (unsigned long long)packets,
                            (unsigned long long)normal, (unsigned long long)zero);
        goto out;
    }
    if (s->p.verify == VMIG_VERIFY_OFF)
        goto out;
    __atomic_store_n(&s->state, VMIG_STATE_VERIFYING, __ATOMIC_RELEASE);
    uint64_t t0 = vmig_now_ns();
    for (uint32_t i = 0; i < s->nblocks && !rc; i++) {
        vmig_block *b = &s->blocks[i];
        vmig_digest d = s->p.verify == VMIG_VERIFY_FULL ? vmig_block_digest_memory(b, s->nch)
                                                        : vmig_block_digest_hashes(b, true);
        uint8_t mine[16];
        vmig_digest_to_bytes(&d, mine);
        if (memcmp(mine, dg[s->blocks[i].hello_index], 16))
            rc = vmig_error_set(err, VMIG_EVERIFY,
                                "block '%s': digest of the received memory does not match the "
                                "source's",
                                b->name);
    }
    vmig_stat_add(&s->st_verify_ns, vmig_now_ns() - t0);
out:
    free(dg);
    return rc;
}

int vmig_dest_run(vmig_session *s)
{
    vmig_error e = {0};
    vmig_wire_hello hello = {0};
    uint8_t *payload = NULL, *state = NULL;
    uint32_t plen, state_len = 0;
    bool devstate = false;
    vmig_wire_hs hs;
    pthread_getcpuclockid(pthread_self(), &s->caller_clock);

    int rc = vmig_session_tls_begin(s, &e);
    if (!rc)
        rc = accept_control(s, &hs, &e);
    if (rc)
        goto fail;
    if ((rc = vmig_ctl_read(s->control, VMIG_CTL_HELLO, &payload, &plen, &e)))
        goto fail;
    hello.blocks = calloc(VMIG_WIRE_MAX_BLOCKS, sizeof(*hello.blocks));
    hello.devices = calloc(VMIG_WIRE_MAX_DEVICES, sizeof(*hello.devices));
    if (!hello.blocks || !hello.devices) {
        rc = vmig_error_set(&e, VMIG_ENOMEM, "out of memory for HELLO");
        goto fail;
    }
    if ((rc = vmig_wire_hello_decode(payload, plen, &hello, VMIG_WIRE_MAX_BLOCKS, &e)))
        goto fail;
    if (hello.channels != hs.channel_count) {
        rc = vmig_error_set(&e, VMIG_EPROTO, "HELLO says %u channels, the handshake %u",
                            hello.channels, hs.channel_count);
        goto fail;
    }
    if ((rc = check_blocks(s, &hello, &e)) || (rc = vmig_dev_dest_start(s, &hello, &e)))
        goto fail;
    devstate = hello.features & VMIG_HELLO_F_DEVSTATE;
    s->resume = (hello.features & VMIG_HELLO_F_RESUME) != 0;
    memcpy(s->uuid, hs.uuid, 16); /* resumed channels must carry it */
    if (s->resume && s->colo) {
        rc = vmig_error_set(&e, VMIG_EPROTO,
                            "the primary announces resume, which continuous checkpoints do not "
                            "use");
        goto fail;
    }
    if (((hello.features & VMIG_HELLO_F_COLO) != 0) != s->colo) {
        rc = vmig_error_set(&e, VMIG_EPROTO,
                            s->colo ? "this secondary waits for continuous checkpoints "
                                      "(vmig_colo_secondary), but the source sends a plain "
                                      "migration"
                                    : "the source is a primary of continuous checkpoints; this "
                                      "destination takes a plain migration (vmig_incoming_run)");
        goto fail;
    }
    if (s->colo && (devstate || (s->dev_hello && s->dev_path != VMIG_WIRE_DEV_CHANNELS))) {
        rc = vmig_error_set(&e, VMIG_EPROTO,
                            "continuous checkpoints carry device state over the data channels "
                            "only, but HELLO announces %s",
                            devstate ? "a DEVSTATE frame" : "devstate-path=control");
        goto fail;
    }
    if (devstate && !s->ops.load_state) {
        rc = vmig_error_set(&e, VMIG_ENOTSUP,
                            "the source sends device state, but this destination has no "
                            "load_state hook to take it");
        goto fail;
    }
    for (uint32_t i = 0; i < hello.nblocks; i++)
        vmig_block_find(s, hello.blocks[i].name, NULL)->hello_index = i;
    s->nch = hello.channels;
    __atomic_store_n(&s->p.channels, hello.channels, __ATOMIC_RELAXED); /* stats read it */
    s->p.packet_pages = hello.packet_pages;
    s->p.verify = hello.verify;
    uint64_t total = 0;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        vmig_block *b = &s->blocks[i];
        total += b->length;
        b->zero_hash = vmig_zero_page_hash(b->page_size);
        if ((uint64_t)b->page_size * hello.packet_pages > VMIG_WIRE_MAX_PAYLOAD) {
            rc = vmig_error_set(&e, VMIG_EPROTO, "block '%s': packets would exceed %u bytes",
                                b->name, VMIG_WIRE_MAX_PAYLOAD);
            goto fail;
        }
    }
    __atomic_store_n(&s->total_bytes, total, __ATOMIC_RELAXED);
    if ((rc = alloc_channels(s, &e)) || (rc = vmig_session_alloc_block_state(s, true, &e)) ||
        (s->colo && (rc = vmig_colo_dest_alloc(s, &e))))
        goto fail;
    uint8_t ready[VMIG_READY_LEN];
    vmig_wire_ready_encode(vmig_codec_built_mask(), ready);
    if ((rc = vmig_ctl_write(s->control, VMIG_CTL_READY, ready, sizeof(ready), &e)))
        goto fail;
    __atomic_store_n(&s->start_ns, vmig_now_ns(), __ATOMIC_RELAXED);
    __atomic_store_n(&s->state, VMIG_STATE_ACTIVE, __ATOMIC_RELEASE);

    if ((rc = accept_data_channels(s, &hs, &e)) ||
        (s->resume && (rc = vmig_resume_accept_start(s, &e))))
        goto fail;
    free(payload);
    payload = NULL;
    if (s->colo) {
        if ((rc = vmig_colo_dest_loop(s, &e)))
            goto fail;
        free(hello.blocks);
        free(hello.devices);
        return 0;
    }
    /* Until END: DEVCHUNK frames (devstate-path=control), then DEVSTATE,
     * once the source has sent FIN on every channel. A channel failure
     * shuts the control channel down and ends this read. */
    for (bool state_seen = false;;) {
        uint32_t mask = 1u << VMIG_CTL_END;
        if (devstate && !state_seen)
            mask |= 1u << VMIG_CTL_DEVSTATE;
        if (s->dev_hello && s->dev_path == VMIG_WIRE_DEV_CONTROL)
            mask |= 1u << VMIG_CTL_DEVCHUNK;
        unsigned type = 0;
        uint8_t *buf;
        uint32_t len;
        vmig_wire_devchunk dc;
        rc = vmig_ctl_read_any(s, mask, devstate && !state_seen ? VMIG_CTL_DEVSTATE : VMIG_CTL_END,
                               &type, &buf, &len, &dc, &e);
        if (rc)
            break;
        if (type == VMIG_CTL_DEVCHUNK) {
            if ((rc = vmig_dev_recv_frame(s, &dc, buf, &e)))
                break;
        } else if (type == VMIG_CTL_DEVSTATE) {
            state = buf;
            state_len = len;
            state_seen = true;
        } else {
            payload = buf;
            plen = len;
            if (devstate && !state_seen)
                rc = vmig_error_set(&e, VMIG_EPROTO, "END before the announced DEVSTATE frame");
            break;
        }
    }
    if (rc) {
        /* The source gave up (ERROR) or the control channel broke: the
         * channel threads may still wait for data that will never come. */
        vmig_session_fail(s, &e);
        vmig_session_shutdown_conns(s, false);
    }
    for (uint32_t i = 0; i < s->nch; i++)
        if (s->ch[i].thread_started) {
            pthread_join(s->ch[i].thread, NULL);
            s->ch[i].thread_started = false;
        }
    /* Every FIN landed and was acknowledged: nothing resumes any more. */
    vmig_resume_accept_stop(s);
    if (vmig_session_aborted(s)) {
        rc = s->err.code;
        goto fail;
    }
    if (rc)
        goto fail;
    /* Every device's chunks are in: wait for their loads. */
    if ((rc = vmig_dev_dest_finish(s, &e)) || (rc = check_end(s, payload, plen, &e)))
        goto fail;
    if (devstate && (rc = s->ops.load_state(s->ops_opaque, state, state_len))) {
        rc = vmig_error_set(&e, rc < 0 ? rc : VMIG_EIO,
                            "the VM's load_state hook refused the %u bytes of device state (%s)",
                            state_len, vmig_strerror(rc));
        goto fail;
    }
    free(state);
    state = NULL;
    free(payload);
    payload = NULL;
    uint8_t buf[8];
    int n = vmig_wire_status_encode(0, "", buf, sizeof(buf));
    if ((rc = vmig_ctl_write(s->control, VMIG_CTL_RESULT, buf, (uint32_t)n, &e)))
        goto fail;
    /* The source owns the VM until it commits: without COMMIT nothing runs here. */
    rc = vmig_ctl_read_session(s, VMIG_CTL_COMMIT, &payload, &plen, (int)s->p.connect_timeout_ms,
                               &e);
    if (rc) {
        vmig_error why = e;
        e = (vmig_error){0}; /* vmig_error_set keeps a first error */
        rc = vmig_error_set(&e, rc, "the source did not commit the switchover: %s", why.msg);
        goto fail;
    }
    free(payload);
    free(hello.blocks);
    free(hello.devices);
    return 0;

fail:
    free(state);
    free(payload);
    free(hello.blocks);
    free(hello.devices);
    if (s->colo && e.code) {
        /* The checkpoint loop has classified the failure (a channel's
         * break may be the primary ending the protection): its verdict
         * is the session's. */
        pthread_mutex_lock(&s->lock);
        s->err = e;
        pthread_mutex_unlock(&s->lock);
        __atomic_store_n(&s->abort, 1, __ATOMIC_RELEASE);
    } else if (e.code) {
        vmig_session_fail(s, &e);
    } else {
        vmig_session_failf(s, rc ? rc : VMIG_EIO, "incoming migration failed");
    }
    vmig_session_shutdown_conns(s, false);
    for (uint32_t i = 0; i < s->nch; i++)
        if (s->ch[i].thread_started) {
            pthread_join(s->ch[i].thread, NULL);
            s->ch[i].thread_started = false;
        }
    vmig_resume_accept_stop(s);
    /* Closed data channels may mean the source gave up: it says why on the
     * control channel. Otherwise tell the source why we refuse. */
    if (!s->colo) /* the checkpoint loop has heard the primary out already */
        vmig_session_take_peer_error(s, 1000);
    pthread_mutex_lock(&s->lock);
    vmig_error why = s->err;
    pthread_mutex_unlock(&s->lock);
    if (why.code != VMIG_EPEER && why.code != VMIG_ECANCELED)
        vmig_control_send_error(s, why.code, why.msg);
    return why.code;
}

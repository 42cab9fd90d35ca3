/*
 * Device state: registration, the source's chunk writer and the
 * destination's load threads (vmig.h, "Devices").
 *
 * Source, devstate-path=channels:
 *
 *   save_final ─ vmig_devstate_write ─▶ chunk (devstate-chunk bytes) ─▶ DEV job
 *        on the migrating thread            ─▶ least loaded channel ─▶ DEV packet
 *
 * Chunks of every device are queued in one order (the order they were
 * written) and each channel sends its jobs in queue order, so each
 * channel's oldest unsent chunk of a device is the lowest of that device
 * it holds: the destination's bounded queues (devq.h) can always make
 * progress. devstate-path=control writes the same chunks as DEVCHUNK
 * frames on the control channel instead, once the channels are done.
 *
 * Destination: channel threads (or the control thread) put each chunk
 * into its device's queue; one load thread per device takes them in
 * order and calls load_chunk, then load_done after the last. The run
 * waits for every load before it answers the source.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "session.h"

struct vmig_devstate_out {
    vmig_session *s;
    vmig_dev *d;
    uint32_t dev_index;
    uint32_t pass;
    uint64_t *seq;
    uint32_t rr;
    bool iter;
    uint8_t *buf;       /* the chunk being filled, dev_chunk bytes */
    const uint8_t *ref; /* or: the chunk is the caller's bytes (vmig_devstate_write_ref) */
    size_t len;         /* bytes in the pending chunk */
    uint64_t bytes;
    int rc;
    vmig_error err;
};

static vmig_dev *dev_find(vmig_session *s, const char *id, uint32_t instance)
{
    for (uint32_t i = 0; i < s->ndevs; i++)
        if (s->devs[i].instance == instance && !strcmp(s->devs[i].id, id))
            return &s->devs[i];
    return NULL;
}

int vmig_device_register(vmig_session *s, const char *id, uint32_t instance,
                         const vmig_device_ops *ops, void *opaque, vmig_error *err)
{
    if (!s || !id || !ops)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_device_register: NULL argument");
    uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    if (st == VMIG_STATE_SETUP || st == VMIG_STATE_ACTIVE || st == VMIG_STATE_VERIFYING ||
        st == VMIG_STATE_CHECKPOINTING)
        return vmig_error_set(err, VMIG_ESTATE, "device '%s': cannot register while migrating", id);
    size_t nl = strnlen(id, VMIG_DEVICE_ID_MAX + 1);
    if (nl == 0 || nl > VMIG_DEVICE_ID_MAX)
        return vmig_error_set(err, VMIG_EINVAL, "device id must be 1..%d bytes",
                              VMIG_DEVICE_ID_MAX);
    if (s->role == VMIG_ROLE_SOURCE && !ops->save_final)
        return vmig_error_set(err, VMIG_EINVAL,
                              "device '%s' instance %u: a source device needs save_final", id,
                              instance);
    if (s->role == VMIG_ROLE_DEST && !ops->load_chunk)
        return vmig_error_set(err, VMIG_EINVAL,
                              "device '%s' instance %u: a destination device needs load_chunk", id,
                              instance);
    if (dev_find(s, id, instance))
        return vmig_error_set(err, VMIG_EEXIST, "device '%s' instance %u is already registered", id,
                              instance);
    if (s->ndevs >= VMIG_MAX_DEVICES)
        return vmig_error_set(err, VMIG_EINVAL, "device '%s': at most %d devices per session", id,
                              VMIG_MAX_DEVICES);
    if (s->ndevs == s->devs_cap) {
        uint32_t cap = s->devs_cap ? 2 * s->devs_cap : 4;
        vmig_dev *nd = realloc(s->devs, cap * sizeof(*nd));
        if (!nd)
            return vmig_error_set(err, VMIG_ENOMEM, "device '%s': out of memory", id);
        s->devs = nd;
        s->devs_cap = cap;
    }
    vmig_dev *d = &s->devs[s->ndevs++];
    memset(d, 0, sizeof(*d));
    memcpy(d->id, id, nl);
    d->instance = instance;
    d->ops = *ops;
    d->opaque = opaque;
    d->s = s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* chunk buffers                                                       */

/* At most this many buffers are kept (the destination's: devstate-buffer
 * over the chunk size, plus those the channels hold). */
#define POOL_MAX 1024u

void *vmig_dev_buf_get(vmig_session *s)
{
    void *b = NULL;
    pthread_mutex_lock(&s->dev_pool_lock);
    if (s->dev_pool_n)
        b = s->dev_pool[--s->dev_pool_n];
    pthread_mutex_unlock(&s->dev_pool_lock);
    return b ? b : malloc(s->dev_chunk);
}

void vmig_dev_buf_put(vmig_session *s, void *buf)
{
    if (!buf)
        return;
    pthread_mutex_lock(&s->dev_pool_lock);
    if (s->dev_pool_n < s->dev_pool_cap) {
        s->dev_pool[s->dev_pool_n++] = buf;
        buf = NULL;
    }
    pthread_mutex_unlock(&s->dev_pool_lock);
    free(buf);
}

int vmig_dev_pool_fill(vmig_session *s, uint32_t n, vmig_error *err)
{
    n = VMIG_MIN(n, POOL_MAX);
    s->dev_pool = calloc(POOL_MAX, sizeof(void *));
    if (!s->dev_pool)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for device chunk buffers");
    s->dev_pool_cap = POOL_MAX;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *b = malloc(s->dev_chunk);
        if (!b)
            return vmig_error_set(err, VMIG_ENOMEM, "out of memory for device chunk buffers");
        /* Touch it now (a write per page), not inside the downtime. */
        for (uint32_t k = 0; k < s->dev_chunk; k += 4096)
            b[k] = 0;
        s->dev_pool[s->dev_pool_n++] = b;
    }
    return 0;
}

static void pool_free(vmig_session *s)
{
    for (uint32_t i = 0; i < s->dev_pool_n; i++)
        free(s->dev_pool[i]);
    free(s->dev_pool);
    s->dev_pool = NULL;
    s->dev_pool_n = s->dev_pool_cap = 0;
}

/* ------------------------------------------------------------------ */
/* source                                                              */

uint64_t vmig_dev_pending(vmig_session *s)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        if (d->iter_known)
            sum += d->iter_remaining;
        else if (d->ops.pending)
            sum += d->ops.pending(d->opaque);
    }
    return sum;
}

/* Hand the chunk at hand over (channels: as a job; control: as a frame). */
static int emit(vmig_devstate_out *o, bool last)
{
    vmig_session *s = o->s;
    vmig_dev *d = o->d;
    if (d->next_chunk >= VMIG_WIRE_MAX_DEV_CHUNKS)
        return vmig_error_set(&o->err, VMIG_EINVAL,
                              "device '%s' instance %u: more than %u chunks of state", d->id,
                              d->instance, VMIG_WIRE_MAX_DEV_CHUNKS);
    uint32_t chunk = d->next_chunk++;
    const uint8_t *data = o->ref ? o->ref : o->buf;
    if (s->dev_path == VMIG_DEVSTATE_CONTROL) {
        vmig_wire_devchunk dc = {.device = (uint16_t)o->dev_index,
                                 .last = last,
                                 .chunk = chunk,
                                 .data = data,
                                 .len = (uint32_t)o->len};
        int rc = vmig_ctl_write_devchunk(s->control, &dc, &o->err);
        if (rc)
            return rc;
        vmig_stat_add(&s->st_wire_bytes,
                      VMIG_CTL_HDR_LEN + VMIG_DEVCHUNK_HDR_LEN + o->len + VMIG_CTL_TRAILER_LEN);
        o->len = 0; /* the buffer is reused */
        o->ref = NULL;
    } else {
        vmig_channel *c;
        vmig_job *j = vmig_source_slot_get(s, &o->rr, &c);
        if (!j)
            return vmig_error_set(&o->err, VMIG_ECANCELED, "migration aborted");
        j->type = VMIG_JOB_DEV;
        j->classified = false;
        j->pass = o->pass;
        j->npages = 0;
        j->seq = ++*o->seq;
        j->dev = o->dev_index;
        j->chunk = chunk;
        j->last = last;
        j->dbuf = (uint8_t *)data;
        j->dref = o->ref != NULL;
        j->dlen = (uint32_t)o->len;
        vmig_source_slot_push(s, c);
        if (!o->ref)
            o->buf = NULL;
        o->ref = NULL;
        o->len = 0;
    }
    vmig_stat_add(&s->st_dev_chunks, 1);
    return 0;
}

/* At each step of a write: the writer's first error, or the run's abort. */
static int out_state(vmig_devstate_out *o)
{
    if (!o->rc && vmig_session_aborted(o->s))
        o->rc = VMIG_ECANCELED;
    return o->rc;
}

int vmig_devstate_write(vmig_devstate_out *o, const void *buf, size_t len)
{
    if (!o)
        return VMIG_EINVAL;
    const uint8_t *p = buf;
    while (len) {
        if (out_state(o))
            return o->rc;
        /* A full chunk (or the caller's, by reference) waits for the next
         * write: the one before the end of save_final is the last. */
        if ((o->ref || (o->buf && o->len == o->s->dev_chunk)) && (o->rc = emit(o, false)))
            return o->rc;
        if (!o->buf && !(o->buf = vmig_dev_buf_get(o->s))) {
            o->rc = vmig_error_set(&o->err, VMIG_ENOMEM, "out of memory for a device chunk");
            return o->rc;
        }
        size_t n = VMIG_MIN(len, o->s->dev_chunk - o->len);
        memcpy(o->buf + o->len, p, n);
        o->len += n;
        o->bytes += n;
        p += n;
        len -= n;
    }
    return o->rc;
}

int vmig_devstate_write_ref(vmig_devstate_out *o, const void *buf, size_t len)
{
    if (!o)
        return VMIG_EINVAL;
    const uint8_t *p = buf;
    while (len) {
        if (out_state(o))
            return o->rc;
        if (o->len && (o->rc = emit(o, false))) /* what is pending goes first */
            return o->rc;
        size_t n = VMIG_MIN(len, o->s->dev_chunk);
        o->ref = p;
        o->len = n;
        o->bytes += n;
        p += n;
        len -= n;
    }
    return o->rc;
}

int vmig_dev_save(vmig_session *s, bool final, uint32_t pass, uint64_t *seq, vmig_error *err)
{
    uint64_t t0 = vmig_now_ns();
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        if (!final && !d->ops.save_iterate)
            continue;
        vmig_devstate_out o = {.s = s,
                               .d = d,
                               .dev_index = i,
                               .pass = pass,
                               .seq = seq,
                               .iter = !final,
                               .rr = i % (s->nch ? s->nch : 1)};
        uint64_t remaining = 0;
        int rc = final ? d->ops.save_final(d->opaque, &o)
                       : d->ops.save_iterate(d->opaque, &o, &remaining);
        if (rc && !o.rc)
            o.rc = vmig_error_set(&o.err, rc < 0 ? rc : VMIG_EIO,
                                  "device '%s' instance %u: %s failed (%s)", d->id, d->instance,
                                  final ? "save_final" : "save_iterate", vmig_strerror(rc));
        /* The last chunk of save_final carries LAST, even when empty; what
         * save_iterate left in its buffer goes as it is. */
        if (!o.rc && (final || o.len))
            o.rc = emit(&o, final);
        vmig_dev_buf_put(s, o.buf);
        if (o.rc) {
            if (o.err.code == 0)
                vmig_error_set(&o.err, o.rc, "device '%s' instance %u: %s", d->id, d->instance,
                               vmig_strerror(o.rc));
            return vmig_error_copy(err, &o.err);
        }
        vmig_stat_add(&s->st_dev_bytes, o.bytes);
        if (!final) {
            vmig_stat_add(&s->st_dev_iter_bytes, o.bytes);
            d->iter_known = true;
            d->iter_remaining = remaining;
        } else {
            d->iter_remaining = 0;
        }
    }
    if (final)
        vmig_stat_add(&s->st_dev_save_ns, vmig_now_ns() - t0);
    return 0;
}

int vmig_dev_send_job(vmig_channel *c, vmig_job *job, vmig_error *err)
{
    vmig_session *s = c->s;
    const vmig_dev *d = &s->devs[job->dev];
    vmig_pkt_hdr h = {
        .type = VMIG_PKT_DEV,
        .flags = job->last ? VMIG_PKT_F_LAST : 0,
        .seq = job->seq,
        .pass = job->pass,
        .payload_len = job->dlen,
        .instance = d->instance,
        .chunk = job->chunk,
        .payload_crc = job->dlen ? vmig_crc32c(0, job->dbuf, job->dlen) : 0,
    };
    memcpy(h.block, d->id, sizeof(d->id));
    size_t hlen = vmig_wire_pkt_encode(&h, NULL, c->hdr);
    struct iovec iov[2] = {{c->hdr, hlen}, {job->dbuf, job->dlen}};
    uint64_t bytes = hlen + job->dlen;
    vmig_rate_wait(s, bytes);
    int rc = vmig_conn_write_full(c->conn, iov, job->dlen ? 2 : 1, "a DEV packet", err);
    if (!job->dref)
        vmig_dev_buf_put(s, job->dbuf);
    job->dbuf = NULL;
    if (rc)
        return rc;
    vmig_stat_add(&c->st_bytes, bytes);
    vmig_stat_add(&s->st_wire_bytes, bytes);
    return 0;
}

void vmig_dev_drop_jobs(vmig_session *s)
{
    for (uint32_t i = 0; i < VMIG_MAX_CHANNELS; i++)
        for (int k = 0; k < VMIG_QUEUE_DEPTH; k++) {
            if (!s->ch[i].jobs[k].dref)
                free(s->ch[i].jobs[k].dbuf);
            s->ch[i].jobs[k].dbuf = NULL;
        }
}

/* ------------------------------------------------------------------ */
/* destination                                                         */

/* The load thread of one device: its chunks in order, then load_done. */
static void *loader_body(vmig_dev *d);

static void *loader_main(void *arg)
{
    vmig_dev *d = arg;
    uint64_t cpu0 = vmig_thread_cpu_ns();
    loader_body(d);
    vmig_stat_add(&d->s->st_dev_cpu_ns, vmig_thread_cpu_ns() - cpu0);
    return NULL;
}

static void *loader_body(vmig_dev *d)
{
    vmig_session *s = d->s;
    for (;;) {
        void *buf;
        size_t len;
        bool last;
        vmig_error e = {0};
        int rc = vmig_devq_get(d->q, &buf, &len, &last, &e);
        if (rc == VMIG_ENOENT)
            break;
        if (rc) { /* the queue failed: the run's error is recorded already */
            d->load_rc = rc;
            return NULL;
        }
        uint64_t t0 = vmig_now_ns();
        rc = len ? d->ops.load_chunk(d->opaque, buf, len) : 0;
        if (!rc && last && d->ops.load_done)
            rc = d->ops.load_done(d->opaque);
        vmig_stat_add(&s->st_dev_load_ns, vmig_now_ns() - t0);
        vmig_dev_buf_put(s, buf);
        if (rc) {
            d->load_rc = rc < 0 ? rc : VMIG_EIO;
            vmig_session_failf(s, d->load_rc, "device '%s' instance %u: %s refused the state (%s)",
                               d->id, d->instance, last ? "load" : "load_chunk", vmig_strerror(rc));
            vmig_session_shutdown_conns(s, false);
            return NULL;
        }
        vmig_stat_add(&s->st_dev_bytes, len);
        vmig_stat_add(&s->st_dev_chunks, 1);
    }
    return NULL;
}

int vmig_dev_dest_start(vmig_session *s, const vmig_wire_hello *h, vmig_error *err)
{
    uint32_t n = h->features & VMIG_HELLO_F_DEVICES ? h->ndevices : 0;
    if (n != s->ndevs || n == 0) {
        for (uint32_t i = 0; i < s->ndevs; i++) {
            bool found = false;
            for (uint32_t k = 0; k < n && !found; k++)
                found = h->devices[k].instance == s->devs[i].instance &&
                        !strcmp(h->devices[k].id, s->devs[i].id);
            if (!found)
                return vmig_error_set(err, VMIG_ENOENT,
                                      "device '%s' instance %u is registered here, but the source "
                                      "does not send it",
                                      s->devs[i].id, s->devs[i].instance);
        }
    }
    if (n == 0)
        return 0;
    s->dev_hello = calloc(n, sizeof(*s->dev_hello));
    if (!s->dev_hello)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for the device table");
    for (uint32_t k = 0; k < n; k++) {
        vmig_dev *d = dev_find(s, h->devices[k].id, h->devices[k].instance);
        if (!d)
            return vmig_error_set(err, VMIG_ENOENT,
                                  "the source sends device '%s' instance %u, which is not "
                                  "registered here",
                                  h->devices[k].id, h->devices[k].instance);
        s->dev_hello[k] = d;
    }
    __atomic_store_n(&s->dev_path, h->dev_path, __ATOMIC_RELAXED); /* stats read it */
    s->dev_chunk = h->dev_chunk;
    /* Enough for a full queue (devstate-buffer) and every channel's chunk
     * in flight: none is fresh memory inside the downtime. */
    uint64_t nbuf = s->p.devstate_buffer / s->dev_chunk + 2 * (uint64_t)h->channels + 2;
    int prc = vmig_dev_pool_fill(s, (uint32_t)VMIG_MIN(nbuf, POOL_MAX), err);
    if (prc)
        return prc;
    for (uint32_t i = 0; i < s->ndevs; i++) {
        s->devs[i].load_rc = 0;
        s->devs[i].next_chunk = 0;
        s->devs[i].got_last = false;
    }
    /* The serial path loads on the control thread, as the chunks are read. */
    if (s->dev_path == VMIG_WIRE_DEV_CONTROL)
        return 0;
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        char name[VMIG_DEVICE_ID_MAX + 16];
        snprintf(name, sizeof(name), "'%s' instance %u", d->id, d->instance);
        vmig_devq *q;
        int rc = vmig_devq_create(name, s->p.devstate_buffer, &q, err);
        if (rc)
            return rc;
        pthread_mutex_lock(&s->lock); /* vmig_dev_fail_all may run on any thread */
        d->q = q;
        pthread_mutex_unlock(&s->lock);
    }
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        char tname[32];
        snprintf(tname, sizeof(tname), "vmig-load%u", i);
        if (vmig_thread_start(&d->loader, tname, loader_main, d))
            return vmig_error_set(err, VMIG_ENOMEM, "cannot start the load thread of device '%s'",
                                  d->id);
        d->loader_started = true;
    }
    return 0;
}

/* The device a DEV packet names, or NULL. */
static vmig_dev *dev_of_packet(vmig_session *s, const vmig_pkt_hdr *h)
{
    for (uint32_t i = 0; s->dev_hello && i < s->ndevs; i++)
        if (s->devs[i].instance == h->instance && !strcmp(s->devs[i].id, h->block))
            return &s->devs[i];
    return NULL;
}

static void held_stat(vmig_session *s, vmig_dev *d)
{
    uint64_t max;
    vmig_devq_stats(d->q, NULL, &max, NULL);
    uint64_t cur = __atomic_load_n(&s->st_dev_held_max, __ATOMIC_RELAXED);
    while (max > cur && !__atomic_compare_exchange_n(&s->st_dev_held_max, &cur, max, false,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

int vmig_dev_recv_packet(vmig_channel *c, const vmig_pkt_hdr *h, vmig_error *err)
{
    vmig_session *s = c->s;
    if (!s->dev_hello || s->dev_path != VMIG_WIRE_DEV_CHANNELS)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet %llu (device '%.*s' instance %u, chunk %u), but no "
                              "device state was announced on the data channels",
                              (unsigned long long)h->seq, VMIG_PKT_NAME_LEN - 1, h->block,
                              h->instance, h->chunk);
    if (h->pass != c->synced_pass + 1)
        return vmig_error_set(err, VMIG_EPROTO, "DEV packet %llu: pass %u, expected %u",
                              (unsigned long long)h->seq, h->pass, c->synced_pass + 1);
    vmig_dev *d = dev_of_packet(s, h);
    if (!d)
        return vmig_error_set(
            err, VMIG_EPROTO, "DEV packet %llu: device '%.*s' instance %u was not announced",
            (unsigned long long)h->seq, VMIG_PKT_NAME_LEN - 1, h->block, h->instance);
    if (h->payload_len > s->dev_chunk)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet %llu: chunk %u of device '%s' instance %u has %u bytes, "
                              "more than the %u announced in HELLO",
                              (unsigned long long)h->seq, h->chunk, d->id, d->instance,
                              h->payload_len, s->dev_chunk);
    uint8_t *buf = vmig_dev_buf_get(s);
    if (!buf)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a %u-byte device chunk",
                              h->payload_len);
    int rc = vmig_conn_read_all(c->conn, buf, h->payload_len, "device state", err);
    if (!rc)
        rc = vmig_wire_pkt_check_dev(h, c->hdr, buf, err);
    if (rc) {
        vmig_dev_buf_put(s, buf);
        return rc;
    }
    uint64_t bytes = VMIG_PKT_HDR_LEN + (uint64_t)h->payload_len;
    vmig_stat_add(&c->st_bytes, bytes);
    vmig_stat_add(&s->st_wire_bytes, bytes);
    uint32_t base = s->colo ? __atomic_load_n(&s->colo_base_pass, __ATOMIC_ACQUIRE) : 0;
    if (base && h->pass > base) /* a checkpoint's: loaded at its commit */
        return vmig_colo_stage(s, d, h->chunk, h->flags & VMIG_PKT_F_LAST, buf, h->payload_len,
                               err);
    rc = vmig_devq_put(d->q, h->chunk, buf, h->payload_len, h->flags & VMIG_PKT_F_LAST, err);
    held_stat(s, d);
    return rc;
}

int vmig_dev_recv_frame(vmig_session *s, const vmig_wire_devchunk *dc, uint8_t *data,
                        vmig_error *err)
{
    if (!s->dev_hello || s->dev_path != VMIG_WIRE_DEV_CONTROL) {
        free(data);
        return vmig_error_set(err, VMIG_EPROTO,
                              "a DEVCHUNK frame (device %u, chunk %u), but device state was "
                              "announced on the %s",
                              dc->device, dc->chunk,
                              s->dev_hello ? "data channels" : "no path (no device)");
    }
    vmig_dev *d = s->dev_hello[dc->device];
    vmig_stat_add(&s->st_wire_bytes,
                  VMIG_CTL_HDR_LEN + VMIG_DEVCHUNK_HDR_LEN + dc->len + VMIG_CTL_TRAILER_LEN);
    /* One ordered stream: each device's chunks come in index order and are
     * loaded here, one after the other, as QEMU's main stream loads its
     * devices. */
    int rc = 0;
    if (d->got_last)
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "device '%s' instance %u: chunk %u after the last chunk (%u)", d->id,
                            d->instance, dc->chunk, d->next_chunk - 1);
    else if (dc->chunk != d->next_chunk)
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "device '%s' instance %u: chunk %u on the control channel, expected "
                            "chunk %u (one ordered stream)",
                            d->id, d->instance, dc->chunk, d->next_chunk);
    if (!rc) {
        uint64_t t0 = vmig_now_ns();
        rc = dc->len ? d->ops.load_chunk(d->opaque, data, dc->len) : 0;
        if (!rc && dc->last && d->ops.load_done)
            rc = d->ops.load_done(d->opaque);
        vmig_stat_add(&s->st_dev_load_ns, vmig_now_ns() - t0);
        if (rc) {
            d->load_rc = rc < 0 ? rc : VMIG_EIO;
            rc = vmig_error_set(err, d->load_rc,
                                "device '%s' instance %u: %s refused the state (%s)", d->id,
                                d->instance, dc->last ? "load" : "load_chunk", vmig_strerror(rc));
        } else {
            d->next_chunk++;
            d->got_last = dc->last;
            vmig_stat_add(&s->st_dev_bytes, dc->len);
            vmig_stat_add(&s->st_dev_chunks, 1);
        }
    }
    vmig_dev_buf_put(s, data);
    return rc;
}

int vmig_dev_dest_finish(vmig_session *s, vmig_error *err)
{
    int rc = 0;
    for (uint32_t i = 0; i < s->ndevs && s->dev_hello && s->dev_path == VMIG_WIRE_DEV_CONTROL; i++)
        if (!s->devs[i].got_last && !rc)
            rc = vmig_error_set(err, VMIG_EPROTO,
                                "device '%s' instance %u: the source finished after %u chunk(s) "
                                "without the last one",
                                s->devs[i].id, s->devs[i].instance, s->devs[i].next_chunk);
    for (uint32_t i = 0; i < s->ndevs && s->dev_hello && s->devs[i].q; i++) {
        vmig_error e = {0};
        int r = vmig_devq_close(s->devs[i].q, &e);
        if (r && !rc) {
            rc = r;
            vmig_error_copy(err, &e);
            vmig_session_fail(s, &e);
        }
    }
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        if (d->loader_started) {
            pthread_join(d->loader, NULL);
            d->loader_started = false;
        }
        if (d->load_rc && !rc) {
            rc = d->load_rc;
            pthread_mutex_lock(&s->lock);
            vmig_error_copy(err, &s->err);
            pthread_mutex_unlock(&s->lock);
        }
    }
    return rc;
}

void vmig_dev_fail_all(vmig_session *s, const vmig_error *e)
{
    /* Under the session's lock: the queues are made and freed under it
     * (vmig_cancel calls this from any thread, at any time). */
    pthread_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->ndevs; i++)
        if (s->devs[i].q)
            vmig_devq_fail(s->devs[i].q, e->code ? e->code : VMIG_EIO, e->msg);
    pthread_mutex_unlock(&s->lock);
}

void vmig_dev_end_run(vmig_session *s)
{
    for (uint32_t i = 0; i < s->ndevs; i++) {
        vmig_dev *d = &s->devs[i];
        if (d->loader_started) {
            if (d->q)
                vmig_devq_fail(d->q, VMIG_ECANCELED, "migration ended");
            pthread_join(d->loader, NULL);
            d->loader_started = false;
        }
        pthread_mutex_lock(&s->lock);
        vmig_devq *q = d->q;
        d->q = NULL;
        pthread_mutex_unlock(&s->lock);
        vmig_devq_free(q);
        d->next_chunk = 0;
        d->iter_known = false;
        d->iter_remaining = 0;
    }
    free(s->dev_hello);
    s->dev_hello = NULL;
    pool_free(s);
}

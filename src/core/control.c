/* Control-channel framing: one frame = header, payload, crc (docs/wire-format.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "session.h"

int vmig_ctl_write(vmig_conn *c, unsigned type, const uint8_t *payload, uint32_t len,
                   vmig_error *err)
{
    uint8_t hdr[VMIG_CTL_HDR_LEN + VMIG_CTL_TRAILER_LEN];
    uint8_t *frame = malloc((size_t)len + sizeof(hdr));
    if (!frame)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a %s frame",
                              vmig_wire_ctl_name(type));
    if (len)
        memcpy(frame + VMIG_CTL_HDR_LEN, payload, len);
    size_t n = vmig_wire_ctl_frame(frame, type, len);
    int rc = vmig_conn_write_all(c, frame, n, vmig_wire_ctl_name(type), err);
    free(frame);
    return rc;
}

int vmig_ctl_write_devchunk(vmig_conn *c, const vmig_wire_devchunk *dc, vmig_error *err)
{
    uint8_t hdr[VMIG_CTL_HDR_LEN + VMIG_DEVCHUNK_HDR_LEN], crc[VMIG_CTL_TRAILER_LEN];
    uint32_t plen = VMIG_DEVCHUNK_HDR_LEN + dc->len;
    vmig_put_be16(hdr, VMIG_CTL_DEVCHUNK);
    vmig_put_be16(hdr + 2, 0);
    vmig_put_be32(hdr + 4, plen);
    vmig_wire_devchunk_encode_hdr(dc, hdr + VMIG_CTL_HDR_LEN);
    uint32_t sum = vmig_crc32c(0, hdr, sizeof(hdr));
    if (dc->len)
        sum = vmig_crc32c(sum, dc->data, dc->len);
    vmig_put_be32(crc, sum);
    struct iovec iov[3] = {{hdr, sizeof(hdr)}, {(void *)dc->data, dc->len}, {crc, sizeof(crc)}};
    if (!dc->len)
        iov[1] = iov[2];
    return vmig_conn_write_full(c, iov, dc->len ? 3 : 2, "DEVCHUNK", err);
}

/* The rest of a DEVCHUNK frame after its 8-byte header: the chunk header,
 * checked before the data is read, the data into a buffer of its own, the
 * crc over all of it. */
static int read_devchunk(vmig_session *s, vmig_conn *c, const uint8_t hdr[VMIG_CTL_HDR_LEN],
                         uint32_t plen, uint8_t **data, vmig_wire_devchunk *dc, vmig_error *err)
{
    uint8_t sub[VMIG_DEVCHUNK_HDR_LEN], trailer[VMIG_CTL_TRAILER_LEN];
    uint32_t ndevices = s->ndevs, chunk_max = s->dev_chunk;
    if (plen < sizeof(sub))
        return vmig_wire_devchunk_decode(sub, plen, ndevices, chunk_max, dc, err);
    int rc = vmig_conn_read_all(c, sub, sizeof(sub), "a DEVCHUNK header", err);
    if (rc)
        return rc;
    /* The decoder looks at the first 8 bytes only; plen tells it the data's length. */
    if ((rc = vmig_wire_devchunk_decode(sub, plen, ndevices, chunk_max, dc, err)))
        return rc;
    dc->data = NULL;
    uint8_t *buf = vmig_dev_buf_get(s);
    if (!buf)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a %u-byte device chunk",
                              dc->len);
    rc = vmig_conn_read_all(c, buf, dc->len, "DEVCHUNK data", err);
    if (!rc)
        rc = vmig_conn_read_all(c, trailer, sizeof(trailer), "a DEVCHUNK crc", err);
    if (!rc) {
        uint32_t sum = vmig_crc32c(vmig_crc32c(0, hdr, VMIG_CTL_HDR_LEN), sub, sizeof(sub));
        if (dc->len)
            sum = vmig_crc32c(sum, buf, dc->len);
        if (sum != vmig_get_be32(trailer))
            rc = vmig_error_set(err, VMIG_EPROTO,
                                "control frame DEVCHUNK: crc 0x%08x does not match 0x%08x "
                                "computed over chunk %u of device %u",
                                vmig_get_be32(trailer), sum, dc->chunk, dc->device);
    }
    if (rc) {
        vmig_dev_buf_put(s, buf);
        return rc;
    }
    *data = buf;
    return 0;
}

/* One frame of a type in `mask`; see vmig_ctl_read_any. `dev` may be NULL
 * when DEVCHUNK is not in the mask. */
static int ctl_read(vmig_session *s, vmig_conn *c, uint32_t mask, unsigned expect,
                    unsigned *type_out, uint8_t **payload, uint32_t *len, vmig_wire_devchunk *dc,
                    vmig_error *err)
{
    uint8_t hdr[VMIG_CTL_HDR_LEN];
    unsigned type;
    uint32_t plen;
    *payload = NULL;
    *len = 0;
    int rc = vmig_conn_read_all(c, hdr, sizeof(hdr), "a control frame header", err);
    if (rc)
        return rc;
    rc = vmig_wire_ctl_decode_hdr(hdr, &type, &plen, err);
    if (rc)
        return rc;
    if (type == VMIG_CTL_DEVCHUNK && s && (mask & 1u << type)) {
        rc = read_devchunk(s, c, hdr, plen, payload, dc, err);
        if (!rc) {
            *len = dc->len;
            *type_out = type;
        }
        return rc;
    }
    uint8_t *frame = malloc((size_t)plen + VMIG_CTL_HDR_LEN + VMIG_CTL_TRAILER_LEN);
    if (!frame)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a %u-byte control frame", plen);
    memcpy(frame, hdr, sizeof(hdr));
    rc = vmig_conn_read_all(c, frame + VMIG_CTL_HDR_LEN, (size_t)plen + VMIG_CTL_TRAILER_LEN,
                            vmig_wire_ctl_name(type), err);
    if (!rc)
        rc = vmig_wire_ctl_check_crc(frame, plen, err);
    if (!rc && type == VMIG_CTL_ERROR && !(mask & 1u << VMIG_CTL_ERROR)) {
        vmig_wire_status st;
        rc = vmig_wire_status_decode(frame + VMIG_CTL_HDR_LEN, plen, true, &st, err);
        if (!rc) {
            /* Name the peer's code, unless its sentence already ends with it. */
            char code[64];
            snprintf(code, sizeof(code), "(%s)", vmig_strerror(st.status));
            size_t ml = strlen(st.msg), cl = strlen(code);
            bool named = ml >= cl && !strcmp(st.msg + ml - cl, code);
            rc = vmig_error_set(err, VMIG_EPEER, "%s reported: %s%s%s", c->peer, st.msg,
                                named ? "" : " ", named ? "" : code);
        }
    } else if (!rc && !(mask & 1u << type)) {
        rc = vmig_error_set(err, VMIG_EPROTO, "%s: expected a %s frame, got %s", c->peer,
                            vmig_wire_ctl_name(expect), vmig_wire_ctl_name(type));
    }
    if (rc) {
        free(frame);
        return rc;
    }
    if (plen) {
        memmove(frame, frame + VMIG_CTL_HDR_LEN, plen);
        *payload = frame;
    } else {
        free(frame);
    }
    *len = plen;
    *type_out = type;
    return 0;
}

int vmig_ctl_read(vmig_conn *c, unsigned expect, uint8_t **payload, uint32_t *len, vmig_error *err)
{
    unsigned type;
    return ctl_read(NULL, c, 1u << expect, expect, &type, payload, len, NULL, err);
}

int vmig_ctl_read_mask(vmig_conn *c, uint32_t mask, unsigned expect, unsigned *type,
                       uint8_t **payload, uint32_t *len, vmig_error *err)
{
    return ctl_read(NULL, c, mask, expect, type, payload, len, NULL, err);
}

/* Wait until the control channel is readable, giving up with the
 * session's error when it aborts, or VMIG_ETIMEDOUT at `deadline`. */
static int ctl_wait(vmig_session *s, unsigned expect, uint64_t deadline, int timeout_ms,
                    vmig_error *err)
{
    for (;;) {
        if (vmig_now_ns() >= deadline)
            return vmig_error_set(err, VMIG_ETIMEDOUT, "%s: no %s frame within %d ms",
                                  s->control->peer, vmig_wire_ctl_name(expect), timeout_ms);
        if (vmig_session_aborted(s)) {
            pthread_mutex_lock(&s->lock);
            int code = vmig_error_copy(err, &s->err);
            pthread_mutex_unlock(&s->lock);
            return code ? code : VMIG_ECANCELED;
        }
        int r = s->control->ops->wait_readable(s->control, 50);
        if (r > 0)
            return 0;
        if (r < 0 && r != -EINTR)
            return vmig_error_set(err, VMIG_EIO, "%s: poll: %s", s->control->peer, strerror(-r));
    }
}

int vmig_ctl_read_any(vmig_session *s, uint32_t mask, unsigned expect, unsigned *type,
                      uint8_t **payload, uint32_t *len, vmig_wire_devchunk *dc, vmig_error *err)
{
    *payload = NULL;
    *len = 0;
    int rc = ctl_wait(s, expect, UINT64_MAX, -1, err);
    return rc ? rc : ctl_read(s, s->control, mask, expect, type, payload, len, dc, err);
}

int vmig_ctl_read_session(vmig_session *s, unsigned expect, uint8_t **payload, uint32_t *len,
                          int timeout_ms, vmig_error *err)
{
    *payload = NULL;
    *len = 0;
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : vmig_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int rc = ctl_wait(s, expect, deadline, timeout_ms, err);
    return rc ? rc : vmig_ctl_read(s->control, expect, payload, len, err);
}

void vmig_session_take_peer_error(vmig_session *s, int timeout_ms)
{
    if (!s->control || __atomic_load_n(&s->canceled, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&s->lock);
    int code = s->err.code;
    pthread_mutex_unlock(&s->lock);
    if (code != VMIG_ECONN)
        return;
    if (s->control->ops->wait_readable(s->control, timeout_ms) <= 0)
        return;
    uint8_t *payload;
    uint32_t len;
    vmig_error peer = {0};
    if (vmig_ctl_read(s->control, VMIG_CTL_RESULT, &payload, &len, &peer) == VMIG_EPEER) {
        pthread_mutex_lock(&s->lock);
        s->err = peer;
        pthread_mutex_unlock(&s->lock);
    } else if (peer.code == 0) {
        free(payload);
    }
}

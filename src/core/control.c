/* Control-channel framing: one frame = header, payload, crc (docs/wire-format.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

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

int vmig_ctl_read(vmig_conn *c, unsigned expect, uint8_t **payload, uint32_t *len, vmig_error *err)
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
    uint8_t *frame = malloc((size_t)plen + VMIG_CTL_HDR_LEN + VMIG_CTL_TRAILER_LEN);
    if (!frame)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a %u-byte control frame", plen);
    memcpy(frame, hdr, sizeof(hdr));
    rc = vmig_conn_read_all(c, frame + VMIG_CTL_HDR_LEN, (size_t)plen + VMIG_CTL_TRAILER_LEN,
                            vmig_wire_ctl_name(type), err);
    if (!rc)
        rc = vmig_wire_ctl_check_crc(frame, plen, err);
    if (!rc && type == VMIG_CTL_ERROR && expect != VMIG_CTL_ERROR) {
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
    } else if (!rc && type != expect) {
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
    return 0;
}

int vmig_ctl_read_session(vmig_session *s, unsigned expect, uint8_t **payload, uint32_t *len,
                          int timeout_ms, vmig_error *err)
{
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : vmig_now_ns() + (uint64_t)timeout_ms * 1000000ull;
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
            return vmig_ctl_read(s->control, expect, payload, len, err);
        if (r < 0 && r != -EINTR)
            return vmig_error_set(err, VMIG_EIO, "%s: poll: %s", s->control->peer, strerror(-r));
    }
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

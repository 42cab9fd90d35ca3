/*
 * A fake source for the end-to-end tests that send hand-made messages to a
 * live destination: connect with a handshake, write control frames, read
 * the destination's frames. Include after testutil.h and the wire and
 * transport headers.
 */
#ifndef VMIG_TU_FAKESRC_H
#define VMIG_TU_FAKESRC_H

#include <stdlib.h>

/* Connect to `uri` and send the handshake of a channel. */
static inline vmig_conn *tf_connect(const char *uri, uint8_t kind, uint16_t id, uint16_t count,
                                    const uint8_t *uuid)
{
    vmig_conn *c;
    vmig_error e = {0};
    REQUIRE(!vmig_connect(uri, 2000, &c, &e), "connect: %s", e.msg);
    vmig_wire_hs hs = {.kind = kind, .channel_id = id, .channel_count = count};
    memcpy(hs.uuid, uuid, 16);
    uint8_t raw[VMIG_HS_LEN];
    vmig_wire_hs_encode(&hs, raw);
    vmig_conn_write_all(c, raw, sizeof(raw), "hs", NULL);
    return c;
}

/* One control frame of `type` around `payload`; write errors are ignored
 * (the destination may have refused and closed already). */
static inline void tf_ctl(vmig_conn *c, unsigned type, const uint8_t *payload, int len)
{
    REQUIRE(len >= 0 && (uint32_t)len <= VMIG_WIRE_MAX_CTL_PAYLOAD, "frame too big");
    uint8_t *buf = malloc((size_t)len + VMIG_CTL_HDR_LEN + VMIG_CTL_TRAILER_LEN);
    REQUIRE(buf, "malloc");
    if (len)
        memcpy(buf + VMIG_CTL_HDR_LEN, payload, (size_t)len);
    size_t n = vmig_wire_ctl_frame(buf, type, (uint32_t)len);
    vmig_conn_write_all(c, buf, n, "frame", NULL);
    free(buf);
}

/* Read one frame; returns its type (0 on EOF or a malformed frame). */
static inline unsigned tf_read_frame(vmig_conn *c)
{
    uint8_t hdr[VMIG_CTL_HDR_LEN];
    if (vmig_conn_read_all(c, hdr, sizeof(hdr), "hdr", NULL))
        return 0;
    unsigned type;
    uint32_t len;
    if (vmig_wire_ctl_decode_hdr(hdr, &type, &len, NULL))
        return 0;
    uint8_t *rest = malloc(len + 4);
    int rc = rest ? vmig_conn_read_all(c, rest, len + 4, "payload", NULL) : -1;
    free(rest);
    return rc ? 0 : type;
}

#endif

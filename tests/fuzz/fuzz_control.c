/*
 * libFuzzer target: control frames (header, crc, and the payload decoder of
 * each type).
 *
 * Input: one frame, header + payload + crc. The payload decoder runs whether
 * or not the crc matches, so that mutations reach it. Payloads that decode
 * must re-encode to the same bytes, and a frame whose crc matched must
 * re-frame to the same bytes (the control format is canonical). CKPT is
 * decoded as a secondary whose HELLO had the block count the payload claims
 * (so that the rest is reached), then with one block more and one less,
 * which must be refused.
 */
#include <stdlib.h>

#include "src/wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vmig_wire_block blocks[VMIG_WIRE_MAX_BLOCKS];
static vmig_wire_device devices[VMIG_WIRE_MAX_DEVICES];
static uint8_t digests[VMIG_WIRE_MAX_BLOCKS][16];
static uint8_t digests2[VMIG_WIRE_MAX_BLOCKS][16];
static uint8_t re[VMIG_CTL_HDR_LEN + VMIG_WIRE_MAX_CTL_PAYLOAD + VMIG_CTL_TRAILER_LEN];

static void check_err(int rc, const vmig_error *err)
{
    if (rc != 0 && (rc != VMIG_EPROTO || err->code != rc || !err->msg[0]))
        __builtin_trap();
}

static void same(int n, const uint8_t *p, uint32_t len)
{
    if (n < 0 || (uint32_t)n != len || memcmp(re + VMIG_CTL_HDR_LEN, p, len))
        __builtin_trap();
}

/* Decode the payload of a frame of `type`; 0 when it is valid. */
static int payload(unsigned type, const uint8_t *p, uint32_t len)
{
    vmig_error err = {0};
    uint8_t *out = re + VMIG_CTL_HDR_LEN;
    size_t cap = VMIG_WIRE_MAX_CTL_PAYLOAD;
    int rc;
    switch (type) {
    case VMIG_CTL_HELLO: {
        vmig_wire_hello h = {.blocks = blocks, .devices = devices};
        rc = vmig_wire_hello_decode(p, len, &h, VMIG_WIRE_MAX_BLOCKS, &err);
        check_err(rc, &err);
        if (!rc)
            same(vmig_wire_hello_encode(&h, out, cap), p, len);
        return rc;
    }
    case VMIG_CTL_DEVSTATE:  /* opaque bytes for the application: any length up to the limit */
        memcpy(out, p, len); /* what the sender frames */
        return 0;
    case VMIG_CTL_DEVCHUNK: {
        /* As a destination that announced 4 devices and 64 KiB chunks. */
        vmig_wire_devchunk c;
        rc = vmig_wire_devchunk_decode(p, len, 4, 65536, &c, &err);
        check_err(rc, &err);
        if (!rc) {
            if (c.device >= 4 || c.len > 65536 || c.data != p + VMIG_DEVCHUNK_HDR_LEN ||
                c.len != len - VMIG_DEVCHUNK_HDR_LEN || (c.len == 0 && !c.last))
                __builtin_trap();
            vmig_wire_devchunk_encode_hdr(&c, out);
            memcpy(out + VMIG_DEVCHUNK_HDR_LEN, c.data, c.len);
            same((int)len, p, len);
        }
        return rc;
    }
    case VMIG_CTL_READY: { /* 4 bytes: vmig_wire_ctl_decode_hdr() checked the length */
        uint32_t codecs;
        rc = vmig_wire_ready_decode(p, len, &codecs, &err);
        check_err(rc, &err);
        if (len != VMIG_READY_LEN || (!rc && !(codecs & 1)))
            __builtin_trap();
        /* Unknown bits are dropped, not refused: the frame is re-framed as it
         * came, and the known bits must re-encode to themselves. */
        if (!rc) {
            vmig_wire_ready_encode(codecs, out);
            if ((vmig_get_be32(out) ^ vmig_get_be32(p)) & ((1u << VMIG_CODEC_COUNT) - 1))
                __builtin_trap();
            memcpy(out, p, len);
        }
        return rc;
    }
    case VMIG_CTL_COMMIT:    /* empty: vmig_wire_ctl_decode_hdr() checked it */
    case VMIG_CTL_HEARTBEAT: /* the same */
        if (len != 0)
            __builtin_trap();
        return 0;
    case VMIG_CTL_END: {
        /* Expect the block count the payload claims (when it is valid), so
         * that the rest of the payload is reached. */
        uint32_t expect = len >= 4 ? vmig_get_be32(p) : 1;
        if (expect < 1 || expect > VMIG_WIRE_MAX_BLOCKS)
            expect = 1;
        vmig_wire_end e = {.digests = digests};
        rc = vmig_wire_end_decode(p, len, &e, expect, &err);
        check_err(rc, &err);
        if (!rc)
            same(vmig_wire_end_encode(&e, out, cap), p, len);
        return rc;
    }
    case VMIG_CTL_CKPT: {
        uint32_t claim = len >= VMIG_CKPT_FIXED + 4 ? vmig_get_be32(p + VMIG_CKPT_FIXED) : 1;
        uint32_t expect = claim >= 1 && claim <= VMIG_WIRE_MAX_BLOCKS ? claim : 1;
        vmig_wire_ckpt c = {.end = {.digests = digests}};
        rc = vmig_wire_ckpt_decode(p, len, &c, expect, &err);
        check_err(rc, &err);
        if (!rc) {
            if (c.pass == 0 || c.end.nblocks != expect)
                __builtin_trap();
            same(vmig_wire_ckpt_encode(&c, out, cap), p, len);
        }
        /* Any other block count is refused, valid payload or not; a count
         * outside 1..MAX_BLOCKS is the caller's error (VMIG_EINVAL) unless
         * the payload is refused first. */
        const uint32_t others[] = {expect - 1, expect + 1, 0, VMIG_WIRE_MAX_BLOCKS + 1};
        for (size_t k = 0; k < sizeof(others) / sizeof(others[0]); k++) {
            vmig_error e2 = {0};
            vmig_wire_ckpt c2 = {.end = {.digests = digests2}};
            int rc2 = vmig_wire_ckpt_decode(p, len, &c2, others[k], &e2);
            bool caller = others[k] < 1 || others[k] > VMIG_WIRE_MAX_BLOCKS;
            if (rc2 == 0 || (caller && rc2 == VMIG_EINVAL && !e2.msg[0]))
                __builtin_trap();
            if (!(caller && rc2 == VMIG_EINVAL))
                check_err(rc2, &e2);
        }
        return rc;
    }
    case VMIG_CTL_ACK: { /* 8 bytes (the header said so), any id */
        uint64_t id;
        rc = vmig_wire_ack_decode(p, len, &id, &err);
        check_err(rc, &err);
        if (rc || len != VMIG_ACK_LEN)
            __builtin_trap();
        vmig_wire_ack_encode(id, out);
        same(VMIG_ACK_LEN, p, len);
        /* The decoder's own length check, for a caller that skipped the
         * header's: it refuses before reading. */
        for (size_t l = VMIG_ACK_LEN - 1; l <= VMIG_ACK_LEN + 1; l += 2) {
            vmig_error e2 = {0};
            int rc2 = vmig_wire_ack_decode(p, l, &id, &e2);
            if (rc2 == 0)
                __builtin_trap();
            check_err(rc2, &e2);
        }
        return 0;
    }
    case VMIG_CTL_RESULT:
    case VMIG_CTL_ERROR: {
        vmig_wire_status st;
        bool is_error = type == VMIG_CTL_ERROR;
        rc = vmig_wire_status_decode(p, len, is_error, &st, &err);
        check_err(rc, &err);
        if (!rc) {
            if (is_error ? st.status >= 0 : st.status > 0)
                __builtin_trap();
            same(vmig_wire_status_encode(st.status, st.msg, out, cap), p, len);
        }
        return rc;
    }
    default: /* vmig_wire_ctl_decode_hdr() let through a type this target does not know */
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < VMIG_CTL_HDR_LEN)
        return 0;
    unsigned type;
    uint32_t len;
    vmig_error err = {0};
    int rc = vmig_wire_ctl_decode_hdr(data, &type, &len, &err);
    check_err(rc, &err);
    if (rc)
        return 0;
    if (type < VMIG_CTL_HELLO || type > VMIG_CTL_TYPE_MAX || len > VMIG_WIRE_MAX_CTL_PAYLOAD)
        __builtin_trap();
    if (size - VMIG_CTL_HDR_LEN < (size_t)len + VMIG_CTL_TRAILER_LEN)
        return 0; /* the frame has not arrived */
    /* An exact-size copy of the frame: reads beyond it are ASan reports. */
    size_t flen = VMIG_CTL_HDR_LEN + (size_t)len + VMIG_CTL_TRAILER_LEN;
    uint8_t *frame = malloc(flen);
    if (!frame)
        abort();
    memcpy(frame, data, flen);
    vmig_error cerr = {0};
    int crc_rc = vmig_wire_ctl_check_crc(frame, len, &cerr);
    check_err(crc_rc, &cerr);
    uint8_t *p = malloc(len ? len : 1);
    if (!p)
        abort();
    memcpy(p, frame + VMIG_CTL_HDR_LEN, len);
    int prc = payload(type, p, len);
    if (!prc && !crc_rc) {
        size_t n = vmig_wire_ctl_frame(re, type, len);
        if (n != flen || memcmp(re, frame, flen))
            __builtin_trap();
    }
    free(p);
    free(frame);
    return 0;
}

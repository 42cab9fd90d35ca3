/*
 * libFuzzer target: data-channel packets.
 *
 * Input: a 304-byte header, then its offsets (8 bytes each), then optionally
 * 8 more bytes giving the block length (else 2^48). The header is decoded;
 * when it is accepted, the offsets are decoded over the bytes that follow,
 * as the destination does. The offsets are decoded a second time with the
 * crc recomputed, so that mutations reach the offset checks. A packet that
 * decodes must re-encode to the same bytes: every byte is either checked or
 * covered by the crc. A DEV packet's payload (payload_len bytes after the
 * header) is checked against its crc instead, again with both crcs made
 * right.
 */
#include <stdlib.h>

#include "src/wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_err(int rc, const vmig_error *err)
{
    if (rc != 0 && (rc != VMIG_EPROTO || err->code != rc || !err->msg[0]))
        __builtin_trap();
}

static void offsets(const vmig_pkt_hdr *h, const uint8_t *hdr, const uint8_t *offs, size_t n,
                    uint64_t block_len)
{
    static uint64_t out[VMIG_WIRE_MAX_PACKET_PAGES];
    vmig_error err = {0};
    int rc = vmig_wire_pkt_decode_offsets(h, hdr, n ? offs : NULL, block_len, out, &err);
    check_err(rc, &err);
    if (rc)
        return;
    for (size_t i = 0; i < n; i++)
        if (out[i] % h->page_size || out[i] + h->page_size > block_len ||
            out[i] + h->page_size < out[i])
            __builtin_trap();
    /* Canonical: the decoded header and offsets encode to the input. */
    uint8_t *re = malloc(VMIG_PKT_HDR_LEN + 8 * n);
    if (!re)
        return;
    size_t len = vmig_wire_pkt_encode(h, out, re);
    if (len != VMIG_PKT_HDR_LEN + 8 * n || memcmp(re, hdr, VMIG_PKT_HDR_LEN) ||
        (n && memcmp(re + VMIG_PKT_HDR_LEN, offs, 8 * n)))
        __builtin_trap();
    free(re);
}

/* A DEV packet as the destination checks it, then canonical re-encoding. */
static void dev(vmig_pkt_hdr *h, const uint8_t *data, size_t size)
{
    if (h->chunk >= VMIG_WIRE_MAX_DEV_CHUNKS || h->payload_len > VMIG_WIRE_MAX_PAYLOAD ||
        (!h->payload_len && !(h->flags & VMIG_PKT_F_LAST)) || !h->block[0])
        __builtin_trap();
    if (size - VMIG_PKT_HDR_LEN < h->payload_len)
        return; /* the payload has not arrived */
    uint8_t *hdr = malloc(VMIG_PKT_HDR_LEN);
    uint8_t *pl = malloc(h->payload_len ? h->payload_len : 1);
    if (!hdr || !pl)
        abort();
    memcpy(hdr, data, VMIG_PKT_HDR_LEN);
    memcpy(pl, data + VMIG_PKT_HDR_LEN, h->payload_len);
    for (int pass = 0; pass < 2; pass++) {
        vmig_error err = {0};
        int rc = vmig_wire_pkt_check_dev(h, hdr, pl, &err);
        check_err(rc, &err);
        if (!rc) {
            uint8_t re[VMIG_PKT_HDR_LEN];
            if (vmig_wire_pkt_encode(h, NULL, re) != VMIG_PKT_HDR_LEN ||
                memcmp(re, hdr, VMIG_PKT_HDR_LEN))
                __builtin_trap();
        }
        /* Make both crcs right for the second round. */
        h->payload_crc = vmig_crc32c(0, pl, h->payload_len);
        vmig_put_be32(hdr + 296, h->payload_crc);
        uint32_t c = vmig_crc32c(0, hdr, 36);
        c = vmig_crc32c(c, "\0\0\0\0", 4);
        c = vmig_crc32c(c, hdr + 40, VMIG_PKT_HDR_LEN - 40);
        vmig_put_be32(hdr + 36, c);
        h->hdr_crc = c;
    }
    free(hdr);
    free(pl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < VMIG_PKT_HDR_LEN)
        return 0;
    vmig_pkt_hdr h;
    vmig_error err = {0};
    int rc = vmig_wire_pkt_decode_hdr(data, &h, VMIG_WIRE_MAX_PACKET_PAGES, &err);
    check_err(rc, &err);
    if (rc)
        return 0;
    if (h.type == VMIG_PKT_DEV) {
        if (h.normal || h.zero || h.page_size)
            __builtin_trap();
        dev(&h, data, size);
        return 0;
    }
    size_t n = (size_t)h.normal + h.zero;
    if (n > VMIG_WIRE_MAX_PACKET_PAGES || (h.type == VMIG_PKT_RAM) != (n > 0) ||
        h.block[VMIG_PKT_NAME_LEN - 1] != 0)
        __builtin_trap();
    if (size - VMIG_PKT_HDR_LEN < 8 * n)
        return 0; /* the offsets have not arrived */
    /* Exact-size copies: any read beyond them is an ASan report. */
    uint8_t *hdr = malloc(VMIG_PKT_HDR_LEN);
    uint8_t *offs = malloc(n ? 8 * n : 1);
    if (!hdr || !offs)
        abort();
    memcpy(hdr, data, VMIG_PKT_HDR_LEN);
    memcpy(offs, data + VMIG_PKT_HDR_LEN, 8 * n);
    size_t rest = size - VMIG_PKT_HDR_LEN - 8 * n;
    uint64_t block_len =
        rest >= 8 ? vmig_get_be64(data + VMIG_PKT_HDR_LEN + 8 * n) : VMIG_WIRE_MAX_BLOCK_LEN;
    offsets(&h, hdr, offs, n, block_len);

    /* Again with a correct crc, to reach the offset checks. */
    uint32_t c = vmig_crc32c(0, hdr, 36);
    c = vmig_crc32c(c, "\0\0\0\0", 4);
    c = vmig_crc32c(c, hdr + 40, VMIG_PKT_HDR_LEN - 40);
    if (n)
        c = vmig_crc32c(c, offs, 8 * n);
    vmig_put_be32(hdr + 36, c);
    h.hdr_crc = c;
    offsets(&h, hdr, offs, n, block_len);
    free(hdr);
    free(offs);
    return 0;
}

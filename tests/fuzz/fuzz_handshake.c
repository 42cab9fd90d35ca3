/*
 * libFuzzer target: the 40-byte handshake.
 *
 * The first 40 bytes are decoded twice: as they are, and with the crc
 * recomputed so that mutations reach the field checks behind it. Whatever
 * decodes must re-encode to the same 40 bytes (the format is canonical).
 */
#include "src/wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const uint8_t *in)
{
    vmig_wire_hs h;
    vmig_error err = {0};
    int rc = vmig_wire_hs_decode(in, &h, &err);
    if (rc != 0 && (rc != VMIG_EPROTO || err.code != rc || !err.msg[0]))
        __builtin_trap();
    if (rc)
        return;
    if (h.kind > VMIG_CH_DATA || h.channel_count < 1 || h.channel_count > VMIG_WIRE_MAX_CHANNELS ||
        h.channel_id >= h.channel_count || (h.flags & ~VMIG_HS_F_RESUME) ||
        (h.flags && h.kind != VMIG_CH_DATA))
        __builtin_trap();
    uint8_t out[VMIG_HS_LEN];
    vmig_wire_hs_encode(&h, out);
    if (memcmp(out, in, VMIG_HS_LEN))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < VMIG_HS_LEN)
        return 0;
    one(data);
    uint8_t fixed[VMIG_HS_LEN];
    memcpy(fixed, data, VMIG_HS_LEN);
    vmig_put_be32(fixed + 36, vmig_crc32c(0, fixed, 36));
    one(fixed);
    return 0;
}

/*
 * libFuzzer target: the 16-byte acknowledgement a destination writes on a
 * data channel (resume=on).
 *
 * The first 16 bytes are decoded as they are and with the crc recomputed
 * (so that mutations reach past it). A record that decodes must re-encode
 * to the same bytes; one that does not must say why.
 */
#include "src/wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const uint8_t *in)
{
    uint64_t seq = 0;
    vmig_error err = {0};
    int rc = vmig_wire_chack_decode(in, &seq, &err);
    if (rc != 0 && (rc != VMIG_EPROTO || err.code != rc || !err.msg[0]))
        __builtin_trap();
    if (rc)
        return;
    uint8_t out[VMIG_CHACK_LEN];
    vmig_wire_chack_encode(seq, out);
    if (memcmp(out, in, VMIG_CHACK_LEN))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < VMIG_CHACK_LEN)
        return 0;
    one(data);
    uint8_t fixed[VMIG_CHACK_LEN];
    memcpy(fixed, data, VMIG_CHACK_LEN);
    vmig_put_be32(fixed + 12, vmig_crc32c(0, fixed, 12));
    one(fixed);
    return 0;
}

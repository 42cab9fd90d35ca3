/*
 * Encoding and decoding of every vmig message, field by field, exactly as
 * docs/wire-format.md lays them out.
 *
 * Decoders read only the bytes they are given and check every field in the
 * order of the spec; the first broken rule ends the decode with VMIG_EPROTO
 * and a sentence naming the field, the bad value and the limit. A limit L is
 * always checked as `value > L`, so `value == L` is accepted.
 *
 * Encoders that can fail (those returning int) check the caller's values
 * against the same rules and return VMIG_EINVAL, so what they emit always
 * decodes again. The two that cannot fail (handshake, packet) write the
 * fields they are given; the callers own those values.
 */
#include <inttypes.h>
#include <stdio.h>

#include "wire.h"

static const uint8_t zero4[4];

/* Index of the first non-zero byte of p[0..n), or n when all are zero. */
static size_t first_nonzero(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] == 0)
        i++;
    return i;
}

/* Page-size rule shared by HELLO blocks and RAM packets. */
static int check_page_size(uint32_t ps, int code, vmig_error *err, const char *what)
{
    if (!vmig_is_pow2(ps))
        return vmig_error_set(err, code, "%s: page_size %" PRIu32 " is not a power of two", what,
                              ps);
    if (ps < VMIG_WIRE_MIN_PAGE_SIZE)
        return vmig_error_set(err, code, "%s: page_size %" PRIu32 " is below the minimum %u", what,
                              ps, VMIG_WIRE_MIN_PAGE_SIZE);
    if (ps > VMIG_WIRE_MAX_PAGE_SIZE)
        return vmig_error_set(err, code, "%s: page_size %" PRIu32 " exceeds the limit %u", what, ps,
                              VMIG_WIRE_MAX_PAGE_SIZE);
    return 0;
}

/* ------------------------------------------------------------------ */
/* handshake                                                          */
/*
 *  0      4     6    7     8        24      26      28        36    40
 *  +------+-----+----+-----+--------+-------+-------+---------+-----+
 *  |magic | ver |kind|flags|  uuid  | ch_id | count |reserved | crc |
 *  +------+-----+----+-----+--------+-------+-------+---------+-----+
 */
enum { HS_CRC_OFF = 36, HS_RESERVED_OFF = 28, HS_RESERVED_LEN = 8 };

void vmig_wire_hs_encode(const vmig_wire_hs *h, uint8_t out[VMIG_HS_LEN])
{
    memset(out, 0, VMIG_HS_LEN);
    vmig_put_be32(out, VMIG_HS_MAGIC);
    vmig_put_be16(out + 4, VMIG_WIRE_VERSION);
    out[6] = h->kind;
    out[7] = h->flags;
    memcpy(out + 8, h->uuid, 16);
    vmig_put_be16(out + 24, h->channel_id);
    vmig_put_be16(out + 26, h->channel_count);
    vmig_put_be32(out + HS_CRC_OFF, vmig_crc32c(0, out, HS_CRC_OFF));
}

/*
 * Magic and version first (is this vmig at all?), then the crc (a flipped
 * bit is reported as corruption rather than as a strange field), then the
 * fields.
 */
int vmig_wire_hs_decode(const uint8_t in[VMIG_HS_LEN], vmig_wire_hs *h, vmig_error *err)
{
    uint32_t magic = vmig_get_be32(in);
    if (magic != VMIG_HS_MAGIC)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: magic 0x%08" PRIx32 " is not 0x%08x (\"VMIG\")", magic,
                              VMIG_HS_MAGIC);
    uint16_t version = vmig_get_be16(in + 4);
    if (version != VMIG_WIRE_VERSION)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: version %u is not supported (this side speaks %d)",
                              version, VMIG_WIRE_VERSION);
    uint32_t crc = vmig_get_be32(in + HS_CRC_OFF);
    uint32_t want = vmig_crc32c(0, in, HS_CRC_OFF);
    if (crc != want)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: crc 0x%08" PRIx32 " does not match 0x%08" PRIx32
                              " computed over bytes 0..35",
                              crc, want);
    uint8_t kind = in[6];
    if (kind != VMIG_CH_CONTROL && kind != VMIG_CH_DATA)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: kind %u is neither 0 (control) nor 1 (data)", kind);
    if (in[7] & ~VMIG_HS_F_RESUME)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: flags 0x%02x has unknown bits (known: 0x%02x, resume)",
                              in[7], VMIG_HS_F_RESUME);
    if (in[7] && kind != VMIG_CH_DATA)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: flags 0x%02x (resume) on a control channel: only a data "
                              "channel resumes",
                              in[7]);
    size_t r = first_nonzero(in + HS_RESERVED_OFF, HS_RESERVED_LEN);
    if (r < HS_RESERVED_LEN)
        return vmig_error_set(err, VMIG_EPROTO, "handshake: reserved byte %zu is 0x%02x, must be 0",
                              HS_RESERVED_OFF + r, in[HS_RESERVED_OFF + r]);
    uint16_t id = vmig_get_be16(in + 24);
    uint16_t count = vmig_get_be16(in + 26);
    if (count < 1)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: channel_count 0 is below the minimum 1");
    if (count > VMIG_WIRE_MAX_CHANNELS)
        return vmig_error_set(err, VMIG_EPROTO, "handshake: channel_count %u exceeds the limit %d",
                              count, VMIG_WIRE_MAX_CHANNELS);
    if (kind == VMIG_CH_CONTROL && id != 0)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: control channel has channel_id %u, must be 0", id);
    if (id >= count)
        return vmig_error_set(err, VMIG_EPROTO,
                              "handshake: channel_id %u is not below channel_count %u", id, count);
    h->kind = kind;
    h->flags = in[7];
    memcpy(h->uuid, in + 8, 16);
    h->channel_id = id;
    h->channel_count = count;
    return 0;
}

/* ------------------------------------------------------------------ */
/* acknowledgements                                                   */

void vmig_wire_chack_encode(uint64_t seq, uint8_t out[VMIG_CHACK_LEN])
{
    vmig_put_be32(out, VMIG_CHACK_MAGIC);
    vmig_put_be64(out + 4, seq);
    vmig_put_be32(out + 12, vmig_crc32c(0, out, 12));
}

int vmig_wire_chack_decode(const uint8_t in[VMIG_CHACK_LEN], uint64_t *seq, vmig_error *err)
{
    uint32_t magic = vmig_get_be32(in);
    if (magic != VMIG_CHACK_MAGIC)
        return vmig_error_set(err, VMIG_EPROTO,
                              "acknowledgement: magic 0x%08" PRIx32 " is not 0x%08x (\"VMAK\")",
                              magic, VMIG_CHACK_MAGIC);
    uint32_t crc = vmig_get_be32(in + 12), want = vmig_crc32c(0, in, 12);
    if (crc != want)
        return vmig_error_set(err, VMIG_EPROTO,
                              "acknowledgement: crc 0x%08" PRIx32 " does not match 0x%08" PRIx32,
                              crc, want);
    *seq = vmig_get_be64(in + 4);
    return 0;
}

/* ------------------------------------------------------------------ */
/* control frames                                                     */

const char *vmig_wire_ctl_name(unsigned type)
{
    static const char *const names[] = {
        [VMIG_CTL_HELLO] = "HELLO",
        [VMIG_CTL_READY] = "READY",
        [VMIG_CTL_END] = "END",
        [VMIG_CTL_RESULT] = "RESULT",
        [VMIG_CTL_ERROR] = "ERROR",
        [VMIG_CTL_DEVSTATE] = "DEVSTATE",
        [VMIG_CTL_COMMIT] = "COMMIT",
        [VMIG_CTL_DEVCHUNK] = "DEVCHUNK",
        [VMIG_CTL_CKPT] = "CKPT",
        [VMIG_CTL_ACK] = "ACK",
        [VMIG_CTL_HEARTBEAT] = "HEARTBEAT",
    };
    if (type < VMIG_ARRAY_SIZE(names) && names[type])
        return names[type];
    return "unknown";
}

size_t vmig_wire_ctl_frame(uint8_t *out, unsigned type, uint32_t payload_len)
{
    vmig_put_be16(out, (uint16_t)type);
    vmig_put_be16(out + 2, 0);
    vmig_put_be32(out + 4, payload_len);
    size_t n = VMIG_CTL_HDR_LEN + (size_t)payload_len;
    vmig_put_be32(out + n, vmig_crc32c(0, out, n));
    return n + VMIG_CTL_TRAILER_LEN;
}

int vmig_wire_ctl_decode_hdr(const uint8_t in[VMIG_CTL_HDR_LEN], unsigned *type,
                             uint32_t *payload_len, vmig_error *err)
{
    unsigned t = vmig_get_be16(in);
    if (t < VMIG_CTL_HELLO || t > VMIG_CTL_TYPE_MAX)
        return vmig_error_set(err, VMIG_EPROTO,
                              "control frame: type %u is not one of 1 (HELLO) .. 11 (HEARTBEAT)",
                              t);
    uint16_t flags = vmig_get_be16(in + 2);
    if (flags)
        return vmig_error_set(err, VMIG_EPROTO, "control frame %s: flags 0x%04x must be 0",
                              vmig_wire_ctl_name(t), flags);
    uint32_t len = vmig_get_be32(in + 4);
    if (len > VMIG_WIRE_MAX_CTL_PAYLOAD)
        return vmig_error_set(err, VMIG_EPROTO,
                              "control frame %s: payload length %" PRIu32 " exceeds the limit %u",
                              vmig_wire_ctl_name(t), len, VMIG_WIRE_MAX_CTL_PAYLOAD);
    /* COMMIT and HEARTBEAT have no payload decoder: their one rule is checked here. */
    if ((t == VMIG_CTL_COMMIT || t == VMIG_CTL_HEARTBEAT) && len != 0)
        return vmig_error_set(err, VMIG_EPROTO,
                              "control frame %s: payload length %" PRIu32 " must be 0",
                              vmig_wire_ctl_name(t), len);
    if (t == VMIG_CTL_ACK && len != VMIG_ACK_LEN)
        return vmig_error_set(err, VMIG_EPROTO,
                              "control frame ACK: payload length %" PRIu32 " must be %d", len,
                              VMIG_ACK_LEN);
    if (t == VMIG_CTL_READY && len != VMIG_READY_LEN)
        return vmig_error_set(err, VMIG_EPROTO,
                              "control frame READY: payload length %" PRIu32 " must be %d", len,
                              VMIG_READY_LEN);
    *type = t;
    *payload_len = len;
    return 0;
}

void vmig_wire_ready_encode(uint32_t codecs, uint8_t out[VMIG_READY_LEN])
{
    vmig_put_be32(out, codecs);
}

int vmig_wire_ready_decode(const uint8_t *in, size_t len, uint32_t *codecs, vmig_error *err)
{
    if (len != VMIG_READY_LEN)
        return vmig_error_set(err, VMIG_EPROTO, "READY: payload of %zu bytes, expected %d", len,
                              VMIG_READY_LEN);
    uint32_t m = vmig_get_be32(in);
    if (!(m & 1u << VMIG_CODEC_NONE))
        return vmig_error_set(err, VMIG_EPROTO,
                              "READY: codecs 0x%08" PRIx32 " lacks bit 0 (none), which every "
                              "destination decodes",
                              m);
    /* Bits of codecs this side does not know are a newer destination's: ignored. */
    *codecs = m & ((1u << VMIG_CODEC_COUNT) - 1);
    return 0;
}

int vmig_wire_ctl_check_crc(const uint8_t *frame, uint32_t payload_len, vmig_error *err)
{
    const char *name = vmig_wire_ctl_name(vmig_get_be16(frame));
    uint32_t hdr_len = vmig_get_be32(frame + 4);
    /* The crc range comes from the caller; it must be the one the header
     * (already checked by vmig_wire_ctl_decode_hdr) announced. */
    if (hdr_len != payload_len)
        return vmig_error_set(err, VMIG_EINVAL,
                              "control frame %s: payload_len %" PRIu32
                              " differs from the header's length %" PRIu32,
                              name, payload_len, hdr_len);
    size_t n = VMIG_CTL_HDR_LEN + (size_t)payload_len;
    uint32_t crc = vmig_get_be32(frame + n);
    uint32_t want = vmig_crc32c(0, frame, n);
    if (crc != want)
        return vmig_error_set(err, VMIG_EPROTO,
                              "control frame %s: crc 0x%08" PRIx32 " does not match 0x%08" PRIx32
                              " computed over the header and %" PRIu32 " payload bytes",
                              name, crc, want, payload_len);
    return 0;
}

/* ---- HELLO ---- */
/*
 *  0             4          6      7      8          12         16
 *  +-------------+----------+------+------+----------+----------+
 *  |packet_pages | channels |z_det |verify| features | nblocks  |
 *  +-------------+----------+------+------+----------+----------+
 *  then per block: name_len(2) name[name_len] length(8) page_size(4)
 *  then, with HELLO_F_DEVICES:
 *  +----------+-------+------------+-----------+
 *  | dev_path | rsv 0 | ndevices   | dev_chunk |   then per device:
 *  +----------+-------+------------+-----------+   id_len(2) id[id_len] instance(4)
 *      1         1        2            4
 */
enum { HELLO_FIXED = 16, HELLO_BLOCK_FIXED = 2 + 8 + 4, HELLO_DEV_FIXED = 8, HELLO_DEVICE = 2 + 4 };

static int hello_check_devfixed(uint8_t path, uint8_t rsv, uint32_t ndev, uint32_t chunk, int code,
                                vmig_error *err)
{
    if (path > VMIG_WIRE_DEV_CONTROL)
        return vmig_error_set(err, code, "HELLO: dev_path %u is not 0 (channels) or 1 (control)",
                              path);
    if (rsv)
        return vmig_error_set(err, code, "HELLO: the byte after dev_path is 0x%02x, must be 0",
                              rsv);
    if (ndev < 1 || ndev > VMIG_WIRE_MAX_DEVICES)
        return vmig_error_set(err, code, "HELLO: ndevices %" PRIu32 " is not in 1..%d", ndev,
                              VMIG_WIRE_MAX_DEVICES);
    if (chunk < VMIG_WIRE_MIN_DEV_CHUNK || chunk > VMIG_WIRE_MAX_DEV_CHUNK)
        return vmig_error_set(err, code, "HELLO: dev_chunk %" PRIu32 " is not in %u..%u", chunk,
                              VMIG_WIRE_MIN_DEV_CHUNK, VMIG_WIRE_MAX_DEV_CHUNK);
    return 0;
}

/* Index of an earlier device with the same id and instance, or i. */
static uint32_t hello_find_dup_dev(const vmig_wire_device *d, uint32_t i)
{
    for (uint32_t k = 0; k < i; k++)
        if (d[k].instance == d[i].instance && !strcmp(d[k].id, d[i].id))
            return k;
    return i;
}

static int hello_encode_devices(const vmig_wire_hello *h, uint8_t *out, size_t cap, size_t pos)
{
    if (!h->devices ||
        hello_check_devfixed(h->dev_path, 0, h->ndevices, h->dev_chunk, VMIG_EINVAL, NULL) ||
        cap - pos < HELLO_DEV_FIXED)
        return VMIG_EINVAL;
    out[pos] = h->dev_path;
    out[pos + 1] = 0;
    vmig_put_be16(out + pos + 2, (uint16_t)h->ndevices);
    vmig_put_be32(out + pos + 4, h->dev_chunk);
    pos += HELLO_DEV_FIXED;
    for (uint32_t i = 0; i < h->ndevices; i++) {
        const vmig_wire_device *d = &h->devices[i];
        size_t nl = strnlen(d->id, sizeof(d->id));
        if (nl < 1 || nl > VMIG_WIRE_MAX_NAME || hello_find_dup_dev(h->devices, i) != i ||
            cap - pos < HELLO_DEVICE + nl)
            return VMIG_EINVAL;
        vmig_put_be16(out + pos, (uint16_t)nl);
        memcpy(out + pos + 2, d->id, nl);
        vmig_put_be32(out + pos + 2 + nl, d->instance);
        pos += HELLO_DEVICE + nl;
    }
    return (int)pos;
}

/* The device list from in[pos..len); returns the position after it or a
 * negative code. */
static long hello_decode_devices(const uint8_t *in, size_t len, size_t pos, vmig_wire_hello *h,
                                 vmig_error *err)
{
    if (len - pos < HELLO_DEV_FIXED)
        return vmig_error_set(err, VMIG_EPROTO,
                              "HELLO: payload of %zu bytes is truncated: the device list needs "
                              "%d bytes from byte %zu",
                              len, HELLO_DEV_FIXED, pos);
    uint8_t path = in[pos];
    uint32_t ndev = vmig_get_be16(in + pos + 2), chunk = vmig_get_be32(in + pos + 4);
    int rc = hello_check_devfixed(path, in[pos + 1], ndev, chunk, VMIG_EPROTO, err);
    if (rc)
        return rc;
    if (!h->devices)
        return vmig_error_set(err, VMIG_EINVAL, "HELLO: no array for the devices");
    pos += HELLO_DEV_FIXED;
    for (uint32_t i = 0; i < ndev; i++) {
        if (len - pos < 2)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: payload of %zu bytes is truncated: device %" PRIu32
                                  " of %" PRIu32 " has no id_len",
                                  len, i, ndev);
        uint16_t nl = vmig_get_be16(in + pos);
        if (nl < 1 || nl > VMIG_WIRE_MAX_NAME)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: device %" PRIu32 ": id_len %u is not in 1..%d", i, nl,
                                  VMIG_WIRE_MAX_NAME);
        if (len - pos < HELLO_DEVICE + (size_t)nl)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: payload of %zu bytes is truncated inside device %" PRIu32,
                                  len, i);
        const uint8_t *id = in + pos + 2;
        const uint8_t *nul = memchr(id, 0, nl);
        if (nul)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: device %" PRIu32 ": id has a NUL at byte %zu of %u", i,
                                  (size_t)(nul - id), nl);
        vmig_wire_device *d = &h->devices[i];
        memcpy(d->id, id, nl);
        d->id[nl] = 0;
        d->instance = vmig_get_be32(id + nl);
        uint32_t k = hello_find_dup_dev(h->devices, i);
        if (k != i)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: device %" PRIu32 " '%s' instance %" PRIu32
                                  " repeats device %" PRIu32,
                                  i, d->id, d->instance, k);
        pos += HELLO_DEVICE + nl;
    }
    h->dev_path = path;
    h->dev_chunk = chunk;
    h->ndevices = ndev;
    return (long)pos;
}

static int hello_check_fixed(uint32_t packet_pages, uint16_t channels, uint8_t zero_detect,
                             uint8_t verify, uint32_t features, uint32_t nblocks,
                             uint32_t max_blocks, int code, vmig_error *err)
{
    if (packet_pages < 1)
        return vmig_error_set(err, code, "HELLO: packet_pages 0 is below the minimum 1");
    if (packet_pages > VMIG_WIRE_MAX_PACKET_PAGES)
        return vmig_error_set(err, code, "HELLO: packet_pages %" PRIu32 " exceeds the limit %u",
                              packet_pages, VMIG_WIRE_MAX_PACKET_PAGES);
    if (channels < 1)
        return vmig_error_set(err, code, "HELLO: channels 0 is below the minimum 1");
    if (channels > VMIG_WIRE_MAX_CHANNELS)
        return vmig_error_set(err, code, "HELLO: channels %u exceeds the limit %d", channels,
                              VMIG_WIRE_MAX_CHANNELS);
    if (zero_detect > 2)
        return vmig_error_set(err, code,
                              "HELLO: zero_detect %u is not 0 (none), 1 (main) or 2 (channel)",
                              zero_detect);
    if (verify > 2)
        return vmig_error_set(err, code, "HELLO: verify %u is not 0 (off), 1 (on) or 2 (full)",
                              verify);
    if (features & ~VMIG_HELLO_F_KNOWN)
        return vmig_error_set(err, code,
                              "HELLO: features 0x%08" PRIx32 " has unknown bits (known: 0x%08x)",
                              features, VMIG_HELLO_F_KNOWN);
    if (nblocks < 1)
        return vmig_error_set(err, code, "HELLO: nblocks 0 is below the minimum 1");
    if (nblocks > VMIG_WIRE_MAX_BLOCKS)
        return vmig_error_set(err, code, "HELLO: nblocks %" PRIu32 " exceeds the limit %d", nblocks,
                              VMIG_WIRE_MAX_BLOCKS);
    if (nblocks > max_blocks)
        return vmig_error_set(err, code,
                              "HELLO: nblocks %" PRIu32 " exceeds the room for %" PRIu32
                              " blocks given by the caller",
                              nblocks, max_blocks);
    return 0;
}

/* Length and page-size rules of block `i`, whose name is already valid. */
static int hello_check_block(uint32_t i, const char *name, uint64_t length, uint32_t page_size,
                             uint32_t packet_pages, int code, vmig_error *err)
{
    char what[VMIG_WIRE_MAX_NAME + 32];
    snprintf(what, sizeof(what), "HELLO: block %" PRIu32 " '%s'", i, name);
    int rc = check_page_size(page_size, code, err, what);
    if (rc)
        return rc;
    uint64_t bytes = (uint64_t)packet_pages * page_size;
    if (bytes > VMIG_WIRE_MAX_PAYLOAD)
        return vmig_error_set(err, code,
                              "%s: packet_pages %" PRIu32 " * page_size %" PRIu32 " = %" PRIu64
                              " payload bytes exceed the limit %u",
                              what, packet_pages, page_size, bytes, VMIG_WIRE_MAX_PAYLOAD);
    if (length == 0)
        return vmig_error_set(err, code, "%s: length 0, must be > 0", what);
    if (length > VMIG_WIRE_MAX_BLOCK_LEN)
        return vmig_error_set(err, code, "%s: length %" PRIu64 " exceeds the limit %llu", what,
                              length, VMIG_WIRE_MAX_BLOCK_LEN);
    if (length & (page_size - 1))
        return vmig_error_set(err, code,
                              "%s: length %" PRIu64 " is not a multiple of page_size %" PRIu32,
                              what, length, page_size);
    return 0;
}

/* Index of an earlier block with the same name, or i when it is new. */
static uint32_t hello_find_dup(const vmig_wire_block *blocks, uint32_t i, const char *name)
{
    for (uint32_t k = 0; k < i; k++)
        if (!strcmp(blocks[k].name, name))
            return k;
    return i;
}

int vmig_wire_hello_encode(const vmig_wire_hello *h, uint8_t *out, size_t cap)
{
    if (hello_check_fixed(h->packet_pages, h->channels, h->zero_detect, h->verify, h->features,
                          h->nblocks, VMIG_WIRE_MAX_BLOCKS, VMIG_EINVAL, NULL) ||
        !h->blocks || cap < HELLO_FIXED)
        return VMIG_EINVAL;
    vmig_put_be32(out, h->packet_pages);
    vmig_put_be16(out + 4, h->channels);
    out[6] = h->zero_detect;
    out[7] = h->verify;
    vmig_put_be32(out + 8, h->features);
    vmig_put_be32(out + 12, h->nblocks);
    size_t pos = HELLO_FIXED;
    for (uint32_t i = 0; i < h->nblocks; i++) {
        const vmig_wire_block *b = &h->blocks[i];
        size_t nl = strnlen(b->name, sizeof(b->name));
        if (nl < 1 || nl > VMIG_WIRE_MAX_NAME ||
            hello_check_block(i, b->name, b->length, b->page_size, h->packet_pages, VMIG_EINVAL,
                              NULL) ||
            hello_find_dup(h->blocks, i, b->name) != i)
            return VMIG_EINVAL;
        if (cap - pos < HELLO_BLOCK_FIXED + nl)
            return VMIG_EINVAL;
        vmig_put_be16(out + pos, (uint16_t)nl);
        memcpy(out + pos + 2, b->name, nl);
        vmig_put_be64(out + pos + 2 + nl, b->length);
        vmig_put_be32(out + pos + 10 + nl, b->page_size);
        pos += HELLO_BLOCK_FIXED + nl;
    }
    if (h->features & VMIG_HELLO_F_DEVICES)
        return hello_encode_devices(h, out, cap, pos);
    return (int)pos;
}

int vmig_wire_hello_decode(const uint8_t *in, size_t len, vmig_wire_hello *h, uint32_t max_blocks,
                           vmig_error *err)
{
    if (len < HELLO_FIXED)
        return vmig_error_set(err, VMIG_EPROTO,
                              "HELLO: payload of %zu bytes is shorter than its %d-byte fixed part",
                              len, HELLO_FIXED);
    uint32_t packet_pages = vmig_get_be32(in);
    uint16_t channels = vmig_get_be16(in + 4);
    uint8_t zero_detect = in[6], verify = in[7];
    uint32_t features = vmig_get_be32(in + 8);
    uint32_t nblocks = vmig_get_be32(in + 12);
    int rc = hello_check_fixed(packet_pages, channels, zero_detect, verify, features, nblocks,
                               max_blocks, VMIG_EPROTO, err);
    if (rc)
        return rc;
    if (!h->blocks)
        return vmig_error_set(err, VMIG_EINVAL, "HELLO: no array for the blocks");
    size_t pos = HELLO_FIXED;
    for (uint32_t i = 0; i < nblocks; i++) {
        if (len - pos < 2)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: payload of %zu bytes is truncated: block %" PRIu32
                                  " of %" PRIu32 " has no name_len",
                                  len, i, nblocks);
        uint16_t nl = vmig_get_be16(in + pos);
        if (nl < 1)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: block %" PRIu32 ": name_len 0 is below the minimum 1", i);
        if (nl > VMIG_WIRE_MAX_NAME)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: block %" PRIu32 ": name_len %u exceeds the limit %d", i,
                                  nl, VMIG_WIRE_MAX_NAME);
        if (len - pos < HELLO_BLOCK_FIXED + (size_t)nl)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: payload of %zu bytes is truncated inside block %" PRIu32
                                  " (its entry needs bytes %zu..%zu)",
                                  len, i, pos, pos + HELLO_BLOCK_FIXED + nl - 1);
        const uint8_t *name = in + pos + 2;
        const uint8_t *nul = memchr(name, 0, nl);
        if (nul)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: block %" PRIu32 ": name has a NUL at byte %zu of %u", i,
                                  (size_t)(nul - name), nl);
        vmig_wire_block *b = &h->blocks[i];
        memcpy(b->name, name, nl);
        b->name[nl] = 0;
        b->length = vmig_get_be64(name + nl);
        b->page_size = vmig_get_be32(name + nl + 8);
        uint32_t k = hello_find_dup(h->blocks, i, b->name);
        if (k != i)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "HELLO: block %" PRIu32 ": name '%s' repeats block %" PRIu32, i,
                                  b->name, k);
        rc = hello_check_block(i, b->name, b->length, b->page_size, packet_pages, VMIG_EPROTO, err);
        if (rc)
            return rc;
        pos += HELLO_BLOCK_FIXED + nl;
    }
    h->ndevices = 0;
    if (features & VMIG_HELLO_F_DEVICES) {
        long end = hello_decode_devices(in, len, pos, h, err);
        if (end < 0)
            return (int)end;
        pos = (size_t)end;
    }
    if (pos != len)
        return vmig_error_set(err, VMIG_EPROTO,
                              "HELLO: payload of %zu bytes has %zu bytes after the last %s "
                              "(which ends at byte %zu)",
                              len, len - pos, features & VMIG_HELLO_F_DEVICES ? "device" : "block",
                              pos);
    h->packet_pages = packet_pages;
    h->channels = channels;
    h->zero_detect = zero_detect;
    h->verify = verify;
    h->features = features;
    h->nblocks = nblocks;
    return 0;
}

/* ---- DEVCHUNK ---- */

void vmig_wire_devchunk_encode_hdr(const vmig_wire_devchunk *c, uint8_t out[VMIG_DEVCHUNK_HDR_LEN])
{
    vmig_put_be16(out, c->device);
    vmig_put_be16(out + 2, c->last ? VMIG_DEVCHUNK_F_LAST : 0);
    vmig_put_be32(out + 4, c->chunk);
}

int vmig_wire_devchunk_decode(const uint8_t *in, size_t len, uint32_t ndevices, uint32_t chunk_max,
                              vmig_wire_devchunk *c, vmig_error *err)
{
    if (len < VMIG_DEVCHUNK_HDR_LEN)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEVCHUNK: payload of %zu bytes is shorter than its %d-byte header",
                              len, VMIG_DEVCHUNK_HDR_LEN);
    uint16_t dev = vmig_get_be16(in), flags = vmig_get_be16(in + 2);
    uint32_t chunk = vmig_get_be32(in + 4);
    size_t n = len - VMIG_DEVCHUNK_HDR_LEN;
    if (dev >= ndevices)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEVCHUNK: device %u, but HELLO announced %" PRIu32 " device(s)", dev,
                              ndevices);
    if (flags & ~VMIG_DEVCHUNK_F_LAST)
        return vmig_error_set(err, VMIG_EPROTO, "DEVCHUNK: flags 0x%04x has unknown bits", flags);
    if (chunk >= VMIG_WIRE_MAX_DEV_CHUNKS)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEVCHUNK: chunk %" PRIu32 " is beyond the limit %u", chunk,
                              VMIG_WIRE_MAX_DEV_CHUNKS - 1);
    if (n > chunk_max)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEVCHUNK: chunk %" PRIu32 " of device %u has %zu bytes, more than "
                              "the %" PRIu32 " announced in HELLO",
                              chunk, dev, n, chunk_max);
    if (n == 0 && !(flags & VMIG_DEVCHUNK_F_LAST))
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEVCHUNK: an empty chunk (%" PRIu32 ") that is not the last", chunk);
    c->device = dev;
    c->last = flags & VMIG_DEVCHUNK_F_LAST;
    c->chunk = chunk;
    c->data = in + VMIG_DEVCHUNK_HDR_LEN;
    c->len = (uint32_t)n;
    return 0;
}

/* ---- END ---- */
/*
 *  0         4                  4+16n     12+16n         20+16n       28+16n
 *  +---------+------------------+---------+--------------+------------+
 *  | nblocks | digest[n][16]    | packets | normal_pages | zero_pages |
 *  +---------+------------------+---------+--------------+------------+
 */
static size_t end_len(uint32_t nblocks)
{
    return 4 + 16 * (size_t)nblocks + 24;
}

int vmig_wire_end_encode(const vmig_wire_end *e, uint8_t *out, size_t cap)
{
    if (e->nblocks < 1 || e->nblocks > VMIG_WIRE_MAX_BLOCKS || !e->digests ||
        cap < end_len(e->nblocks))
        return VMIG_EINVAL;
    vmig_put_be32(out, e->nblocks);
    memcpy(out + 4, e->digests, 16 * (size_t)e->nblocks);
    uint8_t *p = out + 4 + 16 * (size_t)e->nblocks;
    vmig_put_be64(p, e->packets);
    vmig_put_be64(p + 8, e->normal_pages);
    vmig_put_be64(p + 16, e->zero_pages);
    return (int)end_len(e->nblocks);
}

int vmig_wire_end_decode(const uint8_t *in, size_t len, vmig_wire_end *e, uint32_t expect_blocks,
                         vmig_error *err)
{
    if (expect_blocks < 1 || expect_blocks > VMIG_WIRE_MAX_BLOCKS || !e->digests)
        return vmig_error_set(err, VMIG_EINVAL,
                              "END: expected block count %" PRIu32 " is not in 1..%d, or no "
                              "array for the digests",
                              expect_blocks, VMIG_WIRE_MAX_BLOCKS);
    if (len < 4)
        return vmig_error_set(err, VMIG_EPROTO,
                              "END: payload of %zu bytes is shorter than its nblocks field", len);
    uint32_t n = vmig_get_be32(in);
    if (n != expect_blocks)
        return vmig_error_set(err, VMIG_EPROTO,
                              "END: nblocks %" PRIu32 " differs from HELLO's %" PRIu32, n,
                              expect_blocks);
    size_t want = end_len(n);
    if (len != want)
        return vmig_error_set(err, VMIG_EPROTO,
                              "END: payload of %zu bytes is %s: %" PRIu32
                              " blocks make exactly %zu bytes",
                              len, len < want ? "truncated" : "overlong", n, want);
    memcpy(e->digests, in + 4, 16 * (size_t)n);
    const uint8_t *p = in + 4 + 16 * (size_t)n;
    e->nblocks = n;
    e->packets = vmig_get_be64(p);
    e->normal_pages = vmig_get_be64(p + 8);
    e->zero_pages = vmig_get_be64(p + 16);
    return 0;
}

/* ---- CKPT and ACK ---- */
/*  id(8) pass(4), then END's payload */

int vmig_wire_ckpt_encode(const vmig_wire_ckpt *c, uint8_t *out, size_t cap)
{
    if (cap < VMIG_CKPT_FIXED || c->pass == 0)
        return VMIG_EINVAL;
    int n = vmig_wire_end_encode(&c->end, out + VMIG_CKPT_FIXED, cap - VMIG_CKPT_FIXED);
    if (n < 0)
        return n;
    vmig_put_be64(out, c->id);
    vmig_put_be32(out + 8, c->pass);
    return n + VMIG_CKPT_FIXED;
}

int vmig_wire_ckpt_decode(const uint8_t *in, size_t len, vmig_wire_ckpt *c, uint32_t expect_blocks,
                          vmig_error *err)
{
    if (len < VMIG_CKPT_FIXED)
        return vmig_error_set(err, VMIG_EPROTO,
                              "CKPT: payload of %zu bytes is shorter than its %d fixed bytes", len,
                              VMIG_CKPT_FIXED);
    uint64_t id = vmig_get_be64(in);
    uint32_t pass = vmig_get_be32(in + 8);
    if (pass == 0)
        return vmig_error_set(err, VMIG_EPROTO, "CKPT %" PRIu64 ": pass 0 (passes start at 1)", id);
    vmig_error e = {0};
    int rc = vmig_wire_end_decode(in + VMIG_CKPT_FIXED, len - VMIG_CKPT_FIXED, &c->end,
                                  expect_blocks, &e);
    if (rc)
        return vmig_error_set(err, rc, "CKPT %" PRIu64 ": %s", id, e.msg);
    c->id = id;
    c->pass = pass;
    return 0;
}

void vmig_wire_ack_encode(uint64_t id, uint8_t out[VMIG_ACK_LEN])
{
    vmig_put_be64(out, id);
}

int vmig_wire_ack_decode(const uint8_t *in, size_t len, uint64_t *id, vmig_error *err)
{
    if (len != VMIG_ACK_LEN)
        return vmig_error_set(err, VMIG_EPROTO, "ACK: payload of %zu bytes, expected %d", len,
                              VMIG_ACK_LEN);
    *id = vmig_get_be64(in);
    return 0;
}

/* ---- RESULT and ERROR ---- */
/*  status(4, signed) msg_len(2) msg[msg_len] */
enum { STATUS_FIXED = 6 };

int vmig_wire_status_encode(int32_t status, const char *msg, uint8_t *out, size_t cap)
{
    if (!msg)
        msg = "";
    size_t n = strnlen(msg, VMIG_WIRE_MAX_MSG + 1);
    if (status > 0 || n > VMIG_WIRE_MAX_MSG || cap < STATUS_FIXED + n)
        return VMIG_EINVAL;
    vmig_put_be32(out, (uint32_t)status);
    vmig_put_be16(out + 4, (uint16_t)n);
    memcpy(out + STATUS_FIXED, msg, n);
    return (int)(STATUS_FIXED + n);
}

int vmig_wire_status_decode(const uint8_t *in, size_t len, bool is_error, vmig_wire_status *st,
                            vmig_error *err)
{
    const char *what = is_error ? "ERROR" : "RESULT";
    if (len < STATUS_FIXED)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s: payload of %zu bytes is shorter than its %d-byte fixed part "
                              "(status, msg_len)",
                              what, len, STATUS_FIXED);
    int32_t status = (int32_t)vmig_get_be32(in);
    if (is_error && status >= 0)
        return vmig_error_set(err, VMIG_EPROTO, "ERROR: status %" PRId32 " must be negative",
                              status);
    if (!is_error && status > 0)
        return vmig_error_set(err, VMIG_EPROTO, "RESULT: status %" PRId32 " must be 0 or negative",
                              status);
    uint16_t n = vmig_get_be16(in + 4);
    if (n > VMIG_WIRE_MAX_MSG)
        return vmig_error_set(err, VMIG_EPROTO, "%s: msg_len %u exceeds the limit %d", what, n,
                              VMIG_WIRE_MAX_MSG);
    if (len != STATUS_FIXED + (size_t)n)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s: payload of %zu bytes is %s: msg_len %u makes exactly %zu bytes",
                              what, len, len < STATUS_FIXED + (size_t)n ? "truncated" : "overlong",
                              n, STATUS_FIXED + (size_t)n);
    const uint8_t *nul = memchr(in + STATUS_FIXED, 0, n);
    if (nul)
        return vmig_error_set(err, VMIG_EPROTO, "%s: msg has a NUL at byte %zu of %u", what,
                              (size_t)(nul - (in + STATUS_FIXED)), n);
    st->status = status;
    memcpy(st->msg, in + STATUS_FIXED, n);
    st->msg[n] = 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* data packets (the header map is in docs/wire-format.md)            */

enum {
    PKT_CRC_OFF = 36,
    PKT_NAME_OFF = 40,
    PKT_RESERVED_OFF = 296,
    PKT_RESERVED_LEN = 8,
};

static const char *pkt_type_name(unsigned type)
{
    switch (type) {
    case VMIG_PKT_RAM:
        return "RAM";
    case VMIG_PKT_SYNC:
        return "SYNC";
    case VMIG_PKT_FIN:
        return "FIN";
    case VMIG_PKT_DEV:
        return "DEV";
    }
    return "unknown";
}

/* CRC32C of the header with hdr_crc read as 0, continued over the offsets. */
static uint32_t pkt_crc(const uint8_t *hdr, const uint8_t *offs, size_t n)
{
    uint32_t c = vmig_crc32c(0, hdr, PKT_CRC_OFF);
    c = vmig_crc32c(c, zero4, 4);
    c = vmig_crc32c(c, hdr + PKT_NAME_OFF, VMIG_PKT_HDR_LEN - PKT_NAME_OFF);
    if (n)
        c = vmig_crc32c(c, offs, 8 * n);
    return c;
}

size_t vmig_wire_pkt_encode(const vmig_pkt_hdr *h, const uint64_t *offsets, uint8_t *out)
{
    size_t n = (size_t)h->normal + h->zero;
    /* A RAM packet without a codec carries its pages as they are. */
    uint32_t payload_len = h->type == VMIG_PKT_RAM && vmig_pkt_codec(h) == VMIG_CODEC_NONE
                               ? (uint32_t)((uint64_t)h->normal * h->page_size)
                               : h->payload_len;
    memset(out, 0, VMIG_PKT_HDR_LEN);
    vmig_put_be32(out, VMIG_PKT_MAGIC);
    out[4] = VMIG_WIRE_VERSION;
    out[5] = h->type;
    vmig_put_be16(out + 6, h->flags);
    vmig_put_be64(out + 8, h->seq);
    vmig_put_be32(out + 16, h->pass);
    bool dev = h->type == VMIG_PKT_DEV;
    vmig_put_be32(out + 20, dev ? h->instance : h->page_size);
    vmig_put_be32(out + 24, dev ? h->chunk : h->normal);
    vmig_put_be32(out + 28, dev ? 0 : h->zero);
    vmig_put_be32(out + 32, payload_len);
    if (dev) {
        vmig_put_be32(out + PKT_RESERVED_OFF, h->payload_crc);
        n = 0;
    }
    memcpy(out + PKT_NAME_OFF, h->block, strnlen(h->block, VMIG_WIRE_MAX_NAME));
    uint8_t *o = out + VMIG_PKT_HDR_LEN;
    for (size_t i = 0; i < n; i++)
        vmig_put_be64(o + 8 * i, offsets[i]);
    vmig_put_be32(out + PKT_CRC_OFF, pkt_crc(out, o, n));
    return VMIG_PKT_HDR_LEN + 8 * n;
}

/* The name field of RAM (block) and DEV (device id) packets: 1..255 bytes,
 * NUL-terminated, NUL-padded. */
static int check_pkt_name(const uint8_t *in, const char *what, const char *field, vmig_error *err)
{
    const uint8_t *name = in + PKT_NAME_OFF;
    const uint8_t *nul = memchr(name, 0, VMIG_PKT_NAME_LEN);
    if (!nul)
        return vmig_error_set(err, VMIG_EPROTO, "%s: %s has no NUL within its %d bytes", what,
                              field, VMIG_PKT_NAME_LEN);
    if (nul == name)
        return vmig_error_set(err, VMIG_EPROTO, "%s: %s is empty", what, field);
    size_t end = (size_t)(nul - name);
    size_t pad = end + first_nonzero(nul, VMIG_PKT_NAME_LEN - end);
    if (pad < VMIG_PKT_NAME_LEN)
        return vmig_error_set(err, VMIG_EPROTO, "%s: %s padding byte %zu is 0x%02x, must be 0",
                              what, field, pad, name[pad]);
    return 0;
}

/* DEV: page_size holds the instance, normal the chunk index; zero 0. */
static int pkt_decode_dev(const uint8_t *in, uint16_t flags, uint32_t chunk, uint32_t zero,
                          uint32_t payload_len, vmig_error *err)
{
    if (chunk >= VMIG_WIRE_MAX_DEV_CHUNKS)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet: chunk %" PRIu32 " is beyond the limit %u", chunk,
                              VMIG_WIRE_MAX_DEV_CHUNKS - 1);
    if (zero)
        return vmig_error_set(err, VMIG_EPROTO, "DEV packet: zero %" PRIu32 " must be 0", zero);
    if (payload_len > VMIG_WIRE_MAX_PAYLOAD)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet: payload_len %" PRIu32 " exceeds the limit %u",
                              payload_len, VMIG_WIRE_MAX_PAYLOAD);
    if (payload_len == 0 && !(flags & VMIG_PKT_F_LAST))
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet: an empty chunk (%" PRIu32 ") that is not the last",
                              chunk);
    return check_pkt_name(in, "DEV packet", "device id", err);
}

static int pkt_decode_ram(const uint8_t *in, uint32_t codec, uint32_t page_size, uint32_t normal,
                          uint32_t zero, uint32_t payload_len, uint32_t max_pages, vmig_error *err)
{
    int rc = check_page_size(page_size, VMIG_EPROTO, err, "RAM packet");
    if (rc)
        return rc;
    uint64_t pages = (uint64_t)normal + zero;
    if (pages < 1)
        return vmig_error_set(err, VMIG_EPROTO,
                              "RAM packet: normal+zero pages 0 is below the "
                              "minimum 1");
    if (pages > max_pages)
        return vmig_error_set(err, VMIG_EPROTO,
                              "RAM packet: normal+zero pages %" PRIu64 " exceed the limit %" PRIu32,
                              pages, max_pages);
    uint64_t bytes = (uint64_t)normal * page_size;
    if (bytes > VMIG_WIRE_MAX_PAYLOAD)
        return vmig_error_set(err, VMIG_EPROTO,
                              "RAM packet: normal %" PRIu32 " * page_size %" PRIu32 " = %" PRIu64
                              " payload bytes exceed the limit %u",
                              normal, page_size, bytes, VMIG_WIRE_MAX_PAYLOAD);
    if (codec == VMIG_CODEC_NONE) {
        if (payload_len != bytes)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "RAM packet: payload_len %" PRIu32 " is not normal %" PRIu32
                                  " * page_size %" PRIu32 " = %" PRIu64,
                                  payload_len, normal, page_size, bytes);
    } else {
        if (normal < 1)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "RAM packet: codec %s with normal 0 (only pages with data are "
                                  "compressed)",
                                  vmig_codec_name(codec));
        if (payload_len < 1 || payload_len > vmig_wire_codec_bound(bytes))
            return vmig_error_set(
                err, VMIG_EPROTO,
                "RAM packet: codec %s: payload_len %" PRIu32 " is not in 1..%" PRIu64
                " (the bound for %" PRIu64 " bytes of pages)",
                vmig_codec_name(codec), payload_len, vmig_wire_codec_bound(bytes), bytes);
    }
    return check_pkt_name(in, "RAM packet", "block name", err);
}

static int pkt_decode_marker(const uint8_t *in, const char *what, uint32_t page_size,
                             uint32_t normal, uint32_t zero, uint32_t payload_len, vmig_error *err)
{
    if (page_size)
        return vmig_error_set(err, VMIG_EPROTO, "%s packet: page_size %" PRIu32 " must be 0", what,
                              page_size);
    if (normal)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet: normal %" PRIu32 " must be 0 (it carries no pages)", what,
                              normal);
    if (zero)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet: zero %" PRIu32 " must be 0 (it carries no pages)", what,
                              zero);
    if (payload_len)
        return vmig_error_set(err, VMIG_EPROTO, "%s packet: payload_len %" PRIu32 " must be 0",
                              what, payload_len);
    size_t b = first_nonzero(in + PKT_NAME_OFF, VMIG_PKT_NAME_LEN);
    if (b < VMIG_PKT_NAME_LEN)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet: block byte %zu is 0x%02x, must be 0 (it names no block)",
                              what, b, in[PKT_NAME_OFF + b]);
    return 0;
}

int vmig_wire_pkt_decode_hdr(const uint8_t in[VMIG_PKT_HDR_LEN], vmig_pkt_hdr *h,
                             uint32_t max_pages, vmig_error *err)
{
    if (max_pages < 1)
        return vmig_error_set(err, VMIG_EINVAL, "packet: page limit 0 given by the caller");
    if (max_pages > VMIG_WIRE_MAX_PACKET_PAGES)
        max_pages = VMIG_WIRE_MAX_PACKET_PAGES;
    uint32_t magic = vmig_get_be32(in);
    if (magic != VMIG_PKT_MAGIC)
        return vmig_error_set(err, VMIG_EPROTO,
                              "packet: magic 0x%08" PRIx32 " is not 0x%08x (\"VMPG\")", magic,
                              VMIG_PKT_MAGIC);
    if (in[4] != VMIG_WIRE_VERSION)
        return vmig_error_set(err, VMIG_EPROTO,
                              "packet: version %u is not supported (this side speaks %d)", in[4],
                              VMIG_WIRE_VERSION);
    uint8_t type = in[5];
    if (type < VMIG_PKT_RAM || type > VMIG_PKT_DEV)
        return vmig_error_set(err, VMIG_EPROTO,
                              "packet: type %u is not 1 (RAM), 2 (SYNC), 3 (FIN) or 4 (DEV)", type);
    const char *what = pkt_type_name(type);
    uint16_t flags = vmig_get_be16(in + 6);
    uint32_t codec = flags & VMIG_PKT_F_CODEC_MASK;
    uint16_t allowed = type == VMIG_PKT_DEV ? VMIG_PKT_F_LAST : VMIG_PKT_F_CODEC_MASK;
    if (flags & ~allowed)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet: flags 0x%04x has bits outside 0x%04x set", what, flags,
                              allowed);
    if (type != VMIG_PKT_RAM && codec)
        return vmig_error_set(err, VMIG_EPROTO, "%s packet: codec %" PRIu32 " must be 0", what,
                              codec);
    if (codec >= VMIG_CODEC_COUNT)
        return vmig_error_set(err, VMIG_EPROTO,
                              "RAM packet: codec %" PRIu32 " is not a codec id (0..%d)", codec,
                              VMIG_CODEC_COUNT - 1);
    /* DEV: the first 4 reserved bytes hold the payload's CRC32C. */
    size_t r0 = type == VMIG_PKT_DEV ? 4 : 0;
    size_t r = r0 + first_nonzero(in + PKT_RESERVED_OFF + r0, PKT_RESERVED_LEN - r0);
    if (r < PKT_RESERVED_LEN)
        return vmig_error_set(err, VMIG_EPROTO, "%s packet: reserved byte %zu is 0x%02x, must be 0",
                              what, PKT_RESERVED_OFF + r, in[PKT_RESERVED_OFF + r]);
    uint64_t seq = vmig_get_be64(in + 8);
    if (seq < 1)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet: seq 0 is below the minimum 1 (sequence numbers start "
                              "at 1)",
                              what);
    uint32_t pass = vmig_get_be32(in + 16);
    if (pass < 1)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet %" PRIu64 ": pass 0 is below the "
                              "minimum 1",
                              what, seq);
    uint32_t page_size = vmig_get_be32(in + 20);
    uint32_t normal = vmig_get_be32(in + 24);
    uint32_t zero = vmig_get_be32(in + 28);
    uint32_t payload_len = vmig_get_be32(in + 32);
    int rc = type == VMIG_PKT_RAM
                 ? pkt_decode_ram(in, codec, page_size, normal, zero, payload_len, max_pages, err)
             : type == VMIG_PKT_DEV
                 ? pkt_decode_dev(in, flags, normal, zero, payload_len, err)
                 : pkt_decode_marker(in, what, page_size, normal, zero, payload_len, err);
    if (rc)
        return rc;
    memset(h, 0, sizeof(*h));
    if (type == VMIG_PKT_DEV) {
        h->instance = page_size;
        h->chunk = normal;
        h->payload_crc = vmig_get_be32(in + PKT_RESERVED_OFF);
        page_size = normal = 0;
    }
    h->type = type;
    h->flags = flags;
    h->seq = seq;
    h->pass = pass;
    h->page_size = page_size;
    h->normal = normal;
    h->zero = zero;
    h->payload_len = payload_len;
    h->hdr_crc = vmig_get_be32(in + PKT_CRC_OFF);
    /* RAM: NUL-terminated and NUL-padded (checked); markers: all zero. */
    memcpy(h->block, in + PKT_NAME_OFF, VMIG_PKT_NAME_LEN);
    return 0;
}

int vmig_wire_pkt_check_dev(const vmig_pkt_hdr *h, const uint8_t hdr_raw[VMIG_PKT_HDR_LEN],
                            const uint8_t *payload, vmig_error *err)
{
    if (h->type != VMIG_PKT_DEV || (h->payload_len && !payload))
        return vmig_error_set(err, VMIG_EINVAL, "vmig_wire_pkt_check_dev: not a DEV packet");
    uint32_t crc = vmig_get_be32(hdr_raw + PKT_CRC_OFF), want = pkt_crc(hdr_raw, NULL, 0);
    if (crc != want)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet %" PRIu64 ": hdr_crc 0x%08" PRIx32
                              " does not match 0x%08" PRIx32 " computed over the header",
                              h->seq, crc, want);
    uint32_t pc = h->payload_len ? vmig_crc32c(0, payload, h->payload_len) : 0;
    if (pc != h->payload_crc)
        return vmig_error_set(err, VMIG_EPROTO,
                              "DEV packet %" PRIu64 " (device '%.*s' instance %" PRIu32
                              ", chunk %" PRIu32 "): payload crc 0x%08" PRIx32
                              " does not match 0x%08" PRIx32 " computed over its %" PRIu32 " bytes",
                              h->seq, VMIG_PKT_NAME_LEN - 1, h->block, h->instance, h->chunk,
                              h->payload_crc, pc, h->payload_len);
    return 0;
}

int vmig_wire_pkt_decode_offsets(const vmig_pkt_hdr *h, const uint8_t hdr_raw[VMIG_PKT_HDR_LEN],
                                 const uint8_t *offs_raw, uint64_t block_len, uint64_t *offsets,
                                 vmig_error *err)
{
    const char *what = pkt_type_name(h->type);
    size_t n = (size_t)h->normal + h->zero;
    /* These hold for any header vmig_wire_pkt_decode_hdr() accepted. */
    if (n > VMIG_WIRE_MAX_PACKET_PAGES || (n && !vmig_is_pow2(h->page_size)))
        return vmig_error_set(err, VMIG_EINVAL,
                              "%s packet %" PRIu64 ": offsets asked for a header that was not "
                              "decoded (%zu pages of %" PRIu32 " bytes)",
                              what, h->seq, n, h->page_size);
    if (n && (!offs_raw || !offsets))
        return vmig_error_set(err, VMIG_EINVAL,
                              "%s packet %" PRIu64 ": no buffer for its %zu offsets", what, h->seq,
                              n);
    uint32_t crc = vmig_get_be32(hdr_raw + PKT_CRC_OFF);
    uint32_t want = pkt_crc(hdr_raw, offs_raw, n);
    if (crc != want)
        return vmig_error_set(err, VMIG_EPROTO,
                              "%s packet %" PRIu64 ": hdr_crc 0x%08" PRIx32
                              " does not match 0x%08" PRIx32 " computed over the header and %zu "
                              "offsets",
                              what, h->seq, crc, want, n);
    uint64_t ps = h->page_size;
    for (size_t i = 0; i < n; i++) {
        uint64_t off = vmig_get_be64(offs_raw + 8 * i);
        if (off & (ps - 1))
            return vmig_error_set(err, VMIG_EPROTO,
                                  "RAM packet %" PRIu64 ": offset[%zu] 0x%" PRIx64
                                  " is not a multiple of page_size %" PRIu64,
                                  h->seq, i, off, ps);
        if (block_len < ps || off > block_len - ps)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "RAM packet %" PRIu64 ": offset[%zu] 0x%" PRIx64
                                  " beyond block '%.*s' (length 0x%" PRIx64 ", page_size %" PRIu64
                                  ")",
                                  h->seq, i, off, VMIG_PKT_NAME_LEN - 1, h->block, block_len, ps);
        offsets[i] = off;
    }
    return 0;
}

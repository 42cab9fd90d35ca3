/*
 * Encoding and decoding of every vmig message (docs/wire-format.md).
 *
 * Pure code: buffers in, buffers out. No I/O, no threads, no allocation.
 * Decoders treat their input as hostile: every field is checked and a
 * failure returns VMIG_EPROTO with a sentence naming the field and value.
 */
#ifndef VMIG_WIRE_H
#define VMIG_WIRE_H

#include "../base/base.h"

#define VMIG_WIRE_VERSION 1
#define VMIG_HS_MAGIC     0x564D4947u /* "VMIG" */
#define VMIG_PKT_MAGIC    0x564D5047u /* "VMPG" */

#define VMIG_WIRE_MAX_CHANNELS     64
#define VMIG_WIRE_MAX_BLOCKS       1024
#define VMIG_WIRE_MAX_NAME         255
#define VMIG_WIRE_MIN_PAGE_SIZE    4096u
#define VMIG_WIRE_MAX_PAGE_SIZE    (2u << 20)
#define VMIG_WIRE_MAX_PACKET_PAGES 1024u
#define VMIG_WIRE_MAX_PAYLOAD      (64u << 20)
#define VMIG_WIRE_MAX_BLOCK_LEN    (1ull << 48)
#define VMIG_WIRE_MAX_CTL_PAYLOAD  (1u << 20)
#define VMIG_WIRE_MAX_MSG          1024

/* Most payload bytes of a compressed RAM packet whose pages hold `raw` bytes:
 * every codec's worst case fits (docs/wire-format.md). */
static inline uint64_t vmig_wire_codec_bound(uint64_t raw)
{
    return raw + raw / 8 + 1024;
}

/* ---------------- handshake ---------------- */

#define VMIG_HS_LEN 40

enum vmig_ch_kind { VMIG_CH_CONTROL = 0, VMIG_CH_DATA = 1 };

/* Handshake flags. RESUME: a data channel connecting again after its
 * connection broke, in a session whose HELLO has VMIG_HELLO_F_RESUME. */
#define VMIG_HS_F_RESUME 0x01u

typedef struct vmig_wire_hs {
    uint8_t kind;  /* enum vmig_ch_kind */
    uint8_t flags; /* VMIG_HS_F_*, data channels only */
    uint8_t uuid[16];
    uint16_t channel_id;
    uint16_t channel_count;
} vmig_wire_hs;

void vmig_wire_hs_encode(const vmig_wire_hs *h, uint8_t out[VMIG_HS_LEN]);
/*
 * Syntax and self-consistency: magic, version, kind, flags, reserved, crc,
 * count in 1..64, id < count, control id == 0.
 */
int vmig_wire_hs_decode(const uint8_t in[VMIG_HS_LEN], vmig_wire_hs *h, vmig_error *err);

/* ---------------- acknowledgements (resume=on) ---------------- */

/* Destination to source on a data channel: every packet of this channel
 * up to and including sequence `seq` has landed. 16 bytes: magic "VMAK",
 * seq, crc32c of bytes 0..11. Sent after every VMIG_CHACK_EVERY packets,
 * after SYNC and FIN, and first thing on a resumed connection. */
#define VMIG_CHACK_LEN   16
#define VMIG_CHACK_MAGIC 0x564D414Bu /* "VMAK" */
#define VMIG_CHACK_EVERY 8
void vmig_wire_chack_encode(uint64_t seq, uint8_t out[VMIG_CHACK_LEN]);
/* Magic and crc; the caller checks seq against what it sent. */
int vmig_wire_chack_decode(const uint8_t in[VMIG_CHACK_LEN], uint64_t *seq, vmig_error *err);

/* ---------------- control frames ---------------- */

#define VMIG_CTL_HDR_LEN     8
#define VMIG_CTL_TRAILER_LEN 4

enum vmig_ctl_type {
    VMIG_CTL_HELLO = 1,
    VMIG_CTL_READY = 2,
    VMIG_CTL_END = 3,
    VMIG_CTL_RESULT = 4,
    VMIG_CTL_ERROR = 5,
    VMIG_CTL_DEVSTATE = 6,   /* source: the device state blob, after FIN, before END */
    VMIG_CTL_COMMIT = 7,     /* source: RESULT ok was received; the destination may run */
    VMIG_CTL_DEVCHUNK = 8,   /* source: one chunk of a device's state (devstate-path=control) */
    VMIG_CTL_CKPT = 9,       /* primary: checkpoint N is all sent (its pass, digests, counts) */
    VMIG_CTL_ACK = 10,       /* secondary: checkpoint N is committed */
    VMIG_CTL_HEARTBEAT = 11, /* either side of continuous checkpoints: still here */
};
#define VMIG_CTL_TYPE_MAX VMIG_CTL_HEARTBEAT

/* HELLO feature bits. */
#define VMIG_HELLO_F_DEVSTATE 0x1u /* a DEVSTATE frame comes before END */
#define VMIG_HELLO_F_DEVICES  0x2u /* a device list follows the blocks */
#define VMIG_HELLO_F_COLO     0x4u /* continuous checkpoints: no FIN, CKPT frames follow */
#define VMIG_HELLO_F_RESUME   0x8u /* resume=on: data channels acknowledge and reconnect */
#define VMIG_HELLO_F_KNOWN                                                                         \
    (VMIG_HELLO_F_DEVSTATE | VMIG_HELLO_F_DEVICES | VMIG_HELLO_F_COLO | VMIG_HELLO_F_RESUME)

/* Devices (HELLO_F_DEVICES): how many, and the chunk size limits. */
#define VMIG_WIRE_MAX_DEVICES   256
#define VMIG_WIRE_MIN_DEV_CHUNK 4096u
#define VMIG_WIRE_MAX_DEV_CHUNK (16u << 20)
/* Where the chunks travel (HELLO dev_path). */
enum vmig_wire_dev_path { VMIG_WIRE_DEV_CHANNELS = 0, VMIG_WIRE_DEV_CONTROL = 1 };

/* Name of a control type for messages ("HELLO"); "unknown" otherwise. */
const char *vmig_wire_ctl_name(unsigned type);

/*
 * Frame a payload that the caller already wrote at out + VMIG_CTL_HDR_LEN:
 * fills the 8-byte header and appends the crc. Returns the frame length
 * (payload_len + 12). `out` must have room for payload_len + 12 bytes.
 */
size_t vmig_wire_ctl_frame(uint8_t *out, unsigned type, uint32_t payload_len);

/* Decode a control header: type known, flags 0, length <= MAX_CTL_PAYLOAD,
 * READY 4 bytes, COMMIT empty. */
int vmig_wire_ctl_decode_hdr(const uint8_t in[VMIG_CTL_HDR_LEN], unsigned *type,
                             uint32_t *payload_len, vmig_error *err);
/* Check the crc trailer of a whole frame (header + payload + crc). */
int vmig_wire_ctl_check_crc(const uint8_t *frame, uint32_t payload_len, vmig_error *err);

/* READY payload: the codecs the destination decodes, bit (1 << enum
 * vmig_codec); bit 0 (none) must be set; bits of unknown codecs are dropped. */
#define VMIG_READY_LEN 4
void vmig_wire_ready_encode(uint32_t codecs, uint8_t out[VMIG_READY_LEN]);
int vmig_wire_ready_decode(const uint8_t *in, size_t len, uint32_t *codecs, vmig_error *err);

typedef struct vmig_wire_block {
    char name[VMIG_WIRE_MAX_NAME + 1]; /* NUL-terminated */
    uint64_t length;
    uint32_t page_size;
} vmig_wire_block;

typedef struct vmig_wire_device {
    char id[VMIG_WIRE_MAX_NAME + 1]; /* NUL-terminated, 1..255 bytes */
    uint32_t instance;
} vmig_wire_device;

typedef struct vmig_wire_hello {
    uint32_t packet_pages;
    uint16_t channels;
    uint8_t zero_detect;
    uint8_t verify;
    uint32_t features; /* VMIG_HELLO_F_* */
    uint32_t nblocks;
    vmig_wire_block *blocks; /* caller-provided array */
    /* HELLO_F_DEVICES only: where chunks travel (enum vmig_wire_dev_path),
     * the largest chunk payload, and the devices, (id, instance) unique. */
    uint8_t dev_path;
    uint32_t dev_chunk;
    uint32_t ndevices;
    vmig_wire_device *devices; /* caller-provided, VMIG_WIRE_MAX_DEVICES entries to decode */
} vmig_wire_hello;

/*
 * HELLO payload. encode: returns payload bytes written, or a negative code
 * when `cap` is too small. decode: `h->blocks` must point at room for
 * `max_blocks` entries; every rule of the spec is checked, including unique
 * names and the exact payload length.
 */
int vmig_wire_hello_encode(const vmig_wire_hello *h, uint8_t *out, size_t cap);
int vmig_wire_hello_decode(const uint8_t *in, size_t len, vmig_wire_hello *h, uint32_t max_blocks,
                           vmig_error *err);

/*
 * DEVCHUNK payload: device index (in HELLO's list), flags (bit 0: the
 * device's last chunk), chunk index, then the chunk's bytes.
 * decode: the index below `ndevices`, flags known, chunk below
 * VMIG_WIRE_MAX_DEV_CHUNKS, 1..`chunk_max` data bytes (0 only in a last
 * chunk). *data points into `in`.
 */
#define VMIG_DEVCHUNK_HDR_LEN 8
#define VMIG_DEVCHUNK_F_LAST  0x1u
typedef struct vmig_wire_devchunk {
    uint16_t device;
    bool last;
    uint32_t chunk;
    const uint8_t *data;
    uint32_t len;
} vmig_wire_devchunk;
void vmig_wire_devchunk_encode_hdr(const vmig_wire_devchunk *c, uint8_t out[VMIG_DEVCHUNK_HDR_LEN]);
int vmig_wire_devchunk_decode(const uint8_t *in, size_t len, uint32_t ndevices, uint32_t chunk_max,
                              vmig_wire_devchunk *c, vmig_error *err);

typedef struct vmig_wire_end {
    uint32_t nblocks;
    uint8_t (*digests)[16]; /* caller-provided, nblocks entries */
    uint64_t packets;
    uint64_t normal_pages;
    uint64_t zero_pages;
} vmig_wire_end;

int vmig_wire_end_encode(const vmig_wire_end *e, uint8_t *out, size_t cap);
/* `e->digests` must have room for `expect_blocks` entries; nblocks must equal it. */
int vmig_wire_end_decode(const uint8_t *in, size_t len, vmig_wire_end *e, uint32_t expect_blocks,
                         vmig_error *err);

/* CKPT: the checkpoint's number and the pass that carried its pages, then
 * END's fields: digests of the checkpoint's pages (checkpoint 0: of all
 * memory) and the run's packet and page counts so far. */
#define VMIG_CKPT_FIXED 12
typedef struct vmig_wire_ckpt {
    uint64_t id;
    uint32_t pass;
    vmig_wire_end end;
} vmig_wire_ckpt;
int vmig_wire_ckpt_encode(const vmig_wire_ckpt *c, uint8_t *out, size_t cap);
int vmig_wire_ckpt_decode(const uint8_t *in, size_t len, vmig_wire_ckpt *c, uint32_t expect_blocks,
                          vmig_error *err);

/* ACK: the committed checkpoint's number. */
#define VMIG_ACK_LEN 8
void vmig_wire_ack_encode(uint64_t id, uint8_t out[VMIG_ACK_LEN]);
int vmig_wire_ack_decode(const uint8_t *in, size_t len, uint64_t *id, vmig_error *err);

/* RESULT and ERROR share one payload layout. */
typedef struct vmig_wire_status {
    int32_t status;
    char msg[VMIG_WIRE_MAX_MSG + 1]; /* NUL-terminated */
} vmig_wire_status;

int vmig_wire_status_encode(int32_t status, const char *msg, uint8_t *out, size_t cap);
/* is_error: ERROR frames require status < 0; RESULT allows 0 or < 0. */
int vmig_wire_status_decode(const uint8_t *in, size_t len, bool is_error, vmig_wire_status *st,
                            vmig_error *err);

/* ---------------- data packets ---------------- */

#define VMIG_PKT_HDR_LEN  304
#define VMIG_PKT_NAME_LEN 256

enum vmig_pkt_type { VMIG_PKT_RAM = 1, VMIG_PKT_SYNC = 2, VMIG_PKT_FIN = 3, VMIG_PKT_DEV = 4 };

/* Packet flags: the low 4 bits name the codec of a RAM packet's payload
 * (enum vmig_codec); a DEV packet may set VMIG_PKT_F_LAST; every other bit
 * must be 0. */
#define VMIG_PKT_F_CODEC_MASK 0x000fu
#define VMIG_PKT_F_LAST       0x0010u /* DEV: the device's last chunk */

/* DEV: chunk indices per device are below this. */
#define VMIG_WIRE_MAX_DEV_CHUNKS (1u << 24)

typedef struct vmig_pkt_hdr {
    uint8_t type;
    uint16_t flags; /* RAM: the codec id (VMIG_PKT_F_CODEC_MASK); DEV: F_LAST; else 0 */
    uint64_t seq;
    uint32_t pass;
    uint32_t page_size; /* RAM; 0 otherwise */
    uint32_t normal;    /* RAM; 0 otherwise */
    uint32_t zero;      /* RAM; 0 otherwise */
    uint32_t payload_len;
    uint32_t hdr_crc; /* as received (decode) */
    /* DEV: the device's instance id, the chunk's index (from 0, per
     * device) and the CRC32C of the payload. */
    uint32_t instance, chunk, payload_crc;
    char block[VMIG_PKT_NAME_LEN]; /* RAM: block name; DEV: device id; NUL-terminated */
} vmig_pkt_hdr;

static inline uint32_t vmig_pkt_codec(const vmig_pkt_hdr *h)
{
    return h->flags & VMIG_PKT_F_CODEC_MASK;
}

/*
 * Encode header plus offset array into `out`, which must hold
 * VMIG_PKT_HDR_LEN + 8 * (normal + zero) bytes; computes payload_len for
 * RAM packets without a codec from normal * page_size (a compressed packet
 * takes h->payload_len) and the crc. `block` is copied
 * (strnlen <= 255 required by the caller). Returns the bytes written.
 */
size_t vmig_wire_pkt_encode(const vmig_pkt_hdr *h, const uint64_t *offsets, uint8_t *out);

/*
 * Decode and check the fixed header: magic, version, type, flags (codec id
 * known; RAM only), reserved, name NUL-terminated (RAM) or all zero (SYNC/FIN), counts
 * (RAM: 1 <= normal + zero <= max_pages; SYNC/FIN: 0), page_size (RAM: power
 * of two in range; SYNC/FIN: 0), payload_len (no codec: normal * page_size;
 * a codec: 1..vmig_wire_codec_bound(), normal >= 1). Does not check the crc
 * (it covers the offsets, which come next).
 */
int vmig_wire_pkt_decode_hdr(const uint8_t in[VMIG_PKT_HDR_LEN], vmig_pkt_hdr *h,
                             uint32_t max_pages, vmig_error *err);

/*
 * DEV packets: check the header's crc (it has no offsets) and the payload's
 * (payload_len bytes at `payload`, which may be NULL when payload_len is 0).
 */
int vmig_wire_pkt_check_dev(const vmig_pkt_hdr *h, const uint8_t hdr_raw[VMIG_PKT_HDR_LEN],
                            const uint8_t *payload, vmig_error *err);

/*
 * Check the crc over the raw header and raw offsets, then decode the
 * offsets into `offsets` (normal + zero entries), checking each against
 * the block: aligned to h->page_size and offset <= block_len - page_size.
 */
int vmig_wire_pkt_decode_offsets(const vmig_pkt_hdr *h, const uint8_t hdr_raw[VMIG_PKT_HDR_LEN],
                                 const uint8_t *offs_raw, uint64_t block_len, uint64_t *offsets,
                                 vmig_error *err);

#endif /* VMIG_WIRE_H */

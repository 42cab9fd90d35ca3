/*
 * Page codecs behind one ops table (docs/design.md "Compression").
 *
 * A codec turns the normal pages of one RAM packet into the packet's payload
 * and back. It sees only buffers: no sessions, no sockets, no threads of its
 * own (a hardware path may keep a device open in its context). The core owns
 * one encoder context per (channel, codec) on the source and one decoder
 * context per (channel, codec) on the destination, each used only by that
 * channel's thread, created on first use and freed at the end of the run.
 *
 * Payload formats (the wire contract, docs/wire-format.md):
 *
 *   zlib          raw deflate (no zlib header, no checksum), one stream per
 *                 channel for the whole migration; every packet ends with a
 *                 Z_SYNC_FLUSH so it decodes on arrival with the stream state
 *                 the previous zlib packets of that channel left behind.
 *   zstd          one zstd stream per channel (window 2^VMIG_ZSTD_WINDOW_LOG),
 *                 each packet ending with a flush (ZSTD_e_flush).
 *   deflate-page  u32 BE length per normal page, then the pages' data in order:
 *                 length == page_size: the raw page; 1..page_size-1: the page
 *                 as one raw deflate stream with a 4 KiB window (what IAA
 *                 produces and decodes); anything else is refused.
 *   lz4           one LZ4 block (no frame) holding the packet's normal pages
 *                 one after the other; it must decode to exactly n * page_size.
 *
 * Every decoder treats its input as hostile: it returns VMIG_EPROTO with a
 * sentence for a truncated, corrupt, overlong or oversized input, writes only
 * inside pages[i][0 .. page_size), and succeeds only when the input is consumed
 * exactly and every page was filled exactly.
 */
#ifndef VMIG_CODEC_H
#define VMIG_CODEC_H

#include "../base/base.h"

#define VMIG_ZSTD_WINDOW_LOG 20 /* encoder window; the decoder refuses larger */

/* Flags of encode(). */
#define VMIG_ENC_VOLATILE                                                                          \
    0x1u /* the pages may change while encode() reads them (a live pass with                       \
          * the VM running): a codec that cannot tolerate that copies each page                    \
          * first. The output must still decode, to some content. */

struct vmig_dp_model_params; /* deflate_engine.h */

typedef struct vmig_codec_cfg {
    uint32_t level;         /* zlib 1..9, zstd 1..19; ignored by the others */
    uint32_t max_pages;     /* most pages one call gets (packet-pages) */
    uint32_t max_page_size; /* largest page size one call gets */
    uint32_t deflate_path;  /* enum vmig_deflate_path (deflate-page only) */
    /* Tests only: deflate-page drives the software model of the IAA device
     * interface (deflate_engine.h) instead of QPL. NULL in production. */
    const struct vmig_dp_model_params *dp_model;
} vmig_codec_cfg;

typedef struct vmig_codec_ops {
    uint32_t id;      /* enum vmig_codec, the wire id */
    const char *name; /* "zstd" */
    /* NULL when built; otherwise why not, e.g. "not built (libzstd was not
     * found at build time)". The hooks below are then never called. */
    const char *missing;

    /* Most payload bytes encode() may produce for n pages of page_size.
     * Never above vmig_wire_codec_bound(n * page_size) (wire.h). Any thread. */
    size_t (*bound)(uint32_t n, uint32_t page_size);

    /* Encoder context for one channel. Called by that channel's thread at its
     * first packet with this codec. Returns 0 and *ctx, or VMIG_ENOMEM/... */
    int (*enc_create)(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err);
    /* NULL is a no-op. */
    void (*enc_free)(void *ctx);
    /*
     * Compress n >= 1 pages (pages[i], page_size bytes each, in packet order)
     * into out[0 .. cap), cap >= bound(n, page_size); *out_len receives the
     * payload length. The output may be larger than the input (stream codecs
     * cannot drop what they fed to the stream). Only an internal failure
     * (allocation, a library error) is an error: the stream is then broken
     * and the channel ends. Thread: the owning channel's.
     */
    int (*encode)(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t page_size, unsigned flags,
                  uint8_t *out, size_t cap, size_t *out_len, vmig_error *err);

    /* Decoder context for one channel; same rules as enc_create. */
    int (*dec_create)(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err);
    void (*dec_free)(void *ctx);
    /*
     * Decode in[0 .. len) into exactly n >= 1 pages of page_size bytes
     * (pages[i] are distinct or equal destination pages). Hostile input: see
     * the top of this file. After a failure the context is only fit for
     * dec_free. Thread: the owning channel's.
     */
    int (*decode)(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                  uint32_t page_size, vmig_error *err);

    /* Optional: a sentence about how the codec runs in this context, e.g.
     * deflate-page's "software (hardware path not built)". May be NULL. */
    const char *(*describe)(void *ctx);
} vmig_codec_ops;

/* The codec with wire id `id`, or NULL when `id` is not a codec id. Never
 * NULL for 0..VMIG_CODEC_COUNT-1 (check ops->missing). */
const vmig_codec_ops *vmig_codec_get(uint32_t id);

/* Bit (1 << id) for every codec this build can encode and decode (always
 * includes none). */
uint32_t vmig_codec_built_mask(void);

/*
 * Incompressibility probe: true when the page looks like random data that
 * no codec would shrink, judged from a small sample (a few hundred bytes), so
 * that such a page costs a fraction of a compression. A false "true" only
 * costs ratio (the page goes raw); a false "false" only costs time.
 */
bool vmig_codec_probe_incompressible(const uint8_t *page, uint32_t page_size);

/* The backends (one file each; the registry in codec.c lists them). */
extern const vmig_codec_ops vmig_codec_none_ops;
extern const vmig_codec_ops vmig_codec_zlib_ops;
extern const vmig_codec_ops vmig_codec_zstd_ops;
extern const vmig_codec_ops vmig_codec_deflate_page_ops;
extern const vmig_codec_ops vmig_codec_lz4_ops;

#endif /* VMIG_CODEC_H */

/*
 * The codec registry: wire id -> ops table. A new backend is one file, one
 * line here and one line in meson.build.
 */
#include "codec.h"

static const vmig_codec_ops *const codecs[VMIG_CODEC_COUNT] = {
    [VMIG_CODEC_NONE] = &vmig_codec_none_ops,
    [VMIG_CODEC_ZLIB] = &vmig_codec_zlib_ops,
    [VMIG_CODEC_ZSTD] = &vmig_codec_zstd_ops,
    [VMIG_CODEC_DEFLATE_PAGE] = &vmig_codec_deflate_page_ops,
    [VMIG_CODEC_LZ4] = &vmig_codec_lz4_ops,
};

const vmig_codec_ops *vmig_codec_get(uint32_t id)
{
    return id < VMIG_CODEC_COUNT ? codecs[id] : NULL;
}

uint32_t vmig_codec_built_mask(void)
{
    uint32_t m = 1u << VMIG_CODEC_NONE; /* the core sends and lands raw pages itself */
    for (uint32_t i = 0; i < VMIG_CODEC_COUNT; i++)
        if (!codecs[i]->missing)
            m |= 1u << i;
    return m;
}

const char *vmig_codec_name(uint32_t codec)
{
    if (codec == VMIG_COMPRESSION_AUTO)
        return "auto";
    return codec < VMIG_CODEC_COUNT ? codecs[codec]->name : "?";
}

int vmig_codec_available(uint32_t codec, vmig_error *err)
{
    const vmig_codec_ops *ops = vmig_codec_get(codec);
    if (!ops)
        return vmig_error_set(err, VMIG_EINVAL, "codec %u: no such codec", codec);
    if (ops->missing && codec != VMIG_CODEC_NONE) /* raw pages need no library */
        return vmig_error_set(err, VMIG_ENOTSUP, "%s: %s", ops->name, ops->missing);
    return 0;
}

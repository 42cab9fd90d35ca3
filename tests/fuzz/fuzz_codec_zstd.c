/* libFuzzer target: the zstd decoder (the shared harness is fuzz_codec.inc). */
#define FUZZ_CODEC_ID VMIG_CODEC_ZSTD
#include "fuzz_codec.inc"

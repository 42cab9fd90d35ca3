/* libFuzzer target: the lz4 decoder (the shared harness is fuzz_codec.inc). */
#define FUZZ_CODEC_ID VMIG_CODEC_LZ4
#include "fuzz_codec.inc"

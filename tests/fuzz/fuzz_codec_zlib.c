/* libFuzzer target: the zlib decoder (the shared harness is fuzz_codec.inc). */
#define FUZZ_CODEC_ID VMIG_CODEC_ZLIB
#include "fuzz_codec.inc"

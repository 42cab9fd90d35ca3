/* libFuzzer target: the deflate-page decoder (the shared harness is fuzz_codec.inc). */
#define FUZZ_CODEC_ID VMIG_CODEC_DEFLATE_PAGE
#include "fuzz_codec.inc"

/*
 * AES-GCM (NIST SP 800-38D) with 96-bit IVs and 16-byte tags, for the TLS
 * record layer (tls_record.c), on x86-64 CPUs with 256-bit VAES and
 * VPCLMULQDQ (AMD Zen 3 and later, Intel Ice Lake and later): two AES
 * blocks per instruction for the counter mode, two carry-less products
 * per instruction for GHASH, eight blocks per loop with one reduction.
 * GnuTLS's AES-GCM (OpenSSL's 128-bit AVX code) runs at about half the
 * speed on such a CPU. Where the CPU lacks them, vmig_gcm_available() is
 * false and tls_record.c uses GnuTLS's cipher.
 *
 * Streaming use, per message: start (IV and additional data), then
 * encrypt or decrypt in pieces (every piece but the last a multiple of 16
 * bytes), then tag. tests/unit/test_gcm.c checks it against GnuTLS and
 * NIST vectors.
 */
#ifndef VMIG_GCM_H
#define VMIG_GCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vmig_gcm {
    uint8_t rk[15][16];  /* AES round keys */
    uint8_t hpow[8][16]; /* H^8 .. H^1, byte-reversed, for the 8-block loop */
    uint8_t ek0[16];     /* E(K, J0): masks the tag */
    uint8_t x[16];       /* the GHASH accumulator, byte-reversed */
    uint8_t ctr[16];     /* the next counter block, byte-reversed */
    uint64_t alen, clen;
    int rounds; /* 10 or 14 */
    bool done;  /* a piece shorter than a block came: the message's data is over */
} vmig_gcm;

/* Whether this CPU runs it (and VMIG_GCM=gnutls is not set, which keeps
 * GnuTLS's cipher for comparisons). */
bool vmig_gcm_available(void);

/* key_len 16 (AES-128) or 32 (AES-256); -1 otherwise. */
int vmig_gcm_init(vmig_gcm *g, const uint8_t *key, size_t key_len);
void vmig_gcm_start(vmig_gcm *g, const uint8_t iv[12], const uint8_t *aad, size_t aad_len);
/* -1 after a piece that was not a multiple of 16. in may equal out. */
int vmig_gcm_encrypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n);
int vmig_gcm_decrypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n);
void vmig_gcm_tag(vmig_gcm *g, uint8_t tag[16]);
void vmig_gcm_wipe(vmig_gcm *g);

#endif /* VMIG_GCM_H */

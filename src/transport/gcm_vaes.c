/* AES-GCM with VAES and VPCLMULQDQ on 256-bit registers (see gcm.h). */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "gcm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TGT __attribute__((target("avx2,aes,pclmul,vaes,vpclmulqdq")))

bool vmig_gcm_available(void)
{
    static int cached = -1; /* racing first calls compute the same value */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *e = getenv("VMIG_GCM");
        v = (vmig_cpu_features() & VMIG_CPU_VAES) && !(e && !strcmp(e, "gnutls"));
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

TGT static inline __m128i bswap(__m128i x)
{
    const __m128i m = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm_shuffle_epi8(x, m);
}

TGT static inline __m128i ld(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

TGT static inline void st(uint8_t *p, __m128i v)
{
    _mm_storeu_si128((__m128i *)p, v);
}

/* The 256-bit carry-less product [hi:lo] of two byte-reversed field
 * elements, shifted left by one bit (the reflection of GCM's bit order)
 * and reduced modulo x^128 + x^7 + x^2 + x + 1 (Gueron and Kounavis,
 * "Intel Carry-Less Multiplication Instruction and its Usage for
 * Computing the GCM Mode", 2010). Linear: products may be summed first. */
TGT static inline __m128i reduce(__m128i lo, __m128i hi)
{
    __m128i a = _mm_srli_epi32(lo, 31), b = _mm_srli_epi32(hi, 31);
    lo = _mm_slli_epi32(lo, 1);
    hi = _mm_slli_epi32(hi, 1);
    __m128i c = _mm_srli_si128(a, 12);
    b = _mm_slli_si128(b, 4);
    a = _mm_slli_si128(a, 4);
    lo = _mm_or_si128(lo, a);
    hi = _mm_or_si128(_mm_or_si128(hi, b), c);

    a = _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)),
                      _mm_slli_epi32(lo, 25));
    b = _mm_srli_si128(a, 4);
    a = _mm_slli_si128(a, 12);
    lo = _mm_xor_si128(lo, a);
    c = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)),
                      _mm_srli_epi32(lo, 7));
    c = _mm_xor_si128(c, b);
    lo = _mm_xor_si128(lo, c);
    return _mm_xor_si128(hi, lo);
}

TGT static inline __m128i gfmul(__m128i a, __m128i b)
{
    __m128i lo = _mm_clmulepi64_si128(a, b, 0x00);
    __m128i hi = _mm_clmulepi64_si128(a, b, 0x11);
    __m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01));
    lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
    hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
    return reduce(lo, hi);
}

TGT static __m128i aes_block(const vmig_gcm *g, __m128i x)
{
    x = _mm_xor_si128(x, ld(g->rk[0]));
    for (int i = 1; i < g->rounds; i++)
        x = _mm_aesenc_si128(x, ld(g->rk[i]));
    return _mm_aesenclast_si128(x, ld(g->rk[g->rounds]));
}

TGT static inline __m128i prefix_xor(__m128i k)
{
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    return _mm_xor_si128(k, _mm_slli_si128(k, 4));
}

#define K128(i, rcon)                                                                              \
    rk[i] = _mm_xor_si128(prefix_xor(rk[i - 1]),                                                   \
                          _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff))
#define K256(i, rcon)                                                                              \
    do {                                                                                           \
        rk[i] =                                                                                    \
            _mm_xor_si128(prefix_xor(rk[i - 2]),                                                   \
                          _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i - 1], rcon), 0xff));    \
        if (i + 1 < 15)                                                                            \
            rk[i + 1] =                                                                            \
                _mm_xor_si128(prefix_xor(rk[i - 1]),                                               \
                              _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[i], 0), 0xaa));       \
    } while (0)

TGT int vmig_gcm_init(vmig_gcm *g, const uint8_t *key, size_t key_len)
{
    memset(g, 0, sizeof(*g));
    __m128i rk[15];
    if (key_len == 16) {
        g->rounds = 10;
        rk[0] = ld(key);
        K128(1, 0x01);
        K128(2, 0x02);
        K128(3, 0x04);
        K128(4, 0x08);
        K128(5, 0x10);
        K128(6, 0x20);
        K128(7, 0x40);
        K128(8, 0x80);
        K128(9, 0x1b);
        K128(10, 0x36);
    } else if (key_len == 32) {
        g->rounds = 14;
        rk[0] = ld(key);
        rk[1] = ld(key + 16);
        K256(2, 0x01);
        K256(4, 0x02);
        K256(6, 0x04);
        K256(8, 0x08);
        K256(10, 0x10);
        K256(12, 0x20);
        K256(14, 0x40);
    } else {
        return -1;
    }
    for (int i = 0; i <= g->rounds; i++)
        st(g->rk[i], rk[i]);
    __m128i h = bswap(aes_block(g, _mm_setzero_si128())), p = h;
    for (int i = 7; i >= 0; i--) {
        st(g->hpow[i], p); /* hpow[7] = H, hpow[6] = H^2, ... */
        p = gfmul(p, h);
    }
    memset(rk, 0, sizeof(rk));
    return 0;
}

/* GHASH of whole blocks, one at a time (additional data, tails). */
TGT static __m128i ghash_blocks(__m128i x, __m128i h, const uint8_t *p, size_t nblocks)
{
    for (size_t i = 0; i < nblocks; i++)
        x = gfmul(_mm_xor_si128(x, bswap(ld(p + 16 * i))), h);
    return x;
}

TGT void vmig_gcm_start(vmig_gcm *g, const uint8_t iv[12], const uint8_t *aad, size_t aad_len)
{
    uint8_t j0[16];
    memcpy(j0, iv, 12);
    j0[12] = j0[13] = j0[14] = 0;
    j0[15] = 1;
    st(g->ek0, aes_block(g, ld(j0)));
    /* the data's counters start at J0 + 1; kept byte-reversed, so that the
     * 32-bit counter is the lowest lane and wraps by itself */
    st(g->ctr, _mm_add_epi32(bswap(ld(j0)), _mm_set_epi32(0, 0, 0, 1)));
    __m128i h = ld(g->hpow[7]), x = _mm_setzero_si128();
    x = ghash_blocks(x, h, aad, aad_len / 16);
    if (aad_len % 16) {
        uint8_t b[16] = {0};
        memcpy(b, aad + aad_len / 16 * 16, aad_len % 16);
        x = ghash_blocks(x, h, b, 1);
    }
    st(g->x, x);
    g->alen = aad_len;
    g->clen = 0;
    g->done = false;
}

/* GHASH of 8 blocks (byte order as on the wire, in d0..d3) into x:
 * (X ^ C1) H^8 ^ C2 H^7 ^ ... ^ C8 H, with one reduction. */
TGT static inline __m128i ghash8(__m128i x, const __m256i *hp, __m256i d0, __m256i d1, __m256i d2,
                                 __m256i d3)
{
    const __m256i bs = _mm256_broadcastsi128_si256(
        _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m256i hp0 = hp[0], hp1 = hp[1], hp2 = hp[2], hp3 = hp[3];
    d0 = _mm256_shuffle_epi8(d0, bs);
    d1 = _mm256_shuffle_epi8(d1, bs);
    d2 = _mm256_shuffle_epi8(d2, bs);
    d3 = _mm256_shuffle_epi8(d3, bs);
    d0 = _mm256_xor_si256(d0, _mm256_set_m128i(_mm_setzero_si128(), x));
    __m256i lo = _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(d0, hp0, 0x00),
                                                   _mm256_clmulepi64_epi128(d1, hp1, 0x00)),
                                  _mm256_xor_si256(_mm256_clmulepi64_epi128(d2, hp2, 0x00),
                                                   _mm256_clmulepi64_epi128(d3, hp3, 0x00)));
    __m256i hi = _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(d0, hp0, 0x11),
                                                   _mm256_clmulepi64_epi128(d1, hp1, 0x11)),
                                  _mm256_xor_si256(_mm256_clmulepi64_epi128(d2, hp2, 0x11),
                                                   _mm256_clmulepi64_epi128(d3, hp3, 0x11)));
    __m256i mid = _mm256_xor_si256(
        _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(d0, hp0, 0x01),
                                          _mm256_clmulepi64_epi128(d0, hp0, 0x10)),
                         _mm256_xor_si256(_mm256_clmulepi64_epi128(d1, hp1, 0x01),
                                          _mm256_clmulepi64_epi128(d1, hp1, 0x10))),
        _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(d2, hp2, 0x01),
                                          _mm256_clmulepi64_epi128(d2, hp2, 0x10)),
                         _mm256_xor_si256(_mm256_clmulepi64_epi128(d3, hp3, 0x01),
                                          _mm256_clmulepi64_epi128(d3, hp3, 0x10))));
    __m128i l = _mm_xor_si128(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
    __m128i u = _mm_xor_si128(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
    __m128i m = _mm_xor_si128(_mm256_castsi256_si128(mid), _mm256_extracti128_si256(mid, 1));
    l = _mm_xor_si128(l, _mm_slli_si128(m, 8));
    u = _mm_xor_si128(u, _mm_srli_si128(m, 8));
    return reduce(l, u);
}

/* Counter mode and GHASH over n bytes; GHASH sees the ciphertext: the
 * output when encrypting, the input when decrypting. */
TGT static int gcm_crypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n, bool enc)
{
    if (g->done)
        return -1;
    const __m256i bs = _mm256_broadcastsi128_si256(
        _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m256i two = _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 2);
    __m128i x = ld(g->x), c = ld(g->ctr), h = ld(g->hpow[7]);
    g->clen += n;
    if (n >= 128) {
        const int r = g->rounds;
        __m256i k[15];
        for (int i = 0; i <= r; i++)
            k[i] = _mm256_broadcastsi128_si256(ld(g->rk[i]));
        __m256i hp[4];
        for (int i = 0; i < 4; i++)
            hp[i] = _mm256_loadu_si256((const __m256i *)g->hpow[2 * i]);
        __m256i p0 = _mm256_setzero_si256(), p1 = p0, p2 = p0, p3 = p0;
        bool have_prev = false;
        /* counters c, c+1 | c+2, c+3 | ... */
        __m256i y = _mm256_add_epi32(_mm256_broadcastsi128_si256(c),
                                     _mm256_set_epi32(0, 0, 0, 1, 0, 0, 0, 0));
        for (; n >= 128; n -= 128, in += 128, out += 128) {
            __m256i c0 = y, c1 = _mm256_add_epi32(y, two);
            __m256i c2 = _mm256_add_epi32(c1, two), c3 = _mm256_add_epi32(c2, two);
            y = _mm256_add_epi32(c3, two);
            c0 = _mm256_xor_si256(_mm256_shuffle_epi8(c0, bs), k[0]);
            c1 = _mm256_xor_si256(_mm256_shuffle_epi8(c1, bs), k[0]);
            c2 = _mm256_xor_si256(_mm256_shuffle_epi8(c2, bs), k[0]);
            c3 = _mm256_xor_si256(_mm256_shuffle_epi8(c3, bs), k[0]);
            __m256i d0 = _mm256_loadu_si256((const __m256i *)in);
            __m256i d1 = _mm256_loadu_si256((const __m256i *)(in + 32));
            __m256i d2 = _mm256_loadu_si256((const __m256i *)(in + 64));
            __m256i d3 = _mm256_loadu_si256((const __m256i *)(in + 96));
            for (int i = 1; i < r; i++) {
                c0 = _mm256_aesenc_epi128(c0, k[i]);
                c1 = _mm256_aesenc_epi128(c1, k[i]);
                c2 = _mm256_aesenc_epi128(c2, k[i]);
                c3 = _mm256_aesenc_epi128(c3, k[i]);
            }
            c0 = _mm256_xor_si256(_mm256_aesenclast_epi128(c0, k[r]), d0);
            c1 = _mm256_xor_si256(_mm256_aesenclast_epi128(c1, k[r]), d1);
            c2 = _mm256_xor_si256(_mm256_aesenclast_epi128(c2, k[r]), d2);
            c3 = _mm256_xor_si256(_mm256_aesenclast_epi128(c3, k[r]), d3);
            _mm256_storeu_si256((__m256i *)out, c0);
            _mm256_storeu_si256((__m256i *)(out + 32), c1);
            _mm256_storeu_si256((__m256i *)(out + 64), c2);
            _mm256_storeu_si256((__m256i *)(out + 96), c3);
            if (enc) {
                /* hash the previous 8 blocks while these are encrypted */
                if (have_prev)
                    x = ghash8(x, hp, p0, p1, p2, p3);
                p0 = c0;
                p1 = c1;
                p2 = c2;
                p3 = c3;
                have_prev = true;
            } else {
                x = ghash8(x, hp, d0, d1, d2, d3);
            }
        }
        if (have_prev)
            x = ghash8(x, hp, p0, p1, p2, p3);
        c = _mm256_castsi256_si128(y);
        memset(k, 0, sizeof(k));
    }
    const __m128i one = _mm_set_epi32(0, 0, 0, 1);
    for (; n >= 16; n -= 16, in += 16, out += 16) {
        __m128i d = ld(in), e = _mm_xor_si128(aes_block(g, bswap(c)), d);
        c = _mm_add_epi32(c, one);
        st(out, e);
        x = gfmul(_mm_xor_si128(x, bswap(enc ? e : d)), h);
    }
    if (n) {
        uint8_t b[16] = {0}, o[16];
        memcpy(b, in, n);
        st(o, _mm_xor_si128(aes_block(g, bswap(c)), ld(b)));
        memcpy(out, o, n);
        if (enc) {
            memset(b, 0, sizeof(b));
            memcpy(b, o, n);
        }
        x = gfmul(_mm_xor_si128(x, bswap(ld(b))), h);
        g->done = true;
    }
    st(g->x, x);
    st(g->ctr, c);
    return 0;
}

TGT int vmig_gcm_encrypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n)
{
    return gcm_crypt(g, in, out, n, true);
}

TGT int vmig_gcm_decrypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n)
{
    return gcm_crypt(g, in, out, n, false);
}

TGT void vmig_gcm_tag(vmig_gcm *g, uint8_t tag[16])
{
    uint8_t len[16];
    vmig_put_be64(len, g->alen * 8);
    vmig_put_be64(len + 8, g->clen * 8);
    __m128i x = gfmul(_mm_xor_si128(ld(g->x), bswap(ld(len))), ld(g->hpow[7]));
    st(tag, _mm_xor_si128(bswap(x), ld(g->ek0)));
    g->done = true;
}

#else

bool vmig_gcm_available(void)
{
    return false;
}
int vmig_gcm_init(vmig_gcm *g, const uint8_t *key, size_t key_len)
{
    (void)g, (void)key, (void)key_len;
    return -1;
}
void vmig_gcm_start(vmig_gcm *g, const uint8_t iv[12], const uint8_t *aad, size_t aad_len)
{
    (void)g, (void)iv, (void)aad, (void)aad_len;
}
int vmig_gcm_encrypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n)
{
    (void)g, (void)in, (void)out, (void)n;
    return -1;
}
int vmig_gcm_decrypt(vmig_gcm *g, const uint8_t *in, uint8_t *out, size_t n)
{
    (void)g, (void)in, (void)out, (void)n;
    return -1;
}
void vmig_gcm_tag(vmig_gcm *g, uint8_t tag[16])
{
    (void)g;
    memset(tag, 0, 16);
}
#endif

void vmig_gcm_wipe(vmig_gcm *g)
{
    volatile uint8_t *p = (volatile uint8_t *)g;
    for (size_t i = 0; i < sizeof(*g); i++)
        p[i] = 0;
}

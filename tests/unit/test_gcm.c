/* vmig's VAES AES-GCM (src/transport/gcm.h): NIST vectors, then random
 * keys, IVs, additional data and messages cut in random pieces, against
 * GnuTLS's AES-GCM; tags that must fail. */
#include "src/transport/gcm.h"
#include "vmig_config.h"

#include "../testutil.h"

#if VMIG_HAVE_GNUTLS
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void unhex(const char *h, uint8_t *out, size_t *len)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *len = n;
}

/* Encrypts (or decrypts) msg in pieces of random multiples of 16 bytes,
 * the last piece any length, through vmig_gcm; returns the tag. */
static void run(vmig_gcm *g, bool enc, const uint8_t *iv, const uint8_t *aad, size_t alen,
                const uint8_t *in, uint8_t *out, size_t n, uint8_t tag[16])
{
    vmig_gcm_start(g, iv, aad, alen);
    size_t off = 0;
    while (off < n) {
        size_t left = n - off, c = (size_t)(rnd() % 40) * 16;
        if (c >= left || rnd() % 4 == 0)
            c = left;
        int rc = enc ? vmig_gcm_encrypt(g, in + off, out + off, c)
                     : vmig_gcm_decrypt(g, in + off, out + off, c);
        CHECK(rc == 0, "piece at %zu of %zu", off, c);
        off += c;
    }
    vmig_gcm_tag(g, tag);
}

static void nist(void)
{
    /* The GCM specification's test cases 2, 3, 4 (AES-128) and 16 (AES-256). */
    static const struct {
        const char *k, *iv, *p, *a, *c, *t;
    } v[] = {
        {"00000000000000000000000000000000", "000000000000000000000000",
         "00000000000000000000000000000000", "", "0388dace60b6a392f328c2b971b2fe78",
         "ab6e47d42cec13bdf53a67b21257bddf"},
        {"feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e244"
         "9"
         "a6b525b16aedf5aa0de657ba637b391aafd255",
         "",
         "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aa"
         "c"
         "84aa051ba30b396a0aac973d58e091473f5985",
         "4d5c2af327cd64a62cf35abd2ba6fab4"},
        {"feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e244"
         "9"
         "a6b525b16aedf5aa0de657ba637b39",
         "feedfacedeadbeeffeedfacedeadbeefabaddad2",
         "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aa"
         "c"
         "84aa051ba30b396a0aac973d58e091",
         "5bc94fbc3221a5db94fae95ae7121a47"},
        {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         "cafebabefacedbaddecaf888",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e244"
         "9"
         "a6b525b16aedf5aa0de657ba637b39",
         "feedfacedeadbeeffeedfacedeadbeefabaddad2",
         "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b105"
         "6"
         "828838c5f61e6393ba7a0abcc9f662",
         "76fc6ece0f4e1768cddf8853bb2d551b"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t k[32], iv[12], p[64], a[32], c[64], t[16], out[64], tag[16];
        size_t kl, ivl, pl, al, cl, tl;
        unhex(v[i].k, k, &kl);
        unhex(v[i].iv, iv, &ivl);
        unhex(v[i].p, p, &pl);
        unhex(v[i].a, a, &al);
        unhex(v[i].c, c, &cl);
        unhex(v[i].t, t, &tl);
        vmig_gcm g;
        REQUIRE(vmig_gcm_init(&g, k, kl) == 0, "init");
        run(&g, true, iv, a, al, p, out, pl, tag);
        CHECK(!memcmp(out, c, cl) && !memcmp(tag, t, 16), "NIST vector %zu", i);
        run(&g, false, iv, a, al, c, out, cl, tag);
        CHECK(!memcmp(out, p, pl) && !memcmp(tag, t, 16), "NIST vector %zu decrypts", i);
    }
}

static void against_gnutls(void)
{
    enum { MAX = 70000 };
    uint8_t *msg = malloc(MAX), *ours = malloc(MAX + 16), *theirs = malloc(MAX + 16);
    uint8_t *back = malloc(MAX);
    REQUIRE(msg && ours && theirs && back, "memory");
    int fails = 0;
    for (int trial = 0; trial < 3000; trial++) {
        size_t kl = trial % 2 ? 32 : 16;
        uint8_t key[32], iv[12], aad[40], tag[16];
        for (size_t i = 0; i < sizeof(key); i++)
            key[i] = (uint8_t)rnd();
        for (size_t i = 0; i < sizeof(iv); i++)
            iv[i] = (uint8_t)rnd();
        size_t alen = rnd() % 41;
        for (size_t i = 0; i < alen; i++)
            aad[i] = (uint8_t)rnd();
        size_t n = trial < 200 ? (size_t)trial : rnd() % (trial % 10 ? 20000 : MAX);
        for (size_t i = 0; i < n; i++)
            msg[i] = (uint8_t)rnd();
        vmig_gcm g;
        REQUIRE(vmig_gcm_init(&g, key, kl) == 0, "init");
        run(&g, true, iv, aad, alen, msg, ours, n, tag);
        memcpy(ours + n, tag, 16);

        gnutls_aead_cipher_hd_t h;
        gnutls_datum_t kd = {key, (unsigned)kl};
        REQUIRE(gnutls_aead_cipher_init(
                    &h, kl == 16 ? GNUTLS_CIPHER_AES_128_GCM : GNUTLS_CIPHER_AES_256_GCM, &kd) == 0,
                "gnutls init");
        size_t tl = n + 16;
        REQUIRE(gnutls_aead_cipher_encrypt(h, iv, 12, aad, alen, 16, msg, n, theirs, &tl) == 0 &&
                    tl == n + 16,
                "gnutls encrypt");
        gnutls_aead_cipher_deinit(h);
        if (memcmp(ours, theirs, n + 16)) {
            if (fails++ < 5)
                CHECK(0, "trial %d: key %zu, aad %zu, %zu bytes: differs from GnuTLS", trial, kl,
                      alen, n);
            continue;
        }
        /* decrypt in place, pieces cut differently */
        memcpy(back, theirs, n);
        run(&g, false, iv, aad, alen, back, back, n, tag);
        CHECK(!memcmp(back, msg, n) && !memcmp(tag, theirs + n, 16), "trial %d: decrypts", trial);
        /* a flipped bit anywhere changes the tag */
        if (n) {
            memcpy(back, theirs, n);
            back[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
            run(&g, false, iv, aad, alen, back, back, n, tag);
            CHECK(memcmp(tag, theirs + n, 16), "trial %d: a changed byte keeps its tag", trial);
        }
        vmig_gcm_wipe(&g);
    }
    CHECK(!fails, "%d of 3000 trials differ from GnuTLS", fails);
    free(msg);
    free(ours);
    free(theirs);
    free(back);
}

static void misuse(void)
{
    uint8_t key[16] = {1}, iv[12] = {2}, b[40] = {0};
    vmig_gcm g;
    REQUIRE(vmig_gcm_init(&g, key, 16) == 0, "init");
    CHECK(vmig_gcm_init(&g, key, 24) == -1, "AES-192 keys are refused");
    REQUIRE(vmig_gcm_init(&g, key, 16) == 0, "init");
    vmig_gcm_start(&g, iv, NULL, 0);
    CHECK(vmig_gcm_encrypt(&g, b, b, 5) == 0, "a short last piece");
    CHECK(vmig_gcm_encrypt(&g, b, b, 16) == -1, "nothing after a short piece");
    vmig_gcm_start(&g, iv, NULL, 0);
    CHECK(vmig_gcm_encrypt(&g, b, b, 16) == 0, "start resets");
}

int main(void)
{
    if (!vmig_gcm_available())
        SKIP("this CPU has no VAES/VPCLMULQDQ (or VMIG_GCM=gnutls): vmig uses GnuTLS's AES-GCM");
    REQUIRE(gnutls_global_init() == 0, "gnutls");
    nist();
    against_gnutls();
    misuse();
    return tu_result("test_gcm");
}
#else
int main(void)
{
    SKIP("built without GnuTLS: no TLS, no AES-GCM to check against");
}
#endif

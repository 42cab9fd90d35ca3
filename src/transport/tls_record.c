/* vmig's TLS 1.3 record layer for AES-GCM (see tls_record.h). */
#include <stdio.h>

#include <stdlib.h>

#include "gcm.h"
#include "tls_record.h"
#include "vmig_config.h"

#if VMIG_HAVE_GNUTLS
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define BLK 16 /* the AES block: every cipher call but a record's last is a multiple */

typedef struct seg {
    uint8_t *p;
    size_t len;
} seg;

bool vmig_tlsrec_supported(int cipher, int *mac)
{
    switch (cipher) {
    case GNUTLS_CIPHER_AES_128_GCM:
        *mac = GNUTLS_MAC_SHA256;
        return true;
    case GNUTLS_CIPHER_AES_256_GCM:
        *mac = GNUTLS_MAC_SHA384;
        return true;
    default:
        return false;
    }
}

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 section 7.1. */
static int expand_label(const vmig_tlsrec *r, const uint8_t *secret, const char *label,
                        uint8_t *out, size_t len)
{
    uint8_t info[2 + 1 + 6 + 32 + 1];
    size_t ll = strlen(label);
    vmig_put_be16(info, (uint16_t)len);
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0; /* no context */
    gnutls_datum_t k = {(unsigned char *)secret, r->secret_len};
    gnutls_datum_t i = {info, (unsigned)(10 + ll)};
    return gnutls_hkdf_expand((gnutls_mac_algorithm_t)r->mac, &k, &i, out, len) < 0 ? -1 : 0;
}

int vmig_tlsrec_derive(const vmig_tlsrec *r, const uint8_t *secret, uint8_t *key, uint8_t iv[12])
{
    if (expand_label(r, secret, "key", key, r->key_len) || expand_label(r, secret, "iv", iv, 12))
        return -1;
    return 0;
}

/* Keys a direction from its secret (which it keeps for the next update). */
static int dir_set(vmig_tlsrec *r, vmig_tlsrec_dir *d, const uint8_t *secret)
{
    uint8_t key[32];
    if (secret != d->secret)
        memcpy(d->secret, secret, r->secret_len);
    if (vmig_tlsrec_derive(r, d->secret, key, d->iv))
        return -1;
    if (d->h)
        gnutls_cipher_deinit(d->h);
    d->h = NULL;
    d->seq = 0;
    if (vmig_gcm_available()) { /* vmig's VAES AES-GCM (gcm.h) */
        if (!d->g && !(d->g = malloc(sizeof(vmig_gcm))))
            return -1;
        int rc = vmig_gcm_init(d->g, key, r->key_len);
        gnutls_memset(key, 0, sizeof(key));
        return rc;
    }
    gnutls_datum_t k = {key, r->key_len}, iv = {d->iv, 12};
    gnutls_cipher_hd_t h;
    int g = gnutls_cipher_init(&h, (gnutls_cipher_algorithm_t)r->cipher, &k, &iv);
    gnutls_memset(key, 0, sizeof(key));
    if (g < 0)
        return -1;
    d->h = h;
    return 0;
}

/* The next secret of a direction (application_traffic_secret_N+1). */
static int dir_update(vmig_tlsrec *r, vmig_tlsrec_dir *d)
{
    uint8_t next[48];
    if (expand_label(r, d->secret, "traffic upd", next, r->secret_len))
        return -1;
    int rc = dir_set(r, d, next);
    gnutls_memset(next, 0, sizeof(next));
    return rc;
}

int vmig_tlsrec_init(vmig_tlsrec *r, int cipher, const uint8_t *rsecret, const uint8_t *wsecret,
                     size_t secret_len, uint64_t rseq, uint64_t wseq, char *why, size_t whylen)
{
    memset(r, 0, sizeof(*r));
    int mac;
    if (!vmig_tlsrec_supported(cipher, &mac)) {
        snprintf(why, whylen, "TLS: vmig's record layer has no %s",
                 gnutls_cipher_get_name((gnutls_cipher_algorithm_t)cipher));
        return -1;
    }
    r->cipher = cipher;
    r->mac = mac;
    r->key_len = (uint32_t)gnutls_cipher_get_key_size((gnutls_cipher_algorithm_t)cipher);
    r->secret_len = (uint32_t)gnutls_hmac_get_len((gnutls_mac_algorithm_t)mac);
    r->rekey_after = VMIG_TLSREC_REKEY;
    if (secret_len != r->secret_len || r->key_len > 32) {
        snprintf(why, whylen, "TLS: a traffic secret of %zu bytes for %s", secret_len,
                 gnutls_cipher_get_name((gnutls_cipher_algorithm_t)cipher));
        return -1;
    }
    if (dir_set(r, &r->rd, rsecret) || dir_set(r, &r->wr, wsecret)) {
        snprintf(why, whylen, "TLS: cannot key %s",
                 gnutls_cipher_get_name((gnutls_cipher_algorithm_t)cipher));
        vmig_tlsrec_free(r);
        return -1;
    }
    r->rd.seq = rseq;
    r->wr.seq = wseq;
    return 0;
}

static void dir_free(vmig_tlsrec_dir *d)
{
    if (d->h)
        gnutls_cipher_deinit(d->h);
    if (d->g) {
        vmig_gcm_wipe(d->g);
        free(d->g);
    }
}

void vmig_tlsrec_free(vmig_tlsrec *r)
{
    dir_free(&r->rd);
    dir_free(&r->wr);
    gnutls_memset(r, 0, sizeof(*r));
}

/* Starts a record of direction d: its nonce, then its header as the
 * additional data. */
static int rec_start(vmig_tlsrec_dir *d, const uint8_t *hdr)
{
    uint8_t nonce[12];
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] ^= (uint8_t)(d->seq >> (56 - 8 * i));
    if (d->g) {
        vmig_gcm_start(d->g, nonce, hdr, VMIG_TLSREC_HDR);
        return 0;
    }
    gnutls_cipher_set_iv(d->h, nonce, 12);
    return gnutls_cipher_add_auth(d->h, hdr, VMIG_TLSREC_HDR) < 0 ? -1 : 0;
}

static int dir_crypt(vmig_tlsrec_dir *d, bool enc, const uint8_t *in, uint8_t *out, size_t n)
{
    if (d->g)
        return enc ? vmig_gcm_encrypt(d->g, in, out, n) : vmig_gcm_decrypt(d->g, in, out, n);
    int g = enc ? gnutls_cipher_encrypt2(d->h, in, n, out, n)
                : gnutls_cipher_decrypt2(d->h, in, n, out, n);
    return g < 0 ? -1 : 0;
}

static int dir_tag(vmig_tlsrec_dir *d, uint8_t *tag)
{
    if (d->g) {
        vmig_gcm_tag(d->g, tag);
        return 0;
    }
    return gnutls_cipher_tag(d->h, tag, VMIG_TLSREC_TAG) < 0 ? -1 : 0;
}

/*
 * Runs the cipher over total bytes lying in the segments in[] into the
 * segments out[], each call on a contiguous run of both: runs a multiple
 * of the block, a block that straddles segments through a bounce buffer,
 * and only the record's last call shorter.
 */
static int crypt_segs(vmig_tlsrec_dir *d, bool enc, const seg *in, int nin, const seg *out,
                      int nout, size_t total)
{
    int i = 0, j = 0;
    size_t io = 0, oo = 0;
    uint8_t a[BLK], b[BLK];
    while (total) {
        while (i < nin && io == in[i].len) {
            i++;
            io = 0;
        }
        while (j < nout && oo == out[j].len) {
            j++;
            oo = 0;
        }
        if (i == nin || j == nout)
            return -1;
        size_t m = VMIG_MIN(VMIG_MIN(in[i].len - io, out[j].len - oo), total);
        if (m == total || m >= BLK) {
            if (m != total)
                m &= ~(size_t)(BLK - 1);
            if (dir_crypt(d, enc, in[i].p + io, out[j].p + oo, m))
                return -1;
            io += m;
            oo += m;
            total -= m;
            continue;
        }
        size_t s = VMIG_MIN(total, (size_t)BLK);
        for (size_t k = 0; k < s;) {
            while (io == in[i].len) {
                if (++i == nin)
                    return -1;
                io = 0;
            }
            size_t c = VMIG_MIN(s - k, in[i].len - io);
            memcpy(a + k, in[i].p + io, c);
            io += c;
            k += c;
        }
        if (dir_crypt(d, enc, a, b, s))
            return -1;
        for (size_t k = 0; k < s;) {
            while (oo == out[j].len) {
                if (++j == nout)
                    return -1;
                oo = 0;
            }
            size_t c = VMIG_MIN(s - k, out[j].len - oo);
            memcpy(out[j].p + oo, b + k, c);
            oo += c;
            k += c;
        }
        total -= s;
    }
    return 0;
}

/* Up to n bytes of *pos as segments (at most max; pos advances). */
static int take_segs(vmig_iovpos *pos, size_t n, seg *s, int max, size_t *got)
{
    int ns = 0;
    *got = 0;
    while (*got < n && ns < max && pos->i < pos->cnt) {
        const struct iovec *v = &pos->iov[pos->i];
        size_t c = VMIG_MIN(v->iov_len - pos->off, n - *got);
        if (c) {
            s[ns].p = (uint8_t *)v->iov_base + pos->off;
            s[ns].len = c;
            ns++;
            *got += c;
            pos->off += c;
        }
        if (pos->off == v->iov_len) {
            pos->i++;
            pos->off = 0;
        }
    }
    return ns;
}

static void iovpos_skip(vmig_iovpos *pos, size_t n)
{
    while (pos->i < pos->cnt) {
        size_t c = VMIG_MIN(n, pos->iov[pos->i].iov_len - pos->off);
        pos->off += c;
        n -= c;
        if (pos->off < pos->iov[pos->i].iov_len)
            break;
        pos->i++;
        pos->off = 0;
    }
}

ssize_t vmig_tlsrec_seal(vmig_tlsrec *r, uint8_t type, vmig_iovpos *src, size_t n, size_t *used,
                         uint8_t *out, char *why, size_t whylen)
{
    *used = 0;
    if (n > VMIG_TLSREC_MAX || r->wr.seq == UINT64_MAX) {
        snprintf(why, whylen, "TLS: a record of %zu bytes, or the sequence is spent", n);
        return -1;
    }
    seg s[VMIG_TLSREC_SEGS + 1];
    vmig_iovpos p = *src;
    size_t got;
    int ns = take_segs(&p, n, s, VMIG_TLSREC_SEGS, &got);
    s[ns].p = &type;
    s[ns].len = 1;
    size_t body = got + 1 + VMIG_TLSREC_TAG;
    out[0] = VMIG_TLSREC_APPDATA; /* every protected record's outer type */
    out[1] = 3;
    out[2] = 3;
    vmig_put_be16(out + 3, (uint16_t)body);
    seg o = {out + VMIG_TLSREC_HDR, got + 1};
    if (rec_start(&r->wr, out) || crypt_segs(&r->wr, true, s, ns + 1, &o, 1, got + 1) ||
        dir_tag(&r->wr, out + VMIG_TLSREC_HDR + got + 1)) {
        snprintf(why, whylen, "TLS: %s failed to encrypt a record",
                 gnutls_cipher_get_name((gnutls_cipher_algorithm_t)r->cipher));
        return -1;
    }
    r->wr.seq++;
    *src = p;
    *used = got;
    return (ssize_t)(VMIG_TLSREC_HDR + body);
}

ssize_t vmig_tlsrec_seal_key_update(vmig_tlsrec *r, bool request, uint8_t *out, char *why,
                                    size_t whylen)
{
    uint8_t msg[5] = {24 /* key_update */, 0, 0, 1, request ? 1 : 0};
    struct iovec v = {msg, sizeof(msg)};
    vmig_iovpos p = {&v, 1, 0, 0};
    size_t used;
    ssize_t n =
        vmig_tlsrec_seal(r, VMIG_TLSREC_HANDSHAKE, &p, sizeof(msg), &used, out, why, whylen);
    if (n < 0)
        return n;
    if (dir_update(r, &r->wr)) {
        snprintf(why, whylen, "TLS: cannot derive the next write key");
        return -1;
    }
    __atomic_store_n(&r->update_owed, false, __ATOMIC_RELAXED);
    r->updates_sent++;
    return n;
}

ssize_t vmig_tlsrec_check_header(const uint8_t *h, char *why, size_t whylen)
{
    size_t len = vmig_get_be16(h + 3);
    if (h[0] != VMIG_TLSREC_APPDATA) {
        snprintf(why, whylen,
                 "TLS: a record of type %u after the handshake (every record is application "
                 "data on the outside)",
                 h[0]);
        return -1;
    }
    if (h[1] != 3 || h[2] != 3) {
        snprintf(why, whylen, "TLS: a record of version %u.%u (TLS 1.3 records say 3.3)", h[1],
                 h[2]);
        return -1;
    }
    if (len > VMIG_TLSREC_BODY_MAX || len < VMIG_TLSREC_TAG + 1) {
        snprintf(why, whylen, "TLS: a record of %zu bytes (record_overflow: %u to %u)", len,
                 VMIG_TLSREC_TAG + 1, VMIG_TLSREC_BODY_MAX);
        return -1;
    }
    return (ssize_t)(VMIG_TLSREC_HDR + len);
}

static void fail(vmig_tlsrec_opened *o, char *why, size_t whylen, const char *msg)
{
    o->kind = VMIG_TLSREC_ERROR;
    snprintf(why, whylen, "%s", msg);
}

/* Copies len bytes at offset off of the segments into buf. */
static void gather(const seg *s, int ns, size_t off, size_t len, uint8_t *buf)
{
    for (int i = 0; i < ns && len; i++) {
        if (off >= s[i].len) {
            off -= s[i].len;
            continue;
        }
        size_t c = VMIG_MIN(len, s[i].len - off);
        memcpy(buf, s[i].p + off, c);
        buf += c;
        len -= c;
        off = 0;
    }
}

static void control(vmig_tlsrec *r, uint8_t type, const uint8_t *m, size_t len,
                    vmig_tlsrec_opened *o, char *why, size_t whylen)
{
    if (type == VMIG_TLSREC_ALERT) {
        if (len != 2) {
            fail(o, why, whylen, "TLS: an alert that is not 2 bytes long");
            return;
        }
        if (m[1] == GNUTLS_A_CLOSE_NOTIFY) {
            o->kind = VMIG_TLSREC_CLOSE;
            return;
        }
        const char *name = gnutls_alert_get_name((gnutls_alert_description_t)m[1]);
        o->kind = VMIG_TLSREC_ERROR;
        if (name)
            snprintf(why, whylen, "TLS: the peer sent the alert '%s'", name);
        else
            snprintf(why, whylen, "TLS: the peer sent alert %u", m[1]);
        return;
    }
    if (type != VMIG_TLSREC_HANDSHAKE) {
        o->kind = VMIG_TLSREC_ERROR;
        snprintf(why, whylen, "TLS: a record of unknown content type %u", type);
        return;
    }
    if (len < 4 || m[0] != 24) {
        o->kind = VMIG_TLSREC_ERROR;
        snprintf(why, whylen,
                 "TLS: handshake message %u after the handshake (only KeyUpdate is accepted)",
                 len ? m[0] : 0);
        return;
    }
    if (len != 5 || m[1] || m[2] || m[3] != 1 || m[4] > 1) {
        fail(o, why, whylen, "TLS: a malformed KeyUpdate");
        return;
    }
    if (dir_update(r, &r->rd)) {
        fail(o, why, whylen, "TLS: cannot derive the next read key");
        return;
    }
    if (m[4])
        __atomic_store_n(&r->update_owed, true, __ATOMIC_RELAXED);
    r->updates_received++;
    o->kind = VMIG_TLSREC_CONTROL;
}

void vmig_tlsrec_open(vmig_tlsrec *r, uint8_t *rec, size_t len, vmig_iovpos *dst, size_t room,
                      vmig_tlsrec_opened *o, char *why, size_t whylen)
{
    memset(o, 0, sizeof(*o));
    /* the header was checked: 17 <= body <= 2^14 + 256 */
    size_t ct = len - VMIG_TLSREC_HDR - VMIG_TLSREC_TAG; /* the inner plaintext */
    uint8_t *body = rec + VMIG_TLSREC_HDR;
    if (ct > VMIG_TLSREC_MAX + 1) { /* RFC 8446 5.4: content and type at most 2^14 + 1 */
        fail(o, why, whylen, "TLS: a record over 2^14 bytes of content (record_overflow)");
        return;
    }
    if (r->rd.seq == UINT64_MAX) {
        fail(o, why, whylen, "TLS: the read sequence is spent");
        return;
    }
    /* the content up to room into dst, at least the type byte in place */
    seg s[VMIG_TLSREC_SEGS + 1];
    vmig_iovpos p = *dst;
    size_t k;
    int ns = take_segs(&p, VMIG_MIN(room, ct - 1), s, VMIG_TLSREC_SEGS, &k);
    s[ns].p = body + k;
    s[ns].len = ct - k;
    seg in = {body, ct};
    uint8_t tag[VMIG_TLSREC_TAG];
    if (rec_start(&r->rd, rec) || crypt_segs(&r->rd, false, &in, 1, s, ns + 1, ct) ||
        dir_tag(&r->rd, tag)) {
        fail(o, why, whylen, "TLS: the cipher failed to decrypt a record");
        return;
    }
    uint8_t diff = 0;
    for (size_t i = 0; i < sizeof(tag); i++)
        diff |= (uint8_t)(tag[i] ^ body[ct + i]);
    if (diff) {
        fail(o, why, whylen,
             "TLS: a record failed its authentication (bad_record_mac: changed on the way, "
             "or not from this session)");
        return;
    }
    r->rd.seq++;
    /* the content type: the last non-zero byte (zeros after it are padding) */
    size_t L = ct;
    uint8_t type = 0;
    for (int i = ns; i >= 0 && !type; i--) {
        for (size_t b = s[i].len; b-- > 0;) {
            L--;
            if (s[i].p[b]) {
                type = s[i].p[b];
                break;
            }
        }
    }
    if (!type) {
        fail(o, why, whylen, "TLS: a record without a content type (all padding)");
        return;
    }
    if (type == VMIG_TLSREC_APPDATA) {
        o->kind = VMIG_TLSREC_DATA;
        o->to_dst = VMIG_MIN(L, k);
        o->rest = body + k;
        o->rest_len = L > k ? L - k : 0;
        iovpos_skip(dst, o->to_dst);
        return;
    }
    uint8_t m[8];
    gather(s, ns + 1, 0, VMIG_MIN(L, sizeof(m)), m);
    control(r, type, m, L, o, why, whylen);
}

#endif /* VMIG_HAVE_GNUTLS */

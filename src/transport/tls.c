/* TLS 1.3 connections over GnuTLS (see tls.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tls.h"
#include "tls_record.h"
#include "vmig_config.h"

bool vmig_uri_host(const char *uri, char *host, size_t len)
{
    if (!uri || strncmp(uri, "tcp:", 4) || !len)
        return false;
    const char *a = uri + 4, *end;
    if (*a == '[') {
        a++;
        end = strchr(a, ']');
    } else {
        end = strrchr(a, ':');
    }
    if (!end || end == a || (size_t)(end - a) >= len)
        return false;
    memcpy(host, a, (size_t)(end - a));
    host[end - a] = 0;
    return true;
}

#if VMIG_HAVE_GNUTLS
#include <gnutls/gnutls.h>
#include <gnutls/socket.h>

/* vmig's own record layer needs the traffic secrets (keylog) and HKDF */
#define OWN_RECORDS (GNUTLS_VERSION_NUMBER >= 0x03060d)

/* TLS 1.3 only; AES-GCM first (AES-NI, and what kernel TLS offloads), then
 * ChaCha20 for CPUs without AES instructions. */
#define PRIO_X509                                                                                  \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define PRIO_PSK PRIO_X509 ":-KX-ALL:+ECDHE-PSK:+DHE-PSK"
#define REC_MAX  16384 /* TLS's largest record payload */
/* After the handshake (without kernel TLS), records go through buffers of
 * this size in each direction: GnuTLS alone makes one send per record and
 * two receives (header, body), 3 system calls per 16 KiB; through the
 * buffers, a call moves up to 4 records. (64 KiB: 4 channels' buffers on
 * each side stay in cache; 256 KiB measured slower, 1.60 vs 1.40 sender
 * CPU-seconds per GiB.) */
#define IOBUF (64u << 10)

typedef struct psk_entry {
    char identity[128];
    uint8_t key[64];
    uint32_t key_len;
} psk_entry;

struct vmig_tls {
    bool server, gnutls_records;
    uint64_t rekey_after;
    uint32_t mode, ktls;
    char authz[256];
    gnutls_priority_t prio;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_psk_server_credentials_t psk_server;
    psk_entry *keys;
    uint32_t nkeys;
};

typedef struct tls_conn {
    vmig_conn c;
    vmig_conn *raw;
    const vmig_tls *tls;
    gnutls_session_t sess;
    bool ktls;
    /* vmig's record layer (tls_record.h) instead of GnuTLS's: the traffic
     * secrets as the handshake exported them, then the record state; the
     * content of a record the reader had no room for (decrypted in rbuf);
     * after close_notify (1) or a bad record (-EPROTO), what reads return */
    bool own;
    uint8_t secret[2][48]; /* the client's, the server's */
    uint32_t secret_len[2];
    vmig_tlsrec rec;
    uint8_t *pend;
    size_t pend_len;
    int rstate;
    bool update_request; /* vmig_tls_key_update(): send one, asking the peer's */
    pthread_mutex_t wmu; /* GnuTLS's records: the writer, and GnuTLS writing while reading */
    bool pull_timeout;   /* GnuTLS's records: the socket's read timed out */
    char desc[64];
    size_t stage_len;
    uint8_t stage[REC_MAX];
    /* the buffered transport (NULL until installed): records received and
     * not yet given to GnuTLS, records GnuTLS wrote and not yet sent */
    uint8_t *rbuf, *wbuf;
    size_t rpos, rlen, wlen;
} tls_conn;

bool vmig_tls_built(void)
{
    return true;
}

static int file_in(char *buf, size_t len, const char *dir, const char *name, vmig_error *err)
{
    if ((size_t)snprintf(buf, len, "%s/%s", dir, name) >= len)
        return vmig_error_set(err, VMIG_EINVAL, "tls-creds: path '%s/%s' is too long", dir, name);
    return 0;
}

static int gnutls_fail(vmig_error *err, const char *what, const char *path, int rc)
{
    return vmig_error_set(err, VMIG_EINVAL, "TLS: %s '%s': %s", what, path, gnutls_strerror(rc));
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* keys.psk: "identity:hexkey" per line; blank lines and '#' comments skipped. */
static int load_psk(vmig_tls *t, const char *path, vmig_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return vmig_error_set(err, VMIG_ENOENT, "TLS: cannot open the key file '%s': %s", path,
                              strerror(errno));
    char line[512];
    unsigned lineno = 0;
    int rc = 0;
    while (!rc && fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strcspn(line, "\r\n");
        if (line[n] == 0 && !feof(f)) {
            rc = vmig_error_set(err, VMIG_EINVAL, "TLS: %s line %u is too long", path, lineno);
            break;
        }
        line[n] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        size_t idlen = colon ? (size_t)(colon - line) : 0;
        size_t hexlen = colon ? strlen(colon + 1) : 0;
        if (!colon || !idlen || idlen >= sizeof(t->keys->identity)) {
            rc = vmig_error_set(err, VMIG_EINVAL,
                                "TLS: %s line %u: expected identity:hexkey (identity of 1..127 "
                                "bytes)",
                                path, lineno);
            break;
        }
        if (hexlen % 2 || hexlen < 32 || hexlen > 128) {
            rc = vmig_error_set(err, VMIG_EINVAL,
                                "TLS: %s line %u: the key must be 16..64 bytes in hex (32..128 "
                                "hex digits), found %zu digits",
                                path, lineno, hexlen);
            break;
        }
        psk_entry *k = realloc(t->keys, sizeof(*k) * (t->nkeys + 1));
        if (!k) {
            rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for TLS keys");
            break;
        }
        t->keys = k;
        k += t->nkeys;
        memset(k, 0, sizeof(*k));
        memcpy(k->identity, line, idlen);
        for (size_t i = 0; i < hexlen / 2; i++) {
            int hi = hexval((unsigned char)colon[1 + 2 * i]),
                lo = hexval((unsigned char)colon[2 + 2 * i]);
            if (hi < 0 || lo < 0) {
                rc = vmig_error_set(err, VMIG_EINVAL, "TLS: %s line %u: the key is not hex", path,
                                    lineno);
                break;
            }
            k->key[i] = (uint8_t)(hi << 4 | lo);
        }
        k->key_len = (uint32_t)(hexlen / 2);
        if (!rc)
            t->nkeys++;
    }
    fclose(f);
    if (!rc && !t->nkeys)
        rc = vmig_error_set(err, VMIG_EINVAL, "TLS: %s holds no key", path);
    return rc;
}

static int psk_lookup(gnutls_session_t sess, const char *identity, gnutls_datum_t *key)
{
    const vmig_tls *t = ((const tls_conn *)gnutls_session_get_ptr(sess))->tls;
    for (uint32_t i = 0; i < t->nkeys; i++) {
        if (strcmp(t->keys[i].identity, identity))
            continue;
        key->data = gnutls_malloc(t->keys[i].key_len);
        if (!key->data)
            return -1;
        memcpy(key->data, t->keys[i].key, t->keys[i].key_len);
        key->size = t->keys[i].key_len;
        return 0;
    }
    return -1; /* unknown identity: the handshake fails */
}

int vmig_tls_create(vmig_tls **out, const vmig_tls_config *cfg, bool server, vmig_error *err)
{
    *out = NULL;
    if (cfg->mode != VMIG_TLS_MODE_X509 && cfg->mode != VMIG_TLS_MODE_PSK)
        return vmig_error_set(err, VMIG_EINVAL, "TLS: unknown mode %u", cfg->mode);
    if (!cfg->creds || !cfg->creds[0])
        return vmig_error_set(err, VMIG_EINVAL, "tls=%s needs tls-creds, the directory of the %s",
                              cfg->mode == VMIG_TLS_MODE_X509 ? "x509" : "psk",
                              cfg->mode == VMIG_TLS_MODE_X509 ? "certificates"
                                                              : "key file keys.psk");
    vmig_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for TLS");
    t->server = server;
    t->mode = cfg->mode;
    t->ktls = cfg->ktls;
    t->gnutls_records = cfg->gnutls_records;
    t->rekey_after = cfg->rekey_after;
    snprintf(t->authz, sizeof(t->authz), "%s", cfg->authz ? cfg->authz : "");
    const char *prio = cfg->priority && cfg->priority[0]
                           ? cfg->priority
                           : (cfg->mode == VMIG_TLS_MODE_X509 ? PRIO_X509 : PRIO_PSK);
    const char *errpos = NULL;
    int g = gnutls_priority_init(&t->prio, prio, &errpos);
    int rc = 0;
    char ca[4096], cert[4096], key[4096];
    if (g < 0) {
        rc = vmig_error_set(err, VMIG_EINVAL, "tls-priority '%s': %s at '%s'", prio,
                            gnutls_strerror(g), errpos ? errpos : "?");
        goto fail;
    }
    if (cfg->mode == VMIG_TLS_MODE_X509) {
        const char *side = server ? "server" : "client";
        char cn[32], kn[32];
        snprintf(cn, sizeof(cn), "%s-cert.pem", side);
        snprintf(kn, sizeof(kn), "%s-key.pem", side);
        if ((rc = file_in(ca, sizeof(ca), cfg->creds, "ca-cert.pem", err)) ||
            (rc = file_in(cert, sizeof(cert), cfg->creds, cn, err)) ||
            (rc = file_in(key, sizeof(key), cfg->creds, kn, err)))
            goto fail;
        if ((g = gnutls_certificate_allocate_credentials(&t->x509)) < 0) {
            rc = vmig_error_set(err, VMIG_ENOMEM, "TLS: %s", gnutls_strerror(g));
            goto fail;
        }
        if (access(ca, R_OK)) {
            rc = vmig_error_set(err, VMIG_ENOENT, "TLS: the CA certificate '%s': %s", ca,
                                strerror(errno));
            goto fail;
        }
        g = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM);
        if (g <= 0) {
            rc = g < 0 ? gnutls_fail(err, "the CA certificate", ca, g)
                       : vmig_error_set(err, VMIG_EINVAL, "TLS: '%s' holds no certificate", ca);
            goto fail;
        }
        char crl[4096];
        if ((rc = file_in(crl, sizeof(crl), cfg->creds, "ca-crl.pem", err)))
            goto fail;
        if (!access(crl, F_OK) &&
            (g = gnutls_certificate_set_x509_crl_file(t->x509, crl, GNUTLS_X509_FMT_PEM)) < 0) {
            rc = gnutls_fail(err, "the revocation list", crl, g);
            goto fail;
        }
        if (access(cert, R_OK) || access(key, R_OK)) {
            rc =
                vmig_error_set(err, VMIG_ENOENT,
                               "TLS: this %s's certificate '%s' or key '%s': %s (the %s side "
                               "needs both)",
                               side, cert, key, strerror(errno), server ? "destination" : "source");
            goto fail;
        }
        g = gnutls_certificate_set_x509_key_file(t->x509, cert, key, GNUTLS_X509_FMT_PEM);
        if (g < 0) {
            rc = gnutls_fail(err, "the certificate and key", cert, g);
            goto fail;
        }
    } else {
        if ((rc = file_in(key, sizeof(key), cfg->creds, "keys.psk", err)) ||
            (rc = load_psk(t, key, err)))
            goto fail;
        if (server) {
            if ((g = gnutls_psk_allocate_server_credentials(&t->psk_server)) < 0) {
                rc = vmig_error_set(err, VMIG_ENOMEM, "TLS: %s", gnutls_strerror(g));
                goto fail;
            }
            gnutls_psk_set_server_credentials_function(t->psk_server, psk_lookup);
        } else {
            const psk_entry *k = &t->keys[0];
            if (cfg->psk_identity && cfg->psk_identity[0]) {
                k = NULL;
                for (uint32_t i = 0; i < t->nkeys && !k; i++)
                    if (!strcmp(t->keys[i].identity, cfg->psk_identity))
                        k = &t->keys[i];
                if (!k) {
                    rc = vmig_error_set(err, VMIG_ENOENT, "TLS: %s has no key for identity '%s'",
                                        key, cfg->psk_identity);
                    goto fail;
                }
            }
            if ((g = gnutls_psk_allocate_client_credentials(&t->psk_client)) < 0) {
                rc = vmig_error_set(err, VMIG_ENOMEM, "TLS: %s", gnutls_strerror(g));
                goto fail;
            }
            gnutls_datum_t d = {(unsigned char *)k->key, k->key_len};
            if ((g = gnutls_psk_set_client_credentials(t->psk_client, k->identity, &d,
                                                       GNUTLS_PSK_KEY_RAW)) < 0) {
                rc = gnutls_fail(err, "the key of", k->identity, g);
                goto fail;
            }
        }
    }
    *out = t;
    return 0;
fail:
    vmig_tls_free(t);
    return rc;
}

void vmig_tls_free(vmig_tls *t)
{
    if (!t)
        return;
    if (t->prio)
        gnutls_priority_deinit(t->prio);
    if (t->x509)
        gnutls_certificate_free_credentials(t->x509);
    if (t->psk_client)
        gnutls_psk_free_client_credentials(t->psk_client);
    if (t->psk_server)
        gnutls_psk_free_server_credentials(t->psk_server);
    if (t->keys)
        memset(t->keys, 0, sizeof(*t->keys) * t->nkeys);
    free(t->keys);
    free(t);
}

/* ------------------------------------------------------------------ */
/* the protected connection                                            */

/* Send all of wbuf (the socket blocks; SO_SNDTIMEO ends a stalled peer
 * with EAGAIN). What was sent leaves the buffer, so a retry goes on. */
static int wbuf_flush(tls_conn *t)
{
    size_t off = 0;
    int rc = 0;
    while (off < t->wlen) {
        struct iovec v = {t->wbuf + off, t->wlen - off};
        ssize_t r = t->raw->ops->writev(t->raw, &v, 1);
        if (r == -EINTR)
            continue;
        if (r < 0) {
            rc = (int)r;
            break;
        }
        off += (size_t)r;
    }
    memmove(t->wbuf, t->wbuf + off, t->wlen - off);
    t->wlen -= off;
    return rc;
}

/* The connection whose GnuTLS reader runs on this thread: what GnuTLS
 * writes while reading (a KeyUpdate's answer) goes out at once, under wmu,
 * so that it never mixes with a writer thread's buffer. */
static _Thread_local tls_conn *tl_reading;

static ssize_t buf_push_locked(tls_conn *t, const giovec_t *iov, int iovcnt);

static ssize_t buf_push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
    tls_conn *t = p;
    if (tl_reading != t)
        return buf_push_locked(t, iov, iovcnt); /* the writer, holding wmu */
    pthread_mutex_lock(&t->wmu);
    ssize_t n = buf_push_locked(t, iov, iovcnt);
    int rc = n >= 0 && t->wlen ? wbuf_flush(t) : 0;
    pthread_mutex_unlock(&t->wmu);
    if (rc) {
        gnutls_transport_set_errno(t->sess, -rc);
        return -1;
    }
    return n;
}

static ssize_t buf_push_locked(tls_conn *t, const giovec_t *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *d = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left) {
            if (t->wlen == IOBUF) {
                int rc = wbuf_flush(t);
                if (rc && t->wlen == IOBUF) {
                    gnutls_transport_set_errno(t->sess, -rc);
                    return total ? (ssize_t)total : -1;
                }
            }
            size_t n = VMIG_MIN(left, IOBUF - t->wlen);
            memcpy(t->wbuf + t->wlen, d, n);
            t->wlen += n;
            d += n;
            left -= n;
            total += n;
        }
    }
    return (ssize_t)total;
}

static ssize_t buf_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    tls_conn *t = p;
    if (t->rpos == t->rlen) {
        struct iovec v = {t->rbuf, IOBUF};
        ssize_t r = t->raw->ops->readv(t->raw, &v, 1);
        if (r < 0) {
            t->pull_timeout = r == -EAGAIN;
            gnutls_transport_set_errno(t->sess, (int)-r);
            return -1;
        }
        t->rpos = 0;
        t->rlen = (size_t)r;
        if (!r)
            return 0;
    }
    size_t n = VMIG_MIN(len, t->rlen - t->rpos);
    memcpy(data, t->rbuf + t->rpos, n);
    t->rpos += n;
    return (ssize_t)n;
}

static int buf_pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
    tls_conn *t = p;
    if (t->rpos < t->rlen)
        return 1;
    int r = t->raw->ops->wait_readable(t->raw, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
    if (r < 0) {
        gnutls_transport_set_errno(t->sess, -r);
        return -1;
    }
    return r;
}

/* Replace GnuTLS's own socket calls with the buffered ones. */
static int buf_install(tls_conn *t)
{
    t->rbuf = malloc(IOBUF);
    t->wbuf = malloc(IOBUF);
    if (!t->rbuf || !t->wbuf)
        return -1;
    gnutls_transport_set_ptr(t->sess, t);
    gnutls_transport_set_vec_push_function(t->sess, buf_push);
    gnutls_transport_set_pull_function(t->sess, buf_pull);
    gnutls_transport_set_pull_timeout_function(t->sess, buf_pull_timeout);
    return 0;
}

/* A GnuTLS error as a transport one: the peer's close and timeouts keep
 * their meaning for the protocol; anything else (a record that fails its
 * authentication tag, an alert) is a protocol error, named in why. */
static ssize_t map_err(tls_conn *t, ssize_t g)
{
    switch (g) {
    case GNUTLS_E_AGAIN:
        return -EAGAIN;
    case GNUTLS_E_INTERRUPTED:
        return -EINTR;
    case GNUTLS_E_PREMATURE_TERMINATION:
        return 0; /* the peer closed without close_notify: our protocol ends itself */
    case GNUTLS_E_PULL_ERROR:
        return -ECONNRESET;
    case GNUTLS_E_PUSH_ERROR:
        return -EPIPE;
    case GNUTLS_E_FATAL_ALERT_RECEIVED:
        snprintf(t->c.why, sizeof(t->c.why), "TLS: the peer sent the alert '%s'",
                 gnutls_alert_get_name(gnutls_alert_get(t->sess)));
        return -EPROTO;
    default:
        snprintf(t->c.why, sizeof(t->c.why), "TLS: %s", gnutls_strerror((int)g));
        return -EPROTO;
    }
}

/* Whether a whole record waits in rbuf (GnuTLS pulls a record's header,
 * then exactly its body, so rpos is at a record's start between calls):
 * reading it cannot block. */
static bool rbuf_has_record(const tls_conn *t)
{
    size_t avail = t->rlen - t->rpos;
    if (avail < 5)
        return false;
    const uint8_t *h = t->rbuf + t->rpos;
    return avail >= 5 + ((size_t)h[3] << 8 | h[4]);
}

/* ------------------------------------------------------------------ */
/* vmig's record layer (tls_record.h), on the same buffers             */

#if OWN_RECORDS
/* The handshake's secrets as they are made (the first application ones
 * are all the record layer needs; KeyUpdate derives the next). */
static int keylog(gnutls_session_t sess, const char *label, const gnutls_datum_t *secret)
{
    tls_conn *t = gnutls_session_get_ptr(sess);
    int who = !strcmp(label, "CLIENT_TRAFFIC_SECRET_0")   ? 0
              : !strcmp(label, "SERVER_TRAFFIC_SECRET_0") ? 1
                                                          : -1;
    if (who >= 0 && secret->size <= sizeof(t->secret[who])) {
        memcpy(t->secret[who], secret->data, secret->size);
        t->secret_len[who] = secret->size;
    }
    return 0;
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Whether the keys GnuTLS holds for a direction are the ones the secret
 * gives (a check that both derive the same thing), and its sequence. */
static bool state_matches(tls_conn *t, unsigned read, const uint8_t *secret, uint64_t *seq)
{
    gnutls_datum_t mac = {0}, iv = {0}, key = {0};
    unsigned char sq[8];
    uint8_t mykey[32], myiv[12];
    if (gnutls_record_get_state(t->sess, read, &mac, &iv, &key, sq) < 0 ||
        vmig_tlsrec_derive(&t->rec, secret, mykey, myiv))
        return false;
    bool ok = key.size == t->rec.key_len && iv.size == 12 && !memcmp(key.data, mykey, key.size) &&
              !memcmp(iv.data, myiv, 12);
    gnutls_memset(mykey, 0, sizeof(mykey));
    *seq = be64(sq);
    return ok;
}

/* Takes the record layer over from GnuTLS where it can (AES-GCM, both
 * secrets exported, GnuTLS's keys the same); otherwise GnuTLS keeps it. */
static void own_install(tls_conn *t)
{
    int cipher = (int)gnutls_cipher_get(t->sess), mac;
    int me = t->tls->server ? 1 : 0;
    if (!vmig_tlsrec_supported(cipher, &mac) || !t->secret_len[0] ||
        t->secret_len[0] != t->secret_len[1] || gnutls_record_check_pending(t->sess))
        return;
    char why[128];
    /* a first init (the sequences are set below) to derive with */
    if (vmig_tlsrec_init(&t->rec, cipher, t->secret[!me], t->secret[me], t->secret_len[0], 0, 0,
                         why, sizeof(why)))
        return;
    uint64_t rseq, wseq;
    if (!state_matches(t, 1, t->secret[!me], &rseq) || !state_matches(t, 0, t->secret[me], &wseq)) {
        vmig_tlsrec_free(&t->rec);
        return;
    }
    t->rec.rd.seq = rseq;
    t->rec.wr.seq = wseq;
    if (t->tls->rekey_after)
        t->rec.rekey_after = t->tls->rekey_after;
    t->own = true;
}

/* Makes sure a whole record is at rpos: its size, 0 at the end of the
 * stream, or an error (the header's: -EPROTO with why). */
static ssize_t own_fill(tls_conn *t)
{
    for (;;) {
        size_t avail = t->rlen - t->rpos;
        if (avail >= VMIG_TLSREC_HDR) {
            ssize_t n = vmig_tlsrec_check_header(t->rbuf + t->rpos, t->c.why, sizeof(t->c.why));
            if (n < 0)
                return -EPROTO;
            if (avail >= (size_t)n)
                return n;
        }
        if (t->rpos == t->rlen || IOBUF - t->rpos < VMIG_TLSREC_WIRE_MAX) {
            memmove(t->rbuf, t->rbuf + t->rpos, avail);
            t->rpos = 0;
            t->rlen = avail;
        }
        struct iovec v = {t->rbuf + t->rlen, IOBUF - t->rlen};
        ssize_t r = t->raw->ops->readv(t->raw, &v, 1);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            return r;
        t->rlen += (size_t)r;
    }
}

static size_t iov_put(const struct iovec *iov, int iovcnt, vmig_iovpos *pos, const uint8_t *src,
                      size_t n)
{
    size_t done = 0;
    while (done < n && pos->i < iovcnt) {
        const struct iovec *v = &iov[pos->i];
        size_t c = VMIG_MIN(n - done, v->iov_len - pos->off);
        memcpy((uint8_t *)v->iov_base + pos->off, src + done, c);
        done += c;
        pos->off += c;
        if (pos->off == v->iov_len) {
            pos->i++;
            pos->off = 0;
        }
    }
    return done;
}

static ssize_t own_readv(tls_conn *t, const struct iovec *iov, int iovcnt)
{
    size_t room = 0, total = 0;
    for (int i = 0; i < iovcnt; i++)
        room += iov[i].iov_len;
    vmig_iovpos pos = {iov, iovcnt, 0, 0};
    while (total < room) {
        if (t->pend_len) {
            size_t n = iov_put(iov, iovcnt, &pos, t->pend, VMIG_MIN(t->pend_len, room - total));
            t->pend += n;
            t->pend_len -= n;
            total += n;
            continue;
        }
        if (t->rstate)
            break;
        /* block only for the first bytes, as readv does */
        if (total && !rbuf_has_record(t))
            break;
        ssize_t n = own_fill(t);
        if (n <= 0) {
            if (n == 0 || n == -EPROTO)
                t->rstate = n ? (int)n : 1;
            else if (!total)
                return n; /* a timeout, a reset: as the socket said */
            break;
        }
        vmig_tlsrec_opened o;
        vmig_tlsrec_open(&t->rec, t->rbuf + t->rpos, (size_t)n, &pos, room - total, &o, t->c.why,
                         sizeof(t->c.why));
        t->rpos += (size_t)n;
        if (o.kind == VMIG_TLSREC_DATA) {
            total += o.to_dst;
            t->pend = o.rest;
            t->pend_len = o.rest_len;
        } else if (o.kind == VMIG_TLSREC_CLOSE) {
            t->rstate = 1;
        } else if (o.kind == VMIG_TLSREC_ERROR) {
            t->rstate = -EPROTO;
        }
    }
    if (!total && t->rstate)
        return t->rstate < 0 ? t->rstate : 0;
    return (ssize_t)total;
}

static ssize_t own_writev(tls_conn *t, const struct iovec *iov, int iovcnt)
{
    size_t left = 0;
    for (int i = 0; i < iovcnt; i++)
        left += iov[i].iov_len;
    size_t total = left;
    vmig_iovpos pos = {iov, iovcnt, 0, 0};
    const size_t small = 2048; /* a record shorter than this waits for the next buffer */
    int rc = 0;
    while (left && !rc) {
        size_t space = IOBUF - t->wlen;
        if (space < VMIG_TLSREC_OVERHEAD + VMIG_MIN(left, small) + VMIG_TLSREC_OVERHEAD + 8) {
            rc = wbuf_flush(t);
            continue;
        }
        ssize_t n;
        if (vmig_tlsrec_update_due(&t->rec) || t->update_request) {
            n = vmig_tlsrec_seal_key_update(&t->rec, t->update_request, t->wbuf + t->wlen, t->c.why,
                                            sizeof(t->c.why));
            t->update_request = false;
            if (n < 0)
                return -EPROTO;
            t->wlen += (size_t)n;
            continue;
        }
        size_t used, want = VMIG_MIN(VMIG_MIN(left, VMIG_TLSREC_MAX), space - VMIG_TLSREC_OVERHEAD);
        n = vmig_tlsrec_seal(&t->rec, VMIG_TLSREC_APPDATA, &pos, want, &used, t->wbuf + t->wlen,
                             t->c.why, sizeof(t->c.why));
        if (n < 0)
            return -EPROTO;
        t->wlen += (size_t)n;
        left -= used;
    }
    if (!rc && t->wlen)
        rc = wbuf_flush(t);
    return rc ? rc : (ssize_t)total;
}
#else
static void own_install(tls_conn *t)
{
    (void)t;
}
static ssize_t own_readv(tls_conn *t, const struct iovec *iov, int iovcnt)
{
    (void)t, (void)iov, (void)iovcnt;
    return -EPROTO;
}
static ssize_t own_writev(tls_conn *t, const struct iovec *iov, int iovcnt)
{
    (void)t, (void)iov, (void)iovcnt;
    return -EPROTO;
}
#endif

static ssize_t tls_readv(vmig_conn *c_, const struct iovec *iov, int iovcnt)
{
    tls_conn *t = (tls_conn *)c_;
    if (t->ktls)
        return t->raw->ops->readv(t->raw, iov, iovcnt);
    if (t->own)
        return own_readv(t, iov, iovcnt);
    tl_reading = t;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_len)
            continue;
        /* block only for the first bytes, as readv does */
        if (total && !gnutls_record_check_pending(t->sess) && !rbuf_has_record(t))
            break;
        /* GnuTLS says "again" after a post-handshake message (a peer's
         * KeyUpdate) too: only a socket that timed out is a timeout */
        ssize_t r;
        do {
            t->pull_timeout = false;
            r = gnutls_record_recv(t->sess, iov[i].iov_base, iov[i].iov_len);
        } while ((r == GNUTLS_E_AGAIN && !t->pull_timeout) || r == GNUTLS_E_INTERRUPTED);
        if (r <= 0) {
            if (total)
                break; /* the error comes back with the next call */
            tl_reading = NULL;
            return r == 0 ? 0 : map_err(t, r);
        }
        total += (size_t)r;
        if ((size_t)r < iov[i].iov_len)
            break;
    }
    tl_reading = NULL;
    return (ssize_t)total;
}

static int send_all(tls_conn *t, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t r = gnutls_record_send(t->sess, p, len);
        if (r == GNUTLS_E_INTERRUPTED)
            continue;
        if (r < 0)
            return (int)map_err(t, r);
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Writes everything or fails (a TLS stream cannot resume a record that was
 * half written). Small pieces (a packet's header and offsets) are gathered
 * into full records; large ones go out from where they are. */
static ssize_t gnutls_writev(tls_conn *t, const struct iovec *iov, int iovcnt);

static ssize_t tls_writev(vmig_conn *c_, const struct iovec *iov, int iovcnt)
{
    tls_conn *t = (tls_conn *)c_;
    if (t->ktls)
        return t->raw->ops->writev(t->raw, iov, iovcnt);
    if (t->own)
        return own_writev(t, iov, iovcnt);
    pthread_mutex_lock(&t->wmu);
    ssize_t n = gnutls_writev(t, iov, iovcnt);
    pthread_mutex_unlock(&t->wmu);
    return n;
}

/* GnuTLS's records, under wmu (see tl_reading). */
static ssize_t gnutls_writev(tls_conn *t, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    int rc = 0;
    for (int i = 0; i < iovcnt && !rc; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        total += left;
        while (left && !rc) {
            if (!t->stage_len && left >= REC_MAX) {
                size_t n = left - left % REC_MAX;
                rc = send_all(t, p, n);
                p += n;
                left -= n;
                continue;
            }
            size_t n = VMIG_MIN(left, REC_MAX - t->stage_len);
            memcpy(t->stage + t->stage_len, p, n);
            t->stage_len += n;
            p += n;
            left -= n;
            if (t->stage_len == REC_MAX) {
                rc = send_all(t, t->stage, REC_MAX);
                t->stage_len = 0;
            }
        }
    }
    if (!rc && t->stage_len)
        rc = send_all(t, t->stage, t->stage_len);
    t->stage_len = 0;
    if (!rc && t->wlen)
        rc = wbuf_flush(t);
    return rc ? rc : (ssize_t)total;
}

static int tls_wait_readable(vmig_conn *c_, int timeout_ms)
{
    tls_conn *t = (tls_conn *)c_;
    if (t->own && (t->pend_len || t->rstate || rbuf_has_record(t)))
        return 1;
    if (!t->own && !t->ktls && (gnutls_record_check_pending(t->sess) || t->rpos < t->rlen))
        return 1;
    return t->raw->ops->wait_readable(t->raw, timeout_ms);
}

static void tls_shutdown(vmig_conn *c_)
{
    tls_conn *t = (tls_conn *)c_;
    t->raw->ops->shutdown(t->raw);
}

static void tls_close(vmig_conn *c_)
{
    tls_conn *t = (tls_conn *)c_;
    gnutls_deinit(t->sess);
    vmig_conn_close(t->raw);
    if (t->own)
        vmig_tlsrec_free(&t->rec);
    gnutls_memset(t->secret, 0, sizeof(t->secret));
    free(t->rbuf);
    free(t->wbuf);
    pthread_mutex_destroy(&t->wmu);
    free(t);
}

static const vmig_conn_ops tls_conn_ops = {
    .readv = tls_readv,
    .writev = tls_writev,
    .wait_readable = tls_wait_readable,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

int vmig_tls_key_update(vmig_conn *c, bool request)
{
    if (!c || c->ops != &tls_conn_ops)
        return -EINVAL;
    tls_conn *t = (tls_conn *)c;
    if (t->ktls)
        return -EINVAL;
    if (t->own) {
        if (request)
            t->update_request = true;
        else
            __atomic_store_n(&t->rec.update_owed, true, __ATOMIC_RELAXED);
        return 0;
    }
    pthread_mutex_lock(&t->wmu);
    int g = gnutls_session_key_update(t->sess, request ? GNUTLS_KU_PEER : 0);
    int rc = g < 0 ? (int)map_err(t, g) : t->wlen ? wbuf_flush(t) : 0;
    pthread_mutex_unlock(&t->wmu);
    return rc;
}

bool vmig_conn_tls_info(const vmig_conn *c, char *desc, size_t len, bool *ktls)
{
    if (len)
        desc[0] = 0;
    *ktls = false;
    if (!c || c->ops != &tls_conn_ops)
        return false;
    const tls_conn *t = (const tls_conn *)c;
    snprintf(desc, len, "%s", t->desc);
    *ktls = t->ktls;
    return true;
}

void vmig_tls_ktls_why_not(char *buf, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int e = 0;
    /* The kernel looks the upper-layer protocol up before it checks the
     * socket's state: ENOENT means no tls module, ENOTCONN that it exists. */
    if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3))
        e = errno;
    if (fd >= 0)
        close(fd);
    if (e == ENOENT)
        snprintf(buf, len, "this kernel has no tls module (CONFIG_TLS)");
    else
        snprintf(buf, len,
                 "GnuTLS leaves it off (enable with 'ktls = true' in the [global] section of %s)",
                 gnutls_get_system_config_file());
}

/* A client that speaks no TLS sends our own handshake in the clear: say so
 * instead of GnuTLS's "unexpected packet". Waits for the first bytes. */
bool vmig_tls_peer_is_plain(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint8_t b[3];
    if (poll(&p, 1, timeout_ms) != 1)
        return false;
    ssize_t n = recv(fd, b, sizeof(b), MSG_PEEK);
    return n > 0 && b[0] != 0x16; /* 0x16: a TLS handshake record */
}

static int hs_fail(tls_conn *t, vmig_error *err, int g, bool server)
{
    const char *peer = t->raw->peer;
    if (g == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t out = {0};
        unsigned status = gnutls_session_get_verify_cert_status(t->sess);
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
        for (size_t n = out.data ? strlen((char *)out.data) : 0; n && out.data[n - 1] == ' '; n--)
            out.data[n - 1] = 0; /* GnuTLS ends each sentence with a space */
        int rc = vmig_error_set(err, VMIG_EAUTH, "%s: TLS: the %s's certificate is refused: %s",
                                peer, server ? "source" : "destination",
                                out.data ? (const char *)out.data : "(no detail)");
        gnutls_free(out.data);
        return rc;
    }
    const vmig_tls *tls = t->tls;
    const char *hint = "";
    if (g == GNUTLS_E_INSUFFICIENT_CREDENTIALS || g == GNUTLS_E_NO_CIPHER_SUITES ||
        g == GNUTLS_E_UNKNOWN_CIPHER_SUITE || g == GNUTLS_E_NO_COMMON_KEY_SHARE)
        hint = " (do both sides set the same tls mode and priorities?)";
    else if (tls->mode == VMIG_TLS_MODE_PSK)
        hint = " (tls=psk: do both sides hold the same key for the same identity?)";
    if (g == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        gnutls_alert_description_t a = gnutls_alert_get(t->sess);
        bool cert = a == GNUTLS_A_BAD_CERTIFICATE || a == GNUTLS_A_UNKNOWN_CA ||
                    a == GNUTLS_A_CERTIFICATE_EXPIRED || a == GNUTLS_A_CERTIFICATE_REVOKED ||
                    a == GNUTLS_A_CERTIFICATE_UNKNOWN || a == GNUTLS_A_UNSUPPORTED_CERTIFICATE ||
                    a == GNUTLS_A_ACCESS_DENIED || a == GNUTLS_A_CERTIFICATE_REQUIRED;
        if (a == GNUTLS_A_HANDSHAKE_FAILURE || a == GNUTLS_A_INSUFFICIENT_SECURITY)
            hint = " (do both sides set the same tls mode and priorities?)";
        return vmig_error_set(err, VMIG_EAUTH, "%s: TLS: the %s refused %s (alert '%s')%s", peer,
                              server ? "source" : "destination",
                              cert ? "this side's certificate" : "the handshake",
                              gnutls_alert_get_name(a), hint);
    }
    if (g == GNUTLS_E_TIMEDOUT || g == GNUTLS_E_AGAIN)
        return vmig_error_set(err, VMIG_ETIMEDOUT, "%s: TLS: the handshake timed out", peer);
    if (g == GNUTLS_E_PREMATURE_TERMINATION || g == GNUTLS_E_PULL_ERROR || g == GNUTLS_E_PUSH_ERROR)
        return vmig_error_set(err, VMIG_ECONN,
                              "%s: TLS: the %s closed the connection during the handshake (does "
                              "it use TLS, with credentials this side accepts?)",
                              peer, server ? "source" : "destination");
    return vmig_error_set(err, VMIG_EAUTH, "%s: TLS handshake failed: %s%s", peer,
                          gnutls_strerror(g), hint);
}

static void set_rcvtimeo(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

int vmig_tls_handshake(vmig_tls *tls, vmig_conn **cp, const char *hostname, int timeout_ms,
                       vmig_error *err)
{
    vmig_conn *raw = *cp;
    if (raw->fd < 0)
        return vmig_error_set(err, VMIG_ENOTSUP, "%s: TLS needs a socket", raw->peer);
    bool server = tls->server;
    if (!server && tls->mode == VMIG_TLS_MODE_X509 && (!hostname || !hostname[0]))
        return vmig_error_set(err, VMIG_EINVAL,
                              "TLS: no name to check the destination's certificate against: set "
                              "tls-hostname (a unix URI has no host name)");
    tls_conn *t = calloc(1, sizeof(*t));
    if (!t)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a TLS connection");
    t->raw = raw;
    pthread_mutex_init(&t->wmu, NULL);
    t->c.ops = &tls_conn_ops;
    t->c.fd = raw->fd;
    memcpy(t->c.peer, raw->peer, sizeof(t->c.peer));
    int rc = 0, g = gnutls_init(&t->sess, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                                              GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS);
    if (g < 0) {
        pthread_mutex_destroy(&t->wmu);
        free(t);
        return vmig_error_set(err, VMIG_ENOMEM, "TLS: %s", gnutls_strerror(g));
    }
    t->tls = tls;
    gnutls_session_set_ptr(t->sess, t);
#if OWN_RECORDS
    gnutls_session_set_keylog_function(t->sess, keylog);
#endif
    g = gnutls_priority_set(t->sess, tls->prio);
    if (g >= 0 && tls->mode == VMIG_TLS_MODE_X509) {
        g = gnutls_credentials_set(t->sess, GNUTLS_CRD_CERTIFICATE, tls->x509);
        if (server) {
            gnutls_certificate_server_set_request(t->sess, GNUTLS_CERT_REQUIRE);
            gnutls_session_set_verify_cert(t->sess, tls->authz[0] ? tls->authz : NULL, 0);
        } else {
            struct in6_addr a6;
            struct in_addr a4;
            bool ip =
                inet_pton(AF_INET, hostname, &a4) == 1 || inet_pton(AF_INET6, hostname, &a6) == 1;
            if (g >= 0 && !ip) /* SNI carries DNS names only */
                g = gnutls_server_name_set(t->sess, GNUTLS_NAME_DNS, hostname, strlen(hostname));
            gnutls_session_set_verify_cert(t->sess, hostname, 0);
        }
    } else if (g >= 0) {
        g = server ? gnutls_credentials_set(t->sess, GNUTLS_CRD_PSK, tls->psk_server)
                   : gnutls_credentials_set(t->sess, GNUTLS_CRD_PSK, tls->psk_client);
    }
    if (g < 0) {
        rc = vmig_error_set(err, VMIG_EINVAL, "TLS: %s", gnutls_strerror(g));
        goto fail;
    }
    gnutls_transport_set_int(t->sess, raw->fd);
    gnutls_handshake_set_timeout(t->sess, (unsigned)timeout_ms);
    set_rcvtimeo(raw->fd, timeout_ms); /* a silent peer in the confirmation read */
    uint64_t deadline = vmig_now_ns() + (uint64_t)timeout_ms * 1000000u;
    do {
        g = gnutls_handshake(t->sess);
    } while (g < 0 && !gnutls_error_is_fatal(g) && vmig_now_ns() < deadline);
    if (g < 0) {
        rc = hs_fail(t, err, g, server);
        /* Tell the peer why (a refused certificate, a wrong key), so that
         * it fails with the reason rather than waiting or guessing. */
        if (gnutls_error_is_fatal(g) && g != GNUTLS_E_FATAL_ALERT_RECEIVED &&
            g != GNUTLS_E_PREMATURE_TERMINATION && g != GNUTLS_E_PUSH_ERROR &&
            g != GNUTLS_E_PULL_ERROR)
            gnutls_alert_send_appropriate(t->sess, g);
        goto fail;
    }
    /* The confirmation: one byte from the server once it accepted us. */
    uint8_t ok = 'V';
    ssize_t r;
    do {
        r = server ? gnutls_record_send(t->sess, &ok, 1) : gnutls_record_recv(t->sess, &ok, 1);
    } while (r == GNUTLS_E_INTERRUPTED);
    if (r != 1 || ok != 'V') {
        rc = r < 0 ? hs_fail(t, err, (int)r, server)
                   : vmig_error_set(err, VMIG_EPROTO, "%s: TLS: no confirmation from the %s",
                                    raw->peer, server ? "source" : "destination");
        goto fail;
    }
    set_rcvtimeo(raw->fd, 0);
    t->ktls =
        (gnutls_transport_is_ktls_enabled(t->sess) & GNUTLS_KTLS_DUPLEX) == GNUTLS_KTLS_DUPLEX;
    if (!t->ktls && tls->ktls == VMIG_TLS_KTLS_MODE_REQUIRE) {
        char why[192];
        vmig_tls_ktls_why_not(why, sizeof(why));
        rc = vmig_error_set(err, VMIG_ENOTSUP, "%s: tls-ktls=require, but kernel TLS is off: %s",
                            raw->peer, why);
        goto fail;
    }
    if (!t->ktls && buf_install(t)) {
        rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for TLS buffers");
        goto fail;
    }
    if (!t->ktls && !tls->gnutls_records)
        own_install(t);
    gnutls_memset(t->secret, 0, sizeof(t->secret));
    snprintf(t->desc, sizeof(t->desc), "%s %s %s%s",
             gnutls_protocol_get_name(gnutls_protocol_get_version(t->sess)),
             tls->mode == VMIG_TLS_MODE_X509 ? "x509" : "psk",
             gnutls_cipher_get_name(gnutls_cipher_get(t->sess)),
             t->ktls  ? ""
             : t->own ? (t->rec.rd.g ? ", vmig records (VAES)" : ", vmig records")
                      : ", GnuTLS records");
    *cp = &t->c;
    return 0;
fail:
    set_rcvtimeo(raw->fd, 0);
    gnutls_memset(t->secret, 0, sizeof(t->secret));
    gnutls_deinit(t->sess);
    free(t->rbuf);
    free(t->wbuf);
    pthread_mutex_destroy(&t->wmu);
    free(t);
    return rc;
}

#else /* !VMIG_HAVE_GNUTLS */

struct vmig_tls {
    int unused;
};

bool vmig_tls_built(void)
{
    return false;
}

bool vmig_tls_peer_is_plain(int fd, int timeout_ms)
{
    (void)fd;
    (void)timeout_ms;
    return false;
}

int vmig_tls_create(vmig_tls **out, const vmig_tls_config *cfg, bool server, vmig_error *err)
{
    (void)cfg;
    (void)server;
    *out = NULL;
    return vmig_error_set(err, VMIG_ENOTSUP, "TLS is not built (GnuTLS was missing at build time)");
}

void vmig_tls_free(vmig_tls *t)
{
    (void)t;
}

int vmig_tls_handshake(vmig_tls *t, vmig_conn **c, const char *hostname, int timeout_ms,
                       vmig_error *err)
{
    (void)t;
    (void)c;
    (void)hostname;
    (void)timeout_ms;
    return vmig_error_set(err, VMIG_ENOTSUP, "TLS is not built");
}

int vmig_tls_key_update(vmig_conn *c, bool request)
{
    (void)c;
    (void)request;
    return -EINVAL;
}

bool vmig_conn_tls_info(const vmig_conn *c, char *desc, size_t len, bool *ktls)
{
    (void)c;
    if (len)
        desc[0] = 0;
    *ktls = false;
    return false;
}

void vmig_tls_ktls_why_not(char *buf, size_t len)
{
    snprintf(buf, len, "TLS is not built");
}

#endif

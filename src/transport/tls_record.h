/*
 * vmig's own TLS 1.3 record layer (RFC 8446 section 5) for AES-GCM, used
 * after GnuTLS's handshake in place of GnuTLS's record functions, with the
 * traffic secrets the handshake exported. The point is the copies: a record
 * is encrypted while it is gathered from the source's pages into the send
 * buffer, and decrypted from the receive buffer straight into the
 * destination's pages, so TLS costs plain's copies plus the cipher
 * (GnuTLS's records add two copies on receive and one on send).
 *
 * The wire is standard TLS 1.3 (a GnuTLS record layer on the other side
 * reads and writes it, tests/unit/test_tls_record.c): application data in
 * records of up to 2^14 bytes, the inner content type after the content,
 * the 5-byte header as additional data, the nonce the static IV XOR the
 * sequence number. KeyUpdate both ways (this side updates its key after
 * rekey_after records, and answers a peer's update_requested), alerts
 * (close_notify is the end of the stream, any other alert an error with
 * its name). Nothing else is accepted after the handshake: an
 * unknown record type, a handshake message that is not KeyUpdate, a record
 * over 2^14 + 256 bytes, no content type: each is an error that ends the
 * connection.
 *
 * Order of checks on receive: the header (type, version, length) before
 * any byte is decrypted; then the record is decrypted into the caller's
 * buffers and its tag checked: a record whose tag fails may have left
 * unauthenticated bytes in the caller's buffer beyond what it was told it
 * received (as kernel TLS does), never within it and never outside it.
 *
 * This module does no I/O: tls.c moves the bytes (and tests/fuzz drives
 * it with sealed and tampered records).
 */
#ifndef VMIG_TLS_RECORD_H
#define VMIG_TLS_RECORD_H

#include <sys/uio.h>

#include "base/base.h"

#define VMIG_TLSREC_MAX      16384u /* content per record */
#define VMIG_TLSREC_HDR      5u
#define VMIG_TLSREC_TAG      16u
#define VMIG_TLSREC_OVERHEAD (VMIG_TLSREC_HDR + 1u + VMIG_TLSREC_TAG) /* per record we send */
#define VMIG_TLSREC_BODY_MAX (VMIG_TLSREC_MAX + 256u) /* RFC 8446: the largest ciphertext */
#define VMIG_TLSREC_WIRE_MAX (VMIG_TLSREC_HDR + VMIG_TLSREC_BODY_MAX)
/* Records per key before this side sends a KeyUpdate: AES-GCM's limit is
 * 2^24.5 records per key (RFC 8446 section 5.5); half of 2^24. */
#define VMIG_TLSREC_REKEY (1ull << 23)

/* inner content types */
enum {
    VMIG_TLSREC_ALERT = 21,
    VMIG_TLSREC_HANDSHAKE = 22,
    VMIG_TLSREC_APPDATA = 23,
};

typedef struct vmig_tlsrec_dir {
    void *h;            /* gnutls_cipher_hd_t, or NULL when g */
    struct vmig_gcm *g; /* vmig's VAES AES-GCM (gcm.h), where the CPU has it */
    uint8_t secret[48];
    uint8_t iv[12];
    uint64_t seq;
} vmig_tlsrec_dir;

typedef struct vmig_tlsrec {
    int cipher; /* gnutls_cipher_algorithm_t: AES-128-GCM or AES-256-GCM */
    int mac;    /* the HKDF hash: SHA-256 or SHA-384 */
    uint32_t key_len, secret_len;
    vmig_tlsrec_dir rd, wr;
    uint64_t rekey_after; /* records per write key (VMIG_TLSREC_REKEY) */
    /* the peer asked for our KeyUpdate: send it before data (set by the
     * reader, cleared by the writer: atomic) */
    bool update_owed;
    uint64_t updates_sent, updates_received;
} vmig_tlsrec;

/* Whether this module handles a cipher (gnutls_cipher_algorithm_t), and
 * the hash of its TLS 1.3 suite (gnutls_mac_algorithm_t) in *mac. */
bool vmig_tlsrec_supported(int cipher, int *mac);

/* Sets both directions up from the application traffic secrets (the
 * client's and the server's, as this side reads and writes them) and the
 * sequence numbers the handshake left. Returns 0, or -1 with why set. */
int vmig_tlsrec_init(vmig_tlsrec *r, int cipher, const uint8_t *rsecret, const uint8_t *wsecret,
                     size_t secret_len, uint64_t rseq, uint64_t wseq, char *why, size_t whylen);
void vmig_tlsrec_free(vmig_tlsrec *r);

/* The key and IV a secret gives (for the check against GnuTLS's state). */
int vmig_tlsrec_derive(const vmig_tlsrec *r, const uint8_t *secret, uint8_t *key, uint8_t iv[12]);

/* A position in a list of buffers. */
typedef struct vmig_iovpos {
    const struct iovec *iov;
    int cnt;
    int i;      /* current buffer */
    size_t off; /* offset in it */
} vmig_iovpos;

/*
 * Seals one record of up to n (<= VMIG_TLSREC_MAX) bytes taken from *src
 * (which advances), inner type `type`, into out (n + VMIG_TLSREC_OVERHEAD
 * bytes); *used says how many (fewer than n only when they lie in more than
 * VMIG_TLSREC_SEGS buffers). Returns the record's size, or -1 with why set.
 */
#define VMIG_TLSREC_SEGS 64
ssize_t vmig_tlsrec_seal(vmig_tlsrec *r, uint8_t type, vmig_iovpos *src, size_t n, size_t *used,
                         uint8_t *out, char *why, size_t whylen);

/*
 * Seals the KeyUpdate this side owes or wants (request: ask the peer to
 * update too) into out (VMIG_TLSREC_OVERHEAD + 5 bytes), then moves the
 * write direction to the next key. Returns the record's size or -1.
 */
ssize_t vmig_tlsrec_seal_key_update(vmig_tlsrec *r, bool request, uint8_t *out, char *why,
                                    size_t whylen);

/* Whether the next write must first send a KeyUpdate (owed to the peer, or
 * this side's key is worn). */
static inline bool vmig_tlsrec_update_due(const vmig_tlsrec *r)
{
    return __atomic_load_n(&r->update_owed, __ATOMIC_RELAXED) || r->wr.seq >= r->rekey_after;
}

/* The length of the record whose header is at h (5 bytes), or -1 with why
 * set when the header is not one of an encrypted TLS 1.3 record. */
ssize_t vmig_tlsrec_check_header(const uint8_t *h, char *why, size_t whylen);

typedef enum vmig_tlsrec_kind {
    VMIG_TLSREC_DATA,    /* application data: to_dst bytes in the buffers, rest_len in rest */
    VMIG_TLSREC_CONTROL, /* a KeyUpdate, done: nothing for the caller */
    VMIG_TLSREC_CLOSE,   /* close_notify: the end of the stream */
    VMIG_TLSREC_ERROR,   /* why says what */
} vmig_tlsrec_kind;

typedef struct vmig_tlsrec_opened {
    vmig_tlsrec_kind kind;
    size_t to_dst; /* content bytes written to *dst (which advanced by them) */
    uint8_t *rest; /* content beyond what dst could take, decrypted in place */
    size_t rest_len;
} vmig_tlsrec_opened;

/*
 * Opens the complete record rec (header and body, len bytes, the header
 * checked by vmig_tlsrec_check_header): its content goes to *dst, up to
 * room bytes; what does not fit is decrypted in place in rec (rest). The
 * record's body is modified in every case.
 */
void vmig_tlsrec_open(vmig_tlsrec *r, uint8_t *rec, size_t len, vmig_iovpos *dst, size_t room,
                      vmig_tlsrec_opened *out, char *why, size_t whylen);

#endif /* VMIG_TLS_RECORD_H */

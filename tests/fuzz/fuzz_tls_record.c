/*
 * libFuzzer target: vmig's TLS 1.3 record layer (src/transport/tls_record.c),
 * the side that receives.
 *
 * Two vmig_tlsrec with fixed, mirrored secrets: the sender seals, the
 * receiver checks headers and opens. The input is a script. Byte 0: bit 0
 * the cipher (AES-128-GCM, AES-256-GCM), bits 1-3 the sender's rekey_after
 * (1..7 records; 0: the default), bit 4: every sequence starts 8 records
 * before the end of its space. Then operations, each an opcode byte (bits
 * 0-2 the operation, bits 6-7 its flags) and its arguments (bytes past the
 * end of the input read as 0):
 *
 *   0 data       u16 length (mod 2^14 + 1), u8 shape of the source iovecs,
 *                then with flag 0x80 the content itself, else u8 seed of
 *                generated content: vmig_tlsrec_seal(), after the KeyUpdate
 *                the sender is due to send (asking for the receiver's with
 *                flag 0x40), as own_writev() does
 *   1 inner      flag 0x80: u16 length (mod 16625), that many bytes, an inner
 *                plaintext as is; else u16 content length (mod 2^14 + 1),
 *                u8 content type, u16 padding, u8 seed: encrypted here with
 *                GnuTLS's one-shot AEAD under the sender's key and sequence
 *                (authentic records of any content type, padding, alert,
 *                handshake message, or none at all)
 *   2 keyupdate  u8 (bit 0: request): vmig_tlsrec_seal_key_update()
 *   3 flip       u16 position, u8 mask (0: 1): XOR into the pending record
 *   4 length     u16: the pending record's length field; its body cut or
 *                extended with zeros to match
 *   5 raw        u16 length (mod 1024), that many bytes: a record as is
 *   6 deliver    u8 shape, u16 room: the receiver opens the pending record
 *   7 replay     u8 shape, u16 room: the last record delivered, again
 *
 * A record made while another is pending delivers that one first. A
 * delivery takes as many bytes as the header says (zeros past the record's
 * end, as if the stream went on), in an exact-size heap copy, and opens them
 * into up to 96 buffers with guard bytes between them, from an offset into
 * the first, with the room the shape gives.
 *
 * Traps when: bytes outside the first `room` bytes of the buffers changed;
 * to_dst exceeds room, or to_dst + rest_len the record's content; rest lies
 * outside the record; dst did not advance by to_dst; an error has no reason;
 * a record of the sender's that was changed, replayed, skipped or is under
 * another key opens; an authentic record's outcome differs from RFC 8446's
 * (content, padding, content type, close_notify, KeyUpdate) or its content
 * from what was sealed; a KeyUpdate does not move the key on. The receiver's
 * answer to a KeyUpdate that asks for one is opened by the sender. After a
 * KeyUpdate the receiver opened, the sender moves its key on too.
 *
 * Inner plaintexts over 2^14 + 1 bytes (RFC 8446 5.4 forbids them) must be
 * refused as record_overflow before they are decrypted, the sequence kept.
 */
#include <stdlib.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "src/transport/tls_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

#define INNER_MAX   (VMIG_TLSREC_BODY_MAX - VMIG_TLSREC_TAG) /* 16624 */
#define WIRE_CAP    (VMIG_TLSREC_HDR + 65535u)
#define MAX_RECORDS 200
#define GUARD       8
#define FILL        0xA5

static const uint8_t secret_tx[48] = "vmig fuzz: the sender's traffic secret, 48 byte";
static const uint8_t secret_rx[48] = "vmig fuzz: the receiver's traffic secret, 48 by";

typedef struct in {
    const uint8_t *p;
    size_t n;
} in;

static uint8_t get8(in *s)
{
    if (!s->n)
        return 0;
    s->n--;
    return *s->p++;
}

static uint16_t get16(in *s)
{
    uint16_t hi = get8(s);
    return (uint16_t)(hi << 8 | get8(s));
}

static uint64_t mix(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A record on its way to the receiver. */
typedef struct record {
    bool present;
    bool ours;           /* the sender made it (else: raw bytes from the input) */
    uint64_t epoch, seq; /* ours: the sender's key (updates so far) and sequence */
    size_t inner_len, len, orig_len;
    uint8_t inner[INNER_MAX];           /* ours: its inner plaintext */
    uint8_t wire[WIRE_CAP];             /* as it will be delivered */
    uint8_t orig[VMIG_TLSREC_WIRE_MAX]; /* ours: as it was made */
} record;

/* Ours and not changed (flips and length changes may have been undone). */
static bool untouched(const record *r)
{
    return r->ours && r->len == r->orig_len && !memcmp(r->wire, r->orig, r->len);
}

static void made(record *r)
{
    r->present = r->ours = true;
    r->orig_len = r->len;
    memcpy(r->orig, r->wire, r->len);
}

typedef struct harness {
    vmig_tlsrec tx, rx; /* tx: the sender (writes with secret_tx); rx: the receiver */
    record pend, last;  /* last: the one delivered last (its wire as delivered) */
    unsigned records, deliveries;
} harness;

/* ------------------------------------------------------------------ */
/* what RFC 8446 says a decrypted inner plaintext is                   */

typedef struct expect {
    vmig_tlsrec_kind kind;
    const uint8_t *content;
    size_t len;
    bool overflow; /* over 2^14 + 1 bytes: refused before decryption */
    bool request;
} expect;

static expect model(const uint8_t *inner, size_t n)
{
    expect e = {.kind = VMIG_TLSREC_ERROR, .overflow = n > VMIG_TLSREC_MAX + 1};
    if (e.overflow)
        return e;
    size_t l = n;
    while (l && !inner[l - 1])
        l--;
    if (!l)
        return e; /* all padding */
    uint8_t type = inner[l - 1];
    const uint8_t *c = inner;
    l--;
    if (type == VMIG_TLSREC_APPDATA) {
        e.kind = VMIG_TLSREC_DATA;
        e.content = c;
        e.len = l;
    } else if (type == VMIG_TLSREC_ALERT) {
        if (l == 2 && c[1] == 0)
            e.kind = VMIG_TLSREC_CLOSE;
    } else if (type == VMIG_TLSREC_HANDSHAKE) {
        if (l == 5 && c[0] == 24 && !c[1] && !c[2] && c[3] == 1 && c[4] <= 1) {
            e.kind = VMIG_TLSREC_CONTROL;
            e.request = c[4];
        }
    }
    return e;
}

/* ------------------------------------------------------------------ */
/* opening                                                             */

/* Opens wire[0..len) (its header checked to say len) into buffers the shape
 * makes; checks the API's promises; the content (DATA) in got, got_len bytes. */
static vmig_tlsrec_kind open_into(vmig_tlsrec *r, const uint8_t *wire, size_t len, uint8_t shape,
                                  uint16_t room16, uint8_t *got, size_t *got_len)
{
    size_t ct = len - VMIG_TLSREC_HDR - VMIG_TLSREC_TAG;
    uint8_t *rec = malloc(len);
    ASSERT(rec);
    memcpy(rec, wire, len);
    uint64_t st = (uint64_t)shape << 32 ^ len ^ room16;
    size_t sizes[96], total = 0, want = ct + mix(&st) % 64;
    int nd = 0;
    while (nd < 96 && (total < want || !nd)) {
        size_t s;
        switch (shape & 3) {
        case 0:
            s = want;
            break;
        case 1:
            s = mix(&st) % 4 ? 1 + mix(&st) % 40 : 0;
            break;
        case 2:
            s = mix(&st) % 3 ? 4096 : mix(&st) % 2 ? 15 + mix(&st) % 3 : mix(&st) % 5000;
            break;
        default:
            s = mix(&st) % (want + 1);
        }
        sizes[nd++] = s;
        total += s;
    }
    size_t start = shape & 0x40 ? mix(&st) % (sizes[0] + 1) : 0;
    size_t cap = total - start;
    size_t room = shape & 0x20 ? cap : room16 % (cap + 1);

    size_t arena_len = GUARD;
    for (int i = 0; i < nd; i++)
        arena_len += sizes[i] + GUARD;
    uint8_t *arena = malloc(arena_len);
    ASSERT(arena);
    memset(arena, FILL, arena_len);
    struct iovec iov[96];
    size_t at = GUARD;
    for (int i = 0; i < nd; i++) {
        iov[i].iov_base = arena + at;
        iov[i].iov_len = sizes[i];
        at += sizes[i] + GUARD;
    }
    vmig_iovpos pos = {iov, nd, 0, start};
    vmig_tlsrec_opened o;
    char why[256] = "";
    vmig_tlsrec_open(r, rec, len, &pos, room, &o, why, sizeof(why));

    /* nothing changed but the first `room` bytes from the start */
    at = 0;
    size_t lin = 0;
    for (int i = 0; i <= nd; i++) {
        for (size_t g = 0; g < GUARD; g++)
            ASSERT(arena[at + g] == FILL);
        at += GUARD;
        if (i == nd)
            break;
        for (size_t b = 0; b < sizes[i]; b++, lin++)
            if (lin < start || lin >= start + room)
                ASSERT(arena[at + b] == FILL);
        at += sizes[i];
    }
    size_t moved = pos.off;
    ASSERT(pos.i >= 0 && pos.i <= nd);
    for (int i = 0; i < pos.i; i++)
        moved += sizes[i];
    ASSERT(pos.i == nd ? pos.off == 0 : pos.off <= sizes[pos.i]);
    ASSERT(moved >= start && moved - start == o.to_dst);
    ASSERT(o.to_dst <= room && o.to_dst + o.rest_len <= ct - 1);
    if (o.rest_len)
        ASSERT(o.rest >= rec + VMIG_TLSREC_HDR &&
               o.rest + o.rest_len <= rec + len - VMIG_TLSREC_TAG);
    if (o.kind != VMIG_TLSREC_DATA)
        ASSERT(!o.to_dst && !o.rest_len);
    if (o.kind == VMIG_TLSREC_ERROR)
        ASSERT(why[0]);
    ASSERT(o.kind <= VMIG_TLSREC_ERROR);
    *got_len = 0;
    if (o.kind == VMIG_TLSREC_DATA) {
        size_t skip = start, n = 0;
        for (int i = 0; i < nd && n < o.to_dst; i++) {
            if (skip >= sizes[i]) {
                skip -= sizes[i];
                continue;
            }
            size_t c = VMIG_MIN(sizes[i] - skip, o.to_dst - n);
            memcpy(got + n, (uint8_t *)iov[i].iov_base + skip, c);
            n += c;
            skip = 0;
        }
        memcpy(got + n, o.rest, o.rest_len);
        *got_len = n + o.rest_len;
    }
    free(arena);
    free(rec);
    return o.kind;
}

/* The sender reads the receiver's answer to a KeyUpdate that asked for one. */
static void answer(harness *h)
{
    if (!h->rx.update_owed)
        return;
    uint8_t rec[VMIG_TLSREC_OVERHEAD + 5], got[8];
    char why[160];
    ssize_t n = vmig_tlsrec_seal_key_update(&h->rx, false, rec, why, sizeof(why));
    if (n < 0) {
        ASSERT(why[0]); /* its sequence is spent */
        return;
    }
    ASSERT(!h->rx.update_owed);
    ASSERT(vmig_tlsrec_check_header(rec, why, sizeof(why)) == n);
    size_t got_len;
    ASSERT(open_into(&h->tx, rec, (size_t)n, 0x20, 0, got, &got_len) == VMIG_TLSREC_CONTROL);
}

static void deliver_wire(harness *h, const record *r, bool replay, uint8_t shape, uint16_t room)
{
    static uint8_t got[VMIG_TLSREC_BODY_MAX];
    char why[256] = "";
    ssize_t claimed = vmig_tlsrec_check_header(r->wire, why, sizeof(why));
    bool candidate = !replay && untouched(r);
    if (claimed < 0) { /* only an empty inner plaintext makes a bad header of ours */
        ASSERT(why[0] && (!candidate || !r->inner_len));
        return;
    }
    ASSERT(claimed >= VMIG_TLSREC_HDR + VMIG_TLSREC_TAG + 1 &&
           claimed <= (ssize_t)VMIG_TLSREC_WIRE_MAX);
    size_t len = (size_t)claimed;
    uint8_t *wire = calloc(1, len);
    ASSERT(wire);
    memcpy(wire, r->wire, VMIG_MIN(len, r->len));
    uint64_t epoch = h->rx.updates_received, seq = h->rx.rd.seq;
    bool owed = h->rx.update_owed;
    bool authentic = candidate && len == r->len && r->epoch == epoch && r->seq == seq;
    size_t got_len;
    vmig_tlsrec_kind k = open_into(&h->rx, wire, len, shape, room, got, &got_len);
    free(wire);
    if (authentic) {
        expect e = model(r->inner, r->inner_len);
        ASSERT(k == e.kind);
        if (k == VMIG_TLSREC_DATA)
            ASSERT(got_len == e.len && !memcmp(got, e.content, e.len));
        if (k == VMIG_TLSREC_CONTROL) {
            ASSERT(h->rx.updates_received == epoch + 1 && h->rx.rd.seq == 0);
            if (!owed)
                ASSERT(h->rx.update_owed == e.request);
        } else if (e.overflow) {
            ASSERT(h->rx.rd.seq == seq && h->rx.updates_received == epoch);
        } else {
            ASSERT(h->rx.rd.seq == seq + 1 && h->rx.updates_received == epoch);
        }
    } else if (r->ours) {
        /* changed, replayed, skipped, or under another key: never opens */
        ASSERT(k == VMIG_TLSREC_ERROR && h->rx.rd.seq == seq && h->rx.updates_received == epoch);
    }
    if (k == VMIG_TLSREC_CONTROL) {
        /* the sender follows a KeyUpdate it did not make itself */
        while (h->tx.updates_sent < h->rx.updates_received) {
            uint8_t scratch[VMIG_TLSREC_OVERHEAD + 5];
            if (vmig_tlsrec_seal_key_update(&h->tx, false, scratch, why, sizeof(why)) < 0)
                break;
        }
        answer(h);
    }
}

static void deliver(harness *h, uint8_t shape, uint16_t room)
{
    if (!h->pend.present)
        return;
    deliver_wire(h, &h->pend, false, shape, room);
    h->last.present = true;
    h->last.ours = h->pend.ours;
    h->last.len = h->pend.len;
    memcpy(h->last.wire, h->pend.wire, h->pend.len);
    h->pend.present = false;
    h->deliveries++;
}

/* A new record: the pending one goes first. */
static record *next_record(harness *h)
{
    deliver(h, (uint8_t)(0x20 | (h->deliveries & 3)), 0);
    record *r = &h->pend;
    memset(r, 0, offsetof(record, inner));
    memset(r->wire, 0, VMIG_TLSREC_HDR);
    h->records++;
    return r;
}

/* ------------------------------------------------------------------ */
/* sealing                                                             */

static void seal_key_update(harness *h, bool request)
{
    uint64_t epoch = h->tx.updates_sent, seq = h->tx.wr.seq;
    uint8_t rec[VMIG_TLSREC_OVERHEAD + 5];
    char why[160];
    ssize_t n = vmig_tlsrec_seal_key_update(&h->tx, request, rec, why, sizeof(why));
    if (n < 0) {
        ASSERT(why[0] && seq == UINT64_MAX);
        return;
    }
    ASSERT(n == VMIG_TLSREC_OVERHEAD + 5 && h->tx.wr.seq == 0 && h->tx.updates_sent == epoch + 1);
    record *r = next_record(h);
    r->epoch = epoch;
    r->seq = seq;
    const uint8_t msg[6] = {24, 0, 0, 1, request, VMIG_TLSREC_HANDSHAKE};
    memcpy(r->inner, msg, 6);
    r->inner_len = 6;
    memcpy(r->wire, rec, (size_t)n);
    r->len = (size_t)n;
    made(r);
}

static void op_data(harness *h, in *s, uint8_t op)
{
    static uint8_t content[VMIG_TLSREC_MAX];
    size_t n = get16(s) % (VMIG_TLSREC_MAX + 1);
    uint8_t shape = get8(s);
    if (op & 0x80) {
        n = VMIG_MIN(n, s->n);
        memcpy(content, s->p, n);
        s->p += n;
        s->n -= n;
    } else {
        uint64_t st = get8(s);
        for (size_t i = 0; i < n; i++)
            content[i] = (uint8_t)mix(&st);
    }
    /* the source: pieces of the shape's sizes, each its own allocation */
    struct iovec iov[512];
    uint8_t *piece[512];
    int cnt = 0;
    uint64_t st = shape;
    for (size_t at = 0; at < n;) {
        size_t len;
        switch (shape & 3) {
        case 0:
            len = n - at;
            break;
        case 1:
            len = mix(&st) % 60;
            break;
        case 2:
            len = mix(&st) % 5000;
            break;
        default:
            len = mix(&st) % 2 ? 16 * (mix(&st) % 8) : 1 + mix(&st) % 30;
        }
        len = VMIG_MIN(len, n - at);
        if (cnt == 507)
            len = n - at;
        piece[cnt] = malloc(len ? len : 1);
        ASSERT(piece[cnt]);
        memcpy(piece[cnt], content + at, len);
        iov[cnt].iov_base = piece[cnt];
        iov[cnt].iov_len = len;
        cnt++;
        at += len;
    }
    for (int z = 0; z < (shape >> 6); z++) { /* empty pieces at the end */
        piece[cnt] = malloc(1);
        ASSERT(piece[cnt]);
        iov[cnt].iov_base = piece[cnt];
        iov[cnt].iov_len = 0;
        cnt++;
    }
    vmig_iovpos src = {iov, cnt, 0, 0};
    size_t done = 0;
    do {
        if (h->records >= MAX_RECORDS)
            break;
        if (vmig_tlsrec_update_due(&h->tx)) /* as own_writev does before a record */
            seal_key_update(h, op & 0x40);
        uint64_t epoch = h->tx.updates_sent, seq = h->tx.wr.seq;
        uint8_t *out = malloc(n - done + VMIG_TLSREC_OVERHEAD); /* exactly what seal may use */
        ASSERT(out);
        size_t used = 0;
        char why[160];
        ssize_t len = vmig_tlsrec_seal(&h->tx, VMIG_TLSREC_APPDATA, &src, n - done, &used, out, why,
                                       sizeof(why));
        if (len < 0) {
            ASSERT(why[0] && seq == UINT64_MAX && used == 0);
            free(out);
            break;
        }
        ASSERT(used <= n - done && (size_t)len == used + VMIG_TLSREC_OVERHEAD);
        ASSERT(used == n - done || cnt > VMIG_TLSREC_SEGS);
        ASSERT(used || n == done);
        record *r = next_record(h);
        r->epoch = epoch;
        r->seq = seq;
        memcpy(r->inner, content + done, used);
        r->inner[used] = VMIG_TLSREC_APPDATA;
        r->inner_len = used + 1;
        memcpy(r->wire, out, (size_t)len);
        r->len = (size_t)len;
        made(r);
        free(out);
        done += used;
    } while (done < n);
    for (int i = 0; i < cnt; i++)
        free(piece[i]);
}

/* An inner plaintext sealed by GnuTLS's one-shot AEAD, with the nonce and
 * additional data built here (RFC 8446 5.2, 5.3). */
static void op_inner(harness *h, in *s, uint8_t op)
{
    if (h->tx.wr.seq == UINT64_MAX) /* the sender would refuse */
        return;
    record *r = next_record(h);
    if (op & 0x80) {
        size_t n = get16(s) % (INNER_MAX + 1);
        n = VMIG_MIN(n, s->n);
        memcpy(r->inner, s->p, n);
        s->p += n;
        s->n -= n;
        r->inner_len = n;
    } else {
        size_t clen = get16(s) % (VMIG_TLSREC_MAX + 1);
        uint8_t type = get8(s);
        size_t pad = get16(s) % (INNER_MAX - clen);
        uint64_t st = get8(s);
        for (size_t i = 0; i < clen; i++)
            r->inner[i] = (uint8_t)mix(&st);
        r->inner[clen] = type;
        memset(r->inner + clen + 1, 0, pad);
        r->inner_len = clen + 1 + pad;
    }
    uint8_t key[32], nonce[12];
    ASSERT(vmig_tlsrec_derive(&h->tx, h->tx.wr.secret, key, nonce) == 0);
    uint64_t seq = h->tx.wr.seq;
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(seq >> (8 * i));
    gnutls_aead_cipher_hd_t a;
    gnutls_datum_t k = {key, h->tx.key_len};
    ASSERT(gnutls_aead_cipher_init(&a, (gnutls_cipher_algorithm_t)h->tx.cipher, &k) == 0);
    size_t body = r->inner_len + VMIG_TLSREC_TAG, clen = body;
    r->wire[0] = VMIG_TLSREC_APPDATA;
    r->wire[1] = 3;
    r->wire[2] = 3;
    r->wire[3] = (uint8_t)(body >> 8);
    r->wire[4] = (uint8_t)body;
    ASSERT(gnutls_aead_cipher_encrypt(a, nonce, 12, r->wire, 5, VMIG_TLSREC_TAG, r->inner,
                                      r->inner_len, r->wire + 5, &clen) == 0 &&
           clen == body);
    gnutls_aead_cipher_deinit(a);
    r->len = 5 + body;
    r->epoch = h->tx.updates_sent;
    r->seq = seq;
    made(r);
    h->tx.wr.seq++; /* the sender's sequence moves on as if it had sealed it */
}

static void op_raw(harness *h, in *s)
{
    size_t n = get16(s) % 1024;
    n = VMIG_MIN(n, s->n);
    record *r = next_record(h);
    memcpy(r->wire, s->p, n);
    s->p += n;
    s->n -= n;
    r->len = VMIG_MAX(n, (size_t)VMIG_TLSREC_HDR);
    r->present = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static harness h;
    if (!size)
        return 0;
    in s = {data, size};
    uint8_t cfg = get8(&s);
    int cipher = cfg & 1 ? GNUTLS_CIPHER_AES_256_GCM : GNUTLS_CIPHER_AES_128_GCM;
    size_t slen = cfg & 1 ? 48 : 32;
    uint64_t seq0 = cfg & 0x10 ? UINT64_MAX - 8 : 0;
    char why[160];
    memset(&h, 0, offsetof(harness, pend));
    h.pend.present = h.last.present = false;
    h.records = h.deliveries = 0;
    ASSERT(
        !vmig_tlsrec_init(&h.tx, cipher, secret_rx, secret_tx, slen, seq0, seq0, why, sizeof(why)));
    ASSERT(
        !vmig_tlsrec_init(&h.rx, cipher, secret_tx, secret_rx, slen, seq0, seq0, why, sizeof(why)));
    if ((cfg >> 1) & 7)
        h.tx.rekey_after = (cfg >> 1) & 7;
    while (s.n && h.records < MAX_RECORDS) {
        uint8_t op = get8(&s);
        switch (op & 7) {
        case 0:
            op_data(&h, &s, op);
            break;
        case 1:
            op_inner(&h, &s, op);
            break;
        case 2:
            seal_key_update(&h, get8(&s) & 1);
            break;
        case 3: {
            uint16_t at = get16(&s);
            uint8_t mask = get8(&s);
            if (h.pend.present)
                h.pend.wire[at % h.pend.len] ^= mask ? mask : 1;
            break;
        }
        case 4: {
            uint16_t len = get16(&s);
            if (h.pend.present) {
                size_t body = h.pend.len - VMIG_TLSREC_HDR;
                if (len > body)
                    memset(h.pend.wire + h.pend.len, 0, len - body);
                h.pend.wire[3] = (uint8_t)(len >> 8);
                h.pend.wire[4] = (uint8_t)len;
                h.pend.len = VMIG_TLSREC_HDR + len;
            }
            break;
        }
        case 5:
            op_raw(&h, &s);
            break;
        case 6: {
            uint8_t shape = get8(&s);
            deliver(&h, shape, get16(&s));
            break;
        }
        default: {
            uint8_t shape = get8(&s);
            uint16_t room = get16(&s);
            if (h.last.present)
                deliver_wire(&h, &h.last, true, shape, room);
        }
        }
    }
    deliver(&h, 0x20, 0);
    vmig_tlsrec_free(&h.tx);
    vmig_tlsrec_free(&h.rx);
    return 0;
}

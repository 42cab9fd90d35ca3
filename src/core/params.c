/* Parameters: defaults, text parsing and the help table, from one table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "../base/base.h"

typedef enum { P_UINT, P_SIZE, P_ENUM, P_CODEC, P_STR } param_kind;

/* What the user reads: names, accepted values, defaults, help. */
static const vmig_param_info infos[] = {
    {"channels", "1..64", "4", "number of parallel data channels, each with its own thread"},
    {"packet-pages", "1..1024", "128",
     "pages per packet (128 pages of 4 KiB = 512 KiB): the unit a channel sends at once"},
    {"zero-page-detection", "none|main|channel", "channel",
     "where zero pages are found: not at all, by the thread that walks memory, or by each "
     "channel thread"},
    {"verify", "off|on|full", "on",
     "end-of-migration digest check: 'on' hashes pages as they are sent and as they land, "
     "'full' re-reads all memory on both sides at the end"},
    {"prefault", "none|ahead", "ahead",
     "destination: populate each packet's pages with MADV_POPULATE_WRITE before reading its "
     "data into them (one kernel call per run instead of one fault per page)"},
    {"max-bandwidth", "0 or bytes/s", "0",
     "cap on bytes per second over all channels (K, M, G suffixes are powers of 1024); "
     "0 means unlimited"},
    {"connect-timeout", "1..3600000 (ms)", "10000",
     "how long the source tries to connect and the destination waits for its channels; "
     "on TCP also the silence after which keepalive probes start (a peer whose host or link "
     "is gone is given up 5 s later)"},
    {"dirty-track", "auto|none|callback|wp|wp-async|wp-sync", "auto",
     "source: how pages written during the migration are found: the VMM's dirty-log hook "
     "(auto uses it when set, else none), none (one pass of a stopped image), or the built-in "
     "userfaultfd write-protect tracker (wp picks async when the kernel has it)"},
    {"downtime-limit", "1..3600000 (ms)", "300",
     "source: switch over when the remaining dirty bytes can be sent in this time"},
    {"max-passes", "0..1000000", "0",
     "source: passes after which on-limit applies; 0 means no limit"},
    {"max-time", "0..86400000 (ms)", "0",
     "source: time after which on-limit applies; 0 means no limit"},
    {"on-limit", "fail|switch", "fail",
     "source: when max-passes, max-time or a stall is reached before the downtime fits: fail "
     "(the VM runs on) or switch over anyway with a longer downtime"},
    {"throttle", "off|ladder|adaptive", "adaptive",
     "source: slowing the vCPUs when they dirty memory faster than the link sends it: ladder "
     "is QEMU's auto-converge (initial, then +step per stalled pass); adaptive sets just enough "
     "for the dirty rate to fall to half the bandwidth"},
    {"throttle-initial", "1..99 (%)", "20", "source: the ladder's first step"},
    {"throttle-step", "1..99 (%)", "10", "source: the ladder's later steps"},
    {"throttle-max", "1..99 (%)", "99", "source: the highest throttle"},
    {"stall-passes", "1..1000", "3",
     "source: passes in a row without the remaining bytes shrinking that count as a stall "
     "(ladder: one more step; at the highest throttle or with throttle off: on-limit)"},
    {"compression", "auto|none|zlib|zstd|deflate-page|lz4", "auto",
     "source: how normal pages are compressed; auto measures how long the channels take per "
     "byte under each codec, end to end, keeps the fastest (none on a fast link) and sends "
     "random-looking packets raw; the destination decodes whatever arrives"},
    {"zlib-level", "1..9", "1", "source: zlib compression level"},
    {"zstd-level", "1..19", "1", "source: zstd compression level"},
    {"deflate-path", "auto|software|hardware", "auto",
     "source and destination: where deflate-page runs: the IAA hardware path through Intel QPL "
     "when built and a device opens, else the software path (ISA-L); 'hardware' falls back to "
     "software and says why"},
    {"accel", "auto|cpu|dsa|dsa-model", "auto",
     "source, with zero-page-detection=channel: what checks zero pages: the channel threads' "
     "SIMD code (cpu), Intel DSA work queues in async batches (dsa: each channel submits the "
     "next packet's batch before it sends the current one, and checks pages from a batch's "
     "tail itself while the device is behind), a software model of such a queue (dsa-model: "
     "tests and benchmarks), or auto: dsa when a usable work queue exists, else cpu"},
    {"accel-path", "queues", "(any)",
     "source: the work queues accel uses, separated by blanks or commas: "
     "dsa:/dev/dsa/wqD.Q (channel i uses queue i mod n; default: the first enabled user queue, "
     "dedicated preferred) or, for dsa-model, model[:depth=N:latency=T:full-every=N:"
     "fault-every=N:error-after=N:reorder=1:residency=0]"},
    {"devstate-path", "channels|control", "channels",
     "source: where registered devices' state goes: in chunks over the data channels, "
     "alongside the last RAM pass, loaded on the destination while it arrives; or one chunk "
     "after the other on the control channel once RAM is sent (the serial path)"},
    {"devstate-chunk", "4K..16M", "1M",
     "source: bytes per device-state chunk (the control path caps them at 1 MiB - 8)"},
    {"devstate-buffer", "1M..4G", "64M",
     "destination: bytes of chunks that arrived ahead of their turn a device may hold; a "
     "channel with more waits for the device's load thread; continuous checkpoints: the most "
     "device state one checkpoint may stage on the secondary"},
    {"checkpoint-period", "0 or 100..3600000 (ms)", "1000",
     "continuous checkpoints, primary: time between checkpoints (the VM runs between them, "
     "pauses for each); 0 takes them only on demand"},
    {"heartbeat-timeout", "100..600000 (ms)", "2000",
     "continuous checkpoints: silence on the control channel after which the peer counts as "
     "gone (the secondary then takes over, the primary runs on unprotected); each side sends a "
     "heartbeat every quarter of it"},
    {"flush-threads", "0..64", "0",
     "continuous checkpoints, secondary: threads that copy a committed checkpoint's pages "
     "from the RAM cache into RAM; 0 means one per online CPU"},
    {"tls", "off|x509|psk", "off",
     "TLS 1.3 on the control channel and every data channel, set alike on both sides: x509 "
     "(certificates, each side authenticates the other) or psk (a pre-shared key); docs/tls.md"},
    {"tls-creds", "directory", "(none)",
     "TLS credentials: ca-cert.pem, server-cert.pem and server-key.pem (destination), "
     "client-cert.pem and client-key.pem (source), optional ca-crl.pem; or keys.psk "
     "(identity:hexkey lines) for psk"},
    {"tls-hostname", "name", "(the URI's host)",
     "source, x509: the DNS name or address the destination's certificate must carry; needed "
     "with unix URIs"},
    {"tls-authz", "name", "(any)",
     "destination, x509: accept only a source whose certificate carries this name; by default "
     "any certificate the CA signed"},
    {"tls-psk-identity", "identity", "(the first)", "source, psk: which line of keys.psk to use"},
    {"tls-priority", "GnuTLS priority string", "(TLS 1.3, AES-GCM first)",
     "the ciphers and key exchanges offered, in GnuTLS's syntax"},
    {"tls-ktls", "auto|require", "auto",
     "kernel TLS after the handshake: used when GnuTLS and the kernel offer it (auto), or every "
     "connection must have it (require); the summary reports whether it was in use"},
    {"resume", "off|on", "off",
     "source: a data channel that breaks mid-migration reconnects (a new handshake of the same "
     "session, within connect-timeout) and re-sends exactly the packets the destination had not "
     "acknowledged, instead of failing the migration; the destination follows the source"},
    {"resume-window", "16..1024 (packets)", "1024",
     "source, resume=on: packets a channel keeps for re-sending until the destination "
     "acknowledges them (it acknowledges every 8); a channel with this many unacknowledged "
     "waits, connect-timeout at most, before writing on (1 KiB of page offsets per packet "
     "of 128 pages: 1 MiB per channel at 1024)"},
    {"tls-records", "vmig|gnutls", "vmig",
     "who protects the records after the TLS handshake, without kernel TLS: vmig's own TLS 1.3 "
     "record layer for AES-GCM (encrypts from the source's pages and decrypts into the "
     "destination's, saving GnuTLS's copies; other ciphers use GnuTLS's), or GnuTLS's record "
     "functions; the wire is TLS 1.3 either way, so the sides may differ"},
    {NULL, NULL, NULL, NULL},
};

/* How each parameter is parsed and stored, in the same order as infos[]. */
typedef struct param_spec {
    param_kind kind;
    size_t offset; /* into vmig_params */
    size_t width;  /* 4 or 8 bytes */
    uint64_t min, max;
    const char *const *names; /* P_ENUM: value names, index = value */
} param_spec;

static const char *const zero_names[] = {"none", "main", "channel", NULL};
static const char *const verify_names[] = {"off", "on", "full", NULL};
static const char *const prefault_names[] = {"none", "ahead", NULL};
static const char *const dirty_names[] = {"auto",     "none",    "callback", "wp",
                                          "wp-async", "wp-sync", NULL};
static const char *const on_limit_names[] = {"fail", "switch", NULL};
static const char *const throttle_names[] = {"off", "ladder", "adaptive", NULL};
static const char *const deflate_path_names[] = {"auto", "software", "hardware", NULL};
static const char *const accel_names[] = {"cpu", "dsa", "dsa-model", "auto", NULL};
static const char *const devstate_path_names[] = {"channels", "control", NULL};
static const char *const tls_names[] = {"off", "x509", "psk", NULL};
static const char *const tls_ktls_names[] = {"auto", "require", NULL};
static const char *const tls_records_names[] = {"vmig", "gnutls", NULL};
static const char *const off_on_names[] = {"off", "on", NULL};

#define FIELD(f) offsetof(vmig_params, f), sizeof(((vmig_params *)0)->f)

static const param_spec specs[] = {
    {P_UINT, FIELD(channels), 1, VMIG_MAX_CHANNELS, NULL},
    {P_UINT, FIELD(packet_pages), 1, 1024, NULL},
    {P_ENUM, FIELD(zero_detect), 0, 2, zero_names},
    {P_ENUM, FIELD(verify), 0, 2, verify_names},
    {P_ENUM, FIELD(prefault), 0, 1, prefault_names},
    {P_SIZE, FIELD(max_bandwidth), 0, UINT64_MAX, NULL},
    {P_UINT, FIELD(connect_timeout_ms), 1, 3600000, NULL},
    {P_ENUM, FIELD(dirty_track), 0, 5, dirty_names},
    {P_UINT, FIELD(downtime_limit_ms), 1, 3600000, NULL},
    {P_UINT, FIELD(max_passes), 0, 1000000, NULL},
    {P_UINT, FIELD(max_time_ms), 0, 86400000, NULL},
    {P_ENUM, FIELD(on_limit), 0, 1, on_limit_names},
    {P_ENUM, FIELD(throttle), 0, 2, throttle_names},
    {P_UINT, FIELD(throttle_initial), 1, 99, NULL},
    {P_UINT, FIELD(throttle_step), 1, 99, NULL},
    {P_UINT, FIELD(throttle_max), 1, 99, NULL},
    {P_UINT, FIELD(stall_passes), 1, 1000, NULL},
    {P_CODEC, FIELD(compression), 0, VMIG_CODEC_COUNT - 1, NULL},
    {P_UINT, FIELD(zlib_level), 1, 9, NULL},
    {P_UINT, FIELD(zstd_level), 1, 19, NULL},
    {P_ENUM, FIELD(deflate_path), 0, 2, deflate_path_names},
    {P_ENUM, FIELD(accel), 0, 3, accel_names},
    {P_STR, FIELD(accel_path), 0, 0, NULL},
    {P_ENUM, FIELD(devstate_path), 0, 1, devstate_path_names},
    {P_SIZE, FIELD(devstate_chunk), 4096, 16u << 20, NULL},
    {P_SIZE, FIELD(devstate_buffer), 1u << 20, 4ull << 30, NULL},
    {P_UINT, FIELD(checkpoint_period_ms), 0, 3600000, NULL},
    {P_UINT, FIELD(heartbeat_timeout_ms), 100, 600000, NULL},
    {P_UINT, FIELD(flush_threads), 0, 64, NULL},
    {P_ENUM, FIELD(tls), 0, 2, tls_names},
    {P_STR, FIELD(tls_creds), 0, 0, NULL},
    {P_STR, FIELD(tls_hostname), 0, 0, NULL},
    {P_STR, FIELD(tls_authz), 0, 0, NULL},
    {P_STR, FIELD(tls_psk_identity), 0, 0, NULL},
    {P_STR, FIELD(tls_priority), 0, 0, NULL},
    {P_ENUM, FIELD(tls_ktls), 0, 1, tls_ktls_names},
    {P_ENUM, FIELD(resume), 0, 1, off_on_names},
    {P_UINT, FIELD(resume_window), 16, 1024, NULL},
    {P_ENUM, FIELD(tls_records), 0, 1, tls_records_names},
};
_Static_assert(VMIG_ARRAY_SIZE(specs) + 1 == VMIG_ARRAY_SIZE(infos), "params tables out of sync");

void vmig_params_init(vmig_params *p)
{
    memset(p, 0, sizeof(*p));
    p->channels = 4;
    p->packet_pages = 128;
    p->zero_detect = VMIG_ZERO_CHANNEL;
    p->verify = VMIG_VERIFY_ON;
    p->prefault = VMIG_PREFAULT_AHEAD;
    p->max_bandwidth = 0;
    p->connect_timeout_ms = 10000;
    p->dirty_track = VMIG_DIRTY_AUTO;
    p->downtime_limit_ms = 300;
    p->max_passes = 0;
    p->max_time_ms = 0;
    p->on_limit = VMIG_ON_LIMIT_FAIL;
    p->throttle = VMIG_THROTTLE_ADAPTIVE;
    p->throttle_initial = 20;
    p->throttle_step = 10;
    p->throttle_max = 99;
    p->stall_passes = 3;
    p->compression = VMIG_COMPRESSION_AUTO;
    p->zlib_level = 1;
    p->zstd_level = 1;
    p->deflate_path = VMIG_DEFLATE_PATH_AUTO;
    p->accel = VMIG_ACCEL_AUTO;
    p->devstate_path = VMIG_DEVSTATE_CHANNELS;
    p->devstate_chunk = 1u << 20;
    p->devstate_buffer = 64ull << 20;
    p->checkpoint_period_ms = 1000;
    p->heartbeat_timeout_ms = 2000;
    p->flush_threads = 0;
    p->resume_window = 1024;
}

/* A parameter's field, read or written at its width (4 or 8 bytes). */
static uint64_t field_load(const vmig_params *p, const param_spec *d)
{
    const uint8_t *field = (const uint8_t *)p + d->offset;
    if (d->width == 4) {
        uint32_t v32;
        memcpy(&v32, field, 4);
        return v32;
    }
    uint64_t v;
    memcpy(&v, field, 8);
    return v;
}

static void field_store(vmig_params *p, const param_spec *d, uint64_t v)
{
    uint8_t *field = (uint8_t *)p + d->offset;
    if (d->width == 4) {
        uint32_t v32 = (uint32_t)v;
        memcpy(field, &v32, 4);
    } else {
        memcpy(field, &v, 8);
    }
}

/* Checks vmig_session_create() applies to a caller's vmig_params. */
int vmig_params_check(const vmig_params *p, vmig_error *err)
{
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(specs); i++) {
        const param_spec *d = &specs[i];
        if (d->kind == P_STR) {
            if (!memchr((const uint8_t *)p + d->offset, 0, d->width))
                return vmig_error_set(err, VMIG_EINVAL, "parameter %s: not NUL-terminated",
                                      infos[i].name);
            continue;
        }
        uint64_t v = field_load(p, d);
        if (d->kind == P_CODEC && v == VMIG_COMPRESSION_AUTO)
            continue;
        if (v < d->min || v > d->max)
            return vmig_error_set(err, VMIG_EINVAL,
                                  "parameter %s: %llu is not valid (accepted: %s)", infos[i].name,
                                  (unsigned long long)v, infos[i].values);
    }
    if (p->checkpoint_period_ms && p->checkpoint_period_ms < 100)
        return vmig_error_set(err, VMIG_EINVAL,
                              "parameter checkpoint-period: %u is not valid (accepted: 0 or "
                              "100..3600000 ms)",
                              p->checkpoint_period_ms);
    return 0;
}

const char *vmig_dirty_track_name(uint32_t mode)
{
    return mode < VMIG_ARRAY_SIZE(dirty_names) - 1 ? dirty_names[mode] : "unknown";
}

const char *vmig_accel_kind_name(uint32_t kind)
{
    return kind < VMIG_ARRAY_SIZE(accel_names) - 1 ? accel_names[kind] : "unknown";
}

const vmig_param_info *vmig_params_table(void)
{
    return infos;
}

int vmig_parse_size(const char *s, uint64_t *out)
{
    errno = 0;
    char *end;
    if (!s || !out || *s < '0' || *s > '9') /* strtoull would take blanks and signs */
        return VMIG_EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return VMIG_EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 0:
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        return VMIG_EINVAL;
    }
    if (*end && end[1] && strcasecmp(end + 1, "iB") && strcasecmp(end + 1, "B"))
        return VMIG_EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return VMIG_EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

int vmig_params_set(vmig_params *p, const char *name, const char *value, vmig_error *err)
{
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(specs); i++) {
        const param_spec *d = &specs[i];
        if (strcmp(infos[i].name, name))
            continue;
        uint64_t v = 0;
        bool ok = false;
        if (d->kind == P_STR) {
            size_t len = strlen(value);
            if (len >= d->width)
                return vmig_error_set(err, VMIG_EINVAL,
                                      "parameter %s: '%.40s...' is too long (%zu bytes, limit %zu)",
                                      name, value, len, d->width - 1);
            memcpy((uint8_t *)p + d->offset, value, len + 1);
            return 0;
        }
        if (d->kind == P_ENUM) {
            for (unsigned k = 0; d->names[k]; k++)
                if (!strcmp(d->names[k], value)) {
                    v = k;
                    ok = true;
                }
        } else if (d->kind == P_CODEC) {
            for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++)
                if (!strcmp(vmig_codec_name(k), value)) {
                    v = k;
                    ok = true;
                }
            if (!strcmp(value, "auto")) {
                field_store(p, d, VMIG_COMPRESSION_AUTO);
                return 0;
            }
        } else {
            ok = vmig_parse_size(value, &v) == 0 &&
                 (d->kind == P_SIZE || strspn(value, "0123456789") == strlen(value));
        }
        if (!ok || v < d->min || v > d->max ||
            (d->offset == offsetof(vmig_params, checkpoint_period_ms) && v && v < 100))
            return vmig_error_set(err, VMIG_EINVAL,
                                  "parameter %s: '%s' is not valid (accepted: %s)", name, value,
                                  infos[i].values);
        field_store(p, d, v);
        return 0;
    }
    return vmig_error_set(err, VMIG_EINVAL, "unknown parameter '%s'", name);
}

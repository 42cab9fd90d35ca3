/* Parameters: defaults, text parsing and the help table, from one table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "../base/base.h"

typedef enum { P_UINT, P_SIZE, P_ENUM } param_kind;

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
     "how long the source tries to connect and the destination waits for its channels"},
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

#define FIELD(f) offsetof(vmig_params, f), sizeof(((vmig_params *)0)->f)

static const param_spec specs[] = {
    {P_UINT, FIELD(channels), 1, VMIG_MAX_CHANNELS, NULL},
    {P_UINT, FIELD(packet_pages), 1, 1024, NULL},
    {P_ENUM, FIELD(zero_detect), 0, 2, zero_names},
    {P_ENUM, FIELD(verify), 0, 2, verify_names},
    {P_ENUM, FIELD(prefault), 0, 1, prefault_names},
    {P_SIZE, FIELD(max_bandwidth), 0, UINT64_MAX, NULL},
    {P_UINT, FIELD(connect_timeout_ms), 1, 3600000, NULL},
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
        if (d->kind == P_ENUM) {
            for (unsigned k = 0; d->names[k]; k++)
                if (!strcmp(d->names[k], value)) {
                    v = k;
                    ok = true;
                }
        } else {
            ok = vmig_parse_size(value, &v) == 0 &&
                 (d->kind == P_SIZE || strspn(value, "0123456789") == strlen(value));
        }
        if (!ok || v < d->min || v > d->max)
            return vmig_error_set(err, VMIG_EINVAL,
                                  "parameter %s: '%s' is not valid (accepted: %s)", name, value,
                                  infos[i].values);
        uint8_t *field = (uint8_t *)p + d->offset;
        if (d->width == 4) {
            uint32_t v32 = (uint32_t)v;
            memcpy(field, &v32, 4);
        } else {
            memcpy(field, &v, 8);
        }
        return 0;
    }
    return vmig_error_set(err, VMIG_EINVAL, "unknown parameter '%s'", name);
}

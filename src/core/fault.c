/*
 * Numbered fault sites for tests (vmig_fault_set, VMIG_FAULTS; docs/faults.md).
 *
 * A fault is armed on a session: a site, the channel it watches (or any),
 * the packet that fires it (the Nth the channel sends, source; receives,
 * destination), and for a stall its length. The channel threads count
 * their packets and ask vmig_fault_packet() before each one; an
 * allocation point asks vmig_fault_alloc(). A session with no fault pays
 * one predictable branch per packet.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "session.h"

static const char *const site_names[] = {NULL, "close", "stall", "corrupt", "alloc", "kill"};

const char *vmig_fault_site_name(uint32_t site)
{
    return site >= 1 && site < VMIG_ARRAY_SIZE(site_names) ? site_names[site] : "unknown";
}

static int parse_u64(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

/* One fault: SITE[:key=value]... with keys role, ch, pkt, ms, n. */
static int parse_one(vmig_session *s, char *spec, vmig_fault *f, bool *mine, vmig_error *err)
{
    char *save = NULL, *tok = strtok_r(spec, ":", &save);
    *f = (vmig_fault){.ch = VMIG_FAULT_ANY_CHANNEL, .pkt = 1, .ms = 1000, .n = 1};
    *mine = true;
    if (!tok)
        return vmig_error_set(err, VMIG_EINVAL, "fault: empty entry");
    for (uint32_t i = 1; i < VMIG_ARRAY_SIZE(site_names); i++) {
        char num[4];
        snprintf(num, sizeof(num), "%u", i);
        if (!strcmp(tok, site_names[i]) || !strcmp(tok, num))
            f->site = (uint8_t)i;
    }
    if (!f->site)
        return vmig_error_set(err, VMIG_EINVAL,
                              "fault '%s': no such site (close|1, stall|2, corrupt|3, alloc|4, "
                              "kill|5)",
                              tok);
    while ((tok = strtok_r(NULL, ":", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return vmig_error_set(err, VMIG_EINVAL, "fault %s: '%s' is not KEY=VALUE",
                                  vmig_fault_site_name(f->site), tok);
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        uint64_t x = 0;
        int bad = 0;
        if (!strcmp(k, "role")) {
            if (!strcmp(v, "src") || !strcmp(v, "source"))
                *mine = s->role == VMIG_ROLE_SOURCE;
            else if (!strcmp(v, "dst") || !strcmp(v, "dest"))
                *mine = s->role == VMIG_ROLE_DEST;
            else
                bad = 1;
        } else if (!strcmp(k, "ch")) {
            if (!strcmp(v, "any"))
                f->ch = VMIG_FAULT_ANY_CHANNEL;
            else if (!(bad = parse_u64(v, 0, VMIG_MAX_CHANNELS - 1, &x)))
                f->ch = (uint32_t)x;
        } else if (!strcmp(k, "pkt")) {
            if (!(bad = parse_u64(v, 1, UINT64_MAX, &x)))
                f->pkt = x;
        } else if (!strcmp(k, "ms")) {
            if (!(bad = parse_u64(v, 1, 3600000, &x)))
                f->ms = (uint32_t)x;
        } else if (!strcmp(k, "n")) {
            if (!(bad = parse_u64(v, 1, UINT32_MAX, &x)))
                f->n = (uint32_t)x;
        } else {
            return vmig_error_set(err, VMIG_EINVAL,
                                  "fault %s: unknown key '%s' (role, ch, pkt, ms, n)",
                                  vmig_fault_site_name(f->site), k);
        }
        if (bad)
            return vmig_error_set(err, VMIG_EINVAL, "fault %s: bad %s '%s'",
                                  vmig_fault_site_name(f->site), k, v);
    }
    return 0;
}

int vmig_fault_set(vmig_session *s, const char *spec, vmig_error *err)
{
    if (!s)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_fault_set: NULL session");
    uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    if (st == VMIG_STATE_SETUP || st == VMIG_STATE_ACTIVE || st == VMIG_STATE_VERIFYING ||
        st == VMIG_STATE_CHECKPOINTING)
        return vmig_error_set(err, VMIG_ESTATE, "faults are set before a migration starts");
    vmig_fault fs[VMIG_MAX_FAULTS];
    uint32_t n = 0;
    char buf[512];
    if (!spec)
        spec = "";
    if (strlen(spec) >= sizeof(buf))
        return vmig_error_set(err, VMIG_EINVAL, "fault list longer than %zu bytes",
                              sizeof(buf) - 1);
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        vmig_fault f;
        bool mine;
        char one[512];
        snprintf(one, sizeof(one), "%s", e);
        int rc = parse_one(s, one, &f, &mine, err);
        if (rc)
            return rc;
        if (!mine)
            continue;
        if (n == VMIG_MAX_FAULTS)
            return vmig_error_set(err, VMIG_EINVAL, "more than %d faults", VMIG_MAX_FAULTS);
        fs[n++] = f;
    }
    memcpy(s->faults, fs, n * sizeof(fs[0]));
    s->nfaults = n;
    __atomic_store_n(&s->st_faults, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->alloc_calls, 0, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < VMIG_MAX_CHANNELS; i++)
        s->ch[i].fault_pkts = 0;
    return 0;
}

void vmig_fault_from_env(vmig_session *s)
{
    const char *env = getenv("VMIG_FAULTS");
    if (!env || !*env)
        return;
    vmig_error e = {0};
    if (vmig_fault_set(s, env, &e))
        fprintf(stderr, "vmig: VMIG_FAULTS ignored: %s\n", e.msg);
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

int vmig_fault_packet_slow(vmig_channel *c, uint8_t *hdr, size_t hdr_len, vmig_error *err)
{
    vmig_session *s = c->s;
    uint64_t k = ++c->fault_pkts;
    for (uint32_t i = 0; i < s->nfaults; i++) {
        vmig_fault *f = &s->faults[i];
        if (f->site == VMIG_FAULT_ALLOC || (f->ch != VMIG_FAULT_ANY_CHANNEL && f->ch != c->id) ||
            f->pkt != k || __atomic_exchange_n(&f->fired, 1, __ATOMIC_ACQ_REL))
            continue;
        vmig_stat_add(&s->st_faults, 1);
        switch (f->site) {
        case VMIG_FAULT_CLOSE:
            /* As a cut link: both directions shut; the I/O that follows fails. */
            if (c->conn && c->conn->fd >= 0)
                shutdown(c->conn->fd, SHUT_RDWR);
            break;
        case VMIG_FAULT_STALL:
            sleep_ms(f->ms);
            break;
        case VMIG_FAULT_CORRUPT:
            /* A bit of the header's packet sequence field (covered by its CRC). */
            if (hdr && hdr_len > 8)
                hdr[8] ^= 0x10;
            break;
        case VMIG_FAULT_KILL:
            raise(SIGKILL);
            break;
        default:
            break;
        }
    }
    (void)err;
    return 0;
}

bool vmig_fault_alloc(vmig_session *s)
{
    if (!s->nfaults)
        return false;
    uint64_t k = __atomic_add_fetch(&s->alloc_calls, 1, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < s->nfaults; i++) {
        vmig_fault *f = &s->faults[i];
        if (f->site == VMIG_FAULT_ALLOC && f->n == k &&
            !__atomic_exchange_n(&f->fired, 1, __ATOMIC_ACQ_REL)) {
            vmig_stat_add(&s->st_faults, 1);
            return true;
        }
    }
    return false;
}
